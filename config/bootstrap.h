/* bootstrap.h: loading an Envoy v3 bootstrap (file, --config-yaml, or the
 * embedded default) and translating it into the runtime snapshot. */
#ifndef SHARP_CONFIG_BOOTSTRAP_H
#define SHARP_CONFIG_BOOTSTRAP_H

#include "http/route.h"
#include "server.h"

#include <sys/socket.h>

typedef struct sharp_config {
    struct sharp_config_doc *doc;
    const ProtobufCMessage *bootstrap; /* envoy.config.bootstrap.v3.Bootstrap, owned by doc */
    bool has_admin;
    /* admin.allow_paths: the request targets (path and query) the admin
     * server serves, any other gets 403; none: every target */
    sharp_string_matcher_t *admin_allow;
    size_t nadmin_allow;
    char admin_address[SHARP_ADDR_STRLEN];
    struct sockaddr_storage admin_addr;
    socklen_t admin_addrlen;
    uint32_t admin_pipe_mode; /* admin.address.pipe.mode */
    char source[512];
    bool merged; /* -c and --config-yaml: no line numbers in later errors */
    /* bootstrap_extensions' ScalingAgent (scaling_config.h), NULL without
     * one; proxy/scaling.c takes its policies when the server runs */
    struct sharp_scaling_agent_config *scaling;
    /* stats_sinks (proxy/statsd.h), sent at every stats flush, every
     * stats_flush_interval_ms (the bootstrap's stats_flush_interval) */
    struct sharp_statsd_sink **stats_sinks;
    size_t nstats_sinks;
    /* the metrics service sinks (proxy/metrics_service.h), flushed after
     * the statsd ones */
    struct sharp_metrics_sink **metrics_sinks;
    size_t nmetrics_sinks;
    /* the OpenTelemetry stats sinks (proxy/otlp_sink.h), flushed last */
    struct sharp_otlp_sink **otlp_sinks;
    size_t notlp_sinks;
    uint64_t stats_flush_interval_ms;
    bool stats_flush_on_admin; /* no timer: the admin's stats endpoints flush */
    bool enable_dispatcher_stats; /* proxy/dispatcher_stats.h */
} sharp_config_t;

/* The DNS cache of a dynamic forward proxy filter's dns_cache_config
 * (envoy.extensions.common.dynamic_forward_proxy.v3.DnsCacheConfig):
 * the one its name has when the settings are equal, else a new one
 * (upstream/dfp.h). NULL and err on a bad config. */
struct sharp_dfp_cache;
struct sharp_dfp_cache *sharp_config_dns_cache(const ProtobufCMessage *pb, sharp_server_t *srv, char *err,
                                               size_t errlen);

/* The bootstrap used when neither -c nor --config-yaml is given. */
extern const char sharp_default_bootstrap_yaml[];

/* Parses the bootstrap named by the options (or the default one); with both
 * -c and --config-yaml, the YAML is merged over the file as in Envoy
 * (protobuf MergeFrom, see sharp_config_merge). Returns 0, or -1 with a message naming the
 * field path and line in err. */
int sharp_config_load(const sharp_options_t *o, sharp_config_t **out, char *err, size_t errlen);
/* Validates and translates the bootstrap into a snapshot, registering stats
 * in srv->stats. Returns NULL with a message in err. */
sharp_snapshot_t *sharp_config_build_snapshot(sharp_config_t *c, sharp_server_t *srv, char *err,
                                              size_t errlen);
void sharp_config_free(sharp_config_t *c);

/* A listener from an LDS resource (envoy.config.listener.v3.Listener) of
 * the file `source`, its errors naming `where`; its inline routes' clusters
 * must be in the current snapshot (srv->snap). Without its sockets (the
 * caller's). Its TLS contexts may name the bootstrap's static secrets and
 * SDS secrets (the snapshot's providers, tls/sds.h: a chain whose secret
 * has not come has an empty slot, and sharp_sds_waiting says so). NULL
 * with a message in err. */
sharp_listener_config_t *sharp_config_build_listener(sharp_server_t *srv, const ProtobufCMessage *pb,
                                                     const char *source, const char *where, char *err, size_t errlen);

struct Envoy__Config__Endpoint__V3__ClusterLoadAssignment;
/* A cluster from a CDS resource (envoy.config.cluster.v3.Cluster) of the
 * file `source`, its errors naming `where`; its TLS context takes secrets
 * as a listener's does. NULL with a message in err. */
sharp_cluster_t *sharp_config_build_cluster(sharp_server_t *srv, const ProtobufCMessage *pb, uint32_t index,
                                            const char *source, const char *where, char *err, size_t errlen);
/* The hosts of an EDS ClusterLoadAssignment for cluster c: hosts whose
 * address the cluster has had are reused (their health check, outlier and
 * request state stay), the others are new. *changed tells whether the set
 * differs from the cluster's current one (membership, weight, priority or
 * EDS health). 0, or -1 with a message in err. */
int sharp_config_cla_hosts(sharp_cluster_t *c, const struct Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                           const char *path, sharp_host_t ***out, uint32_t *nout, bool *changed, char *err,
                           size_t errlen);

#endif
