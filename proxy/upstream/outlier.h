/* outlier.h: outlier detection over a cluster's hosts (Envoy's
 * cluster.outlier_detection), and the closed / open / half-open breaker view
 * over it.
 *
 * Workers report every upstream result of every try with the two put
 * functions below; they only touch per-host atomics. Consecutive-error
 * detectors trip on the reporting worker (the atomic increment that reaches
 * the threshold elects one trip), which hands it to the main thread through
 * a uv_async; the main thread decides and ejects, as Envoy posts to its main
 * dispatcher. Success-rate and failure-percentage detectors run on the main
 * thread's interval timer. An ejected host carries SHARP_HOST_FAILED_OUTLIER
 * in its health flags, so load balancers skip it; when its ejection time is
 * over it turns half-open (host.h) before it is trusted again. */
#ifndef SHARP_UPSTREAM_OUTLIER_H
#define SHARP_UPSTREAM_OUTLIER_H

#include "upstream/cluster.h"
#include "upstream/latency.h"

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

/* Results that did not come with an HTTP status from the upstream (Envoy's
 * Outlier::Result local-origin values). */
typedef enum {
    SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS,       /* a connection was established */
    SHARP_OUTLIER_LOCAL_CONNECT_FAILED,        /* refused, reset or closed before a response */
    SHARP_OUTLIER_LOCAL_TIMEOUT,               /* connect timeout, request or per-try timeout */
    SHARP_OUTLIER_LOCAL_CONNECT_SUCCESS_FINAL, /* the try ended with a response (local-origin success) */
} sharp_outlier_local_t;

/* Any thread. An HTTP status the host answered with. */
void sharp_outlier_put_http(sharp_cluster_t *c, sharp_host_t *h, uint32_t code);
/* Any thread. A local-origin result for the host. */
void sharp_outlier_put_local(sharp_cluster_t *c, sharp_host_t *h, sharp_outlier_local_t r);
/* Any thread. A try's latency: to the response headers, or to its timeout
 * or cancellation before them (`answered` false). Call it before the
 * try's result (put_http), so that a half-open probe answering slower than
 * its limit fails. No-op without the latency monitor. */
void sharp_outlier_put_latency(sharp_cluster_t *c, sharp_host_t *h, uint64_t us, bool answered);

/* ---- detector (main thread unless stated) ---- */

/* Envoy's OutlierEjectionType, in its order; names give the stats
 * (ejections_detected_<name>, ejections_enforced_<name>). */
typedef enum {
    SHARP_OUTLIER_CONSECUTIVE_5XX,
    SHARP_OUTLIER_CONSECUTIVE_GATEWAY_FAILURE,
    SHARP_OUTLIER_SUCCESS_RATE,
    SHARP_OUTLIER_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    SHARP_OUTLIER_SUCCESS_RATE_LOCAL_ORIGIN,
    SHARP_OUTLIER_FAILURE_PERCENTAGE,
    SHARP_OUTLIER_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
    /* SHARP: the kernel monitor (OutlierDetection.monitors, KernelSignals):
     * packet loss or latency seen in the kernel's TCP signals */
    SHARP_OUTLIER_KERNEL,
    /* SHARP: the latency monitor (OutlierDetection.monitors,
     * LatencyOutlier): a latency percentile above the cluster's median */
    SHARP_OUTLIER_LATENCY,
    SHARP_OUTLIER_NTYPES,
} sharp_outlier_type_t;

/* The two success-rate monitors of a host: external origin (HTTP codes, and
 * every result when local-origin errors are not split) and local origin. */
enum { SHARP_OUTLIER_EXTERNAL, SHARP_OUTLIER_LOCAL, SHARP_OUTLIER_NMONITORS };

/* Requests a half-open host admits per interval (see docs/architecture.md). */
#define SHARP_OUTLIER_HALF_OPEN_PROBES 1

/* SHARP's kernel monitor (sharp.extensions.outlier_detection_monitors.
 * kernel.v1.KernelSignals), its defaults in the comments. */
typedef struct sharp_outlier_kernel_config {
    bool enabled;                  /* the monitor is configured */
    double min_retransmit_rate;    /* 0.01 */
    double retransmit_rate_factor; /* 3 */
    uint32_t min_segments;         /* 50 */
    double rtt_ratio;              /* 3; 0: no latency check */
    uint64_t min_rtt_us;           /* 5000 */
    uint32_t consecutive_intervals; /* 3 */
    uint32_t minimum_hosts;        /* 3 */
} sharp_outlier_kernel_config_t;

/* SHARP's latency monitor (sharp.extensions.outlier_detection_monitors.
 * latency.v1.LatencyOutlier), its defaults in the comments. */
typedef struct sharp_outlier_latency_config {
    bool enabled;                   /* the monitor is configured */
    double percentile;              /* 95, in (0, 100] */
    double factor;                  /* 3, at least 1 */
    uint64_t min_latency_us;        /* 20000 */
    uint32_t request_volume;        /* 50 */
    uint32_t consecutive_intervals; /* 3 */
    uint32_t minimum_hosts;         /* 3 */
} sharp_outlier_latency_config_t;

/* What one interval's kernel signals say about a host. */
typedef enum {
    SHARP_KERNEL_VERDICT_UNKNOWN, /* not enough traffic (or hosts) to judge */
    SHARP_KERNEL_VERDICT_OK,
    SHARP_KERNEL_VERDICT_LOSS,    /* retransmission rate above the thresholds */
    SHARP_KERNEL_VERDICT_LATENCY, /* RTT above the thresholds */
} sharp_kernel_verdict_t;

/* cluster.outlier_detection with Envoy's defaults filled in. */
typedef struct sharp_outlier_config {
    uint64_t interval_ms;                       /* 10 s */
    uint64_t base_ejection_time_ms;             /* 30 s */
    uint64_t max_ejection_time_ms;              /* max(300 s, base_ejection_time) */
    uint64_t max_ejection_time_jitter_ms;       /* 0 */
    uint32_t consecutive_5xx;                   /* 5 */
    uint32_t consecutive_gateway_failure;       /* 5 */
    uint32_t consecutive_local_origin_failure;  /* 5, only with split */
    uint32_t max_ejection_percent;              /* 10 */
    uint32_t enforcing[SHARP_OUTLIER_NTYPES];   /* percent: 100 100 100 100 100 0 0, gateway 0 */
    uint32_t success_rate_minimum_hosts;        /* 5 */
    uint32_t success_rate_request_volume;       /* 100 */
    uint32_t success_rate_stdev_factor;         /* thousandths, 1900 */
    uint32_t failure_percentage_threshold;      /* 85 */
    uint32_t failure_percentage_minimum_hosts;  /* 5 */
    uint32_t failure_percentage_request_volume; /* 50 */
    bool split_external_local_origin_errors;
    bool successful_active_health_check_uneject_host; /* true */
    bool always_eject_one_host;                       /* false */
    sharp_outlier_kernel_config_t kernel;             /* SHARP's kernel monitor */
    sharp_outlier_latency_config_t latency;           /* SHARP's latency monitor */
} sharp_outlier_config_t;

/* Per-host detector state. The first group is written by workers (atomics
 * only); the rest belongs to the main thread. */
typedef struct sharp_outlier_host {
    _Atomic uint32_t consecutive_5xx, consecutive_gateway_failure, consecutive_local_origin_failure;
    /* Results of the running interval per monitor: total << 32 | successes,
     * so one atomic add counts both and one exchange reads both. */
    _Atomic uint64_t bucket[SHARP_OUTLIER_NMONITORS];
    _Atomic uint32_t pending; /* events for the main thread: see outlier.c */
    uint32_t backoff;         /* Envoy's ejectTimeBackoff: multiplier of base_ejection_time */
    uint32_t num_ejections;   /* enforced ejections so far (the event log's num_ejections) */
    uint64_t last_ejection_ms, last_unejection_ms, jitter_ms;
    bool unejected;                               /* last_unejection_ms is set */
    sharp_outlier_type_t type;                    /* of the last ejection */
    uint64_t interval[SHARP_OUTLIER_NMONITORS];   /* bucket of the interval just finished */
    double success_rate[SHARP_OUTLIER_NMONITORS]; /* last interval's, -1 when not computed */
    sharp_host_t *host;
    bool member; /* the host is in the cluster's current set */
    /* the kernel monitor: intervals in a row judged an outlier, and why */
    uint32_t kernel_streak;
    sharp_kernel_verdict_t kernel_cause;
    /* the run's evidence, signal by signal: the intervals it was above its
     * thresholds (whatever the interval's verdict) and the figures of the
     * one where it was furthest above (score 1: at the threshold). The
     * ejection names the signal that went further above them over the run
     * (kernel_cause), not the last interval's verdict. */
    uint32_t kernel_loss_n, kernel_rtt_n;
    double kernel_loss_score, kernel_loss_rate, kernel_loss_median;
    double kernel_rtt_score, kernel_rtt_us, kernel_rtt_median;
    uint64_t kernel_judged; /* the host's signals' interval count last judged */
    /* the latency monitor: the histogram workers add to (NULL without the
     * monitor), intervals in a row judged an outlier, the last interval's
     * percentile (-1: fewer than request_volume tries), and the limit a
     * half-open probe must answer within (0: none; set when the monitor
     * ejects, in microseconds) */
    sharp_latency_hist_t *latency;
    uint32_t latency_streak;
    double latency_pct_us;
    _Atomic uint64_t probe_latency_limit_us;
    /* the ejecting detector's figures, for the host's diagnosis */
    char detail[128];
} sharp_outlier_host_t;

typedef struct sharp_outlier {
    sharp_outlier_config_t cfg;
    sharp_cluster_t *cluster;
    /* The states of the cluster's current hosts, indexed like
     * cluster->hosts (main thread). Each state belongs to its host
     * (sharp_host_t.outlier, which workers use) and lives until the
     * detector is freed: owned[] lists them all. */
    sharp_outlier_host_t **hosts;
    uint32_t nhosts;
    sharp_outlier_host_t **owned;
    uint32_t nowned;
    uint32_t ejections_active;
    double sr_average[SHARP_OUTLIER_NMONITORS],
        sr_threshold[SHARP_OUTLIER_NMONITORS]; /* -1: none */
    double latency_median_us;                  /* the latency monitor's last median, -1: none */
    uint32_t *latency_counts;                  /* SHARP_LATENCY_BUCKETS scratch */
    uint64_t rng;                              /* enforcement rolls and jitter */
    double *rates;                             /* nhosts scratch for the interval sweep */
    uint32_t *sr_hosts, *fp_hosts;
    sharp_stats_t *stats;
    int64_t shown_active, shown_half_open; /* gauge values last set */
    struct {
        sharp_stat_id_t active, half_open, total, overflow, enforced_total, consecutive_5xx,
            success_rate, detected[SHARP_OUTLIER_NTYPES], enforced[SHARP_OUTLIER_NTYPES];
    } st;
    /* Main loop handles: the interval timer and the wake-up workers send
     * after a consecutive-error trip or a probe result. `started` is set
     * before the workers start and cleared only after they are joined. */
    uv_timer_t timer;
    uv_async_t async;
    bool started;
    int handles_open;
    /* cluster_manager.outlier_detection.event_log_path (not owned; NULL:
     * none): one JSON OutlierDetectionEvent per line, as Envoy writes them */
    struct sharp_access_log_file *event_log;
} sharp_outlier_t;

void sharp_outlier_config_defaults(sharp_outlier_config_t *cfg);
/* Validates `od` (an envoy.config.cluster.v3.OutlierDetection) and attaches
 * a detector to the cluster, whose hosts and stats must already be set up.
 * On error returns -1 with the offending field's full path in `errpath`
 * (path + ".outlier_detection.<field>") and the message in `err`. */
int sharp_outlier_configure(sharp_cluster_t *c, const ProtobufCMessage *od, const char *path,
                            char *errpath, size_t errpathlen, char *err, size_t errlen);
/* Creates the detector for c (c->outlier) and registers its stats
 * (cluster.<name>.outlier_detection.*) in `stats`. */
sharp_outlier_t *sharp_outlier_create(sharp_cluster_t *c, const sharp_outlier_config_t *cfg,
                                      sharp_stats_t *stats, uint64_t seed);
/* Gives the cluster's current hosts their detector state (new hosts, and
 * former ones coming back, start fresh); a removed host that was ejected
 * no longer counts in ejections_active. */
void sharp_outlier_hosts_attach(sharp_outlier_t *od);
/* The same for c's detector after its host set changed (a DNS answer; main
 * thread, before the workers get the new set). No-op without a detector. */
void sharp_outlier_hosts_changed(sharp_cluster_t *c);
/* Frees the detector; its handles must be closed (sharp_outlier_close and
 * a loop turn) or never started. */
void sharp_outlier_free(sharp_outlier_t *od);
/* A host that left the cluster is being freed (cluster.h's
 * sharp_cluster_collect_departed): the detector no longer owns its state,
 * which goes with the host (h->outlier). NULL od is fine. */
void sharp_outlier_forget_host(sharp_outlier_t *od, sharp_host_t *h);
/* Starts the interval timer and the wake-up on the main loop; both are
 * unreferenced, so they do not keep the loop alive. No-op without a
 * detector. Call before the workers start. */
void sharp_outlier_start(sharp_cluster_t *c, uv_loop_t *loop);
/* Closes the handles. Call after the workers are joined. */
void sharp_outlier_close(sharp_cluster_t *c);
/* Its handles are still closing (the detector cannot be freed yet). */
bool sharp_outlier_closing(const sharp_cluster_t *c);

/* Handles what workers reported since the last call: consecutive-error
 * trips (Envoy's onConsecutiveErrorWorker) and half-open probe results. */
void sharp_outlier_process_pending(sharp_outlier_t *od, uint64_t now_ms);
/* One interval sweep (Envoy's onIntervalTimer): un-ejects hosts whose time
 * is over (to half-open), refills half-open probe budgets, runs the
 * success-rate and failure-percentage detectors on the interval's results
 * and forgives one ejection step of hosts healthy for an interval. */
void sharp_outlier_on_interval(sharp_outlier_t *od, uint64_t now_ms);
/* The kernel monitor's interval (called by the kernel signals, kernel/
 * kernel.h, once each host's signals are computed): judges every host that
 * is not ejected against the cluster's medians and ejects those judged
 * outliers for consecutive_intervals intervals in a row. No-op without the
 * monitor. */
void sharp_outlier_kernel_interval(sharp_cluster_t *c, uint64_t now_ms);
/* The latency monitor's interval (part of sharp_outlier_on_interval):
 * reads every host's latency histogram, judges the hosts not ejected that
 * had request_volume tries against the median of their percentiles, and
 * ejects those judged outliers for consecutive_intervals in a row. No-op
 * without the monitor. */
void sharp_outlier_latency_interval(sharp_outlier_t *od, uint64_t now_ms);
/* A successful active health check of h (the health checker calls it): an
 * ejected host is restored at once, closed, when
 * successful_active_health_check_uneject_host is on. */
void sharp_outlier_on_health_check_success(sharp_cluster_t *c, sharp_host_t *h, uint64_t now_ms);

/* ---- pure helpers (exposed for tests) ---- */

/* Envoy's success-rate threshold over n rates: mean - factor * stdev
 * (population stdev). */
void sharp_outlier_success_rate_threshold(const double *rates, size_t n, double stdev_factor,
                                          double *mean, double *threshold);
/* How long an ejection lasts: min(base * backoff, max) + jitter. */
uint64_t sharp_outlier_ejection_ms(const sharp_outlier_config_t *cfg, uint32_t backoff,
                                   uint64_t jitter_ms);
/* The kernel monitor's verdict on one host's interval: loss when its
 * retransmission rate (with at least min_segments sent) reaches both
 * min_retransmit_rate and retransmit_rate_factor times rate_median; latency
 * when its RTT (sampled in the interval) reaches both rtt_ratio times
 * rtt_median and min_rtt. A median over fewer than minimum_hosts hosts
 * (rate_hosts, rtt_hosts) judges nothing; -1 medians are unknown. */
sharp_kernel_verdict_t sharp_outlier_kernel_verdict(const sharp_outlier_kernel_config_t *k,
                                                    const sharp_tcp_signals_t *s, double rate_median,
                                                    uint32_t rate_hosts, double rtt_median, uint32_t rtt_hosts);
/* The cause of a host's run of outlier intervals (the kernel monitor's
 * evidence so far, sharp_outlier_host_t): the verdict's rule over the
 * whole run, the signal that went furthest above its threshold in any of
 * its intervals; a lossy host whose last interval tripped on its RTT
 * alone is still named for its loss. */
sharp_kernel_verdict_t sharp_outlier_kernel_run_cause(const sharp_outlier_host_t *oh);
/* The latency monitor's verdict on one host's interval: true when its
 * percentile reaches both factor times the median and min_latency. The
 * caller has checked request_volume and minimum_hosts. */
bool sharp_outlier_latency_verdict(const sharp_outlier_latency_config_t *l, double pct_us, double median_us);
/* max_ejection_percent check for one more ejection out of nhosts. */
bool sharp_outlier_may_eject(const sharp_outlier_config_t *cfg, uint32_t active, uint32_t nhosts);

/* ---- readers (main thread, admin) ---- */

sharp_host_breaker_t sharp_outlier_breaker(const sharp_host_t *h);
const char *sharp_outlier_breaker_name(sharp_host_breaker_t b); /* "closed", "open", "half_open" */
/* The host's success rate of the last interval, -1 when not computed (or
 * no detector). */
double sharp_outlier_success_rate(const sharp_cluster_t *c, const sharp_host_t *h, int monitor);

#endif
