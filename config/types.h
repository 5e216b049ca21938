/* types.h: the message types SHARP knows inside google.protobuf.Any
 * (typed_config and friends), registered in the mapper's type-URL registry,
 * and translation of the small extension messages that are not filters. */
#ifndef SHARP_CONFIG_TYPES_H
#define SHARP_CONFIG_TYPES_H

#include "upstream/cluster.h"

#include <protobuf-c/protobuf-c.h>

/* Idempotent. */
void sharp_config_types_register(void);

/* Applies envoy.extensions.upstreams.http.v3.HttpProtocolOptions (an Any)
 * to a cluster. Returns 0, or -1 with the message in err and the path of the
 * offending field below the Any (maybe empty) in sub, so that the caller
 * can place the error in the source. */
int sharp_config_apply_upstream_http_options(const ProtobufCMessage *any, sharp_cluster_t *c,
                                             char *sub, size_t sublen, char *err, size_t errlen);

struct Envoy__Config__Core__V3__HttpProtocolOptions;
struct Envoy__Config__Core__V3__Http2ProtocolOptions;
struct Envoy__Config__Core__V3__Http1ProtocolOptions;
/* Http1ProtocolOptions.header_key_format (o may be NULL: lower case).
 * Returns 0, or -1 with the message in err (its first words the path below
 * http_protocol_options). */
int sharp_config_h1_key_format(const struct Envoy__Config__Core__V3__Http1ProtocolOptions *o,
                               sharp_h1_key_format_t *out, char *err, size_t errlen);
/* Http2ProtocolOptions (validated by the support table) with Envoy's
 * defaults for every unset field; `o` may be NULL (all defaults). */
void sharp_config_http2_options(const struct Envoy__Config__Core__V3__Http2ProtocolOptions *o, sharp_h2_options_t *h);
/* HTTP/2 to the cluster's hosts with these Http2ProtocolOptions. */
void sharp_config_upstream_http2(const struct Envoy__Config__Core__V3__Http2ProtocolOptions *o, sharp_cluster_t *c);
/* The upstream side of common_http_protocol_options (the Cluster's own, or
 * the HttpProtocolOptions extension's, which replaces it whole as in Envoy):
 * idle_timeout, max_headers_count, max_connection_duration,
 * max_stream_duration and max_requests_per_connection; unset fields get Envoy's defaults (NULL: all). */
void sharp_config_upstream_common_http(const struct Envoy__Config__Core__V3__HttpProtocolOptions *h,
                                       sharp_cluster_t *c);

#endif
