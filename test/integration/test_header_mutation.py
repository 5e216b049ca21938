"""envoy.filters.http.header_mutation in the data path: request and response
mutations applied one by one in order (append with each append_action and
keep_empty_value, remove, pseudo-headers included), values with substitution
formatters (%REQ()%, %DOWNSTREAM_REMOTE_ADDRESS%, %RESP()%), the per-route
HeaderMutationPerRoute at route, virtual host and route table after the
filter's own, with and without most_specific_header_mutations_wins, config
errors, and the Envoy corpus config that uses it."""
import json

import pytest

from conftest import bootstrap_yaml, free_port, h1_request, h2_request, run_sharp_config, validate_config

HM = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
HMR = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute"
CORPUS = "/work/shared/envoy-corpus"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def append(key, value, action=None, keep_empty=False):
    s = f"- append:\n    header: {{ key: \"{key}\", value: \"{value}\" }}\n"
    if action:
        s += f"    append_action: {action}\n"
    if keep_empty:
        s += "    keep_empty_value: true\n"
    return s


def remove(key):
    return f"- remove: \"{key}\"\n"


def mutations(req="", resp=""):
    s = "mutations:\n"
    if req:
        s += "  request_mutations:\n" + indent(req, 2)
    if resp:
        s += "  response_mutations:\n" + indent(resp, 2)
    return s


def per_route(body):
    return f"typed_per_filter_config:\n  envoy.filters.http.header_mutation:\n    \"@type\": {HMR}\n" + indent(body, 4)


def config(upstream_port, filter_body, routes=None, vhost_extra="", table_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream_port]}, routes=routes, vhost_extra=vhost_extra)
    f = f"- name: envoy.filters.http.header_mutation\n  typed_config:\n    \"@type\": {HM}\n" + indent(filter_body, 4)
    y = y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))
    if table_extra:
        y = y.replace("            name: local_route\n", "            name: local_route\n" + indent(table_extra, 12))
    return listen, admin, y


def start(procs, upstream_port, filter_body, **kw):
    listen, admin, y = config(upstream_port, filter_body, **kw)
    run_sharp_config(procs, y, admin)
    return listen


def upstream_headers(body):
    """The request headers the path-echo upstream saw, as {name: [values]}."""
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def test_request_mutations_in_order(procs, path_upstream):
    """Each append_action as Envoy's; mutations run one after another, so a
    later one sees what an earlier one did; an empty value is skipped unless
    keep_empty_value; remove drops every value."""
    req = (append("x-app", "a1") + append("x-app", "a2", "APPEND_IF_EXISTS_OR_ADD")
           + append("x-absent", "first", "ADD_IF_ABSENT") + append("x-absent", "second", "ADD_IF_ABSENT")
           + append("x-client", "new", "OVERWRITE_IF_EXISTS_OR_ADD")
           + append("x-only-if", "no", "OVERWRITE_IF_EXISTS") + append("x-present", "yes", "OVERWRITE_IF_EXISTS")
           + append("x-empty", "") + append("x-kept-empty", "", keep_empty=True)
           + remove("X-Drop") + append("x-after-remove", "%REQ(x-drop)%")
           + append("x-from", "%REQ(x-client)%")  # sees the overwrite above
           + append("x-peer", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"))
    listen = start(procs, path_upstream.port, mutations(req=req))
    st, _, body = h1_request(listen, "/p", headers={"x-client": "old1", "x-present": "old", "x-drop": "a"})
    assert st == 200
    h = upstream_headers(body)
    assert h["x-app"] == ["a1", "a2"]
    assert h["x-absent"] == ["first"]
    assert h["x-client"] == ["new"]
    assert "x-only-if" not in h
    assert h["x-present"] == ["yes"]
    assert "x-empty" not in h
    assert h["x-kept-empty"] == [""]
    assert "x-drop" not in h and "x-after-remove" not in h
    assert h["x-from"] == ["new"]
    assert h["x-peer"] == ["127.0.0.1"]


def test_pseudo_header_and_path(procs, path_upstream):
    """Unlike route header operations, header_mutation may set :path."""
    listen = start(procs, path_upstream.port,
                   mutations(req=append(":path", "/rewritten%REQ(:path)%", "OVERWRITE_IF_EXISTS_OR_ADD")))
    st, _, body = h1_request(listen, "/orig?q=1")
    assert st == 200
    assert json.loads(body)["path"] == "/rewritten/orig?q=1"


@pytest.mark.parametrize("down", ["h1", "h2"])
@pytest.mark.parametrize("name", [":method", ":path"])
def test_removed_required_request_header(procs, path_upstream, down, name):
    """A request a mutation left without :method or :path is not sent on
    with a made-up one: the router answers 503 (Envoy's
    filter_removed_required_request_headers); other requests go on."""
    listen = start(procs, path_upstream.port, mutations(req=remove(name)))
    req = h2_request if down == "h2" else h1_request
    st, _, body = req(listen, "/x", method="POST", body=b"payload")
    assert st == 503, (st, body)
    assert body == f"missing required header: {name}".encode(), body


@pytest.mark.parametrize("down", ["h1", "h2"])
def test_response_mutations(procs, path_upstream, down):
    resp = (append("x-resp", "r1") + append("content-type", "text/x-mutated", "OVERWRITE_IF_EXISTS")
            + append("x-echo-status", "%RESP(:status)%-%REQ(x-in)%") + append("x-gone", "g") + remove("x-gone"))
    listen = start(procs, path_upstream.port, mutations(resp=resp))
    req = h2_request if down == "h2" else h1_request
    st, h, _ = req(listen, "/", headers={"x-in": "in"})
    assert st == 200
    assert h["x-resp"] == "r1"
    assert h["content-type"] == "text/x-mutated"
    assert h["x-echo-status"] == "200-in"
    assert "x-gone" not in h


def test_per_route_order(procs, path_upstream):
    """The filter's mutations first, then the per-route ones: by default the
    most specific first, so the route table's OVERWRITE wins; with
    most_specific_header_mutations_wins the route's wins."""
    def level(name):
        return per_route(mutations(req=append("x-level", name, "OVERWRITE_IF_EXISTS_OR_ADD")
                                   + append("x-trail", name),
                                   resp=append("x-level", name, "OVERWRITE_IF_EXISTS_OR_ADD")))
    routes = ("- match: { prefix: \"/plain\" }\n  route: { cluster: backend }\n"
              "- match: { prefix: \"/\" }\n  route: { cluster: backend }\n" + indent(level("route"), 2))
    for wins, want, trail in ((False, "table", ["filter", "route", "vhost", "table"]),
                              (True, "route", ["filter", "table", "vhost", "route"])):
        body = mutations(req=append("x-level", "filter") + append("x-trail", "filter"))
        if wins:
            body += "most_specific_header_mutations_wins: true\n"
        listen = start(procs, path_upstream.port, body, routes=routes, vhost_extra=level("vhost"),
                       table_extra=level("table"))
        st, h, b = h1_request(listen, "/x")
        assert st == 200
        seen = upstream_headers(b)
        assert seen["x-level"] == [want]
        assert seen["x-trail"] == trail
        assert h["x-level"] == want
        # a route without its own config: virtual host and table only
        st, h, b = h1_request(listen, "/plain")
        assert upstream_headers(b)["x-trail"] == (["filter", "vhost", "table"] if not wins
                                                  else ["filter", "table", "vhost"])


def test_local_reply_passes_encode(procs):
    """A local reply (no healthy upstream) passes the filter's encode side."""
    listen = start(procs, free_port(), mutations(resp=append("x-resp", "%RESP(:status)%")))
    st, h, _ = h1_request(listen, "/")
    assert st == 503
    assert h["x-resp"] == "503"


@pytest.mark.parametrize("body,msg", [
    ("mutations:\n  request_mutations:\n  - {}\n", "one of remove or append is required"),
    ("mutations:\n  request_mutations:\n  - append: { header: { key: \"\", value: v } }\n", "key"),
    ("mutations:\n  response_mutations:\n  - append: { header: { key: a, value: \"%BOGUS%\" } }\n",
     "response_mutations[0]"),
    ("mutations:\n  request_mutations:\n  - append: { header: { key: a, value: v }, append: true,"
     " append_action: ADD_IF_ABSENT }\n", "Both append and append_action"),
    ("mutations:\n  query_parameter_mutations: []\n", "query_parameter_mutations"),
    # a response left without a valid :status (Envoy answers 502 after the
    # filters): refused
    ("mutations:\n  response_mutations:\n  - remove: \":status\"\n",
     "response_mutations[0]: a header mutation may not change a response's :status"),
    ("mutations:\n  response_mutations:\n  - append: { header: { key: \":status\", value: abc } }\n",
     "response_mutations[0]: a header mutation may not change a response's :status"),
])
def test_config_errors(body, msg):
    _, _, y = config(free_port(), body)
    rc, out = validate_config(y)
    assert rc != 0
    assert msg in out


def test_corpus_ratelimit_example_passes_header_mutation():
    """The rate limit example (envoyproxy/ratelimit) loads whole: its
    header_mutation filter and its rate limit filter's per-route rate_limits."""
    rc, out = validate_config(open(f"{CORPUS}/ratelimit__examples__envoy__proxy.yaml").read())
    assert "header_mutation" not in out and "set_header" not in out, out
    assert rc == 0, out
