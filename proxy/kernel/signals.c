/* signals.c: per-interval TCP signals from cumulative counters. */
#include "kernel/signals.h"

void sharp_tcp_signals_init(sharp_tcp_signals_t *s)
{
    memset(s, 0, sizeof *s);
    s->retrans_rate = s->rtt_us = s->rttvar_us = s->rtt_ratio = s->connect_latency_us = -1;
}

/* cur - prev, or cur when the counter went backwards (its source started
 * again from zero: a new map entry, a counter reset). */
static uint64_t diff(uint64_t cur, uint64_t prev)
{
    return cur >= prev ? cur - prev : cur;
}

void sharp_tcp_signals_update(sharp_tcp_signals_t *s, const sharp_tcp_counters_t *prev,
                              const sharp_tcp_counters_t *cur)
{
    sharp_tcp_counters_t d;
    d.segs_out = diff(cur->segs_out, prev->segs_out);
    d.retrans = diff(cur->retrans, prev->retrans);
    d.syn_retrans = diff(cur->syn_retrans, prev->syn_retrans);
    d.rtt_sum_us = diff(cur->rtt_sum_us, prev->rtt_sum_us);
    d.rttvar_sum_us = diff(cur->rttvar_sum_us, prev->rttvar_sum_us);
    d.rtt_samples = diff(cur->rtt_samples, prev->rtt_samples);
    d.connects = diff(cur->connects, prev->connects);
    d.connect_lat_sum_us = diff(cur->connect_lat_sum_us, prev->connect_lat_sum_us);
    d.connect_fail = diff(cur->connect_fail, prev->connect_fail);
    d.rst_rx = diff(cur->rst_rx, prev->rst_rx);
    d.rst_tx = diff(cur->rst_tx, prev->rst_tx);
    d.closes = diff(cur->closes, prev->closes);

    s->intervals++;
    s->segs_out = d.segs_out;
    s->retrans = d.retrans;
    s->syn_retrans = d.syn_retrans;
    s->rst_rx = d.rst_rx;
    s->rst_tx = d.rst_tx;
    s->connects = d.connects;
    s->connect_fail = d.connect_fail;
    s->closes = d.closes;
    s->rtt_samples = d.rtt_samples;
    /* A retransmission is also a segment sent, so the rate stays within
     * [0, 1]; the two counters are read at slightly different moments,
     * which the clamp absorbs. */
    if (d.segs_out) {
        double r = (double)d.retrans / (double)d.segs_out;
        s->retrans_rate = r > 1 ? 1 : r;
    } else {
        s->retrans_rate = -1;
    }
    if (d.rtt_samples) {
        s->rtt_us = (double)d.rtt_sum_us / (double)d.rtt_samples;
        s->rttvar_us = (double)d.rttvar_sum_us / (double)d.rtt_samples;
    }
    if (d.connects) s->connect_latency_us = (double)d.connect_lat_sum_us / (double)d.connects;

    sharp_tcp_counters_t *t = &s->total;
    t->segs_out += d.segs_out;
    t->retrans += d.retrans;
    t->syn_retrans += d.syn_retrans;
    t->rtt_sum_us += d.rtt_sum_us;
    t->rttvar_sum_us += d.rttvar_sum_us;
    t->rtt_samples += d.rtt_samples;
    t->connects += d.connects;
    t->connect_lat_sum_us += d.connect_lat_sum_us;
    t->connect_fail += d.connect_fail;
    t->rst_rx += d.rst_rx;
    t->rst_tx += d.rst_tx;
    t->closes += d.closes;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double sharp_tcp_median(double *v, size_t n)
{
    if (!n) return -1;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double sharp_tcp_cluster_ratios(sharp_tcp_signals_t *const *sigs, size_t n, double *scratch)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sigs[i]->rtt_us > 0) scratch[k++] = sigs[i]->rtt_us;
    double median = sharp_tcp_median(scratch, k);
    for (size_t i = 0; i < n; i++)
        sigs[i]->rtt_ratio = median > 0 && sigs[i]->rtt_us > 0 ? sigs[i]->rtt_us / median : -1;
    return median;
}

double sharp_tcp_median_retrans_rate(sharp_tcp_signals_t *const *sigs, size_t n, double *scratch)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (sigs[i]->retrans_rate >= 0) scratch[k++] = sigs[i]->retrans_rate;
    return sharp_tcp_median(scratch, k);
}
