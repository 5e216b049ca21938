/* engine.c: see engine.h. Envoy's RoleBasedAccessControlEngineImpl and
 * its matchers (source/extensions/filters/common/rbac). */
#include "filters/rbac/engine.h"
#include "config/route_config.h"
#include "http/metadata.h"
#include "http/route.h"
#include "net.h"

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "envoy/type/matcher/v3/metadata.pb-c.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    M_AND,
    M_OR,
    M_NOT,
    M_ANY,
    M_HEADER,
    M_URL_PATH,
    M_DEST_IP,
    M_DEST_PORT,
    M_DEST_PORT_RANGE,
    M_SNI,
    M_AUTHENTICATED,
    M_SOURCE_IP,        /* the connection's remote address */
    M_DIRECT_REMOTE_IP, /* the physical peer */
    M_REMOTE_IP,        /* the trusted client address */
    M_METADATA,         /* the stream's dynamic metadata */
} matcher_kind_t;

/* Envoy's Matchers::ValueMatcher (envoy.type.matcher.v3.ValueMatcher). */
typedef enum {
    V_NULL,
    V_DOUBLE_RANGE,
    V_DOUBLE_EXACT,
    V_STRING,
    V_BOOL,
    V_PRESENT,
    V_LIST, /* one_of: sub[0] */
    V_OR,
} value_kind_t;

typedef struct value_matcher {
    value_kind_t kind;
    bool b;
    double lo, hi; /* DOUBLE_RANGE: [lo, hi); DOUBLE_EXACT: lo */
    sharp_string_matcher_t sm;
    uint32_t n;
    struct value_matcher *sub;
} value_matcher_t;

typedef struct matcher {
    matcher_kind_t kind;
    uint32_t n;          /* AND/OR: children; NOT: 1 */
    struct matcher *sub;
    sharp_header_matcher_t hm;
    sharp_string_matcher_t sm; /* URL_PATH, SNI, AUTHENTICATED (has_sm) */
    bool has_sm;
    sharp_cidr_t cidr;
    int32_t start, end; /* DEST_PORT: start; DEST_PORT_RANGE: [start, end) */
    /* METADATA: the namespace, the path of keys, the value, invert */
    char *md_filter;
    char **md_path;
    uint32_t md_npath;
    value_matcher_t *md_value;
    bool md_invert;
} matcher_t;

typedef struct policy {
    char *name;
    matcher_t permissions, principals; /* each an OR */
} policy_t;

struct sharp_rbac_engine {
    sharp_rbac_action_t action;
    uint32_t npolicies;
    policy_t *policies; /* by name */
};

/* ---- building ---- */

static void value_matcher_free(value_matcher_t *v)
{
    for (uint32_t i = 0; i < v->n; i++) value_matcher_free(&v->sub[i]);
    free(v->sub);
    if (v->kind == V_STRING) sharp_string_matcher_free(&v->sm);
}

static void matcher_free(matcher_t *m)
{
    for (uint32_t i = 0; i < m->n; i++) matcher_free(&m->sub[i]);
    free(m->sub);
    if (m->kind == M_HEADER) {
        free(m->hm.name);
        sharp_string_matcher_free(&m->hm.sm);
    }
    if (m->has_sm) sharp_string_matcher_free(&m->sm);
    free(m->md_filter);
    for (uint32_t i = 0; i < m->md_npath; i++) free(m->md_path[i]);
    free(m->md_path);
    if (m->md_value) value_matcher_free(m->md_value);
    free(m->md_value);
    memset(m, 0, sizeof *m);
}

static int fail(char *err, size_t errlen, const char *path, const char *msg)
{
    snprintf(err, errlen, "%s: %s", path, msg);
    return -1;
}

static int cidr_from(const Envoy__Config__Core__V3__CidrRange *pb, const char *path, sharp_cidr_t *out, char *err,
                     size_t errlen)
{
    uint32_t len = pb->prefix_len ? pb->prefix_len->value : 0;
    if (sharp_cidr_parse(pb->address_prefix ? pb->address_prefix : "", len, out) < 0) {
        snprintf(err, errlen, "%s: invalid ip/mask combo '%s/%u' (format is <ip>/<# mask bits>)", path,
                 pb->address_prefix ? pb->address_prefix : "", len);
        return -1;
    }
    return 0;
}

/* PathMatcher: its rule (path) is required. */
static int path_from(const Envoy__Type__Matcher__V3__PathMatcher *pb, const char *path, matcher_t *m, char *err,
                     size_t errlen)
{
    char p[512];
    if (pb->rule_case != ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH || !pb->path)
        return fail(err, errlen, path, "rule: value is required");
    snprintf(p, sizeof p, "%s.path", path);
    if (sharp_config_string_matcher(pb->path, p, &m->sm, err, errlen) < 0) return -1;
    m->has_sm = true;
    return 0;
}

static int header_from(const Envoy__Config__Route__V3__HeaderMatcher *pb, const char *path, matcher_t *m, char *err,
                       size_t errlen)
{
    m->kind = M_HEADER;
    if (sharp_config_header_matcher(pb, path, &m->hm, err, errlen) < 0) return -1;
    return 0;
}

/* protobuf's default recursion limit bounds a config's nesting anyway;
 * this keeps evaluation's recursion bounded whatever built the message */
#define MAX_DEPTH 100

/* ValueMatcher with Envoy's validation: its match_pattern required, a
 * DoubleMatcher's too, or_match of at least 2 matchers. */
static int value_from(const Envoy__Type__Matcher__V3__ValueMatcher *pb, const char *path, value_matcher_t *v,
                      char *err, size_t errlen, unsigned depth)
{
    char p[512];
    if (depth > MAX_DEPTH) return fail(err, errlen, path, "nested too deep");
    switch (pb->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_NULL_MATCH:
        v->kind = V_NULL;
        return 0;
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_DOUBLE_MATCH: {
        const Envoy__Type__Matcher__V3__DoubleMatcher *d = pb->double_match;
        if (d->match_pattern_case == ENVOY__TYPE__MATCHER__V3__DOUBLE_MATCHER__MATCH_PATTERN_RANGE) {
            v->kind = V_DOUBLE_RANGE;
            v->lo = d->range->start;
            v->hi = d->range->end;
            return 0;
        }
        if (d->match_pattern_case == ENVOY__TYPE__MATCHER__V3__DOUBLE_MATCHER__MATCH_PATTERN_EXACT) {
            v->kind = V_DOUBLE_EXACT;
            v->lo = d->exact;
            return 0;
        }
        snprintf(p, sizeof p, "%s.double_match", path);
        return fail(err, errlen, p, "match_pattern: value is required");
    }
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_STRING_MATCH:
        v->kind = V_STRING;
        snprintf(p, sizeof p, "%s.string_match", path);
        return sharp_config_string_matcher(pb->string_match, p, &v->sm, err, errlen) < 0 ? -1 : 0;
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_BOOL_MATCH:
        v->kind = V_BOOL;
        v->b = pb->bool_match;
        return 0;
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_PRESENT_MATCH:
        v->kind = V_PRESENT;
        v->b = pb->present_match;
        return 0;
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_LIST_MATCH:
        v->kind = V_LIST;
        snprintf(p, sizeof p, "%s.list_match", path);
        if (pb->list_match->match_pattern_case != ENVOY__TYPE__MATCHER__V3__LIST_MATCHER__MATCH_PATTERN_ONE_OF)
            return fail(err, errlen, p, "match_pattern: value is required");
        v->sub = sharp_calloc(1, sizeof *v->sub);
        v->n = 1;
        snprintf(p, sizeof p, "%s.list_match.one_of", path);
        return value_from(pb->list_match->one_of, p, v->sub, err, errlen, depth + 1);
    case ENVOY__TYPE__MATCHER__V3__VALUE_MATCHER__MATCH_PATTERN_OR_MATCH: {
        const Envoy__Type__Matcher__V3__OrMatcher *o = pb->or_match;
        v->kind = V_OR;
        if (o->n_value_matchers < 2) {
            snprintf(p, sizeof p, "%s.or_match.value_matchers", path);
            return fail(err, errlen, p, "value must contain at least 2 item(s)");
        }
        v->sub = sharp_calloc(o->n_value_matchers, sizeof *v->sub);
        v->n = (uint32_t)o->n_value_matchers;
        for (size_t i = 0; i < o->n_value_matchers; i++) {
            snprintf(p, sizeof p, "%s.or_match.value_matchers[%zu]", path, i);
            if (value_from(o->value_matchers[i], p, &v->sub[i], err, errlen, depth + 1) < 0) return -1;
        }
        return 0;
    }
    default:
        return fail(err, errlen, path, "match_pattern: value is required");
    }
}

/* MetadataMatcher: filter, a path of at least one key, a value. */
static int metadata_from(const Envoy__Type__Matcher__V3__MetadataMatcher *pb, const char *path, matcher_t *m,
                         char *err, size_t errlen)
{
    char p[512];
    m->kind = M_METADATA;
    m->md_invert = pb->invert;
    if (!pb->filter || !pb->filter[0]) {
        snprintf(p, sizeof p, "%s.filter", path);
        return fail(err, errlen, p, "value length must be at least 1 characters");
    }
    m->md_filter = sharp_strdup(pb->filter);
    if (pb->n_path == 0) {
        snprintf(p, sizeof p, "%s.path", path);
        return fail(err, errlen, p, "value must contain at least 1 item(s)");
    }
    m->md_path = sharp_calloc(pb->n_path, sizeof *m->md_path);
    for (size_t i = 0; i < pb->n_path; i++) {
        const Envoy__Type__Matcher__V3__MetadataMatcher__PathSegment *seg = pb->path[i];
        snprintf(p, sizeof p, "%s.path[%zu]", path, i);
        if (seg->segment_case != ENVOY__TYPE__MATCHER__V3__METADATA_MATCHER__PATH_SEGMENT__SEGMENT_KEY)
            return fail(err, errlen, p, "segment: value is required");
        if (!seg->key || !seg->key[0]) return fail(err, errlen, p, "key: value length must be at least 1 characters");
        m->md_path[m->md_npath++] = sharp_strdup(seg->key);
    }
    snprintf(p, sizeof p, "%s.value", path);
    if (!pb->value) return fail(err, errlen, p, "value is required");
    m->md_value = sharp_calloc(1, sizeof *m->md_value);
    return value_from(pb->value, p, m->md_value, err, errlen, 0);
}

static int permission_from(const Envoy__Config__Rbac__V3__Permission *pb, const char *path, matcher_t *m, char *err,
                           size_t errlen, unsigned depth);
static int principal_from(const Envoy__Config__Rbac__V3__Principal *pb, const char *path, matcher_t *m, char *err,
                          size_t errlen, unsigned depth);

/* An and/or node over a list of permissions (principals false) or
 * principals: at least one item, as Envoy's validation requires. */
static int rule_set(const void *const *items, size_t n, bool principals, const char *path, const char *field,
                    matcher_kind_t kind, matcher_t *m, char *err, size_t errlen, unsigned depth)
{
    char p[512];
    m->kind = kind;
    if (n == 0) {
        snprintf(p, sizeof p, "%s.%s", path, field);
        return fail(err, errlen, p, "value must contain at least 1 item(s)");
    }
    m->sub = sharp_calloc(n, sizeof *m->sub);
    m->n = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s.%s[%zu]", path, field, i);
        int rc = principals ? principal_from(items[i], p, &m->sub[i], err, errlen, depth + 1)
                            : permission_from(items[i], p, &m->sub[i], err, errlen, depth + 1);
        if (rc < 0) return -1;
    }
    return 0;
}

static int permission_set(Envoy__Config__Rbac__V3__Permission *const *rules, size_t n, const char *path,
                          const char *field, matcher_kind_t kind, matcher_t *m, char *err, size_t errlen,
                          unsigned depth)
{
    return rule_set((const void *const *)rules, n, false, path, field, kind, m, err, errlen, depth);
}

static int principal_set(Envoy__Config__Rbac__V3__Principal *const *ids, size_t n, const char *path,
                         const char *field, matcher_kind_t kind, matcher_t *m, char *err, size_t errlen,
                         unsigned depth)
{
    return rule_set((const void *const *)ids, n, true, path, field, kind, m, err, errlen, depth);
}

static int permission_from(const Envoy__Config__Rbac__V3__Permission *pb, const char *path, matcher_t *m, char *err,
                           size_t errlen, unsigned depth)
{
    char p[512];
    if (depth > MAX_DEPTH) return fail(err, errlen, path, "nested too deep");
    switch (pb->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        snprintf(p, sizeof p, "%s.and_rules", path);
        return permission_set(pb->and_rules->rules, pb->and_rules->n_rules, p, "rules", M_AND, m, err, errlen, depth);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        snprintf(p, sizeof p, "%s.or_rules", path);
        return permission_set(pb->or_rules->rules, pb->or_rules->n_rules, p, "rules", M_OR, m, err, errlen, depth);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        m->kind = M_ANY;
        if (!pb->any) return fail(err, errlen, path, "any: value must equal true");
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        snprintf(p, sizeof p, "%s.header", path);
        return header_from(pb->header, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        m->kind = M_URL_PATH;
        snprintf(p, sizeof p, "%s.url_path", path);
        return path_from(pb->url_path, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        m->kind = M_DEST_IP;
        snprintf(p, sizeof p, "%s.destination_ip", path);
        return cidr_from(pb->destination_ip, p, &m->cidr, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        m->kind = M_DEST_PORT;
        if (pb->destination_port > 65535)
            return fail(err, errlen, path, "destination_port: value must be less than or equal to 65535");
        m->start = (int32_t)pb->destination_port;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE: {
        m->kind = M_DEST_PORT_RANGE;
        int32_t start = pb->destination_port_range->start, end = pb->destination_port_range->end;
        snprintf(p, sizeof p, "%s.destination_port_range", path);
        /* Envoy's PortRangeMatcher */
        if (start < 0 || start > 65536)
            return snprintf(err, errlen, "%s: range start %d is out of bounds", p, start), -1;
        if (end < 0 || end > 65536) return snprintf(err, errlen, "%s: range end %d is out of bounds", p, end), -1;
        if (start >= end)
            return snprintf(err, errlen, "%s: range start %d cannot be greater or equal than range end %d", p, start,
                            end),
                   -1;
        m->start = start;
        m->end = end;
        return 0;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE:
        m->kind = M_NOT;
        m->sub = sharp_calloc(1, sizeof *m->sub);
        m->n = 1;
        snprintf(p, sizeof p, "%s.not_rule", path);
        return permission_from(pb->not_rule, p, m->sub, err, errlen, depth + 1);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME:
        m->kind = M_SNI;
        snprintf(p, sizeof p, "%s.requested_server_name", path);
        if (sharp_config_string_matcher(pb->requested_server_name, p, &m->sm, err, errlen) < 0) return -1;
        m->has_sm = true;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_METADATA:
        snprintf(p, sizeof p, "%s.metadata", path);
        return metadata_from(pb->metadata, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_MATCHER:
        return fail(err, errlen, path, "matcher: not supported by SHARP (RBAC matcher extensions)");
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URI_TEMPLATE:
        return fail(err, errlen, path, "uri_template: not supported by SHARP (RBAC URI template permissions)");
    default:
        return fail(err, errlen, path, "rule: value is required");
    }
}

static int principal_from(const Envoy__Config__Rbac__V3__Principal *pb, const char *path, matcher_t *m, char *err,
                          size_t errlen, unsigned depth)
{
    char p[512];
    if (depth > MAX_DEPTH) return fail(err, errlen, path, "nested too deep");
    switch (pb->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        snprintf(p, sizeof p, "%s.and_ids", path);
        return principal_set(pb->and_ids->ids, pb->and_ids->n_ids, p, "ids", M_AND, m, err, errlen, depth);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        snprintf(p, sizeof p, "%s.or_ids", path);
        return principal_set(pb->or_ids->ids, pb->or_ids->n_ids, p, "ids", M_OR, m, err, errlen, depth);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        m->kind = M_ANY;
        if (!pb->any) return fail(err, errlen, path, "any: value must equal true");
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED:
        m->kind = M_AUTHENTICATED;
        if (pb->authenticated->principal_name) {
            snprintf(p, sizeof p, "%s.authenticated.principal_name", path);
            if (sharp_config_string_matcher(pb->authenticated->principal_name, p, &m->sm, err, errlen) < 0)
                return -1;
            m->has_sm = true;
        }
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        m->kind = M_SOURCE_IP;
        snprintf(p, sizeof p, "%s.source_ip", path);
        return cidr_from(pb->source_ip, p, &m->cidr, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        m->kind = M_DIRECT_REMOTE_IP;
        snprintf(p, sizeof p, "%s.direct_remote_ip", path);
        return cidr_from(pb->direct_remote_ip, p, &m->cidr, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        m->kind = M_REMOTE_IP;
        snprintf(p, sizeof p, "%s.remote_ip", path);
        return cidr_from(pb->remote_ip, p, &m->cidr, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        snprintf(p, sizeof p, "%s.header", path);
        return header_from(pb->header, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        m->kind = M_URL_PATH;
        snprintf(p, sizeof p, "%s.url_path", path);
        return path_from(pb->url_path, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID:
        m->kind = M_NOT;
        m->sub = sharp_calloc(1, sizeof *m->sub);
        m->n = 1;
        snprintf(p, sizeof p, "%s.not_id", path);
        return principal_from(pb->not_id, p, m->sub, err, errlen, depth + 1);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_METADATA:
        snprintf(p, sizeof p, "%s.metadata", path);
        return metadata_from(pb->metadata, p, m, err, errlen);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_FILTER_STATE:
        return fail(err, errlen, path, "filter_state: not supported by SHARP (matching filter state in RBAC principals)");
    default:
        return fail(err, errlen, path, "identifier: value is required");
    }
}

static int policy_cmp(const void *a, const void *b)
{
    return strcmp(((const policy_t *)a)->name, ((const policy_t *)b)->name);
}

void sharp_rbac_engine_free(sharp_rbac_engine_t *e)
{
    if (!e) return;
    for (uint32_t i = 0; i < e->npolicies; i++) {
        free(e->policies[i].name);
        matcher_free(&e->policies[i].permissions);
        matcher_free(&e->policies[i].principals);
    }
    free(e->policies);
    free(e);
}

sharp_rbac_engine_t *sharp_rbac_engine_create(const Envoy__Config__Rbac__V3__RBAC *pb, const char *path, char *err,
                                              size_t errlen)
{
    char p[512];
    if ((unsigned)pb->action > ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG) {
        snprintf(err, errlen, "%s.action: value must be one of the defined enum values", path);
        return NULL;
    }
    if (pb->audit_logging_options) {
        snprintf(err, errlen, "%s.audit_logging_options: not supported by SHARP (RBAC audit loggers)", path);
        return NULL;
    }
    sharp_rbac_engine_t *e = sharp_calloc(1, sizeof *e);
    e->action = (sharp_rbac_action_t)pb->action;
    e->policies = pb->n_policies ? sharp_calloc(pb->n_policies, sizeof *e->policies) : NULL;
    for (size_t i = 0; i < pb->n_policies; i++) {
        const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *pe = pb->policies[i];
        const char *name = pe->key ? pe->key : "";
        policy_t *pol = &e->policies[e->npolicies++];
        pol->name = sharp_strdup(name);
        snprintf(p, sizeof p, "%s.policies[\"%s\"]", path, name);
        const Envoy__Config__Rbac__V3__Policy *pp = pe->value;
        size_t nperm = pp ? pp->n_permissions : 0, nprin = pp ? pp->n_principals : 0;
        if (nperm == 0 || nprin == 0) {
            snprintf(err, errlen, "%s.%s: value must contain at least 1 item(s)", p, nperm ? "principals" : "permissions");
            goto fail;
        }
        if (permission_set(pp->permissions, nperm, p, "permissions", M_OR, &pol->permissions, err, errlen, 0) < 0 ||
            principal_set(pp->principals, nprin, p, "principals", M_OR, &pol->principals, err, errlen, 0) < 0)
            goto fail;
    }
    if (e->npolicies > 1) qsort(e->policies, e->npolicies, sizeof *e->policies, policy_cmp);
    return e;
fail:
    sharp_rbac_engine_free(e);
    return NULL;
}

sharp_rbac_action_t sharp_rbac_engine_action(const sharp_rbac_engine_t *e)
{
    return e->action;
}

uint32_t sharp_rbac_engine_npolicies(const sharp_rbac_engine_t *e)
{
    return e->npolicies;
}

int32_t sharp_rbac_engine_policy_index(const sharp_rbac_engine_t *e, const char *name)
{
    for (uint32_t i = 0; i < e->npolicies; i++)
        if (e->policies[i].name == name) return (int32_t)i;
    return -1;
}

/* ---- evaluation ---- */

static int addr_port(const struct sockaddr *sa)
{
    if (!sa) return -1;
    if (sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -1; /* a pipe: no port (Envoy's ip() is null) */
}

static bool cidr_match(const sharp_cidr_t *c, const struct sockaddr *sa)
{
    return sa && sharp_cidr_contains(c, sa);
}

static bool sm_match(const sharp_string_matcher_t *m, const char *s)
{
    if (!s) s = "";
    return sharp_string_matcher_match(m, (sharp_str_t){s, strlen(s)});
}

/* Envoy's AuthenticatedMatcher: a TLS connection; without principal_name
 * any one; else any URI SAN, then any DNS SAN, then the subject. */
static bool authenticated_match(const matcher_t *m, const sharp_rbac_input_t *in)
{
    if (!in->tls) return false;
    if (!m->has_sm) return true;
    for (size_t i = 0; in->uri_sans && in->uri_sans[i]; i++)
        if (sm_match(&m->sm, in->uri_sans[i])) return true;
    for (size_t i = 0; in->dns_sans && in->dns_sans[i]; i++)
        if (sm_match(&m->sm, in->dns_sans[i])) return true;
    return sm_match(&m->sm, in->subject);
}

/* Envoy's PathMatcher: the :path without its query and fragment; no
 * match without a :path. */
static bool url_path_match(const matcher_t *m, const sharp_rbac_input_t *in)
{
    sharp_str_t path;
    if (!in->headers || !sharp_headers_get(in->headers, ":path", 5, &path)) return false;
    size_t n = 0;
    while (n < path.len && path.p[n] != '?' && path.p[n] != '#') n++;
    return sharp_string_matcher_match(&m->sm, (sharp_str_t){path.p, n});
}

static bool header_match(const matcher_t *m, const sharp_rbac_input_t *in)
{
    static const sharp_headers_t empty; /* a zeroed map is empty (sharp_headers_init) */
    return sharp_header_matcher_match(&m->hm, in->headers ? in->headers : &empty);
}

/* Envoy's ValueMatcher::match; v NULL is a Value without a kind. */
static bool value_match(const value_matcher_t *vm, const sharp_md_value_t *v)
{
    sharp_md_kind_t kind = v ? v->kind : SHARP_MD_UNSET;
    switch (vm->kind) {
    case V_NULL: return kind == SHARP_MD_NULL;
    case V_DOUBLE_RANGE: return kind == SHARP_MD_NUMBER && vm->lo <= v->number && v->number < vm->hi;
    case V_DOUBLE_EXACT: return kind == SHARP_MD_NUMBER && v->number == vm->lo;
    case V_STRING: return kind == SHARP_MD_STRING && sharp_string_matcher_match(&vm->sm, (sharp_str_t){v->s, v->len});
    case V_BOOL: return kind == SHARP_MD_BOOL && v->b == vm->b;
    case V_PRESENT: return vm->b && kind != SHARP_MD_UNSET;
    case V_LIST:
        if (kind != SHARP_MD_LIST) return false;
        for (uint32_t i = 0; i < v->n; i++)
            if (value_match(vm->sub, &v->items[i])) return true;
        return false;
    case V_OR:
        for (uint32_t i = 0; i < vm->n; i++)
            if (value_match(&vm->sub[i], v)) return true;
        return false;
    }
    return false;
}

/* Envoy's Config::Metadata::metadataValue: the namespace's struct, then
 * each key in turn, every one but the last naming a struct; NULL when the
 * path leads nowhere. */
static const sharp_md_value_t *metadata_value(const matcher_t *m, const struct sharp_dynamic_metadata *md)
{
    const sharp_md_value_t *st = sharp_dynamic_metadata_ns(md, m->md_filter, strlen(m->md_filter));
    const sharp_md_value_t *v = NULL;
    for (uint32_t i = 0; i < m->md_npath; i++) {
        if (!st || st->kind != SHARP_MD_STRUCT) return NULL;
        v = sharp_md_struct_get(st, m->md_path[i], strlen(m->md_path[i]));
        if (!v) return NULL;
        st = v;
    }
    return v;
}

static bool matches(const matcher_t *m, const sharp_rbac_input_t *in)
{
    switch (m->kind) {
    case M_AND:
        for (uint32_t i = 0; i < m->n; i++)
            if (!matches(&m->sub[i], in)) return false;
        return true;
    case M_OR:
        for (uint32_t i = 0; i < m->n; i++)
            if (matches(&m->sub[i], in)) return true;
        return false;
    case M_NOT: return !matches(m->sub, in);
    case M_ANY: return true;
    case M_HEADER: return header_match(m, in);
    case M_URL_PATH: return url_path_match(m, in);
    case M_DEST_IP: return cidr_match(&m->cidr, in->local);
    case M_DEST_PORT: return addr_port(in->local) == m->start;
    case M_DEST_PORT_RANGE: {
        int port = addr_port(in->local);
        return port >= 0 && m->start <= port && port < m->end;
    }
    case M_SNI: return sm_match(&m->sm, in->sni);
    case M_AUTHENTICATED: return authenticated_match(m, in);
    case M_SOURCE_IP: return cidr_match(&m->cidr, in->conn_remote);
    case M_DIRECT_REMOTE_IP: return cidr_match(&m->cidr, in->direct_remote);
    case M_REMOTE_IP: return cidr_match(&m->cidr, in->remote);
    case M_METADATA: return value_match(m->md_value, metadata_value(m, in->metadata)) != m->md_invert;
    }
    return false;
}

bool sharp_rbac_engine_allowed(const sharp_rbac_engine_t *e, const sharp_rbac_input_t *in, const char **policy,
                               bool *matched)
{
    const char *hit = NULL;
    for (uint32_t i = 0; i < e->npolicies && !hit; i++) {
        const policy_t *p = &e->policies[i];
        if (matches(&p->permissions, in) && matches(&p->principals, in)) hit = p->name;
    }
    if (policy) *policy = hit;
    if (matched) *matched = hit != NULL;
    switch (e->action) {
    case SHARP_RBAC_ALLOW: return hit != NULL;
    case SHARP_RBAC_DENY: return hit == NULL;
    case SHARP_RBAC_LOG: return true;
    }
    return false;
}

void sharp_rbac_response_detail(const char *id, char *out, size_t cap)
{
    int n = snprintf(out, cap, "rbac_access_denied_matched_policy[%s]", id ? id : "none");
    if (n < 0 || cap == 0) return;
    /* Envoy's StringUtil::replaceAllEmptySpace on the id */
    size_t from = strlen("rbac_access_denied_matched_policy["), len = strlen(out);
    for (size_t i = from; i + 1 < len; i++)
        if (isspace((unsigned char)out[i])) out[i] = '_';
}

void sharp_rbac_stat_join(const char *prefix, const char *token, char *out, size_t cap)
{
    size_t n = strlen(prefix);
    if (n == 0 || prefix[n - 1] == '.') snprintf(out, cap, "%s%s", prefix, token);
    else snprintf(out, cap, "%s.%s", prefix, token);
}
