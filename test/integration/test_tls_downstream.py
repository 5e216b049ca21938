"""TLS termination on listeners (a filter chain's transport_socket with a
DownstreamTlsContext): real clients (curl, openssl s_client, nghttp,
Python's ssl) against SHARP with certificates made at test time by the
openssl CLI; Envoy's listener.<address>.ssl.* stats, ALPN codec selection,
x-forwarded-proto, the access log's TLS operators, backpressure and hostile
clients."""
import json
import os
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import (SLOW, TLS_HOST, admin_get, bootstrap_yaml, file_access_log, free_port, log_lines, run_sharp_config,
                      stat, validate_config)

DS_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HOST = TLS_HOST


def tls_context(pki, certs=("rsa",), client_ca=False, require=False, alpn=("h2", "http/1.1"), **extra):
    common = {"tls_certificates": [{"certificate_chain": {"filename": f"{pki}/{c}.crt"},
                                    "private_key": {"filename": f"{pki}/{c}.key"}} for c in certs]}
    if alpn:
        common["alpn_protocols"] = list(alpn)
    if client_ca:
        common["validation_context"] = {"trusted_ca": {"filename": f"{pki}/ca.crt"}}
    ctx = {"@type": DS_TLS, "common_tls_context": common}
    if require:
        ctx["require_client_certificate"] = True
    ctx.update(extra)
    return ctx


def with_tls(text, ctx):
    """The bootstrap's (first) filter chain with a TLS transport socket."""
    ts = "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ctx) + "}"
    out = text.replace("    filter_chains:\n    - filters:\n", f"    filter_chains:\n    - {ts}\n      filters:\n", 1)
    assert out != text
    return out


class Tls:
    pass


def start(procs, upstream, pki, ctx=None, hcm_extra="", listener_extra="", routes=None, vhost_extra="", **kw):
    t = Tls()
    t.listen, t.admin, t.pki = free_port(), free_port(), pki
    text = bootstrap_yaml(t.listen, t.admin, {"app": [upstream.port]}, hcm_extra=hcm_extra,
                          listener_extra=listener_extra, routes=routes, vhost_extra=vhost_extra)
    t.sharp = run_sharp_config(procs, with_tls(text, ctx or tls_context(pki, **kw)), t.admin)
    t.prefix = f"listener.127.0.0.1_{t.listen}.ssl."
    return t


def ssl_stat(t, name):
    return stat(t.admin, t.prefix + name)


def wait_ssl_stat(t, name, want, timeout=5):
    deadline = time.time() + timeout * SLOW
    v = None
    while time.time() < deadline:
        v = ssl_stat(t, name)
        if v == want:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{t.prefix}{name} = {v}, want {want}")


def curl(t, path, *args, host=HOST, timeout=20):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout * SLOW), "--cacert", f"{t.pki}/ca.crt",
                        "--resolve", f"{host}:{t.listen}:127.0.0.1", *args, f"https://{host}:{t.listen}{path}"],
                       capture_output=True, timeout=timeout * SLOW + 10)
    return r


def s_client(t, *args, data=b"", servername=HOST, timeout=10):
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{t.listen}", "-CAfile", f"{t.pki}/ca.crt", *args]
    if servername:
        cmd += ["-servername", servername]
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout * SLOW)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def py_client(t, cert=None, server_hostname=HOST, alpn=None):
    ctx = ssl.create_default_context(cafile=f"{t.pki}/ca.crt")
    if cert:
        ctx.load_cert_chain(f"{t.pki}/{cert}.crt", f"{t.pki}/{cert}.key")
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", t.listen), timeout=10 * SLOW)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def read_all(s):
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (ssl.SSLError, ConnectionError, socket.timeout):
        pass
    return data


GET_CLOSE = b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"


# ---- termination, ALPN, x-forwarded-proto ----

def test_http1_and_http2_by_alpn_with_stats(procs, upstream, pki):
    t = start(procs, upstream, pki)
    r = curl(t, "/echo", "--http1.1", "-i")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("HTTP/1.1 200"), out
    body = json.loads(out.split("\r\n\r\n", 1)[1])
    hdrs = {k.lower(): v for k, v in body["headers"]}
    assert hdrs["x-forwarded-proto"] == "https", hdrs
    r = curl(t, "/echo", "--http2", "-i")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("HTTP/2 200"), out
    hdrs = {k.lower(): v for k, v in json.loads(out.split("\r\n\r\n", 1)[1])["headers"]}
    assert hdrs["x-forwarded-proto"] == "https", hdrs
    wait_ssl_stat(t, "handshake", 2)
    assert stat(t.admin, "http.ingress_http.downstream_cx_http1_total") == 1
    assert stat(t.admin, "http.ingress_http.downstream_cx_http2_total") == 1
    assert ssl_stat(t, "versions.TLSv1.3") == 2
    assert ssl_stat(t, "ciphers.TLS_AES_128_GCM_SHA256") == 2
    assert ssl_stat(t, "curves.X25519") == 2
    assert ssl_stat(t, "no_certificate") == 2
    assert ssl_stat(t, "connection_error") == 0
    # TLS 1.2 is counted under its own version and cipher
    r = curl(t, "/", "--http1.1", "--tls-max", "1.2")
    assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    wait_ssl_stat(t, "handshake", 3)
    assert ssl_stat(t, "versions.TLSv1.2") == 1
    assert ssl_stat(t, "ciphers.ECDHE-RSA-AES128-GCM-SHA256") == 1


def test_nghttp_over_tls(procs, upstream, pki):
    t = start(procs, upstream, pki)
    r = subprocess.run(["nghttp", "-v", f"https://127.0.0.1:{t.listen}/bytes/100000"],
                       capture_output=True, timeout=20 * SLOW)
    out = r.stdout.decode(errors="replace")
    # nghttp does not verify; what matters is h2 over ALPN end to end
    assert "negotiated protocol: h2" in out, out
    assert ":status: 200" in out, out
    assert stat(t.admin, "http.ingress_http.downstream_cx_http2_total") == 1


def test_alpn_picks_the_codec_and_without_alpn_auto_sniffs(procs, upstream, pki):
    """codec_type AUTO: ALPN "h2" is HTTP/2 and "http/1.1" HTTP/1, with no
    preface sniffing; a client without ALPN gets the preface sniffed."""
    t = start(procs, upstream, pki)
    # ALPN http/1.1 but the HTTP/2 preface: HTTP/1 parses it and refuses it
    s = py_client(t, alpn=["http/1.1"])
    assert s.selected_alpn_protocol() == "http/1.1"
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    data = read_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 "), data
    # no ALPN: the preface decides (HTTP/1 here)
    s = py_client(t)
    assert s.selected_alpn_protocol() is None
    s.sendall(GET_CLOSE)
    data = read_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data
    # no ALPN and the h2 preface: HTTP/2 (nghttp with prior knowledge over TLS is
    # not possible, so the curl ALPN case covers h2; the preface answer is a SETTINGS frame)
    s = py_client(t)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    first = s.recv(9)
    s.close()
    assert len(first) == 9 and first[3] == 0x04, first  # SETTINGS
    assert stat(t.admin, "http.ingress_http.downstream_cx_http2_total") == 1
    assert stat(t.admin, "http.ingress_http.downstream_cx_http1_total") == 2


def test_ecdsa_and_rsa_certificates_follow_the_client(procs, upstream, pki):
    t = start(procs, upstream, pki, certs=("rsa", "ecdsa"))
    out = s_client(t, "-sigalgs", "ECDSA+SHA256", data=b"")
    assert "CN = ecdsa www" in out and "Verify return code: 0 (ok)" in out, out
    out = s_client(t, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256", data=b"")
    assert "CN = rsa www" in out and "Verify return code: 0 (ok)" in out, out


def test_tls13_suites_in_boringssls_order(procs, upstream, pki):
    """TLS 1.3's suites are Envoy's (BoringSSL's): AES-128-GCM before
    AES-256-GCM whatever the client's order, ChaCha20-Poly1305 for a
    client that lists it first (no AES instructions), and a client that
    offers one suite only gets it; cipher_suites (TLS 1.2) leaves them be."""
    ctx = tls_context(pki)
    ctx["common_tls_context"]["tls_params"] = {"cipher_suites": ["ECDHE-RSA-AES256-GCM-SHA384"]}
    t = start(procs, upstream, pki, ctx=ctx)
    want = {"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384"}
    for offer, suite in want.items():
        out = s_client(t, "-ciphersuites", offer, data=b"")
        assert f"Cipher is {suite}" in out, (offer, out)
    out = s_client(t, "-tls1_2", data=b"")
    assert "Cipher is ECDHE-RSA-AES256-GCM-SHA384" in out, out
    wait_ssl_stat(t, "ciphers.TLS_AES_128_GCM_SHA256", 1)


def test_sni_selects_the_certificate_and_is_logged(procs, upstream, pki):
    al, path = file_access_log("%REQUESTED_SERVER_NAME% %DOWNSTREAM_LOCAL_SUBJECT%\\n")
    t = start(procs, upstream, pki, certs=("rsa", "other"), hcm_extra=al)
    req = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    out = s_client(t, "-ign_eof", servername="other.test", data=req)
    assert "CN = other" in out and "hello from upstream" in out, out
    out = s_client(t, "-ign_eof", servername=HOST, data=req)
    assert "CN = rsa www" in out and "hello from upstream" in out, out
    out = s_client(t, "-ign_eof", "-noservername", servername=None, data=req)
    assert "CN = rsa www" in out and "hello from upstream" in out, out
    lines = log_lines(path, 3)  # two workers: in any order
    assert sorted(lines) == ["- CN=rsa www", "other.test CN=other", "www.example.com CN=rsa www"], lines


# ---- client certificates ----

def test_mutual_tls_accepted_and_logged(procs, upstream, pki):
    al, path = file_access_log("%DOWNSTREAM_PEER_URI_SAN%|%DOWNSTREAM_PEER_SUBJECT%|%DOWNSTREAM_TLS_VERSION%|"
                               "%DOWNSTREAM_TLS_CIPHER%|%REQUESTED_SERVER_NAME%\\n")
    t = start(procs, upstream, pki, client_ca=True, require=True, hcm_extra=al)
    r = curl(t, "/", "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
    assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    r = curl(t, "/", "--tls-max", "1.2", "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
    assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    lines = sorted(log_lines(path, 2), key=lambda ln: "TLSv1.3" not in ln)  # two workers: in any order
    assert lines[0] == "spiffe://example/client|O=Example,CN=client|TLSv1.3|TLS_AES_128_GCM_SHA256|" + HOST, lines
    assert lines[1] == ("spiffe://example/client|O=Example,CN=client|TLSv1.2|ECDHE-RSA-AES128-GCM-SHA256|"
                        + HOST), lines
    wait_ssl_stat(t, "handshake", 2)
    assert ssl_stat(t, "no_certificate") == 0


def test_sigalgs_count_the_client_certificate_signature(procs, upstream, pki):
    """listener.<address>.ssl.sigalgs.<name>: a server sees a peer signature
    only in a client certificate's CertificateVerify (an ECDSA P-256 key
    here, over TLS 1.3 and 1.2); clients without one count nothing."""
    t = start(procs, upstream, pki, client_ca=True)
    assert curl(t, "/").returncode == 0
    wait_ssl_stat(t, "handshake", 1)
    assert ".ssl.sigalgs." not in admin_get(t.admin, "/stats")
    for tls_max in ("1.3", "1.2"):
        r = curl(t, "/", "--tls-max", tls_max, "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
        assert r.returncode == 0, r
    wait_ssl_stat(t, "sigalgs.ecdsa_secp256r1_sha256", 2)
    assert ssl_stat(t, "handshake") == 3


@pytest.mark.parametrize("cert,counter", [(None, "fail_verify_no_cert"), ("stranger", "fail_verify_error"),
                                          ("expired", "fail_verify_error")])
def test_mutual_tls_refused(procs, upstream, pki, cert, counter):
    """A missing certificate, one from another CA and an expired one fail
    the handshake: no HTTP response, the connection closed, the failure
    counted (and not as connection_error)."""
    t = start(procs, upstream, pki, client_ca=True, require=True)
    try:
        s = py_client(t, cert=cert)
        s.sendall(GET_CLOSE)
        data = read_all(s)
        s.close()
    except (ssl.SSLError, ConnectionError):
        data = b""
    assert data == b"", data
    wait_ssl_stat(t, counter, 1)
    assert ssl_stat(t, "handshake") == 0
    assert ssl_stat(t, "connection_error") == 0
    assert stat(t.admin, "http.ingress_http.downstream_rq_total") == 0
    assert stat(t.admin, "cluster.app.upstream_rq_total") == 0


def test_optional_client_certificate(procs, upstream, pki):
    """A validation context without require_client_certificate: a client
    without a certificate is served and counted in no_certificate."""
    al, path = file_access_log("%DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_PEER_URI_SAN%\\n")
    t = start(procs, upstream, pki, client_ca=True, hcm_extra=al)
    r = curl(t, "/")
    assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    r = curl(t, "/", "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
    assert r.returncode == 0, r
    assert sorted(log_lines(path, 2)) == ["- -", "O=Example,CN=client spiffe://example/client"]
    wait_ssl_stat(t, "no_certificate", 1)
    assert ssl_stat(t, "handshake") == 2


# ---- sessions ----

@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_session_resumption(procs, upstream, pki, version):
    t = start(procs, upstream, pki)
    sess = os.path.join(tempfile.mkdtemp(prefix="sharp-sess-"), "s.pem")
    req = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    out = s_client(t, version, "-ign_eof", "-sess_out", sess, data=req)
    assert "hello from upstream" in out and "New, " in out, out
    out = s_client(t, version, "-ign_eof", "-sess_in", sess, data=req)
    assert "hello from upstream" in out and "Reused, " in out, out
    wait_ssl_stat(t, "handshake", 2)
    assert ssl_stat(t, "session_reused") == 1


# ---- hostile and slow clients ----

def test_plaintext_request_to_tls_listener(procs, upstream, pki):
    t = start(procs, upstream, pki)
    s = socket.create_connection(("127.0.0.1", t.listen), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    data = read_all(s)
    s.close()
    assert not data.startswith(b"HTTP/"), data  # at most a TLS alert
    wait_ssl_stat(t, "connection_error", 1)
    assert ssl_stat(t, "handshake") == 0
    assert stat(t.admin, "http.ingress_http.downstream_rq_total") == 0


def test_half_client_hello_closed_by_idle_timeout(procs, upstream, pki):
    t = start(procs, upstream, pki, hcm_extra="common_http_protocol_options: { idle_timeout: 1s }\n")
    # a real ClientHello, cut in half
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = out.read()
    s = socket.create_connection(("127.0.0.1", t.listen), timeout=10 * SLOW)
    s.sendall(hello[:len(hello) // 2])
    t0 = time.time()
    data = read_all(s)
    took = time.time() - t0
    s.close()
    assert data == b"" and 0.8 < took < 4 * SLOW, (data, took)
    assert stat(t.admin, "http.ingress_http.downstream_cx_idle_timeout") == 1
    assert ssl_stat(t, "handshake") == 0


def test_slow_request_headers_over_tls_timeout(procs, upstream, pki):
    """request_headers_timeout applies to the decrypted request: a client
    that completes the handshake and dribbles headers gets a 408."""
    t = start(procs, upstream, pki, hcm_extra="request_headers_timeout: 1s\n")
    s = py_client(t)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
    data = read_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data
    assert stat(t.admin, "http.ingress_http.downstream_rq_header_timeout") == 1


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_large_bodies_both_ways_and_slow_readers_bounded(procs, upstream, pki):
    limit = 64 * 1024
    t = start(procs, upstream, pki, listener_extra=f"per_connection_buffer_limit_bytes: {limit}\n",
              routes='- match: { prefix: "/" }\n  route: { cluster: app, timeout: 0s }\n')
    # 20 MB each way, checksummed, HTTP/1.1 and HTTP/2
    n = 20 * 1000 * 1000
    want = json.loads(curl(t, f"/bytes/{n}?checksum=1").stdout)
    for proto in ("--http1.1", "--http2"):
        r = curl(t, f"/bytes/{n}", proto, "-o", "-")
        assert r.returncode == 0 and len(r.stdout) == n, (r.returncode, len(r.stdout), r.stderr)
        assert r.stdout[:4] == bytes(((i * 31 + 7) & 0xff) for i in range(4))
        f = tempfile.NamedTemporaryFile(delete=False)
        f.write(r.stdout)
        f.close()
        up = curl(t, "/upload", proto, "--data-binary", f"@{f.name}", "-H", "content-type: application/octet-stream")
        os.unlink(f.name)
        assert up.returncode == 0 and json.loads(up.stdout) == want, up
    # 30 clients that ask for 50 MB each and do not read
    pid = t.sharp.p.pid
    base = rss_bytes(pid)
    socks = []
    for _ in range(30):
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        raw.connect(("127.0.0.1", t.listen))
        s = ssl.create_default_context(cafile=f"{pki}/ca.crt").wrap_socket(raw, server_hostname=HOST)
        s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nhost: x\r\n\r\n")
        socks.append(s)
    deadline = time.time() + 3 * SLOW
    peak = 0
    while time.time() < deadline:
        peak = max(peak, rss_bytes(pid) - base)
        time.sleep(0.2)
    assert stat(t.admin, "http.ingress_http.downstream_rq_active") == 30
    sent = stat(t.admin, "http.ingress_http.downstream_cx_tx_bytes_total")
    bound = 30 * (4 * limit + 256 * 1024) * (3 if SLOW > 1 else 1) + 64 * 1024 * 1024
    assert peak < bound, (peak, bound)
    assert sent < 30 * 50000000 // 10 + 2 * n, sent
    for s in socks:
        s.close()
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline and stat(t.admin, "http.ingress_http.downstream_cx_active") != 0:
        time.sleep(0.1)
    assert stat(t.admin, "http.ingress_http.downstream_cx_active") == 0


def test_close_notify_on_close(procs, upstream, pki):
    """connection: close: the response, then close_notify before the FIN
    (the client reads a clean TLS end, not a truncated stream)."""
    t = start(procs, upstream, pki)
    s = py_client(t)
    s.sendall(GET_CLOSE)
    data = b""
    while True:
        b = s.recv(65536)  # raises SSLEOFError on an EOF without close_notify
        if not b:
            break
        data += b
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data


def read_to_close_notify(s):
    data = b""
    while True:
        b = s.recv(65536)  # raises SSLEOFError on an EOF without close_notify
        if not b:
            return data
        data += b


def test_close_notify_with_the_last_response(procs, upstream, pki):
    """A response after which the connection closes carries close_notify
    right behind it (one write): HTTP/1.0 answered from its headers (a
    direct response, before llhttp reports the message end) or by the
    upstream; an HTTP/1.0 keep-alive connection is not ended by it."""
    routes = ('- match: { prefix: "/direct" }\n  direct_response: { status: 200, body: { inline_string: direct } }\n'
              '- match: { prefix: "/" }\n  route: { cluster: app }\n')
    t = start(procs, upstream, pki, routes=routes, alpn=("http/1.1",),
              hcm_extra="http_protocol_options: { accept_http_10: true }\n")
    for path in (b"/direct", b"/echo"):
        s = py_client(t)
        s.sendall(b"GET " + path + b" HTTP/1.0\r\nhost: x\r\n\r\n")
        data = read_to_close_notify(s)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data
        assert data.endswith(b"direct") if path == b"/direct" else b"\r\n\r\n" in data, data
    s = py_client(t)
    for path in (b"/direct", b"/direct", b"/echo"):
        s.sendall(b"GET " + path + b" HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(65536)
            assert b, f"the keep-alive connection ended after {head!r}"
            head += b
        assert head.startswith(b"HTTP/1.1 200"), head
        if path == b"/direct":
            while not head.endswith(b"direct"):
                head += s.recv(65536)
    s.close()


def test_drain_closes_idle_tls_connections(procs, upstream, pki):
    t = start(procs, upstream, pki, hcm_extra="drain_timeout: 0.5s\n")
    s = py_client(t)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    first = b""
    while not first.endswith(b"hello from upstream\n"):
        first += s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{t.admin}/drain_listeners?graceful",
                                                  method="POST"), timeout=5).read()
    t0 = time.time()
    rest = read_all(s)
    s.close()
    assert rest == b"" and time.time() - t0 < 5 * SLOW
    assert stat(t.admin, "http.ingress_http.downstream_cx_drain_close") == 1


# ---- filter chains ----

def test_tls_and_plaintext_chains_by_source_address(procs, upstream, pki):
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"app": [upstream.port]})
    start_chain = text.index("    - filters:\n")
    end_chain = text.index("  clusters:\n")
    chain = text[start_chain:end_chain]
    plain = chain.replace("    - filters:\n",
                          "    - filter_chain_match: { source_prefix_ranges: [{ address_prefix: 127.0.0.2, "
                          "prefix_len: 32 }] }\n      filters:\n", 1).replace("stat_prefix: ingress_http",
                                                                               "stat_prefix: plain")
    text = with_tls(text[:end_chain] + plain + text[end_chain:], tls_context(pki))
    run_sharp_config(procs, text, admin)
    t = Tls()
    t.listen, t.admin, t.pki, t.prefix = listen, admin, pki, f"listener.127.0.0.1_{listen}.ssl."
    r = curl(t, "/echo")
    assert r.returncode == 0, r
    hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
    assert hdrs["x-forwarded-proto"] == "https"
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", listen))
    s.sendall(GET_CLOSE)
    data = read_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert {k.lower(): v for k, v in body["headers"]}["x-forwarded-proto"] == "http"
    assert stat(admin, "http.plain.downstream_rq_total") == 1
    assert stat(admin, "http.ingress_http.downstream_rq_total") == 1
    assert ssl_stat(t, "handshake") == 1


def test_named_ssl_counters_are_each_listeners_own(procs, upstream, pki):
    """listener.<address>.ssl.versions/ciphers/curves.<name>: two TLS
    listeners of one worker, their handshakes interleaved, each counts its
    own (the names are looked up once, then by name and listener)."""
    a, b, admin = free_port(), free_port(), free_port()
    text = with_tls(bootstrap_yaml(a, admin, {"app": [upstream.port]}), tls_context(pki))
    start_l = text.index("  - name: ", text.index("  listeners:\n"))
    end_l = text.index("  clusters:\n")
    second = text[start_l:end_l].replace(f"port_value: {a}", f"port_value: {b}", 1)
    second = "  - name: second" + second[second.index("\n"):]
    assert f"port_value: {b}" in second
    run_sharp_config(procs, text[:end_l] + second + text[end_l:], admin, concurrency=1)
    ts = []
    for port in (a, b):
        t = Tls()
        t.listen, t.admin, t.pki, t.prefix = port, admin, pki, f"listener.127.0.0.1_{port}.ssl."
        ts.append(t)
    for t in (ts[0], ts[1], ts[0], ts[0], ts[1]):
        r = curl(t, "/", "--http1.1", "--tls-max", "1.3")
        assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    wait_ssl_stat(ts[0], "handshake", 3)
    wait_ssl_stat(ts[1], "handshake", 2)
    for t, n in ((ts[0], 3), (ts[1], 2)):
        assert ssl_stat(t, "versions.TLSv1.3") == n
        assert ssl_stat(t, "ciphers.TLS_AES_128_GCM_SHA256") == n
        assert ssl_stat(t, "curves.X25519") == n
    # a TLS 1.2 handshake on the second: its own version and cipher there only
    r = curl(ts[1], "/", "--http1.1", "--tls-max", "1.2")
    assert r.returncode == 0, r
    wait_ssl_stat(ts[1], "handshake", 3)
    assert ssl_stat(ts[1], "versions.TLSv1.2") == 1
    assert ssl_stat(ts[1], "ciphers.ECDHE-RSA-AES128-GCM-SHA256") == 1
    assert ssl_stat(ts[0], "versions.TLSv1.2") in (0, None)
    assert ssl_stat(ts[0], "versions.TLSv1.3") == 3


# ---- configuration ----

def test_config_errors_name_the_path(pki):
    text = bootstrap_yaml(10000, 9901, {"app": [8080]})
    ctx = tls_context(pki)
    ctx["common_tls_context"]["tls_certificates"][0]["certificate_chain"]["filename"] = "/nonexistent/x.crt"
    rc, out = validate_config(with_tls(text, ctx))
    assert rc == 1 and "filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]" \
        ".certificate_chain" in out and "/nonexistent/x.crt" in out, out
    ctx = tls_context(pki)
    ctx["common_tls_context"]["tls_certificates"] = []
    rc, out = validate_config(with_tls(text, ctx))
    assert rc == 1 and "No TLS certificates found for server context" in out, out
    rc, out = validate_config(with_tls(text, tls_context(pki, require=True)))
    assert rc == 1 and "require_client_certificate" in out, out
    ctx = tls_context(pki)
    ctx["ocsp_staple_policy"] = "MUST_STAPLE"
    rc, out = validate_config(with_tls(text, ctx))
    assert rc == 1 and "Required OCSP response is missing from TLS context" in out, out
    rc, out = validate_config(with_tls(text, tls_context(pki, certs=("rsa", "ecdsa", "other"))))
    assert rc == 0, out
    # a DownstreamTlsContext on a cluster is not plaintext
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"app": [8080]}, cluster_extra=(
        "transport_socket: {name: envoy.transport_sockets.tls, typed_config: "
        + json.dumps(tls_context(pki)) + "}\n")))
    assert rc == 1 and "transport_socket" in out, out


def test_http2_control_flood_over_tls(procs, upstream, pki):
    """The HTTP/2 codec counts a frame as sent once the TLS records that
    carry it are written, as it counts plaintext bytes in the clear: a TLS
    client that sends PINGs and never reads has its acknowledgements pile up
    until max_outbound_control_frames closes the connection
    (http2.outbound_control_flood), while one that reads is never cut."""
    from hyperframe.frame import PingFrame, SettingsFrame
    t = start(procs, upstream, pki, hcm_extra="http2_protocol_options: { max_outbound_control_frames: 100 }\n")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
    ping = PingFrame(0, opaque_data=b"abcdefgh").serialize()

    # a reading client: 300 PINGs, 50 at a time, all acknowledged
    s = py_client(t, alpn=["h2"])
    s.sendall(preface)
    got = b""
    for _ in range(6):
        s.sendall(ping * 50)
        deadline = time.time() + 5 * SLOW
        while got.count(b"\x00\x00\x08\x06\x01") < 50 and time.time() < deadline:
            got += s.recv(65536)
        got = got[got.rfind(b"\x00\x00\x08\x06\x01") + 17:] if got.count(b"\x00\x00\x08\x06\x01") >= 50 else got
    assert stat(t.admin, "http2.outbound_control_flood") == 0
    s.close()

    # a client that never reads, with a small receive buffer
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10 * SLOW)
    raw.connect(("127.0.0.1", t.listen))
    ctx = ssl.create_default_context(cafile=f"{t.pki}/ca.crt")
    ctx.set_alpn_protocols(["h2"])
    s = ctx.wrap_socket(raw, server_hostname=HOST)
    s.sendall(preface)
    try:
        for _ in range(100):
            s.sendall(ping * 100)
    except (OSError, ssl.SSLError):
        pass
    deadline = time.time() + 10 * SLOW
    while stat(t.admin, "http2.outbound_control_flood") < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert stat(t.admin, "http2.outbound_control_flood") == 1
    s.close()


def test_require_tls_is_met_over_tls(procs, upstream, pki):
    """require_tls ALL: a TLS connection's x-forwarded-proto is https, so it
    is served (the plaintext side of require_tls is in test_require_tls.py)."""
    t = start(procs, upstream, pki, vhost_extra="require_tls: ALL\n", hcm_extra="use_remote_address: true\n")
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout.decode() == "200", r.stderr
    assert stat(t.admin, "http.ingress_http.rq_redirect") == 0


def test_tls_inspector_routes_by_server_name(procs, upstream, pki):
    """tls_inspector reads the ClientHello: a chain per server name (exact,
    then *.test wildcard), each with its own certificate and connection
    manager, and a plaintext chain for connections that are not TLS, on one
    listener (Envoy's SNI-based filter chain selection)."""
    listen, admin = free_port(), free_port()

    def tls_chain(name, names, cert):
        ctx = tls_context(pki, certs=(cert,), alpn=("http/1.1",))
        return (f"    - name: {name}\n"
                f"      filter_chain_match: {{ server_names: {json.dumps(names)}, transport_protocol: tls }}\n"
                f"      transport_socket: {{name: envoy.transport_sockets.tls, typed_config: {json.dumps(ctx)}}}\n")

    text = bootstrap_yaml(listen, admin, {"app": [upstream.port]})
    # three copies of the one chain: by server name, by wildcard, plaintext
    one = text[text.index("    - filters:\n"):text.index("  clusters:\n")]
    body = one[len("    - "):]  # "filters:\n      - name: ..."
    www = tls_chain("www", [HOST], "rsa") + "      " + body.replace("stat_prefix: ingress_http", "stat_prefix: www")
    wild = tls_chain("wild", ["*.test"], "other") + "      " + body.replace("stat_prefix: ingress_http", "stat_prefix: wild")
    plain = "    - filter_chain_match: { transport_protocol: raw_buffer }\n      " + \
        body.replace("stat_prefix: ingress_http", "stat_prefix: plain")
    text = text.replace(one, www + wild + plain)
    text = text.replace("    filter_chains:\n", "    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n"
                        "    filter_chains:\n", 1)
    run_sharp_config(procs, text, admin)
    t = Tls()
    t.listen, t.admin, t.pki = listen, admin, pki
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout.decode() == "200", r.stderr
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}", host="other.test")
    assert r.stdout.decode() == "200", r.stderr
    r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{listen}/echo"],
                       capture_output=True, timeout=10 * SLOW)
    assert r.stdout.decode() == "200", r.stderr
    assert stat(admin, "http.www.downstream_rq_total") == 1
    assert stat(admin, "http.wild.downstream_rq_total") == 1
    assert stat(admin, "http.plain.downstream_rq_total") == 1
    assert stat(admin, "tls_inspector.sni_found") == 2
    assert stat(admin, "tls_inspector.tls_not_found") == 1
    # a server name no chain has: no TLS chain, and not plaintext either
    r = curl(t, "/echo", host="nomatch.example.org")
    assert r.returncode != 0
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1


def test_certs_and_days_until_first_cert_expiring(procs, upstream, pki):
    """/certs lists each TLS context's CA and certificates as Envoy's does
    (path, serial number, subject alternative names, days until expiration,
    validity); server.days_until_first_cert_expiring is the fewest days, and
    absent from a server without certificates."""
    t = start(procs, upstream, pki, client_ca=True)
    certs = json.loads(admin_get(t.admin, "/certs"))["certificates"]
    assert len(certs) == 1
    chain = certs[0]["cert_chain"]
    assert [c["path"] for c in chain] == [f"{pki}/rsa.crt"]
    assert chain[0]["subject_alt_names"] == [{"dns": HOST}]
    assert 28 <= int(chain[0]["days_until_expiration"]) <= 30
    assert chain[0]["serial_number"] and chain[0]["valid_from"].endswith("Z")
    assert certs[0]["ca_cert"][0]["path"] == f"{pki}/ca.crt"
    days = stat(t.admin, "server.days_until_first_cert_expiring")
    assert days == min(int(chain[0]["days_until_expiration"]), int(certs[0]["ca_cert"][0]["days_until_expiration"]))
    # without TLS: no certificate, no gauge
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"app": [upstream.port]}), admin)
    assert json.loads(admin_get(admin, "/certs")) == {"certificates": []}
    assert "server.days_until_first_cert_expiring" not in admin_get(admin, "/stats")


def test_static_secrets_by_name(procs, upstream, pki):
    """static_resources.secrets: a listener's certificate and its client CA
    named by tls_certificate_sds_secret_configs and
    validation_context_sds_secret_config (no sds_config), as Envoy loads
    them; an unknown name and an SDS source are errors."""
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"app": [upstream.port]})
    ctx = {"@type": DS_TLS, "common_tls_context": {
        "tls_certificate_sds_secret_configs": [{"name": "server_cert"}],
        "validation_context_sds_secret_config": {"name": "client_ca"}},
        "require_client_certificate": True}
    secrets = ("  secrets:\n"
               f"  - name: server_cert\n    tls_certificate: {{ certificate_chain: {{ filename: {pki}/rsa.crt }}, "
               f"private_key: {{ filename: {pki}/rsa.key }} }}\n"
               f"  - name: client_ca\n    validation_context: {{ trusted_ca: {{ filename: {pki}/ca.crt }} }}\n")
    full = with_tls(text, ctx).replace("static_resources:\n", "static_resources:\n" + secrets, 1)
    run_sharp_config(procs, full, admin)
    t = Tls()
    t.listen, t.admin, t.pki = listen, admin, pki
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}", "--cert", f"{pki}/client.crt", "--key",
             f"{pki}/client.key")
    assert r.stdout.decode() == "200", r.stderr
    r = curl(t, "/echo")  # no client certificate: the secret's CA requires one
    assert r.returncode != 0
    # /config_dump's SecretsConfigDump.static_secrets, the private key redacted as Envoy does
    dump = json.loads(admin_get(admin, "/config_dump?resource=static_secrets"))["configs"]
    assert [d["name"] for d in dump] == ["server_cert", "client_ca"]
    assert dump[0]["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.StaticSecret"
    tc = dump[0]["secret"]["tls_certificate"]
    assert tc == {"certificate_chain": {"filename": f"{pki}/rsa.crt"}, "private_key": {"filename": "[redacted]"}}
    assert dump[1]["secret"]["validation_context"] == {"trusted_ca": {"filename": f"{pki}/ca.crt"}}
    bad = full.replace('"name": "client_ca"', '"name": "nope"')
    rc, out = validate_config(bad)
    assert rc == 1 and "validation_context_sds_secret_config.name: Unknown static secret: nope" in out, out
    sds = full.replace('{"name": "server_cert"}', '{"name": "server_cert", "sds_config": {"ads": {}}}')
    rc, out = validate_config(sds)
    # SDS over ADS needs ADS (test_tls_sds_grpc.py has it), as in Envoy
    assert rc == 1 and "sds_config.ads: ADS must be configured" in out, out


def test_combined_validation_context_for_client_certificates(procs, upstream, pki):
    """combined_validation_context: the default context's URI SAN matcher
    with the CA of a static secret (merged as Envoy's MergeFrom), checking
    client certificates; a default matching another URI refuses the same
    client (fail_verify_san), a client of another CA is refused
    (fail_verify_error)."""
    secrets = ("  secrets:\n"
               f"  - name: client_ca\n    validation_context: {{ trusted_ca: {{ filename: {pki}/ca.crt }} }}\n")

    def listener(uri):
        listen, admin = free_port(), free_port()
        ctx = tls_context(pki, require=True)
        ctx["common_tls_context"]["combined_validation_context"] = {
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": uri}}]},
            "validation_context_sds_secret_config": {"name": "client_ca"}}
        text = with_tls(bootstrap_yaml(listen, admin, {"app": [upstream.port]}), ctx)
        run_sharp_config(procs, text.replace("static_resources:\n", "static_resources:\n" + secrets, 1), admin)
        t = Tls()
        t.listen, t.admin, t.pki, t.prefix = listen, admin, pki, f"listener.127.0.0.1_{listen}.ssl."
        return t

    t = listener("spiffe://example/client")
    r = curl(t, "/", "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
    assert r.returncode == 0 and r.stdout == b"hello from upstream\n", r
    r = curl(t, "/", "--cert", f"{pki}/stranger.crt", "--key", f"{pki}/stranger.key")
    assert r.returncode != 0, r
    wait_ssl_stat(t, "fail_verify_error", 1)
    other = listener("spiffe://example/other")
    r = curl(other, "/", "--cert", f"{pki}/client.crt", "--key", f"{pki}/client.key")
    assert r.returncode != 0, r
    wait_ssl_stat(other, "fail_verify_san", 1)
    assert ssl_stat(other, "handshake") == 0


def _xfcc_seen(t, *extra):
    r = curl(t, "/echo", "--cert", f"{t.pki}/client.crt", "--key", f"{t.pki}/client.key", *extra)
    assert r.returncode == 0, r
    hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
    return hdrs.get("x-forwarded-client-cert")


@pytest.mark.parametrize("mode", ["SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"])
def test_forward_client_cert_details(procs, upstream, pki, mode):
    """x-forwarded-client-cert as Envoy's modes write it for an mTLS client
    (Hash= the SHA-256 of its certificate, then Subject, URI, DNS as
    set_current_client_cert_details asks), and for a client without a
    certificate (removed unless ALWAYS_FORWARD_ONLY)."""
    import hashlib
    import ssl as _ssl
    extra = (f"forward_client_cert_details: {mode}\n"
             "set_current_client_cert_details: { subject: true, uri: true, dns: true }\n")
    t = start(procs, upstream, pki, client_ca=True, hcm_extra=extra)
    der = _ssl.PEM_cert_to_DER_cert(open(f"{pki}/client.crt").read())
    own = f'Hash={hashlib.sha256(der).hexdigest()};Subject="O=Example,CN=client";URI=spiffe://example/client'
    sent = "-H", "x-forwarded-client-cert: By=spiffe://front;Hash=00"
    got = _xfcc_seen(t, *sent)
    want = {"SANITIZE": None, "FORWARD_ONLY": "By=spiffe://front;Hash=00",
            "APPEND_FORWARD": "By=spiffe://front;Hash=00," + own, "SANITIZE_SET": own,
            "ALWAYS_FORWARD_ONLY": "By=spiffe://front;Hash=00"}[mode]
    assert got == want, (mode, got)
    # a client without a certificate: only ALWAYS_FORWARD_ONLY keeps the header
    r = curl(t, "/echo", *sent)
    hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
    assert hdrs.get("x-forwarded-client-cert") == ("By=spiffe://front;Hash=00" if mode == "ALWAYS_FORWARD_ONLY"
                                                    else None), (mode, hdrs)


def test_forward_client_cert_with_cert_and_chain(procs, upstream, pki):
    """set_current_client_cert_details cert and chain: the client's
    certificate (and its chain as presented) URL-encoded PEM in Cert="..." and
    Chain="...", after Hash and before Subject, as Envoy orders them."""
    import hashlib
    import ssl as _ssl
    import urllib.parse
    extra = ("forward_client_cert_details: SANITIZE_SET\n"
             "set_current_client_cert_details: { cert: true, chain: true, subject: true }\n")
    t = start(procs, upstream, pki, client_ca=True, hcm_extra=extra)
    got = _xfcc_seen(t)
    pem = open(f"{pki}/client.crt").read()
    der = _ssl.PEM_cert_to_DER_cert(pem)
    parts = got.split(";")
    assert parts[0] == "Hash=" + hashlib.sha256(der).hexdigest(), got
    assert parts[1].startswith('Cert="') and parts[2].startswith('Chain="') and parts[3] == 'Subject="O=Example,CN=client"'
    cert = urllib.parse.unquote(parts[1][len('Cert="'):-1])
    chain = urllib.parse.unquote(parts[2][len('Chain="'):-1])
    assert _ssl.PEM_cert_to_DER_cert(cert) == der
    assert chain.startswith(cert)  # the chain as presented starts with the client's own


def test_config_dump_redacts_inline_keys_in_every_section(procs, upstream, pki):
    """/config_dump redacts every field Envoy's protos mark sensitive, in
    every section (Envoy's MessageUtil::redact on the whole dump): a
    listener's inline private key and ticket keys, a cluster's client key,
    static secrets, in the bootstrap and in the listener, cluster and secret
    dumps, with ?resource=, ?mask= and ?include_eds too. Certificate chains,
    CA filenames and the rest of the config stay as they were."""
    import base64
    rsa_crt, rsa_key = open(f"{pki}/rsa.crt").read(), open(f"{pki}/rsa.key").read()
    cli_crt, cli_key = open(f"{pki}/client.crt").read(), open(f"{pki}/client.key").read()
    ticket = base64.b64encode(os.urandom(80)).decode()
    ctx = {"@type": DS_TLS,
           "common_tls_context": {"tls_certificates": [{"certificate_chain": {"inline_string": rsa_crt},
                                                        "private_key": {"inline_string": rsa_key}}],
                                  "alpn_protocols": ["http/1.1"]},
           "session_ticket_keys": {"keys": [{"inline_bytes": ticket}]}}
    us = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
          "sni": "secure.example",
          "common_tls_context": {"tls_certificates": [{"certificate_chain": {"inline_string": cli_crt},
                                                       "private_key": {"inline_string": cli_key}}],
                                 "validation_context": {"trusted_ca": {"filename": f"{pki}/ca.crt"}}}}
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"app": [upstream.port], "secure": [upstream.port]})
    head = "  - name: secure\n    type: STATIC\n"
    text = text.replace(head, head + "    transport_socket: {name: envoy.transport_sockets.tls, typed_config: "
                        + json.dumps(us) + "}\n", 1)
    secrets = ("  secrets:\n"
               f"  - name: server_cert\n    tls_certificate: {json.dumps({'certificate_chain': {'filename': pki + '/rsa.crt'}, 'private_key': {'inline_string': rsa_key}})}\n"
               f"  - name: tickets\n    session_ticket_keys: {json.dumps({'keys': [{'inline_bytes': ticket}]})}\n")
    full = with_tls(text, ctx).replace("static_resources:\n", "static_resources:\n" + secrets, 1)
    run_sharp_config(procs, full, admin)
    t = Tls()
    t.listen, t.admin, t.pki = listen, admin, pki
    r = curl(t, "/echo", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout.decode() == "200", r.stderr  # the inline key is the one in use

    key_lines = [ln for k in (rsa_key, cli_key) for ln in k.splitlines() if ln and "-----" not in ln]

    def no_secret(body):
        assert "PRIVATE KEY" not in body
        for ln in key_lines:
            assert ln not in body
        assert ticket not in body and ticket.replace("/", "\\/") not in body

    body = admin_get(admin, "/config_dump")
    no_secret(body)
    dump = {c["@type"].rsplit(".", 1)[1]: c for c in json.loads(body)["configs"]}
    red = {"inline_string": "[redacted]"}
    red_bytes = {"inline_bytes": base64.b64encode(b"[redacted]").decode()}
    # BootstrapConfigDump: the listener's Any, the cluster's Any, the secrets
    sr = dump["BootstrapConfigDump"]["bootstrap"]["static_resources"]
    lctx = sr["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert lctx["common_tls_context"]["tls_certificates"] == [{"certificate_chain": {"inline_string": rsa_crt},
                                                               "private_key": red}]
    assert lctx["session_ticket_keys"] == {"keys": [red_bytes]}
    sec = next(c for c in sr["clusters"] if c["name"] == "secure")
    cctx = sec["transport_socket"]["typed_config"]
    assert cctx["sni"] == "secure.example"
    assert cctx["common_tls_context"]["tls_certificates"] == [{"certificate_chain": {"inline_string": cli_crt},
                                                               "private_key": red}]
    assert cctx["common_tls_context"]["validation_context"] == {"trusted_ca": {"filename": f"{pki}/ca.crt"}}
    assert sr["secrets"] == [
        {"name": "server_cert", "tls_certificate": {"certificate_chain": {"filename": f"{pki}/rsa.crt"},
                                                    "private_key": red}},
        {"name": "tickets", "session_ticket_keys": {"keys": [red_bytes]}}]
    # ListenersConfigDump, ClustersConfigDump, SecretsConfigDump
    sl = dump["ListenersConfigDump"]["static_listeners"][0]["listener"]
    assert sl["filter_chains"][0]["transport_socket"]["typed_config"] == lctx
    sc = next(c["cluster"] for c in dump["ClustersConfigDump"]["static_clusters"] if c["cluster"]["name"] == "secure")
    assert sc["transport_socket"]["typed_config"] == cctx
    ss = dump["SecretsConfigDump"]["static_secrets"]
    assert [{k: v for k, v in s["secret"].items() if k != "@type"} for s in ss] == sr["secrets"]
    # ?resource= and ?mask= paths, ?include_eds
    for q in ("resource=static_listeners", "resource=static_clusters", "resource=static_secrets",
              "resource=static_clusters&mask=cluster.transport_socket", "mask=bootstrap.static_resources",
              "mask=static_listeners", "include_eds", "resource=static_secrets&mask=secret.tls_certificate",
              "name_regex=secure"):
        body = admin_get(admin, "/config_dump?" + q)
        no_secret(body)
        assert "[redacted]" in body or "W3JlZGFjdGVkXQ==" in body, q
    r = json.loads(admin_get(admin, "/config_dump?resource=static_clusters&mask=cluster.transport_socket"))
    masked = [c["cluster"] for c in r["configs"]]
    assert {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "transport_socket": sec["transport_socket"]} in masked
    r = json.loads(admin_get(admin, "/config_dump?resource=static_secrets&mask=secret.tls_certificate.private_key"))
    assert r["configs"][0]["secret"] == {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                                         "tls_certificate": {"private_key": red}}
