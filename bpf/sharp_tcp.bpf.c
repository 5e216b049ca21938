// SPDX-License-Identifier: GPL-2.0
/* sharp_tcp.bpf.c: the kernel's TCP view of SHARP's upstream hosts.
 *
 * Tracepoints and an iterator only (kprobes and fentry are often
 * unavailable in the environments SHARP runs in; tracepoints are a stable
 * interface). Two designs, the loader takes the first that loads:
 *
 * Tagged sockets (BTF-enabled tracepoints, "tp_btf/", and the TCP socket
 * iterator, "iter/tcp"; Linux 5.12 and later). Each TCP connection SHARP's
 * process opens to a watched remote is tagged as it connects (the
 * SYN_SENT transition runs in the connecting thread): its cookie (the
 * kernel's socket id, asked for here; never reused) written in a way of
 * `tags`, a preallocated array of 8-way sets (sharp_tcp.h), and marked
 * closed at its TCP_CLOSE transition, which every socket that reached
 * SYN_SENT passes (tcp_set_state) before the kernel frees it, time-wait
 * included (tcp_time_wait ends with tcp_done). Every other program's first
 * test is whether the socket has a cookie at all (a load from the struct
 * sock): nearly every other socket of the machine has none (the kernel
 * gives one on demand only: ss, SO_COOKIE, BPF) and costs that and nothing
 * more; a socket with one finds its set (an array lookup the verifier
 * inlines) and compares the set's eight tags. No allocation, no lock, no
 * delete. A closed tag stays until a new connection takes its way, so a
 * reset the kernel sends after the close (an abortive close sets TCP_CLOSE
 * first) still counts. A full set gives the way of its oldest connection
 * to the new one (tag_failures counts those). The tag's way also keeps
 * the slot of the socket's remote in `counters` (looked up in `remotes`
 * once, at the tag), so the socket's later events reach its counters by
 * an inlined array lookup rather than a hash of the remote; a slot counts
 * only if the remote it names is the socket's own (read from the socket),
 * else the remote is looked up again: two CPUs writing one set at once
 * (no lock), or a slot given to another remote since, can cost a tag or a
 * segment count, never count for a wrong host.
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
 * Both count into `counters`, a slot per remote of `remotes`, which holds
 * only the upstream hosts SHARP routes to (SHARP adds and removes entries
 * as clusters' host sets change): a tagged socket to a host no cluster
 * has any more counts nowhere. Counters are per CPU (no shared cache line
 * between CPUs), summed by the reader. */
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
/* SHARP's connections that lost their tag (tagged design): a connection
 * found its set full and took the way of the set's oldest one, which is
 * not counted any more */
__u64 tag_failures = 0;
/* the tags table's sets minus one (a power of two; tagged design), set by
 * the loader with the table's size */
const volatile __u32 tag_set_mask = 0;
/* the raw tcp_retransmit_skb passes the retransmission's result as its
 * third argument (kernels whose trace record has an `err` field); the
 * loader finds out from the kernel's BTF */
const volatile bool retransmit_has_err = false;

/* The watched remotes: each one's slot in `counters` (sharp_tcp.h).
 * Preallocated, its size set by the loader from a memory budget (see
 * size_remotes in proxy/kernel/ebpf.c): adding and removing entries of a
 * table that is not preallocated costs tens of microseconds each. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SHARP_TCP_MAX_REMOTES);
    __type(key, struct sharp_tcp_remote);
    __type(value, __u32);
} remotes SEC(".maps");

/* The watched remotes' counters, per CPU, by slot: as many slots as
 * `remotes` has entries. An array: its lookups are inlined by the
 * verifier (no hash, no call), and a tagged socket's events find their
 * counters by the slot kept in its way. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, SHARP_TCP_MAX_REMOTES);
    __type(key, __u32);
    __type(value, struct sharp_tcp_slot);
} counters SEC(".maps");

/* The watched remotes' ports (sharp_tcp.h): one entry. */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct sharp_tcp_ports);
} ports SEC(".maps");

/* SHARP's upstream sockets (tagged design): sets of tags (sharp_tcp.h),
 * their number set by the loader from a memory budget (size_tags in
 * proxy/kernel/ebpf.c). An array: preallocated, and its lookups inlined
 * by the verifier. Mappable: its values then start on a page, so each
 * set's tags fill one cache line, and SHARP reads it in place (/kernel's
 * count of tagged sockets). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, SHARP_TCP_MIN_TAG_SETS);
    __type(key, __u32);
    __type(value, struct sharp_tcp_tag_set);
} tags SEC(".maps");

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

/* The slot of a remote already read from the socket (key zeroed, then
 * filled), looked up in `remotes`. */
static __always_inline const __u32 *find_slot(struct sharp_tcp_remote *key, __u16 family, __u16 port)
{
    key->family = family;
    key->port = port;
    return bpf_map_lookup_elem(&remotes, key);
}

/* The watched-remotes design: the remote's counters, through its slot
 * (SHARP writes a slot's counters before it puts the remote in `remotes`,
 * and reuses a slot only long after its remote left). */
static __always_inline struct sharp_tcp_counters *find_remote(struct sharp_tcp_remote *key, __u16 family,
                                                              __u16 port)
{
    const __u32 *slot = find_slot(key, family, port);
    if (!slot) return NULL;
    __u32 i = *slot;
    struct sharp_tcp_slot *s = bpf_map_lookup_elem(&counters, &i);
    return s ? &s->c : NULL;
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

/* The socket's cookie, 0 if nothing asked the kernel for one: a load. */
static __always_inline __u64 cookie_of(const struct sock *sk)
{
    return (__u64)sk->__sk_common.skc_cookie.counter;
}

/* The set of the socket whose cookie is c. */
static __always_inline struct sharp_tcp_tag_set *tag_set(__u64 c)
{
    __u32 i = sharp_tcp_tag_set_of(c, tag_set_mask);
    return bpf_map_lookup_elem(&tags, &i);
}

/* SHARP's state of the socket, NULL for any socket SHARP did not tag (or
 * whose tag went: closed, or evicted). */
static __always_inline struct sharp_tcp_sock *tag_of(const struct sock *sk)
{
    if (!sk) return NULL;
    __u64 c = cookie_of(sk);
    if (!c) return NULL;
    struct sharp_tcp_tag_set *set = tag_set(c);
    if (!set) return NULL;
    int w = sharp_tcp_tag_find(set, c);
    return w < 0 ? NULL : &set->sock[w & (SHARP_TCP_TAG_WAYS - 1)];
}

/* The slot of the socket's remote in `remotes`, read with plain loads:
 * a hash of the remote, done once per connection (at its tag) unless its
 * slot changed since. */
static __always_inline const __u32 *slot_of(const struct sock *sk)
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
    return find_slot(&key, family, bpf_ntohs(sk->__sk_common.skc_dport));
}

/* Whether the slot's remote is the socket's: a few loads of the
 * socket's first line and of the slot's, no hash. */
static __always_inline bool same_remote(const struct sock *sk, const struct sharp_tcp_remote *r)
{
    __u16 family = sk->__sk_common.skc_family;
    if (r->family != family || r->port != bpf_ntohs(sk->__sk_common.skc_dport)) return false;
    const __u32 *a = (const __u32 *)r->addr;
    if (family == SHARP_AF_INET) return a[0] == sk->__sk_common.skc_daddr;
    const __u32 *b = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32;
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

/* The counters of a tagged socket's remote: those of the slot its way
 * keeps (an inlined array lookup), if that slot is still its remote's.
 * Else (its remote was unwatched, and maybe watched again in another
 * slot; or another CPU was writing the way) the socket's remote is looked
 * up again and the way keeps its new slot; NULL if it is not watched. */
static __always_inline struct sharp_tcp_counters *counters_of(const struct sock *sk, struct sharp_tcp_sock *st)
{
    __u32 i = st->slot;
    struct sharp_tcp_slot *s = bpf_map_lookup_elem(&counters, &i);
    if (s && same_remote(sk, &s->remote)) return &s->c;
    const __u32 *slot = slot_of(sk);
    if (!slot) return NULL;
    i = *slot;
    s = bpf_map_lookup_elem(&counters, &i);
    if (!s || !same_remote(sk, &s->remote)) return NULL;
    st->slot = i;
    return &s->c;
}

/* What the socket sent since it was last seen, and its RTT when it
 * received something since its last sample (an idle connection's srtt is
 * old news, as TCP_INFO's fallback also reasons). */
static __always_inline void tagged_segs(__u32 segs, struct sharp_tcp_sock *st,
                                        struct sharp_tcp_counters *cnt)
{
    /* signed: a way another CPU was writing at once (a tag evicted as its
     * socket closed) may hold another socket's count, which adds nothing
     * rather than 4 billion */
    __s32 delta = (__s32)(segs - st->segs_out_seen);
    st->segs_out_seen = segs;
    if (delta > 0) ADD(cnt->segs_out, (__u32)delta);
}

static __always_inline void tagged_sample(const struct tcp_sock *tp, struct sharp_tcp_sock *st,
                                          struct sharp_tcp_counters *cnt)
{
    __u32 in = tp->segs_in;
    tagged_segs(tp->segs_out, st, cnt);
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
    struct sharp_tcp_counters *cnt = counters_of(sk, st);
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
         * here, before its SYN (a UDP or Unix socket never gets here): no
         * other program looks for this socket before then */
        if (!sk || !port_watched(bpf_ntohs(sk->__sk_common.skc_dport)) || !in_sharp()) return 0;
        /* the remote's slot, kept with the tag: the socket's later events
         * reach its counters without hashing the remote again */
        const __u32 *slot = slot_of(sk);
        if (!slot) return 0;
        __u32 si = *slot;
        /* the kernel's id of the socket, given now (and kept with it) */
        __u64 c = bpf_get_socket_cookie((void *)sk);
        struct sharp_tcp_tag_set *set = tag_set(c);
        if (!c || !set) return 0;
        int evicted = 0;
        int w = sharp_tcp_tag_pick(set, c, &evicted) & (SHARP_TCP_TAG_WAYS - 1);
        if (evicted) __sync_fetch_and_add(&tag_failures, 1);
        /* the tag first: an evicted socket's programs stop finding it */
        *(volatile __u64 *)&set->tag[w] = c;
        set->sock[w].connect_start_ns = bpf_ktime_get_ns();
        set->sock[w].segs_out_seen = set->sock[w].segs_in_seen = 0;
        set->sock[w].slot = si;
        return 0;
    }
    /* what counts: a connect's end and a close. Any other transition (a
     * passive open, FIN_WAIT1, CLOSE_WAIT...: most of them, and most are
     * other sockets') leaves here, before any read of the socket */
    bool connected = from == TCP_SYN_SENT && to == TCP_ESTABLISHED;
    if (!connected && to != TCP_CLOSE) return 0;
    /* nearly every other socket has no cookie: one load */
    __u64 c = sk ? cookie_of(sk) : 0;
    if (!c) return 0;
    struct sharp_tcp_tag_set *set = tag_set(c);
    if (!set) return 0;
    int w = sharp_tcp_tag_find(set, c);
    if (w < 0) return 0;
    w &= SHARP_TCP_TAG_WAYS - 1;
    struct sharp_tcp_sock *st = &set->sock[w];
    struct sharp_tcp_counters *cnt = counters_of(sk, st);
    if (connected) {
        if (!cnt) return 0;
        ADD(cnt->connects, 1);
        if (st->connect_start_ns) ADD(cnt->connect_lat_sum_us, (bpf_ktime_get_ns() - st->connect_start_ns) / 1000);
        return 0; /* its SYN is counted with the next sample */
    }
    if (cnt) {
        if (from == TCP_SYN_SENT) ADD(cnt->connect_fail, 1);
        else ADD(cnt->closes, 1);
        /* the segments sent since the last sample (SYNs of a failed
         * connect included) and, for a connection that was established,
         * its last RTT sample: a connection shorter than an interval has
         * no other */
        const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
        if (tp) {
            if (from != TCP_SYN_SENT) tagged_sample(tp, st, cnt);
            else tagged_segs(tp->segs_out, st, cnt);
        }
    }
    /* closed: the way is free for a new connection; the tag stays (+ 1)
     * for a reset the kernel sends after setting TCP_CLOSE (an abortive
     * close). Unless another CPU's connect has just taken the way. */
    if (*(volatile __u64 *)&set->tag[w] == c) *(volatile __u64 *)&set->tag[w] = c | SHARP_TCP_TAG_CLOSED;
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
    struct sharp_tcp_sock *st = tag_of(sk);
    if (!st) return 0;
    struct sharp_tcp_counters *cnt = counters_of(sk, st);
    if (!cnt) return 0;
    ADD(cnt->retrans, 1);
    if (sk->__sk_common.skc_state == TCP_SYN_SENT) ADD(cnt->syn_retrans, 1);
    return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(sharp_tag_receive_reset, struct sock *sk)
{
    struct sharp_tcp_sock *st = tag_of(sk);
    if (!st) return 0;
    /* a reset answering a SYN is a refused connect: counted as a connect
     * failure when the socket closes */
    if (sk->__sk_common.skc_state == TCP_SYN_SENT) return 0;
    struct sharp_tcp_counters *cnt = counters_of(sk, st);
    if (cnt) ADD(cnt->rst_rx, 1);
    return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(sharp_tag_send_reset, const struct sock *sk)
{
    /* sk is NULL for a reset that answers a segment no socket owns; a
     * time-wait or request socket (its cookie may be its full socket's)
     * is not SHARP's connection */
    __u64 c = sk ? cookie_of(sk) : 0;
    if (!c) return 0;
    __u8 state = sk->__sk_common.skc_state;
    if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV) return 0;
    struct sharp_tcp_tag_set *set = tag_set(c);
    if (!set) return 0;
    /* a live tag, or a closed one: an abortive close sends its reset
     * after setting TCP_CLOSE */
    int w = sharp_tcp_tag_find(set, c);
    if (w < 0) w = sharp_tcp_tag_find(set, c | SHARP_TCP_TAG_CLOSED);
    if (w < 0) return 0;
    struct sharp_tcp_counters *cnt = counters_of(sk, &set->sock[w & (SHARP_TCP_TAG_WAYS - 1)]);
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
