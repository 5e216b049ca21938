/* mux.h: SHARP's gRPC xDS client (Envoy's GrpcMuxImpl for state of the
 * world and NewGrpcMuxImpl for incremental xDS), on the main thread.
 *
 * A mux is one bidirectional stream to a management server, re-opened
 * after each end with a jittered back-off (grpc/client.h's retrying
 * stream). The ADS mux (dynamic_resources.ads_config) carries every type
 * on StreamAggregatedResources or DeltaAggregatedResources; a ConfigSource's
 * api_config_source gets a mux of its own on the type's service
 * (StreamClusters, DeltaRoutes...), as in Envoy.
 *
 * Subscribers add watches: a type and a resource name (EDS, RDS), or the
 * whole type (CDS, LDS: wildcard). What reaches a watch goes through the
 * same entry point as a file's contents (xds.h's watcher: its resources
 * applied, or an error and those it refused), so the transports differ
 * only in how resources arrive and how a rejection is reported:
 *
 * - state of the world: every response of a type is the whole set the
 *   subscription covers. A wildcard watch gets all of it (an absent
 *   resource is removed); a named watch gets its resource when the
 *   response has it (absence removes nothing, as Envoy's RDS and EDS).
 *   The next request of the type carries the version applied (ACK) or the
 *   previous one with error_detail (NACK), and the response's nonce.
 * - incremental: responses carry changed resources with their versions
 *   and removed names. The mux keeps the resources it has, so a wildcard
 *   watch still gets the whole set, and a named watch whose resource is
 *   removed (or does not exist) gets an empty update. A new stream starts
 *   with initial_resource_versions and every subscribed name.
 *
 * Every resource is decoded as its type and checked against the support
 * table (and for fields SHARP's protos do not have) before any watch sees
 * it; a response naming a resource twice is rejected; the error_detail of
 * a NACK (google.rpc.Status INTERNAL, truncated at 4096 bytes as Envoy)
 * names every invalid resource. Requests go out in Envoy's order on a new
 * stream (RTDS, CDS, EDS, LDS, RDS, SDS) and after that as they become due, through
 * an optional token bucket (rate_limit_settings). */
#ifndef SHARP_XDS_MUX_H
#define SHARP_XDS_MUX_H

#include "common.h"
#include "grpc/client.h"
#include "stats.h"

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

/* A resource type: its type URL and message, how its resources are named
 * and subscribed, and its own discovery service. */
typedef struct sharp_xds_type {
    const char *type_url;
    const ProtobufCMessageDescriptor *desc;
    const char *kind;      /* "cluster", for messages */
    const char *short_name; /* "cds", for logs */
    const char *sotw_path, *delta_path; /* the type's own service (api_config_source) */
    unsigned order;        /* requests on a new ADS stream go in this order: RTDS, CDS, EDS, LDS, RDS, SDS */
    bool wildcard;         /* CDS, LDS: the whole type is subscribed */
    const char *(*name)(const ProtobufCMessage *m);
    /* a named resource removed or absent (incremental) ends its watch's
     * initial fetch: EDS (EdsClusterImpl goes on without endpoints); not
     * RDS, whose removals Envoy ignores (RdsRouteConfigSubscription): the
     * initial fetch waits for the route configuration or the timeout */
    bool absent_ends_fetch;
} sharp_xds_type_t;

#define SHARP_XDS_NTYPES 6
extern const sharp_xds_type_t sharp_xds_type_rtds, sharp_xds_type_cds, sharp_xds_type_eds, sharp_xds_type_lds,
    sharp_xds_type_rds, sharp_xds_type_sds;

typedef struct sharp_xds_mux sharp_xds_mux_t;
typedef struct sharp_xds_mux_watch sharp_xds_mux_watch_t;

typedef struct sharp_xds_mux_config {
    const char *name;       /* in logs: "ads", "cluster_manager.cds" */
    const sharp_xds_type_t *only; /* NULL: ADS; else the one type of an api_config_source stream */
    bool delta;             /* DELTA_GRPC */
    bool node_first_only;   /* set_node_on_first_message_only */
    uint64_t backoff_base_ms, backoff_max_ms;
    bool rate_limited;      /* rate_limit_settings is set */
    uint32_t max_tokens;    /* default 100 */
    double fill_rate;       /* tokens per second, default 10 */
    const char *stats_prefix; /* "" for ADS ("control_plane.*"), "<subscription>." otherwise */
} sharp_xds_mux_config_t;

/* `node` is sent in requests and must outlive the mux. */
sharp_xds_mux_t *sharp_xds_mux_new(sharp_stats_t *stats, const sharp_xds_mux_config_t *cfg,
                                   const ProtobufCMessage *node);
/* Opens the stream on `client` (the main loop's) and arms the watches'
 * initial fetch timers. */
void sharp_xds_mux_start(sharp_xds_mux_t *m, uv_loop_t *loop, sharp_grpc_client_t *client);
/* Ends the stream and the timers (shutdown); the watches stay until freed. */
void sharp_xds_mux_stop(sharp_xds_mux_t *m);
/* Frees the mux and its watches (after stop, or never started). Safe from
 * inside one of its own callbacks: the memory goes once the callback has
 * returned. */
void sharp_xds_mux_free(sharp_xds_mux_t *m);
bool sharp_xds_mux_started(const sharp_xds_mux_t *m);

typedef enum {
    SHARP_XDS_FAIL_CONNECTION, /* the stream ended: Envoy's update_failure, nothing changes */
    SHARP_XDS_FAIL_TIMEOUT,    /* no update within initial_fetch_timeout: init_fetch_timeout */
    SHARP_XDS_FAIL_REJECTED,   /* the response was refused before any watch saw it (update_rejected) */
} sharp_xds_fail_t;

/* A resource a rejected response named, and why. */
typedef struct sharp_xds_resource_error {
    const char *name, *msg;
} sharp_xds_resource_error_t;

/* A resource of a wildcard type's response that uses what SHARP does not
 * implement: refused alone, as Envoy refuses a resource it cannot build,
 * while the rest of the response applies. */
typedef struct sharp_xds_refusal {
    const char *name, *why;
    ProtobufCMessage *resource; /* as received; the watcher may take it (set it to NULL) */
} sharp_xds_refusal_t;

typedef struct sharp_xds_mux_watcher {
    /* As xds.h's sharp_xds_watcher_t: 0, or -1 with the reason (the
     * response is NACKed). It may take a resource (its slot set to NULL).
     * A wildcard watch that applied part of an incremental response marks
     * the resources it refused in `refused` (n entries; NULL for the other
     * watches): the mux keeps the others as what the client has. A
     * wildcard watch also gets the resources the mux refused (refusals):
     * they are in `resources` at the version the client had, or absent when
     * new, and the response is NACKed naming them. */
    int (*on_update)(void *ud, ProtobufCMessage **resources, size_t n, const char *version, bool *refused,
                     sharp_xds_refusal_t *refusals, size_t nrefusals, char *err, size_t errlen);
    /* `detail` (the NACK's message), `version` and the resources it names
     * (errs) are set for SHARP_XDS_FAIL_REJECTED. */
    void (*on_failure)(void *ud, sharp_xds_fail_t why, const char *detail, const char *version,
                       const sharp_xds_resource_error_t *errs, size_t nerrs);
    void *ud;
} sharp_xds_mux_watcher_t;

/* Watches `name` of `type` (NULL for the whole of a wildcard type).
 * fetch_timeout_ms 0: no initial fetch timeout. The request telling the
 * server goes out from the next loop turn, with other changes made until
 * then. */
sharp_xds_mux_watch_t *sharp_xds_mux_watch(sharp_xds_mux_t *m, const sharp_xds_type_t *type, const char *name,
                                           uint64_t fetch_timeout_ms, const sharp_xds_mux_watcher_t *w);
/* Removes a watch (no callback after it); the name is unsubscribed when
 * no other watch wants it. */
void sharp_xds_mux_unwatch(sharp_xds_mux_watch_t *w);
/* The resource a named watch's name has in the mux (accepted earlier for
 * another watch of the same name, e.g. a cluster replaced by CDS, whose
 * new EDS watch then starts with the endpoints: Envoy's EDS cache), decoded
 * anew for the caller, with its version. NULL when the mux has none. */
ProtobufCMessage *sharp_xds_mux_cached(sharp_xds_mux_watch_t *w, const char **version);

/* The error_detail message of a NACK, as Envoy's truncateGrpcStatusMessage:
 * at most 4096 bytes, then "...(truncated)". Returns a new string. */
char *sharp_xds_truncate_status_message(const char *msg);

#endif
