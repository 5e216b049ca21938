"""Retries (route/virtual-host retry_policy and the x-envoy-retry-on headers),
per-try timeouts, the retry breaker and overflow replies, against real
sharp-test-upstream processes whose faults are switched with /admin/fault."""
import json
import time

from conftest import bootstrap_yaml, free_port, protos, run_sharp_config, stat, upstream_admin

# Each test runs with HTTP/1 on both sides and with HTTP/2 on both sides
# (the client over prior knowledge, the upstream an --h2 test upstream):
# retries, per-try timeouts and body replay are the router's, whatever the
# codecs; an HTTP/2 upstream's reset is an RST_STREAM, not a closed socket.
BOTH = protos("h1", "h2-both")


def ups(procs, proto, *names):
    return [proto.upstream(procs, n) for n in names]


def fault(u, q=""):
    u.admin_calls = getattr(u, "admin_calls", 0) + 1
    upstream_admin(u, "/admin/fault" + q)


def upstream_requests(u):
    """Requests the upstream served, not counting our admin calls."""
    u.admin_calls = getattr(u, "admin_calls", 0) + 1
    return upstream_admin(u, "/admin/stats")["requests"] - u.admin_calls


def req(proto, port, path="/", method="GET", headers=None, body=None, timeout=10):
    return proto.request(port, path, method=method, headers=headers, body=body, timeout=timeout)


# The tests send x-envoy-retry-on and friends, which Envoy honours only from
# internal clients: the loopback client is made internal as Envoy requires
# (its own address, no x-forwarded-for, listed in internal_address_config).
TRUST_LOOPBACK = """\
use_remote_address: true
internal_address_config:
  cidr_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }]
"""


def start(procs, proto, ports, retry_policy=None, cluster_extra="", vhost_extra="", access_log=None,
          hcm_extra=TRUST_LOOPBACK):
    listen, admin = free_port(), free_port()
    route = "- match: { prefix: \"/\" }\n  route:\n    cluster: b\n"
    if retry_policy:
        route += "    retry_policy:\n" + "".join("      " + l + "\n" for l in retry_policy.strip().splitlines())
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"b": ports}, routes=route, cluster_extra=cluster_extra + proto.cluster,
                                           vhost_extra=vhost_extra, access_log=access_log, hcm_extra=hcm_extra),
                     admin)
    return listen, admin


@BOTH
def test_retry_5xx_moves_to_another_host(procs, proto):
    bad, good = ups(procs, proto, "bad", "good")
    fault(bad, "?status=503")
    listen, admin = start(procs, proto, [bad.port, good.port], """
retry_on: 5xx
num_retries: 2
retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]
host_selection_retry_max_attempts: 3
retry_back_off: { base_interval: 0.005s }
""")
    for _ in range(40):
        st, h, body = req(proto, listen)
        assert st == 200 and h["x-upstream-name"] == "good", (st, h, body)
    bad_n = upstream_requests(bad)
    assert bad_n >= 10  # round robin sends first tries there
    assert stat(admin, "cluster.b.upstream_rq_retry") == bad_n
    assert stat(admin, "cluster.b.upstream_rq_retry_success") == bad_n
    assert stat(admin, "cluster.b.upstream_rq_503") == bad_n
    assert stat(admin, "cluster.b.upstream_rq_200") == 40
    assert stat(admin, "cluster.b.upstream_rq_retry_limit_exceeded") == 0


@BOTH
def test_retry_limit_exceeded_urx(procs, proto, tmp_path):
    (bad,) = ups(procs, proto, "bad")
    fault(bad, "?status=503")
    log = str(tmp_path / "access.log")
    listen, admin = start(procs, proto, [bad.port], "retry_on: 5xx\nnum_retries: 2\nretry_back_off: { base_interval: 0.005s }",
                          access_log=log)
    st, h, body = req(proto, listen)
    assert st == 503 and body == b"status 503\n"  # the upstream's own response is passed on
    assert upstream_requests(bad) == 3
    assert stat(admin, "cluster.b.upstream_rq_retry") == 2
    assert stat(admin, "cluster.b.upstream_rq_retry_limit_exceeded") == 1
    assert stat(admin, "cluster.b.upstream_rq_retry_success") == 0
    deadline = time.time() + 5
    while time.time() < deadline and "URX" not in open(log).read():
        time.sleep(0.05)
    assert " 503 URX " in open(log).read()


@BOTH
def test_retry_on_headers_without_policy(procs, proto):
    bad, good = ups(procs, proto, "bad", "good")
    fault(bad, "?status=502")
    listen, admin = start(procs, proto, [bad.port, good.port])
    # No policy and no header: the 502 goes to the client (each worker's
    # round robin alternates, and one of the two serves at least 4 of these).
    codes = [req(proto, listen, "/echo")[0] for _ in range(8)]
    assert set(codes) == {200, 502}, codes
    # x-envoy-retry-on / x-envoy-max-retries: retried, and consumed.
    # An external client's are removed before routing, as in Envoy: not retried.
    ext_listen, ext_admin = start(procs, proto, [bad.port, bad.port], hcm_extra="")
    st, _, _ = req(proto, ext_listen, "/echo", headers={"x-envoy-retry-on": "gateway-error", "x-envoy-max-retries": "3"})
    assert st == 502
    assert stat(ext_admin, "cluster.b.upstream_rq_retry") == 0
    for _ in range(6):
        st, h, body = req(proto, listen, "/echo", headers={"x-envoy-retry-on": "gateway-error", "x-envoy-max-retries": "3"})
        assert st == 200, (st, body)
        names = [k.lower() for k, _ in json.loads(body)["headers"]]
        assert "x-envoy-retry-on" not in names and "x-envoy-max-retries" not in names
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 3
    # retriable-status-codes from the header
    fault(bad, "?status=418")
    for _ in range(4):
        st, _, _ = req(proto, listen, headers={"x-envoy-retry-on": "retriable-status-codes",
                                        "x-envoy-retriable-status-codes": "500, 418"})
        assert st == 200


@BOTH
def test_retry_connect_failure_and_reset(procs, proto):
    (good, flaky) = ups(procs, proto, "good", "flaky")
    dead = free_port()  # nothing listens there
    listen, admin = start(procs, proto, [dead, good.port], "retry_on: connect-failure\nnum_retries: 3\n"
                          "retry_back_off: { base_interval: 0.005s }")
    for _ in range(20):
        st, h, _ = req(proto, listen)
        assert st == 200 and h["x-upstream-name"] == "good"
    assert stat(admin, "cluster.b.upstream_cx_connect_fail") >= 5
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 5

    fault(flaky, "?reset=1")
    listen2, admin2 = start(procs, proto, [flaky.port, good.port], "retry_on: reset\nnum_retries: 2\n"
                            "retry_back_off: { base_interval: 0.005s }")
    for _ in range(20):
        st, h, _ = req(proto, listen2)
        assert st == 200 and h["x-upstream-name"] == "good"
    assert stat(admin2, "cluster.b.upstream_rq_retry") >= 5
    # connect-failure alone does not retry a reset: the client sees it
    listen3, admin3 = start(procs, proto, [flaky.port], "retry_on: connect-failure\nnum_retries: 2")
    st, _, body = req(proto, listen3)
    assert st == 503 and (b"reset" in body or b"termination" in body), body
    assert stat(admin3, "cluster.b.upstream_rq_retry") == 0


@BOTH
def test_per_try_timeout_retries_elsewhere(procs, proto):
    hang, good = ups(procs, proto, "hang", "good")
    fault(hang, "?hang=1")
    listen, admin = start(procs, proto, [hang.port, good.port], "retry_on: 5xx\nnum_retries: 2\nper_try_timeout: 0.2s\n"
                          "retry_back_off: { base_interval: 0.005s }")
    t0 = time.time()
    for _ in range(6):
        st, h, _ = req(proto, listen, headers={})
        assert st == 200 and h["x-upstream-name"] == "good"
    assert time.time() - t0 < 6 * 0.2 + 3
    n = stat(admin, "cluster.b.upstream_rq_per_try_timeout")
    assert n >= 2 and stat(admin, "cluster.b.upstream_rq_retry") == n
    # Without retries the per-try timeout is a 504 UT.
    listen2, admin2 = start(procs, proto, [hang.port], "retry_on: connect-failure\nnum_retries: 1\nper_try_timeout: 0.2s")
    t0 = time.time()
    st, h, body = req(proto, listen2, headers={"x-envoy-upstream-rq-per-try-timeout-ms": "150"})
    assert st == 504 and body == b"upstream request timeout" and time.time() - t0 < 2


@BOTH
def test_retry_replays_the_request_body(procs, proto):
    bad, good = ups(procs, proto, "bad", "good")
    fault(bad, "?status=503")
    listen, admin = start(procs, proto, [bad.port, good.port], "retry_on: 5xx\nnum_retries: 1\n"
                          "retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]")
    body = bytes(range(256)) * 400  # 100 KiB
    for _ in range(6):
        st, h, out = req(proto, listen, "/echo", method="POST", body=body, headers={"content-type": "application/octet-stream"})
        assert st == 200, out
        assert json.loads(out)["body_bytes"] == len(body)
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 2


@BOTH
def test_retry_breaker_overflow_and_budget(procs, proto):
    (bad,) = ups(procs, proto, "bad")
    fault(bad, "?status=503")
    cb = "circuit_breakers:\n  thresholds:\n  - { priority: DEFAULT, max_retries: 0 }\n"
    listen, admin = start(procs, proto, [bad.port], "retry_on: 5xx\nnum_retries: 3", cluster_extra=cb)
    st, _, body = req(proto, listen)
    assert st == 503 and body == b"status 503\n"
    assert upstream_requests(bad) == 1
    assert stat(admin, "cluster.b.upstream_rq_retry_overflow") == 1
    assert stat(admin, "cluster.b.upstream_rq_retry") == 0
    # A retry budget with a floor of one concurrent retry allows a retry.
    cb2 = ("circuit_breakers:\n  thresholds:\n  - priority: DEFAULT\n"
           "    retry_budget: { budget_percent: { value: 0 }, min_retry_concurrency: 1 }\n")
    listen2, admin2 = start(procs, proto, [bad.port], "retry_on: 5xx\nnum_retries: 1\nretry_back_off: { base_interval: 0.005s }",
                            cluster_extra=cb2)
    st, _, _ = req(proto, listen2)
    assert st == 503
    assert stat(admin2, "cluster.b.upstream_rq_retry") == 1
    assert stat(admin2, "cluster.b.upstream_rq_retry_limit_exceeded") == 1


@BOTH
def test_overflow_reply_says_overloaded_and_attempt_count(procs, proto):
    (u,) = ups(procs, proto, "u")
    cb = "circuit_breakers:\n  thresholds:\n  - { priority: DEFAULT, max_requests: 0 }\n"
    listen, admin = start(procs, proto, [u.port], cluster_extra=cb)
    st, h, body = req(proto, listen)
    assert st == 503 and h.get("x-envoy-overloaded") == "true", (st, h)
    assert upstream_requests(u) == 0

    bad, good = ups(procs, proto, "bad", "good")
    fault(bad, "?status=503")
    listen2, admin2 = start(procs, proto, [bad.port, good.port],
                       "retry_on: 5xx\nnum_retries: 2\nretry_back_off: { base_interval: 0.005s }",
                       vhost_extra="include_request_attempt_count: true\ninclude_attempt_count_in_response: true\n")
    # Each worker's round robin sends first tries to the bad host (its retry
    # takes the good host's turn): the answer comes from the second try.
    for _ in range(6):
        st, h, body = req(proto, listen2, "/echo")
        assert st == 200
        hdrs = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
        assert hdrs["x-envoy-attempt-count"] == h["x-envoy-attempt-count"]
        assert h["x-envoy-attempt-count"] in ("1", "2")
    assert upstream_requests(bad) >= 1 and stat(admin2, "cluster.b.upstream_rq_retry") == upstream_requests(bad)


@BOTH
def test_route_timeout_covers_retries(procs, proto):
    (hang,) = ups(procs, proto, "hang")
    fault(hang, "?hang=1")
    listen, admin = start(procs, proto, [hang.port], "retry_on: 5xx\nnum_retries: 10\nper_try_timeout: 0.2s")
    t0 = time.time()
    st, _, body = req(proto, listen, headers={"x-envoy-upstream-rq-timeout-ms": "700"})
    took = time.time() - t0
    assert st == 504 and body == b"upstream request timeout"
    assert 0.6 < took < 2.5, took
    assert 1 <= stat(admin, "cluster.b.upstream_rq_retry") <= 4
    assert stat(admin, "cluster.b.upstream_rq_timeout") == 1


@BOTH
def test_retry_while_the_body_still_streams(procs, proto):
    """The first try is reset while the client is still sending its chunked
    body: the retry replays what was sent and streams the rest."""
    bad, good = ups(procs, proto, "bad", "good")
    fault(bad, "?reset=1")
    listen, admin = start(procs, proto, [bad.port, good.port], "retry_on: reset\nnum_retries: 2\n"
                          "retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts }]\n"
                          "retry_back_off: { base_interval: 0.005s }")
    for _ in range(3):
        # HTTP/1: chunked; HTTP/2: DATA frames; 50 ms apart
        pieces = [bytes([65 + i]) * 3000 for i in range(5)]
        st, _, body = proto.request(listen, "/echo", method="POST", chunks=pieces, chunk_delay=0.05)
        assert st == 200, body
        assert json.loads(body)["body_bytes"] == sum(map(len, pieces))
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 1
