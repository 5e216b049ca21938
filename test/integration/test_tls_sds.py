"""TLS secrets from SDS files (an SdsSecretConfig whose sds_config is a
path_config_source, Envoy's filesystem subscription) and their rotation
without a restart: the SDS file moved into place or rewritten, the files a
secret names replaced, a Kubernetes-style `..data` symlink swap with
watched_directory. Real clients (Python's ssl, curl) see the new certificate
on new handshakes while established connections keep theirs; bad files keep
the previous secret and are counted (Envoy's sds.<name>.* stats)."""
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (SLOW, TLS_HOST, Proc, _pki_sh, admin_get, bootstrap_yaml, free_port, run_sharp_config, stat,
                      validate_config, wait_for, wait_port)
from test_tls_downstream import with_tls
from test_tls_upstream import TLS_SERVER, US_TLS, front, get

DS_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def make_cert(pki, d, name, san=TLS_HOST, ca="ca", kind="server", days=30):
    """A certificate for `san` issued by the pki's CA `ca` into directory d
    (d/name.crt, d/name.key); returns its serial number (upper-case hex)."""
    ext = ("extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:" + san if kind == "server"
           else "extendedKeyUsage=clientAuth\\nsubjectAltName=URI:spiffe://example/" + name)
    _pki_sh(d, f"openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {name}.key")
    _pki_sh(d, f"printf '{ext}\\n' > {name}.ext")
    _pki_sh(d, f"openssl req -new -key {name}.key -subj '/CN={name}' -out {name}.csr")
    _pki_sh(d, f"openssl x509 -req -in {name}.csr -CA {pki}/{ca}.crt -CAkey {pki}/{ca}.key -CAcreateserial "
               f"-days {days} -sha256 -extfile {name}.ext -out {name}.crt")
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", f"{d}/{name}.crt"], capture_output=True,
                         text=True, check=True).stdout
    return int(out.strip().split("=", 1)[1], 16)


def cert_secret(name, crt, key, watched_directory=None):
    tc = {"certificate_chain": {"filename": crt}, "private_key": {"filename": key}}
    if watched_directory:
        tc["watched_directory"] = {"path": watched_directory}
    return {"@type": SECRET, "name": name, "tls_certificate": tc}


def ca_secret(name, ca):
    return {"@type": SECRET, "name": name, "validation_context": {"trusted_ca": {"filename": ca}}}


def write_atomic(path, text):
    """Writes a sibling file and renames it over `path`: the atomic update
    Envoy's file subscription expects (a move into place)."""
    tmp = f"{path}.tmp{time.time_ns()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def sds_file(path, *resources, version="1"):
    write_atomic(path, json.dumps({"version_info": version, "resources": list(resources)}))


def sds_ref(name, path, watched_directory=None):
    pcs = {"path": path}
    if watched_directory:
        pcs["watched_directory"] = {"path": watched_directory}
    return {"name": name, "sds_config": {"path_config_source": pcs, "resource_api_version": "V3"}}


class Front:
    pass


def start(procs, upstream, pki, common, require=False, concurrency=2):
    f = Front()
    f.listen, f.admin, f.pki = free_port(), free_port(), pki
    ctx = {"@type": DS_TLS, "common_tls_context": dict(common, alpn_protocols=["http/1.1"])}
    if require:
        ctx["require_client_certificate"] = True
    text = bootstrap_yaml(f.listen, f.admin, {"app": [upstream.port]})
    f.sharp = run_sharp_config(procs, with_tls(text, ctx), f.admin, concurrency=concurrency)
    return f


def client_ctx(pki, cert=None, certdir=None):
    ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    if cert:
        d = certdir or pki
        ctx.load_cert_chain(f"{d}/{cert}.crt", f"{d}/{cert}.key")
    return ctx


def connect(f, ctx=None):
    raw = socket.create_connection(("127.0.0.1", f.listen), timeout=10 * SLOW)
    return (ctx or client_ctx(f.pki)).wrap_socket(raw, server_hostname=TLS_HOST)


def serial(f, ctx=None):
    """The serial number of the certificate a new handshake gets."""
    s = connect(f, ctx)
    try:
        return int(s.getpeercert()["serialNumber"], 16)
    finally:
        s.close()


def https_get(f, ctx=None, timeout=10):
    """One request on a new TLS connection: (status, serial of the server's certificate)."""
    c = new_conn(f, ctx, timeout)
    try:
        c.request("GET", "/echo", headers={"connection": "close"})
        ser = peer_serial(c)
        r = c.getresponse()
        r.read()
        return r.status, ser
    finally:
        c.close()


def new_conn(f, ctx=None, timeout=10):
    """An HTTPS connection to the listener for TLS_HOST (its SNI, verified
    name and Host header)."""
    c = http.client.HTTPSConnection(TLS_HOST, f.listen, timeout=timeout * SLOW, context=ctx or client_ctx(f.pki))
    c._create_connection = lambda *a, **k: socket.create_connection(("127.0.0.1", f.listen), timeout=timeout * SLOW)
    return c


def peer_serial(c):
    return int(c.sock.getpeercert()["serialNumber"], 16) if c.sock else None


def sds_stat(f, secret, name):
    return stat(f.admin, f"sds.{secret}.{name}")


def wait_serial(f, want, what, ctx=None):
    return wait_for(lambda: serial(f, ctx) == want, 10, what)


def certs_serials(f):
    certs = json.loads(admin_get(f.admin, "/certs"))["certificates"]
    return [int(c["serial_number"], 16) for ctx in certs for c in ctx["cert_chain"]]


# ---- an SDS file serving a listener's certificate ----

def test_sds_file_serves_the_listener_certificate(procs, upstream, pki, tmp_path):
    d = str(tmp_path)
    s1 = make_cert(pki, d, "s1")
    sds = f"{d}/sds.yaml"
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"), version="v1")
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)]})
    status, got = https_get(f)
    assert status == 200 and got == s1
    assert sds_stat(f, "server", "update_attempt") == 1
    assert sds_stat(f, "server", "update_success") == 1
    assert sds_stat(f, "server", "update_rejected") == 0
    assert sds_stat(f, "server", "update_failure") == 0
    assert sds_stat(f, "server", "version") != 0
    assert certs_serials(f) == [s1]
    # curl too (the listener's certificate verifies against the CA, with its SAN)
    r = subprocess.run(["curl", "-sS", "--max-time", str(10 * SLOW), "--cacert", f"{pki}/ca.crt", "--resolve",
                        f"{TLS_HOST}:{f.listen}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}",
                        f"https://{TLS_HOST}:{f.listen}/echo"], capture_output=True, text=True, timeout=20 * SLOW)
    assert r.stdout == "200", r.stderr


def test_json_sds_file_and_the_deprecated_path_form(procs, upstream, pki, tmp_path):
    """A .json file is strict JSON (Envoy picks the format by extension); the
    deprecated ConfigSource `path` string reads the same file. /certs and
    server.days_until_first_cert_expiring follow the rotation."""
    d = str(tmp_path)
    s1 = make_cert(pki, d, "s1")
    sds = f"{d}/sds.json"
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    f = start(procs, upstream, pki,
              {"tls_certificate_sds_secret_configs": [{"name": "server", "sds_config": {"path": sds}}]})
    assert serial(f) == s1
    wait_for(lambda: stat(f.admin, "server.days_until_first_cert_expiring") in (29, 30), 10, "30 days left")
    s2 = make_cert(pki, d, "s2", days=5)
    sds_file(sds, cert_secret("server", f"{d}/s2.crt", f"{d}/s2.key"), version="2")
    wait_serial(f, s2, "the rotated certificate through the deprecated path form")
    assert certs_serials(f) == [s2]
    wait_for(lambda: stat(f.admin, "server.days_until_first_cert_expiring") in (4, 5), 10,
             "days_until_first_cert_expiring of the rotated certificate")


# ---- rotation under traffic ----

def test_certificate_rotation_under_traffic(procs, upstream, pki, tmp_path):
    """Requests on a keep-alive connection and on new connections run while
    the SDS file is replaced (moved into place) and then while the files it
    names are rewritten in place: no request fails, the keep-alive
    connection is never re-established and keeps its certificate, new
    handshakes get the new one."""
    d = str(tmp_path)
    s1, s2 = make_cert(pki, d, "s1"), make_cert(pki, d, "s2", san=f"alt.{TLS_HOST.split('.', 1)[1]},DNS:{TLS_HOST}")
    s3 = make_cert(pki, d, "s3")
    sds = f"{d}/sds.yaml"
    shutil.copy(f"{d}/s1.crt", f"{d}/live.crt")
    shutil.copy(f"{d}/s1.key", f"{d}/live.key")
    sds_file(sds, cert_secret("server", f"{d}/live.crt", f"{d}/live.key"), version="1")
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)]})

    stop = threading.Event()
    res = {"ka_ok": 0, "ka_fail": [], "new_ok": 0, "new_fail": [], "seen": set(), "ka_serials": set()}

    def keepalive():
        c = new_conn(f)
        sock = None
        while not stop.is_set():
            try:
                c.request("GET", "/echo")
                r = c.getresponse()
                r.read()
                if sock is None:
                    sock = c.sock
                if r.status != 200 or c.sock is not sock or r.will_close:
                    res["ka_fail"].append((r.status, c.sock is sock))
                else:
                    res["ka_ok"] += 1
                    res["ka_serials"].add(peer_serial(c))
            except Exception as e:  # noqa: BLE001 - every failure is counted
                res["ka_fail"].append(repr(e))
                return
        c.close()

    def fresh():
        while not stop.is_set():
            try:
                status, ser = https_get(f)
                if status == 200:
                    res["new_ok"] += 1
                    res["seen"].add(ser)
                else:
                    res["new_fail"].append(status)
            except Exception as e:  # noqa: BLE001
                res["new_fail"].append(repr(e))

    threads = [threading.Thread(target=keepalive), threading.Thread(target=fresh), threading.Thread(target=fresh)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: res["ka_ok"] > 100 and res["new_ok"] > 100, 30, "traffic before the rotation")
        # 1. a new SDS file moved into place, naming other files
        sds_file(sds, cert_secret("server", f"{d}/s2.crt", f"{d}/s2.key"), version="2")
        wait_for(lambda: s2 in res["seen"], 20, "new handshakes getting the rotated certificate")
        assert sds_stat(f, "server", "update_success") == 2
        assert stat(f.admin, f"listener.127.0.0.1_{f.listen}.server_ssl_socket_factory.ssl_context_update_by_sds") == 1
        n = res["new_ok"]
        wait_for(lambda: res["new_ok"] > n + 150, 30, "traffic after the first rotation")
        # 2. back to the first file names, then those files rewritten in place
        sds_file(sds, cert_secret("server", f"{d}/live.crt", f"{d}/live.key"), version="3")
        wait_serial(f, s1, "the first certificate again")
        with open(f"{d}/s3.key", "rb") as src, open(f"{d}/live.key", "wb") as dst:
            dst.write(src.read())
        with open(f"{d}/s3.crt", "rb") as src, open(f"{d}/live.crt", "wb") as dst:
            dst.write(src.read())
        wait_for(lambda: s3 in res["seen"], 20, "the certificate whose files were rewritten in place")
        n = res["new_ok"]
        wait_for(lambda: res["new_ok"] > n + 150, 30, "traffic after the second rotation")
    finally:
        stop.set()
        for t in threads:
            t.join(30 * SLOW)
    print(f"rotation under traffic: keep-alive {res['ka_ok']} ok, new connections {res['new_ok']} ok")
    assert res["ka_fail"] == [] and res["new_fail"] == [], res
    assert res["seen"] >= {s1, s2, s3}
    # the keep-alive connection kept the certificate it started with
    assert res["ka_serials"] == {s1}
    assert certs_serials(f) == [s3]
    # files rewritten in place, one after the other: a read between the two
    # writes sees the new key with the old certificate, which is refused
    # (the previous certificate stays) until the second write lands
    assert sds_stat(f, "server", "update_rejected") <= 1


# ---- a trusted CA rotated for mTLS ----

def test_trusted_ca_rotation_for_client_certificates(procs, upstream, pki, tmp_path):
    """validation_context_sds_secret_config from a file whose trusted_ca is
    replaced (the CA file renamed over): clients of the new CA are accepted
    from then on, those of the old one refused."""
    d = str(tmp_path)
    s1 = make_cert(pki, d, "s1")
    make_cert(pki, d, "alice", ca="ca", kind="client")
    make_cert(pki, d, "bob", ca="ca2", kind="client")
    shutil.copy(f"{pki}/ca.crt", f"{d}/trust.pem")
    sds = f"{d}/sds.yaml"
    # one secret a file (Envoy's SdsApi wants exactly one resource)
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    sds_ca = f"{d}/sds_ca.yaml"
    sds_file(sds_ca, ca_secret("trust", f"{d}/trust.pem"))
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)],
                                     "validation_context_sds_secret_config": sds_ref("trust", sds_ca)}, require=True)

    def accepted(who):
        try:
            status, _ = https_get(f, client_ctx(pki, who, d))
            return status == 200
        except (ssl.SSLError, ConnectionError, OSError):
            return False

    assert accepted("alice") and not accepted("bob")
    assert serial(f, client_ctx(pki, "alice", d)) == s1
    write_atomic(f"{d}/trust.pem", open(f"{pki}/ca2.crt").read())
    wait_for(lambda: accepted("bob"), 10, "a client of the new CA accepted")
    assert not accepted("alice")
    assert sds_stat(f, "trust", "update_success") == 1  # the files changed, not the SDS file
    assert sds_stat(f, "trust", "key_rotation_failed") == 0


# ---- a Kubernetes ConfigMap/Secret volume: the ..data symlink swap ----

def test_configmap_data_symlink_swap_with_watched_directory(procs, upstream, pki, tmp_path):
    mount = tmp_path / "mount"
    mount.mkdir()

    def version(name, cert):
        vd = mount / f"..{name}"
        vd.mkdir()
        for ext in ("crt", "key"):
            shutil.copy(f"{tmp_path}/{cert}.{ext}", vd / f"tls.{ext}")
        (vd / "sds.yaml").write_text(json.dumps({"resources": [
            cert_secret("server", f"{mount}/tls.crt", f"{mount}/tls.key", watched_directory=str(mount))]}))
        return vd

    s1, s2 = make_cert(pki, str(tmp_path), "s1"), make_cert(pki, str(tmp_path), "s2")
    version("2024_01", "s1")
    os.symlink("..2024_01", mount / "..data")
    for n in ("sds.yaml", "tls.crt", "tls.key"):
        os.symlink(f"..data/{n}", mount / n)
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [
        sds_ref("server", str(mount / "sds.yaml"), watched_directory=str(mount))]})
    assert serial(f) == s1
    # what the kubelet does: the new version's directory, a temporary
    # symlink to it, renamed over ..data
    version("2024_02", "s2")
    os.symlink("..2024_02", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(mount / "..2024_01")
    wait_serial(f, s2, "the certificate of the swapped ..data")
    assert certs_serials(f) == [s2]
    assert sds_stat(f, "server", "key_rotation_failed") == 0


# ---- bad files keep the previous secret ----

def test_bad_sds_files_keep_the_previous_certificate(procs, upstream, pki, tmp_path):
    d = str(tmp_path)
    s1, s2 = make_cert(pki, d, "s1"), make_cert(pki, d, "s2")
    sds = f"{d}/sds.yaml"
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)]})
    assert serial(f) == s1

    # a key that does not match the certificate: rejected, old certificate kept
    sds_file(sds, cert_secret("server", f"{d}/s2.crt", f"{d}/s1.key"), version="bad-key")
    wait_for(lambda: sds_stat(f, "server", "update_rejected") == 1, 10, "the mismatched key rejected")
    assert serial(f) == s1
    wait_for(lambda: "Filesystem config update rejected: " + sds in f.sharp.output(), 5, "the warning")
    out = f.sharp.output()
    assert "[warning]" in out and "Failed to load private key" in out, out[-2000:]
    # the secret missing from the file (another name): rejected
    sds_file(sds, cert_secret("other", f"{d}/s2.crt", f"{d}/s2.key"), version="wrong-name")
    wait_for(lambda: sds_stat(f, "server", "update_rejected") == 2, 10, "the file without the secret rejected")
    assert "Unexpected SDS secret (expecting server): other" in f.sharp.output()
    # no resources at all
    sds_file(sds, version="empty")
    wait_for(lambda: sds_stat(f, "server", "update_rejected") == 3, 10, "the empty file rejected")
    # a file that does not parse: a failure (Envoy's update_failure)
    write_atomic(sds, "resources: [ {")
    wait_for(lambda: sds_stat(f, "server", "update_failure") == 1, 10, "the unparseable file counted")
    # a certificate file that does not exist
    sds_file(sds, cert_secret("server", f"{d}/nope.crt", f"{d}/s2.key"), version="missing")
    wait_for(lambda: sds_stat(f, "server", "update_rejected") == 4, 10, "the missing certificate file rejected")
    assert serial(f) == s1 and certs_serials(f) == [s1]
    assert sds_stat(f, "server", "update_success") == 1
    assert stat(f.admin, f"listener.127.0.0.1_{f.listen}.server_ssl_socket_factory.ssl_context_update_by_sds") == 0
    # a good file afterwards is taken
    sds_file(sds, cert_secret("server", f"{d}/s2.crt", f"{d}/s2.key"), version="good")
    wait_serial(f, s2, "the good file after the bad ones")
    assert sds_stat(f, "server", "update_success") == 2
    assert sds_stat(f, "server", "update_attempt") == 7


def test_bad_replacement_of_a_named_file_counts_key_rotation_failed(procs, upstream, pki, tmp_path):
    """The certificate file a secret names replaced by one that does not
    match its key: the previous context stays (Envoy's key_rotation_failed)."""
    d = str(tmp_path)
    s1, s2 = make_cert(pki, d, "s1"), make_cert(pki, d, "s2")
    shutil.copy(f"{d}/s1.crt", f"{d}/live.crt")
    shutil.copy(f"{d}/s1.key", f"{d}/live.key")
    sds = f"{d}/sds.yaml"
    sds_file(sds, cert_secret("server", f"{d}/live.crt", f"{d}/live.key"))
    f = start(procs, upstream, pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)]})
    write_atomic(f"{d}/live.crt", open(f"{d}/s2.crt").read())
    wait_for(lambda: sds_stat(f, "server", "key_rotation_failed") == 1, 10, "key_rotation_failed")
    assert serial(f) == s1
    assert "Failed to reload certificates" in f.sharp.output()
    write_atomic(f"{d}/live.key", open(f"{d}/s2.key").read())
    wait_serial(f, s2, "the certificate once its key matches")


# ---- an upstream cluster's client certificate from SDS ----

@pytest.fixture
def mtls_server(procs, pki, tmp_path):
    script = tmp_path / "tls_server.py"
    script.write_text(TLS_SERVER)
    port = free_port()
    procs.append(Proc(["python3", str(script), str(port), f"{pki}/rsa.crt", f"{pki}/rsa.key", f"{pki}/ca.crt", "1",
                       "http/1.1", "1"]))
    wait_port(port)
    return port


def test_upstream_client_certificate_from_sds(procs, pki, tmp_path, mtls_server):
    d = str(tmp_path)
    make_cert(pki, d, "c1", kind="client")
    make_cert(pki, d, "c2", kind="client")
    sds = f"{d}/client.yaml"
    sds_file(sds, cert_secret("client", f"{d}/c1.crt", f"{d}/c1.key"))
    ctx = {"@type": US_TLS, "sni": TLS_HOST, "common_tls_context": {
        "validation_context": {"trusted_ca": {"filename": f"{pki}/ca.crt"}},
        "tls_certificate_sds_secret_configs": [sds_ref("client", sds)]}}
    f = front(procs, [mtls_server], "transport_socket: {name: envoy.transport_sockets.tls, typed_config: "
              + json.dumps(ctx) + "}\nmax_requests_per_connection: 1\n")
    status, body = get(f)
    assert status == 200, body
    assert json.loads(body)["client"] == "commonName=c1"
    sds_file(sds, cert_secret("client", f"{d}/c2.crt", f"{d}/c2.key"), version="2")
    wait_for(lambda: json.loads(get(f)[1]).get("client") == "commonName=c2", 10,
             "new upstream connections presenting the rotated client certificate")
    assert stat(f.admin, "cluster.b.client_ssl_socket_factory.ssl_context_update_by_sds") == 1
    assert sds_stat(f, "client", "update_success") == 2


# ---- session ticket keys ----

def test_session_ticket_keys_from_sds(procs, upstream, pki, tmp_path):
    """session_ticket_keys_sds_secret_config: a session resumed on a second
    connection (the listener encrypts tickets with the file's key)."""
    d = str(tmp_path)
    make_cert(pki, d, "s1")
    with open(f"{d}/ticket.key", "wb") as k:
        k.write(os.urandom(80))
    sds, tk = f"{d}/sds.yaml", f"{d}/tickets.yaml"
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    sds_file(tk, {"@type": SECRET, "name": "tickets",
                  "session_ticket_keys": {"keys": [{"filename": f"{d}/ticket.key"}]}})
    f = Front()
    f.listen, f.admin, f.pki = free_port(), free_port(), pki
    ctx = {"@type": DS_TLS, "common_tls_context": {"tls_certificate_sds_secret_configs": [sds_ref("server", sds)]},
           "session_ticket_keys_sds_secret_config": sds_ref("tickets", tk)}
    f.sharp = run_sharp_config(procs, with_tls(bootstrap_yaml(f.listen, f.admin, {"app": [upstream.port]}), ctx),
                               f.admin)
    c = client_ctx(pki)
    c.maximum_version = ssl.TLSVersion.TLSv1_2
    s = connect(f, c)
    sess = s.session
    s.close()
    raw = socket.create_connection(("127.0.0.1", f.listen), timeout=10 * SLOW)
    s2 = c.wrap_socket(raw, server_hostname=TLS_HOST, session=sess)
    assert s2.session_reused
    s2.close()
    assert sds_stat(f, "tickets", "update_success") == 1
    # /config_dump: both secrets active, the ticket keys and private key redacted
    sd = next(c for c in json.loads(admin_get(f.admin, "/config_dump"))["configs"]
              if c["@type"].endswith("SecretsConfigDump"))
    got = {x["name"]: x for x in sd["dynamic_active_secrets"]}
    assert sorted(got) == ["server", "tickets"] and "dynamic_warming_secrets" not in sd
    assert got["tickets"]["version_info"] == "1"
    assert got["tickets"]["secret"]["session_ticket_keys"] == {"keys": [{"filename": "[redacted]"}]}
    assert got["server"]["secret"]["tls_certificate"] == {"certificate_chain": {"filename": f"{d}/s1.crt"},
                                                          "private_key": {"filename": "[redacted]"}}


# ---- what the loader refuses ----

def sds_bootstrap(pki, common):
    ctx = {"@type": DS_TLS, "common_tls_context": common}
    return with_tls(bootstrap_yaml(free_port(), free_port(), {"app": [free_port()]}), ctx)


def test_refused_sds_configs(pki, tmp_path):
    d = str(tmp_path)
    make_cert(pki, d, "s1")
    good = f"{d}/sds.yaml"
    sds_file(good, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    rc, out = validate_config(sds_bootstrap(pki, {"tls_certificate_sds_secret_configs": [sds_ref("server", good)]}))
    assert rc == 0, out

    def refused(ref, want):
        rc, out = validate_config(sds_bootstrap(pki, {"tls_certificate_sds_secret_configs": [ref]}))
        assert rc != 0 and want in out, out

    # an SDS server is test_tls_sds_grpc.py's; without its gRPC service, Envoy's message
    refused({"name": "server", "sds_config": {"api_config_source": {"api_type": "GRPC"}}},
            "API configs must have either a gRPC service or a cluster name defined")
    refused({"name": "server", "sds_config": {"ads": {}}}, "ADS must be configured to support an ADS config source")
    refused({"name": "server", "sds_config": {"path_config_source": {"path": f"{d}/absent.yaml"}}},
            f"paths must refer to an existing path in the system: '{d}/absent.yaml' does not exist")
    refused({"name": "server", "sds_config": {"path_config_source": {"path": good, "watched_directory": {
        "path": f"{d}/nodir"}}}}, "is not a directory")
    refused(sds_ref("other", good), "Unexpected SDS secret (expecting other): server")
    refused({"name": "server", "sds_config": {"path": good, "resource_api_version": "V2"}}, "V2")
    # the initial file must be valid: SHARP does not start without the secret
    write_atomic(f"{d}/badkey.yaml", json.dumps({"resources": [cert_secret("server", f"{d}/s1.crt",
                                                                            f"{pki}/rsa.key")]}))
    refused(sds_ref("server", f"{d}/badkey.yaml"), "Failed to load private key")
    write_atomic(f"{d}/garbage.yaml", "resources: [ {")
    refused(sds_ref("server", f"{d}/garbage.yaml"), "does not start a listener or cluster without its secret")
    refused(sds_ref("server", f"{d}/garbage.yaml"), "garbage.yaml")
    # a refused field inside the SDS file is refused as in the bootstrap
    write_atomic(f"{d}/ocsp.yaml", json.dumps({"resources": [dict(
        cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"),
        tls_certificate={"certificate_chain": {"filename": f"{d}/s1.crt"},
                         "private_key": {"filename": f"{d}/s1.key"},
                         "ocsp_staple": {"inline_string": "x"}})]}))
    refused(sds_ref("server", f"{d}/ocsp.yaml"), "OCSP staple cannot be provided via inline_string")
    # watched_directory outside SDS does nothing in Envoy: refused
    rc, out = validate_config(sds_bootstrap(pki, {"tls_certificates": [{
        "certificate_chain": {"filename": f"{d}/s1.crt"}, "private_key": {"filename": f"{d}/s1.key"},
        "watched_directory": {"path": d}}]}))
    assert rc != 0 and "only applies to a certificate delivered by SDS" in out, out


def test_combined_validation_context_from_sds_and_its_rotation(procs, upstream, pki, tmp_path):
    """combined_validation_context whose secret comes from an SDS file
    (Istio's ROOTCA shape): client certificates are checked against the
    secret's CA and the default context's SAN matcher merged over it; a
    rotation of the secret is merged with the default context again (a
    client of the new CA with the wrong SAN is still refused)."""
    d = str(tmp_path)
    make_cert(pki, d, "s1")
    make_cert(pki, d, "alice", ca="ca", kind="client")     # URI spiffe://example/alice
    make_cert(pki, d, "bob", ca="ca2", kind="client")      # URI spiffe://example/bob
    make_cert(pki, d, "carol", ca="ca2", kind="client")    # URI spiffe://example/carol
    sds = f"{d}/sds.yaml"
    sds_file(sds, cert_secret("server", f"{d}/s1.crt", f"{d}/s1.key"))
    ca = f"{d}/ca.yaml"
    sds_file(ca, ca_secret("ca", f"{pki}/ca.crt"))
    f = start(procs, upstream, pki, {
        "tls_certificate_sds_secret_configs": [sds_ref("server", sds)],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": "spiffe://example/alice"}},
                {"san_type": "URI", "matcher": {"exact": "spiffe://example/bob"}}]},
            "validation_context_sds_secret_config": sds_ref("ca", ca)}}, require=True)

    def accepted(who):
        try:
            status, _ = https_get(f, client_ctx(pki, who, d))
            return status == 200
        except (ssl.SSLError, ConnectionError, OSError):
            return False

    assert accepted("alice") and not accepted("bob") and not accepted("carol")
    sds_file(ca, ca_secret("ca", f"{pki}/ca2.crt"), version="2")
    wait_for(lambda: accepted("bob"), 10, "a client of the rotated CA accepted")
    assert not accepted("alice")  # the old CA is gone
    assert not accepted("carol")  # the default context's SAN matcher still applies
    assert sds_stat(f, "ca", "update_success") == 2
    # a watched_directory in the default context (not the secret) does nothing in Envoy: refused
    rc, out = validate_config(sds_bootstrap(pki, {
        "tls_certificates": [{"certificate_chain": {"filename": f"{pki}/rsa.crt"},
                              "private_key": {"filename": f"{pki}/rsa.key"}}],
        "combined_validation_context": {
            "default_validation_context": {"watched_directory": {"path": d}},
            "validation_context_sds_secret_config": sds_ref("ca", ca)}}))
    assert rc != 0 and "default_validation_context.watched_directory: only applies" in out, out
