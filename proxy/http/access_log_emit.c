/* access_log_emit.c: see access_log_emit.h. */
#include "http/access_log_emit.h"
#include "http/access_log.h"
#include "config/mapper.h"
#include "log.h"
#include "sbuf.h"
#include "snapshot.h"
#include "worker.h"

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define FLUSH_BYTES (64 * 1024)

struct sharp_access_log {
    uint32_t slot;
    int fd;        /* shared by all workers; O_APPEND keeps their writes whole */
    bool owns_fd;
    char *path;
    sharp_access_log_format_t *fmt;
};

typedef struct sharp_access_log_writer {
    sharp_sbuf_t buf;
    int fd;
} sharp_access_log_writer_t;

/* The text format of a SubstitutionFormatString, or its JSON map. */
static sharp_access_log_format_t *compile_sfs(const Envoy__Config__Core__V3__SubstitutionFormatString *f,
                                              char *err, size_t errlen)
{
    switch (f->format_case) {
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT:
        return sharp_access_log_format_compile(f->text_format, err, errlen);
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE:
        if (f->text_format_source->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING)
            return sharp_access_log_format_compile(f->text_format_source->inline_string, err, errlen);
        snprintf(err, errlen, "text_format_source: only inline_string is supported");
        return NULL;
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT:
        return sharp_access_log_format_compile_struct(&f->json_format->base, err, errlen);
    default:
        return sharp_access_log_format_compile(NULL, err, errlen);
    }
}

sharp_access_log_t *sharp_access_log_create(const ProtobufCMessage *msg, uint32_t slot, char *err, size_t errlen)
{
    const Envoy__Config__Accesslog__V3__AccessLog *al = (const void *)msg;
    if (al->filter) {
        snprintf(err, errlen, "filter: access log filters are not supported yet");
        return NULL;
    }
    if (al->config_type_case != ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG) {
        snprintf(err, errlen, "typed_config is required");
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&al->typed_config->base, NULL, &e);
    if (!m) {
        snprintf(err, errlen, "typed_config: %s", e.msg);
        return NULL;
    }
    sharp_access_log_t *l = sharp_calloc(1, sizeof *l);
    l->slot = slot;
    l->fd = -1;
    const char *path = NULL;
    const char *tn = m->descriptor->name;
    if (strcmp(tn, "envoy.extensions.access_loggers.file.v3.FileAccessLog") == 0) {
        const Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *f = (const void *)m;
        path = f->path;
        switch (f->access_log_format_case) {
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_FORMAT:
            l->fmt = sharp_access_log_format_compile(f->format, err, errlen);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_JSON_FORMAT:
            l->fmt = sharp_access_log_format_compile_struct(&f->json_format->base, err, errlen);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT:
            l->fmt = sharp_access_log_format_compile_struct(&f->typed_json_format->base, err, errlen);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT:
            l->fmt = compile_sfs(f->log_format, err, errlen);
            break;
        default: l->fmt = sharp_access_log_format_compile(NULL, err, errlen); break;
        }
        if (!path[0]) {
            snprintf(err, errlen, "path is required");
            goto bad;
        }
    } else if (strcmp(tn, "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog") == 0 ||
               strcmp(tn, "envoy.extensions.access_loggers.stream.v3.StderrAccessLog") == 0) {
        bool out = strstr(tn, "Stdout") != NULL;
        const Envoy__Extensions__AccessLoggers__Stream__V3__StdoutAccessLog *so = (const void *)m;
        const Envoy__Extensions__AccessLoggers__Stream__V3__StderrAccessLog *se = (const void *)m;
        const Envoy__Config__Core__V3__SubstitutionFormatString *sfs = out ? so->log_format : se->log_format;
        l->fmt = sfs ? compile_sfs(sfs, err, errlen) : sharp_access_log_format_compile(NULL, err, errlen);
        l->fd = out ? 1 : 2;
    } else {
        snprintf(err, errlen, "unsupported access logger type '%s'", tn);
        goto bad;
    }
    if (!l->fmt) goto bad;
    if (path) {
        if (strcmp(path, "/dev/stdout") == 0) l->fd = 1;
        else if (strcmp(path, "/dev/stderr") == 0) l->fd = 2;
        else {
            l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (l->fd < 0) {
                snprintf(err, errlen, "cannot open access log '%s': %s", path, strerror(errno));
                goto bad;
            }
            l->owns_fd = true;
        }
        l->path = sharp_strdup(path);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return l;
bad:
    protobuf_c_message_free_unpacked(m, NULL);
    sharp_access_log_free(l);
    return NULL;
}

void sharp_access_log_free(sharp_access_log_t *l)
{
    if (!l) return;
    if (l->owns_fd) close(l->fd);
    if (l->fmt) sharp_access_log_format_free(l->fmt);
    free(l->path);
    free(l);
}

static void writer_flush(sharp_access_log_writer_t *w)
{
    size_t off = 0;
    while (off < w->buf.len) {
        ssize_t n = write(w->fd, w->buf.data + off, w->buf.len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            break; /* a full disk loses log lines, never requests */
        }
        off += (size_t)n;
    }
    sharp_sbuf_reset(&w->buf);
}

void sharp_access_log_emit_all(sharp_worker_t *w, const sharp_hcm_config_t *hcm, const sharp_stream_info_t *si)
{
    for (uint32_t i = 0; i < hcm->naccess_logs; i++) {
        const sharp_access_log_t *l = hcm->access_logs[i];
        if (l->slot >= w->nlog_writers) continue;
        sharp_access_log_writer_t *wr = w->log_writers[l->slot];
        wr->fd = l->fd;
        sharp_access_log_format_render(l->fmt, si, &wr->buf);
        if (wr->buf.len >= FLUSH_BYTES) writer_flush(wr);
    }
}

void sharp_access_log_worker_init(sharp_worker_t *w)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < w->snap->nlisteners; i++) {
        const sharp_hcm_config_t *h = w->snap->listeners[i].hcm;
        for (uint32_t k = 0; h && k < h->naccess_logs; k++)
            if (h->access_logs[k]->slot + 1 > n) n = h->access_logs[k]->slot + 1;
    }
    w->nlog_writers = n;
    w->log_writers = sharp_calloc(n ? n : 1, sizeof *w->log_writers);
    for (uint32_t i = 0; i < n; i++) {
        w->log_writers[i] = sharp_calloc(1, sizeof(sharp_access_log_writer_t));
        w->log_writers[i]->fd = -1;
    }
}

void sharp_access_log_worker_flush(sharp_worker_t *w)
{
    for (uint32_t i = 0; i < w->nlog_writers; i++)
        if (w->log_writers[i]->buf.len && w->log_writers[i]->fd >= 0) writer_flush(w->log_writers[i]);
}

void sharp_access_log_worker_free(sharp_worker_t *w)
{
    sharp_access_log_worker_flush(w);
    for (uint32_t i = 0; i < w->nlog_writers; i++) {
        sharp_sbuf_free(&w->log_writers[i]->buf);
        free(w->log_writers[i]);
    }
    free(w->log_writers);
    w->log_writers = NULL;
    w->nlog_writers = 0;
}
