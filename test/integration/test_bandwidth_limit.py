"""envoy.filters.http.bandwidth_limit in the data path: request and
response bodies paced at limit_kbps (timed against the token bucket that
starts full), both directions at once, the per-route config replacing the
filter's (and a route without one left alone), the bucket shared by
concurrent streams, runtime_enabled, the delay trailers, the upstream paused
while a response waits, Envoy's stats, refused configs, and Envoy's example
config."""
import os
import socket
import threading
import time

import pytest

from conftest import (PROTOS, SLOW, bootstrap_yaml, free_port, protos, run_sharp_config, stat, validate_config,
                      wait_for)

H1 = PROTOS["h1"]
TYPE = "type.googleapis.com/envoy.extensions.filters.http.bandwidth_limit.v3.BandwidthLimit"
CORPUS = "/work/shared/envoy-corpus"
P = "bw.http_bandwidth_limit."


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def with_filter(yaml_text, cfg):
    f = "- name: envoy.filters.http.bandwidth_limit\n  typed_config:\n" + indent(f'"@type": {TYPE}\n' + cfg, 4)
    return yaml_text.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))


def start(procs, upstream, cfg, routes=None, runtime=None, cluster_extra="", concurrency=2):
    """SHARP with the filter (`cfg`, a BandwidthLimit in YAML) before the
    router; returns (port, admin)."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, routes=routes, cluster_extra=cluster_extra)
    y = with_filter(y, cfg)
    if runtime:
        y += "layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n" + indent(runtime, 6)
    run_sharp_config(procs, y, admin, concurrency=concurrency)
    return listen, admin


def timed(proto, port, path, **kw):
    t0 = time.monotonic()
    s, h, b = proto.request(port, path, timeout=60, **kw)
    return s, h, b, time.monotonic() - t0


def expected_seconds(size, kbps):
    """The bucket starts full (one second's worth), then refills at the rate."""
    return max(0.0, size / (kbps * 1024.0) - 1.0)


@protos("h1", "h2-down", "h2-up")
def test_response_paced(procs, proto):
    """RESPONSE at 256 KiB/s: a 1 MiB body takes ~3 s (the first 256 KiB at
    once) and arrives whole; stats counted."""
    port, admin = start(procs, proto.upstream(procs),
                        "stat_prefix: bw\nenable_mode: RESPONSE\nlimit_kbps: 256\n", cluster_extra=proto.cluster)
    s, _, b, took = timed(proto, port, "/bytes/1048576")
    assert s == 200 and len(b) == 1048576
    want = expected_seconds(1048576, 256)
    assert want - 0.3 <= took <= want + 1.0 * SLOW, took
    assert stat(admin, P + "response_enabled") == 1
    assert stat(admin, P + "request_enabled") == 0
    assert stat(admin, P + "response_enforced") > 10
    assert stat(admin, P + "response_incoming_total_size") == 1048576
    assert stat(admin, P + "response_allowed_total_size") == 1048576
    wait_for(lambda: stat(admin, P + "response_pending") == 0, 5, "response_pending back to 0")


@protos("h1", "h2-down")
def test_request_paced(procs, upstream, proto):
    """REQUEST at 256 KiB/s: a 1 MiB upload takes ~3 s and reaches the
    upstream whole; the response is not limited."""
    port, admin = start(procs, upstream, "stat_prefix: bw\nenable_mode: REQUEST\nlimit_kbps: 256\n")
    body = bytes((i * 31 + 7) & 0xFF for i in range(1048576))
    s, _, b, took = timed(proto, port, "/upload", method="POST", body=body)
    assert s == 200 and b'"body_bytes": 1048576' in b.replace(b'":1', b'": 1'), b
    want = expected_seconds(1048576, 256)
    assert want - 0.3 <= took <= want + 1.0 * SLOW, took
    assert stat(admin, P + "request_enabled") == 1 and stat(admin, P + "response_enabled") == 0
    assert stat(admin, P + "request_enforced") > 10
    assert stat(admin, P + "request_allowed_total_size") == 1048576
    wait_for(lambda: stat(admin, P + "request_pending") == 0, 5, "request_pending back to 0")


def test_both_directions_share_the_bucket(procs, upstream):
    """REQUEST_AND_RESPONSE at 256 KiB/s: a 512 KiB upload then its ~60 byte
    answer; then a 768 KiB download: the bucket of the config serves both."""
    port, admin = start(procs, upstream, "stat_prefix: bw\nenable_mode: REQUEST_AND_RESPONSE\nlimit_kbps: 256\n")
    s, _, _, took = timed(H1, port, "/upload", method="POST", body=b"x" * 524288)
    assert s == 200 and 0.7 <= took <= 1.0 + 1.0 * SLOW, took
    # the bucket is empty now: 768 KiB take ~3 s
    s, _, b, took = timed(H1, port, "/bytes/786432")
    assert s == 200 and len(b) == 786432 and 2.6 <= took <= 3.0 + 1.0 * SLOW, took
    assert stat(admin, P + "request_enabled") == 2 and stat(admin, P + "response_enabled") == 2


def test_streams_share_the_bucket(procs, upstream):
    """Four concurrent 512 KiB downloads at 512 KiB/s on two workers: 2 MiB
    through one bucket take ~3 s, not the ~0 s of four buckets."""
    port, admin = start(procs, upstream, "stat_prefix: bw\nenable_mode: RESPONSE\nlimit_kbps: 512\n")
    res = []

    def one():
        res.append(timed(H1, port, "/bytes/524288"))

    t0 = time.monotonic()
    ts = [threading.Thread(target=one) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.monotonic() - t0
    assert [(r[0], len(r[2])) for r in res] == [(200, 524288)] * 4
    assert 2.6 <= took <= 3.0 + 1.0 * SLOW, took


def test_per_route_config(procs, upstream):
    """The filter's config is DISABLED; a route's typed_per_filter_config
    limits its responses with its own bucket and stats; another route is
    left alone."""
    routes = (f'- match: {{ prefix: "/limited" }}\n  route: {{ cluster: backend, prefix_rewrite: "/bytes/" }}\n'
              f'  typed_per_filter_config:\n    envoy.filters.http.bandwidth_limit:\n'
              f'      "@type": {TYPE}\n      stat_prefix: route\n      enable_mode: RESPONSE\n'
              f'      limit_kbps: 256\n      fill_interval: 0.1s\n'
              '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    port, admin = start(procs, upstream, "stat_prefix: bw\n", routes=routes)
    s, _, b, took = timed(H1, port, "/bytes/1048576")
    assert s == 200 and len(b) == 1048576 and took < 1.0, took
    s, _, b, took = timed(H1, port, "/limited1048576")
    assert s == 200 and len(b) == 1048576
    want = expected_seconds(1048576, 256)
    assert want - 0.3 <= took <= want + 1.0 * SLOW, took
    assert stat(admin, "route.http_bandwidth_limit.response_enabled") == 1
    assert stat(admin, P + "response_enabled") == 0


def test_runtime_enabled(procs, upstream):
    """runtime_enabled: its key's value false turns the filter off."""
    port, admin = start(procs, upstream,
                        "stat_prefix: bw\nenable_mode: RESPONSE\nlimit_kbps: 64\n"
                        "runtime_enabled: { runtime_key: bw.on, default_value: true }\n",
                        runtime="bw.on: false\n")
    s, _, b, took = timed(H1, port, "/bytes/1048576")
    assert s == 200 and len(b) == 1048576 and took < 1.0, took
    assert stat(admin, P + "response_enabled") == 0


def test_delay_trailers(procs):
    """enable_response_trailers over HTTP/2: the response ends with the
    prefixed delay trailers, each the milliseconds its body took."""
    proto = PROTOS["h2-down"]
    port, admin = start(procs, proto.upstream(procs),
                        "stat_prefix: bw\nenable_mode: REQUEST_AND_RESPONSE\nlimit_kbps: 256\n"
                        "enable_response_trailers: true\nresponse_trailer_prefix: test\n")
    import h2.config
    import h2.connection
    import h2.events
    c = socket.create_connection(("127.0.0.1", port), timeout=20 * SLOW)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20})
        conn.increment_flow_control_window(16 << 20)
        conn.send_headers(1, [(":method", "POST"), (":path", "/bytes/524288"), (":scheme", "http"),
                              (":authority", "x")])
        body = b"y" * 393216
        off = 0
        trailers, got, ended = None, 0, False
        c.sendall(conn.data_to_send())
        while not ended:
            while off < len(body) and conn.local_flow_control_window(1) > 0:
                n = min(16384, len(body) - off, conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                off += n
                conn.send_data(1, body[off - n:off], end_stream=off == len(body))
            c.sendall(conn.data_to_send())
            d = c.recv(65536)
            assert d
            for ev in conn.receive_data(d):
                if isinstance(ev, h2.events.DataReceived):
                    got += len(ev.data)
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            c.sendall(conn.data_to_send())
    finally:
        c.close()
    assert got == 524288
    assert trailers is not None
    # 384 KiB up: ~0.5 s; then 512 KiB down from an empty bucket: ~2 s
    assert 300 <= int(trailers["test-bandwidth-request-delay-ms"]) <= 1500 * SLOW, trailers
    assert 1700 <= int(trailers["test-bandwidth-response-delay-ms"]) <= 3000 * SLOW, trailers


def test_upstream_paused(procs, upstream):
    """A 64 MB response at 1000 KiB/s: the filter holds about the buffer
    limit and the router pauses the upstream; the client then leaves and
    the stream goes (response_pending back to 0)."""
    port, admin = start(procs, upstream, "stat_prefix: bw\nenable_mode: RESPONSE\nlimit_kbps: 1000\n")
    c = socket.create_connection(("127.0.0.1", port))
    try:
        c.sendall(b"GET /bytes/64000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        c.settimeout(5 * SLOW)
        got, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 1.5:
            d = c.recv(65536)
            assert d
            got += len(d)
        rx = stat(admin, "cluster.backend.upstream_cx_rx_bytes_total")
        assert got < 3_500_000, got
        assert rx < 16_000_000, rx
    finally:
        c.close()
    wait_for(lambda: stat(admin, P + "response_pending") == 0, 5, "the stream to go")


def test_request_source_paused(procs, upstream):
    """A 32 MB upload at 1000 KiB/s: the downstream stops being read, so
    the client cannot push the body far ahead of the limit."""
    port, admin = start(procs, upstream, "stat_prefix: bw\nenable_mode: REQUEST\nlimit_kbps: 1000\n")
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    sent = 0
    try:
        c.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 32000000\r\n\r\n")
        c.setblocking(False)
        chunk = b"z" * 65536
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            try:
                sent += c.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        # 1.5 s at 1000 KiB/s (plus the full bucket) is ~2.5 MB; the buffer
        # limit and the socket buffers come on top, and the kernel grows
        # SHARP's receive buffer (toward tcp_rmem's maximum) as it reads
        # before the pause shows; without the pause all 32 MB go in well
        # under 1.5 s on loopback
        assert sent < 12_000_000, sent
    finally:
        c.close()
    wait_for(lambda: stat(admin, P + "request_pending") == 0, 5, "the stream to go")


@pytest.mark.parametrize("cfg,msg", [
    ("enable_mode: RESPONSE\n", "stat_prefix"),
    ("stat_prefix: bw\nlimit_kbps: 0\n", "limit_kbps"),
    ("stat_prefix: bw\nfill_interval: 0.01s\n", "fill_interval"),
    ("stat_prefix: bw\nfill_interval: 2s\n", "fill_interval"),
    ("stat_prefix: bw\nenable_mode: 7\n", "enable_mode"),
])
def test_refused(cfg, msg):
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}), cfg)
    rc, out = validate_config(y)
    assert rc != 0 and msg in out, out


def test_per_route_needs_limit():
    routes = (f'- match: {{ prefix: "/" }}\n  route: {{ cluster: backend }}\n'
              f'  typed_per_filter_config:\n    envoy.filters.http.bandwidth_limit:\n'
              f'      "@type": {TYPE}\n      stat_prefix: route\n      enable_mode: RESPONSE\n')
    y = with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [1]}, routes=routes), "stat_prefix: bw\n")
    rc, out = validate_config(y)
    assert rc != 0 and "limit must be set for per route filter config" in out, out


def test_envoy_example_loads():
    path = os.path.join(CORPUS, "envoy__docs__root__configuration__http__http_filters___include__bandwidth-limit-filter.yaml")
    with open(path) as f:
        rc, out = validate_config(f.read())
    assert rc == 0, out


@pytest.mark.parametrize("up", ["h1", "h2"])
def test_request_trailers_wait_for_the_body(procs, up):
    """HTTP/2 request trailers after a paced 512 KiB body: they wait until
    the body is through, then end the request; the upstream gets the whole
    body and answers."""
    proto = PROTOS["h2-both" if up == "h2" else "h2-down"]
    port, admin = start(procs, proto.upstream(procs), "stat_prefix: bw\nenable_mode: REQUEST\nlimit_kbps: 256\n",
                        cluster_extra=proto.cluster)
    import h2.config
    import h2.connection
    import h2.events
    c = socket.create_connection(("127.0.0.1", port), timeout=20 * SLOW)
    t0 = time.monotonic()
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "POST"), (":path", "/upload"), (":scheme", "http"), (":authority", "x")])
        body = b"t" * 524288
        off, status, resp, ended, sent_trailers = 0, None, b"", False, False
        c.sendall(conn.data_to_send())
        while not ended:
            while off < len(body) and conn.local_flow_control_window(1) > 0:
                n = min(16384, len(body) - off, conn.local_flow_control_window(1), conn.max_outbound_frame_size)
                conn.send_data(1, body[off:off + n])
                off += n
            if off == len(body) and not sent_trailers:
                conn.send_headers(1, [("x-trailer", "1")], end_stream=True)
                sent_trailers = True
            c.sendall(conn.data_to_send())
            d = c.recv(65536)
            assert d
            for ev in conn.receive_data(d):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    resp += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = True
            c.sendall(conn.data_to_send())
    finally:
        c.close()
    took = time.monotonic() - t0
    assert status == "200" and b"524288" in resp, (status, resp)
    assert 0.7 <= took <= 1.0 + 1.0 * SLOW, took
    wait_for(lambda: stat(admin, P + "request_pending") == 0, 5, "request_pending back to 0")




def test_h2_streams_reset_while_held(procs, upstream):
    """Many HTTP/2 streams of one connection share a slow bucket, both
    directions held: half are reset by the client while their timers are
    armed and their bodies held, then the connection goes mid-transfer.
    Nothing is touched after it is gone (the ASan build reports it) and the
    pending gauges come back to 0."""
    import h2.config
    import h2.connection
    import h2.errors
    port, admin = start(procs, upstream,
                        "stat_prefix: bw\nenable_mode: REQUEST_AND_RESPONSE\nlimit_kbps: 64\nfill_interval: 0.02s\n")
    c = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        ids = [1 + 2 * i for i in range(20)]
        for sid in ids:
            path = "/upload" if sid % 4 == 1 else "/bytes/300000"
            conn.send_headers(sid, [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "x")])
            conn.send_data(sid, b"u" * 2000, end_stream=sid % 4 != 1)
        c.sendall(conn.data_to_send())
        # the responses empty the bucket, then the uploads' next bytes wait
        wait_for(lambda: stat(admin, P + "response_pending") >= 5, 5 * SLOW, "responses held")
        for sid in ids:
            if sid % 4 == 1:
                conn.send_data(sid, b"v" * 2000)
        c.sendall(conn.data_to_send())
        wait_for(lambda: stat(admin, P + "request_pending") >= 5, 5 * SLOW, "uploads held")
        for sid in ids[::2]:
            conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.sendall(conn.data_to_send())
        t0 = time.monotonic()
        c.settimeout(0.2)
        while time.monotonic() - t0 < 0.5:
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            assert d
            for ev in conn.receive_data(d):
                pass
            c.sendall(conn.data_to_send())
    finally:
        c.close()
    wait_for(lambda: stat(admin, P + "request_pending") == 0 and stat(admin, P + "response_pending") == 0,
             5 * SLOW, "the pending gauges back to 0")
    s, _, _ = H1.request(port, "/bytes/10", timeout=10 * SLOW)
    assert s == 200
