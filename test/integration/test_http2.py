"""Downstream HTTP/2 (the HCM's codec_type AUTO and HTTP2, nghttp2) through
the real binary: curl --http2-prior-knowledge, nghttp and h2load as peers,
and python3-h2 for what those cannot do (not reading a stream, resetting
one, watching SETTINGS and GOAWAY). The upstream is the project's HTTP/1
test upstream."""
import os
import signal
import socket
import subprocess
import tempfile
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import SLOW, SHARP, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config, stat

LOG = "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT%\\n"
H = "http.ingress_http."


def start(procs, upstream, hcm_extra="", log=False, **kw):
    listen, admin = free_port(), free_port()
    al, path = file_access_log(LOG)
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]}, hcm_extra=(al if log else "") + hcm_extra, **kw)
    run_sharp_config(procs, y, admin)
    return listen, admin, path


def curl(*args, timeout=20):
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args], capture_output=True, timeout=timeout + 5)


class H2Client:
    """A python3-h2 client on a raw socket: the test decides when to read
    and what to acknowledge."""

    def __init__(self, port, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events = []
        self.remote_settings = {}
        self.goaway = None
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", body=b"", headers=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "x"), *headers]
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def pump(self, until, timeout=5.0, ack=None):
        """Reads frames until until(self) is true. `ack(stream_id)` says
        whether to give back flow-control window for that stream's data."""
        deadline = time.time() + timeout * SLOW
        while not until(self):
            if time.time() > deadline:
                raise AssertionError("timed out waiting on HTTP/2 frames")
            self.sock.settimeout(max(0.05, deadline - time.time()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                self.closed = True
                return
            for ev in self.conn.receive_data(data):
                self.events.append(ev)
                if isinstance(ev, h2.events.RemoteSettingsChanged):
                    for k, v in ev.changed_settings.items():
                        self.remote_settings[k] = v.new_value
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev
                elif isinstance(ev, h2.events.DataReceived):
                    if ack is None or ack(ev.stream_id):
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif ev.flow_controlled_length:
                        # the connection's window only: that stream stays stalled
                        self.conn.increment_flow_control_window(ev.flow_controlled_length)
            self.flush()

    def response(self, sid):
        headers, body, ended, reset = None, b"", False, None
        for ev in self.events:
            if getattr(ev, "stream_id", None) != sid:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
            elif isinstance(ev, h2.events.StreamReset):
                reset = ev.error_code
        return headers, body, ended, reset

    def done(self, sid):
        return lambda c: c.response(sid)[2] or c.response(sid)[3] is not None or c.closed

    def close(self):
        self.sock.close()


def test_prior_knowledge_get_and_post(procs, upstream):
    listen, admin, log = start(procs, upstream, log=True)
    r = curl("--http2-prior-knowledge", "-i", f"http://127.0.0.1:{listen}/echo", "-d", "hello")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("HTTP/2 200"), out
    assert '"body_bytes": 5' in out and '"method": "POST"' in out
    # the HTTP/1 upstream got Host from :authority and no HTTP/2 pseudo-headers
    assert f'["host", "127.0.0.1:{listen}"]' in out and ":authority" not in out.split("\r\n\r\n", 1)[1]
    line = log_lines(log, 1)[0]
    assert line.startswith("HTTP/2 POST /echo 200 - 5 "), line
    assert stat(admin, H + "downstream_cx_http2_total") == 1
    assert stat(admin, H + "downstream_rq_http2_total") == 1


def test_auto_serves_both_protocols(procs, upstream):
    listen, admin, _ = start(procs, upstream)
    r1 = curl(f"http://127.0.0.1:{listen}/")
    r2 = curl("--http2-prior-knowledge", f"http://127.0.0.1:{listen}/")
    assert r1.stdout == r2.stdout == b"hello from upstream\n"
    assert stat(admin, H + "downstream_cx_http1_total") == 1
    assert stat(admin, H + "downstream_cx_http2_total") == 1
    assert stat(admin, H + "downstream_rq_http1_total") == 1
    assert stat(admin, H + "downstream_rq_http2_total") == 1


def test_auto_decides_on_a_split_preface(procs, upstream):
    """The preface may arrive a byte at a time; a request that only starts
    like it ("P...") is HTTP/1."""
    listen, admin, _ = start(procs, upstream)
    c = H2Client(listen)  # sends the whole preface at once; now a split one:
    c.close()
    s = socket.create_connection(("127.0.0.1", listen), timeout=5)
    for b in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n":
        s.send(bytes([b]))
    s.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # empty SETTINGS
    s.settimeout(5)
    data = s.recv(9)
    assert len(data) == 9 and data[3] == 0x04  # the server's SETTINGS frame
    s.close()
    r = subprocess.run(["curl", "-sS", "-X", "PUT", "--max-time", "5", f"http://127.0.0.1:{listen}/echo", "-d", "x"],
                       capture_output=True, timeout=10)
    assert b'"method": "PUT"' in r.stdout
    deadline = time.time() + 5
    while stat(admin, H + "downstream_cx_http2_total") < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert stat(admin, H + "downstream_cx_http2_total") == 2
    assert stat(admin, H + "downstream_cx_http1_total") == 1


def test_codec_type_http2_refuses_http1(procs, upstream):
    listen, admin, _ = start(procs, upstream, hcm_extra="codec_type: HTTP2\n")
    r = curl(f"http://127.0.0.1:{listen}/", timeout=5)
    assert r.returncode != 0 or not r.stdout.startswith(b"hello")
    assert curl("--http2-prior-knowledge", f"http://127.0.0.1:{listen}/").stdout == b"hello from upstream\n"


def test_codec_type_http1_refuses_http2(procs, upstream):
    listen, _, _ = start(procs, upstream, hcm_extra="codec_type: HTTP1\n")
    r = curl("--http2-prior-knowledge", f"http://127.0.0.1:{listen}/", timeout=5)
    assert r.returncode != 0
    assert curl(f"http://127.0.0.1:{listen}/").stdout == b"hello from upstream\n"


def test_many_streams_per_connection(procs, upstream):
    listen, admin, _ = start(procs, upstream)
    r = subprocess.run(["h2load", "-n", "2000", "-c", "2", "-m", "50", f"http://127.0.0.1:{listen}/"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "2000 succeeded, 0 failed" in r.stdout, r.stdout
    assert stat(admin, H + "downstream_cx_http2_total") == 2
    assert stat(admin, H + "downstream_rq_2xx") == 2000


def test_nghttp_large_response_and_head(procs, upstream):
    listen, _, _ = start(procs, upstream)
    r = subprocess.run(["nghttp", "-s", f"http://127.0.0.1:{listen}/bytes/3000000"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    c = H2Client(listen)
    sid = c.request("/bytes/5000", method="HEAD")
    c.pump(c.done(sid))
    headers, body, ended, _ = c.response(sid)
    assert headers[":status"] == "200" and headers.get("content-length") == "5000"
    assert body == b"" and ended
    c.close()


def test_local_reply_over_http2(procs, upstream):
    listen, admin = free_port(), free_port()
    routes = '- match: { prefix: "/app" }\n  route: { cluster: app }\n'
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}, routes=routes), admin)
    c = H2Client(listen)
    sid = c.request("/nowhere")
    c.pump(c.done(sid))
    headers, _, ended, _ = c.response(sid)
    assert headers[":status"] == "404" and ended
    assert "connection" not in headers and "transfer-encoding" not in headers
    c.close()


def test_stream_window_clamped_to_buffer_limit(procs, upstream):
    """Envoy's default stream window is 256 MiB; SHARP advertises at most
    the listener's buffer limit, so a stream never holds more than that."""
    listen, _, _ = start(procs, upstream, listener_extra="per_connection_buffer_limit_bytes: 131072\n")
    c = H2Client(listen)
    c.pump(lambda c: h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in c.remote_settings)
    assert c.remote_settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 131072
    c.close()
    listen2, _, _ = start(procs, upstream, hcm_extra="http2_protocol_options: { max_concurrent_streams: 7, "
                                                     "initial_stream_window_size: 65535 }\n")
    c = H2Client(listen2)
    c.pump(lambda c: h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS in c.remote_settings)
    assert c.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 7
    assert c.remote_settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 65535
    c.close()


def test_stalled_stream_does_not_block_others_and_memory_is_bounded(procs, upstream):
    """A stream whose client never opens its window (a 50 MB response)
    holds at most about the buffer limit; other streams on the same
    connection still complete."""
    listen, admin, _ = start(procs, upstream)
    base = stat(admin, "server.memory_allocated")
    c = H2Client(listen)
    stuck = c.request("/bytes/50000000")
    c.pump(lambda c: c.response(stuck)[0] is not None, ack=lambda sid: sid != stuck)
    for i in range(5):
        sid = c.request("/echo", method="POST", body=b"x" * 1000)
        c.pump(c.done(sid), ack=lambda s: s != stuck)
        headers, body, ended, _ = c.response(sid)
        assert headers[":status"] == "200" and ended and b'"body_bytes": 1000' in body
    time.sleep(0.5)
    grown = stat(admin, "server.memory_allocated") - base
    assert grown < 8 * 1024 * 1024, grown  # 1 MiB buffer limit, not the 50 MB body
    assert not c.response(stuck)[2]
    c.close()


def test_client_reset_is_logged(procs, upstream):
    listen, admin, log = start(procs, upstream, log=True)
    c = H2Client(listen)
    sid = c.request("/?delay_ms=2000")
    time.sleep(0.2)
    c.conn.reset_stream(sid)
    c.flush()
    line = log_lines(log, 1)[0]
    assert line.startswith("HTTP/2 GET /?delay_ms=2000 0 DR"), line
    assert stat(admin, H + "downstream_rq_rx_reset") == 1
    # the connection goes on
    sid2 = c.request("/")
    c.pump(c.done(sid2))
    assert c.response(sid2)[0][":status"] == "200"
    c.close()


def test_request_body_upload(procs, upstream):
    listen, _, _ = start(procs, upstream)
    body = os.urandom(3 * 1024 * 1024)
    path = os.path.join(tempfile.mkdtemp(prefix="sharp-h2-"), "body.bin")
    with open(path, "wb") as f:
        f.write(body)
    r = curl("--http2-prior-knowledge", "--data-binary", "@" + path, f"http://127.0.0.1:{listen}/echo")
    assert r.returncode == 0, r.stderr
    assert f'"body_bytes": {len(body)}'.encode() in r.stdout


def test_headers_over_limit_reset_the_stream(procs, upstream):
    listen, _, _ = start(procs, upstream, hcm_extra="max_request_headers_kb: 1\n")
    c = H2Client(listen)
    sid = c.request("/", headers=[("x-big", "a" * 2000)])
    c.pump(c.done(sid))
    _, _, ended, reset = c.response(sid)
    assert reset is not None and not ended
    sid2 = c.request("/")
    c.pump(c.done(sid2))
    assert c.response(sid2)[0][":status"] == "200"
    c.close()


def test_drain_sends_goaway_and_finishes_streams(procs, upstream):
    """/drain_listeners: the client gets a GOAWAY while its stream is in
    flight (nghttp: python3-h2 refuses frames after any GOAWAY) and the
    stream still completes."""
    listen, admin, _ = start(procs, upstream, hcm_extra="drain_timeout: 0.2s\n")
    p = subprocess.Popen(["nghttp", "-v", f"http://127.0.0.1:{listen}/?delay_ms=1000"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    time.sleep(0.4)
    subprocess.run(["curl", "-sS", "-X", "POST", f"http://127.0.0.1:{admin}/drain_listeners?graceful"],
                   capture_output=True, timeout=10)
    out, _ = p.communicate(timeout=20)
    out = out.decode(errors="replace")
    assert p.returncode == 0, out
    assert "recv GOAWAY" in out, out
    assert ":status: 200" in out and "hello from upstream" in out, out
    assert out.index("recv GOAWAY") < out.index(":status: 200"), out


def test_max_connection_duration_goaway(procs, upstream):
    listen, admin, _ = start(procs, upstream, hcm_extra="drain_timeout: 0.1s\n"
                                                      "common_http_protocol_options: { max_connection_duration: 0.3s }\n")
    c = H2Client(listen)
    sid = c.request("/")
    c.pump(c.done(sid))
    c.pump(lambda c: c.closed, timeout=5)
    assert c.goaway is not None
    assert stat(admin, H + "downstream_cx_max_duration_reached") == 1
    c.close()


def test_idle_timeout_closes_http2_connection(procs, upstream):
    listen, admin, _ = start(procs, upstream, hcm_extra="common_http_protocol_options: { idle_timeout: 0.3s }\n")
    c = H2Client(listen)
    sid = c.request("/")
    c.pump(c.done(sid))
    c.pump(lambda c: c.closed, timeout=5)
    assert c.goaway is not None
    assert stat(admin, H + "downstream_cx_idle_timeout") == 1
    c.close()


def test_malformed_frames_close_only_that_connection(procs, upstream):
    listen, admin, _ = start(procs, upstream)
    good = H2Client(listen)
    s = socket.create_connection(("127.0.0.1", listen), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\xff" * 64)
    s.settimeout(5)
    got = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    assert b"\x07" in got  # a GOAWAY frame type went out before the close
    sid = good.request("/")
    good.pump(good.done(sid))
    assert good.response(sid)[0][":status"] == "200"
    good.close()
    assert stat(admin, H + "downstream_cx_protocol_error") >= 1


@pytest.mark.parametrize("opt,want", [
    ("connection_keepalive: { interval: 1s }", "timeout"),
    ("connection_keepalive: { interval: 0.0001s, timeout: 1s }", "interval"),
    ("max_outbound_frames: 0", "max_outbound_frames"),
    ("max_outbound_control_frames: 0", "max_outbound_control_frames"),
    ("max_inbound_window_update_frames_per_data_frame_sent: 0", "max_inbound_window_update_frames_per_data_frame_sent"),
    ("custom_settings_parameters: [{ identifier: 9, value: 1 }]", "custom_settings_parameters"),
    ("initial_stream_window_size: 100", "initial_stream_window_size"),
    ("max_concurrent_streams: 0", "max_concurrent_streams"),
])
def test_http2_options_refused(opt, want):
    d = tempfile.mkdtemp(prefix="sharp-h2cfg-")
    path = os.path.join(d, "b.yaml")
    with open(path, "w") as f:
        f.write(bootstrap_yaml(1, 2, {"app": [3]}, hcm_extra=f"http2_protocol_options: {{ {opt} }}\n"))
    r = subprocess.run([SHARP, "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert want in r.stderr, r.stderr


def test_trailers_end_to_end_over_http2(procs):
    """HTTP/2 on both sides: the client's request trailers reach the
    upstream, the upstream's response trailers reach the client."""
    from conftest import Upstream
    up = Upstream(extra=("--h2",))
    procs.append(up)
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [up.port]},
                                           cluster_extra="http2_protocol_options: {}\n"), admin)
    c = H2Client(listen)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "POST"), (":path", "/echo?trailers=1"), (":scheme", "http"),
                              (":authority", "x"), ("te", "trailers")])
    c.conn.send_data(sid, b"abc")
    c.conn.send_headers(sid, [("x-checksum", "42")], end_stream=True)
    c.flush()
    c.pump(c.done(sid))
    headers, body, ended, _ = c.response(sid)
    assert headers[":status"] == "200" and ended, headers
    import json
    echo = json.loads(body)
    assert echo["body_bytes"] == 3
    assert ["x-checksum", "42"] in echo["trailers"], echo
    trailers = [ev for ev in c.events if isinstance(ev, h2.events.TrailersReceived) and ev.stream_id == sid]
    assert trailers and ("x-trailer", "done") in trailers[0].headers
    c.close()


def test_timer_driven_frames_leave_at_once(procs, upstream):
    """A response a timer produces (the stream idle timeout's 408) is
    serialized in the same loop turn: the worker does not wait for the next
    I/O event or its 1 s tick before flushing HTTP/2 frames."""
    listen, _, _ = start(procs, upstream, hcm_extra="stream_idle_timeout: 0.2s\n")
    c = H2Client(listen)
    for _ in range(3):
        t0 = time.time()
        sid = c.request("/?delay_ms=5000")
        c.pump(c.done(sid))
        elapsed = time.time() - t0
        assert c.response(sid)[0][":status"] == "408"
        assert elapsed < 0.2 + 0.25 * SLOW, elapsed
    c.close()
