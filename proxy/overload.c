/* overload.c: see overload.h. */
#include "overload.h"
#include "heap.h"
#include "log.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

static const char *const action_names[SHARP_OL_NACTIONS] = {
    [SHARP_OL_STOP_ACCEPTING_REQUESTS] = "envoy.overload_actions.stop_accepting_requests",
    [SHARP_OL_DISABLE_HTTP_KEEPALIVE] = "envoy.overload_actions.disable_http_keepalive",
    [SHARP_OL_REJECT_INCOMING_CONNECTIONS] = "envoy.overload_actions.reject_incoming_connections",
    [SHARP_OL_SHRINK_HEAP] = "envoy.overload_actions.shrink_heap",
    [SHARP_OL_REDUCE_TIMEOUTS] = "envoy.overload_actions.reduce_timeouts",
    [SHARP_OL_RESET_HIGH_MEMORY_STREAM] = "envoy.overload_actions.reset_high_memory_stream",
    [SHARP_OL_STOP_ACCEPTING_CONNECTIONS] = "envoy.overload_actions.stop_accepting_connections",
};

#define PPM 1000000u

int sharp_overload_action_kind(const char *name)
{
    for (int i = 0; i < SHARP_OL_NACTIONS; i++)
        if (strcmp(name, action_names[i]) == 0) return i;
    return -1;
}

double sharp_overload_trigger_state(const sharp_ol_trigger_t *t, double pressure)
{
    if (isnan(pressure)) return 0;
    if (!t->scaled) return pressure >= t->threshold ? 1.0 : 0.0;
    if (pressure < t->scaling) return 0;
    if (pressure >= t->saturation) return 1.0;
    return (pressure - t->scaling) / (t->saturation - t->scaling);
}

double sharp_overload_action_state(const sharp_ol_action_t *a, const double *pressures)
{
    double st = 0;
    for (uint32_t i = 0; i < a->ntriggers; i++) {
        double v = sharp_overload_trigger_state(&a->triggers[i], pressures[a->triggers[i].monitor]);
        if (v > st) st = v;
    }
    return st;
}

bool sharp_overload_bernoulli(uint32_t ppm, uint64_t random)
{
    if (ppm == 0) return false;
    if (ppm >= PPM) return true;
    return random % PPM < ppm;
}

void sharp_overload_config_free(sharp_overload_config_t *c)
{
    if (!c) return;
    for (uint32_t i = 0; i < c->nmonitors; i++) free(c->monitors[i].name);
    for (uint32_t i = 0; i < c->nactions; i++) {
        free(c->actions[i].name);
        free(c->actions[i].triggers);
    }
    free(c->monitors);
    free(c->actions);
    free(c);
}

/* ---- process-wide state ---- */

static _Atomic uint32_t action_ppm[SHARP_OL_NACTIONS];
static _Atomic int64_t cx_open;  /* downstream connections admitted and not yet closed */
static _Atomic int64_t cx_limit; /* 0: no global limit */
static _Atomic uint32_t generation;
/* reduce_timeouts, per timer: mode 0 not scaled, 1 absolute minimum
 * (timer_min_ms), 2 a share of the timer (timer_min_ppm, millionths) */
static _Atomic int timer_mode[SHARP_OL_NTIMERS];
static _Atomic uint64_t timer_min_ms[SHARP_OL_NTIMERS];
static _Atomic uint32_t timer_min_ppm[SHARP_OL_NTIMERS];
static _Atomic uint32_t account_shift; /* 0: no buffer accounting */
static _Atomic(sharp_stat_id_t) resets_stat;
static _Atomic bool resets_counted;
static void (*waker)(void *);
static void *waker_arg;

static struct {
    const sharp_overload_config_t *cfg;
    sharp_stats_t *stats;
    uv_timer_t refresh, shrink;
    bool running;
    bool shrink_active;
    uint64_t last_refresh_ns;
} mgr;

uint32_t sharp_overload_state(sharp_ol_action_kind_t a)
{
    return atomic_load_explicit(&action_ppm[a], memory_order_relaxed);
}

bool sharp_overload_take(sharp_ol_action_kind_t a, uint64_t random)
{
    return sharp_overload_bernoulli(sharp_overload_state(a), random);
}

sharp_ol_admit_t sharp_overload_admit_connection(bool ignore_global_limit, bool bypass, uint64_t random)
{
    int64_t max = atomic_load_explicit(&cx_limit, memory_order_relaxed);
    if (max > 0 && !ignore_global_limit) {
        int64_t cur = atomic_load_explicit(&cx_open, memory_order_relaxed);
        do {
            if (cur >= max) return SHARP_OL_REJECT_GLOBAL_LIMIT;
        } while (!atomic_compare_exchange_weak_explicit(&cx_open, &cur, cur + 1, memory_order_relaxed,
                                                        memory_order_relaxed));
    } else {
        /* a listener that ignores the limit still counts towards it (Envoy) */
        atomic_fetch_add_explicit(&cx_open, 1, memory_order_relaxed);
    }
    if (!bypass && sharp_overload_take(SHARP_OL_REJECT_INCOMING_CONNECTIONS, random)) {
        atomic_fetch_sub_explicit(&cx_open, 1, memory_order_relaxed);
        return SHARP_OL_REJECT_OVERLOAD_ACTION;
    }
    return SHARP_OL_ADMIT;
}

void sharp_overload_connection_closed(void)
{
    atomic_fetch_sub_explicit(&cx_open, 1, memory_order_relaxed);
}

uint64_t sharp_overload_scaled_timeout_ms(uint64_t max_ms, uint64_t min_ms, uint32_t state_ppm)
{
    if (min_ms > max_ms) min_ms = max_ms;
    if (state_ppm >= PPM) return min_ms;
    return min_ms + (uint64_t)((double)(max_ms - min_ms) * (double)(PPM - state_ppm) / PPM);
}

uint64_t sharp_overload_timer_remaining_ms(sharp_ol_timer_t t, uint64_t max_ms, uint64_t elapsed_ms)
{
    int mode = atomic_load_explicit(&timer_mode[t], memory_order_relaxed);
    uint64_t total = max_ms;
    if (mode) {
        uint64_t min = mode == 1 ? atomic_load_explicit(&timer_min_ms[t], memory_order_relaxed)
                                 : (uint64_t)((double)max_ms *
                                              atomic_load_explicit(&timer_min_ppm[t], memory_order_relaxed) / PPM);
        total = sharp_overload_scaled_timeout_ms(max_ms, min, sharp_overload_state(SHARP_OL_REDUCE_TIMEOUTS));
    }
    return total > elapsed_ms ? total - elapsed_ms : 0;
}

int sharp_overload_memory_class(uint64_t bytes)
{
    uint32_t shift = atomic_load_explicit(&account_shift, memory_order_relaxed);
    if (!shift) return -1;
    /* Envoy's documentation: class 0 holds [2^min, 2^(min+1)), class 7
     * everything from 2^(min+7). (Its WatermarkBufferFactory shifts by
     * min - 1, which starts one power of two lower than documented; SHARP
     * does what the field's documentation says.) */
    uint64_t v = bytes >> shift;
    if (!v) return -1;
    int cls = 63 - __builtin_clzll(v); /* bit width - 1 */
    return cls > 7 ? 7 : cls;
}

uint32_t sharp_overload_classes_to_reset(uint32_t state_ppm)
{
    if (!state_ppm) return 0;
    uint32_t n = (uint32_t)((uint64_t)state_ppm * 8 / PPM) + 1;
    return n > 8 ? 8 : n;
}

void sharp_overload_count_resets(sharp_stats_shard_t *shard, uint64_t n)
{
    if (n && atomic_load_explicit(&resets_counted, memory_order_relaxed))
        sharp_counter_add(shard, atomic_load_explicit(&resets_stat, memory_order_relaxed), n);
}

uint32_t sharp_overload_generation(void)
{
    return atomic_load_explicit(&generation, memory_order_acquire);
}

void sharp_overload_set_waker(void (*wake)(void *), void *arg)
{
    waker = wake;
    waker_arg = arg;
}

int64_t sharp_overload_connections(void)
{
    return atomic_load_explicit(&cx_open, memory_order_relaxed);
}

/* ---- main thread ---- */

/* Envoy's shrink_heap (HeapShrinker): on every timer tick while the action
 * is saturated, free memory goes back to the system (heap.h: glibc's
 * malloc_trim releases the free pages of every arena, not only the top of
 * the main heap; mimalloc's threads collect fully); it runs only when more
 * than max_unfreed_memory_bytes sit free. */
static void on_shrink(uv_timer_t *t)
{
    (void)t;
    if (!mgr.shrink_active) return;
    uint64_t free_bytes = sharp_heap_free_bytes();
    if (free_bytes <= mgr.cfg->shrink_max_unfreed) return;
    sharp_heap_release();
    sharp_counter_inc(sharp_stats_shard(mgr.stats, 0), mgr.cfg->shrink_count);
    sharp_debug(main, "shrink_heap: released free heap memory (%llu bytes were free)", (unsigned long long)free_bytes);
}

void sharp_overload_refresh(void)
{
    const sharp_overload_config_t *c = mgr.cfg;
    if (!c) return;
    uint64_t now = sharp_now_ns();
    sharp_stats_shard_t *sh = sharp_stats_shard(mgr.stats, 0);
    if (mgr.last_refresh_ns) {
        uint64_t took_ms = (now - mgr.last_refresh_ns) / 1000000;
        sharp_histogram_record(sh, c->refresh_interval_delay,
                               took_ms > c->refresh_ms ? took_ms - c->refresh_ms : 0);
    }
    mgr.last_refresh_ns = now;
    double pressures[c->nmonitors ? c->nmonitors : 1];
    bool have_heap = false;
    uint64_t heap_bytes = 0;
    for (uint32_t i = 0; i < c->nmonitors; i++) {
        const sharp_ol_monitor_t *m = &c->monitors[i];
        pressures[i] = 0;
        if (m->kind != SHARP_OL_MONITOR_FIXED_HEAP) continue;
        if (!have_heap) {
            heap_bytes = sharp_heap_pressure_bytes();
            have_heap = true;
        }
        pressures[i] = (double)heap_bytes / (double)m->max;
        sharp_gauge_set(mgr.stats, m->pressure, (int64_t)(pressures[i] * 100));
    }
    for (uint32_t i = 0; i < c->nactions; i++) {
        const sharp_ol_action_t *a = &c->actions[i];
        double st = sharp_overload_action_state(a, pressures);
        uint32_t ppm = st >= 1.0 ? PPM : (uint32_t)(st * PPM);
        uint32_t old = atomic_exchange_explicit(&action_ppm[a->kind], ppm, memory_order_relaxed);
        if (old != ppm)
            sharp_log_info("overload action %s: %s (%.1f%%)", a->name,
                           ppm >= PPM ? "saturated" : ppm ? "scaling" : "inactive", st * 100);
        sharp_gauge_set(mgr.stats, a->active, ppm >= PPM ? 1 : 0);
        sharp_gauge_set(mgr.stats, a->scale_percent, (int64_t)(st >= 1.0 ? 100 : st * 100));
        if (a->kind == SHARP_OL_SHRINK_HEAP) mgr.shrink_active = ppm >= PPM;
        if ((a->kind == SHARP_OL_REDUCE_TIMEOUTS || a->kind == SHARP_OL_RESET_HIGH_MEMORY_STREAM ||
             a->kind == SHARP_OL_STOP_ACCEPTING_CONNECTIONS) && old != ppm) {
            atomic_fetch_add_explicit(&generation, 1, memory_order_release);
            if (waker) waker(waker_arg);
        }
    }
}

static void on_refresh(uv_timer_t *t)
{
    (void)t;
    sharp_overload_refresh();
}

void sharp_overload_start(uv_loop_t *loop, const sharp_overload_config_t *cfg, sharp_stats_t *stats)
{
    for (int i = 0; i < SHARP_OL_NACTIONS; i++) atomic_store(&action_ppm[i], 0);
    atomic_store(&cx_limit, 0);
    for (int i = 0; i < SHARP_OL_NTIMERS; i++) atomic_store(&timer_mode[i], 0);
    atomic_store(&account_shift, 0);
    atomic_store(&resets_counted, false);
    mgr.cfg = cfg;
    mgr.stats = stats;
    mgr.shrink_active = false;
    mgr.last_refresh_ns = 0;
    if (!cfg) return;
    for (uint32_t i = 0; i < cfg->nmonitors; i++)
        if (cfg->monitors[i].kind == SHARP_OL_MONITOR_DOWNSTREAM_CONNECTIONS)
            atomic_store(&cx_limit, (int64_t)cfg->monitors[i].max);
    for (int i = 0; i < SHARP_OL_NTIMERS; i++) {
        const sharp_ol_timer_scale_t *ts = &cfg->timers[i];
        if (!ts->set) continue;
        atomic_store(&timer_min_ms[i], ts->min_ms);
        atomic_store(&timer_min_ppm[i], (uint32_t)(ts->min_scale * PPM));
        atomic_store(&timer_mode[i], ts->is_scale ? 2 : 1);
    }
    atomic_store(&account_shift, cfg->min_account_pow2);
    atomic_store(&resets_stat, cfg->reset_streams_count);
    atomic_store(&resets_counted, true);
    sharp_overload_refresh();
    uv_timer_init(loop, &mgr.refresh);
    uv_timer_init(loop, &mgr.shrink);
    uv_unref((uv_handle_t *)&mgr.refresh);
    uv_unref((uv_handle_t *)&mgr.shrink);
    uv_timer_start(&mgr.refresh, on_refresh, cfg->refresh_ms, cfg->refresh_ms);
    bool shrink = false;
    for (uint32_t i = 0; i < cfg->nactions; i++) shrink |= cfg->actions[i].kind == SHARP_OL_SHRINK_HEAP;
    if (shrink) uv_timer_start(&mgr.shrink, on_shrink, cfg->shrink_interval_ms, cfg->shrink_interval_ms);
    mgr.running = true;
}

void sharp_overload_stop(void)
{
    if (!mgr.running) return;
    mgr.running = false;
    uv_timer_stop(&mgr.refresh);
    uv_timer_stop(&mgr.shrink);
    uv_close((uv_handle_t *)&mgr.refresh, NULL);
    uv_close((uv_handle_t *)&mgr.shrink, NULL);
    mgr.cfg = NULL;
}
