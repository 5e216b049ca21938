/* filter.c: envoy.filters.http.csrf, Envoy's CSRF filter.
 *
 * The policy (CsrfPolicy) is the most specific typed_per_filter_config
 * entry of the request's route (weighted cluster, route, virtual host,
 * route table), else the filter's own. Its filter_enabled and
 * shadow_enabled (none: off) are drawn for the request; with both off,
 * or for a method that changes nothing (all but POST, PUT, DELETE and
 * PATCH), the request passes unchecked.
 *
 * Otherwise the source origin is the host and port of the Origin header
 * (its value as is when it is no absolute URL), or of the Referer when
 * Origin gives nothing; the target origin is the host and port of
 * "<:scheme>://<:authority>". The request is valid when both are equal or
 * an additional_origins matcher takes the source. An empty source counts
 * in http.<stat_prefix>.csrf.missing_source_origin, an invalid request in
 * ...csrf.request_invalid (both for a missing source, as in Envoy), a
 * valid one in ...csrf.request_valid. An invalid request is answered 403
 * "Invalid origin" (response code details csrf_origin_mismatch) unless
 * only shadow mode is on. */
#include "filters/csrf/filter.h"
#include "config/route_config.h"
#include "http/route.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/csrf/v3/csrf.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__Csrf__V3__CsrfPolicy csrf_pb_t;

typedef struct csrf_policy {
    sharp_runtime_fraction_t filter_enabled, shadow_enabled;
    bool has_shadow;
    sharp_string_matcher_t *origins;
    uint32_t norigins;
} csrf_policy_t;

typedef struct csrf_config {
    csrf_policy_t *policy;
    sharp_stat_id_t missing_source_origin, request_invalid, request_valid;
} csrf_config_t;

/* ---- origins (exported for the unit tests) ---- */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* http_parser's host characters (a registered name or an IPv4 address). */
static bool is_host_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '.' || c == '-' || c == '_';
}

static bool is_ipv6_char(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
}

sharp_str_t sharp_csrf_host_and_port(sharp_str_t url)
{
    const char *p = url.p, *end = url.p + url.len;
    for (const char *q = p; q < end; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f) return url;
    /* scheme "://" */
    const char *q = p;
    while (q < end && is_alpha(*q))
        q++;
    if (q == p || end - q < 3 || memcmp(q, "://", 3) != 0) return url;
    const char *auth = q + 3, *auth_end = auth;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    /* userinfo: up to the one '@' */
    const char *at = NULL;
    for (const char *r = auth; r < auth_end; r++)
        if (*r == '@') {
            if (at) return url;
            at = r;
        }
    const char *host = at ? at + 1 : auth, *h = host;
    if (h < auth_end && *h == '[') {
        h++;
        while (h < auth_end && is_ipv6_char(*h))
            h++;
        if (h == host + 1 || h == auth_end || *h != ']') return url;
        h++;
    } else {
        while (h < auth_end && is_host_char(*h))
            h++;
        if (h == host) return url;
    }
    if (h < auth_end) {
        if (*h != ':') return url;
        const char *port = ++h;
        uint32_t v = 0;
        while (h < auth_end && is_digit(*h) && h - port < 6)
            v = v * 10 + (uint32_t)(*h++ - '0');
        if (h == port || h != auth_end || v > 65535) return url;
    }
    return (sharp_str_t){host, (size_t)(auth_end - host)};
}

bool sharp_csrf_mutating(sharp_str_t m)
{
    return sharp_str_eq(m, "POST", 4) || sharp_str_eq(m, "PUT", 3) ||
           sharp_str_eq(m, "DELETE", 6) || sharp_str_eq(m, "PATCH", 5);
}

/* ---- config ---- */

static void policy_free(csrf_policy_t *p)
{
    if (!p) return;
    free(p->filter_enabled.key);
    free(p->shadow_enabled.key);
    for (uint32_t i = 0; i < p->norigins; i++)
        sharp_string_matcher_free(&p->origins[i]);
    free(p->origins);
    free(p);
}

static csrf_policy_t *policy_build(const csrf_pb_t *pb, char *err, size_t errlen)
{
    if (!pb->filter_enabled) {
        snprintf(err, errlen, "filter_enabled: value is required");
        return NULL;
    }
    csrf_policy_t *p = sharp_calloc(1, sizeof *p);
    if (sharp_config_runtime_fraction(pb->filter_enabled, "filter_enabled", &p->filter_enabled, err, errlen) < 0)
        goto fail;
    if (pb->shadow_enabled) {
        if (sharp_config_runtime_fraction(pb->shadow_enabled, "shadow_enabled", &p->shadow_enabled, err, errlen) <
            0)
            goto fail;
        p->has_shadow = true;
    }
    if (pb->n_additional_origins) {
        p->origins = sharp_calloc(pb->n_additional_origins, sizeof *p->origins);
        for (size_t i = 0; i < pb->n_additional_origins; i++) {
            char path[64];
            snprintf(path, sizeof path, "additional_origins[%zu]", i);
            if (sharp_config_string_matcher(pb->additional_origins[i], path, &p->origins[i], err,
                                            errlen) < 0) {
                sharp_string_matcher_free(&p->origins[i]);
                goto fail;
            }
            p->norigins++;
        }
    }
    return p;
fail:
    policy_free(p);
    return NULL;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    if (!msg) {
        snprintf(err, errlen, "filter_enabled: value is required");
        return NULL;
    }
    csrf_policy_t *p = policy_build((const csrf_pb_t *)msg, err, errlen);
    if (!p) return NULL;
    csrf_config_t *c = sharp_calloc(1, sizeof *c);
    c->policy = p;
    sharp_stats_t *s = ctx->server->stats;
    c->missing_source_origin =
        sharp_stats_counterf(s, "http.%s.csrf.missing_source_origin", ctx->stat_prefix);
    c->request_invalid = sharp_stats_counterf(s, "http.%s.csrf.request_invalid", ctx->stat_prefix);
    c->request_valid = sharp_stats_counterf(s, "http.%s.csrf.request_valid", ctx->stat_prefix);
    return c;
}

static void destroy_config(void *p)
{
    csrf_config_t *c = p;
    if (!c) return;
    policy_free(c->policy);
    free(c);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    return policy_build((const csrf_pb_t *)msg, err, errlen);
}

static void destroy_route_config(void *p)
{
    policy_free(p);
}

/* ---- the check ---- */

/* A header's lines joined by ',' (Envoy's inline headers); "" when absent. */
static sharp_str_t joined(const sharp_headers_t *h, const char *name, sharp_sbuf_t *buf)
{
    size_t nl = strlen(name);
    int i = sharp_headers_find(h, name, nl, 0);
    if (i < 0) return (sharp_str_t){"", 0};
    int next = sharp_headers_find(h, name, nl, (uint32_t)i + 1);
    if (next < 0) return sharp_headers_value(h, (uint32_t)i);
    for (; i >= 0; i = sharp_headers_find(h, name, nl, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        if (buf->len) sharp_sbuf_append(buf, ",", 1);
        sharp_sbuf_append(buf, v.p, v.len);
    }
    return (sharp_str_t){buf->data ? buf->data : "", buf->len};
}

static bool origin_valid(const csrf_policy_t *p, sharp_str_t source, const sharp_headers_t *h)
{
    sharp_str_t host = {"", 0}, scheme = {"http", 4};
    sharp_headers_get_cstr(h, ":authority", &host);
    if (!sharp_headers_get_cstr(h, ":scheme", &scheme) || !scheme.len)
        scheme = (sharp_str_t){"http", 4};
    bool ok;
    if (!host.len) {
        ok = source.len == 0; /* no Host: the target origin is empty */
    } else {
        /* "<scheme>://<host>" */
        size_t n = scheme.len + 3 + host.len;
        char stackbuf[512];
        char *url = n <= sizeof stackbuf ? stackbuf : sharp_calloc(1, n);
        memcpy(url, scheme.p, scheme.len);
        memcpy(url + scheme.len, "://", 3);
        memcpy(url + scheme.len + 3, host.p, host.len);
        sharp_str_t target = sharp_csrf_host_and_port((sharp_str_t){url, n});
        ok = target.len == source.len && memcmp(target.p, source.p, source.len) == 0;
        if (url != stackbuf) free(url);
    }
    for (uint32_t i = 0; !ok && i < p->norigins; i++)
        ok = sharp_string_matcher_match(&p->origins[i], source);
    return ok;
}

static sharp_filter_status_t csrf_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                 bool end_stream)
{
    (void)end_stream;
    const csrf_config_t *c = f->config;
    const csrf_policy_t *p = sharp_stream_route_config(f);
    if (!p) p = c->policy;
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    /* drawn once for the request */
    bool enabled = sharp_fraction_enabled(&p->filter_enabled, sharp_worker_random(w));
    bool shadow =
        p->has_shadow && sharp_fraction_enabled(&p->shadow_enabled, sharp_worker_random(w));
    if (!enabled && !shadow) return SHARP_FILTER_CONTINUE;
    sharp_str_t method = {"", 0};
    sharp_headers_get_cstr(h, ":method", &method);
    if (!sharp_csrf_mutating(method)) return SHARP_FILTER_CONTINUE;

    sharp_sbuf_t ob = {0}, rb = {0};
    sharp_str_t source = sharp_csrf_host_and_port(joined(h, "origin", &ob));
    if (!source.len) source = sharp_csrf_host_and_port(joined(h, "referer", &rb));
    bool valid = true;
    if (!source.len) {
        valid = false;
        sharp_counter_inc(w->stats, c->missing_source_origin);
    }
    if (!origin_valid(p, source, h)) {
        valid = false;
        sharp_counter_inc(w->stats, c->request_invalid);
    }
    sharp_sbuf_free(&ob);
    sharp_sbuf_free(&rb);
    if (valid) {
        sharp_counter_inc(w->stats, c->request_valid);
        return SHARP_FILTER_CONTINUE;
    }
    if (shadow && !enabled) return SHARP_FILTER_CONTINUE;
    sharp_stream_send_local_reply(f, 403, "Invalid origin", 0, "csrf_origin_mismatch");
    return SHARP_FILTER_STOP;
}

const sharp_filter_factory_t sharp_csrf_filter = {
    .name = "envoy.filters.http.csrf",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
    .config_desc = &envoy__extensions__filters__http__csrf__v3__csrf_policy__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = 0,
    .decode_headers = csrf_decode_headers,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy",
    .route_config_desc = &envoy__extensions__filters__http__csrf__v3__csrf_policy__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};
