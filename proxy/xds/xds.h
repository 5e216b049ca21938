/* xds.h: configuration that changes at runtime (Envoy's xDS), on the main
 * thread: CDS clusters, EDS endpoints, RDS route tables, LDS listeners
 * (xds/lds.h) and RTDS runtime layers (runtime.h).
 *
 * A subscription delivers the state of the world for one resource type:
 * every resource of that type, and a version. Its transport is a file
 * (Envoy's filesystem subscription, xds/path_source.h) or a gRPC stream
 * (xds/mux.h: ADS, or a ConfigSource's own api_config_source stream, state
 * of the world or incremental); both feed the same entry point,
 * sharp_xds_watcher_t.on_update, which applies all the resources or none
 * and says why (Envoy's update_rejected, the NACK of a gRPC stream); CDS
 * and LDS, as Envoy's, apply the clusters and listeners they can and
 * reject the update naming the others. A watcher may take a resource it
 * keeps (setting its slot to NULL).
 *
 * A file is read when the subscription is made (the configuration is
 * refused if it cannot be); a gRPC subscription waits for its stream, and
 * the server starts its workers once every gRPC subscription made while
 * starting has had its first update, a rejection, a "does not exist" or its
 * initial_fetch_timeout (sharp_xds_initialize).
 *
 * An accepted update builds a new snapshot (snapshot.h: the bootstrap's
 * listeners and LDS's with the current clusters and route tables), which the server
 * hands to the workers (worker.h: a pending slot and a wake-up); a stream
 * keeps the snapshot, clusters and pools it began with, so no request is
 * lost to an update. EDS updates publish a new host set of the cluster
 * (upstream/cluster.h), keeping the hosts whose address stays. */
#ifndef SHARP_XDS_XDS_H
#define SHARP_XDS_XDS_H

#include "common.h"
#include "snapshot.h"
#include "stats.h"

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

struct sharp_server;
struct sharp_cluster;
struct sharp_sbuf;

/* What a subscription's transport calls with each response. Returns 0, or
 * -1 with the reason in err (the update is rejected: NACKed, counted as
 * update_rejected). EDS and RDS apply all or nothing; CDS and LDS, as
 * Envoy's CdsApiHelper and LdsApiImpl, apply the resources they can and
 * reject the update naming the others, whose previous versions stay: they
 * set refused[i] for each resource i they refused (refused is NULL when
 * the caller does not need to know, else n entries the caller zeroed). */
typedef struct sharp_xds_watcher {
    int (*on_update)(void *ud, ProtobufCMessage **resources, size_t n, const char *version, bool *refused,
                     char *err, size_t errlen);
    void *ud;
} sharp_xds_watcher_t;

typedef struct sharp_xds sharp_xds_t;
typedef struct sharp_xds_eds sharp_xds_eds_t;
typedef struct sharp_xds_sub sharp_xds_sub_t;

/* Whether a ConfigSource is a gRPC one (ads, or an api_config_source). */
bool sharp_xds_grpc_source(const ProtobufCMessage *config_source);
/* SDS over gRPC (tls/sds.h): a subscription to secret `name` on
 * config_source's stream (ADS, or an api_config_source of its own, GRPC or
 * DELTA_GRPC), with Envoy's stats under sds.<name>.; while the server
 * starts, its first update (or initial_fetch_timeout) holds the workers
 * back as every gRPC subscription does. NULL with the reason in err. */
sharp_xds_sub_t *sharp_xds_secret_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *name,
                                            const char *field, sharp_xds_watcher_t w, char *err, size_t errlen);
void sharp_xds_unsubscribe(sharp_xds_sub_t *s);
/* Whether the subscription's initial fetch is over (an update, accepted
 * or not, or initial_fetch_timeout), and what to call when it is (once). */
bool sharp_xds_sub_fetched(const sharp_xds_sub_t *s);
void sharp_xds_sub_on_fetched(sharp_xds_sub_t *s, void (*fn)(void *arg), void *arg);
/* A secret's initial fetch is over (tls/sds.c): listeners from LDS and
 * clusters from CDS warming on their secrets go on when none is awaited
 * any more. */
void sharp_xds_secrets_fetched(sharp_xds_t *x);

sharp_xds_t *sharp_xds_new(struct sharp_server *srv);
/* The node every gRPC request names (envoy.config.core.v3.Node), set by
 * sharp_xds_configure; NULL before. */
const ProtobufCMessage *sharp_xds_node(const sharp_xds_t *x);
/* Before the bootstrap is built: the node gRPC requests name, and the ADS
 * source (dynamic_resources.ads_config) with Envoy's checks. 0, or -1 with
 * the reason. */
int sharp_xds_configure(sharp_xds_t *x, const ProtobufCMessage *bootstrap, char *err, size_t errlen);
/* Once it is built: every gRPC source's cluster is a static, non-EDS,
 * HTTP/2 cluster of `snap` (Envoy's rule). 0, or -1 with the reason. */
int sharp_xds_check_sources(sharp_xds_t *x, const sharp_snapshot_t *snap, char *err, size_t errlen);
/* Starts watching every file subscription (main loop running). 0, or -1
 * with the reason. */
int sharp_xds_start(sharp_xds_t *x, uv_loop_t *loop, char *err, size_t errlen);
/* Opens the gRPC streams (after sharp_xds_start, once the static clusters
 * are ready) and calls `cb` once the initial fetch is over: at once without
 * gRPC subscriptions, else from the loop. */
void sharp_xds_initialize(sharp_xds_t *x, void (*cb)(void *arg), void *arg);
/* Stops the watches and the gRPC streams (shutdown). */
void sharp_xds_stop(sharp_xds_t *x);
void sharp_xds_free(sharp_xds_t *x);

/* A ConfigSource the file transport implements: path_config_source or the
 * deprecated path. Fills *path and *wdir (NULL when none); -1 with a
 * message naming `field` for the other sources (the subscriptions of
 * xds.c take ads and api_config_source before asking). */
int sharp_xds_config_source_path(const ProtobufCMessage *config_source, const char *field, const char **path,
                                 const char **wdir, char *err, size_t errlen);

/* RDS: the HCM's rds (Rds message). Reads a file now; returns the index
 * of the route table in every snapshot (sharp_hcm_config_t.rds_index), or
 * -1 with err. One subscription per source and route name, shared. */
int sharp_xds_rds_subscribe(sharp_xds_t *x, const ProtobufCMessage *rds, const char *stat_prefix, const char *field,
                            char *err, size_t errlen);
/* Whether the route configuration of sharp_xds_rds_subscribe's index has
 * had its initial fetch (an update, accepted or not, or its
 * initial_fetch_timeout; a file: at once). A listener from LDS warms until
 * then (xds/lds.h). */
bool sharp_xds_rds_fetched(const sharp_xds_t *x, int32_t index);
/* RTDS: a layered_runtime layer's rtds_layer (RtdsLayer message), filling
 * layer `layer` of the server's runtime. Reads a file now (refusing the
 * configuration if it cannot be read or its Runtime is refused); a gRPC
 * source's layer comes with the stream, and its initial fetch holds the
 * workers back as every gRPC subscription's does. Stats: Envoy's
 * runtime.update_* (one set for every RTDS layer). 0, or -1 with err. */
int sharp_xds_rtds_subscribe(sharp_xds_t *x, int layer, const ProtobufCMessage *rtds_layer, const char *field,
                             char *err, size_t errlen);
/* CDS: dynamic_resources.cds_config. Reads a file now (its clusters are
 * in the first snapshot). */
int sharp_xds_cds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen);
/* EDS: a cluster of type EDS. Reads a file now and fills the cluster's
 * hosts (before its first host set is made); a gRPC source fills them now
 * when its stream already has the resource, else when it comes. */
int sharp_xds_eds_subscribe(sharp_xds_t *x, struct sharp_cluster *c, const ProtobufCMessage *eds_cluster_config,
                            const char *field, char *err, size_t errlen);
/* Stops a cluster's EDS subscription and frees it (main thread). */
void sharp_xds_eds_free(sharp_xds_eds_t *e);

/* The snapshot of the bootstrap with the current dynamic resources, made
 * when the bootstrap has been built (server init) and after every accepted
 * update. */
void sharp_xds_publish(sharp_xds_t *x);
/* Between hold and release, publishing is put off to the release (an LDS
 * update publishes once, after the RDS files of its listeners were read). */
void sharp_xds_hold(sharp_xds_t *x);
void sharp_xds_release(sharp_xds_t *x);

/* LDS: dynamic_resources.lds_config (xds/lds.h). Reads the file now (after
 * CDS and EDS: its listeners' routes name their clusters); its listeners
 * are in the first snapshot. */
int sharp_xds_lds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen);
struct sharp_lds;
/* The listener manager, NULL without LDS. */
const struct sharp_lds *sharp_xds_lds(const sharp_xds_t *x);

/* /config_dump: the dynamic clusters and route configurations, as entries
 * of Envoy's ClustersConfigDump.dynamic_active_clusters and
 * RoutesConfigDump.dynamic_route_configs (version_info, the resource as an
 * Any, last_updated). `name_ok` filters by name. */
typedef struct sharp_xds_dump_entry {
    const char *version_info;
    const ProtobufCMessage *resource;
    uint64_t last_updated_us;
    /* the last update that refused this resource (Envoy's error_state:
     * details, version_info, last_update_attempt), NULL when none since the
     * last accepted one */
    const char *error_details, *error_version;
    uint64_t error_us;
} sharp_xds_dump_entry_t;
size_t sharp_xds_dynamic_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out);
size_t sharp_xds_dynamic_routes(const sharp_xds_t *x, sharp_xds_dump_entry_t **out);
/* Whether CDS has a cluster of that name warming (not in the snapshots
 * yet): a listener's routes may name it, as Envoy's validate_clusters
 * looks at active and warming clusters. */
bool sharp_xds_cluster_warming(const sharp_xds_t *x, const char *name);
/* ClustersConfigDump.dynamic_warming_clusters: CDS clusters not used yet. */
size_t sharp_xds_warming_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out);
/* The server's health checks started (after the first DNS resolutions):
 * CDS clusters warming until then begin their first round of checks. */
void sharp_xds_checks_started(sharp_xds_t *x);
const char *sharp_xds_cds_version(const sharp_xds_t *x);

#endif
