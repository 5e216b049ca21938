/* original_dst.c: the ORIGINAL_DST cluster's hosts (original_dst.h). */
#include "upstream/original_dst.h"

#include "http/headers.h"
#include "log.h"
#include "net.h"
#include "upstream/cluster.h"
#include "upstream/dfp.h"
#include "upstream/pool.h"
#include "worker.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

sharp_odst_t *sharp_odst_new(void)
{
    sharp_odst_t *o = sharp_calloc(1, sizeof *o);
    o->cleanup_ms = 5000;
    uv_mutex_init(&o->lock);
    return o;
}

void sharp_odst_free(sharp_odst_t *o)
{
    if (!o) return;
    /* hosts the main thread has adopted are the cluster's (all_hosts) */
    for (uint32_t i = 0; i < o->nfresh; i++) {
        sharp_diag_host_destroy(o->fresh[i]);
        free(o->fresh[i]);
    }
    free(o->fresh);
    free(o->hosts);
    sharp_host_index_free(&o->index);
    uv_mutex_destroy(&o->lock);
    free(o->header);
    free(o);
}

/* absl::SimpleAtoi into a uint64 then <= 65535: ASCII white space around
 * it, an optional '+', decimal digits. */
static bool parse_port(const char *p, size_t n, uint32_t *port)
{
    while (n && isspace((unsigned char)*p)) p++, n--;
    while (n && isspace((unsigned char)p[n - 1])) n--;
    if (n && *p == '+') p++, n--;
    if (!n) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)p[i])) return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
        if (v > 65535) return false;
    }
    *port = (uint32_t)v;
    return true;
}

bool sharp_odst_parse_address(const char *p, size_t n, struct sockaddr_storage *out)
{
    char ip[INET6_ADDRSTRLEN + 1];
    uint32_t port;
    if (!n) return false;
    memset(out, 0, sizeof *out);
    if (p[0] == '[') {
        /* the last "]:" ends the address */
        size_t pos = n;
        for (size_t i = n - 1; i > 0; i--)
            if (p[i - 1] == ']' && p[i] == ':') {
                pos = i - 1;
                break;
            }
        if (pos == n || pos < 1) return false;
        size_t iplen = pos - 1;
        if (!iplen || iplen >= sizeof ip || !parse_port(p + pos + 2, n - pos - 2, &port)) return false;
        memcpy(ip, p + 1, iplen);
        ip[iplen] = 0;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) return false;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        return true;
    }
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--)
        if (p[i - 1] == ':') {
            colon = p + i - 1;
            break;
        }
    if (!colon) return false;
    size_t iplen = (size_t)(colon - p);
    if (iplen >= sizeof ip || !parse_port(colon + 1, n - iplen - 1, &port)) return false;
    memcpy(ip, p, iplen);
    ip[iplen] = 0;
    struct sockaddr_in *a = (struct sockaddr_in *)out;
    if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) return false;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return true;
}

bool sharp_odst_destination(const sharp_cluster_t *c, sharp_stats_shard_t *sh, const sharp_headers_t *h,
                            const struct sockaddr_storage *restored, struct sockaddr_storage *out)
{
    const sharp_odst_t *o = c->odst;
    bool have = false;
    sharp_str_t v;
    /* only the first value of the header counts (it is untrusted) */
    if (o->header && h && sharp_headers_get_cstr(h, o->header, &v)) {
        if (sharp_odst_parse_address(v.p, v.len, out)) {
            have = true;
        } else {
            sharp_debug(upstream, "original_dst_load_balancer: invalid override header value. %.*s", (int)v.len,
                        v.p);
            if (sh) sharp_counter_inc(sh, c->st.original_dst_host_invalid);
        }
    }
    if (!have && restored && (restored->ss_family == AF_INET || restored->ss_family == AF_INET6)) {
        memcpy(out, restored, sizeof *out);
        have = true;
    }
    if (!have) return false;
    if (o->has_port_override) {
        uint16_t port = htons((uint16_t)o->port_override);
        if (out->ss_family == AF_INET) ((struct sockaddr_in *)out)->sin_port = port;
        else ((struct sockaddr_in6 *)out)->sin6_port = port;
    }
    return true;
}

/* ---- the worker's map ---- */

static uint32_t addr_hash(const struct sockaddr_storage *a)
{
    const unsigned char *p;
    size_t n;
    uint32_t h = 2166136261u ^ a->ss_family;
    if (a->ss_family == AF_INET) {
        p = (const unsigned char *)&((const struct sockaddr_in *)a)->sin_port; /* port, then address */
        n = sizeof(in_port_t) + sizeof(struct in_addr);
    } else {
        const struct sockaddr_in6 *x = (const void *)a;
        h = (h ^ x->sin6_port) * 16777619u;
        p = (const unsigned char *)&x->sin6_addr;
        n = sizeof x->sin6_addr;
    }
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The entry of address a (and, for a dynamic forward proxy, host name
 * `name`: two names may share an address). */
static sharp_odst_entry_t *local_find(const sharp_odst_local_t *m, const struct sockaddr_storage *a, const char *name)
{
    if (!m || !m->nslots) return NULL;
    for (uint32_t k = addr_hash(a) & (m->nslots - 1); m->slots[k]; k = (k + 1) & (m->nslots - 1)) {
        sharp_odst_entry_t *e = m->e[m->slots[k] - 1];
        if (sharp_addr_equal(&e->host->addr, a) && (!name || !strcmp(e->host->hostname, name))) return e;
    }
    return NULL;
}

static void local_reindex(sharp_odst_local_t *m)
{
    uint32_t cap = 16;
    while (cap < 2 * m->n) cap <<= 1;
    if (cap != m->nslots) {
        free(m->slots);
        m->slots = sharp_calloc(cap, sizeof *m->slots);
        m->nslots = cap;
    } else {
        memset(m->slots, 0, cap * sizeof *m->slots);
    }
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t k = addr_hash(&m->e[i]->host->addr) & (cap - 1);
        while (m->slots[k]) k = (k + 1) & (cap - 1);
        m->slots[k] = (int32_t)i + 1;
    }
}

static void entry_release(sharp_odst_entry_t *e, bool destroy)
{
    for (int prio = 0; prio < 2; prio++)
        for (int k = 0; k < 2; k++)
            if (e->pools[prio][k]) (destroy ? sharp_pool_destroy : sharp_pool_retire)(e->pools[prio][k]);
    atomic_fetch_sub_explicit(&e->host->npools, 1, memory_order_release);
    free(e);
}

/* Drops the entries whose host the cleanup removed (all of them: destroy). */
static void local_drop(sharp_odst_local_t *m, bool all, bool destroy)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < m->n; i++) {
        sharp_odst_entry_t *e = m->e[i];
        if (all || atomic_load_explicit(&e->host->odst_removed, memory_order_acquire)) entry_release(e, destroy);
        else m->e[kept++] = e;
    }
    bool changed = kept != m->n;
    m->n = kept;
    if (changed && !all) local_reindex(m);
}

static sharp_odst_entry_t *local_add(sharp_odst_local_t *m, sharp_host_t *h)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 8;
        m->e = sharp_realloc(m->e, m->cap * sizeof *m->e);
    }
    sharp_odst_entry_t *e = sharp_calloc(1, sizeof *e);
    e->host = h;
    /* the entry holds the pointer: counted as a pool, so the host is not
     * freed before this worker let go of it (sharp_cluster_collect_departed) */
    atomic_fetch_add_explicit(&h->npools, 1, memory_order_relaxed);
    m->e[m->n++] = e;
    if (2 * m->n > m->nslots) {
        local_reindex(m);
    } else {
        uint32_t k = addr_hash(&h->addr) & (m->nslots - 1);
        while (m->slots[k]) k = (k + 1) & (m->nslots - 1);
        m->slots[k] = (int32_t)m->n;
    }
    return e;
}

/* The cluster's host for address a, made when it has none (under its lock). */
static sharp_host_t *shared_host(sharp_cluster_t *c, const struct sockaddr_storage *a, const char *name)
{
    sharp_odst_t *o = c->odst;
    uv_mutex_lock(&o->lock);
    sharp_host_t *h = NULL;
    if (name) {
        /* by name and address: bounded by the cache's max_hosts */
        for (uint32_t i = 0; i < o->nhosts && !h; i++)
            if (sharp_addr_equal(&o->hosts[i]->addr, a) && !strcmp(o->hosts[i]->hostname, name)) h = o->hosts[i];
    } else {
        h = sharp_host_index_find(&o->index, a);
    }
    if (!h) {
        h = sharp_calloc(1, sizeof *h);
        memcpy(&h->addr, a, sizeof h->addr);
        h->addrlen = a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        sharp_addr_str((struct sockaddr *)&h->addr, h->address, sizeof h->address);
        /* Envoy names the host "<cluster name><address>"; a dynamic
         * forward proxy's by the name it was resolved from */
        if (name) snprintf(h->hostname, sizeof h->hostname, "%s", name);
        else snprintf(h->hostname, sizeof h->hostname, "%s%s", c->name, h->address);
        h->weight = 1;
        atomic_init(&h->index, UINT32_MAX);
        atomic_init(&h->odst_used, true);
        if (!name) sharp_host_index_add(&o->index, h);
        if (o->nhosts == o->cap) {
            o->cap = o->cap ? 2 * o->cap : 8;
            o->hosts = sharp_realloc(o->hosts, o->cap * sizeof *o->hosts);
        }
        o->hosts[o->nhosts++] = h;
        if (o->nfresh == o->fresh_cap) {
            o->fresh_cap = o->fresh_cap ? 2 * o->fresh_cap : 8;
            o->fresh = sharp_realloc(o->fresh, o->fresh_cap * sizeof *o->fresh);
        }
        o->fresh[o->nfresh++] = h;
        sharp_debug(upstream, "cluster '%s': created host %s", c->name, h->address);
    }
    uv_mutex_unlock(&o->lock);
    return h;
}

void sharp_odst_dfp_key(const sharp_host_t *h, char *out, size_t cap)
{
    unsigned port = ntohs(h->addr.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&h->addr)->sin6_port
                                                        : ((const struct sockaddr_in *)&h->addr)->sin_port);
    if (strchr(h->hostname, ':')) snprintf(out, cap, "[%s]:%u", h->hostname, port);
    else snprintf(out, cap, "%s:%u", h->hostname, port);
}

/* A dynamic forward proxy's host: the cache's address of the request's
 * host (:authority, as the filter may have rewritten it, with the default
 * port), Envoy's Cluster::LoadBalancer::chooseHost; none while the cache
 * has no address for it. */
static sharp_host_t *dfp_choose(sharp_cluster_local_t *cl, const sharp_headers_t *h)
{
    sharp_cluster_t *c = cl->cluster;
    sharp_odst_t *o = c->odst;
    sharp_str_t auth;
    char key[300], name[300];
    struct sockaddr_storage dst;
    if (!h || !sharp_headers_get_cstr(h, ":authority", &auth) ||
        !sharp_dfp_normalize(auth.p, auth.len, o->dfp_default_port, key, sizeof key)) {
        sharp_debug(upstream, "host empty");
        return NULL;
    }
    if (!sharp_dfp_address(o->dfp, key, sharp_now_ns() / 1000000, &dst)) {
        sharp_debug(upstream, "host %s not found", key);
        return NULL;
    }
    /* the name without the port (and an IPv6 literal's brackets) */
    const char *colon = strrchr(key, ':');
    size_t n = (size_t)(colon - key);
    const char *k = key;
    if (n >= 2 && k[0] == '[' && k[n - 1] == ']') k++, n -= 2;
    if (n >= sizeof ((sharp_host_t *)0)->hostname) return NULL;
    memcpy(name, k, n);
    name[n] = 0;
    if (!cl->odst) cl->odst = sharp_calloc(1, sizeof *cl->odst);
    sharp_odst_entry_t *e = local_find(cl->odst, &dst, name);
    if (e && atomic_load_explicit(&e->host->odst_removed, memory_order_acquire)) {
        local_drop(cl->odst, false, false);
        e = NULL;
    }
    if (!e) e = local_add(cl->odst, shared_host(c, &dst, name));
    atomic_store_explicit(&e->host->odst_used, true, memory_order_relaxed);
    return e->host;
}

sharp_host_t *sharp_odst_choose(sharp_cluster_local_t *cl, sharp_stats_shard_t *sh, const sharp_headers_t *h,
                                const struct sockaddr_storage *restored)
{
    sharp_cluster_t *c = cl->cluster;
    struct sockaddr_storage dst;
    if (c->odst->dfp) return dfp_choose(cl, h);
    if (!sharp_odst_destination(c, sh, h, restored, &dst)) {
        sharp_debug(upstream, "original_dst_load_balancer: No downstream connection or no original_dst.");
        return NULL;
    }
    if (!cl->odst) cl->odst = sharp_calloc(1, sizeof *cl->odst);
    sharp_odst_entry_t *e = local_find(cl->odst, &dst, NULL);
    if (e && atomic_load_explicit(&e->host->odst_removed, memory_order_acquire)) {
        /* the cleanup removed it since: its pools retire, the address gets
         * the cluster's current host */
        local_drop(cl->odst, false, false);
        e = NULL;
    }
    if (!e) e = local_add(cl->odst, shared_host(c, &dst, NULL));
    atomic_store_explicit(&e->host->odst_used, true, memory_order_relaxed);
    return e->host;
}

sharp_pool_t *sharp_odst_pool(const sharp_upstream_env_t *env, sharp_cluster_local_t *cl, int prio, sharp_host_t *h,
                              bool h2)
{
    if (!cl->odst) cl->odst = sharp_calloc(1, sizeof *cl->odst);
    sharp_odst_entry_t *e = local_find(cl->odst, &h->addr, cl->cluster->odst->dfp ? h->hostname : NULL);
    if (!e || e->host != h) e = local_add(cl->odst, h); /* not reached: chosen in this event */
    sharp_pool_t **slot = &e->pools[prio][h2 ? 1 : 0];
    if (!*slot) {
        *slot = sharp_pool_create(env, cl->cluster, h, (sharp_priority_t)prio);
        if (h2) sharp_pool_use_http2(*slot);
    }
    return *slot;
}

void sharp_odst_local_sweep(sharp_cluster_local_t *cl)
{
    if (cl->odst) local_drop(cl->odst, false, false);
}

void sharp_odst_local_each_pool(sharp_cluster_local_t *cl, void (*fn)(sharp_pool_t *p))
{
    for (uint32_t i = 0; cl->odst && i < cl->odst->n; i++)
        for (int prio = 0; prio < 2; prio++)
            for (int k = 0; k < 2; k++)
                if (cl->odst->e[i]->pools[prio][k]) fn(cl->odst->e[i]->pools[prio][k]);
}

void sharp_odst_local_free(sharp_cluster_local_t *cl, bool destroy)
{
    sharp_odst_local_t *m = cl->odst;
    if (!m) return;
    local_drop(m, true, destroy);
    free(m->e);
    free(m->slots);
    free(m);
    cl->odst = NULL;
}

/* ---- the main thread ---- */

void sharp_odst_sync(sharp_cluster_t *c, uint64_t now_ms)
{
    sharp_odst_t *o = c->odst;
    if (!o) return;
    if (!o->next_cleanup_ms) o->next_cleanup_ms = now_ms + o->cleanup_ms;
    bool changed = false;
    uv_mutex_lock(&o->lock);
    for (uint32_t i = 0; i < o->nfresh; i++) sharp_cluster_adopt_host(c, o->fresh[i]);
    changed = o->nfresh > 0;
    o->nfresh = 0;
    if (now_ms >= o->next_cleanup_ms) {
        /* Envoy's cleanup(): an address chosen since the last pass stays
         * (and is marked for the next one), as does one a connection or
         * request still uses; the others go */
        o->next_cleanup_ms = now_ms + o->cleanup_ms;
        uint32_t kept = 0;
        for (uint32_t i = 0; i < o->nhosts; i++) {
            sharp_host_t *h = o->hosts[i];
            bool keep;
            if (o->dfp) {
                /* Envoy's onDnsHostRemove / onDnsHostAddOrUpdate: the
                 * cache's host went (host_ttl) or moved to another address */
                char key[300];
                sharp_odst_dfp_key(h, key, sizeof key);
                keep = sharp_dfp_current(o->dfp, key, &h->addr);
            } else {
                keep = atomic_exchange_explicit(&h->odst_used, false, memory_order_relaxed) ||
                       atomic_load_explicit(&h->active_cx, memory_order_relaxed) > 0 ||
                       atomic_load_explicit(&h->active_rq, memory_order_relaxed) > 0;
            }
            if (keep) {
                o->hosts[kept++] = h;
                continue;
            }
            sharp_debug(upstream, "cluster '%s': removing stale address %s", c->name, h->address);
            atomic_store_explicit(&h->odst_removed, true, memory_order_release);
        }
        if (kept != o->nhosts) {
            o->nhosts = kept;
            sharp_host_index_free(&o->index);
            for (uint32_t i = 0; i < kept && !o->dfp; i++) sharp_host_index_add(&o->index, o->hosts[i]);
            changed = true;
        }
    }
    sharp_host_t **hosts = NULL;
    uint32_t n = 0;
    if (changed) {
        n = o->nhosts;
        hosts = sharp_calloc(n ? n : 1, sizeof *hosts);
        if (n) memcpy(hosts, o->hosts, n * sizeof *hosts);
    }
    uv_mutex_unlock(&o->lock);
    if (!changed) return;
    /* /clusters, the membership gauges, and the workers' sweep of the
     * pools of removed hosts */
    if (c->stats) sharp_counter_inc(sharp_stats_shard(c->stats, 0), c->st.membership_change);
    sharp_cluster_publish_hosts(c, hosts, n);
    free(hosts);
}
