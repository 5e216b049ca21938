/* access_log_emit.c: see access_log_emit.h. */
#include "http/access_log_emit.h"
#include "http/access_log.h"
#include "http/access_log_filter.h"
#include "config/access_log_filter_config.h"
#include "config/mapper.h"
#include "log.h"
#include "sbuf.h"
#include "snapshot.h"
#include "worker.h"

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"
#include "google/protobuf/struct.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct sharp_access_log {
    uint32_t slot;
    /* shared by all workers; O_APPEND keeps their writes whole. A log
     * written through the workers' buffers takes its path's file from the
     * registry below; the admin's logs own theirs. */
    sharp_access_log_file_t *file;
    bool shared_file;
    sharp_access_log_format_t *fmt;
    sharp_alf_t *filter; /* AccessLog.filter: only entries passing it are written; NULL logs all */
};

/* The bytes of a DataSource (inline_string, inline_bytes, filename,
 * environment_variable), as Envoy's DataSource::read with empty data
 * allowed. Files larger than 64 MiB are refused. */
char *sharp_data_source_read(const Envoy__Config__Core__V3__DataSource *ds, size_t *len, char *err, size_t errlen)
{
    const char *data = NULL;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        data = ds->inline_string;
        *len = strlen(data);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        data = (const char *)ds->inline_bytes.data;
        *len = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        data = getenv(ds->environment_variable);
        if (!data) {
            snprintf(err, errlen, "environment variable '%s' is not set", ds->environment_variable);
            return NULL;
        }
        *len = strlen(data);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        char *buf;
        int rc = sharp_read_file(ds->filename, 64u << 20, &buf, len);
        if (rc == -2) snprintf(err, errlen, "file %s is larger than 64 MiB", ds->filename);
        else if (rc < 0) snprintf(err, errlen, "file %s cannot be read: %s", ds->filename, strerror(errno));
        return rc == 0 ? buf : NULL;
    }
    default:
        snprintf(err, errlen, "one of inline_string, inline_bytes, filename or environment_variable is required");
        return NULL;
    }
    char *out = sharp_realloc(NULL, *len + 1);
    memcpy(out, data, *len);
    out[*len] = '\0';
    return out;
}

/* The text format of a SubstitutionFormatString, or its JSON map. */
sharp_access_log_format_t *sharp_access_log_compile_sfs(const Envoy__Config__Core__V3__SubstitutionFormatString *f,
                                                        char *err, size_t errlen)
{
    sharp_access_log_format_t *out = NULL;
    switch (f->format_case) {
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT:
        out = sharp_access_log_format_compile(f->text_format, err, errlen);
        break;
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE: {
        char sub[256];
        size_t len = 0;
        char *text = sharp_data_source_read(f->text_format_source, &len, sub, sizeof sub);
        if (!text) {
            snprintf(err, errlen, "text_format_source: %s", sub);
            return NULL;
        }
        if (strlen(text) != len) {
            free(text);
            snprintf(err, errlen, "text_format_source: the format contains a NUL byte");
            return NULL;
        }
        out = sharp_access_log_format_compile(text, err, errlen);
        free(text);
        break;
    }
    case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT:
        out = sharp_access_log_format_compile_struct(f->json_format, err, errlen);
        break;
    default:
        /* Envoy's validation: the format oneof is required */
        snprintf(err, errlen, "one of text_format, json_format or text_format_source is required");
        return NULL;
    }
    if (out) sharp_access_log_format_set_omit_empty(out, f->omit_empty_values);
    return out;
}

/* The files of the logs the workers write, one per path, each with the
 * slot of the workers' buffers for it. Connection managers come and go
 * with listener updates (LDS) while a worker's buffer may still hold lines
 * for their file, so files are never closed before the process ends: they
 * are as many as the distinct paths the configuration ever named, and a
 * connection manager built again for the same path takes the same file and
 * buffer. Main thread only (configs are built there). */
typedef struct log_path {
    char *path;
    sharp_access_log_file_t *file;
} log_path_t;
static log_path_t *log_paths;
static uint32_t nlog_paths;

static sharp_access_log_file_t *shared_file(const char *path, uint32_t *slot, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < nlog_paths; i++)
        if (!strcmp(log_paths[i].path, path)) {
            *slot = i;
            return log_paths[i].file;
        }
    sharp_access_log_file_t *f = sharp_access_log_file_open(path, err, errlen);
    if (!f) return NULL;
    log_paths = sharp_realloc(log_paths, (nlog_paths + 1) * sizeof *log_paths);
    log_paths[nlog_paths] = (log_path_t){sharp_strdup(path), f};
    *slot = nlog_paths++;
    return f;
}

int sharp_access_log_files_reopen(char *err, size_t errlen)
{
    int rc = 0;
    char e[512];
    for (uint32_t i = 0; i < nlog_paths; i++)
        if (sharp_access_log_file_reopen(log_paths[i].file, e, sizeof e) < 0) {
            if (!rc) snprintf(err, errlen, "%s", e);
            rc = -1;
        }
    return rc;
}

void sharp_access_log_files_close_all(void)
{
    for (uint32_t i = 0; i < nlog_paths; i++) {
        sharp_access_log_file_close(log_paths[i].file);
        free(log_paths[i].path);
    }
    free(log_paths);
    log_paths = NULL;
    nlog_paths = 0;
}

sharp_access_log_t *sharp_access_log_create(const ProtobufCMessage *msg, bool worker_buffered, bool open_file,
                                            char *err, size_t errlen)
{
    const Envoy__Config__Accesslog__V3__AccessLog *al = (const void *)msg;
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
    l->slot = UINT32_MAX; /* no worker buffer until it has a file */
    if (al->filter) {
        char ferr[512];
        l->filter = sharp_config_access_log_filter(al->filter, "filter", ferr, sizeof ferr);
        if (!l->filter) {
            snprintf(err, errlen, "%s", ferr);
            goto bad;
        }
    }
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
            l->fmt = sharp_access_log_format_compile_struct(f->json_format, err, errlen);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT:
            l->fmt = sharp_access_log_format_compile_struct(f->typed_json_format, err, errlen);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT:
            l->fmt = sharp_access_log_compile_sfs(f->log_format, err, errlen);
            break;
        default: l->fmt = sharp_access_log_format_compile(SHARP_ACCESS_LOG_DEFAULT_FORMAT, err, errlen); break;
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
        l->fmt = sfs ? sharp_access_log_compile_sfs(sfs, err, errlen)
                     : sharp_access_log_format_compile(SHARP_ACCESS_LOG_DEFAULT_FORMAT, err, errlen);
        path = out ? "/dev/stdout" : "/dev/stderr";
    } else {
        snprintf(err, errlen, "unsupported access logger type '%s'", tn);
        goto bad;
    }
    if (!l->fmt) goto bad;
    if (!open_file) { /* --mode validate */
        if (sharp_access_log_file_check(path, err, errlen) < 0) goto bad;
        protobuf_c_message_free_unpacked(m, NULL);
        return l;
    }
    if (worker_buffered) {
        l->file = shared_file(path, &l->slot, err, errlen);
        l->shared_file = l->file != NULL;
    } else {
        l->file = sharp_access_log_file_open(path, err, errlen);
    }
    if (!l->file) goto bad;
    protobuf_c_message_free_unpacked(m, NULL);
    return l;
bad:
    protobuf_c_message_free_unpacked(m, NULL);
    sharp_access_log_free(l);
    return NULL;
}

sharp_access_log_t *sharp_access_log_create_path(const char *path, bool open_file, char *err,
                                                 size_t errlen)
{
    sharp_access_log_t *l = sharp_calloc(1, sizeof *l);
    l->slot = UINT32_MAX; /* never a worker's buffer */
    l->fmt = sharp_access_log_format_compile(SHARP_ACCESS_LOG_DEFAULT_FORMAT, err, errlen);
    if (!l->fmt) goto bad;
    if (!open_file) {
        if (sharp_access_log_file_check(path, err, errlen) < 0) goto bad;
        return l;
    }
    l->file = sharp_access_log_file_open(path, err, errlen);
    if (!l->file) goto bad;
    return l;
bad:
    sharp_access_log_free(l);
    return NULL;
}

/* The admin server's access logs run on the main thread, which has no
 * worker generator. */
static uint64_t admin_random(void *ctx)
{
    (void)ctx;
    static uint64_t state;
    if (!state) state = sharp_now_ns() | 1;
    return sharp_xorshift64s(&state);
}

static uint64_t worker_random(void *ctx)
{
    return sharp_worker_random(ctx);
}

void sharp_access_log_write_now(const sharp_access_log_t *l, const sharp_stream_info_t *si)
{
    if (!l->file) return; /* --mode validate opens nothing */
    if (l->filter && !sharp_alf_evaluate(l->filter, si, admin_random, NULL)) return;
    sharp_access_log_writer_t w;
    sharp_access_log_writer_init(&w, l->file);
    sharp_access_log_writer_log(&w, l->fmt, si);
    sharp_access_log_writer_destroy(&w);
}

void sharp_access_log_free(sharp_access_log_t *l)
{
    if (!l) return;
    if (l->file && !l->shared_file) sharp_access_log_file_close(l->file);
    if (l->fmt) sharp_access_log_format_free(l->fmt);
    sharp_alf_free(l->filter);
    free(l);
}

int sharp_access_log_reopen(sharp_access_log_t *l, char *err, size_t errlen)
{
    if (!l->file || l->shared_file) return 0; /* sharp_access_log_files_reopen's */
    return sharp_access_log_file_reopen(l->file, err, errlen);
}

/* A buffer per slot up to n (slots only grow: see log_paths). */
static void grow_writers(sharp_worker_t *w, uint32_t n)
{
    if (n <= w->nlog_writers && w->log_writers) return;
    w->log_writers = sharp_realloc(w->log_writers, (n ? n : 1) * sizeof *w->log_writers);
    for (uint32_t i = w->nlog_writers; i < n; i++) w->log_writers[i] = sharp_calloc(1, sizeof(sharp_access_log_writer_t));
    if (n > w->nlog_writers) w->nlog_writers = n;
}

void sharp_access_log_emit_all(sharp_worker_t *w, const sharp_hcm_config_t *hcm, const sharp_stream_info_t *si)
{
    for (uint32_t i = 0; i < hcm->naccess_logs; i++) {
        const sharp_access_log_t *l = hcm->access_logs[i];
        if (l->slot == UINT32_MAX) continue;
        if (l->slot >= w->nlog_writers) grow_writers(w, l->slot + 1); /* a path new since the worker began */
        if (l->filter && !sharp_alf_evaluate(l->filter, si, worker_random, w)) continue;
        sharp_access_log_writer_t *wr = w->log_writers[l->slot];
        if (!wr->file) sharp_access_log_writer_init(wr, l->file);
        sharp_access_log_writer_log(wr, l->fmt, si);
    }
}

void sharp_access_log_worker_init(sharp_worker_t *w)
{
    w->nlog_writers = 0;
    w->log_writers = NULL;
    grow_writers(w, nlog_paths);
}

void sharp_access_log_worker_flush(sharp_worker_t *w)
{
    for (uint32_t i = 0; i < w->nlog_writers; i++)
        if (w->log_writers[i]->file) sharp_access_log_writer_flush(w->log_writers[i]);
}

void sharp_access_log_worker_free(sharp_worker_t *w)
{
    for (uint32_t i = 0; i < w->nlog_writers; i++) {
        if (w->log_writers[i]->file) sharp_access_log_writer_destroy(w->log_writers[i]);
        free(w->log_writers[i]);
    }
    free(w->log_writers);
    w->log_writers = NULL;
    w->nlog_writers = 0;
}
