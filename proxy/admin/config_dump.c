/* config_dump.c: /config_dump with Envoy's shapes and query parameters.
 *
 * The dump is Envoy's envoy.admin.v3.ConfigDump: a BootstrapConfigDump, a
 * ClustersConfigDump, an EndpointsConfigDump (only with ?include_eds), a
 * ListenersConfigDump, a RoutesConfigDump whose static_route_configs are
 * the route configurations inline in the listeners' connection managers,
 * and a SecretsConfigDump (the bootstrap's static secrets and the SDS
 * providers' secrets). Every message of every dump is redacted as Envoy's
 * MessageUtil::redact does (message_json): the fields Envoy's protos mark
 * sensitive (private keys, passwords, ticket keys...) read "[redacted]".
 * Those admin messages are not compiled in: their few fields are described
 * by the tables below, and the resources inside them (Bootstrap, Cluster,
 * ...) are the real protobuf-c messages of the loaded bootstrap.
 *
 * ?resource=<repeated field> lists that field's entries, each packed as an
 * Any; ?mask= applies a FieldMask to every dump (without ?resource; a dump
 * the mask does not fit is left out) or to every entry (with ?resource; a
 * path "cluster.name" reaches into the entry's Any, as Envoy does);
 * ?name_regex= keeps the resources whose name matches the whole regex. */
#include "admin/handlers.h"
#include "admin/json.h"
#include "config/mapper.h"
#include "re2_shim.h"
#include "server.h"
#include "tls/sds.h"
#include "xds/lds.h"
#include "xds/xds.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

#include <stdio.h>
#include <time.h>

#define HCM_TYPE "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

/* One repeated field of a dump: its entries wrap one resource in an Any. */
typedef struct {
    const char *field;      /* "static_clusters" */
    const char *entry_type; /* "envoy.admin.v3.ClustersConfigDump.StaticCluster" */
    const char *any_field;  /* "cluster" */
    const ProtobufCMessageDescriptor *resource; /* what the Any holds */
    const ProtobufCMessage **items;
    size_t n;
    /* dynamic resources (xDS): each item's version_info and last update
     * (wall clock, us); NULL for static ones, whose time is the start */
    const char **versions;
    uint64_t *updated_us;
    /* Envoy's error_state of each dynamic item: the last update that refused
     * it (NULL details: none) */
    const sharp_xds_dump_entry_t **errors;
    /* ListenersConfigDump.dynamic_listeners: entries of their own shape
     * (name and states), not one Any; NULL for other lists */
    const sharp_lds_dump_t **lds;
    /* SecretsConfigDump's entries: each one's name (a field of the entry,
     * before the Any); NULL for other lists */
    const char **names;
} rlist_t;

typedef struct {
    const char *type;        /* "envoy.admin.v3.ClustersConfigDump" */
    const ProtobufCMessage *msg; /* BootstrapConfigDump.bootstrap */
    const char *msg_field;
    bool has_version_info;   /* a string field */
    const char *version_info; /* its value (the CDS version), NULL or "" when none */
    bool has_last_updated;
    rlist_t lists[3];
    size_t nlists;
} dump_t;

typedef struct {
    char ts[40];
    sharp_re2_t *re; /* ?name_regex=, RE2 full match as in Envoy; NULL: all */
    ProtobufCMessage **owned; /* unpacked HCMs and endpoint copies */
    size_t nowned;
    dump_t dumps[6];
    size_t ndumps;
    sharp_xds_dump_entry_t *dyn[3]; /* the dynamic entries the lists point into */
    size_t ndyn;
    sharp_lds_dump_t *lds; /* the dynamic listeners' entries */
} ctx_t;

static void own(ctx_t *c, ProtobufCMessage *m)
{
    c->owned = sharp_realloc(c->owned, (c->nowned + 1) * sizeof *c->owned);
    c->owned[c->nowned++] = m;
}

static bool name_ok(ctx_t *c, const char *name)
{
    return !c->re || sharp_re2_full_match(c->re, name ? name : "", name ? strlen(name) : 0);
}

static void push(rlist_t *l, const ProtobufCMessage *m)
{
    l->items = sharp_realloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = m;
}

/* A dynamic resource: its version, the time of its update and the last
 * update that refused it. The entry must outlive the dump (held by the
 * caller's array). */
static void push_dyn(rlist_t *l, const sharp_xds_dump_entry_t *e)
{
    push(l, e->resource);
    l->versions = sharp_realloc(l->versions, l->n * sizeof *l->versions);
    l->updated_us = sharp_realloc(l->updated_us, l->n * sizeof *l->updated_us);
    l->errors = sharp_realloc(l->errors, l->n * sizeof *l->errors);
    l->versions[l->n - 1] = e->version_info;
    l->updated_us[l->n - 1] = e->last_updated_us;
    l->errors[l->n - 1] = e->error_details ? e : NULL;
}

/* The route configurations inline in a listener's connection managers. */
static void push_inline_routes(ctx_t *c, rlist_t *list, const Envoy__Config__Listener__V3__Listener *l)
{
    for (size_t k = 0; k < l->n_filter_chains; k++) {
        const Envoy__Config__Listener__V3__FilterChain *fc = l->filter_chains[k];
        for (size_t j = 0; j < fc->n_filters; j++) {
            const Envoy__Config__Listener__V3__Filter *f = fc->filters[j];
            if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG) continue;
            const char *slash = strrchr(f->typed_config->type_url, '/');
            if (strcmp(slash ? slash + 1 : f->typed_config->type_url, HCM_TYPE) != 0) continue;
            sharp_config_error_t e;
            ProtobufCMessage *m = sharp_any_unpack(&f->typed_config->base, NULL, &e);
            if (!m) continue;
            own(c, m);
            const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h =
                (const void *)m;
            if (h->route_specifier_case ==
                    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG &&
                name_ok(c, h->route_config->name))
                push(list, &h->route_config->base);
        }
    }
}

static void gather_secrets(ctx_t *c, const sharp_server_t *srv,
                           const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr);

static void gather(ctx_t *c, const sharp_server_t *srv, bool include_eds)
{
    const Envoy__Config__Bootstrap__V3__Bootstrap *bs = (const void *)sharp_server_bootstrap(srv);
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = bs->static_resources;
    size_t ncl = sr ? sr->n_clusters : 0, nli = sr ? sr->n_listeners : 0;

    dump_t *d = &c->dumps[c->ndumps++];
    *d = (dump_t){.type = "envoy.admin.v3.BootstrapConfigDump", .msg = &bs->base, .msg_field = "bootstrap",
                  .has_last_updated = true};

    d = &c->dumps[c->ndumps++];
    *d = (dump_t){.type = "envoy.admin.v3.ClustersConfigDump", .has_version_info = true, .nlists = 3};
    d->lists[0] = (rlist_t){"static_clusters", "envoy.admin.v3.ClustersConfigDump.StaticCluster", "cluster",
                            &envoy__config__cluster__v3__cluster__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    d->lists[1] = (rlist_t){"dynamic_active_clusters", "envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                            "cluster", &envoy__config__cluster__v3__cluster__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    d->lists[2] = (rlist_t){"dynamic_warming_clusters", "envoy.admin.v3.ClustersConfigDump.DynamicCluster",
                            "cluster", &envoy__config__cluster__v3__cluster__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < ncl; i++)
        if (name_ok(c, sr->clusters[i]->name)) push(&d->lists[0], &sr->clusters[i]->base);
    sharp_xds_dump_entry_t *dyn;
    size_t ndyn = sharp_xds_dynamic_clusters(srv->xds, &dyn);
    for (size_t i = 0; i < ndyn; i++)
        if (name_ok(c, ((const Envoy__Config__Cluster__V3__Cluster *)dyn[i].resource)->name))
            push_dyn(&d->lists[1], &dyn[i]);
    c->dyn[c->ndyn++] = dyn;
    ndyn = sharp_xds_warming_clusters(srv->xds, &dyn);
    for (size_t i = 0; i < ndyn; i++)
        if (name_ok(c, ((const Envoy__Config__Cluster__V3__Cluster *)dyn[i].resource)->name))
            push_dyn(&d->lists[2], &dyn[i]);
    c->dyn[c->ndyn++] = dyn;
    d->version_info = sharp_xds_cds_version(srv->xds);

    if (include_eds) {
        d = &c->dumps[c->ndumps++];
        *d = (dump_t){.type = "envoy.admin.v3.EndpointsConfigDump", .nlists = 2};
        d->lists[0] = (rlist_t){"static_endpoint_configs", "envoy.admin.v3.EndpointsConfigDump.StaticEndpointConfig",
                                "endpoint_config", &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
                                NULL, 0, NULL, NULL, NULL, NULL, NULL};
        d->lists[1] = (rlist_t){"dynamic_endpoint_configs",
                                "envoy.admin.v3.EndpointsConfigDump.DynamicEndpointConfig", "endpoint_config",
                                &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
        for (size_t i = 0; i < ncl; i++) {
            const Envoy__Config__Cluster__V3__Cluster *cl = sr->clusters[i];
            if (!name_ok(c, cl->name)) continue;
            /* The cluster's endpoints named after the cluster, as Envoy's
             * dump names a static cluster's ClusterLoadAssignment. */
            Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla;
            if (cl->load_assignment) {
                cla = (void *)sharp_config_trimmed_copy(&cl->load_assignment->base, NULL, 0);
                if (!cla) continue;
            } else {
                cla = sharp_calloc(1, sizeof *cla);
                envoy__config__endpoint__v3__cluster_load_assignment__init(cla);
            }
            if (cla->cluster_name != protobuf_c_empty_string) free(cla->cluster_name);
            cla->cluster_name = sharp_strdup(cl->name);
            own(c, &cla->base);
            push(&d->lists[0], &cla->base);
        }
    }

    d = &c->dumps[c->ndumps++];
    *d = (dump_t){.type = "envoy.admin.v3.ListenersConfigDump", .has_version_info = true, .nlists = 2};
    d->lists[0] = (rlist_t){"static_listeners", "envoy.admin.v3.ListenersConfigDump.StaticListener", "listener",
                            &envoy__config__listener__v3__listener__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    d->lists[1] = (rlist_t){"dynamic_listeners", "envoy.admin.v3.ListenersConfigDump.DynamicListener", "name",
                            &envoy__config__listener__v3__listener__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < nli; i++)
        if (name_ok(c, sr->listeners[i]->name)) push(&d->lists[0], &sr->listeners[i]->base);
    /* LDS's: one entry per name with its states (Envoy's DynamicListener) */
    const sharp_lds_t *lds = sharp_xds_lds(srv->xds);
    sharp_lds_dump_t *ld;
    size_t nld = sharp_lds_dump(lds, &ld);
    c->lds = ld;
    for (size_t i = 0; i < nld; i++) {
        if (ld[i].name && !name_ok(c, ld[i].name)) continue;
        rlist_t *l = &d->lists[1];
        l->lds = sharp_realloc(l->lds, (l->n + 1) * sizeof *l->lds);
        l->lds[l->n] = &ld[i];
        push(l, ld[i].active.listener     ? ld[i].active.listener
                : ld[i].warming.listener  ? ld[i].warming.listener
                : ld[i].draining.listener ? ld[i].draining.listener
                                          : ld[i].failed);
    }
    d->version_info = sharp_lds_version(lds);

    d = &c->dumps[c->ndumps++];
    *d = (dump_t){.type = "envoy.admin.v3.RoutesConfigDump", .nlists = 2};
    d->lists[0] = (rlist_t){"static_route_configs", "envoy.admin.v3.RoutesConfigDump.StaticRouteConfig",
                            "route_config", &envoy__config__route__v3__route_configuration__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    d->lists[1] = (rlist_t){"dynamic_route_configs", "envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig",
                            "route_config", &envoy__config__route__v3__route_configuration__descriptor, NULL, 0, NULL, NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < nli; i++) push_inline_routes(c, &d->lists[0], sr->listeners[i]);
    /* the inline route configurations of LDS's listeners are static ones
     * to Envoy too (a route configuration provider per listener) */
    for (size_t i = 0; i < nld; i++)
        if (ld[i].active.listener) push_inline_routes(c, &d->lists[0], (const void *)ld[i].active.listener);
    ndyn = sharp_xds_dynamic_routes(srv->xds, &dyn);
    for (size_t i = 0; i < ndyn; i++)
        if (name_ok(c, ((const Envoy__Config__Route__V3__RouteConfiguration *)dyn[i].resource)->name))
            push_dyn(&d->lists[1], &dyn[i]);
    c->dyn[c->ndyn++] = dyn;

    gather_secrets(c, srv, sr);
}

/* A secret entry: its name, and for an SDS provider's its version and the
 * time of its update. */
static void push_secret(rlist_t *l, const ProtobufCMessage *m, const char *name, const char *version,
                        uint64_t updated_us)
{
    push(l, m);
    l->names = sharp_realloc(l->names, l->n * sizeof *l->names);
    l->names[l->n - 1] = name;
    if (!version) return;
    l->versions = sharp_realloc(l->versions, l->n * sizeof *l->versions);
    l->updated_us = sharp_realloc(l->updated_us, l->n * sizeof *l->updated_us);
    l->errors = sharp_realloc(l->errors, l->n * sizeof *l->errors);
    l->versions[l->n - 1] = version;
    l->updated_us[l->n - 1] = updated_us;
    l->errors[l->n - 1] = NULL;
}

/* Envoy's SecretsConfigDump: static_resources.secrets, then one entry per
 * SDS provider, active (it has a secret) or warming (Envoy lists an SdsApi
 * whose first update has not come with version_info "uninitialized" and a
 * Secret holding only the name). Like every dumped message, they are
 * redacted when printed (message_json). */
static void gather_secrets(ctx_t *c, const sharp_server_t *srv,
                           const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr)
{
    dump_t *d = &c->dumps[c->ndumps++];
    const ProtobufCMessageDescriptor *sd = &envoy__extensions__transport_sockets__tls__v3__secret__descriptor;
    *d = (dump_t){.type = "envoy.admin.v3.SecretsConfigDump", .nlists = 3};
    d->lists[0] = (rlist_t){.field = "static_secrets", .entry_type = "envoy.admin.v3.SecretsConfigDump.StaticSecret",
                            .any_field = "secret", .resource = sd};
    d->lists[1] = (rlist_t){.field = "dynamic_active_secrets",
                            .entry_type = "envoy.admin.v3.SecretsConfigDump.DynamicSecret", .any_field = "secret",
                            .resource = sd};
    d->lists[2] = (rlist_t){.field = "dynamic_warming_secrets",
                            .entry_type = "envoy.admin.v3.SecretsConfigDump.DynamicSecret", .any_field = "secret",
                            .resource = sd};
    for (size_t i = 0; sr && i < sr->n_secrets; i++)
        if (name_ok(c, sr->secrets[i]->name))
            push_secret(&d->lists[0], &sr->secrets[i]->base, sr->secrets[i]->name, NULL, 0);
    sharp_sds_dump_t *v;
    size_t n = sharp_sds_dump(srv->snap ? srv->snap->sds : NULL, &v);
    for (size_t i = 0; i < n; i++) {
        if (!v[i].secret || !name_ok(c, v[i].name)) continue;
        own(c, v[i].secret);
        push_secret(&d->lists[v[i].active ? 1 : 2], v[i].secret, v[i].name, v[i].version_info, v[i].last_updated_us);
        v[i].secret = NULL; /* the context's now */
    }
    sharp_sds_dump_free(v, n);
}

static void ctx_free(ctx_t *c)
{
    for (size_t i = 0; i < c->ndumps; i++)
        for (size_t k = 0; k < c->dumps[i].nlists; k++) {
            free(c->dumps[i].lists[k].items);
            free(c->dumps[i].lists[k].versions);
            free(c->dumps[i].lists[k].updated_us);
            free(c->dumps[i].lists[k].errors);
            free(c->dumps[i].lists[k].lds);
            free(c->dumps[i].lists[k].names);
        }
    for (size_t i = 0; i < c->ndyn; i++) free(c->dyn[i]);
    free(c->lds);
    for (size_t i = 0; i < c->nowned; i++) protobuf_c_message_free_unpacked(c->owned[i], NULL);
    free(c->owned);
    sharp_re2_free(c->re);
}

/* Appends config message `m` as JSON, trimmed to `paths` (NULL: whole) and
 * redacted: every message of every dump goes through here, so that no
 * section shows a field Envoy's protos mark sensitive (Envoy redacts the
 * whole ConfigDump with MessageUtil::redact; config/redact.c). */
static void message_json(sharp_sbuf_t *b, const ProtobufCMessage *m, const char *const *paths, size_t n)
{
    ProtobufCMessage *copy = sharp_config_redacted_copy(m, paths, n);
    /* a message that does not re-encode cannot be redacted: not shown */
    if (copy) sharp_config_to_json(copy, b);
    else sharp_sbuf_puts(b, "{}");
    if (copy) protobuf_c_message_free_unpacked(copy, NULL);
}

/* Appends `m` as JSON with "@type" first (an Any), trimmed to `paths`. */
static void any_json(sharp_sbuf_t *b, const ProtobufCMessage *m, const char *const *paths, size_t n)
{
    sharp_sbuf_t inner = {0};
    message_json(&inner, m, paths, n);
    sharp_sbuf_printf(b, "{\"@type\":\"type.googleapis.com/%s\"", m->descriptor->name);
    if (inner.len > 2 && inner.data[0] == '{') {
        sharp_sbuf_puts(b, ",");
        sharp_sbuf_append(b, inner.data + 1, inner.len - 1);
    } else {
        sharp_sbuf_puts(b, "}");
    }
    sharp_sbuf_free(&inner);
}

/* ---- masks ---- */

typedef struct {
    char *buf;
    const char **paths;
    size_t n;
} mask_t;

static void mask_parse(mask_t *m, const char *text)
{
    m->buf = sharp_strdup(text);
    m->paths = sharp_calloc(strlen(text) + 1, sizeof *m->paths);
    char *save = NULL;
    for (char *p = strtok_r(m->buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) m->paths[m->n++] = p;
}

static void mask_free(mask_t *m)
{
    free(m->buf);
    free(m->paths);
}

static bool is_field(const char *path, const char *field)
{
    size_t n = strlen(field);
    return strncmp(path, field, n) == 0 && (path[n] == '\0' || path[n] == '.');
}

static bool last_updated_path_valid(const char *p)
{
    return !strcmp(p, "last_updated") || !strcmp(p, "last_updated.seconds") || !strcmp(p, "last_updated.nanos");
}

/* Whether `path` is a valid mask path of the dump message (walking only
 * through singular message fields). */
static bool dump_path_valid(const dump_t *d, const char *path)
{
    if (d->msg && is_field(path, d->msg_field)) {
        size_t n = strlen(d->msg_field);
        return path[n] == '\0' || sharp_config_mask_path_valid(d->msg->descriptor, path + n + 1);
    }
    if (d->has_last_updated && is_field(path, "last_updated")) return last_updated_path_valid(path);
    if (d->has_version_info && !strcmp(path, "version_info")) return true;
    for (size_t i = 0; i < d->nlists; i++)
        if (!strcmp(path, d->lists[i].field)) return true; /* repeated: no further */
    return false;
}

static bool dyn_listener_path_valid(const char *p);

static bool entry_path_valid(const rlist_t *l, const char *path)
{
    if (l->lds) return dyn_listener_path_valid(path);
    if (is_field(path, l->any_field)) {
        size_t n = strlen(l->any_field);
        return path[n] == '\0' || sharp_config_mask_path_valid(l->resource, path + n + 1);
    }
    return last_updated_path_valid(path) || !strcmp(path, "version_info") || is_field(path, "error_state");
}

static bool mask_keeps(const mask_t *m, const char *field)
{
    if (!m) return true;
    for (size_t i = 0; i < m->n; i++)
        if (is_field(m->paths[i], field)) return true;
    return false;
}

/* The paths below `field` ("bootstrap.node" -> "node"); NULL when the
 * field is named whole or there is no mask (keep everything). */
static size_t sub_paths(const mask_t *m, const char *field, const char **out)
{
    size_t n = 0, fl = strlen(field);
    if (!m) return 0;
    for (size_t i = 0; i < m->n; i++) {
        if (!strcmp(m->paths[i], field)) return 0;
        if (is_field(m->paths[i], field)) out[n++] = m->paths[i] + fl + 1;
    }
    return n;
}

/* A wall clock time (us) as a Timestamp's JSON, to the millisecond. */
static void ts_of(uint64_t us, char *out, size_t len)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03uZ", (unsigned)(us / 1000 % 1000));
}

/* The part of mask m below `field` (kept whole: NULL), in out with its
 * paths in buf (m->n + 1 entries). The caller checked mask_keeps. */
static const mask_t *submask(const mask_t *m, const char *field, mask_t *out, const char **buf)
{
    if (!m) return NULL;
    size_t n = sub_paths(m, field, buf);
    if (!n) return NULL;
    *out = (mask_t){NULL, buf, n};
    return out;
}

/* A DynamicListenerState: version_info, listener (an Any), last_updated. */
static void state_json(sharp_sbuf_t *b, const sharp_lds_state_t *st, const mask_t *m)
{
    bool first = true;
    sharp_sbuf_puts(b, "{");
    if (st->version_info && st->version_info[0] && mask_keeps(m, "version_info")) {
        sharp_sbuf_puts(b, "\"version_info\":");
        sharp_json_str(b, st->version_info);
        first = false;
    }
    if (mask_keeps(m, "listener")) {
        const char **sub = sharp_calloc(m ? m->n + 1 : 1, sizeof *sub);
        size_t n = sub_paths(m, "listener", sub);
        sharp_sbuf_printf(b, "%s\"listener\":", first ? "" : ",");
        any_json(b, st->listener, n ? sub : NULL, n);
        free(sub);
        first = false;
    }
    if (mask_keeps(m, "last_updated")) {
        char ts[40];
        ts_of(st->last_updated_us, ts, sizeof ts);
        sharp_sbuf_printf(b, "%s\"last_updated\":\"%s\"", first ? "" : ",", ts);
    }
    sharp_sbuf_puts(b, "}");
}

/* A ListenersConfigDump.DynamicListener: its name and states, and the
 * last update's failure (UpdateFailureState) when it had one. */
static void dyn_listener_json(sharp_sbuf_t *b, const sharp_lds_dump_t *e, const mask_t *m, bool typed)
{
    bool first = true;
    sharp_sbuf_puts(b, "{");
    if (typed) {
        sharp_sbuf_puts(b, "\"@type\":\"type.googleapis.com/envoy.admin.v3.ListenersConfigDump.DynamicListener\"");
        first = false;
    }
    if (e->name && mask_keeps(m, "name")) {
        sharp_sbuf_printf(b, "%s\"name\":", first ? "" : ",");
        sharp_json_str(b, e->name);
        first = false;
    }
    const char *fields[] = {"active_state", "warming_state", "draining_state"};
    const sharp_lds_state_t *states[] = {&e->active, &e->warming, &e->draining};
    const char **buf = sharp_calloc(m ? m->n + 1 : 1, sizeof *buf);
    for (int i = 0; i < 3; i++) {
        if (!states[i]->listener || !mask_keeps(m, fields[i])) continue;
        mask_t sm;
        sharp_sbuf_printf(b, "%s\"%s\":", first ? "" : ",", fields[i]);
        state_json(b, states[i], submask(m, fields[i], &sm, buf));
        first = false;
    }
    if ((e->failed || e->details) && mask_keeps(m, "error_state")) {
        mask_t sm;
        const mask_t *em = submask(m, "error_state", &sm, buf);
        bool f2 = true;
        sharp_sbuf_printf(b, "%s\"error_state\":{", first ? "" : ",");
        if (e->failed && mask_keeps(em, "failed_configuration")) {
            sharp_sbuf_puts(b, "\"failed_configuration\":");
            any_json(b, e->failed, NULL, 0);
            f2 = false;
        }
        if (mask_keeps(em, "last_update_attempt")) {
            char ts[40];
            ts_of(e->failed_us, ts, sizeof ts);
            sharp_sbuf_printf(b, "%s\"last_update_attempt\":\"%s\"", f2 ? "" : ",", ts);
            f2 = false;
        }
        if (e->details && mask_keeps(em, "details")) {
            sharp_sbuf_printf(b, "%s\"details\":", f2 ? "" : ",");
            sharp_json_str(b, e->details);
        }
        sharp_sbuf_puts(b, "}");
    }
    free(buf);
    sharp_sbuf_puts(b, "}");
}

/* Whether `p` is a field path of a DynamicListener (for ?mask= with
 * ?resource=dynamic_listeners). */
static bool dyn_listener_path_valid(const char *p)
{
    if (!strcmp(p, "name")) return true;
    const char *states[] = {"active_state", "warming_state", "draining_state"};
    for (int i = 0; i < 3; i++) {
        if (!is_field(p, states[i])) continue;
        const char *r = p + strlen(states[i]);
        if (!*r) return true;
        r++;
        if (!strcmp(r, "version_info") || last_updated_path_valid(r)) return true;
        if (is_field(r, "listener"))
            return !r[8] || sharp_config_mask_path_valid(&envoy__config__listener__v3__listener__descriptor, r + 9);
        return false;
    }
    if (is_field(p, "error_state")) {
        const char *r = p + strlen("error_state");
        if (!*r) return true;
        r++;
        return !strcmp(r, "failed_configuration") || !strcmp(r, "details") || !strcmp(r, "version_info") ||
               !strcmp(r, "last_update_attempt") || !strcmp(r, "last_update_attempt.seconds") ||
               !strcmp(r, "last_update_attempt.nanos");
    }
    return false;
}

static void entry_json(sharp_sbuf_t *b, const rlist_t *l, size_t k, const char *ts, const mask_t *m, bool typed)
{
    if (l->lds) {
        dyn_listener_json(b, l->lds[k], m, typed);
        return;
    }
    const ProtobufCMessage *item = l->items[k];
    char dts[40];
    if (l->updated_us) { /* a dynamic resource: the time of its update */
        ts_of(l->updated_us[k], dts, sizeof dts);
        ts = dts;
    }
    sharp_sbuf_puts(b, "{");
    bool first = true;
    if (typed) {
        sharp_sbuf_printf(b, "\"@type\":\"type.googleapis.com/%s\"", l->entry_type);
        first = false;
    }
    if (l->names && mask_keeps(m, "name")) {
        sharp_sbuf_printf(b, "%s\"name\":", first ? "" : ",");
        sharp_json_str(b, l->names[k]);
        first = false;
    }
    if (l->versions && l->versions[k] && l->versions[k][0] && mask_keeps(m, "version_info")) {
        sharp_sbuf_printf(b, "%s\"version_info\":", first ? "" : ",");
        sharp_json_str(b, l->versions[k]);
        first = false;
    }
    if (mask_keeps(m, l->any_field)) {
        const char **sub = sharp_calloc(m ? m->n + 1 : 1, sizeof *sub);
        size_t n = sub_paths(m, l->any_field, sub);
        sharp_sbuf_printf(b, "%s\"%s\":", first ? "" : ",", l->any_field);
        any_json(b, item, n ? sub : NULL, n);
        free(sub);
        first = false;
    }
    if (mask_keeps(m, "last_updated")) {
        sharp_sbuf_printf(b, "%s\"last_updated\":\"%s\"", first ? "" : ",", ts);
        first = false;
    }
    const sharp_xds_dump_entry_t *err = l->errors ? l->errors[k] : NULL;
    if (err && mask_keeps(m, "error_state")) {
        /* Envoy's UpdateFailureState (failed_configuration is not kept) */
        char ets[40];
        time_t t = (time_t)(err->error_us / 1000000);
        struct tm tm;
        gmtime_r(&t, &tm);
        size_t n = strftime(ets, sizeof ets, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(ets + n, sizeof ets - n, ".%03uZ", (unsigned)(err->error_us / 1000 % 1000));
        sharp_sbuf_printf(b, "%s\"error_state\":{\"last_update_attempt\":\"%s\",\"details\":", first ? "" : ",", ets);
        sharp_json_str(b, err->error_details);
        if (err->error_version && err->error_version[0]) {
            sharp_sbuf_puts(b, ",\"version_info\":");
            sharp_json_str(b, err->error_version);
        }
        sharp_sbuf_puts(b, "}");
    }
    sharp_sbuf_puts(b, "}");
}

static void dump_json(sharp_sbuf_t *b, const dump_t *d, const char *ts, const mask_t *m)
{
    sharp_sbuf_printf(b, "{\"@type\":\"type.googleapis.com/%s\"", d->type);
    if (d->version_info && d->version_info[0] && mask_keeps(m, "version_info")) {
        sharp_sbuf_puts(b, ",\"version_info\":");
        sharp_json_str(b, d->version_info);
    }
    if (d->msg && mask_keeps(m, d->msg_field)) {
        const char **sub = sharp_calloc(m ? m->n + 1 : 1, sizeof *sub);
        size_t n = sub_paths(m, d->msg_field, sub);
        sharp_sbuf_printf(b, ",\"%s\":", d->msg_field);
        message_json(b, d->msg, n ? sub : NULL, n);
        free(sub);
    }
    for (size_t i = 0; i < d->nlists; i++) {
        const rlist_t *l = &d->lists[i];
        if (!l->n || !mask_keeps(m, l->field)) continue; /* empty repeated fields are not printed */
        sharp_sbuf_printf(b, ",\"%s\":[", l->field);
        for (size_t k = 0; k < l->n; k++) {
            if (k) sharp_sbuf_puts(b, ",");
            entry_json(b, l, k, ts, NULL, false);
        }
        sharp_sbuf_puts(b, "]");
    }
    if (d->has_last_updated && mask_keeps(m, "last_updated")) sharp_sbuf_printf(b, ",\"last_updated\":\"%s\"", ts);
    sharp_sbuf_puts(b, "}");
}

static void fail(sharp_admin_response_t *rsp, unsigned status, const char *msg)
{
    rsp->status = status;
    rsp->content_type = SHARP_ADMIN_CT_TEXT;
    sharp_sbuf_puts(&rsp->body, msg);
}

static void mask_debug_string(const mask_t *m, sharp_sbuf_t *out)
{
    for (size_t i = 0; i < m->n; i++) sharp_sbuf_printf(out, "paths: \"%s\"\n", m->paths[i]);
}

void sharp__admin_config_dump(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    if (!sharp_server_bootstrap(rq->srv)) {
        fail(rsp, 503, "configuration is not loaded\n");
        return;
    }
    const char *resource = sharp_query_get(&rq->query, "resource");
    const char *mask_text = sharp_query_get(&rq->query, "mask");
    const char *name_regex = sharp_query_get(&rq->query, "name_regex");
    bool include_eds = sharp_query_has(&rq->query, "include_eds");
    ctx_t c = {0};
    time_t t = (time_t)rq->srv->start_wall_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(c.ts, sizeof c.ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (name_regex && *name_regex) {
        /* Envoy matches the whole name (RE2 full match). */
        char e[256];
        c.re = sharp_re2_compile(name_regex, strlen(name_regex), e, sizeof e);
        if (!c.re) {
            rsp->status = 400;
            rsp->content_type = SHARP_ADMIN_CT_TEXT;
            sharp_sbuf_printf(&rsp->body, "INVALID_ARGUMENT: Error while parsing name_regex from %s: %s",
                              name_regex, e);
            return;
        }
    }
    gather(&c, rq->srv, include_eds);
    mask_t mask = {0}, *m = NULL;
    if (mask_text) {
        mask_parse(&mask, mask_text);
        m = &mask;
    }
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"configs\":[");
    if (resource) {
        const rlist_t *found = NULL;
        for (size_t i = 0; i < c.ndumps && !found; i++) {
            const dump_t *d = &c.dumps[i];
            bool scalar = (d->msg && !strcmp(resource, d->msg_field)) ||
                          (d->has_last_updated && !strcmp(resource, "last_updated")) ||
                          (d->has_version_info && !strcmp(resource, "version_info"));
            if (scalar) {
                sharp_sbuf_free(&b);
                rsp->status = 400;
                rsp->content_type = SHARP_ADMIN_CT_TEXT;
                sharp_sbuf_printf(&rsp->body, "%s is not a repeated field. Use ?mask=%s to get only this field",
                                  resource, resource);
                goto out;
            }
            for (size_t k = 0; k < d->nlists; k++)
                if (!strcmp(resource, d->lists[k].field)) found = &d->lists[k];
        }
        if (!found) {
            sharp_sbuf_free(&b);
            rsp->status = 404;
            rsp->content_type = SHARP_ADMIN_CT_TEXT;
            sharp_sbuf_printf(&rsp->body, "%s not found in config dump", resource);
            goto out;
        }
        if (m) {
            for (size_t i = 0; i < m->n; i++) {
                if (found->n && !entry_path_valid(found, m->paths[i])) {
                    sharp_sbuf_free(&b);
                    rsp->status = 400;
                    rsp->content_type = SHARP_ADMIN_CT_TEXT;
                    sharp_sbuf_puts(&rsp->body, "FieldMask ");
                    mask_debug_string(m, &rsp->body);
                    sharp_sbuf_puts(&rsp->body, " could not be successfully used.");
                    goto out;
                }
            }
        }
        for (size_t k = 0; k < found->n; k++) {
            if (k) sharp_sbuf_puts(&b, ",");
            entry_json(&b, found, k, c.ts, m, true);
        }
    } else {
        size_t shown = 0;
        for (size_t i = 0; i < c.ndumps; i++) {
            const dump_t *d = &c.dumps[i];
            bool fits = true;
            for (size_t k = 0; m && k < m->n && fits; k++) fits = dump_path_valid(d, m->paths[k]);
            if (!fits) continue; /* this dump has no such fields: left out */
            if (shown++) sharp_sbuf_puts(&b, ",");
            dump_json(&b, d, c.ts, m);
        }
        if (m && !shown) {
            sharp_sbuf_free(&b);
            rsp->status = 400;
            rsp->content_type = SHARP_ADMIN_CT_TEXT;
            sharp_sbuf_printf(&rsp->body, "FieldMask %s could not be successfully applied to any configs.",
                              mask_text);
            goto out;
        }
    }
    sharp_sbuf_puts(&b, "]}");
    rsp->content_type = SHARP_ADMIN_CT_JSON;
    sharp_json_pretty(b.data, b.len, &rsp->body);
    sharp_sbuf_free(&b);
out:
    if (m) mask_free(&mask);
    ctx_free(&c);
}
