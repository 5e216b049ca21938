/* route.h: the runtime route table built from an Envoy RouteConfiguration.
 * Immutable once built; shared by all workers through the config snapshot.
 * Matching follows Envoy: virtual host by :authority (exact, then suffix
 * wildcards longest first, then prefix wildcards longest first, then "*"),
 * then the first route whose match accepts the request. */
#ifndef SHARP_HTTP_ROUTE_H
#define SHARP_HTTP_ROUTE_H

#include "common.h"
#include "http/headers.h"

#include <regex.h>

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
    bool has_regex;
    regex_t re; /* whole-value match for SHARP_SM_REGEX */
} sharp_string_matcher_t;

typedef enum {
    SHARP_HM_STRING, /* exact/prefix/suffix/contains/safe_regex/string_match */
    SHARP_HM_PRESENT,
    SHARP_HM_RANGE,
} sharp_header_match_kind_t;

typedef struct {
    char *name; /* lower-case */
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
    char *name;
    char *value; /* literal; Envoy's %VAR% substitutions are expanded by sharp_header_ops_apply */
    sharp_header_append_t action;
    bool keep_empty_value;
} sharp_header_op_t;

/* request/response headers to add and remove at one level (route, vhost or table). */
typedef struct {
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
} sharp_route_match_kind_t;

typedef enum {
    SHARP_ROUTE_ACTION_ROUTE,
    SHARP_ROUTE_ACTION_REDIRECT,
    SHARP_ROUTE_ACTION_DIRECT,
} sharp_route_action_kind_t;

typedef struct {
    char *name;
    uint32_t weight;
    sharp_header_ops_t req_ops, resp_ops;
} sharp_weighted_cluster_t;

typedef struct {
    char *retry_on; /* comma-separated Envoy retry conditions; enforced by the router later */
    uint32_t num_retries;  /* default 1 when a policy exists */
    uint64_t per_try_timeout_ms;
    uint32_t *retriable_status_codes;
    uint32_t nretriable_status_codes;
    uint64_t backoff_base_ms, backoff_max_ms;
} sharp_retry_policy_t;

typedef struct {
    char *scheme;     /* NULL: keep; "https" for https_redirect */
    char *host;       /* NULL: keep */
    uint32_t port;    /* 0: keep */
    char *path;       /* path_redirect, NULL: keep */
    char *prefix_rewrite;
    uint32_t code;    /* 301 (default), 302, 303, 307, 308 */
    bool strip_query;
} sharp_redirect_t;

typedef struct sharp_route {
    char *name;
    /* match */
    sharp_route_match_kind_t match_kind;
    char *path; /* prefix or exact path or separated prefix */
    size_t path_len;
    regex_t path_re; /* SHARP_ROUTE_MATCH_REGEX: whole path (without query) */
    bool case_sensitive; /* default true */
    sharp_header_matcher_t *headers;
    uint32_t nheaders;
    sharp_query_matcher_t *query;
    uint32_t nquery;
    /* action */
    sharp_route_action_kind_t action;
    char *cluster; /* single cluster, NULL if weighted */
    sharp_weighted_cluster_t *weighted;
    uint32_t nweighted;
    uint64_t total_weight;
    uint32_t cluster_not_found_code; /* 503 (default) or 404 */
    uint64_t timeout_ms;             /* default 15000; 0 = none */
    bool has_idle_timeout;
    uint64_t idle_timeout_ms;
    char *prefix_rewrite;
    char *host_rewrite;
    bool auto_host_rewrite;
    bool has_retry_policy;
    sharp_retry_policy_t retry;
    uint32_t direct_status;
    char *direct_body; /* may be NULL */
    size_t direct_body_len;
    sharp_redirect_t redirect;
    sharp_header_ops_t req_ops, resp_ops;
} sharp_route_t;

typedef struct sharp_vhost {
    char *name;
    char **domains;
    uint32_t ndomains;
    sharp_route_t *routes;
    uint32_t nroutes;
    sharp_header_ops_t req_ops, resp_ops;
    bool has_retry_policy;
    sharp_retry_policy_t retry;
} sharp_vhost_t;

typedef struct sharp_route_table {
    char *name;
    sharp_vhost_t *vhosts;
    uint32_t nvhosts;
    sharp_header_ops_t req_ops, resp_ops;
    char **internal_only_headers;
    uint32_t ninternal_only_headers;
    /* Domain index built at creation: exact names hashed or sorted, wildcards by length. */
    void *domain_index;
} sharp_route_table_t;

/* Finds the virtual host for an authority ("Host" header, may carry a port).
 * NULL when no virtual host matches. */
const sharp_vhost_t *sharp_route_table_find_vhost(const sharp_route_table_t *t, sharp_str_t authority);
/* First route of the vhost matching the request headers (:path, :method and
 * the rest). `random` selects nothing here but is kept for runtime_fraction. */
const sharp_route_t *sharp_vhost_match(const sharp_vhost_t *vh, const sharp_headers_t *req);
/* Picks the cluster for a route; for weighted clusters `random` chooses. */
const char *sharp_route_pick_cluster(const sharp_route_t *r, uint64_t random,
                                     const sharp_weighted_cluster_t **picked);
bool sharp_string_matcher_match(const sharp_string_matcher_t *m, sharp_str_t value);
/* Applies header operations (remove first, then add with the append action). */
void sharp_header_ops_apply(const sharp_header_ops_t *ops, sharp_headers_t *h);
void sharp_route_table_free(sharp_route_table_t *t);

#endif
