"""What an idle downstream HTTP/2 connection keeps resident: 500 clients
send the preface and SETTINGS, acknowledge SHARP's SETTINGS and stay idle;
SHARP's RSS (/proc/PID/status VmRSS, one worker) grows by less than a
bound per connection.

The bound, 14 KiB: what such a connection needs written is nghttp2's
session (2.9 KiB, zeroed), its two HPACK tables' rings (1 KiB each), the
first page of its frame buffer, SHARP's connection (2.3 KiB) and its
HTTP/2 state, about 12.3 KiB measured with glibc's allocator. nghttp2's
stream map (4 KiB, written only once a stream opens) is left unwritten
until then, and the outbound frame queue starts at a few entries: without
these the growth was 17.3 KiB per connection."""
import selectors
import socket
import struct
import time

import pytest

from conftest import ALLOCATOR, SLOW, bootstrap_yaml, free_port, run_sharp_config, wait_for

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = struct.pack(">I", 0)[1:] + bytes([4, 0]) + struct.pack(">I", 0)
SETTINGS_ACK = struct.pack(">I", 0)[1:] + bytes([4, 1]) + struct.pack(">I", 0)
CONNS = 500
BOUND_KIB = 14.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def frames(buf):
    """(type, flags) of the complete frames in buf, and the rest."""
    out = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[0:3], "big")
        if len(buf) < 9 + n:
            break
        out.append((buf[3], buf[4]))
        buf = buf[9 + n:]
    return out, buf


@pytest.mark.skipif(ALLOCATOR != "glibc", reason="the bound is measured with glibc's allocator")
def test_idle_h2_connections_rss_bounded(procs, upstream):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"app": [upstream.port]})
    sharp = run_sharp_config(procs, y, admin, concurrency=1)
    pid = sharp.p.pid
    before = rss_kib(pid)
    sel = selectors.DefaultSelector()
    state = {}  # socket -> [buffer, ready, closed]
    try:
        for i in range(CONNS):
            s = socket.create_connection(("127.0.0.1", listen), timeout=5 * SLOW)
            s.sendall(PREFACE + SETTINGS)
            s.setblocking(False)
            state[s] = [b"", False, False]
            sel.register(s, selectors.EVENT_READ)

        def pump():
            for key, _ in sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                st = state[s]
                if not data:
                    st[2] = True
                    sel.unregister(s)
                    continue
                got, st[0] = frames(st[0] + data)
                for ftype, flags in got:
                    if ftype == 4 and not flags & 1:
                        s.sendall(SETTINGS_ACK)
                        st[1] = True
                    elif ftype == 7:
                        st[2] = True
            return all(st[1] or st[2] for st in state.values())

        wait_for(pump, 20, "SETTINGS on every connection")
        # SHARP reads the acknowledgements; the connections then stay idle
        deadline = time.time() + 1.0
        while time.time() < deadline:
            pump()
        held = rss_kib(pid)
        assert all(st[1] and not st[2] for st in state.values()), "a connection was refused or closed"
        per_conn = (held - before) / CONNS
        assert per_conn < BOUND_KIB, f"{per_conn:.2f} KiB per idle HTTP/2 connection ({before} -> {held} KiB)"
    finally:
        for s in state:
            s.close()
