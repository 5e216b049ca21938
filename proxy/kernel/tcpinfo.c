/* tcpinfo.c: TCP_INFO samples of the workers' upstream sockets (tcpinfo.h). */
#include "kernel/tcpinfo.h"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

_Atomic bool sharp_tcpinfo_enabled;
_Atomic uint32_t sharp_tcpinfo_interval_ms = 1000;

static void add(_Atomic uint64_t *a, uint64_t v)
{
    if (v) atomic_fetch_add_explicit(a, v, memory_order_relaxed);
}

void sharp_tcpinfo_sample(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c, uint64_t now_ms)
{
    c->next_ms = now_ms + atomic_load_explicit(&sharp_tcpinfo_interval_ms, memory_order_relaxed);
    c->dirty = false;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0) return;
    /* kernels older than 4.2 have no tcpi_segs_out: no rate from them */
    if (len < offsetof(struct tcp_info, tcpi_segs_out) + sizeof ti.tcpi_segs_out) return;
    /* 32-bit counters of the kernel: differences wrap correctly */
    add(&k->segs_out, (uint32_t)(ti.tcpi_segs_out - c->segs_out));
    add(&k->retrans, (uint32_t)(ti.tcpi_total_retrans - c->retrans));
    c->segs_out = ti.tcpi_segs_out;
    c->retrans = ti.tcpi_total_retrans;
    if (ti.tcpi_rtt) {
        add(&k->rtt_sum_us, ti.tcpi_rtt);
        add(&k->rttvar_sum_us, ti.tcpi_rttvar);
        add(&k->rtt_samples, 1);
    }
}

void sharp_tcpinfo_connected(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c, uint64_t latency_us,
                             uint64_t now_ms)
{
    c->connected = true;
    c->next_ms = now_ms; /* the first stream's end samples: a new connection's RTT at once */
    add(&k->connects, 1);
    add(&k->connect_lat_sum_us, latency_us);
}

void sharp_tcpinfo_connect_failed(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c)
{
    if (!c->connected) add(&k->connect_fail, 1);
}

void sharp_tcpinfo_reset_received(sharp_host_kernel_t *k, sharp_tcpinfo_cursor_t *c)
{
    if (!c->connected || c->reset) return;
    c->reset = true;
    add(&k->rst_rx, 1);
}

void sharp_tcpinfo_closing(sharp_host_kernel_t *k, int fd, sharp_tcpinfo_cursor_t *c, uint64_t now_ms)
{
    if (!c->connected) return;
    sharp_tcpinfo_sample(k, fd, c, now_ms);
    add(&k->closes, 1);
    c->connected = false;
}
