/* udp_proxy.h: UDP listeners and Envoy's UDP proxy listener filter
 * (envoy.filters.udp_listener.udp_proxy).
 *
 * A UDP listener has one SO_REUSEPORT datagram socket per worker
 * (listen_socket.h; the kernel hashes a peer's datagrams to one of them, so
 * a downstream peer always meets the same worker) and no filter chains: its
 * datagrams go to the UDP proxy. A session is Envoy's ActiveSession: the
 * peer's address (plus the upstream host with per-packet load balancing)
 * bound to a host the cluster's balancer picked and to an upstream UDP
 * socket of its own, connected to that host; datagrams are relayed both
 * ways until the session has been idle for idle_timeout. The config is
 * built on the main thread (config/udp_proxy_config.c) and immutable; the
 * sessions live on the worker that owns the socket (udp_proxy.c). */
#ifndef SHARP_UDP_PROXY_H
#define SHARP_UDP_PROXY_H

#include "common.h"
#include "stats.h"

#include <uv.h>

struct sharp_worker;
struct sharp_listener_config;
struct sharp_matcher;

/* A matcher action: envoy.extensions.filters.udp.udp_proxy.v3.Route */
typedef struct sharp_udp_route {
    char *cluster;
    char *path; /* the cluster field's config path, for errors */
} sharp_udp_route_t;

typedef struct sharp_udp_proxy_config {
    char *stat_prefix;
    sharp_udp_route_t route;        /* `cluster` */
    struct sharp_matcher *matcher;  /* or the matcher (actions: sharp_udp_route_t) */
    /* every route: &route, or the matcher's actions (not owned), for the
     * load's check of their clusters */
    sharp_udp_route_t **routes;
    uint32_t nroutes;
    uint64_t idle_timeout_ms;       /* default 60 s */
    bool per_packet_lb;             /* use_per_packet_load_balancing */
    uint32_t downstream_max_rx; /* udp_listener_config.downstream_socket_config.max_rx_datagram_size: 1500 */
    uint32_t upstream_max_rx;   /* upstream_socket_config.max_rx_datagram_size: 1500 */
    struct {
        sharp_stat_id_t no_route, rx_bytes, rx_datagrams, rx_errors, total, tx_bytes, tx_datagrams, tx_errors,
            idle_timeout, active;
    } st; /* udp.<stat_prefix>.downstream_sess_* and idle_timeout */
    sharp_stat_id_t rx_datagram_dropped; /* listener.<address>.udp.downstream_rx_datagram_dropped */
    /* udp.<stat_prefix>.downstream_sess_no_route counts a datagram whose
     * cluster is an aggregate (not supported by the UDP proxy: refused at
     * load for a static one; one from CDS fails here, with an error log) */
} sharp_udp_proxy_config_t;

void sharp_udp_proxy_config_free(sharp_udp_proxy_config_t *c);

/* A worker's state of one UDP listening socket: its sessions. */
typedef struct sharp_udp_listener sharp_udp_listener_t;

/* Starts receiving on h (opened on the socket, h->data free for this) for
 * listener l. NULL (h untouched) when libuv refuses to read it. */
sharp_udp_listener_t *sharp_udp_listener_open(struct sharp_worker *w, const struct sharp_listener_config *l,
                                              uv_udp_t *h);
/* Another version of the listener takes the socket (LDS): the sessions of
 * the old one end (their stats are its), new datagrams take l. */
void sharp_udp_listener_update(sharp_udp_listener_t *u, const struct sharp_listener_config *l);
/* Stops receiving and ends every session; the caller closes h afterwards. */
void sharp_udp_listener_close(sharp_udp_listener_t *u);

#endif
