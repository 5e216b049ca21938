/* test_cors.c: the CORS policy decisions (proxy/http/cors.c, Envoy's
 * CorsFilter) and their translation from both messages
 * (config/cors_config.c): origin matching (the first policy with matchers,
 * a matcher matching "*"), attribute precedence from the most specific
 * policy, the preflight answer and when a request is not one, shadow mode,
 * forward_not_matching_preflights, the actual request's response headers,
 * and the deprecated route CorsPolicy's filter_enabled oneof. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cors_config.h"
#include "http/cors.h"

typedef Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy pb_t;
typedef Envoy__Type__Matcher__V3__StringMatcher sm_t;

static sharp_cors_policy_t *policy(const char *exact, const char *prefix, const char *methods,
                                   const char *headers, const char *expose, const char *max_age,
                                   int credentials)
{
    pb_t pb = ENVOY__EXTENSIONS__FILTERS__HTTP__CORS__V3__CORS_POLICY__INIT;
    sm_t m[2] = {ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT,
                 ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT};
    sm_t *mp[2] = {&m[0], &m[1]};
    size_t n = 0;
    if (exact) {
        m[n].match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
        m[n++].exact = (char *)exact;
    }
    if (prefix) {
        m[n].match_pattern_case = ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX;
        m[n++].prefix = (char *)prefix;
    }
    pb.allow_origin_string_match = mp;
    pb.n_allow_origin_string_match = n;
    pb.allow_methods = (char *)(methods ? methods : "");
    pb.allow_headers = (char *)(headers ? headers : "");
    pb.expose_headers = (char *)(expose ? expose : "");
    pb.max_age = (char *)(max_age ? max_age : "");
    Google__Protobuf__BoolValue b = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    if (credentials >= 0) {
        b.value = credentials;
        pb.allow_credentials = &b;
    }
    char err[256] = "";
    sharp_cors_policy_t *p = sharp_config_cors_policy(&pb, "", err, sizeof err);
    assert_non_null(p);
    return p;
}

static sharp_headers_t *req(const char *method, const char *origin, const char *acrm,
                            const char *acrh)
{
    static sharp_headers_t h;
    sharp_headers_free(&h);
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", method);
    if (origin) sharp_headers_add_cstr(&h, "origin", origin);
    if (acrm) sharp_headers_add_cstr(&h, "access-control-request-method", acrm);
    if (acrh) sharp_headers_add_cstr(&h, "access-control-request-headers", acrh);
    return &h;
}

static const char *get(const sharp_headers_t *h, const char *name)
{
    static char buf[256];
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, name, &v)) return NULL;
    snprintf(buf, sizeof buf, "%.*s", (int)v.len, v.p);
    return buf;
}

static void origin_matching(void **state)
{
    (void)state;
    sharp_cors_policy_t *route = policy("https://a.example", NULL, NULL, NULL, NULL, NULL, -1);
    sharp_cors_policy_t *vh = policy(NULL, "https://v", NULL, NULL, NULL, NULL, -1);
    sharp_cors_policy_t *none = policy(NULL, NULL, "GET", NULL, NULL, NULL, -1);
    sharp_cors_policy_t *star = policy("*", NULL, NULL, NULL, NULL, NULL, -1);
    sharp_cors_policies_t ps = {{route, vh}, 2};
    assert_true(sharp_cors_origin_allowed(&ps, SHARP_STR("https://a.example")));
    /* the first policy with matchers decides alone */
    assert_false(sharp_cors_origin_allowed(&ps, SHARP_STR("https://v.example")));
    ps = (sharp_cors_policies_t){{none, vh}, 2};
    assert_true(sharp_cors_origin_allowed(&ps, SHARP_STR("https://v.example")));
    ps = (sharp_cors_policies_t){{none}, 1};
    assert_false(sharp_cors_origin_allowed(&ps, SHARP_STR("https://v.example")));
    /* a matcher that matches "*" allows any origin */
    ps = (sharp_cors_policies_t){{star}, 1};
    assert_true(sharp_cors_origin_allowed(&ps, SHARP_STR("null")));
    sharp_cors_policy_free(route);
    sharp_cors_policy_free(vh);
    sharp_cors_policy_free(none);
    sharp_cors_policy_free(star);
}

static void preflight_answer(void **state)
{
    (void)state;
    sharp_cors_policy_t *route = policy("https://a.example", NULL, "*", NULL, NULL, NULL, -1);
    sharp_cors_policy_t *vh = policy(NULL, NULL, "GET", "*", "x-e", "30", 1);
    sharp_cors_policies_t ps = {{route, vh}, 2};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_cors_decision_t d = sharp_cors_decide(
        &ps, req("OPTIONS", "https://a.example", "PATCH", "x-h"), true, false, &resp);
    assert_int_equal(d.action, SHARP_CORS_PREFLIGHT);
    assert_true(d.counted && d.origin_allowed);
    assert_string_equal(get(&resp, ":status"), "200");
    assert_string_equal(get(&resp, "access-control-allow-origin"), "https://a.example");
    assert_string_equal(get(&resp, "access-control-allow-methods"),
                        "PATCH"); /* "*" from the route */
    assert_string_equal(get(&resp, "access-control-allow-headers"),
                        "x-h"); /* "*" from the virtual host */
    assert_string_equal(get(&resp, "access-control-max-age"), "30");
    assert_string_equal(get(&resp, "access-control-allow-credentials"), "true");
    assert_null(get(&resp, "access-control-expose-headers"));
    assert_null(get(&resp, "access-control-allow-private-network"));
    /* not allowed: forwarded (forward_not_matching_preflights defaults to true) */
    d = sharp_cors_decide(&ps, req("OPTIONS", "https://x.example", "GET", NULL), true, false,
                          &resp);
    assert_int_equal(d.action, SHARP_CORS_REQUEST);
    assert_true(d.counted && !d.origin_allowed);
    route->forward_not_matching_preflights = SHARP_CORS_FALSE;
    d = sharp_cors_decide(&ps, req("OPTIONS", "https://x.example", "GET", NULL), true, false,
                          &resp);
    assert_int_equal(d.action, SHARP_CORS_PREFLIGHT);
    assert_null(get(&resp, "access-control-allow-origin"));
    assert_string_equal(get(&resp, "access-control-allow-methods"), "GET");
    /* "*" allow_headers without access-control-request-headers: empty, as Envoy sets it */
    assert_string_equal(get(&resp, "access-control-allow-headers"), "");
    /* not preflights: no Access-Control-Request-Method, another method, no Origin */
    d = sharp_cors_decide(&ps, req("OPTIONS", "https://a.example", NULL, NULL), true, false, &resp);
    assert_int_equal(d.action, SHARP_CORS_REQUEST);
    d = sharp_cors_decide(&ps, req("GET", "https://a.example", "GET", NULL), true, false, &resp);
    assert_int_equal(d.action, SHARP_CORS_REQUEST);
    d = sharp_cors_decide(&ps, req("OPTIONS", NULL, "GET", NULL), true, false, &resp);
    assert_int_equal(d.action, SHARP_CORS_PASS);
    assert_false(d.counted);
    d = sharp_cors_decide(&ps, req("OPTIONS", "", "GET", NULL), true, false, &resp);
    assert_false(d.counted);
    sharp_headers_free(&resp);
    sharp_cors_policy_free(route);
    sharp_cors_policy_free(vh);
}

static void private_network_access(void **state)
{
    (void)state;
    sharp_cors_policy_t *p = policy("https://a.example", NULL, NULL, NULL, NULL, NULL, -1);
    sharp_cors_policies_t ps = {{p}, 1};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_headers_t *r = req("OPTIONS", "https://a.example", "GET", NULL);
    sharp_headers_add_cstr(r, "access-control-request-private-network", "true");
    sharp_cors_decide(&ps, r, true, false, &resp);
    assert_null(get(&resp, "access-control-allow-private-network"));
    p->allow_private_network_access = SHARP_CORS_TRUE;
    sharp_cors_decide(&ps, r, true, false, &resp);
    assert_string_equal(get(&resp, "access-control-allow-private-network"), "true");
    /* only for the value "true" */
    r = req("OPTIONS", "https://a.example", "GET", NULL);
    sharp_headers_add_cstr(r, "access-control-request-private-network", "yes");
    sharp_cors_decide(&ps, r, true, false, &resp);
    assert_null(get(&resp, "access-control-allow-private-network"));
    sharp_headers_free(&resp);
    sharp_cors_policy_free(p);
}

static void shadow_and_disabled(void **state)
{
    (void)state;
    sharp_cors_policy_t *p = policy("https://a.example", NULL, "GET", NULL, NULL, NULL, -1);
    sharp_cors_policies_t ps = {{p}, 1};
    sharp_headers_t resp;
    sharp_headers_init(&resp);
    sharp_cors_decision_t d = sharp_cors_decide(
        &ps, req("OPTIONS", "https://a.example", "GET", NULL), false, true, &resp);
    assert_int_equal(d.action, SHARP_CORS_PASS);
    assert_true(d.counted && d.origin_allowed);
    d = sharp_cors_decide(&ps, req("OPTIONS", "https://a.example", "GET", NULL), false, false,
                          &resp);
    assert_int_equal(d.action, SHARP_CORS_PASS);
    assert_false(d.counted);
    /* both: enabled wins */
    d = sharp_cors_decide(&ps, req("OPTIONS", "https://a.example", "GET", NULL), true, true, &resp);
    assert_int_equal(d.action, SHARP_CORS_PREFLIGHT);
    /* no policy at all: nothing */
    sharp_cors_policies_t empty = {{0}, 0};
    d = sharp_cors_decide(&empty, req("OPTIONS", "https://a.example", "GET", NULL), true, false,
                          &resp);
    assert_int_equal(d.action, SHARP_CORS_PASS);
    assert_false(d.counted);
    sharp_headers_free(&resp);
    sharp_cors_policy_free(p);
}

static void actual_response_headers(void **state)
{
    (void)state;
    sharp_cors_policy_t *route = policy("https://a.example", NULL, NULL, NULL, NULL, NULL, 0);
    sharp_cors_policy_t *vh = policy(NULL, NULL, NULL, NULL, "x-a,x-b", NULL, 1);
    sharp_cors_policies_t ps = {{route, vh}, 2};
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "access-control-allow-origin", "stale");
    sharp_cors_response_headers(&ps, SHARP_STR("https://a.example"), &h);
    assert_string_equal(get(&h, "access-control-allow-origin"), "https://a.example");
    /* the route's false wins over the virtual host's true */
    assert_null(get(&h, "access-control-allow-credentials"));
    assert_string_equal(get(&h, "access-control-expose-headers"), "x-a,x-b");
    assert_int_equal(h.n, 2);
    sharp_headers_free(&h);
    sharp_cors_policy_free(route);
    sharp_cors_policy_free(vh);
}

static void route_policy_translation(void **state)
{
    (void)state;
    Envoy__Config__Route__V3__CorsPolicy pb = ENVOY__CONFIG__ROUTE__V3__CORS_POLICY__INIT;
    Envoy__Config__Core__V3__RuntimeFractionalPercent rf =
        ENVOY__CONFIG__CORE__V3__RUNTIME_FRACTIONAL_PERCENT__INIT;
    Envoy__Type__V3__FractionalPercent fp = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__INIT;
    fp.numerator = 25;
    fp.denominator = ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND;
    rf.default_value = &fp;
    rf.runtime_key = "cors.k";
    pb.enabled_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__CORS_POLICY__ENABLED_SPECIFIER_FILTER_ENABLED;
    pb.filter_enabled = &rf;
    pb.max_age = "";
    char err[256] = "";
    sharp_cors_policy_t *p = sharp_config_route_cors_policy(&pb, "cors", err, sizeof err);
    assert_non_null(p);
    assert_true(p->has_filter_enabled && !p->has_shadow_enabled);
    assert_int_equal(p->filter_enabled.numerator, 25);
    assert_int_equal(p->filter_enabled.denominator, 10000);
    assert_string_equal(p->filter_enabled.key, "cors.k");
    assert_null(p->max_age); /* empty is unset */
    sharp_cors_policy_free(p);
    rf.default_value = NULL;
    pb.shadow_enabled = &rf;
    pb.enabled_specifier_case = ENVOY__CONFIG__ROUTE__V3__CORS_POLICY__ENABLED_SPECIFIER__NOT_SET;
    assert_null(sharp_config_route_cors_policy(&pb, "cors", err, sizeof err));
    assert_string_equal(err, "cors.shadow_enabled.default_value: required");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(origin_matching),         cmocka_unit_test(preflight_answer),
        cmocka_unit_test(private_network_access),  cmocka_unit_test(shadow_and_disabled),
        cmocka_unit_test(actual_response_headers), cmocka_unit_test(route_policy_translation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
