/* test_kernel_signals.c: the kernel TCP signals computed from recorded
 * counter sequences (rates, RTT means, ratios to the cluster's median,
 * restarts of a source, intervals without traffic), the TCP_INFO
 * fallback's sampling on a real loopback connection, and the probes'
 * table of SHARP's sockets (bpf/sharp_tcp.h: its sets and ways, the code
 * the eBPF programs run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kernel/signals.h"
#include "kernel/tcpinfo.h"

#define NEAR(a, b) assert_true(fabs((a) - (b)) < 1e-9)

/* Cumulative counters of three hosts over five intervals, as the probes'
 * map would hold them: 10.0.0.1 and 10.0.0.2 clean (~200 segments per
 * interval, RTT ~1 ms), 10.0.0.3 with 5% of its segments retransmitted and
 * an RTT that grows to 3 ms. */
static const sharp_tcp_counters_t recorded[3][6] = {
    {
        {0},
        {.segs_out = 200, .rtt_sum_us = 100000, .rttvar_sum_us = 20000, .rtt_samples = 100, .connects = 2,
         .connect_lat_sum_us = 400},
        {.segs_out = 410, .rtt_sum_us = 205000, .rttvar_sum_us = 40000, .rtt_samples = 200, .connects = 2,
         .connect_lat_sum_us = 400},
        {.segs_out = 600, .rtt_sum_us = 300000, .rttvar_sum_us = 60000, .rtt_samples = 300, .connects = 2,
         .connect_lat_sum_us = 400},
        {.segs_out = 800, .rtt_sum_us = 400000, .rttvar_sum_us = 80000, .rtt_samples = 400, .connects = 2,
         .connect_lat_sum_us = 400},
        {.segs_out = 1000, .rtt_sum_us = 500000, .rttvar_sum_us = 100000, .rtt_samples = 500, .connects = 2,
         .connect_lat_sum_us = 400},
    },
    {
        {0},
        {.segs_out = 190, .rtt_sum_us = 110000, .rtt_samples = 100, .connects = 2, .connect_lat_sum_us = 500},
        {.segs_out = 400, .rtt_sum_us = 220000, .rtt_samples = 200, .connects = 2, .connect_lat_sum_us = 500},
        {.segs_out = 600, .rtt_sum_us = 330000, .rtt_samples = 300, .connects = 2, .connect_lat_sum_us = 500},
        {.segs_out = 800, .retrans = 1, .rtt_sum_us = 440000, .rtt_samples = 400, .connects = 2,
         .connect_lat_sum_us = 500},
        {.segs_out = 1000, .retrans = 1, .rtt_sum_us = 550000, .rtt_samples = 500, .connects = 2,
         .connect_lat_sum_us = 500},
    },
    {
        {0},
        {.segs_out = 200, .retrans = 10, .rtt_sum_us = 150000, .rtt_samples = 100, .connects = 2,
         .connect_lat_sum_us = 3000, .rst_rx = 1},
        {.segs_out = 400, .retrans = 20, .rtt_sum_us = 400000, .rtt_samples = 200, .connects = 2,
         .connect_lat_sum_us = 3000, .rst_rx = 1},
        {.segs_out = 600, .retrans = 30, .rtt_sum_us = 700000, .rtt_samples = 300, .connects = 2,
         .connect_lat_sum_us = 3000, .rst_rx = 1},
        {.segs_out = 800, .retrans = 40, .syn_retrans = 1, .rtt_sum_us = 1000000, .rtt_samples = 400,
         .connects = 3, .connect_lat_sum_us = 1003000, .connect_fail = 1, .rst_rx = 1},
        {.segs_out = 1000, .retrans = 50, .syn_retrans = 1, .rtt_sum_us = 1300000, .rtt_samples = 500,
         .connects = 3, .connect_lat_sum_us = 1003000, .connect_fail = 1, .rst_rx = 1},
    },
};

static void test_recorded_sequence(void **state)
{
    (void)state;
    sharp_tcp_signals_t sig[3], *ptr[3] = {&sig[0], &sig[1], &sig[2]};
    double scratch[3];
    for (int h = 0; h < 3; h++) sharp_tcp_signals_init(&sig[h]);
    double median[6] = {0};
    for (int t = 1; t < 6; t++) {
        for (int h = 0; h < 3; h++) sharp_tcp_signals_update(&sig[h], &recorded[h][t - 1], &recorded[h][t]);
        median[t] = sharp_tcp_cluster_ratios(ptr, 3, scratch);
        /* every interval: the lossy host at 5%, the clean ones at most 0.5% */
        NEAR(sig[2].retrans_rate, 0.05);
        assert_true(sig[0].retrans_rate <= 0.005 && sig[1].retrans_rate <= 0.005);
        assert_true(sig[2].rtt_ratio > 1.3);
        assert_true(sig[0].rtt_ratio < 1.0 + 1e-9 && sig[1].rtt_ratio > 0.9);
    }
    /* interval 1: RTTs 1000, 1100, 1500: median 1100 */
    NEAR(median[1], 1100);
    /* interval 5: 1000, 1100, 3000 */
    NEAR(median[5], 1100);
    NEAR(sig[2].rtt_us, 3000);
    NEAR(sig[2].rtt_ratio, 3000.0 / 1100.0);
    NEAR(sig[0].rtt_ratio, 1000.0 / 1100.0);
    NEAR(sig[1].rtt_ratio, 1.0);
    NEAR(sig[0].rttvar_us, 200);
    /* interval 2 of host 0: 210 segments, none retransmitted */
    sharp_tcp_signals_t s0;
    sharp_tcp_signals_init(&s0);
    sharp_tcp_signals_update(&s0, &recorded[0][1], &recorded[0][2]);
    assert_int_equal(s0.segs_out, 210);
    NEAR(s0.retrans_rate, 0);
    /* host 1's one retransmission in interval 4: 1 / 200 */
    sharp_tcp_signals_t s1;
    sharp_tcp_signals_init(&s1);
    sharp_tcp_signals_update(&s1, &recorded[1][3], &recorded[1][4]);
    NEAR(s1.retrans_rate, 0.005);
    /* totals add up the intervals */
    assert_int_equal(sig[2].total.segs_out, 1000);
    assert_int_equal(sig[2].total.retrans, 50);
    assert_int_equal(sig[2].total.syn_retrans, 1);
    assert_int_equal(sig[2].total.connect_fail, 1);
    assert_int_equal(sig[2].total.rst_rx, 1);
    assert_int_equal(sig[2].total.connects, 3);
    assert_int_equal(sig[2].intervals, 5);
    /* the interval's differences: none in the last one but segments */
    assert_int_equal(sig[2].connect_fail, 0);
    assert_int_equal(sig[2].segs_out, 200);
    assert_int_equal(sig[2].retrans, 10);
    /* connect latency: interval 1 had 2 connects in 3000 us; interval 4 one
     * connect of 1 s; interval 5 none, so the last known stays */
    NEAR(sig[2].connect_latency_us, 1000000);
    NEAR(sig[0].connect_latency_us, 200);
}

static void test_idle_interval_keeps_rtt(void **state)
{
    (void)state;
    sharp_tcp_signals_t s;
    sharp_tcp_signals_init(&s);
    assert_true(s.retrans_rate < 0 && s.rtt_us < 0 && s.rtt_ratio < 0 && s.connect_latency_us < 0);
    sharp_tcp_counters_t a = {0}, b = {.segs_out = 10, .retrans = 1, .rtt_sum_us = 5000, .rtt_samples = 5};
    sharp_tcp_signals_update(&s, &a, &b);
    NEAR(s.retrans_rate, 0.1);
    NEAR(s.rtt_us, 1000);
    /* nothing happened: no rate, the RTT stays the last known */
    sharp_tcp_signals_update(&s, &b, &b);
    assert_true(s.retrans_rate < 0);
    NEAR(s.rtt_us, 1000);
    assert_int_equal(s.segs_out, 0);
    assert_int_equal(s.intervals, 2);
}

static void test_source_restart(void **state)
{
    (void)state;
    /* the map entry was removed and added again: its counters start over,
     * and what they hold now is the interval's */
    sharp_tcp_signals_t s;
    sharp_tcp_signals_init(&s);
    sharp_tcp_counters_t before = {.segs_out = 5000, .retrans = 40, .rtt_sum_us = 900000, .rtt_samples = 900},
                         after = {.segs_out = 100, .retrans = 3, .rtt_sum_us = 20000, .rtt_samples = 10};
    sharp_tcp_signals_update(&s, &before, &after);
    assert_int_equal(s.segs_out, 100);
    assert_int_equal(s.retrans, 3);
    NEAR(s.retrans_rate, 0.03);
    NEAR(s.rtt_us, 2000);
}

static void test_rate_clamped(void **state)
{
    (void)state;
    /* counters read a moment apart: more retransmissions than segments
     * cannot make a rate above 1 */
    sharp_tcp_signals_t s;
    sharp_tcp_signals_init(&s);
    sharp_tcp_counters_t a = {0}, b = {.segs_out = 2, .retrans = 3};
    sharp_tcp_signals_update(&s, &a, &b);
    NEAR(s.retrans_rate, 1);
}

static void test_median(void **state)
{
    (void)state;
    double v1[] = {5};
    NEAR(sharp_tcp_median(v1, 1), 5);
    double v3[] = {9, 1, 4};
    NEAR(sharp_tcp_median(v3, 3), 4);
    double v4[] = {10, 2, 8, 4};
    NEAR(sharp_tcp_median(v4, 4), 6);
    assert_true(sharp_tcp_median(NULL, 0) < 0);
}

static void test_ratios_skip_unknown(void **state)
{
    (void)state;
    /* a host without any RTT sample gets no ratio and does not count in
     * the median; a cluster where nobody has one has no median */
    sharp_tcp_signals_t s[3], *p[3] = {&s[0], &s[1], &s[2]};
    double scratch[3];
    for (int i = 0; i < 3; i++) sharp_tcp_signals_init(&s[i]);
    assert_true(sharp_tcp_cluster_ratios(p, 3, scratch) < 0);
    assert_true(s[0].rtt_ratio < 0);
    s[0].rtt_us = 100;
    s[1].rtt_us = 300;
    NEAR(sharp_tcp_cluster_ratios(p, 3, scratch), 200);
    NEAR(s[0].rtt_ratio, 0.5);
    NEAR(s[1].rtt_ratio, 1.5);
    assert_true(s[2].rtt_ratio < 0);
    /* retransmission rates: the hosts that sent something */
    assert_true(sharp_tcp_median_retrans_rate(p, 3, scratch) < 0);
    s[0].retrans_rate = 0;
    s[1].retrans_rate = 0.04;
    s[2].retrans_rate = 0.01;
    NEAR(sharp_tcp_median_retrans_rate(p, 3, scratch), 0.01);
}

/* A connected loopback pair: *cli and *srv. */
static void tcp_pair(int *cli, int *srv)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    *cli = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*cli, (struct sockaddr *)&a, sizeof a), 0);
    *srv = accept(l, NULL, NULL);
    assert_true(*srv >= 0);
    close(l);
}

static void test_tcpinfo_sampling(void **state)
{
    (void)state;
    int cli, srv;
    tcp_pair(&cli, &srv);
    sharp_host_kernel_t k;
    memset(&k, 0, sizeof k);
    sharp_tcpinfo_cursor_t c = {0};
    atomic_store(&sharp_tcpinfo_enabled, true);
    atomic_store(&sharp_tcpinfo_interval_ms, 1000);
    sharp_tcpinfo_connected(&k, &c, 150, 5000);
    assert_int_equal(atomic_load(&k.connects), 1);
    assert_int_equal(atomic_load(&k.connect_lat_sum_us), 150);
    char buf[64] = "GET / HTTP/1.1\r\n\r\n", rd[64];
    for (int i = 0; i < 5; i++) {
        assert_int_equal(write(cli, buf, 18), 18);
        assert_int_equal(read(srv, rd, sizeof rd), 18);
        assert_int_equal(write(srv, rd, 18), 18);
        assert_int_equal(read(cli, buf, sizeof buf), 18);
    }
    /* the first stream's end samples at once */
    sharp_tcpinfo_maybe_sample(&k, cli, &c, 5000);
    assert_int_equal(atomic_load(&k.rtt_samples), 1);
    assert_int_equal(c.next_ms, 6000);
    /* not due yet: nothing sampled */
    sharp_tcpinfo_maybe_sample(&k, cli, &c, 5999);
    assert_int_equal(atomic_load(&k.rtt_samples), 1);
    sharp_tcpinfo_maybe_sample(&k, cli, &c, 6000);
    uint64_t segs = atomic_load(&k.segs_out);
    /* the SYN's ACK and five requests at least */
    assert_true(segs >= 6);
    assert_int_equal(atomic_load(&k.retrans), 0);
    assert_int_equal(atomic_load(&k.rtt_samples), 2);
    assert_true(atomic_load(&k.rtt_sum_us) > 0);
    assert_int_equal(c.next_ms, 7000);
    /* a second sample adds only what was sent since */
    assert_int_equal(write(cli, buf, 18), 18);
    assert_int_equal(read(srv, rd, sizeof rd), 18);
    sharp_tcpinfo_sample(&k, cli, &c, 7000);
    assert_true(atomic_load(&k.segs_out) - segs >= 1 && atomic_load(&k.segs_out) - segs <= 3);
    /* a stream ends before the interval is over: left to the worker's
     * tick, which samples once the interval is over, and not again while
     * the connection stays idle */
    uint64_t samples = atomic_load(&k.rtt_samples);
    sharp_tcpinfo_maybe_sample(&k, cli, &c, 7500);
    assert_true(c.dirty);
    assert_int_equal(atomic_load(&k.rtt_samples), samples);
    sharp_tcpinfo_tick(&k, cli, &c, false, 7999);
    assert_int_equal(atomic_load(&k.rtt_samples), samples);
    sharp_tcpinfo_tick(&k, cli, &c, false, 8000);
    assert_int_equal(atomic_load(&k.rtt_samples), samples + 1);
    assert_false(c.dirty);
    sharp_tcpinfo_tick(&k, cli, &c, false, 9500);
    assert_int_equal(atomic_load(&k.rtt_samples), samples + 1);
    /* a stream still running (a long response) is sampled each interval */
    sharp_tcpinfo_tick(&k, cli, &c, true, 9500);
    assert_int_equal(atomic_load(&k.rtt_samples), samples + 2);
    assert_int_equal(c.next_ms, 10500);
    /* the kernel's 32-bit counter wrapped since the cursor's value */
    segs = atomic_load(&k.segs_out);
    uint32_t now_segs = c.segs_out;
    assert_true(now_segs < 21);
    c.segs_out = (uint32_t)(now_segs - 21u); /* 21 segments ago, across the wrap */
    assert_true(c.segs_out > now_segs);
    sharp_tcpinfo_sample(&k, cli, &c, 10500);
    assert_true(atomic_load(&k.segs_out) - segs >= 21 && atomic_load(&k.segs_out) - segs <= 22);
    /* reset once per connection; connect failure only before connecting */
    sharp_tcpinfo_reset_received(&k, &c);
    sharp_tcpinfo_reset_received(&k, &c);
    assert_int_equal(atomic_load(&k.rst_rx), 1);
    sharp_tcpinfo_connect_failed(&k, &c);
    assert_int_equal(atomic_load(&k.connect_fail), 0);
    sharp_tcpinfo_closing(&k, cli, &c, 11000);
    assert_int_equal(atomic_load(&k.closes), 1);
    assert_false(c.connected);
    sharp_tcpinfo_cursor_t fresh = {0};
    sharp_tcpinfo_connect_failed(&k, &fresh);
    assert_int_equal(atomic_load(&k.connect_fail), 1);
    /* a socket that is gone: no sample, no crash */
    uint64_t before = atomic_load(&k.rtt_samples);
    sharp_tcpinfo_sample(&k, -1, &fresh, 12000);
    assert_int_equal(atomic_load(&k.rtt_samples), before);
    atomic_store(&sharp_tcpinfo_enabled, false);
    close(cli);
    close(srv);
}

/* A connection of the probes' table as the tagging program makes it. */
static void tag(struct sharp_tcp_tag_set *set, int w, uint64_t cookie, uint64_t start_ns)
{
    set->tag[w] = cookie;
    set->sock[w].connect_start_ns = start_ns;
}

static void test_tag_table(void **state)
{
    (void)state;
    struct sharp_tcp_tag_set set;
    memset(&set, 0, sizeof set);
    int evicted = 0;
    assert_int_equal(sharp_tcp_tag_find(&set, 100), -1);
    /* eight connections fill the eight ways in order, each found again */
    for (int i = 0; i < SHARP_TCP_TAG_WAYS; i++) {
        int w = sharp_tcp_tag_pick(&set, 100 + (uint64_t)i, &evicted);
        assert_int_equal(w, i);
        tag(&set, w, 100 + (uint64_t)i, 1000 - (uint64_t)i); /* the last one began first */
    }
    assert_int_equal(evicted, 0);
    for (int i = 0; i < SHARP_TCP_TAG_WAYS; i++)
        assert_int_equal(sharp_tcp_tag_find(&set, 100 + (uint64_t)i), i);
    /* a connection already there keeps its way */
    assert_int_equal(sharp_tcp_tag_pick(&set, 103, &evicted), 3);
    assert_int_equal(evicted, 0);
    /* closed: not found as a live socket, still found as a closed one (a
     * reset sent after the close), and its way is the next connection's */
    set.tag[3] |= SHARP_TCP_TAG_CLOSED;
    assert_int_equal(sharp_tcp_tag_find(&set, 103), -1);
    assert_int_equal(sharp_tcp_tag_find(&set, 103 | SHARP_TCP_TAG_CLOSED), 3);
    assert_int_equal(sharp_tcp_tag_pick(&set, 200, &evicted), 3);
    assert_int_equal(evicted, 0);
    tag(&set, 3, 200, 2000);
    assert_int_equal(sharp_tcp_tag_find(&set, 103 | SHARP_TCP_TAG_CLOSED), -1);
    /* full: the connection that began connecting first loses its way */
    assert_int_equal(sharp_tcp_tag_pick(&set, 201, &evicted), SHARP_TCP_TAG_WAYS - 1);
    assert_int_equal(evicted, 1);
    tag(&set, SHARP_TCP_TAG_WAYS - 1, 201, 3000);
    assert_int_equal(sharp_tcp_tag_find(&set, 100 + SHARP_TCP_TAG_WAYS - 1), -1);
    evicted = 0;
    assert_int_equal(sharp_tcp_tag_pick(&set, 202, &evicted), SHARP_TCP_TAG_WAYS - 2);
    assert_int_equal(evicted, 1);
    /* consecutive cookies share a set, then take the next one; the table
     * wraps */
    uint32_t mask = 255;
    uint64_t base = 8 * 1000;
    for (uint64_t c = base; c < base + SHARP_TCP_TAG_WAYS; c++)
        assert_int_equal(sharp_tcp_tag_set_of(c, mask), sharp_tcp_tag_set_of(base, mask));
    assert_int_equal(sharp_tcp_tag_set_of(base + SHARP_TCP_TAG_WAYS, mask),
                     (sharp_tcp_tag_set_of(base, mask) + 1) & mask);
    assert_int_equal(sharp_tcp_tag_set_of(base + (uint64_t)SHARP_TCP_TAG_WAYS * 256, mask),
                     sharp_tcp_tag_set_of(base, mask));
    /* a set's tags fill one cache line (the table's values start on a page) */
    assert_int_equal(sizeof set.tag, 64);
    assert_int_equal(sizeof set % 64, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recorded_sequence),  cmocka_unit_test(test_idle_interval_keeps_rtt),
        cmocka_unit_test(test_source_restart),     cmocka_unit_test(test_rate_clamped),
        cmocka_unit_test(test_median),             cmocka_unit_test(test_ratios_skip_unknown),
        cmocka_unit_test(test_tcpinfo_sampling),   cmocka_unit_test(test_tag_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
