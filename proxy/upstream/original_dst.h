/* original_dst.h: Envoy's ORIGINAL_DST cluster (lb_policy CLUSTER_PROVIDED).
 * It has no configured endpoints: the host of a request or TCP connection
 * is its original destination, the downstream connection's local address
 * as the original_dst listener filter restored it (SO_ORIGINAL_DST), or
 * with original_dst_lb_config.use_http_header the "ip:port" of a request
 * header, with upstream_port_override replacing the port.
 *
 * Hosts are made on demand by the worker that first needs an address, as
 * Envoy's OriginalDstCluster::LoadBalancer does: under the cluster's mutex
 * it finds the address's host in the cluster's shared map or makes it (the
 * only lock, taken when a worker meets an address its own map does not
 * have). Each worker keeps its own map address -> host with that host's
 * pools (sharp_odst_local_t, in its sharp_cluster_local_t), so a request to
 * a known destination takes no lock. The main thread, every housekeeping
 * pass, adopts the hosts workers made (sharp_cluster_adopt_host) and
 * publishes the map as the cluster's host set, which /clusters and the
 * membership gauges read; every cleanup_interval it removes the hosts that
 * were not chosen since the previous cleanup and have no connection or
 * request (Envoy's cleanup() with original_dst_rely_on_idle_timeout). A
 * removed host is flagged: workers retire its pools (in flight requests
 * finish), and the cluster frees it like any host that left its set, once
 * no set, pool or try holds it (sharp_cluster_collect_departed). */
#ifndef SHARP_UPSTREAM_ORIGINAL_DST_H
#define SHARP_UPSTREAM_ORIGINAL_DST_H

#include "common.h"
#include "upstream/host.h"
#include "upstream/host_index.h"

#include <sys/socket.h>
#include <uv.h>

struct sharp_cluster;
struct sharp_cluster_local;
struct sharp_headers;
struct sharp_pool;
struct sharp_stats_shard;
struct sharp_upstream_env;

/* The cluster's settings and its shared host map. */
typedef struct sharp_odst {
    /* original_dst_lb_config.use_http_header: the header's lower-case
     * name (http_header_name, default x-envoy-original-dst-host), NULL
     * when unset */
    char *header;
    uint32_t port_override; /* upstream_port_override, 0: none */
    bool has_port_override;
    uint64_t cleanup_ms;    /* cleanup_interval, default 5000 */
    /* envoy.clusters.dynamic_forward_proxy: the DNS cache its hosts come
     * from (upstream/dfp.h), NULL for ORIGINAL_DST. Such a cluster keeps
     * its hosts in this map too, one per cache host ("name:port") and
     * address, named by the host's name (SNI and SAN checks); the cleanup
     * then removes, every pass, the hosts whose cache host is gone or has
     * another address. */
    struct sharp_dfp_cache *dfp;
    uint16_t dfp_default_port; /* 443 with TLS, else 80 */
    uint64_t next_cleanup_ms; /* main thread: loop time of the next cleanup */
    uv_mutex_t lock;        /* guards what follows */
    sharp_host_index_t index; /* the current hosts by address */
    sharp_host_t **hosts;   /* the same hosts, in the order they came */
    uint32_t nhosts, cap;
    /* hosts workers made since the main thread last adopted them */
    sharp_host_t **fresh;
    uint32_t nfresh, fresh_cap;
} sharp_odst_t;

sharp_odst_t *sharp_odst_new(void);
/* With the cluster: frees the hosts the cluster has not adopted yet. */
void sharp_odst_free(sharp_odst_t *o);

/* Envoy's Network::Utility::parseInternetAddressAndPortNoThrow (v6only
 * false): "a.b.c.d:port" or "[v6]:port", the port 0..65535 as
 * absl::SimpleAtoi reads it. Returns false for anything else. */
bool sharp_odst_parse_address(const char *p, size_t n, struct sockaddr_storage *out);

/* The destination of a request (headers, NULL for a TCP connection) or
 * connection: the header's address when use_http_header is set and the
 * header is present and valid (an invalid value counts
 * original_dst_host_invalid), else the restored local address (NULL when
 * the connection's local address was not restored); the port override
 * applied. False when there is none. Pure but for the counter. */
bool sharp_odst_destination(const struct sharp_cluster *c, struct sharp_stats_shard *sh,
                            const struct sharp_headers *h, const struct sockaddr_storage *restored,
                            struct sockaddr_storage *out);

/* A dynamic forward proxy host's cache key: "<hostname>:<port>" ("[v6]:port"). */
void sharp_odst_dfp_key(const sharp_host_t *h, char *out, size_t cap);

/* Worker: the host of a destination (sharp_odst_destination), from the
 * worker's map or else the cluster's (made there when new); marks it used.
 * NULL when there is no destination (Envoy: no host, a 503 or a closed
 * TCP connection). */
sharp_host_t *sharp_odst_choose(struct sharp_cluster_local *cl, struct sharp_stats_shard *sh,
                                const struct sharp_headers *h, const struct sockaddr_storage *restored);

/* A worker's map of one ORIGINAL_DST cluster: its hosts and their pools. */
typedef struct sharp_odst_entry {
    sharp_host_t *host;
    struct sharp_pool *pools[2][2]; /* [priority][http2], created on first use */
} sharp_odst_entry_t;

typedef struct sharp_odst_local {
    sharp_odst_entry_t **e;  /* the entries */
    uint32_t n, cap;
    int32_t *slots;          /* entry index + 1 by address hash, 0: empty; nslots a power of two */
    uint32_t nslots;
} sharp_odst_local_t;

/* The pool of host h (chosen by sharp_odst_choose on this worker). */
struct sharp_pool *sharp_odst_pool(const struct sharp_upstream_env *env, struct sharp_cluster_local *cl, int prio,
                                   sharp_host_t *h, bool h2);
/* Worker: retires the pools of hosts the cleanup removed (and forgets them). */
void sharp_odst_local_sweep(struct sharp_cluster_local *cl);
/* Calls fn on each pool of the worker's map. */
void sharp_odst_local_each_pool(struct sharp_cluster_local *cl, void (*fn)(struct sharp_pool *p));
/* Retires (or, stopping, destroys) every pool and frees the map. */
void sharp_odst_local_free(struct sharp_cluster_local *cl, bool destroy);

/* Main thread, every housekeeping pass: adopts the hosts workers made,
 * runs the cleanup when due (now_ms: loop time) and publishes the host set
 * when it changed. */
void sharp_odst_sync(struct sharp_cluster *c, uint64_t now_ms);

#endif
