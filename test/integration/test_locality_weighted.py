"""Locality-weighted load balancing (common_lb_config.locality_weighted_lb_config
and a typed policy's locality_lb_config): traffic splits by the localities'
load_balancing_weight scaled by their healthy share, and what is refused."""
import http.client
from collections import Counter

from conftest import Upstream, free_port, run_sharp_config, validate_config

N = 400


def config(listen, admin, localities, lb="common_lb_config: { locality_weighted_lb_config: {} }\n"):
    """localities: [(zone, weight or None, [port, ...])]."""
    eps = ""
    for zone, weight, ports in localities:
        eps += f"      - locality: {{ zone: {zone} }}\n"
        if weight is not None:
            eps += f"        load_balancing_weight: {weight}\n"
        eps += "        lb_endpoints:\n"
        for p in ports:
            eps += f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}\n"
    lb = "".join("    " + ln + "\n" for ln in lb.splitlines())
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
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
                route: {{ cluster: svc }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: svc
    type: STATIC
    connect_timeout: 1s
{lb}    load_assignment:
      cluster_name: svc
      endpoints:
{eps}"""


def spread(listen, n=N):
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    seen = Counter()
    for _ in range(n):
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        seen[r.getheader("x-upstream-name")] += 1
    c.close()
    return seen


def test_split_by_locality_weight(procs):
    ups = [Upstream(n) for n in ("a0", "b0", "b1", "c0")]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    # a: weight 1, one host; b: weight 3, two hosts; c: no weight (no load)
    run_sharp_config(procs, config(listen, admin, [("za", 1, [ups[0].port]), ("zb", 3, [ups[1].port, ups[2].port]),
                                                   ("zc", None, [ups[3].port])]), admin, concurrency=1)
    seen = spread(listen)
    assert seen["c0"] == 0, seen
    a = seen["a0"]
    assert abs(a - N / 4) <= 0.05 * N, seen  # 1 : 3 of the localities, whatever their host counts
    assert abs(seen["b0"] - seen["b1"]) <= 0.05 * N, seen


def test_typed_policy_locality_weighted(procs):
    ups = [Upstream(n) for n in ("a0", "b0")]
    procs.extend(ups)
    listen, admin = free_port(), free_port()
    lb = """\
load_balancing_policy:
  policies:
  - typed_extension_config:
      name: envoy.load_balancing_policies.random
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random
        locality_lb_config: { locality_weighted_lb_config: {} }
"""
    run_sharp_config(procs, config(listen, admin, [("za", 1, [ups[0].port]), ("zb", 4, [ups[1].port])], lb=lb),
                     admin, concurrency=1)
    seen = spread(listen)
    assert abs(seen["a0"] - N / 5) <= 0.05 * N, seen


def test_refusals():
    ok = config(1, 2, [("za", 1, [1])])
    rc, out = validate_config(ok)
    assert rc == 0, out
    rc, out = validate_config(config(1, 2, [("za", 0, [1])]))
    assert rc == 1 and "load_balancing_weight" in out, out
    both = """\
common_lb_config: { locality_weighted_lb_config: {} }
load_balancing_policy:
  policies:
  - typed_extension_config:
      name: envoy.load_balancing_policies.random
      typed_config: { "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random }
"""
    rc, out = validate_config(config(1, 2, [("za", 1, [1])], lb=both))
    assert rc == 1 and "common_lb_config.locality_weighted_lb_config: applies to lb_policy only" in out, out
    subset = """\
common_lb_config: { locality_weighted_lb_config: {} }
lb_subset_config: { locality_weight_aware: true, subset_selectors: [ { keys: [ "v" ] } ] }
"""
    rc, out = validate_config(config(1, 2, [("za", 1, [1])], lb=subset))
    assert rc == 1 and "locality_weight_aware" in out, out
