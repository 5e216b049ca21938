#!/usr/bin/env python3
"""Helpers for bench/h2.sh (standard library only).

  h2_tool.py pct LOGFILE
      h2load --log-file rows (start_us, status, duration_us): prints
      "<rows> <p50_ms> <p99_ms> <non_2xx>" (nearest-rank percentiles over
      every logged request; status -1 is a request that got no response).

  h2_tool.py idle --port P --conns N --hold S --pids PID[,PID...]
      Opens N HTTP/2 cleartext connections with prior knowledge (client
      preface and an empty SETTINGS, the server's SETTINGS acknowledged),
      leaves them idle for S seconds, then reads VmRSS of the given
      processes (summed) and closes them all. Prints one line:
      "rss_before_kib=.. rss_held_kib=.. ready=.. open_after_hold=.."
      where ready counts connections whose server sent SETTINGS and
      open_after_hold those the server had not closed by the time RSS was
      read.
"""
import argparse
import selectors
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = struct.pack(">I", 0)[1:] + bytes([4, 0]) + struct.pack(">I", 0)
SETTINGS_ACK = struct.pack(">I", 0)[1:] + bytes([4, 1]) + struct.pack(">I", 0)


def pct(path):
    durs = []
    bad = 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            status = int(parts[1])
            if not 200 <= status < 300:
                bad += 1
            durs.append(int(parts[2]))
    if not durs:
        print("0 n/a n/a 0")
        return

    def rank(q):  # nearest rank
        i = max(0, min(len(durs) - 1, int(-(-q * len(durs) // 1)) - 1))
        return durs[i] / 1000.0

    durs.sort()
    print("%d %.3f %.3f %d" % (len(durs), rank(0.50), rank(0.99), bad))


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.ready = False
        self.closed = False

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                break
            ftype, flags = self.buf[3], self.buf[4]
            self.buf = self.buf[9 + length:]
            if ftype == 4 and not flags & 1:  # SETTINGS, not an ACK
                self.sock.sendall(SETTINGS_ACK)
                self.ready = True
            elif ftype == 7:  # GOAWAY: the server is closing us
                self.closed = True


def pump(sel, conns, until, stop_when_ready):
    while time.monotonic() < until:
        if stop_when_ready and all(c.ready or c.closed for c in conns):
            return
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                c.closed = True
                sel.unregister(c.sock)
                continue
            c.feed(data)


def idle(args):
    pids = [int(p) for p in args.pids.split(",") if p]
    before = rss_kib(pids)
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(args.conns):
        s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
        s.sendall(PREFACE + SETTINGS)
        s.setblocking(False)
        c = Conn(s)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
        if len(conns) % 100 == 0:  # keep the accept queue short
            pump(sel, conns, time.monotonic() + 0.01, False)
    pump(sel, conns, time.monotonic() + 10, True)
    ready = sum(c.ready for c in conns)
    pump(sel, conns, time.monotonic() + args.hold, False)
    held = rss_kib(pids)
    still = sum(not c.closed for c in conns)
    for c in conns:
        c.sock.close()
    print("rss_before_kib=%d rss_held_kib=%d ready=%d open_after_hold=%d"
          % (before, held, ready, still))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pct")
    p.add_argument("log")
    i = sub.add_parser("idle")
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--conns", type=int, default=1000)
    i.add_argument("--hold", type=float, default=2.0)
    i.add_argument("--pids", required=True)
    a = ap.parse_args()
    if a.cmd == "pct":
        pct(a.log)
    else:
        idle(a)


if __name__ == "__main__":
    sys.exit(main())
