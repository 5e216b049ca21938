/* client.c: SHARP's own gRPC client (see client.h).
 *
 * A call is an HTTP/2 stream of the upstream pools (sharp_upstream_request_t
 * bound to a sharp_upstream_cx_t). Outgoing messages are framed into the
 * call's queue and handed to the stream while the codec is below its write
 * watermark (the codec holds them until the stream's and the connection's
 * windows and the socket take them); incoming DATA is deframed as it comes.
 *
 * Lifetimes: every call has one timer (its deadline, or a failure to report
 * from the next loop turn); the call's memory goes in that timer's close
 * callback, so a call that ended inside a codec callback is still readable
 * until the codec's call stack has unwound. */
#include "grpc/client.h"
#include "grpc/backoff.h"
#include "grpc/framing.h"
#include "grpc/server.h" /* status codes, SHARP_GRPC_MAX_RECV_DEFAULT */
#include "http/grpc.h"
#include "log.h"
#include "sbuf.h"
#include "upstream/pool.h"

#include <stdio.h>

#define DEFAULT_SEND_LIMIT (1024 * 1024)

struct sharp_grpc_client {
    const sharp_upstream_env_t *env;
    sharp_snapshot_t *snap;
    sharp_cluster_t *cluster;
    /* one pool per host of the cluster, made at a host's first call:
     * pool_hosts[i] is pools[i]'s host (a DNS cluster's hosts change) */
    sharp_pool_t **pools;
    sharp_host_t **pool_hosts;
    uint32_t npools;
    uint32_t rr;
    char *authority;
    sharp_headers_t metadata;
    uint64_t timeout_ms;
    uint32_t max_recv;
    size_t send_limit;
    sharp_dlist_t calls;
    sharp_dlist_t retrying;
};

struct sharp_grpc_stream {
    sharp_dlist_t link; /* in c->calls */
    sharp_grpc_client_t *c;
    sharp_upstream_request_t req;
    sharp_upstream_cx_t *cx;
    uv_timer_t timer;
    sharp_headers_t headers; /* the request head, until it is sent */
    const ProtobufCMessageDescriptor *desc;
    sharp_grpc_stream_callbacks_t cb;
    void *arg;
    sharp_sbuf_t out; /* framed messages not handed to the stream yet */
    sharp_sbuf_t in;  /* received bytes not deframed yet, from in_off */
    size_t in_off;
    bool acquired;    /* the request is with the pool (waiting or bound) */
    bool half_close;  /* the caller ended its side */
    bool end_sent;
    bool above;       /* the codec is above its write watermark */
    bool full;        /* a send reported FULL: on_writable is owed */
    bool done;
    bool silent;      /* cancelled: no callback */
    int fail_status;  /* a failure to report from the timer */
    const char *fail_msg;
    /* unary calls */
    sharp_grpc_unary_cb unary_cb;
    void *unary_arg;
    ProtobufCMessage *response;
    uint32_t nresponses;
};

struct sharp_grpc_retrying_stream {
    sharp_dlist_t link; /* in c->retrying */
    sharp_grpc_client_t *c;
    char *path;
    const ProtobufCMessageDescriptor *desc;
    sharp_headers_t metadata;
    sharp_backoff_t backoff;
    uv_timer_t timer;
    sharp_grpc_stream_t *cur;
    sharp_grpc_retry_callbacks_t cb;
    void *arg;
};

/* ---- the client ---- */

sharp_grpc_client_t *sharp_grpc_client_create(const sharp_upstream_env_t *env, sharp_snapshot_t *snap,
                                              const sharp_grpc_client_config_t *cfg, char *err, size_t errlen)
{
    const char *name = cfg->cluster_name ? cfg->cluster_name : "";
    sharp_cluster_t *cl = sharp_snapshot_cluster(snap, name);
    if (!cl) {
        snprintf(err, errlen, "Unknown gRPC client cluster '%s'", name);
        return NULL;
    }
    if (cl->aggregate) {
        /* this client's pools are the cluster's own hosts'; its callers
         * refuse an aggregate at load */
        snprintf(err, errlen, "gRPC client cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which "
                 "is not supported by SHARP's gRPC client", name);
        return NULL;
    }
    if (!cl->http2) {
        /* gRPC needs HTTP/2; Envoy would send it over HTTP/1.1 and fail
         * every call, SHARP says so at once */
        snprintf(err, errlen, "gRPC client cluster '%s' does not use HTTP/2 (set http2_protocol_options)", name);
        return NULL;
    }
    sharp_grpc_client_t *c = sharp_calloc(1, sizeof *c);
    c->env = env;
    c->snap = sharp_snapshot_ref(snap);
    c->cluster = cl;
    c->authority = sharp_strdup(cfg->authority && *cfg->authority ? cfg->authority : name);
    sharp_headers_init(&c->metadata);
    if (cfg->initial_metadata) sharp_headers_copy(&c->metadata, cfg->initial_metadata);
    c->timeout_ms = cfg->timeout_ms;
    c->max_recv = cfg->max_recv_bytes ? cfg->max_recv_bytes : SHARP_GRPC_MAX_RECV_DEFAULT;
    c->send_limit = cfg->send_buffer_limit ? cfg->send_buffer_limit : DEFAULT_SEND_LIMIT;
    sharp_dlist_init(&c->calls);
    sharp_dlist_init(&c->retrying);
    return c;
}

void sharp_grpc_client_destroy(sharp_grpc_client_t *c)
{
    if (!c) return;
    while (!sharp_dlist_empty(&c->retrying))
        sharp_grpc_retrying_stream_stop(sharp_container_of(c->retrying.next, sharp_grpc_retrying_stream_t, link));
    while (!sharp_dlist_empty(&c->calls))
        sharp_grpc_stream_cancel(sharp_container_of(c->calls.next, sharp_grpc_stream_t, link));
    for (uint32_t i = 0; i < c->npools; i++) sharp_pool_destroy(c->pools[i]);
    free(c->pools);
    free(c->pool_hosts);
    free(c->authority);
    sharp_headers_free(&c->metadata);
    sharp_snapshot_unref(c->snap);
    free(c);
}

/* The pool of one of the cluster's current hosts; pools of hosts that
 * have left the cluster (a DNS cluster's new answer) retire. */
static sharp_pool_t *host_pool(sharp_grpc_client_t *c, sharp_host_t *h)
{
    const sharp_cluster_t *cl = c->cluster;
    sharp_pool_t *found = NULL;
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->npools; i++) {
        if (c->pool_hosts[i] == h) found = c->pools[i];
        if (c->pool_hosts[i] != h && !sharp_host_listed(c->pool_hosts[i], cl->hosts, cl->nhosts)) {
            sharp_pool_retire(c->pools[i]);
            continue;
        }
        c->pools[k] = c->pools[i];
        c->pool_hosts[k++] = c->pool_hosts[i];
    }
    c->npools = k;
    if (found) return found;
    c->pools = sharp_realloc(c->pools, (c->npools + 1) * sizeof *c->pools);
    c->pool_hosts = sharp_realloc(c->pool_hosts, (c->npools + 1) * sizeof *c->pool_hosts);
    found = sharp_pool_create(c->env, c->cluster, h, SHARP_PRIORITY_DEFAULT);
    /* a use_downstream_protocol_config cluster's pools start as HTTP/1.1;
     * gRPC always takes its HTTP/2 options */
    sharp_pool_use_http2(found);
    c->pools[c->npools] = found;
    c->pool_hosts[c->npools++] = h;
    return found;
}

/* Healthy hosts first, round robin; every host when none is healthy (the
 * call then fails or succeeds on its own, as a panic-mode choice). The
 * cluster's current hosts: the client runs on the main thread. */
static sharp_pool_t *pick_pool(sharp_grpc_client_t *c)
{
    uint32_t n = c->cluster->nhosts;
    if (!n) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t at = (c->rr + i) % n;
        if (sharp_host_healthy(c->cluster->hosts[at])) {
            c->rr = at + 1;
            return host_pool(c, c->cluster->hosts[at]);
        }
    }
    return host_pool(c, c->cluster->hosts[c->rr++ % n]);
}

/* ---- a call's end ---- */

static void call_free(uv_handle_t *h)
{
    sharp_grpc_stream_t *s = h->data;
    sharp_headers_free(&s->headers);
    sharp_sbuf_free(&s->out);
    sharp_sbuf_free(&s->in);
    if (s->response) protobuf_c_message_free_unpacked(s->response, NULL);
    free(s);
}

/* Ends the call once: lets go of the upstream stream (reset unless both
 * sides ended), tells the caller unless it cancelled, and frees it from
 * the timer's close callback. */
static void finish(sharp_grpc_stream_t *s, int status, const char *message, const sharp_headers_t *trailers)
{
    if (s->done) return;
    s->done = true;
    uv_timer_stop(&s->timer);
    sharp_dlist_remove(&s->link);
    if (s->acquired) {
        s->acquired = false;
        sharp_pool_cancel(&s->req);
    }
    s->cx = NULL;
    if (!message) message = "";
    sharp_debug(pool, "gRPC call to cluster '%s' ended: %d %s", s->c->cluster->name, status, message);
    if (!s->silent) {
        if (s->unary_cb) {
            if (status == SHARP_GRPC_OK && s->nresponses != 1) {
                /* grpc-go's cardinality checks of a unary response */
                status = SHARP_GRPC_INTERNAL;
                message = s->nresponses ? "cardinality violation: expected <EOF> for non client-streaming RPCs, "
                                          "but received another message"
                                        : "cardinality violation: received no response message from "
                                          "non-streaming RPC";
            }
            s->unary_cb(s->unary_arg, status, message, status == SHARP_GRPC_OK ? s->response : NULL, trailers);
        } else if (s->cb.on_close) {
            s->cb.on_close(s->arg, status, message, trailers);
        }
    }
    uv_close((uv_handle_t *)&s->timer, call_free);
}

/* Ends the call with a status from response headers or trailers. */
static void finish_from(sharp_grpc_stream_t *s, const sharp_headers_t *h)
{
    int64_t code;
    if (!sharp_grpc_response_status(h, NULL, 0, &code)) {
        finish(s, SHARP_GRPC_INTERNAL, "server closed the stream without sending grpc-status", h);
        return;
    }
    if (code < 0 || code > INT32_MAX) {
        finish(s, SHARP_GRPC_INTERNAL, "malformed grpc-status", h);
        return;
    }
    sharp_str_t m = {"", 0};
    sharp_headers_get_cstr(h, "grpc-message", &m);
    char *msg = sharp_calloc(1, m.len + 1);
    sharp_percent_decode(m.p, m.len, msg);
    finish(s, (int)code, msg, h);
    free(msg);
}

static void fail_later(sharp_grpc_stream_t *s, int status, const char *msg)
{
    s->fail_status = status;
    s->fail_msg = msg;
}

static void on_timer(uv_timer_t *t)
{
    sharp_grpc_stream_t *s = t->data;
    if (s->fail_msg) {
        finish(s, s->fail_status, s->fail_msg, NULL);
        return;
    }
    /* the deadline: the stream is reset (CANCEL) as the call ends */
    finish(s, SHARP_GRPC_DEADLINE_EXCEEDED, "Deadline Exceeded", NULL);
}

/* ---- sending ---- */

size_t sharp_grpc_stream_queued(const sharp_grpc_stream_t *s)
{
    return s->out.len + (s->cx ? sharp_upstream_cx_queued(s->cx) : 0);
}

/* Hands the queue to the stream while the codec takes more. */
static void pump(sharp_grpc_stream_t *s)
{
    if (s->done || !s->cx || s->above) return;
    if (s->out.len || (s->half_close && !s->end_sent)) {
        bool end = s->half_close;
        size_t n = s->out.len;
        s->out.len = 0;
        if (end) s->end_sent = true;
        sharp_upstream_cx_send_data(s->cx, s->out.data, n, end);
    }
    if (s->full && !s->done && sharp_grpc_stream_queued(s) < s->c->send_limit) {
        s->full = false;
        if (s->cb.on_writable) s->cb.on_writable(s->arg);
    }
}

sharp_grpc_send_result_t sharp_grpc_stream_send(sharp_grpc_stream_t *s, const ProtobufCMessage *m)
{
    if (!s || s->done || s->half_close) return SHARP_GRPC_SEND_REFUSED;
    if (sharp_grpc_stream_queued(s) >= s->c->send_limit) {
        s->full = true;
        return SHARP_GRPC_SEND_REFUSED;
    }
    sharp_grpc_frame_message(&s->out, m);
    pump(s);
    if (sharp_grpc_stream_queued(s) >= s->c->send_limit) {
        s->full = true;
        return SHARP_GRPC_SEND_FULL;
    }
    return SHARP_GRPC_SEND_OK;
}

void sharp_grpc_stream_close_send(sharp_grpc_stream_t *s)
{
    if (!s || s->done || s->half_close) return;
    s->half_close = true;
    pump(s);
}

void sharp_grpc_stream_cancel(sharp_grpc_stream_t *s)
{
    if (!s || s->done) return;
    s->silent = true;
    finish(s, SHARP_GRPC_CANCELLED, "cancelled", NULL);
}

/* ---- upstream callbacks ---- */

static void up_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    sharp_grpc_stream_t *s = ctx;
    s->cx = cx;
    sharp_upstream_cx_send_headers(cx, &s->headers, false);
    sharp_headers_free(&s->headers);
    pump(s);
}

static void up_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    sharp_grpc_stream_t *s = ctx;
    s->acquired = false;
    finish(s, SHARP_GRPC_UNAVAILABLE, detail, NULL);
}

static void deliver(sharp_grpc_stream_t *s, const uint8_t *p, size_t n)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(s->desc, NULL, n, p);
    if (!m) {
        finish(s, SHARP_GRPC_INTERNAL, "grpc: failed to unmarshal the received message", NULL);
        return;
    }
    if (s->unary_cb) {
        /* the first one is the answer; more make it a cardinality error */
        if (s->nresponses++ == 0) s->response = m;
        else protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    if (s->cb.on_message) s->cb.on_message(s->arg, m);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void up_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    sharp_grpc_stream_t *s = ctx;
    if (s->done) return;
    uint32_t code = sharp_headers_status(h);
    if (code != 200) {
        /* Envoy's and grpc-go's answer to a non-gRPC response: the HTTP
         * status mapped, unless the peer sent a grpc-status of its own */
        int64_t st;
        if (end_stream && sharp_grpc_response_status(h, NULL, 0, &st) && st >= 0) {
            finish_from(s, h);
            return;
        }
        char msg[64];
        snprintf(msg, sizeof msg, "unexpected HTTP status code received from server: %u", code);
        finish(s, (int)sharp_grpc_status_from_http(code), msg, h);
        return;
    }
    if (end_stream) {
        /* Trailers-Only */
        finish_from(s, h);
        return;
    }
    if (s->cb.on_initial_metadata) s->cb.on_initial_metadata(s->arg, h);
}

static void up_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    sharp_grpc_stream_t *s = ctx;
    if (s->done) return;
    if (n) sharp_sbuf_append(&s->in, p, n);
    while (!s->done) {
        sharp_grpc_frame_t f;
        sharp_grpc_frame_result_t r = sharp_grpc_deframe((const uint8_t *)s->in.data + s->in_off,
                                                         s->in.len - s->in_off, s->c->max_recv, &f);
        if (r == SHARP_GRPC_FRAME_NEED_MORE) break;
        if (r == SHARP_GRPC_FRAME_TOO_LARGE) {
            char msg[128];
            snprintf(msg, sizeof msg, "grpc: received message larger than max (%u vs. %u)", f.len, s->c->max_recv);
            finish(s, SHARP_GRPC_RESOURCE_EXHAUSTED, msg, NULL);
            return;
        }
        if (r == SHARP_GRPC_FRAME_BAD_FLAG) {
            finish(s, SHARP_GRPC_INTERNAL, "grpc: malformed message: bad compressed-flag byte", NULL);
            return;
        }
        if (f.compressed) {
            /* no grpc-accept-encoding was offered */
            finish(s, SHARP_GRPC_INTERNAL, "grpc: compressed message received without an accepted encoding", NULL);
            return;
        }
        s->in_off += f.used;
        deliver(s, f.msg, f.len);
    }
    if (s->done) return;
    if (s->in_off == s->in.len) {
        s->in.len = s->in_off = 0;
    } else if (s->in_off > 64 * 1024) {
        memmove(s->in.data, s->in.data + s->in_off, s->in.len - s->in_off);
        s->in.len -= s->in_off;
        s->in_off = 0;
    }
    if (end_stream) finish(s, SHARP_GRPC_INTERNAL, "server closed the stream without sending trailers", NULL);
}

static void up_trailers(void *ctx, sharp_headers_t *t)
{
    sharp_grpc_stream_t *s = ctx;
    if (s->done) return;
    if (s->in.len > s->in_off) {
        finish(s, SHARP_GRPC_INTERNAL, "grpc: the stream ended inside a message", t);
        return;
    }
    finish_from(s, t);
}

static void up_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    sharp_grpc_stream_t *s = ctx;
    s->acquired = false; /* the codec let go of the request */
    s->cx = NULL;
    finish(s, why == SHARP_RESET_PROTOCOL_ERROR ? SHARP_GRPC_INTERNAL : SHARP_GRPC_UNAVAILABLE, detail, NULL);
}

static void up_watermark(void *ctx, bool above)
{
    sharp_grpc_stream_t *s = ctx;
    s->above = above;
    if (!above) pump(s);
}

static const sharp_upstream_callbacks_t up_callbacks = {
    .on_ready = up_ready,
    .on_pool_failure = up_pool_failure,
    .on_headers = up_headers,
    .on_data = up_data,
    .on_trailers = up_trailers,
    .on_reset = up_reset,
    .on_write_watermark = up_watermark,
};

/* ---- starting calls ---- */

static void add_metadata(sharp_headers_t *h, const sharp_headers_t *md)
{
    if (!md) return;
    for (uint32_t i = 0; i < md->n; i++) {
        sharp_str_t n = sharp_headers_name(md, i), v = sharp_headers_value(md, i);
        if (n.len && n.p[0] == ':') continue; /* pseudo-headers are the client's */
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
}

static sharp_grpc_stream_t *call_new(sharp_grpc_client_t *c, const char *path,
                                     const ProtobufCMessageDescriptor *desc, uint64_t timeout_ms,
                                     const sharp_headers_t *metadata)
{
    sharp_grpc_stream_t *s = sharp_calloc(1, sizeof *s);
    s->c = c;
    s->desc = desc;
    uv_timer_init(c->env->loop, &s->timer);
    s->timer.data = s;
    sharp_dlist_push(&c->calls, &s->link);
    sharp_headers_init(&s->headers);
    sharp_headers_t *h = &s->headers;
    sharp_headers_add_cstr(h, ":method", "POST");
    sharp_headers_add_cstr(h, ":scheme", "http");
    sharp_headers_add_cstr(h, ":path", path);
    sharp_headers_add_cstr(h, ":authority", c->authority);
    sharp_headers_add_cstr(h, "content-type", "application/grpc");
    sharp_headers_add_cstr(h, "te", "trailers");
    if (!timeout_ms) timeout_ms = c->timeout_ms;
    if (timeout_ms) {
        char v[10];
        size_t n = sharp_grpc_timeout_format(timeout_ms, v);
        sharp_headers_add(h, "grpc-timeout", 12, v, n);
    }
    add_metadata(h, &c->metadata);
    add_metadata(h, metadata);
    return s;
}

/* Asks a pool for a stream; failures before that reach the caller from
 * the next loop turn. */
static void call_start(sharp_grpc_stream_t *s, uint64_t timeout_ms)
{
    sharp_grpc_client_t *c = s->c;
    if (!timeout_ms) timeout_ms = c->timeout_ms;
    sharp_pool_t *p = pick_pool(c);
    if (!p) {
        fail_later(s, SHARP_GRPC_UNAVAILABLE, "no healthy upstream");
    } else if (!sharp_pool_acquire(p, &s->req, &up_callbacks, s)) {
        /* max_pending_requests: the router's overflow, a 503 */
        fail_later(s, SHARP_GRPC_UNAVAILABLE, "upstream overflow: pending requests limit reached");
    } else {
        s->acquired = true;
    }
    if (s->fail_msg) {
        uv_timer_start(&s->timer, on_timer, 0, 0);
        return;
    }
    if (timeout_ms) uv_timer_start(&s->timer, on_timer, timeout_ms, 0);
}

sharp_grpc_stream_t *sharp_grpc_unary(sharp_grpc_client_t *c, const char *path, const ProtobufCMessage *request,
                                      const ProtobufCMessageDescriptor *response_desc, uint64_t timeout_ms,
                                      const sharp_headers_t *metadata, sharp_grpc_unary_cb cb, void *arg)
{
    sharp_grpc_stream_t *s = call_new(c, path, response_desc, timeout_ms, metadata);
    s->unary_cb = cb;
    s->unary_arg = arg;
    sharp_grpc_frame_message(&s->out, request);
    s->half_close = true;
    call_start(s, timeout_ms);
    return s;
}

sharp_grpc_stream_t *sharp_grpc_stream_start(sharp_grpc_client_t *c, const char *path,
                                             const ProtobufCMessageDescriptor *response_desc, uint64_t timeout_ms,
                                             const sharp_headers_t *metadata,
                                             const sharp_grpc_stream_callbacks_t *cb, void *arg)
{
    sharp_grpc_stream_t *s = call_new(c, path, response_desc, timeout_ms, metadata);
    s->cb = *cb;
    s->arg = arg;
    call_start(s, timeout_ms);
    return s;
}

/* ---- retrying streams ---- */

static uint64_t env_random(void *arg)
{
    return sharp_upstream_env_random(arg);
}

static void rs_on_initial_metadata(void *arg, const sharp_headers_t *h)
{
    (void)arg;
    (void)h;
}

static void rs_on_message(void *arg, const ProtobufCMessage *m)
{
    sharp_grpc_retrying_stream_t *rs = arg;
    /* Envoy's GrpcStream: a message proves the stream works */
    sharp_backoff_reset(&rs->backoff);
    if (rs->cb.on_message) rs->cb.on_message(rs->arg, m);
}

static void rs_open(uv_timer_t *t);

static void rs_on_close(void *arg, int status, const char *message, const sharp_headers_t *trailers)
{
    (void)trailers;
    sharp_grpc_retrying_stream_t *rs = arg;
    rs->cur = NULL;
    uint64_t delay = sharp_backoff_next(&rs->backoff);
    sharp_debug(pool, "gRPC stream %s closed (%d, %s); re-opening in %llu ms", rs->path, status, message,
                (unsigned long long)delay);
    uv_timer_start(&rs->timer, rs_open, delay, 0);
    if (rs->cb.on_close) rs->cb.on_close(rs->arg, status, message, delay);
}

static const sharp_grpc_stream_callbacks_t rs_callbacks = {
    .on_initial_metadata = rs_on_initial_metadata,
    .on_message = rs_on_message,
    .on_close = rs_on_close,
};

static void rs_open(uv_timer_t *t)
{
    sharp_grpc_retrying_stream_t *rs = t->data;
    rs->cur = sharp_grpc_stream_start(rs->c, rs->path, rs->desc, 0, &rs->metadata, &rs_callbacks, rs);
    /* a deadline would end a long-lived stream: none, whatever the client's default */
    if (!rs->cur->fail_msg) uv_timer_stop(&rs->cur->timer);
    if (rs->cb.on_open) rs->cb.on_open(rs->arg, rs);
}

sharp_grpc_retrying_stream_t *sharp_grpc_retrying_stream_start(sharp_grpc_client_t *c, const char *path,
                                                               const ProtobufCMessageDescriptor *response_desc,
                                                               const sharp_headers_t *metadata, uint64_t base_ms,
                                                               uint64_t max_ms,
                                                               const sharp_grpc_retry_callbacks_t *cb, void *arg)
{
    sharp_grpc_retrying_stream_t *rs = sharp_calloc(1, sizeof *rs);
    rs->c = c;
    rs->path = sharp_strdup(path);
    rs->desc = response_desc;
    sharp_headers_init(&rs->metadata);
    if (metadata) sharp_headers_copy(&rs->metadata, metadata);
    sharp_backoff_init(&rs->backoff, base_ms, max_ms, env_random, (void *)c->env);
    rs->cb = *cb;
    rs->arg = arg;
    uv_timer_init(c->env->loop, &rs->timer);
    rs->timer.data = rs;
    sharp_dlist_push(&c->retrying, &rs->link);
    /* the first open too runs from the loop, not inside this call */
    uv_timer_start(&rs->timer, rs_open, 0, 0);
    return rs;
}

sharp_grpc_send_result_t sharp_grpc_retrying_stream_send(sharp_grpc_retrying_stream_t *rs, const ProtobufCMessage *m)
{
    return rs->cur ? sharp_grpc_stream_send(rs->cur, m) : SHARP_GRPC_SEND_REFUSED;
}

static void rs_free(uv_handle_t *h)
{
    sharp_grpc_retrying_stream_t *rs = h->data;
    free(rs->path);
    sharp_headers_free(&rs->metadata);
    free(rs);
}

void sharp_grpc_retrying_stream_stop(sharp_grpc_retrying_stream_t *rs)
{
    if (!rs) return;
    if (rs->cur) sharp_grpc_stream_cancel(rs->cur);
    rs->cur = NULL;
    sharp_dlist_remove(&rs->link);
    uv_timer_stop(&rs->timer);
    uv_close((uv_handle_t *)&rs->timer, rs_free);
}
