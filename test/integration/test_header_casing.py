"""Http1ProtocolOptions.header_key_format on the wire: proper_case_words
and the preserve_case stateful formatter, on the connection manager
(downstream) and on a cluster (upstream), checked byte for byte with raw
sockets on both sides: a client that sends and reads exact bytes, and an
upstream that records the request exactly as it arrived and answers bytes
of the test's choosing."""
import socket
import threading

import pytest

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, validate_config, wait_for

PRESERVE = ('header_key_format:\n'
            '  stateful_formatter:\n'
            '    name: preserve_case\n'
            '    typed_config:\n'
            '      "@type": type.googleapis.com/envoy.extensions.http.header_formatters.preserve_case.v3.'
            'PreserveCaseFormatterConfig\n')
PROPER = 'header_key_format: { proper_case_words: {} }\n'

RESPONSE = (b"HTTP/1.1 200 Very OK\r\nX-Upstream-MiXed: a\r\nContent-Type: text/plain\r\nETAG: \"e\"\r\n"
            b"x-lower: b\r\nContent-Length: 2\r\n\r\nhi")


class RawUpstream:
    """One connection at a time: records the bytes of each request head and
    answers `response` to it."""

    def __init__(self, response=RESPONSE):
        self.response = response
        self.heads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.done = False
        self.conns = []
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(10 * SLOW)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        raise EOFError
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.heads.append(head + b"\r\n\r\n")
                c.sendall(self.response)
        except (EOFError, OSError):
            pass
        c.close()

    def stop(self):
        self.done = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.t.join(10 * SLOW)


@pytest.fixture
def ups():
    started = []
    yield started
    for u in started:
        u.stop()


def ext(h1_opts):
    return ('typed_extension_protocol_options:\n'
            '  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n'
            '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n'
            '    explicit_http_config:\n'
            '      http_protocol_options:\n' + "".join("        " + ln + "\n" for ln in h1_opts.splitlines()))


def start(procs, ups, hcm_h1="", cluster_h1="", response=RESPONSE):
    up = RawUpstream(response)
    ups.append(up)
    listen, admin = free_port(), free_port()
    hcm = ("http_protocol_options:\n" + "".join("  " + ln + "\n" for ln in hcm_h1.splitlines())) if hcm_h1 else ""
    y = bootstrap_yaml(listen, admin, {"backend": [up.port]}, hcm_extra=hcm,
                       cluster_extra=ext(cluster_h1) if cluster_h1 else "")
    run_sharp_config(procs, y, admin)
    return listen, up


def exchange(port, request):
    """Sends the request bytes; returns the response head's bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    s.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, buf
        buf += d
    s.close()
    return buf.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"


REQUEST = (b"GET /p HTTP/1.1\r\nHost: example.COM\r\nX-Client-MiXed: 1\r\nuser-AGENT: t\r\n"
           b"x-client-mixed: 2\r\naccept: */*\r\n\r\n")


def lines(head):
    return head.split(b"\r\n")


def names(head):
    return [ln.split(b":", 1)[0] for ln in lines(head)[1:] if b":" in ln]


def test_default_lower_case(procs, ups):
    """Without header_key_format every name is written lower-case, as
    stored, both ways (the behaviour the feature leaves unchanged)."""
    listen, up = start(procs, ups)
    head = exchange(listen, REQUEST)
    assert lines(head)[0] == b"HTTP/1.1 200 OK"
    assert all(n == n.lower() for n in names(head)), head
    wait_for(lambda: up.heads, 5, "the request upstream")
    assert all(n == n.lower() for n in names(up.heads[0])), up.heads[0]


def test_preserve_case_both_ways(procs, ups):
    """Envoy's preserve_case on both sides: the request's names reach the
    upstream as the client spelled them (the first spelling of a name wins:
    both x-client-mixed lines go out as X-Client-MiXed), the response's
    names reach the client as the upstream spelled them; names the proxy
    adds are lower-case (formatter_type_on_envoy_headers DEFAULT), and the
    reason phrase is the standard one without forward_reason_phrase."""
    listen, up = start(procs, ups, hcm_h1=PRESERVE, cluster_h1=PRESERVE)
    head = exchange(listen, REQUEST)
    wait_for(lambda: up.heads, 5, "the request upstream")
    req = up.heads[0]
    assert lines(req)[0] == b"GET /p HTTP/1.1"
    assert b"\r\nHost: example.COM\r\n" in req, req
    assert b"\r\nX-Client-MiXed: 1\r\n" in req and b"\r\nX-Client-MiXed: 2\r\n" in req, req
    assert b"\r\nuser-AGENT: t\r\n" in req and b"\r\naccept: */*\r\n" in req, req
    assert b"\r\nx-forwarded-proto: http\r\n" in req and b"\r\nx-request-id: " in req, req
    assert lines(head)[0] == b"HTTP/1.1 200 OK"
    for want in (b"X-Upstream-MiXed: a", b"Content-Type: text/plain", b'ETAG: "e"', b"x-lower: b",
                 b"Content-Length: 2", b"x-envoy-upstream-service-time: "):
        assert b"\r\n" + want in head, (want, head)


def test_preserve_case_forward_reason_and_proper_others(procs, ups):
    """forward_reason_phrase (on the cluster: the side receiving responses)
    puts the upstream's reason phrase on the downstream status line;
    formatter_type_on_envoy_headers PROPER_CASE proper-cases the names
    the proxy adds (x-forwarded-proto, x-envoy-upstream-service-time)."""
    opts = PRESERVE + "      forward_reason_phrase: true\n      formatter_type_on_envoy_headers: PROPER_CASE\n"
    listen, up = start(procs, ups, hcm_h1=opts, cluster_h1=opts)
    head = exchange(listen, REQUEST)
    wait_for(lambda: up.heads, 5, "the request upstream")
    req = up.heads[0]
    assert b"\r\nX-Forwarded-Proto: http\r\n" in req and b"\r\nX-Request-Id: " in req, req
    assert b"\r\nuser-AGENT: t\r\n" in req and b"\r\naccept: */*\r\n" in req, req
    assert lines(head)[0] == b"HTTP/1.1 200 Very OK", head
    assert b"\r\nX-Envoy-Upstream-Service-Time: " in head and b"\r\nx-lower: b\r\n" in head, head


def test_preserve_case_only_where_configured(procs, ups):
    """The formatter belongs to the map the configured codec received: on
    the connection manager alone the request keeps its spellings and the
    response is lower-case; forward_reason_phrase there changes nothing."""
    listen, up = start(procs, ups, hcm_h1=PRESERVE + "      forward_reason_phrase: true\n")
    head = exchange(listen, REQUEST)
    wait_for(lambda: up.heads, 5, "the request upstream")
    assert b"\r\nX-Client-MiXed: 1\r\n" in up.heads[0]
    assert lines(head)[0] == b"HTTP/1.1 200 OK"
    assert all(n == n.lower() for n in names(head)), head


def test_proper_case_words(procs, ups):
    """proper_case_words: on the connection manager the response's names,
    on the cluster the request's (host and transfer-encoding, which the
    codec writes itself, included); Envoy's rule: the first character and
    any letter after a non-alphanumeric character upper-cased."""
    resp = (b"HTTP/1.1 200 OK\r\nx-upstream-mixed: a\r\nx-9abc_def$ghi: c\r\ncontent-length: 2\r\n\r\nhi")
    listen, up = start(procs, ups, hcm_h1=PROPER, cluster_h1=PROPER, response=resp)
    req = (b"POST /p HTTP/1.1\r\nhost: x\r\nx-client-mixed: 1\r\ntransfer-encoding: chunked\r\n\r\n"
           b"2\r\nab\r\n0\r\n\r\n")
    head = exchange(listen, req)
    assert b"\r\nX-Upstream-Mixed: a\r\n" in head and b"\r\nX-9abc_Def$Ghi: c\r\n" in head, head
    assert b"\r\nContent-Length: 2\r\n" in head and b"\r\nX-Envoy-Upstream-Service-Time: " in head, head
    wait_for(lambda: up.heads, 5, "the request upstream")
    r = up.heads[0]
    assert b"\r\nHost: x\r\n" in r and b"\r\nX-Client-Mixed: 1\r\n" in r, r
    assert b"\r\nTransfer-Encoding: chunked\r\n" in r, r


def test_proper_case_connection_close(procs, ups):
    """A header the downstream codec adds itself (connection: close on a
    closing response) is formatted too."""
    listen, up = start(procs, ups, hcm_h1=PROPER)
    head = exchange(listen, b"GET /p HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in head, head


BAD = [
    ('header_key_format: {}\n', "one of proper_case_words or stateful_formatter"),
    ('header_key_format:\n  stateful_formatter:\n    name: x\n    typed_config:\n'
     '      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n', "PreserveCaseFormatterConfig"),
    (PRESERVE + "      formatter_type_on_envoy_headers: 7\n", "formatter_type_on_envoy_headers"),
]


@pytest.mark.parametrize("opts,expect", BAD)
def test_bad_header_key_format(opts, expect):
    y = bootstrap_yaml(10000, 10001, {"b": [10002]},
                       hcm_extra="http_protocol_options:\n" + "".join("  " + ln + "\n" for ln in opts.splitlines()))
    rc, out = validate_config(y)
    assert rc != 0 and expect in out and "header_key_format" in out, out


def test_corpus_preserve_case_config_loads():
    import os
    path = ("/work/shared/envoy-corpus/"
            "envoy__docs__root__configuration__http__http_conn_man___include__preserve-case.yaml")
    if not os.path.exists(path):
        pytest.skip("corpus not present")
    rc, out = validate_config(open(path).read())
    assert rc == 0, out
