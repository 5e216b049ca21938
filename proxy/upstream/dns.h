/* dns.h: STRICT_DNS and LOGICAL_DNS clusters. The main thread resolves
 * each endpoint's name with c-ares on its own uv loop (uv_poll handles on
 * c-ares' sockets, a uv timer for its timeouts: never blocking) and
 * publishes the resulting hosts as the cluster's new host set
 * (upstream/cluster.h), which the workers pick up between two events.
 *
 * As Envoy's StrictDnsClusterImpl: every endpoint of load_assignment is a
 * resolve target with its own refresh timer; every address of every target
 * is a host (weight, priority and health_status of its endpoint); a host
 * whose address stays keeps its identity (stats, health). LOGICAL_DNS
 * (LogicalDnsCluster): one endpoint, one host, the first address of the
 * answer; when the address changes, new connections go to the new one
 * while connections already open keep theirs (their pools retire).
 *
 * The resolver is the cluster's own settings when it has resolvers of its
 * own, else the bootstrap's (Envoy's default resolver; config/bootstrap.c
 * copies them into the cluster): each cluster has a channel of its own.
 *
 * A target is resolved again dns_refresh_rate after a success (or its
 * answer's smallest TTL with respect_dns_ttl), and after a failure
 * (NXDOMAIN, no records of the family, timeout, server failure) after
 * dns_failure_refresh_rate's jittered exponential back-off (default: the
 * refresh rate). A failure keeps the target's previous hosts. */
#ifndef SHARP_UPSTREAM_DNS_H
#define SHARP_UPSTREAM_DNS_H

#include "common.h"
#include "stats.h"
#include "upstream/host.h"

#include <sys/socket.h>
#include <uv.h>

struct sharp_cluster;

/* Cluster.DnsLookupFamily */
typedef enum {
    SHARP_DNS_AUTO,         /* IPv6, then IPv4 when there is no IPv6 address */
    SHARP_DNS_V4_ONLY,
    SHARP_DNS_V6_ONLY,
    SHARP_DNS_V4_PREFERRED, /* IPv4, then IPv6 when there is no IPv4 address */
    SHARP_DNS_ALL,          /* both: IPv4, then IPv6 */
} sharp_dns_family_t;

typedef struct sharp_dns_target sharp_dns_target_t;

typedef struct sharp_dns_cluster {
    struct sharp_cluster *cluster;
    bool logical;
    /* wait_for_warm_on_init (default true): the server waits for the first
     * resolution; Envoy reads it for STRICT_DNS only */
    bool wait_for_warm;
    uint64_t refresh_ms;                 /* dns_refresh_rate, default 5000 */
    bool has_failure_rate;               /* dns_failure_refresh_rate set */
    uint64_t failure_base_ms, failure_max_ms;
    bool respect_ttl;                    /* respect_dns_ttl */
    uint64_t jitter_ms;                  /* dns_jitter: up to this much is added to each refresh */
    sharp_dns_family_t family;
    /* dns_resolvers / dns_resolution_config.resolvers / the c-ares config's,
     * the cluster's own or else the bootstrap's (Envoy's default resolver) */
    struct sockaddr_storage *resolvers;
    uint32_t nresolvers;
    /* CaresDnsResolverConfig.use_resolvers_as_fallback: the resolvers only
     * when c-ares found no name server in resolv.conf */
    bool resolvers_as_fallback;
    bool no_search;                      /* dns_resolver_options.no_default_search_domain */
    bool use_tcp;                        /* use_tcp_for_dns_lookups: queries over TCP */
    /* CaresDnsResolverConfig.query_timeout_seconds / query_tries (0: c-ares'
     * defaults, which are Envoy's: 5 s, 4 tries) */
    uint64_t query_timeout_ms;
    uint32_t query_tries;
    sharp_dns_target_t *targets;
    uint32_t ntargets;
    /* run time (main thread) */
    char owner[300]; /* who resolves, for logs: "cluster 'x'" */
    void *channel; /* ares_channel */
    uv_loop_t *loop;
    uv_timer_t ares_timer;
    struct dns_poll *polls;
    uint32_t awaiting_first; /* targets without a first result yet */
    uint32_t open_handles;
    bool started, stopping;
    void (*on_first)(void *arg);
    void *on_first_arg;
    uint64_t rng;
    struct {
        sharp_stat_id_t resolve_total, pending_resolutions, not_found, timeouts, get_addr_failure;
    } st; /* dns.cares.*, shared by all clusters as Envoy's one resolver scope */
} sharp_dns_cluster_t;

struct sharp_dns_target {
    sharp_dns_cluster_t *dc;
    char *name;              /* the endpoint's socket_address.address */
    uint16_t port;
    char hostname[128];      /* endpoint.hostname, else the name */
    uint32_t weight, priority, locality, health_flags;
    uint32_t locality_weight; /* the locality's load_balancing_weight, 0: none */
    sharp_host_hc_t hc;       /* the endpoint's health_check_config */
    struct sharp_lbmeta *lb_meta; /* the endpoint's "envoy.lb" metadata, copied to its hosts */
    struct sharp_locality_md *locality_md; /* its locality's metadata (a reference), shared with its hosts */
    sharp_host_t **hosts;    /* the last successful answer's hosts */
    uint32_t nhosts;
    uv_timer_t timer;
    struct sharp_backoff *backoff;
    int step;                /* which family of the lookup is asked (AUTO / V4_PREFERRED fall back, ALL both) */
    struct sockaddr_storage *addrs; /* the running lookup's addresses so far */
    uint32_t naddrs, ttl;           /* ... and their smallest TTL (UINT32_MAX: none yet) */
    bool resolving, got_first;
};

/* Adds a resolve target (the loader, once per lb_endpoint). */
void sharp_dns_add_target(sharp_dns_cluster_t *dc, const char *name, uint16_t port, const char *hostname,
                          uint32_t weight, uint32_t priority, uint32_t locality, uint32_t health_flags);
void sharp_dns_cluster_free(sharp_dns_cluster_t *dc);

/* Starts resolving every target of a DNS cluster on `loop` (main thread);
 * on_first runs once when every target has had its first answer or
 * failure (c-ares' timeout and tries bound the wait). 0, or -1 with a
 * message in err. */
int sharp_dns_start(struct sharp_cluster *c, uv_loop_t *loop, void (*on_first)(void *arg), void *arg, char *err,
                    size_t errlen);
/* Stops the timers and queries and closes the handles (the loop runs their
 * close callbacks). */
void sharp_dns_stop(struct sharp_cluster *c);
/* Whether handles of a stopped cluster are still closing: the cluster may
 * be freed only once they are closed. */
bool sharp_dns_closing(const struct sharp_cluster *c);

/* The c-ares channel alone, for another owner of resolutions (the
 * dynamic forward proxy's DNS cache, upstream/dfp.h): dc's resolver
 * settings (resolvers, no_search, use_tcp, query timeout and tries) and
 * dc->owner are set; targets are not used. Opens the channel on `loop`
 * (0, or -1 and err); close it with sharp_dns_channel_close, after which
 * dc may be freed once sharp_dns_channel_closing is false. Queries are
 * ares_getaddrinfo on dc->channel followed by
 * sharp_dns_process_timeouts(dc). */
int sharp_dns_channel_open(sharp_dns_cluster_t *dc, uv_loop_t *loop, char *err, size_t errlen);
void sharp_dns_channel_close(sharp_dns_cluster_t *dc);
static inline bool sharp_dns_channel_closing(const sharp_dns_cluster_t *dc)
{
    return dc->open_handles > 0;
}
void sharp_dns_process_timeouts(sharp_dns_cluster_t *dc);
/* The address family a lookup of `f` asks at step 0, 1 (-1: no more):
 * AUTO asks AAAA then A, V4_PREFERRED the reverse, ALL A then AAAA. */
int sharp_dns_family_of(sharp_dns_family_t f, int step);

/* Whether a c-ares channel (ares_channel) has only c-ares' default name
 * server, 127.0.0.1 alone: resolv.conf named none. Envoy then uses the
 * resolvers configured as a fallback (use_resolvers_as_fallback). */
bool sharp_dns_only_default_server(void *channel);

/* ---- the algorithms, exposed for unit tests ---- */

/* The hosts of a target after an answer: for each address, the host of
 * `old` with that address (same identity), else one of `spare` (hosts the
 * cluster had before and dropped, reused when the address comes back),
 * else a new host made from the target's endpoint settings. Writes at most
 * naddrs hosts to out and returns how many (duplicates are dropped); sets
 * *changed when the list differs from `old`. */
uint32_t sharp_dns_merge_hosts(const sharp_dns_target_t *t, sharp_host_t *const *old, uint32_t nold,
                               sharp_host_t *const *spare, uint32_t nspare,
                               const struct sockaddr_storage *addrs, uint32_t naddrs, sharp_host_t **out,
                               bool *changed);
/* The delay before the next resolution of a target: after a success the
 * refresh rate, or the answer's TTL (seconds, 0 = none) with respect_ttl;
 * after a failure the back-off's next value (or the refresh rate without
 * dns_failure_refresh_rate). A success resets the back-off. With
 * dns_jitter, a success's delay gets random() % jitter more. */
uint64_t sharp_dns_next_delay(const sharp_dns_cluster_t *dc, struct sharp_backoff *b, bool ok, uint32_t ttl_s,
                              uint64_t random);

#endif
