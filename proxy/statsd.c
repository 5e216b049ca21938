/* statsd.c: the statsd and DogStatsD stats sinks (statsd.h). */
#include "statsd.h"
#include "log.h"
#include "snapshot.h"
#include "stats_config.h"
#include "upstream/env.h"
#include "upstream/host.h"
#include "upstream/pool.h"

#include "envoy/config/core/v3/base.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#define STATSD_MAX_TAGS 32

void sharp_statsd_packer_flush(sharp_statsd_packer_t *p)
{
    if (!p->buf.len) return;
    p->send(p->arg, p->buf.data, p->buf.len);
    sharp_sbuf_reset(&p->buf);
}

void sharp_statsd_packer_add(sharp_statsd_packer_t *p, const char *line, size_t len)
{
    /* Envoy's rule: a line that does not fit an empty datagram goes out
     * alone (the buffered lines keep waiting); otherwise the buffer is sent
     * first when the line and its '\n' separator would overflow it. */
    if (len >= p->max) {
        p->send(p->arg, line, len);
        return;
    }
    if (p->buf.len + len + 1 > p->max)
        sharp_statsd_packer_flush(p);
    else if (p->buf.len)
        sharp_sbuf_append(&p->buf, "\n", 1);
    sharp_sbuf_append(&p->buf, line, len);
}

static void append_tags(sharp_sbuf_t *out, const sharp_stat_tag_t *tags, size_t ntags)
{
    for (size_t i = 0; i < ntags; i++) {
        sharp_sbuf_puts(out, i ? "," : "|#");
        sharp_sbuf_puts(out, tags[i].tag);
        sharp_sbuf_append(out, ":", 1);
        sharp_sbuf_append(out, tags[i].value, tags[i].len);
    }
}

void sharp_statsd_format(sharp_sbuf_t *out, const char *prefix, const char *name, size_t namelen,
                         const char *value, const char *type, const sharp_stat_tag_t *tags,
                         size_t ntags)
{
    sharp_sbuf_puts(out, prefix);
    sharp_sbuf_append(out, ".", 1);
    sharp_sbuf_append(out, name, namelen);
    sharp_sbuf_append(out, ":", 1);
    sharp_sbuf_puts(out, value);
    sharp_sbuf_puts(out, type);
    append_tags(out, tags, ntags);
}

/* What a sink derives from a stat's name once: "<prefix>.<name>" (the
 * tag-extracted name for DogStatsD) and the DogStatsD tag suffix. */
typedef struct {
    char *head;
    char *tags; /* NULL: none */
    uint32_t headlen, tagslen;
} stat_names_t;

/* Datagrams of one flush waiting for one sendmmsg(2): the same datagrams
 * as one sendto each, in order, with a system call per UDP_BATCH. */
#define UDP_BATCH 256
typedef struct {
    sharp_sbuf_t bytes;
    uint32_t n;
    size_t off[UDP_BATCH];
    /* the headers, addressed once; each send sets the iovecs */
    struct mmsghdr msgs[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
} udp_batch_t;

struct sharp_statsd_sink {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *prefix;
    bool dog;
    int fd; /* -1 until the first flush; -2 when it could not be opened */
    /* tcp_cluster_name (cluster non-NULL): one connection through a pool */
    char *cluster;
    sharp_snapshot_t *snap; /* held while the pool lives */
    sharp_pool_t *pool;
    sharp_host_t *pool_host;
    uint32_t rr;
    sharp_upstream_request_t req;
    bool acquired;          /* req waits for, or holds, a connection */
    sharp_upstream_cx_t *cx; /* the connection, once ready */
    sharp_sbuf_t flush_out; /* this flush's lines */
    sharp_sbuf_t tcp_out;   /* what waits for the connect */
    bool stopped;
    bool overflow_registered;
    sharp_stat_id_t cx_overflow; /* statsd.cx_overflow */
    uint64_t overflows, dropped_flushes, written;
    sharp_statsd_packer_t packer;
    uint64_t *last;      /* counters: value at the previous flush, by id */
    stat_names_t *names; /* by id */
    uint32_t cap;
    /* the ids of each kind (counters, gauges, histograms) in id order, for
     * the ids below `classified`: a stat's kind and name never change */
    sharp_stat_id_t *ids[3];
    uint32_t nids[3], ids_cap[3];
    uint32_t classified;
    uint64_t datagrams;
    sharp_sbuf_t line;
    udp_batch_t *batch;
};

/* Non-blocking and unconnected: a full socket buffer or a port nobody
 * listens on loses a datagram and nothing else (the next ones are still
 * sent, as they would be one sendto each). */
static void udp_batch_send(sharp_statsd_sink_t *k)
{
    udp_batch_t *b = k->batch;
    if (!b || !b->n) return;
    /* the lengths were set as the datagrams came; the buffer may have
     * moved since */
    for (uint32_t i = 0; i < b->n; i++) b->iov[i].iov_base = b->bytes.data + b->off[i];
    uint32_t at = 0;
    while (at < b->n) {
        int n = sendmmsg(k->fd, b->msgs + at, b->n - at, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            at += (uint32_t)n;
            k->datagrams += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            at++; /* this one is lost, as its sendto would have been */
        }
    }
    b->n = 0;
    sharp_sbuf_reset(&b->bytes);
}

static udp_batch_t *udp_batch(sharp_statsd_sink_t *k)
{
    if (k->batch) return k->batch;
    udp_batch_t *b = k->batch = sharp_calloc(1, sizeof *k->batch);
    for (uint32_t i = 0; i < UDP_BATCH; i++) {
        b->msgs[i].msg_hdr.msg_name = &k->addr;
        b->msgs[i].msg_hdr.msg_namelen = k->addrlen;
        b->msgs[i].msg_hdr.msg_iov = &b->iov[i];
        b->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    return b;
}

/* Room for a datagram of len bytes at the end of the batch, which the
 * caller fills; it is counted in. */
static char *udp_batch_add(sharp_statsd_sink_t *k, size_t len)
{
    udp_batch_t *b = udp_batch(k);
    if (b->n == UDP_BATCH) udp_batch_send(k);
    sharp_sbuf_reserve(&b->bytes, len);
    char *p = b->bytes.data + b->bytes.len;
    b->off[b->n] = b->bytes.len;
    b->iov[b->n].iov_len = len;
    b->n++;
    b->bytes.len += len;
    return p;
}

static void udp_send(void *arg, const char *data, size_t len)
{
    sharp_statsd_sink_t *k = arg;
    if (k->fd < 0) return;
    memcpy(udp_batch_add(k, len), data, len);
}

/* ---- statsd over TCP (tcp_cluster_name) ---- */

static void tcp_line(void *arg, const char *data, size_t len)
{
    sharp_statsd_sink_t *k = arg;
    sharp_sbuf_append(&k->flush_out, data, len);
    sharp_sbuf_append(&k->flush_out, "\n", 1);
}

static void tcp_release(sharp_statsd_sink_t *k)
{
    if (k->acquired) sharp_pool_cancel(&k->req);
    k->acquired = false;
    k->cx = NULL;
}

static void tcp_ready(void *ctx, sharp_upstream_cx_t *cx)
{
    sharp_statsd_sink_t *k = ctx;
    k->cx = cx;
    if (k->tcp_out.len) {
        sharp_upstream_cx_send_data(cx, k->tcp_out.data, k->tcp_out.len, false);
        k->written += k->tcp_out.len;
        sharp_sbuf_reset(&k->tcp_out);
    }
}

static void tcp_failure(void *ctx, sharp_pool_failure_t why, const char *detail)
{
    (void)why;
    sharp_statsd_sink_t *k = ctx;
    sharp_debug(stats, "tcp statsd: no connection to cluster '%s' (%s): %zu bytes dropped", k->cluster,
                detail ? detail : "-", k->tcp_out.len);
    k->acquired = false;
    k->cx = NULL;
    if (k->tcp_out.len) k->dropped_flushes++;
    sharp_sbuf_reset(&k->tcp_out);
}

static void tcp_data(void *ctx, const char *p, size_t n, bool end_stream)
{
    (void)p;
    (void)n;
    sharp_statsd_sink_t *k = ctx;
    /* a collector sends nothing; its close ends the connection (the next
     * flush makes another) */
    if (end_stream) tcp_release(k);
}

static void tcp_reset(void *ctx, sharp_reset_reason_t why, const char *detail)
{
    (void)why;
    sharp_statsd_sink_t *k = ctx;
    sharp_debug(stats, "tcp statsd: connection to cluster '%s' closed (%s)", k->cluster, detail ? detail : "-");
    k->acquired = false;
    k->cx = NULL;
    sharp_sbuf_reset(&k->tcp_out);
}

static void tcp_watermark(void *ctx, bool above)
{
    (void)ctx;
    (void)above; /* the flush measures what is queued itself */
}

static const sharp_upstream_callbacks_t tcp_callbacks = {
    .on_ready = tcp_ready,
    .on_pool_failure = tcp_failure,
    .on_data = tcp_data,
    .on_reset = tcp_reset,
    .on_write_watermark = tcp_watermark,
};

/* The pool of a host of the cluster: healthy hosts first, round robin. */
static sharp_pool_t *tcp_pool(sharp_statsd_sink_t *k, const sharp_upstream_env_t *env)
{
    sharp_cluster_t *c = sharp_snapshot_cluster(k->snap, k->cluster);
    if (!c || !c->nhosts) return NULL;
    sharp_host_t *h = NULL;
    for (uint32_t i = 0; i < c->nhosts && !h; i++) {
        uint32_t at = (k->rr + i) % c->nhosts;
        if (sharp_host_healthy(c->hosts[at])) {
            h = c->hosts[at];
            k->rr = at + 1;
        }
    }
    if (!h) h = c->hosts[k->rr++ % c->nhosts];
    if (k->pool && k->pool_host != h) {
        sharp_pool_destroy(k->pool);
        k->pool = NULL;
    }
    if (!k->pool) {
        k->pool = sharp_pool_create(env, c, h, SHARP_PRIORITY_DEFAULT);
        sharp_pool_use_tcp(k->pool);
        k->pool_host = h;
    }
    return k->pool;
}

/* Envoy's TlsSink::write for one flush's lines (k->flush_out). */
static void tcp_write(sharp_statsd_sink_t *k, sharp_stats_t *s, const sharp_upstream_env_t *env,
                      sharp_snapshot_t *snap)
{
    if (!k->overflow_registered) {
        k->cx_overflow = sharp_stats_counterf(s, "statsd.cx_overflow");
        k->overflow_registered = true;
    }
    if (!k->snap) k->snap = sharp_snapshot_ref(snap);
    sharp_sbuf_t *lines = &k->flush_out;
    /* what the collector has not taken yet: the connection's queue, or
     * what waits for its connect */
    size_t buffered = k->cx ? sharp_upstream_cx_queued(k->cx) : k->tcp_out.len;
    if (buffered > SHARP_STATSD_TCP_MAX_BUFFERED) {
        sharp_debug(stats, "tcp statsd: %zu bytes not taken by cluster '%s': connection closed, flush dropped",
                    buffered, k->cluster);
        tcp_release(k);
        sharp_sbuf_reset(&k->tcp_out);
        sharp_counter_inc(env->stats, k->cx_overflow);
        k->overflows++;
        sharp_sbuf_reset(lines);
        return;
    }
    if (!lines->len) return;
    if (!k->acquired) {
        sharp_pool_t *p = tcp_pool(k, env);
        if (!p) {
            k->dropped_flushes++;
            sharp_sbuf_reset(lines);
            return;
        }
        sharp_sbuf_append(&k->tcp_out, lines->data, lines->len);
        sharp_sbuf_reset(lines);
        k->acquired = true; /* on_ready may come before acquire returns */
        if (!sharp_pool_acquire(p, &k->req, &tcp_callbacks, k)) {
            k->acquired = false;
            k->dropped_flushes++;
            sharp_sbuf_reset(&k->tcp_out);
        }
        return;
    }
    if (k->cx) {
        sharp_upstream_cx_send_data(k->cx, lines->data, lines->len, false);
        k->written += lines->len;
    } else {
        sharp_sbuf_append(&k->tcp_out, lines->data, lines->len);
    }
    sharp_sbuf_reset(lines);
}

sharp_statsd_sink_t *sharp_statsd_sink_create_tcp(const char *cluster, const char *prefix)
{
    sharp_statsd_sink_t *k = sharp_calloc(1, sizeof *k);
    k->cluster = sharp_strdup(cluster);
    k->prefix = sharp_strdup(prefix && prefix[0] ? prefix : "envoy");
    k->fd = -2;
    k->packer = (sharp_statsd_packer_t){.max = 0, .send = tcp_line, .arg = k};
    return k;
}

int sharp_statsd_sink_check(const sharp_statsd_sink_t *k, sharp_snapshot_t *snap, const ProtobufCMessage *node,
                            char *err, size_t errlen)
{
    if (!k->cluster) return 0;
    const sharp_cluster_t *c = sharp_snapshot_cluster(snap, k->cluster);
    if (!c) {
        snprintf(err, errlen, "tcp statsd: unknown cluster '%s'", k->cluster);
        return -1;
    }
    if (c->aggregate) {
        snprintf(err, errlen, "tcp statsd: cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which "
                 "is not supported by SHARP's TCP statsd sink", k->cluster);
        return -1;
    }
    const Envoy__Config__Core__V3__Node *n = (const void *)node;
    if (!n || !n->id || !n->id[0] || !n->cluster || !n->cluster[0]) {
        snprintf(err, errlen, "tcp statsd: node 'id' and 'cluster' are required. Set it either in 'node' config "
                 "or via --service-node and --service-cluster options.");
        return -1;
    }
    return 0;
}

void sharp_statsd_sink_stop(sharp_statsd_sink_t *k)
{
    if (!k || !k->cluster) return;
    k->stopped = true;
    tcp_release(k);
    if (k->pool) sharp_pool_destroy(k->pool);
    k->pool = NULL;
    if (k->snap) sharp_snapshot_unref(k->snap);
    k->snap = NULL;
}

sharp_statsd_sink_t *sharp_statsd_sink_create(const struct sockaddr *addr, socklen_t addrlen,
                                              const char *prefix, bool dog, size_t max_bytes)
{
    sharp_statsd_sink_t *k = sharp_calloc(1, sizeof *k);
    if (addrlen > sizeof k->addr) addrlen = sizeof k->addr;
    memcpy(&k->addr, addr, addrlen);
    k->addrlen = addrlen;
    k->prefix = sharp_strdup(prefix && prefix[0] ? prefix : "envoy");
    k->dog = dog;
    k->fd = -1;
    k->packer = (sharp_statsd_packer_t){.max = max_bytes, .send = udp_send, .arg = k};
    return k;
}

void sharp_statsd_sink_free(sharp_statsd_sink_t *k)
{
    if (!k) return;
    sharp_statsd_sink_stop(k);
    free(k->cluster);
    sharp_sbuf_free(&k->flush_out);
    sharp_sbuf_free(&k->tcp_out);
    if (k->fd >= 0) close(k->fd);
    for (uint32_t i = 0; i < k->cap; i++) {
        free(k->names[i].head);
        free(k->names[i].tags);
    }
    free(k->names);
    free(k->last);
    for (int i = 0; i < 3; i++) free(k->ids[i]);
    if (k->batch) sharp_sbuf_free(&k->batch->bytes);
    free(k->batch);
    free(k->prefix);
    sharp_sbuf_free(&k->packer.buf);
    sharp_sbuf_free(&k->line);
    free(k);
}

uint64_t sharp_statsd_sink_datagrams(const sharp_statsd_sink_t *k)
{
    return k->datagrams;
}

uint64_t sharp_statsd_sink_overflows(const sharp_statsd_sink_t *k)
{
    return k->overflows;
}

static void open_socket(sharp_statsd_sink_t *k)
{
    k->fd = socket(k->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        sharp_log_warn("statsd sink: socket: %s; its stats are not sent", strerror(errno));
        k->fd = -2;
    }
}

static void grow(sharp_statsd_sink_t *k, uint32_t n)
{
    if (n <= k->cap) return;
    uint32_t cap = k->cap ? k->cap : 256;
    while (cap < n) cap *= 2;
    k->last = sharp_realloc(k->last, cap * sizeof *k->last);
    k->names = sharp_realloc(k->names, cap * sizeof *k->names);
    memset(k->last + k->cap, 0, (cap - k->cap) * sizeof *k->last);
    memset(k->names + k->cap, 0, (cap - k->cap) * sizeof *k->names);
    k->cap = cap;
}

static const stat_names_t *names_of(sharp_statsd_sink_t *k, sharp_stats_t *s, sharp_stat_id_t id)
{
    stat_names_t *nm = &k->names[id];
    if (nm->head) return nm;
    const char *name = sharp_stats_name(s, id, NULL);
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, k->prefix);
    sharp_sbuf_append(&b, ".", 1);
    if (!k->dog) {
        sharp_sbuf_puts(&b, name);
        nm->head = sharp_strdup(sharp_sbuf_cstr(&b));
        nm->headlen = (uint32_t)strlen(nm->head);
        sharp_sbuf_free(&b);
        return nm;
    }
    sharp_stat_tag_t tags[STATSD_MAX_TAGS];
    size_t nt = sharp_stats_config_extract_tags(sharp_stats_get_config(s), name, &b, tags, STATSD_MAX_TAGS);
    nm->head = sharp_strdup(sharp_sbuf_cstr(&b));
    nm->headlen = (uint32_t)strlen(nm->head);
    if (nt) {
        sharp_sbuf_reset(&b);
        append_tags(&b, tags, nt);
        nm->tags = sharp_strdup(sharp_sbuf_cstr(&b));
        nm->tagslen = (uint32_t)strlen(nm->tags);
    }
    sharp_sbuf_free(&b);
    return nm;
}

/* "<head>:<value><tags>" (value holds its type), composed in one buffer
 * from the lengths the names keep. */
static void compose(char *p, const stat_names_t *nm, const char *value, size_t vlen)
{
    memcpy(p, nm->head, nm->headlen);
    p += nm->headlen;
    *p++ = ':';
    memcpy(p, value, vlen);
    p += vlen;
    if (nm->tagslen) memcpy(p, nm->tags, nm->tagslen);
}

static void emit(sharp_statsd_sink_t *k, const stat_names_t *nm, const char *value, size_t vlen)
{
    size_t len = nm->headlen + 1 + vlen + nm->tagslen;
    if (k->packer.send == udp_send && !k->packer.max) {
        /* a datagram per line: composed where it is sent from */
        if (k->fd >= 0) compose(udp_batch_add(k, len), nm, value, vlen);
        return;
    }
    sharp_sbuf_reset(&k->line);
    sharp_sbuf_reserve(&k->line, len);
    compose(k->line.data, nm, value, vlen);
    k->line.len = len;
    k->line.data[len] = '\0';
    sharp_statsd_packer_add(&k->packer, k->line.data, len);
}

/* "<value><type>" into v (64 bytes), its length: every used counter and
 * gauge makes a line on every flush, so no snprintf. type is 2 bytes. */
static size_t value_str(char *v, bool negative, uint64_t magnitude, const char type[2])
{
    size_t n = 0;
    if (negative) v[n++] = '-';
    n += sharp_u64_to_str(magnitude, v + n);
    v[n++] = type[0];
    v[n++] = type[1];
    v[n] = '\0';
    return n;
}

/* One timer line per non-empty bucket of the interval (see statsd.h). */
static void emit_histogram(sharp_statsd_sink_t *k, const stat_names_t *nm, const sharp_hist_merged_t *h)
{
    char v[64];
    for (unsigned i = 0; i < SHARP_HIST_NBUCKETS; i++) {
        uint64_t c = h->buckets[i];
        if (!c) continue;
        unsigned row = i >> SHARP_HIST_SUB_BITS, sub = i & ((1u << SHARP_HIST_SUB_BITS) - 1);
        uint64_t lower = row == 0 ? sub : ((uint64_t)((1u << SHARP_HIST_SUB_BITS) + sub) << (row - 1));
        uint64_t width = row == 0 ? 1 : (uint64_t)1 << (row - 1);
        uint64_t mid = lower + (width - 1) / 2;
        int vlen;
        if (c == 1)
            vlen = snprintf(v, sizeof v, "%" PRIu64 "|ms", mid);
        else
            vlen = snprintf(v, sizeof v, "%" PRIu64 "|ms|@%.9g", mid, 1.0 / (double)c);
        emit(k, nm, v, (size_t)vlen);
    }
}

/* Sorts the ids registered since the last flush by kind (placeholders,
 * which have no name, are left out). */
static void classify(sharp_statsd_sink_t *k, sharp_stats_t *s, uint32_t n)
{
    for (sharp_stat_id_t id = k->classified; id < n; id++) {
        sharp_stat_kind_t kind;
        if (!sharp_stats_name(s, id, &kind) || (unsigned)kind > SHARP_STAT_HISTOGRAM) continue;
        if (k->nids[kind] == k->ids_cap[kind]) {
            k->ids_cap[kind] = k->ids_cap[kind] ? 2 * k->ids_cap[kind] : 256;
            k->ids[kind] = sharp_realloc(k->ids[kind], k->ids_cap[kind] * sizeof *k->ids[kind]);
        }
        k->ids[kind][k->nids[kind]++] = id;
    }
    k->classified = n;
}

void sharp_statsd_sink_flush(sharp_statsd_sink_t *k, sharp_stats_t *s, const sharp_upstream_env_t *env,
                             sharp_snapshot_t *snap)
{
    if (k->stopped) return;
    if (k->fd == -1) open_socket(k);
    uint32_t n = sharp_stats_size(s);
    grow(k, n);
    classify(k, s, n);
    char v[64];
    /* Envoy's order: counters, then gauges; histograms last here. */
    const sharp_stat_id_t *ids = k->ids[SHARP_STAT_COUNTER];
    enum { CHUNK = 256 };
    uint64_t values[CHUNK];
    bool used[CHUNK];
    for (uint32_t from = 0; from < k->nids[SHARP_STAT_COUNTER]; from += CHUNK) {
        uint32_t m = SHARP_MIN(CHUNK, k->nids[SHARP_STAT_COUNTER] - from);
        sharp_stats_counters_read(s, ids + from, m, values, used);
        for (uint32_t i = 0; i < m; i++) {
            sharp_stat_id_t id = ids[from + i];
            uint64_t cur = values[i];
            /* after /reset_counters the value starts again from 0 */
            uint64_t delta = cur >= k->last[id] ? cur - k->last[id] : cur;
            k->last[id] = cur;
            if (!used[i]) continue;
            size_t vlen = value_str(v, false, delta, "|c");
            emit(k, names_of(k, s, id), v, vlen);
        }
    }
    ids = k->ids[SHARP_STAT_GAUGE];
    for (uint32_t i = 0; i < k->nids[SHARP_STAT_GAUGE]; i++) {
        sharp_stat_id_t id = ids[i];
        if (!sharp_stats_used(s, id)) continue;
        int64_t g = sharp_stats_gauge_value(s, id);
        size_t vlen = value_str(v, g < 0, g < 0 ? 0 - (uint64_t)g : (uint64_t)g, "|g");
        emit(k, names_of(k, s, id), v, vlen);
    }
    sharp_hist_merged_t *h = NULL;
    ids = k->ids[SHARP_STAT_HISTOGRAM];
    for (uint32_t i = 0; i < k->nids[SHARP_STAT_HISTOGRAM]; i++) {
        sharp_stat_id_t id = ids[i];
        if (!sharp_stats_used(s, id)) continue;
        if (!h) h = sharp_calloc(1, sizeof *h);
        if (sharp_stats_histogram_merge(s, id, NULL, h) < 0 || !h->count) continue;
        emit_histogram(k, names_of(k, s, id), h);
    }
    sharp_statsd_packer_flush(&k->packer);
    udp_batch_send(k);
    free(h);
    if (k->cluster && env && snap) tcp_write(k, s, env, snap);
}
