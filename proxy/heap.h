/* heap.h: what the memory allocator says about the heap, and how its free
 * memory goes back to the system.
 *
 * The allocator is chosen at build time (meson option `allocator`): glibc's
 * malloc, mimalloc linked into the `sharp` executable, or the sanitizer's
 * allocator in sanitizer builds. Each knows different things; the figures
 * below keep Envoy's names (Memory::Stats, /memory) and each is documented
 * per allocator in README.md ("Memory allocator"). A figure an allocator
 * does not have is 0 there, never estimated. */
#ifndef SHARP_HEAP_H
#define SHARP_HEAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sharp_heap_stats {
    uint64_t allocated;          /* bytes in use by the application */
    uint64_t heap_size;          /* bytes the allocator holds from the system */
    uint64_t pageheap_unmapped;  /* of heap_size: given back, no longer resident */
    uint64_t pageheap_free;      /* of heap_size: free and still mapped (what
                                  * sharp_heap_free_bytes says) */
    uint64_t total_thread_cache; /* free bytes in per-thread caches */
    uint64_t total_physical;     /* heap_size - pageheap_unmapped */
} sharp_heap_stats_t;

/* One allocator's implementation of the figures and of release. */
typedef struct sharp_heap_backend {
    const char *name; /* "glibc", "mimalloc", "sanitizer" */
    void (*stats)(sharp_heap_stats_t *st);
    /* server.memory_allocated's measure (cheap enough for once a second) */
    uint64_t (*allocated)(void);
    /* the fixed_heap monitor's measure */
    uint64_t (*pressure_bytes)(void);
    /* free bytes a release could give back */
    uint64_t (*free_bytes)(void);
    /* gives free memory back now, as far as the calling thread can */
    void (*release)(void);
    /* every event loop thread once a second; release: a release was asked
     * for since the thread's last tick */
    void (*thread_tick)(bool release);
    void (*thread_exit)(void);
    /* for the startup log line: version and settings (may be NULL) */
    void (*describe)(char *buf, size_t n);
} sharp_heap_backend_t;

/* The executable installs a linked-in allocator before anything else runs
 * (main.c); libsharp alone (unit tests, tools) has glibc's or the
 * sanitizer's. */
void sharp_heap_set_backend(const sharp_heap_backend_t *b);
const char *sharp_heap_allocator(void);
/* Logs the allocator in use at debug level (once, at startup, after the
 * bootstrap's log format applies). */
void sharp_heap_log_allocator(void);

void sharp_heap_stats(sharp_heap_stats_t *st);
/* Heap bytes in use: server.memory_allocated, /memory allocated. */
uint64_t sharp_heap_in_use(void);
/* The fixed_heap monitor's measure: Envoy's reserved minus unmapped where
 * the allocator knows it (mimalloc: committed bytes); glibc and the
 * sanitizer's allocator cannot say what was unmapped, so there it is the
 * bytes in use. */
uint64_t sharp_heap_pressure_bytes(void);
/* Free heap memory that a release could give back. */
uint64_t sharp_heap_free_bytes(void);
/* Gives free memory back to the system: the calling thread's at once, the
 * workers' at their next tick (within a second) where the allocator keeps
 * free memory per thread. */
void sharp_heap_release(void);
/* Returns free heap memory to the system after a burst (main loop, once a
 * second); true when it did. */
bool sharp_heap_release_idle(void);
/* Each event loop thread (main and workers) once a second, and once when
 * its loop has ended. */
void sharp_heap_thread_tick(void);
void sharp_heap_thread_exit(void);

/* mimalloc (heap_mimalloc.c, linked into the executable only): installs
 * its backend when malloc really is mimalloc's; false otherwise. */
bool sharp_heap_mimalloc_install(void);

#endif
