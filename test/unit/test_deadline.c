/* Deadlines (worker.h): lists per duration with one lazily re-armed libuv
 * timer each, and a timer of its own for what has no list. */
#include "worker.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

typedef struct {
    sharp_deadline_t d;
    int id;
    uint64_t fired_at; /* loop time */
} probe_t;

static sharp_worker_t W;
static int order[64];
static unsigned nfired;
static probe_t *to_stop;    /* stopped by the next callback */
static probe_t *to_restart; /* started again (same duration) by the next callback */
static probe_t *to_start0;  /* started for 0 ms by the next callback */

static void on_fire(sharp_deadline_t *d)
{
    probe_t *p = sharp_container_of(d, probe_t, d);
    p->fired_at = uv_now(&W.loop);
    order[nfired++] = p->id;
    if (to_stop) {
        sharp_deadline_stop(&to_stop->d);
        to_stop = NULL;
    }
    if (to_start0) {
        probe_t *q = to_start0;
        to_start0 = NULL;
        sharp_deadline_start(&W, &q->d, on_fire, 0);
    }
    if (to_restart == p) {
        to_restart = NULL;
        sharp_deadline_start(&W, &p->d, on_fire, 15);
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    uv_loop_init(&W.loop);
    sharp_deadlines_init(&W);
    nfired = 0;
    to_stop = to_restart = to_start0 = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sharp_deadlines_close(&W);
    uv_run(&W.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&W.loop), 0);
    return 0;
}

static void on_sentinel(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Runs the loop until n callbacks ran, then 30 ms more, in which nothing
 * else may fire. */
static void run(unsigned n)
{
    while (nfired < n) uv_run(&W.loop, UV_RUN_ONCE);
    bool done = false;
    uv_timer_t sentinel;
    uv_timer_init(&W.loop, &sentinel);
    sentinel.data = &done;
    uv_timer_start(&sentinel, on_sentinel, 30, 0);
    while (!done) uv_run(&W.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&sentinel, NULL);
    uv_run(&W.loop, UV_RUN_NOWAIT);
    assert_int_equal(nfired, n);
}

static void test_durations_fire_in_time_order(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    uint64_t t0 = uv_now(&W.loop);
    sharp_deadline_start(&W, &a.d, on_fire, 30);
    sharp_deadline_start(&W, &b.d, on_fire, 10);
    sharp_deadline_start(&W, &c.d, on_fire, 20);
    run(3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 1);
    assert_true(b.fired_at >= t0 + 10);
    assert_true(c.fired_at >= t0 + 20);
    assert_true(a.fired_at >= t0 + 30);
    assert_false(sharp_deadline_pending(&a.d));
}

static void test_stopped_never_fires(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    sharp_deadline_start(&W, &a.d, on_fire, 10);
    sharp_deadline_start(&W, &b.d, on_fire, 10);
    sharp_deadline_start(&W, &c.d, on_fire, 10);
    assert_true(sharp_deadline_pending(&a.d));
    sharp_deadline_stop(&a.d); /* the first: the list's timer stays armed for it */
    sharp_deadline_stop(&a.d); /* twice is harmless */
    to_stop = &c;              /* b's callback stops c, due at the same time */
    run(1);
    assert_int_equal(order[0], 2);
}

/* A list left armed for a long duration serves a short one next: its timer
 * is brought forward. */
static void test_reused_list_rearms_earlier(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2};
    uint64_t t0 = uv_now(&W.loop);
    sharp_deadline_start(&W, &a.d, on_fire, 5000);
    sharp_deadline_stop(&a.d);
    sharp_deadline_start(&W, &b.d, on_fire, 10);
    assert_ptr_equal(b.d.list, &W.deadlines[0]); /* the same list, now for 10 ms */
    run(1);
    assert_true(b.fired_at >= t0 + 10 && b.fired_at < t0 + 1000);
}

/* Restarting moves a deadline; a callback may start its own again. */
static void test_restart(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2};
    uint64_t t0 = uv_now(&W.loop);
    sharp_deadline_start(&W, &a.d, on_fire, 10);
    sharp_deadline_start(&W, &b.d, on_fire, 15);
    sharp_deadline_start(&W, &a.d, on_fire, 20); /* a now after b */
    to_restart = &b;                             /* b fires twice */
    run(3);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
    assert_true(a.fired_at >= t0 + 20);
    assert_true(b.fired_at >= t0 + 30);
}

/* 0 ms: the next loop turn, in the order started; one started from a
 * callback runs in the same pass, as with a libuv timer. */
static void test_zero_next_turn(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    sharp_deadline_start(&W, &a.d, on_fire, 0);
    sharp_deadline_start(&W, &b.d, on_fire, 0);
    assert_non_null(a.d.list);
    assert_int_equal(nfired, 0);
    to_start0 = &c;
    uv_run(&W.loop, UV_RUN_NOWAIT);
    assert_int_equal(nfired, 3);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 3);
    run(3);
}

/* More distinct durations pending than lists: timers of their own. */
/* The check phase's pass runs what is due now, not what its callbacks
 * start, nor what they stop; the list's timer then fires for nothing. */
static void test_run_due_pass(void **state)
{
    (void)state;
    probe_t a = {.id = 1}, b = {.id = 2}, c = {.id = 3}, d = {.id = 4}, later = {.id = 5};
    sharp_deadline_start(&W, &a.d, on_fire, 0);
    sharp_deadline_start(&W, &b.d, on_fire, 0);
    sharp_deadline_start(&W, &c.d, on_fire, 0);
    sharp_deadline_start(&W, &later.d, on_fire, 50);
    to_stop = &b;    /* a's callback stops b, due in this pass */
    to_start0 = &d;  /* and starts d for 0 ms: the next pass's */
    assert_true(sharp_deadlines_run_due(&W));
    assert_int_equal(nfired, 2);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 3);
    assert_false(sharp_deadline_pending(&b.d));
    assert_true(sharp_deadline_pending(&d.d));
    assert_true(sharp_deadline_pending(&later.d));
    run(4); /* d in the next turn's timers, then the 50 ms one */
    assert_int_equal(order[2], 4);
    assert_int_equal(order[3], 5);
    assert_false(sharp_deadlines_run_due(&W));
}

static void test_overflow_own_timers(void **state)
{
    (void)state;
    probe_t p[SHARP_DEADLINE_LISTS + 3];
    for (unsigned i = 0; i < SHARP_DEADLINE_LISTS + 2; i++) {
        p[i] = (probe_t){.id = (int)i};
        sharp_deadline_start(&W, &p[i].d, on_fire, 40 - 3 * i);
    }
    assert_non_null(p[SHARP_DEADLINE_LISTS].d.own);
    assert_null(p[SHARP_DEADLINE_LISTS].d.list);
    p[SHARP_DEADLINE_LISTS + 2] = (probe_t){.id = 99};
    sharp_deadline_start(&W, &p[SHARP_DEADLINE_LISTS + 2].d, on_fire, 0);
    assert_non_null(p[SHARP_DEADLINE_LISTS + 2].d.own);
    sharp_deadline_stop(&p[1].d); /* an own one stopped and a listed one */
    sharp_deadline_stop(&p[SHARP_DEADLINE_LISTS + 1].d);
    run(SHARP_DEADLINE_LISTS + 1);
    assert_int_equal(order[0], 99);
    /* the rest latest-started first (shortest duration) */
    int expect = SHARP_DEADLINE_LISTS;
    for (unsigned k = 1; k < nfired; k++, expect--) {
        if (expect == 1) expect--;
        assert_int_equal(order[k], expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_durations_fire_in_time_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_never_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reused_list_rearms_earlier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zero_next_turn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_due_pass, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overflow_own_timers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
