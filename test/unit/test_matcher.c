/* test_matcher.c: the generic matching API engine (proxy/matcher.c) built
 * from xds.type.matcher.v3.Matcher YAML: matcher_list (first match wins,
 * on_no_match), exact and prefix trees, or/and/not predicates, nested
 * matchers falling through, input availability (a response header input
 * defers the decision until the response headers are known), header values
 * joined with ',', query parameters, and the configs it refuses; the
 * network inputs of a listener's filter_chain_matcher and the IPMatcher
 * custom match tree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/mapper.h"
#include "config/types.h"
#include "matcher.h"

#include "xds/type/matcher/v3/matcher.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static const char *make_action_fail; /* an action name make_action refuses */

static void *make_action(const char *name, const char *type_url, const ProtobufCMessage *msg,
                         void *arg, const char *path, char *err, size_t errlen)
{
    (void)type_url;
    (void)msg;
    (void)arg;
    if (make_action_fail && strcmp(name, make_action_fail) == 0) {
        snprintf(err, errlen, "%s: refused action", path);
        return NULL;
    }
    return sharp_strdup(name);
}

static bool build_network;         /* sharp_matcher_build_network */
static uint32_t network_flags;     /* ... with these SHARP_MATCH_NET_* */

static sharp_matcher_t *build(const char *yaml, char *err, size_t errlen)
{
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "test.yaml",
                                               &xds__type__matcher__v3__matcher__descriptor, &e);
    if (!d) {
        snprintf(err, errlen, "parse: %s", e.msg);
        return NULL;
    }
    const Xds__Type__Matcher__V3__Matcher *pb =
        (const Xds__Type__Matcher__V3__Matcher *)sharp_config_doc_message(d);
    char epath[1024] = "";
    sharp_matcher_t *m =
        build_network
            ? sharp_matcher_build_network(pb, "xds_matcher", make_action, free, NULL, network_flags, epath,
                                          sizeof epath, err, errlen)
            : sharp_matcher_build(pb, "xds_matcher", make_action, free, NULL, err, errlen);
    /* the network matcher's path apart: printed as the other's */
    if (!m && build_network) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, errlen, "%s: %s", epath, msg);
    }
    sharp_config_doc_free(d);
    return m;
}

static sharp_matcher_t *must_build(const char *yaml)
{
    char err[1024] = "";
    sharp_matcher_t *m = build(yaml, err, sizeof err);
    if (!m) fail_msg("build failed: %s", err);
    return m;
}

/* Evaluates; returns the action name, "" for no match, NULL when undecided. */
static const char *eval(const sharp_matcher_t *m, const sharp_headers_t *req,
                        const sharp_headers_t *resp)
{
    sharp_match_data_t d = {.request_headers = req, .response_headers = resp};
    const void *a = NULL;
    sharp_match_result_t r = sharp_matcher_evaluate(m, &d, &a);
    if (r == SHARP_MATCH_INSUFFICIENT) return NULL;
    if (r == SHARP_MATCH_NONE) return "";
    return a;
}

static void hdrs(sharp_headers_t *h, ...)
{
    sharp_headers_init(h);
    va_list ap;
    va_start(ap, h);
    for (const char *n; (n = va_arg(ap, const char *));)
        sharp_headers_add_cstr(h, n, va_arg(ap, const char *));
    va_end(ap);
}

#define SKIP_ACTION(n)                                                                             \
    "action: {name: " n ", typed_config: {'@type': "                                               \
    "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}"
#define REQ_INPUT(h)                                                                               \
    "input: {name: i, typed_config: {'@type': "                                                    \
    "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, "                      \
    "header_name: " h "}}"
#define RESP_INPUT(h)                                                                              \
    "input: {name: i, typed_config: {'@type': "                                                    \
    "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput, "                     \
    "header_name: " h "}}"

static void list_first_match_wins(void **state)
{
    (void)state;
    sharp_matcher_t *m =
        must_build("matcher_list:\n"
                   "  matchers:\n"
                   "  - predicate: {single_predicate: {" REQ_INPUT(
                       "x-a") ", value_match: {prefix: f}}}\n"
                              "    on_match: {" SKIP_ACTION(
                                  "first") "}\n"
                                           "  - predicate: {single_predicate: {" REQ_INPUT(
                                               "x-a") ", value_match: {exact: foo}}}\n"
                                                      "    on_match: {" SKIP_ACTION(
                                                          "second") "}\n"
                                                                    "on_no_match: {" SKIP_ACTION(
                                                                        "none") "}\n");
    sharp_headers_t h;
    hdrs(&h, "x-a", "foo", NULL);
    assert_string_equal(eval(m, &h, NULL), "first");
    sharp_headers_free(&h);
    hdrs(&h, "x-a", "bar", NULL);
    assert_string_equal(eval(m, &h, NULL), "none");
    sharp_headers_free(&h);
    /* an absent header: the predicate is false, decided */
    hdrs(&h, "x-b", "foo", NULL);
    assert_string_equal(eval(m, &h, NULL), "none");
    sharp_headers_free(&h);
    /* request headers not known yet: undecided */
    assert_null(eval(m, NULL, NULL));
    sharp_matcher_free(m);

    /* without on_no_match, nothing matches */
    m = must_build("matcher_list:\n"
                   "  matchers:\n"
                   "  - predicate: {single_predicate: {" REQ_INPUT(
                       "X-A") ", value_match: {exact: foo, ignore_case: true}}}\n"
                              "    on_match: {" SKIP_ACTION("a") "}\n");
    hdrs(&h, "x-a", "FOO", NULL);
    assert_string_equal(eval(m, &h, NULL), "a");
    sharp_headers_free(&h);
    hdrs(&h, "x-a", "bar", NULL);
    assert_string_equal(eval(m, &h, NULL), "");
    sharp_headers_free(&h);
    sharp_matcher_free(m);
}

static void predicates(void **state)
{
    (void)state;
    sharp_matcher_t *m = must_build(
        "matcher_list:\n"
        "  matchers:\n"
        "  - predicate:\n"
        "      and_matcher:\n"
        "        predicate:\n"
        "        - single_predicate: {" REQ_INPUT(
            "x-a") ", value_match: {exact: '1'}}\n"
                   "        - not_matcher: {single_predicate: {" REQ_INPUT(
                       "x-b") ", value_match: {safe_regex: {google_re2: {}, regex: 'ba.'}}}}\n"
                              "    on_match: {" SKIP_ACTION(
                                  "and") "}\n"
                                         "  - predicate:\n"
                                         "      or_matcher:\n"
                                         "        predicate:\n"
                                         "        - single_predicate: {" REQ_INPUT(
                                             "x-c") ", value_match: {suffix: z}}\n"
                                                    "        - single_predicate: {" REQ_INPUT(
                                                        "x-c") ", value_match: {contains: mid}}\n"
                                                               "    on_match: {" SKIP_ACTION(
                                                                   "or") "}\n");
    sharp_headers_t h;
    hdrs(&h, "x-a", "1", NULL);
    assert_string_equal(eval(m, &h, NULL), "and"); /* not(absent) is true */
    sharp_headers_free(&h);
    hdrs(&h, "x-a", "1", "x-b", "bar", NULL);
    assert_string_equal(eval(m, &h, NULL), "");
    sharp_headers_free(&h);
    hdrs(&h, "x-a", "1", "x-b", "barx", "x-c", "amidb", NULL); /* regex is a full match */
    assert_string_equal(eval(m, &h, NULL), "and");
    sharp_headers_free(&h);
    hdrs(&h, "x-c", "abz", NULL);
    assert_string_equal(eval(m, &h, NULL), "or");
    sharp_headers_free(&h);
    hdrs(&h, "x-c", "amidb", NULL);
    assert_string_equal(eval(m, &h, NULL), "or");
    sharp_headers_free(&h);
    /* repeated header: values joined with ',' */
    hdrs(&h, "x-c", "a", "x-c", "z", NULL);
    assert_string_equal(eval(m, &h, NULL), "or");
    sharp_headers_free(&h);
    sharp_matcher_free(m);

    m = must_build("matcher_list:\n"
                   "  matchers:\n"
                   "  - predicate: {single_predicate: {" REQ_INPUT(
                       "x-a") ", value_match: {exact: 'a,b'}}}\n"
                              "    on_match: {" SKIP_ACTION("joined") "}\n");
    hdrs(&h, "x-a", "a", "x-a", "b", NULL);
    assert_string_equal(eval(m, &h, NULL), "joined");
    sharp_headers_free(&h);
    sharp_matcher_free(m);
}

static void tree_exact_and_prefix(void **state)
{
    (void)state;
    sharp_matcher_t *m = must_build(
        "matcher_tree:\n"
        "  " REQ_INPUT("x-k") "\n"
                              "  exact_match_map:\n"
                              "    map:\n"
                              "      foo: {" SKIP_ACTION(
                                  "foo") "}\n"
                                         "      bar: {" SKIP_ACTION(
                                             "bar") "}\n"
                                                    "on_no_match: {" SKIP_ACTION("other") "}\n");
    sharp_headers_t h;
    hdrs(&h, "x-k", "bar", NULL);
    assert_string_equal(eval(m, &h, NULL), "bar");
    sharp_headers_free(&h);
    hdrs(&h, "x-k", "barr", NULL);
    assert_string_equal(eval(m, &h, NULL), "other");
    sharp_headers_free(&h);
    hdrs(&h, "y", "foo", NULL); /* absent: on_no_match */
    assert_string_equal(eval(m, &h, NULL), "other");
    sharp_headers_free(&h);
    assert_null(eval(m, NULL, NULL));
    sharp_matcher_free(m);

    /* prefix: the longest wins; when its nested matcher does not match,
     * a shorter one is tried, then on_no_match */
    m = must_build(
        "matcher_tree:\n"
        "  " REQ_INPUT(
            "':path'") "\n"
                       "  prefix_match_map:\n"
                       "    map:\n"
                       "      /: {" SKIP_ACTION(
                           "root") "}\n"
                                   "      /api/v1:\n"
                                   "        matcher:\n"
                                   "          matcher_list:\n"
                                   "            matchers:\n"
                                   "            - predicate: {single_predicate: {" REQ_INPUT(
                                       "x-v") ", value_match: {exact: yy}}}\n"
                                              "              on_match: {" SKIP_ACTION(
                                                  "v1") "}\n"
                                                        "      /api: {" SKIP_ACTION(
                                                            "api") "}\n"
                                                                   "on_no_match: {" SKIP_ACTION(
                                                                       "none") "}\n");
    hdrs(&h, ":path", "/api/v1/x", "x-v", "yy", NULL);
    assert_string_equal(eval(m, &h, NULL), "v1");
    sharp_headers_free(&h);
    hdrs(&h, ":path", "/api/v1/x", NULL);
    assert_string_equal(eval(m, &h, NULL), "api");
    sharp_headers_free(&h);
    hdrs(&h, ":path", "/apx", NULL);
    assert_string_equal(eval(m, &h, NULL), "root");
    sharp_headers_free(&h);
    hdrs(&h, ":path", "x", NULL);
    assert_string_equal(eval(m, &h, NULL), "none");
    sharp_headers_free(&h);
    sharp_matcher_free(m);
}

static void nesting(void **state)
{
    (void)state;
    /* the complicated.yaml shape: a tree selecting a nested list */
    sharp_matcher_t *m = must_build(
        "matcher_tree:\n"
        "  " REQ_INPUT(
            "some-header") "\n"
                           "  exact_match_map:\n"
                           "    map:\n"
                           "      some_value_to_match_on:\n"
                           "        matcher:\n"
                           "          matcher_list:\n"
                           "            matchers:\n"
                           "            - predicate:\n"
                           "                or_matcher:\n"
                           "                  predicate:\n"
                           "                  - single_predicate: {" REQ_INPUT(
                               "second-header") ", value_match: {exact: foo}}\n"
                                                "                  - single_predicate: {" REQ_INPUT(
                                                    "second-header") ", value_match: {exact: "
                                                                     "bar}}\n"
                                                                     "              on_match: "
                                                                     "{" SKIP_ACTION("skip") "}\n");
    sharp_headers_t h;
    hdrs(&h, "some-header", "some_value_to_match_on", "second-header", "bar", NULL);
    assert_string_equal(eval(m, &h, NULL), "skip");
    sharp_headers_free(&h);
    hdrs(&h, "some-header", "some_value_to_match_on", "second-header", "baz", NULL);
    assert_string_equal(eval(m, &h, NULL), "");
    sharp_headers_free(&h);
    hdrs(&h, "some-header", "other", "second-header", "foo", NULL);
    assert_string_equal(eval(m, &h, NULL), "");
    sharp_headers_free(&h);
    sharp_matcher_free(m);

    /* a list entry whose nested matcher does not match lets the list go on;
     * a nested on_no_match is a match */
    m = must_build(
        "matcher_list:\n"
        "  matchers:\n"
        "  - predicate: {single_predicate: {" REQ_INPUT(
            "a") ", value_match: {exact: '1'}}}\n"
                 "    on_match:\n"
                 "      matcher:\n"
                 "        matcher_list:\n"
                 "          matchers:\n"
                 "          - predicate: {single_predicate: {" REQ_INPUT(
                     "b") ", value_match: {exact: '1'}}}\n"
                          "            on_match: {" SKIP_ACTION(
                              "a1b1") "}\n"
                                      "  - predicate: {single_predicate: {" REQ_INPUT(
                                          "a") ", value_match: {prefix: '1'}}}\n"
                                               "    on_match:\n"
                                               "      matcher:\n"
                                               "        matcher_list:\n"
                                               "          matchers:\n"
                                               "          - predicate: {single_predicate: "
                                               "{" REQ_INPUT(
                                                   "b") ", value_match: {exact: '2'}}}\n"
                                                        "            on_match: {" SKIP_ACTION(
                                                            "a1b2") "}\n"
                                                                    "        on_no_match: "
                                                                    "{" SKIP_ACTION(
                                                                        "a1") "}\n"
                                                                              "on_no_match: "
                                                                              "{" SKIP_ACTION(
                                                                                  "top") "}\n");
    hdrs(&h, "a", "1", "b", "1", NULL);
    assert_string_equal(eval(m, &h, NULL), "a1b1");
    sharp_headers_free(&h);
    hdrs(&h, "a", "1", "b", "2", NULL);
    assert_string_equal(eval(m, &h, NULL), "a1b2");
    sharp_headers_free(&h);
    hdrs(&h, "a", "1", NULL);
    assert_string_equal(eval(m, &h, NULL), "a1");
    sharp_headers_free(&h);
    hdrs(&h, "a", "2", NULL);
    assert_string_equal(eval(m, &h, NULL), "top");
    sharp_headers_free(&h);
    sharp_matcher_free(m);

    /* no matcher type: on_no_match alone (Envoy's AnyMatcher) */
    m = must_build("on_no_match: {" SKIP_ACTION("always") "}\n");
    assert_string_equal(eval(m, NULL, NULL), "always");
    sharp_matcher_free(m);
}

static void response_header_timing(void **state)
{
    (void)state;
    /* the request_response.yaml shape */
    sharp_matcher_t *m = must_build(
        "matcher_list:\n"
        "  matchers:\n"
        "  - predicate:\n"
        "      or_matcher:\n"
        "        predicate:\n"
        "        - single_predicate: {" REQ_INPUT(
            "request-header") ", value_match: {exact: foo}}\n"
                              "        - single_predicate: {" RESP_INPUT(
                                  "response-header") ", value_match: {exact: bar}}\n"
                                                     "    on_match: {" SKIP_ACTION("skip") "}\n");
    assert_true(sharp_matcher_needs_response(m));
    sharp_headers_t req, resp;
    hdrs(&req, "request-header", "foo", NULL);
    assert_string_equal(eval(m, &req, NULL), "skip"); /* decided on the request alone */
    sharp_headers_free(&req);
    hdrs(&req, "request-header", "nope", NULL);
    assert_null(eval(m, &req, NULL)); /* undecided until the response headers */
    hdrs(&resp, "response-header", "bar", NULL);
    assert_string_equal(eval(m, &req, &resp), "skip");
    sharp_headers_free(&resp);
    hdrs(&resp, "response-header", "baz", NULL);
    assert_string_equal(eval(m, &req, &resp), "");
    sharp_headers_free(&resp);
    sharp_headers_free(&req);
    sharp_matcher_free(m);

    /* and: a false request predicate decides at once */
    m = must_build("matcher_list:\n"
                   "  matchers:\n"
                   "  - predicate:\n"
                   "      and_matcher:\n"
                   "        predicate:\n"
                   "        - single_predicate: {" REQ_INPUT(
                       "a") ", value_match: {exact: '1'}}\n"
                            "        - single_predicate: {" RESP_INPUT(
                                "b") ", value_match: {exact: '1'}}\n"
                                     "    on_match: {" SKIP_ACTION(
                                         "both") "}\n"
                                                 "on_no_match: {" SKIP_ACTION("nomatch") "}\n");
    hdrs(&req, "a", "2", NULL);
    assert_string_equal(eval(m, &req, NULL), "nomatch");
    sharp_headers_free(&req);
    hdrs(&req, "a", "1", NULL);
    assert_null(eval(m, &req, NULL));
    hdrs(&resp, "b", "1", NULL);
    assert_string_equal(eval(m, &req, &resp), "both");
    sharp_headers_free(&resp);
    sharp_headers_free(&req);
    sharp_matcher_free(m);

    /* a tree on a response header is undecided during the request */
    m = must_build("matcher_tree:\n"
                   "  " RESP_INPUT("':status'") "\n"
                                                "  exact_match_map: {map: {'503': {" SKIP_ACTION(
                                                    "s503") "}}}\n");
    hdrs(&req, "a", "1", NULL);
    assert_null(eval(m, &req, NULL));
    hdrs(&resp, ":status", "503", NULL);
    assert_string_equal(eval(m, &req, &resp), "s503");
    sharp_headers_free(&resp);
    sharp_headers_free(&req);
    sharp_matcher_free(m);
}

static void trailers(void **state)
{
    (void)state;
    sharp_matcher_t *m = must_build(
        "matcher_list:\n"
        "  matchers:\n"
        "  - predicate: {single_predicate: {input: {name: t, typed_config: {'@type': "
        "type.googleapis.com/envoy.type.matcher.v3.HttpResponseTrailerMatchInput, header_name: "
        "grpc-status}}, value_match: {exact: '0'}}}\n"
        "    on_match: {" SKIP_ACTION(
            "ok") "}\n"
                  "  - predicate: {single_predicate: {input: {name: t, typed_config: {'@type': "
                  "type.googleapis.com/envoy.type.matcher.v3.HttpRequestTrailerMatchInput, "
                  "header_name: x-t}}, value_match: {exact: '1'}}}\n"
                  "    on_match: {" SKIP_ACTION("req") "}\n");
    assert_true(sharp_matcher_needs_response(m));
    sharp_headers_t req, rt, qt;
    hdrs(&req, "a", "1", NULL);
    hdrs(&rt, "grpc-status", "0", NULL);
    hdrs(&qt, "x-t", "1", NULL);
    sharp_match_data_t d = {.request_headers = &req};
    const void *a;
    assert_int_equal(sharp_matcher_evaluate(m, &d, &a), SHARP_MATCH_INSUFFICIENT);
    d.response_headers = &req;
    assert_int_equal(sharp_matcher_evaluate(m, &d, &a), SHARP_MATCH_INSUFFICIENT);
    d.response_trailers = &rt;
    assert_int_equal(sharp_matcher_evaluate(m, &d, &a), SHARP_MATCH_ACTION);
    assert_string_equal(a, "ok");
    d.response_trailers = &req; /* no grpc-status: the next entry needs request trailers */
    assert_int_equal(sharp_matcher_evaluate(m, &d, &a), SHARP_MATCH_INSUFFICIENT);
    d.request_trailers = &qt;
    assert_int_equal(sharp_matcher_evaluate(m, &d, &a), SHARP_MATCH_ACTION);
    assert_string_equal(a, "req");
    sharp_headers_free(&req);
    sharp_headers_free(&rt);
    sharp_headers_free(&qt);
    sharp_matcher_free(m);
}

static void query_param(void **state)
{
    (void)state;
    sharp_matcher_t *m =
        must_build("matcher_tree:\n"
                   "  input: {name: q, typed_config: {'@type': "
                   "type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput, "
                   "query_param: 'a b'}}\n"
                   "  exact_match_map: {map: {'x&y': {" SKIP_ACTION("hit") "}, '': {" SKIP_ACTION(
                       "empty") "}}}\n"
                                "on_no_match: {" SKIP_ACTION("none") "}\n");
    sharp_headers_t h;
    hdrs(&h, ":path", "/p?z=1&a%20b=x%26y&a%20b=2", NULL);
    assert_string_equal(eval(m, &h, NULL), "hit"); /* the first value, decoded */
    sharp_headers_free(&h);
    hdrs(&h, ":path", "/p?a%20b", NULL);
    assert_string_equal(eval(m, &h, NULL), "empty");
    sharp_headers_free(&h);
    hdrs(&h, ":path", "/p?ab=1", NULL);
    assert_string_equal(eval(m, &h, NULL), "none");
    sharp_headers_free(&h);
    hdrs(&h, ":path", "/p", NULL);
    assert_string_equal(eval(m, &h, NULL), "none");
    sharp_headers_free(&h);
    sharp_matcher_free(m);
}

static void refused(const char *yaml, const char *want)
{
    char err[1024] = "";
    sharp_matcher_t *m = build(yaml, err, sizeof err);
    if (m) fail_msg("accepted: %s", yaml);
    if (!strstr(err, want)) fail_msg("error '%s' lacks '%s'", err, want);
}

static void bad_configs(void **state)
{
    (void)state;
    refused("matcher_list: {matchers: []}",
            "xds_matcher.matcher_list.matchers: value must contain at least 1");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {" REQ_INPUT(
                "a") ", value_match: {safe_regex: {regex: 'x'}}}}\n"
                     "    on_match: {" SKIP_ACTION("a") "}\n",
            "value_match: safe_regex.google_re2: value is required");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {" REQ_INPUT(
                "a") ", custom_match: {name: c, typed_config: {'@type': "
                     "type.googleapis.com/xds.type.v3.TypedStruct, type_url: x.y.Z}}}}\n"
                     "    on_match: {" SKIP_ACTION("a") "}\n",
            "custom_match");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {or_matcher: {predicate: [{single_predicate: {" REQ_INPUT(
                "a") ", value_match: {exact: x}}}]}}\n"
                     "    on_match: {" SKIP_ACTION("a") "}\n",
            "or_matcher.predicate: value must contain at least 2");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {" REQ_INPUT(
                "a") ", value_match: {exact: x}}}\n"
                     "    on_match: {keep_matching: true, " SKIP_ACTION("a") "}\n",
            "keep_matching");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {input: {name: i, typed_config: {'@type': "
            "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter}}, "
            "value_match: {exact: x}}}\n"
            "    on_match: {" SKIP_ACTION("a") "}\n",
            "match input 'envoy.extensions.filters.common.matcher.action.v3.SkipFilter' is not "
            "supported");
    refused("matcher_tree:\n"
            "  " REQ_INPUT("a") "\n"
                                "  custom_match: {name: c, typed_config: {'@type': "
                                "type.googleapis.com/xds.type.v3.TypedStruct, type_url: x.y.Z}}\n",
            "matcher_tree.custom_match");
    refused("matcher_tree:\n"
            "  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n",
            "input is required");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {" REQ_INPUT(
                "a") ", value_match: {safe_regex: {google_re2: {}, regex: '('}}}}\n"
                     "    on_match: {" SKIP_ACTION("a") "}\n",
            "value_match");
    refused("matcher_list:\n"
            "  matchers:\n"
            "  - predicate: {single_predicate: {" REQ_INPUT("a") ", value_match: {exact: x}}}\n"
                                                                 "    on_match: {}\n",
            "one of matcher and action is required");
    /* the action callback's refusal, and the nested path it reports */
    make_action_fail = "bad";
    refused(
        "matcher_tree:\n"
        "  " REQ_INPUT("a") "\n"
                            "  exact_match_map: {map: {k: {matcher: {on_no_match: {" SKIP_ACTION(
                                "bad") "}}}}}\n",
        "xds_matcher.matcher_tree.exact_match_map.map[\"k\"].matcher.on_no_match.action.typed_"
        "config: refused");
    make_action_fail = NULL;
}

/* ---- network inputs and the IP matcher ---- */

#define NET_INPUT(t)                                                                               \
    "input: {name: i, typed_config: {'@type': "                                                    \
    "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3." t "}}"

static struct sockaddr_storage addr(const char *ip, unsigned port)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
    }
    return ss;
}

static const char *eval_conn(const sharp_matcher_t *m, const sharp_fc_conn_t *c)
{
    sharp_match_data_t d = {.conn = c};
    const void *a = NULL;
    sharp_match_result_t r = sharp_matcher_evaluate(m, &d, &a);
    if (r == SHARP_MATCH_INSUFFICIENT) return NULL;
    if (r == SHARP_MATCH_NONE) return "";
    return a;
}

/* A tree on one input whose on_no_match is "none": the value the input
 * gives is the key of the one entry. */
static const char *tree_value(const char *input, const char *key, const sharp_fc_conn_t *c)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "matcher_tree:\n"
             "  input: {name: i, typed_config: {'@type': "
             "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.%s}}\n"
             "  exact_match_map: {map: {\"%s\": {" SKIP_ACTION("hit") "}}}\n"
                                                                      "on_no_match: {" SKIP_ACTION(
                                                                          "none") "}\n",
             input, key);
    build_network = true;
    sharp_matcher_t *m = must_build(yaml);
    build_network = false;
    static char out[64];
    const char *r = eval_conn(m, c);
    snprintf(out, sizeof out, "%s", r ? r : "(undecided)");
    sharp_matcher_free(m);
    return out;
}

static void network_inputs(void **state)
{
    (void)state;
    struct sockaddr_storage local = addr("10.0.0.1", 443), remote = addr("192.168.1.7", 40000),
                            direct = addr("172.16.0.9", 50000);
    const char *alpn[] = {"h2", "http/1.1"};
    sharp_fc_conn_t c = {.local = (struct sockaddr *)&local,
                         .remote = (struct sockaddr *)&remote,
                         .direct_remote = (struct sockaddr *)&direct,
                         .server_name = "www.example.com",
                         .transport_protocol = "tls",
                         .application_protocols = alpn,
                         .napplication_protocols = 2};
    assert_string_equal(tree_value("DestinationIPInput", "10.0.0.1", &c), "hit");
    assert_string_equal(tree_value("DestinationPortInput", "443", &c), "hit");
    assert_string_equal(tree_value("SourceIPInput", "192.168.1.7", &c), "hit");
    assert_string_equal(tree_value("SourcePortInput", "40000", &c), "hit");
    assert_string_equal(tree_value("DirectSourceIPInput", "172.16.0.9", &c), "hit");
    assert_string_equal(tree_value("ServerNameInput", "www.example.com", &c), "hit");
    assert_string_equal(tree_value("TransportProtocolInput", "tls", &c), "hit");
    assert_string_equal(tree_value("ApplicationProtocolInput", "'h2','http/1.1'", &c), "hit");
    /* an external peer has no source type value */
    assert_string_equal(tree_value("SourceTypeInput", "local", &c), "none");
    struct sockaddr_storage lo = addr("127.0.0.1", 1234), self = addr("10.0.0.1", 1234);
    c.remote = (struct sockaddr *)&lo;
    assert_string_equal(tree_value("SourceTypeInput", "local", &c), "hit");
    c.remote = (struct sockaddr *)&self; /* the connection's own address */
    assert_string_equal(tree_value("SourceTypeInput", "local", &c), "hit");
    /* no SNI, no ALPN: no value (on_no_match) */
    c.server_name = "";
    c.napplication_protocols = 0;
    assert_string_equal(tree_value("ServerNameInput", "", &c), "none");
    assert_string_equal(tree_value("ApplicationProtocolInput", "''", &c), "none");
    /* IPv6 in its compressed form */
    struct sockaddr_storage l6 = addr("2001:db8:0:0::1", 8443);
    c.local = (struct sockaddr *)&l6;
    assert_string_equal(tree_value("DestinationIPInput", "2001:db8::1", &c), "hit");
    /* without the direct source, the source */
    c.direct_remote = NULL;
    assert_string_equal(tree_value("DirectSourceIPInput", "10.0.0.1", &c), "hit");
}

static void ip_matcher(void **state)
{
    (void)state;
    build_network = true;
    /* the docs' example: 443 from 192.0.0.0/2 or 10.0.0.0/24 is internal,
     * other IPv4 sources tls; the longest prefix first */
    sharp_matcher_t *m = must_build(
        "matcher_tree:\n"
        "  " NET_INPUT(
            "DestinationPortInput") "\n"
                                    "  exact_match_map:\n"
                                    "    map:\n"
                                    "      \"80\": {" SKIP_ACTION(
                                        "http") "}\n"
                                                "      \"443\":\n"
                                                "        matcher:\n"
                                                "          matcher_tree:\n"
                                                "            " NET_INPUT(
                                                    "SourceIPInput") "\n"
                                                                     "            custom_match:\n"
                                                                     "              name: ip\n"
                                                                     "              typed_config:\n"
                                                                     "                '@type': "
                                                                     "type.googleapis.com/"
                                                                     "xds.type.matcher.v3."
                                                                     "IPMatcher\n"
                                                                     "                "
                                                                     "range_matchers:\n"
                                                                     "                - ranges: "
                                                                     "[{address_prefix: 192.0.0.0, "
                                                                     "prefix_len: 2}, "
                                                                     "{address_prefix: 10.0.0.0, "
                                                                     "prefix_len: 24}]\n"
                                                                     "                  on_match: "
                                                                     "{" SKIP_ACTION(
                                                                         "internal") "}\n"
                                                                                     "             "
                                                                                     "   - ranges: "
                                                                                     "[{address_"
                                                                                     "prefix: "
                                                                                     "0.0.0.0}]\n"
                                                                                     "             "
                                                                                     "     "
                                                                                     "on_match: "
                                                                                     "{" SKIP_ACTION(
                                                                                         "tls") "}"
                                                                                                "\n");
    struct sockaddr_storage local = addr("127.0.0.1", 443), remote = addr("10.0.0.7", 1);
    sharp_fc_conn_t c = {.local = (struct sockaddr *)&local, .remote = (struct sockaddr *)&remote};
    assert_string_equal(eval_conn(m, &c), "internal");
    remote = addr("200.1.2.3", 1); /* 192.0.0.0/2 is 192-255 */
    assert_string_equal(eval_conn(m, &c), "internal");
    remote = addr("10.0.1.7", 1);
    assert_string_equal(eval_conn(m, &c), "tls");
    remote = addr("::1", 1); /* no IPv6 range: on_no_match of none */
    assert_string_equal(eval_conn(m, &c), "");
    local = addr("127.0.0.1", 80);
    assert_string_equal(eval_conn(m, &c), "http");
    local = addr("127.0.0.1", 81);
    assert_string_equal(eval_conn(m, &c), "");
    sharp_matcher_free(m);

    /* a nested matcher that does not match lets a shorter range try,
     * unless that range is exclusive */
    const char *nested =
        "matcher_tree:\n"
        "  " NET_INPUT(
            "SourceIPInput") "\n"
                             "  custom_match:\n"
                             "    name: ip\n"
                             "    typed_config:\n"
                             "      '@type': type.googleapis.com/xds.type.matcher.v3.IPMatcher\n"
                             "      range_matchers:\n"
                             "      - ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]\n"
                             "        exclusive: %s\n"
                             "        on_match: {" SKIP_ACTION(
                                 "wide") "}\n"
                                         "      - ranges: [{address_prefix: 10.1.0.0, prefix_len: "
                                         "16}]\n"
                                         "        on_match:\n"
                                         "          matcher:\n"
                                         "            matcher_tree:\n"
                                         "              " NET_INPUT(
                                             "DestinationPortInput") "\n"
                                                                     "              "
                                                                     "exact_match_map: {map: "
                                                                     "{\"1\": {" SKIP_ACTION(
                                                                         "narrow") "}}}\n"
                                                                                   "on_no_match: "
                                                                                   "{" SKIP_ACTION(
                                                                                       "none") "}"
                                                                                               "\n";
    char yaml[4096];
    snprintf(yaml, sizeof yaml, nested, "false");
    m = must_build(yaml);
    local = addr("127.0.0.1", 1);
    remote = addr("10.1.2.3", 9);
    assert_string_equal(eval_conn(m, &c), "narrow");
    local = addr("127.0.0.1", 2);
    assert_string_equal(eval_conn(m, &c), "wide");
    remote = addr("11.0.0.1", 9);
    assert_string_equal(eval_conn(m, &c), "none");
    sharp_matcher_free(m);
    snprintf(yaml, sizeof yaml, nested, "true");
    m = must_build(yaml);
    remote = addr("10.1.2.3", 9);
    assert_string_equal(eval_conn(m, &c), "none");
    remote = addr("10.2.0.1", 9); /* the first (longest) range holding it */
    assert_string_equal(eval_conn(m, &c), "wide");
    sharp_matcher_free(m);
    build_network = false;
}

/* The IPMatcher over an address input reads the address itself; over a
 * header, its text parsed (not an address: no range holds it); the same
 * ranges either way. */
static void ip_matcher_inputs(void **state)
{
    (void)state;
    static const char *const ranges =
        "  custom_match:\n"
        "    name: ip\n"
        "    typed_config:\n"
        "      '@type': type.googleapis.com/xds.type.matcher.v3.IPMatcher\n"
        "      range_matchers:\n"
        "      - ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}, {address_prefix: 'fd00::', prefix_len: 8}]\n"
        "        on_match: {" SKIP_ACTION("inside") "}\n"
        "on_no_match: {" SKIP_ACTION("outside") "}\n";
    char yaml[2048];
    snprintf(yaml, sizeof yaml, "matcher_tree:\n  %s\n%s", REQ_INPUT("x-ip"), ranges);
    sharp_matcher_t *m = must_build(yaml);
    sharp_headers_t h;
    hdrs(&h, "x-ip", "10.9.8.7", NULL);
    assert_string_equal(eval(m, &h, NULL), "inside");
    sharp_headers_free(&h);
    hdrs(&h, "x-ip", "fd12::1", NULL);
    assert_string_equal(eval(m, &h, NULL), "inside");
    sharp_headers_free(&h);
    hdrs(&h, "x-ip", "11.0.0.1", NULL);
    assert_string_equal(eval(m, &h, NULL), "outside");
    sharp_headers_free(&h);
    hdrs(&h, "x-ip", "not an address", NULL);
    assert_string_equal(eval(m, &h, NULL), "outside");
    sharp_headers_free(&h);
    sharp_matcher_free(m);

    build_network = true;
    static const char *const inputs[] = {"SourceIPInput", "DirectSourceIPInput", "DestinationIPInput"};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        char in[256];
        snprintf(in, sizeof in, "input: {name: i, typed_config: {'@type': "
                 "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.%s}}", inputs[i]);
        snprintf(yaml, sizeof yaml, "matcher_tree:\n  %s\n%s", in, ranges);
        m = must_build(yaml);
        struct sockaddr_storage inside = addr("10.1.2.3", 5), inside6 = addr("fd00::9", 5),
                                outside = addr("192.168.0.1", 5);
        struct sockaddr_storage pipe = {.ss_family = AF_UNIX};
        sharp_fc_conn_t c = {.local = (struct sockaddr *)&inside, .remote = (struct sockaddr *)&inside};
        assert_string_equal(eval_conn(m, &c), "inside");
        c.local = c.remote = (struct sockaddr *)&inside6;
        assert_string_equal(eval_conn(m, &c), "inside");
        c.local = c.remote = (struct sockaddr *)&outside;
        assert_string_equal(eval_conn(m, &c), "outside");
        c.local = c.remote = (struct sockaddr *)&pipe; /* no IP address: no value */
        assert_string_equal(eval_conn(m, &c), "outside");
        sharp_match_data_t none = {0};
        const void *a;
        assert_int_equal(sharp_matcher_evaluate(m, &none, &a), SHARP_MATCH_INSUFFICIENT);
        sharp_matcher_free(m);
    }
    build_network = false;
}

static void network_refusals(void **state)
{
    (void)state;
    char err[1024];
    /* HTTP inputs in a network matcher, network inputs in an HTTP one */
    build_network = true;
    assert_null(build("matcher_tree:\n  " REQ_INPUT(
                          "x") "\n  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n",
                      err, sizeof err));
    assert_non_null(
        strstr(err, "HttpRequestHeaderMatchInput' is not supported in a network matcher"));
    /* a UDP listener bound to a wildcard cannot tell a datagram's
     * destination address */
    const char *dst_ip = "matcher_tree:\n  " NET_INPUT("DestinationIPInput") "\n  exact_match_map: {map: {a: {"
                         SKIP_ACTION("a") "}}}\n";
    network_flags = SHARP_MATCH_NET_UDP | SHARP_MATCH_NET_NO_LOCAL_IP;
    assert_null(build(dst_ip, err, sizeof err));
    assert_non_null(strstr(err, "DestinationIPInput' is not supported on a UDP listener bound to a wildcard"));
    network_flags = SHARP_MATCH_NET_UDP;
    sharp_matcher_free(must_build(dst_ip));
    /* the UDP proxy's matcher has Envoy's datagram inputs only: the
     * addresses and ports; a listener's filter_chain_matcher has them all */
    static const char *const udp_ok[] = {"DestinationIPInput", "DestinationPortInput", "SourceIPInput",
                                         "SourcePortInput"};
    static const char *const udp_refused[] = {"DirectSourceIPInput", "SourceTypeInput", "ServerNameInput",
                                              "TransportProtocolInput", "ApplicationProtocolInput"};
    char yaml[1024];
    for (size_t i = 0; i < sizeof udp_ok / sizeof udp_ok[0]; i++) {
        snprintf(yaml, sizeof yaml, "matcher_tree:\n  input: {name: in, typed_config: {'@type': "
                 "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.%s}}\n"
                 "  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n", udp_ok[i]);
        sharp_matcher_free(must_build(yaml));
    }
    for (size_t i = 0; i < sizeof udp_refused / sizeof udp_refused[0]; i++) {
        snprintf(yaml, sizeof yaml, "matcher_tree:\n  input: {name: in, typed_config: {'@type': "
                 "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.%s}}\n"
                 "  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n", udp_refused[i]);
        network_flags = SHARP_MATCH_NET_UDP;
        assert_null(build(yaml, err, sizeof err));
        char want[256];
        snprintf(want, sizeof want, "matcher_tree.input: Didn't find a registered implementation for 'in' with type "
                 "URL: 'envoy.extensions.matching.common_inputs.network.v3.%s'", udp_refused[i]);
        if (!strstr(err, want)) fail_msg("%s: %s", udp_refused[i], err);
        network_flags = 0;
        sharp_matcher_free(must_build(yaml));
    }
    network_flags = SHARP_MATCH_NET_UDP;
    assert_null(build(
        "matcher_tree:\n  input: {name: fs, typed_config: {'@type': "
        "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput, key: k}}"
        "\n  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n",
        err, sizeof err));
    assert_non_null(strstr(err, "Didn't find a registered implementation for 'fs'"));
    network_flags = 0;
    /* the path and the message apart, also for a path holding ": " (a map
     * key) and an action's refusal */
    build_network = false;
    {
        sharp_config_error_t ce = {{0}};
        const char *y = "matcher_tree:\n  " NET_INPUT("SourcePortInput") "\n  exact_match_map: {map: {'a: b': {"
                        SKIP_ACTION("refuse") "}}}\n";
        sharp_config_doc_t *d = sharp_config_parse(y, strlen(y), "test.yaml", &xds__type__matcher__v3__matcher__descriptor,
                                                   &ce);
        if (!d) fail_msg("parse: %s", ce.msg);
        char epath[1024] = "";
        make_action_fail = "refuse";
        assert_null(sharp_matcher_build_network((const Xds__Type__Matcher__V3__Matcher *)sharp_config_doc_message(d),
                                                "m", make_action, free, NULL, 0, epath, sizeof epath, err,
                                                sizeof err));
        make_action_fail = NULL;
        assert_string_equal(epath, "m.matcher_tree.exact_match_map.map[\"a: b\"].action.typed_config");
        assert_string_equal(err, "refused action");
        sharp_config_doc_free(d);
        y = "matcher_tree:\n  " NET_INPUT("SourcePortInput") "\n  exact_match_map: {map: {'a: b': {}}}\n";
        d = sharp_config_parse(y, strlen(y), "test.yaml", &xds__type__matcher__v3__matcher__descriptor, &ce);
        assert_non_null(d);
        assert_null(sharp_matcher_build_network((const Xds__Type__Matcher__V3__Matcher *)sharp_config_doc_message(d),
                                                "m", make_action, free, NULL, 0, epath, sizeof epath, err,
                                                sizeof err));
        assert_string_equal(epath, "m.matcher_tree.exact_match_map.map[\"a: b\"]");
        assert_string_equal(err, "one of matcher and action is required");
        sharp_config_doc_free(d);
    }
    build_network = true;
    assert_null(build(
        "matcher_tree:\n  input: {name: i, typed_config: {'@type': "
        "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.FilterStateInput}}"
        "\n  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n",
        err, sizeof err));
    assert_non_null(strstr(err, "key: value length must be at least 1"));
    assert_null(
        build("matcher_tree:\n  " NET_INPUT(
                  "SourceIPInput") "\n  custom_match: {name: ip, "
                                   "typed_config: {'@type': "
                                   "type.googleapis.com/xds.type.matcher.v3.IPMatcher, "
                                   "range_matchers: [{ranges: [{address_prefix: 10.0.0.0, "
                                   "prefix_len: 33}], on_match: {" SKIP_ACTION("a") "}}]}}\n",
              err, sizeof err));
    assert_non_null(
        strstr(err, "range_matchers[0].ranges[0]: malformed IP address or prefix length"));
    build_network = false;
    assert_null(
        build("matcher_tree:\n  " NET_INPUT(
                  "SourceIPInput") "\n  exact_match_map: {map: {a: {" SKIP_ACTION("a") "}}}\n",
              err, sizeof err));
    assert_non_null(strstr(err, "SourceIPInput' is not supported here"));
}

int main(void)
{
    sharp_config_types_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(list_first_match_wins),
        cmocka_unit_test(predicates),
        cmocka_unit_test(tree_exact_and_prefix),
        cmocka_unit_test(nesting),
        cmocka_unit_test(response_header_timing),
        cmocka_unit_test(trailers),
        cmocka_unit_test(query_param),
        cmocka_unit_test(bad_configs),
        cmocka_unit_test(network_inputs),
        cmocka_unit_test(ip_matcher),
        cmocka_unit_test(ip_matcher_inputs),
        cmocka_unit_test(network_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
