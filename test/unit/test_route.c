/* test_route.c: virtual host selection, route matching, weighted clusters,
 * header mutations and the RE2 regex matchers and path rewrite. Tables are built
 * by hand here; config/route_config.c builds them from protobuf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/route.h"
#include "http/stream_info.h"

/* ---- building helpers ---- */

static sharp_route_table_t *table_new(uint32_t nvhosts)
{
    sharp_route_table_t *t = sharp_calloc(1, sizeof *t);
    t->name = sharp_strdup("test_routes");
    t->vhosts = sharp_calloc(nvhosts, sizeof *t->vhosts);
    t->nvhosts = nvhosts;
    return t;
}

/* Sets vhost `i`'s name and domains (NULL-terminated list). */
static sharp_vhost_t *vhost(sharp_route_table_t *t, uint32_t i, const char *name, ...)
{
    sharp_vhost_t *vh = &t->vhosts[i];
    vh->name = sharp_strdup(name);
    va_list ap;
    va_start(ap, name);
    for (const char *d; (d = va_arg(ap, const char *));) {
        vh->domains = sharp_realloc(vh->domains, (vh->ndomains + 1) * sizeof *vh->domains);
        vh->domains[vh->ndomains++] = sharp_strdup(d);
    }
    va_end(ap);
    return vh;
}

static sharp_route_t *add_route(sharp_vhost_t *vh, sharp_route_match_kind_t kind, const char *path,
                                const char *cluster)
{
    vh->routes = sharp_realloc(vh->routes, (vh->nroutes + 1) * sizeof *vh->routes);
    sharp_route_t *r = &vh->routes[vh->nroutes++];
    memset(r, 0, sizeof *r);
    r->name = sharp_strdup(cluster);
    r->match_kind = kind;
    r->case_sensitive = true;
    if (kind == SHARP_ROUTE_MATCH_REGEX) {
        char err[512];
        if (!(r->path_re = sharp_regex_compile(path, NULL, err, sizeof err)))
            fail_msg("regex %s: %s", path, err);
    }
    r->path = sharp_strdup(path);
    r->path_len = strlen(path);
    r->cluster = sharp_strdup(cluster);
    r->timeout_ms = 15000;
    return r;
}

static sharp_header_matcher_t *add_header_matcher(sharp_route_t *r, const char *name,
                                                  sharp_header_match_kind_t kind)
{
    r->headers = sharp_realloc(r->headers, (r->nheaders + 1) * sizeof *r->headers);
    sharp_header_matcher_t *m = &r->headers[r->nheaders++];
    memset(m, 0, sizeof *m);
    m->name = sharp_strdup(name);
    m->name_len = strlen(name);
    m->kind = kind;
    m->present = true;
    return m;
}

static void sm(sharp_string_matcher_t *m, sharp_string_match_kind_t kind, const char *v, bool icase)
{
    char err[128];
    if (sharp_string_matcher_init(m, kind, v, strlen(v), icase, err, sizeof err) < 0)
        fail_msg("%s", err);
}

static void add_op(sharp_header_ops_t *ops, const char *name, const char *value,
                   sharp_header_append_t a, bool keep_empty)
{
    char err[128];
    ops->add = sharp_realloc(ops->add, (ops->nadd + 1) * sizeof *ops->add);
    if (sharp_header_op_init(&ops->add[ops->nadd++], name, value, a, keep_empty, err, sizeof err) <
        0)
        fail_msg("%s", err);
}

static void add_remove(sharp_header_ops_t *ops, const char *name)
{
    ops->remove = sharp_realloc(ops->remove, (ops->nremove + 1) * sizeof *ops->remove);
    ops->remove[ops->nremove++] = sharp_strdup(name);
}

static const char *vh_name(const sharp_route_table_t *t, const char *host)
{
    const sharp_vhost_t *vh = sharp_route_table_find_vhost(t, (sharp_str_t){host, strlen(host)});
    return vh ? vh->name : "(none)";
}

/* Request headers from "name: value" strings. */
static void req_init(sharp_headers_t *h, const char *path, ...)
{
    sharp_headers_init(h);
    sharp_headers_add_cstr(h, ":method", "GET");
    sharp_headers_add_cstr(h, ":authority", "example.com");
    if (path) sharp_headers_add_cstr(h, ":path", path);
    va_list ap;
    va_start(ap, path);
    for (const char *nv; (nv = va_arg(ap, const char *));) {
        const char *colon = strchr(nv, ':');
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        sharp_headers_add(h, nv, (size_t)(colon - nv), v, strlen(v));
    }
    va_end(ap);
}

static const char *match_name(const sharp_vhost_t *vh, const char *path, ...)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":path", path);
    va_list ap;
    va_start(ap, path);
    for (const char *nv; (nv = va_arg(ap, const char *));) {
        const char *colon = strchr(nv + 1, ':');
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        sharp_headers_add(&h, nv, (size_t)(colon - nv), v, strlen(v));
    }
    va_end(ap);
    const sharp_route_t *r = sharp_vhost_match(vh, &h);
    sharp_headers_free(&h);
    return r ? r->name : "(none)";
}

/* ---- virtual hosts ---- */

static sharp_route_table_t *domain_table(void)
{
    sharp_route_table_t *t = table_new(8);
    vhost(t, 0, "any", "*", NULL);
    vhost(t, 1, "prefix_short", "foo.*", NULL);
    vhost(t, 2, "prefix_long", "foo.bar.*", NULL);
    vhost(t, 3, "suffix_short", "*.foo.com", NULL);
    vhost(t, 4, "suffix_long", "*.bar.foo.com", NULL);
    vhost(t, 5, "suffix_dash", "*-bar.baz.com", NULL);
    vhost(t, 6, "baz", "*.baz.com", "Baz.Org", NULL);
    vhost(t, 7, "exact", "foo.com", "x.bar.foo.com", "[::1]", NULL);
    return t;
}

static void check_domain_order(const sharp_route_table_t *t)
{
    assert_string_equal(vh_name(t, "foo.com"), "exact");
    assert_string_equal(vh_name(t, "FOO.Com"), "exact");
    assert_string_equal(vh_name(t, "x.bar.foo.com"), "exact"); /* exact beats any wildcard */
    assert_string_equal(vh_name(t, "a.bar.foo.com"), "suffix_long");
    assert_string_equal(vh_name(t, "a.foo.com"), "suffix_short");
    assert_string_equal(vh_name(t, "A.FOO.COM"), "suffix_short");
    assert_string_equal(vh_name(t, "foo-bar.baz.com"), "suffix_dash");
    assert_string_equal(vh_name(t, "x.baz.com"), "baz");
    assert_string_equal(vh_name(t, "baz.org"), "baz");
    assert_string_equal(vh_name(t, "foo.x.foo.com"), "suffix_short"); /* suffix beats prefix */
    assert_string_equal(vh_name(t, "foo.bar.org"), "prefix_long");
    assert_string_equal(vh_name(t, "foo.org"), "prefix_short");
    assert_string_equal(vh_name(t, "Foo.Org"), "prefix_short");
    /* a wildcard never matches an empty remainder */
    assert_string_equal(vh_name(t, ".foo.com"), "any");
    assert_string_equal(vh_name(t, "foo."), "any");
    assert_string_equal(vh_name(t, "-bar.baz.com"), "baz");
    assert_string_equal(vh_name(t, "other.net"), "any");
    assert_string_equal(vh_name(t, ""), "any");
    /* the port is part of the value matched */
    assert_string_equal(vh_name(t, "foo.com:8080"), "prefix_short");
    assert_string_equal(vh_name(t, "a.foo.com:443"), "any");
    assert_string_equal(vh_name(t, "[::1]"), "exact");
    assert_string_equal(vh_name(t, "[::1]:80"), "any");
}

static void test_domain_order_indexed(void **state)
{
    sharp_route_table_t *t = domain_table();
    char err[256];
    assert_int_equal(sharp_route_table_build_index(t, err, sizeof err), 0);
    assert_non_null(t->domain_index);
    check_domain_order(t);
    sharp_route_table_free(t);
}

static void test_domain_order_scan(void **state)
{
    sharp_route_table_t *t = domain_table();
    check_domain_order(t);
    sharp_route_table_free(t);
}

static void test_domain_ignore_port(void **state)
{
    sharp_route_table_t *t = domain_table();
    char err[256];
    assert_int_equal(sharp_route_table_build_index(t, err, sizeof err), 0);
    t->ignore_port_in_host_matching = true;
    assert_string_equal(vh_name(t, "foo.com:8080"), "exact");
    assert_string_equal(vh_name(t, "a.foo.com:443"), "suffix_short");
    assert_string_equal(vh_name(t, "[::1]:80"), "exact");
    assert_string_equal(vh_name(t, "[::1]"), "exact");
    assert_string_equal(vh_name(t, "foo.com:"), "exact");
    sharp_route_table_free(t);
}

static void test_domain_no_default(void **state)
{
    sharp_route_table_t *t = table_new(1);
    vhost(t, 0, "only", "only.com", NULL);
    assert_string_equal(vh_name(t, "other.com"), "(none)");
    char err[256];
    assert_int_equal(sharp_route_table_build_index(t, err, sizeof err), 0);
    assert_string_equal(vh_name(t, "other.com"), "(none)");
    assert_string_equal(vh_name(t, "ONLY.com"), "only");
    assert_null(sharp_route_table_find_vhost(NULL, SHARP_STR("x")));
    sharp_route_table_free(t);
}

static void expect_index_error(sharp_route_table_t *t, const char *needle)
{
    char err[256] = "";
    assert_int_equal(sharp_route_table_build_index(t, err, sizeof err), -1);
    assert_null(t->domain_index);
    if (!strstr(err, needle)) fail_msg("error '%s' lacks '%s'", err, needle);
    sharp_route_table_free(t);
}

static void test_domain_duplicates(void **state)
{
    sharp_route_table_t *t = table_new(2);
    vhost(t, 0, "a", "foo.com", NULL);
    vhost(t, 1, "b", "bar.com", "Foo.COM", NULL);
    expect_index_error(t, "Duplicate entry of domain foo.com");
    t = table_new(2);
    vhost(t, 0, "a", "*", NULL);
    vhost(t, 1, "b", "*", NULL);
    expect_index_error(t, "Only a single wildcard domain is permitted in route test_routes");
    t = table_new(1);
    vhost(t, 0, "a", "*.x.com", "*.X.com", NULL);
    expect_index_error(t, "Duplicate entry of domain *.x.com");
    t = table_new(2);
    vhost(t, 0, "a", "x.*", NULL);
    vhost(t, 1, "b", "x.*", NULL);
    expect_index_error(t, "Duplicate entry of domain x.*");
    /* the same text as exact and as wildcard kinds is fine */
    t = table_new(3);
    vhost(t, 0, "a", "x.com", NULL);
    vhost(t, 1, "b", "*x.com", NULL);
    vhost(t, 2, "c", "x.com*", NULL);
    char err[128];
    assert_int_equal(sharp_route_table_build_index(t, err, sizeof err), 0);
    sharp_route_table_free(t);
}

/* ---- route matching ---- */

static void test_path_match_kinds(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    add_route(vh, SHARP_ROUTE_MATCH_PATH, "/exact", "exact");
    add_route(vh, SHARP_ROUTE_MATCH_PATH_SEPARATED_PREFIX, "/sep", "sep");
    add_route(vh, SHARP_ROUTE_MATCH_REGEX, "/user/\\d+(/profile)?", "regex");
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/api", "prefix");
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/CI", "ci")->case_sensitive = false;
    add_route(vh, SHARP_ROUTE_MATCH_PATH, "/Exact2", "exact_ci")->case_sensitive = false;
    assert_string_equal(match_name(vh, "/exact", NULL), "exact");
    assert_string_equal(match_name(vh, "/exact?q=1", NULL), "exact");
    assert_string_equal(match_name(vh, "/exact#frag", NULL), "exact");
    assert_string_equal(match_name(vh, "/exact/", NULL), "(none)");
    assert_string_equal(match_name(vh, "/Exact", NULL), "(none)");
    assert_string_equal(match_name(vh, "/sep", NULL), "sep");
    assert_string_equal(match_name(vh, "/sep/", NULL), "sep");
    assert_string_equal(match_name(vh, "/sep/x/y", NULL), "sep");
    assert_string_equal(match_name(vh, "/sep?x=1", NULL), "sep");
    assert_string_equal(match_name(vh, "/sepx", NULL), "(none)");
    assert_string_equal(match_name(vh, "/user/123", NULL), "regex");
    assert_string_equal(match_name(vh, "/user/123/profile?x=/y", NULL), "regex");
    assert_string_equal(match_name(vh, "/user/12a", NULL), "(none)");
    assert_string_equal(match_name(vh, "/user/123/profilex", NULL), "(none)");
    assert_string_equal(match_name(vh, "/api", NULL), "prefix");
    assert_string_equal(match_name(vh, "/apix/y", NULL), "prefix");
    assert_string_equal(match_name(vh, "/API", NULL), "(none)");
    assert_string_equal(match_name(vh, "/ci/z", NULL), "ci");
    assert_string_equal(match_name(vh, "/cI", NULL), "ci");
    assert_string_equal(match_name(vh, "/exact2", NULL), "exact_ci");
    assert_string_equal(match_name(vh, "/EXACT2?a", NULL), "exact_ci");
    /* no :path (a CONNECT): the path matchers see "", no route */
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", "CONNECT");
    sharp_headers_add_cstr(&h, ":authority", "example.com:443");
    assert_null(sharp_vhost_match(vh, &h));
    /* connect_matcher takes it, and nothing but a CONNECT */
    add_route(vh, SHARP_ROUTE_MATCH_CONNECT, "", "connect");
    const sharp_route_t *r = sharp_vhost_match(vh, &h);
    assert_non_null(r);
    assert_string_equal(r->name, "connect");
    assert_string_equal(match_name(vh, "/nothing-else", ":method: GET", NULL), "(none)");
    sharp_headers_set_cstr(&h, ":method", "GET");
    assert_null(sharp_vhost_match(vh, &h));
    sharp_headers_free(&h);
    assert_null(sharp_vhost_match(NULL, &h));
    sharp_route_table_free(t);
}

/* Envoy matches a request without a path (a CONNECT) as if its path were
 * empty: a prefix "" takes it, with the other criteria of the route */
static void test_connect_and_empty_prefix(void **state)
{
    (void)state;
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/", "slash");
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "", "empty");
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", "CONNECT");
    sharp_headers_add_cstr(&h, ":authority", "a:1");
    const sharp_route_t *r = sharp_vhost_match(vh, &h);
    assert_non_null(r);
    assert_string_equal(r->name, "empty");
    sharp_headers_free(&h);
    assert_string_equal(match_name(vh, "/x", NULL), "slash");
    sharp_route_table_free(t);
}

static void test_first_match_wins(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/", "catch_all");
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/specific", "never");
    assert_string_equal(match_name(vh, "/specific", NULL), "catch_all");
    sharp_route_table_free(t);
}

static void test_header_matchers(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    sharp_route_t *r;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/exact", "exact");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_EXACT, "1", false);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/prefix", "prefix");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_PREFIX, "ab", false);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/suffix", "suffix");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_SUFFIX, "yz", false);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/contains", "contains");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_CONTAINS, "mid", false);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/regex", "regex");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_REGEX, "v[0-9]+\\.\\d", false);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/icase", "icase");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_EXACT, "HeLLo", true);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/present", "present");
    add_header_matcher(r, "x-a", SHARP_HM_PRESENT);
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/absent", "absent");
    add_header_matcher(r, "x-a", SHARP_HM_PRESENT)->present = false;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/range", "range");
    sharp_header_matcher_t *m = add_header_matcher(r, "x-a", SHARP_HM_RANGE);
    m->range_start = -10;
    m->range_end = 100;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/invert", "invert");
    m = add_header_matcher(r, "x-a", SHARP_HM_STRING);
    sm(&m->sm, SHARP_SM_EXACT, "bad", false);
    m->invert = true;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/inv_present", "inv_present");
    add_header_matcher(r, "x-a", SHARP_HM_PRESENT)->invert = true;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/empty", "empty");
    m = add_header_matcher(r, "x-a", SHARP_HM_STRING);
    sm(&m->sm, SHARP_SM_EXACT, "", false);
    m->treat_missing_as_empty = true;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/two", "two");
    sm(&add_header_matcher(r, "x-a", SHARP_HM_STRING)->sm, SHARP_SM_EXACT, "1", false);
    sm(&add_header_matcher(r, ":method", SHARP_HM_STRING)->sm, SHARP_SM_EXACT, "POST", false);

    assert_string_equal(match_name(vh, "/exact", "x-a: 1", NULL), "exact");
    assert_string_equal(match_name(vh, "/exact", "X-A: 1", NULL), "exact");
    assert_string_equal(match_name(vh, "/exact", "x-a: 12", NULL), "(none)");
    assert_string_equal(match_name(vh, "/exact", NULL), "(none)");
    /* repeated headers are joined with "," before matching */
    assert_string_equal(match_name(vh, "/exact", "x-a: 1", "x-a: 1", NULL), "(none)");
    assert_string_equal(match_name(vh, "/contains", "x-a: x", "x-a: mid", NULL), "contains");
    assert_string_equal(match_name(vh, "/suffix", "x-a: yz", "x-a: q", NULL), "(none)");
    assert_string_equal(match_name(vh, "/prefix", "x-a: abc", NULL), "prefix");
    assert_string_equal(match_name(vh, "/prefix", "x-a: Abc", NULL), "(none)");
    assert_string_equal(match_name(vh, "/suffix", "x-a: xyz", NULL), "suffix");
    assert_string_equal(match_name(vh, "/contains", "x-a: amidst", NULL), "contains");
    assert_string_equal(match_name(vh, "/regex", "x-a: v12.3", NULL), "regex");
    assert_string_equal(match_name(vh, "/regex", "x-a: v12.3x", NULL), "(none)");
    assert_string_equal(match_name(vh, "/regex", "x-a: xv12.3", NULL), "(none)");
    assert_string_equal(match_name(vh, "/icase", "x-a: hello", NULL), "icase");
    assert_string_equal(match_name(vh, "/present", "x-a: ", NULL), "present");
    assert_string_equal(match_name(vh, "/present", NULL), "(none)");
    assert_string_equal(match_name(vh, "/absent", NULL), "absent");
    assert_string_equal(match_name(vh, "/absent", "x-a: 1", NULL), "(none)");
    assert_string_equal(match_name(vh, "/range", "x-a: 99", NULL), "range");
    assert_string_equal(match_name(vh, "/range", "x-a: -10", NULL), "range");
    assert_string_equal(match_name(vh, "/range", "x-a:  +5 ", NULL), "range");
    assert_string_equal(match_name(vh, "/range", "x-a: 100", NULL), "(none)");
    assert_string_equal(match_name(vh, "/range", "x-a: 5x", NULL), "(none)");
    assert_string_equal(match_name(vh, "/range", "x-a: 99999999999999999999", NULL), "(none)");
    assert_string_equal(match_name(vh, "/invert", "x-a: good", NULL), "invert");
    assert_string_equal(match_name(vh, "/invert", "x-a: bad", NULL), "(none)");
    assert_string_equal(match_name(vh, "/invert", NULL),
                        "(none)"); /* missing never matches a value */
    assert_string_equal(match_name(vh, "/inv_present", NULL), "inv_present");
    assert_string_equal(match_name(vh, "/inv_present", "x-a: 1", NULL), "(none)");
    assert_string_equal(match_name(vh, "/empty", NULL), "empty");
    assert_string_equal(match_name(vh, "/empty", "x-a: ", NULL), "empty");
    assert_string_equal(match_name(vh, "/empty", "x-a: z", NULL), "(none)");
    assert_string_equal(match_name(vh, "/two", "x-a: 1", ":method: POST", NULL), "two");
    assert_string_equal(match_name(vh, "/two", "x-a: 1", ":method: GET", NULL), "(none)");
    sharp_route_table_free(t);
}

static void test_query_matchers(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    sharp_route_t *r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/q", "q");
    r->query = sharp_calloc(2, sizeof *r->query);
    r->nquery = 2;
    r->query[0].name = sharp_strdup("a");
    sm(&r->query[0].sm, SHARP_SM_EXACT, "v", false);
    r->query[1].name = sharp_strdup("debug");
    r->query[1].present_match = true;
    r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/raw", "raw");
    r->query = sharp_calloc(1, sizeof *r->query);
    r->nquery = 1;
    r->query[0].name = sharp_strdup("s");
    sm(&r->query[0].sm, SHARP_SM_PREFIX, "a%20", false);
    assert_string_equal(match_name(vh, "/q?a=v&debug", NULL), "q");
    assert_string_equal(match_name(vh, "/q?debug=0&x=1&a=v", NULL), "q");
    assert_string_equal(match_name(vh, "/q?a=v", NULL), "(none)");
    assert_string_equal(match_name(vh, "/q?a=w&debug", NULL), "(none)");
    assert_string_equal(match_name(vh, "/q?a=v&a=w&debug", NULL), "q"); /* first value */
    assert_string_equal(match_name(vh, "/q?a=w&a=v&debug", NULL), "(none)");
    assert_string_equal(match_name(vh, "/q?A=v&debug", NULL),
                        "(none)"); /* names are case-sensitive */
    assert_string_equal(match_name(vh, "/q", NULL), "(none)");
    assert_string_equal(match_name(vh, "/raw?s=a%20b", NULL), "raw"); /* not percent-decoded */
    assert_string_equal(match_name(vh, "/raw?s=a+b", NULL), "(none)");
    sharp_route_table_free(t);
}

static void test_grpc_and_runtime_fraction(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/g", "grpc")->match_grpc = true;
    sharp_route_t *r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/f", "fraction");
    r->has_runtime_fraction = true;
    r->runtime_fraction.numerator = 25;
    r->runtime_fraction.denominator = 100;
    add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/", "fallback");
    assert_string_equal(match_name(vh, "/g", "content-type: application/grpc", NULL), "grpc");
    assert_string_equal(match_name(vh, "/g", "content-type: application/grpc+proto", NULL), "grpc");
    assert_string_equal(match_name(vh, "/g", "content-type: application/grpc;x=y", NULL), "grpc");
    assert_string_equal(match_name(vh, "/g", "content-type: application/grpcx", NULL), "fallback");
    assert_string_equal(match_name(vh, "/g", NULL), "fallback");
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":path", "/f");
    int hits = 0;
    for (uint64_t rnd = 0; rnd < 1000; rnd++)
        hits += strcmp(sharp_vhost_match_random(vh, &h, rnd)->name, "fraction") == 0;
    assert_int_equal(hits, 250);
    sharp_headers_free(&h);
    sharp_route_table_free(t);
}

/* ---- weighted clusters ---- */

static void test_weighted_pick(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    sharp_route_t *r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/", "ignored");
    free(r->cluster);
    r->cluster = NULL;
    const char *names[] = {"a", "b", "c"};
    uint32_t weights[] = {10, 20, 70};
    r->weighted = sharp_calloc(3, sizeof *r->weighted);
    r->nweighted = 3;
    for (int i = 0; i < 3; i++) {
        r->weighted[i].name = sharp_strdup(names[i]);
        r->weighted[i].weight = weights[i];
        r->total_weight += weights[i];
    }
    int c[3] = {0};
    for (uint64_t rnd = 0; rnd < 1000; rnd++) {
        const sharp_weighted_cluster_t *wc;
        const char *name = sharp_route_pick_cluster(r, rnd, &wc);
        assert_non_null(wc);
        assert_string_equal(name, wc->name);
        c[name[0] - 'a']++;
    }
    assert_int_equal(c[0], 100);
    assert_int_equal(c[1], 200);
    assert_int_equal(c[2], 700);
    /* boundaries: [0,10) a, [10,30) b, [30,100) c */
    assert_string_equal(sharp_route_pick_cluster(r, 9, NULL), "a");
    assert_string_equal(sharp_route_pick_cluster(r, 10, NULL), "b");
    assert_string_equal(sharp_route_pick_cluster(r, 29, NULL), "b");
    assert_string_equal(sharp_route_pick_cluster(r, 30, NULL), "c");
    assert_string_equal(sharp_route_pick_cluster(r, 199, NULL), "c");
    /* a spread-out random source gives proportions within a few percent */
    uint64_t x = 88172645463325252ull;
    memset(c, 0, sizeof c);
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c[sharp_route_pick_cluster(r, x, NULL)[0] - 'a']++;
    }
    assert_in_range(c[0], 9500, 10500);
    assert_in_range(c[1], 19000, 21000);
    assert_in_range(c[2], 69000, 71000);
    r->total_weight = 0;
    assert_null(sharp_route_pick_cluster(r, 1, NULL));
    const sharp_weighted_cluster_t *wc = (void *)1;
    sharp_route_t single = {.cluster = "only"};
    assert_string_equal(sharp_route_pick_cluster(&single, 5, &wc), "only");
    assert_null(wc);
    sharp_route_table_free(t);
}

/* ---- header mutations ---- */

static const char *all_values(const sharp_headers_t *h, const char *name, char *buf, size_t cap)
{
    buf[0] = '\0';
    size_t n = strlen(name);
    for (int i = sharp_headers_find(h, name, n, 0); i >= 0;
         i = sharp_headers_find(h, name, n, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        size_t at = strlen(buf);
        snprintf(buf + at, cap - at, "%s%.*s", at ? "|" : "", (int)v.len, v.p);
    }
    return buf;
}

static void test_header_ops_actions(void **state)
{
    sharp_header_ops_t ops = {0};
    add_remove(&ops, "x-remove");
    add_remove(&ops, "x-replaced");
    add_op(&ops, "X-Append", "new", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-append-absent", "v", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-if-absent", "ignored", SHARP_ADD_IF_ABSENT, false);
    add_op(&ops, "x-if-absent-missing", "added", SHARP_ADD_IF_ABSENT, false);
    add_op(&ops, "x-if-absent-missing", "added-too", SHARP_ADD_IF_ABSENT, false);
    add_op(&ops, "x-overwrite", "over", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-overwrite-missing", "over", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-if-exists", "changed", SHARP_OVERWRITE_IF_EXISTS, false);
    add_op(&ops, "x-if-exists-missing", "nope", SHARP_OVERWRITE_IF_EXISTS, false);
    add_op(&ops, "x-empty", "", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-empty-kept", "", SHARP_APPEND_IF_EXISTS_OR_ADD, true);
    add_op(&ops, "x-replaced", "fresh", SHARP_ADD_IF_ABSENT, false);
    sharp_headers_t h;
    req_init(&h, "/", "x-remove: 1", "x-remove: 2", "x-append: old", "x-if-absent: here",
             "x-overwrite: a", "x-overwrite: b", "x-if-exists: before", "x-replaced: stale", NULL);
    sharp_header_ops_apply(&ops, &h);
    char b[256];
    assert_false(sharp_headers_get_cstr(&h, "x-remove", NULL));
    assert_string_equal(all_values(&h, "x-append", b, sizeof b), "old|new");
    assert_string_equal(all_values(&h, "x-append-absent", b, sizeof b), "v");
    assert_string_equal(all_values(&h, "x-if-absent", b, sizeof b), "here");
    /* both decided against the headers as they were: both added */
    assert_string_equal(all_values(&h, "x-if-absent-missing", b, sizeof b), "added|added-too");
    assert_string_equal(all_values(&h, "x-overwrite", b, sizeof b), "over");
    assert_string_equal(all_values(&h, "x-overwrite-missing", b, sizeof b), "over");
    assert_string_equal(all_values(&h, "x-if-exists", b, sizeof b), "changed");
    assert_false(sharp_headers_get_cstr(&h, "x-if-exists-missing", NULL));
    assert_false(sharp_headers_get_cstr(&h, "x-empty", NULL));
    assert_true(sharp_headers_get_cstr(&h, "x-empty-kept", NULL));
    /* removal happens before additions */
    assert_string_equal(all_values(&h, "x-replaced", b, sizeof b), "fresh");
    sharp_headers_free(&h);
    sharp_route_table_t *t = table_new(0);
    t->req_ops = ops;
    sharp_route_table_free(t);
}

static void test_header_ops_substitution(void **state)
{
    sharp_header_ops_t ops = {0};
    add_op(&ops, "x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
           SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-both", "%PROTOCOL%/%REQ(x-in)%", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-pct", "100%%", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&ops, "x-missing", "%UPSTREAM_CLUSTER%", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    char err[128];
    sharp_header_op_t bad;
    assert_int_equal(
        sharp_header_op_init(&bad, "x", "%NOT_A_VAR%", SHARP_ADD_IF_ABSENT, false, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "%NOT_A_VAR%"));
    sharp_headers_t h;
    req_init(&h, "/", "x-in: abc", NULL);
    sharp_stream_info_t si = {0};
    snprintf(si.downstream_remote_address, sizeof si.downstream_remote_address, "192.0.2.7:5000");
    si.protocol = "HTTP/1.1";
    si.request_headers = &h;
    sharp_header_ops_apply_si(&ops, &h, &si);
    char b[128];
    assert_string_equal(all_values(&h, "x-client", b, sizeof b), "192.0.2.7");
    assert_string_equal(all_values(&h, "x-both", b, sizeof b), "HTTP/1.1/abc");
    assert_string_equal(all_values(&h, "x-pct", b, sizeof b), "100%");
    assert_false(sharp_headers_get_cstr(&h, "x-missing", NULL)); /* empty: skipped */
    sharp_headers_free(&h);
    /* without stream info variables are empty */
    req_init(&h, "/", NULL);
    sharp_header_ops_apply(&ops, &h);
    assert_false(sharp_headers_get_cstr(&h, "x-client", NULL));
    assert_string_equal(all_values(&h, "x-both", b, sizeof b), "/");
    sharp_headers_free(&h);
    sharp_route_table_t *t = table_new(0);
    t->resp_ops = ops;
    sharp_route_table_free(t);
}

static void test_header_levels_order(void **state)
{
    sharp_route_table_t *t = table_new(1);
    sharp_vhost_t *vh = vhost(t, 0, "v", "*", NULL);
    sharp_route_t *r = add_route(vh, SHARP_ROUTE_MATCH_PREFIX, "/", "c");
    r->weighted = sharp_calloc(1, sizeof *r->weighted);
    r->nweighted = 1;
    r->weighted[0].name = sharp_strdup("c");
    r->weighted[0].weight = 1;
    add_op(&r->weighted[0].req_ops, "x-level", "cluster", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&r->req_ops, "x-level", "route", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&vh->req_ops, "x-level", "vhost", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&t->req_ops, "x-level", "table", SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false);
    add_op(&r->resp_ops, "x-trail", "route", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    add_op(&t->resp_ops, "x-trail", "table", SHARP_APPEND_IF_EXISTS_OR_ADD, false);
    sharp_headers_t h;
    char b[128];
    req_init(&h, "/", NULL);
    sharp_route_apply_request_headers(t, vh, r, &r->weighted[0], &h, NULL);
    assert_string_equal(all_values(&h, "x-level", b, sizeof b), "table");
    sharp_headers_clear(&h);
    sharp_route_apply_response_headers(t, vh, r, NULL, &h, NULL);
    assert_string_equal(all_values(&h, "x-trail", b, sizeof b), "route|table");
    sharp_headers_clear(&h);
    t->most_specific_header_mutations_wins = true;
    sharp_route_apply_request_headers(t, vh, r, &r->weighted[0], &h, NULL);
    assert_string_equal(all_values(&h, "x-level", b, sizeof b), "cluster");
    sharp_headers_clear(&h);
    sharp_route_apply_request_headers(NULL, NULL, r, NULL, &h, NULL);
    assert_string_equal(all_values(&h, "x-level", b, sizeof b), "route");
    sharp_headers_free(&h);
    sharp_route_table_free(t);
}

/* ---- regex matchers (RE2, whole value) ---- */

static bool rx(const char *pattern, const char *value)
{
    sharp_string_matcher_t m;
    char err[512];
    if (sharp_string_matcher_init(&m, SHARP_SM_REGEX, pattern, strlen(pattern), false, err, sizeof err) < 0)
        fail_msg("regex '%s': %s", pattern, err);
    bool ok = sharp_string_matcher_match(&m, (sharp_str_t){value, strlen(value)});
    sharp_string_matcher_free(&m);
    return ok;
}

static void rx_bad(const char *pattern, const char *needle)
{
    sharp_string_matcher_t m;
    char err[512] = "";
    assert_int_equal(sharp_string_matcher_init(&m, SHARP_SM_REGEX, pattern, strlen(pattern), false, err,
                                               sizeof err),
                     -1);
    if (!strstr(err, needle)) fail_msg("regex '%s' error '%s' lacks '%s'", pattern, err, needle);
}

static void test_regex_matchers(void **state)
{
    assert_true(rx("abc", "abc"));
    assert_false(rx("abc", "abcd")); /* whole-value match, as Envoy's FullMatch */
    assert_false(rx("abc", "xabc"));
    assert_true(rx("a|bc", "bc"));
    assert_false(rx("a|bc", "abc"));
    assert_true(rx("\\d{3}-\\w+", "123-ab_9"));
    assert_true(rx("(?i)hello", "HeLLo"));
    assert_true(rx("(?P<id>[0-9]+)/x", "42/x"));
    assert_true(rx("[[:alpha:]]+", "abcXYZ"));
    assert_false(rx("[[:alpha:]]+", "abc1"));
    assert_true(rx("\\p{Greek}+", "\xce\xb1\xce\xb2")); /* Unicode classes, UTF-8 */
    assert_true(rx("/api/v[12]/.*", "/api/v2/users"));
    /* the value's length counts, not a NUL in it */
    sharp_string_matcher_t m;
    assert_int_equal(sharp_string_matcher_init(&m, SHARP_SM_REGEX, "a.b", 3, false, NULL, 0), 0);
    assert_true(sharp_string_matcher_match(&m, (sharp_str_t){"a\0b", 3}));
    assert_false(sharp_string_matcher_match(&m, (sharp_str_t){"a\0bc", 4}));
    sharp_string_matcher_free(&m);
    rx_bad("a(?=b)", "invalid regex 'a(?=b)': invalid perl operator: (?=");
    rx_bad("(a)\\1", "invalid escape sequence: \\1");
    rx_bad("[a", "missing ]: [a");
    rx_bad("a(b", "missing ): a(b");
    rx_bad("(?z)a", "invalid perl operator");
}

static void test_regex_rewrite_path(void **state)
{
    char err[512];
    sharp_re2_t *re = sharp_regex_compile("^/service/([^/]+)(/.*)$", NULL, err, sizeof err);
    assert_non_null(re);
    size_t n, len;
    const char *p = "/service/foo/v1/api?x=/service/a/b#f";
    char *out = sharp_regex_rewrite_path(re, "\\2/instance/\\1", (sharp_str_t){p, strlen(p)}, &n, &len);
    assert_non_null(out);
    assert_int_equal(n, strlen("/service/foo/v1/api")); /* the query is not rewritten */
    assert_string_equal(out, "/v1/api/instance/foo");
    assert_int_equal(len, strlen(out));
    free(out);
    out = sharp_regex_rewrite_path(re, "\\2", (sharp_str_t){"/other", 6}, &n, &len);
    assert_string_equal(out, "/other"); /* no match: unchanged */
    free(out);
    sharp_re2_free(re);
    re = sharp_regex_compile("one", NULL, err, sizeof err);
    p = "/xxx/one/two/one";
    out = sharp_regex_rewrite_path(re, "two", (sharp_str_t){p, strlen(p)}, &n, &len);
    assert_string_equal(out, "/xxx/two/two/two"); /* every match */
    free(out);
    sharp_re2_free(re);
}

/* Envoy's table of HCM and route upgrade settings (createUpgradeFilterChain):
 * the route's entry for the type decides, else the HCM's; case-insensitive. */
static void test_upgrade_allowed(void **state)
{
    (void)state;
    sharp_upgrade_t hcm_on[] = {{"WebSocket", true}}, hcm_off[] = {{"websocket", false}};
    sharp_upgrade_t route_on[] = {{"websocket", true}}, route_off[] = {{"WEBSOCKET", false}};
    sharp_route_t plain = {0}, enabled = {0}, disabled = {0};
    enabled.upgrades = route_on;
    enabled.nupgrades = 1;
    disabled.upgrades = route_off;
    disabled.nupgrades = 1;
    sharp_str_t ws = SHARP_STR("websocket"), other = SHARP_STR("spdy/3.1");
    /* HCM T, route default: T; HCM T, route F: F */
    assert_true(sharp_upgrade_allowed(hcm_on, 1, &plain, ws));
    assert_true(sharp_upgrade_allowed(hcm_on, 1, NULL, ws));
    assert_false(sharp_upgrade_allowed(hcm_on, 1, &disabled, ws));
    /* HCM F, route default: F; HCM F, route T: T */
    assert_false(sharp_upgrade_allowed(hcm_off, 1, &plain, ws));
    assert_true(sharp_upgrade_allowed(hcm_off, 1, &enabled, ws));
    /* a type the HCM does not list: only a route that enables it */
    assert_false(sharp_upgrade_allowed(NULL, 0, &plain, ws));
    assert_true(sharp_upgrade_allowed(NULL, 0, &enabled, ws));
    assert_false(sharp_upgrade_allowed(hcm_on, 1, &enabled, other));
    assert_false(sharp_upgrade_allowed(hcm_on, 1, &plain, SHARP_STR("websocke")));
}

/* Envoy's finalTimeout (route part) with max_grpc_timeout / grpc_timeout_offset. */
static void test_route_timeouts(void **state)
{
    (void)state;
    sharp_route_t r = {.timeout_ms = 15000};
    bool rw;
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 100, &rw), 15000);
    assert_false(rw);
    r.has_max_grpc_timeout = true;
    r.max_grpc_timeout_ms = 500;
    assert_int_equal(sharp_route_timeout_ms(&r, false, true, 100, &rw), 15000); /* not gRPC */
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 100, &rw), 100);
    assert_true(rw);
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 9000, &rw), 500); /* capped */
    assert_int_equal(sharp_route_timeout_ms(&r, true, false, 0, &rw), 500);   /* no header: the max */
    r.max_grpc_timeout_ms = 0;                                                 /* no cap */
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 9000, &rw), 9000);
    assert_int_equal(sharp_route_timeout_ms(&r, true, false, 0, &rw), 0); /* no timeout at all */
    r.has_grpc_timeout_offset = true;
    r.grpc_timeout_offset_ms = 1000;
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 9000, &rw), 8000);
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 1000, &rw), 1000); /* would leave nothing */
    r.max_grpc_timeout_ms = 5000;
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 9000, &rw), 5000); /* offset, then cap */
    r.has_msd = true; /* max_stream_duration: no router timeout */
    assert_int_equal(sharp_route_timeout_ms(&r, true, true, 9000, &rw), 0);
    assert_false(rw);
}

/* Envoy's refreshDurationTimeout for a route. */
static void test_route_stream_duration(void **state)
{
    (void)state;
    sharp_route_t r = {.has_msd = true};
    uint64_t ms = 77;
    assert_int_equal(sharp_route_stream_duration(&r, true, 100, &ms), SHARP_MSD_HCM);
    r.has_msd_max = true;
    r.msd_max_ms = 0;
    assert_int_equal(sharp_route_stream_duration(&r, false, 0, &ms), SHARP_MSD_NONE);
    r.msd_max_ms = 400;
    assert_int_equal(sharp_route_stream_duration(&r, true, 100, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 400); /* grpc-timeout ignored without grpc_timeout_header_max */
    r.has_grpc_header_max = true;
    r.grpc_header_max_ms = 300;
    assert_int_equal(sharp_route_stream_duration(&r, true, 100, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 100);
    assert_int_equal(sharp_route_stream_duration(&r, true, 9000, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 300);
    assert_int_equal(sharp_route_stream_duration(&r, false, 0, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 400); /* no header: max_stream_duration */
    r.grpc_header_max_ms = 0;  /* no cap */
    r.has_grpc_header_offset = true;
    r.grpc_header_offset_ms = 50;
    assert_int_equal(sharp_route_stream_duration(&r, true, 9000, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 8950);
    assert_int_equal(sharp_route_stream_duration(&r, true, 50, &ms), SHARP_MSD_SET);
    assert_int_equal(ms, 0); /* the offset eats it all: expires at once */
}

static void test_retry_grpc_on(void **state)
{
    (void)state;
    uint32_t on = sharp_retry_grpc_on_parse("cancelled,unavailable, internal", 31);
    assert_int_equal(on, SHARP_RETRY_GRPC_CANCELLED | SHARP_RETRY_GRPC_UNAVAILABLE | SHARP_RETRY_GRPC_INTERNAL);
    assert_int_equal(sharp_retry_on_parse("unavailable,5xx", 15), SHARP_RETRY_5XX); /* HTTP list only */
    assert_int_equal(sharp_retry_grpc_on_parse("5xx,deadline-exceeded,resource-exhausted", 40),
                     SHARP_RETRY_GRPC_DEADLINE_EXCEEDED | SHARP_RETRY_GRPC_RESOURCE_EXHAUSTED);
    assert_true(sharp_retry_grpc_status_matches(on, 1));
    assert_true(sharp_retry_grpc_status_matches(on, 14));
    assert_true(sharp_retry_grpc_status_matches(on, 13));
    assert_false(sharp_retry_grpc_status_matches(on, 4));
    assert_false(sharp_retry_grpc_status_matches(on, 0));
    assert_false(sharp_retry_grpc_status_matches(on, -1));
    assert_true(sharp_retry_grpc_status_matches(SHARP_RETRY_GRPC_ANY, 8));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_and_empty_prefix),
        cmocka_unit_test(test_route_timeouts),
        cmocka_unit_test(test_route_stream_duration),
        cmocka_unit_test(test_retry_grpc_on),
        cmocka_unit_test(test_domain_order_indexed),
        cmocka_unit_test(test_domain_order_scan),
        cmocka_unit_test(test_domain_ignore_port),
        cmocka_unit_test(test_domain_no_default),
        cmocka_unit_test(test_domain_duplicates),
        cmocka_unit_test(test_path_match_kinds),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_header_matchers),
        cmocka_unit_test(test_query_matchers),
        cmocka_unit_test(test_grpc_and_runtime_fraction),
        cmocka_unit_test(test_weighted_pick),
        cmocka_unit_test(test_header_ops_actions),
        cmocka_unit_test(test_header_ops_substitution),
        cmocka_unit_test(test_header_levels_order),
        cmocka_unit_test(test_regex_matchers),
        cmocka_unit_test(test_regex_rewrite_path),
        cmocka_unit_test(test_upgrade_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
