/* test_host_index: hosts by address (upstream/host_index.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/host_index.h"

#include <arpa/inet.h>
#include <stdlib.h>

static sharp_host_t *host4(const char *ip, uint16_t port)
{
    sharp_host_t *h = calloc(1, sizeof *h);
    struct sockaddr_in *a = (struct sockaddr_in *)&h->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->sin_addr);
    return h;
}

static sharp_host_t *host6(const char *ip, uint16_t port)
{
    sharp_host_t *h = calloc(1, sizeof *h);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&h->addr;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a->sin6_addr);
    return h;
}

static sharp_host_t *host_unix(const char *path)
{
    sharp_host_t *h = calloc(1, sizeof *h);
    struct sockaddr_un *a = (struct sockaddr_un *)&h->addr;
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
    return h;
}

/* every family; the port and the address both count; the first host of an
 * address stays the one found */
static void test_find_by_address(void **state)
{
    (void)state;
    sharp_host_index_t ix = {0};
    sharp_host_t *a = host4("127.0.0.1", 80), *b = host4("127.0.0.1", 81), *c = host4("127.0.0.2", 80);
    sharp_host_t *d = host6("::1", 80), *e = host_unix("/tmp/x.sock"), *a2 = host4("127.0.0.1", 80);
    assert_null(sharp_host_index_find(&ix, &a->addr));
    sharp_host_t *all[] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++) sharp_host_index_add(&ix, all[i]);
    for (size_t i = 0; i < 5; i++) assert_ptr_equal(sharp_host_index_find(&ix, &all[i]->addr), all[i]);
    sharp_host_index_add(&ix, a2);
    assert_ptr_equal(sharp_host_index_find(&ix, &a2->addr), a);
    assert_int_equal(ix.n, 5);
    sharp_host_t *f = host6("::1", 81), *g = host_unix("/tmp/y.sock");
    assert_null(sharp_host_index_find(&ix, &f->addr));
    assert_null(sharp_host_index_find(&ix, &g->addr));
    sharp_host_index_free(&ix);
    sharp_host_t *mine[] = {a, b, c, d, e, a2, f, g};
    for (size_t i = 0; i < 8; i++) free(mine[i]);
}

/* growth keeps every entry findable */
static void test_many(void **state)
{
    (void)state;
    enum { N = 20000 };
    sharp_host_t **h = calloc(N, sizeof *h);
    sharp_host_index_t ix = {0};
    for (int i = 0; i < N; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        h[i] = host4(ip, (uint16_t)(8000 + i % 7));
        sharp_host_index_add(&ix, h[i]);
    }
    assert_int_equal(ix.n, N);
    assert_true(ix.cap >= 2 * N);
    for (int i = 0; i < N; i++) assert_ptr_equal(sharp_host_index_find(&ix, &h[i]->addr), h[i]);
    sharp_host_index_free(&ix);
    for (int i = 0; i < N; i++) free(h[i]);
    free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_by_address),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
