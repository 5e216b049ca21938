/* net.h: socket helpers shared by downstream and upstream connections:
 * address formatting/parsing and a writer that tries a direct write first and
 * copies only what the kernel did not take, tracking the bytes still queued
 * so callers can apply watermarks (backpressure). */
#ifndef SHARP_NET_H
#define SHARP_NET_H

#include "common.h"

#include <uv.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Room for any printed address: "[v6]:port", or a Unix socket path (up to
 * 107 bytes, an abstract one printed with a leading '@'). */
#define SHARP_ADDR_STRLEN 112

/* "ip:port" ("[v6]:port" for IPv6) into out; a Unix domain socket prints as
 * its path, an abstract one as "@name" (Envoy's PipeInstance::asString).
 * Returns out. */
char *sharp_addr_str(const struct sockaddr *sa, char *out, size_t cap);
/* "1.2.3.4:80" -> "1.2.3.4", "[::1]:80" -> "::1"; text without a port
 * (or a bare IPv6 address) is returned whole, and so is a Unix socket path
 * (sharp_addr_is_pipe), which Envoy prints whole with or without port. */
sharp_str_t sharp_addr_without_port(const char *a);
/* Whether a printed address (sharp_addr_str) is a Unix socket's: not empty
 * and not an IP with a port. */
bool sharp_addr_is_pipe(const char *printed);
/* Envoy's listener stat name for an address: the printed address through
 * Stats::Utility::sanitizeStatsName ("0.0.0.0_10000"; a Unix socket keeps
 * its path, "/run/x.sock", with ':' turned into '_'). */
char *sharp_addr_stat_name(const struct sockaddr *sa, char *out, size_t cap);
/* Parses a numeric IPv4/IPv6 address and port; returns 0 or -1. */
int sharp_addr_parse(const char *ip, uint32_t port, struct sockaddr_storage *ss, socklen_t *len);
/* The same IPv4/IPv6 address and port, or the same (non-empty) Unix path. */
bool sharp_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* An IP address that is 0.0.0.0 or [::] (what a listener on any address is bound to). */
bool sharp_addr_is_any(const struct sockaddr_storage *a);
/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 address
 * with the same port (Envoy's addressFromSockAddr when not v6only); any
 * other address is left alone. */
void sharp_addr_unmap_v4(struct sockaddr_storage *ss);
/* Envoy's PipeInstance: a path into an AF_UNIX address. A leading '@' names
 * Linux's abstract namespace (the address is then as long as the name, no
 * trailing NUL). Returns 0, or -1 with Envoy's message in err (empty path,
 * path too long for sun_path). */
int sharp_pipe_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);
/* Whether an AF_UNIX address is in the abstract namespace. */
bool sharp_pipe_is_abstract(const struct sockaddr *sa);

/* Socket options of a listener's sockets (`flags` below). */
#define SHARP_SOCK_FREEBIND 1u  /* Listener.freebind: IP_FREEBIND (IPV6_FREEBIND on IPv6) */
#define SHARP_SOCK_V4COMPAT 2u  /* socket_address.ipv4_compat: IPV6_V6ONLY off */

/* A listening stream socket as Envoy's SocketImpl::bind and listen make it.
 * IP: SO_REUSEADDR, SO_REUSEPORT (one socket per worker), IPV6_V6ONLY
 * unless SHARP_SOCK_V4COMPAT, and IP_FREEBIND with SHARP_SOCK_FREEBIND. Unix:
 * whatever is at a filesystem path is unlinked first (a stale socket from
 * a previous run), and a non-zero mode is applied with chmod after bind.
 * Returns the fd, or -1 with a message in err naming `name`. */
int sharp_listen_socket(const struct sockaddr *sa, socklen_t len, uint32_t mode, unsigned flags, const char *name,
                        char *err, size_t errlen);
/* The same socket bound but not listening yet (a warming listener's: the
 * address is taken, connection attempts are refused until
 * sharp_listen_fd), of `type` SOCK_STREAM, or SOCK_DGRAM for a UDP
 * listener's (an IP address; no SO_REUSEADDR, as Envoy: SO_REUSEPORT alone
 * gives a socket per worker, the kernel hashing each peer to one of them,
 * and lets no other user bind the port). */
int sharp_bind_socket(const struct sockaddr *sa, socklen_t len, int type, uint32_t mode, unsigned flags,
                      const char *name, char *err, size_t errlen);
/* listen(2) with SHARP's backlog. 0, or -1 with a message naming `name`. */
int sharp_listen_fd(int fd, const char *name, char *err, size_t errlen);

/* The peer of a connected stream socket. An accepted Unix socket's peer is
 * usually unnamed; Envoy (IoSocketHandleImpl::peerAddress) then uses the
 * socket's own name, the listener's path, and so does this. Returns 0 or a
 * negative uv error. The storage is zeroed first. */
int sharp_stream_peer(const uv_tcp_t *h, struct sockaddr_storage *ss);
/* The original destination of an accepted TCP socket whose local address
 * is `local` (Envoy's Network::Utility::getOriginalDst): SO_ORIGINAL_DST
 * for IPv4, IP6T_SO_ORIGINAL_DST for IPv6, as netfilter (an iptables
 * REDIRECT or TPROXY) recorded it; an IPv4 connection to a dual-stack
 * socket (v4-mapped) asks SO_ORIGINAL_DST and gets an IPv4 address. 0, or
 * a negative errno when there is none (no conntrack entry, another
 * family). `out` may be `local`. */
int sharp_original_dst(int fd, const struct sockaddr_storage *local, struct sockaddr_storage *out);

/* Connects h (initialized, not open) to sa. IP goes through
 * uv_tcp_connect. A Unix socket connects at once or fails at once (Linux
 * has no in-progress state for AF_UNIX, and libuv before 1.46 cannot name
 * an abstract socket): on success the connected fd is opened into h and
 * *connected is set, and the caller reports the connection from its next
 * loop turn, as it reports a failure at once. Returns 0 or a negative uv
 * error. */
int sharp_stream_connect(uv_tcp_t *h, uv_connect_t *req, const struct sockaddr *sa, socklen_t len,
                         uv_connect_cb cb, bool *connected);

/* An address range (Envoy's CidrRange): family AF_INET or AF_INET6, the
 * address already masked to prefix_len bits. */
typedef struct sharp_cidr {
    int family;
    uint8_t addr[16];
    uint32_t prefix_len;
} sharp_cidr_t;

/* Parses "10.0.0.0" with a prefix length; returns 0, or -1 when the address
 * is not numeric or the length exceeds 32 (IPv4) / 128 (IPv6). */
int sharp_cidr_parse(const char *ip, uint32_t prefix_len, sharp_cidr_t *out);
/* Whether the address (IPv4 or IPv6, port ignored) lies in the range. */
bool sharp_cidr_contains(const sharp_cidr_t *c, const struct sockaddr *sa);

/* libuv alloc callback handing out one 64 KiB read buffer per thread. Read
 * callbacks never nest and always consume (parse or copy) what they were
 * given before returning, so one buffer serves every connection of a loop
 * and a read costs no allocation. */
void sharp_read_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

typedef struct sharp_writer sharp_writer_t;
/* Called when queued bytes fall to zero after having been above zero. */
typedef void (*sharp_writer_drain_cb)(sharp_writer_t *w);
/* Called when an asynchronous write fails (peer gone). */
typedef void (*sharp_writer_error_cb)(sharp_writer_t *w, int status);

/* A transport between the writer's users and the socket (TLS): it takes
 * the bytes sharp_writer_write is given and puts what goes on the wire
 * through sharp_writer_write_raw. Returns like sharp_writer_write. */
typedef int (*sharp_writer_transport_cb)(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs);

/* Where a transport's output for the plaintext up to plain_end ends on the
 * wire (see sharp_writer_plain_written). */
typedef struct sharp_writer_mark {
    uint64_t plain_end, raw_end;
} sharp_writer_mark_t;

struct sharp_writer {
    uv_stream_t *stream;
    size_t queued; /* bytes handed to uv_write and not yet completed */
    sharp_writer_drain_cb on_drain;
    sharp_writer_error_cb on_error;
    sharp_writer_transport_cb transport; /* NULL: bytes go to the socket as they are */
    bool failed;
    /* Bytes given to sharp_writer_write (plaintext) and put on the socket's
     * path (raw: through the transport, or the same bytes without one). */
    uint64_t plain_total, raw_total;
    /* With a transport: one mark per write, dropped once its raw bytes are
     * written; plain_done is the plaintext known to be on the wire. */
    sharp_writer_mark_t *marks;
    uint32_t marks_head, marks_len, marks_cap;
    uint64_t plain_done;
};

void sharp_writer_init(sharp_writer_t *w, uv_stream_t *stream, sharp_writer_drain_cb on_drain,
                       sharp_writer_error_cb on_error);
/* Writes the buffers in order: as much as possible synchronously, the rest is
 * copied and queued. Returns 0, or a negative uv error if the stream is dead. */
int sharp_writer_write(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs);
/* The same, bypassing the transport: what the transport puts on the wire. */
int sharp_writer_write_raw(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs);
/* How many of the bytes given to sharp_writer_write (plain_total counts
 * them) have gone to the kernel: without a transport, those not queued;
 * with one (TLS), those whose whole output has been written, so that the
 * HTTP/2 codec's outbound frame accounting measures the same thing over
 * TLS and in the clear. */
uint64_t sharp_writer_plain_written(sharp_writer_t *w);
/* Frees what the writer holds (the transport's marks). */
void sharp_writer_release(sharp_writer_t *w);

#endif
