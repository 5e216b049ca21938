"""OCSP stapling on listeners (Envoy's TlsCertificate.ocsp_staple and
DownstreamTlsContext.ocsp_staple_policy): a DER OCSPResponse made here by
`openssl ocsp` from a small CA and its responder index is checked at load
(successful, for the certificate's serial number) and stapled when the
client asks for it (`openssl s_client -status`); a staple without
nextUpdate counts as expired and is left out (LENIENT_STAPLING) or fails
the handshake (STRICT_STAPLING, MUST_STAPLE, a must-staple certificate);
the listener counts ssl.ocsp_staple_requests, _responses, _omitted and
_failed. Staples also come with certificates from SDS files, and Envoy's
documentation example loads once its files exist."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import SHARP, SLOW, admin_get, free_port, run_sharp_config, stat, validate_config as validate, wait_for

CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")


def sh(d, cmd):
    subprocess.run(cmd, shell=True, cwd=d, check=True, capture_output=True, timeout=60)


def serial(d, crt):
    out = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-serial"], cwd=d, capture_output=True,
                         check=True).stdout.decode()
    return out.strip().split("=", 1)[1]


def ocsp_response(d, crt, out, days=1):
    """The responder's answer for `crt` (good), nextUpdate `days` ahead
    (None: no nextUpdate)."""
    s = serial(d, crt)
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write(f"V\t301231000000Z\t\t{s}\tunknown\t/CN=www.example.com\n")
    sh(d, f"openssl ocsp -issuer ca.crt -cert {crt} -reqout {out}.req -no_nonce")
    nd = f"-ndays {days}" if days else ""
    sh(d, f"openssl ocsp -index index.txt -rsigner ca.crt -rkey ca.key -CA ca.crt -reqin {out}.req "
          f"-respout {out} {nd}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA; server certificates (one with the must-staple TLS feature, one
    more); staples: good for a day, without nextUpdate, for the other
    certificate."""
    d = str(tmp_path_factory.mktemp("ocsp"))
    sh(d, "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj '/CN=OCSP Test CA' -days 30 "
          "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature")

    def issue(name, ext=""):
        sh(d, f"openssl req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN=www.example.com")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("subjectAltName=DNS:www.example.com\n" + ext)
        sh(d, f"openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 "
              f"-extfile {name}.ext -out {name}.crt")
    issue("server")
    issue("other")
    issue("must", "tlsfeature=status_request\n")
    ocsp_response(d, "server.crt", "good.der")
    ocsp_response(d, "server.crt", "stale.der", days=None)
    ocsp_response(d, "other.crt", "other.der")
    ocsp_response(d, "must.crt", "must_good.der")
    ocsp_response(d, "must.crt", "must_stale.der", days=None)
    return d


def bootstrap(listen, admin, d, cert="server", staple=None, policy=None):
    tc = {"certificate_chain": {"filename": f"{d}/{cert}.crt"}, "private_key": {"filename": f"{d}/{cert}.key"}}
    if staple:
        tc["ocsp_staple"] = {"filename": f"{d}/{staple}"}
    ctx = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "common_tls_context": {"tls_certificates": [tc]}}
    if policy:
        ctx["ocsp_staple_policy"] = policy
    return tls_listener(listen, admin, ctx)


def tls_listener(listen, admin, ctx, extra=""):
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config: {json.dumps(ctx)}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: ok }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{extra}"""


def s_client(port, status=True):
    """(handshake completed, the OCSP part of s_client's output)."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "www.example.com"]
    if status:
        args.append("-status")
    r = subprocess.run(args, input=b"", capture_output=True, timeout=10 * SLOW)
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    done = "Cipher is" in out and "(NONE)" not in out.split("Cipher is", 1)[1][:10]
    return done, out


def ssl_stats(admin, listen):
    return tuple(stat(admin, f"listener.127.0.0.1_{listen}.ssl.ocsp_staple_{k}")
                 for k in ("requests", "responses", "omitted", "failed"))


def start(procs, pki, **kw):
    listen, admin = free_port(), free_port()
    run_sharp_config(procs, bootstrap(listen, admin, pki, **kw), admin)
    return listen, admin


def test_staple_sent_when_asked(procs, pki):
    listen, admin = start(procs, pki, staple="good.der")
    done, out = s_client(listen)
    assert done, out
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out
    assert ssl_stats(admin, listen) == (1, 1, 0, 0)
    # a client that does not ask gets none, and is not counted
    done, out = s_client(listen, status=False)
    assert done and "OCSP Response Status" not in out, out
    assert ssl_stats(admin, listen) == (1, 1, 0, 0)
    assert stat(admin, f"listener.127.0.0.1_{listen}.ssl.handshake") == 2
    # /certs shows the staple's validity, as Envoy's ocsp_details
    chain = json.loads(admin_get(admin, "/certs"))["certificates"][0]["cert_chain"][0]
    ocsp = chain["ocsp_details"]
    assert ocsp["valid_from"] < ocsp["expiration"], chain
    assert ocsp["expiration"][:10] > ocsp["valid_from"][:10], chain  # nextUpdate a day later


def test_expired_staple_per_policy(procs, pki):
    # LENIENT_STAPLING (the default): the expired staple is left out
    listen, admin = start(procs, pki, staple="stale.der")
    done, out = s_client(listen)
    assert done and "OCSP response: no response sent" in out, out
    assert ssl_stats(admin, listen) == (1, 0, 1, 0)
    # STRICT_STAPLING: a client asking for it fails; one that does not ask is served
    listen, admin = start(procs, pki, staple="stale.der", policy="STRICT_STAPLING")
    done, out = s_client(listen)
    assert not done, out
    assert ssl_stats(admin, listen) == (1, 0, 0, 1)
    done, out = s_client(listen, status=False)
    assert done, out
    assert stat(admin, f"listener.127.0.0.1_{listen}.ssl.handshake") == 1
    # STRICT_STAPLING without a staple: omitted, not failed
    listen, admin = start(procs, pki, policy="STRICT_STAPLING")
    done, out = s_client(listen)
    assert done and "no response sent" in out, out
    assert ssl_stats(admin, listen) == (1, 0, 1, 0)
    # MUST_STAPLE with a good staple: stapled
    listen, admin = start(procs, pki, staple="good.der", policy="MUST_STAPLE")
    done, out = s_client(listen)
    assert done and "Cert Status: good" in out, out
    assert ssl_stats(admin, listen) == (1, 1, 0, 0)
    # MUST_STAPLE with an expired one: every client that asks fails
    listen, admin = start(procs, pki, staple="stale.der", policy="MUST_STAPLE")
    done, out = s_client(listen)
    assert not done, out
    assert ssl_stats(admin, listen) == (1, 0, 0, 1)


def test_a_certificate_failing_its_policy_is_not_selected(procs, pki):
    """Several certificates, a client without SNI asking for a staple: the
    first certificate's expired staple fails STRICT_STAPLING, so the next
    one, stapled, is selected (Envoy's findTlsContext)."""
    listen, admin = free_port(), free_port()
    ctx = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "ocsp_staple_policy": "STRICT_STAPLING",
           "common_tls_context": {"tls_certificates": [
               {"certificate_chain": {"filename": f"{pki}/{c}.crt"}, "private_key": {"filename": f"{pki}/{c}.key"},
                "ocsp_staple": {"filename": f"{pki}/{der}"}} for c, der in (("server", "stale.der"),
                                                                          ("other", "other.der"))]}}
    run_sharp_config(procs, tls_listener(listen, admin, ctx), admin)
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{listen}", "-noservername", "-status",
                        "-showcerts"], input=b"", capture_output=True, timeout=10 * SLOW)
    out = r.stdout.decode(errors="replace")
    assert "Cert Status: good" in out, out
    assert f"Serial Number: {serial(pki, 'other.crt')}" in out, out
    assert ssl_stats(admin, listen) == (1, 1, 0, 0)
    # the client that does not ask gets the first certificate
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{listen}", "-noservername"], input=b"",
                       capture_output=True, timeout=10 * SLOW)
    crt = open(f"{pki}/server.crt").read().strip()
    assert crt in r.stdout.decode(errors="replace"), r.stdout


def test_must_staple_certificate(procs, pki):
    """A certificate with the must-staple TLS feature is MUST_STAPLE
    whatever the policy says."""
    listen, admin = start(procs, pki, cert="must", staple="must_good.der")
    done, out = s_client(listen)
    assert done and "Cert Status: good" in out, out
    listen, admin = start(procs, pki, cert="must", staple="must_stale.der")
    done, out = s_client(listen)
    assert not done, out
    assert ssl_stats(admin, listen) == (1, 0, 0, 1)


def test_load_errors(pki):
    listen, admin = free_port(), free_port()
    rc, out = validate(bootstrap(listen, admin, pki, staple="other.der"))
    assert rc == 1 and "OCSP response does not match its TLS certificate" in out, out
    rc, out = validate(bootstrap(listen, admin, pki, policy="MUST_STAPLE"))
    assert rc == 1 and "Required OCSP response is missing from TLS context" in out, out
    rc, out = validate(bootstrap(listen, admin, pki, cert="must"))
    assert rc == 1 and "OCSP response is required for must-staple certificate" in out, out
    rc, out = validate(bootstrap(listen, admin, pki, staple="absent.der"))
    assert rc == 1 and f"ocsp_staple: Invalid path: {pki}/absent.der" in out, out
    # not a response at all
    rc, out = validate(bootstrap(listen, admin, pki, staple="server.crt"))
    assert rc == 1 and "OCSP Response is not a well-formed ASN.1 SEQUENCE" in out, out
    rc, out = validate(bootstrap(listen, admin, pki, staple="good.der", policy="NOT_A_POLICY"))
    assert rc == 1 and "ocsp_staple_policy" in out, out


def test_staple_from_sds(procs, pki, tmp_path):
    """A certificate from an SDS file carries its staple; rotating the
    secret to one without it stops stapling."""
    sds = str(tmp_path / "sds.json")

    def secret(staple):
        tc = {"certificate_chain": {"filename": f"{pki}/server.crt"},
              "private_key": {"filename": f"{pki}/server.key"}}
        if staple:
            tc["ocsp_staple"] = {"filename": f"{pki}/{staple}"}
        tmp = sds + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"resources": [{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                                      "name": "server", "tls_certificate": tc}]}, f)
        os.replace(tmp, sds)
    secret("good.der")
    listen, admin = free_port(), free_port()
    ctx = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
           "common_tls_context": {"tls_certificate_sds_secret_configs": [
               {"name": "server", "sds_config": {"path_config_source": {"path": sds}, "resource_api_version": "V3"}}]}}
    run_sharp_config(procs, tls_listener(listen, admin, ctx), admin)
    done, out = s_client(listen)
    assert done and "Cert Status: good" in out, out
    secret(None)
    wait_for(lambda: "no response sent" in s_client(listen)[1], 10 * SLOW, "the rotated secret without a staple")
    assert stat(admin, f"listener.127.0.0.1_{listen}.ssl.ocsp_staple_omitted") >= 1


def test_docs_example(pki, tmp_path):
    """Envoy's ssl.yaml: from the corpus directory its files are missing and
    it fails naming the first; with them beside it, it loads (the cluster's
    staple is read and, on a client, left alone, as in Envoy)."""
    for name in ("envoy-main__docs__root__intro__arch_overview__security___include__ssl.yaml",
                 "envoy__docs__root__intro__arch_overview__security___include__ssl.yaml"):
        r = subprocess.run([SHARP, "--mode", "validate", "-c", name], cwd=CORPUS, capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 1 and "Invalid path: certs/servercert.pem" in out, out
        d = tmp_path / name
        os.makedirs(d / "certs")
        # the example's connection manager has no router filter, which
        # SHARP refuses (Envoy accepts it and no request is ever routed):
        # it gets one
        text = open(os.path.join(CORPUS, name)).read()
        assert "          stat_prefix: ingress_http\n" in text
        text = text.replace("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n"
                            "          http_filters: [{ name: envoy.filters.http.router, typed_config: { '@type': "
                            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }]\n")
        (d / "ssl.yaml").write_text(text)
        shutil.copy(f"{pki}/server.crt", d / "certs" / "servercert.pem")
        shutil.copy(f"{pki}/server.key", d / "certs" / "serverkey.pem")
        shutil.copy(f"{pki}/ca.crt", d / "certs" / "cacert.pem")
        r = subprocess.run([SHARP, "--mode", "validate", "-c", "ssl.yaml"], cwd=d, capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 1 and "Invalid path: certs/server_ocsp_resp.der" in out, out
        shutil.copy(f"{pki}/good.der", d / "certs" / "server_ocsp_resp.der")
        r = subprocess.run([SHARP, "--mode", "validate", "-c", "ssl.yaml"], cwd=d, capture_output=True, timeout=30)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()
