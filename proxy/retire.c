/* retire.c: see retire.h. */
#include "retire.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

typedef struct retired {
    void *p;
    void (*fn)(void *p);
    uint64_t epoch; /* every worker must have seen this one */
    struct retired *next;
} retired_t;

static struct {
    bool running;
    unsigned nworkers;
    _Atomic uint64_t epoch;
    _Atomic uint64_t *seen; /* per worker: the epoch of its last wake-up */
    void (*wake)(void *arg);
    void *wake_arg;
    uv_async_t async; /* a worker has seen a new epoch */
    retired_t *head, **tail;
} R;

static void collect(void)
{
    uint64_t min = UINT64_MAX;
    for (unsigned i = 0; i < R.nworkers; i++) {
        uint64_t s = atomic_load_explicit(&R.seen[i], memory_order_acquire);
        if (s < min) min = s;
    }
    while (R.head && R.head->epoch <= min) {
        retired_t *r = R.head;
        R.head = r->next;
        if (!R.head) R.tail = &R.head;
        r->fn(r->p);
        free(r);
    }
}

static void on_seen(uv_async_t *a)
{
    (void)a;
    collect();
}

void sharp_retire_start(uv_loop_t *loop, unsigned nworkers, void (*wake)(void *arg), void *arg)
{
    if (R.running || !nworkers) return;
    R.nworkers = nworkers;
    R.seen = sharp_calloc(nworkers, sizeof *R.seen);
    R.wake = wake;
    R.wake_arg = arg;
    R.head = NULL;
    R.tail = &R.head;
    uv_async_init(loop, &R.async, on_seen);
    uv_unref((uv_handle_t *)&R.async);
    atomic_store(&R.epoch, 0);
    R.running = true;
}

void sharp_retire(void *p, void (*fn)(void *p))
{
    if (!p) return;
    if (!R.running) {
        fn(p);
        return;
    }
    /* the swap that unpublished p happened before this increment; a worker
     * that reads the new epoch afterwards loads the new pointer only */
    uint64_t e = atomic_fetch_add_explicit(&R.epoch, 1, memory_order_seq_cst) + 1;
    retired_t *r = sharp_calloc(1, sizeof *r);
    *r = (retired_t){p, fn, e, NULL};
    *R.tail = r;
    R.tail = &r->next;
    R.wake(R.wake_arg);
}

void sharp_retire_quiescent(unsigned index)
{
    if (!R.running || index >= R.nworkers) return;
    uint64_t e = atomic_load_explicit(&R.epoch, memory_order_seq_cst);
    if (atomic_load_explicit(&R.seen[index], memory_order_relaxed) == e) return;
    atomic_store_explicit(&R.seen[index], e, memory_order_release);
    uv_async_send(&R.async);
}

static void on_async_closed(uv_handle_t *h)
{
    (void)h;
}

void sharp_retire_stop(void)
{
    if (!R.running) return;
    R.running = false;
    while (R.head) {
        retired_t *r = R.head;
        R.head = r->next;
        r->fn(r->p);
        free(r);
    }
    R.tail = &R.head;
    uv_close((uv_handle_t *)&R.async, on_async_closed);
    free(R.seen);
    R.seen = NULL;
    R.nworkers = 0;
}
