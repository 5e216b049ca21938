/* test_hostset: host sets (upstream/cluster.h) as the main thread makes
 * them for the workers: each host's position in the set before (prev), the
 * balancer's shape, a host's index kept as its position, and the sets a
 * worker lets go of freed by the main thread (sharp_hostset_release and
 * sharp_hostset_reap), not where they were released. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/cluster.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define NH 6

static sharp_host_t *host(uint16_t port)
{
    sharp_host_t *h = calloc(1, sizeof *h);
    struct sockaddr_in *a = (struct sockaddr_in *)&h->addr;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    a->sin_addr.s_addr = htonl(0x7f000001);
    h->addrlen = sizeof *a;
    h->weight = 1;
    snprintf(h->address, sizeof h->address, "127.0.0.1:%u", port);
    return h;
}

/* An EDS-like cluster whose first set is hosts[0..n) */
static sharp_cluster_t *cluster(sharp_host_t **hosts, uint32_t n)
{
    sharp_cluster_t *c = calloc(1, sizeof *c);
    c->name = strdup("c");
    c->stat_name = strdup("c");
    c->type = SHARP_CLUSTER_EDS;
    c->hosts = calloc(n ? n : 1, sizeof *c->hosts);
    memcpy(c->hosts, hosts, n * sizeof *hosts);
    c->nhosts = n;
    sharp_cluster_init_hostset(c);
    return c;
}

static uint32_t nsets(const sharp_host_t *h)
{
    return atomic_load(&h->nsets);
}

static void positions_in_the_set_before(void **state)
{
    (void)state;
    sharp_host_t *h[NH];
    for (int i = 0; i < NH; i++) h[i] = host((uint16_t)(10000 + i));
    sharp_cluster_t *c = cluster(h, 4);
    assert_null(c->set->prev); /* a first set */
    for (uint32_t i = 0; i < 4; i++) assert_int_equal(atomic_load(&h[i]->index), i);

    /* h2 and h0 stay (moved), h4 is new, h1 and h3 leave */
    sharp_host_t *v2[] = {h[2], h[4], h[0]};
    sharp_cluster_publish_hosts(c, v2, 3);
    assert_int_equal(c->set->generation, 2);
    int32_t want2[] = {2, -1, 0};
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(c->set->prev[i], want2[i]);
    for (uint32_t i = 0; i < 3; i++) assert_int_equal(atomic_load(&v2[i]->index), i);

    /* h1 comes back: its index is still its place in the first set,
     * which the set before does not list at that place */
    sharp_host_t *v3[] = {h[0], h[1], h[4], h[5]};
    sharp_cluster_publish_hosts(c, v3, 4);
    int32_t want3[] = {2, -1, 1, -1};
    for (uint32_t i = 0; i < 4; i++) assert_int_equal(c->set->prev[i], want3[i]);
    /* the balancer's shape comes with the set */
    assert_non_null(c->set->lb_shape);
    assert_int_equal(c->set->lb_shape->nhosts, 4);
    assert_int_equal(c->set->lb_shape->nlevels, 1);
    sharp_cluster_free(c);
}

static void released_sets_are_freed_by_the_reap(void **state)
{
    (void)state;
    sharp_host_t *h[NH];
    for (int i = 0; i < NH; i++) h[i] = host((uint16_t)(11000 + i));
    sharp_cluster_t *c = cluster(h, 2);
    sharp_hostset_t *first = sharp_hostset_ref(c->set); /* as a worker holds it */
    sharp_host_t *v2[] = {h[1], h[2]};
    sharp_hostset_defer_frees(true);
    sharp_cluster_publish_hosts(c, v2, 2);
    assert_int_equal(nsets(h[0]), 1); /* the worker's set still lists it */

    /* the worker lets go: nothing is freed on its side */
    sharp_hostset_release(first);
    assert_int_equal(nsets(h[0]), 1);
    assert_int_equal(nsets(h[1]), 2);
    /* the main thread's next publication frees it */
    sharp_host_t *v3[] = {h[2], h[3]};
    sharp_hostset_t *second = sharp_hostset_ref(c->set);
    sharp_cluster_publish_hosts(c, v3, 2);
    assert_int_equal(nsets(h[0]), 0);
    assert_int_equal(nsets(h[1]), 1);
    sharp_hostset_release(second);
    assert_int_equal(nsets(h[1]), 1);
    sharp_hostset_reap(); /* the housekeeping's */
    assert_int_equal(nsets(h[1]), 0);
    assert_int_equal(nsets(h[2]), 1);

    /* one left behind when the workers stop is freed by turning it off;
     * from then on a release frees at once */
    sharp_hostset_t *third = sharp_hostset_ref(c->set);
    sharp_host_t *v4[] = {h[4]};
    sharp_cluster_publish_hosts(c, v4, 1);
    sharp_hostset_release(third);
    assert_int_equal(nsets(h[3]), 1);
    sharp_hostset_defer_frees(false);
    assert_int_equal(nsets(h[3]), 0);
    sharp_hostset_t *fourth = sharp_hostset_ref(c->set);
    sharp_host_t *v5[] = {h[5]};
    sharp_cluster_publish_hosts(c, v5, 1);
    sharp_hostset_release(fourth);
    assert_int_equal(nsets(h[4]), 0);
    sharp_cluster_free(c); /* frees every host it had */
}

/* A cluster freed while a set a worker released waits for the reap: the
 * set goes first, its hosts after (ASan would see the other order). */
static void a_freed_cluster_reaps_first(void **state)
{
    (void)state;
    sharp_host_t *h[2] = {host(12000), host(12001)};
    sharp_cluster_t *c = cluster(h, 2);
    sharp_hostset_t *held = sharp_hostset_ref(c->set);
    sharp_hostset_defer_frees(true);
    sharp_host_t *v2[] = {h[1]};
    sharp_cluster_publish_hosts(c, v2, 1);
    sharp_hostset_release(held);
    assert_int_equal(nsets(h[0]), 1);
    sharp_cluster_free(c);
    sharp_hostset_defer_frees(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(positions_in_the_set_before),
        cmocka_unit_test(released_sets_are_freed_by_the_reap),
        cmocka_unit_test(a_freed_cluster_reaps_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
