/* dns.c: resolution of STRICT_DNS / LOGICAL_DNS clusters with c-ares on the
 * main thread's loop (see dns.h). */
#include "upstream/dns.h"
#include "upstream/locality_md.h"
#include "grpc/backoff.h"
#include "log.h"
#include "net.h"
#include "upstream/cluster.h"
#include "upstream/subset.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

/* One uv_poll per socket c-ares has open. */
typedef struct dns_poll {
    struct dns_poll *next;
    sharp_dns_cluster_t *dc;
    ares_socket_t fd;
    uv_poll_t poll;
} dns_poll_t;

void sharp_dns_add_target(sharp_dns_cluster_t *dc, const char *name, uint16_t port, const char *hostname,
                          uint32_t weight, uint32_t priority, uint32_t locality, uint32_t health_flags)
{
    dc->targets = sharp_realloc(dc->targets, (dc->ntargets + 1) * sizeof *dc->targets);
    sharp_dns_target_t *t = &dc->targets[dc->ntargets++];
    memset(t, 0, sizeof *t);
    t->dc = dc;
    t->name = sharp_strdup(name);
    t->port = port;
    snprintf(t->hostname, sizeof t->hostname, "%s", hostname && hostname[0] ? hostname : name);
    t->weight = weight;
    t->priority = priority;
    t->locality = locality;
    t->health_flags = health_flags;
}

void sharp_dns_cluster_free(sharp_dns_cluster_t *dc)
{
    if (!dc) return;
    for (uint32_t i = 0; i < dc->ntargets; i++) {
        free(dc->targets[i].name);
        free(dc->targets[i].hosts);
        free(dc->targets[i].backoff);
        free(dc->targets[i].addrs);
        free(dc->targets[i].lb_meta);
        sharp_locality_md_put(dc->targets[i].locality_md);
    }
    free(dc->targets);
    free(dc->resolvers);
    free(dc);
}

/* ---- algorithms ---- */

static sharp_host_t *find_addr(sharp_host_t *const *hosts, uint32_t n, const struct sockaddr_storage *a)
{
    for (uint32_t i = 0; i < n; i++)
        if (sharp_addr_equal(&hosts[i]->addr, a)) return hosts[i];
    return NULL;
}

uint32_t sharp_dns_merge_hosts(const sharp_dns_target_t *t, sharp_host_t *const *old, uint32_t nold,
                               sharp_host_t *const *spare, uint32_t nspare,
                               const struct sockaddr_storage *addrs, uint32_t naddrs, sharp_host_t **out,
                               bool *changed)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < naddrs; i++) {
        if (find_addr(out, n, &addrs[i])) continue; /* the same address twice in one answer */
        sharp_host_t *h = find_addr(old, nold, &addrs[i]);
        if (!h) {
            h = find_addr(spare, nspare, &addrs[i]);
            if (h) {
                /* a former host back in the set: settings of its endpoint now */
                h->weight = t->weight;
                h->priority = t->priority;
                h->locality = t->locality;
                h->locality_weight = t->locality_weight;
                h->hc = t->hc;
                if (!sharp_lbmeta_equal(h->lb_meta, t->lb_meta)) {
                    free(h->lb_meta);
                    h->lb_meta = sharp_lbmeta_dup(t->lb_meta);
                }
                sharp_host_locality_md_set(h, t->locality_md);
                sharp_host_health_store(h, t->health_flags);
            }
        }
        if (!h) {
            h = sharp_calloc(1, sizeof *h);
            memcpy(&h->addr, &addrs[i], sizeof h->addr);
            h->addrlen = addrs[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
            sharp_addr_str((struct sockaddr *)&h->addr, h->address, sizeof h->address);
            snprintf(h->hostname, sizeof h->hostname, "%s", t->hostname);
            h->weight = t->weight;
            h->priority = t->priority;
            h->locality = t->locality;
            h->locality_weight = t->locality_weight;
            h->hc = t->hc;
            h->lb_meta = sharp_lbmeta_dup(t->lb_meta);
            atomic_init(&h->locality_md, sharp_locality_md_ref(t->locality_md));
            atomic_init(&h->health_flags, t->health_flags);
        }
        out[n++] = h;
    }
    bool diff = n != nold;
    for (uint32_t i = 0; !diff && i < n; i++)
        if (!sharp_host_listed(out[i], old, nold)) diff = true;
    *changed = diff;
    return n;
}

uint64_t sharp_dns_next_delay(const sharp_dns_cluster_t *dc, sharp_backoff_t *b, bool ok, uint32_t ttl_s,
                              uint64_t random)
{
    if (ok) {
        if (b) sharp_backoff_reset(b);
        uint64_t d = dc->respect_ttl && ttl_s > 0 ? (uint64_t)ttl_s * 1000 : dc->refresh_ms;
        if (dc->jitter_ms) d += random % dc->jitter_ms;
        return d;
    }
    if (dc->has_failure_rate && b) return sharp_backoff_next(b);
    return dc->refresh_ms;
}

/* ---- c-ares on the uv loop ---- */

static void process_timeouts(sharp_dns_cluster_t *dc);

static void on_poll(uv_poll_t *h, int status, int events)
{
    dns_poll_t *p = h->data;
    sharp_dns_cluster_t *dc = p->dc;
    ares_socket_t fd = p->fd;
    /* an error on the socket: let c-ares read it and notice */
    ares_socket_t r = (status < 0 || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD;
    ares_socket_t w = (status == 0 && (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD;
    ares_process_fd(dc->channel, r, w);
    process_timeouts(dc);
}

static void on_poll_closed(uv_handle_t *h)
{
    dns_poll_t *p = h->data;
    p->dc->open_handles--;
    free(p);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    sharp_dns_cluster_t *dc = data;
    dns_poll_t **pp = &dc->polls;
    while (*pp && (*pp)->fd != fd) pp = &(*pp)->next;
    dns_poll_t *p = *pp;
    if (!readable && !writable) {
        if (!p) return;
        *pp = p->next;
        uv_poll_stop(&p->poll);
        uv_close((uv_handle_t *)&p->poll, on_poll_closed);
        return;
    }
    if (!p) {
        p = sharp_calloc(1, sizeof *p);
        p->dc = dc;
        p->fd = fd;
        if (uv_poll_init_socket(dc->loop, &p->poll, fd) != 0) {
            sharp_log_error("%s: cannot poll a DNS socket", dc->owner);
            free(p);
            return;
        }
        p->poll.data = p;
        dc->open_handles++;
        p->next = dc->polls;
        dc->polls = p;
    }
    uv_poll_start(&p->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static void on_ares_timer(uv_timer_t *t)
{
    sharp_dns_cluster_t *dc = t->data;
    ares_process_fd(dc->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    process_timeouts(dc);
}

void sharp_dns_process_timeouts(sharp_dns_cluster_t *dc)
{
    process_timeouts(dc);
}

/* Arms the timer for c-ares' next query timeout. */
static void process_timeouts(sharp_dns_cluster_t *dc)
{
    if (dc->stopping) return;
    struct timeval tv, *tvp = ares_timeout(dc->channel, NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&dc->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + (uint64_t)(tvp->tv_usec + 999) / 1000;
    uv_timer_start(&dc->ares_timer, on_ares_timer, ms, 0);
}

/* ---- resolution ---- */

static void resolve(sharp_dns_target_t *t);
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res);

/* The families a lookup asks in turn (the second only when the first has
 * no address). */
int sharp_dns_family_of(sharp_dns_family_t f, int step)
{
    switch (f) {
    case SHARP_DNS_V4_ONLY: return step == 0 ? AF_INET : -1;
    case SHARP_DNS_V6_ONLY: return step == 0 ? AF_INET6 : -1;
    case SHARP_DNS_AUTO: return step == 0 ? AF_INET6 : step == 1 ? AF_INET : -1;
    case SHARP_DNS_V4_PREFERRED: return step == 0 ? AF_INET : step == 1 ? AF_INET6 : -1;
    case SHARP_DNS_ALL: return step == 0 ? AF_INET : step == 1 ? AF_INET6 : -1;
    }
    return -1;
}

static void on_refresh(uv_timer_t *tm)
{
    resolve(tm->data);
}

/* The cluster's hosts: every target's current ones, in target order. */
static void publish(sharp_dns_cluster_t *dc)
{
    sharp_cluster_t *c = dc->cluster;
    uint32_t n = 0;
    for (uint32_t i = 0; i < dc->ntargets; i++) n += dc->targets[i].nhosts;
    sharp_host_t **all = sharp_calloc(n ? n : 1, sizeof *all);
    n = 0;
    for (uint32_t i = 0; i < dc->ntargets; i++)
        for (uint32_t k = 0; k < dc->targets[i].nhosts; k++) all[n++] = dc->targets[i].hosts[k];
    sharp_cluster_publish_hosts(c, all, n);
    free(all);
}

static void first_done(sharp_dns_target_t *t)
{
    if (t->got_first) return;
    t->got_first = true;
    sharp_dns_cluster_t *dc = t->dc;
    if (dc->awaiting_first && --dc->awaiting_first == 0 && dc->on_first) {
        void (*fn)(void *) = dc->on_first;
        dc->on_first = NULL;
        fn(dc->on_first_arg);
    }
}

static void finish(sharp_dns_target_t *t, bool ok, const struct sockaddr_storage *addrs, uint32_t naddrs,
                   uint32_t ttl_s)
{
    sharp_dns_cluster_t *dc = t->dc;
    sharp_cluster_t *c = dc->cluster;
    sharp_stats_shard_t *sh = sharp_stats_shard(c->stats, 0);
    t->resolving = false;
    sharp_gauge_add(sh, dc->st.pending_resolutions, -1);
    if (ok) {
        sharp_counter_inc(sh, c->st.update_success);
        /* LOGICAL_DNS: the first address only */
        if (dc->logical && naddrs > 1) naddrs = 1;
        sharp_host_t **out = sharp_calloc(naddrs ? naddrs : 1, sizeof *out);
        bool changed = false;
        uint32_t n = sharp_dns_merge_hosts(t, t->hosts, t->nhosts, c->all_hosts, c->nall_hosts, addrs, naddrs,
                                           out, &changed);
        if (changed) {
            bool first = t->nhosts == 0 && !t->got_first;
            sharp_debug(upstream, "cluster '%s': %s resolved to %u address(es), hosts changed", c->name, t->name,
                        n);
            free(t->hosts);
            t->hosts = out;
            t->nhosts = n;
            /* Envoy counts a membership change when hosts are added or
             * removed; a LOGICAL_DNS cluster keeps its one logical host
             * when the address moves (only its first resolution adds it). */
            if (!dc->logical || first) sharp_counter_inc(sh, c->st.membership_change);
            publish(dc);
        } else {
            free(out);
            sharp_counter_inc(sh, c->st.update_no_rebuild);
        }
    } else {
        sharp_counter_inc(sh, c->st.update_failure);
    }
    uint64_t delay = sharp_dns_next_delay(dc, t->backoff, ok, ttl_s, sharp_xorshift64s(&dc->rng));
    sharp_debug(upstream, "cluster '%s': next resolution of %s in %llu ms", c->name, t->name,
                (unsigned long long)delay);
    first_done(t);
    if (!dc->stopping) uv_timer_start(&t->timer, on_refresh, delay ? delay : 1, 0);
}

/* Starts the lookup of the target's current family step. */
static void ask(sharp_dns_target_t *t)
{
    sharp_dns_cluster_t *dc = t->dc;
    /* ARES_AI_NOSORT, as Envoy: the answer's order (the first address is
     * LOGICAL_DNS's), and no probe connections to sort by */
    struct ares_addrinfo_hints hints = {.ai_family = sharp_dns_family_of(dc->family, t->step), .ai_flags = ARES_AI_NOSORT};
    ares_getaddrinfo(dc->channel, t->name, NULL, &hints, on_addrinfo, t);
}

/* Envoy's chargeGetAddrInfoErrorStats */
static void count_failure(sharp_dns_cluster_t *dc, int status, int timeouts)
{
    sharp_stats_shard_t *sh = sharp_stats_shard(dc->cluster->stats, 0);
    if (status == ARES_ENODATA || status == ARES_ENOTFOUND) sharp_counter_inc(sh, dc->st.not_found);
    else if (status == ARES_ETIMEOUT) sharp_counter_add(sh, dc->st.timeouts, timeouts > 0 ? (uint64_t)timeouts : 1);
    else sharp_counter_inc(sh, dc->st.get_addr_failure);
}

/* One family's answer. As Envoy's AddrInfoPendingResolution: AUTO and
 * V4_PREFERRED ask the other family when the first gave no address (an
 * error or an empty answer), ALL asks IPv4 then IPv6 and keeps both (a
 * success when either had addresses). */
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    sharp_dns_target_t *t = arg;
    sharp_dns_cluster_t *dc = t->dc;
    if (status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        if (res) ares_freeaddrinfo(res);
        return; /* the channel is going away */
    }
    uint32_t got = 0;
    if (status == ARES_SUCCESS && res) {
        uint32_t cap = 0;
        for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) cap++;
        t->addrs = sharp_realloc(t->addrs, (t->naddrs + cap + 1) * sizeof *t->addrs);
        for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
            if (n->ai_family != AF_INET && n->ai_family != AF_INET6) continue;
            if (n->ai_addrlen > sizeof t->addrs[0]) continue;
            struct sockaddr_storage *a = &t->addrs[t->naddrs];
            memset(a, 0, sizeof *a);
            memcpy(a, n->ai_addr, n->ai_addrlen);
            if (n->ai_family == AF_INET) ((struct sockaddr_in *)a)->sin_port = htons(t->port);
            else ((struct sockaddr_in6 *)a)->sin6_port = htons(t->port);
            if (n->ai_ttl >= 0 && (uint32_t)n->ai_ttl < t->ttl) t->ttl = (uint32_t)n->ai_ttl;
            t->naddrs++;
            got++;
        }
    }
    if (res) ares_freeaddrinfo(res);
    if (status == ARES_SUCCESS && got == 0) status = ARES_ENODATA;
    if (status != ARES_SUCCESS) {
        count_failure(dc, status, timeouts);
        sharp_debug(upstream, "cluster '%s': resolving %s (family step %d) failed: %s", dc->cluster->name, t->name,
                    t->step, ares_strerror(status));
    }
    bool more = sharp_dns_family_of(dc->family, t->step + 1) >= 0;
    if (more && (dc->family == SHARP_DNS_ALL || t->naddrs == 0)) {
        t->step++;
        ask(t);
        return;
    }
    bool ok = t->naddrs > 0;
    finish(t, ok, t->addrs, t->naddrs, ok && t->ttl != UINT32_MAX ? t->ttl : 0);
    free(t->addrs);
    t->addrs = NULL;
    t->naddrs = 0;
    process_timeouts(dc);
}

static void resolve(sharp_dns_target_t *t)
{
    sharp_dns_cluster_t *dc = t->dc;
    if (dc->stopping || t->resolving) return;
    sharp_stats_shard_t *sh = sharp_stats_shard(dc->cluster->stats, 0);
    sharp_counter_inc(sh, dc->cluster->st.update_attempt);
    sharp_counter_inc(sh, dc->st.resolve_total);
    sharp_gauge_add(sh, dc->st.pending_resolutions, 1);
    t->resolving = true;
    t->step = 0;
    t->naddrs = 0;
    t->ttl = UINT32_MAX;
    sharp_debug(upstream, "cluster '%s': resolving %s", dc->cluster->name, t->name);
    ask(t);
    process_timeouts(dc);
}

bool sharp_dns_only_default_server(void *channel)
{
    struct ares_addr_port_node *servers = NULL;
    if (ares_get_servers_ports(channel, &servers) != ARES_SUCCESS) return true;
    /* c-ares' own default when resolv.conf names no server: 127.0.0.1 with
     * the default port (0), alone; Envoy's isCaresDefaultTheOnlyNameserver */
    bool only = !servers || (!servers->next && servers->family == AF_INET &&
                             servers->addr.addr4.s_addr == htonl(INADDR_LOOPBACK) && servers->udp_port == 0 &&
                             servers->tcp_port == 0);
    if (servers) ares_free_data(servers);
    return only;
}

static uint64_t dns_random(void *arg)
{
    return sharp_xorshift64s(arg);
}

static bool ares_ready;

int sharp_dns_channel_open(sharp_dns_cluster_t *dc, uv_loop_t *loop, char *err, size_t errlen)
{
    if (!ares_ready) {
        int rc = ares_library_init(ARES_LIB_INIT_ALL);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
            return -1;
        }
        ares_ready = true;
    }
    dc->loop = loop;
    dc->rng = sharp_now_ns() | 1;
    struct ares_options o = {0};
    int mask = ARES_OPT_SOCK_STATE_CB;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = dc;
    if (dc->no_search) o.flags |= ARES_FLAG_NOSEARCH;
    if (dc->use_tcp) o.flags |= ARES_FLAG_USEVC;
    if (o.flags) mask |= ARES_OPT_FLAGS;
    if (dc->query_timeout_ms) {
        o.timeout = (int)(dc->query_timeout_ms > INT32_MAX ? INT32_MAX : dc->query_timeout_ms);
        mask |= ARES_OPT_TIMEOUTMS;
    }
    if (dc->query_tries) {
        o.tries = (int)(dc->query_tries > INT32_MAX ? INT32_MAX : dc->query_tries);
        mask |= ARES_OPT_TRIES;
    }
    ares_channel ch;
    int rc = ares_init_options(&ch, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "%s: c-ares: %s", dc->owner, ares_strerror(rc));
        return -1;
    }
    dc->channel = ch;
    if (dc->nresolvers && dc->resolvers_as_fallback && !sharp_dns_only_default_server(ch)) {
        sharp_debug(upstream, "%s: the system's name servers are used, the configured resolvers are "
                    "the fallback", dc->owner);
    } else if (dc->nresolvers) {
        struct ares_addr_port_node *nodes = sharp_calloc(dc->nresolvers, sizeof *nodes);
        for (uint32_t i = 0; i < dc->nresolvers; i++) {
            const struct sockaddr_storage *a = &dc->resolvers[i];
            nodes[i].next = i + 1 < dc->nresolvers ? &nodes[i + 1] : NULL;
            nodes[i].family = a->ss_family;
            if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *s6 = (const void *)a;
                memcpy(&nodes[i].addr.addr6, &s6->sin6_addr, sizeof s6->sin6_addr);
                nodes[i].udp_port = nodes[i].tcp_port = ntohs(s6->sin6_port);
            } else {
                const struct sockaddr_in *s4 = (const void *)a;
                memcpy(&nodes[i].addr.addr4, &s4->sin_addr, sizeof s4->sin_addr);
                nodes[i].udp_port = nodes[i].tcp_port = ntohs(s4->sin_port);
            }
        }
        rc = ares_set_servers_ports(ch, nodes);
        free(nodes);
        if (rc != ARES_SUCCESS) {
            snprintf(err, errlen, "%s: c-ares resolvers: %s", dc->owner, ares_strerror(rc));
            ares_destroy(ch);
            dc->channel = NULL;
            return -1;
        }
    }
    uv_timer_init(loop, &dc->ares_timer);
    dc->ares_timer.data = dc;
    dc->open_handles++;
    dc->started = true;
    return 0;
}

int sharp_dns_start(sharp_cluster_t *c, uv_loop_t *loop, void (*on_first)(void *arg), void *arg, char *err,
                    size_t errlen)
{
    sharp_dns_cluster_t *dc = c->dns;
    /* no_default_search_domain: besides ARES_FLAG_NOSEARCH, each name is
     * asked as an absolute one (a trailing dot), as c-ares' getaddrinfo
     * still walks the search list of a name without dots otherwise */
    for (uint32_t i = 0; dc->no_search && i < dc->ntargets; i++) {
        sharp_dns_target_t *t = &dc->targets[i];
        size_t len = strlen(t->name);
        if (!len || t->name[len - 1] == '.') continue;
        char *abs = sharp_calloc(1, len + 2);
        memcpy(abs, t->name, len);
        memcpy(abs + len, ".", 2);
        free(t->name);
        t->name = abs;
    }
    snprintf(dc->owner, sizeof dc->owner, "cluster '%s'", c->name);
    if (sharp_dns_channel_open(dc, loop, err, errlen) < 0) return -1;
    sharp_stats_t *s = c->stats;
    dc->st.resolve_total = sharp_stats_counterf(s, "dns.cares.resolve_total");
    dc->st.pending_resolutions = sharp_stats_gaugef(s, "dns.cares.pending_resolutions");
    dc->st.not_found = sharp_stats_counterf(s, "dns.cares.not_found");
    dc->st.timeouts = sharp_stats_counterf(s, "dns.cares.timeouts");
    dc->st.get_addr_failure = sharp_stats_counterf(s, "dns.cares.get_addr_failure");
    dc->on_first = on_first;
    dc->on_first_arg = arg;
    dc->awaiting_first = dc->ntargets;
    for (uint32_t i = 0; i < dc->ntargets; i++) {
        sharp_dns_target_t *t = &dc->targets[i];
        uv_timer_init(loop, &t->timer);
        t->timer.data = t;
        dc->open_handles++;
        if (dc->has_failure_rate) {
            t->backoff = sharp_calloc(1, sizeof *t->backoff);
            sharp_backoff_init(t->backoff, dc->failure_base_ms, dc->failure_max_ms, dns_random, &dc->rng);
        }
    }
    for (uint32_t i = 0; i < dc->ntargets; i++) resolve(&dc->targets[i]);
    return 0;
}

static void on_target_timer_closed(uv_handle_t *h)
{
    ((sharp_dns_target_t *)h->data)->dc->open_handles--;
}

static void on_ares_timer_closed(uv_handle_t *h)
{
    ((sharp_dns_cluster_t *)h->data)->open_handles--;
}

bool sharp_dns_closing(const sharp_cluster_t *c)
{
    return c->dns && c->dns->open_handles > 0;
}

void sharp_dns_channel_close(sharp_dns_cluster_t *dc)
{
    /* fails the queries in flight (ARES_EDESTRUCTION) and closes its
     * sockets through on_sock_state */
    dc->stopping = true;
    if (dc->channel) ares_destroy(dc->channel);
    dc->channel = NULL;
    uv_timer_stop(&dc->ares_timer);
    uv_close((uv_handle_t *)&dc->ares_timer, on_ares_timer_closed);
}

void sharp_dns_stop(sharp_cluster_t *c)
{
    sharp_dns_cluster_t *dc = c->dns;
    if (!dc || !dc->started || dc->stopping) return;
    dc->stopping = true;
    dc->on_first = NULL;
    for (uint32_t i = 0; i < dc->ntargets; i++) {
        uv_timer_stop(&dc->targets[i].timer);
        uv_close((uv_handle_t *)&dc->targets[i].timer, on_target_timer_closed);
    }
    sharp_dns_channel_close(dc);
}
