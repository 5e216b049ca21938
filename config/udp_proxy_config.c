/* udp_proxy_config.c: see udp_proxy_config.h. Envoy's checks: a UDP
 * listener needs a UDP listener filter ("no read filter registered"), the
 * UDP proxy a stat_prefix and a route (cluster or matcher). */
#include "config/udp_proxy_config.h"
#include "config/mapper.h"
#include "matcher.h"
#include "udp/udp_proxy.h"

#include "envoy/extensions/filters/udp/udp_proxy/v3/route.pb-c.h"
#include "envoy/extensions/filters/udp/udp_proxy/v3/udp_proxy.pb-c.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define UDP_PROXY_TYPE "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig"
#define ROUTE_TYPE "envoy.extensions.filters.udp.udp_proxy.v3.Route"
/* Envoy's default max_rx_datagram_size */
#define DEFAULT_MAX_RX 1500

typedef Envoy__Extensions__Filters__Udp__UdpProxy__V3__UdpProxyConfig udp_proxy_pb_t;

typedef struct {
    char *epath, *emsg;
    size_t epathlen, emsglen;
} err_t;

static int fail(err_t *e, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(err_t *e, const char *path, const char *fmt, ...)
{
    snprintf(e->epath, e->epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->emsg, e->emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static uint32_t max_rx(const Envoy__Config__Core__V3__UdpSocketConfig *c)
{
    return c && c->max_rx_datagram_size ? (uint32_t)c->max_rx_datagram_size->value : DEFAULT_MAX_RX;
}

static void *make_route(const char *name, const char *type_url, const ProtobufCMessage *msg, void *arg,
                        const char *path, char *err, size_t errlen)
{
    (void)name;
    sharp_udp_proxy_config_t *c = arg;
    const char *t = strrchr(type_url, '/');
    t = t ? t + 1 : type_url;
    if (strcmp(t, ROUTE_TYPE) != 0) {
        snprintf(err, errlen, "%s: the UDP proxy's matcher actions are %s, not %s", path, ROUTE_TYPE, t);
        return NULL;
    }
    const Envoy__Extensions__Filters__Udp__UdpProxy__V3__Route *r = (const void *)msg;
    if (!r->cluster[0]) {
        snprintf(err, errlen, "%s.cluster: value length must be at least 1 characters", path);
        return NULL;
    }
    sharp_udp_route_t *route = sharp_calloc(1, sizeof *route);
    route->cluster = sharp_strdup(r->cluster);
    char p[1024];
    snprintf(p, sizeof p, "%s.cluster", path);
    route->path = sharp_strdup(p);
    c->routes = sharp_realloc(c->routes, (c->nroutes + 1) * sizeof *c->routes);
    c->routes[c->nroutes++] = route;
    return route;
}

static void free_route(void *a)
{
    sharp_udp_route_t *r = a;
    free(r->cluster);
    free(r->path);
    free(r);
}

static bool wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    return ss->ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static int build_proxy(err_t *e, sharp_udp_proxy_config_t *c, const udp_proxy_pb_t *pb, const char *path,
                       const sharp_listener_config_t *l)
{
    char p[1024];
    if (!pb->stat_prefix[0]) {
        snprintf(p, sizeof p, "%s.stat_prefix", path);
        return fail(e, p, "value length must be at least 1 characters");
    }
    c->stat_prefix = sharp_strdup(pb->stat_prefix);
    switch (pb->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__UDP__UDP_PROXY__V3__UDP_PROXY_CONFIG__ROUTE_SPECIFIER_CLUSTER:
        if (!pb->cluster[0]) {
            snprintf(p, sizeof p, "%s.cluster", path);
            return fail(e, p, "value length must be at least 1 characters");
        }
        c->route.cluster = sharp_strdup(pb->cluster);
        snprintf(p, sizeof p, "%s.cluster", path);
        c->route.path = sharp_strdup(p);
        c->routes = sharp_calloc(1, sizeof *c->routes);
        c->routes[c->nroutes++] = &c->route;
        break;
    case ENVOY__EXTENSIONS__FILTERS__UDP__UDP_PROXY__V3__UDP_PROXY_CONFIG__ROUTE_SPECIFIER_MATCHER: {
        char err[1024], epath[1024];
        snprintf(p, sizeof p, "%s.matcher", path);
        uint32_t flags = SHARP_MATCH_NET_UDP | (wildcard(&l->addr) ? SHARP_MATCH_NET_NO_LOCAL_IP : 0);
        c->matcher = sharp_matcher_build_network(pb->matcher, p, make_route, free_route, c, flags, epath,
                                                 sizeof epath, err, sizeof err);
        if (!c->matcher) return fail(e, epath, "%s", err);
        break;
    }
    default:
        return fail(e, path, "one of cluster and matcher (route_specifier) is required");
    }
    /* Envoy's PROTOBUF_GET_MS_OR_DEFAULT(config, idle_timeout, 60 * 1000) */
    c->idle_timeout_ms = 60000;
    if (pb->idle_timeout) {
        char err[256];
        if (sharp_duration_ms(pb->idle_timeout, &c->idle_timeout_ms, err, sizeof err) < 0) {
            snprintf(p, sizeof p, "%s.idle_timeout", path);
            return fail(e, p, "%s", err);
        }
    }
    c->per_packet_lb = pb->use_per_packet_load_balancing;
    c->upstream_max_rx = max_rx(pb->upstream_socket_config);
    return 0;
}

int sharp_config_udp_listener(sharp_listener_config_t *l, const Envoy__Config__Listener__V3__Listener *pb,
                              const char *path, sharp_stats_t *stats, char *epath, size_t epathlen, char *emsg,
                              size_t emsglen)
{
    err_t e = {epath, emsg, epathlen, emsglen};
    char p[1024];
    if (pb->n_filter_chains || pb->default_filter_chain || pb->filter_chain_matcher) {
        snprintf(p, sizeof p, "%s.%s", path,
                 pb->n_filter_chains         ? "filter_chains"
                 : pb->default_filter_chain ? "default_filter_chain"
                                            : "filter_chain_matcher");
        return fail(&e, p,
                    "a UDP listener has no filter chains: its listener filter "
                    "(envoy.filters.udp_listener.udp_proxy) takes its datagrams (QUIC listeners, which have "
                    "them, are not implemented)");
    }
    if (pb->use_original_dst && pb->use_original_dst->value) {
        snprintf(p, sizeof p, "%s.use_original_dst", path);
        return fail(&e, p, "use_original_dst is for TCP listeners");
    }
    if (pb->n_listener_filters == 0)
        return fail(&e, path, "error adding listener '%s': Cannot create listener as no read filter registered for "
                    "the udp listener", l->address);
    if (pb->n_listener_filters > 1) {
        snprintf(p, sizeof p, "%s.listener_filters[1]", path);
        return fail(&e, p, "SHARP runs one UDP listener filter per listener (envoy.filters.udp_listener.udp_proxy)");
    }
    const Envoy__Config__Listener__V3__ListenerFilter *f = pb->listener_filters[0];
    snprintf(p, sizeof p, "%s.listener_filters[0]", path);
    if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG)
        return fail(&e, p, "typed_config (an %s) is required", UDP_PROXY_TYPE);
    const char *slash = strrchr(f->typed_config->type_url, '/');
    const char *t = slash ? slash + 1 : f->typed_config->type_url;
    snprintf(p, sizeof p, "%s.listener_filters[0].typed_config", path);
    if (strcmp(t, UDP_PROXY_TYPE) != 0)
        return fail(&e, p, "listener filter %s on a UDP listener: SHARP's UDP listeners take only the UDP proxy "
                    "(envoy.filters.udp_listener.udp_proxy)", t);
    sharp_config_error_t ue = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(
        &f->typed_config->base, &envoy__extensions__filters__udp__udp_proxy__v3__udp_proxy_config__descriptor, &ue);
    if (!m) return fail(&e, p, "%s", ue.msg);
    sharp_udp_proxy_config_t *c = sharp_calloc(1, sizeof *c);
    l->udp = c;
    int rc = build_proxy(&e, c, (const udp_proxy_pb_t *)m, p, l);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc < 0) return -1;
    c->downstream_max_rx = pb->udp_listener_config ? max_rx(pb->udp_listener_config->downstream_socket_config)
                                                   : DEFAULT_MAX_RX;
#define S(f, n) c->st.f = sharp_stats_counterf(stats, "udp.%s." n, c->stat_prefix)
    S(no_route, "downstream_sess_no_route");
    S(rx_bytes, "downstream_sess_rx_bytes");
    S(rx_datagrams, "downstream_sess_rx_datagrams");
    S(rx_errors, "downstream_sess_rx_errors");
    S(total, "downstream_sess_total");
    S(tx_bytes, "downstream_sess_tx_bytes");
    S(tx_datagrams, "downstream_sess_tx_datagrams");
    S(tx_errors, "downstream_sess_tx_errors");
    S(idle_timeout, "idle_timeout");
#undef S
    c->st.active = sharp_stats_gaugef(stats, "udp.%s.downstream_sess_active", c->stat_prefix);
    c->rx_datagram_dropped =
        sharp_stats_counterf(stats, "listener.%s.udp.downstream_rx_datagram_dropped", l->stat_name);
    return 0;
}
