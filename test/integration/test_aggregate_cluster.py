"""Aggregate clusters (cluster_type envoy.clusters.aggregate): failover
across member clusters when the primary's hosts fail health checks or the
primary is removed by CDS, a member that appears later, and what is
refused."""
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from conftest import SHARP, SLOW, Sharp, Upstream, free_port, stat, upstream_admin, wait_for

CL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
AGG = "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig"

HC = {"timeout": "0.5s", "interval": "0.2s", "no_traffic_interval": "0.2s", "unhealthy_threshold": 2,
      "healthy_threshold": 2, "http_health_check": {"path": "/healthz"}}


def static_cluster(name, *ports, hc=False):
    c = {"name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
             for p in ports]}]}}
    if hc:
        c["health_checks"] = [HC]
    return c


def aggregate(name, *members, **extra):
    c = {"name": name, "connect_timeout": "0.25s", "lb_policy": "CLUSTER_PROVIDED",
         "cluster_type": {"name": "envoy.clusters.aggregate",
                          "typed_config": {"@type": AGG, "clusters": list(members)}}}
    c.update(extra)
    return c


def bootstrap(listen, admin, clusters, cds_path=None):
    dyn = f"dynamic_resources: {{ cds_config: {{ path_config_source: {{ path: {cds_path} }} }} }}\n" if cds_path else ""
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
{dyn}static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: agg }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters: {json.dumps(clusters)}
"""


def get(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            r.read()
            return r.status, r.headers.get("x-upstream-name")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-upstream-name")


def names(port, n=20):
    return [get(port) for _ in range(n)]


def start(procs, text, admin):
    s = Sharp(text)
    procs.append(s)
    s.wait_ready(admin)
    return s


def upstreams(procs, *names_):
    us = [Upstream(n) for n in names_]
    procs.extend(us)
    return us


def test_failover_when_the_primary_fails_health_checks(procs):
    p0, p1, s0 = upstreams(procs, "p0", "p1", "s0")
    listen, admin = free_port(), free_port()
    start(procs, bootstrap(listen, admin, [aggregate("agg", "primary", "secondary"),
                                           static_cluster("primary", p0.port, p1.port, hc=True),
                                           static_cluster("secondary", s0.port, hc=True)]), admin)
    wait_for(lambda: stat(admin, "cluster.primary.membership_healthy") == 2
             and stat(admin, "cluster.secondary.membership_healthy") == 1, 5, "all hosts healthy")
    # all healthy: everything to the primary, round robin there
    seen = names(listen)
    assert {n for _, n in seen} == {"p0", "p1"}, seen
    assert all(st == 200 for st, _ in seen)
    # the member's own stats count the tries; the aggregate the responses
    assert stat(admin, "cluster.primary.upstream_rq_total") >= 20
    assert stat(admin, "cluster.agg.upstream_rq_2xx") >= 20
    assert stat(admin, "cluster.secondary.upstream_rq_total") == 0
    # one of two primary hosts fails: primary health 140 * 1/2 = 70%, the
    # secondary (100%) takes the other 30% (Envoy's priority load)
    upstream_admin(p0, "/admin/fault?status=503")
    wait_for(lambda: stat(admin, "cluster.primary.membership_healthy") == 1, 5, "p0 failing its checks")
    seen = names(listen, 400)
    assert all(st == 200 for st, _ in seen), seen
    counts = {n: sum(1 for _, x in seen if x == n) for n in ("p0", "p1", "s0")}
    assert counts["p0"] == 0, counts
    assert 0.20 * 400 <= counts["s0"] <= 0.40 * 400, counts
    # both fail: everything to the secondary
    upstream_admin(p1, "/admin/fault?status=503")
    wait_for(lambda: stat(admin, "cluster.primary.membership_healthy") == 0, 5, "p1 failing its checks")
    seen = names(listen, 20)
    assert seen == [(200, "s0")] * 20, seen
    # the primary recovers: traffic goes back
    upstream_admin(p0, "/admin/fault")
    upstream_admin(p1, "/admin/fault")
    wait_for(lambda: stat(admin, "cluster.primary.membership_healthy") == 2, 5, "the primary healthy again")
    seen = names(listen, 20)
    assert {n for _, n in seen} == {"p0", "p1"}, seen


def write_atomic(path, obj):
    tmp = f"{path}.tmp{time.time_ns()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.replace(tmp, path)


def test_members_added_and_removed_by_cds(procs, tmp_path):
    p0, s0 = upstreams(procs, "p0", "s0")
    cds = str(tmp_path / "cds.json")
    # the primary is not there yet: the aggregate skips it
    write_atomic(cds, {"version_info": "1", "resources": [dict(static_cluster("secondary", s0.port), **{"@type": CL})]})
    listen, admin = free_port(), free_port()
    start(procs, bootstrap(listen, admin, [aggregate("agg", "primary", "secondary")], cds_path=str(cds)), admin)
    wait_for(lambda: get(listen) == (200, "s0"), 5, "the secondary")
    # CDS adds the primary: it takes the traffic from the next request on
    write_atomic(cds, {"version_info": "2", "resources": [dict(static_cluster("primary", p0.port), **{"@type": CL}),
                                                          dict(static_cluster("secondary", s0.port), **{"@type": CL})]})
    wait_for(lambda: get(listen) == (200, "p0"), 5, "the primary added")
    assert names(listen, 10) == [(200, "p0")] * 10
    # CDS removes it: back to the secondary
    write_atomic(cds, {"version_info": "3", "resources": [dict(static_cluster("secondary", s0.port), **{"@type": CL})]})
    wait_for(lambda: get(listen) == (200, "s0"), 5, "the primary removed")
    assert names(listen, 10) == [(200, "s0")] * 10
    # no member left: 503 no healthy upstream, counted on the aggregate
    write_atomic(cds, {"version_info": "4", "resources": []})
    wait_for(lambda: get(listen)[0] == 503, 5, "no member")
    assert stat(admin, "cluster.agg.upstream_cx_none_healthy") >= 1


def validate(clusters):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(bootstrap(free_port(), free_port(), clusters))
    try:
        r = subprocess.run([SHARP, "--mode", "validate", "-c", f.name], capture_output=True, text=True,
                           timeout=20 * SLOW)
        return r.returncode, r.stdout + r.stderr
    finally:
        os.unlink(f.name)


def test_refusals():
    ok = static_cluster("primary", 1)
    rc, out = validate([aggregate("agg", "primary"), ok])
    assert rc == 0, out
    cases = [
        ([aggregate("agg", "primary", lb_policy="ROUND_ROBIN"), ok],
         "cluster provided LB not specified but cluster 'agg' provided one"),
        ([aggregate("agg"), ok], "typed_config.clusters: needs at least 1 item"),
        ([aggregate("agg", "agg"), ok], "names itself: a loop"),
        ([aggregate("agg", "primary", "primary"), ok], "listed twice"),
        ([aggregate("agg", "inner"), aggregate("inner", "primary"), ok], "aggregates do not nest"),
        ([aggregate("agg", "primary", health_checks=[HC]), ok], "clusters[0].health_checks: does not apply to an aggregate cluster"),
        ([aggregate("agg", "primary", load_assignment={"cluster_name": "agg"}), ok], "load_assignment"),
        ([aggregate("agg", "primary", common_lb_config={"zone_aware_lb_config": {}}), ok],
         "common_lb_config.zone_aware_lb_config"),
        ([aggregate("agg", "primary", circuit_breakers={"thresholds": [{"max_requests": 5}]}), ok],
         "max_requests: does not apply to an aggregate cluster"),
        ([dict(aggregate("agg", "primary"), cluster_type={"name": "envoy.clusters.redis", "typed_config": {
            "@type": AGG, "clusters": ["primary"]}}), ok], "cluster type 'envoy.clusters.redis' is not supported"),
    ]
    for clusters, want in cases:
        rc, out = validate(clusters)
        assert rc == 1 and want in out, (want, out)
    # what the aggregate keeps: retry thresholds and the panic threshold
    rc, out = validate([aggregate("agg", "primary", circuit_breakers={"thresholds": [{"max_retries": 1}]},
                                  common_lb_config={"healthy_panic_threshold": {"value": 0}}), ok])
    assert rc == 0, out


def tcp_bootstrap(listen, admin, clusters):
    return f"""admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tp
          cluster: agg
  clusters: {json.dumps(clusters)}
"""


def via_tcp(port):
    """The x-upstream-name of a request sent through the TCP proxy."""
    import socket
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        out = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            out += c
    finally:
        s.close()
    for line in out.split(b"\r\n\r\n")[0].decode().split("\r\n"):
        k, _, v = line.partition(":")
        if k.strip().lower() == "x-upstream-name":
            return v.strip()
    return None


def test_tcp_proxy_chooses_a_member_per_connection(procs):
    p0, s0 = upstreams(procs, "p0", "s0")
    for primary_health, want in (("HEALTHY", "p0"), ("UNHEALTHY", "s0")):
        primary = static_cluster("primary", p0.port)
        primary["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["health_status"] = primary_health
        listen, admin = free_port(), free_port()
        s = start(procs, tcp_bootstrap(listen, admin, [aggregate("agg", "primary", "secondary"), primary,
                                                        static_cluster("secondary", s0.port)]), admin)
        assert [via_tcp(listen) for _ in range(5)] == [want] * 5
        s.stop()


def test_mirror_to_an_aggregate_goes_to_its_member(procs):
    p0, s0 = upstreams(procs, "p0", "s0")
    listen, admin = free_port(), free_port()
    text = bootstrap(listen, admin, [aggregate("agg", "primary"), static_cluster("primary", p0.port),
                                     static_cluster("secondary", s0.port)])
    text = text.replace("route: { cluster: agg }",
                        "route: { cluster: secondary, request_mirror_policies: [ { cluster: agg } ] }")
    start(procs, text, admin)
    assert names(listen, 5) == [(200, "s0")] * 5
    wait_for(lambda: stat(admin, "cluster.primary.upstream_rq_total") == 5, 5, "the 5 copies on the member")
