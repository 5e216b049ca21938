"""SHARP's own gRPC server on the admin listener (h2c with prior knowledge),
with Debian's python3-grpcio as the client: grpc.health.v1.Health Check and
Watch following the server's state and /healthcheck/fail, gRPC's error
statuses (unknown method, malformed message, compressed message, oversized
message, deadline), and HTTP/1 admin requests beside it."""
import socket
import struct
import threading
import time
import urllib.request

import grpc
import pytest

from conftest import SLOW, admin_get, bootstrap_yaml, free_port, run_sharp_config

SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"


def health_request(service):
    """grpc.health.v1.HealthCheckRequest{service}, encoded by hand (field 1,
    length-delimited)."""
    b = service.encode()
    assert len(b) < 128
    return (b"\x0a" + bytes([len(b)]) + b) if b else b""


def health_status(raw):
    """HealthCheckResponse.status (field 1, varint); 0 when absent."""
    if not raw:
        return 0
    assert raw[0] == 0x08, raw
    return raw[1]


def raw(ch, method, stream=False):
    f = ch.unary_stream if stream else ch.unary_unary
    return f(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


@pytest.fixture
def sharp(procs):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [free_port()]}), admin)
    with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
        yield admin, ch


def post(admin, path):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read().decode()


def test_check_server_and_sharp_serving(sharp):
    admin, ch = sharp
    for service in ("", "sharp"):
        assert health_status(raw(ch, CHECK)(health_request(service), timeout=5 * SLOW)) == SERVING


def test_check_unknown_service_not_found(sharp):
    admin, ch = sharp
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, CHECK)(health_request("no.such.Service"), timeout=5 * SLOW)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "unknown service"


def test_check_follows_healthcheck_fail(sharp):
    admin, ch = sharp
    assert post(admin, "/healthcheck/fail") == (200, "OK\n")
    assert health_status(raw(ch, CHECK)(health_request(""), timeout=5 * SLOW)) == NOT_SERVING
    post(admin, "/healthcheck/ok")
    assert health_status(raw(ch, CHECK)(health_request("sharp"), timeout=5 * SLOW)) == SERVING


def test_watch_streams_changes(sharp):
    """Watch sends the current status, then a message on every change:
    /healthcheck/fail -> NOT_SERVING, /healthcheck/ok -> SERVING."""
    admin, ch = sharp
    call = raw(ch, WATCH, stream=True)(health_request(""), timeout=20 * SLOW)
    it = iter(call)
    assert health_status(next(it)) == SERVING
    post(admin, "/healthcheck/fail")
    assert health_status(next(it)) == NOT_SERVING
    post(admin, "/healthcheck/fail")  # no change, no message
    post(admin, "/healthcheck/ok")
    assert health_status(next(it)) == SERVING
    call.cancel()
    # the cancelled watch is gone from the server: changes still work
    post(admin, "/healthcheck/fail")
    post(admin, "/healthcheck/ok")
    assert health_status(raw(ch, CHECK)(health_request(""), timeout=5 * SLOW)) == SERVING


def test_watch_unknown_service(sharp):
    admin, ch = sharp
    call = raw(ch, WATCH, stream=True)(health_request("other"), timeout=10 * SLOW)
    assert health_status(next(iter(call))) == SERVICE_UNKNOWN
    call.cancel()


def test_watch_draining_not_serving(procs):
    """SIGTERM's drain: a Watch hears NOT_SERVING before the server goes."""
    import signal
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [free_port()]}), admin)
    with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
        call = raw(ch, WATCH, stream=True)(health_request("sharp"), timeout=20 * SLOW)
        it = iter(call)
        assert health_status(next(it)) == SERVING
        # an open downstream connection keeps the drain going
        with socket.create_connection(("127.0.0.1", listen)):
            time.sleep(0.2)
            s.p.send_signal(signal.SIGTERM)
            assert health_status(next(it)) == NOT_SERVING
        call.cancel()


def test_watch_deadline_exceeded(sharp):
    admin, ch = sharp
    call = raw(ch, WATCH, stream=True)(health_request(""), timeout=0.5)
    it = iter(call)
    assert health_status(next(it)) == SERVING
    t0 = time.time()
    with pytest.raises(grpc.RpcError) as e:
        next(it)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.time() - t0 < 5 * SLOW


def test_unknown_method_and_service_unimplemented(sharp):
    admin, ch = sharp
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, "/grpc.health.v1.Health/List")(b"", timeout=5 * SLOW)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "unknown method List" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, "/sharp.Nope/Get")(b"", timeout=5 * SLOW)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.value.details() == "unknown service sharp.Nope"


def test_malformed_request_internal(sharp):
    admin, ch = sharp
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, CHECK)(b"\x0a\x7f\x01", timeout=5 * SLOW)  # a string field longer than the message
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details() == "malformed request message"


# ---- raw HTTP/2 (python3-h2) for what grpcio will not send ----

def h2_call(admin, path, body, headers=(), end=True, read_timeout=5, method="POST",
            content_type="application/grpc"):
    """One request over a fresh h2c connection; returns (response headers,
    data, trailers, reset error code or None)."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", admin), timeout=read_timeout * SLOW)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    hdrs = [(":method", method), (":scheme", "http"), (":authority", "x"), (":path", path),
            ("content-type", content_type), ("te", "trailers"), *headers]
    conn.send_headers(sid, hdrs, end_stream=end and not body)
    if body:
        conn.send_data(sid, body, end_stream=end)
    s.sendall(conn.data_to_send())
    head, data, trailers, reset = None, b"", None, None
    done = False
    while not done:
        chunk = s.recv(65536)
        if not chunk:
            break
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                head = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                data += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamReset):
                reset = ev.error_code
                done = True
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
        out = conn.data_to_send()
        if out:
            s.sendall(out)
    if not done and head is None:
        raise AssertionError("no response")
    s.close()
    return head, data, trailers, reset


def frame_types(data):
    """The types of the HTTP/2 frames in `data`, in order."""
    types, off = [], 0
    while off + 9 <= len(data):
        types.append(data[off + 3])
        off += 9 + int.from_bytes(data[off:off + 3], "big")
    return types


def frame(msg, flag=0):
    return bytes([flag]) + struct.pack(">I", len(msg)) + msg


def test_raw_check_wire_format(sharp):
    """The response's exact shape: headers, one length-prefixed message,
    trailers with grpc-status 0."""
    admin, _ = sharp
    head, data, trailers, reset = h2_call(admin, CHECK, frame(health_request("")))
    assert head[":status"] == "200" and head["content-type"] == "application/grpc"
    assert data == frame(b"\x08\x01")
    assert trailers == {"grpc-status": "0"}
    assert reset is None


def test_trailers_only_error(sharp):
    """An error decided before any message is one HEADERS frame (trailers
    only) with :status 200 and grpc-status; grpc-message is
    percent-encoded."""
    admin, _ = sharp
    head, data, trailers, _ = h2_call(admin, "/x.Y\u00e9/Z", frame(b""))
    assert head[":status"] == "200"
    assert head["grpc-status"] == "12"
    assert head["grpc-message"] == "unknown service x.Y%C3%A9"
    assert data == b"" and trailers is None


def test_compressed_message_refused(sharp):
    admin, ch = sharp
    # grpcio compresses a message only when that makes it smaller
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, CHECK)(health_request("x" * 100), timeout=5 * SLOW, compression=grpc.Compression.Gzip)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert health_status(raw(ch, CHECK)(health_request("sharp"), timeout=5 * SLOW,
                                        compression=grpc.Compression.Gzip)) == SERVING
    head, _, _, _ = h2_call(admin, CHECK, frame(b"", flag=1))
    assert head["grpc-status"] == "13"  # INTERNAL: no grpc-encoding to decompress with
    head, _, _, _ = h2_call(admin, CHECK, frame(b"", flag=1), headers=[("grpc-encoding", "gzip")])
    assert head["grpc-status"] == "12"  # UNIMPLEMENTED: an encoding this server does not have
    assert head["grpc-accept-encoding"] == "identity"
    # the flag is per message: with grpc-encoding gzip an uncompressed one is read
    head, data, trailers, _ = h2_call(admin, CHECK, frame(b""), headers=[("grpc-encoding", "gzip")])
    assert data == frame(b"\x08\x01") and trailers["grpc-status"] == "0"


def test_oversized_message_refused_from_prefix(sharp):
    """A prefix announcing more than 4 MiB ends the call with
    RESOURCE_EXHAUSTED at once, before the body is sent (the stream stays
    open from the client's side and is reset with NO_ERROR)."""
    admin, _ = sharp
    prefix = b"\x00" + struct.pack(">I", 4 * 1024 * 1024 + 1)
    head, _, _, reset = h2_call(admin, CHECK, prefix, end=False)
    assert head["grpc-status"] == "8"
    assert "larger than max (4194305 vs. 4194304)" in head["grpc-message"]


def test_missing_and_extra_messages(sharp):
    admin, _ = sharp
    head, _, _, _ = h2_call(admin, CHECK, b"")
    assert head["grpc-status"] == "13" and head["grpc-message"] == "missing request message"
    head, _, _, _ = h2_call(admin, CHECK, frame(b"") + frame(b""))
    assert head["grpc-status"] == "13"
    head, _, _, _ = h2_call(admin, CHECK, b"\x00\x00\x00")
    assert head["grpc-status"] == "13" and head["grpc-message"] == "incomplete request message"


def test_grpc_timeout_honoured_by_server(sharp):
    """The server's own deadline: a Watch with grpc-timeout 300m ends with
    DEADLINE_EXCEEDED in its trailers (no client-side deadline here)."""
    admin, _ = sharp
    t0 = time.time()
    head, data, trailers, _ = h2_call(admin, WATCH, frame(health_request("")), headers=[("grpc-timeout", "300m")])
    assert data == frame(b"\x08\x01")
    assert trailers["grpc-status"] == "4"
    assert 0.25 < time.time() - t0 < 3 * SLOW
    head, _, _, _ = h2_call(admin, CHECK, frame(b""), headers=[("grpc-timeout", "soon")])
    assert head["grpc-status"] == "13"


def curl_h2(*args):
    import subprocess
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}",
                        *args], capture_output=True, timeout=10 * SLOW, text=True)
    body, _, tail = r.stdout.rpartition("\n")
    return tail, body


def test_admin_pages_over_http2(sharp):
    """Requests that are not gRPC calls on an HTTP/2 admin connection are
    the admin pages, as over HTTP/1; a gRPC content type with GET is a
    405."""
    admin, ch = sharp
    url = f"http://127.0.0.1:{admin}"
    assert curl_h2(url + "/ready") == ("2 200", "LIVE\n")
    assert curl_h2("-I", url + "/ready")[0] == "2 200"
    tail, body = curl_h2(url + "/no-such-page")
    assert tail == "2 404" and "admin commands are:" in body
    assert curl_h2(url + "/healthcheck/fail")[0] == "2 405"  # mutating: POST only
    call = raw(ch, WATCH, stream=True)(health_request(""), timeout=20 * SLOW)
    it = iter(call)
    assert health_status(next(it)) == SERVING
    assert curl_h2("-X", "POST", url + "/healthcheck/fail") == ("2 200", "OK\n")
    assert health_status(next(it)) == NOT_SERVING
    assert curl_h2("-X", "POST", url + "/healthcheck/ok") == ("2 200", "OK\n")
    assert health_status(next(it)) == SERVING
    call.cancel()
    tail, body = curl_h2("-d", "x" * (64 * 1024 + 1), url + "/healthcheck/ok")
    assert tail == "2 413"
    head, _, _, _ = h2_call(admin, CHECK, b"", method="GET")
    assert head[":status"] == "405"


def test_admin_http2_access_log_and_quit(procs):
    """Admin pages over HTTP/2 are in the admin access log with protocol
    HTTP/2 and their pseudo-headers; POST /quitquitquit over HTTP/2 answers,
    then the server exits 0."""
    import os
    import tempfile
    admin = free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-adminlog-"), "admin.log")
    y = (f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n"
         f"  access_log_path: {log}\n")
    s = run_sharp_config(procs, y, admin)
    url = f"http://127.0.0.1:{admin}"
    assert curl_h2(url + "/server_info?x=1")[0] == "2 200"
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline and "/server_info" not in open(log).read():
        time.sleep(0.05)
    line = [l for l in open(log).read().splitlines() if "/server_info" in l][0]
    assert '"GET /server_info?x=1 HTTP/2" 200' in line
    assert f'"127.0.0.1:{admin}"' in line  # %REQ(:AUTHORITY)%
    assert curl_h2("-X", "POST", url + "/quitquitquit") == ("2 200", "OK\n")
    assert s.p.wait(timeout=10 * SLOW) == 0


def test_hostile_client_does_not_hurt_others(sharp):
    """Garbage after the preface: that connection gets a GOAWAY and is
    closed; a Watch on another connection and HTTP/1 admin requests go on."""
    admin, ch = sharp
    call = raw(ch, WATCH, stream=True)(health_request(""), timeout=20 * SLOW)
    it = iter(call)
    assert health_status(next(it)) == SERVING
    for junk in (b"\xff" * 4096, b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" * 3, b"GET / HTTP/1.1\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", admin), timeout=5 * SLOW)
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + junk)
        got = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
        except ConnectionResetError:
            pass
        s.close()
        assert frame_types(got) == [4, 7], got  # SETTINGS, then GOAWAY
    # a preface cut short and never completed is closed by the idle bound,
    # not answered; others are unaffected meanwhile
    half = socket.create_connection(("127.0.0.1", admin))
    half.sendall(b"PRI * HTTP/2.0\r\n")
    assert admin_get(admin, "/ready").strip() == "LIVE"
    post(admin, "/healthcheck/fail")
    assert health_status(next(it)) == NOT_SERVING
    post(admin, "/healthcheck/ok")
    assert health_status(next(it)) == SERVING
    half.close()
    call.cancel()


def test_http1_admin_alongside(sharp):
    """HTTP/1 admin requests on their own connections while gRPC calls run
    on an HTTP/2 one, both ways at once."""
    admin, ch = sharp
    errors = []

    def grpc_loop():
        try:
            for _ in range(30):
                assert health_status(raw(ch, CHECK)(health_request(""), timeout=5 * SLOW)) in (SERVING, NOT_SERVING)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=grpc_loop)
    t.start()
    for _ in range(30):
        assert admin_get(admin, "/ready").strip() == "LIVE"
    t.join()
    assert not errors
    assert "server.live: 1" in admin_get(admin, "/stats?filter=server.live")


def test_concurrent_streams_limited(sharp):
    """SETTINGS_MAX_CONCURRENT_STREAMS is 100: 101 Watch calls opened at
    once on one connection (before the client read the SETTINGS) get 100
    answers and one REFUSED_STREAM; once a call ends, a new one is served."""
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    admin, _ = sharp
    s = socket.create_connection(("127.0.0.1", admin), timeout=10 * SLOW)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", WATCH),
            ("content-type", "application/grpc"), ("te", "trailers")]

    def open_watch():
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, hdrs)
        conn.send_data(sid, frame(health_request("")), end_stream=True)
        return sid

    sids = [open_watch() for _ in range(101)]
    s.sendall(conn.data_to_send())
    answered, refused = set(), set()

    def pump(until):
        while not until():
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.DataReceived):
                    assert ev.data == frame(b"\x08\x01")
                    answered.add(ev.stream_id)
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    assert ev.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                    refused.add(ev.stream_id)
            s.sendall(conn.data_to_send())

    pump(lambda: len(answered) + len(refused) == 101)
    assert len(answered) == 100 and refused == {sids[-1]}
    conn.reset_stream(sids[0], h2.errors.ErrorCodes.CANCEL)
    extra = open_watch()
    s.sendall(conn.data_to_send())
    pump(lambda: extra in answered)
    s.close()


def test_large_request_across_windows(sharp):
    """A 1 MiB request message, far more than the 64 KiB stream window: it
    arrives in many DATA frames as the server gives the window back, is
    reassembled and decoded (an unknown service name: NOT_FOUND)."""
    admin, ch = sharp
    name = ("x" * (1 << 20)).encode()
    msg = b"\x0a" + bytes([0x80, 0x80, 0x40]) + name  # field 1, length 2^20 as a varint
    with pytest.raises(grpc.RpcError) as e:
        raw(ch, CHECK)(msg, timeout=10 * SLOW)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_connection_buffer_bound(sharp):
    """Request bytes buffered by all streams of a connection are bounded (8
    MiB): three calls each announcing a 4 MiB message and sending 3 MiB of
    it, in turn; the one that crosses the bound ends with
    RESOURCE_EXHAUSTED while the others still wait for the rest of theirs."""
    import h2.config
    import h2.connection
    import h2.events
    admin, _ = sharp
    s = socket.create_connection(("127.0.0.1", admin), timeout=10 * SLOW)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    hdrs = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", CHECK),
            ("content-type", "application/grpc"), ("te", "trailers")]
    sids = []
    for _ in range(3):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, hdrs)
        conn.send_data(sid, b"\x00" + struct.pack(">I", 4 * 1024 * 1024))
        sids.append(sid)
    s.sendall(conn.data_to_send())
    left = {sid: 3 * 1024 * 1024 for sid in sids}
    statuses = {}
    while any(left.values()) and len(statuses) < 1:
        progressed = False
        for sid in sids:
            if sid in statuses or not left[sid]:
                continue
            n = min(left[sid], conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if n > 0:
                conn.send_data(sid, b"\x00" * n)
                left[sid] -= n
                progressed = True
        s.sendall(conn.data_to_send())
        if progressed:
            continue
        chunk = s.recv(65536)
        assert chunk, "connection closed"
        for ev in conn.receive_data(chunk):
            if isinstance(ev, h2.events.ResponseReceived):
                statuses[ev.stream_id] = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamReset):
                left[ev.stream_id] = 0
        s.sendall(conn.data_to_send())
    assert len(statuses) == 1, statuses
    (sid, head), = statuses.items()
    assert sid in sids
    assert head["grpc-status"] == "8"
    assert head["grpc-message"] == "too many request bytes buffered on this connection"
    s.close()


def read_until_closed(s, limit=30):
    """Reads until the server closes (or resets) the connection; returns
    what it sent. Fails if it stays open `limit` seconds."""
    s.settimeout(limit * SLOW)
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except ConnectionResetError:
        pass
    return got


def test_random_frames_after_preface(sharp):
    """Frames with random types, flags, stream ids and payloads after a
    valid preface and SETTINGS: each connection ends (GOAWAY or close) or
    stays usable, the server keeps serving (run under ASan too)."""
    import random
    admin, ch = sharp
    rnd = random.Random(20261206)
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", admin), timeout=10 * SLOW)
        data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        for _ in range(rnd.randint(1, 20)):
            payload = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 4, 5, 8, 13, 40, 300])))
            ftype = rnd.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, rnd.randint(0, 255)])
            sid = rnd.choice([0, 1, 2, 3, 5, 0x7fffffff, rnd.getrandbits(31)])
            data += struct.pack(">I", len(payload))[1:] + bytes([ftype, rnd.getrandbits(8)]) + struct.pack(">I", sid)
            data += payload
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        read_until_closed(s)
        s.close()
    assert health_status(raw(ch, CHECK)(health_request(""), timeout=5 * SLOW)) == SERVING
    assert admin_get(admin, "/ready").strip() == "LIVE"


def test_ping_flood_without_reading(sharp):
    """A client that sends PINGs and does not read the ACKs: once the
    answers back up (the socket's queue is full, nothing more is
    serialized), nghttp2's flood limit ends the connection instead of
    queuing answers without end; others are served meanwhile."""
    admin, ch = sharp
    s = socket.create_connection(("127.0.0.1", admin), timeout=10 * SLOW)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    s.settimeout(2 * SLOW)
    sent = 0
    try:
        while sent < 5000000:
            s.sendall(ping * 1000)
            sent += 1000
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    assert sent < 5000000  # the server stopped taking them
    assert health_status(raw(ch, CHECK)(health_request(""), timeout=5 * SLOW)) == SERVING
    got = read_until_closed(s)  # and closed the connection
    s.close()
    assert len(got) < sent * 17, (len(got), sent)
