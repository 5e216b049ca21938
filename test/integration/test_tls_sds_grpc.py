"""TLS secrets from an SDS server: an SdsSecretConfig whose sds_config is
ads or a gRPC api_config_source (state of the world and incremental), served
by the test control plane on Envoy's official protos (test/xds). The secret
arrives after the config is loaded: the workers wait for it (the initial
fetch), a listener without it refuses handshakes, an update rotates the
certificate for new handshakes, a bad one is NACKed and the previous stays.
Every wait is bounded; every process is stopped by PID."""
import json
import socket
import ssl
import time

import pytest

from conftest import SLOW, TLS_HOST, free_port, stat, validate_config, wait_for
from test_tls_sds import client_ctx, make_cert, serial
from test_xds_ads import ADS, H2, HCM, MODES, ROUTER, ads_config, env, ep, nacks, wait_acked  # noqa: F401

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
DS_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def cert_resource(d, name):
    with open(f"{d}/{name}.crt") as c, open(f"{d}/{name}.key") as k:
        crt, key = c.read(), k.read()
    return {"name": "server", "resource": {"name": "server", "tls_certificate": {
        "certificate_chain": {"inline_string": crt}, "private_key": {"inline_string": key}}}}


def sds_source(mode, via_ads, timeout=None):
    src = {"resource_api_version": "V3"}
    if via_ads:
        src["ads"] = {}
    else:
        src["api_config_source"] = ads_config(mode)
    if timeout is not None:
        src["initial_fetch_timeout"] = timeout
    return src


def bootstrap(listen, admin, xds_port, upstream_port, mode, via_ads, timeout=None):
    tls = {"@type": DS_TLS, "common_tls_context": {
        "alpn_protocols": ["http/1.1"],
        "tls_certificate_sds_secret_configs": [{"name": "server", "sds_config": sds_source(mode, via_ads, timeout)}]}}
    hcm = {"@type": HCM, "stat_prefix": "ingress",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    boot = {
        "node": {"id": "sharp-1", "cluster": "edge"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}],
                                              "transport_socket": {"name": "envoy.transport_sockets.tls",
                                                                   "typed_config": tls}}]}],
            "clusters": [
                {"name": "xds", "type": "STATIC", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                     "@type": H2, "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [ep(xds_port)]}]}},
                {"name": "app", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "app", "endpoints": [{"lb_endpoints": [ep(upstream_port)]}]}}]}}
    if via_ads:
        boot["dynamic_resources"] = {"ads_config": ads_config(mode)}
    return boot


class F:
    pass


def start(env, pki, tmp_path, mode, via_ads, timeout=None, with_secret=True):
    mk_cp, mk_up, mk_sharp = env
    f = F()
    f.pki, f.dir = pki, str(tmp_path)
    f.serial1 = make_cert(pki, f.dir, "s1")
    f.up = mk_up("u1")
    f.cp = mk_cp()
    if with_secret:
        f.cp.set(SECRET, [cert_resource(f.dir, "s1")])
    f.listen, f.admin = free_port(), free_port()
    f.sharp = mk_sharp(bootstrap(f.listen, f.admin, f.cp.xds_port, f.up.port, mode, via_ads, timeout))
    return f


def https_status(f):
    ctx = client_ctx(f.pki)
    raw = socket.create_connection(("127.0.0.1", f.listen), timeout=5 * SLOW)
    s = ctx.wrap_socket(raw, server_hostname=TLS_HOST)
    try:
        s.sendall(f"GET / HTTP/1.1\r\nhost: {TLS_HOST}\r\nconnection: close\r\n\r\n".encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


@pytest.mark.parametrize("via_ads", [True, False], ids=["ads", "api_config_source"])
@pytest.mark.parametrize("mode", MODES)
def test_listener_certificate_from_an_sds_server_and_its_rotation(env, pki, tmp_path, mode, via_ads):
    f = start(env, pki, tmp_path, mode, via_ads)
    f.sharp.wait_ready(f.admin, timeout=20 * SLOW)
    assert serial(f) == f.serial1
    assert https_status(f) == 200
    wait_acked(f.cp, SECRET, 1)
    # the subscription asked for the secret by name
    reqs = f.cp.requests(SECRET)
    names = reqs[0].get("resource_names") or reqs[0].get("resource_names_subscribe")
    assert names == ["server"], reqs[0]
    # rotation: new handshakes get the new certificate
    serial2 = make_cert(pki, f.dir, "s2")
    f.cp.set(SECRET, [cert_resource(f.dir, "s2")])
    wait_for(lambda: serial(f) == serial2, 10, "the rotated certificate")
    wait_acked(f.cp, SECRET, 2)
    assert https_status(f) == 200
    # a certificate with another's key: NACKed, the current one stays
    bad = cert_resource(f.dir, "s1")
    bad["resource"]["tls_certificate"]["private_key"] = cert_resource(f.dir, "s2")["resource"]["tls_certificate"][
        "private_key"]
    f.cp.set(SECRET, [bad])
    wait_for(lambda: nacks(f.cp, SECRET), 10, "the NACK of the bad secret")
    detail = json.dumps(nacks(f.cp, SECRET)[-1]["error_detail"])
    assert "server" in detail, detail
    assert serial(f) == serial2
    assert stat(f.admin, "sds.server.update_success") >= 2
    assert stat(f.admin, "sds.server.update_rejected") >= 1


@pytest.mark.parametrize("mode", MODES)
def test_secret_still_to_come_holds_the_start_then_the_listener_serves(env, pki, tmp_path, mode):
    """No secret on the server: the workers wait for the initial fetch
    (state of the world: initial_fetch_timeout 1 s; incremental: the
    server's answer that the name does not exist, which Envoy's SdsApi
    ACKs and ignores, its init target ready), then the listener refuses
    handshakes (ssl.connection_error) until the secret comes, then
    serves."""
    t0 = time.time()
    f = start(env, pki, tmp_path, mode, True, timeout="1s", with_secret=False)
    f.sharp.wait_ready(f.admin, timeout=20 * SLOW)
    if mode == "GRPC":
        assert time.time() - t0 >= 0.9
        assert stat(f.admin, "sds.server.init_fetch_timeout") == 1
    else:
        assert stat(f.admin, "sds.server.init_fetch_timeout") == 1 or (
            stat(f.admin, "sds.server.update_success") == 1 and not nacks(f.cp, SECRET))
        assert stat(f.admin, "sds.server.update_rejected") == 0
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        serial(f)
    assert stat(f.admin, "listener.127.0.0.1_%d.ssl.connection_error" % f.listen) >= 1
    f.cp.set(SECRET, [cert_resource(f.dir, "s1")])
    wait_for(lambda: _serves(f), 10, "handshakes once the secret came")
    assert serial(f) == f.serial1
    assert https_status(f) == 200


def _serves(f):
    try:
        return serial(f) == f.serial1
    except (ssl.SSLError, ConnectionError, OSError):
        return False


def test_sds_server_refusals():
    """REST is refused as for every xDS type; ADS without ads_config too."""
    boot = bootstrap(10443, 9901, 18000, 8080, "REST", False)
    rc, out = validate_config(json.dumps(boot))
    assert rc == 1 and "REST" in out, out
    boot = bootstrap(10443, 9901, 18000, 8080, "GRPC", True)
    del boot["dynamic_resources"]
    rc, out = validate_config(json.dumps(boot))
    assert rc == 1 and "ADS must be configured" in out, out
