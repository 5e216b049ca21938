/* outlier.c: see outlier.h. Envoy's outlier detector restated for SHARP's
 * threads.
 *
 * Workers (sharp_outlier_put_*) only touch the per-host atomics of
 * sharp_outlier_host_t and the host's breaker: they count results into the
 * interval's bucket, keep the consecutive-error counters, and when an
 * increment lands exactly on a threshold they set a bit in `pending` and
 * wake the main thread. Everything that decides (max_ejection_percent, the
 * enforcing roll, ejection times, stats) runs on the main thread, in
 * sharp_outlier_process_pending and sharp_outlier_on_interval, which take
 * the time as an argument so tests drive them with a fake clock.
 *
 * The breaker (host.h) adds one step to Envoy's ejection cycle: when the
 * ejection time is over the host is un-ejected as in Envoy (flag cleared,
 * ejections_active decremented, counters reset) but turns half-open, not
 * closed. The load balancer then admits at most SHARP_OUTLIER_HALF_OPEN_PROBES
 * requests per interval to it; the first result decides: a success closes
 * the breaker, a failure opens it again, and the main thread re-ejects the
 * host for its next, longer ejection time. The budget is refilled on every
 * interval, so a probe that never reports (a cancelled request) holds the
 * host back for one interval at most. */
#include "upstream/outlier.h"
#include "http/access_log.h"
#include "log.h"
#include "runtime.h"

#include "kernel/kernel.h"
#include "config/mapper.h"
#include "upstream/diagnosis.h"

#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/kernel/v1/kernel.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/latency/v1/latency.pb-c.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

typedef Envoy__Config__Cluster__V3__OutlierDetection od_pb_t;

/* Bits of sharp_outlier_host_t.pending: (1 << type) for a consecutive
 * detector that tripped, and the result of a half-open probe. */
#define PENDING_PROBE_FAILED (1u << 16)
#define PENDING_PROBE_PASSED (1u << 17)

#define RELAXED memory_order_relaxed

/* Per OutlierEjectionType: the stat name part (ejections_detected_<stat>)
 * and Envoy's enum name, which the event log prints. */
static const struct {
    const char *stat, *event;
} type_names[SHARP_OUTLIER_NTYPES] = {
    [SHARP_OUTLIER_CONSECUTIVE_5XX] = {"consecutive_5xx", "CONSECUTIVE_5XX"},
    [SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = {"consecutive_gateway_failure", "CONSECUTIVE_GATEWAY_FAILURE"},
    [SHARP_OUTLIER_SUCCESS_RATE] = {"success_rate", "SUCCESS_RATE"},
    [SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = {"consecutive_local_origin_failure",
                                                       "CONSECUTIVE_LOCAL_ORIGIN_FAILURE"},
    [SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = {"local_origin_success_rate", "SUCCESS_RATE_LOCAL_ORIGIN"},
    [SHARP_OUTLIER_FAILURE_PERCENTAGE] = {"failure_percentage", "FAILURE_PERCENTAGE"},
    [SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = {"local_origin_failure_percentage",
                                                      "FAILURE_PERCENTAGE_LOCAL_ORIGIN"},
    /* SHARP's: not one of Envoy's OutlierEjectionType values */
    [SHARP_OUTLIER_KERNEL] = {"kernel", "KERNEL"},
    [SHARP_OUTLIER_LATENCY] = {"latency", "LATENCY"},
};

void sharp_outlier_config_defaults(sharp_outlier_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->interval_ms = 10000;
    cfg->base_ejection_time_ms = 30000;
    cfg->max_ejection_time_ms = 300000;
    cfg->consecutive_5xx = 5;
    cfg->consecutive_gateway_failure = 5;
    cfg->consecutive_local_origin_failure = 5;
    cfg->max_ejection_percent = 10;
    cfg->enforcing[SHARP_OUTLIER_CONSECUTIVE_5XX] = 100;
    cfg->enforcing[SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = 0;
    cfg->enforcing[SHARP_OUTLIER_SUCCESS_RATE] = 100;
    cfg->enforcing[SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = 100;
    cfg->enforcing[SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = 100;
    cfg->enforcing[SHARP_OUTLIER_FAILURE_PERCENTAGE] = 0;
    cfg->enforcing[SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = 0;
    cfg->enforcing[SHARP_OUTLIER_KERNEL] = 100;
    cfg->kernel.min_retransmit_rate = 0.01;
    cfg->kernel.retransmit_rate_factor = 3;
    cfg->kernel.min_segments = 50;
    cfg->kernel.rtt_ratio = 3;
    cfg->kernel.min_rtt_us = 5000;
    cfg->kernel.consecutive_intervals = 3;
    cfg->kernel.minimum_hosts = 3;
    cfg->enforcing[SHARP_OUTLIER_LATENCY] = 100;
    cfg->latency.percentile = 95;
    cfg->latency.factor = 3;
    cfg->latency.min_latency_us = 20000;
    cfg->latency.request_volume = 50;
    cfg->latency.consecutive_intervals = 3;
    cfg->latency.minimum_hosts = 3;
    cfg->success_rate_minimum_hosts = 5;
    cfg->success_rate_request_volume = 100;
    cfg->success_rate_stdev_factor = 1900;
    cfg->failure_percentage_threshold = 85;
    cfg->failure_percentage_minimum_hosts = 5;
    cfg->failure_percentage_request_volume = 50;
    cfg->successful_active_health_check_uneject_host = true;
}

/* ---- configuration ---- */

typedef struct {
    const char *path;
    char *errpath, *err;
    size_t errpathlen, errlen;
} cfg_err_t;

static int bad(cfg_err_t *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(cfg_err_t *e, const char *field, const char *fmt, ...)
{
    snprintf(e->errpath, e->errpathlen, "%s.outlier_detection.%s", e->path, field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, e->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A Duration in milliseconds. `positive` is Envoy's `gt {}` rule; a
 * positive duration below a millisecond becomes 1 ms, the timers'
 * resolution. */
static int duration(cfg_err_t *e, const Google__Protobuf__Duration *d, const char *field,
                    bool positive, uint64_t *out)
{
    if (!d) return 0;
    if (d->seconds < 0 || d->nanos < 0) return bad(e, field, "must not be negative");
    if (positive && d->seconds == 0 && d->nanos == 0)
        return bad(e, field, "must be greater than 0s");
    uint64_t ms = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
    *out = positive && ms == 0 ? 1 : ms;
    return 0;
}

static int percent(cfg_err_t *e, const Google__Protobuf__UInt32Value *v, const char *field,
                   uint32_t *out)
{
    if (!v) return 0;
    if (v->value > 100) return bad(e, field, "must be at most 100");
    *out = v->value;
    return 0;
}

typedef Sharp__Extensions__OutlierDetectionMonitors__Kernel__V1__KernelSignals kernel_pb_t;
typedef Sharp__Extensions__OutlierDetectionMonitors__Latency__V1__LatencyOutlier latency_pb_t;
#define KERNEL_TYPE "sharp.extensions.outlier_detection_monitors.kernel.v1.KernelSignals"
#define LATENCY_TYPE "sharp.extensions.outlier_detection_monitors.latency.v1.LatencyOutlier"

static int kernel_monitor(cfg_err_t *e, const kernel_pb_t *k, char *field, size_t fieldlen,
                          sharp_outlier_config_t *cfg);
static int latency_monitor(cfg_err_t *e, const latency_pb_t *l, char *field, size_t fieldlen,
                           sharp_outlier_config_t *cfg);

/* monitors[i]: one of SHARP's monitors, the kernel or the latency one, the
 * two SHARP implements (the support table has checked their fields'
 * ranges; the checks here hold without it too). */
static int monitor(cfg_err_t *e, const Envoy__Config__Core__V3__TypedExtensionConfig *tec, size_t i,
                   sharp_outlier_config_t *cfg)
{
    char field[96];
    snprintf(field, sizeof field, "monitors[%zu].typed_config", i);
    if (!tec->typed_config) return bad(e, field, "is required");
    sharp_config_error_t ce = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&tec->typed_config->base, NULL, &ce);
    if (!m) return bad(e, field, "%s", ce.msg);
    int rc;
    if (m->descriptor == &sharp__extensions__outlier_detection_monitors__kernel__v1__kernel_signals__descriptor)
        rc = kernel_monitor(e, (const kernel_pb_t *)m, field, sizeof field, cfg);
    else if (m->descriptor == &sharp__extensions__outlier_detection_monitors__latency__v1__latency_outlier__descriptor)
        rc = latency_monitor(e, (const latency_pb_t *)m, field, sizeof field, cfg);
    else
        rc = bad(e, field,
                 "outlier detection monitor %s is not supported: the monitors SHARP implements are " KERNEL_TYPE
                 " and " LATENCY_TYPE,
                 m->descriptor->name);
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* SHARP's kernel monitor. */
static int kernel_monitor(cfg_err_t *e, const kernel_pb_t *k, char *field, size_t fieldlen,
                          sharp_outlier_config_t *cfg)
{
    sharp_outlier_kernel_config_t *kc = &cfg->kernel;
    int rc = 0;
    if (kc->enabled) {
        rc = bad(e, field, "the kernel monitor is configured twice");
        goto done;
    }
    if (!sharp_kernel_enabled()) {
        rc = bad(e, field, "the kernel monitor needs the kernel signals, which --kernel-signals off turns off");
        goto done;
    }
    kc->enabled = true;
    if (k->min_retransmit_rate) kc->min_retransmit_rate = k->min_retransmit_rate->value;
    if (k->retransmit_rate_factor) kc->retransmit_rate_factor = k->retransmit_rate_factor->value;
    if (k->min_segments) kc->min_segments = k->min_segments->value;
    if (k->rtt_ratio) kc->rtt_ratio = k->rtt_ratio->value;
    if (k->consecutive_intervals) kc->consecutive_intervals = k->consecutive_intervals->value;
    if (k->minimum_hosts) kc->minimum_hosts = k->minimum_hosts->value;
    if (k->min_rtt) {
        if (k->min_rtt->seconds < 0 || k->min_rtt->nanos < 0) {
            snprintf(field + strlen(field), fieldlen - strlen(field), ".min_rtt");
            rc = bad(e, field, "must not be negative");
            goto done;
        }
        kc->min_rtt_us = (uint64_t)k->min_rtt->seconds * 1000000 + (uint64_t)k->min_rtt->nanos / 1000;
    }
    const char *which = NULL, *why = NULL;
    if (!(kc->min_retransmit_rate >= 0 && kc->min_retransmit_rate <= 1))
        which = "min_retransmit_rate", why = "must be in [0, 1]";
    else if (!(kc->retransmit_rate_factor >= 0))
        which = "retransmit_rate_factor", why = "must be at least 0";
    else if (!(kc->rtt_ratio == 0 || kc->rtt_ratio >= 1))
        which = "rtt_ratio", why = "must be 0 (no latency check) or at least 1";
    else if (kc->consecutive_intervals < 1)
        which = "consecutive_intervals", why = "must be at least 1";
    else if (kc->minimum_hosts < 1)
        which = "minimum_hosts", why = "must be at least 1";
    if (which) {
        snprintf(field + strlen(field), fieldlen - strlen(field), ".%s", which);
        rc = bad(e, field, "%s", why);
        goto done;
    }
    if (k->enforcing) {
        snprintf(field + strlen(field), fieldlen - strlen(field), ".enforcing");
        rc = percent(e, k->enforcing, field, &cfg->enforcing[SHARP_OUTLIER_KERNEL]);
    }
done:
    return rc;
}

/* SHARP's latency monitor. */
static int latency_monitor(cfg_err_t *e, const latency_pb_t *l, char *field, size_t fieldlen,
                           sharp_outlier_config_t *cfg)
{
    sharp_outlier_latency_config_t *lc = &cfg->latency;
    if (lc->enabled) return bad(e, field, "the latency monitor is configured twice");
    lc->enabled = true;
    if (l->percentile) lc->percentile = l->percentile->value;
    if (l->factor) lc->factor = l->factor->value;
    if (l->request_volume) lc->request_volume = l->request_volume->value;
    if (l->consecutive_intervals) lc->consecutive_intervals = l->consecutive_intervals->value;
    if (l->minimum_hosts) lc->minimum_hosts = l->minimum_hosts->value;
    if (l->min_latency && l->min_latency->seconds >= 0 && l->min_latency->nanos >= 0)
        lc->min_latency_us = (uint64_t)l->min_latency->seconds * 1000000 + (uint64_t)l->min_latency->nanos / 1000;
    const char *which = NULL, *why = NULL;
    if (l->min_latency && (l->min_latency->seconds < 0 || l->min_latency->nanos < 0))
        which = "min_latency", why = "must not be negative";
    else if (!(lc->percentile > 0 && lc->percentile <= 100))
        which = "percentile", why = "must be in (0, 100]";
    else if (!(lc->factor >= 1))
        which = "factor", why = "must be at least 1";
    else if (lc->request_volume < 1)
        which = "request_volume", why = "must be at least 1";
    else if (lc->consecutive_intervals < 1)
        which = "consecutive_intervals", why = "must be at least 1";
    else if (lc->minimum_hosts < 1)
        which = "minimum_hosts", why = "must be at least 1";
    if (which) {
        snprintf(field + strlen(field), fieldlen - strlen(field), ".%s", which);
        return bad(e, field, "%s", why);
    }
    if (l->enforcing) {
        snprintf(field + strlen(field), fieldlen - strlen(field), ".enforcing");
        return percent(e, l->enforcing, field, &cfg->enforcing[SHARP_OUTLIER_LATENCY]);
    }
    return 0;
}

int sharp_outlier_configure(sharp_cluster_t *c, const ProtobufCMessage *msg, const char *path,
                            char *errpath, size_t errpathlen, char *err, size_t errlen)
{
    const od_pb_t *pb = (const od_pb_t *)msg;
    cfg_err_t e = {path, errpath, err, errpathlen, errlen};
    sharp_outlier_config_t cfg;
    sharp_outlier_config_defaults(&cfg);
    for (size_t i = 0; i < pb->n_monitors; i++)
        if (monitor(&e, pb->monitors[i], i, &cfg) < 0) return -1;
    if (duration(&e, pb->interval, "interval", true, &cfg.interval_ms) < 0 ||
        duration(&e, pb->base_ejection_time, "base_ejection_time", true,
                 &cfg.base_ejection_time_ms) < 0 ||
        duration(&e, pb->max_ejection_time_jitter, "max_ejection_time_jitter", false,
                 &cfg.max_ejection_time_jitter_ms) < 0)
        return -1;
    /* Envoy: an unset max_ejection_time is 300 s or base_ejection_time,
     * whichever is larger; a set one below base_ejection_time is an error. */
    cfg.max_ejection_time_ms = SHARP_MAX(cfg.max_ejection_time_ms, cfg.base_ejection_time_ms);
    if (duration(&e, pb->max_ejection_time, "max_ejection_time", true, &cfg.max_ejection_time_ms) <
        0)
        return -1;
    if (cfg.max_ejection_time_ms < cfg.base_ejection_time_ms)
        return bad(
            &e, "max_ejection_time",
            "outlier detector's max_ejection_time cannot be smaller than base_ejection_time");
#define U32(field)                                                                                 \
    if (pb->field) cfg.field = pb->field->value
    U32(consecutive_5xx);
    U32(consecutive_gateway_failure);
    U32(consecutive_local_origin_failure);
    U32(success_rate_minimum_hosts);
    U32(success_rate_request_volume);
    U32(success_rate_stdev_factor);
    U32(failure_percentage_minimum_hosts);
    U32(failure_percentage_request_volume);
#undef U32
    if (percent(&e, pb->max_ejection_percent, "max_ejection_percent", &cfg.max_ejection_percent) <
            0 ||
        percent(&e, pb->failure_percentage_threshold, "failure_percentage_threshold",
                &cfg.failure_percentage_threshold) < 0)
        return -1;
    const struct {
        const Google__Protobuf__UInt32Value *v;
        const char *field;
        sharp_outlier_type_t type;
    } enforcing[] = {
        {pb->enforcing_consecutive_5xx, "enforcing_consecutive_5xx", SHARP_OUTLIER_CONSECUTIVE_5XX},
        {pb->enforcing_consecutive_gateway_failure, "enforcing_consecutive_gateway_failure",
         SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE},
        {pb->enforcing_success_rate, "enforcing_success_rate", SHARP_OUTLIER_SUCCESS_RATE},
        {pb->enforcing_consecutive_local_origin_failure,
         "enforcing_consecutive_local_origin_failure",
         SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE},
        {pb->enforcing_local_origin_success_rate, "enforcing_local_origin_success_rate",
         SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN},
        {pb->enforcing_failure_percentage, "enforcing_failure_percentage",
         SHARP_OUTLIER_FAILURE_PERCENTAGE},
        {pb->enforcing_failure_percentage_local_origin, "enforcing_failure_percentage_local_origin",
         SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(enforcing); i++)
        if (percent(&e, enforcing[i].v, enforcing[i].field, &cfg.enforcing[enforcing[i].type]) < 0)
            return -1;
    cfg.split_external_local_origin_errors = pb->split_external_local_origin_errors;
    if (pb->successful_active_health_check_uneject_host)
        cfg.successful_active_health_check_uneject_host =
            pb->successful_active_health_check_uneject_host->value;
    if (pb->always_eject_one_host) cfg.always_eject_one_host = pb->always_eject_one_host->value;
    sharp_outlier_create(c, &cfg, c->stats, sharp_now_ns() ^ ((uint64_t)c->index << 32));
    return 0;
}

sharp_outlier_t *sharp_outlier_create(sharp_cluster_t *c, const sharp_outlier_config_t *cfg,
                                      sharp_stats_t *stats, uint64_t seed)
{
    sharp_outlier_t *od = sharp_calloc(1, sizeof *od);
    od->cfg = *cfg;
    od->cluster = c;
    od->latency_median_us = -1;
    if (cfg->latency.enabled) od->latency_counts = sharp_calloc(SHARP_LATENCY_BUCKETS, sizeof *od->latency_counts);
    sharp_outlier_hosts_attach(od);
    for (int m = 0; m < SHARP_OUTLIER_NMONITORS; m++)
        od->sr_average[m] = od->sr_threshold[m] = -1;
    od->rng = seed ^ 0x9E3779B97F4A7C15ull;
    if (!od->rng) od->rng = 0x9E3779B97F4A7C15ull;
    od->stats = stats;
    const char *nm = c->stat_name;
#define C(field, stat)                                                                             \
    od->st.field = sharp_stats_counterf(stats, "cluster.%s.outlier_detection." stat, nm)
    od->st.active = sharp_stats_gaugef(stats, "cluster.%s.outlier_detection.ejections_active", nm);
    od->st.half_open =
        sharp_stats_gaugef(stats, "cluster.%s.outlier_detection.half_open_active", nm);
    C(total, "ejections_total");
    C(overflow, "ejections_overflow");
    C(enforced_total, "ejections_enforced_total");
    C(consecutive_5xx, "ejections_consecutive_5xx");
    C(success_rate, "ejections_success_rate");
#undef C
    for (int t = 0; t < SHARP_OUTLIER_NTYPES; t++) {
        /* SHARP's, only when configured */
        if (t == SHARP_OUTLIER_KERNEL && !cfg->kernel.enabled) continue;
        if (t == SHARP_OUTLIER_LATENCY && !cfg->latency.enabled) continue;
        od->st.detected[t] = sharp_stats_counterf(
            stats, "cluster.%s.outlier_detection.ejections_detected_%s", nm, type_names[t].stat);
        od->st.enforced[t] = sharp_stats_counterf(
            stats, "cluster.%s.outlier_detection.ejections_enforced_%s", nm, type_names[t].stat);
    }
    c->outlier = od;
    return od;
}

static uint32_t host_flags(const sharp_host_t *h);
static void set_gauges(sharp_outlier_t *od);

/* A host's detector state, fresh: no result, success rates not computed,
 * an empty latency histogram (kept, allocated with the monitor). */
static void host_state_reset(const sharp_outlier_t *od, sharp_outlier_host_t *oh)
{
    sharp_latency_hist_t *lat = oh->latency;
    memset(oh, 0, sizeof *oh);
    for (int m = 0; m < SHARP_OUTLIER_NMONITORS; m++) oh->success_rate[m] = -1;
    oh->latency_pct_us = -1;
    if (lat) /* a former host: workers with an older set may still add to it */
        for (uint32_t b = 0; b < SHARP_LATENCY_BUCKETS; b++) atomic_store_explicit(&lat->b[b], 0, RELAXED);
    else if (od->cfg.latency.enabled) lat = sharp_calloc(1, sizeof *lat);
    oh->latency = lat;
}

void sharp_outlier_hosts_attach(sharp_outlier_t *od)
{
    sharp_cluster_t *c = od->cluster;
    /* hosts that left: an ejected one no longer counts (Envoy's detector
     * forgets removed hosts) */
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_host_t *h = od->hosts[i]->host;
        if (sharp_host_listed(h, c->hosts, c->nhosts)) continue;
        od->hosts[i]->member = false;
        if ((host_flags(h) & SHARP_HOST_FAILED_OUTLIER) && od->ejections_active) od->ejections_active--;
        sharp_host_health_clear(h, SHARP_HOST_FAILED_OUTLIER);
        sharp_host_breaker_store(h, SHARP_HOST_BREAKER_CLOSED);
    }
    size_t n = c->nhosts ? c->nhosts : 1;
    od->hosts = sharp_realloc(od->hosts, n * sizeof *od->hosts);
    od->rates = sharp_realloc(od->rates, n * sizeof *od->rates);
    od->sr_hosts = sharp_realloc(od->sr_hosts, n * sizeof *od->sr_hosts);
    od->fp_hosts = sharp_realloc(od->fp_hosts, n * sizeof *od->fp_hosts);
    for (uint32_t i = 0; i < c->nhosts; i++) {
        sharp_host_t *h = c->hosts[i];
        sharp_outlier_host_t *oh = h->outlier;
        if (!oh) {
            oh = h->outlier = sharp_calloc(1, sizeof *oh);
            oh->host = h;
            od->owned = sharp_realloc(od->owned, (od->nowned + 1) * sizeof *od->owned);
            od->owned[od->nowned++] = oh;
            host_state_reset(od, oh);
            oh->host = h;
        } else if (!oh->member) { /* a former host back in the set: a new one for the detector */
            host_state_reset(od, oh);
            oh->host = h;
        }
        oh->member = true;
        od->hosts[i] = oh;
    }
    od->nhosts = c->nhosts;
}

void sharp_outlier_hosts_changed(sharp_cluster_t *c)
{
    if (!c->outlier) return;
    sharp_outlier_hosts_attach(c->outlier);
    set_gauges(c->outlier);
}

void sharp_outlier_forget_host(sharp_outlier_t *od, sharp_host_t *h)
{
    if (!od || !h->outlier) return;
    for (uint32_t i = 0; i < od->nowned; i++)
        if (od->owned[i] == h->outlier) {
            od->owned[i] = od->owned[--od->nowned];
            return;
        }
}

void sharp_outlier_free(sharp_outlier_t *od)
{
    if (!od) return;
    /* the hosts outlive their detector (sharp_cluster_free frees it first) */
    for (uint32_t i = 0; i < od->nowned; i++) {
        od->owned[i]->host->outlier = NULL;
        free(od->owned[i]->latency);
        free(od->owned[i]);
    }
    free(od->latency_counts);
    free(od->owned);
    free(od->hosts);
    free(od->rates);
    free(od->sr_hosts);
    free(od->fp_hosts);
    free(od);
}

/* ---- workers: results ---- */

static sharp_outlier_host_t *host_state(const sharp_cluster_t *c, const sharp_host_t *h)
{
    /* the host's own state (set before any worker could see the host) */
    return c->outlier ? h->outlier : NULL;
}

static void notify(sharp_outlier_t *od, sharp_outlier_host_t *oh, uint32_t bits)
{
    atomic_fetch_or_explicit(&oh->pending, bits, memory_order_release);
    if (od->started) uv_async_send(&od->async);
}

static void bucket_add(sharp_outlier_host_t *oh, int monitor, bool success)
{
    atomic_fetch_add_explicit(&oh->bucket[monitor], (1ull << 32) | (success ? 1u : 0u), RELAXED);
}

/* Successes write only when there is something to reset, so a healthy
 * host's counters are not a cache line every worker keeps writing. */
static void reset_counter(_Atomic uint32_t *ctr)
{
    if (atomic_load_explicit(ctr, RELAXED)) atomic_store_explicit(ctr, 0, RELAXED);
}

/* Counts one failure; true for the one result that reaches the threshold
 * (Envoy's `++counter == threshold`): later failures go past it and trip
 * nothing until the main thread resets the counter. */
static bool count_failure(_Atomic uint32_t *ctr, uint32_t threshold)
{
    return atomic_fetch_add_explicit(ctr, 1, RELAXED) + 1 == threshold;
}

/* The first result of a half-open host decides its breaker: the worker that
 * wins the compare-and-swap closes it (success) or opens it (failure); the
 * main thread then re-ejects an opened host. */
static void probe_result(sharp_outlier_t *od, sharp_host_t *h, sharp_outlier_host_t *oh, bool ok)
{
    uint32_t st = SHARP_HOST_BREAKER_HALF_OPEN;
    if (atomic_load_explicit(&h->breaker, RELAXED) != st) return;
    uint32_t to = ok ? SHARP_HOST_BREAKER_CLOSED : SHARP_HOST_BREAKER_OPEN;
    if (sharp_host_breaker_cas(h, st, to))
        notify(od, oh, ok ? PENDING_PROBE_PASSED : PENDING_PROBE_FAILED);
}

/* Envoy's detector reads every setting through the runtime: the key
 * "outlier_detection.<setting>" (one value for every cluster) wins over the
 * cluster's own. Values above 32 bits are capped. */
static uint32_t rt_u32(const char *key, uint32_t dflt)
{
    uint64_t v = sharp_runtime_get_u64(key, dflt);
    return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* The cluster's settings with the thread's runtime applied: `od->cfg`
 * itself when the runtime has no keys, else a copy in `out`. */
static const sharp_outlier_config_t *effective(const sharp_outlier_t *od, sharp_outlier_config_t *out)
{
    const sharp_outlier_config_t *c = &od->cfg;
    const sharp_runtime_snapshot_t *rt = sharp_runtime_current();
    if (!rt || !rt->nmerged) return c;
    *out = *c;
#define OD_KEY "outlier_detection."
    out->interval_ms = SHARP_MAX(sharp_runtime_get_u64(OD_KEY "interval_ms", c->interval_ms), 1);
    out->base_ejection_time_ms = sharp_runtime_get_u64(OD_KEY "base_ejection_time_ms", c->base_ejection_time_ms);
    out->max_ejection_time_ms = sharp_runtime_get_u64(OD_KEY "max_ejection_time_ms", c->max_ejection_time_ms);
    out->max_ejection_time_jitter_ms =
        sharp_runtime_get_u64(OD_KEY "max_ejection_time_jitter_ms", c->max_ejection_time_jitter_ms);
    out->consecutive_5xx = rt_u32(OD_KEY "consecutive_5xx", c->consecutive_5xx);
    out->consecutive_gateway_failure = rt_u32(OD_KEY "consecutive_gateway_failure", c->consecutive_gateway_failure);
    out->consecutive_local_origin_failure =
        rt_u32(OD_KEY "consecutive_local_origin_failure", c->consecutive_local_origin_failure);
    out->max_ejection_percent = rt_u32(OD_KEY "max_ejection_percent", c->max_ejection_percent);
    static const char *const enforcing[SHARP_OUTLIER_NTYPES] = {
        [SHARP_OUTLIER_CONSECUTIVE_5XX] = OD_KEY "enforcing_consecutive_5xx",
        [SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE] = OD_KEY "enforcing_consecutive_gateway_failure",
        [SHARP_OUTLIER_SUCCESS_RATE] = OD_KEY "enforcing_success_rate",
        [SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE] = OD_KEY "enforcing_consecutive_local_origin_failure",
        [SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN] = OD_KEY "enforcing_local_origin_success_rate",
        [SHARP_OUTLIER_FAILURE_PERCENTAGE] = OD_KEY "enforcing_failure_percentage",
        [SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN] = OD_KEY "enforcing_failure_percentage_local_origin",
    };
    for (int t = 0; t < SHARP_OUTLIER_NTYPES; t++)
        if (enforcing[t]) out->enforcing[t] = rt_u32(enforcing[t], c->enforcing[t]);
    out->success_rate_minimum_hosts = rt_u32(OD_KEY "success_rate_minimum_hosts", c->success_rate_minimum_hosts);
    out->success_rate_request_volume = rt_u32(OD_KEY "success_rate_request_volume", c->success_rate_request_volume);
    out->success_rate_stdev_factor = rt_u32(OD_KEY "success_rate_stdev_factor", c->success_rate_stdev_factor);
    out->failure_percentage_threshold =
        rt_u32(OD_KEY "failure_percentage_threshold", c->failure_percentage_threshold);
    out->failure_percentage_minimum_hosts =
        rt_u32(OD_KEY "failure_percentage_minimum_hosts", c->failure_percentage_minimum_hosts);
    out->failure_percentage_request_volume =
        rt_u32(OD_KEY "failure_percentage_request_volume", c->failure_percentage_request_volume);
    return out;
}

/* Envoy's putHttpResponseCode: 5xx counts against the 5xx detector, 502,
 * 503 and 504 also against the gateway-failure one; anything else is a
 * success that resets both. */
static void put_code(sharp_outlier_t *od, sharp_host_t *h, sharp_outlier_host_t *oh, uint32_t code)
{
    const sharp_outlier_config_t *cfg = &od->cfg;
    if (code >= 500 && code < 600) {
        uint32_t bits = 0;
        bucket_add(oh, SHARP_OUTLIER_EXTERNAL, false);
        if (code >= 502 && code <= 504) {
            if (count_failure(&oh->consecutive_gateway_failure,
                              rt_u32(OD_KEY "consecutive_gateway_failure", cfg->consecutive_gateway_failure)))
                bits |= 1u << SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE;
        } else {
            reset_counter(&oh->consecutive_gateway_failure);
        }
        if (count_failure(&oh->consecutive_5xx, rt_u32(OD_KEY "consecutive_5xx", cfg->consecutive_5xx)))
            bits |= 1u << SHARP_OUTLIER_CONSECUTIVE_5XX;
        if (bits) notify(od, oh, bits);
        probe_result(od, h, oh, false);
    } else {
        bucket_add(oh, SHARP_OUTLIER_EXTERNAL, true);
        reset_counter(&oh->consecutive_5xx);
        reset_counter(&oh->consecutive_gateway_failure);
        probe_result(od, h, oh, true);
    }
}

void sharp_outlier_put_http(sharp_cluster_t *c, sharp_host_t *h, uint32_t code)
{
    sharp_outlier_host_t *oh = host_state(c, h);
    if (oh) put_code(c->outlier, h, oh, code);
}

/* Without split_external_local_origin_errors, local results are mapped to
 * HTTP codes as Envoy does (connect success: nothing, final success: 200,
 * timeout: 504, connect failure: 503). With it, they feed the local-origin
 * counter and success-rate monitor only. */
void sharp_outlier_put_local(sharp_cluster_t *c, sharp_host_t *h, sharp_outlier_local_t r)
{
    sharp_outlier_host_t *oh = host_state(c, h);
    if (!oh) return;
    sharp_outlier_t *od = c->outlier;
    if (!od->cfg.split_external_local_origin_errors) {
        switch (r) {
        case SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS:
            break;
        case SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS_FINAL:
            put_code(od, h, oh, 200);
            break;
        case SHARP_OUTLIER_LOCAL_TIMEOUT:
            put_code(od, h, oh, 504);
            break;
        case SHARP_OUTLIER_LOCAL_CONNECT_FAILED:
            put_code(od, h, oh, 503);
            break;
        }
        return;
    }
    switch (r) {
    case SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS:
    case SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS_FINAL:
        bucket_add(oh, SHARP_OUTLIER_LOCAL, true);
        reset_counter(&oh->consecutive_local_origin_failure);
        /* A connection alone proves nothing about a probe; a finished try does. */
        if (r == SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS_FINAL) probe_result(od, h, oh, true);
        break;
    case SHARP_OUTLIER_LOCAL_TIMEOUT:
    case SHARP_OUTLIER_LOCAL_CONNECT_FAILED:
        bucket_add(oh, SHARP_OUTLIER_LOCAL, false);
        if (count_failure(&oh->consecutive_local_origin_failure,
                          rt_u32(OD_KEY "consecutive_local_origin_failure", od->cfg.consecutive_local_origin_failure)))
            notify(od, oh, 1u << SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE);
        probe_result(od, h, oh, false);
        break;
    }
}

void sharp_outlier_put_latency(sharp_cluster_t *c, sharp_host_t *h, uint64_t us, bool answered)
{
    sharp_outlier_host_t *oh = host_state(c, h);
    if (!oh || !oh->latency) return;
    sharp_latency_record(oh->latency, us);
    /* a half-open probe of a host the monitor ejected must answer within
     * the threshold it was ejected at (a timeout fails it anyway) */
    uint64_t limit = atomic_load_explicit(&oh->probe_latency_limit_us, RELAXED);
    if (answered && limit && us > limit) probe_result(c->outlier, h, oh, false);
}

/* ---- pure helpers ---- */

void sharp_outlier_success_rate_threshold(const double *rates, size_t n, double stdev_factor,
                                          double *mean, double *threshold)
{
    double sum = 0, var = 0;
    for (size_t i = 0; i < n; i++)
        sum += rates[i];
    double m = n ? sum / (double)n : 0;
    for (size_t i = 0; i < n; i++)
        var += (rates[i] - m) * (rates[i] - m);
    if (n) var /= (double)n;
    *mean = m;
    *threshold = m - stdev_factor * sqrt(var);
}

uint64_t sharp_outlier_ejection_ms(const sharp_outlier_config_t *cfg, uint32_t backoff,
                                   uint64_t jitter_ms)
{
    uint64_t t = cfg->base_ejection_time_ms * backoff;
    return SHARP_MIN(t, cfg->max_ejection_time_ms) + jitter_ms;
}

bool sharp_outlier_latency_verdict(const sharp_outlier_latency_config_t *l, double pct_us, double median_us)
{
    return pct_us >= 0 && median_us > 0 && pct_us >= l->factor * median_us && pct_us >= (double)l->min_latency_us;
}

/* Envoy counts the host about to be ejected: (active + 1) / hosts must not
 * exceed max_ejection_percent, so with the default 10% a cluster needs ten
 * hosts before one can be ejected, unless always_eject_one_host. */
bool sharp_outlier_may_eject(const sharp_outlier_config_t *cfg, uint32_t active, uint32_t nhosts)
{
    if (!nhosts) return false;
    uint32_t max_pct = SHARP_MIN(cfg->max_ejection_percent, 100u);
    bool ok = 100.0 * (active + 1) / nhosts <= max_pct;
    return ok || (cfg->always_eject_one_host && active == 0);
}

/* ---- main thread: decisions ---- */

static void count(sharp_outlier_t *od, sharp_stat_id_t id)
{
    sharp_counter_inc(sharp_stats_shard(od->stats, 0), id);
}

/* Envoy's runtime featureEnabled(percent): a roll of 0..99 below it. */
static bool roll(sharp_outlier_t *od, uint32_t pct)
{
    if (pct >= 100) return true;
    return pct && sharp_xorshift64s(&od->rng) % 100 < pct;
}

static uint32_t host_flags(const sharp_host_t *h)
{
    return atomic_load_explicit(&h->health_flags, memory_order_acquire);
}

static void set_gauges(sharp_outlier_t *od)
{
    sharp_cluster_t *c = od->cluster;
    int64_t half_open = 0, healthy = 0;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        half_open +=
            atomic_load_explicit(&c->hosts[i]->breaker, RELAXED) == SHARP_HOST_BREAKER_HALF_OPEN;
        healthy += sharp_host_healthy(c->hosts[i]);
    }
    if (od->shown_active != od->ejections_active) {
        od->shown_active = od->ejections_active;
        sharp_gauge_set(od->stats, od->st.active, od->shown_active);
    }
    if (od->shown_half_open != half_open) {
        od->shown_half_open = half_open;
        sharp_gauge_set(od->stats, od->st.half_open, half_open);
    }
    if (c->stats) sharp_gauge_set(c->stats, c->st.membership_healthy, healthy);
}

/* ---- the outlier event log (cluster_manager.outlier_detection) ---- */

static void put_json_string(sharp_sbuf_t *b, const char *s)
{
    sharp_sbuf_append(b, "\"", 1);
    sharp_sbuf_json_escape(b, s, strlen(s));
    sharp_sbuf_append(b, "\"", 1);
}

/* One OutlierDetectionEvent as Envoy prints it (protobuf JSON with proto
 * field names and default values printed): `secs_since_last_action` only
 * when there was a previous opposite action, `enforced` false for a detected
 * ejection the enforcing roll skipped (and on un-ejections, as in Envoy).
 * Envoy leaves `type` unset on an un-ejection, so its log always says
 * CONSECUTIVE_5XX there; SHARP names the type of the ejection that ends.
 * Written on the main thread, one write per line. */
static void log_event(sharp_outlier_t *od, uint32_t i, bool eject_action, sharp_outlier_type_t type,
                      bool enforced, uint64_t now)
{
    if (!od->event_log) return;
    const sharp_outlier_host_t *oh = od->hosts[i];
    sharp_sbuf_t b = {0};
    char tmp[96];
    sharp_sbuf_puts(&b, "{\"type\":\"");
    sharp_sbuf_puts(&b, type_names[type].event);
    /* protobuf prints a Timestamp with 0, 3, 6 or 9 fraction digits */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    long ns = ts.tv_nsec;
    if (ns % 1000000 == 0) snprintf(tmp + n, sizeof tmp - n, ns ? ".%03ldZ" : "Z", ns / 1000000);
    else if (ns % 1000 == 0) snprintf(tmp + n, sizeof tmp - n, ".%06ldZ", ns / 1000);
    else snprintf(tmp + n, sizeof tmp - n, ".%09ldZ", ns);
    sharp_sbuf_puts(&b, "\",\"timestamp\":\"");
    sharp_sbuf_puts(&b, tmp);
    sharp_sbuf_puts(&b, "\"");
    bool have_last = eject_action ? oh->unejected : true; /* an un-ejection follows an ejection */
    uint64_t last = eject_action ? oh->last_unejection_ms : oh->last_ejection_ms;
    if (have_last) {
        snprintf(tmp, sizeof tmp, ",\"secs_since_last_action\":\"%llu\"",
                 (unsigned long long)((now - last) / 1000));
        sharp_sbuf_puts(&b, tmp);
    }
    sharp_sbuf_puts(&b, ",\"cluster_name\":");
    put_json_string(&b, od->cluster->name);
    sharp_sbuf_puts(&b, ",\"upstream_url\":");
    put_json_string(&b, od->cluster->hosts[i]->address);
    snprintf(tmp, sizeof tmp, ",\"action\":\"%s\",\"num_ejections\":%u,\"enforced\":%s",
             eject_action ? "EJECT" : "UNEJECT", oh->num_ejections, enforced ? "true" : "false");
    sharp_sbuf_puts(&b, tmp);
    if (eject_action) {
        int m = type == SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN ||
                        type == SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN
                    ? SHARP_OUTLIER_LOCAL
                    : SHARP_OUTLIER_EXTERNAL;
        /* the event's rates are uint32 percentages */
        uint32_t host_sr = oh->success_rate[m] >= 0 ? (uint32_t)oh->success_rate[m] : 0;
        if (type == SHARP_OUTLIER_SUCCESS_RATE || type == SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN) {
            snprintf(tmp, sizeof tmp,
                     ",\"eject_success_rate_event\":{\"host_success_rate\":%u,"
                     "\"cluster_average_success_rate\":%u,\"cluster_success_rate_ejection_threshold\":%u}",
                     host_sr, od->sr_average[m] >= 0 ? (uint32_t)od->sr_average[m] : 0,
                     od->sr_threshold[m] >= 0 ? (uint32_t)od->sr_threshold[m] : 0);
            sharp_sbuf_puts(&b, tmp);
        } else if (type == SHARP_OUTLIER_FAILURE_PERCENTAGE ||
                   type == SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN) {
            snprintf(tmp, sizeof tmp, ",\"eject_failure_percentage_event\":{\"host_success_rate\":%u}", host_sr);
            sharp_sbuf_puts(&b, tmp);
        } else {
            sharp_sbuf_puts(&b, ",\"eject_consecutive_event\":{}");
        }
    }
    sharp_sbuf_puts(&b, "}\n");
    sharp_access_log_writer_t w;
    sharp_access_log_writer_init(&w, od->event_log);
    sharp_access_log_writer_append(&w, b.data, b.len);
    sharp_access_log_writer_destroy(&w); /* flushes: one write(2) */
    sharp_sbuf_free(&b);
}

/* What the detector saw, in a few words, for the host's diagnosis. The
 * monitors write their own figures in oh->detail before they eject. */
static void ejection_detail(const sharp_outlier_t *od, sharp_outlier_host_t *oh, sharp_outlier_type_t type,
                            const sharp_outlier_config_t *cfg)
{
    char *d = oh->detail;
    size_t n = sizeof oh->detail;
    int m = type == SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN || type == SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN
                ? SHARP_OUTLIER_LOCAL
                : SHARP_OUTLIER_EXTERNAL;
    switch (type) {
    case SHARP_OUTLIER_CONSECUTIVE_5XX:
        snprintf(d, n, "%u consecutive 5xx", cfg->consecutive_5xx);
        break;
    case SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE:
        snprintf(d, n, "%u consecutive gateway errors", cfg->consecutive_gateway_failure);
        break;
    case SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        snprintf(d, n, "%u consecutive connect failures, timeouts or resets", cfg->consecutive_local_origin_failure);
        break;
    case SHARP_OUTLIER_SUCCESS_RATE:
    case SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN:
        snprintf(d, n, "%ssuccess rate %.1f%% vs cluster average %.1f%%", m == SHARP_OUTLIER_LOCAL ? "local-origin " : "",
                 oh->success_rate[m] >= 0 ? oh->success_rate[m] : 0, od->sr_average[m] >= 0 ? od->sr_average[m] : 0);
        break;
    case SHARP_OUTLIER_FAILURE_PERCENTAGE:
    case SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        snprintf(d, n, "%.1f%% of %srequests failed", oh->success_rate[m] >= 0 ? 100 - oh->success_rate[m] : 0,
                 m == SHARP_OUTLIER_LOCAL ? "local-origin " : "");
        break;
    default: /* the monitors' own */
        break;
    }
}

static void diagnose_ejection(sharp_outlier_t *od, uint32_t i, sharp_outlier_type_t type)
{
    sharp_outlier_host_t *oh = od->hosts[i];
    sharp_diag_detector_t by;
    switch (type) {
    case SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
    case SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN:
    case SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        by = SHARP_DIAG_BY_LOCAL;
        break;
    case SHARP_OUTLIER_KERNEL:
        by = oh->kernel_cause == SHARP_KERNEL_VERDICT_LATENCY ? SHARP_DIAG_BY_KERNEL_RTT : SHARP_DIAG_BY_KERNEL_LOSS;
        break;
    case SHARP_OUTLIER_LATENCY:
        by = SHARP_DIAG_BY_LATENCY;
        break;
    default:
        by = SHARP_DIAG_BY_ERRORS;
        break;
    }
    sharp_diag_host_ejected(od->cluster, od->cluster->hosts[i], by, type_names[type].stat, oh->detail);
}

/* Envoy's ejectHost. `forced` is a failed half-open probe: the host already
 * failed the detector that ejected it, so the enforcing roll is skipped, but
 * max_ejection_percent still holds. Returns whether the host was ejected. */
static bool eject(sharp_outlier_t *od, uint32_t i, sharp_outlier_type_t type, uint64_t now,
                  bool forced)
{
    sharp_outlier_config_t eff;
    const sharp_outlier_config_t *cfg = effective(od, &eff);
    sharp_host_t *h = od->cluster->hosts[i];
    sharp_outlier_host_t *oh = od->hosts[i];
    if (!sharp_outlier_may_eject(cfg, od->ejections_active, od->nhosts)) {
        count(od, od->st.overflow);
        return false;
    }
    if (type == SHARP_OUTLIER_CONSECUTIVE_5XX || type == SHARP_OUTLIER_SUCCESS_RATE)
        count(od, od->st.total);
    if (!forced && !roll(od, cfg->enforcing[type])) {
        log_event(od, i, true, type, false, now);
        return false;
    }
    /* a forced re-ejection keeps the figures of the ejection it repeats,
     * and the latency its probe must answer within */
    if (!forced) {
        ejection_detail(od, oh, type, cfg);
        if (type != SHARP_OUTLIER_LATENCY) atomic_store_explicit(&oh->probe_latency_limit_us, 0, RELAXED);
    }
    od->ejections_active++;
    oh->num_ejections++;
    count(od, od->st.enforced_total);
    count(od, od->st.enforced[type]);
    sharp_host_health_set(h, SHARP_HOST_FAILED_OUTLIER);
    sharp_host_breaker_store(h, SHARP_HOST_BREAKER_OPEN);
    oh->last_ejection_ms = now;
    oh->type = type;
    oh->jitter_ms = sharp_xorshift64s(&od->rng) % (cfg->max_ejection_time_jitter_ms + 1);
    /* Envoy grows the multiplier while it still lengthens the ejection
     * (one step past the cap, so forgiving starts from the cap). */
    if ((uint64_t)oh->backoff * cfg->base_ejection_time_ms <
        cfg->max_ejection_time_ms + cfg->base_ejection_time_ms)
        oh->backoff++;
    log_event(od, i, true, type, true, now);
    diagnose_ejection(od, i, type);
    sharp_log_info("outlier detection: cluster '%s' host %s ejected (%s) for %llu ms",
                   od->cluster->name, h->address, type_names[type].stat,
                   (unsigned long long)sharp_outlier_ejection_ms(cfg, oh->backoff, oh->jitter_ms));
    /* Envoy's ejection callback drains the host's connection pools. */
    sharp_host_drain_connections(h);
    return true;
}

/* Envoy's unejectHost, to `to`: half-open after the ejection time, closed
 * after a successful active health check. */
static void uneject(sharp_outlier_t *od, uint32_t i, uint64_t now, sharp_host_breaker_t to)
{
    sharp_host_t *h = od->cluster->hosts[i];
    sharp_outlier_host_t *oh = od->hosts[i];
    od->ejections_active--;
    atomic_store_explicit(&oh->consecutive_5xx, 0, RELAXED);
    atomic_store_explicit(&oh->consecutive_gateway_failure, 0, RELAXED);
    atomic_store_explicit(&oh->consecutive_local_origin_failure, 0, RELAXED);
    oh->last_unejection_ms = now;
    oh->unejected = true;
    sharp_diag_host_unejected(h);
    /* Budget, then state, then the flag: a balancer that sees the flag
     * cleared sees the breaker it may use. */
    atomic_store_explicit(&h->probe_budget, SHARP_OUTLIER_HALF_OPEN_PROBES, memory_order_release);
    sharp_host_breaker_store(h, to);
    sharp_host_health_clear(h, SHARP_HOST_FAILED_OUTLIER);
    log_event(od, i, false, oh->type, false, now);
    sharp_log_info("outlier detection: cluster '%s' host %s un-ejected (%s)", od->cluster->name,
                   h->address, sharp_outlier_breaker_name(to));
}

/* Envoy's onConsecutiveErrorWorker. */
static void on_consecutive_error(sharp_outlier_t *od, uint32_t i, sharp_outlier_type_t type,
                                 uint64_t now)
{
    sharp_outlier_host_t *oh = od->hosts[i];
    if (host_flags(od->cluster->hosts[i]) & SHARP_HOST_FAILED_OUTLIER) return;
    count(od, od->st.detected[type]);
    eject(od, i, type, now, false);
    /* Reset whatever the outcome, so a refused ejection needs a new bout. */
    switch (type) {
    case SHARP_OUTLIER_CONSECUTIVE_5XX:
        count(od, od->st.consecutive_5xx);
        atomic_store_explicit(&oh->consecutive_5xx, 0, RELAXED);
        break;
    case SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE:
        atomic_store_explicit(&oh->consecutive_gateway_failure, 0, RELAXED);
        break;
    case SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        atomic_store_explicit(&oh->consecutive_local_origin_failure, 0, RELAXED);
        break;
    default:
        break;
    }
}

/* A half-open probe failed and a worker opened the breaker: eject the host
 * again as a new ejection of the type that first ejected it (its ejection
 * time has grown). If max_ejection_percent refuses, the host closes. */
static void on_probe_failed(sharp_outlier_t *od, uint32_t i, uint64_t now)
{
    sharp_host_t *h = od->cluster->hosts[i];
    if (atomic_load_explicit(&h->breaker, memory_order_acquire) != SHARP_HOST_BREAKER_OPEN ||
        (host_flags(h) & SHARP_HOST_FAILED_OUTLIER))
        return;
    sharp_outlier_type_t type = od->hosts[i]->type;
    count(od, od->st.detected[type]);
    if (!eject(od, i, type, now, true)) sharp_host_breaker_store(h, SHARP_HOST_BREAKER_CLOSED);
}

void sharp_outlier_process_pending(sharp_outlier_t *od, uint64_t now_ms)
{
    static const sharp_outlier_type_t consecutive[] = {
        SHARP_OUTLIER_CONSECUTIVE_5XX,
        SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
        SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    };
    bool any = false;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        uint32_t bits = atomic_exchange_explicit(&od->hosts[i]->pending, 0, memory_order_acquire);
        if (!bits) continue;
        any = true;
        if (bits & PENDING_PROBE_FAILED) on_probe_failed(od, i, now_ms);
        if ((bits & PENDING_PROBE_PASSED) &&
            atomic_load_explicit(&od->cluster->hosts[i]->breaker, RELAXED) ==
                SHARP_HOST_BREAKER_CLOSED)
            sharp_log_info(
                "outlier detection: cluster '%s' host %s closed after a successful probe",
                od->cluster->name, od->cluster->hosts[i]->address);
        for (size_t k = 0; k < SHARP_ARRAY_SIZE(consecutive); k++)
            if (bits & (1u << consecutive[k])) on_consecutive_error(od, i, consecutive[k], now_ms);
    }
    if (any) set_gauges(od);
}

/* Envoy's processSuccessRateEjections for one monitor, over the buckets of
 * the interval just finished (oh->interval). */
static void process_rates(sharp_outlier_t *od, int m, uint64_t now)
{
    sharp_outlier_config_t eff;
    const sharp_outlier_config_t *cfg = effective(od, &eff);
    uint32_t n = od->nhosts, nsr = 0, nfp = 0;
    od->sr_average[m] = od->sr_threshold[m] = -1;
    if (n < cfg->success_rate_minimum_hosts && n < cfg->failure_percentage_minimum_hosts) return;
    uint64_t min_volume =
        SHARP_MIN(cfg->success_rate_request_volume, cfg->failure_percentage_request_volume);
    for (uint32_t i = 0; i < n; i++) {
        sharp_outlier_host_t *oh = od->hosts[i];
        if (host_flags(od->cluster->hosts[i]) & SHARP_HOST_FAILED_OUTLIER) continue;
        uint64_t total = oh->interval[m] >> 32, ok = oh->interval[m] & 0xffffffffu;
        if (!total) continue;
        double rate = (double)ok * 100.0 / (double)total;
        if (total >= min_volume) oh->success_rate[m] = rate;
        if (total >= cfg->success_rate_request_volume) {
            od->rates[nsr] = rate;
            od->sr_hosts[nsr++] = i;
        }
        if (total >= cfg->failure_percentage_request_volume) od->fp_hosts[nfp++] = i;
    }
    if (nsr && nsr >= cfg->success_rate_minimum_hosts) {
        sharp_outlier_type_t type = m == SHARP_OUTLIER_EXTERNAL
                                        ? SHARP_OUTLIER_SUCCESS_RATE
                                        : SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN;
        sharp_outlier_success_rate_threshold(od->rates, nsr,
                                             cfg->success_rate_stdev_factor / 1000.0,
                                             &od->sr_average[m], &od->sr_threshold[m]);
        for (uint32_t k = 0; k < nsr; k++) {
            if (od->rates[k] >= od->sr_threshold[m]) continue;
            count(od, od->st.success_rate);
            count(od, od->st.detected[type]);
            eject(od, od->sr_hosts[k], type, now, false);
        }
    }
    if (nfp && nfp >= cfg->failure_percentage_minimum_hosts) {
        sharp_outlier_type_t type = m == SHARP_OUTLIER_EXTERNAL
                                        ? SHARP_OUTLIER_FAILURE_PERCENTAGE
                                        : SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN;
        for (uint32_t k = 0; k < nfp; k++) {
            uint32_t i = od->fp_hosts[k];
            /* A host the success-rate pass just ejected is not ejected twice. */
            if (host_flags(od->cluster->hosts[i]) & SHARP_HOST_FAILED_OUTLIER) continue;
            if (100.0 - od->hosts[i]->success_rate[m] < cfg->failure_percentage_threshold) continue;
            count(od, od->st.detected[type]);
            eject(od, i, type, now, false);
        }
    }
}

void sharp_outlier_on_interval(sharp_outlier_t *od, uint64_t now_ms)
{
    sharp_outlier_config_t eff;
    const sharp_outlier_config_t *cfg = effective(od, &eff);
    sharp_outlier_process_pending(od, now_ms);
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_host_t *h = od->cluster->hosts[i];
        sharp_outlier_host_t *oh = od->hosts[i];
        if ((host_flags(h) & SHARP_HOST_FAILED_OUTLIER) &&
            sharp_outlier_ejection_ms(cfg, oh->backoff, oh->jitter_ms) <=
                now_ms - oh->last_ejection_ms)
            uneject(od, i, now_ms, SHARP_HOST_BREAKER_HALF_OPEN);
        else if (atomic_load_explicit(&h->breaker, RELAXED) == SHARP_HOST_BREAKER_HALF_OPEN)
            atomic_store_explicit(&h->probe_budget, SHARP_OUTLIER_HALF_OPEN_PROBES, RELAXED);
        for (int m = 0; m < SHARP_OUTLIER_NMONITORS; m++) {
            oh->interval[m] = atomic_exchange_explicit(&oh->bucket[m], 0, RELAXED);
            oh->success_rate[m] = -1;
        }
    }
    process_rates(od, SHARP_OUTLIER_EXTERNAL, now_ms);
    process_rates(od, SHARP_OUTLIER_LOCAL, now_ms);
    sharp_outlier_latency_interval(od, now_ms);
    /* Forgive one step of the ejection multiplier per interval a host has
     * been back. SHARP counts only closed hosts as back: a half-open host
     * has not proved anything yet. */
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_host_t *h = od->cluster->hosts[i];
        sharp_outlier_host_t *oh = od->hosts[i];
        if ((host_flags(h) & SHARP_HOST_FAILED_OUTLIER) ||
            atomic_load_explicit(&h->breaker, RELAXED) != SHARP_HOST_BREAKER_CLOSED)
            continue;
        if (oh->unejected && now_ms - oh->last_unejection_ms >= cfg->interval_ms && oh->backoff)
            oh->backoff--;
    }
    set_gauges(od);
}

/* ---- SHARP's kernel monitor ---- */

/* Microseconds as milliseconds, three significant digits. */
static void put_ms(char *out, size_t n, double us)
{
    double ms = us / 1000;
    snprintf(out, n, ms < 10 ? "%.2f ms" : ms < 100 ? "%.1f ms" : "%.0f ms", ms);
}

/* How far each signal of one interval is above its threshold (0: not
 * above, 1: at it); false when neither could be judged. */
static bool kernel_scores(const sharp_outlier_kernel_config_t *k, const sharp_tcp_signals_t *s, double rate_median,
                          uint32_t rate_hosts, double rtt_median, uint32_t rtt_hosts, double *loss_out,
                          double *rtt_out)
{
    bool judged = false;
    double loss = 0, rtt = 0;
    if (rate_hosts >= k->minimum_hosts && rate_median >= 0 && s->segs_out >= k->min_segments &&
        s->segs_out > 0 && s->retrans_rate >= 0) {
        judged = true;
        double t = SHARP_MAX(k->min_retransmit_rate, k->retransmit_rate_factor * rate_median);
        if (s->retrans_rate >= k->min_retransmit_rate && s->retrans_rate >= k->retransmit_rate_factor * rate_median)
            loss = t > 0 ? s->retrans_rate / t : 1;
    }
    if (k->rtt_ratio > 0 && rtt_hosts >= k->minimum_hosts && rtt_median > 0 && s->rtt_samples > 0 &&
        s->rtt_us > 0) {
        judged = true;
        double t = SHARP_MAX(k->rtt_ratio * rtt_median, (double)k->min_rtt_us);
        if (s->rtt_us >= k->rtt_ratio * rtt_median && s->rtt_us >= (double)k->min_rtt_us)
            rtt = t > 0 ? s->rtt_us / t : 1;
    }
    *loss_out = loss;
    *rtt_out = rtt;
    return judged;
}

/* A full queue both delays and drops: the signal further above its
 * threshold names the cause. */
static sharp_kernel_verdict_t verdict_of(bool judged, double loss, double rtt)
{
    if (loss > 0 && loss >= rtt) return SHARP_KERNEL_VERDICT_LOSS;
    if (rtt > 0) return SHARP_KERNEL_VERDICT_LATENCY;
    return judged ? SHARP_KERNEL_VERDICT_OK : SHARP_KERNEL_VERDICT_UNKNOWN;
}

sharp_kernel_verdict_t sharp_outlier_kernel_verdict(const sharp_outlier_kernel_config_t *k,
                                                    const sharp_tcp_signals_t *s, double rate_median,
                                                    uint32_t rate_hosts, double rtt_median, uint32_t rtt_hosts)
{
    double loss, rtt;
    bool judged = kernel_scores(k, s, rate_median, rate_hosts, rtt_median, rtt_hosts, &loss, &rtt);
    return verdict_of(judged, loss, rtt);
}

/* A run of outlier intervals starts again. */
static void kernel_run_reset(sharp_outlier_host_t *oh)
{
    oh->kernel_streak = 0;
    oh->kernel_loss_n = oh->kernel_rtt_n = 0;
    oh->kernel_loss_score = oh->kernel_rtt_score = 0;
}

/* One outlier interval of the run: each signal above its threshold is
 * evidence, kept with the figures of its strongest interval. */
static void kernel_run_add(sharp_outlier_host_t *oh, const sharp_tcp_signals_t *s, double loss, double rtt,
                           double rate_median, double rtt_median)
{
    if (loss > 0) {
        oh->kernel_loss_n++;
        if (loss > oh->kernel_loss_score) {
            oh->kernel_loss_score = loss;
            oh->kernel_loss_rate = s->retrans_rate;
            oh->kernel_loss_median = rate_median > 0 ? rate_median : 0;
        }
    }
    if (rtt > 0) {
        oh->kernel_rtt_n++;
        if (rtt > oh->kernel_rtt_score) {
            oh->kernel_rtt_score = rtt;
            oh->kernel_rtt_us = s->rtt_us;
            oh->kernel_rtt_median = rtt_median;
        }
    }
}

/* The run's cause: the verdict's rule over the whole run rather than its
 * last interval, so an interval of a lossy host whose retransmits came in
 * low but whose RTT (inflated by the loss) tripped does not rename it. */
sharp_kernel_verdict_t sharp_outlier_kernel_run_cause(const sharp_outlier_host_t *oh)
{
    return verdict_of(true, oh->kernel_loss_score, oh->kernel_rtt_score);
}

static const char *verdict_name(sharp_kernel_verdict_t v)
{
    return v == SHARP_KERNEL_VERDICT_LOSS ? "packet loss" : v == SHARP_KERNEL_VERDICT_LATENCY ? "latency" : "ok";
}

void sharp_outlier_kernel_interval(sharp_cluster_t *c, uint64_t now_ms)
{
    sharp_outlier_t *od = c->outlier;
    if (!od || !od->cfg.kernel.enabled) return;
    const sharp_outlier_kernel_config_t *k = &od->cfg.kernel;
    /* the medians of the hosts in rotation with this interval's traffic */
    uint32_t nrate = 0, nrtt = 0;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        const sharp_host_t *h = c->hosts[i];
        const sharp_tcp_signals_t *s = &h->kern.sig;
        if (!h->kern.has_prev || (host_flags(h) & SHARP_HOST_FAILED_OUTLIER)) continue;
        if (s->segs_out >= k->min_segments && s->segs_out > 0 && s->retrans_rate >= 0)
            od->rates[nrate++] = s->retrans_rate;
    }
    double rate_median = sharp_tcp_median(od->rates, nrate);
    for (uint32_t i = 0; i < od->nhosts; i++) {
        const sharp_host_t *h = c->hosts[i];
        const sharp_tcp_signals_t *s = &h->kern.sig;
        if (!h->kern.has_prev || (host_flags(h) & SHARP_HOST_FAILED_OUTLIER)) continue;
        if (s->rtt_samples > 0 && s->rtt_us > 0) od->rates[nrtt++] = s->rtt_us;
    }
    double rtt_median = sharp_tcp_median(od->rates, nrtt);
    bool any = false;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_host_t *h = c->hosts[i];
        sharp_outlier_host_t *oh = od->hosts[i];
        if (!h->kern.has_prev || (host_flags(h) & SHARP_HOST_FAILED_OUTLIER)) {
            kernel_run_reset(oh);
            continue;
        }
        const sharp_tcp_signals_t *s = &h->kern.sig;
        /* signals not computed this time (the source had nothing for the
         * host) are not judged twice */
        if (s->intervals == oh->kernel_judged) continue;
        oh->kernel_judged = s->intervals;
        double loss, rtt;
        bool judged = kernel_scores(k, s, rate_median, nrate, rtt_median, nrtt, &loss, &rtt);
        sharp_kernel_verdict_t v = verdict_of(judged, loss, rtt);
        if (v == SHARP_KERNEL_VERDICT_UNKNOWN) continue; /* neither counts nor breaks the run */
        if (v == SHARP_KERNEL_VERDICT_OK) {
            kernel_run_reset(oh);
            continue;
        }
        oh->kernel_streak++;
        kernel_run_add(oh, s, loss, rtt, rate_median, rtt_median);
        v = oh->kernel_cause = sharp_outlier_kernel_run_cause(oh);
        if (oh->kernel_streak < k->consecutive_intervals) continue;
        uint32_t n = oh->kernel_streak;
        /* the named signal's strongest interval; the other one, when it
         * also tripped during the run, follows */
        char r[32], m[32], also[96] = "";
        if (v == SHARP_KERNEL_VERDICT_LOSS) {
            if (oh->kernel_rtt_n) {
                put_ms(r, sizeof r, oh->kernel_rtt_us);
                snprintf(also, sizeof also, "; RTT up to %s in %u", r, oh->kernel_rtt_n);
            }
            sharp_log_info("outlier detection: cluster '%s' host %s: %s, retransmission rate %.2f%% "
                           "(cluster median %.2f%%) in %u of %u intervals%s",
                           c->name, h->address, verdict_name(v), 100 * oh->kernel_loss_rate,
                           100 * oh->kernel_loss_median, oh->kernel_loss_n, n, also);
            snprintf(oh->detail, sizeof oh->detail, "retransmits %.1f%% vs cluster median %.1f%%",
                     100 * oh->kernel_loss_rate, 100 * oh->kernel_loss_median);
        } else {
            if (oh->kernel_loss_n)
                snprintf(also, sizeof also, "; retransmission rate up to %.2f%% in %u", 100 * oh->kernel_loss_rate,
                         oh->kernel_loss_n);
            sharp_log_info("outlier detection: cluster '%s' host %s: %s, RTT %.0f us (cluster median %.0f us) "
                           "in %u of %u intervals%s",
                           c->name, h->address, verdict_name(v), oh->kernel_rtt_us, oh->kernel_rtt_median,
                           oh->kernel_rtt_n, n, also);
            put_ms(r, sizeof r, oh->kernel_rtt_us);
            put_ms(m, sizeof m, oh->kernel_rtt_median);
            snprintf(oh->detail, sizeof oh->detail, "RTT %s vs cluster median %s", r, m);
        }
        kernel_run_reset(oh);
        count(od, od->st.detected[SHARP_OUTLIER_KERNEL]);
        eject(od, i, SHARP_OUTLIER_KERNEL, now_ms, false);
        any = true;
    }
    if (any) set_gauges(od);
}

/* ---- SHARP's latency monitor ---- */

void sharp_outlier_latency_interval(sharp_outlier_t *od, uint64_t now_ms)
{
    const sharp_outlier_latency_config_t *l = &od->cfg.latency;
    if (!l->enabled) return;
    sharp_cluster_t *c = od->cluster;
    uint32_t n = 0;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_outlier_host_t *oh = od->hosts[i];
        oh->latency_pct_us = -1;
        if (!oh->latency) continue;
        /* every host's histogram is emptied, an ejected host's too (its
         * half-open probes are not a sample) */
        uint64_t total = sharp_latency_take(oh->latency, od->latency_counts);
        if ((host_flags(c->hosts[i]) & SHARP_HOST_FAILED_OUTLIER) || total < l->request_volume) continue;
        oh->latency_pct_us = sharp_latency_percentile(od->latency_counts, total, l->percentile);
        od->rates[n++] = oh->latency_pct_us;
    }
    od->latency_median_us = n >= l->minimum_hosts ? sharp_tcp_median(od->rates, n) : -1;
    if (od->latency_median_us < 0) return; /* too few hosts to judge anyone: runs are kept */
    bool any = false;
    for (uint32_t i = 0; i < od->nhosts; i++) {
        sharp_outlier_host_t *oh = od->hosts[i];
        sharp_host_t *h = c->hosts[i];
        if (host_flags(h) & SHARP_HOST_FAILED_OUTLIER) {
            oh->latency_streak = 0;
            continue;
        }
        if (oh->latency_pct_us < 0) continue; /* too few tries: neither counts nor breaks the run */
        if (!sharp_outlier_latency_verdict(l, oh->latency_pct_us, od->latency_median_us)) {
            oh->latency_streak = 0;
            continue;
        }
        if (++oh->latency_streak < l->consecutive_intervals) continue;
        oh->latency_streak = 0;
        char p[32], m[32];
        put_ms(p, sizeof p, oh->latency_pct_us);
        put_ms(m, sizeof m, od->latency_median_us);
        snprintf(oh->detail, sizeof oh->detail, "p%g %s vs cluster median %s", l->percentile, p, m);
        sharp_log_info("outlier detection: cluster '%s' host %s: latency, p%g %s (cluster median %s) for %u intervals",
                       c->name, h->address, l->percentile, p, m, l->consecutive_intervals);
        /* its half-open probe must answer within the threshold it crossed */
        double limit = SHARP_MAX(l->factor * od->latency_median_us, (double)l->min_latency_us);
        atomic_store_explicit(&oh->probe_latency_limit_us, (uint64_t)limit, RELAXED);
        count(od, od->st.detected[SHARP_OUTLIER_LATENCY]);
        eject(od, i, SHARP_OUTLIER_LATENCY, now_ms, false);
        any = true;
    }
    if (any) set_gauges(od);
}

void sharp_outlier_on_health_check_success(sharp_cluster_t *c, sharp_host_t *h, uint64_t now_ms)
{
    sharp_outlier_t *od = c->outlier;
    if (!od || h->index >= od->nhosts || !od->cfg.successful_active_health_check_uneject_host)
        return;
    uint32_t f = host_flags(h);
    if (f & SHARP_HOST_FAILED_ACTIVE_HC) return;
    if (f & SHARP_HOST_FAILED_OUTLIER) {
        uneject(od, h->index, now_ms, SHARP_HOST_BREAKER_CLOSED);
    } else {
        sharp_host_breaker_cas(h, SHARP_HOST_BREAKER_HALF_OPEN, SHARP_HOST_BREAKER_CLOSED);
    }
    set_gauges(od);
}

/* ---- readers ---- */

sharp_host_breaker_t sharp_outlier_breaker(const sharp_host_t *h)
{
    return (sharp_host_breaker_t)atomic_load_explicit(&h->breaker, RELAXED);
}

const char *sharp_outlier_breaker_name(sharp_host_breaker_t b)
{
    switch (b) {
    case SHARP_HOST_BREAKER_OPEN:
        return "open";
    case SHARP_HOST_BREAKER_HALF_OPEN:
        return "half_open";
    case SHARP_HOST_BREAKER_CLOSED:
        break;
    }
    return "closed";
}

double sharp_outlier_success_rate(const sharp_cluster_t *c, const sharp_host_t *h, int monitor)
{
    const sharp_outlier_t *od = c->outlier;
    if (!od || h->index >= od->nhosts || monitor < 0 || monitor >= SHARP_OUTLIER_NMONITORS)
        return -1;
    return od->hosts[h->index]->success_rate[monitor];
}

/* ---- main loop glue ---- */

static void on_handle_closed(uv_handle_t *hd)
{
    sharp_outlier_t *od = hd->data;
    od->handles_open--;
}

static void on_async(uv_async_t *a)
{
    sharp_outlier_process_pending(a->data, uv_now(a->loop));
}

static void on_timer(uv_timer_t *t)
{
    sharp_outlier_t *od = t->data;
    sharp_outlier_on_interval(od, uv_now(t->loop));
    /* Envoy re-arms the interval with the runtime's interval_ms each time */
    sharp_outlier_config_t eff;
    uint64_t iv = effective(od, &eff)->interval_ms;
    if (iv != uv_timer_get_repeat(t)) uv_timer_start(t, on_timer, iv, iv);
}

void sharp_outlier_start(sharp_cluster_t *c, uv_loop_t *loop)
{
    sharp_outlier_t *od = c->outlier;
    if (!od || od->started) return;
    uv_timer_init(loop, &od->timer);
    uv_async_init(loop, &od->async, on_async);
    od->timer.data = od->async.data = od;
    od->handles_open = 2;
    uv_timer_start(&od->timer, on_timer, od->cfg.interval_ms, od->cfg.interval_ms);
    uv_unref((uv_handle_t *)&od->timer);
    uv_unref((uv_handle_t *)&od->async);
    od->started = true;
}

bool sharp_outlier_closing(const sharp_cluster_t *c)
{
    return c->outlier && c->outlier->handles_open > 0;
}

void sharp_outlier_close(sharp_cluster_t *c)
{
    sharp_outlier_t *od = c->outlier;
    if (!od || !od->started) return;
    od->started = false;
    uv_timer_stop(&od->timer);
    uv_close((uv_handle_t *)&od->timer, on_handle_closed);
    uv_close((uv_handle_t *)&od->async, on_handle_closed);
}
