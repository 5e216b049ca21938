/* tcpinfo.h: the TCP_INFO fallback of the kernel signals, the workers' side.
 *
 * When the eBPF probes cannot run (no BTF, no privilege, a kernel that
 * refuses them, or --kernel-signals tcp_info), each worker samples
 * getsockopt(TCP_INFO) on the upstream connections it owns: when the first
 * stream ends on a connection, then at most once per interval (when a
 * stream ends on it) and once when it closes, adding the differences of tcpi_segs_out and tcpi_total_retrans
 * and one tcpi_rtt / tcpi_rttvar sample to the host's atomics
 * (sharp_host_kernel_t). Connects, their latency, connect failures, resets
 * received and closes are counted where the pool sees them. The main
 * thread turns the sums into the same signals as the probes' (kernel.h).
 * With the eBPF source running, none of this is done. */
#ifndef SHARP_KERNEL_TCPINFO_H
#define SHARP_KERNEL_TCPINFO_H

#include "kernel/signals.h"

/* Set by the main thread before the workers start. */
extern _Atomic bool sharp_tcpinfo_enabled;
extern _Atomic uint32_t sharp_tcpinfo_interval_ms;

/* A connection's last sample. */
typedef struct sharp_tcpinfo_cursor {
    uint32_t segs_out, retrans; /* tcpi_segs_out, tcpi_total_retrans already counted */
    uint64_t next_ms;           /* loop time of the next sample */
    bool connected;             /* the TCP handshake completed */
    bool dirty;                 /* a stream ended since the last sample */
    bool reset;                 /* a reset was counted */
} sharp_tcpinfo_cursor_t;

static inline bool sharp_tcpinfo_on(void)
{
    return atomic_load_explicit(&sharp_tcpinfo_enabled, memory_order_relaxed);
}

/* Samples the socket now and adds the differences to k. */
void sharp_tcpinfo_sample(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c, uint64_t now_ms);

/* A stream ended on the connection: samples when its interval is over,
 * else leaves it for the worker's next tick (sharp_tcpinfo_tick). */
static inline void sharp_tcpinfo_maybe_sample(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c,
                                              uint64_t now_ms)
{
    if (!sharp_tcpinfo_on() || !c->connected) return;
    if (now_ms >= c->next_ms) sharp_tcpinfo_sample(k, fd, c, now_ms);
    else c->dirty = true;
}

/* The worker's periodic pass over its connections: one whose interval is
 * over is sampled if a stream ended on it since its last sample or one is
 * still running (a long response); an idle one costs nothing. */
static inline void sharp_tcpinfo_tick(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c, bool busy,
                                      uint64_t now_ms)
{
    if (c->connected && (c->dirty || busy) && now_ms >= c->next_ms) sharp_tcpinfo_sample(k, fd, c, now_ms);
}

/* The TCP handshake completed after latency_us. */
void sharp_tcpinfo_connected(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c, uint64_t latency_us,
                             uint64_t now_ms);
/* The connect failed (refused, unreachable, timed out). */
void sharp_tcpinfo_connect_failed(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c);
/* A read or write ended with ECONNRESET. */
void sharp_tcpinfo_reset_received(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c);
/* The connection closes: a last sample (the socket is still open). */
void sharp_tcpinfo_closing(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c, uint64_t now_ms);

#endif
