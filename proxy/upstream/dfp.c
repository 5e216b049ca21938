/* dfp.c: the dynamic forward proxy's DNS cache (dfp.h). */
#include "upstream/dfp.h"
#include "grpc/backoff.h"
#include "log.h"
#include "net.h"
#include "worker.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One running lookup: c-ares calls back with it even after the entry was
 * removed (then entry is NULL) or timed out (then it is stale). */
typedef struct dfp_query {
    sharp_dfp_entry_t *entry;
} dfp_query_t;

static sharp_dfp_cache_t *registry;
static uv_loop_t *dfp_loop;
static sharp_stats_t *dfp_stats;
static void (*dfp_wake)(void *arg);
static void *dfp_wake_arg;
/* bumped whenever some host settles or goes: workers compare it with the
 * value of their last pass over their waiters */
static _Atomic uint64_t dfp_epoch = 1;

void sharp_dfp_default_settings(sharp_dfp_settings_t *s)
{
    memset(s, 0, sizeof *s);
    s->family = SHARP_DNS_AUTO;
    s->refresh_ms = 60000;
    s->host_ttl_ms = 300000;
    s->max_hosts = 1024;
    s->max_pending = 1024;
    s->query_timeout_ms = 5000;
}

static uint32_t key_hash(const char *k)
{
    uint32_t h = 2166136261u;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 16777619u;
    return h;
}

sharp_dfp_cache_t *sharp_dfp_cache_new(const char *name, const sharp_dfp_settings_t *set)
{
    sharp_dfp_cache_t *c = sharp_calloc(1, sizeof *c);
    c->name = sharp_strdup(name);
    c->set = *set;
    uint32_t n = 16;
    while (n < set->max_hosts && n < (1u << 16))
        n <<= 1;
    c->nbuckets = n;
    c->buckets = sharp_calloc(n, sizeof *c->buckets);
    uv_mutex_init(&c->lock);
    c->rng = sharp_now_ns() | 1;
    snprintf(c->dns.owner, sizeof c->dns.owner, "dns cache '%s'", name);
    return c;
}

void sharp_dfp_entry_free(sharp_dfp_entry_t *e)
{
    if (!e) return;
    free(e->key);
    free(e->name);
    free(e->backoff);
    free(e);
}

void sharp_dfp_cache_free(sharp_dfp_cache_t *c)
{
    if (!c) return;
    for (uint32_t i = 0; i < c->nbuckets; i++)
        for (sharp_dfp_entry_t *e = c->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            if (e->query) e->query->entry = NULL;
            sharp_dfp_entry_free(e);
        }
    free(c->buckets);
    free(c->queued);
    for (uint32_t i = 0; i < c->npreresolve; i++)
        free(c->preresolve[i]);
    free(c->preresolve);
    free(c->dns.resolvers);
    free(c->config);
    uv_mutex_destroy(&c->lock);
    free(c->name);
    free(c);
}

/* ---- the map (under the lock) ---- */

static sharp_dfp_entry_t *find(const sharp_dfp_cache_t *c, const char *key)
{
    for (sharp_dfp_entry_t *e = c->buckets[key_hash(key) & (c->nbuckets - 1)]; e; e = e->next)
        if (!strcmp(e->key, key)) return e;
    return NULL;
}

static void unlink_entry(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e)
{
    sharp_dfp_entry_t **pp = &c->buckets[key_hash(e->key) & (c->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = e->next;
        c->nentries--;
    }
}

/* Splits "name:port" (the key) into the name to resolve and the port. */
static void split_key(sharp_dfp_entry_t *e)
{
    const char *k = e->key, *colon = strrchr(k, ':');
    size_t n = colon ? (size_t)(colon - k) : strlen(k);
    e->port = colon ? (uint16_t)atoi(colon + 1) : 0;
    if (n >= 2 && k[0] == '[' && k[n - 1] == ']') {
        k++;
        n -= 2;
    }
    e->name = sharp_calloc(1, n + 1);
    memcpy(e->name, k, n);
}

static sharp_dfp_entry_t *add_entry(sharp_dfp_cache_t *c, const char *key, uint64_t now_ms)
{
    sharp_dfp_entry_t *e = sharp_calloc(1, sizeof *e);
    e->key = sharp_strdup(key);
    e->cache = c;
    split_key(e);
    atomic_init(&e->last_used_ms, now_ms);
    uint32_t b = key_hash(key) & (c->nbuckets - 1);
    e->next = c->buckets[b];
    c->buckets[b] = e;
    c->nentries++;
    if (c->nqueued == c->queued_cap) {
        c->queued_cap = c->queued_cap ? 2 * c->queued_cap : 8;
        c->queued = sharp_realloc(c->queued, c->queued_cap * sizeof *c->queued);
    }
    c->queued[c->nqueued++] = e;
    return e;
}

/* ---- lookups (any thread) ---- */

bool sharp_dfp_normalize(const char *host, size_t len, uint16_t default_port, char *out, size_t cap)
{
    if (!len) return false;
    /* a port of its own: after the last ':' that follows an IPv6 literal's
     * ']' or is the only ':' */
    bool has_port = false;
    if (host[0] == '[') {
        const char *rb = memchr(host, ']', len);
        has_port = rb && rb + 1 < host + len && rb[1] == ':';
    } else {
        const char *colon = memchr(host, ':', len);
        has_port = colon && !memchr(colon + 1, ':', (size_t)(host + len - colon - 1));
        if (colon && !has_port) {
            /* a bare IPv6 address: Envoy adds brackets and the port */
            int n = snprintf(out, cap, "[%.*s]:%u", (int)len, host, default_port);
            return n > 0 && (size_t)n < cap;
        }
    }
    int n = has_port ? snprintf(out, cap, "%.*s", (int)len, host)
                     : snprintf(out, cap, "%.*s:%u", (int)len, host, default_port);
    return n > 0 && (size_t)n < cap;
}

sharp_dfp_status_t sharp_dfp_load(sharp_dfp_cache_t *c, sharp_stats_shard_t *sh, const char *key,
                                  uint64_t now_ms, sharp_dfp_result_t *out)
{
    bool wake = false;
    sharp_dfp_status_t st;
    uv_mutex_lock(&c->lock);
    sharp_dfp_entry_t *e = find(c, key);
    if (e && e->first_done) {
        atomic_store_explicit(&e->last_used_ms, now_ms, memory_order_relaxed);
        out->has_addr = e->has_addr;
        if (e->has_addr) memcpy(&out->addr, &e->addr, sizeof out->addr);
        memcpy(out->details, e->details, sizeof out->details);
        st = SHARP_DFP_IN_CACHE;
    } else if (e) {
        atomic_store_explicit(&e->last_used_ms, now_ms, memory_order_relaxed);
        st = SHARP_DFP_LOADING;
    } else if (c->nentries >= c->set.max_hosts) {
        st = SHARP_DFP_OVERFLOW;
    } else {
        add_entry(c, key, now_ms);
        wake = true;
        st = SHARP_DFP_LOADING;
    }
    uv_mutex_unlock(&c->lock);
    if (st == SHARP_DFP_OVERFLOW) {
        sharp_debug(upstream, "DNS cache overflow for host '%s'", key);
        if (sh && c->stats) sharp_counter_inc(sh, c->st.host_overflow);
    }
    if (wake && c->started) uv_async_send(&c->async);
    return st;
}

bool sharp_dfp_address(sharp_dfp_cache_t *c, const char *key, uint64_t now_ms,
                       struct sockaddr_storage *out)
{
    uv_mutex_lock(&c->lock);
    sharp_dfp_entry_t *e = find(c, key);
    bool ok = e && e->has_addr;
    if (ok) {
        memcpy(out, &e->addr, sizeof *out);
        atomic_store_explicit(&e->last_used_ms, now_ms, memory_order_relaxed);
    }
    uv_mutex_unlock(&c->lock);
    return ok;
}

bool sharp_dfp_current(sharp_dfp_cache_t *c, const char *key, const struct sockaddr_storage *a)
{
    uv_mutex_lock(&c->lock);
    sharp_dfp_entry_t *e = find(c, key);
    bool ok = e && e->has_addr && sharp_addr_equal(&e->addr, a);
    uv_mutex_unlock(&c->lock);
    return ok;
}

bool sharp_dfp_settled(sharp_dfp_cache_t *c, const char *key)
{
    uv_mutex_lock(&c->lock);
    sharp_dfp_entry_t *e = find(c, key);
    bool done = !e || e->first_done;
    uv_mutex_unlock(&c->lock);
    return done;
}

uint32_t sharp_dfp_nhosts(sharp_dfp_cache_t *c)
{
    uv_mutex_lock(&c->lock);
    uint32_t n = c->nentries;
    uv_mutex_unlock(&c->lock);
    return n;
}

bool sharp_dfp_breaker_acquire(sharp_dfp_cache_t *c, sharp_stats_shard_t *sh)
{
    int64_t cur = atomic_load_explicit(&c->pending, memory_order_relaxed);
    do {
        if (cur >= (int64_t)c->set.max_pending) {
            if (sh && c->stats) sharp_counter_inc(sh, c->st.dns_rq_pending_overflow);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&c->pending, &cur, cur + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

void sharp_dfp_breaker_release(sharp_dfp_cache_t *c)
{
    atomic_fetch_sub_explicit(&c->pending, 1, memory_order_relaxed);
}

/* ---- waiters (worker) ---- */

static sharp_dlist_t *link_of(sharp_dfp_waiter_t *wt)
{
    return (sharp_dlist_t *)(void *)&wt->link_prev;
}

void sharp_dfp_wait(sharp_worker_t *w, sharp_dfp_waiter_t *wt)
{
    sharp_dlist_push(&w->dfp_waiters, link_of(wt));
}

void sharp_dfp_wait_cancel(sharp_dfp_waiter_t *wt)
{
    if (wt->link_prev) sharp_dlist_remove(link_of(wt));
    wt->link_prev = wt->link_next = NULL;
}

void sharp_dfp_worker_poll(sharp_worker_t *w)
{
    uint64_t epoch = atomic_load_explicit(&dfp_epoch, memory_order_acquire);
    if (epoch == w->dfp_epoch) return;
    w->dfp_epoch = epoch;
    if (sharp_dlist_empty(&w->dfp_waiters)) return;
    /* the settled ones move to a list of their own first: a resumed stream
     * may end, and other streams' waiters with it, while this runs */
    sharp_dlist_t ready;
    sharp_dlist_init(&ready);
    for (sharp_dlist_t *n = w->dfp_waiters.next, *nx; n != &w->dfp_waiters; n = nx) {
        nx = n->next;
        sharp_dfp_waiter_t *wt = (sharp_dfp_waiter_t *)(void *)n;
        if (!sharp_dfp_settled(wt->cache, wt->key)) continue;
        sharp_dlist_remove(n);
        sharp_dlist_push(&ready, n);
    }
    while (!sharp_dlist_empty(&ready)) {
        sharp_dlist_t *n = ready.next;
        sharp_dfp_waiter_t *wt = (sharp_dfp_waiter_t *)(void *)n;
        sharp_dfp_wait_cancel(wt);
        wt->done(wt);
    }
}

/* ---- the main thread ---- */

uint32_t sharp_dfp_take_queued(sharp_dfp_cache_t *c, sharp_dfp_entry_t **out, uint32_t cap)
{
    uv_mutex_lock(&c->lock);
    uint32_t n = c->nqueued < cap ? c->nqueued : cap;
    if (n) {
        memcpy(out, c->queued, n * sizeof *out);
        memmove(c->queued, c->queued + n, (c->nqueued - n) * sizeof *c->queued);
        c->nqueued -= n;
    }
    uv_mutex_unlock(&c->lock);
    return n;
}

static sharp_stats_shard_t *main_shard(sharp_dfp_cache_t *c)
{
    return c->stats ? sharp_stats_shard(c->stats, 0) : NULL;
}

bool sharp_dfp_resolved(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, bool ok,
                        const struct sockaddr_storage *a, const char *details)
{
    sharp_stats_shard_t *sh = main_shard(c);
    if (sh) sharp_counter_inc(sh, ok ? c->st.dns_query_success : c->st.dns_query_failure);
    bool wake = false;
    uv_mutex_lock(&c->lock);
    if (!e->first_done) wake = true;
    e->first_done = true;
    if (ok && a && (!e->has_addr || !sharp_addr_equal(&e->addr, a))) {
        /* once a host has an address it keeps it through failures */
        if (e->has_addr && sh) sharp_counter_inc(sh, c->st.host_address_changed);
        memcpy(&e->addr, a, sizeof e->addr);
        e->has_addr = true;
        wake = true;
    }
    snprintf(e->details, sizeof e->details, "%s", details ? details : "");
    uv_mutex_unlock(&c->lock);
    return wake;
}

bool sharp_dfp_expire(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, uint64_t now_ms)
{
    uint64_t used = atomic_load_explicit(&e->last_used_ms, memory_order_relaxed);
    if (now_ms < used || now_ms - used <= c->set.host_ttl_ms) return false;
    sharp_debug(upstream, "dns cache '%s': host '%s' TTL expired, removing", c->name, e->key);
    uv_mutex_lock(&c->lock);
    unlink_entry(c, e);
    uv_mutex_unlock(&c->lock);
    e->removed = true;
    sharp_stats_shard_t *sh = main_shard(c);
    if (sh) {
        sharp_counter_inc(sh, c->st.host_removed);
        sharp_gauge_add(sh, c->st.num_hosts, -1);
    }
    return true;
}

static uint64_t dfp_random(void *arg)
{
    return sharp_xorshift64s(arg);
}

uint64_t sharp_dfp_next_delay(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, bool ok)
{
    if (ok) {
        if (e->backoff) sharp_backoff_reset(e->backoff);
        return c->set.refresh_ms;
    }
    if (!c->set.has_failure_rate) return c->set.refresh_ms;
    if (!e->backoff) {
        e->backoff = sharp_calloc(1, sizeof *e->backoff);
        sharp_backoff_init(e->backoff, c->set.failure_base_ms, c->set.failure_max_ms, dfp_random,
                           &c->rng);
    }
    return sharp_backoff_next(e->backoff);
}

static void notify_workers(void)
{
    atomic_fetch_add_explicit(&dfp_epoch, 1, memory_order_release);
    if (dfp_wake) dfp_wake(dfp_wake_arg);
}

static void start_resolve(sharp_dfp_entry_t *e);

static void on_entry_closed(uv_handle_t *h)
{
    sharp_dfp_entry_t *e = h->data;
    if (--e->open_handles == 0) sharp_dfp_entry_free(e);
}

static void entry_close(sharp_dfp_entry_t *e)
{
    if (e->query) e->query->entry = NULL;
    e->query = NULL;
    uv_timer_stop(&e->refresh);
    uv_timer_stop(&e->timeout);
    uv_close((uv_handle_t *)&e->refresh, on_entry_closed);
    uv_close((uv_handle_t *)&e->timeout, on_entry_closed);
}

static void on_refresh(uv_timer_t *t)
{
    sharp_dfp_entry_t *e = t->data;
    sharp_dfp_cache_t *c = e->cache;
    if (c->stopping) return;
    if (sharp_dfp_expire(c, e, sharp_now_ns() / 1000000)) {
        entry_close(e);
        notify_workers(); /* streams waiting for it are told it is gone */
        return;
    }
    start_resolve(e);
}

/* The end of a lookup: its answer, or a failure with Envoy's details. */
static void finish(sharp_dfp_entry_t *e, bool ok, const char *details)
{
    sharp_dfp_cache_t *c = e->cache;
    e->resolving = false;
    if (e->query) e->query->entry = NULL;
    e->query = NULL;
    uv_timer_stop(&e->timeout);
    sharp_debug(upstream, "dns cache '%s': host '%s' %s", c->name, e->key,
                ok ? "resolved" : details);
    if (sharp_dfp_resolved(c, e, ok, ok ? &e->found : NULL, ok ? "cares_success" : details))
        notify_workers();
    uint64_t delay = sharp_dfp_next_delay(c, e, ok);
    if (!c->stopping) uv_timer_start(&e->refresh, on_refresh, delay ? delay : 1, 0);
}

static void ask(sharp_dfp_entry_t *e);

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    dfp_query_t *q = arg;
    sharp_dfp_entry_t *e = q->entry;
    if (!e || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        /* removed, timed out or the channel is going away */
        if (res) ares_freeaddrinfo(res);
        free(q);
        return;
    }
    sharp_dfp_cache_t *c = e->cache;
    if (status == ARES_SUCCESS && res && !e->has_found) {
        for (struct ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
            if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) ||
                n->ai_addrlen > sizeof e->found)
                continue;
            memset(&e->found, 0, sizeof e->found);
            memcpy(&e->found, n->ai_addr, n->ai_addrlen);
            if (n->ai_family == AF_INET)
                ((struct sockaddr_in *)&e->found)->sin_port = htons(e->port);
            else
                ((struct sockaddr_in6 *)&e->found)->sin6_port = htons(e->port);
            e->has_found = true;
            break;
        }
    }
    if (res) ares_freeaddrinfo(res);
    if (status == ARES_SUCCESS && !e->has_found) status = ARES_ENODATA;
    e->last_status = status;
    if (!e->has_found && sharp_dns_family_of(c->set.family, e->step + 1) >= 0) {
        /* the other family when the first gave no address */
        e->step++;
        ask(e);
        return;
    }
    free(q);
    e->query = NULL;
    char details[96];
    if (e->has_found) {
        finish(e, true, NULL);
    } else {
        /* Envoy's c-ares resolver details */
        bool norec = status == ARES_ENODATA || status == ARES_ENOTFOUND;
        snprintf(details, sizeof details, "%s:%s", norec ? "cares_norecords" : "cares_failure",
                 ares_strerror(status));
        for (char *p = details; *p; p++)
            if (*p == ' ') *p = '_';
        finish(e, false, details);
    }
    sharp_dns_process_timeouts(&c->dns);
}

static void ask(sharp_dfp_entry_t *e)
{
    sharp_dfp_cache_t *c = e->cache;
    dfp_query_t *q = e->query;
    if (!q) {
        q = e->query = sharp_calloc(1, sizeof *q);
        q->entry = e;
    }
    struct ares_addrinfo_hints hints = {.ai_family = sharp_dns_family_of(c->set.family, e->step),
                                        .ai_flags = ARES_AI_NOSORT};
    /* no_default_search_domain: a name is asked as an absolute one, as the
     * DNS clusters do (c-ares' getaddrinfo walks the search list of a name
     * without dots otherwise); an IP address stays as it is */
    char name[300];
    unsigned char buf[sizeof(struct in6_addr)];
    size_t len = strlen(e->name);
    bool ip = inet_pton(AF_INET, e->name, buf) == 1 || inet_pton(AF_INET6, e->name, buf) == 1;
    if (c->dns.no_search && !ip && len && e->name[len - 1] != '.' && len + 2 <= sizeof name)
        snprintf(name, sizeof name, "%s.", e->name);
    else
        snprintf(name, sizeof name, "%s", e->name);
    ares_getaddrinfo(c->dns.channel, name, NULL, &hints, on_addrinfo, q);
}

static void on_query_timeout(uv_timer_t *t)
{
    sharp_dfp_entry_t *e = t->data;
    sharp_dfp_cache_t *c = e->cache;
    if (!e->resolving) return;
    sharp_stats_shard_t *sh = main_shard(c);
    if (sh) sharp_counter_inc(sh, c->st.dns_query_timeout);
    /* the query's late answer finds no entry */
    finish(e, false, "resolve_timeout");
}

static void start_resolve(sharp_dfp_entry_t *e)
{
    sharp_dfp_cache_t *c = e->cache;
    if (c->stopping || e->resolving) return;
    sharp_stats_shard_t *sh = main_shard(c);
    if (sh) sharp_counter_inc(sh, c->st.dns_query_attempt);
    e->resolving = true;
    e->step = 0;
    e->has_found = false;
    sharp_debug(upstream, "dns cache '%s': starting main thread resolve for host '%s'", c->name,
                e->key);
    uv_timer_start(&e->timeout, on_query_timeout,
                   c->set.query_timeout_ms ? c->set.query_timeout_ms : 1, 0);
    ask(e);
    sharp_dns_process_timeouts(&c->dns);
}

/* A queued entry's first resolution: its timers, host_added, then the lookup. */
static void start_entry(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e)
{
    if (e->started) return;
    e->started = true;
    uv_timer_init(dfp_loop, &e->refresh);
    uv_timer_init(dfp_loop, &e->timeout);
    e->refresh.data = e->timeout.data = e;
    e->open_handles = 2;
    sharp_stats_shard_t *sh = main_shard(c);
    if (sh) {
        sharp_counter_inc(sh, c->st.host_added);
        sharp_gauge_add(sh, c->st.num_hosts, 1);
    }
    start_resolve(e);
}

static void on_async(uv_async_t *a)
{
    sharp_dfp_cache_t *c = a->data;
    if (c->stopping) return;
    sharp_dfp_entry_t *batch[64];
    uint32_t n;
    while ((n = sharp_dfp_take_queued(c, batch, SHARP_ARRAY_SIZE(batch))) > 0)
        for (uint32_t i = 0; i < n; i++)
            start_entry(c, batch[i]);
}

static int cache_start(sharp_dfp_cache_t *c, char *err, size_t errlen)
{
    if (c->started) return 0;
    if (sharp_dns_channel_open(&c->dns, dfp_loop, err, errlen) < 0) return -1;
    c->stats = dfp_stats;
    sharp_stats_t *s = dfp_stats;
#define DFP_STAT(kind, fld) c->st.fld = sharp_stats_##kind##f(s, "dns_cache.%s." #fld, c->name)
    DFP_STAT(counter, dns_query_attempt);
    DFP_STAT(counter, dns_query_success);
    DFP_STAT(counter, dns_query_failure);
    DFP_STAT(counter, dns_query_timeout);
    DFP_STAT(counter, host_address_changed);
    DFP_STAT(counter, host_added);
    DFP_STAT(counter, host_removed);
    DFP_STAT(counter, host_overflow);
    DFP_STAT(counter, dns_rq_pending_overflow);
    DFP_STAT(gauge, num_hosts);
#undef DFP_STAT
    uv_async_init(dfp_loop, &c->async, on_async);
    c->async.data = c;
    c->started = true;
    /* preresolve_hostnames: resolved now, as Envoy's cache constructor does */
    for (uint32_t i = 0; i < c->npreresolve; i++) {
        sharp_dfp_result_t r;
        sharp_dfp_load(c, NULL, c->preresolve[i], sharp_now_ns() / 1000000, &r);
    }
    on_async(&c->async);
    return 0;
}

int sharp_dfp_start(uv_loop_t *loop, sharp_stats_t *stats, void (*wake)(void *arg), void *arg,
                    char *err, size_t errlen)
{
    dfp_loop = loop;
    dfp_stats = stats;
    dfp_wake = wake;
    dfp_wake_arg = arg;
    for (sharp_dfp_cache_t *c = registry; c; c = c->next)
        if (cache_start(c, err, errlen) < 0) return -1;
    return 0;
}

static int config_equal(const sharp_dfp_cache_t *c, const uint8_t *config, size_t len)
{
    return c->config_len == len && (!len || !memcmp(c->config, config, len));
}

sharp_dfp_cache_t *sharp_dfp_cache_get(const char *name, const sharp_dfp_settings_t *set,
                                       const sharp_dns_cluster_t *dns, char **preresolve,
                                       uint32_t npreresolve, const uint8_t *config,
                                       size_t config_len, char *err, size_t errlen)
{
    for (sharp_dfp_cache_t *c = registry; c; c = c->next) {
        if (strcmp(c->name, name) != 0) continue;
        for (uint32_t i = 0; i < npreresolve; i++)
            free(preresolve[i]);
        free(preresolve);
        if (!config_equal(c, config, config_len)) {
            snprintf(err, errlen, "config specified DNS cache '%s' with different settings", name);
            return NULL;
        }
        return c;
    }
    sharp_dfp_cache_t *c = sharp_dfp_cache_new(name, set);
    c->dns.family = set->family;
    c->dns.no_search = dns->no_search;
    c->dns.use_tcp = dns->use_tcp;
    c->dns.resolvers_as_fallback = dns->resolvers_as_fallback;
    c->dns.query_timeout_ms = dns->query_timeout_ms;
    c->dns.query_tries = dns->query_tries;
    if (dns->nresolvers) {
        c->dns.resolvers = sharp_calloc(dns->nresolvers, sizeof *c->dns.resolvers);
        memcpy(c->dns.resolvers, dns->resolvers, dns->nresolvers * sizeof *c->dns.resolvers);
        c->dns.nresolvers = dns->nresolvers;
    }
    c->preresolve = preresolve;
    c->npreresolve = npreresolve;
    c->config = sharp_calloc(1, config_len ? config_len : 1);
    memcpy(c->config, config, config_len);
    c->config_len = config_len;
    c->next = registry;
    registry = c;
    if (dfp_loop && cache_start(c, err, errlen) < 0) return NULL;
    return c;
}

void sharp_dfp_stop(void)
{
    for (sharp_dfp_cache_t *c = registry; c; c = c->next) {
        if (!c->started || c->stopping) continue;
        c->stopping = true;
        for (uint32_t i = 0; i < c->nbuckets; i++)
            for (sharp_dfp_entry_t *e = c->buckets[i]; e; e = e->next)
                if (e->started) {
                    if (e->query) e->query->entry = NULL;
                    e->query = NULL;
                    uv_timer_stop(&e->refresh);
                    uv_timer_stop(&e->timeout);
                    e->open_handles++; /* the map frees it */
                    uv_close((uv_handle_t *)&e->refresh, on_entry_closed);
                    uv_close((uv_handle_t *)&e->timeout, on_entry_closed);
                }
        sharp_dns_channel_close(&c->dns);
        uv_close((uv_handle_t *)&c->async, NULL);
    }
}

void sharp_dfp_free_all(void)
{
    while (registry) {
        sharp_dfp_cache_t *c = registry;
        registry = c->next;
        sharp_dfp_cache_free(c);
    }
    dfp_loop = NULL;
    dfp_wake = NULL;
}
