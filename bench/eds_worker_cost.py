#!/usr/bin/env python3
"""What one EDS update of EDS_ENDPOINTS endpoints (default 1,000, half of
them changed, from a file as in bench/xds_bench.py part 2, next to
STEADY_CLUSTERS other clusters) costs each of SHARP's threads, in
instructions counted by callgrind: machine noise does not move them.

SHARP (one worker) runs under callgrind with instrumentation off until the
clusters are in place; then the counters of every thread are zeroed, the
script waits as long as N updates will take (the idle window: timers and
housekeeping), dumps, zeroes again, writes N updates one every SPACING
seconds and dumps. Nothing is asked of the admin between the zeroing and the
dump, so the main thread's count holds only the updates (and its timers);
the updates are checked to have been applied afterwards. Reported per
update: each thread's instructions in the update window less the idle
window (the main thread's 1 s housekeeping makes its figure vary by a few
per cent), the inclusive cost of the worker's wake-up callback, and that of
the main thread's eds_update (the assignment's hosts built and published,
after the file's parse).

    BUILD=build python3 bench/eds_worker_cost.py [N]     (default 10; a few minutes)

KEEP=1 keeps the work directory (the callgrind dumps, per thread).

Needs valgrind (callgrind). Everything on 127.0.0.1; it ends only the
processes it started."""
import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xds_bench as xb  # noqa: E402

SPACING = float(os.environ.get("SPACING", "2"))


def totals(path):
    """(thread number, total instructions, inclusive Ir of on_wakeup, of
    eds_update)."""
    txt = open(path).read()
    m = re.search(r"^(?:summary|totals): (\d+)", txt, re.M)
    total = int(m.group(1)) if m else 0
    thread = int(re.search(r"^thread: (\d+)", txt, re.M).group(1))
    found = {"on_wakeup": 0, "eds_update": 0}
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    for ln in out.splitlines():
        m = re.match(r"\s*([\d,]+) .*[ :](on_wakeup|eds_update) ", ln)
        if m and not found[m.group(2)]:
            found[m.group(2)] = int(m.group(1).replace(",", ""))
    return thread, total, found["on_wakeup"], found["eds_update"]


def window(pid, out, tag, work):
    """Dumps the counters; returns {thread: (total, on_wakeup)} of this dump."""
    before = set(glob.glob(out + "*"))
    subprocess.run(["callgrind_control", "-d", tag, str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    deadline = time.time() + 60
    files = []
    while time.time() < deadline:
        files = sorted(set(glob.glob(out + "*")) - before)
        if files:
            time.sleep(1)
            files = sorted(set(glob.glob(out + "*")) - before)
            break
        time.sleep(0.2)
    res = {}
    for f in files:
        t, total, wake, eds = totals(f)
        res[t] = (total, wake, eds)
    return res


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    work = tempfile.mkdtemp(prefix="sharp-edsworker-")
    out = os.path.join(work, "callgrind.out")
    wrapper = os.path.join(work, "sharp")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no "
                f"--callgrind-out-file={out} {os.path.abspath(xb.SHARP)} \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IEXEC)
    xb.SHARP = wrapper
    b = xb.Bench(work)
    try:
        b.version += 1
        xb.write_atomic(b.eds, b.eds_doc())
        before = b.counter("cluster_manager.cds.update_success")
        xb.write_atomic(b.cds, {"version_info": str(b.version), "resources":
                                b.cds_resources(xb.STEADY_CLUSTERS, "steady") + [xb.eds_cluster("e", b.eds)]})
        if not b.wait_counter("cluster_manager.cds.update_success", before, timeout=600):
            sys.exit("CDS push not applied")
        b.push_rds("steady")
        pid = b.sharp.pid
        docs = [b.eds_doc(shift=k) for k in range(2)]
        applied0 = b.counter("cluster.e.update_success")
        rejected0 = b.counter("cluster.e.update_rejected")
        changes0 = b.counter("cluster.e.membership_change")
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        time.sleep(2)
        subprocess.run(["callgrind_control", "-z", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        time.sleep(n * SPACING)
        idle = window(pid, out, "idle", work)
        subprocess.run(["callgrind_control", "-z", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        for k in range(n):
            b.version += 1
            doc = dict(docs[(k + 1) % 2], version_info=str(b.version))
            tmp = f"{b.eds}.tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, b.eds)
            time.sleep(SPACING)
        pushes = window(pid, out, "pushes", work)
        applied = b.counter("cluster.e.update_success") - applied0
        changes = b.counter("cluster.e.membership_change") - changes0
        rejected = b.counter("cluster.e.update_rejected") - rejected0
        if applied != n or changes != n or rejected:
            sys.exit(f"{applied} updates applied, {changes} membership changes, {rejected} rejected "
                     f"of {n}: raise SPACING")
        print(f"{n} EDS updates of {xb.EDS_ENDPOINTS} endpoints (half changed), {xb.STEADY_CLUSTERS} other "
              f"clusters, one worker; instructions per update (update window less idle window, "
              f"{n * SPACING:.0f} s each)")
        names = {1: "main"}
        for t in sorted(pushes):
            p_total, p_wake, p_eds = pushes[t]
            i_total, i_wake, _ = idle.get(t, (0, 0, 0))
            if p_total == 0 and i_total == 0:
                continue
            name = names.get(t, "worker" if p_wake or i_wake else f"thread {t}")
            line = f"  {name:8} {(p_total - i_total) / n / 1e3:10.1f} k"
            if p_wake or i_wake:
                line += f"   (worker wake-up callback: {(p_wake - i_wake) / n / 1e3:.1f} k)"
            if p_eds:
                # the housekeeping in the windows makes the total noisy
                line += f"   (eds_update, the assignment applied: {p_eds / n / 1e3:.1f} k)"
            print(line)
    finally:
        b.stop()
        if os.environ.get("KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
