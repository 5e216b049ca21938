"""SHARP's hand-written protos (proto/) against Envoy's official API protos from
the npm registry (@grpc/grpc-js-xds's bundled envoy-api, googleapis, xds):
every message, field, enum value and rpc that SHARP declares must have
Envoy's number, type, label and oneof. test/xds/proto_conformance.js does the
comparison; `make npm-deps` installs what it needs."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "test", "xds", "proto_conformance.js")
MODULES = os.path.join(ROOT, "test", "xds", "node_modules", "@grpc", "grpc-js-xds")


def run_conformance(*args):
    assert os.path.isdir(MODULES), "test/xds/node_modules missing: run `make npm-deps`"
    return subprocess.run(["node", SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_sharp_protos_match_envoy_official_protos():
    r = run_conformance()
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"compared (\d+) messages \((\d+) fields\), (\d+) enums \((\d+) values\)", r.stdout)
    assert m, r.stdout
    messages, fields, enums, values = (int(x) for x in m.groups())
    # the whole tree was compared, not an empty or partial load
    assert messages > 250 and fields > 1000 and enums > 30 and values > 150, r.stdout
    assert "0 mismatches" in r.stdout


@pytest.fixture
def proto_copy(tmp_path):
    dst = tmp_path / "proto"
    shutil.copytree(os.path.join(ROOT, "proto"), dst)
    return dst


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_conformance_reports_wrong_numbers_types_labels_and_enum_values(proto_copy):
    """The check fails, naming file, message and field, on the mistakes it
    exists to catch (done on a copy of proto/)."""
    core = proto_copy / "envoy" / "config" / "core" / "v3"
    edit(core / "address.proto", "uint32 port_value = 3;", "uint32 port_value = 9;")
    edit(core / "address.proto", "string resolver_name = 5;", "bytes resolver_name = 5;")
    edit(core / "config_source.proto", "repeated string cluster_names = 2;", "string cluster_names = 2;")
    edit(core / "address.proto", "    UDP = 1;", "    UDP = 2;")
    edit(core / "address.proto", "uint32 mode = 2;", "uint32 mode_bits = 2;")
    r = run_conformance(str(proto_copy))
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert ("MISMATCH proto/envoy/config/core/v3/address.proto: envoy.config.core.v3.SocketAddress.port_value: "
            "SHARP 9 singular uint32 in oneof port_specifier vs Envoy 3 singular uint32 in oneof port_specifier") in out
    assert "SocketAddress.resolver_name: SHARP 5 singular bytes vs Envoy 5 singular string" in out
    assert "ApiConfigSource.cluster_names: SHARP 2 singular string vs Envoy 2 repeated string" in out
    assert "SocketAddress.Protocol.UDP: SHARP value 2 vs Envoy value 1" in out
    assert 'Pipe.mode_bits: SHARP 2 singular uint32 vs Envoy names field 2 "mode"' in out
    assert "5 mismatches" in out


def test_conformance_checks_fields_newer_than_the_bundled_api_for_number_reuse(proto_copy):
    """A field listed as newer than the bundled Envoy API is accepted only on
    a number the bundled message does not use."""
    address = proto_copy / "envoy" / "config" / "core" / "v3" / "address.proto"
    edit(address, "bool ipv4_compat = 6;", "")
    edit(address, "string network_namespace_filepath = 7;", "string network_namespace_filepath = 6;")
    r = run_conformance(str(proto_copy))
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("SocketAddress.network_namespace_filepath: SHARP 6 singular string vs Envoy uses 6 for "
            '"ipv4_compat"') in r.stdout, r.stdout
