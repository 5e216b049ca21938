/* test_admission_control.c: the admission control filter's arithmetic on a
 * fake clock: the rejection probability (Envoy's formula, its cap and
 * aggression), the four-figure draw, the one-second buckets of the sliding
 * window and its average rate, and the success criteria. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "filters/admission_control/controller.h"

#include "envoy/extensions/filters/http/admission_control/v3/admission_control.pb-c.h"

#define S 1000000000ull
#define MS 1000000ull

static void assert_near(double got, double want, double eps)
{
    if (fabs(got - want) > eps) fail_msg("got %.6f, want %.6f (+-%g)", got, want, eps);
}

/* ---- the probability ---- */

static void test_probability_worked_examples(void **state)
{
    (void)state;
    /* 100 requests, 50 successes, threshold 95%, aggression 1:
     * (100 - 50/0.95) / 101 = 0.468994, under the 80% cap */
    assert_near(sharp_admc_probability(100, 50, 0.95, 1.0, 0.80), 0.468994, 1e-6);
    /* the same capped at 30% */
    assert_near(sharp_admc_probability(100, 50, 0.95, 1.0, 0.30), 0.30, 1e-12);
    /* nothing succeeds: 100/101 = 0.990, capped at the default 80% */
    assert_near(sharp_admc_probability(100, 0, 0.95, 1.0, 0.80), 0.80, 1e-12);
    assert_near(sharp_admc_probability(100, 0, 0.95, 1.0, 1.00), 100.0 / 101.0, 1e-12);
    /* exactly at the threshold, and above it: 0 */
    assert_near(sharp_admc_probability(100, 95, 0.95, 1.0, 0.80), 0.0, 1e-12);
    assert_near(sharp_admc_probability(100, 100, 0.95, 1.0, 0.80), 0.0, 1e-12);
    assert_near(sharp_admc_probability(100, 99, 0.95, 4.0, 0.80), 0.0, 1e-12);
    /* no requests yet */
    assert_near(sharp_admc_probability(0, 0, 0.95, 1.0, 0.80), 0.0, 1e-12);
    /* aggression 2 takes the square root: sqrt(0.468994) = 0.684838 */
    assert_near(sharp_admc_probability(100, 50, 0.95, 2.0, 0.80), sqrt(0.468994), 1e-6);
    /* aggression raises small probabilities most: 99 of 100 at 99.9% */
    double lin = sharp_admc_probability(100, 99, 0.999, 1.0, 1.0);
    assert_near(lin, (100 - 99 / 0.999) / 101, 1e-12);
    assert_near(sharp_admc_probability(100, 99, 0.999, 4.0, 1.0), pow(lin, 0.25), 1e-12);
    /* a threshold of 100%: any failure gives a probability */
    assert_near(sharp_admc_probability(10, 9, 1.0, 1.0, 0.80), 1.0 / 11.0, 1e-12);
    /* a zero threshold (a runtime override of 0) rejects nothing */
    assert_near(sharp_admc_probability(10, 0, 0.0, 1.0, 0.80), 0.0, 1e-12);
    assert_near(sharp_admc_probability(10, 5, 0.0, 1.0, 0.80), 0.0, 1e-12);
    /* a cap of 0 rejects nothing */
    assert_near(sharp_admc_probability(100, 0, 0.95, 1.0, 0.0), 0.0, 1e-12);
}

static void test_reject_draw(void **state)
{
    (void)state;
    /* 10000 * p > random % 10000 */
    assert_true(sharp_admc_reject(0.5, 4999));
    assert_false(sharp_admc_reject(0.5, 5000));
    assert_true(sharp_admc_reject(0.5, 10000 + 4999));
    assert_false(sharp_admc_reject(0.5, 20000 + 9999));
    assert_false(sharp_admc_reject(0.0, 0));
    assert_true(sharp_admc_reject(1.0, 9999));
    assert_true(sharp_admc_reject(0.0001, 0));
    assert_false(sharp_admc_reject(0.0001, 1));
    assert_false(sharp_admc_reject(-0.5, 0));
    assert_false(sharp_admc_reject(NAN, 0));
    /* over all draws the share is p */
    unsigned n = 0;
    for (uint64_t r = 0; r < 10000; r++) n += sharp_admc_reject(0.468994, r);
    assert_int_equal(n, 4690); /* 4689.94 > r for r = 0..4689 */
}

/* ---- the sliding window ---- */

static void test_window_buckets_and_expiry(void **state)
{
    (void)state;
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 30);
    uint64_t t0 = 1000 * S; /* any monotonic origin */
    for (int i = 0; i < 10; i++) sharp_admc_record(&h, t0, i < 5);
    /* within the second: the same bucket */
    sharp_admc_record(&h, t0 + 500 * MS, true);
    sharp_admc_record(&h, t0 + 999 * MS, false);
    assert_int_equal(h.len, 1);
    /* a second later: a new one */
    sharp_admc_record(&h, t0 + 1 * S, true);
    assert_int_equal(h.len, 2);
    sharp_admc_counts_t n = sharp_admc_counts(&h, t0 + 29 * S + 999 * MS);
    assert_int_equal(n.requests, 13);
    assert_int_equal(n.successes, 7);
    /* the first bucket is a whole window old: dropped */
    n = sharp_admc_counts(&h, t0 + 30 * S);
    assert_int_equal(n.requests, 1);
    assert_int_equal(n.successes, 1);
    /* the second too; the empty buckets opened by the reads at 30 s and
     * 31 s remain */
    n = sharp_admc_counts(&h, t0 + 31 * S);
    assert_int_equal(n.requests, 0);
    assert_int_equal(n.successes, 0);
    assert_int_equal(h.len, 2);
    /* a request after a long silence starts over */
    sharp_admc_record(&h, t0 + 500 * S, false);
    n = sharp_admc_counts(&h, t0 + 500 * S);
    assert_int_equal(n.requests, 1);
    assert_int_equal(n.successes, 0);
    sharp_admc_history_free(&h);
}

static void test_window_is_bounded(void **state)
{
    (void)state;
    /* a request every 100 ms for 100 s through a 10 s window: never more
     * than 11 buckets, and the counts are those of the last 10 s or so */
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 10);
    uint32_t max_len = 0;
    for (uint64_t t = 0; t < 100 * S; t += 100 * MS) {
        sharp_admc_record(&h, S + t, (t / (100 * MS)) % 2 == 0);
        if (h.len > max_len) max_len = h.len;
    }
    assert_true(max_len <= 11);
    assert_true(h.cap <= 16);
    sharp_admc_counts_t n = sharp_admc_counts(&h, S + 100 * S - 100 * MS);
    assert_in_range(n.requests, 91, 100);
    assert_in_range(n.successes, 45, 50);
    /* a long window grows the ring with the traffic, once a second */
    sharp_admc_history_t l;
    sharp_admc_history_init(&l, 3600);
    for (uint64_t s = 0; s < 4000; s++) sharp_admc_record(&l, S + s * S, true);
    assert_int_equal(l.len, 3600);
    n = sharp_admc_counts(&l, S + 3999 * S);
    assert_int_equal(n.requests, 3600);
    assert_int_equal(n.successes, 3600);
    sharp_admc_history_free(&l);
    sharp_admc_history_free(&h);
}

static void test_window_under_a_second(void **state)
{
    (void)state;
    /* sampling_window 500ms rounds down to 0 s: every read starts over,
     * as in Envoy */
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 0);
    sharp_admc_record(&h, S, false);
    sharp_admc_record(&h, S, false);
    assert_int_equal(sharp_admc_counts(&h, S).requests, 0);
    assert_int_equal(sharp_admc_average_rps(&h, S), 0);
    sharp_admc_record(&h, S, false);
    assert_int_equal(sharp_admc_average_rps(&h, S), 1); /* 1 request / 1 s, no division by 0 */
    sharp_admc_history_free(&h);
}

static void test_window_of_centuries(void **state)
{
    (void)state;
    /* a window whose length in nanoseconds does not fit 64 bits (here it
     * would wrap to under a second): nothing it holds is dropped */
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 18446744074ull);
    sharp_admc_record(&h, S, false);
    sharp_admc_record(&h, 3 * S, true);
    sharp_admc_counts_t n = sharp_admc_counts(&h, 5 * S);
    assert_int_equal(n.requests, 2);
    assert_int_equal(n.successes, 1);
    sharp_admc_history_free(&h);
}

static void test_average_rps(void **state)
{
    (void)state;
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 30);
    assert_int_equal(sharp_admc_average_rps(&h, S), 0);
    /* 60 requests over 10 s: averaged over the whole 30 s window */
    for (int i = 0; i < 60; i++) sharp_admc_record(&h, S + (uint64_t)i * S / 6, true);
    assert_int_equal(sharp_admc_average_rps(&h, 11 * S), 2);
    /* 29 requests: 0 (integer division, as Envoy's) */
    sharp_admc_history_t g;
    sharp_admc_history_init(&g, 30);
    for (int i = 0; i < 29; i++) sharp_admc_record(&g, S, true);
    assert_int_equal(sharp_admc_average_rps(&g, S), 0);
    sharp_admc_record(&g, S, false);
    assert_int_equal(sharp_admc_average_rps(&g, S), 1);
    /* the rate drops nothing itself: 100 requests seen 50 s later, before
     * a read drops them, are averaged over 50 s */
    sharp_admc_history_t k;
    sharp_admc_history_init(&k, 10);
    for (int i = 0; i < 100; i++) sharp_admc_record(&k, S, true);
    assert_int_equal(sharp_admc_average_rps(&k, 51 * S), 2);
    assert_int_equal(sharp_admc_counts(&k, 51 * S).requests, 0);
    assert_int_equal(sharp_admc_average_rps(&k, 51 * S), 0);
    sharp_admc_history_free(&k);
    sharp_admc_history_free(&g);
    sharp_admc_history_free(&h);
}

/* The filter's decision on a fake clock: an upstream failing half of its
 * requests makes about 47% of them rejected; rejections are not sampled,
 * so after it recovers the window fills with successes and the
 * probability returns to 0 within a window. */
static void test_rejections_follow_success_rate(void **state)
{
    (void)state;
    sharp_admc_history_t h;
    sharp_admc_history_init(&h, 10);
    uint64_t t = S, r = 12345, rejected = 0, total = 0;
    for (int i = 0; i < 2000; i++, t += 5 * MS) {
        sharp_admc_counts_t n = sharp_admc_counts(&h, t);
        double p = sharp_admc_probability(n.requests, n.successes, 0.95, 1.0, 0.80);
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        total++;
        if (sharp_admc_reject(p, r >> 33)) {
            rejected++;
            continue;
        }
        sharp_admc_record(&h, t, i % 2 == 0);
    }
    assert_in_range(rejected * 100 / total, 40, 54);
    /* healthy from now on */
    for (int i = 0; i < 3000; i++, t += 5 * MS) sharp_admc_record(&h, t, true);
    sharp_admc_counts_t n = sharp_admc_counts(&h, t);
    assert_int_equal(n.requests, n.successes);
    assert_near(sharp_admc_probability(n.requests, n.successes, 0.95, 1.0, 0.80), 0.0, 1e-12);
    sharp_admc_history_free(&h);
}

/* ---- success criteria ---- */

typedef Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria sc_t;
typedef Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria__HttpCriteria hc_t;
typedef Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria__GrpcCriteria gc_t;

static void test_criteria_defaults(void **state)
{
    (void)state;
    sharp_admc_criteria_t c;
    char err[128] = "";
    assert_int_equal(sharp_admc_criteria_from_proto(NULL, &c, err, sizeof err), 0);
    assert_true(sharp_admc_http_success(&c, 200));
    assert_true(sharp_admc_http_success(&c, 404));
    assert_true(sharp_admc_http_success(&c, 499));
    assert_false(sharp_admc_http_success(&c, 500));
    assert_false(sharp_admc_http_success(&c, 503));
    assert_false(sharp_admc_http_success(&c, 599));
    /* failures: Aborted 10, DataLoss 15, DeadlineExceeded 4, Internal 13,
     * ResourceExhausted 8, Unavailable 14 */
    static const int fail[] = {4, 8, 10, 13, 14, 15};
    for (int64_t code = 0; code <= 16; code++) {
        bool bad = false;
        for (size_t i = 0; i < sizeof fail / sizeof fail[0]; i++) bad |= fail[i] == code;
        if (sharp_admc_grpc_success(&c, code) == bad) fail_msg("gRPC code %lld", (long long)code);
    }
    assert_false(sharp_admc_grpc_success(&c, -1)); /* not a number */
    assert_false(sharp_admc_grpc_success(&c, 17));
    sharp_admc_criteria_free(&c);
    /* an empty SuccessCriteria is the defaults too */
    sc_t sc = ENVOY__EXTENSIONS__FILTERS__HTTP__ADMISSION_CONTROL__V3__ADMISSION_CONTROL__SUCCESS_CRITERIA__INIT;
    assert_int_equal(sharp_admc_criteria_from_proto(&sc, &c, err, sizeof err), 0);
    assert_false(sharp_admc_http_success(&c, 500));
    assert_true(sharp_admc_grpc_success(&c, 0));
    sharp_admc_criteria_free(&c);
}

static int criteria(int32_t (*ranges)[2], size_t nr, uint32_t *codes, size_t nc, sharp_admc_criteria_t *c,
                    char *err, size_t errlen)
{
    sc_t sc = ENVOY__EXTENSIONS__FILTERS__HTTP__ADMISSION_CONTROL__V3__ADMISSION_CONTROL__SUCCESS_CRITERIA__INIT;
    hc_t hc =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ADMISSION_CONTROL__V3__ADMISSION_CONTROL__SUCCESS_CRITERIA__HTTP_CRITERIA__INIT;
    gc_t gc =
        ENVOY__EXTENSIONS__FILTERS__HTTP__ADMISSION_CONTROL__V3__ADMISSION_CONTROL__SUCCESS_CRITERIA__GRPC_CRITERIA__INIT;
    Envoy__Type__V3__Int32Range r[8], *rp[8];
    for (size_t i = 0; i < nr; i++) {
        envoy__type__v3__int32_range__init(&r[i]);
        r[i].start = ranges[i][0];
        r[i].end = ranges[i][1];
        rp[i] = &r[i];
    }
    if (ranges) {
        hc.n_http_success_status = nr;
        hc.http_success_status = rp;
        sc.http_criteria = &hc;
    }
    if (codes) {
        gc.n_grpc_success_status = nc;
        gc.grpc_success_status = codes;
        sc.grpc_criteria = &gc;
    }
    return sharp_admc_criteria_from_proto(&sc, c, err, errlen);
}

static void test_criteria_configured(void **state)
{
    (void)state;
    sharp_admc_criteria_t c;
    char err[128] = "";
    /* the documentation's example: [100, 400) and [404, 404) (empty) */
    int32_t ranges[][2] = {{100, 400}, {404, 404}};
    uint32_t codes[] = {0, 1};
    assert_int_equal(criteria(ranges, 2, codes, 2, &c, err, sizeof err), 0);
    assert_true(sharp_admc_http_success(&c, 100));
    assert_true(sharp_admc_http_success(&c, 200));
    assert_true(sharp_admc_http_success(&c, 399));
    assert_false(sharp_admc_http_success(&c, 400));
    assert_false(sharp_admc_http_success(&c, 404));
    assert_false(sharp_admc_http_success(&c, 500));
    assert_true(sharp_admc_grpc_success(&c, 0));
    assert_true(sharp_admc_grpc_success(&c, 1));
    assert_false(sharp_admc_grpc_success(&c, 2));
    assert_false(sharp_admc_grpc_success(&c, 14));
    sharp_admc_criteria_free(&c);
    /* 5xx as successes */
    int32_t five[][2] = {{500, 600}};
    assert_int_equal(criteria(five, 1, NULL, 0, &c, err, sizeof err), 0);
    assert_true(sharp_admc_http_success(&c, 503));
    assert_false(sharp_admc_http_success(&c, 200));
    assert_true(sharp_admc_grpc_success(&c, 16)); /* gRPC defaults kept */
    assert_false(sharp_admc_grpc_success(&c, 14));
    sharp_admc_criteria_free(&c);
}

static void expect_criteria_error(int32_t (*ranges)[2], size_t nr, uint32_t *codes, size_t nc, const char *msg)
{
    sharp_admc_criteria_t c;
    char err[128] = "";
    assert_int_equal(criteria(ranges, nr, codes, nc, &c, err, sizeof err), -1);
    assert_string_equal(err, msg);
}

static void test_criteria_invalid(void **state)
{
    (void)state;
    int32_t low[][2] = {{200, 300}, {99, 200}};
    expect_criteria_error(low, 2, NULL, 0, "invalid HTTP range: [99, 200)");
    int32_t high[][2] = {{100, 601}};
    expect_criteria_error(high, 1, NULL, 0, "invalid HTTP range: [100, 601)");
    int32_t backwards[][2] = {{300, 200}};
    expect_criteria_error(backwards, 1, NULL, 0, "invalid HTTP range: [300, 200)");
    int32_t start600[][2] = {{600, 600}};
    expect_criteria_error(start600, 1, NULL, 0, "invalid HTTP range: [600, 600)");
    uint32_t code17[] = {0, 17};
    expect_criteria_error(NULL, 0, code17, 2, "invalid gRPC code 17");
    int32_t none[1][2];
    expect_criteria_error(none, 0, NULL, 0, "http_criteria.http_success_status: must have at least 1 item");
    uint32_t nocodes[1];
    expect_criteria_error(NULL, 0, nocodes, 0, "grpc_criteria.grpc_success_status: must have at least 1 item");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probability_worked_examples),
        cmocka_unit_test(test_reject_draw),
        cmocka_unit_test(test_window_buckets_and_expiry),
        cmocka_unit_test(test_window_is_bounded),
        cmocka_unit_test(test_window_under_a_second),
        cmocka_unit_test(test_window_of_centuries),
        cmocka_unit_test(test_average_rps),
        cmocka_unit_test(test_rejections_follow_success_rate),
        cmocka_unit_test(test_criteria_defaults),
        cmocka_unit_test(test_criteria_configured),
        cmocka_unit_test(test_criteria_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
