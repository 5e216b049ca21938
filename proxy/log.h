/* log.h: leveled logging to stderr or --log-path, Envoy's level names. */
#ifndef SHARP_LOG_H
#define SHARP_LOG_H

#include <stdarg.h>

typedef enum {
    SHARP_LOG_TRACE,
    SHARP_LOG_DEBUG,
    SHARP_LOG_INFO,
    SHARP_LOG_WARN,
    SHARP_LOG_ERROR,
    SHARP_LOG_CRITICAL,
    SHARP_LOG_OFF,
} sharp_log_level_t;

extern sharp_log_level_t sharp_log_level;

/* Parses trace|debug|info|warn|warning|error|critical|off; returns -1 if unknown. */
int sharp_log_level_parse(const char *name);
/* Redirects logs to a file (append). Returns 0 or -1 with errno set. */
int sharp_log_open(const char *path);
void sharp_log_write(sharp_log_level_t lvl, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define SHARP_LOG(lvl, ...)                                                                        \
    do {                                                                                           \
        if ((lvl) >= sharp_log_level) sharp_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);     \
    } while (0)
#define sharp_log_trace(...) SHARP_LOG(SHARP_LOG_TRACE, __VA_ARGS__)
#define sharp_log_debug(...) SHARP_LOG(SHARP_LOG_DEBUG, __VA_ARGS__)
#define sharp_log_info(...) SHARP_LOG(SHARP_LOG_INFO, __VA_ARGS__)
#define sharp_log_warn(...) SHARP_LOG(SHARP_LOG_WARN, __VA_ARGS__)
#define sharp_log_error(...) SHARP_LOG(SHARP_LOG_ERROR, __VA_ARGS__)

#endif
