/* sds.c: see sds.h. */
#include "tls/sds.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "config/mapper.h"
#include "log.h"
#include "tls/context.h"
#include "xds/fs_watch.h"
#include "xds/path_source.h"
#include "xds/xds.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret secret_pb_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig sds_pb_t;
typedef Envoy__Config__Core__V3__DataSource ds_pb_t;

typedef struct sds_stats {
    /* Envoy's subscription stats and SdsApi's, under sds.<name>. */
    sharp_stat_id_t update_attempt, update_success, update_failure, update_rejected, init_fetch_timeout, update_time,
        version, key_rotation_failed;
} sds_stats_t;

typedef struct provider {
    sharp_sds_t *sds;
    int kind; /* Secret's type case */
    char *name, *path, *wdir;
    secret_pb_t *secret;    /* the current secret */
    secret_pb_t *candidate; /* while an update rebuilds the contexts: what they resolve to */
    uint8_t *packed;        /* the current secret serialized: an identical update changes nothing */
    size_t packed_len;
    uint64_t files_hash;    /* of the files the current secret names */
    sharp_path_source_t *src;
    sharp_fs_watch_t *files_watch;
    /* a gRPC source (ADS or an api_config_source): its subscription, and
     * the ConfigSource serialized (providers are shared per source) */
    sharp_xds_sub_t *gsub;
    uint8_t *src_key;
    size_t src_keylen;
    sds_stats_t st;
    /* /config_dump (Envoy's SecretData): the version of the last accepted
     * update ("uninitialized" before one) and when it came (or when the
     * provider was made) */
    char *version;
    uint64_t updated_us;
} provider_t;

typedef struct consumer {
    sharp_tls_slot_t *slot;
    ProtobufCMessage *pb; /* its Downstream/UpstreamTlsContext */
    bool server;
    char *what;
    sharp_stat_id_t updated;
    provider_t **providers;
    size_t nproviders;
} consumer_t;

struct sharp_sds {
    sharp_stats_t *stats;
    uv_loop_t *loop; /* once watching */
    provider_t **providers;
    size_t nproviders;
    consumer_t **consumers;
    size_t nconsumers;
    provider_t **used; /* by the translation since sharp_sds_begin */
    size_t nused;
    bool rebuilding;   /* resolve only finds providers (a gRPC one may be new) */
    bool pending;      /* a translation met a gRPC secret that has not arrived */
    sharp_xds_t *xds;  /* for gRPC sources */
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *static_secrets;
    size_t nstatic_secrets;
};

/* ---- XXH64 ---------------------------------------------------------------------- */

static const uint64_t P1 = 11400714785074694791ull, P2 = 14029467366897019727ull, P3 = 1609587929392839161ull,
                      P4 = 9650029242287828579ull, P5 = 2870177450012600261ull;

static uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* little-endian hosts */
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t xround(uint64_t acc, uint64_t in)
{
    acc += in * P2;
    acc = rotl(acc, 31);
    return acc * P1;
}

static uint64_t xmerge(uint64_t h, uint64_t v)
{
    h ^= xround(0, v);
    return h * P1 + P4;
}

static uint64_t xxh64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        for (; p + 32 <= end; p += 32) {
            v1 = xround(v1, rd64(p));
            v2 = xround(v2, rd64(p + 8));
            v3 = xround(v3, rd64(p + 16));
            v4 = xround(v4, rd64(p + 24));
        }
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = xmerge(h, v1);
        h = xmerge(h, v2);
        h = xmerge(h, v3);
        h = xmerge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    for (; p + 8 <= end; p += 8) {
        h ^= xround(0, rd64(p));
        h = rotl(h, 27) * P1 + P4;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)rd32(p) * P1;
        h = rotl(h, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) {
        h ^= (uint64_t)*p * P5;
        h = rotl(h, 11) * P1;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t sharp_xxhash64(const void *data, size_t len)
{
    return xxh64(data, len, 0);
}

/* ---- secrets ------------------------------------------------------------------- */

static const char *kind_name(int kind)
{
    switch (kind) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE: return "tls_certificate";
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_SESSION_TICKET_KEYS: return "session_ticket_keys";
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT: return "validation_context";
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_GENERIC_SECRET: return "generic_secret";
    default: return "secret without a type";
    }
}

/* The file names a secret's DataSources read (Envoy's
 * getDataSourceFilenames); `out` has room for `max`. */
static size_t secret_files(const secret_pb_t *s, const char **out, size_t max)
{
    size_t n = 0;
#define ADD(ds)                                                                                                   \
    do {                                                                                                          \
        const ds_pb_t *d_ = (ds);                                                                                 \
        if (d_ && d_->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME && n < max)     \
            out[n++] = d_->filename;                                                                              \
    } while (0)
    if (!s) return 0;
    switch (s->type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE:
        ADD(s->tls_certificate->certificate_chain);
        ADD(s->tls_certificate->private_key);
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT:
        ADD(s->validation_context->trusted_ca);
        ADD(s->validation_context->crl);
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_SESSION_TICKET_KEYS:
        for (size_t i = 0; i < s->session_ticket_keys->n_keys; i++) ADD(s->session_ticket_keys->keys[i]);
        break;
    default:
        break;
    }
#undef ADD
    return n;
}

static const char *secret_watched_directory(const secret_pb_t *s)
{
    if (!s) return NULL;
    if (s->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE &&
        s->tls_certificate->watched_directory)
        return s->tls_certificate->watched_directory->path;
    if (s->type_case == ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT &&
        s->validation_context->watched_directory)
        return s->validation_context->watched_directory->path;
    return NULL;
}

#define MAX_FILES 64

/* Envoy's getHashForFiles: the files' bytes, chained; a file that cannot be
 * read hashes as a marker, so that it coming back counts as a change. */
static uint64_t files_hash(const secret_pb_t *s)
{
    const char *files[MAX_FILES];
    size_t n = secret_files(s, files, MAX_FILES);
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++) {
        char *data = NULL;
        size_t len = 0;
        if (sharp_read_file(files[i], 64u << 20, &data, &len) < 0) {
            h = xxh64("\0missing", 8, h);
            continue;
        }
        h = xxh64(data, len, h);
        free(data);
    }
    return h;
}

/* Reads the provider's file: exactly the named secret, of its kind (Envoy's
 * SdsApi checks). *parsed as sharp_path_source_read. */
static int load_secret(provider_t *p, secret_pb_t **out, char **version, bool *parsed, char *err, size_t errlen)
{
    sharp_discovery_t d;
    *out = NULL;
    *version = NULL;
    if (sharp_path_source_read(p->path, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, &d, parsed,
                               err, errlen) < 0)
        return -1;
    int rc = -1;
    if (d.nresources == 0) {
        snprintf(err, errlen, "Missing SDS resources for %s in onConfigUpdate()", p->name);
        goto out;
    }
    if (d.nresources > 1) {
        snprintf(err, errlen, "Unexpected SDS secrets length for %s, number of added resources %zu, number of removed "
                 "resources 0. Expected sum is 1", p->name, d.nresources);
        goto out;
    }
    secret_pb_t *s = (secret_pb_t *)d.resources[0];
    if (strcmp(s->name, p->name) != 0) {
        snprintf(err, errlen, "Unexpected SDS secret (expecting %s): %s", p->name, s->name);
        goto out;
    }
    if ((int)s->type_case != p->kind) {
        snprintf(err, errlen, "secret %s is a %s where a %s is wanted", p->name, kind_name((int)s->type_case),
                 kind_name(p->kind));
        goto out;
    }
    *out = s;
    d.resources[0] = NULL;
    d.nresources = 0;
    *version = d.version_info;
    d.version_info = NULL;
    rc = 0;
out:
    sharp_discovery_free(&d);
    return rc;
}

static void pack(const secret_pb_t *s, uint8_t **out, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(&s->base);
    *out = sharp_realloc(NULL, *len ? *len : 1);
    protobuf_c_message_pack(&s->base, *out);
}

static void counter_inc(sharp_sds_t *sds, sharp_stat_id_t id)
{
    sharp_counter_inc(sharp_stats_shard(sds->stats, 0), id);
}

/* What /config_dump shows of the provider's last accepted update. */
static void dump_state(provider_t *p, const char *version)
{
    free(p->version);
    p->version = sharp_strdup(version ? version : "");
    p->updated_us = sharp_wall_us();
}

static void accepted(provider_t *p, const char *version)
{
    sharp_sds_t *sds = p->sds;
    dump_state(p, version);
    counter_inc(sds, p->st.update_success);
    sharp_gauge_set(sds->stats, p->st.update_time, (int64_t)(sharp_wall_us() / 1000));
    sharp_gauge_set(sds->stats, p->st.version, (int64_t)sharp_xxhash64(version, strlen(version)));
}

/* ---- resolving -------------------------------------------------------------------------- */

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void provider_free(provider_t *p)
{
    sharp_xds_unsubscribe(p->gsub);
    free(p->src_key);
    sharp_path_source_free(p->src);
    sharp_fs_watch_free(p->files_watch);
    if (p->secret) protobuf_c_message_free_unpacked(&p->secret->base, NULL);
    free(p->packed);
    free(p->name);
    free(p->path);
    free(p->wdir);
    free(p->version);
    free(p);
}

static void on_source_change(void *ud);
static void watch_files(provider_t *p);

static provider_t *provider_new(sharp_sds_t *sds, int kind, const char *name, const char *path, const char *wdir,
                                const char *field, char *err, size_t errlen)
{
    if (sharp_path_source_check(path, wdir, field, err, errlen) < 0) return NULL; /* Envoy's checkFilesystemSubscriptionBackingPath */
    provider_t *p = sharp_calloc(1, sizeof *p);
    p->sds = sds;
    p->kind = kind;
    p->name = sharp_strdup(name);
    p->path = sharp_strdup(path);
    p->wdir = wdir ? sharp_strdup(wdir) : NULL;
    sharp_stats_t *s = sds->stats;
#define C(f) p->st.f = sharp_stats_counterf(s, "sds.%s." #f, name)
    C(update_attempt);
    C(update_success);
    C(update_failure);
    C(update_rejected);
    C(init_fetch_timeout);
    C(key_rotation_failed);
#undef C
    p->st.update_time = sharp_stats_gaugef(s, "sds.%s.update_time", name);
    p->st.version = sharp_stats_gaugef(s, "sds.%s.version", name);

    /* the first read, at load: Envoy's subscription start() */
    counter_inc(sds, p->st.update_attempt);
    char *version = NULL;
    bool parsed;
    char why[768];
    if (load_secret(p, &p->secret, &version, &parsed, why, sizeof why) < 0) {
        counter_inc(sds, parsed ? p->st.update_rejected : p->st.update_failure);
        snprintf(err, errlen, "%s: secret '%s' from %s: %s (SHARP does not start a listener or cluster without its "
                 "secret)", field, name, path, why);
        provider_free(p);
        return NULL;
    }
    pack(p->secret, &p->packed, &p->packed_len);
    p->files_hash = files_hash(p->secret);
    accepted(p, version);
    free(version);
    if (sds->loop) {
        /* a listener or cluster from LDS or CDS, after the start: its
         * source is watched from now on */
        p->src = sharp_path_source_watch(sds->loop, p->path, p->wdir, on_source_change, p, why, sizeof why);
        if (!p->src) {
            snprintf(err, errlen, "%s: secret '%s' from %s: %s", field, name, path, why);
            provider_free(p);
            return NULL;
        }
        watch_files(p);
    }
    sds->providers = sharp_realloc(sds->providers, (sds->nproviders + 1) * sizeof *sds->providers);
    sds->providers[sds->nproviders++] = p;
    return p;
}

/* The translation being made uses p (sharp_sds_attach). */
static void use(sharp_sds_t *sds, provider_t *p)
{
    for (size_t i = 0; i < sds->nused; i++)
        if (sds->used[i] == p) return;
    sds->used = sharp_realloc(sds->used, (sds->nused + 1) * sizeof *sds->used);
    sds->used[sds->nused++] = p;
}

static int on_grpc_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused,
                          char *err, size_t errlen);

static void on_grpc_fetched(void *arg)
{
    provider_t *p = arg;
    sharp_xds_secrets_fetched(p->sds->xds);
}

/* A secret from an SDS server (Envoy's SdsApi over a gRPC subscription):
 * one provider per name, kind and ConfigSource. Until the server sends it
 * the translation cannot finish: resolving says so (sds->pending), and the
 * consumer starts without a context (sharp_sds_pending). */
static const secret_pb_t *resolve_grpc(sharp_sds_t *sds, const sds_pb_t *c,
                                       Envoy__Extensions__TransportSockets__Tls__V3__Secret__TypeCase kind,
                                       const char *field, char *err, size_t errlen)
{
    if (!c->name || !*c->name) {
        snprintf(err, errlen, "%s: an SDS secret from a server needs its name", field);
        return NULL;
    }
    size_t klen = protobuf_c_message_get_packed_size(&c->sds_config->base);
    uint8_t *key = sharp_realloc(NULL, klen ? klen : 1);
    protobuf_c_message_pack(&c->sds_config->base, key);
    provider_t *p = NULL;
    for (size_t i = 0; i < sds->nproviders && !p; i++) {
        provider_t *q = sds->providers[i];
        if (q->src_key && q->kind == (int)kind && !strcmp(q->name, c->name) && q->src_keylen == klen &&
            !memcmp(q->src_key, key, klen))
            p = q;
    }
    if (p) {
        free(key);
    } else {
        p = sharp_calloc(1, sizeof *p);
        p->sds = sds;
        p->kind = (int)kind;
        p->name = sharp_strdup(c->name);
        p->src_key = key;
        p->src_keylen = klen;
        p->version = sharp_strdup("uninitialized"); /* Envoy's SecretData before an update */
        p->updated_us = sharp_wall_us();
        p->st.key_rotation_failed = sharp_stats_counterf(sds->stats, "sds.%s.key_rotation_failed", c->name);
        sharp_xds_watcher_t w = {on_grpc_update, p};
        p->gsub = sharp_xds_secret_subscribe(sds->xds, &c->sds_config->base, c->name, field, w, err, errlen);
        if (!p->gsub) {
            provider_free(p);
            return NULL;
        }
        /* its initial fetch over: listeners and clusters warming on it may
         * be ready (Envoy's SdsApi init target) */
        sharp_xds_sub_on_fetched(p->gsub, on_grpc_fetched, p);
        sds->providers = sharp_realloc(sds->providers, (sds->nproviders + 1) * sizeof *sds->providers);
        sds->providers[sds->nproviders++] = p;
    }
    use(sds, p);
    const secret_pb_t *s = p->candidate ? p->candidate : p->secret;
    if (!s) {
        sds->pending = true;
        snprintf(err, errlen, "%s: secret '%s' has not come from its SDS server yet", field, c->name);
    }
    return s;
}

const secret_pb_t *sharp_sds_resolve(void *ud, const sds_pb_t *c,
                                     Envoy__Extensions__TransportSockets__Tls__V3__Secret__TypeCase kind,
                                     const char *path, char *err, size_t errlen)
{
    sharp_sds_t *sds = ud;
    const Envoy__Config__Core__V3__ConfigSource *cs = c->sds_config;
    char field[320];
    const char *file = NULL, *wdir = NULL;
    bool grpc = false;
    switch (cs->config_source_specifier_case) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
        snprintf(field, sizeof field, "%s.sds_config.path", path);
        file = cs->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE:
        snprintf(field, sizeof field, "%s.sds_config.path_config_source", path);
        file = cs->path_config_source->path;
        if (cs->path_config_source->watched_directory) wdir = cs->path_config_source->watched_directory->path;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE:
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
        if (!sds->xds) {
            snprintf(err, errlen, "%s.sds_config: secrets from an SDS server are not available here", path);
            return NULL;
        }
        snprintf(field, sizeof field, "%s.sds_config", path);
        grpc = true;
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF:
        snprintf(err, errlen, "%s.sds_config.self: secrets from the xDS server of the resource are not supported by "
                 "SHARP yet; only path_config_source (a file) is", path);
        return NULL;
    default:
        snprintf(err, errlen, "%s.sds_config: Missing config source specifier in envoy::config::core::v3::ConfigSource",
                 path);
        return NULL;
    }
    if (cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        snprintf(err, errlen, "%s.sds_config.resource_api_version: V2 resources are not supported (V3, or AUTO)", path);
        return NULL;
    }
    if (grpc) return resolve_grpc(sds, c, kind, field, err, errlen);
    if (!file || !*file) {
        snprintf(err, errlen, "%s: value length must be at least 1 characters", field);
        return NULL;
    }
    provider_t *p = NULL;
    for (size_t i = 0; i < sds->nproviders; i++) {
        provider_t *q = sds->providers[i];
        if (q->kind == (int)kind && !strcmp(q->name, c->name) && !strcmp(q->path, file) && same(q->wdir, wdir)) {
            p = q;
            break;
        }
    }
    if (!p) {
        if (sds->rebuilding) {
            snprintf(err, errlen, "%s: no such secret source", field);
            return NULL;
        }
        p = provider_new(sds, (int)kind, c->name, file, wdir, field, err, errlen);
        if (!p) return NULL;
    }
    use(sds, p);
    return p->candidate ? p->candidate : p->secret;
}

void sharp_sds_begin(sharp_sds_t *sds)
{
    sds->nused = 0;
    sds->pending = false;
}

bool sharp_sds_pending(sharp_sds_t *sds)
{
    bool p = sds && sds->pending;
    if (sds) sds->pending = false;
    return p;
}

void sharp_sds_use_xds(sharp_sds_t *sds, sharp_xds_t *xds)
{
    sds->xds = xds;
}

bool sharp_sds_attach(sharp_sds_t *sds, sharp_tls_slot_t *slot, ProtobufCMessage *pb, bool server, const char *what,
                      sharp_stat_id_t updated)
{
    if (!sds->nused) return false;
    consumer_t *c = sharp_calloc(1, sizeof *c);
    c->slot = sharp_tls_slot_ref(slot); /* its owner's going is seen as the reference left alone */
    c->pb = pb;
    c->server = server;
    c->what = sharp_strdup(what);
    c->updated = updated;
    c->providers = sharp_calloc(sds->nused, sizeof *c->providers);
    memcpy(c->providers, sds->used, sds->nused * sizeof *c->providers);
    c->nproviders = sds->nused;
    sds->nused = 0;
    sds->consumers = sharp_realloc(sds->consumers, (sds->nconsumers + 1) * sizeof *sds->consumers);
    sds->consumers[sds->nconsumers++] = c;
    return true;
}

/* ---- rotation -------------------------------------------------------------------------- */

static bool uses(const consumer_t *c, const provider_t *p)
{
    for (size_t i = 0; i < c->nproviders; i++)
        if (c->providers[i] == p) return true;
    return false;
}

/* A translation that met a secret still to come stopped there: each new
 * attempt may reach further, so the consumer also depends on what it used
 * this time. */
static void consumer_use(consumer_t *c, sharp_sds_t *sds)
{
    for (size_t i = 0; i < sds->nused; i++) {
        if (uses(c, sds->used[i])) continue;
        c->providers = sharp_realloc(c->providers, (c->nproviders + 1) * sizeof *c->providers);
        c->providers[c->nproviders++] = sds->used[i];
    }
}

/* New contexts for every consumer of p (secrets as resolved now: p's
 * candidate, the files as they are now). All or none: on failure nothing
 * changes and err says why. */
static int rebuild(provider_t *p, char *err, size_t errlen)
{
    sharp_sds_t *sds = p->sds;
    sharp_tls_ctx_t **fresh = sharp_calloc(sds->nconsumers ? sds->nconsumers : 1, sizeof *fresh);
    int rc = 0;
    sds->rebuilding = true;
    sharp_tls_config_use_sds(sharp_sds_resolve, sds);
    sharp_tls_config_use_secrets(sds->static_secrets, sds->nstatic_secrets);
    for (size_t i = 0; i < sds->nconsumers && rc == 0; i++) {
        consumer_t *c = sds->consumers[i];
        if (!uses(c, p) || sharp_tls_slot_alone(c->slot)) continue; /* gone: the next sweep frees it */
        sharp_tls_config_t cfg;
        char why[768];
        sds->nused = 0;
        sds->pending = false;
        int r = c->server
                    ? sharp_tls_config_downstream(
                          (const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *)c->pb, &cfg, why,
                          sizeof why)
                    : sharp_tls_config_upstream(
                          (const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *)c->pb, &cfg, why,
                          sizeof why);
        consumer_use(c, sds);
        if (r < 0 && sds->pending) continue; /* another of its secrets has not come yet: no context still */
        if (r == 0) {
            fresh[i] = sharp_tls_ctx_create(&cfg, why, sizeof why);
            if (!fresh[i]) {
                sharp_tls_config_free(&cfg);
                r = -1;
            }
        }
        if (r < 0) {
            snprintf(err, errlen, "%s: %s", c->what, why);
            rc = -1;
        }
    }
    sharp_tls_config_use_secrets(NULL, 0);
    sharp_tls_config_use_sds(NULL, NULL);
    sds->rebuilding = false;
    sds->nused = 0;
    sds->pending = false;
    if (rc < 0) {
        for (size_t i = 0; i < sds->nconsumers; i++)
            if (fresh[i]) sharp_tls_ctx_unref(fresh[i]);
        free(fresh);
        return rc;
    }
    /* every slot swapped before anything is logged or counted, so the
     * listeners sharing a secret change it (nearly) together */
    bool *first = sharp_calloc(sds->nconsumers ? sds->nconsumers : 1, sizeof *first);
    for (size_t i = 0; i < sds->nconsumers; i++) {
        if (!fresh[i]) continue;
        first[i] = !sharp_tls_slot_get(sds->consumers[i]->slot);
        sharp_tls_slot_set(sds->consumers[i]->slot, fresh[i]);
    }
    for (size_t i = 0; i < sds->nconsumers; i++) {
        if (!fresh[i]) continue;
        consumer_t *c = sds->consumers[i];
        if (c->updated) counter_inc(sds, c->updated);
        if (first[i]) sharp_info(config, "%s: TLS context built: secret '%s' came", c->what, p->name);
        else sharp_info(config, "%s: TLS context rebuilt with secret '%s'", c->what, p->name);
    }
    free(first);
    free(fresh);
    return rc;
}

static void watch_files(provider_t *p);

/* An update from the SDS server (counted by the subscription, xds.c): the
 * one secret named, of its kind (Envoy's SdsApi checks), then as a file's
 * update: the same secret changes nothing, another rebuilds every context
 * using it, all or none. -1 NACKs it, the previous secret stays. An
 * incremental removal is ignored (ACKed). */
static int on_grpc_update(void *ud, ProtobufCMessage **res, size_t n, const char *version, bool *refused,
                          char *err, size_t errlen)
{
    (void)refused; /* all or nothing: one secret */
    provider_t *p = ud;
    if (n == 0) {
        /* a named watch gets nothing only from an incremental response
         * removing the name (or saying it does not exist): Envoy's SdsApi
         * ignores it with an ACK, the secret it has (if any) stays, and
         * the initial fetch is over */
        sharp_info(config, "secret '%s': the SDS server removed it; ignored, %s", p->name,
                   p->secret ? "the current secret stays" : "there is still no secret");
        return 0;
    }
    if (n > 1) {
        snprintf(err, errlen, "Unexpected SDS secrets length for %s, number of added resources %zu, number of "
                 "removed resources 0. Expected sum is 1", p->name, n);
        return -1;
    }
    secret_pb_t *s = (secret_pb_t *)res[0];
    if (strcmp(s->name, p->name) != 0) {
        snprintf(err, errlen, "Unexpected SDS secret (expecting %s): %s", p->name, s->name);
        return -1;
    }
    if ((int)s->type_case != p->kind) {
        snprintf(err, errlen, "secret %s is a %s where a %s is wanted", p->name, kind_name((int)s->type_case),
                 kind_name(p->kind));
        return -1;
    }
    uint8_t *packed;
    size_t packed_len;
    pack(s, &packed, &packed_len);
    if (p->secret && packed_len == p->packed_len && !memcmp(packed, p->packed, packed_len)) {
        free(packed); /* the same secret: nothing changes */
        dump_state(p, version);
        return 0;
    }
    p->candidate = s;
    char why[1024];
    int rc = rebuild(p, why, sizeof why);
    p->candidate = NULL;
    if (rc < 0) {
        snprintf(err, errlen, "secret '%s': %s", p->name, why);
        free(packed);
        return -1;
    }
    res[0] = NULL; /* the provider keeps it */
    if (p->secret) protobuf_c_message_free_unpacked(&p->secret->base, NULL);
    free(p->packed);
    p->secret = s;
    p->packed = packed;
    p->packed_len = packed_len;
    p->files_hash = files_hash(s);
    dump_state(p, version);
    if (p->sds->loop) watch_files(p); /* it may name files */
    sharp_info(config, "secret '%s' (%s) from its SDS server, version %s", p->name, kind_name(p->kind),
               version ? version : "");
    return 0;
}

static void on_files_change(void *ud)
{
    provider_t *p = ud;
    uint64_t h = files_hash(p->secret);
    if (h == p->files_hash) return;
    char err[1024];
    if (rebuild(p, err, sizeof err) < 0) {
        sharp_warn(config, "Failed to reload certificates: secret '%s': %s", p->name, err);
        counter_inc(p->sds, p->st.key_rotation_failed);
        return;
    }
    p->files_hash = h;
}

static void on_source_change(void *ud)
{
    provider_t *p = ud;
    sharp_sds_t *sds = p->sds;
    counter_inc(sds, p->st.update_attempt);
    secret_pb_t *s;
    char *version;
    bool parsed;
    char err[1024];
    if (load_secret(p, &s, &version, &parsed, err, sizeof err) < 0) {
        if (parsed) {
            sharp_warn(config, "Filesystem config update rejected: %s: %s", p->path, err);
            counter_inc(sds, p->st.update_rejected);
        } else {
            sharp_warn(config, "Filesystem config update failure: in %s, %s", p->path, err);
            counter_inc(sds, p->st.update_failure);
        }
        return;
    }
    uint8_t *packed;
    size_t packed_len;
    pack(s, &packed, &packed_len);
    if (packed_len == p->packed_len && !memcmp(packed, p->packed, packed_len)) {
        /* the same secret: Envoy's SdsApi compares hashes and does nothing */
        protobuf_c_message_free_unpacked(&s->base, NULL);
        free(packed);
    } else {
        p->candidate = s;
        int rc = rebuild(p, err, sizeof err);
        p->candidate = NULL;
        if (rc < 0) {
            sharp_warn(config, "Filesystem config update rejected: %s: %s", p->path, err);
            counter_inc(sds, p->st.update_rejected);
            protobuf_c_message_free_unpacked(&s->base, NULL);
            free(packed);
            free(version);
            return;
        }
        protobuf_c_message_free_unpacked(&p->secret->base, NULL);
        free(p->packed);
        p->secret = s;
        p->packed = packed;
        p->packed_len = packed_len;
        p->files_hash = files_hash(s);
        if (p->src) watch_files(p); /* the new secret may name other files */
    }
    accepted(p, version);
    free(version);
}

/* Envoy's SdsApi watches: the secret's watched_directory when it has one
 * (any entry moved into it), else the directory of each file it names
 * (any entry moved into it: a renamed file or a `..data` swap; SHARP also
 * reloads when the file itself is written in place and closed). */
static void watch_files(provider_t *p)
{
    sharp_fs_watch_free(p->files_watch);
    p->files_watch = NULL;
    const char *files[MAX_FILES];
    size_t n = secret_files(p->secret, files, MAX_FILES);
    const char *wdir = secret_watched_directory(p->secret);
    if (!n && !wdir) return;
    char err[512];
    sharp_fs_watch_t *w = sharp_fs_watch_new(p->sds->loop, on_files_change, p, err, sizeof err);
    int rc = w ? 0 : -1;
    if (w && wdir) {
        rc = sharp_fs_watch_add(w, wdir, NULL, SHARP_FS_MOVED_TO, err, sizeof err);
    } else {
        for (size_t i = 0; w && i < n && rc == 0; i++) {
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", files[i]);
            char *slash = strrchr(dir, '/');
            if (!slash) snprintf(dir, sizeof dir, ".");
            else if (slash == dir) dir[1] = '\0';
            else *slash = '\0';
            rc = sharp_fs_watch_add(w, dir, NULL, SHARP_FS_MOVED_TO, err, sizeof err);
            if (rc == 0) rc = sharp_fs_watch_add_file(w, files[i], SHARP_FS_CLOSE_WRITE, err, sizeof err);
        }
    }
    if (rc < 0) {
        /* the secret stays; its files are not watched */
        sharp_warn(config, "secret '%s': cannot watch its files for rotation: %s", p->name, err);
        sharp_fs_watch_free(w);
        return;
    }
    p->files_watch = w;
}

/* ---- consumers that go -------------------------------------------------------------------- */

static void consumer_free(consumer_t *c)
{
    sharp_tls_slot_free(c->slot);
    protobuf_c_message_free_unpacked(c->pb, NULL);
    free(c->providers);
    free(c->what);
    free(c);
}

bool sharp_sds_waiting(const sharp_sds_t *sds, sharp_tls_slot_t *slot)
{
    if (!sds || !slot || sharp_tls_slot_get(slot)) return false;
    for (size_t i = 0; i < sds->nconsumers; i++) {
        const consumer_t *c = sds->consumers[i];
        if (c->slot != slot) continue;
        for (size_t k = 0; k < c->nproviders; k++)
            if (c->providers[k]->gsub && !sharp_xds_sub_fetched(c->providers[k]->gsub)) return true;
    }
    return false;
}

size_t sharp_sds_sweep(sharp_sds_t *sds)
{
    if (!sds) return 0;
    size_t k = 0, gone = 0;
    for (size_t i = 0; i < sds->nconsumers; i++) {
        consumer_t *c = sds->consumers[i];
        if (!sharp_tls_slot_alone(c->slot)) {
            sds->consumers[k++] = c;
            continue;
        }
        sharp_debug(config, "%s: gone, it no longer uses its secrets", c->what);
        consumer_free(c);
    }
    sds->nconsumers = k;
    k = 0;
    for (size_t i = 0; i < sds->nproviders; i++) {
        provider_t *p = sds->providers[i];
        bool used = false;
        for (size_t j = 0; j < sds->nconsumers && !used; j++) used = uses(sds->consumers[j], p);
        if (used) {
            sds->providers[k++] = p;
            continue;
        }
        /* Envoy's SecretManagerImpl forgets the SdsApi with its last user:
         * its subscription ends (the name leaves the stream's request) */
        sharp_info(config, "secret '%s' (%s) no longer used: %s", p->name, kind_name(p->kind),
                   p->gsub ? "unsubscribed" : "its file is no longer watched");
        provider_free(p);
        gone++;
    }
    sds->nproviders = k;
    return gone;
}

/* ---- /config_dump --------------------------------------------------------------------------- */

ProtobufCMessage *sharp_sds_redacted_copy(const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s)
{
    /* private_key, password, pkcs12, ticket keys and generic secrets are
     * sensitive fields in Envoy's protos (config/redact.c's list) */
    return sharp_config_redacted_copy(&s->base, NULL, 0);
}

size_t sharp_sds_dump(const sharp_sds_t *sds, sharp_sds_dump_t **out)
{
    *out = NULL;
    if (!sds || !sds->nproviders) return 0;
    sharp_sds_dump_t *v = sharp_calloc(sds->nproviders, sizeof *v);
    for (size_t i = 0; i < sds->nproviders; i++) {
        const provider_t *p = sds->providers[i];
        v[i].name = p->name;
        v[i].version_info = p->version ? p->version : "";
        v[i].last_updated_us = p->updated_us;
        v[i].active = p->secret != NULL;
        if (p->secret) {
            v[i].secret = sharp_sds_redacted_copy(p->secret);
        } else {
            /* Envoy's warming entry: a Secret with only its name */
            secret_pb_t *s = sharp_calloc(1, sizeof *s);
            envoy__extensions__transport_sockets__tls__v3__secret__init(s);
            s->name = sharp_strdup(p->name);
            v[i].secret = &s->base;
        }
    }
    *out = v;
    return sds->nproviders;
}

void sharp_sds_dump_free(sharp_sds_dump_t *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        if (v[i].secret) protobuf_c_message_free_unpacked(v[i].secret, NULL);
    free(v);
}

/* ---- life cycle -------------------------------------------------------------------------- */

sharp_sds_t *sharp_sds_new(sharp_stats_t *stats)
{
    sharp_sds_t *sds = sharp_calloc(1, sizeof *sds);
    sds->stats = stats;
    return sds;
}

void sharp_sds_use_static_secrets(sharp_sds_t *sds, Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *secrets,
                                  size_t n)
{
    sds->static_secrets = secrets;
    sds->nstatic_secrets = n;
}

int sharp_sds_start(sharp_sds_t *sds, uv_loop_t *loop, char *err, size_t errlen)
{
    sds->loop = loop;
    for (size_t i = 0; i < sds->nproviders; i++) {
        provider_t *p = sds->providers[i];
        char why[512];
        if (p->src_key) { /* from a server: its stream is xds.c's */
            if (p->secret) watch_files(p);
            continue;
        }
        p->src = sharp_path_source_watch(loop, p->path, p->wdir, on_source_change, p, why, sizeof why);
        if (!p->src) {
            snprintf(err, errlen, "secret '%s' from %s: %s", p->name, p->path, why);
            return -1;
        }
        watch_files(p);
    }
    return 0;
}

void sharp_sds_stop(sharp_sds_t *sds)
{
    if (!sds) return;
    for (size_t i = 0; i < sds->nproviders; i++) {
        provider_t *p = sds->providers[i];
        sharp_path_source_free(p->src);
        sharp_fs_watch_free(p->files_watch);
        p->src = NULL;
        p->files_watch = NULL;
    }
}

void sharp_sds_free(sharp_sds_t *sds)
{
    if (!sds) return;
    for (size_t i = 0; i < sds->nproviders; i++) provider_free(sds->providers[i]);
    free(sds->providers);
    for (size_t i = 0; i < sds->nconsumers; i++) consumer_free(sds->consumers[i]);
    free(sds->consumers);
    free(sds->used);
    free(sds);
}
