/* scaling_config.c: see scaling_config.h. The support table has already
 * applied the fields' own rules (cluster_name and weights_path not empty,
 * replica counts at least 1, the enum defined, durations and rates in
 * range); what is checked here spans fields or files. */
#include "config/scaling_config.h"

#include "agent/policy_file.h"
#include "common.h"
#include "sharp/extensions/scaling/v1/scaling_agent.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef Sharp__Extensions__Scaling__V1__ScalingAgent agent_pb_t;
typedef Sharp__Extensions__Scaling__V1__ScaledCluster cluster_pb_t;

static int fail(char *epath, size_t epathlen, char *emsg, size_t emsglen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int fail(char *epath, size_t epathlen, char *emsg, size_t emsglen, const char *path, const char *fmt, ...)
{
    snprintf(epath, epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emsg, emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static double seconds_of(const Google__Protobuf__Duration *d)
{
    return (double)d->seconds + d->nanos / 1e9;
}

void sharp_scaling_agent_config_free(sharp_scaling_agent_config_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->clusters[i].cluster);
        free(c->clusters[i].weights_path);
        sharp_policy_free(c->clusters[i].policy);
    }
    free(c->clusters);
    free(c);
}

sharp_scaling_agent_config_t *sharp_config_scaling(const ProtobufCMessage *msg, const char *path, bool strict_weights,
                                                   char *epath, size_t epathlen, char *emsg, size_t emsglen)
{
    if (msg->descriptor != &sharp__extensions__scaling__v1__scaling_agent__descriptor) {
        fail(epath, epathlen, emsg, emsglen, path, "not a " SHARP_SCALING_TYPE);
        return NULL;
    }
    const agent_pb_t *pb = (const agent_pb_t *)msg;
    sharp_scaling_agent_config_t *c = sharp_calloc(1, sizeof *c);
    c->clusters = sharp_calloc(pb->n_clusters ? pb->n_clusters : 1, sizeof *c->clusters);
    char p[512];
    for (size_t i = 0; i < pb->n_clusters; i++) {
        const cluster_pb_t *cp = pb->clusters[i];
        snprintf(p, sizeof p, "%s.clusters[%zu]", path, i);
        for (size_t k = 0; k < i; k++)
            if (strcmp(pb->clusters[k]->cluster_name, cp->cluster_name) == 0) {
                char np[600];
                snprintf(np, sizeof np, "%s.cluster_name", p);
                fail(epath, epathlen, emsg, emsglen, np, "cluster '%s' is scaled twice (clusters[%zu] has it too)",
                     cp->cluster_name, k);
                goto bad;
            }
        sharp_scaling_cluster_config_t *cc = &c->clusters[c->n++];
        cc->cluster = sharp_strdup(cp->cluster_name);
        cc->weights_path = sharp_strdup(cp->weights_path);
        sharp_scaling_live_config_t *l = &cc->live;
        switch (cp->mode) {
        case SHARP__EXTENSIONS__SCALING__V1__SCALED_CLUSTER__MODE__ACTIVE: l->mode = SHARP_SCALING_ACTIVE; break;
        case SHARP__EXTENSIONS__SCALING__V1__SCALED_CLUSTER__MODE__OFF: l->mode = SHARP_SCALING_OFF; break;
        default: l->mode = SHARP_SCALING_SHADOW; break;
        }
        l->min_replicas = (int)(cp->min_replicas > 16777216u ? 16777216u : cp->min_replicas);
        l->max_replicas = (int)(cp->max_replicas > 16777216u ? 16777217u : cp->max_replicas);
        l->initial_replicas = cp->initial_replicas ? (int)(cp->initial_replicas->value > 16777216u
                                                               ? 16777217u : cp->initial_replicas->value)
                                                   : l->min_replicas;
        l->sync_period_s = cp->sync_period ? seconds_of(cp->sync_period) : 15.0;
        l->slo_p99_s = cp->objective && cp->objective->p99_latency ? seconds_of(cp->objective->p99_latency) : 0.5;
        l->slo_error_rate = cp->objective && cp->objective->error_rate ? cp->objective->error_rate->value : 0.01;
        l->target_utilization = cp->hpa && cp->hpa->target_utilization
                                    ? (int)(cp->hpa->target_utilization->value > 1000000u
                                                ? 1000000u : cp->hpa->target_utilization->value)
                                    : 70;
        l->per_replica_concurrency = cp->hpa ? (int)(cp->hpa->per_replica_concurrency > 1000000u
                                                         ? 1000000u : cp->hpa->per_replica_concurrency)
                                             : 0;
        const char *bad = sharp_scaling_live_config_check(l);
        if (bad) {
            const char *field = strncmp(bad, "initial_replicas", 16) == 0 ? "initial_replicas"
                                : strncmp(bad, "max_replicas", 12) == 0 ? "max_replicas"
                                : strncmp(bad, "min_replicas", 12) == 0 ? "min_replicas"
                                : strstr(bad, "sync_period") ? "sync_period"
                                : strstr(bad, "objective") ? "objective"
                                : strstr(bad, "HPA") ? "hpa" : "mode";
            char np[600];
            snprintf(np, sizeof np, "%s.%s", p, field);
            fail(epath, epathlen, emsg, emsglen, np, "cluster '%s': %s", cp->cluster_name, bad);
            goto bad;
        }
        char lerr[512];
        cc->policy = sharp_policy_load(cp->weights_path, lerr, sizeof lerr);
        if (cc->policy) {
            const char *shape = sharp_scaling_policy_check(cc->policy, lerr, sizeof lerr);
            if (shape) {
                sharp_policy_free(cc->policy);
                cc->policy = NULL;
            }
        }
        if (!cc->policy) {
            snprintf(cc->policy_error, sizeof cc->policy_error, "weights file '%s': %s", cp->weights_path, lerr);
            if (strict_weights) {
                char np[600];
                snprintf(np, sizeof np, "%s.weights_path", p);
                fail(epath, epathlen, emsg, emsglen, np, "cluster '%s': %s", cp->cluster_name, cc->policy_error);
                goto bad;
            }
        }
    }
    return c;
bad:
    sharp_scaling_agent_config_free(c);
    return NULL;
}
