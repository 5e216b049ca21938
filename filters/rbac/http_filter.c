/* http_filter.c: envoy.filters.http.rbac, Envoy's RBAC HTTP filter.
 *
 * In decode_headers the request is checked against the shadow rules, then
 * the rules (engine.c), of the most specific RBACPerRoute when the route
 * has one (whose absent `rbac` turns the filter off for the route), else
 * of the filter's config. The shadow result only counts
 * (shadow_allowed/shadow_denied). Both results go into the stream's
 * dynamic metadata under envoy.filters.http.rbac once both have run:
 * <shadow_rules_stat_prefix>shadow_engine_result ("allowed"/"denied") and
 * <shadow_rules_stat_prefix>shadow_effective_policy_id (when a policy
 * matched), <rules_stat_prefix>enforced_engine_result and
 * <rules_stat_prefix>enforced_effective_policy_id (a per-route config's
 * prefixes when it sets them). The rules decide: allowed goes on, denied
 * gets the local reply 403 "RBAC: access denied" with details
 * rbac_access_denied_matched_policy[<policy or none>] (a gRPC request gets
 * PERMISSION_DENIED from the local reply's gRPC mapping). A LOG action
 * allows every request and sets envoy.common's access_log_hint to whether
 * a policy matched. Stats:
 * http.<stat_prefix>.rbac.<rules_stat_prefix>{allowed,denied} and
 * http.<stat_prefix>.rbac.<shadow_rules_stat_prefix>{shadow_allowed,
 * shadow_denied} (joined as Envoy's statPrefixJoin), with
 * track_per_rule_stats also <that>.policy.<policy>.<counter> for the
 * matched policy; a per-route config counts in its filter's. */
#include "filters/rbac/filter.h"
#include "filters/rbac/engine.h"
#include "http/metadata.h"
#include "net.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"

#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBAC rbac_pb_t;
typedef Envoy__Extensions__Filters__Http__Rbac__V3__RBACPerRoute rbac_route_pb_t;

#define MD_NS "envoy.filters.http.rbac"

/* the dynamic metadata keys, each after its prefix */
enum { MD_SHADOW_POLICY, MD_SHADOW_RESULT, MD_ENFORCED_POLICY, MD_ENFORCED_RESULT, MD_NKEYS };
static const char *const md_key_names[MD_NKEYS] = {"shadow_effective_policy_id", "shadow_engine_result",
                                                   "enforced_effective_policy_id", "enforced_engine_result"};

typedef struct rbac_engines {
    sharp_rbac_engine_t *engine, *shadow; /* NULL: none */
    /* rules_stat_prefix / shadow_rules_stat_prefix ("" when unset): they
     * prefix the dynamic metadata keys; a per-route config's, when set,
     * replace the filter's there (its counters stay the filter's) */
    char *rules_prefix, *shadow_prefix;
    /* the dynamic metadata keys those prefixes make, built once */
    char *md_keys[MD_NKEYS];
    bool per_rule_stats; /* track_per_rule_stats */
} rbac_engines_t;

/* A per-policy counter not registered yet (Envoy makes it on first use). */
#define POLICY_ST_NONE UINT32_MAX

typedef struct rbac_config {
    rbac_engines_t e;
    sharp_stats_t *stats;
    /* the per-policy counters' prefixes: <rules>.policy / <shadow rules>.policy */
    char *policy_prefix, *shadow_policy_prefix;
    sharp_stat_id_t st_allowed, st_denied, st_shadow_allowed, st_shadow_denied;
    /* with track_per_rule_stats, the ids of the per-policy counters of the
     * filter's own engines ([policy index][allowed, denied]), registered on
     * first use and kept (a per-route engine's are looked up by name) */
    _Atomic sharp_stat_id_t *policy_st, *shadow_policy_st;
} rbac_config_t;

static void engines_free(rbac_engines_t *e)
{
    sharp_rbac_engine_free(e->engine);
    sharp_rbac_engine_free(e->shadow);
    free(e->rules_prefix);
    free(e->shadow_prefix);
    for (int i = 0; i < MD_NKEYS; i++) free(e->md_keys[i]);
}

static void config_free(void *p)
{
    rbac_config_t *c = p;
    if (!c) return;
    engines_free(&c->e);
    free(c->policy_prefix);
    free(c->shadow_policy_prefix);
    free((void *)c->policy_st);
    free((void *)c->shadow_policy_st);
    free(c);
}

static void route_config_free(void *p)
{
    rbac_engines_t *e = p;
    if (!e) return;
    engines_free(e);
    free(e);
}

/* The engines of one RBAC message; `path` names it in errors. */
static int engines_build(const rbac_pb_t *pb, const char *path, rbac_engines_t *out, char *err, size_t errlen)
{
    char p[256];
    out->rules_prefix = sharp_strdup(pb->rules_stat_prefix ? pb->rules_stat_prefix : "");
    out->shadow_prefix = sharp_strdup(pb->shadow_rules_stat_prefix ? pb->shadow_rules_stat_prefix : "");
    for (int i = 0; i < MD_NKEYS; i++) {
        const char *prefix = i < MD_ENFORCED_POLICY ? out->shadow_prefix : out->rules_prefix;
        size_t n = strlen(prefix) + strlen(md_key_names[i]) + 1;
        out->md_keys[i] = sharp_calloc(1, n);
        snprintf(out->md_keys[i], n, "%s%s", prefix, md_key_names[i]);
    }
    out->per_rule_stats = pb->track_per_rule_stats;
    if (pb->rules) {
        snprintf(p, sizeof p, "%srules", path);
        if (!(out->engine = sharp_rbac_engine_create(pb->rules, p, err, errlen))) goto fail;
    }
    if (pb->shadow_rules) {
        snprintf(p, sizeof p, "%sshadow_rules", path);
        if (!(out->shadow = sharp_rbac_engine_create(pb->shadow_rules, p, err, errlen))) goto fail;
    }
    return 0;
fail:
    engines_free(out);
    memset(out, 0, sizeof *out);
    return -1;
}

static _Atomic sharp_stat_id_t *policy_st_new(const sharp_rbac_engine_t *e)
{
    uint32_t n = e ? 2 * sharp_rbac_engine_npolicies(e) : 0;
    if (!n) return NULL;
    _Atomic sharp_stat_id_t *ids = sharp_calloc(n, sizeof *ids);
    for (uint32_t i = 0; i < n; i++) atomic_init(&ids[i], POLICY_ST_NONE);
    return ids;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err, size_t errlen)
{
    static const rbac_pb_t empty = ENVOY__EXTENSIONS__FILTERS__HTTP__RBAC__V3__RBAC__INIT;
    const rbac_pb_t *pb = msg ? (const rbac_pb_t *)msg : &empty;
    rbac_config_t *c = sharp_calloc(1, sizeof *c);
    if (engines_build(pb, "", &c->e, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    /* Envoy's generateStats: statPrefixJoin("http.<stat_prefix>.", "rbac."),
     * then the rules' and shadow rules' prefixes, then the counter; the
     * per-policy counters under "policy." there */
    char base[512], rules[768], shadow[768], name[1024];
    snprintf(name, sizeof name, "http.%s.", ctx->stat_prefix);
    sharp_rbac_stat_join(name, "rbac.", base, sizeof base);
    sharp_rbac_stat_join(base, c->e.rules_prefix, rules, sizeof rules);
    sharp_rbac_stat_join(base, c->e.shadow_prefix, shadow, sizeof shadow);
    sharp_stats_t *s = c->stats = ctx->server->stats;
    sharp_rbac_stat_join(rules, "allowed", name, sizeof name);
    c->st_allowed = sharp_stats_counterf(s, "%s", name);
    sharp_rbac_stat_join(rules, "denied", name, sizeof name);
    c->st_denied = sharp_stats_counterf(s, "%s", name);
    sharp_rbac_stat_join(shadow, "shadow_allowed", name, sizeof name);
    c->st_shadow_allowed = sharp_stats_counterf(s, "%s", name);
    sharp_rbac_stat_join(shadow, "shadow_denied", name, sizeof name);
    c->st_shadow_denied = sharp_stats_counterf(s, "%s", name);
    sharp_rbac_stat_join(rules, "policy", name, sizeof name);
    c->policy_prefix = sharp_strdup(name);
    sharp_rbac_stat_join(shadow, "policy", name, sizeof name);
    c->shadow_policy_prefix = sharp_strdup(name);
    if (c->e.per_rule_stats) {
        c->policy_st = policy_st_new(c->e.engine);
        c->shadow_policy_st = policy_st_new(c->e.shadow);
    }
    return c;
}

/* RBACPerRoute: its rbac's rules and shadow rules, its stat prefixes (for
 * the dynamic metadata keys) and track_per_rule_stats; without rbac the
 * filter does nothing for the route. */
static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const rbac_route_pb_t *pb = (const rbac_route_pb_t *)msg;
    rbac_engines_t *e = sharp_calloc(1, sizeof *e);
    if (pb->rbac && engines_build(pb->rbac, "rbac.", e, err, errlen) < 0) {
        free(e);
        return NULL;
    }
    return e;
}

/* "ip:port" or "[ip6]:port" (the stream info's address text) */
static bool parse_addr(const char *text, struct sockaddr_storage *ss)
{
    char ip[SHARP_ADDR_STRLEN];
    const char *colon = strrchr(text, ':');
    if (!colon) return false;
    const char *b = text, *e = colon;
    if (*b == '[') {
        b++;
        if (e == b || e[-1] != ']') return false;
        e--;
    }
    if ((size_t)(e - b) >= sizeof ip) return false;
    memcpy(ip, b, (size_t)(e - b));
    ip[e - b] = '\0';
    socklen_t len;
    return sharp_addr_parse(ip, (uint32_t)strtoul(colon + 1, NULL, 10), ss, &len) == 0;
}

static void md_put(sharp_md_value_t *st, const char *key, const char *val)
{
    sharp_md_value_t v = {0};
    sharp_md_value_string(&v, val, strlen(val));
    sharp_md_struct_set(st, key, strlen(key), &v);
}

/* Envoy's incPolicy*: <prefix>.<policy>.<suffix>, registered on first use.
 * The filter's own engines (`ids` non-NULL) keep the id once registered
 * (registering the same name again gives the same id, so two workers racing
 * store the same value); a per-route engine's policy is looked up by name. */
static void count_policy(sharp_filter_t *f, _Atomic sharp_stat_id_t *ids, const sharp_rbac_engine_t *e,
                         const char *prefix, const char *policy, bool allowed, bool shadow)
{
    const rbac_config_t *c = f->config;
    const char *suffix = shadow ? (allowed ? "shadow_allowed" : "shadow_denied") : (allowed ? "allowed" : "denied");
    int32_t i = ids ? sharp_rbac_engine_policy_index(e, policy) : -1;
    _Atomic sharp_stat_id_t *slot = i >= 0 ? &ids[2 * i + (allowed ? 0 : 1)] : NULL;
    sharp_stat_id_t id = slot ? atomic_load_explicit(slot, memory_order_relaxed) : POLICY_ST_NONE;
    if (id == POLICY_ST_NONE) {
        id = sharp_stats_counterf(c->stats, "%s.%s.%s", prefix, policy, suffix);
        if (slot) atomic_store_explicit(slot, id, memory_order_relaxed);
    }
    sharp_counter_inc(sharp_stream_worker(f->stream)->stats, id);
}

static sharp_filter_status_t rbac_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)end_stream;
    const rbac_config_t *c = f->config;
    const rbac_engines_t *rc = sharp_stream_route_config(f);
    const rbac_engines_t *e = rc ? rc : &c->e;
    if (!e->engine && !e->shadow) return SHARP_FILTER_CONTINUE;
    /* the metadata keys: a per-route config's when it sets their prefix */
    const rbac_engines_t *rules_keys = rc && rc->rules_prefix[0] ? rc : &c->e;
    const rbac_engines_t *shadow_keys = rc && rc->shadow_prefix[0] ? rc : &c->e;
    /* the per-policy counter ids kept for the filter's own engines */
    _Atomic sharp_stat_id_t *policy_st = rc ? NULL : c->policy_st;
    _Atomic sharp_stat_id_t *shadow_policy_st = rc ? NULL : c->shadow_policy_st;
    sharp_stream_info_t *si = sharp_stream_info(f->stream);
    sharp_stats_shard_t *sh = sharp_stream_worker(f->stream)->stats;
    struct sockaddr_storage remote;
    const struct sockaddr *peer = sharp_stream_downstream_peer(f->stream);
    const sharp_downstream_tls_info_t *tls = si->downstream_tls;
    sharp_rbac_input_t in = {
        .headers = h,
        .conn_remote = peer,
        .direct_remote = sharp_stream_downstream_direct_peer(f->stream),
        .remote = parse_addr(si->downstream_remote_address, &remote) ? (const struct sockaddr *)&remote : peer,
        .local = sharp_stream_downstream_local(f->stream),
        .sni = tls ? tls->sni : NULL,
        .tls = tls != NULL,
        .uri_sans = tls ? (const char *const *)tls->peer_uri_sans : NULL,
        .dns_sans = tls ? (const char *const *)tls->peer_dns_sans : NULL,
        .subject = tls ? tls->peer_subject : NULL,
        .metadata = si->dynamic_metadata,
    };
    /* the results go into envoy.filters.http.rbac together, once both
     * engines have run (the rules do not see the shadow result) */
    sharp_md_value_t md = {.kind = SHARP_MD_STRUCT};
    const char *policy;
    if (e->shadow) {
        bool ok = sharp_rbac_engine_allowed(e->shadow, &in, &policy, NULL);
        sharp_counter_inc(sh, ok ? c->st_shadow_allowed : c->st_shadow_denied);
        if (policy && e->per_rule_stats)
            count_policy(f, shadow_policy_st, e->shadow, c->shadow_policy_prefix, policy, ok, true);
        if (policy) md_put(&md, shadow_keys->md_keys[MD_SHADOW_POLICY], policy);
        md_put(&md, shadow_keys->md_keys[MD_SHADOW_RESULT], ok ? "allowed" : "denied");
    }
    bool ok = true;
    if (e->engine) {
        bool matched;
        ok = sharp_rbac_engine_allowed(e->engine, &in, &policy, &matched);
        if (sharp_rbac_engine_action(e->engine) == SHARP_RBAC_LOG) {
            sharp_md_value_t v = {.kind = SHARP_MD_BOOL, .b = matched};
            sharp_dynamic_metadata_set(&si->dynamic_metadata, "envoy.common", 12, "access_log_hint", 15, &v);
        }
        sharp_counter_inc(sh, ok ? c->st_allowed : c->st_denied);
        if (policy && e->per_rule_stats) count_policy(f, policy_st, e->engine, c->policy_prefix, policy, ok, false);
        if (policy) md_put(&md, rules_keys->md_keys[MD_ENFORCED_POLICY], policy);
        md_put(&md, rules_keys->md_keys[MD_ENFORCED_RESULT], ok ? "allowed" : "denied");
    }
    for (uint32_t i = 0; i < md.n; i++)
        sharp_dynamic_metadata_set(&si->dynamic_metadata, MD_NS, strlen(MD_NS), md.keys[i], strlen(md.keys[i]),
                                   &md.items[i]);
    sharp_md_value_clear(&md);
    if (ok) return SHARP_FILTER_CONTINUE;
    char details[512];
    sharp_rbac_response_detail(policy, details, sizeof details);
    sharp_stream_send_local_reply(f, 403, "RBAC: access denied", 0, details);
    return SHARP_FILTER_STOP;
}

const sharp_filter_factory_t sharp_rbac_filter = {
    .name = "envoy.filters.http.rbac",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    .config_desc = &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .decode_headers = rbac_decode_headers,
    .route_type_url = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    .route_config_desc = &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = route_config_free,
};
