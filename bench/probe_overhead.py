#!/usr/bin/env python3
"""The eBPF probes' cost (bench/probe_overhead.sh runs this as root, inside
a network namespace of its own: everything talks over its loopback).

cpu (MODE=cpu or both): SHARP with --kernel-signals off and auto (the eBPF
probes), ROUNDS rounds in turn, wrk -t2 -cCONNS closed-loop through SHARP to
one sharp-test-upstream for DURATION_S seconds (REQ_PATH, "/": keep-alive
upstream connections; "/?hdr=connection:close": the upstream closes each
connection after its response, so SHARP connects once per request). Reported per round and as
medians: requests/s, SHARP's CPU per request (/proc/<pid>/stat), and for
the probes the kernel's own accounting of each program's run time
(bpf_stats_enabled: run_time_ns and run_cnt per program, this SHARP's
programs only) per request, and its share of SHARP's CPU per request in the
same run. The programs are global: their run time includes every TCP event
of the machine while the round runs (the other namespaces' traffic too),
which is their real cost. The accounting itself costs each run two clock
reads: an empty program (it returns at once) attached to the same
tracepoint, sock:inet_sock_set_state as a BTF-enabled tracepoint, for the
whole measurement (off rounds too, so both modes carry it) gives that
floor per run in the same rounds, and the probes' cost is printed both
gross (the kernel's run_time_ns) and net of it (gross minus the probes'
runs times the floor): the net part is SHARP's own work, the rest a run's
entry and the accounting's clock, which no change inside the programs can
remove. Set FLOOR=0 to leave it out.

memory (MODE=memory or both): SHARP with --kernel-signals off and auto,
each through CYCLES cycles of: h2load sends NCONN requests at once on
H2_CONNS HTTP/2 connections, each request held by the upstream for HOLD_MS
(SHARP opens NCONN HTTP/1.1 upstream connections, one per request in
flight), then the responses come (with `connection: close`: SHARP closes
its upstream connections) and the clients close. Measured when SHARP
is idle, when all NCONN upstream connections are established, and
SETTLE_S seconds after they closed: SHARP's RSS (VmRSS), the memory of the
BPF maps SHARP loaded (bpftool's bytes_memlock, each map) and the socket
option memory of SHARP's upstream sockets (ss -m `o`: where per-socket BPF
storage is charged); and, while the connections are held, each program's
runs and kernel time per second (the interval's socket walk among them).

PERF=1 (cpu): each round's load also runs under `perf record -a -e
cpu-clock -c 100000` (a sample per 100 us of any CPU's time), and the
samples in the probes' own programs (this SHARP's) and in the kernel's
dispatch to them (bpf_trace_run*, __bpf_trace_*, __traceiter_* of the
tracepoints; __cgroup_bpf_run_filter_sock_ops for sock_ops) are reported
per request and against SHARP's CPU per request: the dispatch, which the
kernel's run_time_ns does not see, included. bpf_stats stays off then (its
two clock reads a run would count as dispatch: no run_time_ns, no runs),
and so does the floor's empty program (its own dispatch would count).
Other processes' programs on the same tracepoints meanwhile (another
SHARP's, whose programs have the same names) count too: each round says
how many were loaded.

Every process started here is stopped by PID."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.abspath(os.environ.get("BUILD", os.path.join(ROOT, "build")))
SHARP = os.path.join(BUILD, "proxy", "sharp")
UPSTREAM = os.path.join(BUILD, "test", "upstream", "sharp-test-upstream")
MODE = os.environ.get("MODE", "both")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION_S = int(os.environ.get("DURATION_S", "5"))
CONNS = int(os.environ.get("CONNS", "32"))
NCONN = int(os.environ.get("NCONN", "10000"))
CYCLES = int(os.environ.get("CYCLES", "2"))
HOLD_MS = int(os.environ.get("HOLD_MS", "20000"))
SETTLE_S = int(os.environ.get("SETTLE_S", "3"))
H2_CONNS = int(os.environ.get("H2_CONNS", "20"))
MODES = os.environ.get("MODES", "off auto").split()
# "/?hdr=connection:close": a new upstream connection per request
REQ_PATH = os.environ.get("REQ_PATH", "/")
PERF = os.environ.get("PERF", "0") != "0"
FLOOR = os.environ.get("FLOOR", "1") != "0" and not PERF
LISTEN, ADMIN, UPORT = 10000, 9901, 8080

PROCS = []
WORK = tempfile.mkdtemp(prefix="sharp-probe-cost-")  # bootstraps and SHARP's logs, removed at the end


def start(args, **kw):
    p = subprocess.Popen(args, **kw)
    PROCS.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def bootstrap():
    # circuit breakers above NCONN (Envoy's defaults are 1024), no route
    # timeout (the upstream holds the requests)
    n = max(NCONN * 2, 1024)
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {ADMIN} }} }}
static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {LISTEN} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: up, timeout: 0s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - {{ max_connections: {n}, max_pending_requests: {n}, max_requests: {n} }}
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {UPORT} }} }} }}
"""


def http_get(port, path):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def start_upstream():
    p = start([UPSTREAM, "--address", "127.0.0.1", "--port", str(UPORT), "--quiet"], stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    assert line.startswith("listening on"), line
    return p


def start_sharp(mode):
    logpath = os.path.join(WORK, f"sharp-{mode}.log")
    path = os.path.join(WORK, "bootstrap.yaml")
    with open(path, "w") as f:
        f.write(bootstrap())
    log = open(logpath, "w")
    args = [SHARP, "-c", path, "--concurrency", "2", "-l", "warn", "--kernel-signals", mode]
    p = start(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 20
    while True:
        if p.poll() is not None:
            raise RuntimeError("sharp exited: " + open(logpath).read())
        try:
            if http_get(ADMIN, "/ready")[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise TimeoutError("sharp not ready")
        time.sleep(0.05)
    kern = json.loads(http_get(ADMIN, "/kernel")[1])
    return p, kern


def bpftool(*args):
    r = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True, timeout=30)
    try:
        return json.loads(r.stdout or "[]")
    except ValueError:
        return []


def progs(prefix="sharp_"):
    return {p["id"]: p for p in bpftool("prog", "show") if p.get("name", "").startswith(prefix)}


def fd_ids(pid, field):
    """The BPF program (prog_id) or map (map_id) ids the process holds
    descriptors of: its own probes, whatever else runs on the machine."""
    ids = set()
    d = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(d):
        try:
            with open(os.path.join(d, fd)) as f:
                m = re.search(rf"^{field}:\s+(\d+)", f.read(), re.M)
        except OSError:
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


# ---- the accounting's floor --------------------------------------------

FLOOR_NAME = "floor_set_state"
FLOOR_SRC = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tp_btf/inet_sock_set_state")
int floor_set_state(void *ctx)
{
    return 0;
}
"""


class Floor:
    """An empty program on sock:inet_sock_set_state (BTF-enabled, as the
    probes' own), loaded and attached through libbpf by this process: its
    run_time_ns / run_cnt is what a run costs under bpf_stats before any
    instruction of a program."""

    def __init__(self):
        import ctypes
        src, obj = os.path.join(WORK, "floor.bpf.c"), os.path.join(WORK, "floor.bpf.o")
        with open(src, "w") as f:
            f.write(FLOOR_SRC)
        # the kernel's types as the build dumped them for the probes
        subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-I", os.path.join(BUILD, "bpf"), "-c", src, "-o", obj],
                       check=True, timeout=60)
        lib = self.lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        vp = ctypes.c_void_p
        lib.bpf_object__open_file.restype, lib.bpf_object__open_file.argtypes = vp, [ctypes.c_char_p, vp]
        lib.bpf_object__load.argtypes = [vp]
        lib.bpf_object__find_program_by_name.restype = vp
        lib.bpf_object__find_program_by_name.argtypes = [vp, ctypes.c_char_p]
        lib.bpf_program__attach.restype, lib.bpf_program__attach.argtypes = vp, [vp]
        lib.bpf_program__fd.argtypes = [vp]
        lib.bpf_link__destroy.argtypes = [vp]
        lib.bpf_object__close.argtypes = [vp]
        self.obj = lib.bpf_object__open_file(obj.encode(), None)
        if not self.obj or lib.bpf_object__load(self.obj) != 0:
            raise RuntimeError("the floor program does not load")
        prog = lib.bpf_object__find_program_by_name(self.obj, FLOOR_NAME.encode())
        self.link = lib.bpf_program__attach(prog)
        if not self.link:
            raise RuntimeError("the floor program does not attach")
        self.ids = fd_ids(os.getpid(), "prog_id")

    def sample(self):
        """(run_time_ns, run_cnt) so far."""
        for k, v in progs(FLOOR_NAME).items():
            if k in self.ids:
                return v.get("run_time_ns", 0), v.get("run_cnt", 0)
        return 0, 0

    def close(self):
        self.lib.bpf_link__destroy(self.link)
        self.lib.bpf_object__close(self.obj)


# ---- cpu ---------------------------------------------------------------

def cpu_round(mode, floor):
    up = start_upstream()
    try:
        sharp, kern = start_sharp(mode)
        try:
            mine = fd_ids(sharp.pid, "prog_id")  # this SHARP's probes
            hz = os.sysconf("SC_CLK_TCK")
            p0 = {k: v for k, v in progs().items() if k in mine}
            f0 = floor.sample() if floor else (0, 0)
            c0 = cpu_ticks(sharp.pid)
            # other processes' probes (another SHARP's) on the machine: they run
            # on this load's sockets too, and perf counts them with these
            others = len([k for k in progs() if k not in mine])
            wrk = ["wrk", "-t", "2", "-c", str(CONNS), "-d", f"{DURATION_S}s",
                   f"http://127.0.0.1:{LISTEN}{REQ_PATH}"]
            perf_data = os.path.join(WORK, "perf.data")
            if PERF:
                wrk = ["perf", "record", "-a", "-q", "-e", "cpu-clock", "-c", str(PERF_PERIOD_NS), "-o", perf_data,
                       "--", *wrk]
            r = subprocess.run(wrk, capture_output=True, text=True, timeout=DURATION_S + 60)
            c1 = cpu_ticks(sharp.pid)
            others = max(others, len([k for k in progs() if k not in mine]))
            f1 = floor.sample() if floor else (0, 0)
            p1 = {k: v for k, v in progs().items() if k in mine}
        finally:
            stop(sharp)
    finally:
        stop(up)
    n = int(re.search(r"(\d+) requests in", r.stdout).group(1))
    perf = perf_samples(perf_data) if PERF else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
    per = {}
    for k, v in p1.items():
        a = p0.get(k, {})
        per[v["name"]] = ((v.get("run_time_ns", 0) - a.get("run_time_ns", 0)) / n,
                          (v.get("run_cnt", 0) - a.get("run_cnt", 0)) / n)
    fruns = f1[1] - f0[1]
    # the floor per run (nan without the floor, or without a run of it)
    fns = (f1[0] - f0[0]) / fruns if fruns else float("nan")
    probe_ns, runs = sum(x[0] for x in per.values()), sum(x[1] for x in per.values())
    return {"mode": mode, "source": kern.get("source"), "attach": kern.get("attach", ""), "rps": rps,
            "sharp_us": (c1 - c0) / hz * 1e6 / n, "per": per, "probe_ns": probe_ns, "runs": runs,
            "floor_ns": fns, "net_ns": probe_ns - runs * fns, "perf": perf, "n": n, "others": others}


PERF_PERIOD_NS = 100000
# the kernel's dispatch to the probes' programs: BTF-enabled and raw
# tracepoints (the tracepoint's iterator, its BPF probe, bpf_trace_run<n>
# per program attached) and sock_ops
DISPATCH = re.compile(r"^(bpf_trace_run\d|__bpf_trace_(inet_sock_set_state|tcp_\w+)|"
                      r"__traceiter_(inet_sock_set_state|tcp_\w+)|__cgroup_bpf_run_filter_sock_ops)$")


def perf_samples(path):
    """From a round's perf record: samples in SHARP's programs
    (bpf_prog_<tag>_sharp_*: another SHARP's identical programs have the
    same name) and in the dispatch to them (DISPATCH), any CPU, any task."""
    r = subprocess.run(["perf", "report", "-i", path, "--stdio", "-n", "-q", "--sort", "comm,sym"],
                       capture_output=True, text=True, timeout=300)
    out = {"progs": 0, "dispatch": 0}
    for ln in r.stdout.splitlines():
        m = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)\s+\[[^\]]+\]\s+(\S+)", ln)
        if not m:
            continue
        n, sym = int(m.group(1)), m.group(3)
        if re.match(r"bpf_prog_[0-9a-f]+_sharp_", sym):
            out["progs"] += n
        elif DISPATCH.match(sym):
            out["dispatch"] += n
    os.unlink(path)
    return out


def cpu():
    print(f"== CPU per request: wrk -t2 -c{CONNS} {DURATION_S}s {REQ_PATH} through SHARP (2 workers) to one "
          f"upstream, loopback, {ROUNDS} rounds of {' / '.join(MODES)}", flush=True)
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        was = f.read().strip()
    # not with PERF: the accounting's clock reads would count in the dispatch
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("0" if PERF else "1")
    rows = {m: [] for m in MODES}
    floor = None
    try:
        if FLOOR:
            floor = Floor()
            print(f"(an empty program, {FLOOR_NAME}, on sock:inet_sock_set_state (tp_btf) through all rounds: "
                  f"the accounting's floor per run, measured in each round)", flush=True)
        for i in range(ROUNDS):
            for m in MODES:
                x = cpu_round(m, floor)
                rows[m].append(x)
                extra = ""
                if x["per"] and not PERF:
                    extra = (f"  probes gross {x['probe_ns']:.1f} ns/req in {x['runs']:.2f} runs/req = "
                             f"{x['probe_ns'] / 1000 / x['sharp_us'] * 100:.2f}% of SHARP's CPU/req")
                    if floor:
                        extra += (f"; floor {x['floor_ns']:.1f} ns/run, net {x['net_ns']:.1f} ns/req = "
                                  f"{x['net_ns'] / 1000 / x['sharp_us'] * 100:.2f}%")
                if x["perf"] and x["source"] == "ebpf":
                    pf = x["perf"]
                    ns = (pf["progs"] + pf["dispatch"]) * PERF_PERIOD_NS / x["n"]
                    extra += (f"; perf: programs {pf['progs'] * PERF_PERIOD_NS / x['n']:.0f} + dispatch "
                              f"{pf['dispatch'] * PERF_PERIOD_NS / x['n']:.0f} ns/req = "
                              f"{ns / 1000 / x['sharp_us'] * 100:.2f}% of SHARP's CPU/req")
                if x["others"]:
                    extra += f" [{x['others']} other sharp_* programs loaded]"
                print(f"round {i + 1} {m:5} ({x['source']} {x['attach']}): {x['rps']:.0f} req/s, "
                      f"SHARP {x['sharp_us']:.2f} us/req{extra}", flush=True)
    finally:
        if floor:
            floor.close()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(was)
    base = median([x["sharp_us"] for x in rows[MODES[0]]])
    brps = median([x["rps"] for x in rows[MODES[0]]])
    print(f"\n{'mode':12} {'attach':14} {'req/s':>9} {'SHARP us/req':>13} {'req/s vs ' + MODES[0]:>13} "
          f"{'SHARP CPU vs ' + MODES[0]:>17}" + (f" {'perf: probes ns/req':>20} {'% of SHARP':>10}" if PERF else ""))
    for m, xs in rows.items():
        us, rps = median([x["sharp_us"] for x in xs]), median([x["rps"] for x in xs])
        attach = xs[0]["attach"] or "-"
        line = f"{m:12} {attach:14} {rps:9.0f} {us:13.2f} {rps / brps:13.3f} {us / base:17.3f}"
        pf = [x for x in xs if x["perf"] and x["source"] == "ebpf"]
        if pf:
            ns = median([(x["perf"]["progs"] + x["perf"]["dispatch"]) * PERF_PERIOD_NS / x["n"] for x in pf])
            share = median([(x["perf"]["progs"] + x["perf"]["dispatch"]) * PERF_PERIOD_NS / x["n"] / 1000 /
                            x["sharp_us"] * 100 for x in pf])
            line += f" {ns:20.0f} {share:9.2f}%"
        print(line)
    for m, xs in rows.items():
        xs = [x for x in xs if x["per"]]
        if not xs or PERF:
            continue
        print(f"\n{m} ({xs[0]['attach']}): the probes per request (kernel's run_time_ns / run_cnt, medians of "
              f"{len(xs)} rounds)")
        fl = median([x["floor_ns"] for x in xs]) if floor else float("nan")
        if floor:
            print(f"  the accounting's floor: {fl:.1f} ns per run (an empty program on the same tracepoint, "
                  f"same rounds); net = gross - runs x floor")
        names = sorted({n for x in xs for n in x["per"]})
        for n in names:
            ns = median([x["per"].get(n, (0, 0))[0] for x in xs])
            runs = median([x["per"].get(n, (0, 0))[1] for x in xs])
            per_run = f" {ns / runs:7.1f} ns/run" if runs else " " * 15
            net = ""
            if floor:
                nets = [x["per"].get(n, (0, 0))[0] - x["per"].get(n, (0, 0))[1] * x["floor_ns"] for x in xs]
                net = f"  net {median(nets):8.1f} ns/req"
            print(f"  {n:32} gross {ns:8.1f} ns/req {runs:8.3f} runs/req{per_run}{net}")
        ns = median([x["probe_ns"] for x in xs])
        share = median([x["probe_ns"] / 1000 / x["sharp_us"] * 100 for x in xs])
        print(f"  {'total, gross':32} {ns:8.1f} ns/req = {share:.2f}% of SHARP's CPU per request (same runs); "
              f"{ns / 1000 / base * 100:.2f}% of SHARP's CPU per request with {MODES[0]}")
        if floor:
            net = median([x["net_ns"] for x in xs])
            nshare = median([x["net_ns"] / 1000 / x["sharp_us"] * 100 for x in xs])
            runs = median([x["runs"] for x in xs])
            print(f"  {'total, net of the floor':32} {net:8.1f} ns/req = {nshare:.2f}% of SHARP's CPU per request "
                  f"(same runs; {runs:.2f} runs/req x {fl:.1f} ns taken off); "
                  f"{net / 1000 / base * 100:.2f}% with {MODES[0]}")


# ---- memory ------------------------------------------------------------

def upstream_sockets():
    """SHARP's established sockets to the upstream and the sum of their
    option memory (ss -m: o<bytes>)."""
    r = subprocess.run(["ss", "-tnmH", "state", "established", f"( dport = :{UPORT} )"], capture_output=True,
                       text=True, timeout=30)
    n = r.stdout.count("skmem:")
    omem = sum(int(x) for x in re.findall(r"skmem:\([^)]*?,o(\d+)", r.stdout))
    return n, omem


def mem_point(label, sharp, mine):
    ids = fd_ids(sharp.pid, "map_id")
    maps = {m["id"]: m for m in bpftool("map", "show") if m["id"] in ids}
    n, omem = upstream_sockets()
    total = sum(m.get("bytes_memlock", 0) for m in maps.values())
    detail = ", ".join(f"{m.get('name', '?')} {m.get('bytes_memlock', 0) // 1024} KiB" for m in
                       sorted(maps.values(), key=lambda m: m.get("name", "")))
    print(f"  {label:38} SHARP RSS {rss_kb(sharp.pid) / 1024:7.1f} MiB  upstream sockets {n:6d} "
          f"(option memory {omem / 1024:7.1f} KiB)  BPF maps {total / 1024:8.1f} KiB" +
          (f" [{detail}]" if detail else ""), flush=True)
    return {"rss_kb": rss_kb(sharp.pid), "sockets": n, "omem": omem, "maps": total}


def probe_time(mine, secs=3):
    """The probes' kernel time over a few seconds while the connections
    are held (the interval's socket walk among them)."""
    p0 = {k: v for k, v in progs().items() if k in mine}
    time.sleep(secs)
    p1 = {k: v for k, v in progs().items() if k in mine}
    for k, v in sorted(p1.items(), key=lambda kv: kv[1]["name"]):
        a = p0.get(k, {})
        ns = v.get("run_time_ns", 0) - a.get("run_time_ns", 0)
        runs = v.get("run_cnt", 0) - a.get("run_cnt", 0)
        if runs:
            print(f"    {v['name']:30} {runs / secs:9.0f} runs/s {ns / runs:7.1f} ns/run "
                  f"{ns / secs / 1000:8.1f} us of kernel time per second")


def memory():
    print(f"\n== memory: {NCONN} client connections, each with a request the upstream holds {HOLD_MS} ms "
          f"(so {NCONN} upstream connections), {CYCLES} cycles per mode", flush=True)
    for m in MODES:
        up = start_upstream()
        try:
            sharp, kern = start_sharp(m)
            mine = fd_ids(sharp.pid, "prog_id")
            print(f"{m} (signals: {kern.get('source')} {kern.get('attach', '')})")
            try:
                mem_point("idle", sharp, mine)
                for c in range(CYCLES):
                    # HTTP/2 clients (a few connections, NCONN streams): SHARP's
                    # descriptors are then its NCONN upstream connections
                    h2 = start(["h2load", "-n", str(NCONN), "-c", str(H2_CONNS), "-m", str(NCONN // H2_CONNS + 1),
                                f"http://127.0.0.1:{LISTEN}/?delay_ms={HOLD_MS}&hdr=connection:close"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    deadline = time.time() + 60
                    while upstream_sockets()[0] < NCONN and time.time() < deadline:
                        time.sleep(0.5)
                    mem_point(f"cycle {c + 1}: {NCONN} upstream connections", sharp, mine)
                    probe_time(mine)
                    out = h2.communicate(timeout=HOLD_MS / 1000 + 120)[0]
                    PROCS.remove(h2)
                    m2 = re.search(r"requests: .*", out)
                    print(f"  h2load {m2.group(0) if m2 else out.strip()[-200:]}")
                    deadline = time.time() + 30
                    while upstream_sockets()[0] and time.time() < deadline:
                        time.sleep(0.5)
                    time.sleep(SETTLE_S)
                    mem_point(f"cycle {c + 1}: all closed (+{SETTLE_S} s)", sharp, mine)
            finally:
                stop(sharp)
        finally:
            stop(up)


def main():
    if os.geteuid() != 0:
        sys.exit("probe_overhead: needs root (eBPF)")
    # NCONN upstream connections: as many descriptors in SHARP and in the
    # upstream (the clients are a few HTTP/2 connections)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < NCONN + 1024:
        sys.exit(f"probe_overhead: {NCONN} connections need more descriptors than the hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if MODE in ("cpu", "both"):
        cpu()
    if MODE in ("memory", "both"):
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            was = f.read().strip()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        try:
            memory()
        finally:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(was)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        main()
    finally:
        for p in list(PROCS):
            stop(p)
        shutil.rmtree(WORK, ignore_errors=True)
