#!/usr/bin/env python3
"""Runs SHARP on one of config/examples/ with the upstreams it needs.

    scripts/run_example.py config/examples/edge.yaml [--build build] [--dry-run]

Every cluster endpoint of the example (a socket_address) that nothing listens
on yet gets a sharp-test-upstream, named after its cluster and host, so the
example answers real requests. An endpoint that is already served (the demo
upstream of `make run` on 127.0.0.1:8080, for instance) is used as it is.
The examples' listener and admin ports differ from each other and from
`make run`'s (10000, 9901, 8080), so any of them runs beside it.
--dry-run prints what would be started and exits. Ctrl-C stops SHARP (it
drains) and the upstreams this script started.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import yaml


def load(path):
    with open(path) as f:
        if path.endswith((".yaml", ".yml")):
            return yaml.safe_load(f)
        return json.load(f)


def get(d, *names):
    """A field by its proto name or its JSON (lowerCamel) name."""
    for n in names:
        if isinstance(d, dict) and n in d:
            return d[n]
    return None


def sock(addr):
    sa = get(addr or {}, "socket_address", "socketAddress")
    if not sa:
        return None
    return get(sa, "address"), int(get(sa, "port_value", "portValue") or 0)


def listeners(cfg):
    """(name, host, port) of the admin and every listener."""
    out = []
    admin = get(cfg, "admin")
    if admin and sock(get(admin, "address")):
        out.append(("admin",) + sock(get(admin, "address")))
    res = get(cfg, "static_resources", "staticResources") or {}
    for lst in get(res, "listeners") or []:
        a = sock(get(lst, "address"))
        if a:
            out.append((get(lst, "name") or "listener",) + a)
    return out


def endpoints(cfg):
    """(cluster, host name, address, port) of every static endpoint."""
    out = []
    res = get(cfg, "static_resources", "staticResources") or {}
    for c in get(res, "clusters") or []:
        la = get(c, "load_assignment", "loadAssignment") or {}
        for loc in get(la, "endpoints") or []:
            for i, lb in enumerate(get(loc, "lb_endpoints", "lbEndpoints") or []):
                ep = get(lb, "endpoint") or {}
                a = sock(get(ep, "address"))
                if a:
                    out.append((get(c, "name"), get(ep, "hostname") or str(i)) + a)
    return out


def listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("example")
    ap.add_argument("--build", default="build")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--concurrency", default="2")
    args = ap.parse_args()
    cfg = load(args.example)
    upstream_bin = os.path.join(args.build, "test", "upstream", "sharp-test-upstream")
    sharp_bin = os.path.join(args.build, "proxy", "sharp")

    todo, seen = [], set()
    for cluster, host, addr, port in endpoints(cfg):
        if (addr, port) in seen:
            continue
        seen.add((addr, port))
        if listening(addr, port):
            print(f"upstream {cluster}/{host} {addr}:{port}: already served, used as it is")
        else:
            todo.append((cluster, host, addr, port))
    for cluster, host, addr, port in todo:
        print(f"upstream {cluster}/{host} {addr}:{port}: starting sharp-test-upstream")
    for name, addr, port in listeners(cfg):
        shown = "127.0.0.1" if addr in ("0.0.0.0", "::") else addr
        print(f"{name}: http://{shown}:{port}/")
    if args.dry_run:
        return 0

    procs = []

    def stop(*_):
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        for cluster, host, addr, port in todo:
            procs.append(subprocess.Popen(
                [upstream_bin, "--address", addr, "--port", str(port),
                 "--name", f"{cluster}/{host}", "--quiet"], stdout=subprocess.DEVNULL))
        for _, _, addr, port in todo:
            deadline = time.monotonic() + 5
            while not listening(addr, port):
                if time.monotonic() > deadline:
                    print(f"upstream {addr}:{port} did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        sharp = subprocess.Popen([sharp_bin, "-c", args.example, "--concurrency", args.concurrency])
        procs.append(sharp)
        signal.signal(signal.SIGTERM, lambda *_: sharp.send_signal(signal.SIGTERM))
        while True:
            try:
                return sharp.wait()
            except KeyboardInterrupt:
                continue  # the terminal sent SIGINT to SHARP too: it drains
    finally:
        stop()


if __name__ == "__main__":
    sys.exit(main())
