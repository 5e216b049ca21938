/* http1_server.c: the HTTP/1.1 server codec (llhttp in strict mode, with
 * the RFC 9112 checks llhttp 8.1 lacks): request heads validated whole
 * before a stream reaches the filter chain, bodies (Content-Length,
 * chunked, to EOF for HTTP/1.0), pipelining, upgrades (tunnels), and the
 * response's status line, headers and framing.
 *
 * One stream at a time per connection. Pipelined requests are parsed only
 * after the current stream ends: the parser pauses at each message end and
 * the bytes after it wait in `pipeline`. */
#include "http/conn_internal.h"
#include "log.h"
#include "overload.h"
#include "tls/downstream.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static llhttp_settings_t settings;
static int h1_request_head(sharp_conn_t *c, sharp_stream_t *s, llhttp_t *p);
static void conn_resume_pipeline(sharp_conn_t *c);
static void h1_send_continue(sharp_stream_t *s);

#define STATS(c) SHARP_CONN_STATS(c)
#define HCM(c) SHARP_CONN_HCM(c)

/* A request rejected by the codec still gets its request line into the
 * access log when it had one ("GET /x HTTP/1.0" 426), as in Envoy. */
static void stream_fill_request_line(sharp_conn_t *c, sharp_stream_t *s)
{
    sharp_str_t v;
    if (!c->h1.url.len || sharp_headers_get_cstr(&s->req, ":method", &v)) return;
    if (!s->info.protocol && c->h1.parser.http_major == 1)
        s->info.protocol = c->h1.parser.http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->h1.parser));
    sharp_headers_add(&s->req, ":method", 7, method, strlen(method));
    sharp_headers_add(&s->req, ":path", 5, c->h1.url.data, c->h1.url.len);
    if (sharp_headers_get_cstr(&s->req, "host", &v)) sharp_headers_add(&s->req, ":authority", 10, v.p, v.len);
}

/* Sends a 400/413/431-style error for a request that never became a stream
 * (or whose stream cannot continue) and closes the connection. */
static void conn_protocol_error_ex(sharp_conn_t *c, uint32_t code, const char *body, const char *details)
{
    sharp_counter_inc(STATS(c), HCM(c)->st.cx_protocol_error);
    /* the parser is done with this connection: what the client still sends
     * is discarded until the close (llhttp would report the same error
     * again on every later read, and each would be answered) */
    c->h1.errored = true;
    sharp_stream_t *s = c->h1.stream;
    sharp_debug(http, "[C%llu] dispatch error: %u %s", c->id, code, details);
    if (s) stream_fill_request_line(c, s);
    if (s && !s->response_started) {
        s->info.response_flags |= SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR;
        s->closes_connection = true;
        s->force_delayed_close = true; /* Envoy's codec error close: FlushWriteAndDelay */
        c->close_after_response = true;
        sharp_filter_t *first = s->nfilters ? &s->filters[0] : NULL;
        if (first) {
            s->request_complete = true; /* nothing more will be read */
            sharp_stream_send_local_reply(first, code, body, SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR,
                                          details);
            return;
        }
    }
    /* No stream yet: answer directly. */
    sharp_sbuf_t out = {0};
    sharp_sbuf_printf(&out, "HTTP/1.1 %u %s\r\ncontent-length: %zu\r\ncontent-type: text/plain\r\n"
                      "connection: close\r\n\r\n%s", code, sharp_h1_reason(code), strlen(body), body);
    uv_buf_t b = uv_buf_init(out.data, (unsigned)out.len);
    sharp_writer_write(&c->writer, &b, 1);
    sharp_sbuf_free(&out);
    if (s) {
        s->info.response_code = code;
        s->info.response_flags |= SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR;
        s->response_complete = s->request_complete = true;
        sharp_conn_stream_destroy(s);
    }
    sharp_conn_close_after_write(c, true);
}

static void conn_protocol_error(sharp_conn_t *c, uint32_t code, const char *details)
{
    conn_protocol_error_ex(c, code, details, details);
}

/* Upgrade payload from the client: request data of the upgraded stream,
 * never parsed. */
static void tunnel_data(sharp_conn_t *c, const char *p, size_t n)
{
    sharp_stream_t *s = c->h1.stream;
    if (!s || s->destroyed || s->response_complete) return;
    s->info.bytes_received += n;
    sharp_conn_stream_touch(s);
    dec_run_data(s, 0, p, n, false);
}

/* Whether bytes that follow earlier ones (which ended so when `before`)
 * end in a line feed followed by nothing but spaces and tabs. */
static bool ends_in_line_break(const char *p, size_t n, bool before)
{
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    return n ? p[n - 1] == '\n' : before;
}

/* Feeds bytes to the parser. The parser pauses at the end of every request;
 * when that request's stream has already finished (a fast local reply, say),
 * parsing goes straight on with the rest, otherwise the rest waits. */
static void conn_execute(sharp_conn_t *c, const char *p, size_t n)
{
    sharp_sbuf_t own = {0};
    for (;;) {
        c->h1.parsing = true;
        c->h1.exec_gen++;
        c->h1.exec_begin = p;
        c->h1.exec_end = p + n;
        llhttp_errno_t e = llhttp_execute(&c->h1.parser, p, n);
        c->h1.parsing = false;
        if (c->closing || c->shutdown) break;
        c->h1.tail_lf_ws = ends_in_line_break(p, n, c->h1.tail_lf_ws);
        if (e == HPE_OK && c->h1.stream && !c->h1.version_done && c->h1.url.len) {
            const char *from = c->h1.url_gen == c->h1.exec_gen ? c->h1.url_end : p;
            if (from >= p && from <= p + n && memchr(from, '\n', (size_t)(p + n - from))) {
                conn_protocol_error_ex(c, 400, "Bad Request", "http1.codec_error");
                break;
            }
        }
        if (c->h1.tunnel && (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE)) {
            /* the upgrade request's HTTP part is over: what follows it is
             * the upgrade payload, which goes to the stream as it is */
            const char *pos = llhttp_get_error_pos(&c->h1.parser);
            c->h1.paused = true;
            if (pos && pos >= p && pos < p + n) tunnel_data(c, pos, (size_t)(p + n - pos));
            break;
        }
        if (e == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&c->h1.parser);
            c->h1.paused = true;
            if (pos && pos >= p && pos < p + n) sharp_sbuf_append(&c->h1.pipeline, pos, (size_t)(p + n - pos));
            if (c->h1.stream) break;
            /* the stream is done: continue with what followed it */
            c->h1.paused = false;
            llhttp_resume(&c->h1.parser);
            sharp_sbuf_free(&own);
            own = c->h1.pipeline;
            memset(&c->h1.pipeline, 0, sizeof c->h1.pipeline);
            if (!own.len) break;
            p = own.data;
            n = own.len;
            continue;
        }
        if (e == HPE_OK) break;
        if (c->h1.underscore_rejected) {
            conn_protocol_error_ex(c, 400, "Bad Request", "http1.unexpected_underscore");
            break;
        }
        if (c->h1.reject_code) {
            conn_protocol_error_ex(c, c->h1.reject_code, sharp_h1_reason(c->h1.reject_code), c->h1.reject_details);
            break;
        }
        /* llhttp turns an error returned from on_headers_complete into
         * HPE_CB_HEADERS_COMPLETE and drops our reason: the flag says the
         * request was already answered, so no second response is sent. */
        if (c->h1.rejected) break;
        if (e == HPE_PAUSED_UPGRADE) {
            conn_protocol_error(c, 403, "upgrade not supported");
            break;
        }
        if (e == HPE_USER) {
            const char *r = llhttp_get_error_reason(&c->h1.parser);
            if (r && strcmp(r, "431") == 0) {
                conn_protocol_error_ex(c, 431, "request headers too large", "http1.headers_too_large");
                break;
            }
            if (r && strcmp(r, "stop") == 0) break;
        }
        /* Everything else llhttp refuses is Envoy's generic codec error,
         * except the framing errors Envoy names itself: a transfer coding
         * other than a lone "chunked" (501) and Content-Length together
         * with Transfer-Encoding (400). */
        uint32_t code = 400;
        const char *details = "http1.codec_error";
        if (e == HPE_INVALID_TRANSFER_ENCODING) {
            code = 501;
            details = "http1.invalid_transfer_encoding";
        } else if (e == HPE_UNEXPECTED_CONTENT_LENGTH) {
            const char *r = llhttp_get_error_reason(&c->h1.parser);
            if (r && strstr(r, "Transfer-Encoding")) details = "http1.content_length_and_chunked_not_allowed";
        }
        sharp_debug(http, "[C%llu] llhttp: %s (%s)", c->id, llhttp_errno_name(e),
                    llhttp_get_error_reason(&c->h1.parser) ? llhttp_get_error_reason(&c->h1.parser) : "");
        conn_protocol_error_ex(c, code, sharp_h1_reason(code), details);
        break;
    }
    sharp_sbuf_free(&own);
    sharp_conn_update_reading(c);
}

static void conn_resume_pipeline(sharp_conn_t *c)
{
    c->h1.paused = false;
    llhttp_resume(&c->h1.parser);
    if (c->h1.pipeline.len) {
        sharp_sbuf_t pending = c->h1.pipeline;
        memset(&c->h1.pipeline, 0, sizeof c->h1.pipeline);
        conn_execute(c, pending.data, pending.len);
        sharp_sbuf_free(&pending);
        return;
    }
    sharp_conn_update_reading(c);
}

/* ------------------------------------------------------------------ */
/* request parsing                                                      */

static int p_on_message_begin(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    if (c->h1.stream) return -1; /* cannot happen: the parser pauses between messages */
    c->h1.stream = sharp_conn_stream_create(c);
    c->h1.header_bytes = 0;
    c->h1.in_value = false;
    c->h1.value_done = false;
    c->h1.value_spans = false;
    c->h1.version_done = false;
    c->h1.head_done = false;
    c->h1.reject_code = 0;
    c->h1.url_end = NULL;
    /* llhttp sets the version only when it parses one: a request line
     * without a version must not inherit the previous request's. */
    p->http_major = p->http_minor = 0;
    sharp_sbuf_reset(&c->h1.url);
    return 0;
}

static int too_large(llhttp_t *p)
{
    llhttp_set_error_reason(p, "431");
    return HPE_USER;
}

/* Refuses the request from a parser callback; conn_execute answers once
 * llhttp has returned (it replaces the reason of a *_complete callback's
 * error, so the answer cannot travel in the parser). */
static int reject(llhttp_t *p, uint32_t code, const char *details)
{
    sharp_conn_t *c = p->data;
    if (!c->h1.reject_code) {
        c->h1.reject_code = code;
        c->h1.reject_details = details;
    }
    llhttp_set_error_reason(p, "reject");
    return HPE_USER;
}

/* A request line without an HTTP version ("GET /x" and CRLF) is HTTP/0.9
 * to llhttp, which then waits for headers that such a client never sends.
 * llhttp sets version 0.9 just before this callback on that path only (it
 * comes once a byte follows the line end; conn_execute catches a line end
 * with nothing after it). */
static int p_on_url_complete(llhttp_t *p)
{
    if (p->http_major == 0 && p->http_minor == 9) return reject(p, 400, "http1.codec_error");
    return 0;
}

static int p_on_url(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->h1.header_bytes += n;
    if (c->h1.header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    sharp_sbuf_append(&c->h1.url, at, n);
    c->h1.url_end = at + n;
    c->h1.url_gen = c->h1.exec_gen;
    return 0;
}

static int p_on_version_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    c->h1.version_done = true;
    return 0;
}

static int p_on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->h1.header_bytes += n;
    if (c->h1.header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    /* Trailers of a chunked request are dropped, as by Envoy's codec
     * without enable_trailers: merged into the header map they would
     * reach the upstream as header fields (a second Host, say). */
    if (c->h1.head_done) return 0;
    sharp_headers_t *h = &c->h1.stream->req;
    c->h1.value_done = false;
    c->h1.value_spans = false;
    bool first = c->h1.in_value || h->n == 0;
    if (first) {
        if (h->n >= HCM(c)->max_headers_count) return too_large(p);
        sharp_headers_add(h, at, n, "", 0);
        c->h1.in_value = false;
    } else {
        sharp_headers_append_last_name(h, at, n);
    }
    /* preserve_case: the name's spelling, for the upstream HTTP/1 encoder */
    if (c->h1.preserve_case) {
        if (!h->cases) sharp_headers_case_enable(h, HCM(c)->h1_keys.proper_others, false);
        sharp_headers_case_name(h, at, n, first);
    }
    return 0;
}

static int p_on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    c->h1.header_bytes += n;
    if (c->h1.header_bytes > (size_t)HCM(c)->max_request_headers_kb * 1024) return too_large(p);
    if (c->h1.head_done) return 0; /* a trailer */
    /* llhttp 8.1 accepts a header line without a name (": x"); its value
     * would be glued to the previous header. */
    if (c->h1.value_done || c->h1.stream->req.n == 0) return reject(p, 400, "http1.codec_error");
    /* A value comes in one span per read buffer. A second span that does
     * not continue the first where it (and its buffer) ended skipped a line
     * break: obs-fold, which llhttp 8.1 accepts and RFC 9112 lets a server
     * reject with 400, as Envoy's parsers do. */
    if (c->h1.value_spans) {
        bool contiguous = c->h1.value_gen == c->h1.exec_gen ? at == c->h1.value_end
                                                      : c->h1.value_at_buf_end && at == c->h1.exec_begin;
        if (!contiguous) return reject(p, 400, "http1.codec_error");
    }
    /* A fold after an empty first line ("Name:", CRLF, " value") has no
     * span before it, and llhttp starts the span after the fold's
     * whitespace: a line break before that whitespace gives it away.
     * (An empty value gets an empty span after its own line break.) */
    if (n && ends_in_line_break(c->h1.exec_begin, (size_t)(at - c->h1.exec_begin), c->h1.tail_lf_ws))
        return reject(p, 400, "http1.codec_error");
    c->h1.value_spans = true;
    c->h1.value_gen = c->h1.exec_gen;
    c->h1.value_end = at + n;
    c->h1.value_at_buf_end = at + n == c->h1.exec_end;
    c->h1.in_value = true;
    sharp_headers_append_last_value(&c->h1.stream->req, at, n);
    return 0;
}

/* common_http_protocol_options.headers_with_underscores_action, checked
 * once a header is complete as Envoy's HTTP/1 codec does. */
static int p_on_header_value_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    if (c->h1.head_done) return 0; /* a trailer */
    sharp_headers_t *h = &c->h1.stream->req;
    c->h1.in_value = true; /* an empty value gets no on_header_value call */
    c->h1.value_done = true;
    c->h1.value_spans = false;
    if (h->n == 0) return reject(p, 400, "http1.codec_error");
    sharp_str_t name = sharp_headers_name(h, h->n - 1);
    if (name.len == 0) return reject(p, 400, "http1.codec_error");
    /* llhttp's strict mode already refuses control characters in values;
     * checked again here because a value that reaches the filter chain
     * must hold no NUL, CR or LF whatever the parser lets through
     * (Envoy's headerValueIsValid, "http1.invalid_characters"). */
    sharp_str_t value = sharp_headers_value(h, h->n - 1);
    for (size_t i = 0; i < value.len; i++) {
        unsigned char ch = (unsigned char)value.p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return reject(p, 400, "http1.invalid_characters");
    }
    int action = HCM(c)->headers_with_underscores_action;
    if (action == 0) return 0;
    if (!memchr(name.p, '_', name.len)) return 0;
    if (action == 2) { /* DROP_HEADER */
        sharp_counter_inc(STATS(c), HCM(c)->st.http1_dropped_headers_with_underscores);
        h->n--;
        return 0;
    }
    sharp_counter_inc(STATS(c), HCM(c)->st.http1_requests_rejected_with_underscores);
    /* llhttp replaces the reason of a *_complete callback's error */
    c->h1.underscore_rejected = true;
    return HPE_USER;
}

static bool token_is(sharp_str_t v, const char *tok)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t')) v.p++, v.len--;
    while (v.len && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t')) v.len--;
    return v.len == strlen(tok) && strncasecmp(v.p, tok, v.len) == 0;
}

/* Validation of the whole request head, done before the stream reaches the
 * filter chain: once sharp_hcm_decode_headers runs, the router may already
 * have written the request upstream, so nothing about the head may be
 * refused later. llhttp's only check after on_headers_complete (a request
 * whose Transfer-Encoding does not end in chunked) is a subset of the
 * transfer coding check here. Returns 0 or the response code, with
 * Envoy's response code details in *details. */
static uint32_t h1_validate_head(sharp_conn_t *c, llhttp_t *p, const char **details)
{
    const sharp_headers_t *h = &c->h1.stream->req;
    *details = "http1.codec_error";
    /* llhttp refuses 1.2 and up but takes 0.9 and 2.0 */
    if (p->http_major != 1 || p->http_minor > 1) return 400;
    int host = sharp_headers_find(h, "host", 4, 0);
    if (host >= 0 && sharp_headers_find(h, "host", 4, (uint32_t)host + 1) >= 0) return 400;
    int te = sharp_headers_find(h, "transfer-encoding", 17, 0);
    if (te >= 0 || (p->flags & F_TRANSFER_ENCODING)) {
        if ((p->flags & F_CONTENT_LENGTH) || sharp_headers_find(h, "content-length", 14, 0) >= 0) {
            *details = "http1.content_length_and_chunked_not_allowed";
            return 400;
        }
        /* Envoy supports exactly one coding, chunked, and answers any
         * other (gzip, "gzip, chunked", a second Transfer-Encoding line)
         * with 501 (RFC 9112 section 6.1); a CONNECT has no body to code. */
        *details = "http1.invalid_transfer_encoding";
        if (te < 0 || sharp_headers_find(h, "transfer-encoding", 17, (uint32_t)te + 1) >= 0) return 501;
        if (!token_is(sharp_headers_value(h, (uint32_t)te), "chunked")) return 501;
        if (!(p->flags & F_CHUNKED) || llhttp_get_method(p) == HTTP_CONNECT) return 501;
        *details = "http1.codec_error";
    }
    /* Content-Length is a signed 64-bit count in Envoy (and upstream
     * peers); llhttp takes values up to 2^64 - 1. */
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > (uint64_t)INT64_MAX) return 400;
    return 0;
}

static int p_on_headers_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->h1.stream;
    const char *details;
    uint32_t code = h1_validate_head(c, p, &details);
    if (code) return reject(p, code, details);
    c->h1.head_done = true;
    c->h1.header_bytes = 0; /* trailers have a limit of their own, as in Envoy */
    if (h1_request_head(c, s, p) != 0 || c->closing || c->shutdown || !c->h1.stream) {
        c->h1.rejected = true;
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    return 0;
}

/* Removes an h2c upgrade (Envoy's HTTP/1 codec): Upgrade, HTTP2-Settings
 * and their tokens in Connection; Connection goes when nothing is left. */
static void strip_h2c(sharp_headers_t *h)
{
    sharp_headers_remove_cstr(h, "upgrade");
    sharp_headers_remove_cstr(h, "http2-settings");
    sharp_str_t conn;
    if (!sharp_headers_get_cstr(h, "connection", &conn)) return;
    sharp_sbuf_t out = {0};
    sharp_str_t rest = conn, tok;
    while (sharp_list_next(&rest, &tok)) {
        if ((tok.len == 7 && strncasecmp(tok.p, "upgrade", 7) == 0) ||
            (tok.len == 14 && strncasecmp(tok.p, "http2-settings", 14) == 0))
            continue;
        if (out.len) sharp_sbuf_append(&out, ",", 1);
        sharp_sbuf_append(&out, tok.p, tok.len);
    }
    if (out.len) sharp_headers_set(h, "connection", 10, out.data, out.len);
    else sharp_headers_remove_cstr(h, "connection");
    sharp_sbuf_free(&out);
}

/* A CONNECT request's target: host:port only (http_parser's URL parsing in
 * CONNECT mode, which Envoy's codec uses): a host (a name, an IPv4 address
 * or a bracketed IPv6 one) and a decimal port, no userinfo, path, query
 * or fragment. */
static bool connect_target_valid(const char *url, size_t n)
{
    /* a DNS name has at most 253 characters: anything longer is no target
     * (and would not fit the authority kept for it) */
    if (n > 253 + 6) return false;
    const char *colon = NULL;
    for (size_t i = n; i-- > 0;)
        if (url[i] == ':') {
            colon = url + i;
            break;
        }
    if (!colon || colon == url) return false;
    size_t hl = (size_t)(colon - url), pl = n - hl - 1;
    if (pl == 0 || pl > 5) return false;
    unsigned port = 0;
    for (size_t i = 0; i < pl; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9') return false;
        port = port * 10 + (unsigned)(colon[1 + i] - '0');
    }
    if (port > 65535) return false;
    bool v6 = url[0] == '[';
    if (v6 && (hl < 3 || url[hl - 1] != ']')) return false;
    for (size_t i = v6 ? 1 : 0; i < (v6 ? hl - 1 : hl); i++) {
        unsigned char ch = (unsigned char)url[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '-' || ch == '.' || ch == '_' || ch == '~' || (v6 && ch == ':');
        if (!ok) return false;
    }
    return true;
}

/* Turns the HTTP/1 request line and Host into Envoy's pseudo-headers and
 * hands the stream to the filter chain. Returns -1 when the request was
 * rejected (a local reply is on its way). */
static int h1_request_head(sharp_conn_t *c, sharp_stream_t *s, llhttp_t *p)
{
    const sharp_hcm_config_t *hcm = HCM(c);
    sharp_headers_t *h = &s->req;
    s->info.protocol = p->http_minor == 0 && p->http_major == 1 ? "HTTP/1.0" : "HTTP/1.1";
    const char *method = llhttp_method_name((llhttp_method_t)llhttp_get_method(p));
    s->is_head = strcmp(method, "HEAD") == 0;
    bool connect = llhttp_get_method(p) == HTTP_CONNECT;
    if (connect) {
        /* Envoy's HTTP/1 codec: a CONNECT is an upgrade (the connection
         * manager's upgrade_configs decide on type "CONNECT") and has no
         * body; a Content-Length of 0 is dropped */
        if ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) {
            conn_protocol_error_ex(c, 400, "Bad Request", "http1.body_disallowed");
            return -1;
        }
        sharp_headers_remove_cstr(h, "content-length");
        s->upgrade_request = s->is_connect = true;
    } else if (p->upgrade) {
        /* llhttp's upgrade: "Connection: upgrade" and an Upgrade header, as
         * Envoy's Utility::isUpgrade. An h2c upgrade is not supported: as
         * Envoy's codec, drop its headers and serve the request as HTTP/1.1. */
        sharp_str_t up;
        if (sharp_headers_get_cstr(h, "upgrade", &up) && up.len == 3 && strncasecmp(up.p, "h2c", 3) == 0) {
            strip_h2c(h);
            p->upgrade = 0;
        } else {
            s->upgrade_request = true;
        }
    }
    if (p->http_major == 1 && p->http_minor == 0 && !hcm->accept_http_10) {
        conn_protocol_error(c, 426, "Upgrade Required");
        return -1;
    }
    const char *url = sharp_sbuf_cstr(&c->h1.url);
    size_t ulen = c->h1.url.len;
    const char *path = url;
    size_t plen = ulen;
    sharp_str_t authority = {NULL, 0};
    const char *scheme = "http"; /* until the connection manager knows x-forwarded-proto */
    if (connect) {
        /* the target is the authority, host:port and nothing else (Envoy
         * parses it as http_parser's CONNECT URL); it replaces Host */
        if (!connect_target_valid(url, ulen)) {
            conn_protocol_error_ex(c, 400, "Bad Request", "http1.invalid_url");
            return -1;
        }
        authority = (sharp_str_t){url, ulen};
    } else if (ulen && url[0] != '/' && !(ulen == 1 && url[0] == '*')) {
        /* absolute-form: scheme://authority/path */
        const char *sep = strstr(url, "://");
        if (!sep) {
            conn_protocol_error(c, 400, "Bad Request");
            return -1;
        }
        /* Envoy takes :scheme from an absolute URL, and refuses a scheme
         * other than http and https, or https over a plaintext connection
         * (a request cannot claim an encryption it did not have) */
        size_t sl = (size_t)(sep - url);
        if (sl == 4 && strncasecmp(url, "http", 4) == 0) {
            scheme = "http";
        } else if (sl == 5 && strncasecmp(url, "https", 5) == 0) {
            if (!s->info.downstream_tls) {
                conn_protocol_error_ex(c, 400, "Bad Request", "http1.https_url_on_plaintext_connection");
                return -1;
            }
            scheme = "https";
        } else {
            conn_protocol_error_ex(c, 400, "Bad Request", "http1.invalid_scheme");
            return -1;
        }
        s->scheme_from_url = true;
        const char *a = sep + 3;
        const char *slash = strchr(a, '/');
        authority = (sharp_str_t){a, slash ? (size_t)(slash - a) : strlen(a)};
        path = slash ? slash : "/";
        plen = slash ? (size_t)(url + ulen - slash) : 1;
    }
    sharp_str_t host;
    bool has_host = sharp_headers_get_cstr(h, "host", &host);
    char hostbuf[512];
    size_t hlen = 0;
    if (authority.p) {
        hlen = SHARP_MIN(authority.len, sizeof hostbuf);
        memcpy(hostbuf, authority.p, hlen);
    } else if (has_host) {
        hlen = SHARP_MIN(host.len, sizeof hostbuf);
        memcpy(hostbuf, host.p, hlen);
    } else if (p->http_minor == 0 && hcm->default_host_for_http_10) {
        hlen = SHARP_MIN(strlen(hcm->default_host_for_http_10), sizeof hostbuf);
        memcpy(hostbuf, hcm->default_host_for_http_10, hlen);
    } else {
        conn_protocol_error(c, 400, "missing required header: :authority");
        return -1;
    }
    sharp_headers_remove_cstr(h, "host");
    /* pseudo-headers first, as in an HTTP/2 header block */
    uint32_t before = h->n;
    /* `path` points into c->h1.url, not into the header map, so it stays valid
     * while the map grows. A CONNECT has only :method and :authority, as
     * an HTTP/2 one. */
    sharp_headers_add(h, ":method", 7, method, strlen(method));
    if (!connect) sharp_headers_add(h, ":path", 5, path, plen);
    sharp_headers_add(h, ":authority", 10, hostbuf, hlen);
    if (!connect) sharp_headers_add(h, ":scheme", 7, scheme, strlen(scheme));
    uint32_t npseudo = h->n - before;
    sharp_header_entry_t pseudo[4];
    memcpy(pseudo, &h->e[before], npseudo * sizeof pseudo[0]);
    memmove(&h->e[npseudo], &h->e[0], before * sizeof pseudo[0]);
    memcpy(&h->e[0], pseudo, npseudo * sizeof pseudo[0]);

    sharp_str_t expect;
    if (sharp_headers_get_cstr(h, "expect", &expect) && expect.len == 12 &&
        strncasecmp(expect.p, "100-continue", 12) == 0) {
        sharp_headers_remove_cstr(h, "expect");
        if (p->http_minor >= 1) h1_send_continue(s);
    }
    /* an upgrade request goes on with its payload until the connection ends */
    bool end_stream = !s->upgrade_request && !(p->flags & F_CHUNKED) &&
                      !((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    /* A body-less request is complete with its headers (llhttp reports the
     * message end right after), so a reply given now keeps the connection. */
    if (end_stream) s->request_complete = true;
    if (SHARP_LOG_ON(http, SHARP_LOG_DEBUG)) {
        sharp_sbuf_t d = {0};
        sharp_headers_dump(h, &d);
        sharp_debug(http, "[C%llu][S%llu] request headers complete (end_stream=%s):%s", s->conn_id, s->id,
                    end_stream ? "true" : "false", d.data ? d.data : "");
        sharp_sbuf_free(&d);
    }
    sharp_hcm_decode_headers(s, end_stream, (const struct sockaddr *)&c->remote_ss);
    /* request_timeout waits for a whole request, which an upgrade never
     * completes (Envoy does not apply it to upgrades either) */
    if (s->upgrade_accepted) uv_timer_stop(&s->request_timer);
    return 0;
}

static int p_on_body(llhttp_t *p, const char *at, size_t n)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->h1.stream;
    if (!s || s->destroyed) return 0;
    s->info.bytes_received += n;
    sharp_conn_stream_touch(s);
    if (s->response_complete) return 0; /* answered already: discard */
    dec_run_data(s, 0, at, n, false);
    if (c->closing) {
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    return 0;
}

static int p_on_message_complete(llhttp_t *p)
{
    sharp_conn_t *c = p->data;
    sharp_stream_t *s = c->h1.stream;
    if (!s) return HPE_PAUSED;
    if (s->upgrade_request) {
        /* Envoy's codec swallows the end of an upgrade request: the
         * upgrade payload follows as stream data. A refused upgrade was
         * answered and its connection closes. */
        if (s->upgrade_accepted && !s->response_complete) c->h1.tunnel = true;
        return HPE_PAUSED;
    }
    s->request_complete = true;
    s->info.request_complete_ns = sharp_now_ns();
    uv_timer_stop(&s->request_timer);
    if (!llhttp_should_keep_alive(p)) s->closes_connection = s->saw_connection_close = true;
    if (!s->response_complete) {
        dec_run_data(s, 0, NULL, 0, true);
    }
    if (c->closing) {
        llhttp_set_error_reason(p, "stop");
        return HPE_USER;
    }
    sharp_conn_stream_maybe_finish(s);
    return HPE_PAUSED;
}

__attribute__((constructor)) static void init_settings(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = p_on_message_begin;
    settings.on_url = p_on_url;
    settings.on_url_complete = p_on_url_complete;
    settings.on_version_complete = p_on_version_complete;
    settings.on_header_field = p_on_header_field;
    settings.on_header_value = p_on_header_value;
    settings.on_header_value_complete = p_on_header_value_complete;
    settings.on_headers_complete = p_on_headers_complete;
    settings.on_body = p_on_body;
    settings.on_message_complete = p_on_message_complete;
}

/* ------------------------------------------------------------------ */
/* codec: response encoding                                             */

static const struct {
    uint32_t code;
    const char *reason;
} reasons[] = {
    {100, "Continue"}, {101, "Switching Protocols"}, {200, "OK"}, {201, "Created"},
    {202, "Accepted"}, {203, "Non-Authoritative Information"}, {204, "No Content"},
    {205, "Reset Content"}, {206, "Partial Content"}, {300, "Multiple Choices"},
    {301, "Moved Permanently"}, {302, "Found"}, {303, "See Other"}, {304, "Not Modified"},
    {307, "Temporary Redirect"}, {308, "Permanent Redirect"}, {400, "Bad Request"},
    {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
    {406, "Not Acceptable"}, {408, "Request Timeout"}, {409, "Conflict"}, {410, "Gone"},
    {411, "Length Required"}, {412, "Precondition Failed"}, {413, "Payload Too Large"},
    {414, "URI Too Long"}, {415, "Unsupported Media Type"}, {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"}, {421, "Misdirected Request"}, {422, "Unprocessable Entity"},
    {426, "Upgrade Required"}, {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"}, {500, "Internal Server Error"},
    {501, "Not Implemented"}, {502, "Bad Gateway"}, {503, "Service Unavailable"},
    {504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"},
};

const char *sharp_h1_reason(uint32_t code)
{
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(reasons); i++)
        if (reasons[i].code == code) return reasons[i].reason;
    return "Unknown";
}

static void h1_send_continue(sharp_stream_t *s)
{
    uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
    sharp_conn_write(s->conn, &b, 1);
}

/* A header the codec adds itself, its name formatted as the map's. */
static void put_codec_header(sharp_sbuf_t *out, const sharp_headers_t *h, bool fmt, bool proper, const char *name,
                             const char *value)
{
    size_t n = strlen(name);
    sharp_sbuf_append(out, name, n);
    if (fmt) sharp_header_name_format(h, proper, out->data + out->len - n, n);
    sharp_sbuf_append(out, ": ", 2);
    sharp_sbuf_puts(out, value);
    sharp_sbuf_append(out, "\r\n", 2);
}

/* The end of a response after which the connection closes (h1_stream_done)
 * is its last write: over TLS close_notify shares it. Not a tunnel's. A
 * reply given while llhttp is still in the request (a body-less one is
 * answered from its headers, before p_on_message_complete reads its
 * keep-alive) closes when llhttp says it will not be kept alive. */
static void last_write(sharp_conn_t *c, sharp_stream_t *s)
{
    if (!c->tls || c->h1.tunnel || s->upgrade_accepted) return;
    bool closes = s->closes_connection ||
                  (c->h1.parsing && c->h1.stream == s && !llhttp_should_keep_alive(&c->h1.parser));
    if (closes) sharp_conn_tls_last_write(c);
}

/* Writes the status line and headers and decides the body framing:
 * no body (HEAD, 1xx, 204, 304), content-length as given, chunked for an
 * HTTP/1.1 peer, or delimited by closing the connection for HTTP/1.0. */
static void h1_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    if (c->closing || s->response_started) return;
    uint32_t code = sharp_headers_status(h);
    if (!code) code = 200;
    s->info.response_code = code;
    s->response_started = true;
    /* Envoy's onLocalReply: a 400 means a messaging error, after which an
     * HTTP/1 connection is not trusted with another request. */
    if (s->local_reply && s->local_reply_code == 400) s->closes_connection = s->saw_connection_close = true;
    bool http10 = s->info.protocol && strcmp(s->info.protocol, "HTTP/1.0") == 0;
    bool no_body = s->is_head || code == 204 || code == 304 || (code >= 100 && code < 200);
    /* An accepted upgrade answered 101, or an accepted CONNECT any 2xx: its
     * Connection and Upgrade headers go to the client and the bytes that
     * follow are the tunnel's, unframed (a 2xx to a CONNECT has no body
     * framing, RFC 9110 section 9.3.6). */
    bool connect_ok = s->is_connect && code >= 200 && code < 300;
    bool upgrade = s->upgrade_accepted && (code == 101 || connect_ok) && !end_stream;
    if (upgrade) {
        s->upgraded = true;
        uv_timer_stop(&s->request_timer);
    }
    if (upgrade && connect_ok) {
        sharp_headers_remove_cstr(h, "content-length");
        sharp_headers_remove_cstr(h, "transfer-encoding");
    }
    bool has_cl = sharp_headers_get_cstr(h, "content-length", NULL);
    s->resp_chunked = false;
    s->resp_close_delimited = false;
    if (!no_body && !has_cl && !upgrade) {
        if (end_stream) sharp_headers_add(h, "content-length", 14, "0", 1);
        else if (!http10) s->resp_chunked = true;
        else s->resp_close_delimited = true;
    }
    /* disable_http_keepalive (Envoy's encodeHeaders): this response closes its connection */
    if (!c->close_after_response && !upgrade && !HCM(c)->bypass_overload_manager &&
        sharp_overload_take(SHARP_OL_DISABLE_HTTP_KEEPALIVE, sharp_worker_random(c->worker))) {
        c->close_after_response = true;
        sharp_counter_inc(STATS(c), HCM(c)->st.cx_overload_disable_keepalive);
    }
    if (c->close_after_response || s->resp_close_delimited) s->closes_connection = true;
    sharp_sbuf_t *out = &c->h1.head;
    sharp_sbuf_reset(out);
    char status[8] = {(char)('0' + code / 100 % 10), (char)('0' + code / 10 % 10), (char)('0' + code % 10), ' '};
    sharp_sbuf_append(out, "HTTP/1.1 ", 9);
    sharp_sbuf_append(out, status, 4);
    /* header_key_format: names formatted as written (the response's
     * remembered spellings, else proper_case_words); the default path
     * writes them as stored */
    bool proper = HCM(c)->h1_keys.mode == SHARP_H1_KEYS_PROPER, fmt = proper || h->cases;
    sharp_str_t reason;
    if (h->cases && sharp_headers_case_reason_get(h, &reason)) sharp_sbuf_append(out, reason.p, reason.len);
    else sharp_sbuf_puts(out, sharp_h1_reason(code));
    sharp_sbuf_append(out, "\r\n", 2);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        if ((n.len && n.p[0] == ':') ||
            (sharp_header_is_connection_specific(n) &&
             !(upgrade && (sharp_str_eq(n, "connection", 10) || sharp_str_eq(n, "upgrade", 7)))))
            continue;
        sharp_sbuf_append(out, n.p, n.len);
        if (fmt) sharp_header_name_format(h, proper, out->data + out->len - n.len, n.len);
        sharp_sbuf_append(out, ": ", 2);
        sharp_sbuf_append(out, v.p, v.len);
        sharp_sbuf_append(out, "\r\n", 2);
    }
    if (s->resp_chunked) put_codec_header(out, h, fmt, proper, "transfer-encoding", "chunked");
    if (upgrade) {
        /* the tunnel ends the connection; the 101 says nothing about it */
        s->closes_connection = true;
    } else if (s->closes_connection || !s->request_complete) {
        /* an early response ends the connection: say so */
        if (!s->request_complete) s->closes_connection = true;
        put_codec_header(out, h, fmt, proper, "connection", "close");
    } else if (http10) {
        put_codec_header(out, h, fmt, proper, "connection", "keep-alive");
    }
    sharp_sbuf_append(out, "\r\n", 2);
    if (end_stream) {
        uv_buf_t b = uv_buf_init(c->h1.head.data, (unsigned)c->h1.head.len);
        last_write(c, s);
        sharp_conn_write(c, &b, 1);
        sharp_sbuf_reset(&c->h1.head);
        s->response_complete = true;
        sharp_conn_stream_maybe_finish(s);
    } else {
        /* Held back to share one write with the first body bytes; the
         * worker's check handle writes it if none come this loop turn. */
        sharp_conn_defer_flush(c);
    }
}

static void h1_flush(sharp_conn_t *c)
{
    if (!c->h1.head.len) return;
    uv_buf_t b = uv_buf_init(c->h1.head.data, (unsigned)c->h1.head.len);
    sharp_conn_write(c, &b, 1);
    sharp_sbuf_reset(&c->h1.head);
}

static void h1_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream)
{
    sharp_conn_t *c = s->conn;
    if (c->closing || !s->response_started || s->response_complete) return;
    sharp_conn_stream_touch(s); /* Envoy resets the stream idle timer on response data too */
    uint32_t code = s->info.response_code;
    bool no_body = s->is_head || code == 204 || code == 304;
    if (no_body) n = 0;
    uv_buf_t b[4];
    unsigned nb = 0;
    char head[24];
    bool with_head = c->h1.head.len > 0;
    if (with_head) {
        b[nb++] = uv_buf_init(c->h1.head.data, (unsigned)c->h1.head.len);
        sharp_conn_cancel_flush(c);
    }
    if (n) {
        s->info.bytes_sent += n;
        if (s->resp_chunked) {
            int hl = snprintf(head, sizeof head, "%zx\r\n", n);
            b[nb++] = uv_buf_init(head, (unsigned)hl);
        }
        b[nb++] = uv_buf_init((char *)p, (unsigned)n);
        if (s->resp_chunked) b[nb++] = end_stream ? uv_buf_init("\r\n0\r\n\r\n", 7) : uv_buf_init("\r\n", 2);
    } else if (end_stream && s->resp_chunked) {
        b[nb++] = uv_buf_init("0\r\n\r\n", 5);
    }
    if (nb && end_stream) last_write(c, s);
    if (nb) sharp_conn_write(c, b, nb);
    if (with_head) sharp_sbuf_reset(&c->h1.head);
    if (end_stream) {
        s->response_complete = true;
        sharp_conn_stream_maybe_finish(s);
    }
}

/* ------------------------------------------------------------------ */
/* the codec's entry points                                             */

static void h1_dispatch(sharp_conn_t *c, const char *p, size_t n)
{
    if (c->h1.errored) return;
    if (c->h1.tunnel) {
        tunnel_data(c, p, n);
        sharp_conn_update_reading(c);
    } else if (c->h1.paused) {
        sharp_sbuf_append(&c->h1.pipeline, p, n);
        sharp_conn_update_reading(c);
    } else {
        conn_execute(c, p, n);
    }
}

static bool h1_peer_closed(sharp_conn_t *c, ssize_t err)
{
    sharp_stream_t *ts = c->h1.stream;
    if (c->h1.tunnel && err == UV_EOF && ts && !ts->destroyed && !ts->response_complete) {
        /* Half-close of a tunnel: the end of the request goes upstream
         * (as a FIN) and the response keeps flowing until it ends. */
        c->peer_eof = true;
        sharp_conn_update_reading(c);
        ts->request_complete = true;
        dec_run_data(ts, 0, NULL, 0, true);
        return true;
    }
    if (ts && !ts->request_complete && err == UV_EOF) {
        /* Let llhttp end a request whose body runs to EOF (HTTP/1.0). */
        c->h1.parsing = true;
        llhttp_finish(&c->h1.parser);
        c->h1.parsing = false;
    }
    return false;
}

static void h1_encode_trailers(sharp_stream_t *s, sharp_headers_t *t)
{
    /* HTTP/1 responses are sent without trailers (chunked trailers are
     * optional for the peer, as in Envoy's codec without enable_trailers):
     * the body simply ends. */
    (void)t;
    h1_encode_data(s, NULL, 0, true);
}

static void h1_read_disable(sharp_stream_t *s, bool disable)
{
    sharp_conn_t *c = s->conn;
    c->read_disabled_by_stream = disable;
    sharp_conn_update_reading(c);
}

/* The stream's response is complete (or it was reset): HTTP/1 either
 * closes the connection or goes on with the next pipelined request. */
static void h1_stream_done(sharp_conn_t *c, sharp_stream_t *s, bool reset)
{
    if (reset) {
        /* the only way to tell an HTTP/1 client is to close the connection */
        sharp_conn_close(c);
        return;
    }
    /* If the request was not complete (an early response), the connection
     * cannot carry another request. Close only when the response said so: a
     * drain that began after the response head went out must not close
     * under a client that was told keep-alive and may be sending its next
     * request; that connection gets "connection: close" on its next
     * response, or the drain idle timer. */
    bool close = s->closes_connection || !s->request_complete;
    /* Envoy delays the close (FlushWriteAndDelay) unless the client asked
     * for it and sent its whole request, or the response is framed by the
     * close: then nothing is left unread to turn the close into a RST. */
    bool delay = s->force_delayed_close ||
                 !(s->saw_connection_close && (s->request_complete || s->resp_close_delimited));
    /* a tunnel whose client half-closed has nothing left to read */
    if (c->peer_eof) delay = false;
    c->read_disabled_by_stream = false;
    sharp_conn_stream_destroy(s);
    if (c->closing) return;
    if (close) {
        sharp_conn_close_after_write(c, delay);
        return;
    }
    sharp_conn_arm_idle(c);
    if (c->h1.paused) conn_resume_pipeline(c);
    else sharp_conn_update_reading(c);
}

static bool h1_busy(const sharp_conn_t *c)
{
    return c->h1.stream || c->h1.parsing;
}

/* Pipelined bytes wait beyond a small bound with reading stopped. */
static bool h1_read_blocked(const sharp_conn_t *c)
{
    return c->h1.paused && !c->h1.tunnel && c->h1.pipeline.len > 65536;
}

static uint64_t h1_buffered(const sharp_conn_t *c, const sharp_stream_t *s)
{
    (void)s; /* the connection's one stream */
    return c->h1.pipeline.cap + c->h1.head.cap + c->h1.url.cap;
}

static void h1_release(sharp_conn_t *c)
{
    sharp_sbuf_free(&c->h1.url);
    sharp_sbuf_free(&c->h1.pipeline);
    sharp_sbuf_free(&c->h1.head);
}

void sharp_http1_server_init(sharp_conn_t *c)
{
    c->codec = &sharp_http1_server_codec;
    llhttp_init(&c->h1.parser, HTTP_REQUEST, &settings);
    c->h1.parser.data = c;
    c->h1.preserve_case = HCM(c)->h1_keys.mode == SHARP_H1_KEYS_PRESERVE;
}

const sharp_server_codec_t sharp_http1_server_codec = {
    .name = "HTTP/1.1",
    .dispatch = h1_dispatch,
    .peer_closed = h1_peer_closed,
    .encode_headers = h1_encode_headers,
    .encode_data = h1_encode_data,
    .encode_trailers = h1_encode_trailers,
    .send_continue = h1_send_continue,
    .read_disable = h1_read_disable,
    .stream_done = h1_stream_done,
    .busy = h1_busy,
    .read_blocked = h1_read_blocked,
    .flush = h1_flush,
    .buffered = h1_buffered,
    .release = h1_release,
};
