/* The scaling agent's bootstrap extension (config/scaling_config.c): the
 * defaults, every cross-field check with the field path it names, and the
 * weights file: missing, corrupt, of another observation shape; an error
 * with strict weights (--mode validate), the agent's fallback with the
 * reason kept otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* |a - b| <= tol, with both values in the message. */
#define assert_near(a, b, tol) \
    do { \
        double a_ = (a), b_ = (b); \
        if (!(fabs(a_ - b_) <= (tol))) fail_msg("%s = %.17g, expected %.17g", #a, a_, b_); \
    } while (0)
#include <unistd.h>

#include "agent/policy_file.h"
#include "agent/rng.h"
#include "config/scaling_config.h"
#include "sharp/extensions/scaling/v1/scaling_agent.pb-c.h"

typedef Sharp__Extensions__Scaling__V1__ScalingAgent agent_pb_t;
typedef Sharp__Extensions__Scaling__V1__ScaledCluster cluster_pb_t;

static char dir[64];
static char good[128], cartpole[128], corrupt[128], missing[128];

static void write_policy(const char *path, int obs, int actions)
{
    int hidden[1] = {8};
    sharp_policy_t *p = sharp_policy_new(obs, actions, hidden, 1, true, 10.0);
    assert_non_null(p);
    sharp_rng_t rng;
    sharp_rng_seed(&rng, 3);
    sharp_policy_init_weights(p, &rng);
    char err[256];
    if (sharp_policy_save(p, path, err, sizeof err) != 0)
        fail_msg("%s", err);
    sharp_policy_free(p);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/sharp-scaling-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(good, sizeof good, "%s/good.pol", dir);
    snprintf(cartpole, sizeof cartpole, "%s/cartpole.pol", dir);
    snprintf(corrupt, sizeof corrupt, "%s/corrupt.pol", dir);
    snprintf(missing, sizeof missing, "%s/missing.pol", dir);
    write_policy(good, SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS);
    write_policy(cartpole, 4, 2);
    write_policy(corrupt, SHARP_SCALE_OBS_N, SHARP_SCALE_ACTIONS);
    /* one flipped bit in the weights: the checksum no longer matches */
    FILE *f = fopen(corrupt, "r+b");
    assert_non_null(f);
    fseek(f, 400, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 400, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(good);
    unlink(cartpole);
    unlink(corrupt);
    rmdir(dir);
    return 0;
}

typedef struct {
    agent_pb_t agent;
    cluster_pb_t cluster;
    cluster_pb_t *list[2];
    Sharp__Extensions__Scaling__V1__HpaRule hpa;
} msg_t;

static void msg_init(msg_t *m, const char *path)
{
    agent_pb_t a = SHARP__EXTENSIONS__SCALING__V1__SCALING_AGENT__INIT;
    cluster_pb_t c = SHARP__EXTENSIONS__SCALING__V1__SCALED_CLUSTER__INIT;
    Sharp__Extensions__Scaling__V1__HpaRule h = SHARP__EXTENSIONS__SCALING__V1__HPA_RULE__INIT;
    m->agent = a;
    m->cluster = c;
    m->hpa = h;
    m->hpa.per_replica_concurrency = 8;
    m->cluster.cluster_name = "backend";
    m->cluster.weights_path = (char *)path;
    m->cluster.min_replicas = 2;
    m->cluster.max_replicas = 10;
    m->cluster.hpa = &m->hpa;
    m->list[0] = m->list[1] = &m->cluster;
    m->agent.n_clusters = 1;
    m->agent.clusters = m->list;
}

static sharp_scaling_agent_config_t *load(msg_t *m, bool strict, char *epath, char *emsg)
{
    return sharp_config_scaling(&m->agent.base, "bootstrap_extensions[0].typed_config", strict, epath, 256, emsg,
                                1024);
}

static void defaults_and_policy(void **state)
{
    (void)state;
    msg_t m;
    msg_init(&m, good);
    char epath[256], emsg[1024];
    sharp_scaling_agent_config_t *c = load(&m, true, epath, emsg);
    if (!c)
        fail_msg("%s: %s", epath, emsg);
    assert_int_equal(c->n, 1);
    const sharp_scaling_cluster_config_t *cc = &c->clusters[0];
    assert_string_equal(cc->cluster, "backend");
    assert_int_equal(cc->live.mode, SHARP_SCALING_SHADOW); /* the enum's default */
    assert_int_equal(cc->live.initial_replicas, 2);        /* min_replicas */
    assert_near(cc->live.sync_period_s, 15.0, 0);
    assert_int_equal(cc->live.target_utilization, 70);
    assert_int_equal(cc->live.per_replica_concurrency, 8);
    assert_near(cc->live.slo_p99_s, 0.5, 0);
    assert_near(cc->live.slo_error_rate, 0.01, 0);
    assert_non_null(cc->policy);
    assert_int_equal(cc->policy->obs_dim, SHARP_SCALE_OBS_N);
    assert_string_equal(cc->policy_error, "");
    sharp_scaling_agent_config_free(c);
}

static void set_values(void **state)
{
    (void)state;
    msg_t m;
    msg_init(&m, good);
    Google__Protobuf__UInt32Value init = GOOGLE__PROTOBUF__UINT32_VALUE__INIT, target = GOOGLE__PROTOBUF__UINT32_VALUE__INIT;
    Google__Protobuf__Duration period = GOOGLE__PROTOBUF__DURATION__INIT, p99 = GOOGLE__PROTOBUF__DURATION__INIT;
    Google__Protobuf__DoubleValue er = GOOGLE__PROTOBUF__DOUBLE_VALUE__INIT;
    Sharp__Extensions__Scaling__V1__Objective obj = SHARP__EXTENSIONS__SCALING__V1__OBJECTIVE__INIT;
    init.value = 5;
    target.value = 60;
    period.seconds = 30;
    p99.nanos = 250000000;
    er.value = 0.05;
    obj.p99_latency = &p99;
    obj.error_rate = &er;
    m.cluster.initial_replicas = &init;
    m.cluster.sync_period = &period;
    m.cluster.objective = &obj;
    m.cluster.mode = SHARP__EXTENSIONS__SCALING__V1__SCALED_CLUSTER__MODE__ACTIVE;
    m.hpa.target_utilization = &target;
    char epath[256], emsg[1024];
    sharp_scaling_agent_config_t *c = load(&m, true, epath, emsg);
    assert_non_null(c);
    const sharp_scaling_live_config_t *l = &c->clusters[0].live;
    assert_int_equal(l->mode, SHARP_SCALING_ACTIVE);
    assert_int_equal(l->initial_replicas, 5);
    assert_near(l->sync_period_s, 30.0, 0);
    assert_near(l->slo_p99_s, 0.25, 1e-12);
    assert_near(l->slo_error_rate, 0.05, 0);
    assert_int_equal(l->target_utilization, 60);
    sharp_scaling_agent_config_free(c);
    /* initial_replicas outside [min, max] */
    init.value = 11;
    assert_null(load(&m, true, epath, emsg));
    assert_string_equal(epath, "bootstrap_extensions[0].typed_config.clusters[0].initial_replicas");
}

static void max_below_min(void **state)
{
    (void)state;
    msg_t m;
    msg_init(&m, good);
    m.cluster.min_replicas = 5;
    m.cluster.max_replicas = 3;
    char epath[256], emsg[1024];
    assert_null(load(&m, true, epath, emsg));
    assert_string_equal(epath, "bootstrap_extensions[0].typed_config.clusters[0].max_replicas");
    assert_string_equal(emsg, "cluster 'backend': max_replicas must not be less than min_replicas");
}

static void missing_hpa_concurrency_and_duplicates(void **state)
{
    (void)state;
    msg_t m;
    msg_init(&m, good);
    m.hpa.per_replica_concurrency = 0;
    char epath[256], emsg[1024];
    assert_null(load(&m, true, epath, emsg));
    assert_string_equal(epath, "bootstrap_extensions[0].typed_config.clusters[0].hpa");
    assert_non_null(strstr(emsg, "per_replica_concurrency must be positive"));
    msg_init(&m, good);
    m.agent.n_clusters = 2; /* the same cluster twice */
    assert_null(load(&m, true, epath, emsg));
    assert_string_equal(epath, "bootstrap_extensions[0].typed_config.clusters[1].cluster_name");
    assert_non_null(strstr(emsg, "scaled twice"));
}

static void bad_weights(const char *path, const char *expect)
{
    msg_t m;
    msg_init(&m, path);
    char epath[256], emsg[1024];
    /* strict (--mode validate): an error naming the field and file */
    assert_null(load(&m, true, epath, emsg));
    assert_string_equal(epath, "bootstrap_extensions[0].typed_config.clusters[0].weights_path");
    if (!strstr(emsg, expect) || !strstr(emsg, path))
        fail_msg("'%s' lacks '%s'", emsg, expect);
    /* running: the agent starts without a policy, the reason kept */
    sharp_scaling_agent_config_t *c = load(&m, false, epath, emsg);
    assert_non_null(c);
    assert_null(c->clusters[0].policy);
    if (!strstr(c->clusters[0].policy_error, expect))
        fail_msg("'%s' lacks '%s'", c->clusters[0].policy_error, expect);
    sharp_scaling_agent_config_free(c);
}

static void weights_missing(void **state)
{
    (void)state;
    bad_weights(missing, "No such file");
}

static void weights_corrupt(void **state)
{
    (void)state;
    bad_weights(corrupt, "checksum");
}

static void weights_of_another_shape(void **state)
{
    (void)state;
    bad_weights(cartpole, "the policy has 4 observations and 2 actions");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_and_policy),
        cmocka_unit_test(set_values),
        cmocka_unit_test(max_below_min),
        cmocka_unit_test(missing_hpa_concurrency_and_duplicates),
        cmocka_unit_test(weights_missing),
        cmocka_unit_test(weights_corrupt),
        cmocka_unit_test(weights_of_another_shape),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
