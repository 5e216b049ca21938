#!/usr/bin/env python3
"""What one EDS update of EDS_ENDPOINTS endpoints (default 1,000, half of
them changed, from a file as in bench/xds_bench.py part 2) costs SHARP
without traffic: the main thread's CPU per update (from its schedstat, less
the admin requests this script makes to see the update applied), the
worker's (its adoption of the new host set), and the time from the file
moved into place to the update applied (cluster.e.update_time, ms).

    BUILD=build python3 bench/eds_push_cost.py [N]      (N updates, default 30)

With CG=1 and a BUILD whose proxy/sharp runs SHARP under callgrind
(--separate-threads=yes), the counters are zeroed before the updates and
dumped after them, so the dump holds only their cost. SHARP_ARGS are
passed to SHARP as in xds_bench.py. Everything on 127.0.0.1."""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xds_bench as xb  # noqa: E402


def cpu_ns(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    b = xb.Bench(tempfile.mkdtemp(prefix="sharp-edscost-"))
    try:
        b.version += 1
        xb.write_atomic(b.eds, b.eds_doc())
        before = b.counter("cluster_manager.cds.update_success")
        xb.write_atomic(b.cds, {"version_info": str(b.version), "resources":
                                b.cds_resources(xb.STEADY_CLUSTERS, "steady") + [xb.eds_cluster("e", b.eds)]})
        b.wait_counter("cluster_manager.cds.update_success", before)
        b.push_rds("steady")
        pid = b.sharp.pid
        workers = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        time.sleep(1.5)
        polls_ns = []
        for _ in range(21):  # what one admin request costs the main thread
            t0 = cpu_ns(pid, pid)
            b.counter("cluster.e.update_success")
            polls_ns.append(cpu_ns(pid, pid) - t0)
        poll_ns = median(polls_ns)
        docs = [b.eds_doc(shift=k) for k in range(2)]
        main_ns, worker_ns, wall_ms = [], [], []
        if os.environ.get("CG"):
            os.system(f"callgrind_control -z {pid} >/dev/null")
        for k in range(n):
            before = b.counter("cluster.e.update_success")
            m0, w0 = cpu_ns(pid, pid), sum(cpu_ns(pid, t) for t in workers)
            b.version += 1
            doc = dict(docs[(k + 1) % 2], version_info=str(b.version))
            tmp = f"{b.eds}.tmp"
            with open(tmp, "w") as f:
                json.dump(doc, f)
            t0 = time.time()
            os.replace(tmp, b.eds)
            polls = 0
            while True:
                time.sleep(0.02)
                polls += 1
                if b.counter("cluster.e.update_success") > before:
                    break
            wall_ms.append(b.counter("cluster.e.update_time") - t0 * 1000)
            polls += 1
            time.sleep(0.05)
            main_ns.append(cpu_ns(pid, pid) - m0 - polls * poll_ns)
            worker_ns.append(sum(cpu_ns(pid, t) for t in workers) - w0)
        if os.environ.get("CG"):
            os.system(f"callgrind_control -d {pid} >/dev/null")
        print(f"{n} EDS updates of {xb.EDS_ENDPOINTS} endpoints (half changed), {xb.STEADY_CLUSTERS} other clusters")
        print(f"main thread CPU per update: median {median(main_ns) / 1e6:.2f} ms, min {min(main_ns) / 1e6:.2f} ms "
              f"(admin requests less, {poll_ns / 1e3:.0f} us each)")
        print(f"worker CPU per update: median {median(worker_ns) / 1e6:.3f} ms, min {min(worker_ns) / 1e6:.3f} ms")
        print(f"file moved to update applied: median {median(wall_ms):.1f} ms")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
