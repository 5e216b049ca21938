"""Adaptive concurrency in the data path: a burst against a slow upstream
gets 503s from the limiter (never reaching the upstream), admitted requests
succeed, and the controller's stats use Envoy's names."""
import threading

from conftest import PROTOS, bootstrap_yaml, free_port, protos, run_sharp_config, stat, upstream_admin

H1 = PROTOS["h1"]

GRADIENT = """\
- name: envoy.filters.http.adaptive_concurrency
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency
    gradient_controller_config:
      sample_aggregate_percentile: { value: 50 }
      concurrency_limit_params:
        concurrency_update_interval: 0.1s
        max_concurrency_limit: 100
      min_rtt_calc_params:
        interval: 60s
        request_count: 5
        min_concurrency: 2
"""

AIMD = """\
- name: sharp.filters.http.adaptive_concurrency
  typed_config:
    "@type": type.googleapis.com/sharp.extensions.filters.http.adaptive_concurrency.v1.AimdAdaptiveConcurrency
    aimd_controller_config:
      initial_limit: 3
      min_limit: 2
      max_limit: 50
"""


def with_filter(yaml_text, filt):
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + l + "\n" for l in filt.splitlines()))


def burst(port, n, path, proto=H1):
    results = []
    lock = threading.Lock()

    def one():
        st, _, body = proto.request(port, path, timeout=20)
        with lock:
            results.append((st, body))
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def upstream_requests(u):
    return upstream_admin(u, "/admin/stats")["requests"]


def run_burst(procs, filt, stat_prefix, proto=H1):
    u = proto.upstream(procs, "slow")
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, with_filter(bootstrap_yaml(listen, admin, {"b": [u.port]}, cluster_extra=proto.cluster),
                                        filt), admin)
    before = upstream_requests(u)
    res = burst(listen, 24, "/?delay_ms=400", proto)
    ok = [r for r in res if r[0] == 200]
    shed = [r for r in res if r[0] == 503]
    assert len(ok) + len(shed) == 24, res
    assert ok and shed, [r[0] for r in res]
    assert all(b == b"reached concurrency limit" for _, b in shed)
    assert all(b == b"hello from slow\n" for _, b in ok)
    # shed requests never reached the upstream (its own counter excludes /admin)
    assert upstream_requests(u) - before - 1 == len(ok)
    assert stat(admin, f"http.ingress_http.adaptive_concurrency.{stat_prefix}.rq_blocked") == len(shed)
    assert stat(admin, f"http.ingress_http.adaptive_concurrency.{stat_prefix}.concurrency_limit") >= 2
    assert stat(admin, "http.ingress_http.downstream_rq_5xx") == len(shed)
    # after the burst, sequential requests are all admitted
    for _ in range(10):
        st, _, body = proto.request(listen, "/", timeout=5)
        assert st == 200 and body == b"hello from slow\n"
    return admin


@protos("h1", "h2-both")
def test_gradient_sheds_burst(procs, proto):
    admin = run_burst(procs, GRADIENT, "gradient_controller", proto)
    for g in ("gradient", "burst_queue_size", "min_rtt_msecs", "sample_rtt_msecs", "min_rtt_calculation_active"):
        assert stat(admin, f"http.ingress_http.adaptive_concurrency.gradient_controller.{g}") is not None


def test_aimd_sheds_burst(procs):
    run_burst(procs, AIMD, "aimd_controller")


def test_custom_status_and_disabled(procs, upstream):
    listen, admin = free_port(), free_port()
    filt = GRADIENT.replace("    gradient_controller_config:",
                            "    concurrency_limit_exceeded_status: { code: TooManyRequests }\n    gradient_controller_config:")
    run_sharp_config(procs, with_filter(bootstrap_yaml(listen, admin, {"b": [upstream.port]}), filt), admin)
    res = burst(listen, 12, "/?delay_ms=300")
    assert {r[0] for r in res} <= {200, 429} and any(r[0] == 429 for r in res)
    listen2, admin2 = free_port(), free_port()
    off = GRADIENT + "    enabled: { default_value: false, runtime_key: ac.enabled }\n"
    run_sharp_config(procs, with_filter(bootstrap_yaml(listen2, admin2, {"b": [upstream.port]}), off), admin2)
    assert all(r[0] == 200 for r in burst(listen2, 12, "/?delay_ms=200"))
