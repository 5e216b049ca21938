"""envoy.filters.http.local_ratelimit in the data path: one token bucket per
filter config shared by every worker (exact 429 counts over many
connections), refill after the fill interval, the per-route config's own
bucket, filter_enabled/filter_enforced at 0% (nothing done / only counted),
response_headers_to_add and the RL response flag on the local reply,
request headers when not enforced, x-ratelimit headers, gRPC status,
Envoy's stats, descriptors from the route rate_limits, refused fields, and
the Envoy corpus bootstraps."""
import json
import os
import time

import pytest

from conftest import (PROTOS, bootstrap_yaml, free_port, log_lines, protos, run_sharp_config, stat, validate_config)

H1 = PROTOS["h1"]
TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
CORPUS = "/work/shared/envoy-corpus"


def lrl(max_tokens=3, fill="60s", per_fill=None, enabled=100, enforced=100, extra="", prefix="lrl"):
    text = f"""\
"@type": {TYPE}
stat_prefix: {prefix}
"""
    if max_tokens is not None:
        text += f"token_bucket: {{ max_tokens: {max_tokens}, fill_interval: {fill}"
        text += f", tokens_per_fill: {per_fill} }}\n" if per_fill else " }\n"
    if enabled is not None:
        text += f"filter_enabled: {{ runtime_key: lrl_enabled, default_value: {{ numerator: {enabled} }} }}\n"
    if enforced is not None:
        text += f"filter_enforced: {{ runtime_key: lrl_enforced, default_value: {{ numerator: {enforced} }} }}\n"
    return text + extra


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.local_ratelimit\n  typed_config:\n" + "".join(
        "    " + ln + "\n" for ln in cfg.splitlines())
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n" for ln in f.splitlines()))


def start(procs, upstream, cfg, routes=None, access_log=None):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, access_log=access_log)
    run_sharp_config(procs, with_filter(y, cfg), admin)
    return listen, admin


def statuses(proto, port, n, path="/echo", headers=None):
    out = []
    for _ in range(n):
        s, h, b = proto.request(port, path, headers=headers)
        out.append((s, h, b))
    return out


@protos("h1", "h2-down")
def test_burst_limited_exactly(procs, upstream, proto):
    """max_tokens 3 and no refill within the test: 3 requests pass, the
    rest get 429 "local_rate_limited", each on its own connection (so on
    both workers: the bucket is shared)."""
    port, admin = start(procs, upstream, lrl(3, "60s"))
    rs = statuses(proto, port, 8)
    assert [s for s, _, _ in rs] == [200] * 3 + [429] * 5
    for s, h, b in rs[3:]:
        assert b == b"local_rate_limited"
        assert "x-envoy-ratelimited" not in h
    assert stat(admin, "lrl.http_local_rate_limit.enabled") == 8
    assert stat(admin, "lrl.http_local_rate_limit.ok") == 3
    assert stat(admin, "lrl.http_local_rate_limit.rate_limited") == 5
    assert stat(admin, "lrl.http_local_rate_limit.enforced") == 5


def test_refill_after_interval(procs, upstream):
    """2 tokens refilled per second: after the burst is spent and a fill
    interval has passed, 2 requests pass again."""
    port, admin = start(procs, upstream, lrl(2, "1s", per_fill=2))
    assert [s for s, _, _ in statuses(H1, port, 4)] == [200, 200, 429, 429]
    time.sleep(1.2)
    assert [s for s, _, _ in statuses(H1, port, 3)] == [200, 200, 429]


def test_disabled_and_not_enforced(procs, upstream):
    """filter_enabled absent (0%): nothing happens, nothing counted.
    enabled 100% and enforced 0%: rate limited requests are counted, go
    upstream with request_headers_to_add_when_not_enforced."""
    port, admin = start(procs, upstream, lrl(1, "60s", enabled=None, enforced=None))
    assert [s for s, _, _ in statuses(H1, port, 3)] == [200] * 3
    assert stat(admin, "lrl.http_local_rate_limit.enabled") == 0

    extra = "request_headers_to_add_when_not_enforced:\n- header: { key: x-rl-shadow, value: limited }\n"
    port, admin = start(procs, upstream, lrl(1, "60s", enforced=0, extra=extra, prefix="shadow"))
    rs = statuses(H1, port, 3)
    assert [s for s, _, _ in rs] == [200] * 3
    seen = [dict((k.lower(), v) for k, v in json.loads(b)["headers"]).get("x-rl-shadow") for _, _, b in rs]
    assert seen == [None, "limited", "limited"]
    assert stat(admin, "shadow.http_local_rate_limit.enabled") == 3
    assert stat(admin, "shadow.http_local_rate_limit.ok") == 1
    assert stat(admin, "shadow.http_local_rate_limit.rate_limited") == 2
    assert stat(admin, "shadow.http_local_rate_limit.enforced") == 0


def test_local_reply_headers_status_and_flag(procs, upstream, tmp_path):
    """response_headers_to_add on the 429 only; a custom status; RL in
    %RESPONSE_FLAGS% (the access log's default format)."""
    extra = ("status: { code: ServiceUnavailable }\n"
             "response_headers_to_add:\n- append_action: OVERWRITE_IF_EXISTS_OR_ADD\n"
             "  header: { key: x-local-rate-limit, value: 'true' }\n")
    log = str(tmp_path / "access.log")
    port, admin = start(procs, upstream, lrl(1, "60s", extra=extra), access_log=log)
    (s1, h1, _), (s2, h2, b2) = statuses(H1, port, 2)
    assert s1 == 200 and "x-local-rate-limit" not in h1
    assert s2 == 503 and h2["x-local-rate-limit"] == "true" and b2 == b"local_rate_limited"
    # the two workers write their lines in either order
    lines = sorted(log_lines(log, 2), key=lambda ln: '" 503 RL ' in ln)
    assert '" 200 - ' in lines[0] and '" 503 RL ' in lines[1], lines


def test_status_below_400_is_429(procs, upstream):
    port, _ = start(procs, upstream, lrl(1, "60s", extra="status: { code: OK }\n"))
    assert [s for s, _, _ in statuses(H1, port, 2)] == [200, 429]


def test_x_ratelimit_headers(procs, upstream):
    """DRAFT_VERSION_03: limit, remaining after this request, and the
    seconds until the next token, on passed and limited responses."""
    port, _ = start(procs, upstream, lrl(2, "60s", extra="enable_x_ratelimit_headers: DRAFT_VERSION_03\n"))
    rs = statuses(H1, port, 3)
    assert [s for s, _, _ in rs] == [200, 200, 429]
    assert [h["x-ratelimit-limit"] for _, h, _ in rs] == ["2"] * 3
    assert [h["x-ratelimit-remaining"] for _, h, _ in rs] == ["1", "0", "0"]
    assert rs[0][1]["x-ratelimit-reset"] == "0"
    # no token left: the next one comes in (about) a whole fill interval
    assert 55 <= int(rs[2][1]["x-ratelimit-reset"]) <= 60


def test_without_x_ratelimit_headers(procs, upstream):
    port, _ = start(procs, upstream, lrl(1, "60s"))
    for _, h, _ in statuses(H1, port, 2):
        assert not any(k.startswith("x-ratelimit") for k in h)


def test_per_route_bucket(procs, upstream):
    """The connection manager's filter has no bucket (every request passes
    there); a route's typed_per_filter_config brings its own bucket, which
    only that route uses; another route's config overrides the filter's.
    A request a route's config decides counts in that config's stats
    (<its stat_prefix>.http_local_rate_limit.*), as Envoy counts in the
    effective config's, the others in the filter's."""
    routes = f"""\
- match: {{ prefix: "/echo/limited" }}
  route: {{ cluster: backend }}
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
{"".join("      " + ln + chr(10) for ln in lrl(2, "60s", prefix="route").splitlines())}
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
"""
    port, admin = start(procs, upstream, lrl(None, prefix="lrl"), routes=routes)
    assert [s for s, _, _ in statuses(H1, port, 4, path="/echo/free")] == [200] * 4
    assert [s for s, _, _ in statuses(H1, port, 4, path="/echo/limited")] == [200, 200, 429, 429]
    assert [s for s, _, _ in statuses(H1, port, 2, path="/echo/free")] == [200] * 2
    assert stat(admin, "route.http_local_rate_limit.enabled") == 4
    assert stat(admin, "route.http_local_rate_limit.ok") == 2
    assert stat(admin, "route.http_local_rate_limit.rate_limited") == 2
    assert stat(admin, "route.http_local_rate_limit.enforced") == 2
    assert stat(admin, "lrl.http_local_rate_limit.enabled") == 6
    assert stat(admin, "lrl.http_local_rate_limit.ok") == 6
    assert stat(admin, "lrl.http_local_rate_limit.rate_limited") == 0

    # the filter's own bucket (1 token) and a route with a bigger one
    port, _ = start(procs, upstream, lrl(1, "60s", prefix="lrl2"), routes=routes)
    assert [s for s, _, _ in statuses(H1, port, 3, path="/echo/limited")] == [200, 200, 429]
    assert [s for s, _, _ in statuses(H1, port, 2, path="/echo/free")] == [200, 429]


def test_grpc_status(procs, upstream):
    """A rate limited gRPC request: HTTP 200 with grpc-status UNAVAILABLE
    (14), or RESOURCE_EXHAUSTED (8) with rate_limited_as_resource_exhausted."""
    grpc = {"content-type": "application/grpc", "te": "trailers"}
    port, _ = start(procs, upstream, lrl(1, "60s"))
    rs = statuses(PROTOS["h2-down"], port, 2, headers=grpc)
    assert rs[1][0] == 200 and rs[1][1]["grpc-status"] == "14"
    port, _ = start(procs, upstream, lrl(1, "60s", extra="rate_limited_as_resource_exhausted: true\n"))
    rs = statuses(PROTOS["h2-down"], port, 2, headers=grpc)
    assert rs[1][0] == 200 and rs[1][1]["grpc-status"] == "8"
    # not gRPC: no grpc-status on the plain 429
    rs = statuses(H1, port, 1)
    assert rs[0][0] == 429 and "grpc-status" not in rs[0][1]


def keepalive(port, n, path="/echo"):
    """n requests on one HTTP/1.1 connection; their statuses and headers."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        out = []
        for _ in range(n):
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}))
        return out
    finally:
        c.close()


def test_per_connection_buckets(procs, upstream):
    """local_rate_limit_per_downstream_connection: each connection has its
    own 2 tokens, whatever the other connections took."""
    extra = "local_rate_limit_per_downstream_connection: true\nenable_x_ratelimit_headers: DRAFT_VERSION_03\n"
    port, admin = start(procs, upstream, lrl(2, "60s", extra=extra))
    for _ in range(3):
        rs = keepalive(port, 4)
        assert [s for s, _ in rs] == [200, 200, 429, 429]
        assert [h["x-ratelimit-remaining"] for _, h in rs] == ["1", "0", "0", "0"]
    assert stat(admin, "lrl.http_local_rate_limit.rate_limited") == 6
    # without it, one bucket for all connections
    port, _ = start(procs, upstream, lrl(2, "60s", prefix="shared"))
    assert [s for s, _ in keepalive(port, 3)] == [200, 200, 429]
    assert [s for s, _ in keepalive(port, 2)] == [429, 429]


@pytest.mark.parametrize("cfg,msg", [
    (lrl(3, "0.049s"), "fill timer must be >= 50ms"),
    (lrl(0, "1s"), "max_tokens"),
    (lrl(3, "1s", extra="descriptors:\n- entries: [{ key: a, value: b }]\n"), "token_bucket"),
    (lrl(3, "1s", extra="local_cluster_rate_limit: {}\n"), "local_cluster_rate_limit"),
    (lrl(3, "1s", extra="stage: 11\n"), "stage"),
    (lrl(3, "1s", prefix="''"), "stat_prefix"),
], ids=["fill_interval", "max_tokens", "descriptors", "local_cluster", "stage", "stat_prefix"])
def test_refused_configs(cfg, msg):
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}), cfg)
    rc, out = validate_config(y)
    assert rc == 1 and msg in out, out


def test_per_route_needs_bucket():
    routes = f"""\
- match: {{ prefix: "/" }}
  route: {{ cluster: backend }}
  typed_per_filter_config:
    envoy.filters.http.local_ratelimit:
{"".join("      " + ln + chr(10) for ln in lrl(None).splitlines())}
"""
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}, routes=routes), lrl(None))
    rc, out = validate_config(y)
    assert rc == 1 and "token bucket must be set for per filter configs" in out, out


DESC_ROUTES = """\
- match: { prefix: "/" }
  route:
    cluster: backend
    rate_limits:
    - actions: [{ request_headers: { header_name: x-client, descriptor_key: client } }]
    - disable_key: dk
      actions: [{ request_headers: { header_name: x-client, descriptor_key: client } }]
    - stage: 1
      actions: [{ generic_key: { descriptor_value: one } }]
"""
DESCRIPTORS = """\
descriptors:
- entries: [{ key: client, value: a }]
  token_bucket: { max_tokens: 2, fill_interval: 60s }
- entries: [{ key: client, value: b }]
  token_bucket: { max_tokens: 1, fill_interval: 60s }
"""


def test_descriptors(procs, upstream):
    """descriptors: a request whose route rate_limits make a configured
    descriptor takes a token from that descriptor's bucket (refused: 429
    with that bucket's x-ratelimit headers), and from the default bucket
    too (always_consume_default_token_bucket); one matching none takes from
    the default bucket only. A RateLimit with a disable_key, or of another
    stage, gives nothing."""
    port, admin = start(procs, upstream, lrl(5, extra="enable_x_ratelimit_headers: DRAFT_VERSION_03\n" + DESCRIPTORS),
                        routes=DESC_ROUTES)
    a = statuses(H1, port, 3, headers={"x-client": "a"})
    assert [s for s, _, _ in a] == [200, 200, 429]
    assert a[2][1].get("x-ratelimit-limit") == "2" and a[2][1].get("x-ratelimit-remaining") == "0"
    assert a[2][2] == b"local_rate_limited"
    assert [s for s, _, _ in statuses(H1, port, 2, headers={"x-client": "b"})] == [200, 429]
    # the default bucket gave a token to each request a descriptor let
    # through: 3 of 5 are gone
    c = statuses(H1, port, 3, headers={"x-client": "c"})
    assert [s for s, _, _ in c] == [200, 200, 429]
    assert c[0][1].get("x-ratelimit-limit") == "5"
    assert stat(admin, "lrl.http_local_rate_limit.rate_limited") == 3


def test_many_descriptors_all_count(procs, upstream):
    """A request that makes more than 16 configured descriptors takes a
    token from each of their buckets (the 17th was ignored)."""
    n = 17
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: backend\n    rate_limits:\n'
              + "".join(f"    - actions: [{{ generic_key: {{ descriptor_value: d{i} }} }}]\n" for i in range(n)))
    descs = "descriptors:\n" + "".join(
        f"- entries: [{{ key: generic_key, value: d{i} }}]\n"
        f"  token_bucket: {{ max_tokens: {1 if i == n - 1 else 100}, fill_interval: 60s }}\n" for i in range(n))
    port, admin = start(procs, upstream, lrl(100, extra=descs), routes=routes)
    assert [s for s, _, _ in statuses(H1, port, 2)] == [200, 429]
    assert stat(admin, "lrl.http_local_rate_limit.rate_limited") == 1


def test_descriptors_without_default_consumption(procs, upstream):
    """always_consume_default_token_bucket false: a request a descriptor
    decides leaves the default bucket alone."""
    port, _ = start(procs, upstream, lrl(1, extra="always_consume_default_token_bucket: false\n" + DESCRIPTORS),
                    routes=DESC_ROUTES)
    assert [s for s, _, _ in statuses(H1, port, 3, headers={"x-client": "a"})] == [200, 200, 429]
    assert [s for s, _, _ in statuses(H1, port, 2, headers={"x-client": "c"})] == [200, 429]


@pytest.mark.parametrize("extra,msg", [
    (DESCRIPTORS + "- entries: [{ key: client, value: a }]\n  token_bucket: { max_tokens: 2, fill_interval: 60s }\n",
     "duplicate descriptor in the local rate descriptor: client=a"),
    ("descriptors:\n- entries: [{ key: client, value: '' }]\n  token_bucket: { max_tokens: 2, fill_interval: 60s }\n",
     "descriptors[0].entries[0].value"),
    ("descriptors:\n- entries: [{ key: client, value: a }]\n  token_bucket: { max_tokens: 2, fill_interval: 0.01s }\n",
     "descriptor token bucket fill timer must be >= 50ms"),
    (DESCRIPTORS + "local_rate_limit_per_downstream_connection: true\n", "local_rate_limit_per_downstream_connection"),
])
def test_descriptors_refused(extra, msg):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [1]}, routes=DESC_ROUTES)
    rc, out = validate_config(with_filter(y, lrl(5, extra=extra)))
    assert rc != 0 and msg in out, out


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus")
@pytest.mark.parametrize("name,refusal", [
    ("envoy__docs__root__configuration__http__http_filters___include__local-rate-limit-global-configuration.yaml",
     None),
    ("envoy__docs__root__configuration__http__http_filters___include__local-rate-limit-route-specific-configuration"
     ".yaml", None),
    ("envoy__docs__root__configuration__http__http_filters___include__local-rate-limit-with-descriptors.yaml",
     None),
    ("examples__local_ratelimit__envoy.yaml", None),
])
def test_corpus(name, refusal):
    with open(os.path.join(CORPUS, name)) as f:
        rc, out = validate_config(f.read())
    if refusal is None:
        assert rc == 0, out
    else:
        assert rc == 1 and refusal in out, out
