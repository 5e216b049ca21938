"""Request hygiene and request smuggling: malformed or ambiguous HTTP/1
requests sent as raw bytes to SHARP in front of a recording backend.

Each case checks both sides: the status the client gets, and exactly what
the backend received. A request refused for its head (request line,
headers, framing) must not produce a single upstream byte; a valid one is
forwarded as SHARP re-frames it (chunked bodies re-chunked per read,
hop-by-hop headers dropped), compared byte for byte with only the random
x-request-id masked. The refusals follow Envoy's HTTP/1 codec: status code,
response code details, the DPE response flag and the
downstream_cx_protocol_error counter."""
import os
import re
import socket
import tempfile
import threading
import time

import pytest

from conftest import bootstrap_yaml, free_port, run_sharp_config, stat

LOG_FORMAT = "%REQ(:METHOD)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n"
OP_TIMEOUT = 5  # every socket operation of a test is bounded by this


class RecordingBackend:
    """A raw HTTP/1.1 server that records every byte it receives and
    answers each complete request (Content-Length or chunked) with 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.data = bytearray()
        self.requests = 0
        self.stopping = False
        self.threads = []
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    @staticmethod
    def _complete(buf):
        """Length of the first complete request in buf, or 0."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return 0
        head = bytes(buf[:end]).decode("latin-1")
        pos = end + 4
        if re.search(r"(?im)^transfer-encoding:\s*chunked\s*$", head):
            while True:
                le = buf.find(b"\r\n", pos)
                if le < 0:
                    return 0
                size = int(bytes(buf[pos:le]).split(b";")[0], 16)
                pos = le + 2
                if size == 0:
                    te = buf.find(b"\r\n", pos)  # trailers end with an empty line
                    while te >= 0 and te != pos:
                        pos = te + 2
                        te = buf.find(b"\r\n", pos)
                    return pos + 2 if te >= 0 else 0
                if len(buf) < pos + size + 2:
                    return 0
                pos += size + 2
        m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
        n = int(m.group(1)) if m else 0
        return pos + n if len(buf) >= pos + n else 0

    def _serve(self, conn):
        conn.settimeout(0.2)
        buf = bytearray()
        with conn:
            while not self.stopping:
                try:
                    chunk = conn.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self.lock:
                    self.data += chunk
                buf += chunk
                while True:
                    n = self._complete(buf)
                    if not n:
                        break
                    del buf[:n]
                    with self.lock:
                        self.requests += 1
                    try:
                        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    except OSError:
                        return

    def received(self, settle=0.3):
        time.sleep(settle)
        with self.lock:
            return bytes(self.data)

    def reset(self):
        with self.lock:
            self.data = bytearray()
            self.requests = 0

    def close(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(2)


@pytest.fixture
def backend():
    b = RecordingBackend()
    yield b
    b.close()


class Proxy:
    def __init__(self, procs, backend, hcm_extra=""):
        self.listen, self.admin = free_port(), free_port()
        self.log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
        al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
              f"    path: {self.log}\n"
              f"    log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\" }} }}\n")
        run_sharp_config(procs, bootstrap_yaml(self.listen, self.admin, {"app": [backend.port]},
                                               hcm_extra=al + hcm_extra), self.admin, concurrency=1)

    def send(self, data, timeout=OP_TIMEOUT):
        """Sends raw bytes; returns (responses, closed): every response read
        until the proxy closes or stays quiet, and whether it closed."""
        s = socket.create_connection(("127.0.0.1", self.listen), timeout=timeout)
        out = b""
        closed = False
        deadline = time.time() + timeout
        try:
            s.sendall(data)
            s.settimeout(0.5)
            while time.time() < deadline:
                try:
                    c = s.recv(65536)
                except socket.timeout:
                    if out:
                        break  # answered and quiet
                    continue
                except ConnectionResetError:
                    closed = True
                    break
                if not c:
                    closed = True
                    break
                out += c
        finally:
            s.close()
        return parse_responses(out), closed

    def log_lines(self, n, timeout=OP_TIMEOUT):
        deadline = time.time() + timeout
        lines = []
        while time.time() < deadline:
            if os.path.exists(self.log):
                lines = open(self.log).read().splitlines()
                if len(lines) >= n:
                    return lines
            time.sleep(0.05)
        return lines


def parse_responses(out):
    res = []
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            break
        status = int(head.split(b" ")[1])
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        n = int(m.group(1)) if m else 0
        res.append((status, head, rest[:n]))
        out = rest[n:]
    return res


def forwarded(method, path, headers=(), body=b"", chunked=False):
    """The bytes SHARP sends upstream for a request with Host "a" and the
    given other headers: Host first, the client's headers in order, the
    headers SHARP adds, and Transfer-Encoding last when the body is
    chunked (SHARP drops the client's and frames the body itself)."""
    lines = [f"{method} {path} HTTP/1.1", "host: a"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines += ["x-forwarded-proto: http", "x-request-id: ID", "x-envoy-expected-rq-timeout-ms: 15000"]
    if chunked:
        lines.append("transfer-encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def masked(data):
    return re.sub(rb"(?im)^(x-request-id: )[0-9a-f-]+", rb"\1ID", data)


@pytest.fixture
def px(procs, backend):
    return Proxy(procs, backend)


PROTOCOL_ERROR = "http.ingress_http.downstream_cx_protocol_error"
H = b"POST /x HTTP/1.1\r\nHost: a\r\n"

# Requests refused for their head: (id, bytes, status, response code details).
REJECTED = [
    # transfer codings: Envoy supports exactly one, chunked, and answers 501
    ("te-gzip", H + b"Transfer-Encoding: gzip\r\n\r\n", 501, "http1.invalid_transfer_encoding"),
    ("te-gzip-chunked", H + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501,
     "http1.invalid_transfer_encoding"),
    ("te-chunked-gzip", H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 501, "http1.invalid_transfer_encoding"),
    ("te-identity", H + b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc", 400,
     "http1.content_length_and_chunked_not_allowed"),
    ("te-xchunked", H + b"Transfer-Encoding: xchunked\r\n\r\n", 501, "http1.invalid_transfer_encoding"),
    ("te-twice", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
     "http1.invalid_transfer_encoding"),
    # TE.TE: a second, obfuscated Transfer-Encoding one hop may ignore
    ("te-te-cow", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n\r\n0\r\n\r\n", 501,
     "http1.invalid_transfer_encoding"),
    ("te-te-space-colon", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding : x\r\n\r\n0\r\n\r\n", 400,
     "http1.codec_error"),
    ("te-vtab", H + b"Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400, "http1.codec_error"),
    ("te-obs-fold", H + b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400, "http1.codec_error"),
    ("te-connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
     "http1.invalid_transfer_encoding"),
    # CL.TE and TE.CL: both framings at once
    ("cl-te", H + b"Content-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED", 400,
     "http1.content_length_and_chunked_not_allowed"),
    ("te-cl", H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400,
     "http1.content_length_and_chunked_not_allowed"),
    ("te-gzip-cl", H + b"Transfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", 400,
     "http1.content_length_and_chunked_not_allowed"),
    # Content-Length
    ("cl-dup-same", H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, "http1.codec_error"),
    ("cl-dup-differ", H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "http1.codec_error"),
    ("cl-list", H + b"Content-Length: 3, 3\r\n\r\nabc", 400, "http1.codec_error"),
    ("cl-2^63", H + b"Content-Length: 9223372036854775808\r\n\r\n", 400, "http1.codec_error"),
    ("cl-2^64", H + b"Content-Length: 18446744073709551616\r\n\r\n", 400, "http1.codec_error"),
    ("cl-negative", H + b"Content-Length: -1\r\n\r\n", 400, "http1.codec_error"),
    ("cl-plus", H + b"Content-Length: +3\r\n\r\nabc", 400, "http1.codec_error"),
    ("cl-hex", H + b"Content-Length: 0x3\r\n\r\nabc", 400, "http1.codec_error"),
    # header names
    ("empty-name", b"GET /x HTTP/1.1\r\nHost: a\r\n: ignored\r\n\r\n", 400, "http1.codec_error"),
    ("empty-name-first", b"GET /x HTTP/1.1\r\n: ignored\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("space-before-colon", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400, "http1.codec_error"),
    ("quote-in-name", b"GET /x HTTP/1.1\r\nHost: a\r\nX\"A: b\r\n\r\n", 400, "http1.codec_error"),
    ("ctl-in-name", b"GET /x HTTP/1.1\r\nHost: a\r\nX\x01A: b\r\n\r\n", 400, "http1.codec_error"),
    ("space-in-name", b"GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", 400, "http1.codec_error"),
    ("leading-space-line", b"GET /x HTTP/1.1\r\n Host: a\r\n\r\n", 400, "http1.codec_error"),
    # header values
    ("nul-in-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400, "http1.codec_error"),
    ("ctl-in-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400, "http1.codec_error"),
    ("del-in-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\x7fc\r\n\r\n", 400, "http1.codec_error"),
    ("cr-in-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400, "http1.codec_error"),
    ("obs-fold", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400, "http1.codec_error"),
    ("obs-fold-tab", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", 400, "http1.codec_error"),
    # line endings
    ("bare-lf", b"GET /x HTTP/1.1\nHost: a\n\n", 400, "http1.codec_error"),
    ("bare-lf-header", b"GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400, "http1.codec_error"),
    ("bare-cr-request-line", b"GET /x HTTP/1.1\rHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("bare-cr-end", b"GET /x HTTP/1.1\r\nHost: a\r\n\r\r", 400, "http1.codec_error"),
    # Host
    ("two-hosts", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "http1.codec_error"),
    ("two-hosts-same", b"GET /x HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400, "http1.codec_error"),
    # request line and version
    ("version-1.2", b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("version-2.0", b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("version-0.9", b"GET /x HTTP/0.9\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("version-lower", b"GET /x http/1.1\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("version-space", b"GET /x HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("version-garbage", b"GET /x HTTP/1.1x\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
    ("no-version", b"GET /x\r\n", 400, "http1.codec_error"),
    ("no-version-headers", b"GET /x\r\nHost: a\r\n\r\n", 400, "http1.codec_error"),
]


@pytest.mark.parametrize("data,status,details", [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rejected_head_sends_nothing_upstream(px, backend, data, status, details):
    t0 = time.time()
    resp, closed = px.send(data)
    elapsed = time.time() - t0
    assert [r[0] for r in resp] == [status], resp
    assert closed, "a refused request closes its connection"
    assert elapsed < 3, f"answered after {elapsed:.1f}s"
    assert backend.received() == b""
    assert backend.requests == 0
    lines = px.log_lines(1)
    assert lines and lines[-1].endswith(f"{status} DPE {details}"), lines
    assert stat(px.admin, PROTOCOL_ERROR) == 1
    assert stat(px.admin, f"http.ingress_http.downstream_rq_{status // 100}xx") == 1


# Valid requests: (id, bytes sent in one write, bytes the backend must
# receive, masked). Each runs on a fresh proxy, so the upstream connection
# is still being set up while the whole request is read and a chunked body
# goes out as one chunk.
ACCEPTED = [
    ("content-length", H + b"Content-Length: 3\r\nX-B: c\r\n\r\nabc",
     forwarded("POST", "/x", [("content-length", "3"), ("x-b", "c")], b"abc")),
    ("chunked", H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     forwarded("POST", "/x", [], b"3\r\nabc\r\n0\r\n\r\n", chunked=True)),
    ("chunked-case-ows", H + b"transfer-encoding: \tChunKed \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     forwarded("POST", "/x", [], b"3\r\nabc\r\n0\r\n\r\n", chunked=True)),
    ("chunked-extensions", H + b"Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n2;c\r\nde\r\n0;z\r\n\r\n",
     forwarded("POST", "/x", [], b"5\r\nabcde\r\n0\r\n\r\n", chunked=True)),
    # trailers are dropped (enable_trailers is not supported): a trailer
    # must never turn into a header field upstream
    ("chunked-trailers", H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: evil\r\n"
     b"X-T: v\r\nX_U: w\r\n\r\n",
     forwarded("POST", "/x", [], b"3\r\nabc\r\n0\r\n\r\n", chunked=True)),
    ("empty-value", b"GET /x HTTP/1.1\r\nHost: a\r\nX-E:\r\nX-F: \t\r\n\r\n",
     forwarded("GET", "/x", [("x-e", ""), ("x-f", "")])),
    ("value-inner-ws", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b \t c\r\n\r\n",
     forwarded("GET", "/x", [("x-a", "b \t c")])),
    ("obs-text", b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n",
     forwarded("GET", "/x", [("x-a", "caf\xc3\xa9")])),
    ("leading-crlf", b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", forwarded("GET", "/x")),
]


@pytest.mark.parametrize("data,expected", [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED])
def test_valid_request_forwarded_exactly(px, backend, data, expected):
    resp, _ = px.send(data)
    assert [r[0] for r in resp] == [200], resp
    got = masked(backend.received())
    assert backend.requests == 1
    assert got == expected
    assert stat(px.admin, PROTOCOL_ERROR) == 0


def test_http10_forwarded_as_http11(procs, backend):
    p = Proxy(procs, backend, hcm_extra="http_protocol_options: { accept_http_10: true }\n")
    resp, closed = p.send(b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
    assert [r[0] for r in resp] == [200] and closed
    assert masked(backend.received()) == forwarded("GET", "/x")


def test_pipelined_requests_after_content_length_body(px, backend):
    """Content-Length ends the body: what follows is the next request, and
    both reach the upstream as the two requests they are."""
    data = H + b"Content-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    resp, closed = px.send(data)
    assert [r[0] for r in resp] == [200, 200] and not closed
    assert masked(backend.received()) == forwarded("POST", "/x", [("content-length", "5")], b"hello") + \
        forwarded("GET", "/b")
    assert backend.requests == 2


def test_pipelined_after_chunked_body(px, backend):
    data = H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    resp, closed = px.send(data)
    assert [r[0] for r in resp] == [200, 200] and not closed
    assert masked(backend.received()) == forwarded("POST", "/x", [], b"5\r\nhello\r\n0\r\n\r\n", chunked=True) + \
        forwarded("GET", "/b")


@pytest.mark.parametrize("data", [
    # CL.TE: a front end using Content-Length would pass "0\r\n\r\nGET /admin..."
    # as body; one using chunked would see a second request
    H + b"Content-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    # TE.CL: the chunk carries the smuggled request for a Content-Length reader
    H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2a\r\nGET /admin HTTP/1.1\r\nHost: a\r\nX: GET / HTTP\r\n"
    b"\r\n0\r\n\r\n",
    # TE.TE: one spelling of Transfer-Encoding hidden from one of the hops
    H + b"Content-Length: 35\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n\r\n0\r\n\r\n"
    b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    H + b"Content-Length: 35\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    H + b"Content-Length: 35\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    H + b"Content-Length: 35\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    # a second Content-Length one hop may take over the first
    H + b"Content-Length: 0\r\nContent-Length: 35\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    # a header line without a name, hiding Transfer-Encoding from a lenient hop
    H + b"Content-Length: 35\r\n: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
], ids=["cl-te", "te-cl", "te-te-identity", "te-space-colon", "te-obs-fold", "bare-lf-te", "cl-cl", "nameless-te"])
def test_desync_shapes_refused_whole(px, backend, data):
    """Ambiguous framing is refused as a whole: one error response, the
    connection closed, nothing upstream and no second request parsed."""
    resp, closed = px.send(data)
    assert len(resp) == 1 and resp[0][0] in (400, 501), resp
    assert closed
    assert backend.received() == b""
    assert stat(px.admin, PROTOCOL_ERROR) == 1


@pytest.mark.parametrize("chunk", [b"10000000000000000", b"fffffffffffffffff", b"3\nabc", b"3 \r\nabc", b"-1", b"x"],
                         ids=["2^64", "overflow-17-digits", "bare-lf", "space", "negative", "not-hex"])
def test_bad_chunk_answered_and_closed(px, backend, chunk):
    """A chunk-size the codec refuses comes after a valid head, which may
    already be upstream: the client still gets its 400 at once, the
    upstream never gets a complete request, and the connection closes."""
    head = H + b"Transfer-Encoding: chunked\r\n\r\n"
    t0 = time.time()
    resp, closed = px.send(head + chunk + b"\r\n")
    assert [r[0] for r in resp] == [400], resp
    assert closed and time.time() - t0 < 3
    got = masked(backend.received())
    assert got in (b"", forwarded("POST", "/x", [], chunked=True))
    assert backend.requests == 0
    lines = px.log_lines(1)
    assert lines and lines[-1].endswith("400 DPE http1.codec_error"), lines


def test_request_line_without_version_split(px, backend):
    """The request line end arriving alone, after the rest: still answered."""
    s = socket.create_connection(("127.0.0.1", px.listen), timeout=OP_TIMEOUT)
    try:
        s.sendall(b"GET /x")
        time.sleep(0.2)
        s.sendall(b"\r")
        time.sleep(0.2)
        s.sendall(b"\n")
        out = s.recv(4096)
        assert out.startswith(b"HTTP/1.1 400 "), out
    finally:
        s.close()
    assert backend.received() == b""


def test_obs_fold_split_across_reads(px, backend):
    """obs-fold is found however the bytes are cut into reads."""
    data = b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"
    for cut in range(data.index(b"X-A"), len(data) - 2):
        s = socket.create_connection(("127.0.0.1", px.listen), timeout=OP_TIMEOUT)
        try:
            s.sendall(data[:cut])
            time.sleep(0.05)
            s.sendall(data[cut:])
            out = s.recv(4096)
            assert out.startswith(b"HTTP/1.1 400 "), (cut, out)
        finally:
            s.close()
    assert backend.received() == b""


def test_value_split_across_reads_is_not_a_fold(px, backend):
    data = b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: bc d\r\n\r\n"
    s = socket.create_connection(("127.0.0.1", px.listen), timeout=OP_TIMEOUT)
    try:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(0.01)
        out = s.recv(4096)
        assert out.startswith(b"HTTP/1.1 200 "), out
    finally:
        s.close()
    assert masked(backend.received()) == forwarded("GET", "/x", [("x-a", "bc d")])


@pytest.mark.parametrize("host", [b"a b", b"a\tb", b"caf\xc3\xa9", b"a{b}", b"a/b", b"ost: x"],
                         ids=["space", "tab", "non-ascii", "braces", "slash", "header-like"])
def test_invalid_host_refused_before_routing(px, backend, host):
    """Envoy's authorityIsValid: a Host that is not an RFC 3986 authority
    gets 400 http.invalid_authority and never reaches the upstream."""
    resp, closed = px.send(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert [r[0] for r in resp] == [400], resp
    assert closed
    assert backend.received() == b""
    assert px.log_lines(1)[-1].endswith("400 - http.invalid_authority")


def test_valid_authority_characters_forwarded(px, backend):
    resp, _ = px.send(b"GET /x HTTP/1.1\r\nHost: us-er@[::1]:80\r\n\r\n")
    assert [r[0] for r in resp] == [200], resp
    assert b"host: us-er@[::1]:80\r\n" in backend.received()


@pytest.mark.parametrize("data", [
    b"GET /c HTTP/1.1\r\nHost: a\r\nX-A: " + b"v" * 65536 + b"\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
], ids=["long-header", "long-target"])
def test_oversized_head_answered_once(px, backend, data):
    """A head over max_request_headers_kb that arrives in one large write
    gets one 431 (http1.headers_too_large): the parser reports the error
    again for every later read, and only the first may be answered."""
    resp, closed = px.send(data)
    assert [r[0] for r in resp] == [431], resp
    assert closed
    assert backend.received() == b""
    assert px.log_lines(1)[-1].endswith("431 DPE http1.headers_too_large")
