"""Several filter chains per listener (Envoy's filter_chain_match and
default_filter_chain): a connection takes the chain whose criteria it meets
most specifically, each chain with its own connection manager (its own
stat_prefix, routes and access log); a connection no chain takes goes to the
default chain, or is closed and counted in no_filter_chain_match. Clients
are curl from different loopback source addresses (--interface) and source
ports (--local-port); every chain answers with a direct response naming it."""
import socket
import subprocess

from conftest import SLOW, free_port, run_sharp_config, stat, validate_config as validate, wait_for


def chain(name, match=""):
    """A filter chain whose HCM (stat_prefix `name`) answers 200 `name`."""
    m = f"  filter_chain_match: {match}\n" if match else ""
    return f"""\
- name: {name}
{m}  filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      route_config:
        virtual_hosts:
        - name: all
          domains: ["*"]
          routes:
          - match: {{ prefix: "/" }}
            direct_response: {{ status: 200, body: {{ inline_string: "{name}" }} }}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def indent(text, n):
    return "".join(" " * n + line if line.strip() else line for line in text.splitlines(True))


TLS_INSPECTOR = ('- name: envoy.filters.listener.tls_inspector\n  typed_config:\n'
                 '    "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector\n')
HTTP_INSPECTOR = "- name: envoy.filters.listener.http_inspector\n"  # the name alone, as Envoy's older docs write it


def bootstrap(listen, admin, chains, default=None, listener_filters="", listener_extra=""):
    d = ""
    if default:
        body = chain(default)[len(f"- name: {default}\n"):]  # the chain's fields, as a mapping
        d = f"    default_filter_chain:\n      name: {default}\n{indent(body, 4)}"
    lf = f"    listener_filters:\n{indent(listener_filters, 4)}" if listener_filters else ""
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: multi
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
{lf}{indent(listener_extra, 4)}    filter_chains:
{indent("".join(chains), 4)}{d}"""


def get(port, source="127.0.0.1", local_port=None):
    args = ["curl", "-sS", "--max-time", str(5 * SLOW), "--interface", source]
    if local_port:
        args += ["--local-port", str(local_port)]
    r = subprocess.run(args + [f"http://127.0.0.1:{port}/"], capture_output=True, timeout=10 * SLOW)
    return r.returncode, r.stdout.decode()


def start(procs, chains, default=None, **kw):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap(listen, admin, chains, default, **kw), admin)
    return listen, admin


def test_source_address_picks_the_chain_else_the_default(procs):
    listen, admin = start(procs, [chain("from2", "{ source_prefix_ranges: [{ address_prefix: 127.0.0.2, prefix_len: 32 }] }"),
                                  chain("from_lo", "{ source_prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }] }"),
                                  chain("external", "{ source_type: EXTERNAL }")],
                          default="fallback")
    # the longer prefix wins for 127.0.0.2; the rest of 127/8 takes the /8
    assert get(listen, "127.0.0.2") == (0, "from2")
    assert get(listen, "127.0.0.3") == (0, "from_lo")
    assert get(listen, "127.0.0.1") == (0, "from_lo")
    # each chain's connection manager counts its own requests
    assert stat(admin, "http.from2.downstream_rq_total") == 1
    assert stat(admin, "http.from_lo.downstream_rq_total") == 2
    assert stat(admin, "http.fallback.downstream_rq_total") == 0


def test_no_chain_closes_the_connection_and_counts_it(procs):
    listen, admin = start(procs, [chain("from2", "{ source_prefix_ranges: [{ address_prefix: 127.0.0.2, prefix_len: 32 }] }")])
    assert get(listen, "127.0.0.2") == (0, "from2")
    rc, body = get(listen, "127.0.0.1")
    assert rc != 0 and body == ""  # closed before any response
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1
    assert stat(admin, "http.from2.downstream_cx_total") == 1
    # the refused connection is no longer counted anywhere
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_cx_active") == 0


def test_default_chain_takes_what_no_chain_matches(procs):
    listen, admin = start(procs, [chain("from2", "{ source_prefix_ranges: [{ address_prefix: 127.0.0.2, prefix_len: 32 }] }")],
                          default="fallback")
    assert get(listen, "127.0.0.5") == (0, "fallback")
    assert get(listen, "127.0.0.2") == (0, "from2")
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 0


def test_destination_and_source_port_criteria(procs):
    # a source port no other test uses at the same time: a free port now
    sport = free_port()
    listen, admin = start(procs, [chain("exact_dst", "{ prefix_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }] }"),
                                  chain("lo_dst", "{ prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }], "
                                                  f"source_ports: [{sport}] }}"),
                                  chain("other_dst", "{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 8 }] }")])
    # destination IP comes before source port: 127.0.0.1/32 is the most
    # specific destination, so lo_dst is out even for its source port
    assert get(listen, "127.0.0.1", sport) == (0, "exact_dst")
    assert get(listen, "127.0.0.1") == (0, "exact_dst")


def test_source_port_and_destination_port(procs):
    sport = free_port()
    listen = free_port()
    admin = free_port()
    chains = [chain("by_port", f"{{ destination_port: {listen}, source_ports: [{sport}] }}"), chain("any")]
    run_sharp_config(procs, bootstrap(listen, admin, chains), admin)
    assert get(listen, "127.0.0.1", sport) == (0, "by_port")
    # the destination port matched by_port, which rules out the catch-all
    # chain: Envoy's documented order, so another source port gets nothing
    rc, _ = get(listen, "127.0.0.1")
    assert rc != 0
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1


def test_config_errors():
    listen, admin = free_port(), free_port()
    # the same matching rules twice: Envoy's error
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ source_ports: [1000, 2000] }"),
                                                           chain("b", "{ source_ports: [2000] }")]))
    assert rc == 1 and "multiple filter chains with the same matching rules are defined" in out, out
    rc, out = validate(bootstrap(listen, admin, [chain("a"), chain("b")]))
    assert rc == 1 and "multiple filter chains with the same matching rules" in out, out
    # a prefix that is not an address, a port out of range
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ prefix_ranges: [{ address_prefix: nope, prefix_len: 8 }] }")]))
    assert rc == 1 and "filter_chains[0].filter_chain_match.prefix_ranges[0]" in out and "malformed IP address" in out, out
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ source_ports: [70000] }")]))
    assert rc == 1 and "source_ports[0]" in out, out
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ destination_port: 0 }"), chain("b")]))
    assert rc == 1 and "destination_port" in out, out
    # criteria that need the TLS inspector get one, as Envoy injects it
    for match in ("{ server_names: [example.com] }", "{ application_protocols: [h2] }",
                  "{ transport_protocol: tls }"):
        rc, out = validate(bootstrap(listen, admin, [chain("a", match), chain("b")]))
        assert rc == 0 and "trying to inject it" in out, (match, out)
    # ... but not for plaintext: criteria no listener filter can fill are
    # refused, naming the filter (without it they could never match)
    for match, feature in (("{ transport_protocol: raw_buffer, server_names: [example.com] }", "tls_inspector"),
                           ("{ transport_protocol: raw_buffer, application_protocols: [h2c] }", "http_inspector")):
        rc, out = validate(bootstrap(listen, admin, [chain("a", match), chain("b")]))
        assert rc == 1 and "needs the envoy.filters.listener." in out and feature in out, (match, out)
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ server_names: ['www.*.com'] }"), chain("b")],
                                 listener_filters=TLS_INSPECTOR))
    assert rc == 1 and "partial wildcards are not supported" in out, out
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ server_names: ['*.example.com'] }"), chain("b")],
                                 listener_filters=TLS_INSPECTOR))
    assert rc == 0, out
    rc, out = validate(bootstrap(listen, admin, [chain("a")],
                                 listener_filters="- name: envoy.filters.listener.original_src\n"))
    assert rc == 1 and "original_src" in out, out
    # raw_buffer is what every connection has without a TLS inspector
    rc, out = validate(bootstrap(listen, admin, [chain("a", "{ transport_protocol: raw_buffer }")]))
    assert rc == 0, out


def test_raw_buffer_transport_protocol_matches(procs):
    listen, admin = start(procs, [chain("raw", "{ transport_protocol: raw_buffer }"),
                                  chain("other", "{ transport_protocol: something_else }")])
    assert get(listen) == (0, "raw")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"raw" in s.recv(4096)
    s.close()


def test_http_inspector_picks_the_chain_by_protocol(procs):
    """http_inspector: a plaintext HTTP/1.1 request line gives "http/1.1",
    the HTTP/2 preface "h2c"; chains match on application_protocols."""
    listen, admin = start(procs, [chain("h1", "{ application_protocols: [http/1.1, http/1.0] }"),
                                  chain("h2", "{ application_protocols: [h2c] }")],
                          listener_filters=HTTP_INSPECTOR)
    assert get(listen) == (0, "h1")
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", str(5 * SLOW),
                        f"http://127.0.0.1:{listen}/"], capture_output=True, timeout=10 * SLOW)
    assert r.stdout.decode() == "h2", r.stderr
    assert stat(admin, "http_inspector.http11_found") == 1
    assert stat(admin, "http_inspector.http2_found") == 1
    # bytes that are not HTTP: no protocol, no chain, closed
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"\x00\x01garbage that is not a request line\r\n")
    assert s.recv(100) == b""
    s.close()
    assert stat(admin, "http_inspector.http_not_found") == 1
    assert stat(admin, f"listener.127.0.0.1_{listen}.no_filter_chain_match") == 1


def test_tls_inspector_finds_plaintext(procs):
    """tls_inspector on plaintext: tls_not_found, transport raw_buffer; a
    chain for transport_protocol tls is not taken."""
    listen, admin = start(procs, [chain("tls", "{ transport_protocol: tls }"),
                                  chain("plain", "{ transport_protocol: raw_buffer }")],
                          listener_filters=TLS_INSPECTOR)
    assert get(listen) == (0, "plain")
    assert stat(admin, "tls_inspector.tls_not_found") == 1
    assert stat(admin, "tls_inspector.tls_found") == 0


def test_listener_filters_timeout(procs):
    """A client that connects and sends nothing: after
    listener_filters_timeout the socket is closed (downstream_pre_cx_timeout);
    with continue_on_listener_filters_timeout the chain is chosen from what
    is known and the connection served."""
    listen, admin = start(procs, [chain("plain")], listener_filters=TLS_INSPECTOR,
                          listener_extra="listener_filters_timeout: 0.3s\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    wait_for(lambda: stat(admin, f"listener.127.0.0.1_{listen}.downstream_pre_cx_active") == 1, 2,
             "the socket in its listener filters")
    assert s.recv(100) == b""  # closed by the timeout
    s.close()
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_pre_cx_timeout") == 1
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_pre_cx_active") == 0
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_cx_total") == 0

    listen, admin = start(procs, [chain("plain")], listener_filters=TLS_INSPECTOR,
                          listener_extra="listener_filters_timeout: 0.3s\ncontinue_on_listener_filters_timeout: true\n")
    s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
    s.sendall(b"\x16")  # the start of a handshake record, then silence
    # the timeout gives the connection to the only chain, which serves it
    wait_for(lambda: stat(admin, "http.plain.downstream_cx_total") == 1, 3, "the chain taking the connection")
    assert stat(admin, f"listener.127.0.0.1_{listen}.downstream_pre_cx_timeout") == 1
    s.close()
