"""StatsdSink.tcp_cluster_name: Envoy's TCP statsd sink. Every stats flush
writes its lines, each ended by '\\n', on one connection to a host of a
bootstrap cluster; a Python TCP collector reads them. A dead collector
(nothing listening) costs failed connects and dropped flushes, never the
proxy; a collector that comes back is reconnected to by the next flush."""
import socket
import threading
import urllib.request

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat, validate_config, wait_for

NODE = "node: { id: n1, cluster: c1 }\n"


class Collector:
    """Accepts connections and splits what they send into lines."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lines, self.conns, self.raw = [], 0, b""
        self.lock = threading.Lock()
        self.open = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                self.open.append(c)
            threading.Thread(target=self.read, args=(c,), daemon=True).start()

    def read(self, c):
        buf = b""
        while True:
            try:
                d = c.recv(65536)
            except OSError:
                return
            if not d:
                return
            buf += d
            with self.lock:
                self.raw += d
            while b"\n" in buf:
                ln, _, buf = buf.partition(b"\n")
                with self.lock:
                    self.lines.append(ln.decode())

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.open:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.t.join(5 * SLOW)


def config(listen, admin, up_port, statsd_port, prefix=""):
    p = f"\n    prefix: {prefix}" if prefix else ""
    return NODE + bootstrap_yaml(listen, admin, {"backend": [up_port], "statsd": [statsd_port]}) + f"""\
stats_flush_interval: 0.1s
stats_sinks:
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    tcp_cluster_name: statsd{p}
"""


def get(port, n):
    for _ in range(n):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5 * SLOW) as r:
            assert r.status == 200
            r.read()


def total(lines, name):
    return sum(int(ln.split(":", 1)[1].split("|")[0]) for ln in lines
               if ln.startswith(name + ":") and ln.endswith("|c"))


def test_lines_on_one_connection(procs, upstream):
    col = Collector()
    try:
        listen, admin = free_port(), free_port()
        run_sharp_config(procs, config(listen, admin, upstream.port, col.port, prefix="edge"), admin)
        get(listen, 3)
        wait_for(lambda: total(col.lines, "edge.cluster.backend.upstream_rq_total") == 3, 10,
                 "the three requests counted by the collector")
        with col.lock:
            lines, raw = list(col.lines), col.raw
        assert raw.endswith(b"\n")
        # counters as deltas, gauges; every line "<prefix>.<name>:<value>|<type>..."
        assert any(ln.startswith("edge.cluster.backend.upstream_rq_total:") for ln in lines)
        assert any(ln.endswith("|g") for ln in lines)
        assert all(ln.startswith("edge.") and ":" in ln and "|" in ln for ln in lines), lines[:5]
        def flushes():
            with col.lock:
                return sum(ln.startswith("edge.cluster.backend.upstream_rq_total:") for ln in col.lines)
        seen = flushes()
        wait_for(lambda: flushes() >= seen + 3, 10, "three more flushes")
        assert col.conns == 1  # one connection, kept from flush to flush
        assert stat(admin, "cluster.statsd.upstream_cx_total") == 1
        assert stat(admin, "statsd.cx_overflow") == 0
    finally:
        col.close()


def test_dead_collector_then_back(procs, upstream):
    """Nothing listens: the flushes' connects fail (the cluster counts them)
    and their lines are dropped; the proxy serves on. Once a collector
    listens there, a later flush connects and its lines arrive."""
    port = free_port()
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, config(listen, admin, upstream.port, port), admin)
    wait_for(lambda: stat(admin, "cluster.statsd.upstream_cx_connect_fail") >= 3, 10, "failed connects")
    get(listen, 2)
    col = Collector(port)
    try:
        wait_for(lambda: any(ln.startswith("envoy.cluster.backend.upstream_rq_") for ln in col.lines), 10,
                 "lines after the collector came back")
        get(listen, 1)
        assert stat(admin, "statsd.cx_overflow") == 0
    finally:
        col.close()


def test_collector_closes_then_reconnect(procs, upstream):
    """The collector closes its connection: the next flush makes another."""
    col = Collector()
    try:
        listen, admin = free_port(), free_port()
        run_sharp_config(procs, config(listen, admin, upstream.port, col.port), admin)
        wait_for(lambda: col.conns == 1 and col.lines, 10, "the first connection's lines")
        with col.lock:
            first = col.open[0]
        first.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: col.conns >= 2, 10, "a second connection")
        n = len(col.lines)
        wait_for(lambda: len(col.lines) > n, 10, "lines on the second connection")
    finally:
        col.close()


def test_refused_configs():
    base = bootstrap_yaml(10000, 10001, {"backend": [10002]}) + """\
stats_sinks:
- name: envoy.stat_sinks.statsd
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.StatsdSink
    tcp_cluster_name: nope
"""
    rc, out = validate_config(NODE + base)
    assert rc != 0 and "tcp statsd: unknown cluster 'nope'" in out, out
    rc, out = validate_config(base.replace("tcp_cluster_name: nope", "tcp_cluster_name: backend"))
    assert rc != 0 and "tcp statsd: node 'id' and 'cluster' are required" in out, out
    rc, out = validate_config(NODE + base.replace("tcp_cluster_name: nope", "tcp_cluster_name: backend"))
    assert rc == 0, out


def test_collector_that_never_reads(procs, upstream):
    """A collector that accepts and never reads: the flushes queue on the
    one connection (dropped past 16 MiB, statsd.cx_overflow), the main
    thread never blocks, and requests are served as usual."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    held = []
    t = threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        listen, admin = free_port(), free_port()
        run_sharp_config(procs, config(listen, admin, upstream.port, srv.getsockname()[1]), admin)
        wait_for(lambda: stat(admin, "cluster.statsd.upstream_cx_tx_bytes_total") > 20000, 20,
                 "flushes written to the connection")
        get(listen, 5)
        assert stat(admin, "cluster.statsd.upstream_cx_total") == 1
        assert stat(admin, "statsd.cx_overflow") == 0
    finally:
        for c in held:
            c.close()
        srv.close()
