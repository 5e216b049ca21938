/* test_small: small blocks from per-thread free lists (small.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "small.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

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
 * the lists are bounded, and a flush empties them. */
static void test_reuse_and_bounds(void **state)
{
    (void)state;
    sharp_small_flush();
    void *a = sharp_small_alloc(100);
    sharp_small_free(a);
    void *b = sharp_small_alloc(120); /* the same 128-byte class */
    if (sharp_small_caching()) assert_ptr_equal(a, b);
    sharp_small_free(b);
    enum { N = 1000 };
    void *v[N];
    for (int i = 0; i < N; i++) v[i] = sharp_small_alloc(4000);
    for (int i = 0; i < N; i++) sharp_small_free(v[i]);
    for (int i = 0; i < N; i++) v[i] = sharp_small_alloc(60);
    for (int i = 0; i < N; i++) sharp_small_free(v[i]);
    size_t bytes;
    size_t n = sharp_small_cached(&bytes);
    if (sharp_small_caching()) {
        /* 64 blocks of 4 KiB, 256 of 64 bytes and the one of 128 */
        assert_int_equal(n, 64 + 256 + 1);
        assert_true(bytes < (1u << 20));
    } else {
        assert_int_equal(n, 0);
    }
    sharp_small_flush();
    assert_int_equal(sharp_small_cached(&bytes), 0);
    assert_int_equal(bytes, 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_contents),
        cmocka_unit_test(test_reuse_and_bounds),
        cmocka_unit_test(test_caching_off),
        cmocka_unit_test(test_other_thread),
        cmocka_unit_test(test_nghttp2_mem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
