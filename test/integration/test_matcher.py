"""The generic matching API in the data path: an HTTP filter wrapped in an
ExtensionWithMatcher (Envoy's match delegate filter) with SkipFilter
actions (the shapes of Envoy's matching docs: a request header tree, a tree
selecting a nested list, a list that needs a response header, decided only
when the response headers arrive), the composite filter running a fault
abort or a header_to_metadata config picked by a request header, configs
refused by name, and the Envoy corpus bootstraps of the matching docs."""
import json
import socket
import time

import pytest

from conftest import (PROTOS, SLOW, bootstrap_yaml, file_access_log, free_port, log_lines, protos, run_sharp_config,
                      stat, validate_config, wait_for)

H1 = PROTOS["h1"]
CORPUS = "/work/shared/envoy-corpus"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
H2M = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
EWM = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
SKIP = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
REQ_IN = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
RESP_IN = "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput"
COMPOSITE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite"
EXECUTE = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.ExecuteFilterAction"
LOG = "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %DYNAMIC_METADATA(m:k)%\\n"
ABORT = f'"@type": {FAULT}\nabort: {{ http_status: 503, percentage: {{ numerator: 100 }} }}\n'
SKIP_ACTION = f'action: {{ name: skip, typed_config: {{ "@type": {SKIP} }} }}'


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def req_input(h):
    return f'input: {{ name: i, typed_config: {{ "@type": {REQ_IN}, header_name: {h} }} }}'


def resp_input(h):
    return f'input: {{ name: i, typed_config: {{ "@type": {RESP_IN}, header_name: {h} }} }}'


def wrapped(inner, matcher, name="with-matcher"):
    """An http_filters entry: `inner` (a typed_config in YAML) wrapped with
    the xds_matcher `matcher` (YAML; None: no matcher)."""
    f = (f"- name: {name}\n  typed_config:\n    \"@type\": {EWM}\n    extension_config:\n      name: inner\n"
         "      typed_config:\n" + indent(inner, 8))
    if matcher is not None:
        f += "    xds_matcher:\n" + indent(matcher, 6)
    return f


def start(procs, upstream, filters, routes=None):
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG)
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, hcm_extra=al)
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(filters, 10))
    run_sharp_config(procs, y, admin)
    return listen, admin, log


SIMPLE = f"""\
matcher_tree:
  {req_input("some-header")}
  exact_match_map:
    map:
      some_value_to_match_on: {{ {SKIP_ACTION} }}
"""


@protos("h1", "h2-down")
def test_simple_tree_skips_fault(procs, upstream, proto):
    """simple.yaml's shape with a 100% abort: the header value in the exact
    map skips the fault filter (the request reaches the upstream), any
    other value or none leaves it in (503 FI); the fault filter's stats
    count only the requests it saw."""
    port, admin, log = start(procs, upstream, wrapped(ABORT, SIMPLE))
    s, _, b = proto.request(port, "/echo", headers={"some-header": "some_value_to_match_on"})
    assert s == 200 and json.loads(b)["path"] == "/echo", (s, b)
    s, _, b = proto.request(port, "/a", headers={"some-header": "other"})
    assert s == 503 and b == b"fault filter abort"
    s, _, b = proto.request(port, "/b")
    assert s == 503
    assert stat(admin, "http.ingress_http.fault.aborts_injected") == 2
    assert sorted(log_lines(log, 3)) == ["200 - /echo -", "503 FI /a -", "503 FI /b -"]


def test_complicated_nested_tree(procs, upstream):
    """complicated.yaml's shape: the exact map selects a nested list OR-ing
    two values of a second header; skipped only when both levels match."""
    m = f"""\
matcher_tree:
  {req_input("some-header")}
  exact_match_map:
    map:
      some_value_to_match_on:
        matcher:
          matcher_list:
            matchers:
            - predicate:
                or_matcher:
                  predicate:
                  - single_predicate: {{ {req_input("second-header")}, value_match: {{ exact: foo }} }}
                  - single_predicate: {{ {req_input("second-header")}, value_match: {{ exact: bar }} }}
              on_match: {{ {SKIP_ACTION} }}
"""
    port, _, _ = start(procs, upstream, wrapped(ABORT, m))
    ok = {"some-header": "some_value_to_match_on"}
    assert H1.request(port, "/", headers={**ok, "second-header": "foo"})[0] == 200
    assert H1.request(port, "/", headers={**ok, "second-header": "bar"})[0] == 200
    assert H1.request(port, "/", headers={**ok, "second-header": "baz"})[0] == 503
    assert H1.request(port, "/", headers=ok)[0] == 503
    assert H1.request(port, "/", headers={"some-header": "x", "second-header": "foo"})[0] == 503


REQ_RESP = f"""\
matcher_list:
  matchers:
  - predicate:
      or_matcher:
        predicate:
        - single_predicate: {{ {req_input("request-header")}, value_match: {{ exact: foo }} }}
        - single_predicate: {{ {resp_input("response-header")}, value_match: {{ exact: bar }} }}
    on_match: {{ {SKIP_ACTION} }}
"""


def test_response_header_match_decided_on_response(procs, upstream):
    """request_response.yaml's shape around header_to_metadata response
    rules (response header x-meta into metadata m:k): a request header foo
    skips the filter at once; otherwise the decision waits for the response
    headers, and response-header: bar then skips the filter's response
    rules, any other value leaves them on."""
    h2m = (f'"@type": {H2M}\nresponse_rules:\n- header: x-meta\n'
           "  on_header_present: { metadata_namespace: m, key: k, type: STRING }\n")
    port, _, log = start(procs, upstream, wrapped(h2m, REQ_RESP))
    assert H1.request(port, "/echo?hdr=x-meta:one&hdr=response-header:bar")[0] == 200
    assert H1.request(port, "/echo?hdr=x-meta:two&hdr=response-header:baz")[0] == 200
    assert H1.request(port, "/echo?hdr=x-meta:three", headers={"request-header": "foo"})[0] == 200
    assert H1.request(port, "/echo?hdr=x-meta:four")[0] == 200
    lines = sorted(log_lines(log, 4))
    assert lines == ["200 - /echo?hdr=x-meta:four four",
                     "200 - /echo?hdr=x-meta:one&hdr=response-header:bar -",
                     "200 - /echo?hdr=x-meta:three -",
                     "200 - /echo?hdr=x-meta:two&hdr=response-header:baz two"], lines


def test_request_path_runs_while_undecided(procs, upstream):
    """With the fault filter: while the match needs a response header the
    filter is in the stream, so a 100% abort answers before any response
    (Envoy: undecided is not skipped); the request header alone decides."""
    port, _, _ = start(procs, upstream, wrapped(ABORT, REQ_RESP))
    assert H1.request(port, "/echo?hdr=response-header:bar")[0] == 503
    assert H1.request(port, "/echo", headers={"request-header": "foo"})[0] == 200


def test_query_param_and_prefix_tree(procs, upstream):
    """A prefix tree on a query parameter (its first value, decoded), with
    a nested list on :path falling back to the shorter prefix."""
    qp = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestQueryParamMatchInput"
    m = f"""\
matcher_tree:
  input: {{ name: q, typed_config: {{ "@type": {qp}, query_param: mode }} }}
  prefix_match_map:
    map:
      "skip": {{ {SKIP_ACTION} }}
      "skip all":
        matcher:
          matcher_list:
            matchers:
            - predicate: {{ single_predicate: {{ {req_input("':path'")}, value_match: {{ prefix: /never }} }} }}
              on_match: {{ {SKIP_ACTION} }}
"""
    port, _, _ = start(procs, upstream, wrapped(ABORT, m))
    assert H1.request(port, "/echo?mode=skip")[0] == 200
    assert H1.request(port, "/echo?mode=skip%20all&mode=x")[0] == 200  # the nested miss falls back to "skip"
    assert H1.request(port, "/echo?mode=ski")[0] == 503
    assert H1.request(port, "/echo?x=skip&mode=no")[0] == 503
    assert H1.request(port, "/echo")[0] == 503


def test_no_matcher_skips_and_on_no_match(procs, upstream):
    """Without xds_matcher the wrapped filter is always skipped (Envoy's
    match delegate); on_no_match's SkipFilter skips what the list did not
    match, so only a matching request meets the wrapped filter."""
    port, _, _ = start(procs, upstream, wrapped(ABORT, None))
    assert H1.request(port, "/")[0] == 200
    m = f"""\
matcher_list:
  matchers:
  - predicate:
      not_matcher: {{ single_predicate: {{ {req_input("x-fault")}, value_match: {{ exact: "on" }} }} }}
    on_match: {{ {SKIP_ACTION} }}
"""
    port, _, _ = start(procs, upstream, wrapped(ABORT, m))
    assert H1.request(port, "/")[0] == 200
    assert H1.request(port, "/", headers={"x-fault": "off"})[0] == 200
    assert H1.request(port, "/", headers={"x-fault": "on"})[0] == 503


def test_per_route_config_of_wrapped_filter(procs, upstream):
    """A route's typed_per_filter_config under the wrapper's name is the
    wrapped filter's (Envoy's wrapped filter reads it through the
    wrapper's callbacks): an HTTPFault there replaces the fault config;
    FilterConfig disabled takes the wrapper out; another filter's type
    there is refused naming both."""
    per = lambda cfg: "  typed_per_filter_config:\n    with-matcher:\n" + indent(cfg, 6)
    routes = ('- match: { prefix: "/override" }\n  route: { cluster: backend }\n'
              + per(f'"@type": {FAULT}\nabort: {{ http_status: 429, percentage: {{ numerator: 100 }} }}\n')
              + '- match: { prefix: "/off" }\n  route: { cluster: backend }\n'
              + per('"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig\ndisabled: true\n')
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    port, _, _ = start(procs, upstream, wrapped(ABORT, SIMPLE), routes=routes)
    assert H1.request(port, "/any")[0] == 503
    assert H1.request(port, "/override")[0] == 429
    assert H1.request(port, "/override", headers={"some-header": "some_value_to_match_on"})[0] == 200
    assert H1.request(port, "/off")[0] == 200
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [1]}, routes=(
        '- match: { prefix: "/" }\n  route: { cluster: backend }\n'
        + per(f'"@type": {H2M}\nrequest_rules:\n- header: x\n  on_header_present: {{ key: k }}\n')))
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(wrapped(ABORT, SIMPLE), 10))
    rc, out = validate_config(y)
    assert rc != 0 and "not of this connection manager's filter 'with-matcher' (envoy.filters.http.fault)" in out, out


def test_per_route_matcher_replaces_filters(procs, upstream):
    """ExtensionWithMatcherPerRoute under the wrapper's name replaces its
    matcher for the route: there the filter-level header no longer skips,
    the route's does; an empty one matches nothing (the filter runs); a
    response header input is refused (Envoy's allowlist)."""
    ewmpr = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcherPerRoute"
    per = lambda cfg: "  typed_per_filter_config:\n    with-matcher:\n" + indent(f'"@type": {ewmpr}\n' + cfg, 6)
    route_m = (f"xds_matcher:\n  matcher_tree:\n    {req_input('x-skip')}\n"
               f"    exact_match_map: {{ map: {{ \"yes\": {{ {SKIP_ACTION} }} }} }}\n")
    routes = ('- match: { prefix: "/own" }\n  route: { cluster: backend }\n' + per(route_m)
              + '- match: { prefix: "/empty" }\n  route: { cluster: backend }\n' + per("")
              + '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    port, _, _ = start(procs, upstream, wrapped(ABORT, SIMPLE), routes=routes)
    filter_skip = {"some-header": "some_value_to_match_on"}
    assert H1.request(port, "/x", headers=filter_skip)[0] == 200
    assert H1.request(port, "/own", headers=filter_skip)[0] == 503
    assert H1.request(port, "/own", headers={"x-skip": "yes"})[0] == 200
    assert H1.request(port, "/x", headers={"x-skip": "yes"})[0] == 503
    assert H1.request(port, "/empty", headers=filter_skip)[0] == 503
    listen, admin = free_port(), free_port()
    bad_m = (f"xds_matcher:\n  matcher_tree:\n    {resp_input('x-r')}\n"
             f"    exact_match_map: {{ map: {{ a: {{ {SKIP_ACTION} }} }} }}\n")
    y = bootstrap_yaml(listen, admin, {"backend": [1]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: backend }\n' + per(bad_m))
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(wrapped(ABORT, SIMPLE), 10))
    rc, out = validate_config(y)
    assert rc != 0 and "HttpResponseHeaderMatchInput not permitted according to allowlist" in out, out


def test_deprecated_matcher(procs, upstream):
    """The deprecated `matcher` (envoy.config.common.matcher.v3) works as
    xds_matcher, with Envoy's StringMatcher (a regex without google_re2);
    xds_matcher wins when both are set; a max_program_size in it is
    refused by name."""
    m = f"""\
matcher_list:
  matchers:
  - predicate: {{ single_predicate: {{ {req_input("x-a")}, value_match: {{ safe_regex: {{ regex: "sk.p" }} }} }} }}
    on_match: {{ {SKIP_ACTION} }}
"""
    legacy = "    matcher:\n" + indent(m, 6) + "    extension_config:"
    f = wrapped(ABORT, None).replace("    extension_config:", legacy)
    port, _, _ = start(procs, upstream, f)
    assert H1.request(port, "/", headers={"x-a": "skip"})[0] == 200
    assert H1.request(port, "/", headers={"x-a": "skipped"})[0] == 503
    both = wrapped(ABORT, SIMPLE).replace("    extension_config:", legacy)
    port, _, _ = start(procs, upstream, both)
    assert H1.request(port, "/", headers={"x-a": "skip"})[0] == 503
    assert H1.request(port, "/", headers={"some-header": "some_value_to_match_on"})[0] == 200
    refused(f.replace('safe_regex: { regex: "sk.p" }',
                      'safe_regex: { google_re2: { max_program_size: 100 }, regex: "sk.p" }'),
            "matcher.matcher_list.matchers[0].predicate.single_predicate.value_match: "
            "safe_regex.google_re2.max_program_size is not supported in the deprecated matcher")


def composite(actions, header="x-pick"):
    """A composite filter in an ExtensionWithMatcher keyed on `header`, with
    ExecuteFilterAction `actions` (value -> typed_config YAML)."""
    m = f"matcher_tree:\n  {req_input(header)}\n  exact_match_map:\n    map:\n"
    for k, tc in actions.items():
        m += (f"      {k}:\n        action:\n          name: composite-action\n          typed_config:\n"
              f"            \"@type\": {EXECUTE}\n            typed_config:\n              name: f\n"
              "              typed_config:\n" + indent(tc, 16))
    return wrapped(f'"@type": {COMPOSITE}\n', m, name="composite")


@protos("h1", "h2-down")
def test_composite_executes_per_request(procs, upstream, proto):
    """The composite filter runs the ExecuteFilterAction's filter picked by
    the request header: a fault abort, or header_to_metadata copying
    x-val into metadata; no match runs nothing; the delegation counter
    counts the picks."""
    h2m = (f'"@type": {H2M}\nrequest_rules:\n- header: x-val\n'
           "  on_header_present: { metadata_namespace: m, key: k, type: STRING }\n")
    port, admin, log = start(procs, upstream, composite({"abort": ABORT, "meta": h2m}))
    s, _, b = proto.request(port, "/1", headers={"x-pick": "abort", "x-val": "v1"})
    assert s == 503 and b == b"fault filter abort"
    assert proto.request(port, "/2", headers={"x-pick": "meta", "x-val": "v2"})[0] == 200
    assert proto.request(port, "/3", headers={"x-pick": "none", "x-val": "v3"})[0] == 200
    assert proto.request(port, "/4", headers={"x-val": "v4"})[0] == 200
    assert sorted(log_lines(log, 4)) == ["200 - /2 v2", "200 - /3 -", "200 - /4 -", "503 FI /1 -"]
    assert stat(admin, "http.ingress_http.composite.filter_delegation_success") == 2
    assert stat(admin, "http.ingress_http.fault.aborts_injected") == 1


def test_composite_delay_resumes(procs, upstream):
    """composite.yaml's shape with short delays: the delegated fault filter
    stops the chain on its timer and resumes it from inside the composite
    filter (the request then reaches the upstream); the other value's
    delay is longer; no match has no delay."""
    tiny = f'"@type": {FAULT}\ndelay: {{ fixed_delay: 0.3s, percentage: {{ numerator: 100 }} }}\n'
    huge = f'"@type": {FAULT}\ndelay: {{ fixed_delay: 0.8s, percentage: {{ numerator: 100 }} }}\n'
    actions = {'"tiny fault"': tiny, '"huge fault"': huge}
    port, admin, log = start(procs, upstream, composite(actions, "x-fault-category"))
    for value, low, high in (("tiny fault", 0.3, 0.8), ("huge fault", 0.8, 5), (None, 0, 0.3)):
        t0 = time.monotonic()
        s, _, b = H1.request(port, "/echo", headers={"x-fault-category": value} if value else None)
        took = time.monotonic() - t0
        assert s == 200 and json.loads(b)["path"] == "/echo", (s, b)
        assert low <= took < high * SLOW, (value, took)
    assert stat(admin, "http.ingress_http.fault.delays_injected") == 2
    assert sorted(log_lines(log, 3)) == ["200 - /echo -", "200 DI /echo -", "200 DI /echo -"]
    # a client leaving during the delegated delay: the delay ends with the stream
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"GET /gone HTTP/1.1\r\nhost: x\r\nx-fault-category: huge fault\r\n\r\n")
        wait_for(lambda: stat(admin, "http.ingress_http.fault.active_faults") == 1, 5, "the delay to start")
    wait_for(lambda: stat(admin, "http.ingress_http.fault.active_faults") == 0, 5, "the delay to end with the stream")
    assert stat(admin, "http.ingress_http.fault.delays_injected") == 3


def refused(filters, *want):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [1]})
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(filters, 10))
    rc, out = validate_config(y)
    assert rc != 0, out
    for w in want:
        assert w in out, out


def test_bad_configs_refused():
    """Refused by name: keep_matching, custom_match, an input SHARP lacks,
    an ExecuteFilterAction outside the composite filter, its sample_percent
    and dynamic_config, an unknown action, the router wrapped, a missing
    extension_config, a deprecated `matcher` without a matcher type."""
    one = lambda on_match: (f"matcher_list:\n  matchers:\n  - predicate: {{ single_predicate: {{ {req_input('a')}, "
                            f"value_match: {{ exact: x }} }} }}\n    on_match: {on_match}\n")
    refused(wrapped(ABORT, one(f"{{ keep_matching: true, {SKIP_ACTION} }}")), "on_match.keep_matching")
    refused(wrapped(ABORT, f"matcher_tree:\n  {req_input('a')}\n  custom_match: {{ name: c, typed_config: "
                           "{ \"@type\": type.googleapis.com/xds.type.matcher.v3.ServerNameMatcher } }\n"),
            "ServerNameMatcher is not supported")
    # the network inputs are a listener's filter_chain_matcher's
    refused(wrapped(ABORT, "matcher_tree:\n  input: { name: i, typed_config: { \"@type\": type.googleapis.com/"
                           "envoy.extensions.matching.common_inputs.network.v3.SourceIPInput } }\n"
                           f"  exact_match_map: {{ map: {{ a: {{ {SKIP_ACTION} }} }} }}\n"),
            "SourceIPInput' is not supported here")
    refused(wrapped(ABORT, "matcher_tree:\n  input: { name: i, typed_config: { \"@type\": "
                           "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput } }\n"
                           f"  exact_match_map: {{ map: {{ a: {{ {SKIP_ACTION} }} }} }}\n"),
            "HttpResponseStatusCodeMatchInput is not supported by SHARP")
    execute = (f'{{ action: {{ name: x, typed_config: {{ "@type": {EXECUTE}, typed_config: {{ name: f, '
               f'typed_config: {{ "@type": {FAULT} }} }} }} }} }}')
    refused(wrapped(ABORT, one(execute)), "ExecuteFilterAction is an action of the composite filter")
    sampled = execute.replace("typed_config: { name: f,",
                              "sample_percent: { default_value: { numerator: 1 } }, typed_config: { name: f,")
    refused(wrapped(f'"@type": {COMPOSITE}\n', one(sampled)), "sample_percent")
    dyn = (f'{{ action: {{ name: x, typed_config: {{ "@type": {EXECUTE}, dynamic_config: {{ name: d, '
           'config_discovery: { config_source: { ads: {} }, type_urls: [x] } } } } }')
    refused(wrapped(f'"@type": {COMPOSITE}\n', one(dyn)), "dynamic_config")
    refused(wrapped(ABORT, one(f'{{ action: {{ name: x, typed_config: {{ "@type": {REQ_IN} }} }} }}')),
            "HttpRequestHeaderMatchInput")
    refused(wrapped('"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n', None),
            "terminal filter")
    refused(f'- name: m\n  typed_config:\n    "@type": {EWM}\n', "extension_config")
    refused(wrapped(ABORT, None).replace("    extension_config:", "    matcher: {}\n    extension_config:"),
            "http_filters[0]: matcher: one of matcher_list and matcher_tree is required")


@pytest.mark.parametrize("name", [
    "envoy__docs__root__intro__arch_overview__advanced__matching___include__simple.yaml",
    "envoy__docs__root__intro__arch_overview__advanced__matching___include__complicated.yaml",
    "envoy__docs__root__intro__arch_overview__advanced__matching___include__request_response.yaml",
    "envoy__docs__root__configuration__http__http_filters___include__composite.yaml",
])
def test_corpus_validates(name):
    with open(f"{CORPUS}/{name}") as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out
