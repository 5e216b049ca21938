"""Per-endpoint health_check_config (Endpoint.HealthCheckConfig): the port
and address active health checks connect to, their host header, and
endpoints that are never checked."""
import http.server
import threading

from conftest import Sharp, Upstream, admin_get, free_port, upstream_admin, validate_config, wait_for

HC = """\
    health_checks:
    - timeout: 0.5s
      interval: 0.2s
      no_traffic_interval: 0.2s
      unhealthy_threshold: 2
      healthy_threshold: 1
      http_health_check: { path: /healthz, host: cluster-host }
"""


class Recorder:
    """An HTTP/1.1 server answering 200 and recording each request's host
    header."""

    def __init__(self):
        hosts = self.hosts = []

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                hosts.append(self.headers.get("host"))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def endpoint(port, hc=""):
    return (f"        - endpoint:\n            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n"
            + (f"            health_check_config: {hc}\n" if hc else ""))


def config(listen, admin, eps, hc=HC):
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: l0
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: svc }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: svc
    type: STATIC
    connect_timeout: 1s
{hc}    load_assignment:
      cluster_name: svc
      endpoints:
      - lb_endpoints:
{eps}"""


def health_flags(admin):
    out = {}
    for line in admin_get(admin, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def test_port_address_hostname_and_disabled(procs):
    a, b, c, d, f = (Upstream(n) for n in ("a", "b", "c", "d", "f"))
    procs.extend([a, b, c, d, f])
    rec = Recorder()
    try:
        upstream_admin(b, "/admin/fault?status=503")  # b would fail its checks
        upstream_admin(f, "/admin/fault?status=503")  # d's checks go to f
        listen, admin = free_port(), free_port()
        eps = (endpoint(a.port, f"{{ port_value: {rec.port}, hostname: hc.example }}")
               + endpoint(b.port, "{ disable_active_health_check: true }")
               # the address's port replaced by port_value: the recorder
               + endpoint(c.port, f"{{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 1 }} }}, "
                                  f"port_value: {rec.port} }}")
               # the address alone: f, which fails the checks (d itself would pass)
               + endpoint(d.port, f"{{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {f.port} }} }} }}"))
        s = Sharp(config(listen, admin, eps))
        procs.append(s)
        s.wait_ready(admin)
        addr = {n: f"127.0.0.1:{u.port}" for n, u in (("a", a), ("b", b), ("c", c), ("d", d))}
        wait_for(lambda: health_flags(admin).get(addr["a"]) == "healthy", 3, "a healthy (checked on the recorder)")
        wait_for(lambda: health_flags(admin).get(addr["c"]) == "healthy", 3, "c healthy (checked on the recorder)")
        wait_for(lambda: health_flags(admin).get(addr["d"]) == "/failed_active_hc", 3, "d failed (checked on f)")
        # b is never checked: healthy from the start, whatever it answers
        assert health_flags(admin)[addr["b"]] == "healthy"
        # a's hostname wins over the check's host; c sends the check's
        assert set(rec.hosts) == {"hc.example", "cluster-host"}, rec.hosts
    finally:
        rec.close()


def test_refusals():
    rc, out = validate_config(config(1, 2, endpoint(3, "{ port_value: 70000 }")))
    assert rc == 1 and "port_value" in out, out
    alt = HC.replace("      http_health_check:", "      alt_port: 9000\n      http_health_check:")
    rc, out = validate_config(config(1, 2, endpoint(3, "{ port_value: 4 }"), hc=alt))
    assert rc == 1 and "cannot be combined with the cluster's health_checks[0].alt_port" in out, out
    rc, out = validate_config(config(1, 2, endpoint(3, "{ port_value: 4, hostname: x, "
                                                        "disable_active_health_check: true }")))
    assert rc == 0, out
