// SPDX-License-Identifier: GPL-2.0
/* sharp_tcp.bpf.c: the kernel's TCP view of SHARP's upstream hosts.
 *
 * Tracepoints and an iterator only (kprobes and fentry are often
 * unavailable in the environments SHARP runs in; tracepoints are a stable
 * interface). Two designs, the loader takes the first that loads:
 *
 * Tagged sockets (BTF-enabled tracepoints, "tp_btf/", and the TCP socket
 * iterator, "iter/tcp"; Linux 5.11 and later). Each TCP connection SHARP's
 * process opens to a watched remote is tagged as it connects (the
 * SYN_SENT transition runs in the connecting thread): an entry of the
 * `tagged` socket storage, created here, freed by the kernel with the
 * socket. Every other program's first test is whether the socket has any
 * BPF storage at all (a load from the struct sock), then whether it has
 * SHARP's (a lookup in the socket's own short list): any other socket of
 * the machine costs that and nothing more.
 *   tcp:tcp_retransmit_skb     retransmissions (SYNs included)
 *   sock:inet_sock_set_state   connect latency (SYN_SENT -> ESTABLISHED),
 *                              connect failures (SYN_SENT -> CLOSE), closes,
 *                              and the last segments sent and RTT sample of
 *                              a closing socket
 *   tcp:tcp_receive_reset      resets received
 *   tcp:tcp_send_reset         resets sent
 *   iter/tcp                   run by SHARP once per interval: segments sent
 *                              and one RTT sample (srtt, mdev) per tagged
 *                              socket that received something since its last
 *                              sample (TCP_INFO's figures, read in the kernel)
 * Nothing runs per segment: tcp:tcp_probe, which fires at every segment
 * any socket receives, is not attached, and its cost (most of the probes'
 * when it was) goes with it. The iterator walks the TCP sockets of SHARP's
 * network namespace once per interval, a cost that follows the number of
 * sockets, not of requests.
 *
 * Watched remotes (the fallback: raw tracepoints, "raw_tp/", attached by
 * name: they need no tracefs, which a network namespace entered with `ip
 * netns exec` or a container often lacks; else classic ones,
 * "tracepoint/", found through tracefs). No socket is SHARP's to the
 * kernel here: every program tests the socket's remote port against
 * `ports` (a bit per port of a watched remote: most segments are SHARP's
 * clients', turned away there), then finds the remote (address, port) in
 * `remotes`; with `target_netns` set, only sockets of SHARP's network
 * namespace count. RTT samples come from tcp:tcp_probe (a random 1 in
 * SHARP_TCP_RTT_SAMPLE_EVERY of the segments a watched remote's socket
 * receives; as a BTF-enabled tracepoint where it can) or, on kernels
 * without it, tcp:tcp_rcv_space_adjust; per-socket state is in `socks`.
 *
 * Both count into `remotes`, which holds only the upstream hosts SHARP
 * routes to (SHARP adds and removes entries as clusters' host sets
 * change): a tagged socket to a host no cluster has any more counts
 * nowhere. Counters are per CPU (no shared cache line between CPUs),
 * summed by the reader. */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "sharp_tcp.h"

#define SHARP_AF_INET 2
#define SHARP_AF_INET6 10

char LICENSE[] SEC("license") = "GPL";

/* the inode number of SHARP's network namespace, 0: any */
const volatile __u32 target_netns = 0;
/* SHARP's process (tagged design): its id in its own PID namespace, and
 * that namespace's device and inode numbers */
const volatile __u32 target_tgid = 0;
const volatile __u64 target_pidns_dev = 0;
const volatile __u64 target_pidns_ino = 0;
/* SHARP's connections left untagged (tagged design): the kernel had no
 * memory for their storage */
__u64 tag_failures = 0;
/* the raw tcp_retransmit_skb passes the retransmission's result as its
 * third argument (kernels whose trace record has an `err` field); the
 * loader finds out from the kernel's BTF */
const volatile bool retransmit_has_err = false;

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    /* preallocated, its size set by the loader from a memory budget (see
     * size_remotes in proxy/kernel/ebpf.c): adding and removing entries of
     * a table that is not preallocated costs tens of microseconds each */
    __uint(max_entries, SHARP_TCP_MAX_REMOTES);
    __type(key, struct sharp_tcp_remote);
    __type(value, struct sharp_tcp_counters);
} remotes SEC(".maps");

/* The watched remotes' ports (sharp_tcp.h): one entry. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct sharp_tcp_ports);
} ports SEC(".maps");

/* SHARP's upstream sockets (tagged design): created by SHARP, freed with
 * the socket; nothing allocated in advance. */
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct sharp_tcp_sock);
} tagged SEC(".maps");

/* Sockets to watched remotes (fallback design): a bounded LRU, so a
 * socket whose close was missed cannot leak an entry. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, SHARP_TCP_MAX_SOCKS);
    __type(key, __u64);
    __type(value, struct sharp_tcp_sock);
} socks SEC(".maps");

/* The counters are per CPU and a program runs with migration disabled, so
 * a plain add suffices (a locked one costs tens of nanoseconds at every
 * segment); two of SHARP's programs interleaving on one CPU (a softirq's
 * tcp_probe interrupting a process-context probe between its load and
 * store of the same counter) could lose an increment: a statistic, not an
 * invariant. */
#define ADD(field, v) ((field) += (v))

static __always_inline bool port_watched(__u16 port)
{
    __u32 zero = 0;
    const struct sharp_tcp_ports *pp = bpf_map_lookup_elem(&ports, &zero);
    return pp && (pp->bits[(port >> 6) & (SHARP_TCP_PORT_WORDS - 1)] & (1ull << (port & 63)));
}

/* The key of a remote already read from the socket (key zeroed, then
 * filled), looked up in `remotes`. */
static __always_inline struct sharp_tcp_counters *find_remote(struct sharp_tcp_remote *key, __u16 family,
                                                              __u16 port)
{
    key->family = family;
    key->port = port;
    return bpf_map_lookup_elem(&remotes, key);
}

/* The CO-RE reads (a helper call each): every flavour's programs but the
 * BTF tracepoint. */
static __always_inline struct sharp_tcp_counters *watched(const struct sock *sk)
{
    struct sharp_tcp_remote key;
    if (!sk) return NULL;
    /* the cheapest test first: most segments are to ports SHARP does not
     * watch (its own listeners' clients) */
    __u16 port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
    if (!port_watched(port)) return NULL;
    if (target_netns) {
        __u32 ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
        if (ino != target_netns) return NULL;
    }
    __builtin_memset(&key, 0, sizeof key);
    __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
    if (family == SHARP_AF_INET) {
        __be32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);
        __builtin_memcpy(key.addr, &a, 4);
    } else if (family == SHARP_AF_INET6) {
        BPF_CORE_READ_INTO(&key.addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
    } else {
        return NULL;
    }
    return find_remote(&key, family, port);
}

/* Adds what the socket sent (segs, its tcp_sock.segs_out) since it was
 * last seen. A socket first seen here (established before its remote was
 * watched) starts from now. */
static __always_inline void add_segs(const struct sock *sk, __u32 segs, struct sharp_tcp_counters *cnt,
                                     struct sharp_tcp_sock *st)
{
    __u64 skp = (__u64)sk;
    if (!st) st = bpf_map_lookup_elem(&socks, &skp);
    if (!st) {
        struct sharp_tcp_sock fresh = {.segs_out_seen = segs};
        bpf_map_update_elem(&socks, &skp, &fresh, BPF_ANY);
        return;
    }
    __u32 delta = segs - st->segs_out_seen;
    st->segs_out_seen = segs;
    if (delta) ADD(cnt->segs_out, delta);
}

static __always_inline void count_segs(const struct sock *sk, struct sharp_tcp_counters *cnt,
                                       struct sharp_tcp_sock *st)
{
    add_segs(sk, BPF_CORE_READ((const struct tcp_sock *)sk, segs_out), cnt, st);
}

/* srtt_us holds 8 * srtt and mdev_us 4 * mdev (tcp_info's tcpi_rtt and
 * tcpi_rttvar are the same two values). */
static __always_inline void add_rtt(struct sharp_tcp_counters *cnt, __u32 srtt_us8, __u32 mdev_us4)
{
    if (!srtt_us8) return;
    ADD(cnt->rtt_sum_us, srtt_us8 >> 3);
    ADD(cnt->rttvar_sum_us, mdev_us4 >> 2);
    ADD(cnt->rtt_samples, 1);
}

static __always_inline void rtt_sample(const struct sock *sk)
{
    struct sharp_tcp_counters *cnt = watched(sk);
    if (!cnt) return;
    const struct tcp_sock *tp = (const struct tcp_sock *)sk;
    add_rtt(cnt, BPF_CORE_READ(tp, srtt_us), BPF_CORE_READ(tp, mdev_us));
    count_segs(sk, cnt, NULL);
}

static __always_inline void on_retransmit(const struct sock *sk)
{
    struct sharp_tcp_counters *cnt = watched(sk);
    if (!cnt) return;
    ADD(cnt->retrans, 1);
    if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT) ADD(cnt->syn_retrans, 1);
}

static __always_inline void on_receive_reset(const struct sock *sk)
{
    struct sharp_tcp_counters *cnt = watched(sk);
    if (!cnt) return;
    /* a reset answering a SYN is a refused connect: counted as a connect
     * failure when the socket closes */
    if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT) return;
    ADD(cnt->rst_rx, 1);
}

static __always_inline void on_send_reset(const struct sock *sk)
{
    /* sk is NULL for a reset that answers a segment no socket owns */
    struct sharp_tcp_counters *cnt = watched(sk);
    if (cnt) ADD(cnt->rst_tx, 1);
}

static __always_inline void on_set_state(const struct sock *sk, int from, int to)
{
    struct sharp_tcp_counters *cnt = watched(sk);
    if (!cnt) return;
    __u64 skp = (__u64)sk;
    if (to == TCP_SYN_SENT) { /* connect(): the remote is set, nothing sent yet */
        struct sharp_tcp_sock st = {.connect_start_ns = bpf_ktime_get_ns()};
        bpf_map_update_elem(&socks, &skp, &st, BPF_ANY);
        return;
    }
    struct sharp_tcp_sock *st = bpf_map_lookup_elem(&socks, &skp);
    if (from == TCP_SYN_SENT && to == TCP_ESTABLISHED) {
        ADD(cnt->connects, 1);
        if (st && st->connect_start_ns)
            ADD(cnt->connect_lat_sum_us, (bpf_ktime_get_ns() - st->connect_start_ns) / 1000);
    } else if (from == TCP_SYN_SENT && to == TCP_CLOSE) {
        ADD(cnt->connect_fail, 1);
    } else if (to == TCP_CLOSE) {
        ADD(cnt->closes, 1);
    }
    count_segs(sk, cnt, st);
    if (to == TCP_CLOSE) bpf_map_delete_elem(&socks, &skp);
}

/* ---- tagged sockets: BTF-enabled tracepoints and the TCP iterator ---- */

/* SHARP's state of the socket, NULL for any socket SHARP did not tag. */
static __always_inline struct sharp_tcp_sock *tag_of(const struct sock *sk)
{
    /* nearly every socket has no BPF storage at all: one load */
    if (!sk || !sk->sk_bpf_storage) return NULL;
    return bpf_sk_storage_get(&tagged, (struct sock *)sk, NULL, 0);
}

/* The counters of the socket's remote, read with plain loads. */
static __always_inline struct sharp_tcp_counters *remote_of(const struct sock *sk)
{
    struct sharp_tcp_remote key;
    __builtin_memset(&key, 0, sizeof key);
    __u16 family = sk->__sk_common.skc_family;
    if (family == SHARP_AF_INET) {
        __be32 a = sk->__sk_common.skc_daddr;
        __builtin_memcpy(key.addr, &a, 4);
    } else if (family == SHARP_AF_INET6) {
        __builtin_memcpy(key.addr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
    } else {
        return NULL;
    }
    return find_remote(&key, family, bpf_ntohs(sk->__sk_common.skc_dport));
}

/* What the socket sent since it was last seen, and its RTT when it
 * received something since its last sample (an idle connection's srtt is
 * old news, as TCP_INFO's fallback also reasons). */
static __always_inline void tagged_sample(const struct tcp_sock *tp, struct sharp_tcp_sock *st,
                                          struct sharp_tcp_counters *cnt)
{
    __u32 segs = tp->segs_out, in = tp->segs_in;
    __u32 delta = segs - st->segs_out_seen;
    st->segs_out_seen = segs;
    if (delta) ADD(cnt->segs_out, delta);
    if (in != st->segs_in_seen) {
        st->segs_in_seen = in;
        add_rtt(cnt, tp->srtt_us, tp->mdev_us);
    }
}

SEC("iter/tcp")
int sharp_iter_tcp(struct bpf_iter__tcp *ctx)
{
    struct sock_common *skc = ctx->sk_common;
    if (!skc) return 0;
    /* the walk has just read this part of the socket: its state turns
     * away time-wait, listening and request sockets and a connect in
     * progress (its handshake's RTT comes with its first sample once
     * established), its remote port SHARP's clients' sockets (and, on one
     * machine, the upstreams' own), before any other line of it is read */
    __u8 state = skc->skc_state;
    if (state == TCP_TIME_WAIT || state == TCP_LISTEN || state == TCP_NEW_SYN_RECV || state == TCP_SYN_SENT)
        return 0;
    if (!port_watched(bpf_ntohs(skc->skc_dport))) return 0;
    /* NULL for time-wait and request sockets */
    struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);
    if (!tp) return 0;
    const struct sock *sk = (const struct sock *)tp;
    struct sharp_tcp_sock *st = tag_of(sk);
    if (!st) return 0;
    /* an idle connection (nothing sent or received since its last sample,
     * most of them when there are thousands) adds nothing: no lookup */
    if (tp->segs_out == st->segs_out_seen && tp->segs_in == st->segs_in_seen) return 0;
    struct sharp_tcp_counters *cnt = remote_of(sk);
    if (cnt) tagged_sample(tp, st, cnt);
    return 0;
}

/* SHARP's process id in the kernel's own (initial) PID namespace, learned
 * at its first connect: 0 until then. */
__u32 sharp_kernel_tgid = 0;

/* Whether the running task is one of SHARP's threads: its process id as
 * seen in SHARP's own PID namespace (SHARP may run in a container). That
 * test asks the kernel to translate the id (a fifth of the probes' cost
 * of a connection); once SHARP's id in the initial namespace is known,
 * which stays unique while SHARP runs, one comparison does. */
static __always_inline bool in_sharp(void)
{
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    __u32 known = *(volatile __u32 *)&sharp_kernel_tgid;
    if (known) return tgid == known;
    struct bpf_pidns_info ns;
    if (bpf_get_ns_current_pid_tgid(target_pidns_dev, target_pidns_ino, &ns, sizeof ns)) return false;
    if (ns.tgid != target_tgid) return false;
    sharp_kernel_tgid = tgid;
    return true;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sharp_tag_set_state, const struct sock *sk, const int from, const int to)
{
    if (to == TCP_SYN_SENT) {
        /* connect(), in the connecting thread: the remote is set, nothing
         * sent yet. SHARP's TCP connection to a watched remote is tagged
         * here, before its SYN (a UDP or Unix socket never gets here) */
        if (!sk || !port_watched(bpf_ntohs(sk->__sk_common.skc_dport)) || !in_sharp() || !remote_of(sk))
            return 0;
        struct sharp_tcp_sock *st = bpf_sk_storage_get(&tagged, (struct sock *)sk, NULL,
                                                       BPF_SK_STORAGE_GET_F_CREATE);
        if (!st) { /* the kernel is out of memory: this connection is not counted */
            __sync_fetch_and_add(&tag_failures, 1);
            return 0;
        }
        st->connect_start_ns = bpf_ktime_get_ns();
        st->segs_out_seen = st->segs_in_seen = 0;
        return 0;
    }
    /* what counts: a connect's end and a close. Any other transition (a
     * passive open, FIN_WAIT1, CLOSE_WAIT...: most of them, and most are
     * other sockets') leaves here, before any read of the socket */
    bool connected = from == TCP_SYN_SENT && to == TCP_ESTABLISHED;
    if (!connected && to != TCP_CLOSE) return 0;
    /* only TCP sockets are tagged: no protocol test needed */
    struct sharp_tcp_sock *st = tag_of(sk);
    if (!st) return 0;
    struct sharp_tcp_counters *cnt = remote_of(sk);
    if (!cnt) return 0;
    if (connected) {
        ADD(cnt->connects, 1);
        if (st->connect_start_ns) ADD(cnt->connect_lat_sum_us, (bpf_ktime_get_ns() - st->connect_start_ns) / 1000);
        return 0; /* its SYN is counted with the next sample */
    }
    if (from == TCP_SYN_SENT) ADD(cnt->connect_fail, 1);
    else ADD(cnt->closes, 1);
    /* the segments sent since the last sample (SYNs of a failed connect
     * included) and, for a connection that was established, its last RTT
     * sample: a connection shorter than an interval has no other */
    const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
    if (!tp) return 0;
    if (from != TCP_SYN_SENT) {
        tagged_sample(tp, st, cnt);
    } else {
        __u32 segs = tp->segs_out;
        __u32 delta = segs - st->segs_out_seen;
        st->segs_out_seen = segs;
        if (delta) ADD(cnt->segs_out, delta);
    }
    return 0;
}

/* The tracepoint passes the retransmission's result as a third argument
 * on kernels whose record has an `err` field: read from ctx only there
 * (the verifier refuses an argument the tracepoint does not have, and
 * drops the branch with the constant false). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(sharp_tag_retransmit_skb, const struct sock *sk)
{
    if (retransmit_has_err && (int)ctx[2]) return 0;
    if (!tag_of(sk)) return 0;
    struct sharp_tcp_counters *cnt = remote_of(sk);
    if (!cnt) return 0;
    ADD(cnt->retrans, 1);
    if (sk->__sk_common.skc_state == TCP_SYN_SENT) ADD(cnt->syn_retrans, 1);
    return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(sharp_tag_receive_reset, struct sock *sk)
{
    if (!tag_of(sk)) return 0;
    /* a reset answering a SYN is a refused connect: counted as a connect
     * failure when the socket closes */
    if (sk->__sk_common.skc_state == TCP_SYN_SENT) return 0;
    struct sharp_tcp_counters *cnt = remote_of(sk);
    if (cnt) ADD(cnt->rst_rx, 1);
    return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(sharp_tag_send_reset, const struct sock *sk)
{
    /* sk is NULL for a reset that answers a segment no socket owns */
    if (!tag_of(sk)) return 0;
    struct sharp_tcp_counters *cnt = remote_of(sk);
    if (cnt) ADD(cnt->rst_tx, 1);
    return 0;
}

/* ---- watched remotes: a BTF-enabled raw tracepoint, direct loads ---- */

/* tcp:tcp_probe, the one probe that runs at every segment of the
 * namespace: the same as rtt_sample with plain loads (the verifier makes
 * them fault-safe) instead of a helper call per field. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(sharp_btf_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
    __u16 port = bpf_ntohs(sk->__sk_common.skc_dport);
    if (!port_watched(port)) return 0;
    /* a random 1 in SHARP_TCP_RTT_SAMPLE_EVERY of a watched remote's
     * segments: the lookups below are most of the probes' cost, and the
     * RTT is a smoothed value anyway; segments sent stay exact (taken as a
     * difference of the socket's own counter, and at its close) */
    if (bpf_get_prandom_u32() % SHARP_TCP_RTT_SAMPLE_EVERY) return 0;
    if (target_netns && sk->__sk_common.skc_net.net->ns.inum != target_netns) return 0;
    struct sharp_tcp_remote key;
    __builtin_memset(&key, 0, sizeof key);
    __u16 family = sk->__sk_common.skc_family;
    if (family == SHARP_AF_INET) {
        __be32 a = sk->__sk_common.skc_daddr;
        __builtin_memcpy(key.addr, &a, 4);
    } else if (family == SHARP_AF_INET6) {
        __builtin_memcpy(key.addr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8, 16);
    } else {
        return 0;
    }
    struct sharp_tcp_counters *cnt = find_remote(&key, family, port);
    if (!cnt) return 0;
    /* the verifier knows sk as a struct sock: the helper makes it a
     * tcp_sock it lets the program read */
    const struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
    if (!tp) return 0;
    add_rtt(cnt, tp->srtt_us, tp->mdev_us);
    add_segs(sk, tp->segs_out, cnt, NULL);
    return 0;
}

/* ---- raw tracepoints: the tracepoint's own arguments, sk first ---- */

#define ARG(ctx, i) ((const void *)(ctx)->args[i])

SEC("raw_tp/tcp_probe")
int sharp_raw_tcp_probe(struct bpf_raw_tracepoint_args *ctx)
{
    rtt_sample(ARG(ctx, 0));
    return 0;
}

SEC("raw_tp/tcp_rcv_space_adjust")
int sharp_raw_tcp_rcv_space_adjust(struct bpf_raw_tracepoint_args *ctx)
{
    rtt_sample(ARG(ctx, 0));
    return 0;
}

SEC("raw_tp/tcp_retransmit_skb")
int sharp_raw_tcp_retransmit_skb(struct bpf_raw_tracepoint_args *ctx)
{
    /* a retransmission that was not sent (local queues full) is not a
     * loss signal */
    if (retransmit_has_err && (int)ctx->args[2]) return 0;
    on_retransmit(ARG(ctx, 0));
    return 0;
}

SEC("raw_tp/tcp_receive_reset")
int sharp_raw_tcp_receive_reset(struct bpf_raw_tracepoint_args *ctx)
{
    on_receive_reset(ARG(ctx, 0));
    return 0;
}

SEC("raw_tp/tcp_send_reset")
int sharp_raw_tcp_send_reset(struct bpf_raw_tracepoint_args *ctx)
{
    on_send_reset(ARG(ctx, 0));
    return 0;
}

SEC("raw_tp/inet_sock_set_state")
int sharp_raw_inet_sock_set_state(struct bpf_raw_tracepoint_args *ctx)
{
    const struct sock *sk = ARG(ctx, 0);
    /* a u16 today, an 8-bit bitfield before Linux 5.6: read either way */
    if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP) return 0;
    on_set_state(sk, (int)ctx->args[1], (int)ctx->args[2]);
    return 0;
}

/* ---- classic tracepoints: the same from the trace record ---- */

SEC("tracepoint/tcp/tcp_probe")
int sharp_tcp_probe(struct trace_event_raw_tcp_probe *ctx)
{
    rtt_sample((const struct sock *)ctx->skaddr);
    return 0;
}

SEC("tracepoint/tcp/tcp_rcv_space_adjust")
int sharp_tcp_rcv_space_adjust(struct trace_event_raw_tcp_event_sk *ctx)
{
    rtt_sample((const struct sock *)ctx->skaddr);
    return 0;
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int sharp_tcp_retransmit_skb(struct trace_event_raw_tcp_retransmit_skb *ctx)
{
    /* kernels that report the result: a retransmission that was not sent
     * (local queues full) is not a loss signal */
    if (bpf_core_field_exists(ctx->err) && ctx->err) return 0;
    on_retransmit((const struct sock *)ctx->skaddr);
    return 0;
}

SEC("tracepoint/tcp/tcp_receive_reset")
int sharp_tcp_receive_reset(struct trace_event_raw_tcp_event_sk *ctx)
{
    on_receive_reset((const struct sock *)ctx->skaddr);
    return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int sharp_tcp_send_reset(struct trace_event_raw_tcp_send_reset *ctx)
{
    on_send_reset((const struct sock *)ctx->skaddr);
    return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int sharp_inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
    if (ctx->protocol != IPPROTO_TCP) return 0;
    on_set_state((const struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate);
    return 0;
}
