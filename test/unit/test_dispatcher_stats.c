/* test_dispatcher_stats: Envoy's event loop statistics (dispatcher_stats.h):
 * the values a turn records, and the handles on a real libuv loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "dispatcher_stats.h"

#include <unistd.h>

static void test_loop_duration(void **state)
{
    (void)state;
    uint64_t us = 0;
    /* the first turn has no previous check */
    assert_false(sharp_dispatcher_loop_duration_us(0, 5000000, &us));
    assert_true(sharp_dispatcher_loop_duration_us(1000000, 3500000, &us));
    assert_int_equal(us, 2500);
    assert_false(sharp_dispatcher_loop_duration_us(3000000, 2000000, &us));
}

static void test_poll_delay(void **state)
{
    (void)state;
    uint64_t us = 0;
    /* no timeout (the poll waits for I/O only): no delay */
    assert_false(sharp_dispatcher_poll_delay_us(1000000, 90000000, -1, &us));
    /* woken by I/O before the timeout: nothing recorded, as Envoy drops
     * negative delays */
    assert_false(sharp_dispatcher_poll_delay_us(1000000, 3000000, 10, &us));
    /* a 10 ms timeout that returned after 13.2 ms: 3.2 ms late */
    assert_true(sharp_dispatcher_poll_delay_us(1000000, 14200000, 10, &us));
    assert_int_equal(us, 3200);
    /* a zero timeout that took 40 us */
    assert_true(sharp_dispatcher_poll_delay_us(1000000, 1040000, 0, &us));
    assert_int_equal(us, 40);
}

static void on_work(uv_timer_t *t)
{
    usleep(20000); /* a turn of 20 ms of work */
    int *left = t->data;
    /* one callback a turn: a repeating timer made late by the work would
     * run again in the same pass of the timers */
    if (--*left) uv_timer_start(t, on_work, 1, 0);
}

/* On a real loop: a timer whose callbacks work 20 ms each gives loop
 * durations of at least that; the handles never keep the loop alive. */
static void test_on_a_loop(void **state)
{
    (void)state;
    sharp_stats_t *stats = sharp_stats_create(1);
    sharp_stats_shard_t *sh = sharp_stats_shard(stats, 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    sharp_dispatcher_stats_t d = {0};
    sharp_dispatcher_stats_start(&d, &loop, stats, sh, "server.dispatcher.");
    uv_timer_t t;
    int left = 4; /* the first may run in the first turn, which has no loop duration yet */
    uv_timer_init(&loop, &t);
    t.data = &left;
    uv_timer_start(&t, on_work, 1, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* ends when the timer stops: the stats' handles are unreferenced */
    assert_int_equal(left, 0);
    sharp_stats_flush(stats);
    sharp_stat_id_t id;
    sharp_stat_kind_t kind;
    assert_int_equal(sharp_stats_find(stats, "server.dispatcher.loop_duration_us", &id, &kind), 0);
    assert_int_equal(kind, SHARP_STAT_HISTOGRAM);
    assert_true(sharp_stats_histogram_count(stats, id) >= 3);
    assert_true(sharp_stats_histogram_quantile(stats, id, 1.0) >= 19000);
    assert_int_equal(sharp_stats_find(stats, "server.dispatcher.poll_delay_us", &id, &kind), 0);
    sharp_dispatcher_stats_stop(&d);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    sharp_stats_destroy(stats);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loop_duration),
        cmocka_unit_test(test_poll_delay),
        cmocka_unit_test(test_on_a_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
