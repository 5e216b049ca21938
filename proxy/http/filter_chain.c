/* filter_chain.c: the protocol-independent half of the connection manager:
 * Envoy's request and response header mutations, route resolution, the
 * decode and encode iteration over the filter chain with stop/continue and
 * buffering, local replies, and the filter registry.
 *
 * Iteration contract (see filter.h): no filter sees request data before all
 * filters before it have seen the request headers; while the chain is
 * stopped at a filter (on headers or on data), request data still reaches
 * that filter and accumulates in dec_buf behind it (the terminal filter
 * consumes it instead), and continue_decoding hands the held data to the
 * filters after it. On the encode side a stop on headers holds the response data the
 * same way: it reaches the filters up to the stopped one and waits in
 * enc_buf behind it, bounded by the stream's buffer limit (above it the
 * filters after it pause, or, when the holding filter returned STOP for
 * the data, the response becomes a 500). A filter that transforms bodies
 * (the compressor) answers SHARP_FILTER_CONSUMED and passes its own data
 * on from the next filter; encode_data's STOP is otherwise advisory.
 *
 * Flow control counts its sources, as Envoy's readDisable and high
 * watermark counts do: the downstream is read again only when no source
 * holds its pause (read_pause), and a filter producing response data
 * resumes only when no source holds its pause (enc_pause). */
#include "small.h"
#include "http/conn_internal.h"
#include "http/filter.h"
#include "http/grpc.h"
#include "http/hcm_internal.h"
#include "http/path_util.h"
#include "http/stream.h"
#include "http/tracing.h"
#include "http/local_reply.h"
#include "log.h"
#include "net.h"
#include "overload.h"
#include "worker.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------ */
/* registry                                                             */

#define MAX_FILTER_FACTORIES 64
static const sharp_filter_factory_t *factories[MAX_FILTER_FACTORIES];
static unsigned nfactories;

void sharp_filter_register(const sharp_filter_factory_t *f)
{
    for (unsigned i = 0; i < nfactories; i++)
        if (factories[i] == f) return;
    if (nfactories < MAX_FILTER_FACTORIES) factories[nfactories++] = f;
}

const sharp_filter_factory_t *sharp_filter_find_by_name(const char *name)
{
    for (unsigned i = 0; i < nfactories; i++)
        if (strcmp(factories[i]->name, name) == 0) return factories[i];
    return NULL;
}

const sharp_filter_factory_t *sharp_filter_find_by_type_url(const char *type_url, size_t len)
{
    /* Any accepts any prefix before the last '/'. */
    const char *slash = memrchr(type_url, '/', len);
    const char *t = slash ? slash + 1 : type_url;
    size_t tl = len - (size_t)(t - type_url);
    for (unsigned i = 0; i < nfactories; i++) {
        const char *u = strrchr(factories[i]->type_url, '/');
        u = u ? u + 1 : factories[i]->type_url;
        if (strlen(u) == tl && memcmp(u, t, tl) == 0) return factories[i];
    }
    return NULL;
}

const sharp_filter_factory_t *sharp_filter_find_for_route_type(const char *type_url, size_t len, bool *is_route)
{
    const char *slash = memrchr(type_url, '/', len);
    const char *t = slash ? slash + 1 : type_url;
    size_t tl = len - (size_t)(t - type_url);
    for (unsigned i = 0; i < nfactories; i++) {
        const char *u = factories[i]->route_type_url;
        if (!u) continue;
        const char *b = strrchr(u, '/');
        b = b ? b + 1 : u;
        if (strlen(b) == tl && memcmp(b, t, tl) == 0) {
            *is_route = true;
            return factories[i];
        }
    }
    *is_route = false;
    return sharp_filter_find_by_type_url(type_url, len);
}

/* ------------------------------------------------------------------ */
/* accessors                                                            */

sharp_stream_info_t *sharp_stream_info(sharp_stream_t *s)
{
    return &s->info;
}
const struct sharp_route *sharp_stream_route(sharp_stream_t *s)
{
    return s->route;
}
const char *sharp_stream_route_cluster(sharp_stream_t *s)
{
    return s->route && s->route->action == SHARP_ROUTE_ACTION_ROUTE && s->route_cluster_picked ? s->route_cluster
                                                                                               : NULL;
}
sharp_headers_t *sharp_stream_request_headers(sharp_stream_t *s)
{
    return &s->req;
}
bool sharp_stream_request_complete(sharp_stream_t *s)
{
    return s->request_complete;
}
bool sharp_stream_is_head(sharp_stream_t *s)
{
    return s->is_head;
}
const struct sharp_hcm_config *sharp_stream_hcm(sharp_stream_t *s)
{
    return s->hcm;
}
const void *sharp_stream_route_config(sharp_filter_t *f)
{
    sharp_stream_t *s = f->stream;
    if (!s->route) return NULL;
    return sharp_route_filter_config(s->routes, s->vhost, s->route, s->route_wc, f->name, f->factory);
}
const struct sockaddr *sharp_stream_downstream_peer(sharp_stream_t *s)
{
    return s->conn && s->conn->remote_ss.ss_family ? (const struct sockaddr *)&s->conn->remote_ss : NULL;
}
const struct sockaddr *sharp_stream_downstream_direct_peer(sharp_stream_t *s)
{
    if (!s->conn) return NULL;
    if (s->conn->direct_remote_ss.ss_family) return (const struct sockaddr *)&s->conn->direct_remote_ss;
    return sharp_stream_downstream_peer(s);
}
const char *sharp_stream_downstream_peer_str(sharp_stream_t *s)
{
    return s->conn ? s->conn->remote : "";
}
const struct sockaddr *sharp_stream_downstream_local(sharp_stream_t *s)
{
    return s->conn && s->conn->have_local ? (const struct sockaddr *)&s->conn->local_ss : NULL;
}
uint32_t sharp_stream_route_configs(sharp_filter_t *f, const void **out, uint32_t cap)
{
    sharp_stream_t *s = f->stream;
    if (!s->route) return 0;
    return sharp_route_filter_configs(s->routes, s->vhost, s->route, s->route_wc, f->name, f->factory, out, cap);
}
uint32_t sharp_stream_nfilters(sharp_stream_t *s)
{
    return s->nfilters;
}
sharp_filter_t *sharp_stream_filter(sharp_stream_t *s, uint32_t i)
{
    return i < s->nfilters ? &s->filters[i] : NULL;
}
const sharp_vhost_t *sharp_stream_vhost(sharp_stream_t *s)
{
    return s->vhost;
}
sharp_snapshot_t *sharp_stream_snapshot(sharp_stream_t *s)
{
    return s->snap;
}

/* ------------------------------------------------------------------ */
/* header mutations                                                     */

/* Envoy's Network::Utility::isInternalAddress: RFC 1918, 127.0.0.1, fd00::/8
 * and ::1. */
static bool is_rfc1918_or_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) || (a >> 16) == (192u << 8 | 168) ||
               a == INADDR_LOOPBACK;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || a->s6_addr[0] == 0xfd;
    }
    return false;
}

/* internal_address_config: without it no address is internal (Envoy's
 * default since 1.33); with it, a Unix socket peer is internal when
 * unix_sockets is set, an IP one when in cidr_ranges if given, else when
 * RFC 1918 or loopback. */
static bool is_internal_address(const sharp_hcm_config_t *hcm, const struct sockaddr *sa)
{
    if (!hcm->has_internal_address_config) return false;
    if (sa->sa_family == AF_UNIX) return hcm->internal_unix_sockets;
    if (hcm->ninternal_cidrs) {
        for (uint32_t i = 0; i < hcm->ninternal_cidrs; i++)
            if (sharp_cidr_contains(&hcm->internal_cidrs[i], sa)) return true;
        return false;
    }
    return is_rfc1918_or_loopback(sa);
}

static size_t sockaddr_size(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
           : sa->sa_family == AF_UNIX ? sizeof(struct sockaddr_un)
                                      : sizeof(struct sockaddr_in);
}

static void ip_only(const struct sockaddr *sa, char *out, size_t cap)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
}

/* The 16 hex digits of w, most significant first. */
static void hex16(uint64_t w, char out[16])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = hex[w & 0xf];
        w >>= 4;
    }
}

/* A version-4 UUID from the worker's PRNG, as x-request-id. */
static void make_uuid(sharp_worker_t *w, char out[37])
{
    uint64_t a = sharp_worker_random(w), b = sharp_worker_random(w);
    a = (a & 0xffffffffffff0fffull) | 0x0000000000004000ull; /* version 4 */
    b = (b & 0x3fffffffffffffffull) | 0x8000000000000000ull; /* RFC 4122 variant */
    char x[32];
    hex16(a, x);
    hex16(b, x + 16);
    /* 8-4-4-4-12 */
    memcpy(out, x, 8);
    out[8] = '-';
    memcpy(out + 9, x + 8, 4);
    out[13] = '-';
    memcpy(out + 14, x + 12, 4);
    out[18] = '-';
    memcpy(out + 19, x + 16, 4);
    out[23] = '-';
    memcpy(out + 24, x + 20, 12);
    out[36] = '\0';
}

/* The request headers Envoy removes from every request that is not
 * internal (ConnectionManagerUtility::cleanInternalHeaders)... */
static const char *const envoy_internal_headers[] = {
    "x-envoy-retriable-status-codes", "x-envoy-retriable-header-names", "x-envoy-retry-on",
    "x-envoy-retry-grpc-on", "x-envoy-max-retries", "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response", "x-envoy-expected-rq-timeout-ms", "x-envoy-force-trace",
    "x-envoy-ip-tags", "x-envoy-original-url", "x-envoy-hedge-on-per-try-timeout",
};
/* ... and those it removes from edge requests only. */
static const char *const envoy_edge_headers[] = {
    "x-envoy-decorator-operation", "x-envoy-downstream-service-cluster", "x-envoy-downstream-service-node",
};

/* The x-envoy-* headers an untrusted request may not set: x-envoy-internal
 * and envoy_internal_headers, plus envoy_edge_headers at the edge. One pass
 * over the request's names; only those starting "x-envoy-" are looked up. */
static bool is_untrusted_envoy_header(sharp_str_t n, void *edge)
{
    if (n.len < 9 || memcmp(n.p, "x-envoy-", 8) != 0) return false;
    if (sharp_str_eq(n, "x-envoy-internal", 16)) return true;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(envoy_internal_headers); i++)
        if (sharp_str_eq(n, envoy_internal_headers[i], strlen(envoy_internal_headers[i]))) return true;
    if (*(const bool *)edge)
        for (size_t i = 0; i < SHARP_ARRAY_SIZE(envoy_edge_headers); i++)
            if (sharp_str_eq(n, envoy_edge_headers[i], strlen(envoy_edge_headers[i]))) return true;
    return false;
}

static bool is_connection_specific(sharp_str_t n, void *arg)
{
    (void)arg;
    return sharp_header_is_connection_specific(n);
}

/* Removes hop-by-hop headers, including those named by Connection. An
 * upgrade request keeps Connection and Upgrade: Envoy forwards them
 * verbatim to the upstream (mutateRequestHeaders). */
static void remove_hop_by_hop(sharp_headers_t *h, bool upgrade)
{
    sharp_str_t conn;
    if (upgrade) {
        sharp_headers_remove_cstr(h, "keep-alive");
        sharp_headers_remove_cstr(h, "proxy-connection");
        sharp_headers_remove_cstr(h, "transfer-encoding");
        return;
    }
    if (sharp_headers_get_cstr(h, "connection", &conn)) {
        char tok[64];
        size_t i = 0;
        while (i < conn.len) {
            while (i < conn.len && (conn.p[i] == ' ' || conn.p[i] == ',')) i++;
            size_t st = i;
            while (i < conn.len && conn.p[i] != ',' && conn.p[i] != ' ') i++;
            size_t l = i - st;
            if (l && l < sizeof tok && !(l == 2 && strncasecmp(conn.p + st, "te", 2) == 0)) {
                memcpy(tok, conn.p + st, l);
                tok[l] = '\0';
                if (tok[0] != ':') {
                    sharp_headers_remove(h, tok, l);
                    if (!sharp_headers_get_cstr(h, "connection", &conn)) break;
                }
            }
        }
    }
    sharp_headers_remove_matching(h, is_connection_specific, NULL);
    sharp_str_t te;
    if (sharp_headers_get_cstr(h, "te", &te)) {
        if (sharp_header_value_has_token(te, "trailers")) sharp_headers_set_cstr(h, "te", "trailers");
        else sharp_headers_remove_cstr(h, "te");
    }
}

/* Envoy's Utility::getLastAddressFromXFF: the address `skip` entries from
 * the right of x-forwarded-for (several header lines count as one list).
 * *single tells whether it was the only entry and nothing was skipped. */
static bool xff_address(const sharp_headers_t *h, uint32_t skip, struct sockaddr_storage *out, bool *single)
{
    *single = false;
    char buf[1024];
    size_t len = 0;
    bool any = false;
    for (int i = sharp_headers_find(h, "x-forwarded-for", 15, 0); i >= 0;
         i = sharp_headers_find(h, "x-forwarded-for", 15, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(h, (uint32_t)i);
        if (any) {
            if (len + 1 >= sizeof buf) return false;
            buf[len++] = ',';
        }
        if (len + v.len >= sizeof buf) return false;
        memcpy(buf + len, v.p, v.len);
        len += v.len;
        any = true;
    }
    if (!any) return false;
    for (uint32_t i = 0; i < skip; i++) {
        char *comma = memrchr(buf, ',', len);
        if (!comma) return false;
        len = (size_t)(comma - buf);
    }
    const char *st = buf;
    size_t n = len;
    char *comma = memrchr(buf, ',', len);
    if (comma && (size_t)(comma - buf) + 1 < len) {
        st = comma + 1;
        n = len - (size_t)(st - buf);
    }
    while (n && (*st == ' ' || *st == '\t')) st++, n--;
    while (n && (st[n - 1] == ' ' || st[n - 1] == '\t')) n--;
    char ip[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof ip) return false;
    memcpy(ip, st, n);
    ip[n] = '\0';
    socklen_t sl;
    if (sharp_addr_parse(ip, 0, out, &sl) < 0) return false;
    *single = !comma && skip == 0;
    return true;
}

/* Envoy's ConnectionManagerUtility::mutateRequestHeaders: XFF, the trusted
 * client address, internal/external, header sanitizing, x-request-id. The
 * trusted client address becomes the stream's downstream remote address
 * (%DOWNSTREAM_REMOTE_ADDRESS%, source IP hashing). */
/* Envoy's mutateXfccRequestHeader: x-forwarded-client-cert is removed
 * (SANITIZE, the default, and every mode on a connection without a client
 * certificate), kept (FORWARD_ONLY; ALWAYS_FORWARD_ONLY even without one),
 * appended to (APPEND_FORWARD) or replaced (SANITIZE_SET) with this
 * connection's element. */
static void mutate_xfcc(sharp_stream_t *s, sharp_headers_t *h)
{
    int mode = s->hcm->forward_client_cert;
    if (mode == 4) return; /* ALWAYS_FORWARD_ONLY */
    const sharp_downstream_tls_info_t *tls = s->info.downstream_tls;
    if (mode == 0 || !tls || !tls->peer_cert) {
        sharp_headers_remove_cstr(h, "x-forwarded-client-cert");
        return;
    }
    if (mode == 1 || !tls->xfcc) return; /* FORWARD_ONLY */
    sharp_str_t old;
    if (mode == 2 && sharp_headers_get_cstr(h, "x-forwarded-client-cert", &old) && old.len) {
        sharp_sbuf_t b = {0};
        sharp_sbuf_append(&b, old.p, old.len);
        sharp_sbuf_puts(&b, ",");
        sharp_sbuf_puts(&b, tls->xfcc);
        sharp_headers_set(h, "x-forwarded-client-cert", 23, b.data, b.len);
        sharp_sbuf_free(&b);
        return;
    }
    sharp_headers_set_cstr(h, "x-forwarded-client-cert", tls->xfcc);
}

static void mutate_request(sharp_stream_t *s, const struct sockaddr *remote)
{
    const sharp_hcm_config_t *hcm = s->hcm;
    sharp_headers_t *h = &s->req;
    remove_hop_by_hop(h, s->upgrade_request && !s->is_connect);
    struct sockaddr_storage final;
    bool have_final = false, allow_trusted = false;
    if (hcm->use_remote_address) {
        allow_trusted = !sharp_headers_get_cstr(h, "x-forwarded-for", NULL);
        bool single;
        /* Trusted proxies in front of us: the client is the entry they
         * appended, read before we append ours. */
        if (hcm->xff_num_trusted_hops > 0)
            have_final = xff_address(h, hcm->xff_num_trusted_hops - 1, &final, &single);
        /* Envoy's appendXff adds only IP peers: a Unix socket peer has no
         * address to forward. */
        if (!hcm->skip_xff_append && remote->sa_family != AF_UNIX) {
            char ip[INET6_ADDRSTRLEN];
            ip_only(remote, ip, sizeof ip);
            sharp_str_t xff;
            if (sharp_headers_get_cstr(h, "x-forwarded-for", &xff) && xff.len) {
                char buf[1024];
                int n = snprintf(buf, sizeof buf, "%.*s,%s", (int)xff.len, xff.p, ip);
                if (n > 0 && (size_t)n < sizeof buf) sharp_headers_set(h, "x-forwarded-for", 15, buf, (size_t)n);
            } else {
                sharp_headers_set_cstr(h, "x-forwarded-for", ip);
            }
        }
        /* An untrusted peer's x-forwarded-proto is overwritten. */
        if (hcm->xff_num_trusted_hops == 0 || !sharp_headers_get_cstr(h, "x-forwarded-proto", NULL))
            sharp_headers_set_cstr(h, "x-forwarded-proto", s->info.downstream_tls ? "https" : "http");
    } else {
        /* Envoy's default original IP detection: x-forwarded-for with
         * xff_num_trusted_hops; internal only if it holds a single address. */
        have_final = xff_address(h, hcm->xff_num_trusted_hops, &final, &allow_trusted);
    }
    if (!sharp_headers_get_cstr(h, "x-forwarded-proto", NULL)) /* absent: set would look again */
        sharp_headers_add_cstr(h, "x-forwarded-proto", s->info.downstream_tls ? "https" : "http"); /* TLS */
    /* HTTP/1's :scheme, unless an absolute URL gave it: the sanitized
     * x-forwarded-proto when it is http or https, else the connection's
     * encryption (Envoy's docs, "HTTP header manipulation: :scheme") */
    sharp_str_t cur, xfp;
    if (s->info.protocol && strncmp(s->info.protocol, "HTTP/1", 6) == 0 && !s->scheme_from_url &&
        sharp_headers_get_cstr(h, ":scheme", &cur) && sharp_headers_get_cstr(h, "x-forwarded-proto", &xfp)) {
        const char *scheme = xfp.len == 5 && strncasecmp(xfp.p, "https", 5) == 0  ? "https"
                             : xfp.len == 4 && strncasecmp(xfp.p, "http", 4) == 0 ? "http"
                             : s->info.downstream_tls                              ? "https"
                                                                                   : "http";
        /* the codec's placeholder is "http": most requests keep it */
        if (!sharp_str_eq(cur, scheme, strlen(scheme))) sharp_headers_set_cstr(h, ":scheme", scheme);
    }
    /* scheme_header_transformation.scheme_to_overwrite */
    if (hcm->scheme_to_set) {
        sharp_headers_set_cstr(h, ":scheme", hcm->scheme_to_set);
        sharp_headers_set_cstr(h, "x-forwarded-proto", hcm->scheme_to_set);
    }
    bool final_is_remote = !have_final; /* not from x-forwarded-for */
    if (!have_final && hcm->use_remote_address) {
        memcpy(&final, remote, sockaddr_size(remote));
        have_final = true;
    }
    bool internal = allow_trusted && have_final && is_internal_address(hcm, (const struct sockaddr *)&final);
    if (!have_final)
        memcpy(&final, remote, sockaddr_size(remote));
    bool edge = !internal && hcm->use_remote_address;
    if (internal) {
        sharp_headers_set_cstr(h, "x-envoy-internal", "true"); /* replaces the peer's */
    } else {
        sharp_headers_remove_matching(h, is_untrusted_envoy_header, &edge);
        if (s->routes)
            for (uint32_t i = 0; i < s->routes->ninternal_only_headers; i++)
                sharp_headers_remove_cstr(h, s->routes->internal_only_headers[i]);
    }
    /* add_user_agent (Envoy's mutateRequestHeaders, after the internal
     * headers are cleaned) */
    if (hcm->user_agent) {
        sharp_headers_set_cstr(h, "x-envoy-downstream-service-cluster", hcm->user_agent);
        sharp_str_t ua;
        if (!sharp_headers_get_cstr(h, "user-agent", &ua) || !ua.len) sharp_headers_set_cstr(h, "user-agent", hcm->user_agent);
        if (hcm->user_agent_node[0]) sharp_headers_set_cstr(h, "x-envoy-downstream-service-node", hcm->user_agent_node);
    }
    if (edge && final.ss_family != AF_UNIX) {
        /* first ingress point into the trusted network (IP peers only) */
        char ip[INET6_ADDRSTRLEN];
        ip_only((const struct sockaddr *)&final, ip, sizeof ip);
        sharp_headers_set_cstr(h, "x-envoy-external-address", ip);
    }
    /* The peer's address was printed once, when the connection was
     * accepted: a request pays for printing only an address it brought in
     * x-forwarded-for. */
    if (final_is_remote && s->conn && remote == (const struct sockaddr *)&s->conn->remote_ss && s->conn->remote[0])
        SHARP_COPY_CSTR(s->info.downstream_remote_address, s->conn->remote);
    else
        sharp_addr_str((const struct sockaddr *)&final, s->info.downstream_remote_address,
                       sizeof s->info.downstream_remote_address);
    sharp_str_t rid;
    bool found_rid = sharp_headers_get_cstr(h, "x-request-id", &rid);
    bool has_rid = found_rid && rid.len;
    bool force = edge && !hcm->preserve_external_request_id;
    char uuid[37];
    if (hcm->generate_request_id && (!has_rid || force)) {
        make_uuid(s->conn ? sharp_stream_worker(s) : NULL, uuid);
        sharp_headers_set(h, "x-request-id", 12, uuid, 36);
        /* the map's only x-request-id now: no lookup of the entry just added */
        rid = (sharp_str_t){uuid, 36};
        found_rid = true;
    }
    if (found_rid) sharp_copy_str(s->info.request_id, sizeof s->info.request_id, rid.p, rid.len);
}

/* The HTTP date, recomputed at most once a second per thread. */
static const char *http_date(void)
{
    static __thread time_t last;
    static __thread char buf[40];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

static void mutate_response(sharp_stream_t *s, sharp_headers_t *h)
{
    const sharp_hcm_config_t *hcm = s->hcm;
    switch (hcm->server_header_transformation) {
    case 0: sharp_headers_set_cstr(h, "server", hcm->server_name); break;
    case 1:
        if (!sharp_headers_get_cstr(h, "server", NULL)) sharp_headers_add_cstr(h, "server", hcm->server_name);
        break;
    default: break;
    }
    if (!sharp_headers_get_cstr(h, "date", NULL)) sharp_headers_add_cstr(h, "date", http_date());
    if (hcm->always_set_request_id_in_response && s->info.request_id[0])
        sharp_headers_set_cstr(h, "x-request-id", s->info.request_id);
    if (hcm->tracing) sharp_tracing_response_headers(s, h);
}

/* ------------------------------------------------------------------ */
/* decode iteration                                                     */

static bool stream_done(sharp_stream_t *s)
{
    return s->destroyed || s->local_reply || s->response_complete;
}

/* One source of the downstream's read pause holds it (pause) or lets it
 * go: the codec stops reading the stream when the first source holds it
 * and reads again when the last lets go (Envoy's reference-counted
 * readDisable). `held` is the source's own flag, so a source counts once
 * however often it says the same. */
static void read_pause(sharp_stream_t *s, bool *held, bool pause)
{
    if (s->destroyed || *held == pause) return;
    *held = pause;
    if (pause) {
        if (s->read_pauses++ == 0) sharp_codec_read_disable(s, true);
        return;
    }
    assert(s->read_pauses > 0);
    if (s->read_pauses > 0 && --s->read_pauses == 0) sharp_codec_read_disable(s, false);
}

static void local_reply_at(sharp_stream_t *s, int32_t from, const char *who, uint32_t status, const char *body,
                           size_t blen, uint32_t response_flag, const char *details, const char *const *headers,
                           const sharp_header_ops_t *ops);

/* The 413 of a request too large for the filter at `holder` (counted in
 * downstream_rq_too_large), sent through the filters before it. */
static void request_too_large_at(sharp_stream_t *s, int32_t holder, const char *who)
{
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_too_large);
    local_reply_at(s, holder - 1, who, 413, "Payload Too Large", 17, 0, "request_payload_too_large", NULL, NULL);
}

/* Envoy's requestDataTooLarge when the filter holding the request buffers
 * the whole body: counted, and answered with a 413 on behalf of that
 * filter (Envoy's sendLocalReply through the filters before it; a reset
 * once the response has started). What is held goes, and with it the
 * read pause. */
static void dec_too_large(sharp_stream_t *s, int32_t holder)
{
    sharp_debug(http, "[C%llu][S%llu] request data too large (above the buffer limit of %u held by %s)", s->conn_id,
                s->id, sharp_stream_buffer_limit(s), s->filters[holder].factory->name);
    sharp_sbuf_free(&s->dec_buf);
    s->dec_end_pending = false;
    s->dec_buffering = false;
    read_pause(s, &s->dec_buf_paused, false);
    request_too_large_at(s, holder, "the connection manager");
}

void sharp_stream_request_too_large(sharp_filter_t *f)
{
    if (!stream_done(f->stream)) request_too_large_at(f->stream, (int32_t)f->index, f->factory->name);
}

/* Where the request stops in the chain: the first of the filter that
 * stopped on data and the one that stopped the headers (the terminal
 * filter, once it has them), -1 if none. */
static int32_t dec_hold(const sharp_stream_t *s)
{
    int32_t hold = -1;
    if (s->dec_stopped) hold = (int32_t)s->dec_next - 1;
    if (s->dec_data_stop >= 0 && (hold < 0 || s->dec_data_stop < hold)) hold = s->dec_data_stop;
    return hold;
}

/* The filter holding the request: dec_hold, but -1 for the terminal
 * filter, which consumes what it gets. */
static int32_t dec_holder(const sharp_stream_t *s)
{
    int32_t hold = dec_hold(s);
    return hold == (int32_t)s->nfilters - 1 ? -1 : hold;
}

/* The connection manager's own source: request data held behind a
 * stopped filter above the stream's buffer limit; a 413 instead when the
 * filter holding it buffers the whole body. */
static void dec_buf_check(sharp_stream_t *s)
{
    bool above = s->dec_buf.len > sharp_stream_buffer_limit(s);
    int32_t holder = above && s->dec_buffering && !stream_done(s) ? dec_holder(s) : -1;
    if (holder >= 0) {
        dec_too_large(s, holder);
        return;
    }
    read_pause(s, &s->dec_buf_paused, above);
}

static void dec_buffer(sharp_stream_t *s, const char *p, size_t n, bool end)
{
    if (n) sharp_sbuf_append(&s->dec_buf, p, n);
    if (end) s->dec_end_pending = true;
    dec_buf_check(s);
}

/* Delivers request data to filters [from, ...]. Data goes as far as the
 * filter that holds the chain (stopped on headers, or stopped on data) and is
 * buffered there, unless that filter is the terminal one, which consumes it. */
void dec_run_data(sharp_stream_t *s, uint32_t from, const char *p, size_t n, bool end)
{
    if (stream_done(s)) return;
    if (end && !n && s->dec_end_sent) return;
    int32_t hold = dec_hold(s);
    int32_t last = hold >= 0 ? hold : (int32_t)s->nfilters - 1;
    for (int32_t i = (int32_t)from; i <= last; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (f->off) continue;
        sharp_filter_status_t st = SHARP_FILTER_CONTINUE;
        if (f->factory->decode_data) st = f->factory->decode_data(f, p, n, end);
        if (stream_done(s)) return;
        /* the filter passed its own data on (sharp_stream_decode_data) */
        if (st == SHARP_FILTER_CONSUMED) return;
        /* a filter stopping the data holds it, also when the chain is
         * otherwise only stopped at the terminal filter (which consumes
         * what it gets: the router once it has the headers) */
        bool held = hold >= 0 && hold != (int32_t)s->nfilters - 1;
        if (st == SHARP_FILTER_STOP && !held && i != (int32_t)s->nfilters - 1) {
            s->dec_data_stop = i;
            hold = last = i;
        }
        /* the filter holding the request says whether it wants the whole
         * body with each data it sees */
        if (i == hold && i != (int32_t)s->nfilters - 1) s->dec_buffering = st == SHARP_FILTER_STOP;
    }
    if (hold >= 0 && hold != (int32_t)s->nfilters - 1) {
        dec_buffer(s, p, n, end);
        return;
    }
    if (end) s->dec_end_sent = true;
}

/* Request trailers (HTTP/2) end the request: each filter gets them through
 * decode_trailers, one without it the end of the body. Held like data
 * while a filter before the end stopped the chain. */
void dec_run_trailers(sharp_stream_t *s, uint32_t from)
{
    if (stream_done(s) || s->dec_end_sent) return;
    s->has_req_trailers = true;
    int32_t hold = dec_hold(s);
    int32_t last = hold >= 0 ? hold : (int32_t)s->nfilters - 1;
    for (int32_t i = (int32_t)from; i <= last; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (f->off) continue;
        sharp_filter_status_t st = SHARP_FILTER_CONTINUE;
        if (f->factory->decode_trailers) st = f->factory->decode_trailers(f, &s->req_trailers);
        else if (f->factory->decode_data) st = f->factory->decode_data(f, NULL, 0, true);
        if (stream_done(s)) return;
        /* the filter passes the trailers on itself (sharp_stream_decode_trailers) */
        if (st == SHARP_FILTER_CONSUMED) return;
        /* a filter stopping the trailers holds them, also when the chain
         * is otherwise only stopped at the terminal filter (which
         * consumes what it gets) */
        bool held = hold >= 0 && hold != (int32_t)s->nfilters - 1;
        if (st == SHARP_FILTER_STOP && !held && i != (int32_t)s->nfilters - 1) {
            s->dec_data_stop = i;
            hold = last = i;
        } else if (hold < 0 && s->dec_data_stop > i) {
            /* the last data the filter passed on (a compressor's end of
             * body) stopped a filter after it: the trailers wait there */
            hold = last = s->dec_data_stop;
        }
    }
    if (hold >= 0 && hold != (int32_t)s->nfilters - 1) {
        s->dec_end_pending = true; /* with has_req_trailers: the trailers follow the held body */
        return;
    }
    s->dec_end_sent = true;
}

/* The filters before `upto` that make request data hear that what is
 * held after them may have room again. */
static void dec_drained(sharp_stream_t *s, uint32_t upto)
{
    for (uint32_t i = 0; i < upto && i < s->nfilters && !stream_done(s); i++) {
        sharp_filter_t *f = &s->filters[i];
        if (!f->off && f->factory->on_decoder_drained && !sharp_stream_decoder_above_limit(f))
            f->factory->on_decoder_drained(f);
    }
}

bool sharp_stream_decoder_above_limit(sharp_filter_t *f)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed) return false;
    if (s->dec_buf.len > sharp_stream_buffer_limit(s)) return true;
    for (uint32_t i = f->index + 1; i < s->nfilters; i++)
        if (!s->filters[i].off && s->filters[i].dec_above) return true;
    return false;
}

void sharp_stream_decoder_watermark(sharp_filter_t *f, bool above)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed) return;
    read_pause(s, &f->dec_above, above);
    if (!above) dec_drained(s, f->index);
}

static void dec_flush_buffer(sharp_stream_t *s, uint32_t from)
{
    sharp_sbuf_t b = s->dec_buf;
    bool end = s->dec_end_pending;
    memset(&s->dec_buf, 0, sizeof s->dec_buf);
    s->dec_end_pending = false;
    if (end && s->has_req_trailers) {
        if (b.len) dec_run_data(s, from, b.data, b.len, false);
        if (!stream_done(s)) dec_run_trailers(s, from);
    } else if (b.len || end) {
        dec_run_data(s, from, b.data, b.len, end);
    }
    sharp_sbuf_free(&b);
    /* what a filter stopped again holds now counts */
    dec_buf_check(s);
    dec_drained(s, s->nfilters);
}

static void dec_iterate_headers(sharp_stream_t *s, uint32_t from)
{
    bool end = s->dec_end_sent;
    for (uint32_t i = from; i < s->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (f->off) continue;
        sharp_filter_status_t st = SHARP_FILTER_CONTINUE;
        if (f->factory->decode_headers) st = f->factory->decode_headers(f, &s->req, end);
        if (stream_done(s)) return;
        if (st == SHARP_FILTER_STOP) {
            s->dec_next = i + 1;
            s->dec_stopped = true;
            /* The terminal filter consumes what it is given: request data
             * held while a filter before it had stopped the chain (one
             * that waited for an answer, such as ext_authz) goes on to it
             * now (the terminal filter pauses the downstream itself when
             * it must, a source of its own). */
            if (i == s->nfilters - 1 && (s->dec_buf.len || s->dec_end_pending)) dec_flush_buffer(s, from);
            return;
        }
    }
    s->dec_next = s->nfilters;
    s->dec_stopped = false;
    dec_flush_buffer(s, from); /* filters before `from` saw the held data already */
}

/* Envoy's Grpc::Common::hasGrpcContentType. */
static bool has_grpc_content_type(const sharp_headers_t *h)
{
    sharp_str_t ct;
    if (!sharp_headers_get_cstr(h, "content-type", &ct) || ct.len < 16 ||
        strncasecmp(ct.p, "application/grpc", 16) != 0)
        return false;
    return ct.len == 16 || ct.p[16] == '+' || ct.p[16] == ';';
}

/* Path normalization before anything looks at the path (Envoy's
 * maybeNormalizePath in ActiveStream::decodeHeaders): the normalized :path
 * is what routing, filters and the upstream see. Returns false when the
 * stream has been answered (400, or the 307 of UNESCAPE_AND_REDIRECT). */
static bool normalize_request_path(sharp_stream_t *s)
{
    const sharp_hcm_config_t *hcm = s->hcm;
    sharp_str_t path;
    if (!sharp_headers_get_cstr(&s->req, ":path", &path)) return true;
    sharp_escaped_slashes_action_t esc = (sharp_escaped_slashes_action_t)hcm->path_with_escaped_slashes_action;
    bool escaped = esc != SHARP_ESCAPED_SLASHES_DEFAULT && esc != SHARP_ESCAPED_SLASHES_KEEP;
    if (!hcm->normalize_path && !hcm->merge_slashes && !escaped && !memchr(path.p, '#', path.len)) return true;
    sharp_sbuf_t out = {0};
    sharp_path_action_t act = sharp_path_normalize(path.p, path.len, hcm->normalize_path, hcm->merge_slashes, esc, &out);
    /* gRPC clients do not follow redirects */
    if (act == SHARP_PATH_REDIRECT && has_grpc_content_type(&s->req)) act = SHARP_PATH_REJECT;
    sharp_stats_shard_t *sh = sharp_stream_worker(s)->stats;
    if (act == SHARP_PATH_REJECT) {
        sharp_counter_inc(sh, hcm->st.rq_failed_path_normalization);
        /* a 400 local reply ends an HTTP/1 connection (onLocalReply) */
        s->closes_connection = true;
        sharp_stream_send_local_reply(&s->filters[0], 400, NULL, 0, "path_normalization_failed");
    } else if (act == SHARP_PATH_REDIRECT) {
        sharp_counter_inc(sh, hcm->st.rq_redirected_with_normalized_path);
        const char *hdrs[] = {"location", sharp_sbuf_cstr(&out), NULL};
        sharp_stream_send_local_reply_ex(&s->filters[0], 307, NULL, 0, "path_normalization_failed", hdrs);
    } else if (out.len != path.len || memcmp(out.data, path.p, out.len) != 0) {
        sharp_headers_set(&s->req, ":path", 5, out.data, out.len);
    }
    sharp_sbuf_free(&out);
    return act == SHARP_PATH_CONTINUE;
}

/* Envoy's createDownstreamFilterChain for an upgrade request: the route's
 * upgrade_configs, else the connection manager's, must allow the type;
 * otherwise a 403 with details upgrade_failed (no response flag) and
 * downstream_rq_ws_on_non_ws_route. Returns false when answered. */
static bool accept_upgrade(sharp_stream_t *s)
{
    const sharp_hcm_config_t *hcm = s->hcm;
    sharp_stats_shard_t *sh = sharp_stream_worker(s)->stats;
    sharp_str_t type = {"", 0};
    if (s->is_connect) type = SHARP_STR("CONNECT");
    else sharp_headers_get_cstr(&s->req, "upgrade", &type);
    if (!sharp_upgrade_allowed(hcm->upgrades, hcm->nupgrades, s->route, type)) {
        sharp_debug(http, "[C%llu][S%llu] upgrade '%.*s' not allowed", s->conn_id, s->id, (int)type.len, type.p);
        sharp_counter_inc(sh, hcm->st.rq_ws_on_non_ws_route);
        sharp_stream_send_local_reply(&s->filters[0], 403, NULL, 0, "upgrade_failed");
        return false;
    }
    s->upgrade_accepted = true;
    sharp_counter_inc(sh, hcm->st.cx_upgrades_total);
    sharp_gauge_add(sh, hcm->st.cx_upgrades_active, 1);
    return true;
}

/* stop_accepting_requests (Envoy's decodeHeaders): as soon as the headers
 * are decoded, before any filter runs, a 503 "envoy overloaded". */
static bool overload_reject(sharp_stream_t *s)
{
    if (s->hcm->bypass_overload_manager || s->nfilters == 0 ||
        !sharp_overload_take(SHARP_OL_STOP_ACCEPTING_REQUESTS, sharp_worker_random(sharp_stream_worker(s))))
        return false;
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rq_overload_close);
    static const char *const local_overloaded[] = {"x-envoy-local-overloaded", "true", NULL};
    sharp_stream_send_local_reply_body(&s->filters[0], 503, "envoy overloaded", 16, SHARP_RF_OVERLOAD_MANAGER,
                                       "overload", s->hcm->append_local_overload ? local_overloaded : NULL);
    return true;
}

/* Envoy's HeaderUtility::authorityIsValid: the characters RFC 3986 allows
 * in an authority (a host name, an IP literal, a port, userinfo and
 * percent-encoding); a Host or :authority with a space, a control
 * character, a byte above 0x7f or one of "/?#{}<>\"^`|" is refused with 400
 * http.invalid_authority before anything routes on it. */
static bool authority_char(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) return true;
    return ch && strchr("-._~!$&'()*+,;=:@[]%", ch) != NULL;
}

static bool authority_valid(sharp_stream_t *s)
{
    sharp_str_t a;
    if (!sharp_headers_get_cstr(&s->req, ":authority", &a)) return true;
    for (size_t i = 0; i < a.len; i++) {
        if (authority_char((unsigned char)a.p[i])) continue;
        if (s->nfilters) sharp_stream_send_local_reply(&s->filters[0], 400, NULL, 0, "http.invalid_authority");
        return false;
    }
    return true;
}

/* Envoy creates the filter chain once the route is known, without the
 * filters the route disables (FilterConfig.disabled) and without those
 * disabled by default (HttpFilter.disabled) unless the route names them.
 * The terminal filter always stays: the connection manager refuses a
 * disabled one at load, and a route table from RDS cannot take it away. */
static void apply_route_filter_state(sharp_stream_t *s)
{
    if (!sharp_route_has_filter_configs(s->routes, s->vhost, s->route, s->route_wc)) return;
    for (uint32_t i = 0; i + 1 < s->nfilters; i++) {
        sharp_filter_t *f = &s->filters[i];
        if (f->factory->terminal) continue;
        int d = sharp_route_filter_disabled(s->routes, s->vhost, s->route, s->route_wc, f->name);
        if (d >= 0) f->off = d == 1;
    }
}

void sharp_hcm_decode_headers(sharp_stream_t *s, bool end_stream, const struct sockaddr *remote)
{
    /* Envoy disables request_headers_timeout first thing in decodeHeaders */
    if (s->conn) sharp_codec_request_headers_done(s);
    /* the route table of the stream's view: an RDS update reaches the next
     * request of a connection, never one in flight */
    s->routes = sharp_snapshot_routes(s->view ? s->view->snap : s->snap, s->hcm);
    if (s->conn && overload_reject(s)) return;
    if (end_stream) s->dec_end_sent = true;
    if (!authority_valid(s)) return;
    if (!normalize_request_path(s)) return;
    mutate_request(s, remote);
    mutate_xfcc(s, &s->req);
    sharp_str_t authority = {"", 0};
    sharp_headers_get_cstr(&s->req, ":authority", &authority);
    s->vhost = s->routes ? sharp_route_table_find_vhost(s->routes, authority) : NULL;
    /* Envoy matches routes with the stream's random id: runtime_fraction
     * draws from it */
    uint64_t random = s->conn ? sharp_worker_random(sharp_stream_worker(s)) : 0;
    s->route = s->vhost ? sharp_vhost_match_random(s->vhost, &s->req, random) : NULL;
    if (s->route) s->info.route_name = s->route->name;
    if (s->route && s->route->action == SHARP_ROUTE_ACTION_ROUTE) {
        /* Envoy's route entry is the weighted cluster's: picked here, so its
         * per-filter configs reach every filter of the chain */
        s->route_cluster = sharp_route_pick_cluster(s->route, s->conn ? sharp_worker_random(sharp_stream_worker(s)) : 0,
                                                    &s->route_wc);
        s->route_cluster_picked = true;
    }
    if (s->route) apply_route_filter_state(s);
    /* the route's idle_timeout replaces stream_idle_timeout (0 disables) */
    if (s->route && s->route->has_idle_timeout) {
        s->idle_timeout_ms = s->route->idle_timeout_ms;
        sharp_codec_touch(s);
    }
    /* Envoy traces the request once its route is known, before the filters */
    if (s->hcm->tracing) sharp_tracing_begin(s);
    if (s->upgrade_request && !accept_upgrade(s)) return;
    s->grpc_request = sharp_grpc_is_request(&s->req);
    s->grpc_known = true;
    dec_iterate_headers(s, 0);
}

void sharp_stream_continue_decoding(sharp_filter_t *f)
{
    sharp_stream_t *s = f->stream;
    if (stream_done(s)) return;
    if (s->dec_stopped && s->dec_next == f->index + 1) {
        s->dec_stopped = false;
        s->dec_buffering = false;
        dec_iterate_headers(s, f->index + 1);
    } else if (s->dec_data_stop == (int32_t)f->index) {
        s->dec_data_stop = -1;
        s->dec_buffering = false;
        dec_flush_buffer(s, f->index + 1);
    }
}

/* ------------------------------------------------------------------ */
/* encode iteration                                                     */

/* One source of a response-side pause holds it (pause) or lets it go,
 * for the filters after `after` (-1: all of them). Each filter counts
 * the sources that hold it (Envoy's high_watermark_count_) and hears the
 * first one's beginning and the last one's end (on_downstream_watermark):
 * the router then pauses or resumes its upstream. `held` is the source's
 * own flag, so a source counts once however often it says the same. */
static void enc_pause(sharp_stream_t *s, int32_t after, bool *held, bool pause)
{
    if (s->destroyed || *held == pause) return;
    *held = pause;
    for (uint32_t i = (uint32_t)(after + 1); i < s->nfilters; i++) {
        sharp_filter_t *g = &s->filters[i];
        bool edge;
        if (pause) {
            edge = g->enc_pauses++ == 0;
        } else {
            assert(g->enc_pauses > 0);
            edge = g->enc_pauses > 0 && --g->enc_pauses == 0;
        }
        if (edge && !g->off && !s->destroyed && g->factory->on_downstream_watermark)
            g->factory->on_downstream_watermark(g, pause);
    }
}

void sharp_hcm_downstream_watermark(sharp_stream_t *s, bool above)
{
    enc_pause(s, -1, &s->conn_above, above);
}

void sharp_hcm_codec_watermark(sharp_stream_t *s, bool above)
{
    enc_pause(s, -1, &s->codec_above, above);
}

void sharp_hcm_stream_begin_above(sharp_stream_t *s)
{
    if (s->conn_above) return;
    s->conn_above = true;
    for (uint32_t i = 0; i < s->nfilters; i++) s->filters[i].enc_pauses++;
}

bool sharp_stream_encoder_paused(sharp_filter_t *f)
{
    /* the chain's own filter at f's place: a filter another one runs
     * (ExtensionWithMatcher) is a copy that the counts do not reach */
    sharp_stream_t *s = f->stream;
    return f->index < s->nfilters && s->filters[f->index].enc_pauses > 0;
}

void sharp_stream_encoder_watermark(sharp_filter_t *f, bool above)
{
    enc_pause(f->stream, (int32_t)f->index, &f->enc_above, above);
}

/* Envoy's responseDataTooLarge when the filter holding the headers
 * buffers the body: counted, and answered with a 500 that goes straight
 * to the codec (Envoy's sendDirectLocalReply: the response's headers were
 * started but not sent); the held response and what the upstream still
 * sends are dropped. */
static void enc_too_large(sharp_stream_t *s)
{
    sharp_debug(http, "[C%llu][S%llu] response data too large (above the buffer limit of %u held by %s)", s->conn_id,
                s->id, sharp_stream_buffer_limit(s), s->filters[s->enc_next].factory->name);
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rs_too_large);
    s->enc_replaced = true;
    s->has_resp_trailers = false;
    local_reply_at(s, -1, "the connection manager", 500, "Internal Server Error", 21, 0, "response_payload_too_large",
                   NULL, NULL);
}

void sharp_stream_response_too_large(sharp_filter_t *f)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed) return;
    sharp_counter_inc(sharp_stream_worker(s)->stats, s->hcm->st.rs_too_large);
    local_reply_at(s, (int32_t)f->index - 1, f->factory->name, 500, "Internal Server Error", 21, 0,
                   "response_payload_too_large", NULL, NULL);
}

/* Response data held behind the filter holding the headers (Envoy's
 * buffered response data, a watermark buffer at the stream's buffer
 * limit): above the limit the filters after that filter pause, until it
 * lets the data go; a filter that buffers the whole body gets the 500
 * instead. */
static void enc_buf_check(sharp_stream_t *s)
{
    bool above = s->enc_stopped && s->enc_buf.len > sharp_stream_buffer_limit(s);
    if (s->enc_buf_above && (!above || s->enc_buf_at != s->enc_next))
        enc_pause(s, s->enc_buf_at, &s->enc_buf_above, false);
    if (!above || s->destroyed || s->enc_buf_above) return;
    if (s->enc_buffering) {
        enc_too_large(s);
        return;
    }
    s->enc_buf_at = s->enc_next;
    enc_pause(s, s->enc_buf_at, &s->enc_buf_above, true);
}

/* The held response is over (continued, replaced or answered locally):
 * its data goes, and with it its pause. */
static void enc_drop_held(sharp_stream_t *s)
{
    sharp_sbuf_free(&s->enc_buf);
    s->enc_end_pending = false;
    s->enc_buffering = false;
    if (s->enc_buf_above) enc_pause(s, s->enc_buf_at, &s->enc_buf_above, false);
}

static bool stream_keeps_response_head(const sharp_stream_t *s)
{
    if (s->hcm->naccess_logs) return true;
    for (uint32_t i = 0; i < s->nfilters; i++)
        if (!s->filters[i].off && s->filters[i].factory->on_complete) return true;
    return false;
}

static void enc_to_codec_headers(sharp_stream_t *s, sharp_headers_t *h, bool end)
{
    mutate_response(s, h);
    if (SHARP_LOG_ON(http, SHARP_LOG_DEBUG)) {
        sharp_sbuf_t d = {0};
        sharp_headers_dump(h, &d);
        sharp_debug(http, "[C%llu][S%llu] encoding headers via codec (end_stream=%s):%s", s->conn_id, s->id,
                    end ? "true" : "false", d.data ? d.data : "");
        sharp_sbuf_free(&d);
    }
    /* The stream keeps the response head for access logs and completion
     * callbacks; the caller's map (the upstream connection's) is reused. */
    if (h != &s->resp && stream_keeps_response_head(s)) sharp_headers_copy(&s->resp, h);
    sharp_codec_encode_headers(s, h, end);
}

static void enc_iterate_headers(sharp_stream_t *s, int32_t from, sharp_headers_t *h, bool end)
{
    for (int32_t i = from; i >= 0; i--) {
        sharp_filter_t *f = &s->filters[i];
        if (f->off) continue;
        sharp_filter_status_t st = SHARP_FILTER_CONTINUE;
        bool was_local = s->local_reply;
        if (f->factory->encode_headers) st = f->factory->encode_headers(f, h, end);
        if (s->destroyed) return;
        if (st == SHARP_FILTER_STOP) {
            /* keep our own copy: the caller's map may not outlive this call;
             * unless the filter answered with a local reply, whose headers
             * are the response now (access logs read them) */
            if (h != &s->resp && (was_local || !s->local_reply)) sharp_headers_copy(&s->resp, h);
            s->enc_next = i;
            s->enc_stopped = true;
            s->enc_headers_end = end;
            return;
        }
    }
    s->enc_stopped = false;
    enc_to_codec_headers(s, h, end);
}

static void enc_run_data(sharp_stream_t *s, int32_t from, const char *p, size_t n, bool end)
{
    if (s->destroyed) return;
    /* a filter answering with a local reply ends this data's way */
    bool was_local = s->local_reply;
    /* while a filter holds the response headers, data goes as far as that
     * filter and waits behind it */
    int32_t last = s->enc_stopped ? s->enc_next : 0;
    for (int32_t i = from; i >= last; i--) {
        sharp_filter_t *f = &s->filters[i];
        if (f->off) continue;
        sharp_filter_status_t st = SHARP_FILTER_CONTINUE;
        if (end && s->has_resp_trailers && f->factory->encode_trailers) {
            /* a filter that reads the response trailers gets the last data
             * without the end, then the trailers (Envoy's encodeTrailers);
             * it cannot hold them */
            if (f->factory->encode_data && n) st = f->factory->encode_data(f, p, n, false);
            if (s->destroyed || s->local_reply != was_local) return;
            sharp_filter_status_t ts = f->factory->encode_trailers(f, &s->resp_trailers);
            if (s->destroyed || s->local_reply != was_local) return;
            /* the filter ended the response itself
             * (sharp_stream_continue_encoding_body), or passes the
             * trailers on later (sharp_stream_encode_trailers) */
            if (!s->has_resp_trailers || ts == SHARP_FILTER_CONSUMED) return;
            if (st == SHARP_FILTER_CONSUMED) {
                /* the filter passed its data on; the trailers follow it */
                enc_run_data(s, i - 1, NULL, 0, true);
                return;
            }
        } else if (f->factory->encode_data) {
            st = f->factory->encode_data(f, p, n, end);
        }
        if (s->destroyed || s->local_reply != was_local) return;
        /* the filter passed its own data on (sharp_stream_encode_data) */
        if (st == SHARP_FILTER_CONSUMED) return;
        /* the filter holding the headers keeps the body to see it whole */
        if (st == SHARP_FILTER_STOP && s->enc_stopped && i == s->enc_next) s->enc_buffering = true;
    }
    if (s->enc_stopped) {
        if (n) sharp_sbuf_append(&s->enc_buf, p, n);
        if (end) s->enc_end_pending = true;
        enc_buf_check(s);
        return;
    }
    if (end && s->has_resp_trailers) {
        /* the codec ends the response with the trailers, if its protocol
         * carries them */
        if (n) sharp_codec_encode_data(s, p, n, false);
        if (!s->destroyed) sharp_codec_encode_trailers(s, &s->resp_trailers);
        return;
    }
    sharp_codec_encode_data(s, p, n, end);
}

void sharp_stream_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed || s->response_started || s->enc_stopped) return;
    enc_iterate_headers(s, (int32_t)f->index - 1, h, end_stream);
}

void sharp_stream_encode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream)
{
    if (f->stream->enc_replaced) return;
    enc_run_data(f->stream, (int32_t)f->index - 1, p, n, end_stream);
}

void sharp_stream_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end_stream)
{
    dec_run_data(f->stream, f->index + 1, p, n, end_stream);
}

void sharp_stream_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed) return;
    if (t != &s->req_trailers) sharp_headers_copy(&s->req_trailers, t);
    dec_run_trailers(s, f->index + 1);
}

void sharp_stream_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed || s->enc_replaced) return;
    if (t != &s->resp_trailers) sharp_headers_copy(&s->resp_trailers, t);
    s->has_resp_trailers = true;
    enc_run_data(s, (int32_t)f->index - 1, NULL, 0, true);
}

void sharp_stream_continue_encoding(sharp_filter_t *f)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed || !s->enc_stopped || s->enc_next != (int32_t)f->index) return;
    s->enc_stopped = false;
    s->enc_buffering = false;
    sharp_sbuf_t b = s->enc_buf;
    bool end = s->enc_end_pending;
    memset(&s->enc_buf, 0, sizeof s->enc_buf);
    s->enc_end_pending = false;
    bool was_local = s->local_reply;
    enc_iterate_headers(s, (int32_t)f->index - 1, &s->resp, s->enc_headers_end);
    /* the held data follows the headers, as far as a filter that holds
     * them again; not after a local reply that took the response's place */
    if (!s->destroyed && s->local_reply == was_local && (b.len || end))
        enc_run_data(s, (int32_t)f->index - 1, b.data, b.len, end);
    sharp_sbuf_free(&b);
    /* the pause ends, or moves to where the data waits now */
    enc_buf_check(s);
}

/* ------------------------------------------------------------------ */
/* local replies, resets, flow control                                  */

void sharp_stream_send_local_reply(sharp_filter_t *f, uint32_t status, const char *body,
                                   uint32_t response_flag, const char *details)
{
    sharp_stream_send_local_reply_ex(f, status, body, response_flag, details, NULL);
}

void sharp_stream_send_local_reply_ex(sharp_filter_t *f, uint32_t status, const char *body,
                                      uint32_t response_flag, const char *details, const char *const *headers)
{
    sharp_stream_send_local_reply_body(f, status, body, body ? strlen(body) : 0, response_flag, details,
                                       headers);
}

static uint64_t stream_random(void *ctx)
{
    return sharp_worker_random(ctx);
}

/* Envoy's Utility::prepareLocalReply/encodeLocalReply, as the filter
 * manager calls it: the headers get the route's response header mutations
 * (route entry or direct response) and the caller's, then local_reply_config
 * rewrites status, body and headers, then the body decides content-length
 * and content-type. */
static void local_reply(sharp_filter_t *f, uint32_t status, const char *body, size_t blen, uint32_t response_flag,
                        const char *details, const char *const *headers, const sharp_header_ops_t *ops);

void sharp_stream_send_local_reply_body(sharp_filter_t *f, uint32_t status, const char *body, size_t blen,
                                        uint32_t response_flag, const char *details, const char *const *headers)
{
    local_reply(f, status, body, blen, response_flag, details, headers, NULL);
}

void sharp_stream_send_local_reply_ops(sharp_filter_t *f, uint32_t status, const char *body, uint32_t response_flag,
                                       const char *details, const char *const *headers, const sharp_header_ops_t *ops)
{
    local_reply(f, status, body, body ? strlen(body) : 0, response_flag, details, headers, ops);
}

void sharp_stream_send_local_reply_body_ops(sharp_filter_t *f, uint32_t status, const char *body, size_t blen,
                                            uint32_t response_flag, const char *details, const char *const *headers,
                                            const sharp_header_ops_t *ops)
{
    local_reply(f, status, body, blen, response_flag, details, headers, ops);
}

/* The stream's copy of a filter's details (stream.h's details_copy). */
static const char *keep_details(sharp_stream_t *s, const char *details)
{
    size_t n = strlen(details) + 1;
    char *copy = sharp_small_alloc(n);
    memcpy(copy, details, n);
    sharp_small_free(s->details_copy);
    s->details_copy = copy;
    return copy;
}

static void local_reply(sharp_filter_t *f, uint32_t status, const char *body, size_t blen, uint32_t response_flag,
                        const char *details, const char *const *headers, const sharp_header_ops_t *ops)
{
    local_reply_at(f->stream, (int32_t)f->index - 1, f->factory->name, status, body, blen, response_flag, details,
                   headers, ops);
}

/* The local reply's headers and body go through the filters from `from`
 * down to the first (-1: none, straight to the codec). */
static void local_reply_at(sharp_stream_t *s, int32_t from, const char *who, uint32_t status, const char *body,
                           size_t blen, uint32_t response_flag, const char *details, const char *const *headers,
                           const sharp_header_ops_t *ops)
{
    if (s->destroyed) return;
    sharp_debug(http, "[C%llu][S%llu] Sending local reply with details %s (status %u, from %s)", s->conn_id,
                s->id, details ? details : "-", status, who);
    s->info.response_flags |= response_flag;
    if (details) s->info.response_code_details = keep_details(s, details);
    if (s->response_started) {
        sharp_stream_reset(s, 0);
        return;
    }
    s->local_reply = true;
    s->local_reply_code = status;
    /* a response some filter held is replaced: its data goes */
    if (s->enc_stopped) enc_drop_held(s);
    s->enc_stopped = false;
    sharp_headers_t *h = &s->resp;
    sharp_headers_clear(h);
    char code[16];
    snprintf(code, sizeof code, "%u", status);
    sharp_headers_add_cstr(h, ":status", code);
    if (s->route) sharp_route_apply_response_headers(s->routes, s->vhost, s->route, s->route_wc, h, &s->info);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        sharp_headers_add_cstr(h, headers[i], headers[i + 1]);
    if (ops) sharp_header_ops_apply_si(ops, h, &s->info);
    sharp_sbuf_t b = {0}, ct_before = {0};
    if (blen) sharp_sbuf_append(&b, body, blen);
    sharp_str_t v;
    bool had_ct = sharp_headers_get_cstr(h, "content-type", &v);
    if (had_ct) sharp_sbuf_append(&ct_before, v.p, v.len);
    const char *content_type = "text/plain";
    sharp_local_reply_rewrite(s->hcm->local_reply, &s->info, h, &status, &b, &content_type, stream_random,
                              sharp_stream_worker(s));
    bool has_ct = sharp_headers_get_cstr(h, "content-type", &v);
    /* a content type the mapper's headers_to_add set is kept */
    bool custom_ct = has_ct != had_ct || (has_ct && (v.len != ct_before.len || memcmp(v.p, ct_before.data, v.len)));
    bool body_changed = b.len != blen || (blen && memcmp(b.data, body, blen) != 0);
    if (b.len) {
        char cl[24];
        snprintf(cl, sizeof cl, "%zu", b.len);
        sharp_headers_set_cstr(h, "content-length", cl);
        if (!has_ct || (body_changed && !custom_ct)) sharp_headers_set_cstr(h, "content-type", content_type);
    } else {
        sharp_headers_remove_cstr(h, "content-length");
        sharp_headers_remove_cstr(h, "content-type");
    }
    sharp_sbuf_free(&ct_before);
    if (s->grpc_known ? s->grpc_request : sharp_grpc_is_request(&s->req)) {
        /* Envoy's local reply to a gRPC request: a trailers-only response,
         * HTTP 200 with grpc-status (mapped from the HTTP status unless set)
         * and the body as grpc-message */
        if (!sharp_headers_get_cstr(h, "grpc-status", NULL)) {
            char gs[12];
            snprintf(gs, sizeof gs, "%u", sharp_grpc_status_from_http(status));
            sharp_headers_set_cstr(h, "grpc-status", gs);
        }
        sharp_headers_set_cstr(h, ":status", "200");
        sharp_headers_set_cstr(h, "content-type", "application/grpc");
        sharp_headers_remove_cstr(h, "content-length");
        if (b.len && !s->is_head) {
            sharp_sbuf_t m = {0};
            sharp_grpc_percent_encode(&m, b.data, b.len);
            sharp_headers_set(h, "grpc-message", 12, m.data, m.len);
            sharp_sbuf_free(&m);
        }
        sharp_sbuf_free(&b);
        enc_iterate_headers(s, from, h, true);
        return;
    }
    bool end = b.len == 0 || s->is_head;
    enc_iterate_headers(s, from, h, end);
    if (!end && !s->destroyed) enc_run_data(s, from, b.data, b.len, true);
    sharp_sbuf_free(&b);
}

void sharp_stream_respond_headers(sharp_filter_t *f, sharp_headers_t *h, const char *details)
{
    sharp_stream_respond(f, h, NULL, 0, details);
}

void sharp_stream_respond(sharp_filter_t *f, sharp_headers_t *h, const char *body, size_t n,
                          const char *details)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed || s->response_started || s->enc_stopped) return;
    sharp_debug(http, "[C%llu][S%llu] %s answers with a response of its own (%s)", s->conn_id,
                s->id, f->factory->name, details ? details : "-");
    if (details) s->info.response_code_details = keep_details(s, details);
    /* the request ends here, as after a local reply: its data goes no
     * further */
    s->local_reply = true;
    s->local_reply_code = sharp_headers_status(h);
    sharp_headers_t *resp = &s->resp;
    if (h != resp) {
        sharp_headers_clear(resp);
        sharp_headers_copy(resp, h);
    }
    /* a HEAD request's response has no body (the headers keep its length) */
    bool end = n == 0 || s->is_head;
    enc_iterate_headers(s, (int32_t)s->nfilters - 1, resp, end);
    if (!end && !s->destroyed) enc_run_data(s, (int32_t)s->nfilters - 1, body, n, true);
}

void sharp_stream_continue_encoding_body(sharp_filter_t *f, const char *body, size_t n)
{
    sharp_stream_t *s = f->stream;
    if (s->destroyed || !s->enc_stopped || s->enc_next != (int32_t)f->index) return;
    /* what the upstream sent after the headers (a 304's empty end) is
     * replaced by the filter's body */
    enc_drop_held(s);
    s->has_resp_trailers = false;
    bool end = n == 0 || s->is_head;
    s->enc_stopped = false;
    enc_iterate_headers(s, (int32_t)f->index - 1, &s->resp, end);
    if (!end && !s->destroyed) enc_run_data(s, (int32_t)f->index - 1, body, n, true);
}

sharp_headers_t *sharp_stream_held_response_headers(sharp_stream_t *s)
{
    return &s->resp;
}

bool sharp_stream_has_response_trailers(sharp_stream_t *s)
{
    return s->has_resp_trailers;
}

sharp_headers_t *sharp_stream_response_trailers(sharp_stream_t *s)
{
    return &s->resp_trailers;
}

void sharp_stream_read_disable(sharp_filter_t *f, bool disable)
{
    read_pause(f->stream, &f->read_paused, disable);
}

void sharp_stream_reset(sharp_stream_t *s, uint32_t response_flag)
{
    s->info.response_flags |= response_flag;
    sharp_codec_reset(s);
}

/* ------------------------------------------------------------------ */
/* connection-lifetime filter data                                      */

struct sharp_conn_data {
    struct sharp_conn_data *next;
    const void *key;
    void *data;
    void (*free_fn)(void *);
};

void *sharp_stream_connection_data(sharp_stream_t *s, const void *key)
{
    for (struct sharp_conn_data *d = s->conn ? s->conn->filter_data : NULL; d; d = d->next)
        if (d->key == key) return d->data;
    return NULL;
}

bool sharp_stream_set_connection_data(sharp_stream_t *s, const void *key, void *data, void (*free_fn)(void *))
{
    if (!s->conn) return false;
    struct sharp_conn_data *d = sharp_calloc(1, sizeof *d);
    *d = (struct sharp_conn_data){s->conn->filter_data, key, data, free_fn};
    s->conn->filter_data = d;
    return true;
}

void sharp_conn_data_free(sharp_conn_t *c)
{
    while (c->filter_data) {
        struct sharp_conn_data *d = c->filter_data;
        c->filter_data = d->next;
        if (d->free_fn) d->free_fn(d->data);
        free(d);
    }
}
