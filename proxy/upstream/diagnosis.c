/* diagnosis.c: the pure part of the host diagnosis (diagnosis.h): one
 * interval's evidence, the hysteresis, and the cause of an ejection. */
#include "upstream/diagnosis.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const cause_names[SHARP_DIAG_NCAUSES] = {
    [SHARP_DIAG_NONE] = "none",
    [SHARP_DIAG_UNREACHABLE] = "unreachable",
    [SHARP_DIAG_RESETS] = "resets",
    [SHARP_DIAG_PACKET_LOSS] = "packet_loss",
    [SHARP_DIAG_NETWORK_LATENCY] = "network_latency",
    [SHARP_DIAG_APP_ERRORS] = "application_errors",
    [SHARP_DIAG_OVERLOAD] = "overload",
    [SHARP_DIAG_LATENCY] = "latency",
    [SHARP_DIAG_CONNECTION_FAILURES] = "connection_failures",
};

const char *sharp_diag_cause_name(sharp_diag_cause_t c)
{
    return c < SHARP_DIAG_NCAUSES ? cause_names[c] : "none";
}

void sharp_diag_config_defaults(sharp_diag_config_t *cfg)
{
    *cfg = (sharp_diag_config_t){
        .loss_min_rate = 0.01,
        .loss_factor = 3,
        .loss_min_segments = 50,
        .loss_min_retransmits = 3,
        .rtt_factor = 3,
        .rtt_min_us = 5000,
        .min_failures = 3,
        .error_min_share = 0.1,
        .timeout_min_share = 0.1,
        .reset_min_share = 0.05,
        .min_requests = 10,
        .latency_factor = 3,
        .latency_min_us = 20000,
        .overload_factor = 2,
        .overload_rate_factor = 1.5,
        .baseline_intervals = 3,
        .set_intervals = 2,
        .clear_intervals = 3,
    };
}

void sharp_diag_state_init(sharp_diag_state_t *st)
{
    memset(st, 0, sizeof *st);
}

double sharp_diag_median_without(const double *v, size_t n, size_t self)
{
    size_t m = self < n ? n - 1 : n;
    if (!m) return -1;
    /* the k-th of the remaining values is v[k] below self, v[k + 1] from it */
#define AT(k) (self < n && (k) >= self ? v[(k) + 1] : v[k])
    double r = m % 2 ? AT(m / 2) : (AT(m / 2 - 1) + AT(m / 2)) / 2;
#undef AT
    return r;
}

/* ---- wording ---- */

typedef struct {
    char *p;
    size_t n, len;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...)
{
    if (o->len >= o->n) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(o->p + o->len, o->n - o->len, fmt, ap);
    va_end(ap);
    if (k > 0) o->len = SHARP_MIN(o->len + (size_t)k, o->n - 1);
}

/* Microseconds as milliseconds with three significant digits ("0.31 ms",
 * "41.2 ms", "212 ms", "1530 ms"). */
static void put_ms(out_t *o, double us)
{
    double ms = us / 1000;
    if (ms < 0) put(o, "?");
    else if (ms < 10) put(o, "%.2f ms", ms);
    else if (ms < 100) put(o, "%.1f ms", ms);
    else put(o, "%.0f ms", ms);
}

static void put_clean(out_t *o, const sharp_diag_input_t *in)
{
    put(o, in->kernel ? ", network clean" : ", network not observed");
}

static double share(uint64_t part, uint64_t whole)
{
    return whole ? (double)part / (double)whole : 0;
}

/* ---- the evidence ---- */

static bool unreachable(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in, uint64_t *fails)
{
    /* the kernel sees every attempt (health checks' too); without it, the
     * pools' failures and no answer at all. A reset on a connection that
     * got past its SYN is an answer too: a host that resets connections
     * under their handshake's last ACK fails the pools' connects (the
     * reset comes before the connect is reported) but is reachable. */
    uint64_t f = in->kernel ? SHARP_MAX(in->connect_fail, in->cx_fail) : in->cx_fail;
    *fails = f;
    if (f < cfg->min_failures || in->resets) return false;
    return in->kernel ? in->connects == 0 && in->responses == 0 && in->rst_rx == 0 : in->responses == 0;
}

static bool resets(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in, uint64_t *n)
{
    uint64_t r = in->kernel ? SHARP_MAX(in->rst_rx, in->resets) : in->resets;
    *n = r;
    return r >= cfg->min_failures && share(r, r + in->responses) >= cfg->reset_min_share;
}

static bool packet_loss(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in,
                        const sharp_diag_context_t *cx)
{
    if (!in->kernel || in->segs_out < cfg->loss_min_segments || in->retrans < cfg->loss_min_retransmits ||
        in->retrans_rate < 0)
        return false;
    if (in->retrans_rate < cfg->loss_min_rate) return false;
    /* with other hosts to compare, the loss must be the host's own */
    return cx->retrans_rate < 0 || in->retrans_rate >= cfg->loss_factor * cx->retrans_rate;
}

static bool network_latency(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in,
                            const sharp_diag_context_t *cx)
{
    return in->kernel && cfg->rtt_factor > 0 && in->rtt_samples > 0 && in->rtt_us >= cfg->rtt_min_us &&
           cx->rtt_us > 0 && in->rtt_us >= cfg->rtt_factor * cx->rtt_us;
}

static bool app_errors(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in)
{
    return in->resp_5xx >= cfg->min_failures && share(in->resp_5xx, in->responses) >= cfg->error_min_share;
}

static double rate_of(const sharp_diag_input_t *in)
{
    return in->interval_s > 0 ? (double)in->responses / in->interval_s : 0;
}

static bool overload(const sharp_diag_config_t *cfg, const sharp_diag_state_t *st, const sharp_diag_input_t *in)
{
    if (st->base_n < cfg->baseline_intervals || in->responses < cfg->min_requests || in->latency_mean_us < 0)
        return false;
    return in->latency_mean_us >= cfg->latency_min_us &&
           in->latency_mean_us >= cfg->overload_factor * st->base_latency_us &&
           in->in_flight >= cfg->overload_factor * st->base_in_flight &&
           rate_of(in) >= cfg->overload_rate_factor * st->base_rate;
}

static bool slow(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in, const sharp_diag_context_t *cx)
{
    return in->responses >= cfg->min_requests && in->latency_mean_us >= cfg->latency_min_us &&
           cx->latency_us > 0 && in->latency_mean_us >= cfg->latency_factor * cx->latency_us;
}

static bool timing_out(const sharp_diag_config_t *cfg, const sharp_diag_input_t *in)
{
    return in->timeouts >= cfg->min_failures &&
           share(in->timeouts, in->timeouts + in->responses) >= cfg->timeout_min_share;
}

static void word_loss(out_t *o, const sharp_diag_input_t *in, const sharp_diag_context_t *cx)
{
    put(o, "network: packet loss to %s (retransmits %.1f%% vs cluster %.1f%%)", cx->host, 100 * in->retrans_rate,
        cx->retrans_rate > 0 ? 100 * cx->retrans_rate : 0.0);
}

static void word_rtt(out_t *o, const sharp_diag_input_t *in, const sharp_diag_context_t *cx)
{
    put(o, "network: latency to %s (RTT ", cx->host);
    put_ms(o, in->rtt_us);
    put(o, " vs cluster ");
    put_ms(o, cx->rtt_us);
    put(o, ")");
}

static void word_errors(out_t *o, const sharp_diag_input_t *in, const sharp_diag_context_t *cx)
{
    put(o, "application: %s answers 5xx (%.0f%% of %llu answers vs cluster %.0f%%)", cx->host,
        100 * share(in->resp_5xx, in->responses), (unsigned long long)in->responses,
        cx->error_share > 0 ? 100 * cx->error_share : 0.0);
    put_clean(o, in);
}

static void word_timeouts(out_t *o, const sharp_diag_input_t *in, const sharp_diag_context_t *cx)
{
    put(o, "latency: %s not answering in time (%llu of %llu tries timed out)", cx->host,
        (unsigned long long)in->timeouts, (unsigned long long)(in->timeouts + in->responses));
    put_clean(o, in);
}

sharp_diag_cause_t sharp_diag_evaluate(const sharp_diag_config_t *cfg, const sharp_diag_state_t *st,
                                       const sharp_diag_input_t *in, const sharp_diag_context_t *cx, char *text,
                                       size_t n)
{
    out_t o = {text, n, 0};
    if (n) text[0] = '\0';
    uint64_t k;
    if (unreachable(cfg, in, &k)) {
        put(&o, "network: %s unreachable (%llu connect failures, no connection established)", cx->host,
            (unsigned long long)k);
        return SHARP_DIAG_UNREACHABLE;
    }
    if (resets(cfg, in, &k)) {
        /* an interval cut short (the first, or one read early) in tenths */
        put(&o, "network: connection resets from %s (%llu resets, %llu answers in %.*f s)", cx->host,
            (unsigned long long)k, (unsigned long long)in->responses, in->interval_s < 0.95 ? 1 : 0, in->interval_s);
        return SHARP_DIAG_RESETS;
    }
    if (packet_loss(cfg, in, cx)) {
        word_loss(&o, in, cx);
        return SHARP_DIAG_PACKET_LOSS;
    }
    if (network_latency(cfg, in, cx)) {
        word_rtt(&o, in, cx);
        return SHARP_DIAG_NETWORK_LATENCY;
    }
    if (app_errors(cfg, in)) {
        word_errors(&o, in, cx);
        return SHARP_DIAG_APP_ERRORS;
    }
    if (overload(cfg, st, in)) {
        put(&o, "overload: %s latency rising with concurrency (mean ", cx->host);
        put_ms(&o, in->latency_mean_us);
        put(&o, " at %.1f in flight, %.0f req/s; baseline ", in->in_flight, rate_of(in));
        put_ms(&o, st->base_latency_us);
        put(&o, " at %.1f, %.0f req/s)", st->base_in_flight, st->base_rate);
        put_clean(&o, in);
        return SHARP_DIAG_OVERLOAD;
    }
    if (slow(cfg, in, cx)) {
        put(&o, "latency: %s slow (mean ", cx->host);
        put_ms(&o, in->latency_mean_us);
        put(&o, " vs cluster ");
        put_ms(&o, cx->latency_us);
        put(&o, ")");
        put_clean(&o, in);
        return SHARP_DIAG_LATENCY;
    }
    if (timing_out(cfg, in)) {
        word_timeouts(&o, in, cx);
        return SHARP_DIAG_LATENCY;
    }
    return SHARP_DIAG_NONE;
}

/* The baseline follows the host's quiet intervals with enough answers,
 * except those already well above it: a host sliding into trouble does not
 * drag its own reference along. */
static void update_baseline(const sharp_diag_config_t *cfg, sharp_diag_state_t *st, const sharp_diag_input_t *in)
{
    if (in->responses < cfg->min_requests || in->latency_mean_us < 0 || in->interval_s <= 0) return;
    double rate = rate_of(in);
    if (!st->base_n) {
        st->base_latency_us = in->latency_mean_us;
        st->base_rate = rate;
        st->base_in_flight = in->in_flight;
        st->base_n = 1;
        return;
    }
    if (st->base_n >= cfg->baseline_intervals && in->latency_mean_us > 1.5 * st->base_latency_us) return;
    const double a = 0.3;
    st->base_latency_us += a * (in->latency_mean_us - st->base_latency_us);
    st->base_rate += a * (rate - st->base_rate);
    st->base_in_flight += a * (in->in_flight - st->base_in_flight);
    if (st->base_n < UINT32_MAX) st->base_n++;
}

static unsigned set_text(sharp_diag_state_t *st, const char *text)
{
    if (strcmp(st->text, text) == 0) return 0;
    snprintf(st->text, sizeof st->text, "%s", text);
    return SHARP_DIAG_TEXT_CHANGED;
}

unsigned sharp_diag_step(const sharp_diag_config_t *cfg, sharp_diag_state_t *st, const sharp_diag_input_t *in,
                         const sharp_diag_context_t *cx)
{
    char text[SHARP_DIAG_TEXT_MAX];
    sharp_diag_cause_t ev = sharp_diag_evaluate(cfg, st, in, cx, text, sizeof text);
    if (ev == SHARP_DIAG_NONE) update_baseline(cfg, st, in);
    if (st->pinned) {
        /* an ejection on local-origin failures that nothing pinned down
         * yet: the network signal of a later interval (the kernel's counts
         * of the ejecting one come at its end) says what they were */
        if (st->cause != SHARP_DIAG_CONNECTION_FAILURES || ev < SHARP_DIAG_UNREACHABLE ||
            ev > SHARP_DIAG_NETWORK_LATENCY)
            return 0;
        st->cause = ev;
        return SHARP_DIAG_CAUSE_CHANGED | set_text(st, text);
    }
    if (ev == SHARP_DIAG_NONE) {
        st->pending = SHARP_DIAG_NONE;
        st->pending_n = 0;
        if (st->cause == SHARP_DIAG_NONE || ++st->quiet_n < cfg->clear_intervals) return 0;
        st->cause = SHARP_DIAG_NONE;
        st->quiet_n = 0;
        return SHARP_DIAG_CAUSE_CHANGED | set_text(st, "");
    }
    st->quiet_n = 0;
    if (ev == st->cause) { /* the same cause: fresh figures */
        st->pending = SHARP_DIAG_NONE;
        st->pending_n = 0;
        return set_text(st, text);
    }
    if (ev != st->pending) {
        st->pending = ev;
        st->pending_n = 0;
    }
    if (++st->pending_n < cfg->set_intervals) return 0;
    st->cause = ev;
    st->pending = SHARP_DIAG_NONE;
    st->pending_n = 0;
    return SHARP_DIAG_CAUSE_CHANGED | set_text(st, text);
}

unsigned sharp_diag_eject(const sharp_diag_config_t *cfg, sharp_diag_state_t *st, const sharp_diag_input_t *in,
                          const sharp_diag_context_t *cx, sharp_diag_detector_t by, const char *detail)
{
    char text[SHARP_DIAG_TEXT_MAX];
    out_t o = {text, sizeof text, 0};
    text[0] = '\0';
    sharp_diag_cause_t ev = sharp_diag_evaluate(cfg, st, in, cx, text, sizeof text), cause;
    if (!detail) detail = "";
    /* the tries that failed without an answer: connections reset and
     * connects that failed (the kernel's count when it has one). An
     * ejection by 5xx or local-origin failures trips within an interval,
     * often before these reach the interval's shares; but the 5xx the
     * detector counted were SHARP's own replies to them, not the host's
     * answers, so they are the cause when no answer was a 5xx. */
    uint64_t rst = in->kernel ? SHARP_MAX(in->rst_rx, in->resets) : in->resets;
    uint64_t cxf = in->kernel ? SHARP_MAX(in->connect_fail, in->cx_fail) : in->cx_fail;
    bool cut = (by == SHARP_DIAG_BY_ERRORS || by == SHARP_DIAG_BY_LOCAL) && ev != SHARP_DIAG_APP_ERRORS &&
               rst + cxf >= cfg->min_failures && !timing_out(cfg, in);
    /* loss inflates the RTT of the segments sent behind a hole (their ACK
     * waits for its repair), and a full queue both delays and drops, so one
     * interval can read as the other signal. The kernel monitor weighed both
     * against its thresholds over its whole run of intervals and named the
     * one further above; its ejection keeps that name and the run's figures
     * (as its log line does), whatever this interval alone would say. */
    bool other_signal = (by == SHARP_DIAG_BY_KERNEL_LOSS && ev == SHARP_DIAG_NETWORK_LATENCY) ||
                        (by == SHARP_DIAG_BY_KERNEL_RTT && ev == SHARP_DIAG_PACKET_LOSS);
    if (ev >= SHARP_DIAG_UNREACHABLE && ev <= SHARP_DIAG_NETWORK_LATENCY && !other_signal) {
        cause = ev; /* the network explains what the detector saw */
    } else if (cut && rst) {
        /* a connect that fails on an established path ends in a reset too */
        cause = SHARP_DIAG_RESETS;
        o.len = 0;
        put(&o, "network: connection resets from %s (%llu resets", cx->host, (unsigned long long)rst);
        if (cxf) put(&o, ", %llu connect failures", (unsigned long long)cxf);
        put(&o, ", %llu answers; %s)", (unsigned long long)in->responses, detail);
    } else if (cut) {
        cause = SHARP_DIAG_CONNECTION_FAILURES;
        o.len = 0;
        put(&o, "network: connections to %s failing (%llu connect failures, %llu answers; %s)", cx->host,
            (unsigned long long)cxf, (unsigned long long)in->responses, detail);
    } else {
        o.len = 0;
        text[0] = '\0';
        switch (by) {
        case SHARP_DIAG_BY_ERRORS:
            cause = SHARP_DIAG_APP_ERRORS;
            if (ev == SHARP_DIAG_APP_ERRORS) {
                word_errors(&o, in, cx);
            } else if (timing_out(cfg, in)) { /* timeouts count as 504 without split_external_local_origin_errors */
                cause = SHARP_DIAG_LATENCY;
                word_timeouts(&o, in, cx);
            } else {
                put(&o, "application: %s answers 5xx (%s)", cx->host, detail);
                put_clean(&o, in);
            }
            break;
        case SHARP_DIAG_BY_LOCAL:
            if (timing_out(cfg, in)) {
                cause = SHARP_DIAG_LATENCY;
                word_timeouts(&o, in, cx);
            } else {
                cause = SHARP_DIAG_CONNECTION_FAILURES;
                put(&o, "network: connections to %s failing (%s)", cx->host, detail);
            }
            break;
        case SHARP_DIAG_BY_LATENCY:
            if (ev == SHARP_DIAG_OVERLOAD) {
                cause = ev;
                sharp_diag_evaluate(cfg, st, in, cx, text, sizeof text);
            } else {
                cause = SHARP_DIAG_LATENCY;
                put(&o, "latency: %s slow (%s)", cx->host, detail);
                put_clean(&o, in);
            }
            break;
        case SHARP_DIAG_BY_KERNEL_LOSS:
            cause = SHARP_DIAG_PACKET_LOSS;
            put(&o, "network: packet loss to %s (%s)", cx->host, detail);
            break;
        case SHARP_DIAG_BY_KERNEL_RTT:
        default:
            cause = SHARP_DIAG_NETWORK_LATENCY;
            put(&o, "network: latency to %s (%s)", cx->host, detail);
            break;
        }
    }
    unsigned r = cause != st->cause ? SHARP_DIAG_CAUSE_CHANGED : 0;
    st->cause = cause;
    st->pinned = true;
    st->pending = SHARP_DIAG_NONE;
    st->pending_n = st->quiet_n = 0;
    return r | set_text(st, text);
}

void sharp_diag_uneject(sharp_diag_state_t *st)
{
    st->pinned = false;
    st->quiet_n = 0;
}
