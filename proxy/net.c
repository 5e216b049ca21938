/* net.c: see net.h. */
#include "net.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

bool sharp_addr_is_pipe(const char *printed)
{
    /* An IP prints as "[v6]:port" or "a.b.c.d:port"; anything else that
     * is not empty is a path (which may be relative: "run/x.sock"). */
    if (!printed[0] || printed[0] == '[' || !strcmp(printed, "-")) return false;
    const char *colon = strrchr(printed, ':');
    if (!colon || colon == printed || (size_t)(colon - printed) >= INET_ADDRSTRLEN || !colon[1]) return true;
    for (const char *d = colon + 1; *d; d++)
        if (*d < '0' || *d > '9') return true;
    char ip[INET_ADDRSTRLEN];
    struct in_addr a;
    memcpy(ip, printed, (size_t)(colon - printed));
    ip[colon - printed] = '\0';
    return inet_pton(AF_INET, ip, &a) != 1;
}

sharp_str_t sharp_addr_without_port(const char *a)
{
    size_t n = strlen(a);
    if (sharp_addr_is_pipe(a)) return (sharp_str_t){a, n};
    if (n && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close) return (sharp_str_t){a + 1, (size_t)(close - a - 1)};
    }
    const char *colon = memchr(a, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - a)))
        return (sharp_str_t){a, (size_t)(colon - a)};
    return (sharp_str_t){a, n};
}

/* Appends v in decimal at p; returns the end. */
static char *put_uint(char *p, unsigned v)
{
    char d[10];
    int n = 0;
    do d[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = d[--n];
    return p;
}

char *sharp_addr_str(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (sa->sa_family == AF_INET && cap >= sizeof "255.255.255.255:65535") {
        /* every accepted connection formats its addresses: by hand, what
         * inet_ntop and snprintf write ("a.b.c.d:port") */
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        const uint8_t *b = (const uint8_t *)&in->sin_addr;
        char *p = out;
        for (int i = 0; i < 4; i++) {
            p = put_uint(p, b[i]);
            *p++ = i < 3 ? '.' : ':';
        }
        *put_uint(p, ntohs(in->sin_port)) = '\0';
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        /* The storage behind sa is zeroed past the name (see
         * sharp_stream_peer), so an abstract name ends at its first NUL. */
        const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
        if (sharp_pipe_is_abstract(sa))
            snprintf(out, cap, "@%.*s", (int)strnlen(un->sun_path + 1, sizeof un->sun_path - 1), un->sun_path + 1);
        else
            snprintf(out, cap, "%.*s", (int)strnlen(un->sun_path, sizeof un->sun_path), un->sun_path);
    } else {
        snprintf(out, cap, "-");
    }
    return out;
}

char *sharp_addr_stat_name(const struct sockaddr *sa, char *out, size_t cap)
{
    sharp_addr_str(sa, out, cap);
    if (sa->sa_family != AF_UNIX) {
        char *colon = strrchr(out, ':');
        if (colon) *colon = '_';
        return out;
    }
    /* sanitizeStatsName: "://", ":/" and ":" each become one '_'. */
    char *w = out;
    for (const char *r = out; *r;) {
        if (*r != ':') {
            *w++ = *r++;
            continue;
        }
        r += r[1] == '/' && r[2] == '/' ? 3 : r[1] == '/' ? 2 : 1;
        *w++ = '_';
    }
    *w = '\0';
    return out;
}

bool sharp_pipe_is_abstract(const struct sockaddr *sa)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    return sa->sa_family == AF_UNIX && un->sun_path[0] == '\0' && un->sun_path[1] != '\0';
}

int sharp_pipe_addr(const char *path, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    size_t n = strlen(path);
    if (n == 0) {
        snprintf(err, errlen, "path must not be empty");
        return -1;
    }
    if (n >= sizeof un->sun_path) {
        snprintf(err, errlen, "Path \"%s\" exceeds maximum UNIX domain socket path size of %zu.", path,
                 sizeof un->sun_path);
        return -1;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n);
    if (path[0] == '@') {
        if (n == 1) {
            /* "\0" alone would ask the kernel to autobind a random name */
            snprintf(err, errlen, "an abstract socket path needs a name after '@'");
            return -1;
        }
        un->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)sizeof *un;
    }
    return 0;
}

int sharp_bind_socket(const struct sockaddr *sa, socklen_t len, int type, uint32_t mode, unsigned flags,
                      const char *name, char *err, size_t errlen)
{
    int fd = socket(sa->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket(): %s", strerror(errno));
        return -1;
    }
    int one = 1;
    const struct sockaddr_un *un = (const struct sockaddr_un *)sa;
    bool unix_path = sa->sa_family == AF_UNIX && !sharp_pipe_is_abstract(sa);
    if (sa->sa_family == AF_UNIX) {
        /* Envoy ignores unlink errors: a missing path is fine, and a path
         * that cannot be removed makes bind fail with a clear errno. */
        if (unix_path) unlink(un->sun_path);
    } else {
        /* Envoy's setPrebindSocketOptions: SO_REUSEADDR on stream sockets
         * only; on a datagram socket it would let anyone bind the same
         * port and take part of its datagrams */
        if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        /* Envoy's Ipv6Instance: v6only unless ipv4_compat */
        int v6only = !(flags & SHARP_SOCK_V4COMPAT);
        if (sa->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
        /* Envoy's buildIpFreebindOptions, a prebind option aware of the
         * address family: IPV6_FREEBIND on IPv6 where the kernel has it,
         * else IP_FREEBIND */
        if (flags & SHARP_SOCK_FREEBIND) {
            int rc = -1;
#ifdef IPV6_FREEBIND
            if (sa->sa_family == AF_INET6) rc = setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
#endif
            if (rc < 0) rc = setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
            if (rc < 0) {
                snprintf(err, errlen, "cannot set IP_FREEBIND on '%s': %s", name, strerror(errno));
                close(fd);
                return -1;
            }
        }
    }
    if (bind(fd, sa, len) < 0) {
        snprintf(err, errlen, "cannot bind '%s': %s", name, strerror(errno));
        close(fd);
        return -1;
    }
    if (unix_path && mode != 0 && chmod(un->sun_path, (mode_t)mode) < 0) {
        snprintf(err, errlen, "Failed to create socket with mode %u: %s", mode, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int sharp_listen_fd(int fd, const char *name, char *err, size_t errlen)
{
    if (listen(fd, 4096) < 0) {
        snprintf(err, errlen, "cannot listen on '%s': %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

int sharp_listen_socket(const struct sockaddr *sa, socklen_t len, uint32_t mode, unsigned flags, const char *name,
                        char *err, size_t errlen)
{
    int fd = sharp_bind_socket(sa, len, SOCK_STREAM, mode, flags, name, err, errlen);
    if (fd >= 0 && sharp_listen_fd(fd, name, err, errlen) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void sharp_addr_unmap_v4(struct sockaddr_storage *ss)
{
    if (ss->ss_family != AF_INET6) return;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    if (!IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
    memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &in, sizeof in);
}

int sharp_stream_peer(const uv_tcp_t *h, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    int len = sizeof *ss;
    int rc = uv_tcp_getpeername(h, (struct sockaddr *)ss, &len);
    if (rc < 0) return rc;
    if (ss->ss_family == AF_UNIX && (size_t)len <= offsetof(struct sockaddr_un, sun_path)) {
        memset(ss, 0, sizeof *ss);
        len = sizeof *ss;
        rc = uv_tcp_getsockname(h, (struct sockaddr *)ss, &len);
    }
    return rc;
}

/* linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h, which do
 * not mix with the C library's headers */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

int sharp_original_dst(int fd, const struct sockaddr_storage *local, struct sockaddr_storage *out)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len = sizeof ss;
    int rc;
    /* an IPv4 connection to a dual-stack socket (a v4-mapped address) is
     * IPv4 to Envoy, and to netfilter */
    bool v4 = local->ss_family == AF_INET ||
              (local->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)local)->sin6_addr));
    if (v4) rc = getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
    else if (local->ss_family == AF_INET6) rc = getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
    else return UV_EAFNOSUPPORT;
    if (rc != 0) return uv_translate_sys_error(errno);
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6) return UV_EAFNOSUPPORT;
    *out = ss;
    return 0;
}

int sharp_stream_connect(uv_tcp_t *h, uv_connect_t *req, const struct sockaddr *sa, socklen_t len,
                         uv_connect_cb cb, bool *connected)
{
    *connected = false;
    if (sa->sa_family != AF_UNIX) return uv_tcp_connect(req, h, sa, cb);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return uv_translate_sys_error(errno);
    int rc;
    do rc = connect(fd, sa, len);
    while (rc < 0 && errno == EINTR);
    /* A full backlog gives EAGAIN: an immediate failure, as in Envoy. */
    if (rc < 0) {
        int e = errno;
        close(fd);
        return uv_translate_sys_error(e);
    }
    /* libuv streams over a connected Unix socket as over TCP: the handle
     * only reads and writes the fd. */
    rc = uv_tcp_open(h, fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    *connected = true;
    return 0;
}

int sharp_addr_parse(const char *ip, uint32_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (port > 65535) return -1;
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -1;
}

void sharp_read_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static __thread char rbuf[65536];
    (void)h;
    (void)suggested;
    buf->base = rbuf;
    buf->len = sizeof rbuf;
}

int sharp_cidr_parse(const char *ip, uint32_t prefix_len, sharp_cidr_t *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, ip, out->addr) == 1) {
        out->family = AF_INET;
        if (prefix_len > 32) return -1;
    } else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
        out->family = AF_INET6;
        if (prefix_len > 128) return -1;
    } else {
        return -1;
    }
    out->prefix_len = prefix_len;
    size_t bytes = out->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < bytes; i++) {
        uint32_t bit = (uint32_t)i * 8;
        if (bit >= prefix_len) out->addr[i] = 0;
        else if (prefix_len - bit < 8) out->addr[i] &= (uint8_t)(0xff << (8 - (prefix_len - bit)));
    }
    return 0;
}

bool sharp_cidr_contains(const sharp_cidr_t *c, const struct sockaddr *sa)
{
    const uint8_t *a;
    if (sa->sa_family == AF_INET && c->family == AF_INET)
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6 && c->family == AF_INET6)
        a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    else
        return false;
    uint32_t full = c->prefix_len / 8, rest = c->prefix_len % 8;
    if (memcmp(a, c->addr, full) != 0) return false;
    if (rest && (a[full] & (uint8_t)(0xff << (8 - rest))) != c->addr[full]) return false;
    return true;
}

typedef struct {
    uv_write_t req;
    sharp_writer_t *w;
    size_t len;
    char data[];
} write_req_t;

void sharp_writer_init(sharp_writer_t *w, uv_stream_t *stream, sharp_writer_drain_cb on_drain,
                       sharp_writer_error_cb on_error)
{
    memset(w, 0, sizeof *w);
    w->stream = stream;
    w->on_drain = on_drain;
    w->on_error = on_error;
}

/* The handle outlives its write requests: libuv cancels pending writes with
 * UV_ECANCELED before a close callback runs, so `w` is still valid here. */
static void on_write(uv_write_t *req, int status)
{
    write_req_t *wr = sharp_container_of(req, write_req_t, req);
    sharp_writer_t *w = wr->w;
    w->queued -= wr->len;
    free(wr);
    if (status < 0) {
        if (!w->failed) {
            w->failed = true;
            if (w->on_error && status != UV_ECANCELED) w->on_error(w, status);
        }
        return;
    }
    if (w->queued == 0 && w->on_drain) w->on_drain(w);
}

int sharp_writer_write(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    w->plain_total += total;
    if (!w->transport) return sharp_writer_write_raw(w, bufs, nbufs);
    int rc = w->transport(w, bufs, nbufs); /* TLS: encrypted, then written raw */
    if (total) {
        sharp_writer_plain_written(w); /* drops the marks already written */
        if (w->marks_len == w->marks_cap) {
            uint32_t cap = w->marks_cap ? w->marks_cap * 2 : 16;
            sharp_writer_mark_t *m = sharp_calloc(cap, sizeof *m);
            for (uint32_t i = 0; i < w->marks_len; i++) m[i] = w->marks[(w->marks_head + i) % w->marks_cap];
            free(w->marks);
            w->marks = m;
            w->marks_head = 0;
            w->marks_cap = cap;
        }
        w->marks[(w->marks_head + w->marks_len++) % w->marks_cap] =
            (sharp_writer_mark_t){w->plain_total, w->raw_total};
        sharp_writer_plain_written(w); /* the transport may have written it all at once */
    }
    return rc;
}

uint64_t sharp_writer_plain_written(sharp_writer_t *w)
{
    if (!w->transport) return w->plain_total - w->queued;
    uint64_t raw_written = w->raw_total - w->queued;
    while (w->marks_len && w->marks[w->marks_head].raw_end <= raw_written) {
        w->plain_done = w->marks[w->marks_head].plain_end;
        w->marks_head = (w->marks_head + 1) % w->marks_cap;
        w->marks_len--;
    }
    return w->plain_done;
}

void sharp_writer_release(sharp_writer_t *w)
{
    free(w->marks);
    w->marks = NULL;
    w->marks_len = w->marks_cap = w->marks_head = 0;
}

int sharp_writer_write_raw(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    if (w->failed) return UV_EPIPE;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) return 0;
    w->raw_total += total;
    size_t done = 0;
    if (w->queued == 0) {
        int n = uv_try_write(w->stream, bufs, nbufs);
        if (n < 0 && n != UV_EAGAIN) {
            w->failed = true;
            return n;
        }
        if (n > 0) done = (size_t)n;
        if (done == total) return 0;
    }
    write_req_t *wr = sharp_calloc(1, sizeof *wr + (total - done));
    size_t skip = done, off = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        if (skip >= bufs[i].len) {
            skip -= bufs[i].len;
            continue;
        }
        memcpy(wr->data + off, bufs[i].base + skip, bufs[i].len - skip);
        off += bufs[i].len - skip;
        skip = 0;
    }
    wr->w = w;
    wr->len = off;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)off);
    int rc = uv_write(&wr->req, w->stream, &b, 1, on_write);
    if (rc < 0) {
        free(wr);
        w->failed = true;
        return rc;
    }
    w->queued += off;
    return 0;
}

bool sharp_addr_is_any(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (a->ss_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
    return false;
}

bool sharp_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    return ((const struct sockaddr_un *)a)->sun_path[0] &&
           !strcmp(((const struct sockaddr_un *)a)->sun_path, ((const struct sockaddr_un *)b)->sun_path);
}
