"""envoy.filters.http.stateful_session against three real test upstreams:
stickiness by cookie and by header, the Set-Cookie line, a session host
that is gone or fails health checks, strict, the per-route override and
hostile session values."""
import base64
import re
import signal
import textwrap

import pytest

from conftest import Upstream, bootstrap_yaml, free_port, h1_request, run_sharp_config, stat, validate_config, wait_for

COOKIE = """\
- name: envoy.filters.http.stateful_session
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession
    {strict}
    session_state:
      name: envoy.http.stateful_session.cookie
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState
        cookie: {{ name: global-session-cookie, path: /path, ttl: 120s }}
"""

HEADER = """\
- name: envoy.filters.http.stateful_session
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession
    session_state:
      name: envoy.http.stateful_session.header
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState
        name: session-header
"""

HC = """\
health_checks:
- timeout: 0.5s
  interval: 0.2s
  no_traffic_interval: 0.2s
  unhealthy_threshold: 1
  healthy_threshold: 1
  http_health_check:
    path: /healthz
"""


def with_filter(yaml_text, flt):
    anchor = "          http_filters:\n"
    assert anchor in yaml_text
    return yaml_text.replace(anchor, anchor + textwrap.indent(flt, "          "))


class Env:
    def __init__(self, procs, flt, routes=None, cluster_extra="", n=3):
        self.ups = []
        for i in range(n):
            u = Upstream(name=f"u{i}")
            procs.append(u)
            self.ups.append(u)
        self.listen, self.admin = free_port(), free_port()
        y = bootstrap_yaml(self.listen, self.admin, {"backend": [u.port for u in self.ups]}, routes=routes,
                           cluster_extra=cluster_extra)
        self.sharp = run_sharp_config(procs, with_filter(y, flt), self.admin)

    def get(self, path="/path", headers=None):
        return h1_request(self.listen, path, headers=headers)

    def port_of(self, name):
        return next(u.port for u in self.ups if f"u{self.ups.index(u)}" == name)


def cookie_value(set_cookie):
    m = re.match(r'global-session-cookie="([^"]*)"', set_cookie)
    assert m, set_cookie
    return m.group(1)


def cookie_addr(value):
    """The address of a cookie value: an envoy.Cookie {address = 1, expires = 2}."""
    raw = base64.b64decode(value)
    assert raw[0] == 0x0A, raw
    n = raw[1]
    addr = raw[2:2 + n].decode()
    rest = raw[2 + n:]
    assert rest[:1] == b"\x10", raw  # expires: ttl is set
    return addr


def test_cookie_stickiness_and_set_cookie(procs):
    e = Env(procs, COOKIE.format(strict=""))
    st, h, _ = e.get()
    assert st == 200
    first = h["x-upstream-name"]
    sc = h["set-cookie"]
    assert re.fullmatch(r'global-session-cookie="[A-Za-z0-9+/=]+"; Max-Age=120; Path=/path; HttpOnly', sc), sc
    val = cookie_value(sc)
    assert cookie_addr(val) == f"127.0.0.1:{e.port_of(first)}"
    for _ in range(20):
        st, h, _ = e.get("/path/sub?x=1", headers={"cookie": f"a=b; global-session-cookie=\"{val}\""})
        assert st == 200 and h["x-upstream-name"] == first
        assert "set-cookie" not in h  # the same host: the session stays as it is
    # the plain format (base64 of the address) is honoured too
    plain = base64.b64encode(f"127.0.0.1:{e.port_of(first)}".encode()).decode()
    for _ in range(5):
        st, h, _ = e.get(headers={"cookie": f"global-session-cookie={plain}"})
        assert st == 200 and h["x-upstream-name"] == first


def test_cookie_path_rule(procs):
    e = Env(procs, COOKIE.format(strict=""))
    # outside the cookie's path: no session, no cookie
    for p in ("/", "/pathx", "/other"):
        st, h, _ = e.get(p)
        assert st == 200 and "set-cookie" not in h, p
    for p in ("/path", "/path?x=1", "/path/a"):
        st, h, _ = e.get(p)
        assert st == 200 and "set-cookie" in h, p


def test_header_stickiness(procs):
    e = Env(procs, HEADER)
    st, h, _ = e.get("/")
    first = h["x-upstream-name"]
    val = h["session-header"]
    assert base64.b64decode(val).decode() == f"127.0.0.1:{e.port_of(first)}"
    for _ in range(20):
        st, h, _ = e.get("/any", headers={"session-header": val})
        assert st == 200 and h["x-upstream-name"] == first
        assert "session-header" not in h
    # another host named: it is taken
    other = next(f"u{i}" for i in range(3) if f"u{i}" != first)
    v2 = base64.b64encode(f"127.0.0.1:{e.port_of(other)}".encode()).decode()
    st, h, _ = e.get("/", headers={"session-header": v2})
    assert h["x-upstream-name"] == other and "session-header" not in h


def test_gone_host_gets_new_session(procs):
    e = Env(procs, COOKIE.format(strict=""))
    gone = base64.b64encode(f"127.0.0.1:{free_port()}".encode()).decode()
    names = set()
    for _ in range(6):
        st, h, _ = e.get(headers={"cookie": f"global-session-cookie={gone}"})
        assert st == 200
        names.add(h["x-upstream-name"])
        assert cookie_addr(cookie_value(h["set-cookie"])) == f"127.0.0.1:{e.port_of(h['x-upstream-name'])}"
    assert len(names) > 1  # balanced as usual


def test_unhealthy_host_gets_new_session(procs):
    e = Env(procs, COOKIE.format(strict=""), cluster_extra=HC)
    wait_for(lambda: stat(e.admin, "cluster.backend.membership_healthy") == 3, 10, "3 healthy hosts")
    st, h, _ = e.get()
    first = h["x-upstream-name"]
    val = cookie_value(h["set-cookie"])
    victim = e.ups[int(first[1:])]
    victim.stop(signal.SIGKILL)
    wait_for(lambda: stat(e.admin, "cluster.backend.membership_healthy") == 2, 10, "the session host unhealthy")
    for _ in range(5):
        st, h, _ = e.get(headers={"cookie": f"global-session-cookie={val}"})
        assert st == 200 and h["x-upstream-name"] != first
        new = cookie_value(h["set-cookie"])
        assert cookie_addr(new) == f"127.0.0.1:{e.port_of(h['x-upstream-name'])}"


def test_strict(procs):
    e = Env(procs, COOKIE.format(strict="strict: true"))
    gone = base64.b64encode(f"127.0.0.1:{free_port()}".encode()).decode()
    st, h, body = e.get(headers={"cookie": f"global-session-cookie={gone}"})
    assert st == 503 and body == b"no healthy upstream" and "set-cookie" not in h
    # a good session, or none, is served
    st, h, _ = e.get()
    assert st == 200
    val = cookie_value(h["set-cookie"])
    st, h2, _ = e.get(headers={"cookie": f"global-session-cookie={val}"})
    assert st == 200 and h2["x-upstream-name"] == h["x-upstream-name"]


def test_per_route_disabled_and_override(procs):
    routes = textwrap.dedent("""\
        - match: { prefix: "/path/off" }
          route: { cluster: backend }
          typed_per_filter_config:
            envoy.filters.http.stateful_session:
              "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute
              disabled: true
        - match: { prefix: "/path/hdr" }
          route: { cluster: backend }
          typed_per_filter_config:
            envoy.filters.http.stateful_session:
              "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute
              stateful_session:
                session_state:
                  name: envoy.http.stateful_session.header
                  typed_config:
                    "@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState
                    name: x-route-session
        - match: { prefix: "/" }
          route: { cluster: backend }
        """)
    e = Env(procs, COOKIE.format(strict=""), routes=routes)
    st, h, _ = e.get()
    val = cookie_value(h["set-cookie"])
    names = set()
    for _ in range(12):
        st, h, _ = e.get("/path/off", headers={"cookie": f"global-session-cookie={val}"})
        assert st == 200 and "set-cookie" not in h
        names.add(h["x-upstream-name"])
    assert len(names) > 1  # the cookie is not honoured there
    st, h, _ = e.get("/path/hdr")
    assert "set-cookie" not in h and "x-route-session" in h


@pytest.mark.parametrize("value", [
    "%%%%", "====", "A===", "AA==", "x" * 8000, base64.b64encode(b"\x0a\x7fabc").decode(),
    base64.b64encode(b"\x0a\x05a:1:2\x10\x01").decode(),  # expired long ago
    base64.b64encode(b"1" * 500).decode(), '"', "",
])
def test_hostile_cookie(procs, value):
    e = Env(procs, COOKIE.format(strict=""), n=2)
    st, h, _ = e.get(headers={"cookie": f"global-session-cookie={value}"})
    assert st == 200
    assert cookie_addr(cookie_value(h["set-cookie"])) == f"127.0.0.1:{e.port_of(h['x-upstream-name'])}"
    st, h, _ = e.get()
    assert st == 200


def test_config_errors():
    def cfg(flt):
        return with_filter(bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]}), flt)
    rc, out = validate_config(cfg(COOKIE.format(strict="").replace("name: global-session-cookie, ", "")))
    assert rc == 1 and "cookie.name" in out, out
    rc, out = validate_config(cfg(HEADER.replace("name: session-header", "name: ''")))
    assert rc == 1 and "name" in out, out
    no_state = ("- name: envoy.filters.http.stateful_session\n  typed_config:\n"
                "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession\n"
                "    strict: true\n")
    rc, out = validate_config(cfg(no_state))
    assert rc == 1 and "session_state" in out, out


def test_retry_does_not_reuse_session_host(procs):
    # the session host is down but still healthy to the cluster (no health
    # checks): the first try goes to it and fails; the retry balances anew
    # (previous_hosts keeps balancing off the dead host; the override would not)
    routes = textwrap.dedent("""\
        - match: { prefix: "/" }
          route:
            cluster: backend
            retry_policy:
              retry_on: connect-failure
              num_retries: 1
              retry_host_predicate:
              - name: envoy.retry_host_predicates.previous_hosts
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
        """)
    e = Env(procs, COOKIE.format(strict=""), routes=routes)
    st, h, _ = e.get()
    first = h["x-upstream-name"]
    val = cookie_value(h["set-cookie"])
    e.ups[int(first[1:])].stop(signal.SIGKILL)
    for _ in range(5):
        st, h, _ = e.get(headers={"cookie": f"global-session-cookie={val}"})
        assert st == 200 and h["x-upstream-name"] != first
        assert cookie_addr(cookie_value(h["set-cookie"])) == f"127.0.0.1:{e.port_of(h['x-upstream-name'])}"
    assert stat(e.admin, "cluster.backend.upstream_rq_retry") == 5
