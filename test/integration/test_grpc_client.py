"""SHARP's own gRPC client (proxy/grpc/client.c), driven by
test/tools/grpc_client_tool against a python3-grpcio server: unary calls
with metadata both ways and percent-encoded grpc-message, deadlines, bidi
streams with flow control past the 64 KiB windows, a server that is down,
the maximum receive size, the retrying stream's back-off across a server
restart, GOAWAY, and freeing everything with calls in flight."""
import concurrent.futures
import json
import os
import queue
import subprocess
import threading
import time

import grpc
import pytest

from conftest import BUILD, SANITIZER_MARKS, SLOW, Upstream, free_port

TOOL = os.path.join(BUILD, "test", "tools", "grpc_client_tool")
IDENT = lambda b: b  # noqa: E731
FAIL_MESSAGE = "denied: 100% sure\tn\u00e9e\n"


def bytes_value(n):
    """google.protobuf.BytesValue {value: n bytes} encoded by hand."""
    v, varint = n, b""
    while True:
        b = v & 0x7F
        v >>= 7
        varint += bytes([b | (0x80 if v else 0)])
        if not v:
            break
    return b"\x0a" + varint + b"x" * n


class Server:
    """grpc.health.v1.Health/Check (service "fail": PERMISSION_DENIED with
    FAIL_MESSAGE; "sleep": waits for the client to go away), test.Echo/Echo
    (bidi echo) and test.Echo/Big (a 5000-byte BytesValue)."""

    def __init__(self, port=0):
        self.md = []
        self.remaining = []
        self.cancelled = threading.Event()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(self._check, IDENT, IDENT)}),
            grpc.method_handlers_generic_handler("test.Echo", {
                "Echo": grpc.stream_stream_rpc_method_handler(self._echo, IDENT, IDENT),
                "Big": grpc.unary_unary_rpc_method_handler(lambda req, ctx: bytes_value(5000), IDENT, IDENT),
            }),
        ))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port
        self.server.start()

    def _check(self, req, ctx):
        self.md.append(dict(ctx.invocation_metadata()))
        self.remaining.append(ctx.time_remaining())
        service = req[2:].decode()
        if service == "fail":
            ctx.abort(grpc.StatusCode.PERMISSION_DENIED, FAIL_MESSAGE)
        if service == "sleep":
            deadline = time.time() + 10
            while time.time() < deadline:
                if not ctx.is_active():
                    self.cancelled.set()
                    break
                time.sleep(0.02)
        ctx.set_trailing_metadata((("x-trailer", "t1"),))
        return b"\x08\x01"  # SERVING

    @staticmethod
    def _echo(requests, ctx):
        for m in requests:
            yield m

    def stop(self, grace=None):
        return self.server.stop(grace)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop(None).wait(5)


DOWNSTREAM_PROTOCOL = (
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        use_downstream_protocol_config: { http2_protocol_options: {} }\n")


def bootstrap(tmp_path, port, http2=True, h2=None):
    if h2 is None:
        h2 = "    http2_protocol_options: {}\n" if http2 else ""
    text = ("static_resources:\n"
            "  clusters:\n"
            "  - name: control_plane\n"
            "    type: STATIC\n"
            "    connect_timeout: 1s\n"
            f"{h2}"
            "    load_assignment:\n"
            "      cluster_name: control_plane\n"
            "      endpoints:\n"
            "      - lb_endpoints:\n"
            "        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: %d } } }\n" % port)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(text)
    return str(path)


def check_clean(stderr, rc):
    assert not any(m in stderr for m in SANITIZER_MARKS), stderr[-4000:]
    assert rc == 0, stderr[-2000:]


def run_tool(cfg, actions, extra=(), timeout=30, expect_rc=0):
    p = subprocess.run([TOOL, "-c", cfg, "--cluster", "control_plane", *extra, *actions],
                       capture_output=True, text=True, timeout=timeout * SLOW, stdin=subprocess.DEVNULL)
    if expect_rc == 0:
        check_clean(p.stderr, p.returncode)
    else:
        assert p.returncode == expect_rc, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


class Interactive:
    """The tool with its stdout read line by line (events) and its stdin
    open for the `wait` action."""

    def __init__(self, cfg, actions):
        self.p = subprocess.Popen([TOOL, "-c", cfg, "--cluster", "control_plane", *actions], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.q = queue.Queue()
        self.events = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def next_event(self, want, timeout):
        """The next event for which want(ev) holds (earlier ones are kept)."""
        deadline = time.time() + timeout * SLOW
        while True:
            ev = self.q.get(timeout=max(0.01, deadline - time.time()))
            assert ev is not None, "the tool ended early: " + self.p.stderr.read()[-3000:]
            self.events.append(ev)
            if want(ev):
                return ev

    def send_line(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def finish(self, timeout=20):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.p.wait(timeout * SLOW)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        while True:
            ev = self.q.get(timeout=5)
            if ev is None:
                break
            self.events.append(ev)
        check_clean(self.p.stderr.read(), self.p.returncode)
        return self.events


def test_unary_ok_with_metadata_both_ways(tmp_path, server):
    """The response decodes; initial metadata from the client's config and
    the call's own reach the server; trailing metadata reaches the client."""
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, ["md:x-call=two", "health:svc"], extra=["--md", "x-init=one"])
    assert ev[0]["event"] == "unary" and ev[0]["status"] == 0, ev
    assert ev[0]["response"] == {"status": 1}
    assert ["x-trailer", "t1"] in ev[0]["trailers"]
    assert server.md[0]["x-init"] == "one" and server.md[0]["x-call"] == "two"
    assert ev[-1]["event"] == "done"


def test_downstream_protocol_cluster_is_called_over_http2(tmp_path, server):
    """A use_downstream_protocol_config cluster has HTTP/1.1 pools for
    HTTP/1 requests; the gRPC client always takes its HTTP/2 options."""
    cfg = bootstrap(tmp_path, server.port, h2=DOWNSTREAM_PROTOCOL)
    ev = run_tool(cfg, ["health:svc"])
    assert ev[0]["event"] == "unary" and ev[0]["status"] == 0, ev
    assert ev[0]["response"] == {"status": 1}


def test_non_ok_status_with_percent_encoded_message(tmp_path, server):
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, ["health:fail"])
    assert ev[0]["status"] == 7 and ev[0]["status_name"] == "PERMISSION_DENIED"
    assert ev[0]["message"] == FAIL_MESSAGE
    assert "response" not in ev[0]


def test_deadline_exceeded_and_server_sees_cancellation(tmp_path, server):
    """grpc-timeout goes to the server; the local timer ends the call with
    DEADLINE_EXCEEDED and resets the stream, which the server notices."""
    cfg = bootstrap(tmp_path, server.port)
    start = time.time()
    ev = run_tool(cfg, ["timeout:300", "health:sleep"])
    assert ev[0]["status"] == 4 and ev[0]["status_name"] == "DEADLINE_EXCEEDED"
    # libuv's timers run on the loop's cached clock, which can lag the
    # tool's own by a few milliseconds: never much before the deadline
    assert ev[0]["t_ms"] >= 290
    assert server.cancelled.wait(5 * SLOW)
    assert time.time() - start < 9  # the server would have slept 10 s
    assert 0 < server.remaining[0] <= 0.3


def test_client_default_timeout(tmp_path, server):
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, ["health:sleep"], extra=["--timeout-ms", "200"])
    assert ev[0]["status"] == 4 and ev[0]["t_ms"] >= 200
    assert 0 < server.remaining[0] <= 0.2


@pytest.mark.parametrize("n,size", [(2000, 10), (30, 150000)])
def test_bidi_echo_flow_control(tmp_path, server, n, size):
    """Many small messages, and messages larger than the 64 KiB windows:
    4.5 MB in flight goes past the client's 1 MiB send queue, so sending
    waits for on_writable, and the replies come back whole and in order."""
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, [f"echo:/test.Echo/Echo:{n}:{size}"], timeout=60)
    close = [e for e in ev if e["event"] == "close"][0]
    assert close["status"] == 0, close
    assert close["sent"] == n and close["received"] == n and close["mismatches"] == 0
    if n * size > 1024 * 1024:
        assert close["full_events"] >= 1
    assert ev[0]["event"] == "initial_metadata"


def test_server_down_is_unavailable(tmp_path):
    cfg = bootstrap(tmp_path, free_port())
    ev = run_tool(cfg, ["health:x", "echo:/test.Echo/Echo:3:10"])
    assert [e["status_name"] for e in ev if e["event"] in ("unary", "close")] == ["UNAVAILABLE"] * 2


def test_response_above_max_receive_size(tmp_path, server):
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, ["unary:/test.Echo/Big:1", "unary:/test.Echo/Echo:10"], extra=["--max-recv", "1000"])
    assert ev[0]["status_name"] == "RESOURCE_EXHAUSTED" and "larger than max" in ev[0]["message"]
    # the connection is still good for the next call (bidi echo of one message as unary)
    assert ev[1]["status"] == 0 and ev[1]["response"] == {"len": 10}


def test_unknown_and_non_http2_clusters_are_refused(tmp_path):
    cfg = bootstrap(tmp_path, free_port())
    p = subprocess.run([TOOL, "-c", cfg, "--cluster", "nope", "health:x"], capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert p.returncode == 1
    assert json.loads(p.stdout)["message"] == "Unknown gRPC client cluster 'nope'"
    cfg = bootstrap(tmp_path, free_port(), http2=False)
    p = subprocess.run([TOOL, "-c", cfg, "--cluster", "control_plane", "health:x"], capture_output=True, text=True,
                       timeout=20 * SLOW)
    assert p.returncode == 1 and "HTTP/2" in json.loads(p.stdout)["message"]


def backoff_bounds(events, base, maxi):
    """Envoy's intervals: base, doubled while below max / 2, then max;
    reset by a message. Each retry_in_ms is below its interval, and the
    next open comes no earlier than the back-off (a timer never fires
    early; 2 ms for clock granularity)."""
    interval = base
    last_close = None
    for e in events:
        if e["event"] == "message":
            interval = base
        elif e["event"] == "close":
            assert 0 <= e["retry_in_ms"] < interval, (e, interval)
            interval = interval * 2 if interval < maxi // 2 else maxi
            last_close = e
        elif e["event"] == "open" and last_close is not None:
            assert e["t_ms"] >= last_close["t_ms"] + last_close["retry_in_ms"] - 2, (last_close, e)
            last_close = None


def test_retrying_stream_reconnects_after_restart(tmp_path):
    port = free_port()
    s = Server(port)
    cfg = bootstrap(tmp_path, port)
    t = Interactive(cfg, ["retry:/test.Echo/Echo:100:800:0"])
    try:
        t.next_event(lambda e: e["event"] == "message", 10)
        s.stop(None).wait(5)
        close = t.next_event(lambda e: e["event"] == "close", 10)
        assert close["status_name"] == "UNAVAILABLE", close
        # a few failed attempts while the server is down
        for _ in range(3):
            c = t.next_event(lambda e: e["event"] == "close", 10)
            assert c["status_name"] == "UNAVAILABLE"
        s = Server(port)
        t.next_event(lambda e: e["event"] == "message", 15)
        t.send_line()
        events = t.finish()
    finally:
        s.stop(None).wait(5)
        if t.p.poll() is None:
            t.p.kill()
    assert events[-2]["event"] == "stopped" and events[-1]["event"] == "done"
    opens = [e for e in events if e["event"] == "open"]
    assert len(opens) >= 5 and all(e["send"] == 0 for e in opens)
    backoff_bounds(events, 100, 800)


def test_goaway_ends_stream_and_next_call_uses_new_connection(tmp_path):
    """grpc's stop(grace) sends GOAWAY and, after the grace, ends the calls
    still running: the stream ends UNAVAILABLE; a call made once a new
    server listens gets a new connection."""
    port = free_port()
    s = Server(port)
    cfg = bootstrap(tmp_path, port)
    t = Interactive(cfg, ["hold:/test.Echo/Echo:20000", "wait", "health:after"])
    try:
        t.next_event(lambda e: e["event"] == "message", 10)
        done = s.stop(0.5)
        close = t.next_event(lambda e: e["event"] in ("close", "cancelled"), 10)
        assert close["event"] == "close" and close["status_name"] == "UNAVAILABLE", close
        done.wait(5)
        s = Server(port)
        t.send_line()
        ev = t.next_event(lambda e: e["event"] == "unary", 10)
        assert ev["status"] == 0 and ev["response"] == {"status": 1}
        t.finish()
    finally:
        s.stop(None).wait(5)
        if t.p.poll() is None:
            t.p.kill()


@pytest.mark.parametrize("delay,action", [(300, "hold:/test.Echo/Echo:20000"),
                                          (300, "retry:/test.Echo/Echo:100:800:20000"),
                                          (20, "echo:/test.Echo/Echo:3000:150000")])
def test_destroy_with_calls_in_flight(tmp_path, server, delay, action):
    """The client goes with a stream, a retrying stream or a large transfer
    in flight; everything is freed (LSan in the sanitized build) and no
    callback comes after."""
    cfg = bootstrap(tmp_path, server.port)
    ev = run_tool(cfg, [f"destroy-in:{delay}", action], timeout=30)
    assert ev[-1]["event"] == "destroyed", ev
    assert not [e for e in ev if e["event"] in ("close", "unary")]


@pytest.mark.parametrize("code,name", [(503, "UNAVAILABLE"), (404, "UNIMPLEMENTED"), (429, "UNAVAILABLE"),
                                       (401, "UNAUTHENTICATED")])
def test_non_200_status_is_mapped(tmp_path, procs, code, name):
    """A peer that answers plain HTTP (the test upstream over h2c): Envoy's
    HTTP-to-gRPC status mapping."""
    up = Upstream(extra=["--h2"])
    procs.append(up)
    cfg = bootstrap(tmp_path, up.port)
    ev = run_tool(cfg, [f"unary:/status/{code}:1"])
    assert ev[0]["status_name"] == name and str(code) in ev[0]["message"], ev[0]
