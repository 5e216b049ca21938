/* host.h: one upstream endpoint of a cluster. Hosts are immutable config
 * except for their counters and health bits, which are atomics shared by all
 * workers (the way Envoy keeps per-host stats). */
#ifndef SHARP_UPSTREAM_HOST_H
#define SHARP_UPSTREAM_HOST_H

#include "common.h"
#include "net.h"
#include "stats.h"
#include "kernel/signals.h"
#include "upstream/diagnosis.h"

#include <stdatomic.h>
#include <sys/socket.h>

/* Health bits (any set bit makes the host unhealthy for load balancing). */
enum {
    SHARP_HOST_FAILED_ACTIVE_HC = 1u << 0,   /* active health check failed */
    SHARP_HOST_FAILED_OUTLIER = 1u << 1,     /* ejected by outlier detection */
    SHARP_HOST_FAILED_EDS_HEALTH = 1u << 2,  /* load_assignment health_status says unhealthy */
    SHARP_HOST_PENDING_REMOVAL = 1u << 3,
};

/* The outlier breaker's view of a host (upstream/outlier.h). Closed: normal
 * traffic. Open: ejected (SHARP_HOST_FAILED_OUTLIER is set, or about to be).
 * Half-open: the ejection time is over; the load balancer admits at most
 * `probe_budget` requests until a result closes or reopens the breaker. */
typedef enum {
    SHARP_HOST_BREAKER_CLOSED,
    SHARP_HOST_BREAKER_OPEN,
    SHARP_HOST_BREAKER_HALF_OPEN,
} sharp_host_breaker_t;

/* An endpoint's health_check_config (Envoy's Endpoint.HealthCheckConfig):
 * where and how active health checks reach it. */
typedef struct sharp_host_hc {
    struct sockaddr_storage addr; /* address: checked there instead of the host's */
    socklen_t addrlen;            /* 0: no address */
    uint16_t port;                /* port_value: the port checked (0: the address's own) */
    bool disabled;                /* disable_active_health_check: never checked */
    char hostname[128];           /* hostname: the checks' host header, over the cluster's */
} sharp_host_hc_t;

static inline bool sharp_host_hc_equal(const sharp_host_hc_t *a, const sharp_host_hc_t *b)
{
    return a->addrlen == b->addrlen && (!a->addrlen || !memcmp(&a->addr, &b->addr, a->addrlen)) &&
           a->port == b->port && a->disabled == b->disabled && !strcmp(a->hostname, b->hostname);
}

typedef struct sharp_host {
    char address[SHARP_ADDR_STRLEN]; /* "ip:port" or a pipe's path, as printed by /clusters and %UPSTREAM_HOST% */
    char hostname[128];            /* endpoint.hostname, may be empty */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t weight;               /* load_balancing_weight, >= 1 */
    uint32_t priority;             /* locality priority */
    uint32_t locality;             /* interned (region, zone, sub_zone), upstream/zone_lb.h; 0: none */
    /* its LocalityLbEndpoints' load_balancing_weight, 0 when not set (read
     * by locality-weighted balancing only, upstream/zone_lb.h) */
    uint32_t locality_weight;
    sharp_host_hc_t hc; /* health_check_config; all zero without it */
    /* its LocalityLbEndpoints' metadata (upstream/locality_md.h), shared
     * with the locality's other hosts; NULL without. Replaced by the main
     * thread, loaded with a reference by workers. */
    _Atomic(struct sharp_locality_md *) locality_md;
    /* the endpoint's filter_metadata["envoy.lb"] in canonical form
     * (upstream/subset.h), NULL without; read and replaced on the main
     * thread only (workers see subsets, not metadata) */
    struct sharp_lbmeta *lb_meta;
    /* Position in the cluster's newest host set (cluster.h), rewritten by
     * the main thread when a DNS cluster publishes a new set; a worker that
     * still uses an older set checks it (sharp_cluster_pool). */
    _Atomic uint32_t index;
    _Atomic uint32_t health_flags; /* SHARP_HOST_* */
    _Atomic int64_t active_rq;     /* requests in flight on all workers (least-request LB) */
    _Atomic int64_t active_cx;
    _Atomic uint64_t rq_total, rq_success, rq_error, cx_total, cx_connect_fail, rq_timeout;
    /* the load reporter's (lrs.h) latches of rq_success, rq_error and
     * rq_total: their values at its previous report; main thread only */
    uint64_t lrs_success, lrs_error, lrs_total;
    /* the host fails active health checks and the last failure was a
     * timeout (Envoy's ACTIVE_HC_TIMEOUT); main thread only */
    bool hc_timeout;
    _Atomic uint32_t breaker;      /* sharp_host_breaker_t, written by outlier.c */
    _Atomic int32_t probe_budget;  /* half-open: requests still admitted (lb.c takes them) */
    /* Bumped when the host's connections are to be drained (it failed an
     * active health check, or outlier detection ejected it); each worker's
     * pool compares it with the value it last acted on (upstream/pool.h). */
    _Atomic uint32_t drain_gen;
    /* outlier detection's state of the host (upstream/outlier.h), NULL
     * without a detector; set before the host is published to workers */
    struct sharp_outlier_host *outlier;
    /* kernel TCP signals (kernel/kernel.h): the TCP_INFO fallback's
     * atomics, which workers add to, and the main thread's signals */
    sharp_host_kernel_t kern;
    /* What still uses a host that left its cluster (upstream/cluster.h's
     * sharp_cluster_collect_departed frees it once all are zero): the host
     * sets that list it, the pools made for it (a retired pool lives until
     * its last connection closes) and the UDP proxy's sessions to it
     * (udp/udp_proxy.c); with active_rq, the tries in flight. */
    _Atomic uint32_t nsets, npools;
    /* ORIGINAL_DST clusters (upstream/original_dst.h): chosen since the
     * last cleanup pass; removed by the cleanup (workers drop its pools) */
    _Atomic bool odst_used, odst_removed;
    uint32_t unused_passes; /* main thread: collections that found it unused */
    /* the host's diagnosis (upstream/diagnosis.h): the workers' counts of
     * answers, latency, 5xx and resets, and the main thread's verdict */
    sharp_host_diag_t diag;
} sharp_host_t;

/* Whether h is one of set[0..n) (hosts earlier tries used, for example). */
static inline bool sharp_host_listed(const sharp_host_t *h, sharp_host_t *const *set, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (set[i] == h) return true;
    return false;
}

static inline bool sharp_host_healthy(const sharp_host_t *h)
{
    return atomic_load_explicit(&h->health_flags, memory_order_relaxed) == 0;
}

/* Counts every change of any host's health_flags, so that what a worker
 * derives from the health of a set of hosts (the zone routing plan) is
 * remade only when some host's health changed. The flags change only
 * through the three functions below, which count it. */
extern _Atomic uint64_t sharp_host_health_epoch;
static inline uint64_t sharp_host_health_epoch_get(void)
{
    return atomic_load_explicit(&sharp_host_health_epoch, memory_order_acquire);
}
/* Sets `bits`; returns the flags before. */
static inline uint32_t sharp_host_health_set(sharp_host_t *h, uint32_t bits)
{
    uint32_t was = atomic_fetch_or_explicit(&h->health_flags, bits, memory_order_release);
    if ((was | bits) != was) atomic_fetch_add_explicit(&sharp_host_health_epoch, 1, memory_order_release);
    return was;
}
/* Clears `bits`; returns the flags before. */
static inline uint32_t sharp_host_health_clear(sharp_host_t *h, uint32_t bits)
{
    uint32_t was = atomic_fetch_and_explicit(&h->health_flags, ~bits, memory_order_release);
    if (was & bits) atomic_fetch_add_explicit(&sharp_host_health_epoch, 1, memory_order_release);
    return was;
}
/* Replaces all the flags. */
static inline void sharp_host_health_store(sharp_host_t *h, uint32_t flags)
{
    uint32_t was = atomic_exchange_explicit(&h->health_flags, flags, memory_order_release);
    if (was != flags) atomic_fetch_add_explicit(&sharp_host_health_epoch, 1, memory_order_release);
}
/* The outlier breaker decides whether a balancer may pick the host too:
 * its changes count in the same epoch. */
static inline void sharp_host_breaker_store(sharp_host_t *h, uint32_t to)
{
    uint32_t was = atomic_exchange_explicit(&h->breaker, to, memory_order_release);
    if (was != to) atomic_fetch_add_explicit(&sharp_host_health_epoch, 1, memory_order_release);
}
/* Moves the breaker from `from` to `to` when it is still at `from`. */
static inline bool sharp_host_breaker_cas(sharp_host_t *h, uint32_t from, uint32_t to)
{
    if (!atomic_compare_exchange_strong_explicit(&h->breaker, &from, to, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return false;
    atomic_fetch_add_explicit(&sharp_host_health_epoch, 1, memory_order_release);
    return true;
}

#endif
