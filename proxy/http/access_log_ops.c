/* access_log_ops.c: rendering compiled access-log formats (see
 * access_log.h), and the file sink with its per-worker writers. */
#include "http/access_log_internal.h"
#include "http/grpc.h"
#include "http/metadata.h"
#include "net.h"
#include "tls/conn.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* ---- operator values ---- */

_Static_assert(OP_UPSTREAM_LOCAL_IP_SAN - OP_UPSTREAM_TLS_VERSION == SHARP_TLS_INFO_LOCAL_IP_SAN,
               "the UPSTREAM_TLS_* / _PEER_* / _LOCAL_* operators follow sharp_tls_info_t");

static void put_cstr(sharp_sbuf_t *out, const char *s)
{
    sharp_sbuf_append(out, s, strlen(s));
}

static void put_u64(sharp_sbuf_t *out, uint64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    sharp_sbuf_append(out, b, (size_t)n);
}


static bool put_addr(sharp_sbuf_t *out, const char *a, bool strip)
{
    if (!a[0]) return false;
    if (!strip) {
        put_cstr(out, a);
        return true;
    }
    sharp_str_t s = sharp_addr_without_port(a);
    sharp_sbuf_append(out, s.p, s.len);
    return true;
}

/* The port of an IP address ("1.2.3.4:80", "[::1]:80"); none (missing)
 * for a pipe, as Envoy's *_PORT operators. */
static bool put_port(sharp_sbuf_t *out, const char *a)
{
    const char *colon = strrchr(a, ':'), *bracket = strrchr(a, ']');
    if (!a[0] || a[0] == '/' || a[0] == '@' || !colon || (bracket && colon < bracket) || !colon[1]) return false;
    put_cstr(out, colon + 1);
    return true;
}

static bool put_opt(sharp_sbuf_t *out, const char *s)
{
    if (!s || !s[0]) return false;
    put_cstr(out, s);
    return true;
}

/* The first value of the header, else of the alternative header. */
static bool put_header(sharp_sbuf_t *out, const sharp_headers_t *h, const al_piece_t *p)
{
    sharp_str_t v;
    if (!h) return false;
    if (!sharp_headers_get(h, p->text, p->len, &v) &&
        (!p->alt || !sharp_headers_get(h, p->alt, p->alt_len, &v)))
        return false;
    sharp_sbuf_append(out, v.p, p->has_max ? SHARP_MIN(v.len, p->max_len) : v.len);
    return true;
}

static bool put_ms_since_start(sharp_sbuf_t *out, const sharp_stream_info_t *si, uint64_t t_ns)
{
    if (!t_ns || !si->start_ns) return false;
    put_u64(out, t_ns > si->start_ns ? (t_ns - si->start_ns) / 1000000 : 0);
    return true;
}

static void put_fraction(sharp_sbuf_t *out, uint64_t ns, int digits, bool trim)
{
    char b[16];
    snprintf(b, sizeof b, "%09" PRIu64, ns);
    size_t n = (size_t)digits;
    if (trim) {
        n = 9;
        while (n > 1 && b[n - 1] == '0')
            n--;
    }
    sharp_sbuf_append(out, b, n);
}

static void put_time(sharp_sbuf_t *out, const al_piece_t *p, uint64_t wall_us)
{
    time_t secs = (time_t)(wall_us / 1000000);
    uint64_t ns = (wall_us % 1000000) * 1000;
    struct tm tm;
    gmtime_r(&secs, &tm);
    for (uint32_t i = 0; i < p->nsegs; i++) {
        const al_time_seg_t *sg = &p->segs[i];
        switch (sg->kind) {
        case TS_STRFTIME: {
            char b[512];
            size_t n = strftime(b, sizeof b, sg->text, &tm);
            sharp_sbuf_append(out, b, n);
            break;
        }
        case TS_EPOCH:
            sharp_sbuf_printf(out, "%lld", (long long)secs);
            break;
        case TS_FRACTION:
            put_fraction(out, ns, sg->digits, false);
            break;
        case TS_FRACTION_TRIM:
            put_fraction(out, ns, 9, true);
            break;
        case TS_FRACTION_DOT:
            sharp_sbuf_append(out, ".", 1);
            put_fraction(out, ns, sg->digits, false);
            break;
        case TS_FRACTION_TRIM_DOT:
            if (ns) {
                sharp_sbuf_append(out, ".", 1);
                put_fraction(out, ns, 9, true);
            }
            break;
        }
    }
}

/* DYNAMIC_METADATA(NS:K1:K2...): the namespace's struct, or the value at
 * the path of keys through nested structs (Envoy's metadataValue); NULL
 * when absent, null or without a kind (Envoy's unspecified value). */
static const sharp_md_value_t *metadata_value(const al_piece_t *p, const sharp_stream_info_t *si)
{
    const sharp_md_value_t *v = sharp_dynamic_metadata_ns(si->dynamic_metadata, p->text, p->len);
    for (uint32_t i = 0; v && i < p->npath; i++)
        v = sharp_md_struct_get(v, p->path[i], strlen(p->path[i]));
    if (!v || v->kind == SHARP_MD_UNSET || v->kind == SHARP_MD_NULL) return NULL;
    return v;
}

/* As text: a string as it is, anything else as JSON, then cut to :N. */
static bool put_metadata(sharp_sbuf_t *out, const al_piece_t *p, const sharp_stream_info_t *si)
{
    const sharp_md_value_t *v = metadata_value(p, si);
    if (!v) return false;
    size_t at = out->len;
    if (v->kind == SHARP_MD_STRING)
        sharp_sbuf_append(out, v->s, v->len);
    else
        sharp_md_value_json(v, out);
    if (p->has_max && out->len - at > p->max_len) out->len = at + p->max_len;
    return true;
}

/* Appends the operator's value and returns true, or appends nothing and
 * returns false when the stream has no such value. */
static bool put_value(const sharp_access_log_format_t *f, const al_piece_t *p,
                      const sharp_stream_info_t *si, sharp_sbuf_t *out)
{
    if (p->op == OP_LITERAL) {
        sharp_sbuf_append(out, p->text, p->len);
        return true;
    }
    if (p->op == OP_HOSTNAME) return put_opt(out, f->hostname);
    if (!si) return false;
    switch (p->op) {
    case OP_START_TIME:
        put_time(out, p, si->start_wall_us);
        return true;
    case OP_REQ:
        return put_header(out, si->request_headers, p);
    case OP_RESP:
        return put_header(out, si->response_headers, p);
    case OP_TRAILER:
        return put_header(out, si->response_trailers, p);
    case OP_RESPONSE_CODE:
        put_u64(out, si->response_code);
        return true;
    case OP_RESPONSE_FLAGS: {
        char b[160];
        size_t n = sharp_response_flags_str(si->response_flags, b, sizeof b);
        sharp_sbuf_append(out, b, n);
        return true;
    }
    case OP_RESPONSE_CODE_DETAILS:
        return put_opt(out, si->response_code_details);
    case OP_BYTES_RECEIVED:
        put_u64(out, si->bytes_received);
        return true;
    case OP_BYTES_SENT:
        put_u64(out, si->bytes_sent);
        return true;
    case OP_DURATION:
        /* an open stream reports its duration so far, as Envoy does */
        return put_ms_since_start(out, si, si->end_ns ? si->end_ns : sharp_now_ns());
    case OP_REQUEST_DURATION:
        return put_ms_since_start(out, si, si->request_complete_ns);
    case OP_RESPONSE_DURATION:
        return put_ms_since_start(out, si, si->upstream_first_byte_ns);
    case OP_ATTEMPT_COUNT:
        put_u64(out, si->attempt_count);
        return true;
    case OP_UPSTREAM_HOST:
        return put_addr(out, si->upstream_host, false);
    case OP_UPSTREAM_HOST_NOPORT:
        return put_addr(out, si->upstream_host, true);
    case OP_UPSTREAM_CLUSTER:
        return put_opt(out, si->upstream_cluster);
    case OP_UPSTREAM_CLUSTER_RAW:
        return put_opt(out, si->upstream_cluster_raw);
    case OP_UPSTREAM_LOCAL:
        return put_addr(out, si->upstream_local_address, false);
    case OP_UPSTREAM_LOCAL_NOPORT:
        return put_addr(out, si->upstream_local_address, true);
    case OP_UPSTREAM_FAILURE_REASON: {
        /* Envoy's formatter makes the reason one token: spaces become '_' */
        size_t at = out->len;
        if (!put_opt(out, si->upstream_transport_failure_reason)) return false;
        for (size_t i = at; i < out->len; i++)
            if (out->data[i] == ' ') out->data[i] = '_';
        return true;
    }
    case OP_UPSTREAM_HOST_DIAGNOSIS: /* "-" for a host without one */
        return put_opt(out, si->upstream_host_diagnosis);
    /* the last try's upstream TLS: absent ("-") for plaintext, as Envoy */
    case OP_UPSTREAM_TLS_VERSION:
    case OP_UPSTREAM_TLS_CIPHER:
    case OP_UPSTREAM_TLS_SESSION_ID:
    case OP_UPSTREAM_PEER_SUBJECT:
    case OP_UPSTREAM_PEER_ISSUER:
    case OP_UPSTREAM_PEER_CERT:
    case OP_UPSTREAM_PEER_URI_SAN:
    case OP_UPSTREAM_PEER_DNS_SAN:
    case OP_UPSTREAM_PEER_IP_SAN:
    case OP_UPSTREAM_LOCAL_URI_SAN:
    case OP_UPSTREAM_LOCAL_DNS_SAN:
    case OP_UPSTREAM_LOCAL_IP_SAN:
        return si->upstream_tls &&
               sharp_tls_conn_put_info(si->upstream_tls, (sharp_tls_info_t)(p->op - OP_UPSTREAM_TLS_VERSION), out);
    case OP_UPSTREAM_PEER_CERT_V_START:
    case OP_UPSTREAM_PEER_CERT_V_END: {
        int64_t t;
        if (!si->upstream_tls ||
            !sharp_tls_conn_peer_validity(si->upstream_tls, p->op == OP_UPSTREAM_PEER_CERT_V_END, &t) || t < 0)
            return false;
        put_time(out, p, (uint64_t)t * 1000000);
        return true;
    }
    case OP_DOWNSTREAM_REMOTE:
        return put_addr(out, si->downstream_remote_address, false);
    case OP_DOWNSTREAM_REMOTE_NOPORT:
        return put_addr(out, si->downstream_remote_address, true);
    case OP_DOWNSTREAM_DIRECT_REMOTE:
        return put_addr(out, si->downstream_direct_remote_address, false);
    case OP_DOWNSTREAM_DIRECT_REMOTE_NOPORT:
        return put_addr(out, si->downstream_direct_remote_address, true);
    case OP_DOWNSTREAM_LOCAL:
        return put_addr(out, si->downstream_local_address, false);
    case OP_DOWNSTREAM_LOCAL_NOPORT:
        return put_addr(out, si->downstream_local_address, true);
    case OP_DOWNSTREAM_LOCAL_PORT:
        return put_port(out, si->downstream_local_address);
    case OP_DOWNSTREAM_REMOTE_PORT:
        return put_port(out, si->downstream_remote_address);
    case OP_PROTOCOL:
        return put_opt(out, si->protocol);
    /* TLS: absent ("-") on a plaintext connection, as Envoy */
    case OP_DOWNSTREAM_TLS_VERSION:
        return si->downstream_tls && put_opt(out, si->downstream_tls->version);
    case OP_DOWNSTREAM_TLS_CIPHER:
        return si->downstream_tls && put_opt(out, si->downstream_tls->cipher);
    case OP_REQUESTED_SERVER_NAME:
        return si->downstream_tls && put_opt(out, si->downstream_tls->sni);
    case OP_DOWNSTREAM_PEER_URI_SAN:
        return si->downstream_tls && put_opt(out, si->downstream_tls->peer_uri_san);
    case OP_DOWNSTREAM_PEER_SUBJECT:
        return si->downstream_tls && put_opt(out, si->downstream_tls->peer_subject);
    case OP_DOWNSTREAM_LOCAL_SUBJECT:
        return si->downstream_tls && put_opt(out, si->downstream_tls->local_subject);
    case OP_ROUTE_NAME:
        return put_opt(out, si->route_name);
    case OP_GRPC_STATUS:
    case OP_GRPC_STATUS_SNAKE:
    case OP_GRPC_STATUS_NUMBER: {
        /* only for a gRPC request (Envoy's validate_grpc_header_before_log_grpc_status) */
        int64_t code;
        if (!sharp_grpc_is_request(si->request_headers) ||
            !sharp_grpc_response_status(si->response_trailers, si->response_headers, si->response_code, &code))
            return false;
        const char *name = p->op == OP_GRPC_STATUS_NUMBER ? NULL
                                                          : sharp_grpc_status_name(code, p->op == OP_GRPC_STATUS_SNAKE);
        if (name) {
            sharp_sbuf_puts(out, name);
        } else {
            char b[24];
            int n = snprintf(b, sizeof b, "%lld", (long long)code);
            sharp_sbuf_append(out, b, (size_t)n);
        }
        return true;
    }
    case OP_DYNAMIC_METADATA:
        return put_metadata(out, p, si);
    case OP_LOCAL_REPLY_BODY:
        /* a value even when empty: Envoy renders "" here, never "-" */
        if (si->local_reply_body) sharp_sbuf_append(out, si->local_reply_body, si->local_reply_body_len);
        return true;
    default:
        return false;
    }
}

/* ---- rendering ---- */

/* JSON-escapes out[start..len) in place. Values rarely need escaping, so
 * the common case only scans. */
static void escape_tail(sharp_sbuf_t *out, size_t start)
{
    size_t i = start;
    while (i < out->len) {
        unsigned char c = (unsigned char)out->data[i];
        if (c == '"' || c == '\\' || c < 0x20) break;
        i++;
    }
    if (i == out->len) return;
    size_t n = out->len - i;
    char *raw = sharp_strndup(out->data + i, n);
    out->len = i;
    sharp_sbuf_json_escape(out, raw, n);
    free(raw);
}

static void render_text(const sharp_access_log_format_t *f, const al_field_t *fl,
                        const sharp_stream_info_t *si, sharp_sbuf_t *out, const char *missing,
                        bool json_escape)
{
    for (uint32_t i = 0; i < fl->n; i++) {
        size_t start = out->len;
        if (!put_value(f, &fl->pieces[i], si, out))
            put_cstr(out, missing);
        else if (json_escape)
            escape_tail(out, start);
    }
}

/* A number from the config, in its shortest form that reads back the same
 * (integers without a fraction). */
static void put_number(sharp_sbuf_t *out, double d)
{
    if (d != d || d > 1.7976931348623157e308 || d < -1.7976931348623157e308) {
        put_cstr(out, "null"); /* JSON has no NaN or infinity */
        return;
    }
    char b[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, d);
        if (strtod(b, NULL) == d) break;
    }
    put_cstr(out, b);
}

static void render_object(const sharp_access_log_format_t *f, const al_field_t *fields, uint32_t n,
                          const sharp_stream_info_t *si, sharp_sbuf_t *out);

/* Appends the JSON value of one field. A format that is a single operator
 * keeps its type: a number stays a number, a missing value becomes null, or
 * with omit_empty (Envoy's omit_empty_values) nothing is appended and false
 * is returned so the key is left out. A format with several pieces is always
 * a string, its missing pieces "-", or nothing with omit_empty. */
static bool render_value(const sharp_access_log_format_t *f, const al_field_t *fl, const sharp_stream_info_t *si,
                         sharp_sbuf_t *out)
{
    switch (fl->kind) {
    case AL_JSON_NUMBER:
        put_number(out, fl->number);
        return true;
    case AL_JSON_OBJECT:
        render_object(f, fl->children, fl->nchildren, si, out);
        return true;
    case AL_JSON_LIST:
        sharp_sbuf_append(out, "[", 1);
        for (uint32_t i = 0; i < fl->nchildren; i++) {
            if (i) sharp_sbuf_append(out, ",", 1);
            if (!render_value(f, &fl->children[i], si, out)) put_cstr(out, "null");
        }
        sharp_sbuf_append(out, "]", 1);
        return true;
    case AL_JSON_FORMAT:
        break;
    }
    size_t at = out->len;
    if (fl->single && fl->pieces[0].op == OP_DYNAMIC_METADATA) {
        /* typed, as Envoy's formatValue: a struct stays an object, a number
         * a number; no :N cut */
        const sharp_md_value_t *v = si ? metadata_value(&fl->pieces[0], si) : NULL;
        if (!v) {
            if (f->omit_empty) return false;
            put_cstr(out, "null");
        } else {
            sharp_md_value_json(v, out);
        }
        return true;
    }
    if (fl->single) {
        bool numeric = fl->pieces[0].numeric;
        if (!numeric) sharp_sbuf_append(out, "\"", 1);
        if (!put_value(f, &fl->pieces[0], si, out)) {
            out->len = at;
            if (f->omit_empty) return false;
            put_cstr(out, "null");
        } else if (!numeric) {
            escape_tail(out, at + 1);
            sharp_sbuf_append(out, "\"", 1);
        }
        return true;
    }
    sharp_sbuf_append(out, "\"", 1);
    render_text(f, fl, si, out, f->omit_empty ? "" : "-", true);
    sharp_sbuf_append(out, "\"", 1);
    return true;
}

static void render_object(const sharp_access_log_format_t *f, const al_field_t *fields, uint32_t n,
                          const sharp_stream_info_t *si, sharp_sbuf_t *out)
{
    sharp_sbuf_append(out, "{", 1);
    bool first = true;
    for (uint32_t k = 0; k < n; k++) {
        const al_field_t *fl = &fields[k];
        size_t key_at = out->len;
        if (!first) sharp_sbuf_append(out, ",", 1);
        sharp_sbuf_append(out, "\"", 1);
        sharp_sbuf_json_escape(out, fl->key, strlen(fl->key));
        sharp_sbuf_append(out, "\":", 2);
        if (!render_value(f, fl, si, out)) {
            out->len = key_at;
            continue;
        }
        first = false;
    }
    sharp_sbuf_append(out, "}", 1);
}

/* One JSON object on one line. */
static void render_json(const sharp_access_log_format_t *f, const sharp_stream_info_t *si,
                        sharp_sbuf_t *out)
{
    render_object(f, f->fields, f->nfields, si, out);
    sharp_sbuf_append(out, "\n", 1);
}

void sharp_access_log_format_render(const sharp_access_log_format_t *f,
                                    const sharp_stream_info_t *si, sharp_sbuf_t *out)
{
    if (f->json)
        render_json(f, si, out);
    else
        render_text(f, &f->fields[0], si, out, f->omit_empty ? "" : "-", false);
}

void sharp_access_log_format_render_header(const sharp_access_log_format_t *f,
                                           const sharp_stream_info_t *si, sharp_sbuf_t *out)
{
    if (f->json)
        render_json(f, si, out);
    else
        render_text(f, &f->fields[0], si, out, "", false);
}

/* ---- file sink ---- */

sharp_access_log_file_t *sharp_access_log_file_open(const char *path, char *err, size_t errlen)
{
    int fd;
    if (strcmp(path, "/dev/stdout") == 0)
        fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
    else if (strcmp(path, "/dev/stderr") == 0)
        fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    else
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "cannot open access log '%s': %s", path, strerror(errno));
        return NULL;
    }
    sharp_access_log_file_t *f = sharp_calloc(1, sizeof *f);
    f->fd = fd;
    f->path = sharp_strdup(path);
    return f;
}

static bool is_std_stream(const char *path)
{
    return strcmp(path, "/dev/stdout") == 0 || strcmp(path, "/dev/stderr") == 0;
}

int sharp_access_log_file_check(const char *path, char *err, size_t errlen)
{
    if (is_std_stream(path)) return 0;
    if (access(path, F_OK) == 0) {
        if (access(path, W_OK) == 0) return 0;
    } else {
        /* Not there yet: its directory must let us create it. */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == dir) dir[1] = '\0';
        else *slash = '\0';
        if (access(dir, W_OK | X_OK) == 0) return 0;
    }
    if (err && errlen) snprintf(err, errlen, "cannot open access log '%s': %s", path, strerror(errno));
    return -1;
}

int sharp_access_log_file_reopen(sharp_access_log_file_t *f, char *err, size_t errlen)
{
    if (!f || is_std_stream(f->path)) return 0;
    int fd = open(f->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (err && errlen) snprintf(err, errlen, "cannot reopen access log '%s': %s", f->path, strerror(errno));
        return -1;
    }
    /* The workers keep writing to f->fd: dup3 swaps the file behind that
     * number atomically, so each write lands whole in the old file or in
     * the new one, and nothing needs to tell the workers. */
    int rc = 0;
    if (dup3(fd, f->fd, O_CLOEXEC) < 0) {
        if (err && errlen) snprintf(err, errlen, "cannot reopen access log '%s': %s", f->path, strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

void sharp_access_log_file_close(sharp_access_log_file_t *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    free(f->path);
    free(f);
}

void sharp_access_log_writer_init(sharp_access_log_writer_t *w, sharp_access_log_file_t *file)
{
    memset(w, 0, sizeof *w);
    w->file = file;
}

int sharp_access_log_writer_flush(sharp_access_log_writer_t *w)
{
    size_t off = 0;
    int rc = 0;
    while (w->file && off < w->buf.len) {
        ssize_t n = write(w->file->fd, w->buf.data + off, w->buf.len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            atomic_fetch_add_explicit(&w->file->write_errors, 1, memory_order_relaxed);
            rc = -1;
            break;
        }
        off += (size_t)n;
    }
    sharp_sbuf_reset(&w->buf);
    return rc;
}

void sharp_access_log_writer_append(sharp_access_log_writer_t *w, const char *p, size_t n)
{
    sharp_sbuf_append(&w->buf, p, n);
    w->lines++;
    if (w->buf.len >= SHARP_ACCESS_LOG_FLUSH_BYTES) sharp_access_log_writer_flush(w);
}

void sharp_access_log_writer_log(sharp_access_log_writer_t *w, const sharp_access_log_format_t *f,
                                 const sharp_stream_info_t *si)
{
    sharp_access_log_format_render(f, si, &w->buf);
    w->lines++;
    if (w->buf.len >= SHARP_ACCESS_LOG_FLUSH_BYTES) sharp_access_log_writer_flush(w);
}

void sharp_access_log_writer_destroy(sharp_access_log_writer_t *w)
{
    sharp_access_log_writer_flush(w);
    sharp_sbuf_free(&w->buf);
    w->file = NULL;
}
