/* bootstrap.c: from an Envoy v3 Bootstrap message to a runtime snapshot.
 *
 * The generic mapper (mapper.c) has already rejected unknown fields, bad
 * enums and malformed values; this file checks what the schema alone cannot
 * (a listener without an address, a route to nothing, a cluster type not
 * supported yet) and builds listeners, HCM configs, filter chains and
 * clusters. Every error names the field path and, when the text had it, the
 * line and column. */
#include "config/bootstrap.h"
#include "api_source.h"
#include "config/support.h"
#include "config/mapper.h"
#include "config/metrics_config.h"
#include "config/health_check_config.h"
#include "config/route_config.h"
#include "config/runtime_config.h"
#include "runtime.h"
#include "config/shuffle_shard_config.h"
#include "config/udp_proxy_config.h"
#include "udp/udp_proxy.h"
#include "upstream/subset.h"
#include "upstream/locality_md.h"
#include "http/metadata.h"
#include "google/protobuf/struct.pb-c.h"
#include "config/scaling_config.h"
#include "config/overload_config.h"
#include "config/types.h"
#include "config/tls_config.h"
#include "http/access_log.h"
#include "http/access_log_emit.h"
#include "config/local_reply_config.h"
#include "http/path_util.h"
#include "http/tracing.h"
#include "log.h"
#include "net.h"
#include "safe_regex.h"
#include "statsd.h"
#include "metrics_service.h"
#include "otlp_sink.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "tls/context.h"
#include "tls/sds.h"
#include "tls/conn.h"
#include "upstream/dns.h"
#include "upstream/original_dst.h"
#include "upstream/aggregate.h"
#include "config/mapper_internal.h"
#include "envoy/extensions/clusters/aggregate/v3/cluster.pb-c.h"
#include "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.pb-c.h"
#include "upstream/dfp.h"
#include "xds/xds.h"
#include <ctype.h>
#include <sys/un.h>

#include "envoy/extensions/bootstrap/internal_listener/v3/internal_listener.pb-c.h"
#include "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.pb-c.h"
#include "sharp/extensions/scaling/v1/scaling_agent.pb-c.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/extensions/regex_engines/v3/google_re2.pb-c.h"
#include "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "filters/rbac/filter.h"
#include "envoy/config/trace/v3/datadog.pb-c.h"
#include "matcher.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "envoy/config/trace/v3/opentelemetry.pb-c.h"
#include "envoy/config/trace/v3/skywalking.pb-c.h"
#include "envoy/config/trace/v3/zipkin.pb-c.h"
#include "envoy/config/metrics/v3/metrics_service.pb-c.h"
#include "envoy/extensions/stat_sinks/open_telemetry/v3/open_telemetry.pb-c.h"
#include "envoy/extensions/tracers/opentelemetry/resource_detectors/v3/static_config_resource_detector.pb-c.h"

#include <strings.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <ctype.h>
#include <stdio.h>

typedef Envoy__Config__Bootstrap__V3__Bootstrap bootstrap_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager hcm_pb_t;
typedef Envoy__Config__Cluster__V3__Cluster cluster_pb_t;

/* A Metadata's filter_metadata["envoy.lb"] (an endpoint's, a metadata_match)
 * in upstream/subset.h's form. */
static sharp_lbmeta_t *endpoint_lb_meta(const Envoy__Config__Core__V3__Metadata *md);
static sharp_locality_md_t *locality_md_from(const Envoy__Config__Core__V3__Metadata *pb);

#define HCM_TYPE "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define TCP_PROXY_TYPE "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define NET_RBAC_TYPE "envoy.extensions.filters.network.rbac.v3.RBAC"
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy tcp_proxy_pb_t;

typedef struct build_ctx {
    sharp_config_t *cfg;
    sharp_server_t *srv;
    char *err;
    size_t errlen;
    uint64_t random; /* featureEnabled draws made while building */
    sharp_sds_t *sds; /* the snapshot's SDS secrets */
    const bootstrap_t *bootstrap; /* its DNS resolver is the default of the clusters */
    bool dynamic;     /* building a CDS resource, after the server started */
    int traffic_direction; /* of the listener being built (core.v3.TrafficDirection) */
} build_ctx_t;

/* Formats "source:line:col: path: message" (line part only when known). */
static int fail(build_ctx_t *b, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(build_ctx_t *b, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line = 0, col = 0;
    /* walk up the path until a known position is found */
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    while (p[0] && !b->cfg->merged && !sharp_config_doc_where(b->cfg->doc, p, &line, &col)) {
        char *dot = strrchr(p, '.'), *br = strrchr(p, '[');
        char *cut = dot > br ? dot : br;
        if (!cut) {
            p[0] = '\0';
            break;
        }
        *cut = '\0';
    }
    if (line) snprintf(b->err, b->errlen, "%s:%d:%d: %s: %s", b->cfg->source, line, col, path, msg);
    else snprintf(b->err, b->errlen, "%s: %s: %s", b->cfg->source, path, msg);
    return -1;
}

static uint64_t duration_ms(const Google__Protobuf__Duration *d, uint64_t dflt)
{
    if (!d) return dflt;
    if (d->seconds < 0) return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

static unsigned sockaddr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

/* ---- loading ---- */

int sharp_config_load(const sharp_options_t *o, sharp_config_t **out, char *err, size_t errlen)
{
    sharp_config_types_register();
    sharp_config_t *c = sharp_calloc(1, sizeof *c);
    sharp_config_error_t e = {{0}};
    const ProtobufCMessageDescriptor *d = &envoy__config__bootstrap__v3__bootstrap__descriptor;
    if (o->config_path) {
        snprintf(c->source, sizeof c->source, "%s", o->config_path);
        if (sharp_config_parse_file(o->config_path, d, &c->doc, &e) < 0) c->doc = NULL;
        if (c->doc && o->config_yaml) {
            /* Envoy: bootstrap.MergeFrom(the --config-yaml bootstrap). Both
             * texts are checked on their own first, so an error names the
             * text it is in. */
            sharp_config_doc_t *over = sharp_config_parse(o->config_yaml, strlen(o->config_yaml),
                                                          "--config-yaml", d, &e);
            if (!over) {
                sharp_config_doc_free(c->doc);
                c->doc = NULL;
            } else {
                sharp_config_merge(sharp_config_doc_message(c->doc), sharp_config_doc_message(over));
                sharp_config_doc_free(over);
                /* Later errors cannot tell which text a field came from. */
                snprintf(c->source, sizeof c->source, "%s merged with --config-yaml", o->config_path);
                c->merged = true;
            }
        }
    } else {
        const char *text = o->config_yaml ? o->config_yaml : sharp_default_bootstrap_yaml;
        snprintf(c->source, sizeof c->source, "%s", o->config_yaml ? "--config-yaml" : "<default bootstrap>");
        c->doc = sharp_config_parse(text, strlen(text), c->source, d, &e);
    }
    if (!c->doc) {
        snprintf(err, errlen, "%s", e.msg);
        free(c);
        return -1;
    }
    if (sharp_config_doc_empty(c->doc)) {
        /* Envoy's loadFromYaml turns an empty or null document into a JSON
         * null, which is not a message: "Unable to convert YAML as JSON" */
        snprintf(err, errlen, "%s: the config holds no document (empty, or only comments): Envoy cannot "
                 "convert it to a bootstrap; an empty bootstrap is written {}", c->source);
        sharp_config_free(c);
        return -1;
    }
    c->bootstrap = sharp_config_doc_message(c->doc);
    /* Nothing reaches a translator before the support table has passed it:
     * every set field is implemented, every value within Envoy's rules. */
    if (sharp_config_check_support(c->bootstrap, c->doc, NULL, &e) < 0) {
        snprintf(err, errlen, "%s", e.msg);
        sharp_config_doc_free(c->doc);
        free(c);
        return -1;
    }
    *out = c;
    return 0;
}

void sharp_config_free(sharp_config_t *c)
{
    for (size_t i = 0; i < c->nstats_sinks; i++) sharp_statsd_sink_free(c->stats_sinks[i]);
    free(c->stats_sinks);
    for (size_t i = 0; i < c->nmetrics_sinks; i++) sharp_metrics_sink_free(c->metrics_sinks[i]);
    free(c->metrics_sinks);
    for (size_t i = 0; i < c->notlp_sinks; i++) sharp_otlp_sink_free(c->otlp_sinks[i]);
    free(c->otlp_sinks);
    sharp_scaling_agent_config_free(c->scaling);
    for (size_t i = 0; i < c->nadmin_allow; i++) sharp_string_matcher_free(&c->admin_allow[i]);
    free(c->admin_allow);
    if (c->doc) sharp_config_doc_free(c->doc);
    free(c);
}

#define IPV4_COMPAT_LISTENERS_ONLY "ipv4_compat is implemented for TCP listener addresses only"

/* An Address: a numeric socket_address, or a pipe (Envoy's PipeInstance:
 * a Unix domain socket path, '@' for the abstract namespace, and the mode
 * its file gets when SHARP binds it). With `udp` (a listener's address)
 * the protocol may be UDP, which *udp says. */
/* dst = a then b, truncated to n: the paths an EDS assignment's every
 * endpoint needs in case of an error, made without printf */
static const char *path_cat(char *dst, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= n) la = n - 1;
    if (lb >= n - la) lb = n - la - 1;
    memmove(dst, a, la);
    memcpy(dst + la, b, lb);
    dst[la + lb] = '\0';
    return dst;
}

static int socket_address(build_ctx_t *b, const Envoy__Config__Core__V3__Address *a, const char *path,
                          struct sockaddr_storage *ss, socklen_t *len, uint32_t *mode, bool *udp)
{
    char p[1024];
    if (mode) *mode = 0;
    if (a && a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE) {
        const Envoy__Config__Core__V3__Pipe *pipe = a->pipe;
        char perr[512];
        snprintf(p, sizeof p, "%s.pipe", path);
        if (sharp_pipe_addr(pipe->path, ss, len, perr, sizeof perr) < 0) return fail(b, p, "%s", perr);
        if (pipe->path[0] == '@' && pipe->mode != 0)
            return fail(b, p, "Cannot set mode for Abstract AF_UNIX sockets");
        if (mode) *mode = pipe->mode;
        return 0;
    }
    if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return fail(b, path, "a socket_address or a pipe is required");
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    path_cat(p, sizeof p, path, ".socket_address");
    if (sa->ipv4_compat && !udp) return fail(b, p, "%s", IPV4_COMPAT_LISTENERS_ONLY);
    if (udp) *udp = sa->protocol == ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__UDP;
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP && !(udp && *udp))
        return fail(b, p, "only TCP is supported");
    if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return fail(b, p, "port_value is required (named_port is not supported)");
    if (sa->port_value > 65535) return fail(b, p, "port_value %u is out of range", sa->port_value);
    if (sharp_addr_parse(sa->address, sa->port_value, ss, len) < 0)
        return fail(b, p, "address '%s' is not a numeric IPv4 or IPv6 address", sa->address);
    return 0;
}

/* ---- HTTP connection manager ---- */

static int build_filters(build_ctx_t *b, const hcm_pb_t *pb, sharp_hcm_config_t *h, const char *path)
{
    if (pb->n_http_filters == 0) return fail(b, path, "http_filters must end with the router filter");
    h->filters = sharp_calloc(pb->n_http_filters, sizeof *h->filters);
    for (size_t i = 0; i < pb->n_http_filters; i++) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf = pb->http_filters[i];
        char p[1024];
        snprintf(p, sizeof p, "%s.http_filters[%zu]", path, i);
        /* Envoy's processFilter: a filter disabled by default stays in the
         * chain for the routes that enable it, but never the last one */
        if (hf->disabled && i + 1 == pb->n_http_filters)
            return fail(b, p, "Error: the last (terminal) filter (%s) in the chain cannot be disabled by default.",
                        hf->name);
        const sharp_filter_factory_t *fac = NULL;
        ProtobufCMessage *msg = NULL;
        if (hf->config_type_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
            const Google__Protobuf__Any *any = hf->typed_config;
            fac = sharp_filter_find_by_type_url(any->type_url, strlen(any->type_url));
            if (!fac) {
                if (hf->is_optional) continue;
                return fail(b, p, "filter '%s': no HTTP filter handles typed_config type '%s'", hf->name,
                            any->type_url);
            }
            sharp_config_error_t e = {{0}};
            msg = sharp_any_unpack(&any->base, NULL, &e);
            if (!msg) return fail(b, p, "typed_config: %s", e.msg);
        } else {
            fac = sharp_filter_find_by_name(hf->name);
            if (!fac) {
                if (hf->is_optional) continue;
                return fail(b, p, "unknown HTTP filter '%s'", hf->name);
            }
        }
        sharp_filter_config_ctx_t fctx = {.server = b->srv, .stat_prefix = h->stat_prefix, .tracing = h->tracing};
        char ferr[512] = "";
        void *fcfg = fac->create_config ? fac->create_config(msg, &fctx, ferr, sizeof ferr) : NULL;
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
        if (fac->create_config && !fcfg) return fail(b, p, "%s", ferr[0] ? ferr : "invalid filter config");
        sharp_filter_entry_t *fe = &h->filters[h->nfilters++];
        fe->name = sharp_strdup(hf->name);
        fe->factory = fac;
        fe->config = fcfg;
        fe->disabled = hf->disabled;
        bool last = i + 1 == pb->n_http_filters;
        if (fac->terminal && !last) return fail(b, p, "terminal filter '%s' must be the last one", hf->name);
        if (!fac->terminal && last)
            return fail(b, p, "the last HTTP filter must be a terminal filter (envoy.filters.http.router), not '%s'",
                        hf->name);
    }
    if (h->nfilters == 0) return fail(b, path, "http_filters must end with the router filter");
    return 0;
}

/* The per-route configs of an inline route_config against this connection
 * manager's filters. Envoy finds a per-route config's filter by its type
 * alone and stores it under the key; a filter then reads it only if it is
 * its own type, and a route that disables the terminal filter leaves the
 * chain without one. SHARP refuses both when the key names a filter of the
 * chain rather than accepting a config no filter would read. Keys naming no
 * filter of the chain are accepted, as Envoy does (the filter may be in
 * another connection manager using the same routes). */
static int check_per_filter_level(build_ctx_t *b, const sharp_hcm_config_t *h, const sharp_per_filter_configs_t *pf,
                                  const char *path)
{
    for (uint32_t i = 0; i < pf->n; i++) {
        const sharp_per_filter_t *e = &pf->v[i];
        char p[1400];
        snprintf(p, sizeof p, "%s.typed_per_filter_config[\"%s\"]", path, e->name);
        for (uint32_t k = 0; k < h->nfilters; k++) {
            const sharp_filter_entry_t *fe = &h->filters[k];
            if (strcmp(fe->name, e->name) != 0) continue;
            if (e->disabled && fe->factory->terminal)
                return fail(b, p, "the terminal filter %s cannot be disabled on a route", e->name);
            const sharp_filter_factory_t *own =
                fe->factory->wrapped_factory ? fe->factory->wrapped_factory(fe->config) : fe->factory;
            if (e->factory && e->factory != own && e->factory != fe->factory)
                return fail(b, p, "type '%s' is the per-route config of %s, not of this connection manager's "
                            "filter '%s' (%s)", strrchr(e->factory->route_type_url, '/') + 1, e->factory->name,
                            e->name, own->name);
        }
    }
    return 0;
}

static int check_per_filter(build_ctx_t *b, const sharp_hcm_config_t *h, const char *path)
{
    const sharp_route_table_t *t = h->routes;
    char p[1200];
    if (check_per_filter_level(b, h, &t->per_filter, path) < 0) return -1;
    for (uint32_t v = 0; v < t->nvhosts; v++) {
        const sharp_vhost_t *vh = &t->vhosts[v];
        snprintf(p, sizeof p, "%s.virtual_hosts[%u]", path, v);
        if (check_per_filter_level(b, h, &vh->per_filter, p) < 0) return -1;
        for (uint32_t r = 0; r < vh->nroutes; r++) {
            const sharp_route_t *rt = &vh->routes[r];
            snprintf(p, sizeof p, "%s.virtual_hosts[%u].routes[%u]", path, v, r);
            if (check_per_filter_level(b, h, &rt->per_filter, p) < 0) return -1;
            for (uint32_t w = 0; w < rt->nweighted; w++) {
                snprintf(p, sizeof p, "%s.virtual_hosts[%u].routes[%u].route.weighted_clusters.clusters[%u]", path,
                         v, r, w);
                if (check_per_filter_level(b, h, &rt->weighted[w].per_filter, p) < 0) return -1;
            }
        }
    }
    return 0;
}

static void hcm_stats_init(sharp_hcm_config_t *h, sharp_stats_t *s)
{
    sharp_hcm_stats_t *st = &h->st;
    const char *p = h->stat_prefix;
#define C(f, n) st->f = sharp_stats_counterf(s, "http.%s." n, p)
#define G(f, n) st->f = sharp_stats_gaugef(s, "http.%s." n, p)
    C(rq_total, "downstream_rq_total");
    for (int i = 1; i <= 5; i++) st->rq_xx[i] = sharp_stats_counterf(s, "http.%s.downstream_rq_%dxx", p, i);
    st->rq_time = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "http.%s.downstream_rq_time", p);
    st->cx_length = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "http.%s.downstream_cx_length_ms", p);
    G(rq_active, "downstream_rq_active");
    C(cx_total, "downstream_cx_total");
    G(cx_active, "downstream_cx_active");
    C(cx_http1_total, "downstream_cx_http1_total");
    G(cx_http1_active, "downstream_cx_http1_active");
    C(cx_destroy, "downstream_cx_destroy");
    C(cx_destroy_remote, "downstream_cx_destroy_remote");
    C(cx_destroy_local, "downstream_cx_destroy_local");
    C(cx_protocol_error, "downstream_cx_protocol_error");
    C(cx_idle_timeout, "downstream_cx_idle_timeout");
    C(cx_drain_close, "downstream_cx_drain_close");
    C(rq_timeout, "downstream_rq_timeout");
    C(rq_idle_timeout, "downstream_rq_idle_timeout");
    C(rq_header_timeout, "downstream_rq_header_timeout");
    C(cx_overload_disable_keepalive, "downstream_cx_overload_disable_keepalive");
    C(rx_bytes_total, "downstream_cx_rx_bytes_total");
    C(tx_bytes_total, "downstream_cx_tx_bytes_total");
    C(rq_http1_total, "downstream_rq_http1_total");
    C(rq_http2_total, "downstream_rq_http2_total");
    C(cx_http2_total, "downstream_cx_http2_total");
    G(cx_http2_active, "downstream_cx_http2_active");
    C(rq_completed, "downstream_rq_completed");
    C(rq_rx_reset, "downstream_rq_rx_reset");
    C(rq_tx_reset, "downstream_rq_tx_reset");
    C(rq_too_many_premature_resets, "downstream_rq_too_many_premature_resets");
    C(rq_overload_close, "downstream_rq_overload_close");
    C(rq_ws_on_non_ws_route, "downstream_rq_ws_on_non_ws_route");
    C(rq_response_before_rq_complete, "downstream_rq_response_before_rq_complete");
    C(rq_too_large, "downstream_rq_too_large");
    C(rs_too_large, "rs_too_large");
    C(rq_failed_path_normalization, "downstream_rq_failed_path_normalization");
    C(rq_redirected_with_normalized_path, "downstream_rq_redirected_with_normalized_path");
    C(rq_max_duration_reached, "downstream_rq_max_duration_reached");
    C(cx_max_duration_reached, "downstream_cx_max_duration_reached");
    C(cx_delayed_close_timeout, "downstream_cx_delayed_close_timeout");
    C(cx_upgrades_total, "downstream_cx_upgrades_total");
    G(cx_upgrades_active, "downstream_cx_upgrades_active");
    C(no_route, "no_route");
    C(no_cluster, "no_cluster");
    C(rq_direct_response, "rq_direct_response");
    C(rq_redirect, "rq_redirect");
#undef C
#undef G
    /* Envoy roots the downstream HTTP/1 codec stats at "http1." (the
     * listener's scope), so every connection manager shares them. */
    st->http1_dropped_headers_with_underscores = sharp_stats_counterf(s, "http1.dropped_headers_with_underscores");
    st->http1_requests_rejected_with_underscores =
        sharp_stats_counterf(s, "http1.requests_rejected_with_underscores_in_headers");
    st->http2_dropped_headers_with_underscores = sharp_stats_counterf(s, "http2.dropped_headers_with_underscores");
    st->http2_requests_rejected_with_underscores =
        sharp_stats_counterf(s, "http2.requests_rejected_with_underscores_in_headers");
    st->http2_outbound_flood = sharp_stats_counterf(s, "http2.outbound_flood");
    st->http2_outbound_control_flood = sharp_stats_counterf(s, "http2.outbound_control_flood");
    st->http2_inbound_empty_frames_flood = sharp_stats_counterf(s, "http2.inbound_empty_frames_flood");
    st->http2_inbound_priority_frames_flood = sharp_stats_counterf(s, "http2.inbound_priority_frames_flood");
    st->http2_inbound_window_update_frames_flood =
        sharp_stats_counterf(s, "http2.inbound_window_update_frames_flood");
    st->http2_rx_reset = sharp_stats_counterf(s, "http2.rx_reset");
    st->http2_tx_reset = sharp_stats_counterf(s, "http2.tx_reset");
    st->http2_header_overflow = sharp_stats_counterf(s, "http2.header_overflow");
    st->http2_rx_messaging_error = sharp_stats_counterf(s, "http2.rx_messaging_error");
    st->http2_keepalive_timeout = sharp_stats_counterf(s, "http2.keepalive_timeout");
    st->http2_streams_active = sharp_stats_gaugef(s, "http2.streams_active");
    st->http2_pending_send_bytes = sharp_stats_gaugef(s, "http2.pending_send_bytes");
}

/* The access logs of an HCM or a TCP proxy (path.access_log[i]). */
static int build_access_logs(build_ctx_t *b, ProtobufCMessage *const *logs, size_t n, const char *path,
                             sharp_hcm_config_t *h)
{
    if (!n) return 0;
    h->access_logs = sharp_calloc(n, sizeof *h->access_logs);
    for (size_t i = 0; i < n; i++) {
        char p[1024], aerr[512] = "";
        snprintf(p, sizeof p, "%s.access_log[%zu]", path, i);
        sharp_access_log_t *al = sharp_access_log_create(logs[i], true, !b->srv->opts.validate_only, aerr, sizeof aerr);
        if (!al) return fail(b, p, "%s", aerr);
        h->access_logs[h->naccess_logs++] = al;
    }
    return 0;
}

#define ZIPKIN_TYPE "envoy.config.trace.v3.ZipkinConfig"
#define OTEL_TYPE "envoy.config.trace.v3.OpenTelemetryConfig"
#define SKYWALKING_TYPE "envoy.config.trace.v3.SkyWalkingConfig"
#define DATADOG_TYPE "envoy.config.trace.v3.DatadogConfig"

static void otel_header(sharp_otel_config_t *oc, const char *k, const char *v)
{
    oc->hdr_names = sharp_realloc(oc->hdr_names, (oc->nhdrs + 1) * sizeof(char *));
    oc->hdr_values = sharp_realloc(oc->hdr_values, (oc->nhdrs + 1) * sizeof(char *));
    char *lk = sharp_strdup(k);
    for (char *c = lk; *c; c++) *c = (char)tolower((unsigned char)*c);
    oc->hdr_names[oc->nhdrs] = lk;
    oc->hdr_values[oc->nhdrs++] = sharp_strdup(v);
}

/* The OpenTelemetry tracer (OpenTelemetryConfig): one exporter, gRPC or
 * HTTP (Envoy prefers grpc_service when both are set). The support table
 * has refused resource_detectors and sampler. */
static sharp_otel_config_t *build_otel(build_ctx_t *b, const Envoy__Config__Trace__V3__Tracing__Http *http,
                                       const char *p)
{
    sharp_config_error_t e = {{0}};
    Envoy__Config__Trace__V3__OpenTelemetryConfig *o = (Envoy__Config__Trace__V3__OpenTelemetryConfig *)sharp_any_unpack(
        &http->typed_config->base, &envoy__config__trace__v3__open_telemetry_config__descriptor, &e);
    if (!o) {
        fail(b, p, "%s", e.msg);
        return NULL;
    }
    sharp_otel_config_t *oc = NULL;
    if (!o->grpc_service && !o->http_service) {
        /* Envoy: a tracer without an exporter sends nothing; SHARP asks for one */
        fail(b, p, "envoy.tracers.opentelemetry: grpc_service or http_service is required by SHARP");
        goto out;
    }
    oc = sharp_calloc(1, sizeof *oc);
    oc->service_name = sharp_strdup(o->service_name && o->service_name[0] ? o->service_name : "unknown_service:envoy");
    if (o->grpc_service) {
        const Envoy__Config__Core__V3__GrpcService *g = o->grpc_service;
        if (!g->envoy_grpc || !g->envoy_grpc->cluster_name[0]) {
            char fp[1300];
            snprintf(fp, sizeof fp, "%s.grpc_service", p);
            fail(b, fp, "envoy_grpc.cluster_name is required");
            sharp_otel_config_free(oc);
            oc = NULL;
            goto out;
        }
        if (g->envoy_grpc->retry_policy) {
            char fp[1300];
            snprintf(fp, sizeof fp, "%s.grpc_service.envoy_grpc.retry_policy", p);
            fail(b, fp, "retry_policy (retries of the Export call) is not supported by SHARP");
            sharp_otel_config_free(oc);
            oc = NULL;
            goto out;
        }
        oc->grpc = true;
        oc->cluster = sharp_strdup(g->envoy_grpc->cluster_name);
        oc->authority = sharp_strdup(g->envoy_grpc->authority && g->envoy_grpc->authority[0] ? g->envoy_grpc->authority
                                                                                              : g->envoy_grpc->cluster_name);
        oc->path = sharp_strdup("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
        oc->timeout_ms = duration_ms(g->timeout, 0);
        for (size_t i = 0; i < g->n_initial_metadata; i++)
            otel_header(oc, g->initial_metadata[i]->key, g->initial_metadata[i]->value);
    } else {
        const Envoy__Config__Core__V3__HttpService *hs = o->http_service;
        const Envoy__Config__Core__V3__HttpUri *u = hs->http_uri;
        if (!u || !u->cluster || !u->cluster[0]) {
            char fp[1300];
            snprintf(fp, sizeof fp, "%s.http_service.http_uri", p);
            fail(b, fp, "http_uri with a cluster is required");
            sharp_otel_config_free(oc);
            oc = NULL;
            goto out;
        }
        /* Envoy's extractHostPathFromUri: the host after "://", the path
         * from the first '/' after it ("/" when none) */
        const char *uri = u->uri ? u->uri : "";
        const char *hs_start = strstr(uri, "://");
        hs_start = hs_start ? hs_start + 3 : uri;
        const char *slash = strchr(hs_start, '/');
        oc->authority = slash ? sharp_strndup(hs_start, (size_t)(slash - hs_start)) : sharp_strdup(hs_start);
        oc->path = sharp_strdup(slash ? slash : "/");
        oc->cluster = sharp_strdup(u->cluster);
        oc->timeout_ms = duration_ms(u->timeout, 0);
        for (size_t i = 0; i < hs->n_request_headers_to_add; i++) {
            const Envoy__Config__Core__V3__HeaderValue *hv = hs->request_headers_to_add[i]->header;
            if (hv) otel_header(oc, hv->key, hv->value);
        }
    }
    sharp_stats_t *st = b->srv->stats;
    oc->st.spans_sent = sharp_stats_counter(st, "tracing.opentelemetry.spans_sent");
    oc->st.timer_flushed = sharp_stats_counter(st, "tracing.opentelemetry.timer_flushed");
    oc->st.http_reports_sent = sharp_stats_counter(st, "tracing.opentelemetry.http_reports_sent");
    oc->st.http_reports_success = sharp_stats_counter(st, "tracing.opentelemetry.http_reports_success");
    oc->st.http_reports_failed = sharp_stats_counter(st, "tracing.opentelemetry.http_reports_failed");
out:
    protobuf_c_message_free_unpacked(&o->base, NULL);
    return oc;
}

/* The SkyWalking tracer (SkyWalkingConfig): Envoy's Driver::loadConfig. */
static sharp_skywalking_config_t *build_skywalking(build_ctx_t *b, const Envoy__Config__Trace__V3__Tracing__Http *http,
                                                   const char *p)
{
    sharp_config_error_t e = {{0}};
    Envoy__Config__Trace__V3__SkyWalkingConfig *o = (Envoy__Config__Trace__V3__SkyWalkingConfig *)sharp_any_unpack(
        &http->typed_config->base, &envoy__config__trace__v3__sky_walking_config__descriptor, &e);
    if (!o) {
        fail(b, p, "%s", e.msg);
        return NULL;
    }
    sharp_skywalking_config_t *sc = NULL;
    char fp[1300];
    const Envoy__Config__Core__V3__GrpcService *g = o->grpc_service;
    if (!g) {
        snprintf(fp, sizeof fp, "%s.grpc_service", p);
        fail(b, fp, "value is required");
        goto out;
    }
    if (!g->envoy_grpc || !g->envoy_grpc->cluster_name[0]) {
        snprintf(fp, sizeof fp, "%s.grpc_service", p);
        fail(b, fp, "envoy_grpc.cluster_name is required by SHARP (its own gRPC client)");
        goto out;
    }
    if (g->envoy_grpc->retry_policy) {
        snprintf(fp, sizeof fp, "%s.grpc_service.envoy_grpc.retry_policy", p);
        fail(b, fp, "retry_policy is not supported by SHARP for the collect stream");
        goto out;
    }
    const Envoy__Config__Trace__V3__ClientConfig *cc = o->client_config;
    sc = sharp_calloc(1, sizeof *sc);
    sc->cluster = sharp_strdup(g->envoy_grpc->cluster_name);
    sc->authority = sharp_strdup(g->envoy_grpc->authority && g->envoy_grpc->authority[0] ? g->envoy_grpc->authority
                                                                                          : g->envoy_grpc->cluster_name);
    /* the names default to the node's cluster and id, then "EnvoyProxy" */
    const char *node_cluster = b->srv ? b->srv->node_cluster : "";
    const char *node_id = b->srv ? b->srv->node_id : "";
    const char *svc = cc && cc->service_name[0] ? cc->service_name : node_cluster[0] ? node_cluster : "EnvoyProxy";
    const char *inst = cc && cc->instance_name[0] ? cc->instance_name : node_id[0] ? node_id : "EnvoyProxy";
    sc->service_name = sharp_strdup(svc);
    sc->instance_name = sharp_strdup(inst);
    if (cc && cc->backend_token_specifier_case ==
                  ENVOY__CONFIG__TRACE__V3__CLIENT_CONFIG__BACKEND_TOKEN_SPECIFIER_BACKEND_TOKEN &&
        cc->backend_token[0])
        sc->token = sharp_strdup(cc->backend_token);
    sc->max_cache_size = cc && cc->max_cache_size ? cc->max_cache_size->value : 1024;
    for (size_t i = 0; i < g->n_initial_metadata; i++) {
        sc->hdr_names = sharp_realloc(sc->hdr_names, (sc->nhdrs + 1) * sizeof(char *));
        sc->hdr_values = sharp_realloc(sc->hdr_values, (sc->nhdrs + 1) * sizeof(char *));
        char *lk = sharp_strdup(g->initial_metadata[i]->key);
        for (char *c = lk; *c; c++) *c = (char)tolower((unsigned char)*c);
        sc->hdr_names[sc->nhdrs] = lk;
        sc->hdr_values[sc->nhdrs++] = sharp_strdup(g->initial_metadata[i]->value);
    }
    sharp_stats_t *st = b->srv->stats;
    sc->st.segments_sent = sharp_stats_counter(st, "tracing.skywalking.segments_sent");
    sc->st.segments_dropped = sharp_stats_counter(st, "tracing.skywalking.segments_dropped");
    sc->st.cache_flushed = sharp_stats_counter(st, "tracing.skywalking.cache_flushed");
    sc->st.segments_flushed = sharp_stats_counter(st, "tracing.skywalking.segments_flushed");
out:
    protobuf_c_message_free_unpacked(&o->base, NULL);
    return sc;
}

/* The Datadog tracer (DatadogConfig): Envoy's DatadogTracerFactory. The
 * support table has refused remote_config and checked the strings'
 * lengths. */
static sharp_datadog_config_t *build_datadog(build_ctx_t *b, const Envoy__Config__Trace__V3__Tracing__Http *http,
                                             const char *p)
{
    sharp_config_error_t e = {{0}};
    Envoy__Config__Trace__V3__DatadogConfig *o = (Envoy__Config__Trace__V3__DatadogConfig *)sharp_any_unpack(
        &http->typed_config->base, &envoy__config__trace__v3__datadog_config__descriptor, &e);
    if (!o) {
        fail(b, p, "%s", e.msg);
        return NULL;
    }
    sharp_datadog_config_t *dc = NULL;
    char fp[1300];
    if (!o->collector_cluster[0]) {
        snprintf(fp, sizeof fp, "%s.collector_cluster", p);
        fail(b, fp, "value length must be at least 1 characters");
        goto out;
    }
    dc = sharp_calloc(1, sizeof *dc);
    dc->cluster = sharp_strdup(o->collector_cluster);
    dc->hostname = sharp_strdup(o->collector_hostname[0] ? o->collector_hostname : o->collector_cluster);
    /* makeConfig: "envoy" for an empty name (validation refuses one first) */
    dc->service = sharp_strdup(o->service_name[0] ? o->service_name : "envoy");
    sharp_stats_t *st = b->srv->stats;
    dc->st.reports_skipped_no_cluster = sharp_stats_counter(st, "tracing.datadog.reports_skipped_no_cluster");
    dc->st.reports_sent = sharp_stats_counter(st, "tracing.datadog.reports_sent");
    dc->st.reports_dropped = sharp_stats_counter(st, "tracing.datadog.reports_dropped");
    dc->st.reports_failed = sharp_stats_counter(st, "tracing.datadog.reports_failed");
out:
    protobuf_c_message_free_unpacked(&o->base, NULL);
    return dc;
}

/* A tracing provider (Tracing.Http): the Zipkin, OpenTelemetry, SkyWalking
 * or Datadog tracer, the ones SHARP implements (the support table refuses
 * the other tracers' types). */
static sharp_zipkin_config_t *build_zipkin(build_ctx_t *b, const Envoy__Config__Trace__V3__Tracing__Http *http,
                                           const char *path, sharp_otel_config_t **otel,
                                           sharp_skywalking_config_t **sw, sharp_datadog_config_t **dd)
{
    char p[1200];
    snprintf(p, sizeof p, "%s.typed_config", path);
    if (!http->typed_config) {
        fail(b, p, "typed_config is required");
        return NULL;
    }
    const char *slash = strrchr(http->typed_config->type_url, '/');
    const char *t = slash ? slash + 1 : http->typed_config->type_url;
    if (strcmp(t, OTEL_TYPE) == 0) {
        *otel = build_otel(b, http, p);
        return NULL;
    }
    if (strcmp(t, SKYWALKING_TYPE) == 0) {
        *sw = build_skywalking(b, http, p);
        return NULL;
    }
    if (strcmp(t, DATADOG_TYPE) == 0) {
        *dd = build_datadog(b, http, p);
        return NULL;
    }
    if (strcmp(t, ZIPKIN_TYPE) != 0) {
        fail(b, p, "tracer '%s' (%s) is not supported by SHARP: only envoy.tracers.zipkin (%s), "
             "envoy.tracers.opentelemetry (%s), envoy.tracers.skywalking (%s) and envoy.tracers.datadog (%s)",
             http->name, t, ZIPKIN_TYPE, OTEL_TYPE, SKYWALKING_TYPE, DATADOG_TYPE);
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    Envoy__Config__Trace__V3__ZipkinConfig *z = (Envoy__Config__Trace__V3__ZipkinConfig *)sharp_any_unpack(
        &http->typed_config->base, &envoy__config__trace__v3__zipkin_config__descriptor, &e);
    if (!z) {
        fail(b, p, "%s", e.msg);
        return NULL;
    }
    sharp_zipkin_config_t *zc = NULL;
    char fp[1300];
    switch (z->collector_endpoint_version) {
    case ENVOY__CONFIG__TRACE__V3__ZIPKIN_CONFIG__COLLECTOR_ENDPOINT_VERSION__HTTP_JSON: break;
    case ENVOY__CONFIG__TRACE__V3__ZIPKIN_CONFIG__COLLECTOR_ENDPOINT_VERSION__HTTP_PROTO:
        snprintf(fp, sizeof fp, "%s.collector_endpoint_version", p);
        fail(b, fp, "HTTP_PROTO (Zipkin protobuf over HTTP) is not supported by SHARP: use HTTP_JSON");
        goto out;
    case ENVOY__CONFIG__TRACE__V3__ZIPKIN_CONFIG__COLLECTOR_ENDPOINT_VERSION__GRPC:
        snprintf(fp, sizeof fp, "%s.collector_endpoint_version", p);
        fail(b, fp, "GRPC is not supported (Envoy does not implement it either): use HTTP_JSON");
        goto out;
    default:
        /* Envoy's SpanBuffer::makeSerializer refuses the unset default */
        snprintf(fp, sizeof fp, "%s.collector_endpoint_version", p);
        fail(b, fp, "hidden_envoy_deprecated_HTTP_JSON_V1 has been deprecated. Please use a non-default "
             "envoy::config::trace::v3::ZipkinConfig::CollectorEndpointVersion value.");
        goto out;
    }
    if (!z->collector_cluster[0]) {
        snprintf(fp, sizeof fp, "%s.collector_cluster", p);
        fail(b, fp, "collector_cluster must be specified when not using collector_service");
        goto out;
    }
    if (!z->collector_endpoint[0]) {
        snprintf(fp, sizeof fp, "%s.collector_endpoint", p);
        fail(b, fp, "collector_endpoint must be specified when using collector_cluster");
        goto out;
    }
    zc = sharp_calloc(1, sizeof *zc);
    zc->cluster = sharp_strdup(z->collector_cluster);
    zc->endpoint = sharp_strdup(z->collector_endpoint);
    zc->hostname = sharp_strdup(z->collector_hostname[0] ? z->collector_hostname : z->collector_cluster);
    zc->trace_id_128bit = z->trace_id_128bit;
    zc->shared_span_context = z->shared_span_context ? z->shared_span_context->value : true;
    sharp_stats_t *st = b->srv->stats;
    zc->st.spans_sent = sharp_stats_counter(st, "tracing.zipkin.spans_sent");
    zc->st.timer_flushed = sharp_stats_counter(st, "tracing.zipkin.timer_flushed");
    zc->st.reports_skipped_no_cluster = sharp_stats_counter(st, "tracing.zipkin.reports_skipped_no_cluster");
    zc->st.reports_sent = sharp_stats_counter(st, "tracing.zipkin.reports_sent");
    zc->st.reports_dropped = sharp_stats_counter(st, "tracing.zipkin.reports_dropped");
    zc->st.reports_failed = sharp_stats_counter(st, "tracing.zipkin.reports_failed");
out:
    protobuf_c_message_free_unpacked(&z->base, NULL);
    return zc;
}

static const bootstrap_t *the_bootstrap(const build_ctx_t *b)
{
    if (b->bootstrap) return b->bootstrap;
    return b->srv && b->srv->config ? (const bootstrap_t *)b->srv->config->bootstrap : NULL;
}

/* HttpConnectionManager.tracing: Envoy's ConnectionManagerTracingConfig and
 * its tracer: the provider of the connection manager, else the
 * bootstrap's tracing.http, else none (decisions without spans). */
static sharp_tracing_config_t *build_tracing(build_ctx_t *b, const hcm_pb_t *pb, const char *stat_prefix,
                                             const char *path)
{
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__Tracing *t =
        pb->tracing;
    char p[1200];
    sharp_tracing_config_t *tc = sharp_calloc(1, sizeof *tc);
    /* UNSPECIFIED is ingress, as Envoy's legacy behaviour */
    tc->egress = b->traffic_direction == ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND;
    /* client_sampling: a HUNDRED fraction whose numerator is the percent
     * (truncated); random and overall: rounded to a TEN_THOUSAND fraction */
    tc->sampling = (sharp_trace_sampling_t){
        .client_num = t->client_sampling ? (uint32_t)t->client_sampling->value : 100,
        .client_den = 100,
        .random_num = t->random_sampling ? (uint32_t)llround(t->random_sampling->value * 100.0) : 10000,
        .random_den = 10000,
        .overall_num = t->overall_sampling ? (uint32_t)llround(t->overall_sampling->value * 100.0) : 10000,
        .overall_den = 10000,
    };
    tc->max_path_tag_length = t->max_path_tag_length ? t->max_path_tag_length->value : 256;
    char terr[1024];
    snprintf(p, sizeof p, "%s.tracing.custom_tags", path);
    if (sharp_config_custom_tags(t->custom_tags, t->n_custom_tags, p, &tc->custom_tags, terr, sizeof terr) < 0) {
        /* the translator's message starts with its own path */
        const char *colon = strstr(terr, ": ");
        char sub[1200];
        snprintf(sub, sizeof sub, "%.*s", colon ? (int)(colon - terr) : 0, terr);
        fail(b, colon ? sub : p, "%s", colon ? colon + 2 : terr);
        sharp_tracing_config_free(tc);
        return NULL;
    }
    const bootstrap_t *bs = the_bootstrap(b);
    const Envoy__Config__Core__V3__Node *node = bs ? bs->node : NULL;
    tc->node_id = sharp_strdup(b->srv ? b->srv->node_id : "");
    tc->service_name = sharp_strdup(b->srv ? b->srv->node_cluster : "");
    tc->zone = sharp_strdup(node && node->locality ? node->locality->zone : "");
    const Envoy__Config__Trace__V3__Tracing__Http *http = NULL;
    if (t->provider) {
        http = t->provider;
        snprintf(p, sizeof p, "%s.tracing.provider", path);
    } else if (bs && bs->tracing && bs->tracing->http) {
        http = bs->tracing->http;
        snprintf(p, sizeof p, "tracing.http");
    }
    if (http && !(tc->zipkin = build_zipkin(b, http, p, &tc->otel, &tc->skywalking, &tc->datadog)) && !tc->otel &&
        !tc->skywalking && !tc->datadog) {
        sharp_tracing_config_free(tc);
        return NULL;
    }
    sharp_stats_t *st = b->srv->stats;
    tc->st.random_sampling = sharp_stats_counterf(st, "http.%s.tracing.random_sampling", stat_prefix);
    tc->st.service_forced = sharp_stats_counterf(st, "http.%s.tracing.service_forced", stat_prefix);
    tc->st.client_enabled = sharp_stats_counterf(st, "http.%s.tracing.client_enabled", stat_prefix);
    tc->st.not_traceable = sharp_stats_counterf(st, "http.%s.tracing.not_traceable", stat_prefix);
    tc->st.health_check = sharp_stats_counterf(st, "http.%s.tracing.health_check", stat_prefix);
    return tc;
}

static sharp_hcm_config_t *build_hcm(build_ctx_t *b, const hcm_pb_t *pb, const char *path)
{
    sharp_hcm_config_t *h = sharp_calloc(1, sizeof *h);
    h->rds_index = -1;
    char p[1024];
    if (!pb->stat_prefix[0]) {
        fail(b, path, "stat_prefix is required");
        goto bad;
    }
    h->stat_prefix = sharp_strdup(pb->stat_prefix);
    switch (pb->codec_type) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1:
        h->codec_type = SHARP_CODEC_HTTP1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2:
        h->codec_type = SHARP_CODEC_HTTP2;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO:
        h->codec_type = SHARP_CODEC_AUTO;
        break;
    default:
        snprintf(p, sizeof p, "%s.codec_type", path);
        fail(b, p, "codec_type HTTP3 is not supported by SHARP (HTTP/3, QUIC)");
        goto bad;
    }
    /* Http2ProtocolOptions: Envoy's defaults; the table refuses the fields
     * the downstream codec does not implement and checks the ranges */
    sharp_config_http2_options(pb->http2_protocol_options, &h->h2);
    const Envoy__Config__Core__V3__HttpProtocolOptions *common = pb->common_http_protocol_options;
    h->idle_timeout_ms = duration_ms(common ? common->idle_timeout : NULL, 3600 * 1000);
    h->has_max_connection_duration = common && common->max_connection_duration;
    h->max_connection_duration_ms = duration_ms(common ? common->max_connection_duration : NULL, 0);
    h->max_stream_duration_ms = duration_ms(common ? common->max_stream_duration : NULL, 0);
    h->headers_with_underscores_action = common ? (int)common->headers_with_underscores_action : 0;
    if (h->headers_with_underscores_action < 0 || h->headers_with_underscores_action > 2) {
        fail(b, path, "common_http_protocol_options.headers_with_underscores_action: unknown value %d",
             h->headers_with_underscores_action);
        goto bad;
    }
    h->http1_safe_max_connection_duration = pb->http1_safe_max_connection_duration;
    h->delayed_close_timeout_ms = duration_ms(pb->delayed_close_timeout, 1000);
    /* Unset, Envoy's default is the runtime's featureEnabled of
     * http_connection_manager.normalize_path (default 0%), drawn once when
     * the connection manager is built. */
    uint64_t rnd = sharp_xorshift64s(&b->random);
    h->normalize_path = pb->normalize_path ? pb->normalize_path->value
                                           : sharp_runtime_percent_enabled("http_connection_manager.normalize_path", 0, rnd);
    h->merge_slashes = pb->merge_slashes;
    h->path_with_escaped_slashes_action = (int)pb->path_with_escaped_slashes_action;
    if (h->path_with_escaped_slashes_action < 0 || h->path_with_escaped_slashes_action > 4) {
        fail(b, path, "path_with_escaped_slashes_action: unknown value %d", h->path_with_escaped_slashes_action);
        goto bad;
    }
    /* Envoy's getPathWithEscapedSlashesAction: the action applies if the
     * runtime's ..._action_enabled fraction (default 100%) says so, drawn
     * once here; IMPLEMENTATION_SPECIFIC_DEFAULT takes the runtime's
     * http_connection_manager.path_with_escaped_slashes_action (2 reject,
     * 3 redirect, 4 forward, anything else keep). */
    if (!sharp_runtime_fraction_enabled("http_connection_manager.path_with_escaped_slashes_action_enabled", 100, 100,
                                        sharp_xorshift64s(&b->random))) {
        h->path_with_escaped_slashes_action = SHARP_ESCAPED_SLASHES_KEEP;
    } else if (h->path_with_escaped_slashes_action == SHARP_ESCAPED_SLASHES_DEFAULT) {
        uint64_t v = sharp_runtime_get_u64("http_connection_manager.path_with_escaped_slashes_action", 0);
        h->path_with_escaped_slashes_action = v >= 2 && v <= 4 ? (int)v : SHARP_ESCAPED_SLASHES_KEEP;
    }
    if (pb->internal_address_config) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__InternalAddressConfig
            *iac = pb->internal_address_config;
        h->has_internal_address_config = true;
        h->internal_unix_sockets = iac->unix_sockets;
        if (iac->n_cidr_ranges) h->internal_cidrs = sharp_calloc(iac->n_cidr_ranges, sizeof *h->internal_cidrs);
        for (size_t i = 0; i < iac->n_cidr_ranges; i++) {
            const Envoy__Config__Core__V3__CidrRange *cr = iac->cidr_ranges[i];
            uint32_t len = cr->prefix_len ? cr->prefix_len->value : 0;
            snprintf(p, sizeof p, "%s.internal_address_config.cidr_ranges[%zu]", path, i);
            if (sharp_cidr_parse(cr->address_prefix, len, &h->internal_cidrs[i]) < 0) {
                fail(b, p, "invalid ip/mask combo '%s/%u'", cr->address_prefix, len);
                goto bad;
            }
            h->ninternal_cidrs++;
        }
    }
    /* unset limits default to Envoy's runtime overrides of its defaults */
    uint64_t rt_count = sharp_runtime_get_u64("envoy.reloadable_features.max_request_headers_count", 100);
    uint64_t rt_kb = sharp_runtime_get_u64("envoy.reloadable_features.max_request_headers_size_kb", 60);
    if ((!common || !common->max_headers_count) && (rt_count == 0 || rt_count > UINT32_MAX)) {
        fail(b, "layered_runtime", "envoy.reloadable_features.max_request_headers_count: %llu is not in [1, %u]",
             (unsigned long long)rt_count, UINT32_MAX);
        goto bad;
    }
    h->max_headers_count = common && common->max_headers_count ? common->max_headers_count->value : (uint32_t)rt_count;
    h->stream_idle_timeout_ms = duration_ms(pb->stream_idle_timeout, 300 * 1000);
    h->request_timeout_ms = duration_ms(pb->request_timeout, 0);
    h->request_headers_timeout_ms = duration_ms(pb->request_headers_timeout, 0);
    h->append_local_overload = pb->append_local_overload;
    h->drain_timeout_ms = duration_ms(pb->drain_timeout, 5000);
    if (!pb->max_request_headers_kb && (rt_kb == 0 || rt_kb > 8192)) {
        fail(b, "layered_runtime", "envoy.reloadable_features.max_request_headers_size_kb: %llu is not in [1, 8192]",
             (unsigned long long)rt_kb);
        goto bad;
    }
    h->max_request_headers_kb = pb->max_request_headers_kb ? pb->max_request_headers_kb->value : (uint32_t)rt_kb;
    if (h->max_request_headers_kb == 0 || h->max_request_headers_kb > 8192) {
        fail(b, path, "max_request_headers_kb must be in [1, 8192]");
        goto bad;
    }
    h->use_remote_address = pb->use_remote_address && pb->use_remote_address->value;
    h->xff_num_trusted_hops = pb->xff_num_trusted_hops;
    h->skip_xff_append = pb->skip_xff_append;
    h->generate_request_id = !pb->generate_request_id || pb->generate_request_id->value;
    h->preserve_external_request_id = pb->preserve_external_request_id;
    h->forward_client_cert = (int)pb->forward_client_cert_details; /* "defined" in the support table */
    if (pb->set_current_client_cert_details) {
        const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails
            *d = pb->set_current_client_cert_details;
        h->client_cert_details = (d->subject && d->subject->value ? SHARP_XFCC_SUBJECT : 0) |
                                 (d->cert ? SHARP_XFCC_CERT : 0) | (d->chain ? SHARP_XFCC_CHAIN : 0) |
                                 (d->dns ? SHARP_XFCC_DNS : 0) | (d->uri ? SHARP_XFCC_URI : 0);
    }
    h->always_set_request_id_in_response = pb->always_set_request_id_in_response;
    h->server_name = sharp_strdup(pb->server_name[0] ? pb->server_name : "sharp");
    h->server_header_transformation = (int)pb->server_header_transformation;
    h->via = pb->via[0] ? sharp_strdup(pb->via) : NULL;
    /* Envoy's HttpConnectionManagerConfig: scheme_to_overwrite wins over
     * match_upstream; "in: [http, https]" is its validation rule */
    if (pb->scheme_header_transformation) {
        const Envoy__Config__Core__V3__SchemeHeaderTransformation *st = pb->scheme_header_transformation;
        const char *sc = st->transformation_case ==
                                 ENVOY__CONFIG__CORE__V3__SCHEME_HEADER_TRANSFORMATION__TRANSFORMATION_SCHEME_TO_OVERWRITE
                             ? st->scheme_to_overwrite
                             : "";
        if (sc[0]) {
            if (strcmp(sc, "http") != 0 && strcmp(sc, "https") != 0) {
                fail(b, path, "scheme_header_transformation.scheme_to_overwrite: value must be in list [http https]");
                goto bad;
            }
            h->scheme_to_set = sharp_strdup(sc);
            if (st->match_upstream)
                sharp_log_warn("%s: match_upstream and scheme_to_overwrite both set, using scheme_to_overwrite", path);
        } else {
            h->scheme_match_upstream = st->match_upstream;
        }
    }
    if (pb->add_user_agent && pb->add_user_agent->value) {
        h->user_agent = sharp_strdup(b->srv ? b->srv->node_cluster : "");
        h->user_agent_node = sharp_strdup(b->srv ? b->srv->node_id : "");
    }
    /* upgrade_configs: Envoy refuses a type listed twice (case-insensitively).
     * CONNECT is a type too: it lets CONNECT requests through (proxied, or
     * terminated by a route's connect_config). */
    if (pb->n_upgrade_configs) h->upgrades = sharp_calloc(pb->n_upgrade_configs, sizeof *h->upgrades);
    for (size_t i = 0; i < pb->n_upgrade_configs; i++) {
        const char *type = pb->upgrade_configs[i]->upgrade_type;
        snprintf(p, sizeof p, "%s.upgrade_configs[%zu].upgrade_type", path, i);
        for (uint32_t j = 0; j < h->nupgrades; j++) {
            if (strcasecmp(h->upgrades[j].type, type) == 0) {
                fail(b, p, "Error: multiple upgrade configs with the same name: '%s'", type);
                goto bad;
            }
        }
        h->upgrades[h->nupgrades].type = sharp_strdup(type);
        h->upgrades[h->nupgrades].enabled =
            !pb->upgrade_configs[i]->enabled || pb->upgrade_configs[i]->enabled->value;
        h->nupgrades++;
    }
    if (pb->http_protocol_options) {
        h->accept_http_10 = pb->http_protocol_options->accept_http_10;
        if (pb->http_protocol_options->default_host_for_http_10[0])
            h->default_host_for_http_10 = sharp_strdup(pb->http_protocol_options->default_host_for_http_10);
        char kerr[512];
        if (sharp_config_h1_key_format(pb->http_protocol_options, &h->h1_keys, kerr, sizeof kerr) < 0) {
            snprintf(p, sizeof p, "%s.http_protocol_options", path);
            fail(b, p, "%s", kerr);
            goto bad;
        }
    }
    if (pb->route_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG) {
        char rerr[1024] = "";
        h->routes = sharp_route_table_create(pb->route_config, rerr, sizeof rerr);
        snprintf(p, sizeof p, "%s.route_config", path);
        if (!h->routes) {
            /* the route translator's message starts with its own sub-path */
            char sub[2048];
            const char *colon = strstr(rerr, ": ");
            if (colon && (size_t)(colon - rerr) < sizeof sub - 1) {
                snprintf(sub, sizeof sub, "%s.%.*s", p, (int)(colon - rerr), rerr);
                fail(b, sub, "%s", colon + 2);
            } else {
                fail(b, p, "%s", rerr);
            }
            goto bad;
        }
    } else if (pb->route_specifier_case ==
               ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS) {
        /* RDS: the route table comes from the snapshot each stream runs on */
        char rerr[1200];
        snprintf(p, sizeof p, "%s.rds", path);
        h->rds_index = b->srv->xds ? sharp_xds_rds_subscribe(b->srv->xds, &pb->rds->base, h->stat_prefix, p, rerr,
                                                             sizeof rerr)
                                   : -1;
        if (h->rds_index < 0) {
            fail(b, p, "%s", b->srv->xds ? rerr : "RDS needs the server's xDS manager");
            goto bad;
        }
    } else {
        fail(b, path, "route_config is required");
        goto bad;
    }
    if (pb->local_reply_config) {
        char lerr[1024] = "";
        h->local_reply = sharp_config_local_reply(pb->local_reply_config, lerr, sizeof lerr);
        if (!h->local_reply) {
            snprintf(p, sizeof p, "%s.local_reply_config", path);
            /* the translator's message starts with its own sub-path */
            char sub[2048];
            const char *colon = strstr(lerr, ": ");
            if (colon && (size_t)(colon - lerr) < sizeof sub - 1) {
                snprintf(sub, sizeof sub, "%s.%.*s", p, (int)(colon - lerr), lerr);
                fail(b, sub, "%s", colon + 2);
            } else {
                fail(b, p, "%s", lerr);
            }
            goto bad;
        }
    }
    hcm_stats_init(h, b->srv->stats);
    if (pb->tracing && !(h->tracing = build_tracing(b, pb, h->stat_prefix, path))) goto bad;
    if (build_filters(b, pb, h, path) < 0) goto bad;
    if (h->routes) {
        snprintf(p, sizeof p, "%s.route_config", path);
        if (check_per_filter(b, h, p) < 0) goto bad;
    }
    if (build_access_logs(b, (ProtobufCMessage *const *)pb->access_log, pb->n_access_log, path, h) < 0) goto bad;
    return h;
bad:
    sharp_hcm_config_free(h);
    return NULL;
}

/* ---- listeners ---- */

#define RAW_BUFFER_TYPE "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
#define DOWNSTREAM_TLS_TYPE "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define UPSTREAM_TLS_TYPE "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

/* The message name of a transport socket's typed_config, "" without one. */
static const char *transport_socket_type(const Envoy__Config__Core__V3__TransportSocket *ts)
{
    if (!ts || !ts->typed_config || !ts->typed_config->type_url) return "";
    const char *slash = strrchr(ts->typed_config->type_url, '/');
    return slash ? slash + 1 : ts->typed_config->type_url;
}

/* No transport socket, or raw_buffer: plaintext. A typed_config has passed
 * the support table; only RawBuffer is plaintext (a TLS context where
 * SHARP does not wire it is refused by the caller, never taken as
 * plaintext). A bare name must name raw_buffer. */
static bool plaintext_transport_socket(const Envoy__Config__Core__V3__TransportSocket *ts)
{
    if (!ts) return true;
    if (ts->typed_config) return !strcmp(transport_socket_type(ts), RAW_BUFFER_TYPE);
    return !strcmp(ts->name, "envoy.transport_sockets.raw_buffer") || !strcmp(ts->name, "raw_buffer");
}

/* A transport socket's Downstream/UpstreamTlsContext, translated and built
 * into a server (filter chain) or client (cluster) context once, at load;
 * every worker's connections share it (a client's, its session store too).
 * Errors name the field's path. */
static sharp_tls_slot_t *build_tls(build_ctx_t *b, const Envoy__Config__Core__V3__TransportSocket *ts, const char *path, bool server,
                                   const char *what, const char *stat_prefix)
{
    char p[1024], err[768];
    snprintf(p, sizeof p, "%s.typed_config", path);
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(
        &ts->typed_config->base,
        server ? &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
               : &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
        &e);
    if (!m) {
        fail(b, p, "%s", e.msg);
        return NULL;
    }
    sharp_tls_config_t cfg;
    if (b->sds) sharp_sds_begin(b->sds);
    int rc = server ? sharp_tls_config_downstream((const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *)m,
                                                  &cfg, err, sizeof err)
                    : sharp_tls_config_upstream((const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *)m,
                                                &cfg, err, sizeof err);
    if (rc == 0) {
        sharp_tls_ctx_t *ctx = sharp_tls_ctx_create(&cfg, err, sizeof err);
        if (ctx) {
            sharp_tls_slot_t *slot = sharp_tls_slot_new(ctx);
            /* with SDS secrets the context is rebuilt when they rotate: the
             * message is kept for that */
            sharp_stat_id_t updated = 0;
            if (b->srv && b->srv->stats)
                updated = sharp_stats_counterf(b->srv->stats, "%s.ssl_context_update_by_sds", stat_prefix);
            if (!b->sds || !sharp_sds_attach(b->sds, slot, m, server, what, updated))
                protobuf_c_message_free_unpacked(m, NULL);
            return slot;
        }
        sharp_tls_config_free(&cfg);
    } else if (b->sds && sharp_sds_pending(b->sds)) {
        /* a secret from an SDS server, still to come: no context until it
         * does (its arrival builds it), as Envoy's listeners and clusters
         * wait for their SDS secrets */
        sharp_tls_slot_t *slot = sharp_tls_slot_new(NULL);
        sharp_stat_id_t updated = 0;
        if (b->srv && b->srv->stats)
            updated = sharp_stats_counterf(b->srv->stats, "%s.ssl_context_update_by_sds", stat_prefix);
        sharp_sds_attach(b->sds, slot, m, server, what, updated);
        sharp_info(config, "%s: TLS waits for %s", what, err);
        return slot;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    /* "field.path: what is wrong": the path goes after the context's */
    const char *colon = strstr(err, ": ");
    if (colon && !memchr(err, ' ', (size_t)(colon - err))) {
        snprintf(p, sizeof p, "%s.typed_config.%.*s", path, (int)(colon - err), err);
        fail(b, p, "%s", colon + 2);
    } else {
        fail(b, p, "%s", err);
    }
    return NULL;
}

/* CidrRanges of a FilterChainMatch field. */
static int fc_cidrs(build_ctx_t *b, Envoy__Config__Core__V3__CidrRange *const *pb, size_t n, const char *path,
                    const char *field, sharp_cidr_t **out, uint32_t *nout)
{
    char p[1024];
    *out = n ? sharp_calloc(n, sizeof **out) : NULL;
    *nout = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        uint32_t len = pb[i]->prefix_len ? pb[i]->prefix_len->value : 0;
        snprintf(p, sizeof p, "%s.%s[%zu]", path, field, i);
        if (sharp_cidr_parse(pb[i]->address_prefix, len, &(*out)[i]) < 0)
            return fail(b, p, "malformed IP address: %s/%u", pb[i]->address_prefix, len);
    }
    return 0;
}

static char **fc_strs(char *const *pb, size_t n, uint32_t *nout)
{
    char **out = n ? sharp_calloc(n, sizeof *out) : NULL;
    for (size_t i = 0; i < n; i++) out[i] = sharp_strdup(pb[i]);
    *nout = (uint32_t)n;
    return out;
}

/* FilterChainMatch. Server names, application protocols and the "tls"
 * transport protocol are only known after a listener filter (TLS or HTTP
 * inspector) has read the first bytes. Envoy once injected a TLS inspector
 * for them; without one they would never match, so SHARP refuses them
 * naming the listener filter to add. */
static int build_fc_match(build_ctx_t *b, const Envoy__Config__Listener__V3__FilterChainMatch *pb, const char *path,
                          const sharp_listener_config_t *l, sharp_fc_match_t *m)
{
    char p[1024];
    if (!pb) return 0;
    if (pb->n_server_names && !l->inspect_tls) {
        snprintf(p, sizeof p, "%s.server_names", path);
        return fail(b, p, "server_names needs the envoy.filters.listener.tls_inspector listener filter, which this "
                          "listener does not have (without it no connection has a server name)");
    }
    if (pb->n_application_protocols && !l->inspect_tls && !l->inspect_http) {
        snprintf(p, sizeof p, "%s.application_protocols", path);
        return fail(b, p, "application_protocols needs the envoy.filters.listener.tls_inspector or "
                          "envoy.filters.listener.http_inspector listener filter, which this listener does not have");
    }
    if (strcmp(pb->transport_protocol, "tls") == 0 && !l->inspect_tls) {
        snprintf(p, sizeof p, "%s.transport_protocol", path);
        return fail(b, p, "transport_protocol 'tls' needs the envoy.filters.listener.tls_inspector listener "
                          "filter, which this listener does not have");
    }
    for (size_t i = 0; i < pb->n_server_names; i++) {
        /* Envoy: a name, or a wildcard of the form "*.example.com" */
        const char *n = pb->server_names[i];
        const char *star = strchr(n, '*');
        if (!n[0] || (star && (star != n || n[1] != '.' || strchr(n + 1, '*')))) {
            snprintf(p, sizeof p, "%s.server_names[%zu]", path, i);
            return fail(b, p, "error adding listener '%s': partial wildcards are not supported in \"server_names\"",
                        l->address);
        }
    }
    if (pb->destination_port) m->destination_port = pb->destination_port->value;
    if (pb->transport_protocol[0]) m->transport_protocol = sharp_strdup(pb->transport_protocol);
    m->server_names = fc_strs(pb->server_names, pb->n_server_names, &m->nserver_names);
    m->application_protocols = fc_strs(pb->application_protocols, pb->n_application_protocols,
                                       &m->napplication_protocols);
    m->source_type = (sharp_fc_source_type_t)pb->source_type;
    if (fc_cidrs(b, pb->prefix_ranges, pb->n_prefix_ranges, path, "prefix_ranges", &m->prefix_ranges,
                 &m->nprefix_ranges) < 0 ||
        fc_cidrs(b, pb->direct_source_prefix_ranges, pb->n_direct_source_prefix_ranges, path,
                 "direct_source_prefix_ranges", &m->direct_source_prefix_ranges,
                 &m->ndirect_source_prefix_ranges) < 0 ||
        fc_cidrs(b, pb->source_prefix_ranges, pb->n_source_prefix_ranges, path, "source_prefix_ranges",
                 &m->source_prefix_ranges, &m->nsource_prefix_ranges) < 0)
        return -1;
    if (pb->n_source_ports) m->source_ports = sharp_calloc(pb->n_source_ports, sizeof *m->source_ports);
    m->nsource_ports = (uint32_t)pb->n_source_ports;
    for (size_t i = 0; i < pb->n_source_ports; i++) {
        /* Envoy: repeated uint32 source_ports, items in [1, 65535] */
        if (pb->source_ports[i] < 1 || pb->source_ports[i] > 65535) {
            snprintf(p, sizeof p, "%s.source_ports[%zu]", path, i);
            return fail(b, p, "must be in [1, 65535], got %u", pb->source_ports[i]);
        }
        m->source_ports[i] = pb->source_ports[i];
    }
    return 0;
}

/* TcpProxy.TunnelingConfig, with Envoy's checks (TunnelingConfigHelper):
 * the hostname is a substitution format string, post_path needs use_post
 * and defaults to "/". */
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__TunnelingConfig tunnel_pb_t;
static int build_tcp_tunnel(build_ctx_t *b, const tunnel_pb_t *pb, const char *path, sharp_tcp_proxy_config_t *t)
{
    char p[1024], err[1024] = "";
    snprintf(p, sizeof p, "%s.tunneling_config", path);
    sharp_tcp_tunnel_config_t *tn = sharp_calloc(1, sizeof *tn);
    t->tunnel = tn;
    tn->hostname = sharp_strdup(pb->hostname);
    tn->use_post = pb->use_post;
    if (pb->post_path[0] && !pb->use_post)
        return fail(b, p, "post_path: Can't set a post path when POST method isn't used");
    tn->post_path = sharp_strdup(pb->post_path[0] ? pb->post_path : "/");
    if (strchr(pb->hostname, '%')) {
        tn->host_fmt = sharp_access_log_format_compile(pb->hostname, err, sizeof err);
        if (!tn->host_fmt) return fail(b, p, "hostname: %s", err);
    }
    if (sharp_config_header_ops(p, "headers_to_add", pb->headers_to_add, pb->n_headers_to_add, NULL, NULL, 0,
                                &tn->headers, err, sizeof err) < 0) {
        /* the message is "<full field path>: <what>" */
        char *colon = strstr(err, ": ");
        if (!colon) return fail(b, p, "%s", err);
        *colon = '\0';
        return fail(b, err, "%s", colon + 2);
    }
    return 0;
}

/* The TCP proxy (Envoy's TcpProxy config): its settings, stats
 * (tcp.<stat_prefix>.*) and access logs, in the connection settings the
 * connection manager runs its connections with (snapshot.h). The support
 * table has refused the fields SHARP does not implement. */
static sharp_hcm_config_t *build_tcp_proxy(build_ctx_t *b, const tcp_proxy_pb_t *pb, const char *path)
{
    sharp_hcm_config_t *h = sharp_calloc(1, sizeof *h);
    sharp_tcp_proxy_config_t *t = sharp_calloc(1, sizeof *t);
    h->tcp_proxy = t;
    h->rds_index = -1;
    t->stat_prefix = sharp_strdup(pb->stat_prefix);
    h->stat_prefix = sharp_strdup(pb->stat_prefix);
    switch (pb->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER:
        t->clusters = sharp_calloc(1, sizeof *t->clusters);
        t->clusters[0].name = sharp_strdup(pb->cluster);
        t->clusters[0].weight = 1;
        t->nclusters = 1;
        t->total_weight = 1;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS: {
        const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *w = pb->weighted_clusters;
        t->clusters = sharp_calloc(w->n_clusters ? w->n_clusters : 1, sizeof *t->clusters);
        for (size_t i = 0; i < w->n_clusters; i++) {
            t->clusters[i].name = sharp_strdup(w->clusters[i]->name);
            t->clusters[i].weight = w->clusters[i]->weight;
            t->total_weight += w->clusters[i]->weight;
            t->nclusters++;
        }
        break;
    }
    default:
        break;
    }
    /* metadata_match: the criteria of subset load balancing, a weighted
     * cluster's own merged over the filter's, as Envoy's TcpProxy */
    sharp_lbmeta_t *top = endpoint_lb_meta(pb->metadata_match);
    for (uint32_t i = 0; i < t->nclusters; i++) {
        sharp_lbmeta_t *own =
            pb->cluster_specifier_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS
                ? endpoint_lb_meta(pb->weighted_clusters->clusters[i]->metadata_match)
                : NULL;
        t->clusters[i].metadata_match = own ? sharp_lbmeta_merge(top, own) : sharp_lbmeta_dup(top);
        free(own);
    }
    free(top);
    switch (pb->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER:
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        break;
    default:
        fail(b, path, "cluster_specifier: one of cluster or weighted_clusters is required");
        sharp_hcm_config_free(h);
        return NULL;
    }
    t->idle_timeout_ms = duration_ms(pb->idle_timeout, 3600 * 1000);
    t->max_connect_attempts = pb->max_connect_attempts ? pb->max_connect_attempts->value : 1;
    t->max_duration_ms = duration_ms(pb->max_downstream_connection_duration, 0);
    /* access_log_options replaces the two deprecated fields, as Envoy */
    if (pb->access_log_options) {
        t->log_on_connected = pb->access_log_options->flush_access_log_on_connected;
        t->log_interval_ms = duration_ms(pb->access_log_options->access_log_flush_interval, 0);
    } else {
        t->log_on_connected = pb->flush_access_log_on_connected;
        t->log_interval_ms = duration_ms(pb->access_log_flush_interval, 0);
    }
    if (pb->max_downstream_connection_duration_jitter_percentage)
        t->max_duration_jitter_pct = pb->max_downstream_connection_duration_jitter_percentage->value;
    sharp_stats_t *s = b->srv->stats;
#define C(f, n) t->st.f = sharp_stats_counterf(s, "tcp.%s." n, t->stat_prefix)
    C(cx_total, "downstream_cx_total");
    C(cx_no_route, "downstream_cx_no_route");
    C(tx_bytes_total, "downstream_cx_tx_bytes_total");
    C(rx_bytes_total, "downstream_cx_rx_bytes_total");
    C(paused_reading_total, "downstream_flow_control_paused_reading_total");
    C(resumed_reading_total, "downstream_flow_control_resumed_reading_total");
    C(idle_timeout, "idle_timeout");
    C(max_duration, "max_downstream_connection_duration");
#undef C
    /* the connection manager counts these three for the connection */
    h->st.cx_total = t->st.cx_total;
    h->st.rx_bytes_total = t->st.rx_bytes_total;
    h->st.tx_bytes_total = t->st.tx_bytes_total;
    if (build_access_logs(b, (ProtobufCMessage *const *)pb->access_log, pb->n_access_log, path, h) < 0) {
        sharp_hcm_config_free(h);
        return NULL;
    }
    if (pb->tunneling_config && build_tcp_tunnel(b, pb->tunneling_config, path, t) < 0) {
        sharp_hcm_config_free(h);
        return NULL;
    }
    return h;
}

static void net_rbacs_free(sharp_net_rbac_t **r, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) sharp_net_rbac_free(r[i]);
    free(r);
}

/* The chain's network RBAC filters go with its terminal filter's config. */
static int attach_net_rbacs(sharp_hcm_config_t *h, sharp_net_rbac_t **r, uint32_t n)
{
    if (!h) {
        net_rbacs_free(r, n);
        return -1;
    }
    if (n) {
        h->net_rbac = (struct sharp_net_rbac **)r;
        h->nnet_rbac = n;
        for (uint32_t i = 0; i < n; i++) h->net_rbac_continuous |= sharp_net_rbac_continuous(r[i]);
    } else {
        free(r);
    }
    return 0;
}

/* One filter chain: plaintext or TLS transport, one network filter (the
 * HCM or the TCP proxy). */
static int build_filter_chain(build_ctx_t *b, const Envoy__Config__Listener__V3__FilterChain *fc, const char *path,
                              const sharp_listener_config_t *l, sharp_filter_chain_config_t *out)
{
    char p[1024];
    out->name = sharp_strdup(fc->name ? fc->name : "");
    snprintf(p, sizeof p, "%s.filter_chain_match", path);
    /* with a filter_chain_matcher Envoy ignores filter_chain_match */
    if (!l->fc_matcher_set && build_fc_match(b, fc->filter_chain_match, p, l, &out->match) < 0) return -1;
    snprintf(p, sizeof p, "%s.transport_socket", path);
    if (!strcmp(transport_socket_type(fc->transport_socket), DOWNSTREAM_TLS_TYPE)) {
        char what[1200], prefix[300];
        snprintf(what, sizeof what, "listener '%s' filter chain '%s'", l->name ? l->name : "", out->name);
        snprintf(prefix, sizeof prefix, "listener.%s.server_ssl_socket_factory", l->stat_name);
        if (!(out->tls = build_tls(b, fc->transport_socket, p, true, what, prefix))) return -1;
    } else if (!plaintext_transport_socket(fc->transport_socket)) {
        return fail(b, p, "transport socket '%s' is not supported by SHARP on listeners (raw_buffer, or tls with a "
                    "DownstreamTlsContext)", fc->transport_socket->name);
    }
    if (fc->n_filters == 0)
        return fail(b, path, "the filter chain must end with envoy.filters.network.http_connection_manager or "
                    "envoy.filters.network.tcp_proxy");
    /* envoy.filters.network.rbac filters may come before the terminal one */
    sharp_net_rbac_t **rbacs = fc->n_filters > 1 ? sharp_calloc(fc->n_filters - 1, sizeof *rbacs) : NULL;
    uint32_t nrbacs = 0;
    for (size_t i = 0; i + 1 < fc->n_filters; i++) {
        const Envoy__Config__Listener__V3__Filter *rf = fc->filters[i];
        snprintf(p, sizeof p, "%s.filters[%zu]", path, i);
        const char *rt = NULL;
        if (rf->config_type_case == ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG) {
            const char *sl = strrchr(rf->typed_config->type_url, '/');
            rt = sl ? sl + 1 : rf->typed_config->type_url;
        }
        if (!rt || strcmp(rt, NET_RBAC_TYPE) != 0) {
            net_rbacs_free(rbacs, nrbacs);
            if (rt && (!strcmp(rt, HCM_TYPE) || !strcmp(rt, TCP_PROXY_TYPE)))
                return fail(b, p, "network filter '%s' is terminal: it must be the last filter of the chain", rf->name);
            return fail(b, p, "network filter '%s' (%s) is not supported: only %s before the last filter (%s or %s)",
                        rf->name, rt ? rt : "no typed_config", NET_RBAC_TYPE, HCM_TYPE, TCP_PROXY_TYPE);
        }
        sharp_config_error_t re = {{0}};
        ProtobufCMessage *rm = sharp_any_unpack(&rf->typed_config->base,
            &envoy__extensions__filters__network__rbac__v3__rbac__descriptor, &re);
        if (!rm) {
            net_rbacs_free(rbacs, nrbacs);
            return fail(b, p, "typed_config: %s", re.msg);
        }
        char rerr[1024];
        rbacs[nrbacs] = sharp_net_rbac_create((const Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *)rm,
                                              b->srv->stats, "typed_config", rerr, sizeof rerr);
        protobuf_c_message_free_unpacked(rm, NULL);
        if (!rbacs[nrbacs]) {
            net_rbacs_free(rbacs, nrbacs);
            return fail(b, p, "%s", rerr);
        }
        nrbacs++;
    }
    size_t last = fc->n_filters - 1;
    const Envoy__Config__Listener__V3__Filter *f = fc->filters[last];
    snprintf(p, sizeof p, "%s.filters[%zu]", path, last);
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG) {
        net_rbacs_free(rbacs, nrbacs);
        return fail(b, p, "typed_config is required");
    }
    const char *slash = strrchr(f->typed_config->type_url, '/');
    const char *t = slash ? slash + 1 : f->typed_config->type_url;
    sharp_config_error_t e = {{0}};
    if (strcmp(t, TCP_PROXY_TYPE) == 0) {
        ProtobufCMessage *m = sharp_any_unpack(&f->typed_config->base,
            &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor, &e);
        if (!m) {
            net_rbacs_free(rbacs, nrbacs);
            return fail(b, p, "typed_config: %s", e.msg);
        }
        snprintf(p, sizeof p, "%s.filters[%zu].typed_config", path, last);
        out->hcm = build_tcp_proxy(b, (const tcp_proxy_pb_t *)m, p);
        protobuf_c_message_free_unpacked(m, NULL);
        return attach_net_rbacs(out->hcm, rbacs, nrbacs);
    }
    if (strcmp(t, HCM_TYPE) != 0) {
        net_rbacs_free(rbacs, nrbacs);
        if (!strcmp(t, NET_RBAC_TYPE))
            return fail(b, p, "network filter '%s' is not terminal: the chain must end with %s or %s", f->name,
                        HCM_TYPE, TCP_PROXY_TYPE);
        return fail(b, p, "network filter '%s' (%s) is not supported: only %s and %s (with %s before them)", f->name,
                    t, HCM_TYPE, TCP_PROXY_TYPE, NET_RBAC_TYPE);
    }
    ProtobufCMessage *m = sharp_any_unpack(&f->typed_config->base,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor, &e);
    if (!m) {
        net_rbacs_free(rbacs, nrbacs);
        return fail(b, p, "typed_config: %s", e.msg);
    }
    snprintf(p, sizeof p, "%s.filters[%zu].typed_config", path, last);
    out->hcm = build_hcm(b, (const hcm_pb_t *)m, p);
    protobuf_c_message_free_unpacked(m, NULL);
    return attach_net_rbacs(out->hcm, rbacs, nrbacs);
}

#define TLS_INSPECTOR "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
#define HTTP_INSPECTOR "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
#define ORIGINAL_DST "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
#define PROXY_PROTOCOL "envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"

typedef Envoy__Extensions__Filters__Listener__ProxyProtocol__V3__ProxyProtocol pp_pb_t;

/* The PROXY protocol listener filter's config (Envoy's Config): its
 * options, TLV rules and stats, proxy_proto.[<stat_prefix>.] and the
 * legacy downstream_cx_proxy_proto_error, both rooted at the server's
 * scope as Envoy's listener filter scope is. */
static int build_proxy_protocol(build_ctx_t *b, const pp_pb_t *pb, sharp_listener_config_t *l, const char *path)
{
    char p[1024];
    int rc = 0;
    l->proxy_protocol = true;
    l->pp_opts.allow_without = pb->allow_requests_without_proxy_protocol;
    for (size_t i = 0; i < pb->n_disallowed_versions; i++) {
        if (pb->disallowed_versions[i] == ENVOY__CONFIG__CORE__V3__PROXY_PROTOCOL_CONFIG__VERSION__V1) {
            l->pp_opts.deny_v1 = true;
        } else if (pb->disallowed_versions[i] == ENVOY__CONFIG__CORE__V3__PROXY_PROTOCOL_CONFIG__VERSION__V2) {
            l->pp_opts.deny_v2 = true;
        } else {
            snprintf(p, sizeof p, "%s.typed_config.disallowed_versions[%zu]", path, i);
            rc = fail(b, p, "value must be one of the defined enum values (V1, V2)");
            goto out;
        }
    }
    if (l->pp_opts.deny_v1 && l->pp_opts.deny_v2) {
        snprintf(p, sizeof p, "%s.typed_config.disallowed_versions", path);
        rc = fail(b, p, "Proxy Protocol filter is misconfigured: all proxy protocol versions are disallowed.");
        goto out;
    }
    l->pp_rules = pb->n_rules ? sharp_calloc(pb->n_rules, sizeof *l->pp_rules) : NULL;
    for (size_t i = 0; i < pb->n_rules; i++) {
        const Envoy__Extensions__Filters__Listener__ProxyProtocol__V3__ProxyProtocol__Rule *r = pb->rules[i];
        const Envoy__Extensions__Filters__Listener__ProxyProtocol__V3__ProxyProtocol__KeyValuePair *kv =
            r->on_tlv_present;
        struct sharp_pp_rule *out = &l->pp_rules[l->npp_rules++];
        out->tlv_type = (uint8_t)r->tlv_type;
        out->ns = sharp_strdup(kv && kv->metadata_namespace[0] ? kv->metadata_namespace
                                                                : "envoy.filters.listener.proxy_protocol");
        out->key = sharp_strdup(kv ? kv->key : "");
    }
    sharp_stats_t *s = b->srv->stats;
    char pre[256];
    if (pb->stat_prefix[0]) snprintf(pre, sizeof pre, "proxy_proto.%s.", pb->stat_prefix);
    else snprintf(pre, sizeof pre, "proxy_proto.");
    l->pp_stats.cx_error = sharp_stats_counterf(s, "downstream_cx_proxy_proto_error");
    l->pp_stats.not_found_allowed = sharp_stats_counterf(s, "%snot_found_allowed", pre);
    l->pp_stats.not_found_disallowed = sharp_stats_counterf(s, "%snot_found_disallowed", pre);
    for (int v = 0; v < 2; v++) {
        l->pp_stats.found[v] = sharp_stats_counterf(s, "%sversions.v%d.found", pre, v + 1);
        l->pp_stats.disallowed[v] = sharp_stats_counterf(s, "%sversions.v%d.disallowed", pre, v + 1);
        l->pp_stats.error[v] = sharp_stats_counterf(s, "%sversions.v%d.error", pre, v + 1);
    }
out:
    return rc;
}

/* listener_filters: Envoy's TLS and HTTP inspectors and the original
 * destination filter (other listener filters are refused by the support
 * table's extension list), by typed config or, as Envoy's older
 * documentation writes them, by name alone. */
static int build_listener_filters(build_ctx_t *b, const Envoy__Config__Listener__V3__Listener *pb,
                                  sharp_listener_config_t *l, const char *path)
{
    char p[1024];
    for (size_t i = 0; i < pb->n_listener_filters; i++) {
        const Envoy__Config__Listener__V3__ListenerFilter *f = pb->listener_filters[i];
        snprintf(p, sizeof p, "%s.listener_filters[%zu]", path, i);
        const char *t = NULL;
        if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
            const char *slash = strrchr(f->typed_config->type_url, '/');
            t = slash ? slash + 1 : f->typed_config->type_url;
        } else if (!strcmp(f->name, "envoy.filters.listener.tls_inspector") || !strcmp(f->name, "tls_inspector")) {
            t = TLS_INSPECTOR;
        } else if (!strcmp(f->name, "envoy.filters.listener.http_inspector") || !strcmp(f->name, "http_inspector")) {
            t = HTTP_INSPECTOR;
        } else if (!strcmp(f->name, "envoy.filters.listener.original_dst") ||
                   !strcmp(f->name, "envoy.listener.original_dst")) {
            t = ORIGINAL_DST;
        } else if (!strcmp(f->name, "envoy.filters.listener.proxy_protocol") ||
                   !strcmp(f->name, "envoy.listener.proxy_protocol")) {
            t = PROXY_PROTOCOL;
        } else {
            return fail(b, p,
                        "listener filter '%s' is not supported by SHARP (only the TLS and HTTP inspectors, "
                        "original_dst and proxy_protocol)",
                        f->name);
        }
        if (!strcmp(t, "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig")) {
            return fail(b, p, "the UDP proxy (envoy.filters.udp_listener.udp_proxy) needs a UDP listener "
                        "(address.socket_address.protocol: UDP)");
        } else if (!strcmp(t, TLS_INSPECTOR)) {
            l->inspect_tls = true;
        } else if (!strcmp(t, HTTP_INSPECTOR)) {
            l->inspect_http = true;
        } else if (!strcmp(t, ORIGINAL_DST)) {
            /* it runs when the connection is accepted */
            if (l->proxy_protocol)
                return fail(b, p, "the original_dst listener filter must come before proxy_protocol (SHARP "
                            "restores the original destination when it accepts the connection)");
            l->original_dst = true;
        } else if (!strcmp(t, PROXY_PROTOCOL)) {
            /* it runs first: the inspectors read the bytes after the header */
            if (l->inspect_tls || l->inspect_http)
                return fail(b, p, "the proxy_protocol listener filter must come before the TLS and HTTP "
                            "inspectors, which read the bytes after the PROXY protocol header");
            if (l->proxy_protocol) return fail(b, p, "a second proxy_protocol listener filter");
            if (f->config_type_case == ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG) {
                sharp_config_error_t e = {{0}};
                pp_pb_t *pp = (pp_pb_t *)sharp_any_unpack(
                    &f->typed_config->base,
                    &envoy__extensions__filters__listener__proxy_protocol__v3__proxy_protocol__descriptor, &e);
                if (!pp) return fail(b, p, "typed_config: %s", e.msg);
                int rc = build_proxy_protocol(b, pp, l, p);
                protobuf_c_message_free_unpacked(&pp->base, NULL);
                if (rc < 0) return -1;
            } else {
                pp_pb_t dflt = ENVOY__EXTENSIONS__FILTERS__LISTENER__PROXY_PROTOCOL__V3__PROXY_PROTOCOL__INIT;
                if (build_proxy_protocol(b, &dflt, l, p) < 0) return -1;
            }
        } else {
            return fail(b, p,
                        "listener filter %s is not supported by SHARP (only the TLS and HTTP inspectors, "
                        "original_dst and proxy_protocol)",
                        t);
        }
    }
    /* Envoy's buildOriginalDstListenerFilter: use_original_dst adds the
     * original_dst filter (which leaves a pipe's connections alone) */
    if (pb->use_original_dst && pb->use_original_dst->value) l->original_dst = l->use_original_dst = true;
    /* Envoy hands a connection over once all listener filters ran, to the
     * listener of a destination the PROXY protocol header may have given;
     * SHARP hands over at accept */
    if (l->use_original_dst && l->proxy_protocol) {
        snprintf(p, sizeof p, "%s.use_original_dst", path);
        return fail(b, p, "use_original_dst with the proxy_protocol listener filter is not supported by SHARP (the "
                    "hand-off to the listener of the header's destination)");
    }
    /* Envoy's ListenerImpl::buildTlsInspectorListenerFilter: a chain that
     * matches on "tls", or on server names or application protocols
     * without a transport protocol, needs the TLS inspector; Envoy adds
     * one (with a warning) when the listener has none */
    if (!l->inspect_tls) {
        for (size_t i = 0; i < pb->n_filter_chains + (pb->default_filter_chain ? 1 : 0); i++) {
            const Envoy__Config__Listener__V3__FilterChain *fc =
                i < pb->n_filter_chains ? pb->filter_chains[i] : pb->default_filter_chain;
            const Envoy__Config__Listener__V3__FilterChainMatch *m = fc->filter_chain_match;
            if (m && (!strcmp(m->transport_protocol, "tls") ||
                      (!m->transport_protocol[0] && (m->n_server_names || m->n_application_protocols)))) {
                sharp_log_warn("adding listener '%s': filter chain match rules require TLS Inspector listener "
                               "filter, but it isn't configured, trying to inject it", l->address);
                l->inspect_tls = true;
                break;
            }
        }
    }
    if (!l->inspect_tls && !l->inspect_http && !l->proxy_protocol) return 0;
    /* Envoy's default listener_filters_timeout is 15 s; 0 disables it */
    l->listener_filters_timeout_ms = duration_ms(pb->listener_filters_timeout, 15000);
    l->continue_on_listener_filters_timeout = pb->continue_on_listener_filters_timeout;
    sharp_stats_t *s = b->srv->stats;
    l->pre_cx_active = sharp_stats_gaugef(s, "listener.%s.downstream_pre_cx_active", l->stat_name);
    l->pre_cx_timeout = sharp_stats_counterf(s, "listener.%s.downstream_pre_cx_timeout", l->stat_name);
#define TI(f) l->tls_inspector.f = sharp_stats_counterf(s, "tls_inspector." #f)
    TI(tls_found);
    TI(tls_not_found);
    TI(alpn_found);
    TI(alpn_not_found);
    TI(sni_found);
    TI(sni_not_found);
    TI(client_hello_too_large);
#undef TI
#define HI(f) l->http_inspector.f = sharp_stats_counterf(s, "http_inspector." #f)
    HI(http10_found);
    HI(http11_found);
    HI(http2_found);
    HI(http_not_found);
#undef HI
    return 0;
}

/* A filter_chain_matcher action: the name of a chain of filter_chains
 * (a google.protobuf.StringValue), as an index; -1 for a name no chain has
 * (Envoy's FilterChainNameAction finds no chain: the connection is
 * closed). */
static void *fc_name_action(const char *name, const char *type_url, const ProtobufCMessage *msg, void *arg,
                            const char *path, char *err, size_t errlen)
{
    const Envoy__Config__Listener__V3__Listener *pb = arg;
    if (msg->descriptor != &google__protobuf__string_value__descriptor) {
        const char *slash = strrchr(type_url, '/');
        snprintf(err, errlen,
                 "%s: Didn't find a registered implementation for '%s' with type URL: '%s' (a filter_chain_matcher "
                 "action is a google.protobuf.StringValue naming a filter chain)",
                 path, name, slash ? slash + 1 : type_url);
        return NULL;
    }
    const char *chain = ((const Google__Protobuf__StringValue *)msg)->value;
    int32_t *at = sharp_calloc(1, sizeof *at);
    *at = -1;
    for (size_t i = 0; i < pb->n_filter_chains; i++)
        if (!strcmp(pb->filter_chains[i]->name, chain)) *at = (int32_t)i;
    if (*at < 0)
        sharp_log_warn("filter_chain_matcher: %s names filter chain '%s', which the listener does not have: "
                       "connections it matches are closed", path, chain);
    return at;
}

static bool fc_match_empty(const sharp_fc_match_t *m)
{
    return !m->destination_port && !m->nprefix_ranges && !m->nserver_names && !m->transport_protocol &&
           !m->napplication_protocols && !m->ndirect_source_prefix_ranges && m->source_type == SHARP_FC_SOURCE_ANY &&
           !m->nsource_prefix_ranges && !m->nsource_ports;
}

/* The listener stats Envoy's ActiveListenerImplBase registers for every
 * listener, a UDP one's too (whose connection counters stay 0). */
static void listener_stats(build_ctx_t *b, sharp_listener_config_t *l)
{
    sharp_stats_t *s = b->srv->stats;
    l->cx_total = sharp_stats_counterf(s, "listener.%s.downstream_cx_total", l->stat_name);
    l->cx_active = sharp_stats_gaugef(s, "listener.%s.downstream_cx_active", l->stat_name);
    l->cx_destroy = sharp_stats_counterf(s, "listener.%s.downstream_cx_destroy", l->stat_name);
    l->cx_global_overflow = sharp_stats_counterf(s, "listener.%s.downstream_global_cx_overflow", l->stat_name);
    l->cx_overload_reject = sharp_stats_counterf(s, "listener.%s.downstream_cx_overload_reject", l->stat_name);
    l->cx_length_ms = sharp_stats_histogramf(s, SHARP_HIST_MILLISECONDS, "listener.%s.downstream_cx_length_ms",
                                             l->stat_name);
    l->no_filter_chain_match = sharp_stats_counterf(s, "listener.%s.no_filter_chain_match", l->stat_name);
}

static int build_listener(build_ctx_t *b, const Envoy__Config__Listener__V3__Listener *pb,
                          sharp_listener_config_t *l, const char *path)
{
    char p[1024];
    snprintf(p, sizeof p, "%s.address", path);
    bool udp = false;
    if (socket_address(b, pb->address, p, &l->addr, &l->addrlen, &l->pipe_mode, &udp) < 0) return -1;
    /* listen socket options (Envoy's buildListenSocketOptions, and the
     * Ipv6Instance's v6only) */
    if (pb->address->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS &&
        pb->address->socket_address->ipv4_compat) {
        snprintf(p, sizeof p, "%s.address.socket_address.ipv4_compat", path);
        if (udp) return fail(b, p, "%s", IPV4_COMPAT_LISTENERS_ONLY);
        if (l->addr.ss_family == AF_INET6) l->sock_flags |= SHARP_SOCK_V4COMPAT;
    }
    if (pb->freebind && pb->freebind->value) {
        snprintf(p, sizeof p, "%s.freebind", path);
        if (l->addr.ss_family == AF_UNIX) return fail(b, p, "freebind needs an IP address (not a pipe)");
        l->sock_flags |= SHARP_SOCK_FREEBIND;
    }
    sharp_addr_str((struct sockaddr *)&l->addr, l->address, sizeof l->address);
    sharp_addr_stat_name((struct sockaddr *)&l->addr, l->stat_name, sizeof l->stat_name);
    l->name = sharp_strdup(pb->name[0] ? pb->name : l->address);
    if (udp) {
        char epath[1024], emsg[1024];
        if (sharp_config_udp_listener(l, pb, path, b->srv->stats, epath, sizeof epath, emsg, sizeof emsg) < 0)
            return fail(b, epath, "%s", emsg);
        listener_stats(b, l);
        return 0;
    }
    if (pb->udp_listener_config) {
        snprintf(p, sizeof p, "%s.udp_listener_config", path);
        return fail(b, p, "udp_listener_config needs a UDP listener (address.socket_address.protocol: UDP)");
    }
    l->buffer_limit = pb->per_connection_buffer_limit_bytes ? pb->per_connection_buffer_limit_bytes->value : 1024 * 1024;
    b->traffic_direction = (int)pb->traffic_direction;
    if (build_listener_filters(b, pb, l, path) < 0) return -1;
    if (pb->n_filter_chains == 0 && !pb->default_filter_chain)
        return fail(b, path, "error adding listener '%s': no filter chains specified", l->address);
    l->fc_matcher_set = pb->filter_chain_matcher != NULL;
    if (l->fc_matcher_set) {
        /* Envoy's setupFilterChainMatcher: every chain named, uniquely */
        for (size_t i = 0; i < pb->n_filter_chains; i++) {
            snprintf(p, sizeof p, "%s.filter_chains[%zu].name", path, i);
            if (!pb->filter_chains[i]->name[0])
                return fail(b, p, "error adding listener '%s': \"name\" field is required when using a listener "
                            "matcher", l->address);
            for (size_t k = 0; k < i; k++)
                if (!strcmp(pb->filter_chains[k]->name, pb->filter_chains[i]->name))
                    return fail(b, p, "error adding listener '%s': \"name\" field is duplicated with value '%s'",
                                l->address, pb->filter_chains[i]->name);
        }
        snprintf(p, sizeof p, "%s.filter_chain_matcher", path);
        char err[1024], epath[1024];
        l->fc_matcher = sharp_matcher_build_network(pb->filter_chain_matcher, p, fc_name_action, free, (void *)pb, 0,
                                                    epath, sizeof epath, err, sizeof err);
        if (!l->fc_matcher) return fail(b, epath, "%s", err);
    }
    l->nchains = (uint32_t)pb->n_filter_chains;
    l->has_default_chain = pb->default_filter_chain != NULL;
    l->chains = sharp_calloc(l->nchains + 1, sizeof *l->chains);
    l->matches = sharp_calloc(l->nchains ? l->nchains : 1, sizeof *l->matches);
    for (uint32_t i = 0; i < l->nchains + l->has_default_chain; i++) {
        l->chains[i] = sharp_calloc(1, sizeof *l->chains[i]);
        atomic_init(&l->chains[i]->refs, 1);
    }
    for (uint32_t i = 0; i < l->nchains; i++) {
        snprintf(p, sizeof p, "%s.filter_chains[%u]", path, i);
        if (build_filter_chain(b, pb->filter_chains[i], p, l, l->chains[i]) < 0) return -1;
        l->matches[i] = &l->chains[i]->match;
        for (uint32_t k = 0; k < i && !l->fc_matcher_set; k++)
            if (sharp_fc_overlap(&l->chains[k]->match, &l->chains[i]->match))
                return fail(b, p, "error adding listener '%s': multiple filter chains with the same matching rules "
                            "are defined (filter_chains[%u] and [%u])", l->address, k, i);
    }
    if (l->has_default_chain) {
        snprintf(p, sizeof p, "%s.default_filter_chain", path);
        if (build_filter_chain(b, pb->default_filter_chain, p, l, l->chains[l->nchains]) < 0) return -1;
    }
    /* the usual listener: one chain, no criteria, no default */
    l->match_any =
        l->nchains == 1 && !l->has_default_chain && !l->fc_matcher && fc_match_empty(&l->chains[0]->match);
    for (uint32_t i = 0; i < l->nchains + l->has_default_chain; i++)
        l->chains[i]->hcm->bypass_overload_manager = pb->bypass_overload_manager;
    l->ignore_global_conn_limit = pb->ignore_global_conn_limit;
    l->bypass_overload_manager = pb->bypass_overload_manager;
    listener_stats(b, l);
    sharp_stats_t *s = b->srv->stats;
    for (uint32_t i = 0; i < l->nchains + l->has_default_chain; i++)
        if (l->chains[i]->tls) l->has_tls = true;
    if (l->has_tls) {
#define SSL_STAT(f) l->ssl.f = sharp_stats_counterf(s, "listener.%s.ssl." #f, l->stat_name)
        SSL_STAT(connection_error);
        SSL_STAT(handshake);
        SSL_STAT(session_reused);
        SSL_STAT(no_certificate);
        SSL_STAT(fail_verify_error);
        SSL_STAT(fail_verify_san);
        SSL_STAT(fail_verify_cert_hash);
        SSL_STAT(fail_verify_no_cert);
        SSL_STAT(ocsp_staple_requests);
        SSL_STAT(ocsp_staple_responses);
        SSL_STAT(ocsp_staple_omitted);
        SSL_STAT(ocsp_staple_failed);
#undef SSL_STAT
    }
    return 0;
}

/* ---- clusters ---- */

/* A DNS resolver's address: a numeric IP, port 53 unless given. */
static int resolver_address(build_ctx_t *b, const Envoy__Config__Core__V3__Address *a, const char *path,
                            struct sockaddr_storage *ss)
{
    char p[1024];
    socklen_t len;
    if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return fail(b, path, "a socket_address is required (a DNS server's IP and port)");
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    snprintf(p, sizeof p, "%s.socket_address", path);
    if (sa->ipv4_compat) return fail(b, p, "%s", IPV4_COMPAT_LISTENERS_ONLY);
    if (sa->port_specifier_case == ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT)
        return fail(b, p, "named_port is not supported");
    uint32_t port = sa->port_value ? sa->port_value : 53;
    if (port > 65535) return fail(b, p, "port_value %u is out of range", port);
    if (sharp_addr_parse(sa->address, port, ss, &len) < 0)
        return fail(b, p, "address '%s' is not a numeric IPv4 or IPv6 address", sa->address);
    return 0;
}

/* A DNS resolver's settings as Envoy's makeDnsResolverConfig makes them,
 * for a cluster or the bootstrap: typed_dns_resolver_config (c-ares, its
 * resolvers, options, query timeout and tries, use_resolvers_as_fallback),
 * else dns_resolution_config, else the deprecated resolvers (clusters'
 * dns_resolvers) and use_tcp_for_dns_lookups. `prefix` is the owner's
 * field path ("" for the bootstrap). */
static int resolver_settings(build_ctx_t *b, sharp_dns_cluster_t *dc,
                             const Envoy__Config__Core__V3__TypedExtensionConfig *typed,
                             const Envoy__Config__Core__V3__DnsResolutionConfig *resolution,
                             Envoy__Config__Core__V3__Address *const *legacy, size_t nlegacy, bool legacy_tcp,
                             const char *prefix)
{
    char p[1024];
    const char *dot = prefix[0] ? "." : "";
    Envoy__Config__Core__V3__Address *const *res = legacy;
    size_t nres = nlegacy;
    const char *res_field = "dns_resolvers";
    const Envoy__Config__Core__V3__DnsResolverOptions *opts = NULL;
    dc->use_tcp = legacy_tcp;
    Envoy__Extensions__Network__DnsResolver__Cares__V3__CaresDnsResolverConfig *cares = NULL;
    if (typed) {
        snprintf(p, sizeof p, "%s%styped_dns_resolver_config.typed_config", prefix, dot);
        if (!typed->typed_config) return fail(b, p, "typed_config is required");
        sharp_config_error_t e = {{0}};
        cares = (void *)sharp_any_unpack(
            &typed->typed_config->base,
            &envoy__extensions__network__dns_resolver__cares__v3__cares_dns_resolver_config__descriptor, &e);
        if (!cares) return fail(b, p, "%s", e.msg);
        res = cares->resolvers;
        nres = cares->n_resolvers;
        res_field = "typed_dns_resolver_config.typed_config.resolvers";
        opts = cares->dns_resolver_options;
        dc->use_tcp = false;
        if (cares->query_timeout_seconds) dc->query_timeout_ms = cares->query_timeout_seconds->value * 1000;
        if (cares->query_tries) dc->query_tries = cares->query_tries->value;
        dc->resolvers_as_fallback = cares->use_resolvers_as_fallback;
    } else if (resolution) {
        res = resolution->resolvers;
        nres = resolution->n_resolvers;
        res_field = "dns_resolution_config.resolvers";
        opts = resolution->dns_resolver_options;
        dc->use_tcp = false;
    }
    if (opts) {
        dc->no_search = opts->no_default_search_domain;
        dc->use_tcp = opts->use_tcp_for_dns_lookups;
    }
    dc->resolvers = sharp_calloc(nres ? nres : 1, sizeof *dc->resolvers);
    for (size_t i = 0; i < nres; i++) {
        snprintf(p, sizeof p, "%s%s%s[%zu]", prefix, dot, res_field, i);
        if (resolver_address(b, res[i], p, &dc->resolvers[i]) < 0) {
            if (cares) protobuf_c_message_free_unpacked(&cares->base, NULL);
            return -1;
        }
        dc->nresolvers++;
    }
    if (cares) protobuf_c_message_free_unpacked(&cares->base, NULL);
    return 0;
}

/* A dynamic forward proxy's DNS cache (upstream/dfp.h) from its
 * DnsCacheConfig, Envoy's DnsCacheImpl defaults and validation; the
 * registered cache of that name when the config is equal to its. */
static sharp_dfp_cache_t *build_dns_cache(build_ctx_t *b, const Envoy__Extensions__Common__DynamicForwardProxy__V3__DnsCacheConfig *pb,
                                          const char *path)
{
    char p[1024];
    sharp_dfp_settings_t set;
    sharp_dfp_default_settings(&set);
    if (!pb->name[0]) {
        snprintf(p, sizeof p, "%s.name", path);
        fail(b, p, "value length must be at least 1 characters");
        return NULL;
    }
    switch (pb->dns_lookup_family) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY: set.family = SHARP_DNS_V4_ONLY; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V6_ONLY: set.family = SHARP_DNS_V6_ONLY; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_PREFERRED: set.family = SHARP_DNS_V4_PREFERRED; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__ALL: set.family = SHARP_DNS_ALL; break;
    default: set.family = SHARP_DNS_AUTO; break;
    }
    if (pb->dns_refresh_rate) {
        set.refresh_ms = duration_ms(pb->dns_refresh_rate, 60000);
        if (set.refresh_ms < 1) {
            snprintf(p, sizeof p, "%s.dns_refresh_rate", path);
            fail(b, p, "value must be greater than or equal to 1ms");
            return NULL;
        }
    }
    if (pb->dns_min_refresh_rate) {
        snprintf(p, sizeof p, "%s.dns_min_refresh_rate", path);
        fail(b, p, "dns_min_refresh_rate (a refresh at the DNS TTL) is not supported by SHARP: hosts are resolved "
                   "again every dns_refresh_rate");
        return NULL;
    }
    if (pb->host_ttl) {
        set.host_ttl_ms = duration_ms(pb->host_ttl, 300000);
        if (!set.host_ttl_ms) {
            snprintf(p, sizeof p, "%s.host_ttl", path);
            fail(b, p, "value must be greater than 0s");
            return NULL;
        }
    }
    if (pb->max_hosts) {
        if (!pb->max_hosts->value) {
            snprintf(p, sizeof p, "%s.max_hosts", path);
            fail(b, p, "value must be greater than 0");
            return NULL;
        }
        set.max_hosts = pb->max_hosts->value;
    }
    if (pb->dns_failure_refresh_rate) {
        const Envoy__Config__Cluster__V3__Cluster__RefreshRate *r = pb->dns_failure_refresh_rate;
        snprintf(p, sizeof p, "%s.dns_failure_refresh_rate", path);
        set.has_failure_rate = true;
        set.failure_base_ms = duration_ms(r->base_interval, 0);
        if (!r->base_interval || !set.failure_base_ms) {
            fail(b, p, "base_interval: value must be greater than 1ms");
            return NULL;
        }
        set.failure_max_ms = r->max_interval ? duration_ms(r->max_interval, 0) : 10 * set.failure_base_ms;
        if (set.failure_max_ms < set.failure_base_ms) {
            fail(b, p, "dns_failure_refresh_rate must have max_interval greater than or equal to the base_interval");
            return NULL;
        }
    }
    if (pb->dns_cache_circuit_breaker && pb->dns_cache_circuit_breaker->max_pending_requests)
        set.max_pending = pb->dns_cache_circuit_breaker->max_pending_requests->value;
    if (pb->dns_query_timeout) {
        set.query_timeout_ms = duration_ms(pb->dns_query_timeout, 5000);
        if (!set.query_timeout_ms) {
            snprintf(p, sizeof p, "%s.dns_query_timeout", path);
            fail(b, p, "value must be greater than 0s");
            return NULL;
        }
    }
    /* Envoy's makeDnsResolverConfig: typed_dns_resolver_config, else
     * dns_resolution_config, else use_tcp_for_dns_lookups; the system's
     * resolv.conf without resolvers */
    sharp_dns_cluster_t dns = {0};
    if (resolver_settings(b, &dns, pb->typed_dns_resolver_config, pb->dns_resolution_config, NULL, 0,
                          pb->use_tcp_for_dns_lookups, path) < 0) {
        free(dns.resolvers);
        return NULL;
    }
    char **pre = sharp_calloc(pb->n_preresolve_hostnames + 1, sizeof *pre);
    uint32_t npre = 0;
    for (size_t i = 0; i < pb->n_preresolve_hostnames; i++) {
        const Envoy__Config__Core__V3__SocketAddress *sa = pb->preresolve_hostnames[i];
        snprintf(p, sizeof p, "%s.preresolve_hostnames[%zu]", path, i);
        char key[300];
        int bad = !sa->address[0] ? fail(b, p, "address is required")
                  : sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE ||
                          sa->port_value > 65535
                      ? fail(b, p, "port_value (0 to 65535) is required")
                  : !sharp_dfp_normalize(sa->address, strlen(sa->address), (uint16_t)sa->port_value, key, sizeof key)
                      ? fail(b, p, "address is too long")
                      : 0;
        if (bad) {
            for (uint32_t k = 0; k < npre; k++) free(pre[k]);
            free(pre);
            free(dns.resolvers);
            return NULL;
        }
        /* Envoy's normalizeHostForDfp(address, port_value) */
        pre[npre++] = sharp_strdup(key);
    }
    size_t len = protobuf_c_message_get_packed_size(&pb->base);
    uint8_t *packed = sharp_calloc(1, len ? len : 1);
    protobuf_c_message_pack(&pb->base, packed);
    char err[512];
    sharp_dfp_cache_t *c = sharp_dfp_cache_get(pb->name, &set, &dns, pre, npre, packed, len, err, sizeof err);
    free(packed);
    free(dns.resolvers);
    if (!c) fail(b, path, "%s", err);
    return c;
}

sharp_dfp_cache_t *sharp_config_dns_cache(const ProtobufCMessage *pb, sharp_server_t *srv, char *err, size_t errlen)
{
    if (!srv || !srv->config) {
        snprintf(err, errlen, "dns_cache_config: no server to resolve on");
        return NULL;
    }
    build_ctx_t b = {.cfg = srv->config, .srv = srv, .err = err, .errlen = errlen,
                     .bootstrap = (const bootstrap_t *)srv->config->bootstrap};
    return build_dns_cache(&b, (const Envoy__Extensions__Common__DynamicForwardProxy__V3__DnsCacheConfig *)pb,
                           "dns_cache_config");
}

/* The bootstrap's DNS resolver, which Envoy builds at start whether or
 * not a cluster uses it: checked once here, applied per cluster below. */
static int check_bootstrap_dns(build_ctx_t *b, const bootstrap_t *bs)
{
    sharp_dns_cluster_t scratch = {0};
    int rc = resolver_settings(b, &scratch, bs->typed_dns_resolver_config, bs->dns_resolution_config, NULL, 0,
                               bs->use_tcp_for_dns_lookups, "");
    free(scratch.resolvers);
    return rc;
}

/* The DNS settings of a STRICT_DNS / LOGICAL_DNS cluster (Envoy's
 * BaseDynamicClusterImpl / ClusterImplBase validation). */
static uint32_t locality_id(const Envoy__Config__Core__V3__Locality *l);

static int check_combinations(build_ctx_t *b, const sharp_cluster_t *c, const sharp_lbmeta_t *m, const char *path);

static int endpoint_hc_check(build_ctx_t *b, const sharp_cluster_t *c, const sharp_host_hc_t *hc, int family,
                             const char *path)
{
    if (hc->port && !hc->addrlen && family == AF_UNIX)
        return fail(b, path, "port_value: the endpoint is a Unix domain socket (pipe), which has no port to replace");
    if (c->health_check && c->health_check->alt_port && (hc->port || hc->addrlen))
        return fail(b, path, "%s cannot be combined with the cluster's health_checks[0].alt_port",
                    hc->addrlen ? "address" : "port_value");
    return 0;
}

/* Endpoint.health_check_config: where health checks reach the endpoint
 * (Envoy's resolveHealthCheckAddress: address, else the host's, with
 * port_value over its port) and the host header they send. */
static int endpoint_hc(build_ctx_t *b, const Envoy__Config__Endpoint__V3__Endpoint *e, const char *path,
                       sharp_host_hc_t *out)
{
    memset(out, 0, sizeof *out);
    const Envoy__Config__Endpoint__V3__Endpoint__HealthCheckConfig *hcc = e->health_check_config;
    if (!hcc) return 0;
    char p[1300];
    if (hcc->port_value > 65535) {
        snprintf(p, sizeof p, "%s.health_check_config.port_value", path);
        return fail(b, p, "value must be less than or equal to 65535");
    }
    out->port = (uint16_t)hcc->port_value;
    out->disabled = hcc->disable_active_health_check;
    if (hcc->hostname[0]) {
        if (strlen(hcc->hostname) >= sizeof out->hostname) {
            snprintf(p, sizeof p, "%s.health_check_config.hostname", path);
            return fail(b, p, "longer than %zu characters", sizeof out->hostname - 1);
        }
        snprintf(out->hostname, sizeof out->hostname, "%s", hcc->hostname);
    }
    if (hcc->address) {
        snprintf(p, sizeof p, "%s.health_check_config.address", path);
        if (socket_address(b, hcc->address, p, &out->addr, &out->addrlen, NULL, NULL) < 0) return -1;
        if (out->addr.ss_family == AF_UNIX && out->port) {
            snprintf(p, sizeof p, "%s.health_check_config.port_value", path);
            return fail(b, p, "a pipe address has no port to replace");
        }
    }
    return 0;
}

static int build_dns(build_ctx_t *b, sharp_cluster_t *c, const cluster_pb_t *pb, const char *path)
{
    char p[1024];
    sharp_dns_cluster_t *dc = c->dns = sharp_calloc(1, sizeof *dc);
    dc->cluster = c;
    dc->logical = c->type == SHARP_CLUSTER_LOGICAL_DNS;
    dc->wait_for_warm = dc->logical || !pb->wait_for_warm_on_init || pb->wait_for_warm_on_init->value;
    dc->refresh_ms = duration_ms(pb->dns_refresh_rate, 5000);
    if (pb->dns_failure_refresh_rate) {
        const Envoy__Config__Cluster__V3__Cluster__RefreshRate *r = pb->dns_failure_refresh_rate;
        dc->has_failure_rate = true;
        dc->failure_base_ms = duration_ms(r->base_interval, 0);
        dc->failure_max_ms = r->max_interval ? duration_ms(r->max_interval, 0) : 10 * dc->failure_base_ms;
        if (dc->failure_max_ms < dc->failure_base_ms) {
            snprintf(p, sizeof p, "%s.dns_failure_refresh_rate", path);
            return fail(b, p, "dns_failure_refresh_rate must have max_interval greater than or equal to the "
                              "base_interval");
        }
    }
    dc->jitter_ms = duration_ms(pb->dns_jitter, 0);
    dc->respect_ttl = pb->respect_dns_ttl;
    switch (pb->dns_lookup_family) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY: dc->family = SHARP_DNS_V4_ONLY; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V6_ONLY: dc->family = SHARP_DNS_V6_ONLY; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_PREFERRED:
        dc->family = SHARP_DNS_V4_PREFERRED;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__ALL: dc->family = SHARP_DNS_ALL; break;
    default: dc->family = SHARP_DNS_AUTO; break;
    }
    /* Envoy's selectDnsResolver: a cluster with resolvers of its own (a
     * typed_dns_resolver_config, dns_resolution_config's resolvers or
     * dns_resolvers) gets its own resolver; every other one the
     * bootstrap's, whose settings are then the cluster's */
    bool own = pb->typed_dns_resolver_config || (pb->dns_resolution_config && pb->dns_resolution_config->n_resolvers) ||
               pb->n_dns_resolvers;
    if (!own && pb->use_tcp_for_dns_lookups) {
        /* Envoy reads the deprecated flag only with dns_resolvers: alone it
         * would be ignored, so it is refused */
        snprintf(p, sizeof p, "%s.use_tcp_for_dns_lookups", path);
        return fail(b, p, "applies only with the cluster's dns_resolvers (as in Envoy, a cluster without resolvers "
                          "of its own uses the bootstrap's DNS resolver: set use_tcp_for_dns_lookups, "
                          "dns_resolution_config or typed_dns_resolver_config there)");
    }
    if (own) {
        if (resolver_settings(b, dc, pb->typed_dns_resolver_config, pb->dns_resolution_config, pb->dns_resolvers,
                              pb->n_dns_resolvers, pb->use_tcp_for_dns_lookups, path) < 0)
            return -1;
    } else {
        const bootstrap_t *bs = b->bootstrap;
        if (resolver_settings(b, dc, bs->typed_dns_resolver_config, bs->dns_resolution_config, NULL, 0,
                              bs->use_tcp_for_dns_lookups, "") < 0)
            return -1;
    }
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = pb->load_assignment;
    if (dc->logical && (!la || la->n_endpoints != 1 || la->endpoints[0]->n_lb_endpoints != 1)) {
        snprintf(p, sizeof p, "%s.load_assignment", path);
        return fail(b, p, "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint");
    }
    for (size_t i = 0; la && i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = la->endpoints[i];
        /* the locality's metadata: made with its first target, which owns
         * that reference; the others take theirs */
        sharp_locality_md_t *lm = NULL;
        for (size_t j = 0; j < le->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *e = le->lb_endpoints[j];
            snprintf(p, sizeof p, "%s.load_assignment.endpoints[%zu].lb_endpoints[%zu]", path, i, j);
            if (e->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
                return fail(b, p, "endpoint is required");
            const Envoy__Config__Core__V3__Address *a = e->endpoint->address;
            char ap[1200];
            snprintf(ap, sizeof ap, "%s.endpoint.address", p);
            if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
                return fail(b, ap, "a socket_address with a DNS name is required");
            const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
            snprintf(ap, sizeof ap, "%s.endpoint.address.socket_address", p);
            if (sa->ipv4_compat) return fail(b, ap, "%s", IPV4_COMPAT_LISTENERS_ONLY);
            if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP)
                return fail(b, ap, "only TCP is supported");
            if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
                return fail(b, ap, "port_value is required (named_port is not supported)");
            if (sa->port_value > 65535) return fail(b, ap, "port_value %u is out of range", sa->port_value);
            if (!sa->address[0]) return fail(b, ap, "address is required");
            uint32_t weight = e->load_balancing_weight ? e->load_balancing_weight->value : 1;
            if (weight == 0) {
                snprintf(ap, sizeof ap, "%s.load_balancing_weight", p);
                return fail(b, ap, "must be at least 1");
            }
            uint32_t flags = 0;
            if (e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY ||
                e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING ||
                e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT)
                flags = SHARP_HOST_FAILED_EDS_HEALTH;
            sharp_dns_add_target(dc, sa->address, (uint16_t)sa->port_value, e->endpoint->hostname, weight,
                                 le->priority, locality_id(le->locality), flags);
            sharp_dns_target_t *t = &dc->targets[dc->ntargets - 1];
            t->locality_md = j ? sharp_locality_md_ref(lm) : (lm = locality_md_from(le->metadata));
            dc->targets[dc->ntargets - 1].lb_meta = endpoint_lb_meta(e->metadata);
            dc->targets[dc->ntargets - 1].locality_weight = le->load_balancing_weight ? le->load_balancing_weight->value : 0;
            if (endpoint_hc(b, e->endpoint, p, &dc->targets[dc->ntargets - 1].hc) < 0) return -1;
            if (check_combinations(b, c, dc->targets[dc->ntargets - 1].lb_meta, p) < 0) return -1;
        }
    }
    return 0;
}

/* A LocalityLbEndpoints' metadata (its filter_metadata; typed metadata
 * is not read), NULL without any: shared by the locality's hosts. */
static sharp_locality_md_t *locality_md_from(const Envoy__Config__Core__V3__Metadata *pb)
{
    sharp_dynamic_metadata_t *md = NULL;
    for (size_t i = 0; pb && i < pb->n_filter_metadata; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = pb->filter_metadata[i];
        sharp_md_value_t st = {0};
        if (!e->key || !e->value || !sharp_md_value_from_struct(e->value, &st)) {
            sharp_md_value_clear(&st);
            continue;
        }
        sharp_dynamic_metadata_replace(&md, e->key, strlen(e->key), &st);
        sharp_md_value_clear(&st);
    }
    return sharp_locality_md_new(md);
}

/* An endpoint's filter_metadata["envoy.lb"] in canonical form
 * (upstream/subset.h), NULL without (a namespace given twice: the last). */
static sharp_lbmeta_t *endpoint_lb_meta(const Envoy__Config__Core__V3__Metadata *md)
{
    const Google__Protobuf__Struct *st = NULL;
    for (size_t i = 0; md && i < md->n_filter_metadata; i++)
        if (md->filter_metadata[i]->key && strcmp(md->filter_metadata[i]->key, "envoy.lb") == 0)
            st = md->filter_metadata[i]->value;
    return st ? sharp_lbmeta_from_struct(st) : NULL;
}

/* list_as_any: an endpoint whose list values would put its host in more
 * subsets of one selector than SHARP keeps is refused (Envoy sets no
 * bound; the product of a few long lists would take any amount of memory). */
static int check_combinations(build_ctx_t *b, const sharp_cluster_t *c, const sharp_lbmeta_t *m, const char *path)
{
    uint64_t n = c->subset ? sharp_subset_host_combinations(c->subset, m) : 0;
    if (n <= SHARP_SUBSET_MAX_COMBINATIONS) return 0;
    return fail(b, path,
                "metadata: with lb_subset_config.list_as_any its list values would put the host in %llu subsets "
                "of one selector, more than SHARP's limit of %u",
                (unsigned long long)n, SHARP_SUBSET_MAX_COMBINATIONS);
}

/* Strings as a std::set<std::string>: sorted bytewise, each once. */
static void key_set(char *const *in, size_t n, char ***out, uint32_t *nout)
{
    *out = sharp_calloc(n ? n : 1, sizeof **out);
    *nout = 0;
    for (size_t k = 0; k < n; k++) {
        uint32_t at = 0;
        while (at < *nout && strcmp((*out)[at], in[k]) < 0) at++;
        if (at < *nout && strcmp((*out)[at], in[k]) == 0) continue;
        memmove(&(*out)[at + 1], &(*out)[at], (*nout - at) * sizeof **out);
        (*out)[at] = sharp_strdup(in[k]);
        (*nout)++;
    }
}

/* lb_subset_config: Envoy's LoadBalancerSubsetInfoImpl (subset load
 * balancing is on only with at least one selector; selectors without keys
 * are dropped, keys are a set). The fields SHARP does not implement are
 * refused by the support table. */
static int subset_config(build_ctx_t *b, sharp_cluster_t *c, const Envoy__Config__Cluster__V3__Cluster *pb,
                         const char *path)
{
    const Envoy__Config__Cluster__V3__Cluster__LbSubsetConfig *sc = pb->lb_subset_config;
    char p[1200];
    if (!sc) return 0;
    snprintf(p, sizeof p, "%s.lb_subset_config", path);
    if (pb->load_balancing_policy)
        return fail(b, p, "cluster: load_balancing_policy cannot be combined with lb_subset_config");
    if (!sc->n_subset_selectors) return 0;
    if (pb->lb_policy == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED)
        return fail(b, p, "cluster: LB policy CLUSTER_PROVIDED cannot be combined with lb_subset_config");
    sharp_subset_config_t *cfg = sharp_calloc(1, sizeof *cfg);
    c->subset = cfg;
    switch (sc->fallback_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_SUBSET_CONFIG__LB_SUBSET_FALLBACK_POLICY__ANY_ENDPOINT:
        cfg->fallback = SHARP_SUBSET_ANY_ENDPOINT;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_SUBSET_CONFIG__LB_SUBSET_FALLBACK_POLICY__DEFAULT_SUBSET:
        cfg->fallback = SHARP_SUBSET_DEFAULT_SUBSET;
        break;
    default: cfg->fallback = SHARP_SUBSET_NO_FALLBACK; break;
    }
    cfg->default_subset = sc->default_subset ? sharp_lbmeta_from_struct(sc->default_subset) : NULL;
    cfg->panic_mode_any = sc->panic_mode_any;
    cfg->list_as_any = sc->list_as_any;
    cfg->metadata_fallback_list =
        sc->metadata_fallback_policy ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_SUBSET_CONFIG__LB_SUBSET_METADATA_FALLBACK_POLICY__FALLBACK_LIST;
    cfg->selectors = sharp_calloc(sc->n_subset_selectors, sizeof *cfg->selectors);
    for (size_t i = 0; i < sc->n_subset_selectors; i++) {
        const Envoy__Config__Cluster__V3__Cluster__LbSubsetConfig__LbSubsetSelector *sel = sc->subset_selectors[i];
        if (!sel->n_keys) continue;
        sharp_subset_selector_t *out = &cfg->selectors[cfg->nselectors++];
        key_set(sel->keys, sel->n_keys, &out->keys, &out->nkeys);
        key_set(sel->fallback_keys_subset, sel->n_fallback_keys_subset, &out->fallback_keys, &out->nfallback_keys);
        out->fallback = (sharp_selector_fallback_t)sel->fallback_policy;
        out->single_host = sel->single_host_per_subset;
        /* Envoy's SubsetSelector checks */
        snprintf(p, sizeof p, "%s.lb_subset_config.subset_selectors[%zu]", path, i);
        if (out->fallback != SHARP_SELECTOR_KEYS_SUBSET) {
            if (out->nfallback_keys)
                return fail(b, p, "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy");
            continue;
        }
        if (!out->nfallback_keys) return fail(b, p, "fallback_keys_subset cannot be empty");
        for (uint32_t k = 0, at = 0; k < out->nfallback_keys; k++) {
            while (at < out->nkeys && strcmp(out->keys[at], out->fallback_keys[k]) < 0) at++;
            if (at == out->nkeys || strcmp(out->keys[at], out->fallback_keys[k]))
                return fail(b, p, "fallback_keys_subset must be a subset of selector keys");
        }
        if (out->nfallback_keys == out->nkeys) return fail(b, p, "fallback_keys_subset cannot be equal to keys");
    }
    sharp_subset_config_finish(cfg);
    return 0;
}

/* The interned locality of a LocalityLbEndpoints (upstream/zone_lb.h). */
static uint32_t locality_id(const Envoy__Config__Core__V3__Locality *l)
{
    return l ? sharp_locality_intern(l->region, l->zone, l->sub_zone) : 0;
}

/* type ORIGINAL_DST (upstream/original_dst.h), with Envoy's
 * OriginalDstClusterFactory rules; cleanup_interval and
 * original_dst_lb_config, which only this type reads, are refused on
 * others. */
static int build_original_dst(build_ctx_t *b, sharp_cluster_t *c, const cluster_pb_t *pb, const char *path)
{
    char p[1024];
    const Envoy__Config__Cluster__V3__Cluster__OriginalDstLbConfig *oc =
        pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG
            ? pb->original_dst_lb_config
            : NULL;
    if (c->type != SHARP_CLUSTER_ORIGINAL_DST) {
        if (pb->cleanup_interval) {
            snprintf(p, sizeof p, "%s.cleanup_interval", path);
            return fail(b, p, "cleanup_interval only applies to ORIGINAL_DST clusters");
        }
        if (oc) {
            snprintf(p, sizeof p, "%s.original_dst_lb_config", path);
            return fail(b, p, "original_dst_lb_config only applies to ORIGINAL_DST clusters");
        }
        return 0;
    }
    if (pb->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__cluster__v3__cluster__lb_policy__descriptor, (int)pb->lb_policy);
        snprintf(p, sizeof p, "%s.lb_policy", path);
        return fail(b, p,
                    "cluster: LB policy %s is not valid for Cluster type ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is "
                    "allowed with cluster type 'ORIGINAL_DST'",
                    v ? v->name : "?");
    }
    if (pb->load_assignment) {
        snprintf(p, sizeof p, "%s.load_assignment", path);
        return fail(b, p, "ORIGINAL_DST clusters must have no load assignment configured");
    }
    if (oc && !oc->use_http_header && oc->http_header_name[0]) {
        snprintf(p, sizeof p, "%s.original_dst_lb_config.http_header_name", path);
        return fail(b, p,
                    "ORIGINAL_DST cluster: invalid config http_header_name=%s and use_http_header is false. Set "
                    "use_http_header to true if http_header_name is desired.",
                    oc->http_header_name);
    }
    if (oc && oc->metadata_key) {
        snprintf(p, sizeof p, "%s.original_dst_lb_config.metadata_key", path);
        return fail(b, p, "metadata_key (the destination from dynamic metadata) is not supported by SHARP");
    }
    if (pb->load_balancing_policy) {
        snprintf(p, sizeof p, "%s.load_balancing_policy", path);
        return fail(b, p, "an ORIGINAL_DST cluster provides its own load balancer (lb_policy CLUSTER_PROVIDED)");
    }
    if (pb->common_lb_config) {
        /* Envoy's original destination balancer reads none of it */
        snprintf(p, sizeof p, "%s.common_lb_config", path);
        return fail(b, p, "common_lb_config does not apply to an ORIGINAL_DST cluster's load balancer");
    }
    if (pb->n_health_checks) {
        snprintf(p, sizeof p, "%s.health_checks", path);
        return fail(b, p, "health checks of an ORIGINAL_DST cluster's hosts are not supported by SHARP");
    }
    if (pb->outlier_detection) {
        snprintf(p, sizeof p, "%s.outlier_detection", path);
        return fail(b, p, "outlier detection of an ORIGINAL_DST cluster's hosts is not supported by SHARP");
    }
    sharp_odst_t *o = c->odst = sharp_odst_new();
    o->cleanup_ms = duration_ms(pb->cleanup_interval, 5000);
    if (!o->cleanup_ms) o->cleanup_ms = 1;
    if (oc && oc->use_http_header) {
        const char *name = oc->http_header_name[0] ? oc->http_header_name : "x-envoy-original-dst-host";
        o->header = sharp_strdup(name);
        for (char *q = o->header; *q; q++) *q = (char)tolower((unsigned char)*q);
    }
    if (oc && oc->upstream_port_override) {
        o->has_port_override = true;
        o->port_override = oc->upstream_port_override->value;
    }
    return 0;
}

/* cluster_type: the aggregate cluster (upstream/aggregate.h) is the one
 * custom type SHARP has. Its own settings are few: Envoy reads the
 * members' for everything a try does; what the aggregate's would set is
 * refused, except connect_timeout (required by Envoy's older versions and
 * in its examples; the members' apply), the retry thresholds of
 * circuit_breakers (the router's retry breaker is the route's cluster's)
 * and common_lb_config.healthy_panic_threshold (the aggregate's priority
 * load). */
static int build_aggregate(build_ctx_t *b, sharp_cluster_t *c, const cluster_pb_t *pb, const char *path)
{
    char p[1024];
    const Envoy__Config__Cluster__V3__Cluster__CustomClusterType *ct = pb->cluster_type;
    snprintf(p, sizeof p, "%s.cluster_type", path);
    if (strcmp(ct->name, "envoy.clusters.aggregate") != 0)
        return fail(b, p, "cluster type '%s' is not supported by SHARP (only envoy.clusters.aggregate and "
                          "envoy.clusters.dynamic_forward_proxy)", ct->name);
    snprintf(p, sizeof p, "%s.cluster_type.typed_config", path);
    if (!ct->typed_config) return fail(b, p, "is required");
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&ct->typed_config->base, NULL, &e);
    if (!m) return fail(b, p, "%s", e.msg);
    if (m->descriptor != &envoy__extensions__clusters__aggregate__v3__cluster_config__descriptor) {
        int rc = fail(b, p, "envoy.clusters.aggregate takes an envoy.extensions.clusters.aggregate.v3.ClusterConfig, "
                            "not %s", m->descriptor->name);
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    const Envoy__Extensions__Clusters__Aggregate__V3__ClusterConfig *cc =
        (const Envoy__Extensions__Clusters__Aggregate__V3__ClusterConfig *)m;
    int rc = 0;
    snprintf(p, sizeof p, "%s.cluster_type.typed_config.clusters", path);
    if (!cc->n_clusters) rc = fail(b, p, "value must contain at least 1 item(s)");
    for (size_t i = 0; !rc && i < cc->n_clusters; i++) {
        snprintf(p, sizeof p, "%s.cluster_type.typed_config.clusters[%zu]", path, i);
        if (!cc->clusters[i][0]) rc = fail(b, p, "must not be empty");
        else if (!strcmp(cc->clusters[i], c->name))
            rc = fail(b, p, "aggregate cluster '%s' names itself: a loop", c->name);
        for (size_t j = 0; !rc && j < i; j++)
            if (!strcmp(cc->clusters[i], cc->clusters[j]))
                rc = fail(b, p, "cluster '%s' is listed twice", cc->clusters[i]);
    }
    if (!rc) {
        sharp_aggregate_t *a = c->aggregate = sharp_calloc(1, sizeof *a);
        a->members = sharp_calloc(cc->n_clusters, sizeof *a->members);
        for (size_t i = 0; i < cc->n_clusters; i++) a->members[a->n++] = sharp_strdup(cc->clusters[i]);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) return rc;
    if (pb->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
        snprintf(p, sizeof p, "%s.lb_policy", path);
        return fail(b, p, "cluster manager: cluster provided LB not specified but cluster '%s' provided one. Check "
                          "cluster documentation.", c->name);
    }
    /* every other field of the Cluster is the members' business */
    static const char *const allowed[] = {"name", "alt_stat_name", "cluster_type", "lb_policy", "connect_timeout",
                                          "circuit_breakers", "common_lb_config", "dns_lookup_family"};
    const ProtobufCMessageDescriptor *d = pb->base.descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!sharp_cfg_field_present(&pb->base, f)) continue;
        bool ok = false;
        for (size_t k = 0; k < SHARP_ARRAY_SIZE(allowed) && !ok; k++) ok = !strcmp(f->name, allowed[k]);
        if (ok) continue;
        snprintf(p, sizeof p, "%s.%s", path, f->name);
        return fail(b, p, "does not apply to an aggregate cluster: a try uses the settings of the member cluster "
                          "it goes to");
    }
    if (pb->common_lb_config) {
        const ProtobufCMessageDescriptor *ld = pb->common_lb_config->base.descriptor;
        for (unsigned i = 0; i < ld->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &ld->fields[i];
            if (!sharp_cfg_field_present(&pb->common_lb_config->base, f) ||
                !strcmp(f->name, "healthy_panic_threshold"))
                continue;
            snprintf(p, sizeof p, "%s.common_lb_config.%s", path, f->name);
            return fail(b, p, "does not apply to an aggregate cluster's balancer (only healthy_panic_threshold "
                              "does; the members' balancers have their own)");
        }
    }
    for (size_t i = 0; pb->circuit_breakers && i < pb->circuit_breakers->n_thresholds; i++) {
        const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t = pb->circuit_breakers->thresholds[i];
        const char *bad = t->max_connections        ? "max_connections"
                          : t->max_pending_requests ? "max_pending_requests"
                          : t->max_requests         ? "max_requests"
                                                    : NULL;
        if (!bad) continue;
        snprintf(p, sizeof p, "%s.circuit_breakers.thresholds[%zu].%s", path, i, bad);
        return fail(b, p, "does not apply to an aggregate cluster: connections and requests count in the member "
                          "cluster's breakers (only max_retries and retry_budget apply to the aggregate)");
    }
    if (pb->circuit_breakers && pb->circuit_breakers->n_per_host_thresholds) {
        snprintf(p, sizeof p, "%s.circuit_breakers.per_host_thresholds", path);
        return fail(b, p, "does not apply to an aggregate cluster, which has no hosts");
    }
    return 0;
}

/* cluster_type envoy.clusters.dynamic_forward_proxy (Envoy's
 * Extensions::Clusters::DynamicForwardProxy::Cluster): no endpoints, its
 * hosts are the DNS cache's (upstream/dfp.h), made per request as an
 * ORIGINAL_DST cluster's are (upstream/original_dst.h), named by the host
 * they were resolved from. Envoy sets upstream_http_protocol_options'
 * auto_sni and auto_san_validation on such a cluster when it has none;
 * SHARP, which has no upstream_http_protocol_options, always does the
 * same with TLS: the host's name is the SNI and the SAN the certificate
 * must have. */
static int build_dfp_cluster(build_ctx_t *b, sharp_cluster_t *c, const cluster_pb_t *pb, const char *path)
{
    char p[1024];
    const Envoy__Config__Cluster__V3__Cluster__CustomClusterType *ct = pb->cluster_type;
    snprintf(p, sizeof p, "%s.cluster_type.typed_config", path);
    if (!ct->typed_config) return fail(b, p, "is required");
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&ct->typed_config->base, NULL, &e);
    if (!m) return fail(b, p, "%s", e.msg);
    if (m->descriptor != &envoy__extensions__clusters__dynamic_forward_proxy__v3__cluster_config__descriptor) {
        int rc = fail(b, p, "envoy.clusters.dynamic_forward_proxy takes an "
                            "envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig, not %s",
                      m->descriptor->name);
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    const Envoy__Extensions__Clusters__DynamicForwardProxy__V3__ClusterConfig *cc = (const void *)m;
    int rc = 0;
    char q[1100];
    if (cc->allow_coalesced_connections) {
        snprintf(q, sizeof q, "%s.allow_coalesced_connections", p);
        rc = fail(b, q, "connection coalescing (HTTP/2 connections reused across hosts) is not supported by SHARP");
    } else if (!cc->dns_cache_config) {
        snprintf(q, sizeof q, "%s.dns_cache_config", p);
        rc = fail(b, q, "value is required");
    } else {
        snprintf(q, sizeof q, "%s.dns_cache_config", p);
        sharp_dfp_cache_t *cache = build_dns_cache(b, cc->dns_cache_config, q);
        if (!cache) rc = -1;
        else {
            sharp_odst_t *o = c->odst = sharp_odst_new();
            o->dfp = cache;
            o->cleanup_ms = 1; /* every housekeeping pass */
        }
    }
    /* allow_insecure_cluster_options lets upstream_http_protocol_options
     * turn auto_sni / auto_san_validation off; SHARP refuses that field, so
     * both always apply and the flag changes nothing */
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc) return rc;
    if (pb->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED) {
        snprintf(p, sizeof p, "%s.lb_policy", path);
        return fail(b, p, "cluster manager: cluster provided LB not specified but cluster '%s' provided one. Check "
                          "cluster documentation.", c->name);
    }
    static const struct {
        const char *field, *why;
    } refused[] = {
        {"load_assignment", "a dynamic forward proxy cluster's hosts come from its DNS cache"},
        {"health_checks", "health checks of a dynamic forward proxy cluster's hosts are not supported by SHARP"},
        {"outlier_detection", "outlier detection of a dynamic forward proxy cluster's hosts is not supported by SHARP"},
        {"load_balancing_policy", "a dynamic forward proxy cluster provides its own load balancer"},
        {"common_lb_config", "does not apply to a dynamic forward proxy cluster's load balancer"},
        {"lb_subset_config", "does not apply to a dynamic forward proxy cluster's load balancer"},
        {"eds_cluster_config", "a dynamic forward proxy cluster has no EDS endpoints"},
    };
    const ProtobufCMessageDescriptor *d = pb->base.descriptor;
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(refused); k++) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, refused[k].field);
        if (!f || !sharp_cfg_field_present(&pb->base, f)) continue;
        snprintf(p, sizeof p, "%s.%s", path, refused[k].field);
        return fail(b, p, "%s", refused[k].why);
    }
    return 0;
}

static sharp_cluster_t *build_cluster(build_ctx_t *b, const cluster_pb_t *pb, uint32_t index, const char *path)
{
    char p[1024];
    if (!pb->name[0]) {
        fail(b, path, "name is required");
        return NULL;
    }
    sharp_cluster_t *c = sharp_calloc(1, sizeof *c);
    c->name = sharp_strdup(pb->name);
    c->stat_name = sharp_strdup(pb->alt_stat_name[0] ? pb->alt_stat_name : pb->name);
    c->index = index;
    if (pb->cluster_discovery_type_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE) {
        /* the oneof's other member: pb->type is not set */
        c->type = SHARP_CLUSTER_STATIC;
        if (!strcmp(pb->cluster_type->name, "envoy.clusters.dynamic_forward_proxy")) {
            if (build_dfp_cluster(b, c, pb, path) < 0) goto bad;
        } else if (build_aggregate(b, c, pb, path) < 0) goto bad;
    } else switch (pb->type) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC: c->type = SHARP_CLUSTER_STATIC; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS: c->type = SHARP_CLUSTER_STRICT_DNS; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS: c->type = SHARP_CLUSTER_LOGICAL_DNS; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS: c->type = SHARP_CLUSTER_EDS; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST: c->type = SHARP_CLUSTER_ORIGINAL_DST; break;
    default:
        snprintf(p, sizeof p, "%s.type", path);
        fail(b, p, "only STATIC, STRICT_DNS, LOGICAL_DNS, EDS and ORIGINAL_DST clusters are supported yet");
        goto bad;
    }
    if (build_original_dst(b, c, pb, path) < 0) goto bad;
    if (pb->eds_cluster_config && c->type != SHARP_CLUSTER_EDS) {
        snprintf(p, sizeof p, "%s.eds_cluster_config", path);
        fail(b, p, "eds_cluster_config only applies to a cluster of type EDS");
        goto bad;
    }
    if (c->type == SHARP_CLUSTER_EDS && pb->load_assignment) {
        /* Envoy ignores it: the endpoints are EDS's */
        snprintf(p, sizeof p, "%s.load_assignment", path);
        fail(b, p, "an EDS cluster takes its endpoints from EDS, not load_assignment");
        goto bad;
    }
    if ((c->type == SHARP_CLUSTER_STATIC || c->type == SHARP_CLUSTER_ORIGINAL_DST) &&
        (pb->dns_refresh_rate || pb->dns_failure_refresh_rate || pb->respect_dns_ttl || pb->n_dns_resolvers ||
         pb->dns_resolution_config || pb->dns_jitter || pb->use_tcp_for_dns_lookups || pb->typed_dns_resolver_config)) {
        /* Envoy ignores them on a STATIC cluster; SHARP says so rather than
         * accept a setting that does nothing (dns_lookup_family, which
         * Envoy's examples set on every cluster, is let through: a STATIC
         * cluster's addresses are numeric, there is nothing to look up) */
        snprintf(p, sizeof p, "%s.type", path);
        fail(b, p, "the dns_* fields only apply to STRICT_DNS and LOGICAL_DNS clusters");
        goto bad;
    }
    snprintf(p, sizeof p, "%s.transport_socket", path);
    if (!strcmp(transport_socket_type(pb->transport_socket), UPSTREAM_TLS_TYPE)) {
        char what[600], prefix[600];
        snprintf(what, sizeof what, "cluster '%s'", c->name);
        snprintf(prefix, sizeof prefix, "cluster.%s.client_ssl_socket_factory", c->stat_name);
        if (!(c->tls = build_tls(b, pb->transport_socket, p, false, what, prefix))) goto bad;
    } else if (!plaintext_transport_socket(pb->transport_socket)) {
        fail(b, p, "transport socket '%s' is not supported by SHARP (only raw_buffer: plaintext, or tls with an "
             "UpstreamTlsContext)", pb->transport_socket->name);
        goto bad;
    }
    /* a dynamic forward proxy's port when the host names none: Envoy's
     * ProxyFilter takes 443 when the transport socket is secure */
    if (c->odst && c->odst->dfp) c->odst->dfp_default_port = c->tls ? 443 : 80;
    c->connect_timeout_ms = duration_ms(pb->connect_timeout, 5000);
    if (c->connect_timeout_ms == 0) c->connect_timeout_ms = 1;
    if (subset_config(b, c, pb, path) < 0) goto bad;
    switch (c->odst || c->aggregate ? ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN : pb->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        /* Envoy's ClusterFactoryImplBase::create: only ORIGINAL_DST
         * provides its load balancer */
        snprintf(p, sizeof p, "%s.lb_policy", path);
        fail(b, p, "cluster manager: cluster provided LB specified but cluster '%s' did not provide one. Check "
                   "cluster documentation.", c->name);
        goto bad;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN: c->lb_policy = SHARP_LB_ROUND_ROBIN; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST: c->lb_policy = SHARP_LB_LEAST_REQUEST; break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM: c->lb_policy = SHARP_LB_RANDOM; break;
    default:
        /* Envoy ignores lb_policy when load_balancing_policy is set */
        if (pb->load_balancing_policy) break;
        snprintf(p, sizeof p, "%s.lb_policy", path);
        fail(b, p, "only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported yet");
        goto bad;
    }
    c->choice_count = 2;
    if (pb->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG &&
        pb->least_request_lb_config->choice_count) {
        c->choice_count = pb->least_request_lb_config->choice_count->value;
        if (c->choice_count < 2) {
            snprintf(p, sizeof p, "%s.least_request_lb_config.choice_count", path);
            fail(b, p, "must be at least 2");
            goto bad;
        }
    }
    c->active_request_bias = 1.0;
    c->zone = (sharp_zone_config_t){.routing_enabled = 100, .min_cluster_size = 6};
    /* locality_weighted_lb_config, the oneof's other member: locality-
     * weighted balancing (upstream/lb.h) */
    if (pb->common_lb_config && !pb->load_balancing_policy &&
        pb->common_lb_config->locality_config_specifier_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG)
        c->locality_weighted = true;
    if (pb->common_lb_config && !pb->load_balancing_policy &&
        pb->common_lb_config->locality_config_specifier_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_ZONE_AWARE_LB_CONFIG) {
        const Envoy__Config__Cluster__V3__Cluster__CommonLbConfig__ZoneAwareLbConfig *z =
            pb->common_lb_config->zone_aware_lb_config;
        if (z->routing_enabled) c->zone.routing_enabled = (uint32_t)llround(z->routing_enabled->value);
        if (z->min_cluster_size) c->zone.min_cluster_size = z->min_cluster_size->value;
        c->zone.fail_traffic_on_panic = z->fail_traffic_on_panic;
        c->has_zone_config = true;
    }
    c->panic_threshold = 50.0;
    if (pb->common_lb_config && pb->common_lb_config->healthy_panic_threshold)
        c->panic_threshold = pb->common_lb_config->healthy_panic_threshold->value;
    c->per_connection_buffer_limit = pb->per_connection_buffer_limit_bytes ? pb->per_connection_buffer_limit_bytes->value : 1024 * 1024;
    c->close_connections_on_host_health_failure = pb->close_connections_on_host_health_failure;
    c->max_requests_per_connection = pb->max_requests_per_connection ? pb->max_requests_per_connection->value : 0;
    sharp_config_upstream_common_http(pb->common_http_protocol_options, c);
    /* Envoy (createOptions): one protocol unless protocol_selection says
     * otherwise; the HttpProtocolOptions extension, when present, replaces
     * these fields whole (applied below). */
    if (pb->http_protocol_options && pb->http2_protocol_options) {
        fail(b, path, "cluster: Both HTTP1 and HTTP2 options may only be configured with non-default "
                      "'protocol_selection' values");
        goto bad;
    }
    if (pb->http2_protocol_options) sharp_config_upstream_http2(pb->http2_protocol_options, c);
    if (pb->http_protocol_options) {
        char kerr[512];
        if (sharp_config_h1_key_format(pb->http_protocol_options, &c->h1_keys, kerr, sizeof kerr) < 0) {
            snprintf(p, sizeof p, "%s.http_protocol_options", path);
            fail(b, p, "%s", kerr);
            goto bad;
        }
    }
    for (size_t i = 0; i < pb->n_typed_extension_protocol_options; i++) {
        const char *key = pb->typed_extension_protocol_options[i]->key;
        snprintf(p, sizeof p, "%s.typed_extension_protocol_options[\"%s\"]", path, key);
        if (strcmp(key, "envoy.extensions.upstreams.http.v3.HttpProtocolOptions") != 0) {
            fail(b, p, "unsupported protocol options extension");
            goto bad;
        }
        char sub[64] = "", msg[512];
        if (sharp_config_apply_upstream_http_options(&pb->typed_extension_protocol_options[i]->value->base, c,
                                                     sub, sizeof sub, msg, sizeof msg) < 0) {
            char sp[1200];
            snprintf(sp, sizeof sp, "%s%s%s", p, sub[0] ? "." : "", sub);
            fail(b, sp, "%s", msg);
            goto bad;
        }
    }
    if (pb->upstream_connection_options && pb->upstream_connection_options->tcp_keepalive) {
        /* Envoy: SO_KEEPALIVE, plus each sub-field that is set; the support
         * table keeps the values within what Linux accepts. */
        const Envoy__Config__Core__V3__TcpKeepalive *k = pb->upstream_connection_options->tcp_keepalive;
        c->tcp_keepalive = true;
        if (k->keepalive_probes) c->keepalive_probes = k->keepalive_probes->value;
        if (k->keepalive_time) c->keepalive_time_s = k->keepalive_time->value;
        if (k->keepalive_interval) c->keepalive_interval_s = k->keepalive_interval->value;
    }
    /* Each priority takes the first thresholds entry naming it, as Envoy's
     * ResourceManagers do; a priority without one keeps Envoy's defaults. */
    for (int prio = 0; prio < SHARP_NPRIORITIES; prio++) {
        sharp_cb_thresholds_t *cb = &c->cb[prio];
        *cb = (sharp_cb_thresholds_t){.max_connections = 1024, .max_pending_requests = 1024, .max_requests = 1024,
                                      .max_retries = 3};
        for (size_t i = 0; pb->circuit_breakers && i < pb->circuit_breakers->n_thresholds; i++) {
            const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *t = pb->circuit_breakers->thresholds[i];
            if ((int)t->priority != prio) continue;
            if (t->max_connections) cb->max_connections = t->max_connections->value;
            if (t->max_pending_requests) cb->max_pending_requests = t->max_pending_requests->value;
            if (t->max_requests) cb->max_requests = t->max_requests->value;
            if (t->max_retries) cb->max_retries = t->max_retries->value;
            cb->track_remaining = t->track_remaining;
            if (t->retry_budget) {
                cb->has_retry_budget = true;
                cb->budget_percent = t->retry_budget->budget_percent ? t->retry_budget->budget_percent->value : 20.0;
                cb->min_retry_concurrency =
                    t->retry_budget->min_retry_concurrency ? t->retry_budget->min_retry_concurrency->value : 3;
                if (!(cb->budget_percent >= 0 && cb->budget_percent <= 100)) {
                    snprintf(p, sizeof p, "%s.circuit_breakers.thresholds[%zu].retry_budget.budget_percent", path, i);
                    fail(b, p, "must be in [0, 100]");
                    goto bad;
                }
            }
            break;
        }
    }
    if ((c->type == SHARP_CLUSTER_STRICT_DNS || c->type == SHARP_CLUSTER_LOGICAL_DNS) && build_dns(b, c, pb, path) < 0)
        goto bad;
    /* a DNS cluster has no host before its first answer */
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = c->dns ? NULL : pb->load_assignment;
    size_t n = 0;
    for (size_t i = 0; la && i < la->n_endpoints; i++) n += la->endpoints[i]->n_lb_endpoints;
    c->hosts = sharp_calloc(n ? n : 1, sizeof *c->hosts);
    for (size_t i = 0; la && i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = la->endpoints[i];
        /* the locality's metadata: its first host owns this reference */
        sharp_locality_md_t *lm = NULL;
        for (size_t j = 0; j < le->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *e = le->lb_endpoints[j];
            snprintf(p, sizeof p, "%s.load_assignment.endpoints[%zu].lb_endpoints[%zu]", path, i, j);
            if (e->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                fail(b, p, "endpoint is required");
                goto bad;
            }
            sharp_host_t *h = sharp_calloc(1, sizeof *h);
            c->hosts[c->nhosts] = h;
            h->index = c->nhosts++;
            atomic_init(&h->locality_md, j ? sharp_locality_md_ref(lm) : (lm = locality_md_from(le->metadata)));
            char ap[1200];
            snprintf(ap, sizeof ap, "%s.endpoint.address", p);
            if (socket_address(b, e->endpoint->address, ap, &h->addr, &h->addrlen, NULL, NULL) < 0) goto bad;
            sharp_addr_str((struct sockaddr *)&h->addr, h->address, sizeof h->address);
            snprintf(h->hostname, sizeof h->hostname, "%s", e->endpoint->hostname);
            h->weight = e->load_balancing_weight ? e->load_balancing_weight->value : 1;
            if (h->weight == 0) {
                snprintf(ap, sizeof ap, "%s.load_balancing_weight", p);
                fail(b, ap, "must be at least 1");
                goto bad;
            }
            h->priority = le->priority;
            h->locality = locality_id(le->locality);
            h->locality_weight = le->load_balancing_weight ? le->load_balancing_weight->value : 0;
            snprintf(ap, sizeof ap, "%s.endpoint", p);
            if (endpoint_hc(b, e->endpoint, ap, &h->hc) < 0) goto bad;
            h->lb_meta = endpoint_lb_meta(e->metadata);
            if (check_combinations(b, c, h->lb_meta, p) < 0) goto bad;
            if (e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY ||
                e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING ||
                e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT)
                h->health_flags = SHARP_HOST_FAILED_EDS_HEALTH;
        }
    }
    if (c->type == SHARP_CLUSTER_EDS) {
        /* the endpoints file is read now: the cluster's first host set */
        char ep[1200], eerr[1200];
        snprintf(ep, sizeof ep, "%s.eds_cluster_config", path);
        if (!b->srv->xds || sharp_xds_eds_subscribe(b->srv->xds, c, pb->eds_cluster_config ? &pb->eds_cluster_config->base : NULL,
                                                    ep, eerr, sizeof eerr) < 0) {
            fail(b, ep, "%s", b->srv->xds ? eerr : "EDS needs the server's xDS manager");
            goto bad;
        }
    }
    char hc_path[1200], hc_msg[512];
    if (sharp_config_health_checks(c, pb->health_checks, pb->n_health_checks, path, b->srv->stats, hc_path,
                                   sizeof hc_path, hc_msg, sizeof hc_msg) < 0) {
        fail(b, hc_path, "%s", hc_msg);
        goto bad;
    }
    /* Envoy's ClusterInfoImpl: USE_ALPN needs a transport socket with ALPN */
    if (c->auto_http && !c->tls) {
        fail(b, path, "ALPN configured for cluster %s which has a non-ALPN transport socket", c->name);
        goto bad;
    }
    /* Envoy moves the checked address to alt_port, which a Unix socket
     * does not have (Envoy has no IP to change and fails at run time). */
    for (uint32_t k = 0; c->health_check && c->health_check->alt_port && k < c->nhosts; k++)
        if (c->hosts[k]->addr.ss_family == AF_UNIX) {
            snprintf(hc_path, sizeof hc_path, "%s.health_checks[0].alt_port", path);
            fail(b, hc_path, "host '%s' is a Unix domain socket (pipe), which has no port to check on",
                 c->hosts[k]->address);
            goto bad;
        }
    /* health_check_config: port_value needs a port to replace, and where
     * the check's alt_port and an endpoint's address or port_value would
     * both move the check, SHARP does not pick one */
    for (uint32_t k = 0; k < c->nhosts; k++) {
        const sharp_host_t *h = c->hosts[k];
        snprintf(hc_path, sizeof hc_path, "%s.load_assignment (endpoint %s).health_check_config", path, h->address);
        if (endpoint_hc_check(b, c, &h->hc, h->addr.ss_family, hc_path) < 0) goto bad;
    }
    for (uint32_t k = 0; c->dns && k < c->dns->ntargets; k++) {
        snprintf(hc_path, sizeof hc_path, "%s.load_assignment (endpoint %s).health_check_config", path,
                 c->dns->targets[k].name);
        if (endpoint_hc_check(b, c, &c->dns->targets[k].hc, AF_INET, hc_path) < 0) goto bad;
    }
    char lb_path[1200], lb_msg[512];
    if (sharp_config_load_balancing_policy(c, pb, path, b->srv->stats, lb_path, sizeof lb_path, lb_msg,
                                           sizeof lb_msg) < 0) {
        fail(b, lb_path, "%s", lb_msg);
        goto bad;
    }
    /* Envoy's round robin, least request and random balancers are all
     * zone aware: with a local cluster they route by locality, and
     * fail_traffic_on_panic applies with or without one */
    const char *local_name = b->bootstrap && b->bootstrap->cluster_manager &&
                                     b->bootstrap->cluster_manager->local_cluster_name[0]
                                 ? b->bootstrap->cluster_manager->local_cluster_name
                                 : NULL;
    if (!c->shuffle_shard && !c->odst && !c->aggregate && !c->locality_weighted &&
        (local_name || c->zone.fail_traffic_on_panic)) {
        c->zone_on = true;
        c->zone_local_cluster = local_name ? sharp_strdup(local_name) : NULL;
        const Envoy__Config__Core__V3__Locality *nl =
            b->bootstrap && b->bootstrap->node ? b->bootstrap->node->locality : NULL;
        c->local_locality = nl ? sharp_locality_intern(nl->region, nl->zone, nl->sub_zone) : 0;
    }
    sharp_cluster_init_hostset(c);
    sharp_cluster_stats_init(c, b->srv->stats);
    if (pb->outlier_detection) {
        char od_path[1200], od_msg[512];
        if (sharp_outlier_configure(c, &pb->outlier_detection->base, path, od_path, sizeof od_path,
                                    od_msg, sizeof od_msg) < 0) {
            fail(b, od_path, "%s", od_msg);
            goto bad;
        }
    }
    return c;
bad:
    sharp_xds_eds_free(c->eds);
    c->eds = NULL;
    sharp_cluster_free(c);
    return NULL;
}

/* A listener from LDS or a cluster from CDS: its TLS contexts may name the
 * bootstrap's static secrets, and secrets from SDS (files or servers)
 * through the bootstrap snapshot's providers, shared with every other
 * consumer (tls/sds.h); a consumer of a listener or cluster that is
 * dropped or replaced is freed by the sweep once it is gone. */
static void dynamic_secrets_begin(build_ctx_t *b, sharp_server_t *srv)
{
    const bootstrap_t *bs = srv->config ? (const bootstrap_t *)srv->config->bootstrap : NULL;
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs ? bs->static_resources : NULL;
    sharp_tls_config_use_secrets(sr ? sr->secrets : NULL, sr ? sr->n_secrets : 0);
    b->sds = srv->snap ? srv->snap->sds : NULL;
    sharp_tls_config_use_sds(b->sds ? sharp_sds_resolve : NULL, b->sds);
}

static void dynamic_secrets_end(void)
{
    sharp_tls_config_use_secrets(NULL, 0);
    sharp_tls_config_use_sds(NULL, NULL);
}

sharp_cluster_t *sharp_config_build_cluster(sharp_server_t *srv, const ProtobufCMessage *pb, uint32_t index,
                                            const char *source, const char *where, char *err, size_t errlen)
{
    sharp_config_t cfg = {.merged = true};
    snprintf(cfg.source, sizeof cfg.source, "%s", source);
    build_ctx_t b = {.cfg = &cfg, .srv = srv, .err = err, .errlen = errlen, .random = sharp_now_ns() | 1,
                     .dynamic = true,
                     /* its DNS resolver defaults to the bootstrap's */
                     .bootstrap = srv->config ? (const bootstrap_t *)srv->config->bootstrap : NULL};
    dynamic_secrets_begin(&b, srv);
    sharp_cluster_t *c = build_cluster(&b, (const cluster_pb_t *)pb, index, where);
    dynamic_secrets_end();
    return c;
}

int sharp_config_cla_hosts(sharp_cluster_t *c, const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la,
                           const char *path, sharp_host_t ***out, uint32_t *nout, bool *changed, char *err,
                           size_t errlen)
{
    sharp_config_t cfg = {.merged = true};
    build_ctx_t b = {.cfg = &cfg, .err = err, .errlen = errlen};
    char p[1024], ap[1200];
    size_t n = 0;
    for (size_t i = 0; i < la->n_endpoints; i++) n += la->endpoints[i]->n_lb_endpoints;
    sharp_host_t **hosts = sharp_calloc(n ? n : 1, sizeof *hosts);
    uint32_t nh = 0;
    /* hosts built here, not yet the cluster's: freed on an error */
    sharp_host_t **fresh = sharp_calloc(n ? n : 1, sizeof *fresh);
    uint32_t nfresh = 0;
    sharp_host_index_t listed = {0}; /* this assignment's hosts by address: duplicates */
    sharp_locality_md_t *lm = NULL;
    for (size_t i = 0; i < la->n_endpoints; i++) {
        const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = la->endpoints[i];
        /* the locality's metadata, shared by its hosts (each takes a
         * reference; this one is dropped once the locality is done) */
        sharp_locality_md_put(lm);
        lm = locality_md_from(le->metadata);
        char pre[1024];
        snprintf(pre, sizeof pre, "%s.endpoints[%zu].lb_endpoints[", path, i);
        for (size_t j = 0; j < le->n_lb_endpoints; j++) {
            const Envoy__Config__Endpoint__V3__LbEndpoint *e = le->lb_endpoints[j];
            char num[24];
            size_t at = sizeof num;
            num[--at] = '\0';
            num[--at] = ']';
            for (size_t v = j;; v /= 10) {
                num[--at] = (char)('0' + v % 10);
                if (v < 10) break;
            }
            path_cat(p, sizeof p, pre, num + at);
            if (e->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT) {
                fail(&b, p, "endpoint is required");
                goto bad;
            }
            struct sockaddr_storage addr;
            socklen_t addrlen;
            path_cat(ap, sizeof ap, p, ".endpoint.address");
            if (socket_address(&b, e->endpoint->address, ap, &addr, &addrlen, NULL, NULL) < 0) goto bad;
            uint32_t weight = e->load_balancing_weight ? e->load_balancing_weight->value : 1;
            if (weight == 0) {
                snprintf(ap, sizeof ap, "%s.load_balancing_weight", p);
                fail(&b, ap, "must be at least 1");
                goto bad;
            }
            bool unhealthy = e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY ||
                             e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__DRAINING ||
                             e->health_status == ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT;
            if (sharp_host_index_find(&listed, &addr)) {
                fail(&b, ap, "duplicate endpoint address in the ClusterLoadAssignment");
                goto bad;
            }
            sharp_lbmeta_t *meta = endpoint_lb_meta(e->metadata);
            if (check_combinations(&b, c, meta, p) < 0) {
                free(meta);
                goto bad;
            }
            uint32_t lw = le->load_balancing_weight ? le->load_balancing_weight->value : 0;
            sharp_host_hc_t hcc;
            char hp[1300];
            path_cat(ap, sizeof ap, p, ".endpoint");
            path_cat(hp, sizeof hp, p, ".endpoint.health_check_config");
            if (endpoint_hc(&b, e->endpoint, ap, &hcc) < 0 || endpoint_hc_check(&b, c, &hcc, addr.ss_family, hp) < 0) {
                free(meta);
                goto bad;
            }
            /* a host whose address the cluster has (or had) keeps its
             * identity: health check, outlier and request state */
            sharp_host_t *h = sharp_host_index_find(&c->all_index, &addr);
            /* another health_check_config is another host, as it is
             * checked elsewhere: the old one leaves with its check state */
            if (h && !sharp_host_hc_equal(&h->hc, &hcc)) {
                h = NULL;
                for (uint32_t k = 0; k < c->nall_hosts && !h; k++)
                    if (c->all_hosts[k]->addrlen == addrlen && !memcmp(&c->all_hosts[k]->addr, &addr, addrlen) &&
                        sharp_host_hc_equal(&c->all_hosts[k]->hc, &hcc))
                        h = c->all_hosts[k];
            }
            if (!h) {
                h = sharp_calloc(1, sizeof *h);
                h->hc = hcc;
                memcpy(&h->addr, &addr, sizeof addr);
                h->addrlen = addrlen;
                sharp_addr_str((struct sockaddr *)&h->addr, h->address, sizeof h->address);
                snprintf(h->hostname, sizeof h->hostname, "%s", e->endpoint->hostname);
                h->weight = weight;
                h->priority = le->priority;
                h->locality = locality_id(le->locality);
                h->locality_weight = lw;
                h->lb_meta = meta;
                atomic_init(&h->health_flags, unhealthy ? SHARP_HOST_FAILED_EDS_HEALTH : 0);
                atomic_init(&h->locality_md, sharp_locality_md_ref(lm));
                fresh[nfresh++] = h;
            } else {
                /* the endpoint's settings now (the balancers are rebuilt
                 * over the new set) */
                uint32_t loc = locality_id(le->locality);
                if (h->weight != weight || h->priority != le->priority || h->locality != loc ||
                    h->locality_weight != lw)
                    *changed = true;
                h->weight = weight;
                h->priority = le->priority;
                h->locality = loc;
                h->locality_weight = lw;
                /* metadata is read on the main thread only (the subsets are
                 * remade with the set), so it is replaced in place */
                if (!sharp_lbmeta_equal(meta, h->lb_meta)) {
                    *changed = true;
                    free(h->lb_meta);
                    h->lb_meta = meta;
                } else {
                    free(meta);
                }
                /* workers load it with a reference; the old one is retired
                 * (nothing is rebuilt for it) */
                sharp_host_locality_md_set(h, lm);
                snprintf(h->hostname, sizeof h->hostname, "%s", e->endpoint->hostname);
                uint32_t was = atomic_load(&h->health_flags) & SHARP_HOST_FAILED_EDS_HEALTH;
                if (unhealthy != (was != 0)) {
                    *changed = true;
                    if (unhealthy) sharp_host_health_set(h, SHARP_HOST_FAILED_EDS_HEALTH);
                    else sharp_host_health_clear(h, SHARP_HOST_FAILED_EDS_HEALTH);
                }
            }
            hosts[nh++] = h;
            sharp_host_index_add(&listed, h);
        }
    }
    bool diff = nh != c->nhosts;
    for (uint32_t i = 0; !diff && i < nh; i++) diff = hosts[i] != c->hosts[i];
    *changed = *changed || diff;
    sharp_locality_md_put(lm);
    free(fresh);
    sharp_host_index_free(&listed);
    *out = hosts;
    *nout = nh;
    return 0;
bad:
    sharp_locality_md_put(lm);
    for (uint32_t k = 0; k < nfresh; k++) {
        sharp_host_locality_md_destroy(fresh[k]);
        free(fresh[k]->lb_meta);
        free(fresh[k]);
    }
    free(fresh);
    free(hosts);
    sharp_host_index_free(&listed);
    return -1;
}

/* ---- runtime and regex engine ---- */

#define GOOGLE_RE2_TYPE "envoy.extensions.regex_engines.v3.GoogleRE2"

/* default_regex_engine (GoogleRE2 only: it is what SHARP always uses) and
 * the runtime limits on regex program sizes, set before any regex of this
 * configuration is compiled. */
static int configure_runtime_and_regex(build_ctx_t *b, const bootstrap_t *bs)
{
    /* the runtime first: its re2.max_program_size keys apply to every
     * regex of this configuration (the stats matcher's too, so its runtime.*
     * stats are registered after stats_config, as in Envoy) */
    char rpath[1200], rmsg[512];
    sharp_runtime_free(b->srv->runtime);
    b->srv->runtime = sharp_config_layered_runtime(bs->layered_runtime, b->srv->node_cluster, NULL, rpath,
                                                   sizeof rpath, rmsg, sizeof rmsg);
    if (!b->srv->runtime) return fail(b, rpath, "%s", rmsg);
    if (sharp_config_runtime_regex_limits(b->srv->runtime, bs->layered_runtime, true, rpath, sizeof rpath, rmsg,
                                          sizeof rmsg) < 0)
        return fail(b, rpath, "%s", rmsg);
    const Envoy__Config__Core__V3__TypedExtensionConfig *e = bs->default_regex_engine;
    if (!e) return 0;
    if (!e->typed_config || !e->typed_config->type_url)
        return fail(b, "default_regex_engine.typed_config", "a regex engine is required");
    const char *slash = strrchr(e->typed_config->type_url, '/');
    const char *t = slash ? slash + 1 : e->typed_config->type_url;
    if (strcmp(t, GOOGLE_RE2_TYPE) != 0)
        return fail(b, "default_regex_engine.typed_config",
                    "regex engine '%s' is not supported by SHARP: only " GOOGLE_RE2_TYPE, t);
    sharp_config_error_t err = {{0}};
    ProtobufCMessage *m =
        sharp_any_unpack(&e->typed_config->base, &envoy__extensions__regex_engines__v3__google_re2__descriptor, &err);
    if (!m) return fail(b, "default_regex_engine.typed_config", "%s", err.msg);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* bootstrap_extensions: envoy.bootstrap.internal_listener (every Istio
 * sidecar bootstrap enables it) only makes internal listeners possible;
 * SHARP has none and refuses every internal listener and internal address
 * it is given, so the registry stays empty, as Envoy's does without them.
 * Any other extension is refused by name. */
#define INTERNAL_LISTENER_TYPE "envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
static int configure_bootstrap_extensions(build_ctx_t *b, const bootstrap_t *bs)
{
    char p[256];
    for (size_t i = 0; i < bs->n_bootstrap_extensions; i++) {
        const Envoy__Config__Core__V3__TypedExtensionConfig *e = bs->bootstrap_extensions[i];
        snprintf(p, sizeof p, "bootstrap_extensions[%zu].typed_config", i);
        if (!e->typed_config || !e->typed_config->type_url) return fail(b, p, "typed_config is required");
        const char *slash = strrchr(e->typed_config->type_url, '/');
        const char *t = slash ? slash + 1 : e->typed_config->type_url;
        if (strcmp(t, SHARP_SCALING_TYPE) == 0) {
            if (b->cfg->scaling)
                return fail(b, p, "a second " SHARP_SCALING_TYPE ": one lists every scaled cluster");
            sharp_config_error_t err = {{0}};
            ProtobufCMessage *m = sharp_any_unpack(
                &e->typed_config->base, &sharp__extensions__scaling__v1__scaling_agent__descriptor, &err);
            if (!m) return fail(b, p, "%s", err.msg);
            char epath[600], emsg[1024];
            /* --mode validate refuses a weights file that does not load; a
             * running server starts that cluster's agent in fallback */
            b->cfg->scaling = sharp_config_scaling(m, p, b->srv->opts.validate_only, epath, sizeof epath, emsg,
                                                   sizeof emsg);
            protobuf_c_message_free_unpacked(m, NULL);
            if (!b->cfg->scaling) return fail(b, epath, "%s", emsg);
            continue;
        }
        if (strcmp(t, INTERNAL_LISTENER_TYPE) != 0)
            return fail(b, p, "bootstrap extension '%s' (%s) is not supported by SHARP: only "
                        "envoy.bootstrap.internal_listener and " SHARP_SCALING_TYPE, e->name, t);
        sharp_config_error_t err = {{0}};
        ProtobufCMessage *m = sharp_any_unpack(
            &e->typed_config->base, &envoy__extensions__bootstrap__internal_listener__v3__internal_listener__descriptor,
            &err);
        if (!m) return fail(b, p, "%s", err.msg);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return 0;
}

/* A statsd sink's address: a numeric socket_address, its protocol left
 * aside as Envoy's resolveProtoAddress does (the sink always sends UDP). */
static int statsd_address(build_ctx_t *b, const Envoy__Config__Core__V3__Address *a, const char *path,
                          struct sockaddr_storage *ss, socklen_t *len)
{
    if (!a || a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS)
        return fail(b, path, "a socket_address is required (SHARP's statsd sinks send UDP to an IP address)");
    const Envoy__Config__Core__V3__SocketAddress *sa = a->socket_address;
    char p[256];
    snprintf(p, sizeof p, "%s.socket_address", path);
    if (sa->ipv4_compat) return fail(b, p, "%s", IPV4_COMPAT_LISTENERS_ONLY);
    if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE)
        return fail(b, p, "port_value is required (named_port is not supported)");
    if (sa->port_value > 65535) return fail(b, p, "port_value %u is out of range", sa->port_value);
    if (sharp_addr_parse(sa->address, sa->port_value, ss, len) < 0)
        return fail(b, p, "address '%s' is not a numeric IPv4 or IPv6 address", sa->address);
    return 0;
}

#define STATSD_SINK_TYPE "envoy.config.metrics.v3.StatsdSink"
#define DOG_STATSD_SINK_TYPE "envoy.config.metrics.v3.DogStatsdSink"
#define METRICS_SERVICE_TYPE "envoy.config.metrics.v3.MetricsServiceConfig"
#define OTLP_SINK_TYPE "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig"
#define STATIC_DETECTOR_TYPE "envoy.extensions.tracers.opentelemetry.resource_detectors.v3.StaticConfigResourceDetectorConfig"

typedef Envoy__Extensions__Tracers__Opentelemetry__ResourceDetectors__V3__StaticConfigResourceDetectorConfig
    static_detector_t;

/* resource_detectors: the static_config detector's attributes, in order
 * (Envoy merges each detector's resource over the previous one). The
 * unpacked detectors go to dets (freed by the caller). */
static int otlp_resource(build_ctx_t *b, const Envoy__Extensions__StatSinks__OpenTelemetry__V3__SinkConfig *sc,
                         const char *p, static_detector_t **dets, const char ***keys, const char ***values,
                         size_t *n)
{
    char fp[400];
    size_t total = 0;
    for (size_t i = 0; i < sc->n_resource_detectors; i++) {
        const Envoy__Config__Core__V3__TypedExtensionConfig *d = sc->resource_detectors[i];
        snprintf(fp, sizeof fp, "%s.resource_detectors[%zu].typed_config", p, i);
        const char *url = d->typed_config && d->typed_config->type_url ? d->typed_config->type_url : "";
        const char *slash = strrchr(url, '/');
        const char *t = slash ? slash + 1 : url;
        if (strcmp(t, STATIC_DETECTOR_TYPE) != 0)
            return fail(b, fp, "resource detector '%s' (%s) is not supported by SHARP: only "
                        "envoy.tracers.opentelemetry.resource_detectors.static_config", d->name ? d->name : "", t);
        sharp_config_error_t err = {{0}};
        dets[i] = (static_detector_t *)sharp_any_unpack(
            &d->typed_config->base,
            &envoy__extensions__tracers__opentelemetry__resource_detectors__v3__static_config_resource_detector_config__descriptor,
            &err);
        if (!dets[i]) return fail(b, fp, "%s", err.msg);
        total += dets[i]->n_attributes;
    }
    *keys = sharp_calloc(total + 1, sizeof **keys);
    *values = sharp_calloc(total + 1, sizeof **values);
    for (size_t i = 0; i < sc->n_resource_detectors; i++) {
        for (size_t a = 0; a < dets[i]->n_attributes; a++) {
            (*keys)[*n] = dets[i]->attributes[a]->key ? dets[i]->attributes[a]->key : "";
            (*values)[(*n)++] = dets[i]->attributes[a]->value ? dets[i]->attributes[a]->value : "";
        }
    }
    return 0;
}

/* A gRPC stats sink's service: envoy_grpc (`why` refuses the others) with
 * a cluster name, whose cluster is checked once the snapshot is built;
 * NULL after failing. */
static const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *
sink_envoy_grpc(build_ctx_t *b, const Envoy__Config__Core__V3__GrpcService *gs, const char *p, const char *why)
{
    char fp[320];
    if (gs->target_specifier_case != ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !gs->envoy_grpc) {
        snprintf(fp, sizeof fp, "%s.grpc_service", p);
        fail(b, fp, "%s", why);
        return NULL;
    }
    const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *eg = gs->envoy_grpc;
    if (!eg->cluster_name || !eg->cluster_name[0]) {
        snprintf(fp, sizeof fp, "%s.grpc_service.envoy_grpc.cluster_name", p);
        fail(b, fp, "value length must be at least 1 characters");
        return NULL;
    }
    return eg;
}

/* envoy.stat_sinks.open_telemetry (proxy/otlp_sink.h): Envoy's
 * SinkConfig validation (grpc_service required) and SHARP's limits: an
 * envoy_grpc service (google_grpc is refused by the support table), only
 * static_config resource detectors, no custom_metric_conversions. The
 * cluster is checked
 * once the snapshot is built (sharp_otlp_sink_check). */
static int otlp_stats_sink(build_ctx_t *b, const ProtobufCMessage *m, const char *p)
{
    const Envoy__Extensions__StatSinks__OpenTelemetry__V3__SinkConfig *sc = (const void *)m;
    char fp[320];
    if (sc->custom_metric_conversions) {
        snprintf(fp, sizeof fp, "%s.custom_metric_conversions", p);
        return fail(b, fp, "custom_metric_conversions (stat matching, renaming and aggregation) is not supported "
                    "by SHARP");
    }
    if (sc->protocol_specifier_case != ENVOY__EXTENSIONS__STAT_SINKS__OPEN_TELEMETRY__V3__SINK_CONFIG__PROTOCOL_SPECIFIER_GRPC_SERVICE ||
        !sc->grpc_service) {
        snprintf(fp, sizeof fp, "%s.protocol_specifier", p);
        return fail(b, fp, "value is required");
    }
    const Envoy__Config__Core__V3__GrpcService *gs = sc->grpc_service;
    const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *eg =
        sink_envoy_grpc(b, gs, p, "envoy_grpc is required (google_grpc is not supported by SHARP)");
    if (!eg) return -1;
    sharp_headers_t md;
    sharp_headers_init(&md);
    sharp_grpc_initial_metadata(&md, gs);
    static_detector_t **dets = sharp_calloc(sc->n_resource_detectors + 1, sizeof *dets);
    const char **rkeys = NULL, **rvalues = NULL;
    size_t nres = 0;
    int rc = otlp_resource(b, sc, p, dets, &rkeys, &rvalues, &nres);
    if (rc == 0) {
        sharp_otlp_options_t o = {
        .counters_as_deltas = sc->report_counters_as_deltas,
        .histograms_as_deltas = sc->report_histograms_as_deltas,
        .tags_as_attributes = !sc->emit_tags_as_attributes || sc->emit_tags_as_attributes->value,
        .tag_extracted_name = !sc->use_tag_extracted_name || sc->use_tag_extracted_name->value,
        .prefix = sc->prefix,
        .resource_keys = rkeys,
        .resource_values = rvalues,
        .nresource = nres,
        };
        sharp_config_t *cfg = b->cfg;
        cfg->otlp_sinks[cfg->notlp_sinks++] =
            sharp_otlp_sink_create(eg->cluster_name, eg->authority, &md, duration_ms(gs->timeout, 0), &o);
    }
    for (size_t i = 0; i < sc->n_resource_detectors; i++)
        if (dets[i]) protobuf_c_message_free_unpacked(&dets[i]->base, NULL);
    free(dets);
    free(rkeys);
    free(rvalues);
    sharp_headers_free(&md);
    return rc;
}

/* envoy.stat_sinks.metrics_service (proxy/metrics_service.h): Envoy's
 * MetricsServiceSinkFactory checks (the transport version, the gRPC
 * service); the cluster is checked once the snapshot is built
 * (sharp_metrics_sink_check). */
static int metrics_service_sink(build_ctx_t *b, const ProtobufCMessage *m, const char *p)
{
    const Envoy__Config__Metrics__V3__MetricsServiceConfig *ms = (const void *)m;
    char fp[320];
    if (!ms->grpc_service) {
        snprintf(fp, sizeof fp, "%s.grpc_service", p);
        return fail(b, fp, "value is required");
    }
    if (ms->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3) {
        snprintf(fp, sizeof fp, "%s.transport_api_version", p);
        return fail(b, fp, "V2 (and AUTO) xDS transport protocol versions are deprecated in "
                    "envoy.config.metrics.v3.MetricsServiceConfig. The v2 xDS major version has been removed and is "
                    "no longer supported. You may be missing explicit V3 configuration of the transport API version, "
                    "see the advice in https://www.envoyproxy.io/docs/envoy/latest/faq/api/envoy_v3.");
    }
    if ((int)ms->histogram_emit_mode < 0 || ms->histogram_emit_mode > 2) {
        snprintf(fp, sizeof fp, "%s.histogram_emit_mode", p);
        return fail(b, fp, "value must be one of the defined enum values");
    }
    const Envoy__Config__Core__V3__GrpcService *gs = ms->grpc_service;
    const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *eg =
        sink_envoy_grpc(b, gs, p, "envoy_grpc is required (the metrics service is reached through a cluster)");
    if (!eg) return -1;
    sharp_headers_t md;
    sharp_headers_init(&md);
    sharp_grpc_initial_metadata(&md, gs);
    /* envoy_grpc.retry_policy is for xDS streams only (Envoy's docs): the
     * metrics stream is re-opened by the next flush */
    sharp_ms_options_t o = {
        .counters_as_deltas = ms->report_counters_as_deltas && ms->report_counters_as_deltas->value,
        .tags_as_labels = ms->emit_tags_as_labels,
        .histogram_mode = (sharp_ms_histogram_mode_t)ms->histogram_emit_mode,
    };
    sharp_config_t *cfg = b->cfg;
    cfg->metrics_sinks[cfg->nmetrics_sinks++] = sharp_metrics_sink_create(eg->cluster_name, eg->authority, &md, &o);
    sharp_headers_free(&md);
    return 0;
}

/* Bootstrap stats_sinks: the statsd sinks, sent at every stats flush on
 * the main thread (proxy/statsd.h). Envoy picks a sink's factory by its
 * typed_config type, so the name is not checked. The loader has already
 * refused the other sinks' types by name (config/support.table). */
static int configure_stats_sinks(build_ctx_t *b, const bootstrap_t *bs)
{
    sharp_config_t *cfg = b->cfg;
    char p[256];
    if (bs->n_stats_sinks) {
        cfg->stats_sinks = sharp_calloc(bs->n_stats_sinks, sizeof *cfg->stats_sinks);
        cfg->metrics_sinks = sharp_calloc(bs->n_stats_sinks, sizeof *cfg->metrics_sinks);
        cfg->otlp_sinks = sharp_calloc(bs->n_stats_sinks, sizeof *cfg->otlp_sinks);
    }
    for (size_t i = 0; i < bs->n_stats_sinks; i++) {
        const Envoy__Config__Metrics__V3__StatsSink *k = bs->stats_sinks[i];
        snprintf(p, sizeof p, "stats_sinks[%zu].typed_config", i);
        if (!k->typed_config || !k->typed_config->type_url)
            return fail(b, p, "stats sink '%s': typed_config is required", k->name);
        const char *slash = strrchr(k->typed_config->type_url, '/');
        const char *t = slash ? slash + 1 : k->typed_config->type_url;
        sharp_config_error_t err = {{0}};
        if (strcmp(t, OTLP_SINK_TYPE) == 0) {
            ProtobufCMessage *m = sharp_any_unpack(
                &k->typed_config->base, &envoy__extensions__stat_sinks__open_telemetry__v3__sink_config__descriptor, &err);
            if (!m) return fail(b, p, "%s", err.msg);
            int rc = otlp_stats_sink(b, m, p);
            protobuf_c_message_free_unpacked(m, NULL);
            if (rc) return rc;
            continue;
        }
        if (strcmp(t, METRICS_SERVICE_TYPE) == 0) {
            ProtobufCMessage *m = sharp_any_unpack(&k->typed_config->base,
                                                   &envoy__config__metrics__v3__metrics_service_config__descriptor, &err);
            if (!m) return fail(b, p, "%s", err.msg);
            int rc = metrics_service_sink(b, m, p);
            protobuf_c_message_free_unpacked(m, NULL);
            if (rc) return rc;
            continue;
        }
        bool dog = strcmp(t, DOG_STATSD_SINK_TYPE) == 0;
        if (!dog && strcmp(t, STATSD_SINK_TYPE) != 0)
            return fail(b, p, "stats sink '%s' (%s) is not supported by SHARP: only envoy.stat_sinks.statsd, "
                        "envoy.stat_sinks.dog_statsd, envoy.stat_sinks.metrics_service and envoy.stat_sinks.open_telemetry", k->name, t);
        ProtobufCMessage *m = sharp_any_unpack(&k->typed_config->base,
                                               dog ? &envoy__config__metrics__v3__dog_statsd_sink__descriptor
                                                   : &envoy__config__metrics__v3__statsd_sink__descriptor,
                                               &err);
        if (!m) return fail(b, p, "%s", err.msg);
        struct sockaddr_storage ss;
        socklen_t len = 0;
        const char *prefix;
        uint64_t max_bytes = 0;
        int rc = 0;
        char ap[300];
        snprintf(ap, sizeof ap, "%s.address", p);
        if (dog) {
            const Envoy__Config__Metrics__V3__DogStatsdSink *d = (const void *)m;
            prefix = d->prefix;
            if (d->max_bytes_per_datagram) {
                max_bytes = d->max_bytes_per_datagram->value;
                if (max_bytes == 0) rc = fail(b, p, "max_bytes_per_datagram: value must be greater than 0");
            }
            if (!rc) rc = statsd_address(b, d->address, ap, &ss, &len);
        } else {
            const Envoy__Config__Metrics__V3__StatsdSink *sd = (const void *)m;
            prefix = sd->prefix;
            if (sd->statsd_specifier_case == ENVOY__CONFIG__METRICS__V3__STATSD_SINK__STATSD_SPECIFIER_TCP_CLUSTER_NAME) {
                /* the cluster and the node are checked once the bootstrap is built (server.c) */
                cfg->stats_sinks[cfg->nstats_sinks++] = sharp_statsd_sink_create_tcp(sd->tcp_cluster_name, prefix);
                protobuf_c_message_free_unpacked(m, NULL);
                continue;
            } else if (sd->statsd_specifier_case != ENVOY__CONFIG__METRICS__V3__STATSD_SINK__STATSD_SPECIFIER_ADDRESS)
                rc = fail(b, p, "one of address and tcp_cluster_name is required");
            else
                rc = statsd_address(b, sd->address, ap, &ss, &len);
        }
        if (!rc)
            cfg->stats_sinks[cfg->nstats_sinks++] =
                sharp_statsd_sink_create((struct sockaddr *)&ss, len, prefix, dog, (size_t)max_bytes);
        protobuf_c_message_free_unpacked(m, NULL);
        if (rc) return rc;
    }
    /* Envoy: stats_flush_on_admin (const true) flushes on the admin's stats
     * endpoints instead of a timer, and excludes stats_flush_interval. */
    if (bs->stats_flush_case == ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__STATS_FLUSH_STATS_FLUSH_ON_ADMIN) {
        if (!bs->stats_flush_on_admin) return fail(b, "stats_flush_on_admin", "value must equal true");
        if (bs->stats_flush_interval)
            return fail(b, "stats_flush_interval", "Only one of stats_flush_interval or stats_flush_on_admin should be set!");
        cfg->stats_flush_on_admin = true;
    }
    cfg->enable_dispatcher_stats = bs->enable_dispatcher_stats;
    cfg->stats_flush_interval_ms = 5000;
    if (bs->stats_flush_interval)
        cfg->stats_flush_interval_ms = (uint64_t)bs->stats_flush_interval->seconds * 1000 +
                                       (uint64_t)bs->stats_flush_interval->nanos / 1000000;
    if (!cfg->stats_flush_interval_ms) cfg->stats_flush_interval_ms = 1;
    return 0;
}

/* Envoy's InitialImpl::initAdminAccessLog: every admin.access_log entry, then
 * a file logger with the default format for the deprecated access_log_path
 * (both may be given). As in Envoy the files are opened whether or not the
 * admin has an address; --mode validate only checks them. */
static int build_admin_access_logs(build_ctx_t *b, const Envoy__Config__Bootstrap__V3__Admin *a,
                                   sharp_snapshot_t *s)
{
    size_t n = a->n_access_log + (a->access_log_path && a->access_log_path[0] ? 1 : 0);
    if (!n) return 0;
    s->admin_access_logs = sharp_calloc(n, sizeof *s->admin_access_logs);
    bool open_file = !b->srv->opts.validate_only;
    char p[64], aerr[512] = "";
    for (size_t i = 0; i < a->n_access_log; i++) {
        snprintf(p, sizeof p, "admin.access_log[%zu]", i);
        sharp_access_log_t *al = sharp_access_log_create(&a->access_log[i]->base, false, open_file, aerr,
                                                          sizeof aerr);
        if (!al) return fail(b, p, "%s", aerr);
        s->admin_access_logs[s->nadmin_access_logs++] = al;
    }
    if (a->access_log_path && a->access_log_path[0]) {
        sharp_access_log_t *al = sharp_access_log_create_path(a->access_log_path, open_file, aerr, sizeof aerr);
        if (!al) return fail(b, "admin.access_log_path", "%s", aerr);
        s->admin_access_logs[s->nadmin_access_logs++] = al;
    }
    return 0;
}

/* ---- cluster_manager ---- */

/* cluster_manager.outlier_detection.event_log_path: opened once for every
 * cluster's detector (--mode validate only checks it can be). */
static int configure_cluster_manager(build_ctx_t *b, const bootstrap_t *bs, sharp_snapshot_t *s)
{
    const Envoy__Config__Bootstrap__V3__ClusterManager *cm = bs->cluster_manager;
    if (!cm || !cm->outlier_detection || !cm->outlier_detection->event_log_path ||
        !cm->outlier_detection->event_log_path[0])
        return 0;
    const char *path = cm->outlier_detection->event_log_path;
    char aerr[512];
    if (b->srv->opts.validate_only) {
        if (sharp_access_log_file_check(path, aerr, sizeof aerr) < 0)
            return fail(b, "cluster_manager.outlier_detection.event_log_path", "%s", aerr);
        return 0;
    }
    s->outlier_event_log = sharp_access_log_file_open(path, aerr, sizeof aerr);
    if (!s->outlier_event_log) return fail(b, "cluster_manager.outlier_detection.event_log_path", "%s", aerr);
    return 0;
}

/* ---- the process's own log format (application_log_config) ---- */

/* Envoy: a text_format is --log-format's pattern; a json_format is a Struct
 * whose values are patterns, printed as compact JSON and then used as the
 * pattern (so "%j" gives the message escaped for a JSON string; "%v" and
 * "%_" would break the JSON and are refused). Either conflicts with
 * --log-format. Set here, before any worker starts. */
static int configure_application_log(build_ctx_t *b, const bootstrap_t *bs)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap__ApplicationLogConfig *alc = bs->application_log_config;
    if (!alc || !alc->log_format) return 0;
    const char *path = "application_log_config.log_format";
    if (b->srv->opts.log_format)
        return fail(b, path, "Only one of ApplicationLogConfig.log_format or CLI option --log-format can be "
                    "specified.");
    const Envoy__Config__Bootstrap__V3__Bootstrap__ApplicationLogConfig__LogFormat *lf = alc->log_format;
    sharp_sbuf_t fmt = {0};
    switch (lf->log_format_case) {
    case ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__APPLICATION_LOG_CONFIG__LOG_FORMAT__LOG_FORMAT_TEXT_FORMAT:
        sharp_sbuf_puts(&fmt, lf->text_format);
        path = "application_log_config.log_format.text_format";
        break;
    case ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__APPLICATION_LOG_CONFIG__LOG_FORMAT__LOG_FORMAT_JSON_FORMAT:
        sharp_config_to_json(&lf->json_format->base, &fmt);
        path = "application_log_config.log_format.json_format";
        break;
    default:
        return 0; /* log_format: {} sets nothing, as in Envoy */
    }
    sharp_sbuf_append(&fmt, "", 1);
    bool json = lf->log_format_case ==
                ENVOY__CONFIG__BOOTSTRAP__V3__BOOTSTRAP__APPLICATION_LOG_CONFIG__LOG_FORMAT__LOG_FORMAT_JSON_FORMAT;
    for (const char *bad = "v_"; *bad && json; bad++) {
        char flag[3] = {'%', *bad, 0};
        if (strstr(fmt.data, flag)) {
            sharp_sbuf_free(&fmt);
            return fail(b, path, "setJsonLogFormat error: INVALID_ARGUMENT: Usage of %s is unavailable for JSON "
                        "log formats", flag);
        }
    }
    char perr[256];
    sharp_log_pattern_t *pat = sharp_log_pattern_compile(fmt.data, perr, sizeof perr);
    sharp_sbuf_free(&fmt);
    if (!pat) {
        const char *m = perr;
        if (strncmp(m, "--log-format: ", 14) == 0) m += 14; /* the pattern's origin is the path */
        return fail(b, path, "%s", m);
    }
    sharp_log_set_pattern(pat);
    return 0;
}

/* A cluster of snapshot s, or one CDS is warming (Envoy's ClusterInfoMaps
 * hasCluster: active or warming). */
static bool cluster_known(const build_ctx_t *b, const sharp_snapshot_t *s, const char *name)
{
    return sharp_snapshot_cluster(s, name) || (b->srv && sharp_xds_cluster_warming(b->srv->xds, name));
}

/* Every cluster a listener's inline routes name exists in snapshot s, or
 * is warming (Envoy's validate_clusters, true for inline route
 * configurations): the route's cluster or weighted clusters and every
 * mirror policy that applies to it (its own or inherited, redirects
 * included); a cluster_header is resolved per request. */
static int check_route_clusters(build_ctx_t *b, const sharp_listener_config_t *l, const sharp_snapshot_t *s,
                                const char *p)
{
    /* the UDP proxy has no aggregate clusters: its sessions are bound to
     * one cluster's host (a CDS aggregate fails per datagram, udp_proxy.h) */
    for (uint32_t i = 0; l->udp && i < l->udp->nroutes; i++) {
        const sharp_udp_route_t *r = l->udp->routes[i];
        const sharp_cluster_t *c = sharp_snapshot_cluster(s, r->cluster);
        if (c && c->aggregate)
            return fail(b, r->path, "cluster '%s' is an aggregate cluster (envoy.clusters.aggregate), which is not "
                                    "supported by SHARP's UDP proxy", r->cluster);
    }
    for (uint32_t i = 0; l->udp && i < l->udp->nroutes; i++) {
        const sharp_udp_route_t *r = l->udp->routes[i];
        const sharp_cluster_t *c = sharp_snapshot_cluster(s, r->cluster);
        if (c && c->odst && c->odst->dfp)
            return fail(b, r->path, "cluster '%s' is a dynamic forward proxy cluster (envoy.clusters."
                                    "dynamic_forward_proxy), whose hosts come from HTTP requests: not supported by "
                                    "SHARP's UDP proxy", r->cluster);
    }
    for (uint32_t fc = 0; fc < l->nchains + l->has_default_chain; fc++) {
        sharp_route_table_t *rt = l->chains[fc]->hcm->routes;
        char cp[64];
        if (fc < l->nchains) snprintf(cp, sizeof cp, "filter_chains[%u]", fc);
        else snprintf(cp, sizeof cp, "default_filter_chain");
        /* a dynamic forward proxy cluster's host is a request's authority:
         * the TCP proxy has one only from the SNI dynamic forward proxy
         * network filter (or filter state), which SHARP does not have */
        const sharp_tcp_proxy_config_t *tcpp = l->chains[fc]->hcm->tcp_proxy;
        for (uint32_t i = 0; tcpp && i < tcpp->nclusters; i++) {
            const sharp_cluster_t *c = sharp_snapshot_cluster(s, tcpp->clusters[i].name);
            if (c && c->odst && c->odst->dfp) {
                char tpp[320];
                snprintf(tpp, sizeof tpp, "%s.%s.filters[0].typed_config", p, cp);
                return fail(b, tpp, "cluster '%s' is a dynamic forward proxy cluster (envoy.clusters."
                                    "dynamic_forward_proxy): the TCP proxy takes its host from the SNI dynamic "
                                    "forward proxy filter, which SHARP does not support", tcpp->clusters[i].name);
            }
        }
        const sharp_tracing_config_t *tc = l->chains[fc]->hcm->tracing;
        if (tc && tc->zipkin && !cluster_known(b, s, tc->zipkin->cluster)) {
            char tp[320];
            snprintf(tp, sizeof tp, "%s.%s.filters[0].typed_config.tracing", p, cp);
            return fail(b, tp, "envoy.tracers.zipkin: unknown cluster '%s'", tc->zipkin->cluster);
        }
        if (tc && tc->datadog && !cluster_known(b, s, tc->datadog->cluster)) {
            /* Envoy's Config::Utility::checkCluster */
            char tp[320];
            snprintf(tp, sizeof tp, "%s.%s.filters[0].typed_config.tracing", p, cp);
            return fail(b, tp, "envoy.tracers.datadog: unknown cluster '%s'", tc->datadog->cluster);
        }
        if (tc && tc->otel && tc->otel->grpc && !cluster_known(b, s, tc->otel->cluster)) {
            /* Envoy's gRPC client factory checks its cluster */
            char tp[320];
            snprintf(tp, sizeof tp, "%s.%s.filters[0].typed_config.tracing", p, cp);
            return fail(b, tp, "envoy.tracers.opentelemetry: Unknown gRPC client cluster '%s'", tc->otel->cluster);
        }
        for (uint32_t v = 0; rt && v < rt->nvhosts; v++)
            for (uint32_t r = 0; r < rt->vhosts[v].nroutes; r++) {
                const sharp_route_t *ro = &rt->vhosts[v].routes[r];
                char rp[320];
                snprintf(rp, sizeof rp, "%s.%s.filters[0].typed_config.route_config.virtual_hosts[%u].routes[%u].route",
                         p, cp, v, r);
                for (uint32_t m = 0; ro->mirror && m < ro->mirror->n; m++)
                    if (ro->mirror->p[m].cluster && !cluster_known(b, s, ro->mirror->p[m].cluster))
                        return fail(b, rp, "unknown shadow cluster '%s'", ro->mirror->p[m].cluster);
                if (ro->action != SHARP_ROUTE_ACTION_ROUTE) continue;
                if (ro->cluster && !cluster_known(b, s, ro->cluster))
                    return fail(b, rp, "unknown cluster '%s'", ro->cluster);
                for (uint32_t w = 0; w < ro->nweighted; w++)
                    if (!cluster_known(b, s, ro->weighted[w].name))
                        return fail(b, rp, "weighted_clusters: unknown cluster '%s'", ro->weighted[w].name);
            }
    }
    return 0;
}

sharp_listener_config_t *sharp_config_build_listener(sharp_server_t *srv, const ProtobufCMessage *pb,
                                                     const char *source, const char *where, char *err, size_t errlen)
{
    sharp_config_t cfg = {.merged = true};
    snprintf(cfg.source, sizeof cfg.source, "%s", source);
    build_ctx_t b = {.cfg = &cfg, .srv = srv, .err = err, .errlen = errlen, .random = sharp_now_ns() | 1,
                     .dynamic = true};
    dynamic_secrets_begin(&b, srv);
    sharp_listener_config_t *l = sharp_calloc(1, sizeof *l);
    atomic_init(&l->refs, 1);
    int rc = build_listener(&b, (const Envoy__Config__Listener__V3__Listener *)pb, l, where);
    if (rc == 0 && l->addr.ss_family == AF_UNIX && srv->config && srv->config->has_admin &&
        strcmp(l->address, srv->config->admin_address) == 0) {
        char np[160];
        snprintf(np, sizeof np, "%s.address", where);
        rc = fail(&b, np, "listener '%s' is on the admin's Unix socket path '%s'", l->name, l->address);
    }
    /* the clusters of the current configuration: static and CDS's */
    if (rc == 0 && srv->snap) rc = check_route_clusters(&b, l, srv->snap, where);
    dynamic_secrets_end();
    if (rc < 0) {
        sharp_listener_unref(l);
        return NULL;
    }
    return l;
}

sharp_snapshot_t *sharp_config_build_snapshot(sharp_config_t *cfg, sharp_server_t *srv, char *err, size_t errlen)
{
    const bootstrap_t *bs = (const bootstrap_t *)cfg->bootstrap;
    build_ctx_t b = {.cfg = cfg, .srv = srv, .err = err, .errlen = errlen,
                     .random = sharp_now_ns() | 1, .bootstrap = bs};
    sharp_snapshot_t *s = sharp_calloc(1, sizeof *s);
    s->refs = 1;
    s->sds = b.sds = sharp_sds_new(srv->stats);
    if (srv->xds) sharp_sds_use_xds(s->sds, srv->xds);
    s->version = 1;
    if (bs->node) {
        snprintf(srv->node_id, sizeof srv->node_id, "%s", bs->node->id);
        snprintf(srv->node_cluster, sizeof srv->node_cluster, "%s", bs->node->cluster);
    }
    if (!srv->node_id[0] && srv->opts.service_node) snprintf(srv->node_id, sizeof srv->node_id, "%s", srv->opts.service_node);
    if (!srv->node_cluster[0] && srv->opts.service_cluster)
        snprintf(srv->node_cluster, sizeof srv->node_cluster, "%s", srv->opts.service_cluster);
    if (configure_runtime_and_regex(&b, bs) < 0) goto bad;
    if (configure_bootstrap_extensions(&b, bs) < 0) goto bad;
    /* stats_config before the first stat is registered (Envoy sets the tag
     * producer and stats matcher right after loading the bootstrap) */
    char spath[160], smsg[1024];
    bool deferred = bs->deferred_stat_options && bs->deferred_stat_options->enable_deferred_creation_stats;
    if (sharp_config_stats(bs->stats_config, deferred, srv->stats, spath, sizeof spath, smsg, sizeof smsg) < 0) {
        fail(&b, spath, "%s", smsg);
        goto bad;
    }
    if (srv->stats) {
        sharp_runtime_stats_init(srv->runtime, srv->stats);
        sharp_runtime_load(srv->runtime); /* counts this load and sets the gauges */
    }
    if (configure_application_log(&b, bs) < 0) goto bad;
    if (configure_stats_sinks(&b, bs) < 0) goto bad;
    if (bs->admin && bs->admin->address) {
        if (socket_address(&b, bs->admin->address, "admin.address", &cfg->admin_addr, &cfg->admin_addrlen,
                           &cfg->admin_pipe_mode, NULL) < 0)
            goto bad;
        sharp_addr_str((struct sockaddr *)&cfg->admin_addr, cfg->admin_address, sizeof cfg->admin_address);
        cfg->has_admin = true;
    }
    if (bs->admin && build_admin_access_logs(&b, bs->admin, s) < 0) goto bad;
    if (bs->admin && bs->admin->n_allow_paths) {
        cfg->admin_allow = sharp_calloc(bs->admin->n_allow_paths, sizeof *cfg->admin_allow);
        for (size_t i = 0; i < bs->admin->n_allow_paths; i++) {
            char p[64], merr[1024];
            snprintf(p, sizeof p, "admin.allow_paths[%zu]", i);
            if (sharp_config_string_matcher(bs->admin->allow_paths[i], p, &cfg->admin_allow[i], merr,
                                            sizeof merr) <
                0) {
                /* err is "path[.field]: message" */
                char *sep = strstr(merr, ": ");
                if (sep) *sep = '\0';
                fail(&b, merr, "%s", sep ? sep + 2 : "invalid string matcher");
                goto bad;
            }
            cfg->nadmin_allow++;
        }
    }
    if (configure_cluster_manager(&b, bs, s) < 0) goto bad;
    if (check_bootstrap_dns(&b, bs) < 0) goto bad;
    bool ol_failed;
    s->overload = sharp_config_overload(bs->overload_manager, srv->stats, &ol_failed, spath, sizeof spath, smsg,
                                        sizeof smsg);
    if (ol_failed) {
        fail(&b, spath, "%s", smsg);
        goto bad;
    }
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    size_t ncl = sr ? sr->n_clusters : 0, nli = sr ? sr->n_listeners : 0;
    /* static secrets: named, of a supported kind, one name per kind (Envoy's
     * SecretManager errors) */
    for (size_t i = 0; sr && i < sr->n_secrets; i++) {
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *sec = sr->secrets[i];
        char p[160];
        snprintf(p, sizeof p, "static_resources.secrets[%zu]", i);
        if (sec->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE__NOT_SET) {
            fail(&b, p, "Secret type not implemented");
            goto bad;
        }
        for (size_t k = 0; k < i; k++)
            if (!strcmp(sr->secrets[k]->name, sec->name) && sr->secrets[k]->type_case == sec->type_case) {
                fail(&b, p, "Duplicate static secret name %s", sec->name);
                goto bad;
            }
    }
    sharp_tls_config_use_secrets(sr ? sr->secrets : NULL, sr ? sr->n_secrets : 0);
    sharp_tls_config_use_sds(sharp_sds_resolve, s->sds);
    sharp_sds_use_static_secrets(s->sds, sr ? sr->secrets : NULL, sr ? sr->n_secrets : 0);
    s->clusters = sharp_calloc(ncl ? ncl : 1, sizeof *s->clusters);
    for (size_t i = 0; i < ncl; i++) {
        char p[128];
        snprintf(p, sizeof p, "static_resources.clusters[%zu]", i);
        for (size_t k = 0; k < i; k++)
            if (sr->clusters[i]->name[0] && strcmp(sr->clusters[k]->name, sr->clusters[i]->name) == 0) {
                char np[160];
                snprintf(np, sizeof np, "%s.name", p);
                fail(&b, np, "cluster manager: duplicate cluster '%s' (static_resources.clusters[%zu] has it too)",
                     sr->clusters[i]->name, k);
                goto bad;
            }
        sharp_cluster_t *c = build_cluster(&b, sr->clusters[i], (uint32_t)i, p);
        if (!c) goto bad;
        s->clusters[s->nclusters++] = c;
        if (c->outlier) c->outlier->event_log = s->outlier_event_log;
    }
    sharp_snapshot_index_clusters(s);
    /* an aggregate's static members: one that could never give it a
     * level is refused rather than skipped (a nested aggregate, which also
     * makes loops impossible) */
    for (uint32_t i = 0; i < s->nclusters; i++) {
        const sharp_aggregate_t *a = s->clusters[i]->aggregate;
        for (uint32_t k = 0; a && k < a->n; k++) {
            const sharp_cluster_t *m = sharp_snapshot_cluster(s, a->members[k]);
            const char *why = !m                ? NULL
                              : m->aggregate    ? "is an aggregate cluster itself (aggregates do not nest)"
                              : m->odst && m->odst->dfp ? "is a dynamic forward proxy cluster, whose hosts are "
                                                          "made per request"
                              : m->odst         ? "is an ORIGINAL_DST cluster, whose hosts are made per request"
                              : m->shuffle_shard ? "balances by customer shards, whose key the aggregate's routes "
                                                   "do not compute"
                                                 : NULL;
            if (!why) continue;
            char p[200];
            snprintf(p, sizeof p, "static_resources.clusters[%u].cluster_type.typed_config.clusters[%u]", i, k);
            fail(&b, p, "member cluster '%s' %s", a->members[k], why);
            goto bad;
        }
    }
    /* Envoy's ClusterManagerImpl: the local cluster is a static one */
    if (bs->cluster_manager && bs->cluster_manager->local_cluster_name[0] &&
        !sharp_snapshot_cluster(s, bs->cluster_manager->local_cluster_name)) {
        fail(&b, "cluster_manager.local_cluster_name", "local cluster '%s' must be defined",
             bs->cluster_manager->local_cluster_name);
        goto bad;
    }
    /* the scaled clusters exist, as a route's must: static ones now, CDS
     * ones (when there is CDS) are looked up at each sync */
    for (size_t i = 0; cfg->scaling && i < cfg->scaling->n; i++) {
        const char *cn = cfg->scaling->clusters[i].cluster;
        bool cds = bs->dynamic_resources && bs->dynamic_resources->cds_config;
        if (!cds && !sharp_snapshot_cluster(s, cn)) {
            char p[160];
            size_t k;
            for (k = 0; k < bs->n_bootstrap_extensions; k++) {
                const char *u = bs->bootstrap_extensions[k]->typed_config->type_url;
                const char *sl = strrchr(u, '/');
                if (strcmp(sl ? sl + 1 : u, SHARP_SCALING_TYPE) == 0) break;
            }
            snprintf(p, sizeof p, "bootstrap_extensions[%zu].typed_config.clusters[%zu].cluster_name", k, i);
            fail(&b, p, "scaling agent: unknown cluster '%s' (not in static_resources.clusters, and the bootstrap "
                 "has no CDS)", cn);
            goto bad;
        }
    }
    s->listeners = sharp_calloc(nli ? nli : 1, sizeof *s->listeners);
    for (size_t i = 0; i < nli; i++) {
        char p[128];
        snprintf(p, sizeof p, "static_resources.listeners[%zu]", i);
        sharp_listener_config_t *l = sharp_calloc(1, sizeof *l);
        atomic_init(&l->refs, 1);
        s->listeners[s->nlisteners++] = l;
        if (build_listener(&b, sr->listeners[i], l, p) < 0) goto bad;
        if (l->addr.ss_family == AF_UNIX && cfg->has_admin && strcmp(l->address, cfg->admin_address) == 0) {
            /* binding would unlink the admin's socket file (Envoy orphans
             * its admin that way): refused instead */
            char np[160];
            snprintf(np, sizeof np, "%s.address", p);
            fail(&b, np, "listener '%s' is on the admin's Unix socket path '%s'", l->name, l->address);
            goto bad;
        }
        for (size_t k = 0; k + 1 < s->nlisteners; k++) {
            const sharp_listener_config_t *o = s->listeners[k];
            char np[160];
            /* Envoy's ListenerImpl::hasDuplicatedAddress: the same address,
             * port (port 0 aside) and protocol; a wildcard and a specific
             * address may share a port, as both sockets use SO_REUSEPORT.
             * Pipes compare by path. */
            if (strcmp(o->address, l->address) == 0 && (o->udp != NULL) == (l->udp != NULL) &&
                (sockaddr_port(&l->addr) != 0 || l->addr.ss_family == AF_UNIX)) {
                snprintf(np, sizeof np, "%s.address", p);
                fail(&b, np, "error adding listener: '%s' has duplicate address '%s' as existing listener "
                     "(static_resources.listeners[%zu] '%s')", l->name, l->address, k, o->name);
                goto bad;
            }
            if (strcmp(o->name, l->name) == 0) {
                /* Envoy keeps the first static listener of a name and skips
                 * the rest with only a debug log; SHARP refuses rather than
                 * ignore a listener */
                snprintf(np, sizeof np, "%s.name", p);
                fail(&b, np, "duplicate listener name '%s' (static_resources.listeners[%zu] has it too; "
                     "Envoy would silently ignore this listener)", l->name, k);
                goto bad;
            }
        }
        /* every route's cluster must exist, as Envoy checks for static clusters */
        if (check_route_clusters(&b, l, s, p) < 0) goto bad;
    }
    sharp_tls_config_use_secrets(NULL, 0);
    sharp_tls_config_use_sds(NULL, NULL);
    /* warnings only for a config that loads, so they never precede its error */
    if (!cfg->has_admin) sharp_log_warn("No admin address given, so no admin HTTP server started.");
    if (!bs->dynamic_resources && !nli && !ncl)
        sharp_log_warn("%s: the bootstrap configures no listeners, no clusters and no dynamic_resources: "
                       "nothing will be served%s", cfg->source, cfg->has_admin ? " but the admin interface" : "");
    return s;
bad:
    sharp_tls_config_use_secrets(NULL, 0);
    sharp_tls_config_use_sds(NULL, NULL);
    sharp_snapshot_unref(s);
    return NULL;
}
