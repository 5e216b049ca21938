/* route_config.c: RouteConfiguration (protobuf-c) -> sharp_route_table_t.
 *
 * Every error names the field path inside the RouteConfiguration. Fields
 * that would change which route or cluster a request gets but that SHARP
 * does not implement are rejected rather than ignored (a silently different
 * routing decision is worse than a config error); fields that only tune
 * features SHARP lacks (metadata) are accepted and ignored. Hash policies
 * are read for shuffle-shard clusters (http/hash_policy.h); other balancers
 * ignore them, as Envoy's do. Rate limits are read for the rate limit
 * filter (http/ratelimit_policy.h). */
#include "config/route_config.h"
#include "runtime.h"
#include "config/cors_config.h"
#include "config/mapper.h"
#include "http/access_log_emit.h"
#include "http/filter.h"
#include "http/metadata.h"
#include "http/ratelimit_policy.h"
#include "log.h"
#include "upstream/subset.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Envoy__Config__Route__V3__RouteConfiguration rc_pb_t;
typedef Envoy__Config__Route__V3__VirtualHost vh_pb_t;
typedef Envoy__Config__Route__V3__Route route_pb_t;
typedef Envoy__Config__Route__V3__RouteMatch match_pb_t;
typedef Envoy__Config__Route__V3__RouteAction action_pb_t;
typedef Envoy__Config__Route__V3__RetryPolicy retry_pb_t;
typedef Envoy__Config__Route__V3__HeaderMatcher hm_pb_t;
typedef Envoy__Config__Route__V3__QueryParameterMatcher qm_pb_t;
typedef Envoy__Type__Matcher__V3__StringMatcher sm_pb_t;
typedef Envoy__Config__Core__V3__HeaderValueOption hvo_pb_t;
typedef Envoy__Config__Route__V3__RouteAction__RequestMirrorPolicy mirror_pb_t;

#define DEFAULT_TIMEOUT_MS 15000
#define DEFAULT_MAX_DIRECT_BODY 4096

typedef struct {
    char *err;
    size_t errlen;
    uint32_t max_body; /* max_direct_response_body_size_bytes */
} ctx_t;

static int fail(ctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, const char *path, const char *fmt, ...)
{
    if (!c->err || !c->errlen) return -1;
    int n = snprintf(c->err, c->errlen, "%s: ", path);
    if (n < 0 || (size_t)n >= c->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* path + "." + formatted suffix, or just the suffix at the top level. */
static const char *sub(char *buf, size_t cap, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const char *sub(char *buf, size_t cap, const char *path, const char *fmt, ...)
{
    int n = path[0] ? snprintf(buf, cap, "%s.", path) : 0;
    if (n < 0 || (size_t)n >= cap) return buf;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    return buf;
}

static uint64_t duration_ms(const Google__Protobuf__Duration *d)
{
    if (!d || d->seconds < 0 || d->nanos < 0) return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

static char *lower_dup(const char *s)
{
    char *d = sharp_strdup(s);
    for (char *p = d; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return d;
}

/* ---- matchers ---- */

/* A RegexMatcher: Envoy's google_re2 engine (the only one), with its
 * deprecated max_program_size honoured. Errors name "<path>.regex". */
static int regex_from(ctx_t *c, const char *path, const Envoy__Type__Matcher__V3__RegexMatcher *rx,
                      sharp_string_matcher_t *out)
{
    char p[512], msg[1024] = "";
    snprintf(p, sizeof p, "%s.regex", path);
    if (!rx || !rx->regex[0]) return fail(c, p, "a regex is required");
    sharp_regex_opts_t opts = {0};
    if (rx->engine_type_case == ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__ENGINE_TYPE_GOOGLE_RE2 &&
        rx->google_re2 && rx->google_re2->max_program_size) {
        opts.has_max_program_size = true;
        opts.max_program_size = rx->google_re2->max_program_size->value;
    }
    if (sharp_string_matcher_init_regex(out, rx->regex, &opts, msg, sizeof msg) < 0)
        return fail(c, p, "%s", msg);
    return 0;
}

/* RegexMatchAndSubstitute (regex_rewrite): the pattern as any RegexMatcher,
 * and a substitution RE2 can apply with it (\0..\9 of groups the pattern
 * has, \\ for a backslash). */
static int rewrite_from(ctx_t *c, const char *path,
                        const Envoy__Type__Matcher__V3__RegexMatchAndSubstitute *rw, sharp_re2_t **re,
                        char **subst)
{
    char p[512], msg[256] = "";
    sharp_string_matcher_t sm = {0};
    if (regex_from(c, sub(p, sizeof p, path, "pattern"), rw->pattern, &sm) < 0) return -1;
    if (sharp_re2_check_rewrite(sm.re, rw->substitution, msg, sizeof msg) < 0) {
        sharp_string_matcher_free(&sm);
        return fail(c, sub(p, sizeof p, path, "substitution"), "invalid substitution '%s': %s",
                    rw->substitution, msg);
    }
    *re = sm.re; /* the matcher's regex moves into the rewrite */
    sm.re = NULL;
    sharp_string_matcher_free(&sm);
    *subst = sharp_strdup(rw->substitution);
    return 0;
}

static int string_matcher_from(ctx_t *c, const char *path, const sm_pb_t *pb,
                               sharp_string_matcher_t *out)
{
    char p[512];
    const char *v = NULL;
    sharp_string_match_kind_t kind;
    if (!pb) return fail(c, path, "a string matcher is required");
    switch (pb->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        kind = SHARP_SM_EXACT, v = pb->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        kind = SHARP_SM_PREFIX, v = pb->prefix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        kind = SHARP_SM_SUFFIX, v = pb->suffix;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        kind = SHARP_SM_CONTAINS, v = pb->contains;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        snprintf(p, sizeof p, "%s.safe_regex", path);
        return regex_from(c, p, pb->safe_regex, out);
    default:
        return fail(c, path, "one of exact, prefix, suffix, contains, safe_regex is required");
    }
    if (kind != SHARP_SM_EXACT && !v[0]) {
        static const char *const names[] = {"exact", "prefix", "suffix", "contains"};
        return fail(c, path, "%s must not be empty", names[kind]);
    }
    return sharp_string_matcher_init(out, kind, v, strlen(v), pb->ignore_case, NULL, 0);
}

static int header_matcher_from(ctx_t *c, const char *path, const hm_pb_t *pb,
                               sharp_header_matcher_t *m)
{
    char p[512];
    if (!pb->name[0]) {
        snprintf(p, sizeof p, "%s.name", path);
        return fail(c, p, "a header name is required");
    }
    m->name = lower_dup(pb->name);
    m->name_len = strlen(m->name);
    m->invert = pb->invert_match;
    m->treat_missing_as_empty = pb->treat_missing_header_as_empty;
    m->kind = SHARP_HM_STRING;
    const char *v = NULL;
    sharp_string_match_kind_t kind = SHARP_SM_EXACT;
    switch (pb->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        if (!pb->exact_match[0]) { /* Envoy: an empty exact_match accepts any value */
            m->kind = SHARP_HM_PRESENT;
            m->present = true;
            return 0;
        }
        v = pb->exact_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        kind = SHARP_SM_PREFIX, v = pb->prefix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        kind = SHARP_SM_SUFFIX, v = pb->suffix_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        kind = SHARP_SM_CONTAINS, v = pb->contains_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        snprintf(p, sizeof p, "%s.safe_regex_match", path);
        return regex_from(c, p, pb->safe_regex_match, &m->sm);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        snprintf(p, sizeof p, "%s.string_match", path);
        return string_matcher_from(c, p, pb->string_match, &m->sm);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        m->kind = SHARP_HM_RANGE;
        if (pb->range_match) {
            m->range_start = pb->range_match->start;
            m->range_end = pb->range_match->end;
        }
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        m->kind = SHARP_HM_PRESENT;
        m->present = pb->present_match;
        return 0;
    default: /* only a name: the header must be present */
        m->kind = SHARP_HM_PRESENT;
        m->present = true;
        return 0;
    }
    return sharp_string_matcher_init(&m->sm, kind, v, strlen(v), false, NULL, 0);
}

static int query_matcher_from(ctx_t *c, const char *path, const qm_pb_t *pb,
                              sharp_query_matcher_t *q)
{
    char p[512];
    if (!pb->name[0]) {
        snprintf(p, sizeof p, "%s.name", path);
        return fail(c, p, "a query parameter name is required");
    }
    q->name = sharp_strdup(pb->name);
    if (pb->query_parameter_match_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
        snprintf(p, sizeof p, "%s.string_match", path);
        return string_matcher_from(c, p, pb->string_match, &q->sm);
    }
    q->present_match = true; /* present_match (either value) or nothing: presence only */
    return 0;
}

/* ---- header mutations ---- */

static int ops_from(ctx_t *c, const char *path, const char *add_field, hvo_pb_t *const *add,
                    size_t nadd, const char *remove_field, char *const *remove, size_t nremove,
                    sharp_header_ops_t *ops)
{
    char p[512], msg[256];
    ops->add = sharp_calloc(nadd ? nadd : 1, sizeof *ops->add);
    for (size_t i = 0; i < nadd; i++) {
        sub(p, sizeof p, path, "%s[%zu]", add_field, i);
        const hvo_pb_t *o = add[i];
        if (!o->header || !o->header->key[0]) return fail(c, p, "header.key is required");
        const char *key = o->header->key;
        if (key[0] == ':' || strcasecmp(key, "host") == 0)
            return fail(c, p, ":-prefixed or host headers may not be modified");
        sharp_header_append_t action = (sharp_header_append_t)o->append_action;
        if (o->append) {
            if (o->append_action !=
                ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD)
                return fail(c, p, "Both append and append_action are set and it's not allowed");
            action =
                o->append->value ? SHARP_APPEND_IF_EXISTS_OR_ADD : SHARP_OVERWRITE_IF_EXISTS_OR_ADD;
        }
        char *raw = NULL;
        const char *value = o->header->value;
        if (!value[0] && o->header->raw_value.len) {
            raw = sharp_strndup((const char *)o->header->raw_value.data, o->header->raw_value.len);
            value = raw;
        }
        int rc = sharp_header_op_init(&ops->add[ops->nadd], key, value, action, o->keep_empty_value,
                                      msg, sizeof msg);
        free(raw);
        if (rc < 0) return fail(c, p, "header.value: %s", msg);
        ops->nadd++;
    }
    ops->remove = sharp_calloc(nremove ? nremove : 1, sizeof *ops->remove);
    for (size_t i = 0; i < nremove; i++) {
        sub(p, sizeof p, path, "%s[%zu]", remove_field, i);
        if (!remove[i][0]) return fail(c, p, "a header name is required");
        if (remove[i][0] == ':' || strcasecmp(remove[i], "host") == 0)
            return fail(c, p, ":-prefixed or host headers may not be removed");
        ops->remove[ops->nremove++] = lower_dup(remove[i]);
    }
    return 0;
}

#define OPS(c, path, msg, dir, ops)                                                                \
    ops_from(c, path, #dir "_headers_to_add", (msg)->dir##_headers_to_add,                         \
             (msg)->n_##dir##_headers_to_add, #dir "_headers_to_remove",                           \
             (msg)->dir##_headers_to_remove, (msg)->n_##dir##_headers_to_remove, ops)

/* ---- retry policy ---- */

static int retry_from(ctx_t *c, const char *path, const retry_pb_t *pb, sharp_retry_policy_t *rp)
{
    char p[512];
    rp->retry_on = sharp_strdup(pb->retry_on);
    /* Envoy parses retry_on with both the HTTP and the gRPC parsers */
    rp->retry_on_bits = sharp_retry_on_parse(pb->retry_on, strlen(pb->retry_on)) |
                        sharp_retry_grpc_on_parse(pb->retry_on, strlen(pb->retry_on));
    rp->num_retries = pb->num_retries ? pb->num_retries->value : 1;
    rp->host_selection_max_attempts = 1;
    if (pb->host_selection_retry_max_attempts > 1)
        rp->host_selection_max_attempts = (uint32_t)SHARP_MIN(pb->host_selection_retry_max_attempts, 16);
    for (size_t i = 0; i < pb->n_retry_host_predicate; i++) {
        const char *n = pb->retry_host_predicate[i]->name;
        /* A typed_config has passed the support table, which implements
         * only PreviousHostsPredicate among host predicates. */
        if (pb->retry_host_predicate[i]->typed_config || strcmp(n, "envoy.retry_host_predicates.previous_hosts") == 0) {
            rp->previous_hosts = true;
            continue;
        }
        return fail(c, sub(p, sizeof p, path, "retry_host_predicate[%zu].name", i),
                    "unsupported retry host predicate '%s' (supported: envoy.retry_host_predicates.previous_hosts)", n);
    }
    rp->retriable_headers = sharp_calloc(pb->n_retriable_headers + 1, sizeof *rp->retriable_headers);
    for (size_t i = 0; i < pb->n_retriable_headers; i++) {
        if (header_matcher_from(c, sub(p, sizeof p, path, "retriable_headers[%zu]", i), pb->retriable_headers[i],
                                &rp->retriable_headers[rp->nretriable_headers]) < 0)
            return -1;
        rp->nretriable_headers++;
    }
    rp->retriable_request_headers =
        sharp_calloc(pb->n_retriable_request_headers + 1, sizeof *rp->retriable_request_headers);
    for (size_t i = 0; i < pb->n_retriable_request_headers; i++) {
        if (header_matcher_from(c, sub(p, sizeof p, path, "retriable_request_headers[%zu]", i),
                                pb->retriable_request_headers[i],
                                &rp->retriable_request_headers[rp->nretriable_request_headers]) < 0)
            return -1;
        rp->nretriable_request_headers++;
    }
    rp->per_try_timeout_ms = duration_ms(pb->per_try_timeout);
    rp->retriable_status_codes =
        sharp_calloc(pb->n_retriable_status_codes ? pb->n_retriable_status_codes : 1,
                     sizeof *rp->retriable_status_codes);
    for (size_t i = 0; i < pb->n_retriable_status_codes; i++)
        rp->retriable_status_codes[rp->nretriable_status_codes++] = pb->retriable_status_codes[i];
    rp->backoff_base_ms = 25;
    rp->backoff_from_runtime = !pb->retry_back_off;
    if (pb->retry_back_off) {
        snprintf(p, sizeof p, "%s.retry_back_off", path);
        if (!pb->retry_back_off->base_interval ||
            duration_ms(pb->retry_back_off->base_interval) < 1)
            return fail(c, p, "base_interval is required and must be at least 1ms");
        rp->backoff_base_ms = duration_ms(pb->retry_back_off->base_interval);
    }
    rp->backoff_max_ms = rp->backoff_base_ms * 10;
    if (pb->retry_back_off && pb->retry_back_off->max_interval) {
        rp->backoff_max_ms = duration_ms(pb->retry_back_off->max_interval);
        if (rp->backoff_max_ms < rp->backoff_base_ms)
            return fail(c, p, "max_interval must be greater than or equal to the base_interval");
    }
    return 0;
}

/* ---- routes ---- */

/* A RuntimeFractionalPercent, read the same way wherever Envoy accepts one
 * (route match, request mirroring), so runtime support covers them all. */
static int runtime_fraction_from(ctx_t *c, const char *path,
                                 const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf,
                                 sharp_runtime_fraction_t *out)
{
    char p[512];
    const Envoy__Type__V3__FractionalPercent *fp = rf->default_value;
    if (!fp) return fail(c, sub(p, sizeof p, path, "default_value"), "required");
    out->denominator = sharp_fractional_denominator(fp->denominator);
    if (!out->denominator) return fail(c, sub(p, sizeof p, path, "default_value.denominator"), "unknown");
    out->numerator = fp->numerator;
    if (rf->runtime_key && rf->runtime_key[0]) out->key = sharp_strdup(rf->runtime_key);
    return 0;
}

/* request_mirror_policies of a route, virtual host or route table, with
 * Envoy's checks (ShadowPolicyImpl): exactly one of cluster and
 * cluster_header; without runtime_fraction every request is mirrored.
 * Whether a named cluster exists is checked by the bootstrap, which knows
 * the clusters. */
static int mirror_from(ctx_t *c, const char *path, mirror_pb_t *const *pbs, size_t n,
                       sharp_mirror_policies_t *out)
{
    char p[512];
    if (!n) return 0;
    out->p = sharp_calloc(n, sizeof *out->p);
    for (size_t i = 0; i < n; i++) {
        const mirror_pb_t *pb = pbs[i];
        sharp_mirror_policy_t *m = &out->p[out->n++];
        sub(p, sizeof p, path, "request_mirror_policies[%zu]", i);
        if (pb->cluster[0] && pb->cluster_header[0])
            return fail(c, p, "Only one of cluster '%s' or cluster_header '%s' in request mirror policy can be specified",
                        pb->cluster, pb->cluster_header);
        if (!pb->cluster[0] && !pb->cluster_header[0])
            return fail(c, p, "Exactly one of cluster or cluster_header in request mirror policy need to be specified");
        if (strpbrk(pb->cluster_header, "\r\n")) {
            char hp[600];
            snprintf(hp, sizeof hp, "%s.cluster_header", p);
            return fail(c, hp, "not a valid HTTP header name (it must not contain CR or LF)");
        }
        if (pb->cluster[0]) m->cluster = sharp_strdup(pb->cluster);
        else m->cluster_header = lower_dup(pb->cluster_header);
        m->fraction = (sharp_runtime_fraction_t){.numerator = 100, .denominator = 100};
        if (pb->runtime_fraction) {
            char fp[600];
            snprintf(fp, sizeof fp, "%s.runtime_fraction", p);
            if (runtime_fraction_from(c, fp, pb->runtime_fraction, &m->fraction) < 0) return -1;
        }
        m->disable_host_suffix = pb->disable_shadow_host_suffix_append;
    }
    return 0;
}

static int match_from(ctx_t *c, const char *path, const match_pb_t *m, sharp_route_t *r)
{
    char p[512];
    if (!m) return fail(c, path, "a match is required");
    r->case_sensitive = m->case_sensitive ? m->case_sensitive->value : true;
    const char *v = NULL;
    switch (m->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        r->match_kind = SHARP_ROUTE_MATCH_PREFIX, v = m->prefix;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        r->match_kind = SHARP_ROUTE_MATCH_PATH, v = m->path;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX:
        r->match_kind = SHARP_ROUTE_MATCH_PATH_SEPARATED_PREFIX, v = m->path_separated_prefix;
        sub(p, sizeof p, path, "path_separated_prefix");
        if (!v[0] || strpbrk(v, "?#") || v[strlen(v) - 1] == '/')
            return fail(c, p, "must be non-empty, without '?' or '#', and not end with '/'");
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX: {
        r->match_kind = SHARP_ROUTE_MATCH_REGEX;
        sharp_string_matcher_t sm = {0};
        if (regex_from(c, sub(p, sizeof p, path, "safe_regex"), m->safe_regex, &sm) < 0) return -1;
        r->path_re = sm.re; /* the matcher's regex and text move into the route */
        r->path = sm.value;
        r->path_len = sm.len;
        break;
    }
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER:
        /* Envoy's ConnectRouteEntryImpl: CONNECT requests only, whatever
         * their path (an HTTP/1.1 or HTTP/2 CONNECT has none) */
        r->match_kind = SHARP_ROUTE_MATCH_CONNECT;
        break;
    default:
        return fail(c, path, "one of prefix, path, safe_regex, path_separated_prefix, connect_matcher is required");
    }
    if (v) {
        r->path = sharp_strdup(v);
        r->path_len = strlen(v);
    }
    r->match_grpc = m->grpc != NULL;
    if (m->runtime_fraction) {
        if (runtime_fraction_from(c, sub(p, sizeof p, path, "runtime_fraction"), m->runtime_fraction,
                                  &r->runtime_fraction) < 0)
            return -1;
        r->has_runtime_fraction = true;
    }
    r->headers = sharp_calloc(m->n_headers + 1, sizeof *r->headers);
    for (size_t i = 0; i < m->n_headers; i++) {
        r->nheaders++;
        if (header_matcher_from(c, sub(p, sizeof p, path, "headers[%zu]", i), m->headers[i],
                                &r->headers[i]) < 0)
            return -1;
    }
    r->query = sharp_calloc(m->n_query_parameters + 1, sizeof *r->query);
    for (size_t i = 0; i < m->n_query_parameters; i++) {
        r->nquery++;
        if (query_matcher_from(c, sub(p, sizeof p, path, "query_parameters[%zu]", i),
                               m->query_parameters[i], &r->query[i]) < 0)
            return -1;
    }
    return 0;
}

/* ---- typed_per_filter_config (Envoy's PerFilterConfigs) ---- */

#define FILTER_CONFIG_TYPE "envoy.config.route.v3.FilterConfig"

/* The type name of an Any's type URL (after its last '/'). */
static const char *type_name(const char *url)
{
    const char *s = strrchr(url, '/');
    return s ? s + 1 : url;
}

/* Envoy's createRouteSpecificFilterConfig: the filter factory is found by
 * the Any's type (the map key is not looked up: a route table may serve
 * several connection managers), and must take a per-route config of that
 * type. An optional one (FilterConfig.is_optional) that no filter takes
 * enables the filter without a config, as Envoy does. */
static int route_filter_config(ctx_t *c, const char *path, const char *name, const Google__Protobuf__Any *any,
                               bool is_optional, sharp_per_filter_t *e)
{
    bool is_route = false;
    const sharp_filter_factory_t *fac = sharp_filter_find_for_route_type(any->type_url, strlen(any->type_url), &is_route);
    if (!fac || !fac->create_route_config) {
        if (is_optional) {
            sharp_log_warn("%s: the filter %s takes no virtual host or route specific configuration of type '%s' "
                           "and is optional: enabled without one", path, name, type_name(any->type_url));
            return 0;
        }
        if (!fac)
            return fail(c, path, "Didn't find a registered implementation for '%s' with type URL: '%s'", name,
                        type_name(any->type_url));
        return fail(c, path, "The filter %s doesn't support virtual host or route specific configurations", name);
    }
    if (!is_route)
        return fail(c, path, "Unable to unpack as %s: the per-route config of %s is not its typed_config",
                    type_name(fac->route_type_url), fac->name);
    sharp_config_error_t err = {{0}};
    ProtobufCMessage *msg = sharp_any_unpack(&any->base, fac->route_config_desc, &err);
    if (!msg) return fail(c, path, "%s", err.msg);
    char ferr[512] = "";
    void *cfg = fac->create_route_config(msg, ferr, sizeof ferr);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (!cfg) return fail(c, path, "%s", ferr[0] ? ferr : "invalid per-route filter config");
    e->factory = fac;
    e->config = cfg;
    return 0;
}

/* One map entry: a filter's own per-route config, or a FilterConfig that
 * disables the filter, enables it (an empty config) or wraps its config. */
static int per_filter_entry(ctx_t *c, const char *path, const char *key, const Google__Protobuf__Any *any,
                            sharp_per_filter_configs_t *out)
{
    char p[512];
    snprintf(p, sizeof p, "%s[\"%s\"]", path, key);
    sharp_per_filter_t *e = &out->v[out->n++];
    e->name = sharp_strdup(key);
    if (!any || !any->type_url || !any->type_url[0])
        return fail(c, p, "Empty route/virtual host per filter configuration for %s filter", key);
    if (strcmp(type_name(any->type_url), FILTER_CONFIG_TYPE) != 0)
        return route_filter_config(c, p, key, any, false, e);
    sharp_config_error_t err = {{0}};
    Envoy__Config__Route__V3__FilterConfig *fc = (Envoy__Config__Route__V3__FilterConfig *)sharp_any_unpack(
        &any->base, &envoy__config__route__v3__filter_config__descriptor, &err);
    if (!fc) return fail(c, p, "%s", err.msg);
    int rc = 0;
    if (fc->disabled) {
        /* disabled explicitly: the config, if any, is not used */
        e->disabled = true;
    } else if (!fc->config) {
        rc = fail(c, p, "Empty route/virtual host per filter configuration for %s filter", key);
    } else if (fc->config->type_url && fc->config->type_url[0]) {
        char cp[600];
        snprintf(cp, sizeof cp, "%s.config", p);
        rc = route_filter_config(c, cp, key, fc->config, fc->is_optional, e);
    } /* else an empty config: the filter is enabled here, without a config */
    protobuf_c_message_free_unpacked(&fc->base, NULL);
    return rc;
}

/* A typed_per_filter_config map at any level: the entry types protobuf-c
 * generates differ by level but are all {base, key, value}. */
typedef Envoy__Config__Route__V3__RouteConfiguration__TypedPerFilterConfigEntry pfc_entry_t;
#define SAME_ENTRY(T)                                                                                  \
    _Static_assert(sizeof(T) == sizeof(pfc_entry_t) && offsetof(T, key) == offsetof(pfc_entry_t, key) && \
                       offsetof(T, value) == offsetof(pfc_entry_t, value),                              \
                   #T " is laid out as pfc_entry_t")
SAME_ENTRY(Envoy__Config__Route__V3__VirtualHost__TypedPerFilterConfigEntry);
SAME_ENTRY(Envoy__Config__Route__V3__Route__TypedPerFilterConfigEntry);
SAME_ENTRY(Envoy__Config__Route__V3__WeightedCluster__ClusterWeight__TypedPerFilterConfigEntry);
#undef SAME_ENTRY

static int per_filter_from(ctx_t *c, const char *path, const void *entries, size_t n,
                           sharp_per_filter_configs_t *out)
{
    char p[512];
    sub(p, sizeof p, path, "typed_per_filter_config");
    const pfc_entry_t *const *v = entries;
    if (n) out->v = sharp_calloc(n, sizeof *out->v);
    for (size_t i = 0; i < n; i++)
        if (per_filter_entry(c, p, v[i]->key, v[i]->value, out) < 0) return -1;
    return 0;
}
#define PER_FILTER(c, path, pb, out) \
    per_filter_from((c), (path), (const void *)(pb)->typed_per_filter_config, (pb)->n_typed_per_filter_config, (out))

/* A metadata_match's "envoy.lb" struct (Envoy reads no other namespace
 * for subset load balancing). */
static const Google__Protobuf__Struct *lb_match(const Envoy__Config__Core__V3__Metadata *md)
{
    const Google__Protobuf__Struct *st = NULL;
    for (size_t i = 0; md && i < md->n_filter_metadata; i++)
        if (md->filter_metadata[i]->key && strcmp(md->filter_metadata[i]->key, "envoy.lb") == 0)
            st = md->filter_metadata[i]->value;
    return st;
}

static int weighted_from(ctx_t *c, const char *path,
                         const Envoy__Config__Route__V3__WeightedCluster *w, sharp_route_t *r)
{
    char p[512];
    if (!w->n_clusters)
        return fail(c, sub(p, sizeof p, path, "clusters"), "at least one cluster is required");
    r->weighted = sharp_calloc(w->n_clusters, sizeof *r->weighted);
    for (size_t i = 0; i < w->n_clusters; i++) {
        const Envoy__Config__Route__V3__WeightedCluster__ClusterWeight *cw = w->clusters[i];
        sub(p, sizeof p, path, "clusters[%zu]", i);
        sharp_weighted_cluster_t *wc = &r->weighted[r->nweighted++];
        if (!cw->name[0]) return fail(c, p, "name is required");
        wc->name = sharp_strdup(cw->name);
        wc->weight = cw->weight ? cw->weight->value : 0;
        if (w->runtime_key_prefix && w->runtime_key_prefix[0]) {
            /* Envoy: "<runtime_key_prefix>.<cluster name>" */
            size_t n = strlen(w->runtime_key_prefix) + strlen(cw->name) + 2;
            wc->runtime_key = sharp_calloc(n, 1);
            snprintf(wc->runtime_key, n, "%s.%s", w->runtime_key_prefix, cw->name);
            r->weighted_runtime = true;
        }
        r->total_weight += wc->weight;
        if (OPS(c, p, cw, request, &wc->req_ops) < 0 || OPS(c, p, cw, response, &wc->resp_ops) < 0)
            return -1;
        if (PER_FILTER(c, p, cw, &wc->per_filter) < 0) return -1;
        const Google__Protobuf__Struct *mm = lb_match(cw->metadata_match);
        if (mm) {
            sharp_lbmeta_t *own = sharp_lbmeta_from_struct(mm);
            wc->metadata_match = sharp_lbmeta_merge(r->metadata_match, own);
            free(own);
        }
    }
    if (r->total_weight == 0)
        return fail(c, path, "Sum of weights in the weighted_cluster must be greater than 0");
    if (r->total_weight > UINT32_MAX)
        return fail(c, path, "Sum of weights in the weighted_cluster must not exceed %u",
                    UINT32_MAX);
    if (w->total_weight && w->total_weight->value && w->total_weight->value != r->total_weight)
        return fail(c, sub(p, sizeof p, path, "total_weight"),
                    "Sum of weights in the weighted_cluster should add up to %u",
                    w->total_weight->value);
    return 0;
}

/* RouteAction.hash_policy. Envoy's validation (a name of at least one
 * character, a policy specifier); what SHARP cannot do is rejected: header
 * regex_rewrite, cookies generated for a ttl, filter_state. A
 * connection_properties without source_ip adds nothing, as in Envoy. */
static int hash_policies_from(ctx_t *c, const char *path, const action_pb_t *a, sharp_route_t *r)
{
    char p[512];
    r->hash_policies = sharp_calloc(a->n_hash_policy ? a->n_hash_policy : 1, sizeof *r->hash_policies);
    for (size_t i = 0; i < a->n_hash_policy; i++) {
        const Envoy__Config__Route__V3__RouteAction__HashPolicy *hp = a->hash_policy[i];
        sharp_hash_policy_t *out = &r->hash_policies[r->nhash_policies];
        const char *name = NULL;
        out->terminal = hp->terminal;
        switch (hp->policy_specifier_case) {
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER:
            if (!hp->header->header_name[0])
                return fail(c, sub(p, sizeof p, path, "hash_policy[%zu].header.header_name", i),
                            "must not be empty");
            out->kind = SHARP_HASH_HEADER;
            out->name = lower_dup(hp->header->header_name);
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE:
            name = hp->cookie->name;
            if (!name[0])
                return fail(c, sub(p, sizeof p, path, "hash_policy[%zu].cookie.name", i), "must not be empty");
            out->kind = SHARP_HASH_COOKIE;
            out->name = sharp_strdup(name);
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES:
            if (!hp->connection_properties->source_ip) continue;
            out->kind = SHARP_HASH_SOURCE_IP;
            break;
        case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER:
            name = hp->query_parameter->name;
            if (!name[0])
                return fail(c, sub(p, sizeof p, path, "hash_policy[%zu].query_parameter.name", i),
                            "must not be empty");
            out->kind = SHARP_HASH_QUERY_PARAMETER;
            out->name = sharp_strdup(name);
            break;
        default:
            return fail(c, sub(p, sizeof p, path, "hash_policy[%zu]", i),
                        "one of header, cookie, connection_properties, query_parameter is required");
        }
        r->nhash_policies++;
    }
    return 0;
}

/* RouteAction.upgrade_configs: per-route enabling or disabling of an
 * upgrade type, which overrides the connection manager's (Envoy's
 * RouteEntryImplBase: types are lowercased, a repeated one is an error). */
static int upgrades_from(ctx_t *c, const char *path, const action_pb_t *a, sharp_route_t *r)
{
    char p[512];
    r->upgrades = sharp_calloc(a->n_upgrade_configs, sizeof *r->upgrades);
    for (size_t i = 0; i < a->n_upgrade_configs; i++) {
        const char *type = a->upgrade_configs[i]->upgrade_type;
        snprintf(p, sizeof p, "%s.upgrade_configs[%zu].upgrade_type", path, i);
        const Envoy__Config__Route__V3__RouteAction__UpgradeConfig__ConnectConfig *cc =
            a->upgrade_configs[i]->connect_config;
        /* Envoy compares the type with "CONNECT" case-sensitively here: its
         * connect_config terminates CONNECT requests (the router's TCP
         * upstream), and no other type may have one */
        if (cc && strcmp(type, "CONNECT") != 0)
            return fail(c, p, "Non-CONNECT upgrade type %s has ConnectConfig", type);
        if (cc) {
            r->connect_terminate = true;
            r->connect_allow_post = cc->allow_post;
        }
        for (uint32_t j = 0; j < r->nupgrades; j++)
            if (strcasecmp(r->upgrades[j].type, type) == 0) return fail(c, p, "Duplicate upgrade %s", type);
        r->upgrades[r->nupgrades].type = sharp_strdup(type);
        r->upgrades[r->nupgrades].enabled = !a->upgrade_configs[i]->enabled || a->upgrade_configs[i]->enabled->value;
        r->nupgrades++;
    }
    return 0;
}

/* RouteAction.rate_limits and VirtualHost.rate_limits (Envoy's
 * RateLimitPolicyImpl). The actions and fields SHARP lacks (metadata,
 * dynamic_metadata, extension, limit) are refused by the support table. */
typedef Envoy__Config__Route__V3__RateLimit rl_pb_t;
typedef Envoy__Config__Route__V3__RateLimit__Action rla_pb_t;

static int rl_action_from(ctx_t *c, const char *path, const rla_pb_t *pb, sharp_rl_action_t *a)
{
    char p[512];
    switch (pb->action_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_SOURCE_CLUSTER:
        a->kind = SHARP_RL_SOURCE_CLUSTER;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_DESTINATION_CLUSTER:
        a->kind = SHARP_RL_DESTINATION_CLUSTER;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_REQUEST_HEADERS: {
        const Envoy__Config__Route__V3__RateLimit__Action__RequestHeaders *rh = pb->request_headers;
        a->kind = SHARP_RL_REQUEST_HEADERS;
        if (!rh->header_name[0])
            return fail(c, sub(p, sizeof p, path, "request_headers.header_name"),
                        "value length must be at least 1 characters");
        if (!rh->descriptor_key[0])
            return fail(c, sub(p, sizeof p, path, "request_headers.descriptor_key"),
                        "value length must be at least 1 characters");
        a->header_name = lower_dup(rh->header_name);
        a->key = sharp_strdup(rh->descriptor_key);
        a->skip_if_absent = rh->skip_if_absent;
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_REMOTE_ADDRESS:
        a->kind = SHARP_RL_REMOTE_ADDRESS;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_MASKED_REMOTE_ADDRESS: {
        const Envoy__Config__Route__V3__RateLimit__Action__MaskedRemoteAddress *m =
            pb->masked_remote_address;
        a->kind = SHARP_RL_MASKED_REMOTE_ADDRESS;
        a->v4_mask = m->v4_prefix_mask_len ? m->v4_prefix_mask_len->value : 32;
        a->v6_mask = m->v6_prefix_mask_len ? m->v6_prefix_mask_len->value : 128;
        if (a->v4_mask > 32)
            return fail(c, sub(p, sizeof p, path, "masked_remote_address.v4_prefix_mask_len"),
                        "value must be less than or equal to 32");
        if (a->v6_mask > 128)
            return fail(c, sub(p, sizeof p, path, "masked_remote_address.v6_prefix_mask_len"),
                        "value must be less than or equal to 128");
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_GENERIC_KEY: {
        const Envoy__Config__Route__V3__RateLimit__Action__GenericKey *g = pb->generic_key;
        a->kind = SHARP_RL_GENERIC_KEY;
        if (!g->descriptor_value[0])
            return fail(c, sub(p, sizeof p, path, "generic_key.descriptor_value"),
                        "value length must be at least 1 characters");
        a->key = sharp_strdup(g->descriptor_key[0] ? g->descriptor_key : "generic_key");
        a->value = sharp_strdup(g->descriptor_value);
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_HEADER_VALUE_MATCH: {
        const Envoy__Config__Route__V3__RateLimit__Action__HeaderValueMatch *h = pb->header_value_match;
        a->kind = SHARP_RL_HEADER_VALUE_MATCH;
        if (!h->descriptor_value[0])
            return fail(c, sub(p, sizeof p, path, "header_value_match.descriptor_value"),
                        "value length must be at least 1 characters");
        if (!h->n_headers)
            return fail(c, sub(p, sizeof p, path, "header_value_match.headers"),
                        "value must contain at least 1 item(s)");
        a->key = sharp_strdup(h->descriptor_key[0] ? h->descriptor_key : "header_match");
        a->value = sharp_strdup(h->descriptor_value);
        a->expect_match = h->expect_match ? h->expect_match->value : true;
        a->headers = sharp_calloc(h->n_headers, sizeof *a->headers);
        for (size_t i = 0; i < h->n_headers; i++) {
            a->nheaders++;
            if (header_matcher_from(c, sub(p, sizeof p, path, "header_value_match.headers[%zu]", i),
                                    h->headers[i], &a->headers[i]) < 0)
                return -1;
        }
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_QUERY_PARAMETER_VALUE_MATCH: {
        const Envoy__Config__Route__V3__RateLimit__Action__QueryParameterValueMatch *q =
            pb->query_parameter_value_match;
        a->kind = SHARP_RL_QUERY_VALUE_MATCH;
        if (!q->descriptor_value[0])
            return fail(c, sub(p, sizeof p, path, "query_parameter_value_match.descriptor_value"),
                        "value length must be at least 1 characters");
        if (!q->n_query_parameters)
            return fail(c, sub(p, sizeof p, path, "query_parameter_value_match.query_parameters"),
                        "value must contain at least 1 item(s)");
        a->key = sharp_strdup(q->descriptor_key[0] ? q->descriptor_key : "query_match");
        a->value = sharp_strdup(q->descriptor_value);
        a->expect_match = q->expect_match ? q->expect_match->value : true;
        a->query = sharp_calloc(q->n_query_parameters, sizeof *a->query);
        for (size_t i = 0; i < q->n_query_parameters; i++) {
            a->nquery++;
            if (query_matcher_from(c,
                                   sub(p, sizeof p, path, "query_parameter_value_match.query_parameters[%zu]", i),
                                   q->query_parameters[i], &a->query[i]) < 0)
                return -1;
        }
        return 0;
    }
    case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__ACTION_SPECIFIER_METADATA: {
        const Envoy__Config__Route__V3__RateLimit__Action__MetaData *m = pb->metadata;
        a->kind = SHARP_RL_METADATA;
        if (!m->descriptor_key[0])
            return fail(c, sub(p, sizeof p, path, "metadata.descriptor_key"),
                        "value length must be at least 1 characters");
        if (!m->metadata_key)
            return fail(c, sub(p, sizeof p, path, "metadata.metadata_key"), "value is required");
        switch (m->source) {
        case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__META_DATA__SOURCE__DYNAMIC:
            a->md_source = SHARP_RL_MD_DYNAMIC;
            break;
        case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__META_DATA__SOURCE__ROUTE_ENTRY:
            a->md_source = SHARP_RL_MD_ROUTE_ENTRY;
            break;
        case ENVOY__CONFIG__ROUTE__V3__RATE_LIMIT__ACTION__META_DATA__SOURCE__CLUSTER_LOCALITY_ENTRY:
            a->md_source = SHARP_RL_MD_CLUSTER_LOCALITY;
            break;
        default:
            return fail(c, sub(p, sizeof p, path, "metadata.source"), "value must be one of the defined enum values");
        }
        a->key = sharp_strdup(m->descriptor_key);
        a->value = sharp_strdup(m->default_value);
        a->skip_if_absent = m->skip_if_absent;
        a->md_ns = sharp_strdup(m->metadata_key->key);
        a->md_path = sharp_calloc(m->metadata_key->n_path ? m->metadata_key->n_path : 1, sizeof *a->md_path);
        for (size_t i = 0; i < m->metadata_key->n_path; i++) {
            const Envoy__Type__Metadata__V3__MetadataKey__PathSegment *seg = m->metadata_key->path[i];
            a->md_path[a->md_npath++] = sharp_strdup(seg->key ? seg->key : "");
        }
        return 0;
    }
    default:
        /* dynamic_metadata, extension: refused by the support table */
        return fail(c, path, "value is required (one of the rate limit actions)");
    }
}

/* `per_filter`: the rate limit filter's RateLimitPerRoute rate_limits
 * (Envoy's RateLimitConfig path), which refuse stage and disable_key and
 * alone read hits_addend; Envoy's route and virtual host path ignores a
 * hits_addend, so SHARP refuses one there rather than do the same. */
static int rate_limits_from(ctx_t *c, const char *path, rl_pb_t *const *pbs, size_t n,
                            struct sharp_rate_limits **out, bool per_filter)
{
    if (!n) return 0;
    char p[512], q[512];
    sharp_rate_limits_t *rls = sharp_calloc(1, sizeof *rls);
    *out = rls;
    rls->v = sharp_calloc(n, sizeof *rls->v);
    for (size_t i = 0; i < n; i++) {
        const rl_pb_t *pb = pbs[i];
        sharp_rate_limit_t *rl = &rls->v[rls->n++];
        sub(p, sizeof p, path, "rate_limits[%zu]", i);
        if (per_filter && (pb->stage || pb->disable_key[0]))
            return fail(c, p, "'stage' field and 'disable_key' field are not supported");
        rl->stage = pb->stage ? pb->stage->value : 0;
        if (rl->stage > 10) return fail(c, sub(q, sizeof q, p, "stage"), "value must be less than or equal to 10");
        if (pb->disable_key[0]) rl->disable_key = sharp_strdup(pb->disable_key);
        rl->apply_on_stream_done = pb->apply_on_stream_done;
        rls->any_on_stream_done |= pb->apply_on_stream_done;
        if (pb->hits_addend) {
            const Envoy__Config__Route__V3__RateLimit__HitsAddend *ha = pb->hits_addend;
            sub(q, sizeof q, p, "hits_addend");
            if (!per_filter)
                return fail(c, q,
                            "supported only in the rate limit filter's per-route rate_limits "
                            "(RateLimitPerRoute), as in Envoy, which ignores it here");
            if ((ha->format && ha->format[0]) == !!ha->number)
                return fail(c, q, "hits_addend must contain either a format or a number");
            if (ha->number && ha->number->value > 1000000000)
                return fail(c, sub(q, sizeof q, p, "hits_addend.number"),
                            "value must be less than or equal to 1000000000");
            /* a format is refused by the support table */
            rl->has_hits_addend = ha->number != NULL;
            rl->hits_addend = ha->number ? ha->number->value : 0;
        }
        if (!pb->n_actions) return fail(c, sub(q, sizeof q, p, "actions"), "value must contain at least 1 item(s)");
        rl->actions = sharp_calloc(pb->n_actions, sizeof *rl->actions);
        for (size_t j = 0; j < pb->n_actions; j++) {
            rl->nactions++;
            if (rl_action_from(c, sub(q, sizeof q, p, "actions[%zu]", j), pb->actions[j], &rl->actions[j]) < 0)
                return -1;
        }
    }
    return 0;
}

static int action_from(ctx_t *c, const char *path, const action_pb_t *a, sharp_route_t *r)
{
    char p[512];
    r->action = SHARP_ROUTE_ACTION_ROUTE;
    const Google__Protobuf__Struct *mm = lb_match(a->metadata_match);
    if (mm) r->metadata_match = sharp_lbmeta_from_struct(mm);
    switch (a->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        if (!a->cluster[0]) return fail(c, sub(p, sizeof p, path, "cluster"), "must not be empty");
        r->cluster = sharp_strdup(a->cluster);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        if (weighted_from(c, sub(p, sizeof p, path, "weighted_clusters"), a->weighted_clusters, r) <
            0)
            return -1;
        break;
    default:
        return fail(c, path, "one of cluster, weighted_clusters is required");
    }
    static const uint32_t not_found[] = {503, 404, 500};
    r->cluster_not_found_code =
        (unsigned)a->cluster_not_found_response_code < SHARP_ARRAY_SIZE(not_found)
            ? not_found[a->cluster_not_found_response_code]
            : 503;
    if ((a->timeout && (a->timeout->seconds < 0 || a->timeout->nanos < 0)) ||
        (a->idle_timeout && (a->idle_timeout->seconds < 0 || a->idle_timeout->nanos < 0)))
        return fail(c, path, "timeouts must not be negative");
    r->timeout_ms = a->timeout ? duration_ms(a->timeout) : DEFAULT_TIMEOUT_MS;
    if (a->cors && !(r->cors = sharp_config_route_cors_policy(a->cors, sub(p, sizeof p, path, "cors"), c->err,
                                                              c->errlen)))
        return -1;
    if (a->idle_timeout) {
        r->has_idle_timeout = true;
        r->idle_timeout_ms = duration_ms(a->idle_timeout);
    }
    if (a->max_stream_duration) {
        const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *m = a->max_stream_duration;
        r->has_msd = true;
        r->has_msd_max = m->max_stream_duration != NULL;
        r->msd_max_ms = duration_ms(m->max_stream_duration);
        r->has_grpc_header_max = m->grpc_timeout_header_max != NULL;
        r->grpc_header_max_ms = duration_ms(m->grpc_timeout_header_max);
        r->has_grpc_header_offset = m->grpc_timeout_header_offset != NULL;
        r->grpc_header_offset_ms = duration_ms(m->grpc_timeout_header_offset);
    }
    r->has_max_grpc_timeout = a->max_grpc_timeout != NULL;
    r->max_grpc_timeout_ms = duration_ms(a->max_grpc_timeout);
    r->has_grpc_timeout_offset = a->grpc_timeout_offset != NULL;
    r->grpc_timeout_offset_ms = duration_ms(a->grpc_timeout_offset);
    if (a->prefix_rewrite[0] && a->regex_rewrite)
        return fail(c, path, "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy");
    if (a->prefix_rewrite[0]) r->prefix_rewrite = sharp_strdup(a->prefix_rewrite);
    if (a->regex_rewrite && rewrite_from(c, sub(p, sizeof p, path, "regex_rewrite"), a->regex_rewrite,
                                         &r->regex_rewrite, &r->regex_rewrite_sub) < 0)
        return -1;
    switch (a->host_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL:
        if (a->host_rewrite_literal[0]) r->host_rewrite = sharp_strdup(a->host_rewrite_literal);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE:
        r->auto_host_rewrite = a->auto_host_rewrite && a->auto_host_rewrite->value;
        break;
    default:
        break;
    }
    if (a->retry_policy) {
        r->has_retry_policy = true;
        if (retry_from(c, sub(p, sizeof p, path, "retry_policy"), a->retry_policy, &r->retry) < 0)
            return -1;
    }
    if (a->n_hash_policy && hash_policies_from(c, path, a, r) < 0) return -1;
    r->priority = a->priority == ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH ? 1 : 0;
    if (mirror_from(c, path, a->request_mirror_policies, a->n_request_mirror_policies, &r->mirror_own) < 0)
        return -1;
    if (a->n_upgrade_configs && upgrades_from(c, path, a, r) < 0) return -1;
    if (rate_limits_from(c, path, a->rate_limits, a->n_rate_limits, &r->rate_limits, false) < 0) return -1;
    r->include_vh_rate_limits = a->include_vh_rate_limits && a->include_vh_rate_limits->value;
    return 0;
}

static int redirect_from(ctx_t *c, const char *path,
                         const Envoy__Config__Route__V3__RedirectAction *rd, sharp_route_t *r)
{
    char p[512];
    r->action = SHARP_ROUTE_ACTION_REDIRECT;
    sharp_redirect_t *o = &r->redirect;
    if (rd->scheme_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT &&
        rd->https_redirect)
        o->scheme = sharp_strdup("https");
    else if (
        rd->scheme_rewrite_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT &&
        rd->scheme_redirect[0])
        o->scheme = lower_dup(rd->scheme_redirect);
    if (rd->host_redirect[0]) o->host = sharp_strdup(rd->host_redirect);
    o->port = rd->port_redirect;
    switch (rd->path_rewrite_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT:
        o->path = sharp_strdup(rd->path_redirect);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE:
        o->prefix_rewrite = sharp_strdup(rd->prefix_rewrite);
        break;
    case ENVOY__CONFIG__ROUTE__V3__REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_REGEX_REWRITE:
        if (rewrite_from(c, sub(p, sizeof p, path, "regex_rewrite"), rd->regex_rewrite,
                         &o->regex_rewrite, &o->regex_rewrite_sub) < 0)
            return -1;
        break;
    default:
        break;
    }
    static const uint32_t codes[] = {301, 302, 303, 307, 308};
    if ((unsigned)rd->response_code >= SHARP_ARRAY_SIZE(codes))
        return fail(c, sub(p, sizeof p, path, "response_code"), "unknown");
    o->code = codes[rd->response_code];
    o->strip_query = rd->strip_query;
    return 0;
}

static int direct_from(ctx_t *c, const char *path,
                       const Envoy__Config__Route__V3__DirectResponseAction *d, sharp_route_t *r)
{
    char p[512];
    r->action = SHARP_ROUTE_ACTION_DIRECT;
    if (d->status < 200 || d->status > 599)
        return fail(c, sub(p, sizeof p, path, "status"), "must be in [200, 599], got %u",
                    d->status);
    r->direct_status = d->status;
    const Envoy__Config__Core__V3__DataSource *b = d->body;
    if (!b) return 0;
    if (b->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET) return 0;
    sub(p, sizeof p, path, "body");
    char msg[512];
    size_t len = 0;
    char *data = sharp_data_source_read(b, &len, msg, sizeof msg);
    if (!data) return fail(c, p, "%s", msg);
    if (len > c->max_body) {
        free(data);
        return fail(c, p, "response body size is more than %u bytes (the maximum)", c->max_body);
    }
    if (len) {
        r->direct_body = data;
        r->direct_body_len = len;
    } else {
        free(data);
    }
    return 0;
}

/* CustomTag list (Envoy's CustomTagUtility::createCustomTag); the first of
 * a tag name is kept, as Envoy's map emplace. */
static int custom_tags_from(ctx_t *c, const char *path, Envoy__Type__Tracing__V3__CustomTag *const *pb, size_t n,
                            sharp_custom_tags_t *out)
{
    char p[512], q[600];
    out->p = n ? sharp_calloc(n, sizeof *out->p) : NULL;
    for (size_t i = 0; i < n; i++) {
        const Envoy__Type__Tracing__V3__CustomTag *t = pb[i];
        snprintf(p, sizeof p, "%s[%zu]", path, i);
        if (!t->tag[0]) return fail(c, sub(q, sizeof q, p, "tag"), "value length must be at least 1 characters");
        bool dup = false;
        for (uint32_t k = 0; k < out->n; k++) dup |= strcmp(out->p[k].tag, t->tag) == 0;
        sharp_custom_tag_t ct = {0};
        switch (t->type_case) {
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_LITERAL:
            if (!t->literal->value[0])
                return fail(c, sub(q, sizeof q, p, "literal.value"), "value length must be at least 1 characters");
            ct.value = sharp_strdup(t->literal->value);
            break;
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_ENVIRONMENT: {
            if (!t->environment->name[0])
                return fail(c, sub(q, sizeof q, p, "environment.name"), "value length must be at least 1 characters");
            const char *env = getenv(t->environment->name);
            ct.value = sharp_strdup(env ? env : t->environment->default_value);
            break;
        }
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_REQUEST_HEADER: {
            const char *name = t->request_header->name;
            /* HTTP_HEADER_NAME, not strict: no NUL, CR or LF */
            if (!name[0] || strpbrk(name, "\r\n"))
                return fail(c, sub(q, sizeof q, p, "request_header.name"), "invalid header name");
            ct.header = sharp_strdup(name);
            for (char *x = ct.header; *x; x++) *x = (char)tolower((unsigned char)*x);
            ct.value = sharp_strdup(t->request_header->default_value);
            break;
        }
        default: return fail(c, p, "type: value is required");
        }
        if (dup) {
            free(ct.value);
            free(ct.header);
            continue;
        }
        ct.tag = sharp_strdup(t->tag);
        out->p[out->n++] = ct;
    }
    return 0;
}

int sharp_config_custom_tags(Envoy__Type__Tracing__V3__CustomTag *const *pb, size_t n, const char *path,
                             sharp_custom_tags_t *out, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return custom_tags_from(&c, path, pb, n, out);
}

/* Route.tracing (Envoy's RouteTracingImpl): each fraction 100% unless set. */
static int route_tracing_from(ctx_t *c, const char *path, const Envoy__Config__Route__V3__Tracing *t,
                              sharp_route_t *r)
{
    const Envoy__Type__V3__FractionalPercent *f[3] = {t->client_sampling, t->random_sampling, t->overall_sampling};
    static const char *const names[3] = {"client_sampling", "random_sampling", "overall_sampling"};
    uint32_t num[3], den[3];
    char p[512];
    for (int i = 0; i < 3; i++) {
        num[i] = 100;
        den[i] = 100;
        if (!f[i]) continue;
        den[i] = sharp_fractional_denominator(f[i]->denominator);
        if (!den[i]) return fail(c, sub(p, sizeof p, path, "%s.denominator", names[i]), "unknown");
        num[i] = f[i]->numerator;
    }
    r->has_tracing = true;
    r->tracing = (sharp_trace_sampling_t){num[0], den[0], num[1], den[1], num[2], den[2]};
    return custom_tags_from(c, sub(p, sizeof p, path, "custom_tags"), t->custom_tags, t->n_custom_tags,
                            &r->tracing_tags);
}

static int route_from(ctx_t *c, const char *path, const route_pb_t *pb, sharp_route_t *r)
{
    char p[512];
    r->name = pb->name[0] ? sharp_strdup(pb->name) : NULL;
    if (pb->decorator) {
        r->decorator_operation = sharp_strdup(pb->decorator->operation);
        r->decorator_propagate = pb->decorator->propagate ? pb->decorator->propagate->value : true;
    }
    if (pb->tracing && route_tracing_from(c, sub(p, sizeof p, path, "tracing"), pb->tracing, r) < 0) return -1;
    for (size_t i = 0; pb->metadata && i < pb->metadata->n_filter_metadata; i++) {
        const Envoy__Config__Core__V3__Metadata__FilterMetadataEntry *e = pb->metadata->filter_metadata[i];
        sharp_md_value_t st = {0};
        if (!e->key || !e->value || !sharp_md_value_from_struct(e->value, &st)) {
            sharp_md_value_clear(&st);
            continue;
        }
        sharp_dynamic_metadata_replace(&r->metadata, e->key, strlen(e->key), &st);
        sharp_md_value_clear(&st);
    }
    r->case_sensitive = true;
    r->timeout_ms = DEFAULT_TIMEOUT_MS;
    if (match_from(c, sub(p, sizeof p, path, "match"), pb->match, r) < 0) return -1;
    switch (pb->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        if (action_from(c, sub(p, sizeof p, path, "route"), pb->route, r) < 0) return -1;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT:
        if (redirect_from(c, sub(p, sizeof p, path, "redirect"), pb->redirect, r) < 0) return -1;
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE:
        if (direct_from(c, sub(p, sizeof p, path, "direct_response"), pb->direct_response, r) < 0)
            return -1;
        break;
    default:
        return fail(c, path,
                    "the route has no action: set one of route, redirect, direct_response");
    }
    if (OPS(c, path, pb, request, &r->req_ops) < 0 || OPS(c, path, pb, response, &r->resp_ops) < 0)
        return -1;
    if (PER_FILTER(c, path, pb, &r->per_filter) < 0) return -1;
    return 0;
}

static int vhost_from(ctx_t *c, size_t idx, const vh_pb_t *pb, sharp_vhost_t *vh)
{
    char path[64], p[512];
    snprintf(path, sizeof path, "virtual_hosts[%zu]", idx);
    if (!pb->name[0])
        return fail(c, sub(p, sizeof p, path, "name"), "a virtual host name is required");
    vh->name = sharp_strdup(pb->name);
    if (!pb->n_domains)
        return fail(c, sub(p, sizeof p, path, "domains"), "at least one domain is required");
    vh->domains = sharp_calloc(pb->n_domains, sizeof *vh->domains);
    for (size_t i = 0; i < pb->n_domains; i++) {
        if (!pb->domains[i][0])
            return fail(c, sub(p, sizeof p, path, "domains[%zu]", i), "must not be empty");
        vh->domains[vh->ndomains++] = sharp_strdup(pb->domains[i]);
    }
    if (OPS(c, path, pb, request, &vh->req_ops) < 0 ||
        OPS(c, path, pb, response, &vh->resp_ops) < 0)
        return -1;
    if (mirror_from(c, path, pb->request_mirror_policies, pb->n_request_mirror_policies, &vh->mirror_own) < 0)
        return -1;
    if (PER_FILTER(c, path, pb, &vh->per_filter) < 0) return -1;
    if (rate_limits_from(c, path, pb->rate_limits, pb->n_rate_limits, &vh->rate_limits, false) < 0) return -1;
    if (pb->cors && !(vh->cors = sharp_config_route_cors_policy(pb->cors, sub(p, sizeof p, path, "cors"), c->err,
                                                                c->errlen)))
        return -1;
    vh->include_request_attempt_count = pb->include_request_attempt_count;
    vh->include_attempt_count_in_response = pb->include_attempt_count_in_response;
    vh->require_tls = (sharp_tls_requirement_t)pb->require_tls; /* "defined" in the support table */
    vh->tls_redirect.action = SHARP_ROUTE_ACTION_REDIRECT;
    vh->tls_redirect.redirect.code = 301;
    vh->tls_redirect.redirect.to_https_as_is = true;
    if (pb->retry_policy) {
        vh->has_retry_policy = true;
        if (retry_from(c, sub(p, sizeof p, path, "retry_policy"), pb->retry_policy, &vh->retry) < 0)
            return -1;
    }
    vh->routes = sharp_calloc(pb->n_routes + 1, sizeof *vh->routes);
    for (size_t i = 0; i < pb->n_routes; i++) {
        sharp_route_t *r = &vh->routes[vh->nroutes++];
        if (route_from(c, sub(p, sizeof p, path, "routes[%zu]", i), pb->routes[i], r) < 0)
            return -1;
        /* a route without its own retry policy uses the virtual host's */
        if (r->action == SHARP_ROUTE_ACTION_ROUTE && !r->has_retry_policy && vh->has_retry_policy) {
            r->has_retry_policy = true;
            if (retry_from(c, sub(p, sizeof p, path, "retry_policy"), pb->retry_policy, &r->retry) < 0)
                return -1;
        }
    }
    return 0;
}

sharp_route_table_t *sharp_route_table_create(const rc_pb_t *rc, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    if (err && errlen) err[0] = '\0';
    if (!rc) {
        fail(&c, "route_config", "missing");
        return NULL;
    }
    if (rc->max_direct_response_body_size_bytes)
        c.max_body = rc->max_direct_response_body_size_bytes->value;
    /* Fields SHARP refuses never get here: the loader's support table
     * (config/support.table) has already refused them by name. */
    sharp_route_table_t *t = sharp_calloc(1, sizeof *t);
    t->name = sharp_strdup(rc->name);
    t->ignore_port_in_host_matching = rc->ignore_port_in_host_matching;
    t->most_specific_header_mutations_wins = rc->most_specific_header_mutations_wins;
    t->internal_only_headers =
        sharp_calloc(rc->n_internal_only_headers + 1, sizeof *t->internal_only_headers);
    for (size_t i = 0; i < rc->n_internal_only_headers; i++)
        t->internal_only_headers[t->ninternal_only_headers++] =
            lower_dup(rc->internal_only_headers[i]);
    if (OPS(&c, "", rc, request, &t->req_ops) < 0 || OPS(&c, "", rc, response, &t->resp_ops) < 0)
        goto bad;
    if (mirror_from(&c, "", rc->request_mirror_policies, rc->n_request_mirror_policies, &t->mirror) < 0) goto bad;
    if (PER_FILTER(&c, "", rc, &t->per_filter) < 0) goto bad;
    t->vhosts = sharp_calloc(rc->n_virtual_hosts + 1, sizeof *t->vhosts);
    for (size_t i = 0; i < rc->n_virtual_hosts; i++) {
        t->nvhosts++;
        if (vhost_from(&c, i, rc->virtual_hosts[i], &t->vhosts[i]) < 0) goto bad;
    }
    /* Mirror policies as Envoy inherits them: a route without its own takes
     * its virtual host's, a virtual host without its own the table's. */
    for (uint32_t v = 0; v < t->nvhosts; v++) {
        sharp_vhost_t *vh = &t->vhosts[v];
        vh->mirror = vh->mirror_own.n ? &vh->mirror_own : &t->mirror;
        for (uint32_t i = 0; i < vh->nroutes; i++) {
            sharp_route_t *r = &vh->routes[i];
            r->mirror = r->mirror_own.n ? &r->mirror_own : vh->mirror;
        }
    }
    if (sharp_route_table_build_index(t, err, errlen) < 0) goto bad;
    return t;
bad:
    sharp_route_table_free(t);
    return NULL;
}

/* ---- for other config translators (filters, health checks) ---- */

int sharp_config_header_matcher(const Envoy__Config__Route__V3__HeaderMatcher *pb, const char *path,
                                sharp_header_matcher_t *m, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return header_matcher_from(&c, path, pb, m);
}

int sharp_config_rate_limits(Envoy__Config__Route__V3__RateLimit *const *pbs, size_t n, const char *path,
                             sharp_rate_limits_t **out, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return rate_limits_from(&c, path, pbs, n, out, true);
}

int sharp_config_runtime_fraction(const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf, const char *path,
                                  sharp_runtime_fraction_t *out, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return runtime_fraction_from(&c, path, rf, out);
}

int sharp_config_string_matcher(const Envoy__Type__Matcher__V3__StringMatcher *pb, const char *path,
                                sharp_string_matcher_t *out, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return string_matcher_from(&c, path, pb, out);
}

int sharp_config_header_ops(const char *path, const char *add_field,
                            Envoy__Config__Core__V3__HeaderValueOption *const *add, size_t nadd,
                            const char *remove_field, char *const *remove, size_t nremove,
                            sharp_header_ops_t *ops, char *err, size_t errlen)
{
    ctx_t c = {.err = err, .errlen = errlen, .max_body = DEFAULT_MAX_DIRECT_BODY};
    return ops_from(&c, path, add_field, add, nadd, remove_field, remove, nremove, ops);
}
