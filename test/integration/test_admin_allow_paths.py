"""admin.allow_paths: the admin server serves only the targets (path and
query) one of the matchers matches, any other gets 403, over HTTP/1.1 and
HTTP/2 alike; with none, every path is served."""
import subprocess

from conftest import SHARP, Sharp, free_port


def bootstrap(admin, allow):
    return (f"admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n"
            + allow)


def status(admin, target, *extra):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *extra,
                        f"http://127.0.0.1:{admin}{target}"], capture_output=True, text=True, timeout=20)
    return r.stdout


def body(admin, target):
    return subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}{target}"], capture_output=True, text=True,
                          timeout=20).stdout


ALLOW = """\
  allow_paths:
  - exact: /ready
  - prefix: /stats
  - safe_regex: { regex: "/clusters\\\\?format=json" }
"""


def test_only_allowed_targets_are_served(procs):
    admin = free_port()
    s = Sharp(bootstrap(admin, ALLOW))
    procs.append(s)
    s.wait_ready(admin)
    assert status(admin, "/ready") == "200"
    # prefix: with or without a query
    assert status(admin, "/stats") == "200"
    assert status(admin, "/stats?filter=server&format=json") == "200"
    assert status(admin, "/stats/prometheus") == "200"
    # exact matches the whole target: a query makes it another one
    assert status(admin, "/ready?x=1") == "403"
    # a regex must match the whole target
    assert status(admin, "/clusters?format=json") == "200"
    assert status(admin, "/clusters") == "403"
    # everything else, mutating endpoints and unknown paths included
    for target in ("/config_dump", "/server_info", "/", "/nonexistent", "/READY"):
        assert status(admin, target) == "403", target
    assert status(admin, "/quitquitquit", "-X", "POST") == "403"
    assert status(admin, "/runtime_modify?a=b", "-X", "POST") == "403"
    assert "not allowed" in body(admin, "/config_dump")
    # HTTP/2 (prior knowledge) is held to the same list
    assert status(admin, "/ready", "--http2-prior-knowledge") == "200"
    assert status(admin, "/config_dump", "--http2-prior-knowledge") == "403"
    # the server still runs: the refused POST /quitquitquit did nothing
    assert s.p.poll() is None
    assert status(admin, "/ready") == "200"


def test_without_allow_paths_every_path_is_served(procs):
    admin = free_port()
    s = Sharp(bootstrap(admin, ""))
    procs.append(s)
    s.wait_ready(admin)
    assert status(admin, "/config_dump") == "200"
    assert status(admin, "/nonexistent") == "404"


def test_a_bad_matcher_is_refused_by_name(tmp_path):
    cfg = tmp_path / "b.yaml"
    cfg.write_text(bootstrap(free_port(), "  allow_paths:\n  - exact: /ready\n  - safe_regex: { regex: \"(\" }\n"))
    r = subprocess.run([SHARP, "-c", str(cfg), "--mode", "validate"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "admin.allow_paths[1]" in r.stderr, r.stderr


def test_grpc_calls_on_the_admin_port_are_held_to_the_list(procs):
    """SHARP's gRPC services on the admin port (health, the KEDA scaler)
    answer only a :path one of the matchers allows; any other call ends
    with PERMISSION_DENIED naming the path."""
    import grpc
    admin = free_port()
    allow = "  allow_paths:\n  - exact: /ready\n  - prefix: /grpc.health.v1.Health/Check\n"
    s = Sharp(bootstrap(admin, allow))
    procs.append(s)
    s.wait_ready(admin)
    with grpc.insecure_channel(f"127.0.0.1:{admin}") as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
        assert call(b"", timeout=10) == b"\x08\x01"  # SERVING
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
        try:
            next(iter(watch(b"", timeout=10)))
            raise AssertionError("Watch was served")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED, e
            assert "/grpc.health.v1.Health/Watch" in e.details() and "allow_paths" in e.details()
