"""The dynamic forward proxy (envoy.filters.http.dynamic_forward_proxy with
an envoy.clusters.dynamic_forward_proxy cluster sharing one DNS cache)
against a DNS server on loopback that the test controls (test_dns's Zone)
and test upstreams on 127.0.0.2, 127.0.0.3 on one port."""
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import SHARP, SLOW, admin_get, file_access_log, free_port, log_lines, stat
from test_dns import Upstream, dns, get, start, wait_for  # noqa: F401 (dns is a fixture)
from test_tls_upstream import tls_server  # noqa: F401 (a fixture)

CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
FILTER = "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig"
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.PerRouteConfig"
CLUSTER = "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig"
LOG = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST%\\n"


def cache_yaml(dns_port, extra=""):
    lines = ["name: c", "dns_lookup_family: V4_ONLY",
             "typed_dns_resolver_config:",
             "  name: envoy.network.dns_resolver.cares",
             "  typed_config:",
             "    \"@type\": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
             f"    resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {dns_port} }} }}]",
             "    dns_resolver_options: { no_default_search_domain: true }"]
    return "\n".join(lines + [ln for ln in extra.splitlines() if ln]) + "\n"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def config(listen, admin, dns_port, cache_extra="", log_path_yaml="", cluster_extra=""):
    cache = cache_yaml(dns_port, cache_extra)
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
{indent(log_path_yaml, 10)}          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/", headers: [{{ name: x-rw, string_match: {{ exact: literal }} }}] }}
                route: {{ cluster: dfp }}
                typed_per_filter_config:
                  envoy.filters.http.dynamic_forward_proxy:
                    "@type": {PER_ROUTE}
                    host_rewrite_literal: b.test:{{UPPORT}}
              - match: {{ prefix: "/", headers: [{{ name: x-rw, string_match: {{ exact: header }} }}] }}
                route: {{ cluster: dfp }}
                typed_per_filter_config:
                  envoy.filters.http.dynamic_forward_proxy:
                    "@type": {PER_ROUTE}
                    host_rewrite_header: X-Target
              - match: {{ prefix: "/" }}
                route: {{ cluster: dfp }}
          http_filters:
          - name: envoy.filters.http.dynamic_forward_proxy
            typed_config:
              "@type": {FILTER}
              dns_cache_config:
{indent(cache, 16)}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: dfp
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": {CLUSTER}
        dns_cache_config:
{indent(cache, 10)}{indent(cluster_extra, 4)}"""


@pytest.fixture
def env(procs, dns):
    """Upstreams a (127.0.0.2) and b (127.0.0.3) on one port; a.test and
    b.test resolve to them."""
    port = free_port()
    procs.append(Upstream("127.0.0.2", port, "a"))
    procs.append(Upstream("127.0.0.3", port, "b"))
    dns.set("a.test", a=["127.0.0.2"])
    dns.set("b.test", a=["127.0.0.3"])
    return dns, port


def run(procs, dns, upport, cache_extra="", log=True, cluster_extra=""):
    listen, admin = free_port(), free_port()
    al, path = file_access_log(LOG) if log else ("", None)
    y = config(listen, admin, dns.port, cache_extra, al, cluster_extra).replace("{UPPORT}", str(upport))
    start(procs, y, admin)
    return listen, admin, path


def request(port, host, path="/echo", headers=None, method="GET", body=None):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    c.request(method, path, body=body, headers={"Host": host, **(headers or {})})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, r.getheader("x-upstream-name"), body


def dstat(admin, name):
    return stat(admin, f"dns_cache.c.{name}") or 0


def test_resolves_then_serves_from_the_cache(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up)
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    assert request(listen, f"b.test:{up}")[:2] == (200, "b")
    queries = dns.count("a.test")
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    assert dns.count("a.test") == queries  # in the cache: no new query
    assert dstat(admin, "dns_query_attempt") == 2
    assert dstat(admin, "dns_query_success") == 2
    assert dstat(admin, "host_added") == 2
    assert dstat(admin, "num_hosts") == 2
    assert dstat(admin, "dns_query_failure") == 0


def test_nxdomain_is_503_dns_resolution_failure(procs, env):
    dns, up = env
    listen, admin, path = run(procs, dns, up)
    st, _, body = request(listen, f"nx.test:{up}")
    assert st == 503 and body == b"DNS resolution failure"
    line = log_lines(path, 1)[0]
    code, flags, details = line.split()[:3]
    assert (code, flags) == ("503", "DF")
    assert details.startswith("dns_resolution_failure{cares_norecords:"), line
    assert dstat(admin, "dns_query_failure") == 1
    # the failure is cached: the next request fails without a query
    q = dns.count("nx.test")
    assert request(listen, f"nx.test:{up}")[0] == 503
    assert dns.count("nx.test") == q
    # the other hosts are not affected
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")


def test_resolver_that_does_not_answer_times_out(procs, env):
    dns, up = env
    dns.set("slow.test", a=["127.0.0.2"], mode="drop")
    listen, admin, path = run(procs, dns, up, "dns_query_timeout: 0.5s")
    st, _, _ = request(listen, f"slow.test:{up}")
    assert st == 503
    line = log_lines(path, 1)[0]
    assert line.split()[:3] == ["503", "DF", "dns_resolution_failure{resolve_timeout}"], line
    assert dstat(admin, "dns_query_timeout") == 1
    assert dstat(admin, "dns_query_failure") == 1


def test_max_hosts_overflow(procs, env):
    dns, up = env
    listen, admin, path = run(procs, dns, up, "max_hosts: 1")
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    st, _, body = request(listen, f"b.test:{up}")
    assert st == 503 and body == b"DNS cache overflow"
    lines = log_lines(path, 2)  # one per worker's buffer: in any order
    assert ["503", "-", "dns_cache_overflow"] in [ln.split()[:3] for ln in lines], lines
    assert dstat(admin, "host_overflow") == 1
    assert dstat(admin, "num_hosts") == 1
    # the host already cached still works
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")


def test_pending_request_circuit_breaker(procs, env):
    dns, up = env
    listen, admin, path = run(procs, dns, up, "dns_cache_circuit_breaker: { max_pending_requests: 0 }")
    st, _, body = request(listen, f"a.test:{up}")
    assert st == 503 and body == b"Dynamic forward proxy pending request overflow"
    assert log_lines(path, 1)[0].split()[:3] == ["503", "-", "dynamic_forward_proxy_pending_request_overflow"]
    assert dstat(admin, "dns_rq_pending_overflow") == 1
    assert dns.count("a.test") == 0


def test_unused_hosts_expire_after_host_ttl(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up, "host_ttl: 1s\ndns_refresh_rate: 0.3s")
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    assert wait_for(lambda: dstat(admin, "host_removed") == 1, timeout=10 * SLOW)
    assert dstat(admin, "num_hosts") == 0
    # the cluster lets go of its host too
    assert wait_for(lambda: "127.0.0.2" not in admin_get(admin, "/clusters"), timeout=10 * SLOW)
    # and a new request resolves it again
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    assert dstat(admin, "host_added") == 2


def test_address_change_moves_new_requests(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up, "dns_refresh_rate: 0.2s")
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    dns.set("a.test", a=["127.0.0.3"])
    assert wait_for(lambda: request(listen, f"a.test:{up}")[1] == "b", timeout=10 * SLOW)
    assert dstat(admin, "host_address_changed") >= 1


def test_per_route_host_rewrite(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up)
    # host_rewrite_literal: b.test whatever the request says, looked up and
    # sent upstream
    st, who, body = request(listen, f"a.test:{up}", headers={"x-rw": "literal"})
    assert (st, who) == (200, "b")
    assert [h[1] for h in json.loads(body)["headers"] if h[0].lower() == "host"] == [f"b.test:{up}"]
    # host_rewrite_header: the header's value
    assert request(listen, f"b.test:{up}", headers={"x-rw": "header", "x-target": f"a.test:{up}"})[:2] == (200, "a")
    # without the header the request's own host
    assert request(listen, f"b.test:{up}", headers={"x-rw": "header"})[:2] == (200, "b")


def test_default_port_is_80_without_tls(procs, env):
    dns, up = env
    listen, admin, path = run(procs, dns, up)
    # a.test:80 has no upstream: the connection fails, after the lookup of a.test
    st, _, _ = request(listen, "a.test")
    assert st == 503
    assert log_lines(path, 1)[0].split()[3] == "127.0.0.2:80"


def test_tls_sni_and_san_from_the_host(procs, dns, pki, tls_server):  # noqa: F811
    """Envoy's auto_sni and auto_san_validation: the host's name is the SNI,
    and the server's certificate must carry it."""
    import json
    port = tls_server()
    dns.set("www.example.com", a=["127.0.0.1"])
    dns.set("wrong.test", a=["127.0.0.1"])
    tls = ("transport_socket:\n  name: envoy.transport_sockets.tls\n  typed_config:\n"
           "    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
           f"    common_tls_context: {{ validation_context: {{ trusted_ca: {{ filename: {pki}/ca.crt }} }} }}\n")
    listen, admin, path = run(procs, dns, port, cluster_extra=tls)
    st, _, body = request(listen, f"www.example.com:{port}", "/")
    assert st == 200, body
    assert json.loads(body)["sni"] == "www.example.com"
    st, _, body = request(listen, f"wrong.test:{port}", "/")
    assert st == 503, body
    assert stat(admin, "cluster.dfp.ssl.fail_verify_san") == 1


def test_preresolve_hostnames(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up, "preresolve_hostnames: [{ address: a.test, port_value: {UPPORT} }]")
    # resolved at start, before any request
    assert wait_for(lambda: dstat(admin, "dns_query_success") == 1, timeout=10 * SLOW)
    assert dstat(admin, "num_hosts") == 1 and dns.count("a.test") == 1
    assert request(listen, f"a.test:{up}")[:2] == (200, "a")
    assert dns.count("a.test") == 1


def test_request_body_waits_for_the_resolution(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up)
    st, who, body = request(listen, f"a.test:{up}", method="POST", body=b"x" * 200000)
    assert (st, who) == (200, "a")
    assert json.loads(body)["body_bytes"] == 200000


def test_concurrent_requests_share_one_resolution(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up)
    with ThreadPoolExecutor(16) as ex:
        out = list(ex.map(lambda _: request(listen, f"a.test:{up}")[:2], range(32)))
    assert out == [(200, "a")] * 32
    assert dstat(admin, "host_added") == 1
    assert dstat(admin, "dns_rq_pending_overflow") == 0


def test_corpus_dns_cache_circuit_breaker_loads():
    path = os.path.join(CORPUS, "envoy__docs__root__configuration__http__http_filters___include__"
                                "dns-cache-circuit-breaker.yaml")
    if not os.path.exists(path):
        pytest.skip("no corpus")
    r = subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("field,extra", [
    ("allow_coalesced_connections", "allow_coalesced_connections: true"),
    ("dns_min_refresh_rate", None),
])
def test_refused_fields_are_named(tmp_path, field, extra):
    y = config(free_port(), free_port(), 53).replace("{UPPORT}", "1")
    if field == "dns_min_refresh_rate":
        y = y.replace("name: c\n", "name: c\n                dns_min_refresh_rate: 5s\n", 1)
    else:
        y = y.replace("\n        dns_cache_config:\n", f"\n        {extra}\n        dns_cache_config:\n", 1)
    p = tmp_path / "c.yaml"
    p.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 1 and field in r.stdout + r.stderr, r.stdout + r.stderr


def test_aggregate_member_refused(tmp_path):
    y = config(free_port(), free_port(), 53).replace("{UPPORT}", "1")
    y += """  - name: agg
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.aggregate
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig
        clusters: [dfp]
"""
    p = tmp_path / "c.yaml"
    p.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 1 and "is a dynamic forward proxy cluster" in r.stdout + r.stderr, r.stdout + r.stderr


def test_ip_address_host(procs, env):
    dns, up = env
    listen, admin, _ = run(procs, dns, up)
    assert request(listen, f"127.0.0.3:{up}")[:2] == (200, "b")


def test_same_cache_name_with_other_settings_is_refused(tmp_path):
    y = config(free_port(), free_port(), 53).replace("{UPPORT}", "1")
    # the filter's cache gets max_hosts, the cluster's does not
    y = y.replace("name: c\n", "name: c\n                max_hosts: 5\n", 1)
    p = tmp_path / "c.yaml"
    p.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.returncode == 1 and "DNS cache 'c' with different settings" in r.stdout + r.stderr, r.stdout + r.stderr


def test_shutdown_with_a_request_waiting_for_dns(procs, env):
    """SIGTERM while a request waits for a lookup that is never answered:
    the server drains and exits cleanly (the procs fixture checks the exit
    status and sanitizer reports)."""
    import signal
    import threading
    dns, up = env
    dns.set("slow.test", a=["127.0.0.2"], mode="drop")
    listen, admin, _ = run(procs, dns, up, "dns_query_timeout: 30s")
    out = []
    t = threading.Thread(target=lambda: out.append(_try_request(listen, f"slow.test:{up}")), daemon=True)
    t.start()
    assert wait_for(lambda: dns.count("slow.test") >= 1, timeout=10 * SLOW)
    assert dstat(admin, "dns_query_attempt") == 1
    sharp = procs[-1]
    assert sharp.stop(signal.SIGTERM, timeout=20 * SLOW) == 0
    t.join(10 * SLOW)
    assert out and out[0] != 200


def _try_request(port, host):
    try:
        return request(port, host)[0]
    except Exception:  # the connection closed by the drain
        return None


def test_tcp_proxy_to_a_dfp_cluster_is_refused(tmp_path):
    """A TCP proxy has no request authority to resolve: Envoy takes its host
    from the SNI dynamic forward proxy filter, which SHARP does not have, so
    the configuration is refused naming the cluster rather than loaded to
    find no host."""
    y = f"""static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {free_port()} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: dfp
  clusters:
  - name: dfp
    connect_timeout: 1s
    lb_policy: CLUSTER_PROVIDED
    cluster_type:
      name: envoy.clusters.dynamic_forward_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig
        dns_cache_config: {{ name: c, dns_lookup_family: V4_ONLY }}
"""
    p = tmp_path / "c.yaml"
    p.write_text(y)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20 * SLOW)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "cluster 'dfp' is a dynamic forward proxy cluster" in out, out
    assert "filters[0].typed_config" in out, out
