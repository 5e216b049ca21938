/* scaling.c: see scaling.h. */
#include "scaling.h"

#include "admin/json.h"
#include "agent/live.h"
#include "agent/policy_file.h"
#include "config/scaling_config.h"
#include "externalscaler/externalscaler.pb-c.h"
#include "log.h"
#include "snapshot.h"
#include "stats.h"
#include "upstream/cluster.h"
#include "worker.h" /* sharp_dlist_t */

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef Externalscaler__ScaledObjectRef ref_t;

typedef struct agent {
    sharp_scaling_t *sc;
    char *cluster;
    char *weights_path;
    sharp_scaling_live_t *live;
    uint32_t file_version, file_crc; /* of the loaded weights file */
    struct {
        sharp_stat_id_t desired, hpa_desired, agent_desired, policy_loaded, decisions, fallbacks, clamps,
            violations;
    } st;
    /* the period being measured: sync_period in whole seconds, the
     * sampler's tick (the rates use the period's measured length) */
    uint64_t period_ms;
    uint64_t period_start_ms;
    bool counters_known; /* the cluster's counters were read at the period's start */
    uint64_t rq_total, rq_5xx, overflow;
    double inflight_sum;
    int samples;
    bool has_p99;
    double p99_max;
    sharp_hist_merged_t *hist_prev; /* upstream_rq_time's cumulative histogram a second ago */
    bool hist_known;
    bool has_prev_rate;
    double prev_rate;
    /* the last decision */
    bool stepped;
    sharp_scaling_step_t last;
    uint64_t last_wall_us;
} agent_t;

typedef struct watcher {
    sharp_dlist_t link;
    agent_t *a;
    sharp_grpc_call_t *call;
    bool last; /* the activity last sent */
} watcher_t;

struct sharp_scaling {
    sharp_server_t *srv;
    agent_t *agents;
    size_t n;
    uv_timer_t timer;
    bool timer_live;
    sharp_dlist_t watchers;
    sharp_hist_merged_t scratch;
};

/* ---- measuring ------------------------------------------------------------- */

static uint64_t counter_value(sharp_stats_t *st, sharp_stat_id_t id)
{
    return sharp_stats_counter_value(st, id);
}

/* A counter's increase since `prev` (a /reset_counters in between counts
 * from zero). */
static uint64_t delta(uint64_t now, uint64_t prev)
{
    return now >= prev ? now - prev : now;
}

static void read_counters(agent_t *a, const sharp_cluster_t *c)
{
    sharp_stats_t *st = a->sc->srv->stats;
    a->rq_total = counter_value(st, c->st.rq_total);
    a->rq_5xx = counter_value(st, c->st.rq_xx[5]);
    a->overflow = counter_value(st, c->st.rq_pending_overflow);
    a->counters_known = true;
}

static int64_t in_flight(const sharp_cluster_t *c)
{
    int64_t n = 0;
    for (int p = 0; p < SHARP_NPRIORITIES; p++) n += atomic_load_explicit(&c->open[p].rq_open, memory_order_relaxed);
    return n < 0 ? 0 : n;
}

/* Each second: in flight now, and the p99 of the upstream_rq_time values
 * recorded during the second (the difference of the cumulative histogram
 * with the one a second ago). */
static void sample(agent_t *a, const sharp_cluster_t *c)
{
    sharp_scaling_t *sc = a->sc;
    a->inflight_sum += (double)in_flight(c);
    a->samples++;
    sharp_hist_merged_t *cur = &sc->scratch;
    if (sharp_stats_histogram_merge(sc->srv->stats, c->st.rq_time, cur, NULL) < 0) return;
    if (a->hist_known && cur->count >= a->hist_prev->count) {
        sharp_hist_merged_t *d = a->hist_prev; /* becomes the difference, then the new previous */
        bool any = false;
        for (size_t i = 0; i < SHARP_HIST_NBUCKETS; i++) {
            uint64_t v = cur->buckets[i] >= d->buckets[i] ? cur->buckets[i] - d->buckets[i] : 0;
            d->buckets[i] = v;
            any = any || v;
        }
        d->count = cur->count - d->count;
        d->sum = cur->sum >= d->sum ? cur->sum - d->sum : 0;
        if (any && d->count) {
            double q = sharp_hist_merged_quantile(d, 0.99) / 1000.0; /* ms -> s */
            if (isfinite(q) && (!a->has_p99 || q > a->p99_max)) a->p99_max = q;
            a->has_p99 = a->has_p99 || isfinite(q);
        }
    }
    *a->hist_prev = *cur;
    a->hist_known = true;
}

/* ---- KEDA's StreamIsActive ------------------------------------------------ */

static bool active_of(const agent_t *a)
{
    return sharp_scaling_live_current(a->live) > 0;
}

static int send_active(sharp_grpc_call_t *call, bool active)
{
    Externalscaler__IsActiveResponse rsp = EXTERNALSCALER__IS_ACTIVE_RESPONSE__INIT;
    rsp.result = active;
    return sharp_grpc_call_send(call, &rsp.base);
}

static void watcher_free(watcher_t *w)
{
    sharp_dlist_remove(&w->link);
    free(w);
}

static void notify_watchers(sharp_scaling_t *sc, agent_t *a)
{
    bool act = active_of(a);
    /* Sending may end other calls (a failed write closes a connection and
     * cancels its calls), so the walk starts over after each send; it ends
     * because every watcher is brought up to date once (as in health.c). */
again:
    for (sharp_dlist_t *n = sc->watchers.next; n != &sc->watchers; n = n->next) {
        watcher_t *w = sharp_container_of(n, watcher_t, link);
        if (w->a != a || w->last == act) continue;
        w->last = act;
        sharp_grpc_call_t *call = w->call;
        if (send_active(call, act) != 0) {
            watcher_free(w);
            sharp_grpc_call_finish(call, SHARP_GRPC_RESOURCE_EXHAUSTED, "activity updates not read");
        }
        goto again;
    }
}

/* ---- the decision --------------------------------------------------------- */

static void sync_agent(agent_t *a, const sharp_cluster_t *c, uint64_t now_ms)
{
    sharp_scaling_t *sc = a->sc;
    sharp_stats_t *st = sc->srv->stats;
    sharp_scaling_signals_t sig = {0};
    double secs = (double)(now_ms - a->period_start_ms) / 1000.0;
    sig.seconds = secs > 0.0 ? secs : 1.0;
    if (c && a->counters_known) {
        sig.cluster_present = true;
        uint64_t total = counter_value(st, c->st.rq_total), x5 = counter_value(st, c->st.rq_xx[5]),
                 ov = counter_value(st, c->st.rq_pending_overflow);
        double shed = (double)delta(ov, a->overflow);
        sig.offered = (double)delta(total, a->rq_total) + shed;
        sig.errors = (double)delta(x5, a->rq_5xx);
        sig.shed = shed;
        sig.has_p99 = a->has_p99;
        sig.p99_s = a->p99_max;
        sig.inflight_mean = a->samples ? a->inflight_sum / a->samples : (double)in_flight(c);
        int64_t healthy = sharp_stats_gauge_value(st, c->st.membership_healthy);
        sig.ready = healthy < 0 ? 0 : (healthy > INT32_MAX ? INT32_MAX : (int)healthy);
        sig.has_prev = a->has_prev_rate;
        sig.prev_rate = a->prev_rate;
    }
    uint64_t wall = sharp_wall_us();
    sharp_scaling_live_step(a->live, (double)now_ms / 1000.0, &sig, &a->last);
    a->stepped = true;
    a->last_wall_us = wall;
    if (sig.cluster_present) {
        a->has_prev_rate = true;
        a->prev_rate = sig.offered / sig.seconds;
    } else {
        a->has_prev_rate = false;
    }

    const sharp_scaling_step_t *d = &a->last;
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 0);
    sharp_gauge_set(st, a->st.desired, d->recommendation);
    sharp_gauge_set(st, a->st.hpa_desired, d->hpa.desired);
    sharp_gauge_set(st, a->st.agent_desired, d->guarded ? d->guard.agent_guarded : d->recommendation);
    sharp_counter_inc(sh, a->st.decisions);
    if (d->guard.verdict == SHARP_GUARD_FALLBACK) sharp_counter_inc(sh, a->st.fallbacks);
    if (d->guard.verdict == SHARP_GUARD_CLAMP) sharp_counter_inc(sh, a->st.clamps);
    if (d->violated) sharp_counter_inc(sh, a->st.violations);
    sharp_log_debug("scaling %s: %s", a->cluster, d->guard.reason);

    /* the next period */
    a->period_start_ms = now_ms;
    a->inflight_sum = 0.0;
    a->samples = 0;
    a->has_p99 = false;
    a->p99_max = 0.0;
    if (c) read_counters(a, c);
    else a->counters_known = false;
    notify_watchers(sc, a);
}

static void on_tick(uv_timer_t *t)
{
    sharp_scaling_t *sc = t->data;
    uint64_t now_ms = uv_now(sc->srv->loop);
    for (size_t i = 0; i < sc->n; i++) {
        agent_t *a = &sc->agents[i];
        const sharp_cluster_t *c = sc->srv->snap ? sharp_snapshot_cluster(sc->srv->snap, a->cluster) : NULL;
        if (c && !a->counters_known) {
            /* the cluster (re)appeared: its period starts now */
            read_counters(a, c);
            a->period_start_ms = now_ms;
            a->hist_known = false;
        }
        if (c) sample(a, c);
        /* half a tick of slack: a 15 s period is 15 ticks */
        if (now_ms - a->period_start_ms + 500 >= a->period_ms) sync_agent(a, c, now_ms);
    }
}

/* ---- KEDA's external scaler ----------------------------------------------- */

/* The agent a ScaledObjectRef names with scalerMetadata "cluster", or NULL
 * with the call finished. */
static agent_t *agent_of(sharp_grpc_call_t *call, sharp_scaling_t *sc, const ref_t *ref)
{
    const char *name = NULL;
    for (size_t i = 0; ref && i < ref->n_scalermetadata; i++)
        if (ref->scalermetadata[i]->key && strcmp(ref->scalermetadata[i]->key, "cluster") == 0)
            name = ref->scalermetadata[i]->value;
    if (!name || !*name) {
        sharp_grpc_call_finish(call, SHARP_GRPC_INVALID_ARGUMENT,
                               "scalerMetadata.cluster is required: the SHARP cluster the ScaledObject scales");
        return NULL;
    }
    for (size_t i = 0; i < sc->n; i++)
        if (strcmp(sc->agents[i].cluster, name) == 0) return &sc->agents[i];
    char msg[400];
    snprintf(msg, sizeof msg, "cluster '%.300s' is not scaled by SHARP's scaling agent", name);
    sharp_grpc_call_finish(call, SHARP_GRPC_NOT_FOUND, msg);
    return NULL;
}

static void metric_name(const agent_t *a, char *buf, size_t len)
{
    snprintf(buf, len, "sharp-%s-desired-replicas", a->cluster);
}

static void k_is_active(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    agent_t *a = agent_of(call, data, (const ref_t *)request);
    if (!a) return;
    send_active(call, active_of(a));
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void on_stream_cancel(sharp_grpc_call_t *call, void *arg)
{
    (void)call;
    watcher_free(arg);
}

static void k_stream_is_active(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    sharp_scaling_t *sc = data;
    agent_t *a = agent_of(call, sc, (const ref_t *)request);
    if (!a) return;
    watcher_t *w = sharp_calloc(1, sizeof *w);
    w->a = a;
    w->call = call;
    w->last = active_of(a);
    sharp_dlist_push(&sc->watchers, &w->link);
    sharp_grpc_call_on_cancel(call, on_stream_cancel, w);
    send_active(call, w->last);
}

static void k_get_metric_spec(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    agent_t *a = agent_of(call, data, (const ref_t *)request);
    if (!a) return;
    char name[300];
    metric_name(a, name, sizeof name);
    Externalscaler__MetricSpec spec = EXTERNALSCALER__METRIC_SPEC__INIT;
    spec.metricname = name;
    /* KEDA's HPA divides the value by the target: 1 makes the value the
     * replica count */
    spec.targetsize = 1;
    spec.targetsizefloat = 1.0;
    Externalscaler__MetricSpec *specs[1] = {&spec};
    Externalscaler__GetMetricSpecResponse rsp = EXTERNALSCALER__GET_METRIC_SPEC_RESPONSE__INIT;
    rsp.n_metricspecs = 1;
    rsp.metricspecs = specs;
    sharp_grpc_call_send(call, &rsp.base);
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void k_get_metrics(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    const Externalscaler__GetMetricsRequest *rq = (const Externalscaler__GetMetricsRequest *)request;
    agent_t *a = agent_of(call, data, rq->scaledobjectref);
    if (!a) return;
    char name[300];
    metric_name(a, name, sizeof name);
    int desired = sharp_scaling_live_current(a->live);
    Externalscaler__MetricValue v = EXTERNALSCALER__METRIC_VALUE__INIT;
    /* KEDA asks by the name it was given (with its own prefix) */
    v.metricname = rq->metricname && *rq->metricname ? rq->metricname : name;
    v.metricvalue = desired;
    v.metricvaluefloat = desired;
    Externalscaler__MetricValue *vals[1] = {&v};
    Externalscaler__GetMetricsResponse rsp = EXTERNALSCALER__GET_METRICS_RESPONSE__INIT;
    rsp.n_metricvalues = 1;
    rsp.metricvalues = vals;
    sharp_grpc_call_send(call, &rsp.base);
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static int register_keda(sharp_scaling_t *sc, sharp_grpc_registry_t *r)
{
    const ProtobufCServiceDescriptor *d = &externalscaler__external_scaler__descriptor;
    static const char *const order[] = {"IsActive", "StreamIsActive", "GetMetricSpec", "GetMetrics"};
    /* the handler table follows the descriptor's method order */
    if (d->n_methods != 4) return -1;
    for (unsigned i = 0; i < 4; i++)
        if (strcmp(d->methods[i].name, order[i]) != 0) return -1;
    static const sharp_grpc_method_impl_t impls[] = {
        {.handler = k_is_active},
        {.handler = k_stream_is_active, .server_streaming = true},
        {.handler = k_get_metric_spec},
        {.handler = k_get_metrics},
    };
    return sharp_grpc_registry_add(r, d, impls, sc, NULL);
}

/* ---- life ----------------------------------------------------------------- */

/* The version and checksum of a weights file that loaded. */
static void file_ids(agent_t *a)
{
    FILE *f = fopen(a->weights_path, "rb");
    if (!f) return;
    unsigned char b[4];
    if (fseek(f, 8, SEEK_SET) == 0 && fread(b, 1, 4, f) == 4)
        a->file_version = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    if (fseek(f, -4, SEEK_END) == 0 && fread(b, 1, 4, f) == 4)
        a->file_crc = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    fclose(f);
}

sharp_scaling_t *sharp_scaling_start(sharp_server_t *srv, sharp_scaling_agent_config_t *cfg,
                                     sharp_grpc_registry_t *grpc)
{
    sharp_scaling_t *sc = sharp_calloc(1, sizeof *sc);
    sc->srv = srv;
    sharp_dlist_init(&sc->watchers);
    sc->agents = sharp_calloc(cfg->n ? cfg->n : 1, sizeof *sc->agents);
    sharp_stats_t *st = srv->stats;
    for (size_t i = 0; i < cfg->n; i++) {
        sharp_scaling_cluster_config_t *cc = &cfg->clusters[i];
        char err[256];
        sharp_scaling_live_t *live = sharp_scaling_live_new(&cc->live, cc->policy, cc->policy_error, err, sizeof err);
        if (!live) { /* the config was checked: not expected */
            sharp_log_error("scaling agent for cluster '%s': %s", cc->cluster, err);
            continue;
        }
        cc->policy = NULL; /* the controller's now */
        agent_t *a = &sc->agents[sc->n++];
        a->sc = sc;
        a->live = live;
        a->cluster = sharp_strdup(cc->cluster);
        a->weights_path = sharp_strdup(cc->weights_path);
        a->hist_prev = sharp_calloc(1, sizeof *a->hist_prev);
        a->period_start_ms = uv_now(srv->loop);
        a->period_ms = (uint64_t)llround(cc->live.sync_period_s < 1.0 ? 1.0 : cc->live.sync_period_s) * 1000;
        const char *n = cc->cluster;
        a->st.desired = sharp_stats_gaugef(st, "scaling.%s.desired_replicas", n);
        a->st.hpa_desired = sharp_stats_gaugef(st, "scaling.%s.hpa_desired_replicas", n);
        a->st.agent_desired = sharp_stats_gaugef(st, "scaling.%s.agent_desired_replicas", n);
        a->st.policy_loaded = sharp_stats_gaugef(st, "scaling.%s.policy_loaded", n);
        a->st.decisions = sharp_stats_counterf(st, "scaling.%s.decisions", n);
        a->st.fallbacks = sharp_stats_counterf(st, "scaling.%s.fallbacks", n);
        a->st.clamps = sharp_stats_counterf(st, "scaling.%s.clamps", n);
        a->st.violations = sharp_stats_counterf(st, "scaling.%s.objective_violations", n);
        sharp_stats_shard_t *sh = sharp_stats_shard(st, 0);
        /* counters listed from the start, at 0 */
        sharp_counter_add(sh, a->st.decisions, 0);
        sharp_counter_add(sh, a->st.fallbacks, 0);
        sharp_counter_add(sh, a->st.clamps, 0);
        sharp_counter_add(sh, a->st.violations, 0);
        int cur = sharp_scaling_live_current(live);
        sharp_gauge_set(st, a->st.desired, cur);
        sharp_gauge_set(st, a->st.hpa_desired, cur);
        sharp_gauge_set(st, a->st.agent_desired, cur);
        bool loaded = sharp_scaling_live_policy(live) != NULL;
        sharp_gauge_set(st, a->st.policy_loaded, loaded);
        if (loaded) {
            file_ids(a);
            sharp_log_info("scaling agent for cluster '%s': policy %s (version %u, crc32 %08x), mode %s", n,
                           a->weights_path, a->file_version, a->file_crc,
                           sharp_scaling_mode_name(cc->live.mode));
        } else {
            sharp_log_error("scaling agent for cluster '%s': %s; recommending the HPA rule's count (the "
                            "guardian's fallback) until a valid policy is configured",
                            n, sharp_scaling_live_policy_error(live));
        }
    }
    if (grpc && register_keda(sc, grpc) != 0) sharp_log_error("scaling agent: the KEDA external scaler could not be registered");
    uv_timer_init(srv->loop, &sc->timer);
    sc->timer.data = sc;
    sc->timer_live = true;
    uv_timer_start(&sc->timer, on_tick, 1000, 1000);
    return sc;
}

void sharp_scaling_stop(sharp_scaling_t *sc)
{
    if (!sc || !sc->timer_live) return;
    sc->timer_live = false;
    uv_timer_stop(&sc->timer);
    uv_close((uv_handle_t *)&sc->timer, NULL);
}

void sharp_scaling_free(sharp_scaling_t *sc)
{
    if (!sc) return;
    while (!sharp_dlist_empty(&sc->watchers)) watcher_free(sharp_container_of(sc->watchers.next, watcher_t, link));
    for (size_t i = 0; i < sc->n; i++) {
        agent_t *a = &sc->agents[i];
        sharp_scaling_live_free(a->live);
        free(a->cluster);
        free(a->weights_path);
        free(a->hist_prev);
    }
    free(sc->agents);
    free(sc);
}

/* ---- /scaling --------------------------------------------------------------- */

static void num(sharp_sbuf_t *b, double v)
{
    if (isfinite(v)) sharp_sbuf_printf(b, "%.17g", v);
    else sharp_sbuf_puts(b, "null");
}

static const char *const rule_names[] = {"min_replicas", "max_replicas", "max_step_up", "max_step_down",
                                         "growth", "scale_down_cooldown", "observation_missing",
                                         "observation_stale", "observation_nan", "observation_out_of_range",
                                         "shadow", "scale_down_interval", "utilization_floor", "idle_scale_up",
                                         "hpa_ceiling"};

static void render_agent(const agent_t *a, sharp_sbuf_t *b)
{
    const sharp_scaling_live_config_t *lc = sharp_scaling_live_config(a->live);
    const sharp_policy_t *p = sharp_scaling_live_policy(a->live);
    const sharp_scaling_step_t *d = &a->last;
    sharp_sbuf_puts(b, "{\"cluster\":");
    sharp_json_str(b, a->cluster);
    sharp_sbuf_printf(b, ",\"mode\":\"%s\",\"recommendation\":%d,\"min_replicas\":%d,\"max_replicas\":%d,"
                         "\"sync_period_s\":",
                      sharp_scaling_mode_name(lc->mode), sharp_scaling_live_current(a->live), lc->min_replicas,
                      lc->max_replicas);
    num(b, lc->sync_period_s);
    sharp_sbuf_puts(b, ",\"policy\":{\"weights_path\":");
    sharp_json_str(b, a->weights_path);
    sharp_sbuf_printf(b, ",\"loaded\":%s", p ? "true" : "false");
    if (p) {
        sharp_sbuf_printf(b, ",\"version\":%u,\"crc32\":\"%08x\",\"has_range\":%s,\"error\":null", a->file_version,
                          a->file_crc, p->has_range ? "true" : "false");
    } else {
        sharp_sbuf_puts(b, ",\"error\":");
        sharp_json_str(b, sharp_scaling_live_policy_error(a->live));
    }
    sharp_sbuf_puts(b, "}");
    if (!a->stepped) {
        sharp_sbuf_puts(b, ",\"last_update\":null}");
        return;
    }
    char ts[64];
    time_t t = (time_t)(a->last_wall_us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sharp_sbuf_printf(b, ",\"last_update\":\"%s\",\"last_update_unix\":", ts);
    num(b, (double)a->last_wall_us / 1e6);
    sharp_sbuf_printf(b, ",\"current\":%d", d->current);
    sharp_sbuf_puts(b, ",\"action\":");
    if (d->ran_policy) {
        sharp_sbuf_printf(b, "{\"index\":%d,\"name\":", d->action);
        sharp_json_str(b, sharp_scale_action_name(d->action));
        sharp_sbuf_puts(b, ",\"probabilities\":{");
        for (int i = 0; i < SHARP_SCALE_ACTIONS; i++) {
            if (i) sharp_sbuf_puts(b, ",");
            sharp_json_str(b, sharp_scale_action_name(i));
            sharp_sbuf_puts(b, ":");
            num(b, d->probs[i]);
        }
        sharp_sbuf_puts(b, "}}");
    } else {
        sharp_sbuf_puts(b, "null");
    }
    sharp_sbuf_puts(b, ",\"guardian\":");
    if (d->guarded) {
        sharp_sbuf_printf(b, "{\"verdict\":\"%s\",\"agent_proposal\":%d,\"agent_guarded\":%d,\"applied\":%d,\"rules\":[",
                          sharp_guardian_verdict_name(d->guard.verdict), d->guard.agent, d->guard.agent_guarded,
                          d->guard.applied);
        bool first = true;
        for (unsigned i = 0; i < SHARP_ARRAY_SIZE(rule_names); i++)
            if (d->guard.rules & (1u << i)) {
                sharp_sbuf_printf(b, "%s\"%s\"", first ? "" : ",", rule_names[i]);
                first = false;
            }
        sharp_sbuf_puts(b, "],\"observation\":");
        if (d->guard.obs_index >= 0) sharp_json_str(b, sharp_scale_obs_name(d->guard.obs_index));
        else sharp_sbuf_puts(b, "null");
        sharp_sbuf_puts(b, ",\"reason\":");
        sharp_json_str(b, d->guard.reason);
        sharp_sbuf_puts(b, "}");
    } else {
        sharp_sbuf_puts(b, "{\"verdict\":null,\"reason\":");
        sharp_json_str(b, d->guard.reason);
        sharp_sbuf_puts(b, "}");
    }
    sharp_sbuf_printf(b, ",\"hpa\":{\"desired\":%d,\"metrics_ok\":%s,\"utilization_percent\":", d->hpa.desired,
                      d->hpa.metrics_ok ? "true" : "false");
    num(b, d->utilization);
    sharp_sbuf_printf(b, ",\"target_utilization\":%d,\"able_reason\":", lc->target_utilization);
    sharp_json_str(b, d->hpa.able_reason ? d->hpa.able_reason : "");
    sharp_sbuf_puts(b, ",\"limit_reason\":");
    sharp_json_str(b, d->hpa.limit_reason ? d->hpa.limit_reason : "");
    sharp_sbuf_puts(b, ",\"error\":");
    sharp_json_str(b, d->hpa.error);
    sharp_sbuf_puts(b, "},\"observation\":{");
    for (int i = 0; i < SHARP_SCALE_OBS_N; i++) {
        if (i) sharp_sbuf_puts(b, ",");
        sharp_json_str(b, sharp_scale_obs_name(i));
        sharp_sbuf_puts(b, ":");
        if (d->present[i]) num(b, d->obs[i]);
        else sharp_sbuf_puts(b, "null");
    }
    sharp_sbuf_puts(b, "},\"objective\":{\"p99_latency_s\":");
    num(b, lc->slo_p99_s);
    sharp_sbuf_puts(b, ",\"error_rate\":");
    num(b, lc->slo_error_rate);
    sharp_sbuf_printf(b, ",\"violated\":%s}}", d->violated ? "true" : "false");
}

void sharp_scaling_render_json(const sharp_scaling_t *sc, sharp_sbuf_t *out)
{
    sharp_sbuf_puts(out, "{\"clusters\":[");
    for (size_t i = 0; sc && i < sc->n; i++) {
        if (i) sharp_sbuf_puts(out, ",");
        render_agent(&sc->agents[i], out);
    }
    sharp_sbuf_puts(out, "]}");
}
