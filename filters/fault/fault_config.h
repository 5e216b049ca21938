/* fault_config.h: the fault injection filter's settings (Envoy's
 * FaultSettings with the FaultDelayConfig, FaultAbortConfig and
 * FaultRateLimitConfig of filters/common/fault) and the decisions made
 * from them for one request: whether the request is a target, the delay,
 * the abort status and the response rate. Apart from the filter so they
 * can be tested on their own. */
#ifndef SHARP_FILTERS_FAULT_CONFIG_H
#define SHARP_FILTERS_FAULT_CONFIG_H

#include "http/headers.h"
#include "http/metadata.h"
#include "http/route.h"

#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"

typedef Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault sharp_fault_pb_t;

/* A FractionalPercent: numerator out of 100, 10000 or 1000000. */
typedef struct {
    uint32_t numerator, denominator;
} sharp_fault_percent_t;

typedef enum {
    SHARP_FAULT_ABORT_HTTP,   /* http_status */
    SHARP_FAULT_ABORT_GRPC,   /* grpc_status */
    SHARP_FAULT_ABORT_HEADER, /* header_abort */
} sharp_fault_abort_kind_t;

typedef struct sharp_fault_settings {
    bool has_delay, delay_from_header;
    uint64_t delay_ms; /* fixed_delay, whole milliseconds */
    sharp_fault_percent_t delay_pct;
    bool has_abort;
    sharp_fault_abort_kind_t abort_kind;
    uint32_t abort_status; /* http_status or grpc_status */
    sharp_fault_percent_t abort_pct;
    bool has_rate_limit, rate_from_header;
    uint64_t rate_kbps; /* fixed_limit */
    sharp_fault_percent_t rate_pct;
    char *upstream_cluster; /* NULL: any */
    sharp_header_matcher_t *headers;
    uint32_t nheaders;
    char **downstream_nodes;
    size_t *downstream_node_lens;
    uint32_t ndownstream_nodes;
    bool has_max_active;
    uint32_t max_active;
    /* runtime keys, Envoy's defaults unless the config names others */
    char *delay_percent_rt, *abort_percent_rt, *delay_duration_rt, *abort_http_status_rt,
        *abort_grpc_status_rt, *max_active_rt, *rate_percent_rt;
    bool disable_downstream_cluster_stats;
    /* filter_metadata: a STRUCT (empty when unset) that replaces the
     * filter's dynamic metadata namespace when a delay or abort begins */
    sharp_md_value_t metadata;
} sharp_fault_settings_t;

/* Builds the settings from an HTTPFault (the filter's config or a
 * per-route one); NULL and a message naming the field on a bad config or
 * one SHARP does not implement. */
sharp_fault_settings_t *sharp_fault_settings_create(const sharp_fault_pb_t *pb, char *err,
                                                    size_t errlen);
void sharp_fault_settings_free(sharp_fault_settings_t *s);

/* The fault headers' values are read with sharp_simple_atou (common.h). */

/* The request is a target: upstream_cluster (the route entry's cluster,
 * NULL without one), downstream_nodes (x-envoy-downstream-service-node)
 * and the headers matchers all match. */
bool sharp_fault_matches(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                         const char *route_cluster);

/* The runtime keys of a downstream cluster
 * (fault.http.<cluster>.delay.fixed_delay_percent ...), used when the
 * request has x-envoy-downstream-service-cluster (even empty). */
typedef struct {
    char *delay_percent, *abort_percent, *delay_duration, *abort_http_status, *abort_grpc_status;
} sharp_fault_dc_keys_t;
/* Builds the keys the settings can read: the delay's with a delay, the
 * abort's with an abort (the others stay NULL). False when there are none
 * (no delay and no abort: nothing reads them). */
bool sharp_fault_dc_keys_init(sharp_fault_dc_keys_t *k, const sharp_fault_settings_t *s, sharp_str_t cluster);
void sharp_fault_dc_keys_free(sharp_fault_dc_keys_t *k);

/* The decisions, each drawing from `random` as Envoy's featureEnabled
 * does; dc is NULL without a downstream cluster. */
/* The delay to inject (> 0 ms), or false. */
bool sharp_fault_delay(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                       const sharp_fault_dc_keys_t *dc, uint64_t random, uint64_t *ms);
/* The abort to inject: an HTTP status, or (*grpc >= 0) a gRPC status with
 * HTTP 200; false when none. */
bool sharp_fault_abort(const sharp_fault_settings_t *s, const sharp_headers_t *h,
                       const sharp_fault_dc_keys_t *dc, uint64_t random, uint32_t *http,
                       int64_t *grpc);
/* The response rate limit in KiB/s, or false. */
bool sharp_fault_rate(const sharp_fault_settings_t *s, const sharp_headers_t *h, uint64_t random,
                      uint64_t *kbps);
/* max_active_faults (its runtime key first), UINT64_MAX when unlimited. */
uint64_t sharp_fault_max_active(const sharp_fault_settings_t *s);

/* The response rate limiter's token bucket (Envoy's StreamRateLimiter
 * over a TokenBucketImpl): bytes, kbps * 1024 of them at most, filled at
 * kbps * 1024 a second, starting with one fill interval's worth. */
#define SHARP_FAULT_FILL_INTERVAL_MS 50
typedef struct {
    double tokens, max, per_ns;
    uint64_t last_ns;
} sharp_fault_bucket_t;
void sharp_fault_bucket_init(sharp_fault_bucket_t *b, uint64_t kbps, uint64_t now_ns);
/* Takes up to `want` whole tokens (bytes) and returns how many it took. */
uint64_t sharp_fault_bucket_take(sharp_fault_bucket_t *b, uint64_t want, uint64_t now_ns);

#endif
