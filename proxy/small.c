/* small.c: small blocks from per-thread free lists (see small.h). */
#include "small.h"

#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define SHARP_SMALL_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SHARP_SMALL_PLAIN 1
#endif
#endif

#ifdef SHARP_SMALL_PLAIN

void *sharp_small_alloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) abort();
    return p;
}

void *sharp_small_calloc(size_t n, size_t size)
{
    return sharp_calloc(n, size);
}

void *sharp_small_realloc(void *p, size_t size)
{
    return sharp_realloc(p, size);
}

void sharp_small_free(void *p)
{
    free(p);
}

nghttp2_mem *sharp_small_nghttp2_mem(void)
{
    return NULL;
}

void sharp_small_set_caching(bool on)
{
    (void)on;
}

bool sharp_small_caching(void)
{
    return false;
}

size_t sharp_small_cached(size_t *bytes)
{
    if (bytes) *bytes = 0;
    return 0;
}

void sharp_small_flush(void)
{
}

void sharp_small_tick(void)
{
}

#else

/* Classes of 64 bytes to 8 KiB in steps of half a power of two (64, 96,
 * 128, 192, ... 6144, 8192): a block wastes at most a third of itself. A
 * thread keeps at most KEEP_MAX bytes of freed blocks, whatever their
 * class, so that a worker with a thousand streams in flight finds their
 * blocks again after a burst; what a whole tick did not take from a list
 * (its low-water mark) goes back to the allocator at the next one
 * (sharp_small_tick), so an idle thread keeps nothing for long. */
#define NCLASS 15
#define LARGE NCLASS
#define KEEP_MAX ((size_t)16 << 20)

/* Before every block: its class and usable size; 16 bytes, so the block
 * keeps malloc's alignment. */
typedef struct hdr {
    struct {
        uint32_t cls;
        size_t size;
    } h;
} __attribute__((aligned(16))) hdr_t;
_Static_assert(sizeof(hdr_t) == 16, "a block's header keeps malloc's alignment in 16 bytes");

/* A kept block: the link is written over its header's class, which
 * sharp_small_alloc writes again. */
typedef struct blk {
    struct blk *next;
} blk_t;

/* initial-exec: libsharp is linked into executables only, and the
 * default model for position-independent code calls __tls_get_addr on
 * every access */
#define SHARP_TLS __thread __attribute__((tls_model("initial-exec")))
static SHARP_TLS blk_t *lists[NCLASS];
static SHARP_TLS uint32_t counts[NCLASS];
/* the fewest blocks each list held since the last tick */
static SHARP_TLS uint32_t lows[NCLASS];
static SHARP_TLS size_t kept_bytes;
static atomic_bool caching = true;

/* 64, then 96 and 128, 192 and 256, ...: an odd class is 3 << k, an even
 * one 1 << k */
static size_t class_size(uint32_t c)
{
    if (c == 0) return 64;
    return c & 1 ? (size_t)3 << (5 + (c - 1) / 2) : (size_t)1 << (6 + c / 2);
}

static uint32_t class_of(size_t size)
{
    if (size <= 64) return 0;
    if (size > class_size(NCLASS - 1)) return LARGE;
    /* size is in (2^(b-1), 2^b]: the class 3 << (b-2) or 1 << b */
    uint32_t b = 64 - (uint32_t)__builtin_clzll((unsigned long long)size - 1);
    uint32_t c = 2 * (b - 7) + 1;
    return size <= class_size(c) ? c : c + 1;
}

static size_t block_bytes(uint32_t c)
{
    return sizeof(hdr_t) + class_size(c);
}

void *sharp_small_alloc(size_t size)
{
    uint32_t c = class_of(size);
    hdr_t *h;
    if (c < NCLASS && lists[c]) {
        blk_t *b = lists[c];
        lists[c] = b->next;
        if (--counts[c] < lows[c]) lows[c] = counts[c];
        kept_bytes -= block_bytes(c);
        h = (hdr_t *)b;
    } else {
        size_t usable = c < NCLASS ? class_size(c) : size;
        if (usable > SIZE_MAX - sizeof(hdr_t)) abort();
        h = malloc(sizeof(hdr_t) + usable);
        if (!h) {
            fputs("sharp: out of memory\n", stderr);
            abort();
        }
        h->h.size = usable;
    }
    h->h.cls = c;
    return h + 1;
}

void sharp_small_free(void *p)
{
    if (!p) return;
    hdr_t *h = (hdr_t *)p - 1;
    uint32_t c = h->h.cls;
    if (c >= NCLASS || kept_bytes + block_bytes(c) > KEEP_MAX ||
        !atomic_load_explicit(&caching, memory_order_relaxed)) {
        free(h);
        return;
    }
    blk_t *b = (blk_t *)h;
    b->next = lists[c];
    lists[c] = b;
    counts[c]++;
    kept_bytes += block_bytes(c);
}

void *sharp_small_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) abort();
    void *p = sharp_small_alloc(n * size);
    memset(p, 0, n * size);
    return p;
}

void *sharp_small_realloc(void *p, size_t size)
{
    if (!p) return sharp_small_alloc(size);
    hdr_t *h = (hdr_t *)p - 1;
    size_t usable = h->h.size;
    /* a block keeps its class while the size still fits it and is not
     * below half of it */
    if (size <= usable && (h->h.cls == LARGE || size > usable / 2)) return p;
    void *q = sharp_small_alloc(size);
    memcpy(q, p, size < usable ? size : usable);
    sharp_small_free(p);
    return q;
}

/* Zero pages for nghttp2's page-sized callocs. nghttp2 (1.52) makes every
 * session's stream map at once, a table of 4 KiB zeroed by calloc, which
 * it writes only when a stream opens: on an idle connection it was a
 * quarter of what the connection kept resident. Such a table takes a page
 * of a region reserved once (the kernel gives each page zeroed, and
 * resident only once written); a page freed goes back to the kernel
 * (MADV_DONTNEED, zeroed again at its next touch) and onto the freeing
 * thread's list. When the region is used up, or cannot be mapped, tables
 * come from the lists above as before. */
#define ZPAGE 4096
#define ZREGION ((size_t)256 << 20) /* 65536 tables: address space only */

/* The region's start; until it is mapped, the last 256 MiB of the address
 * space (the kernel's, no block of ours), so that telling a page from a
 * block is one comparison at every free. */
static atomic_uintptr_t zbase = UINTPTR_MAX - ZREGION + 1;
static atomic_size_t zused; /* pages handed out of the region */
/* pages freed on this thread (a stack kept outside them, so that they
 * stay untouched) */
static SHARP_TLS void **zfree;
static SHARP_TLS size_t zfree_n, zfree_cap;
static bool zmapped;

static void zinit(void)
{
    void *r = mmap(NULL, ZREGION, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED) return;
    if (sysconf(_SC_PAGESIZE) != ZPAGE) {
        munmap(r, ZREGION);
        return;
    }
    atomic_store_explicit(&zbase, (uintptr_t)r, memory_order_relaxed);
    zmapped = true;
}

static bool is_zpage(const void *p)
{
    return (uintptr_t)p - atomic_load_explicit(&zbase, memory_order_relaxed) < ZREGION;
}

static void *zpage_alloc(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, zinit);
    if (!zmapped) return NULL;
    if (zfree_n) return zfree[--zfree_n];
    size_t i = atomic_fetch_add_explicit(&zused, 1, memory_order_relaxed);
    if (i >= ZREGION / ZPAGE) return NULL;
    return (char *)atomic_load_explicit(&zbase, memory_order_relaxed) + i * ZPAGE;
}

static void zpage_free(void *p)
{
    madvise(p, ZPAGE, MADV_DONTNEED);
    if (zfree_n == zfree_cap) {
        zfree_cap = zfree_cap ? zfree_cap * 2 : 64;
        zfree = sharp_realloc(zfree, zfree_cap * sizeof *zfree);
    }
    zfree[zfree_n++] = p;
}

static void *mem_malloc(size_t size, void *ud)
{
    (void)ud;
    return sharp_small_alloc(size);
}

static void mem_free(void *p, void *ud)
{
    (void)ud;
    if (is_zpage(p))
        zpage_free(p);
    else
        sharp_small_free(p);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    if (n * size == ZPAGE && size && n == ZPAGE / size) {
        void *p = zpage_alloc();
        if (p) return p;
    }
    return sharp_small_calloc(n, size);
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    (void)ud;
    if (!size) { /* realloc(p, 0) frees */
        mem_free(p, ud);
        return NULL;
    }
    if (is_zpage(p)) {
        void *q = sharp_small_alloc(size);
        memcpy(q, p, size < ZPAGE ? size : ZPAGE);
        zpage_free(p);
        return q;
    }
    return sharp_small_realloc(p, size);
}

nghttp2_mem *sharp_small_nghttp2_mem(void)
{
    static nghttp2_mem mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};
    return &mem;
}

void sharp_small_set_caching(bool on)
{
    atomic_store(&caching, on);
}

bool sharp_small_caching(void)
{
    return atomic_load(&caching);
}

size_t sharp_small_cached(size_t *bytes)
{
    size_t n = 0, b = 0;
    for (uint32_t c = 0; c < NCLASS; c++) {
        n += counts[c];
        b += counts[c] * block_bytes(c);
    }
    if (bytes) *bytes = b;
    return n;
}

void sharp_small_flush(void)
{
    for (uint32_t c = 0; c < NCLASS; c++) {
        while (lists[c]) {
            blk_t *b = lists[c];
            lists[c] = b->next;
            free(b);
        }
        counts[c] = lows[c] = 0;
    }
    kept_bytes = 0;
}

void sharp_small_tick(void)
{
    for (uint32_t c = 0; c < NCLASS; c++) {
        for (uint32_t n = lows[c]; n && lists[c]; n--) {
            blk_t *b = lists[c];
            lists[c] = b->next;
            counts[c]--;
            kept_bytes -= block_bytes(c);
            free(b);
        }
        lows[c] = counts[c];
    }
}

#endif
