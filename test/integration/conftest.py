"""Fixtures for integration tests: the real `sharp` binary, the project's
test upstream and nginx, all on 127.0.0.1 with ports picked per test, every
process bounded in time and stopped by PID at teardown."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import urllib.request

import pytest

BUILD = os.environ.get("SHARP_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SHARP = os.path.join(BUILD, "proxy", "sharp")
# SHARP with the test-only HTTP filters of test/tools/test_filters.c
SHARP_TEST_FILTERS = os.path.join(BUILD, "test", "tools", "sharp-test-filters")
UPSTREAM = os.path.join(BUILD, "test", "upstream", "sharp-test-upstream")
SANITIZED = os.environ.get("SHARP_SANITIZED") == "1"
# Sanitized builds are several times slower: scale loads, not assertions.
SLOW = 3 if SANITIZED else 1


_used_ports = set()


# Under pytest-xdist each worker takes its own residue class of ports, so two
# workers never pick the same one between the check and the bind.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def free_port():
    """A free port below the kernel's ephemeral range, so an outgoing
    connection cannot take it between this check and the bind."""
    import random
    lo, _ = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    for _ in range(1000):
        port = random.randint(10000, max(10001, lo - 1))
        port -= port % _WORKERS - _WORKER
        if port in _used_ports or port < 10000 or port >= lo:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port")


_held = []


def dead_port():
    """A port where nothing listens, and nothing can while the tests run:
    bound without listening (connects are refused) and held open, so
    another process's free_port cannot take it."""
    s = socket.socket()
    s.bind(("127.0.0.1", free_port()))
    _held.append(s)
    return s.getsockname()[1]


def validate_config(text, suffix=".yaml"):
    """`sharp --mode validate` on `text` written to a fresh file named
    c<suffix> (the suffix picks YAML or JSON, as in Envoy); returns the exit
    code and stdout + stderr as text."""
    d = tempfile.mkdtemp(prefix="sharp-validate-")
    path = os.path.join(d, "c" + suffix)
    try:
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True,
                           timeout=20 * SLOW)
        return r.returncode, r.stdout + r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def wait_for(cond, timeout, what):
    """Polls cond() every 20 ms until it returns a true value, which is
    returned; fails naming `what` after `timeout` seconds (scaled for
    sanitized builds)."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Proc:
    """A child process we started; stopped by PID."""

    def __init__(self, args, **kw):
        self.args = args
        self.log = tempfile.NamedTemporaryFile(prefix="sharp-it-", suffix=".log", delete=False)
        self.p = subprocess.Popen(args, stdout=kw.pop("stdout", self.log), stderr=subprocess.STDOUT, **kw)

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Upstream(Proc):
    def __init__(self, name="upstream", extra=()):
        self.port = None
        super().__init__([UPSTREAM, "--address", "127.0.0.1", "--port", "0", "--name", name, "--quiet", *extra],
                         stdout=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening on"), line
        self.port = int(line.strip().rsplit(":", 1)[1])


class PathEchoUpstream:
    """An in-process HTTP/1.1 upstream that answers every request with the
    request target exactly as it arrived on the wire and the headers, as
    JSON ({"path": ..., "headers": [[name, value], ...]}): the test upstream
    only echoes /echo, and path tests need to see arbitrary paths."""

    def __init__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def version_string(self):
                return "upstream-server"

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                if n:
                    self.rfile.read(n)
                # the request line as received: self.path has '//' collapsed
                target = self.requestline.split(" ")[1]
                body = json.dumps({"path": target, "method": self.command,
                                   "headers": [[k, v] for k, v in self.headers.items()]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def path_upstream():
    u = PathEchoUpstream()
    yield u
    u.close()


def raw_request(port, data, timeout=5):
    """Sends raw bytes and reads one response (headers and a
    content-length body) or until the peer closes. Returns (status, headers
    dict with lower-case names, body, closed) where closed tells whether
    the proxy closed the connection after the response."""
    import re
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    closed = False
    try:
        while True:
            c = s.recv(65536)
            if not c:
                closed = True
                break
            out += c
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
        if not closed:
            s.settimeout(0.3)
            try:
                closed = s.recv(1) == b""
            except socket.timeout:
                closed = False
    finally:
        s.close()
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body, closed


def bootstrap_yaml(listen_port, admin_port, clusters, routes=None, hcm_extra="", vhost_extra="",
                   access_log=None, listener_extra="", cluster_extra=""):
    """An Envoy v3 bootstrap: one listener, an HCM with the router, and
    STATIC clusters given as {name: [port, ...]}."""
    if routes is None:
        first = next(iter(clusters))
        routes = f'- match: {{ prefix: "/" }}\n  route: {{ cluster: {first} }}\n'
    al = ""
    if access_log:
        al = textwrap.dedent(f"""\
            access_log:
            - name: envoy.access_loggers.file
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
                path: {access_log}
            """)
    cl = ""
    for name, ports in clusters.items():
        eps = "".join(
            f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}\n"
            for p in ports)
        cl += (f"  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n{textwrap.indent(cluster_extra, '    ')}"
               f"    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n{eps}")
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
static_resources:
  listeners:
  - name: listener_0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen_port} }} }}
{textwrap.indent(listener_extra, '    ')}    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
{textwrap.indent(al, '          ')}{textwrap.indent(hcm_extra, '          ')}          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
{textwrap.indent(vhost_extra, '              ')}              routes:
{textwrap.indent(routes, '              ')}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{cl}"""


def as_aggregate(yaml_text, name):
    """A bootstrap_yaml text whose STATIC cluster `name` becomes the member
    `name`_m of an aggregate cluster (envoy.clusters.aggregate) `name`."""
    old = f"  - name: {name}\n    type: STATIC\n"
    assert old in yaml_text
    agg = (f"  - name: {name}\n    connect_timeout: 1s\n    lb_policy: CLUSTER_PROVIDED\n"
           "    cluster_type:\n      name: envoy.clusters.aggregate\n      typed_config:\n"
           '        "@type": type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig\n'
           f"        clusters: [{name}_m]\n")
    y = yaml_text.replace(old, agg + f"  - name: {name}_m\n    type: STATIC\n")
    return y.replace(f"      cluster_name: {name}\n", f"      cluster_name: {name}_m\n")


class Sharp(Proc):
    def __init__(self, yaml_text, concurrency=2, extra=(), binary=None):
        self.dir = tempfile.mkdtemp(prefix="sharp-it-")
        self.config = os.path.join(self.dir, "bootstrap.yaml")
        with open(self.config, "w") as f:
            f.write(yaml_text)
        super().__init__([binary or SHARP, "-c", self.config, "--concurrency", str(concurrency), "-l", "info",
                          *extra])

    def wait_ready(self, admin_port, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError("sharp exited: " + self.output())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.05)
        raise TimeoutError("sharp not ready: " + self.output())


def admin_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def stat(admin_port, name):
    data = json.loads(admin_get(admin_port, "/stats?format=json"))
    for s in data["stats"]:
        if s.get("name") == name:
            return s["value"]
    return None


def sharp_allocator():
    """The heap allocator of the binary under test (proxy/heap.h): the
    sanitizer's in sanitizer builds, mimalloc when the binary links it,
    else glibc's."""
    if SANITIZED:
        return "sanitizer"
    out = subprocess.run(["ldd", SHARP], capture_output=True, text=True, timeout=10).stdout
    return "mimalloc" if "libmimalloc" in out else "glibc"


ALLOCATOR = sharp_allocator()


def heap_pressure_bytes(admin_port):
    """What the fixed_heap monitor measures (sharp_heap_pressure_bytes):
    Envoy's heap_size - pageheap_unmapped with mimalloc (committed bytes),
    the bytes in use (server.memory_allocated) with glibc and the sanitizer."""
    if ALLOCATOR == "mimalloc":
        m = json.loads(admin_get(admin_port, "/memory"))
        return int(m["heap_size"]) - int(m["pageheap_unmapped"])
    return stat(admin_port, "server.memory_allocated")


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


@pytest.fixture
def procs():
    """Processes a test started. At teardown every SHARP gets SIGTERM and
    must exit 0 (drain) with no sanitizer report in its output."""
    started = []
    yield started
    problems = []
    for p in reversed(started):
        if isinstance(p, Upstream):
            p.stop(signal.SIGKILL)
            continue
        already = p.p.poll() is not None
        rc = p.stop(signal.SIGTERM)
        out = p.output()
        if any(m in out for m in SANITIZER_MARKS):
            problems.append(f"sanitizer report from {p.args[0]}:\n{out[-4000:]}")
        elif not already and rc != 0 and isinstance(p, Sharp):
            problems.append(f"sharp exited {rc} after SIGTERM:\n{out[-2000:]}")
    assert not problems, "\n".join(problems)


@pytest.fixture
def upstream(procs):
    u = Upstream()
    procs.append(u)
    return u


@pytest.fixture
def proxy(procs, upstream):
    """SHARP in front of one test upstream; returns an object with ports."""
    class P:
        pass
    p = P()
    p.listen = free_port()
    p.admin = free_port()
    p.upstream = upstream
    p.access_log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    p.sharp = Sharp(bootstrap_yaml(p.listen, p.admin, {"backend": [upstream.port]}, access_log=p.access_log))
    procs.append(p.sharp)
    p.sharp.wait_ready(p.admin)
    p.url = f"http://127.0.0.1:{p.listen}"
    return p


def run_sharp_config(procs, yaml_text, admin_port, concurrency=2, binary=None):
    s = Sharp(yaml_text, concurrency=concurrency, binary=binary)
    procs.append(s)
    s.wait_ready(admin_port)
    return s


def non_reading_clients(port, n, request=b"GET /bytes/50000000 HTTP/1.1\r\nhost: x\r\n\r\n"):
    """n clients that send `request` (default: a 50 MB response) and never
    read, each with a 16 KiB receive buffer: memory pressure on the proxy,
    its write queues full. The caller closes them."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        s.connect(("127.0.0.1", port))
        s.sendall(request)
        socks.append(s)
    return socks


def file_access_log(fmt):
    """A connection manager access_log (hcm_extra) writing `fmt` (an Envoy
    format string, "\\n"-escaped) to a fresh file; returns (yaml, path)."""
    path = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    y = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
         "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
         f"    path: {path}\n"
         f"    log_format: {{ text_format_source: {{ inline_string: \"{fmt}\" }} }}\n")
    return y, path


def log_lines(path, n):
    """The access log's lines once there are at least n (5 s, scaled)."""
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} access log lines")


# ---- protocol pairs: the data-path suites run over HTTP/1 and HTTP/2 ----

class H2StreamError(ConnectionError):
    """The HTTP/2 stream ended without a complete response: RST_STREAM
    (code), GOAWAY below it, or the connection closed."""

    def __init__(self, what, code=None):
        super().__init__(what)
        self.code = code


def h2_request(port, path="/", method="GET", headers=None, body=None, timeout=10, chunks=None, chunk_delay=0.0):
    """One request on a fresh HTTP/2 connection with prior knowledge
    (python3-h2), honouring flow control both ways. `body` is sent whole;
    `chunks` (a list of bytes) are sent as DATA frames `chunk_delay` seconds
    apart. Returns (status, headers dict with lower-case names, body) as
    the http.client helpers do; raises H2StreamError when the stream is
    reset or the connection ends first."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True,
                                                                           header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        # a Host header is the :authority, as HTTP/2 clients send it
        given = {k.lower(): str(v) for k, v in (headers or {}).items()}
        authority = given.pop("host", f"127.0.0.1:{port}")
        hdrs = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path)]
        hdrs += list(given.items())
        pieces = list(chunks) if chunks is not None else ([body] if body else [])
        conn.send_headers(sid, hdrs, end_stream=not pieces)
        s.sendall(conn.data_to_send())
        status, rh, out, done = None, {}, bytearray(), False
        pending = bytearray(pieces.pop(0)) if pieces else None
        deadline = time.time() + timeout * SLOW

        def push():
            nonlocal pending
            while pending is not None:
                try:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                except (h2.exceptions.StreamClosedError, h2.exceptions.NoSuchStreamError):
                    pending = None  # answered or reset already: the rest is not wanted
                    return
                if room <= 0 and pending:
                    return
                n = min(room, len(pending))
                last = n == len(pending) and not pieces
                conn.send_data(sid, bytes(pending[:n]), end_stream=last)
                del pending[:n]
                if not pending:
                    if not pieces:
                        pending = None
                    elif chunk_delay:
                        s.sendall(conn.data_to_send())
                        time.sleep(chunk_delay)
                        pending = bytearray(pieces.pop(0))
                    else:
                        pending = bytearray(pieces.pop(0))

        while not done:
            push()
            data = conn.data_to_send()
            if data:
                s.sendall(data)
            if time.time() > deadline:
                raise socket.timeout("no complete HTTP/2 response")
            s.settimeout(max(0.05, deadline - time.time()))
            data = s.recv(65536)
            if not data:
                raise H2StreamError("connection closed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    rh = {k: v for k, v in ev.headers}
                    status = int(rh.pop(":status"))
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    out += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise H2StreamError("stream reset", ev.error_code)
                elif isinstance(ev, h2.events.ConnectionTerminated) and ev.last_stream_id < sid:
                    raise H2StreamError("GOAWAY", ev.error_code)
        return status, rh, bytes(out)
    finally:
        s.close()


def h1_request(port, path="/", method="GET", headers=None, body=None, timeout=10, chunks=None, chunk_delay=0.0):
    """The same over HTTP/1.1 with http.client (chunks: chunked encoding)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    try:
        if chunks is None:
            c.request(method, path, body=body, headers=headers or {})
        else:
            c.putrequest(method, path)
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            c.putheader("transfer-encoding", "chunked")
            c.endheaders()
            for piece in chunks:
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                time.sleep(chunk_delay)
            c.send(b"0\r\n\r\n")
        r = c.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        c.close()


class Proto:
    """A protocol pair: `down` is what the client speaks to SHARP, `up` what
    SHARP speaks to the test upstream ("h1" or "h2")."""

    def __init__(self, name, down, up):
        self.name, self.down, self.up = name, down, up

    def __repr__(self):
        return self.name

    def upstream(self, procs, name="upstream", extra=()):
        """A test upstream speaking `up` (--h2 for HTTP/2), in procs."""
        u = Upstream(name=name, extra=(("--h2",) if self.up == "h2" else ()) + tuple(extra))
        procs.append(u)
        return u

    @property
    def cluster(self):
        """cluster_extra that makes SHARP speak `up` to the cluster."""
        return "http2_protocol_options: {}\n" if self.up == "h2" else ""

    def request(self, port, path="/", **kw):
        """(status, headers, body) from SHARP over `down`."""
        return (h2_request if self.down == "h2" else h1_request)(port, path, **kw)

    @property
    def access_log_protocol(self):
        return "HTTP/2" if self.down == "h2" else "HTTP/1.1"


PROTOS = {p.name: p for p in (Proto("h1", "h1", "h1"), Proto("h2-down", "h2", "h1"), Proto("h2-up", "h1", "h2"),
                              Proto("h2-both", "h2", "h2"))}


def protos(*names):
    """@protos("h1", "h2-both"): the test runs once per protocol pair, its
    `proto` argument a Proto."""
    return pytest.mark.parametrize("proto", [PROTOS[n] for n in names], ids=list(names))


def upstream_admin(u, path, timeout=5):
    """GET an admin path of a test upstream in its own protocol (an --h2
    upstream speaks only HTTP/2); returns the body parsed as JSON."""
    req = h2_request if "--h2" in u.args else h1_request
    st, _, body = req(u.port, path, timeout=timeout)
    assert st == 200, (path, st, body)
    return json.loads(body)


class H2Client:
    """A long-lived HTTP/2 client connection (python3-h2, prior knowledge)
    for tests that look at the connection itself: several streams, GOAWAY
    frames (`goaways`: [(last_stream_id, error_code)]), resets, the close.
    Every received DATA frame is acknowledged at once unless `ack` is False."""

    def __init__(self, port, timeout=5, ack=True, rcvbuf=None):
        import h2.config
        import h2.connection
        self.ack = ack  # False: no WINDOW_UPDATE, the peer stalls at its windows
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout * SLOW)
        self.sock.connect(("127.0.0.1", port))
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True,
                                                                                header_encoding="utf-8"))
        # python3-h2 treats any GOAWAY as the end of the connection and then
        # refuses the frames of the streams it did not refuse (RFC 9113
        # 6.8: those go on): keep the connection open on a GOAWAY
        from h2.connection import ConnectionInputs, ConnectionState
        sm = self.conn.state_machine
        sm._transitions = dict(sm._transitions)
        sm._transitions[(ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY)] = (None, ConnectionState.CLIENT_OPEN)
        self.conn.initiate_connection()
        self.streams = {}
        self.goaways = []
        self.eof = False
        self.port = port
        self._flush()

    def _flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send(self, path="/", method="GET", headers=None, body=None, end=True):
        """Opens a stream; ends it after `body` unless `end` is False.
        Returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", f"127.0.0.1:{self.port}"), (":path", path)]
        hdrs += [(k.lower(), str(v)) for k, v in (headers or {}).items()]
        self.streams[sid] = {"status": None, "headers": {}, "body": bytearray(), "ended": False, "reset": None,
                             "trailers": {}}
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self._flush()
        return sid

    def send_data(self, sid, data, end=False):
        self.conn.send_data(sid, data, end_stream=end)
        self._flush()

    def pump(self, timeout=0.1):
        """Reads what arrives within `timeout`; False once the peer closed."""
        import h2.events
        import h2.exceptions
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            events = []
        for ev in events:
            st = self.streams.get(getattr(ev, "stream_id", None))
            if isinstance(ev, h2.events.ResponseReceived) and st is not None:
                st["headers"] = dict(ev.headers)
                st["status"] = int(st["headers"].pop(":status"))
            elif isinstance(ev, h2.events.DataReceived):
                if st is not None:
                    st["body"] += ev.data
                if not self.ack:
                    continue
                try:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
            elif isinstance(ev, h2.events.TrailersReceived) and st is not None:
                st["trailers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded) and st is not None:
                st["ended"] = True
            elif isinstance(ev, h2.events.StreamReset) and st is not None:
                st["reset"] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaways.append((ev.last_stream_id, ev.error_code))
        try:
            self._flush()
        except OSError:
            pass
        return True

    def wait(self, pred, timeout=5):
        """Pumps until pred() holds (True) or the time is up (False)."""
        deadline = time.time() + timeout * SLOW
        while not pred():
            if time.time() > deadline or not self.pump(min(0.1, max(0.01, deadline - time.time()))):
                return pred()
        return True

    def response(self, sid, timeout=5):
        """(status, headers, body) of a stream; H2StreamError when it is
        reset, refused by a GOAWAY or the connection closes first."""
        st = self.streams[sid]
        self.wait(lambda: st["ended"] or st["reset"] is not None or
                  any(last < sid for last, _ in self.goaways), timeout)
        # a complete response may be followed by RST_STREAM NO_ERROR (the
        # server wants no more of the request body: RFC 9113 8.1)
        if st["reset"] is not None and not st["ended"]:
            raise H2StreamError("stream reset", st["reset"])
        if not st["ended"]:
            if any(last < sid for last, _ in self.goaways):
                raise H2StreamError("GOAWAY", self.goaways[-1][1])
            raise H2StreamError("connection closed" if self.eof else "no complete response")
        return st["status"], st["headers"], bytes(st["body"])

    def closed_by_peer(self, timeout):
        """True once the proxy closed the connection within `timeout`."""
        return self.wait(lambda: self.eof, timeout)

    def close(self):
        self.sock.close()


# ---- TLS: a PKI made at test time ----

TLS_HOST = "www.example.com"


def _pki_sh(d, cmd):
    subprocess.run(cmd, shell=True, cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def pki():
    """A CA, a second CA, server certificates (RSA and ECDSA for
    www.example.com, RSA for other.test), a client certificate with a URI
    SAN, one from the other CA and an expired one, made by the openssl CLI
    once per test session. Returns the directory."""
    d = tempfile.mkdtemp(prefix="sharp-tls-it-")
    ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
    for ca, cn in (("ca", "Test CA"), ("ca2", "Other CA")):
        _pki_sh(d, f"openssl req -x509 -newkey rsa:2048 -nodes -keyout {ca}.key -out {ca}.crt -subj '/CN={cn}' "
                   f"-days 30 {ca_ext}")

    def issue(name, ca, kind, subj, ext, days=30):
        alg = ("-algorithm RSA -pkeyopt rsa_keygen_bits:2048" if kind == "rsa"
               else "-algorithm EC -pkeyopt ec_paramgen_curve:P-256")
        _pki_sh(d, f"openssl genpkey {alg} -out {name}.key")
        _pki_sh(d, f"printf '{ext}\\n' > {name}.ext")
        _pki_sh(d, f"openssl req -new -key {name}.key -subj '{subj}' -out {name}.csr")
        _pki_sh(d, f"openssl x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days {days} "
                   f"-sha256 -extfile {name}.ext -out {name}.crt")

    srv = "extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:"
    issue("rsa", "ca", "rsa", "/CN=rsa www", srv + TLS_HOST)
    issue("ecdsa", "ca", "ec", "/CN=ecdsa www", srv + TLS_HOST)
    issue("other", "ca", "rsa", "/CN=other", srv + "other.test")
    cli = "extendedKeyUsage=clientAuth\\nsubjectAltName=URI:spiffe://example/client"
    issue("client", "ca", "ec", "/CN=client/O=Example", cli)
    issue("stranger", "ca2", "ec", "/CN=stranger", cli)
    issue("expired", "ca", "ec", "/CN=expired", cli, days=-1)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start_nginx(procs, tmp_path, server, files=()):
    """Debian's nginx with one worker in tmp_path (logs, temp dirs, html/
    holding `files`: (name, bytes) pairs) serving the given `server { ... }`
    body, whose `listen` uses the port returned (free_port); waits for it."""
    import shutil
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "html").mkdir(exist_ok=True)
    for name, data in files:
        (tmp_path / "html" / name).write_bytes(data)
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the test's files
    temps = "".join(f"    {k}_temp_path {tmp_path}/{d};\n" for k, d in
                    (("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fcgi"), ("uwsgi", "uwsgi"),
                     ("scgi", "scgi")))
    (tmp_path / "nginx.conf").write_text(
        f"{user}\nworker_processes 1;\ndaemon off;\npid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/logs/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n    access_log off;\n{temps}    server {{\n        listen 127.0.0.1:{port}"
        f"{server.replace(chr(10), chr(10) + '        ')}\n    }}\n}}\n")
    procs.append(Proc([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]))
    wait_port(port)
    return port


class RawUpstream:
    """An HTTP/1 upstream on loopback that answers each connection's first
    request as soon as its head (up to the blank line) has arrived, with
    fixed bytes, then reads and drops what follows until the proxy
    closes."""

    def __init__(self, answer, tail=b""):
        self.answer = answer
        self.tail = tail
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        c.settimeout(10)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            c.sendall(self.answer + self.tail)
            while c.recv(65536):
                pass
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()
