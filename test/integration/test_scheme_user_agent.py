"""The connection manager's scheme_header_transformation and add_user_agent
as Envoy applies them: scheme_to_overwrite sets :scheme and
x-forwarded-proto of every request, match_upstream sets the upstream
:scheme from the cluster's transport (plaintext: http, whatever the
client sent), scheme_to_overwrite wins over match_upstream; add_user_agent
sets x-envoy-downstream-service-cluster from node.cluster (replacing the
client's), user-agent when the client sent none or an empty one, and
x-envoy-downstream-service-node from node.id; bad values refused."""
import json
import os
import socket

import pytest

from conftest import SLOW, PROTOS, bootstrap_yaml, free_port, run_sharp_config, validate_config

H1 = PROTOS["h1"]
H2UP = PROTOS["h2-up"]


def start(procs, upstream, hcm_extra="", extra="", cluster_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"backend": [upstream.port]}, hcm_extra=hcm_extra, cluster_extra=cluster_extra)
    run_sharp_config(procs, y + extra, admin)
    return listen


def seen(body):
    """The request headers the echo upstream received, lower-case names."""
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def h2_scheme_request(port, scheme):
    """GET /echo over HTTP/2 with prior knowledge and the given :scheme."""
    import h2.config
    import h2.connection
    import h2.events
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":scheme", scheme), (":authority", "x"), (":path", "/echo")],
                          end_stream=True)
        s.sendall(conn.data_to_send())
        body, status = bytearray(), None
        while True:
            data = s.recv(65536)
            assert data, "connection closed before the response ended"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    return status, bytes(body)
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError("stream reset")
            s.sendall(conn.data_to_send())
    finally:
        s.close()


def test_scheme_to_overwrite(procs):
    """https on a plaintext connection: the upstream gets :scheme https
    (an HTTP/2 upstream shows it) and x-forwarded-proto https."""
    up = H2UP.upstream(procs)
    port = start(procs, up, "scheme_header_transformation: { scheme_to_overwrite: https }\n",
                 cluster_extra=H2UP.cluster)
    s, _, b = H1.request(port, "/echo", headers={"x-forwarded-proto": "http"})
    assert s == 200
    h = seen(b)
    assert h[":scheme"] == "https" and h["x-forwarded-proto"] == "https"


def test_match_upstream(procs):
    """A client's :scheme https goes to a plaintext HTTP/2 upstream as http
    with match_upstream; without it, as the client sent it."""
    up = H2UP.upstream(procs)
    port = start(procs, up, "scheme_header_transformation: { match_upstream: true }\n", cluster_extra=H2UP.cluster)
    s, b = h2_scheme_request(port, "https")
    assert s == "200" and seen(b)[":scheme"] == "http"
    port = start(procs, up, cluster_extra=H2UP.cluster)
    s, b = h2_scheme_request(port, "https")
    assert s == "200" and seen(b)[":scheme"] == "https"
    # scheme_to_overwrite wins
    port = start(procs, up, "scheme_header_transformation: { scheme_to_overwrite: https, match_upstream: true }\n",
                 cluster_extra=H2UP.cluster)
    s, b = h2_scheme_request(port, "http")
    assert s == "200" and seen(b)[":scheme"] == "https"


def test_add_user_agent(procs, upstream):
    node = "node: { id: node-7, cluster: front }\n"
    port = start(procs, upstream, "add_user_agent: true\n", extra=node)
    s, _, b = H1.request(port, "/echo", headers={"x-envoy-downstream-service-cluster": "spoofed"})
    h = seen(b)
    assert h["x-envoy-downstream-service-cluster"] == "front"
    assert h["x-envoy-downstream-service-node"] == "node-7"
    # http.client sends no user-agent: the cluster fills it
    assert h["user-agent"] == "front"
    s, _, b = H1.request(port, "/echo", headers={"user-agent": "curl/8"})
    assert seen(b)["user-agent"] == "curl/8"
    s, _, b = H1.request(port, "/echo", headers={"user-agent": ""})
    assert seen(b)["user-agent"] == "front"
    # without node.id no node header; false does nothing
    port = start(procs, upstream, "add_user_agent: true\n", extra="node: { cluster: front }\n")
    h = seen(H1.request(port, "/echo")[2])
    assert h["x-envoy-downstream-service-cluster"] == "front" and "x-envoy-downstream-service-node" not in h
    port = start(procs, upstream, "add_user_agent: false\n", extra=node)
    h = seen(H1.request(port, "/echo")[2])
    assert "x-envoy-downstream-service-cluster" not in h and "user-agent" not in h


def test_bad_scheme_refused():
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]},
                       hcm_extra="scheme_header_transformation: { scheme_to_overwrite: ftp }\n")
    rc, out = validate_config(y)
    assert rc != 0 and "scheme_to_overwrite" in out and "[http https]" in out, out


CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
PROXY = os.path.join(CORPUS, "envoy__configs__envoyproxy_io_proxy.yaml")


@pytest.mark.skipif(not os.path.exists(PROXY), reason="corpus file missing")
def test_corpus_proxy_config_validates():
    """Envoy's configs/envoyproxy_io_proxy.yaml sets scheme_header_transformation."""
    text = open(PROXY).read()
    assert "scheme_header_transformation" in text
    rc, out = validate_config(text)
    assert rc == 0, out


def raw_h1(port, request):
    """Sends one raw HTTP/1.1 request; the response's status line and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                n = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                if len(body) >= n:
                    return head.split(b"\r\n", 1)[0].decode(), body[:n]
        head, _, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(), body


def test_http1_scheme(procs):
    """HTTP/1's :scheme as Envoy sets it: from the sanitized
    x-forwarded-proto (a trusted client's when it is http or https, else
    the connection's encryption), or from an absolute URL, whose scheme
    must be http, or https on an encrypted connection (400 otherwise)."""
    up = H2UP.upstream(procs)
    port = start(procs, up, cluster_extra=H2UP.cluster)
    s, _, b = H1.request(port, "/echo")
    assert s == 200 and seen(b)[":scheme"] == "http"
    s, _, b = H1.request(port, "/echo", headers={"x-forwarded-proto": "https"})
    assert s == 200 and seen(b)[":scheme"] == "https" and seen(b)["x-forwarded-proto"] == "https"
    s, _, b = H1.request(port, "/echo", headers={"x-forwarded-proto": "gopher"})
    assert s == 200 and seen(b)[":scheme"] == "http"
    status, body = raw_h1(port, b"GET http://x/echo HTTP/1.1\r\nhost: x\r\n\r\n")
    assert " 200 " in status and seen(body)[":scheme"] == "http"
    status, _ = raw_h1(port, b"GET https://x/echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert " 400 " in status, status
    status, _ = raw_h1(port, b"GET ftp://x/echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert " 400 " in status, status
    # use_remote_address (an edge): the client's x-forwarded-proto is replaced
    port = start(procs, up, "use_remote_address: true\n", cluster_extra=H2UP.cluster)
    s, _, b = H1.request(port, "/echo", headers={"x-forwarded-proto": "https"})
    assert s == 200 and seen(b)[":scheme"] == "http" and seen(b)["x-forwarded-proto"] == "http"
