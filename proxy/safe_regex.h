/* safe_regex.h: Envoy's rules for compiling configured regexes (its
 * Regex::Utility::parseRegex with the google_re2 engine) on top of RE2
 * (re2_shim.h).
 *
 * RE2's program size measures a regex's cost. Envoy refuses a regex whose
 * program size exceeds a limit:
 * - GoogleRE2.max_program_size in the RegexMatcher (deprecated, honoured)
 *   is then the only limit;
 * - otherwise the runtime key re2.max_program_size.error_level (default
 *   100) is, and re2.max_program_size.warn_level (default none) only logs a
 *   warning. The bootstrap's layered_runtime sets them for the process
 *   before any regex of that configuration is compiled. */
#ifndef SHARP_SAFE_REGEX_H
#define SHARP_SAFE_REGEX_H

#include "common.h"
#include "re2_shim.h"

#define SHARP_REGEX_DEFAULT_ERROR_LEVEL 100u

typedef struct {
    bool has_max_program_size; /* GoogleRE2.max_program_size was set */
    uint32_t max_program_size;
} sharp_regex_opts_t;

/* Sets the runtime limits (re2.max_program_size.error_level / warn_level);
 * UINT32_MAX for warn_level means no warning. Called on the main thread
 * while a configuration is built. */
void sharp_regex_set_runtime_limits(uint32_t error_level, uint32_t warn_level);
void sharp_regex_runtime_limits(uint32_t *error_level, uint32_t *warn_level);

/* Compiles a RegexMatcher's regex with Envoy's checks; `opts` NULL is a
 * matcher without google_re2. NULL on error with the message in `err`:
 * "invalid regex '<p>': " and RE2's error text for a bad pattern, or Envoy's
 * for a program too large
 *   "regex '<p>' RE2 program size of N > max program size of M set for the
 *    error level threshold. Increase configured max program size if necessary."
 * (without " set for the error level threshold" for max_program_size). */
sharp_re2_t *sharp_regex_compile(const char *pattern, const sharp_regex_opts_t *opts, char *err,
                                 size_t errlen);

#endif
