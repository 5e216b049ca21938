/* network.c: envoy.filters.network.rbac, Envoy's RBAC network filter.
 *
 * The connection manager asks it about data that arrives on a connection
 * (Envoy's onData, after TLS, before the HTTP codec or the TCP proxy sees
 * it): the shadow rules and the rules are checked (engine.c; no request
 * headers, so header and url_path never match). With the default
 * enforcement_type ONE_TIME_ON_FIRST_BYTE only the first data is checked
 * and counted; CONTINUOUS checks and counts every data. A denied
 * connection is closed at once, without flushing. A LOG action allows
 * every connection. Stats (Envoy's generateStats, statPrefixJoin):
 * <stat_prefix>rbac.{allowed,denied} and
 * <stat_prefix>rbac.<shadow_rules_stat_prefix>{shadow_allowed,shadow_denied}.
 * The shadow result also goes into the dynamic metadata of a TCP proxy
 * connection (its access log's) under envoy.filters.network.rbac:
 * <shadow_rules_stat_prefix>shadow_engine_result and, when a policy
 * matched, <shadow_rules_stat_prefix>shadow_effective_policy_id, where the
 * rules see it, as in Envoy; a connection manager's connection has no
 * connection-level metadata, so there it is counted only. */
#include "filters/rbac/filter.h"

#include "http/metadata.h"

#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MD_NS "envoy.filters.network.rbac"

struct sharp_net_rbac {
    sharp_rbac_engine_t *engine, *shadow;
    bool continuous;
    char *key_policy, *key_result; /* the shadow metadata keys, with shadow_rules_stat_prefix */
    sharp_stat_id_t st_allowed, st_denied, st_shadow_allowed, st_shadow_denied;
};

void sharp_net_rbac_free(sharp_net_rbac_t *r)
{
    if (!r) return;
    sharp_rbac_engine_free(r->engine);
    sharp_rbac_engine_free(r->shadow);
    free(r->key_policy);
    free(r->key_result);
    free(r);
}

sharp_net_rbac_t *sharp_net_rbac_create(const Envoy__Extensions__Filters__Network__Rbac__V3__RBAC *pb,
                                        sharp_stats_t *stats, const char *path, char *err, size_t errlen)
{
    char p[1024];
    if (!pb->stat_prefix || !pb->stat_prefix[0]) {
        snprintf(err, errlen, "%s.stat_prefix: value length must be at least 1 characters", path);
        return NULL;
    }
    if ((unsigned)pb->enforcement_type > ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__CONTINUOUS) {
        snprintf(err, errlen, "%s.enforcement_type: value must be one of the defined enum values", path);
        return NULL;
    }
    sharp_net_rbac_t *r = sharp_calloc(1, sizeof *r);
    r->continuous = pb->enforcement_type == ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__CONTINUOUS;
    if (pb->rules) {
        snprintf(p, sizeof p, "%s.rules", path);
        if (!(r->engine = sharp_rbac_engine_create(pb->rules, p, err, errlen))) goto fail;
    }
    if (pb->shadow_rules) {
        snprintf(p, sizeof p, "%s.shadow_rules", path);
        if (!(r->shadow = sharp_rbac_engine_create(pb->shadow_rules, p, err, errlen))) goto fail;
    }
    const char *sp = pb->shadow_rules_stat_prefix ? pb->shadow_rules_stat_prefix : "";
    size_t n = strlen(sp) + 32;
    r->key_policy = sharp_calloc(1, n);
    r->key_result = sharp_calloc(1, n);
    snprintf(r->key_policy, n, "%sshadow_effective_policy_id", sp);
    snprintf(r->key_result, n, "%sshadow_engine_result", sp);
    char base[512], shadow[768], name[1024];
    sharp_rbac_stat_join(pb->stat_prefix, "rbac.", base, sizeof base);
    sharp_rbac_stat_join(base, sp, shadow, sizeof shadow);
    sharp_rbac_stat_join(base, "allowed", name, sizeof name);
    r->st_allowed = sharp_stats_counterf(stats, "%s", name);
    sharp_rbac_stat_join(base, "denied", name, sizeof name);
    r->st_denied = sharp_stats_counterf(stats, "%s", name);
    sharp_rbac_stat_join(shadow, "shadow_allowed", name, sizeof name);
    r->st_shadow_allowed = sharp_stats_counterf(stats, "%s", name);
    sharp_rbac_stat_join(shadow, "shadow_denied", name, sizeof name);
    r->st_shadow_denied = sharp_stats_counterf(stats, "%s", name);
    return r;
fail:
    sharp_net_rbac_free(r);
    return NULL;
}

static void set_md(sharp_dynamic_metadata_t **md, const char *key, const char *val)
{
    sharp_md_value_t v = {0};
    sharp_md_value_string(&v, val, strlen(val));
    sharp_dynamic_metadata_set(md, MD_NS, strlen(MD_NS), key, strlen(key), &v);
}

bool sharp_net_rbac_continuous(const sharp_net_rbac_t *r)
{
    return r->continuous;
}

bool sharp_net_rbac_on_data(const sharp_net_rbac_t *r, sharp_stats_shard_t *sh, sharp_rbac_input_t *in,
                            sharp_dynamic_metadata_t **md, bool first)
{
    if (!first && !r->continuous) return true;
    if (r->shadow) {
        const char *policy;
        bool ok = sharp_rbac_engine_allowed(r->shadow, in, &policy, NULL);
        sharp_counter_inc(sh, ok ? r->st_shadow_allowed : r->st_shadow_denied);
        if (md) {
            if (policy) set_md(md, r->key_policy, policy);
            set_md(md, r->key_result, ok ? "allowed" : "denied");
            in->metadata = *md;
        }
    }
    if (!r->engine) return true;
    bool ok = sharp_rbac_engine_allowed(r->engine, in, NULL, NULL);
    sharp_counter_inc(sh, ok ? r->st_allowed : r->st_denied);
    return ok;
}
