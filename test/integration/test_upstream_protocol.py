"""The upstream protocol taken from the downstream's: the HttpProtocolOptions
extension's use_downstream_protocol_config (Envoy's USE_DOWNSTREAM_PROTOCOL).

One host of one cluster speaks both protocols: a small splicer in this file
listens on one port and hands each connection, by its first bytes, to the
test upstream in --h2 mode (the HTTP/2 connection preface) or to one in
HTTP/1.1 mode (anything else), and counts the connections of each. Clients
are curl (--http2-prior-knowledge, --http1.1, --http1.0)."""
import json
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import (admin_get, bootstrap_yaml, free_port, run_sharp_config, SLOW, stat, Upstream,
                      validate_config as validate, wait_for)

C = "cluster.backend."
EXT = """typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    use_downstream_protocol_config:
%s"""
# options that show in the upstream's view of the client's SETTINGS
H2_OPTS = ("      http_protocol_options: {}\n"
           "      http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 70000 }\n")
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Splicer:
    """One listening port in front of an HTTP/1.1 and an HTTP/2 upstream."""

    def __init__(self, h1_port, h2_port):
        self.ports = {"h1": h1_port, "h2": h2_port}
        self.accepted = {"h1": 0, "h2": 0}
        self.open = {"h1": 0, "h2": 0}
        self.fail_next = {"h1": 0, "h2": 0}  # connections to reset at once, unforwarded
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        head = b""
        try:
            # both clients speak first; the preface's first bytes decide
            while len(head) < len(PREFACE) and PREFACE.startswith(head):
                b = c.recv(len(PREFACE) - len(head), socket.MSG_PEEK)
                if not b or b == head:
                    if not b:
                        c.close()
                        return
                    time.sleep(0.005)
                head = b
        except OSError:
            c.close()
            return
        proto = "h2" if head == PREFACE else "h1"
        with self.lock:
            self.accepted[proto] += 1
            fail = self.fail_next[proto] > 0
            if fail:
                self.fail_next[proto] -= 1
            else:
                self.open[proto] += 1
        if fail:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            return
        u = socket.create_connection(("127.0.0.1", self.ports[proto]))
        c.settimeout(None)
        done = threading.Event()

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if done.is_set():
                a.close()
                b.close()
                with self.lock:
                    self.open[proto] -= 1
            else:
                done.set()

        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        threading.Thread(target=pump, args=(u, c), daemon=True).start()

    def counts(self):
        with self.lock:
            return dict(self.accepted), dict(self.open)

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def backend(procs):
    h1 = Upstream(name="h1")
    h2 = Upstream(name="h2", extra=("--h2",))
    procs.extend([h1, h2])
    s = Splicer(h1.port, h2.port)
    yield s, h1, h2
    s.close()


def start(procs, ports, extra=EXT % H2_OPTS, routes=None, clusters=None):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, clusters or {"backend": ports}, routes=routes, cluster_extra=extra,
                       hcm_extra="http_protocol_options: { accept_http_10: true }\n")
    run_sharp_config(procs, y, admin, concurrency=1)
    return listen, admin


def curl(listen, path, proto, timeout=10):
    flag = {"h2": "--http2-prior-knowledge", "h1.1": "--http1.1", "h1.0": "--http1.0"}[proto]
    r = subprocess.run(["curl", "-sS", flag, "-o", "-", "-w", "\n%{http_code} %{http_version}",
                        f"http://127.0.0.1:{listen}{path}"], capture_output=True, timeout=timeout * SLOW)
    body, _, tail = r.stdout.decode().rpartition("\n")
    code, version = tail.split()
    return int(code), version, body


def echo_version(listen, proto):
    code, down, body = curl(listen, "/echo", proto)
    assert code == 200, body
    return down, json.loads(body)["version"]  # the HTTP/1 upstream says "1.1", the HTTP/2 one "HTTP/2"


def test_each_request_goes_over_its_downstream_protocol(procs, backend):
    """HTTP/2 downstream -> HTTP/2 upstream, HTTP/1.1 and HTTP/1.0 ->
    HTTP/1.1, all to the one host of the cluster; each protocol's
    connection is reused by later requests of that protocol."""
    sp, _, _ = backend
    listen, admin = start(procs, [sp.port])
    assert echo_version(listen, "h2") == ("2", "HTTP/2")
    assert echo_version(listen, "h1.1") == ("1.1", "1.1")
    # Envoy has no HTTP/1.0 upstream: HTTP/1.0 goes over HTTP/1.1
    assert echo_version(listen, "h1.0")[1] == "1.1"
    assert echo_version(listen, "h2") == ("2", "HTTP/2")
    assert echo_version(listen, "h1.1") == ("1.1", "1.1")
    accepted, opened = sp.counts()
    assert accepted == {"h1": 1, "h2": 1} and opened == {"h1": 1, "h2": 1}
    assert stat(admin, C + "upstream_cx_http1_total") == 1
    assert stat(admin, C + "upstream_cx_http2_total") == 1
    assert stat(admin, C + "upstream_cx_total") == 2
    assert stat(admin, C + "upstream_rq_total") == 5
    # the HTTP/2 pool's streams count in the cluster's http2.* stats
    assert stat(admin, C + "http2.rx_reset") == 0


def test_http2_options_reach_the_upstreams_settings(procs, backend):
    """use_downstream_protocol_config.http2_protocol_options are the HTTP/2
    connections' SETTINGS; unset, Envoy's defaults."""
    sp, _, _ = backend
    listen, _ = start(procs, [sp.port])
    code, _, body = curl(listen, "/admin/stats", "h2")
    s = json.loads(body)
    assert code == 200
    assert s["peer_settings"]["max_concurrent_streams"] == 7
    assert s["peer_settings"]["initial_window_size"] == 70000
    listen, _ = start(procs, [sp.port], extra=EXT % "      http_protocol_options: {}\n")
    s = json.loads(curl(listen, "/admin/stats", "h2")[2])
    assert s["peer_settings"]["max_concurrent_streams"] == 2147483647
    assert s["peer_settings"]["initial_window_size"] == 268435456
    assert echo_version(listen, "h1.1") == ("1.1", "1.1")


def test_max_concurrent_streams_of_the_http2_pool(procs, backend):
    """The HTTP/2 pool takes up to max_concurrent_streams streams per
    connection; the HTTP/1.1 pool one request per connection."""
    sp, _, _ = backend
    listen, admin = start(procs, [sp.port], extra=EXT % (
        "      http2_protocol_options: { max_concurrent_streams: 2 }\n"))
    out = []

    def one(proto):
        out.append(curl(listen, "/echo?delay_ms=400", proto)[0])

    ts = [threading.Thread(target=one, args=(p,)) for p in ["h2"] * 4 + ["h1.1"] * 2]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == [200] * 6
    accepted, _ = sp.counts()
    assert accepted == {"h1": 2, "h2": 2}
    assert stat(admin, C + "upstream_cx_http2_total") == 2
    assert stat(admin, C + "upstream_cx_http1_total") == 2


RETRY_ROUTES = ('- match: { prefix: "/" }\n'
                '  route: { cluster: backend, retry_policy: { retry_on: "reset", num_retries: 1 } }\n')


def test_retry_takes_the_same_protocol(procs, backend):
    """A try reset by the upstream is retried over the protocol of the
    downstream again."""
    sp, _, _ = backend
    listen, admin = start(procs, [sp.port], routes=RETRY_ROUTES)
    sp.fail_next["h2"] = 1
    assert echo_version(listen, "h2") == ("2", "HTTP/2")
    assert sp.counts()[0] == {"h1": 0, "h2": 2}
    assert stat(admin, C + "upstream_rq_retry") == 1
    sp.fail_next["h1"] = 1
    assert echo_version(listen, "h1.1") == ("1.1", "1.1")
    assert sp.counts()[0] == {"h1": 2, "h2": 2}
    assert stat(admin, C + "upstream_rq_retry") == 2
    assert stat(admin, C + "upstream_rq_retry_success") == 2


def test_drain_closes_both_pools(procs, backend):
    """/drain_listeners closes the idle connections of both pools."""
    sp, _, _ = backend
    listen, admin = start(procs, [sp.port])
    assert echo_version(listen, "h2")[1] == "HTTP/2"
    assert echo_version(listen, "h1.1")[1] == "1.1"
    assert sp.counts()[1] == {"h1": 1, "h2": 1}
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/drain_listeners", method="POST")
    urllib.request.urlopen(req, timeout=5).read()
    wait_for(lambda: sp.counts()[1] == {"h1": 0, "h2": 0}, 5, "both upstream connections closed")
    assert stat(admin, C + "upstream_cx_active") == 0


HC = """health_checks:
- timeout: 0.5s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 1
  healthy_threshold: 1
  alt_port: %d
  http_health_check: { path: /healthz }
"""


def test_health_failure_drains_both_pools(procs, backend):
    """A host that fails its health check gets the connections of both its
    pools closed (Envoy's DrainExistingConnections). The checks go to the
    HTTP/1.1 upstream directly (alt_port), so the splicer sees only the
    pools' connections."""
    sp, h1, _ = backend
    listen, admin = start(procs, [sp.port], extra=EXT % H2_OPTS + HC % h1.port)
    host = f"127.0.0.1:{sp.port}"

    def flags():
        for line in admin_get(admin, "/clusters").splitlines():
            p = line.split("::")
            if len(p) == 4 and p[1] == host and p[2] == "health_flags":
                return p[3]
    wait_for(lambda: flags() == "healthy", 5, "the host healthy")
    assert echo_version(listen, "h2")[1] == "HTTP/2"
    assert echo_version(listen, "h1.1")[1] == "1.1"
    assert sp.counts()[1] == {"h1": 1, "h2": 1}
    urllib.request.urlopen(f"http://127.0.0.1:{h1.port}/admin/fault?status=503", timeout=5).read()
    wait_for(lambda: flags() != "healthy", 5, "the host failed")
    wait_for(lambda: sp.counts()[1] == {"h1": 0, "h2": 0}, 5, "both pools drained")
    urllib.request.urlopen(f"http://127.0.0.1:{h1.port}/admin/fault", timeout=5).read()
    wait_for(lambda: flags() == "healthy", 5, "the host healthy again")
    assert echo_version(listen, "h2")[1] == "HTTP/2"
    assert echo_version(listen, "h1.1")[1] == "1.1"
    assert sp.counts()[0] == {"h1": 2, "h2": 2}


def test_mirror_to_a_downstream_protocol_cluster(procs, backend):
    """Envoy's shadows are async client streams, which are HTTP/1.1: a
    mirror to a use_downstream_protocol_config cluster goes over HTTP/1.1
    even when the primary request came over HTTP/2 (the primary itself goes
    over HTTP/2)."""
    sp, h1, h2 = backend
    shadow_sp = Splicer(h1.port, h2.port)
    try:
        routes = ('- match: { prefix: "/" }\n'
                  '  route:\n    cluster: backend\n'
                  '    request_mirror_policies: [{ cluster: shadow }]\n')
        listen, admin = start(procs, None, routes=routes,
                              clusters={"backend": [sp.port], "shadow": [shadow_sp.port]})
        assert echo_version(listen, "h2") == ("2", "HTTP/2")
        wait_for(lambda: stat(admin, "cluster.shadow.upstream_rq_completed") == 1, 5, "the shadow's response")
        assert shadow_sp.counts()[0] == {"h1": 1, "h2": 0}
        assert stat(admin, "cluster.shadow.upstream_cx_http1_total") == 1
        assert stat(admin, "cluster.shadow.upstream_cx_http2_total") == 0
        assert echo_version(listen, "h1.1") == ("1.1", "1.1")
        wait_for(lambda: stat(admin, "cluster.shadow.upstream_rq_completed") == 2, 5, "the shadow's response")
        assert shadow_sp.counts()[0] == {"h1": 1, "h2": 0}
        assert sp.counts()[0] == {"h1": 1, "h2": 1}
    finally:
        shadow_sp.close()


# ---- configuration -------------------------------------------------------------

P = ('static_resources.clusters[0].typed_extension_protocol_options'
     '["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].use_downstream_protocol_config')
REFUSED = [
    ("      http3_protocol_options: {}\n", P + ".http3_protocol_options", "HTTP/3"),
    ("      http2_protocol_options: { allow_metadata: true }\n", P + ".http2_protocol_options.allow_metadata",
     "METADATA"),
    ("      http2_protocol_options: { connection_keepalive: { timeout: 1s, connection_idle_interval: 1s } }\n",
     P + ".http2_protocol_options.connection_keepalive.connection_idle_interval", "idle"),
    ("      http_protocol_options: { accept_http_10: true }\n", P + ".http_protocol_options.accept_http_10",
     "HTTP/1.0"),
    ("      http_protocol_options: { enable_trailers: true }\n",
     P + ".http_protocol_options.enable_trailers", "trailers"),
]


@pytest.mark.parametrize("opts,path,feature", REFUSED, ids=[r[1].rsplit(".", 1)[-1] for r in REFUSED])
def test_unimplemented_fields_under_it_are_refused(opts, path, feature):
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=EXT % opts))
    assert rc == 1, out
    assert path + ":" in out and "is not supported by SHARP" in out and feature in out, out


@pytest.mark.parametrize("opts,field", [
    ("      http2_protocol_options: { initial_stream_window_size: 1000 }\n", "initial_stream_window_size"),
    ("      http2_protocol_options: { initial_connection_window_size: 2147483648 }\n",
     "initial_connection_window_size"),
    ("      http2_protocol_options: { max_concurrent_streams: 0 }\n", "max_concurrent_streams"),
    ("      http2_protocol_options: { max_outbound_frames: 0 }\n", "max_outbound_frames"),
    ("      http2_protocol_options: { connection_keepalive: { interval: 1s } }\n", "connection_keepalive.timeout"),
], ids=["stream_window", "connection_window", "max_concurrent_streams", "max_outbound_frames", "keepalive"])
def test_invalid_values_under_it_are_refused(opts, field):
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=EXT % opts))
    assert rc == 1, out
    assert P + ".http2_protocol_options." + field in out, out


def test_valid_options_and_auto_config_needs_tls():
    opts = ("      http_protocol_options: {}\n"
            "      http2_protocol_options:\n        hpack_table_size: 0\n        max_concurrent_streams: 100\n"
            "        initial_stream_window_size: 65535\n        initial_connection_window_size: 2147483647\n"
            "        override_stream_error_on_invalid_http_message: true\n"
            "        connection_keepalive: { interval: 10s, timeout: 1s }\n")
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=EXT % opts))
    assert rc == 0, out
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=EXT % "      {}\n"))
    assert rc == 0, out
    auto = EXT.replace("use_downstream_protocol_config:\n%s", "auto_config: {}\n")
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=auto))
    # auto_config picks the protocol by ALPN: a plaintext cluster cannot (test_tls_upstream.py has it over TLS)
    assert rc == 1 and "ALPN configured for cluster b which has a non-ALPN transport socket" in out, out


def test_grpc_health_check_needs_its_http2_options():
    """Envoy's gRPC health checker needs the cluster's HTTP2 feature, which
    use_downstream_protocol_config gives only with http2_protocol_options."""
    hc = "health_checks:\n- { timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, " \
         "grpc_health_check: {} }\n"
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=EXT % H2_OPTS + hc))
    assert rc == 0, out
    rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]},
                                      cluster_extra=EXT % "      http_protocol_options: {}\n" + hc))
    assert rc == 1 and "must support HTTP/2 for gRPC healthchecking" in out, out
