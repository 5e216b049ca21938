"""Zone-aware routing (cluster_manager.local_cluster_name) and Envoy's typed
load balancing policies (load_balancing_policy): how traffic splits between
zones, the lb_zone_* stats, and what is refused."""
import http.client
import threading
import time
from collections import Counter

import json
import os
import tempfile

from conftest import Upstream, admin_get, free_port, run_sharp_config, stat, validate_config

N = 400


def endpoints(zones):
    """LocalityLbEndpoints YAML for {zone: [port, ...]}."""
    out = ""
    for zone, ports in zones.items():
        out += f"      - locality: {{ zone: {zone} }}\n        lb_endpoints:\n"
        for p in ports:
            out += f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}\n"
    return out


def config(listen, admin, local_zones, upstream_zones, svc_extra="", node_zone="za", local_name="local",
           local_eds=None):
    """A bootstrap whose node is in node_zone: the local cluster lists the
    proxies per zone (their ports are never contacted), the svc cluster
    the upstreams per zone; every request goes to svc."""
    return f"""\
node: {{ locality: {{ zone: {node_zone} }} }}
cluster_manager: {{ local_cluster_name: {local_name} }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: listener_0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: svc }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{local_cluster(local_zones, local_eds)}  - name: svc
    type: STATIC
    connect_timeout: 1s
{svc_extra}    load_assignment:
      cluster_name: svc
      endpoints:
{endpoints(upstream_zones)}"""


def local_cluster(zones, eds_path):
    if eds_path:
        return f"""\
  - name: local
    type: EDS
    connect_timeout: 1s
    eds_cluster_config: {{ eds_config: {{ path_config_source: {{ path: {eds_path} }} }} }}
"""
    return f"""\
  - name: local
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: local
      endpoints:
{endpoints(zones)}"""


def write_local_eds(path, version, zones):
    """The local cluster's endpoints as an EDS file: {zone: n proxies}."""
    cla = {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "local",
           "endpoints": [{"locality": {"zone": z}, "lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 100 + 10 * k + i}}}}
               for i in range(n)]} for k, (z, n) in enumerate(zones.items())]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"version_info": str(version), "resources": [cla]}, f)
    os.replace(tmp, path)


def typed_policy(name, typed, fields=""):
    return f"""\
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.{name}
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.{name}.v3.{typed}
{fields}"""


def spread(listen, n=N):
    """Which upstream answered each of n sequential requests."""
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


def start_upstreams(procs, zones):
    """{zone: n} -> {zone: [Upstream]} named <zone>-<i>."""
    ups = {z: [Upstream(f"{z}-{i}") for i in range(n)] for z, n in zones.items()}
    for us in ups.values():
        procs += us
    return ups


def ports(ups):
    return {z: [u.port for u in us] for z, us in ups.items()}


def in_zone(seen, zone):
    return sum(v for k, v in seen.items() if k.startswith(zone + "-"))


def test_residual_split_with_typed_round_robin(procs):
    # Zone za has 1 of the 4 upstream hosts (25%) but 1 of the 2 proxies
    # (50%): half of this proxy's requests stay in za, the rest cross to zb,
    # the zone with the residual capacity.
    ups = start_upstreams(procs, {"za": 1, "zb": 3})
    listen, admin = free_port(), free_port()
    pol = typed_policy("round_robin", "RoundRobin",
                       "            locality_lb_config: { zone_aware_lb_config: { min_cluster_size: 1 } }\n")
    run_sharp_config(procs, config(listen, admin, {"za": [1], "zb": [2]}, ports(ups), svc_extra=pol), admin,
                     concurrency=1)
    seen = spread(listen)
    local = in_zone(seen, "za")
    assert 0.40 * N < local < 0.60 * N, seen
    assert in_zone(seen, "zb") == N - local
    assert {"zb-0", "zb-1", "zb-2"} <= set(seen), seen
    sampled = stat(admin, "cluster.svc.lb_zone_routing_sampled")
    cross = stat(admin, "cluster.svc.lb_zone_routing_cross_zone")
    assert sampled == local and cross == N - local, (sampled, cross, seen)
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") == 0
    assert stat(admin, "cluster.svc.lb_recalculate_zone_structures") >= 1
    assert stat(admin, "cluster.svc.lb_zone_cluster_too_small") == 0
    assert stat(admin, "cluster.svc.lb_zone_no_capacity_left") == 0
    # the admin shows each host's locality
    text = admin_get(admin, "/clusters")
    assert f"svc::127.0.0.1:{ups['za'][0].port}::zone::za\n" in text, text
    assert f"svc::127.0.0.1:{ups['zb'][2].port}::zone::zb\n" in text, text
    hosts = {h["address"]["socket_address"]["port_value"]: h for c in json.loads(
        admin_get(admin, "/clusters?format=json"))["cluster_statuses"] if c["name"] == "svc" for h in c["host_statuses"]}
    assert hosts[ups["zb"][0].port]["locality"] == {"zone": "zb"}, hosts


def test_all_local_with_enough_capacity_lb_policy(procs):
    # za has half of the upstream hosts and a third of the proxies: every
    # request stays in za (lb_policy with common_lb_config's settings).
    ups = start_upstreams(procs, {"za": 2, "zb": 2})
    listen, admin = free_port(), free_port()
    extra = "    lb_policy: ROUND_ROBIN\n    common_lb_config: { zone_aware_lb_config: { min_cluster_size: 1 } }\n"
    run_sharp_config(procs, config(listen, admin, {"za": [1], "zb": [2, 3]}, ports(ups), svc_extra=extra), admin,
                     concurrency=1)
    seen = spread(listen)
    assert seen == Counter({"za-0": N // 2, "za-1": N // 2}), seen
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") == N
    assert stat(admin, "cluster.svc.lb_zone_routing_sampled") == 0
    assert stat(admin, "cluster.svc.lb_zone_routing_cross_zone") == 0


def test_small_cluster_and_routing_disabled(procs):
    # Envoy's default min_cluster_size is 6: with 4 upstream hosts there is
    # no locality routing, the requests go round robin over all of them.
    ups = start_upstreams(procs, {"za": 2, "zb": 2})
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, config(listen, admin, {"za": [1], "zb": [2, 3]}, ports(ups)), admin, concurrency=1)
    seen = spread(listen)
    assert all(v == N // 4 for v in seen.values()) and len(seen) == 4, seen
    assert stat(admin, "cluster.svc.lb_zone_cluster_too_small") == 1
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") == 0
    # routing_enabled 0%: none of the picks is considered
    listen, admin = free_port(), free_port()
    pol = typed_policy("random", "Random", "            locality_lb_config: { zone_aware_lb_config: "
                                           "{ min_cluster_size: 1, routing_enabled: { value: 0 } } }\n")
    run_sharp_config(procs, config(listen, admin, {"za": [1], "zb": [2, 3]}, ports(ups), svc_extra=pol), admin,
                     concurrency=1)
    seen = spread(listen)
    assert 0.35 * N < in_zone(seen, "zb") < 0.65 * N, seen
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") == 0
    assert stat(admin, "cluster.svc.lb_zone_cluster_too_small") == 0


def test_local_cluster_not_listing_this_zone(procs):
    # The local cluster has no proxy in this node's zone: its view of the
    # fleet is wrong, so there is no locality routing (lb_local_cluster_not_ok).
    ups = start_upstreams(procs, {"za": 1, "zb": 1})
    listen, admin = free_port(), free_port()
    extra = "    common_lb_config: { zone_aware_lb_config: { min_cluster_size: 1 } }\n"
    run_sharp_config(procs, config(listen, admin, {"zb": [1], "zc": [2]}, ports(ups), svc_extra=extra), admin,
                     concurrency=1)
    seen = spread(listen, 100)
    assert seen == Counter({"za-0": 50, "zb-0": 50}), seen
    assert stat(admin, "cluster.svc.lb_local_cluster_not_ok") == 1
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") == 0


def test_local_cluster_from_eds_moves_the_split(procs):
    # The local cluster comes from an EDS file: one proxy in each zone at
    # first (half of the requests stay in za, which has a quarter of the
    # upstream), then three more proxies in zb: za now has a quarter of the
    # proxies for a quarter of the upstream, and every request stays there.
    ups = start_upstreams(procs, {"za": 1, "zb": 3})
    eds = os.path.join(tempfile.mkdtemp(prefix="sharp-zone-"), "local.json")
    write_local_eds(eds, 1, {"za": 1, "zb": 1})
    listen, admin = free_port(), free_port()
    pol = typed_policy("least_request", "LeastRequest",
                       "            locality_lb_config: { zone_aware_lb_config: { min_cluster_size: 4 } }\n")
    run_sharp_config(procs, config(listen, admin, None, ports(ups), svc_extra=pol, local_eds=eds), admin,
                     concurrency=2)
    seen = spread(listen)
    assert 0.40 * N < in_zone(seen, "za") < 0.60 * N, seen
    recalculated = stat(admin, "cluster.svc.lb_recalculate_zone_structures")
    write_local_eds(eds, 2, {"za": 1, "zb": 3})
    deadline = time.time() + 10
    while stat(admin, "cluster.local.update_success") < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    seen = spread(listen)
    assert seen == Counter({"za-0": N}), seen
    assert stat(admin, "cluster.svc.lb_recalculate_zone_structures") > recalculated
    assert stat(admin, "cluster.svc.lb_zone_routing_all_directly") >= N


def test_typed_least_request_prefers_idle_hosts(procs):
    # One of four hosts answers /work only after 3 s. With the typed
    # LeastRequest policy and choice_count 4 the held requests keep that
    # host out of nearly every sample; round robin sends it a quarter.
    slow = Upstream("slow", extra=("--service-time-ms", "3000"))
    fast = [Upstream(f"fast{i}") for i in range(3)]
    procs += [slow, *fast]
    results = {}
    for name, extra in (("least_request", typed_policy("least_request", "LeastRequest",
                                                       "            choice_count: 4\n")),
                        ("round_robin", typed_policy("round_robin", "RoundRobin"))):
        listen, admin = free_port(), free_port()
        y = config(listen, admin, {"za": [1]}, {"za": [slow.port] + [u.port for u in fast]}, svc_extra=extra)
        s = run_sharp_config(procs, y, admin, concurrency=1)
        seen = Counter()
        lock = threading.Lock()

        def one():
            c = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
            c.request("GET", "/work")
            r = c.getresponse()
            r.read()
            with lock:
                seen[r.getheader("x-upstream-name")] += 1
            c.close()

        threads = []
        for _ in range(40):
            t = threading.Thread(target=one)
            t.start()
            threads.append(t)
            time.sleep(0.02)
        for t in threads:
            t.join(15)
        assert sum(seen.values()) == 40, seen
        results[name] = seen["slow"]
        s.stop()
    assert results["round_robin"] == 10, results
    assert results["least_request"] <= 3, results


def test_refusals():
    # a typed policy's fields SHARP does not implement, and the local
    # cluster's name, are checked at load
    def out_of(svc_extra, **kw):
        return validate_config(config(1, 2, {"za": [1]}, {"za": [3]}, svc_extra=svc_extra, **kw))

    rc, out = out_of("", local_name="nope")
    assert rc == 1 and "cluster_manager.local_cluster_name: local cluster 'nope' must be defined" in out, out
    rc, out = out_of(typed_policy("round_robin", "RoundRobin",
                                  "            slow_start_config: { slow_start_window: 10s }\n"))
    assert rc == 1 and "slow_start_config" in out and "slow start" in out, out
    rc, out = out_of(typed_policy("least_request", "LeastRequest",
                                  "            locality_lb_config: { locality_weighted_lb_config: {} }\n"))
    assert rc == 0, out  # locality-weighted balancing (test_locality_weighted.py)
    rc, out = out_of(typed_policy("least_request", "LeastRequest", "            selection_method: FULL_SCAN\n"))
    assert rc == 1 and "selection_method" in out, out
    rc, out = out_of(typed_policy("least_request", "LeastRequest", "            choice_count: 1\n"))
    assert rc == 1 and "choice_count" in out, out
    rc, out = out_of(typed_policy("least_request", "LeastRequest",
                                  "            active_request_bias: { default_value: 1.5, runtime_key: k }\n"))
    assert rc == 1 and "active_request_bias.runtime_key" in out, out
    rc, out = out_of(typed_policy("random", "Random") +
                     "    common_lb_config: { zone_aware_lb_config: { min_cluster_size: 1 } }\n")
    assert rc == 1 and "common_lb_config.zone_aware_lb_config" in out and "locality_lb_config" in out, out
    rc, out = out_of("    common_lb_config: { zone_aware_lb_config: { min_cluster_size: 1 }, "
                     "locality_weighted_lb_config: {} }\n")
    assert rc == 1 and "locality_weighted_lb_config" in out, out
    # Envoy does not read lb_policy and its settings once load_balancing_policy
    # is set (ClusterInfoImpl): accepted, and the policy's own values apply
    for legacy in ("    lb_policy: LEAST_REQUEST\n", "    least_request_lb_config: { choice_count: 3 }\n",
                   "    lb_policy: LOAD_BALANCING_POLICY_CONFIG\n"):
        rc, out = out_of(legacy + typed_policy("random", "Random"))
        assert rc == 0, (legacy, out)
    # the first policy SHARP implements is used; one before it that SHARP
    # cannot run is refused (Envoy may run it)
    ring = """\
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.ring_hash
          typed_config: { "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash }
      - typed_extension_config:
          name: envoy.load_balancing_policies.random
          typed_config: { "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random }
"""
    rc, out = out_of(ring)
    assert rc == 1 and "policies[0]" in out and "RingHash" in out, out
    # accepted: the typed policies with the settings SHARP implements
    rc, out = out_of(typed_policy("least_request", "LeastRequest",
                                  "            choice_count: 3\n"
                                  "            active_request_bias: { default_value: 0.5 }\n"
                                  "            locality_lb_config: { zone_aware_lb_config: "
                                  "{ min_cluster_size: 1, fail_traffic_on_panic: true } }\n"))
    assert rc == 0, out
