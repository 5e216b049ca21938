/* lds.c: see lds.h. */
#include "xds/lds.h"

#include "config/bootstrap.h"
#include "listen_socket.h"
#include "log.h"
#include "server.h"
#include "tls/sds.h"
#include "xds/xds.h"

#include "envoy/config/listener/v3/listener.pb-c.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

typedef Envoy__Config__Listener__V3__Listener listener_pb_t;
typedef Envoy__Config__Listener__V3__FilterChain chain_pb_t;

/* A listener version from LDS. */
typedef struct dyn {
    sharp_listener_config_t *l; /* a reference */
    ProtobufCMessage *pb;       /* the resource (owned), for /config_dump and the next comparison */
    uint8_t *packed;            /* to tell an unchanged resource */
    size_t len;
    char *version;
    uint64_t updated_us;
} dyn_t;

/* A version that left: the whole listener (removed, or replaced by a full
 * update) or, after an in-place update, the chains the new version does
 * not have. Its connections drain for --drain-time-s, then close. */
typedef struct group {
    sharp_lds_t *m;
    uv_timer_t timer;
    bool full;
    dyn_t d; /* the version draining: its listener holds the chains */
    sharp_filter_chain_config_t **chains;
    uint32_t nchains;
    struct group *next;
} group_t;

/* A listener the last update could not apply (Envoy's UpdateFailureState). */
typedef struct failure {
    char *name;   /* NULL: not tied to a listener */
    bool named;   /* also under the listener's name (Envoy's lds_error_state_tracker_) */
    char *details;
    ProtobufCMessage *pb;
    uint64_t when_us;
} failure_t;

struct sharp_lds {
    sharp_server_t *srv;
    char *source;
    dyn_t **active;
    uint32_t nactive;
    sharp_listener_config_t **cur; /* active[i]->l, for the snapshots */
    /* versions not serving yet (Envoy's warming listeners): added or
     * replacing the active version of their name once the route
     * configurations of their connection managers have had their initial
     * fetch; in no snapshot, their new sockets bound but not listening */
    dyn_t **warming;
    uint32_t nwarming;
    bool updating; /* inside sharp_lds_update: warm listeners are activated at its end */
    group_t *groups;
    failure_t *failures;
    uint32_t nfailures;
    /* the sockets of the active listeners (a reference each); one left
     * without a listener during an update is released at its end, unless
     * a listener of the same update took it over */
    sharp_lsock_t **socks;
    uint32_t nsocks;
    char *version;
    bool stopped;
    struct {
        sharp_stat_id_t listener_added, listener_modified, listener_removed, listener_in_place_updated,
            listener_create_failure, total_listeners_active, total_listeners_warming, total_listeners_draining,
            total_filter_chains_draining;
    } st;
};

static _Atomic uint32_t drain_epoch;

uint32_t sharp_lds_drain_epoch(void)
{
    return atomic_load_explicit(&drain_epoch, memory_order_acquire);
}

static void bump_epoch(void)
{
    atomic_fetch_add_explicit(&drain_epoch, 1, memory_order_release);
}

sharp_lds_t *sharp_lds_new(sharp_server_t *srv, const char *source)
{
    sharp_lds_t *m = sharp_calloc(1, sizeof *m);
    m->srv = srv;
    m->source = sharp_strdup(source);
    m->version = sharp_strdup("");
    sharp_stats_t *s = srv->stats;
#define C(f) m->st.f = sharp_stats_counter(s, "listener_manager." #f)
#define G(f) m->st.f = sharp_stats_gauge(s, "listener_manager." #f)
    C(listener_added);
    C(listener_modified);
    C(listener_removed);
    C(listener_in_place_updated);
    C(listener_create_failure);
    G(total_listeners_active);
    G(total_listeners_warming);
    G(total_listeners_draining);
    G(total_filter_chains_draining);
#undef C
#undef G
    return m;
}

static void dyn_clear(dyn_t *d)
{
    sharp_listener_unref(d->l);
    if (d->pb) protobuf_c_message_free_unpacked(d->pb, NULL);
    free(d->packed);
    free(d->version);
    memset(d, 0, sizeof *d);
}

static void failures_clear(sharp_lds_t *m)
{
    for (uint32_t i = 0; i < m->nfailures; i++) {
        free(m->failures[i].name);
        free(m->failures[i].details);
        if (m->failures[i].pb) protobuf_c_message_free_unpacked(m->failures[i].pb, NULL);
    }
    free(m->failures);
    m->failures = NULL;
    m->nfailures = 0;
}

static void group_free(group_t *g)
{
    dyn_clear(&g->d);
    free(g->chains);
    free(g);
}

static void on_group_closed(uv_handle_t *h)
{
    group_free(h->data);
}

static void group_unlink(group_t *g)
{
    for (group_t **p = &g->m->groups; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            return;
        }
}

static void update_gauges(sharp_lds_t *m)
{
    sharp_stats_t *s = m->srv->stats;
    int64_t draining = 0, chains = 0;
    for (group_t *g = m->groups; g; g = g->next) {
        if (g->full) draining++;
        else chains += g->nchains;
    }
    sharp_gauge_set(s, m->st.total_listeners_draining, draining);
    sharp_gauge_set(s, m->st.total_filter_chains_draining, chains);
    sharp_gauge_set(s, m->st.total_listeners_warming, m->nwarming);
    if (m->srv->workers_started && m->srv->snap) {
        const sharp_snapshot_t *base = m->srv->snap->base ? m->srv->snap->base : m->srv->snap;
        sharp_gauge_set(s, m->st.total_listeners_active, (int64_t)(base->nlisteners + m->nactive));
    }
}

void sharp_lds_stop(sharp_lds_t *m)
{
    if (!m) return;
    m->stopped = true;
    while (m->groups) {
        group_t *g = m->groups;
        m->groups = g->next;
        uv_timer_stop(&g->timer);
        uv_close((uv_handle_t *)&g->timer, on_group_closed);
    }
}

void sharp_lds_free(sharp_lds_t *m)
{
    if (!m) return;
    while (m->groups) { /* never timed: the workers never started */
        group_t *g = m->groups;
        m->groups = g->next;
        group_free(g);
    }
    for (uint32_t i = 0; i < m->nactive; i++) {
        dyn_clear(m->active[i]);
        free(m->active[i]);
    }
    free(m->active);
    free(m->cur);
    for (uint32_t i = 0; i < m->nwarming; i++) {
        dyn_clear(m->warming[i]);
        free(m->warming[i]);
    }
    free(m->warming);
    for (uint32_t i = 0; i < m->nsocks; i++) sharp_lsock_unref(m->socks[i]);
    free(m->socks);
    failures_clear(m);
    free(m->version);
    free(m->source);
    free(m);
}

size_t sharp_lds_listeners(const sharp_lds_t *m, sharp_listener_config_t ***out)
{
    *out = m ? m->cur : NULL;
    return m ? m->nactive : 0;
}

const char *sharp_lds_version(const sharp_lds_t *m)
{
    return m && m->version ? m->version : "";
}

/* ---- draining ---- */

/* --drain-time-s has passed: what is left of the group's connections is
 * closed (Envoy removes the listener, or the chains, from the workers). */
static void on_drain_time(uv_timer_t *t)
{
    group_t *g = t->data;
    sharp_lds_t *m = g->m;
    for (uint32_t i = 0; i < g->nchains; i++)
        atomic_store_explicit(&g->chains[i]->drain_state, SHARP_DRAIN_CLOSING, memory_order_release);
    if (g->full) atomic_store_explicit(&g->d.l->drain_state, SHARP_DRAIN_CLOSING, memory_order_release);
    sharp_info(main, "lds: %s of listener '%s' drained", g->full ? "version" : "filter chains", g->d.l->name);
    bump_epoch();
    sharp_server_wake_workers(m->srv);
    group_unlink(g);
    update_gauges(m);
    uv_close((uv_handle_t *)&g->timer, on_group_closed);
}

/* Drains the chains (all of the version's when `full`) of a version that
 * leaves; `d` is taken. Before the workers start there is no connection:
 * the version just goes. */
static void drain(sharp_lds_t *m, dyn_t *d, bool full, sharp_filter_chain_config_t **chains, uint32_t nchains)
{
    if (!m->srv->workers_started || m->stopped || !m->srv->loop || !nchains) {
        dyn_clear(d);
        free(chains);
        return;
    }
    group_t *g = sharp_calloc(1, sizeof *g);
    g->m = m;
    g->full = full;
    g->d = *d;
    memset(d, 0, sizeof *d);
    g->chains = chains;
    g->nchains = nchains;
    for (uint32_t i = 0; i < nchains; i++)
        atomic_store_explicit(&chains[i]->drain_state, SHARP_DRAIN_DRAINING, memory_order_release);
    if (full) atomic_store_explicit(&g->d.l->drain_state, SHARP_DRAIN_DRAINING, memory_order_release);
    /* the workers see it with the snapshot published at the end of the
     * update, which no longer lists the version */
    bump_epoch();
    uv_timer_init(m->srv->loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, on_drain_time, (uint64_t)m->srv->opts.drain_time_s * 1000, 0);
    g->next = m->groups;
    m->groups = g;
}

static void drain_whole(sharp_lds_t *m, dyn_t *d)
{
    sharp_listener_config_t *l = d->l;
    uint32_t n = l->nchains + l->has_default_chain;
    sharp_filter_chain_config_t **chains = sharp_calloc(n ? n : 1, sizeof *chains);
    for (uint32_t i = 0; i < n; i++) chains[i] = l->chains[i];
    drain(m, d, true, chains, n);
}

/* ---- sockets ---- */

static void sock_add(sharp_lds_t *m, sharp_lsock_t *s)
{
    for (uint32_t i = 0; i < m->nsocks; i++)
        if (m->socks[i] == s) return;
    m->socks = sharp_realloc(m->socks, (m->nsocks + 1) * sizeof *m->socks);
    m->socks[m->nsocks++] = sharp_lsock_ref(s);
}

/* Sockets no active listener uses at the end of an update: the
 * descriptors no worker took close now, the workers close theirs when they
 * take the snapshot without them. */
static void socks_release_unused(sharp_lds_t *m)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < m->nsocks; i++) {
        sharp_lsock_t *s = m->socks[i];
        if (s->users) {
            m->socks[k++] = s;
            continue;
        }
        sharp_debug(main, "lds: closing the listening sockets of %s", s->address);
        sharp_lsock_release(s);
        sharp_lsock_unref(s);
    }
    m->nsocks = k;
}

/* ---- the update ---- */

static bool packed_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t la = protobuf_c_message_get_packed_size(a), lb = protobuf_c_message_get_packed_size(b);
    if (la != lb) return false;
    uint8_t *pa = sharp_realloc(NULL, la ? la : 1), *pb = sharp_realloc(NULL, lb ? lb : 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    bool eq = memcmp(pa, pb, la) == 0;
    free(pa);
    free(pb);
    return eq;
}

/* Envoy's ListenerMessageUtil::filterChainOnlyChange: the listeners are
 * equal but for filter_chains, default_filter_chain and
 * filter_chain_matcher. */
static bool only_chains_differ(const listener_pb_t *a, const listener_pb_t *b)
{
    listener_pb_t x = *a, y = *b;
    x.n_filter_chains = y.n_filter_chains = 0;
    x.filter_chains = y.filter_chains = NULL;
    x.default_filter_chain = y.default_filter_chain = NULL;
    x.filter_chain_matcher = y.filter_chain_matcher = NULL;
    return packed_equal(&x.base, &y.base);
}

static const chain_pb_t *chain_pb(const listener_pb_t *pb, uint32_t i)
{
    return i < pb->n_filter_chains ? pb->filter_chains[i] : pb->default_filter_chain;
}

static dyn_t *find_in(dyn_t *const *v, uint32_t n, const char *name, uint32_t *at)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(v[i]->l->name, name)) {
            if (at) *at = i;
            return v[i];
        }
    return NULL;
}

static dyn_t *find_active(const sharp_lds_t *m, const char *name, uint32_t *at)
{
    return find_in(m->active, m->nactive, name, at);
}

static dyn_t *find_warming(const sharp_lds_t *m, const char *name, uint32_t *at)
{
    return find_in(m->warming, m->nwarming, name, at);
}

/* A warming version goes (replaced, removed, or its active version came
 * back): it never served, nothing drains. */
static void warming_drop(sharp_lds_t *m, uint32_t at)
{
    dyn_t *d = m->warming[at];
    if (d->l->sock) d->l->sock->users--;
    memmove(&m->warming[at], &m->warming[at + 1], (m->nwarming - at - 1) * sizeof *m->warming);
    m->nwarming--;
    dyn_clear(d);
    free(d);
}

/* Whether a connection manager of the listener takes its routes from RDS
 * and that route configuration has not had its initial fetch yet (Envoy's
 * listener init manager, with the RDS subscription's init target). */
static bool routes_pending(const sharp_lds_t *m, const sharp_listener_config_t *l)
{
    for (uint32_t i = 0; i < l->nchains + l->has_default_chain; i++) {
        const sharp_hcm_config_t *h = l->chains[i]->hcm;
        if (h && h->rds_index >= 0 && !sharp_xds_rds_fetched(m->srv->xds, h->rds_index)) return true;
    }
    return false;
}

/* Whether a filter chain's TLS context waits for a secret from an SDS
 * server that has not had its initial fetch (Envoy's SdsApi init target
 * in the listener's init manager). */
static bool secrets_pending(const sharp_lds_t *m, const sharp_listener_config_t *l)
{
    const sharp_sds_t *sds = m->srv->snap ? m->srv->snap->sds : NULL;
    for (uint32_t i = 0; sds && i < l->nchains + l->has_default_chain; i++)
        if (l->chains[i]->tls && sharp_sds_waiting(sds, l->chains[i]->tls)) return true;
    return false;
}

/* What the listener's init manager still waits for. */
static bool init_pending(const sharp_lds_t *m, const sharp_listener_config_t *l)
{
    return routes_pending(m, l) || secrets_pending(m, l);
}

static const sharp_snapshot_t *base_snapshot(const sharp_lds_t *m)
{
    const sharp_snapshot_t *s = m->srv->snap;
    return s && s->base ? s->base : s;
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static bool same_protocol(const sharp_listener_config_t *a, const sharp_listener_config_t *b)
{
    return (a->udp != NULL) == (b->udp != NULL);
}

/* Envoy's hasDuplicatedAddress: another listener (static, or from LDS
 * with another name) on the same address, port and protocol (port 0 aside; a
 * wildcard and a specific address may share a port, their sockets being
 * SO_REUSEPORT ones). */
static const sharp_listener_config_t *same_address(const sharp_lds_t *m, const sharp_listener_config_t *l)
{
    if (port_of(&l->addr) == 0 && l->addr.ss_family != AF_UNIX) return NULL;
    const sharp_snapshot_t *base = base_snapshot(m);
    for (uint32_t i = 0; base && i < base->nlisteners; i++)
        if (!strcmp(base->listeners[i]->address, l->address) && same_protocol(base->listeners[i], l))
            return base->listeners[i];
    for (uint32_t i = 0; i < m->nactive; i++) {
        const sharp_listener_config_t *o = m->active[i]->l;
        if (strcmp(o->name, l->name) != 0 && !strcmp(o->address, l->address) && same_protocol(o, l)) return o;
    }
    for (uint32_t i = 0; i < m->nwarming; i++) {
        const sharp_listener_config_t *o = m->warming[i]->l;
        if (strcmp(o->name, l->name) != 0 && !strcmp(o->address, l->address) && same_protocol(o, l)) return o;
    }
    return NULL;
}

static void record_failure(sharp_lds_t *m, const char *name, bool named, const char *details, ProtobufCMessage **pb,
                           char *msg, size_t msglen)
{
    m->failures = sharp_realloc(m->failures, (m->nfailures + 1) * sizeof *m->failures);
    failure_t *f = &m->failures[m->nfailures++];
    f->name = name ? sharp_strdup(name) : NULL;
    f->named = named;
    f->details = sharp_strdup(details);
    f->pb = *pb; /* taken: /config_dump shows it */
    *pb = NULL;
    f->when_us = sharp_wall_us();
    size_t used = strlen(msg);
    if (used < msglen) snprintf(msg + used, msglen - used, "%s: %s\n", name ? name : "", details);
    sharp_warn(main, "lds: listener '%s' rejected: %s", name ? name : "", details);
}

/* The listener's sockets: its active version's, or the warming version's
 * it replaces, when the address is the same, one a listener of this update
 * left on that address, else new ones (none with --mode validate). A
 * listener that warms first has them bound but not listening. */
static int take_socket(sharp_lds_t *m, sharp_listener_config_t *l, const dyn_t *old, const dyn_t *wold, bool listen,
                       char *err, size_t errlen)
{
    char why[512];
    sharp_lsock_t *s = NULL;
    bool udp = l->udp != NULL;
    if (old && old->l->sock &&
        sharp_lsock_compatible(old->l->sock, &l->addr, l->pipe_mode, l->sock_flags, udp))
        s = old->l->sock;
    else if (wold && wold->l->sock &&
             sharp_lsock_compatible(wold->l->sock, &l->addr, l->pipe_mode, l->sock_flags, udp))
        s = wold->l->sock;
    for (uint32_t i = 0; i < m->nsocks && !s; i++)
        if (!m->socks[i]->users &&
            sharp_lsock_compatible(m->socks[i], &l->addr, l->pipe_mode, l->sock_flags, udp))
            s = m->socks[i];
    if (s) {
        if (listen && sharp_lsock_listen(s, why, sizeof why) < 0) {
            sharp_counter_inc(sharp_stats_shard(m->srv->stats, 0), m->st.listener_create_failure);
            snprintf(err, errlen, "%s", why);
            return -1;
        }
        l->sock = sharp_lsock_ref(s);
        return 0;
    }
    if (m->srv->opts.validate_only) return 0;
    l->sock = listen ? sharp_lsock_open(&l->addr, l->addrlen, l->pipe_mode, l->sock_flags, udp,
                                        l->address, m->srv->nworkers, why, sizeof why)
                     : sharp_lsock_bind(&l->addr, l->addrlen, l->pipe_mode, l->sock_flags, udp,
                                        l->address, m->srv->nworkers, why, sizeof why);
    if (!l->sock) {
        /* Envoy: "listener '...' failed to bind or apply socket options" */
        sharp_counter_inc(sharp_stats_shard(m->srv->stats, 0), m->st.listener_create_failure);
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    sock_add(m, l->sock);
    return 0;
}

/* Puts version d (built, its socket counted as used) in service: it is
 * added, or replaces the active version of its name, in place when only
 * the filter chains changed and the workers run (chains equal to the old
 * ones are the old ones, with their connections; only the others drain),
 * else whole (the old version drains). False when its sockets cannot
 * listen (d is dropped). */
static bool activate(sharp_lds_t *m, dyn_t *d)
{
    sharp_listener_config_t *l = d->l;
    sharp_stats_shard_t *sh = sharp_stats_shard(m->srv->stats, 0);
    char why[512];
    if (l->sock && sharp_lsock_listen(l->sock, why, sizeof why) < 0) {
        sharp_counter_inc(sh, m->st.listener_create_failure);
        sharp_error(main, "lds: listener '%s' cannot serve: %s", l->name, why);
        l->sock->users--;
        dyn_clear(d);
        free(d);
        return false;
    }
    uint32_t at = 0;
    dyn_t *old = find_active(m, l->name, &at);
    const listener_pb_t *pb = (const listener_pb_t *)d->pb;
    bool in_place = old && m->srv->workers_started && pb->n_filter_chains > 0 &&
                    only_chains_differ((const listener_pb_t *)old->pb, pb);
    if (!old) {
        m->active = sharp_realloc(m->active, (m->nactive + 1) * sizeof *m->active);
        m->cur = sharp_realloc(m->cur, (m->nactive + 1) * sizeof *m->cur);
        m->active[m->nactive] = d;
        m->cur[m->nactive++] = l;
        sharp_info(main, "lds: add listener '%s' on %s", l->name, l->address);
        return true;
    }
    dyn_t prev = *old;
    sharp_filter_chain_config_t **gone = NULL;
    uint32_t ngone = 0;
    if (in_place) {
        const listener_pb_t *opb = (const listener_pb_t *)prev.pb;
        uint32_t on = prev.l->nchains + prev.l->has_default_chain, nn = l->nchains + l->has_default_chain;
        bool *kept = sharp_calloc(on ? on : 1, sizeof *kept);
        for (uint32_t j = 0; j < nn; j++)
            for (uint32_t k = 0; k < on; k++) {
                if (kept[k] || !packed_equal(&chain_pb(pb, j)->base, &chain_pb(opb, k)->base)) continue;
                kept[k] = true;
                sharp_filter_chain_unref(l->chains[j]);
                l->chains[j] = sharp_filter_chain_ref(prev.l->chains[k]);
                if (j < l->nchains) l->matches[j] = &l->chains[j]->match;
                break;
            }
        gone = sharp_calloc(on ? on : 1, sizeof *gone);
        for (uint32_t k = 0; k < on; k++)
            if (!kept[k]) gone[ngone++] = prev.l->chains[k];
        free(kept);
    }
    *old = *d; /* the slot stays the name's */
    free(d);
    if (prev.l->sock) prev.l->sock->users--;
    m->cur[at] = l;
    if (in_place) {
        sharp_counter_inc(sh, m->st.listener_in_place_updated);
        sharp_info(main, "lds: update listener '%s' in place: %u of its filter chains drain", l->name, ngone);
        drain(m, &prev, false, gone, ngone);
    } else {
        sharp_info(main, "lds: update listener '%s'", l->name);
        drain_whole(m, &prev);
    }
    return true;
}

/* Warming listeners whose route configurations have all had their initial
 * fetch are put in service. Whether any was. */
static bool activate_warm(sharp_lds_t *m)
{
    bool any = false;
    bool stopped = m->srv->listeners_stopped || m->srv->state == SHARP_SERVER_DRAINING;
    for (uint32_t i = 0; i < m->nwarming;) {
        dyn_t *d = m->warming[i];
        if (!stopped && init_pending(m, d->l)) {
            i++;
            continue;
        }
        if (stopped) { /* as Envoy's listenersStopped: no listener is added any more */
            sharp_info(main, "lds: warming listener '%s' dropped: the listeners are stopped", d->l->name);
            warming_drop(m, i);
            continue;
        }
        memmove(&m->warming[i], &m->warming[i + 1], (m->nwarming - i - 1) * sizeof *m->warming);
        m->nwarming--;
        sharp_info(main, "lds: listener '%s' warmed", d->l->name);
        any |= activate(m, d);
    }
    return any;
}

void sharp_lds_routes_ready(sharp_lds_t *m)
{
    /* an update checks at its end (its listeners subscribe while built) */
    if (!m || m->updating || m->stopped || !m->nwarming) return;
    if (!activate_warm(m)) {
        update_gauges(m);
        return;
    }
    socks_release_unused(m);
    update_gauges(m);
    if (m->srv->snap) sharp_xds_publish(m->srv->xds);
}

/* One listener of the update: skipped (unchanged), added, or replaced in
 * place or whole, at once or once it is warm (Envoy's ListenerManagerImpl:
 * while the workers run, a listener whose routes come from RDS warms until
 * its route configurations have had their initial fetch; the version it
 * replaces serves meanwhile). 0 when applied, 1 when unchanged, or -1 with
 * the reason (nothing changed). */
static int add_or_update(sharp_lds_t *m, ProtobufCMessage **res, size_t idx, const char *version, char *err,
                         size_t errlen)
{
    const listener_pb_t *pb = (const listener_pb_t *)*res;
    uint32_t wat = 0;
    dyn_t *old = find_active(m, pb->name, NULL);
    dyn_t *wold = find_warming(m, pb->name, &wat);
    sharp_stats_shard_t *sh = sharp_stats_shard(m->srv->stats, 0);
    size_t len = protobuf_c_message_get_packed_size(*res);
    uint8_t *packed = sharp_realloc(NULL, len ? len : 1);
    protobuf_c_message_pack(*res, packed);
    bool same_active = old && old->len == len && !memcmp(old->packed, packed, len);
    bool same_warm = wold && wold->len == len && !memcmp(wold->packed, packed, len);
    if (wold && same_active) {
        /* Envoy: the update takes the listener back to its active version,
         * and the warming one goes */
        free(packed);
        warming_drop(m, wat);
        sharp_counter_inc(sh, m->st.listener_modified);
        sharp_info(main, "lds: listener '%s' back to its active version: the warming version goes", pb->name);
        return 0;
    }
    if (same_warm || (!wold && same_active)) {
        free(packed);
        sharp_debug(main, "lds: add/update listener '%s' skipped: unchanged", pb->name);
        return 1;
    }
    char where[64];
    snprintf(where, sizeof where, "resources[%zu]", idx);
    sharp_listener_config_t *l = sharp_config_build_listener(m->srv, *res, m->source, where, err, errlen);
    if (!l) {
        free(packed);
        return -1;
    }
    const sharp_listener_config_t *dup = same_address(m, l);
    if (dup) {
        snprintf(err, errlen, "error adding listener: '%s' has duplicate address '%s' as existing listener '%s'",
                 l->name, l->address, dup->name);
        free(packed);
        sharp_listener_unref(l);
        return -1;
    }
    /* its route configurations were subscribed while it was built: one that
     * has not come yet makes it warm (only while the workers run: before,
     * the start itself waits for them) */
    bool warm = m->srv->workers_started && init_pending(m, l);
    if (take_socket(m, l, old, wold, !warm, err, errlen) < 0) {
        free(packed);
        sharp_listener_unref(l);
        return -1;
    }
    /* committed: nothing fails from here */
    dyn_t *d = sharp_calloc(1, sizeof *d);
    d->l = l;
    d->pb = *res;
    *res = NULL;
    d->packed = packed;
    d->len = len;
    d->version = sharp_strdup(version);
    d->updated_us = sharp_wall_us();
    if (l->sock) {
        l->sock->users++;
        sock_add(m, l->sock);
    }
    if (wold) warming_drop(m, wat); /* replaced before it warmed */
    sharp_counter_inc(sh, old || wold ? m->st.listener_modified : m->st.listener_added);
    if (warm) {
        m->warming = sharp_realloc(m->warming, (m->nwarming + 1) * sizeof *m->warming);
        m->warming[m->nwarming++] = d;
        bool routes = routes_pending(m, l), secrets = secrets_pending(m, l);
        sharp_info(main, "lds: listener '%s' on %s warming: waiting for its %s%s", l->name, l->address,
                   routes && secrets ? "route configuration(s) and secret(s)"
                   : routes          ? "route configuration(s)"
                                     : "secret(s)",
                   old ? "; the active version serves meanwhile" : "");
        return 0;
    }
    activate(m, d);
    return 0;
}

/* Envoy's removeListener: the warming version goes, the active one drains. */
static void remove_listener(sharp_lds_t *m, const char *name)
{
    uint32_t at = 0;
    bool found = false;
    if (find_warming(m, name, &at)) {
        sharp_info(main, "lds: remove warming listener '%s'", name);
        warming_drop(m, at);
        found = true;
    }
    dyn_t *d = find_active(m, name, &at);
    if (d) {
        sharp_info(main, "lds: remove listener '%s'", d->l->name);
        if (d->l->sock) d->l->sock->users--;
        memmove(&m->active[at], &m->active[at + 1], (m->nactive - at - 1) * sizeof *m->active);
        memmove(&m->cur[at], &m->cur[at + 1], (m->nactive - at - 1) * sizeof *m->cur);
        m->nactive--;
        drain_whole(m, d);
        free(d);
        found = true;
    }
    if (found) sharp_counter_inc(sharp_stats_shard(m->srv->stats, 0), m->st.listener_removed);
}

int sharp_lds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused, char *err,
                     size_t errlen)
{
    sharp_lds_t *m = ud;
    sharp_server_t *srv = m->srv;
    char msg[4096] = "";
    bool applied = false;
    failures_clear(m); /* Envoy's beginListenerUpdate */
    /* the names, read before the resources are taken */
    const char **names = sharp_calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = ((const listener_pb_t *)res[i])->name;
    sharp_xds_hold(srv->xds);
    m->updating = true;
    /* removals first: a listener of this update may take over a removed
     * one's address and sockets (Envoy's LdsApiImpl order); a name warming
     * or active that the update does not have */
    for (;;) {
        const char *gone = NULL;
        for (uint32_t i = 0; i < m->nactive + m->nwarming && !gone; i++) {
            const char *have = i < m->nactive ? m->active[i]->l->name : m->warming[i - m->nactive]->l->name;
            bool named = false;
            for (size_t k = 0; k < n && !named; k++) named = !strcmp(names[k], have);
            if (!named) gone = have;
        }
        if (!gone) break;
        char *name = sharp_strdup(gone); /* the listener's memory goes with it */
        remove_listener(m, name);
        free(name);
        applied = true;
    }
    /* listeners are not added while the listeners are stopped
     * (/drain_listeners, a drain before shutdown), as Envoy's
     * listenersStopped */
    bool stopped = srv->listeners_stopped || srv->state == SHARP_SERVER_DRAINING;
    for (size_t i = 0; i < n; i++) {
        const listener_pb_t *pb = (const listener_pb_t *)res[i];
        char why[2048];
        bool twice = false;
        for (size_t k = 0; k < i && !twice; k++) twice = !strcmp(names[k], pb->name);
        if (!pb->name[0]) {
            /* Envoy names it with a UUID, which the next update (naming it
             * nothing) would remove: refused, LDS listeners need names */
            record_failure(m, NULL, false, "a listener from LDS needs a name (Envoy would give it a random one, "
                           "replaced at every update)", &res[i], msg, sizeof msg);
            if (refused) refused[i] = true;
            continue;
        }
        if (twice) {
            snprintf(why, sizeof why, "duplicate listener %s found", pb->name);
            record_failure(m, pb->name, false, why, &res[i], msg, sizeof msg);
            if (refused) refused[i] = true;
            continue;
        }
        const sharp_snapshot_t *base = base_snapshot(m);
        bool is_static = false;
        for (uint32_t k = 0; base && k < base->nlisteners && !is_static; k++)
            is_static = !strcmp(base->listeners[k]->name, pb->name);
        if (is_static) {
            /* Envoy skips the update of a static listener silently;
             * SHARP refuses rather than ignore a listener */
            snprintf(why, sizeof why, "listener '%s' is a static listener (static_resources.listeners), which LDS "
                     "cannot update", pb->name);
            record_failure(m, pb->name, true, why, &res[i], msg, sizeof msg);
            if (refused) refused[i] = true;
            continue;
        }
        if (stopped) {
            sharp_debug(main, "lds: listener '%s' not added: the listeners are stopped", pb->name);
            continue;
        }
        int rc = add_or_update(m, &res[i], i, version, why, sizeof why);
        if (rc < 0) {
            record_failure(m, pb->name, true, why, &res[i], msg, sizeof msg);
            if (refused) refused[i] = true;
        } else if (rc == 0) {
            applied = true;
        }
    }
    free(names);
    m->updating = false;
    /* route configurations that came while the listeners were built (a
     * stream already had them) */
    bool activated = activate_warm(m);
    socks_release_unused(m);
    if (applied) {
        /* Envoy's LdsApiImpl: the version of an update that applied
         * something, even if it refused some listeners */
        free(m->version);
        m->version = sharp_strdup(version);
    }
    if ((applied || activated) && srv->snap) sharp_xds_publish(srv->xds);
    sharp_xds_release(srv->xds);
    update_gauges(m);
    unsigned draining = 0;
    for (const group_t *g = m->groups; g; g = g->next) draining += g->full;
    sharp_info(main, "LDS version '%s': %u listeners from LDS, %u warming, %u draining, %u rejected", version,
               m->nactive, m->nwarming, draining, m->nfailures);
    if (m->nfailures) {
        size_t len = strlen(msg);
        if (len && msg[len - 1] == '\n') msg[len - 1] = '\0';
        snprintf(err, errlen, "Error adding/updating listener(s) %s", msg);
        return -1;
    }
    return 0;
}

void sharp_lds_refused(sharp_lds_t *m, const char *name, const char *why, ProtobufCMessage **pb)
{
    char msg[1] = "";
    ProtobufCMessage *none = NULL;
    record_failure(m, name, true, why, pb ? pb : &none, msg, 0);
}

size_t sharp_lds_dump(const sharp_lds_t *m, sharp_lds_dump_t **out)
{
    *out = NULL;
    if (!m) return 0;
    size_t cap = m->nactive + m->nwarming + m->nfailures * 2 + 1;
    for (group_t *g = m->groups; g; g = g->next) cap++;
    sharp_lds_dump_t *d = sharp_calloc(cap, sizeof *d);
    size_t n = 0;
    /* one entry per name (Envoy's getOrCreateDynamicListener) */
#define ENTRY(nm)                                                                                                      \
    ({                                                                                                                 \
        sharp_lds_dump_t *e_ = NULL;                                                                                   \
        for (size_t i_ = 0; i_ < n && !e_; i_++)                                                                       \
            if (d[i_].name && !strcmp(d[i_].name, (nm))) e_ = &d[i_];                                                  \
        if (!e_) {                                                                                                     \
            e_ = &d[n++];                                                                                              \
            e_->name = (nm);                                                                                           \
        }                                                                                                              \
        e_;                                                                                                            \
    })
    for (uint32_t i = 0; i < m->nactive; i++) {
        const dyn_t *a = m->active[i];
        sharp_lds_dump_t *e = ENTRY(a->l->name);
        e->active = (sharp_lds_state_t){a->version, a->pb, a->updated_us};
    }
    for (uint32_t i = 0; i < m->nwarming; i++) {
        const dyn_t *w = m->warming[i];
        sharp_lds_dump_t *e = ENTRY(w->l->name);
        e->warming = (sharp_lds_state_t){w->version, w->pb, w->updated_us};
    }
    for (const group_t *g = m->groups; g; g = g->next) {
        if (!g->full) continue; /* chains drain, the listener is active */
        sharp_lds_dump_t *e = ENTRY(g->d.l->name);
        if (!e->draining.listener || e->draining.last_updated_us < g->d.updated_us)
            e->draining = (sharp_lds_state_t){g->d.version, g->d.pb, g->d.updated_us};
    }
    for (uint32_t i = 0; i < m->nfailures; i++) {
        const failure_t *f = &m->failures[i];
        if (!f->named || !f->name) continue;
        sharp_lds_dump_t *e = ENTRY(f->name);
        e->failed = f->pb;
        e->details = f->details;
        e->failed_us = f->when_us;
    }
#undef ENTRY
    /* Envoy's overall error state: every failure of the update, unnamed */
    for (uint32_t i = 0; i < m->nfailures; i++) {
        const failure_t *f = &m->failures[i];
        d[n++] = (sharp_lds_dump_t){.failed = f->pb, .details = f->details, .failed_us = f->when_us};
    }
    *out = d;
    return n;
}
