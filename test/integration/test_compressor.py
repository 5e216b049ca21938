"""envoy.filters.http.compressor in the data path: responses (and with
request_direction_config, request bodies) compressed with gzip, brotli and
zstd over HTTP/1.1 and HTTP/2, decompressed by real clients (curl
--compressed, Python's zlib/brotli/zstandard) and compared byte for byte
with the upstream's body; Envoy's rules for what is not compressed; the
Accept-Encoding negotiation among several compressor filters; streaming
without holding the body; Envoy's stats; and an Istio bootstrap's
compressor filters."""
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest
import zstandard

from conftest import (PROTOS, SLOW, bootstrap_yaml, free_port, h1_request, h2_request, protos, run_sharp_config,
                      stat, upstream_admin, validate_config)

H1 = PROTOS["h1"]
PREFIX = "http.ingress_http.compressor"


def pattern(n):
    """The test upstream's /bytes body: byte i is (i * 31 + 7) & 0xff."""
    unit = bytes((i * 31 + 7) & 0xFF for i in range(256))
    return (unit * (n // 256 + 1))[:n]


def compressor(lib="gzip", name="text", lib_yaml="", extra="", filter_name="envoy.filters.http.compressor"):
    types = {"gzip": "envoy.extensions.compression.gzip.compressor.v3.Gzip",
             "br": "envoy.extensions.compression.brotli.compressor.v3.Brotli",
             "zstd": "envoy.extensions.compression.zstd.compressor.v3.Zstd"}
    text = f"""\
- name: {filter_name}
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    compressor_library:
      name: {name}
      typed_config:
        "@type": type.googleapis.com/{types[lib]}
"""
    text += "".join("        " + ln + "\n" for ln in lib_yaml.splitlines())
    text += "".join("    " + ln + "\n" for ln in extra.splitlines())
    return text


def with_filters(yaml_text, filters):
    return yaml_text.replace("          http_filters:\n",
                             "          http_filters:\n" + "".join("          " + ln + "\n"
                                                                   for ln in filters.splitlines()))


def start(procs, filters, up_port, proto=H1, routes=None, top=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [up_port]}, routes=routes, cluster_extra=proto.cluster)
    run_sharp_config(procs, top + with_filters(y, filters), admin)
    return listen, admin


def decode(encoding, data):
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(data)
        assert d.eof, "gzip stream not finished"
        return out
    if encoding == "br":
        return brotli.decompress(data)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise AssertionError(encoding)


def stats(admin, names, lib="gzip", name="text"):
    return {n: stat(admin, f"{PREFIX}.{name}.{lib}.{n}") for n in names}


TEXT = "hdr=content-type:text/plain"


# ---- compression over both protocols ------------------------------------------------------------

@protos("h1", "h2-down", "h2-up", "h2-both")
def test_gzip_response_round_trip(procs, proto):
    """A listed content type and Accept-Encoding: gzip: content-encoding
    gzip, no content-length (HTTP/1.1 goes chunked), vary, and the body
    decompresses to the upstream's exactly; the stats count the bytes."""
    u = proto.upstream(procs)
    listen, admin = start(procs, compressor(), u.port, proto)
    n = 300000
    st, h, body = proto.request(listen, f"/bytes/{n}?{TEXT}", headers={"accept-encoding": "gzip"})
    assert st == 200
    assert h["content-encoding"] == "gzip"
    assert "content-length" not in h
    assert h["vary"] == "accept-encoding"
    if proto.down == "h1":
        assert h["transfer-encoding"] == "chunked"
    assert len(body) < n // 10
    assert decode("gzip", body) == pattern(n)
    s = stats(admin, ["compressed", "not_compressed", "header_compressor_used", "total_uncompressed_bytes",
                      "total_compressed_bytes"])
    assert s == {"compressed": 1, "not_compressed": 0, "header_compressor_used": 1,
                 "total_uncompressed_bytes": n, "total_compressed_bytes": len(body)}


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2"])
@pytest.mark.parametrize("lib", ["gzip", "br", "zstd"])
def test_curl_compressed(procs, upstream, lib, http2):
    """curl --compressed (over HTTP/1.1 and HTTP/2 with prior knowledge)
    decodes each library's stream to the upstream's body."""
    listen, admin = start(procs, compressor(lib, lib_yaml="quality: 5" if lib == "br" else ""), upstream.port)
    n = 2000000
    args = ["curl", "-sS", "--compressed", "-D", "-", "-o", "-"] + (["--http2-prior-knowledge"] if http2 else [])
    r = subprocess.run(args + ["-H", f"accept-encoding: {lib}",
                               f"http://127.0.0.1:{listen}/bytes/{n}?{TEXT}&chunked=1"],
                       capture_output=True, timeout=60 * SLOW)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert re.search(rb"(?im)^content-encoding: " + lib.encode() + rb"\r?$", head), head
    assert body == pattern(n)
    lp = {"gzip": "gzip", "br": "brotli", "zstd": "zstd"}[lib]
    assert stat(admin, f"{PREFIX}.text.{lp}.compressed") == 1
    assert stat(admin, f"{PREFIX}.text.{lp}.total_uncompressed_bytes") == n


# ---- streaming --------------------------------------------------------------------------------------

def timed_h1_read(port, path, headers):
    """Reads a chunked HTTP/1.1 response; returns (headers text, [(time,
    chunk)])."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20 * SLOW)
    hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n{hdr}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, buf = buf.partition(b"\r\n\r\n")
    chunks = []
    while True:
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        line, _, buf = buf.partition(b"\r\n")
        size = int(line, 16)
        while len(buf) < size + 2:
            buf += s.recv(65536)
        if size == 0:
            break
        chunks.append((time.time(), buf[:size]))
        buf = buf[size + 2:]
    s.close()
    return head.decode(), chunks


@pytest.mark.parametrize("lib", ["gzip", "br"])
def test_each_data_event_is_flushed(procs, upstream, lib):
    """gzip and brotli flush every data event as Envoy does: the first
    upstream piece decodes at the client while the upstream is still
    pausing before the next ones."""
    listen, _ = start(procs, compressor(lib), upstream.port)
    t0 = time.time()
    head, chunks = timed_h1_read(listen, f"/bytes/65536?{TEXT}&chunk_delay_ms=400",
                                 {"accept-encoding": lib})
    assert f"content-encoding: {lib}" in head
    # the first piece of 16 KiB is readable long before the last one came
    d = zlib.decompressobj(16 + zlib.MAX_WBITS) if lib == "gzip" else brotli.Decompressor()
    first = d.decompress(chunks[0][1]) if lib == "gzip" else d.process(chunks[0][1])
    assert first == pattern(65536)[:len(first)] and len(first) >= 16384
    assert chunks[-1][0] - chunks[0][0] > 0.8
    rest = b"".join(c for _, c in chunks[1:])
    tail = d.decompress(rest) if lib == "gzip" else d.process(rest)
    assert first + tail == pattern(65536)
    assert time.time() - t0 < 10 * SLOW


def test_zstd_emits_as_its_blocks_fill(procs, upstream):
    """zstd, as Envoy drives it (ZSTD_e_continue), holds a slow response's
    small pieces until the end: the compressed stream comes at the end."""
    listen, _ = start(procs, compressor("zstd"), upstream.port)
    head, chunks = timed_h1_read(listen, f"/bytes/49152?{TEXT}&chunk_delay_ms=300", {"accept-encoding": "zstd"})
    assert "content-encoding: zstd" in head
    body = b"".join(c for _, c in chunks)
    assert decode("zstd", body) == pattern(49152)
    assert chunks[-1][0] - chunks[0][0] < 0.25


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise AssertionError(field)


@protos("h1", "h2-down")
def test_large_body_streams_in_bounded_memory(procs, proto):
    """A body of tens of MB is compressed as it streams: SHARP's resident
    memory grows by a small fraction of it, and the client gets it all."""
    u = proto.upstream(procs)
    listen, _ = start(procs, compressor(), u.port, proto)
    sharp = procs[-1]
    n = (16 if SLOW > 1 else 64) * 1024 * 1024
    proto.request(listen, f"/bytes/100000?{TEXT}", headers={"accept-encoding": "gzip"})  # warm up
    before = rss_kb(sharp.p.pid)
    st, h, body = proto.request(listen, f"/bytes/{n}?{TEXT}", headers={"accept-encoding": "gzip"},
                                timeout=120)
    assert st == 200 and h["content-encoding"] == "gzip"
    assert decode("gzip", body) == pattern(n)
    grown = rss_kb(sharp.p.pid, "VmHWM") - before
    assert grown < n // 1024 // 4, f"peak RSS grew by {grown} KiB for a {n // 1024} KiB body"


def test_slow_reader_gets_the_whole_body(procs, upstream):
    """A client that stops reading for a while: back-pressure reaches the
    upstream and the body is complete and intact once it reads again."""
    # a 512-byte window cannot reach back the pattern's 256 bytes (zlib
    # keeps 262 bytes of lookahead): the compressed body is as large as the
    # body, far more than the socket buffers hold
    listen, _ = start(procs, compressor(lib_yaml="compression_level: BEST_SPEED\nwindow_bits: 9"), upstream.port)
    sharp = procs[-1]
    n = (12 if SLOW > 1 else 48) * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", listen), timeout=30 * SLOW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    before = rss_kb(sharp.p.pid)
    s.sendall(f"GET /bytes/{n}?{TEXT} HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n".encode())
    time.sleep(2)
    grown = rss_kb(sharp.p.pid) - before
    assert grown < n // 1024 // 4, f"RSS grew by {grown} KiB while the client did not read"
    pieces = []
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        pieces.append(d)
        if d.endswith(b"\r\n0\r\n\r\n"):
            break
    s.close()
    buf = b"".join(pieces)
    at = buf.index(b"\r\n\r\n") + 4
    body = []
    while True:
        eol = buf.index(b"\r\n", at)
        size = int(buf[at:eol], 16)
        if size == 0:
            break
        body.append(buf[eol + 2:eol + 2 + size])
        at = eol + 2 + size + 2
    body = b"".join(body)
    assert len(body) > n // 2
    assert decode("gzip", body) == pattern(n)


@pytest.mark.parametrize("lib", ["gzip", "br", "zstd"])
def test_client_gone_mid_body(procs, upstream, lib):
    """Clients that leave in the middle of compressed responses (HTTP/1.1
    and HTTP/2): the streams end, the compressors are released (the
    sanitized build reports any leak at exit) and SHARP serves on."""
    listen, admin = start(procs, compressor(lib), upstream.port)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
        s.sendall(f"GET /bytes/50000000?{TEXT}&chunk_delay_ms=5 HTTP/1.1\r\nhost: x\r\n"
                  f"accept-encoding: {lib}\r\n\r\n".encode())
        assert b"content-encoding: " + lib.encode() in s.recv(65536)
        s.close()
    import h2.config
    import h2.connection
    s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                       (":path", f"/bytes/50000000?{TEXT}&chunk_delay_ms=5"), ("accept-encoding", lib)],
                   end_stream=True)
    s.sendall(c.data_to_send())
    assert s.recv(65536)
    s.close()
    wait = time.time() + 10 * SLOW
    while stat(admin, "http.ingress_http.downstream_rq_active") and time.time() < wait:
        time.sleep(0.05)
    assert stat(admin, "http.ingress_http.downstream_rq_active") == 0
    st, h, body = get(listen, f"/bytes/5000?{TEXT}", lib)
    assert h["content-encoding"] == lib and decode(lib, body) == pattern(5000)


# ---- what is not compressed ---------------------------------------------------------------------

def raw_get(port, path):
    """A GET without any Accept-Encoding (http.client adds "identity")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    h = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), h, body


def get(port, path, ae="gzip", method="GET", **kw):
    if ae is None:
        return raw_get(port, path)
    headers = kw.pop("headers", {})
    headers["accept-encoding"] = ae
    return h1_request(port, path, method=method, headers=headers, **kw)


def test_accept_encoding_decides(procs, upstream):
    listen, admin = start(procs, compressor(), upstream.port)
    p = f"/bytes/1000?{TEXT}"
    cases = [(None, False, "no_accept_header"), ("identity", False, "header_identity"),
             ("deflate, br", False, "header_not_valid"), ("*", True, "header_wildcard"),
             ("gzip;q=0, *", False, "header_not_valid"), ("*;q=0, gzip", True, "header_compressor_used"),
             ("identity;q=0.9, gzip;q=0.5", False, "header_identity"), ("gzip;q=abc", False, "header_not_valid")]
    names = ["no_accept_header", "header_identity", "header_not_valid", "header_wildcard", "header_compressor_used"]
    for ae, compressed, counter in cases:
        before = stats(admin, names)
        st, h, body = get(listen, p, ae)
        assert st == 200
        assert (h.get("content-encoding") == "gzip") == compressed, (ae, h)
        assert h["vary"] == "accept-encoding"  # compressible: vary whichever encoding was taken
        assert (decode("gzip", body) if compressed else body) == pattern(1000)
        if not compressed:
            assert h["content-length"] == "1000"
        after = stats(admin, names)
        assert {k: after[k] - before[k] for k in names} == {k: int(k == counter) for k in names}, ae


def test_response_rules(procs, upstream):
    """Envoy's reasons not to compress, each counted where Envoy counts it;
    vary is added to every compressible response."""
    listen, admin = start(procs, compressor(extra="response_direction_config:\n"
                                                  "  common_config: { min_content_length: 100 }"), upstream.port)

    def s():
        return stats(admin, ["response.compressed", "response.not_compressed", "response.content_length_too_small"])

    def check(path, compressed, vary, counter=None, method="GET"):
        b = s()
        st, h, body = get(listen, path, method=method)
        a = s()
        assert (h.get("content-encoding") == "gzip") == compressed, (path, h)
        assert (h.get("vary") == "accept-encoding") == vary, (path, h)
        assert a["response.compressed"] - b["response.compressed"] == int(compressed)
        assert a["response.not_compressed"] - b["response.not_compressed"] == int(not compressed)
        if counter:
            assert a[counter] - b[counter] == 1, path
        return st, h, body

    check(f"/bytes/150?{TEXT}", True, True)
    # min_content_length: 100
    check(f"/bytes/99?{TEXT}", False, False, "response.content_length_too_small")
    # the default types: /bytes is application/octet-stream
    check("/bytes/1000", False, False)
    check("/bytes/1000?hdr=content-type:application/json;%20charset=utf-8", True, True)
    check("/bytes/1000?hdr=content-type:Image/SVG%2Bxml", True, True)
    # no-transform, an existing content-encoding: not compressible
    check(f"/bytes/1000?{TEXT}&hdr=cache-control:public,%20No-Transform", False, False)
    check(f"/bytes/1000?{TEXT}&hdr=content-encoding:br", False, False)
    # a strong ETag goes with compression, a weak one stays
    _, h, _ = check(f"/bytes/1000?{TEXT}&hdr=etag:%22v1%22", True, True)
    assert "etag" not in h
    _, h, _ = check(f"/bytes/1000?{TEXT}&hdr=etag:W/%22v1%22", True, True)
    assert h["etag"] == 'W/"v1"'
    # vary joins what is there (compared exactly, as Envoy does)
    _, h, _ = check(f"/bytes/1000?{TEXT}&hdr=vary:origin", True, False)
    assert h["vary"] == "origin, accept-encoding"
    _, h, _ = check(f"/bytes/1000?{TEXT}&hdr=vary:origin,accept-encoding", True, False)
    assert h["vary"] == "origin,accept-encoding"
    # no body (headers with the end of stream): HEAD, 204 and 304 are not
    # compressed and keep their headers; as in Envoy, vary still goes on
    # those that pass the other tests (204 and 304 have no content type)
    st, h, body = check(f"/bytes/1000?{TEXT}", False, True, method="HEAD")
    assert h["content-length"] == "1000" and body == b""
    st, h, _ = check("/status/204", False, True)
    assert st == 204
    st, h, _ = check("/status/304", False, True)
    assert st == 304
    st, h, _ = check("/status/204?hdr=content-type:image/png", False, False)


def test_disable_on_etag_header(procs, upstream):
    listen, admin = start(procs, compressor(extra="response_direction_config:\n  disable_on_etag_header: true"),
                          upstream.port)
    st, h, body = get(listen, f"/bytes/1000?{TEXT}&hdr=etag:W/%22v1%22")
    assert "content-encoding" not in h and "vary" not in h and h["etag"] == 'W/"v1"'
    assert stat(admin, f"{PREFIX}.text.gzip.not_compressed_etag") == 1
    st, h, body = get(listen, f"/bytes/1000?{TEXT}")
    assert h["content-encoding"] == "gzip"


def test_uncompressible_response_codes(procs, upstream):
    """response_direction_config.uncompressible_response_codes: a response
    with a listed status is not compressed and, as in Envoy (the code test
    is part of isCompressible), gets no vary; other statuses are."""
    listen, admin = start(procs, compressor(extra="response_direction_config:\n"
                                                  "  common_config: { min_content_length: 5 }\n"
                                                  "  uncompressible_response_codes: [206, 404]"), upstream.port)
    p = "hdr=content-type:text/plain"
    for code, compressed in ((206, False), (404, False), (200, True), (203, True), (500, True)):
        st, h, body = get(listen, f"/status/{code}?{p}")
        assert st == code
        assert (h.get("content-encoding") == "gzip") == compressed, (code, h)
        assert (h.get("vary") == "accept-encoding") == compressed, (code, h)
        assert (decode("gzip", body) if compressed else body) == f"status {code}\n".encode()
    assert stat(admin, f"{PREFIX}.text.gzip.response.compressed") == 3
    assert stat(admin, f"{PREFIX}.text.gzip.response.not_compressed") == 2
    # the bigger bodies of the other tests: /bytes is a 200
    st, h, body = get(listen, f"/bytes/1000?{TEXT}")
    assert h["content-encoding"] == "gzip" and decode("gzip", body) == pattern(1000)


@pytest.mark.parametrize("codes,expect", [
    ("[199]", "uncompressible_response_codes[0]: 199 must be in [200, 600)"),
    ("[206, 600]", "uncompressible_response_codes[1]: 600 must be in [200, 600)"),
    ("[206, 404, 206]", "uncompressible_response_codes[2]: 206 is repeated"),
])
def test_uncompressible_response_codes_rules(codes, expect):
    rc, out = validate_config(config_with(compressor(extra="response_direction_config:\n"
                                                           f"  uncompressible_response_codes: {codes}")))
    assert rc != 0 and expect in out, out
    rc, out = validate_config(config_with(compressor(extra="response_direction_config:\n"
                                                           "  uncompressible_response_codes: [200, 599]")))
    assert rc == 0, out


def test_content_type_list(procs, upstream):
    listen, _ = start(procs, compressor(extra="response_direction_config:\n"
                                              "  common_config: { content_type: [application/octet-stream] }"),
                      upstream.port)
    assert get(listen, "/bytes/1000")[1].get("content-encoding") == "gzip"
    assert "content-encoding" not in get(listen, f"/bytes/1000?{TEXT}")[1]


def test_remove_accept_encoding_header(procs, upstream):
    """The upstream sees no Accept-Encoding when the filter removes it (and
    compression still follows the client's)."""
    for remove in (True, False):
        listen, _ = start(procs, compressor(extra="response_direction_config:\n"
                                                  f"  remove_accept_encoding_header: {str(remove).lower()}\n"
                                                  "  common_config: { content_type: [application/json] }"),
                          upstream.port)
        st, h, body = get(listen, "/echo", ae="gzip, br")
        names = [k.lower() for k, _ in json.loads(decode("gzip", body))["headers"]]
        assert ("accept-encoding" in names) != remove
        assert h["content-encoding"] == "gzip"


def runtime_modify(admin, **kv):
    q = "&".join(f"{k}={v}" for k, v in kv.items())
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{admin}/runtime_modify?{q}",
                                                       method="POST"), timeout=5) as r:
        assert r.status == 200


ADMIN_LAYER = "layered_runtime:\n  layers:\n  - name: admin\n    admin_layer: {}\n"


def test_response_enabled_runtime_flag(procs, upstream):
    """common_config.enabled: off by default here, switched on at runtime;
    while off, Accept-Encoding also reaches the upstream despite
    remove_accept_encoding_header."""
    listen, admin = start(procs, compressor(extra="response_direction_config:\n"
                                                  "  remove_accept_encoding_header: true\n"
                                                  "  common_config:\n"
                                                  "    content_type: [application/json]\n"
                                                  "    enabled: { default_value: false, runtime_key: comp.on }"),
                          upstream.port, top=ADMIN_LAYER)
    st, h, body = get(listen, "/echo")
    assert "content-encoding" not in h and "vary" not in h
    assert "accept-encoding" in [k.lower() for k, _ in json.loads(body)["headers"]]
    assert stat(admin, f"{PREFIX}.text.gzip.response.not_compressed") == 1
    runtime_modify(admin, **{"comp.on": "true"})
    st, h, body = get(listen, "/echo")
    assert h["content-encoding"] == "gzip"
    assert "accept-encoding" not in [k.lower() for k, _ in json.loads(decode("gzip", body))["headers"]]


def test_deprecated_response_fields(procs, upstream):
    """Without response_direction_config the deprecated top-level fields
    decide, and the response stats have no "response." segment."""
    extra = ("content_length: 200\ncontent_type: [text/css]\ndisable_on_etag_header: true\n"
             "remove_accept_encoding_header: true\n"
             "runtime_enabled: { default_value: true, runtime_key: comp.legacy }")
    listen, admin = start(procs, compressor(extra=extra), upstream.port, top=ADMIN_LAYER)
    css = "hdr=content-type:text/css"
    assert get(listen, f"/bytes/300?{css}")[1]["content-encoding"] == "gzip"
    assert "content-encoding" not in get(listen, f"/bytes/150?{css}")[1]  # content_length
    assert "content-encoding" not in get(listen, f"/bytes/300?{TEXT}")[1]  # content_type
    assert "content-encoding" not in get(listen, f"/bytes/300?{css}&hdr=etag:W/x")[1]  # disable_on_etag_header
    st, h, body = get(listen, f"/echo?hdr=content-type:text/css")
    assert "accept-encoding" not in [k.lower() for k, _ in json.loads(decode("gzip", body))["headers"]]
    runtime_modify(admin, **{"comp.legacy": "false"})
    assert "content-encoding" not in get(listen, f"/bytes/300?{css}")[1]  # runtime_enabled
    assert stat(admin, f"{PREFIX}.text.gzip.compressed") == 2
    assert stat(admin, f"{PREFIX}.text.gzip.content_length_too_small") == 1
    assert stat(admin, f"{PREFIX}.text.gzip.not_compressed_etag") == 1
    assert stat(admin, f"{PREFIX}.text.gzip.response.compressed") is None


# ---- several compressor filters ---------------------------------------------------------------

ISTIO = "/work/shared/envoy-corpus/istio__pkg__bootstrap__testdata__default_golden.json"


def istio_compressors():
    """The compressor filters of the Istio corpus bootstrap's Prometheus
    listener, as YAML (JSON is YAML)."""
    path = ISTIO
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "envoy-corpus",
                            os.path.basename(ISTIO))
    with open(path) as f:
        boot = json.load(f)
    found = []

    def walk(o):
        if isinstance(o, dict):
            if "http_filters" in o and not found:
                found.extend(x for x in o["http_filters"] if x["name"].startswith("envoy.filters.http.compressor"))
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(boot)
    assert [f["name"] for f in found] == ["envoy.filters.http.compressor.brotli", "envoy.filters.http.compressor.zstd",
                                          "envoy.filters.http.compressor.gzip"]
    return "".join("- " + json.dumps(f) + "\n" for f in found)


@protos("h1", "h2-down")
def test_istio_compressor_chain(procs, proto):
    """Istio's brotli, zstd and gzip filters load as Istio writes them; the
    client's preference picks one, the others count themselves
    overshadowed; with "*" the first registered (brotli) compresses."""
    u = proto.upstream(procs)
    listen, admin = start(procs, istio_compressors(), u.port, proto)
    n = 100000
    for ae, enc in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"), ("gzip;q=0.5, zstd;q=0.8", "zstd"),
                    ("gzip, br", "gzip"), ("*", "br"), ("deflate", None)]:
        st, h, body = proto.request(listen, f"/bytes/{n}?hdr=content-type:application/openmetrics-text",
                                    headers={"accept-encoding": ae})
        assert st == 200
        assert h.get("content-encoding") == enc, (ae, h)
        assert (decode(enc, body) if enc else body) == pattern(n)
    # text/html is not among Istio's types: nobody compresses it
    st, h, _ = proto.request(listen, f"/bytes/{n}?hdr=content-type:text/html", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in h
    assert stat(admin, f"{PREFIX}.stats_gzip.gzip.response.compressed") == 2
    assert stat(admin, f"{PREFIX}.stats_brotli.brotli.response.compressed") == 2
    assert stat(admin, f"{PREFIX}.stats_zstd.zstd.response.compressed") == 2
    # gzip lost to br, zstd and zstd;q=0.8; "deflate" and text/html (no
    # candidate left) are not valid
    assert stat(admin, f"{PREFIX}.stats_gzip.gzip.header_compressor_overshadowed") == 3
    assert stat(admin, f"{PREFIX}.stats_brotli.brotli.header_wildcard") == 1
    assert stat(admin, f"{PREFIX}.stats_zstd.zstd.header_not_valid") == 2


def test_choose_first(procs, upstream):
    """Equal q-values go to the first entry, unless a filter has
    choose_first; content types narrow the candidates."""
    plain = compressor("br", name="b") + compressor("gzip", name="g")
    listen, _ = start(procs, plain, upstream.port)
    assert get(listen, f"/bytes/1000?{TEXT}", "br, gzip")[1]["content-encoding"] == "br"
    listen, _ = start(procs, compressor("br", name="b") + compressor("gzip", name="g", extra="choose_first: true"),
                      upstream.port)
    assert get(listen, f"/bytes/1000?{TEXT}", "br, gzip")[1]["content-encoding"] == "gzip"
    assert get(listen, f"/bytes/1000?{TEXT}", "br;q=1, gzip;q=0.9")[1]["content-encoding"] == "br"
    # br takes only text/css: for text/plain gzip is the only candidate, even
    # where the client prefers br
    narrow = compressor("br", name="b", extra="response_direction_config:\n  common_config: "
                                              "{ content_type: [text/css] }") + compressor("gzip", name="g")
    listen, _ = start(procs, narrow, upstream.port)
    assert get(listen, f"/bytes/1000?{TEXT}", "br;q=1, gzip;q=0.5")[1]["content-encoding"] == "gzip"
    assert get(listen, "/bytes/1000?hdr=content-type:text/css", "br;q=1, gzip;q=0.5")[1]["content-encoding"] == "br"


# ---- trailers, local replies -----------------------------------------------------------------------

def test_h2_trailers_follow_the_compressed_body(procs):
    proto = PROTOS["h2-both"]
    u = proto.upstream(procs)
    listen, _ = start(procs, compressor(), u.port, proto)
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                       (":path", f"/bytes/50000?{TEXT}&trailers=1"), ("accept-encoding", "gzip")], end_stream=True)
    s.sendall(c.data_to_send())
    body, trailers, headers, done = b"", None, None, False
    while not done:
        for ev in c.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.ResponseReceived):
                headers = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, h2.events.TrailersReceived):
                trailers = dict(ev.headers)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
        s.sendall(c.data_to_send())
    s.close()
    assert headers["content-encoding"] == "gzip"
    assert trailers == {"x-trailer": "done"}
    assert decode("gzip", body) == pattern(50000)


@pytest.mark.parametrize("with_trailers", [True, False], ids=["trailers", "no-trailers"])
def test_h2_trailers_pass_a_decompressor_after_the_compressor(procs, with_trailers):
    """A decompressor (first in the chain) decoding the compressor's own
    output: the compressor's last bytes come with the end of the response
    while trailers follow. The decompressor passes those bytes on itself;
    the trailers must still reach it and the client (the stream ends)."""
    proto = PROTOS["h2-both"]
    u = proto.upstream(procs)
    dec = """\
- name: envoy.filters.http.decompressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
    decompressor_library:
      name: gz
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip
        max_inflate_ratio: 1032
"""
    listen, _ = start(procs, dec + compressor(), u.port, proto)
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                       (":path", f"/bytes/50000?{TEXT}" + ("&trailers=1" if with_trailers else "")),
                       ("accept-encoding", "gzip")], end_stream=True)
    s.sendall(c.data_to_send())
    body, trailers, headers, done = b"", None, None, False
    try:
        while not done:
            data = s.recv(65536)
            assert data, "connection closed before the stream ended"
            for ev in c.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
            s.sendall(c.data_to_send())
    except socket.timeout:
        pass
    s.close()
    assert done, f"the response never ended ({len(body)} body bytes, trailers {trailers})"
    assert headers[":status"] == "200" and "content-encoding" not in headers
    assert len(body) == 50000 and body == pattern(50000), (len(body), body[:40], pattern(50000)[:40])
    # the upstream's trailers (if any) and the decompressor's byte counts
    assert trailers.get("x-trailer") == ("done" if with_trailers else None), trailers
    assert "x-envoy-decompressor-gz-compressed-bytes" in trailers


def test_local_reply_is_compressed(procs, upstream):
    """A direct response goes through the filter like any response."""
    text = "x" * 200
    routes = (f'- match: {{ prefix: "/direct" }}\n  direct_response: {{ status: 200, body: {{ inline_string: "{text}" }} }}\n'
              '- match: { prefix: "/" }\n  route: { cluster: backend }\n')
    listen, _ = start(procs, compressor(), upstream.port, routes=routes)
    st, h, body = get(listen, "/direct")
    assert h["content-encoding"] == "gzip"
    assert decode("gzip", body) == text.encode()


# ---- request compression ---------------------------------------------------------------------------

class BodyEcho:
    """An in-process HTTP/1.1 upstream answering each request with its body
    (application/octet-stream, which no default list compresses) and the
    request headers in x-got-* headers."""

    def __init__(self):
        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        data += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    data = self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/octet-stream")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-got-content-encoding", self.headers.get("content-encoding", "-"))
                self.send_header("x-got-content-length", self.headers.get("content-length", "-"))
                self.end_headers()
                self.wfile.write(data)

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
def body_echo():
    e = BodyEcho()
    yield e
    e.close()


REQ = """\
request_direction_config:
  common_config:
    min_content_length: 100
    content_type: [text/plain]
    enabled: { default_value: true, runtime_key: comp.req }
"""


@pytest.mark.parametrize("down", ["h1", "h2"])
def test_request_body_compressed(procs, body_echo, down):
    """request_direction_config: a listed request body goes upstream
    compressed (content-encoding set, content-length removed), in pieces as
    it arrives; the rest goes as it is; the runtime flag switches it."""
    listen, admin = start(procs, compressor(extra=REQ), body_echo.port, top=ADMIN_LAYER)
    req = h2_request if down == "h2" else h1_request
    data = pattern(500000)
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    st, h, body = req(listen, "/up", method="POST", headers={"content-type": "text/plain"}, chunks=chunks)
    assert st == 200
    assert h["x-got-content-encoding"] == "gzip" and h["x-got-content-length"] == "-"
    assert decode("gzip", body) == data
    s = stats(admin, ["request.compressed", "request.total_uncompressed_bytes", "request.total_compressed_bytes"])
    assert s == {"request.compressed": 1, "request.total_uncompressed_bytes": len(data),
                 "request.total_compressed_bytes": len(body)}
    # with a content-length below min_content_length, another type, or an
    # encoding already: as it is
    for hdrs, payload in [({"content-type": "text/plain"}, b"y" * 99),
                          ({"content-type": "application/json"}, b"y" * 1000),
                          ({"content-type": "text/plain", "content-encoding": "br"}, b"y" * 1000)]:
        # (the HTTP/2 client sends no content-length of its own)
        st, h, body = req(listen, "/up", method="POST", headers={**hdrs, "content-length": str(len(payload))},
                          body=payload)
        assert body == payload and h["x-got-content-encoding"] == hdrs.get("content-encoding", "-")
    assert stat(admin, f"{PREFIX}.text.gzip.request.content_length_too_small") == 1
    assert stat(admin, f"{PREFIX}.text.gzip.request.not_compressed") == 3
    runtime_modify(admin, **{"comp.req": "false"})
    st, h, body = req(listen, "/up", method="POST", headers={"content-type": "text/plain"}, body=data)
    assert body == data and h["x-got-content-encoding"] == "-"


def test_request_trailers_end_the_compressed_body(procs):
    """An HTTP/2 request with trailers: the compressor's last bytes go
    before the trailers; the upstream (HTTP/2) gets the whole stream."""
    proto = PROTOS["h2-both"]
    u = proto.upstream(procs)
    listen, admin = start(procs, compressor(extra=REQ), u.port, proto)
    import h2.config
    import h2.connection
    import h2.events
    data = pattern(200000)
    s = socket.create_connection(("127.0.0.1", listen), timeout=10 * SLOW)
    c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    c.initiate_connection()
    c.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/echo"),
                       ("content-type", "text/plain")])
    c.increment_flow_control_window(1 << 24)
    sent = 0
    body, done = b"", False
    while not done:
        while sent < len(data) and c.local_flow_control_window(1) > 0:
            n = min(c.local_flow_control_window(1), c.max_outbound_frame_size, len(data) - sent)
            c.send_data(1, data[sent:sent + n])
            sent += n
        if sent == len(data):
            c.send_headers(1, [("x-t", "1")], end_stream=True)
            sent += 1
        s.sendall(c.data_to_send())
        for ev in c.receive_data(s.recv(65536)):
            if isinstance(ev, h2.events.DataReceived):
                body += ev.data
                c.acknowledge_received_data(ev.flow_controlled_length, 1)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
        s.sendall(c.data_to_send())
    s.close()
    echo = json.loads(body)
    hdrs = {k: v for k, v in echo["headers"]}
    assert hdrs["content-encoding"] == "gzip" and "content-length" not in hdrs
    assert echo["trailers"] == [["x-t", "1"]]
    assert echo["body_bytes"] == stat(admin, f"{PREFIX}.text.gzip.request.total_compressed_bytes")
    assert stat(admin, f"{PREFIX}.text.gzip.request.total_uncompressed_bytes") == len(data)


# ---- configuration ---------------------------------------------------------------------------------

def test_stats_names(procs, upstream):
    """Envoy's names: <stat_prefix>compressor.<library name>.<library>.,
    request.* always, response.* with response_direction_config."""
    listen, admin = start(procs, compressor("br", name="web", extra="response_direction_config: {}"),
                          upstream.port)
    get(listen, f"/bytes/100?{TEXT}", "br")
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5).read().decode()
    names = sorted(ln.split(":")[0] for ln in text.splitlines() if ".compressor." in ln)
    assert names == sorted(f"{PREFIX}.web.brotli.{n}" for n in [
        "header_compressor_overshadowed", "header_compressor_used", "header_identity", "header_not_valid",
        "header_wildcard", "no_accept_header", "not_compressed_etag",
        "request.compressed", "request.content_length_too_small", "request.not_compressed",
        "request.total_compressed_bytes", "request.total_uncompressed_bytes",
        "response.compressed", "response.content_length_too_small", "response.not_compressed",
        "response.total_compressed_bytes", "response.total_uncompressed_bytes"])
    assert stat(admin, f"{PREFIX}.web.brotli.response.compressed") == 1
    assert stat(admin, f"{PREFIX}.web.brotli.request.not_compressed") == 1


def config_with(filters):
    y = bootstrap_yaml(10000, 10001, {"backend": [10002]})
    return with_filters(y, filters)


@pytest.mark.parametrize("filters,expect", [
    (compressor(lib_yaml="window_bits: 8"), "window_bits"),
    (compressor(lib_yaml="memory_level: 10"), "memory_level"),
    (compressor(lib_yaml="chunk_size: 1024"), "chunk_size"),
    (compressor(lib_yaml="compression_level: 42"), "compression_level"),
    (compressor("br", lib_yaml="quality: 12"), "quality"),
    (compressor("br", lib_yaml="input_block_bits: 25"), "input_block_bits"),
    (compressor("zstd", lib_yaml="dictionary: { inline_string: abc }"), "zstd dictionaries"),
    (compressor("zstd", lib_yaml="chunk_size: 70000"), "chunk_size"),
    ("- name: c\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3."
     "Compressor\n    response_direction_config: {}\n", "compressor_library"),
    ("- name: c\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3."
     "Compressor\n    compressor_library:\n      name: d\n      typed_config:\n        \"@type\": type.googleapis.com/"
     "envoy.extensions.compression.gzip.decompressor.v3.Gzip\n", "decompressor"),
    ("- name: c\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.compressor.v3."
     "Compressor\n    compressor_library:\n      name: \"\"\n      typed_config:\n        \"@type\": type.googleapis.com/"
     "envoy.extensions.compression.gzip.compressor.v3.Gzip\n", "name"),
])
def test_bad_configs_are_refused(filters, expect):
    rc, out = validate_config(config_with(filters))
    assert rc != 0 and expect in out, out


def test_per_route_config_validates():
    """CompressorPerRoute loads (its effect: test_per_route_config.py)."""
    y = bootstrap_yaml(10000, 10001, {"backend": [10002]},
                       vhost_extra="typed_per_filter_config:\n  envoy.filters.http.compressor:\n    \"@type\": "
                                   "type.googleapis.com/envoy.extensions.filters.http.compressor.v3."
                                   "CompressorPerRoute\n    disabled: true\n")
    rc, out = validate_config(with_filters(y, compressor()))
    assert rc == 0, out


def test_good_config_validates():
    full = compressor(lib_yaml="memory_level: 9\nwindow_bits: 15\ncompression_level: COMPRESSION_LEVEL_4\n"
                               "compression_strategy: FILTERED\nchunk_size: 65536",
                      extra="choose_first: true\n" + REQ + "response_direction_config:\n  disable_on_etag_header: true")
    full += compressor("br", name="b", lib_yaml="quality: 11\nencoder_mode: TEXT\nwindow_bits: 24\n"
                                                "input_block_bits: 16\nchunk_size: 4096\n"
                                                "disable_literal_context_modeling: true")
    full += compressor("zstd", name="z", lib_yaml="compression_level: 19\nenable_checksum: true\nstrategy: BTULTRA2\n"
                                                  "chunk_size: 8192")
    rc, out = validate_config(config_with(full))
    assert rc == 0, out


DOCS_EXAMPLE = "/work/shared/envoy-corpus/envoy-main__docs__root__configuration__http__http_filters___include__compressor-filter.yaml"


def test_docs_example_unknown_field():
    """Envoy's documentation example puts `uncompressible_response_code:`
    (empty) in CommonDirectionConfig, a field Envoy does not have there
    (its `uncompressible_response_codes` belongs to ResponseDirectionConfig,
    test_uncompressible_response_codes): the config is refused naming
    the field and its message, as Envoy's loader refuses unknown fields.
    Without that line the example loads."""
    if not os.path.exists(DOCS_EXAMPLE):
        pytest.skip("corpus not present")
    text = open(DOCS_EXAMPLE).read()
    rc, out = validate_config(text)
    assert rc != 0
    assert ('unknown field "uncompressible_response_code" in '
            'envoy.extensions.filters.http.compressor.v3.Compressor.CommonDirectionConfig') in out, out
    fixed = "".join(ln for ln in text.splitlines(True) if "uncompressible_response_code" not in ln)
    rc, out = validate_config(fixed)
    assert rc == 0, out
