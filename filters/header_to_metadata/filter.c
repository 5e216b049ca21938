/* filter.c: envoy.filters.http.header_to_metadata (Envoy's
 * HeaderToMetadataFilter). Request rules run on the request headers,
 * response rules on the response headers; each takes a header (every value
 * joined with ',') or a cookie and, when it is present or missing, sets a
 * key of the stream's dynamic metadata (rules.c). A per-route config
 * (typed_per_filter_config, the same Config) replaces the filter's rules
 * for the stream, decided once on the request headers as Envoy caches its
 * effective config. With stat_prefix the effective config counts
 * http_filter_name.<stat_prefix>.{request,response}_rules_processed,
 * ..._metadata_added, ..._header_not_found, base64_decode_failed,
 * header_value_too_long and regex_substitution_failed; without it none
 * (Envoy's opt-in). */
#include "filters/header_to_metadata/filter.h"
#include "filters/header_to_metadata/rules.h"
#include "safe_regex.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/header_to_metadata/v3/header_to_metadata.pb-c.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

typedef Envoy__Extensions__Filters__Http__HeaderToMetadata__V3__Config h2m_pb_t;
typedef Envoy__Extensions__Filters__Http__HeaderToMetadata__V3__Config__Rule h2m_rule_pb_t;
typedef Envoy__Extensions__Filters__Http__HeaderToMetadata__V3__Config__KeyValuePair h2m_kv_pb_t;

enum { ST_RULES, ST_ADDED, ST_NOT_FOUND, ST_NDIR };

typedef struct h2m_config {
    sharp_h2m_rule_t *req, *resp;
    uint32_t nreq, nresp;
    bool stats;
    sharp_stat_id_t st_dir[2][ST_NDIR]; /* [request, response] */
    sharp_stat_id_t st_base64, st_too_long, st_regex;
} h2m_config_t;

typedef struct h2m_state {
    const h2m_config_t *eff; /* the effective config, from the request headers */
} h2m_state_t;

static void kv_free(sharp_h2m_kv_t *kv)
{
    free(kv->ns);
    free(kv->key);
    free(kv->value);
}

static void rules_free(sharp_h2m_rule_t *r, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(r[i].header);
        free(r[i].cookie);
        kv_free(&r[i].present);
        kv_free(&r[i].missing);
        sharp_re2_free(r[i].re);
        free(r[i].subst);
    }
    free(r);
}

static void config_free(void *p)
{
    h2m_config_t *c = p;
    if (!c) return;
    rules_free(c->req, c->nreq);
    rules_free(c->resp, c->nresp);
    free(c);
}

/* PGV's HTTP_HEADER_NAME with strict false: no NUL, CR or LF. */
static bool header_name_ok(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

static int kv_from(const h2m_kv_pb_t *pb, const char *path, sharp_h2m_kv_t *kv, char *err,
                   size_t errlen)
{
    if (!pb) return 0;
    if (!pb->key || !pb->key[0]) {
        snprintf(err, errlen, "%s.key: value length must be at least 1 characters", path);
        return -1;
    }
    int type = (int)pb->type, encode = (int)pb->encode;
    if (type != SHARP_H2M_STRING && type != SHARP_H2M_NUMBER && type != SHARP_H2M_PROTOBUF_VALUE) {
        snprintf(err, errlen, "%s.type: value must be one of the defined enum values", path);
        return -1;
    }
    if (encode != SHARP_H2M_ENCODE_NONE && encode != SHARP_H2M_ENCODE_BASE64) {
        snprintf(err, errlen, "%s.encode: value must be one of the defined enum values", path);
        return -1;
    }
    kv->set = true;
    kv->ns =
        sharp_strdup(pb->metadata_namespace && pb->metadata_namespace[0] ? pb->metadata_namespace
                                                                         : SHARP_H2M_NAMESPACE);
    kv->key = sharp_strdup(pb->key);
    kv->value = sharp_strdup(pb->value ? pb->value : "");
    kv->type = type;
    kv->encode = encode;
    return 0;
}

/* Envoy's Rule constructor, its checks in its order and with its words. */
static int rule_from(const h2m_rule_pb_t *pb, const char *path, sharp_h2m_rule_t *r, char *err,
                     size_t errlen)
{
    const char *header = pb->header ? pb->header : "", *cookie = pb->cookie ? pb->cookie : "";
    if (!header_name_ok(header) || !header_name_ok(cookie)) {
        snprintf(err, errlen, "%s.%s: value does not match regex pattern of a header name", path,
                 header_name_ok(header) ? "cookie" : "header");
        return -1;
    }
    if (header[0] && cookie[0]) {
        snprintf(err, errlen, "%s: Cannot specify both header and cookie in the same rule", path);
        return -1;
    }
    if (!header[0] && !cookie[0]) {
        snprintf(err, errlen, "%s: One of Cookie or Header option needs to be specified", path);
        return -1;
    }
    if (!pb->on_header_present && !pb->on_header_missing) {
        snprintf(
            err, errlen,
            "%s: header to metadata filter: rule for %s '%s' has neither `on_header_present` nor "
            "`on_header_missing` set",
            path, header[0] ? "header" : "cookie", header[0] ? header : cookie);
        return -1;
    }
    const h2m_kv_pb_t *pr = pb->on_header_present;
    if (pr && pr->value && pr->value[0] && pr->regex_value_rewrite) {
        snprintf(err, errlen, "%s: Cannot specify both value and regex_value_rewrite", path);
        return -1;
    }
    if (cookie[0] && pb->remove) {
        snprintf(err, errlen, "%s: Cannot specify remove for cookie", path);
        return -1;
    }
    if (pb->on_header_missing &&
        (!pb->on_header_missing->value || !pb->on_header_missing->value[0])) {
        snprintf(err, errlen, "%s: Cannot specify on_header_missing rule with an empty value",
                 path);
        return -1;
    }
    char sub[256];
    snprintf(sub, sizeof sub, "%s.on_header_present", path);
    if (kv_from(pr, sub, &r->present, err, errlen) < 0) return -1;
    snprintf(sub, sizeof sub, "%s.on_header_missing", path);
    if (kv_from(pb->on_header_missing, sub, &r->missing, err, errlen) < 0) return -1;
    if (header[0]) {
        r->header = sharp_strdup(header);
        for (char *p = r->header; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    } else {
        r->cookie = sharp_strdup(cookie);
    }
    r->remove = pb->remove;
    if (pr && pr->regex_value_rewrite) {
        const Envoy__Type__Matcher__V3__RegexMatchAndSubstitute *rw = pr->regex_value_rewrite;
        const Envoy__Type__Matcher__V3__RegexMatcher *rx = rw->pattern;
        char msg[512];
        if (!rx || !rx->regex || !rx->regex[0]) {
            snprintf(err, errlen,
                     "%s.on_header_present.regex_value_rewrite.pattern.regex: a regex is required",
                     path);
            return -1;
        }
        sharp_regex_opts_t opts = {0};
        if (rx->engine_type_case ==
                ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__ENGINE_TYPE_GOOGLE_RE2 &&
            rx->google_re2 && rx->google_re2->max_program_size) {
            opts.has_max_program_size = true;
            opts.max_program_size = rx->google_re2->max_program_size->value;
        }
        r->re = sharp_regex_compile(rx->regex, &opts, msg, sizeof msg);
        if (!r->re) {
            snprintf(err, errlen, "%s.on_header_present.regex_value_rewrite.pattern.regex: %s",
                     path, msg);
            return -1;
        }
        const char *subst = rw->substitution ? rw->substitution : "";
        if (sharp_re2_check_rewrite(r->re, subst, msg, sizeof msg) < 0) {
            snprintf(err, errlen,
                     "%s.on_header_present.regex_value_rewrite.substitution: invalid substitution "
                     "'%s': %s",
                     path, subst, msg);
            return -1;
        }
        r->subst = sharp_strdup(subst);
    }
    sharp_h2m_rule_lengths(r);
    return 0;
}

static int rules_from(h2m_rule_pb_t **pb, size_t n, const char *field, sharp_h2m_rule_t **out,
                      uint32_t *nout, char *err, size_t errlen)
{
    if (!n) return 0;
    *out = sharp_calloc(n, sizeof **out);
    *nout = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "%s[%zu]", field, i);
        if (rule_from(pb[i], path, &(*out)[i], err, errlen) < 0) return -1;
    }
    return 0;
}

static h2m_config_t *config_build(const h2m_pb_t *pb, bool per_route, char *err, size_t errlen)
{
    h2m_config_t *c = sharp_calloc(1, sizeof *c);
    if (!pb) return c; /* no typed_config: no rules */
    if (rules_from(pb->request_rules, pb->n_request_rules, "request_rules", &c->req, &c->nreq, err,
                   errlen) < 0 ||
        rules_from(pb->response_rules, pb->n_response_rules, "response_rules", &c->resp, &c->nresp,
                   err, errlen) < 0)
        goto fail;
    /* an empty filter config enables the filter for per-route rules; an
     * empty per-route config makes no sense (Envoy) */
    if (per_route && !c->nreq && !c->nresp) {
        snprintf(err, errlen,
                 "header_to_metadata_filter: Per filter configs must at least specify either "
                 "request or response "
                 "rules");
        goto fail;
    }
    return c;
fail:
    config_free(c);
    return NULL;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    const h2m_pb_t *pb = (const h2m_pb_t *)msg;
    h2m_config_t *c = config_build(pb, false, err, errlen);
    if (!c || !pb || !pb->stat_prefix || !pb->stat_prefix[0]) return c;
    static const char *const dir[2] = {"request", "response"};
    static const char *const names[ST_NDIR] = {"rules_processed", "metadata_added",
                                               "header_not_found"};
    sharp_stats_t *s = ctx->server->stats;
    c->stats = true;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < ST_NDIR; k++)
            c->st_dir[d][k] = sharp_stats_counterf(s, "http_filter_name.%s.%s_%s", pb->stat_prefix,
                                                   dir[d], names[k]);
    c->st_base64 =
        sharp_stats_counterf(s, "http_filter_name.%s.base64_decode_failed", pb->stat_prefix);
    c->st_too_long =
        sharp_stats_counterf(s, "http_filter_name.%s.header_value_too_long", pb->stat_prefix);
    c->st_regex =
        sharp_stats_counterf(s, "http_filter_name.%s.regex_substitution_failed", pb->stat_prefix);
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const h2m_pb_t *pb = (const h2m_pb_t *)msg;
    if (pb && pb->stat_prefix && pb->stat_prefix[0]) {
        snprintf(err, errlen,
                 "stat_prefix: not supported by SHARP in a per-route config (its own stats)");
        return NULL;
    }
    return config_build(pb, true, err, errlen);
}

static void charge(sharp_filter_t *f, const h2m_config_t *c, int d, const sharp_h2m_counts_t *n)
{
    if (!c->stats) return;
    sharp_stats_shard_t *sh = sharp_stream_worker(f->stream)->stats;
    sharp_counter_add(sh, c->st_dir[d][ST_RULES], n->rules_processed);
    sharp_counter_add(sh, c->st_dir[d][ST_ADDED], n->metadata_added);
    sharp_counter_add(sh, c->st_dir[d][ST_NOT_FOUND], n->header_not_found);
    sharp_counter_add(sh, c->st_base64, n->base64_decode_failed);
    sharp_counter_add(sh, c->st_too_long, n->header_value_too_long);
    sharp_counter_add(sh, c->st_regex, n->regex_substitution_failed);
}

/* Envoy's getConfig: the route's config when it has one, else the
 * filter's; kept for the stream once known. */
static const h2m_config_t *effective(sharp_filter_t *f)
{
    h2m_state_t *st = f->state;
    if (!st->eff) {
        const h2m_config_t *rc = sharp_stream_route_config(f);
        st->eff = rc ? rc : f->config;
    }
    return st->eff;
}

static sharp_filter_status_t h2m_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    (void)end_stream;
    const h2m_config_t *c = effective(f);
    if (!c->nreq) return SHARP_FILTER_CONTINUE;
    sharp_h2m_counts_t n = {0};
    sharp_h2m_apply(c->req, c->nreq, h, &sharp_stream_info(f->stream)->dynamic_metadata, &n);
    charge(f, c, 0, &n);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t h2m_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                bool end_stream)
{
    (void)end_stream;
    const h2m_config_t *c = effective(f);
    if (!c->nresp) return SHARP_FILTER_CONTINUE;
    sharp_h2m_counts_t n = {0};
    sharp_h2m_apply(c->resp, c->nresp, h, &sharp_stream_info(f->stream)->dynamic_metadata, &n);
    charge(f, c, 1, &n);
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_header_to_metadata_filter = {
    .name = "envoy.filters.http.header_to_metadata",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
    .config_desc = &envoy__extensions__filters__http__header_to_metadata__v3__config__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(h2m_state_t),
    .decode_headers = h2m_decode_headers,
    .encode_headers = h2m_encode_headers,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
    .route_config_desc =
        &envoy__extensions__filters__http__header_to_metadata__v3__config__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = config_free,
};
