"""Subset load balancing (Cluster.lb_subset_config) with the real binary and
named test upstreams: a route's metadata_match picks the subset of hosts
whose "envoy.lb" endpoint metadata has exactly its pairs (Envoy's
architecture overview example: stage prod/canary/dev, selectors [v, stage]
and [stage]), weighted clusters merge theirs over the route's, the
header_to_metadata filter's "envoy.lb" dynamic metadata is merged over
both, each fallback policy (NO_FALLBACK, ANY_ENDPOINT, DEFAULT_SUBSET,
panic_mode_any), typed values (a number is not a string), an EDS update
moving hosts between subsets, the lb_subsets_* stats, configs refused by
name, and the Envoy corpus bootstraps that use it."""
import collections
import json
import os
import re
import time

import pytest

from conftest import (SLOW, Upstream, free_port, h1_request, run_sharp_config, stat, upstream_admin,
                      validate_config, wait_for)

CORPUS = "/work/shared/envoy-corpus"
H2M = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Envoy's example hosts: name -> envoy.lb metadata
EXAMPLE = {
    "host1": {"v": "1.0", "stage": "prod"},
    "host2": {"v": "1.0", "stage": "prod"},
    "host3": {"v": "1.1", "stage": "canary"},
    "host4": {"v": "1.2-pre", "stage": "dev"},
}


@pytest.fixture
def hosts(procs):
    """One named upstream per example host: name -> Upstream."""
    out = {}
    for n in EXAMPLE:
        u = Upstream(name=n)
        procs.append(u)
        out[n] = u
    return out


def lb_endpoints(hosts, meta):
    return [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": hosts[n].port}}},
             **({"metadata": {"filter_metadata": {"envoy.lb": meta[n]}}} if meta.get(n) is not None else {})}
            for n in hosts]


def cluster(name, hosts, meta, subset, lb_policy="ROUND_ROBIN", eds_path=None):
    c = {"name": name, "connect_timeout": "1s", "lb_policy": lb_policy}
    if subset is not None:
        c["lb_subset_config"] = subset
    if eds_path:
        c["type"] = "EDS"
        c["eds_cluster_config"] = {"eds_config": {"path_config_source": {"path": eds_path}}}
    else:
        c["type"] = "STATIC"
        c["load_assignment"] = {"cluster_name": name, "endpoints": [{"lb_endpoints": lb_endpoints(hosts, meta)}]}
    return c


def route(prefix, cluster_name="svc", match=None, **extra):
    r = {"match": {"prefix": prefix}, "route": {"cluster": cluster_name, **extra}}
    if match is not None:
        r["route"]["metadata_match"] = {"filter_metadata": {"envoy.lb": match}}
    return r


def bootstrap(listen, admin, clusters, routes, filters=()):
    """JSON is YAML: the bootstrap as one JSON document."""
    hcm = {"@type": HCM, "stat_prefix": "ingress_http",
           "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
           "http_filters": list(filters) + [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": clusters}}, indent=1)


def start(procs, clusters, routes, filters=()):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap(listen, admin, clusters, routes, filters), admin)
    return listen, admin


def who(port, path, headers=None):
    st, h, body = h1_request(port, path, headers=headers)
    return st, h.get("x-upstream-name"), body


def names(port, path, n=12, headers=None):
    """The upstreams that answered n requests (all must be 200)."""
    seen = collections.Counter()
    for _ in range(n):
        st, name, body = who(port, path, headers)
        assert st == 200, (path, st, body)
        seen[name] += 1
    return seen


EXAMPLE_SUBSET = {"subset_selectors": [{"keys": ["v", "stage"]}, {"keys": ["stage"]}]}


def test_route_metadata_match_picks_the_subset(procs, hosts):
    """Envoy's table: stage canary -> host3, v 1.2-pre + stage dev -> host4,
    v 1.0 + stage prod -> host1 and host2; with NO_FALLBACK (the default)
    a route without criteria, with keys no selector has, or with a subset
    that does not exist is answered as a cluster without hosts."""
    routes = [route("/canary", match={"stage": "canary"}),
              route("/dev", match={"v": "1.2-pre", "stage": "dev"}),
              route("/prod10", match={"v": "1.0", "stage": "prod"}),
              route("/prod", match={"stage": "prod"}),
              route("/v10", match={"v": "1.0"}),
              route("/other", match={"other": "x"}),
              route("/test", match={"stage": "test"}),
              route("/")]
    listen, admin = start(procs, [cluster("svc", hosts, EXAMPLE, EXAMPLE_SUBSET)], routes)
    assert set(names(listen, "/canary")) == {"host3"}
    assert set(names(listen, "/dev")) == {"host4"}
    assert set(names(listen, "/prod10")) == {"host1", "host2"}
    assert set(names(listen, "/prod")) == {"host1", "host2"}  # round robin inside the subset
    for path in ("/v10", "/other", "/test", "/"):
        st, name, body = who(listen, path)
        assert st == 503 and body == b"no healthy upstream", (path, st, body)
    # [v, stage]: 3 subsets (host1 and host2 share one), [stage]: 3
    assert stat(admin, "cluster.svc.lb_subsets_active") == 6
    assert stat(admin, "cluster.svc.lb_subsets_created") == 6
    assert stat(admin, "cluster.svc.lb_subsets_removed") == 0
    assert stat(admin, "cluster.svc.lb_subsets_selected") == 48
    assert stat(admin, "cluster.svc.lb_subsets_fallback") == 0
    assert stat(admin, "cluster.svc.upstream_cx_none_healthy") == 4


def test_any_endpoint_and_default_subset(procs, hosts):
    """ANY_ENDPOINT balances over every host when no subset matches;
    DEFAULT_SUBSET over the hosts matching default_subset; both count
    lb_subsets_fallback."""
    any_c = cluster("any", hosts, EXAMPLE, {**EXAMPLE_SUBSET, "fallback_policy": "ANY_ENDPOINT"})
    dflt_c = cluster("dflt", hosts, EXAMPLE, {**EXAMPLE_SUBSET, "fallback_policy": "DEFAULT_SUBSET",
                                              "default_subset": {"stage": "prod"}})
    routes = [route("/any/canary", "any", match={"stage": "canary"}),
              route("/any/", "any", match={"v": "1.0"}),
              route("/dflt/canary", "dflt", match={"stage": "canary"}),
              route("/dflt/", "dflt")]
    listen, admin = start(procs, [any_c, dflt_c], routes)
    assert set(names(listen, "/any/canary")) == {"host3"}
    assert set(names(listen, "/any/x", n=16)) == set(EXAMPLE)
    assert set(names(listen, "/dflt/canary")) == {"host3"}
    assert set(names(listen, "/dflt/x")) == {"host1", "host2"}
    assert stat(admin, "cluster.any.lb_subsets_fallback") == 16
    assert stat(admin, "cluster.any.lb_subsets_selected") == 12
    assert stat(admin, "cluster.dflt.lb_subsets_fallback") == 12
    assert stat(admin, "cluster.dflt.lb_subsets_fallback_panic") == 0


def test_default_subset_without_hosts_and_panic_mode_any(procs, hosts):
    """A default subset no host matches gives no host (503), unless
    panic_mode_any, which then balances over all hosts
    (lb_subsets_fallback_panic)."""
    sub = {**EXAMPLE_SUBSET, "fallback_policy": "DEFAULT_SUBSET", "default_subset": {"stage": "gone"}}
    routes = [route("/strict/", "strict"), route("/panic/", "panic")]
    listen, admin = start(procs, [cluster("strict", hosts, EXAMPLE, sub),
                                  cluster("panic", hosts, EXAMPLE, {**sub, "panic_mode_any": True})], routes)
    st, _, body = who(listen, "/strict/")
    assert st == 503 and body == b"no healthy upstream"
    assert set(names(listen, "/panic/", n=16)) == set(EXAMPLE)
    assert stat(admin, "cluster.panic.lb_subsets_fallback_panic") == 16
    assert stat(admin, "cluster.panic.lb_subsets_fallback") == 0
    assert stat(admin, "cluster.strict.lb_subsets_fallback_panic") == 0


def test_weighted_clusters_merge_their_criteria(procs, hosts):
    """A weighted cluster's metadata_match is merged over the route's (the
    overview's second table): the route says stage prod, cluster "a" says
    stage canary, cluster "b" says nothing (the route's criteria)."""
    sub = {**EXAMPLE_SUBSET}
    r = {"match": {"prefix": "/"}, "route": {
        "metadata_match": {"filter_metadata": {"envoy.lb": {"v": "1.0", "stage": "prod"}}},
        "weighted_clusters": {"clusters": [
            {"name": "a", "weight": 1, "response_headers_to_add": [{"header": {"key": "x-wc", "value": "a"}}],
             "metadata_match": {"filter_metadata": {"envoy.lb": {"v": "1.1", "stage": "canary"}}}},
            {"name": "b", "weight": 1, "response_headers_to_add": [{"header": {"key": "x-wc", "value": "b"}}]}]}}}
    listen, admin = start(procs, [cluster("a", hosts, EXAMPLE, sub), cluster("b", hosts, EXAMPLE, sub)], [r])
    seen = collections.defaultdict(set)
    for _ in range(40):
        st, h, body = h1_request(listen, "/")
        assert st == 200, body
        seen[h["x-wc"]].add(h["x-upstream-name"])
    assert seen["a"] == {"host3"}
    assert seen["b"] == {"host1", "host2"}


def test_typed_values(procs, hosts):
    """Values compare as protobuf Values: the number 1 matches 1.0 but not
    the string "1", a bool is not the string "true"."""
    meta = {"host1": {"shard": 1}, "host2": {"shard": "1"}, "host3": {"canary": True}, "host4": None}
    sub = {"subset_selectors": [{"keys": ["shard"]}, {"keys": ["canary"]}]}
    routes = [route("/num", match={"shard": 1.0}), route("/str", match={"shard": "1"}),
              route("/boolstr", match={"canary": "true"}), route("/bool", match={"canary": True})]
    listen, admin = start(procs, [cluster("svc", hosts, meta, sub)], routes)
    assert set(names(listen, "/num", n=4)) == {"host1"}
    assert set(names(listen, "/str", n=4)) == {"host2"}
    assert set(names(listen, "/bool", n=4)) == {"host3"}
    assert who(listen, "/boolstr")[0] == 503
    assert stat(admin, "cluster.svc.lb_subsets_active") == 3


H2M_FILTER = {"name": "envoy.filters.http.header_to_metadata", "typed_config": {
    "@type": H2M, "request_rules": [{
        "header": "x-version",
        "on_header_present": {"metadata_namespace": "envoy.lb", "key": "version", "type": "STRING"},
        "on_header_missing": {"metadata_namespace": "envoy.lb", "key": "default", "value": "true",
                              "type": "STRING"},
        "remove": False}]}}


def test_header_to_metadata_selects_the_subset(procs, hosts):
    """Envoy's header-to-metadata example: x-version goes into envoy.lb
    (version), a request without it gets default=true; the dynamic
    metadata is merged over the route's criteria and picks the subset; an
    unknown version falls back to any endpoint."""
    meta = {"host1": {"default": "true"}, "host2": {"version": "1.0"}, "host3": {"version": "2.0"},
            "host4": {"version": "2.0", "stage": "canary"}}
    sub = {"fallback_policy": "ANY_ENDPOINT", "subset_selectors": [{"keys": ["default"]}, {"keys": ["version"]},
                                                                   {"keys": ["version", "stage"]}]}
    routes = [route("/canary", match={"stage": "canary"}), route("/")]
    listen, admin = start(procs, [cluster("svc", hosts, meta, sub)], routes, filters=[H2M_FILTER])
    assert set(names(listen, "/", n=4)) == {"host1"}
    assert set(names(listen, "/", n=4, headers={"x-version": "1.0"})) == {"host2"}
    assert set(names(listen, "/", n=4, headers={"x-version": "2.0"})) == {"host3", "host4"}
    # the route's stage joins the header's version: [version, stage]
    assert set(names(listen, "/canary", n=4, headers={"x-version": "2.0"})) == {"host4"}
    assert set(names(listen, "/", n=16, headers={"x-version": "9"})) == set(EXAMPLE)
    assert stat(admin, "cluster.svc.lb_subsets_selected") == 16
    assert stat(admin, "cluster.svc.lb_subsets_fallback") == 16


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus")
def test_corpus_header_to_metadata_example(procs, hosts):
    """The Envoy docs' header-to-metadata bootstrap (a STRICT_DNS cluster
    with lb_subset_config) runs as it is, on loopback ports."""
    with open(os.path.join(CORPUS, "envoy__docs__root__configuration__http__http_filters___include__"
                                   "header-to-metadata-filter.yaml")) as f:
        y = f.read()
    listen, admin = free_port(), free_port()
    y = y.replace("address: 0.0.0.0\n        port_value: 80", f"address: 127.0.0.1\n        port_value: {listen}")
    y = y.replace("port_value: 8080", f"port_value: {hosts['host1'].port}")
    y = y.replace("port_value: 8081", f"port_value: {hosts['host2'].port}")
    y = f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n" + y
    run_sharp_config(procs, y, admin)
    wait_for(lambda: stat(admin, "cluster.versioned-cluster.membership_total") == 2, 10 * SLOW, "DNS answers")
    assert set(names(listen, "/", n=4)) == {"host1"}
    assert set(names(listen, "/", n=4, headers={"x-version": "1.0"})) == {"host2"}
    assert set(names(listen, "/", n=8, headers={"x-version": "3"})) == {"host1", "host2"}
    assert stat(admin, "cluster.versioned-cluster.lb_subsets_active") == 2


def test_selector_fallback_policies(procs, hosts):
    """Per selector: NO_FALLBACK on [stage] (listed first, so Envoy's
    selector map gives it its policy) answers stage=test with no host while
    the cluster falls back to its default subset for other criteria;
    KEYS_SUBSET on [v, stage] retries with [stage] alone; ANY_ENDPOINT on
    [v] balances over every host without counting lb_subsets_fallback."""
    sub = {"fallback_policy": "DEFAULT_SUBSET", "default_subset": {"stage": "prod"}, "subset_selectors": [
        {"keys": ["stage"], "fallback_policy": "NO_FALLBACK"},
        {"keys": ["v", "stage"], "fallback_policy": "KEYS_SUBSET", "fallback_keys_subset": ["stage"]},
        {"keys": ["v"], "fallback_policy": "ANY_ENDPOINT"}]}
    routes = [route("/test", match={"stage": "test"}), route("/other", match={"other": "x"}),
              route("/keys", match={"v": "9", "stage": "canary"}), route("/v", match={"v": "9"})]
    listen, admin = start(procs, [cluster("svc", hosts, EXAMPLE, sub)], routes)
    st, _, body = who(listen, "/test")
    assert st == 503 and body == b"no healthy upstream"
    assert set(names(listen, "/other", n=4)) == {"host1", "host2"}
    assert set(names(listen, "/keys", n=4)) == {"host3"}
    assert set(names(listen, "/v", n=16)) == set(EXAMPLE)
    assert stat(admin, "cluster.svc.lb_subsets_fallback") == 4
    assert stat(admin, "cluster.svc.lb_subsets_selected") == 4


def test_single_host_per_subset(procs, hosts):
    """single_host_per_subset: each subset is its first host, even when
    more match (counted in lb_subsets_single_host_per_subset_duplicate)."""
    sub = {"subset_selectors": [{"keys": ["stage"], "single_host_per_subset": True}]}
    listen, admin = start(procs, [cluster("svc", hosts, EXAMPLE, sub)],
                          [route("/prod", match={"stage": "prod"})])
    assert set(names(listen, "/prod", n=6)) == {"host1"}
    assert stat(admin, "cluster.svc.lb_subsets_single_host_per_subset_duplicate") == 1
    assert stat(admin, "cluster.svc.lb_subsets_active") == 3


def test_metadata_fallback_list(procs, hosts):
    """metadata_fallback_policy FALLBACK_LIST: the route's fallback_list
    structs are tried in turn over the rest of its criteria (stage test,
    then gone, then canary: host3); without the policy the list is one
    more key, and no subset has it."""
    sub = {"subset_selectors": [{"keys": ["stage"]}]}
    crit = {"stage": "test", "fallback_list": [{"stage": "gone"}, {"stage": "canary"}]}
    routes = [route("/list/", "list", match=crit), route("/plain/", "plain", match=crit)]
    listen, admin = start(procs, [cluster("list", hosts, EXAMPLE, {**sub, "metadata_fallback_policy": "FALLBACK_LIST"}),
                                  cluster("plain", hosts, EXAMPLE, sub)], routes)
    assert set(names(listen, "/list/", n=4)) == {"host3"}
    assert who(listen, "/plain/")[0] == 503
    assert stat(admin, "cluster.list.lb_subsets_selected") == 4


def test_retries_stay_in_the_subset(procs, hosts):
    """A retry with the previous_hosts predicate asks the subset again: the
    failing prod host's requests are retried on the other prod host, never
    on a host outside the subset."""
    upstream_admin(hosts["host1"], "/admin/fault?status=503")
    retry = {"retry_on": "5xx", "num_retries": 2, "host_selection_retry_max_attempts": 3,
             "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
             "retry_back_off": {"base_interval": "0.005s"}}
    listen, admin = start(procs, [cluster("svc", hosts, EXAMPLE, EXAMPLE_SUBSET)],
                          [route("/", match={"stage": "prod"}, retry_policy=retry)])
    assert names(listen, "/", n=20) == {"host2": 20}
    assert stat(admin, "cluster.svc.upstream_rq_retry") >= 5  # round robin sends first tries to host1
    for n in ("host3", "host4"):
        assert upstream_admin(hosts[n], "/admin/stats")["requests"] == 1, n  # this call only


def test_list_as_any(procs, hosts):
    """list_as_any: a host whose version is a list is in the subset of each
    element; without it the list is one value."""
    meta = {"host1": {"v": ["1.0", "1.1"]}, "host2": {"v": "1.1"}, "host3": {"v": "2.0"}, "host4": None}
    sub = {"subset_selectors": [{"keys": ["v"]}]}
    routes = [route("/any/10", "any", match={"v": "1.0"}), route("/any/11", "any", match={"v": "1.1"}),
              route("/plain/10", "plain", match={"v": "1.0"}), route("/plain/11", "plain", match={"v": "1.1"})]
    listen, admin = start(procs, [cluster("any", hosts, meta, {**sub, "list_as_any": True}),
                                  cluster("plain", hosts, meta, sub)], routes)
    assert set(names(listen, "/any/10", n=4)) == {"host1"}
    assert set(names(listen, "/any/11", n=8)) == {"host1", "host2"}
    assert who(listen, "/plain/10")[0] == 503
    assert set(names(listen, "/plain/11", n=4)) == {"host2"}
    assert stat(admin, "cluster.any.lb_subsets_active") == 3
    assert stat(admin, "cluster.plain.lb_subsets_active") == 3  # [1.0, 1.1] is one value


def write_atomic(path, obj):
    tmp = f"{path}.tmp{time.time_ns()}"
    with open(tmp, "w") as f:
        f.write(json.dumps(obj))
    os.replace(tmp, path)


def test_eds_update_moves_hosts_between_subsets(procs, hosts, tmp_path):
    """An EDS update that relabels hosts remakes the subsets: canary moves
    from host3 to host4, dev disappears (removed), a new stage appears
    (created); lb_subsets_active follows."""
    eds = str(tmp_path / "eds.json")
    CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

    def push(version, meta):
        write_atomic(eds, {"version_info": str(version), "resources": [
            {"@type": CLA, "cluster_name": "svc", "endpoints": [{"lb_endpoints": lb_endpoints(hosts, meta)}]}]})

    push(1, EXAMPLE)
    sub = {"subset_selectors": [{"keys": ["stage"]}]}
    routes = [route("/canary", match={"stage": "canary"}), route("/dev", match={"stage": "dev"}),
              route("/beta", match={"stage": "beta"})]
    listen, admin = start(procs, [cluster("svc", hosts, EXAMPLE, sub, eds_path=eds)], routes)
    assert set(names(listen, "/canary", n=4)) == {"host3"}
    assert set(names(listen, "/dev", n=4)) == {"host4"}
    assert who(listen, "/beta")[0] == 503
    assert stat(admin, "cluster.svc.lb_subsets_active") == 3  # prod, canary, dev
    assert stat(admin, "cluster.svc.lb_subsets_created") == 3
    moved = {"host1": {"stage": "prod"}, "host2": {"stage": "beta"}, "host3": {"stage": "prod"},
             "host4": {"stage": "canary"}}
    push(2, moved)
    wait_for(lambda: who(listen, "/canary")[1] == "host4", 10 * SLOW, "canary moved to host4")
    assert set(names(listen, "/canary", n=4)) == {"host4"}
    assert set(names(listen, "/beta", n=4)) == {"host2"}
    assert who(listen, "/dev")[0] == 503
    assert stat(admin, "cluster.svc.lb_subsets_active") == 3  # prod, canary, beta
    assert stat(admin, "cluster.svc.lb_subsets_created") == 4
    assert stat(admin, "cluster.svc.lb_subsets_removed") == 1
    # metadata only (the same addresses): still a new set of subsets
    push(3, {**moved, "host2": {"stage": "prod"}})
    wait_for(lambda: who(listen, "/beta")[0] == 503, 10 * SLOW, "beta gone")
    assert stat(admin, "cluster.svc.lb_subsets_active") == 2
    assert stat(admin, "cluster.svc.lb_subsets_removed") == 2


def cluster_yaml(extra, lb_policy="ROUND_ROBIN", selectors='[{ keys: [stage] }]'):
    return f"""\
static_resources:
  clusters:
  - name: c
    type: STATIC
    connect_timeout: 1s
    lb_policy: {lb_policy}
    lb_subset_config:
      subset_selectors: {selectors}
{extra}    load_assignment:
      cluster_name: c
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }} }}
          metadata: {{ filter_metadata: {{ envoy.lb: {{ stage: prod }} }} }}
"""


@pytest.mark.parametrize("text,msg", [
    (cluster_yaml("      locality_weight_aware: true\n"), "locality_weight_aware"),
    (cluster_yaml("      list_as_any: true\n", selectors="[{ keys: [a, b] }]").replace(
        "{ stage: prod }", "{ a: [" + ",".join(map(str, range(40))) + "], b: [" + ",".join(map(str, range(40))) + "] }"),
     "more than SHARP's limit of 1024"),
    # Envoy's SubsetSelector checks
    (cluster_yaml("", selectors="[{ keys: [stage], fallback_keys_subset: [stage] }]"),
     "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy"),
    (cluster_yaml("", selectors="[{ keys: [stage], fallback_policy: KEYS_SUBSET }]"),
     "fallback_keys_subset cannot be empty"),
    (cluster_yaml("", selectors="[{ keys: [stage, v], fallback_policy: KEYS_SUBSET, fallback_keys_subset: [x] }]"),
     "fallback_keys_subset must be a subset of selector keys"),
    (cluster_yaml("", selectors="[{ keys: [stage, v], fallback_policy: KEYS_SUBSET, "
                                "fallback_keys_subset: [v, stage, v] }]"),
     "fallback_keys_subset cannot be equal to keys"),
    (cluster_yaml("", lb_policy="CLUSTER_PROVIDED"),
     "cluster: LB policy CLUSTER_PROVIDED cannot be combined with lb_subset_config"),
    (cluster_yaml("    load_balancing_policy: { policies: [ { typed_extension_config: { name: rr, typed_config: "
                  "{ \"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3."
                  "RoundRobin } } } ] }\n"),
     "cluster: load_balancing_policy cannot be combined with lb_subset_config"),
    (cluster_yaml("      fallback_policy: SOMETIMES\n"), "SOMETIMES"),
])
def test_refused_configs(text, msg):
    rc, out = validate_config(text)
    assert rc != 0 and msg in out, out


def test_accepted_configs():
    """A subset config without selectors is off (Envoy's isEnabled), and
    the typed values of metadata load."""
    rc, out = validate_config(cluster_yaml("", selectors="[]"))
    assert rc == 0, out
    rc, out = validate_config(cluster_yaml("      fallback_policy: DEFAULT_SUBSET\n      default_subset: "
                                           "{ stage: prod, n: 1, on: true, l: [a, 1], s: { x: y } }\n"
                                           "      panic_mode_any: true\n"))
    assert rc == 0, out
    # scale_locality_weight only scales locality_weight_aware's weights
    rc, out = validate_config(cluster_yaml("      scale_locality_weight: true\n"))
    assert rc == 0, out


def test_tcp_proxy_metadata_match(procs, hosts):
    """The TCP proxy's metadata_match picks the subset of its connections;
    a weighted cluster's is merged over it (the test upstreams answer HTTP
    through the TCP proxy, naming themselves)."""
    TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    listen1, listen2, admin = free_port(), free_port(), free_port()

    def listener(port, tp):
        return {"name": f"l{port}", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                                "typed_config": {"@type": TCP, "stat_prefix": f"t{port}", **tp}}]}]}
    lb = lambda m: {"filter_metadata": {"envoy.lb": m}}
    y = json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [listener(listen1, {"cluster": "svc", "metadata_match": lb({"stage": "canary"})}),
                          listener(listen2, {"metadata_match": lb({"stage": "canary"}), "weighted_clusters": {
                              "clusters": [{"name": "svc", "weight": 1, "metadata_match": lb({"stage": "dev"})}]}})],
            "clusters": [cluster("svc", hosts, EXAMPLE, EXAMPLE_SUBSET)]}})
    run_sharp_config(procs, y, admin)
    assert set(names(listen1, "/", n=4)) == {"host3"}
    assert set(names(listen2, "/", n=4)) == {"host4"}
    assert stat(admin, "cluster.svc.lb_subsets_selected") == 8


@pytest.mark.skipif(not os.path.isdir(CORPUS), reason="no Envoy corpus")
def test_corpus_files_using_subsets():
    """Every corpus bootstrap with lb_subset_config loads, or is refused
    for another feature than subset load balancing."""
    files = [f for f in sorted(os.listdir(CORPUS)) if re.search(r"\.ya?ml$", f)
             and "lb_subset_config" in open(os.path.join(CORPUS, f)).read()]
    assert len(files) >= 3
    loaded = 0
    for f in files:
        with open(os.path.join(CORPUS, f)) as fh:
            rc, out = validate_config(fh.read())
        assert "subset" not in out.lower() or rc == 0, (f, out)
        loaded += rc == 0
    assert loaded >= 1
