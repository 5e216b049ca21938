/* router.c: envoy.filters.http.router, the terminal filter.
 *
 * Per stream: resolve the route's cluster, enforce the cluster's request
 * circuit breaker, pick a host with the worker's load balancer, get a pooled
 * connection, stream the request up and the response down with backpressure
 * both ways, and turn upstream failures into Envoy's local replies and
 * response flags (UF, UO, UH, NC, UT, UC, UR, UPE). Direct responses and
 * redirects are answered here too, as in Envoy.
 *
 * Retries follow the route's (or virtual host's) retry_policy and the
 * x-envoy-retry-on family of request headers: a try that fails in a way
 * retry_on names is ended and, after a fully jittered exponential back-off,
 * replayed on a host the load balancer picks again (avoiding earlier hosts
 * with the previous_hosts predicate), while the cluster's max_retries or
 * retry_budget breaker has room. The request body sent so far is kept for
 * the replay up to the stream's buffer limit; beyond it the request is not
 * retried. A response is never retried once its headers went downstream;
 * the gRPC conditions (retry_on, x-envoy-retry-grpc-on) see the grpc-status
 * of trailers-only responses.
 *
 * Timeouts are Envoy's: the route timeout, or a gRPC request's grpc-timeout
 * with max_grpc_timeout; a route max_stream_duration replaces both with a
 * limit on the whole stream (the connection manager's, taken over here).
 * The upstream request says what it may expect in
 * x-envoy-expected-rq-timeout-ms and, for gRPC, in grpc-timeout.
 *
 * A cluster with the shuffle-shard policy picks its host among the cells of
 * the customer's shard (upstream/shard_lb.h); the customer key comes from
 * the route's hash_policy (http/hash_policy.h), computed once per request.
 *
 * A route's priority picks the circuit breakers and connection pools of
 * its tries (Envoy's RoutingPriority). Its request_mirror_policies (or its
 * virtual host's) start fire-and-forget copies of the request to shadow
 * clusters, which get the body as it streams (upstream/shadow.h). */
#include "filters/router/router.h"
#include "runtime.h"
#include "net.h"
#include "http/filter.h"
#include "http/grpc.h"
#include "http/hcm_internal.h"
#include "http/metadata.h"
#include "http/route.h"
#include "http/stream.h"
#include "http/tracing.h"
#include "log.h"
#include "tls/conn.h"
#include "upstream/aggregate.h"
#include "upstream/diagnosis.h"
#include "upstream/locality_md.h"
#include "upstream/original_dst.h"
#include "upstream/outlier.h"
#include "upstream/pool.h"
#include "upstream/shadow.h"
#include "upstream/shard_lb.h"
#include "worker.h"

#include <stdio.h>
#include <strings.h>

typedef struct router_config {
    bool suppress_envoy_headers;
    bool start_child_span; /* a child span per try (the tracer's that has them: SkyWalking) */
} router_config_t;

typedef struct router_timer {
    uv_timer_t t;
    struct router_state *rs; /* NULL once the stream is gone */
} router_timer_t;

#define ROUTER_MAX_TRIED 8 /* hosts remembered for the previous_hosts predicate */
#define ROUTER_MAX_CODES 8 /* x-envoy-retriable-status-codes entries */

typedef struct router_state {
    sharp_filter_t *f;
    /* the cluster of the current try and its worker state: the route's
     * cluster, or for an aggregate cluster the member the try goes to */
    sharp_cluster_t *cluster;
    sharp_cluster_local_t *cl;
    /* an aggregate route cluster (upstream/aggregate.h), NULL otherwise:
     * the request's retries, retry breaker, timeout and response codes
     * count there, each try's connection, breakers and host results in
     * the member (Envoy's router and connection pools); agg_level is the
     * member's level the try chose */
    sharp_cluster_t *agg;
    uint32_t agg_level;
    sharp_host_t *host;                 /* host of the current try */
    const sharp_weighted_cluster_t *wc; /* the weighted cluster picked, if any */
    sharp_upstream_request_t ureq;
    /* deadlines (worker.h): most requests start and stop them, few let them fire */
    sharp_deadline_t timer;          /* route timeout */
    sharp_deadline_t try_timer;      /* per-try timeout */
    sharp_deadline_t duration_timer; /* the cluster's max_stream_duration, per try */
    router_timer_t *backoff_timer; /* retry back-off */
    router_timer_t *route_duration_timer; /* the route's max_stream_duration, for the stream */
    uint64_t request_end_ns;       /* when the downstream request ended (0: not yet) */
    bool grpc;                     /* a gRPC request */
    bool grpc_timeout_rewrite;     /* the upstream grpc-timeout carries the router's timeout */
    bool grpc_result_deferred;     /* the host's success or error waits for the trailers */
    uint64_t timeout_ms, per_try_timeout_ms;
    uint64_t upstream_start_ns;
    sharp_sbuf_t pending_body; /* request body not yet sent on this try */
    sharp_sbuf_t replay;       /* request body sent on this try, kept for a retry */
    sharp_headers_t req_trailers; /* the request's trailers, kept for every try */
    bool has_req_trailers;
    bool request_end_seen;     /* the downstream request has ended */
    /* The router's reasons to pause the downstream's reads, which it holds
     * as one source (sharp_stream_decoder_watermark, `dec_paused` what it
     * said last): the body waiting for a connection above the buffer
     * limit, and the try's upstream write buffer above its watermark. */
    bool pending_above, write_above, dec_paused;
    bool upstream_active;   /* a try's acquire issued and not yet released */
    bool bound;             /* a connection is bound */
    bool response_headers;  /* upstream response headers went downstream */
    bool response_done;
    bool counted_active;
    bool upgrade;           /* an accepted upgrade request (WebSocket, CONNECT) */
    /* a CONNECT the route terminates (connect_config): each try has a pool
     * of its own speaking raw TCP to its host (tcp_client.c, as the TCP
     * proxy's), retired when the try ends; the 200 is the router's */
    bool terminate;
    sharp_pool_t *tcp_pool;
    /* retries */
    const sharp_retry_policy_t *policy; /* NULL: none configured */
    uint32_t retry_on;                  /* SHARP_RETRY_* of the policy, x-envoy-retry-on and -grpc-on */
    uint32_t retries_left;
    uint32_t attempt;                   /* 1 for the first try */
    bool can_replay;                    /* retries are on and the body sent so far is kept */
    bool try_sent_body;                 /* this try sent request body bytes */
    uint8_t refused_resent;             /* times sent again after a refusal above an unknown limit */
    bool retry_slot;                    /* holds one of the cluster's retry slots */
    bool backing_off;
    bool include_attempt_count;         /* x-envoy-attempt-count on upstream requests */
    uint32_t extra_codes[ROUTER_MAX_CODES], nextra_codes;
    sharp_host_t *tried[ROUTER_MAX_TRIED];
    uint32_t ntried;
    sharp_sbuf_t shard_key; /* the customer key of a shuffle-shard cluster */
    /* subset load balancing (upstream/subset.h): the request's match
     * criteria, decided at the first pick as Envoy's metadataMatchCriteria
     * (the route's or weighted cluster's, the stream's "envoy.lb" dynamic
     * metadata over them; only a merge with dynamic metadata is built, in
     * subset_crit, else crit points into the route) */
    bool crit_ready;
    const uint8_t *crit;
    size_t crit_len;
    sharp_sbuf_t subset_crit;
    sharp_priority_t priority; /* the route's: its breakers and pools */
    /* the access log's view of the last try's connection (Envoy's
     * UpstreamInfo, new for every try): its TLS engine, referenced, and
     * the transport failure reason of a failed connect */
    sharp_tls_conn_t *upstream_tls;
    char *failure_reason;
    /* the last try's host's diagnosis (%UPSTREAM_HOST_DIAGNOSIS%), a
     * reference taken when the try starts and renewed when it ends */
    sharp_diag_text_t *host_diag;
    sharp_shadow_t **shadows;  /* one slot per mirror policy; set while that shadow streams the body */
    uint32_t nshadows;
    /* start_child_span: the try's span (owned by the stream's segment),
     * the try's protocol and response status for its tags */
    sharp_span_t *child;
    const char *try_protocol;
    const char *try_flags; /* the try's reset or failure, as a response flag */
    uint32_t try_code;
    bool try_complete;     /* its response ended */
} router_state_t;

/* The route's cluster: where the request's own stats and retry breaker
 * are (the aggregate, when it is one). */
static inline sharp_cluster_t *route_cluster(const struct router_state *rs)
{
    return rs->agg ? rs->agg : rs->cluster;
}

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
        fd = protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "start_child_span");
        if (fd && fd->type == PROTOBUF_C_TYPE_BOOL)
            c->start_child_span = *(const protobuf_c_boolean *)((const char *)msg + fd->offset);
    }
    /* child spans are SkyWalking's Exit spans; the Zipkin and
     * OpenTelemetry spans have none in SHARP */
    const sharp_tracing_config_t *tc = ctx ? ctx->tracing : NULL;
    if (c->start_child_span && tc && (tc->zipkin || tc->otel || tc->datadog)) {
        snprintf(err, errlen, "start_child_span: child spans are not supported by SHARP with %s (only with "
                 "envoy.tracers.skywalking)", tc->zipkin ? "envoy.tracers.zipkin"
                 : tc->otel ? "envoy.tracers.opentelemetry" : "envoy.tracers.datadog");
        free(c);
        return NULL;
    }
    return c;
}

static void router_destroy_config(void *c)
{
    free(c);
}

/* ---- helpers ---- */

static bool suppress_headers(const router_state_t *rs)
{
    const router_config_t *cfg = rs->f->config;
    return cfg && cfg->suppress_envoy_headers;
}

static router_timer_t *timer_get(router_state_t *rs, router_timer_t **slot)
{
    if (!*slot) {
        *slot = sharp_calloc(1, sizeof **slot);
        uv_timer_init(&sharp_stream_worker(rs->f->stream)->loop, &(*slot)->t);
        (*slot)->rs = rs;
    }
    return *slot;
}

static void timer_stop(router_timer_t *t)
{
    if (t) uv_timer_stop(&t->t);
}

static void deadline_start(router_state_t *rs, sharp_deadline_t *d, void (*cb)(sharp_deadline_t *d), uint64_t ms)
{
    sharp_deadline_start(sharp_stream_worker(rs->f->stream), d, cb, ms);
}

static void free_timer(uv_handle_t *h)
{
    free(sharp_container_of((uv_timer_t *)h, router_timer_t, t));
}

static void timer_free(router_timer_t **slot)
{
    if (!*slot) return;
    (*slot)->rs = NULL;
    uv_timer_stop(&(*slot)->t);
    uv_close((uv_handle_t *)&(*slot)->t, free_timer);
    *slot = NULL;
}

/* Ends the current try: withdraws or unbinds its upstream request (a
 * connection whose response was not complete is closed), gives back its
 * request and retry slots. */
/* The try's host's diagnosis as it is now, for the access log. Costs one
 * atomic load when the host has none. */
static void capture_diagnosis(router_state_t *rs)
{
    sharp_diag_text_t *t = sharp_diag_text_get(rs->host);
    if (!t && !rs->host_diag) return;
    sharp_diag_text_put(rs->host_diag);
    rs->host_diag = t;
    rs->f->stream->info.upstream_host_diagnosis = t ? t->s : NULL;
}

/* The try's latency: to the response headers, or to a timeout or the
 * stream's end before them (`answered` false; the time waited, a lower
 * bound, so a host that hangs shows in the latency monitor's percentile).
 * An answer also counts in the host's diagnosis, with whether it is a 5xx. */
static void record_latency(router_state_t *rs, uint64_t now, bool answered, bool is_5xx)
{
    uint64_t us = (now - rs->upstream_start_ns) / 1000;
    sharp_outlier_put_latency(rs->cluster, rs->host, us, answered);
    if (answered) sharp_diag_put_answer(&rs->host->diag, us, is_5xx);
}

/* The try's child span ends (Envoy's UpstreamRequest going away). */
static void child_finish(router_state_t *rs)
{
    if (!rs->child) return;
    sharp_span_t *c = rs->child;
    rs->child = NULL;
    sharp_tracing_child_finish(rs->f->stream, c, rs->try_protocol, rs->host ? rs->host->address : NULL,
                               rs->try_code, rs->try_flags, !rs->try_complete && !rs->try_flags);
}

/* Tells the connection manager whether the router holds the
 * downstream's read pause, when that changed. */
static void update_dec_pause(router_state_t *rs)
{
    bool pause = rs->pending_above || rs->write_above;
    if (pause == rs->dec_paused) return;
    rs->dec_paused = pause;
    sharp_stream_decoder_watermark(rs->f, pause);
}

static void release_upstream(router_state_t *rs)
{
    child_finish(rs);
    sharp_deadline_stop(&rs->try_timer);
    sharp_deadline_stop(&rs->duration_timer);
    if (rs->retry_slot) {
        rs->retry_slot = false;
        sharp_cluster_retry_release(route_cluster(rs), rs->priority);
    }
    if (!rs->upstream_active) return;
    capture_diagnosis(rs);
    rs->upstream_active = false;
    rs->bound = false;
    /* the try's write buffer goes with it (the next try, if any, lets the
     * pause go: update_dec_pause in on_backoff) */
    rs->write_above = false;
    sharp_pool_cancel(&rs->ureq);
    if (rs->tcp_pool) {
        /* it goes once its connection has sent what it still holds */
        sharp_pool_retire(rs->tcp_pool);
        rs->tcp_pool = NULL;
    }
    if (rs->counted_active) {
        rs->counted_active = false;
        sharp_gauge_add(shard(rs), rs->cluster->st.rq_active, -1);
        atomic_fetch_sub_explicit(&rs->host->active_rq, 1, memory_order_relaxed);
        atomic_fetch_sub_explicit(&rs->cluster->open[rs->priority].rq_open, 1, memory_order_relaxed);
    }
}

/* A try starts with no upstream connection in the stream info (Envoy
 * gives every UpstreamRequest a new UpstreamInfo): the previous try's TLS
 * details and failure reason go. */
static void clear_upstream_info(router_state_t *rs)
{
    sharp_stream_info_t *si = &rs->f->stream->info;
    si->upstream_tls = NULL;
    si->upstream_transport_failure_reason = NULL;
    si->upstream_host_diagnosis = NULL;
    sharp_diag_text_put(rs->host_diag);
    rs->host_diag = NULL;
    if (rs->upstream_tls) {
        sharp_tls_conn_free(rs->upstream_tls);
        rs->upstream_tls = NULL;
    }
    if (rs->failure_reason) {
        free(rs->failure_reason);
        rs->failure_reason = NULL;
    }
}

/* Envoy counts a locally generated upstream failure as that status in the
 * cluster's stats, so 5xx alarms see connection failures and timeouts. */
static void charge_local_upstream_code(router_state_t *rs, uint32_t code)
{
    sharp_cluster_count_response(route_cluster(rs), shard(rs), code);
    atomic_fetch_add_explicit(&rs->host->rq_error, 1, memory_order_relaxed);
}

static void upstream_failure_reply(router_state_t *rs, uint32_t code, const char *body,
                                   uint32_t flag, const char *details)
{
    /* a retry waiting out its back-off has not been attempted yet */
    uint32_t attempts = rs->backing_off && rs->attempt ? rs->attempt - 1 : rs->attempt;
    sharp_deadline_stop(&rs->timer);
    timer_stop(rs->backoff_timer);
    rs->backing_off = false;
    release_upstream(rs);
    sharp_stream_t *s = rs->f->stream;
    /* Envoy's onUpstreamAbort: x-envoy-overloaded, then the router's
     * modify_headers_, which adds the attempt count as on upstream responses */
    const char *hdrs[5] = {NULL};
    size_t nh = 0;
    char n[16];
    if ((flag & SHARP_RF_UPSTREAM_OVERFLOW) && !suppress_headers(rs)) {
        hdrs[nh++] = "x-envoy-overloaded";
        hdrs[nh++] = "true";
    }
    if (s->vhost && s->vhost->include_attempt_count_in_response && attempts) {
        n[sharp_u64_to_str(attempts, n)] = '\0';
        hdrs[nh++] = "x-envoy-attempt-count";
        hdrs[nh++] = n;
    }
    sharp_stream_send_local_reply_ex(rs->f, code, body, flag, details, hdrs);
}

static void overflow_reply(router_state_t *rs)
{
    upstream_failure_reply(rs, 503,
                           "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                           SHARP_RF_UPSTREAM_OVERFLOW, "upstream_reset_before_response_started{overflow}");
}

/* ---- retries ---- */

typedef enum {
    RETRY_NO,
    RETRY_YES,
    RETRY_NO_LIMIT,    /* retriable, but num_retries are used up (URX) */
    RETRY_NO_OVERFLOW, /* retriable, but the cluster's retry breaker is full (UO) */
} retry_status_t;

/* How a try failed without a response. */
typedef enum {
    FAIL_CONNECT,  /* no connection (refused, connect timeout) */
    FAIL_RESET,    /* reset or closed before the response headers */
    FAIL_REFUSED,  /* HTTP/2: the upstream refused the stream (REFUSED_STREAM, GOAWAY) */
    FAIL_TIMEOUT,  /* per-try timeout */
} try_failure_t;

static bool code_listed(const router_state_t *rs, uint32_t code)
{
    const sharp_retry_policy_t *p = rs->policy;
    for (uint32_t i = 0; p && i < p->nretriable_status_codes; i++)
        if (p->retriable_status_codes[i] == code) return true;
    for (uint32_t i = 0; i < rs->nextra_codes; i++)
        if (rs->extra_codes[i] == code) return true;
    return false;
}

/* Envoy's retry conditions on a response. */
static bool response_retriable(const router_state_t *rs, uint32_t code, const sharp_headers_t *h)
{
    uint32_t on = rs->retry_on;
    if ((on & SHARP_RETRY_5XX) && code >= 500 && code <= 599) return true;
    if ((on & SHARP_RETRY_GATEWAY_ERROR) && code >= 502 && code <= 504) return true;
    if ((on & SHARP_RETRY_RETRIABLE_4XX) && code == 409) return true;
    if ((on & SHARP_RETRY_RETRIABLE_STATUS_CODES) && code_listed(rs, code)) return true;
    /* Envoy reads the gRPC conditions from the response headers only: a
     * trailers-only response; a status in trailers comes after the
     * response went downstream */
    int64_t gs;
    if ((on & SHARP_RETRY_GRPC_ANY) && sharp_grpc_response_status(NULL, h, 0, &gs) &&
        sharp_retry_grpc_status_matches(on, gs))
        return true;
    sharp_str_t v;
    if ((on & SHARP_RETRY_ENVOY_RATELIMITED) && sharp_headers_get_cstr(h, "x-envoy-ratelimited", &v)) return true;
    if ((on & SHARP_RETRY_RETRIABLE_HEADERS) && rs->policy) {
        for (uint32_t i = 0; i < rs->policy->nretriable_headers; i++)
            if (sharp_header_matcher_match(&rs->policy->retriable_headers[i], h)) return true;
    }
    return false;
}

/* Envoy's retry conditions on a try that got no response. */
static bool failure_retriable(const router_state_t *rs, try_failure_t why)
{
    uint32_t on = rs->retry_on;
    if (on & (SHARP_RETRY_5XX | SHARP_RETRY_GATEWAY_ERROR | SHARP_RETRY_RESET)) return true;
    if (why == FAIL_CONNECT && (on & (SHARP_RETRY_CONNECT_FAILURE | SHARP_RETRY_RESET_BEFORE_REQUEST))) return true;
    if (why == FAIL_REFUSED && (on & SHARP_RETRY_REFUSED_STREAM)) return true;
    return false;
}

/* Decides whether a retriable outcome is retried, counting why not. On
 * RETRY_YES the retry holds one of the cluster's retry slots. */
static retry_status_t should_retry(router_state_t *rs, bool retriable)
{
    if (!retriable || !rs->can_replay) return RETRY_NO;
    if (rs->retries_left == 0) {
        sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_retry_limit_exceeded);
        rs->f->stream->info.response_flags |= SHARP_RF_UPSTREAM_RETRY_LIMIT_EXCEEDED;
        return RETRY_NO_LIMIT;
    }
    if (!sharp_cluster_retry_acquire(route_cluster(rs), rs->priority)) {
        sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_retry_overflow);
        rs->f->stream->info.response_flags |= SHARP_RF_UPSTREAM_OVERFLOW;
        return RETRY_NO_OVERFLOW;
    }
    /* Envoy's runtime switch for every retry: upstream.use_retry, a
     * percentage (default 100) */
    if (!sharp_runtime_percent_enabled("upstream.use_retry", 100,
                                       sharp_worker_random(sharp_stream_worker(rs->f->stream)))) {
        sharp_cluster_retry_release(route_cluster(rs), rs->priority);
        return RETRY_NO;
    }
    return RETRY_YES;
}

/* Envoy's fully jittered exponential back-off: the n-th retry waits a
 * random time below (2^n - 1) * base, and never more than max. */
static uint64_t backoff_ms(router_state_t *rs)
{
    uint64_t base = rs->policy ? rs->policy->backoff_base_ms : 25;
    uint64_t max = rs->policy ? rs->policy->backoff_max_ms : 250;
    if (!rs->policy || rs->policy->backoff_from_runtime) {
        /* Envoy's RetryStateImpl: without retry_back_off the base comes
         * from the runtime (at least 1 ms here: a zero base would mean no
         * back-off at all) and the max is ten times it */
        base = SHARP_MAX(sharp_runtime_get_u64("upstream.base_retry_backoff_ms", 25), 1);
        max = base > UINT64_MAX / 10 ? UINT64_MAX : base * 10;
    }
    /* N, the retry about to be made (attempt counts the first try too):
     * Envoy's range is [0, (2^N - 1) * base), so the first retry waits
     * less than base */
    uint32_t n = rs->attempt - 1 < 32 ? rs->attempt - 1 : 32;
    uint64_t steps = (1ull << n) - 1;
    uint64_t cap = steps && base > UINT64_MAX / steps ? UINT64_MAX : steps * base;
    if (cap == 0) return 0;
    uint64_t d = sharp_worker_random(sharp_stream_worker(rs->f->stream)) % cap;
    return d < max ? d : max;
}

static void start_try(router_state_t *rs);

static void on_backoff(uv_timer_t *t)
{
    router_timer_t *rt = sharp_container_of(t, router_timer_t, t);
    router_state_t *rs = rt->rs;
    if (!rs || !rs->backing_off) return;
    rs->backing_off = false;
    start_try(rs);
    update_dec_pause(rs);
}

/* The body the failed try sent (kept for a replay) goes before what it had
 * not sent yet: the next try sends it all. */
static void replay_into_pending(router_state_t *rs)
{
    if (!rs->replay.len) return;
    sharp_sbuf_t b = {0};
    sharp_sbuf_append(&b, rs->replay.data, rs->replay.len);
    if (rs->pending_body.len) sharp_sbuf_append(&b, rs->pending_body.data, rs->pending_body.len);
    sharp_sbuf_free(&rs->pending_body);
    sharp_sbuf_free(&rs->replay);
    rs->pending_body = b;
}

/* The current try failed in a retriable way and should_retry said yes: end
 * it and start the next one after the back-off. The next try replays the
 * request body sent so far. */
static void schedule_retry(router_state_t *rs)
{
    sharp_stream_t *s = rs->f->stream;
    release_upstream(rs);   /* gives back the slot of the try that failed, if it was a retry */
    rs->retry_slot = true; /* taken by should_retry for the next try */
    rs->retries_left--;
    rs->attempt++;
    sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_retry);
    sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_retry_backoff_exponential);
    replay_into_pending(rs);
    rs->backing_off = true;
    uint64_t wait = backoff_ms(rs);
    sharp_debug(router, "[C%llu][S%llu] performing retry %u of cluster '%s' after %llu ms back-off (%u left)",
                s->conn_id, s->id, rs->attempt - 1, rs->cluster->name, (unsigned long long)wait, rs->retries_left);
    uv_timer_start(&timer_get(rs, &rs->backoff_timer)->t, on_backoff, wait, 0);
}

/* A stream the HTTP/2 upstream refused because it was sent before the
 * peer's first SETTINGS, above a SETTINGS_MAX_CONCURRENT_STREAMS SHARP
 * could not know yet (a new connection takes every waiting request before
 * it hears the limit, as Envoy's does): REFUSED_STREAM says the request
 * was not processed (RFC 9113, section 8.7), so it goes again at once,
 * on whatever connection the pool now has room on, whatever the retry
 * policy, and counts no retry; up to eight times (the pool may give it
 * another new connection that has not heard its limit either). Envoy answers 503 there unless the
 * route retries refused streams, which its users meet as intermittent
 * 503s under load. Only a request whose body this try sent is still at
 * hand (kept for retries, or none sent). */
static bool resend_refused(router_state_t *rs)
{
    if (!rs->ureq.refused_unknown_limit || rs->refused_resent >= 8 || rs->response_headers || rs->upgrade ||
        rs->terminate || (rs->try_sent_body && !rs->can_replay))
        return false;
    rs->refused_resent++;
    sharp_stream_t *s = rs->f->stream;
    sharp_debug(router, "[C%llu][S%llu] refused above the upstream's stream limit before its SETTINGS: sent again",
                s->conn_id, s->id);
    release_upstream(rs);
    replay_into_pending(rs);
    rs->backing_off = true;
    uv_timer_start(&timer_get(rs, &rs->backoff_timer)->t, on_backoff, 0, 0);
    return true;
}

static void on_timeout(sharp_deadline_t *d)
{
    router_state_t *rs = sharp_container_of(d, router_state_t, timer);
    if (rs->response_done) return;
    sharp_debug(router, "[C%llu][S%llu] upstream timeout (%llu ms)", rs->f->stream->conn_id, rs->f->stream->id,
                (unsigned long long)rs->timeout_ms);
    sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_timeout);
    if (rs->upstream_active) {
        atomic_fetch_add_explicit(&rs->host->rq_timeout, 1, memory_order_relaxed);
        /* as Envoy: only a try still waiting for its response headers */
        if (!rs->response_headers) {
            record_latency(rs, sharp_now_ns(), false, false);
            sharp_outlier_put_local(rs->cluster, rs->host, SHARP_OUTLIER_LOCAL_TIMEOUT);
        }
    }
    if (!rs->response_headers) {
        if (rs->upstream_active) charge_local_upstream_code(rs, 504);
        upstream_failure_reply(rs, 504, "upstream request timeout",
                               SHARP_RF_UPSTREAM_REQUEST_TIMEOUT, "upstream_response_timeout");
    } else {
        release_upstream(rs);
        sharp_stream_reset(rs->f->stream, SHARP_RF_UPSTREAM_REQUEST_TIMEOUT);
    }
}

/* The route timeout runs from the end of the downstream request and covers
 * every try and back-off, as in Envoy. */
static void start_timer(router_state_t *rs)
{
    if (!rs->request_end_ns) rs->request_end_ns = sharp_now_ns();
    if (!rs->timeout_ms || rs->response_done) return;
    /* an upgrade's request never ends: its timeout runs from the request
     * headers to the upstream's answer and never covers the tunnel */
    if (rs->upgrade && rs->response_headers) return;
    deadline_start(rs, &rs->timer, on_timeout, rs->timeout_ms);
}

static void on_per_try_timeout(sharp_deadline_t *d)
{
    router_state_t *rs = sharp_container_of(d, router_state_t, try_timer);
    if (!rs->upstream_active || rs->response_headers) return;
    sharp_debug(router, "[C%llu][S%llu] upstream per try timeout (%llu ms, host %s)", rs->f->stream->conn_id,
                rs->f->stream->id, (unsigned long long)rs->per_try_timeout_ms, rs->host->address);
    sharp_counter_inc(shard(rs), rs->cluster->st.upstream_rq_per_try_timeout);
    atomic_fetch_add_explicit(&rs->host->rq_timeout, 1, memory_order_relaxed);
    record_latency(rs, sharp_now_ns(), false, false);
    sharp_outlier_put_local(rs->cluster, rs->host, SHARP_OUTLIER_LOCAL_TIMEOUT);
    charge_local_upstream_code(rs, 504);
    if (should_retry(rs, failure_retriable(rs, FAIL_TIMEOUT)) == RETRY_YES) {
        schedule_retry(rs);
        return;
    }
    upstream_failure_reply(rs, 504, "upstream request timeout", SHARP_RF_UPSTREAM_REQUEST_TIMEOUT,
                           "upstream_per_try_timeout");
}

/* Envoy's onStreamMaxDurationReached: the cluster's
 * common_http_protocol_options.max_stream_duration ran out on this try. The
 * upstream stream is reset and retried as a reset (retry_on 5xx,
 * gateway-error or reset); otherwise 408 while the request is still
 * arriving, else 504, or a reset once the response has started. */
static void on_max_stream_duration(sharp_deadline_t *d)
{
    router_state_t *rs = sharp_container_of(d, router_state_t, duration_timer);
    if (!rs->upstream_active || rs->response_done) return;
    sharp_stream_t *s = rs->f->stream;
    sharp_debug(router, "[C%llu][S%llu] upstream max stream duration reached (host %s)", s->conn_id, s->id,
                rs->host->address);
    sharp_counter_inc(shard(rs), rs->cluster->st.rq_max_duration_reached);
    if (!rs->response_headers && should_retry(rs, failure_retriable(rs, FAIL_RESET)) == RETRY_YES) {
        atomic_fetch_add_explicit(&rs->host->rq_error, 1, memory_order_relaxed);
        schedule_retry(rs);
        return;
    }
    if (rs->response_headers) {
        sharp_deadline_stop(&rs->timer);
        release_upstream(rs);
        s->info.response_code_details = "upstream_max_stream_duration_reached";
        sharp_stream_reset(s, SHARP_RF_UPSTREAM_MAX_STREAM_DURATION_REACHED);
        return;
    }
    upstream_failure_reply(rs, rs->request_end_seen ? 504 : 408, "upstream max stream duration reached",
                           SHARP_RF_UPSTREAM_MAX_STREAM_DURATION_REACHED, "upstream_max_stream_duration_reached");
}

/* The per-try timeout runs from when the whole request has been handed to
 * the upstream connection (Envoy starts it when the request is complete and
 * the connection is ready). */
static void start_try_timer(router_state_t *rs)
{
    if (!rs->per_try_timeout_ms || !rs->upstream_active || !rs->bound || rs->response_headers || rs->upgrade) return;
    deadline_start(rs, &rs->try_timer, on_per_try_timeout, rs->per_try_timeout_ms);
}

static void response_header_ops(sharp_stream_t *s, const sharp_route_t *r,
                                const sharp_weighted_cluster_t *wc, sharp_headers_t *h)
{
    sharp_route_apply_response_headers(s->routes, s->vhost, r, wc, h, &s->info);
}

/* Envoy sends direct responses and redirects as local replies: the route's
 * response headers apply, and so does local_reply_config. */
static void send_direct_response(sharp_filter_t *f, const sharp_route_t *r)
{
    sharp_stream_t *s = f->stream;
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_direct_response);
    sharp_stream_send_local_reply_body(f, r->direct_status, r->direct_body, r->direct_body ? r->direct_body_len : 0,
                                       0, "direct_response", NULL);
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
    if (rd->to_https_as_is) { /* require_tls */
        sharp_sbuf_puts(&loc, "https://");
        sharp_sbuf_append(&loc, auth.p, auth.len);
        sharp_sbuf_append(&loc, path.p, path.len);
        goto send;
    }
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
    } else if (rd->regex_rewrite) {
        size_t n, outlen;
        char *np = sharp_regex_rewrite_path(rd->regex_rewrite, rd->regex_rewrite_sub, path, &n, &outlen);
        if (np) sharp_sbuf_append(&loc, np, outlen);
        else sharp_sbuf_append(&loc, path.p, plen);
        free(np);
    } else if (rd->prefix_rewrite && r->match_kind == SHARP_ROUTE_MATCH_PREFIX &&
               plen >= r->path_len) {
        sharp_sbuf_puts(&loc, rd->prefix_rewrite);
        sharp_sbuf_append(&loc, path.p + r->path_len, plen - r->path_len);
    } else {
        sharp_sbuf_append(&loc, path.p, plen);
    }
    if (q && !rd->strip_query && !(rd->path && strchr(rd->path, '?')))
        sharp_sbuf_append(&loc, q, path.len - plen);
send:
    sharp_sbuf_append(&loc, "", 1); /* NUL-terminated for the header list */
    const char *const hdrs[] = {"location", loc.data, NULL};
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_redirect);
    sharp_stream_send_local_reply_body(f, rd->code ? rd->code : 301, NULL, 0, 0, "direct_response", hdrs);
    sharp_sbuf_free(&loc);
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

/* Envoy's FilterUtility::setTimeoutHeaders: the timeout the upstream can
 * expect, the per-try timeout when it is the tighter one, less what has
 * elapsed since the request ended (at least 1 ms while a timeout runs), in
 * x-envoy-expected-rq-timeout-ms and, for a gRPC request on a route with
 * max_grpc_timeout, in grpc-timeout. Set for the first try and again for
 * every retry. */
static void set_timeout_headers(router_state_t *rs, sharp_headers_t *h)
{
    uint64_t global = rs->timeout_ms, expected = rs->per_try_timeout_ms;
    if (!expected) expected = global;
    if (!expected) return;
    if (global) {
        uint64_t elapsed = rs->request_end_ns ? (sharp_now_ns() - rs->request_end_ns) / 1000000 : 0;
        expected = elapsed >= global ? 1 : SHARP_MIN(expected, global - elapsed);
    }
    char t[20];
    if (!suppress_headers(rs)) {
        size_t tl = sharp_u64_to_str(expected, t);
        sharp_headers_set(h, "x-envoy-expected-rq-timeout-ms", 30, t, tl);
    }
    if (rs->grpc && rs->grpc_timeout_rewrite) {
        size_t tl = sharp_grpc_timeout_format(expected, t);
        sharp_headers_set(h, "grpc-timeout", 12, t, tl);
    }
}

/* The route's max_stream_duration ran out: what the connection manager
 * does for its own (Envoy's onStreamMaxDurationReached), with
 * DEADLINE_EXCEEDED as a gRPC request's status. */
static void on_route_duration(uv_timer_t *t)
{
    router_timer_t *rt = sharp_container_of(t, router_timer_t, t);
    router_state_t *rs = rt->rs;
    if (!rs) return;
    sharp_stream_t *s = rs->f->stream;
    if (s->destroyed || s->finish_scheduled) return;
    sharp_debug(router, "[C%llu][S%llu] stream max duration time reached (route)", s->conn_id, s->id);
    sharp_counter_inc(shard(rs), s->hcm->st.rq_max_duration_reached);
    if (!s->response_started && s->nfilters) {
        static const char *const deadline[] = {"grpc-status", "4", NULL};
        sharp_stream_send_local_reply_ex(&s->filters[0], s->request_complete ? 504 : 408,
                                         "downstream duration timeout", 0, "max_duration_timeout",
                                         rs->grpc ? deadline : NULL);
    } else {
        s->info.response_code_details = "max_duration_timeout";
        sharp_stream_reset(s, 0);
    }
}

/* Envoy's ActiveStream::refreshDurationTimeout once the route is known:
 * a route with max_stream_duration replaces the connection manager's limit
 * (or lifts it), counting from the stream's start, and a gRPC request's
 * grpc-timeout to the upstream says the limit. */
static void apply_route_duration(router_state_t *rs, const sharp_route_t *r, sharp_headers_t *h, bool has_grpc,
                                 uint64_t grpc_ms)
{
    sharp_stream_t *s = rs->f->stream;
    if (!r->has_msd) return;
    uint64_t ms = 0;
    sharp_msd_t how = sharp_route_stream_duration(r, has_grpc, grpc_ms, &ms);
    if (how == SHARP_MSD_HCM) {
        ms = s->hcm->max_stream_duration_ms;
        how = ms ? SHARP_MSD_SET : SHARP_MSD_NONE;
    }
    if (how == SHARP_MSD_NONE) {
        /* Envoy drops grpc-timeout only when it had a timer to disable */
        if (s->hcm->max_stream_duration_ms && rs->grpc) sharp_headers_remove_cstr(h, "grpc-timeout");
        uv_timer_stop(&s->duration_timer);
        return;
    }
    if (rs->grpc) {
        char t[12];
        size_t tl = sharp_grpc_timeout_format(ms, t);
        sharp_headers_set(h, "grpc-timeout", 12, t, tl);
    }
    uint64_t used = (sharp_now_ns() - s->info.start_ns) / 1000000;
    uv_timer_stop(&s->duration_timer);
    uv_timer_start(&timer_get(rs, &rs->route_duration_timer)->t, on_route_duration, ms > used ? ms - used : 0, 0);
}

/* ---- decode ---- */

/* Picks the host of a try. With the previous_hosts predicate a retry asks
 * the load balancer again, up to host_selection_retry_max_attempts more
 * times, for a host no earlier try used; failing that it takes the last
 * pick, as Envoy does. */
/* The stream's override host (a filter's setUpstreamOverrideHost, as the
 * stateful session sets it) for the first try: the host of the try's
 * cluster with that address when its health is in the default
 * override_host_status (UNKNOWN, HEALTHY, DEGRADED: no failed active
 * health check, outlier ejection, unhealthy EDS status or removal), NULL
 * otherwise. A retry never uses it (Envoy's overrideHostToSelect is empty
 * for retries). *refused says strict refuses the request then. */
static sharp_host_t *override_host(router_state_t *rs, bool *refused)
{
    sharp_stream_t *s = rs->f->stream;
    *refused = false;
    if (!s->override_host[0] || rs->attempt != 1) return NULL;
    const sharp_hostset_t *set = rs->cl->set;
    for (uint32_t i = 0; set && i < set->nhosts; i++) {
        sharp_host_t *h = set->hosts[i];
        if (strcmp(h->address, s->override_host) != 0) continue;
        if (sharp_host_healthy(h)) return h;
        break;
    }
    *refused = s->override_host_strict;
    return NULL;
}

static sharp_host_t *choose_host(router_state_t *rs)
{
    bool refused;
    sharp_host_t *oh = override_host(rs, &refused);
    if (oh || refused) return oh;
    if (rs->cluster->odst) {
        /* the cluster's own balancer: the original destination, from the
         * request's headers as they are now or the connection */
        sharp_stream_t *s = rs->f->stream;
        return sharp_odst_choose(rs->cl, shard(rs), &s->req, sharp_stream_restored_local(s));
    }
    if (rs->cluster->shuffle_shard) {
        /* the shard balancer applies previous_hosts itself, within the shard */
        bool ph = rs->policy && rs->policy->previous_hosts;
        return sharp_shard_lb_choose(rs->cluster->shuffle_shard, &rs->cl->lb,
                                     rs->shard_key.data ? rs->shard_key.data : "", rs->shard_key.len,
                                     ph ? rs->tried : NULL, ph ? rs->ntried : 0, shard(rs));
    }
    if (rs->cl->subsets.plan && !rs->crit_ready) {
        sharp_stream_t *s = rs->f->stream;
        const sharp_lbmeta_t *base = rs->wc && rs->wc->metadata_match ? rs->wc->metadata_match
                                     : s->route                       ? s->route->metadata_match
                                                                      : NULL;
        const sharp_md_value_t *dyn = sharp_dynamic_metadata_ns(s->info.dynamic_metadata, "envoy.lb", 8);
        if (dyn) {
            sharp_lbmeta_merge_dynamic(base, dyn, &rs->subset_crit);
            rs->crit = (const uint8_t *)rs->subset_crit.data;
            rs->crit_len = rs->subset_crit.len;
        } else if (base) {
            rs->crit = base->b;
            rs->crit_len = base->len;
        }
        rs->crit_ready = true;
    }
    uint32_t picks = 1;
    if (rs->policy && rs->policy->previous_hosts && rs->ntried) picks += rs->policy->host_selection_max_attempts;
    sharp_host_t *h = NULL;
    for (uint32_t i = 0; i < picks; i++) {
        /* an aggregate's member: the level the aggregate chose, unless the
         * member balances by subsets (its subset balancer chooses the level) */
        if (rs->agg && !rs->cl->subsets.plan) h = sharp_lb_choose_level(&rs->cl->lb, rs->agg_level);
        else h = sharp_cluster_choose(rs->cl, rs->crit_len > 0, rs->crit, rs->crit_len);
        if (!h) return NULL;
        if (!(rs->policy && rs->policy->previous_hosts) || !sharp_host_listed(h, rs->tried, rs->ntried)) break;
    }
    return h;
}

/* The customer key of a request to a shuffle-shard cluster, from the
 * route's hash_policy (http/hash_policy.h), computed once per request from
 * the headers as they arrived, before the route's header mutations (Envoy
 * hashes when it picks the host, before it finalizes the request headers).
 * Without a key the cluster's no_key decides: the downstream address, or a
 * 400. Returns false when the request was answered. */
static bool shard_key(router_state_t *rs, const sharp_route_t *r, const sharp_headers_t *h)
{
    sharp_stream_t *s = rs->f->stream;
    if (sharp_hash_policy_key(r->hash_policies, r->nhash_policies, h, s->info.downstream_remote_address,
                              &rs->shard_key))
        return true;
    if (rs->cluster->shuffle_shard->no_key == SHARP_SHARD_NO_KEY_REJECT) {
        sharp_stream_send_local_reply(rs->f, 400,
                                      "shuffle shard: the request has no customer key (none of the route's "
                                      "hash_policy values is present)",
                                      0, "shuffle_shard_no_key");
        return false;
    }
    sharp_str_t ip = sharp_addr_without_port(s->info.downstream_remote_address);
    sharp_sbuf_append(&rs->shard_key, ip.p, ip.len);
    return true;
}

/* Starts a try: host, request breaker, pooled connection. The first try
 * comes from decode_headers, retries from the back-off timer. */
static void start_try(router_state_t *rs)
{
    sharp_filter_t *f = rs->f;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    if (rs->agg) {
        /* the member and level of this try (upstream/aggregate.h): each
         * try chooses anew, among the members of the stream's view */
        sharp_cluster_local_t *mcl = NULL;
        sharp_cluster_t *m = sharp_aggregate_choose(s->view, rs->agg, rs->agg->panic_threshold,
                                                    sharp_worker_random(w), &mcl, &rs->agg_level);
        rs->cluster = m ? m : rs->agg;
        rs->cl = m ? mcl : NULL;
    }
    sharp_cluster_t *c = rs->cluster;
    sharp_host_t *host = rs->cl ? choose_host(rs) : NULL;
    if (!host) {
        c = route_cluster(rs); /* Envoy counts it on the route's cluster */
        sharp_debug(router, "[C%llu][S%llu] no healthy host for cluster '%s'", s->conn_id, s->id, c->name);
        /* Envoy's httpConnPoolImpl counts a pick without a host */
        sharp_counter_inc(w->stats, c->st.cx_none_healthy);
        if (rs->retry_slot) {
            rs->retry_slot = false;
            sharp_cluster_retry_release(c, rs->priority);
        }
        sharp_deadline_stop(&rs->timer);
        /* Envoy counts an attempt only once it has a connection pool: a try
         * without a host adds none */
        const char *hdrs[3] = {NULL};
        char n[16];
        if (s->vhost && s->vhost->include_attempt_count_in_response && rs->attempt > 1) {
            n[sharp_u64_to_str(rs->attempt - 1, n)] = '\0';
            hdrs[0] = "x-envoy-attempt-count";
            hdrs[1] = n;
        }
        sharp_stream_send_local_reply_ex(f, 503, "no healthy upstream", SHARP_RF_NO_HEALTHY_UPSTREAM,
                                         "no_healthy_upstream", hdrs);
        return;
    }
    /* cluster-wide request circuit breaker of the route's priority */
    if (!sharp_cluster_slot_acquire(&c->open[rs->priority].rq_open, sharp_cluster_cb_max(c, rs->priority, SHARP_CB_MAX_REQUESTS))) {
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        overflow_reply(rs);
        return;
    }
    rs->host = host;
    clear_upstream_info(rs);
    capture_diagnosis(rs);
    /* %UPSTREAM_REQUEST_ATTEMPT_COUNT%: tries that got a host (Envoy
     * counts an attempt once it has a connection pool; 0: never tried) */
    s->info.attempt_count = rs->attempt;
    sharp_debug(router, "[C%llu][S%llu] try %u: host %s chosen in cluster '%s'", s->conn_id, s->id, rs->attempt,
                host->address, c->name);
    if (rs->ntried < ROUTER_MAX_TRIED) rs->tried[rs->ntried++] = host;
    rs->counted_active = true;
    rs->response_headers = false;
    rs->try_sent_body = false;
    atomic_fetch_add_explicit(&host->active_rq, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&host->rq_total, 1, memory_order_relaxed);
    SHARP_COPY_CSTR(s->info.upstream_host, host->address);
    /* the host's locality metadata (no atomic read-modify-write when its
     * locality has none) */
    sharp_locality_md_put(s->info.upstream_locality_md);
    s->info.upstream_locality_md = sharp_host_locality_md_get(host);
    sharp_counter_inc(w->stats, c->st.rq_total);
    sharp_gauge_add(w->stats, c->st.rq_active, 1);
    if (rs->include_attempt_count) {
        char n[16];
        size_t nl = sharp_u64_to_str(rs->attempt, n);
        sharp_headers_set(&s->req, "x-envoy-attempt-count", 21, n, nl);
    }
    if (rs->attempt > 1) set_timeout_headers(rs, &s->req);
    rs->upstream_active = true;
    rs->upstream_start_ns = sharp_now_ns();
    const router_config_t *cfg = f->config;
    rs->try_protocol = NULL;
    rs->try_flags = NULL;
    rs->try_code = 0;
    rs->try_complete = false;
    if (cfg && cfg->start_child_span) rs->child = sharp_tracing_child_start(s, rs->attempt);
    /* every try picks the pool of the downstream's protocol anew
     * (use_downstream_protocol_config); a terminated CONNECT gets a raw
     * TCP connection of its own, never shared nor reused (Envoy's TCP
     * connection pool for its TcpUpstream) */
    sharp_pool_t *pool;
    if (rs->terminate) {
        pool = rs->tcp_pool = sharp_pool_create(&w->upstream_env, c, host, rs->priority);
        sharp_pool_use_tcp(pool);
    } else if (c->odst) {
        pool = sharp_odst_pool(&w->upstream_env, rs->cl, rs->priority, host,
                               c->downstream_protocol && s->info.protocol && strcmp(s->info.protocol, "HTTP/2") == 0);
    } else {
        pool = sharp_cluster_pool(rs->cl, rs->priority, host, s->info.protocol);
    }
    if (!sharp_pool_acquire(pool, &rs->ureq, &upstream_cbs, rs)) {
        /* max_pending_requests: nothing was queued */
        if (rs->child) {
            sharp_tracing_child_reset(rs->child, "overflow");
            rs->try_flags = "UO";
        }
        sharp_counter_inc(w->stats, c->st.rq_pending_overflow);
        overflow_reply(rs);
    }
}

/* The retry policy of the route (or its virtual host), amended by the
 * x-envoy-retry-on / x-envoy-max-retries / x-envoy-retriable-status-codes /
 * x-envoy-upstream-rq-per-try-timeout-ms request headers, which are consumed. */
static void setup_retries(router_state_t *rs, const sharp_route_t *r, sharp_headers_t *h)
{
    sharp_str_t v;
    rs->policy = r->has_retry_policy ? &r->retry : NULL;
    if (rs->policy) {
        rs->retry_on = rs->policy->retry_on_bits;
        rs->retries_left = rs->policy->num_retries;
        rs->per_try_timeout_ms = rs->policy->per_try_timeout_ms;
    } else {
        rs->retries_left = 1; /* x-envoy-retry-on (or -grpc-on) alone: one retry */
    }
    if (sharp_headers_get_cstr(h, "x-envoy-retry-on", &v)) {
        rs->retry_on |= sharp_retry_on_parse(v.p, v.len);
        sharp_headers_remove_cstr(h, "x-envoy-retry-on");
    }
    if (sharp_headers_get_cstr(h, "x-envoy-retry-grpc-on", &v)) {
        rs->retry_on |= sharp_retry_grpc_on_parse(v.p, v.len);
        sharp_headers_remove_cstr(h, "x-envoy-retry-grpc-on");
    }
    if (sharp_headers_get_cstr(h, "x-envoy-max-retries", &v)) {
        bool ok;
        uint64_t n = parse_u64(v, &ok);
        if (ok) rs->retries_left = (uint32_t)SHARP_MIN(n, 100);
        sharp_headers_remove_cstr(h, "x-envoy-max-retries");
    }
    if (sharp_headers_get_cstr(h, "x-envoy-retriable-status-codes", &v)) {
        sharp_str_t rest = v, item;
        while (rs->nextra_codes < ROUTER_MAX_CODES && sharp_list_next(&rest, &item)) {
            bool ok;
            uint64_t code = parse_u64(item, &ok);
            if (ok && code >= 100 && code <= 599) rs->extra_codes[rs->nextra_codes++] = (uint32_t)code;
        }
        sharp_headers_remove_cstr(h, "x-envoy-retriable-status-codes");
    }
    if (sharp_headers_get_cstr(h, "x-envoy-upstream-rq-per-try-timeout-ms", &v)) {
        bool ok;
        uint64_t t = parse_u64(v, &ok);
        if (ok) rs->per_try_timeout_ms = t;
        sharp_headers_remove_cstr(h, "x-envoy-upstream-rq-per-try-timeout-ms");
    }
    if (rs->policy && rs->policy->nretriable_request_headers) {
        bool match = false;
        for (uint32_t i = 0; i < rs->policy->nretriable_request_headers && !match; i++)
            match = sharp_header_matcher_match(&rs->policy->retriable_request_headers[i], h);
        if (!match) rs->retry_on = 0;
    }
    rs->can_replay = rs->retry_on != 0;
}

/* Envoy's shadowing decision: per mirror policy, its runtime fraction on
 * one random value per request (Envoy uses the stream id), then the cluster
 * named by the policy or by its request header (skipped when the header is
 * absent or names no cluster). CONNECT requests are never mirrored. */
static void start_shadows(router_state_t *rs, const sharp_route_t *r, const sharp_headers_t *h, bool end_stream)
{
    const sharp_mirror_policies_t *m = r->mirror;
    if (!m || !m->n) return;
    sharp_stream_t *s = rs->f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, ":method", &v) && sharp_str_eq(v, "CONNECT", 7)) return;
    uint64_t rnd = sharp_worker_random(w);
    for (uint32_t i = 0; i < m->n; i++) {
        const sharp_mirror_policy_t *mp = &m->p[i];
        if (!sharp_fraction_enabled(&mp->fraction, rnd)) continue;
        sharp_cluster_t *c;
        sharp_cluster_local_t *cl = NULL;
        char *name = NULL;
        if (mp->cluster) {
            c = sharp_view_cluster(s->view, mp->cluster, &cl);
        } else if (sharp_headers_get_cstr(h, mp->cluster_header, &v) && v.len) {
            name = sharp_strndup(v.p, v.len);
            c = sharp_view_cluster(s->view, name, &cl);
        } else {
            sharp_debug(router, "[C%llu][S%llu] There is no cluster name in header: %s", s->conn_id, s->id,
                        mp->cluster_header);
            continue;
        }
        if (!c) {
            /* a header names a cluster this configuration lacks */
            sharp_debug(router, "[C%llu][S%llu] shadow cluster '%s' does not exist", s->conn_id, s->id, name);
            free(name);
            continue;
        }
        free(name);
        bool agg = false;
        uint32_t agg_level = 0;
        if (c->aggregate) {
            /* an aggregate shadow cluster: its member for this copy */
            sharp_cluster_t *mc = sharp_aggregate_choose(s->view, c, c->panic_threshold, sharp_worker_random(w), &cl,
                                                         &agg_level);
            if (!mc) {
                sharp_debug(router, "[C%llu][S%llu] shadow: no member of aggregate cluster '%s' has a host",
                            s->conn_id, s->id, c->name);
                continue;
            }
            c = mc;
            agg = true;
        }
        sharp_sbuf_t key = {0};
        if (c->shuffle_shard && !sharp_hash_policy_key(r->hash_policies, r->nhash_policies, h,
                                                       s->info.downstream_remote_address, &key) &&
            c->shuffle_shard->no_key != SHARP_SHARD_NO_KEY_REJECT) {
            sharp_str_t ip = sharp_addr_without_port(s->info.downstream_remote_address);
            sharp_sbuf_append(&key, ip.p, ip.len);
        }
        if (!rs->shadows) {
            rs->shadows = sharp_calloc(m->n, sizeof *rs->shadows);
            rs->nshadows = m->n;
        }
        sharp_shadow_args_t a = {
            .worker = w,
            .cluster = c,
            .cl = cl,
            .agg = agg,
            .agg_level = agg_level,
            .headers = h,
            .end_stream = end_stream,
            .host_suffix = !mp->disable_host_suffix,
            .timeout_ms = rs->timeout_ms,
            .buffer_limit = sharp_stream_buffer_limit(s),
            .shard_key = key.data,
            .shard_key_len = key.len,
            .conn_id = s->conn_id,
            .stream_id = s->id,
        };
        sharp_shadow_start(&a, &rs->shadows[i]);
        sharp_sbuf_free(&key);
    }
}

/* Request body to the shadows still streaming. One that cannot take it
 * within its buffer limits is given up, which Envoy counts as
 * retry_or_shadow_abandoned on the route's cluster. */
static void shadow_data(router_state_t *rs, const char *p, size_t n, bool end)
{
    for (uint32_t i = 0; i < rs->nshadows; i++)
        if (rs->shadows[i] && !sharp_shadow_send_data(rs->shadows[i], p, n, end))
            sharp_counter_inc(shard(rs), route_cluster(rs)->st.retry_or_shadow_abandoned);
}

static sharp_filter_status_t router_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    router_state_t *rs = f->state;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    rs->f = f;
    const sharp_route_t *r = s->route;
    if (!r) {
        if (SHARP_LOG_ON(router, SHARP_LOG_DEBUG)) {
            sharp_str_t path = {"", 0};
            sharp_headers_get_cstr(h, ":path", &path);
            sharp_debug(router, "[C%llu][S%llu] no route match for URL '%.*s'", s->conn_id, s->id, (int)path.len,
                        path.p);
        }
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
    /* the connection manager picked the route entry's cluster with the
     * route; a stream routed otherwise picks it here */
    const sharp_weighted_cluster_t *wc = s->route_wc;
    const char *cname = s->route_cluster;
    if (!s->route_cluster_picked) {
        cname = sharp_route_pick_cluster(r, sharp_worker_random(w), &wc);
        s->route_wc = wc; /* the route entry's response headers in local replies include its own */
    }
    /* the clusters of the stream's view: a CDS update reaches the next
     * request, and this one keeps the cluster and pools it started with */
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *c = cname ? sharp_view_cluster(s->view, cname, &cl) : NULL;
    if (!c) {
        sharp_debug(router, "[C%llu][S%llu] unknown cluster '%s'", s->conn_id, s->id, cname ? cname : "");
        sharp_counter_inc(w->stats, s->hcm->st.no_cluster);
        sharp_stream_send_local_reply(f, r->cluster_not_found_code ? r->cluster_not_found_code : 503,
                                      NULL, SHARP_RF_NO_CLUSTER_FOUND, "cluster_not_found");
        return SHARP_FILTER_STOP;
    }
    rs->cluster = c;
    rs->agg = c->aggregate ? c : NULL;
    if (SHARP_LOG_ON(router, SHARP_LOG_DEBUG)) {
        sharp_str_t path = {"", 0};
        sharp_headers_get_cstr(h, ":path", &path);
        sharp_debug(router, "[C%llu][S%llu] cluster '%s' match for URL '%.*s' (virtual host '%s', route '%s')",
                    s->conn_id, s->id, c->name, (int)path.len, path.p, s->vhost && s->vhost->name ? s->vhost->name : "",
                    r->name ? r->name : "");
    }
    s->info.upstream_cluster = c->stat_name;
    s->info.upstream_cluster_raw = c->name;
    /* Envoy's maintenance mode: the runtime's upstream.maintenance_mode.<cluster>
     * percentage of requests (default 0) is refused at once, counted as a
     * 503 of the cluster */
    if (sharp_runtime_percent_enabled(c->maintenance_key, 0, sharp_worker_random(w))) {
        static const char *const overloaded[] = {"x-envoy-overloaded", "true", NULL};
        sharp_cluster_count_response(c, w->stats, 503);
        sharp_counter_inc(w->stats, c->st.rq_maintenance_mode);
        atomic_fetch_add_explicit(&c->rq_dropped, 1, memory_order_relaxed); /* for load reports */
        sharp_stream_send_local_reply_ex(f, 503, "maintenance mode", SHARP_RF_UPSTREAM_OVERFLOW, "maintenance_mode",
                                         suppress_headers(rs) ? NULL : overloaded);
        return SHARP_FILTER_STOP;
    }
    rs->cl = cl;
    rs->attempt = 1;
    rs->priority = r->priority == SHARP_PRIORITY_HIGH ? SHARP_PRIORITY_HIGH : SHARP_PRIORITY_DEFAULT;
    if (c->shuffle_shard && !shard_key(rs, r, h)) return SHARP_FILTER_STOP;
    rs->include_attempt_count = s->vhost && s->vhost->include_request_attempt_count;

    /* request headers for the upstream */
    sharp_str_t v;
    rs->grpc = sharp_grpc_is_request(h);
    /* Envoy reads grpc-timeout whatever the content-type for the stream's
     * duration; max_grpc_timeout applies to gRPC requests only */
    uint64_t grpc_ms = 0;
    bool has_grpc = sharp_headers_get_cstr(h, "grpc-timeout", &v) && sharp_grpc_timeout_ms(v, &grpc_ms);
    apply_route_duration(rs, r, h, has_grpc, grpc_ms);
    rs->timeout_ms = sharp_route_timeout_ms(r, rs->grpc, has_grpc, grpc_ms, &rs->grpc_timeout_rewrite);
    if (sharp_headers_get_cstr(h, "x-envoy-upstream-rq-timeout-ms", &v)) {
        bool ok;
        uint64_t t = parse_u64(v, &ok);
        if (ok) rs->timeout_ms = t;
        sharp_headers_remove_cstr(h, "x-envoy-upstream-rq-timeout-ms");
    }
    setup_retries(rs, r, h);
    if (r->prefix_rewrite && r->match_kind == SHARP_ROUTE_MATCH_PREFIX &&
        sharp_headers_get_cstr(h, ":path", &v) && v.len >= r->path_len) {
        sharp_sbuf_t np = {0};
        sharp_sbuf_puts(&np, r->prefix_rewrite);
        sharp_sbuf_append(&np, v.p + r->path_len, v.len - r->path_len);
        sharp_headers_set(h, "x-envoy-original-path", 21, v.p, v.len);
        sharp_headers_set(h, ":path", 5, np.data, np.len);
        sharp_sbuf_free(&np);
    } else if (r->regex_rewrite && sharp_headers_get_cstr(h, ":path", &v)) {
        /* Envoy rewrites the path before any '?' or '#' and keeps the rest */
        size_t n, outlen;
        char *np = sharp_regex_rewrite_path(r->regex_rewrite, r->regex_rewrite_sub, v, &n, &outlen);
        if (np) {
            sharp_sbuf_t full = {0};
            sharp_sbuf_append(&full, np, outlen);
            sharp_sbuf_append(&full, v.p + n, v.len - n);
            sharp_headers_set(h, "x-envoy-original-path", 21, v.p, v.len);
            sharp_headers_set(h, ":path", 5, full.data, full.len);
            sharp_sbuf_free(&full);
            free(np);
        }
    }
    if (r->host_rewrite) sharp_headers_set_cstr(h, ":authority", r->host_rewrite);
    /* a per-try timeout at least the global one is dropped, as Envoy does */
    if (rs->timeout_ms && rs->per_try_timeout_ms >= rs->timeout_ms) rs->per_try_timeout_ms = 0;
    set_timeout_headers(rs, h);
    sharp_route_apply_request_headers(s->routes, s->vhost, r, wc, h, &s->info);
    /* scheme_header_transformation.match_upstream: Envoy's
     * setUpstreamScheme, after the route's headers */
    if (s->hcm->scheme_match_upstream && !s->is_connect)
        sharp_headers_set_cstr(h, ":scheme", rs->cluster->tls ? "https" : "http");
    rs->wc = wc;
    rs->request_end_seen = end_stream;
    rs->upgrade = s->upgrade_accepted;
    /* connect_config terminates a CONNECT, and with allow_post a POST
     * (Envoy's TcpUpstream for both) */
    sharp_str_t method;
    rs->terminate = r->connect_terminate &&
                    (s->is_connect || (r->connect_allow_post && sharp_headers_get_cstr(h, ":method", &method) &&
                                       sharp_str_eq(method, "POST", 4)));
    if (SHARP_LOG_ON(router, SHARP_LOG_DEBUG)) {
        sharp_sbuf_t d = {0};
        sharp_headers_dump(h, &d);
        sharp_debug(router, "[C%llu][S%llu] router decoding headers:%s", s->conn_id, s->id, d.data ? d.data : "");
        sharp_sbuf_free(&d);
    }

    start_try(rs);
    if (!rs->upstream_active) return SHARP_FILTER_STOP; /* answered locally */
    /* the shadows copy the request as the first try sends it, before the
     * host-dependent auto_host_rewrite, as Envoy's router does */
    start_shadows(rs, r, h, end_stream);
    /* auto_host_rewrite needs the host: only the first try's is used */
    if (!r->host_rewrite && r->auto_host_rewrite && rs->host->hostname[0])
        sharp_headers_set_cstr(h, ":authority", rs->host->hostname);
    if (end_stream || rs->upgrade) start_timer(rs);
    return SHARP_FILTER_STOP;
}

/* Keeps what was sent for a retry, while the whole body fits the buffer
 * limit; beyond it the request can no longer be replayed, as in Envoy. */
static void keep_for_replay(router_state_t *rs, const char *p, size_t n)
{
    if (!rs->can_replay || !n) return;
    if (rs->replay.len + n > sharp_stream_buffer_limit(rs->f->stream)) {
        rs->can_replay = false;
        sharp_counter_inc(shard(rs), route_cluster(rs)->st.retry_or_shadow_abandoned);
        sharp_sbuf_free(&rs->replay);
        return;
    }
    sharp_sbuf_append(&rs->replay, p, n);
}

static sharp_filter_status_t router_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    router_state_t *rs = f->state;
    if (rs->nshadows) shadow_data(rs, p, n, end);
    if (!rs->upstream_active && !rs->backing_off) return SHARP_FILTER_STOP;
    if (end) rs->request_end_seen = true;
    if (rs->bound) {
        keep_for_replay(rs, p, n);
        if (n) rs->try_sent_body = true;
        sharp_upstream_cx_send_data(rs->ureq.cx, p, n, end);
        if (end) start_try_timer(rs);
    } else {
        if (n) sharp_sbuf_append(&rs->pending_body, p, n);
        if (rs->pending_body.len > sharp_stream_buffer_limit(f->stream)) {
            rs->pending_above = true;
            update_dec_pause(rs);
        }
    }
    if (end && !rs->upgrade) start_timer(rs);
    return SHARP_FILTER_STOP;
}

/* Request trailers end the request: they go up with it (an HTTP/1
 * upstream drops them, as Envoy's HTTP/1 codec does) and are kept for a
 * retry. */
static sharp_filter_status_t router_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    router_state_t *rs = f->state;
    if (!rs->upstream_active && !rs->backing_off) return router_decode_data(f, NULL, 0, true);
    sharp_headers_copy(&rs->req_trailers, t);
    rs->has_req_trailers = true;
    if (!rs->bound) return router_decode_data(f, NULL, 0, true);
    if (rs->nshadows) shadow_data(rs, NULL, 0, true);
    rs->request_end_seen = true;
    sharp_upstream_cx_send_trailers(rs->ureq.cx, t);
    start_try_timer(rs);
    if (!rs->upgrade) start_timer(rs);
    return SHARP_FILTER_STOP;
}

/* ---- upstream callbacks ---- */

static void up_on_headers(void *ctx, sharp_headers_t *h, bool end_stream);

/* A terminated CONNECT's TCP connection is up (Envoy's TcpUpstream): the
 * request headers go nowhere, the payload read so far follows, and the
 * router answers 200 itself, as if the upstream had; from then on the
 * stream's data both ways is the connection's bytes. */
static void connect_ready(router_state_t *rs, sharp_upstream_cx_t *cx)
{
    if (rs->pending_body.len || rs->request_end_seen) {
        sharp_sbuf_t b = rs->pending_body;
        memset(&rs->pending_body, 0, sizeof rs->pending_body);
        sharp_upstream_cx_send_data(cx, b.data, b.len, rs->request_end_seen);
        sharp_sbuf_free(&b);
        if (!rs->upstream_active) return;
        rs->pending_above = false;
        update_dec_pause(rs);
    }
    if (sharp_stream_encoder_paused(rs->f) && rs->ureq.cx) sharp_upstream_cx_read_disable(rs->ureq.cx, true);
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":status", "200");
    up_on_headers(rs, &h, false);
    sharp_headers_free(&h);
}

/* Envoy's HeaderUtility::checkRequiredRequestHeaders, as the upstream
 * codec checks a request before encoding it: :method, and :path (a CONNECT:
 * :authority); a filter (header_mutation) may have removed them. The
 * missing one's name, or NULL. */
static const char *missing_required_header(const sharp_headers_t *h)
{
    sharp_str_t m;
    if (!sharp_headers_get_cstr(h, ":method", &m)) return ":method";
    if (m.len == 7 && memcmp(m.p, "CONNECT", 7) == 0)
        return sharp_headers_get_cstr(h, ":authority", NULL) ? NULL : ":authority";
    return sharp_headers_get_cstr(h, ":path", NULL) ? NULL : ":path";
}

static void up_on_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    router_state_t *rs = ctx;
    sharp_stream_t *s = rs->f->stream;
    rs->bound = true;
    SHARP_COPY_CSTR(s->info.upstream_local_address, sharp_upstream_cx_local_address(cx));
    /* TLS: the engine is kept (a reference, no copy) for the access log,
     * which reads it when the line is rendered */
    sharp_tls_conn_t *tls = sharp_upstream_cx_tls(cx);
    if (tls) {
        sharp_tls_conn_ref(tls);
        rs->upstream_tls = tls;
        s->info.upstream_tls = tls;
    }
    rs->try_protocol = sharp_upstream_cx_protocol(cx);
    if (rs->terminate) {
        connect_ready(rs, cx);
        return;
    }
    const char *missing = missing_required_header(&s->req);
    if (missing) {
        /* Envoy's onPoolReady when encodeHeaders fails: a 503 of the
         * router's own, no retry */
        char body[64], details[96];
        snprintf(body, sizeof body, "missing required header: %s", missing);
        snprintf(details, sizeof details,
                 "filter_removed_required_request_headers{missing_required_header:_%s}", missing);
        sharp_deadline_stop(&rs->timer);
        release_upstream(rs);
        sharp_stream_send_local_reply(rs->f, 503, body, SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR, details);
        return;
    }
    if (rs->child) sharp_tracing_child_inject(s, rs->child, rs->host->address, &s->req);
    bool body_pending = rs->pending_body.len > 0;
    bool trailers = rs->request_end_seen && rs->has_req_trailers;
    bool end_with_headers = rs->request_end_seen && !body_pending && !trailers;
    sharp_upstream_cx_send_headers(cx, &s->req, end_with_headers);
    if (body_pending) {
        sharp_sbuf_t b = rs->pending_body;
        memset(&rs->pending_body, 0, sizeof rs->pending_body);
        keep_for_replay(rs, b.data, b.len);
        rs->try_sent_body = true;
        sharp_upstream_cx_send_data(cx, b.data, b.len, rs->request_end_seen && !trailers);
        sharp_sbuf_free(&b);
        if (rs->upstream_active) {
            rs->pending_above = false;
            update_dec_pause(rs);
        }
    }
    if (!rs->upstream_active) return;
    if (trailers) sharp_upstream_cx_send_trailers(cx, &rs->req_trailers);
    if (rs->request_end_seen) start_try_timer(rs);
    /* Envoy arms it when the try gets its connection; 0s means none. */
    if (route_cluster(rs)->max_stream_duration_ms)
        deadline_start(rs, &rs->duration_timer, on_max_stream_duration, route_cluster(rs)->max_stream_duration_ms);
    /* Envoy's addDownstreamWatermarkCallbacks: the pauses already held
     * apply to the new upstream */
    if (sharp_stream_encoder_paused(rs->f) && rs->ureq.cx) sharp_upstream_cx_read_disable(rs->ureq.cx, true);
}

static void up_on_pool_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    router_state_t *rs = ctx;
    if (rs->child) {
        sharp_tracing_child_reset(rs->child, "connection failure");
        rs->try_flags = "UF";
    }
    sharp_debug(router, "[C%llu][S%llu] upstream connection failure to %s: %s", rs->f->stream->conn_id,
                rs->f->stream->id, rs->host->address, detail ? detail : "");
    charge_local_upstream_code(rs, 503);
    if (detail && !strncmp(detail, "TLS_error:", 10)) {
        /* %UPSTREAM_TRANSPORT_FAILURE_REASON% (a retry's new try clears it) */
        rs->failure_reason = sharp_strdup(detail);
        rs->f->stream->info.upstream_transport_failure_reason = rs->failure_reason;
    }
    if (should_retry(rs, failure_retriable(rs, FAIL_CONNECT)) == RETRY_YES) {
        schedule_retry(rs);
        return;
    }
    if (detail && !strncmp(detail, "TLS_error:", 10)) {
        /* Envoy's onUpstreamReset with a transport failure reason (a TLS
         * handshake that failed): in the body as is, in the details with
         * its spaces made underscores */
        char body[512], details[512];
        snprintf(body, sizeof body,
                 "upstream connect error or disconnect/reset before headers. reset reason: connection failure, "
                 "transport failure reason: %s", detail);
        int k = snprintf(details, sizeof details, "upstream_reset_before_response_started{connection_failure,%s}",
                         detail);
        for (int i = 0; i < k && i < (int)sizeof details - 1; i++)
            if (details[i] == ' ') details[i] = '_';
        upstream_failure_reply(rs, 503, body, SHARP_RF_UPSTREAM_CONNECTION_FAILURE, details);
        return;
    }
    upstream_failure_reply(rs, 503,
                           "upstream connect error or disconnect/reset before headers. reset reason: "
                           "connection failure",
                           SHARP_RF_UPSTREAM_CONNECTION_FAILURE,
                           "upstream_reset_before_response_started{connection_failure}");
}

static void finish_response(router_state_t *rs, uint64_t now)
{
    rs->response_done = true;
    rs->try_complete = true;
    sharp_deadline_stop(&rs->timer);
    sharp_histogram_record(shard(rs), route_cluster(rs)->st.rq_time, (now - rs->upstream_start_ns) / 1000000);
    sharp_counter_inc(shard(rs), rs->cluster->st.rq_completed);
    release_upstream(rs);
}

static void up_on_headers(void *ctx, sharp_headers_t *h, bool end_stream)
{
    router_state_t *rs = ctx;
    sharp_stream_t *s = rs->f->stream;
    uint64_t now = sharp_now_ns();
    uint32_t code = sharp_headers_status(h);
    sharp_debug(router, "[C%llu][S%llu] upstream headers complete: status %u end_stream=%s (host %s)", s->conn_id,
                s->id, code, end_stream ? "true" : "false", rs->host->address);
    sharp_cluster_count_response(route_cluster(rs), shard(rs), code);
    rs->try_code = code;
    if (rs->child) sharp_tracing_child_response(rs->child, h);
    /* Envoy: a gRPC request's grpc-status in the response headers (a
     * trailers-only answer) counts for outlier detection as its HTTP
     * equivalent, and decides the host's success or error; otherwise a
     * gRPC answer's success waits for its trailers */
    int64_t gs;
    bool has_gs = rs->grpc && sharp_grpc_response_status(NULL, h, 0, &gs);
    rs->grpc_result_deferred = false;
    bool is_5xx = code >= 500 || (has_gs && end_stream && sharp_grpc_status_to_http(gs) >= 500);
    if (is_5xx)
        atomic_fetch_add_explicit(&rs->host->rq_error, 1, memory_order_relaxed);
    else if (rs->grpc && !end_stream)
        rs->grpc_result_deferred = true;
    else
        atomic_fetch_add_explicit(&rs->host->rq_success, 1, memory_order_relaxed);
    /* before the result: a half-open probe answering too slowly fails */
    record_latency(rs, now, true, is_5xx);
    sharp_outlier_put_http(rs->cluster, rs->host, has_gs ? sharp_grpc_status_to_http(gs) : code);
    /* Envoy: an upstream whose own health check fails says so on every
     * response; with active health checking the host is failed at once and
     * comes back through the checks. */
    if (rs->cluster->health_check && sharp_headers_get_cstr(h, "x-envoy-immediate-health-check-fail", NULL) &&
        !(sharp_host_health_set(rs->host, SHARP_HOST_FAILED_ACTIVE_HC) & SHARP_HOST_FAILED_ACTIVE_HC))
        sharp_host_request_drain(rs->host); /* a health failure: Envoy drains the host's pools */
    bool retriable = rs->retry_on && response_retriable(rs, code, h);
    if (retriable) {
        retry_status_t rst = should_retry(rs, true);
        if (rst == RETRY_YES) {
            schedule_retry(rs);
            return;
        }
    } else if (rs->attempt > 1) {
        sharp_counter_inc(shard(rs), route_cluster(rs)->st.rq_retry_success);
    }
    s->info.upstream_first_byte_ns = now;
    rs->response_headers = true;
    sharp_deadline_stop(&rs->try_timer);
    if (rs->upgrade) sharp_deadline_stop(&rs->timer); /* the answer came: the tunnel has no route timeout */
    if (!suppress_headers(rs)) {
        char t[20];
        size_t tl = sharp_u64_to_str((now - rs->upstream_start_ns) / 1000000, t);
        sharp_headers_set(h, "x-envoy-upstream-service-time", 29, t, tl);
    }
    response_header_ops(s, s->route, rs->wc, h);
    s->info.response_code_details = "via_upstream";
    if (s->vhost && s->vhost->include_attempt_count_in_response) {
        char n[16];
        size_t nl = sharp_u64_to_str(rs->attempt, n);
        sharp_headers_set(h, "x-envoy-attempt-count", 21, n, nl);
    }
    if (end_stream) finish_response(rs, now);
    sharp_stream_encode_headers(rs->f, h, end_stream);
}

static void up_on_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    router_state_t *rs = ctx;
    if (end_stream) finish_response(rs, sharp_now_ns());
    sharp_stream_encode_data(rs->f, p, n, end_stream);
}

/* Response trailers (HTTP/2 upstreams) end the response; the downstream
 * codec decides what to do with them. */
static void up_on_trailers(void *ctx, sharp_headers_t *t)
{
    router_state_t *rs = ctx;
    int64_t gs;
    if (rs->child) sharp_tracing_child_response(rs->child, t);
    if (rs->grpc_result_deferred) {
        rs->grpc_result_deferred = false;
        bool ok = sharp_grpc_response_status(t, NULL, 0, &gs) && sharp_grpc_status_to_http(gs) < 500;
        atomic_fetch_add_explicit(ok ? &rs->host->rq_success : &rs->host->rq_error, 1, memory_order_relaxed);
        if (!ok) atomic_fetch_add_explicit(&rs->host->diag.resp_5xx, 1, memory_order_relaxed);
    }
    finish_response(rs, sharp_now_ns());
    sharp_stream_encode_trailers(rs->f, t);
}

static void up_on_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    router_state_t *rs = ctx;
    sharp_debug(router, "[C%llu][S%llu] upstream reset: %s (host %s)", rs->f->stream->conn_id, rs->f->stream->id,
                detail ? detail : "", rs->host ? rs->host->address : "-");
    rs->bound = false;
    bool refused = why == SHARP_RESET_REFUSED_STREAM;
    uint32_t flag = why == SHARP_RESET_REMOTE || refused ? SHARP_RF_UPSTREAM_REMOTE_RESET
                    : why == SHARP_RESET_PROTOCOL_ERROR  ? SHARP_RF_UPSTREAM_PROTOCOL_ERROR
                                                         : SHARP_RF_UPSTREAM_CONNECTION_TERMINATION;
    sharp_counter_inc(shard(rs), rs->cluster->st.rq_rx_reset);
    /* Envoy's resetReasonToString and streamResetReasonToResponseFlag */
    if (rs->child) {
        sharp_tracing_child_reset(rs->child, why == SHARP_RESET_REMOTE           ? "remote reset"
                                             : refused                           ? "remote refused stream reset"
                                             : why == SHARP_RESET_PROTOCOL_ERROR ? "protocol error"
                                             : why == SHARP_RESET_LOCAL          ? "local reset"
                                                                                 : "connection termination");
        rs->try_flags = why == SHARP_RESET_REMOTE || refused        ? "UR"
                        : why == SHARP_RESET_PROTOCOL_ERROR ? "UPE"
                        : why == SHARP_RESET_LOCAL          ? "LR"
                                                            : "UC";
    }
    /* the host, or its connection, cut the try (not a protocol error) */
    if (why == SHARP_RESET_REMOTE || why == SHARP_RESET_CONNECTION_TERMINATION)
        atomic_fetch_add_explicit(&rs->host->diag.resets, 1, memory_order_relaxed);
    /* not the host's failure: SHARP went above its limit */
    if (refused && resend_refused(rs)) return;
    if (!rs->response_headers) {
        sharp_outlier_put_local(rs->cluster, rs->host, SHARP_OUTLIER_LOCAL_CONNECT_FAILED);
        const char *body = why == SHARP_RESET_REMOTE
                               ? "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
                           : refused
                               ? "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
                           : why == SHARP_RESET_PROTOCOL_ERROR
                               ? "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
                               : "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
        const char *details = why == SHARP_RESET_REMOTE ? "upstream_reset_before_response_started{remote_reset}"
                              : refused ? "upstream_reset_before_response_started{remote_refused_stream_reset}"
                              : why == SHARP_RESET_PROTOCOL_ERROR
                                  ? "upstream_reset_before_response_started{protocol_error}"
                                  : "upstream_reset_before_response_started{connection_termination}";
        uint32_t code = why == SHARP_RESET_PROTOCOL_ERROR ? 502 : 503;
        charge_local_upstream_code(rs, code);
        if (should_retry(rs, failure_retriable(rs, refused ? FAIL_REFUSED : FAIL_RESET)) == RETRY_YES) {
            schedule_retry(rs);
            return;
        }
        upstream_failure_reply(rs, code, body, flag, details);
        return;
    }
    sharp_deadline_stop(&rs->timer);
    release_upstream(rs);
    rs->f->stream->info.response_code_details = "upstream_reset_after_response_started";
    sharp_stream_reset(rs->f->stream, flag);
}

static void up_on_write_watermark(void *ctx, bool above)
{
    router_state_t *rs = ctx;
    rs->write_above = above;
    update_dec_pause(rs);
}

static const sharp_upstream_callbacks_t upstream_cbs = {
    .on_ready = up_on_ready,
    .on_pool_failure = up_on_pool_failure,
    .on_headers = up_on_headers,
    .on_data = up_on_data,
    .on_trailers = up_on_trailers,
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
    if ((rs->upstream_active || rs->backing_off) && !rs->response_done && rs->cluster)
        sharp_counter_inc(shard(rs), rs->cluster->st.rq_tx_reset);
    /* a try abandoned while waiting for its answer: the time it waited */
    if (rs->upstream_active && !rs->response_headers) record_latency(rs, sharp_now_ns(), false, false);
    rs->backing_off = false;
    release_upstream(rs);
    /* shadows still waiting for the rest of the request go with it */
    for (uint32_t i = 0; i < rs->nshadows; i++)
        if (rs->shadows[i]) sharp_shadow_cancel(rs->shadows[i]);
    free(rs->shadows);
    sharp_deadline_stop(&rs->timer);
    sharp_deadline_stop(&rs->try_timer);
    sharp_deadline_stop(&rs->duration_timer);
    timer_free(&rs->backoff_timer);
    timer_free(&rs->route_duration_timer);
    sharp_sbuf_free(&rs->pending_body);
    sharp_sbuf_free(&rs->replay);
    sharp_headers_free(&rs->req_trailers);
    sharp_sbuf_free(&rs->shard_key);
    sharp_sbuf_free(&rs->subset_crit);
    clear_upstream_info(rs); /* after the access logs, which run first */
}

/* What the router holds for its stream: the body kept for a retry or not
 * yet sent, and the upstream connection's unsent bytes (an HTTP/1
 * connection carries this one request). */
static uint64_t router_buffered_bytes(sharp_filter_t *f)
{
    router_state_t *rs = f->state;
    if (!rs->f) return 0;
    uint64_t n = rs->pending_body.cap + rs->replay.cap;
    if (rs->bound && rs->ureq.cx) n += sharp_upstream_cx_queued(rs->ureq.cx);
    return n;
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
    .buffered_bytes = router_buffered_bytes,
};
