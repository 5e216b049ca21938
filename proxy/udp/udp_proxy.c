/* udp_proxy.c: a worker's UDP listening sockets and the UDP proxy's
 * sessions on them. See udp_proxy.h; the behaviour is Envoy's
 * UdpProxyFilter (sticky sessions or per-packet load balancing, the
 * cluster's max_connections breaker bounding the sessions, a session to an
 * unhealthy or removed host replaced by one to a healthy host at its next
 * datagram, datagrams larger than max_rx_datagram_size dropped). */
#include "udp/udp_proxy.h"
#include "udp/session_table.h"
#include "log.h"
#include "listener_match.h"
#include "matcher.h"
#include "net.h"
#include "snapshot.h"
#include "worker.h"
#include "upstream/cluster.h"
#include "upstream/host.h"

#include <errno.h>
#include <string.h>

struct sharp_udp_listener {
    sharp_worker_t *w;
    const sharp_listener_config_t *l; /* held by the worker's snapshot */
    const sharp_udp_proxy_config_t *cfg;
    uv_udp_t *h;
    sharp_udp_table_t table;
    sharp_dlist_t sessions; /* sharp_udp_session_t.link */
    char *buf;              /* one datagram, read and relayed at once */
    size_t buflen;
    bool reading;
    bool aggregate_logged; /* the error of a datagram to an aggregate cluster, once per config */
};

typedef struct sharp_udp_session {
    sharp_udp_entry_t entry; /* in the listener's table */
    sharp_dlist_t link;      /* in the listener's sessions */
    sharp_udp_listener_t *u;
    uv_udp_t up; /* connected to host */
    sharp_deadline_t idle;
    struct sockaddr_storage peer;
    /* a reference; the session holds no view (a snapshot and its pools
     * would live as long as its traffic): the worker's current view gives
     * the cluster's balancer at each datagram */
    sharp_cluster_t *cluster;
    /* pinned (its npools counts the session): a host that left the
     * cluster's set is not freed while a session still points at it */
    sharp_host_t *host;
    /* cluster.<name>.udp.* (cluster_udp_counter) */
    sharp_stat_id_t sess_rx_datagrams, sess_rx_errors, sess_tx_datagrams, sess_tx_errors, sess_rx_dropped;
} sharp_udp_session_t;

static sharp_stats_shard_t *shard(const sharp_udp_listener_t *u)
{
    return u->w->stats;
}

static void free_session(uv_handle_t *h)
{
    free(sharp_container_of((uv_udp_t *)h, sharp_udp_session_t, up));
}

/* Ends a session: out of the table, its breaker slot, host and cluster
 * let go, its socket closed. */
static void session_end(sharp_udp_session_t *s)
{
    sharp_udp_listener_t *u = s->u;
    sharp_debug(filter, "udp proxy: session ends: upstream=%s", s->host->address);
    sharp_udp_table_remove(&u->table, &s->entry);
    sharp_dlist_remove(&s->link);
    sharp_deadline_stop(&s->idle);
    sharp_gauge_add(shard(u), u->cfg->st.active, -1);
    atomic_fetch_sub_explicit(&s->cluster->open[SHARP_PRIORITY_DEFAULT].cx_open, 1, memory_order_relaxed);
    /* the session's last use of the host was above: the release orders it
     * before sharp_cluster_collect_departed's acquire */
    atomic_fetch_sub_explicit(&s->host->npools, 1, memory_order_release);
    sharp_cluster_unref(s->cluster);
    uv_udp_recv_stop(&s->up);
    uv_close((uv_handle_t *)&s->up, free_session);
}

static void on_idle(sharp_deadline_t *d)
{
    sharp_udp_session_t *s = sharp_container_of(d, sharp_udp_session_t, idle);
    sharp_debug(filter, "udp proxy: session idle timeout: upstream=%s", s->host->address);
    sharp_counter_inc(shard(s->u), s->u->cfg->st.idle_timeout);
    session_end(s);
}

static void touch(sharp_udp_session_t *s)
{
    sharp_deadline_start(s->u->w, &s->idle, on_idle, s->u->cfg->idle_timeout_ms);
}

/* The one receive buffer, offered as large as the handle's datagrams may
 * be: a longer one comes truncated (UV_UDP_PARTIAL) and is dropped. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    sharp_udp_listener_t *u = h->data;
    size_t n = (uv_udp_t *)h == u->h ? u->cfg->downstream_max_rx : u->cfg->upstream_max_rx;
    *buf = uv_buf_init(u->buf, (unsigned)n);
}

/* A datagram from the session's host: to the peer, from the listener's
 * socket (Envoy's writeDownstream). */
static void on_upstream(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr, unsigned flags)
{
    sharp_udp_session_t *s = sharp_container_of(h, sharp_udp_session_t, up);
    sharp_udp_listener_t *u = s->u;
    sharp_stats_shard_t *sh = shard(u);
    if (nread == 0 && !addr) return; /* nothing more to read */
    touch(s); /* Envoy re-arms at every read event, an error's too */
    if (nread < 0) {
        /* a connected socket reports the host's ICMP errors (port
         * unreachable: ECONNREFUSED) on its next read */
        sharp_debug(filter, "udp proxy: upstream %s: %s", s->host->address, uv_strerror((int)nread));
        if (nread != UV_EAGAIN) sharp_counter_inc(sh, s->sess_rx_errors);
        return;
    }
    if (flags & UV_UDP_PARTIAL) {
        sharp_counter_inc(sh, s->sess_rx_dropped);
        return;
    }
    sharp_counter_inc(sh, s->sess_rx_datagrams);
    sharp_counter_add(sh, s->cluster->st.cx_rx_bytes_total, (uint64_t)nread);
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
    int rc = uv_udp_try_send(u->h, &b, 1, (const struct sockaddr *)&s->peer);
    if (rc < 0) {
        sharp_debug(filter, "udp proxy: downstream write: %s", uv_strerror(rc));
        sharp_counter_inc(sh, u->cfg->st.tx_errors);
        return;
    }
    sharp_counter_add(sh, u->cfg->st.tx_bytes, (uint64_t)nread);
    sharp_counter_inc(sh, u->cfg->st.tx_datagrams);
}

static sharp_host_t *choose_host(sharp_cluster_local_t *cl)
{
    if (cl->cluster->odst) return NULL; /* no original destination for a datagram */
    return sharp_cluster_choose(cl, false, NULL, 0);
}

enum { UDP_RX_DATAGRAMS, UDP_RX_ERRORS, UDP_TX_DATAGRAMS, UDP_TX_ERRORS, UDP_RX_DROPPED, UDP_NSTATS };

/* cluster.<name>.udp.<which>: registered once per cluster (a registration
 * formats the name and takes the stats lock), not per session. The slot
 * holds id + 1, as the cluster's upstream_rq_<code>. */
static sharp_stat_id_t cluster_udp_counter(sharp_cluster_t *c, int which)
{
    static const char *const names[UDP_NSTATS] = {"sess_rx_datagrams", "sess_rx_errors", "sess_tx_datagrams",
                                                  "sess_tx_errors", "sess_rx_datagrams_dropped"};
    _Static_assert(UDP_NSTATS == sizeof ((sharp_cluster_t *)0)->udp_st / sizeof ((sharp_cluster_t *)0)->udp_st[0],
                   "a slot per counter");
    sharp_stat_id_t id1 = atomic_load_explicit(&c->udp_st[which], memory_order_acquire);
    if (!id1) {
        id1 = sharp_stats_counterf(c->stats, "cluster.%s.udp.%s", c->stat_name, names[which]) + 1;
        atomic_store_explicit(&c->udp_st[which], id1, memory_order_release);
    }
    return id1 - 1;
}

/* A new session of the peer to host (chosen when not given), counted in the
 * cluster's max_connections breaker; NULL when the breaker is full or no
 * host is healthy. */
static sharp_udp_session_t *session_new(sharp_udp_listener_t *u, const sharp_udp_key_t *key, uint64_t hash,
                                        const struct sockaddr *peer, sharp_cluster_t *cluster,
                                        sharp_cluster_local_t *cl, sharp_host_t *host)
{
    sharp_stats_shard_t *sh = shard(u);
    if (!sharp_cluster_slot_acquire(&cluster->open[SHARP_PRIORITY_DEFAULT].cx_open,
                                    sharp_cluster_cb_max(cluster, SHARP_PRIORITY_DEFAULT, SHARP_CB_MAX_CONNECTIONS))) {
        sharp_debug(filter, "udp proxy: cluster '%s': max_connections reached, no new session", cluster->name);
        sharp_counter_inc(sh, cluster->st.cx_overflow);
        return NULL;
    }
    if (!host) host = choose_host(cl);
    if (!host) {
        sharp_debug(filter, "udp proxy: no healthy host in cluster '%s'", cluster->name);
        sharp_counter_inc(sh, cluster->st.cx_none_healthy);
        atomic_fetch_sub_explicit(&cluster->open[SHARP_PRIORITY_DEFAULT].cx_open, 1, memory_order_relaxed);
        return NULL;
    }
    sharp_udp_session_t *s = sharp_calloc(1, sizeof *s);
    s->u = u;
    s->sess_tx_errors = cluster_udp_counter(cluster, UDP_TX_ERRORS);
    int rc = uv_udp_init_ex(&u->w->loop, &s->up, host->addr.ss_family);
    if (rc < 0) {
        /* the socket call fails only for want of memory or descriptors,
         * or for a host no UDP socket can reach (a pipe) */
        sharp_debug(filter, "udp proxy: upstream socket for %s: %s", host->address, uv_strerror(rc));
        sharp_counter_inc(sh, s->sess_tx_errors);
        atomic_fetch_sub_explicit(&cluster->open[SHARP_PRIORITY_DEFAULT].cx_open, 1, memory_order_relaxed);
        free(s);
        return NULL;
    }
    s->up.data = u;
    s->entry.key = *key;
    s->entry.hash = hash;
    memcpy(&s->peer, peer, peer->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    s->cluster = sharp_cluster_ref(cluster);
    s->host = host;
    atomic_fetch_add_explicit(&host->npools, 1, memory_order_relaxed);
    s->sess_rx_datagrams = cluster_udp_counter(cluster, UDP_RX_DATAGRAMS);
    s->sess_rx_errors = cluster_udp_counter(cluster, UDP_RX_ERRORS);
    s->sess_tx_datagrams = cluster_udp_counter(cluster, UDP_TX_DATAGRAMS);
    s->sess_rx_dropped = cluster_udp_counter(cluster, UDP_RX_DROPPED);
    sharp_udp_table_insert(&u->table, &s->entry);
    sharp_dlist_push(&u->sessions, &s->link);
    sharp_counter_inc(sh, u->cfg->st.total);
    sharp_gauge_add(sh, u->cfg->st.active, 1);
    /* Envoy connects at the first write: a connect error then counts as a
     * send error, and the session stays */
    rc = uv_udp_connect(&s->up, (const struct sockaddr *)&host->addr);
    if (rc == 0) rc = uv_udp_recv_start(&s->up, on_alloc, on_upstream);
    if (rc < 0) sharp_debug(filter, "udp proxy: upstream socket to %s: %s", host->address, uv_strerror(rc));
    char pb[SHARP_ADDR_STRLEN];
    sharp_debug(filter, "udp proxy: new session: downstream=%s upstream=%s",
                sharp_addr_str(peer, pb, sizeof pb), host->address);
    return s;
}

/* Envoy's ActiveSession::onData and writeUpstream. */
static void session_data(sharp_udp_session_t *s, const char *p, size_t n)
{
    sharp_udp_listener_t *u = s->u;
    sharp_stats_shard_t *sh = shard(u);
    sharp_counter_add(sh, u->cfg->st.rx_bytes, n);
    sharp_counter_inc(sh, u->cfg->st.rx_datagrams);
    touch(s);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = uv_udp_try_send(&s->up, &b, 1, NULL);
    if (rc < 0) {
        sharp_debug(filter, "udp proxy: upstream write to %s: %s", s->host->address, uv_strerror(rc));
        sharp_counter_inc(sh, s->sess_tx_errors);
        return;
    }
    sharp_counter_inc(sh, s->sess_tx_datagrams);
    sharp_counter_add(sh, s->cluster->st.cx_tx_bytes_total, n);
}

/* The cluster of the datagram's route, NULL when it has none. */
static const char *route(const sharp_udp_listener_t *u, const struct sockaddr *peer)
{
    const sharp_udp_proxy_config_t *cfg = u->cfg;
    if (!cfg->matcher) return cfg->route.cluster;
    /* a datagram has no server name or protocols: only the addresses */
    sharp_fc_conn_t conn = {.local = (const struct sockaddr *)&u->l->addr, .remote = peer, .direct_remote = peer};
    sharp_match_data_t d = {.conn = &conn};
    const void *action = NULL;
    if (sharp_matcher_evaluate(cfg->matcher, &d, &action) != SHARP_MATCH_ACTION) return NULL;
    return ((const sharp_udp_route_t *)action)->cluster;
}

static bool host_listed(const sharp_cluster_local_t *cl, const sharp_host_t *h)
{
    return sharp_cluster_local_pos(cl, h) < cl->set->nhosts;
}

/* Envoy's UdpProxyFilter::onData. */
static void on_datagram(sharp_udp_listener_t *u, const struct sockaddr *peer, const char *p, size_t n)
{
    sharp_stats_shard_t *sh = shard(u);
    const sharp_udp_proxy_config_t *cfg = u->cfg;
    sharp_udp_key_t key;
    if (sharp_udp_key_make(&key, peer, NULL) < 0) return;
    const char *name = route(u, peer);
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *cluster = name && u->w->view ? sharp_view_cluster(u->w->view, name, &cl) : NULL;
    if (cluster && cluster->aggregate) {
        /* refused at load; one from CDS fails visibly (udp_proxy.h) */
        if (!u->aggregate_logged)
            sharp_log_error("udp proxy %s: cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which "
                            "is not supported by SHARP's UDP proxy: its datagrams are dropped (counted in "
                            "udp.%s.downstream_sess_no_route)",
                            u->l->name, name, cfg->stat_prefix);
        u->aggregate_logged = true;
        cluster = NULL;
    }
    if (!cluster || !cl) {
        sharp_debug(filter, "udp proxy: no route%s%s", name ? ": no cluster " : "", name ? name : "");
        sharp_counter_inc(sh, cfg->st.no_route);
        /* the peer's session to a cluster CDS removed ends, as Envoy's
         * cluster removal ends its sessions (per-packet sessions, keyed by
         * their host too, end when idle) */
        if (!cfg->per_packet_lb) {
            sharp_udp_entry_t *e = sharp_udp_table_find(&u->table, &key, sharp_udp_key_hash(&u->table, &key));
            if (e) session_end(sharp_container_of(e, sharp_udp_session_t, entry));
        }
        return;
    }
    sharp_udp_session_t *s;
    if (cfg->per_packet_lb) {
        sharp_host_t *h = choose_host(cl);
        if (!h) {
            sharp_counter_inc(sh, cluster->st.cx_none_healthy);
            return;
        }
        key.host = h;
        uint64_t hash = sharp_udp_key_hash(&u->table, &key);
        sharp_udp_entry_t *e = sharp_udp_table_find(&u->table, &key, hash);
        s = e ? sharp_container_of(e, sharp_udp_session_t, entry) : NULL;
        if (s && s->cluster != cluster) {
            session_end(s);
            s = NULL;
        }
        if (!s) s = session_new(u, &key, hash, peer, cluster, cl, h);
        if (s) session_data(s, p, n);
        return;
    }
    uint64_t hash = sharp_udp_key_hash(&u->table, &key);
    sharp_udp_entry_t *e = sharp_udp_table_find(&u->table, &key, hash);
    s = e ? sharp_container_of(e, sharp_udp_session_t, entry) : NULL;
    if (s && s->cluster != cluster) {
        /* the cluster was replaced or the route changed: Envoy's cluster
         * update drops the sessions of the old one */
        session_end(s);
        s = NULL;
    }
    if (s && !host_listed(cl, s->host)) {
        /* the host left the cluster (EDS, DNS): Envoy ends its sessions;
         * the datagram opens one to a host of the set */
        sharp_debug(filter, "udp proxy: upstream %s removed, new session", s->host->address);
        session_end(s);
        s = session_new(u, &key, hash, peer, cluster, cl, NULL);
    } else if (s && !sharp_host_healthy(s->host)) {
        /* a new session to a healthy host, when there is another one */
        sharp_host_t *h = choose_host(cl);
        if (h && h != s->host && sharp_host_healthy(h)) {
            sharp_debug(filter, "udp proxy: upstream %s unhealthy, new session", s->host->address);
            session_end(s);
            s = session_new(u, &key, hash, peer, cluster, cl, h);
        }
    } else if (!s) {
        s = session_new(u, &key, hash, peer, cluster, cl, NULL);
    }
    if (s) session_data(s, p, n);
}

static void on_downstream(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                          unsigned flags)
{
    sharp_udp_listener_t *u = h->data;
    if (nread == 0 && !addr) return;
    if (nread < 0) {
        sharp_debug(filter, "udp proxy: read on %s: %s", u->l->address, uv_strerror((int)nread));
        if (nread != UV_EAGAIN) sharp_counter_inc(shard(u), u->cfg->st.rx_errors);
        return;
    }
    if (flags & UV_UDP_PARTIAL) {
        sharp_counter_inc(shard(u), u->cfg->rx_datagram_dropped);
        return;
    }
    if (!addr) return;
    on_datagram(u, addr, buf->base, (size_t)nread);
}

static void end_all(sharp_udp_listener_t *u)
{
    while (!sharp_dlist_empty(&u->sessions))
        session_end(sharp_container_of(u->sessions.next, sharp_udp_session_t, link));
}

static void set_listener(sharp_udp_listener_t *u, const sharp_listener_config_t *l)
{
    u->l = l;
    u->cfg = l->udp;
    u->aggregate_logged = false;
    size_t n = l->udp->downstream_max_rx > l->udp->upstream_max_rx ? l->udp->downstream_max_rx
                                                                   : l->udp->upstream_max_rx;
    if (n > u->buflen) {
        free(u->buf);
        u->buf = sharp_calloc(1, n);
        u->buflen = n;
    }
}

sharp_udp_listener_t *sharp_udp_listener_open(sharp_worker_t *w, const sharp_listener_config_t *l, uv_udp_t *h)
{
    sharp_udp_listener_t *u = sharp_calloc(1, sizeof *u);
    u->w = w;
    u->h = h;
    sharp_dlist_init(&u->sessions);
    sharp_udp_table_init(&u->table, sharp_worker_random(w));
    set_listener(u, l);
    h->data = u;
    int rc = uv_udp_recv_start(h, on_alloc, on_downstream);
    if (rc < 0) {
        sharp_log_error("worker %u: cannot read the UDP socket of %s: %s", w->index, l->address, uv_strerror(rc));
        free(u->buf);
        free(u);
        return NULL;
    }
    u->reading = true;
    return u;
}

void sharp_udp_listener_update(sharp_udp_listener_t *u, const sharp_listener_config_t *l)
{
    if (u->l == l) return;
    end_all(u);
    set_listener(u, l);
}

void sharp_udp_listener_close(sharp_udp_listener_t *u)
{
    if (!u) return;
    if (u->reading) uv_udp_recv_stop(u->h);
    end_all(u);
    sharp_udp_table_free(&u->table);
    free(u->buf);
    free(u);
}

void sharp_udp_proxy_config_free(sharp_udp_proxy_config_t *c)
{
    if (!c) return;
    free(c->stat_prefix);
    free(c->route.cluster);
    free(c->route.path);
    free(c->routes);
    if (c->matcher) sharp_matcher_free(c->matcher);
    free(c);
}
