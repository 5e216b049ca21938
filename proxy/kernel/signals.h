/* signals.h: a host's TCP signals, computed each interval from cumulative
 * counters, whichever source fills them (the eBPF probes' maps or TCP_INFO
 * samples of SHARP's own sockets, kernel/kernel.h). Pure functions: the
 * main thread calls them, the unit tests feed them recorded sequences. */
#ifndef SHARP_KERNEL_SIGNALS_H
#define SHARP_KERNEL_SIGNALS_H

#include "common.h"

#include "bpf/sharp_tcp.h"

#include <stdatomic.h>

typedef struct sharp_tcp_counters sharp_tcp_counters_t;

/* One host's signals. The interval fields describe the last interval; the
 * totals add every interval's differences since the host was first seen. */
typedef struct sharp_tcp_signals {
    uint64_t intervals; /* intervals computed; 0: nothing yet */
    /* the last interval's differences */
    uint64_t segs_out, retrans, syn_retrans, rst_rx, rst_tx, connects, connect_fail, closes, rtt_samples;
    /* retrans / segs_out of the interval; -1 when nothing was sent */
    double retrans_rate;
    /* smoothed RTT and its variation (the kernel's srtt and mdev, means of
     * the interval's samples), microseconds; an interval without samples
     * keeps the last known values; -1 before the first sample */
    double rtt_us, rttvar_us;
    /* rtt_us over the median rtt_us of the cluster's hosts that have one;
     * -1 when either is unknown */
    double rtt_ratio;
    /* mean SYN_SENT -> ESTABLISHED time of the interval's connects; an
     * interval without connects keeps the last known value; -1 before the
     * first connect */
    double connect_latency_us;
    sharp_tcp_counters_t total;
} sharp_tcp_signals_t;

/* Kernel signal state of one host (embedded in sharp_host_t). */
typedef struct sharp_host_kernel {
    /* The TCP_INFO fallback: each worker adds what it sampled from its own
     * connections to the host (differences of tcpi_segs_out and
     * tcpi_total_retrans, one tcpi_rtt/tcpi_rttvar sample per connection
     * and interval, connects and their latency, connect failures, resets
     * received, closes). The eBPF source does not use them. */
    _Atomic uint64_t segs_out, retrans, rtt_sum_us, rttvar_sum_us, rtt_samples, connects, connect_lat_sum_us,
        connect_fail, rst_rx, closes;
    /* Main thread: the counters at the last interval, the identity of the
     * source entry they came from (a new eBPF map entry starts at zero),
     * and the signals. */
    sharp_tcp_counters_t prev;
    uint64_t prev_gen;
    bool has_prev;
    sharp_tcp_signals_t sig;
} sharp_host_kernel_t;

/* Signals with nothing known yet. */
void sharp_tcp_signals_init(sharp_tcp_signals_t *s);

/* One interval: the differences cur - prev (a field that went backwards
 * counts from zero: the source restarted) become the interval's values and
 * are added to the totals. rtt_ratio is left for sharp_tcp_cluster_ratios. */
void sharp_tcp_signals_update(sharp_tcp_signals_t *s, const sharp_tcp_counters_t *prev,
                              const sharp_tcp_counters_t *cur);

/* The median of v[0..n) (v is reordered); -1 when n is 0. */
double sharp_tcp_median(double *v, size_t n);

/* After every host of a cluster was updated: sets each host's rtt_ratio
 * against the median RTT of the hosts that have one, and returns that
 * median (-1 when none has one). `scratch` holds n doubles. */
double sharp_tcp_cluster_ratios(sharp_tcp_signals_t *const *sigs, size_t n, double *scratch);

/* The median retransmission rate of the hosts that sent something in the
 * interval, -1 when none did. `scratch` holds n doubles. */
double sharp_tcp_median_retrans_rate(sharp_tcp_signals_t *const *sigs, size_t n, double *scratch);

#endif
