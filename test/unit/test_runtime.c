/* test_runtime.c: the layered runtime (runtime.h, config/runtime_config.h):
 * value parsing as Envoy's resolveEntryType, static layer flattening,
 * layering, the admin layer, disk layers, RTDS layers (their Struct
 * flattened, their place among the layers), the lookups and the validation
 * errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/mapper.h"
#include "config/runtime_config.h"
#include "runtime.h"
#include "safe_regex.h"
#include "upstream/health_check.h"
#include "upstream/lb.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/service/runtime/v3/rtds.pb-c.h"

static sharp_runtime_entry_t entry(const char *raw)
{
    sharp_runtime_entry_t e = {.raw = (char *)raw};
    sharp_runtime_entry_parse(&e);
    return e;
}

static void test_entry_types(void **state)
{
    sharp_runtime_entry_t e = entry("42");
    assert_true(e.has_uint && e.uint_value == 42 && e.has_double && e.double_value == 42.0);
    assert_true(e.has_bool && e.bool_value); /* a whole number is a bool too */
    assert_false(e.has_fractional);
    e = entry("0");
    assert_true(e.has_bool && !e.bool_value && e.has_uint && e.uint_value == 0);
    e = entry(" 7 ");
    assert_true(e.has_uint && e.uint_value == 7 && e.has_bool);
    e = entry("3.7"); /* read as 3, and not a bool */
    assert_true(e.has_uint && e.uint_value == 3 && e.has_double && e.double_value == 3.7 && !e.has_bool);
    e = entry("TRUE");
    assert_true(e.has_bool && e.bool_value && !e.has_uint && !e.has_double);
    e = entry("false");
    assert_true(e.has_bool && !e.bool_value && !e.has_uint);
    e = entry("-1"); /* negative: a double Envoy does not keep */
    assert_false(e.has_uint || e.has_double || e.has_bool || e.has_fractional);
    e = entry("0x10");
    assert_false(e.has_uint || e.has_double);
    e = entry("abc");
    assert_false(e.has_uint || e.has_double || e.has_bool || e.has_fractional);
    e = entry("");
    assert_false(e.has_uint || e.has_double || e.has_bool || e.has_fractional);
    e = entry("numerator: 25\ndenominator: TEN_THOUSAND");
    assert_true(e.has_fractional && e.numerator == 25 && e.denominator == 10000);
    e = entry("{\"numerator\": 3}"); /* JSON, default denominator */
    assert_true(e.has_fractional && e.numerator == 3 && e.denominator == 100);
    e = entry("{}");
    assert_true(e.has_fractional && e.numerator == 0 && e.denominator == 100);
    e = entry("{numerator: 1, bogus: 2}"); /* strict: an unknown field is no percent */
    assert_false(e.has_fractional);
    e = entry("{numerator: 1, denominator: THOUSAND}");
    assert_false(e.has_fractional);
}

static void test_values_sorted_set_remove(void **state)
{
    sharp_runtime_values_t v = {0};
    const char *keys[] = {"m", "a", "z", "b", "a"};
    for (size_t i = 0; i < 5; i++)
        sharp_runtime_values_set(&v, keys[i], i == 4 ? "second" : "x");
    assert_int_equal(v.n, 4);
    for (uint32_t i = 1; i < v.n; i++)
        assert_true(strcmp(v.entries[i - 1].key, v.entries[i].key) < 0);
    assert_string_equal(sharp_runtime_values_find(&v, "a")->raw, "second");
    assert_true(sharp_runtime_values_remove(&v, "m"));
    assert_false(sharp_runtime_values_remove(&v, "m"));
    assert_null(sharp_runtime_values_find(&v, "m"));
    assert_int_equal(v.n, 3);
    sharp_runtime_values_free(&v);
}

/* A loader from a layered_runtime in YAML. */
static sharp_runtime_t *load(const char *yaml, char *epath, char *emsg)
{
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *doc = sharp_config_parse(yaml, strlen(yaml), "test",
                                                 &envoy__config__bootstrap__v3__layered_runtime__descriptor, &e);
    if (!doc) fail_msg("%s", e.msg);
    const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr = (const void *)sharp_config_doc_message(doc);
    sharp_runtime_t *rt = sharp_config_layered_runtime(lr, "svc", NULL, epath, 256, emsg, 256);
    sharp_config_doc_free(doc);
    return rt;
}

static void test_static_layers_flatten_and_override(void **state)
{
    char ep[256] = "", em[256] = "";
    sharp_runtime_t *rt = load("layers:\n"
                               "- name: base\n"
                               "  static_layer:\n"
                               "    a: { b: { c: 5 }, flag: true, s: text }\n"
                               "    x.y: 1.5\n"
                               "    pct: { numerator: 10, denominator: HUNDRED }\n"
                               "    empty: {}\n"
                               "- name: top\n"
                               "  static_layer: { a.b.c: 9, new: 2 }\n",
                               ep, em);
    if (!rt) fail_msg("%s: %s", ep, em);
    const sharp_runtime_snapshot_t *s = rt->current;
    assert_int_equal(s->nlayers, 2);
    assert_string_equal(s->layers[0].name, "base");
    assert_int_equal(s->layers[0].values.n, 6);
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "a.b.c")->raw, "5");
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "a.flag")->raw, "true");
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "a.s")->raw, "text");
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "x.y")->raw, "1.5");
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "pct")->raw,
                        "denominator: HUNDRED\nnumerator: 10");
    assert_string_equal(sharp_runtime_values_find(&s->layers[0].values, "empty")->raw, "{}");
    /* merged: the later layer wins, keys sorted and unique */
    assert_int_equal(s->nmerged, 7);
    for (uint32_t i = 1; i < s->nmerged; i++)
        assert_true(strcmp(s->merged[i - 1]->key, s->merged[i]->key) < 0);
    sharp_runtime_tls = s;
    assert_int_equal(sharp_runtime_get_u64("a.b.c", 0), 9);
    assert_int_equal(sharp_runtime_get_u64("new", 0), 2);
    assert_int_equal(sharp_runtime_get_u64("a.s", 77), 77); /* not a number: the default */
    assert_int_equal(sharp_runtime_get_u64("absent", 77), 77);
    assert_int_equal(sharp_runtime_get_u64("", 77), 77);
    assert_int_equal(sharp_runtime_get_u64(NULL, 77), 77);
    assert_true(sharp_runtime_get_double("x.y", 0) == 1.5);
    assert_true(sharp_runtime_get_bool("a.flag", false));
    assert_false(sharp_runtime_get_bool("a.s", false));
    /* pct is 10/100 */
    assert_true(sharp_runtime_fraction_enabled("pct", 0, 100, 109));
    assert_false(sharp_runtime_fraction_enabled("pct", 100, 100, 110));
    /* empty {} is the percent 0 */
    assert_false(sharp_runtime_fraction_enabled("empty", 100, 100, 0));
    sharp_runtime_free(rt);
    assert_null(sharp_runtime_tls);
}

static void test_fraction_and_percent(void **state)
{
    sharp_runtime_t *rt = sharp_runtime_create();
    char err[128];
    int admin = sharp_runtime_add_layer(rt, "admin", SHARP_RUNTIME_LAYER_ADMIN, err, sizeof err);
    assert_int_equal(admin, 0);
    sharp_runtime_load(rt);
    /* absent: the default fraction */
    assert_true(sharp_runtime_fraction_enabled("k", 1, 10000, 10000));
    assert_false(sharp_runtime_fraction_enabled("k", 1, 10000, 10001));
    assert_false(sharp_runtime_fraction_enabled("k", 0, 100, 0));
    const char *keys[] = {"k", "p"}, *vals[] = {"30", "150"};
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 2, err, sizeof err), 0);
    /* a whole number is a percentage of 100 */
    assert_true(sharp_runtime_fraction_enabled("k", 0, 100, 129));
    assert_false(sharp_runtime_fraction_enabled("k", 0, 100, 130));
    assert_true(sharp_runtime_fraction_enabled("k", 0, 1000000, 29));
    /* above 100: always */
    assert_true(sharp_runtime_fraction_enabled("p", 0, 100, 99));
    assert_true(sharp_runtime_percent_enabled("k", 0, 29));
    assert_false(sharp_runtime_percent_enabled("k", 0, 30));
    assert_true(sharp_runtime_percent_enabled("p", 0, 99)); /* capped at 100 */
    assert_false(sharp_runtime_percent_enabled("absent", 0, 0));
    sharp_runtime_free(rt);
}

static void test_admin_layer_merge(void **state)
{
    char ep[256], em[256];
    sharp_runtime_t *rt = load("layers:\n- name: s\n  static_layer: { k: 1 }\n- name: adm\n  admin_layer: {}\n", ep, em);
    assert_non_null(rt);
    sharp_runtime_snapshot_t *before = sharp_runtime_snapshot_ref(rt->current);
    const char *keys[] = {"k", "n"}, *vals[] = {"2", "x"};
    char err[128];
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 2, err, sizeof err), 0);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 2);
    assert_string_equal(sharp_runtime_get("n")->raw, "x");
    /* the old snapshot, still held, is unchanged */
    assert_string_equal(sharp_runtime_snapshot_get(before, "k")->raw, "1");
    assert_null(sharp_runtime_snapshot_get(before, "n"));
    sharp_runtime_snapshot_unref(before);
    /* an empty value removes an override */
    const char *empty[] = {"", ""};
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, empty, 2, err, sizeof err), 0);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 1);
    assert_null(sharp_runtime_get("n"));
    assert_int_equal(rt->layers[rt->admin_layer].values.n, 0);
    sharp_runtime_free(rt);

    /* no layered_runtime: no layers, no admin layer */
    rt = sharp_config_layered_runtime(NULL, "", NULL, ep, sizeof ep, em, sizeof em);
    assert_non_null(rt);
    assert_int_equal(rt->current->nlayers, 0);
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err), -1);
    assert_string_equal(err, "No admin layer specified");
    sharp_runtime_free(rt);
    /* layered_runtime without layers: one admin layer named "" */
    rt = load("{}", ep, em);
    assert_int_equal(rt->current->nlayers, 1);
    assert_string_equal(rt->current->layers[0].name, "");
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err), 0);
    sharp_runtime_free(rt);
}

static void expect_error(const char *yaml, const char *path, const char *msg)
{
    char ep[256] = "", em[256] = "";
    sharp_runtime_t *rt = load(yaml, ep, em);
    if (rt) fail_msg("'%s' loaded", yaml);
    assert_string_equal(ep, path);
    assert_string_equal(em, msg);
}

static void test_validation(void **state)
{
    expect_error("layers: [{ name: a, admin_layer: {} }, { name: a, static_layer: {} }]", "layered_runtime.layers[1].name",
                 "Duplicate layer name: a");
    expect_error("layers: [{ name: a, admin_layer: {} }, { name: b, admin_layer: {} }]", "layered_runtime.layers[1].name",
                 "Too many admin layers specified in LayeredRuntime, at most one may be specified");
    expect_error("layers: [{ name: a, static_layer: { x: { y: [1] } } }]", "layered_runtime.layers[0].static_layer.x.y",
                 "Invalid runtime entry value for x.y");
    expect_error("layers: [{ name: a, static_layer: { x: null } }]", "layered_runtime.layers[0].static_layer.x",
                 "Invalid runtime entry value for x");
    expect_error("layers: [{ name: a }]", "layered_runtime.layers[0]",
                 "one of static_layer, disk_layer, admin_layer, rtds_layer is required");
    expect_error("layers: [{ name: a, static_layer: { a.b: 1, a: { b: 2 } } }]", "layered_runtime.layers[0].static_layer.a.b",
                 "runtime key 'a.b' is given twice in this layer (as a dotted key and nested)");
}

static void test_regex_limits(void **state)
{
    char ep[256] = "", em[256] = "";
    sharp_runtime_t *rt = load("layers: [{ name: s, static_layer: { re2: { max_program_size: { error_level: 5000, "
                               "warn_level: 10 } } } }]",
                               ep, em);
    assert_int_equal(sharp_config_runtime_regex_limits(rt, NULL, true, ep, sizeof ep, em, sizeof em), 0);
    uint32_t e, w;
    sharp_regex_runtime_limits(&e, &w);
    assert_int_equal(e, 5000);
    assert_int_equal(w, 10);
    sharp_runtime_free(rt);
    rt = load("layers: [{ name: s, static_layer: { re2.max_program_size.error_level: -1 } }]", ep, em);
    const char *yaml = "layers: [{ name: s, static_layer: { re2.max_program_size.error_level: -1 } }]";
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *doc = sharp_config_parse(yaml, strlen(yaml), "t",
                                                 &envoy__config__bootstrap__v3__layered_runtime__descriptor, &err);
    const void *lr = sharp_config_doc_message(doc);
    assert_int_equal(sharp_config_runtime_regex_limits(rt, lr, true, ep, sizeof ep, em, sizeof em), -1);
    assert_string_equal(ep, "layered_runtime.layers[0].static_layer.re2.max_program_size.error_level");
    assert_string_equal(em, "must be a non-negative integer");
    /* after load (an admin change), a bad value means Envoy's default */
    assert_int_equal(sharp_config_runtime_regex_limits(rt, lr, false, ep, sizeof ep, em, sizeof em), 0);
    sharp_regex_runtime_limits(&e, &w);
    assert_int_equal(e, SHARP_REGEX_DEFAULT_ERROR_LEVEL);
    assert_int_equal(w, UINT32_MAX);
    sharp_config_doc_free(doc);
    sharp_runtime_free(rt);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_disk_layer(void **state)
{
    char root[] = "/tmp/sharp-rt-unit-XXXXXX";
    assert_non_null(mkdtemp(root));
    char p[512];
    snprintf(p, sizeof p, "%s/envoy", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/envoy/svc", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/envoy/svc/health_check", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/envoy/svc/health_check/min_interval", root);
    write_file(p, "# a comment\n\n10  \n");
    snprintf(p, sizeof p, "%s/envoy/svc/multi", root);
    write_file(p, "a\nb \n#c\n");
    snprintf(p, sizeof p, "%s/envoy/top", root);
    write_file(p, "1");
    char yaml[1024], ep[256] = "", em[256] = "";
    snprintf(yaml, sizeof yaml,
             "layers:\n- name: d\n  disk_layer: { symlink_root: %s, subdirectory: envoy, append_service_cluster: true }\n"
             "- name: missing\n  disk_layer: { symlink_root: %s, subdirectory: none }\n",
             root, root);
    sharp_runtime_t *rt = load(yaml, ep, em);
    if (!rt) fail_msg("%s: %s", ep, em);
    /* the directory of the service cluster "svc"; the missing one is left out */
    assert_int_equal(rt->current->nlayers, 1);
    assert_string_equal(sharp_runtime_snapshot_get(rt->current, "health_check.min_interval")->raw, "10");
    /* the last line is compared by content, as Envoy does: "b " is not the
     * last line (the comment is), so it keeps its blank and newline */
    assert_string_equal(sharp_runtime_snapshot_get(rt->current, "multi")->raw, "a\nb \n");
    assert_null(sharp_runtime_snapshot_get(rt->current, "top"));
    sharp_runtime_free(rt);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

/* Active health check intervals are bounded by health_check.min_interval
 * and .max_interval, as Envoy's intervalWithJitter. */
static void test_health_check_interval_bounds(void **state)
{
    sharp_hc_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    uint64_t rng = 1;
    sharp_runtime_tls = NULL;
    assert_int_equal(sharp_hc_jitter(&cfg, 5000, 0, &rng), 5000);
    sharp_runtime_t *rt = sharp_runtime_create();
    char err[128];
    sharp_runtime_add_layer(rt, "a", SHARP_RUNTIME_LAYER_ADMIN, err, sizeof err);
    sharp_runtime_load(rt);
    const char *keys[] = {"health_check.min_interval", "health_check.max_interval"};
    const char *vals[] = {"7000", ""};
    sharp_runtime_merge_admin(rt, keys, vals, 2, err, sizeof err);
    assert_int_equal(sharp_hc_jitter(&cfg, 5000, 0, &rng), 7000);
    assert_int_equal(sharp_hc_jitter(&cfg, 9000, 0, &rng), 9000);
    vals[0] = "";
    vals[1] = "100";
    sharp_runtime_merge_admin(rt, keys, vals, 2, err, sizeof err);
    assert_int_equal(sharp_hc_jitter(&cfg, 5000, 0, &rng), 100);
    assert_int_equal(sharp_hc_jitter(&cfg, 50, 0, &rng), 50);
    sharp_runtime_free(rt);
}

/* upstream.healthy_panic_threshold overrides the cluster's threshold. */
static void test_panic_threshold_key(void **state)
{
    sharp_host_t h[4], *ptr[4];
    memset(h, 0, sizeof h);
    for (int i = 0; i < 4; i++) {
        snprintf(h[i].address, sizeof h[i].address, "10.0.0.%d:80", i + 1);
        h[i].weight = 1;
        ptr[i] = &h[i];
    }
    sharp_lb_t lb;
    sharp_lb_init(&lb, SHARP_LB_ROUND_ROBIN, ptr, 4, 3);
    /* 2 of 4 healthy: 50% is not below the default 50 */
    sharp_host_health_store(&h[0], SHARP_HOST_FAILED_OUTLIER);
    sharp_host_health_store(&h[1], SHARP_HOST_FAILED_OUTLIER);
    sharp_runtime_tls = NULL;
    for (int i = 0; i < 8; i++) {
        const sharp_host_t *c = sharp_lb_choose(&lb);
        assert_true(c == &h[2] || c == &h[3]);
    }
    sharp_runtime_t *rt = sharp_runtime_create();
    char err[128];
    sharp_runtime_add_layer(rt, "a", SHARP_RUNTIME_LAYER_ADMIN, err, sizeof err);
    sharp_runtime_load(rt);
    const char *keys[] = {"upstream.healthy_panic_threshold"}, *vals[] = {"60"};
    sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err);
    /* 50% < 60%: panic, every host gets traffic */
    int seen[4] = {0};
    for (int i = 0; i < 40; i++) {
        const sharp_host_t *c = sharp_lb_choose(&lb);
        seen[c - h]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(seen[i], 10);
    /* 0 disables panic: with no healthy host, no host at all */
    vals[0] = "0";
    sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err);
    sharp_host_health_store(&h[2], SHARP_HOST_FAILED_OUTLIER);
    sharp_host_health_store(&h[3], SHARP_HOST_FAILED_OUTLIER);
    assert_null(sharp_lb_choose(&lb));
    sharp_runtime_free(rt);
    sharp_lb_destroy(&lb);
}

/* A Runtime resource (RTDS) from YAML, flattened as Envoy's ProtoLayer. */
static int rtds_values(const char *yaml, sharp_runtime_values_t *v, char *ep, char *em)
{
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *doc =
        sharp_config_parse(yaml, strlen(yaml), "test", &envoy__service__runtime__v3__runtime__descriptor, &e);
    if (!doc) fail_msg("%s", e.msg);
    const Envoy__Service__Runtime__V3__Runtime *r = (const void *)sharp_config_doc_message(doc);
    int rc = sharp_config_runtime_struct(r->layer, "layer", v, ep, 256, em, 256);
    sharp_config_doc_free(doc);
    return rc;
}

static void test_rtds_struct_flattening(void **state)
{
    char ep[256] = "", em[256] = "";
    sharp_runtime_values_t v = {0};
    assert_int_equal(rtds_values("name: r\n"
                                 "layer:\n"
                                 "  envoy: { reloadable_features: { a: true, b: false } }\n"
                                 "  n: 12\n"
                                 "  d: 0.25\n"
                                 "  s: \"some text\"\n"
                                 "  dotted.key: { deeper: 3 }\n"
                                 "  pct: { numerator: 7, denominator: TEN_THOUSAND }\n"
                                 "  only_num: { numerator: 2 }\n"
                                 "  empty: {}\n",
                                 &v, ep, em),
                     0);
    assert_int_equal(v.n, 9);
    assert_string_equal(sharp_runtime_values_find(&v, "envoy.reloadable_features.a")->raw, "true");
    assert_string_equal(sharp_runtime_values_find(&v, "envoy.reloadable_features.b")->raw, "false");
    assert_string_equal(sharp_runtime_values_find(&v, "n")->raw, "12");
    assert_true(sharp_runtime_values_find(&v, "n")->has_uint);
    assert_string_equal(sharp_runtime_values_find(&v, "d")->raw, "0.25");
    assert_string_equal(sharp_runtime_values_find(&v, "s")->raw, "some text");
    assert_string_equal(sharp_runtime_values_find(&v, "dotted.key.deeper")->raw, "3");
    /* an object with numerator or denominator is one value: a FractionalPercent */
    const sharp_runtime_entry_t *e = sharp_runtime_values_find(&v, "pct");
    assert_true(e->has_fractional && e->numerator == 7 && e->denominator == 10000);
    e = sharp_runtime_values_find(&v, "only_num");
    assert_true(e->has_fractional && e->numerator == 2 && e->denominator == 100);
    assert_string_equal(sharp_runtime_values_find(&v, "empty")->raw, "{}");
    sharp_runtime_values_free(&v);
    /* no layer: no values */
    assert_int_equal(rtds_values("name: r\n", &v, ep, em), 0);
    assert_int_equal(v.n, 0);
    /* null and lists are errors naming the value */
    assert_int_equal(rtds_values("name: r\nlayer: { a: { b: null } }\n", &v, ep, em), -1);
    assert_string_equal(ep, "layer.a.b");
    assert_string_equal(em, "Invalid runtime entry value for a.b");
    sharp_runtime_values_free(&v);
    assert_int_equal(rtds_values("name: r\nlayer: { l: [1] }\n", &v, ep, em), -1);
    assert_string_equal(em, "Invalid runtime entry value for l");
    sharp_runtime_values_free(&v);
    /* a key given twice (dotted and nested) */
    assert_int_equal(rtds_values("name: r\nlayer: { a.b: 1, a: { b: 2 } }\n", &v, ep, em), -1);
    sharp_runtime_values_free(&v);
}

static void test_rtds_layer_order(void **state)
{
    char ep[256] = "", em[256] = "";
    sharp_runtime_t *rt = load("layers:\n"
                               "- name: base\n"
                               "  static_layer: { k: 1, only_base: b }\n"
                               "- name: rtds-a\n"
                               "  rtds_layer: { name: a, rtds_config: { ads: {} } }\n"
                               "- name: mid\n"
                               "  static_layer: { m: 5 }\n"
                               "- name: rtds-b\n"
                               "  rtds_layer: { name: b, rtds_config: { ads: {} } }\n"
                               "- name: admin\n"
                               "  admin_layer: {}\n",
                               ep, em);
    if (!rt) fail_msg("%s: %s", ep, em);
    /* the RTDS layers are there, empty, before their first update */
    assert_int_equal(rt->current->nlayers, 5);
    assert_string_equal(rt->current->layers[1].name, "rtds-a");
    assert_int_equal(rt->current->layers[1].values.n, 0);
    assert_int_equal(rt->layers[1].kind, SHARP_RUNTIME_LAYER_RTDS);
    sharp_runtime_tls = rt->current;
    assert_int_equal(sharp_runtime_get_u64("k", 0), 1);
    sharp_runtime_values_t v = {0};
    /* rtds-a overrides the static layer before it; mid's keys stay */
    sharp_runtime_values_set(&v, "k", "2");
    sharp_runtime_values_set(&v, "m", "6");
    const sharp_runtime_snapshot_t *old = rt->current;
    sharp_runtime_set_layer_values(rt, 1, &v);
    assert_int_equal(v.n, 0); /* taken */
    assert_ptr_not_equal(rt->current, old);
    assert_ptr_equal(sharp_runtime_tls, rt->current);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 2);
    assert_int_equal(sharp_runtime_get_u64("m", 0), 5); /* mid comes after rtds-a */
    /* rtds-b comes after mid */
    sharp_runtime_values_set(&v, "m", "7");
    sharp_runtime_values_set(&v, "k", "3");
    sharp_runtime_set_layer_values(rt, 3, &v);
    assert_int_equal(sharp_runtime_get_u64("m", 0), 7);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 3);
    /* the admin layer overrides every RTDS layer */
    char err[128];
    const char *keys[] = {"k"}, *vals[] = {"9"};
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err), 0);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 9);
    vals[0] = "";
    assert_int_equal(sharp_runtime_merge_admin(rt, keys, vals, 1, err, sizeof err), 0);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 3);
    /* a removal clears rtds-b: rtds-a's value again, and mid's */
    sharp_runtime_set_layer_values(rt, 3, &v);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 2);
    assert_int_equal(sharp_runtime_get_u64("m", 0), 5);
    assert_int_equal(rt->current->layers[3].values.n, 0);
    assert_int_equal(rt->current->nlayers, 5);
    /* and rtds-a: the static layer's */
    sharp_runtime_set_layer_values(rt, 1, &v);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 1);
    assert_string_equal(sharp_runtime_get("only_base")->raw, "b");
    /* a reader's snapshot stays valid while newer ones are published */
    sharp_runtime_snapshot_t *held = sharp_runtime_snapshot_ref(rt->current);
    sharp_runtime_values_set(&v, "k", "4");
    sharp_runtime_set_layer_values(rt, 1, &v);
    assert_int_equal(sharp_runtime_snapshot_get(held, "k")->uint_value, 1);
    assert_int_equal(sharp_runtime_get_u64("k", 0), 4);
    sharp_runtime_snapshot_unref(held);
    sharp_runtime_free(rt);
    assert_null(sharp_runtime_tls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_types),
        cmocka_unit_test(test_values_sorted_set_remove),
        cmocka_unit_test(test_static_layers_flatten_and_override),
        cmocka_unit_test(test_fraction_and_percent),
        cmocka_unit_test(test_admin_layer_merge),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_regex_limits),
        cmocka_unit_test(test_disk_layer),
        cmocka_unit_test(test_rtds_struct_flattening),
        cmocka_unit_test(test_rtds_layer_order),
        cmocka_unit_test(test_health_check_interval_bounds),
        cmocka_unit_test(test_panic_threshold_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
