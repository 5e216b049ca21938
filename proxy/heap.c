/* heap.c: see heap.h. glibc's and the sanitizer's figures; mimalloc's are
 * in heap_mimalloc.c. */
#include "heap.h"
#include "small.h"
#include "log.h"

#include <malloc.h>
#include <stdatomic.h>

/* Under AddressSanitizer malloc is ASan's and glibc's counters stay at
 * zero, so its own allocator counters stand in: the monitors and actions
 * then behave the same in both builds. */
#if defined(__SANITIZE_ADDRESS__)
#define SHARP_ASAN_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SHARP_ASAN_HEAP 1
#endif
#endif

#ifdef SHARP_ASAN_HEAP
/* the sanitizer runtime's allocator interface (GCC ships no header for it) */
size_t __sanitizer_get_current_allocated_bytes(void);
size_t __sanitizer_get_heap_size(void);
size_t __sanitizer_get_free_bytes(void);
size_t __sanitizer_get_unmapped_bytes(void);
void __sanitizer_purge_allocator(void);

static void asan_stats(sharp_heap_stats_t *st)
{
    /* heap_size includes the quarantine of freed blocks; free bytes are
     * those of the allocator's free lists */
    st->allocated = __sanitizer_get_current_allocated_bytes();
    st->heap_size = __sanitizer_get_heap_size();
    st->pageheap_unmapped = __sanitizer_get_unmapped_bytes();
    st->pageheap_free = __sanitizer_get_free_bytes();
    st->total_thread_cache = 0;
    st->total_physical = st->heap_size > st->pageheap_unmapped ? st->heap_size - st->pageheap_unmapped : 0;
}

static uint64_t asan_allocated(void) { return __sanitizer_get_current_allocated_bytes(); }
static uint64_t asan_free(void) { return __sanitizer_get_free_bytes(); }
static void asan_release(void) { __sanitizer_purge_allocator(); /* process-wide */ }
static void no_tick(bool release) { (void)release; }
static void no_exit(void) {}

static const sharp_heap_backend_t builtin = {
    .name = "sanitizer",
    .stats = asan_stats,
    .allocated = asan_allocated,
    /* heap_size would count the quarantine, which is the sanitizer's
     * artefact: the bytes in use keep the monitors as in other builds */
    .pressure_bytes = asan_allocated,
    .free_bytes = asan_free,
    .release = asan_release,
    .thread_tick = no_tick,
    .thread_exit = no_exit,
};
#else
/* glibc: allocated = small chunks in use plus mmapped ones, heap size =
 * arena bytes from sbrk/mmap plus mmapped chunks. mallinfo2 walks every
 * arena under its lock: once a second is cheap. malloc_trim releases the
 * free pages inside the arenas (madvise) without shrinking `arena`, so
 * glibc cannot say how much of heap_size is unmapped: pageheap_unmapped is
 * 0 and the fixed_heap monitor measures the bytes in use. */
static void glibc_stats(sharp_heap_stats_t *st)
{
    struct mallinfo2 mi = mallinfo2();
    st->allocated = mi.uordblks + mi.hblkhd;
    st->heap_size = mi.arena + mi.hblkhd;
    st->pageheap_unmapped = 0;
    st->pageheap_free = mi.fordblks;
    st->total_thread_cache = 0; /* glibc's tcache is not reported apart */
    st->total_physical = st->heap_size;
}

static uint64_t glibc_allocated(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static uint64_t glibc_free(void) { return mallinfo2().fordblks; }
/* every arena's free pages, whichever thread freed them */
static void glibc_release(void) { malloc_trim(0); }
static void no_tick(bool release) { (void)release; }
static void no_exit(void) {}

static const sharp_heap_backend_t builtin = {
    .name = "glibc",
    .stats = glibc_stats,
    .allocated = glibc_allocated,
    .pressure_bytes = glibc_allocated,
    .free_bytes = glibc_free,
    .release = glibc_release,
    .thread_tick = no_tick,
    .thread_exit = no_exit,
};
#endif

static const sharp_heap_backend_t *backend = &builtin;
/* bumped by each release; a thread that sees it change releases its own */
static _Atomic uint32_t release_generation;
static _Thread_local uint32_t seen_generation;

void sharp_heap_set_backend(const sharp_heap_backend_t *b)
{
    backend = b ? b : &builtin;
    /* mimalloc keeps free blocks per thread itself */
    sharp_small_set_caching(backend == &builtin);
}
const char *sharp_heap_allocator(void) { return backend->name; }

void sharp_heap_log_allocator(void)
{
    char d[256] = "";
    if (backend->describe) backend->describe(d, sizeof d);
    sharp_debug(main, "heap allocator: %s%s%s", backend->name, *d ? " " : "", d);
}
void sharp_heap_stats(sharp_heap_stats_t *st) { backend->stats(st); }
uint64_t sharp_heap_in_use(void) { return backend->allocated(); }
uint64_t sharp_heap_pressure_bytes(void) { return backend->pressure_bytes(); }
uint64_t sharp_heap_free_bytes(void) { return backend->free_bytes(); }

void sharp_heap_release(void)
{
    seen_generation = atomic_fetch_add_explicit(&release_generation, 1, memory_order_relaxed) + 1;
    sharp_small_flush(); /* this thread's kept small blocks first (small.h) */
    backend->release();
}

void sharp_heap_thread_tick(void)
{
    uint32_t g = atomic_load_explicit(&release_generation, memory_order_relaxed);
    bool release = g != seen_generation;
    seen_generation = g;
    if (release) sharp_small_flush();
    else sharp_small_tick(); /* what the last second did not need */
    backend->thread_tick(release);
}

void sharp_heap_thread_exit(void)
{
    sharp_small_flush();
    backend->thread_exit();
}

/* Free heap memory goes back to the system without an overload action, as
 * tcmalloc's background release does for Envoy: glibc keeps what closed
 * connections freed in its arenas, so the resident size after a burst
 * (10,000 slow clients) would stay at the burst's peak. Once a second the
 * main loop checks: when at least 4 MiB more are free than after the last
 * release, and the free memory is at least half of what is in use (a burst
 * has ended, this is not steady churn), the free memory is released. */
static uint64_t free_after_release;

bool sharp_heap_release_idle(void)
{
    /* one reading: glibc's mallinfo2 walks every free chunk of every arena
     * under its lock, milliseconds with a fragmented heap */
    sharp_heap_stats_t st;
    backend->stats(&st);
    uint64_t free_bytes = st.pageheap_free, used = st.allocated;
    if (free_bytes < free_after_release) free_after_release = free_bytes; /* reused since */
    if (free_bytes < free_after_release + (4u << 20) || free_bytes < used / 2) return false;
    sharp_heap_release();
    free_after_release = sharp_heap_free_bytes();
    sharp_debug(main, "released free heap memory (%llu bytes were free, %llu in use)",
                (unsigned long long)free_bytes, (unsigned long long)used);
    return true;
}
