/* shuffle_shard_config.c: see shuffle_shard_config.h. Envoy picks the first
 * policy of the list it supports; SHARP supports one, and rejects the others
 * with a message rather than skipping them, so a config written for another
 * balancer never silently runs with a different one. */
#include "config/shuffle_shard_config.h"
#include "config/mapper.h"
#include "upstream/shard_lb.h"

#include "sharp/extensions/load_balancing_policies/shuffle_shard/v1/shuffle_shard.pb-c.h"
#include "envoy/extensions/load_balancing_policies/least_request/v3/least_request.pb-c.h"
#include "envoy/extensions/load_balancing_policies/random/v3/random.pb-c.h"
#include "envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.pb-c.h"

#include <math.h>

#include <stdarg.h>
#include <stdio.h>

typedef Sharp__Extensions__LoadBalancingPolicies__ShuffleShard__V1__ShuffleShard ss_pb_t;
typedef Envoy__Extensions__LoadBalancingPolicies__LeastRequest__V3__LeastRequest LeastRequest;
typedef Envoy__Extensions__LoadBalancingPolicies__RoundRobin__V3__RoundRobin RoundRobin;
typedef Envoy__Extensions__LoadBalancingPolicies__Random__V3__Random RandomPolicy;
typedef Envoy__Extensions__LoadBalancingPolicies__Common__V3__LocalityLbConfig LocalityLbConfig;
typedef Envoy__Extensions__LoadBalancingPolicies__Common__V3__LocalityLbConfig__ZoneAwareLbConfig ZoneAwareLbConfig;
#define LOCALITY_ZONE_AWARE \
    ENVOY__EXTENSIONS__LOAD_BALANCING_POLICIES__COMMON__V3__LOCALITY_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_ZONE_AWARE_LB_CONFIG

#define SS_TYPE "sharp.extensions.load_balancing_policies.shuffle_shard.v1.ShuffleShard"

typedef struct {
    char *epath, *emsg;
    size_t epathlen, emsglen;
} ctx_t;

static int fail(ctx_t *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, const char *path, const char *fmt, ...)
{
    snprintf(c->epath, c->epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->emsg, c->emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *cell_id(const sharp_host_t *h)
{
    return h->hostname[0] ? h->hostname : h->address;
}

/* The field path of host i: hosts are numbered in load_assignment order. */
static void endpoint_path(const Envoy__Config__Cluster__V3__Cluster *pb, const char *path,
                          uint32_t host, char *out, size_t cap)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = pb->load_assignment;
    for (size_t i = 0; la && i < la->n_endpoints; i++) {
        if (host < la->endpoints[i]->n_lb_endpoints) {
            snprintf(out, cap, "%s.load_assignment.endpoints[%zu].lb_endpoints[%u].endpoint", path,
                     i, host);
            return;
        }
        host -= (uint32_t)la->endpoints[i]->n_lb_endpoints;
    }
    snprintf(out, cap, "%s.load_assignment", path);
}

/* The message of policies[i], or NULL with the error set (a type SHARP
 * cannot read at all). The caller frees it with
 * protobuf_c_message_free_unpacked. */
static ProtobufCMessage *policy_message(ctx_t *x, const Envoy__Config__Cluster__V3__LoadBalancingPolicy__Policy *pol,
                                        const char *ppath)
{
    char p[1200];
    const Envoy__Config__Core__V3__TypedExtensionConfig *tec = pol->typed_extension_config;
    if (!tec) {
        snprintf(p, sizeof p, "%s.typed_extension_config", ppath);
        fail(x, p, "is required");
        return NULL;
    }
    snprintf(p, sizeof p, "%s.typed_extension_config.typed_config", ppath);
    if (!tec->typed_config) {
        fail(x, p, "is required");
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&tec->typed_config->base, NULL, &e);
    if (!m) {
        fail(x, p, "%s", e.msg);
        return NULL;
    }
    return m;
}

/* LocalityLbConfig of a typed policy: zone-aware settings, or
 * locality-weighted balancing (an empty message). */
static int locality_config(ctx_t *x, sharp_cluster_t *c, const LocalityLbConfig *lc, const char *lpath)
{
    char p[1400];
    if (!lc) return 0;
    if (lc->locality_config_specifier_case ==
        ENVOY__EXTENSIONS__LOAD_BALANCING_POLICIES__COMMON__V3__LOCALITY_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG) {
        c->locality_weighted = true;
        return 0;
    }
    if (lc->locality_config_specifier_case != LOCALITY_ZONE_AWARE) return 0; /* neither */
    const ZoneAwareLbConfig *z = lc->zone_aware_lb_config;
    snprintf(p, sizeof p, "%s.zone_aware_lb_config", lpath);
    if (z->force_local_zone) return fail(x, p, "force_local_zone is not supported by SHARP");
    if (z->locality_basis != 0)
        return fail(x, p, "locality_basis HEALTHY_HOSTS_WEIGHT is not supported by SHARP (only HEALTHY_HOSTS_NUM)");
    if (z->routing_enabled) {
        double v = z->routing_enabled->value;
        if (!(v >= 0 && v <= 100)) return fail(x, p, "routing_enabled must be in [0, 100]");
        c->zone.routing_enabled = (uint32_t)llround(v);
    }
    if (z->min_cluster_size) c->zone.min_cluster_size = z->min_cluster_size->value;
    c->zone.fail_traffic_on_panic = z->fail_traffic_on_panic;
    c->zone.force_direct = z->force_locality_direct_routing;
    c->has_zone_config = true;
    return 0;
}

static int slow_start_refused(ctx_t *x, const void *ss, const char *ppath)
{
    char p[1400];
    if (!ss) return 0;
    snprintf(p, sizeof p, "%s.slow_start_config", ppath);
    return fail(x, p, "slow start is not supported by SHARP");
}

static int least_request(ctx_t *x, sharp_cluster_t *c, const LeastRequest *m, const char *ppath)
{
    char p[1400];
    c->lb_policy = SHARP_LB_LEAST_REQUEST;
    if (m->choice_count) {
        snprintf(p, sizeof p, "%s.choice_count", ppath);
        if (m->choice_count->value < 2) return fail(x, p, "must be at least 2");
        c->choice_count = m->choice_count->value;
    }
    if (m->active_request_bias) {
        snprintf(p, sizeof p, "%s.active_request_bias", ppath);
        if (m->active_request_bias->runtime_key[0])
            return fail(x, p, "runtime_key is not supported by SHARP (only default_value)");
        if (!(m->active_request_bias->default_value >= 0))
            return fail(x, p, "must be greater than or equal to 0.0");
        c->active_request_bias = m->active_request_bias->default_value;
    }
    if (slow_start_refused(x, m->slow_start_config, ppath) < 0) return -1;
    if (m->enable_full_scan || m->selection_method != 0) {
        snprintf(p, sizeof p, "%s.%s", ppath, m->enable_full_scan ? "enable_full_scan" : "selection_method");
        return fail(x, p, "FULL_SCAN is not supported by SHARP (only N_CHOICES)");
    }
    snprintf(p, sizeof p, "%s.locality_lb_config", ppath);
    return locality_config(x, c, m->locality_lb_config, p);
}

static int shuffle_shard(ctx_t *x, sharp_cluster_t *c, const Envoy__Config__Cluster__V3__Cluster *pb,
                         const char *path, sharp_stats_t *stats, ss_pb_t *cfg, const char *ppath)
{
    char p[1200];
    snprintf(p, sizeof p, "%s", ppath);
    /* the shuffle-shard balancer builds its cells over the hosts of the
     * load; it does not follow host sets yet */
    if (c->type == SHARP_CLUSTER_STRICT_DNS || c->type == SHARP_CLUSTER_LOGICAL_DNS)
        return fail(x, p, "the shuffle-shard balancer on STRICT_DNS / LOGICAL_DNS clusters is not supported yet");
    int rc = 0;
    uint32_t shard_size = cfg->shard_size ? cfg->shard_size->value : 2;
    if (shard_size == 0) {
        snprintf(p + strlen(p), sizeof p - strlen(p), ".shard_size");
        rc = fail(x, p, "must be at least 1");
        goto done;
    }
    /* cell identities must be unique: two hosts with one identity would
     * always score alike and sit side by side in every customer's order */
    for (uint32_t i = 0; i < c->nhosts; i++)
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(cell_id(c->hosts[i]), cell_id(c->hosts[j])) == 0) {
                char ep[1200];
                endpoint_path(pb, path, i, ep, sizeof ep);
                rc = fail(
                    x, ep,
                    "cell identity '%s' (the endpoint's hostname, else its address) is not unique "
                    "in a shuffle-shard cluster",
                    cell_id(c->hosts[i]));
                goto done;
            }
    sharp_shard_policy_t *sp = sharp_calloc(1, sizeof *sp);
    const char **ids = sharp_calloc(c->nhosts ? c->nhosts : 1, sizeof *ids);
    for (uint32_t i = 0; i < c->nhosts; i++)
        ids[i] = cell_id(c->hosts[i]);
    sp->ss =
        sharp_shuffle_shard_create(ids, c->nhosts, shard_size, cfg->seed); /* NULL without hosts */
    free(ids);
    sp->shard_size = sp->ss ? sharp_shuffle_shard_size(sp->ss) : shard_size;
    sp->seed = cfg->seed;
    sp->on_unhealthy =
        cfg->on_shard_unhealthy ==
                SHARP__EXTENSIONS__LOAD_BALANCING_POLICIES__SHUFFLE_SHARD__V1__SHUFFLE_SHARD__ON_SHARD_UNHEALTHY__SPILL
            ? SHARP_SHARD_SPILL
            : SHARP_SHARD_FAIL;
    sp->pick =
        cfg->pick ==
                SHARP__EXTENSIONS__LOAD_BALANCING_POLICIES__SHUFFLE_SHARD__V1__SHUFFLE_SHARD__PICK__FIRST_HEALTHY
            ? SHARP_SHARD_PICK_FIRST_HEALTHY
            : SHARP_SHARD_PICK_LEAST_REQUEST;
    sp->no_key =
        cfg->no_key ==
                SHARP__EXTENSIONS__LOAD_BALANCING_POLICIES__SHUFFLE_SHARD__V1__SHUFFLE_SHARD__NO_KEY__REJECT
            ? SHARP_SHARD_NO_KEY_REJECT
            : SHARP_SHARD_NO_KEY_SOURCE_IP;
    sharp_shard_policy_stats_init(sp, stats, c->stat_name);
    c->shuffle_shard = sp;
done:
    return rc;
}

/* Envoy uses the first policy whose type it has a factory for. SHARP
 * takes the first one it implements, and refuses any that comes before it
 * (Envoy may know that one and would run it). */
int sharp_config_load_balancing_policy(sharp_cluster_t *c, const Envoy__Config__Cluster__V3__Cluster *pb,
                                       const char *path, sharp_stats_t *stats, char *epath, size_t epathlen,
                                       char *emsg, size_t emsglen)
{
    ctx_t x = {.epath = epath, .emsg = emsg, .epathlen = epathlen, .emsglen = emsglen};
    const Envoy__Config__Cluster__V3__LoadBalancingPolicy *lbp = pb->load_balancing_policy;
    if (!lbp) return 0;
    char p[1200];
    snprintf(p, sizeof p, "%s.load_balancing_policy.policies", path);
    if (!lbp->n_policies) return fail(&x, p, "at least one policy is required");
    /* As in Envoy (ClusterInfoImpl), lb_policy and its lb_config are not
     * read once load_balancing_policy is set: their values never reach the
     * policy. */
    c->choice_count = 2;
    c->active_request_bias = 1.0;
    if (pb->common_lb_config &&
        pb->common_lb_config->locality_config_specifier_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_ZONE_AWARE_LB_CONFIG) {
        /* Envoy reads it only for lb_policy: with a policy extension it
         * would do nothing */
        snprintf(p, sizeof p, "%s.common_lb_config.zone_aware_lb_config", path);
        return fail(&x, p,
                    "applies to lb_policy only; with load_balancing_policy, zone-aware settings go in the "
                    "policy's locality_lb_config");
    }
    if (pb->common_lb_config &&
        pb->common_lb_config->locality_config_specifier_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG) {
        snprintf(p, sizeof p, "%s.common_lb_config.locality_weighted_lb_config", path);
        return fail(&x, p,
                    "applies to lb_policy only; with load_balancing_policy, locality-weighted balancing is the "
                    "policy's locality_lb_config.locality_weighted_lb_config");
    }
    for (size_t i = 0; i < lbp->n_policies; i++) {
        snprintf(p, sizeof p, "%s.load_balancing_policy.policies[%zu]", path, i);
        ProtobufCMessage *m = policy_message(&x, lbp->policies[i], p);
        if (!m) return -1;
        char tp[1300];
        snprintf(tp, sizeof tp, "%s.typed_extension_config.typed_config", p);
        int rc;
        const ProtobufCMessageDescriptor *d = m->descriptor;
        if (d == &sharp__extensions__load_balancing_policies__shuffle_shard__v1__shuffle_shard__descriptor) {
            rc = shuffle_shard(&x, c, pb, path, stats, (ss_pb_t *)m, tp);
        } else if (d == &envoy__extensions__load_balancing_policies__least_request__v3__least_request__descriptor) {
            rc = least_request(&x, c, (const LeastRequest *)m, tp);
        } else if (d == &envoy__extensions__load_balancing_policies__round_robin__v3__round_robin__descriptor) {
            const RoundRobin *rr = (const RoundRobin *)m;
            c->lb_policy = SHARP_LB_ROUND_ROBIN;
            char lp[1400];
            snprintf(lp, sizeof lp, "%s.locality_lb_config", tp);
            rc = slow_start_refused(&x, rr->slow_start_config, tp) < 0 ? -1
                                                                        : locality_config(&x, c, rr->locality_lb_config, lp);
        } else if (d == &envoy__extensions__load_balancing_policies__random__v3__random__descriptor) {
            c->lb_policy = SHARP_LB_RANDOM;
            char lp[1400];
            snprintf(lp, sizeof lp, "%s.locality_lb_config", tp);
            rc = locality_config(&x, c, ((const RandomPolicy *)m)->locality_lb_config, lp);
        } else {
            const char *name = lbp->policies[i]->typed_extension_config->name;
            rc = fail(&x, tp,
                      "load balancing policy %s%s%s(%s) is not supported: SHARP implements "
                      "envoy.extensions.load_balancing_policies.{round_robin.v3.RoundRobin, "
                      "least_request.v3.LeastRequest, random.v3.Random} and " SS_TYPE,
                      name[0] ? "'" : "", name, name[0] ? "' " : "", d->name);
        }
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    return 0;
}
