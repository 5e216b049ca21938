"""Operator basics as Envoy users rely on them: signals, log reopening,
command line flags, the application log, admin endpoints and server stats.
Real clients (curl, python, mv + kill) against the real binary."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import (SHARP, SLOW, Sharp, Upstream, admin_get, bootstrap_yaml, free_port, stat,
                      wait_port)


def admin_post(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout=5.0):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start(procs, yaml_text, admin, extra=(), concurrency=2):
    s = Sharp(yaml_text, concurrency=concurrency, extra=extra)
    procs.append(s)
    s.wait_ready(admin)
    return s


# ---- 1. signals -------------------------------------------------------------

def test_sigusr1_reopens_access_log_after_mv(proxy):
    """logrotate: mv the file away, SIGUSR1, and new lines go to a new file
    under the old name; the moved file keeps the old lines."""
    assert get(proxy.url + "/before")[0] == 200
    assert wait_for(lambda: "/before" in read(proxy.access_log), 5)
    rotated = proxy.access_log + ".1"
    os.rename(proxy.access_log, rotated)
    proxy.sharp.p.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(proxy.access_log), 5), "SIGUSR1 did not recreate the log"
    assert get(proxy.url + "/after")[0] == 200
    assert wait_for(lambda: "/after" in read(proxy.access_log), 5)
    assert "/after" not in read(rotated)
    assert "/before" not in read(proxy.access_log)
    assert proxy.sharp.p.poll() is None
    assert admin_get(proxy.admin, "/ready").strip() == "LIVE"


def test_admin_reopen_logs(proxy):
    assert get(proxy.url + "/one")[0] == 200
    assert wait_for(lambda: "/one" in read(proxy.access_log), 5)
    os.rename(proxy.access_log, proxy.access_log + ".old")
    assert admin_post(proxy.admin, "/reopen_logs") == (200, "OK\n")
    assert os.path.exists(proxy.access_log)
    assert get(proxy.url + "/two")[0] == 200
    assert wait_for(lambda: "/two" in read(proxy.access_log), 5)
    assert "/two" not in read(proxy.access_log + ".old")
    # A mutation: GET is refused as Envoy does.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin}/reopen_logs", timeout=5)
        assert False, "GET /reopen_logs must be refused"
    except urllib.error.HTTPError as e:
        assert e.code == 405


def test_sighup_is_ignored(proxy):
    proxy.sharp.p.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert proxy.sharp.p.poll() is None
    assert get(proxy.url + "/")[0] == 200
    assert "caught and eating SIGHUP" in proxy.sharp.output()


def test_sigusr1_reopens_log_path(procs, upstream):
    listen, admin = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="sharp-lp-")
    logp = os.path.join(d, "sharp.log")
    start(procs, bootstrap_yaml(listen, admin, {"b": [upstream.port]}), admin,
          extra=("--log-path", logp))
    assert wait_for(lambda: "sharp started" in read(logp))
    os.rename(logp, logp + ".1")
    procs[-1].p.send_signal(signal.SIGUSR1)
    # The reopen message itself is logged after the reopen, to the new file.
    assert wait_for(lambda: "Reopening access logs" in read(logp) or os.path.exists(logp))
    assert admin_post(admin, "/logging?level=info")[0] == 200
    assert wait_for(lambda: "change all log levels" in read(logp))
    assert "change all log levels" not in read(logp + ".1")
