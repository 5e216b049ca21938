/* bridge.h: the gRPC HTTP/1 bridge filters (envoy.filters.http.grpc_http1_bridge,
 * envoy.filters.http.grpc_http1_reverse_bridge) and the framing and header
 * logic they share (exported for the unit tests). */
#ifndef SHARP_FILTERS_GRPC_BRIDGE_H
#define SHARP_FILTERS_GRPC_BRIDGE_H

#include "http/filter.h"

#include <stdint.h>

extern const sharp_filter_factory_t sharp_grpc_http1_bridge_filter;
extern const sharp_filter_factory_t sharp_grpc_http1_reverse_bridge_filter;

#define SHARP_GRPC_FRAME_HEADER_SIZE 5

/* gRPC's frame header of an uncompressed message of `len` bytes (Envoy's
 * Grpc::Encoder::newFrame with GRPC_FH_DEFAULT): flag 0, the length in
 * network order. */
void sharp_grpc_bridge_frame_header(uint8_t out[SHARP_GRPC_FRAME_HEADER_SIZE], uint32_t len);

/* Envoy's absl::SimpleAtoi on an unsigned 64-bit value: ASCII whitespace
 * around, an optional '+', decimal digits, no overflow. */
bool sharp_grpc_bridge_atou64(sharp_str_t v, uint64_t *out);

/* The reverse bridge's response_size_header value: the first value of the
 * header, up to its first ',' (Envoy keeps only the first of repeated
 * values), as a number. False when absent or not a number. */
bool sharp_grpc_bridge_size_header(const sharp_headers_t *h, const char *name, uint64_t *out);

/* Envoy's adjustContentLength: a content-length that is a nonzero number
 * becomes adjust(value); anything else stays. `delta` is added (negative:
 * subtracted). Returns false when a subtraction would go below zero (the
 * header is left as it is then). */
bool sharp_grpc_bridge_adjust_content_length(sharp_headers_t *h, int64_t delta);

/* Envoy's Grpc::Common::isProtobufRequestHeaders: content-type is exactly
 * application/x-protobuf. */
bool sharp_grpc_bridge_is_protobuf(const sharp_headers_t *h);

/* The HTTP/1 bridge's response headers once the trailers are known
 * (Http1BridgeFilter::encodeTrailers): grpc-status copied from the
 * trailers, :status 503 when it is not the number 0; grpc-message copied;
 * content-length set to `body_len`. */
void sharp_grpc_bridge_merge_trailers(sharp_headers_t *resp, const sharp_headers_t *trailers,
                                      uint64_t body_len);

/* The reverse bridge's grpc-status for an upstream HTTP status
 * (grpcStatusFromHeaders): 200 is OK (0), others map as
 * Grpc::Utility::httpToGrpcStatus. */
uint32_t sharp_grpc_bridge_status_from_http(uint32_t http_status);

#endif
