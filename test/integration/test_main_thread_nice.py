"""--main-thread-nice N: once the workers run, the main thread alone runs N
nice levels below them (the workers keep the process's nice value); 0 (the
default) changes nothing; a value outside [0, 19] is refused."""
import os
import subprocess

from conftest import SHARP, Sharp, bootstrap_yaml, free_port
from test_xds_file import get


def thread_nices(pid):
    """{thread id: nice value} of the process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    return out


def start(procs, upstream, extra):
    listen, admin = free_port(), free_port()
    s = Sharp(bootstrap_yaml(listen, admin, {"backend": [upstream.port]}), concurrency=2, extra=extra)
    procs.append(s)
    s.wait_ready(admin)
    return s, listen


def test_main_thread_runs_below_the_workers(procs, upstream):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    s, listen = start(procs, upstream, ("--main-thread-nice", "7"))
    nices = thread_nices(s.p.pid)
    assert nices.pop(s.p.pid) == min(base + 7, 19), nices
    assert len(nices) == 2 and set(nices.values()) == {base}, nices  # the two workers
    assert get(listen)[0] == 200
    assert f"main thread at nice {min(base + 7, 19)}, workers at {base}" in s.output()


def test_default_leaves_every_thread_alone(procs, upstream):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    s, _ = start(procs, upstream, ())
    assert set(thread_nices(s.p.pid).values()) == {base}


def test_out_of_range_is_refused():
    for bad in ("20", "-1", "x"):
        r = subprocess.run([SHARP, "--main-thread-nice", bad, "--mode", "validate"], capture_output=True,
                           timeout=10)
        assert r.returncode == 1, (bad, r.stderr)
        assert b"--main-thread-nice must be an integer in [0, 19]" in r.stderr, r.stderr
