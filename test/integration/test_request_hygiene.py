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
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


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
