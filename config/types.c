/* types.c: see types.h. */
#include "config/types.h"
#include "config/mapper.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/extensions/clusters/aggregate/v3/cluster.pb-c.h"
#include "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.pb-c.h"
#include "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/config/overload/v3/overload.pb-c.h"
#include "envoy/config/trace/v3/datadog.pb-c.h"
#include "envoy/config/trace/v3/opentelemetry.pb-c.h"
#include "envoy/config/trace/v3/skywalking.pb-c.h"
#include "envoy/config/trace/v3/zipkin.pb-c.h"
#include "envoy/config/metrics/v3/metrics_service.pb-c.h"
#include "envoy/extensions/stat_sinks/open_telemetry/v3/open_telemetry.pb-c.h"
#include "envoy/extensions/tracers/opentelemetry/resource_detectors/v3/static_config_resource_detector.pb-c.h"
#include "envoy/extensions/tracers/opentelemetry/resource_detectors/v3/environment_resource_detector.pb-c.h"
#include "envoy/extensions/tracers/opentelemetry/resource_detectors/v3/dynatrace_resource_detector.pb-c.h"
#include "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.pb-c.h"
#include "envoy/extensions/resource_monitors/fixed_heap/v3/fixed_heap.pb-c.h"
#include "envoy/extensions/bootstrap/internal_listener/v3/internal_listener.pb-c.h"
#include "udpa/type/v1/typed_struct.pb-c.h"
#include "xds/type/v3/typed_struct.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"
#include "envoy/extensions/filters/http/adaptive_concurrency/v3/adaptive_concurrency.pb-c.h"
#include "envoy/extensions/filters/http/admission_control/v3/admission_control.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "envoy/extensions/filters/http/cache/v3/cache.pb-c.h"
#include "envoy/extensions/http/cache/simple_http_cache/v3/config.pb-c.h"
#include "envoy/extensions/cache/simple_http_cache/v3/config.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "envoy/extensions/common/matching/v3/extension_matcher.pb-c.h"
#include "envoy/extensions/filters/common/matcher/action/v3/skip_action.pb-c.h"
#include "envoy/extensions/filters/http/composite/v3/composite.pb-c.h"
#include "envoy/type/matcher/v3/http_inputs.pb-c.h"
#include "envoy/extensions/matching/common_inputs/network/v3/network_inputs.pb-c.h"
#include "xds/type/matcher/v3/ip.pb-c.h"
#include "envoy/extensions/filters/http/health_check/v3/health_check.pb-c.h"
#include "envoy/extensions/filters/http/compressor/v3/compressor.pb-c.h"
#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "envoy/extensions/filters/http/bandwidth_limit/v3/bandwidth_limit.pb-c.h"
#include "envoy/extensions/filters/http/ext_authz/v3/ext_authz.pb-c.h"
#include "envoy/extensions/filters/http/ratelimit/v3/rate_limit.pb-c.h"
#include "envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.pb-c.h"
#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "envoy/extensions/compression/brotli/compressor/v3/brotli.pb-c.h"
#include "envoy/extensions/compression/gzip/compressor/v3/gzip.pb-c.h"
#include "envoy/extensions/compression/zstd/compressor/v3/zstd.pb-c.h"
#include "envoy/extensions/compression/gzip/decompressor/v3/gzip.pb-c.h"
#include "envoy/extensions/compression/brotli/decompressor/v3/brotli.pb-c.h"
#include "envoy/extensions/filters/http/decompressor/v3/decompressor.pb-c.h"
#include "envoy/extensions/filters/http/csrf/v3/csrf.pb-c.h"
#include "envoy/extensions/filters/http/stateful_session/v3/stateful_session.pb-c.h"
#include "envoy/extensions/http/stateful_session/cookie/v3/cookie.pb-c.h"
#include "envoy/extensions/http/stateful_session/header/v3/header.pb-c.h"
#include "envoy/extensions/filters/http/header_mutation/v3/header_mutation.pb-c.h"
#include "envoy/extensions/filters/http/grpc_http1_bridge/v3/config.pb-c.h"
#include "envoy/extensions/filters/http/grpc_http1_reverse_bridge/v3/config.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/filters/udp/udp_proxy/v3/route.pb-c.h"
#include "envoy/extensions/filters/udp/udp_proxy/v3/udp_proxy.pb-c.h"
#include "envoy/extensions/matching/common_inputs/network/v3/network_inputs.pb-c.h"
#include "envoy/extensions/regex_engines/v3/google_re2.pb-c.h"
#include "envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/http/header_formatters/preserve_case/v3/preserve_case.pb-c.h"
#include "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.pb-c.h"
#include "envoy/service/runtime/v3/rtds.pb-c.h"
#include "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "sharp/extensions/filters/http/adaptive_concurrency/v1/aimd.pb-c.h"
#include "sharp/extensions/load_balancing_policies/shuffle_shard/v1/shuffle_shard.pb-c.h"
#include "envoy/extensions/load_balancing_policies/least_request/v3/least_request.pb-c.h"
#include "envoy/extensions/load_balancing_policies/random/v3/random.pb-c.h"
#include "envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.pb-c.h"
#include "sharp/extensions/scaling/v1/scaling_agent.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/kernel/v1/kernel.pb-c.h"
#include "sharp/extensions/outlier_detection_monitors/latency/v1/latency.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

#include <stdio.h>

void sharp_config_types_register(void)
{
    static bool done;
    if (done) return;
    done = true;
    const ProtobufCMessageDescriptor *const all[] = {
        &envoy__config__bootstrap__v3__bootstrap__descriptor,
        &envoy__config__listener__v3__listener__descriptor,
        &envoy__config__cluster__v3__cluster__descriptor,
        &envoy__config__route__v3__route_configuration__descriptor,
        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
        &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
        /* the UDP proxy, its matcher's action and the network inputs */
        &envoy__extensions__filters__udp__udp_proxy__v3__udp_proxy_config__descriptor,
        &envoy__extensions__filters__udp__udp_proxy__v3__route__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__source_ipinput__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__source_port_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__destination_ipinput__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__destination_port_input__descriptor,
        &envoy__extensions__filters__http__router__v3__router__descriptor,
        &envoy__extensions__filters__http__adaptive_concurrency__v3__adaptive_concurrency__descriptor,
        &envoy__extensions__filters__http__admission_control__v3__admission_control__descriptor,
        &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
        /* and its per-route policy (typed_per_filter_config) */
        &envoy__extensions__filters__http__cors__v3__cors__descriptor,
        &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
        /* the cache filter and its in-memory storage (both package names) */
        &envoy__extensions__filters__http__cache__v3__cache_config__descriptor,
        &envoy__extensions__http__cache__simple_http_cache__v3__simple_http_cache_config__descriptor,
        &envoy__extensions__cache__simple_http_cache__v3__simple_http_cache_config__descriptor,
        &envoy__extensions__common__matching__v3__extension_with_matcher__descriptor,
        &envoy__extensions__common__matching__v3__extension_with_matcher_per_route__descriptor,
        &envoy__extensions__filters__common__matcher__action__v3__skip_filter__descriptor,
        &envoy__extensions__filters__http__composite__v3__composite__descriptor,
        &envoy__extensions__filters__http__composite__v3__execute_filter_action__descriptor,
        &envoy__type__matcher__v3__http_request_header_match_input__descriptor,
        &envoy__type__matcher__v3__http_response_header_match_input__descriptor,
        &envoy__type__matcher__v3__http_request_trailer_match_input__descriptor,
        &envoy__type__matcher__v3__http_response_trailer_match_input__descriptor,
        &envoy__type__matcher__v3__http_request_query_param_match_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__destination_ipinput__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__destination_port_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__source_ipinput__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__source_port_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__direct_source_ipinput__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__source_type_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__server_name_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__transport_protocol_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__application_protocol_input__descriptor,
        &envoy__extensions__matching__common_inputs__network__v3__filter_state_input__descriptor,
        &xds__type__matcher__v3__ipmatcher__descriptor,
        &envoy__extensions__filters__http__health_check__v3__health_check__descriptor,
        &envoy__extensions__filters__http__compressor__v3__compressor__descriptor,
        /* also its own per-route config (typed_per_filter_config) */
        &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
        /* the bandwidth limit filter, also its per-route config (the same message) */
        &envoy__extensions__filters__http__bandwidth_limit__v3__bandwidth_limit__descriptor,
        /* and its per-route config */
        &envoy__extensions__filters__http__ext_authz__v3__ext_authz__descriptor,
        &envoy__extensions__filters__http__ext_authz__v3__ext_authz_per_route__descriptor,
        /* the global rate limit filter and its per-route config */
        &envoy__extensions__filters__http__ratelimit__v3__rate_limit__descriptor,
        &envoy__extensions__filters__http__ratelimit__v3__rate_limit_per_route__descriptor,
        /* also its per-route config (the same message) */
        &envoy__extensions__filters__http__header_to_metadata__v3__config__descriptor,
        /* RBAC: the HTTP filter and its per-route config, the network filter */
        &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
        &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor,
        &envoy__extensions__filters__network__rbac__v3__rbac__descriptor,
        /* typed_per_filter_config: the compressor's per-route config and
         * the generic wrapper of any filter's */
        &envoy__extensions__filters__http__compressor__v3__compressor_per_route__descriptor,
        &envoy__config__route__v3__filter_config__descriptor,
        &envoy__extensions__compression__gzip__compressor__v3__gzip__descriptor,
        &envoy__extensions__compression__brotli__compressor__v3__brotli__descriptor,
        &envoy__extensions__compression__zstd__compressor__v3__zstd__descriptor,
        /* the decompressor filter and its libraries */
        &envoy__extensions__filters__http__decompressor__v3__decompressor__descriptor,
        &envoy__extensions__compression__gzip__decompressor__v3__gzip__descriptor,
        &envoy__extensions__compression__brotli__decompressor__v3__brotli__descriptor,
        /* the CSRF filter, also its per-route policy */
        &envoy__extensions__filters__http__csrf__v3__csrf_policy__descriptor,
        &envoy__extensions__filters__http__stateful_session__v3__stateful_session__descriptor,
        &envoy__extensions__filters__http__stateful_session__v3__stateful_session_per_route__descriptor,
        &envoy__extensions__http__stateful_session__cookie__v3__cookie_based_session_state__descriptor,
        &envoy__extensions__http__stateful_session__header__v3__header_based_session_state__descriptor,
        /* the header mutation filter and its per-route config */
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation__descriptor,
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation_per_route__descriptor,
        /* the gRPC HTTP/1 bridges, the reverse one's per-route config */
        &envoy__extensions__filters__http__grpc_http1_bridge__v3__config__descriptor,
        &envoy__extensions__filters__http__grpc_http1_reverse_bridge__v3__filter_config__descriptor,
        &envoy__extensions__filters__http__grpc_http1_reverse_bridge__v3__filter_config_per_route__descriptor,
        &sharp__extensions__filters__http__adaptive_concurrency__v1__aimd_adaptive_concurrency__descriptor,
        &sharp__extensions__load_balancing_policies__shuffle_shard__v1__shuffle_shard__descriptor,
        &envoy__config__trace__v3__zipkin_config__descriptor,
        &envoy__config__trace__v3__open_telemetry_config__descriptor,
        &envoy__config__trace__v3__sky_walking_config__descriptor,
        &envoy__config__trace__v3__datadog_config__descriptor,
        &envoy__extensions__load_balancing_policies__least_request__v3__least_request__descriptor,
        &envoy__extensions__load_balancing_policies__round_robin__v3__round_robin__descriptor,
        &envoy__extensions__load_balancing_policies__random__v3__random__descriptor,
        &envoy__extensions__clusters__aggregate__v3__cluster_config__descriptor,
        &envoy__extensions__clusters__dynamic_forward_proxy__v3__cluster_config__descriptor,
        &envoy__extensions__filters__http__dynamic_forward_proxy__v3__filter_config__descriptor,
        &envoy__extensions__filters__http__dynamic_forward_proxy__v3__per_route_config__descriptor,
        &sharp__extensions__scaling__v1__scaling_agent__descriptor,
        &sharp__extensions__outlier_detection_monitors__kernel__v1__kernel_signals__descriptor,
        &sharp__extensions__outlier_detection_monitors__latency__v1__latency_outlier__descriptor,
        &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor,
        &envoy__extensions__access_loggers__stream__v3__stdout_access_log__descriptor,
        &envoy__extensions__access_loggers__stream__v3__stderr_access_log__descriptor,
        &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor,
        &envoy__extensions__transport_sockets__raw_buffer__v3__raw_buffer__descriptor,
        &envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor,
        &envoy__extensions__filters__listener__http_inspector__v3__http_inspector__descriptor,
        &envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor,
        &envoy__extensions__filters__listener__proxy_protocol__v3__proxy_protocol__descriptor,
        /* TLS parses (so a config names its fields correctly) but stays
         * refused by the support table until the transport socket is wired. */
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor,
        &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
        &envoy__service__runtime__v3__runtime__descriptor,
        &envoy__extensions__retry__host__previous_hosts__v3__previous_hosts_predicate__descriptor,
        &envoy__extensions__http__header_formatters__preserve_case__v3__preserve_case_formatter_config__descriptor,
        &envoy__extensions__regex_engines__v3__google_re2__descriptor,
        &envoy__extensions__network__dns_resolver__cares__v3__cares_dns_resolver_config__descriptor,
        &envoy__extensions__resource_monitors__fixed_heap__v3__fixed_heap_config__descriptor,
        &envoy__extensions__resource_monitors__downstream_connections__v3__downstream_connections_config__descriptor,
        &envoy__extensions__bootstrap__internal_listener__v3__internal_listener__descriptor,
        &envoy__config__metrics__v3__statsd_sink__descriptor,
        &envoy__config__metrics__v3__dog_statsd_sink__descriptor,
        &envoy__config__metrics__v3__metrics_service_config__descriptor,
        &envoy__extensions__stat_sinks__open_telemetry__v3__sink_config__descriptor,
        &envoy__extensions__tracers__opentelemetry__resource_detectors__v3__static_config_resource_detector_config__descriptor,
        &envoy__extensions__tracers__opentelemetry__resource_detectors__v3__environment_resource_detector_config__descriptor,
        &envoy__extensions__tracers__opentelemetry__resource_detectors__v3__dynatrace_resource_detector_config__descriptor,
        &udpa__type__v1__typed_struct__descriptor,
        &xds__type__v3__typed_struct__descriptor,
        &envoy__config__overload__v3__shrink_heap_config__descriptor,
        &envoy__config__overload__v3__scale_timers_overload_action_config__descriptor,
        &google__protobuf__duration__descriptor,
        &google__protobuf__struct__descriptor,
        &google__protobuf__value__descriptor,
        &google__protobuf__list_value__descriptor,
        &google__protobuf__empty__descriptor,
        &google__protobuf__timestamp__descriptor,
        &google__protobuf__bool_value__descriptor,
        &google__protobuf__string_value__descriptor,
        &google__protobuf__uint32_value__descriptor,
        &google__protobuf__uint64_value__descriptor,
        &google__protobuf__int32_value__descriptor,
        &google__protobuf__int64_value__descriptor,
        &google__protobuf__double_value__descriptor,
        &google__protobuf__float_value__descriptor,
        &google__protobuf__bytes_value__descriptor,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sharp_type_registry_add(all[i]);
}

static uint64_t ms_of(const Google__Protobuf__Duration *d)
{
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

void sharp_config_upstream_common_http(const Envoy__Config__Core__V3__HttpProtocolOptions *h, sharp_cluster_t *c)
{
    c->idle_timeout_ms = h && h->idle_timeout ? ms_of(h->idle_timeout) : 3600 * 1000;
    c->max_response_headers_count = h && h->max_headers_count ? h->max_headers_count->value : 100;
    c->has_max_connection_duration = h && h->max_connection_duration;
    c->max_connection_duration_ms = c->has_max_connection_duration ? ms_of(h->max_connection_duration) : 0;
    c->max_stream_duration_ms = h && h->max_stream_duration ? ms_of(h->max_stream_duration) : 0;
    /* Cluster.max_requests_per_connection (deprecated) keeps its value
     * unless this one is set. */
    if (h && h->max_requests_per_connection) c->max_requests_per_connection = h->max_requests_per_connection->value;
}

void sharp_config_http2_options(const Envoy__Config__Core__V3__Http2ProtocolOptions *o, sharp_h2_options_t *h)
{
    static const Envoy__Config__Core__V3__Http2ProtocolOptions none = ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT;
    if (!o) o = &none;
    /* Envoy's defaults (Http2ProtocolOptions and http2/codec_impl.h) */
    h->hpack_table_size = o->hpack_table_size ? o->hpack_table_size->value : 4096;
    h->max_concurrent_streams = o->max_concurrent_streams ? o->max_concurrent_streams->value : 2147483647;
    h->initial_stream_window_size = o->initial_stream_window_size ? o->initial_stream_window_size->value : 268435456;
    h->initial_connection_window_size =
        o->initial_connection_window_size ? o->initial_connection_window_size->value : 268435456;
    h->max_outbound_frames = o->max_outbound_frames ? o->max_outbound_frames->value : 10000;
    h->max_outbound_control_frames = o->max_outbound_control_frames ? o->max_outbound_control_frames->value : 1000;
    h->max_consecutive_inbound_frames_with_empty_payload =
        o->max_consecutive_inbound_frames_with_empty_payload
            ? o->max_consecutive_inbound_frames_with_empty_payload->value : 1;
    h->max_inbound_priority_frames_per_stream =
        o->max_inbound_priority_frames_per_stream ? o->max_inbound_priority_frames_per_stream->value : 100;
    h->max_inbound_window_update_frames_per_data_frame_sent =
        o->max_inbound_window_update_frames_per_data_frame_sent
            ? o->max_inbound_window_update_frames_per_data_frame_sent->value : 10;
    /* the override, when set, wins over the deprecated bool */
    h->stream_error_on_invalid_http_message = o->override_stream_error_on_invalid_http_message
                                                  ? o->override_stream_error_on_invalid_http_message->value
                                                  : o->stream_error_on_invalid_http_messaging;
    h->allow_connect = o->allow_connect;
    h->keepalive_interval_ms = h->keepalive_timeout_ms = 0;
    h->has_keepalive = o->connection_keepalive != NULL;
    h->keepalive_jitter_percent = 15;
    if (o->connection_keepalive) {
        const Envoy__Config__Core__V3__KeepaliveSettings *k = o->connection_keepalive;
        h->keepalive_interval_ms = k->interval ? ms_of(k->interval) : 0;
        h->keepalive_timeout_ms = k->timeout ? ms_of(k->timeout) : 0;
        if (k->interval_jitter) h->keepalive_jitter_percent = k->interval_jitter->value;
    }
}

int sharp_config_h1_key_format(const Envoy__Config__Core__V3__Http1ProtocolOptions *o, sharp_h1_key_format_t *out,
                               char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const Envoy__Config__Core__V3__Http1ProtocolOptions__HeaderKeyFormat *k = o ? o->header_key_format : NULL;
    if (!k) return 0;
    switch (k->header_format_case) {
    case ENVOY__CONFIG__CORE__V3__HTTP1_PROTOCOL_OPTIONS__HEADER_KEY_FORMAT__HEADER_FORMAT_PROPER_CASE_WORDS:
        out->mode = SHARP_H1_KEYS_PROPER;
        return 0;
    case ENVOY__CONFIG__CORE__V3__HTTP1_PROTOCOL_OPTIONS__HEADER_KEY_FORMAT__HEADER_FORMAT_STATEFUL_FORMATTER: {
        /* the only stateful formatter: envoy.http.stateful_header_formatters.preserve_case */
        const Envoy__Config__Core__V3__TypedExtensionConfig *t = k->stateful_formatter;
        sharp_config_error_t e = {{0}};
        ProtobufCMessage *m =
            t->typed_config
                ? sharp_any_unpack(&t->typed_config->base,
                                   &envoy__extensions__http__header_formatters__preserve_case__v3__preserve_case_formatter_config__descriptor,
                                   &e)
                : NULL;
        if (!m) {
            snprintf(err, errlen, "header_key_format.stateful_formatter.typed_config: %s",
                     t->typed_config ? e.msg
                                     : "required: a type.googleapis.com/envoy.extensions.http.header_formatters."
                                       "preserve_case.v3.PreserveCaseFormatterConfig");
            return -1;
        }
        const Envoy__Extensions__Http__HeaderFormatters__PreserveCase__V3__PreserveCaseFormatterConfig *pc = (const void *)m;
        int rc = 0;
        if (pc->formatter_type_on_envoy_headers != 0 && pc->formatter_type_on_envoy_headers != 1) {
            snprintf(err, errlen,
                     "header_key_format.stateful_formatter.typed_config.formatter_type_on_envoy_headers: "
                     "value must be one of the defined enum values, got %d",
                     (int)pc->formatter_type_on_envoy_headers);
            rc = -1;
        }
        out->mode = SHARP_H1_KEYS_PRESERVE;
        out->proper_others = pc->formatter_type_on_envoy_headers == 1;
        out->forward_reason = pc->forward_reason_phrase;
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    default:
        /* Envoy: the oneof is required */
        snprintf(err, errlen, "header_key_format: one of proper_case_words or stateful_formatter must be set");
        return -1;
    }
}

void sharp_config_upstream_http2(const Envoy__Config__Core__V3__Http2ProtocolOptions *o, sharp_cluster_t *c)
{
    c->http2 = true;
    sharp_config_http2_options(o, &c->h2);
}

int sharp_config_apply_upstream_http_options(const ProtobufCMessage *any, sharp_cluster_t *c,
                                             char *sub, size_t sublen, char *err, size_t errlen)
{
    snprintf(sub, sublen, "%s", "");
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m =
        sharp_any_unpack(any, &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor, &e);
    if (!m) {
        snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions *o = (const void *)m;
    int rc = 0;
    /* Envoy takes the extension's options instead of the Cluster's own
     * common_http_protocol_options, not field by field over them. */
    sharp_config_upstream_common_http(o->common_http_protocol_options, c);
    c->http2 = c->downstream_protocol = c->auto_http = false;
    memset(&c->h1_keys, 0, sizeof c->h1_keys);
    if (o->upstream_protocol_options_case ==
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_AUTO_CONFIG) {
        /* Envoy's mixed pool: each connection speaks what ALPN negotiated
         * (h2, else HTTP/1.1); HTTP/2 connections take http2_protocol_options
         * (its defaults when unset). The cluster must have a transport
         * socket with ALPN (TLS): checked once the cluster is built. */
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__AutoHttpConfig *a = o->auto_config;
        c->auto_http = true;
        sharp_config_http2_options(a->http2_protocol_options, &c->h2);
        if (sharp_config_h1_key_format(a->http_protocol_options, &c->h1_keys, err, errlen) < 0) {
            snprintf(sub, sublen, "auto_config.http_protocol_options");
            rc = -1;
        }
    }
    if (o->upstream_protocol_options_case ==
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG) {
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *x = o->explicit_http_config;
        if (x->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS) {
            sharp_config_upstream_http2(x->http2_protocol_options, c);
        } else if (x->protocol_config_case ==
                       ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP_PROTOCOL_OPTIONS &&
                   sharp_config_h1_key_format(x->http_protocol_options, &c->h1_keys, err, errlen) < 0) {
            snprintf(sub, sublen, "explicit_http_config.http_protocol_options");
            rc = -1;
        } else if (x->protocol_config_case !=
                   ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP_PROTOCOL_OPTIONS) {
            snprintf(sub, sublen, "explicit_http_config");
            snprintf(err, errlen, "one of http_protocol_options or http2_protocol_options must be set");
            rc = -1;
        }
    }
    if (o->upstream_protocol_options_case ==
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG) {
        /* Envoy's USE_DOWNSTREAM_PROTOCOL: the HTTP/2 pools take
         * http2_protocol_options (its defaults when unset); its presence is
         * Envoy's HTTP2 feature (useHttp2()). http_protocol_options has no
         * field SHARP implements upstream (the support table refuses them
         * all, as under explicit_http_config). */
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__UseDownstreamHttpConfig *d =
            o->use_downstream_protocol_config;
        c->downstream_protocol = true;
        if (d->http2_protocol_options) sharp_config_upstream_http2(d->http2_protocol_options, c);
        else sharp_config_http2_options(NULL, &c->h2);
        if (sharp_config_h1_key_format(d->http_protocol_options, &c->h1_keys, err, errlen) < 0) {
            snprintf(sub, sublen, "use_downstream_protocol_config.http_protocol_options");
            rc = -1;
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}
