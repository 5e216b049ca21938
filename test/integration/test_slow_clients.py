"""Slow and hostile clients through the real binary: request_headers_timeout
against slowloris clients, the connection idle timeout against a client
that sends nothing, and bounded memory for clients that never read their
responses (the downstream write watermark stops reading the upstream)."""
import os
import socket
import time

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat, Upstream, admin_get

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
