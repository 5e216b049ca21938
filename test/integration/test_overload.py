"""The overload manager (Bootstrap.overload_manager) through the real
binary: the fixed_heap monitor with threshold and scaled triggers driving
stop_accepting_requests, disable_http_keepalive, reject_incoming_connections
and shrink_heap; the global downstream connection limit; Envoy's overload.*
and listener stats; listener ignore_global_conn_limit and
bypass_overload_manager; HCM append_local_overload; and the refusals."""
import os
import selectors
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (H2Client, file_access_log, log_lines, SHARP, SLOW, bootstrap_yaml, free_port,
                      heap_pressure_bytes, non_reading_clients, run_sharp_config, stat)

from test_connection_lifetime import LOG_FORMAT, SHUTDOWN_NOTICE, read_response, wait_stat

HEAP = "envoy.resource_monitors.fixed_heap"
GLOBAL_CX = "envoy.resource_monitors.global_downstream_max_connections"
A = "envoy.overload_actions."


def heap_monitor(max_bytes, name=HEAP):
    return (f"  - name: {name}\n    typed_config:\n"
            "      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig\n"
            f"      max_heap_size_bytes: {max_bytes}\n")


def cx_monitor(n, name=GLOBAL_CX):
    return (f"  - name: {name}\n    typed_config:\n"
            "      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
            "DownstreamConnectionsConfig\n"
            f"      max_active_downstream_connections: {n}\n")


def action(name, trigger, extra=""):
    return f"  - name: {A}{name}\n    triggers:\n    - name: {HEAP}\n      {trigger}\n{extra}"


def overload_yaml(monitors, actions, refresh="0.05s"):
    out = f"overload_manager:\n  refresh_interval: {refresh}\n  resource_monitors:\n{monitors}"
    if actions:
        out += f"  actions:\n{actions}"
    return out


SATURATED = "threshold: { value: 0.5 }"      # with a tiny heap limit
TINY, HUGE = 1000, 1 << 50
# ShrinkHeapConfig: trim every second whatever is free
SHRINK_EVERY_SECOND = ("    typed_config:\n"
                       "      \"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig\n"
                       "      timer_interval: 1s\n"
                       "      max_unfreed_memory_bytes: 0\n")


def start(procs, upstream, overload, hcm_extra="", listener_extra=""):
    listen, admin = free_port(), free_port()
    al, log = file_access_log(LOG_FORMAT)
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]}, hcm_extra=al + hcm_extra,
                       listener_extra=listener_extra) + overload
    run_sharp_config(procs, y, admin)
    return listen, admin, log


def get(port, path="/", extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n")
    head, body = read_response(s)
    return s, head, body


def peer_closed(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def test_stop_accepting_requests_saturated(procs, upstream):
    """Heap in use over a 1000-byte limit: pressure far above the threshold,
    every request is refused with Envoy's 503 before any filter runs."""
    listen, admin, log = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("stop_accepting_requests", SATURATED)),
        hcm_extra="append_local_overload: true\n")
    s, head, body = get(listen)
    s.close()
    assert head.startswith("HTTP/1.1 503 "), head
    assert body == b"envoy overloaded"
    assert "x-envoy-local-overloaded: true" in head.lower()
    assert log_lines(log, 1)[0] == "503 OM overload"
    assert stat(admin, "http.ingress_http.downstream_rq_overload_close") == 1
    assert stat(admin, f"overload.{A}stop_accepting_requests.active") == 1
    assert stat(admin, f"overload.{A}stop_accepting_requests.scale_percent") == 100
    assert stat(admin, f"overload.{HEAP}.pressure") > 100
    assert stat(admin, f"overload.{HEAP}.failed_updates") == 0
    # the upstream never saw a request
    assert stat(admin, "cluster.app.upstream_rq_total") in (0, None)


def test_stop_accepting_requests_over_http2(procs, upstream):
    """Per stream over HTTP/2: each stream of a connection gets the 503."""
    listen, admin, log = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("stop_accepting_requests", SATURATED)),
        hcm_extra="append_local_overload: true\n")
    c = H2Client(listen)
    for sid in (c.send("/a"), c.send("/b", method="POST", body=b"x" * 1000)):
        st, h, body = c.response(sid)
        assert st == 503 and body == b"envoy overloaded"
        assert h.get("x-envoy-local-overloaded") == "true"
    c.close()
    assert log_lines(log, 2) == ["503 OM overload"] * 2
    assert stat(admin, "http.ingress_http.downstream_rq_overload_close") == 2
    assert stat(admin, "cluster.app.upstream_rq_total") in (0, None)


def test_stop_accepting_requests_inactive_below_threshold(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(HUGE), action("stop_accepting_requests", SATURATED)))
    s, head, body = get(listen)
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head
    assert "x-envoy-local-overloaded" not in head.lower()
    assert stat(admin, f"overload.{A}stop_accepting_requests.active") == 0
    assert stat(admin, f"overload.{A}stop_accepting_requests.scale_percent") == 0
    assert stat(admin, f"overload.{HEAP}.pressure") == 0
    assert stat(admin, "http.ingress_http.downstream_rq_overload_close") == 0


def test_bypass_overload_manager_listener(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("stop_accepting_requests", SATURATED)),
        listener_extra="bypass_overload_manager: true\n")
    s, head, _ = get(listen)
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head
    assert stat(admin, f"overload.{A}stop_accepting_requests.active") == 1


def test_scaled_trigger_scale_percent(procs, upstream):
    """A scaled trigger between 0 and 1 of a limit above the heap in use
    puts the action in the scaling state: scale_percent strictly between 0
    and 100, following pressure / limit, active 0; a scaled trigger below
    the pressure saturates. (The limit from the heap of the same bootstrap
    without the monitor, the check against the pressure read next to the
    percentage: the heap measure differs by allocator, committed bytes with
    mimalloc, which grow by whole segments.)"""
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}), admin)
    time.sleep(1.5)  # the heap once the first housekeeping (stats, kernel signals) has run
    limit = max(32 << 20, 4 * heap_pressure_bytes(admin))
    procs[-1].stop()
    procs.pop()
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(limit),
        action("stop_accepting_requests", "scaled: { scaling_threshold: 0.0, saturation_threshold: 1.0 }") +
        action("disable_http_keepalive", "scaled: { scaling_threshold: 0.0, saturation_threshold: 0.01 }")))
    pct = stat(admin, f"overload.{A}stop_accepting_requests.scale_percent")
    pressure = 100.0 * heap_pressure_bytes(admin) / limit
    assert 0 < pct < 100, (pct, pressure)
    assert abs(pct - pressure) <= 5, (pct, pressure)
    assert stat(admin, f"overload.{A}stop_accepting_requests.active") == 0
    assert stat(admin, f"overload.{A}disable_http_keepalive.scale_percent") == 100
    assert stat(admin, f"overload.{A}disable_http_keepalive.active") == 1


def test_scaled_trigger_saturated_refuses_every_request(procs, upstream):
    """A scaled trigger whose pressure is past saturation_threshold is
    saturated: every request is refused (the draw on a scaling state is
    covered by the unit test's bernoulli_draws)."""
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY),
        action("stop_accepting_requests", "scaled: { scaling_threshold: 0.0, saturation_threshold: 1.0 }")))
    # pressure is far above 1: saturated, every request refused
    codes = []
    for _ in range(5):
        s, head, _ = get(listen)
        s.close()
        codes.append(head.split()[1])
    assert codes == ["503"] * 5


def test_disable_http_keepalive(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("disable_http_keepalive", SATURATED)))
    s, head, body = get(listen)
    assert head.startswith("HTTP/1.1 200 "), head
    assert "connection: close" in head.lower()
    assert peer_closed(s, 3 * SLOW)
    s.close()
    assert wait_stat(admin, "http.ingress_http.downstream_cx_overload_disable_keepalive", 1)


def test_disable_http_keepalive_over_http2(procs, upstream):
    """Envoy over HTTP/2: the response starts the drain (a GOAWAY shutdown
    notice, no connection header), drain_timeout later the final GOAWAY and
    the close."""
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("disable_http_keepalive", SATURATED)), hcm_extra="drain_timeout: 0.3s\n")
    c = H2Client(listen)
    sid = c.send("/")
    st, h, _ = c.response(sid)
    assert st == 200 and "connection" not in h
    closed = c.closed_by_peer(3)
    assert (closed, c.goaways) == (True, [SHUTDOWN_NOTICE, (sid, 0)])
    c.close()
    assert stat(admin, "http.ingress_http.downstream_cx_overload_disable_keepalive") == 1
    assert stat(admin, "http.ingress_http.downstream_cx_drain_close") == 1


def test_keepalive_kept_when_inactive(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(HUGE), action("disable_http_keepalive", SATURATED)))
    s, head, _ = get(listen)
    assert "connection: close" not in head.lower()
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head2, _ = read_response(s)
    s.close()
    assert head2.startswith("HTTP/1.1 200 ")
    assert stat(admin, "http.ingress_http.downstream_cx_overload_disable_keepalive") == 0


def test_reject_incoming_connections(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("reject_incoming_connections", SATURATED)))
    s = socket.create_connection(("127.0.0.1", listen))
    try:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert peer_closed(s, 3 * SLOW)
    s.close()
    lst = f"listener.127.0.0.1_{listen}"
    assert wait_stat(admin, f"{lst}.downstream_cx_overload_reject", 1)
    assert stat(admin, f"{lst}.downstream_cx_total") == 0
    assert stat(admin, "http.ingress_http.downstream_rq_total") == 0


def test_global_downstream_max_connections(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(cx_monitor(2), ""))
    a = socket.create_connection(("127.0.0.1", listen))
    b = socket.create_connection(("127.0.0.1", listen))
    for s in (a, b):
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 200 ")
    c = socket.create_connection(("127.0.0.1", listen))
    assert peer_closed(c, 3 * SLOW)
    c.close()
    lst = f"listener.127.0.0.1_{listen}"
    assert wait_stat(admin, f"{lst}.downstream_global_cx_overflow", 1)
    a.close()
    # the slot comes back once the closed connection is released
    deadline = time.time() + 5 * SLOW
    ok = False
    while time.time() < deadline and not ok:
        d = socket.create_connection(("127.0.0.1", listen))
        d.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        d.settimeout(2 * SLOW)
        try:
            ok = d.recv(65536).startswith(b"HTTP/1.1 200 ")
        except (socket.timeout, ConnectionResetError):
            ok = False
        d.close()
        time.sleep(0.05)
    b.close()
    assert ok


def test_ignore_global_conn_limit(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(cx_monitor(1), ""),
                             listener_extra="ignore_global_conn_limit: true\n")
    socks = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", listen))
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head, _ = read_response(s)
        assert head.startswith("HTTP/1.1 200 ")
        socks.append(s)
    for s in socks:
        s.close()
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_global_cx_overflow") == 0


def test_shrink_heap(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("shrink_heap", SATURATED,
                                   SHRINK_EVERY_SECOND)))
    assert stat(admin, f"overload.{A}shrink_heap.active") == 1
    assert wait_stat(admin, f"overload.{A}shrink_heap.shrink_count", 1, timeout=4) or \
        stat(admin, f"overload.{A}shrink_heap.shrink_count") >= 1


def test_shrink_heap_inactive_does_not_trim(procs, upstream):
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(HUGE), action("shrink_heap", SATURATED,
                                   SHRINK_EVERY_SECOND)))
    time.sleep(1.5)
    assert stat(admin, f"overload.{A}shrink_heap.shrink_count") == 0


def scale_timers(timer, adjust, n=1, extra=""):
    items = "".join(f"      - {{ timer: {timer}, {adjust}{', ' + extra if extra else ''} }}\n" for _ in range(n))
    return ("    typed_config:\n"
            "      \"@type\": type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig\n"
            "      timer_scale_factors:\n" + items)


def idle_closed_after(listen, timeout):
    """An idle keep-alive connection (one request answered): seconds until
    SHARP closes it, None if it is still open after `timeout`."""
    s = socket.create_connection(("127.0.0.1", listen))
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head, _ = read_response(s)
    assert head.startswith("HTTP/1.1 200 ")
    t0 = time.time()
    closed = peer_closed(s, timeout)
    s.close()
    return time.time() - t0 if closed else None


def test_reduce_timeouts_connection_idle_saturated(procs, upstream):
    """Saturated, an idle connection's 1 h idle timeout shrinks to min_timeout."""
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout: 0.3s"))),
        hcm_extra="common_http_protocol_options: { idle_timeout: 3600s }\n")
    took = idle_closed_after(listen, 3 * SLOW)
    assert took is not None and took < 2 * SLOW, took
    assert wait_stat(admin, "http.ingress_http.downstream_cx_idle_timeout", 1)
    assert stat(admin, f"overload.{A}reduce_timeouts.active") == 1


def test_reduce_timeouts_min_scale_and_inactive(procs, upstream):
    """min_scale is a share of the configured timeout; inactive, the
    timeout is the configured one."""
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_scale: { value: 10 }"))),
        hcm_extra="common_http_protocol_options: { idle_timeout: 5s }\n")
    took = idle_closed_after(listen, 3 * SLOW)
    assert took is not None and 0.3 < took < 2 * SLOW, took
    listen2, admin2, _ = start(procs, upstream, overload_yaml(
        heap_monitor(HUGE), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout: 0.1s"))),
        hcm_extra="common_http_protocol_options: { idle_timeout: 60s }\n")
    assert idle_closed_after(listen2, 1.5) is None


def test_reduce_timeouts_rescales_armed_idle_timers(procs, upstream):
    """A connection already idle under a 1 h timeout is closed once memory
    pressure saturates the action (the heap grows with 60 clients that do
    not read): armed timers move with the action's state, as Envoy's scaled
    range timers."""
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}), admin)
    base = heap_pressure_bytes(admin)
    procs[-1].stop()
    procs.pop()
    listen, admin, log = start(procs, upstream, overload_yaml(
        heap_monitor(base * 3 + (16 << 20)), action("reduce_timeouts", "threshold: { value: 1.0 }",
                                       scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout: 0.2s"))),
        hcm_extra="common_http_protocol_options: { idle_timeout: 3600s }\n")
    assert stat(admin, f"overload.{A}reduce_timeouts.active") == 0
    idle = socket.create_connection(("127.0.0.1", listen))
    idle.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    head, _ = read_response(idle)
    assert head.startswith("HTTP/1.1 200 ")
    assert not peer_closed(idle, 0.5)
    readers = non_reading_clients(listen, 60, b"GET /bytes/50000000 HTTP/1.1\r\nhost: x\r\n\r\n" * 4)
    # every reader's first request is being answered (a loaded machine may
    # accept the last ones after the action went active: they are no less busy)
    assert wait_stat(admin, "http.ingress_http.downstream_rq_active", 60, timeout=20), \
        stat(admin, "http.ingress_http.downstream_rq_active")
    assert wait_stat(admin, f"overload.{A}reduce_timeouts.active", 1, timeout=15), \
        (heap_pressure_bytes(admin), base)
    assert peer_closed(idle, 3 * SLOW)
    idle.close()
    # the readers are not idle: their streams keep them, and only the idle
    # connection timed out (else: how the readers' streams ended)
    why = lambda: {n: stat(admin, n) for n in (  # noqa: E731
        "http.ingress_http.downstream_cx_idle_timeout", "http.ingress_http.downstream_rq_active",
        "cluster.app.upstream_cx_connect_fail", "cluster.app.upstream_rq_timeout",
        "cluster.app.upstream_cx_destroy_remote")} | {"heap": heap_pressure_bytes(admin), "log": open(log).read()[-2000:]}
    assert stat(admin, "http.ingress_http.downstream_cx_idle_timeout") == 1, why()
    assert stat(admin, "http.ingress_http.downstream_cx_active") == 60, why()
    for r in readers:
        r.close()


def test_reduce_timeouts_stream_idle(procs, upstream):
    """Saturated, a stream waiting on a slow upstream is timed out by its
    scaled stream_idle_timeout (408, SI), not the configured hour."""
    listen, admin, log = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout: 0.3s"))),
        hcm_extra="stream_idle_timeout: 3600s\n")
    t0 = time.time()
    s, head, _ = get(listen, "/?delay_ms=10000")
    took = time.time() - t0
    s.close()
    assert head.startswith("HTTP/1.1 408 "), head
    assert took < 2 * SLOW, took
    assert wait_stat(admin, "http.ingress_http.downstream_rq_idle_timeout", 1)
    assert log_lines(log, 1)[0] == "408 SI stream_idle_timeout"


def test_reduce_timeouts_stream_idle_inactive_keeps_timeout(procs, upstream):
    listen, _, _ = start(procs, upstream, overload_yaml(
        heap_monitor(HUGE), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout: 0.1s"))),
        hcm_extra="stream_idle_timeout: 60s\n")
    s, head, _ = get(listen, "/?delay_ms=600")
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head


def test_reduce_timeouts_connection_max(procs, upstream):
    """Saturated, max_connection_duration shrinks to the scaled minimum:
    an idle connection is drained and closed, and the next response on a
    busy one carries connection: close."""
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(TINY), action("reduce_timeouts", SATURATED,
                                   scale_timers("HTTP_DOWNSTREAM_CONNECTION_MAX", "min_scale: { value: 0 }"))),
        hcm_extra="drain_timeout: 0.1s\ncommon_http_protocol_options: { max_connection_duration: 3600s }\n")
    took = idle_closed_after(listen, 3 * SLOW)
    assert took is not None and took < 2 * SLOW, took
    assert wait_stat(admin, "http.ingress_http.downstream_cx_max_duration_reached", 1)


def start_reset_high_memory(procs, upstream):
    """SHARP with reset_high_memory_stream saturating once the heap is 20 MiB
    above an idle SHARP's (crossed once ~20 non-reading clients hold their
    ~1 MiB of response each), streams tracked from 2^16 bytes; also returns
    that idle heap."""
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}), admin)
    base = heap_pressure_bytes(admin)
    procs[-1].stop()
    procs.pop()
    listen, admin, log = start(procs, upstream, overload_yaml(
        heap_monitor(base + (20 << 20)), action("reset_high_memory_stream", "threshold: { value: 1.0 }"))
        + "  buffer_factory_config: { minimum_account_to_track_power_of_two: 16 }\n")
    return listen, admin, log, base


def test_reset_high_memory_stream(procs, upstream):
    """Memory pressure from clients that do not read: once the action
    saturates, the streams holding the most buffer memory (at least
    2^16 bytes here) are reset, at most 50 per state change, counted in
    overload.envoy.overload_actions.reset_high_memory_stream.count and
    logged with OM; a stream holding little (waiting on a slow upstream)
    is not touched and completes."""
    listen, admin, log, base = start_reset_high_memory(procs, upstream)
    assert stat(admin, f"overload.{A}reset_high_memory_stream.count") == 0
    assert stat(admin, f"overload.{A}reset_high_memory_stream.active") == 0
    small = socket.create_connection(("127.0.0.1", listen))
    small.sendall(b"GET /?delay_ms=3000 HTTP/1.1\r\nhost: x\r\n\r\n")
    readers = non_reading_clients(listen, 60)
    deadline = time.time() + 10 * SLOW
    while not stat(admin, f"overload.{A}reset_high_memory_stream.count") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    count = stat(admin, f"overload.{A}reset_high_memory_stream.count")
    assert 10 <= count <= 60, (count, heap_pressure_bytes(admin), base)
    small.settimeout(10 * SLOW)
    head, _ = read_response(small)
    assert head.startswith("HTTP/1.1 200 "), head
    # a reset stream's connection ends after what was already sent: read
    # all of them at once until as many have ended (one by one, each
    # reader not reset held the loop for its whole timeout)
    closed = 0
    sel = selectors.DefaultSelector()
    for r in readers:
        r.setblocking(False)
        sel.register(r, selectors.EVENT_READ)
    deadline = time.time() + 10 * SLOW
    while closed < count and time.time() < deadline and sel.get_map():
        for key, _ in sel.select(timeout=0.5):
            try:
                data = key.fileobj.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            except BlockingIOError:
                continue
            if not data:
                closed += 1
                sel.unregister(key.fileobj)
    sel.close()
    for r in readers:
        r.close()
    assert closed >= count
    lines = log_lines(log, count + 1)
    assert sum(" OM overload" in line for line in lines) >= count, lines
    small.close()


def test_reset_high_memory_stream_http2_streams(procs, upstream):
    """The same with HTTP/2 clients that do not read, several streams on
    each connection: the streams holding the most memory are reset
    (RST_STREAM), each on its own, and a small stream completes."""
    listen, admin, log, base = start_reset_high_memory(procs, upstream)
    small = H2Client(listen)
    small_sid = small.send("/?delay_ms=3000")
    readers = []
    for _ in range(15):
        r = H2Client(listen, ack=False, rcvbuf=16 * 1024)
        for _ in range(4):
            r.send("/bytes/50000000")
        readers.append(r)
    deadline = time.time() + 10 * SLOW
    while not stat(admin, f"overload.{A}reset_high_memory_stream.count") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    count = stat(admin, f"overload.{A}reset_high_memory_stream.count")
    assert 10 <= count <= 60, (count, heap_pressure_bytes(admin), base)
    st, _, _ = small.response(small_sid, 10)
    assert st == 200
    small.close()
    reset = 0
    for r in readers:
        r.wait(lambda: all(s["reset"] is not None for s in r.streams.values()), 0.3)
        reset += sum(s["reset"] is not None for s in r.streams.values())
        r.close()
    assert reset >= count, (reset, count)
    lines = log_lines(log, count + 1)
    assert sum(" OM overload" in line for line in lines) >= count, lines


def test_stop_accepting_connections(procs, upstream):
    """Saturated, new connections wait unaccepted in the kernel's backlog
    (no answer) while a bypass_overload_manager listener still serves; once
    memory is released and the action goes inactive, the waiting
    connection is accepted and answered."""
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}), admin)
    base = heap_pressure_bytes(admin)
    procs[-1].stop()
    procs.pop()
    listen, admin, _ = start(procs, upstream, overload_yaml(
        heap_monitor(base + (20 << 20)), action("stop_accepting_connections", "threshold: { value: 1.0 }")))
    s, head, _ = get(listen)
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head
    readers = non_reading_clients(listen, 60)
    assert wait_stat(admin, f"overload.{A}stop_accepting_connections.active", 1, timeout=10), \
        (heap_pressure_bytes(admin), base)
    waiting = socket.create_connection(("127.0.0.1", listen))  # the kernel completes the handshake
    waiting.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    waiting.settimeout(0.7)
    with pytest.raises(socket.timeout):
        waiting.recv(1)
    for r in readers:
        r.close()
    assert wait_stat(admin, f"overload.{A}stop_accepting_connections.active", 0, timeout=10)
    waiting.settimeout(5 * SLOW)
    head, _ = read_response(waiting)
    assert head.startswith("HTTP/1.1 200 "), head
    waiting.close()


def test_stop_accepting_connections_bypass_listener(procs, upstream):
    listen, _, _ = start(procs, upstream, overload_yaml(heap_monitor(TINY), action("stop_accepting_connections", SATURATED)),
                         listener_extra="bypass_overload_manager: true\n")
    s, head, _ = get(listen)
    s.close()
    assert head.startswith("HTTP/1.1 200 "), head


def validate(yaml_text):
    d = tempfile.mkdtemp(prefix="sharp-ol-")
    path = os.path.join(d, "b.yaml")
    with open(path, "w") as f:
        f.write(yaml_text)
    return subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=30)


BASE = bootstrap_yaml(1, 2, {"app": [3]})


@pytest.mark.parametrize("overload,want", [
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED)),
     "overload action envoy.overload_actions.reduce_timeouts requires a ScaleTimersOverloadActionConfig"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("TRANSPORT_SOCKET_CONNECT", "min_timeout: 1s"))),
     "scaling the TRANSPORT_SOCKET_CONNECT timer is not supported by SHARP"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("HTTP_DOWNSTREAM_STREAM_FLUSH", "min_timeout: 1s"))),
     "scaling the HTTP_DOWNSTREAM_STREAM_FLUSH timer is not supported by SHARP"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("HTTP_DOWNSTREAM_STREAM_IDLE", "min_timeout: 1s", 2))),
     "Found duplicate entry for timer type HTTP_DOWNSTREAM_STREAM_IDLE"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout: 1s", 2))),
     "Found duplicate entry for timer type HTTP_DOWNSTREAM_CONNECTION_IDLE"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_timeout: 1s",
                                                                                     extra="triggers: [{ name: x, threshold: { value: 1 } }]"))),
     "per-timer triggers"),
    (overload_yaml(heap_monitor(TINY), action("reduce_timeouts", SATURATED, scale_timers("HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_scale: { value: 150 }"))),
     "value"),
    (overload_yaml(heap_monitor(TINY), action("close_idle_http_connections", SATURATED)),
     "overload action envoy.overload_actions.close_idle_http_connections is not supported by SHARP"),
    (overload_yaml(heap_monitor(TINY), action("no_such_thing", SATURATED)),
     "unknown overload action 'envoy.overload_actions.no_such_thing'"),
    (overload_yaml(heap_monitor(TINY), action("shrink_heap", SATURATED) + action("shrink_heap", SATURATED)),
     "Duplicate overload action envoy.overload_actions.shrink_heap"),
    (overload_yaml(heap_monitor(TINY) + heap_monitor(5), ""), "Duplicate resource monitor " + HEAP),
    (overload_yaml(heap_monitor(TINY, name="heap"), action("shrink_heap", SATURATED)),
     "Unknown trigger resource " + HEAP + " for overload action envoy.overload_actions.shrink_heap"),
    (overload_yaml(heap_monitor(TINY), action("shrink_heap", "scaled: { scaling_threshold: 0.9, saturation_threshold: 0.5 }")),
     "scaling_threshold must be less than saturation_threshold"),
    (overload_yaml(heap_monitor(TINY), action("shrink_heap", "threshold: { value: 1.5 }")), "value"),
    (overload_yaml(heap_monitor(0), ""), "max_heap_size_bytes"),
    (overload_yaml(cx_monitor(5, name="conns"), ""), "must be named '" + GLOBAL_CX + "'"),
    (overload_yaml(cx_monitor(0), ""), "max_active_downstream_connections"),
    (overload_yaml(heap_monitor(TINY), "", refresh="0s"), "refresh_interval"),
    ("overload_manager:\n  resource_monitors: []\n", "resource_monitors"),
    (overload_yaml(heap_monitor(TINY), "") + "  loadshed_points:\n  - name: envoy.load_shed_points.tcp_listener_accept\n"
     "    triggers: [{ name: " + HEAP + ", threshold: { value: 0.9 } }]\n", "load shed points"),
    (overload_yaml(heap_monitor(TINY), action("stop_accepting_requests", SATURATED,
                                              "    typed_config:\n"
                                              "      \"@type\": type.googleapis.com/envoy.config.overload.v3.ShrinkHeapConfig\n"
                                              "      timer_interval: 1s\n")),
     "is not a configuration of overload action envoy.overload_actions.stop_accepting_requests"),
    (overload_yaml(heap_monitor(TINY), "  - name: " + A + "shrink_heap\n    triggers: [{ name: " + HEAP + " }]\n"),
     "one of threshold or scaled is required"),
    (overload_yaml(heap_monitor(TINY), "  - name: " + A + "shrink_heap\n    triggers:\n"
                   "    - { name: " + HEAP + ", threshold: { value: 0.9 } }\n"
                   "    - { name: " + HEAP + ", threshold: { value: 0.5 } }\n"),
     "Duplicate trigger resource for overload action envoy.overload_actions.shrink_heap"),
    (overload_yaml(heap_monitor(TINY) + cx_monitor(5), "  - name: " + A + "shrink_heap\n    triggers:\n"
                   "    - { name: " + GLOBAL_CX + ", threshold: { value: 0.9 } }\n"),
     "is a proactive resource"),
    (overload_yaml(heap_monitor(TINY), action("reset_high_memory_stream", SATURATED)),
     "overload action envoy.overload_actions.reset_high_memory_stream needs "
     "buffer_factory_config.minimum_account_to_track_power_of_two"),
    (overload_yaml(heap_monitor(TINY), "") + "  buffer_factory_config: { minimum_account_to_track_power_of_two: 9 }\n",
     "minimum_account_to_track_power_of_two"),
    (overload_yaml(heap_monitor(TINY), "") + "  buffer_factory_config: { minimum_account_to_track_power_of_two: 57 }\n",
     "minimum_account_to_track_power_of_two"),
])
def test_overload_config_refused(overload, want):
    r = validate(BASE + overload)
    assert r.returncode != 0, r.stdout
    assert want in r.stderr, r.stderr
