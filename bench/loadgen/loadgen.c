/* sharp-loadgen: an open-loop HTTP/1.1 load generator (libuv + llhttp).
 *
 * Requests are launched on a fixed schedule (Poisson or uniform arrivals at
 * the configured rate, optionally changing over time), whether or not earlier
 * ones have been answered. Each request takes an idle keep-alive connection
 * from the pool or opens a new one; when --max-connections are all busy the
 * request is counted as dropped by the client and the schedule goes on.
 * Latency is measured from the scheduled send time, so a slow target cannot
 * hold back the load and hide its own queueing (no coordinated omission).
 *
 * The arrival clock is a timerfd on CLOCK_MONOTONIC (the clock of uv_hrtime),
 * so requests leave within microseconds of their schedule rather than on the
 * millisecond ticks of uv_timer. Timeouts need no per-request timer: requests
 * are launched in schedule order, so the in-flight list is sorted by deadline
 * and a periodic sweep pops expired requests off its head. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <llhttp.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#define NS_PER_S 1000000000.0
#define SWEEP_MS 5

/* ---- log-linear histogram of microseconds (HDR-style) -------------------
 * Values below 2^11 are exact; above, each power of two is split into 1024
 * linear buckets (relative error < 0.1%). Values are capped at 2^36 us. */

#define H_SUB_BITS 11
#define H_SUB (1u << H_SUB_BITS)
#define H_HALF (H_SUB / 2)
#define H_MAX_BITS 36
#define H_BUCKETS (H_SUB + (H_MAX_BITS - H_SUB_BITS + 1) * H_HALF)

typedef struct {
    uint64_t n[H_BUCKETS];
    uint64_t count, max;
    double sum;
} hist_t;

static unsigned h_index(uint64_t v)
{
    if (v < H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (H_SUB_BITS - 1);
    return H_SUB + (shift - 1) * H_HALF + (unsigned)((v >> shift) - H_HALF);
}

/* highest value that falls in bucket i */
static uint64_t h_upper(unsigned i)
{
    if (i < H_SUB)
        return i;
    unsigned shift = (i - H_SUB) / H_HALF + 1;
    uint64_t sub = (i - H_SUB) % H_HALF + H_HALF;
    return ((sub + 1) << shift) - 1;
}

static void h_record(hist_t *h, uint64_t us)
{
    if (us >= (1ull << H_MAX_BITS))
        us = (1ull << H_MAX_BITS) - 1;
    h->n[h_index(us)]++;
    h->count++;
    h->sum += (double)us;
    if (us > h->max)
        h->max = us;
}

/* value at percentile p (0..100) in milliseconds, or -1 when empty */
static double h_pct(const hist_t *h, double p)
{
    if (!h->count)
        return -1;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->count);
    if (want < 1)
        want = 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        acc += h->n[i];
        if (acc >= want) {
            uint64_t v = h_upper(i);
            return (double)(v < h->max ? v : h->max) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

/* ---- state --------------------------------------------------------------- */

typedef struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    llhttp_t parser;
    struct conn *prev, *next; /* idle list or in-flight list */
    uint64_t sched;           /* scheduled send time of the current request */
    bool connected, closing, busy, measured, keep_alive, writing;
} conn_t;

enum { C_SENT, C_OK, C_SHED, C_OTHER, C_ERR, C_TMO, C_DROP, C_N };

typedef struct {
    uint64_t v[C_N];
} counts_t;

typedef struct {
    double t;
    counts_t c;
    double p50, p99;
} interval_t;

static struct {
    /* options */
    const char *url;
    double rate, duration, warmup;
    double *sched_t, *sched_r;
    unsigned nsched;
    unsigned interval_ms, timeout_ms, max_conns;
    bool poisson, json;
    uint64_t seed;

    /* target */
    struct sockaddr_storage addr;
    char *request;
    size_t request_len;

    /* run */
    uv_loop_t *loop;
    uv_poll_t arrival_poll;
    uv_timer_t sweep;
    uv_signal_t sigint, sigterm;
    int tfd;
    uint64_t start, warm_end, end;
    double next;          /* next arrival, ns (double: no drift at high rates) */
    bool schedule_done, finished;
    conn_t idle;          /* idle list sentinel, most recently used first */
    conn_t fl_head;       /* in-flight list sentinel, sorted by sched */
    unsigned nconns, peak_conns;
    uint64_t opened, in_flight_at_end;

    /* stats */
    counts_t tot;
    uint64_t ok_window; /* 2xx received during the measurement */
    hist_t lat, iv_lat;
    counts_t iv;
    uint64_t iv_end;
    unsigned iv_index, iv_count;
    interval_t *series;
    unsigned nseries;
} G;

static llhttp_settings_t settings;
static char rbuf[64 * 1024];

static void finish(void);

/* xorshift64*, uniform in [0, 1) */
static double rng_unit(void)
{
    G.seed ^= G.seed >> 12;
    G.seed ^= G.seed << 25;
    G.seed ^= G.seed >> 27;
    return (double)((G.seed * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

/* ---- lists: circular, with a sentinel ---------------------------------------- */

static void list_remove(conn_t *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void list_insert_after(conn_t *at, conn_t *c)
{
    c->prev = at;
    c->next = at->next;
    at->next->prev = c;
    at->next = c;
}

/* ---- intervals ------------------------------------------------------------ */

static void iv_emit(void)
{
    if (G.nseries == G.iv_count)
        return;
    interval_t *s = &G.series[G.nseries++];
    uint64_t t_end = G.iv_end < G.end ? G.iv_end : G.end;
    s->t = (double)(t_end - G.start) / NS_PER_S;
    s->c = G.iv;
    s->p50 = h_pct(&G.iv_lat, 50);
    s->p99 = h_pct(&G.iv_lat, 99);
    memset(&G.iv, 0, sizeof G.iv);
    memset(&G.iv_lat, 0, sizeof G.iv_lat);
}

/* closes the intervals that ended before now (the last one closes in finish) */
static void iv_roll(uint64_t now)
{
    if (!G.iv_count)
        return;
    while (now >= G.iv_end && G.iv_index + 1 < G.iv_count) {
        iv_emit();
        G.iv_index++;
        G.iv_end += (uint64_t)G.interval_ms * 1000000u;
    }
}

/* Totals, success rate and the latency percentiles cover the requests
 * scheduled after the warm-up, whenever they finish; the series and the
 * goodput count events by the time they happen inside the measurement. */
static void count(int k, bool measured, uint64_t now, uint64_t lat_us)
{
    if (measured) {
        G.tot.v[k]++;
        if (k == C_OK)
            h_record(&G.lat, lat_us);
    }
    if (now < G.warm_end || now >= G.end)
        return;
    if (k == C_OK)
        G.ok_window++;
    if (G.iv_count) {
        iv_roll(now);
        G.iv.v[k]++;
        if (k == C_OK)
            h_record(&G.iv_lat, lat_us);
    }
}

/* ---- connections ---------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    G.nconns--;
    free(c);
    if (G.schedule_done && G.fl_head.next == &G.fl_head)
        finish();
}

static void conn_close(conn_t *c, bool reset)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->prev)
        list_remove(c);
    c->busy = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (reset && c->connected && uv_tcp_close_reset(&c->tcp, on_closed) == 0)
        return;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* closes the connection; its request, if any, failed (error or timeout) */
static void request_fail(conn_t *c, bool timed_out)
{
    if (c->busy)
        count(timed_out ? C_TMO : C_ERR, c->measured, uv_hrtime(), 0);
    conn_close(c, timed_out);
}

static void on_write(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    c->writing = false;
    if (status < 0 && !c->closing)
        request_fail(c, false);
}

static void send_request(conn_t *c)
{
    uv_buf_t b = uv_buf_init(G.request, (unsigned)G.request_len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == (int)G.request_len)
        return;
    if (r < 0 && r != UV_EAGAIN) {
        request_fail(c, false);
        return;
    }
    if (r > 0)
        b = uv_buf_init(G.request + r, (unsigned)(G.request_len - (size_t)r));
    c->wreq.data = c;
    c->writing = true;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writing = false;
        request_fail(c, false);
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    *buf = uv_buf_init(rbuf, sizeof rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        if (c->busy && nread == UV_EOF)
            llhttp_finish(&c->parser); /* completes a response delimited by EOF */
        request_fail(c, false);
        return;
    }
    if (llhttp_execute(&c->parser, buf->base, (size_t)nread) != HPE_OK && !c->closing)
        request_fail(c, false);
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    return c->busy ? 0 : -1; /* bytes nobody asked for */
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    c->keep_alive = llhttp_should_keep_alive(p);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    int status = llhttp_get_status_code(p);
    if (status >= 100 && status < 200)
        return 0; /* interim response; the final one follows */
    uint64_t now = uv_hrtime();
    int k = status >= 200 && status < 300 ? C_OK : status == 503 ? C_SHED : C_OTHER;
    if (now - c->sched >= (uint64_t)G.timeout_ms * 1000000u)
        k = C_TMO; /* arrived after the deadline, before the sweep noticed */
    count(k, c->measured, now, now > c->sched ? (now - c->sched) / 1000 : 0);
    list_remove(c);
    c->busy = false;
    if (c->keep_alive && !c->writing && !G.finished)
        list_insert_after(&G.idle, c);
    else
        conn_close(c, false);
    if (G.schedule_done && G.fl_head.next == &G.fl_head)
        finish();
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        request_fail(c, false);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        request_fail(c, false);
        return;
    }
    if (c->busy)
        send_request(c);
}

/* ---- the schedule ----------------------------------------------------------- */

static double rate_at(double t)
{
    double r = G.rate;
    for (unsigned i = 0; i < G.nsched && G.sched_t[i] <= t; i++)
        r = G.sched_r[i];
    return r;
}

static void advance(void)
{
    double t = (G.next - (double)G.start) / NS_PER_S;
    double r = rate_at(t);
    if (r <= 0) {
        double nt = -1;
        for (unsigned i = 0; i < G.nsched; i++)
            if (G.sched_t[i] > t) {
                nt = G.sched_t[i];
                break;
            }
        G.next = nt < 0 ? (double)G.end : (double)G.start + nt * NS_PER_S;
        return;
    }
    double gap = G.poisson ? -log(1.0 - rng_unit()) / r : 1.0 / r;
    G.next += gap * NS_PER_S;
}

static void launch(uint64_t sched)
{
    bool measured = sched >= G.warm_end;
    conn_t *c = G.idle.next;
    if (c != &G.idle) {
        list_remove(c);
    } else {
        if (G.nconns >= G.max_conns) {
            count(C_DROP, measured, uv_hrtime(), 0);
            return;
        }
        c = calloc(1, sizeof *c);
        if (!c || uv_tcp_init(G.loop, &c->tcp) != 0) {
            free(c);
            count(C_ERR, measured, uv_hrtime(), 0);
            return;
        }
        c->tcp.data = c;
        c->creq.data = c;
        llhttp_init(&c->parser, HTTP_RESPONSE, &settings);
        c->parser.data = c;
        G.nconns++;
        G.opened++;
        if (G.nconns > G.peak_conns)
            G.peak_conns = G.nconns;
    }
    c->sched = sched;
    c->measured = measured;
    c->busy = true;
    list_insert_after(G.fl_head.prev, c);
    count(C_SENT, measured, uv_hrtime(), 0);
    if (c->connected) {
        send_request(c);
    } else if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&G.addr, on_connect) != 0) {
        request_fail(c, false);
    }
}

static void arm(uint64_t at)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
        its.it_value.tv_nsec = 1;
    timerfd_settime(G.tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_arrival(uv_poll_t *h, int status, int events)
{
    uint64_t expirations;
    if (read(G.tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    uint64_t now = uv_hrtime();
    while (!G.schedule_done && G.next <= (double)now) {
        if (G.next >= (double)G.end) {
            G.schedule_done = true;
            break;
        }
        launch((uint64_t)G.next);
        advance();
    }
    if (G.next >= (double)G.end)
        G.schedule_done = true;
    if (G.schedule_done) {
        uv_poll_stop(&G.arrival_poll);
        if (G.fl_head.next == &G.fl_head)
            finish();
    } else {
        arm((uint64_t)G.next);
    }
}

static void on_sweep(uv_timer_t *t)
{
    uint64_t now = uv_hrtime();
    uint64_t tmo = (uint64_t)G.timeout_ms * 1000000u;
    while (G.fl_head.next != &G.fl_head && G.fl_head.next->sched + tmo <= now)
        request_fail(G.fl_head.next, true);
    iv_roll(now);
    if (G.schedule_done && G.fl_head.next == &G.fl_head)
        finish();
}

static void on_signal(uv_signal_t *s, int signum)
{
    G.schedule_done = true;
    finish();
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TCP)
        conn_close(h->data, false);
    else
        uv_close(h, NULL);
}

/* ends the run: whatever is still in flight is abandoned */
static void finish(void)
{
    if (G.finished)
        return;
    G.finished = true;
    uint64_t now = uv_hrtime();
    if (now < G.end) /* stopped early by a signal */
        G.duration = now > G.warm_end ? (double)(now - G.warm_end) / NS_PER_S : 0.001;
    for (conn_t *c = G.fl_head.next; c != &G.fl_head; c = c->next)
        if (c->measured)
            G.in_flight_at_end++;
    if (G.iv_count)
        iv_emit();
    uv_walk(G.loop, close_walk, NULL);
}

/* ---- output --------------------------------------------------------------- */

static void json_num(const char *key, double v, const char *sep)
{
    if (v < 0 || isnan(v))
        printf("\"%s\": null%s", key, sep);
    else
        printf("\"%s\": %.3f%s", key, v, sep);
}

static void report(void)
{
    const uint64_t *t = G.tot.v;
    double dur = G.duration;
    uint64_t responses = t[C_OK] + t[C_SHED] + t[C_OTHER];
    uint64_t completed = responses + t[C_ERR] + t[C_TMO];
    uint64_t admitted = completed - t[C_SHED];
    double success = admitted ? (double)t[C_OK] / (double)admitted : -1;
    double shed_frac = t[C_SENT] ? (double)t[C_SHED] / (double)t[C_SENT] : 0;
    static const char *const pname[] = {"p50", "p90", "p99", "p99.9", "max", "mean"};
    double p[6] = {h_pct(&G.lat, 50), h_pct(&G.lat, 90), h_pct(&G.lat, 99), h_pct(&G.lat, 99.9),
                   G.lat.count ? (double)G.lat.max / 1000.0 : -1,
                   G.lat.count ? G.lat.sum / (double)G.lat.count / 1000.0 : -1};
    double goodput = (double)G.ok_window / dur;
    if (!G.json) {
        printf("%s: %s arrivals at %.1f req/s, %.1f s measured after %.1f s warm-up\n", G.url,
               G.poisson ? "poisson" : "uniform", G.rate, dur, G.warmup);
        printf("sent %" PRIu64 "  2xx %" PRIu64 "  503 %" PRIu64 "  other %" PRIu64
               "  errors %" PRIu64 "  timeouts %" PRIu64 "  client_dropped %" PRIu64
               "  in_flight_at_end %" PRIu64 "\n",
               t[C_SENT], t[C_OK], t[C_SHED], t[C_OTHER], t[C_ERR], t[C_TMO], t[C_DROP],
               G.in_flight_at_end);
        char sr[32] = "n/a";
        if (success >= 0)
            snprintf(sr, sizeof sr, "%.4f%%", success * 100);
        printf("goodput %.1f req/s  admitted success %s  shed %.1f req/s (%.2f%%)\n2xx latency ms:",
               goodput, sr, (double)t[C_SHED] / dur, shed_frac * 100);
        for (int i = 0; i < 6; i++)
            printf(p[i] < 0 ? " %s -" : " %s %.3f", pname[i], p[i]);
        printf("\nconnections opened %" PRIu64 ", peak %u\n", G.opened, G.peak_conns);
        if (G.nseries)
            printf("%8s %7s %7s %7s %7s %7s %7s %7s %9s %9s\n", "t", "sent", "ok", "shed", "other",
                   "errors", "tmo", "dropped", "p50 ms", "p99 ms");
        for (unsigned i = 0; i < G.nseries; i++) {
            const interval_t *s = &G.series[i];
            printf("%8.2f", s->t);
            for (int k = 0; k < C_N; k++)
                printf(" %7" PRIu64, s->c.v[k]);
            printf(" %9.3f %9.3f\n", s->p50, s->p99);
        }
        return;
    }
    printf("{\"url\": \"%s\", \"arrival\": \"%s\", \"rate\": %.3f, \"duration_s\": %.3f, "
           "\"warmup_s\": %.3f, \"timeout_ms\": %u, \"max_connections\": %u,\n",
           G.url, G.poisson ? "poisson" : "uniform", G.rate, dur, G.warmup, G.timeout_ms,
           G.max_conns);
    printf(" \"totals\": {\"sent\": %" PRIu64 ", \"completed\": %" PRIu64 ", \"responses\": %" PRIu64
           ", \"2xx\": %" PRIu64 ", \"503\": %" PRIu64 ", \"other_status\": %" PRIu64
           ", \"errors\": %" PRIu64 ", \"timeouts\": %" PRIu64 ", \"client_dropped\": %" PRIu64
           ", \"in_flight_at_end\": %" PRIu64 "},\n",
           t[C_SENT], completed, responses, t[C_OK], t[C_SHED], t[C_OTHER], t[C_ERR], t[C_TMO],
           t[C_DROP], G.in_flight_at_end);
    printf(" \"connections\": {\"opened\": %" PRIu64 ", \"peak\": %u},\n ", G.opened, G.peak_conns);
    json_num("offered_rps", (double)(t[C_SENT] + t[C_DROP]) / dur, ", ");
    json_num("sent_rps", (double)t[C_SENT] / dur, ", ");
    json_num("goodput_rps", goodput, ", ");
    json_num("admitted_success_rate", success, ", ");
    json_num("shed_rps", (double)t[C_SHED] / dur, ", ");
    json_num("shed_fraction", shed_frac, ",\n \"latency_ms\": {");
    for (int i = 0; i < 6; i++)
        json_num(pname[i], p[i], i < 5 ? ", " : "},\n \"series\": [");
    static const char *const cname[] = {"sent", "ok", "shed", "other", "errors", "timeouts",
                                        "client_dropped"};
    for (unsigned i = 0; i < G.nseries; i++) {
        const interval_t *s = &G.series[i];
        printf("%s\n  {\"t\": %.3f", i ? "," : "", s->t);
        for (int k = 0; k < C_N; k++)
            printf(", \"%s\": %" PRIu64, cname[k], s->c.v[k]);
        printf(", ");
        json_num("p50", s->p50, ", ");
        json_num("p99", s->p99, "}");
    }
    printf("%s]}\n", G.nseries ? "\n " : "");
}

/* ---- command line ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("Usage: sharp-loadgen --url http://HOST:PORT/PATH --rate R [options]\n"
          "  --rate R                 arrivals per second\n"
          "  --rate-schedule T:R,...  from T seconds after the start (warm-up included) the rate\n"
          "                           is R; before the first step it is --rate (default 0)\n"
          "  --duration S             measured seconds (default 10)\n"
          "  --warmup S               seconds before the measurement, excluded from stats (0)\n"
          "  --arrival poisson|uniform  inter-arrival times (default poisson)\n"
          "  --timeout-ms MS          per-request timeout from the scheduled time (5000)\n"
          "  --max-connections N      connection pool bound (2000)\n"
          "  --interval-ms MS         per-interval series, 0 = none (1000)\n"
          "  --output json|text       (default text)\n"
          "  --seed N                 random seed for Poisson arrivals\n",
          f);
}

static int parse_url(const char *url)
{
    char host[256], port[16] = "80";
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *hp = url + 7, *path = strchr(hp, '/');
    size_t hl = path ? (size_t)(path - hp) : strlen(hp);
    if (!hl || hl >= sizeof host)
        return -1;
    memcpy(host, hp, hl);
    host[hl] = 0;
    char *colon = strchr(host, ':');
    if (colon) {
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    memcpy(&G.addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    size_t n = strlen(url) + 64;
    G.request = malloc(n);
    G.request_len = (size_t)snprintf(G.request, n,
                                     "GET %s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: sharp-loadgen\r\n\r\n",
                                     path ? path : "/", (int)hl, hp);
    return 0;
}

static int parse_schedule(const char *s)
{
    unsigned cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == ',';
    G.sched_t = calloc(cap, sizeof *G.sched_t);
    G.sched_r = calloc(cap, sizeof *G.sched_r);
    while (*s) {
        char *end;
        double t = strtod(s, &end);
        if (end == s || *end != ':' || t < 0)
            return -1;
        s = end + 1;
        double r = strtod(s, &end);
        if (end == s || r < 0 || (*end && *end != ','))
            return -1;
        if (G.nsched && t < G.sched_t[G.nsched - 1])
            return -1;
        G.sched_t[G.nsched] = t;
        G.sched_r[G.nsched++] = r;
        s = *end ? end + 1 : end;
    }
    return G.nsched ? 0 : -1;
}

static int num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},      {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'w'},
        {"rate-schedule", required_argument, NULL, 's'},
        {"interval-ms", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},   {"timeout-ms", required_argument, NULL, 't'},
        {"max-connections", required_argument, NULL, 'm'},
        {"arrival", required_argument, NULL, 'a'},  {"seed", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    G.duration = 10;
    G.interval_ms = 1000;
    G.timeout_ms = 5000;
    G.max_conns = 2000;
    G.poisson = true;
    G.seed = 0;
    bool have_rate = false;
    int o;
    double v;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (o) {
        case 'u': G.url = optarg; break;
        case 'r': bad = num(optarg, 0, 1e7, &G.rate); have_rate = true; break;
        case 'd': bad = num(optarg, 0.001, 1e6, &G.duration); break;
        case 'w': bad = num(optarg, 0, 1e6, &G.warmup); break;
        case 's': bad = parse_schedule(optarg); break;
        case 'i': bad = num(optarg, 0, 3.6e6, &v); G.interval_ms = (unsigned)v; break;
        case 't': bad = num(optarg, 1, 3.6e6, &v); G.timeout_ms = (unsigned)v; break;
        case 'm': bad = num(optarg, 1, 1e6, &v); G.max_conns = (unsigned)v; break;
        case 'S': bad = num(optarg, 0, 1.8e19, &v); G.seed = (uint64_t)v; break;
        case 'o': G.json = !strcmp(optarg, "json"); bad = !G.json && strcmp(optarg, "text"); break;
        case 'a': G.poisson = !strcmp(optarg, "poisson"); bad = !G.poisson && strcmp(optarg, "uniform"); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            const char *name = "?";
            for (const struct option *op = opts; op->name; op++)
                if (op->val == o)
                    name = op->name;
            fprintf(stderr, "sharp-loadgen: bad value for --%s: '%s'\n", name, optarg);
            return 2;
        }
    }
    if (!G.url || (!have_rate && !G.nsched)) {
        usage(stderr);
        return 2;
    }
    if (parse_url(G.url) < 0) {
        fprintf(stderr, "sharp-loadgen: cannot use url '%s' (http://HOST:PORT/PATH)\n", G.url);
        return 2;
    }
    if (!G.seed)
        G.seed = uv_hrtime() | 1;

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    settings.on_message_begin = on_message_begin;
    settings.on_headers_complete = on_headers_complete;
    settings.on_message_complete = on_message_complete;

    G.loop = uv_default_loop();
    G.fl_head.next = G.fl_head.prev = &G.fl_head;
    G.idle.next = G.idle.prev = &G.idle;
    G.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (G.tfd < 0) {
        perror("sharp-loadgen: timerfd_create");
        return 1;
    }
    if (G.interval_ms) {
        double n = ceil(G.duration * 1000.0 / G.interval_ms);
        G.iv_count = n < 1 ? 1 : (unsigned)n;
        G.series = calloc(G.iv_count, sizeof *G.series);
    }
    uv_poll_init(G.loop, &G.arrival_poll, G.tfd);
    uv_timer_init(G.loop, &G.sweep);
    uv_signal_init(G.loop, &G.sigint);
    uv_signal_init(G.loop, &G.sigterm);
    uv_signal_start(&G.sigint, on_signal, SIGINT);
    uv_signal_start(&G.sigterm, on_signal, SIGTERM);

    G.start = uv_hrtime();
    G.warm_end = G.start + (uint64_t)(G.warmup * NS_PER_S);
    G.end = G.warm_end + (uint64_t)(G.duration * NS_PER_S);
    G.iv_end = G.warm_end + (uint64_t)G.interval_ms * 1000000u;
    G.next = (double)G.start;
    if (rate_at(0) <= 0)
        advance();
    uv_poll_start(&G.arrival_poll, UV_READABLE, on_arrival);
    uv_timer_start(&G.sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    arm((uint64_t)G.next);

    uv_run(G.loop, UV_RUN_DEFAULT);
    close(G.tfd);
    report();
    return 0;
}
