"""The bootstrap's stats_config: custom and fixed tags as Envoy's tag
producer extracts them (seen in /stats/prometheus), use_all_default_tags,
the stats matcher (stats that are never created, in every admin view) and
histogram_bucket_settings."""
import json
import subprocess
import textwrap
import urllib.request

from conftest import PROTOS, SHARP, Sharp, admin_get, bootstrap_yaml, free_port, protos, stat, wait_for

H1 = PROTOS["h1"]

ISTIO_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"

# Istio's legacy proxy bootstrap tags (use_all_default_tags: false), the
# regexes written exactly as Istio ships them. The lookahead "(?=\\.)" is
# ECMAScript syntax, which Envoy's custom tags use (std::regex).
ISTIO_TAGS = r"""
stats_config:
  use_all_default_tags: false
  stats_tags:
  - tag_name: cluster_name
    regex: '^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)'
  - tag_name: tcp_prefix
    regex: '^tcp\.((.*?)\.)\w+?$'
  - tag_name: response_code
    regex: '_rq(_(\d{3}))$'
  - tag_name: response_code_class
    regex: '_rq(_(\dxx))$'
  - tag_name: http_conn_manager_listener_prefix
    regex: '^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)'
  - tag_name: http_conn_manager_prefix
    regex: '^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)'
  - tag_name: listener_address
    regex: '^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)'
"""


def start(procs, upstream, stats_config, cluster=ISTIO_CLUSTER, stat_prefix="ingress_http", cluster_extra=""):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {cluster: [upstream.port]}, cluster_extra=cluster_extra)
    y = y.replace("name: " + cluster, f"name: '{cluster}'").replace(
        "cluster_name: " + cluster, f"cluster_name: '{cluster}'").replace(
        "cluster: " + cluster + " }", f"cluster: '{cluster}' }}")
    y = y.replace("stat_prefix: ingress_http", "stat_prefix: " + stat_prefix)
    s = Sharp(y + textwrap.dedent(stats_config))
    procs.append(s)
    s.wait_ready(admin)
    return listen, admin


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status


def families(prom):
    return {ln.split()[2]: ln.split()[3] for ln in prom.splitlines() if ln.startswith("# TYPE ")}


def validate(yaml_text):
    """Runs sharp --mode validate on a config; returns (exit code, output)."""
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="sharp-sc-")
    path = os.path.join(d, "b.yaml")
    with open(path, "w") as f:
        f.write(yaml_text)
    r = subprocess.run([SHARP, "-c", path, "--mode", "validate"], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


@protos("h1", "h2-both")
def test_istio_tags_give_clean_prometheus_names(procs, proto):
    upstream = proto.upstream(procs)
    listen, admin = start(procs, upstream, ISTIO_TAGS, stat_prefix="0.0.0.0_9080", cluster_extra=proto.cluster)
    assert proto.request(listen, "/")[0] == 200
    prom = admin_get(admin, "/stats/prometheus")
    # the connections' protocol counters, tagged the same way
    v = proto.up[-1]
    assert f'envoy_cluster_upstream_cx_http{v}_total{{cluster_name="{ISTIO_CLUSTER}"}} 1' in prom
    v = proto.down[-1]
    assert f'envoy_http_downstream_cx_http{v}_total{{http_conn_manager_prefix="0.0.0.0_9080"}} 1' in prom
    # The cluster name, dots and '|' included, is one label value and gone
    # from the metric name.
    assert (f'envoy_cluster_upstream_rq_total{{cluster_name="{ISTIO_CLUSTER}"}} 1') in prom
    assert (f'envoy_cluster_upstream_rq{{response_code="200",cluster_name="{ISTIO_CLUSTER}"}} 1'
            in prom)
    # as with Istio, the class and the code share one family
    assert (f'envoy_cluster_upstream_rq{{response_code_class="2xx",cluster_name="{ISTIO_CLUSTER}"}} 1'
            in prom)
    # Istio's prefix regexes take address-like HCM prefixes
    assert 'envoy_http_downstream_rq_total{http_conn_manager_prefix="0.0.0.0_9080"} 1' in prom
    # no default tags: the names use Istio's tag names only
    assert "envoy_cluster_name" not in prom
    assert "envoy_response_code" not in prom
    fam = families(prom)
    assert fam["envoy_cluster_upstream_rq_total"] == "counter"
    assert not any("reviews" in f or "svc" in f for f in fam), [f for f in fam if "svc" in f]
    # /stats keeps Envoy's full names
    assert stat(admin, f"cluster.{ISTIO_CLUSTER}.upstream_rq_total") == 1
    assert f"cluster.{ISTIO_CLUSTER}.upstream_rq_200: 1" in admin_get(admin, "/stats")


def test_default_tags_without_stats_config(procs, upstream):
    listen, admin = start(procs, upstream, "", cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    prom = admin_get(admin, "/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1' in prom


def test_custom_tag_alongside_defaults_and_fixed_tags(procs, upstream):
    # Defaults stay on (use_all_default_tags unset); a custom tag with a
    # default's name runs after the default and is skipped when the default
    # has extracted the tag; a new tag name adds a label; fixed tags label
    # every stat.
    listen, admin = start(procs, upstream, r"""
        stats_config:
          stats_tags:
          - tag_name: envoy.cluster_name
            regex: '^cluster\.((ba)ckend\.)'
          - tag_name: rq_kind
            regex: '^cluster\.[^.]+\.upstream_(rq)_total$'
          - tag_name: mesh
            fixed_value: prod
          - tag_name: envoy.response_code
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    prom = admin_get(admin, "/stats/prometheus")
    # "rq" removed from the name, kept as the rq_kind label; the default
    # cluster_name tag wins over the custom one of the same name. Labels
    # come in Envoy's extraction order: extractors without a first-token
    # prefix (the fixed tag), then those keyed by "cluster", defaults first.
    assert ('envoy_cluster_upstream__total{mesh="prod",envoy_cluster_name="backend",rq_kind="rq"} 1'
            in prom), prom
    assert 'envoy_server_live{mesh="prod"} 1' in prom
    assert ('envoy_cluster_upstream_rq{envoy_response_code="200",mesh="prod",envoy_cluster_name="backend"} 1'
            in prom)


def test_only_named_defaults(procs, upstream):
    # use_all_default_tags: false with bare tag names: just those defaults
    listen, admin = start(procs, upstream, """
        stats_config:
          use_all_default_tags: false
          stats_tags:
          - tag_name: envoy.cluster_name
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    prom = admin_get(admin, "/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_200{envoy_cluster_name="backend"} 1' in prom
    assert 'envoy_http_ingress_http_downstream_rq_total{} 1' in prom


def test_inclusion_list(procs, upstream):
    listen, admin = start(procs, upstream, r"""
        stats_config:
          stats_matcher:
            inclusion_list:
              patterns:
              - prefix: server.
              - suffix: upstream_rq_total
              - safe_regex: { regex: 'http\.[a-z_]+\.downstream_rq_[0-9]xx' }
              - exact: CLUSTER_MANAGER.ACTIVE_CLUSTERS
                ignore_case: true
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    # the workers' counts reach the admin with their next flush
    wait_for(lambda: stat(admin, "http.ingress_http.downstream_rq_2xx") == 1, 5, "the request's counts")
    names = [s["name"] for s in json.loads(admin_get(admin, "/stats?format=json"))["stats"] if "name" in s]
    assert "server.live" in names
    assert "cluster.backend.upstream_rq_total" in names
    assert "http.ingress_http.downstream_rq_2xx" in names
    assert "cluster_manager.active_clusters" in names
    assert "cluster.backend.upstream_rq_200" not in names
    assert "http.ingress_http.downstream_rq_total" not in names
    assert all(n.startswith("server.") or n.endswith("upstream_rq_total") or "downstream_rq_" in n
               or n == "cluster_manager.active_clusters" for n in names), names
    assert stat(admin, "cluster.backend.upstream_rq_total") == 1
    assert stat(admin, "http.ingress_http.downstream_rq_2xx") == 1
    text = admin_get(admin, "/stats")
    assert "upstream_rq_200" not in text
    assert "upstream_rq_time" not in text  # histograms are rejected too
    prom = admin_get(admin, "/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="backend"} 1' in prom
    assert "upstream_rq_time" not in prom
    assert "envoy_cluster_upstream_rq{" not in prom


def test_exclusion_list(procs, upstream):
    listen, admin = start(procs, upstream, """
        stats_config:
          stats_matcher:
            exclusion_list:
              patterns:
              - prefix: cluster.
              - contains: downstream_cx
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    names = [s["name"] for s in json.loads(admin_get(admin, "/stats?format=json"))["stats"] if "name" in s]
    assert not [n for n in names if n.startswith("cluster.") or "downstream_cx" in n]
    assert "http.ingress_http.downstream_rq_total" in names
    assert "cluster_manager.active_clusters" in names
    assert stat(admin, "http.ingress_http.downstream_rq_total") == 1
    prom = admin_get(admin, "/stats/prometheus")
    assert "envoy_cluster_name" not in prom and "downstream_cx" not in prom
    assert "envoy_cluster_manager_active_clusters{} 1" in prom


def test_reject_all(procs, upstream):
    listen, admin = start(procs, upstream, """
        stats_config:
          stats_matcher: { reject_all: true }
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    assert json.loads(admin_get(admin, "/stats?format=json"))["stats"] == []
    assert admin_get(admin, "/stats") == ""
    assert admin_get(admin, "/stats/prometheus").strip() == ""


def test_reject_all_false_keeps_everything(procs, upstream):
    listen, admin = start(procs, upstream, """
        stats_config:
          stats_matcher: { reject_all: false }
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    assert stat(admin, "cluster.backend.upstream_rq_total") == 1


def test_histogram_bucket_settings(procs, upstream):
    listen, admin = start(procs, upstream, """
        stats_config:
          histogram_bucket_settings:
          - match: { suffix: upstream_rq_time }
            buckets: [1000, 0.5, 25]
          - match: { prefix: cluster. }
            buckets: [7]
        """, cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200

    def rq_time_lines():
        return [ln for ln in admin_get(admin, "/stats/prometheus").splitlines()
                if ln.startswith("envoy_cluster_upstream_rq_time_bucket")]
    # the request's sample reaches the admin with the workers' next flush
    wait_for(lambda: rq_time_lines() and rq_time_lines()[-1].endswith(" 1"), 5, "the request's time sample")
    prom = admin_get(admin, "/stats/prometheus")
    rq_time = [ln for ln in prom.splitlines() if ln.startswith("envoy_cluster_upstream_rq_time_bucket")]
    assert [ln.split('le="')[1].split('"')[0] for ln in rq_time] == ["0.5", "25", "1000", "+Inf"]
    assert rq_time[-1].endswith(" 1")
    # the first matching rule wins; other cluster histograms get the second
    cx = [ln for ln in prom.splitlines() if ln.startswith("envoy_cluster_upstream_cx_connect_ms_bucket")]
    assert [ln.split('le="')[1].split('"')[0] for ln in cx] == ["7", "+Inf"]
    # others keep Envoy's default bounds
    ds = [ln for ln in prom.splitlines() if ln.startswith("envoy_http_downstream_rq_time_bucket")]
    assert len(ds) == 20 and 'le="3600000"' in ds[-2]


def test_deferred_stat_options(procs, upstream):
    """Envoy's deferred creation: a cluster's traffic stats appear in no view
    until the cluster first sees traffic, then all of them (zeros too);
    other cluster stats are there from the start."""
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"used": [upstream.port], "idle": [upstream.port]})
    s = Sharp(y + "deferred_stat_options: { enable_deferred_creation_stats: true }\n")
    procs.append(s)
    s.wait_ready(admin)

    def views():
        return (admin_get(admin, "/stats"), admin_get(admin, "/stats?format=json"),
                admin_get(admin, "/stats/prometheus"))

    for v in views():
        assert "upstream_rq_total" not in v and "upstream_cx_total" not in v
        assert "upstream_cx_connect_ms" not in v and "upstream_rq_timeout" not in v
    text = views()[0]
    assert "cluster.used.membership_total: 1" in text
    assert "cluster.idle.circuit_breakers.default.cx_open: 0" in text
    assert get(f"http://127.0.0.1:{listen}/") == 200
    text, js, prom = views()
    assert "cluster.used.upstream_rq_total: 1" in text
    assert "cluster.used.upstream_rq_timeout: 0" in text
    assert "cluster.used.upstream_cx_connect_ms: P0(" in text
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="used"} 1' in prom
    assert stat(admin, "cluster.used.upstream_cx_total") == 1
    # the idle cluster's block is still not created
    assert "cluster.idle.upstream_rq_total" not in text and "cluster.idle.upstream_cx_active" not in js
    assert 'envoy_cluster_name="idle"' in prom and 'upstream_rq_total{envoy_cluster_name="idle"}' not in prom


def test_deferred_stat_options_off_lists_everything(procs, upstream):
    listen, admin = free_port(), free_port()
    y = bootstrap_yaml(listen, admin, {"idle": [upstream.port]})
    s = Sharp(y + "deferred_stat_options: { enable_deferred_creation_stats: false }\n")
    procs.append(s)
    s.wait_ready(admin)
    assert stat(admin, "cluster.idle.upstream_rq_total") == 0


def base(extra):
    return bootstrap_yaml(free_port(), free_port(), {"backend": [1]}) + textwrap.dedent(extra)


def test_invalid_stats_config_is_refused():
    rc, out = validate(base(r"""
        stats_config:
          stats_tags:
          - tag_name: bad
            regex: '^cluster\.((.+?)\.'
        """))
    assert rc != 0 and "stats_config.stats_tags[0].regex" in out and "Invalid regex" in out, out
    rc, out = validate(base("""
        stats_config:
          stats_tags:
          - tag_name: not.a.default
        """))
    assert rc != 0 and "no default regex for name: 'not.a.default'" in out, out
    rc, out = validate(base("""
        stats_config:
          stats_tags:
          - regex: '(x)'
        """))
    assert rc != 0 and "tag_name cannot be empty" in out, out
    rc, out = validate(base("""
        stats_config:
          stats_matcher: {}
        """))
    assert rc != 0 and "stats_config.stats_matcher" in out, out
    rc, out = validate(base("""
        stats_config:
          stats_matcher: { inclusion_list: { patterns: [ { safe_regex: { regex: '(' } } ] } }
        """))
    assert rc != 0 and "stats_matcher.inclusion_list.patterns[0].safe_regex.regex" in out, out
    rc, out = validate(base("""
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: x }
            buckets: [1, 0]
        """))
    assert rc != 0 and "histogram_bucket_settings[0].buckets" in out and "greater than 0" in out, out
    rc, out = validate(base("""
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: x }
            buckets: [5, 5]
        """))
    assert rc != 0 and "unique" in out, out
    rc, out = validate(base("""
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: x }
            buckets: []
        """))
    assert rc != 0 and "histogram_bucket_settings[0]" in out, out
    # bins is a hint (Envoy's circllhist sizing), validated as Envoy does
    rc, out = validate(base("""
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: x }
            buckets: [1]
            bins: 0
        """))
    assert rc != 0 and "histogram_bucket_settings[0].bins" in out and "greater than 0" in out, out
    rc, out = validate(base("""
        stats_config:
          histogram_bucket_settings:
          - match: { prefix: x }
            buckets: [1]
            bins: 50
        """))
    assert rc == 0, out


# ---- real stats_config sections from the corpus ------------------------------

import os  # noqa: E402
import re  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

CORPUS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "envoy-corpus"))


def corpus_stats_configs():
    """(file name, stats_config) of every corpus bootstrap that has one."""
    out = []
    if not os.path.isdir(CORPUS):
        return out
    for f in sorted(os.listdir(CORPUS)):
        if not re.search(r"\.(ya?ml|json)$", f):
            continue
        try:
            with open(os.path.join(CORPUS, f)) as fh:
                d = json.load(fh) if f.endswith(".json") else yaml.safe_load(fh)
        except Exception:
            continue
        if isinstance(d, dict) and (d.get("stats_config") or d.get("statsConfig")):
            out.append((f, d.get("stats_config") or d.get("statsConfig")))
    return out


# One series line of Prometheus' text format: a valid metric name, labels
# with valid names and quoted values, a number.
SERIES = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\} -?[0-9.e+]+$')


def check_exposition(prom):
    for ln in prom.splitlines():
        if not ln or ln.startswith("# TYPE "):
            continue
        assert SERIES.match(ln), ln


@pytest.mark.skipif(not corpus_stats_configs(), reason="the Envoy corpus is not next to the project")
def test_corpus_stats_configs_load():
    """Istio's, Envoy Gateway's and Kuma's stats_config sections all load
    (their other fields are refused for unrelated features, so each section
    is loaded alone)."""
    found = corpus_stats_configs()
    assert len(found) >= 50
    bad = []
    for name, sc in found:
        rc, out = validate(json.dumps({"static_resources": {}, "stats_config": sc}))
        if rc != 0:
            bad.append(f"{name}: {out.strip().splitlines()[0][:300]}")
    assert not bad, "\n".join(bad)


def corpus_section(name):
    for f, sc in corpus_stats_configs():
        if f == name:
            return sc
    pytest.skip(f"{name} is not in the corpus")


def test_istio_stats_inclusion_golden_live(procs, upstream):
    """Istio's stats_config with its inclusion list and histogram buckets,
    in a running proxy: only the included stats exist, the Prometheus text
    is well-formed, Istio's bucket bounds apply."""
    sc = corpus_section("istio__pkg__bootstrap__testdata__stats_inclusion_golden.json")
    listen, admin = start(procs, upstream, "stats_config: " + json.dumps(sc) + "\n",
                          stat_prefix="'10.3.3.3_8080;'")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    names = [s["name"] for s in json.loads(admin_get(admin, "/stats?format=json"))["stats"] if "name" in s]
    assert "server.live" in names and "cluster_manager.active_clusters" in names
    assert f"cluster.{ISTIO_CLUSTER}.upstream_rq_2xx" in names  # suffix upstream_rq_2xx
    assert f"cluster.{ISTIO_CLUSTER}.upstream_rq_200" not in names
    # Istio ends stat prefixes with ';' for its regexes to find their end
    assert "http.10.3.3.3_8080;.downstream_rq_total" in names  # prefix http.10.3.3.3_
    prom = admin_get(admin, "/stats/prometheus")
    check_exposition(prom)
    assert 'envoy_http_downstream_rq_total{http_conn_manager_prefix="10.3.3.3_8080"} 1' in prom
    assert 'envoy_server_live{} 1' in prom
    # histogram_bucket_settings match "envoy"/"istio" prefixes, which no
    # SHARP stat name has: Envoy's default bounds
    assert 'le="3600000"' in prom


def test_envoy_gateway_stats_config_live(procs, upstream):
    sc = corpus_section("gateway__internal__xds__bootstrap__testdata__render__custom-stats-matcher.yaml")
    listen, admin = start(procs, upstream, "stats_config: " + json.dumps(sc) + "\n", cluster="backend")
    assert get(f"http://127.0.0.1:{listen}/") == 200
    names = [s["name"] for s in json.loads(admin_get(admin, "/stats?format=json"))["stats"] if "name" in s]
    assert names and all(re.match(r"(http|cluster|virtual)", n) or n.endswith("upstream_rq") for n in names), names
    assert "server.live" not in names
    prom = admin_get(admin, "/stats/prometheus")
    check_exposition(prom)
    # its "priority" tag: circuit_breakers\.((.+?)\.).+ next to the default tags
    assert re.search(r'envoy_cluster_circuit_breakers_cx_open\{priority="default",'
                     r'envoy_cluster_name="backend"\} 0', prom), prom


def test_dispatcher_stats(procs, upstream):
    """enable_dispatcher_stats: the main thread's and each worker's event
    loop histograms under Envoy's names; a worker's loop durations include
    the turns that served requests. Without the field there are none."""
    listen, admin = start(procs, upstream, "enable_dispatcher_stats: true\n", cluster="backend")
    for _ in range(20):
        assert get(f"http://127.0.0.1:{listen}/") == 200
    names = ["server.dispatcher.loop_duration_us", "server.dispatcher.poll_delay_us",
             "listener_manager.worker_0.dispatcher.loop_duration_us",
             "listener_manager.worker_0.dispatcher.poll_delay_us"]

    def recorded():
        text = admin_get(admin, "/stats?filter=dispatcher")
        return all(n in text for n in names) and "P0(" in text.split(
            "listener_manager.worker_0.dispatcher.loop_duration_us: ", 1)[1].split("\n", 1)[0]
    wait_for(recorded, 15, "dispatcher histograms with values")
    prom = admin_get(admin, "/stats/prometheus")
    # Envoy's worker_id tag takes the worker's number out of the name
    assert 'envoy_listener_manager_worker_dispatcher_loop_duration_us_count{envoy_worker_id="0"}' in prom
    assert "envoy_server_dispatcher_poll_delay_us_count" in prom
    listen2, admin2 = start(procs, upstream, "", cluster="backend")
    assert "dispatcher" not in admin_get(admin2, "/stats?filter=dispatcher")
