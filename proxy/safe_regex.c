/* safe_regex.c: see safe_regex.h. */
#include "safe_regex.h"

#include <stdio.h>

#include "log.h"

/* Written while a configuration is built (main thread, before the workers
 * that use its regexes start) and read only while compiling. */
static uint32_t error_level = SHARP_REGEX_DEFAULT_ERROR_LEVEL;
static uint32_t warn_level = UINT32_MAX;

void sharp_regex_set_runtime_limits(uint32_t error, uint32_t warn)
{
    error_level = error;
    warn_level = warn;
}

void sharp_regex_runtime_limits(uint32_t *error, uint32_t *warn)
{
    if (error) *error = error_level;
    if (warn) *warn = warn_level;
}

sharp_re2_t *sharp_regex_compile(const char *pattern, const sharp_regex_opts_t *opts, char *err,
                                 size_t errlen)
{
    char msg[512];
    sharp_re2_t *re = sharp_re2_compile(pattern, strlen(pattern), msg, sizeof msg);
    if (!re) {
        snprintf(err, errlen, "invalid regex '%s': %s", pattern, msg);
        return NULL;
    }
    uint32_t size = (uint32_t)sharp_re2_program_size(re);
    if (opts && opts->has_max_program_size) {
        /* the deprecated per-matcher limit replaces the runtime ones */
        if (size > opts->max_program_size) {
            snprintf(err, errlen,
                     "regex '%s' RE2 program size of %u > max program size of %u. Increase "
                     "configured max program size if necessary.",
                     pattern, size, opts->max_program_size);
            sharp_re2_free(re);
            return NULL;
        }
        return re;
    }
    if (size > error_level) {
        snprintf(
            err, errlen,
            "regex '%s' RE2 program size of %u > max program size of %u set for the error level "
            "threshold. Increase configured max program size if necessary.",
            pattern, size, error_level);
        sharp_re2_free(re);
        return NULL;
    }
    if (size > warn_level)
        sharp_log_warn(
            "regex '%s' RE2 program size of %u > max program size of %u set for the warn "
            "level threshold. Increase configured max program size if necessary.",
            pattern, size, warn_level);
    return re;
}
