/* sharp_tcp.h: the maps' layouts shared by the eBPF probes (sharp_tcp.bpf.c)
 * and their reader on the main thread (proxy/kernel/ebpf.c). Plain fixed-size
 * integers only: the same bytes on both sides. */
#ifndef SHARP_BPF_TCP_H
#define SHARP_BPF_TCP_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* A remote endpoint SHARP routes to: the key of the `remotes` map, and
 * the owner of a slot of `counters`.
 * IPv4 addresses take the first 4 bytes of addr, the rest stays zero;
 * port is in host byte order; the whole key is zeroed before it is filled
 * (the map compares bytes). */
struct sharp_tcp_remote {
    __u8 addr[16];
    __u16 port;
    __u16 family; /* AF_INET or AF_INET6 */
    __u32 pad;
};

/* What the probes count for one remote, per CPU, cumulative since SHARP
 * started watching it (the reader sums the CPUs and takes differences). */
struct sharp_tcp_counters {
    __u64 segs_out;           /* segments sent (tcp_sock.segs_out, retransmissions included) */
    __u64 retrans;            /* tcp:tcp_retransmit_skb, SYNs included */
    __u64 syn_retrans;        /* of which while connecting */
    __u64 rtt_sum_us;         /* tcp:tcp_probe: the socket's srtt at each segment received */
    __u64 rttvar_sum_us;      /* its mdev (tcpi_rttvar) at the same samples */
    __u64 rtt_samples;
    __u64 connects;           /* SYN_SENT -> ESTABLISHED */
    __u64 connect_lat_sum_us; /* time spent in SYN_SENT by those */
    __u64 connect_fail;       /* SYN_SENT -> CLOSE (refused, unreachable, timed out) */
    __u64 rst_rx;             /* tcp:tcp_receive_reset on a connection past SYN_SENT */
    __u64 rst_tx;             /* tcp:tcp_send_reset */
    __u64 closes;             /* connections that were established and closed */
};

/* A watched remote's slot: a stable index in `counters` (a per-CPU array)
 * that `remotes` (a hash) gives for the remote, and that a tagged socket
 * keeps in its way, so that its later events reach the counters without
 * hashing the remote again. Each CPU's copy names its remote: a program
 * counts into a slot only if that remote is its socket's own (read from
 * the socket), so a slot that went to another remote (its own unwatched,
 * the slot given again) or a way another CPU was writing at once never
 * counts for a wrong host. A free slot's remote is all zeros (family 0).
 * The reader sums the CPUs' counters. */
struct sharp_tcp_slot {
    struct sharp_tcp_remote remote;
    struct sharp_tcp_counters c;
};

/* Per socket: when its connect began, the segs_out already counted,
 * (tagged sockets) the segs_in at its last RTT sample and its remote's
 * slot in `counters`, given at the tag. A way of the `tags` table (tagged
 * design), and the value of the `socks` map of the watched-remotes design
 * (key: the struct sock's address; slot unused). */
struct sharp_tcp_sock {
    __u64 connect_start_ns;
    __u32 segs_out_seen;
    __u32 segs_in_seen;
    __u32 slot;
    __u32 pad;
};

/* SHARP's upstream sockets (tagged design): a preallocated array of sets
 * of SHARP_TCP_TAG_WAYS ways. A socket's tag is its cookie (the kernel's
 * 64-bit socket id, given on first demand, never reused while the kernel
 * runs), SHARP_TCP_TAG_CLOSED added once the socket closed (the way is
 * free again, but a reset the kernel sends after the close still finds
 * it); 0: a way never used. The set of a cookie is sharp_tcp_tag_set_of;
 * its way is found by comparing the tags. The tags come first: a lookup
 * reads them and, unless it finds its socket, nothing else. */
#define SHARP_TCP_TAG_WAYS 8
#define SHARP_TCP_TAG_CLOSED (1ull << 63)
struct sharp_tcp_tag_set {
    __u64 tag[SHARP_TCP_TAG_WAYS];
    struct sharp_tcp_sock sock[SHARP_TCP_TAG_WAYS];
};

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
/* the ways' loops unrolled (the verifier then sees straight code) */
#ifdef __clang__
#define SHARP_TCP_UNROLL _Pragma("unroll")
#else
#define SHARP_TCP_UNROLL
#endif

/* The set of a cookie in a table of mask + 1 sets (a power of two). A CPU
 * hands out cookies in order (in batches), so SHARP's connections of one
 * thread get consecutive ones: SHARP_TCP_TAG_WAYS of them share a set,
 * the next ones the next set, and the table is walked in order, its lines
 * and pages warm, rather than touched at random. */
static __always_inline __u32 sharp_tcp_tag_set_of(__u64 cookie, __u32 mask)
{
    return (__u32)(cookie / SHARP_TCP_TAG_WAYS) & mask;
}

/* The way of `set` tagged t, or -1. Each tag is read once (another CPU
 * may be writing one: a 64-bit store, never seen torn). */
static __always_inline int sharp_tcp_tag_find(const struct sharp_tcp_tag_set *set, __u64 t)
{
    SHARP_TCP_UNROLL
    for (int w = 0; w < SHARP_TCP_TAG_WAYS; w++)
        if (*(const volatile __u64 *)&set->tag[w] == t) return w;
    return -1;
}

/* The way a socket (t, its cookie) connecting now takes: its own if the
 * set still has it (a socket connected again after it closed), else the
 * first free one (never used, or its socket closed), else the one of the
 * socket that began connecting longest ago, which loses its tag (*evicted
 * set: that socket is not counted any more). */
static __always_inline int sharp_tcp_tag_pick(const struct sharp_tcp_tag_set *set, __u64 t,
                                              int *evicted)
{
    int free_way = -1, oldest = 0;
    __u64 oldest_ns = ~0ull;
    SHARP_TCP_UNROLL
    for (int w = 0; w < SHARP_TCP_TAG_WAYS; w++) {
        __u64 v = *(const volatile __u64 *)&set->tag[w];
        if (v == t) return w;
        if (!v || (v & SHARP_TCP_TAG_CLOSED)) {
            if (free_way < 0) free_way = w;
        } else if (set->sock[w].connect_start_ns < oldest_ns) {
            oldest_ns = set->sock[w].connect_start_ns;
            oldest = w;
        }
    }
    if (free_way >= 0) return free_way;
    *evicted = 1;
    return oldest;
}

/* The ports of the watched remotes, one bit each: the probes run on every
 * TCP event of the machine (and the socket walk visits every socket of
 * SHARP's namespace), most of them of connections SHARP does not watch
 * (its clients'); a bit test turns them away before anything else is read.
 * Bit p of word p / 64. */
#define SHARP_TCP_PORT_WORDS 1024
struct sharp_tcp_ports {
    __u64 bits[SHARP_TCP_PORT_WORDS];
};

/* tcp:tcp_probe (the BTF flavour) samples the RTT at a random 1 in this
 * many segments a watched remote's socket receives. */
#define SHARP_TCP_RTT_SAMPLE_EVERY 4

#define SHARP_TCP_MAX_REMOTES 65536
#define SHARP_TCP_MAX_SOCKS 65536
/* the tags table's sets: bounds of what the loader sizes from its budget */
#define SHARP_TCP_MIN_TAG_SETS 256
#define SHARP_TCP_MAX_TAG_SETS 65536

#endif
