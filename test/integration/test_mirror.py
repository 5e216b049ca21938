"""Request mirroring (RouteAction / VirtualHost / RouteConfiguration
request_mirror_policies): the shadow cluster gets a copy of the request
(headers and body) with Envoy's "-shadow" host, its answer is discarded and
a dead, slow or failing shadow never changes or delays the primary answer;
runtime_fraction, cluster_header, the route-over-virtual-host rule, the
shadow cluster's stats and circuit breakers, and the body limits."""
import json
import socket
import subprocess
import threading
import time

from conftest import (PROTOS, SHARP, Upstream, bootstrap_yaml, free_port, protos, run_sharp_config, stat)

H1 = PROTOS["h1"]


class Recorder:
    """An in-process HTTP/1.1 upstream (HTTP/2 with prior knowledge when
    `h2`) that records every request (method, path, headers with lower-case
    names, body) and answers `status` after `delay` seconds. Over HTTP/2
    the :authority is recorded as "host"."""

    def __init__(self, status=200, delay=0.0, h2=False):
        import http.server

        rec = self
        self.requests = []
        self.status = status
        self.delay = delay
        self.lock = threading.Lock()
        if h2:
            self._start_h2()
            return

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        n = int(self.rfile.readline().strip() or b"0", 16)
                        if n == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(n)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with rec.lock:
                    rec.requests.append({"method": self.command, "path": self.path,
                                         "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body})
                if rec.delay:
                    time.sleep(rec.delay)
                out = b"recorded\n"
                self.send_response(rec.status)
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _start_h2(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.server = None
        threading.Thread(target=self._accept_h2, daemon=True).start()

    def _accept_h2(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve_h2, args=(c,), daemon=True).start()

    def _serve_h2(self, sock):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False,
                                                                           header_encoding="utf-8"))
        send_lock = threading.Lock()
        streams = {}

        def flush():
            data = conn.data_to_send()
            if data:
                sock.sendall(data)

        def answer(sid):
            out = b"recorded\n"
            try:
                with send_lock:
                    conn.send_headers(sid, [(":status", str(self.status)), ("content-length", str(len(out)))])
                    conn.send_data(sid, out, end_stream=True)
                    flush()
            except Exception:
                pass  # the stream was reset or the connection went away meanwhile

        try:
            with send_lock:
                conn.initiate_connection()
                flush()
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                with send_lock:
                    events = conn.receive_data(data)
                    for ev in events:
                        if isinstance(ev, h2.events.RequestReceived):
                            streams[ev.stream_id] = (dict(ev.headers), bytearray())
                        elif isinstance(ev, h2.events.DataReceived):
                            streams[ev.stream_id][1].extend(ev.data)
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, h2.events.StreamReset):
                            streams.pop(ev.stream_id, None)
                    flush()
                for ev in events:
                    if isinstance(ev, h2.events.StreamEnded) and ev.stream_id in streams:
                        hdrs, body = streams.pop(ev.stream_id)
                        plain = {k: v for k, v in hdrs.items() if not k.startswith(":")}
                        plain["host"] = hdrs[":authority"]
                        with self.lock:
                            self.requests.append({"method": hdrs[":method"], "path": hdrs[":path"],
                                                  "headers": plain, "body": bytes(body)})
                        if self.delay:
                            threading.Timer(self.delay, answer, args=(ev.stream_id,)).start()
                        else:
                            answer(ev.stream_id)
        except OSError:
            return

    def wait(self, n, timeout=5.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)

    def close(self):
        if self.server is None:
            self.sock.close()
            for c in self.conns:
                c.close()
            return
        self.server.shutdown()
        self.server.server_close()


class Sink:
    """Accepts connections and never reads from them: a shadow that cannot
    take the body."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        self.stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


def request(port, method="GET", path="/", body=None, headers=None, timeout=10, proto=H1):
    return proto.request(port, path, method=method, body=body, headers=headers, timeout=timeout)


def start(procs, clusters, routes, vhost_extra="", listener_extra="", cluster_extra="", route_config_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, clusters, routes=routes, vhost_extra=vhost_extra,
                       listener_extra=listener_extra, cluster_extra=cluster_extra)
    if route_config_extra:
        y = y.replace("            name: local_route\n",
                      "            name: local_route\n" + route_config_extra, 1)
    run_sharp_config(procs, y, admin, concurrency=1)
    return listen, admin


def mirror_route(cluster="main", policies="- cluster: shadow\n", prefix="/", extra=""):
    pol = "".join("      " + ln + "\n" for ln in policies.splitlines())
    return (f'- match: {{ prefix: "{prefix}" }}\n  route:\n    cluster: {cluster}\n{extra}'
            f"    request_mirror_policies:\n{pol}")


BOTH = protos("h1", "h2-both")


@BOTH
def test_shadow_gets_a_copy_with_the_shadow_host(procs, proto):
    h2 = proto.up == "h2"
    main, shadow = Recorder(h2=h2), Recorder(h2=h2)
    try:
        listen, admin = start(procs, {"main": [main.port], "shadow": [shadow.port]}, mirror_route(),
                              cluster_extra=proto.cluster)
        body = b"x" * 3000 + b"end"
        st, h, out = request(listen, "POST", "/orders?id=7", body=body,
                             headers={"host": "shop.example:8080", "x-custom": "abc"}, proto=proto)
        assert st == 200 and out == b"recorded\n"
        got = shadow.wait(1)
        assert len(got) == 1
        s = got[0]
        # Envoy appends -shadow to the host part, before the port
        assert s["headers"]["host"] == "shop.example-shadow:8080"
        assert s["method"] == "POST" and s["path"] == "/orders?id=7"
        assert s["body"] == body
        assert s["headers"]["x-custom"] == "abc"
        assert s["headers"]["x-envoy-internal"] == "true"  # the async client marks it internal
        # ... and appends the proxy's local address to x-forwarded-for
        import ipaddress
        assert ipaddress.ip_address(s["headers"]["x-forwarded-for"]).version == 4
        assert "x-forwarded-for" not in main.requests[0]["headers"]
        assert main.requests[0]["headers"]["host"] == "shop.example:8080"
        assert main.requests[0]["body"] == body
        # a host without a port
        request(listen, headers={"host": "plain"}, proto=proto)
        got = shadow.wait(2)
        assert got[1]["headers"]["host"] == "plain-shadow" and got[1]["method"] == "GET"
        # a long host keeps its port after the suffix
        long_host = "h" * 400 + ".example"
        request(listen, headers={"host": long_host + ":9"}, proto=proto)
        got = shadow.wait(3)
        assert got[2]["headers"]["host"] == long_host + "-shadow:9"
        # the shadow counts in its cluster's stats, the primary in its own
        deadline = time.time() + 3
        while time.time() < deadline and stat(admin, "cluster.shadow.upstream_rq_completed") != 3:
            time.sleep(0.05)
        assert stat(admin, "cluster.shadow.upstream_rq_total") == 3
        assert stat(admin, "cluster.shadow.upstream_rq_200") == 3
        assert stat(admin, "cluster.shadow.upstream_rq_active") == 0
        assert stat(admin, "cluster.main.upstream_rq_total") == 3
    finally:
        main.close()
        shadow.close()


@BOTH
def test_disable_shadow_host_suffix_append_and_streamed_large_body(procs, proto):
    h2 = proto.up == "h2"
    main, shadow = Recorder(h2=h2), Recorder(h2=h2)
    try:
        listen, admin = start(procs, {"main": [main.port], "shadow": [shadow.port]},
                              mirror_route(policies="- cluster: shadow\n  disable_shadow_host_suffix_append: true\n"),
                              listener_extra="per_connection_buffer_limit_bytes: 65536\n", cluster_extra=proto.cluster)
        # a body far larger than the buffer limit still reaches the shadow
        # whole: it streams (Envoy's streaming shadows)
        body = bytes(range(256)) * 4096  # 1 MiB
        st, _, _ = request(listen, "PUT", "/big", body=body, headers={"host": "svc:81"}, proto=proto)
        assert st == 200
        got = shadow.wait(1)
        assert len(got) == 1
        assert got[0]["headers"]["host"] == "svc:81"
        assert len(got[0]["body"]) == len(body) and got[0]["body"] == body
        assert stat(admin, "cluster.main.retry_or_shadow_abandoned") == 0
    finally:
        main.close()
        shadow.close()


@BOTH
def test_primary_unaffected_by_dead_slow_and_failing_shadows(procs, proto):
    h2 = proto.up == "h2"
    main, slow, failing = Recorder(h2=h2), Recorder(delay=3.0, h2=h2), Recorder(status=500, h2=h2)
    dead = free_port()  # nothing listens there
    try:
        policies = "- cluster: dead\n- cluster: slow\n- cluster: failing\n"
        listen, admin = start(procs, {"main": [main.port], "dead": [dead], "slow": [slow.port],
                                      "failing": [failing.port]}, mirror_route(policies=policies),
                              cluster_extra=proto.cluster)
        for i in range(3):
            t0 = time.time()
            st, h, out = request(listen, "POST", "/x", body=b"payload-%d" % i, proto=proto)
            took = time.time() - t0
            assert st == 200 and out == b"recorded\n"
            assert took < 1.0, took  # the 3 s shadow does not delay the answer
        assert len(main.requests) == 3
        assert len(failing.wait(3)) == 3 and len(slow.wait(1, timeout=2)) >= 1
        # each shadow may go on its own connection: the recorder sees them
        # in the order its threads take them
        assert sorted(r["body"] for r in failing.requests) == [b"payload-0", b"payload-1", b"payload-2"]
        deadline = time.time() + 3
        while time.time() < deadline and (stat(admin, "cluster.failing.upstream_rq_500") or 0) < 3:
            time.sleep(0.05)
        assert stat(admin, "cluster.failing.upstream_rq_500") == 3
        assert stat(admin, "cluster.dead.upstream_cx_connect_fail") >= 1
        assert stat(admin, "cluster.dead.upstream_rq_503") == 3
        assert stat(admin, "cluster.main.upstream_rq_200") == 3
        assert stat(admin, "cluster.main.upstream_rq_5xx") in (0, None)
        assert stat(admin, "http.ingress_http.downstream_rq_2xx") == 3
    finally:
        main.close()
        slow.close()
        failing.close()


@BOTH
def test_shadow_timeout_is_the_route_timeout(procs, proto):
    h2 = proto.up == "h2"
    main, slow = Recorder(h2=h2), Recorder(delay=2.0, h2=h2)
    try:
        listen, admin = start(procs, {"main": [main.port], "slow": [slow.port]},
                              mirror_route(policies="- cluster: slow\n", extra="    timeout: 0.3s\n"),
                              cluster_extra=proto.cluster)
        st, _, _ = request(listen, proto=proto)
        assert st == 200
        deadline = time.time() + 3
        while time.time() < deadline and not stat(admin, "cluster.slow.upstream_rq_timeout"):
            time.sleep(0.05)
        assert stat(admin, "cluster.slow.upstream_rq_timeout") == 1
        assert stat(admin, "cluster.slow.upstream_rq_504") == 1
        assert stat(admin, "cluster.main.upstream_rq_timeout") == 0
    finally:
        main.close()
        slow.close()


def test_runtime_fraction(procs):
    main, none, every = Recorder(), Recorder(), Recorder()
    try:
        policies = ("- cluster: none\n  runtime_fraction: { default_value: { numerator: 0 } }\n"
                    "- cluster: every\n  runtime_fraction: { default_value: { numerator: 100 } }\n")
        listen, admin = start(procs, {"main": [main.port], "none": [none.port], "every": [every.port]},
                              mirror_route(policies=policies))
        for _ in range(20):
            assert request(listen)[0] == 200
        assert len(every.wait(20)) == 20
        time.sleep(0.2)
        assert none.requests == []
        assert stat(admin, "cluster.none.upstream_rq_total") == 0
    finally:
        main.close()
        none.close()
        every.close()


def test_half_fraction_mirrors_some(procs):
    main, half = Recorder(), Recorder()
    try:
        policies = "- cluster: half\n  runtime_fraction: { default_value: { numerator: 5000, denominator: TEN_THOUSAND } }\n"
        listen, admin = start(procs, {"main": [main.port], "half": [half.port]}, mirror_route(policies=policies))
        for _ in range(60):
            request(listen)
        time.sleep(0.5)
        n = len(half.requests)
        assert 10 <= n <= 50, n  # about half of 60
    finally:
        main.close()
        half.close()


def test_route_policies_replace_virtual_host_policies(procs):
    main, vh, rt, tbl = Recorder(), Recorder(), Recorder(), Recorder()
    try:
        routes = (mirror_route(policies="- cluster: rt\n", prefix="/own") +
                  '- match: { prefix: "/" }\n  route: { cluster: main }\n')
        listen, admin = start(procs, {"main": [main.port], "vh": [vh.port], "rt": [rt.port], "tbl": [tbl.port]},
                              routes, vhost_extra="request_mirror_policies:\n- cluster: vh\n",
                              route_config_extra="            request_mirror_policies:\n            - cluster: tbl\n")
        request(listen, path="/own/1")
        request(listen, path="/other")
        assert [r["path"] for r in rt.wait(1)] == ["/own/1"]
        assert [r["path"] for r in vh.wait(1)] == ["/other"]
        time.sleep(0.2)
        # the route's policy replaced the virtual host's, which replaced the table's
        assert len(rt.requests) == 1 and len(vh.requests) == 1 and tbl.requests == []
    finally:
        for r in (main, vh, rt, tbl):
            r.close()


def test_route_config_policies_apply_without_virtual_host_ones(procs):
    main, tbl = Recorder(), Recorder()
    try:
        listen, admin = start(procs, {"main": [main.port], "tbl": [tbl.port]},
                              '- match: { prefix: "/" }\n  route: { cluster: main }\n',
                              route_config_extra="            request_mirror_policies:\n            - cluster: tbl\n")
        request(listen, path="/t")
        assert [r["path"] for r in tbl.wait(1)] == ["/t"]
    finally:
        main.close()
        tbl.close()


def test_cluster_header(procs):
    main, a = Recorder(), Recorder()
    try:
        listen, admin = start(procs, {"main": [main.port], "a": [a.port]},
                              mirror_route(policies="- cluster_header: X-Mirror-To\n"))
        request(listen, path="/1", headers={"x-mirror-to": "a"})
        request(listen, path="/2")                                 # no header: no shadow
        request(listen, path="/3", headers={"x-mirror-to": "nope"})  # no such cluster: no shadow
        assert request(listen, path="/4", headers={"x-mirror-to": "a"})[0] == 200
        time.sleep(0.3)
        assert [r["path"] for r in a.wait(2)] == ["/1", "/4"]
        assert len(main.requests) == 4
    finally:
        main.close()
        a.close()


@BOTH
def test_shadow_obeys_its_circuit_breakers(procs, proto):
    h2 = proto.up == "h2"
    main, slow = Recorder(h2=h2), Recorder(delay=1.0, h2=h2)
    try:
        cb = ("circuit_breakers:\n  thresholds:\n  - { priority: DEFAULT, max_requests: 1 }\n")
        listen, admin = start(procs, {"main": [main.port], "slow": [slow.port]},
                              mirror_route(policies="- cluster: slow\n"), cluster_extra=cb + proto.cluster)
        for _ in range(3):
            t0 = time.time()
            assert request(listen, proto=proto)[0] == 200
            assert time.time() - t0 < 0.8
        # the first shadow holds the slow cluster's only request slot
        assert stat(admin, "cluster.slow.upstream_rq_pending_overflow") == 2
        assert stat(admin, "cluster.slow.upstream_rq_total") == 1
        assert len(slow.wait(1)) == 1
        time.sleep(0.3)
        assert len(slow.requests) == 1
    finally:
        main.close()
        slow.close()


@BOTH
def test_shadow_that_cannot_take_the_body_is_abandoned(procs, proto):
    main, sink = Recorder(h2=proto.up == "h2"), Sink()
    try:
        listen, admin = start(procs, {"main": [main.port], "sink": [sink.port]},
                              mirror_route(policies="- cluster: sink\n"),
                              listener_extra="per_connection_buffer_limit_bytes: 65536\n",
                              cluster_extra="per_connection_buffer_limit_bytes: 32768\n" + proto.cluster)
        body = b"z" * (8 * 1024 * 1024)
        t0 = time.time()
        st, _, out = request(listen, "POST", "/upload", body=body, timeout=20, proto=proto)
        assert st == 200
        assert time.time() - t0 < 5
        assert len(main.requests) == 1 and len(main.requests[0]["body"]) == len(body)
        assert stat(admin, "cluster.main.retry_or_shadow_abandoned") == 1
        assert stat(admin, "cluster.sink.upstream_rq_tx_reset") == 1
        assert stat(admin, "cluster.sink.upstream_rq_active") == 0
        # memory stayed bounded: the proxy did not hold the 8 MiB for the shadow
        mem = stat(admin, "server.memory_allocated")
        assert mem is None or mem < 64 * 1024 * 1024
    finally:
        main.close()
        sink.close()


@BOTH
def test_client_gone_mid_body_cancels_the_shadow(procs, proto):
    h2 = proto.up == "h2"
    main, shadow = Recorder(h2=h2), Recorder(h2=h2)
    try:
        listen, admin = start(procs, {"main": [main.port], "shadow": [shadow.port]}, mirror_route(),
                              cluster_extra=proto.cluster)
        s = socket.create_connection(("127.0.0.1", listen))
        if proto.down == "h2":
            # an HTTP/2 client cancels the stream and keeps its connection
            import h2.config
            import h2.connection
            import h2.errors
            c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "h"), (":path", "/p"),
                               ("content-length", "100000")])
            c.send_data(1, b"a" * 1000)
            s.sendall(c.data_to_send())
            time.sleep(0.3)
            c.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
            s.sendall(c.data_to_send())
        else:
            s.sendall(b"POST /p HTTP/1.1\r\nhost: h\r\ncontent-length: 100000\r\n\r\n" + b"a" * 1000)
            time.sleep(0.3)
            s.close()
        deadline = time.time() + 3
        while time.time() < deadline and not stat(admin, "cluster.shadow.upstream_rq_tx_reset"):
            time.sleep(0.05)
        assert stat(admin, "cluster.shadow.upstream_rq_tx_reset") == 1
        assert stat(admin, "cluster.shadow.upstream_rq_active") == 0
        assert stat(admin, "cluster.main.upstream_rq_active") == 0
        s.close()
    finally:
        main.close()
        shadow.close()


def test_unknown_shadow_cluster_is_a_config_error(procs, tmp_path):
    listen, admin = free_port(), free_port()
    for routes, vh in ((mirror_route(policies="- cluster: nowhere\n"), ""),
                       ('- match: { prefix: "/" }\n  route: { cluster: main }\n',
                        "request_mirror_policies:\n- cluster: nowhere\n")):
        y = bootstrap_yaml(listen, admin, {"main": [free_port()]}, routes=routes, vhost_extra=vh)
        p = tmp_path / "b.yaml"
        p.write_text(y)
        r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert "unknown shadow cluster 'nowhere'" in r.stdout + r.stderr


def test_mirror_policy_validation(procs, tmp_path):
    listen, admin = free_port(), free_port()
    cases = [("- cluster: main\n  cluster_header: x-c\n",
              "Only one of cluster 'main' or cluster_header 'x-c' in request mirror policy can be specified"),
             ("- runtime_fraction: { default_value: { numerator: 1 } }\n",
              "Exactly one of cluster or cluster_header in request mirror policy need to be specified")]
    for pol, msg in cases:
        y = bootstrap_yaml(listen, admin, {"main": [free_port()]}, routes=mirror_route(policies=pol))
        p = tmp_path / "b.yaml"
        p.write_text(y)
        r = subprocess.run([SHARP, "--mode", "validate", "-c", str(p)], capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        out = r.stdout + r.stderr
        assert msg in out and "request_mirror_policies[0]" in out, out
