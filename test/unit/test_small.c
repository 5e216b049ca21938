/* test_small: small blocks from per-thread free lists (small.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "small.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/* Blocks of every class and beyond: writable to their size, aligned,
 * zeroed by calloc, their contents kept by realloc across classes. */
static void test_sizes_and_contents(void **state)
{
    (void)state;
    static const size_t sizes[] = {0, 1, 63, 64, 65, 200, 512, 1000, 1024, 1025, 2584, 4096, 4097, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = sharp_small_alloc(n);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, n);
        unsigned char *z = sharp_small_calloc(1, n);
        for (size_t k = 0; k < n; k++) assert_int_equal(z[k], 0);
        sharp_small_free(z);
        /* grow across classes and into a large block, then shrink */
        unsigned char *q = sharp_small_realloc(p, n + 3000);
        for (size_t k = 0; k < n; k++) assert_int_equal(q[k], 0xab);
        memset(q, 0xcd, n + 3000);
        unsigned char *r = sharp_small_realloc(q, n / 2 + 1);
        for (size_t k = 0; k < n / 2 + 1; k++) assert_int_equal(r[k], 0xcd);
        sharp_small_free(r);
    }
    sharp_small_free(NULL);
    sharp_small_flush();
}

/* A freed block comes back for the next one of its class (when caching);
 * the classes step by half a power of two; a flush empties the lists. */
static void test_reuse_and_classes(void **state)
{
    (void)state;
    sharp_small_flush();
    void *a = sharp_small_alloc(100);
    sharp_small_free(a);
    void *b = sharp_small_alloc(120); /* the same 128-byte class */
    if (sharp_small_caching()) assert_ptr_equal(a, b);
    sharp_small_free(b);
    void *c = sharp_small_alloc(90); /* the 96-byte class: not that block */
    if (sharp_small_caching()) assert_ptr_not_equal(c, b);
    sharp_small_free(c);
    void *d = sharp_small_alloc(4128); /* a stream: the 6 KiB class */
    sharp_small_free(d);
    void *e = sharp_small_alloc(6000);
    if (sharp_small_caching()) assert_ptr_equal(d, e);
    sharp_small_free(e);
    size_t bytes;
    size_t n = sharp_small_cached(&bytes);
    if (sharp_small_caching()) {
        assert_int_equal(n, 3);
        assert_int_equal(bytes, (16 + 128) + (16 + 96) + (16 + 6144));
    } else {
        assert_int_equal(n, 0);
    }
    sharp_small_flush();
    assert_int_equal(sharp_small_cached(&bytes), 0);
    assert_int_equal(bytes, 0);
}

/* What a burst freed is kept (a thousand streams find their blocks again)
 * up to 16 MiB a thread; a tick gives back what the last one did not
 * take, so the lists of an idle thread are empty after two ticks. */
static void test_bounds_and_ticks(void **state)
{
    (void)state;
    if (!sharp_small_caching()) return;
    sharp_small_flush();
    enum { N = 1000, BIG = 3000 };
    static void *v[BIG];
    for (int i = 0; i < N; i++) v[i] = sharp_small_alloc(4000);
    for (int i = 0; i < N; i++) sharp_small_free(v[i]);
    assert_int_equal(sharp_small_cached(NULL), N);
    /* the burst again: every block from the lists */
    for (int i = 0; i < N; i++) v[i] = sharp_small_alloc(4000);
    assert_int_equal(sharp_small_cached(NULL), 0);
    for (int i = 0; i < N; i++) sharp_small_free(v[i]);
    /* the list went down to 0 in this tick: nothing is given back */
    sharp_small_tick();
    assert_int_equal(sharp_small_cached(NULL), N);
    /* half of them in use during the next tick: the other half go */
    for (int i = 0; i < N / 2; i++) v[i] = sharp_small_alloc(4000);
    for (int i = 0; i < N / 2; i++) sharp_small_free(v[i]);
    sharp_small_tick();
    assert_int_equal(sharp_small_cached(NULL), N / 2);
    /* idle: all go */
    sharp_small_tick();
    assert_int_equal(sharp_small_cached(NULL), 0);
    /* 3,000 blocks of 8 KiB (24 MiB): 16 MiB of them kept */
    for (int i = 0; i < BIG; i++) v[i] = sharp_small_alloc(8000);
    for (int i = 0; i < BIG; i++) sharp_small_free(v[i]);
    size_t bytes;
    size_t n = sharp_small_cached(&bytes);
    assert_true(bytes <= (size_t)16 << 20);
    assert_int_equal(n, ((size_t)16 << 20) / (16 + 8192));
    sharp_small_flush();
    assert_int_equal(sharp_small_cached(&bytes), 0);
}

/* Caching off: nothing is kept. */
static void test_caching_off(void **state)
{
    (void)state;
    bool was = sharp_small_caching();
    sharp_small_set_caching(false);
    sharp_small_free(sharp_small_alloc(100));
    assert_int_equal(sharp_small_cached(NULL), 0);
    sharp_small_set_caching(was);
}

/* A block freed on another thread joins that thread's lists. */
static void *free_there(void *p)
{
    sharp_small_free(p);
    size_t n = sharp_small_cached(NULL);
    sharp_small_flush();
    return (void *)(uintptr_t)n;
}

static void test_other_thread(void **state)
{
    (void)state;
    sharp_small_flush();
    void *p = sharp_small_alloc(300);
    pthread_t t;
    void *kept;
    assert_int_equal(pthread_create(&t, NULL, free_there, p), 0);
    pthread_join(t, &kept);
    assert_int_equal((uintptr_t)kept, sharp_small_caching() ? 1 : 0);
    assert_int_equal(sharp_small_cached(NULL), 0);
}

/* nghttp2's allocator: the lists' (NULL, nghttp2's own, in sanitizer
 * builds). */
static void test_nghttp2_mem(void **state)
{
    (void)state;
    nghttp2_mem *m = sharp_small_nghttp2_mem();
    if (!sharp_small_caching() && !m) return;
    assert_non_null(m);
    void *p = m->malloc(40, m->mem_user_data);
    p = m->realloc(p, 900, m->mem_user_data);
    assert_non_null(p);
    assert_null(m->realloc(p, 0, m->mem_user_data)); /* frees */
    m->free(m->calloc(3, 7, m->mem_user_data), m->mem_user_data);
    sharp_small_flush();
}

static bool resident(const void *p)
{
    unsigned char v = 0;
    assert_int_equal(mincore((void *)p, 4096, &v), 0);
    return v & 1;
}

/* nghttp2's page-sized callocs (a session's stream map) are zero pages,
 * resident only once written, and again after they are freed. */
static void test_nghttp2_zero_pages(void **state)
{
    (void)state;
    nghttp2_mem *m = sharp_small_nghttp2_mem();
    if (!m) return; /* sanitizer builds: nghttp2's own */
    unsigned char *p = m->calloc(256, 16, m->mem_user_data);
    assert_int_equal((uintptr_t)p % 4096, 0);
    assert_false(resident(p));
    for (size_t i = 0; i < 4096; i++) assert_int_equal(p[i], 0);
    memset(p, 0xab, 4096);
    assert_true(resident(p));
    m->free(p, m->mem_user_data);
    unsigned char *q = m->calloc(4096, 1, m->mem_user_data);
    assert_ptr_equal(q, p); /* the thread's freed page, zero again */
    assert_false(resident(q));
    for (size_t i = 0; i < 4096; i++) assert_int_equal(q[i], 0);
    memset(q, 0x5a, 100);
    unsigned char *r = m->realloc(q, 100, m->mem_user_data); /* leaves the page */
    assert_ptr_not_equal(r, q);
    for (size_t i = 0; i < 100; i++) assert_int_equal(r[i], 0x5a);
    m->free(r, m->mem_user_data);
    /* other sizes: the lists' blocks, as before */
    unsigned char *b = m->calloc(2, 4096, m->mem_user_data);
    for (size_t i = 0; i < 8192; i++) assert_int_equal(b[i], 0);
    m->free(b, m->mem_user_data);
    sharp_small_flush();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_contents),
        cmocka_unit_test(test_reuse_and_classes),
        cmocka_unit_test(test_bounds_and_ticks),
        cmocka_unit_test(test_caching_off),
        cmocka_unit_test(test_other_thread),
        cmocka_unit_test(test_nghttp2_mem),
        cmocka_unit_test(test_nghttp2_zero_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
