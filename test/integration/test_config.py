"""Configuration: Envoy-format bootstraps, validation errors with paths and lines, CLI flags."""
import os
import subprocess
import tempfile
import urllib.request

import pytest

from conftest import (admin_get, bootstrap_yaml, free_port, run_sharp_config, SHARP, validate_config as
                      validate)

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "config", "examples")


GOOD = bootstrap_yaml(10000, 9901, {"b": [8080]})


def test_validate_ok():
    rc, out = validate(GOOD)
    assert rc == 0, out
    assert "OK" in out


def _example_files():
    """The bootstraps of config/examples (its subdirectories hold other
    systems' objects, e.g. keda/)."""
    return sorted(n for n in os.listdir(EXAMPLES) if os.path.isfile(os.path.join(EXAMPLES, n)))


@pytest.mark.parametrize("name", _example_files() if os.path.isdir(EXAMPLES) else [])
def test_examples_validate(name):
    r = subprocess.run([SHARP, "--mode", "validate", "-c", os.path.join(EXAMPLES, name)],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr


def _example_ports():
    """listen ports and upstream ports of every example, as run_example reads them."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "run_example", os.path.join(EXAMPLES, "..", "..", "scripts", "run_example.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {}
    for name in _example_files():
        cfg = mod.load(os.path.join(EXAMPLES, name))
        out[name] = ([p for _, _, p in mod.listeners(cfg)], [p for _, _, _, p in mod.endpoints(cfg)])
    return out


def test_examples_run_beside_make_run():
    """No example listens on a port that `make run` (listener 10000, admin 9901,
    demo upstream 8080), another example, or any example's upstream uses."""
    ports = _example_ports()
    owners = {10000: "make run", 9901: "make run", 8080: "make run's demo upstream"}
    for name, (listen, _) in ports.items():
        assert listen, name
        for p in listen:
            assert p not in owners, f"{name} listens on {p}, used by {owners.get(p)}"
            owners[p] = name
    for name, (_, ups) in ports.items():
        for p in ups:
            assert owners.get(p) in (None, "make run's demo upstream"), \
                f"{name} sends to port {p}, where {owners[p]} listens"


def test_run_example_starts_the_upstreams_it_needs():
    """scripts/run_example.py in a network namespace of its own (the examples
    bind 0.0.0.0): every route of front-proxy.json answers from its upstream."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace (needs root)")
    root = os.path.join(EXAMPLES, "..", "..")
    build = os.path.dirname(os.path.dirname(SHARP))
    script = f"""
ip link set lo up
/usr/bin/python3 {root}/scripts/run_example.py {EXAMPLES}/front-proxy.json --build {build} --concurrency 1 >/dev/null 2>&1 &
pid=$!
for i in $(seq 100); do curl -s -o /dev/null 127.0.0.1:8010/ && break; sleep 0.1; done
curl -s -o /dev/null -w '%{{http_code}} ' -D - 127.0.0.1:8010/service/1 | grep -i '^x-upstream-name'
curl -s -o /dev/null -D - 127.0.0.1:8010/service/2 | grep -i '^x-upstream-name'
kill -TERM $pid; wait $pid; echo "rc=$?"
"""
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert "x-upstream-name: service1/0" in out and "x-upstream-name: service2/0" in out, out + r.stderr.decode()
    assert "rc=0" in out, out


def test_run_example_dry_run_uses_a_served_upstream():
    """An endpoint that is already served (make run's demo upstream) is used, not started again."""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", 8080))
    except OSError:
        pytest.skip("127.0.0.1:8080 is in use on this machine")
    s.listen(1)
    try:
        r = subprocess.run(["/usr/bin/python3", os.path.join(EXAMPLES, "..", "..", "scripts", "run_example.py"),
                            os.path.join(EXAMPLES, "sidecar.yaml"), "--dry-run"], capture_output=True, timeout=30)
    finally:
        s.close()
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "127.0.0.1:8080: already served" in out, out
    assert "127.0.0.2:9080: starting" in out and "127.0.0.3:9080: starting" in out, out
    assert "virtualInbound: http://127.0.0.1:15006/" in out, out


def test_default_bootstrap_is_protected():
    """The embedded default bootstrap (make run) carries Envoy's edge best
    practices: run in a network namespace of its own (it binds 0.0.0.0), a
    header with an underscore is refused, paths are normalized, and the
    overload manager and 32 KiB buffers are live."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace (needs root)")
    build = os.path.dirname(os.path.dirname(SHARP))
    script = rf"""
ip link set lo up
{build}/test/upstream/sharp-test-upstream --address 127.0.0.1 --port 8080 --name demo --quiet >/dev/null &
up=$!
{SHARP} --concurrency 1 -l error >/dev/null 2>&1 &
pid=$!
for i in $(seq 100); do curl -s -o /dev/null 127.0.0.1:9901/ready && break; sleep 0.1; done
echo "ok=$(curl -s -o /dev/null -w '%{{http_code}}' 127.0.0.1:10000/a)"
echo "underscore=$(curl -s -o /dev/null -w '%{{http_code}}' -H 'x_bad: 1' 127.0.0.1:10000/a)"
echo "escaped=$(curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' 127.0.0.1:10000/a%2Fb)"
curl -s 127.0.0.1:9901/stats | grep -E '^overload\.envoy\.overload_actions\.stop_accepting_requests\.active|^overload\.envoy\.resource_monitors\.fixed_heap\.pressure'
curl -s 127.0.0.1:9901/config_dump | tr -d ' \n' | grep -o '"per_connection_buffer_limit_bytes":32768' | head -1
kill -TERM $pid $up; wait $pid; echo "rc=$?"
"""
    r = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert "ok=200" in out and "underscore=400" in out and "escaped=307 http://127.0.0.1:10000/a/b" in out, out + r.stderr.decode()
    assert "stop_accepting_requests.active: 0" in out and "fixed_heap.pressure" in out, out
    assert '"per_connection_buffer_limit_bytes":32768' in out, out
    assert "rc=0" in out, out


def test_examples_set_edge_limits():
    """Every example bounds its listeners' buffers and slow request heads."""
    import yaml
    for name in _example_files():
        with open(os.path.join(EXAMPLES, name)) as f:
            text = f.read()
        cfg = yaml.safe_load(text)  # JSON is YAML
        for lst in cfg.get("static_resources", cfg.get("staticResources", {})).get("listeners", []):
            assert lst.get("per_connection_buffer_limit_bytes", 0) == 32768, (name, lst.get("name"))
        assert text.count("request_headers_timeout") >= 1, name


def test_unknown_field_names_path_and_line():
    bad = GOOD.replace("    connect_timeout: 1s\n", "    connect_timeout: 1s\n    conect_timeout: 2s\n")
    rc, out = validate(bad)
    assert rc == 1
    assert "static_resources.clusters[0]" in out and "conect_timeout" in out
    line = bad.splitlines().index("    conect_timeout: 2s") + 1
    assert f":{line}:" in out, out


def test_bad_enum_and_duration():
    rc, out = validate(GOOD.replace("type: STATIC", "type: STATICK"))
    assert rc == 1 and "STATICK" in out and "STATIC" in out
    rc, out = validate(GOOD.replace("connect_timeout: 1s", "connect_timeout: 10"))
    assert rc == 1 and "connect_timeout" in out


def test_unknown_any_type():
    rc, out = validate(GOOD.replace("envoy.extensions.filters.http.router.v3.Router",
                                    "envoy.extensions.filters.http.nope.v3.Nope"))
    assert rc == 1 and "envoy.extensions.filters.http.nope.v3.Nope" in out


def test_route_to_unknown_cluster():
    rc, out = validate(GOOD.replace("route: { cluster: b }", "route: { cluster: missing }"))
    assert rc == 1 and "missing" in out


def test_dns_cluster_validates_and_eds_needs_its_source():
    rc, out = validate(GOOD.replace("type: STATIC", "type: STRICT_DNS"))
    assert rc == 0, out
    # an EDS cluster takes its endpoints from EDS (test_xds_file.py), never load_assignment
    rc, out = validate(GOOD.replace("type: STATIC", "type: EDS"))
    assert rc == 1 and "an EDS cluster takes its endpoints from EDS, not load_assignment" in out
    # an ORIGINAL_DST cluster makes its hosts (test_original_dst.py): Envoy's rules
    rc, out = validate(GOOD.replace("type: STATIC", "type: ORIGINAL_DST"))
    assert rc == 1 and "is not valid for Cluster type ORIGINAL_DST" in out


def test_yaml_syntax_error():
    rc, out = validate("static_resources:\n  listeners: [\n")
    assert rc == 1 and ":" in out


def test_json_bootstrap(procs, upstream):
    import json, yaml
    listen, admin = free_port(), free_port()
    doc = yaml.safe_load(bootstrap_yaml(listen, admin, {"b": [upstream.port]}))
    d = tempfile.mkdtemp()
    p = os.path.join(d, "b.json")
    with open(p, "w") as f:
        json.dump(doc, f)
    from conftest import Proc
    s = Proc([SHARP, "-c", p, "--concurrency", "1"])
    procs.append(s)
    import time, urllib.request
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5) as r:
        assert r.status == 200


def test_config_yaml_flag_and_version_help():
    r = subprocess.run([SHARP, "--version"], capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith(b"sharp/")
    r = subprocess.run([SHARP, "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0 and b"--config-path" in r.stdout
    r = subprocess.run([SHARP, "--mode", "validate", "--config-yaml", GOOD], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([SHARP, "--bogus-flag"], capture_output=True, timeout=10)
    assert r.returncode == 1


def test_port_in_use_fails_cleanly(procs, upstream):
    listen, admin = free_port(), free_port()
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", listen))
    blocker.listen(1)
    try:
        p = subprocess.run([SHARP, "--config-yaml", bootstrap_yaml(listen, admin, {"b": [upstream.port]}),
                            "--concurrency", "1"], capture_output=True, timeout=20)
        assert p.returncode == 1
        assert b"cannot bind" in p.stderr
    finally:
        blocker.close()


def test_default_regex_engine(procs, upstream):
    """default_regex_engine: Envoy's GoogleRE2 is the engine SHARP always
    uses; any other engine is refused."""
    engine = ("default_regex_engine:\n  name: envoy.regex_engines.google_re2\n  typed_config:\n"
              "    \"@type\": type.googleapis.com/envoy.extensions.regex_engines.v3.GoogleRE2\n")
    listen, admin = free_port(), free_port()
    routes = ("- match: { safe_regex: { regex: '/r/\\d+' } }\n"
              "  direct_response: { status: 200, body: { inline_string: re2 } }\n"
              "- match: { prefix: / }\n  route: { cluster: b }\n")
    run_sharp_config(procs, engine + bootstrap_yaml(listen, admin, {"b": [upstream.port]}, routes=routes), admin)
    assert urllib.request.urlopen(f"http://127.0.0.1:{listen}/r/42", timeout=5).read() == b"re2"
    assert urllib.request.urlopen(f"http://127.0.0.1:{listen}/r/4x", timeout=5).read() == b"hello from upstream\n"
    # a registered type that is no regex engine
    other = engine.replace("envoy.extensions.regex_engines.v3.GoogleRE2",
                           "envoy.extensions.filters.http.router.v3.Router")
    rc, out = validate(other + GOOD)
    assert rc == 1
    assert ("default_regex_engine.typed_config: regex engine 'envoy.extensions.filters.http.router.v3.Router' "
            "is not supported by SHARP") in out, out
    # Envoy's other engine
    rc, out = validate(engine.replace("envoy.extensions.regex_engines.v3.GoogleRE2",
                                      "envoy.extensions.regex_engines.hyperscan.v3alpha.Hyperscan") + GOOD)
    assert rc == 1
    assert ("default_regex_engine.typed_config: envoy.extensions.regex_engines.hyperscan.v3alpha"
            ".Hyperscan is not supported by SHARP (Hyperscan regex engine)") in out, out
    rc, out = validate("default_regex_engine: { name: x }\n" + GOOD)
    assert rc == 1 and "default_regex_engine.typed_config: a regex engine is required" in out, out


# ---- Envoy's loader rules: file kinds, enums, lists, duplicates -------------------------------


def test_config_path_directory_missing_and_pb():
    d = tempfile.mkdtemp()
    r = subprocess.run([SHARP, "--mode", "validate", "-c", d], capture_output=True, timeout=10)
    assert r.returncode == 1 and f"{d}: is a directory".encode() in r.stderr, r.stderr
    r = subprocess.run([SHARP, "--mode", "validate", "-c", os.path.join(d, "none.yaml")], capture_output=True,
                       timeout=10)
    assert r.returncode == 1 and b"none.yaml: no such file" in r.stderr, r.stderr
    rc, out = validate("x", suffix=".pb")
    assert rc == 1 and "not supported" in out


@pytest.mark.parametrize("text,suffix", [("", ".yaml"), ("# nothing yet\n", ".yml"), ("~\n", ".yaml")])
def test_empty_file_is_an_error_as_in_envoy(text, suffix):
    rc, out = validate(text, suffix)
    assert rc == 1 and "holds no document" in out and "{}" in out, out


def test_empty_bootstrap_loads_with_warnings(procs):
    rc, out = validate("{}\n")
    assert rc == 0, out
    assert "No admin address given" in out
    assert "configures no listeners, no clusters and no dynamic_resources" in out
    rc, out = validate("{}", suffix=".json")
    assert rc == 0 and "nothing will be served" in out
    # an admin-only bootstrap serves its admin interface
    admin = free_port()
    s = run_sharp_config(procs, f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}\n",
                         admin)
    assert "LIVE" in admin_get(admin, "/ready")  # run_sharp_config waited for it
    assert "nothing will be served but the admin interface" in s.output()


def test_json_file_comment_error_line_and_col():
    import json, yaml
    doc = yaml.safe_load(GOOD)
    text = json.dumps(doc, indent=2).splitlines()
    text.insert(3, "    // the admin listener")
    rc, out = validate("\n".join(text), suffix=".json")
    assert rc == 1
    assert ".json:4:5: JSON syntax error: comments are not allowed in JSON" in out, out
    # a trailing comma, reported where it is
    rc, out = validate('{"admin": {},\n}', suffix=".json")
    assert rc == 1 and ".json:2:1: JSON syntax error: trailing comma before '}'" in out, out
    # YAML text in a file Envoy reads as JSON
    rc, out = validate(GOOD, suffix=".conf")
    assert rc == 1 and ".conf:1:1: JSON syntax error" in out and "read as strict JSON" in out, out


def test_lower_case_enums_and_single_values_serve(procs, upstream):
    listen, admin = free_port(), free_port()
    text = bootstrap_yaml(listen, admin, {"b": [upstream.port]},
                          hcm_extra="codec_type: auto\n", cluster_extra="lb_policy: least_request\n")
    text = text.replace("type: STATIC", "type: static").replace('domains: ["*"]', 'domains: "*"')
    assert "codec_type: auto" in text and "domains: \"*\"" in text
    # one cluster given as a mapping instead of a list of one
    text = text.replace("  clusters:\n  - name: b\n", "  clusters:\n    name: b\n")
    assert "  clusters:\n    name: b\n    type: static\n" in text
    rc, out = validate(text)
    assert rc == 0, out + text
    run_sharp_config(procs, text, admin)
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5) as r:
        assert r.status == 200
    cfg = admin_get(admin, "/config_dump")
    assert '"LEAST_REQUEST"' in cfg, cfg  # lower case in, the declared name out
    assert '"domains": [\n' in cfg or '"domains":["*"]' in cfg.replace(" ", "").replace("\n", ""), cfg


def test_duplicate_cluster_and_listener_errors():
    bad = GOOD.replace("  clusters:\n", "  clusters:\n  - name: b\n    type: STATIC\n    connect_timeout: 1s\n")
    rc, out = validate(bad)
    assert rc == 1 and "cluster manager: duplicate cluster 'b'" in out, out
    assert "static_resources.clusters[1].name" in out
    listeners = GOOD.split("  listeners:\n")[1].split("  clusters:\n")[0]
    second = listeners.replace("name: listener_0", "name: listener_1")
    rc, out = validate(GOOD.replace(listeners, listeners + second))
    assert rc == 1, out
    assert "error adding listener: 'listener_1' has duplicate address '127.0.0.1:10000' as existing listener" in out
    assert "static_resources.listeners[1].address" in out
    lno = GOOD.replace(listeners, listeners + second).splitlines().index("  - name: listener_1") + 2
    assert f":{lno}:5: static_resources.listeners[1].address" in out, out
    # same name, another port
    third = listeners.replace("port_value: 10000", "port_value: 10001")
    rc, out = validate(GOOD.replace(listeners, listeners + third))
    assert rc == 1 and "duplicate listener name 'listener_0'" in out and "static_resources.listeners[1].name" in out
    # a wildcard and a specific address on one port are not duplicates (SO_REUSEPORT, as in Envoy)
    fourth = listeners.replace("name: listener_0", "name: listener_1").replace("address: 127.0.0.1", "address: 0.0.0.0", 1)
    rc, out = validate(GOOD.replace(listeners, listeners + fourth))
    assert rc == 0, out


def test_durations_out_of_range_and_negative_stored():
    rc, out = validate(GOOD.replace("connect_timeout: 1s", "connect_timeout: 315576000001s"))
    assert rc == 1 and "connect_timeout: bad duration" in out and "out of range" in out, out
    rc, out = validate(GOOD.replace("connect_timeout: 1s", "connect_timeout: 1.5"))
    assert rc == 1 and "must end with a single 's'" in out, out
    rc, out = validate(GOOD.replace("port_value: 10000", "port_value: 4294967296"))
    assert rc == 1 and "out of range for uint32" in out, out


def test_protocol_options_error_has_line_and_map_key_path():
    text = bootstrap_yaml(10000, 9901, {"b": [8080]}, cluster_extra="""typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http3_protocol_options: {}
""")
    rc, out = validate(text)
    line = text.splitlines().index("          http3_protocol_options: {}") + 1
    assert rc == 1
    assert (f":{line}:11: static_resources.clusters[0].typed_extension_protocol_options"
            '["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http3_protocol_options: '
            'http3_protocol_options is not supported by SHARP') in out, out


def test_typed_struct_configs_are_their_message(procs, upstream, tmp_path):
    """udpa.type.v1.TypedStruct / xds.type.v3.TypedStruct: {type_url, value}
    is the message type_url names with value's fields, mapped as strictly as
    a typed config (Envoy's translateOpaqueConfig)."""
    log = tmp_path / "access.log"
    al = ("access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n"
          "    \"@type\": type.googleapis.com/xds.type.v3.TypedStruct\n"
          "    type_url: type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
          f"    value: {{ path: {log}, log_format: {{ text_format_source: {{ inline_string: \"%RESPONSE_CODE% ts\\n\" }} }} }}\n")
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"b": [upstream.port]}, hcm_extra=al).replace(
        "\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
        "\"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n"
        "              type_url: type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")
    assert "udpa.type.v1.TypedStruct" in y
    run_sharp_config(procs, y, admin)
    assert urllib.request.urlopen(f"http://127.0.0.1:{listen}/", timeout=5).status == 200
    import time
    deadline = time.time() + 5
    while not (log.exists() and log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "200 ts\n"
    # mistakes are named as in a typed config
    for bad, want in ((al.replace("{ path:", "{ bogus: 1, path:"), "typed_config.value.bogus"),
                      (al.replace("    type_url: type.googleapis.com/envoy.extensions.access_loggers.file.v3"
                                  ".FileAccessLog\n", ""), "a TypedStruct needs its type_url"),
                      (al.replace("access_loggers.file.v3.FileAccessLog", "access_loggers.nope.v3.Nope"),
                       "unknown type URL"),
                      (al.replace("    value:", "    other: 1\n    value:"), "unknown field \"other\"")):
        rc, out = validate(bootstrap_yaml(10000, 9901, {"b": [8080]}, hcm_extra=bad))
        assert rc == 1 and want in out, out


INTERNAL_LISTENER = ("bootstrap_extensions:\n- name: envoy.bootstrap.internal_listener\n  typed_config:\n"
                     "    \"@type\": type.googleapis.com/udpa.type.v1.TypedStruct\n"
                     "    type_url: type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3"
                     ".InternalListener\n    value: { buffer_size_kb: %s }\n")


def test_bootstrap_extensions_internal_listener_only():
    """Istio's bootstrap enables envoy.bootstrap.internal_listener: accepted
    (it only makes internal listeners possible, and SHARP refuses every one
    of them); buffer_size_kb keeps Envoy's range; other bootstrap
    extensions are refused by name."""
    rc, out = validate(INTERNAL_LISTENER % 64 + GOOD)
    assert rc == 0, out
    rc, out = validate(INTERNAL_LISTENER % 0 + GOOD)
    assert rc == 1 and "buffer_size_kb" in out, out
    rc, out = validate(INTERNAL_LISTENER % 64 + GOOD.replace(
        "    address: { socket_address: { address: 127.0.0.1, port_value: 10000 } }\n",
        "    internal_listener: {}\n"))
    assert rc == 1 and "internal_listener is not supported by SHARP" in out, out
    other = ("bootstrap_extensions:\n- name: vcl\n  typed_config:\n"
             "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n")
    rc, out = validate(other + GOOD)
    assert rc == 1 and "bootstrap extension 'vcl' (envoy.extensions.filters.http.router.v3.Router) is not " \
        "supported by SHARP" in out, out
