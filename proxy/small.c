/* small.c: small blocks from per-thread free lists (see small.h). */
#include "small.h"

#include "common.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#else

/* Classes of 64 bytes to 4 KiB; a list holds at most 256 blocks of up to
 * 1 KiB, 64 of the larger ones. */
#define NCLASS 7
#define MIN_SHIFT 6
#define LARGE NCLASS
#define LIST_MAX(c) ((c) <= 4 ? 256u : 64u)

/* Before every block: its class and usable size; 16 bytes, so the block
 * keeps malloc's alignment. */
typedef union hdr {
    struct {
        uint32_t cls;
        size_t size;
    } h;
    max_align_t align;
} hdr_t;

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
static atomic_bool caching = true;

static size_t class_size(uint32_t c)
{
    return (size_t)1 << (MIN_SHIFT + c);
}

static uint32_t class_of(size_t size)
{
    uint32_t c = 0;
    while (c < NCLASS && size > class_size(c)) c++;
    return c;
}

void *sharp_small_alloc(size_t size)
{
    uint32_t c = class_of(size);
    hdr_t *h;
    if (c < NCLASS && lists[c]) {
        blk_t *b = lists[c];
        lists[c] = b->next;
        counts[c]--;
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
    if (c >= NCLASS || counts[c] >= LIST_MAX(c) || !atomic_load_explicit(&caching, memory_order_relaxed)) {
        free(h);
        return;
    }
    blk_t *b = (blk_t *)h;
    b->next = lists[c];
    lists[c] = b;
    counts[c]++;
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

static void *mem_malloc(size_t size, void *ud)
{
    (void)ud;
    return sharp_small_alloc(size);
}

static void mem_free(void *p, void *ud)
{
    (void)ud;
    sharp_small_free(p);
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    (void)ud;
    return sharp_small_calloc(n, size);
}

static void *mem_realloc(void *p, size_t size, void *ud)
{
    (void)ud;
    if (!size) { /* realloc(p, 0) frees */
        sharp_small_free(p);
        return NULL;
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
        b += counts[c] * (sizeof(hdr_t) + class_size(c));
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
        counts[c] = 0;
    }
}

#endif
