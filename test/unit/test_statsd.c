/* test_statsd.c: the statsd sinks' line format and datagram packing, and a
 * flush of a real store to a UDP socket on loopback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stats.h"
#include "statsd.h"

typedef struct {
    char sent[16][600];
    size_t n;
} sent_t;

static void collect(void *arg, const char *data, size_t len)
{
    sent_t *s = arg;
    assert_true(s->n < 16);
    memcpy(s->sent[s->n], data, len);
    s->sent[s->n++][len] = '\0';
}

static void test_format(void **state)
{
    (void)state;
    sharp_sbuf_t b = {0};
    sharp_statsd_format(&b, "envoy", "cluster.a.upstream_rq_total", 27, "3", "|c", NULL, 0);
    assert_string_equal(sharp_sbuf_cstr(&b), "envoy.cluster.a.upstream_rq_total:3|c");
    sharp_sbuf_reset(&b);
    const char *name = "cluster.upstream_rq_xx";
    sharp_stat_tag_t tags[2] = {{"envoy.response_code_class", "2xx", 1}, {"envoy.cluster_name", "a", 1}};
    sharp_statsd_format(&b, "p", name, strlen(name), "5", "|c", tags, 2);
    assert_string_equal(sharp_sbuf_cstr(&b),
                        "p.cluster.upstream_rq_xx:5|c|#envoy.response_code_class:2,envoy.cluster_name:a");
    sharp_sbuf_free(&b);
}

/* Envoy's rule: lines joined by '\n' up to max bytes; a line that cannot fit
 * an empty datagram goes alone; max 0 sends every line alone. */
static void test_packing(void **state)
{
    (void)state;
    sent_t s = {0};
    sharp_statsd_packer_t p = {.max = 10, .send = collect, .arg = &s};
    sharp_statsd_packer_add(&p, "aaaa", 4);
    sharp_statsd_packer_add(&p, "bbbb", 4); /* 4 + 1 + 4 = 9 <= 10 */
    sharp_statsd_packer_add(&p, "cc", 2);   /* 9 + 1 + 2 > 10: flush first */
    sharp_statsd_packer_add(&p, "0123456789", 10); /* >= max: alone, cc keeps waiting */
    sharp_statsd_packer_add(&p, "dddddd", 6);      /* 2 + 1 + 6 = 9 */
    sharp_statsd_packer_flush(&p);
    sharp_statsd_packer_flush(&p); /* nothing left: no empty datagram */
    assert_int_equal(s.n, 3);
    assert_string_equal(s.sent[0], "aaaa\nbbbb");
    assert_string_equal(s.sent[1], "0123456789");
    assert_string_equal(s.sent[2], "cc\ndddddd");
    sharp_sbuf_free(&p.buf);

    sent_t u = {0};
    sharp_statsd_packer_t q = {.max = 0, .send = collect, .arg = &u};
    sharp_statsd_packer_add(&q, "x:1|c", 5);
    sharp_statsd_packer_add(&q, "y:2|g", 5);
    sharp_statsd_packer_flush(&q);
    assert_int_equal(u.n, 2);
    assert_string_equal(u.sent[0], "x:1|c");
    assert_string_equal(u.sent[1], "y:2|g");
    sharp_sbuf_free(&q.buf);
}

static int recv_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len++] = '\n';
    }
    buf[len] = '\0';
    return (int)len;
}

/* Counters as deltas between flushes (used ones only), gauges, and the
 * interval's histogram values as timers with sample rates. */
static void test_flush_udp(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);

    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    sharp_stat_id_t c = sharp_stats_counter(st, "cluster.a.upstream_rq_total");
    sharp_stats_counter(st, "cluster.a.unused_total");
    sharp_stat_id_t g = sharp_stats_gauge(st, "cluster.a.membership_total");
    sharp_stat_id_t h = sharp_stats_histogram(st, "cluster.a.upstream_rq_time", SHARP_HIST_MILLISECONDS);
    sharp_counter_add(sh, c, 4);
    sharp_gauge_add(sh, g, 3);
    sharp_gauge_add(sh, sharp_stats_gauge(st, "server.neg"), -5);
    sharp_gauge_set(st, sharp_stats_gauge(st, "server.min"), INT64_MIN);
    sharp_counter_add(sh, sharp_stats_counter(st, "server.big"), UINT64_MAX);
    sharp_histogram_record(sh, h, 7);
    sharp_histogram_record(sh, h, 7);
    sharp_histogram_record(sh, h, 9);

    sharp_statsd_sink_t *k = sharp_statsd_sink_create((struct sockaddr *)&a, al, NULL, false, 0);
    sharp_stats_flush(st);
    sharp_statsd_sink_flush(k, st, NULL, NULL);
    usleep(20000);
    char buf[8192];
    recv_all(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_total:4|c\n"));
    assert_null(strstr(buf, "unused_total"));
    assert_non_null(strstr(buf, "envoy.cluster.a.membership_total:3|g\n"));
    assert_non_null(strstr(buf, "envoy.server.neg:-5|g\n"));
    assert_non_null(strstr(buf, "envoy.server.min:-9223372036854775808|g\n"));
    assert_non_null(strstr(buf, "envoy.server.big:18446744073709551615|c\n"));
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_time:7|ms|@0.5\n"));
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_time:9|ms\n"));

    /* the next flush: delta 2, and no timers for an empty interval */
    sharp_counter_add(sh, c, 2);
    sharp_stats_flush(st);
    sharp_statsd_sink_flush(k, st, NULL, NULL);
    usleep(20000);
    recv_all(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_total:2|c\n"));
    assert_null(strstr(buf, "upstream_rq_time"));

    /* idle again, then recorded again: the counter's delta is 0 while it
     * stays used, and the timers are only the new interval's */
    sharp_stats_flush(st);
    sharp_statsd_sink_flush(k, st, NULL, NULL);
    usleep(20000);
    recv_all(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_total:0|c\n"));
    assert_null(strstr(buf, "upstream_rq_time"));
    sharp_histogram_record(sh, h, 40);
    sharp_counter_add(sh, c, 1);
    sharp_stats_flush(st);
    sharp_statsd_sink_flush(k, st, NULL, NULL);
    usleep(20000);
    recv_all(fd, buf, sizeof buf);
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_total:1|c\n"));
    assert_non_null(strstr(buf, "envoy.cluster.a.upstream_rq_time:40|ms\n"));
    assert_null(strstr(buf, "upstream_rq_time:7|"));
    assert_null(strstr(buf, "upstream_rq_time:9|"));

    /* DogStatsD: tag-extracted names and tags, packed datagrams */
    sharp_statsd_sink_t *d = sharp_statsd_sink_create((struct sockaddr *)&a, al, "dd", true, 512);
    sharp_statsd_sink_flush(d, st, NULL, NULL);
    usleep(20000);
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "dd.cluster.upstream_rq_total:7|c|#envoy.cluster_name:a\n"));
    assert_non_null(strstr(buf, "dd.cluster.membership_total:3|g|#envoy.cluster_name:a"));
    assert_int_equal(sharp_statsd_sink_datagrams(d), 1);

    sharp_statsd_sink_free(k);
    sharp_statsd_sink_free(d);
    sharp_stats_destroy(st);
    close(fd);
}

/* More lines than one sendmmsg batch: every line its own datagram, in the
 * order of the flush (counters by registration, then gauges), each exactly
 * as formatted one at a time. */
static void test_flush_many_lines_in_order(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    int rcv = 1 << 22;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    enum { N = 700 };
    sharp_stats_t *st = sharp_stats_create(2);
    sharp_stats_shard_t *sh = sharp_stats_shard(st, 1);
    char name[64];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "cluster.c%d.upstream_rq_total", i);
        sharp_counter_add(sh, sharp_stats_counter(st, name), (uint64_t)i);
        snprintf(name, sizeof name, "cluster.c%d.membership_total", i);
        sharp_gauge_set(st, sharp_stats_gauge(st, name), i - 3);
    }
    sharp_statsd_sink_t *k = sharp_statsd_sink_create((struct sockaddr *)&a, al, "p", false, 0);
    sharp_stats_flush(st);
    sharp_statsd_sink_flush(k, st, NULL, NULL);
    assert_int_equal(sharp_statsd_sink_datagrams(k), 2 * N);
    char buf[256], want[256];
    for (int i = 0; i < 2 * N; i++) {
        ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        assert_true(n > 0);
        buf[n] = '\0';
        if (i < N)
            snprintf(want, sizeof want, "p.cluster.c%d.upstream_rq_total:%d|c", i, i);
        else
            snprintf(want, sizeof want, "p.cluster.c%d.membership_total:%d|g", i - N, i - N - 3);
        assert_string_equal(buf, want);
    }
    assert_true(recv(fd, buf, sizeof buf, MSG_DONTWAIT) < 0);
    sharp_statsd_sink_free(k);
    sharp_stats_destroy(st);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_flush_udp),
        cmocka_unit_test(test_flush_many_lines_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
