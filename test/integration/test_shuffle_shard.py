"""Shuffle sharding: SHARP as an edge proxy in front of cells (a cluster with
the sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard
load_balancing_policy, keyed by the route's hash_policy). Cells are real
sharp-test-upstream processes; the poison scenario starts them with
--exit-on-header so that one customer's request kills every cell it reaches.
Expected shards always come from SHARP's own /shuffle_shard admin page."""
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from conftest import (PROTOS, SHARP, SLOW, admin_get, free_port, protos, run_sharp_config, stat,
                      upstream_admin)

H1 = PROTOS["h1"]
BOTH = protos("h1", "h2-both")
# Active health checks speak HTTP/1 only (codec_client_type HTTP2 is
# refused), so the tests that need them run HTTP/2 on the client side.
DOWN = protos("h1", "h2-down")

SS_TYPE = "type.googleapis.com/sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard"
PREVIOUS_HOSTS = "[{ name: envoy.retry_host_predicates.previous_hosts }]"


def edge_yaml(listen, admin, cells, shard_size=2, on_unhealthy="FAIL", pick="LEAST_REQUEST", no_key="SOURCE_IP",
              seed=0, hash_policy="- header: { header_name: x-customer-id }\n", retry=True, hc=True, od=False,
              access_log=None, h2=False):
    """An edge bootstrap: one route to the shuffle-shard cluster `cells`
    ([(hostname, port), ...]) with the given hash_policy, retries on 5xx /
    reset / connect-failure with previous_hosts, active health checks every
    0.2 s (one failure marks a cell down) and optionally outlier detection;
    `h2`: the cells speak HTTP/2 (then without health checks)."""
    route = ""
    if hash_policy:
        route = "hash_policy:\n" + "".join("  " + l + "\n" for l in hash_policy.splitlines())
    if retry:
        route += ("retry_policy:\n"
                  "  retry_on: 5xx,reset,connect-failure\n"
                  "  num_retries: 2\n"
                  f"  retry_host_predicate: {PREVIOUS_HOSTS}\n"
                  "  host_selection_retry_max_attempts: 3\n"
                  "  retry_back_off: { base_interval: 0.005s, max_interval: 0.02s }\n")
    al = ""
    if access_log:
        al = ("          access_log:\n"
              "          - name: envoy.access_loggers.file\n"
              "            typed_config:\n"
              "              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
              f"              path: {access_log}\n"
              "              log_format: { text_format_source: { inline_string: "
              "\"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_HOST%\\n\" } }\n")
    health = ""
    if hc:
        health = ("    health_checks:\n"
                  "    - timeout: 0.1s\n"
                  "      interval: 0.2s\n"
                  "      no_traffic_interval: 0.2s\n"
                  "      unhealthy_threshold: 1\n"
                  "      healthy_threshold: 1\n"
                  "      http_health_check: { path: /healthz }\n")
    if od:
        health += ("    outlier_detection:\n"
                   "      consecutive_5xx: 1\n"
                   "      consecutive_local_origin_failure: 1\n"
                   "      split_external_local_origin_errors: true\n"
                   "      interval: 0.2s\n"
                   "      base_ejection_time: 30s\n"
                   "      max_ejection_percent: 100\n")
    h2opt = "    http2_protocol_options: {}\n" if h2 else ""
    eps = "".join(f"        - endpoint: {{ hostname: {name}, address: {{ socket_address: "
                  f"{{ address: 127.0.0.1, port_value: {port} }} }} }}\n" for name, port in cells)
    return f"""\
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: edge
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: edge
{al}          route_config:
            virtual_hosts:
            - name: cells
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: cells
                  timeout: 5s
{textwrap_indent(route, "                  ")}          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: cells
    type: STATIC
    connect_timeout: 0.25s
{h2opt}    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: sharp.load_balancing_policies.shuffle_shard
          typed_config:
            "@type": {SS_TYPE}
            shard_size: {shard_size}
            seed: {seed}
            on_shard_unhealthy: {on_unhealthy}
            pick: {pick}
            no_key: {no_key}
    circuit_breakers:
      thresholds:
      # a cell crash retries every request in flight on it at once: Envoy's
      # default of 3 concurrent retries would turn most of them into 503 UO
      - retry_budget: {{ budget_percent: {{ value: 25 }}, min_retry_concurrency: 64 }}
{health}    load_assignment:
      cluster_name: cells
      endpoints:
      - lb_endpoints:
{eps}"""


def textwrap_indent(text, prefix):
    return "".join(prefix + l + "\n" for l in text.splitlines())


def start_cells(procs, n, poison=False, proto=H1):
    return [proto.upstream(procs, f"cell{i}", extra=("--exit-on-header", "x-poison") if poison else ())
            for i in range(n)]


def start_edge(procs, cells, proto=H1, **kw):
    listen, admin = free_port(), free_port()
    s = run_sharp_config(procs, edge_yaml(listen, admin, [(c.args[c.args.index("--name") + 1], c.port) for c in cells],
                                          h2=proto.up == "h2", **kw), admin)
    return listen, admin, s


def shard_of(admin, key, cluster="cells"):
    q = urllib.parse.urlencode({"cluster": cluster, "key": key})
    return json.loads(admin_get(admin, "/shuffle_shard?" + q))


def shard_names(admin, key):
    return [c["hostname"] for c in shard_of(admin, key)["cells"] if c["in_shard"]]


def wait_all_healthy(admin, n, timeout=10):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if admin_get(admin, "/clusters").count("::health_flags::healthy") == n:
            return
        time.sleep(0.05)
    raise TimeoutError(admin_get(admin, "/clusters"))


def wait_unhealthy(admin, key, names, timeout=10):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        cells = {c["hostname"]: c for c in shard_of(admin, key)["cells"]}
        if all(not cells[n]["healthy"] for n in names):
            return
        time.sleep(0.05)
    raise TimeoutError(json.dumps(shard_of(admin, key)))


def req(port, path="/", headers=None, timeout=10, proto=H1):
    return proto.request(port, path, headers=headers, timeout=timeout)


def fault(u, q=""):
    upstream_admin(u, "/admin/fault" + q)


def counter(admin, name):
    return stat(admin, f"cluster.cells.shuffle_shard.{name}") or 0


# ---- (a) a poison customer kills only its own shard --------------------------

@DOWN
def test_poison_customer_takes_down_only_its_shard(procs, proto):
    cells = start_cells(procs, 8, poison=True, proto=proto)
    listen, admin, _ = start_edge(procs, cells, shard_size=2, on_unhealthy="FAIL", proto=proto)
    wait_all_healthy(admin, 8)
    customers = [f"customer-{i:03d}" for i in range(200)]
    shards = {c: set(shard_names(admin, c)) for c in customers}
    assert all(len(s) == 2 for s in shards.values())
    x = customers[7]
    sx = shards[x]
    overlap = {c: len(shards[c] & sx) for c in customers if c != x}
    groups = {k: [c for c in overlap if overlap[c] == k] for k in (0, 1, 2)}
    assert groups[0] and groups[1], groups

    results = []  # (customer, seconds since start, ok)
    lock = threading.Lock()
    stop = threading.Event()
    t0 = time.time()
    poison_at = 1.0
    duration = 3.5

    def client(mine):
        conn = None
        i = 0
        while not stop.is_set():
            cust = mine[i % len(mine)]
            i += 1
            ok = False
            try:
                if proto.down == "h2":
                    ok = req(listen, headers={"x-customer-id": cust}, timeout=5, proto=proto)[0] == 200
                else:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
                    conn.request("GET", "/", headers={"x-customer-id": cust})
                    r = conn.getresponse()
                    r.read()
                    ok = r.status == 200
            except (OSError, http.client.HTTPException):
                conn = None
            with lock:
                results.append((cust, time.time() - t0, ok))

    others = [c for c in customers if c != x]
    nthreads = 6
    threads = [threading.Thread(target=client, args=(others[k::nthreads],)) for k in range(nthreads)]
    for t in threads:
        t.start()
    # X: normal traffic, then a poison request every 100 ms from poison_at on.
    x_status = []
    while time.time() - t0 < duration:
        poison = time.time() - t0 >= poison_at
        h = {"x-customer-id": x}
        if poison:
            h["x-poison"] = "1"
        try:
            st, _, _ = req(listen, headers=h, timeout=5, proto=proto)
        except OSError:
            st = 0
        x_status.append((poison, st))
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=10)

    dead = {c.args[c.args.index("--name") + 1] for c in cells if c.p.poll() is not None}
    assert dead == sx, (dead, sx)
    for c in cells:
        if c.p.poll() is not None:
            assert c.p.returncode == 3

    errors = {}
    total = {}
    for cust, _, ok in results:
        total[cust] = total.get(cust, 0) + 1
        if not ok:
            errors[cust] = errors.get(cust, 0) + 1
    e = {k: sum(errors.get(c, 0) for c in groups[k]) for k in groups}
    n = {k: sum(total.get(c, 0) for c in groups[k]) for k in groups}
    print(f"\nX={x} shard={sorted(sx)}; customers by shared cells: "
          + ", ".join(f"{k}: {len(groups[k])} customers, {n[k]} requests, {e[k]} errors" for k in groups))
    # sharing no cell with X: not one error
    assert e[0] == 0 and n[0] > 0
    # sharing one cell: retries with previous_hosts move to the other cell
    assert e[1] == 0 and n[1] > 0
    # sharing X's whole shard: down with it (503 UH) once both cells are gone
    if groups[2]:
        late = [ok for cust, t, ok in results if cust in groups[2] and t > poison_at + 1.5]
        assert late and not any(late)
    assert all(st == 200 for p, st in x_status if not p)
    assert not any(st == 200 for p, st in x_status if p)
    assert counter(admin, "no_healthy_in_shard") > 0
    assert counter(admin, "spill") == 0
    # requests per cell are in /clusters
    rq = {}
    js = json.loads(admin_get(admin, "/clusters?format=json"))["cluster_statuses"][0]
    for h in js["host_statuses"]:
        rq[h["hostname"]] = int(next(s["value"] for s in h["stats"] if s["name"] == "rq_total"))
    assert all(rq[f"cell{i}"] > 0 for i in range(8)), rq
    assert "cells::shuffle_shard::shard_size::2" in admin_get(admin, "/clusters")


# ---- (b) determinism ------------------------------------------------------------

def test_two_processes_agree_on_every_shard(procs):
    cells = start_cells(procs, 8)
    _, admin1, _ = start_edge(procs, cells, shard_size=3, seed=42, hc=False)
    _, admin2, _ = start_edge(procs, cells, shard_size=3, seed=42, hc=False)
    _, admin3, _ = start_edge(procs, cells, shard_size=3, seed=43, hc=False)
    differs = 0
    for i in range(50):
        key = f"tenant-{i}"
        a, b = shard_of(admin1, key), shard_of(admin2, key)
        assert a["cells"] == b["cells"], key
        assert [c["in_shard"] for c in a["cells"]] == [True] * 3 + [False] * 5
        assert a["shard_size"] == 3 and a["key"] == key
        differs += shard_names(admin1, key) != shard_names(admin3, key)
    assert differs > 25  # another seed, other shards


def test_admin_errors(procs):
    cells = start_cells(procs, 2)
    _, admin, _ = start_edge(procs, cells, hc=False)

    def code(q):
        try:
            admin_get(admin, "/shuffle_shard" + q)
            return 200
        except urllib.error.HTTPError as e:
            return e.code
    assert code("?cluster=nope&key=a") == 404
    assert code("?cluster=cells") == 400
    assert code("") == 400
    assert code("?cluster=cells&key=a") == 200
    js = shard_of(admin, "a")
    assert js["chosen_if_now"] in {c["address"] for c in js["cells"] if c["in_shard"]}


# ---- (c) requests without a key ------------------------------------------------

@DOWN
def test_no_key_source_ip_and_reject(procs, proto):
    cells = start_cells(procs, 6, proto=proto)
    listen, admin, _ = start_edge(procs, cells, pick="FIRST_HEALTHY", no_key="SOURCE_IP", hc=False, proto=proto)
    want = shard_names(admin, "127.0.0.1")[0]
    for _ in range(5):
        st, h, _ = req(listen, proto=proto)
        assert st == 200 and h["x-upstream-name"] == want
    # with the header, the customer's own first cell
    st, h, _ = req(listen, headers={"x-customer-id": "acme"}, proto=proto)
    assert st == 200 and h["x-upstream-name"] == shard_names(admin, "acme")[0]

    log = os.path.join(tempfile.mkdtemp(prefix="sharp-ss-"), "access.log")
    listen2, admin2, _ = start_edge(procs, cells, no_key="REJECT", hc=False, access_log=log, proto=proto)
    st, _, body = req(listen2, proto=proto)
    assert st == 400 and b"no customer key" in body
    st, _, _ = req(listen2, headers={"x-customer-id": "acme"}, proto=proto)
    assert st == 200
    deadline = time.time() + 5
    while time.time() < deadline and "shuffle_shard_no_key" not in open(log).read():
        time.sleep(0.05)
    assert "400 - shuffle_shard_no_key" in open(log).read()


@DOWN
def test_hash_policy_kinds(procs, proto):
    """cookie and query_parameter keys, policies joined by a newline, terminal."""
    cells = start_cells(procs, 6, proto=proto)
    hp = ("- cookie: { name: tenant }\n  terminal: true\n"
          "- query_parameter: { name: t }\n"
          "- header: { header_name: x-customer-id }\n")
    listen, admin, _ = start_edge(procs, cells, pick="FIRST_HEALTHY", no_key="REJECT", hash_policy=hp, hc=False,
                                  proto=proto)

    def first(key):
        return shard_names(admin, key)[0]
    # a cookie is terminal: the other policies are not looked at
    st, h, _ = req(listen, "/?t=q1", headers={"cookie": "a=b; tenant=\"t-7\"", "x-customer-id": "h"}, proto=proto)
    assert st == 200 and h["x-upstream-name"] == first("t-7")
    # without the cookie: the query parameter and the header, in order
    for i in range(6):
        st, h, _ = req(listen, f"/x?a=1&t=q{i}", headers={"x-customer-id": f"h{i}"}, proto=proto)
        assert st == 200 and h["x-upstream-name"] == first(f"q{i}\nh{i}")
    st, h, _ = req(listen, "/?t=only", proto=proto)
    assert st == 200 and h["x-upstream-name"] == first("only")
    st, _, _ = req(listen, "/?other=1", proto=proto)
    assert st == 400


# ---- (d) a shard with no healthy cell: SPILL and FAIL ----------------------------

def _fail_shard(procs, on_unhealthy, proto=H1):
    cells = start_cells(procs, 6, proto=proto)
    log = os.path.join(tempfile.mkdtemp(prefix="sharp-ss-"), "access.log")
    listen, admin, _ = start_edge(procs, cells, on_unhealthy=on_unhealthy, pick="FIRST_HEALTHY", retry=False,
                                  access_log=log, proto=proto)
    wait_all_healthy(admin, 6)
    key = "unlucky"
    order = shard_of(admin, key)["cells"]
    by_name = {c.args[c.args.index("--name") + 1]: c for c in cells}
    shard = [c["hostname"] for c in order if c["in_shard"]]
    for n in shard:
        fault(by_name[n], "?status=503")  # health checks now fail
    wait_unhealthy(admin, key, shard)
    return listen, admin, log, key, order


def test_spill_goes_to_the_next_cell_in_the_customers_order(procs):
    listen, admin, _, key, order = _fail_shard(procs, "SPILL")
    assert counter(admin, "spill") == 0
    js = shard_of(admin, key)
    assert js["chosen_if_now"] == order[2]["address"]
    for _ in range(3):
        st, h, _ = req(listen, headers={"x-customer-id": key})
        assert st == 200 and h["x-upstream-name"] == order[2]["hostname"]
    assert counter(admin, "spill") == 3
    assert counter(admin, "no_healthy_in_shard") == 0


@DOWN
def test_fail_answers_503_no_healthy_upstream(procs, proto):
    listen, admin, log, key, order = _fail_shard(procs, "FAIL", proto)
    assert shard_of(admin, key)["chosen_if_now"] is None
    st, _, body = req(listen, headers={"x-customer-id": key}, proto=proto)
    assert st == 503 and body == b"no healthy upstream"
    assert counter(admin, "no_healthy_in_shard") == 1
    assert counter(admin, "spill") == 0
    deadline = time.time() + 5
    while time.time() < deadline and "no_healthy_upstream" not in open(log).read():
        time.sleep(0.05)
    assert "503 UH no_healthy_upstream" in open(log).read()


# ---- retries stay in the shard; failover is counted -----------------------------

@BOTH
def test_retry_fails_over_to_the_other_shard_cell(procs, proto):
    cells = start_cells(procs, 6, proto=proto)
    listen, admin, _ = start_edge(procs, cells, pick="FIRST_HEALTHY", hc=False, proto=proto)
    by_name = {c.args[c.args.index("--name") + 1]: c for c in cells}
    key = "retrying"
    first, second = shard_names(admin, key)
    fault(by_name[first], "?status=503")
    for i in range(4):
        st, h, _ = req(listen, headers={"x-customer-id": key}, proto=proto)
        assert st == 200 and h["x-upstream-name"] == second
    assert counter(admin, "failover") == 4
    # both shard cells failing: the retries do not leave the shard
    fault(by_name[second], "?status=503")
    st, _, _ = req(listen, headers={"x-customer-id": key}, proto=proto)
    assert st == 503
    assert counter(admin, "spill") == 0


@DOWN
def test_health_checked_cell_fails_over_and_comes_back(procs, proto):
    """A cell failing its health checks loses its customers to their other
    shard cell within about one interval, and gets them back once it
    passes again (FIRST_HEALTHY: the customer's first cell when usable)."""
    cells = start_cells(procs, 6, proto=proto)
    listen, admin, _ = start_edge(procs, cells, pick="FIRST_HEALTHY", retry=False, proto=proto)
    wait_all_healthy(admin, 6)
    by_name = {c.args[c.args.index("--name") + 1]: c for c in cells}
    key = "comes-back"
    first, second = shard_names(admin, key)
    assert req(listen, headers={"x-customer-id": key}, proto=proto)[1]["x-upstream-name"] == first
    fault(by_name[first], "?status=503")
    t0 = time.time()
    wait_unhealthy(admin, key, [first])
    assert time.time() - t0 < 1.0 * SLOW  # one 0.2 s interval, unhealthy_threshold 1
    for _ in range(3):
        st, h, _ = req(listen, headers={"x-customer-id": key}, proto=proto)
        assert st == 200 and h["x-upstream-name"] == second
    fault(by_name[first])
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline:
        if req(listen, headers={"x-customer-id": key}, proto=proto)[1]["x-upstream-name"] == first:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the recovered cell never got its customer back")
    assert counter(admin, "spill") == 0


@BOTH
def test_outlier_ejected_cell_is_skipped(procs, proto):
    cells = start_cells(procs, 6, proto=proto)
    listen, admin, _ = start_edge(procs, cells, pick="FIRST_HEALTHY", hc=False, od=True, retry=False, proto=proto)
    by_name = {c.args[c.args.index("--name") + 1]: c for c in cells}
    key = "ejected"
    first, second = shard_names(admin, key)
    fault(by_name[first], "?status=500")
    st, _, _ = req(listen, headers={"x-customer-id": key}, proto=proto)
    assert st == 500
    wait_unhealthy(admin, key, [first])
    st, h, _ = req(listen, headers={"x-customer-id": key}, proto=proto)
    assert st == 200 and h["x-upstream-name"] == second
    assert counter(admin, "failover") == 1


# ---- (e) config errors ------------------------------------------------------------

def validate(text):
    d = tempfile.mkdtemp(prefix="sharp-ss-")
    p = os.path.join(d, "c.yaml")
    with open(p, "w") as f:
        f.write(text)
    r = subprocess.run([SHARP, "--mode", "validate", "-c", p], capture_output=True, timeout=20)
    return r.returncode, (r.stdout + r.stderr).decode()


def test_config_errors():
    base = edge_yaml(10000, 9901, [("a", 8001), ("b", 8002), ("c", 8003)], hc=False)
    rc, out = validate(base)
    assert rc == 0, out
    # lb_policy is ignored when load_balancing_policy is set, as in Envoy
    rc, out = validate(base.replace("    load_balancing_policy:", "    lb_policy: RING_HASH\n    load_balancing_policy:", 1))
    assert rc == 0, out
    lbp = "static_resources.clusters[0].load_balancing_policy"
    rc, out = validate(base.replace("shard_size: 2", "shard_size: 0"))
    assert rc == 1 and f"{lbp}.policies[0].typed_extension_config.typed_config.shard_size: must be at least 1" in out, out
    # a registered type that is not a load balancer
    rc, out = validate(base.replace(SS_TYPE, "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")
                       .replace("            shard_size: 2\n            seed: 0\n            on_shard_unhealthy: FAIL\n"
                                "            pick: LEAST_REQUEST\n            no_key: SOURCE_IP\n", ""))
    assert rc == 1 and f"{lbp}.policies[0].typed_extension_config.typed_config" in out and "not supported" in out, out
    # Envoy's own balancers: the type is unknown to SHARP
    rc, out = validate(base.replace(
        SS_TYPE, "type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash"))
    assert rc == 1 and "load_balancing_policy.policies[0].typed_extension_config.typed_config" in out, out
    assert "RingHash" in out, out
    start, end = base.index("    load_balancing_policy:"), base.index("    circuit_breakers:")
    rc, out = validate(base[:start] + "    load_balancing_policy: { policies: [] }\n" + base[end:])
    assert rc == 1 and f"{lbp}.policies: at least one policy is required" in out, out
    rc, out = validate(base.replace("      policies:\n", "      policies:\n      - {}\n"))
    assert rc == 1 and f"{lbp}.policies[0].typed_extension_config: is required" in out, out
    rc, out = validate(base.replace("hostname: b,", "hostname: a,"))
    assert rc == 1 and "load_assignment.endpoints[0].lb_endpoints[1].endpoint: cell identity 'a'" in out, out
    route = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config." \
            "virtual_hosts[0].routes[0].route"
    for hp, field, msg in [
        ("- cookie: { name: s, ttl: 60s }", "hash_policy[0].cookie.ttl", "ttl is not supported by SHARP"),
        ("- filter_state: { key: k }", "hash_policy[0].filter_state", "filter_state is not supported by SHARP"),
        ("- header: { header_name: x, regex_rewrite: { pattern: { regex: a }, substitution: b } }",
         "hash_policy[0].header.regex_rewrite", "regex_rewrite is not supported by SHARP"),
        ("- header: { header_name: x-a }\n- query_parameter: { name: \"\" }", "hash_policy[1].query_parameter.name",
         "must be at least 1 character long"),
        ("- terminal: true", "hash_policy[0]", "one of header, cookie"),
    ]:
        rc, out = validate(edge_yaml(10000, 9901, [("a", 8001)], hc=False, hash_policy=hp))
        assert rc == 1 and f"{route}.{field}: {msg}" in out, (hp, out)
    # connection_properties and a plain cookie are fine
    rc, out = validate(edge_yaml(10000, 9901, [("a", 8001)], hc=False,
                                 hash_policy="- connection_properties: { source_ip: true }\n- cookie: { name: s }"))
    assert rc == 0, out
