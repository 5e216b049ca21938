"""The bootstrap's layered_runtime: layers, /runtime, /runtime_modify, runtime
keys read on the data path (route runtime_fraction, weighted clusters'
runtime_key_prefix, adaptive concurrency's enabled flag), disk layers and
Envoy's validation errors."""
import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter

from conftest import (bootstrap_yaml, free_port, run_sharp_config, SLOW, stat, Upstream, validate_config as
                      validate)


def req(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    r.read()
    c.close()
    return r


def admin(port, path, method="GET", body=None, headers=None):
    """(status, text) of an admin request."""
    r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def modify(port, query):
    r = admin(port, "/runtime_modify?" + query, method="POST")
    # workers take the new snapshot at their next wake-up, as Envoy's
    # thread-local posts: give them that moment
    time.sleep(0.05)
    return r


def runtime(port):
    status, text = admin(port, "/runtime")
    assert status == 200, text
    return json.loads(text)


def with_runtime(yaml_text, layers):
    return yaml_text + "layered_runtime:\n  layers:\n" + layers


FRACTION_ROUTES = """\
- match:
    prefix: /
    runtime_fraction:
      default_value: { numerator: 0, denominator: HUNDRED }
      runtime_key: routing.canary
  route: { cluster: canary }
- match: { prefix: / }
  route: { cluster: stable }
"""


def upstreams(procs, *names):
    us = [Upstream(n) for n in names]
    procs.extend(us)
    return {n: [u.port] for n, u in zip(names, us)}


def who(port, n):
    return Counter(req(port, "/echo").getheader("x-upstream-name") for _ in range(n))


def test_runtime_fraction_switched_by_runtime_modify(procs):
    """A route's runtime_fraction reads its runtime_key from the runtime:
    the static layer gives 0%, /runtime_modify 100%, a FractionalPercent and
    removal of the override; every worker sees each change."""
    clusters = upstreams(procs, "canary", "stable")
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, clusters, routes=FRACTION_ROUTES),
                     "  - name: base\n    static_layer: { routing: { canary: 0 } }\n"
                     "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap, concurrency=3)
    assert who(listen, 20) == Counter({"stable": 20})
    assert modify(ap, "routing.canary=100") == (200, "OK\n")
    # a new connection per request: they spread over the three workers
    assert who(listen, 30) == Counter({"canary": 30})
    # a FractionalPercent in YAML: 1 in a million is (almost) never
    assert modify(ap, "routing.canary=%7Bnumerator%3A%201%2C%20denominator%3A%20MILLION%7D")[0] == 200
    assert runtime(ap)["entries"]["routing.canary"]["final_value"] == "{numerator: 1, denominator: MILLION}"
    assert who(listen, 20) == Counter({"stable": 20})
    # above 100 as a whole number: always
    assert modify(ap, "routing.canary=250")[0] == 200
    assert who(listen, 10) == Counter({"canary": 10})
    # about half with 50%
    assert modify(ap, "routing.canary=50")[0] == 200
    seen = who(listen, 200)
    assert 50 < seen["canary"] < 150 and seen["canary"] + seen["stable"] == 200, seen
    # an empty value removes the override: the static layer's 0 again
    assert modify(ap, "routing.canary=")[0] == 200
    assert who(listen, 20) == Counter({"stable": 20})
    assert "routing.canary" in runtime(ap)["entries"]
    assert stat(ap, "runtime.admin_overrides_active") == 0


def test_runtime_output_and_stats(procs):
    """/runtime as Envoy prints it: layer names, every key with its value per
    layer and the final value; static layers flatten nested maps; runtime.*
    stats."""
    clusters = upstreams(procs, "b")
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, clusters), """\
  - name: base
    static_layer:
      a.flat: 5000
      nested: { x: { y: "text" }, flag: true, half: 0.5 }
      pct: { numerator: 5, denominator: TEN_THOUSAND }
  - name: over
    static_layer: { a.flat: 7 }
  - name: admin
    admin_layer: {}
""")
    run_sharp_config(procs, y, ap)
    rt = runtime(ap)
    assert rt["layers"] == ["base", "over", "admin"]
    e = rt["entries"]
    assert sorted(e) == ["a.flat", "nested.flag", "nested.half", "nested.x.y", "pct"]
    assert e["a.flat"] == {"final_value": "7", "layer_values": ["5000", "7", ""]}
    assert e["nested.x.y"] == {"final_value": "text", "layer_values": ["text", "", ""]}
    assert e["nested.flag"]["final_value"] == "true"
    assert e["nested.half"]["final_value"] == "0.5"
    assert e["pct"]["final_value"] == "denominator: TEN_THOUSAND\nnumerator: 5"
    assert stat(ap, "runtime.num_layers") == 3
    assert stat(ap, "runtime.num_keys") == 5
    assert stat(ap, "runtime.load_success") == 1
    assert stat(ap, "runtime.load_error") == 0
    assert stat(ap, "runtime.admin_overrides_active") == 0
    # an override shows in the admin layer's column; a new key adds a key
    assert modify(ap, "a.flat=9&new.key=abc") == (200, "OK\n")
    e = runtime(ap)["entries"]
    assert e["a.flat"] == {"final_value": "9", "layer_values": ["5000", "7", "9"]}
    assert e["new.key"] == {"final_value": "abc", "layer_values": ["", "", "abc"]}
    assert stat(ap, "runtime.num_keys") == 6
    assert stat(ap, "runtime.admin_overrides_active") == 1
    assert stat(ap, "runtime.load_success") == 2
    # form values when there is no query, as Envoy
    status, text = admin(ap, "/runtime_modify", "POST", b"a.flat=&new.key=",
                         {"content-type": "application/x-www-form-urlencoded"})
    assert (status, text) == (200, "OK\n")
    assert "new.key" not in runtime(ap)["entries"]
    assert runtime(ap)["entries"]["a.flat"]["final_value"] == "7"
    assert stat(ap, "runtime.admin_overrides_active") == 0
    # Envoy's usage text, and POST required
    status, text = admin(ap, "/runtime_modify", "POST", b"")
    assert status == 400 and text.startswith("usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n")
    assert "use an empty value to remove a previously added override" in text
    status, text = admin(ap, "/runtime_modify?a=1")
    assert status == 405 and "POST required" in text
    assert runtime(ap)["entries"]["a.flat"]["final_value"] == "7"


def test_admin_layer_missing(procs):
    """Without layered_runtime Envoy has no layers at all, so /runtime_modify
    fails with 503 "No admin layer specified"; layered_runtime without layers
    gets one admin layer named ""."""
    clusters = upstreams(procs, "b")
    listen, ap = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, ap, clusters), ap)
    assert runtime(ap) == {"layers": [], "entries": {}}
    assert modify(ap, "x=1") == (503, "No admin layer specified")
    assert stat(ap, "runtime.num_layers") == 0

    listen2, ap2 = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen2, ap2, clusters) + "layered_runtime: {}\n", ap2)
    assert modify(ap2, "x=1") == (200, "OK\n")
    assert runtime(ap2) == {"layers": [""], "entries": {"x": {"final_value": "1", "layer_values": ["1"]}}}

    # a static layer only: no admin layer either
    listen3, ap3 = free_port(), free_port()
    run_sharp_config(procs, with_runtime(bootstrap_yaml(listen3, ap3, clusters),
                                         "  - name: s\n    static_layer: { k: v }\n"), ap3)
    assert modify(ap3, "k=w") == (503, "No admin layer specified")
    assert runtime(ap3)["entries"]["k"]["final_value"] == "v"


def test_validation_errors():
    base = bootstrap_yaml(free_port(), free_port(), {"b": [1]})
    rc, out = validate(with_runtime(base, "  - name: a\n    admin_layer: {}\n  - name: a\n    static_layer: {}\n"))
    assert rc == 1 and "layered_runtime.layers[1].name: Duplicate layer name: a" in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n    admin_layer: {}\n  - name: b\n    admin_layer: {}\n"))
    assert rc == 1 and ("layered_runtime.layers[1].name: Too many admin layers specified in LayeredRuntime, "
                        "at most one may be specified") in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n    static_layer: { x: { y: [1, 2] } }\n"))
    assert rc == 1 and "layered_runtime.layers[0].static_layer.x.y: Invalid runtime entry value for x.y" in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n    static_layer: { x: null }\n"))
    assert rc == 1 and "Invalid runtime entry value for x" in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n"))
    assert rc == 1 and "layered_runtime.layers[0]: one of static_layer, disk_layer, admin_layer, rtds_layer " \
                       "is required" in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n    static_layer: { a.b: 1, a: { b: 2 } }\n"))
    assert rc == 1 and "runtime key 'a.b' is given twice in this layer" in out, out
    # RTDS needs its config source (Envoy's subscription factory on a default ConfigSource)
    rc, out = validate(with_runtime(base, "  - name: r\n    rtds_layer: { name: r }\n"))
    assert rc == 1 and "layered_runtime.layers[0].rtds_layer.rtds_config: Missing config source specifier" in out, out
    rc, out = validate(with_runtime(base, "  - name: r\n    rtds_layer: { name: r, rtds_config: { ads: {} } }\n"))
    assert rc == 1 and "rtds_layer.rtds_config.ads: ADS must be configured" in out, out
    rc, out = validate(with_runtime(base, "  - name: a\n    static_layer: { x: 1 }\n  - name: b\n    admin_layer: {}\n"))
    assert rc == 0, out


def test_weighted_clusters_runtime_key_prefix(procs):
    """weighted_clusters.runtime_key_prefix: each cluster's weight is the
    runtime's "<prefix>.<name>" when set, read per request."""
    clusters = upstreams(procs, "a", "b")
    listen, ap = free_port(), free_port()
    routes = """\
- match: { prefix: / }
  route:
    weighted_clusters:
      runtime_key_prefix: split
      clusters:
      - { name: a, weight: 100 }
      - { name: b, weight: 0 }
"""
    y = with_runtime(bootstrap_yaml(listen, ap, clusters, routes=routes), "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)
    assert who(listen, 20) == Counter({"a": 20})
    assert modify(ap, "split.a=0&split.b=1") == (200, "OK\n")
    assert who(listen, 20) == Counter({"b": 20})
    assert modify(ap, "split.a=1")[0] == 200
    seen = who(listen, 100)
    assert seen["a"] > 20 and seen["b"] > 20, seen
    # weights adding up to 0 pick no cluster: 503, as Envoy
    assert modify(ap, "split.a=0&split.b=0")[0] == 200
    assert req(listen, "/echo").status == 503
    assert modify(ap, "split.a=&split.b=")[0] == 200
    assert who(listen, 10) == Counter({"a": 10})


def test_adaptive_concurrency_enabled_runtime_key(procs):
    """The filter's enabled RuntimeFeatureFlag: runtime_key's boolean wins
    over default_value, read per request."""
    clusters = upstreams(procs, "b")
    listen, ap = free_port(), free_port()
    y = bootstrap_yaml(listen, ap, clusters)
    # while it measures the minimum RTT the filter admits min_concurrency
    # (2) requests at a time: a burst against a slow upstream shows whether
    # it runs
    y = y.replace("          http_filters:\n", """\
          http_filters:
          - name: envoy.filters.http.adaptive_concurrency
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency
              enabled: { default_value: false, runtime_key: ac.enabled }
              gradient_controller_config:
                sample_aggregate_percentile: { value: 50 }
                concurrency_limit_params:
                  max_concurrency_limit: 100
                  concurrency_update_interval: 60s
                min_rtt_calc_params:
                  interval: 60s
                  request_count: 1000
                  min_concurrency: 2
""")
    y = with_runtime(y, "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)

    import threading

    def burst():
        codes = []

        def one():
            codes.append(req(listen, "/?delay_ms=300").status)
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return Counter(codes)

    assert burst() == Counter({200: 8})
    assert modify(ap, "ac.enabled=true")[0] == 200
    assert burst()[503] >= 1
    assert modify(ap, "ac.enabled=0")[0] == 200
    assert burst() == Counter({200: 8})


def test_disk_layer(procs):
    """disk_layer: files under symlink_root/subdirectory are keys (a
    directory per dot), '#' lines are comments; the layer reloads when the
    symlink is swapped; a missing directory leaves the layer out."""
    clusters = upstreams(procs, "canary", "stable")
    root = tempfile.mkdtemp(prefix="sharp-rt-")

    def tree(name, canary):
        d = os.path.join(root, name, "envoy", "routing")
        os.makedirs(d)
        with open(os.path.join(d, "canary"), "w") as f:
            f.write("# the canary share\n%s\n" % canary)
        with open(os.path.join(root, name, "envoy", "plain"), "w") as f:
            f.write("two\nlines  \n")

    tree("v1", 100)
    tree("v2", 0)
    os.symlink(os.path.join(root, "v1"), os.path.join(root, "current"))
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, clusters, routes=FRACTION_ROUTES), f"""\
  - name: disk
    disk_layer: {{ symlink_root: {root}/current, subdirectory: envoy }}
  - name: missing
    disk_layer: {{ symlink_root: {root}/current, subdirectory: nothing }}
  - name: admin
    admin_layer: {{}}
""")
    run_sharp_config(procs, y, ap)
    rt = runtime(ap)
    assert rt["layers"] == ["disk", "admin"]
    assert rt["entries"]["routing.canary"]["final_value"] == "100"
    assert rt["entries"]["plain"]["final_value"] == "two\nlines"
    assert who(listen, 10) == Counter({"canary": 10})
    assert stat(ap, "runtime.override_dir_not_exists") == 1
    # an atomic swap of the symlink, as Envoy expects
    os.symlink(os.path.join(root, "v2"), os.path.join(root, "next"))
    os.rename(os.path.join(root, "next"), os.path.join(root, "current"))
    deadline = time.time() + 5
    while time.time() < deadline and runtime(ap)["entries"]["routing.canary"]["final_value"] != "0":
        time.sleep(0.05)
    assert runtime(ap)["entries"]["routing.canary"]["final_value"] == "0"
    assert who(listen, 10) == Counter({"stable": 10})
    assert stat(ap, "runtime.load_success") >= 2


def test_outlier_detection_runtime_keys(procs):
    """The outlier detector reads Envoy's outlier_detection.* runtime keys
    over the cluster's settings: consecutive_5xx (on the workers) and
    enforcing_consecutive_5xx (on the main thread)."""
    us = [Upstream(n) for n in ("a", "b")]
    procs.extend(us)
    a, b = us
    listen, ap = free_port(), free_port()
    od = ("outlier_detection: { consecutive_5xx: 1000, interval: 0.2s, base_ejection_time: 30s, "
          "max_ejection_percent: 50 }\n")
    y = with_runtime(bootstrap_yaml(listen, ap, {"backend": [a.port, b.port]}, cluster_extra=od),
                     "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)
    P = "cluster.backend.outlier_detection."

    def fault(query):
        with urllib.request.urlopen(f"http://127.0.0.1:{b.port}/admin/fault{query}", timeout=5) as r:
            r.read()

    fault("?status=503")
    codes = Counter(req(listen, "/").status for _ in range(20))
    assert codes[503] >= 5, codes
    assert stat(ap, P + "ejections_detected_consecutive_5xx") == 0
    # b's run of errors restarts with a success, then 3 in a row are enough:
    # detected, but not enforced at 0%
    assert modify(ap, "outlier_detection.consecutive_5xx=3&outlier_detection.enforcing_consecutive_5xx=0")[0] == 200
    fault("")
    for _ in range(4):
        req(listen, "/")
    fault("?status=503")
    for _ in range(12):
        req(listen, "/")
    deadline = time.time() + 5
    while not stat(ap, P + "ejections_detected_consecutive_5xx") and time.time() < deadline:
        time.sleep(0.05)
    # each detection restarts the run: b's six or so errors are one or two
    assert stat(ap, P + "ejections_detected_consecutive_5xx") in (1, 2)
    assert stat(ap, P + "ejections_enforced_total") == 0
    # enforced at the configured 100% once the override is removed
    assert modify(ap, "outlier_detection.enforcing_consecutive_5xx=")[0] == 200
    fault("")
    for _ in range(4):
        req(listen, "/")
    fault("?status=503")
    deadline = time.time() + 5
    while stat(ap, P + "ejections_enforced_consecutive_5xx") != 1 and time.time() < deadline:
        for _ in range(4):
            req(listen, "/")
    assert stat(ap, P + "ejections_enforced_consecutive_5xx") == 1
    assert Counter(req(listen, "/").status for _ in range(10)) == Counter({200: 10})


def test_circuit_breaker_runtime_keys(procs):
    """circuit_breakers.<cluster>.default.<threshold> overrides the configured
    threshold (Envoy's resource manager), on the data path and in /clusters."""
    clusters = upstreams(procs, "b")
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, clusters), "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)
    assert req(listen, "/echo").status == 200
    assert "b::default_priority::max_requests::1024" in admin(ap, "/clusters")[1]
    assert modify(ap, "circuit_breakers.b.default.max_requests=0")[0] == 200
    r = req(listen, "/echo")
    assert r.status == 503 and r.getheader("x-envoy-overloaded") == "true"
    assert stat(ap, "cluster.b.upstream_rq_pending_overflow") == 1
    assert "b::default_priority::max_requests::0" in admin(ap, "/clusters")[1]
    clusters_json = json.loads(admin(ap, "/clusters?format=json")[1])
    assert clusters_json["cluster_statuses"][0]["circuit_breakers"]["thresholds"][0]["max_requests"] == 0
    # another cluster's key changes nothing here
    assert modify(ap, "circuit_breakers.b.default.max_requests=&circuit_breakers.other.default.max_requests=0")[0] == 200
    assert req(listen, "/echo").status == 200


def test_retry_backoff_base_runtime_key(procs):
    """Without retry_back_off a retry waits up to the runtime's
    upstream.base_retry_backoff_ms (Envoy's default 25 ms), fully jittered."""
    (bad,) = [Upstream("bad")]
    procs.append(bad)
    with urllib.request.urlopen(f"http://127.0.0.1:{bad.port}/admin/fault?status=503", timeout=5) as r:
        r.read()
    listen, ap = free_port(), free_port()
    routes = "- match: { prefix: / }\n  route: { cluster: b, retry_policy: { retry_on: 5xx, num_retries: 1 } }\n"
    y = with_runtime(bootstrap_yaml(listen, ap, {"b": [bad.port]}, routes=routes),
                     "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)

    def five():
        t0 = time.time()
        for _ in range(5):
            assert req(listen, "/").status == 503
        return time.time() - t0

    assert five() < 0.6  # five retries after at most 25 ms each
    assert modify(ap, "upstream.base_retry_backoff_ms=1000")[0] == 200
    # the first retry now waits a random time below 1 s: five of them well
    # over half a second unless all are improbably short, and under 5 s
    took = five()
    assert 0.6 < took < 5 + 2 * SLOW, took
    assert stat(ap, "cluster.b.upstream_rq_retry") == 10


def test_connection_manager_defaults_from_the_runtime(procs, path_upstream):
    """Unset, the connection manager's normalize_path,
    path_with_escaped_slashes_action and header limits take Envoy's runtime
    defaults when it is built: http_connection_manager.normalize_path (a
    percentage), ...path_with_escaped_slashes_action (2 reject),
    envoy.reloadable_features.max_request_headers_count / _size_kb."""
    from conftest import raw_request
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, {"app": [path_upstream.port]}), """\
  - name: s
    static_layer:
      http_connection_manager: { normalize_path: 100, path_with_escaped_slashes_action: 2 }
      envoy.reloadable_features.max_request_headers_count: 5
""")
    run_sharp_config(procs, y, ap)

    def get(path, extra=b""):
        return raw_request(listen, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")

    st, _, body, _ = get("/a/../b")
    assert st == 200 and json.loads(body)["path"] == "/b"
    assert get("/a%2Fb")[0] == 400
    assert get("/ok", b"".join(b"x-h%d: v\r\n" % i for i in range(3)))[0] == 200
    assert get("/ok", b"".join(b"x-h%d: v\r\n" % i for i in range(10)))[0] == 431
    # a field set in the connection manager wins over the runtime
    listen2, ap2 = free_port(), free_port()
    y2 = with_runtime(bootstrap_yaml(listen2, ap2, {"app": [path_upstream.port]}, hcm_extra="normalize_path: false\n"),
                      "  - name: s\n    static_layer: { http_connection_manager.normalize_path: 100 }\n")
    run_sharp_config(procs, y2, ap2)
    st, _, body, _ = raw_request(listen2, b"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200 and json.loads(body)["path"] == "/a/../b"
    # a limit out of range is a config error
    rc, out = validate(with_runtime(bootstrap_yaml(free_port(), free_port(), {"b": [1]}),
                                    "  - name: s\n    static_layer: { envoy.reloadable_features.max_request_headers_size_kb: 0 }\n"))
    assert rc == 1 and "envoy.reloadable_features.max_request_headers_size_kb: 0 is not in [1, 8192]" in out, out


def test_cluster_maintenance_mode(procs):
    """upstream.maintenance_mode.<cluster>: that percentage of the cluster's
    requests get Envoy's 503 "maintenance mode" (UO, x-envoy-overloaded)."""
    clusters = upstreams(procs, "b")
    listen, ap = free_port(), free_port()
    y = with_runtime(bootstrap_yaml(listen, ap, clusters), "  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)
    assert req(listen, "/echo").status == 200
    assert modify(ap, "upstream.maintenance_mode.b=100")[0] == 200
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    c.request("GET", "/echo")
    r = c.getresponse()
    assert (r.status, r.read()) == (503, b"maintenance mode")
    assert r.getheader("x-envoy-overloaded") == "true"
    c.close()
    assert stat(ap, "cluster.b.upstream_rq_maintenance_mode") == 1
    assert stat(ap, "cluster.b.upstream_rq_503") == 1
    assert modify(ap, "upstream.maintenance_mode.b=50")[0] == 200
    codes = Counter(req(listen, "/echo").status for _ in range(200))
    assert 50 < codes[503] < 150 and codes[200] + codes[503] == 200, codes
    assert modify(ap, "upstream.maintenance_mode.b=")[0] == 200
    assert Counter(req(listen, "/echo").status for _ in range(10)) == Counter({200: 10})


def test_use_retry_runtime_key(procs):
    """upstream.use_retry (a percentage, default 100) switches retries off:
    the upstream's 503 is passed on after one try."""
    (bad,) = [Upstream("bad")]
    procs.append(bad)
    with urllib.request.urlopen(f"http://127.0.0.1:{bad.port}/admin/fault?status=503", timeout=5) as r:
        r.read()
    listen, ap = free_port(), free_port()
    routes = ("- match: { prefix: / }\n  route: { cluster: b, retry_policy: { retry_on: 5xx, num_retries: 2, "
              "retry_back_off: { base_interval: 0.001s } } }\n")
    y = with_runtime(bootstrap_yaml(listen, ap, {"b": [bad.port]}, routes=routes),
                     "  - name: s\n    static_layer: { upstream.use_retry: 0 }\n  - name: admin\n    admin_layer: {}\n")
    run_sharp_config(procs, y, ap)
    for _ in range(3):
        assert req(listen, "/").status == 503
    assert stat(ap, "cluster.b.upstream_rq_retry") == 0
    assert stat(ap, "cluster.b.upstream_rq_503") == 3
    assert modify(ap, "upstream.use_retry=100")[0] == 200
    assert req(listen, "/").status == 503
    assert stat(ap, "cluster.b.upstream_rq_retry") == 2
    assert stat(ap, "cluster.b.upstream_rq_503") == 6
