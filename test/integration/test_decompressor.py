"""envoy.filters.http.decompressor in the data path: gzip and brotli
responses from an upstream decompressed for clients that did not ask for
them (curl without --compressed, python http.client and h2), gzip request
bodies decompressed before they go upstream (the test upstream's /upload
checksums what it got), over HTTP/1.1 and HTTP/2; Envoy's header rules
(Accept-Encoding advertised, content-length dropped, the first coding taken
off content-encoding, no-transform, runtime flags); hostile bodies (a gzip
bomb cut at max_inflate_ratio, corrupt and truncated streams) that end
cleanly with the library's error stats; the byte-count trailers; and
Envoy's stat names."""
import gzip
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest

from conftest import (PROTOS, SANITIZED, SLOW, bootstrap_yaml, free_port, h1_request, h2_request, protos,
                      run_sharp_config, stat, validate_config)

PREFIX = "http.ingress_http.decompressor"


def pattern(n):
    """The test upstream's /bytes body: byte i is (i * 31 + 7) & 0xff."""
    unit = bytes((i * 31 + 7) & 0xFF for i in range(256))
    return (unit * (n // 256 + 1))[:n]


def fnv(data):
    """The test upstream's /upload checksum (FNV-1a, 64 bits)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def text(n):
    """Text that compresses well but not absurdly (about 1:4)."""
    words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"zeta", b"eta", b"theta"]
    out, x = bytearray(), 7
    while len(out) < n:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out += words[(x >> 16) % 8] + b" "
    return bytes(out[:n])


BODY = text(200000)
GZ = gzip.compress(BODY)
BR = brotli.compress(BODY)
BOMB = gzip.compress(b"\0" * (100 << 20), compresslevel=9)  # 100 MiB in about 100 KiB


def decompressor(lib="gzip", name="gz", lib_yaml="", extra=""):
    types = {"gzip": "envoy.extensions.compression.gzip.decompressor.v3.Gzip",
             "br": "envoy.extensions.compression.brotli.decompressor.v3.Brotli"}
    t = f"""\
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
    decompressor_library:
      name: {name}
      typed_config:
        "@type": type.googleapis.com/{types[lib]}
"""
    t += "".join("        " + ln + "\n" for ln in lib_yaml.splitlines())
    t += "".join("    " + ln + "\n" for ln in extra.splitlines())
    return t


def with_filters(yaml_text, filters):
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n"
                                                                   for ln in filters.splitlines()))


def start(procs, filters, up_port, cluster_extra="", top=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [up_port]}, cluster_extra=cluster_extra)
    run_sharp_config(procs, top + with_filters(y, filters), admin)
    return listen, admin


def stats(admin, names, name="gz", lib="gzip"):
    return {n: stat(admin, f"{PREFIX}.{name}.{lib}.{n}") for n in names}


class Encoded:
    """An in-process HTTP/1.1 upstream serving encoded bodies: GET /<kind>
    answers with that body and its content-encoding (and headers given as
    ?h=name:value), content-length set unless ?chunked; the request
    headers it got are kept in `seen`."""

    BODIES = {"gz": (GZ, "gzip"), "br": (BR, "br"), "bomb": (BOMB, "gzip"),
              "corrupt": (GZ[:20] + bytes(b ^ 0x5A for b in GZ[20:2000]) + GZ[2000:], "gzip"),
              "truncated": (GZ[:len(GZ) // 2], "gzip"), "junk": (b"this is not gzip at all\n" * 50, "gzip"),
              "plain": (BODY, None)}

    def __init__(self):
        outer = self
        self.seen = []

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                body, enc = outer.BODIES[u.path.strip("/")]
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                enc = q.get("ce", [enc])[0]
                if enc:
                    self.send_header("content-encoding", enc)
                for h in q.get("h", []):
                    k, v = h.split(":", 1)
                    self.send_header(k, v)
                if "chunked" in q:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 7000):
                        piece = body[i:i + 7000]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def encoded():
    e = Encoded()
    yield e
    e.close()


def curl(port, path, http2=False, headers=()):
    """curl without --compressed: (the response's header and trailer lines
    as curl -D writes them, the body as it came)."""
    import tempfile
    with tempfile.NamedTemporaryFile(prefix="sharp-curl-") as hf:
        args = ["curl", "-sS", "--max-time", str(20 * SLOW), "-D", hf.name, "-o", "-"]
        args += ["--http2-prior-knowledge"] if http2 else []
        for h in headers:
            args += ["-H", h]
        r = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=30 * SLOW)
        assert r.returncode == 0, r.stderr
        return open(hf.name, "rb").read().decode().split("\r\n"), r.stdout


# ---- responses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("down", ["h1", "h2"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_gzip_response_decompressed(procs, encoded, down, chunked):
    """A gzip response reaches the client decompressed, without
    content-encoding or content-length, byte for byte; the stats count
    it and its bytes in Envoy's names."""
    listen, admin = start(procs, decompressor(), encoded.port)
    req = h2_request if down == "h2" else h1_request
    st, h, body = req(listen, "/gz" + ("?chunked=1" if chunked else ""))
    assert st == 200
    assert "content-encoding" not in h
    assert "content-length" not in h
    assert body == BODY
    s = stats(admin, ["response.decompressed", "response.not_decompressed", "response.total_compressed_bytes",
                      "response.total_uncompressed_bytes", "request.decompressed", "request.not_decompressed"])
    assert s == {"response.decompressed": 1, "response.not_decompressed": 0,
                 "response.total_compressed_bytes": len(GZ), "response.total_uncompressed_bytes": len(BODY),
                 "request.decompressed": 0, "request.not_decompressed": 0}


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
def test_curl_sees_decompressed_body_and_trailers(procs, encoded, http2):
    """curl without --compressed gets the plain body. Over HTTP/2 the byte
    counts follow as Envoy's x-envoy-decompressor-<name>-*-bytes trailers;
    HTTP/1.1 drops them, as Envoy's codec does without enable_trailers."""
    listen, admin = start(procs, decompressor(), encoded.port)
    lines, body = curl(listen, "/gz", http2=http2)
    assert lines[0].split()[1] == "200"
    low = [ln.lower() for ln in lines]
    assert not any(ln.startswith("content-encoding") for ln in low)
    assert body == BODY
    trailers = [f"x-envoy-decompressor-gz-compressed-bytes: {len(GZ)}",
                f"x-envoy-decompressor-gz-uncompressed-bytes: {len(BODY)}"]
    for t in trailers:
        assert (t in low) == http2, lines


def test_brotli_response(procs, encoded):
    """The brotli library: content-encoding br decompressed; stats under
    .brotli."""
    listen, admin = start(procs, decompressor("br", name="b"), encoded.port)
    st, h, body = h1_request(listen, "/br")
    assert st == 200 and "content-encoding" not in h and body == BODY
    assert stats(admin, ["response.decompressed", "response.total_compressed_bytes"], name="b", lib="brotli") == {
        "response.decompressed": 1, "response.total_compressed_bytes": len(BR)}
    # a gzip response is not brotli's
    st, h, body = h1_request(listen, "/gz")
    assert h["content-encoding"] == "gzip" and body == GZ
    assert stat(admin, f"{PREFIX}.b.brotli.response.not_decompressed") == 1


def test_response_header_rules(procs, encoded):
    """Envoy's rules: only a first coding that is the library's is taken
    off (the rest stays); another coding, no-transform or an identity body
    pass untouched and count as not_decompressed."""
    listen, admin = start(procs, decompressor(), encoded.port)
    st, h, body = h1_request(listen, "/gz?ce=GZip,%20x-custom")
    assert h["content-encoding"] == "x-custom" and body == BODY
    st, h, body = h1_request(listen, "/gz?ce=x-custom,gzip")
    assert h["content-encoding"] == "x-custom,gzip" and body == GZ
    st, h, body = h1_request(listen, "/gz?h=cache-control:max-age=3,%20No-Transform")
    assert h["content-encoding"] == "gzip" and body == GZ and h["content-length"] == str(len(GZ))
    st, h, body = h1_request(listen, "/plain")
    assert "content-encoding" not in h and body == BODY
    s = stats(admin, ["response.decompressed", "response.not_decompressed"])
    assert s == {"response.decompressed": 1, "response.not_decompressed": 3}


def test_ignore_no_transform_and_runtime_flag(procs, encoded):
    """ignore_no_transform_header decompresses despite no-transform; the
    response direction's enabled flag (a runtime key, here false in a
    static layer) turns it off."""
    listen, admin = start(procs, decompressor(extra="""\
response_direction_config:
  common_config:
    ignore_no_transform_header: true
"""), encoded.port)
    st, h, body = h1_request(listen, "/gz?h=cache-control:no-transform")
    assert "content-encoding" not in h and body == BODY
    top = """\
layered_runtime:
  layers:
  - name: static
    static_layer: { decomp.resp: false }
"""
    listen, admin = start(procs, decompressor(extra="""\
response_direction_config:
  common_config:
    enabled: { default_value: true, runtime_key: decomp.resp }
"""), encoded.port, top=top)
    st, h, body = h1_request(listen, "/gz", headers={"accept-encoding": "br"})
    assert h["content-encoding"] == "gzip" and body == GZ
    # response decompression off: no gzip advertised upstream either
    assert encoded.seen[-1]["accept-encoding"] == "br"
    assert stats(admin, ["response.not_decompressed"]) == {"response.not_decompressed": 1}


# ---- Accept-Encoding ----------------------------------------------------------------------------

def test_accept_encoding_advertised(procs, encoded):
    """With response decompression on, the library's encoding goes last in
    Accept-Encoding, without its q-value (Envoy's
    addEncodingToAcceptEncoding); advertise_accept_encoding: false leaves
    the header alone."""
    listen, admin = start(procs, decompressor(), encoded.port)
    h2_request(listen, "/plain")
    assert encoded.seen[-1]["accept-encoding"] == "gzip"
    h1_request(listen, "/plain")  # http.client sends "identity"
    assert encoded.seen[-1]["accept-encoding"] == "identity,gzip"
    h1_request(listen, "/plain", headers={"accept-encoding": "gzip;q=0.2, br"})
    assert encoded.seen[-1]["accept-encoding"] == "br,gzip"
    h2_request(listen, "/plain", headers={"accept-encoding": "deflate"})
    assert encoded.seen[-1]["accept-encoding"] == "deflate,gzip"
    listen, admin = start(procs, decompressor(extra="""\
request_direction_config:
  advertise_accept_encoding: false
"""), encoded.port)
    h1_request(listen, "/plain", headers={"accept-encoding": "br"})
    assert encoded.seen[-1]["accept-encoding"] == "br"
    h2_request(listen, "/plain")
    assert "accept-encoding" not in encoded.seen[-1]


# ---- streaming ----------------------------------------------------------------------------------

def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError(field)


@pytest.mark.parametrize("down", ["h1", "h2"])
def test_large_bodies_stream_in_bounded_memory(procs, encoded, upstream, down):
    """Tens of MB each way are decompressed as they stream: SHARP's peak
    resident memory grows by a small fraction of the body, and the body is
    whole at the other end."""
    import hashlib
    n = (12 if SLOW > 1 else 48) * 1024 * 1024
    big = os.urandom(n)
    big_gz = gzip.compress(big, compresslevel=1)
    encoded.BODIES = dict(encoded.BODIES, big=(big_gz, "gzip"))
    listen, _ = start(procs, decompressor(), encoded.port)
    sharp = procs[-1]
    req = h2_request if down == "h2" else h1_request
    req(listen, "/gz")  # warm up
    before = rss_kb(sharp.p.pid)
    st, h, body = req(listen, "/big", timeout=120)
    assert st == 200 and "content-encoding" not in h
    assert len(body) == n and hashlib.sha256(body).digest() == hashlib.sha256(big).digest()
    grown = rss_kb(sharp.p.pid, "VmHWM") - before
    # a sanitizer's quarantine keeps freed memory: RSS then follows the traffic
    assert SANITIZED or grown < n // 1024 // 4, f"peak RSS grew by {grown} KiB for a {n // 1024} KiB response"
    # the request direction, into the test upstream's /upload
    listen, _ = start(procs, decompressor(), upstream.port)
    sharp = procs[-1]
    req(listen, "/")
    before = rss_kb(sharp.p.pid)
    chunks = [big_gz[i:i + 65536] for i in range(0, len(big_gz), 65536)]
    st, h, body = req(listen, "/upload", method="POST", headers={"content-encoding": "gzip"}, chunks=chunks,
                      timeout=120)
    assert st == 200 and json.loads(body)["body_bytes"] == n
    grown = rss_kb(sharp.p.pid, "VmHWM") - before
    assert SANITIZED or grown < n // 1024 // 4, f"peak RSS grew by {grown} KiB for a {n // 1024} KiB request"


# ---- requests -----------------------------------------------------------------------------------

@protos("h1", "h2-down", "h2-up", "h2-both")
def test_gzip_request_decompressed(procs, proto):
    """A gzip request body goes upstream decompressed (the test upstream's
    checksum of what it received), sent in pieces; content-encoding and
    content-length are gone (the upstream sees /echo's headers)."""
    u = proto.upstream(procs)
    listen, admin = start(procs, decompressor(), u.port, cluster_extra=proto.cluster)
    chunks = [GZ[i:i + 5000] for i in range(0, len(GZ), 5000)]
    st, h, body = proto.request(listen, "/upload", method="POST", headers={"content-encoding": "gzip"},
                                chunks=chunks)
    assert st == 200, body
    got = json.loads(body)
    assert got == {"body_bytes": len(BODY), "checksum": fnv(BODY)}
    st, h, body = proto.request(listen, "/echo", method="POST",
                                headers={"content-encoding": "gzip", "content-length": str(len(GZ))}, body=GZ)
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert "content-encoding" not in seen
    assert seen.get("content-length") is None or seen["content-length"] == str(len(BODY))
    assert json.loads(body)["body_bytes"] == len(BODY)
    s = stats(admin, ["request.decompressed", "request.total_compressed_bytes", "request.total_uncompressed_bytes"])
    assert s == {"request.decompressed": 2, "request.total_compressed_bytes": 2 * len(GZ),
                 "request.total_uncompressed_bytes": 2 * len(BODY)}


@pytest.mark.parametrize("up", ["h1", "h2"])
def test_gzip_request_with_trailers(procs, up):
    """An HTTP/2 request whose gzip body ends with trailers: the byte
    counts join them (Envoy's decodeTrailers), the body goes up whole."""
    from conftest import H2Client
    proto = PROTOS["h2-both" if up == "h2" else "h2-down"]
    u = proto.upstream(procs)
    listen, admin = start(procs, decompressor(), u.port, cluster_extra=proto.cluster)
    c = H2Client(listen)
    try:
        sid = c.send("/upload", method="POST", headers={"content-encoding": "gzip"}, end=False)
        for i in range(0, len(GZ), 16384):
            c.send_data(sid, GZ[i:i + 16384])
        c.conn.send_headers(sid, [("x-checksum", "abc")], end_stream=True)
        c._flush()
        st, h, body = c.response(sid, timeout=10)
    finally:
        c.close()
    assert st == 200
    assert json.loads(body) == {"body_bytes": len(BODY), "checksum": fnv(BODY)}
    assert stats(admin, ["request.decompressed", "request.total_uncompressed_bytes"]) == {
        "request.decompressed": 1, "request.total_uncompressed_bytes": len(BODY)}


def test_request_not_decompressed(procs, upstream):
    """A body in another coding, or with the request direction disabled,
    goes up as it came; a request without a body is not counted."""
    listen, admin = start(procs, decompressor(), upstream.port)
    st, h, body = h1_request(listen, "/upload", method="POST", headers={"content-encoding": "br"}, body=GZ)
    assert json.loads(body) == {"body_bytes": len(GZ), "checksum": fnv(GZ)}
    h1_request(listen, "/")
    assert stats(admin, ["request.decompressed", "request.not_decompressed"]) == {
        "request.decompressed": 0, "request.not_decompressed": 1}
    listen, admin = start(procs, decompressor(extra="""\
request_direction_config:
  common_config:
    enabled: { default_value: false, runtime_key: decomp.req }
"""), upstream.port)
    st, h, body = h1_request(listen, "/upload", method="POST", headers={"content-encoding": "gzip"}, body=GZ)
    assert json.loads(body) == {"body_bytes": len(GZ), "checksum": fnv(GZ)}


# ---- hostile bodies -----------------------------------------------------------------------------

@pytest.mark.parametrize("down", ["h1", "h2"])
def test_request_gzip_bomb(procs, upstream, down):
    """100 MiB of zeros in about 100 KiB: each piece's output is cut at
    max_inflate_ratio (100) times its size, the rest of the body is
    dropped, the request completes and zlib_data_error counts it."""
    listen, admin = start(procs, decompressor(), upstream.port)
    req = h2_request if down == "h2" else h1_request
    chunks = [BOMB[i:i + 16384] for i in range(0, len(BOMB), 16384)]
    st, h, body = req(listen, "/upload", method="POST", headers={"content-encoding": "gzip"}, chunks=chunks,
                      timeout=30)
    assert st == 200
    got = json.loads(body)["body_bytes"]
    assert 0 < got <= 100 * 16384 + 4096
    assert stat(admin, f"{PREFIX}.gz.gzip.decompressor_library.zlib_data_error") == 1
    assert stat(admin, f"{PREFIX}.gz.gzip.request.total_uncompressed_bytes") == got
    # still serving
    assert h1_request(listen, "/")[0] == 200


def test_response_gzip_bomb_and_ratio(procs, encoded):
    """A bomb from the upstream is cut the same way; with max_inflate_ratio
    10 the cut comes sooner. The response ends normally."""
    listen, admin = start(procs, decompressor(), encoded.port)
    st, h, body = h1_request(listen, "/bomb", timeout=30)
    assert st == 200
    # one upstream read (at most 64 KiB) gives at most 100 times its size
    assert 0 < len(body) <= 100 * 65536 + 4096 and body == b"\0" * len(body)
    assert stat(admin, f"{PREFIX}.gz.gzip.decompressor_library.zlib_data_error") == 1
    listen, admin = start(procs, decompressor(lib_yaml="max_inflate_ratio: 10\nchunk_size: 8192"), encoded.port)
    st, h, body2 = h2_request(listen, "/bomb", timeout=30)
    assert st == 200 and 0 < len(body2) < len(body)
    assert stat(admin, f"{PREFIX}.gz.gzip.decompressor_library.zlib_data_error") == 1


@pytest.mark.parametrize("kind", ["corrupt", "junk", "truncated"])
@pytest.mark.parametrize("down", ["h1", "h2"])
def test_corrupt_and_truncated_responses(procs, encoded, kind, down):
    """A corrupt or cut-short gzip body: what decompresses goes to the
    client, the response completes, a corrupt one counts zlib_data_error,
    and the next request on the same SHARP is served."""
    listen, admin = start(procs, decompressor(), encoded.port)
    req = h2_request if down == "h2" else h1_request
    st, h, body = req(listen, f"/{kind}")
    assert st == 200
    assert BODY.startswith(body)
    assert len(body) < len(BODY)
    errors = stat(admin, f"{PREFIX}.gz.gzip.decompressor_library.zlib_data_error")
    assert errors == (0 if kind == "truncated" else 1)
    st, h, body = req(listen, "/gz")
    assert st == 200 and body == BODY


def test_corrupt_request_body(procs, upstream):
    """A request body that is not gzip at all: nothing decompresses, the
    upstream gets an empty body, zlib_data_error counts it."""
    listen, admin = start(procs, decompressor(), upstream.port)
    junk = b"definitely not gzip\n" * 100
    st, h, body = h1_request(listen, "/upload", method="POST", headers={"content-encoding": "gzip"}, body=junk)
    assert st == 200 and json.loads(body)["body_bytes"] == 0
    assert stat(admin, f"{PREFIX}.gz.gzip.decompressor_library.zlib_data_error") == 1


# ---- config -------------------------------------------------------------------------------------

def test_config_rules():
    """Envoy's validation rules, and libraries named when refused."""
    def check(filters):
        y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]})
        return validate_config(with_filters(y, filters))
    assert check(decompressor())[0] == 0
    assert check(decompressor("br", lib_yaml="chunk_size: 65536\ndisable_ring_buffer_reallocation: true"))[0] == 0
    for bad, what in [("window_bits: 8", "window_bits"), ("chunk_size: 1024", "chunk_size"),
                      ("max_inflate_ratio: 1033", "max_inflate_ratio"), ("max_inflate_ratio: 0", "max_inflate_ratio")]:
        rc, out = check(decompressor(lib_yaml=bad))
        assert rc != 0 and what in out, out
    rc, out = check("""\
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
""")
    assert rc != 0 and "decompressor_library" in out, out
    rc, out = check("""\
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
    decompressor_library:
      name: z
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
""")
    assert rc != 0 and "unsupported decompressor library" in out, out
    rc, out = check("""\
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
    decompressor_library:
      name: z
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.zstd.decompressor.v3.Zstd
""")
    assert rc != 0 and "zstd decompressor library" in out and "not supported" in out, out


def test_corpus_gzip_example():
    """Envoy's gzip example (a compressor and a decompressor with
    max_inflate_ratio 1000, response decompression off by runtime flag)
    loads."""
    path = "/work/shared/envoy-corpus/examples__gzip__envoy.yaml"
    if not os.path.exists(path):
        pytest.skip("corpus not present")
    rc, out = validate_config(open(path).read())
    assert rc == 0, out
