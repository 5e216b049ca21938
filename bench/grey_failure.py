#!/usr/bin/env python3
"""Grey failure (bench/grey_failure.sh runs this, as root): three upstream
hosts in network namespaces of their own, one of which loses 5% of its
packets (iptables' statistic match, both directions) for LOSS_S seconds,
under an open-loop load (sharp-loadgen at RATE req/s) through SHARP.

Set-ups, each on a fresh network and SHARP, one after the other:
  plain   retries (5xx, reset, connect-failure; 2 retries, 1 s per try) and
          Envoy's outlier detection (consecutive 5xx / gateway / local-origin
          failures, success rate)
  kernel  the same plus SHARP's kernel outlier monitor (retransmission rate
          and RTT per host against the cluster's median)
  latency the same plus SHARP's latency outlier monitor (a host's p95
          against the cluster's median), no kernel monitor
  kernel+latency  both
  (SETUPS picks among them, e.g. SETUPS="plain kernel+latency".)

Reported per set-up and phase (before / during / after the loss): client
p50 / p99 / p99.9, errors (non-2xx, timeouts, connection errors), retry
amplification (upstream attempts per client request, from SHARP's
cluster.grey.upstream_rq_total and http.ingress.downstream_rq_total), the
time from the loss to the lossy host's first ejection (/clusters polled
every 100 ms) and SHARP's diagnosis line for it; a timeline (per-second p99
and errors, loss and ejection marked) in RESULTS/grey-failure.png with
gnuplot.

Clean run (CLEAN_S seconds, default 180; 0 skips it): the last set-up of
SETUPS with no loss anywhere, the same load, and a CPU
burner beside it for half the time: every host flagged or ejected is a
false positive, reported.

Probe overhead (OVERHEAD=1, the default): SHARP with --kernel-signals off,
auto (the eBPF probes) and tcp_info, ROUNDS rounds in turn, wrk closed-loop
through SHARP to the three clean hosts for OVERHEAD_S seconds: requests/s,
SHARP's CPU per request (/proc/<pid>/stat) and the whole machine's
(/proc/stat, which includes the probes' kernel time in every process), the
medians, and each mode's ratio to off.

Everything runs in namespaces created here and deleted at the end; every
process started here is stopped by PID."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.abspath(os.environ.get("BUILD", os.path.join(ROOT, "build")))
os.environ.setdefault("SHARP_BUILD", BUILD)
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
from test_kernel_signals import ADMIN, LISTEN, PORT, Net, _get, bootstrap  # noqa: E402

LOADGEN = os.path.join(BUILD, "bench", "loadgen", "sharp-loadgen")
RATE = int(os.environ.get("RATE", "200"))
PRE_S = int(os.environ.get("PRE_S", "10"))
LOSS_S = int(os.environ.get("LOSS_S", "60"))
POST_S = int(os.environ.get("POST_S", "20"))
LOSS = float(os.environ.get("LOSS", "0.05"))
RESULTS = os.path.abspath(os.environ.get("RESULTS", os.path.join(ROOT, "bench", "results")))
OVERHEAD = os.environ.get("OVERHEAD", "1") == "1"
GREY = os.environ.get("GREY", "1") == "1"
ROUNDS = int(os.environ.get("ROUNDS", "3"))
OVERHEAD_S = int(os.environ.get("OVERHEAD_S", "10"))
SETUPS = os.environ.get("SETUPS", "plain kernel latency kernel+latency").split()
CLEAN_S = int(os.environ.get("CLEAN_S", "180"))
LOSSY = 3  # host 3 loses packets

RETRIES = """\
retry_policy:
  retry_on: 5xx,reset,connect-failure
  num_retries: 2
  per_try_timeout: 1s
"""
ENVOY_OUTLIER = """\
outlier_detection:
  interval: 1s
  base_ejection_time: 10s
  max_ejection_percent: 34
  consecutive_5xx: 5
  consecutive_gateway_failure: 5
  split_external_local_origin_errors: true
  consecutive_local_origin_failure: 5
"""
KERNEL_MONITOR = """\
  monitors:
  - name: sharp.outlier_detection_monitors.kernel
    typed_config:
      "@type": type.googleapis.com/sharp.extensions.outlier_detection_monitors.kernel.v1.KernelSignals
      consecutive_intervals: 2
"""


def config(cluster_extra):
    y = bootstrap({"grey": [(Net.addr(i), PORT) for i in (1, 2, 3)]}, [("/", "grey")], {"grey": cluster_extra})
    # the retry policy goes on the route
    route = "                route: { cluster: grey }\n"
    assert route in y
    retry = "".join("                  " + ln + "\n" for ln in RETRIES.splitlines())
    return y.replace(route, "                route:\n                  cluster: grey\n                  timeout: 5s\n"
                     + retry)


LATENCY_MONITOR = """\
  - name: sharp.outlier_detection_monitors.latency
    typed_config:
      "@type": type.googleapis.com/sharp.extensions.outlier_detection_monitors.latency.v1.LatencyOutlier
"""


def setups():
    all_ = {"plain": ENVOY_OUTLIER, "kernel": ENVOY_OUTLIER + KERNEL_MONITOR,
            "latency": ENVOY_OUTLIER + "  monitors:\n" + LATENCY_MONITOR,
            "kernel+latency": ENVOY_OUTLIER + KERNEL_MONITOR + LATENCY_MONITOR}
    return [(n, all_[n]) for n in SETUPS]


def stats(net):
    out = {}
    for ln in net.call(_get, ADMIN, "/stats")[1].splitlines():
        m = re.match(r"^([^:]+): (\d+)$", ln)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def loadgen(net, seconds):
    r = subprocess.run(["ip", "netns", "exec", net.proxy, LOADGEN, "--url", f"http://127.0.0.1:{LISTEN}/",
                        "--rate", str(RATE), "--duration", str(seconds), "--interval-ms", "1000",
                        "--timeout-ms", "5000", "--output", "json"], capture_output=True, text=True,
                       timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"sharp-loadgen: {r.stderr}")
    return json.loads(r.stdout)


class Watch:
    """Polls /clusters every 100 ms from start(): the first time the lossy
    host carries failed_outlier_check."""

    def __init__(self, net):
        self.net, self.t0, self.first, self.stop_ev = net, None, None, threading.Event()
        self.lossy = f"{Net.addr(LOSSY)}:{PORT}"
        self.flags = {}

    def start(self):
        self.t0 = time.time()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                text = self.net.call(_get, ADMIN, "/clusters")[1]
            except OSError:
                text = ""
            for ln in text.splitlines():
                if "::health_flags::" in ln and "failed_outlier_check" in ln:
                    addr = ln.split("::")[1]
                    self.flags.setdefault(addr, time.time() - self.t0)
                    if addr == self.lossy and self.first is None:
                        self.first = time.time() - self.t0
            self.stop_ev.wait(0.1)

    def stop(self):
        self.stop_ev.set()
        self.th.join(5)


def errors(t):
    x = t["totals"]
    return x["sent"] - x["2xx"]


def run_setup(name, cluster_extra):
    net = Net(3)
    try:
        for i in (1, 2, 3):
            net.upstream(i)
        sharp = net.sharp(config(cluster_extra))
        source = json.loads(net.call(_get, ADMIN, "/kernel")[1]).get("source", "?")
        phases = {}
        watch = Watch(net)
        for phase, seconds in (("before", PRE_S), ("during", LOSS_S), ("after", POST_S)):
            if phase == "during":
                net.loss(LOSSY, LOSS)
                watch.start()
            if phase == "after":
                subprocess.run(["ip", "netns", "exec", net.hosts[LOSSY - 1], "iptables", "-F"], check=True,
                               timeout=30)
            s0 = stats(net)
            lg = loadgen(net, seconds)
            s1 = stats(net)
            up = s1.get("cluster.grey.upstream_rq_total", 0) - s0.get("cluster.grey.upstream_rq_total", 0)
            down = s1.get("http.ingress.downstream_rq_total", 0) - s0.get("http.ingress.downstream_rq_total", 0)
            phases[phase] = {"loadgen": lg, "amplification": up / max(down, 1), "stats_after": s1}
        watch.stop()
        diag = [ln for ln in sharp.output().splitlines()
                if Net.addr(LOSSY) in ln and ("ejected" in ln or "packet loss" in ln or "diagnos" in ln)]
        ejections = {k.rsplit(".", 1)[1]: v for k, v in phases["after"]["stats_after"].items()
                     if k.startswith("cluster.grey.outlier_detection.ejections_enforced_") and v}
        return {"name": name, "source": source, "phases": phases, "detect_s": watch.first,
                "flagged": watch.flags, "diagnosis": diag[:3], "ejections": ejections}
    finally:
        net.close()


def clean_run(name, cluster_extra):
    """No loss: (hosts flagged with when, ejections by type, requests, errors)."""
    net = Net(3)
    burn = None
    try:
        for i in (1, 2, 3):
            net.upstream(i)
        net.sharp(config(cluster_extra))
        watch = Watch(net)
        watch.start()
        burn = subprocess.Popen(["/usr/bin/python3", "-c",
                                 f"import time\nt=time.time()+{CLEAN_S / 2}\nwhile time.time()<t: pass"])
        lg = loadgen(net, CLEAN_S)
        watch.stop()
        s = stats(net)
        ejections = {k.rsplit(".", 1)[1]: v for k, v in s.items()
                     if k.startswith("cluster.grey.outlier_detection.ejections_") and v}
        return {"name": name, "flagged": watch.flags, "ejections": ejections, "sent": lg["totals"]["sent"],
                "errors": errors(lg)}
    finally:
        if burn:
            burn.kill()
            burn.wait()
        net.close()


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def sharp_progs():
    """{id: (run_time_ns, run_cnt)} of the loaded sharp_* BPF programs."""
    r = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, timeout=30)
    try:
        progs = json.loads(r.stdout or "[]")
    except ValueError:
        return {}
    return {p["id"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in progs
            if p.get("name", "").startswith("sharp_")}


def overhead_round(mode):
    net = Net(3)
    try:
        for i in (1, 2, 3):
            net.upstream(i)
        before = set(sharp_progs())
        sharp = net.sharp(config(""), ["--kernel-signals", mode])
        mine = set(sharp_progs()) - before  # this SHARP's probes (others may run beside it)
        source = json.loads(net.call(_get, ADMIN, "/kernel")[1]).get("source", "?")
        hz = os.sysconf("SC_CLK_TCK")
        p0 = {k: v for k, v in sharp_progs().items() if k in mine}
        c0, m0 = cpu_ticks(sharp.p.pid), machine_busy()
        r = subprocess.run(["ip", "netns", "exec", net.proxy, "wrk", "-t", "2", "-c", "32", "-d", f"{OVERHEAD_S}s",
                            f"http://127.0.0.1:{LISTEN}/"], capture_output=True, text=True, timeout=OVERHEAD_S + 60)
        c1, m1 = cpu_ticks(sharp.p.pid), machine_busy()
        p1 = {k: v for k, v in sharp_progs().items() if k in mine}
        m = re.search(r"(\d+) requests in", r.stdout)
        n = int(m.group(1)) if m else 0
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", r.stdout).group(1))
        probe_ns = sum(p1[k][0] - p0.get(k, (0, 0))[0] for k in p1)
        probe_runs = sum(p1[k][1] - p0.get(k, (0, 0))[1] for k in p1)
        return {"mode": mode, "source": source, "rps": rps, "sharp_us": (c1 - c0) / hz * 1e6 / max(n, 1),
                "machine_us": (m1 - m0) / hz * 1e6 / max(n, 1), "probe_ns": probe_ns / max(n, 1),
                "probe_runs": probe_runs / max(n, 1)}
    finally:
        net.close()


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def plot(results):
    if not shutil.which("gnuplot"):
        print("(no gnuplot: no plot)")
        return
    os.makedirs(RESULTS, exist_ok=True)
    files = []
    for r in results:
        path = os.path.join(RESULTS, f"grey-failure-{r['name']}.dat")
        off = 0.0
        with open(path, "w") as f:
            for phase in ("before", "during", "after"):
                lg = r["phases"][phase]["loadgen"]
                for s in lg["series"]:
                    # requests of the interval that failed (not 2xx, errors, timeouts)
                    bad = s["other"] + s["shed"] + s["errors"] + s["timeouts"]
                    f.write(f"{off + s['t']:.1f} {s['p99']:.3f} {bad}\n")
                off += lg["duration_s"]
        files.append((r, path))
    png = os.path.join(RESULTS, "grey-failure.png")
    marks = f"set arrow from {PRE_S},graph 0 to {PRE_S},graph 1 nohead dt 2 lc rgb 'red'\n" \
            f"set arrow from {PRE_S + LOSS_S},graph 0 to {PRE_S + LOSS_S},graph 1 nohead dt 2 lc rgb 'red'\n"
    for r, _ in files:
        if r["detect_s"] is not None:
            x = PRE_S + r["detect_s"]
            marks += f"set arrow from {x},graph 0 to {x},graph 1 nohead dt 3 lc rgb 'dark-green'\n"
    plots = ", ".join(f"'{p}' using 1:2 with lines title '{r['name']} p99 ms'" for r, p in files)
    plots2 = ", ".join(f"'{p}' using 1:3 with lines title '{r['name']} errors/s'" for r, p in files)
    script = (f"set terminal pngcairo size 1000,600 font ',9'\nset output '{png}'\nset multiplot layout 2,1\n"
              f"set title 'grey failure: {LOSS * 100:.0f}% loss on one of 3 hosts from {PRE_S}s to "
              f"{PRE_S + LOSS_S}s (red); ejection (green)'\nset xlabel 's'\nset logscale y\n{marks}"
              f"plot {plots}\nunset logscale y\nunset title\nplot {plots2}\nunset multiplot\n")
    subprocess.run(["gnuplot"], input=script, text=True, check=True, timeout=60)
    print(f"plot: {png}")
    with open(os.path.join(RESULTS, "grey-failure.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "phases"} | {
            "phases": {ph: {"loadgen": x["loadgen"], "amplification": x["amplification"]}
                       for ph, x in r["phases"].items()}} for r in results], f)


def main():
    if os.geteuid() != 0:
        sys.exit("grey_failure: needs root (network namespaces, iptables, eBPF)")
    results = []
    if GREY:
        for name, extra in setups():
            print(f"== {name}: {PRE_S}s clean, {LOSS_S}s with {LOSS * 100:.0f}% loss on host {LOSSY}, {POST_S}s "
                  f"clean, {RATE} req/s open loop", flush=True)
            results.append(run_setup(name, extra))
        print()
        print(f"{'set-up':14} {'phase':7} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'errors':>7} {'sent':>7} "
              f"{'attempts/req':>12}")
        for r in results:
            for phase in ("before", "during", "after"):
                p = r["phases"][phase]
                lat = p["loadgen"]["latency_ms"]
                print(f"{r['name']:14} {phase:7} {lat['p50']:8.2f} {lat['p99']:8.2f} {lat['p99.9']:9.2f} "
                      f"{errors(p['loadgen']):7d} {p['loadgen']['totals']['sent']:7d} {p['amplification']:12.3f}")
        print()
        for r in results:
            d = "never" if r["detect_s"] is None else f"{r['detect_s']:.1f} s after the loss began"
            others = {a: t for a, t in r["flagged"].items() if a != f"{Net.addr(LOSSY)}:{PORT}"}
            print(f"{r['name']} (signals: {r['source']}): lossy host ejected {d}; ejections by type "
                  f"{r['ejections'] or '{}'}; clean hosts flagged: {others or 'none'}")
            for ln in r["diagnosis"]:
                print(f"  {ln.strip()[:200]}")
        plot(results)
    if CLEAN_S:
        name, extra = setups()[-1]
        print(f"\n== clean run: {name}, no loss, {CLEAN_S}s at {RATE} req/s, a CPU burner for the first half",
              flush=True)
        r = clean_run(name, extra)
        print(f"{r['sent']} requests, {r['errors']} errors; hosts flagged: {r['flagged'] or 'none'}; "
              f"outlier ejection counters: {r['ejections'] or 'all zero'}")
    if OVERHEAD:
        print(f"\n== probe overhead: wrk -t2 -c32 {OVERHEAD_S}s through SHARP to 3 clean hosts, {ROUNDS} rounds")
        rows = {m: [] for m in ("off", "auto", "tcp_info")}
        # the kernel's own accounting of BPF programs' run time (bpftool's
        # run_time_ns): the probes' cost per request, free of the machine's noise
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            was = f.read().strip()
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        try:
            for _ in range(ROUNDS):
                for mode in rows:
                    rows[mode].append(overhead_round(mode))
        finally:
            with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
                f.write(was)
        base = {k: median([x[k] for x in rows["off"]]) for k in ("rps", "sharp_us", "machine_us")}
        print(f"{'mode':9} {'source':9} {'req/s':>9} {'SHARP us/req':>13} {'machine us/req':>15} "
              f"{'req/s vs off':>13} {'SHARP CPU vs off':>17} {'machine CPU vs off':>19}")
        for mode, xs in rows.items():
            med = {k: median([x[k] for x in xs]) for k in ("rps", "sharp_us", "machine_us")}
            print(f"{mode:9} {xs[0]['source']:9} {med['rps']:9.0f} {med['sharp_us']:13.2f} {med['machine_us']:15.2f} "
                  f"{med['rps'] / base['rps']:13.3f} {med['sharp_us'] / base['sharp_us']:17.3f} "
                  f"{med['machine_us'] / base['machine_us']:19.3f}")
        probe = [x for x in rows["auto"] if x["source"] == "ebpf"]
        if probe:
            ns = median([x["probe_ns"] for x in probe])
            runs = median([x["probe_runs"] for x in probe])
            print(f"eBPF probes (kernel's run_time_ns of this SHARP's programs): {ns:.0f} ns per request in "
                  f"{runs:.1f} program runs, {ns / 1000 / base['sharp_us'] * 100:.2f}% of SHARP's CPU per request "
                  f"with probes off")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    main()
