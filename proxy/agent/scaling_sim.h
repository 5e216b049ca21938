/* scaling_sim.h: a service of N replicas behind SHARP, cheap enough to step
 * through thousands of training episodes in minutes.
 *
 * Model (one-second steps; a decision every step_s = 15 s, the HPA's sync
 * period):
 *
 *   Replicas. Each replica runs `workers` requests at once, each holding a
 *   worker for an exponential time of mean service_s: capacity
 *   mu = workers / service_s requests/s per replica (200 by default). A
 *   replica added now turns ready boot_s later (30 s) and takes traffic only
 *   then; removing replicas takes the ones not ready first, then the most
 *   recently ready (the ReplicaSet's order). Every replica, ready or not,
 *   costs cost_per_replica_s per second.
 *
 *   Queueing. SHARP spreads the admitted load evenly over the ready
 *   replicas. Below saturation each replica is an M/M/k queue
 *   (k = workers): the wait is 0 with probability 1 - C and exponential
 *   with rate k (1 - rho) / service_s otherwise, C the Erlang C formula at
 *   offered load a = k rho; its median and 99th percentile add to the
 *   latency of a request that does not wait (base_p50_s, base_p99_s). The
 *   M/M/k terms are computed at a utilization of at most 0.95. At or above
 *   saturation the excess becomes a fluid backlog B served first come,
 *   first served at the full capacity, adding B / capacity of delay; a
 *   request that would wait longer than timeout_s fails (504). In flight
 *   are the requests in service and waiting: ready x (a + Lq) below
 *   saturation (Lq the M/M/k queue length), ready x k + B above.
 *
 *   SHARP in front. The cluster's circuit breaker (max_requests, Envoy's
 *   default 1024) and, when enabled, the adaptive concurrency filter's
 *   gradient controller (Envoy's: every second, gradient =
 *   clamp(minRTT (1 + buffer) / sampleRTT, 0.5, 2), limit' = limit x
 *   gradient, limit = clamp(limit' + sqrt(limit'), min, max), sampleRTT the
 *   median latency, minRTT the latency of a request that does not wait)
 *   bound the requests in flight. What they do not admit is shed at once
 *   (503). The admitted rate is the offered one scaled down in proportion
 *   to what the bound allows.
 *
 *   Accounting. Each second's offered requests end shed, served, failed or
 *   in the backlog, exactly (offered = shed + served + errors + backlog
 *   growth). A second violates the objective when its p99 exceeds slo_p99_s
 *   or more than slo_error_rate of its offered requests were shed or failed.
 *
 *   Measurements. What SHARP measures for the cluster over each decision
 *   step (request rate, p99, error and shed rates, in flight against the
 *   limit, ready replicas), and for the HPA each pod's CPU: the busy share
 *   of its workers, averaged over the metrics window (metric_window_s, the
 *   metrics server's 15 s), as millicores of a cpu_request_m request.
 *
 * Everything is a function of the trace and the decisions: no randomness
 * of its own, so a run is reproducible from the trace's seed. */
#ifndef SHARP_AGENT_SCALING_SIM_H
#define SHARP_AGENT_SCALING_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "hpa.h"
#include "traces.h"

typedef struct {
    int workers;        /* concurrent requests per replica */
    double service_s;   /* mean time a request holds a worker */
    double base_p50_s;  /* latency of a request that does not wait: median */
    double base_p99_s;  /* and 99th percentile */
    double timeout_s;   /* the route's timeout: a request waiting longer fails */
    double boot_s;      /* from creation to ready */
    int max_replicas;   /* the most the cluster can hold */
    bool adaptive_concurrency;
    double ac_buffer;   /* Envoy's concurrency_limit_params... buffer: 0.25 */
    int ac_min_limit;   /* min_concurrency: 3 */
    int ac_max_limit;   /* max_concurrency_limit: 1000 */
    int max_requests;   /* the circuit breaker's max_requests: 1024 */
    int step_s;         /* seconds per decision: 15 */
    double slo_p99_s;
    double slo_error_rate; /* of shed and failed requests among the offered */
    double cost_per_replica_s;
    double metric_window_s;
    int64_t cpu_request_m;
    /* The HPA's metric: false, each ready pod's CPU, the busy share of its
     * workers (at most 1: the Kubernetes HPA on CPU); true, the requests in
     * flight to the cluster over the ready replicas' workers, queued ones
     * included (SHARP's own HPA rule live, see live.h), which passes 1 in
     * overload and lets the rule double the count every sync. */
    bool hpa_inflight;
} sharp_sim_config_t;

void sharp_sim_config_default(sharp_sim_config_t *c);
/* NULL, or what is wrong. */
const char *sharp_sim_config_check(const sharp_sim_config_t *c);
/* Requests/s one ready replica serves at full load. */
double sharp_sim_capacity(const sharp_sim_config_t *c);

/* One second, or one decision step, of what happened. */
typedef struct {
    double offered, admitted, served, shed, errors; /* requests */
    double rate;       /* offered requests/s */
    double p50, p99;   /* s: of the second; of a step, the highest second's */
    double inflight;   /* at the end */
    double limit;      /* the bound on in flight: adaptive limit and circuit breaker */
    double busy;       /* mean busy share of the ready replicas' workers */
    int replicas;      /* at the end, ready or not */
    int ready;
    double replica_s;  /* replica-seconds */
    int seconds;
    int violation_s;   /* seconds that violated the objective */
} sharp_sim_stats_t;

typedef struct {
    sharp_sim_config_t cfg;
    const sharp_trace_t *trace; /* not owned */
    int t;                      /* seconds since the start */
    int n;                      /* replicas */
    double *created, *ready_at; /* per replica, ready_at ascending */
    double backlog;
    double ac_limit;
    double busy_hist[64]; /* busy share of each of the last 64 seconds, t % 64 */
    double inflight_hist[64]; /* requests in flight at the end of each, t % 64 */
    sharp_sim_stats_t second, step, total;
    int changes; /* decisions that changed the count */
} sharp_sim_t;

/* Starts at second 0 with `replicas` ready replicas (clamped to
 * [1, max_replicas]); the adaptive limit starts at its maximum. */
void sharp_sim_init(sharp_sim_t *s, const sharp_sim_config_t *cfg, const sharp_trace_t *trace, int replicas);
void sharp_sim_free(sharp_sim_t *s);
/* Sets the replica count (clamped to [1, max_replicas]) now: new replicas
 * boot, removed ones go at once. */
void sharp_sim_set_replicas(sharp_sim_t *s, int replicas);
int sharp_sim_ready(const sharp_sim_t *s);
/* Advances one second; its stats are in s->second. */
void sharp_sim_second(sharp_sim_t *s);
/* Advances one decision step (step_s seconds); its stats are in s->step
 * (and returned in *out when not NULL). */
void sharp_sim_step(sharp_sim_t *s, sharp_sim_stats_t *out);
/* True when the trace is over. */
bool sharp_sim_done(const sharp_sim_t *s);

/* The pods as the HPA's controller sees them now, in pods[0..n) (cap at
 * least s->n). Returns their number. */
int sharp_sim_hpa_pods(const sharp_sim_t *s, sharp_hpa_pod_t *pods, int cap);

/* The Erlang C probability of waiting in an M/M/k queue at offered load
 * a = lambda / mu (< k); exposed for the tests. */
double sharp_erlang_c(int k, double a);

#endif
