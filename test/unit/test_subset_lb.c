/* test_subset_lb.c: subset load balancing (upstream/subset.h): the
 * canonical form of "envoy.lb" metadata (protobuf's Value equality), the
 * merges of match criteria, the subsets of a host set with Envoy's example
 * of its architecture overview (load_balancing/subsets), and the choice
 * with each fallback policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/metadata.h"
#include "upstream/cluster.h"
#include "upstream/subset.h"

#include "google/protobuf/struct.pb-c.h"

/* An "envoy.lb" struct from "key=kind:value;..." (kind s string, d
 * number, b bool), built as dynamic metadata, in canonical form; NULL for
 * "". */
static sharp_lbmeta_t *meta(const char *spec)
{
    sharp_md_value_t st = {.kind = SHARP_MD_STRUCT};
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *f = strtok_r(buf, ";", &save); f; f = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(f, '=');
        assert_non_null(eq);
        *eq = '\0';
        char kind = eq[1];
        const char *v = eq + 3;
        sharp_md_value_t val = {0};
        if (kind == 's')
            sharp_md_value_string(&val, v, strlen(v));
        else if (kind == 'd') {
            val.kind = SHARP_MD_NUMBER;
            val.number = strtod(v, NULL);
        } else {
            val.kind = SHARP_MD_BOOL;
            val.b = v[0] == '1';
        }
        sharp_md_struct_set(&st, f, strlen(f), &val);
    }
    sharp_sbuf_t out = {0};
    sharp_lbmeta_merge_dynamic(NULL, &st, &out);
    sharp_md_value_clear(&st);
    sharp_lbmeta_t *m = NULL;
    if (out.len) {
        m = calloc(1, sizeof *m + out.len);
        m->len = (uint32_t)out.len;
        memcpy(m->b, out.data, out.len);
    }
    sharp_sbuf_free(&out);
    return m;
}

static bool same(const sharp_lbmeta_t *a, const sharp_lbmeta_t *b)
{
    return sharp_lbmeta_equal(a, b);
}

static void test_canonical_values(void **state)
{
    (void)state;
    sharp_lbmeta_t *a = meta("v=s:1.0;stage=s:prod"), *b = meta("stage=s:prod;v=s:1.0");
    assert_true(same(a, b)); /* key order does not matter */
    free(b);
    b = meta("v=s:1.0;stage=s:canary");
    assert_false(same(a, b));
    free(a);
    free(b);
    /* protobuf's Value equality: a string is not a number or a bool */
    a = meta("k=s:1");
    b = meta("k=d:1");
    assert_false(same(a, b));
    free(b);
    b = meta("k=d:1.0");
    sharp_lbmeta_t *c = meta("k=d:1");
    assert_true(same(b, c));
    free(a);
    free(c);
    a = meta("k=d:-0");
    c = meta("k=d:0");
    assert_true(same(a, c));
    free(a);
    free(c);
    a = meta("k=b:1");
    c = meta("k=s:true");
    assert_false(same(a, c));
    free(a);
    free(b);
    free(c);
    /* the configuration's google.protobuf.Struct gives the same bytes as
     * dynamic metadata */
    Google__Protobuf__Value v1 = GOOGLE__PROTOBUF__VALUE__INIT, v2 = GOOGLE__PROTOBUF__VALUE__INIT,
                            v3 = GOOGLE__PROTOBUF__VALUE__INIT;
    v1.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v1.string_value = "prod";
    v2.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v2.number_value = 2;
    v3.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    v3.bool_value = 1;
    Google__Protobuf__Struct__FieldsEntry e1 = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          e2 = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                          e3 = GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT;
    e1.key = "stage";
    e1.value = &v1;
    e2.key = "n";
    e2.value = &v2;
    e3.key = "on";
    e3.value = &v3;
    Google__Protobuf__Struct__FieldsEntry *fields[] = {&e1, &e2, &e3};
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    st.n_fields = 3;
    st.fields = fields;
    a = sharp_lbmeta_from_struct(&st);
    b = meta("n=d:2;on=b:1;stage=s:prod");
    assert_true(same(a, b));
    free(a);
    free(b);
    st.n_fields = 0;
    assert_null(sharp_lbmeta_from_struct(&st));
}

/* Envoy's mergeMatchCriteria and the router's merge with the stream's
 * "envoy.lb" dynamic metadata: the later fields win. */
static void test_merges(void **state)
{
    (void)state;
    sharp_lbmeta_t *route = meta("stage=s:prod;v=s:1.0"), *wc = meta("stage=s:canary;zone=s:a");
    sharp_lbmeta_t *m = sharp_lbmeta_merge(route, wc),
                   *want = meta("stage=s:canary;v=s:1.0;zone=s:a");
    assert_true(same(m, want));
    free(m);
    m = sharp_lbmeta_merge(NULL, wc);
    assert_true(same(m, wc));
    free(m);
    m = sharp_lbmeta_merge(route, NULL);
    assert_true(same(m, route));
    free(m);
    sharp_md_value_t dyn = {.kind = SHARP_MD_STRUCT}, val = {0};
    sharp_md_value_string(&val, "canary", 6);
    sharp_md_struct_set(&dyn, "stage", 5, &val);
    sharp_md_value_string(&val, "a", 1);
    sharp_md_struct_set(&dyn, "zone", 4, &val);
    sharp_sbuf_t out = {0};
    sharp_lbmeta_merge_dynamic(route, &dyn, &out);
    assert_int_equal(out.len, want->len);
    assert_memory_equal(out.data, want->b, want->len);
    /* the buffer is reused: no dynamic metadata gives the route's */
    sharp_lbmeta_merge_dynamic(route, NULL, &out);
    assert_int_equal(out.len, route->len);
    assert_memory_equal(out.data, route->b, route->len);
    sharp_sbuf_free(&out);
    sharp_md_value_clear(&dyn);
    free(route);
    free(wc);
    free(want);
}

/* The hosts of Envoy's example: host1 and host2 v=1.0 stage=prod, host3
 * v=1.1 stage=canary, host4 v=1.2-pre stage=dev; host5 has no metadata. */
#define NH 5
static sharp_host_t hosts[NH];
static sharp_host_t *hp[NH];

static void make_hosts(void)
{
    static const char *const md[NH] = {"v=s:1.0;stage=s:prod", "v=s:1.0;stage=s:prod",
                                       "v=s:1.1;stage=s:canary", "v=s:1.2-pre;stage=s:dev", ""};
    memset(hosts, 0, sizeof hosts);
    for (int i = 0; i < NH; i++) {
        snprintf(hosts[i].address, sizeof hosts[i].address, "10.0.0.%d:80", i + 1);
        hosts[i].weight = 1;
        hosts[i].lb_meta = meta(md[i]);
        hp[i] = &hosts[i];
    }
}

static void free_hosts(void)
{
    for (int i = 0; i < NH; i++)
        free(hosts[i].lb_meta);
}

static sharp_subset_config_t *config(sharp_subset_fallback_t fb, const char *dflt)
{
    sharp_subset_config_t *c = calloc(1, sizeof *c);
    c->fallback = fb;
    c->default_subset = dflt ? meta(dflt) : NULL;
    c->selectors = calloc(2, sizeof *c->selectors);
    c->nselectors = 2;
    c->selectors[0].keys = calloc(2, sizeof(char *));
    c->selectors[0].keys[0] = strdup("stage"); /* sorted: stage < v */
    c->selectors[0].keys[1] = strdup("v");
    c->selectors[0].nkeys = 2;
    c->selectors[1].keys = calloc(1, sizeof(char *));
    c->selectors[1].keys[0] = strdup("stage");
    c->selectors[1].nkeys = 1;
    sharp_subset_config_finish(c);
    return c;
}

static int32_t find(const sharp_subset_plan_t *p, const char *spec)
{
    sharp_lbmeta_t *m = meta(spec);
    int32_t i = m ? sharp_subset_plan_find(p, m->b, m->len) : -1;
    free(m);
    return i;
}

static void test_plan(void **state)
{
    (void)state;
    make_hosts();
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_DEFAULT_SUBSET, "stage=s:prod");
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
    /* [stage, v]: 3 subsets, [stage]: 3 subsets */
    assert_int_equal(p->n, 6);
    int32_t i = find(p, "stage=s:canary");
    assert_true(i >= 0);
    assert_int_equal(p->entries[i].nhosts, 1);
    assert_ptr_equal(p->entries[i].hosts[0], &hosts[2]);
    i = find(p, "v=s:1.2-pre;stage=s:dev");
    assert_true(i >= 0);
    assert_ptr_equal(p->entries[i].hosts[0], &hosts[3]);
    i = find(p, "stage=s:prod;v=s:1.0");
    assert_true(i >= 0);
    assert_int_equal(p->entries[i].nhosts, 2);
    /* no selector for v alone, none for other, no subset stage=test */
    assert_int_equal(find(p, "v=s:1.0"), -1);
    assert_int_equal(find(p, "other=s:x"), -1);
    assert_int_equal(find(p, "stage=s:test"), -1);
    /* a selector's keys exactly: more keys than a selector has is no subset */
    assert_int_equal(find(p, "stage=s:prod;v=s:1.0;x=s:y"), -1);
    assert_true(p->has_default);
    assert_int_equal(p->ndflt, 2);
    assert_ptr_equal(p->dflt[0], &hosts[0]);
    assert_ptr_equal(p->dflt[1], &hosts[1]);
    /* a new set: host3 leaves (its two subsets are removed), host4 moves
     * to canary (one new subset [stage=canary, v=1.2-pre]) */
    free(hosts[3].lb_meta);
    hosts[3].lb_meta = meta("v=s:1.2-pre;stage=s:canary");
    sharp_host_t *next[] = {&hosts[0], &hosts[1], &hosts[3], &hosts[4]};
    sharp_subset_plan_t *q = sharp_subset_plan_build(cfg, next, 4);
    uint32_t created, removed;
    sharp_subset_plan_diff(p, q, &created, &removed);
    assert_int_equal(q->n, 4); /* prod/1.0, prod, canary/1.2-pre, canary */
    assert_int_equal(created, 1);
    assert_int_equal(removed, 3); /* canary/1.1, dev/1.2-pre, dev */
    i = find(q, "stage=s:canary");
    assert_ptr_equal(q->entries[i].hosts[0], &hosts[3]);
    sharp_subset_plan_diff(NULL, q, &created, &removed);
    assert_int_equal(created, 4);
    assert_int_equal(removed, 0);
    /* an empty default_subset takes every host */
    sharp_subset_config_t *all = config(SHARP_SUBSET_DEFAULT_SUBSET, NULL);
    sharp_subset_plan_t *r = sharp_subset_plan_build(all, next, 4);
    assert_int_equal(r->ndflt, 4);
    sharp_subset_plan_free(r);
    sharp_subset_config_free(all);
    sharp_subset_plan_free(p);
    sharp_subset_plan_free(q);
    sharp_subset_config_free(cfg);
    free_hosts();
}

/* Many hosts, one subset each: linear sizes, every host found. */
static void test_plan_many(void **state)
{
    (void)state;
    enum { N = 2000 };
    sharp_host_t *hs = calloc(N, sizeof *hs);
    sharp_host_t **ptrs = calloc(N, sizeof *ptrs);
    for (int i = 0; i < N; i++) {
        char spec[64];
        snprintf(spec, sizeof spec, "stage=s:s%d", i);
        hs[i].weight = 1;
        hs[i].lb_meta = meta(spec);
        ptrs[i] = &hs[i];
    }
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_NO_FALLBACK, NULL);
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, ptrs, N);
    assert_int_equal(p->n, N);
    for (int i = 0; i < N; i += 97) {
        char spec[64];
        snprintf(spec, sizeof spec, "stage=s:s%d", i);
        int32_t e = find(p, spec);
        assert_true(e >= 0);
        assert_int_equal(p->entries[e].nhosts, 1);
        assert_ptr_equal(p->entries[e].hosts[0], &hs[i]);
    }
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    for (int i = 0; i < N; i++)
        free(hs[i].lb_meta);
    free(hs);
    free(ptrs);
}

static sharp_host_t *choose(sharp_subset_lbs_t *s, sharp_lb_t *any, const char *spec)
{
    sharp_lbmeta_t *m = spec ? meta(spec) : NULL;
    sharp_host_t *h = sharp_subset_choose(s, any, m != NULL, m ? m->b : NULL, m ? m->len : 0);
    free(m);
    return h;
}

static void test_choose_and_fallbacks(void **state)
{
    (void)state;
    make_hosts();
    sharp_lb_t any;
    sharp_lb_init(&any, SHARP_LB_ROUND_ROBIN, hp, NH, 7);
    for (int fb = 0; fb < 3; fb++) {
        sharp_subset_config_t *cfg = config((sharp_subset_fallback_t)fb, "stage=s:prod");
        sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
        sharp_subset_lbs_t s;
        sharp_subset_lbs_init(&s, cfg, p, &any);
        for (int k = 0; k < 20; k++) {
            assert_ptr_equal(choose(&s, &any, "stage=s:canary"), &hosts[2]);
            sharp_host_t *h = choose(&s, &any, "v=s:1.0;stage=s:prod");
            assert_true(h == &hosts[0] || h == &hosts[1]);
            /* no subset: the fallback policy */
            for (int q = 0; q < 2; q++) {
                h = choose(&s, &any, q ? "stage=s:test" : NULL);
                if (fb == SHARP_SUBSET_NO_FALLBACK)
                    assert_null(h);
                else if (fb == SHARP_SUBSET_DEFAULT_SUBSET)
                    assert_true(h == &hosts[0] || h == &hosts[1]);
                else
                    assert_non_null(h);
            }
        }
        /* round robin inside a subset: both prod hosts */
        bool seen[2] = {false, false};
        for (int k = 0; k < 4; k++)
            seen[choose(&s, &any, "stage=s:prod") == &hosts[1]] = true;
        assert_true(seen[0] && seen[1]);
        sharp_subset_lbs_destroy(&s);
        sharp_subset_plan_free(p);
        sharp_subset_config_free(cfg);
    }
    /* an existing subset whose hosts are all unhealthy (panic threshold
     * 0): no host, and no fallback (Envoy's host_chosen) */
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_ANY_ENDPOINT, NULL);
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
    any.panic_threshold = 0;
    sharp_subset_lbs_t s;
    sharp_subset_lbs_init(&s, cfg, p, &any);
    sharp_host_health_set(&hosts[2], SHARP_HOST_FAILED_ACTIVE_HC);
    assert_null(choose(&s, &any, "stage=s:canary"));
    assert_non_null(choose(&s, &any, "stage=s:nothing"));
    sharp_host_health_clear(&hosts[2], SHARP_HOST_FAILED_ACTIVE_HC);
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    /* DEFAULT_SUBSET whose subset has no host: nothing, unless
     * panic_mode_any, which takes any host */
    cfg = config(SHARP_SUBSET_DEFAULT_SUBSET, "stage=s:none");
    p = sharp_subset_plan_build(cfg, hp, NH);
    assert_int_equal(p->ndflt, 0);
    sharp_subset_lbs_init(&s, cfg, p, &any);
    assert_null(choose(&s, &any, NULL));
    cfg->panic_mode_any = true;
    assert_non_null(choose(&s, &any, NULL));
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    sharp_lb_destroy(&any);
    free_hosts();
}

/* The overview's example: DEFAULT_SUBSET stage=prod for the cluster, the
 * [stage] selector overridden with NO_FALLBACK: "stage: test" balances
 * over nothing, "v: 1.0" and "other: x" over host1 and host2. With the
 * selectors in the overview's order ([v, stage] first) Envoy's selector
 * map never gives [stage] its policy (the node exists as a prefix of
 * [stage, v], initSubsetSelectorMap sets it only on a node it creates), so
 * the overview's result needs [stage] listed first; the other order is
 * checked below. */
static void test_selector_fallbacks(void **state)
{
    (void)state;
    make_hosts();
    sharp_lb_t any;
    sharp_lb_init(&any, SHARP_LB_ROUND_ROBIN, hp, NH, 7);
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_DEFAULT_SUBSET, "stage=s:prod");
    free(cfg->nodes);
    cfg->nnodes = 0;
    sharp_subset_selector_t t = cfg->selectors[0]; /* [stage] first */
    cfg->selectors[0] = cfg->selectors[1];
    cfg->selectors[1] = t;
    cfg->selectors[0].fallback = SHARP_SELECTOR_NO_FALLBACK;
    sharp_subset_config_finish(cfg);
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
    sharp_subset_lbs_t s;
    sharp_subset_lbs_init(&s, cfg, p, &any);
    assert_null(choose(&s, &any, "stage=s:test"));
    for (int k = 0; k < 6; k++) {
        sharp_host_t *h = choose(&s, &any, k % 2 ? "v=s:1.0" : "other=s:x");
        assert_true(h == &hosts[0] || h == &hosts[1]);
        assert_ptr_equal(choose(&s, &any, "stage=s:canary"), &hosts[2]);
    }
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    /* KEYS_SUBSET on [stage, v] down to [stage]: v=9 stage=canary finds
     * the canary subset; ANY_ENDPOINT on [stage] would then take any host */
    free(cfg->nodes);
    cfg->nnodes = 0;
    cfg->selectors[1].fallback = SHARP_SELECTOR_KEYS_SUBSET;
    cfg->selectors[1].fallback_keys = calloc(1, sizeof(char *));
    cfg->selectors[1].fallback_keys[0] = strdup("stage");
    cfg->selectors[1].nfallback_keys = 1;
    cfg->selectors[0].fallback = SHARP_SELECTOR_ANY_ENDPOINT;
    sharp_subset_config_finish(cfg);
    p = sharp_subset_plan_build(cfg, hp, NH);
    sharp_subset_lbs_init(&s, cfg, p, &any);
    for (int k = 0; k < 4; k++)
        assert_ptr_equal(choose(&s, &any, "v=s:9;stage=s:canary"), &hosts[2]);
    /* both nodes have a policy, and the lengths follow the new keys */
    assert_int_equal(cfg->nfb_nodes, 2);
    assert_int_equal(cfg->selectors[1].fallback_key_lens[0], 5);
    bool seen[NH] = {false};
    for (int k = 0; k < 20; k++) {
        sharp_host_t *h = choose(&s, &any, "v=s:9;stage=s:nope");
        assert_non_null(h);
        seen[h - hosts] = true;
    }
    for (int i = 0; i < NH; i++)
        assert_true(seen[i]);
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    /* a selector whose keys another selector made first as its prefix has
     * no fallback of its own (Envoy's selector map) */
    sharp_subset_config_t *c2 = calloc(1, sizeof *c2);
    c2->fallback = SHARP_SUBSET_ANY_ENDPOINT;
    c2->selectors = calloc(2, sizeof *c2->selectors);
    c2->nselectors = 2;
    c2->selectors[0].keys = calloc(2, sizeof(char *));
    c2->selectors[0].keys[0] = strdup("stage");
    c2->selectors[0].keys[1] = strdup("v");
    c2->selectors[0].nkeys = 2;
    c2->selectors[1].keys = calloc(1, sizeof(char *));
    c2->selectors[1].keys[0] = strdup("stage");
    c2->selectors[1].nkeys = 1;
    c2->selectors[1].fallback = SHARP_SELECTOR_NO_FALLBACK;
    sharp_subset_config_finish(c2);
    p = sharp_subset_plan_build(c2, hp, NH);
    sharp_subset_lbs_init(&s, c2, p, &any);
    assert_non_null(choose(&s, &any, "stage=s:test")); /* the cluster's ANY_ENDPOINT */
    assert_int_equal(c2->nnodes, 2);
    assert_int_equal(c2->nodes[0].fallback, SHARP_SELECTOR_NOT_DEFINED);
    /* only nodes with a policy are searched: none here */
    assert_int_equal(c2->nfb_nodes, 0);
    assert_int_equal(c2->selectors[0].key_lens[1], 1);
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(c2);
    sharp_subset_config_free(cfg);
    sharp_lb_destroy(&any);
    free_hosts();
}

/* single_host_per_subset: the first host of the lowest priority, whatever
 * its health; the others are duplicates. */
static void test_single_host(void **state)
{
    (void)state;
    make_hosts();
    hosts[1].priority = 0;
    hosts[0].priority = 1;
    sharp_lb_t any;
    sharp_lb_init(&any, SHARP_LB_ROUND_ROBIN, hp, NH, 7);
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_NO_FALLBACK, NULL);
    cfg->selectors[1].single_host = true; /* [stage] */
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
    assert_int_equal(p->single_duplicates, 0); /* two priorities: one host each */
    sharp_subset_lbs_t s;
    sharp_subset_lbs_init(&s, cfg, p, &any);
    sharp_host_health_set(&hosts[1], SHARP_HOST_FAILED_ACTIVE_HC);
    for (int k = 0; k < 4; k++)
        assert_ptr_equal(choose(&s, &any, "stage=s:prod"), &hosts[1]);
    sharp_host_health_clear(&hosts[1], SHARP_HOST_FAILED_ACTIVE_HC);
    /* [stage, v] is not single: both prod hosts */
    int32_t both = find(p, "stage=s:prod;v=s:1.0");
    assert_false(p->entries[both].single);
    assert_int_equal(p->entries[both].nhosts, 2);
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    hosts[0].priority = 0;
    p = sharp_subset_plan_build(cfg, hp, NH);
    assert_int_equal(p->single_duplicates, 1);
    int32_t i = find(p, "stage=s:prod");
    assert_int_equal(p->entries[i].nhosts, 1);
    assert_ptr_equal(p->entries[i].hosts[0], &hosts[0]);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    sharp_lb_destroy(&any);
    free_hosts();
}

/* A STRUCT {key: string value}. */
static void md_struct1(sharp_md_value_t *st, const char *key, const char *val)
{
    memset(st, 0, sizeof *st);
    st->kind = SHARP_MD_STRUCT;
    sharp_md_value_t v = {0};
    sharp_md_value_string(&v, val, strlen(val));
    sharp_md_struct_set(st, key, strlen(key), &v);
}

/* metadata_fallback_policy FALLBACK_LIST: the structs of the criteria's
 * fallback_list are tried in turn over the rest of the criteria. */
static void test_fallback_list(void **state)
{
    (void)state;
    make_hosts();
    sharp_lb_t any;
    sharp_lb_init(&any, SHARP_LB_ROUND_ROBIN, hp, NH, 7);
    sharp_subset_config_t *cfg = config(SHARP_SUBSET_NO_FALLBACK, NULL);
    cfg->metadata_fallback_list = true;
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, hp, NH);
    sharp_subset_lbs_t s;
    sharp_subset_lbs_init(&s, cfg, p, &any);
    for (int variant = 0; variant < 4; variant++) {
        sharp_md_value_t crit = {0}, v = {0};
        md_struct1(&crit, "stage", variant == 3 ? "canary" : "nope");
        if (variant < 2) {
            v.kind = SHARP_MD_LIST;
            v.n = v.cap = variant == 0 ? 2 : 0;
            v.items = calloc(2, sizeof *v.items);
            if (variant == 0) {
                md_struct1(&v.items[0], "stage", "gone");
                md_struct1(&v.items[1], "stage", "canary");
            }
        } else {
            sharp_md_value_string(&v, "x", 1); /* not a list: the rest alone */
        }
        sharp_md_struct_set(&crit, "fallback_list", 13, &v);
        sharp_sbuf_t b = {0};
        sharp_lbmeta_merge_dynamic(NULL, &crit, &b);
        sharp_host_t *h = sharp_subset_choose(&s, &any, true, (const uint8_t *)b.data, b.len);
        if (variant == 0 || variant == 3)
            assert_ptr_equal(h, &hosts[2]);
        else
            assert_null(h); /* stage=nope alone: no subset, NO_FALLBACK */
        /* without the policy the list is just another key: no subset */
        cfg->metadata_fallback_list = false;
        assert_null(sharp_subset_choose(&s, &any, true, (const uint8_t *)b.data, b.len));
        cfg->metadata_fallback_list = true;
        sharp_sbuf_free(&b);
        sharp_md_value_clear(&crit);
    }
    sharp_subset_lbs_destroy(&s);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    sharp_lb_destroy(&any);
    free_hosts();
}

/* list_as_any: a list value puts the host in a subset per element (per
 * combination of several lists), an empty list drops the keys before it
 * (Envoy's extractSubsetMetadata); default_subset matches any element. */
static void test_list_as_any(void **state)
{
    (void)state;
    sharp_host_t h[3];
    memset(h, 0, sizeof h);
    sharp_host_t *ptrs[3] = {&h[0], &h[1], &h[2]};
    for (int i = 0; i < 3; i++)
        h[i].weight = 1;
    /* h0: stage prod, v [1.0, 1.1]; h1: stage [a, b], v [x, y]; h2: stage
     * canary, v [] */
    sharp_md_value_t st = {.kind = SHARP_MD_STRUCT}, v = {0}, l = {.kind = SHARP_MD_LIST};
    sharp_md_value_string(&v, "prod", 4);
    sharp_md_struct_set(&st, "stage", 5, &v);
    l.items = calloc(2, sizeof *l.items);
    l.n = l.cap = 2;
    sharp_md_value_string(&l.items[0], "1.0", 3);
    sharp_md_value_string(&l.items[1], "1.1", 3);
    sharp_md_struct_set(&st, "v", 1, &l);
    sharp_sbuf_t b = {0};
    sharp_lbmeta_merge_dynamic(NULL, &st, &b);
    h[0].lb_meta = calloc(1, sizeof *h[0].lb_meta + b.len);
    h[0].lb_meta->len = (uint32_t)b.len;
    memcpy(h[0].lb_meta->b, b.data, b.len);
    sharp_md_value_clear(&st);
    st = (sharp_md_value_t){.kind = SHARP_MD_STRUCT};
    for (int k = 0; k < 2; k++) {
        l = (sharp_md_value_t){.kind = SHARP_MD_LIST};
        l.items = calloc(2, sizeof *l.items);
        l.n = l.cap = 2;
        sharp_md_value_string(&l.items[0], k ? "x" : "a", 1);
        sharp_md_value_string(&l.items[1], k ? "y" : "b", 1);
        sharp_md_struct_set(&st, k ? "v" : "stage", k ? 1 : 5, &l);
    }
    sharp_lbmeta_merge_dynamic(NULL, &st, &b);
    h[1].lb_meta = calloc(1, sizeof *h[1].lb_meta + b.len);
    h[1].lb_meta->len = (uint32_t)b.len;
    memcpy(h[1].lb_meta->b, b.data, b.len);
    sharp_md_value_clear(&st);
    st = (sharp_md_value_t){.kind = SHARP_MD_STRUCT};
    sharp_md_value_string(&v, "canary", 6);
    sharp_md_struct_set(&st, "stage", 5, &v);
    l = (sharp_md_value_t){.kind = SHARP_MD_LIST};
    sharp_md_struct_set(&st, "v", 1, &l);
    sharp_lbmeta_merge_dynamic(NULL, &st, &b);
    h[2].lb_meta = calloc(1, sizeof *h[2].lb_meta + b.len);
    h[2].lb_meta->len = (uint32_t)b.len;
    memcpy(h[2].lb_meta->b, b.data, b.len);
    sharp_md_value_clear(&st);
    sharp_sbuf_free(&b);

    sharp_subset_config_t *cfg = config(SHARP_SUBSET_DEFAULT_SUBSET, "v=s:1.1");
    cfg->list_as_any = true;
    assert_int_equal(sharp_subset_host_combinations(cfg, h[0].lb_meta), 2);
    assert_int_equal(sharp_subset_host_combinations(cfg, h[1].lb_meta), 4);
    sharp_subset_plan_t *p = sharp_subset_plan_build(cfg, ptrs, 3);
    int32_t i = find(p, "stage=s:prod;v=s:1.1");
    assert_true(i >= 0);
    assert_ptr_equal(p->entries[i].hosts[0], &h[0]);
    assert_true(find(p, "stage=s:prod;v=s:1.0") >= 0);
    for (const char *const *c =
             (const char *const[]){"stage=s:a;v=s:x", "stage=s:a;v=s:y", "stage=s:b;v=s:x",
                                   "stage=s:b;v=s:y", "stage=s:a", "stage=s:b", NULL};
         *c; c++) {
        i = find(p, *c);
        assert_true(i >= 0);
        assert_int_equal(p->entries[i].nhosts, 1);
        assert_ptr_equal(p->entries[i].hosts[0], &h[1]);
    }
    /* h2: [stage] gives stage=canary; [stage, v] with v an empty list gives
     * nothing (the list is the last key) */
    assert_true(find(p, "stage=s:canary") >= 0);
    assert_int_equal(find(p, "stage=s:canary;v=s:x"), -1);
    /* prod, prod/1.0, prod/1.1, a, b, a/x, a/y, b/x, b/y, canary */
    assert_int_equal(p->n, 10);
    assert_int_equal(p->ndflt, 1); /* v=1.1: an element of h0's list */
    assert_ptr_equal(p->dflt[0], &h[0]);
    sharp_subset_plan_free(p);
    /* without list_as_any a list is one value */
    cfg->list_as_any = false;
    p = sharp_subset_plan_build(cfg, ptrs, 3);
    assert_int_equal(find(p, "stage=s:prod;v=s:1.1"), -1);
    assert_int_equal(p->ndflt, 0);
    assert_int_equal(sharp_subset_host_combinations(cfg, h[1].lb_meta), 1);
    sharp_subset_plan_free(p);
    sharp_subset_config_free(cfg);
    for (int k = 0; k < 3; k++)
        free(h[k].lb_meta);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_values),
        cmocka_unit_test(test_merges),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_plan_many),
        cmocka_unit_test(test_choose_and_fallbacks),
        cmocka_unit_test(test_selector_fallbacks),
        cmocka_unit_test(test_single_host),
        cmocka_unit_test(test_fallback_list),
        cmocka_unit_test(test_list_as_any),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
