"""envoy.filters.http.header_to_metadata in the data path, observed through
the access log's %DYNAMIC_METADATA(...)%: request rules on headers
(present, missing, every value joined with ',', remove), cookies, the
regex_value_rewrite of Envoy's docs on :path, NUMBER, PROTOBUF_VALUE and
BASE64 values, the 8 KiB value limit, response rules, a route's
typed_per_filter_config replacing the filter's rules, typed values in a
JSON log format, the opt-in stats, configs Envoy refuses, and the Envoy
corpus bootstraps."""
import base64
import json
import os
import shutil
import struct
import tempfile

import pytest

from conftest import (PROTOS, bootstrap_yaml, file_access_log, free_port, log_lines, protos, raw_request,
                      run_sharp_config, stat, validate_config)

H1 = PROTOS["h1"]
TYPE = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
CORPUS = "/work/shared/envoy-corpus"
PREFIX = "envoy__docs__root__configuration__http__http_filters___include__header-to-metadata-filter"

VERSION_RULES = """\
request_rules:
- header: x-version
  on_header_present: { metadata_namespace: envoy.lb, key: version, type: STRING }
  on_header_missing: { metadata_namespace: envoy.lb, key: default, value: "true", type: STRING }
  remove: false
"""


def with_filter(yaml_text, cfg):
    f = f"- name: envoy.filters.http.header_to_metadata\n  typed_config:\n    \"@type\": {TYPE}\n" + "".join(
        "    " + ln + "\n" for ln in cfg.splitlines())
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n" for ln in f.splitlines()))


def start(procs, upstream, cfg, fmt, routes=None, hcm_extra=None):
    listen, admin = free_port(), free_port()
    al, path = file_access_log(fmt)
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes,
                       hcm_extra=hcm_extra if hcm_extra is not None else al)
    run_sharp_config(procs, with_filter(y, cfg), admin)
    return listen, admin, path


def echoed(body):
    """The request headers the test upstream echoed: name -> list of values."""
    out = {}
    for k, v in json.loads(body)["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def pb_string(s):
    """A serialized google.protobuf.Value holding the string s."""
    b = s.encode()
    return b"\x1a" + bytes([len(b)]) + b


def pb_struct(fields):
    """A serialized google.protobuf.Value {struct_value: fields}, fields a
    list of (key, serialized Value)."""
    st = b""
    for k, v in fields:
        kb = k.encode()
        entry = b"\x0a" + bytes([len(kb)]) + kb + b"\x12" + bytes([len(v)]) + v
        st += b"\x0a" + bytes([len(entry)]) + entry
    return b"\x2a" + bytes([len(st)]) + st


@protos("h1", "h2-down")
def test_present_missing_and_remove(procs, upstream, proto):
    """A present header's value goes into envoy.lb (all its values joined
    with ','), a missing one sets on_header_missing's value; remove takes
    the header off the request before the upstream sees it; a namespace
    without a key prints as its JSON struct; an absent key is '-'."""
    cfg = VERSION_RULES + """\
- header: x-secret
  on_header_present: { key: secret }
  remove: true
"""
    fmt = ("v=%DYNAMIC_METADATA(envoy.lb:version)% d=%DYNAMIC_METADATA(envoy.lb:default)% "
           "s=%DYNAMIC_METADATA(envoy.filters.http.header_to_metadata:secret)% "
           "all=%DYNAMIC_METADATA(envoy.lb)% none=%DYNAMIC_METADATA(nope:x)%\\n")
    port, _, path = start(procs, upstream, cfg, fmt)
    st, _, b = proto.request(port, "/echo", headers={"x-version": "1.0", "x-secret": "s3"})
    assert st == 200
    seen = echoed(b)
    assert "x-secret" not in seen and seen["x-version"] == ["1.0"]
    st, _, _ = proto.request(port, "/echo")
    assert st == 200
    if proto.down == "h1":
        # two values of one header: joined with ',' as Envoy's getAllOfHeaderAsString
        st, _, _, _ = raw_request(port, b"GET /echo HTTP/1.1\r\nhost: x\r\nx-version: a\r\nx-version: b\r\n"
                                        b"connection: close\r\n\r\n")
        assert st == 200
    want = ['v=1.0 d=- s=s3 all={"version":"1.0"} none=-', 'v=- d=true s=- all={"default":"true"} none=-']
    if proto.down == "h1":
        want.append('v=a,b d=- s=- all={"version":"a,b"} none=-')
    assert sorted(log_lines(path, len(want))) == sorted(want)


def test_cookie_and_corpus_regex_rewrite(procs, upstream):
    """A cookie rule takes the cookie's value (quotes removed), its
    on_header_missing applies without it; the regex substitution of Envoy's
    docs takes the cluster name from :path, and a path it does not match
    keeps its whole value."""
    cfg = """\
request_rules:
- cookie: cookie
  on_header_present: { metadata_namespace: envoy.lb, key: version, type: STRING }
  on_header_missing: { metadata_namespace: envoy.lb, key: default, value: "true", type: STRING }
  remove: false
- header: ":path"
  on_header_present:
    metadata_namespace: envoy.lb
    key: cluster
    regex_value_rewrite:
      pattern: { regex: "^/(cluster[\\\\d\\\\w-]+)/?.*$" }
      substitution: "\\\\1"
"""
    fmt = "%DYNAMIC_METADATA(envoy.lb:version)% %DYNAMIC_METADATA(envoy.lb:default)% %DYNAMIC_METADATA(envoy.lb:cluster)%\\n"
    port, _, path = start(procs, upstream, cfg, fmt)
    H1.request(port, "/cluster-a1/echo", headers={"cookie": 'a=1; cookie="v2"; b=2'})
    H1.request(port, "/echo", headers={"cookie": "other=1"})
    assert sorted(log_lines(path, 2)) == sorted(["v2 - cluster-a1", "- true /echo"])


def test_types_encodings_and_limits(procs, upstream):
    """NUMBER is parsed as absl::SimpleAtod (blanks around allowed) and
    prints as a JSON number; a value that is not a number adds nothing.
    PROTOBUF_VALUE takes a serialized google.protobuf.Value (here base64
    encoded): a struct prints as JSON with sorted keys, a string plainly;
    bad base64 adds nothing. A value of 8192 bytes or more adds nothing, one
    byte less does. :N cuts the printed value."""
    cfg = """\
request_rules:
- header: x-num
  on_header_present: { metadata_namespace: t, key: num, type: NUMBER }
- header: x-pb
  on_header_present: { metadata_namespace: t, key: pb, type: PROTOBUF_VALUE, encode: BASE64 }
- header: x-b64
  on_header_present: { metadata_namespace: t, key: b64, encode: BASE64 }
- header: x-long
  on_header_present: { metadata_namespace: t, key: long }
"""
    fmt = ("n=%DYNAMIC_METADATA(t:num)% pb=%DYNAMIC_METADATA(t:pb)% pbz=%DYNAMIC_METADATA(t:pb:z)% "
           "b=%DYNAMIC_METADATA(t:b64)% cut=%DYNAMIC_METADATA(t:b64):3% long=%DYNAMIC_METADATA(t:long):5%\\n")
    port, _, path = start(procs, upstream, cfg, fmt)
    pb = pb_struct([("z", pb_string("last")), ("a", b"\x11" + struct.pack("<d", 2.5)), ("b", b"\x20\x01")])
    H1.request(port, "/echo", headers={"x-num": " 42 ", "x-pb": base64.b64encode(pb).decode(),
                                       "x-b64": base64.b64encode(b"hello").decode().rstrip("="),
                                       "x-long": "x" * 8191})
    H1.request(port, "/echo", headers={"x-num": "4two", "x-pb": "!!!", "x-b64": "aGVsbG8===",
                                       "x-long": "x" * 8192})
    assert sorted(log_lines(path, 2)) == sorted([
        'n=42 pb={"a":2.5,"b":true,"z":"last"} pbz=last b=hello cut=hel long=xxxxx',
        "n=- pb=- pbz=- b=- cut=- long=-"])


def test_response_rules_and_stats(procs, upstream):
    """Response rules read the response headers (remove takes the header
    off the client's response); with stat_prefix Envoy's counters count
    rules processed, metadata added and headers not found per direction,
    and values too long."""
    cfg = """\
stat_prefix: h2m
request_rules:
- header: x-version
  on_header_present: { key: version }
  on_header_missing: { key: default, value: "yes" }
- header: x-long
  on_header_present: { key: long }
response_rules:
- header: x-upstream-name
  on_header_present: { metadata_namespace: resp, key: up }
  remove: true
"""
    fmt = "%DYNAMIC_METADATA(resp:up)% %DYNAMIC_METADATA(envoy.filters.http.header_to_metadata)%\\n"
    port, admin, path = start(procs, upstream, cfg, fmt)
    st, h, _ = H1.request(port, "/echo", headers={"x-version": "7", "x-long": "y" * 9000})
    assert st == 200 and "x-upstream-name" not in {k.lower() for k in h}
    H1.request(port, "/echo")
    assert sorted(log_lines(path, 2)) == sorted(['upstream {"version":"7"}', 'upstream {"default":"yes"}'])
    p = "http_filter_name.h2m."
    assert stat(admin, p + "request_rules_processed") == 4
    assert stat(admin, p + "request_metadata_added") == 2
    assert stat(admin, p + "request_header_not_found") == 1
    assert stat(admin, p + "header_value_too_long") == 1
    assert stat(admin, p + "response_rules_processed") == 2
    assert stat(admin, p + "response_metadata_added") == 2
    assert stat(admin, p + "response_header_not_found") == 0
    assert stat(admin, p + "base64_decode_failed") == 0


def test_per_route_config_replaces_rules(procs, upstream):
    """A route's typed_per_filter_config replaces the filter's rules for
    its requests (the filter's on_header_missing does not apply there);
    other routes keep the filter's rules."""
    routes = f"""\
- match: {{ prefix: "/version-to-metadata" }}
  route: {{ cluster: backend, prefix_rewrite: /echo }}
  typed_per_filter_config:
    envoy.filters.http.header_to_metadata:
      "@type": {TYPE}
      request_rules:
      - header: x-version
        on_header_present: {{ metadata_namespace: envoy.lb, key: route_version, type: STRING }}
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
"""
    fmt = "%DYNAMIC_METADATA(envoy.lb)%\\n"
    port, _, path = start(procs, upstream, VERSION_RULES, fmt, routes=routes)
    H1.request(port, "/version-to-metadata", headers={"x-version": "9"})
    H1.request(port, "/version-to-metadata")
    H1.request(port, "/echo", headers={"x-version": "9"})
    assert sorted(log_lines(path, 3)) == sorted(['{"route_version":"9"}', "-", '{"version":"9"}'])


def test_typed_values_in_json_format(procs, upstream):
    """In a JSON log format a lone %DYNAMIC_METADATA% keeps its type: a
    struct is an object, a number a number, a missing value null."""
    cfg = """\
request_rules:
- header: x-num
  on_header_present: { metadata_namespace: t, key: num, type: NUMBER }
"""
    listen, admin = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="sharp-h2m-")
    path = os.path.join(d, "access.log")
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    path: {path}\n"
          "    log_format: { json_format: { all: \"%DYNAMIC_METADATA(t)%\", num: \"%DYNAMIC_METADATA(t:num)%\", "
          "none: \"%DYNAMIC_METADATA(t:x)%\", text: \"n=%DYNAMIC_METADATA(t:num)%\" } }\n")
    try:
        y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=al)
        run_sharp_config(procs, with_filter(y, cfg), admin)
        H1.request(listen, "/echo", headers={"x-num": "1e6"})
        line = json.loads(log_lines(path, 1)[0])
        assert line == {"all": {"num": 1000000}, "num": 1000000, "none": None, "text": "n=1e+06"}, line
    finally:
        shutil.rmtree(d, ignore_errors=True)


BAD = [
    ("request_rules: [{ header: x-a, cookie: c, on_header_present: { key: k } }]",
     "Cannot specify both header and cookie in the same rule"),
    ("request_rules: [{ on_header_present: { key: k } }]", "One of Cookie or Header option needs to be specified"),
    ("request_rules: [{ header: x-a }]", "has neither `on_header_present` nor `on_header_missing` set"),
    ("request_rules: [{ cookie: c, remove: true, on_header_present: { key: k } }]", "Cannot specify remove for cookie"),
    ("request_rules: [{ header: x-a, on_header_missing: { key: k } }]",
     "Cannot specify on_header_missing rule with an empty value"),
    ("request_rules: [{ header: x-a, on_header_present: { key: k, value: v, regex_value_rewrite: "
     "{ pattern: { regex: a }, substitution: b } } }]", "Cannot specify both value and regex_value_rewrite"),
    ("request_rules: [{ header: x-a, on_header_present: { key: \"\" } }]", "key"),
    ("request_rules: [{ header: x-a, on_header_present: { key: k, regex_value_rewrite: "
     "{ pattern: { regex: \"(\" }, substitution: b } } }]", "regex"),
]


@pytest.mark.parametrize("cfg,msg", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_configs_refused(cfg, msg):
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}), cfg)
    rc, out = validate_config(y)
    assert rc != 0 and msg in out, out


def test_per_route_configs_refused():
    """An empty per-route config is an error in Envoy; SHARP also refuses a
    per-route stat_prefix (its own stats), naming it."""
    for per_route, msg in (("{}", "Per filter configs must at least specify either request or response rules"),
                           ("{ stat_prefix: r, request_rules: [{ header: x, on_header_present: { key: k } }] }",
                            "stat_prefix")):
        routes = (f'- match: {{ prefix: "/" }}\n  route: {{ cluster: backend }}\n  typed_per_filter_config:\n'
                  f'    envoy.filters.http.header_to_metadata: {{ "@type": {TYPE}, ' + per_route.strip("{} ") + " }\n")
        routes = routes.replace(", }", " }")
        y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}, routes=routes), "")
        rc, out = validate_config(y)
        assert rc != 0 and msg in out, out


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus")
def test_corpus_bootstraps():
    """The filter's examples from Envoy's docs load, the first with the
    subset load balancing its metadata selects (test_subset_lb.py runs it)."""
    for suffix in ("", "-cookies", "-regex-substitution", "-route-config"):
        with open(os.path.join(CORPUS, PREFIX + suffix + ".yaml")) as f:
            rc, out = validate_config(f.read())
        assert rc == 0, (suffix, out)
