"""RTDS: a layered_runtime rtds_layer whose values come from a Runtime
resource (envoy.service.runtime.v3) served by the test control plane on
Envoy's official protos (ADS, or an api_config_source of its own; state of
the world and incremental) or read from a file. A pushed value changes how
a route's runtime_fraction sends real requests; the layer sits at its place
among the layers (an admin override still wins); an invalid Runtime is
NACKed naming it and the previous values stay; an incremental removal
clears the layer (a state-of-the-world absence removes nothing, as Envoy);
the workers wait for the layer's initial fetch; /runtime and the runtime.*
stats are Envoy's. Every wait is bounded; every process is stopped by PID."""
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, free_port, stat, validate_config, wait_for
from test_support import CORPUS as CORPUS_DIR
from test_xds_ads import ADS, CDS, H2, HCM, MODES, ROUTER, ads_config, env, ep, nacks, ready_state, wait_acked  # noqa: F401
from test_xds_file import write_atomic

RUNTIME = "type.googleapis.com/envoy.service.runtime.v3.Runtime"


def runtime_res(name, layer):
    return {"name": name, "resource": {"name": name, "layer": layer}}


def canary(pct):
    return {"routing": {"canary": pct}}


def rtds_source(mode, via_ads, timeout=None):
    src = {"resource_api_version": "V3"}
    if via_ads:
        src["ads"] = {}
    else:
        src["api_config_source"] = ads_config(mode)
    if timeout is not None:
        src["initial_fetch_timeout"] = timeout
    return src


def bootstrap(listen, admin, xds_port, ups, rtds_config, mode="GRPC", via_ads=True, rtds_name="rtds"):
    """Routes: / to `canary` when runtime_fraction routing.canary (0% by
    default and in the static layer) says so, else to `stable`. Layers:
    static, RTDS, admin."""
    routes = [{"match": {"prefix": "/", "runtime_fraction": {
                  "default_value": {"numerator": 0, "denominator": "HUNDRED"}, "runtime_key": "routing.canary"}},
               "route": {"cluster": "canary"}},
              {"match": {"prefix": "/"}, "route": {"cluster": "stable"}}]
    hcm = {"@type": HCM, "stat_prefix": "ingress",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    clusters = [{"name": n, "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": n, "endpoints": [{"lb_endpoints": [ep(ups[n].port)]}]}}
                for n in ("canary", "stable")]
    if xds_port:
        clusters.append({"name": "xds", "type": "STATIC", "connect_timeout": "1s",
                         "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                             "@type": H2, "explicit_http_config": {"http2_protocol_options": {}}}},
                         "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [ep(xds_port)]}]}})
    boot = {
        "node": {"id": "sharp-1", "cluster": "edge"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": clusters},
        "layered_runtime": {"layers": [
            {"name": "base", "static_layer": {"routing": {"canary": 0}, "other": "static"}},
            {"name": "rtds-layer", "rtds_layer": {"name": rtds_name, "rtds_config": rtds_config}},
            {"name": "admin", "admin_layer": {}}]}}
    if via_ads and xds_port:
        boot["dynamic_resources"] = {"ads_config": ads_config(mode)}
    return boot


def who(listen, n=10):
    """The upstreams that answered n requests, each on a new connection (so
    they spread over the workers)."""
    seen = set()
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}/echo", timeout=5 * SLOW) as r:
            seen.add(r.headers.get("x-upstream-name"))
    return seen


def runtime(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/runtime", timeout=5) as r:
        return json.loads(r.read())


def modify(admin, query):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/runtime_modify?{query}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def start(env, mode, via_ads, layer=None, timeout=None, rtds_name="rtds"):
    mk_cp, mk_up, mk_sharp = env
    ups = {n: mk_up(n) for n in ("canary", "stable")}
    cp = mk_cp()
    if layer is not None:
        cp.set(RUNTIME, [runtime_res(rtds_name, layer)])
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, cp.xds_port, ups, rtds_source(mode, via_ads, timeout), mode, via_ads,
                           rtds_name))
    return cp, s, listen, admin


@pytest.mark.parametrize("via_ads", [True, False], ids=["ads", "api_config_source"])
@pytest.mark.parametrize("mode", MODES)
def test_a_pushed_runtime_value_switches_a_route_and_a_bad_one_is_nacked(env, mode, via_ads):
    cp, s, listen, admin = start(env, mode, via_ads, layer=canary(100))
    s.wait_ready(admin, timeout=20 * SLOW)
    # the workers started with the layer: every request goes to the canary
    assert who(listen) == {"canary"}
    wait_acked(cp, RUNTIME, 1)
    reqs = cp.requests(RUNTIME)
    names = reqs[0].get("resource_names") or reqs[0].get("resource_names_subscribe")
    assert names == ["rtds"], reqs[0]
    opened = [e["method"] for e in cp.entries() if e["dir"] == "open"]
    want = ("envoy.service.discovery.v3.AggregatedDiscoveryService/" if via_ads else
            "envoy.service.runtime.v3.RuntimeDiscoveryService/")
    want += ("Delta" if mode == "DELTA_GRPC" else "Stream") + ("AggregatedResources" if via_ads else "Runtime")
    assert opened == [want], opened
    # /runtime: the layer by its name, at its place
    rt = runtime(admin)
    assert rt["layers"] == ["base", "rtds-layer", "admin"]
    assert rt["entries"]["routing.canary"] == {"final_value": "100", "layer_values": ["0", "100", ""]}
    assert rt["entries"]["other"]["final_value"] == "static"
    assert stat(admin, "runtime.num_layers") == 3
    assert stat(admin, "runtime.num_keys") == 2
    assert stat(admin, "runtime.update_success") >= 1
    assert stat(admin, "runtime.load_error") == 0
    # a new value reaches every worker for the next requests
    loads = stat(admin, "runtime.load_success")
    cp.set(RUNTIME, [runtime_res("rtds", {"routing": {"canary": 0}, "extra": {"nested": True}})])
    wait_for(lambda: who(listen) == {"stable"}, 10 * SLOW, "the stable route after the push")
    wait_acked(cp, RUNTIME, 2)
    assert stat(admin, "runtime.load_success") == loads + 1
    assert runtime(admin)["entries"]["extra.nested"] == {"final_value": "true", "layer_values": ["", "true", ""]}
    # an invalid layer (a null value) is NACKed naming the resource; the previous values stay
    rejected = stat(admin, "runtime.update_rejected")
    cp.set(RUNTIME, [runtime_res("rtds", {"routing": {"canary": None}})])
    wait_for(lambda: nacks(cp, RUNTIME), 10 * SLOW, "the NACK of the bad Runtime")
    detail = json.dumps(nacks(cp, RUNTIME)[-1]["error_detail"])
    assert "Runtime 'rtds'" in detail and "Invalid runtime entry value for routing.canary" in detail, detail
    assert stat(admin, "runtime.update_rejected") == rejected + 1
    assert who(listen) == {"stable"}
    assert runtime(admin)["entries"]["extra.nested"]["final_value"] == "true"
    # a good push recovers
    cp.set(RUNTIME, [runtime_res("rtds", canary(100))])
    wait_for(lambda: who(listen) == {"canary"}, 10 * SLOW, "the canary route after recovery")
    # the admin layer comes after the RTDS layer: its override wins, and its removal gives RTDS's value back
    modify(admin, "routing.canary=0")
    wait_for(lambda: who(listen) == {"stable"}, 5 * SLOW, "the admin override")
    modify(admin, "routing.canary=")
    wait_for(lambda: who(listen) == {"canary"}, 5 * SLOW, "the RTDS value again")


@pytest.mark.parametrize("mode", MODES)
def test_removal_clears_the_layer_incrementally_only(env, mode):
    """Delta: a removed Runtime clears the layer (Envoy's onConfigRemoved),
    the static layer's 0% again. State of the world: a response without it
    removes nothing (a named subscription)."""
    cp, s, listen, admin = start(env, mode, True, layer=canary(100))
    s.wait_ready(admin, timeout=20 * SLOW)
    assert who(listen) == {"canary"}
    wait_acked(cp, RUNTIME, 1)
    cp.call("POST", "/resources", {"type_url": RUNTIME, "set": [], "remove": ["rtds"]})
    if mode == "DELTA_GRPC":
        wait_for(lambda: who(listen) == {"stable"}, 10 * SLOW, "the cleared layer")
        rt = runtime(admin)
        assert rt["layers"] == ["base", "rtds-layer", "admin"]
        assert rt["entries"]["routing.canary"]["layer_values"] == ["0", "", ""]
    else:
        wait_acked(cp, RUNTIME, 2)
        assert who(listen) == {"canary"}
        assert runtime(admin)["entries"]["routing.canary"]["final_value"] == "100"
    # it comes back
    cp.set(RUNTIME, [runtime_res("rtds", canary(100))])
    wait_for(lambda: who(listen) == {"canary"}, 10 * SLOW, "the layer again")


def test_the_workers_wait_for_the_layer_then_its_initial_fetch_timeout(env):
    """No Runtime on the server (state of the world: it answers without
    it): /ready says no until the initial_fetch_timeout, then SHARP serves
    with the layer empty; the layer that comes later applies."""
    # 3 s: room for a start slowed by a loaded machine before the first
    # look at /ready, which must come before the timeout
    cp, s, listen, admin = start(env, "GRPC", True, timeout="3s")
    t0 = time.time()
    wait_for(lambda: ready_state(admin)[0] != 0, 10 * SLOW, "the admin listener")
    assert ready_state(admin)[0] != 200
    s.wait_ready(admin, timeout=20 * SLOW)
    assert time.time() - t0 >= 1.5
    assert stat(admin, "runtime.init_fetch_timeout") == 1
    assert who(listen) == {"stable"}
    cp.set(RUNTIME, [runtime_res("rtds", canary(100))])
    wait_for(lambda: who(listen) == {"canary"}, 10 * SLOW, "the layer after the timeout")


def test_a_runtime_of_another_name_is_not_applied(env):
    """The server sends a Runtime the subscription did not name: SHARP's
    named subscription ignores it (Envoy's mux hands a watch only its
    names); the one named applies."""
    cp, s, listen, admin = start(env, "GRPC", True, layer=canary(100), rtds_name="rtds")
    s.wait_ready(admin, timeout=20 * SLOW)
    cp.set(RUNTIME, [runtime_res("other", canary(0))])
    wait_acked(cp, RUNTIME, 2)
    assert who(listen) == {"canary"}
    assert "other" not in json.dumps(runtime(admin)["layers"])


def rtds_file(version, *resources):
    return {"version_info": str(version),
            "resources": [{"@type": RUNTIME, "name": n, "layer": layer} for n, layer in resources]}


def test_file_rtds_with_a_symlink_swap(env, tmp_path):
    """path_config_source with watched_directory (a Kubernetes ConfigMap):
    read when the config loads, again on each ..data swap; a file with two
    Runtimes or another name is rejected (update_rejected) and the previous
    values stay."""
    _, mk_up, mk_sharp = env
    ups = {n: mk_up(n) for n in ("canary", "stable")}
    data = tmp_path / "cfg"
    for v, content in (("v1", rtds_file(1, ("rtds", canary(100)))),
                       ("v2", rtds_file(2, ("rtds", canary(100)), ("rtds", canary(0)))),
                       ("v3", rtds_file(3, ("elsewhere", canary(0)))),
                       ("v4", rtds_file(4, ("rtds", canary(0))))):
        os.makedirs(data / v)
        write_atomic(str(data / v / "rtds.json"), content)
    os.symlink("v1", data / "..data")
    os.symlink("..data/rtds.json", data / "rtds.json")
    src = {"resource_api_version": "V3", "path_config_source": {
        "path": str(data / "rtds.json"), "watched_directory": {"path": str(data)}}}
    listen, admin = free_port(), free_port()
    s = mk_sharp(bootstrap(listen, admin, None, ups, src, via_ads=False))
    s.wait_ready(admin, timeout=15 * SLOW)
    assert who(listen) == {"canary"}
    assert stat(admin, "runtime.update_success") == 1

    def swap(v):
        os.symlink(v, data / "..data_tmp")
        os.replace(data / "..data_tmp", data / "..data")

    swap("v2")
    wait_for(lambda: stat(admin, "runtime.update_rejected") == 1, 5 * SLOW, "the rejection of two Runtimes")
    wait_for(lambda: "Unexpected RTDS resource length, number of added resources 2" in s.output(), 5 * SLOW,
             "the log of the rejection")
    swap("v3")
    wait_for(lambda: stat(admin, "runtime.update_rejected") == 2, 5 * SLOW, "the rejection of another name")
    wait_for(lambda: "Unexpected RTDS runtime (expecting rtds): elsewhere" in s.output(), 5 * SLOW,
             "the log of the rejection")
    assert who(listen) == {"canary"}
    swap("v4")
    wait_for(lambda: who(listen) == {"stable"}, 5 * SLOW, "the swapped layer")
    assert stat(admin, "runtime.update_success") == 2


def test_file_rtds_refused_at_load(tmp_path):
    """A file that is missing, or whose Runtime is invalid, refuses the
    configuration (as a CDS or RDS file does)."""
    ups = {n: type("U", (), {"port": 1})() for n in ("canary", "stable")}
    path = tmp_path / "rtds.json"
    src = {"resource_api_version": "V3", "path_config_source": {"path": str(path)}}
    boot = bootstrap(free_port(), free_port(), None, ups, src, via_ads=False)
    rc, out = validate_config(json.dumps(boot), ".json")
    assert rc == 1 and "does not exist" in out, out
    write_atomic(str(path), rtds_file(1, ("rtds", {"a": [1, 2]})))
    rc, out = validate_config(json.dumps(boot), ".json")
    assert rc == 1 and "layered_runtime.layers[1].rtds_layer.rtds_config" in out, out
    assert "Runtime 'rtds': layer.a: Invalid runtime entry value for a" in out, out
    write_atomic(str(path), rtds_file(1, ("rtds", canary(5))))
    rc, out = validate_config(json.dumps(boot), ".json")
    assert rc == 0, out
    # the Runtime's name is required
    boot["layered_runtime"]["layers"][1]["rtds_layer"]["name"] = ""
    rc, out = validate_config(json.dumps(boot), ".json")
    assert rc == 1 and "layered_runtime.layers[1].rtds_layer.name: the name of the Runtime resource" in out, out
    boot["layered_runtime"]["layers"][1]["rtds_layer"]["name"] = "rtds"
    # REST stays refused by name
    boot["layered_runtime"]["layers"][1]["rtds_layer"]["rtds_config"] = {
        "resource_api_version": "V3", "api_config_source": {"api_type": "REST", "transport_api_version": "V3",
                                                            "cluster_names": ["x"]}}
    rc, out = validate_config(json.dumps(boot), ".json")
    assert rc == 1 and "REST" in out and "not supported by SHARP" in out, out


CORPUS_RTDS = {
    # loads
    "go-control-plane__sample__bootstrap-xds.yaml": None,
    "go-control-plane__sample__bootstrap-delta.yaml": None,
    # refused for something else, as Envoy would refuse it, or a named feature
    "go-control-plane__sample__bootstrap-rest.yaml": "is not supported by SHARP (REST xDS polling)",
    "envoy__test__tools__schema_validator__test__config__bootstrap.yaml": "'/config_map/rtds/rtds.yaml' does not exist",
    "gateway__internal__xds__bootstrap__testdata__merge__default.out.yaml": "node 'id' and 'cluster' are required",
}


@pytest.mark.skipif(not os.path.isdir(CORPUS_DIR), reason="the Envoy corpus is not next to the project")
@pytest.mark.parametrize("name", sorted(CORPUS_RTDS))
def test_corpus_rtds_bootstraps(name):
    with open(os.path.join(CORPUS_DIR, name)) as f:
        text = f.read()
    assert "rtds_layer" in text or "rtdsLayer" in text
    rc, out = validate_config(text, os.path.splitext(name)[1])
    want = CORPUS_RTDS[name]
    if want is None:
        assert rc == 0, out
    else:
        assert rc == 1 and want in out, out


@pytest.mark.parametrize("mode", MODES)
def test_cds_waits_for_the_rtds_layer(env, mode):
    """Envoy's init order: the RTDS layers' initial fetch, then CDS. While
    the Runtime is held back on the server, SHARP asks for nothing else on
    the ADS stream; once it came, CDS follows and the start completes."""
    mk_cp, mk_up, mk_sharp = env
    ups = {n: mk_up(n) for n in ("canary", "stable")}
    cp = mk_cp()
    cp.set(RUNTIME, [runtime_res("rtds", canary(100))])
    cp.call("POST", "/hold", {"type_url": RUNTIME})
    listen, admin = free_port(), free_port()
    boot = bootstrap(listen, admin, cp.xds_port, ups, rtds_source(mode, True), mode, True)
    boot["dynamic_resources"]["cds_config"] = ADS
    s = mk_sharp(boot)
    wait_for(lambda: cp.requests(RUNTIME), 10 * SLOW, "the RTDS request")
    wait_for(lambda: [e for e in cp.entries() if e["dir"] == "held"], 10 * SLOW, "the held response")
    time.sleep(0.3 * SLOW)  # nothing to await: CDS must stay unasked meanwhile
    assert not cp.requests(CDS), cp.requests(CDS)
    assert ready_state(admin)[0] != 200
    cp.call("POST", "/hold", {"type_url": RUNTIME, "hold": False})
    wait_for(lambda: cp.requests(CDS), 10 * SLOW, "the CDS request after RTDS")
    s.wait_ready(admin, timeout=20 * SLOW)
    assert who(listen) == {"canary"}
    es = cp.entries()
    first_cds = min(e["seq"] for e in es if e["dir"] == "in" and e["type_url"] == CDS)
    rtds_out = min(e["seq"] for e in es if e["dir"] == "out" and e["type_url"] == RUNTIME)
    assert rtds_out < first_cds
