/* access_log_filter.h: Envoy's AccessLogFilter (envoy.config.accesslog.v3),
 * the predicate an access log's `filter` and a local reply mapper's `filter`
 * both evaluate against a stream. Built once from config (config/
 * access_log_filter_config.c), immutable, shared by all workers.
 *
 * Semantics follow Envoy's access_log_impl.cc:
 * - status_code: the response code, 0 when no response was sent;
 * - duration: milliseconds since the request started (final when the stream
 *   is complete, so far otherwise);
 * - not_health_check: the health check filter did not mark the request;
 * - runtime: random % denominator < numerator, where the random value is the
 *   first 8 hex digits of x-request-id unless use_independent_randomness is
 *   set or the header has no such digits (then a fresh random number);
 * - and/or: left to right, stopping at the first false/true;
 * - header: a route HeaderMatcher against the request headers;
 * - response_flag: any of the listed flags, or any flag when none is listed;
 * - grpc_status: the response's gRPC status (trailers, headers, else mapped
 *   from the HTTP status; UNKNOWN when there is none) is listed, or with
 *   exclude is not. */
#ifndef SHARP_HTTP_ACCESS_LOG_FILTER_H
#define SHARP_HTTP_ACCESS_LOG_FILTER_H

#include "common.h"
#include "http/route.h"
#include "http/stream_info.h"

typedef enum {
    SHARP_ALF_STATUS_CODE,
    SHARP_ALF_DURATION,
    SHARP_ALF_NOT_HEALTH_CHECK,
    SHARP_ALF_RUNTIME,
    SHARP_ALF_AND,
    SHARP_ALF_OR,
    SHARP_ALF_HEADER,
    SHARP_ALF_RESPONSE_FLAG,
    SHARP_ALF_GRPC_STATUS,
} sharp_alf_kind_t;

typedef enum {
    SHARP_ALF_EQ,
    SHARP_ALF_GE,
    SHARP_ALF_LE,
} sharp_alf_op_t;

typedef struct sharp_alf {
    sharp_alf_kind_t kind;
    /* status_code, duration */
    sharp_alf_op_t op;
    uint64_t value; /* RuntimeUInt32.default_value */
    /* runtime */
    uint64_t numerator, denominator; /* percent_sampled (default 0/100) */
    bool independent;
    /* and, or */
    struct sharp_alf **children;
    uint32_t nchildren;
    /* header */
    sharp_header_matcher_t header;
    /* response_flag: SHARP_RF_* bits of the listed flags; any_flag when
     * none is listed (a listed flag SHARP never sets adds no bit) */
    uint32_t flags;
    bool any_flag;
    /* grpc_status: bit k for status k (0..16) */
    uint32_t grpc_statuses;
    bool exclude;
} sharp_alf_t;

/* A source of random numbers (the worker's generator on the data path). */
typedef uint64_t (*sharp_alf_random_fn)(void *ctx);

/* Evaluates `f` for the stream; request headers come from si->request_headers
 * (none counts as an empty map). */
bool sharp_alf_evaluate(const sharp_alf_t *f, const sharp_stream_info_t *si,
                        sharp_alf_random_fn rnd, void *rnd_ctx);
void sharp_alf_free(sharp_alf_t *f);

#endif
