"""TLS to upstreams (a cluster's transport_socket with an UpstreamTlsContext):
SHARP in front of real TLS servers (Python's ssl, nginx, another SHARP
terminating TLS) with certificates made at test time by the openssl CLI
(the pki fixture): SNI and ALPN sent, server verification (trusted CA, SAN
matchers), client certificates, session resumption across the pool's
connections, HTTP/2 over TLS, Envoy's cluster.<name>.ssl.* stats and the
503 UF a failed handshake gives."""
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (wait_for, SLOW, TLS_HOST, Proc, bootstrap_yaml, file_access_log, free_port, log_lines,
                      run_sharp_config, stat, validate_config, wait_port, start_nginx)

US_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DS_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"

# An HTTP/1.1 server over TLS answering every request with what it saw of
# the connection: SNI, ALPN, version, whether the session was resumed, the
# client certificate's subject, and the connection's ordinal.
TLS_SERVER = r'''
import json, socket, ssl, sys, threading
port, cert, key, ca, require = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
alpn = sys.argv[6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
if sys.argv[7] == "0":  # no tickets: TLS 1.2 sessions get an ID from the server
    ctx.options |= ssl.OP_NO_TICKET
ctx.load_cert_chain(cert, key)
if alpn:
    ctx.set_alpn_protocols(alpn.split(","))
if require:
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
seen = threading.local()  # the callback runs in the thread doing the handshake
def on_sni(sock, name, c):
    seen.sni = name
ctx.sni_callback = on_sni
count = [0]
lock = threading.Lock()
def serve(raw):
    seen.sni = None
    try:
        s = ctx.wrap_socket(raw, server_side=True)
    except Exception:
        raw.close()
        return
    with lock:
        count[0] += 1
        n = count[0]
    peer = s.getpeercert()
    subj = ",".join("%s=%s" % kv for rdn in peer.get("subject", ()) for kv in rdn) if peer else None
    info = {"sni": seen.sni, "alpn": s.selected_alpn_protocol(),
            "version": s.version(), "reused": s.session_reused, "client": subj, "conn": n,
            "cipher": s.cipher()[0], "session_id": s.session.id.hex() if s.session else None}
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    return
                buf += d
            head, _, buf = buf.partition(b"\r\n\r\n")
            body = json.dumps(info).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                      + body)
    except Exception:
        pass
    finally:
        s.close()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(64)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


@pytest.fixture
def tls_server(procs, pki, tmp_path):
    """Starts the Python TLS server: start(cert="rsa", require_client_cert=False, alpn="http/1.1",
    tickets=True) -> port (alpn "": the server takes part in no ALPN negotiation)."""
    script = tmp_path / "tls_server.py"
    script.write_text(TLS_SERVER)

    def start(cert="rsa", require_client_cert=False, alpn="http/1.1", tickets=True):
        port = free_port()
        p = Proc([sys.executable, str(script), str(port), f"{pki}/{cert}.crt", f"{pki}/{cert}.key", f"{pki}/ca.crt",
                  "1" if require_client_cert else "0", alpn, "1" if tickets else "0"])
        procs.append(p)
        wait_port(port)
        return port
    return start


def upstream_tls(pki, ca="ca", sni=TLS_HOST, client_cert=None, alpn=None, sans=None, **extra):
    ctx = {"@type": US_TLS, "common_tls_context": {}}
    common = ctx["common_tls_context"]
    if ca:
        common["validation_context"] = {"trusted_ca": {"filename": f"{pki}/{ca}.crt"}}
        if sans is not None:
            common["validation_context"]["match_typed_subject_alt_names"] = sans
    if client_cert:
        common["tls_certificates"] = [{"certificate_chain": {"filename": f"{pki}/{client_cert}.crt"},
                                       "private_key": {"filename": f"{pki}/{client_cert}.key"}}]
    if alpn:
        common["alpn_protocols"] = list(alpn)
    if sni:
        ctx["sni"] = sni
    ctx.update(extra)
    return "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ctx) + "}\n"


class Front:
    pass


def front(procs, ports, cluster_extra, access_log=None, hostname=None, concurrency=1):
    """SHARP in front of the TLS upstreams; one worker by default, so that
    connection counts do not depend on which worker a client lands on."""
    f = Front()
    f.listen, f.admin = free_port(), free_port()
    text = bootstrap_yaml(f.listen, f.admin, {"b": ports}, cluster_extra=cluster_extra, access_log=access_log)
    if hostname:
        text = text.replace("        - endpoint: { address:", f"        - endpoint: {{ hostname: {hostname}, address:")
    f.sharp = run_sharp_config(procs, text, f.admin, concurrency=concurrency)
    return f


def get(f, path="/", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", f.listen, timeout=15 * SLOW)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def ssl_stat(f, name, cluster="b"):
    return stat(f.admin, f"cluster.{cluster}.ssl.{name}")


# ---- HTTPS to the upstream ----

def test_https_upstream_sni_alpn_and_stats(procs, pki, tls_server):
    port = tls_server()
    f = front(procs, [port], upstream_tls(pki))
    status, body = get(f)
    assert status == 200, body
    info = json.loads(body)
    assert info["sni"] == TLS_HOST
    assert info["alpn"] == "http/1.1"  # Envoy's ALPN fallback: the pool's protocol
    assert info["version"] == "TLSv1.2"  # Envoy's default maximum for clients
    assert info["client"] is None
    # keep-alive: the second request takes the same TLS connection
    status, body = get(f)
    assert status == 200 and json.loads(body)["conn"] == info["conn"]
    assert ssl_stat(f, "handshake") == 1
    assert ssl_stat(f, "connection_error") == 0 and ssl_stat(f, "fail_verify_error") == 0
    assert ssl_stat(f, "no_certificate") == 0
    assert ssl_stat(f, "versions.TLSv1.2") == 1
    assert stat(f.admin, "cluster.b.upstream_cx_total") == 1


def test_sni_from_host_name_with_auto_host_sni(procs, pki, tls_server):
    port = tls_server()
    f = front(procs, [port], upstream_tls(pki, sni="configured.example", auto_host_sni=True),
              hostname="www.example.com")
    status, body = get(f)
    assert status == 200, body
    assert json.loads(body)["sni"] == "www.example.com"
    # without a host name the configured sni stays
    f2 = front(procs, [port], upstream_tls(pki, sni="configured.example", auto_host_sni=True))
    status, body = get(f2)
    assert status == 200 and json.loads(body)["sni"] == "configured.example", body
    # no sni at all: none is sent
    f3 = front(procs, [port], upstream_tls(pki, sni=None))
    status, body = get(f3)
    assert status == 200 and json.loads(body)["sni"] is None, body


def test_configured_alpn_is_offered(procs, pki, tls_server):
    """alpn_protocols replaces the fallback: the server (picking in its own
    order) sees "foo" offered."""
    port = tls_server(alpn="foo,http/1.1")
    f = front(procs, [port], upstream_tls(pki, alpn=("foo", "http/1.1")))
    status, body = get(f)
    assert status == 200 and json.loads(body)["alpn"] == "foo", body
    f2 = front(procs, [port], upstream_tls(pki))
    status, body = get(f2)
    assert status == 200 and json.loads(body)["alpn"] == "http/1.1", body


def test_tls_params_and_tls13_resumption(procs, pki, tls_server):
    """tls_params raise the maximum to TLS 1.3; TLS 1.3 sessions (tickets
    sent after the handshake) are resumed too."""
    port = tls_server()
    tls = upstream_tls(pki, sni=TLS_HOST)
    tls = tls.replace('"common_tls_context": {', '"common_tls_context": {"tls_params": '
                      '{"tls_maximum_protocol_version": "TLSv1_3"}, ', 1)
    f = front(procs, [port], tls + "max_requests_per_connection: 1\n")
    seen = [json.loads(get(f)[1]) for _ in range(3)]
    assert [i["version"] for i in seen] == ["TLSv1.3"] * 3
    assert [i["reused"] for i in seen] == [False, True, True]
    assert ssl_stat(f, "versions.TLSv1.3") == 3 and ssl_stat(f, "session_reused") == 2


# ---- verification ----

def test_wrong_ca_fails_verification_with_503_uf(procs, pki, tls_server):
    port = tls_server()
    f = front(procs, [port], upstream_tls(pki, ca="ca2"))
    status, body = get(f)
    assert status == 503
    assert body.startswith(b"upstream connect error or disconnect/reset before headers. reset reason: connection "
                           b"failure, transport failure reason: TLS_error:|"), body
    assert b"verify" in body, body
    assert ssl_stat(f, "fail_verify_error") == 1
    assert ssl_stat(f, "handshake") == 0 and ssl_stat(f, "connection_error") == 0
    assert stat(f.admin, "cluster.b.upstream_cx_connect_fail") == 1


def test_failure_flags_and_details_in_access_log(procs, pki, tls_server):
    port = tls_server()
    extra, path = file_access_log("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n")
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"b": [port]}, cluster_extra=upstream_tls(pki, ca="ca2"), hcm_extra=extra)
    run_sharp_config(procs, text, admin)
    c = http.client.HTTPConnection("127.0.0.1", listen, timeout=15 * SLOW)
    c.request("GET", "/")
    r = c.getresponse()
    assert r.status == 503
    r.read()
    line = log_lines(path, 1)[0]
    code, flags, details = line.split(" ", 2)
    assert code == "503" and flags == "UF", line
    assert details.startswith("upstream_reset_before_response_started{connection_failure,TLS_error:|"), line
    assert " " not in details and details.endswith(":TLS_error_end}"), line


def test_san_matcher(procs, pki, tls_server):
    port = tls_server()
    bad = front(procs, [port], upstream_tls(pki, sans=[{"san_type": "DNS", "matcher": {"exact": "other.test"}}]))
    status, body = get(bad)
    assert status == 503 and b"SAN" in body, body
    assert ssl_stat(bad, "fail_verify_san") == 1 and ssl_stat(bad, "fail_verify_error") == 0
    assert stat(bad.admin, "cluster.b.upstream_cx_connect_fail") == 1
    good = front(procs, [port], upstream_tls(pki, sans=[{"san_type": "DNS", "matcher": {"exact": TLS_HOST}}]))
    status, body = get(good)
    assert status == 200, body
    assert ssl_stat(good, "fail_verify_san") == 0 and ssl_stat(good, "handshake") == 1


def combined(pki, default, secret_ca="ca"):
    """A cluster's UpstreamTlsContext with a combined_validation_context (the
    default context given, a static secret "upstream_ca" with trusted_ca)
    and the bootstrap's secrets to add."""
    ctx = {"@type": US_TLS, "sni": TLS_HOST, "common_tls_context": {"combined_validation_context": {
        "default_validation_context": default, "validation_context_sds_secret_config": {"name": "upstream_ca"}}}}
    secrets = ("  secrets:\n"
               f"  - name: upstream_ca\n    validation_context: {{ trusted_ca: {{ filename: {pki}/{secret_ca}.crt }} }}\n")
    return "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ctx) + "}\n", secrets


def test_combined_validation_context_verifies_the_server(procs, pki, tls_server):
    """The default context's SAN matcher with the secret's CA: the server's
    DNS SAN is checked (fail_verify_san when another name is required), and
    the secret's CA replaces the default's (MergeFrom)."""
    port = tls_server()

    def start(default, secret_ca="ca"):
        ts, secrets = combined(pki, default, secret_ca)
        f = Front()
        f.listen, f.admin = free_port(), free_port()
        text = bootstrap_yaml(f.listen, f.admin, {"b": [port]}, cluster_extra=ts)
        run_sharp_config(procs, text.replace("static_resources:\n", "static_resources:\n" + secrets, 1), f.admin)
        return f

    ok = start({"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": TLS_HOST}}]})
    status, body = get(ok)
    assert status == 200 and json.loads(body)["sni"] == TLS_HOST, body
    bad = start({"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": "other.test"}}]})
    status, body = get(bad)
    assert status == 503 and b"verify cert failed: SAN matcher" in body, body
    assert ssl_stat(bad, "fail_verify_san") == 1
    # the default's CA is ca2 (which did not issue the server's certificate);
    # the secret's replaces it
    ok2 = start({"trusted_ca": {"filename": f"{pki}/ca2.crt"}})
    assert get(ok2)[0] == 200
    wrong = start({"trusted_ca": {"filename": f"{pki}/ca.crt"}}, secret_ca="ca2")
    assert get(wrong)[0] == 503
    assert ssl_stat(wrong, "fail_verify_error") == 1
    # SAN matchers need a CA in the merged context, as Envoy checks it
    ts, _ = combined(pki, {"match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": TLS_HOST}}]})
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=ts).replace(
        "static_resources:\n", "static_resources:\n  secrets:\n  - name: upstream_ca\n    validation_context: {}\n", 1))
    assert rc == 1 and "combined_validation_context: SAN-based verification of peer certificates without " \
        "trusted CA is insecure and not allowed" in out, out


def test_auto_sni_san_validation_checks_the_host_name(procs, pki, tls_server):
    """auto_host_sni with auto_sni_san_validation: the server certificate
    must carry the SNI sent (the host's name) as a DNS SAN."""
    port = tls_server()
    ok = front(procs, [port], upstream_tls(pki, sni=None, auto_host_sni=True, auto_sni_san_validation=True),
               hostname=TLS_HOST)
    status, body = get(ok)
    assert status == 200 and json.loads(body)["sni"] == TLS_HOST, body
    bad = front(procs, [port], upstream_tls(pki, sni=None, auto_host_sni=True, auto_sni_san_validation=True),
                hostname="other.test")
    status, body = get(bad)
    assert status == 503 and b"TLS_error" in body, body
    assert ssl_stat(bad, "fail_verify_san") == 1


def test_plaintext_upstream_is_a_connection_error(procs, pki, upstream):
    f = front(procs, [upstream.port], upstream_tls(pki))
    status, body = get(f)
    assert status == 503 and b"TLS_error" in body, body
    assert ssl_stat(f, "connection_error") == 1
    assert stat(f.admin, "cluster.b.upstream_cx_connect_fail") == 1


def test_stalled_handshake_is_a_connect_timeout(procs, pki):
    """A server that accepts TCP and never answers the ClientHello: the
    cluster's connect_timeout (1s) covers the handshake, as Envoy's."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)  # the kernel completes TCP connects; nothing reads
    try:
        f = front(procs, [ls.getsockname()[1]], upstream_tls(pki))
        t0 = time.time()
        status, body = get(f)
        assert status == 503 and b"TLS_error" not in body, body
        assert 0.9 <= time.time() - t0 < 5 * SLOW
        assert stat(f.admin, "cluster.b.upstream_cx_connect_timeout") == 1
        assert ssl_stat(f, "handshake") == 0
    finally:
        ls.close()


def test_retry_after_handshake_failure_reaches_the_good_host(procs, pki, tls_server, upstream):
    """A failed handshake fails over like a refused connection (retry_on
    connect-failure): the retry picks the other host."""
    port = tls_server()
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: b\n    retry_policy: { retry_on: connect-failure, '
              'num_retries: 3, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, '
              'typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.'
              'PreviousHostsPredicate}}], host_selection_retry_max_attempts: 5 }\n')
    text = bootstrap_yaml(listen, admin, {"b": [upstream.port, port]}, routes=routes, cluster_extra=upstream_tls(pki))
    run_sharp_config(procs, text, admin, concurrency=1)
    f = Front()
    f.listen, f.admin = listen, admin
    for _ in range(4):
        status, body = get(f)
        assert status == 200, body
        assert json.loads(body)["sni"] == TLS_HOST
    assert ssl_stat(f, "connection_error") >= 1
    assert stat(admin, "cluster.b.upstream_rq_retry") >= 1


# ---- client certificates ----

def test_client_certificate_to_an_mtls_upstream(procs, pki, tls_server):
    port = tls_server(require_client_cert=True)
    without = front(procs, [port], upstream_tls(pki))
    status, body = get(without)
    assert status == 503 and b"TLS_error" in body, body
    assert ssl_stat(without, "connection_error") == 1
    f = front(procs, [port], upstream_tls(pki, client_cert="client"))
    status, body = get(f)
    assert status == 200, body
    assert json.loads(body)["client"] == "commonName=client,organizationName=Example"
    assert ssl_stat(f, "handshake") == 1


# ---- session resumption ----

@pytest.mark.parametrize("keys,reused", [(None, True), (0, False)])
def test_session_resumption_across_connections(procs, pki, tls_server, keys, reused):
    port = tls_server()
    extra = {} if keys is None else {"max_session_keys": keys}
    # one request per connection: each request opens a new TLS connection
    # (on either worker: the context's sessions are shared)
    f = front(procs, [port], upstream_tls(pki, **extra) + "max_requests_per_connection: 1\n", concurrency=2)
    seen = []
    for _ in range(3):
        status, body = get(f)
        assert status == 200, body
        seen.append(json.loads(body))
    assert len({i["conn"] for i in seen}) == 3
    assert [i["reused"] for i in seen] == [False, reused, reused]
    assert ssl_stat(f, "handshake") == 3
    assert ssl_stat(f, "session_reused") == (2 if reused else 0)


# ---- nginx ----

def nginx_tls(procs, pki, tmp_path, http2=False, verify_client=False):
    vc = f"\nssl_verify_client on;\nssl_client_certificate {pki}/ca.crt;" if verify_client else ""
    return start_nginx(procs, tmp_path,
                       f' ssl{" http2" if http2 else ""};\nssl_certificate {pki}/rsa.crt;\n'
                       f'ssl_certificate_key {pki}/rsa.key;{vc}\nroot {tmp_path}/html;\n'
                       'location /proto { return 200 "$server_protocol $ssl_server_name $ssl_session_reused '
                       '$ssl_client_s_dn\\n"; }',
                       files=(("index.html", b"<h1>nginx over tls</h1>\n"), ("big.bin", os.urandom(3 * 1024 * 1024))))


def test_nginx_https_upstream(procs, pki, tmp_path):
    port = nginx_tls(procs, pki, tmp_path, verify_client=True)
    f = front(procs, [port], upstream_tls(pki, client_cert="client"))
    status, body = get(f, "/index.html")
    assert status == 200 and body == b"<h1>nginx over tls</h1>\n"
    status, body = get(f, "/big.bin")
    assert status == 200 and body == (tmp_path / "html" / "big.bin").read_bytes()
    status, body = get(f, "/proto")
    proto, sni, _, dn = body.decode().split(" ", 3)
    assert status == 200 and proto == "HTTP/1.1" and sni == TLS_HOST, body
    assert "CN=client" in dn, body
    assert ssl_stat(f, "handshake") == 1


def test_http2_over_tls_to_nginx(procs, pki, tmp_path):
    port = nginx_tls(procs, pki, tmp_path, http2=True)
    h2 = ('typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n'
          '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
          '    explicit_http_config: { http2_protocol_options: {} }\n')
    f = front(procs, [port], upstream_tls(pki) + h2)
    for _ in range(3):
        status, body = get(f, "/proto")
        assert status == 200 and body.decode().startswith("HTTP/2.0 " + TLS_HOST), body
    status, body = get(f, "/big.bin")
    assert status == 200 and body == (tmp_path / "html" / "big.bin").read_bytes()
    assert stat(f.admin, "cluster.b.upstream_cx_http2_total") == 1
    assert ssl_stat(f, "handshake") == 1


# ---- auto_config: the protocol by ALPN ----

AUTO = ('typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n'
        '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
        '    auto_config: { http2_protocol_options: { max_concurrent_streams: 50 } }\n')


def test_auto_config_picks_http2_by_alpn(procs, pki, tmp_path):
    port = nginx_tls(procs, pki, tmp_path, http2=True)
    f = front(procs, [port], upstream_tls(pki) + AUTO)
    for _ in range(3):
        status, body = get(f, "/proto")
        assert status == 200 and body.decode().startswith("HTTP/2.0 " + TLS_HOST), body
    assert stat(f.admin, "cluster.b.upstream_cx_http2_total") == 1
    assert stat(f.admin, "cluster.b.upstream_cx_http1_total") == 0
    assert stat(f.admin, "cluster.b.upstream_cx_total") == 1


@pytest.mark.parametrize("alpn", ["http/1.1", ""])
def test_auto_config_falls_back_to_http1(procs, pki, tls_server, alpn):
    """A server choosing http/1.1, or taking part in no ALPN: HTTP/1.1."""
    port = tls_server(alpn=alpn)
    f = front(procs, [port], upstream_tls(pki) + AUTO)
    for _ in range(2):
        status, body = get(f)
        assert status == 200, body
        assert json.loads(body)["alpn"] == (alpn or None)
    assert stat(f.admin, "cluster.b.upstream_cx_http1_total") == 1
    assert stat(f.admin, "cluster.b.upstream_cx_http2_total") == 0


@pytest.mark.parametrize("streams,connections", [(1, 2), (50, 1)])
def test_auto_config_http2_options_apply(procs, pki, upstream, streams, connections):
    """auto_config.http2_protocol_options configure the connections that
    negotiate h2: with max_concurrent_streams 1 two concurrent requests
    need two connections, with 50 they share one."""
    back_listen, back_admin = free_port(), free_port()
    ds = {"@type": DS_TLS, "common_tls_context": {
        "tls_certificates": [{"certificate_chain": {"filename": f"{pki}/rsa.crt"},
                              "private_key": {"filename": f"{pki}/rsa.key"}}],
        "alpn_protocols": ["h2", "http/1.1"]}}
    text = bootstrap_yaml(back_listen, back_admin, {"app": [upstream.port]})
    ts = "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ds) + "}"
    text = text.replace("    filter_chains:\n    - filters:\n", f"    filter_chains:\n    - {ts}\n      filters:\n", 1)
    run_sharp_config(procs, text, back_admin)
    auto = AUTO.replace("max_concurrent_streams: 50", f"max_concurrent_streams: {streams}")
    f = front(procs, [back_listen], upstream_tls(pki) + auto)
    assert get(f, "/echo")[0] == 200  # the host's protocol is known: h2
    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda _: get(f, "/echo?delay_ms=400"), range(2)))
    assert [r[0] for r in results] == [200, 200]
    assert stat(f.admin, "cluster.b.upstream_cx_http2_total") == connections
    assert stat(f.admin, "cluster.b.upstream_cx_http1_total") == 0


def test_auto_config_needs_tls(pki):
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=AUTO))
    assert rc == 1 and "static_resources.clusters[0]: ALPN configured for cluster b which has a non-ALPN " \
        "transport socket" in out, out
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=upstream_tls(pki) + AUTO))
    assert rc == 0, out
    h3 = AUTO.replace("auto_config: {", "auto_config: { http3_protocol_options: {},")
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=upstream_tls(pki) + h3))
    assert rc == 1 and "http3_protocol_options" in out, out


# ---- SHARP to SHARP ----

def test_sharp_to_sharp_tls_hop(procs, pki, upstream):
    """A SHARP listener terminating TLS (with client certificates required)
    as the upstream of another SHARP, over HTTP/1.1 and HTTP/2 (ALPN picks
    the back's codec)."""
    back_listen, back_admin = free_port(), free_port()
    ds = {"@type": DS_TLS, "require_client_certificate": True,
          "common_tls_context": {"tls_certificates": [{"certificate_chain": {"filename": f"{pki}/ecdsa.crt"},
                                                        "private_key": {"filename": f"{pki}/ecdsa.key"}}],
                                 "alpn_protocols": ["h2", "http/1.1"],
                                 "validation_context": {"trusted_ca": {"filename": f"{pki}/ca.crt"},
                                                        "match_typed_subject_alt_names": [
                                                            {"san_type": "URI",
                                                             "matcher": {"exact": "spiffe://example/client"}}]}}}
    text = bootstrap_yaml(back_listen, back_admin, {"app": [upstream.port]})
    ts = "transport_socket: {name: envoy.transport_sockets.tls, typed_config: " + json.dumps(ds) + "}"
    text = text.replace("    filter_chains:\n    - filters:\n", f"    filter_chains:\n    - {ts}\n      filters:\n", 1)
    run_sharp_config(procs, text, back_admin)
    h2 = ('typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n'
          '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
          '    explicit_http_config: { http2_protocol_options: {} }\n')
    lp = f"listener.127.0.0.1_{back_listen}.ssl."
    for n, extra in enumerate(("", h2, AUTO), start=1):
        f = front(procs, [back_listen], upstream_tls(pki, client_cert="client") + extra)
        for _ in range(3):
            status, body = get(f, "/echo?x=1")
            assert status == 200, body
            assert json.loads(body)["path"] == "/echo?x=1", body
        assert ssl_stat(f, "handshake") == 1
        assert stat(back_admin, lp + "handshake") == n
        assert stat(back_admin, lp + "no_certificate") == 0
        assert stat(back_admin, "http.ingress_http.downstream_cx_http1_total") == 1
        assert stat(back_admin, "http.ingress_http.downstream_cx_http2_total") == n - 1
        assert stat(f.admin, "cluster.b.upstream_cx_http2_total") == (1 if extra else 0)
    # the back refuses a front without a client certificate: 503 UF
    f = front(procs, [back_listen], upstream_tls(pki))
    status, body = get(f, "/echo")
    assert status == 503 and b"TLS_error" in body, body
    assert stat(f.admin, "cluster.b.upstream_cx_connect_fail") == 1


# ---- configuration ----

def test_config_errors_name_the_path(pki):
    ts = upstream_tls(pki).replace(f"{pki}/ca.crt", "/nonexistent/ca.crt")
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=ts))
    assert rc == 1 and "static_resources.clusters[0].transport_socket.typed_config.common_tls_context." \
        "validation_context.trusted_ca" in out and "/nonexistent/ca.crt" in out, out
    ts = upstream_tls(pki, sni="x" * 256)
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=ts))
    assert rc == 1 and "sni" in out, out
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]},
                                             cluster_extra=upstream_tls(pki, allow_renegotiation=True)))
    assert rc == 1 and "allow_renegotiation" in out, out
    rc, out = validate_config(bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra=upstream_tls(
        pki, client_cert="client", max_session_keys=5)))
    assert rc == 0, out


HC = ("health_checks:\n- timeout: 1s\n  interval: 0.2s\n  unhealthy_threshold: 1\n  healthy_threshold: 1\n"
      "  http_health_check: { path: /healthz }\n")


def test_health_checks_use_the_cluster_tls(procs, pki, tls_server):
    """Health checks of a TLS cluster run over its transport socket, as
    Envoy's: the host passes over TLS (the Python server answers only TLS,
    with the SNI it saw), and fails when the CA does not verify it."""
    port = tls_server()
    f = front(procs, [port], upstream_tls(pki) + HC)
    wait_for(lambda: stat(f.admin, "cluster.b.health_check.success") >= 1, 5, "a passing TLS health check")
    assert stat(f.admin, "cluster.b.health_check.healthy") == 1
    assert stat(f.admin, "cluster.b.health_check.network_failure") == 0
    status, body = get(f)
    assert status == 200 and json.loads(body)["sni"] == TLS_HOST
    g = front(procs, [port], upstream_tls(pki, ca="ca2") + HC)
    wait_for(lambda: stat(g.admin, "cluster.b.health_check.network_failure") >= 1, 5, "a failing TLS health check")
    assert stat(g.admin, "cluster.b.health_check.healthy") == 0


# ---- the access log's upstream TLS operators, ssl.sigalgs ----

UP_TLS_FORMAT = ("%UPSTREAM_TLS_VERSION%|%UPSTREAM_TLS_CIPHER%|%UPSTREAM_TLS_SESSION_ID%|%UPSTREAM_PEER_SUBJECT%|"
                 "%UPSTREAM_PEER_ISSUER%|%UPSTREAM_PEER_URI_SAN%|%UPSTREAM_PEER_DNS_SAN%|%UPSTREAM_PEER_IP_SAN%|"
                 "%UPSTREAM_LOCAL_URI_SAN%|%UPSTREAM_LOCAL_DNS_SAN%|%UPSTREAM_LOCAL_IP_SAN%|"
                 "%UPSTREAM_PEER_CERT_V_START(%s)%|%UPSTREAM_PEER_CERT_V_END%|%UPSTREAM_TRANSPORT_FAILURE_REASON%|"
                 "%UPSTREAM_PEER_CERT%")


def cert_dates(path):
    """notBefore and notAfter of a PEM certificate, as epoch seconds."""
    out = subprocess.run(["openssl", "x509", "-noout", "-startdate", "-enddate", "-in", path],
                         capture_output=True, text=True, check=True).stdout
    d = dict(line.split("=", 1) for line in out.splitlines())
    return ssl.cert_time_to_seconds(d["notBefore"]), ssl.cert_time_to_seconds(d["notAfter"])


def test_upstream_tls_operators_in_the_access_log(procs, pki, tls_server, upstream):
    """Envoy's UPSTREAM_TLS_* / UPSTREAM_PEER_* / UPSTREAM_LOCAL_* operators
    over a TLS cluster (with a client certificate), and "-" for a plaintext
    cluster on the same listener."""
    port = tls_server(require_client_cert=True, tickets=False)
    al, path = file_access_log(UP_TLS_FORMAT + "\\n")
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/plain" }\n  route: { cluster: plain }\n'
              '- match: { prefix: "/" }\n  route: { cluster: b }\n')
    text = bootstrap_yaml(listen, admin, {"b": [port], "plain": [upstream.port]}, routes=routes, hcm_extra=al)
    text = text.replace("  - name: b\n    type: STATIC\n    connect_timeout: 1s\n",
                        "  - name: b\n    type: STATIC\n    connect_timeout: 1s\n    "
                        + upstream_tls(pki, client_cert="client"), 1)
    run_sharp_config(procs, text, admin, concurrency=1)
    f = Front()
    f.listen, f.admin = listen, admin
    status, body = get(f)
    assert status == 200, body
    seen = json.loads(body)
    status, body = get(f, "/plain")
    assert status == 200, body
    lines = log_lines(path, 2)
    v = lines[0].split("|")
    assert v[:3] == ["TLSv1.2", seen["cipher"], seen["session_id"]], (v, seen)
    assert len(v[2]) == 64 and seen["client"] == "commonName=client,organizationName=Example", seen
    assert v[3:11] == ["CN=rsa www", "CN=Test CA", "-", TLS_HOST, "-", "spiffe://example/client", "-", "-"], v
    start, end = cert_dates(f"{pki}/rsa.crt")
    assert v[11] == str(int(start)), v
    assert v[12] == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(end)), v
    assert v[13] == "-", v
    pem = open(f"{pki}/rsa.crt").read()
    assert v[14] == urllib.parse.quote(pem, safe="-._~"), v
    assert lines[1] == "|".join(["-"] * 15), lines[1]
    # the server signed with RSA-PSS (its RSA key, the client's preference)
    assert ssl_stat(f, "sigalgs.rsa_pss_rsae_sha256") == 1
    assert stat(admin, "cluster.plain.ssl.handshake") is None


def test_transport_failure_reason_in_the_access_log(procs, pki, tls_server):
    """A failed verification: %UPSTREAM_TRANSPORT_FAILURE_REASON% is Envoy's
    TLS_error text (OpenSSL's error code, spaces made '_' as Envoy's
    formatter does), the 503 body has it with its spaces; no TLS details."""
    port = tls_server()
    al, path = file_access_log("%RESPONSE_FLAGS% %UPSTREAM_TLS_VERSION% %UPSTREAM_PEER_SUBJECT% "
                               "%UPSTREAM_TRANSPORT_FAILURE_REASON%\\n")
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"b": [port]}, cluster_extra=upstream_tls(pki, ca="ca2"), hcm_extra=al)
    run_sharp_config(procs, text, admin)
    f = Front()
    f.listen, f.admin = listen, admin
    status, body = get(f)
    reason = ("TLS_error:|167772294:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:verify cert failed: "
              "X509_verify_cert: certificate verification error at depth 0: unable to get local issuer "
              "certificate:TLS_error_end")
    assert status == 503 and body.decode().endswith("transport failure reason: " + reason), body
    assert log_lines(path, 1) == ["UF - - " + reason.replace(" ", "_")]
    # a SAN mismatch names the SAN matcher
    g = front(procs, [port], upstream_tls(pki, sans=[{"san_type": "DNS", "matcher": {"exact": "other.test"}}]))
    status, body = get(g)
    assert status == 503 and body.endswith(b"CERTIFICATE_VERIFY_FAILED:verify cert failed: SAN "
                                           b"matcher:TLS_error_end"), body


def test_retry_logs_the_last_attempts_connection(procs, pki, tls_server, upstream):
    """A try whose handshake failed (a plaintext host) and a retry that
    succeeded: the line has the retry's TLS details and no failure
    reason, as Envoy's UpstreamInfo is the last try's."""
    port = tls_server()
    al, path = file_access_log("%UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_HOST% %UPSTREAM_TLS_VERSION% "
                               "%UPSTREAM_PEER_SUBJECT% %UPSTREAM_TRANSPORT_FAILURE_REASON%\\n")
    listen, admin = free_port(), free_port()
    routes = ('- match: { prefix: "/" }\n  route:\n    cluster: b\n    retry_policy: { retry_on: connect-failure, '
              'num_retries: 1, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, '
              'typed_config: {"@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.'
              'PreviousHostsPredicate}}], host_selection_retry_max_attempts: 5 }\n')
    text = bootstrap_yaml(listen, admin, {"b": [upstream.port, port]}, routes=routes,
                          cluster_extra=upstream_tls(pki), hcm_extra=al)
    run_sharp_config(procs, text, admin, concurrency=1)
    f = Front()
    f.listen, f.admin = listen, admin
    for _ in range(2):
        status, body = get(f)
        assert status == 200, body
    lines = log_lines(path, 2)
    assert f"2 127.0.0.1:{port} TLSv1.2 CN=rsa www -" in lines, lines
    assert all(ln.endswith(f"127.0.0.1:{port} TLSv1.2 CN=rsa www -") for ln in lines), lines
    # a retry whose handshake fails too: its reason, no TLS details
    al, path = file_access_log("%UPSTREAM_REQUEST_ATTEMPT_COUNT% %UPSTREAM_TLS_VERSION% "
                               "%UPSTREAM_TRANSPORT_FAILURE_REASON%\\n")
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"b": [port]}, routes=routes, cluster_extra=upstream_tls(pki, ca="ca2"),
                          hcm_extra=al)
    run_sharp_config(procs, text, admin, concurrency=1)
    f.listen, f.admin = listen, admin
    assert get(f)[0] == 503
    assert log_lines(path, 1) == ["2 - TLS_error:|167772294:SSL_routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
                                  "verify_cert_failed:_X509_verify_cert:_certificate_verification_error_at_depth_0:"
                                  "_unable_to_get_local_issuer_certificate:TLS_error_end"]


def test_http2_upstream_streams_log_their_connection(procs, pki, tmp_path):
    """Requests multiplexed on one HTTP/2 connection to nginx each log its
    TLS details (the same session), and the connection's handshake counts
    its signature algorithm once."""
    port = nginx_tls(procs, pki, tmp_path, http2=True)
    h2 = ('typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n'
          '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
          '    explicit_http_config: { http2_protocol_options: {} }\n')
    al, path = file_access_log("%PROTOCOL% %UPSTREAM_TLS_VERSION% %UPSTREAM_TLS_SESSION_ID% %UPSTREAM_PEER_DNS_SAN%\\n")
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"b": [port]}, cluster_extra=upstream_tls(pki) + h2, hcm_extra=al)
    run_sharp_config(procs, text, admin, concurrency=1)
    f = Front()
    f.listen, f.admin = listen, admin
    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: get(f, "/proto"), range(3)))
    assert [r[0] for r in results] == [200, 200, 200]
    lines = log_lines(path, 3)
    assert len(set(lines)) == 1, lines
    proto, version, session, san = lines[0].split(" ")
    assert (proto, version, san) == ("HTTP/1.1", "TLSv1.2", TLS_HOST), lines
    assert len(session) == 64, lines
    assert stat(admin, "cluster.b.upstream_cx_http2_total") == 1
    assert ssl_stat(f, "sigalgs.rsa_pss_rsae_sha256") == 1
