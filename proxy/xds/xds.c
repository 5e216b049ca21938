/* xds.c: see xds.h. */
#include "xds/xds.h"
#include "api_source.h"

#include "config/bootstrap.h"
#include "config/mapper.h"
#include "config/route_config.h"
#include "config/runtime_config.h"
#include "http/route.h"
#include "log.h"
#include "sbuf.h"
#include "server.h"
#include "snapshot.h"
#include "tls/sds.h"
#include "upstream/cluster.h"
#include "upstream/dns.h"
#include "upstream/health_check.h"
#include "upstream/outlier.h"
#include "xds/mux.h"
#include "xds/path_source.h"
#include "xds/lds.h"

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/runtime/v3/rtds.pb-c.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef Envoy__Config__Core__V3__ConfigSource config_source_t;
typedef Envoy__Config__Cluster__V3__Cluster cluster_pb_t;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment cla_t;
typedef Envoy__Config__Route__V3__RouteConfiguration rc_t;

/* ---- the file transport: one watched file, its stats ---- */

typedef struct gsrc gsrc_t;

/* A subscription: a file (path, wdir, watch), or a watch on a gRPC stream
 * (gw, on the ADS stream or on `own`, an api_config_source's stream), and
 * the stats Envoy keeps per subscription. */
typedef struct sub {
    sharp_xds_t *x;
    const ProtobufCMessageDescriptor *type;
    char *path, *wdir; /* a file's path; for a gRPC source, where its updates come from (logs) */
    bool file;
    sharp_path_source_t *watch;
    sharp_xds_mux_watch_t *gw;
    gsrc_t *own;
    /* a gRPC subscription made while the RTDS layers have their initial
     * fetch: its watch is made (and its request sent, its
     * initial_fetch_timeout started) once that is over, as Envoy starts
     * CDS, LDS and what they bring after RTDS */
    bool deferred;
    gsrc_t *dsrc;
    char *dname;
    uint64_t dtimeout;
    bool init_pending; /* counted in x->init_pending until its first update, rejection or timeout */
    /* the initial fetch is over (an update, accepted or not, a resource that
     * does not exist, initial_fetch_timeout; a file's first read), and what
     * waits for it: a warming EDS cluster, the listeners warming on a route
     * configuration */
    bool fetched;
    void (*on_fetched)(void *arg);
    void *fetched_arg;
    sharp_xds_watcher_t watcher;
    struct {
        sharp_stat_id_t update_attempt, update_success, update_failure, update_rejected, update_time, version,
            init_fetch_timeout;
    } st;
    char *version; /* of the last accepted update, NULL before */
    uint64_t last_updated_us;
    /* the last rejected update, until one is accepted (/config_dump's error_state) */
    char *error, *error_version;
    uint64_t error_us;
    /* a file of a wildcard type (CDS, LDS): a resource using what SHARP
     * does not implement is refused alone, and keeps the version the last
     * accepted read gave, packed here by name */
    bool some;
    struct kept {
        char *name;
        uint8_t *bytes;
        size_t len;
    } *kept;
    size_t nkept;
    struct sub *next; /* in x->subs */
} sub_t;

typedef struct rds {
    sharp_xds_t *x;
    char *name, *path;
    sub_t *sub;
    sharp_rds_table_t *cur; /* NULL until the resource arrives */
} rds_t;

/* An RTDS layer: the Runtime resource `name` fills the runtime's layer
 * `layer` (Envoy's RtdsSubscription). */
typedef struct rtds {
    sharp_xds_t *x;
    char *name;
    int layer;
    sub_t *sub;
} rtds_t;

typedef struct dyn_cluster {
    sharp_cluster_t *c; /* a reference */
    ProtobufCMessage *pb;
    uint8_t *packed; /* to tell an unchanged resource */
    size_t len;
    char *version;
    uint64_t last_updated_us;
} dyn_cluster_t;

/* A cluster from CDS that is not used yet (Envoy's warming): an EDS
 * cluster's first ClusterLoadAssignment (or its subscription's
 * initial_fetch_timeout) or a DNS cluster's first resolution, then active
 * health checks' first round. */
typedef struct warm {
    struct sharp_xds *x;
    dyn_cluster_t d;
    bool eds_wait;   /* its endpoints are awaited */
    bool dns_wait;   /* its first resolution runs */
    bool sds_wait;   /* a secret of its TLS context is awaited */
    bool hc_pending; /* waits for the server's health checks to start */
    bool kept;       /* a CDS update being applied keeps it warming */
    struct warm *next;
} warm_t;

struct sharp_xds_eds {
    sharp_xds_t *x;
    sharp_cluster_t *c; /* not a reference: the cluster owns its subscription */
    sub_t *sub;
};

/* A gRPC source: the ADS stream, or an api_config_source's own, with the
 * gRPC client settings of its GrpcService. */
struct gsrc {
    sharp_xds_mux_t *mux;
    char *field;  /* the ApiConfigSource's path in the config */
    char *cluster, *authority;
    sharp_headers_t metadata;
    uint8_t *key; /* the packed GrpcService: sources with the same one share a client */
    size_t klen;
    /* an api_config_source's stream is shared by the subscriptions of its
     * type with the same ApiConfigSource (the EDS of many clusters: one
     * stream, and a cluster CDS replaces finds its endpoints on it) */
    uint8_t *skey;
    size_t sklen;
    const ProtobufCMessageDescriptor *stype;
    uint32_t refs;
    bool checked; /* its cluster was found static, non-EDS and HTTP/2 */
    gsrc_t *next;
};

typedef struct grpc_client {
    uint8_t *key;
    size_t klen;
    sharp_grpc_client_t *c;
} grpc_client_t;

typedef struct cds_error {
    char *name, *msg;
} cds_error_t;

struct sharp_xds {
    sharp_server_t *srv;
    uv_loop_t *loop; /* set once started: new subscriptions watch at once */
    sub_t *subs;
    /* gRPC xDS: the node every request names, the ADS source, every source
     * (ADS first), the clients they share */
    Envoy__Config__Core__V3__Node *node;
    bool node_ok; /* id and cluster set */
    gsrc_t *ads;
    gsrc_t *gsrcs;
    grpc_client_t *clients;
    uint32_t nclients;
    bool grpc_started;
    /* initialization: subscriptions waiting for their first update */
    uint32_t init_pending;
    /* gRPC RTDS layers whose initial fetch is not over: other gRPC
     * subscriptions wait (sub_t.deferred) */
    uint32_t rtds_waiting;
    void (*init_cb)(void *arg);
    void *init_arg;
    uv_timer_t init_timer;
    bool init_timer_on, init_fired;
    cds_error_t *cds_errors; /* the clusters the last rejected CDS update refused */
    uint32_t ncds_errors;
    uint64_t cds_error_us;
    char *cds_error_version;
    /* the version of the last CDS update that changed something, even one
     * rejected for some of its clusters (Envoy's CdsApiHelper
     * system_version_info_, /config_dump's version_info) */
    char *cds_version;
    rds_t **rds;
    uint32_t nrds;
    rtds_t **rtds;
    uint32_t nrtds;
    sub_t *cds;
    dyn_cluster_t *clusters;
    uint32_t nclusters;
    warm_t *warming; /* new versions of clusters not used yet */
    uint32_t next_cluster_index;
    uint64_t version; /* of the snapshots it makes */
    /* LDS: the listener manager and its subscription */
    sharp_lds_t *lds;
    sub_t *lds_sub;
    /* while held (an LDS update builds listeners whose RDS files are read),
     * publishing waits for the release */
    uint32_t hold;
    bool publish_pending;
    struct {
        sharp_stat_id_t cluster_added, cluster_modified, cluster_removed, warming_clusters;
    } st;
};

static sharp_stats_shard_t *shard0(sharp_xds_t *x)
{
    return sharp_stats_shard(x->srv->stats, 0);
}

int sharp_xds_config_source_path(const ProtobufCMessage *config_source, const char *field, const char **path,
                                 const char **wdir, char *err, size_t errlen)
{
    const config_source_t *cs = (const config_source_t *)config_source;
    *path = NULL;
    *wdir = NULL;
    if (cs && cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        /* Envoy removed the v2 xDS API: its resources are not v3 ones */
        snprintf(err, errlen, "%s.resource_api_version: V2 xDS resources are not supported (the v2 xDS major "
                 "version has been removed); V3 (or AUTO) is", field);
        return -1;
    }
    switch (cs ? cs->config_source_specifier_case : 0) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
        *path = cs->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE:
        *path = cs->path_config_source->path;
        if (cs->path_config_source->watched_directory) *wdir = cs->path_config_source->watched_directory->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE:
        /* the CDS, EDS and RDS subscriptions take gRPC sources before asking */
        snprintf(err, errlen, "%s.api_config_source: a management server is not supported by SHARP for this "
                 "resource; only path_config_source (a file) is", field);
        return -1;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
        snprintf(err, errlen, "%s.ads: ADS is not supported by SHARP for this resource; only path_config_source "
                 "(a file) is", field);
        return -1;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF:
        snprintf(err, errlen, "%s.self: xDS from the resource's own server is not supported by SHARP; only "
                 "path_config_source (a file), ads or api_config_source are", field);
        return -1;
    default:
        snprintf(err, errlen, "%s: a config source (path_config_source) is required", field);
        return -1;
    }
    if (!*path || !**path) {
        snprintf(err, errlen, "%s: the path is empty", field);
        return -1;
    }
    return 0;
}

static void on_file_changed(void *ud);

static int sub_watch(sub_t *s, char *err, size_t errlen)
{
    if (!s->file || s->watch || !s->x->loop) return 0;
    s->watch = sharp_path_source_watch(s->x->loop, s->path, s->wdir, on_file_changed, s, err, errlen);
    return s->watch ? 0 : -1;
}

/* Envoy's SubscriptionStats under `prefix` (cluster_manager.cds,
 * http.<p>.rds.<name>, cluster.<name>). */
static void sub_stats(sub_t *s, const char *prefix)
{
    sharp_stats_t *stats = s->x->srv->stats;
#define C(f) s->st.f = sharp_stats_counterf(stats, "%s." #f, prefix)
    C(update_attempt);
    C(update_success);
    C(update_failure);
    C(update_rejected);
    C(init_fetch_timeout);
#undef C
    s->st.update_time = sharp_stats_gaugef(stats, "%s.update_time", prefix);
    s->st.version = sharp_stats_gaugef(stats, "%s.version", prefix);
}

/* Envoy's checkFilesystemSubscriptionBackingPath, then the stats under
 * `prefix` (cluster_manager.cds, http.<p>.rds.<name>, cluster.<name>). */
static sub_t *sub_new(sharp_xds_t *x, const ProtobufCMessageDescriptor *type, const char *path, const char *wdir,
                      const char *prefix, const char *field, sharp_xds_watcher_t w, char *err, size_t errlen)
{
    if (sharp_path_source_check(path, wdir, field, err, errlen) < 0) return NULL; /* Envoy's checkFilesystemSubscriptionBackingPath */
    sub_t *s = sharp_calloc(1, sizeof *s);
    s->x = x;
    s->type = type;
    s->path = sharp_strdup(path);
    s->wdir = wdir ? sharp_strdup(wdir) : NULL;
    s->file = true;
    s->watcher = w;
    sub_stats(s, prefix);
    if (sub_watch(s, err, errlen) < 0) {
        free(s->path);
        free(s->wdir);
        free(s);
        return NULL;
    }
    s->next = x->subs;
    x->subs = s;
    return s;
}

static void gsrc_free(sharp_xds_t *x, gsrc_t *g);
static void init_done(sub_t *s);

static void kept_free(struct kept *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(k[i].name);
        free(k[i].bytes);
    }
    free(k);
}

static const struct kept *kept_find(const sub_t *s, const char *name)
{
    for (size_t i = 0; i < s->nkept; i++)
        if (!strcmp(s->kept[i].name, name)) return &s->kept[i];
    return NULL;
}

static void kept_add(struct kept **v, size_t *n, const char *name, const ProtobufCMessage *m, const struct kept *copy)
{
    *v = sharp_realloc(*v, (*n + 1) * sizeof **v);
    struct kept *k = &(*v)[(*n)++];
    k->name = sharp_strdup(name);
    k->len = copy ? copy->len : protobuf_c_message_get_packed_size(m);
    k->bytes = sharp_realloc(NULL, k->len ? k->len : 1);
    if (copy) memcpy(k->bytes, copy->bytes, k->len);
    else protobuf_c_message_pack(m, k->bytes);
}

static void sub_free(sub_t *s)
{
    if (!s) return;
    sharp_xds_t *x = s->x;
    for (sub_t **p = &x->subs; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    sharp_path_source_free(s->watch);
    sharp_xds_mux_unwatch(s->gw);
    if (s->own) gsrc_free(x, s->own);
    init_done(s); /* a subscription that goes no longer holds the start back */
    free(s->path);
    free(s->wdir);
    free(s->dname);
    free(s->version);
    free(s->error);
    free(s->error_version);
    kept_free(s->kept, s->nkept);
    free(s);
}

/* A rejected update (error) or an accepted one (NULL). */
static void sub_error(sub_t *s, const char *error, const char *version)
{
    free(s->error);
    free(s->error_version);
    s->error = error ? sharp_strdup(error) : NULL;
    s->error_version = error && version ? sharp_strdup(version) : NULL;
    s->error_us = error ? sharp_wall_us() : 0;
}

/* One read of the file: Envoy's FilesystemSubscriptionImpl::refresh. A
 * file that cannot be read or parsed is update_failure; one whose
 * resources the watcher refuses is update_rejected; either keeps what the
 * previous update gave (-1). 1: applied but for the resources refused
 * alone (logged), 0: applied. */
static int sub_apply(sub_t *s, ProtobufCMessage **res, size_t n, const char *version, bool *refused,
                     sharp_xds_refusal_t *refusals, size_t nrefusals, char *err, size_t errlen);

/* A read of a wildcard type's file with resources refused alone: the rest
 * applies, each refused one stays at the version the last accepted read
 * gave (or absent when new), and the update counts as rejected naming
 * them, as sub_apply does for a gRPC response. */
static void sub_apply_some(sub_t *s, sharp_discovery_t *d)
{
    size_t n = 0, nacc = d->nresources;
    ProtobufCMessage **all = sharp_calloc(nacc + d->nrefused + 1, sizeof *all);
    struct kept *next = NULL;
    size_t nnext = 0;
    for (size_t i = 0; i < nacc; i++) {
        kept_add(&next, &nnext, sharp_resource_name(d->resources[i]), d->resources[i], NULL);
        all[n++] = d->resources[i];
    }
    sharp_xds_refusal_t *ref = sharp_calloc(d->nrefused, sizeof *ref);
    for (size_t i = 0; i < d->nrefused; i++) {
        ref[i] = (sharp_xds_refusal_t){d->refused[i].name, d->refused[i].why, d->refused[i].msg};
        const struct kept *k = kept_find(s, d->refused[i].name);
        if (!k) continue;
        all[n] = protobuf_c_message_unpack(s->type, NULL, k->len, k->bytes);
        if (all[n]) n++;
        kept_add(&next, &nnext, k->name, NULL, k);
    }
    char why[4096];
    int rc = sub_apply(s, all, n, d->version_info, NULL, ref, d->nrefused, why, sizeof why);
    /* the watcher may have taken any of them (its slot set to NULL) */
    for (size_t i = 0; i < nacc; i++) d->resources[i] = all[i];
    for (size_t i = nacc; i < n; i++)
        if (all[i]) protobuf_c_message_free_unpacked(all[i], NULL);
    for (size_t i = 0; i < d->nrefused; i++) d->refused[i].msg = ref[i].resource;
    sharp_sbuf_t names = {0};
    for (size_t i = 0; i < d->nrefused; i++)
        sharp_sbuf_printf(&names, "%s%s: %s", names.len ? ", " : "", d->refused[i].name, d->refused[i].why);
    if (rc < 0) {
        sharp_log_warn("%s: update rejected, the previous configuration stays: %s; %s", s->path, sharp_sbuf_cstr(&names),
                       why);
        kept_free(next, nnext);
    } else {
        sharp_log_warn("%s: version '%s' applied, except what SHARP does not implement (the version the last update "
                       "gave stays): %s", s->path, d->version_info, sharp_sbuf_cstr(&names));
        kept_free(s->kept, s->nkept);
        s->kept = next;
        s->nkept = nnext;
    }
    sharp_sbuf_free(&names);
    free(ref);
    free(all);
}

static int sub_read(sub_t *s, char *err, size_t errlen)
{
    sharp_stats_shard_t *sh = shard0(s->x);
    sharp_discovery_t d;
    bool parsed;
    char why[1024];
    int rd = s->some ? sharp_path_source_read_some(s->path, s->type, &d, &parsed, why, sizeof why)
                     : sharp_path_source_read(s->path, s->type, &d, &parsed, why, sizeof why);
    if (rd == 0 && d.nrefused) {
        s->fetched = true;
        sub_apply_some(s, &d);
        sharp_discovery_free(&d);
        return 1; /* applied in part: sub_apply_some said what */
    }
    sharp_counter_inc(sh, s->st.update_attempt);
    if (rd < 0) {
        /* Envoy: an unknown field is UnknownProtoFieldException, counted
         * as rejected even though the file did not parse */
        if (strstr(why, "unknown field")) parsed = true;
        sharp_counter_inc(sh, parsed ? s->st.update_rejected : s->st.update_failure);
        if (parsed) sub_error(s, why, NULL);
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    s->fetched = true; /* the file was read: nothing waits for more */
    /* what a later read that refuses one of them keeps (packed before the
     * watcher may take them) */
    struct kept *next = NULL;
    size_t nnext = 0;
    if (s->some)
        for (size_t i = 0; i < d.nresources; i++)
            kept_add(&next, &nnext, sharp_resource_name(d.resources[i]), d.resources[i], NULL);
    if (s->watcher.on_update(s->watcher.ud, d.resources, d.nresources, d.version_info, NULL, why, sizeof why) < 0) {
        sharp_counter_inc(sh, s->st.update_rejected);
        sub_error(s, why, d.version_info);
        snprintf(err, errlen, "%s", why);
        sharp_discovery_free(&d);
        kept_free(next, nnext);
        return -1;
    }
    if (s->some) {
        kept_free(s->kept, s->nkept);
        s->kept = next;
        s->nkept = nnext;
    }
    sub_error(s, NULL, NULL);
    free(s->version);
    s->version = sharp_strdup(d.version_info);
    s->last_updated_us = sharp_wall_us();
    sharp_counter_inc(sh, s->st.update_success);
    sharp_gauge_set(s->x->srv->stats, s->st.update_time, (int64_t)(s->last_updated_us / 1000));
    sharp_gauge_set(s->x->srv->stats, s->st.version, (int64_t)sharp_xxhash64(s->version, strlen(s->version)));
    sharp_discovery_free(&d);
    return 0;
}

static void on_file_changed(void *ud)
{
    sub_t *s = ud;
    char err[1024];
    if (s->x->srv->shutting_down) return;
    int rc = sub_read(s, err, sizeof err);
    if (rc < 0)
        sharp_log_warn("%s: update rejected, the previous configuration stays: %s", s->path, err);
    else if (rc == 0)
        sharp_log_info("%s: version '%s' applied", s->path, s->version);
}

/* ---- gRPC sources: ADS and api_config_source (xds/mux.h) ---- */

/* Envoy's xDS streams have no receive limit of their own; a large CDS or
 * EDS response is legitimate, so SHARP's is well above gRPC's 4 MiB */
#define XDS_MAX_RECV (128u * 1024 * 1024)
/* Envoy's SubscriptionFactory::RetryInitialDelayMs / RetryMaxDelayMs */
#define XDS_BACKOFF_BASE_MS 500
#define XDS_BACKOFF_MAX_MS 30000
/* ConfigSource.initial_fetch_timeout's default */
#define XDS_INITIAL_FETCH_TIMEOUT_MS 15000

static uint64_t dur_ms(const Google__Protobuf__Duration *d)
{
    if (!d || d->seconds < 0) return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)(d->nanos > 0 ? d->nanos : 0) / 1000000;
}

/* Whether a ConfigSource names a gRPC source (ADS, or an api_config_source,
 * whose api_type is checked when the subscription is made). */
static bool grpc_source(const ProtobufCMessage *config_source)
{
    const config_source_t *cs = (const config_source_t *)config_source;
    return cs && (cs->config_source_specifier_case == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS ||
                  cs->config_source_specifier_case ==
                      ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE);
}

static const sharp_xds_type_t *type_of(const ProtobufCMessageDescriptor *d)
{
    const sharp_xds_type_t *all[] = {&sharp_xds_type_rtds, &sharp_xds_type_cds, &sharp_xds_type_eds,
                                     &sharp_xds_type_lds, &sharp_xds_type_rds, &sharp_xds_type_sds};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]->desc == d) return all[i];
    return NULL;
}

static void set_str(char **field, const char *v)
{
    if (*field && *field != protobuf_c_empty_string) free(*field);
    *field = sharp_strdup(v);
}

static void struct_put(Google__Protobuf__Struct *st, const char *key, const char *value)
{
    Google__Protobuf__Struct__FieldsEntry *e = sharp_calloc(1, sizeof *e);
    google__protobuf__struct__fields_entry__init(e);
    e->key = sharp_strdup(key);
    e->value = sharp_calloc(1, sizeof *e->value);
    google__protobuf__value__init(e->value);
    e->value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    e->value->string_value = sharp_strdup(value);
    st->fields = sharp_realloc(st->fields, (st->n_fields + 1) * sizeof *st->fields);
    st->fields[st->n_fields++] = e;
}

/* The node every request names: the bootstrap's (id and cluster from
 * --service-node / --service-cluster where it has none, as SHARP's server
 * info), with SHARP's own user agent where it names none, as Envoy fills
 * in "envoy" and its build version. */
static void build_node(sharp_xds_t *x, const Envoy__Config__Bootstrap__V3__Bootstrap *bs)
{
    Envoy__Config__Core__V3__Node *n = bs->node ? (void *)sharp_config_trimmed_copy(&bs->node->base, NULL, 0) : NULL;
    if (!n) {
        n = sharp_calloc(1, sizeof *n);
        envoy__config__core__v3__node__init(n);
    }
    const sharp_options_t *o = &x->srv->opts;
    if (!n->id[0] && o->service_node) set_str(&n->id, o->service_node);
    if (!n->cluster[0] && o->service_cluster) set_str(&n->cluster, o->service_cluster);
    if (!n->user_agent_name[0]) set_str(&n->user_agent_name, "sharp");
    if (n->user_agent_version_type_case == ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE__NOT_SET) {
        Envoy__Config__Core__V3__BuildVersion *bv = sharp_calloc(1, sizeof *bv);
        envoy__config__core__v3__build_version__init(bv);
        bv->version = sharp_calloc(1, sizeof *bv->version);
        envoy__type__v3__semantic_version__init(bv->version);
        unsigned major = 0, minor = 0, patch = 0;
        sscanf(SHARP_VERSION, "%u.%u.%u", &major, &minor, &patch);
        bv->version->major_number = major;
        bv->version->minor_number = minor;
        bv->version->patch = patch;
        bv->metadata = sharp_calloc(1, sizeof *bv->metadata);
        google__protobuf__struct__init(bv->metadata);
#ifdef NDEBUG
        struct_put(bv->metadata, "build.type", "RELEASE");
#else
        struct_put(bv->metadata, "build.type", "DEBUG");
#endif
        struct_put(bv->metadata, "ssl.version", OpenSSL_version(OPENSSL_VERSION));
        n->user_agent_version_type_case = ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_BUILD_VERSION;
        n->user_agent_build_version = bv;
    }
    x->node = n;
    x->node_ok = n->id[0] && n->cluster[0];
}

static void gsrc_destroy(gsrc_t *g)
{
    sharp_xds_mux_free(g->mux);
    free(g->field);
    free(g->cluster);
    free(g->authority);
    sharp_headers_free(&g->metadata);
    free(g->key);
    free(g->skey);
    free(g);
}

static void gsrc_free(sharp_xds_t *x, gsrc_t *g)
{
    if (g->refs > 1) {
        g->refs--;
        return;
    }
    for (gsrc_t **p = &x->gsrcs; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    if (x->ads == g) x->ads = NULL;
    gsrc_destroy(g);
}

/* Envoy's checks of an ApiConfigSource for a gRPC subscription
 * (checkApiConfigSourceSubscriptionBackingCluster, checkTransportVersion,
 * prepareJitteredExponentialBackOffStrategy, parseRateLimitSettings). */
static int api_source(const Envoy__Config__Core__V3__ApiConfigSource *a, const char *field,
                      sharp_xds_mux_config_t *mc, gsrc_t *g, char *err, size_t errlen)
{
    switch (a->api_type) {
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC:
        mc->delta = false;
        break;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC:
        mc->delta = true;
        break;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__REST:
        snprintf(err, errlen, "%s.api_type: REST (xDS by HTTP polling) is not supported by SHARP; use GRPC or "
                 "DELTA_GRPC", field);
        return -1;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_GRPC:
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__AGGREGATED_DELTA_GRPC:
        snprintf(err, errlen, "%s.api_type: AGGREGATED_GRPC and AGGREGATED_DELTA_GRPC are for xdstp:// "
                 "config_sources, which SHARP does not implement; use GRPC or DELTA_GRPC", field);
        return -1;
    default:
        snprintf(err, errlen, "%s.api_type: REST_LEGACY no longer a supported ApiConfigSource. Please specify an "
                 "explicit supported api_type (GRPC or DELTA_GRPC)", field);
        return -1;
    }
    const char *kind = mc->delta ? "DELTA_GRPC" : "GRPC";
    if (a->n_grpc_services == 0) {
        snprintf(err, errlen, "%s: API configs must have either a gRPC service or a cluster name defined", field);
        return -1;
    }
    if (a->n_grpc_services > 1) {
        snprintf(err, errlen, "%s.grpc_services: envoy.config.core.v3.ApiConfigSource::%s must have a single gRPC "
                 "service specified (SHARP has no xDS failover to a second one)", field, kind);
        return -1;
    }
    if (a->transport_api_version != ENVOY__CONFIG__CORE__V3__API_VERSION__V3) {
        snprintf(err, errlen, "%s.transport_api_version: V2 (and AUTO) xDS transport protocol versions are "
                 "deprecated in envoy.config.core.v3.ApiConfigSource. The v2 xDS major version has been removed and "
                 "is no longer supported. You may be missing explicit V3 configuration of the transport API version, "
                 "see the advice in https://www.envoyproxy.io/docs/envoy/latest/faq/api/envoy_v3.", field);
        return -1;
    }
    const Envoy__Config__Core__V3__GrpcService *gs = a->grpc_services[0];
    if (gs->target_specifier_case != ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !gs->envoy_grpc) {
        snprintf(err, errlen, "%s.grpc_services[0]: envoy_grpc is required", field);
        return -1;
    }
    const Envoy__Config__Core__V3__GrpcService__EnvoyGrpc *eg = gs->envoy_grpc;
    mc->backoff_base_ms = XDS_BACKOFF_BASE_MS;
    mc->backoff_max_ms = XDS_BACKOFF_MAX_MS;
    if (eg->retry_policy && eg->retry_policy->retry_back_off) {
        const Envoy__Config__Core__V3__BackoffStrategy *b = eg->retry_policy->retry_back_off;
        mc->backoff_base_ms = dur_ms(b->base_interval);
        mc->backoff_max_ms = b->max_interval ? dur_ms(b->max_interval) : mc->backoff_base_ms * 10;
        if (mc->backoff_max_ms < mc->backoff_base_ms) {
            snprintf(err, errlen, "%s.grpc_services[0].envoy_grpc.retry_policy.retry_back_off: max_interval must be "
                     "greater than or equal to the base_interval", field);
            return -1;
        }
    }
    if (a->rate_limit_settings) {
        mc->rate_limited = true;
        mc->max_tokens = a->rate_limit_settings->max_tokens ? a->rate_limit_settings->max_tokens->value : 100;
        mc->fill_rate = a->rate_limit_settings->fill_rate ? a->rate_limit_settings->fill_rate->value : 10;
    }
    mc->node_first_only = a->set_node_on_first_message_only;
    g->cluster = sharp_strdup(eg->cluster_name);
    g->authority = sharp_strdup(eg->authority);
    sharp_grpc_initial_metadata(&g->metadata, gs);
    g->klen = protobuf_c_message_get_packed_size(&gs->base);
    g->key = sharp_realloc(NULL, g->klen ? g->klen : 1);
    protobuf_c_message_pack(&gs->base, g->key);
    return 0;
}

/* The source's cluster: static, not EDS (Envoy's rule: the stream must not
 * depend on what it delivers) and HTTP/2. */
static int gsrc_check(gsrc_t *g, const sharp_snapshot_t *snap, char *err, size_t errlen)
{
    const sharp_snapshot_t *base = snap->base ? snap->base : snap;
    const sharp_cluster_t *c = sharp_snapshot_cluster(base, g->cluster);
    if (!c || c->type == SHARP_CLUSTER_EDS || c->aggregate) {
        /* an aggregate cluster is initialized after the primary ones, and
         * Envoy's check takes primary clusters only */
        snprintf(err, errlen, "%s.grpc_services[0].envoy_grpc.cluster_name: envoy.config.core.v3.ApiConfigSource "
                 "must have a statically defined non-EDS cluster: '%s' does not exist, was added via api, or is an "
                 "EDS cluster%s", g->field, g->cluster,
                 c && c->aggregate ? " (it is an aggregate cluster, which is not supported here)" : "");
        return -1;
    }
    if (!c->http2) {
        snprintf(err, errlen, "%s.grpc_services[0].envoy_grpc.cluster_name: gRPC client cluster '%s' does not use "
                 "HTTP/2 (set typed_extension_protocol_options with explicit_http_config.http2_protocol_options, or "
                 "the deprecated http2_protocol_options)", g->field, g->cluster);
        return -1;
    }
    g->checked = true;
    return 0;
}

/* The main loop's client for the source's GrpcService, shared by sources
 * with the same one. */
static sharp_grpc_client_t *grpc_client(sharp_xds_t *x, gsrc_t *g, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < x->nclients; i++)
        if (x->clients[i].klen == g->klen && !memcmp(x->clients[i].key, g->key, g->klen)) return x->clients[i].c;
    sharp_snapshot_t *base = x->srv->snap->base ? x->srv->snap->base : x->srv->snap;
    sharp_grpc_client_config_t cfg = {.cluster_name = g->cluster, .authority = g->authority,
                                      .initial_metadata = &g->metadata, .max_recv_bytes = XDS_MAX_RECV};
    sharp_grpc_client_t *c = sharp_grpc_client_create(&x->srv->upstream_env, base, &cfg, err, errlen);
    if (!c) return NULL;
    x->clients = sharp_realloc(x->clients, (x->nclients + 1) * sizeof *x->clients);
    grpc_client_t *gc = &x->clients[x->nclients++];
    gc->c = c;
    gc->klen = g->klen;
    gc->key = sharp_realloc(NULL, g->klen ? g->klen : 1);
    memcpy(gc->key, g->key, g->klen);
    return c;
}

static void gsrc_start(sharp_xds_t *x, gsrc_t *g)
{
    char err[512];
    if (!x->loop || !x->srv->snap) return;
    sharp_grpc_client_t *c = grpc_client(x, g, err, sizeof err);
    if (!c) { /* the source was checked: only a cluster gone from the snapshot gets here */
        sharp_log_error("%s: %s", g->field, err);
        return;
    }
    sharp_xds_mux_start(g->mux, x->loop, c);
}

/* A gRPC source from an ApiConfigSource: `name` names it in logs, `who`
 * in the node check, `stats_prefix` its control_plane.* stats. */
static gsrc_t *gsrc_new(sharp_xds_t *x, const Envoy__Config__Core__V3__ApiConfigSource *a, const char *field,
                        const char *name, const char *who, const sharp_xds_type_t *only, const char *stats_prefix,
                        char *err, size_t errlen)
{
    gsrc_t *g = sharp_calloc(1, sizeof *g);
    sharp_headers_init(&g->metadata);
    g->field = sharp_strdup(field);
    sharp_xds_mux_config_t mc = {.name = name, .only = only, .stats_prefix = stats_prefix};
    if (api_source(a, field, &mc, g, err, errlen) < 0) {
        gsrc_destroy(g);
        return NULL;
    }
    if (!x->node_ok) {
        /* Envoy's checkLocalInfo */
        snprintf(err, errlen, "%s: node 'id' and 'cluster' are required. Set it either in 'node' config or via "
                 "--service-node and --service-cluster options.", who);
        gsrc_destroy(g);
        return NULL;
    }
    /* made after the bootstrap was built (a cluster from CDS): checked now;
     * the bootstrap's sources once it is built (sharp_xds_check_sources) */
    if (x->srv->snap && gsrc_check(g, x->srv->snap, err, errlen) < 0) {
        gsrc_destroy(g);
        return NULL;
    }
    g->mux = sharp_xds_mux_new(x->srv->stats, &mc, &x->node->base);
    gsrc_t **p = &x->gsrcs;
    while (*p) p = &(*p)->next;
    *p = g;
    if (x->grpc_started) gsrc_start(x, g);
    return g;
}

const ProtobufCMessage *sharp_xds_node(const sharp_xds_t *x)
{
    return x && x->node ? &x->node->base : NULL;
}

int sharp_xds_configure(sharp_xds_t *x, const ProtobufCMessage *bootstrap, char *err, size_t errlen)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = (const void *)bootstrap;
    build_node(x, bs);
    const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = bs->dynamic_resources;
    if (dr && dr->ads_config) {
        x->ads = gsrc_new(x, dr->ads_config, "dynamic_resources.ads_config", "ads", "ads", NULL, "", err, errlen);
        if (!x->ads) return -1;
    }
    /* Envoy's order: the RTDS layers first (LoaderImpl's init manager,
     * started once the static clusters are initialized), then CDS and the
     * rest; subscriptions made from now on wait for the layers */
    const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr = bs->layered_runtime;
    for (size_t i = 0; lr && i < lr->n_layers; i++)
        if (lr->layers[i]->layer_specifier_case ==
                ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_RTDS_LAYER &&
            lr->layers[i]->rtds_layer->rtds_config && grpc_source(&lr->layers[i]->rtds_layer->rtds_config->base))
            x->rtds_waiting++;
    return 0;
}

int sharp_xds_check_sources(sharp_xds_t *x, const sharp_snapshot_t *snap, char *err, size_t errlen)
{
    for (gsrc_t *g = x->gsrcs; g; g = g->next)
        if (!g->checked && gsrc_check(g, snap, err, errlen) < 0) return -1;
    return 0;
}

static void on_init_timer(uv_timer_t *t)
{
    sharp_xds_t *x = t->data;
    if (x->init_fired || x->init_pending || !x->init_cb) return;
    x->init_fired = true;
    sharp_info(config, "xDS: the initial fetch of every gRPC subscription is done (or timed out)");
    x->init_cb(x->init_arg);
}

/* The subscription's initial fetch is over (an update, accepted or not, a
 * resource that does not exist, or initial_fetch_timeout). */
static void init_done(sub_t *s)
{
    sharp_xds_t *x = s->x;
    if (!s->init_pending) return;
    s->init_pending = false;
    x->init_pending--;
    if (!x->init_pending && x->init_timer_on && !x->init_fired) uv_timer_start(&x->init_timer, on_init_timer, 0, 0);
}

/* The initial fetch is over: the start is no longer held back by it, and
 * what waits for it goes on (a warming cluster, warming listeners). */
static void fetch_done(sub_t *s)
{
    init_done(s);
    if (s->fetched) return;
    s->fetched = true;
    if (s->on_fetched) s->on_fetched(s->fetched_arg);
}

/* An update from a gRPC stream: counted as Envoy's GrpcSubscriptionImpl
 * counts it, then the watcher. Resources the mux refused alone (a field
 * SHARP does not implement) make the update a rejected one, as a resource
 * Envoy cannot build does, while the rest applies: they get their error
 * state (a cluster's, a listener's) here. */
static void cds_errors_clear(sharp_xds_t *x);
static void cds_error_add(sharp_xds_t *x, sharp_sbuf_t *errs, const char *name, const char *msg);

static int sub_apply(sub_t *s, ProtobufCMessage **res, size_t n, const char *version, bool *refused,
                     sharp_xds_refusal_t *refusals, size_t nrefusals, char *err, size_t errlen)
{
    sharp_xds_t *x = s->x;
    sharp_stats_shard_t *sh = shard0(x);
    sharp_counter_inc(sh, s->st.update_attempt);
    int rc = s->watcher.on_update(s->watcher.ud, res, n, version, refused, err, errlen);
    if (rc < 0 || nrefusals) {
        sharp_sbuf_t why = {0};
        for (size_t i = 0; i < nrefusals; i++)
            sharp_sbuf_printf(&why, "%s%s: %s", why.len ? ", " : "", refusals[i].name, refusals[i].why);
        if (rc < 0) sharp_sbuf_printf(&why, "%s%s", why.len ? "; " : "", err);
        sharp_counter_inc(sh, s->st.update_rejected);
        sub_error(s, sharp_sbuf_cstr(&why), version);
        sharp_sbuf_free(&why);
        if (nrefusals && s == x->cds) {
            sharp_sbuf_t ignored = {0};
            for (size_t i = 0; i < nrefusals; i++) cds_error_add(x, &ignored, refusals[i].name, refusals[i].why);
            sharp_sbuf_free(&ignored);
            x->cds_error_us = sharp_wall_us();
            free(x->cds_error_version);
            x->cds_error_version = sharp_strdup(version ? version : "");
        }
        if (nrefusals && x->lds && s->watcher.ud == (void *)x->lds)
            for (size_t i = 0; i < nrefusals; i++)
                sharp_lds_refused(x->lds, refusals[i].name, refusals[i].why, &refusals[i].resource);
        return rc;
    }
    sub_error(s, NULL, NULL);
    free(s->version);
    s->version = sharp_strdup(version);
    s->last_updated_us = sharp_wall_us();
    sharp_counter_inc(sh, s->st.update_success);
    sharp_gauge_set(x->srv->stats, s->st.update_time, (int64_t)(s->last_updated_us / 1000));
    sharp_gauge_set(x->srv->stats, s->st.version, (int64_t)sharp_xxhash64(s->version, strlen(s->version)));
    return 0;
}

static int grpc_on_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused,
                          sharp_xds_refusal_t *refusals, size_t nrefusals, char *err, size_t errlen)
{
    sub_t *s = ud;
    int rc = sub_apply(s, res, n, version, refused, refusals, nrefusals, err, errlen);
    /* a named resource the server says is absent ends the initial fetch of
     * EDS only (the mux's timer goes on for RDS) */
    const sharp_xds_type_t *t = type_of(s->type);
    if (n || !t || t->wildcard || t->absent_ends_fetch) fetch_done(s);
    return rc;
}


static void grpc_on_failure(void *ud, sharp_xds_fail_t why, const char *detail, const char *version,
                            const sharp_xds_resource_error_t *errs, size_t nerrs)
{
    sub_t *s = ud;
    sharp_stats_shard_t *sh = shard0(s->x);
    switch (why) {
    case SHARP_XDS_FAIL_CONNECTION:
        /* the stream, not the configuration: nothing changes and the
         * initial fetch goes on waiting (Envoy) */
        sharp_counter_inc(sh, s->st.update_attempt);
        sharp_counter_inc(sh, s->st.update_failure);
        break;
    case SHARP_XDS_FAIL_TIMEOUT:
        /* Envoy: the subscriber goes on with what it has (a warming EDS
         * cluster becomes active without endpoints, a warming listener
         * without its routes) */
        sharp_counter_inc(sh, s->st.update_attempt);
        sharp_counter_inc(sh, s->st.init_fetch_timeout);
        fetch_done(s);
        break;
    case SHARP_XDS_FAIL_REJECTED:
        sharp_counter_inc(sh, s->st.update_attempt);
        sharp_counter_inc(sh, s->st.update_rejected);
        sub_error(s, detail, version);
        if (s == s->x->cds) { /* which clusters, for their error_state */
            sharp_xds_t *x = s->x;
            sharp_sbuf_t ignored = {0};
            cds_errors_clear(x);
            for (size_t i = 0; i < nerrs; i++) cds_error_add(x, &ignored, errs[i].name, errs[i].msg);
            sharp_sbuf_free(&ignored);
            x->cds_error_us = sharp_wall_us();
            x->cds_error_version = sharp_strdup(version ? version : "");
        }
        fetch_done(s);
        break;
    }
}

/* A subscription on a gRPC source: `name` for EDS and RDS, NULL for the
 * whole type (CDS, LDS). What the stream already has of the named resource
 * is applied now (a cluster CDS replaced keeps its endpoints); the rest
 * comes from the stream, and until its first update (or its
 * initial_fetch_timeout, 15 s by default) the subscription holds the
 * server's start back. */
static sub_t *grpc_sub_new(sharp_xds_t *x, const ProtobufCMessageDescriptor *type,
                           const ProtobufCMessage *config_source, const char *name, const char *prefix,
                           const char *field, sharp_xds_watcher_t w, char *err, size_t errlen)
{
    const config_source_t *cs = (const config_source_t *)config_source;
    const sharp_xds_type_t *t = type_of(type);
    gsrc_t *g, *own = NULL;
    char what[600];
    if (cs->config_source_specifier_case == ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
        if (!x->ads) {
            snprintf(err, errlen, "%s.ads: ADS must be configured to support an ADS config source "
                     "(dynamic_resources.ads_config)", field);
            return NULL;
        }
        g = x->ads;
        snprintf(what, sizeof what, "ADS (cluster '%s')", g->cluster);
    } else {
        size_t sklen = protobuf_c_message_get_packed_size(&cs->api_config_source->base);
        uint8_t *skey = sharp_realloc(NULL, sklen ? sklen : 1);
        protobuf_c_message_pack(&cs->api_config_source->base, skey);
        for (g = x->gsrcs; g; g = g->next)
            if (g->stype == type && g->sklen == sklen && !memcmp(g->skey, skey, sklen)) break;
        if (g) {
            g->refs++;
            free(skey);
        } else {
            /* its control_plane.* stats are under the first subscription's
             * prefix, as Envoy's are under the subscription's scope */
            char f[1024], sp[1024];
            snprintf(f, sizeof f, "%s.api_config_source", field);
            snprintf(sp, sizeof sp, "%s.", prefix);
            g = gsrc_new(x, cs->api_config_source, f, prefix, t->type_url, t, sp, err, errlen);
            if (!g) {
                free(skey);
                return NULL;
            }
            g->skey = skey;
            g->sklen = sklen;
            g->stype = type;
            g->refs = 1;
        }
        own = g;
        snprintf(what, sizeof what, "%s (cluster '%s')", t->short_name, g->cluster);
    }
    sub_t *s = sharp_calloc(1, sizeof *s);
    s->x = x;
    s->type = type;
    s->path = sharp_strdup(what);
    s->watcher = w;
    s->own = own;
    sub_stats(s, prefix);
    /* Envoy counts the subscription's start as an attempt */
    sharp_counter_inc(shard0(x), s->st.update_attempt);
    s->next = x->subs;
    x->subs = s;
    if (!x->init_fired) {
        s->init_pending = true;
        x->init_pending++;
    }
    uint64_t timeout = cs->initial_fetch_timeout ? dur_ms(cs->initial_fetch_timeout) : XDS_INITIAL_FETCH_TIMEOUT_MS;
    if (x->rtds_waiting && t != &sharp_xds_type_rtds) {
        s->deferred = true;
        s->dsrc = g;
        s->dname = name ? sharp_strdup(name) : NULL;
        s->dtimeout = timeout;
        return s;
    }
    sharp_xds_mux_watcher_t mw = {grpc_on_update, grpc_on_failure, s};
    s->gw = sharp_xds_mux_watch(g->mux, t, name, timeout, &mw);
    const char *version;
    ProtobufCMessage *cached = name ? sharp_xds_mux_cached(s->gw, &version) : NULL;
    if (cached) {
        char why[1024];
        ProtobufCMessage *one[1] = {cached};
        if (sub_apply(s, one, 1, version, NULL, NULL, 0, why, sizeof why) < 0)
            sharp_log_warn("%s: %s '%s' held by the stream is refused: %s", field, t->kind, name, why);
        if (one[0]) protobuf_c_message_free_unpacked(one[0], NULL);
        fetch_done(s); /* nobody waits for it yet */
    }
    return s;
}

bool sharp_xds_grpc_source(const ProtobufCMessage *config_source)
{
    return grpc_source(config_source);
}

sharp_xds_sub_t *sharp_xds_secret_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *name,
                                            const char *field, sharp_xds_watcher_t w, char *err, size_t errlen)
{
    char prefix[600];
    snprintf(prefix, sizeof prefix, "sds.%s", name);
    return (sharp_xds_sub_t *)grpc_sub_new(x, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                                           config_source, name, prefix, field, w, err, errlen);
}

void sharp_xds_unsubscribe(sharp_xds_sub_t *s)
{
    sub_free((sub_t *)s);
}

bool sharp_xds_sub_fetched(const sharp_xds_sub_t *s)
{
    return ((const sub_t *)s)->fetched;
}

void sharp_xds_sub_on_fetched(sharp_xds_sub_t *s, void (*fn)(void *arg), void *arg)
{
    ((sub_t *)s)->on_fetched = fn;
    ((sub_t *)s)->fetched_arg = arg;
}

void sharp_xds_initialize(sharp_xds_t *x, void (*cb)(void *arg), void *arg)
{
    x->init_cb = cb;
    x->init_arg = arg;
    if (x->loop && !x->init_timer_on) {
        uv_timer_init(x->loop, &x->init_timer);
        x->init_timer.data = x;
        x->init_timer_on = true;
    }
    x->grpc_started = true;
    for (gsrc_t *g = x->gsrcs; g; g = g->next) gsrc_start(x, g);
    if (!x->init_pending) {
        x->init_fired = true;
        cb(arg);
        return;
    }
    sharp_info(config, "xDS: waiting for the initial fetch of %u gRPC subscription(s) (each bounded by its "
               "initial_fetch_timeout)", x->init_pending);
}

/* ---- the manager ---- */

sharp_xds_t *sharp_xds_new(sharp_server_t *srv)
{
    sharp_xds_t *x = sharp_calloc(1, sizeof *x);
    x->srv = srv;
    x->version = 1;
    return x;
}

int sharp_xds_start(sharp_xds_t *x, uv_loop_t *loop, char *err, size_t errlen)
{
    x->loop = loop;
    for (sub_t *s = x->subs; s; s = s->next)
        if (sub_watch(s, err, errlen) < 0) return -1;
    return 0;
}

void sharp_xds_stop(sharp_xds_t *x)
{
    if (!x) return;
    sharp_lds_stop(x->lds);
    for (warm_t *w = x->warming; w; w = w->next) sharp_dns_stop(w->d.c); /* not in any snapshot */
    for (sub_t *s = x->subs; s; s = s->next) {
        sharp_path_source_free(s->watch);
        s->watch = NULL;
    }
    /* the streams end (a control plane sees the client go) and the clients
     * close their connections while the loop still runs */
    for (gsrc_t *g = x->gsrcs; g; g = g->next) sharp_xds_mux_stop(g->mux);
    for (uint32_t i = 0; i < x->nclients; i++) {
        sharp_grpc_client_destroy(x->clients[i].c);
        free(x->clients[i].key);
    }
    free(x->clients);
    x->clients = NULL;
    x->nclients = 0;
    x->grpc_started = false;
    if (x->init_timer_on) uv_close((uv_handle_t *)&x->init_timer, NULL);
    x->init_timer_on = false;
    x->loop = NULL;
}

static void cds_errors_clear(sharp_xds_t *x)
{
    for (uint32_t i = 0; i < x->ncds_errors; i++) {
        free(x->cds_errors[i].name);
        free(x->cds_errors[i].msg);
    }
    free(x->cds_errors);
    free(x->cds_error_version);
    x->cds_errors = NULL;
    x->ncds_errors = 0;
    x->cds_error_version = NULL;
}

void sharp_xds_free(sharp_xds_t *x)
{
    if (!x) return;
    for (uint32_t i = 0; i < x->nrds; i++) {
        sub_free(x->rds[i]->sub);
        sharp_rds_table_unref(x->rds[i]->cur);
        free(x->rds[i]->name);
        free(x->rds[i]->path);
        free(x->rds[i]);
    }
    free(x->rds);
    for (uint32_t i = 0; i < x->nrtds; i++) {
        sub_free(x->rtds[i]->sub);
        free(x->rtds[i]->name);
        free(x->rtds[i]);
    }
    free(x->rtds);
    for (uint32_t i = 0; i < x->nclusters; i++) {
        dyn_cluster_t *d = &x->clusters[i];
        sharp_xds_eds_free(d->c->eds);
        d->c->eds = NULL;
        sharp_cluster_unref(d->c);
        protobuf_c_message_free_unpacked(d->pb, NULL);
        free(d->packed);
        free(d->version);
    }
    free(x->clusters);
    while (x->warming) {
        warm_t *w = x->warming;
        x->warming = w->next;
        sharp_xds_eds_free(w->d.c->eds);
        w->d.c->eds = NULL;
        sharp_cluster_unref(w->d.c);
        protobuf_c_message_free_unpacked(w->d.pb, NULL);
        free(w->d.packed);
        free(w->d.version);
        free(w);
    }
    sub_free(x->cds);
    sub_free(x->lds_sub);
    sharp_lds_free(x->lds);
    while (x->subs) sub_free(x->subs); /* EDS subscriptions of clusters still referenced */
    while (x->gsrcs) gsrc_free(x, x->gsrcs); /* ADS */
    for (uint32_t i = 0; i < x->nclients; i++) { /* never stopped: the loop never ran */
        sharp_grpc_client_destroy(x->clients[i].c);
        free(x->clients[i].key);
    }
    free(x->clients);
    if (x->node) protobuf_c_message_free_unpacked(&x->node->base, NULL);
    cds_errors_clear(x);
    free(x->cds_version);
    free(x);
}

void sharp_xds_hold(sharp_xds_t *x)
{
    x->hold++;
}

void sharp_xds_release(sharp_xds_t *x)
{
    if (--x->hold || !x->publish_pending) return;
    x->publish_pending = false;
    if (x->srv->snap) sharp_xds_publish(x);
}

void sharp_xds_publish(sharp_xds_t *x)
{
    if (x->hold) {
        x->publish_pending = true;
        return;
    }
    sharp_server_t *srv = x->srv;
    sharp_snapshot_t *base = srv->snap->base ? srv->snap->base : srv->snap;
    /* the bootstrap's listeners, then LDS's */
    sharp_listener_config_t **dl;
    size_t ndl = sharp_lds_listeners(x->lds, &dl);
    uint32_t nl = base->nlisteners + (uint32_t)ndl;
    sharp_listener_config_t **ls = sharp_calloc(nl ? nl : 1, sizeof *ls);
    for (uint32_t i = 0; i < base->nlisteners; i++) ls[i] = base->listeners[i];
    for (size_t i = 0; i < ndl; i++) ls[base->nlisteners + i] = dl[i];
    uint32_t n = base->nclusters + x->nclusters;
    sharp_cluster_t **cl = sharp_calloc(n ? n : 1, sizeof *cl);
    for (uint32_t i = 0; i < base->nclusters; i++) cl[i] = base->clusters[i];
    for (uint32_t i = 0; i < x->nclusters; i++) cl[base->nclusters + i] = x->clusters[i].c;
    sharp_rds_table_t **rds = sharp_calloc(x->nrds ? x->nrds : 1, sizeof *rds);
    for (uint32_t i = 0; i < x->nrds; i++) rds[i] = x->rds[i]->cur;
    sharp_snapshot_t *s = sharp_snapshot_derive(base, ls, nl, cl, n, rds, x->nrds, ++x->version);
    free(ls);
    free(cl);
    free(rds);
    sharp_server_set_snapshot(srv, s);
    sharp_snapshot_unref(s);
}

/* ---- RDS ---- */

static bool same_message(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na = protobuf_c_message_get_packed_size(a), nb = protobuf_c_message_get_packed_size(b);
    if (na != nb) return false;
    uint8_t *pa = sharp_realloc(NULL, na ? na : 1), *pb = sharp_realloc(NULL, nb ? nb : 1);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    bool same = !memcmp(pa, pb, na);
    free(pa);
    free(pb);
    return same;
}

static int rds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused, char *err,
                      size_t errlen)
{
    (void)refused;
    rds_t *r = ud;
    sharp_xds_t *x = r->x; /* r->sub is not set yet when the stream already had it */
    ProtobufCMessage *found = NULL;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const rc_t *rc = (const rc_t *)res[i];
        if (strcmp(rc->name, r->name) != 0) continue; /* another route configuration of the file */
        if (found) {
            snprintf(err, errlen, "duplicate RouteConfiguration '%s' (resources[%zu] and [%zu])", r->name, at, i);
            return -1;
        }
        found = res[i];
        at = i;
    }
    if (!found) {
        /* the state of the world without this route configuration: Envoy's
         * RDS keeps the one it has (a route is never removed by absence) */
        sharp_log_info("RDS %s: no RouteConfiguration '%s' in version '%s'", r->sub->path, r->name, version);
        return 0;
    }
    if (r->cur && same_message(found, r->cur->pb)) {
        /* Envoy's RouteConfigUpdateReceiverImpl: an identical configuration
         * (a state-of-the-world push of other resources) changes nothing */
        return 0;
    }
    char rerr[1024] = "";
    sharp_route_table_t *t = sharp_route_table_create((const rc_t *)found, rerr, sizeof rerr);
    if (!t) {
        snprintf(err, errlen, "resources[%zu]: RouteConfiguration '%s': %s", at, r->name, rerr);
        return -1;
    }
    sharp_rds_table_t *nt = sharp_calloc(1, sizeof *nt);
    atomic_init(&nt->refs, 1);
    nt->table = t;
    nt->pb = found;
    res[at] = NULL; /* kept for /config_dump */
    nt->version_info = sharp_strdup(version);
    nt->last_updated_us = sharp_wall_us();
    sharp_info(config, "rds: loading new configuration: config_name=%s version=%s", r->name, version);
    sharp_rds_table_unref(r->cur);
    r->cur = nt;
    if (x->srv->snap) sharp_xds_publish(x);
    return 0;
}

/* A route configuration's initial fetch is over: listeners warming on it
 * may be ready. */
static void rds_fetched(void *arg)
{
    sharp_xds_t *x = arg;
    if (x->lds) sharp_lds_routes_ready(x->lds);
}

bool sharp_xds_rds_fetched(const sharp_xds_t *x, int32_t index)
{
    return !x || index < 0 || (uint32_t)index >= x->nrds || x->rds[index]->sub->fetched;
}

int sharp_xds_rds_subscribe(sharp_xds_t *x, const ProtobufCMessage *rds_msg, const char *stat_prefix,
                            const char *field, char *err, size_t errlen)
{
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds = (const void *)rds_msg;
    const char *path, *wdir;
    char f[1024], key[64];
    snprintf(f, sizeof f, "%s.config_source", field);
    bool grpc = grpc_source(&rds->config_source->base);
    if (grpc) {
        /* shared by source and name as the files: the source is its bytes */
        size_t n = protobuf_c_message_get_packed_size(&rds->config_source->base);
        uint8_t *b = sharp_realloc(NULL, n ? n : 1);
        protobuf_c_message_pack(&rds->config_source->base, b);
        snprintf(key, sizeof key, "grpc:%016llx", (unsigned long long)sharp_xxhash64(b, n));
        free(b);
        path = key;
        wdir = NULL;
    } else if (sharp_xds_config_source_path(&rds->config_source->base, f, &path, &wdir, err, errlen) < 0) {
        return -1;
    }
    /* Envoy's RdsRouteConfigProviderImpl is shared by source and name */
    for (uint32_t i = 0; i < x->nrds; i++)
        if (!strcmp(x->rds[i]->name, rds->route_config_name) && !strcmp(x->rds[i]->path, path)) return (int)i;
    rds_t *r = sharp_calloc(1, sizeof *r);
    r->x = x;
    r->name = sharp_strdup(rds->route_config_name);
    r->path = sharp_strdup(path);
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "http.%s.rds.%s", stat_prefix, rds->route_config_name);
    sharp_xds_watcher_t w = {rds_update, r};
    if (grpc)
        r->sub = grpc_sub_new(x, &envoy__config__route__v3__route_configuration__descriptor,
                              &rds->config_source->base, rds->route_config_name, prefix, f, w, err, errlen);
    else
        r->sub = sub_new(x, &envoy__config__route__v3__route_configuration__descriptor, path, wdir, prefix, f, w, err,
                         errlen);
    if (!r->sub) {
        free(r->name);
        free(r->path);
        free(r);
        return -1;
    }
    r->sub->on_fetched = rds_fetched;
    r->sub->fetched_arg = x;
    x->rds = sharp_realloc(x->rds, (x->nrds + 1) * sizeof *x->rds);
    x->rds[x->nrds++] = r;
    if (grpc) return (int)(x->nrds - 1); /* the stream brings it */
    char why[1024];
    if (sub_read(r->sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: route configuration '%s' from %s: %s", f, rds->route_config_name, path, why);
        return -1;
    }
    return (int)(x->nrds - 1);
}

/* ---- RTDS ---- */

/* Envoy's RtdsSubscription::onConfigUpdate: exactly one resource, the one
 * subscribed, whose layer replaces the layer's values (later layers still
 * override it); a gRPC update without it is an incremental removal (or a
 * resource the server says does not exist: the mux tells no more), which
 * clears the layer (onConfigRemoved). A layer that does not flatten is
 * rejected and the previous values stay (Envoy would keep the bad layer
 * and fail every later snapshot). */
static int rtds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused, char *err,
                       size_t errlen)
{
    (void)refused;
    rtds_t *r = ud;
    sharp_runtime_t *rt = r->x->srv->runtime;
    sharp_runtime_values_t v = {0};
    if (n == 0 && !r->sub->file) {
        sharp_runtime_set_layer_values(rt, r->layer, &v);
        sharp_info(runtime, "RTDS: runtime layer '%s' removed by the server: its values are cleared", r->name);
    } else {
        if (n != 1) {
            snprintf(err, errlen, "Unexpected RTDS resource length, number of added resources %zu, number of "
                     "removed resources 0", n);
            return -1;
        }
        const Envoy__Service__Runtime__V3__Runtime *m = (const void *)res[0];
        if (strcmp(m->name, r->name) != 0) {
            snprintf(err, errlen, "Unexpected RTDS runtime (expecting %s): %s", r->name, m->name);
            return -1;
        }
        char ep[1024], em[1024];
        if (sharp_config_runtime_struct(m->layer, "layer", &v, ep, sizeof ep, em, sizeof em) < 0) {
            sharp_runtime_values_free(&v);
            snprintf(err, errlen, "Runtime '%s': %s: %s", r->name, ep, em);
            return -1;
        }
        uint32_t nkeys = v.n;
        sharp_runtime_set_layer_values(rt, r->layer, &v);
        sharp_debug(runtime, "RTDS: runtime layer '%s' version '%s' applied (%u key(s))", r->name,
                    version ? version : "", nkeys);
    }
    /* later regexes (CDS, LDS) see the layer's re2.max_program_size limits */
    char p[64], m[256];
    sharp_config_runtime_regex_limits(rt, NULL, false, p, sizeof p, m, sizeof m);
    return 0;
}

/* Every gRPC RTDS layer's initial fetch is over (Envoy's "RTDS has
 * finished initialization"): the subscriptions that waited make their
 * watches, in the order they were made. */
static void rtds_fetched(void *arg)
{
    rtds_t *r = arg;
    sharp_xds_t *x = r->x;
    if (!x->rtds_waiting || --x->rtds_waiting) return;
    sharp_info(config, "xDS: RTDS has finished initialization");
    size_t n = 0;
    for (sub_t *s = x->subs; s; s = s->next) n += s->deferred;
    if (!n) return;
    sub_t **v = sharp_calloc(n, sizeof *v);
    size_t k = n;
    for (sub_t *s = x->subs; s; s = s->next) /* x->subs is newest first */
        if (s->deferred) v[--k] = s;
    for (size_t i = 0; i < n; i++) {
        sub_t *s = v[i];
        s->deferred = false;
        sharp_xds_mux_watcher_t mw = {grpc_on_update, grpc_on_failure, s};
        s->gw = sharp_xds_mux_watch(s->dsrc->mux, type_of(s->type), s->dname, s->dtimeout, &mw);
    }
    free(v);
}

int sharp_xds_rtds_subscribe(sharp_xds_t *x, int layer, const ProtobufCMessage *rtds_layer, const char *field,
                             char *err, size_t errlen)
{
    const Envoy__Config__Bootstrap__V3__RuntimeLayer__RtdsLayer *l = (const void *)rtds_layer;
    char f[1024];
    snprintf(f, sizeof f, "%s.rtds_config", field);
    if (!l->name[0]) {
        /* a Runtime's name is never empty (min_len 1): such a layer would
         * wait for what cannot come */
        snprintf(err, errlen, "%s.name: the name of the Runtime resource to subscribe to is required", field);
        return -1;
    }
    if (!l->rtds_config) {
        /* Envoy's subscriptionFromConfigSource on a default ConfigSource */
        snprintf(err, errlen, "%s: Missing config source specifier in envoy::config::core::v3::ConfigSource", f);
        return -1;
    }
    const char *path = NULL, *wdir = NULL;
    bool grpc = grpc_source(&l->rtds_config->base);
    if (!grpc && sharp_xds_config_source_path(&l->rtds_config->base, f, &path, &wdir, err, errlen) < 0) return -1;
    rtds_t *r = sharp_calloc(1, sizeof *r);
    r->x = x;
    r->name = sharp_strdup(l->name);
    r->layer = layer;
    /* Envoy's RtdsSubscription counts under the "runtime" scope: every
     * RTDS layer shares runtime.update_success and the others */
    sharp_xds_watcher_t w = {rtds_update, r};
    if (grpc)
        r->sub = grpc_sub_new(x, &envoy__service__runtime__v3__runtime__descriptor, &l->rtds_config->base, l->name,
                              "runtime", f, w, err, errlen);
    else
        r->sub = sub_new(x, &envoy__service__runtime__v3__runtime__descriptor, path, wdir, "runtime", f, w, err,
                         errlen);
    if (!r->sub) {
        free(r->name);
        free(r);
        return -1;
    }
    x->rtds = sharp_realloc(x->rtds, (x->nrtds + 1) * sizeof *x->rtds);
    x->rtds[x->nrtds++] = r;
    if (grpc) { /* the stream brings it */
        r->sub->on_fetched = rtds_fetched;
        r->sub->fetched_arg = r;
        return 0;
    }
    char why[1024];
    if (sub_read(r->sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: runtime layer '%s' from %s: %s", f, l->name, path, why);
        return -1;
    }
    return 0;
}

/* ---- EDS ---- */

static int eds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused, char *err,
                      size_t errlen)
{
    (void)refused;
    sharp_xds_eds_t *e = ud;
    sharp_cluster_t *c = e->c;
    sharp_stats_shard_t *sh = shard0(e->x);
    /* Envoy's EdsClusterImpl: no resource is update_empty and changes
     * nothing; more than one, or another cluster's, is refused */
    if (n == 0) {
        sharp_counter_inc(sh, c->st.update_empty);
        sharp_log_info("EDS %s: missing ClusterLoadAssignment for %s", e->sub->path, c->eds_service_name);
        return 0;
    }
    if (n > 1) {
        snprintf(err, errlen, "Unexpected EDS resource length: %zu (expected 1)", n);
        return -1;
    }
    const cla_t *cla = (const cla_t *)res[0];
    if (strcmp(cla->cluster_name, c->eds_service_name) != 0) {
        snprintf(err, errlen, "Unexpected EDS cluster (expecting %s): %s", c->eds_service_name, cla->cluster_name);
        return -1;
    }
    sharp_host_t **hosts;
    uint32_t nhosts;
    bool changed = false;
    if (sharp_config_cla_hosts(c, cla, "resources[0]", &hosts, &nhosts, &changed, err, errlen) < 0) return -1;
    if (!c->set) { /* the first read, while the cluster is built: its first set */
        free(c->hosts);
        c->hosts = hosts;
        c->nhosts = nhosts;
        return 0;
    }
    if (!changed) {
        sharp_counter_inc(sh, c->st.update_no_rebuild);
        free(hosts);
        return 0;
    }
    sharp_counter_inc(sh, c->st.membership_change);
    sharp_info(config, "eds: cluster '%s': %u host(s) (version '%s')", c->name, nhosts, version);
    sharp_cluster_publish_hosts(c, hosts, nhosts);
    free(hosts);
    return 0;
}

int sharp_xds_eds_subscribe(sharp_xds_t *x, sharp_cluster_t *c, const ProtobufCMessage *eds_cluster_config,
                            const char *field, char *err, size_t errlen)
{
    const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = (const void *)eds_cluster_config;
    char f[1024];
    if (!ec) {
        snprintf(err, errlen, "%s: an EDS cluster needs eds_cluster_config with an eds_config", field);
        return -1;
    }
    snprintf(f, sizeof f, "%s.eds_config", field);
    const char *path, *wdir;
    bool grpc = grpc_source(&ec->eds_config->base);
    if (!grpc && sharp_xds_config_source_path(&ec->eds_config->base, f, &path, &wdir, err, errlen) < 0) return -1;
    c->eds_service_name = sharp_strdup(ec->service_name[0] ? ec->service_name : c->name);
    c->eds_service_name_set = ec->service_name[0] != '\0';
    sharp_xds_eds_t *e = sharp_calloc(1, sizeof *e);
    e->x = x;
    e->c = c;
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "cluster.%s", c->stat_name);
    sharp_xds_watcher_t w = {eds_update, e};
    if (grpc) {
        /* the cluster starts with what the stream has of its endpoints (a
         * cluster CDS replaced), else with none until they come */
        c->eds = e;
        e->sub = grpc_sub_new(x, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
                              &ec->eds_config->base, c->eds_service_name, prefix, f, w, err, errlen);
        if (!e->sub) {
            c->eds = NULL;
            free(e);
            return -1;
        }
        return 0;
    }
    e->sub = sub_new(x, &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, path, wdir, prefix, f, w,
                     err, errlen);
    if (!e->sub) {
        free(e);
        return -1;
    }
    c->eds = e;
    char why[1024];
    if (sub_read(e->sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: endpoints of cluster '%s' from %s: %s", f, c->name, path, why);
        return -1;
    }
    return 0;
}

void sharp_xds_eds_free(sharp_xds_eds_t *e)
{
    if (!e) return;
    sub_free(e->sub);
    free(e);
}

/* ---- CDS ---- */

static bool is_static(const sharp_xds_t *x, const char *name)
{
    const sharp_snapshot_t *base = x->srv->snap ? (x->srv->snap->base ? x->srv->snap->base : x->srv->snap) : NULL;
    return base && sharp_snapshot_cluster(base, name) != NULL;
}

static void cds_error_add(sharp_xds_t *x, sharp_sbuf_t *errs, const char *name, const char *msg)
{
    /* Envoy's CdsApiHelper: every cluster that failed, "name: reason" */
    sharp_sbuf_printf(errs, "%s%s: %s", errs->len ? ", " : "", name, msg);
    x->cds_errors = sharp_realloc(x->cds_errors, (x->ncds_errors + 1) * sizeof *x->cds_errors);
    x->cds_errors[x->ncds_errors].name = sharp_strdup(name);
    x->cds_errors[x->ncds_errors++].msg = sharp_strdup(msg);
}

/* A cluster that leaves the active set (removed, or replaced by a new
 * version): its EDS subscription, DNS resolution and health checks stop
 * now, its memory goes once no request uses it. */
static void cluster_leaves(sharp_xds_t *x, dyn_cluster_t *o)
{
    sharp_xds_eds_free(o->c->eds);
    o->c->eds = NULL;
    sharp_dns_stop(o->c);
    sharp_health_checker_remove_cluster(x->srv->health_checker, o->c);
    sharp_cluster_unref(o->c);
    protobuf_c_message_free_unpacked(o->pb, NULL);
    free(o->packed);
    free(o->version);
    memset(o, 0, sizeof *o);
}

static void warm_free(warm_t *w)
{
    sharp_dns_stop(w->d.c);
    sharp_health_checker_remove_cluster(w->x->srv->health_checker, w->d.c);
    sharp_xds_eds_free(w->d.c->eds);
    w->d.c->eds = NULL;
    sharp_cluster_unref(w->d.c);
    if (w->d.pb) protobuf_c_message_free_unpacked(w->d.pb, NULL);
    free(w->d.packed);
    free(w->d.version);
    free(w);
}

static void warming_gauge(sharp_xds_t *x)
{
    int64_t n = 0;
    for (warm_t *w = x->warming; w; w = w->next) n++;
    sharp_gauge_set(x->srv->stats, x->st.warming_clusters, n);
}

/* A warming cluster is ready: it replaces the active version of its name
 * (or joins the active set), and the next snapshot has it. */
static void warm_done(warm_t *w)
{
    sharp_xds_t *x = w->x;
    for (warm_t **p = &x->warming; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    uint32_t at = x->nclusters;
    for (uint32_t k = 0; k < x->nclusters; k++)
        if (!strcmp(x->clusters[k].c->name, w->d.c->name)) at = k;
    if (at < x->nclusters) {
        cluster_leaves(x, &x->clusters[at]);
    } else {
        x->clusters = sharp_realloc(x->clusters, (x->nclusters + 1) * sizeof *x->clusters);
        x->nclusters++;
    }
    x->clusters[at] = w->d;
    sharp_log_info("CDS: cluster '%s' warmed: in use from now on", w->d.c->name);
    free(w);
    warming_gauge(x);
    if (x->srv->snap) sharp_xds_publish(x);
}

static void on_warm_hc(void *arg)
{
    warm_done(arg);
}

/* Warming, third step: the health checks' first round (once the server's
 * checks have started: before, at sharp_xds_checks_started). */
static void warm_hc(warm_t *w)
{
    sharp_server_t *srv = w->x->srv;
    sharp_cluster_t *c = w->d.c;
    w->dns_wait = false;
    if (c->health_check) {
        if (!srv->checks_started) {
            w->hc_pending = true;
            return;
        }
        w->hc_pending = false;
        if (sharp_health_checker_add_cluster(&srv->health_checker, srv->loop, srv->stats, c, on_warm_hc, w) > 0)
            return;
    }
    warm_done(w);
}

/* Whether the cluster's TLS context waits for a secret from an SDS server
 * (tls/sds.h). */
static bool secrets_pending(const sharp_xds_t *x, const sharp_cluster_t *c)
{
    return c->tls && x->srv->snap && sharp_sds_waiting(x->srv->snap->sds, c->tls);
}

/* Warming, second step (Envoy's ClusterImplBase::onPreInitComplete: the
 * cluster's init manager, which holds its SdsApi init targets): the
 * secrets of its transport socket, each until its initial fetch is over
 * (sharp_xds_secrets_fetched). */
static void warm_sds(warm_t *w)
{
    w->dns_wait = false;
    if (secrets_pending(w->x, w->d.c)) {
        w->sds_wait = true;
        return;
    }
    w->sds_wait = false;
    warm_hc(w);
}

static void on_warm_dns(void *arg)
{
    warm_sds(arg);
}

static void on_warm_eds(void *arg)
{
    warm_t *w = arg;
    w->eds_wait = false;
    w->d.c->eds->sub->on_fetched = NULL;
    warm_sds(w);
}

void sharp_xds_secrets_fetched(sharp_xds_t *x)
{
    if (!x) return;
    warm_t *w = x->warming;
    while (w) {
        warm_t *next = w->next; /* w may be done and freed */
        if (w->sds_wait) warm_sds(w);
        w = next;
    }
    sharp_lds_routes_ready(x->lds);
}

/* Whether an EDS cluster still waits for its first ClusterLoadAssignment
 * (a gRPC subscription whose stream did not have it yet). */
static bool eds_pending(const sharp_cluster_t *c)
{
    return c->eds && c->eds->sub && !c->eds->sub->fetched;
}

/* Warming, first step (Envoy's cluster pre-initialization): an EDS
 * cluster's first ClusterLoadAssignment, an empty or rejected update or
 * its subscription's initial_fetch_timeout (EdsClusterImpl goes on
 * without endpoints then), or a DNS cluster's first resolution (unless
 * wait_for_warm_on_init is false). */
static void warm_begin(warm_t *w)
{
    sharp_cluster_t *c = w->d.c;
    if (eds_pending(c)) {
        w->eds_wait = true;
        c->eds->sub->on_fetched = on_warm_eds;
        c->eds->sub->fetched_arg = w;
        return;
    }
    if (c->dns) {
        char err[512];
        bool wait = c->dns->wait_for_warm;
        w->dns_wait = wait;
        if (sharp_dns_start(c, w->x->loop, wait ? on_warm_dns : NULL, w, err, sizeof err) < 0) {
            sharp_log_error("CDS: cluster '%s': %s; it has no hosts", c->name, err);
            wait = false;
        }
        if (wait) return;
    }
    warm_sds(w);
}

void sharp_xds_checks_started(sharp_xds_t *x)
{
    if (!x) return;
    warm_t *w = x->warming;
    while (w) {
        warm_t *next = w->next; /* w may be done and freed */
        if (w->hc_pending) warm_hc(w);
        w = next;
    }
}

/* Envoy's CDS (CdsApiImpl, CdsApiHelper, ClusterManagerImpl): every
 * cluster of the update is kept (the same resource), added or modified;
 * one the update no longer names is removed. A new version of a cluster
 * that needs warming (an EDS cluster's first endpoints, a DNS cluster's
 * first resolution, active health checks' first round) is not used until
 * it is warm: the version it replaces stays in use meanwhile. A cluster
 * that cannot be built (or a duplicate name, or a static cluster's) is
 * refused and its previous version, active or warming, stays; the others
 * are applied, and the update is rejected naming each refused one
 * ("Error adding/updating cluster(s) a: why, b: why"). */
static int cds_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused, char *err,
                      size_t errlen)
{
    sharp_xds_t *x = ud;
    sharp_stats_shard_t *sh = shard0(x);
    /* the active set after the update; `fresh` entries are built by it,
     * the others moved from the current set */
    dyn_cluster_t *next = sharp_calloc(n + x->nclusters + 1, sizeof *next);
    bool *fresh = sharp_calloc(n + x->nclusters + 1, sizeof *fresh);
    int *from = sharp_calloc(n + x->nclusters + 1, sizeof *from); /* resource index of a fresh entry */
    uint32_t nnext = 0;
    bool *moved = sharp_calloc(x->nclusters ? x->nclusters : 1, sizeof *moved);
    warm_t **neww = sharp_calloc(n ? n : 1, sizeof *neww);
    int *wfrom = sharp_calloc(n ? n : 1, sizeof *wfrom);
    uint32_t nneww = 0;
    uint32_t nold_warm = 0;
    for (warm_t *w = x->warming; w; w = w->next) nold_warm++;
    uint32_t added = 0, modified = 0, kept = 0, built = 0;
    uint64_t now = sharp_wall_us();
    sharp_sbuf_t errs = {0};
    char why[1024];
    cds_errors_clear(x);
    /* the names, read before the resources are taken */
    const char **names = sharp_calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; i < n; i++) names[i] = ((const cluster_pb_t *)res[i])->name;
    /* the names sent, active and warming, by name: a push of 10,000
     * clusters looks each one up instead of scanning the others */
    const char **active_names = sharp_calloc(x->nclusters ? x->nclusters : 1, sizeof *active_names);
    for (uint32_t k = 0; k < x->nclusters; k++) active_names[k] = x->clusters[k].c->name;
    warm_t **warms = sharp_calloc(nold_warm ? nold_warm : 1, sizeof *warms);
    const char **warm_names = sharp_calloc(nold_warm ? nold_warm : 1, sizeof *warm_names);
    uint32_t nwarm = 0;
    for (warm_t *w = x->warming; w; w = w->next, nwarm++) {
        warms[nwarm] = w;
        warm_names[nwarm] = w->d.c->name;
    }
    sharp_name_index_t sent, active, warming;
    sharp_name_index_init(&sent, names, (uint32_t)n);
    sharp_name_index_init(&active, active_names, x->nclusters);
    sharp_name_index_init(&warming, warm_names, nold_warm);
    /* Envoy's "cds: add N cluster(s), remove M cluster(s)": the set as sent */
    uint32_t leaving = 0;
    for (uint32_t k = 0; k < x->nclusters; k++) leaving += sharp_name_index_find(&sent, x->clusters[k].c->name) < 0;
    sharp_info(config, "cds: add %zu cluster(s), remove %u cluster(s)", n, leaving);
    for (size_t i = 0; i < n; i++) {
        const cluster_pb_t *pb = (const cluster_pb_t *)res[i];
        char where[64];
        snprintf(where, sizeof where, "resources[%zu]", i);
        if (!pb->name[0]) {
            snprintf(why, sizeof why, "%s.name: a cluster needs a name", where);
            cds_error_add(x, &errs, where, why);
            if (refused) refused[i] = true;
            continue;
        }
        if ((size_t)sharp_name_index_find(&sent, pb->name) < i) {
            /* Envoy's CdsApiHelper: the first one stays applied */
            snprintf(why, sizeof why, "duplicate cluster %s found", pb->name);
            cds_error_add(x, &errs, pb->name, why);
            if (refused) refused[i] = true;
            continue;
        }
        if (is_static(x, pb->name)) {
            /* Envoy skips it silently (a static cluster blocks updates);
             * SHARP refuses rather than ignore a cluster */
            snprintf(why, sizeof why, "%s: cluster '%s' is a static cluster, which CDS cannot update", where,
                     pb->name);
            cds_error_add(x, &errs, pb->name, why);
            if (refused) refused[i] = true;
            continue;
        }
        size_t len = protobuf_c_message_get_packed_size(res[i]);
        uint8_t *packed = sharp_realloc(NULL, len ? len : 1);
        protobuf_c_message_pack(res[i], packed);
        int32_t a = sharp_name_index_find(&active, pb->name), wi = sharp_name_index_find(&warming, pb->name);
        warm_t *w = wi >= 0 ? warms[wi] : NULL;
        bool same_warm = w && w->d.len == len && !memcmp(w->d.packed, packed, len);
        bool same_active = a >= 0 && x->clusters[a].len == len && !memcmp(x->clusters[a].packed, packed, len);
        if (same_warm || same_active) {
            /* unchanged: the same cluster object, hosts and pools (a
             * warming one keeps warming; an active one cancels the warming
             * of another version) */
            free(packed);
            if (same_warm) w->kept = true;
            if (a >= 0) {
                next[nnext++] = x->clusters[a];
                moved[a] = true;
            }
            kept++;
            continue;
        }
        sharp_cluster_t *c = sharp_config_build_cluster(x->srv, &pb->base, x->next_cluster_index + built,
                                                        x->cds->path, where, why, sizeof why);
        if (!c) {
            /* refused: what it has of this name stays, active or warming */
            free(packed);
            cds_error_add(x, &errs, pb->name, why);
            if (refused) refused[i] = true;
            if (w) w->kept = true;
            if (a >= 0) {
                next[nnext++] = x->clusters[a];
                moved[a] = true;
            }
            continue;
        }
        built++;
        dyn_cluster_t d = {.c = c, .pb = res[i], .packed = packed, .len = len, .version = sharp_strdup(version),
                           .last_updated_us = now};
        if (x->loop && (c->dns || c->health_check || eds_pending(c) || secrets_pending(x, c))) {
            /* warms first; the version it replaces stays in use meanwhile */
            warm_t *nw = sharp_calloc(1, sizeof *nw);
            nw->x = x;
            nw->d = d;
            wfrom[nneww] = (int)i;
            neww[nneww++] = nw;
            if (a >= 0) {
                next[nnext++] = x->clusters[a];
                moved[a] = true;
            }
        } else {
            from[nnext] = (int)i;
            fresh[nnext] = true;
            next[nnext++] = d;
        }
        if (a >= 0 || w) modified++;
        else added++;
    }
    if (errs.len) {
        snprintf(err, errlen, "Error adding/updating cluster(s) %s", sharp_sbuf_cstr(&errs));
        x->cds_error_us = now;
        free(x->cds_error_version);
        x->cds_error_version = sharp_strdup(version);
    }
    /* the resources of new versions are kept for /config_dump */
    for (uint32_t k = 0; k < nnext; k++)
        if (fresh[k]) res[from[k]] = NULL;
    for (uint32_t k = 0; k < nneww; k++) res[wfrom[k]] = NULL;
    /* warming versions the update replaced or removed stop */
    uint32_t cancelled = 0;
    warm_t **wp = &x->warming;
    while (*wp) {
        warm_t *w = *wp;
        if (w->kept) {
            w->kept = false;
            wp = &w->next;
            continue;
        }
        *wp = w->next;
        bool gone = sharp_name_index_find(&sent, w->d.c->name) < 0;
        /* a name that was only warming is removed */
        cancelled += gone && sharp_name_index_find(&active, w->d.c->name) < 0;
        sharp_log_info("CDS: warming cluster '%s' %s", w->d.c->name, "replaced or removed before it warmed");
        warm_free(w);
    }
    /* active clusters that left or were replaced: their EDS subscription,
     * resolution and checks stop now, their memory goes once no request
     * uses them */
    uint32_t removed = 0;
    for (uint32_t k = 0; k < x->nclusters; k++) {
        if (moved[k]) continue;
        dyn_cluster_t *o = &x->clusters[k];
        bool gone = sharp_name_index_find(&sent, o->c->name) < 0;
        removed += gone;
        sharp_log_info("CDS: cluster '%s' %s", o->c->name, gone ? "removed" : "modified");
        cluster_leaves(x, o);
    }
    removed += cancelled;
    free(x->clusters);
    for (uint32_t k = 0; k < nnext; k++) {
        if (!fresh[k]) continue;
        next[k].c->pb = next[k].pb;
        next[k].c->version_info = sharp_strdup(next[k].version);
        next[k].c->last_updated_us = next[k].last_updated_us;
        x->next_cluster_index++;
        if (x->loop) sharp_outlier_start(next[k].c, x->loop);
    }
    x->clusters = next;
    x->nclusters = nnext;
    for (uint32_t k = 0; k < nneww; k++) {
        warm_t *w = neww[k];
        w->d.c->pb = w->d.pb;
        w->d.c->version_info = sharp_strdup(w->d.version);
        w->d.c->last_updated_us = w->d.last_updated_us;
        x->next_cluster_index++;
        sharp_outlier_start(w->d.c, x->loop);
        w->next = x->warming;
        x->warming = w;
        sharp_log_info("CDS: cluster '%s' warming (its first %s)", w->d.c->name,
                       eds_pending(w->d.c)         ? "ClusterLoadAssignment"
                       : w->d.c->dns               ? "DNS resolution"
                       : secrets_pending(x, w->d.c) ? "SDS secrets"
                                                   : "round of health checks");
    }
    sharp_counter_add(sh, x->st.cluster_added, added);
    sharp_counter_add(sh, x->st.cluster_modified, modified);
    sharp_counter_add(sh, x->st.cluster_removed, removed);
    sharp_info(config,
               "cds: added/updated %u cluster(s), skipped %u unmodified cluster(s); removed %u; %u warming; "
               "%u refused (version '%s')",
               added + modified, kept, removed, nneww, x->ncds_errors, version);
    /* Envoy's system_version_info_: the version of an update that applied
     * something, even if it refused some clusters */
    if (added || modified || removed) {
        free(x->cds_version);
        x->cds_version = sharp_strdup(version);
    }
    free(fresh);
    free(from);
    free(moved);
    free(wfrom);
    sharp_name_index_free(&sent);
    sharp_name_index_free(&active);
    sharp_name_index_free(&warming);
    free(active_names);
    free(warms);
    free(warm_names);
    free(names);
    bool rejected = errs.len > 0;
    sharp_sbuf_free(&errs);
    warming_gauge(x);
    /* nothing changed (a state-of-the-world push of other resources): the
     * workers keep their view */
    if (x->srv->snap && (added || modified || removed)) sharp_xds_publish(x);
    /* now that the update is in place: warming may end at once */
    for (uint32_t k = 0; k < nneww; k++) warm_begin(neww[k]);
    free(neww);
    return rejected ? -1 : 0;
}

int sharp_xds_cds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen)
{
    const char *path, *wdir;
    bool grpc = grpc_source(config_source);
    if (!grpc && sharp_xds_config_source_path(config_source, field, &path, &wdir, err, errlen) < 0) return -1;
    sharp_stats_t *s = x->srv->stats;
    x->st.cluster_added = sharp_stats_counter(s, "cluster_manager.cluster_added");
    x->st.cluster_modified = sharp_stats_counter(s, "cluster_manager.cluster_modified");
    x->st.cluster_removed = sharp_stats_counter(s, "cluster_manager.cluster_removed");
    x->st.warming_clusters = sharp_stats_gauge(s, "cluster_manager.warming_clusters");
    sharp_xds_watcher_t w = {cds_update, x};
    if (grpc) {
        x->cds = grpc_sub_new(x, &envoy__config__cluster__v3__cluster__descriptor, config_source, NULL,
                              "cluster_manager.cds", field, w, err, errlen);
        return x->cds ? 0 : -1;
    }
    x->cds = sub_new(x, &envoy__config__cluster__v3__cluster__descriptor, path, wdir, "cluster_manager.cds", field, w,
                     err, errlen);
    if (!x->cds) return -1;
    x->cds->some = true;
    char why[1024];
    if (sub_read(x->cds, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: clusters from %s: %s", field, path, why);
        return -1;
    }
    return 0;
}

/* ---- LDS ---- */

int sharp_xds_lds_subscribe(sharp_xds_t *x, const ProtobufCMessage *config_source, const char *field, char *err,
                            size_t errlen)
{
    const char *path, *wdir;
    bool grpc = grpc_source(config_source);
    if (!grpc && sharp_xds_config_source_path(config_source, field, &path, &wdir, err, errlen) < 0) return -1;
    x->lds = sharp_lds_new(x->srv, grpc ? "lds" : path);
    sharp_xds_watcher_t w = {sharp_lds_update, x->lds};
    if (grpc) { /* wildcard, as CDS: every listener of the server */
        x->lds_sub = grpc_sub_new(x, &envoy__config__listener__v3__listener__descriptor, config_source, NULL,
                                  "listener_manager.lds", field, w, err, errlen);
        return x->lds_sub ? 0 : -1;
    }
    x->lds_sub = sub_new(x, &envoy__config__listener__v3__listener__descriptor, path, wdir, "listener_manager.lds",
                         field, w, err, errlen);
    if (!x->lds_sub) return -1;
    x->lds_sub->some = true;
    char why[4096];
    if (sub_read(x->lds_sub, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: listeners from %s: %s", field, path, why);
        return -1;
    }
    return 0;
}

const struct sharp_lds *sharp_xds_lds(const sharp_xds_t *x)
{
    return x ? x->lds : NULL;
}

/* ---- the admin ---- */

size_t sharp_xds_dynamic_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    if (!x || !x->nclusters) return 0;
    *out = sharp_calloc(x->nclusters, sizeof **out);
    for (uint32_t i = 0; i < x->nclusters; i++) {
        sharp_xds_dump_entry_t *e = &(*out)[i];
        *e = (sharp_xds_dump_entry_t){x->clusters[i].version, x->clusters[i].pb, x->clusters[i].last_updated_us,
                                      NULL, NULL, 0};
        for (uint32_t k = 0; k < x->ncds_errors; k++)
            if (!strcmp(x->cds_errors[k].name, x->clusters[i].c->name)) {
                e->error_details = x->cds_errors[k].msg;
                e->error_version = x->cds_error_version;
                e->error_us = x->cds_error_us;
            }
    }
    return x->nclusters;
}

bool sharp_xds_cluster_warming(const sharp_xds_t *x, const char *name)
{
    for (const warm_t *w = x ? x->warming : NULL; w; w = w->next)
        if (!strcmp(w->d.c->name, name)) return true;
    return false;
}

size_t sharp_xds_warming_clusters(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    size_t n = 0;
    for (const warm_t *w = x ? x->warming : NULL; w; w = w->next) n++;
    if (!n) return 0;
    *out = sharp_calloc(n, sizeof **out);
    n = 0;
    for (const warm_t *w = x->warming; w; w = w->next)
        (*out)[n++] = (sharp_xds_dump_entry_t){w->d.version, w->d.pb, w->d.last_updated_us, NULL, NULL, 0};
    return n;
}

size_t sharp_xds_dynamic_routes(const sharp_xds_t *x, sharp_xds_dump_entry_t **out)
{
    *out = NULL;
    size_t n = 0;
    if (!x || !x->nrds) return 0;
    *out = sharp_calloc(x->nrds, sizeof **out);
    for (uint32_t i = 0; i < x->nrds; i++) {
        const sub_t *s = x->rds[i]->sub;
        if (x->rds[i]->cur)
            (*out)[n++] = (sharp_xds_dump_entry_t){x->rds[i]->cur->version_info, x->rds[i]->cur->pb,
                                                   x->rds[i]->cur->last_updated_us, s->error, s->error_version,
                                                   s->error_us};
    }
    return n;
}

const char *sharp_xds_cds_version(const sharp_xds_t *x)
{
    return x && x->cds_version ? x->cds_version : "";
}
