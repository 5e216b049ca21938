/* test_rbac.c: the RBAC policy engine (filters/rbac/engine.c, Envoy's
 * RoleBasedAccessControlEngineImpl and matchers): actions, policy order
 * and the effective policy, permissions and principals combined with
 * and/or/not, CIDR ranges of each address kind, ports and port ranges,
 * header and url_path matchers, SNI, the authenticated principal (URI SAN,
 * DNS SAN, subject), metadata matchers, the response detail and stat name joining, and the
 * config checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config/mapper.h"
#include "filters/rbac/engine.h"
#include "http/headers.h"
#include "http/metadata.h"
#include "net.h"

#include "envoy/config/rbac/v3/rbac.pb-c.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

/* An engine from YAML, or NULL with the message in err. */
static sharp_rbac_engine_t *engine_from(const char *yaml, char *err, size_t errlen)
{
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *doc =
        sharp_config_parse(yaml, strlen(yaml), "r.yaml", &envoy__config__rbac__v3__rbac__descriptor, &e);
    if (!doc) {
        snprintf(err, errlen, "%s", e.msg);
        return NULL;
    }
    sharp_rbac_engine_t *r = sharp_rbac_engine_create(
        (const Envoy__Config__Rbac__V3__RBAC *)sharp_config_doc_message(doc), "rules", err, errlen);
    sharp_config_doc_free(doc);
    return r;
}

static sharp_rbac_engine_t *must(const char *yaml)
{
    char err[512] = "";
    sharp_rbac_engine_t *r = engine_from(yaml, err, sizeof err);
    if (!r) fail_msg("%s", err);
    return r;
}

static void refused(const char *yaml, const char *want)
{
    char err[512] = "";
    sharp_rbac_engine_t *r = engine_from(yaml, err, sizeof err);
    if (r) {
        sharp_rbac_engine_free(r);
        fail_msg("accepted: %s", yaml);
    }
    if (!strstr(err, want)) fail_msg("error \"%s\" lacks \"%s\"", err, want);
}

typedef struct {
    struct sockaddr_storage remote, local, xff;
    sharp_headers_t h;
    sharp_rbac_input_t in;
} req_t;

static void sa(struct sockaddr_storage *ss, const char *ip, uint32_t port)
{
    socklen_t len;
    assert_int_equal(sharp_addr_parse(ip, port, ss, &len), 0);
}

/* A request from `peer` to local:port with :path `path`. */
static void req(req_t *r, const char *peer, const char *local, uint32_t port, const char *path)
{
    memset(r, 0, sizeof *r);
    sa(&r->remote, peer, 40000);
    sa(&r->xff, peer, 0);
    sa(&r->local, local, port);
    sharp_headers_init(&r->h);
    if (path) sharp_headers_add_cstr(&r->h, ":path", path);
    sharp_headers_add_cstr(&r->h, ":method", "GET");
    r->in.headers = &r->h;
    r->in.conn_remote = r->in.direct_remote = (const struct sockaddr *)&r->remote;
    r->in.remote = (const struct sockaddr *)&r->xff;
    r->in.local = (const struct sockaddr *)&r->local;
}

static bool allowed(const sharp_rbac_engine_t *e, req_t *r, const char **policy)
{
    return sharp_rbac_engine_allowed(e, &r->in, policy, NULL);
}

static void actions_and_effective_policy(void **state)
{
    (void)state;
    const char *policies = "policies:\n"
                           "  b-admin: {permissions: [{url_path: {path: {prefix: /admin}}}], principals: [{any: true}]}\n"
                           "  a-all: {permissions: [{header: {name: x-all, present_match: true}}], principals: [{any: true}]}\n";
    char yaml[1024];
    snprintf(yaml, sizeof yaml, "action: ALLOW\n%s", policies);
    sharp_rbac_engine_t *allow = must(yaml);
    snprintf(yaml, sizeof yaml, "action: DENY\n%s", policies);
    sharp_rbac_engine_t *deny = must(yaml);
    snprintf(yaml, sizeof yaml, "action: LOG\n%s", policies);
    sharp_rbac_engine_t *log = must(yaml);
    req_t r;
    const char *p;
    bool matched;
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/admin/x");
    assert_true(allowed(allow, &r, &p));
    assert_string_equal(p, "b-admin");
    assert_false(allowed(deny, &r, &p));
    assert_string_equal(p, "b-admin");
    assert_true(sharp_rbac_engine_allowed(log, &r.in, &p, &matched));
    assert_true(matched);
    /* both match: the first by name is the effective one */
    sharp_headers_add_cstr(&r.h, "x-all", "1");
    assert_true(allowed(allow, &r, &p));
    assert_string_equal(p, "a-all");
    /* the effective policy's index, found by the name pointer returned */
    assert_int_equal(sharp_rbac_engine_npolicies(allow), 2);
    assert_int_equal(sharp_rbac_engine_policy_index(allow, p), 0);
    assert_int_equal(sharp_rbac_engine_policy_index(allow, "a-all"), -1); /* a copy is not the policy */
    assert_true(allowed(allow, &r, &p) && sharp_rbac_engine_policy_index(allow, p) == 0);
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/public");
    assert_false(allowed(allow, &r, &p));
    assert_null(p);
    assert_true(allowed(deny, &r, &p));
    assert_true(sharp_rbac_engine_allowed(log, &r.in, &p, &matched));
    assert_false(matched);
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(allow);
    sharp_rbac_engine_free(deny);
    sharp_rbac_engine_free(log);
    /* no policies: ALLOW denies everything, DENY allows everything */
    sharp_rbac_engine_t *none = must("action: ALLOW");
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/");
    assert_false(allowed(none, &r, &p));
    sharp_rbac_engine_free(none);
    none = must("action: DENY");
    assert_true(allowed(none, &r, &p));
    sharp_rbac_engine_free(none);
    sharp_headers_free(&r.h);
}

/* A policy matches when any permission AND any principal match. */
static void permissions_and_principals(void **state)
{
    (void)state;
    sharp_rbac_engine_t *e = must("policies:\n"
                                  "  p:\n"
                                  "    permissions: [{url_path: {path: {exact: /a}}}, {url_path: {path: {exact: /b}}}]\n"
                                  "    principals: [{remote_ip: {address_prefix: 10.0.0.0, prefix_len: 8}},\n"
                                  "                 {header: {name: x-user, string_match: {exact: alice}}}]\n");
    req_t r;
    req(&r, "10.1.2.3", "127.0.0.1", 80, "/b");
    assert_true(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "10.1.2.3", "127.0.0.1", 80, "/c");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "11.1.2.3", "127.0.0.1", 80, "/a");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_add_cstr(&r.h, "x-user", "alice");
    assert_true(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(e);
}

static void and_or_not(void **state)
{
    (void)state;
    /* (GET and /api*) and not /api/secret; principals: not 127.0.0.2 and
     * (10/8 or 127/8) */
    sharp_rbac_engine_t *e = must(
        "policies:\n"
        "  p:\n"
        "    permissions:\n"
        "    - and_rules:\n"
        "        rules:\n"
        "        - header: {name: ':method', string_match: {exact: GET}}\n"
        "        - url_path: {path: {prefix: /api}}\n"
        "        - not_rule: {url_path: {path: {exact: /api/secret}}}\n"
        "    principals:\n"
        "    - and_ids:\n"
        "        ids:\n"
        "        - not_id: {direct_remote_ip: {address_prefix: 127.0.0.2, prefix_len: 32}}\n"
        "        - or_ids: {ids: [{source_ip: {address_prefix: 10.0.0.0, prefix_len: 8}},\n"
        "                         {direct_remote_ip: {address_prefix: 127.0.0.0, prefix_len: 8}}]}\n");
    req_t r;
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/api/x?secret=1");
    assert_true(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/api/secret?x");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.2", "127.0.0.1", 80, "/api/x");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "10.9.9.9", "127.0.0.1", 80, "/api/x");
    assert_true(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "192.168.1.1", "127.0.0.1", 80, "/api/x");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(e);
}

/* direct_remote_ip and source_ip see the connection's peer, remote_ip the
 * trusted client address; IPv6 ranges; a family mismatch never matches. */
static void cidr_kinds(void **state)
{
    (void)state;
    sharp_rbac_engine_t *direct = must("policies: {p: {permissions: [{any: true}], principals: "
                                       "[{direct_remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}]}}");
    sharp_rbac_engine_t *remote = must("policies: {p: {permissions: [{any: true}], principals: "
                                       "[{remote_ip: {address_prefix: 192.168.0.0, prefix_len: 16}}]}}");
    sharp_rbac_engine_t *v6 = must("policies: {p: {permissions: [{any: true}], principals: "
                                   "[{direct_remote_ip: {address_prefix: 'fd00::', prefix_len: 8}}]}}");
    sharp_rbac_engine_t *dst = must("policies: {p: {permissions: [{destination_ip: {address_prefix: 127.0.0.0, "
                                    "prefix_len: 8}}], principals: [{any: true}]}}");
    req_t r;
    req(&r, "192.168.3.4", "127.0.0.1", 80, "/");
    struct sockaddr_storage other;
    sa(&other, "1.2.3.4", 0);
    r.in.remote = (const struct sockaddr *)&other; /* x-forwarded-for said 1.2.3.4 */
    assert_true(allowed(direct, &r, NULL));
    assert_false(allowed(remote, &r, NULL));
    assert_false(allowed(v6, &r, NULL));
    assert_true(allowed(dst, &r, NULL));
    r.in.remote = (const struct sockaddr *)&r.remote;
    assert_true(allowed(remote, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "fd12::1", "::1", 80, "/");
    assert_true(allowed(v6, &r, NULL));
    assert_false(allowed(direct, &r, NULL));
    assert_false(allowed(dst, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "fe80::1", "::1", 80, "/");
    assert_false(allowed(v6, &r, NULL));
    sharp_headers_free(&r.h);
    /* an unknown address (NULL) matches no range */
    req(&r, "192.168.3.4", "127.0.0.1", 80, "/");
    r.in.direct_remote = NULL;
    assert_false(allowed(direct, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(direct);
    sharp_rbac_engine_free(remote);
    sharp_rbac_engine_free(v6);
    sharp_rbac_engine_free(dst);
    /* a /0 range holds every address of its family */
    sharp_rbac_engine_t *all = must("policies: {p: {permissions: [{any: true}], principals: "
                                    "[{remote_ip: {address_prefix: 0.0.0.0, prefix_len: 0}}]}}");
    req(&r, "8.8.8.8", "127.0.0.1", 80, "/");
    assert_true(allowed(all, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(all);
}

static void ports(void **state)
{
    (void)state;
    sharp_rbac_engine_t *port = must("policies: {p: {permissions: [{destination_port: 8080}], principals: [{any: true}]}}");
    sharp_rbac_engine_t *range = must("policies: {p: {permissions: [{destination_port_range: {start: 8000, end: 8080}}], "
                                      "principals: [{any: true}]}}");
    req_t r;
    uint32_t cases[] = {7999, 8000, 8079, 8080, 8081};
    bool in_range[] = {false, true, true, false, false};
    for (size_t i = 0; i < 5; i++) {
        req(&r, "127.0.0.1", "127.0.0.1", cases[i], "/");
        assert_int_equal(allowed(range, &r, NULL), in_range[i]);
        assert_int_equal(allowed(port, &r, NULL), cases[i] == 8080);
        sharp_headers_free(&r.h);
    }
    sharp_rbac_engine_free(port);
    sharp_rbac_engine_free(range);
    refused("policies: {p: {permissions: [{destination_port_range: {start: 80, end: 80}}], principals: [{any: true}]}}",
            "range start 80 cannot be greater or equal than range end 80");
    refused("policies: {p: {permissions: [{destination_port_range: {start: -1, end: 80}}], principals: [{any: true}]}}",
            "range start -1 is out of bounds");
    refused("policies: {p: {permissions: [{destination_port_range: {start: 1, end: 65537}}], principals: [{any: true}]}}",
            "range end 65537 is out of bounds");
    refused("policies: {p: {permissions: [{destination_port: 65536}], principals: [{any: true}]}}",
            "destination_port: value must be less than or equal to 65535");
}

/* header matchers see the request's headers; without headers (the
 * network filter) a header or url_path leaf does not match, but an
 * inverted one does. */
static void headers_and_paths(void **state)
{
    (void)state;
    sharp_rbac_engine_t *e = must(
        "policies:\n"
        "  regex: {permissions: [{url_path: {path: {safe_regex: {regex: '/v[0-9]+/items'}}}}], principals: [{any: true}]}\n"
        "  ci: {permissions: [{url_path: {path: {prefix: /CASE, ignore_case: true}}}], principals: [{any: true}]}\n"
        "  inv: {permissions: [{header: {name: x-block, present_match: true, invert_match: true}}],\n"
        "        principals: [{header: {name: x-tenant, string_match: {suffix: -prod}}}]}\n");
    req_t r;
    const char *p;
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/v2/items?q=1#frag");
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "regex");
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/v2/items/1");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/case/x");
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "ci");
    sharp_headers_free(&r.h);
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/other");
    sharp_headers_add_cstr(&r.h, "x-tenant", "acme-prod");
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "inv");
    sharp_headers_add_cstr(&r.h, "x-block", "1");
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    /* no :path: url_path does not match */
    req(&r, "127.0.0.1", "127.0.0.1", 80, NULL);
    assert_false(allowed(e, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(e);
    /* a connection without headers */
    sharp_rbac_engine_t *n = must("policies:\n"
                                  "  hdr: {permissions: [{header: {name: x-a, present_match: true}}], principals: [{any: true}]}\n"
                                  "  path: {permissions: [{url_path: {path: {prefix: /}}}], principals: [{any: true}]}\n");
    sharp_rbac_engine_t *inv = must("policies: {p: {permissions: [{header: {name: x-a, present_match: true, "
                                    "invert_match: true}}], principals: [{any: true}]}}");
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/");
    r.in.headers = NULL;
    assert_false(allowed(n, &r, NULL));
    assert_true(allowed(inv, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(n);
    sharp_rbac_engine_free(inv);
}

static void sni_and_authenticated(void **state)
{
    (void)state;
    sharp_rbac_engine_t *sni = must("policies: {p: {permissions: [{requested_server_name: {suffix: .example.com}}], "
                                    "principals: [{any: true}]}}");
    sharp_rbac_engine_t *any_tls = must("policies: {p: {permissions: [{any: true}], principals: [{authenticated: {}}]}}");
    sharp_rbac_engine_t *spiffe = must("policies: {p: {permissions: [{any: true}], principals: [{authenticated: "
                                       "{principal_name: {exact: 'spiffe://cluster.local/ns/default/sa/frontend'}}}]}}");
    sharp_rbac_engine_t *dns = must("policies: {p: {permissions: [{any: true}], principals: [{authenticated: "
                                    "{principal_name: {exact: client.example.com}}}]}}");
    sharp_rbac_engine_t *subject = must("policies: {p: {permissions: [{any: true}], principals: [{authenticated: "
                                        "{principal_name: {prefix: 'CN=client'}}}]}}");
    req_t r;
    req(&r, "127.0.0.1", "127.0.0.1", 443, "/");
    /* plaintext */
    assert_false(allowed(sni, &r, NULL));
    assert_false(allowed(any_tls, &r, NULL));
    assert_false(allowed(subject, &r, NULL));
    r.in.sni = "api.example.com";
    assert_true(allowed(sni, &r, NULL));
    /* TLS without a client certificate: any_tls only */
    r.in.tls = true;
    assert_true(allowed(any_tls, &r, NULL));
    assert_false(allowed(spiffe, &r, NULL));
    assert_false(allowed(subject, &r, NULL));
    /* with one */
    const char *uris[] = {"spiffe://other", "spiffe://cluster.local/ns/default/sa/frontend", NULL};
    const char *dnss[] = {"client.example.com", NULL};
    r.in.uri_sans = uris;
    r.in.subject = "CN=client,O=test";
    assert_true(allowed(spiffe, &r, NULL));
    assert_false(allowed(dns, &r, NULL));
    assert_true(allowed(subject, &r, NULL));
    r.in.dns_sans = dnss;
    assert_true(allowed(dns, &r, NULL));
    r.in.uri_sans = NULL;
    assert_false(allowed(spiffe, &r, NULL));
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(sni);
    sharp_rbac_engine_free(any_tls);
    sharp_rbac_engine_free(spiffe);
    sharp_rbac_engine_free(dns);
    sharp_rbac_engine_free(subject);
}

static void set_md(sharp_dynamic_metadata_t **md, const char *ns, const char *key, sharp_md_value_t *v)
{
    sharp_dynamic_metadata_set(md, ns, strlen(ns), key, strlen(key), v);
}

/* metadata permissions and principals: Envoy's MetadataMatcher over the
 * stream's dynamic metadata (a path of struct keys, ValueMatcher kinds,
 * invert); without metadata only an inverted or absent-tolerant one
 * matches. */
static void metadata_matchers(void **state)
{
    (void)state;
    sharp_rbac_engine_t *e = must(
        "policies:\n"
        "  a-tenant: {permissions: [{metadata: {filter: tenants, path: [{key: id}], value: {string_match: {prefix: acme}}}}],\n"
        "             principals: [{any: true}]}\n"
        "  b-nested: {permissions: [{any: true}], principals: [{metadata: {filter: auth, path: [{key: claims}, {key: role}],\n"
        "             value: {list_match: {one_of: {string_match: {exact: admin}}}}}}]}\n"
        "  c-number: {permissions: [{metadata: {filter: m, path: [{key: num}], value: {or_match: {value_matchers:\n"
        "             [{double_match: {range: {start: 1, end: 2}}}, {double_match: {exact: 7}}]}}}}], principals: [{any: true}]}\n"
        "  d-flags: {permissions: [{and_rules: {rules: [{metadata: {filter: m, path: [{key: ok}], value: {bool_match: true}}},\n"
        "            {metadata: {filter: m, path: [{key: nil}], value: {null_match: {}}}}]}}], principals: [{any: true}]}\n"
        "  e-absent: {permissions: [{metadata: {filter: m, path: [{key: gone}], value: {present_match: true}, invert: true}}],\n"
        "             principals: [{header: {name: x-absent, present_match: true}}]}\n");
    sharp_rbac_engine_t *present_false = must(
        "policies: {p: {permissions: [{metadata: {filter: m, path: [{key: gone}], value: {present_match: false}}}], "
        "principals: [{any: true}]}}");
    req_t r;
    const char *p;
    req(&r, "127.0.0.1", "127.0.0.1", 80, "/");
    sharp_dynamic_metadata_t *md = NULL;
    r.in.metadata = md;
    assert_false(allowed(e, &r, &p));
    assert_false(allowed(present_false, &r, NULL)); /* present_match false matches nothing */
    /* a string under tenants.id */
    sharp_md_value_t v = {0};
    sharp_md_value_string(&v, "acme-eu", 7);
    set_md(&md, "tenants", "id", &v);
    r.in.metadata = md;
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "a-tenant");
    sharp_md_value_string(&v, "other", 5);
    set_md(&md, "tenants", "id", &v);
    assert_false(allowed(e, &r, NULL));
    /* a list under auth.claims.role: the path walks structs */
    sharp_md_value_t claims = {.kind = SHARP_MD_STRUCT}, roles = {.kind = SHARP_MD_LIST};
    roles.items = sharp_calloc(2, sizeof *roles.items);
    roles.n = roles.cap = 2;
    sharp_md_value_string(&roles.items[0], "viewer", 6);
    sharp_md_value_string(&roles.items[1], "admin", 5);
    sharp_md_struct_set(&claims, "role", 4, &roles);
    set_md(&md, "auth", "claims", &claims);
    r.in.metadata = md;
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "b-nested");
    /* numbers: [1, 2) or exactly 7 */
    sharp_dynamic_metadata_free(md);
    md = NULL;
    double nums[] = {0.5, 1, 1.99, 2, 7, 7.5};
    bool want[] = {false, true, true, false, true, false};
    for (size_t i = 0; i < 6; i++) {
        sharp_md_value_t n = {.kind = SHARP_MD_NUMBER, .number = nums[i]};
        set_md(&md, "m", "num", &n);
        r.in.metadata = md;
        assert_int_equal(allowed(e, &r, NULL), want[i]);
    }
    /* bool and null together */
    sharp_md_value_t t = {.kind = SHARP_MD_BOOL, .b = true}, nil = {.kind = SHARP_MD_NULL};
    sharp_md_value_t str = {0};
    sharp_md_value_string(&str, "x", 1);
    set_md(&md, "m", "num", &str);
    set_md(&md, "m", "ok", &t);
    r.in.metadata = md;
    assert_false(allowed(e, &r, NULL));
    set_md(&md, "m", "nil", &nil);
    r.in.metadata = md;
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "d-flags");
    /* invert: the key is absent; a key that is not a struct ends the path */
    sharp_dynamic_metadata_free(md);
    md = NULL;
    sharp_headers_add_cstr(&r.h, "x-absent", "1");
    r.in.metadata = NULL;
    assert_true(allowed(e, &r, &p));
    assert_string_equal(p, "e-absent");
    sharp_md_value_string(&str, "here", 4);
    set_md(&md, "m", "gone", &str);
    r.in.metadata = md;
    assert_false(allowed(e, &r, NULL));
    sharp_md_value_string(&str, "scalar", 6);
    set_md(&md, "auth", "claims", &str); /* claims.role leads nowhere */
    assert_false(allowed(e, &r, NULL));
    sharp_dynamic_metadata_free(md);
    sharp_headers_free(&r.h);
    sharp_rbac_engine_free(e);
    sharp_rbac_engine_free(present_false);
}

static void bad_configs(void **state)
{
    (void)state;
    refused("policies: {p: {permissions: [], principals: [{any: true}]}}", "permissions");
    refused("policies: {p: {permissions: [{any: true}], principals: []}}", "principals");
    refused("policies: {p: {permissions: [{}], principals: [{any: true}]}}", "rule: value is required");
    refused("policies: {p: {permissions: [{any: true}], principals: [{}]}}", "identifier: value is required");
    refused("policies: {p: {permissions: [{any: false}], principals: [{any: true}]}}", "any: value must equal true");
    refused("policies: {p: {permissions: [{and_rules: {rules: []}}], principals: [{any: true}]}}",
            "and_rules.rules: value must contain at least 1 item(s)");
    refused("policies: {p: {permissions: [{any: true}], principals: [{or_ids: {ids: []}}]}}",
            "or_ids.ids: value must contain at least 1 item(s)");
    refused("policies: {p: {permissions: [{url_path: {}}], principals: [{any: true}]}}", "url_path: rule");
    refused("policies: {p: {permissions: [{any: true}], principals: [{remote_ip: {address_prefix: 10.0.0.0, "
            "prefix_len: 33}}]}}",
            "invalid ip/mask combo");
    refused("policies: {p: {permissions: [{any: true}], principals: [{source_ip: {address_prefix: nope}}]}}",
            "invalid ip/mask combo");
    refused("policies: {p: {permissions: [{metadata: {filter: f, path: [{key: k}], value: {or_match: "
            "{value_matchers: [{bool_match: true}]}}}}], principals: [{any: true}]}}",
            "value_matchers: value must contain at least 2 item(s)");
    refused("policies: {p: {permissions: [{metadata: {filter: f, path: [], value: {present_match: true}}}], "
            "principals: [{any: true}]}}",
            "path: value must contain at least 1 item(s)");
    refused("policies: {p: {permissions: [{any: true}], principals: [{metadata: {filter: '', path: [{key: k}], "
            "value: {present_match: true}}}]}}",
            "filter: value length must be at least 1 characters");
    refused("policies: {p: {permissions: [{metadata: {filter: f, path: [{key: k}]}}], principals: [{any: true}]}}",
            "value");
    refused("policies: {p: {permissions: [{any: true}], principals: [{filter_state: {key: k}}]}}",
            "filter_state is not supported by SHARP");
    refused("policies: {p: {permissions: [{matcher: {name: m}}], principals: [{any: true}]}}",
            "matcher is not supported by SHARP");
    refused("audit_logging_options: {audit_condition: ON_DENY}", "audit_logging_options is not supported by SHARP");
    refused("policies: {p: {permissions: [{url_path: {path: {safe_regex: {regex: '('}}}}], principals: [{any: true}]}}",
            "url_path.path");
    /* the path names the policy */
    refused("policies: {bad-one: {permissions: [{any: true}], principals: [{}]}}", "policies[\"bad-one\"]");
}

static void details_and_stat_names(void **state)
{
    (void)state;
    char out[256];
    sharp_rbac_response_detail(NULL, out, sizeof out);
    assert_string_equal(out, "rbac_access_denied_matched_policy[none]");
    sharp_rbac_response_detail("deny all\tpaths", out, sizeof out);
    assert_string_equal(out, "rbac_access_denied_matched_policy[deny_all_paths]");
    sharp_rbac_stat_join("http.ingress.", "rbac.", out, sizeof out);
    assert_string_equal(out, "http.ingress.rbac.");
    sharp_rbac_stat_join("tcp", "rbac.", out, sizeof out);
    assert_string_equal(out, "tcp.rbac.");
    sharp_rbac_stat_join("http.ingress.rbac.", "", out, sizeof out);
    assert_string_equal(out, "http.ingress.rbac.");
    sharp_rbac_stat_join("http.ingress.rbac.foo", "allowed", out, sizeof out);
    assert_string_equal(out, "http.ingress.rbac.foo.allowed");
    sharp_rbac_stat_join("", "allowed", out, sizeof out);
    assert_string_equal(out, "allowed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(actions_and_effective_policy),
        cmocka_unit_test(permissions_and_principals),
        cmocka_unit_test(and_or_not),
        cmocka_unit_test(cidr_kinds),
        cmocka_unit_test(ports),
        cmocka_unit_test(headers_and_paths),
        cmocka_unit_test(sni_and_authenticated),
        cmocka_unit_test(metadata_matchers),
        cmocka_unit_test(bad_configs),
        cmocka_unit_test(details_and_stat_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
