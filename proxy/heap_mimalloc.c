/* heap_mimalloc.c: mimalloc's figures and release (see heap.h). Compiled
 * into the `sharp` executable only, which links mimalloc: libmimalloc
 * exports malloc, free and the rest, and comes before libc in the search
 * order, so every library's allocations are mimalloc's too (checked at
 * install).
 *
 * mimalloc keeps free memory per thread: a thread's heap gives its empty
 * pages back to their segments, and the segments decommit them (after
 * decommit_delay / segment_decommit_delay), only when that thread calls
 * into mimalloc's slow paths or collects. A burst's memory freed on an
 * idle worker would stay committed, so every event loop thread collects
 * once a second (mi_collect(false): retired pages, delayed decommits), and
 * a release (shrink_heap, the idle release) makes each one collect fully
 * at its next tick.
 *
 * mimalloc's release build counts committed bytes (process-wide, exact)
 * but not the bytes in use: those are summed from each thread's own heap
 * (blocks in use times block size) at its tick, so they are up to a second
 * old and leave out threads that are not event loops (libuv's pool). */
#include "heap.h"
#include "log.h"

#include <mimalloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 256

static _Atomic uint64_t slot_bytes[SLOTS];
static atomic_bool slot_taken[SLOTS];
static _Thread_local int my_slot = -1;

static uint64_t committed(void)
{
    size_t elapsed, user, sys, rss, peak_rss, commit, peak_commit, faults;
    mi_process_info(&elapsed, &user, &sys, &rss, &peak_rss, &commit, &peak_commit, &faults);
    return commit;
}

static uint64_t mim_allocated(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < SLOTS; i++) sum += atomic_load_explicit(&slot_bytes[i], memory_order_relaxed);
    return sum;
}

static uint64_t mim_free(void)
{
    uint64_t c = committed(), a = mim_allocated();
    return c > a ? c - a : 0;
}

static void mim_stats(sharp_heap_stats_t *st)
{
    uint64_t c = committed(), a = mim_allocated();
    st->allocated = a;
    /* committed: decommitted memory is not part of it, so nothing of it is
     * unmapped; its free part is whatever is not in use (free blocks in
     * pages, empty pages not yet decommitted, mimalloc's metadata) */
    st->heap_size = c;
    st->pageheap_unmapped = 0;
    st->pageheap_free = c > a ? c - a : 0;
    st->total_thread_cache = 0; /* no caches apart from the thread heaps */
    st->total_physical = c;
}

static bool sum_area(const mi_heap_t *heap, const mi_heap_area_t *area, void *block, size_t block_size, void *arg)
{
    (void)heap, (void)block, (void)block_size;
    *(uint64_t *)arg += (uint64_t)area->used * area->block_size;
    return true;
}

static void mim_tick(bool release)
{
    mi_collect(release);
    if (my_slot < 0) {
        for (int i = 0; i < SLOTS && my_slot < 0; i++) {
            bool f = false;
            if (atomic_compare_exchange_strong(&slot_taken[i], &f, true)) my_slot = i;
        }
        if (my_slot < 0) return; /* more loop threads than slots: left out of allocated */
    }
    uint64_t used = 0;
    mi_heap_visit_blocks(mi_heap_get_default(), false, sum_area, &used);
    atomic_store_explicit(&slot_bytes[my_slot], used, memory_order_relaxed);
}

static void mim_release(void) { mi_collect(true); }

static void mim_thread_exit(void)
{
    if (my_slot < 0) return;
    atomic_store(&slot_bytes[my_slot], 0);
    atomic_store(&slot_taken[my_slot], false);
    my_slot = -1;
}

static void mim_describe(char *buf, size_t n)
{
    snprintf(buf, n, "%d.%d.%d (malloc is mimalloc's; allow_decommit=%ld decommit_delay=%ldms "
             "segment_decommit_delay=%ldms)",
             mi_version() / 100, mi_version() % 100 / 10, mi_version() % 10,
             mi_option_get(mi_option_allow_decommit), mi_option_get(mi_option_decommit_delay),
             mi_option_get(mi_option_segment_decommit_delay));
}

static const sharp_heap_backend_t mimalloc_backend = {
    .name = "mimalloc",
    .stats = mim_stats,
    .allocated = mim_allocated,
    /* Envoy's fixed_heap: reserved minus unmapped, i.e. committed */
    .pressure_bytes = committed,
    .free_bytes = mim_free,
    .release = mim_release,
    .thread_tick = mim_tick,
    .thread_exit = mim_thread_exit,
    .describe = mim_describe,
};

bool sharp_heap_mimalloc_install(void)
{
    /* the allocation functions themselves and one made inside libc */
    void *p = calloc(1, 64);
    char *s = strdup("sharp");
    bool ours = p && s && mi_is_in_heap_region(p) && mi_is_in_heap_region(s);
    free(p);
    free(s);
    if (!ours) {
        sharp_log_warn("mimalloc is linked but malloc is not mimalloc's; the heap figures are glibc's");
        return false;
    }
    sharp_heap_set_backend(&mimalloc_backend);
    /* first figures for the main thread before the first housekeeping */
    mim_tick(false);
    return true;
}
