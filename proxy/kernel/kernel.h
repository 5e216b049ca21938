/* kernel.h: kernel TCP signals per upstream host (retransmission rate,
 * smoothed RTT and its ratio to the cluster's median, resets, connect
 * failures and latency), on the main thread.
 *
 * Sources, chosen once at start:
 *   ebpf      the probes of bpf/sharp_tcp.bpf.c count, in the kernel, per
 *             remote (address, port) of the hosts SHARP routes to; the main
 *             thread keeps the watched set equal to the clusters' current
 *             hosts and reads the counters each interval (kernel/ebpf.h).
 *             Where the kernel allows, the probes see only SHARP's own
 *             upstream sockets, which they tag as SHARP connects them, and
 *             the main thread samples those sockets' segments and RTT just
 *             before reading;
 *   tcp_info  when the probes cannot run (the reason is logged once), or
 *             with --kernel-signals tcp_info: workers sample TCP_INFO on
 *             their own upstream sockets (kernel/tcpinfo.h).
 * Each interval (runtime key sharp.kernel.interval_ms, default 1000) the
 * main thread turns each host's counters into signals (kernel/signals.h),
 * shown in /clusters, /kernel and the cluster.<name>.kernel.* stats, and
 * then diagnoses each cluster's hosts (upstream/diagnosis.h). Workers never
 * wait for any of it. */
#ifndef SHARP_KERNEL_KERNEL_H
#define SHARP_KERNEL_KERNEL_H

#include "common.h"
#include "sbuf.h"
#include "stats.h"
#include "kernel/signals.h"

#include <uv.h>

struct sharp_server;
struct sharp_cluster;
struct sharp_host;
struct sharp_snapshot;

typedef enum {
    SHARP_KERNEL_MODE_AUTO,     /* eBPF when it loads, else TCP_INFO (the default) */
    SHARP_KERNEL_MODE_TCP_INFO, /* TCP_INFO only */
    SHARP_KERNEL_MODE_OFF,      /* no kernel signals */
} sharp_kernel_mode_t;

typedef enum {
    SHARP_KERNEL_SOURCE_OFF,
    SHARP_KERNEL_SOURCE_EBPF,
    SHARP_KERNEL_SOURCE_TCP_INFO,
} sharp_kernel_source_t;

/* "auto", "tcp_info" or "off"; -1 for anything else. */
int sharp_kernel_mode_parse(const char *s, sharp_kernel_mode_t *out);
/* The mode, before the configuration is loaded (clusters register their
 * kernel.* stats unless it is off). */
void sharp_kernel_set_mode(sharp_kernel_mode_t m);
bool sharp_kernel_enabled(void);

/* cluster.<name>.kernel.* (called by sharp_cluster_stats_init). */
void sharp_kernel_cluster_stats_init(struct sharp_cluster *c, sharp_stats_t *s);

/* Main thread. Chooses the source (logging one line when the probes
 * cannot run), watches the current hosts and starts the interval timer
 * (unreferenced). Call before the workers start. With the kernel signals
 * off, the timer still runs for the hosts' diagnosis (upstream/
 * diagnosis.h), which every interval ends with. */
void sharp_kernel_start(struct sharp_server *srv, uv_loop_t *loop);
/* A cluster published a new host set: its new hosts are watched now,
 * before any worker can connect to them. */
void sharp_kernel_hosts_changed(struct sharp_cluster *c);
/* The server's snapshot changed (CDS): the watched remotes follow its
 * clusters at once. */
void sharp_kernel_snapshot_changed(void);
/* Stops the timer and unloads the probes. */
void sharp_kernel_stop(void);
/* One interval, at once (the timer's work; tests call it). */
void sharp_kernel_tick(void);

sharp_kernel_source_t sharp_kernel_source(void);
const char *sharp_kernel_source_name(sharp_kernel_source_t s); /* "ebpf", "tcp_info", "off" */

/* Admin (main thread): the host's lines of /clusters, its "kernel" object
 * in /clusters?format=json, and the /kernel page. */
void sharp_kernel_host_text(sharp_sbuf_t *b, const char *cluster, const struct sharp_host *h);
void sharp_kernel_host_json(sharp_sbuf_t *b, const struct sharp_host *h);
void sharp_kernel_admin_json(sharp_sbuf_t *b, const struct sharp_snapshot *snap);

#endif
