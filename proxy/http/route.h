/* route.h: the runtime route table built from an Envoy RouteConfiguration.
 * Immutable once built; shared by all workers through the config snapshot.
 * Matching follows Envoy: virtual host by :authority (exact, then suffix
 * wildcards longest first, then prefix wildcards longest first, then "*"),
 * then the first route whose match accepts the request. */
#ifndef SHARP_HTTP_ROUTE_H
#define SHARP_HTTP_ROUTE_H

#include "common.h"
#include "http/hash_policy.h"
#include "http/headers.h"
#include "safe_regex.h"

struct sharp_stream_info;
struct sharp_access_log_format;
struct sharp_filter_factory;
struct sharp_cors_policy;
struct sharp_rate_limits;

/* One entry of a typed_per_filter_config map (Envoy's PerFilterConfigs):
 * the config of the filter named `name` in the connection manager's
 * http_filters for this level (route table, virtual host, route, weighted
 * cluster). A FilterConfig with disabled: true sets `disabled` and no
 * config; any other entry enables the filter here (Envoy: a filter
 * configured on a route is enabled there), with the filter's own config
 * when it has one. */
typedef struct sharp_per_filter {
    char *name;
    const struct sharp_filter_factory *factory; /* the factory that made config (NULL without) */
    void *config;
    bool disabled;
} sharp_per_filter_t;

typedef struct {
    sharp_per_filter_t *v;
    uint32_t n;
} sharp_per_filter_configs_t;

typedef enum {
    SHARP_SM_EXACT,
    SHARP_SM_PREFIX,
    SHARP_SM_SUFFIX,
    SHARP_SM_CONTAINS,
    SHARP_SM_REGEX,
} sharp_string_match_kind_t;

/* envoy.type.matcher.v3.StringMatcher (and the legacy *_match header kinds). */
typedef struct {
    sharp_string_match_kind_t kind;
    char *value; /* pattern text (also for regex, for config_dump) */
    size_t len;
    bool ignore_case;
    sharp_re2_t *re; /* SHARP_SM_REGEX: the whole value must match (RE2::FullMatch) */
} sharp_string_matcher_t;

typedef enum {
    SHARP_HM_STRING, /* exact/prefix/suffix/contains/safe_regex/string_match */
    SHARP_HM_PRESENT,
    SHARP_HM_RANGE,
} sharp_header_match_kind_t;

typedef struct {
    char *name; /* lower-case */
    size_t name_len;
    sharp_header_match_kind_t kind;
    sharp_string_matcher_t sm;
    bool present; /* for SHARP_HM_PRESENT */
    int64_t range_start, range_end; /* [start, end) */
    bool invert;
    bool treat_missing_as_empty;
} sharp_header_matcher_t;

typedef struct {
    char *name;
    bool present_match; /* true: only presence is checked */
    sharp_string_matcher_t sm;
} sharp_query_matcher_t;

typedef enum {
    SHARP_APPEND_IF_EXISTS_OR_ADD,
    SHARP_ADD_IF_ABSENT,
    SHARP_OVERWRITE_IF_EXISTS_OR_ADD,
    SHARP_OVERWRITE_IF_EXISTS,
} sharp_header_append_t;

typedef struct {
    char *name; /* lower-case */
    char *value; /* as configured; Envoy's %VAR% substitutions are expanded when applied */
    struct sharp_access_log_format *fmt; /* compiled value when it has operators, else NULL */
    sharp_header_append_t action;
    bool keep_empty_value;
} sharp_header_op_t;

/* request/response headers to add and remove at one level (route, vhost or table). */
typedef struct sharp_header_ops {
    sharp_header_op_t *add;
    uint32_t nadd;
    char **remove;
    uint32_t nremove;
} sharp_header_ops_t;

typedef enum {
    SHARP_ROUTE_MATCH_PREFIX,
    SHARP_ROUTE_MATCH_PATH,
    SHARP_ROUTE_MATCH_REGEX,
    SHARP_ROUTE_MATCH_PATH_SEPARATED_PREFIX,
    SHARP_ROUTE_MATCH_CONNECT, /* connect_matcher: CONNECT requests only */
} sharp_route_match_kind_t;

typedef enum {
    SHARP_ROUTE_ACTION_ROUTE,
    SHARP_ROUTE_ACTION_REDIRECT,
    SHARP_ROUTE_ACTION_DIRECT,
} sharp_route_action_kind_t;

typedef struct {
    char *name;
    uint32_t weight;
    char *runtime_key; /* runtime_key_prefix + "." + name, NULL without a prefix */
    sharp_header_ops_t req_ops, resp_ops;
    sharp_per_filter_configs_t per_filter; /* ClusterWeight.typed_per_filter_config */
    /* metadata_match's "envoy.lb" merged over the route's (Envoy's
     * WeightedClusterEntry), upstream/subset.h form; NULL: the route's */
    struct sharp_lbmeta *metadata_match;
} sharp_weighted_cluster_t;

/* retry_on conditions (Envoy's names in the comments). */
enum {
    SHARP_RETRY_5XX = 1u << 0,                    /* 5xx */
    SHARP_RETRY_GATEWAY_ERROR = 1u << 1,          /* gateway-error */
    SHARP_RETRY_RESET = 1u << 2,                  /* reset */
    SHARP_RETRY_CONNECT_FAILURE = 1u << 3,        /* connect-failure */
    SHARP_RETRY_RETRIABLE_4XX = 1u << 4,          /* retriable-4xx (409) */
    SHARP_RETRY_REFUSED_STREAM = 1u << 5,         /* refused-stream */
    SHARP_RETRY_RETRIABLE_STATUS_CODES = 1u << 6, /* retriable-status-codes */
    SHARP_RETRY_RETRIABLE_HEADERS = 1u << 7,      /* retriable-headers */
    SHARP_RETRY_ENVOY_RATELIMITED = 1u << 8,      /* envoy-ratelimited */
    SHARP_RETRY_RESET_BEFORE_REQUEST = 1u << 9,   /* reset-before-request */
    /* gRPC conditions: the grpc-status of a trailers-only response */
    SHARP_RETRY_GRPC_CANCELLED = 1u << 10,          /* cancelled */
    SHARP_RETRY_GRPC_DEADLINE_EXCEEDED = 1u << 11,  /* deadline-exceeded */
    SHARP_RETRY_GRPC_RESOURCE_EXHAUSTED = 1u << 12, /* resource-exhausted */
    SHARP_RETRY_GRPC_UNAVAILABLE = 1u << 13,        /* unavailable */
    SHARP_RETRY_GRPC_INTERNAL = 1u << 14,           /* internal */
};
#define SHARP_RETRY_GRPC_ANY                                                                         \
    (SHARP_RETRY_GRPC_CANCELLED | SHARP_RETRY_GRPC_DEADLINE_EXCEEDED | SHARP_RETRY_GRPC_RESOURCE_EXHAUSTED | \
     SHARP_RETRY_GRPC_UNAVAILABLE | SHARP_RETRY_GRPC_INTERNAL)

/* Parses a comma-separated list of HTTP retry conditions (x-envoy-retry-on)
 * into SHARP_RETRY_* bits; unknown names are ignored, as Envoy does. */
uint32_t sharp_retry_on_parse(const char *p, size_t n);
/* The same for the gRPC conditions (x-envoy-retry-grpc-on). A route's
 * retry_on takes both kinds (Envoy parses it with both parsers). */
uint32_t sharp_retry_grpc_on_parse(const char *p, size_t n);
/* Whether a response's grpc-status (of trailers-only headers) is one the
 * SHARP_RETRY_GRPC_* bits in `on` name. */
bool sharp_retry_grpc_status_matches(uint32_t on, int64_t grpc_status);

typedef struct {
    char *retry_on;        /* as configured */
    uint32_t retry_on_bits; /* SHARP_RETRY_* */
    uint32_t num_retries;  /* default 1 when a policy exists */
    uint64_t per_try_timeout_ms;
    uint32_t *retriable_status_codes;
    uint32_t nretriable_status_codes;
    uint64_t backoff_base_ms, backoff_max_ms;
    /* no retry_back_off: the base is the runtime's upstream.base_retry_backoff_ms
     * (default 25) and the max ten times it, read per retry */
    bool backoff_from_runtime;
    bool previous_hosts;   /* retry_host_predicate envoy.retry_host_predicates.previous_hosts */
    uint32_t host_selection_max_attempts; /* default 1 */
    sharp_header_matcher_t *retriable_headers; /* on the response */
    uint32_t nretriable_headers;
    sharp_header_matcher_t *retriable_request_headers; /* the request must match one, if any */
    uint32_t nretriable_request_headers;
} sharp_retry_policy_t;

/* core.v3.RuntimeFractionalPercent: the fraction of requests a feature
 * applies to (route match runtime_fraction, request mirroring): the
 * runtime's value of `key` when the layers have one, else the default. */
typedef struct {
    uint32_t numerator;   /* default_value */
    uint32_t denominator; /* 100, 10000 or 1000000 */
    char *key;            /* runtime_key, NULL when empty */
} sharp_runtime_fraction_t;

/* Tracing sampling fractions (http/tracing.h): the connection manager's,
 * or a route's tracing (Envoy's RouteTracingImpl), each numerator out of
 * its denominator (100, 10000 or 1000000). */
typedef struct {
    uint32_t client_num, client_den;   /* tracing.client_enabled */
    uint32_t random_num, random_den;   /* tracing.random_sampling */
    uint32_t overall_num, overall_den; /* tracing.global_enabled */
} sharp_trace_sampling_t;

/* Custom span tags (type.tracing.v3.CustomTag) of a connection manager or
 * a route: a literal, an environment variable's value (read when the
 * config is built, else its default), or a request header's value (else
 * its default). A tag whose value is empty is not set, as in Envoy. */
typedef struct {
    char *tag;
    char *value;  /* the literal, the environment's value, or the header's default */
    char *header; /* request_header: its name, lower-case; NULL otherwise */
} sharp_custom_tag_t;

typedef struct {
    sharp_custom_tag_t *p;
    uint32_t n;
} sharp_custom_tags_t;

static inline void sharp_custom_tags_free(sharp_custom_tags_t *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        free(t->p[i].tag);
        free(t->p[i].value);
        free(t->p[i].header);
    }
    free(t->p);
    t->p = NULL;
    t->n = 0;
}

/* Envoy's featureEnabled(runtime_key, default_value, random) on the
 * thread's runtime snapshot (proxy/runtime.h). */
bool sharp_fraction_enabled(const sharp_runtime_fraction_t *f, uint64_t random);

/* RouteAction.RequestMirrorPolicy (Envoy's shadow policy): a
 * fire-and-forget copy of the request to another cluster. */
typedef struct {
    char *cluster;        /* the shadow cluster, or NULL ... */
    char *cluster_header; /* ... the request header naming it (lower-case) */
    sharp_runtime_fraction_t fraction; /* runtime_fraction, default 100% */
    bool disable_host_suffix;          /* disable_shadow_host_suffix_append */
} sharp_mirror_policy_t;

/* The mirror policies of one level (route, virtual host, route table). */
typedef struct {
    sharp_mirror_policy_t *p;
    uint32_t n;
} sharp_mirror_policies_t;

typedef struct {
    char *scheme;     /* NULL: keep; "https" for https_redirect */
    char *host;       /* NULL: keep */
    uint32_t port;    /* 0: keep */
    char *path;       /* path_redirect, NULL: keep */
    char *prefix_rewrite;
    sharp_re2_t *regex_rewrite; /* regex_rewrite.pattern, NULL: none */
    char *regex_rewrite_sub;    /* regex_rewrite.substitution */
    uint32_t code;    /* 301 (default), 302, 303, 307, 308 */
    bool strip_query;
    /* require_tls's redirect (Envoy's SslRedirector): "https://" and the
     * request's authority and path as they are, port and query included */
    bool to_https_as_is;
} sharp_redirect_t;

/* One entry of upgrade_configs (connection manager or route): an Upgrade
 * header value, compared case-insensitively, and whether it is allowed. */
typedef struct sharp_upgrade {
    char *type;
    bool enabled;
} sharp_upgrade_t;

typedef struct sharp_route {
    char *name;
    /* decorator: the span name of the requests it routes (NULL: none), and
     * whether an egress connection manager passes it on in
     * x-envoy-decorator-operation (propagate, default true) */
    char *decorator_operation;
    bool decorator_propagate;
    /* tracing: its fractions replace the connection manager's (each 100%
     * unless set) */
    bool has_tracing;
    sharp_trace_sampling_t tracing;
    sharp_custom_tags_t tracing_tags; /* tracing.custom_tags: they win over the connection manager's */
    /* match */
    sharp_route_match_kind_t match_kind;
    char *path; /* prefix, exact path, separated prefix, or the regex text */
    size_t path_len;
    sharp_re2_t *path_re; /* SHARP_ROUTE_MATCH_REGEX: whole path (without query) */
    bool case_sensitive; /* default true */
    sharp_header_matcher_t *headers;
    uint32_t nheaders;
    sharp_query_matcher_t *query;
    uint32_t nquery;
    bool match_grpc; /* match.grpc: content-type application/grpc[+...|;...] */
    bool has_runtime_fraction; /* match.runtime_fraction */
    sharp_runtime_fraction_t runtime_fraction;
    /* action */
    sharp_route_action_kind_t action;
    char *cluster; /* single cluster, NULL if weighted */
    sharp_weighted_cluster_t *weighted;
    uint32_t nweighted;
    /* RouteAction.metadata_match's "envoy.lb": the criteria of subset load
     * balancing (upstream/subset.h form), NULL without */
    struct sharp_lbmeta *metadata_match;
    uint64_t total_weight;
    bool weighted_runtime; /* runtime_key_prefix set: weights come from the runtime */
    uint32_t cluster_not_found_code; /* 503 (default) or 404 */
    uint64_t timeout_ms;             /* default 15000; 0 = none */
    /* RouteAction.max_stream_duration set: Envoy's "new timeouts", under
     * which neither timeout nor max_grpc_timeout applies */
    bool has_msd;
    bool has_msd_max;            /* max_stream_duration.max_stream_duration */
    uint64_t msd_max_ms;         /* 0: no limit (not even the HCM's) */
    bool has_grpc_header_max;    /* max_stream_duration.grpc_timeout_header_max */
    uint64_t grpc_header_max_ms; /* 0: grpc-timeout uncapped */
    bool has_grpc_header_offset; /* max_stream_duration.grpc_timeout_header_offset */
    uint64_t grpc_header_offset_ms;
    /* the deprecated max_grpc_timeout and grpc_timeout_offset */
    bool has_max_grpc_timeout;
    uint64_t max_grpc_timeout_ms; /* 0: grpc-timeout uncapped */
    bool has_grpc_timeout_offset;
    uint64_t grpc_timeout_offset_ms;
    bool has_idle_timeout;
    uint64_t idle_timeout_ms;
    char *prefix_rewrite;
    /* regex_rewrite: every match in the path (without query) is replaced
     * by the substitution (RE2::GlobalReplace, \1 for groups) */
    sharp_re2_t *regex_rewrite;
    char *regex_rewrite_sub;
    char *host_rewrite;
    bool auto_host_rewrite;
    bool has_retry_policy;
    sharp_retry_policy_t retry;
    sharp_hash_policy_t *hash_policies; /* RouteAction.hash_policy, in order (http/hash_policy.h) */
    uint32_t nhash_policies;
    uint32_t priority; /* RouteAction.priority: SHARP_PRIORITY_DEFAULT or _HIGH (upstream/cluster.h) */
    sharp_mirror_policies_t mirror_own; /* RouteAction.request_mirror_policies */
    /* The policies that apply: the route's own, else its virtual host's,
     * else the table's (Envoy: a level with policies replaces the outer ones). */
    const sharp_mirror_policies_t *mirror;
    sharp_upgrade_t *upgrades; /* RouteAction.upgrade_configs: overrides the HCM's per type */
    uint32_t nupgrades;
    /* the CONNECT entry of upgrade_configs has a connect_config: the router
     * terminates a CONNECT request (answers 200 once a TCP connection to
     * the host is up) and its payload goes to that connection as is */
    bool connect_terminate;
    /* connect_config.allow_post: a POST is terminated the same way, its
     * body the payload and the connection's bytes the response's body */
    bool connect_allow_post;
    uint32_t direct_status;
    char *direct_body; /* may be NULL */
    size_t direct_body_len;
    sharp_redirect_t redirect;
    sharp_header_ops_t req_ops, resp_ops;
    sharp_per_filter_configs_t per_filter; /* Route.typed_per_filter_config */
    struct sharp_cors_policy *cors;       /* RouteAction.cors (deprecated; http/cors.h), NULL: none */
    /* RouteAction.rate_limits (http/ratelimit_policy.h), NULL: none; with
     * include_vh_rate_limits the rate limit filter adds the virtual host's */
    struct sharp_rate_limits *rate_limits;
    bool include_vh_rate_limits;
    /* Route.metadata's filter_metadata (namespace -> Struct, as a stream's
     * dynamic metadata is kept: http/metadata.h), NULL: none; read by the
     * rate limit metadata action with source ROUTE_ENTRY */
    struct sharp_dynamic_metadata *metadata;
} sharp_route_t;

typedef enum {
    SHARP_TLS_REQUIRE_NONE = 0,
    SHARP_TLS_REQUIRE_EXTERNAL_ONLY = 1,
    SHARP_TLS_REQUIRE_ALL = 2,
} sharp_tls_requirement_t;

typedef struct sharp_vhost {
    char *name;
    char **domains;
    uint32_t ndomains;
    sharp_route_t *routes;
    uint32_t nroutes;
    sharp_header_ops_t req_ops, resp_ops;
    bool has_retry_policy;
    sharp_retry_policy_t retry;
    sharp_mirror_policies_t mirror_own;    /* VirtualHost.request_mirror_policies */
    const sharp_mirror_policies_t *mirror; /* its own, else the route table's */
    bool include_request_attempt_count;    /* x-envoy-attempt-count to the upstream */
    bool include_attempt_count_in_response; /* ... and in the response */
    /* VirtualHost.require_tls: a request whose x-forwarded-proto is not
     * "https" (EXTERNAL_ONLY: and that is not x-envoy-internal) takes
     * tls_redirect, a 301 to its https:// URL */
    sharp_tls_requirement_t require_tls;
    sharp_route_t tls_redirect;
    sharp_per_filter_configs_t per_filter; /* VirtualHost.typed_per_filter_config */
    struct sharp_cors_policy *cors;       /* VirtualHost.cors (deprecated; http/cors.h), NULL: none */
    struct sharp_rate_limits *rate_limits; /* VirtualHost.rate_limits (http/ratelimit_policy.h), NULL: none */
} sharp_vhost_t;

typedef struct sharp_route_table {
    char *name;
    sharp_vhost_t *vhosts;
    uint32_t nvhosts;
    sharp_header_ops_t req_ops, resp_ops;
    char **internal_only_headers;
    uint32_t ninternal_only_headers;
    sharp_mirror_policies_t mirror; /* RouteConfiguration.request_mirror_policies */
    bool ignore_port_in_host_matching;        /* match "host:port" as "host" */
    bool most_specific_header_mutations_wins; /* table, vhost, route, cluster order */
    sharp_per_filter_configs_t per_filter;    /* RouteConfiguration.typed_per_filter_config */
    /* Domain index built by sharp_route_table_build_index: exact names
     * sorted, wildcards longest first. Without it lookups scan every domain. */
    void *domain_index;
} sharp_route_table_t;

/* Finds the virtual host for an authority ("Host" header, may carry a port).
 * Case-insensitive; a wildcard never matches an empty remainder ("*.foo.com"
 * does not match ".foo.com"). The authority is matched as given, port
 * included, unless the table sets ignore_port_in_host_matching: "foo.com:8080"
 * does not match a "foo.com" domain but does match "foo.*" and "*" (Envoy;
 * the HCM's strip_matching_host_port / strip_any_host_port remove the port
 * from the Host header before routing, which is the usual fix).
 * NULL when no virtual host matches. */
const sharp_vhost_t *sharp_route_table_find_vhost(const sharp_route_table_t *t, sharp_str_t authority);
/* First route of the vhost matching the request headers (:path, :method and
 * the rest); routes with a runtime_fraction are evaluated with random 0.
 * runtime_fraction reads its runtime_key from the thread's runtime
 * snapshot (runtime.h). */
const sharp_route_t *sharp_vhost_match(const sharp_vhost_t *vh, const sharp_headers_t *req);
/* Same, with the per-request random value runtime_fraction uses. */
const sharp_route_t *sharp_vhost_match_random(const sharp_vhost_t *vh, const sharp_headers_t *req,
                                              uint64_t random);
/* Envoy's createUpgradeFilterChain: whether an upgrade of `type` may
 * proceed. The route's entry for the type decides when it has one (false
 * refuses, true allows even without a connection manager entry); otherwise
 * the connection manager must list the type as enabled. Case-insensitive. */
bool sharp_upgrade_allowed(const sharp_upgrade_t *hcm, uint32_t nhcm, const sharp_route_t *r, sharp_str_t type);
/* Envoy's FilterUtility::finalTimeout, its route part: the route timeout,
 * or for a gRPC request on a route with max_grpc_timeout the request's
 * grpc-timeout (`has_grpc` and `grpc_ms`) less grpc_timeout_offset (only
 * while that leaves some time), capped by max_grpc_timeout unless it is 0;
 * no timeout (0) under max_stream_duration. Sets *grpc_rewrite when the
 * upstream request's grpc-timeout is to carry the timeout the router
 * applies (max_grpc_timeout configured). */
uint64_t sharp_route_timeout_ms(const sharp_route_t *r, bool grpc, bool has_grpc, uint64_t grpc_ms,
                                bool *grpc_rewrite);

/* Envoy's ActiveStream::refreshDurationTimeout for a route: the stream's
 * duration limit once the route is known. SHARP_MSD_HCM keeps the
 * connection manager's max_stream_duration, SHARP_MSD_NONE disables it,
 * SHARP_MSD_SET replaces it with *ms (counted from the stream's start).
 * With grpc_timeout_header_max set and a grpc-timeout in the request, the
 * limit is that grpc-timeout capped by the max (0: no cap) less the
 * offset. */
typedef enum { SHARP_MSD_HCM, SHARP_MSD_NONE, SHARP_MSD_SET } sharp_msd_t;
sharp_msd_t sharp_route_stream_duration(const sharp_route_t *r, bool has_grpc, uint64_t grpc_ms, uint64_t *ms);

/* Picks the cluster for a route; for weighted clusters `random` chooses,
 * with each weight read from the thread's runtime when the route has a
 * runtime_key_prefix (NULL when those weights add up to 0 or past 2^32,
 * as Envoy picks no cluster then). */
const char *sharp_route_pick_cluster(const sharp_route_t *r, uint64_t random,
                                     const sharp_weighted_cluster_t **picked);
bool sharp_string_matcher_match(const sharp_string_matcher_t *m, sharp_str_t value);
/* One HeaderMatcher against a header map (values of a repeated header are
 * joined with "," first, as Envoy does). */
bool sharp_header_matcher_match(const sharp_header_matcher_t *m, const sharp_headers_t *h);
/* Applies header operations (remove first, then add with the append action). */
void sharp_header_ops_apply(const sharp_header_ops_t *ops, sharp_headers_t *h);
/* Same, expanding %VAR% values from the stream (NULL: every variable empty). */
void sharp_header_ops_apply_si(const sharp_header_ops_t *ops, sharp_headers_t *h,
                               const struct sharp_stream_info *si);
/* All request (or response) header mutations for a routed request, in
 * Envoy's order: weighted cluster, route, virtual host, table, so the outer
 * level has the last word; most_specific_header_mutations_wins reverses it.
 * Any of vh, r, wc may be NULL. */
void sharp_route_apply_request_headers(const sharp_route_table_t *t, const sharp_vhost_t *vh,
                                       const sharp_route_t *r, const sharp_weighted_cluster_t *wc,
                                       sharp_headers_t *h, const struct sharp_stream_info *si);
void sharp_route_apply_response_headers(const sharp_route_table_t *t, const sharp_vhost_t *vh,
                                        const sharp_route_t *r, const sharp_weighted_cluster_t *wc,
                                        sharp_headers_t *h, const struct sharp_stream_info *si);
void sharp_route_table_free(sharp_route_table_t *t);

/* Per-route filter configs (typed_per_filter_config), searched from the most
 * specific level: the weighted cluster, the route, its virtual host, the
 * table (any of wc, r, vh may be NULL).
 * sharp_route_filter_config is Envoy's mostSpecificPerFilterConfig: the
 * first level holding a config for `name` made by `factory` (a level whose
 * entry has no config, or another filter's, is passed over as Envoy's typed
 * lookup does). sharp_route_filter_disabled is Envoy's filterDisabled: the
 * first level with an entry for `name` decides, 1 disabled, 0 enabled, -1
 * when no level names the filter (its HttpFilter.disabled then applies). */
const void *sharp_route_filter_config(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                      const sharp_weighted_cluster_t *wc, const char *name,
                                      const struct sharp_filter_factory *factory);
/* Every level's config for `name` made by `factory`, the most specific
 * first, at most `cap` of them (Envoy's perFilterConfigs, reversed): their
 * number. */
uint32_t sharp_route_filter_configs(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                    const sharp_weighted_cluster_t *wc, const char *name,
                                    const struct sharp_filter_factory *factory, const void **out, uint32_t cap);
/* Whether any of the levels has a typed_per_filter_config entry (most
 * routes have none: the stream skips the per-filter lookups). */
bool sharp_route_has_filter_configs(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                    const sharp_weighted_cluster_t *wc);
int sharp_route_filter_disabled(const sharp_route_table_t *t, const sharp_vhost_t *vh, const sharp_route_t *r,
                                const sharp_weighted_cluster_t *wc, const char *name);
/* Frees a level's per-filter configs (with their factories' destructors). */
void sharp_per_filter_configs_free(sharp_per_filter_configs_t *c);

/* ---- building (config translation and tests) ---- */

/* Initializes a string matcher (copies `value`; compiles it for REGEX as a
 * RegexMatcher without google_re2). */
int sharp_string_matcher_init(sharp_string_matcher_t *m, sharp_string_match_kind_t kind,
                              const char *value, size_t len, bool ignore_case, char *err,
                              size_t errlen);
/* A SHARP_SM_REGEX matcher from a RegexMatcher's regex (sharp_regex_compile:
 * `opts` NULL when google_re2 is unset); `err` gets the compile error. */
int sharp_string_matcher_init_regex(sharp_string_matcher_t *m, const char *pattern,
                                    const sharp_regex_opts_t *opts, char *err, size_t errlen);
/* regex_rewrite (route or redirect), as Envoy applies it: the part of `path`
 * before any '?' or '#' (its length goes to *pathlen) with every match of
 * `re` replaced by `sub` (RE2::GlobalReplace). Returns that new part (the
 * caller frees it and appends path[*pathlen..], the query, when it keeps
 * it), or NULL when memory ran out. */
char *sharp_regex_rewrite_path(const sharp_re2_t *re, const char *sub, sharp_str_t path,
                               size_t *pathlen, size_t *outlen);
void sharp_string_matcher_free(sharp_string_matcher_t *m);
/* Frees what a sharp_header_ops_t owns (for ops built outside a route table). */
void sharp_header_ops_free(sharp_header_ops_t *ops);
/* Initializes a header operation: lower-cases the name, compiles the value
 * as a substitution format when it contains '%' ("%%" is a literal '%'). */
int sharp_header_op_init(sharp_header_op_t *op, const char *name, const char *value,
                         sharp_header_append_t action, bool keep_empty_value, char *err,
                         size_t errlen);
/* Builds the domain index. Errors, as in Envoy: a domain repeated (in one
 * virtual host or across them, compared case-insensitively) and more than
 * one "*" domain; the message starts with the offending field's path,
 * "virtual_hosts[1].domains[0]: Only unique values for domains ...". */
int sharp_route_table_build_index(sharp_route_table_t *t, char *err, size_t errlen);

#endif
