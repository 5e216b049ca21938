/* router.c: envoy.filters.http.router, the terminal filter.
 *
 * Per stream: resolve the route's cluster, enforce the cluster's request
 * circuit breaker, pick a host with the worker's load balancer, get a pooled
 * connection, stream the request up and the response down with backpressure
 * both ways, and turn upstream failures into Envoy's local replies and
 * response flags (UF, UO, UH, NC, UT, UC, UR, UPE). Direct responses and
 * redirects are answered here too, as in Envoy. Retries (parsed into the
 * route) are not enforced yet. */
#include "filters/router/router.h"
#include "http/filter.h"
#include "http/hcm_internal.h"
#include "http/route.h"
#include "http/stream.h"
#include "log.h"
#include "upstream/pool.h"
#include "worker.h"

#include <stdio.h>
#include <strings.h>

typedef struct router_config {
    bool suppress_envoy_headers;
} router_config_t;

typedef struct router_timer {
    uv_timer_t t;
    struct router_state *rs; /* NULL once the stream is gone */
} router_timer_t;

typedef struct router_state {
    sharp_filter_t *f;
    sharp_cluster_t *cluster;
    sharp_cluster_local_t *cl;
    sharp_host_t *host;
    const sharp_weighted_cluster_t *wc; /* the weighted cluster picked, if any */
    sharp_upstream_request_t ureq;
    router_timer_t *timer;
    uint64_t timeout_ms;
    uint64_t upstream_start_ns;
    sharp_sbuf_t pending_body; /* request body received before the connection was ready */
    bool pending_end;
    bool request_end_seen;
    bool upstream_active;   /* acquire issued and not yet released */
    bool bound;             /* a connection is bound */
    bool response_headers;  /* upstream response headers went downstream */
    bool response_done;
    bool counted_active;
} router_state_t;

static const sharp_upstream_callbacks_t upstream_cbs;

static sharp_stats_shard_t *shard(router_state_t *rs)
{
    return sharp_stream_worker(rs->f->stream)->stats;
}

static void *router_create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx,
                                  char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    router_config_t *c = sharp_calloc(1, sizeof *c);
    if (msg) {
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "suppress_envoy_headers");
        if (fd && fd->type == PROTOBUF_C_TYPE_BOOL)
            c->suppress_envoy_headers = *(const protobuf_c_boolean *)((const char *)msg + fd->offset);
    }
    return c;
}

static void router_destroy_config(void *c)
{
    free(c);
}

/* ---- helpers ---- */

static void release_upstream(router_state_t *rs)
{
    if (!rs->upstream_active) return;
    rs->upstream_active = false;
    rs->bound = false;
    sharp_pool_cancel(&rs->ureq);
    if (rs->counted_active) {
        rs->counted_active = false;
        sharp_gauge_add(shard(rs), rs->cluster->st.rq_active, -1);
        atomic_fetch_sub_explicit(&rs->host->active_rq, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&rs->cluster->rq_open, 1, memory_order_relaxed);
    }
}

static void stop_timer(router_state_t *rs)
{
    if (rs->timer) uv_timer_stop(&rs->timer->t);
}

/* Envoy counts a locally generated upstream failure as that status in the
 * cluster's stats, so 5xx alarms see connection failures and timeouts. */
static void charge_local_upstream_code(router_state_t *rs, uint32_t code)
{
    sharp_cluster_count_response(rs->cluster, shard(rs), code);
    atomic_fetch_add_explicit(&rs->host->rq_error, 1, memory_order_relaxed);
}

static void upstream_failure_reply(router_state_t *rs, uint32_t code, const char *body,
                                   uint32_t flag, const char *details)
{
    stop_timer(rs);
    release_upstream(rs);
    sharp_stream_send_local_reply(rs->f, code, body, flag, details);
}

static void on_timeout(uv_timer_t *t)
{
    router_timer_t *rt = sharp_container_of(t, router_timer_t, t);
    router_state_t *rs = rt->rs;
    if (!rs || rs->response_done) return;
    sharp_counter_inc(shard(rs), rs->cluster->st.rq_timeout);
    atomic_fetch_add_explicit(&rs->host->rq_timeout, 1, memory_order_relaxed);
    if (!rs->response_headers) {
        charge_local_upstream_code(rs, 504);
        upstream_failure_reply(rs, 504, "upstream request timeout",
                               SHARP_RF_UPSTREAM_REQUEST_TIMEOUT, "upstream_response_timeout");
    } else {
        release_upstream(rs);
        sharp_stream_reset(rs->f->stream, SHARP_RF_UPSTREAM_REQUEST_TIMEOUT);
    }
}

/* The route timeout runs from the end of the downstream request, as in Envoy. */
static void start_timer(router_state_t *rs)
{
    if (!rs->timeout_ms || !rs->upstream_active || rs->response_done) return;
    if (!rs->timer) {
        rs->timer = sharp_calloc(1, sizeof *rs->timer);
        uv_timer_init(&sharp_stream_worker(rs->f->stream)->loop, &rs->timer->t);
        rs->timer->rs = rs;
    }
    uv_timer_start(&rs->timer->t, on_timeout, rs->timeout_ms, 0);
}

static void free_timer(uv_handle_t *h)
{
    free(sharp_container_of((uv_timer_t *)h, router_timer_t, t));
}

static void response_header_ops(sharp_stream_t *s, const sharp_route_t *r,
                                const sharp_weighted_cluster_t *wc, sharp_headers_t *h)
{
    sharp_route_apply_response_headers(s->hcm->routes, s->vhost, r, wc, h, &s->info);
}

static void send_direct_response(sharp_filter_t *f, const sharp_route_t *r)
{
    sharp_stream_t *s = f->stream;
    sharp_headers_t *h = &s->resp;
    char code[16], cl[24];
    snprintf(code, sizeof code, "%u", r->direct_status);
    sharp_headers_clear(h);
    sharp_headers_add_cstr(h, ":status", code);
    size_t blen = r->direct_body ? r->direct_body_len : 0;
    if (blen) {
        snprintf(cl, sizeof cl, "%zu", blen);
        sharp_headers_add_cstr(h, "content-length", cl);
        sharp_headers_add_cstr(h, "content-type", "text/plain");
    }
    response_header_ops(s, r, NULL, h);
    s->info.response_code_details = "direct_response";
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_direct_response);
    bool end = blen == 0 || s->is_head;
    sharp_stream_encode_headers(f, h, end);
    if (!end) sharp_stream_encode_data(f, r->direct_body, blen, true);
}

static void send_redirect(sharp_filter_t *f, const sharp_route_t *r)
{
    sharp_stream_t *s = f->stream;
    const sharp_redirect_t *rd = &r->redirect;
    sharp_str_t path = SHARP_STR("/"), auth = SHARP_STR(""), scheme = SHARP_STR("http");
    sharp_headers_get_cstr(&s->req, ":path", &path);
    sharp_headers_get_cstr(&s->req, ":authority", &auth);
    sharp_headers_get_cstr(&s->req, ":scheme", &scheme);
    const char *q = memchr(path.p, '?', path.len);
    size_t plen = q ? (size_t)(q - path.p) : path.len;
    sharp_sbuf_t loc = {0};
    const char *sch = rd->scheme ? rd->scheme : NULL;
    if (sch) sharp_sbuf_puts(&loc, sch);
    else sharp_sbuf_append(&loc, scheme.p, scheme.len);
    sharp_sbuf_puts(&loc, "://");
    /* host without its port unless the redirect keeps it */
    const char *colon = memrchr(auth.p, ':', auth.len);
    size_t hostlen = colon && !memchr(auth.p, ']', auth.len) ? (size_t)(colon - auth.p) : auth.len;
    if (rd->host) sharp_sbuf_puts(&loc, rd->host);
    else sharp_sbuf_append(&loc, auth.p, hostlen);
    if (rd->port) sharp_sbuf_printf(&loc, ":%u", rd->port);
    else if (!rd->host && !rd->scheme && colon && hostlen != auth.len)
        sharp_sbuf_append(&loc, auth.p + hostlen, auth.len - hostlen);
    if (rd->path) {
        sharp_sbuf_puts(&loc, rd->path);
    } else if (rd->prefix_rewrite && r->match_kind == SHARP_ROUTE_MATCH_PREFIX &&
               plen >= r->path_len) {
        sharp_sbuf_puts(&loc, rd->prefix_rewrite);
        sharp_sbuf_append(&loc, path.p + r->path_len, plen - r->path_len);
    } else {
        sharp_sbuf_append(&loc, path.p, plen);
    }
    if (q && !rd->strip_query && !(rd->path && strchr(rd->path, '?')))
        sharp_sbuf_append(&loc, q, path.len - plen);
    sharp_headers_t *h = &s->resp;
    char code[16];
    snprintf(code, sizeof code, "%u", rd->code ? rd->code : 301);
    sharp_headers_clear(h);
    sharp_headers_add_cstr(h, ":status", code);
    sharp_headers_add(h, "location", 8, loc.data, loc.len);
    sharp_sbuf_free(&loc);
    response_header_ops(s, r, NULL, h);
    s->info.response_code_details = "direct_response";
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_redirect);
    sharp_stream_encode_headers(f, h, true);
}

static uint64_t parse_u64(sharp_str_t v, bool *ok)
{
    uint64_t x = 0;
    *ok = v.len > 0 && v.len < 19;
    for (size_t i = 0; i < v.len && *ok; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') *ok = false;
        else x = x * 10 + (uint64_t)(v.p[i] - '0');
    }
    return x;
}

/* ---- decode ---- */

static sharp_filter_status_t router_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    router_state_t *rs = f->state;
    const router_config_t *cfg = f->config;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    rs->f = f;
    const sharp_route_t *r = s->route;
    if (!r) {
        sharp_counter_inc(w->stats, s->hcm->st.no_route);
        sharp_stream_send_local_reply(f, 404, NULL, SHARP_RF_NO_ROUTE_FOUND, "route_not_found");
        return SHARP_FILTER_STOP;
    }
    if (r->action == SHARP_ROUTE_ACTION_DIRECT) {
        send_direct_response(f, r);
        return SHARP_FILTER_STOP;
    }
    if (r->action == SHARP_ROUTE_ACTION_REDIRECT) {
        send_redirect(f, r);
        return SHARP_FILTER_STOP;
    }
    const sharp_weighted_cluster_t *wc = NULL;
    const char *cname = sharp_route_pick_cluster(r, sharp_worker_random(w), &wc);
    sharp_cluster_t *c = cname ? sharp_snapshot_cluster(s->snap, cname) : NULL;
    if (!c) {
        sharp_counter_inc(w->stats, s->hcm->st.no_cluster);
        sharp_stream_send_local_reply(f, r->cluster_not_found_code ? r->cluster_not_found_code : 503,
                                      NULL, SHARP_RF_NO_CLUSTER_FOUND, "cluster_not_found");
        return SHARP_FILTER_STOP;
    }
    rs->cluster = c;
    s->info.upstream_cluster = c->name;
    sharp_cluster_local_t *cl = &w->clusters[c->index];
    rs->cl = cl;
    sharp_host_t *host = sharp_lb_choose(&cl->lb);
    if (!host) {
        sharp_stream_send_local_reply(f, 503, "no healthy upstream", SHARP_RF_NO_HEALTHY_UPSTREAM,
                                      "no_healthy_upstream");
        return SHARP_FILTER_STOP;
    }
    /* cluster-wide request circuit breaker */
    int64_t open = atomic_fetch_add_explicit(&c->rq_open, 1, memory_order_relaxed);
    if ((uint64_t)open >= c->cb.max_requests) {
        atomic_fetch_sub_explicit(&c->rq_open, 1, memory_order_relaxed);
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        sharp_stream_send_local_reply(f, 503,
                                      "upstream connect error or disconnect/reset before headers. "
                                      "reset reason: overflow",
                                      SHARP_RF_UPSTREAM_OVERFLOW, "upstream_reset_before_response_started{overflow}");
        return SHARP_FILTER_STOP;
    }
    rs->host = host;
    rs->counted_active = true;
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
    snprintf(s->info.upstream_host, sizeof s->info.upstream_host, "%s", host->address);
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);

    /* request headers for the upstream */
    rs->timeout_ms = r->timeout_ms;
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, "x-envoy-upstream-rq-timeout-ms", &v)) {
        bool ok;
        uint64_t t = parse_u64(v, &ok);
        if (ok) rs->timeout_ms = t;
        sharp_headers_remove_cstr(h, "x-envoy-upstream-rq-timeout-ms");
    }
    if (r->prefix_rewrite && r->match_kind == SHARP_ROUTE_MATCH_PREFIX &&
        sharp_headers_get_cstr(h, ":path", &v) && v.len >= r->path_len) {
        sharp_sbuf_t np = {0};
        sharp_sbuf_puts(&np, r->prefix_rewrite);
        sharp_sbuf_append(&np, v.p + r->path_len, v.len - r->path_len);
        sharp_headers_set(h, "x-envoy-original-path", 21, v.p, v.len);
        sharp_headers_set(h, ":path", 5, np.data, np.len);
        sharp_sbuf_free(&np);
    }
    if (r->host_rewrite) sharp_headers_set_cstr(h, ":authority", r->host_rewrite);
    else if (r->auto_host_rewrite && host->hostname[0]) sharp_headers_set_cstr(h, ":authority", host->hostname);
    if (!cfg || !cfg->suppress_envoy_headers) {
        if (rs->timeout_ms) {
            char t[20];
            size_t tl = sharp_u64_to_str(rs->timeout_ms, t);
            sharp_headers_set(h, "x-envoy-expected-rq-timeout-ms", 30, t, tl);
        }
    }
    sharp_route_apply_request_headers(s->hcm->routes, s->vhost, r, wc, h, &s->info);
    rs->wc = wc;

    rs->request_end_seen = end_stream;
    rs->upstream_active = true;
    rs->upstream_start_ns = sharp_now_ns();
    sharp_pool_acquire(cl->pools[host->index], &rs->ureq,
                       &upstream_cbs, rs);
    if (end_stream && rs->upstream_active) start_timer(rs);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t router_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    router_state_t *rs = f->state;
    if (!rs->upstream_active) return SHARP_FILTER_STOP;
    if (end) rs->request_end_seen = true;
    if (rs->bound) {
        sharp_upstream_cx_send_data(rs->ureq.cx, p, n, end);
    } else {
        if (n) sharp_sbuf_append(&rs->pending_body, p, n);
        if (end) rs->pending_end = true;
        if (rs->pending_body.len > sharp_stream_buffer_limit(f->stream))
            sharp_stream_read_disable(f->stream, true);
    }
    if (end) start_timer(rs);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t router_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    (void)t;
    return router_decode_data(f, NULL, 0, true);
}

/* ---- upstream callbacks ---- */

static void up_on_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    router_state_t *rs = ctx;
    sharp_stream_t *s = rs->f->stream;
    rs->bound = true;
    snprintf(s->info.upstream_local_address, sizeof s->info.upstream_local_address, "%s",
             sharp_upstream_cx_local_address(cx));
    bool body_pending = rs->pending_body.len > 0 || rs->pending_end;
    bool end_with_headers = rs->request_end_seen && !body_pending;
    sharp_upstream_cx_send_headers(cx, &s->req, end_with_headers);
    if (body_pending) {
        sharp_sbuf_t b = rs->pending_body;
        memset(&rs->pending_body, 0, sizeof rs->pending_body);
        sharp_upstream_cx_send_data(cx, b.data, b.len, rs->pending_end);
        sharp_sbuf_free(&b);
        if (rs->upstream_active) sharp_stream_read_disable(s, false);
    }
    if (sharp_codec_downstream_above_watermark(s) && rs->ureq.cx) {
        sharp_upstream_cx_read_disable(rs->ureq.cx, true);
    }
}

static void up_on_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    router_state_t *rs = ctx;
    (void)detail;
    if (why == SHARP_POOL_FAIL_OVERFLOW) {
        sharp_counter_inc(shard(rs), rs->cluster->st.rq_pending_overflow);
        upstream_failure_reply(rs, 503,
                               "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                               SHARP_RF_UPSTREAM_OVERFLOW, "upstream_reset_before_response_started{overflow}");
        return;
    }
    charge_local_upstream_code(rs, 503);
    upstream_failure_reply(rs, 503,
                           "upstream connect error or disconnect/reset before headers. reset reason: "
                           "connection failure",
                           SHARP_RF_UPSTREAM_CONNECTION_FAILURE,
                           "upstream_reset_before_response_started{connection_failure}");
}

static void up_on_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    router_state_t *rs = ctx;
    sharp_stream_t *s = rs->f->stream;
    const router_config_t *cfg = rs->f->config;
    uint64_t now = sharp_now_ns();
    s->info.upstream_first_byte_ns = now;
    rs->response_headers = true;
    sharp_str_t st;
    uint32_t code = 0;
    if (sharp_headers_get_cstr(h, ":status", &st))
        for (size_t i = 0; i < st.len; i++) code = code * 10 + (uint32_t)(st.p[i] - '0');
    sharp_cluster_count_response(rs->cluster, shard(rs), code);
    if (code >= 500) atomic_fetch_add_explicit(&rs->host->rq_error, 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&rs->host->rq_success, 1, memory_order_relaxed);
    if (!cfg || !cfg->suppress_envoy_headers) {
        char t[20];
        size_t tl = sharp_u64_to_str((now - rs->upstream_start_ns) / 1000000, t);
        sharp_headers_set(h, "x-envoy-upstream-service-time", 29, t, tl);
    }
    response_header_ops(s, s->route, rs->wc, h);
    s->info.response_code_details = "via_upstream";
    if (end_stream) {
        rs->response_done = true;
        stop_timer(rs);
        sharp_histogram_record(shard(rs), rs->cluster->st.rq_time, (now - rs->upstream_start_ns) / 1000000);
        sharp_counter_inc(shard(rs), rs->cluster->st.rq_completed);
        release_upstream(rs);
    }
    sharp_stream_encode_headers(rs->f, h, end_stream);
}

static void up_on_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    router_state_t *rs = ctx;
    if (end_stream) {
        rs->response_done = true;
        stop_timer(rs);
        sharp_histogram_record(shard(rs), rs->cluster->st.rq_time,
                               (sharp_now_ns() - rs->upstream_start_ns) / 1000000);
        sharp_counter_inc(shard(rs), rs->cluster->st.rq_completed);
        release_upstream(rs);
    }
    sharp_stream_encode_data(rs->f, p, n, end_stream);
}

static void up_on_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    router_state_t *rs = ctx;
    (void)detail;
    rs->bound = false;
    uint32_t flag = why == SHARP_RESET_REMOTE           ? SHARP_RF_UPSTREAM_REMOTE_RESET
                    : why == SHARP_RESET_PROTOCOL_ERROR ? SHARP_RF_UPSTREAM_PROTOCOL_ERROR
                                                        : SHARP_RF_UPSTREAM_CONNECTION_TERMINATION;
    sharp_counter_inc(shard(rs), rs->cluster->st.rq_rx_reset);
    if (!rs->response_headers) {
        const char *body = why == SHARP_RESET_REMOTE
                               ? "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
                           : why == SHARP_RESET_PROTOCOL_ERROR
                               ? "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
                               : "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
        const char *details = why == SHARP_RESET_REMOTE ? "upstream_reset_before_response_started{remote_reset}"
                              : why == SHARP_RESET_PROTOCOL_ERROR
                                  ? "upstream_reset_before_response_started{protocol_error}"
                                  : "upstream_reset_before_response_started{connection_termination}";
        uint32_t code = why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503;
        charge_local_upstream_code(rs, code);
        upstream_failure_reply(rs, code, body, flag, details);
        return;
    }
    stop_timer(rs);
    release_upstream(rs);
    rs->f->stream->info.response_code_details = "upstream_reset_after_response_started";
    sharp_stream_reset(rs->f->stream, flag);
}

static void up_on_write_watermark(void *ctx, bool above)
{
    router_state_t *rs = ctx;
    sharp_stream_read_disable(rs->f->stream, above);
}

static const sharp_upstream_callbacks_t upstream_cbs = {
    .on_ready = up_on_ready,
    .on_pool_failure = up_on_pool_failure,
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_reset = up_on_reset,
    .on_write_watermark = up_on_write_watermark,
};

/* ---- stream end ---- */

static void router_on_downstream_watermark(sharp_filter_t *f, bool above)
{
    router_state_t *rs = f->state;
    if (!rs->bound || !rs->ureq.cx) return;
    sharp_upstream_cx_read_disable(rs->ureq.cx, above);
}

static void router_on_destroy(sharp_filter_t *f)
{
    router_state_t *rs = f->state;
    if (!rs->f) return; /* never started */
    if (rs->upstream_active && !rs->response_done && rs->cluster)
        sharp_counter_inc(shard(rs), rs->cluster->st.rq_tx_reset);
    release_upstream(rs);
    if (rs->timer) {
        rs->timer->rs = NULL;
        uv_timer_stop(&rs->timer->t);
        uv_close((uv_handle_t *)&rs->timer->t, free_timer);
        rs->timer = NULL;
    }
    sharp_sbuf_free(&rs->pending_body);
}

const sharp_filter_factory_t sharp_router_filter = {
    .name = "envoy.filters.http.router",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    .terminal = true,
    .create_config = router_create_config,
    .destroy_config = router_destroy_config,
    .state_size = sizeof(router_state_t),
    .decode_headers = router_decode_headers,
    .decode_data = router_decode_data,
    .decode_trailers = router_decode_trailers,
    .on_downstream_watermark = router_on_downstream_watermark,
    .on_destroy = router_on_destroy,
};
