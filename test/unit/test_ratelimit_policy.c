/* test_ratelimit_policy.c: route and virtual host rate_limits (from YAML
 * through the mapper and the route table translation) and the descriptors
 * their actions make for a request (http/ratelimit_policy.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config/mapper.h"
#include "config/route_config.h"
#include "config/support.h"
#include "config/types.h"
#include "http/filter.h"
#include "http/metadata.h"
#include "http/ratelimit_policy.h"
#include "upstream/host.h"
#include "upstream/locality_md.h"

#include "envoy/extensions/filters/http/ratelimit/v3/rate_limit.pb-c.h"

#include <stdlib.h>

typedef struct {
    sharp_config_doc_t *doc;
    sharp_route_table_t *t;
    char err[1024];
} built_t;

static const char *HEAD = "virtual_hosts:\n"
                          "- name: vh\n"
                          "  domains: ['*']\n"
                          "  routes:\n"
                          "  - match: { prefix: / }\n"
                          "    route:\n"
                          "      cluster: backend\n"
                          "      rate_limits:\n";

/* A table whose one route has `rate_limits` (YAML indented for the
 * route's rate_limits list). */
static void build(built_t *b, const char *rate_limits)
{
    char yaml[8192];
    snprintf(yaml, sizeof yaml, "%s%s", HEAD, rate_limits);
    sharp_config_error_t perr;
    memset(b, 0, sizeof *b);
    b->doc = sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                                &envoy__config__route__v3__route_configuration__descriptor, &perr);
    if (!b->doc) {
        /* the mapper refuses a field the support table refuses */
        snprintf(b->err, sizeof b->err, "%s", perr.msg);
        return;
    }
    if (sharp_config_check_support(sharp_config_doc_message(b->doc), b->doc, NULL, &perr) < 0) {
        snprintf(b->err, sizeof b->err, "%s", perr.msg);
        return;
    }
    b->t = sharp_route_table_create((const void *)sharp_config_doc_message(b->doc), b->err,
                                    sizeof b->err);
}

static void release(built_t *b)
{
    sharp_route_table_free(b->t);
    sharp_config_doc_free(b->doc);
}

static const sharp_rate_limits_t *route_limits(const built_t *b)
{
    assert_non_null(b->t);
    return b->t->vhosts[0].routes[0].rate_limits;
}

/* The descriptors of every RateLimit of the route, as
 * "k=v,k=v|k=v" (descriptors separated by '|'). */
static void describe(const sharp_rate_limits_t *rls, const sharp_rl_input_t *in, char *out,
                     size_t cap)
{
    sharp_rl_descriptors_t d = {0};
    for (uint32_t i = 0; i < rls->n; i++)
        sharp_rate_limit_populate(&rls->v[i], in, &d);
    size_t n = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < d.n; i++) {
        if (i) n += (size_t)snprintf(out + n, cap - n, "|");
        for (uint32_t j = 0; j < d.d[i].n; j++)
            n += (size_t)snprintf(out + n, cap - n, "%s%s=%s", j ? "," : "", d.d[i].entries[j].key,
                                  d.d[i].entries[j].value);
    }
    sharp_rl_descriptors_free(&d);
}

static sharp_headers_t req_headers(const char *path, const char *method)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", method);
    sharp_headers_add_cstr(&h, ":path", path);
    sharp_headers_add_cstr(&h, ":authority", "example.com");
    sharp_headers_add_cstr(&h, "x-user", "alice");
    sharp_headers_add_cstr(&h, "x-user", "bob");
    return h;
}

static void test_every_action(void **state)
{
    (void)state;
    built_t b;
    build(&b,
          "      - actions:\n"
          "        - source_cluster: {}\n"
          "        - destination_cluster: {}\n"
          "        - request_headers: { header_name: X-User, descriptor_key: user }\n"
          "        - remote_address: {}\n"
          "        - masked_remote_address: { v4_prefix_mask_len: 24, v6_prefix_mask_len: 64 }\n"
          "        - generic_key: { descriptor_value: v1 }\n"
          "        - generic_key: { descriptor_value: v2, descriptor_key: k2 }\n"
          "        - header_value_match: { descriptor_value: get, headers: [{ name: ':method', "
          "exact_match: GET }] }\n"
          "        - query_parameter_value_match: { descriptor_value: q, descriptor_key: qk, "
          "query_parameters: [{ name: a, string_match: { prefix: x } }] }\n");
    const sharp_rate_limits_t *rls = route_limits(&b);
    assert_int_equal(rls->n, 1);
    assert_int_equal(rls->v[0].stage, 0);
    assert_null(rls->v[0].disable_key);
    sharp_headers_t h = req_headers("/p?a=xyz&b=1", "GET");
    sharp_rl_input_t in = {.headers = &h,
                           .local_cluster = "front",
                           .route_cluster = "backend",
                           .remote_address = "10.1.2.3:5555"};
    char out[1024];
    describe(rls, &in, out, sizeof out);
    assert_string_equal(out,
                        "source_cluster=front,destination_cluster=backend,user=alice,"
                        "remote_address=10.1.2.3,masked_remote_address=10.1.2.0/24,generic_key=v1,"
                        "k2=v2,header_match=get,qk=q");
    /* IPv6: the address without brackets, the v6 mask */
    in.remote_address = "[2001:db8:1:2:3::4]:80";
    describe(rls, &in, out, sizeof out);
    assert_non_null(
        strstr(out, "remote_address=2001:db8:1:2:3::4,masked_remote_address=2001:db8:1:2::/64,"));
    sharp_headers_free(&h);
    release(&b);
}

/* An action that cannot add its entry drops the whole descriptor;
 * skip_if_absent adds nothing and goes on. */
static void test_failing_actions(void **state)
{
    (void)state;
    built_t b;
    build(&b,
          "      - actions: [{ request_headers: { header_name: x-none, descriptor_key: nn } }]\n"
          "      - actions: [{ generic_key: { descriptor_value: a } }, { request_headers: { "
          "header_name: "
          "x-none, descriptor_key: nn, skip_if_absent: true } }, { generic_key: { "
          "descriptor_value: b, "
          "descriptor_key: k } }]\n"
          "      - actions: [{ header_value_match: { descriptor_value: post, headers: [{ name: "
          "':method', "
          "exact_match: POST }] } }]\n"
          "      - actions: [{ header_value_match: { descriptor_value: notpost, expect_match: "
          "false, headers: "
          "[{ name: ':method', exact_match: POST }] } }]\n"
          "      - actions: [{ query_parameter_value_match: { descriptor_value: q, "
          "query_parameters: [{ name: "
          "missing }] } }]\n"
          "      - actions: [{ remote_address: {} }]\n"
          "      - actions: [{ destination_cluster: {} }]\n");
    const sharp_rate_limits_t *rls = route_limits(&b);
    sharp_headers_t h = req_headers("/p", "GET");
    /* a client on a Unix socket has no IP; no routed cluster */
    sharp_rl_input_t in = {
        .headers = &h, .local_cluster = "", .route_cluster = NULL, .remote_address = "/run/sock"};
    char out[1024];
    describe(rls, &in, out, sizeof out);
    assert_string_equal(out, "generic_key=a,k=b|header_match=notpost");
    /* an empty remote address is not an IP either */
    in.remote_address = "";
    describe(rls, &in, out, sizeof out);
    assert_string_equal(out, "generic_key=a,k=b|header_match=notpost");
    sharp_headers_free(&h);
    release(&b);
}

static void test_stage_disable_key_and_defaults(void **state)
{
    (void)state;
    built_t b;
    build(&b, "      - stage: 3\n"
              "        disable_key: dk\n"
              "        actions: [{ masked_remote_address: {} }]\n");
    const sharp_rate_limits_t *rls = route_limits(&b);
    assert_int_equal(rls->v[0].stage, 3);
    assert_string_equal(rls->v[0].disable_key, "dk");
    assert_int_equal(rls->v[0].actions[0].v4_mask, 32);
    assert_int_equal(rls->v[0].actions[0].v6_mask, 128);
    sharp_headers_t h = req_headers("/", "GET");
    sharp_rl_input_t in = {.headers = &h, .remote_address = "192.168.7.9:1"};
    char out[256];
    describe(rls, &in, out, sizeof out);
    assert_string_equal(out, "masked_remote_address=192.168.7.9/32");
    sharp_headers_free(&h);
    release(&b);
}

/* query_parameter_value_match reads names and values percent-decoded
 * ("%XX" only, '+' kept), the first value of a name. */
static void test_query_decoding(void **state)
{
    (void)state;
    built_t b;
    build(&b, "      - actions: [{ query_parameter_value_match: { descriptor_value: q, "
              "query_parameters: [{ name: a, "
              "string_match: { exact: 'x y+' } }] } }]\n"
              "      - actions: [{ query_parameter_value_match: { descriptor_value: p, "
              "query_parameters: [{ name: "
              "flag }] } }]\n");
    const sharp_rate_limits_t *rls = route_limits(&b);
    static const struct {
        const char *path, *want;
    } cases[] = {
        {"/p?a%3D=1&%61=x%20y+&a=other", "query_match=q"},
        {"/p?a=x%20y%2B", "query_match=q"},
        {"/p?a=x+y%2B", ""},
        {"/p?a=x%2", ""},
        {"/p?flag&a=x y+", "query_match=q|query_match=p"},
        {"/p", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sharp_headers_t h = req_headers(cases[i].path, "GET");
        sharp_rl_input_t in = {.headers = &h, .remote_address = ""};
        char out[256];
        describe(rls, &in, out, sizeof out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("%s: got '%s', want '%s'", cases[i].path, out, cases[i].want);
        sharp_headers_free(&h);
    }
    release(&b);
}

static void expect_error(const char *rate_limits, const char *want)
{
    built_t b;
    build(&b, rate_limits);
    if (b.t) fail_msg("expected an error with '%s'", want);
    if (!strstr(b.err, want)) fail_msg("error '%s' lacks '%s'", b.err, want);
    release(&b);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("      - actions: []\n", "rate_limits[0].actions");
    expect_error("      - stage: 11\n        actions: [{ source_cluster: {} }]\n",
                 "rate_limits[0].stage");
    expect_error("      - actions: [{ generic_key: { descriptor_value: '' } }]\n",
                 "rate_limits[0].actions[0].generic_key.descriptor_value");
    expect_error("      - actions: [{ request_headers: { header_name: x, descriptor_key: '' } }]\n",
                 "descriptor_key");
    expect_error(
        "      - actions: [{ header_value_match: { descriptor_value: v, headers: [] } }]\n",
        "header_value_match.headers");
    expect_error("      - actions: [{ masked_remote_address: { v6_prefix_mask_len: 129 } }]\n",
                 "v6_prefix_mask_len");
    /* refused by the support table, by name */
    expect_error("      - actions: [{ dynamic_metadata: { descriptor_key: k, metadata_key: { key: "
                 "a, path: [{ key: "
                 "b }] } } }]\n",
                 "dynamic_metadata");
    expect_error(
        "      - actions: [{ source_cluster: {} }]\n"
        "        limit: { dynamic_metadata: { metadata_key: { key: a, path: [{ key: b }] } } }\n",
        "limit");
    /* Envoy reads hits_addend only in the rate limit filter's per-route
     * rate_limits: refused here rather than ignored */
    expect_error("      - actions: [{ source_cluster: {} }]\n        hits_addend: { number: 2 }\n",
                 "rate_limits[0].hits_addend: supported only in the rate limit filter's per-route");
}

/* metadata actions: a string at the key's namespace and path of the
 * stream's dynamic metadata or the route's; a number, a struct or an empty
 * string there counts as absent. */
static void test_metadata_action(void **state)
{
    (void)state;
    built_t b;
    build(&b, "      - actions:\n"
              "        - metadata: { descriptor_key: t, metadata_key: { key: ns, path: [{ key: a }, { key: b }] } }\n"
              "      - actions:\n"
              "        - metadata: { descriptor_key: r, source: ROUTE_ENTRY, metadata_key: { key: ns, path: [{ key: a }] } }\n"
              "      - actions:\n"
              "        - metadata: { descriptor_key: d, default_value: dv, metadata_key: { key: ns, path: [{ key: num }] } }\n"
              "        - metadata: { descriptor_key: e, skip_if_absent: true, metadata_key: { key: ns, path: [{ key: empty }] } }\n"
              "      - actions:\n"
              "        - metadata: { descriptor_key: x, metadata_key: { key: other, path: [{ key: a }] } }\n");
    if (!b.t) fail_msg("%s", b.err);
    sharp_dynamic_metadata_t *dyn = NULL, *route = NULL;
    sharp_md_value_t inner = {0}, v = {0};
    inner.kind = SHARP_MD_STRUCT;
    sharp_md_value_string(&v, "deep", 4);
    sharp_md_struct_set(&inner, "b", 1, &v);
    sharp_dynamic_metadata_set(&dyn, "ns", 2, "a", 1, &inner);
    v.kind = SHARP_MD_NUMBER;
    v.number = 3;
    sharp_dynamic_metadata_set(&dyn, "ns", 2, "num", 3, &v);
    sharp_md_value_string(&v, "", 0);
    sharp_dynamic_metadata_set(&dyn, "ns", 2, "empty", 5, &v);
    sharp_md_value_string(&v, "from-route", 10);
    sharp_dynamic_metadata_set(&route, "ns", 2, "a", 1, &v);
    sharp_headers_t h = req_headers("/", "GET");
    sharp_rl_input_t in = {.headers = &h, .local_cluster = "", .route_cluster = "backend", .remote_address = "",
                           .dynamic_metadata = dyn, .route_metadata = route};
    char out[512];
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "t=deep|r=from-route|d=dv");
    /* without metadata: only the default value is left */
    in.dynamic_metadata = in.route_metadata = NULL;
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "d=dv");
    sharp_dynamic_metadata_free(dyn);
    sharp_dynamic_metadata_free(route);
    sharp_headers_free(&h);
    release(&b);
}

/* source CLUSTER_LOCALITY_ENTRY reads the upstream host's locality
 * metadata (LocalityLbEndpoints.metadata): none before a host is chosen,
 * so the action fails, or gives its default value. A host's locality
 * metadata is shared, replaced in place and outlives the host for the
 * stream that holds a reference. */
static void test_metadata_action_locality(void **state)
{
    (void)state;
    built_t b;
    build(&b, "      - actions:\n"
              "        - metadata: { descriptor_key: zone_tier, source: CLUSTER_LOCALITY_ENTRY,\n"
              "                      metadata_key: { key: envoy.lb, path: [{ key: tier }] } }\n"
              "      - actions:\n"
              "        - metadata: { descriptor_key: dflt, source: CLUSTER_LOCALITY_ENTRY, default_value: none,\n"
              "                      metadata_key: { key: envoy.lb, path: [{ key: missing }] } }\n");
    if (!b.t) fail_msg("%s", b.err);
    sharp_dynamic_metadata_t *md = NULL;
    sharp_md_value_t v = {0};
    sharp_md_value_string(&v, "gold", 4);
    sharp_dynamic_metadata_set(&md, "envoy.lb", 8, "tier", 4, &v);
    sharp_locality_md_t *lm = sharp_locality_md_new(md);
    assert_non_null(lm);
    /* two hosts of the locality share it */
    sharp_host_t h1 = {0}, h2 = {0};
    sharp_host_locality_md_set(&h1, lm);
    sharp_host_locality_md_set(&h2, lm);
    sharp_locality_md_put(lm);
    assert_ptr_equal(atomic_load(&h1.locality_md), atomic_load(&h2.locality_md));
    assert_int_equal(atomic_load(&lm->refs), 2);

    sharp_headers_t h = req_headers("/", "GET");
    sharp_rl_input_t in = {.headers = &h, .local_cluster = "", .route_cluster = "backend", .remote_address = ""};
    char out[512];
    /* before host selection: absent */
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "dflt=none");
    /* the stream's reference to its host's locality metadata */
    sharp_locality_md_t *held = sharp_host_locality_md_get(&h1);
    in.locality_metadata = held->md;
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "zone_tier=gold|dflt=none");
    /* the dynamic and route metadata are not read for this source */
    in.locality_metadata = NULL;
    in.dynamic_metadata = held->md;
    in.route_metadata = held->md;
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "dflt=none");
    in.dynamic_metadata = in.route_metadata = NULL;

    /* an update with equal metadata keeps the object; another replaces it */
    sharp_dynamic_metadata_t *same = NULL;
    sharp_md_value_string(&v, "gold", 4);
    sharp_dynamic_metadata_set(&same, "envoy.lb", 8, "tier", 4, &v);
    sharp_locality_md_t *lm2 = sharp_locality_md_new(same);
    assert_true(sharp_locality_md_equal(lm, lm2));
    sharp_host_locality_md_set(&h1, lm2);
    assert_ptr_equal(atomic_load(&h1.locality_md), lm);
    sharp_locality_md_put(lm2);
    sharp_dynamic_metadata_t *other = NULL;
    sharp_md_value_string(&v, "silver", 6);
    sharp_dynamic_metadata_set(&other, "envoy.lb", 8, "tier", 4, &v);
    sharp_locality_md_t *lm3 = sharp_locality_md_new(other);
    assert_false(sharp_locality_md_equal(lm, lm3));
    sharp_host_locality_md_set(&h1, lm3);
    sharp_host_locality_md_set(&h2, lm3);
    sharp_locality_md_put(lm3);
    /* the hosts leave; the stream still reads what it held */
    sharp_host_locality_md_destroy(&h1);
    sharp_host_locality_md_destroy(&h2);
    assert_int_equal(atomic_load(&held->refs), 1);
    in.locality_metadata = held->md;
    describe(route_limits(&b), &in, out, sizeof out);
    assert_string_equal(out, "zone_tier=gold|dflt=none");
    sharp_locality_md_put(held);

    /* no namespace: no object, and a host without one gives NULL */
    assert_null(sharp_locality_md_new(NULL));
    sharp_host_t h3 = {0};
    assert_null(sharp_host_locality_md_get(&h3));
    sharp_headers_free(&h);
    release(&b);
}

/* A RateLimitPerRoute's rate_limits (sharp_config_rate_limits): no stage or
 * disable_key, hits_addend into each descriptor, apply_on_stream_done kept. */
static sharp_rate_limits_t *per_filter(const char *yaml, char *err, size_t errlen, sharp_config_doc_t **doc)
{
    sharp_config_error_t perr;
    *doc = sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                              &envoy__extensions__filters__http__ratelimit__v3__rate_limit_per_route__descriptor, &perr);
    if (!*doc) {
        snprintf(err, errlen, "%s", perr.msg);
        return NULL;
    }
    const Envoy__Extensions__Filters__Http__Ratelimit__V3__RateLimitPerRoute *pb =
        (const void *)sharp_config_doc_message(*doc);
    sharp_rate_limits_t *rls = NULL;
    if (sharp_config_rate_limits(pb->rate_limits, pb->n_rate_limits, "", &rls, err, errlen) < 0) {
        if (rls) sharp_rate_limits_free(rls);
        free(rls);
        return NULL;
    }
    return rls;
}

static void test_per_filter_rate_limits(void **state)
{
    (void)state;
    char err[1024] = "";
    sharp_config_doc_t *doc = NULL;
    sharp_rate_limits_t *rls = per_filter("rate_limits:\n"
                                          "- actions: [{ generic_key: { descriptor_value: a } }]\n"
                                          "  hits_addend: { number: 0 }\n"
                                          "- actions: [{ generic_key: { descriptor_value: b } }]\n"
                                          "  hits_addend: { number: 9 }\n"
                                          "  apply_on_stream_done: true\n"
                                          "- actions: [{ generic_key: { descriptor_value: c } }]\n",
                                          err, sizeof err, &doc);
    if (!rls) fail_msg("%s", err);
    assert_int_equal(rls->n, 3);
    assert_false(rls->v[0].apply_on_stream_done);
    assert_true(rls->v[1].apply_on_stream_done);
    sharp_headers_t h = req_headers("/", "GET");
    sharp_rl_input_t in = {.headers = &h, .local_cluster = "", .route_cluster = "backend", .remote_address = ""};
    sharp_rl_descriptors_t d = {0};
    for (uint32_t i = 0; i < rls->n; i++)
        assert_true(sharp_rate_limit_populate(&rls->v[i], &in, &d));
    assert_int_equal(d.n, 3);
    /* set to 0 is sent as 0, unset is not sent */
    assert_true(d.d[0].has_hits_addend);
    assert_int_equal(d.d[0].hits_addend, 0);
    assert_true(d.d[1].has_hits_addend);
    assert_int_equal(d.d[1].hits_addend, 9);
    assert_false(d.d[2].has_hits_addend);
    sharp_rl_descriptors_free(&d);
    sharp_headers_free(&h);
    sharp_rate_limits_free(rls);
    free(rls);
    sharp_config_doc_free(doc);

    static const char *const bad[][2] = {
        {"rate_limits: [{ stage: 1, actions: [{ source_cluster: {} }] }]\n",
         "rate_limits[0]: 'stage' field and 'disable_key' field are not supported"},
        {"rate_limits: [{ disable_key: k, actions: [{ source_cluster: {} }] }]\n",
         "'stage' field and 'disable_key' field are not supported"},
        {"rate_limits: [{ hits_addend: {}, actions: [{ source_cluster: {} }] }]\n",
         "rate_limits[0].hits_addend: hits_addend must contain either a format or a number"},
        {"rate_limits: [{ actions: [] }]\n", "rate_limits[0].actions"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        rls = per_filter(bad[i][0], err, sizeof err, &doc);
        if (rls) fail_msg("'%s' accepted", bad[i][0]);
        if (!strstr(err, bad[i][1])) fail_msg("error '%s' lacks '%s'", err, bad[i][1]);
        sharp_config_doc_free(doc);
    }
}

static void test_virtual_host_rate_limits(void **state)
{
    (void)state;
    const char *yaml = "virtual_hosts:\n"
                       "- name: vh\n"
                       "  domains: ['*']\n"
                       "  rate_limits: [{ actions: [{ generic_key: { descriptor_value: vh } }] }]\n"
                       "  routes:\n"
                       "  - match: { prefix: / }\n"
                       "    route: { cluster: backend, include_vh_rate_limits: true }\n";
    sharp_config_error_t perr;
    sharp_config_doc_t *d =
        sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                           &envoy__config__route__v3__route_configuration__descriptor, &perr);
    assert_non_null(d);
    char err[512];
    sharp_route_table_t *t =
        sharp_route_table_create((const void *)sharp_config_doc_message(d), err, sizeof err);
    assert_non_null(t);
    assert_non_null(t->vhosts[0].rate_limits);
    assert_int_equal(t->vhosts[0].rate_limits->n, 1);
    assert_null(t->vhosts[0].routes[0].rate_limits);
    assert_true(t->vhosts[0].routes[0].include_vh_rate_limits);
    sharp_route_table_free(t);
    sharp_config_doc_free(d);
}

static int setup(void **state)
{
    (void)state;
    sharp_filters_register_builtin();
    sharp_config_types_register();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_action),
        cmocka_unit_test(test_failing_actions),
        cmocka_unit_test(test_stage_disable_key_and_defaults),
        cmocka_unit_test(test_query_decoding),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_virtual_host_rate_limits),
        cmocka_unit_test(test_per_filter_rate_limits),
        cmocka_unit_test(test_metadata_action),
        cmocka_unit_test(test_metadata_action_locality),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
