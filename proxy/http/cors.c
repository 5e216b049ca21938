/* cors.c: see cors.h. The decisions follow Envoy's CorsFilter
 * (source/extensions/filters/http/cors/cors_filter.cc). */
#include "http/cors.h"

#include <stdlib.h>
#include <string.h>

void sharp_cors_policy_free(sharp_cors_policy_t *p)
{
    if (!p) return;
    for (uint32_t i = 0; i < p->norigins; i++)
        sharp_string_matcher_free(&p->origins[i]);
    free(p->origins);
    free(p->allow_methods);
    free(p->allow_headers);
    free(p->expose_headers);
    free(p->max_age);
    free(p->filter_enabled.key);
    free(p->shadow_enabled.key);
    free(p);
}

bool sharp_cors_origin_allowed(const sharp_cors_policies_t *ps, sharp_str_t origin)
{
    for (uint32_t i = 0; i < ps->n; i++) {
        const sharp_cors_policy_t *p = ps->v[i];
        if (!p->norigins) continue;
        for (uint32_t j = 0; j < p->norigins; j++)
            if (sharp_string_matcher_match(&p->origins[j], SHARP_STR("*")) ||
                sharp_string_matcher_match(&p->origins[j], origin))
                return true;
        return false;
    }
    return false;
}

#define FIRST_STRING(field)                                                                        \
    for (uint32_t i = 0; i < ps->n; i++)                                                           \
        if (ps->v[i]->field) return ps->v[i]->field;                                               \
    return NULL

const char *sharp_cors_allow_methods(const sharp_cors_policies_t *ps)
{
    FIRST_STRING(allow_methods);
}

const char *sharp_cors_allow_headers(const sharp_cors_policies_t *ps)
{
    FIRST_STRING(allow_headers);
}

const char *sharp_cors_expose_headers(const sharp_cors_policies_t *ps)
{
    FIRST_STRING(expose_headers);
}

const char *sharp_cors_max_age(const sharp_cors_policies_t *ps)
{
    FIRST_STRING(max_age);
}

#define FIRST_BOOL(field, dflt)                                                                    \
    for (uint32_t i = 0; i < ps->n; i++)                                                           \
        if (ps->v[i]->field != SHARP_CORS_UNSET) return ps->v[i]->field == SHARP_CORS_TRUE;        \
    return dflt

bool sharp_cors_allow_credentials(const sharp_cors_policies_t *ps)
{
    FIRST_BOOL(allow_credentials, false);
}

bool sharp_cors_allow_private_network_access(const sharp_cors_policies_t *ps)
{
    FIRST_BOOL(allow_private_network_access, false);
}

bool sharp_cors_forward_not_matching_preflights(const sharp_cors_policies_t *ps)
{
    FIRST_BOOL(forward_not_matching_preflights, true);
}

/* A request header's value, "" when absent. */
static sharp_str_t header(const sharp_headers_t *h, const char *name)
{
    sharp_str_t v = {"", 0};
    if (!sharp_headers_get_cstr(h, name, &v)) v = (sharp_str_t){"", 0};
    return v;
}

sharp_cors_decision_t sharp_cors_decide(const sharp_cors_policies_t *ps, const sharp_headers_t *req,
                                        bool enabled, bool shadow, sharp_headers_t *resp)
{
    sharp_cors_decision_t d = {.action = SHARP_CORS_PASS};
    if (!ps->n || (!enabled && !shadow)) return d;
    sharp_str_t origin = header(req, "origin");
    if (!origin.len) return d;
    d.counted = true;
    d.origin_allowed = sharp_cors_origin_allowed(ps, origin);
    /* shadow mode: the origin is evaluated and counted, nothing enforced */
    if (!enabled) return d;
    d.action = SHARP_CORS_REQUEST;
    if (!sharp_str_eq(header(req, ":method"), "OPTIONS", 7)) return d;
    sharp_str_t method = header(req, "access-control-request-method");
    if (!method.len) return d;
    /* a preflight: OPTIONS with an Origin and Access-Control-Request-Method */
    if (!d.origin_allowed && sharp_cors_forward_not_matching_preflights(ps)) return d;
    d.action = SHARP_CORS_PREFLIGHT;
    sharp_headers_clear(resp);
    sharp_headers_add_cstr(resp, ":status", "200");
    if (d.origin_allowed)
        sharp_headers_set(resp, "access-control-allow-origin", 27, origin.p, origin.len);
    if (sharp_cors_allow_credentials(ps))
        sharp_headers_set_cstr(resp, "access-control-allow-credentials", "true");
    const char *v = sharp_cors_allow_methods(ps);
    if (v) {
        sharp_str_t s = strcmp(v, "*") == 0 ? method : (sharp_str_t){v, strlen(v)};
        sharp_headers_set(resp, "access-control-allow-methods", 28, s.p, s.len);
    }
    v = sharp_cors_allow_headers(ps);
    if (v) {
        sharp_str_t s = strcmp(v, "*") == 0 ? header(req, "access-control-request-headers")
                                            : (sharp_str_t){v, strlen(v)};
        sharp_headers_set(resp, "access-control-allow-headers", 28, s.p, s.len);
    }
    v = sharp_cors_max_age(ps);
    if (v) sharp_headers_set_cstr(resp, "access-control-max-age", v);
    if (sharp_cors_allow_private_network_access(ps) &&
        sharp_str_eq(header(req, "access-control-request-private-network"), "true", 4))
        sharp_headers_set_cstr(resp, "access-control-allow-private-network", "true");
    return d;
}

void sharp_cors_response_headers(const sharp_cors_policies_t *ps, sharp_str_t origin,
                                 sharp_headers_t *h)
{
    sharp_headers_set(h, "access-control-allow-origin", 27, origin.p, origin.len);
    if (sharp_cors_allow_credentials(ps))
        sharp_headers_set_cstr(h, "access-control-allow-credentials", "true");
    const char *v = sharp_cors_expose_headers(ps);
    if (v) sharp_headers_set_cstr(h, "access-control-expose-headers", v);
}
