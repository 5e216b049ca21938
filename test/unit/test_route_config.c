/* test_route_config.c: RouteConfiguration (from YAML through the mapper)
 * -> runtime route table: defaults, translation and validation errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "config/mapper.h"
#include "config/support.h"
#include "config/route_config.h"
#include "config/types.h"
#include "filters/compressor/filter.h"
#include "http/filter.h"

typedef struct {
    sharp_config_doc_t *doc;
    sharp_route_table_t *t;
    char err[1024];
} built_t;

/* Parses `yaml` as a RouteConfiguration and translates it. */
static void build(built_t *b, const char *yaml)
{
    sharp_config_error_t perr;
    memset(b, 0, sizeof *b);
    b->doc = sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                                &envoy__config__route__v3__route_configuration__descriptor, &perr);
    if (!b->doc) fail_msg("parse: %s", perr.msg);
    const Envoy__Config__Route__V3__RouteConfiguration *rc =
        (const void *)sharp_config_doc_message(b->doc);
    b->t = sharp_route_table_create(rc, b->err, sizeof b->err);
}

static void release(built_t *b)
{
    sharp_route_table_free(b->t);
    sharp_config_doc_free(b->doc);
}

/* The error of the translator, or of the mapper or the support table when
 * they refuse the field first, as the loader would (their messages have
 * "file:line:col: " in front). */
static void expect_error(const char *yaml, const char *want_prefix)
{
    sharp_config_error_t perr;
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                                               &envoy__config__route__v3__route_configuration__descriptor, &perr);
    if (!d || sharp_config_check_support(sharp_config_doc_message(d), d, NULL, &perr) < 0) {
        sharp_config_doc_free(d);
        if (!strstr(perr.msg, want_prefix)) fail_msg("error '%s' lacks '%s'", perr.msg, want_prefix);
        return;
    }
    sharp_config_doc_free(d);
    built_t b;
    build(&b, yaml);
    if (b.t) fail_msg("expected error '%s', got a table", want_prefix);
    if (strncmp(b.err, want_prefix, strlen(want_prefix)) != 0)
        fail_msg("error '%s' does not start with '%s'", b.err, want_prefix);
    release(&b);
}

static const sharp_route_t *route_for(const sharp_route_table_t *t, const char *host,
                                      const char *path)
{
    const sharp_vhost_t *vh = sharp_route_table_find_vhost(t, (sharp_str_t){host, strlen(host)});
    if (!vh) return NULL;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":path", path);
    const sharp_route_t *r = sharp_vhost_match(vh, &h);
    sharp_headers_free(&h);
    return r;
}

static void test_full_translation(void **state)
{
    built_t b;
    build(&b, "name: local_route\n"
              "ignore_port_in_host_matching: true\n"
              "internal_only_headers: [X-Internal]\n"
              "request_headers_to_add:\n"
              "- header: {key: x-table, value: t}\n"
              "response_headers_to_remove: [x-secret]\n"
              "virtual_hosts:\n"
              "- name: backend\n"
              "  domains: ['*.example.com', example.com]\n"
              "  retry_policy: {retry_on: 5xx, num_retries: 3}\n"
              "  request_headers_to_add:\n"
              "  - header: {key: x-client, value: '%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'}\n"
              "    append_action: OVERWRITE_IF_EXISTS_OR_ADD\n"
              "  - header: {key: x-legacy, value: v}\n"
              "    append: false\n"
              "  routes:\n"
              "  - name: api\n"
              "    match:\n"
              "      prefix: /api\n"
              "      case_sensitive: false\n"
              "      headers:\n"
              "      - {name: X-Version, exact_match: v2}\n"
              "      - {name: x-any, exact_match: ''}\n"
              "      - {name: x-range, range_match: {start: 1, end: 10}, invert_match: true}\n"
              "      query_parameters:\n"
              "      - {name: debug, present_match: true}\n"
              "      - {name: mode, string_match: {prefix: fa, ignore_case: true}}\n"
              "    route:\n"
              "      cluster: api_v2\n"
              "      timeout: 2.5s\n"
              "      idle_timeout: 0s\n"
              "      prefix_rewrite: /v2\n"
              "      host_rewrite_literal: api.internal\n"
              "      cluster_not_found_response_code: NOT_FOUND\n"
              "      retry_policy:\n"
              "        retry_on: connect-failure,retriable-status-codes\n"
              "        retriable_status_codes: [503, 429]\n"
              "        per_try_timeout: 0.5s\n"
              "        retry_back_off: {base_interval: 0.1s}\n"
              "  - match: {safe_regex: {regex: '/users/\\d+'}}\n"
              "    route: {cluster: users, timeout: 0s}\n"
              "  - match: {path_separated_prefix: /split, grpc: {}}\n"
              "    route:\n"
              "      weighted_clusters:\n"
              "        clusters:\n"
              "        - name: a\n"
              "          weight: 30\n"
              "          request_headers_to_add: [{header: {key: x-wc, value: a}}]\n"
              "        - {name: b, weight: 70}\n"
              "  - match: {path: /moved}\n"
              "    redirect: {https_redirect: true, host_redirect: new.example.com, response_code: "
              "PERMANENT_REDIRECT, strip_query: true}\n"
              "  - match: {prefix: /health}\n"
              "    direct_response: {status: 200, body: {inline_string: ok}}\n"
              "  - match:\n"
              "      prefix: /canary\n"
              "      runtime_fraction: {default_value: {numerator: 5, denominator: TEN_THOUSAND}, "
              "runtime_key: k}\n"
              "    route: {cluster: canary}\n");
    if (!b.t) fail_msg("%s", b.err);
    sharp_route_table_t *t = b.t;
    assert_string_equal(t->name, "local_route");
    assert_true(t->ignore_port_in_host_matching);
    assert_int_equal(t->ninternal_only_headers, 1);
    assert_string_equal(t->internal_only_headers[0], "x-internal");
    assert_int_equal(t->req_ops.nadd, 1);
    assert_int_equal(t->resp_ops.nremove, 1);
    assert_non_null(t->domain_index);
    const sharp_vhost_t *vh = sharp_route_table_find_vhost(t, SHARP_STR("EXAMPLE.com:8443"));
    assert_non_null(vh);
    assert_string_equal(vh->name, "backend");
    assert_true(vh->has_retry_policy);
    assert_int_equal(vh->req_ops.nadd, 2);
    assert_non_null(vh->req_ops.add[0].fmt);
    assert_int_equal(vh->req_ops.add[0].action, SHARP_OVERWRITE_IF_EXISTS_OR_ADD);
    assert_int_equal(vh->req_ops.add[1].action, SHARP_OVERWRITE_IF_EXISTS_OR_ADD);
    assert_int_equal(vh->nroutes, 6);

    const sharp_route_t *r = &vh->routes[0];
    assert_string_equal(r->name, "api");
    assert_int_equal(r->match_kind, SHARP_ROUTE_MATCH_PREFIX);
    assert_false(r->case_sensitive);
    assert_int_equal(r->nheaders, 3);
    assert_string_equal(r->headers[0].name, "x-version");
    assert_int_equal(r->headers[1].kind, SHARP_HM_PRESENT);
    assert_int_equal(r->headers[2].kind, SHARP_HM_RANGE);
    assert_true(r->headers[2].invert);
    assert_int_equal(r->nquery, 2);
    assert_true(r->query[0].present_match);
    assert_true(r->query[1].sm.ignore_case);
    assert_string_equal(r->cluster, "api_v2");
    assert_int_equal(r->timeout_ms, 2500);
    assert_true(r->has_idle_timeout);
    assert_int_equal(r->idle_timeout_ms, 0);
    assert_string_equal(r->prefix_rewrite, "/v2");
    assert_string_equal(r->host_rewrite, "api.internal");
    assert_int_equal(r->cluster_not_found_code, 404);
    assert_true(r->has_retry_policy);
    assert_string_equal(r->retry.retry_on, "connect-failure,retriable-status-codes");
    assert_int_equal(r->retry.num_retries, 1); /* unset: Envoy's default */
    assert_int_equal(r->retry.nretriable_status_codes, 2);
    assert_int_equal(r->retry.per_try_timeout_ms, 500);
    assert_int_equal(r->retry.backoff_base_ms, 100);
    assert_int_equal(r->retry.backoff_max_ms, 1000);
    assert_int_equal(r->retry.retry_on_bits, SHARP_RETRY_CONNECT_FAILURE | SHARP_RETRY_RETRIABLE_STATUS_CODES);
    assert_false(r->retry.previous_hosts);
    assert_int_equal(r->retry.host_selection_max_attempts, 1);

    r = &vh->routes[1];
    assert_int_equal(r->match_kind, SHARP_ROUTE_MATCH_REGEX);
    assert_int_equal(r->timeout_ms, 0);
    assert_true(r->has_retry_policy); /* inherited from the virtual host */
    assert_int_equal(r->retry.num_retries, 3);
    assert_ptr_equal(route_for(t, "a.example.com", "/users/42?x"), r);
    assert_null(route_for(t, "a.example.com", "/users/4x"));

    r = &vh->routes[2];
    assert_int_equal(r->match_kind, SHARP_ROUTE_MATCH_PATH_SEPARATED_PREFIX);
    assert_true(r->match_grpc);
    assert_null(r->cluster);
    assert_int_equal(r->nweighted, 2);
    assert_int_equal(r->total_weight, 100);
    assert_int_equal(r->weighted[0].req_ops.nadd, 1);
    assert_int_equal(r->timeout_ms, 15000); /* unset: Envoy's default */

    r = &vh->routes[3];
    assert_int_equal(r->action, SHARP_ROUTE_ACTION_REDIRECT);
    assert_string_equal(r->redirect.scheme, "https");
    assert_string_equal(r->redirect.host, "new.example.com");
    assert_int_equal(r->redirect.code, 308);
    assert_true(r->redirect.strip_query);
    assert_false(r->has_retry_policy);

    r = &vh->routes[4];
    assert_int_equal(r->action, SHARP_ROUTE_ACTION_DIRECT);
    assert_int_equal(r->direct_status, 200);
    assert_int_equal(r->direct_body_len, 2);
    assert_memory_equal(r->direct_body, "ok", 2);
    assert_ptr_equal(route_for(t, "example.com", "/health/x"), r);

    r = &vh->routes[5];
    assert_true(r->has_runtime_fraction);
    assert_int_equal(r->runtime_fraction.numerator, 5);
    assert_int_equal(r->runtime_fraction.denominator, 10000);
    release(&b);
}

/* request_mirror_policies: Envoy's checks, defaults (100%, host suffix on)
 * and inheritance (route over virtual host over table, never merged);
 * RouteAction.priority. */
static void test_mirror_policies_and_priority(void **state)
{
    (void)state;
    built_t b;
    build(&b, "request_mirror_policies: [{cluster: tbl}]\n"
              "virtual_hosts:\n"
              "- name: a\n"
              "  domains: [a]\n"
              "  request_mirror_policies:\n"
              "  - {cluster: vh1, runtime_fraction: {default_value: {numerator: 5, denominator: TEN_THOUSAND}}}\n"
              "  - {cluster_header: X-Shadow, disable_shadow_host_suffix_append: true, trace_sampled: false}\n"
              "  routes:\n"
              "  - match: {prefix: /own}\n"
              "    route: {cluster: c, priority: HIGH, request_mirror_policies: [{cluster: r1}]}\n"
              "  - match: {prefix: /}\n"
              "    route: {cluster: c}\n"
              "- name: b\n"
              "  domains: [b]\n"
              "  routes:\n"
              "  - match: {prefix: /}\n"
              "    route: {cluster: c}\n");
    assert_non_null(b.t);
    const sharp_route_t *r = route_for(b.t, "a", "/own");
    assert_int_equal(r->priority, 1);
    assert_int_equal(r->mirror->n, 1);
    assert_string_equal(r->mirror->p[0].cluster, "r1");
    assert_int_equal(r->mirror->p[0].fraction.numerator, 100);
    assert_int_equal(r->mirror->p[0].fraction.denominator, 100);
    assert_false(r->mirror->p[0].disable_host_suffix);
    r = route_for(b.t, "a", "/x");
    assert_int_equal(r->priority, 0);
    assert_int_equal(r->mirror->n, 2);
    assert_string_equal(r->mirror->p[0].cluster, "vh1");
    assert_int_equal(r->mirror->p[0].fraction.numerator, 5);
    assert_int_equal(r->mirror->p[0].fraction.denominator, 10000);
    assert_null(r->mirror->p[1].cluster);
    assert_string_equal(r->mirror->p[1].cluster_header, "x-shadow");
    assert_true(r->mirror->p[1].disable_host_suffix);
    r = route_for(b.t, "b", "/x");
    assert_int_equal(r->mirror->n, 1);
    assert_string_equal(r->mirror->p[0].cluster, "tbl");
    release(&b);

    expect_error("virtual_hosts: [{name: a, domains: [a], routes: [{match: {prefix: /}, route: {cluster: c, "
                 "request_mirror_policies: [{cluster: x, cluster_header: hdr}]}}]}]\n",
                 "virtual_hosts[0].routes[0].route.request_mirror_policies[0]: Only one of cluster 'x' or "
                 "cluster_header 'hdr' in request mirror policy can be specified");
    expect_error("virtual_hosts: [{name: a, domains: [a], request_mirror_policies: [{trace_sampled: true}], "
                 "routes: [{match: {prefix: /}, route: {cluster: c}}]}]\n",
                 "virtual_hosts[0].request_mirror_policies[0]: Exactly one of cluster or cluster_header");
    expect_error("request_mirror_policies: [{cluster: x, runtime_fraction: {}}]\n",
                 "request_mirror_policies[0].runtime_fraction.default_value: is required");
}

static void test_defaults(void **state)
{
    built_t b;
    build(&b, "virtual_hosts:\n"
              "- name: v\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match: {prefix: /}\n"
              "    route: {cluster: c}\n"
              "  - match: {prefix: /r}\n"
              "    redirect: {path_redirect: /x}\n");
    if (!b.t) fail_msg("%s", b.err);
    const sharp_route_t *r = route_for(b.t, "anything", "/q");
    assert_non_null(r);
    assert_null(r->name);
    assert_true(r->case_sensitive);
    assert_int_equal(r->timeout_ms, 15000);
    assert_int_equal(r->cluster_not_found_code, 503);
    assert_false(r->has_retry_policy);
    assert_false(r->has_idle_timeout);
    assert_int_equal(b.t->vhosts[0].routes[1].redirect.code, 301);
    assert_string_equal(b.t->vhosts[0].routes[1].redirect.path, "/x");
    release(&b);
}

#define VH "virtual_hosts:\n- name: v\n  domains: [a.com]\n  routes:\n"

static void test_retry_on_parse(void **state)
{
    (void)state;
    const char *s = " 5xx,gateway-error , RESET,connect-failure,retriable-4xx,refused-stream,"
                    "retriable-status-codes,retriable-headers,envoy-ratelimited,reset-before-request,nope,";
    assert_int_equal(sharp_retry_on_parse(s, strlen(s)),
                     SHARP_RETRY_5XX | SHARP_RETRY_GATEWAY_ERROR | SHARP_RETRY_RESET | SHARP_RETRY_CONNECT_FAILURE |
                         SHARP_RETRY_RETRIABLE_4XX | SHARP_RETRY_REFUSED_STREAM |
                         SHARP_RETRY_RETRIABLE_STATUS_CODES | SHARP_RETRY_RETRIABLE_HEADERS |
                         SHARP_RETRY_ENVOY_RATELIMITED | SHARP_RETRY_RESET_BEFORE_REQUEST);
    assert_int_equal(sharp_retry_on_parse("", 0), 0);
    assert_int_equal(sharp_retry_on_parse("5xx", 2), 0); /* only n bytes count */
    assert_int_equal(sharp_retry_on_parse("grpc-unavailable,5xx", 20), SHARP_RETRY_5XX);

    built_t b;
    build(&b, "virtual_hosts:\n"
              "- name: v\n"
              "  domains: ['*']\n"
              "  include_request_attempt_count: true\n"
              "  retry_policy:\n"
              "    retry_on: retriable-headers\n"
              "    retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]\n"
              "    host_selection_retry_max_attempts: 5\n"
              "    retriable_headers: [{name: x-retry-me, exact_match: \"yes\"}]\n"
              "    retriable_request_headers: [{name: ':method', exact_match: GET}]\n"
              "  routes:\n"
              "  - match: {prefix: /}\n"
              "    route: {cluster: c}\n");
    if (!b.t) fail_msg("%s", b.err);
    const sharp_vhost_t *vh = &b.t->vhosts[0];
    assert_true(vh->include_request_attempt_count);
    assert_false(vh->include_attempt_count_in_response);
    const sharp_route_t *r = &vh->routes[0];
    assert_true(r->has_retry_policy); /* the virtual host's, rebuilt for the route */
    assert_true(r->retry.previous_hosts);
    assert_int_equal(r->retry.host_selection_max_attempts, 5);
    assert_int_equal(r->retry.nretriable_headers, 1);
    assert_int_equal(r->retry.nretriable_request_headers, 1);
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-retry-me", "yes");
    assert_true(sharp_header_matcher_match(&r->retry.retriable_headers[0], &h));
    sharp_headers_free(&h);
    release(&b);

    expect_error(VH "  - match: {prefix: /}\n"
                    "    route:\n"
                    "      cluster: c\n"
                    "      retry_policy: {retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts}]}\n",
                 "virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[0].name: unsupported retry host "
                 "predicate 'envoy.retry_host_predicates.omit_canary_hosts'");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route:\n"
                    "      cluster: c\n"
                    "      retry_policy: {retry_priority: {name: envoy.retry_priorities.previous_priorities}}\n",
                 "virtual_hosts[0].routes[0].route.retry_policy.retry_priority: retry_priority is not supported by SHARP");
}

static void test_errors(void **state)
{
    expect_error(VH "  - match: {prefix: /}\n"
                    "  - match: {safe_regex: {regex: '(unclosed'}}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0]: the route has no action");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c}\n"
                    "  - match: {prefix: /}\n"
                    "    route: {cluster: c}\n"
                    "  - match: {safe_regex: {regex: '(unclosed'}}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[2].match.safe_regex.regex: invalid regex '(unclosed'");
    expect_error(VH
                 "  - match: {prefix: /}\n"
                 "    route: {weighted_clusters: {clusters: [{name: a, weight: 0}, {name: b}]}}\n",
                 "virtual_hosts[0].routes[0].route.weighted_clusters: Sum of weights in the "
                 "weighted_cluster must be greater than 0");
    expect_error(
        VH "  - match: {prefix: /}\n"
           "    route: {weighted_clusters: {clusters: [{name: a, weight: 1}], total_weight: 5}}\n",
        "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight: Sum of weights");
    expect_error(
        VH "  - match: {prefix: /}\n"
           "    route: {weighted_clusters: {clusters: []}}\n",
        "virtual_hosts[0].routes[0].route.weighted_clusters.clusters: needs at least 1 item");
    expect_error(VH "  - match: {headers: [{name: x}]}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0].match: one of prefix, path, safe_regex");
    expect_error(
        VH "  - match: {prefix: /, headers: [{name: x, string_match: {safe_regex: {regex: "
           "'a(?=b)'}}}]}\n"
           "    route: {cluster: c}\n",
        "virtual_hosts[0].routes[0].match.headers[0].string_match.safe_regex.regex: invalid regex "
        "'a(?=b)': invalid perl operator: (?=");
    expect_error(VH "  - match: {prefix: /, query_parameters: [{name: ''}]}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0].match.query_parameters[0].name:");
    expect_error(VH "  - match: {path_separated_prefix: /a/}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0].match.path_separated_prefix:");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster_header: x-cluster}\n",
                 "virtual_hosts[0].routes[0].route.cluster_header: cluster_header is not supported by SHARP");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    direct_response: {status: 99}\n",
                 "virtual_hosts[0].routes[0].direct_response.status:");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c}\n"
                    "    request_headers_to_add: [{header: {key: ':path', value: /x}}]\n",
                 "virtual_hosts[0].routes[0].request_headers_to_add[0]: :-prefixed or host headers "
                 "may not be modified");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c}\n"
                    "    response_headers_to_remove: [Host]\n",
                 "virtual_hosts[0].routes[0].response_headers_to_remove[0]: :-prefixed or host "
                 "headers may not be removed");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c}\n"
                    "    request_headers_to_add: [{header: {key: x, value: '%BOGUS%'}}]\n",
                 "virtual_hosts[0].routes[0].request_headers_to_add[0]: header.value: unknown "
                 "command operator %BOGUS%");
    expect_error(
        VH "  - match: {prefix: /}\n"
           "    route: {cluster: c}\n"
           "    request_headers_to_add: [{header: {key: x, value: \"y\"}, append: true, append_action: "
           "ADD_IF_ABSENT}]\n",
        "virtual_hosts[0].routes[0].request_headers_to_add[0]: Both append and append_action");
    expect_error("response_headers_to_add: [{header: {key: ':status', value: '1'}}]\n",
                 "response_headers_to_add[0]: :-prefixed");
    expect_error("virtual_hosts:\n- name: v\n  domains: []\n",
                 "virtual_hosts[0].domains: needs at least 1 item");
    expect_error("virtual_hosts:\n- domains: [x]\n", "virtual_hosts[0].name:");
    expect_error("name: rt\n"
                 "virtual_hosts:\n"
                 "- {name: a, domains: [a.com, '*']}\n"
                 "- {name: b, domains: [b.com, A.COM]}\n",
                 "virtual_hosts[1].domains[1]: Only unique values for domains are permitted. "
                 "Duplicate entry of domain a.com in route rt");
    expect_error(
        "name: rt\n"
        "virtual_hosts:\n"
        "- {name: a, domains: ['*']}\n"
        "- {name: b, domains: ['*']}\n",
        "virtual_hosts[1].domains[0]: Only a single wildcard domain is permitted in route rt");
    expect_error("virtual_hosts:\n- {name: a, domains: [x], require_tls: 7}\n",
                 "virtual_hosts[0].require_tls: value 7 is not a defined value of");
}

/* Envoy's RE2 rules: program size limits (google_re2.max_program_size, else
 * the runtime error level), errors with RE2's text, and regex_rewrite. */
static void test_regex_rules(void **state)
{
    /* \p{L} is a valid RE2 class, but its program (1197) is over the default 100 */
    expect_error(VH "  - match: {safe_regex: {regex: '\\p{L}+'}}\n"
                    "    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0].match.safe_regex.regex: regex '\\p{L}+' RE2 program size of ");
    built_t b;
    build(&b, VH "  - match: {safe_regex: {regex: '\\p{L}+'}}\n    route: {cluster: c}\n");
    assert_null(b.t);
    assert_non_null(strstr(b.err, " > max program size of 100 set for the error level threshold. Increase "
                                  "configured max program size if necessary."));
    release(&b);
    /* the deprecated per-matcher limit replaces the runtime one, both ways */
    build(&b, VH "  - match: {safe_regex: {google_re2: {max_program_size: 5000}, regex: '\\p{L}+'}}\n"
                 "    route: {cluster: c}\n");
    if (!b.t) fail_msg("%s", b.err);
    assert_true(route_for(b.t, "a.com", "/\xc3\xa9t\xc3\xa9") == NULL); /* '/' is not a letter */
    release(&b);
    build(&b, VH "  - match: {prefix: /, headers: [{name: x, safe_regex_match: {google_re2: "
                 "{max_program_size: 3}, regex: 'abcdef'}}]}\n"
                 "    route: {cluster: c}\n");
    assert_null(b.t);
    assert_non_null(strstr(b.err, "virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex: "
                                  "regex 'abcdef' RE2 program size of "));
    assert_non_null(strstr(b.err, " > max program size of 3. Increase configured max program size if "
                                  "necessary."));
    release(&b);
    /* the runtime limit (the bootstrap's re2.max_program_size.error_level) */
    sharp_regex_set_runtime_limits(5000, UINT32_MAX);
    build(&b, VH "  - match: {safe_regex: {regex: '/\\p{L}+'}}\n    route: {cluster: c}\n");
    if (!b.t) fail_msg("%s", b.err);
    assert_non_null(route_for(b.t, "a.com", "/\xc3\xa9t\xc3\xa9"));
    assert_null(route_for(b.t, "a.com", "/123"));
    release(&b);
    sharp_regex_set_runtime_limits(5, UINT32_MAX);
    expect_error(VH "  - match: {safe_regex: {regex: '/abcdef'}}\n    route: {cluster: c}\n",
                 "virtual_hosts[0].routes[0].match.safe_regex.regex: regex '/abcdef' RE2 program size of ");
    sharp_regex_set_runtime_limits(SHARP_REGEX_DEFAULT_ERROR_LEVEL, UINT32_MAX);

    /* regex_rewrite: route and redirect */
    build(&b, VH "  - match: {prefix: /service}\n"
                 "    route: {cluster: c, regex_rewrite: {pattern: {regex: '^/service/([^/]+)(/.*)$'}, "
                 "substitution: '\\2/instance/\\1'}}\n"
                 "  - match: {prefix: /old}\n"
                 "    redirect: {regex_rewrite: {pattern: {regex: '^/old/(.*)'}, substitution: '/new/\\1'}}\n");
    if (!b.t) fail_msg("%s", b.err);
    const sharp_route_t *r = &b.t->vhosts[0].routes[0];
    assert_non_null(r->regex_rewrite);
    assert_string_equal(r->regex_rewrite_sub, "\\2/instance/\\1");
    assert_non_null(b.t->vhosts[0].routes[1].redirect.regex_rewrite);
    assert_string_equal(b.t->vhosts[0].routes[1].redirect.regex_rewrite_sub, "/new/\\1");
    release(&b);
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c, regex_rewrite: {pattern: {regex: '(a)'}, substitution: '\\2'}}\n",
                 "virtual_hosts[0].routes[0].route.regex_rewrite.substitution: invalid substitution '\\2': "
                 "Rewrite schema requests 2 matches, but the regexp only has 1 parenthesized subexpressions.");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c, regex_rewrite: {pattern: {regex: '(a'}, substitution: x}}\n",
                 "virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex: invalid regex '(a': "
                 "missing ): (a");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    route: {cluster: c, prefix_rewrite: /x, regex_rewrite: {pattern: {regex: a}, "
                    "substitution: b}}\n",
                 "virtual_hosts[0].routes[0].route: Specify only one of prefix_rewrite, regex_rewrite or "
                 "path_rewrite_policy");
    expect_error(VH "  - match: {prefix: /}\n"
                    "    redirect: {regex_rewrite: {pattern: {regex: '[z-a]'}, substitution: b}}\n",
                 "virtual_hosts[0].routes[0].redirect.regex_rewrite.pattern.regex: invalid regex '[z-a]': "
                 "invalid character class range: z-a");
}

static void test_direct_response_body_limit(void **state)
{
    char yaml[8192];
    char body[5000];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = '\0';
    snprintf(
        yaml, sizeof yaml,
        VH
        "  - match: {prefix: /}\n    direct_response: {status: 503, body: {inline_string: %s}}\n",
        body);
    expect_error(
        yaml,
        "virtual_hosts[0].routes[0].direct_response.body: response body size is more than 4096");
    built_t b;
    snprintf(
        yaml, sizeof yaml,
        "max_direct_response_body_size_bytes: 6000\n" VH
        "  - match: {prefix: /}\n    direct_response: {status: 503, body: {inline_string: %s}}\n",
        body);
    build(&b, yaml);
    if (!b.t) fail_msg("%s", b.err);
    assert_int_equal(b.t->vhosts[0].routes[0].direct_body_len, 4999);
    release(&b);
}

static void test_null_config(void **state)
{
    char err[128];
    assert_null(sharp_route_table_create(NULL, err, sizeof err));
    assert_true(err[0] != '\0');
}

/* typed_per_filter_config at the four levels: the most specific level that
 * names a filter decides whether it is disabled; the config lookup passes
 * over levels whose entry has no config of that filter's factory. */
static void test_per_filter_config_levels(void **state)
{
    (void)state;
    sharp_filters_register_builtin();
    sharp_config_types_register();
#define CPR "\"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute"
#define FC "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig"
    const char *yaml = "name: t\n"
                       "typed_per_filter_config:\n"
                       "  comp: { " CPR ", disabled: true }\n"
                       "  other: { " FC ", disabled: true }\n"
                       "virtual_hosts:\n"
                       "- name: v\n"
                       "  domains: ['*']\n"
                       "  typed_per_filter_config:\n"
                       "    comp: { " FC ", config: {} }\n"
                       "  routes:\n"
                       "  - match: { prefix: /a }\n"
                       "    route: { cluster: c }\n"
                       "    typed_per_filter_config:\n"
                       "      comp: { " FC ", disabled: true }\n"
                       "  - match: { prefix: /b }\n"
                       "    route:\n"
                       "      weighted_clusters:\n"
                       "        clusters:\n"
                       "        - name: c\n"
                       "          weight: 1\n"
                       "          typed_per_filter_config:\n"
                       "            comp: { " CPR ", overrides: {} }\n";
    built_t b;
    build(&b, yaml);
    if (!b.t) fail_msg("%s", b.err);
    const sharp_vhost_t *vh = &b.t->vhosts[0];
    const sharp_route_t *ra = &vh->routes[0], *rb = &vh->routes[1];
    const sharp_weighted_cluster_t *wc = &rb->weighted[0];
    const sharp_filter_factory_t *comp = &sharp_compressor_filter;
    /* disabled: route > virtual host > table */
    assert_int_equal(sharp_route_filter_disabled(b.t, vh, ra, NULL, "comp"), 1);
    assert_int_equal(sharp_route_filter_disabled(b.t, vh, rb, NULL, "comp"), 0);
    /* a filter's own config, CompressorPerRoute disabled included, enables
     * the filter (it then passes responses through itself) */
    assert_int_equal(sharp_route_filter_disabled(b.t, NULL, NULL, NULL, "comp"), 0);
    assert_int_equal(sharp_route_filter_disabled(b.t, vh, rb, wc, "other"), 1);
    assert_int_equal(sharp_route_filter_disabled(b.t, vh, rb, wc, "none"), -1);
    /* config: the weighted cluster's; without it, the virtual host's empty
     * FilterConfig and the route's disable hold none, so the table's */
    const void *wcc = sharp_route_filter_config(b.t, vh, rb, wc, "comp", comp);
    const void *tc = sharp_route_filter_config(b.t, vh, rb, NULL, "comp", comp);
    assert_non_null(wcc);
    assert_non_null(tc);
    assert_ptr_equal(tc, b.t->per_filter.v[0].config);
    assert_ptr_equal(wcc, wc->per_filter.v[0].config);
    assert_ptr_equal(sharp_route_filter_config(b.t, vh, ra, NULL, "comp", comp), tc);
    /* another factory's lookup never gets the compressor's config */
    assert_null(sharp_route_filter_config(b.t, vh, rb, wc, "comp", sharp_filter_find_by_name("envoy.filters.http.router")));
    release(&b);
#undef CPR
#undef FC
}

/* connect_matcher and a CONNECT upgrade with connect_config: the route
 * matches CONNECT requests only and terminates them */
static void test_connect(void **state)
{
    (void)state;
    built_t b;
    build(&b, "virtual_hosts:\n"
              "- name: v\n"
              "  domains: ['*']\n"
              "  routes:\n"
              "  - match: { connect_matcher: {} }\n"
              "    route: { cluster: c, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: {} }] }\n"
              "  - match: { connect_matcher: {} }\n"
              "    route: { cluster: d, upgrade_configs: [{ upgrade_type: CONNECT }] }\n");
    if (!b.t) fail_msg("%s", b.err);
    const sharp_vhost_t *vh = &b.t->vhosts[0];
    assert_int_equal(vh->routes[0].match_kind, SHARP_ROUTE_MATCH_CONNECT);
    assert_true(vh->routes[0].connect_terminate);
    assert_int_equal(vh->routes[1].match_kind, SHARP_ROUTE_MATCH_CONNECT);
    assert_false(vh->routes[1].connect_terminate);
    release(&b);
    expect_error("virtual_hosts: [{ name: v, domains: ['*'], routes: [{ match: { prefix: / }, route: { cluster: c, "
                 "upgrade_configs: [{ upgrade_type: connect, connect_config: {} }] } }] }]\n",
                 "virtual_hosts[0].routes[0].route.upgrade_configs[0].upgrade_type: Non-CONNECT upgrade type connect");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_translation), cmocka_unit_test(test_defaults), cmocka_unit_test(test_connect),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_retry_on_parse),
        cmocka_unit_test(test_direct_response_body_limit),
        cmocka_unit_test(test_null_config),
        cmocka_unit_test(test_regex_rules),
        cmocka_unit_test(test_mirror_policies_and_priority),
        cmocka_unit_test(test_per_filter_config_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
