/* test_heap.c: the heap figures and release of libsharp's own allocator
 * (glibc's, or the sanitizer's in a sanitizer build): what the overload
 * manager, server.memory_* and /memory read. mimalloc's backend is the
 * executable's and is covered by the integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

#define NBLOCKS 4096
#define BLOCK 4096 /* 16 MiB in small blocks: below mmap's threshold */

#ifndef SANITIZED
static uint64_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}
#endif

static void allocator_name(void **state)
{
    (void)state;
#ifdef SANITIZED
    assert_string_equal(sharp_heap_allocator(), "sanitizer");
#else
    assert_string_equal(sharp_heap_allocator(), "glibc");
#endif
}

static void figures_follow_allocations(void **state)
{
    (void)state;
    static char *blocks[NBLOCKS];
    uint64_t before = sharp_heap_in_use();
    for (int i = 0; i < NBLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        assert_non_null(blocks[i]);
        memset(blocks[i], i, BLOCK);
    }
    uint64_t held = sharp_heap_in_use();
    assert_true(held >= before + (uint64_t)NBLOCKS * BLOCK);
    /* the fixed_heap monitor measures the bytes in use with these allocators */
    assert_true(sharp_heap_pressure_bytes() == sharp_heap_in_use());
    sharp_heap_stats_t st;
    sharp_heap_stats(&st);
    assert_true(st.allocated >= (uint64_t)NBLOCKS * BLOCK);
    assert_true(st.allocated <= st.heap_size);
    assert_true(st.total_physical == st.heap_size - st.pageheap_unmapped);
    assert_true(st.total_thread_cache == 0);

    /* 15 blocks of every 16 freed: most of the memory free, in runs of
     * whole pages, none of it at the top of the heap, where glibc's free
     * would trim it by itself */
    for (int i = 0; i < NBLOCKS; i++) {
        if (i % 16 == 15) continue;
        free(blocks[i]);
        blocks[i] = NULL;
    }
    uint64_t freed = (uint64_t)NBLOCKS / 16 * 15 * BLOCK;
    assert_true(sharp_heap_in_use() + freed <= held);
#ifndef SANITIZED /* ASan's quarantine holds freed blocks: not yet free */
    assert_true(sharp_heap_free_bytes() >= freed);
    /* a burst ended: the idle release gives the free pages back, once */
    uint64_t rss_held = rss_bytes();
    assert_true(sharp_heap_release_idle());
    assert_true(rss_bytes() + freed / 2 <= rss_held);
    assert_false(sharp_heap_release_idle());
#else
    sharp_heap_release(); /* the sanitizer's purge, process-wide */
#endif
    for (int i = 15; i < NBLOCKS; i += 16) free(blocks[i]);
    assert_true(sharp_heap_in_use() + (uint64_t)NBLOCKS * BLOCK <= held);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(allocator_name),
        cmocka_unit_test(figures_follow_allocations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
