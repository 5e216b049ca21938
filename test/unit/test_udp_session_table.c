/* test_udp_session_table: the UDP proxy's session table (udp/session_table.h):
 * sessions found by peer address and, with per-packet load balancing, host;
 * IPv4 and IPv6 keys, growth, removal, and no other family. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "udp/session_table.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

static struct sockaddr_in v4(const char *ip, unsigned port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, unsigned port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

static sharp_udp_entry_t *find(sharp_udp_table_t *t, const struct sockaddr *peer, const void *host)
{
    sharp_udp_key_t k;
    assert_int_equal(sharp_udp_key_make(&k, peer, host), 0);
    return sharp_udp_table_find(t, &k, sharp_udp_key_hash(t, &k));
}

static void add(sharp_udp_table_t *t, sharp_udp_entry_t *e, const struct sockaddr *peer, const void *host)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(sharp_udp_key_make(&e->key, peer, host), 0);
    e->hash = sharp_udp_key_hash(t, &e->key);
    sharp_udp_table_insert(t, e);
}

static void test_found_by_address_and_port(void **state)
{
    (void)state;
    sharp_udp_table_t t;
    sharp_udp_table_init(&t, 42);
    struct sockaddr_in a = v4("127.0.0.1", 4000), b = v4("127.0.0.1", 4001), c = v4("127.0.0.2", 4000);
    assert_null(find(&t, (struct sockaddr *)&a, NULL)); /* empty: no buckets yet */
    sharp_udp_entry_t ea, eb;
    add(&t, &ea, (struct sockaddr *)&a, NULL);
    add(&t, &eb, (struct sockaddr *)&b, NULL);
    assert_int_equal(t.count, 2);
    assert_ptr_equal(find(&t, (struct sockaddr *)&a, NULL), &ea);
    assert_ptr_equal(find(&t, (struct sockaddr *)&b, NULL), &eb);
    assert_null(find(&t, (struct sockaddr *)&c, NULL)); /* another IP, same port */
    /* bytes of the sockaddr beyond the address do not matter */
    struct sockaddr_in a2 = a;
    memset(a2.sin_zero, 0xff, sizeof a2.sin_zero);
    assert_ptr_equal(find(&t, (struct sockaddr *)&a2, NULL), &ea);
    sharp_udp_table_remove(&t, &ea);
    assert_int_equal(t.count, 1);
    assert_null(find(&t, (struct sockaddr *)&a, NULL));
    assert_ptr_equal(find(&t, (struct sockaddr *)&b, NULL), &eb);
    sharp_udp_table_free(&t);
}

static void test_ipv6_and_scope(void **state)
{
    (void)state;
    sharp_udp_table_t t;
    sharp_udp_table_init(&t, 7);
    struct sockaddr_in6 a = v6("::1", 5000), b = v6("fe80::1", 5000), b2 = b;
    b2.sin6_scope_id = 2;
    struct sockaddr_in m = v4("0.0.0.1", 5000); /* not ::1 */
    sharp_udp_entry_t ea, eb;
    add(&t, &ea, (struct sockaddr *)&a, NULL);
    add(&t, &eb, (struct sockaddr *)&b, NULL);
    assert_ptr_equal(find(&t, (struct sockaddr *)&a, NULL), &ea);
    assert_ptr_equal(find(&t, (struct sockaddr *)&b, NULL), &eb);
    assert_null(find(&t, (struct sockaddr *)&b2, NULL)); /* another interface */
    assert_null(find(&t, (struct sockaddr *)&m, NULL));
    sharp_udp_table_free(&t);
}

static void test_per_host_sessions(void **state)
{
    (void)state;
    sharp_udp_table_t t;
    sharp_udp_table_init(&t, 1);
    int h1, h2;
    struct sockaddr_in a = v4("10.0.0.1", 53);
    sharp_udp_entry_t e1, e2;
    add(&t, &e1, (struct sockaddr *)&a, &h1);
    add(&t, &e2, (struct sockaddr *)&a, &h2);
    assert_ptr_equal(find(&t, (struct sockaddr *)&a, &h1), &e1);
    assert_ptr_equal(find(&t, (struct sockaddr *)&a, &h2), &e2);
    assert_null(find(&t, (struct sockaddr *)&a, NULL)); /* the sticky key is another */
    sharp_udp_table_free(&t);
}

/* Thousands of sessions: the table grows, every one stays found, removal
 * in any order leaves the others. */
static void test_growth_and_removal(void **state)
{
    (void)state;
    enum { N = 5000 };
    static sharp_udp_entry_t e[N];
    sharp_udp_table_t t;
    sharp_udp_table_init(&t, 0x1234);
    for (unsigned i = 0; i < N; i++) {
        struct sockaddr_in a = v4(i % 2 ? "127.0.0.1" : "127.0.0.2", 1024 + i);
        add(&t, &e[i], (struct sockaddr *)&a, NULL);
    }
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets >= N);
    for (unsigned i = 0; i < N; i++) {
        struct sockaddr_in a = v4(i % 2 ? "127.0.0.1" : "127.0.0.2", 1024 + i);
        assert_ptr_equal(find(&t, (struct sockaddr *)&a, NULL), &e[i]);
    }
    for (unsigned i = 0; i < N; i += 3) sharp_udp_table_remove(&t, &e[i]);
    for (unsigned i = 0; i < N; i++) {
        struct sockaddr_in a = v4(i % 2 ? "127.0.0.1" : "127.0.0.2", 1024 + i);
        if (i % 3 == 0)
            assert_null(find(&t, (struct sockaddr *)&a, NULL));
        else
            assert_ptr_equal(find(&t, (struct sockaddr *)&a, NULL), &e[i]);
    }
    assert_int_equal(t.count, N - (N + 2) / 3);
    sharp_udp_table_free(&t);
}

static void test_other_families_refused(void **state)
{
    (void)state;
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    sharp_udp_key_t k;
    assert_int_equal(sharp_udp_key_make(&k, (struct sockaddr *)&u, NULL), -1);
}

/* The seed changes the hash: a peer cannot choose ports that collide in
 * every process. */
static void test_seeded_hash(void **state)
{
    (void)state;
    sharp_udp_table_t t1, t2;
    sharp_udp_table_init(&t1, 1);
    sharp_udp_table_init(&t2, 2);
    struct sockaddr_in a = v4("127.0.0.1", 9);
    sharp_udp_key_t k;
    sharp_udp_key_make(&k, (struct sockaddr *)&a, NULL);
    assert_int_not_equal(sharp_udp_key_hash(&t1, &k), sharp_udp_key_hash(&t2, &k));
    assert_int_equal(sharp_udp_key_hash(&t1, &k), sharp_udp_key_hash(&t1, &k));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_found_by_address_and_port),
        cmocka_unit_test(test_ipv6_and_scope),
        cmocka_unit_test(test_per_host_sessions),
        cmocka_unit_test(test_growth_and_removal),
        cmocka_unit_test(test_other_families_refused),
        cmocka_unit_test(test_seeded_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
