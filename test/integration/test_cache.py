"""envoy.filters.http.cache with the in-memory SimpleHttpCache in the data
path, against the project's test upstream (its /admin/stats request count
tells whether a request reached it; ?hdr= gives the response its caching
headers): a cacheable response served from the cache (the upstream not
asked again, an age header, the RFCF response flag and the hit counter),
HEAD from a cached GET, no-store and private responses and authorization
requests not cached, Vary with allowed_vary_headers (one entry per value,
a header not allowed never cached), a stale entry validated with
If-None-Match and a 304 from the upstream turned into the cached response,
a validation answered with a new response, request no-cache and
ignore_request_cache_control_header, key_creator_params, bodies longer than
max_body_bytes or the buffer limit passed through uncached and whole,
bad configs refused, and the Envoy corpus files that use the filter."""
import json
import os
import subprocess
import urllib.parse

import pytest

from conftest import (PROTOS, SHARP, bootstrap_yaml, file_access_log, free_port, log_lines, protos, run_sharp_config,
                      stat, upstream_admin, validate_config, wait_for)

CORPUS = next((d for d in (os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                                        "envoy-corpus")), "/work/shared/envoy-corpus")
               if os.path.isdir(d)), "/work/shared/envoy-corpus")
CACHE = "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig"
SIMPLE = "type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig"
EVENT = "cache.event.cache_label.envoy_extensions_http_cache_simple.event_type."
LOG = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%\\n"


def indent(text, n):
    return "".join(" " * n + ln + "\n" for ln in text.splitlines())


def with_cache(yaml_text, extra=""):
    f = f"- name: envoy.filters.http.cache\n  typed_config:\n    \"@type\": {CACHE}\n" \
        f"    typed_config:\n      \"@type\": {SIMPLE}\n" + indent(extra, 4)
    return yaml_text.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10))


class Proxy:
    """SHARP with the cache filter in front of `upstream`; every request
    waits for the stream's completion (downstream_rq_completed), so any
    insert into the cache at the end of its response is done before the
    next request."""

    def __init__(self, procs, upstream, extra="", listener_extra="", proto=None, filt=None):
        self.listen, self.admin = free_port(), free_port()
        self.proto = proto or PROTOS["h1"]
        al, self.log = file_access_log(LOG)
        y = bootstrap_yaml(self.listen, self.admin, {"backend": [upstream.port]}, hcm_extra=al,
                           listener_extra=listener_extra, cluster_extra=self.proto.cluster)
        y = with_cache(y, extra) if filt is None else \
            y.replace("          http_filters:\n", "          http_filters:\n" + indent(filt, 10))
        run_sharp_config(procs, y, self.admin)
        self.lines = 0

    def req(self, p, **kw):
        r = self.proto.request(self.listen, p, **kw)
        self.lines += 1
        wait_for(lambda: (stat(self.admin, "http.ingress_http.downstream_rq_completed") or 0) >= self.lines, 5,
                 "the request's completion")
        return r

    def log_lines(self):
        return log_lines(self.log, self.lines)


def start(procs, upstream, **kw):
    return Proxy(procs, upstream, **kw)


def path(base, *hdrs):
    """base with ?hdr= response headers for the test upstream."""
    q = "&".join("hdr=" + urllib.parse.quote(h, safe=":") for h in hdrs)
    return base + ("&" if "?" in base else "?") + q if hdrs else base


class Counter:
    """Requests the test upstream served besides its own admin calls."""

    def __init__(self, upstream):
        self.u = upstream
        self.seen = 0
        self.base = self._raw()

    def _raw(self):
        n = upstream_admin(self.u, "/admin/stats")["requests"]
        self.seen += 1
        return n

    def __call__(self):
        return self._raw() - self.base - self.seen + 1

    def admin(self, p):
        """An admin call to the upstream, not counted."""
        self.seen += 1
        return upstream_admin(self.u, p)


H1 = PROTOS["h1"]


@protos("h1", "h2-both")
def test_cacheable_response_is_served_from_cache(procs, proto):
    up = proto.upstream(procs)
    px = start(procs, up, proto=proto)
    n = Counter(up)
    p = path("/hello", "cache-control:max-age=600", "etag:\"v1\"")
    st, h, body = px.req(p)
    assert st == 200 and body == b"hello from upstream\n"
    assert "age" not in h
    assert n() == 1
    for _ in range(3):
        st, h2, body2 = px.req(p)
        assert st == 200 and body2 == body
        assert 0 <= int(h2["age"]) <= 5
        assert h2["etag"] == "\"v1\"" and h2["cache-control"] == "max-age=600"
        assert h2["content-length"] == str(len(body))
    assert n() == 1
    assert stat(px.admin, EVENT + "hit") == 3
    assert stat(px.admin, EVENT + "miss") == 1
    # (each worker writes its own lines: the order is not the requests')
    lines = sorted(ln.split("?")[0] for ln in px.log_lines())
    assert lines == ["200 - via_upstream /hello"] + ["200 RFCF cache.response_from_cache_filter /hello"] * 3
    # another path is another entry
    st, _, _ = px.req(path("/other", "cache-control:max-age=600"))
    assert st == 200 and n() == 2


def test_age_grows_from_the_upstream_age(procs, upstream):
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/aged", "cache-control:max-age=600", "age:100")
    px.req(p)
    st, h, _ = px.req(p)
    assert st == 200 and int(h["age"]) in (100, 101)
    assert n() == 1


def test_head_is_served_from_a_cached_get_and_not_stored(procs, upstream):
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/h", "cache-control:max-age=600")
    # a HEAD response is not stored
    st, h, body = px.req(p, method="HEAD")
    assert st == 200 and body == b""
    st, h, body = px.req(p, method="HEAD")
    assert "age" not in h and n() == 2
    # a cached GET answers HEAD: the headers, no body
    px.req(p)
    assert n() == 3
    st, h, body = px.req(p, method="HEAD")
    assert st == 200 and body == b"" and "age" in h
    assert h["content-length"] == str(len(b"hello from upstream\n"))
    assert n() == 3


@pytest.mark.parametrize("cc", ["no-store", "private, max-age=600", "private", "public"])
def test_responses_that_must_not_be_stored(procs, upstream, cc):
    """no-store and private (a shared cache); public alone gives no freshness."""
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/ns", "cache-control:" + cc)
    for i in range(3):
        st, h, _ = px.req(p)
        assert st == 200 and "age" not in h
    assert n() == 3
    assert stat(px.admin, EVENT + "hit") == 0


def test_uncacheable_statuses_and_requests(procs, upstream):
    px = start(procs, upstream)
    n = Counter(upstream)
    # 500 is not a cacheable status
    p = path("/status/500", "cache-control:max-age=600")
    px.req(p)
    px.req(p)
    assert n() == 2
    # an authorization request neither reads nor fills the cache
    p = path("/auth", "cache-control:max-age=600")
    px.req(p, headers={"authorization": "Bearer x"})
    px.req(p, headers={"authorization": "Bearer x"})
    assert n() == 4
    st, h, _ = px.req(p)  # nothing was stored for it
    assert "age" not in h and n() == 5
    st, h, _ = px.req(p, headers={"authorization": "Bearer x"})  # stored now, but not for it
    assert "age" not in h and n() == 6
    # POST passes, a request with a body passes
    px.req(p, method="POST", body=b"x")
    assert n() == 7
    # a range request passes: neither served from the cache nor stored
    r = path("/r", "cache-control:max-age=600")
    px.req(r)
    _, h, _ = px.req(r, headers={"range": "bytes=0-3"})
    assert "age" not in h and n() == 9
    assert stat(px.admin, EVENT + "uncacheable") == 5


def test_vary_with_allowed_headers(procs, upstream):
    px = start(procs, upstream, extra="allowed_vary_headers:\n- exact: accept-language\n")
    n = Counter(upstream)
    p = path("/echo", "cache-control:max-age=600", "vary:accept-language")
    _, _, en = px.req(p, headers={"accept-language": "en"})
    _, _, fr = px.req(p, headers={"accept-language": "fr"})
    assert n() == 2
    assert ["accept-language", "en"] in [[k.lower(), v] for k, v in json.loads(en)["headers"]]
    for lang, body in (("en", en), ("fr", fr), ("en", en)):
        st, h, b = px.req(p, headers={"accept-language": lang})
        assert b == body and "age" in h
    assert n() == 2
    _, h, _ = px.req(p)  # no accept-language: a third variant
    assert "age" not in h and n() == 3
    # a vary header not allowed is never cached
    q = path("/echo", "cache-control:max-age=600", "vary:user-agent")
    px.req(q, headers={"user-agent": "a"})
    px.req(q, headers={"user-agent": "a"})
    assert n() == 5


@protos("h1", "h2-both")
def test_stale_entry_validated_by_304(procs, proto):
    upstream = proto.upstream(procs)
    px = start(procs, upstream, proto=proto)
    n = Counter(upstream)
    # stored already older than its max-age: every use validates it
    p = path("/v", "cache-control:max-age=60", "age:120", "etag:\"v1\"", "x-first:1")
    st, _, body = px.req(p)
    assert st == 200 and n() == 1
    n.admin("/admin/fault?status=304")
    try:
        st, h, b = px.req(p)
    finally:
        n.admin("/admin/fault")
    # the upstream was asked (with the validators) and said 304: the client
    # gets the cached response with the 304's headers (the test upstream
    # repeats the ?hdr= ones, so the 304 has an age: an upstream cache's,
    # which is kept)
    assert n() == 2
    assert st == 200 and b == body
    assert h["content-length"] == str(len(body)) and h["x-first"] == "1" and h["age"] == "120"
    assert stat(px.admin, EVENT + "validate") == 1
    # a 304 without age: the validated response has none (as fresh as the origin's)
    q = path("/v2", "cache-control:no-cache", "etag:\"v2\"")
    _, _, body2 = px.req(q)
    n.admin("/admin/fault?status=304")
    try:
        st, h, b = px.req(q)
    finally:
        n.admin("/admin/fault")
    assert st == 200 and b == body2 and "age" not in h and n() == 4
    # HEAD validates the same way and gets no body
    n.admin("/admin/fault?status=304")
    try:
        st, h, b = px.req(p, method="HEAD")
    finally:
        n.admin("/admin/fault")
    assert st == 200 and b == b"" and n() == 5


@protos("h1", "h2-both")
def test_validation_sends_validators_and_takes_a_new_response(procs, proto):
    up = proto.upstream(procs)
    px = start(procs, up, proto=proto)
    p = path("/echo", "cache-control:no-cache", "etag:\"e1\"", "last-modified:Sun, 06 Nov 1994 08:49:37 GMT")
    _, _, first = px.req(p)
    # no-cache responses are stored and validated on every use; the echo
    # upstream answers 200, so the new response replaces the entry
    st, h, second = px.req(p)
    seen = {k.lower(): v for k, v in json.loads(second)["headers"]}
    assert seen["if-none-match"] == "\"e1\""
    assert seen["if-modified-since"] == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert "if-none-match" not in {k.lower() for k, _ in json.loads(first)["headers"]}
    assert st == 200 and "age" not in h
    assert stat(px.admin, EVENT + "failed_validation") == 1
    assert [ln.split(" ")[1] for ln in px.log_lines()] == ["-", "-"]


def test_request_no_cache_and_ignore_request_cache_control(procs, upstream):
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/rc", "cache-control:max-age=600")
    px.req(p)
    assert n() == 1
    for hdr in ({"cache-control": "no-cache"}, {"pragma": "no-cache"}, {"cache-control": "min-fresh=1000"}):
        px.req(p, headers=hdr)
    assert n() == 4
    # request no-store: served from the cache, nothing stored
    q = path("/rs", "cache-control:max-age=600")
    px.req(q, headers={"cache-control": "no-store"})
    px.req(q)
    assert n() == 6
    _, h, _ = px.req(q, headers={"cache-control": "no-store"})
    assert "age" in h and n() == 6

    px = start(procs, upstream, extra="ignore_request_cache_control_header: true\n")
    m = Counter(upstream)
    px.req(path("/ig", "cache-control:max-age=600"))
    _, h, _ = px.req(path("/ig", "cache-control:max-age=600"), headers={"cache-control": "no-cache"})
    assert "age" in h and m() == 1


def test_key_creator_params(procs, upstream):
    px = start(procs, upstream, extra=(
        "key_creator_params:\n  exclude_host: true\n  query_parameters_excluded:\n  - name: utm\n"))
    n = Counter(upstream)
    p = path("/k?utm=a", "cache-control:max-age=600")
    px.req(p, headers={"host": "one.example"})
    _, h, _ = px.req(path("/k?utm=b", "cache-control:max-age=600"), headers={"host": "two.example"})
    assert "age" in h and n() == 1


def test_large_bodies_pass_through_uncached(procs, upstream):
    # max_body_bytes bounds what is stored
    px = start(procs, upstream, extra="max_body_bytes: 1000\n")
    n = Counter(upstream)
    p = path("/bytes/5000", "cache-control:max-age=600")
    for _ in range(2):
        st, h, b = px.req(p)
        assert st == 200 and len(b) == 5000 and "age" not in h
    assert n() == 2
    small = path("/bytes/500", "cache-control:max-age=600")
    px.req(small)
    _, h, b = px.req(small)
    assert "age" in h and len(b) == 500 and n() == 3
    # without it, the stream's buffer limit (per_connection_buffer_limit_bytes)
    px = start(procs, upstream, listener_extra="per_connection_buffer_limit_bytes: 65536\n")
    m = Counter(upstream)
    big = path("/bytes/300000?chunked=1", "cache-control:max-age=600")
    for _ in range(2):
        st, h, b = px.req(big)
        assert st == 200 and len(b) == 300000 and "age" not in h
        assert b[:3] == bytes([7, 38, 69])
    assert m() == 2
    chunked = path("/bytes/30000?chunked=1", "cache-control:max-age=600")
    px.req(chunked)
    _, h, b = px.req(chunked)
    assert "age" in h and len(b) == 30000 and h["content-length"] == "30000" and m() == 3


def test_disabled_filter_passes_everything(procs, upstream):
    f = f"- name: envoy.filters.http.cache\n  typed_config:\n    \"@type\": {CACHE}\n    disabled: true\n"
    px = start(procs, upstream, filt=f)
    n = Counter(upstream)
    p = path("/d", "cache-control:max-age=600")
    px.req(p)
    _, h, _ = px.req(p)
    assert "age" not in h and n() == 2


@pytest.mark.parametrize("storage,extra,err", [
    (False, "", "at least one of typed_config or disabled must be set"),
    (False, "typed_config:\n  \"@type\": type.googleapis.com/google.protobuf.Empty\n",
     "Didn't find a registered implementation for type: 'google.protobuf.Empty'"),
    (True, "thundering_herd_handler:\n  block_until_completion: { parallel_requests: 2 }\n",
     "block_until_completion"),
    (True, "allowed_vary_headers:\n- prefix: \"\"\n", "allowed_vary_headers[0]"),
    (True, "key_creator_params:\n  query_parameters_included:\n  - string_match: { exact: a }\n",
     "query_parameters_included[0].name"),
])
def test_bad_configs_are_refused(storage, extra, err):
    y = bootstrap_yaml(free_port(), free_port(), {"backend": [free_port()]})
    f = f"- name: envoy.filters.http.cache\n  typed_config:\n    \"@type\": {CACHE}\n" + indent(extra, 4)
    if storage:
        f += f"    typed_config:\n      \"@type\": {SIMPLE}\n"
    rc, out = validate_config(y.replace("          http_filters:\n", "          http_filters:\n" + indent(f, 10)))
    assert rc != 0 and err in out, out


def test_thundering_herd_handler_none_is_accepted(procs, upstream):
    """none is SHARP's behaviour: accepted, and the filter caches as without it."""
    f = (f"- name: envoy.filters.http.cache\n  typed_config:\n    \"@type\": {CACHE}\n"
         f"    thundering_herd_handler:\n      none: {{}}\n"
         f"    typed_config:\n      \"@type\": {SIMPLE}\n")
    px = start(procs, upstream, filt=f)
    n = Counter(upstream)
    p = path("/herd", "cache-control:max-age=600")
    px.req(p)
    _, h, _ = px.req(p)
    assert "age" in h and n() == 1


@pytest.mark.parametrize("name", ["examples__cache__envoy.yaml",
                                  "envoy__docs__root__configuration__http__http_filters___include__http-cache-"
                                  "configuration.yaml"])
def test_corpus_configs_validate(name):
    f = os.path.join(CORPUS, name)
    if not os.path.exists(f):
        pytest.skip("corpus not present")
    r = subprocess.run([SHARP, "--mode", "validate", "-c", f], capture_output=True, text=True, timeout=30,
                       cwd=CORPUS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_response_cut_short_is_not_stored(procs, upstream):
    """An upstream that closes mid-body: the copy is dropped (upstream_reset)
    and the next request goes upstream again."""
    import http.client
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/close-mid-body", "cache-control:max-age=600")
    for i in range(2):
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            px.proto.request(px.listen, p)
        wait_for(lambda: stat(px.admin, EVENT + "upstream_reset") == i + 1, 5, "the reset insert counted")
    assert n() == 2
    assert stat(px.admin, EVENT + "hit") == 0


def test_hits_on_one_keep_alive_connection(procs, upstream):
    """Answers from the cache keep the HTTP/1.1 connection open, and a
    request after them on it still reaches the upstream."""
    import http.client
    px = start(procs, upstream)
    n = Counter(upstream)
    p = path("/ka", "cache-control:max-age=600")
    c = http.client.HTTPConnection("127.0.0.1", px.listen, timeout=10)
    try:
        got = []
        for q in (p, p, p, "/plain"):
            c.request("GET", q)
            r = c.getresponse()
            got.append((r.status, r.getheader("age") is not None, r.read()))
    finally:
        c.close()
    assert [g[:2] for g in got] == [(200, False), (200, True), (200, True), (200, False)]
    assert got[1][2] == got[0][2] and n() == 2
