/* log.c: leveled logging. One write(2) per line so lines from several
 * workers never interleave. */
#include "common.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

sharp_log_level_t sharp_log_level = SHARP_LOG_INFO;
static int log_fd = 2;

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "critical",
                                          "off"};

int sharp_log_level_parse(const char *name)
{
    if (strcasecmp(name, "warn") == 0) return SHARP_LOG_WARN;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(level_names); i++)
        if (strcasecmp(name, level_names[i]) == 0) return (int)i;
    return -1;
}

int sharp_log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    log_fd = fd;
    return 0;
}

void sharp_log_write(sharp_log_level_t lvl, const char *file, int line, const char *fmt, ...)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(buf, sizeof buf, "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%ld][%s][%s:%d] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, (long)gettid(), level_names[lvl], base, line);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : SHARP_MIN((size_t)m, sizeof buf - (size_t)n - 2));
    buf[len++] = '\n';
    ssize_t w = write(log_fd, buf, len);
    (void)w;
}
