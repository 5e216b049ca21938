/* hds.c: the health discovery service client (hds.h). */
#include "hds.h"
#include "config/bootstrap.h"
#include "config/support.h"
#include "grpc/backoff.h"
#include "api_source.h"
#include "grpc/client.h"
#include "log.h"
#include "server.h"
#include "upstream/cluster.h"
#include "upstream/health_check.h"
#include "upstream/host.h"
#include "upstream/zone_lb.h"
#include "xds/xds.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/service/health/v3/hds.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

#define HDS_PATH "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck"
/* Envoy's RetryInitialDelayMilliseconds and RetryMaxDelayMilliseconds */
#define HDS_RETRY_BASE_MS 1000
#define HDS_RETRY_MAX_MS 30000
#define HDS_DEFAULT_INTERVAL_MS 1000
/* Envoy's HdsDelegate ClusterTimeoutSeconds and ClusterConnectionBufferLimitBytes */
#define HDS_CONNECT_TIMEOUT_S 1
#define HDS_BUFFER_LIMIT 32768
#define HDS_FIELD "hds_config"

typedef Envoy__Service__Health__V3__ClusterHealthCheck chc_t;
typedef Envoy__Service__Health__V3__HealthCheckSpecifier specifier_t;

/* One locality group of a cluster: the specifier's LocalityEndpoints, whose
 * hosts are c->hosts[first .. first + n) (the order the cluster was built
 * in). */
typedef struct {
    uint32_t first, n;
} group_t;

/* An HDS cluster (Envoy's HdsCluster). */
typedef struct {
    char *name;
    uint8_t *packed; /* its ClusterHealthCheck as received: an equal one keeps the cluster */
    size_t len;
    uint8_t *checks; /* its health_checks as received: equal ones keep the sessions' counts */
    size_t checks_len;
    bool reused;        /* (during an update) the previous set's, unchanged */
    sharp_cluster_t *c; /* a reference */
    group_t *groups;
    uint32_t ngroups;
} hds_cluster_t;

struct sharp_hds {
    sharp_server_t *srv;
    sharp_grpc_target_t target; /* the management server's cluster */
    sharp_grpc_client_t *client;
    sharp_grpc_stream_t *stream;
    uv_timer_t retry_timer, response_timer;
    bool started, stopped;
    sharp_backoff_t backoff;
    uint64_t rng;
    Envoy__Config__Core__V3__Node node; /* a shallow copy of sharp_xds_node's */
    /* the last specifier applied (Envoy's specifier_hash_), NULL after a
     * stream ends */
    uint8_t *spec;
    size_t spec_len;
    uint64_t interval_ms; /* Envoy's server_response_ms_: 0 until a specifier came on this stream */
    hds_cluster_t *clusters;
    uint32_t nclusters;
    uint32_t next_index;
    sharp_health_checker_t *checker;
    struct {
        sharp_stat_id_t requests, responses, errors, updates;
    } st;
};

static void count(sharp_hds_t *h, sharp_stat_id_t id)
{
    sharp_counter_inc(sharp_stats_shard(h->srv->stats, 0), id);
}

/* ---- configuration (as the load reporter's: Envoy's checks of a gRPC
 * ApiConfigSource) ---- */

sharp_hds_t *sharp_hds_create(sharp_server_t *srv, const ProtobufCMessage *pb,
                              const sharp_snapshot_t *snap, char *err, size_t errlen)
{
    sharp_grpc_target_t target;
    if (sharp_grpc_api_source_target((const Envoy__Config__Core__V3__ApiConfigSource *)pb, HDS_FIELD, snap, &target, err,
                                     errlen) < 0)
        return NULL;
    sharp_hds_t *h = sharp_calloc(1, sizeof *h);
    h->srv = srv;
    h->target = target;
    sharp_stats_t *s = srv->stats;
    h->st.requests = sharp_stats_counter(s, "hds_delegate.requests");
    h->st.responses = sharp_stats_counter(s, "hds_delegate.responses");
    h->st.errors = sharp_stats_counter(s, "hds_delegate.errors");
    h->st.updates = sharp_stats_counter(s, "hds_delegate.updates");
    return h;
}

/* ---- HDS clusters ---- */

static void cluster_release(sharp_hds_t *h, hds_cluster_t *hc)
{
    if (hc->c) {
        sharp_health_checker_remove_cluster(h->checker, hc->c);
        sharp_cluster_unref(hc->c);
    }
    free(hc->name);
    free(hc->packed);
    free(hc->checks);
    free(hc->groups);
}

/* Envoy's createClusterConfig and HdsCluster: a STATIC cluster of the
 * ClusterHealthCheck's endpoints and health checks. NULL with the reason. */
static sharp_cluster_t *cluster_build(sharp_hds_t *h, const chc_t *chc, size_t i, group_t **groups,
                                      uint32_t *ngroups, char *err, size_t errlen)
{
    Envoy__Config__Cluster__V3__Cluster pb;
    envoy__config__cluster__v3__cluster__init(&pb);
    pb.name = chc->cluster_name;
    Google__Protobuf__Duration ct;
    google__protobuf__duration__init(&ct);
    ct.seconds = HDS_CONNECT_TIMEOUT_S;
    pb.connect_timeout = &ct;
    Google__Protobuf__UInt32Value limit;
    google__protobuf__uint32_value__init(&limit);
    limit.value = HDS_BUFFER_LIMIT;
    pb.per_connection_buffer_limit_bytes = &limit;
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment la;
    envoy__config__endpoint__v3__cluster_load_assignment__init(&la);
    la.cluster_name = chc->cluster_name;
    size_t nle = chc->n_locality_endpoints, nep = 0;
    for (size_t k = 0; k < nle; k++)
        nep += chc->locality_endpoints[k]->n_endpoints;
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints *lle =
        sharp_calloc(nle ? nle : 1, sizeof *lle);
    Envoy__Config__Endpoint__V3__LocalityLbEndpoints **llep =
        sharp_calloc(nle ? nle : 1, sizeof *llep);
    Envoy__Config__Endpoint__V3__LbEndpoint *lbe = sharp_calloc(nep ? nep : 1, sizeof *lbe);
    Envoy__Config__Endpoint__V3__LbEndpoint **lbep = sharp_calloc(nep ? nep : 1, sizeof *lbep);
    group_t *g = sharp_calloc(nle ? nle : 1, sizeof *g);
    size_t e = 0;
    for (size_t k = 0; k < nle; k++) {
        const Envoy__Service__Health__V3__LocalityEndpoints *le = chc->locality_endpoints[k];
        envoy__config__endpoint__v3__locality_lb_endpoints__init(&lle[k]);
        lle[k].locality = le->locality;
        lle[k].lb_endpoints = &lbep[e];
        g[k].first = (uint32_t)e;
        for (size_t j = 0; j < le->n_endpoints; j++) {
            envoy__config__endpoint__v3__lb_endpoint__init(&lbe[e]);
            lbe[e].host_identifier_case =
                ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
            lbe[e].endpoint = le->endpoints[j];
            lbep[e] = &lbe[e];
            e++;
        }
        lle[k].n_lb_endpoints = le->n_endpoints;
        g[k].n = (uint32_t)le->n_endpoints;
        llep[k] = &lle[k];
    }
    la.endpoints = llep;
    la.n_endpoints = nle;
    pb.load_assignment = &la;
    pb.health_checks = chc->health_checks;
    pb.n_health_checks = chc->n_health_checks;
    /* Envoy: gRPC health checking needs HTTP/2 on the cluster */
    Envoy__Config__Core__V3__Http2ProtocolOptions h2;
    envoy__config__core__v3__http2_protocol_options__init(&h2);
    for (size_t k = 0; k < chc->n_health_checks; k++)
        if (chc->health_checks[k]->health_checker_case ==
            ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK)
            pb.http2_protocol_options = &h2;
    char where[64];
    snprintf(where, sizeof where, "cluster_health_checks[%zu]", i);
    sharp_cluster_t *c =
        sharp_config_build_cluster(h->srv, &pb.base, h->next_index++, "hds", where, err, errlen);
    free(lle);
    free(llep);
    free(lbe);
    free(lbep);
    if (!c) {
        free(g);
        return NULL;
    }
    /* upstream_bind_config: the checks' source address (a numeric IP, as
     * Envoy's resolveProtoSocketAddress) */
    const Envoy__Config__Core__V3__BindConfig *bc = chc->upstream_bind_config;
    if (bc && bc->source_address) {
        const Envoy__Config__Core__V3__SocketAddress *sa = bc->source_address;
        struct sockaddr_in *s4 = (struct sockaddr_in *)&c->bind_addr;
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->bind_addr;
        if (inet_pton(AF_INET, sa->address, &s4->sin_addr) == 1) {
            s4->sin_family = AF_INET;
            s4->sin_port = htons((uint16_t)sa->port_value);
            c->bind_addrlen = sizeof *s4;
        } else if (inet_pton(AF_INET6, sa->address, &s6->sin6_addr) == 1) {
            s6->sin6_family = AF_INET6;
            s6->sin6_port = htons((uint16_t)sa->port_value);
            c->bind_addrlen = sizeof *s6;
        } else {
            snprintf(err, errlen,
                     "cluster_health_checks[%zu].upstream_bind_config.source_address.address: "
                     "malformed IP address: %s",
                     i, sa->address);
            sharp_cluster_unref(c);
            free(g);
            return NULL;
        }
    }
    /* Envoy's HdsCluster::initialize: every host failed until a check
     * passes, checked or not */
    for (uint32_t k = 0; k < c->nhosts; k++)
        sharp_host_health_set(c->hosts[k], SHARP_HOST_FAILED_ACTIVE_HC);
    *groups = g;
    *ngroups = (uint32_t)nle;
    return c;
}

/* ---- reports (Envoy's sendResponse) ---- */


static void on_response_timer(uv_timer_t *t);

static void arm_response_timer(sharp_hds_t *h)
{
    uv_timer_start(&h->response_timer, on_response_timer, h->interval_ms, 0);
}

static void send_response(sharp_hds_t *h)
{
    sharp_arena_t a = {0};
    Envoy__Service__Health__V3__EndpointHealthResponse r =
        ENVOY__SERVICE__HEALTH__V3__ENDPOINT_HEALTH_RESPONSE__INIT;
    size_t nhosts = 0;
    for (uint32_t i = 0; i < h->nclusters; i++)
        nhosts += h->clusters[i].c->nhosts;
    r.cluster_endpoints_health =
        sharp_arena_alloc(&a, (h->nclusters ? h->nclusters : 1) * sizeof *r.cluster_endpoints_health);
    r.endpoints_health = sharp_arena_alloc(&a, (nhosts ? nhosts : 1) * sizeof *r.endpoints_health);
    for (uint32_t i = 0; i < h->nclusters; i++) {
        const hds_cluster_t *hc = &h->clusters[i];
        Envoy__Service__Health__V3__ClusterEndpointsHealth *ceh = sharp_arena_alloc(&a, sizeof *ceh);
        envoy__service__health__v3__cluster_endpoints_health__init(ceh);
        ceh->cluster_name = hc->name;
        ceh->locality_endpoints_health =
            sharp_arena_alloc(&a, (hc->ngroups ? hc->ngroups : 1) * sizeof *ceh->locality_endpoints_health);
        for (uint32_t k = 0; k < hc->ngroups; k++) {
            const group_t *g = &hc->groups[k];
            if (!g->n) continue; /* Envoy names a group by its first host */
            Envoy__Service__Health__V3__LocalityEndpointsHealth *leh = sharp_arena_alloc(&a, sizeof *leh);
            envoy__service__health__v3__locality_endpoints_health__init(leh);
            Envoy__Config__Core__V3__Locality *loc = sharp_arena_alloc(&a, sizeof *loc);
            envoy__config__core__v3__locality__init(loc);
            const char *region, *zone, *sub_zone;
            sharp_locality_get(hc->c->hosts[g->first]->locality, &region, &zone, &sub_zone);
            loc->region = (char *)region;
            loc->zone = (char *)zone;
            loc->sub_zone = (char *)sub_zone;
            leh->locality = loc;
            leh->endpoints_health = sharp_arena_alloc(&a, g->n * sizeof *leh->endpoints_health);
            for (uint32_t j = 0; j < g->n; j++) {
                const sharp_host_t *host = hc->c->hosts[g->first + j];
                Envoy__Service__Health__V3__EndpointHealth *eh = sharp_arena_alloc(&a, sizeof *eh);
                envoy__service__health__v3__endpoint_health__init(eh);
                Envoy__Config__Endpoint__V3__Endpoint *ep = sharp_arena_alloc(&a, sizeof *ep);
                envoy__config__endpoint__v3__endpoint__init(ep);
                ep->address = sharp_pb_host_address(&a, host);
                eh->endpoint = ep;
                /* Envoy's coarseHealth: any failure flag makes it unhealthy */
                if (sharp_host_healthy(host))
                    eh->health_status = ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY;
                else if (host->hc_timeout)
                    eh->health_status = ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__TIMEOUT;
                else
                    eh->health_status = ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNHEALTHY;
                leh->endpoints_health[leh->n_endpoints_health++] = eh;
                r.endpoints_health[r.n_endpoints_health++] = eh;
            }
            ceh->locality_endpoints_health[ceh->n_locality_endpoints_health++] = leh;
        }
        r.cluster_endpoints_health[r.n_cluster_endpoints_health++] = ceh;
    }
    Envoy__Service__Health__V3__HealthCheckRequestOrEndpointHealthResponse m =
        ENVOY__SERVICE__HEALTH__V3__HEALTH_CHECK_REQUEST_OR_ENDPOINT_HEALTH_RESPONSE__INIT;
    m.request_type_case =
        ENVOY__SERVICE__HEALTH__V3__HEALTH_CHECK_REQUEST_OR_ENDPOINT_HEALTH_RESPONSE__REQUEST_TYPE_ENDPOINT_HEALTH_RESPONSE;
    m.endpoint_health_response = &r;
    sharp_debug(upstream, "hds: sending the health of %zu endpoints of %u clusters", nhosts,
                h->nclusters);
    if (sharp_grpc_stream_send(h->stream, &m.base) == SHARP_GRPC_SEND_REFUSED)
        sharp_debug(upstream,
                    "hds: the stream to cluster '%s' cannot take the report (%zu bytes queued)",
                    h->target.cluster, sharp_grpc_stream_queued(h->stream));
    sharp_arena_free(&a);
    count(h, h->st.responses);
    arm_response_timer(h);
}

static void on_response_timer(uv_timer_t *t)
{
    sharp_hds_t *h = t->data;
    if (h->stream) send_response(h);
}

/* ---- specifiers (Envoy's onReceiveMessage and processMessage) ---- */

/* Names sorted with their position, so that a specifier naming many
 * clusters costs n log n. */
typedef struct {
    const char *name;
    uint32_t i;
} named_t;

static int cmp_named(const void *a, const void *b)
{
    const named_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

static hds_cluster_t *find_old(sharp_hds_t *h, const named_t *idx, const char *name)
{
    size_t lo = 0, hi = h->nclusters;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(idx[mid].name, name);
        if (!c) return &h->clusters[idx[mid].i];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint8_t *pack_checks(const chc_t *chc, size_t *len)
{
    size_t n = 0;
    for (size_t k = 0; k < chc->n_health_checks; k++)
        n += protobuf_c_message_get_packed_size(&chc->health_checks[k]->base) + 1;
    uint8_t *p = sharp_realloc(NULL, n ? n : 1);
    size_t off = 0;
    for (size_t k = 0; k < chc->n_health_checks; k++) {
        off += protobuf_c_message_pack(&chc->health_checks[k]->base, p + off);
        p[off++] = 0; /* a separator: [a][b] differs from [ab] */
    }
    *len = off;
    return p;
}

/* Builds the new set; 0, or -1 with the reason (nothing changed then). */
static int apply(sharp_hds_t *h, const specifier_t *sp, char *err, size_t errlen)
{
    size_t nspec = sp->n_cluster_health_checks;
    hds_cluster_t *next = sharp_calloc(nspec ? nspec : 1, sizeof *next);
    uint32_t nnext = 0;
    bool *kept = sharp_calloc(h->nclusters ? h->nclusters : 1, sizeof *kept);
    named_t *old_idx = sharp_calloc(h->nclusters ? h->nclusters : 1, sizeof *old_idx);
    for (uint32_t i = 0; i < h->nclusters; i++)
        old_idx[i] = (named_t){h->clusters[i].name, i};
    qsort(old_idx, h->nclusters, sizeof *old_idx, cmp_named);
    /* a name given again later in the specifier is skipped (Envoy) */
    named_t *spec_idx = sharp_calloc(nspec ? nspec : 1, sizeof *spec_idx);
    bool *dup = sharp_calloc(nspec ? nspec : 1, sizeof *dup);
    for (size_t i = 0; i < nspec; i++)
        spec_idx[i] = (named_t){sp->cluster_health_checks[i]->cluster_name, (uint32_t)i};
    qsort(spec_idx, nspec, sizeof *spec_idx, cmp_named);
    for (size_t i = 1; i < nspec; i++)
        if (!strcmp(spec_idx[i].name, spec_idx[i - 1].name)) dup[spec_idx[i].i] = true;
    free(spec_idx);
    for (size_t i = 0; i < nspec; i++) {
        const chc_t *chc = sp->cluster_health_checks[i];
        if (!chc->cluster_name[0]) {
            /* Envoy builds a cluster without a name again at every update;
             * SHARP's clusters and their stats need one */
            snprintf(
                err, errlen,
                "cluster_health_checks[%zu].cluster_name: SHARP needs a name for every HDS cluster",
                i);
            goto bad;
        }
        if (dup[i]) {
            sharp_log_warn("hds: an HDS cluster named '%s' has already been added, not using",
                           chc->cluster_name);
            continue;
        }
        size_t len = protobuf_c_message_get_packed_size(&chc->base);
        uint8_t *packed = sharp_realloc(NULL, len ? len : 1);
        protobuf_c_message_pack(&chc->base, packed);
        hds_cluster_t *old = find_old(h, old_idx, chc->cluster_name);
        if (old && old->len == len && !memcmp(old->packed, packed, len)) {
            /* unchanged: the same cluster, hosts and health */
            free(packed);
            kept[old - h->clusters] = true;
            next[nnext] = *old;
            next[nnext++].reused = true;
            continue;
        }
        hds_cluster_t *n = &next[nnext];
        n->c = cluster_build(h, chc, i, &n->groups, &n->ngroups, err, errlen);
        if (!n->c) {
            free(packed);
            goto bad;
        }
        n->name = sharp_strdup(chc->cluster_name);
        n->packed = packed;
        n->len = len;
        n->checks = pack_checks(chc, &n->checks_len);
        nnext++;
    }
    /* new and changed clusters join the checker; a changed one's hosts keep
     * the health they had in its previous version (Envoy's
     * HdsCluster::update), which then stops being checked, as do the
     * clusters that left */
    for (uint32_t i = 0; i < nnext; i++) {
        if (next[i].reused) continue;
        const hds_cluster_t *old = find_old(h, old_idx, next[i].name);
        bool same = old && old->checks_len == next[i].checks_len &&
                    !memcmp(old->checks, next[i].checks, old->checks_len);
        sharp_health_checker_add_cluster_from(&h->checker, h->srv->loop, h->srv->stats, next[i].c,
                                              old ? old->c : NULL, same);
    }
    for (uint32_t i = 0; i < h->nclusters; i++)
        if (!kept[i]) cluster_release(h, &h->clusters[i]);
    for (uint32_t i = 0; i < nnext; i++)
        next[i].reused = false;
    free(kept);
    free(dup);
    free(old_idx);
    free(h->clusters);
    h->clusters = next;
    h->nclusters = nnext;
    return 0;
bad:
    for (uint32_t i = 0; i < nnext; i++) {
        if (next[i].reused) continue;
        sharp_cluster_unref(next[i].c);
        free(next[i].name);
        free(next[i].packed);
        free(next[i].checks);
        free(next[i].groups);
    }
    free(next);
    free(kept);
    free(dup);
    free(old_idx);
    return -1;
}

static void on_message(void *arg, const ProtobufCMessage *m)
{
    sharp_hds_t *h = arg;
    const specifier_t *sp = (const void *)m;
    count(h, h->st.requests);
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *packed = sharp_realloc(NULL, len ? len : 1);
    protobuf_c_message_pack(m, packed);
    if (h->spec && h->spec_len == len && !memcmp(h->spec, packed, len)) {
        sharp_debug(upstream, "hds: new health check specifier is unchanged, no action taken");
        free(packed);
        return;
    }
    char err[1024];
    sharp_config_error_t e = {{0}};
    bool invalid = false;
    if (sharp_config_check_support_kind(m, NULL, "", &e, &invalid) < 0) {
        snprintf(err, sizeof err, "%s", e.msg);
        goto bad;
    }
    /* Envoy's PROTOBUF_GET_MS_OR_DEFAULT (1 s); a Duration out of
     * google.protobuf.Duration's range fails its conversion */
    int64_t ms = HDS_DEFAULT_INTERVAL_MS;
    if (sp->interval) {
        if (sp->interval->seconds < 0 || sp->interval->nanos < 0 ||
            sp->interval->seconds > 315576000000LL || sp->interval->nanos > 999999999) {
            snprintf(err, sizeof err, "interval: not a valid non-negative duration");
            goto bad;
        }
        ms = sp->interval->seconds * 1000 + sp->interval->nanos / 1000000;
    }
    if (apply(h, sp, err, sizeof err) < 0) goto bad;
    count(h, h->st.updates);
    free(h->spec);
    h->spec = packed;
    h->spec_len = len;
    /* a zero interval would send without pause: at least 1 ms */
    uint64_t interval = ms > 0 ? (uint64_t)ms : 1;
    sharp_debug(upstream, "hds: %u HDS clusters, reports every %llu ms", h->nclusters,
                (unsigned long long)interval);
    if (h->interval_ms != interval) {
        h->interval_ms = interval;
        arm_response_timer(h);
    }
    return;
bad:
    free(packed);
    count(h, h->st.errors);
    sharp_log_warn("hds: unable to validate health check specifier: %s", err);
}

/* ---- the stream ---- */

static void on_retry(uv_timer_t *t);

static void handle_failure(sharp_hds_t *h)
{
    count(h, h->st.errors);
    uint64_t ms = sharp_backoff_next(&h->backoff);
    sharp_log_warn("HdsDelegate stream/connection failure, will retry in %llu ms.",
                   (unsigned long long)ms);
    uv_timer_start(&h->retry_timer, on_retry, ms, 0);
}

static void on_close(void *arg, int status, const char *message, const sharp_headers_t *trailers)
{
    (void)trailers;
    sharp_hds_t *h = arg;
    sharp_log_warn("%s gRPC config stream closed: %d, %s", &HDS_PATH[1], status, message);
    h->stream = NULL;
    uv_timer_stop(&h->response_timer);
    h->interval_ms = 0;
    free(h->spec);
    h->spec = NULL;
    h->spec_len = 0;
    handle_failure(h);
}

static const sharp_grpc_stream_callbacks_t hds_callbacks = {
    .on_message = on_message,
    .on_close = on_close,
};

static void establish(sharp_hds_t *h)
{
    sharp_debug(upstream, "hds: establishing a new gRPC bidi stream for %s", &HDS_PATH[1]);
    h->stream = sharp_grpc_stream_start(
        h->client, HDS_PATH, &envoy__service__health__v3__health_check_specifier__descriptor, 0,
        NULL, &hds_callbacks, h);
    if (!h->stream) {
        sharp_log_warn("hds: unable to establish new stream");
        handle_failure(h);
        return;
    }
    Envoy__Service__Health__V3__Capability cap = ENVOY__SERVICE__HEALTH__V3__CAPABILITY__INIT;
    Envoy__Service__Health__V3__Capability__Protocol protocols[] = {
        ENVOY__SERVICE__HEALTH__V3__CAPABILITY__PROTOCOL__HTTP,
        ENVOY__SERVICE__HEALTH__V3__CAPABILITY__PROTOCOL__TCP,
    };
    cap.health_check_protocols = protocols;
    cap.n_health_check_protocols = 2;
    Envoy__Service__Health__V3__HealthCheckRequest req =
        ENVOY__SERVICE__HEALTH__V3__HEALTH_CHECK_REQUEST__INIT;
    req.node = &h->node;
    req.capability = &cap;
    Envoy__Service__Health__V3__HealthCheckRequestOrEndpointHealthResponse m =
        ENVOY__SERVICE__HEALTH__V3__HEALTH_CHECK_REQUEST_OR_ENDPOINT_HEALTH_RESPONSE__INIT;
    m.request_type_case =
        ENVOY__SERVICE__HEALTH__V3__HEALTH_CHECK_REQUEST_OR_ENDPOINT_HEALTH_RESPONSE__REQUEST_TYPE_HEALTH_CHECK_REQUEST;
    m.health_check_request = &req;
    sharp_grpc_stream_send(h->stream, &m.base);
    count(h, h->st.responses);
    sharp_backoff_reset(&h->backoff);
}

static void on_retry(uv_timer_t *t)
{
    sharp_hds_t *h = t->data;
    if (h->stopped) return;
    establish(h);
}

static uint64_t hds_random(void *arg)
{
    return sharp_xorshift64s(arg);
}

void sharp_hds_start(sharp_hds_t *h)
{
    if (!h || h->started || h->stopped) return;
    sharp_server_t *s = h->srv;
    h->started = true;
    uv_timer_init(s->loop, &h->retry_timer);
    uv_timer_init(s->loop, &h->response_timer);
    h->retry_timer.data = h->response_timer.data = h;
    h->rng = sharp_now_ns() | 1;
    sharp_backoff_init(&h->backoff, HDS_RETRY_BASE_MS, HDS_RETRY_MAX_MS, hds_random, &h->rng);
    const Envoy__Config__Core__V3__Node *n = (const void *)sharp_xds_node(s->xds);
    if (n)
        h->node = *n;
    else
        envoy__config__core__v3__node__init(&h->node);
    char err[512];
    h->client = sharp_grpc_target_client(&h->target, s, err, sizeof err);
    if (!h->client) {
        /* checked at load */
        sharp_log_error("hds: %s", err);
        return;
    }
    establish(h);
}

void sharp_hds_stop(sharp_hds_t *h)
{
    if (!h || h->stopped) return;
    h->stopped = true;
    if (h->stream) sharp_grpc_stream_cancel(h->stream);
    h->stream = NULL;
    sharp_grpc_client_destroy(h->client);
    h->client = NULL;
    /* the checker frees itself once its handles are closed */
    sharp_health_checker_stop(h->checker);
    h->checker = NULL;
    if (h->started) {
        uv_close((uv_handle_t *)&h->retry_timer, NULL);
        uv_close((uv_handle_t *)&h->response_timer, NULL);
    }
}

void sharp_hds_free(sharp_hds_t *h)
{
    if (!h) return;
    sharp_hds_stop(h);
    for (uint32_t i = 0; i < h->nclusters; i++)
        cluster_release(h, &h->clusters[i]);
    free(h->clusters);
    free(h->spec);
    sharp_grpc_target_free(&h->target);
    free(h);
}
