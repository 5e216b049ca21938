/* api_source.c: see api_source.h. */
#include "api_source.h"
#include "common.h"
#include "grpc/client.h"
#include "server.h"
#include "upstream/cluster.h"
#include "upstream/host.h"
#include "snapshot.h"

#include "envoy/config/core/v3/grpc_service.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sharp_grpc_api_source_target(const Envoy__Config__Core__V3__ApiConfigSource *a, const char *field,
                                 const struct sharp_snapshot *snap, sharp_grpc_target_t *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3) {
        snprintf(err, errlen,
                 "%s.transport_api_version: V2 (and AUTO) xDS transport protocol versions are deprecated in "
                 "envoy.config.core.v3.ApiConfigSource. The v2 xDS major version has been removed and is no longer "
                 "supported. You may be missing explicit V3 configuration of the transport API version, see the "
                 "advice in https://www.envoyproxy.io/docs/envoy/latest/faq/api/envoy_v3.",
                 field);
        return -1;
    }
    bool grpc = a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC ||
                a->api_type == ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC;
    if (a->n_grpc_services == 0 && a->n_cluster_names == 0) {
        snprintf(err, errlen, "%s: API configs must have either a gRPC service or a cluster name defined", field);
        return -1;
    }
    if (!grpc) {
        if (a->n_grpc_services)
            snprintf(err, errlen,
                     "%s: envoy.config.core.v3.ApiConfigSource, if not a gRPC type, must not have a gRPC service "
                     "specified",
                     field);
        else
            snprintf(err, errlen, "%s: envoy.config.core.v3.ApiConfigSource type must be gRPC", field);
        return -1;
    }
    if (a->n_grpc_services > 1) {
        snprintf(err, errlen,
                 "%s.grpc_services: envoy.config.core.v3.ApiConfigSource::(DELTA_)GRPC must have a single gRPC "
                 "service specified",
                 field);
        return -1;
    }
    const Envoy__Config__Core__V3__GrpcService *gs = a->grpc_services[0];
    if (gs->target_specifier_case != ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !gs->envoy_grpc) {
        snprintf(err, errlen, "%s.grpc_services[0]: envoy_grpc is required", field);
        return -1;
    }
    const char *cname = gs->envoy_grpc->cluster_name ? gs->envoy_grpc->cluster_name : "";
    const sharp_cluster_t *c = sharp_snapshot_cluster(snap, cname);
    if (!c || c->type == SHARP_CLUSTER_EDS || c->aggregate) {
        /* an aggregate cluster is initialized after the primary ones, and
         * Envoy's check takes primary clusters only */
        snprintf(err, errlen,
                 "%s.grpc_services[0].envoy_grpc.cluster_name: envoy.config.core.v3.ApiConfigSource must have a "
                 "statically defined non-EDS cluster: '%s' does not exist, was added via api, or is an EDS cluster%s",
                 field, cname, c && c->aggregate ? " (it is an aggregate cluster, which is not supported here)" : "");
        return -1;
    }
    if (!c->http2) {
        snprintf(err, errlen,
                 "%s.grpc_services[0].envoy_grpc.cluster_name: gRPC client cluster '%s' does not use HTTP/2 (set "
                 "typed_extension_protocol_options with explicit_http_config.http2_protocol_options, or the "
                 "deprecated http2_protocol_options)",
                 field, cname);
        return -1;
    }
    t->cluster = sharp_strdup(cname);
    t->authority = sharp_strdup(gs->envoy_grpc->authority ? gs->envoy_grpc->authority : "");
    sharp_headers_init(&t->metadata);
    sharp_grpc_initial_metadata(&t->metadata, gs);
    return 0;
}

void sharp_grpc_initial_metadata(sharp_headers_t *out, const Envoy__Config__Core__V3__GrpcService *gs)
{
    for (size_t i = 0; i < gs->n_initial_metadata; i++) {
        const Envoy__Config__Core__V3__HeaderValue *m = gs->initial_metadata[i];
        if (m->value && m->value[0])
            sharp_headers_add_cstr(out, m->key, m->value);
        else
            sharp_headers_add(out, m->key, strlen(m->key), (const char *)m->raw_value.data, m->raw_value.len);
    }
}

sharp_grpc_client_t *sharp_grpc_target_client(const sharp_grpc_target_t *t, struct sharp_server *s, char *err,
                                              size_t errlen)
{
    sharp_snapshot_t *base = s->snap->base ? s->snap->base : s->snap;
    sharp_grpc_client_config_t cfg = {
        .cluster_name = t->cluster, .authority = t->authority, .initial_metadata = &t->metadata};
    return sharp_grpc_client_create(&s->upstream_env, base, &cfg, err, errlen);
}

void sharp_grpc_target_free(sharp_grpc_target_t *t)
{
    sharp_headers_free(&t->metadata);
    free(t->cluster);
    free(t->authority);
    memset(t, 0, sizeof *t);
}

Envoy__Config__Core__V3__Address *sharp_pb_host_address(sharp_arena_t *a, const struct sharp_host *h)
{
    Envoy__Config__Core__V3__Address *ad = sharp_arena_alloc(a, sizeof *ad);
    envoy__config__core__v3__address__init(ad);
    if (h->addr.ss_family == AF_UNIX) {
        Envoy__Config__Core__V3__Pipe *p = sharp_arena_alloc(a, sizeof *p);
        envoy__config__core__v3__pipe__init(p);
        p->path = (char *)h->address;
        ad->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE;
        ad->pipe = p;
        return ad;
    }
    Envoy__Config__Core__V3__SocketAddress *sa = sharp_arena_alloc(a, sizeof *sa);
    envoy__config__core__v3__socket_address__init(sa);
    char *ip = sharp_arena_alloc(a, INET6_ADDRSTRLEN);
    if (h->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)&h->addr;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, INET6_ADDRSTRLEN);
        sa->port_value = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const void *)&h->addr;
        inet_ntop(AF_INET, &s4->sin_addr, ip, INET6_ADDRSTRLEN);
        sa->port_value = ntohs(s4->sin_port);
    }
    sa->address = ip;
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    ad->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    ad->socket_address = sa;
    return ad;
}
