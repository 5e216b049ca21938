/* scaling_sim.c: see scaling_sim.h. */
#include "scaling_sim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "agent_util.h"

/* The utilization at which the M/M/k terms are taken at most: beyond it
 * the fluid backlog carries the queueing. */
#define RHO_CAP 0.95

void sharp_sim_config_default(sharp_sim_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->workers = 8;
    c->service_s = 0.040;
    c->base_p50_s = 0.040;
    c->base_p99_s = 0.100;
    c->timeout_s = 1.0;
    c->boot_s = 30.0;
    c->max_replicas = 200;
    c->adaptive_concurrency = true;
    c->ac_buffer = 0.25;
    c->ac_min_limit = 3;
    c->ac_max_limit = 1000;
    c->max_requests = 1024;
    c->step_s = 15;
    c->slo_p99_s = 0.250;
    c->slo_error_rate = 0.01;
    c->cost_per_replica_s = 1.0;
    c->metric_window_s = 15.0;
    c->cpu_request_m = 1000;
}

const char *sharp_sim_config_check(const sharp_sim_config_t *c)
{
    if (c->workers < 1 || c->workers > 4096)
        return "workers must be in [1, 4096]";
    if (!(c->service_s > 0.0) || !isfinite(c->service_s))
        return "service_s must be positive";
    if (!(c->base_p50_s >= 0.0) || !(c->base_p99_s >= c->base_p50_s) || !isfinite(c->base_p99_s))
        return "base latencies must satisfy 0 <= p50 <= p99";
    if (!(c->timeout_s > 0.0) || !isfinite(c->timeout_s))
        return "timeout_s must be positive";
    if (!(c->boot_s >= 0.0) || !isfinite(c->boot_s))
        return "boot_s must not be negative";
    if (c->max_replicas < 1 || c->max_replicas > 100000)
        return "max_replicas must be in [1, 100000]";
    if (!(c->ac_buffer >= 0.0) || c->ac_min_limit < 1 || c->ac_max_limit < c->ac_min_limit)
        return "adaptive concurrency needs buffer >= 0 and 1 <= min limit <= max limit";
    if (c->max_requests < 1)
        return "max_requests must be positive";
    if (c->step_s < 1 || c->step_s > 3600)
        return "step_s must be in [1, 3600]";
    if (!(c->slo_p99_s > 0.0) || !(c->slo_error_rate >= 0.0))
        return "the objective needs slo_p99_s > 0 and slo_error_rate >= 0";
    if (!(c->metric_window_s >= 1.0) || c->metric_window_s > 64.0)
        return "metric_window_s must be in [1, 64]";
    if (c->cpu_request_m < 1)
        return "cpu_request_m must be positive";
    return NULL;
}

double sharp_sim_capacity(const sharp_sim_config_t *c)
{
    return c->workers / c->service_s;
}

double sharp_erlang_c(int k, double a)
{
    if (a <= 0.0)
        return 0.0;
    if (a >= k)
        return 1.0;
    /* Erlang B by its stable recursion, then C from B. */
    double b = 1.0;
    for (int j = 1; j <= k; j++)
        b = a * b / (j + a * b);
    return k * b / (k - a * (1.0 - b));
}

void sharp_sim_init(sharp_sim_t *s, const sharp_sim_config_t *cfg, const sharp_trace_t *trace, int replicas)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->trace = trace;
    s->created = agent_calloc((size_t)cfg->max_replicas, sizeof *s->created);
    s->ready_at = agent_calloc((size_t)cfg->max_replicas, sizeof *s->ready_at);
    if (replicas < 1)
        replicas = 1;
    if (replicas > cfg->max_replicas)
        replicas = cfg->max_replicas;
    /* Running since well before the start. */
    for (int i = 0; i < replicas; i++) {
        s->created[i] = -3600.0;
        s->ready_at[i] = -3600.0 + cfg->boot_s;
    }
    s->n = replicas;
    s->ac_limit = cfg->ac_max_limit;
}

void sharp_sim_free(sharp_sim_t *s)
{
    free(s->created);
    free(s->ready_at);
    s->created = s->ready_at = NULL;
}

void sharp_sim_set_replicas(sharp_sim_t *s, int replicas)
{
    if (replicas < 1)
        replicas = 1;
    if (replicas > s->cfg.max_replicas)
        replicas = s->cfg.max_replicas;
    if (replicas != s->n)
        s->changes++;
    /* Added replicas are the latest to turn ready, removed ones are taken
     * from the end: not ready first, then the most recently ready. */
    while (s->n < replicas) {
        s->created[s->n] = s->t;
        s->ready_at[s->n] = s->t + s->cfg.boot_s;
        s->n++;
    }
    if (replicas < s->n)
        s->n = replicas;
}

int sharp_sim_ready(const sharp_sim_t *s)
{
    /* ready_at ascending: the first replica not ready yet */
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->ready_at[mid] <= s->t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool sharp_sim_done(const sharp_sim_t *s)
{
    return s->t >= s->trace->seconds;
}

/* The wait's median and 99th percentile in an M/M/k queue at utilization
 * rho (< 1), and the mean queue length. */
static void mmk(const sharp_sim_config_t *c, double rho, double *w50, double *w99, double *lq)
{
    if (rho > RHO_CAP)
        rho = RHO_CAP;
    int k = c->workers;
    double pw = sharp_erlang_c(k, k * rho);
    double theta = k * (1.0 - rho) / c->service_s; /* rate of the wait's tail */
    *w99 = pw > 0.01 ? log(pw / 0.01) / theta : 0.0;
    *w50 = pw > 0.5 ? log(2.0 * pw) / theta : 0.0;
    *lq = pw * rho / (1.0 - rho);
}

static void add_stats(sharp_sim_stats_t *acc, const sharp_sim_stats_t *one)
{
    int n = acc->seconds;
    acc->offered += one->offered;
    acc->admitted += one->admitted;
    acc->served += one->served;
    acc->shed += one->shed;
    acc->errors += one->errors;
    acc->replica_s += one->replica_s;
    acc->violation_s += one->violation_s;
    if (one->p99 > acc->p99)
        acc->p99 = one->p99;
    if (one->p50 > acc->p50)
        acc->p50 = one->p50;
    /* means over the seconds */
    acc->inflight = (acc->inflight * n + one->inflight) / (n + 1);
    acc->limit = (acc->limit * n + one->limit) / (n + 1);
    acc->busy = (acc->busy * n + one->busy) / (n + 1);
    acc->seconds = n + 1;
    acc->rate = acc->offered / acc->seconds;
    acc->replicas = one->replicas;
    acc->ready = one->ready;
}

void sharp_sim_second(sharp_sim_t *s)
{
    const sharp_sim_config_t *c = &s->cfg;
    const double lambda = sharp_trace_rate(s->trace, s->t);
    const int ready = sharp_sim_ready(s);
    const int k = c->workers;
    const double cap = ready * sharp_sim_capacity(c);
    double bound = c->max_requests;
    if (c->adaptive_concurrency && s->ac_limit < bound)
        bound = s->ac_limit;
    double b = s->backlog;
    double x, served, errors = 0.0, inflight, p50, p99, busy;

    if (ready == 0) {
        /* Nothing serves: what is admitted waits, and fails at the
         * timeout. */
        x = fmin(lambda, fmax(0.0, bound - b));
        b += x;
        served = 0.0;
        errors = b * (1.0 - exp(-1.0 / c->timeout_s));
        b -= errors;
        inflight = b;
        p50 = p99 = c->timeout_s;
        busy = 0.0;
    } else {
        /* The replicas serve at most RHO_CAP of their nominal capacity;
         * beyond, arrivals queue in the backlog. In flight below that:
         * n_s(rho) = ready x (k rho + Lq(rho)). */
        const double top = RHO_CAP * cap;
        double w50, w99, lq;
        mmk(c, RHO_CAP, &w50, &w99, &lq);
        const double n_top = ready * (k * RHO_CAP + lq);
        /* The most the bound lets through without a backlog: all of the
         * offered load when its requests in flight fit, else the
         * utilization whose requests in flight fill the bound. */
        double x_max;
        bool fits = false;
        if (b <= 0.0 && lambda <= top) {
            mmk(c, lambda / cap, &w50, &w99, &lq);
            fits = ready * (k * lambda / cap + lq) <= bound;
        }
        if (fits || bound >= n_top) {
            x_max = top;
        } else {
            double lo = 0.0, hi = RHO_CAP;
            for (int i = 0; i < 40; i++) {
                double mid = 0.5 * (lo + hi);
                mmk(c, mid, &w50, &w99, &lq);
                if (ready * (k * mid + lq) <= bound)
                    lo = mid;
                else
                    hi = mid;
            }
            x_max = lo * cap;
        }
        if (b <= 0.0 && lambda <= x_max) {
            x = lambda; /* everything, nothing waits beyond the M/M/k queues */
        } else if (bound >= n_top) {
            /* saturated: the backlog takes what the bound leaves room for */
            x = fmin(lambda, fmax(0.0, bound - n_top - b) + top);
        } else {
            x = fmin(lambda, x_max);
        }
        served = fmin(top, b + x);
        b = b + x - served;
        if (b > top * c->timeout_s) {
            errors = b - top * c->timeout_s;
            b = top * c->timeout_s;
        }
        busy = served / cap;
        mmk(c, busy, &w50, &w99, &lq);
        inflight = ready * (k * busy + lq) + b;
        double q = b / top;
        p50 = c->base_p50_s + w50 + q;
        p99 = c->base_p99_s + w99 + q;
    }
    s->backlog = b;

    /* Envoy's gradient controller, sampling this second's median. */
    if (c->adaptive_concurrency && x > 0.0) {
        double min_rtt = c->base_p50_s;
        double g = min_rtt * (1.0 + c->ac_buffer) / p50;
        g = g < 0.5 ? 0.5 : (g > 2.0 ? 2.0 : g);
        double l = s->ac_limit * g;
        l = floor(l + sqrt(l));
        s->ac_limit = l < c->ac_min_limit ? c->ac_min_limit : (l > c->ac_max_limit ? c->ac_max_limit : l);
    }

    sharp_sim_stats_t *one = &s->second;
    memset(one, 0, sizeof *one);
    one->offered = lambda;
    one->admitted = x;
    one->served = served;
    one->shed = lambda - x;
    one->errors = errors;
    one->rate = lambda;
    one->p50 = p50;
    one->p99 = p99;
    one->inflight = inflight;
    one->limit = bound;
    one->busy = busy;
    one->replicas = s->n;
    one->ready = ready;
    one->replica_s = s->n;
    one->seconds = 1;
    one->violation_s = (p99 > c->slo_p99_s || one->shed + errors > c->slo_error_rate * lambda) ? 1 : 0;
    s->busy_hist[s->t % 64] = busy;
    s->inflight_hist[s->t % 64] = inflight;
    add_stats(&s->step, one);
    add_stats(&s->total, one);
    s->t++;
}

void sharp_sim_step(sharp_sim_t *s, sharp_sim_stats_t *out)
{
    memset(&s->step, 0, sizeof s->step);
    for (int i = 0; i < s->cfg.step_s && !sharp_sim_done(s); i++)
        sharp_sim_second(s);
    if (out)
        *out = s->step;
}

int sharp_sim_hpa_pods(const sharp_sim_t *s, sharp_hpa_pod_t *pods, int cap)
{
    const sharp_sim_config_t *c = &s->cfg;
    double now = s->t;
    /* The metrics window's mean of the last whole seconds: the busy share
     * (CPU-like), or with hpa_inflight SHARP's rule live, requests in
     * flight over the ready replicas' workers, unbounded. */
    int w = (int)c->metric_window_s;
    int have = s->t < w ? s->t : w;
    const double *hist = c->hpa_inflight ? s->inflight_hist : s->busy_hist;
    double busy = 0.0;
    for (int i = 1; i <= have; i++)
        busy += hist[(s->t - i) % 64];
    if (have > 0)
        busy /= have;
    if (c->hpa_inflight) {
        int ready = sharp_sim_ready(s);
        busy = ready > 0 ? busy / ((double)ready * c->workers) : 0.0;
        if (busy > 1e6)
            busy = 1e6;
    }
    int n = s->n < cap ? s->n : cap;
    for (int i = 0; i < n; i++) {
        sharp_hpa_pod_t *p = &pods[i];
        memset(p, 0, sizeof *p);
        bool ready = s->ready_at[i] <= now;
        p->phase = SHARP_HPA_POD_RUNNING;
        p->has_start_time = true;
        p->start_s = s->created[i];
        p->has_ready_condition = true;
        p->ready = ready;
        p->ready_transition_s = ready ? s->ready_at[i] : s->created[i];
        /* The metrics server has a usage rate once it scraped the pod
         * over a whole window. */
        p->has_metric = now - s->created[i] >= c->metric_window_s;
        p->usage_m = ready ? llround(busy * (double)c->cpu_request_m) : 0;
        p->metric_ts = now;
        p->metric_window_s = c->metric_window_s;
        p->request_m = c->cpu_request_m;
    }
    return n;
}
