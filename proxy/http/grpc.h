/* grpc.h: gRPC over HTTP semantics the connection manager and the access
 * log need (Envoy's Grpc::Common and Grpc::Utility): recognizing a gRPC
 * request, the status of a response, the HTTP-to-gRPC status mapping, the
 * names Envoy logs, grpc-message's percent-encoding and grpc-timeout. */
#ifndef SHARP_HTTP_GRPC_H
#define SHARP_HTTP_GRPC_H

#include "http/headers.h"
#include "sbuf.h"

#include <stdbool.h>
#include <stdint.h>

/* A gRPC request: content-type application/grpc, or application/grpc+<fmt>
 * or application/grpc;<params> (Envoy's hasGrpcContentType). */
bool sharp_grpc_is_request(const sharp_headers_t *h);

/* Envoy's Grpc::Utility::httpToGrpcStatus. */
uint32_t sharp_grpc_status_from_http(uint32_t http_status);

/* Envoy's Grpc::Utility::grpcToHttpStatus (500 for a code it does not
 * know). */
uint32_t sharp_grpc_status_to_http(int64_t grpc_status);

/* The grpc-status of a response (Envoy's Common::getGrpcStatus): the
 * trailers', else the headers', else mapped from the HTTP status when there
 * is one. Returns false when there is none; *out is -1 for a value that is
 * not a number (Envoy's InvalidCode). Either map may be NULL. */
bool sharp_grpc_response_status(const sharp_headers_t *trailers, const sharp_headers_t *headers,
                                uint32_t http_status, int64_t *out);

/* Envoy's access log names: CAMEL_STRING ("DeadlineExceeded") or
 * SNAKE_STRING ("DEADLINE_EXCEEDED"); NULL for a code without one (the
 * number is logged then). */
const char *sharp_grpc_status_name(int64_t code, bool snake);

/* grpc-message's percent-encoding (gRPC's spec, Envoy's
 * PercentEncoding::encode): bytes outside printable ASCII and '%' become
 * %XX. */
void sharp_grpc_percent_encode(sharp_sbuf_t *out, const char *p, size_t n);

/* grpc-timeout ("1S", "250m", at most 8 digits and one of H M S m u n) in
 * milliseconds, rounded up (Envoy's Common::getGrpcTimeout); false for a
 * malformed value. */
bool sharp_grpc_timeout_ms(sharp_str_t v, uint64_t *ms);

/* A grpc-timeout value for `ms` (Envoy's Common::toGrpcTimeout):
 * milliseconds while they fit 8 digits, else seconds, minutes, hours,
 * clipped to 99999999H. Writes at most 10 bytes (no NUL), returns the
 * length. */
size_t sharp_grpc_timeout_format(uint64_t ms, char out[10]);

/* grpc.health.v1.Health/Check: the request message HealthCheckRequest
 * {service} as one length-prefixed gRPC message (uncompressed). */
void sharp_grpc_health_request(sharp_sbuf_t *out, const char *service);

/* The HealthCheckResponse's status from a response body of gRPC messages:
 * 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN, or any other
 * value the server sent. Returns 0 when the body holds one whole
 * uncompressed message that decodes, -1 when it is incomplete or
 * malformed (Envoy's gRPC health checker fails the host then). */
int sharp_grpc_health_response_status(const char *p, size_t n, uint64_t *status);

#endif
