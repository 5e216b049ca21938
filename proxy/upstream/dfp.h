/* dfp.h: the dynamic forward proxy's DNS cache (Envoy's DnsCacheImpl,
 * envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig), shared
 * by name between the envoy.filters.http.dynamic_forward_proxy filter and
 * envoy.clusters.dynamic_forward_proxy clusters.
 *
 * The cache maps a host ("name:port", the request's authority with the
 * default port added) to the first address its last answer gave. Workers
 * look a host up under the cache's mutex (sharp_dfp_load): a host whose
 * first resolution is complete is in the cache (with an address, or
 * without one after a failure); a new host becomes an entry that is
 * loading, queued for the main thread, which the cache's uv_async wakes.
 * Resolution runs on the main loop only, on the cache's own c-ares channel
 * (upstream/dns.h), one lookup per host with the cache's family rules and
 * dns_query_timeout; a host is resolved again every dns_refresh_rate
 * (dns_failure_refresh_rate's back-off after a failure) and, at that
 * moment, removed when it was not used for host_ttl. An answer that gives
 * no address keeps the previous one. When a first resolution completes
 * (or an address changes, or a host is removed) the cache bumps an epoch
 * and wakes every worker; a worker then walks its streams that wait
 * (sharp_dfp_waiter_t) and resumes those whose host is done or gone.
 *
 * Bounds: max_hosts entries (a new host beyond that is an overflow, as
 * Envoy checks it: approximately, against the entries at the lookup) and
 * dns_cache_circuit_breaker.max_pending_requests streams waiting for a
 * resolution at once. Caches are made at configuration time, registered
 * by name (a second configuration with the name must be equal), and live
 * until the server stops. Stats: dns_cache.<name>.*. */
#ifndef SHARP_UPSTREAM_DFP_H
#define SHARP_UPSTREAM_DFP_H

#include "common.h"
#include "stats.h"
#include "upstream/dns.h"

#include <stdatomic.h>
#include <sys/socket.h>
#include <uv.h>

struct sharp_backoff;
struct sharp_worker;

typedef struct sharp_dfp_entry sharp_dfp_entry_t;

typedef struct sharp_dfp_settings {
    sharp_dns_family_t family; /* dns_lookup_family (AUTO) */
    uint64_t refresh_ms;       /* dns_refresh_rate, default 60 s */
    uint64_t host_ttl_ms;      /* host_ttl, default 5 min */
    uint32_t max_hosts;        /* max_hosts, default 1024 */
    uint32_t max_pending;      /* dns_cache_circuit_breaker.max_pending_requests, default 1024 */
    bool has_failure_rate;     /* dns_failure_refresh_rate */
    uint64_t failure_base_ms, failure_max_ms;
    uint64_t query_timeout_ms; /* dns_query_timeout, default 5 s */
} sharp_dfp_settings_t;

typedef struct sharp_dfp_cache {
    char *name;
    sharp_dfp_settings_t set;
    /* the resolver settings and, once started, the c-ares channel (only
     * its resolver fields and run time state are used) */
    sharp_dns_cluster_t dns;
    uint8_t *config; /* the DnsCacheConfig, packed: another with the name must be equal */
    size_t config_len;
    char **preresolve; /* preresolve_hostnames as "name:port" */
    uint32_t npreresolve;
    uv_mutex_t lock;             /* guards the map and the queue */
    sharp_dfp_entry_t **buckets; /* by key hash, nbuckets a power of two */
    uint32_t nbuckets, nentries;
    sharp_dfp_entry_t **queued; /* new entries for the main thread to resolve */
    uint32_t nqueued, queued_cap;
    _Atomic int64_t pending; /* streams waiting for a resolution (the circuit breaker) */
    /* main thread */
    uv_async_t async;
    bool started, stopping;
    uint64_t rng;
    sharp_stats_t *stats;
    struct {
        sharp_stat_id_t dns_query_attempt, dns_query_success, dns_query_failure, dns_query_timeout,
            host_address_changed, host_added, host_removed, host_overflow, dns_rq_pending_overflow,
            num_hosts;
    } st;
    struct sharp_dfp_cache *next; /* the registry */
} sharp_dfp_cache_t;

/* One host of the cache. The fields after the key are guarded by the
 * cache's lock; the run-time ones are the main thread's. */
struct sharp_dfp_entry {
    sharp_dfp_entry_t *next; /* bucket chain */
    char *key;               /* "name:port" */
    char *name;              /* what is resolved (an IPv6 literal without brackets) */
    uint16_t port;
    bool first_done; /* the first resolution completed */
    bool has_addr;
    struct sockaddr_storage addr; /* the address with the port */
    char details[96];             /* the last failure's, Envoy's host details */
    uint64_t epoch;               /* when it last changed (first_done or address) */
    _Atomic uint64_t last_used_ms;
    /* main thread */
    sharp_dfp_cache_t *cache;
    bool started, resolving, removed;
    int step;                      /* family step of the running lookup */
    struct sockaddr_storage found; /* its first address so far */
    bool has_found;
    int last_status;         /* c-ares status of the running lookup's last step */
    struct dfp_query *query; /* the running lookup, NULL when none */
    uv_timer_t refresh;      /* the next resolution, then the query timeout */
    uv_timer_t timeout;
    struct sharp_backoff *backoff;
    uint32_t open_handles;
};

/* ---- configuration (main thread) ---- */

/* The cache of this name: an existing one when `config` (the packed
 * DnsCacheConfig) is equal to its, else NULL and an error; a new one
 * otherwise, taking `dns` (resolver settings), preresolve and settings.
 * With `check_only` nothing is registered (validation of a config). */
sharp_dfp_cache_t *sharp_dfp_cache_get(const char *name, const sharp_dfp_settings_t *set,
                                       const sharp_dns_cluster_t *dns, char **preresolve,
                                       uint32_t npreresolve, const uint8_t *config,
                                       size_t config_len, char *err, size_t errlen);
/* A cache that is not registered (unit tests): no stats, no loop. */
sharp_dfp_cache_t *sharp_dfp_cache_new(const char *name, const sharp_dfp_settings_t *set);
void sharp_dfp_cache_free(sharp_dfp_cache_t *c);
void sharp_dfp_default_settings(sharp_dfp_settings_t *s);

/* ---- the server (main thread) ---- */

/* Starts every registered cache on `loop` (stats in `stats`, workers woken
 * with wake(arg)) and each cache registered later at once: c-ares
 * channels, the preresolved hosts. */
int sharp_dfp_start(uv_loop_t *loop, sharp_stats_t *stats, void (*wake)(void *arg), void *arg,
                    char *err, size_t errlen);
/* Stops resolving and closes the caches' handles (the loop then runs
 * their close callbacks); the caches are freed by sharp_dfp_free_all. */
void sharp_dfp_stop(void);
void sharp_dfp_free_all(void);

/* ---- workers ---- */

typedef enum {
    SHARP_DFP_IN_CACHE, /* *out is the host's state */
    SHARP_DFP_LOADING,  /* resolution started or running: wait */
    SHARP_DFP_OVERFLOW, /* max_hosts reached: host_overflow counted */
} sharp_dfp_status_t;

/* What a lookup found of a host whose first resolution is complete. */
typedef struct sharp_dfp_result {
    bool has_addr;
    struct sockaddr_storage addr;
    char details[96];
} sharp_dfp_result_t;

/* Envoy's normalizeHostForDfp: the authority `host` with ":port" added
 * when it has no port of its own. Writes at most cap bytes; false when
 * it does not fit or the host is empty. */
bool sharp_dfp_normalize(const char *host, size_t len, uint16_t default_port, char *out,
                         size_t cap);

/* Any thread: the host `key` (normalized). A host in the cache is marked
 * used at now_ms. A new host is queued and the main thread woken (when
 * the cache is started). */
sharp_dfp_status_t sharp_dfp_load(sharp_dfp_cache_t *c, sharp_stats_shard_t *sh, const char *key,
                                  uint64_t now_ms, sharp_dfp_result_t *out);
/* Any thread: the current address of host `key` (and marks it used);
 * false when the cache has no address for it. */
bool sharp_dfp_address(sharp_dfp_cache_t *c, const char *key, uint64_t now_ms,
                       struct sockaddr_storage *out);
/* Whether host `key` still has address `a` (a cluster keeps its host
 * while true). */
bool sharp_dfp_current(sharp_dfp_cache_t *c, const char *key, const struct sockaddr_storage *a);
/* Whether host `key` is done (first resolution complete) or gone: a
 * waiting stream resumes then. */
bool sharp_dfp_settled(sharp_dfp_cache_t *c, const char *key);

/* The circuit breaker of pending requests: false (dns_rq_pending_overflow
 * counted) when max_pending streams already wait. */
bool sharp_dfp_breaker_acquire(sharp_dfp_cache_t *c, sharp_stats_shard_t *sh);
void sharp_dfp_breaker_release(sharp_dfp_cache_t *c);

/* A stream waiting for a host on its worker: listed in the worker's
 * waiters until `done` runs (after which it is off the list) or the
 * stream removes it (sharp_dfp_wait_cancel). */
typedef struct sharp_dfp_waiter {
    struct sharp_dlist *link_prev, *link_next; /* a sharp_dlist_t in the worker's dfp_waiters */
    sharp_dfp_cache_t *cache;
    char key[300];
    void (*done)(struct sharp_dfp_waiter *w);
} sharp_dfp_waiter_t;

void sharp_dfp_wait(struct sharp_worker *w, sharp_dfp_waiter_t *wt);
void sharp_dfp_wait_cancel(sharp_dfp_waiter_t *wt);
/* Worker, at each wake-up: resumes the waiters whose host is settled when
 * some cache changed since the last call. */
void sharp_dfp_worker_poll(struct sharp_worker *w);

/* ---- the main thread's work, exposed for unit tests ---- */

/* Takes the queued entries (at most cap) off the queue; returns how many. */
uint32_t sharp_dfp_take_queued(sharp_dfp_cache_t *c, sharp_dfp_entry_t **out, uint32_t cap);
/* A resolution of e ended: ok with address `a` (port set) or failed with
 * `details`. Counts success or failure, sets the address when it is new
 * or changed; returns whether workers must be woken (first resolution or
 * changed address). */
bool sharp_dfp_resolved(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, bool ok,
                        const struct sockaddr_storage *a, const char *details);
/* The refresh timer of e fired at now_ms: true when e was not used for
 * host_ttl and is removed from the map (host_removed counted; the caller
 * frees it), false when it is to be resolved again. */
bool sharp_dfp_expire(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, uint64_t now_ms);
void sharp_dfp_entry_free(sharp_dfp_entry_t *e);
/* The delay before e's next resolution after a success or failure. */
uint64_t sharp_dfp_next_delay(sharp_dfp_cache_t *c, sharp_dfp_entry_t *e, bool ok);
/* The current number of entries (num_hosts). */
uint32_t sharp_dfp_nhosts(sharp_dfp_cache_t *c);

#endif
