"""The test xDS control plane (test/xds/control_plane.js) against a client on
the same official Envoy protos (test/xds/client.js): version and nonce flow,
ACK and NACK as the control plane logs them, wildcard and named
subscriptions, delta removals, malformed resources, dropped streams and
reconnects. Every process is bounded in time and stopped by PID."""
import json
import os
import queue
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import free_port, wait_for

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
XDS = os.path.join(ROOT, "test", "xds")
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TIMEOUT = 10


class Node:
    """A node process printing JSON lines, read by a thread into a queue."""

    def __init__(self, args):
        assert os.path.isdir(os.path.join(XDS, "node_modules")), "run `make npm-deps`"
        self.p = subprocess.Popen(["node", *args], cwd=XDS, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.pending = []  # events read while waiting for another kind
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(json.loads(line))

    def next(self, event, timeout=TIMEOUT):
        for i, item in enumerate(self.pending):
            if item.get("event") == event:
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                item = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no {event} event in {timeout}s; stderr: {self._stderr()}")
            if item.get("event") == event:
                return item
            self.pending.append(item)

    def none(self, event, within=0.5):
        """No `event` arrives within `within` seconds."""
        assert not [i for i in self.pending if i.get("event") == event], self.pending
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                return
            assert item.get("event") != event, item
            self.pending.append(item)

    def send(self, **cmd):
        """A client command, returning once the client has carried it out."""
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        self.next("done")

    def _stderr(self):
        return "" if self.p.poll() is None else self.p.stderr.read()[-2000:]

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


class ControlPlane(Node):
    def __init__(self):
        self.xds_port, self.control_port = free_port(), free_port()
        super().__init__(["control_plane.js", str(self.xds_port), str(self.control_port)])
        self.next("ready")

    def call(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.control_port}{path}", method=method,
                                     data=json.dumps(body or {}).encode() if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return json.loads(r.read())

    def set(self, type_url, resources, **kw):
        return self.call("POST", "/resources", {"type_url": type_url, "set": resources, **kw})

    def log(self, direction="in", stream=None):
        entries = self.call("GET", "/log")["entries"]
        return [e for e in entries if e["dir"] == direction and (stream is None or e["stream"] == stream)]


@pytest.fixture
def nodes():
    started = []

    def start(cls, *args):
        n = cls(*args)
        started.append(n)
        return n
    yield start
    for n in reversed(started):
        n.stop()


def client(nodes, cp, *flags):
    return nodes(Node, ["client.js", str(cp.xds_port), *flags])


def cluster(name, timeout="1s"):
    return {"name": name, "resource": {"name": name, "connect_timeout": timeout, "type": "EDS",
                                        "eds_cluster_config": {"eds_config": {"ads": {}}}}}


def cla(name, port):
    return {"name": name, "resource": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def test_sotw_version_nonce_ack_and_nack(nodes):
    cp = nodes(ControlPlane)
    assert cp.set(CDS, [cluster("a")])["version"] == "1"
    c = client(nodes, cp, "--node", "n1")
    c.send(op="subscribe", type_url=CDS, names=[])  # wildcard
    r1 = c.next("response")
    assert r1["version_info"] == "1" and r1["nonce"]
    assert [r["name"] for r in r1["resources"]] == ["a"]
    assert r1["resources"][0]["resource"]["connect_timeout"] == {"seconds": "1", "nanos": 0}
    wait_for(lambda: len(cp.log()) == 2, TIMEOUT, "ACK logged")
    first, ack = cp.log()
    assert first["node"] == "n1" and first["version_info"] == "" and first["response_nonce"] == ""
    assert ack["version_info"] == "1" and ack["response_nonce"] == r1["nonce"] and ack["error_detail"] is None
    c.none("response")  # an ACK gets no response

    # an update: the whole set again, new version and nonce; the client NACKs it
    c.send(op="nack", type_url=CDS)
    assert cp.set(CDS, [cluster("b")])["version"] == "2"
    r2 = c.next("response")
    assert r2["version_info"] == "2" and r2["nonce"] != r1["nonce"]
    assert sorted(r["name"] for r in r2["resources"]) == ["a", "b"]
    wait_for(lambda: len(cp.log()) == 3, TIMEOUT, "NACK logged")
    nack = cp.log()[2]
    # a NACK carries the last accepted version and the rejected response's nonce
    assert nack["version_info"] == "1" and nack["response_nonce"] == r2["nonce"]
    assert nack["error_detail"]["message"] == "rejected by the test client"
    c.none("response")

    # removing a resource from a wildcard type sends the smaller set
    cp.call("POST", "/resources", {"type_url": CDS, "remove": ["a"]})
    r3 = c.next("response")
    assert r3["version_info"] == "3" and [r["name"] for r in r3["resources"]] == ["b"]


def test_sotw_named_subscription_gets_only_named_resources(nodes):
    cp = nodes(ControlPlane)
    cp.set(EDS, [cla("x", 1001), cla("y", 1002), cla("z", 1003)])
    c = client(nodes, cp)
    c.send(op="subscribe", type_url=EDS, names=[])  # no names: EDS is not wildcard
    assert c.next("response")["resources"] == []
    c.send(op="subscribe", type_url=EDS, names=["x", "missing"])
    r = c.next("response")
    assert [x["name"] for x in r["resources"]] == ["x"]
    c.send(op="subscribe", type_url=EDS, names=["x", "z"])
    r = c.next("response")
    assert sorted(x["name"] for x in r["resources"]) == ["x", "z"]
    assert r["resources"][1]["resource"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["port_value"] == 1003
    # an update to a resource the client did not name still pushes its set, unchanged
    cp.set(EDS, [cla("y", 2002)])
    r = c.next("response")
    assert sorted(x["name"] for x in r["resources"]) == ["x", "z"]
    names = [e["resource_names"] for e in cp.log() if e["response_nonce"] == ""]
    assert names == [[]]


def test_sotw_stale_nonce_is_ignored(nodes):
    cp = nodes(ControlPlane)
    cp.set(CDS, [cluster("a"), cluster("b")])
    c = client(nodes, cp)
    c.send(op="subscribe", type_url=CDS, names=[])
    r1 = c.next("response")
    wait_for(lambda: len(cp.log()) == 2, TIMEOUT, "ACK")
    # response 2 is on its way (delayed) when the client, still at nonce 1,
    # names only "a": that request is stale and gets no answer of its own
    cp.call("POST", "/delay", {"ms": 800})
    cp.set(CDS, [cluster("c")])
    c.send(op="subscribe", type_url=CDS, names=["a"])
    r2 = c.next("response")
    assert r2["nonce"] != r1["nonce"] and len(r2["resources"]) == 3
    stale = cp.log()[2]
    assert stale["response_nonce"] == r1["nonce"] and stale["resource_names"] == ["a"]
    # the ACK of response 2 carries the new names: answered with "a" only
    r3 = c.next("response")
    assert [x["name"] for x in r3["resources"]] == ["a"]
    outs = cp.log(direction="out")
    assert [o["nonce"] for o in outs] == [r1["nonce"], r2["nonce"], r3["nonce"]]


def test_delta_versions_removals_and_nack(nodes):
    cp = nodes(ControlPlane)
    cp.set(LDS, [{"name": "l1", "resource": {"name": "l1", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 10000}}}}])
    c = client(nodes, cp, "--delta")
    c.send(op="subscribe", type_url=LDS, names=[])  # wildcard
    r1 = c.next("response")
    assert [(r["name"], r["version"]) for r in r1["resources"]] == [("l1", "1")]
    assert r1["removed_resources"] == [] and r1["system_version_info"] == "1"
    wait_for(lambda: len(cp.log()) == 2, TIMEOUT, "delta ACK")
    ack = cp.log()[1]
    assert ack["response_nonce"] == r1["nonce"] and ack["error_detail"] is None
    c.none("response")

    # adding l2 sends only l2, with its own version; l1 is not resent
    cp.set(LDS, [{"name": "l2", "resource": {"name": "l2"}}])
    r2 = c.next("response")
    assert [(r["name"], r["version"]) for r in r2["resources"]] == [("l2", "2")]
    # setting l1 to the same bytes changes nothing and sends nothing
    assert cp.set(LDS, [{"name": "l1", "resource": {"name": "l1", "address": {"socket_address": {
        "address": "127.0.0.1", "port_value": 10000}}}}])["changed"] is False
    c.none("response")
    # removing l1 is a removed_resources entry
    cp.call("POST", "/resources", {"type_url": LDS, "remove": ["l1"]})
    r3 = c.next("response")
    assert r3["resources"] == [] and r3["removed_resources"] == ["l1"]

    c.send(op="nack", type_url=LDS)
    cp.set(LDS, [{"name": "l2", "resource": {"name": "l2", "stat_prefix": "x"}}])
    r4 = c.next("response")
    wait_for(lambda: cp.log()[-1]["response_nonce"] == r4["nonce"], TIMEOUT, "delta NACK")
    assert cp.log()[-1]["error_detail"]["code"] == 3


def test_delta_named_subscribe_unsubscribe_and_missing(nodes):
    cp = nodes(ControlPlane)
    cp.set(RDS, [{"name": "r1", "resource": {"name": "r1", "virtual_hosts": [
        {"name": "vh", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}]}]}}])
    c = client(nodes, cp, "--delta")
    c.send(op="subscribe", type_url=RDS, names=["r1", "r9"])
    r = c.next("response")
    assert [x["name"] for x in r["resources"]] == ["r1"]
    assert r["removed_resources"] == ["r9"]  # named but does not exist
    c.send(op="unsubscribe", type_url=RDS, names=["r1"])
    wait_for(lambda: any(e["resource_names_unsubscribe"] for e in cp.log()), TIMEOUT, "unsubscribe")
    cp.set(RDS, [{"name": "r1", "resource": {"name": "r1"}}])
    c.none("response")  # no longer subscribed
    cp.set(RDS, [{"name": "r9", "resource": {"name": "r9"}}])
    r = c.next("response")
    assert [x["name"] for x in r["resources"]] == ["r9"]
    unsub = [e for e in cp.log() if e["resource_names_unsubscribe"]]
    assert unsub[0]["resource_names_unsubscribe"] == ["r1"] and unsub[0]["resource_names_subscribe"] == []


def test_malformed_resource_is_nacked(nodes):
    cp = nodes(ControlPlane)
    cp.set(CDS, [cluster("good"), {"name": "bad", "base64": "/////w=="}])
    c = client(nodes, cp)
    c.send(op="subscribe", type_url=CDS, names=[])
    r = c.next("response")
    bad = [x for x in r["resources"] if x["error"]]
    assert len(bad) == 1
    wait_for(lambda: len(cp.log()) == 2, TIMEOUT, "NACK")
    nack = cp.log()[1]
    assert nack["error_detail"] and "cannot decode" in nack["error_detail"]["message"]
    assert nack["version_info"] == ""  # nothing accepted yet


def test_bad_resource_json_is_refused_by_the_control_api(nodes):
    cp = nodes(ControlPlane)
    with pytest.raises(urllib.error.HTTPError) as e:
        cp.set(CDS, [{"name": "x", "resource": {"name": "x", "no_such_field": 1}}])
    assert e.value.code == 400
    assert "unknown field" in json.loads(e.value.read())["error"]


def test_drop_reconnect_and_resume(nodes):
    cp = nodes(ControlPlane)
    cp.set(CDS, [cluster("a")])
    c = client(nodes, cp, "--delta", "--reconnect", "200")
    c.send(op="subscribe", type_url=CDS, names=[])
    c.next("response")
    wait_for(lambda: len(cp.log()) == 2, TIMEOUT, "ACK")
    cp.call("POST", "/refuse", {"ms": 600})
    assert cp.call("POST", "/drop")["dropped"] == 1
    assert c.next("status")["code"] == 14  # UNAVAILABLE
    # the first reconnect is refused, a later one gets through
    assert c.next("status")["code"] == 14
    wait_for(lambda: any(e["dir"] == "refused" for e in cp.log(direction="refused")), TIMEOUT, "refusal")
    c.next("open")
    # the new stream resumes with what the client has: nothing to resend
    wait_for(lambda: any(e["initial_resource_versions"] for e in cp.log()
                         if "initial_resource_versions" in e), TIMEOUT, "resumed stream")
    resumed = [e for e in cp.log() if e.get("initial_resource_versions")][-1]
    assert resumed["initial_resource_versions"] == {"a": "1"}
    c.none("response")
    cp.set(CDS, [cluster("b")])
    assert [x["name"] for x in c.next("response")["resources"]] == ["b"]


def test_stop_and_start_listening(nodes):
    cp = nodes(ControlPlane)
    cp.set(CDS, [cluster("a")])
    c = client(nodes, cp, "--reconnect", "200")
    c.send(op="subscribe", type_url=CDS, names=[])
    assert c.next("response")["version_info"] == "1"
    cp.call("POST", "/stop")
    assert c.next("status")["code"] in (1, 14)  # CANCELLED or UNAVAILABLE: the connection closed
    assert cp.call("GET", "/state")["listening"] is False
    cp.set(CDS, [cluster("b")])
    cp.call("POST", "/start")
    # the reconnected SotW stream sends its last accepted version; the
    # control plane answers the new stream with the current set
    r = c.next("response", timeout=15)
    assert r["version_info"] == "2" and sorted(x["name"] for x in r["resources"]) == ["a", "b"]
    first = [e for e in cp.log() if e["response_nonce"] == ""][-1]
    assert first["version_info"] == "1"


@pytest.mark.parametrize("service,type_url,method", [
    ("lds", LDS, "StreamListeners"), ("cds", CDS, "StreamClusters"),
    ("rds", RDS, "StreamRoutes"), ("eds", EDS, "StreamEndpoints")])
def test_per_type_services(nodes, service, type_url, method):
    cp = nodes(ControlPlane)
    name = "n"
    body = {"name": name} if type_url != EDS else {"cluster_name": name}
    cp.set(type_url, [{"name": name, "resource": body}])
    c = client(nodes, cp, "--service", service)
    c.send(op="subscribe", type_url=type_url, names=[name])
    r = c.next("response")
    assert [x["name"] for x in r["resources"]] == [name]
    assert cp.log(direction="open")[0]["method"].endswith("/" + method)


@pytest.mark.parametrize("delta", [False, True])
def test_hold_keeps_back_the_responses_of_a_type_until_released(nodes, delta):
    cp = nodes(ControlPlane)
    cp.set(EDS, [cla("x", 1001)])
    cp.call("POST", "/hold", {"type_url": EDS})
    c = client(nodes, cp, *(["--delta"] if delta else []))
    c.send(op="subscribe", type_url=EDS, names=["x"])
    c.none("response", within=0.5)
    # a change while held is in the response made at the release
    cp.set(EDS, [cla("x", 2002)])
    c.none("response", within=0.3)
    assert any(e["dir"] == "held" for e in cp.call("GET", "/log")["entries"])
    assert cp.call("POST", "/hold", {"type_url": EDS, "hold": False}) == {"released": 1}
    r = c.next("response")
    assert [x["name"] for x in r["resources"]] == ["x"]
    assert r["resources"][0]["resource"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"]["port_value"] == 2002
    # released: responses flow again
    cp.set(EDS, [cla("x", 3003)])
    assert c.next("response")["resources"][0]["resource"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"]["socket_address"]["port_value"] == 3003
