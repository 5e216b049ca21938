"""Listener socket options: freebind (IP_FREEBIND: an address this host does
not have, TEST-NET-1, can be bound) and socket_address.ipv4_compat (an IPv6
listener without IPV6_V6ONLY: on the IPv4-mapped loopback it takes IPv4
clients, whose addresses are then the IPv4 ones, as Envoy's)."""
import os
import subprocess
import tempfile

from conftest import SANITIZED, SHARP, bootstrap_yaml, free_port, raw_request, run_sharp_config, validate_config, \
    wait_for

LOG_FORMAT = "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%\\n"


def with_address(yaml_text, listen, address, extra=""):
    old = f"address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}\n"
    new = f"address: {{ socket_address: {{ address: \"{address}\", port_value: {listen}{extra} }} }}\n"
    assert old in yaml_text
    return yaml_text.replace(old, new, 1)


def start_fails(text):
    d = tempfile.mkdtemp()
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([SHARP, "-c", p], capture_output=True, text=True, timeout=60 if SANITIZED else 20)
    return r.returncode, r.stdout + r.stderr


def test_freebind_binds_an_address_the_host_does_not_have(procs, upstream):
    listen, admin = free_port(), free_port()
    y = with_address(bootstrap_yaml(listen, admin, {"b": [upstream.port]}), listen, "192.0.2.1")
    rc, out = start_fails(y)
    assert rc != 0 and "192.0.2.1" in out, out
    run_sharp_config(procs, y.replace("  - name: listener_0\n", "  - name: listener_0\n    freebind: true\n", 1), admin)


def test_freebind_refused_on_a_pipe():
    y = bootstrap_yaml(10000, 9901, {"b": [8080]})
    y = y.replace("address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }",
                  "address: { pipe: { path: /tmp/sharp-fb.sock } }\n    freebind: true", 1)
    rc, out = validate_config(y)
    assert rc == 1 and "freebind" in out, out


def test_ipv4_compat_takes_ipv4_clients(procs, path_upstream):
    listen, admin = free_port(), free_port()
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-al-"), "access.log")
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          "    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    path: {log}\n"
          f"    log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\" }} }}\n")
    base = bootstrap_yaml(listen, admin, {"b": [path_upstream.port]}, hcm_extra=al)
    # without ipv4_compat the socket is IPv6 only: the mapped address does not bind
    rc, out = start_fails(with_address(base, listen, "::ffff:127.0.0.1"))
    assert rc != 0 and "bind" in out, out
    run_sharp_config(procs, with_address(base, listen, "::ffff:127.0.0.1", ", ipv4_compat: true"), admin)
    st, _, _, _ = raw_request(listen, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert st == 200
    line = wait_for(lambda: os.path.exists(log) and open(log).read().strip(), 5, "the access log line")
    assert line == "127.0.0.1 127.0.0.1", line


def test_ipv4_compat_only_on_listener_addresses():
    y = bootstrap_yaml(10000, 9901, {"b": [8080]})
    y = y.replace("address: 127.0.0.1, port_value: 8080", "address: 127.0.0.1, port_value: 8080, ipv4_compat: true")
    rc, out = validate_config(y)
    assert rc == 1 and "ipv4_compat" in out, out
