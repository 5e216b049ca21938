/* dispatcher_stats.c: see dispatcher_stats.h. */
#include "dispatcher_stats.h"

#include "common.h"

bool sharp_dispatcher_loop_duration_us(uint64_t prev_check_ns, uint64_t prepare_ns, uint64_t *us)
{
    if (!prev_check_ns || prepare_ns < prev_check_ns) return false;
    *us = (prepare_ns - prev_check_ns) / 1000;
    return true;
}

bool sharp_dispatcher_poll_delay_us(uint64_t prepare_ns, uint64_t check_ns, int timeout_ms, uint64_t *us)
{
    if (timeout_ms < 0 || check_ns < prepare_ns) return false;
    uint64_t polled = check_ns - prepare_ns, expected = (uint64_t)timeout_ms * 1000000u;
    /* a poll that ended early (I/O was ready) says nothing: Envoy drops
     * negative delays too */
    if (polled < expected) return false;
    *us = (polled - expected) / 1000;
    return true;
}

static void on_prepare(uv_prepare_t *h)
{
    sharp_dispatcher_stats_t *d = h->data;
    /* the timeout this turn's poll will use: libuv computes it right after
     * the prepare handles, from the same timers */
    d->timeout_ms = uv_backend_timeout(h->loop);
    d->prepare_ns = sharp_now_ns();
    uint64_t us;
    if (sharp_dispatcher_loop_duration_us(d->check_ns, d->prepare_ns, &us))
        sharp_histogram_record(d->shard, d->loop_duration, us);
}

static void on_check(uv_check_t *h)
{
    sharp_dispatcher_stats_t *d = h->data;
    d->check_ns = sharp_now_ns();
    uint64_t us;
    if (d->prepare_ns && sharp_dispatcher_poll_delay_us(d->prepare_ns, d->check_ns, d->timeout_ms, &us))
        sharp_histogram_record(d->shard, d->poll_delay, us);
}

void sharp_dispatcher_stats_start(sharp_dispatcher_stats_t *d, uv_loop_t *loop, sharp_stats_t *stats,
                                  sharp_stats_shard_t *shard, const char *prefix)
{
    d->shard = shard;
    d->loop_duration = sharp_stats_histogramf(stats, SHARP_HIST_UNSPECIFIED, "%sloop_duration_us", prefix);
    d->poll_delay = sharp_stats_histogramf(stats, SHARP_HIST_UNSPECIFIED, "%spoll_delay_us", prefix);
    d->prepare_ns = d->check_ns = 0;
    d->timeout_ms = -1;
    uv_prepare_init(loop, &d->prepare);
    uv_check_init(loop, &d->check);
    d->prepare.data = d->check.data = d;
    uv_prepare_start(&d->prepare, on_prepare);
    uv_check_start(&d->check, on_check);
    uv_unref((uv_handle_t *)&d->prepare);
    uv_unref((uv_handle_t *)&d->check);
    d->on = true;
}

void sharp_dispatcher_stats_stop(sharp_dispatcher_stats_t *d)
{
    if (!d->on) return;
    d->on = false;
    uv_prepare_stop(&d->prepare);
    uv_check_stop(&d->check);
    uv_close((uv_handle_t *)&d->prepare, NULL);
    uv_close((uv_handle_t *)&d->check, NULL);
}
