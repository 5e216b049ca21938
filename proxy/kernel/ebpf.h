/* ebpf.h: the eBPF probes (bpf/sharp_tcp.bpf.c) as the main thread uses
 * them: load and attach, the watched remotes, their counters. Built only
 * when clang, bpftool and libbpf were found (meson's SHARP_HAVE_BPF);
 * without them sharp_kernel_bpf_open says so and the TCP_INFO fallback
 * runs. Main thread only. */
#ifndef SHARP_KERNEL_EBPF_H
#define SHARP_KERNEL_EBPF_H

#include "kernel/signals.h"

typedef struct sharp_kernel_bpf sharp_kernel_bpf_t;

/* Loads and attaches the probes, counting only sockets of the network
 * namespace whose inode is netns_ino (0: any). NULL on failure, with the
 * reason in `why` (one line). */
sharp_kernel_bpf_t *sharp_kernel_bpf_open(uint32_t netns_ino, char *why, size_t whylen);
void sharp_kernel_bpf_close(sharp_kernel_bpf_t *b);
/* The attached tracepoints, "category:name" joined by ", ". */
const char *sharp_kernel_bpf_probes(const sharp_kernel_bpf_t *b);
/* How: "tp_btf+iter" (SHARP's tagged sockets: BTF-enabled tracepoints and
 * the TCP iterator; tried first), else the watched-remotes design:
 * "raw_tracepoint+tp_btf", "raw_tracepoint" (by name, no tracefs needed)
 * or "tracepoint" (through tracefs). */
const char *sharp_kernel_bpf_attach_kind(const sharp_kernel_bpf_t *b);
/* How many remotes the probes' table holds (sized at load from a memory budget). */
uint32_t sharp_kernel_bpf_max_remotes(const sharp_kernel_bpf_t *b);
/* The tagged-socket design: SHARP's connections that lost their tag (a
 * new connection found its set of the probes' table full and took the way
 * of the set's oldest one) since the load; 0 with the other designs. */
uint64_t sharp_kernel_bpf_tag_failures(const sharp_kernel_bpf_t *b);
/* The tagged-socket design: how many sockets the probes' table can tag
 * (0 with the other designs), and how many of SHARP's connections it tags
 * now (those connecting or open; read in place, a walk of the table), -1
 * if it cannot be read. */
uint32_t sharp_kernel_bpf_tag_slots(const sharp_kernel_bpf_t *b);
int64_t sharp_kernel_bpf_tagged_sockets(const sharp_kernel_bpf_t *b);
/* The tagged-socket design: samples every tagged socket's segments sent
 * and RTT into the counters (the TCP iterator), before they are read each
 * interval. 0 (nothing to do with the other designs), or a negative errno. */
int sharp_kernel_bpf_sample(sharp_kernel_bpf_t *b);
/* Starts counting for remotes (their counters start at zero), or stops
 * and forgets their counters: many at once (an EDS or CDS push), in one
 * batch call per map where the kernel has them (Linux 5.6), one by one
 * otherwise, and the ports' bits in one update. watch_many sets ok[i] when
 * keys[i] is watched (one already watched counts) and slots[i] to its slot
 * in the probes' counters, and returns how many are; unwatch_many takes
 * the keys with their slots (cleared and freed, given to another remote
 * only after a quarantine; a socket to the old remote never counts there). */
size_t sharp_kernel_bpf_watch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, size_t n, bool *ok,
                                   uint32_t *slots);
void sharp_kernel_bpf_unwatch_many(sharp_kernel_bpf_t *b, const struct sharp_tcp_remote *keys, const uint32_t *slots,
                                   size_t n);
/* Every watched remote's counters (summed over the CPUs), in a few batch
 * lookups of the slots given so far: fn(arg, slot, key, counters) per
 * slot in use. 0, or a negative errno (-EINVAL, -ENOTSUP on kernels
 * without batch operations: read each remote with sharp_kernel_bpf_read
 * then). */
int sharp_kernel_bpf_read_all(sharp_kernel_bpf_t *b,
                              void (*fn)(void *arg, uint32_t slot, const struct sharp_tcp_remote *key,
                                         const sharp_tcp_counters_t *c),
                              void *arg);
/* The counters of the remote `key` at `slot`, summed over the CPUs; 0 or
 * a negative errno (-ENOENT: the slot is not that remote's). */
int sharp_kernel_bpf_read(sharp_kernel_bpf_t *b, uint32_t slot, const struct sharp_tcp_remote *key,
                          sharp_tcp_counters_t *out);

#endif
