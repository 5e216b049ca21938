/* mux.c: SHARP's gRPC xDS client (see mux.h).
 *
 * State per type (tstate_t): the live watches, what the next request says
 * (state of the world: the version applied, the last response's nonce, the
 * NACK detail; incremental: the names to subscribe and unsubscribe and the
 * ACK or NACK due), and the resources the mux has (res_t: name, packed
 * bytes, version). A type is queued when it has something to say; the
 * queue is drained in order on a new stream (every subscribed type, Envoy's
 * RTDS, CDS, EDS, LDS, RDS order), after each response (its ACK or NACK, and the
 * subscription changes the watches made while applying it) and from the
 * next loop turn after a watch is added or removed, so the EDS names of
 * many new clusters go out in one request.
 *
 * Lifetimes: a watch's memory goes in its timer's close callback, so a
 * watch removed while a response is being dispatched stays readable (the
 * dispatch works on a copy of the watch list and skips dead ones); the mux
 * freed from inside its own dispatch is freed when the dispatch returns. */
#include "xds/mux.h"

#include "config/mapper.h"
#include "config/support.h"
#include "grpc/server.h" /* status codes */
#include "log.h"
#include "sbuf.h"

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "envoy/service/runtime/v3/rtds.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"

#include <stdio.h>
#include <string.h>

#define TYPE_PREFIX "type.googleapis.com/"
#define RESOURCE_WRAPPER "envoy.service.discovery.v3.Resource"
/* Envoy's truncateGrpcStatusMessage: gRPC carries the message in trailers */
#define MAX_STATUS_MESSAGE 4096

typedef Envoy__Service__Discovery__V3__DiscoveryRequest sotw_req_t;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse sotw_resp_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest delta_req_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryResponse delta_resp_t;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry version_entry_t;

/* ---- the types ---- */

static const char *cluster_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Config__Cluster__V3__Cluster *)m)->name;
}
static const char *cla_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)m)->cluster_name;
}
static const char *listener_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Config__Listener__V3__Listener *)m)->name;
}
static const char *route_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Config__Route__V3__RouteConfiguration *)m)->name;
}

const sharp_xds_type_t sharp_xds_type_cds = {
    TYPE_PREFIX "envoy.config.cluster.v3.Cluster", &envoy__config__cluster__v3__cluster__descriptor, "cluster", "cds",
    "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
    "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters", 1, true, cluster_name, false};
const sharp_xds_type_t sharp_xds_type_eds = {
    TYPE_PREFIX "envoy.config.endpoint.v3.ClusterLoadAssignment",
    &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "ClusterLoadAssignment", "eds",
    "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
    "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints", 2, false, cla_name, true};
const sharp_xds_type_t sharp_xds_type_lds = {
    TYPE_PREFIX "envoy.config.listener.v3.Listener", &envoy__config__listener__v3__listener__descriptor, "listener",
    "lds", "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
    "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners", 3, true, listener_name, false};
const sharp_xds_type_t sharp_xds_type_rds = {
    TYPE_PREFIX "envoy.config.route.v3.RouteConfiguration", &envoy__config__route__v3__route_configuration__descriptor,
    "RouteConfiguration", "rds", "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
    "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes", 4, false, route_name, false};

static const char *secret_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Extensions__TransportSockets__Tls__V3__Secret *)m)->name;
}
/* SDS: named secrets, after the resources that name them */
const sharp_xds_type_t sharp_xds_type_sds = {
    TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.Secret",
    &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, "secret", "sds",
    "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
    "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets", 5, false, secret_name,
    /* Envoy's SdsApi ACKs and ignores an incremental removal of its
     * secret (or its absence), and readies its init target */
    true};

static const char *runtime_name(const ProtobufCMessage *m)
{
    return ((const Envoy__Service__Runtime__V3__Runtime *)m)->name;
}
/* RTDS: named runtime layers, first on a new stream (Envoy starts them
 * before CDS). An incremental removal (or absence) ends the initial fetch:
 * Envoy's RtdsSubscription clears the layer and readies its init target. */
const sharp_xds_type_t sharp_xds_type_rtds = {
    TYPE_PREFIX "envoy.service.runtime.v3.Runtime", &envoy__service__runtime__v3__runtime__descriptor, "Runtime",
    "rtds", "/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime",
    "/envoy.service.runtime.v3.RuntimeDiscoveryService/DeltaRuntime", 0, false, runtime_name, true};

static const sharp_xds_type_t *const all_types[SHARP_XDS_NTYPES] = {
    &sharp_xds_type_rtds, &sharp_xds_type_cds, &sharp_xds_type_eds, &sharp_xds_type_lds, &sharp_xds_type_rds,
    &sharp_xds_type_sds};

/* ---- name sets ---- */

typedef struct names {
    char **v;
    size_t n;
} names_t;

static ssize_t names_find(const names_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->v[i], name)) return (ssize_t)i;
    return -1;
}

static void names_add(names_t *s, const char *name)
{
    if (names_find(s, name) >= 0) return;
    s->v = sharp_realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = sharp_strdup(name);
}

static bool names_del(names_t *s, const char *name)
{
    ssize_t i = names_find(s, name);
    if (i < 0) return false;
    free(s->v[i]);
    s->v[i] = s->v[--s->n];
    return true;
}

static void names_clear(names_t *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

/* ---- state ---- */

typedef struct res {
    char *name;
    uint8_t *bytes; /* NULL: subscribed, not received (delta: no initial version) */
    size_t len;
    char *version;
    bool seen; /* scratch: named by the response being applied */
} res_t;

typedef struct tstate {
    const sharp_xds_type_t *t;
    sharp_xds_mux_watch_t **w; /* live watches */
    size_t nw;
    bool subscribed; /* has had a watch: a state-of-the-world stream keeps asking for it */
    bool queued;
    /* state of the world */
    char *version_info; /* of the last accepted response */
    char *nonce;        /* of the last response on this stream */
    /* incremental */
    bool sent_on_stream;
    names_t added, removed; /* subscription changes not sent yet */
    char *ack_nonce;
    /* both: names some watch wants, the NACK detail for the next request */
    names_t requested;
    char *error;
    res_t *res;
    size_t nres;
    /* name -> index + 1 into res, open addressing (a push of 10,000
     * clusters looks each one up) */
    uint32_t *rix;
    size_t rixcap;
} tstate_t;

struct sharp_xds_mux_watch {
    sharp_xds_mux_t *m;
    tstate_t *ts;
    char *name;
    sharp_xds_mux_watcher_t cb;
    uint64_t fetch_timeout_ms;
    uv_timer_t timer;
    bool timer_init, timer_closed;
    bool first_done; /* the initial fetch is over (update, rejection, does-not-exist or timeout) */
    bool dead;
};

struct sharp_xds_mux {
    char *name;
    const sharp_xds_type_t *only;
    bool delta, node_first_only;
    uint64_t backoff_base_ms, backoff_max_ms;
    bool rate_limited;
    double max_tokens, fill_rate, tokens;
    uint64_t tokens_at_ms;
    const ProtobufCMessage *node;
    sharp_stats_t *stats;
    struct {
        sharp_stat_id_t connected_state, rate_limit_enforced, pending_requests;
    } st;
    uv_loop_t *loop;
    sharp_grpc_client_t *client;
    sharp_grpc_retrying_stream_t *rs;
    bool open;      /* a stream is up (or being set up) */
    bool node_sent; /* on this stream */
    bool healthy;   /* a response came since the last close: the next close is worth a warning */
    tstate_t ts[SHARP_XDS_NTYPES];
    unsigned queue[SHARP_XDS_NTYPES];
    unsigned nqueue;
    uv_timer_t flush_timer;
    bool flush_timer_init, flush_timer_closed;
    bool mem_free_pending; /* the memory goes when the flush timer is closed */
    unsigned busy;     /* dispatch depth */
    bool free_pending; /* freed during a dispatch */
    bool stopped;
};

static sharp_stats_shard_t *shard0(sharp_xds_mux_t *m)
{
    return sharp_stats_shard(m->stats, 0);
}

static const char *method_name(const sharp_xds_mux_t *m)
{
    if (!m->only) return m->delta ? "DeltaAggregatedResources" : "StreamAggregatedResources";
    return strrchr(m->delta ? m->only->delta_path : m->only->sotw_path, '/') + 1;
}

char *sharp_xds_truncate_status_message(const char *msg)
{
    size_t n = strlen(msg);
    if (n <= MAX_STATUS_MESSAGE) return sharp_strdup(msg);
    static const char tail[] = "...(truncated)";
    char *out = sharp_calloc(1, MAX_STATUS_MESSAGE + sizeof tail);
    memcpy(out, msg, MAX_STATUS_MESSAGE);
    memcpy(out + MAX_STATUS_MESSAGE, tail, sizeof tail);
    return out;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void rix_rebuild(tstate_t *ts)
{
    size_t cap = 64;
    while (cap < 2 * ts->nres + 2) cap *= 2;
    free(ts->rix);
    ts->rix = sharp_calloc(cap, sizeof *ts->rix);
    ts->rixcap = cap;
    for (size_t i = 0; i < ts->nres; i++) {
        size_t j = (size_t)name_hash(ts->res[i].name) & (cap - 1);
        while (ts->rix[j]) j = (j + 1) & (cap - 1);
        ts->rix[j] = (uint32_t)i + 1;
    }
}

/* The slot of `name` in the index, or of the empty slot where it would go. */
static size_t rix_slot(const tstate_t *ts, const char *name)
{
    size_t j = (size_t)name_hash(name) & (ts->rixcap - 1);
    while (ts->rix[j] && strcmp(ts->res[ts->rix[j] - 1].name, name) != 0) j = (j + 1) & (ts->rixcap - 1);
    return j;
}

static res_t *res_find(tstate_t *ts, const char *name)
{
    if (!ts->nres) return NULL;
    uint32_t at = ts->rix[rix_slot(ts, name)];
    return at ? &ts->res[at - 1] : NULL;
}

static void res_clear(res_t *r)
{
    free(r->bytes);
    free(r->version);
    r->bytes = NULL;
    r->version = NULL;
    r->len = 0;
}

static void res_set(tstate_t *ts, const char *name, const uint8_t *bytes, size_t len, const char *version)
{
    res_t *r = res_find(ts, name);
    if (!r) {
        ts->res = sharp_realloc(ts->res, (ts->nres + 1) * sizeof *ts->res);
        r = &ts->res[ts->nres++];
        memset(r, 0, sizeof *r);
        r->name = sharp_strdup(name);
        if (2 * ts->nres + 2 > ts->rixcap) rix_rebuild(ts);
        else ts->rix[rix_slot(ts, name)] = (uint32_t)ts->nres;
    }
    res_clear(r);
    r->bytes = sharp_realloc(NULL, len ? len : 1);
    if (len) memcpy(r->bytes, bytes, len);
    r->len = len;
    r->version = sharp_strdup(version ? version : "");
}

static void res_del(tstate_t *ts, const char *name)
{
    if (!ts->nres) return;
    size_t j = rix_slot(ts, name);
    if (!ts->rix[j]) return;
    size_t at = ts->rix[j] - 1, last = ts->nres - 1;
    /* the slot empties; the entries after it in its run move back where a
     * lookup still finds them (deletion in linear probing) */
    ts->rix[j] = 0;
    for (size_t k = (j + 1) & (ts->rixcap - 1); ts->rix[k]; k = (k + 1) & (ts->rixcap - 1)) {
        size_t home = (size_t)name_hash(ts->res[ts->rix[k] - 1].name) & (ts->rixcap - 1);
        /* stays unless its home is cyclically outside (j, k] */
        bool move = j <= k ? (home <= j || home > k) : (home <= j && home > k);
        if (move) {
            ts->rix[j] = ts->rix[k];
            ts->rix[k] = 0;
            j = k;
        }
    }
    res_t *r = &ts->res[at];
    res_clear(r);
    free(r->name);
    if (at != last) {
        /* the last entry takes the freed place: its index entry follows */
        ts->res[at] = ts->res[last];
        ts->rix[rix_slot(ts, ts->res[at].name)] = (uint32_t)at + 1;
    }
    ts->nres--;
}

/* ---- sending ---- */

static void enqueue(sharp_xds_mux_t *m, tstate_t *ts)
{
    if (ts->queued) return;
    ts->queued = true;
    m->queue[m->nqueue++] = (unsigned)(ts - m->ts);
}

static bool live_wildcard(const tstate_t *ts)
{
    return ts->t && ts->t->wildcard && ts->nw > 0;
}

/* Whether a queued type has something to send (state of the world always
 * does: a request was asked for). */
static bool request_due(const sharp_xds_mux_t *m, const tstate_t *ts)
{
    if (!m->delta) return ts->subscribed;
    if (ts->ack_nonce || ts->added.n || ts->removed.n) return true;
    return !ts->sent_on_stream && (live_wildcard(ts) || ts->requested.n);
}

static const Envoy__Config__Core__V3__Node *node_for_request(sharp_xds_mux_t *m)
{
    if (m->node_sent && m->node_first_only) return NULL;
    m->node_sent = true;
    return (const Envoy__Config__Core__V3__Node *)m->node;
}

static void send_sotw(sharp_xds_mux_t *m, tstate_t *ts)
{
    sotw_req_t req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    req.version_info = ts->version_info ? ts->version_info : "";
    req.type_url = (char *)ts->t->type_url;
    req.response_nonce = ts->nonce ? ts->nonce : "";
    /* a wildcard type names nothing (the legacy wildcard); a named one
     * every name a watch wants, maybe none */
    if (!ts->t->wildcard) {
        req.n_resource_names = ts->requested.n;
        req.resource_names = ts->requested.v;
    }
    req.node = (Envoy__Config__Core__V3__Node *)node_for_request(m);
    if (ts->error) {
        st.code = SHARP_GRPC_INTERNAL;
        st.message = ts->error;
        req.error_detail = &st;
    }
    sharp_debug(config, "%s: DiscoveryRequest for %s: version '%s', nonce '%s', %zu name(s)%s", m->name,
                ts->t->type_url, req.version_info, req.response_nonce, req.n_resource_names,
                ts->error ? ", NACK" : "");
    sharp_grpc_retrying_stream_send(m->rs, &req.base);
    free(ts->error);
    ts->error = NULL;
}

static void send_delta(sharp_xds_mux_t *m, tstate_t *ts)
{
    delta_req_t req = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    version_entry_t *entries = NULL, **eptr = NULL;
    req.type_url = (char *)ts->t->type_url;
    req.node = (Envoy__Config__Core__V3__Node *)node_for_request(m);
    if (!ts->sent_on_stream) {
        /* the first request of a stream states the whole interest (a new
         * server may be on the other end) and the versions the client
         * has, so an unchanged resource is not sent again */
        ts->sent_on_stream = true;
        if (!ts->t->wildcard) {
            req.n_resource_names_subscribe = ts->requested.n;
            req.resource_names_subscribe = ts->requested.v;
        }
        size_t n = 0;
        for (size_t i = 0; i < ts->nres; i++) n += ts->res[i].bytes != NULL;
        entries = sharp_calloc(n ? n : 1, sizeof *entries);
        eptr = sharp_calloc(n ? n : 1, sizeof *eptr);
        n = 0;
        for (size_t i = 0; i < ts->nres; i++) {
            if (!ts->res[i].bytes) continue;
            version_entry_t init = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
            entries[n] = init;
            entries[n].key = ts->res[i].name;
            entries[n].value = ts->res[i].version;
            eptr[n] = &entries[n];
            n++;
        }
        req.n_initial_resource_versions = n;
        req.initial_resource_versions = eptr;
    } else {
        req.n_resource_names_subscribe = ts->added.n;
        req.resource_names_subscribe = ts->added.v;
        req.n_resource_names_unsubscribe = ts->removed.n;
        req.resource_names_unsubscribe = ts->removed.v;
    }
    if (ts->ack_nonce) req.response_nonce = ts->ack_nonce;
    if (ts->error) {
        st.code = SHARP_GRPC_INTERNAL;
        st.message = ts->error;
        req.error_detail = &st;
    }
    sharp_debug(config, "%s: DeltaDiscoveryRequest for %s: nonce '%s', +%zu -%zu name(s), %zu initial version(s)%s",
                m->name, ts->t->type_url, req.response_nonce, req.n_resource_names_subscribe,
                req.n_resource_names_unsubscribe, req.n_initial_resource_versions, ts->error ? ", NACK" : "");
    sharp_grpc_retrying_stream_send(m->rs, &req.base);
    free(entries);
    free(eptr);
    names_clear(&ts->added);
    names_clear(&ts->removed);
    free(ts->ack_nonce);
    ts->ack_nonce = NULL;
    free(ts->error);
    ts->error = NULL;
}

static void flush(sharp_xds_mux_t *m);

static void on_flush_timer(uv_timer_t *t)
{
    flush(t->data);
}

static void schedule_flush(sharp_xds_mux_t *m, uint64_t delay_ms)
{
    if (!m->flush_timer_init || m->stopped || !m->open) return;
    if (uv_is_active((uv_handle_t *)&m->flush_timer) && delay_ms) return;
    uv_timer_start(&m->flush_timer, on_flush_timer, delay_ms, 0);
}

/* Envoy's TokenBucketImpl: max_tokens, refilled at fill_rate per second,
 * full at first. Returns 0 when a token was taken, else the ms until one. */
static uint64_t take_token(sharp_xds_mux_t *m)
{
    if (!m->rate_limited) return 0;
    uint64_t now = uv_now(m->loop);
    m->tokens += (double)(now - m->tokens_at_ms) / 1000.0 * m->fill_rate;
    if (m->tokens > m->max_tokens) m->tokens = m->max_tokens;
    m->tokens_at_ms = now;
    if (m->tokens >= 1.0) {
        m->tokens -= 1.0;
        return 0;
    }
    uint64_t wait = (uint64_t)((1.0 - m->tokens) / m->fill_rate * 1000.0) + 1;
    return wait;
}

static void flush(sharp_xds_mux_t *m)
{
    if (m->stopped || !m->open) return;
    while (m->nqueue) {
        tstate_t *ts = &m->ts[m->queue[0]];
        if (!request_due(m, ts)) {
            ts->queued = false;
            memmove(m->queue, m->queue + 1, --m->nqueue * sizeof *m->queue);
            continue;
        }
        uint64_t wait = take_token(m);
        if (wait) {
            sharp_counter_inc(shard0(m), m->st.rate_limit_enforced);
            schedule_flush(m, wait);
            break;
        }
        ts->queued = false;
        memmove(m->queue, m->queue + 1, --m->nqueue * sizeof *m->queue);
        if (m->delta) send_delta(m, ts);
        else send_sotw(m, ts);
    }
    sharp_gauge_set(m->stats, m->st.pending_requests, m->nqueue);
}

/* ---- decoding ---- */

/* The first field below `m` (Any contents included) that SHARP's protos do
 * not have: its tag, with its path appended to `path`. A field Envoy has
 * and SHARP left out would otherwise be accepted and ignored. */
static bool find_unknown(const ProtobufCMessage *m, sharp_sbuf_t *path, uint32_t *tag)
{
    if (m->n_unknown_fields) {
        *tag = m->unknown_fields[0].tag;
        return true;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &google__protobuf__any__descriptor) {
        sharp_config_error_t e;
        ProtobufCMessage *in = sharp_any_unpack(m, NULL, &e);
        if (!in) return false; /* the support check names an Any it cannot read */
        bool r = find_unknown(in, path, tag);
        protobuf_c_message_free_unpacked(in, NULL);
        return r;
    }
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        size_t at = path->len;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                sharp_sbuf_printf(path, "%s%s[%zu]", path->len ? "." : "", f->name, k);
                if (find_unknown(v[k], path, tag)) return true;
                path->len = at;
            }
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(base + f->offset);
        if (!sub) continue;
        sharp_sbuf_printf(path, "%s%s", path->len ? "." : "", f->name);
        if (find_unknown(sub, path, tag)) return true;
        path->len = at;
    }
    return false;
}

/* One resource of a response, decoded and checked. */
typedef struct decoded {
    const char *name;        /* the resource's (points into msg or the response) */
    uint8_t *bytes;          /* the resource message, packed */
    size_t len;
    ProtobufCMessage *msg;
    const char *version;     /* delta: the resource's version */
    bool skip;               /* a heartbeat */
    /* it uses what SHARP does not implement (bytes NULL): refused alone,
     * what the client had of it stays, the rest of the response applies */
    bool refused;
    char *owned_name; /* a refused resource's name, which outlives msg */
} decoded_t;

/* The errors of one response: the protocol's (a type URL, a name sent
 * twice in an incremental response), each resource's, and the list of the
 * resources named (for /config_dump's error_state). */
typedef struct errlist {
    const sharp_xds_type_t *t;
    sharp_sbuf_t text; /* the protocol's, and a named type's resources' */
    sharp_sbuf_t res;  /* a wildcard type's resources': "name: reason, ..." */
    sharp_xds_resource_error_t *v;
    size_t n;
} errlist_t;

static void errors_record(errlist_t *errs, const char *name, const char *msg)
{
    if (!name) return;
    errs->v = sharp_realloc(errs->v, (errs->n + 1) * sizeof *errs->v);
    errs->v[errs->n].name = sharp_strdup(name);
    errs->v[errs->n++].msg = sharp_strdup(msg);
}

/* An error of the response itself (`name` when it is about one resource). */
static void errors_add(errlist_t *errs, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errors_add(errlist_t *errs, const char *name, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    sharp_sbuf_printf(&errs->text, "%s%s", errs->text.len ? "; " : "", buf);
    errors_record(errs, name, buf);
}

/* A resource refused: worded as Envoy's CdsApiHelper and LdsApiImpl word
 * it for the whole types ("Error adding/updating cluster(s) a: why, b:
 * why"), and "<kind> 'name': why" for the named ones. */
static void errors_res(errlist_t *errs, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errors_res(errlist_t *errs, const char *name, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (errs->t->wildcard) sharp_sbuf_printf(&errs->res, "%s%s: %s", errs->res.len ? ", " : "", name, buf);
    else sharp_sbuf_printf(&errs->text, "%s%s '%s': %s", errs->text.len ? "; " : "", errs->t->kind, name, buf);
    errors_record(errs, name, buf);
}

static bool errors_any(const errlist_t *errs)
{
    return errs->text.len || errs->res.len;
}

/* The NACK's error_detail message (truncated as Envoy truncates it). */
static char *errors_message(errlist_t *errs)
{
    sharp_sbuf_t m = {0};
    sharp_sbuf_printf(&m, "%s", sharp_sbuf_cstr(&errs->text));
    if (errs->res.len)
        sharp_sbuf_printf(&m, "%sError adding/updating %s(s) %s", m.len ? "; " : "", errs->t->kind,
                          sharp_sbuf_cstr(&errs->res));
    char *out = sharp_xds_truncate_status_message(sharp_sbuf_cstr(&m));
    sharp_sbuf_free(&m);
    return out;
}

static void errors_free(errlist_t *errs)
{
    sharp_sbuf_free(&errs->text);
    sharp_sbuf_free(&errs->res);
    for (size_t i = 0; i < errs->n; i++) {
        free((char *)errs->v[i].name);
        free((char *)errs->v[i].msg);
    }
    free(errs->v);
}

/* Decodes `data` as the type, checks it against the support table and for
 * unknown fields. 0; -2 when the resource uses a field, value or extension
 * SHARP does not implement (out->refused, the reason in errs naming it: as a
 * resource Envoy cannot build, it is refused alone); -1 when the response
 * cannot be taken (undecodable, or against one of Envoy's validation rules,
 * which Envoy's decoding refuses the whole response for). */
static int decode_resource(const sharp_xds_type_t *t, const uint8_t *data, size_t len, const char *where,
                           decoded_t *out, errlist_t *errs)
{
    ProtobufCMessage *msg = protobuf_c_message_unpack(t->desc, NULL, len, data);
    if (!msg) {
        errors_add(errs, NULL, "%s: cannot decode the resource as %s", where, t->desc->name);
        return -1;
    }
    const char *name = t->name(msg);
    if (!name || !*name) name = where;
    sharp_sbuf_t path = {0};
    uint32_t tag;
    int rc = 0;
    if (find_unknown(msg, &path, &tag)) {
        errors_res(errs, name, "%s%sfield number %u is not a field SHARP knows (a field it does not implement)",
                   sharp_sbuf_cstr(&path), path.len ? ": " : "", tag);
        rc = -2;
    }
    sharp_sbuf_free(&path);
    sharp_config_error_t e = {{0}};
    bool invalid = false;
    if (rc == 0 && sharp_config_check_support_kind(msg, NULL, "", &e, &invalid) < 0) {
        errors_res(errs, name, "%s", e.msg);
        rc = invalid ? -1 : -2;
    }
    if (rc == -1) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return -1;
    }
    out->msg = msg;
    out->name = name;
    out->refused = rc == -2;
    if (out->refused) {
        out->name = out->owned_name = sharp_strdup(name);
        return -2;
    }
    out->bytes = sharp_realloc(NULL, len ? len : 1);
    if (len) memcpy(out->bytes, data, len);
    out->len = len;
    return 0;
}

static void decoded_free(decoded_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i].msg) protobuf_c_message_free_unpacked(d[i].msg, NULL);
        free(d[i].bytes);
        free(d[i].owned_name);
    }
    free(d);
}

static ProtobufCMessage *decode_again(const sharp_xds_type_t *t, const uint8_t *bytes, size_t len)
{
    return protobuf_c_message_unpack(t->desc, NULL, len, bytes);
}

/* ---- watches ---- */

static void watch_timer_start(sharp_xds_mux_watch_t *w);

static void watch_done(sharp_xds_mux_watch_t *w)
{
    w->first_done = true;
    if (w->timer_init) uv_timer_stop(&w->timer);
}

/* A copy of the live watches of a type: callbacks may remove watches. */
static sharp_xds_mux_watch_t **watch_snapshot(tstate_t *ts, size_t *n)
{
    *n = ts->nw;
    sharp_xds_mux_watch_t **v = sharp_calloc(ts->nw ? ts->nw : 1, sizeof *v);
    if (ts->nw) memcpy(v, ts->w, ts->nw * sizeof *v);
    return v;
}

static void reject_all(sharp_xds_mux_t *m, tstate_t *ts, const char *msg, const errlist_t *errs,
                       const char *version)
{
    size_t n;
    sharp_xds_mux_watch_t **v = watch_snapshot(ts, &n);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->dead) continue;
        watch_done(v[i]);
        v[i]->cb.on_failure(v[i]->cb.ud, SHARP_XDS_FAIL_REJECTED, msg, version, errs->v, errs->n);
    }
    free(v);
    (void)m;
}

static bool name_wanted(const tstate_t *ts, const char *name)
{
    return names_find(&ts->requested, name) >= 0;
}

/* Hands a named watch its resource (msg NULL: an empty update, the
 * resource does not exist). Returns the watcher's result. */
static int deliver_named(sharp_xds_mux_watch_t *w, const decoded_t *d, const char *version, errlist_t *errs)
{
    ProtobufCMessage *one[1] = {NULL};
    size_t n = 0;
    if (d) {
        one[0] = decode_again(w->ts->t, d->bytes, d->len);
        n = one[0] != NULL;
    }
    char err[4096] = "";
    if (n || w->ts->t->absent_ends_fetch) watch_done(w);
    int rc = w->cb.on_update(w->cb.ud, one, n, version, NULL, NULL, 0, err, sizeof err);
    if (one[0]) protobuf_c_message_free_unpacked(one[0], NULL);
    if (rc < 0) errors_res(errs, w->name, "%s", err);
    return rc;
}

static void log_rejected(sharp_xds_mux_t *m, const tstate_t *ts, const char *version, const char *nonce,
                         const char *errs)
{
    sharp_warn(config, "%s: %s update (version '%s', nonce '%s') rejected, the previous configuration stays: %s",
               m->name, ts->t->short_name, version, nonce, errs);
}

/* ---- state of the world ---- */

static tstate_t *state_for(sharp_xds_mux_t *m, const char *type_url)
{
    if (m->only && (!type_url || !*type_url)) return &m->ts[m->only->order];
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++)
        if (m->ts[i].subscribed && !strcmp(m->ts[i].t->type_url, type_url)) return &m->ts[i];
    return NULL;
}

/* A named watch's resource refused: the watch keeps what it had and
 * counts a rejected update. */
static void refuse_named(sharp_xds_mux_watch_t *w, const decoded_t *d, const errlist_t *errs, const char *version)
{
    sharp_xds_resource_error_t e = {d->name, ""};
    for (size_t i = 0; i < errs->n; i++)
        if (!strcmp(errs->v[i].name, d->name)) e.msg = errs->v[i].msg;
    watch_done(w);
    w->cb.on_failure(w->cb.ud, SHARP_XDS_FAIL_REJECTED, e.msg, version, &e, 1);
}

/* The refusals among d (entries marked refused) for a wildcard watcher;
 * their messages may be taken by it. */
static sharp_xds_refusal_t *refusals_of(decoded_t *d, size_t nd, const errlist_t *errs, size_t *n)
{
    size_t k = 0;
    for (size_t i = 0; i < nd; i++) k += d[i].refused;
    *n = k;
    if (!k) return NULL;
    sharp_xds_refusal_t *v = sharp_calloc(k, sizeof *v);
    k = 0;
    for (size_t i = 0; i < nd; i++) {
        if (!d[i].refused) continue;
        v[k].name = d[i].name;
        v[k].why = "";
        for (size_t e = 0; e < errs->n; e++)
            if (!strcmp(errs->v[e].name, d[i].name)) v[k].why = errs->v[e].msg;
        v[k++].resource = d[i].msg;
    }
    return v;
}

/* After a wildcard watcher refused some of the resources: its message
 * ("Error adding/updating cluster(s) a: why") joins the mux's own
 * refusals into one list, as Envoy words the NACK. */
static void errors_watcher(errlist_t *errs, const char *err)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "Error adding/updating %s(s) ", errs->t->kind);
    size_t pl = strlen(prefix);
    if (errs->t->wildcard && !strncmp(err, prefix, pl))
        sharp_sbuf_printf(&errs->res, "%s%s", errs->res.len ? ", " : "", err + pl);
    else
        errors_add(errs, NULL, "%s", err);
}

/* After the watchers had the resources: a refused resource's message
 * still in d was not taken. */
static void refusals_release(decoded_t *d, size_t nd, sharp_xds_refusal_t *v, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < nd && k < n; i++) {
        if (!d[i].refused) continue;
        d[i].msg = v[k++].resource;
    }
    free(v);
}

static void on_sotw(sharp_xds_mux_t *m, const sotw_resp_t *r)
{
    tstate_t *ts = state_for(m, r->type_url);
    if (!ts) {
        sharp_warn(config, "%s: Ignoring the message for type URL %s as it has no current subscribers.", m->name,
                   r->type_url);
        return;
    }
    const sharp_xds_type_t *t = ts->t;
    free(ts->nonce);
    ts->nonce = sharp_strdup(r->nonce);
    if (!ts->nw) {
        /* nothing watches the type any more: an empty set is taken, anything
         * else is answered without taking its version (Envoy) */
        if (!r->n_resources) {
            free(ts->version_info);
            ts->version_info = sharp_strdup(r->version_info);
        } else {
            sharp_warn(config, "%s: Ignoring unwatched type URL %s", m->name, t->type_url);
        }
        enqueue(m, ts);
        return;
    }
    errlist_t errs = {.t = t};
    bool fatal = false; /* the response cannot be taken: nothing of it applies */
    size_t nrefused = 0;
    decoded_t *d = sharp_calloc(r->n_resources ? r->n_resources : 1, sizeof *d);
    size_t nd = 0;
    for (size_t i = 0; i < r->n_resources; i++) {
        const Google__Protobuf__Any *a = r->resources[i];
        const char *url = a->type_url ? a->type_url : "";
        const uint8_t *data = a->value.data;
        size_t len = a->value.len;
        char where[64];
        snprintf(where, sizeof where, "resources[%zu]", i);
        Envoy__Service__Discovery__V3__Resource *wrap = NULL;
        const char *slash = strrchr(url, '/');
        if (slash && !strcmp(slash + 1, RESOURCE_WRAPPER)) {
            wrap = (void *)protobuf_c_message_unpack(&envoy__service__discovery__v3__resource__descriptor, NULL, len,
                                                     data);
            if (!wrap) {
                errors_add(&errs, NULL, "%s: cannot decode the %s wrapper", where, RESOURCE_WRAPPER);
                fatal = true;
                continue;
            }
            if (!wrap->resource) { /* a heartbeat: nothing to apply */
                protobuf_c_message_free_unpacked(&wrap->base, NULL);
                continue;
            }
            url = wrap->resource->type_url ? wrap->resource->type_url : "";
            data = wrap->resource->value.data;
            len = wrap->resource->value.len;
        }
        if (strcmp(url, t->type_url) != 0) {
            errors_add(&errs, NULL, "%s: %s does not match the message-wide type URL %s in DiscoveryResponse", where, url,
                       t->type_url);
            fatal = true;
        } else {
            int rc = decode_resource(t, data, len, where, &d[nd], &errs);
            if (rc == -1) fatal = true;
            else nd++;
            nrefused += rc == -2;
        }
        if (wrap) protobuf_c_message_free_unpacked(&wrap->base, NULL);
    }
    for (size_t i = 0; i < nd; i++)
        for (size_t k = 0; k < i; k++)
            if (!strcmp(d[i].name, d[k].name)) {
                errors_res(&errs, d[i].name, "duplicate %s %s found", t->kind, d[i].name);
                fatal = true;
                break;
            }
    if (fatal) {
        char *msg = errors_message(&errs);
        log_rejected(m, ts, r->version_info, r->nonce, msg);
        reject_all(m, ts, msg, &errs, r->version_info);
        free(ts->error);
        ts->error = msg;
        goto done;
    }
    size_t nw;
    sharp_xds_mux_watch_t **v = watch_snapshot(ts, &nw);
    for (size_t i = 0; i < nw; i++) {
        sharp_xds_mux_watch_t *w = v[i];
        if (w->dead) continue;
        if (!w->name) {
            /* the whole set: the watcher may take messages, so it gets its
             * own. A refused resource is there as the client had it (the
             * version the mux kept), or not at all when it is new: so the
             * watcher neither removes nor changes it. */
            ProtobufCMessage **all = sharp_calloc(nd ? nd : 1, sizeof *all);
            size_t n = 0;
            for (size_t k = 0; k < nd; k++) {
                const res_t *have = d[k].refused ? res_find(ts, d[k].name) : NULL;
                if (!d[k].refused) all[n++] = decode_again(t, d[k].bytes, d[k].len);
                else if (have && have->bytes) all[n++] = decode_again(t, have->bytes, have->len);
            }
            char err[4096] = "";
            watch_done(w);
            size_t nref;
            sharp_xds_refusal_t *ref = refusals_of(d, nd, &errs, &nref);
            if (w->cb.on_update(w->cb.ud, all, n, r->version_info, NULL, ref, nref, err, sizeof err) < 0)
                errors_watcher(&errs, err);
            refusals_release(d, nd, ref, nref);
            for (size_t k = 0; k < n; k++)
                if (all[k]) protobuf_c_message_free_unpacked(all[k], NULL);
            free(all);
            continue;
        }
        for (size_t k = 0; k < nd; k++) {
            if (strcmp(d[k].name, w->name) != 0) continue;
            if (d[k].refused) { /* the watch keeps what it has */
                refuse_named(w, &d[k], &errs, r->version_info);
                break;
            }
            if (deliver_named(w, &d[k], r->version_info, &errs) == 0)
                res_set(ts, w->name, d[k].bytes, d[k].len, r->version_info);
            break;
        }
    }
    free(v);
    if (t->wildcard) {
        /* what the client has of a wildcard type, for the next response
         * that refuses one of them: the response's resources, refused ones
         * at the version it had; absent ones are removed */
        for (size_t i = 0; i < ts->nres; i++) ts->res[i].seen = false;
        for (size_t k = 0; k < nd; k++) {
            if (!d[k].refused) res_set(ts, d[k].name, d[k].bytes, d[k].len, r->version_info);
            res_t *have = res_find(ts, d[k].name);
            if (have) have->seen = true;
        }
        for (size_t i = ts->nres; i-- > 0;)
            if (!ts->res[i].seen) res_del(ts, ts->res[i].name);
    }
    if (errors_any(&errs)) {
        char *msg = errors_message(&errs);
        if (nrefused)
            sharp_warn(config, "%s: %s: %zu resource(s) refused, the rest of version '%s' applied", m->name,
                       t->short_name, nrefused, r->version_info);
        log_rejected(m, ts, r->version_info, r->nonce, msg);
        free(ts->error);
        ts->error = msg;
    } else {
        free(ts->version_info);
        ts->version_info = sharp_strdup(r->version_info);
        sharp_debug(config, "%s: %s version '%s' accepted (%zu resource(s))", m->name, t->short_name,
                    r->version_info, nd);
    }
done:
    decoded_free(d, nd);
    errors_free(&errs);
    enqueue(m, ts);
}

/* ---- incremental ---- */

static void on_delta(sharp_xds_mux_t *m, const delta_resp_t *r)
{
    tstate_t *ts = state_for(m, r->type_url);
    if (!ts) {
        sharp_warn(config, "%s: Dropping received DeltaDiscoveryResponse (with version %s) for non-existent "
                           "subscription %s.", m->name, r->system_version_info, r->type_url);
        return;
    }
    const sharp_xds_type_t *t = ts->t;
    /* the response's nonce goes into the next request, ACK or NACK */
    free(ts->ack_nonce);
    ts->ack_nonce = sharp_strdup(r->nonce);
    errlist_t errs = {.t = t};
    bool fatal = false; /* the response cannot be taken: nothing of it applies */
    size_t nrefused = 0;
    decoded_t *d = sharp_calloc(r->n_resources ? r->n_resources : 1, sizeof *d);
    size_t nd = 0;
    /* the resources refused alone: the mux keeps the version the client had */
    decoded_t *refd = sharp_calloc(r->n_resources ? r->n_resources : 1, sizeof *refd);
    size_t nrefd = 0;
    for (size_t i = 0; i < r->n_resources; i++) {
        const Envoy__Service__Discovery__V3__Resource *res = r->resources[i];
        const char *name = res->name ? res->name : "";
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++) dup = !strcmp(r->resources[k]->name, name);
        if (dup) {
            errors_add(&errs, name, "duplicate name %s found among added/updated resources", name);
            fatal = true;
            continue;
        }
        char where[600];
        snprintf(where, sizeof where, "%s '%s'", t->kind, name);
        if (!res->resource) {
            /* a heartbeat names a version the client has */
            const res_t *have = res_find(ts, name);
            if (have && have->bytes && !strcmp(have->version, res->version ? res->version : "")) continue;
            errors_add(&errs, name, "%s: a resource without a resource is no heartbeat (version '%s' is not the one held)",
                       where, res->version ? res->version : "");
            fatal = true;
            continue;
        }
        const char *url = res->resource->type_url ? res->resource->type_url : "";
        if (strcmp(url, t->type_url) != 0) {
            errors_add(&errs, name, "%s: type URL %s embedded in an individual Any does not match the message-wide type "
                       "URL %s in DeltaDiscoveryResponse", where, url, t->type_url);
            fatal = true;
            continue;
        }
        int rc = decode_resource(t, res->resource->value.data, res->resource->value.len, where, &d[nd], &errs);
        if (rc == -2) {
            refd[nrefd] = d[nd];
            free(refd[nrefd].owned_name);
            refd[nrefd].name = refd[nrefd].owned_name = sharp_strdup(name); /* the delta name is its identity */
            nrefd++;
            memset(&d[nd], 0, sizeof d[nd]);
            nrefused++;
        }
        fatal |= rc == -1;
        if (rc < 0) continue;
        d[nd].name = name; /* the delta resource's name is its identity */
        d[nd].version = res->version ? res->version : "";
        nd++;
    }
    for (size_t i = 0; i < r->n_removed_resources; i++) {
        const char *name = r->removed_resources[i];
        bool dup = false;
        for (size_t k = 0; k < r->n_resources && !dup; k++) dup = !strcmp(r->resources[k]->name, name);
        for (size_t k = 0; k < i && !dup; k++) dup = !strcmp(r->removed_resources[k], name);
        if (dup) {
            errors_add(&errs, name, "duplicate name %s found in the union of added+removed resources", name);
            fatal = true;
        }
    }
    if (fatal) {
        char *msg = errors_message(&errs);
        log_rejected(m, ts, r->system_version_info, r->nonce, msg);
        reject_all(m, ts, msg, &errs, r->system_version_info);
        free(ts->error);
        ts->error = msg;
        goto done;
    }
    size_t nw;
    sharp_xds_mux_watch_t **v = watch_snapshot(ts, &nw);
    if (t->wildcard) {
        /* the whole set after this response: what the mux has, changed
         * and removed as it says */
        size_t cap = ts->nres + nd, n = 0;
        const uint8_t **bytes = sharp_calloc(cap ? cap : 1, sizeof *bytes);
        size_t *lens = sharp_calloc(cap ? cap : 1, sizeof *lens);
        for (size_t i = 0; i < ts->nres; i++) ts->res[i].seen = false;
        for (size_t k = 0; k < r->n_removed_resources; k++) {
            res_t *have = res_find(ts, r->removed_resources[k]);
            if (have) have->seen = true;
        }
        for (size_t k = 0; k < nd; k++) {
            res_t *have = res_find(ts, d[k].name);
            if (have) have->seen = true;
        }
        for (size_t i = 0; i < ts->nres; i++) {
            const res_t *have = &ts->res[i];
            if (!have->bytes || have->seen) continue; /* removed or replaced by the response */
            bytes[n] = have->bytes;
            lens[n++] = have->len;
        }
        for (size_t k = 0; k < nd; k++) {
            bytes[n] = d[k].bytes;
            lens[n++] = d[k].len;
        }
        /* what the watchers refused of it (CDS and LDS apply the rest) */
        bool *refused = sharp_calloc(n ? n : 1, sizeof *refused);
        for (size_t i = 0; i < nw; i++) {
            sharp_xds_mux_watch_t *w = v[i];
            if (w->dead) continue;
            ProtobufCMessage **all = sharp_calloc(n ? n : 1, sizeof *all);
            for (size_t k = 0; k < n; k++) all[k] = decode_again(t, bytes[k], lens[k]);
            char err[4096] = "";
            watch_done(w);
            size_t nref;
            sharp_xds_refusal_t *ref = refusals_of(refd, nrefd, &errs, &nref);
            if (w->cb.on_update(w->cb.ud, all, n, r->system_version_info, refused, ref, nref, err, sizeof err) < 0)
                errors_watcher(&errs, err);
            refusals_release(refd, nrefd, ref, nref);
            for (size_t k = 0; k < n; k++)
                if (all[k]) protobuf_c_message_free_unpacked(all[k], NULL);
            free(all);
        }
        free(bytes);
        free(lens);
        /* the set is now what the watchers applied: the removals, and each
         * resource of the response they did not refuse (a refused one keeps
         * the version the client had, so the next incremental response
         * does not remove it, and a new stream states that version) */
        for (size_t k = 0; k < r->n_removed_resources; k++) res_del(ts, r->removed_resources[k]);
        for (size_t k = 0; k < nd; k++)
            if (!refused[n - nd + k]) res_set(ts, d[k].name, d[k].bytes, d[k].len, d[k].version);
        free(refused);
    } else {
        /* a named watch gets its resource, or an empty update when it is
         * removed (or does not exist); names nobody asked for are ignored */
        bool *bad = sharp_calloc(nd + r->n_removed_resources + 1, sizeof *bad);
        for (size_t i = 0; i < nw; i++) {
            sharp_xds_mux_watch_t *w = v[i];
            if (w->dead) continue;
            size_t at = SIZE_MAX;
            for (size_t k = 0; k < nd && at == SIZE_MAX; k++)
                if (!strcmp(d[k].name, w->name)) at = k;
            for (size_t k = 0; k < r->n_removed_resources && at == SIZE_MAX; k++)
                if (!strcmp(r->removed_resources[k], w->name)) at = nd + k;
            if (at == SIZE_MAX) {
                for (size_t k = 0; k < nrefd; k++)
                    if (!strcmp(refd[k].name, w->name)) refuse_named(w, &refd[k], &errs, r->system_version_info);
                continue;
            }
            if (deliver_named(w, at < nd ? &d[at] : NULL, r->system_version_info, &errs) < 0) bad[at] = true;
        }
        /* what the client now has, resource by resource (the next stream's
         * initial versions, a replaced cluster's endpoints); a removed
         * resource is still wanted, without a version */
        for (size_t k = 0; k < nd; k++)
            if (!bad[k] && name_wanted(ts, d[k].name)) res_set(ts, d[k].name, d[k].bytes, d[k].len, d[k].version);
        for (size_t k = 0; k < r->n_removed_resources; k++) {
            res_t *have = res_find(ts, r->removed_resources[k]);
            if (have && !bad[nd + k]) res_clear(have);
        }
        free(bad);
    }
    free(v);
    if (errors_any(&errs)) {
        char *msg = errors_message(&errs);
        if (nrefused)
            sharp_warn(config, "%s: %s: %zu resource(s) refused, the rest of version '%s' applied", m->name,
                       t->short_name, nrefused, r->system_version_info);
        log_rejected(m, ts, r->system_version_info, r->nonce, msg);
        free(ts->error);
        ts->error = msg;
    } else {
        sharp_debug(config, "%s: delta %s version '%s' accepted: %zu added/updated, %zu removed", m->name,
                    t->short_name, r->system_version_info, nd, r->n_removed_resources);
    }
done:
    decoded_free(refd, nrefd);
    decoded_free(d, nd);
    errors_free(&errs);
    enqueue(m, ts);
}

/* ---- the stream ---- */

static void mux_free_now(sharp_xds_mux_t *m);

static void on_open(void *arg, sharp_grpc_retrying_stream_t *rs)
{
    sharp_xds_mux_t *m = arg;
    (void)rs;
    m->open = true;
    m->node_sent = false;
    sharp_gauge_set(m->stats, m->st.connected_state, 1);
    sharp_debug(config, "%s: establishing a new gRPC bidi stream for %s", m->name, method_name(m));
    /* every subscription again, in Envoy's order; a new stream knows no nonce */
    m->nqueue = 0;
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++) {
        tstate_t *ts = &m->ts[i];
        ts->queued = false;
        free(ts->nonce);
        ts->nonce = NULL;
        free(ts->ack_nonce);
        ts->ack_nonce = NULL;
        free(ts->error);
        ts->error = NULL;
        ts->sent_on_stream = false;
        names_clear(&ts->added);
        names_clear(&ts->removed);
        if (ts->subscribed) enqueue(m, ts);
    }
    flush(m);
}

static void on_message(void *arg, const ProtobufCMessage *msg)
{
    sharp_xds_mux_t *m = arg;
    if (m->stopped) return;
    if (!m->healthy) sharp_info(config, "%s: %s gRPC config stream is receiving", m->name, method_name(m));
    m->healthy = true;
    sharp_gauge_set(m->stats, m->st.connected_state, 1);
    m->busy++;
    if (m->delta) on_delta(m, (const delta_resp_t *)msg);
    else on_sotw(m, (const sotw_resp_t *)msg);
    m->busy--;
    if (m->free_pending && !m->busy) {
        mux_free_now(m);
        return;
    }
    flush(m);
}

static void on_close(void *arg, int status, const char *message, uint64_t retry_in_ms)
{
    sharp_xds_mux_t *m = arg;
    m->open = false;
    m->nqueue = 0;
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++) m->ts[i].queued = false;
    if (m->flush_timer_init) uv_timer_stop(&m->flush_timer);
    sharp_gauge_set(m->stats, m->st.connected_state, 0);
    sharp_gauge_set(m->stats, m->st.pending_requests, 0);
    /* Envoy warns once when a working stream goes; the retries of a server
     * that stays down are debug */
    if (m->healthy)
        sharp_warn(config, "%s: %s gRPC config stream closed: %d, %s (the last configuration stays; "
                           "reconnecting in %llu ms)", m->name, method_name(m), status, message,
                   (unsigned long long)retry_in_ms);
    else
        sharp_debug(config, "%s: %s gRPC config stream closed: %d, %s (retrying in %llu ms)", m->name,
                    method_name(m), status, message, (unsigned long long)retry_in_ms);
    m->healthy = false;
    m->busy++;
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++) {
        size_t n;
        sharp_xds_mux_watch_t **v = watch_snapshot(&m->ts[i], &n);
        for (size_t k = 0; k < n; k++)
            if (!v[k]->dead) v[k]->cb.on_failure(v[k]->cb.ud, SHARP_XDS_FAIL_CONNECTION, NULL, NULL, NULL, 0);
        free(v);
    }
    m->busy--;
    if (m->free_pending && !m->busy) mux_free_now(m);
}

static const sharp_grpc_retry_callbacks_t stream_callbacks = {
    .on_open = on_open,
    .on_message = on_message,
    .on_close = on_close,
};

/* ---- the mux ---- */

sharp_xds_mux_t *sharp_xds_mux_new(sharp_stats_t *stats, const sharp_xds_mux_config_t *cfg,
                                   const ProtobufCMessage *node)
{
    sharp_xds_mux_t *m = sharp_calloc(1, sizeof *m);
    m->name = sharp_strdup(cfg->name);
    m->only = cfg->only;
    m->delta = cfg->delta;
    m->node_first_only = cfg->node_first_only;
    m->backoff_base_ms = cfg->backoff_base_ms;
    m->backoff_max_ms = cfg->backoff_max_ms;
    m->rate_limited = cfg->rate_limited;
    m->max_tokens = cfg->max_tokens;
    m->fill_rate = cfg->fill_rate;
    m->tokens = cfg->max_tokens;
    m->node = node;
    m->stats = stats;
    const char *p = cfg->stats_prefix ? cfg->stats_prefix : "";
    m->st.connected_state = sharp_stats_gaugef(stats, "%scontrol_plane.connected_state", p);
    m->st.rate_limit_enforced = sharp_stats_counterf(stats, "%scontrol_plane.rate_limit_enforced", p);
    m->st.pending_requests = sharp_stats_gaugef(stats, "%scontrol_plane.pending_requests", p);
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++) m->ts[i].t = all_types[i];
    return m;
}

bool sharp_xds_mux_started(const sharp_xds_mux_t *m)
{
    return m && m->loop != NULL;
}

static void on_fetch_timeout(uv_timer_t *t)
{
    sharp_xds_mux_watch_t *w = t->data;
    if (w->dead || w->first_done) return;
    w->first_done = true;
    sharp_warn(config, "%s: gRPC config: initial fetch timed out for %s%s%s%s", w->m->name, w->ts->t->type_url,
               w->name ? " (" : "", w->name ? w->name : "", w->name ? ")" : "");
    w->cb.on_failure(w->cb.ud, SHARP_XDS_FAIL_TIMEOUT, NULL, NULL, NULL, 0);
}

static void watch_timer_start(sharp_xds_mux_watch_t *w)
{
    sharp_xds_mux_t *m = w->m;
    if (!m->loop || m->stopped) return;
    if (!w->timer_init) {
        uv_timer_init(m->loop, &w->timer);
        w->timer.data = w;
        w->timer_init = true;
    }
    if (!w->first_done && w->fetch_timeout_ms)
        uv_timer_start(&w->timer, on_fetch_timeout, w->fetch_timeout_ms, 0);
}

void sharp_xds_mux_start(sharp_xds_mux_t *m, uv_loop_t *loop, sharp_grpc_client_t *client)
{
    if (m->loop) return;
    m->loop = loop;
    m->client = client;
    m->tokens_at_ms = uv_now(loop);
    uv_timer_init(loop, &m->flush_timer);
    m->flush_timer.data = m;
    m->flush_timer_init = true;
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++)
        for (size_t k = 0; k < m->ts[i].nw; k++) watch_timer_start(m->ts[i].w[k]);
    const char *path = m->only ? (m->delta ? m->only->delta_path : m->only->sotw_path)
                               : (m->delta ? "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                                             "DeltaAggregatedResources"
                                           : "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                                             "StreamAggregatedResources");
    const ProtobufCMessageDescriptor *desc = m->delta ? &envoy__service__discovery__v3__delta_discovery_response__descriptor
                                                      : &envoy__service__discovery__v3__discovery_response__descriptor;
    m->rs = sharp_grpc_retrying_stream_start(client, path, desc, NULL, m->backoff_base_ms, m->backoff_max_ms,
                                             &stream_callbacks, m);
}

/* A watch's memory goes once its timer is closed (or at once when it has
 * none), so a close still pending never touches freed memory. */
static void watch_timer_closed(uv_handle_t *h)
{
    sharp_xds_mux_watch_t *w = h->data;
    w->timer_closed = true;
    if (w->dead) {
        free(w->name);
        free(w);
    }
}

static void watch_release(sharp_xds_mux_watch_t *w)
{
    w->dead = true;
    if (w->timer_init && !w->timer_closed) {
        if (!uv_is_closing((uv_handle_t *)&w->timer)) uv_close((uv_handle_t *)&w->timer, watch_timer_closed);
        return;
    }
    free(w->name);
    free(w);
}

static void mux_mem_free(sharp_xds_mux_t *m)
{
    free(m->name);
    free(m);
}

static void flush_timer_closed(uv_handle_t *h)
{
    sharp_xds_mux_t *m = h->data;
    m->flush_timer_closed = true;
    if (m->mem_free_pending) mux_mem_free(m);
}

/* Ends the stream and closes every handle (the loop is still running: this
 * is the shutdown sequence, or a mux being freed). */
void sharp_xds_mux_stop(sharp_xds_mux_t *m)
{
    if (!m || m->stopped) return;
    m->stopped = true;
    m->open = false;
    if (m->rs) sharp_grpc_retrying_stream_stop(m->rs);
    m->rs = NULL;
    if (m->flush_timer_init) uv_close((uv_handle_t *)&m->flush_timer, flush_timer_closed);
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++)
        for (size_t k = 0; k < m->ts[i].nw; k++) {
            sharp_xds_mux_watch_t *w = m->ts[i].w[k];
            if (w->timer_init && !uv_is_closing((uv_handle_t *)&w->timer))
                uv_close((uv_handle_t *)&w->timer, watch_timer_closed);
        }
    sharp_gauge_set(m->stats, m->st.connected_state, 0);
}

static void mux_free_now(sharp_xds_mux_t *m)
{
    sharp_xds_mux_stop(m);
    for (unsigned i = 0; i < SHARP_XDS_NTYPES; i++) {
        tstate_t *ts = &m->ts[i];
        for (size_t k = 0; k < ts->nw; k++) watch_release(ts->w[k]);
        free(ts->w);
        free(ts->version_info);
        free(ts->nonce);
        free(ts->ack_nonce);
        free(ts->error);
        names_clear(&ts->added);
        names_clear(&ts->removed);
        names_clear(&ts->requested);
        for (size_t k = 0; k < ts->nres; k++) {
            res_clear(&ts->res[k]);
            free(ts->res[k].name);
        }
        free(ts->res);
        free(ts->rix);
    }
    if (m->flush_timer_init && !m->flush_timer_closed) m->mem_free_pending = true;
    else mux_mem_free(m);
}

void sharp_xds_mux_free(sharp_xds_mux_t *m)
{
    if (!m) return;
    if (m->busy) {
        sharp_xds_mux_stop(m);
        m->free_pending = true;
        return;
    }
    mux_free_now(m);
}

sharp_xds_mux_watch_t *sharp_xds_mux_watch(sharp_xds_mux_t *m, const sharp_xds_type_t *type, const char *name,
                                           uint64_t fetch_timeout_ms, const sharp_xds_mux_watcher_t *cb)
{
    tstate_t *ts = &m->ts[type->order];
    sharp_xds_mux_watch_t *w = sharp_calloc(1, sizeof *w);
    w->m = m;
    w->ts = ts;
    w->name = name ? sharp_strdup(name) : NULL;
    w->cb = *cb;
    w->fetch_timeout_ms = fetch_timeout_ms;
    ts->w = sharp_realloc(ts->w, (ts->nw + 1) * sizeof *ts->w);
    ts->w[ts->nw++] = w;
    ts->subscribed = true;
    if (name && !name_wanted(ts, name)) {
        names_add(&ts->requested, name);
        if (m->delta && !names_del(&ts->removed, name)) names_add(&ts->added, name);
        enqueue(m, ts);
    } else if (!name && ts->nw == 1) {
        enqueue(m, ts);
    }
    watch_timer_start(w);
    schedule_flush(m, 0);
    return w;
}

void sharp_xds_mux_unwatch(sharp_xds_mux_watch_t *w)
{
    if (!w) return;
    sharp_xds_mux_t *m = w->m;
    tstate_t *ts = w->ts;
    for (size_t i = 0; i < ts->nw; i++)
        if (ts->w[i] == w) {
            ts->w[i] = ts->w[--ts->nw];
            break;
        }
    if (w->name) {
        bool others = false;
        for (size_t i = 0; i < ts->nw && !others; i++) others = ts->w[i]->name && !strcmp(ts->w[i]->name, w->name);
        if (!others) {
            /* nobody needs the name: unsubscribed, and what the mux had of
             * it forgotten (a later watch asks the server again) */
            names_del(&ts->requested, w->name);
            if (m->delta && !names_del(&ts->added, w->name)) names_add(&ts->removed, w->name);
            res_del(ts, w->name);
            enqueue(m, ts);
            schedule_flush(m, 0);
        }
    }
    watch_release(w);
}

ProtobufCMessage *sharp_xds_mux_cached(sharp_xds_mux_watch_t *w, const char **version)
{
    if (!w->name) return NULL;
    const res_t *r = res_find(w->ts, w->name);
    if (!r || !r->bytes) return NULL;
    ProtobufCMessage *msg = decode_again(w->ts->t, r->bytes, r->len);
    if (msg) {
        *version = r->version;
        watch_done(w);
    }
    return msg;
}
