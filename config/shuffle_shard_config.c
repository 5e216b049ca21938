/* shuffle_shard_config.c: see shuffle_shard_config.h. Envoy picks the first
 * policy of the list it supports; SHARP supports one, and rejects the others
 * with a message rather than skipping them, so a config written for another
 * balancer never silently runs with a different one. */
#include "config/shuffle_shard_config.h"
#include "config/mapper.h"
#include "upstream/shard_lb.h"

#include "sharp/extensions/load_balancing_policies/shuffle_shard/v1/shuffle_shard.pb-c.h"

#include <stdarg.h>
#include <stdio.h>

typedef Sharp__Extensions__LoadBalancingPolicies__ShuffleShard__V1__ShuffleShard ss_pb_t;

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

/* The ShuffleShard message of policies[i], or NULL with the error set. The
 * caller frees it with protobuf_c_message_free_unpacked. */
static ss_pb_t *policy_message(ctx_t *x,
                               const Envoy__Config__Cluster__V3__LoadBalancingPolicy__Policy *pol,
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
    if (m->descriptor !=
        &sharp__extensions__load_balancing_policies__shuffle_shard__v1__shuffle_shard__descriptor) {
        fail(x, p,
             "load balancing policy %s%s%s(%s) is not supported: the one extension load balancer "
             "is " SS_TYPE,
             tec->name[0] ? "'" : "", tec->name, tec->name[0] ? "' " : "", m->descriptor->name);
        protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
    }
    return (ss_pb_t *)m;
}

int sharp_config_load_balancing_policy(sharp_cluster_t *c,
                                       const Envoy__Config__Cluster__V3__Cluster *pb,
                                       const char *path, sharp_stats_t *stats, char *epath,
                                       size_t epathlen, char *emsg, size_t emsglen)
{
    ctx_t x = {.epath = epath, .emsg = emsg, .epathlen = epathlen, .emsglen = emsglen};
    const Envoy__Config__Cluster__V3__LoadBalancingPolicy *lbp = pb->load_balancing_policy;
    if (!lbp) return 0;
    char p[1200];
    snprintf(p, sizeof p, "%s.load_balancing_policy.policies", path);
    if (!lbp->n_policies) return fail(&x, p, "at least one policy is required");
    ss_pb_t *cfg = NULL;
    for (size_t i = 0; i < lbp->n_policies; i++) {
        snprintf(p, sizeof p, "%s.load_balancing_policy.policies[%zu]", path, i);
        ss_pb_t *m = policy_message(&x, lbp->policies[i], p);
        if (!m) {
            if (cfg) protobuf_c_message_free_unpacked(&cfg->base, NULL);
            return -1;
        }
        if (cfg)
            protobuf_c_message_free_unpacked(&m->base, NULL); /* the first one is used */
        else
            cfg = m;
    }
    snprintf(p, sizeof p,
             "%s.load_balancing_policy.policies[0].typed_extension_config.typed_config", path);
    int rc = 0;
    uint32_t shard_size = cfg->shard_size ? cfg->shard_size->value : 2;
    if (shard_size == 0) {
        snprintf(p + strlen(p), sizeof p - strlen(p), ".shard_size");
        rc = fail(&x, p, "must be at least 1");
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
                    &x, ep,
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
    protobuf_c_message_free_unpacked(&cfg->base, NULL);
    return rc;
}
