/* sharp_tcp.h: the maps' layouts shared by the eBPF probes (sharp_tcp.bpf.c)
 * and their reader on the main thread (proxy/kernel/ebpf.c). Plain fixed-size
 * integers only: the same bytes on both sides. */
#ifndef SHARP_BPF_TCP_H
#define SHARP_BPF_TCP_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* A remote endpoint SHARP routes to: the key of the `remotes` map.
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

/* Per socket: when its connect began, the segs_out already counted and
 * (tagged sockets) the segs_in at its last RTT sample. The value of the
 * `tagged` socket storage (created by the probes as SHARP connects the
 * socket), and of the `socks` map of the watched-remotes design (key: the
 * struct sock's address). */
struct sharp_tcp_sock {
    __u64 connect_start_ns;
    __u32 segs_out_seen;
    __u32 segs_in_seen;
};

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

#endif
