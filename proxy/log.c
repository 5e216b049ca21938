/* log.c: named loggers, the --log-format pattern and the log file. See log.h. */
#include "common.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <strings.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SHARP_LOGGER_INIT(n) SHARP_LOG_INFO,
_Atomic unsigned char sharp_logger_levels[SHARP_LOGGER_COUNT] = {SHARP_LOGGERS(SHARP_LOGGER_INIT)};
#undef SHARP_LOGGER_INIT

static const char *const logger_names[] = {
#define SHARP_LOGGER_NAME(n) #n,
    SHARP_LOGGERS(SHARP_LOGGER_NAME)
#undef SHARP_LOGGER_NAME
};

static const char *const level_names[] = {"trace", "debug", "info", "warning", "error", "critical",
                                          "off"};
static const char level_short[] = "TDIWECO";

static int log_fd = 2;
static char *log_path;
static sharp_log_pattern_t *pattern; /* NULL until set: the default is compiled on first use */
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

int sharp_log_level_parse(const char *name)
{
    if (strcmp(name, "warn") == 0) return SHARP_LOG_WARN;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(level_names); i++)
        if (strcmp(name, level_names[i]) == 0) return (int)i;
    return -1;
}

const char *sharp_log_level_name(int lvl)
{
    return lvl >= 0 && (size_t)lvl < SHARP_ARRAY_SIZE(level_names) ? level_names[lvl] : "info";
}

int sharp_logger_find(const char *name)
{
    for (int i = 0; i < SHARP_LOGGER_COUNT; i++)
        if (strcmp(name, logger_names[i]) == 0) return i;
    return -1;
}

const char *sharp_logger_name(int id)
{
    return id >= 0 && id < SHARP_LOGGER_COUNT ? logger_names[id] : "misc";
}

void sharp_log_set_all(sharp_log_level_t lvl)
{
    for (int i = 0; i < SHARP_LOGGER_COUNT; i++)
        atomic_store_explicit(&sharp_logger_levels[i], (unsigned char)lvl, memory_order_relaxed);
}

void sharp_log_set(int logger, sharp_log_level_t lvl)
{
    if (logger >= 0 && logger < SHARP_LOGGER_COUNT)
        atomic_store_explicit(&sharp_logger_levels[logger], (unsigned char)lvl, memory_order_relaxed);
}

/* Envoy splits on ',' and then on ':' and wants exactly two parts; the
 * level is checked before the name. Everything is checked before anything
 * is applied, so a bad item changes nothing. */
static int component_levels_pass(const char *spec, bool apply, char *err, size_t errlen)
{
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        if (len >= sizeof item) {
            snprintf(err, errlen, "error: component log level not correctly specified '%.*s'",
                     (int)SHARP_MIN(len, 64), p);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *colon = strchr(item, ':');
        if (!colon || strchr(colon + 1, ':')) {
            snprintf(err, errlen, "error: component log level not correctly specified '%s'", item);
            return -1;
        }
        *colon = '\0';
        int lvl = sharp_log_level_parse(colon + 1);
        if (lvl < 0) {
            snprintf(err, errlen, "error: invalid log level specified '%s'", colon + 1);
            return -1;
        }
        int id = sharp_logger_find(item);
        if (id < 0) {
            snprintf(err, errlen, "error: invalid component specified '%s'", item);
            return -1;
        }
        if (apply) sharp_log_set(id, (sharp_log_level_t)lvl);
        if (!end) return 0;
        p = end + 1;
    }
}

int sharp_log_component_levels(const char *spec, bool apply, char *err, size_t errlen)
{
    if (!spec || !*spec) return 0;
    if (component_levels_pass(spec, false, err, errlen) < 0) return -1;
    if (apply) component_levels_pass(spec, true, err, errlen);
    return 0;
}

/* ---- the pattern ---------------------------------------------------------- */

typedef struct {
    char flag;       /* 0 for a literal */
    const char *lit; /* into the pattern's own copy */
    size_t len;
} piece_t;

struct sharp_log_pattern {
    char *text;
    piece_t *pieces;
    size_t n;
    bool needs_time;
};

/* Envoy's documented --log-format flags (spdlog's pattern flags plus %_ and
 * %j). Padding and colour specifiers are not supported. */
static const char supported_flags[] = "v_jtPnlLaAbBcCYDxmdHIMSefFprRTXz%@sg#!";

sharp_log_pattern_t *sharp_log_pattern_compile(const char *fmt, char *err, size_t errlen)
{
    sharp_log_pattern_t *p = sharp_calloc(1, sizeof *p);
    p->text = sharp_strdup(fmt);
    size_t len = strlen(fmt);
    p->pieces = sharp_calloc(len + 1, sizeof *p->pieces);
    const char *s = p->text;
    size_t i = 0;
    while (i < len) {
        if (s[i] != '%') {
            size_t start = i;
            while (i < len && s[i] != '%') i++;
            p->pieces[p->n++] = (piece_t){0, s + start, i - start};
            continue;
        }
        if (i + 1 >= len) {
            snprintf(err, errlen, "--log-format: '%%' at the end of the pattern (offset %zu)", i);
            goto bad;
        }
        char f = s[i + 1];
        if (!strchr(supported_flags, f) || f == '\0') {
            snprintf(err, errlen,
                     "--log-format: unsupported flag '%%%c' at offset %zu (supported: "
                     "%%v %%_ %%j %%t %%P %%n %%l %%L %%a %%A %%b %%B %%c %%C %%Y %%D %%x %%m %%d "
                     "%%H %%I %%M %%S %%e %%f %%F %%p %%r %%R %%T %%X %%z %%%% %%@ %%s %%g %%# %%!)",
                     f, i);
            goto bad;
        }
        if (f == '%') p->pieces[p->n++] = (piece_t){0, s + i, 1};
        else p->pieces[p->n++] = (piece_t){f, NULL, 0};
        if (strchr("aAbBcCYDxmdHIMSefFprRTXz", f)) p->needs_time = true;
        i += 2;
    }
    return p;
bad:
    sharp_log_pattern_free(p);
    return NULL;
}

void sharp_log_pattern_free(sharp_log_pattern_t *p)
{
    if (!p) return;
    free(p->pieces);
    free(p->text);
    free(p);
}

typedef struct {
    char *buf;
    size_t len, cap; /* cap excludes the terminator */
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->len >= o->cap) return;
    size_t room = o->cap - o->len;
    if (n > room) n = room;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putc_(out_t *o, char c)
{
    put(o, &c, 1);
}

static void putnum(out_t *o, long long v, int width)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%0*lld", width, v);
    put(o, tmp, (size_t)n);
}

static void putftime(out_t *o, const char *f, const struct tm *tm)
{
    char tmp[64];
    size_t n = strftime(tmp, sizeof tmp, f, tm);
    put(o, tmp, n);
}

/* __FILE__ as the build gives it ("../proxy/http/x.c"), relative to the
 * source tree ("proxy/http/x.c"), as Envoy prints "source/common/...". */
static const char *relative_path(const char *file)
{
    while (strncmp(file, "../", 3) == 0) file += 3;
    while (strncmp(file, "./", 2) == 0) file += 2;
    return file;
}

static const char *base_name(const char *file)
{
    const char *b = strrchr(file, '/');
    return b ? b + 1 : file;
}

static void put_escaped(out_t *o, const char *msg, bool json)
{
    for (const unsigned char *c = (const unsigned char *)msg; *c; c++) {
        switch (*c) {
        case '\n': puts_(o, "\\n"); break;
        case '\r': puts_(o, json ? "\\r" : "\r"); break;
        case '\t': puts_(o, json ? "\\t" : "\t"); break;
        case '"': puts_(o, json ? "\\\"" : "\""); break;
        case '\\': puts_(o, json ? "\\\\" : "\\"); break;
        default:
            if (json && *c < 0x20) {
                char tmp[8];
                snprintf(tmp, sizeof tmp, "\\u%04x", *c);
                puts_(o, tmp);
            } else {
                putc_(o, (char)*c);
            }
        }
    }
}

size_t sharp_log_pattern_render(const sharp_log_pattern_t *p, const sharp_log_record_t *r, char *out,
                                size_t n)
{
    out_t o = {out, 0, n ? n - 1 : 0};
    struct tm tm;
    if (p->needs_time) {
        /* localtime_r takes a lock; lines of one second share the result. */
        static _Thread_local long long cached_sec = -1;
        static _Thread_local struct tm cached_tm;
        if (cached_sec != r->sec) {
            time_t t = (time_t)r->sec;
            localtime_r(&t, &cached_tm);
            cached_sec = r->sec;
        }
        tm = cached_tm;
    }
    for (size_t i = 0; i < p->n; i++) {
        const piece_t *pc = &p->pieces[i];
        switch (pc->flag) {
        case 0: put(&o, pc->lit, pc->len); break;
        case 'v': puts_(&o, r->msg); break;
        case '_': put_escaped(&o, r->msg, false); break;
        case 'j': put_escaped(&o, r->msg, true); break;
        case 't': putnum(&o, r->tid, 0); break;
        case 'P': putnum(&o, r->pid, 0); break;
        case 'n': puts_(&o, sharp_logger_name(r->logger)); break;
        case 'l': puts_(&o, sharp_log_level_name(r->level)); break;
        case 'L': putc_(&o, level_short[r->level <= SHARP_LOG_OFF ? r->level : SHARP_LOG_INFO]); break;
        case 'a': putftime(&o, "%a", &tm); break;
        case 'A': putftime(&o, "%A", &tm); break;
        case 'b': putftime(&o, "%b", &tm); break;
        case 'B': putftime(&o, "%B", &tm); break;
        case 'c': putftime(&o, "%a %b %d %H:%M:%S %Y", &tm); break;
        case 'C': putnum(&o, (tm.tm_year + 1900) % 100, 2); break;
        case 'Y': putnum(&o, tm.tm_year + 1900, 4); break;
        case 'D':
        case 'x': putftime(&o, "%m/%d/%y", &tm); break;
        case 'm': putnum(&o, tm.tm_mon + 1, 2); break;
        case 'd': putnum(&o, tm.tm_mday, 2); break;
        case 'H': putnum(&o, tm.tm_hour, 2); break;
        case 'I': putnum(&o, tm.tm_hour % 12 ? tm.tm_hour % 12 : 12, 2); break;
        case 'M': putnum(&o, tm.tm_min, 2); break;
        case 'S': putnum(&o, tm.tm_sec, 2); break;
        case 'e': putnum(&o, r->nsec / 1000000, 3); break;
        case 'f': putnum(&o, r->nsec / 1000, 6); break;
        case 'F': putnum(&o, r->nsec, 9); break;
        case 'p': puts_(&o, tm.tm_hour >= 12 ? "PM" : "AM"); break;
        case 'r': putftime(&o, "%I:%M:%S %p", &tm); break;
        case 'R': putftime(&o, "%H:%M", &tm); break;
        case 'T':
        case 'X': putftime(&o, "%H:%M:%S", &tm); break;
        case 'z': {
            long off = tm.tm_gmtoff;
            char sign = off < 0 ? '-' : '+';
            if (off < 0) off = -off;
            putc_(&o, sign);
            putnum(&o, off / 3600, 2);
            putc_(&o, ':');
            putnum(&o, (off % 3600) / 60, 2);
            break;
        }
        case '@':
            puts_(&o, relative_path(r->file));
            putc_(&o, ':');
            putnum(&o, r->line, 0);
            break;
        case 's': puts_(&o, base_name(r->file)); break;
        case 'g': puts_(&o, relative_path(r->file)); break;
        case '#': putnum(&o, r->line, 0); break;
        case '!': puts_(&o, r->func ? r->func : ""); break;
        }
    }
    if (n) out[o.len] = '\0';
    return o.len;
}

static void compile_default(void)
{
    char err[16];
    if (!pattern) pattern = sharp_log_pattern_compile(SHARP_DEFAULT_LOG_FORMAT, err, sizeof err);
}

void sharp_log_set_pattern(sharp_log_pattern_t *p)
{
    pthread_once(&default_once, compile_default);
    sharp_log_pattern_free(pattern);
    pattern = p;
}

/* ---- the file ------------------------------------------------------------- */

int sharp_log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (log_fd > 2) close(log_fd);
    log_fd = fd;
    free(log_path);
    log_path = sharp_strdup(path);
    return 0;
}

int sharp_log_reopen(void)
{
    if (!log_path) return 0;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    /* dup2 swaps the file behind log_fd atomically: a concurrent write goes
     * wholly to the old file or wholly to the new one. */
    int rc = dup3(fd, log_fd, O_CLOEXEC) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

static _Atomic uint64_t next_cx_id;

static long thread_id(void)
{
    static _Thread_local long tid;
    if (!tid) tid = (long)syscall(SYS_gettid);
    return tid;
}

uint64_t sharp_log_next_connection_id(void)
{
    return atomic_fetch_add_explicit(&next_cx_id, 1, memory_order_relaxed);
}

/* Per request: no shared counter (no cache line bouncing between workers).
 * The thread id in the high bits keeps ids of different threads apart. */
uint64_t sharp_log_next_stream_id(void)
{
    static _Thread_local uint64_t next;
    if (!next) next = (uint64_t)thread_id() << 32;
    return next++;
}

void sharp_log_write(int logger, sharp_log_level_t lvl, const char *file, int line, const char *func,
                     const char *fmt, ...)
{
    pthread_once(&default_once, compile_default);
    char msg[8192], buf[9216];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0) msg[0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sharp_log_record_t r = {.logger = logger, .level = lvl, .file = file, .line = line, .func = func,
                            .msg = msg, .tid = thread_id(), .pid = (long)getpid(),
                            .sec = (long long)ts.tv_sec, .nsec = ts.tv_nsec};
    size_t len = sharp_log_pattern_render(pattern, &r, buf, sizeof buf - 1);
    buf[len++] = '\n';
    ssize_t w = write(log_fd, buf, len);
    (void)w;
}
