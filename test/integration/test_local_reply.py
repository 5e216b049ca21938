"""The connection manager's local_reply_config (Envoy's "local reply
modification"), the access log's `filter`, and the route's response headers
on the router's local replies, checked with curl against the real proxy."""
import json
import os
import subprocess
import tempfile
import textwrap
import time

import pytest

from conftest import Sharp, bootstrap_yaml, free_port, protos, run_sharp_config, SHARP


def curl(url, *args, proto=None):
    """(status, {lower-case name: [values]}, body bytes) of one request,
    over HTTP/2 with prior knowledge when proto's client side is HTTP/2."""
    h2 = ["--http2-prior-knowledge"] if proto is not None and proto.down == "h2" else []
    r = subprocess.run(["curl", "-s", "-i", "--max-time", "10", *h2, *args, url], capture_output=True, timeout=20)
    raw = r.stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return status, hdrs, body


def dead_port():
    """A port nothing listens on: connecting fails at once (503 UF)."""
    return free_port()


def indent(text, n):
    return textwrap.indent(textwrap.dedent(text), " " * n)


ROUTES = """\
- match: { prefix: "/direct" }
  direct_response: { status: 200, body: { inline_string: "direct body" } }
- match: { prefix: "/status" }
  route: { cluster: backend }
- match: { prefix: "/echo" }
  route: { cluster: backend }
- match: { prefix: "/dead" }
  route: { cluster: dead }
"""


# Local replies are encoded by the downstream codec: the tests about their
# status, headers, body (and HEAD) run with an HTTP/2 client too.
def curl_over(proto):
    return lambda url, *args: curl(url, *args, proto=proto)


def start(procs, upstream, local_reply="", hcm_extra="", routes=ROUTES, vhost_extra="", concurrency=1):
    listen, admin = free_port(), free_port()
    extra = hcm_extra
    if local_reply:
        extra += "local_reply_config:\n" + indent(local_reply, 2)
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "dead": [dead_port()]}, routes=routes,
                       hcm_extra=extra, vhost_extra=vhost_extra)
    run_sharp_config(procs, y, admin, concurrency=concurrency)
    return f"http://127.0.0.1:{listen}"


# ---- local_reply_config -------------------------------------------------------

@protos("h1", "h2-down")
def test_mapper_by_status_rewrites_code_and_body(procs, proto, upstream):
    get = curl_over(proto)
    url = start(procs, upstream, """\
        mappers:
        - filter:
            status_code_filter:
              comparison: { op: EQ, value: { default_value: 503, runtime_key: lr.code } }
          status_code: 502
          body: { inline_string: "the backend is away" }
        """)
    st, h, body = get(url + "/dead")
    assert st == 502
    assert body == b"the backend is away"
    assert h["content-type"] == ["text/plain"]
    assert h["content-length"] == [str(len(body))]
    # not matched: the router's own 404 stays as it is (no body)
    st, h, body = get(url + "/nowhere")
    assert st == 404 and body == b""
    assert "content-type" not in h
    # upstream responses are never rewritten
    st, _, _ = get(url + "/status/503")
    assert st == 503


def test_mapper_by_header_adds_headers(procs, upstream):
    url = start(procs, upstream, """\
        mappers:
        - filter:
            header_filter:
              header: { name: x-debug, string_match: { exact: "1" } }
          body: { inline_string: "debug reply" }
          headers_to_add:
          - header: { key: x-mapped, value: "%RESPONSE_CODE%-%REQ(x-debug)%" }
        """)
    st, h, body = curl(url + "/nowhere", "-H", "x-debug: 1")
    assert st == 404
    assert body == b"debug reply"
    assert h["x-mapped"] == ["404-1"]
    st, h, body = curl(url + "/nowhere", "-H", "x-debug: 2")
    assert st == 404 and body == b"" and "x-mapped" not in h


def test_and_or_filters_and_first_match_wins(procs, upstream):
    url = start(procs, upstream, """\
        mappers:
        - filter:
            and_filter:
              filters:
              - status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: a } } }
              - header_filter: { header: { name: x-tenant, present_match: true } }
          status_code: 504
          body: { inline_string: "first" }
        - filter:
            or_filter:
              filters:
              - status_code_filter: { comparison: { op: EQ, value: { default_value: 404, runtime_key: b } } }
              - status_code_filter: { comparison: { op: LE, value: { default_value: 503, runtime_key: c } } }
          body: { inline_string: "second" }
        """)
    st, _, body = curl(url + "/dead", "-H", "x-tenant: t")
    assert (st, body) == (504, b"first")
    st, _, body = curl(url + "/dead")  # and_filter fails: the or_filter's LE 503 matches
    assert (st, body) == (503, b"second")
    st, _, body = curl(url + "/nowhere")
    assert (st, body) == (404, b"second")


def test_body_format_text_and_local_reply_body(procs, upstream):
    url = start(procs, upstream, """\
        body_format:
          text_format: "[%RESPONSE_CODE%] %LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%) %REQ(x-missing)%"
        """)
    st, h, body = curl(url + "/dead")
    assert st == 503
    assert body.startswith(b"[503] upstream connect error or disconnect/reset before headers.")
    assert b"(upstream_reset_before_response_started{" in body
    assert body.endswith(b" -")
    assert h["content-type"] == ["text/plain"]
    # a reply without a body gets one from the format
    st, h, body = curl(url + "/nowhere")
    assert st == 404
    assert body == b"[404]  (route_not_found) -"
    assert h["content-length"] == [str(len(body))]
    # direct responses are local replies too
    st, _, body = curl(url + "/direct")
    assert (st, body) == (200, b"[200] direct body (direct_response) -")


def test_body_format_omit_empty_values_and_content_type(procs, upstream):
    url = start(procs, upstream, """\
        body_format:
          text_format: "<p>%LOCAL_REPLY_BODY%|%REQ(x-missing)%</p>"
          content_type: "text/html; charset=UTF-8"
          omit_empty_values: true
        """)
    st, h, body = curl(url + "/nowhere")
    assert st == 404
    assert body == b"<p>|</p>"
    assert h["content-type"] == ["text/html; charset=UTF-8"]


def test_body_format_json(procs, upstream):
    url = start(procs, upstream, """\
        body_format:
          json_format:
            code: "%RESPONSE_CODE%"
            message: "%LOCAL_REPLY_BODY%"
            path: "%REQ(:PATH)%"
            flags: "%RESPONSE_FLAGS%"
            detail: { list: [ "%REQ(:PATH)%", 7 ], missing: "%REQ(x-none)%" }
        """)
    st, h, body = curl(url + "/dead/x")
    assert st == 503
    assert h["content-type"] == ["application/json"]
    assert body.endswith(b"\n")
    doc = json.loads(body)
    assert doc["code"] == 503
    assert doc["path"] == "/dead/x"
    assert doc["flags"] == "UF"
    assert doc["message"].startswith("upstream connect error")
    assert doc["detail"] == {"list": ["/dead/x", 7], "missing": None}


@protos("h1", "h2-down")
def test_body_format_override_and_status_rewrite_in_access_log(procs, proto, upstream):
    get = curl_over(proto)
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-lr-"), "access.log")
    url = start(procs, upstream, """\
        mappers:
        - filter:
            response_flag_filter: { flags: [NR] }
          status_code: 418
          body_format_override:
            json_format: { error: "%LOCAL_REPLY_BODY%", status: "%RESPONSE_CODE%" }
          body: { inline_string: "no such route" }
        body_format:
          text_format: "text: %LOCAL_REPLY_BODY%"
        """, hcm_extra=f"""\
access_log:
- name: envoy.access_loggers.file
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
    path: {log}
    log_format: {{ text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS%\\n" }}
""")
    st, h, body = get(url + "/nowhere")
    assert st == 418
    assert h["content-type"] == ["application/json"]
    assert json.loads(body) == {"error": "no such route", "status": 418}
    st, h, body = get(url + "/dead")
    assert st == 503 and body.startswith(b"text: upstream connect error")
    lines = wait_lines(log, 2)
    assert "/nowhere 418 NR" in lines
    assert "/dead 503 UF" in lines


@protos("h1", "h2-down")
def test_body_from_file(procs, proto, upstream, tmp_path):
    get = curl_over(proto)
    page = tmp_path / "maint.html"
    page.write_bytes(b"<h1>maintenance</h1>\n")
    url = start(procs, upstream, f"""\
        mappers:
        - filter:
            status_code_filter: {{ comparison: {{ op: GE, value: {{ default_value: 500, runtime_key: k }} }} }}
          body: {{ filename: {page} }}
          headers_to_add:
          - header: {{ key: content-type, value: text/html }}
        """)
    st, h, body = get(url + "/dead")
    assert st == 503
    assert body == b"<h1>maintenance</h1>\n"
    # the mapper's own content-type is kept
    assert h["content-type"] == ["text/html"]
    # HEAD: the length of the body, no body
    st, h, body = get(url + "/dead", "-I")
    assert st == 503 and h["content-length"] == [str(len(b"<h1>maintenance</h1>\n"))] and body == b""


def test_body_format_from_file_source(procs, upstream, tmp_path):
    fmt = tmp_path / "reply.txt"
    fmt.write_text("code=%RESPONSE_CODE% body=%LOCAL_REPLY_BODY%")
    url = start(procs, upstream, f"""\
        body_format:
          text_format_source: {{ filename: {fmt} }}
        """)
    st, h, body = curl(url + "/direct")
    assert (st, body) == (200, b"code=200 body=direct body")
    assert h["content-type"] == ["text/plain"]


# ---- route response headers on the router's local replies ---------------------

HEADER_ROUTES = """\
- match: { prefix: "/direct" }
  direct_response: { status: 200, body: { inline_string: "direct body" } }
  response_headers_to_add: [ { header: { key: x-route, value: direct } } ]
- match: { prefix: "/dead" }
  route: { cluster: dead }
  response_headers_to_add: [ { header: { key: x-route, value: dead } } ]
- match: { prefix: "/slow" }
  route: { cluster: backend, timeout: 0.3s }
  response_headers_to_add: [ { header: { key: x-route, value: slow } } ]
- match: { prefix: "/only" }
  route: { cluster: backend }
- match: { prefix: "/retried" }
  route: { cluster: dead, retry_policy: { retry_on: connect-failure, num_retries: 2 } }
- match: { prefix: "/empty" }
  route: { cluster: empty }
  response_headers_to_add: [ { header: { key: x-route, value: empty } } ]
"""


@protos("h1", "h2-both")
def test_router_local_replies_carry_response_headers_to_add(procs, proto, upstream):
    get = curl_over(proto)
    upstream = proto.upstream(procs) if proto.up == "h2" else upstream
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port], "dead": [dead_port()], "empty": []},
                       routes=HEADER_ROUTES, cluster_extra=proto.cluster,
                       vhost_extra="response_headers_to_add: [ { header: { key: x-vhost, value: v } } ]\n"
                                   "include_attempt_count_in_response: true\n")
    y = y.replace("            name: local_route\n",
                  "            name: local_route\n"
                  "            response_headers_to_add: [ { header: { key: x-table, value: t } } ]\n")
    run_sharp_config(procs, y, admin)
    url = f"http://127.0.0.1:{listen}"
    # connection failure: 503 from the router
    st, h, _ = get(url + "/dead")
    assert st == 503
    assert h.get("x-route") == ["dead"] and h.get("x-vhost") == ["v"] and h.get("x-table") == ["t"]
    assert h.get("x-envoy-attempt-count") == ["1"]
    # after two retries: the attempt count, as on upstream responses
    st, h, _ = get(url + "/retried")
    assert st == 503 and h.get("x-envoy-attempt-count") == ["3"]
    # no host at all: no attempt was made
    st, h, body = get(url + "/empty")
    assert (st, body) == (503, b"no healthy upstream")
    assert h.get("x-route") == ["empty"] and h.get("x-vhost") == ["v"] and h.get("x-table") == ["t"]
    assert "x-envoy-attempt-count" not in h
    # route timeout: 504 from the router
    st, h, _ = get(url + "/slow?delay_ms=3000")
    assert st == 504
    assert h.get("x-route") == ["slow"] and h.get("x-vhost") == ["v"] and h.get("x-table") == ["t"]
    # direct response: once each, with its text/plain body
    st, h, body = get(url + "/direct")
    assert (st, body) == (200, b"direct body")
    assert h.get("x-route") == ["direct"] and h.get("x-vhost") == ["v"] and h.get("x-table") == ["t"]
    assert h["content-type"] == ["text/plain"]
    # no route: no route entry, so no route, virtual host or table headers
    st, h, _ = get(url + "/none")
    assert st == 404
    assert "x-vhost" not in h and "x-table" not in h and "x-route" not in h


# ---- access log filters ---------------------------------------------------------

def wait_lines(path, n, timeout=6):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            lines = [ln for ln in open(path).read().splitlines() if ln]
            if len(lines) >= n:
                break
        time.sleep(0.1)
    return lines


def settle(path, expect, timeout=3):
    """Waits for `expect` lines, then a little more to see that no other line comes."""
    lines = wait_lines(path, expect, timeout)
    time.sleep(1.5)
    return [ln for ln in open(path).read().splitlines() if ln] if os.path.exists(path) else lines


def logs_yaml(logs):
    """access_log entries: {path: filter yaml (or "")}."""
    out = "access_log:\n"
    for path, flt in logs.items():
        out += ("- name: envoy.access_loggers.file\n"
                + (("  filter:\n" + indent(flt, 4)) if flt else "")
                + "  typed_config:\n"
                "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
                f"    path: {path}\n"
                "    log_format: { text_format: \"%REQ(:PATH)% %RESPONSE_CODE%\\n\" }\n")
    return out


def test_access_log_status_code_and_response_flag_filters(procs, upstream):
    d = tempfile.mkdtemp(prefix="sharp-alf-")
    errors, nr, dur, hdr = (os.path.join(d, n) for n in ("errors.log", "nr.log", "dur.log", "hdr.log"))
    url = start(procs, upstream, hcm_extra=logs_yaml({
        errors: "status_code_filter: { comparison: { op: GE, value: { default_value: 500, runtime_key: sk } } }\n",
        nr: "response_flag_filter: { flags: [NR] }\n",
        dur: "duration_filter: { comparison: { op: GE, value: { default_value: 100000, runtime_key: dk } } }\n",
        hdr: "header_filter: { header: { name: x-log, string_match: { prefix: ye } } }\n",
    }))
    assert curl(url + "/echo")[0] == 200
    assert curl(url + "/status/503")[0] == 503
    assert curl(url + "/nowhere", "-H", "x-log: yes")[0] == 404
    assert curl(url + "/dead", "-H", "x-log: no")[0] == 503
    assert sorted(settle(errors, 2)) == ["/dead 503", "/status/503 503"]
    assert settle(nr, 1) == ["/nowhere 404"]
    assert settle(hdr, 1) == ["/nowhere 404"]
    assert settle(dur, 0) == []


def test_access_log_not_health_check_filter(procs, upstream):
    d = tempfile.mkdtemp(prefix="sharp-alf-")
    log = os.path.join(d, "a.log")
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=logs_yaml({log: "not_health_check_filter: {}\n"}))
    marker = "          http_filters:\n"
    y = y.replace(marker, marker +
                  "          - name: envoy.filters.http.health_check\n"
                  "            typed_config:\n"
                  "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
                  "              pass_through_mode: false\n"
                  "              headers: [ { name: \":path\", string_match: { exact: /healthz } } ]\n")
    run_sharp_config(procs, y, admin, concurrency=1)
    url = f"http://127.0.0.1:{listen}"
    assert curl(url + "/healthz")[0] == 200
    assert curl(url + "/echo")[0] == 200
    assert settle(log, 1) == ["/echo 200"]


def test_access_log_runtime_filter(procs, upstream):
    d = tempfile.mkdtemp(prefix="sharp-alf-")
    half, none, all_ = (os.path.join(d, n) for n in ("half.log", "none.log", "all.log"))
    url = start(procs, upstream, hcm_extra=logs_yaml({
        half: "runtime_filter: { runtime_key: a, percent_sampled: { numerator: 50, denominator: HUNDRED } }\n",
        none: "runtime_filter: { runtime_key: b }\n",
        all_: ("runtime_filter: { runtime_key: c, percent_sampled: { numerator: 100 },"
               " use_independent_randomness: true }\n"),
    }) + "preserve_external_request_id: true\n")
    # x-request-id decides: 0x31 % 100 = 49 < 50 is sampled, 0x32 % 100 = 50 is not
    assert curl(url + "/echo?a", "-H", "x-request-id: 00000031-0000-4000-8000-000000000000")[0] == 200
    assert curl(url + "/echo?b", "-H", "x-request-id: 00000032-0000-4000-8000-000000000000")[0] == 200
    assert settle(half, 1) == ["/echo?a 200"]
    assert settle(none, 0) == []
    assert len(settle(all_, 2)) == 2


# ---- configuration errors ------------------------------------------------------------

def validate(procs, upstream, local_reply="", hcm_extra=""):
    listen, admin = free_port(), free_port()
    extra = hcm_extra + (("local_reply_config:\n" + indent(local_reply, 2)) if local_reply else "")
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=extra)
    d = tempfile.mkdtemp(prefix="sharp-lrv-")
    cfg = os.path.join(d, "b.yaml")
    open(cfg, "w").write(y)
    r = subprocess.run([SHARP, "-c", cfg, "--mode", "validate"], capture_output=True, timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode()


@pytest.mark.parametrize("local_reply,expect", [
    ("mappers:\n- status_code: 500\n", "mappers[0].filter"),
    ("mappers:\n- filter: { not_health_check_filter: {} }\n  status_code: 600\n", "status_code"),
    ("mappers:\n- filter: { and_filter: { filters: [ { not_health_check_filter: {} } ] } }\n", "at least 2"),
    ("mappers:\n- filter: { response_flag_filter: { flags: [XX] } }\n", "unknown response flag \"XX\""),
    ("mappers:\n- filter: { traceable_filter: {} }\n", "tracing"),
    ("mappers:\n- filter: { grpc_status_filter: { statuses: [NOPE] } }\n", "NOPE"),
    ("mappers:\n- filter: { status_code_filter: { comparison: { value: { default_value: 1 } } } }\n",
     "runtime_key"),
    ("mappers:\n- filter: {}\n", "filter"),
    ("body_format: { text_format: \"%NOPE%\" }\n", "unknown command operator %NOPE%"),
    ("body_format: { content_type: text/html }\n", "one of text_format, json_format or text_format_source"),
    ("mappers:\n- filter: { not_health_check_filter: {} }\n  body: { filename: /nonexistent/x }\n", "/nonexistent/x"),
])
def test_invalid_local_reply_config_is_refused(procs, upstream, local_reply, expect):
    rc, out = validate(procs, upstream, local_reply)
    assert rc != 0, out
    assert expect in out, out


def test_valid_local_reply_config_validates(procs, upstream):
    rc, out = validate(procs, upstream, "mappers:\n- filter: { not_health_check_filter: {} }\n  status_code: 599\n")
    assert rc == 0, out


def test_admin_access_log_filter(procs):
    admin = free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-alf-"), "admin.log")
    y = (f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n"
         "  access_log:\n"
         "  - name: envoy.access_loggers.file\n"
         "    filter: { status_code_filter: { comparison: { op: EQ, value: { default_value: 404, runtime_key: k } } } }\n"
         "    typed_config:\n"
         "      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
         f"      path: {log}\n"
         "      log_format: { text_format: \"%REQ(:PATH)% %RESPONSE_CODE%\\n\" }\n")
    s = Sharp(y)
    procs.append(s)
    s.wait_ready(admin)
    url = f"http://127.0.0.1:{admin}"
    assert curl(url + "/ready")[0] == 200
    assert curl(url + "/no-such-admin-page")[0] == 404
    assert settle(log, 1) == ["/no-such-admin-page 404"]
