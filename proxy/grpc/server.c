/* server.c: the gRPC service registry and its HTTP/2 connections (see
 * server.h), with Debian's libnghttp2.
 *
 * Wire rules (gRPC over HTTP/2): a call is a POST with content-type
 * application/grpc (or application/grpc+proto, application/grpc;...) to
 * "/<service>/<method>". Its request is one length-prefixed message; the
 * response is HEADERS (:status 200, content-type application/grpc), DATA
 * holding length-prefixed messages, then trailers with grpc-status and
 * grpc-message. An error decided before any message is sent is a
 * trailers-only response: one HEADERS frame with :status, content-type and
 * grpc-status, ending the stream. Once the response has ended while the
 * client is still sending, the stream is reset with NO_ERROR, as gRPC's
 * servers do, so the client stops.
 *
 * Memory is bounded per connection: at most SHARP_GRPC_MAX_STREAMS calls
 * (SETTINGS_MAX_CONCURRENT_STREAMS, nghttp2 refuses more), request headers
 * up to GRPC_MAX_HEADER_BYTES a stream, a request message up to the maximum
 * receive size, and request bytes buffered by all streams together up to
 * GRPC_CONN_BUFFER_MAX (a stream pushing past it ends with
 * RESOURCE_EXHAUSTED). Response messages wait per call up to
 * SHARP_GRPC_CALL_OUT_MAX, and serializing stops while the socket's queue
 * is above SHARP_GRPC_CONN_WRITE_HIGH.
 *
 * Lifetimes: a call lives from its HEADERS to nghttp2's stream close (or the
 * connection's end) plus the close of its deadline timer, which frees it. A
 * detached connection (sharp_grpc_conn_free) is freed with its last call. */
#include "grpc/server.h"
#include "grpc/framing.h"
#include "http/grpc.h"
#include "http/headers.h"
#include "log.h"
#include "worker.h" /* sharp_dlist_t */

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <strings.h>

#define SHARP_GRPC_MAX_STREAMS 100
#define GRPC_WINDOW (64 * 1024)                   /* SETTINGS_INITIAL_WINDOW_SIZE */
#define GRPC_MAX_HEADER_BYTES (16 * 1024)         /* names + values of a request's headers */
#define GRPC_CONN_BUFFER_MAX (8u * 1024 * 1024)   /* request bytes buffered on a connection */

typedef struct reg_service {
    const ProtobufCServiceDescriptor *desc;
    const sharp_grpc_method_impl_t *impls;
    void *data;
    void (*free_data)(void *);
} reg_service_t;

struct sharp_grpc_registry {
    reg_service_t *services;
    size_t n;
};

struct sharp_grpc_conn {
    sharp_grpc_registry_t *reg;
    uv_loop_t *loop;
    nghttp2_session *session;
    const sharp_grpc_conn_io_t *io; /* NULL once detached */
    void *ctx;
    sharp_dlist_t calls;  /* calls whose stream is open */
    unsigned allocated;   /* calls not yet freed */
    size_t buffered;      /* request bytes held by all calls */
    unsigned depth;       /* public entry points on the stack */
    bool in_recv;         /* inside nghttp2_session_mem_recv */
    bool flushing;
    bool done;            /* `done` was reported */
    bool free_pending;    /* sharp_grpc_conn_free was called with depth > 0 */
    /* plain responses' `after`s of streams that ended while serializing:
     * run once those bytes are handed to the owner */
    struct {
        void (*fn)(void *);
        void *arg;
    } afters[4];
    unsigned nafters;
};

struct sharp_grpc_call {
    sharp_dlist_t link; /* in conn->calls while the stream is open */
    sharp_grpc_conn_t *conn;
    int32_t id;
    const reg_service_t *svc;
    const ProtobufCMethodDescriptor *method;
    const sharp_grpc_method_impl_t *impl;
    sharp_headers_t req;  /* request headers */
    size_t header_bytes;
    sharp_sbuf_t in;      /* request body bytes */
    sharp_sbuf_t out;     /* response messages nghttp2 has not taken yet */
    size_t out_off;
    sharp_headers_t meta; /* initial metadata to send */
    uv_timer_t deadline;
    uint32_t status;
    char *status_msg;
    sharp_grpc_cancel_fn cancel_fn;
    void *cancel_arg;
    /* client-streaming and bidirectional calls */
    sharp_grpc_message_fn on_message;
    sharp_grpc_half_close_fn on_half_close;
    void *message_arg;
    bool headers_sent;  /* response HEADERS submitted with a data provider */
    bool finished;      /* the status is decided: the handler is done with the handle */
    bool dispatched;    /* the handler has been called */
    bool sent_message;
    bool deferred;      /* the data provider returned NGHTTP2_ERR_DEFERRED */
    bool request_done;  /* the client ended its side */
    bool stream_closed;
    bool plain;         /* not a gRPC call: io->plain answers it */
    bool foreign_encoding; /* grpc-encoding other than identity */
    void (*after)(void *arg); /* a plain response's, run when the stream is over */
    void *after_arg;
};

static void conn_maybe_free(sharp_grpc_conn_t *c);
static void call_check_input(sharp_grpc_call_t *call);
static void conn_enter(sharp_grpc_conn_t *c);
static void conn_leave(sharp_grpc_conn_t *c);

/* ---- registry ---- */

sharp_grpc_registry_t *sharp_grpc_registry_new(void)
{
    return sharp_calloc(1, sizeof(sharp_grpc_registry_t));
}

void sharp_grpc_registry_free(sharp_grpc_registry_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++)
        if (r->services[i].free_data) r->services[i].free_data(r->services[i].data);
    free(r->services);
    free(r);
}

int sharp_grpc_registry_add(sharp_grpc_registry_t *r, const ProtobufCServiceDescriptor *desc,
                            const sharp_grpc_method_impl_t *impls, void *data, void (*free_data)(void *))
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->services[i].desc->name, desc->name) == 0) return -1;
    r->services = sharp_realloc(r->services, (r->n + 1) * sizeof *r->services);
    r->services[r->n++] = (reg_service_t){desc, impls, data, free_data};
    return 0;
}

/* "/svc/method" -> service and method index; -1 when unknown. */
static const reg_service_t *registry_lookup(const sharp_grpc_registry_t *r, const char *path, size_t len,
                                            int *method)
{
    *method = -1;
    if (len < 2 || path[0] != '/') return NULL;
    const char *slash = memchr(path + 1, '/', len - 1);
    if (!slash) return NULL;
    size_t slen = (size_t)(slash - path - 1);
    const char *m = slash + 1;
    size_t mlen = len - slen - 2;
    for (size_t i = 0; i < r->n; i++) {
        const ProtobufCServiceDescriptor *d = r->services[i].desc;
        if (strlen(d->name) != slen || memcmp(d->name, path + 1, slen) != 0) continue;
        for (unsigned k = 0; k < d->n_methods; k++)
            if (strlen(d->methods[k].name) == mlen && memcmp(d->methods[k].name, m, mlen) == 0) *method = (int)k;
        return &r->services[i];
    }
    return NULL;
}

const ProtobufCMethodDescriptor *sharp_grpc_registry_find(const sharp_grpc_registry_t *r, const char *path,
                                                          size_t len, bool *service_known)
{
    int m;
    const reg_service_t *s = registry_lookup(r, path, len, &m);
    *service_known = s != NULL;
    return s && m >= 0 ? &s->desc->methods[m] : NULL;
}

/* ---- calls ---- */

static void on_call_timer_close(uv_handle_t *h)
{
    sharp_grpc_call_t *call = h->data;
    sharp_grpc_conn_t *c = call->conn;
    sharp_headers_free(&call->req);
    sharp_headers_free(&call->meta);
    sharp_sbuf_free(&call->in);
    sharp_sbuf_free(&call->out);
    free(call->status_msg);
    free(call);
    c->allocated--;
    conn_maybe_free(c);
}

static void call_release_input(sharp_grpc_call_t *call)
{
    call->conn->buffered -= call->in.len;
    sharp_sbuf_free(&call->in);
}

/* The handler is done with the handle: tell it if it has not finished the
 * call itself. */
static void call_cancel_handler(sharp_grpc_call_t *call)
{
    if (call->finished) return;
    call->finished = true;
    if (call->dispatched && call->cancel_fn) call->cancel_fn(call, call->cancel_arg);
    call->cancel_fn = NULL;
}

/* The stream is gone (closed by nghttp2 or with the connection). */
static void call_stream_gone(sharp_grpc_call_t *call)
{
    if (call->stream_closed) return;
    call->stream_closed = true;
    sharp_dlist_remove(&call->link);
    call_cancel_handler(call);
    call_release_input(call);
    uv_timer_stop(&call->deadline);
    uv_close((uv_handle_t *)&call->deadline, on_call_timer_close);
    if (call->after) {
        sharp_grpc_conn_t *c = call->conn;
        void (*fn)(void *) = call->after;
        call->after = NULL;
        if (c->flushing && c->nafters < SHARP_ARRAY_SIZE(c->afters)) {
            c->afters[c->nafters].fn = fn;
            c->afters[c->nafters++].arg = call->after_arg;
        } else {
            fn(call->after_arg); /* may free the connection: it waits for this call */
        }
    }
}

static void conn_schedule(sharp_grpc_conn_t *c)
{
    if (!c->in_recv) sharp_grpc_conn_flush(c);
}

static void nv_add(nghttp2_nv *nv, size_t *n, const char *name, size_t nlen, const char *value, size_t vlen)
{
    nv[*n] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, nlen, vlen, NGHTTP2_NV_FLAG_NONE};
    (*n)++;
}

#define NV_LIT(nv, n, name, value) nv_add(nv, n, name, sizeof(name) - 1, value, sizeof(value) - 1)

/* Response headers (and, for trailers-only, the status) in `nv`, which holds
 * 4 + the metadata's count entries. */
static size_t response_head(sharp_grpc_call_t *call, nghttp2_nv *nv)
{
    size_t n = 0;
    NV_LIT(nv, &n, ":status", "200");
    NV_LIT(nv, &n, "content-type", "application/grpc");
    for (uint32_t i = 0; i < call->meta.n; i++) {
        sharp_str_t k = sharp_headers_name(&call->meta, i), v = sharp_headers_value(&call->meta, i);
        nv_add(nv, &n, k.p, k.len, v.p, v.len);
    }
    return n;
}

/* grpc-status and grpc-message; `code` and `msg` hold their storage. */
static size_t status_nv(sharp_grpc_call_t *call, nghttp2_nv *nv, char code[12], sharp_sbuf_t *msg)
{
    size_t n = 0;
    int cl = snprintf(code, 12, "%u", call->status);
    nv_add(nv, &n, "grpc-status", 11, code, (size_t)cl);
    if (call->status_msg && call->status_msg[0]) {
        sharp_grpc_percent_encode(msg, call->status_msg, strlen(call->status_msg));
        nv_add(nv, &n, "grpc-message", 12, msg->data, msg->len);
    }
    return n;
}

static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)user;
    sharp_grpc_call_t *call = source->ptr;
    size_t avail = call->out.len - call->out_off;
    size_t n = SHARP_MIN(avail, length);
    if (n) {
        memcpy(buf, call->out.data + call->out_off, n);
        call->out_off += n;
        if (call->out_off == call->out.len) {
            sharp_sbuf_reset(&call->out);
            call->out_off = 0;
        }
    }
    if (n == avail && call->finished && !call->stream_closed) {
        /* every message is out: the trailers end the stream */
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv nv[2];
        char code[12];
        sharp_sbuf_t msg = {0};
        size_t nn = status_nv(call, nv, code, &msg);
        int r = nghttp2_submit_trailer(session, stream_id, nv, nn);
        sharp_sbuf_free(&msg);
        if (r != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static void call_submit_headers(sharp_grpc_call_t *call)
{
    if (call->headers_sent) return;
    call->headers_sent = true;
    size_t cap = 2 + call->meta.n;
    nghttp2_nv *nv = sharp_calloc(cap, sizeof *nv);
    size_t n = response_head(call, nv);
    nghttp2_data_provider dp = {.source.ptr = call, .read_callback = data_read};
    if (nghttp2_submit_response(call->conn->session, call->id, nv, n, &dp) != 0)
        nghttp2_submit_rst_stream(call->conn->session, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_INTERNAL_ERROR);
    free(nv);
}

/* Decides the call's status. Before any message: a trailers-only response;
 * else the trailers follow the queued messages. */
static void call_end(sharp_grpc_call_t *call, uint32_t status, const char *message)
{
    sharp_grpc_conn_t *c = call->conn;
    call->finished = true;
    call->cancel_fn = NULL;
    call->status = status;
    free(call->status_msg);
    call->status_msg = message ? sharp_strdup(message) : NULL;
    uv_timer_stop(&call->deadline);
    call_release_input(call);
    if (call->stream_closed || !c->session) return;
    if (!call->headers_sent) {
        call->headers_sent = true;
        size_t cap = 4 + call->meta.n;
        nghttp2_nv *nv = sharp_calloc(cap, sizeof *nv);
        size_t n = response_head(call, nv);
        char code[12];
        sharp_sbuf_t msg = {0};
        n += status_nv(call, nv + n, code, &msg);
        if (nghttp2_submit_response(c->session, call->id, nv, n, NULL) != 0)
            nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_INTERNAL_ERROR);
        sharp_sbuf_free(&msg);
        free(nv);
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->session, call->id);
    }
    sharp_debug(admin, "grpc: stream %d: status %u %s", call->id, status, message ? message : "");
    conn_schedule(c);
}

void sharp_grpc_call_add_metadata(sharp_grpc_call_t *call, const char *name, const char *value)
{
    if (call->finished || call->headers_sent) return;
    sharp_headers_add_cstr(&call->meta, name, value);
}

bool sharp_grpc_call_metadata(const sharp_grpc_call_t *call, const char *name, const char **value, size_t *len)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(&call->req, name, &v)) return false;
    *value = v.p;
    *len = v.len;
    return true;
}

int sharp_grpc_call_send(sharp_grpc_call_t *call, const ProtobufCMessage *msg)
{
    if (call->finished || call->stream_closed) return -1;
    if (!call->impl->server_streaming && call->sent_message) return -1;
    if (call->out.len - call->out_off > SHARP_GRPC_CALL_OUT_MAX) return -1;
    call->sent_message = true;
    sharp_grpc_frame_message(&call->out, msg);
    call_submit_headers(call);
    if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(call->conn->session, call->id);
    }
    conn_schedule(call->conn);
    return 0;
}

void sharp_grpc_call_finish(sharp_grpc_call_t *call, uint32_t status, const char *message)
{
    if (call->finished) return;
    if (status == SHARP_GRPC_OK && !call->impl->server_streaming && !call->sent_message) {
        status = SHARP_GRPC_INTERNAL;
        message = "no response message for a unary call";
    }
    call_end(call, status, message);
}

void sharp_grpc_call_on_cancel(sharp_grpc_call_t *call, sharp_grpc_cancel_fn fn, void *arg)
{
    call->cancel_fn = fn;
    call->cancel_arg = arg;
}

void sharp_grpc_call_on_message(sharp_grpc_call_t *call, sharp_grpc_message_fn on_message,
                                sharp_grpc_half_close_fn on_half_close, void *arg)
{
    call->on_message = on_message;
    call->on_half_close = on_half_close;
    call->message_arg = arg;
}

/* grpc-timeout passed: the handler stops, the client hears
 * DEADLINE_EXCEEDED (its own deadline usually ends the call first). */
static void on_deadline(uv_timer_t *t)
{
    sharp_grpc_call_t *call = t->data;
    if (call->finished) return;
    call_cancel_handler(call);
    call_end(call, SHARP_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded");
}

/* The request is complete. Unary and server-streaming: exactly one
 * message, unpacked for the handler. Client-streaming: every message went
 * to the handler as it came; what is left is the half-close. */
static void call_dispatch(sharp_grpc_call_t *call)
{
    if (call->impl->client_streaming) {
        if (call->in.len) {
            call_end(call, SHARP_GRPC_INTERNAL, "incomplete request message");
            return;
        }
        if (call->on_half_close) call->on_half_close(call, call->message_arg);
        return;
    }
    sharp_grpc_frame_t f;
    sharp_grpc_frame_result_t r =
        sharp_grpc_deframe((const uint8_t *)call->in.data, call->in.len, SHARP_GRPC_MAX_RECV_DEFAULT, &f);
    if (r != SHARP_GRPC_FRAME_OK) {
        call_end(call, SHARP_GRPC_INTERNAL,
                 call->in.len ? "incomplete request message" : "missing request message");
        return;
    }
    if (f.used != call->in.len) {
        call_end(call, SHARP_GRPC_INTERNAL, "more than one request message for a unary or server-streaming call");
        return;
    }
    ProtobufCMessage *req = protobuf_c_message_unpack(call->method->input, NULL, f.len, f.msg);
    if (!req) {
        call_end(call, SHARP_GRPC_INTERNAL, "malformed request message");
        return;
    }
    call_release_input(call);
    call->dispatched = true;
    call->impl->handler(call, req, call->svc->data);
    protobuf_c_message_free_unpacked(req, NULL);
}

/* Client-streaming: hands every complete message of the input to the
 * handler and drops its bytes; a partial one stays buffered. The first
 * message's prefix has been checked by call_check_input; the loop checks
 * the following ones. */
static void call_deliver_messages(sharp_grpc_call_t *call)
{
    size_t off = 0;
    while (!call->finished) {
        sharp_grpc_frame_t f;
        sharp_grpc_frame_result_t r = sharp_grpc_deframe((const uint8_t *)call->in.data + off, call->in.len - off,
                                                         SHARP_GRPC_MAX_RECV_DEFAULT, &f);
        if (r == SHARP_GRPC_FRAME_BAD_FLAG || r == SHARP_GRPC_FRAME_TOO_LARGE || (r == SHARP_GRPC_FRAME_OK && f.compressed)) {
            /* drop what was delivered: call_check_input reads the rest from
             * its start and ends the call with the right status */
            break;
        }
        if (r != SHARP_GRPC_FRAME_OK) break; /* incomplete */
        if (!call->on_message) {
            call_end(call, SHARP_GRPC_UNIMPLEMENTED, "the method takes no request messages");
            return;
        }
        ProtobufCMessage *msg = protobuf_c_message_unpack(call->method->input, NULL, f.len, f.msg);
        off += f.used;
        if (!msg) {
            call_end(call, SHARP_GRPC_INTERNAL, "malformed request message");
            return;
        }
        call->on_message(call, msg, call->message_arg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    if (call->finished || !off) return; /* finishing released the input */
    size_t rest = call->in.len - off;
    memmove(call->in.data, call->in.data + off, rest);
    call->in.len = rest;
    call->conn->buffered -= off;
    if (rest) call_check_input(call); /* the next message's prefix */
}

/* Checks what has arrived so far, so a bad or oversized message is refused
 * before it is buffered whole. */
static void call_check_input(sharp_grpc_call_t *call)
{
    sharp_grpc_frame_t f;
    switch (sharp_grpc_deframe((const uint8_t *)call->in.data, call->in.len, SHARP_GRPC_MAX_RECV_DEFAULT, &f)) {
    case SHARP_GRPC_FRAME_BAD_FLAG:
        call_end(call, SHARP_GRPC_INTERNAL, "invalid compressed flag in a message prefix");
        return;
    case SHARP_GRPC_FRAME_TOO_LARGE: {
        char m[96];
        snprintf(m, sizeof m, "received message larger than max (%u vs. %u)", f.len,
                 SHARP_GRPC_MAX_RECV_DEFAULT);
        call_end(call, SHARP_GRPC_RESOURCE_EXHAUSTED, m);
        return;
    }
    default: break;
    }
    if (call->in.len >= SHARP_GRPC_PREFIX_LEN && f.compressed) {
        /* only identity is supported: a message compressed with another
         * encoding is UNIMPLEMENTED (with the encodings this server
         * accepts), one flagged compressed without an encoding INTERNAL,
         * as gRPC's protocol says */
        if (call->foreign_encoding) {
            sharp_headers_add_cstr(&call->meta, "grpc-accept-encoding", "identity");
            call_end(call, SHARP_GRPC_UNIMPLEMENTED, "compressed messages are not supported (grpc-encoding identity only)");
        } else {
            call_end(call, SHARP_GRPC_INTERNAL, "compressed message without a grpc-encoding");
        }
        return;
    }
    if (call->impl->client_streaming) {
        call_deliver_messages(call);
        return;
    }
    if (f.used && call->in.len > f.used)
        call_end(call, SHARP_GRPC_INTERNAL, "more than one request message for a unary or server-streaming call");
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    sharp_grpc_conn_t *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    sharp_grpc_call_t *call = sharp_calloc(1, sizeof *call);
    call->conn = c;
    call->id = frame->hd.stream_id;
    sharp_headers_init(&call->req);
    sharp_headers_init(&call->meta);
    uv_timer_init(c->loop, &call->deadline);
    call->deadline.data = call;
    sharp_dlist_push(&c->calls, &call->link);
    c->allocated++;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    (void)flags;
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    sharp_grpc_call_t *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!call || call->stream_closed) return 0;
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > GRPC_MAX_HEADER_BYTES) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: not kept */
    sharp_headers_add(&call->req, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

static ssize_t plain_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *source, void *user)
{
    (void)session;
    (void)stream_id;
    (void)user;
    sharp_grpc_call_t *call = source->ptr;
    size_t n = SHARP_MIN(call->out.len - call->out_off, length);
    if (n) memcpy(buf, call->out.data + call->out_off, n);
    call->out_off += n;
    if (call->out_off == call->out.len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* A response to a request that is not a gRPC call. Takes `body`. */
static void respond_plain(sharp_grpc_call_t *call, unsigned status, const char *content_type, sharp_sbuf_t *body,
                          bool head_only)
{
    sharp_grpc_conn_t *c = call->conn;
    call->finished = true;
    call->headers_sent = true;
    call_release_input(call);
    sharp_sbuf_reset(&call->out);
    if (!head_only && body->len) sharp_sbuf_append(&call->out, body->data, body->len);
    char code[12], clen[24];
    int cl = snprintf(code, sizeof code, "%u", status);
    int ll = snprintf(clen, sizeof clen, "%zu", body->len);
    sharp_sbuf_free(body);
    nghttp2_nv nv[5];
    size_t n = 0;
    nv_add(nv, &n, ":status", 7, code, (size_t)cl);
    nv_add(nv, &n, "content-type", 12, content_type, strlen(content_type));
    NV_LIT(nv, &n, "cache-control", "no-cache, max-age=0");
    NV_LIT(nv, &n, "x-content-type-options", "nosniff");
    nv_add(nv, &n, "content-length", 14, clen, (size_t)ll);
    nghttp2_data_provider dp = {.source.ptr = call, .read_callback = plain_read};
    if (nghttp2_submit_response(c->session, call->id, nv, n, call->out.len ? &dp : NULL) != 0)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->id, NGHTTP2_INTERNAL_ERROR);
    conn_schedule(c);
}

static void respond_plain_text(sharp_grpc_call_t *call, unsigned status, const char *text)
{
    sharp_sbuf_t body = {0};
    sharp_sbuf_puts(&body, text);
    respond_plain(call, status, "text/plain; charset=UTF-8", &body, false);
}

/* The whole request of a plain call is in: the owner answers it. */
static void plain_dispatch(sharp_grpc_call_t *call)
{
    sharp_grpc_conn_t *c = call->conn;
    sharp_grpc_plain_response_t rsp = {0};
    c->io->plain(c->ctx, &call->req, call->in.data ? call->in.data : "", call->in.len, &rsp);
    sharp_str_t method;
    bool head = sharp_headers_get_cstr(&call->req, ":method", &method) && sharp_str_eq(method, "HEAD", 4);
    call->after = rsp.after;
    call->after_arg = rsp.after_arg;
    respond_plain(call, rsp.status ? rsp.status : 200,
                  rsp.content_type ? rsp.content_type : "text/plain; charset=UTF-8", &rsp.body, head);
}

/* The request head is complete: route it, check it, arm its deadline. */
static void call_head_done(sharp_grpc_call_t *call)
{
    sharp_grpc_conn_t *c = call->conn;
    sharp_str_t method = {0}, path = {0}, enc, timeout;
    sharp_headers_get_cstr(&call->req, ":method", &method);
    sharp_headers_get_cstr(&call->req, ":path", &path);
    if (!sharp_grpc_is_request(&call->req)) {
        if (c->io && c->io->plain) {
            call->plain = true; /* answered once its body is in */
            return;
        }
        respond_plain_text(call, 404, "only gRPC (content-type application/grpc) is served here over HTTP/2\n");
        return;
    }
    if (!sharp_str_eq(method, "POST", 4)) {
        respond_plain_text(call, 405, "gRPC calls are POST requests\n");
        return;
    }
    char msg[256];
    if (c->io && c->io->allowed && !c->io->allowed(c->ctx, path)) {
        snprintf(msg, sizeof msg, "request to path %.*s not allowed by admin.allow_paths",
                 (int)SHARP_MIN(path.len, 160), path.p);
        call_end(call, SHARP_GRPC_PERMISSION_DENIED, msg);
        return;
    }
    int m;
    const reg_service_t *svc = registry_lookup(c->reg, path.p, path.len, &m);
    if (!svc || m < 0) {
        const char *slash = path.len > 1 ? memchr(path.p + 1, '/', path.len - 1) : NULL;
        if (!svc)
            snprintf(msg, sizeof msg, "unknown service %.*s", slash ? (int)(slash - path.p - 1) : (int)path.len,
                     slash ? path.p + 1 : path.p);
        else
            snprintf(msg, sizeof msg, "unknown method %.*s for service %s",
                     (int)(path.len - (size_t)(slash - path.p) - 1), slash + 1, svc->desc->name);
        call_end(call, SHARP_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    call->svc = svc;
    call->method = &svc->desc->methods[m];
    call->impl = &svc->impls[m];
    /* a client with another encoding may still send uncompressed messages
     * (the flag is per message): only a compressed one is refused */
    call->foreign_encoding =
        sharp_headers_get_cstr(&call->req, "grpc-encoding", &enc) && !sharp_str_eq(enc, "identity", 8);
    if (sharp_headers_get_cstr(&call->req, "grpc-timeout", &timeout)) {
        uint64_t ms;
        if (!sharp_grpc_timeout_ms(timeout, &ms)) {
            call_end(call, SHARP_GRPC_INTERNAL, "malformed grpc-timeout");
            return;
        }
        uv_timer_start(&call->deadline, on_deadline, ms, 0);
    }
    if (call->impl->client_streaming) {
        call->dispatched = true;
        call->impl->handler(call, NULL, call->svc->data);
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    sharp_grpc_call_t *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!call || call->stream_closed) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) call_head_done(call);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        call->request_done = true;
        if (call->finished) return 0;
        if (!call->plain) call_dispatch(call);
        else if (call->conn->io) plain_dispatch(call);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    sharp_grpc_conn_t *c = user;
    sharp_grpc_call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!call || call->finished || call->stream_closed) return 0; /* dropped */
    if (call->plain && (call->in.len + len > SHARP_GRPC_PLAIN_BODY_MAX || c->buffered + len > GRPC_CONN_BUFFER_MAX)) {
        respond_plain_text(call, 413, "Payload Too Large\n");
        return 0;
    }
    if (c->buffered + len > GRPC_CONN_BUFFER_MAX) {
        call_end(call, SHARP_GRPC_RESOURCE_EXHAUSTED, "too many request bytes buffered on this connection");
        return 0;
    }
    sharp_sbuf_append(&call->in, (const char *)data, len);
    c->buffered += len;
    if (!call->plain) call_check_input(call);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    sharp_grpc_call_t *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    /* the response is complete while the client still sends: stop it */
    if (call && !call->request_done && !call->stream_closed)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    (void)user;
    sharp_grpc_call_t *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!call) return 0;
    if (error_code != NGHTTP2_NO_ERROR && !call->finished)
        sharp_debug(admin, "grpc: stream %d reset (%s)", stream_id, nghttp2_http2_strerror(error_code));
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    call_stream_gone(call);
    return 0;
}

/* ---- connections ---- */

sharp_grpc_conn_t *sharp_grpc_conn_new(sharp_grpc_registry_t *r, uv_loop_t *loop, const sharp_grpc_conn_io_t *io,
                                       void *ctx)
{
    sharp_grpc_conn_t *c = sharp_calloc(1, sizeof *c);
    c->reg = r;
    c->loop = loop;
    c->io = io;
    c->ctx = ctx;
    sharp_dlist_init(&c->calls);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* h2c with prior knowledge only: no HTTP/1 Upgrade path */
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_session_server_new2(&c->session, cb, c, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, SHARP_GRPC_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, GRPC_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, GRPC_MAX_HEADER_BYTES},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, SHARP_ARRAY_SIZE(iv));
    return c;
}

static void conn_report_done(sharp_grpc_conn_t *c)
{
    if (c->done || !c->io) return;
    c->done = true;
    c->io->done(c->ctx);
}

void sharp_grpc_conn_flush(sharp_grpc_conn_t *c)
{
    if (!c->io || c->flushing || c->in_recv) return;
    conn_enter(c);
    c->flushing = true;
    sharp_sbuf_t out = {0};
    while (c->io && c->io->write_queued(c->ctx) + out.len < SHARP_GRPC_CONN_WRITE_HIGH) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(c->session, &d);
        if (n <= 0) {
            if (n < 0) sharp_debug(admin, "grpc: send: %s", nghttp2_strerror((int)n));
            break;
        }
        sharp_sbuf_append(&out, (const char *)d, (size_t)n);
    }
    if (out.len && c->io) c->io->write(c->ctx, &out);
    sharp_sbuf_free(&out);
    c->flushing = false;
    for (unsigned i = 0; i < c->nafters; i++) c->afters[i].fn(c->afters[i].arg);
    c->nafters = 0;
    if (c->io && !nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
        conn_report_done(c);
    conn_leave(c); /* last: may free c */
}

int sharp_grpc_conn_recv(sharp_grpc_conn_t *c, const uint8_t *p, size_t n)
{

    if (c->done || !c->io) return -1;
    conn_enter(c);
    c->in_recv = true;
    ssize_t r = nghttp2_session_mem_recv(c->session, p, n);
    c->in_recv = false;
    if (r < 0) {
        sharp_debug(admin, "grpc: connection error: %s", nghttp2_strerror((int)r));
        /* a bad preface gets no GOAWAY (the peer does not speak HTTP/2) */
        if (r != NGHTTP2_ERR_BAD_CLIENT_MAGIC && c->io)
            nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
        sharp_grpc_conn_flush(c);
        conn_report_done(c);
    } else {
        sharp_grpc_conn_flush(c);
    }
    conn_leave(c); /* last: may free c */
    return r < 0 ? -1 : 0;
}

bool sharp_grpc_conn_busy(const sharp_grpc_conn_t *c)
{
    /* only calls a handler has: a request the client never completes does
     * not keep the connection from its idle timeout */
    for (const sharp_dlist_t *n = c->calls.next; n != &c->calls; n = n->next) {
        const sharp_grpc_call_t *call = sharp_container_of(n, sharp_grpc_call_t, link);
        if (call->dispatched && !call->finished) return true;
    }
    return false;
}

static void conn_maybe_free(sharp_grpc_conn_t *c)
{
    if (c->io || c->session || c->allocated || c->depth) return;
    free(c);
}

static void conn_release(sharp_grpc_conn_t *c)
{
    /* nghttp2_session_del does not report stream closes: end every call
     * here, so handlers drop their handles now */
    while (!sharp_dlist_empty(&c->calls)) {
        sharp_grpc_call_t *call = sharp_container_of(c->calls.next, sharp_grpc_call_t, link);
        call_stream_gone(call);
    }
    nghttp2_session_del(c->session);
    c->session = NULL;
    conn_maybe_free(c);
}

static void conn_enter(sharp_grpc_conn_t *c)
{
    c->depth++;
}

/* The owner may free the connection from a callback it gets (a failed
 * write closes the socket): the session goes once nothing of it is on the
 * stack. */
static void conn_leave(sharp_grpc_conn_t *c)
{
    if (--c->depth == 0 && c->free_pending) {
        c->free_pending = false;
        conn_release(c);
    }
}

void sharp_grpc_conn_free(sharp_grpc_conn_t *c)
{
    if (!c) return;
    c->io = NULL;
    if (c->depth) {
        c->free_pending = true;
        return;
    }
    conn_release(c);
}
