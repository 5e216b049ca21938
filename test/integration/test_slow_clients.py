"""Slow and hostile clients through the real binary: request_headers_timeout
against slowloris clients, the connection idle timeout against a client
that sends nothing, and bounded memory for clients that never read their
responses (the downstream write watermark stops reading the upstream)."""
import os
import socket
import time

from conftest import SLOW, bootstrap_yaml, free_port, non_reading_clients, run_sharp_config, stat

from test_connection_lifetime import log_lines, start, wait_stat


def closed_within(s, timeout):
    """Reads until the peer closes; returns (everything read, seconds), or
    (data, None) when it is still open after `timeout`."""
    s.settimeout(0.2)
    t0 = time.time()
    data = b""
    while time.time() - t0 < timeout:
        try:
            c = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, time.time() - t0
        if not c:
            return data, time.time() - t0
        data += c
    return data, None


def test_request_headers_timeout_slowloris(procs, upstream):
    """Headers trickled one byte every 200 ms: each byte is progress for the
    idle timers, but request_headers_timeout counts from the first byte and
    answers 408 (request_header_timeout) and closes."""
    listen, admin, log = start(procs, upstream.port, hcm_extra="request_headers_timeout: 1s\n")
    s = socket.create_connection(("127.0.0.1", listen))
    req = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 200
    t0 = time.time()
    got = b""
    closed = False
    s.settimeout(0.2)
    for b in req:
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        try:
            c = s.recv(65536)
            if not c:
                closed = True
                break
            got += c
        except socket.timeout:
            pass
        if time.time() - t0 > 6 * SLOW:
            break
    if not closed:
        rest, _ = closed_within(s, 3 * SLOW)
        got += rest
    elapsed = time.time() - t0
    s.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b"request header timeout" in got
    assert b"connection: close" in got.lower()
    assert elapsed < 4 * SLOW, elapsed
    assert wait_stat(admin, "http.ingress_http.downstream_rq_header_timeout", 1)
    assert log_lines(log, 1)[0] == "408 - request_header_timeout"


def test_request_headers_timeout_stops_at_headers(procs, upstream):
    """Once the headers are complete the timer stops: a slow request body
    and a slow upstream answer are not cut by it."""
    listen, admin, log = start(procs, upstream.port, hcm_extra="request_headers_timeout: 0.5s\n")
    s = socket.create_connection(("127.0.0.1", listen))
    s.sendall(b"POST /echo?delay_ms=700 HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
    time.sleep(0.7)
    s.sendall(b"cd")
    s.settimeout(5 * SLOW)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 "), data
    # the same connection serves a second request: the timer is per request
    time.sleep(0.8)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = b""
    while data.count(b"HTTP/1.1 200") < 1 or b"hello" not in data:
        data += s.recv(65536)
    s.close()
    assert stat(admin, "http.ingress_http.downstream_rq_header_timeout") in (0, None)


def test_request_headers_timeout_not_started_before_first_byte(procs, upstream):
    """An idle connection is the idle timeout's business: the header timer
    starts with the first byte of a request."""
    listen, admin, _ = start(procs, upstream.port,
                             hcm_extra="request_headers_timeout: 0.3s\n"
                                       "common_http_protocol_options: { idle_timeout: 1.5s }\n")
    s = socket.create_connection(("127.0.0.1", listen))
    time.sleep(0.8)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    s.settimeout(5 * SLOW)
    data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 "), data
    s.close()


def test_silent_connection_closed_by_idle_timeout(procs, upstream):
    """A client that connects and sends nothing is closed by the
    connection idle timeout (common_http_protocol_options.idle_timeout),
    counted in downstream_cx_idle_timeout, with no response."""
    listen, admin, _ = start(procs, upstream.port,
                             hcm_extra="request_headers_timeout: 10s\n"
                                       "common_http_protocol_options: { idle_timeout: 1s }\n")
    s = socket.create_connection(("127.0.0.1", listen))
    data, took = closed_within(s, 5 * SLOW)
    s.close()
    assert took is not None and 0.8 < took < 3 * SLOW, took
    assert data == b""
    assert wait_stat(admin, "http.ingress_http.downstream_cx_idle_timeout", 1)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    raise AssertionError("no VmRSS")


SANITIZED = bool(os.environ.get("SHARP_SANITIZED"))


def test_slow_readers_memory_bounded(procs, upstream):
    """100 clients each pipeline 10 requests for 8 MiB bodies and never
    read: 8 GB of responses. The downstream write watermark
    (per_connection_buffer_limit_bytes) stops reading the upstream, so
    SHARP holds about one buffer limit per connection, not the bodies; once
    the clients go, the heap in use returns to where it was and, with
    shrink_heap saturated, freed pages go back to the system."""
    listen, admin = free_port(), free_port()
    limit = 64 * 1024
    # no route timeout: a response that never completes stays (Envoy's
    # 15 s route timeout would otherwise reset the stuck streams)
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: app, timeout: 0s }\n',
                       listener_extra=f"per_connection_buffer_limit_bytes: {limit}\n",
                       cluster_extra=f"per_connection_buffer_limit_bytes: {limit}\n") + (
        "overload_manager:\n  refresh_interval: 0.1s\n  resource_monitors:\n"
        "  - name: envoy.resource_monitors.fixed_heap\n    typed_config:\n"
        "      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig\n"
        "      max_heap_size_bytes: 1000\n"
        "  actions:\n  - name: envoy.overload_actions.shrink_heap\n"
        "    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.5 } }]\n"
        "    typed_config:\n"
        "      \"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig\n"
        "      timer_interval: 1s\n      max_unfreed_memory_bytes: 0\n")
    sharp = run_sharp_config(procs, y, admin)
    pid = sharp.p.pid
    # warm up: full responses through the workers' pools
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", listen))
        s.sendall(b"GET /bytes/100000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        while s.recv(1 << 20):
            pass
        s.close()
    time.sleep(1.2)
    base_rss = rss_bytes(pid)
    base_heap = stat(admin, "server.memory_allocated")
    body = 8 * 1024 * 1024
    n, per = 100, 10
    req = b"".join(b"GET /bytes/%d?i=%d HTTP/1.1\r\nhost: x\r\n\r\n" % (body, i) for i in range(per))
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        s.connect(("127.0.0.1", listen))
        s.sendall(req)
        socks.append(s)
    # let every connection fill its pipes: kernel buffers, then SHARP's
    deadline = time.time() + 3 * SLOW
    peak = 0
    while time.time() < deadline:
        peak = max(peak, rss_bytes(pid) - base_rss)
        time.sleep(0.2)
    active = stat(admin, "http.ingress_http.downstream_rq_active")
    # each connection is stuck in its first response
    assert active == n, active
    sent = stat(admin, "http.ingress_http.downstream_cx_tx_bytes_total")
    # per connection: the write queue up to the limit, one read of the
    # upstream and the held request pipeline, plus allocator slack; the
    # 8 GB of bodies must not show
    bound = n * (4 * limit + 128 * 1024) * (3 if SANITIZED else 1) + 64 * 1024 * 1024
    assert peak < bound, (peak, bound)
    assert sent < n * per * body / 10, sent
    for s in socks:
        s.close()
    # everything is released: heap in use back near the baseline
    deadline = time.time() + 10 * SLOW
    heap = None
    while time.time() < deadline:
        heap = stat(admin, "server.memory_allocated")
        if stat(admin, "http.ingress_http.downstream_cx_active") == 0 and heap < base_heap + 2 * 1024 * 1024:
            break
        time.sleep(0.2)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 0
    assert heap < base_heap + 2 * 1024 * 1024, (heap, base_heap)
    if not SANITIZED:
        # shrink_heap gave the freed pages back
        time.sleep(1.5)
        assert stat(admin, "overload.envoy.overload_actions.shrink_heap.shrink_count") >= 1
        rss = rss_bytes(pid)
        assert rss - base_rss < max(peak // 2, 16 * 1024 * 1024), (rss, base_rss, peak)
    print(f"peak RSS growth {peak >> 20} MiB for {n * per * body >> 20} MiB of responses; "
          f"heap {base_heap >> 10} KiB before, {heap >> 10} KiB after")


def test_memory_returns_after_burst_without_overload_manager(procs, upstream):
    """No overload manager: after a burst of 150 clients that never read
    (each holding its 1 MiB write queue), the freed heap goes back to the
    system by itself (SHARP's background release, as tcmalloc's for Envoy):
    the resident size returns near its baseline."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]},
                       routes='- match: { prefix: "/" }\n  route: { cluster: app, timeout: 0s }\n')
    sharp = run_sharp_config(procs, y, admin)
    pid = sharp.p.pid
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", listen))
        s.sendall(b"GET /bytes/100000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        while s.recv(1 << 20):
            pass
        s.close()
    time.sleep(1.5)
    base_rss = rss_bytes(pid)
    socks = non_reading_clients(listen, 150)
    try:
        # the burst's queues fill as fast as the machine lets the upstream
        # send: the peak is awaited (on a loaded machine it takes longer)
        # and sampled a little past it
        deadline = time.time() + 10 * SLOW
        peak = 0
        while time.time() < deadline:
            peak = max(peak, rss_bytes(pid) - base_rss)
            if peak > 64 * 1024 * 1024:
                break
            time.sleep(0.2)
        assert peak > 64 * 1024 * 1024, peak  # the burst did cost memory
        for _ in range(5):
            time.sleep(0.2)
            peak = max(peak, rss_bytes(pid) - base_rss)
    finally:
        for s in socks:
            s.close()
    deadline = time.time() + 10 * SLOW
    rss = None
    while time.time() < deadline:
        rss = rss_bytes(pid) - base_rss
        if stat(admin, "http.ingress_http.downstream_cx_active") == 0 and rss < peak // 5:
            break
        time.sleep(0.2)
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 0
    if not SANITIZED:
        assert rss < peak // 5, (rss >> 20, peak >> 20)
    print(f"RSS: +{peak >> 20} MiB at the peak, +{rss >> 20} MiB after")
