/* health_check.h: active health checking of a cluster's hosts (Envoy's
 * cluster.health_checks), run on the main thread.
 *
 * Three layers, each usable alone:
 * - sharp_hc_config_t: the immutable settings of one HealthCheck, built by
 *   config/health_check_config.c and owned by the cluster.
 * - the state machine (sharp_hc_state_put, sharp_hc_interval): what one
 *   result does to a host's health and when the next check is due, with
 *   Envoy's rules. Pure functions: the unit tests drive them with a fake
 *   clock.
 * - sharp_health_checker_t: one session per checked host on the main loop,
 *   each with an interval timer, a timeout timer and at most one connection
 *   (its own small HTTP/1.1 client on llhttp, a TCP connect/send/receive
 *   check, or for gRPC checks an HTTP/2 client on nghttp2 calling
 *   grpc.health.v1.Health/Check). A result flips SHARP_HOST_FAILED_ACTIVE_HC in the host's atomic
 *   health flags; the workers' load balancers read them on every pick.
 *
 * Envoy semantics kept here: a host of a checked cluster starts failed and
 * the first result decides at once (one success makes it healthy); after
 * that, healthy_threshold consecutive successes clear the flag; an
 * unexpected HTTP status fails it at once, while timeouts and network
 * failures count towards unhealthy_threshold. A gRPC check passes when the
 * call ends with grpc-status 0 and one HealthCheckResponse saying SERVING;
 * any other answer (NOT_SERVING, UNKNOWN, another grpc-status, a non-200
 * status, a payload that does not decode) fails the host at once, as
 * Envoy's GrpcHealthCheckerImpl does.
 *
 * Not modelled: an answer with x-envoy-degraded counts in the degraded gauge
 * but the host stays an ordinary healthy host (SHARP's load balancers have
 * no degraded tier), and x-envoy-immediate-health-check-fail in a check's
 * answer has no extra effect (Envoy's EXCLUDED_VIA_IMMEDIATE_HC_FAIL); the
 * answer's status alone decides. The same header on an ordinary response
 * makes the router set SHARP_HOST_FAILED_ACTIVE_HC at once; the session
 * then treats the host as failed, to be restored by healthy_threshold
 * passing checks. */
#ifndef SHARP_UPSTREAM_HEALTH_CHECK_H
#define SHARP_UPSTREAM_HEALTH_CHECK_H

#include "common.h"
#include "stats.h"
#include "http/route.h"

#include <uv.h>

struct sharp_cluster;
struct sharp_snapshot;

typedef enum {
    SHARP_HC_HTTP,
    SHARP_HC_TCP,
    SHARP_HC_GRPC,
} sharp_hc_type_t;

/* A half-open status range [start, end). */
typedef struct {
    uint32_t start, end;
} sharp_hc_range_t;

typedef struct {
    uint8_t *data;
    size_t len;
} sharp_hc_payload_t;

/* cluster.<name>.health_check.* (Envoy's names). */
typedef struct {
    sharp_stat_id_t attempt, success, failure, network_failure, passive_failure, verify_cluster,
        healthy, degraded;
} sharp_hc_stats_t;

typedef struct sharp_hc_config {
    sharp_hc_type_t type;
    uint64_t timeout_ms;                     /* required */
    uint64_t interval_ms;                    /* required */
    uint64_t interval_jitter_ms;             /* default 0 */
    uint32_t interval_jitter_percent;        /* default 0 */
    uint64_t initial_jitter_ms;              /* default 0: the first check starts at once */
    uint64_t no_traffic_interval_ms;         /* default 60 s */
    uint64_t no_traffic_healthy_interval_ms; /* default no_traffic_interval */
    uint64_t unhealthy_interval_ms;          /* default interval */
    uint64_t unhealthy_edge_interval_ms;     /* default unhealthy_interval */
    uint64_t healthy_edge_interval_ms;       /* default interval */
    uint32_t unhealthy_threshold;            /* required */
    uint32_t healthy_threshold;              /* required */
    bool reuse_connection;                   /* default true */
    uint32_t alt_port;                       /* 0: the host's own port */
    /* HTTP */
    char *method; /* "GET" unless configured */
    char *path;
    char *host;                 /* Host header; NULL: the cluster name */
    bool http2;                 /* codec_client_type HTTP2: the check is an HTTP/2 stream */
    sharp_hc_range_t *expected; /* default [200, 201) */
    uint32_t nexpected;
    sharp_hc_range_t *retriable;
    uint32_t nretriable;
    sharp_header_ops_t headers; /* request_headers_to_add/remove (gRPC: initial_metadata) */
    /* gRPC */
    char *grpc_service;   /* HealthCheckRequest.service ("" checks the server) */
    char *grpc_authority; /* :authority; NULL: the cluster name */
    /* TCP */
    sharp_hc_payload_t send;     /* len 0: connect only */
    sharp_hc_payload_t *receive; /* each found in order in the reply */
    uint32_t nreceive;
    sharp_hc_stats_t st;
} sharp_hc_config_t;

void sharp_hc_config_free(sharp_hc_config_t *cfg);
/* Registers cluster.<cluster>.health_check.* in the store. */
void sharp_hc_stats_init(sharp_hc_config_t *cfg, sharp_stats_t *stats, const char *cluster);

/* ---- the state machine ---- */

/* What one check found. */
typedef enum {
    SHARP_HC_OK,
    SHARP_HC_DEGRADED,         /* OK, with x-envoy-degraded in the answer */
    SHARP_HC_FAILED,           /* an unexpected status or payload: fails at once */
    SHARP_HC_FAILED_RETRIABLE, /* a status in retriable_statuses: counts to the threshold */
    SHARP_HC_NETWORK,          /* connect failure, reset, protocol error */
    SHARP_HC_TIMEOUT,          /* no answer within `timeout` */
} sharp_hc_result_t;

/* Envoy's HealthTransition. */
typedef enum {
    SHARP_HC_UNCHANGED,
    SHARP_HC_CHANGE_PENDING, /* heading for a change, threshold not reached yet */
    SHARP_HC_CHANGED,
} sharp_hc_transition_t;

typedef struct {
    bool failed;      /* mirrors SHARP_HOST_FAILED_ACTIVE_HC */
    bool degraded;    /* the last success carried x-envoy-degraded */
    bool first_check; /* no result yet */
    bool timeout;     /* failed, and the last failure was a timeout (Envoy's ACTIVE_HC_TIMEOUT);
                       * cleared when the host becomes healthy */
    uint32_t num_healthy, num_unhealthy;
} sharp_hc_state_t;

/* A host about to be checked: failed until the first result. */
void sharp_hc_state_init(sharp_hc_state_t *st);
/* Applies one result and says how the host's health moved. */
sharp_hc_transition_t sharp_hc_state_put(const sharp_hc_config_t *cfg, sharp_hc_state_t *st,
                                         sharp_hc_result_t r);
static inline bool sharp_hc_result_ok(sharp_hc_result_t r)
{
    return r == SHARP_HC_OK || r == SHARP_HC_DEGRADED;
}
/* Milliseconds until the next check after a result (`ok` as above) that
 * caused transition `t`. Without traffic to the cluster ever (Envoy: no
 * upstream connection and no upstream bytes yet), no_traffic_interval, or
 * no_traffic_healthy_interval for a settled healthy host; otherwise
 * interval / unhealthy_interval, and the edge intervals while a change is
 * pending. Jitter (interval_jitter, interval_jitter_percent) is added from
 * `rng`; the result is at least 1. */
uint64_t sharp_hc_interval(const sharp_hc_config_t *cfg, bool has_traffic, bool ok,
                           sharp_hc_transition_t t, uint64_t *rng);
/* base + random % (percent of base) + random % jitter_ms, bounded by the
 * runtime keys health_check.min_interval / max_interval, at least 1. */
uint64_t sharp_hc_jitter(const sharp_hc_config_t *cfg, uint64_t base_ms, uint64_t jitter_ms,
                         uint64_t *rng);
/* Delay of a session's first check: 0 without initial_jitter. */
uint64_t sharp_hc_initial_delay(const sharp_hc_config_t *cfg, uint64_t *rng);
/* Whether an HTTP status is in expected_statuses / retriable_statuses. */
bool sharp_hc_status_expected(const sharp_hc_config_t *cfg, uint32_t status);
bool sharp_hc_status_retriable(const sharp_hc_config_t *cfg, uint32_t status);
/* Whether every payload of `want` occurs in `buf`, in order (Envoy's TCP
 * receive matching). */
bool sharp_hc_payload_match(const sharp_hc_payload_t *want, uint32_t nwant, const uint8_t *buf,
                            size_t len);

/* ---- the checker (main thread) ---- */

typedef struct sharp_health_checker sharp_health_checker_t;

/* Starts a session for every host of every cluster of `snap` that has a
 * health check (the snapshot is referenced until the checker is freed).
 * Returns NULL when no cluster has one. `on_initialized(arg)` is called
 * once, from the loop, when every host has had its first result (Envoy's
 * initial health-check round, which cluster initialization waits for);
 * never after sharp_health_checker_stop. */
sharp_health_checker_t *sharp_health_checker_start(uv_loop_t *loop, struct sharp_snapshot *snap,
                                                   sharp_stats_t *stats, void (*on_initialized)(void *),
                                                   void *arg);
/* Stops every check and closes every handle; the checker frees itself in
 * the last close callback, so the loop ends with nothing of it left. */
void sharp_health_checker_stop(sharp_health_checker_t *hc);
/* Whether the first round still runs (some host of the first round has no
 * result yet): on_initialized comes later. */
bool sharp_health_checker_initializing(const sharp_health_checker_t *hc);
/* A checked cluster's host set changed (a DNS answer, main thread): new
 * hosts get a session (and FAILED_ACTIVE_HC until their first check
 * passes), removed hosts' sessions stop. Call it before the workers get
 * the new set, so that they never see a new host as healthy. */
void sharp_health_checker_hosts_changed(sharp_health_checker_t *hc, struct sharp_cluster *c);
/* A cluster with a health check added after the start (CDS): its hosts get
 * sessions (FAILED_ACTIVE_HC until their first check passes) and the
 * checker holds it until it is removed; *hcp is created when NULL.
 * Returns the hosts of its first round: `on_first_round(arg)` runs once
 * every one has had its first result, never when it returns 0. */
uint32_t sharp_health_checker_add_cluster(sharp_health_checker_t **hcp, uv_loop_t *loop, sharp_stats_t *stats,
                                          struct sharp_cluster *c, void (*on_first_round)(void *), void *arg);
/* The same for a cluster that replaces `from` (still checked, removed by
 * the caller afterwards; may be NULL): a host of the same locality and
 * address as one of `from` keeps its health (and, with `same_checks`, its
 * session's consecutive counts and first-check state), as Envoy's
 * HdsCluster::update keeps its hosts. Its first check runs at once. */
uint32_t sharp_health_checker_add_cluster_from(sharp_health_checker_t **hcp, uv_loop_t *loop, sharp_stats_t *stats,
                                               struct sharp_cluster *c, const struct sharp_cluster *from,
                                               bool same_checks);
/* CDS removed or replaced a checked cluster: its sessions stop (its hosts
 * keep their last health), and the checker lets go of it. */
void sharp_health_checker_remove_cluster(sharp_health_checker_t *hc, struct sharp_cluster *c);

#endif
