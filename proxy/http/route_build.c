/* route_build.c: the parts of route.h that build and free route tables, and
 * header mutations (Envoy's HeaderParser). */
#include "http/metadata.h"
#include "http/route.h"
#include "http/filter.h"
#include "http/cors.h"
#include "http/ratelimit_policy.h"

#include <strings.h>

#include <ctype.h>
#include <stdio.h>
#include <strings.h>

#include "http/access_log.h"
#include "sbuf.h"

void sharp__route_index_free(void *p); /* route.c */

int sharp_string_matcher_init(sharp_string_matcher_t *m, sharp_string_match_kind_t kind,
                              const char *value, size_t len, bool ignore_case, char *err,
                              size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->value = sharp_strndup(value ? value : "", value ? len : 0);
    m->len = value ? len : 0;
    m->ignore_case = ignore_case && kind != SHARP_SM_REGEX; /* Envoy ignores it for regexes */
    if (kind == SHARP_SM_REGEX) {
        m->re = sharp_regex_compile(m->value, NULL, err, errlen);
        if (!m->re) {
            free(m->value);
            m->value = NULL;
            return -1;
        }
    }
    return 0;
}

int sharp_string_matcher_init_regex(sharp_string_matcher_t *m, const char *pattern,
                                    const sharp_regex_opts_t *opts, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    m->kind = SHARP_SM_REGEX;
    m->re = sharp_regex_compile(pattern, opts, err, errlen);
    if (!m->re) return -1;
    m->value = sharp_strdup(pattern);
    m->len = strlen(pattern);
    return 0;
}

void sharp_string_matcher_free(sharp_string_matcher_t *m)
{
    sharp_re2_free(m->re);
    free(m->value);
    memset(m, 0, sizeof *m);
}

int sharp_header_op_init(sharp_header_op_t *op, const char *name, const char *value,
                         sharp_header_append_t action, bool keep_empty_value, char *err,
                         size_t errlen)
{
    memset(op, 0, sizeof *op);
    if (value && strchr(value, '%')) {
        op->fmt = sharp_access_log_format_compile(value, err, errlen);
        if (!op->fmt) return -1;
    }
    op->name = sharp_strdup(name);
    for (char *c = op->name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    op->value = sharp_strdup(value ? value : "");
    op->action = action;
    op->keep_empty_value = keep_empty_value;
    return 0;
}

/* ---- applying ---- */

typedef struct {
    const sharp_header_op_t *op;
    size_t off, len; /* value: in `vals` when op->fmt, else op->value */
    bool overwrite;
} pending_t;

/* Envoy's HeaderParser::evaluateHeaders: removals first; then every value is
 * computed and every action decided against the headers as they are after
 * the removals (so two ADD_IF_ABSENT of one name both add); then overwrites
 * are applied, then appends. Empty values are skipped unless
 * keep_empty_value. */
void sharp_header_ops_apply_si(const sharp_header_ops_t *ops, sharp_headers_t *h,
                               const struct sharp_stream_info *si)
{
    if (!ops) return;
    for (uint32_t i = 0; i < ops->nremove; i++)
        sharp_headers_remove_cstr(h, ops->remove[i]);
    if (!ops->nadd) return;
    pending_t local[16], *pend = ops->nadd <= 16 ? local : sharp_calloc(ops->nadd, sizeof *pend);
    uint32_t np = 0;
    sharp_sbuf_t vals = {0};
    for (uint32_t i = 0; i < ops->nadd; i++) {
        const sharp_header_op_t *op = &ops->add[i];
        size_t off = 0, len = strlen(op->value);
        if (op->fmt) {
            off = vals.len;
            sharp_access_log_format_render_header(op->fmt, si, &vals);
            len = vals.len - off;
        }
        if (!len && !op->keep_empty_value) continue;
        bool exists = sharp_headers_find(h, op->name, strlen(op->name), 0) >= 0;
        bool overwrite;
        switch (op->action) {
        case SHARP_ADD_IF_ABSENT:
            if (exists) continue;
            overwrite = false;
            break;
        case SHARP_OVERWRITE_IF_EXISTS:
            if (!exists) continue;
            overwrite = true;
            break;
        case SHARP_OVERWRITE_IF_EXISTS_OR_ADD:
            overwrite = true;
            break;
        case SHARP_APPEND_IF_EXISTS_OR_ADD:
        default:
            overwrite = false;
            break;
        }
        pend[np++] = (pending_t){op, off, len, overwrite};
    }
    for (int pass = 0; pass < 2; pass++)
        for (uint32_t i = 0; i < np; i++) {
            const pending_t *p = &pend[i];
            if (p->overwrite != (pass == 0)) continue;
            const char *v = p->op->fmt ? vals.data + p->off : p->op->value;
            if (p->overwrite)
                sharp_headers_set(h, p->op->name, strlen(p->op->name), v, p->len);
            else
                sharp_headers_add(h, p->op->name, strlen(p->op->name), v, p->len);
        }
    sharp_sbuf_free(&vals);
    if (pend != local) free(pend);
}

void sharp_header_ops_apply(const sharp_header_ops_t *ops, sharp_headers_t *h)
{
    sharp_header_ops_apply_si(ops, h, NULL);
}

static void apply_levels(const sharp_header_ops_t *const levels[4], bool reverse,
                         sharp_headers_t *h, const struct sharp_stream_info *si)
{
    for (int i = 0; i < 4; i++) {
        const sharp_header_ops_t *ops = levels[reverse ? 3 - i : i];
        if (ops && (ops->nadd || ops->nremove)) sharp_header_ops_apply_si(ops, h, si);
    }
}

void sharp_route_apply_request_headers(const sharp_route_table_t *t, const sharp_vhost_t *vh,
                                       const sharp_route_t *r, const sharp_weighted_cluster_t *wc,
                                       sharp_headers_t *h, const struct sharp_stream_info *si)
{
    const sharp_header_ops_t *levels[4] = {wc ? &wc->req_ops : NULL, r ? &r->req_ops : NULL,
                                           vh ? &vh->req_ops : NULL, t ? &t->req_ops : NULL};
    apply_levels(levels, t && t->most_specific_header_mutations_wins, h, si);
}

void sharp_route_apply_response_headers(const sharp_route_table_t *t, const sharp_vhost_t *vh,
                                        const sharp_route_t *r, const sharp_weighted_cluster_t *wc,
                                        sharp_headers_t *h, const struct sharp_stream_info *si)
{
    const sharp_header_ops_t *levels[4] = {wc ? &wc->resp_ops : NULL, r ? &r->resp_ops : NULL,
                                           vh ? &vh->resp_ops : NULL, t ? &t->resp_ops : NULL};
    apply_levels(levels, t && t->most_specific_header_mutations_wins, h, si);
}

/* ---- freeing ---- */

static void free_ops(sharp_header_ops_t *ops)
{
    for (uint32_t i = 0; i < ops->nadd; i++) {
        free(ops->add[i].name);
        free(ops->add[i].value);
        sharp_access_log_format_free(ops->add[i].fmt);
    }
    free(ops->add);
    for (uint32_t i = 0; i < ops->nremove; i++)
        free(ops->remove[i]);
    free(ops->remove);
    memset(ops, 0, sizeof *ops);
}

void sharp_header_ops_free(sharp_header_ops_t *ops)
{
    free_ops(ops);
}

static void free_matchers(sharp_header_matcher_t *m, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(m[i].name);
        sharp_string_matcher_free(&m[i].sm);
    }
    free(m);
}

static void free_retry(sharp_retry_policy_t *rp)
{
    free(rp->retry_on);
    free(rp->retriable_status_codes);
    free_matchers(rp->retriable_headers, rp->nretriable_headers);
    free_matchers(rp->retriable_request_headers, rp->nretriable_request_headers);
}

typedef struct {
    const char *name;
    uint32_t bit;
} retry_name_t;

/* The bits of the comma-separated condition names in p that the table
 * knows; unknown names add nothing (Envoy ignores them in headers). */
static uint32_t retry_names_parse(const char *p, size_t n, const retry_name_t *names, size_t count)
{
    uint32_t bits = 0;
    sharp_str_t rest = {p, n}, item;
    while (sharp_list_next(&rest, &item))
        for (size_t k = 0; k < count; k++)
            if (strlen(names[k].name) == item.len && strncasecmp(names[k].name, item.p, item.len) == 0)
                bits |= names[k].bit;
    return bits;
}

uint32_t sharp_retry_on_parse(const char *p, size_t n)
{
    static const retry_name_t names[] = {
        {"5xx", SHARP_RETRY_5XX},
        {"gateway-error", SHARP_RETRY_GATEWAY_ERROR},
        {"reset", SHARP_RETRY_RESET},
        {"connect-failure", SHARP_RETRY_CONNECT_FAILURE},
        {"retriable-4xx", SHARP_RETRY_RETRIABLE_4XX},
        {"refused-stream", SHARP_RETRY_REFUSED_STREAM},
        {"retriable-status-codes", SHARP_RETRY_RETRIABLE_STATUS_CODES},
        {"retriable-headers", SHARP_RETRY_RETRIABLE_HEADERS},
        {"envoy-ratelimited", SHARP_RETRY_ENVOY_RATELIMITED},
        {"reset-before-request", SHARP_RETRY_RESET_BEFORE_REQUEST},
    };
    return retry_names_parse(p, n, names, SHARP_ARRAY_SIZE(names));
}

uint32_t sharp_retry_grpc_on_parse(const char *p, size_t n)
{
    static const retry_name_t names[] = {
        {"cancelled", SHARP_RETRY_GRPC_CANCELLED},
        {"deadline-exceeded", SHARP_RETRY_GRPC_DEADLINE_EXCEEDED},
        {"resource-exhausted", SHARP_RETRY_GRPC_RESOURCE_EXHAUSTED},
        {"unavailable", SHARP_RETRY_GRPC_UNAVAILABLE},
        {"internal", SHARP_RETRY_GRPC_INTERNAL},
    };
    return retry_names_parse(p, n, names, SHARP_ARRAY_SIZE(names));
}

bool sharp_retry_grpc_status_matches(uint32_t on, int64_t st)
{
    return (st == 1 && (on & SHARP_RETRY_GRPC_CANCELLED)) || (st == 4 && (on & SHARP_RETRY_GRPC_DEADLINE_EXCEEDED)) ||
           (st == 8 && (on & SHARP_RETRY_GRPC_RESOURCE_EXHAUSTED)) || (st == 14 && (on & SHARP_RETRY_GRPC_UNAVAILABLE)) ||
           (st == 13 && (on & SHARP_RETRY_GRPC_INTERNAL));
}

static void free_mirror(sharp_mirror_policies_t *m)
{
    for (uint32_t i = 0; i < m->n; i++) {
        free(m->p[i].cluster);
        free(m->p[i].cluster_header);
        free(m->p[i].fraction.key);
    }
    free(m->p);
}

static void free_route(sharp_route_t *r)
{
    free_mirror(&r->mirror_own);
    free(r->name);
    free(r->decorator_operation);
    sharp_custom_tags_free(&r->tracing_tags);
    free(r->path);
    sharp_re2_free(r->path_re);
    free_matchers(r->headers, r->nheaders);
    for (uint32_t i = 0; i < r->nquery; i++) {
        free(r->query[i].name);
        sharp_string_matcher_free(&r->query[i].sm);
    }
    free(r->query);
    free(r->cluster);
    free(r->runtime_fraction.key);
    free(r->metadata_match);
    for (uint32_t i = 0; i < r->nweighted; i++) {
        free(r->weighted[i].name);
        free(r->weighted[i].runtime_key);
        free(r->weighted[i].metadata_match);
        free_ops(&r->weighted[i].req_ops);
        free_ops(&r->weighted[i].resp_ops);
        sharp_per_filter_configs_free(&r->weighted[i].per_filter);
    }
    free(r->weighted);
    free(r->prefix_rewrite);
    sharp_re2_free(r->regex_rewrite);
    free(r->regex_rewrite_sub);
    free(r->host_rewrite);
    free_retry(&r->retry);
    for (uint32_t i = 0; i < r->nhash_policies; i++)
        free(r->hash_policies[i].name);
    free(r->hash_policies);
    for (uint32_t i = 0; i < r->nupgrades; i++) free(r->upgrades[i].type);
    free(r->upgrades);
    free(r->direct_body);
    free(r->redirect.scheme);
    free(r->redirect.host);
    free(r->redirect.path);
    free(r->redirect.prefix_rewrite);
    sharp_re2_free(r->redirect.regex_rewrite);
    free(r->redirect.regex_rewrite_sub);
    free_ops(&r->req_ops);
    free_ops(&r->resp_ops);
    sharp_per_filter_configs_free(&r->per_filter);
    sharp_cors_policy_free(r->cors);
    if (r->rate_limits) sharp_rate_limits_free(r->rate_limits);
    free(r->rate_limits);
    sharp_dynamic_metadata_free(r->metadata);
}

void sharp_per_filter_configs_free(sharp_per_filter_configs_t *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        sharp_per_filter_t *e = &c->v[i];
        if (e->config && e->factory && e->factory->destroy_route_config) e->factory->destroy_route_config(e->config);
        free(e->name);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

void sharp_route_table_free(sharp_route_table_t *t)
{
    if (!t) return;
    for (uint32_t v = 0; v < t->nvhosts; v++) {
        sharp_vhost_t *vh = &t->vhosts[v];
        free(vh->name);
        for (uint32_t d = 0; d < vh->ndomains; d++)
            free(vh->domains[d]);
        free(vh->domains);
        for (uint32_t r = 0; r < vh->nroutes; r++)
            free_route(&vh->routes[r]);
        free(vh->routes);
        free_route(&vh->tls_redirect);
        free_ops(&vh->req_ops);
        free_ops(&vh->resp_ops);
        free_retry(&vh->retry);
        free_mirror(&vh->mirror_own);
        sharp_per_filter_configs_free(&vh->per_filter);
        sharp_cors_policy_free(vh->cors);
        if (vh->rate_limits) sharp_rate_limits_free(vh->rate_limits);
        free(vh->rate_limits);
    }
    free_mirror(&t->mirror);
    free(t->vhosts);
    free_ops(&t->req_ops);
    free_ops(&t->resp_ops);
    for (uint32_t i = 0; i < t->ninternal_only_headers; i++)
        free(t->internal_only_headers[i]);
    free(t->internal_only_headers);
    sharp_per_filter_configs_free(&t->per_filter);
    free(t->name);
    sharp__route_index_free(t->domain_index);
    free(t);
}
