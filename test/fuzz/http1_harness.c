/* http1_harness.c: see http1_harness.h. */
#include "http1_harness.h"

#include "config/types.h"
#include "http/filter.h"
#include "listen_socket.h"
#include "log.h"
#include "net.h"
#include "runtime.h"
#include "upstream/cluster.h"
#include "upstream/host.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The fixed bootstrap: every HTTP/1 stage a request can reach. One listener
 * and one cluster, both on abstract Unix sockets named after the process
 * (parallel fuzzing jobs do not collide, nothing is left on disk). Routes:
 * a virtual host answered locally, direct responses, a redirect, regex and
 * prefix rewrites, header matching, a mirror (the shadow path), WebSocket
 * upgrades, a hash policy, an HTTP/2 cluster (up2, "/h2/", a retry on
 * resets and refused streams); the health check filter before the router; path
 * normalization; two access logs (default text and JSON) to /dev/null.
 * Timeouts are left long so that no timer fires while an input runs: the
 * harness settles and tears down first. */
static const char bootstrap_fmt[] =
    "static_resources:\n"
    "  listeners:\n"
    "  - name: fuzz\n"
    "    address: { pipe: { path: \"@sharp-fuzz-%d-down\" } }\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    filter_chains:\n"
    "    - filters:\n"
    "      - name: envoy.filters.network.http_connection_manager\n"
    "        typed_config:\n"
    "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n"
    "          stat_prefix: fuzz\n"
    "          generate_request_id: true\n"
    "          use_remote_address: true\n"
    "          normalize_path: true\n"
    "          merge_slashes: true\n"
    "          path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT\n"
    "          max_request_headers_kb: 16\n"
    "          common_http_protocol_options:\n"
    "            headers_with_underscores_action: DROP_HEADER\n"
    "          upgrade_configs: [{ upgrade_type: websocket }]\n"
    "          access_log:\n"
    "          - name: envoy.access_loggers.file\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
    "              path: /dev/null\n"
    "          - name: envoy.access_loggers.file\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
    "              path: /dev/null\n"
    "              log_format:\n"
    "                json_format:\n"
    "                  method: \"%%REQ(:METHOD)%%\"\n"
    "                  path: \"%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%%\"\n"
    "                  ua: \"%%REQ(USER-AGENT)%%\"\n"
    "                  code: \"%%RESPONSE_CODE%%\"\n"
    "                  flags: \"%%RESPONSE_FLAGS%%\"\n"
    "                  details: \"%%RESPONSE_CODE_DETAILS%%\"\n"
    "                  upstream: \"%%UPSTREAM_HOST%%\"\n"
    "                  ct: \"%%RESP(CONTENT-TYPE)%%\"\n"
    "                  bytes: \"%%BYTES_RECEIVED%%/%%BYTES_SENT%%\"\n"
    "          route_config:\n"
    "            name: fuzz\n"
    "            request_headers_to_add:\n"
    "            - header: { key: x-fuzz-route, value: \"%%REQ(:AUTHORITY)%%\" }\n"
    "            response_headers_to_add:\n"
    "            - header: { key: x-fuzz-served, value: \"%%RESPONSE_CODE%%\" }\n"
    "            virtual_hosts:\n"
    "            - name: local\n"
    "              domains: [\"local\", \"local:*\"]\n"
    "              routes:\n"
    "              - match: { prefix: \"/\" }\n"
    "                direct_response: { status: 200, body: { inline_string: \"local\\n\" } }\n"
    "            - name: any\n"
    "              domains: [\"*\"]\n"
    "              routes:\n"
    "              - match: { path: \"/direct\" }\n"
    "                direct_response: { status: 200, body: { inline_string: \"direct\\n\" } }\n"
    "              - match: { prefix: \"/redirect/\" }\n"
    "                redirect: { prefix_rewrite: \"/moved/\", response_code: PERMANENT_REDIRECT }\n"
    "              - match: { safe_regex: { regex: \"/re/[a-z]+/.*\" } }\n"
    "                route:\n"
    "                  cluster: up\n"
    "                  regex_rewrite: { pattern: { regex: \"^/re/([a-z]+)/\" }, substitution: \"/\\\\1-\" }\n"
    "              - match:\n"
    "                  prefix: \"/h/\"\n"
    "                  headers: [{ name: x-fuzz, string_match: { exact: \"1\" } }]\n"
    "                route: { cluster: up, prefix_rewrite: \"/\", host_rewrite_literal: fuzz.upstream }\n"
    "              - match: { prefix: \"/mirror/\" }\n"
    "                route:\n"
    "                  cluster: up\n"
    "                  request_mirror_policies: [{ cluster: up }]\n"
    "              - match: { prefix: \"/h2/\" }\n"
    "                route: { cluster: up2, retry_policy: { retry_on: \"reset,refused-stream\", num_retries: 1 } }\n"
    "              - match: { prefix: \"/ws\" }\n"
    "                route: { cluster: up, upgrade_configs: [{ upgrade_type: websocket }] }\n"
    "              - match: { prefix: \"/\" }\n"
    "                route:\n"
    "                  cluster: up\n"
    "                  hash_policy: [{ header: { header_name: x-user } }]\n"
    "          http_filters:\n"
    "          - name: envoy.filters.http.health_check\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n"
    "              pass_through_mode: false\n"
    "              headers: [{ name: \":path\", string_match: { exact: \"/healthz\" } }]\n"
    "          - name: envoy.filters.http.router\n"
    "            typed_config:\n"
    "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n"
    "  clusters:\n"
    "  - name: up\n"
    "    type: STATIC\n"
    "    connect_timeout: 5s\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    load_assignment:\n"
    "      cluster_name: up\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: { address: { pipe: { path: \"@sharp-fuzz-%d-up\" } } }\n"
    "  - name: up2\n"
    "    type: STATIC\n"
    "    connect_timeout: 5s\n"
    "    per_connection_buffer_limit_bytes: 32768\n"
    "    typed_extension_protocol_options:\n"
    "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n"
    "        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
    "        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 4 } }\n"
    "    load_assignment:\n"
    "      cluster_name: up2\n"
    "      endpoints:\n"
    "      - lb_endpoints:\n"
    "        - endpoint: { address: { pipe: { path: \"@sharp-fuzz-%d-up2\" } } }\n";

static sharp_server_t env_srv;
static char env_bootstrap[sizeof bootstrap_fmt + 64];
static bool env_ready;
static bool env_trace; /* SHARP_FUZZ_TRACE=1: print what each side receives (reproducing a finding) */

/* Turn bounds: a phase that does not settle within them ends anyway (the
 * next phase or the teardown takes over), so a slow input costs time, not
 * a hang. */
#define SETTLE_QUIET_TURNS 3
#define SETTLE_MAX_TURNS 4000
#define SEND_MAX_TURNS 2000
#define STOP_MAX_TURNS 10000

static void die(const char *what)
{
    fprintf(stderr, "fuzz harness: %s\n", what);
    abort();
}

/* The server state the fuzz targets share: built once. Its memory stays
 * reachable through env_srv until the process exits (not a leak). */
void fz_env_init(void)
{
    if (env_ready) return;
    signal(SIGPIPE, SIG_IGN);
    sharp_log_set_all(SHARP_LOG_OFF);
    sharp_config_types_register();
    int pid = (int)getpid();
    snprintf(env_bootstrap, sizeof env_bootstrap, bootstrap_fmt, pid, pid, pid);
    sharp_options_t o = {0};
    o.config_yaml = env_bootstrap;
    o.concurrency = 1;
    o.log_level = SHARP_LOG_OFF;
    o.drain_time_s = 600;
    o.parent_shutdown_time_s = 900;
    if (sharp_server_init(&env_srv, &o) < 0) die("the fixed bootstrap did not load");
    const char *t = getenv("SHARP_FUZZ_TRACE");
    env_trace = t && *t && strcmp(t, "0") != 0;
    env_ready = true;
}

/* Bytes as a C string literal on stderr (printable ASCII as is). */
static void put_escaped(const char *p, size_t n)
{
    fputc('"', stderr);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') fputc(c, stderr);
        else if (c == '\n') fputs("\\n", stderr);
        else if (c == '\r') fputs("\\r", stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fputs("\"\n", stderr);
}

static void trace(const char *who, const char *p, size_t n)
{
    if (!env_trace) return;
    fprintf(stderr, "[%s %zu] ", who, n);
    put_escaped(p, n);
}

static int nonblocking_unix_socket(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket()");
    return fd;
}

void fz_start(fz_run_t *r)
{
    fz_env_init();
    sharp_snapshot_t *snap = env_srv.snap;
    char err[512];
    memset(r->up, 0, sizeof r->up);
    for (int i = 0; i < FZ_MAX_UPSTREAM; i++) r->up[i].fd = -1;
    r->nup = 0;
    r->client_eof = false;
    r->client_received = r->upstream_received = 0;

    /* the fake upstreams' listening sockets: each cluster's one endpoint */
    static const char *const clusters[FZ_CLUSTERS] = {"up", "up2"};
    for (int c = 0; c < FZ_CLUSTERS; c++) {
        sharp_cluster_t *cl = sharp_snapshot_cluster(snap, clusters[c]);
        if (!cl || !cl->nhosts) die("a cluster of the bootstrap is missing");
        sharp_host_t *h = cl->hosts[0];
        r->up_listen_fd[c] = sharp_listen_socket((struct sockaddr *)&h->addr, h->addrlen, 0, 0, h->address, err, sizeof err);
        if (r->up_listen_fd[c] < 0) die(err);
    }

    /* the worker, as sharp_server_run sets one up, minus the thread */
    sharp_worker_t *w = &r->w;
    memset(w, 0, sizeof *w);
    w->index = 0;
    w->server = &env_srv;
    w->stats = sharp_stats_shard(env_srv.stats, 1);
    w->snap = sharp_snapshot_ref(snap);
    w->runtime = sharp_runtime_snapshot_ref(env_srv.runtime->current);
    /* the listener's socket for this input (the worker takes and closes it) */
    sharp_listener_config_t *l = snap->listeners[0];
    l->sock = sharp_lsock_open(&l->addr, l->addrlen, 0, 0, false, l->address, 1, err, sizeof err);
    if (!l->sock) die(err);
    if (sharp_worker_init(w) != 0) die("sharp_worker_init failed");
    sharp_runtime_tls = w->runtime;

    /* the downstream client: connected at once (Unix), accepted by the
     * worker's listener on its first turn */
    r->client_fd = nonblocking_unix_socket();
    if (connect(r->client_fd, (struct sockaddr *)&l->addr, l->addrlen) < 0) die("connect to the listener");
}

static bool pump_client(fz_run_t *r)
{
    if (r->client_fd < 0 || r->client_eof) return false;
    bool progress = false;
    char buf[16384];
    for (;;) {
        ssize_t n = read(r->client_fd, buf, sizeof buf);
        if (n > 0) {
            progress = true;
            r->client_received += (size_t)n;
            trace("client <-", buf, (size_t)n);
            if (r->on_client_data) r->on_client_data(r, buf, (size_t)n);
            continue;
        }
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            r->client_eof = true; /* the proxy closed (or reset) the connection */
            progress = true;
        }
        break;
    }
    return progress;
}

static void upstream_shut(fz_run_t *r, int idx)
{
    fz_upstream_t *u = &r->up[idx];
    if (u->fd >= 0) close(u->fd);
    u->fd = -1;
    free(u->out);
    u->out = NULL;
    u->out_len = 0;
}

/* Sends what the socket takes of the queued bytes; closes the connection
 * when that was asked for and nothing is left. */
static bool flush_upstream(fz_run_t *r, int idx)
{
    fz_upstream_t *u = &r->up[idx];
    bool progress = false;
    while (u->fd >= 0 && u->out_len > 0) {
        ssize_t k = send(u->fd, u->out, u->out_len, MSG_NOSIGNAL);
        if (k > 0) {
            trace("upstream ->", u->out, (size_t)k);
            memmove(u->out, u->out + k, u->out_len - (size_t)k);
            u->out_len -= (size_t)k;
            progress = true;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) break;
        u->out_len = 0; /* the proxy is gone: what it did not take is dropped */
    }
    if (u->fd >= 0 && u->close_after && u->out_len == 0) {
        upstream_shut(r, idx);
        progress = true;
    }
    return progress;
}

static bool pump_upstream(fz_run_t *r)
{
    bool progress = false;
    for (int c = 0; c < FZ_CLUSTERS; c++)
        for (;;) {
            int fd = accept4(r->up_listen_fd[c], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) break;
            progress = true;
            if (r->nup == FZ_MAX_UPSTREAM) { /* more than a target handles: refused */
                close(fd);
                continue;
            }
            int idx = r->nup++;
            r->up[idx].fd = fd;
            r->up[idx].cluster = c;
            if (r->on_upstream_accept) r->on_upstream_accept(r, idx);
        }
    char buf[16384];
    for (int i = 0; i < r->nup; i++) {
        while (r->up[i].fd >= 0 && !r->up[i].eof) {
            ssize_t n = read(r->up[i].fd, buf, sizeof buf);
            if (n > 0) {
                progress = true;
                r->upstream_received += (size_t)n;
                trace("upstream <-", buf, (size_t)n);
                if (r->on_upstream_data) r->on_upstream_data(r, i, buf, (size_t)n);
                continue;
            }
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                r->up[i].eof = true;
                progress = true;
                if (r->on_upstream_data) r->on_upstream_data(r, i, NULL, 0);
            }
            break;
        }
        progress |= flush_upstream(r, i);
    }
    return progress;
}

/* One turn: the worker's loop without blocking, then the harness's
 * sockets. Returns whether anything moved or is due. */
static bool turn(fz_run_t *r)
{
    uv_run(&r->w.loop, UV_RUN_NOWAIT);
    bool progress = pump_upstream(r);
    progress |= pump_client(r);
    if (uv_backend_timeout(&r->w.loop) == 0) progress = true; /* due timers, pending callbacks */
    struct pollfd pfd = {.fd = uv_backend_fd(&r->w.loop), .events = POLLIN};
    if (poll(&pfd, 1, 0) > 0) progress = true; /* a socket of the worker is ready */
    return progress;
}

void fz_settle(fz_run_t *r)
{
    int quiet = 0;
    for (int i = 0; i < SETTLE_MAX_TURNS && quiet < SETTLE_QUIET_TURNS; i++) quiet = turn(r) ? 0 : quiet + 1;
}

static bool send_all(fz_run_t *r, int fd, const char *p, size_t n)
{
    int turns = 0;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            trace("client ->", p, (size_t)k);
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN && turns++ < SEND_MAX_TURNS) {
            turn(r); /* the peer reads while we wait for room */
            continue;
        }
        return false;
    }
    return true;
}

void fz_client_send(fz_run_t *r, const char *p, size_t n)
{
    if (r->client_fd >= 0) send_all(r, r->client_fd, p, n);
}

void fz_client_shutdown(fz_run_t *r)
{
    if (r->client_fd >= 0) shutdown(r->client_fd, SHUT_WR);
}

void fz_upstream_send(fz_run_t *r, int idx, const char *p, size_t n)
{
    if (idx < 0 || idx >= r->nup || r->up[idx].fd < 0 || r->up[idx].close_after || n == 0) return;
    fz_upstream_t *u = &r->up[idx];
    u->out = realloc(u->out, u->out_len + n);
    if (!u->out) die("out of memory");
    memcpy(u->out + u->out_len, p, n);
    u->out_len += n;
    flush_upstream(r, idx);
}

void fz_upstream_close(fz_run_t *r, int idx)
{
    if (idx < 0 || idx >= r->nup || r->up[idx].fd < 0) return;
    r->up[idx].close_after = true;
    flush_upstream(r, idx);
}

void fz_upstream_answer(fz_run_t *r, int cluster, const char *p, size_t n, uint8_t seed, bool close)
{
    size_t ends[9];
    int nchunks = fz_split(seed, n, ends);
    size_t at = 0;
    for (int i = 0; i < nchunks; i++) {
        for (int k = 0; k < r->nup; k++)
            if (cluster < 0 || r->up[k].cluster == cluster) fz_upstream_send(r, k, p + at, ends[i] - at);
        at = ends[i];
        fz_settle(r);
    }
    if (close) {
        for (int k = 0; k < r->nup; k++) fz_upstream_close(r, k);
        fz_settle(r);
    }
}

void fz_finish(fz_run_t *r)
{
    /* the client goes away, then the upstream: each side's close path runs */
    if (r->client_fd >= 0) {
        close(r->client_fd);
        r->client_fd = -1;
    }
    fz_settle(r);
    for (int i = 0; i < r->nup; i++) upstream_shut(r, i);
    fz_settle(r);
    /* the worker's own shutdown (on_wakeup: close listeners and
     * connections, abort mirrors, destroy pools), then its loop to the end */
    sharp_worker_stop(&r->w);
    int turns = 0;
    while (uv_run(&r->w.loop, UV_RUN_NOWAIT) != 0)
        if (++turns > STOP_MAX_TURNS) die("the worker's loop still has active handles after its stop");
    for (int c = 0; c < FZ_CLUSTERS; c++) close(r->up_listen_fd[c]);
    sharp_worker_release(&r->w);
    sharp_lsock_unref(r->w.snap->listeners[0]->sock);
    r->w.snap->listeners[0]->sock = NULL;
    sharp_snapshot_unref(r->w.snap);
    sharp_runtime_tls = NULL;
}

int fz_split(uint8_t seed, size_t n, size_t ends[9])
{
    int cuts = seed & 7;
    size_t pos[7];
    uint64_t x = 0x9E3779B97F4A7C15ull ^ ((uint64_t)seed << 32) ^ n;
    int k = 0;
    for (int i = 0; i < cuts && n > 1; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        pos[k++] = 1 + (size_t)((x * 0x2545F4914F6CDD1Dull) % (n - 1)); /* in [1, n-1] */
    }
    /* sort the cut points and drop duplicates */
    for (int i = 1; i < k; i++)
        for (int j = i; j > 0 && pos[j - 1] > pos[j]; j--) {
            size_t t = pos[j];
            pos[j] = pos[j - 1];
            pos[j - 1] = t;
        }
    int m = 0;
    for (int i = 0; i < k; i++)
        if (m == 0 || ends[m - 1] != pos[i]) ends[m++] = pos[i];
    ends[m++] = n;
    return m;
}

void fz_abort_with_chunk(const char *data, size_t n)
{
    fprintf(stderr, "chunk: ");
    put_escaped(data, n < 4096 ? n : 4096);
    abort();
}

/* ---- the response oracle (http1_harness.h) ---- */

static int resp_on_headers_complete(llhttp_t *p)
{
    fz_responses_t *rr = p->data;
    unsigned status = llhttp_get_status_code(p);
    if (status == 101) {
        /* what follows a 101 is the tunnel's, whether or not the response
         * names the protocol (llhttp switches only when it does) */
        rr->done = true;
        return HPE_PAUSED;
    }
    rr->informational = status >= 100 && status < 200;
    /* the first final response answers the first request */
    if (!rr->informational && rr->final_responses == 0 && rr->first_is_head) return 1; /* no body */
    return 0;
}

static int resp_on_message_complete(llhttp_t *p)
{
    fz_responses_t *rr = p->data;
    if (rr->informational) return 0;
    rr->final_responses++;
    if (rr->final_responses > rr->requests_sent) {
        fprintf(stderr, "%s: the client got %u final responses to %u requests\n", rr->target_name,
                rr->final_responses, rr->requests_sent);
        abort();
    }
    return 0;
}

static void resp_client_data(fz_run_t *r, const char *data, size_t n)
{
    fz_responses_t *rr = r->target;
    if (rr->done) return;
    llhttp_errno_t e = llhttp_execute(&rr->parser, data, n);
    if (e == HPE_OK) return;
    if (e == HPE_PAUSED_UPGRADE || rr->done) { /* a 101: the tunnel's bytes follow */
        rr->done = true;
        return;
    }
    fprintf(stderr, "%s: the proxy sent the client bytes that are not HTTP/1.1 responses: %s (%s)\n", rr->target_name,
            llhttp_errno_name(e), llhttp_get_error_reason(&rr->parser));
    fz_abort_with_chunk(data, n);
}

void fz_responses_init(fz_run_t *r, fz_responses_t *rr, const char *target_name, bool first_is_head)
{
    memset(rr, 0, sizeof *rr);
    llhttp_settings_init(&rr->settings);
    rr->settings.on_headers_complete = resp_on_headers_complete;
    rr->settings.on_message_complete = resp_on_message_complete;
    llhttp_init(&rr->parser, HTTP_RESPONSE, &rr->settings);
    rr->parser.data = rr;
    rr->target_name = target_name;
    rr->first_is_head = first_is_head;
    r->target = rr;
    r->on_client_data = resp_client_data;
}
