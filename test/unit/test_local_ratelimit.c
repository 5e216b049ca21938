/* test_local_ratelimit.c: the local rate limit filter's token bucket
 * (Envoy's AtomicTokenBucketImpl) on a fake clock: it starts full, fills
 * continuously at tokens_per_fill per fill_interval up to max_tokens,
 * reports remaining tokens and the time to the next one, and threads
 * taking tokens at once never take more than there are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>

#include "filters/local_ratelimit/token_bucket.h"

#define MS 1000000ull
#define S (1000 * MS)
#define T0 (1000 * S) /* an arbitrary start on the fake monotonic clock */

static int take_all(sharp_token_bucket_t *b, uint64_t now)
{
    int n = 0;
    while (sharp_token_bucket_consume(b, now)) n++;
    return n;
}

static void starts_full_and_empties(void **state)
{
    (void)state;
    sharp_token_bucket_t b;
    sharp_token_bucket_init(&b, 3, 1, 60 * S, T0);
    assert_int_equal(sharp_token_bucket_remaining(&b, T0), 3);
    assert_int_equal(sharp_token_bucket_next_token_ns(&b, T0), 0);
    assert_int_equal(take_all(&b, T0), 3);
    assert_int_equal(sharp_token_bucket_remaining(&b, T0), 0);
    /* a whole fill interval until the next token */
    assert_int_equal(sharp_token_bucket_next_token_ns(&b, T0), 60 * S);
    /* no token before the interval is over, one after */
    assert_false(sharp_token_bucket_consume(&b, T0 + 60 * S - MS));
    assert_true(sharp_token_bucket_consume(&b, T0 + 60 * S));
    assert_false(sharp_token_bucket_consume(&b, T0 + 60 * S));
}

static void fills_continuously_up_to_max(void **state)
{
    (void)state;
    sharp_token_bucket_t b;
    /* 10 tokens per second, 5 at most */
    sharp_token_bucket_init(&b, 5, 10, 1 * S, T0);
    assert_int_equal(take_all(&b, T0), 5);
    /* 0.35 s: 3.5 tokens, 3 whole ones */
    assert_int_equal(sharp_token_bucket_remaining(&b, T0 + 350 * MS), 3);
    assert_int_equal(take_all(&b, T0 + 350 * MS), 3);
    /* the half token left over is kept: another 50 ms makes one */
    assert_int_equal(sharp_token_bucket_next_token_ns(&b, T0 + 350 * MS), 50 * MS);
    assert_int_equal(take_all(&b, T0 + 400 * MS), 1);
    /* a long idle time fills it to max_tokens, no more */
    assert_int_equal(sharp_token_bucket_remaining(&b, T0 + 3600 * S), 5);
    assert_int_equal(take_all(&b, T0 + 3600 * S), 5);
}

static void tokens_per_fill_defaults_to_one_per_interval(void **state)
{
    (void)state;
    sharp_token_bucket_t b;
    sharp_token_bucket_init(&b, 2, 1, 100 * MS, T0);
    assert_int_equal(take_all(&b, T0), 2);
    assert_int_equal(take_all(&b, T0 + 100 * MS), 1);
    assert_int_equal(take_all(&b, T0 + 350 * MS), 2);
}

/* Threads racing for one bucket at a fixed time: exactly max_tokens
 * successes in all, whatever the interleaving. */
typedef struct {
    sharp_token_bucket_t *b;
    int got;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    for (int i = 0; i < 20000; i++)
        if (sharp_token_bucket_consume(r->b, T0)) r->got++;
    return NULL;
}

static void concurrent_consumers_share_exactly(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        sharp_token_bucket_t b;
        sharp_token_bucket_init(&b, 10000, 1, 60 * S, T0);
        enum { N = 4 };
        pthread_t t[N];
        racer_t r[N];
        for (int i = 0; i < N; i++) {
            r[i] = (racer_t){&b, 0};
            assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
        }
        int total = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(t[i], NULL);
            total += r[i].got;
        }
        assert_int_equal(total, 10000);
        assert_int_equal(sharp_token_bucket_remaining(&b, T0), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_full_and_empties),
        cmocka_unit_test(fills_continuously_up_to_max),
        cmocka_unit_test(tokens_per_fill_defaults_to_one_per_interval),
        cmocka_unit_test(concurrent_consumers_share_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
