/* snapshot.h: the immutable, reference-counted configuration the workers
 * run on. The main thread builds a snapshot from the bootstrap (and, later,
 * from xDS updates) and publishes it; a stream keeps a reference to the
 * snapshot it started with until it ends, so a config change never breaks a
 * request in flight. */
#ifndef SHARP_SNAPSHOT_H
#define SHARP_SNAPSHOT_H

#include "common.h"
#include "net.h"
#include "stats.h"
#include "http/filter.h"
#include "http/route.h"
#include "upstream/cluster.h"
#include "listener_match.h"
#include "proxy_protocol.h"

#include <stdatomic.h>
#include <sys/socket.h>

typedef struct sharp_access_log sharp_access_log_t;
struct sharp_local_reply;

/* The TCP proxy network filter (envoy.filters.network.tcp_proxy), the
 * second terminal network filter beside the HCM (http/tcp_proxy.c). */
typedef struct sharp_tcp_proxy_cluster {
    char *name;
    uint32_t weight;
    /* the subset load balancing criteria (upstream/subset.h form): the
     * filter's metadata_match "envoy.lb", a weighted cluster's merged over
     * it (Envoy's WeightedClusterEntry); NULL without */
    struct sharp_lbmeta *metadata_match;
} sharp_tcp_proxy_cluster_t;

typedef struct sharp_tcp_proxy_config {
    char *stat_prefix;
    /* cluster, or weighted_clusters (one entry per cluster, total_weight
     * their sum); a connection picks one when it begins */
    sharp_tcp_proxy_cluster_t *clusters;
    uint32_t nclusters;
    uint64_t total_weight;
    uint64_t idle_timeout_ms;       /* default 1 h, 0 disables */
    uint32_t max_connect_attempts;  /* default 1 */
    uint64_t max_duration_ms;       /* max_downstream_connection_duration, 0: none */
    double max_duration_jitter_pct; /* ..._jitter_percentage: up to this much longer, at random */
    /* access log entries besides the one at the close: when the upstream
     * connects, and every log_interval_ms (0: none) */
    bool log_on_connected;
    uint64_t log_interval_ms;
    /* tunneling_config: the bytes go over an HTTP CONNECT (or POST) stream
     * of the cluster's protocol; NULL without it */
    struct sharp_tcp_tunnel_config *tunnel;
    struct {
        sharp_stat_id_t cx_total, cx_no_route, tx_bytes_total, rx_bytes_total, paused_reading_total,
            resumed_reading_total, idle_timeout, max_duration;
    } st;
} sharp_tcp_proxy_config_t;

/* TcpProxy.TunnelingConfig (http/tcp_proxy.c). */
typedef struct sharp_tcp_tunnel_config {
    char *hostname; /* the CONNECT authority, or POST's :authority */
    /* the hostname's %...% operators, NULL when it is literal */
    struct sharp_access_log_format *host_fmt;
    bool use_post;
    char *post_path;            /* use_post's :path, default "/" */
    sharp_header_ops_t headers; /* headers_to_add (with %...% values) */
} sharp_tcp_tunnel_config_t;

typedef struct sharp_hcm_stats {
    sharp_stat_id_t rq_total, rq_xx[6], rq_time, rq_active, cx_total, cx_active, cx_http1_total,
        cx_http1_active, cx_destroy, cx_destroy_remote, cx_destroy_local, cx_protocol_error,
        cx_idle_timeout, cx_drain_close, rq_timeout, rq_idle_timeout, rx_bytes_total,
        tx_bytes_total, rq_http1_total, rq_completed, rq_rx_reset, rq_tx_reset, rq_overload_close,
        rq_ws_on_non_ws_route, cx_length, rq_response_before_rq_complete, rq_too_large,
        rq_failed_path_normalization, rq_redirected_with_normalized_path, rq_max_duration_reached,
        cx_max_duration_reached, cx_delayed_close_timeout, cx_upgrades_total, cx_upgrades_active,
        rq_header_timeout, cx_overload_disable_keepalive, cx_http2_total, cx_http2_active, rq_http2_total,
        rs_too_large;
    /* HTTP/1 and HTTP/2 codec stats, rooted at "http1." and "http2." as in
     * Envoy (shared by every HCM) */
    sharp_stat_id_t http1_dropped_headers_with_underscores, http1_requests_rejected_with_underscores;
    sharp_stat_id_t http2_dropped_headers_with_underscores, http2_requests_rejected_with_underscores;
    /* HTTP/2 codec protection (Envoy's http2.* of ProtocolConstraints,
     * keepalive and resets) */
    sharp_stat_id_t http2_outbound_flood, http2_outbound_control_flood, http2_inbound_empty_frames_flood,
        http2_inbound_priority_frames_flood, http2_inbound_window_update_frames_flood, http2_rx_reset,
        http2_tx_reset, http2_header_overflow, http2_rx_messaging_error, http2_keepalive_timeout,
        http2_streams_active, http2_pending_send_bytes;
    sharp_stat_id_t rq_too_many_premature_resets;
    sharp_stat_id_t no_route, no_cluster, rq_direct_response, rq_redirect;
} sharp_hcm_stats_t;

/* HttpConnectionManager.codec_type */
typedef enum { SHARP_CODEC_AUTO, SHARP_CODEC_HTTP1, SHARP_CODEC_HTTP2 } sharp_codec_type_t;

typedef struct sharp_filter_entry {
    char *name;
    const sharp_filter_factory_t *factory;
    void *config;
    bool disabled; /* HttpFilter.disabled: off unless a route's typed_per_filter_config enables it */
} sharp_filter_entry_t;

typedef struct sharp_hcm_config {
    char *stat_prefix;
    sharp_route_table_t *routes; /* route_config; NULL with rds */
    /* rds: the route table comes from the snapshot a stream runs on
     * (snap->rds[rds_index]), so RDS updates reach the next request of an
     * existing connection; -1 without rds */
    int32_t rds_index;
    sharp_filter_entry_t *filters;
    uint32_t nfilters;
    sharp_access_log_t **access_logs;
    uint32_t naccess_logs;
    uint64_t idle_timeout_ms;         /* connection idle, default 1h */
    uint64_t stream_idle_timeout_ms;  /* default 5 min */
    uint64_t request_timeout_ms;      /* default 0 = off */
    uint64_t request_headers_timeout_ms; /* default 0 = off */
    uint64_t drain_timeout_ms;        /* default 5000 */
    uint32_t max_request_headers_kb;  /* default 60 */
    sharp_codec_type_t codec_type;
    sharp_h2_options_t h2;            /* http2_protocol_options (the stream window is advertised at most the buffer limit) */
    uint32_t max_headers_count;       /* default 100 */
    bool use_remote_address;
    uint32_t xff_num_trusted_hops;
    bool skip_xff_append;
    bool generate_request_id;         /* default true */
    bool preserve_external_request_id;
    /* forward_client_cert_details (Envoy's ForwardClientCertType:
     * 0 SANITIZE, 1 FORWARD_ONLY, 2 APPEND_FORWARD, 3 SANITIZE_SET,
     * 4 ALWAYS_FORWARD_ONLY) and set_current_client_cert_details as
     * SHARP_XFCC_* bits (tls/conn.h) */
    int forward_client_cert;
    unsigned client_cert_details;
    bool always_set_request_id_in_response;
    char *server_name;                /* default "sharp" */
    int server_header_transformation; /* 0 overwrite, 1 append if absent, 2 pass through */
    char *via;
    /* scheme_header_transformation: scheme_to_overwrite sets :scheme and
     * x-forwarded-proto of every request (NULL: not set); otherwise
     * match_upstream makes the router send :scheme as the upstream
     * transport is (https with TLS) */
    char *scheme_to_set;
    bool scheme_match_upstream;
    /* add_user_agent: the node's cluster for x-envoy-downstream-service-
     * cluster and an absent user-agent (NULL: off), the node's id for
     * x-envoy-downstream-service-node ("" : none) */
    char *user_agent;
    char *user_agent_node;
    bool accept_http_10;              /* http_protocol_options.accept_http_10 */
    sharp_h1_key_format_t h1_keys;    /* http_protocol_options.header_key_format */
    char *default_host_for_http_10;
    bool normalize_path;              /* default false, as Envoy's runtime default */
    bool merge_slashes;
    int path_with_escaped_slashes_action; /* sharp_escaped_slashes_action_t */
    /* internal_address_config: without it no address is internal (Envoy >= 1.33) */
    bool has_internal_address_config;
    sharp_cidr_t *internal_cidrs;
    uint32_t ninternal_cidrs;
    bool internal_unix_sockets;       /* internal_address_config.unix_sockets: pipe peers are internal */
    int headers_with_underscores_action;  /* 0 allow, 1 reject request, 2 drop header */
    uint64_t delayed_close_timeout_ms;   /* default 1000, 0 disables */
    bool has_max_connection_duration;    /* set, even to 0 (drain at once), as Envoy */
    uint64_t max_connection_duration_ms;
    bool http1_safe_max_connection_duration;
    uint64_t max_stream_duration_ms;     /* 0 = none */
    struct sharp_local_reply *local_reply; /* local_reply_config, NULL: Envoy's default */
    bool bypass_overload_manager;     /* the listener's: overload actions do not apply */
    bool append_local_overload;       /* x-envoy-local-overloaded on overload replies */
    sharp_upgrade_t *upgrades;           /* upgrade_configs */
    uint32_t nupgrades;
    sharp_hcm_stats_t st;
    struct sharp_tracing_config *tracing; /* tracing (http/tracing.h); NULL: none */
    /* A TCP proxy chain's connection settings: the connection manager runs
     * the connection (transport, writes, drains) with this config, whose
     * HTTP settings are all off, its access logs the TCP proxy's and its
     * byte and connection counters the TCP proxy's; the connection-level
     * HTTP stats are not kept. NULL for an HTTP connection manager. */
    sharp_tcp_proxy_config_t *tcp_proxy;
    /* the envoy.filters.network.rbac filters before it, in chain order
     * (filters/rbac/filter.h): data reaches the codec or the TCP proxy only
     * once they allow the connection */
    struct sharp_net_rbac **net_rbac;
    uint32_t nnet_rbac;
    bool net_rbac_continuous; /* one of them checks every data, not only the first */
} sharp_hcm_config_t;

/* Where a listener, or one filter chain of it, is in a listener update
 * (LDS, xds/lds.h): set by the main thread before it publishes the
 * snapshot that no longer has it, read by the workers, which drain its
 * connections and, once the drain time has passed, close them. */
typedef enum {
    SHARP_DRAIN_NONE,
    SHARP_DRAIN_DRAINING, /* removed or replaced: its connections drain */
    SHARP_DRAIN_CLOSING,  /* the drain time has passed: what is left is closed */
} sharp_drain_state_t;

/* One of a listener's filter chains: its match criteria and its terminal
 * network filter, the HTTP connection manager or the TCP proxy (hcm then
 * holds the TCP proxy's connection settings, hcm->tcp_proxy set; network
 * RBAC filters before it are in hcm->net_rbac). Reference counted: an
 * in-place listener update (LDS) hands an unchanged chain, with its
 * connections, to the listener's new version. */
typedef struct sharp_filter_chain_config {
    _Atomic uint32_t refs;
    _Atomic uint8_t drain_state; /* sharp_drain_state_t */
    char *name;
    sharp_fc_match_t match;
    sharp_hcm_config_t *hcm;
    /* transport_socket envoy.transport_sockets.tls (DownstreamTlsContext):
     * the server context, built at load and rebuilt when an SDS secret
     * rotates (tls/context.h, tls/sds.h); NULL for plaintext */
    struct sharp_tls_slot *tls;
} sharp_filter_chain_config_t;

/* Envoy's listener.<address>.ssl.* counters (registered when a chain of the
 * listener has TLS); ciphers.<name>, versions.<v> and curves.<name> are
 * registered on first use, as Envoy's stat name sets do. */
typedef struct sharp_listener_ssl_stats {
    sharp_stat_id_t connection_error, handshake, session_reused, no_certificate, fail_verify_error,
        fail_verify_san, fail_verify_cert_hash, fail_verify_no_cert;
    sharp_stat_id_t ocsp_staple_requests, ocsp_staple_responses, ocsp_staple_omitted, ocsp_staple_failed;
} sharp_listener_ssl_stats_t;

struct sharp_lsock;

/* A listener: immutable once published, reference counted (by the
 * snapshots listing it; a connection holds its snapshot), so a listener an
 * update removed or replaced lives as long as its last connection. */
typedef struct sharp_listener_config {
    _Atomic uint32_t refs;
    /* a listener an update removed or replaced whole (LDS): its sockets
     * still in listener filters drain with it (sharp_drain_state_t) */
    _Atomic uint8_t drain_state;
    /* the listening sockets (listen_socket.h), shared by every version of
     * a listener on the same address; NULL until opened (never with
     * --mode validate) */
    struct sharp_lsock *sock;
    char *name;
    char stat_name[SHARP_ADDR_STRLEN]; /* "0.0.0.0_10000", "/run/x.sock" */
    char address[SHARP_ADDR_STRLEN];   /* "0.0.0.0:10000", "/run/x.sock", "@abstract" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t pipe_mode; /* address.pipe.mode: the socket file's permissions, 0 = left to the umask */
    /* freebind and address.socket_address.ipv4_compat (SHARP_SOCK_*, net.h);
     * with ipv4_compat an IPv4 peer's mapped address (::ffff:a.b.c.d) is
     * taken as the IPv4 address, as Envoy's addressFromSockAddr does */
    unsigned sock_flags;
    uint32_t buffer_limit; /* per_connection_buffer_limit_bytes, default 1 MiB */
    /* filter_chains, then default_filter_chain (when set) as the last entry;
     * a connection takes the chain listener_match.h picks, else the default,
     * else it is closed (no_filter_chain_match) */
    sharp_filter_chain_config_t **chains; /* a reference each */
    uint32_t nchains;      /* filter_chains, without the default */
    bool has_default_chain; /* chains[nchains] is default_filter_chain */
    const sharp_fc_match_t **matches; /* &chains[i]->match, for sharp_fc_select */
    bool match_any;        /* one chain without criteria: every connection takes it */
    /* filter_chain_matcher (matcher.h, network inputs): when set it names
     * the chain (its actions are int32_t indices into chains, -1 for a name
     * no chain of filter_chains has) and the chains' filter_chain_match are
     * ignored, as Envoy's FilterChainManagerImpl */
    struct sharp_matcher *fc_matcher;
    bool fc_matcher_set; /* while it is built */
    /* listener_filters: Envoy's TLS and HTTP inspectors read the first
     * bytes before the chain is chosen (listener_inspect.h), for at most
     * listener_filters_timeout (0: no limit); then the connection is closed
     * (downstream_pre_cx_timeout), or with continue_on_listener_filters_timeout
     * its chain is chosen from what is known */
    bool inspect_tls, inspect_http;
    /* the original_dst listener filter (or use_original_dst, which adds
     * it as Envoy does): a connection's local address becomes the original
     * destination (SO_ORIGINAL_DST) when it has one. With use_original_dst
     * such a connection is handed to the worker's listener bound to that
     * address, when there is one (Envoy's hand-off), else kept. */
    bool original_dst, use_original_dst;
    /* the PROXY protocol listener filter (proxy_protocol.h): it reads the
     * header first, before the inspectors (which see the bytes after it);
     * the connection's remote and local addresses then become the
     * header's, its directly connected peer stays the socket's */
    bool proxy_protocol;
    sharp_pp_opts_t pp_opts;
    struct sharp_pp_rule {
        uint8_t tlv_type;
        char *ns, *key; /* dynamic metadata the TLV's value is set to */
    } *pp_rules;
    uint32_t npp_rules;
    struct {
        sharp_stat_id_t cx_error; /* downstream_cx_proxy_proto_error (Envoy's legacy stat) */
        sharp_stat_id_t not_found_allowed, not_found_disallowed;
        sharp_stat_id_t found[2], disallowed[2], error[2]; /* versions.v1, versions.v2 */
    } pp_stats;
    uint64_t listener_filters_timeout_ms;
    bool continue_on_listener_filters_timeout;
    sharp_stat_id_t pre_cx_active, pre_cx_timeout;
    struct {
        sharp_stat_id_t tls_found, tls_not_found, alpn_found, alpn_not_found, sni_found, sni_not_found,
            client_hello_too_large;
    } tls_inspector;
    struct {
        sharp_stat_id_t http10_found, http11_found, http2_found, http_not_found;
    } http_inspector;
    sharp_stat_id_t cx_total, cx_active, cx_destroy, cx_length_ms, no_filter_chain_match;
    bool ignore_global_conn_limit; /* counted in, never refused by, the global connection limit */
    bool bypass_overload_manager;  /* reject_incoming_connections does not apply */
    sharp_stat_id_t cx_global_overflow, cx_overload_reject;
    bool has_tls;                   /* a chain terminates TLS: ssl is registered */
    sharp_listener_ssl_stats_t ssl;
    /* a UDP listener (socket_address.protocol UDP): no filter chains, its
     * datagrams go to this UDP proxy (udp/udp_proxy.h); NULL for TCP and
     * pipes */
    struct sharp_udp_proxy_config *udp;
} sharp_listener_config_t;

/* A route configuration delivered by RDS (xds/xds.h), shared by the
 * snapshots that list it; what a stream routes with comes from its own
 * snapshot, so an update never changes a request in flight. */
typedef struct sharp_rds_table {
    _Atomic uint32_t refs;
    sharp_route_table_t *table; /* NULL: the resource is not (yet) in the source: no route */
    ProtobufCMessage *pb;       /* the RouteConfiguration, for /config_dump */
    char *version_info;
    uint64_t last_updated_us;
} sharp_rds_table_t;

sharp_rds_table_t *sharp_rds_table_ref(sharp_rds_table_t *t);
void sharp_rds_table_unref(sharp_rds_table_t *t);

typedef struct sharp_snapshot {
    _Atomic int refs;
    uint64_t version;
    /* A snapshot made by an xDS update shares everything but its
     * listeners, clusters and route tables with the bootstrap's snapshot,
     * which it holds (logs, secrets, overload config); NULL for that one. */
    struct sharp_snapshot *base;
    /* The route tables of the RDS subscriptions, indexed by
     * sharp_hcm_config_t.rds_index (a reference each; NULL entries: none
     * delivered). */
    sharp_rds_table_t **rds;
    uint32_t nrds;
    /* the bootstrap's listeners, then those of LDS (a reference each) */
    sharp_listener_config_t **listeners;
    uint32_t nlisteners;
    sharp_cluster_t **clusters;
    uint32_t nclusters;
    /* clusters by name (their names, and the index of them): a request
     * finds its route's cluster without comparing names with all of them
     * (CDS may bring thousands); no index while the bootstrap's clusters
     * are being built */
    const char **cluster_names;
    sharp_name_index_t cluster_index;
    /* admin.access_log then admin.access_log_path, in Envoy's order; written
     * by the admin server on the main thread only */
    sharp_access_log_t **admin_access_logs;
    uint32_t nadmin_access_logs;
    /* cluster_manager.outlier_detection.event_log_path: every cluster's
     * detector writes its ejection events here, on the main thread */
    struct sharp_access_log_file *outlier_event_log;
    /* Bootstrap.overload_manager, NULL when absent; run by the main thread */
    struct sharp_overload_config *overload;
    /* the secrets SdsSecretConfigs take from files (tls/sds.h), NULL when none */
    struct sharp_sds *sds;
} sharp_snapshot_t;

/* The chain a new connection takes (local and remote addresses known; no
 * TLS or HTTP inspection yet), NULL when none matches and there is no
 * default chain. */
const sharp_filter_chain_config_t *sharp_listener_select_chain(const sharp_listener_config_t *l,
                                                               const struct sockaddr *local,
                                                               const struct sockaddr *remote);
/* The same once listener filters have read the first bytes: the server
 * name, transport protocol and application protocols they found, and the
 * addresses a PROXY protocol header gave (`direct_remote` stays the
 * socket's peer, for direct_source_prefix_ranges). */
const sharp_filter_chain_config_t *sharp_listener_select_chain_inspected(
    const sharp_listener_config_t *l, const struct sockaddr *local, const struct sockaddr *remote,
    const struct sockaddr *direct_remote, const char *server_name, const char *transport_protocol,
    const char *const *alpn, uint32_t nalpn);

/* Every TLS context's certificates (listeners' chains, then clusters), as
 * Envoy's /certs lists them, appended to `json` when not NULL; returns the
 * fewest days until one expires, -1 when there is no certificate. */
int64_t sharp_snapshot_certs(const sharp_snapshot_t *s, sharp_sbuf_t *json);

sharp_snapshot_t *sharp_snapshot_ref(sharp_snapshot_t *s);
/* A snapshot sharing everything static with base, with the listeners,
 * clusters and RDS tables given (referenced, not taken). Main thread. */
sharp_snapshot_t *sharp_snapshot_derive(sharp_snapshot_t *base, sharp_listener_config_t *const *listeners,
                                        uint32_t nlisteners, sharp_cluster_t *const *clusters, uint32_t nclusters,
                                        sharp_rds_table_t *const *rds, uint32_t nrds, uint64_t version);

sharp_listener_config_t *sharp_listener_ref(sharp_listener_config_t *l);
/* The last reference frees the listener, its chains' references and its
 * socket reference (any thread). */
void sharp_listener_unref(sharp_listener_config_t *l);
sharp_filter_chain_config_t *sharp_filter_chain_ref(sharp_filter_chain_config_t *fc);
void sharp_filter_chain_unref(sharp_filter_chain_config_t *fc);
/* The route table a stream of this connection manager uses on snapshot s. */
static inline const sharp_route_table_t *sharp_snapshot_routes(const sharp_snapshot_t *s, const sharp_hcm_config_t *h)
{
    if (h->rds_index < 0) return h->routes;
    return s && (uint32_t)h->rds_index < s->nrds && s->rds[h->rds_index] ? s->rds[h->rds_index]->table : NULL;
}
/* Frees an HCM config and everything it owns (filter configs, logs, routes). */
void sharp_hcm_config_free(sharp_hcm_config_t *h);
void sharp_snapshot_unref(sharp_snapshot_t *s);
/* Cluster by name, NULL if absent (a lookup in the snapshot's index). */
sharp_cluster_t *sharp_snapshot_cluster(const sharp_snapshot_t *s, const char *name);
/* The position of the named cluster in s->clusters, or -1. */
int32_t sharp_snapshot_cluster_index(const sharp_snapshot_t *s, const char *name);
/* Builds the name index of s->clusters (once they are all there). */
void sharp_snapshot_index_clusters(sharp_snapshot_t *s);

#endif
