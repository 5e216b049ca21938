"""VirtualHost.require_tls as Envoy: a request whose x-forwarded-proto is not
https gets a 301 to https://<its host as sent><its path and query> (ALL), or
only when it is not an internal request (EXTERNAL_ONLY: x-envoy-internal);
counted in rq_redirect. The decision reads x-forwarded-proto, which the
connection manager sets from the connection (https over TLS, see
test_tls_downstream.py) or keeps from trusted hops."""
import subprocess

from conftest import SLOW, bootstrap_yaml, free_port, run_sharp_config, stat

ROUTES = '- match: { prefix: "/" }\n  direct_response: { status: 200, body: { inline_string: "served" } }\n'


def start(procs, require, hcm_extra=""):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap_yaml(listen, admin, {"unused": [1]}, routes=ROUTES, hcm_extra=hcm_extra,
                                           vhost_extra=f"require_tls: {require}\n"), admin)
    return listen, admin


def get(listen, path="/", host="example.com:8443", headers=()):
    args = ["curl", "-sS", "--max-time", str(5 * SLOW), "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
            "-H", f"host: {host}"]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + [f"http://127.0.0.1:{listen}{path}"], capture_output=True, text=True,
                       timeout=10 * SLOW)
    code, _, loc = r.stdout.partition(" ")
    return int(code), loc


def test_all_redirects_plaintext_keeping_host_path_and_query(procs):
    listen, admin = start(procs, "ALL")
    assert get(listen, "/a/b?x=1&y=2") == (301, "https://example.com:8443/a/b?x=1&y=2")
    assert get(listen, "/", host="plain.example") == (301, "https://plain.example/")
    assert stat(admin, "http.ingress_http.rq_redirect") == 2
    # not an edge proxy (no use_remote_address): a client's x-forwarded-proto
    # stands, as in Envoy
    assert get(listen, "/", headers=["x-forwarded-proto: https"]) == (200, "")


def test_edge_overwrites_a_clients_x_forwarded_proto(procs):
    listen, admin = start(procs, "ALL", hcm_extra="use_remote_address: true\n")
    assert get(listen, "/", headers=["x-forwarded-proto: https"]) == (301, "https://example.com:8443/")


def test_all_trusts_x_forwarded_proto_from_trusted_hops(procs):
    listen, admin = start(procs, "ALL", hcm_extra="xff_num_trusted_hops: 1\nuse_remote_address: true\n")
    assert get(listen, "/x", headers=["x-forwarded-proto: https", "x-forwarded-for: 10.0.0.1"]) == (200, "")
    assert get(listen, "/x", headers=["x-forwarded-proto: http", "x-forwarded-for: 10.0.0.1"])[0] == 301


def test_external_only_spares_internal_requests(procs):
    # an empty internal_address_config makes RFC 1918 and loopback internal
    listen, admin = start(procs, "EXTERNAL_ONLY", hcm_extra="use_remote_address: true\ninternal_address_config: {}\n")
    assert get(listen, "/in") == (200, "")
    # without internal_address_config no address is internal (Envoy 1.33+)
    listen, admin = start(procs, "EXTERNAL_ONLY", hcm_extra="use_remote_address: true\n")
    assert get(listen, "/in")[0] == 301
    # with only 10/8 internal, the loopback client is external
    listen, admin = start(procs, "EXTERNAL_ONLY", hcm_extra="use_remote_address: true\n"
                                                           "internal_address_config: { cidr_ranges: "
                                                           "[{ address_prefix: 10.0.0.0, prefix_len: 8 }] }\n")
    assert get(listen, "/out") == (301, "https://example.com:8443/out")


def test_none_serves(procs):
    listen, admin = start(procs, "NONE")
    assert get(listen) == (200, "")
