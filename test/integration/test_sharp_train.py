"""sharp-train, the scaling agent's trainer (proxy/agent/train_main.c):
training writes a policy file that --eval reads back, the same seed writes
the same bytes, a full run solves CartPole, and bad input (arguments,
missing, truncated or corrupt policy files, unwritable output) ends with a
clear message and exit status, never a crash."""
import os
import subprocess

from conftest import BUILD

TRAIN = os.path.join(BUILD, "proxy", "agent", "sharp-train")

# 4-64-64-2 actor and 4-64-64-1 critic
N_PARAMS = (4 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2) + (4 * 64 + 64 + 64 * 64 + 64 + 64 + 1)
FILE_SIZE = 64 + 16 * 4 + 8 * N_PARAMS + 4


def run(*args, timeout=240):
    r = subprocess.run([TRAIN, *args], capture_output=True, text=True, timeout=timeout)
    # under ASan+UBSan: no report, whatever the exit status
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    return r


def test_short_training_writes_a_policy_that_loads(tmp_path):
    out = tmp_path / "p.pol"
    r = run("cartpole", "--seed", "3", "--steps", "4096", "--out", str(out))
    # 4096 steps are not enough to solve: status 3, the policy is written anyway
    assert r.returncode == 3, r.stdout + r.stderr
    assert "not solved within 4096 training steps" in r.stdout
    assert f"policy written to {out}" in r.stdout
    assert out.stat().st_size == FILE_SIZE
    assert not (tmp_path / "p.pol.tmp").exists()
    r = run("cartpole", "--eval", str(out), "--eval-episodes", "20")
    assert r.returncode in (0, 3), r.stderr
    assert "20 episodes, mean return" in r.stdout


def test_same_seed_same_file(tmp_path):
    files = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        f = tmp_path / f"{name}.pol"
        r = run("cartpole", "--seed", seed, "--steps", "2048", "--out", str(f), "--quiet")
        assert r.returncode == 3, r.stderr
        files.append(f.read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


def test_full_training_solves_cartpole(tmp_path):
    out = tmp_path / "solved.pol"
    r = run("cartpole", "--seed", "2", "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("steps ") for line in lines)  # progress
    assert any(line.startswith("evaluation at ") for line in lines)
    solved = [line for line in lines if line.startswith("solved: 100 evaluation episodes averaged")]
    assert solved, r.stdout[-2000:]
    steps = int(solved[0].split(" at ")[1].split()[0])
    assert steps <= 500000
    # the written policy, on 100 other episodes
    r = run("cartpole", "--eval", str(out), "--seed", "9")
    assert "100 episodes, mean return" in r.stdout, r.stderr
    mean = float(r.stdout.split("mean return ")[1].split(",")[0])
    assert mean >= 450, r.stdout


def test_bad_arguments():
    for args, msg in (
        ((), "usage"),
        (("mountaincar",), "unknown environment"),
        (("cartpole", "--steps", "abc"), "--steps needs a valid value"),
        (("cartpole", "--steps", "-5"), "--steps needs a valid value"),
        (("cartpole", "--steps"), "--steps needs a valid value"),
        (("cartpole", "--seed", "1x"), "--seed needs a valid value"),
        (("cartpole", "--eval-episodes", "0"), "--eval-episodes needs a valid value"),
        (("cartpole", "--frobnicate"), "unknown option"),
    ):
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert msg in r.stderr, (args, r.stderr)


def test_bad_policy_files(tmp_path):
    r = run("cartpole", "--eval", str(tmp_path / "missing.pol"))
    assert r.returncode == 1 and "cannot open" in r.stderr and "No such file" in r.stderr

    good = tmp_path / "good.pol"
    assert run("cartpole", "--steps", "512", "--out", str(good), "--quiet").returncode == 3
    data = good.read_bytes()

    bad = tmp_path / "bad.pol"
    bad.write_bytes(data[: len(data) // 2])
    r = run("cartpole", "--eval", str(bad))
    assert r.returncode == 1 and "truncated" in r.stderr, r.stderr

    flipped = bytearray(data)
    flipped[1000] ^= 0x04
    bad.write_bytes(bytes(flipped))
    r = run("cartpole", "--eval", str(bad))
    assert r.returncode == 1 and "checksum mismatch" in r.stderr, r.stderr

    newer = bytearray(data)
    newer[8] = 9
    bad.write_bytes(bytes(newer))
    r = run("cartpole", "--eval", str(bad))
    assert r.returncode == 1 and "unsupported policy file version 9" in r.stderr, r.stderr

    bad.write_bytes(b"#!/bin/sh\necho not a policy\n")
    r = run("cartpole", "--eval", str(bad))
    assert r.returncode == 1 and "bad magic" in r.stderr, r.stderr

    r = run("cartpole", "--eval", str(tmp_path))
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stderr


def test_unwritable_output(tmp_path):
    r = run("cartpole", "--steps", "512", "--out", str(tmp_path / "no" / "such" / "dir.pol"), "--quiet")
    assert r.returncode == 1
    assert "cannot create" in r.stderr and "No such file" in r.stderr
