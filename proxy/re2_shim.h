/* re2_shim.h: the C interface to RE2, the linear-time regex engine behind
 * Envoy's safe_regex (its google_re2 engine) and the admin's ?filter=.
 * re2_shim.cc implements it; everything but the C++ shims stays C.
 * Patterns use RE2's syntax and default options, as Envoy's
 * (UTF-8, Perl classes such as \d, (?i) flags, [[:alpha:]], non-greedy
 * operators, no backreferences or lookaround), and matching runs in time
 * linear in the input whatever the pattern.
 *
 * A compiled regex is immutable and may be used from several threads at once. */
#ifndef SHARP_RE2_SHIM_H
#define SHARP_RE2_SHIM_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sharp_re2 sharp_re2_t;

/* Compiles `pattern` (len bytes, NUL bytes allowed). NULL on error, with
 * RE2's own message in `err` (e.g. "missing ): (a"). */
sharp_re2_t *sharp_re2_compile(const char *pattern, size_t len, char *err, size_t errlen);
void sharp_re2_free(sharp_re2_t *re); /* NULL is fine */

/* RE2's program size: the measure of a regex's cost Envoy limits with
 * re2.max_program_size.* and GoogleRE2.max_program_size. */
int sharp_re2_program_size(const sharp_re2_t *re);

/* RE2::FullMatch: the whole of s[0..len) matches (route matchers). */
bool sharp_re2_full_match(const sharp_re2_t *re, const char *s, size_t len);
/* RE2::PartialMatch: a match anywhere in s[0..len) (the admin's filter). */
bool sharp_re2_partial_match(const sharp_re2_t *re, const char *s, size_t len);

/* RE2::CheckRewriteString: `rewrite` uses only \0..\9 of groups the regex
 * has and \\ for a backslash. 0, or -1 with RE2's message in `err`. */
int sharp_re2_check_rewrite(const sharp_re2_t *re, const char *rewrite, char *err, size_t errlen);

/* RE2::GlobalReplace on a copy of s[0..len): every non-overlapping match is
 * replaced by `rewrite` with \N substituted. *out is a new NUL-terminated
 * string (free() it) of *outlen bytes. Returns the number of replacements,
 * or -1 when memory ran out (nothing is allocated then). */
int sharp_re2_replace_all(const sharp_re2_t *re, const char *s, size_t len, const char *rewrite,
                          char **out, size_t *outlen);

#ifdef __cplusplus
}
#endif

#endif
