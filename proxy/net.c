/* net.c: see net.h. */
#include "net.h"
#include "log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

sharp_str_t sharp_addr_without_port(const char *a)
{
    size_t n = strlen(a);
    if (n && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close) return (sharp_str_t){a + 1, (size_t)(close - a - 1)};
    }
    const char *colon = memchr(a, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - a)))
        return (sharp_str_t){a, (size_t)(colon - a)};
    return (sharp_str_t){a, n};
}

char *sharp_addr_str(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, cap, "-");
    }
    return out;
}

char *sharp_addr_stat_name(const struct sockaddr *sa, char *out, size_t cap)
{
    sharp_addr_str(sa, out, cap);
    char *colon = strrchr(out, ':');
    if (colon) *colon = '_';
    return out;
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
    if (w->failed) return UV_EPIPE;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (total == 0) return 0;
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
