"""Accepting on TCP listeners (proxy/worker.c): one accept4 per readiness of
the listening socket, the peer's address from accept4, and a worker out of
file descriptors that closes the connections waiting in the backlog (a
reserved descriptor, as libuv's uv_listen) instead of spinning on the
level-triggered socket, then accepts again once descriptors are free."""
import os
import resource
import socket
import time

from conftest import SHARP, SLOW, Proc, free_port, h1_request, wait_for

NOFILE = 96


def config(port, admin):
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: l
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          route_config:
            virtual_hosts:
            - name: v
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: ok }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_descriptors_closes_waiting_connections_without_spinning(procs, tmp_path):
    port, admin = free_port(), free_port()
    cfg = tmp_path / "b.yaml"
    cfg.write_text(config(port, admin))

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    s = Proc([SHARP, "-c", str(cfg), "--concurrency", "1", "--kernel-signals", "off"], preexec_fn=low_limit)
    procs.append(s)
    wait_for(lambda: _serves(port), 15, "sharp serving")
    pid = s.p.pid
    # idle connections until the worker holds its last descriptor; more
    # wait in the backlog, where the worker finds it cannot take them
    held = []
    try:
        for _ in range(NOFILE + 20):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(c)
        wait_for(lambda: open_fds(pid) >= NOFILE - 1, 10, "the worker out of descriptors")
        # the ones it could not take were accepted and closed: their
        # clients read the end of the connection
        closed = 0
        for c in held[-10:]:
            c.settimeout(5 * SLOW)
            try:
                if c.recv(1) == b"":
                    closed += 1
            except (ConnectionResetError, socket.timeout):
                pass
        assert closed > 0, "no waiting connection was closed"
        # nothing waits any more: the loop sleeps (a level-triggered
        # listening socket with a connection it cannot accept would keep it
        # busy all the time)
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        time.sleep(1.0)
        used = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        assert used < 0.3, f"the worker spins: {used:.2f} CPU seconds per second"
    finally:
        for c in held:
            c.close()
    # descriptors free again: accepted and served as before
    wait_for(lambda: _serves(port), 15, "sharp serving again")
    assert s.p.poll() is None


def _serves(port):
    try:
        return h1_request(port, "/", timeout=2)[0] == 200
    except Exception:
        return False
