/* ratelimit_policy.h: the rate_limits of a route or virtual host
 * (envoy.config.route.v3.RateLimit, Envoy's RateLimitPolicyImpl), and the
 * descriptors they make for a request, which the rate limit filter sends
 * to its rate limit service.
 *
 * A RateLimit is a stage (0..10), a runtime disable_key and a list of
 * actions. Each action, in order, adds at most one entry to the
 * RateLimit's descriptor, or fails: a failing action means no descriptor
 * from this RateLimit (Envoy's populateDescriptors). The actions:
 *   source_cluster        ("source_cluster", the local service cluster)
 *   destination_cluster   ("destination_cluster", the routed cluster)
 *   request_headers       (descriptor_key, the header's first value); an
 *                         absent header fails the action, or with
 *                         skip_if_absent adds nothing
 *   remote_address        ("remote_address", the trusted client IP); fails
 *                         for a non-IP client (a Unix socket)
 *   masked_remote_address ("masked_remote_address", "ip/len" of the client
 *                         IP masked to v4_prefix_mask_len (32) or
 *                         v6_prefix_mask_len (128))
 *   generic_key           (descriptor_key or "generic_key", descriptor_value)
 *   header_value_match    (descriptor_key or "header_match", descriptor_value)
 *                         when the headers match (every matcher) as
 *                         expect_match (true) says, else fails
 *   query_parameter_value_match (descriptor_key or "query_match", ...) the
 *                         same on the query parameters of :path (names
 *                         and values percent-decoded, the first value)
 *   metadata              (descriptor_key, the string at metadata_key in the
 *                         stream's dynamic metadata, the route's, or the
 *                         locality metadata of the stream's upstream host
 *                         (CLUSTER_LOCALITY_ENTRY: none before a host is
 *                         chosen, so in practice apply_on_stream_done));
 *                         absent or empty:
 *                         default_value, else fails, or with
 *                         skip_if_absent adds nothing
 * Immutable once built; owned by the route table. */
#ifndef SHARP_HTTP_RATELIMIT_POLICY_H
#define SHARP_HTTP_RATELIMIT_POLICY_H

#include "common.h"
#include "http/headers.h"
#include "http/route.h"

typedef enum {
    SHARP_RL_SOURCE_CLUSTER,
    SHARP_RL_DESTINATION_CLUSTER,
    SHARP_RL_REQUEST_HEADERS,
    SHARP_RL_REMOTE_ADDRESS,
    SHARP_RL_MASKED_REMOTE_ADDRESS,
    SHARP_RL_GENERIC_KEY,
    SHARP_RL_HEADER_VALUE_MATCH,
    SHARP_RL_QUERY_VALUE_MATCH,
    SHARP_RL_METADATA,
} sharp_rl_action_kind_t;

/* Where a metadata action reads (RateLimit.Action.MetaData.Source). */
typedef enum {
    SHARP_RL_MD_DYNAMIC,          /* the stream's dynamic metadata */
    SHARP_RL_MD_ROUTE_ENTRY,      /* the route's metadata */
    SHARP_RL_MD_CLUSTER_LOCALITY, /* the upstream host's locality metadata */
} sharp_rl_md_source_t;

typedef struct {
    sharp_rl_action_kind_t kind;
    char *key;         /* the descriptor entry's key (all but the address and cluster kinds) */
    char *value;       /* GENERIC_KEY, *_VALUE_MATCH: the entry's value */
    char *header_name; /* REQUEST_HEADERS: lower-case */
    bool skip_if_absent;
    bool expect_match; /* *_VALUE_MATCH */
    sharp_header_matcher_t *headers;
    uint32_t nheaders;
    sharp_query_matcher_t *query;
    uint32_t nquery;
    uint32_t v4_mask, v6_mask; /* MASKED_REMOTE_ADDRESS */
    /* METADATA: metadata_key's namespace and path of struct keys, and the
     * value used when the string there is absent or empty ("" none) */
    sharp_rl_md_source_t md_source;
    char *md_ns;
    char **md_path;
    uint32_t md_npath;
} sharp_rl_action_t;

/* One envoy.config.route.v3.RateLimit. */
typedef struct {
    uint32_t stage;
    char *disable_key; /* NULL: none */
    sharp_rl_action_t *actions;
    uint32_t nactions;
    bool has_hits_addend; /* hits_addend.number: the descriptor's own hits_addend */
    uint64_t hits_addend;
    bool apply_on_stream_done; /* the rate limit filter asks when the stream ends */
} sharp_rate_limit_t;

/* A level's rate_limits, in order. */
typedef struct sharp_rate_limits {
    sharp_rate_limit_t *v;
    uint32_t n;
    bool any_on_stream_done; /* one of them has apply_on_stream_done */
} sharp_rate_limits_t;

typedef struct {
    char *key, *value;
} sharp_rl_entry_t;

typedef struct {
    sharp_rl_entry_t *entries;
    uint32_t n;
    bool has_hits_addend; /* RateLimitDescriptor.hits_addend: set, even to 0 */
    uint64_t hits_addend;
} sharp_rl_descriptor_t;

/* The descriptors of one request, in order. */
typedef struct {
    sharp_rl_descriptor_t *d;
    uint32_t n, cap;
} sharp_rl_descriptors_t;

/* What the actions read of a request. */
typedef struct {
    const sharp_headers_t *headers;
    const char *local_cluster;  /* the local service cluster (node.cluster), "" when none */
    const char *route_cluster;  /* the routed cluster; NULL: none (destination_cluster fails) */
    const char *remote_address; /* the trusted client address as printed ("ip:port"), may be "" */
    /* what metadata actions read, NULL: none */
    const struct sharp_dynamic_metadata *dynamic_metadata;
    const struct sharp_dynamic_metadata *route_metadata;
    /* the stream's last upstream host's locality metadata
     * (LocalityLbEndpoints.metadata); NULL before a host is chosen */
    const struct sharp_dynamic_metadata *locality_metadata;
} sharp_rl_input_t;

/* Appends the descriptor of `rl` for the request to `out`, unless one of
 * its actions fails, with rl's hits_addend when it has one. Returns
 * whether it appended one. */
bool sharp_rate_limit_populate(const sharp_rate_limit_t *rl, const sharp_rl_input_t *in,
                               sharp_rl_descriptors_t *out);
void sharp_rl_descriptors_free(sharp_rl_descriptors_t *d);

void sharp_rate_limits_free(sharp_rate_limits_t *r);

/* Whether every query parameter matcher accepts the query of `path` (the
 * first value of each parameter, not percent-decoded, as route matching). */
bool sharp_query_matchers_match(const sharp_query_matcher_t *q, uint32_t n, sharp_str_t path);

#endif
