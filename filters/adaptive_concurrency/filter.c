/* filter.c: envoy.filters.http.adaptive_concurrency (Envoy's gradient
 * controller) and sharp.filters.http.adaptive_concurrency (SHARP's AIMD
 * controller): the HTTP filter around the controllers in gradient.c/aimd.c.
 *
 * decode_headers asks the controller for a slot; over the limit the request
 * gets a local reply (503 or concurrency_limit_exceeded_status) and never
 * reaches the upstream. An admitted request releases its slot when the
 * stream completes, with its latency and outcome (timeout, upstream 503,
 * other error) as the controller's sample. The controller is shared by all
 * workers; each worker passes its own shard index. */
#include "filters/adaptive_concurrency/controller.h"
#include "filters/adaptive_concurrency/filter.h"
#include "config/mapper.h"
#include "http/filter.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/adaptive_concurrency/v3/adaptive_concurrency.pb-c.h"
#include "sharp/extensions/filters/http/adaptive_concurrency/v1/aimd.pb-c.h"

#include <stdatomic.h>
#include <stdio.h>

typedef struct ac_config {
    sharp_ac_controller_t *ctl;
    bool enabled;      /* enabled.default_value (true when unset) */
    char *enabled_key; /* enabled.runtime_key: the runtime's value wins */
    uint32_t exceeded_status;
    sharp_stats_t *stats;
    sharp_stat_id_t rq_blocked, limit, gradient, burst_queue_size, min_rtt, sample_rtt, min_rtt_active;
    _Atomic uint64_t published_windows; /* gauges are rewritten only after a window update */
} ac_config_t;

typedef struct ac_state {
    bool admitted;
    uint64_t start_ns;
} ac_state_t;

static uint64_t mono_clock(void *arg)
{
    (void)arg;
    return sharp_now_ns();
}

static void register_stats(ac_config_t *c, sharp_stats_t *s, const char *prefix, const char *controller)
{
    c->stats = s;
    c->rq_blocked = sharp_stats_counterf(s, "http.%s.adaptive_concurrency.%s.rq_blocked", prefix, controller);
    c->limit = sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.concurrency_limit", prefix, controller);
    c->gradient = sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.gradient", prefix, controller);
    c->burst_queue_size = sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.burst_queue_size", prefix, controller);
    c->min_rtt = sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.min_rtt_msecs", prefix, controller);
    c->sample_rtt = sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.sample_rtt_msecs", prefix, controller);
    c->min_rtt_active =
        sharp_stats_gaugef(s, "http.%s.adaptive_concurrency.%s.min_rtt_calculation_active", prefix, controller);
}

/* Copies the controller's state into the gauges. Called after requests
 * finish, but writes the shared gauges only when a window update or a minRTT
 * measurement changed something, so the request path does not bounce their
 * cache lines between workers. */
static void publish(ac_config_t *c, bool force)
{
    sharp_ac_snapshot_t snap;
    sharp_ac_snapshot(c->ctl, &snap);
    uint64_t key = snap.windows * 2 + (snap.min_rtt_calculation_active ? 1 : 0);
    if (!force && atomic_load_explicit(&c->published_windows, memory_order_relaxed) == key) return;
    atomic_store_explicit(&c->published_windows, key, memory_order_relaxed);
    sharp_gauge_set(c->stats, c->limit, (int64_t)snap.concurrency_limit);
    sharp_gauge_set(c->stats, c->gradient, (int64_t)snap.gradient);
    sharp_gauge_set(c->stats, c->burst_queue_size, (int64_t)snap.burst_queue_size);
    sharp_gauge_set(c->stats, c->min_rtt, (int64_t)snap.min_rtt_msecs);
    sharp_gauge_set(c->stats, c->sample_rtt, (int64_t)snap.sample_rtt_msecs);
    sharp_gauge_set(c->stats, c->min_rtt_active, snap.min_rtt_calculation_active ? 1 : 0);
}

/* `enabled` is a RuntimeFeatureFlag: its runtime_key's boolean in the
 * runtime, read per request, else default_value (true when unset, as in
 * Envoy). */
static void feature_flag(ac_config_t *c, const Envoy__Config__Core__V3__RuntimeFeatureFlag *f)
{
    c->enabled = !f || !f->default_value || f->default_value->value;
    if (f && f->runtime_key && f->runtime_key[0]) c->enabled_key = sharp_strdup(f->runtime_key);
}

static int exceeded_status(const Envoy__Type__V3__HttpStatus *st, uint32_t *out, char *err, size_t errlen)
{
    *out = 503;
    if (!st) return 0;
    uint32_t code = (uint32_t)st->code;
    if (code < 400 || code > 599) {
        snprintf(err, errlen, "concurrency_limit_exceeded_status: %u is not a 4xx or 5xx status", code);
        return -1;
    }
    *out = code;
    return 0;
}

static void *gradient_create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                                    size_t errlen)
{
    const Envoy__Extensions__Filters__Http__AdaptiveConcurrency__V3__AdaptiveConcurrency *pb = (const void *)msg;
    if (!pb || pb->concurrency_controller_config_case !=
                   ENVOY__EXTENSIONS__FILTERS__HTTP__ADAPTIVE_CONCURRENCY__V3__ADAPTIVE_CONCURRENCY__CONCURRENCY_CONTROLLER_CONFIG_GRADIENT_CONTROLLER_CONFIG) {
        snprintf(err, errlen, "gradient_controller_config is required");
        return NULL;
    }
    sharp_gradient_config_t gc;
    if (sharp_gradient_config_from_proto(pb->gradient_controller_config, &gc, err, errlen) < 0) return NULL;
    ac_config_t *c = sharp_calloc(1, sizeof *c);
    if (exceeded_status(pb->concurrency_limit_exceeded_status, &c->exceeded_status, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    feature_flag(c, pb->enabled);
    c->ctl = sharp_ac_gradient_create(&gc, ctx->server->opts.concurrency + 1, mono_clock, NULL, sharp_now_ns());
    register_stats(c, ctx->server->stats, ctx->stat_prefix, "gradient_controller");
    publish(c, true);
    return c;
}

static void *aimd_create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                                size_t errlen)
{
    const Sharp__Extensions__Filters__Http__AdaptiveConcurrency__V1__AimdAdaptiveConcurrency *pb = (const void *)msg;
    sharp_aimd_config_t ac;
    if (sharp_aimd_config_from_proto(pb ? pb->aimd_controller_config : NULL, &ac, err, errlen) < 0) return NULL;
    ac_config_t *c = sharp_calloc(1, sizeof *c);
    if (pb && exceeded_status(pb->concurrency_limit_exceeded_status, &c->exceeded_status, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    if (!pb) c->exceeded_status = 503;
    feature_flag(c, pb ? pb->enabled : NULL);
    c->ctl = sharp_ac_aimd_create(&ac, ctx->server->opts.concurrency + 1, mono_clock, NULL, sharp_now_ns());
    register_stats(c, ctx->server->stats, ctx->stat_prefix, "aimd_controller");
    publish(c, true);
    return c;
}

static void destroy_config(void *p)
{
    ac_config_t *c = p;
    sharp_ac_destroy(c->ctl);
    free(c->enabled_key);
    free(c);
}

static sharp_filter_status_t ac_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)h;
    (void)end_stream;
    ac_config_t *c = (ac_config_t *)f->config;
    ac_state_t *st = f->state;
    if (!sharp_runtime_get_bool(c->enabled_key, c->enabled)) return SHARP_FILTER_CONTINUE;
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    if (!sharp_ac_try_acquire(c->ctl, w->index + 1, &st->start_ns)) {
        sharp_counter_inc(w->stats, c->rq_blocked);
        publish(c, false);
        sharp_stream_send_local_reply(f, c->exceeded_status, "reached concurrency limit", 0,
                                      "reached_concurrency_limit");
        return SHARP_FILTER_STOP;
    }
    st->admitted = true;
    return SHARP_FILTER_CONTINUE;
}

/* The outcome the controllers learn from: a timeout, an overloaded
 * upstream (503), another failure, or a good answer. */
static sharp_ac_outcome_t outcome_of(const sharp_stream_info_t *si)
{
    if (si->response_flags & SHARP_RF_UPSTREAM_REQUEST_TIMEOUT) return SHARP_AC_TIMEOUT;
    if (si->response_code == 503) return SHARP_AC_OVERLOAD;
    if (si->response_code >= 500 || si->response_code == 0) return SHARP_AC_ERROR;
    return SHARP_AC_OK;
}

static void ac_on_complete(sharp_filter_t *f, const sharp_stream_info_t *si)
{
    ac_config_t *c = (ac_config_t *)f->config;
    ac_state_t *st = f->state;
    if (!st->admitted) return;
    st->admitted = false;
    uint64_t end = si->end_ns ? si->end_ns : sharp_now_ns();
    bool sample = si->response_code != 0 && !(si->response_flags & SHARP_RF_DOWNSTREAM_CONNECTION_TERMINATION);
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    sharp_ac_release(c->ctl, w->index + 1, st->start_ns, end - st->start_ns, outcome_of(si), sample);
    publish(c, false);
}

const sharp_filter_factory_t sharp_adaptive_concurrency_filter = {
    .name = "envoy.filters.http.adaptive_concurrency",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
    .create_config = gradient_create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(ac_state_t),
    .decode_headers = ac_decode_headers,
    .on_complete = ac_on_complete,
};

const sharp_filter_factory_t sharp_aimd_concurrency_filter = {
    .name = "sharp.filters.http.adaptive_concurrency",
    .type_url = "type.googleapis.com/sharp.extensions.filters.http.adaptive_concurrency.v1.AimdAdaptiveConcurrency",
    .create_config = aimd_create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(ac_state_t),
    .decode_headers = ac_decode_headers,
    .on_complete = ac_on_complete,
};
