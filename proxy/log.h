/* log.h: the application log, with Envoy's named loggers, levels and line
 * format.
 *
 * Every log statement names one of Envoy's loggers ("http", "router",
 * "pool", ...); each logger has its own level, set from -l (all loggers),
 * --component-log-level and the admin /logging endpoint. A statement below
 * its logger's level costs one relaxed byte load and a branch: the arguments
 * are not evaluated and nothing is formatted.
 *
 * Lines are laid out by a pattern in Envoy's (spdlog's) --log-format syntax,
 * by default "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v", and each line is
 * written with one write(2) so lines from several threads never interleave. */
#ifndef SHARP_LOG_H
#define SHARP_LOG_H

#include "common.h"

#include <stdarg.h>
#include <stdatomic.h>

typedef enum {
    SHARP_LOG_TRACE,
    SHARP_LOG_DEBUG,
    SHARP_LOG_INFO,
    SHARP_LOG_WARN,
    SHARP_LOG_ERROR,
    SHARP_LOG_CRITICAL,
    SHARP_LOG_OFF,
} sharp_log_level_t;

/* The loggers, by Envoy's names (ALL_LOGGER_IDS), in the order /logging
 * lists them. */
#define SHARP_LOGGERS(X)                                                                           \
    X(admin) X(config) X(conn_handler) X(connection) X(file) X(filter) X(hc) X(http) X(http2) X(init)       \
    X(main) X(misc) X(pool) X(router) X(runtime) X(stats) X(upstream)

typedef enum {
#define SHARP_LOGGER_ENUM(n) SHARP_LOGGER_##n,
    SHARP_LOGGERS(SHARP_LOGGER_ENUM)
#undef SHARP_LOGGER_ENUM
    SHARP_LOGGER_COUNT
} sharp_logger_t;

/* Per-logger level; written by the main thread, read by every thread. */
extern _Atomic unsigned char sharp_logger_levels[SHARP_LOGGER_COUNT];

#define SHARP_DEFAULT_LOG_FORMAT "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"

/* Parses trace|debug|info|warn|warning|error|critical|off; returns -1 if unknown. */
int sharp_log_level_parse(const char *name);
/* "trace", ..., "off" (spdlog's names). */
const char *sharp_log_level_name(int lvl);
/* The logger with this name, or -1. */
int sharp_logger_find(const char *name);
const char *sharp_logger_name(int id);

void sharp_log_set_all(sharp_log_level_t lvl);
void sharp_log_set(int logger, sharp_log_level_t lvl);
static inline sharp_log_level_t sharp_log_get(int logger)
{
    return (sharp_log_level_t)atomic_load_explicit(&sharp_logger_levels[logger], memory_order_relaxed);
}

/* Envoy's --component-log-level: "upstream:debug,connection:trace". With
 * `apply` false only checks. Returns 0, or -1 with Envoy's message in err
 * ("error: invalid component specified 'foo'", ...). */
int sharp_log_component_levels(const char *spec, bool apply, char *err, size_t errlen);

/* A compiled --log-format pattern. */
typedef struct sharp_log_pattern sharp_log_pattern_t;
/* Compiles `fmt`; NULL with a message naming the flag and its offset when a
 * flag is not supported. */
sharp_log_pattern_t *sharp_log_pattern_compile(const char *fmt, char *err, size_t errlen);
void sharp_log_pattern_free(sharp_log_pattern_t *p);
/* Renders one line (without the newline) into out[0..n); returns its length
 * (truncated to n - 1 and NUL-terminated). Exposed for tests. */
typedef struct {
    int logger;
    sharp_log_level_t level;
    const char *file;
    int line;
    const char *func;
    const char *msg;
    long tid, pid;
    long long sec; /* wall clock */
    long nsec;
} sharp_log_record_t;
size_t sharp_log_pattern_render(const sharp_log_pattern_t *p, const sharp_log_record_t *r, char *out,
                                size_t n);
/* Makes `p` the process's line format (startup only, before threads). The
 * log takes ownership. */
void sharp_log_set_pattern(sharp_log_pattern_t *p);

/* Redirects logs to a file (append, created if missing). Returns 0 or -1 with
 * errno set. */
int sharp_log_open(const char *path);
/* Reopens the --log-path file (after logrotate moved it away): new lines go
 * to a file created under the same name. 0 when there is no log file. */
int sharp_log_reopen(void);

/* Ids for log lines: every connection, downstream and upstream, gets the
 * next number ("[C12]"), as in Envoy; streams get ids unique in the process
 * ("[C12][S40]"; Envoy's are random) from a per-thread counter. */
uint64_t sharp_log_next_connection_id(void);
uint64_t sharp_log_next_stream_id(void);

void sharp_log_write(int logger, sharp_log_level_t lvl, const char *file, int line, const char *func,
                     const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define SHARP_LOG_ON(id, lvl)                                                                      \
    ((int)(lvl) >= (int)atomic_load_explicit(&sharp_logger_levels[SHARP_LOGGER_##id],             \
                                             memory_order_relaxed))
#define SHARP_LOG(id, lvl, ...)                                                                    \
    do {                                                                                           \
        if (sharp_unlikely(SHARP_LOG_ON(id, lvl)))                                                 \
            sharp_log_write(SHARP_LOGGER_##id, (lvl), __FILE__, __LINE__, __func__, __VA_ARGS__);  \
    } while (0)
#define sharp_trace(id, ...) SHARP_LOG(id, SHARP_LOG_TRACE, __VA_ARGS__)
#define sharp_debug(id, ...) SHARP_LOG(id, SHARP_LOG_DEBUG, __VA_ARGS__)
#define sharp_info(id, ...) SHARP_LOG(id, SHARP_LOG_INFO, __VA_ARGS__)
#define sharp_warn(id, ...) SHARP_LOG(id, SHARP_LOG_WARN, __VA_ARGS__)
#define sharp_error(id, ...) SHARP_LOG(id, SHARP_LOG_ERROR, __VA_ARGS__)
#define sharp_critical(id, ...) SHARP_LOG(id, SHARP_LOG_CRITICAL, __VA_ARGS__)

/* The "main" logger, for the server's own life cycle messages. */
#define sharp_log_trace(...) sharp_trace(main, __VA_ARGS__)
#define sharp_log_debug(...) sharp_debug(main, __VA_ARGS__)
#define sharp_log_info(...) sharp_info(main, __VA_ARGS__)
#define sharp_log_warn(...) sharp_warn(main, __VA_ARGS__)
#define sharp_log_error(...) sharp_error(main, __VA_ARGS__)

#endif
