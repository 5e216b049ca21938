/* test_health_check.c: the active health check state machine (thresholds,
 * the first-check fast path, degraded answers), interval selection and
 * jitter bounds, status ranges and TCP payload matching; and a whole host
 * timeline driven by a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/health_check.h"

/* An Envoy-like config: interval 1 s, every other interval distinct so a
 * wrong choice shows. */
static sharp_hc_config_t base_config(void)
{
    sharp_hc_config_t c;
    memset(&c, 0, sizeof c);
    c.type = SHARP_HC_HTTP;
    c.timeout_ms = 500;
    c.interval_ms = 1000;
    c.unhealthy_interval_ms = 2000;
    c.unhealthy_edge_interval_ms = 300;
    c.healthy_edge_interval_ms = 400;
    c.no_traffic_interval_ms = 60000;
    c.no_traffic_healthy_interval_ms = 90000;
    c.unhealthy_threshold = 3;
    c.healthy_threshold = 2;
    c.reuse_connection = true;
    return c;
}

static void test_first_success_marks_healthy_at_once(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.healthy_threshold = 5;
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    assert_true(st.failed);
    assert_true(st.first_check);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGED);
    assert_false(st.failed);
    assert_false(st.first_check);
}

static void test_first_failure_then_healthy_threshold(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    /* a host that fails its first check stays failed; no fast path after that */
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK), SHARP_HC_UNCHANGED);
    assert_true(st.failed);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_true(st.failed);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGED);
    assert_false(st.failed);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_UNCHANGED);
}

static void test_failure_resets_healthy_count(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.healthy_threshold = 3;
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    sharp_hc_state_put(&c, &st, SHARP_HC_FAILED);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT), SHARP_HC_UNCHANGED);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGED);
    assert_false(st.failed);
}

static sharp_hc_state_t healthy_state(const sharp_hc_config_t *c)
{
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    sharp_hc_state_put(c, &st, SHARP_HC_OK);
    return st;
}

static void test_network_failures_count_to_threshold(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    const sharp_hc_result_t counted[] = {SHARP_HC_NETWORK, SHARP_HC_TIMEOUT,
                                         SHARP_HC_FAILED_RETRIABLE};
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(counted); k++) {
        sharp_hc_state_t st = healthy_state(&c);
        assert_int_equal(sharp_hc_state_put(&c, &st, counted[k]), SHARP_HC_CHANGE_PENDING);
        assert_int_equal(sharp_hc_state_put(&c, &st, counted[k]), SHARP_HC_CHANGE_PENDING);
        assert_false(st.failed);
        assert_int_equal(sharp_hc_state_put(&c, &st, counted[k]), SHARP_HC_CHANGED);
        assert_true(st.failed);
        assert_int_equal(sharp_hc_state_put(&c, &st, counted[k]), SHARP_HC_UNCHANGED);
    }
    /* a success in between starts the count again */
    sharp_hc_state_t st = healthy_state(&c);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_UNCHANGED);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    assert_false(st.failed);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    assert_true(st.failed);
}

static void test_unexpected_status_fails_at_once(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.unhealthy_threshold = 10;
    sharp_hc_state_t st = healthy_state(&c);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_FAILED), SHARP_HC_CHANGED);
    assert_true(st.failed);
}

static void test_degraded(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    sharp_hc_state_t st = healthy_state(&c);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_DEGRADED), SHARP_HC_CHANGED);
    assert_true(st.degraded);
    assert_false(st.failed);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_DEGRADED), SHARP_HC_UNCHANGED);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGED);
    assert_false(st.degraded);
    /* a failure leaves the degraded bit alone (Envoy) */
    sharp_hc_state_put(&c, &st, SHARP_HC_DEGRADED);
    sharp_hc_state_put(&c, &st, SHARP_HC_FAILED);
    assert_true(st.degraded);
}

/* Envoy's ACTIVE_HC_TIMEOUT, which HDS reports as TIMEOUT: a timeout of a
 * failed host sets it, any other failure clears it, and it stays while the
 * host is on its way back until it is healthy again. */
static void test_timeout_flag(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    assert_false(st.timeout);
    sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT); /* failed from the start */
    assert_true(st.failed);
    assert_true(st.timeout);
    sharp_hc_state_put(&c, &st, SHARP_HC_NETWORK);
    assert_false(st.timeout);
    sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT);
    assert_true(st.timeout);
    /* one of healthy_threshold (2) successes: still failed, still a timeout */
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGE_PENDING);
    assert_true(st.timeout);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_OK), SHARP_HC_CHANGED);
    assert_false(st.failed);
    assert_false(st.timeout);
    /* a healthy host's timeouts below unhealthy_threshold (3) are no timeout state */
    sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT);
    sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT);
    assert_false(st.failed);
    assert_false(st.timeout);
    assert_int_equal(sharp_hc_state_put(&c, &st, SHARP_HC_TIMEOUT), SHARP_HC_CHANGED);
    assert_true(st.failed);
    assert_true(st.timeout);
    /* an unexpected answer of a failed host clears it */
    sharp_hc_state_put(&c, &st, SHARP_HC_FAILED);
    assert_false(st.timeout);
}

static void test_interval_selection(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    uint64_t rng = 1;
    /* with traffic */
    assert_int_equal(sharp_hc_interval(&c, true, true, SHARP_HC_UNCHANGED, &rng), 1000);
    assert_int_equal(sharp_hc_interval(&c, true, true, SHARP_HC_CHANGED, &rng), 1000);
    assert_int_equal(sharp_hc_interval(&c, true, true, SHARP_HC_CHANGE_PENDING, &rng), 400);
    assert_int_equal(sharp_hc_interval(&c, true, false, SHARP_HC_UNCHANGED, &rng), 2000);
    assert_int_equal(sharp_hc_interval(&c, true, false, SHARP_HC_CHANGED, &rng), 2000);
    assert_int_equal(sharp_hc_interval(&c, true, false, SHARP_HC_CHANGE_PENDING, &rng), 300);
    /* never any traffic to the cluster */
    assert_int_equal(sharp_hc_interval(&c, false, true, SHARP_HC_UNCHANGED, &rng), 90000);
    assert_int_equal(sharp_hc_interval(&c, false, true, SHARP_HC_CHANGED, &rng), 90000);
    assert_int_equal(sharp_hc_interval(&c, false, true, SHARP_HC_CHANGE_PENDING, &rng), 60000);
    assert_int_equal(sharp_hc_interval(&c, false, false, SHARP_HC_UNCHANGED, &rng), 60000);
    assert_int_equal(sharp_hc_interval(&c, false, false, SHARP_HC_CHANGE_PENDING, &rng), 60000);
}

static void test_jitter_bounds(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.interval_jitter_ms = 100;
    c.interval_jitter_percent = 10;
    uint64_t rng = 0x1234567;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 20000; i++) {
        uint64_t v = sharp_hc_interval(&c, true, true, SHARP_HC_UNCHANGED, &rng);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    /* interval + [0, 10% of it) + [0, interval_jitter) */
    assert_true(lo >= 1000);
    assert_true(hi < 1000 + 100 + 100);
    assert_true(lo < 1020 && hi > 1170); /* the whole range is used */
    /* no jitter configured: exact */
    c.interval_jitter_ms = 0;
    c.interval_jitter_percent = 0;
    assert_int_equal(sharp_hc_interval(&c, true, true, SHARP_HC_UNCHANGED, &rng), 1000);
    /* a zero base never gives a zero interval */
    assert_int_equal(sharp_hc_jitter(&c, 0, 0, &rng), 1);
}

static void test_initial_delay(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    uint64_t rng = 99;
    assert_int_equal(sharp_hc_initial_delay(&c, &rng), 0);
    c.initial_jitter_ms = 50;
    c.interval_jitter_percent = 50; /* applies to a base of 0: nothing */
    for (int i = 0; i < 1000; i++) {
        uint64_t d = sharp_hc_initial_delay(&c, &rng);
        assert_true(d >= 1 && d < 50);
    }
}

static void test_status_ranges(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    /* Envoy's default: 200 only */
    assert_true(sharp_hc_status_expected(&c, 200));
    assert_false(sharp_hc_status_expected(&c, 204));
    assert_false(sharp_hc_status_expected(&c, 503));
    assert_false(sharp_hc_status_retriable(&c, 503));
    sharp_hc_range_t expected[] = {{200, 300}, {404, 405}};
    sharp_hc_range_t retriable[] = {{503, 504}};
    c.expected = expected;
    c.nexpected = 2;
    c.retriable = retriable;
    c.nretriable = 1;
    assert_true(sharp_hc_status_expected(&c, 204));
    assert_true(sharp_hc_status_expected(&c, 299));
    assert_false(sharp_hc_status_expected(&c, 300));
    assert_true(sharp_hc_status_expected(&c, 404));
    assert_true(sharp_hc_status_retriable(&c, 503));
    assert_false(sharp_hc_status_retriable(&c, 502));
}

static void test_payload_match(void **state)
{
    (void)state;
    sharp_hc_payload_t want[] = {{(uint8_t *)"200", 3}, {(uint8_t *)"ok", 2}};
    const char *a = "HTTP/1.1 200 OK\r\n\r\nok";
    assert_true(sharp_hc_payload_match(want, 2, (const uint8_t *)a, strlen(a)));
    const char *b = "ok HTTP/1.1 200"; /* both present, wrong order */
    assert_false(sharp_hc_payload_match(want, 2, (const uint8_t *)b, strlen(b)));
    const char *d = "HTTP/1.1 20";
    assert_false(sharp_hc_payload_match(want, 1, (const uint8_t *)d, strlen(d)));
    assert_true(sharp_hc_payload_match(want, 0, (const uint8_t *)d, 0));
}

/* ---- a host's timeline on a fake clock ---- */

/* The host answers checks at time t (ms) with this result. */
typedef sharp_hc_result_t (*host_fn)(uint64_t t);

static sharp_hc_result_t down_between_10s_and_20s(uint64_t t)
{
    return t >= 10000 && t < 20000 ? SHARP_HC_NETWORK : SHARP_HC_OK;
}

static sharp_hc_result_t status_503_between_10s_and_20s(uint64_t t)
{
    return t >= 10000 && t < 20000 ? SHARP_HC_FAILED : SHARP_HC_OK;
}

typedef struct {
    uint64_t failed_at, healthy_at; /* first check time that flipped the host */
    uint64_t checks;
} timeline_t;

/* Runs checks from t=0 until `until`, each next check after the interval
 * the state machine picks, and records when the host changed. */
static timeline_t simulate(const sharp_hc_config_t *c, host_fn host, bool traffic, uint64_t until)
{
    timeline_t tl = {0};
    sharp_hc_state_t st;
    sharp_hc_state_init(&st);
    uint64_t rng = 7, now = 0;
    bool first = true;
    while (now < until) {
        sharp_hc_result_t r = host(now);
        bool was = st.failed;
        sharp_hc_transition_t t = sharp_hc_state_put(c, &st, r);
        tl.checks++;
        if (!was && st.failed && !tl.failed_at) tl.failed_at = now;
        if (was && !st.failed && !first && !tl.healthy_at) tl.healthy_at = now;
        first = false;
        now += sharp_hc_interval(c, traffic, sharp_hc_result_ok(r), t, &rng);
    }
    return tl;
}

static void test_timeline_network_failure(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.unhealthy_interval_ms = c.unhealthy_edge_interval_ms = c.healthy_edge_interval_ms = 1000;
    timeline_t tl = simulate(&c, down_between_10s_and_20s, true, 30000);
    /* failures at 10 s, 11 s, 12 s: failed on the third (threshold 3) */
    assert_int_equal(tl.failed_at, 12000);
    /* successes at 20 s, 21 s: healthy on the second (threshold 2) */
    assert_int_equal(tl.healthy_at, 21000);
    assert_int_equal(tl.checks, 30);
}

static void test_timeline_edge_intervals(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config(); /* unhealthy 2 s, edges 300/400 ms */
    timeline_t tl = simulate(&c, down_between_10s_and_20s, true, 30000);
    /* 10 s fails (pending, +300), 10.3 s (pending, +300), 10.6 s: failed */
    assert_int_equal(tl.failed_at, 10600);
    /* then every unhealthy_interval (2 s): 12.6 ... 18.6, 20.6 ok (pending,
     * +400 healthy edge), 21.0: healthy */
    assert_int_equal(tl.healthy_at, 21000);
}

static void test_timeline_unexpected_status(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    timeline_t tl = simulate(&c, status_503_between_10s_and_20s, true, 30000);
    assert_int_equal(tl.failed_at, 10000); /* no threshold for a bad status */
    assert_int_equal(tl.healthy_at, 20000 + 400);
}

static void test_timeline_no_traffic(void **state)
{
    (void)state;
    sharp_hc_config_t c = base_config();
    c.no_traffic_interval_ms = 5000;
    c.no_traffic_healthy_interval_ms = 5000;
    timeline_t tl = simulate(&c, down_between_10s_and_20s, false, 60000);
    /* checks at 0, 5, 10 (fail), 15 (fail), 20 (ok: pending) ...: the third
     * failure never comes, so the host is never failed */
    assert_int_equal(tl.failed_at, 0);
    assert_int_equal(tl.checks, 12);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_success_marks_healthy_at_once),
        cmocka_unit_test(test_first_failure_then_healthy_threshold),
        cmocka_unit_test(test_failure_resets_healthy_count),
        cmocka_unit_test(test_network_failures_count_to_threshold),
        cmocka_unit_test(test_unexpected_status_fails_at_once),
        cmocka_unit_test(test_degraded),
        cmocka_unit_test(test_timeout_flag),
        cmocka_unit_test(test_interval_selection),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_initial_delay),
        cmocka_unit_test(test_status_ranges),
        cmocka_unit_test(test_payload_match),
        cmocka_unit_test(test_timeline_network_failure),
        cmocka_unit_test(test_timeline_edge_intervals),
        cmocka_unit_test(test_timeline_unexpected_status),
        cmocka_unit_test(test_timeline_no_traffic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
