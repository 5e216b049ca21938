/* retire.h: freeing what workers may still be reading, without locks on
 * their side (quiescent-state reclamation).
 *
 * The main thread replaces a shared pointer that workers load without
 * taking a reference first (a TLS context slot, tls/slot.h) and hands the
 * old object here. A worker uses such a pointer only within one callback
 * of its loop (it takes its own reference before keeping anything), so once
 * every worker has come back to its loop after the swap, nobody can still
 * hold the old pointer. The main thread wakes the workers; each one, from
 * its wake-up callback, records the retire epoch it has seen and tells the
 * main thread, which frees what every worker has passed.
 *
 * Before the workers start, and after they have been joined, nothing reads
 * the pointers concurrently and a retired object is freed at once. */
#ifndef SHARP_RETIRE_H
#define SHARP_RETIRE_H

#include <uv.h>

/* Workers are running: `wake` wakes them all (their wake-up calls
 * sharp_retire_quiescent). Main thread. */
void sharp_retire_start(uv_loop_t *loop, unsigned nworkers, void (*wake)(void *arg), void *arg);
/* Frees `p` with `fn` once no worker can still use it. Main thread. */
void sharp_retire(void *p, void (*fn)(void *p));
/* Worker `index` is between two events of its loop. Its thread. */
void sharp_retire_quiescent(unsigned index);
/* The workers have been joined: frees everything still waiting. Main thread. */
void sharp_retire_stop(void);

#endif
