"""SDS secrets of listeners from LDS and clusters from CDS (Istio's data
path), over ADS (state of the world and incremental), against the test
control plane on Envoy's official protos (test/xds), which can hold back
the responses of a type:

- a listener from LDS whose DownstreamTlsContext names a certificate from
  SDS warms (not accepting connections, /config_dump's warming_state) until
  the secret came, then serves with it; its rotation reaches new
  handshakes; a changed version naming another secret warms while the
  previous version serves;
- a cluster from CDS whose UpstreamTlsContext takes its validation context
  from SDS warms (dynamic_warming_clusters) until the secret came, then
  verifies its TLS upstream with it; a rotated trust anchor applies to new
  upstream connections;
- a secret is shared by name: one subscription however many listeners and
  clusters name it; when the last listener or cluster using it is gone
  (removed or replaced, once drained), its subscription ends (the name
  leaves the stream's request), as Envoy's SecretManagerImpl forgets an
  SdsApi with its last user; a secret the server removes stays in use.
Under ASan the teardown checks that no consumer leaks or is used after its
listener or cluster went. Every wait is bounded; every process is stopped
by PID."""
import json
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import SLOW, TLS_HOST, Proc, Sharp, Upstream, admin_get, free_port, stat, wait_for, wait_port
from test_tls_sds import cert_secret as file_cert_secret
from test_tls_sds import make_cert, sds_file
from test_tls_upstream import TLS_SERVER, US_TLS
from test_xds_ads import ADS, CDS, CP, HCM, LDS, MODES, ROUTER, ads_config, ep, nacks, wait_acked, xds_cluster
from test_xds_warming import clusters, hold, listeners, refused, release

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
DS_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
DRAIN_S = 1


@pytest.fixture
def env(procs, pki, tmp_path):
    """The control plane, an upstream and SHARP on them (LDS and CDS over
    ADS, a short drain so that replaced versions go quickly)."""
    nodes = []

    class Env:
        pass

    e = Env()
    e.pki, e.dir = pki, str(tmp_path)

    def start(mode, lds=(), cds=(), secrets=()):
        e.cp = CP()
        nodes.append(e.cp)
        e.up = Upstream("u1")
        procs.append(e.up)
        e.cp.set(LDS, [plain_listener("plain", free_port(), "app"), *lds])
        e.cp.set(CDS, [plain_cluster("c0", e.up.port), *cds])
        if secrets:
            e.cp.set(SECRET, list(secrets))
        e.admin = free_port()
        boot = {"node": {"id": "sharp-1", "cluster": "edge"},
                "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": e.admin}}},
                "dynamic_resources": {"ads_config": ads_config(mode), "lds_config": ADS, "cds_config": ADS},
                "static_resources": {"clusters": [
                    xds_cluster(e.cp.xds_port),
                    {"name": "app", "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [ep(e.up.port)]}]}}]}}
        e.sharp = Sharp(json.dumps(boot), concurrency=2, extra=("--drain-time-s", str(DRAIN_S)))
        procs.append(e.sharp)
        e.sharp.wait_ready(e.admin, timeout=20 * SLOW)
        return e
    e.start = start
    yield e
    for n in nodes:
        n.stop()


# ---- resources ----------------------------------------------------------------

def hcm(name, cluster):
    return {"@type": HCM, "stat_prefix": name,
            "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}


def plain_listener(name, port, cluster):
    return {"name": name, "resource": {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm(name, cluster)}]}]}}


def tls_listener(name, port, secret, cluster="app", stat_prefix=None, source=None):
    """A listener whose certificate is SDS secret `secret` (over ADS by
    default)."""
    tls = {"@type": DS_TLS, "common_tls_context": {
        "alpn_protocols": ["http/1.1"],
        "tls_certificate_sds_secret_configs": [{"name": secret, "sds_config": source or ADS}]}}
    return {"name": name, "resource": {
        "name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm(stat_prefix or name, cluster)}],
                           "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls}}]}}


def plain_cluster(name, port):
    return {"name": name, "resource": {"name": name, "type": "STATIC", "connect_timeout": "1s",
                                        "load_assignment": {"cluster_name": name,
                                                            "endpoints": [{"lb_endpoints": [ep(port)]}]}}}


def tls_cluster(name, port, ca_secret):
    """A cluster to a TLS upstream, its trust anchor SDS secret `ca_secret`."""
    tls = {"@type": US_TLS, "sni": TLS_HOST, "common_tls_context": {
        "validation_context_sds_secret_config": {"name": ca_secret, "sds_config": ADS}}}
    return {"name": name, "resource": {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "max_requests_per_connection": 1,  # each request on a new upstream connection: a new handshake
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [ep(port)]}]}}}


def cert_secret(e, name, cert):
    with open(f"{e.dir}/{cert}.crt") as c, open(f"{e.dir}/{cert}.key") as k:
        crt, key = c.read(), k.read()
    return {"name": name, "resource": {"name": name, "tls_certificate": {
        "certificate_chain": {"inline_string": crt}, "private_key": {"inline_string": key}}}}


def ca_secret(e, name, ca):
    with open(f"{e.pki}/{ca}.crt") as c:
        return {"name": name, "resource": {"name": name, "validation_context": {
            "trusted_ca": {"inline_string": c.read()}}}}


# ---- probes -------------------------------------------------------------------

def subject_cn(e, port):
    """The common name of the certificate a new handshake on `port` gets."""
    ctx = ssl.create_default_context(cafile=f"{e.pki}/ca.crt")
    raw = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    with ctx.wrap_socket(raw, server_hostname=TLS_HOST) as s:
        return dict(kv for rdn in s.getpeercert()["subject"] for kv in rdn)["commonName"]


def try_cn(e, port):
    try:
        return subject_cn(e, port)
    except (ssl.SSLError, OSError):
        return None


def https_status(e, port):
    ctx = ssl.create_default_context(cafile=f"{e.pki}/ca.crt")
    raw = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    with ctx.wrap_socket(raw, server_hostname=TLS_HOST) as s:
        s.sendall(f"GET / HTTP/1.1\r\nhost: {TLS_HOST}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    return int(data.split(b" ", 2)[1])


def get(port, path="/"):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5 * SLOW) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def sds_names(cp):
    """The secrets SHARP's streams subscribe to now."""
    names = set()
    for s in cp.call("GET", "/state")["streams"]:
        sub = s["subscriptions"].get(SECRET)
        if sub:
            names.update(sub["names"])
    return names


def sds_requests(cp, name):
    """How many requests subscribed to `name` anew (state of the world:
    the first request naming it after one that did not; incremental:
    resource_names_subscribe)."""
    n, had = 0, False
    for r in cp.requests(SECRET):
        if "resource_names_subscribe" in r or "resource_names_unsubscribe" in r:
            n += name in (r.get("resource_names_subscribe") or [])
            continue
        has = name in (r.get("resource_names") or [])
        n += has and not had
        had = has
    return n


def secrets_dump(e):
    """(dynamic_active_secrets, dynamic_warming_secrets) of /config_dump,
    without their last_updated."""
    dump = json.loads(admin_get(e.admin, "/config_dump"))["configs"]
    sd = next(c for c in dump if c["@type"].endswith("SecretsConfigDump"))
    strip = lambda entries: [{k: v for k, v in x.items() if k != "last_updated"} for x in entries]  # noqa: E731
    for x in sd.get("dynamic_active_secrets", []) + sd.get("dynamic_warming_secrets", []):
        assert x["last_updated"].endswith("Z")
    return strip(sd.get("dynamic_active_secrets", [])), strip(sd.get("dynamic_warming_secrets", []))


def warming_listeners(e):
    return stat(e.admin, "listener_manager.total_listeners_warming")


# ---- listeners from LDS -------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_lds_listener_warms_until_its_certificate_comes_then_serves_and_rotates(env, mode):
    e = env.start(mode)
    make_cert(e.pki, e.dir, "s1")
    make_cert(e.pki, e.dir, "s2")
    p1, p2 = free_port(), free_port()
    hold(e.cp, SECRET)
    e.cp.set(LDS, [tls_listener("dyn1", p1, "server")])
    wait_for(lambda: warming_listeners(e) == 1, 10, "dyn1 warming on its secret")
    wait_acked(e.cp, LDS, 2)  # the LDS update itself is accepted
    assert listeners(e.admin)["dyn1"] == ["warming_state"]
    assert "lds: listener 'dyn1' on 127.0.0.1:%d warming: waiting for its secret(s)" % p1 in e.sharp.output()
    wait_for(lambda: "server" in sds_names(e.cp), 10, "the subscription to the secret")
    # /config_dump: the secret warming (Envoy's entry before its first update)
    assert secrets_dump(e) == ([], [{"name": "server", "version_info": "uninitialized",
                                     "secret": {"@type": SECRET, "name": "server"}}])
    # bound, but no connection is accepted before the certificate came
    assert refused(p1)
    time.sleep(0.5)
    assert refused(p1) and warming_listeners(e) == 1
    # a second listener naming the same secret shares its subscription
    e.cp.set(LDS, [tls_listener("dyn2", p2, "server")])
    wait_for(lambda: warming_listeners(e) == 2, 10, "dyn2 warming on the same secret")
    e.cp.set(SECRET, [cert_secret(e, "server", "s1")])
    release(e.cp, SECRET)
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "dyn1 serving with the secret's certificate")
    wait_for(lambda: try_cn(e, p2) == "s1", 2, "dyn2 serving with the secret's certificate")
    assert warming_listeners(e) == 0
    assert listeners(e.admin)["dyn1"] == ["active_state"]
    assert https_status(e, p1) == 200 and https_status(e, p2) == 200
    assert sds_requests(e.cp, "server") == 1
    assert stat(e.admin, "sds.server.update_success") == 1
    active, warming = secrets_dump(e)
    assert warming == [] and len(active) == 1, active
    got = active[0]
    assert got["name"] == "server" and got["version_info"] == "1"
    tc = got["secret"]["tls_certificate"]
    assert "BEGIN CERTIFICATE" in tc["certificate_chain"]["inline_string"]
    assert tc["private_key"] == {"inline_string": "[redacted]"}  # Envoy's redaction of sensitive fields
    # rotation: new handshakes on both listeners get the new certificate
    e.cp.set(SECRET, [cert_secret(e, "server", "s2")])
    wait_for(lambda: try_cn(e, p1) == "s2", 10, "the rotated certificate on dyn1")
    # the contexts sharing the secret are swapped one after the other
    wait_for(lambda: try_cn(e, p2) == "s2", 2, "the rotated certificate on dyn2")
    assert https_status(e, p1) == 200
    assert stat(e.admin, "sds.server.update_success") == 2
    # its context built when the secret came, then rebuilt
    assert stat(e.admin, "listener.127.0.0.1_%d.server_ssl_socket_factory.ssl_context_update_by_sds" % p1) == 2
    # the server removes the secret: the last one stays in use (Envoy's
    # SdsApi; incremental: the removal is ACKed and ignored)
    e.cp.set(SECRET, [], remove=["server"])
    if mode == "DELTA_GRPC":
        wait_for(lambda: "secret 'server': the SDS server removed it; ignored, the current secret stays"
                 in e.sharp.output(), 10, "the removal ignored")
        wait_acked(e.cp, SECRET, 3)
    time.sleep(0.5)
    assert subject_cn(e, p1) == "s2" and https_status(e, p2) == 200
    assert not nacks(e.cp, SECRET)
    assert not nacks(e.cp, LDS)
    # a listener removed while it warms on a secret never served goes with
    # its subscription
    p3 = free_port()
    hold(e.cp, SECRET)
    e.cp.set(LDS, [tls_listener("dyn3", p3, "never")])
    wait_for(lambda: warming_listeners(e) == 1, 10, "dyn3 warming")
    wait_for(lambda: "never" in sds_names(e.cp), 10, "the subscription to `never`")
    e.cp.set(LDS, [], remove=["dyn3"])
    wait_for(lambda: warming_listeners(e) == 0, 10, "dyn3 removed")
    wait_for(lambda: sds_names(e.cp) == {"server"}, 10 * SLOW, "`never` unsubscribed")
    assert "dyn3" not in listeners(e.admin) and refused(p3)


@pytest.mark.parametrize("mode", MODES)
def test_changed_listener_with_another_secret_warms_while_the_old_version_serves(env, mode):
    """dyn1 moves to secret `other`, held back by the server: its previous
    version serves (with `server`) until the new one is warm. Once the old
    version drained, `server` has no user left and is unsubscribed;
    removing the listener unsubscribes `other`; adding it again subscribes
    anew and serves once the secret came."""
    e = env.start(mode)
    make_cert(e.pki, e.dir, "s1")
    make_cert(e.pki, e.dir, "s3")
    p1 = free_port()
    e.cp.set(SECRET, [cert_secret(e, "server", "s1")])
    e.cp.set(LDS, [tls_listener("dyn1", p1, "server")])
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "dyn1 with `server`")
    hold(e.cp, SECRET)
    e.cp.set(SECRET, [cert_secret(e, "other", "s3")])
    e.cp.set(LDS, [tls_listener("dyn1", p1, "other")])
    wait_for(lambda: warming_listeners(e) == 1, 10, "dyn1's new version warming")
    assert listeners(e.admin)["dyn1"] == ["active_state", "warming_state"]
    time.sleep(0.5)
    assert {subject_cn(e, p1) for _ in range(5)} == {"s1"}  # the previous version
    assert https_status(e, p1) == 200
    release(e.cp, SECRET)
    wait_for(lambda: try_cn(e, p1) == "s3", 10, "the new version with `other`")
    assert warming_listeners(e) == 0
    # the old version drains (--drain-time-s), then goes with its secret
    wait_for(lambda: sds_names(e.cp) == {"other"}, 10 * SLOW, "`server` unsubscribed")
    assert "secret 'server' (tls_certificate) no longer used: unsubscribed" in e.sharp.output()
    assert https_status(e, p1) == 200
    # removed: it drains, then `other` has no user left
    e.cp.set(LDS, [], remove=["dyn1"])
    wait_for(lambda: "dyn1" not in listeners(e.admin), 10 * SLOW, "dyn1 removed and drained")
    wait_for(lambda: sds_names(e.cp) == set(), 10 * SLOW, "`other` unsubscribed")
    assert refused(p1)
    assert secrets_dump(e) == ([], [])  # no provider left
    # added again: a new subscription, which the server answers
    e.cp.set(LDS, [tls_listener("dyn1", p1, "other", stat_prefix="dyn1b")])
    wait_for(lambda: try_cn(e, p1) == "s3", 10, "dyn1 again with `other`")
    assert sds_requests(e.cp, "other") == 2
    assert https_status(e, p1) == 200
    assert not nacks(e.cp, LDS) and not nacks(e.cp, SECRET)


@pytest.mark.parametrize("mode", MODES)
def test_lds_listener_warming_ends_at_the_secret_initial_fetch_timeout(env, mode):
    """Envoy: the SdsApi init target is ready at the subscription's
    initial_fetch_timeout; the listener then accepts connections without a
    certificate (handshakes fail) until the secret comes."""
    e = env.start(mode)
    make_cert(e.pki, e.dir, "s1")
    p1 = free_port()
    hold(e.cp, SECRET)
    t0 = time.monotonic()
    e.cp.set(LDS, [tls_listener("dyn1", p1, "server", source={**ADS, "initial_fetch_timeout": "1s"})])
    wait_for(lambda: warming_listeners(e) == 1, 10, "dyn1 warming")
    assert refused(p1)
    wait_for(lambda: not refused(p1), 10 * SLOW, "dyn1 after the timeout")
    assert time.monotonic() - t0 >= 0.9
    assert warming_listeners(e) == 0
    assert stat(e.admin, "sds.server.init_fetch_timeout") == 1
    assert try_cn(e, p1) is None  # no certificate: the handshake fails
    wait_for(lambda: (stat(e.admin, "listener.127.0.0.1_%d.ssl.connection_error" % p1) or 0) >= 1, 10,
             "the failed handshake counted")
    e.cp.set(SECRET, [cert_secret(e, "server", "s1")])
    release(e.cp, SECRET)
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "dyn1 once the secret came")
    assert https_status(e, p1) == 200


def test_lds_listener_certificate_from_an_sds_file(env):
    """An SDS file named by a listener from LDS: read when the listener is
    built (nothing to warm), watched from then on (rotation), and no longer
    watched once the listener is removed and drained."""
    e = env.start("GRPC")
    make_cert(e.pki, e.dir, "s1")
    make_cert(e.pki, e.dir, "s2")
    path = f"{e.dir}/server.yaml"
    sds_file(path, file_cert_secret("server", f"{e.dir}/s1.crt", f"{e.dir}/s1.key"))
    p1 = free_port()
    src = {"path_config_source": {"path": path}, "resource_api_version": "V3"}
    e.cp.set(LDS, [tls_listener("dyn1", p1, "server", source=src)])
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "dyn1 with the file's certificate")
    assert warming_listeners(e) == 0
    sds_file(path, file_cert_secret("server", f"{e.dir}/s2.crt", f"{e.dir}/s2.key"), version="2")
    wait_for(lambda: try_cn(e, p1) == "s2", 10, "the file's rotated certificate")
    assert stat(e.admin, "sds.server.update_success") == 2
    e.cp.set(LDS, [], remove=["dyn1"])
    wait_for(lambda: "secret 'server' (tls_certificate) no longer used: its file is no longer watched"
             in e.sharp.output(), 10 * SLOW, "the file's watch released")
    # a change of the file now reaches nobody
    sds_file(path, file_cert_secret("server", f"{e.dir}/s1.crt", f"{e.dir}/s1.key"), version="3")
    time.sleep(0.5)
    assert stat(e.admin, "sds.server.update_attempt") == 2


@pytest.mark.parametrize("mode", MODES)
def test_lds_listener_with_an_sds_api_config_source_of_its_own(env, mode):
    """Istio's shape: the secret on a SecretDiscoveryService stream of its
    own (api_config_source, initial_fetch_timeout 0s: no timeout); the
    stream opens with the first listener naming the secret and ends with
    the last one."""
    e = env.start(mode)
    make_cert(e.pki, e.dir, "s1")
    p1 = free_port()
    e.cp.set(SECRET, [cert_secret(e, "default", "s1")])
    src = {"api_config_source": ads_config(mode), "initial_fetch_timeout": "0s", "resource_api_version": "V3"}

    def sds_streams():
        return [s for s in e.cp.call("GET", "/state")["streams"] if "SecretDiscoveryService" in s["method"]]
    assert sds_streams() == []
    e.cp.set(LDS, [tls_listener("inbound", p1, "default", source=src)])
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "inbound serving with `default`")
    assert len(sds_streams()) == 1
    assert https_status(e, p1) == 200
    e.cp.set(LDS, [], remove=["inbound"])
    wait_for(lambda: sds_streams() == [], 10 * SLOW, "the SDS stream ended")
    e.cp.set(LDS, [tls_listener("inbound", p1, "default", source=src, stat_prefix="again")])
    wait_for(lambda: try_cn(e, p1) == "s1", 10, "inbound again on a new stream")
    assert len(sds_streams()) == 1


# ---- clusters from CDS --------------------------------------------------------

@pytest.fixture
def tls_upstream(procs, pki, tmp_path):
    script = tmp_path / "tls_server.py"
    script.write_text(TLS_SERVER)
    port = free_port()
    procs.append(Proc([sys.executable, str(script), str(port), f"{pki}/rsa.crt", f"{pki}/rsa.key",
                       f"{pki}/ca.crt", "0", "http/1.1", "1"]))
    wait_port(port)
    return port


@pytest.mark.parametrize("mode", MODES)
def test_cds_cluster_warms_until_its_validation_context_comes(env, tls_upstream, mode):
    e = env.start(mode)
    p1 = free_port()
    hold(e.cp, SECRET)
    e.cp.set(CDS, [tls_cluster("tlsc", tls_upstream, "ca")])
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 1, 10, "tlsc warming on its secret")
    wait_acked(e.cp, CDS, 2)
    assert clusters(e.admin) == (["tlsc"], ["c0"])
    assert "CDS: cluster 'tlsc' warming (its first SDS secrets)" in e.sharp.output()
    # a listener may route to the warming cluster; it is not in use yet
    e.cp.set(LDS, [plain_listener("front", p1, "tlsc")])
    wait_for(lambda: get(p1)[0] == 503, 10, "the listener, the cluster not in use yet")
    assert stat(e.admin, "http.front.no_cluster") >= 1
    time.sleep(0.3)
    assert stat(e.admin, "cluster_manager.warming_clusters") == 1
    e.cp.set(SECRET, [ca_secret(e, "ca", "ca")])
    release(e.cp, SECRET)
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 0, 10, "tlsc warmed")
    assert clusters(e.admin) == ([], ["c0", "tlsc"])
    status, body = get(p1)
    assert status == 200, body
    assert json.loads(body)["sni"] == TLS_HOST
    # the trust anchor rotates: another CA fails verification of new
    # upstream connections (503), the right one again passes
    e.cp.set(SECRET, [ca_secret(e, "ca", "ca2")])
    wait_for(lambda: get(p1, "/x")[0] == 503, 10, "verification against the rotated CA")
    assert stat(e.admin, "cluster.tlsc.ssl.fail_verify_error") >= 1
    e.cp.set(SECRET, [ca_secret(e, "ca", "ca")])
    wait_for(lambda: get(p1, "/y")[0] == 200, 10, "the CA back")
    # a cluster removed while it warms on a secret goes with its subscription
    hold(e.cp, SECRET)
    e.cp.set(CDS, [tls_cluster("tlsd", tls_upstream, "never")])
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 1, 10, "tlsd warming")
    wait_for(lambda: "never" in sds_names(e.cp), 10, "the subscription to `never`")
    e.cp.set(CDS, [], remove=["tlsd"])
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 0, 10, "tlsd removed")
    wait_for(lambda: sds_names(e.cp) == {"ca"}, 10 * SLOW, "`never` unsubscribed")
    release(e.cp, SECRET)
    # removed: the cluster goes, and with it its secret's subscription
    e.cp.set(LDS, [plain_listener("front", p1, "c0")])
    wait_for(lambda: get(p1)[0] == 200 and "u1" in get(p1)[1], 10, "front on c0")
    e.cp.set(CDS, [], remove=["tlsc"])
    wait_for(lambda: clusters(e.admin) == ([], ["c0"]), 10, "tlsc removed")
    wait_for(lambda: sds_names(e.cp) == set(), 10 * SLOW, "`ca` unsubscribed")
    assert not nacks(e.cp, CDS)


def combined_cluster(name, port, san):
    """Istio's upstream shape: a combined validation context whose CA is
    the SDS secret ROOTCA and whose default context matches a DNS SAN."""
    c = tls_cluster(name, port, "unused")
    common = c["resource"]["transport_socket"]["typed_config"]["common_tls_context"]
    del common["validation_context_sds_secret_config"]
    common["combined_validation_context"] = {
        "default_validation_context": {"match_typed_subject_alt_names": [
            {"san_type": "DNS", "matcher": {"exact": san}}]},
        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": ADS}}
    return c


@pytest.mark.parametrize("mode", MODES)
def test_cds_clusters_with_a_combined_validation_context_from_sds(env, tls_upstream, mode):
    """Two clusters share ROOTCA's subscription and warm on it; each merges
    it with its default context: the one matching the upstream's SAN
    serves, the other fails verification (fail_verify_san)."""
    e = env.start(mode)
    p1 = free_port()
    hold(e.cp, SECRET)
    e.cp.set(CDS, [combined_cluster("good", tls_upstream, TLS_HOST),
                   combined_cluster("bad", tls_upstream, "other.test")])
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 2, 10, "both warming on ROOTCA")
    wait_for(lambda: sds_names(e.cp) == {"ROOTCA"}, 10, "one subscription to ROOTCA")
    hcm_routes = hcm("front", "good")
    hcm_routes["route_config"]["virtual_hosts"][0]["routes"].insert(
        0, {"match": {"prefix": "/bad"}, "route": {"cluster": "bad"}})
    listener = plain_listener("front", p1, "good")
    listener["resource"]["filter_chains"][0]["filters"][0]["typed_config"] = hcm_routes
    e.cp.set(LDS, [listener])
    e.cp.set(SECRET, [ca_secret(e, "ROOTCA", "ca")])
    release(e.cp, SECRET)
    wait_for(lambda: stat(e.admin, "cluster_manager.warming_clusters") == 0, 10, "both warmed")
    wait_for(lambda: get(p1, "/good")[0] == 200, 10, "good serving")
    assert json.loads(get(p1, "/good")[1])["sni"] == TLS_HOST
    assert get(p1, "/bad")[0] == 503
    assert stat(e.admin, "cluster.bad.ssl.fail_verify_san") >= 1
    assert sds_requests(e.cp, "ROOTCA") == 1
    # ROOTCA rotates to another CA: both now fail verification
    e.cp.set(SECRET, [ca_secret(e, "ROOTCA", "ca2")])
    wait_for(lambda: get(p1, "/good")[0] == 503, 10, "good failing against the rotated CA")
    assert stat(e.admin, "cluster.good.ssl.fail_verify_error") >= 1


@pytest.mark.parametrize("mode", MODES)
def test_changed_cluster_naming_the_same_secret_keeps_its_subscription(env, tls_upstream, mode):
    """A changed cluster (another connect_timeout) naming the secret the
    current version uses is built at once with it (nothing to warm), and
    the subscription stays across the swap: the old version's consumer goes
    with it, not the secret."""
    e = env.start(mode)
    e.cp.set(SECRET, [ca_secret(e, "ca", "ca")])
    p1 = free_port()
    e.cp.set(CDS, [tls_cluster("tlsc", tls_upstream, "ca")])
    wait_for(lambda: clusters(e.admin) == ([], ["c0", "tlsc"]), 10, "tlsc warmed")
    e.cp.set(LDS, [plain_listener("front", p1, "tlsc")])
    wait_for(lambda: get(p1)[0] == 200, 10, "front on tlsc")
    changed = tls_cluster("tlsc", tls_upstream, "ca")
    changed["resource"]["connect_timeout"] = "2s"
    e.cp.set(CDS, [changed])
    wait_acked(e.cp, CDS, 3)
    assert stat(e.admin, "cluster_manager.warming_clusters") == 0
    assert get(p1, "/again")[0] == 200
    time.sleep(2.5)  # the replaced version is freed, the sweep runs
    assert sds_names(e.cp) == {"ca"}
    assert sds_requests(e.cp, "ca") == 1
    assert get(p1, "/last")[0] == 200
    assert stat(e.admin, "cluster_manager.cluster_modified") == 1


def test_config_dump_redacts_inline_keys_of_xds_resources(env):
    """An LDS listener with an inline private key and a CDS cluster with an
    inline client key: /config_dump's dynamic_listeners and
    dynamic_active_clusters show them "[redacted]" (the bootstrap's static
    resources are checked in test_tls_downstream.py), certificates kept."""
    make_cert(env.pki, env.dir, "s1")
    with open(f"{env.dir}/s1.crt") as c, open(f"{env.dir}/s1.key") as k:
        crt, key = c.read(), k.read()
    port = free_port()
    lis = tls_listener("inl", port, "unused")
    lis["resource"]["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"] = {
        "alpn_protocols": ["http/1.1"],
        "tls_certificates": [{"certificate_chain": {"inline_string": crt}, "private_key": {"inline_string": key}}]}
    cl = plain_cluster("up_tls", free_port())
    cl["resource"]["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": US_TLS, "sni": TLS_HOST, "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"inline_string": crt},
                                  "private_key": {"inline_string": key}}]}}}
    e = env.start("GRPC", lds=[lis], cds=[cl])
    wait_for(lambda: try_cn(e, port) == "s1", 10, "the listener serving with its inline key")
    body = admin_get(e.admin, "/config_dump")
    assert "PRIVATE KEY" not in body and key.splitlines()[1] not in body
    dump = {c["@type"].rsplit(".", 1)[1]: c for c in json.loads(body)["configs"]}
    red = {"inline_string": "[redacted]"}
    dl = next(x for x in dump["ListenersConfigDump"]["dynamic_listeners"] if x["name"] == "inl")
    ts = dl["active_state"]["listener"]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert ts["common_tls_context"]["tls_certificates"] == [{"certificate_chain": {"inline_string": crt},
                                                             "private_key": red}]
    dc = next(x["cluster"] for x in dump["ClustersConfigDump"]["dynamic_active_clusters"]
              if x["cluster"]["name"] == "up_tls")
    uts = dc["transport_socket"]["typed_config"]
    assert uts["sni"] == TLS_HOST
    assert uts["common_tls_context"]["tls_certificates"] == [{"certificate_chain": {"inline_string": crt},
                                                              "private_key": red}]
    for q in ("resource=dynamic_listeners", "resource=dynamic_active_clusters&mask=cluster.transport_socket"):
        b = admin_get(e.admin, "/config_dump?" + q)
        assert "PRIVATE KEY" not in b and "[redacted]" in b, q
