/* test_diagnosis.c: the host diagnosis (upstream/diagnosis.h). The pure
 * evaluation fed recorded per-interval signal sequences (one host among
 * its cluster), the hysteresis, the overload baseline and ejections; then
 * the hosts' side over a small cluster driven by a fake clock: the
 * counters workers add to, the medians of the other hosts, the text
 * workers take a reference on, and the JSON log line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include <math.h>
#include <unistd.h>

#include "log.h"
#include "upstream/cluster.h"
#include "upstream/diagnosis.h"

static const sharp_diag_context_t CLEAN_CX = {"10.0.0.3:8080", 0.0, 300, 10000, 0};

/* A quiet interval: 1 s, kernel signals clean, 100 answers in 10 ms. */
static sharp_diag_input_t quiet(void)
{
    return (sharp_diag_input_t){
        .interval_s = 1,
        .kernel = true,
        .segs_out = 200,
        .retrans = 0,
        .connects = 1,
        .rtt_samples = 50,
        .retrans_rate = 0,
        .rtt_us = 320,
        .responses = 100,
        .latency_mean_us = 10000,
        .in_flight = 1.0,
    };
}

static sharp_diag_cause_t eval(const sharp_diag_input_t *in, const sharp_diag_context_t *cx, char *text)
{
    sharp_diag_config_t cfg;
    sharp_diag_config_defaults(&cfg);
    sharp_diag_state_t st;
    sharp_diag_state_init(&st);
    return sharp_diag_evaluate(&cfg, &st, in, cx, text, SHARP_DIAG_TEXT_MAX);
}

static void test_median_without(void **state)
{
    (void)state;
    const double v[] = {1, 2, 3, 10};
    assert_true(sharp_diag_median_without(v, 4, 3) == 2);   /* {1, 2, 3} */
    assert_true(sharp_diag_median_without(v, 4, 0) == 3);   /* {2, 3, 10} */
    assert_true(sharp_diag_median_without(v, 4, 1) == 3);   /* {1, 3, 10} */
    assert_true(sharp_diag_median_without(v, 4, 99) == 2.5); /* all four */
    assert_true(sharp_diag_median_without(v, 3, 2) == 1.5); /* {1, 2} */
    assert_true(sharp_diag_median_without(v, 1, 0) == -1);  /* nothing left */
    assert_true(sharp_diag_median_without(v, 0, 99) == -1);
}

static void test_causes(void **state)
{
    (void)state;
    char t[SHARP_DIAG_TEXT_MAX];
    sharp_diag_input_t in = quiet();
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);
    assert_string_equal(t, "");

    /* packet loss: 4.8% retransmitted, the others' median 0 */
    in = quiet();
    in.segs_out = 250, in.retrans = 12, in.retrans_rate = 0.048;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_PACKET_LOSS);
    assert_string_equal(t, "network: packet loss to 10.0.0.3:8080 (retransmits 4.8% vs cluster 0.0%)");
    /* the whole path loses as much: not this host's */
    sharp_diag_context_t lossy_path = CLEAN_CX;
    lossy_path.retrans_rate = 0.03;
    assert_int_equal(eval(&in, &lossy_path, t), SHARP_DIAG_NONE);
    /* two retransmits of 60 segments is no evidence (3.3%, but 2 < 3) */
    in.segs_out = 60, in.retrans = 2, in.retrans_rate = 2.0 / 60;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);

    /* unreachable: connect failures, no connection */
    in = quiet();
    in.connects = 0, in.connect_fail = 6, in.responses = 0, in.latency_mean_us = -1, in.segs_out = 12;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_UNREACHABLE);
    assert_string_equal(t, "network: 10.0.0.3:8080 unreachable (6 connect failures, no connection established)");
    in.connects = 1; /* some connect: not unreachable */
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);
    /* the pools' connects failed on resets the host sent after its SYN-ACK
     * (the kernel counted no connect in the interval): reachable, resetting */
    in = quiet();
    in.connects = 0, in.cx_fail = 3, in.rst_rx = 3, in.responses = 0, in.latency_mean_us = -1;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_RESETS);
    in = quiet();
    in.kernel = false, in.cx_fail = 4, in.resets = 3, in.responses = 0;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_RESETS);

    /* resets */
    in = quiet();
    in.rst_rx = 9, in.responses = 40;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_RESETS);
    assert_string_equal(t, "network: connection resets from 10.0.0.3:8080 (9 resets, 40 answers in 1 s)");
    in.rst_rx = 2; /* under min_failures */
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);

    /* network latency: RTT 41 ms vs 0.3 ms */
    in = quiet();
    in.rtt_us = 41200;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NETWORK_LATENCY);
    assert_string_equal(t, "network: latency to 10.0.0.3:8080 (RTT 41.2 ms vs cluster 0.30 ms)");
    in.rtt_us = 4000; /* 13 times, under the 5 ms floor */
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);

    /* application errors, network clean */
    in = quiet();
    in.resp_5xx = 37;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_APP_ERRORS);
    assert_string_equal(t, "application: 10.0.0.3:8080 answers 5xx (37% of 100 answers vs cluster 0%), network clean");
    in.resp_5xx = 5; /* 5% */
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);

    /* latency, network clean: 212 ms vs 10 ms */
    in = quiet();
    in.latency_mean_us = 212000, in.in_flight = 21;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_LATENCY);
    assert_string_equal(t, "latency: 10.0.0.3:8080 slow (mean 212 ms vs cluster 10.0 ms), network clean");
    in.latency_mean_us = 19000; /* twice the others: under the factor and the floor */
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_NONE);
    /* tries timing out */
    in = quiet();
    in.timeouts = 12, in.responses = 30;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_LATENCY);
    assert_string_equal(t, "latency: 10.0.0.3:8080 not answering in time (12 of 42 tries timed out), network clean");

    /* without kernel signals the network is not vouched for */
    in = quiet();
    in.kernel = false;
    in.resp_5xx = 50;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_APP_ERRORS);
    assert_non_null(strstr(t, ", network not observed"));
    /* and the pools' connect failures tell unreachable */
    in = quiet();
    in.kernel = false, in.cx_fail = 4, in.responses = 0;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_UNREACHABLE);
}

/* The network comes first: it explains errors and latency. */
static void test_order(void **state)
{
    (void)state;
    char t[SHARP_DIAG_TEXT_MAX];
    sharp_diag_input_t in = quiet();
    in.segs_out = 300, in.retrans = 15, in.retrans_rate = 0.05;
    in.resp_5xx = 50, in.latency_mean_us = 300000;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_PACKET_LOSS);
    in.retrans = 0, in.retrans_rate = 0;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_APP_ERRORS);
    in.resp_5xx = 0;
    assert_int_equal(eval(&in, &CLEAN_CX, t), SHARP_DIAG_LATENCY);
}

/* A recorded run of a host whose link starts losing packets at t=3 s and
 * stops at t=8 s, one interval a second (L: loss, .: clean). */
static void test_hysteresis(void **state)
{
    (void)state;
    sharp_diag_config_t cfg;
    sharp_diag_config_defaults(&cfg);
    sharp_diag_state_t st;
    sharp_diag_state_init(&st);
    static const char run[] = "..L.LLLLL...L..";
    /* the diagnosis after each interval (P: packet loss) and the bits
     * saying to log (1) and publish (2): set on the second interval in a
     * row, fresh figures while it holds, cleared on the third quiet one; a
     * lone lossy interval sets nothing */
    static const char want[] = ".....PPPPPP....";
    static const unsigned flags[] = {0, 0, 0, 0, 0, 3, 2, 2, 2, 0, 0, 3, 0, 0, 0};
    for (size_t i = 0; i < sizeof run - 1; i++) {
        sharp_diag_input_t in = quiet();
        if (run[i] == 'L') in.segs_out = 200 + (uint64_t)i, in.retrans = 10 + (uint64_t)i;
        in.retrans_rate = (double)in.retrans / (double)in.segs_out;
        unsigned got = sharp_diag_step(&cfg, &st, &in, &CLEAN_CX);
        assert_int_equal(st.cause, want[i] == 'P' ? SHARP_DIAG_PACKET_LOSS : SHARP_DIAG_NONE);
        assert_int_equal(got, flags[i]);
    }
    assert_string_equal(st.text, "");
    /* the figures follow while the cause holds */
    sharp_diag_state_init(&st);
    sharp_diag_input_t in = quiet();
    in.segs_out = 200, in.retrans = 10, in.retrans_rate = 0.05;
    sharp_diag_step(&cfg, &st, &in, &CLEAN_CX);
    sharp_diag_step(&cfg, &st, &in, &CLEAN_CX);
    assert_string_equal(st.text, "network: packet loss to 10.0.0.3:8080 (retransmits 5.0% vs cluster 0.0%)");
    in.retrans = 16, in.retrans_rate = 0.08;
    assert_int_equal(sharp_diag_step(&cfg, &st, &in, &CLEAN_CX), SHARP_DIAG_TEXT_CHANGED);
    assert_string_equal(st.text, "network: packet loss to 10.0.0.3:8080 (retransmits 8.0% vs cluster 0.0%)");
    /* another cause takes over only after set_intervals of its own */
    sharp_diag_input_t err = quiet();
    err.resp_5xx = 60;
    assert_int_equal(sharp_diag_step(&cfg, &st, &err, &CLEAN_CX), 0);
    assert_int_equal(st.cause, SHARP_DIAG_PACKET_LOSS);
    assert_int_equal(sharp_diag_step(&cfg, &st, &err, &CLEAN_CX), 3);
    assert_int_equal(st.cause, SHARP_DIAG_APP_ERRORS);
}

/* Overload: latency and in-flight rise with the rate over the host's
 * baseline. A host whose latency rises at an unchanged rate is slow, not
 * overloaded (its in-flight grows with the latency alone). */
static void test_overload(void **state)
{
    (void)state;
    sharp_diag_config_t cfg;
    sharp_diag_config_defaults(&cfg);
    /* the others answer as fast as this host used to */
    sharp_diag_context_t cx = CLEAN_CX;
    cx.latency_us = 20000;
    sharp_diag_state_t st;
    sharp_diag_state_init(&st);
    /* 5 s at 50 req/s, 20 ms, 1 in flight */
    for (int i = 0; i < 5; i++) {
        sharp_diag_input_t in = quiet();
        in.responses = 50, in.latency_mean_us = 20000 + 500 * (i % 2), in.in_flight = 1.0;
        assert_int_equal(sharp_diag_step(&cfg, &st, &in, &cx), 0);
    }
    assert_int_equal(st.base_n, 5);
    assert_true(st.base_rate > 49 && st.base_rate < 51);
    /* the load triples: 150 req/s, 90 ms, 13.5 in flight */
    sharp_diag_input_t hot = quiet();
    hot.responses = 150, hot.latency_mean_us = 90000, hot.in_flight = 13.5;
    char t[SHARP_DIAG_TEXT_MAX];
    assert_int_equal(sharp_diag_evaluate(&cfg, &st, &hot, &cx, t, sizeof t), SHARP_DIAG_OVERLOAD);
    assert_string_equal(t, "overload: 10.0.0.3:8080 latency rising with concurrency (mean 90.0 ms at 13.5 in "
                           "flight, 150 req/s; baseline 20.2 ms at 1.0, 50 req/s), network clean");
    sharp_diag_step(&cfg, &st, &hot, &cx);
    assert_int_equal(sharp_diag_step(&cfg, &st, &hot, &cx), 3);
    assert_int_equal(st.cause, SHARP_DIAG_OVERLOAD);
    /* the baseline did not follow the hot intervals */
    assert_true(st.base_latency_us < 21000);
    /* same latency, same rate as before: slow, not overloaded */
    sharp_diag_input_t slow = quiet();
    slow.responses = 50, slow.latency_mean_us = 90000, slow.in_flight = 4.5;
    assert_int_equal(sharp_diag_evaluate(&cfg, &st, &slow, &cx, t, sizeof t), SHARP_DIAG_LATENCY);
    /* no baseline yet: never overload */
    sharp_diag_state_t fresh;
    sharp_diag_state_init(&fresh);
    assert_int_not_equal(sharp_diag_evaluate(&cfg, &fresh, &hot, &cx, t, sizeof t), SHARP_DIAG_OVERLOAD);
}

static void test_ejection(void **state)
{
    (void)state;
    char t[SHARP_DIAG_TEXT_MAX];
    sharp_diag_config_t cfg;
    sharp_diag_config_defaults(&cfg);
    sharp_diag_state_t st;
    sharp_diag_state_init(&st);
    sharp_diag_input_t in = quiet();
    /* the latency monitor ejects a host the interval's means do not single out */
    unsigned r = sharp_diag_eject(&cfg, &st, &in, &CLEAN_CX, SHARP_DIAG_BY_LATENCY, "p95 212 ms vs cluster median 11.0 ms");
    assert_int_equal(r, 3);
    assert_int_equal(st.cause, SHARP_DIAG_LATENCY);
    assert_string_equal(st.text, "latency: 10.0.0.3:8080 slow (p95 212 ms vs cluster median 11.0 ms), network clean");
    /* pinned: quiet intervals (an ejected host has no traffic) keep it */
    sharp_diag_input_t idle = {.interval_s = 1, .kernel = true, .retrans_rate = -1, .rtt_us = -1,
                               .latency_mean_us = -1};
    for (int i = 0; i < 5; i++) assert_int_equal(sharp_diag_step(&cfg, &st, &idle, &CLEAN_CX), 0);
    assert_int_equal(st.cause, SHARP_DIAG_LATENCY);
    /* back: three quiet intervals clear it */
    sharp_diag_uneject(&st);
    assert_int_equal(sharp_diag_step(&cfg, &st, &in, &CLEAN_CX), 0);
    assert_int_equal(sharp_diag_step(&cfg, &st, &in, &CLEAN_CX), 0);
    assert_int_equal(sharp_diag_step(&cfg, &st, &in, &CLEAN_CX), 3);
    assert_string_equal(st.text, "");

    /* consecutive 5xx, but the host refused connections: the network says why */
    sharp_diag_state_init(&st);
    sharp_diag_input_t refused = quiet();
    refused.connects = 0, refused.connect_fail = 5, refused.responses = 0;
    sharp_diag_eject(&cfg, &st, &refused, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "5 consecutive 5xx");
    assert_int_equal(st.cause, SHARP_DIAG_UNREACHABLE);
    /* consecutive 5xx with 5xx in the evidence: its figures */
    sharp_diag_state_init(&st);
    sharp_diag_input_t errs = quiet();
    errs.resp_5xx = 20, errs.responses = 25;
    sharp_diag_eject(&cfg, &st, &errs, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "5 consecutive 5xx");
    assert_string_equal(st.text, "application: 10.0.0.3:8080 answers 5xx (80% of 25 answers vs cluster 0%), network clean");
    /* ...or too few answers to count: the detector's own */
    sharp_diag_state_init(&st);
    errs.resp_5xx = 2, errs.responses = 2;
    sharp_diag_eject(&cfg, &st, &errs, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "5 consecutive 5xx");
    assert_string_equal(st.text, "application: 10.0.0.3:8080 answers 5xx (5 consecutive 5xx), network clean");
    /* 504s that were timeouts */
    sharp_diag_state_init(&st);
    sharp_diag_input_t hang = quiet();
    hang.responses = 0, hang.timeouts = 5;
    sharp_diag_eject(&cfg, &st, &hang, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "5 consecutive 5xx");
    assert_int_equal(st.cause, SHARP_DIAG_LATENCY);
    assert_non_null(strstr(st.text, "not answering in time (5 of 5 tries timed out)"));
    /* consecutive 5xx that were SHARP's replies to resets and failed
     * connects, a few within an interval of many answers (below the
     * interval's reset share): the resets, not the application */
    sharp_diag_state_init(&st);
    sharp_diag_input_t cut = quiet();
    cut.responses = 80, cut.resets = 2, cut.cx_fail = 2;
    assert_int_not_equal(sharp_diag_evaluate(&cfg, &st, &cut, &CLEAN_CX, t, sizeof t), SHARP_DIAG_RESETS);
    sharp_diag_eject(&cfg, &st, &cut, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "3 consecutive 5xx");
    assert_int_equal(st.cause, SHARP_DIAG_RESETS);
    assert_string_equal(st.text, "network: connection resets from 10.0.0.3:8080 (2 resets, 2 connect failures, "
                                 "80 answers; 3 consecutive 5xx)");
    /* ...the kernel's count of resets received when it is the larger */
    sharp_diag_state_init(&st);
    cut.rst_rx = 4, cut.cx_fail = 0;
    sharp_diag_eject(&cfg, &st, &cut, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "3 consecutive 5xx");
    assert_string_equal(st.text, "network: connection resets from 10.0.0.3:8080 (4 resets, 80 answers; "
                                 "3 consecutive 5xx)");
    /* ...connects failing without a reset: connection failures */
    sharp_diag_state_init(&st);
    cut.rst_rx = 0, cut.resets = 0, cut.cx_fail = 3;
    sharp_diag_eject(&cfg, &st, &cut, &CLEAN_CX, SHARP_DIAG_BY_LOCAL, "3 consecutive local-origin failures");
    assert_int_equal(st.cause, SHARP_DIAG_CONNECTION_FAILURES);
    assert_string_equal(st.text, "network: connections to 10.0.0.3:8080 failing (3 connect failures, 80 answers; "
                                 "3 consecutive local-origin failures)");
    /* ...until an interval's network signal says what they were */
    sharp_diag_input_t after = quiet();
    after.resets = 0, after.rst_rx = 4, after.responses = 10;
    assert_int_equal(sharp_diag_step(&cfg, &st, &after, &CLEAN_CX), 3);
    assert_int_equal(st.cause, SHARP_DIAG_RESETS);
    assert_string_equal(st.text, "network: connection resets from 10.0.0.3:8080 (4 resets, 10 answers in 1 s)");
    /* a network cause, once pinned, stays */
    after.rst_rx = 0;
    after.connects = 0, after.connect_fail = 5, after.responses = 0;
    assert_int_equal(sharp_diag_step(&cfg, &st, &after, &CLEAN_CX), 0);
    assert_int_equal(st.cause, SHARP_DIAG_RESETS);
    /* ...but 5xx answers among them: the application's */
    sharp_diag_state_init(&st);
    cut.resp_5xx = 40, cut.resets = 3;
    sharp_diag_eject(&cfg, &st, &cut, &CLEAN_CX, SHARP_DIAG_BY_ERRORS, "3 consecutive 5xx");
    assert_int_equal(st.cause, SHARP_DIAG_APP_ERRORS);
    /* local-origin failures without a signal that pins them down */
    sharp_diag_state_init(&st);
    sharp_diag_eject(&cfg, &st, &in, &CLEAN_CX, SHARP_DIAG_BY_LOCAL, "5 consecutive connect failures, timeouts or resets");
    assert_int_equal(st.cause, SHARP_DIAG_CONNECTION_FAILURES);
    assert_string_equal(st.text, "network: connections to 10.0.0.3:8080 failing (5 consecutive connect failures, "
                                 "timeouts or resets)");
    /* the kernel monitor's own figures */
    sharp_diag_state_init(&st);
    sharp_diag_eject(&cfg, &st, &in, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_LOSS, "retransmits 5.1% vs cluster median 0.0%");
    assert_string_equal(st.text, "network: packet loss to 10.0.0.3:8080 (retransmits 5.1% vs cluster median 0.0%)");
    assert_string_equal(sharp_diag_cause_name(st.cause), "packet_loss");
    /* the loss monitor ejects a host whose interval shows the RTT that loss
     * inflates, not the loss itself (5% lost, too few segments to count
     * as loss in one interval): the cause is the loss */
    sharp_diag_state_init(&st);
    sharp_diag_input_t rtt = quiet();
    rtt.rtt_us = 5910;
    rtt.retrans = 2;
    rtt.retrans_rate = 0.05;
    char why[SHARP_DIAG_TEXT_MAX];
    assert_int_equal(eval(&rtt, &CLEAN_CX, why), SHARP_DIAG_NETWORK_LATENCY);
    sharp_diag_eject(&cfg, &st, &rtt, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_LOSS, "retransmits 5.2% vs cluster median 0.1%");
    assert_int_equal(st.cause, SHARP_DIAG_PACKET_LOSS);
    assert_string_equal(st.text, "network: packet loss to 10.0.0.3:8080 (retransmits 5.2% vs cluster median 0.1%)");
    /* the RTT monitor's ejection of the same interval stays a latency one */
    sharp_diag_state_init(&st);
    sharp_diag_eject(&cfg, &st, &rtt, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_RTT, "RTT 5.91 ms vs cluster median 0.30 ms");
    assert_int_equal(st.cause, SHARP_DIAG_NETWORK_LATENCY);
    /* a full queue: 60 ms of RTT and the 1.8% its tail drops lose. The
     * monitor weighed both over its run: when it names latency, so does
     * the diagnosis, with the monitor's figures */
    sharp_diag_state_init(&st);
    sharp_diag_input_t queue = quiet();
    queue.rtt_us = 60000;
    queue.retrans = 2;
    queue.retrans_rate = 0.018;
    sharp_diag_eject(&cfg, &st, &queue, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_RTT, "RTT 60.0 ms vs cluster median 0.30 ms");
    assert_int_equal(st.cause, SHARP_DIAG_NETWORK_LATENCY);
    assert_string_equal(st.text, "network: latency to 10.0.0.3:8080 (RTT 60.0 ms vs cluster 0.30 ms)");
    /* the same queue dropping enough that this interval reads as loss
     * (4.3% of 300 segments), the monitor having named latency over its
     * run: latency, with the run's figures, as the monitor's log says */
    sharp_diag_state_init(&st);
    queue.rtt_us = 90000;
    queue.segs_out = 300, queue.retrans = 13, queue.retrans_rate = 0.043;
    assert_int_equal(eval(&queue, &CLEAN_CX, why), SHARP_DIAG_PACKET_LOSS);
    sharp_diag_eject(&cfg, &st, &queue, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_RTT, "RTT 95.0 ms vs cluster median 0.30 ms");
    assert_int_equal(st.cause, SHARP_DIAG_NETWORK_LATENCY);
    assert_string_equal(st.text, "network: latency to 10.0.0.3:8080 (RTT 95.0 ms vs cluster median 0.30 ms)");
    /* a lossy host whose last interval reads as latency (9.3 ms of RTT,
     * few retransmits): the monitor named loss over the run, and the
     * diagnosis agrees */
    sharp_diag_state_init(&st);
    sharp_diag_input_t hole = quiet();
    hole.rtt_us = 9310;
    hole.segs_out = 300, hole.retrans = 2, hole.retrans_rate = 0.007;
    assert_int_equal(eval(&hole, &CLEAN_CX, why), SHARP_DIAG_NETWORK_LATENCY);
    sharp_diag_eject(&cfg, &st, &hole, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_LOSS, "retransmits 6.0% vs cluster median 0.1%");
    assert_int_equal(st.cause, SHARP_DIAG_PACKET_LOSS);
    assert_string_equal(st.text, "network: packet loss to 10.0.0.3:8080 (retransmits 6.0% vs cluster median 0.1%)");
    /* heavy loss with a little RTT: the loss monitor's, loss */
    sharp_diag_state_init(&st);
    queue.rtt_us = 6000, queue.retrans = 60, queue.retrans_rate = 0.2;
    sharp_diag_eject(&cfg, &st, &queue, &CLEAN_CX, SHARP_DIAG_BY_KERNEL_LOSS, "retransmits 20.0% vs cluster median 0.0%");
    assert_int_equal(st.cause, SHARP_DIAG_PACKET_LOSS);
}

/* ---- the hosts' side, over a cluster of three, on a fake clock ---- */

typedef struct {
    sharp_cluster_t c;
    sharp_host_t h[3];
    sharp_host_t *ptr[3];
} cluster3_t;

static cluster3_t *cluster3(void)
{
    cluster3_t *k = calloc(1, sizeof *k);
    k->c.name = "web";
    k->c.nhosts = 3;
    k->c.hosts = k->ptr;
    for (uint32_t i = 0; i < 3; i++) {
        snprintf(k->h[i].address, sizeof k->h[i].address, "10.0.0.%u:8080", i + 1);
        k->ptr[i] = &k->h[i];
    }
    return k;
}

static void cluster3_free(cluster3_t *k)
{
    for (uint32_t i = 0; i < 3; i++) sharp_diag_host_destroy(&k->h[i]);
    free(k);
}

/* What the workers report in one second: n answers per host taking ms[i],
 * of which e5[i] are 5xx. */
static void traffic(cluster3_t *k, const int *n, const double *ms, const int *e5)
{
    for (uint32_t i = 0; i < 3; i++)
        for (int r = 0; r < n[i]; r++) sharp_diag_put_answer(&k->h[i].diag, (uint64_t)(ms[i] * 1000), r < e5[i]);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[16384];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_hosts_interval(void **state)
{
    (void)state;
    char log[] = "/tmp/sharp-test-diagnosis-XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(sharp_log_open(log), 0);
    sharp_log_set(SHARP_LOGGER_upstream, SHARP_LOG_INFO);
    cluster3_t *k = cluster3();
    static const int N[3] = {100, 120, 110}, NONE[3] = {0, 0, 0}, E5[3] = {0, 0, 60};
    static const double MS[3] = {10, 12, 11};
    uint64_t now = 5000;
    sharp_diag_cluster_interval(&k->c, now); /* the first interval: counters' starting point */
    /* host 3 answers 5xx for 2 s: its diagnosis on the second */
    for (int s = 0; s < 2; s++) {
        traffic(k, N, MS, E5);
        sharp_diag_cluster_interval(&k->c, now += 1000);
    }
    assert_string_equal(sharp_diag_host_text(&k->h[2]),
                        "application: 10.0.0.3:8080 answers 5xx (55% of 110 answers vs cluster 0%), network not observed");
    assert_string_equal(sharp_diag_host_text(&k->h[0]), "");
    assert_null(sharp_diag_text_get(&k->h[0]));
    /* the text a worker holds outlives the host's next one */
    sharp_diag_text_t *held = sharp_diag_text_get(&k->h[2]);
    assert_non_null(held);
    assert_string_equal(held->s, sharp_diag_host_text(&k->h[2]));
    /* the 5xx stop; three quiet seconds clear it */
    for (int s = 0; s < 3; s++) {
        traffic(k, N, MS, NONE);
        sharp_diag_cluster_interval(&k->c, now += 1000);
    }
    assert_string_equal(sharp_diag_host_text(&k->h[2]), "");
    assert_null(sharp_diag_text_get(&k->h[2]));
    assert_non_null(strstr(held->s, "answers 5xx"));
    sharp_diag_text_put(held);
    /* host 1 slows down to 250 ms: slow against the others' 11.5 ms */
    static const double SLOW1[3] = {250, 12, 11};
    for (int s = 0; s < 2; s++) {
        traffic(k, N, SLOW1, NONE);
        sharp_diag_cluster_interval(&k->c, now += 1000);
    }
    assert_string_equal(sharp_diag_host_text(&k->h[0]),
                        "latency: 10.0.0.1:8080 slow (mean 250 ms vs cluster 11.5 ms), network not observed");
    /* 2.5 s between two intervals: the rate and in-flight use the real time */
    traffic(k, N, SLOW1, NONE);
    sharp_diag_cluster_interval(&k->c, now += 2500);
    assert_true(k->h[0].diag.last.interval_s == 2.5);
    assert_true(fabs(k->h[0].diag.last.in_flight - 100 * 0.25 / 2.5) < 1e-9);
    /* the log: one JSON line per change of cause */
    char *out = read_file(log);
    assert_non_null(strstr(out, "{\"event\":\"upstream_host_diagnosis\",\"cluster\":\"web\",\"host\":\"10.0.0.3:8080\","
                                "\"cause\":\"application_errors\",\"diagnosis\":\"application: 10.0.0.3:8080 answers 5xx "
                                "(55% of 110 answers vs cluster 0%), network not observed\",\"previous_cause\":\"none\","
                                "\"ejected\":false}"));
    assert_non_null(strstr(out, "\"host\":\"10.0.0.3:8080\",\"cause\":\"none\",\"diagnosis\":\"\","
                                "\"previous_cause\":\"application_errors\""));
    assert_non_null(strstr(out, "\"host\":\"10.0.0.1:8080\",\"cause\":\"latency\""));
    int lines = 0;
    for (char *p = out; (p = strstr(p, "upstream_host_diagnosis")); p++) lines++;
    assert_int_equal(lines, 3);
    cluster3_free(k);
    unlink(log);
}

int main(void)
{
    sharp_log_set_all(SHARP_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_without),
        cmocka_unit_test(test_causes),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_hysteresis),
        cmocka_unit_test(test_overload),
        cmocka_unit_test(test_ejection),
        cmocka_unit_test(test_hosts_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
