/* std_regex_shim.h: the C interface to C++ std::regex (ECMAScript grammar),
 * the engine Envoy uses for the regular expressions of custom stats tags
 * (stats_config.stats_tags[].regex: TagExtractorStdRegexImpl), so that
 * patterns Envoy accepts there, lookahead such as "^listener(?=\.)"
 * included, behave the same. It is used only when a stat is registered,
 * never per request. Implemented in std_regex_shim.cc; no C++ exception
 * crosses into C.
 *
 * A compiled regex is immutable and may be used from several threads. */
#ifndef SHARP_STD_REGEX_SHIM_H
#define SHARP_STD_REGEX_SHIM_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sharp_std_regex sharp_std_regex_t;

/* std::regex(pattern, std::regex::optimize). NULL on error, with the
 * library's message in `err`. */
sharp_std_regex_t *sharp_std_regex_compile(const char *pattern, char *err, size_t errlen);
void sharp_std_regex_free(sharp_std_regex_t *re); /* NULL is fine */

/* Number of capture groups of the pattern (std::regex::mark_count). */
unsigned sharp_std_regex_groups(const sharp_std_regex_t *re);

/* A group of a match: [start, end) offsets into the searched string;
 * matched is false for a group that did not take part (then start == end). */
typedef struct {
    bool matched;
    size_t start, end;
} sharp_std_regex_group_t;

/* The longest input searched. libstdc++'s std::regex backtracks by
 * recursion, a few stack frames per input character, and overflows the
 * stack (a crash, not an exception) on inputs of tens of kilobytes; longer
 * inputs are not searched at all. A stat name that long carries a
 * config-given part (a cluster name, a stat prefix) of kilobytes. */
#define SHARP_STD_REGEX_MAX_INPUT 4096

/* std::regex_search over s[0..len): true when the pattern matches anywhere;
 * groups[0..n) get groups 1..n of the first match. An input longer than
 * SHARP_STD_REGEX_MAX_INPUT, and a search the library gives up on (its
 * complexity limit), count as no match. */
bool sharp_std_regex_search(const sharp_std_regex_t *re, const char *s, size_t len,
                            sharp_std_regex_group_t *groups, size_t n);

#ifdef __cplusplus
}
#endif

#endif
