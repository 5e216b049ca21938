/* diagnosis.h: a one-line cause for every ejected or degraded upstream
 * host, built from the signals SHARP has about it.
 *
 * Every signals interval (the kernel signals' timer, runtime key
 * sharp.kernel.interval_ms; it runs with --kernel-signals off too) the main
 * thread gathers each host's evidence of the interval: its kernel TCP
 * signals (kernel/signals.h) when there are any, and what the proxy itself
 * saw (tries answered and their latency to the response headers, 5xx
 * answers, upstream resets, timeouts, connect failures), and compares it
 * with the cluster's other hosts and with the host's own baseline. The
 * first cause that holds, in this order, is the interval's evidence:
 *
 *   unreachable         connect failures and no connection established
 *   resets              connections reset by the host
 *   packet_loss         retransmission rate over a floor and a factor of
 *                       the other hosts' median
 *   network_latency     smoothed RTT over a floor and a factor of theirs
 *   application_errors  5xx answers, the network clean
 *   overload            latency and requests in flight up together over
 *                       the host's own baseline while it was given more
 *                       requests, the network clean
 *   latency             latency over a floor and a factor of the other
 *                       hosts' median (or tries timing out), network clean
 *
 * A cause becomes the host's diagnosis after set_intervals intervals in a
 * row and goes after clear_intervals intervals without it. An ejection
 * (upstream/outlier.c) sets the diagnosis at once from the same evidence,
 * or from what the detector that ejected saw when no signal says more, and
 * keeps it until the host is un-ejected.
 *
 * The diagnosis shows in /clusters, in one JSON log line (logger
 * "upstream") each time the cause changes, and in the access log's
 * %UPSTREAM_HOST_DIAGNOSIS%. Workers read it through a reference-counted
 * string the main thread swaps and retires (retire.h).
 *
 * The evaluation (sharp_diag_evaluate, _step, _eject) is pure: the unit
 * tests feed it recorded signal sequences. */
#ifndef SHARP_UPSTREAM_DIAGNOSIS_H
#define SHARP_UPSTREAM_DIAGNOSIS_H

#include "common.h"

#include <stdatomic.h>

#define SHARP_DIAG_TEXT_MAX 256

typedef enum {
    SHARP_DIAG_NONE,
    SHARP_DIAG_UNREACHABLE,
    SHARP_DIAG_RESETS,
    SHARP_DIAG_PACKET_LOSS,
    SHARP_DIAG_NETWORK_LATENCY,
    SHARP_DIAG_APP_ERRORS,
    SHARP_DIAG_OVERLOAD,
    SHARP_DIAG_LATENCY,
    /* ejections only: local-origin failures (connect failures, timeouts,
     * resets) that no interval's signal pins down */
    SHARP_DIAG_CONNECTION_FAILURES,
    SHARP_DIAG_NCAUSES,
} sharp_diag_cause_t;

/* "none", "unreachable", "resets", "packet_loss", "network_latency",
 * "application_errors", "overload", "latency", "connection_failures" */
const char *sharp_diag_cause_name(sharp_diag_cause_t c);

typedef struct sharp_diag_config {
    /* packet loss: the kernel monitor's thresholds (its configuration when
     * the cluster has one, else its defaults) */
    double loss_min_rate;          /* 0.01 */
    double loss_factor;            /* 3, over the other hosts' median */
    uint32_t loss_min_segments;    /* 50 segments sent in the interval */
    uint32_t loss_min_retransmits; /* 3 */
    /* network latency: RTT (the kernel monitor's rtt_ratio and min_rtt) */
    double rtt_factor;             /* 3; 0: not judged */
    double rtt_min_us;             /* 5000 */
    /* connect failures, resets, 5xx answers, timeouts in one interval */
    uint32_t min_failures;         /* 3 */
    double error_min_share;        /* 0.1 of the answers are 5xx */
    double timeout_min_share;      /* 0.1 of the tries timed out */
    double reset_min_share;        /* 0.05 of the tries were reset */
    /* latency: the latency monitor's factor and min_latency when the
     * cluster has one, else its defaults */
    uint32_t min_requests;         /* 10 answers in the interval */
    double latency_factor;         /* 3, over the other hosts' median */
    double latency_min_us;         /* 20000 */
    /* overload: over the host's baseline (a moving average of its quiet
     * intervals), latency and in-flight both overload_factor higher and
     * its request rate overload_rate_factor higher */
    double overload_factor;        /* 2 */
    double overload_rate_factor;   /* 1.5 */
    uint32_t baseline_intervals;   /* 3 quiet intervals before it counts */
    /* hysteresis */
    uint32_t set_intervals;        /* 2 */
    uint32_t clear_intervals;      /* 3 */
} sharp_diag_config_t;

/* One host's evidence over one interval. */
typedef struct sharp_diag_input {
    double interval_s;
    /* the kernel's TCP signals of the interval; kernel false: none (off,
     * or no counters for the host) */
    bool kernel;
    uint64_t segs_out, retrans, rst_rx, connects, connect_fail, rtt_samples;
    double retrans_rate; /* -1: nothing sent */
    double rtt_us;       /* smoothed RTT, -1 unknown */
    /* what the proxy saw */
    uint64_t responses;     /* tries answered with response headers */
    uint64_t resp_5xx;      /* of which 5xx (gRPC statuses mapped as Envoy maps them) */
    uint64_t timeouts;      /* tries timed out before their response headers */
    uint64_t resets;        /* tries reset by the host or its connection */
    uint64_t cx_fail;       /* connect failures of the pools */
    double latency_mean_us; /* answers' mean time to response headers, -1: none */
    double in_flight;       /* mean tries waiting for headers (Little's law) */
} sharp_diag_input_t;

/* The cluster around one host: the medians of the other hosts (not ejected,
 * with enough traffic for the figure), -1 when there is none. */
typedef struct sharp_diag_context {
    const char *host; /* the host's address, for the text */
    double retrans_rate, rtt_us, latency_us, error_share;
} sharp_diag_context_t;

typedef struct sharp_diag_state {
    sharp_diag_cause_t cause; /* the diagnosis, NONE when healthy */
    sharp_diag_cause_t pending;
    uint32_t pending_n, quiet_n;
    bool pinned; /* set by an ejection: kept until the host is un-ejected */
    /* the host's baseline: moving averages over quiet intervals */
    double base_latency_us, base_rate, base_in_flight;
    uint32_t base_n;
    char text[SHARP_DIAG_TEXT_MAX]; /* "" when healthy */
} sharp_diag_state_t;

/* What the detector that ejected a host saw. */
typedef enum {
    SHARP_DIAG_BY_ERRORS,      /* consecutive 5xx / gateway failure, success rate, failure percentage */
    SHARP_DIAG_BY_LOCAL,       /* their local-origin variants */
    SHARP_DIAG_BY_LATENCY,     /* the latency monitor */
    SHARP_DIAG_BY_KERNEL_LOSS, /* the kernel monitor: retransmissions */
    SHARP_DIAG_BY_KERNEL_RTT,  /* the kernel monitor: RTT */
} sharp_diag_detector_t;

/* sharp_diag_step / _eject results */
enum {
    SHARP_DIAG_CAUSE_CHANGED = 1u << 0, /* log it */
    SHARP_DIAG_TEXT_CHANGED = 1u << 1,  /* publish it */
};

void sharp_diag_config_defaults(sharp_diag_config_t *cfg);
void sharp_diag_state_init(sharp_diag_state_t *st);

/* The interval's evidence: the first cause that holds (NONE if none), its
 * line in text[0..n). Reads the baseline of st, changes nothing. */
sharp_diag_cause_t sharp_diag_evaluate(const sharp_diag_config_t *cfg, const sharp_diag_state_t *st,
                                       const sharp_diag_input_t *in, const sharp_diag_context_t *cx, char *text,
                                       size_t n);

/* One interval: evaluates, updates the baseline (quiet intervals only) and
 * the diagnosis (hysteresis; a pinned one stays). Returns SHARP_DIAG_*_CHANGED
 * bits. */
unsigned sharp_diag_step(const sharp_diag_config_t *cfg, sharp_diag_state_t *st, const sharp_diag_input_t *in,
                         const sharp_diag_context_t *cx);

/* The host was ejected by `by`, which saw `detail` ("p95 212 ms vs cluster
 * median 11 ms"): the diagnosis is the evidence's network cause if there is
 * one (the network explains what the detector saw), else the detector's,
 * worded with the evidence's figures where they agree. Pins it. */
unsigned sharp_diag_eject(const sharp_diag_config_t *cfg, sharp_diag_state_t *st, const sharp_diag_input_t *in,
                          const sharp_diag_context_t *cx, sharp_diag_detector_t by, const char *detail);
/* The host is back (half-open or closed): its diagnosis follows the
 * evidence again. */
void sharp_diag_uneject(sharp_diag_state_t *st);

/* The median of sorted[0..n) without the element at index `self` (self >= n:
 * of all n); -1 when nothing is left. */
double sharp_diag_median_without(const double *sorted, size_t n, size_t self);

/* ---- the hosts' side (diagnosis_host.c) ---- */

struct sharp_host;
struct sharp_cluster;

/* The published diagnosis: an immutable string workers take a reference on. */
typedef struct sharp_diag_text {
    _Atomic uint32_t refs;
    char s[];
} sharp_diag_text_t;

/* A host's diagnosis state (embedded in sharp_host_t). */
typedef struct sharp_host_diag {
    /* workers: answers and their summed latency, 5xx answers, resets */
    _Atomic uint64_t lat_count, lat_sum_us, resp_5xx, resets;
    _Atomic(sharp_diag_text_t *) text; /* NULL: no diagnosis */
    /* main thread */
    struct {
        uint64_t lat_count, lat_sum_us, resp_5xx, resets, timeouts, cx_fail;
    } prev;
    uint64_t prev_ms;
    bool has_prev;
    sharp_diag_input_t last;   /* the last interval's evidence */
    sharp_diag_context_t last_cx;
    sharp_diag_state_t st;
} sharp_host_diag_t;

/* Any thread: a try of h answered (response headers) after `us`. */
static inline void sharp_diag_put_answer(sharp_host_diag_t *d, uint64_t us, bool is_5xx)
{
    atomic_fetch_add_explicit(&d->lat_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->lat_sum_us, us, memory_order_relaxed);
    if (is_5xx) atomic_fetch_add_explicit(&d->resp_5xx, 1, memory_order_relaxed);
}

/* Worker: a reference to h's diagnosis (NULL when it has none), for a
 * stream's access log; call within one callback of the loop. */
sharp_diag_text_t *sharp_diag_text_get(const struct sharp_host *h);
void sharp_diag_text_put(sharp_diag_text_t *t);

/* Main thread: one signals interval of the cluster's hosts (kernel.c calls
 * it after the kernel signals of the interval are computed). */
void sharp_diag_cluster_interval(struct sharp_cluster *c, uint64_t now_ms);
/* Main thread (outlier.c): h was ejected by a detector of type `detector`
 * (its stat name: "consecutive_5xx", "latency", ...). */
void sharp_diag_host_ejected(struct sharp_cluster *c, struct sharp_host *h, sharp_diag_detector_t by,
                             const char *detector, const char *detail);
void sharp_diag_host_unejected(struct sharp_host *h);
/* The host's diagnosis ("" when none), main thread. */
const char *sharp_diag_host_text(const struct sharp_host *h);
/* Drops the host's published text (the host is freed; no worker reads it). */
void sharp_diag_host_destroy(struct sharp_host *h);

#endif
