/* filter.c: envoy.filters.http.admission_control, Envoy's admission control
 * filter (client-side throttling from the Google SRE book).
 *
 * decode_headers rejects a request with the probability the worker's
 * history gives (controller.h) once its average rate reaches rps_threshold:
 * a 503 local reply with an empty body and the details
 * "denied_by_admission_control", and no response flag, as Envoy sends it.
 * Admitted requests are sampled when their response headers pass on the
 * way out (a local reply of a later filter, such as the router's 503 for
 * an upstream that failed, included): a gRPC response (content-type
 * application/grpc and :status 200, or a headers-only response with
 * grpc-status) by its grpc-status, from the trailers when the headers have
 * none, any other by its :status. Rejected requests, health checks and
 * requests that pass while the filter is disabled are not sampled; neither
 * is a stream reset before its response (as in Envoy).
 *
 * Each worker has its own history, as Envoy keeps one per thread: the
 * filter touches no shared state on the request path. The numbers are read
 * from the runtime per request (runtime_key, else default_value). */
#include "filters/admission_control/filter.h"
#include "filters/admission_control/controller.h"
#include "http/grpc.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/admission_control/v3/admission_control.pb-c.h"

#include <stdio.h>
#include <stdlib.h>

typedef Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl admc_pb_t;

/* A runtime-overridable number: runtime_key's value, else the default. */
typedef struct admc_knob {
    double value;
    char *key; /* NULL: the default always applies */
} admc_knob_t;

/* One worker's history on a cache line of its own. */
typedef struct admc_slot {
    _Alignas(64) sharp_admc_history_t h;
} admc_slot_t;

typedef struct admc_config {
    bool enabled;
    char *enabled_key;
    admc_knob_t aggression, sr_threshold, rps_threshold, max_rejection_probability;
    sharp_admc_criteria_t criteria;
    admc_slot_t *slots; /* [worker index + 1] */
    uint32_t nslots;
    sharp_stat_id_t rq_rejected, rq_success, rq_failure;
} admc_config_t;

typedef struct admc_state {
    bool sample;          /* the response is to be sampled */
    bool expect_trailers; /* a gRPC response without grpc-status in its headers */
} admc_state_t;

/* Envoy's defaults. */
#define DEFAULT_AGGRESSION 1.0
#define DEFAULT_SR_THRESHOLD 95.0
#define DEFAULT_RPS_THRESHOLD 0
#define DEFAULT_MAX_REJECTION_PROBABILITY 80.0
#define DEFAULT_SAMPLING_WINDOW_S 30

static void knob(admc_knob_t *k, double def, const char *key)
{
    k->value = def;
    k->key = key && key[0] ? sharp_strdup(key) : NULL;
}

/* Runtime::Double */
static double runtime_double(const admc_knob_t *k)
{
    return sharp_runtime_get_double(k->key, k->value);
}

/* Runtime::Percentage: the runtime's value only within [0, 100] */
static double runtime_percent(const admc_knob_t *k)
{
    double v = sharp_runtime_get_double(k->key, k->value);
    return v >= 0.0 && v <= 100.0 ? v : k->value;
}

/* Runtime::UInt32 */
static uint32_t runtime_u32(const admc_knob_t *k)
{
    uint64_t v = sharp_runtime_get_u64(k->key, (uint64_t)k->value);
    return v <= UINT32_MAX ? (uint32_t)v : (uint32_t)k->value;
}

static void destroy_config(void *p)
{
    admc_config_t *c = p;
    if (!c) return;
    for (uint32_t i = 0; i < c->nslots; i++) sharp_admc_history_free(&c->slots[i].h);
    free(c->slots);
    sharp_admc_criteria_free(&c->criteria);
    free(c->enabled_key);
    free(c->aggression.key);
    free(c->sr_threshold.key);
    free(c->rps_threshold.key);
    free(c->max_rejection_probability.key);
    free(c);
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err, size_t errlen)
{
    const admc_pb_t *pb = (const void *)msg;
    if (!pb || pb->evaluation_criteria_case !=
                   ENVOY__EXTENSIONS__FILTERS__HTTP__ADMISSION_CONTROL__V3__ADMISSION_CONTROL__EVALUATION_CRITERIA_SUCCESS_CRITERIA) {
        snprintf(err, errlen, "evaluation_criteria: success_criteria is required");
        return NULL;
    }
    /* an unset default_value is 0 to Envoy too */
    if (pb->sr_threshold && (!pb->sr_threshold->default_value || pb->sr_threshold->default_value->value < 1.0)) {
        snprintf(err, errlen, "Success rate threshold cannot be less than 1.0%%.");
        return NULL;
    }
    admc_config_t *c = sharp_calloc(1, sizeof *c);
    if (sharp_admc_criteria_from_proto(pb->success_criteria, &c->criteria, err, errlen) < 0) {
        free(c);
        return NULL;
    }
    /* RuntimeFeatureFlag: default_value true when the message or its
     * default_value is unset */
    c->enabled = !pb->enabled || !pb->enabled->default_value || pb->enabled->default_value->value;
    if (pb->enabled && pb->enabled->runtime_key && pb->enabled->runtime_key[0])
        c->enabled_key = sharp_strdup(pb->enabled->runtime_key);
    if (pb->aggression)
        knob(&c->aggression, pb->aggression->default_value, pb->aggression->runtime_key);
    else
        knob(&c->aggression, DEFAULT_AGGRESSION, NULL);
    if (pb->sr_threshold)
        knob(&c->sr_threshold, pb->sr_threshold->default_value ? pb->sr_threshold->default_value->value : 0,
             pb->sr_threshold->runtime_key);
    else
        knob(&c->sr_threshold, DEFAULT_SR_THRESHOLD, NULL);
    if (pb->rps_threshold)
        knob(&c->rps_threshold, pb->rps_threshold->default_value, pb->rps_threshold->runtime_key);
    else
        knob(&c->rps_threshold, DEFAULT_RPS_THRESHOLD, NULL);
    if (pb->max_rejection_probability)
        knob(&c->max_rejection_probability,
             pb->max_rejection_probability->default_value ? pb->max_rejection_probability->default_value->value : 0,
             pb->max_rejection_probability->runtime_key);
    else
        knob(&c->max_rejection_probability, DEFAULT_MAX_REJECTION_PROBABILITY, NULL);
    /* whole seconds, rounded down as Envoy's PROTOBUF_GET_MS_OR_DEFAULT / 1000 */
    uint64_t window_s = DEFAULT_SAMPLING_WINDOW_S;
    if (pb->sampling_window) {
        int64_t ms = pb->sampling_window->seconds * 1000 + pb->sampling_window->nanos / 1000000;
        window_s = ms > 0 ? (uint64_t)ms / 1000 : 0;
    }
    c->nslots = ctx->server->opts.concurrency + 1;
    c->slots = aligned_alloc(_Alignof(admc_slot_t), c->nslots * sizeof *c->slots);
    if (!c->slots) abort();
    for (uint32_t i = 0; i < c->nslots; i++) sharp_admc_history_init(&c->slots[i].h, window_s);
    sharp_stats_t *s = ctx->server->stats;
    c->rq_rejected = sharp_stats_counterf(s, "http.%s.admission_control.rq_rejected", ctx->stat_prefix);
    c->rq_success = sharp_stats_counterf(s, "http.%s.admission_control.rq_success", ctx->stat_prefix);
    c->rq_failure = sharp_stats_counterf(s, "http.%s.admission_control.rq_failure", ctx->stat_prefix);
    return c;
}

static sharp_admc_history_t *history(const admc_config_t *c, sharp_worker_t *w)
{
    uint32_t i = w->index + 1;
    return i < c->nslots ? &c->slots[i].h : NULL;
}

/* Envoy's shouldRejectRequest. */
static bool should_reject(const admc_config_t *c, sharp_admc_history_t *h, uint64_t now, uint64_t random)
{
    sharp_admc_counts_t n = sharp_admc_counts(h, now);
    double sr = runtime_percent(&c->sr_threshold);
    if (sr > 100.0) sr = 100.0;
    double aggression = runtime_double(&c->aggression);
    if (!(aggression >= 1.0)) aggression = 1.0;
    double p = sharp_admc_probability(n.requests, n.successes, sr / 100.0, aggression,
                                      runtime_percent(&c->max_rejection_probability) / 100.0);
    return sharp_admc_reject(p, random);
}

static sharp_filter_status_t admc_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    (void)h;
    (void)end_stream;
    const admc_config_t *c = f->config;
    admc_state_t *st = f->state;
    if (!sharp_runtime_get_bool(c->enabled_key, c->enabled) || sharp_stream_info(f->stream)->health_check)
        return SHARP_FILTER_CONTINUE;
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    sharp_admc_history_t *hist = history(c, w);
    if (!hist) return SHARP_FILTER_CONTINUE;
    st->sample = true;
    uint64_t now = sharp_now_ns();
    if (sharp_admc_average_rps(hist, now) < runtime_u32(&c->rps_threshold)) return SHARP_FILTER_CONTINUE;
    if (should_reject(c, hist, now, sharp_worker_random(w))) {
        /* not sampled: the rejections would keep the success rate down
         * after the upstream recovered */
        st->sample = false;
        sharp_counter_inc(w->stats, c->rq_rejected);
        sharp_stream_send_local_reply_body(f, 503, "", 0, 0, "denied_by_admission_control", NULL);
        return SHARP_FILTER_STOP;
    }
    return SHARP_FILTER_CONTINUE;
}

static void record(sharp_filter_t *f, bool success)
{
    const admc_config_t *c = f->config;
    sharp_worker_t *w = sharp_stream_worker(f->stream);
    sharp_admc_history_t *hist = history(c, w);
    if (!hist) return;
    sharp_admc_record(hist, sharp_now_ns(), success);
    sharp_counter_inc(w->stats, success ? c->rq_success : c->rq_failure);
}

/* Envoy's Grpc::Common::getGrpcStatus without user-defined codes: absent
 * (false), a code 0..16, or -1 for anything else (InvalidCode). */
static bool grpc_status(const sharp_headers_t *h, int64_t *code)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, "grpc-status", &v) || !v.len) return false;
    uint64_t n = 0;
    *code = -1;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9' || n > 16) return true;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    if (n <= 16) *code = (int64_t)n;
    return true;
}

static sharp_filter_status_t admc_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end_stream)
{
    const admc_config_t *c = f->config;
    admc_state_t *st = f->state;
    if (!st->sample) return SHARP_FILTER_CONTINUE;
    st->sample = false;
    uint32_t status = sharp_headers_status(h);
    int64_t code;
    /* Envoy's isGrpcResponseHeaders */
    bool grpc = end_stream ? sharp_headers_get_cstr(h, "grpc-status", NULL)
                           : status == 200 && sharp_grpc_is_request(h);
    if (grpc) {
        if (!grpc_status(h, &code)) {
            st->expect_trailers = true;
            return SHARP_FILTER_CONTINUE;
        }
        record(f, sharp_admc_grpc_success(&c->criteria, code));
    } else {
        record(f, sharp_admc_http_success(&c->criteria, status));
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t admc_encode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    const admc_config_t *c = f->config;
    admc_state_t *st = f->state;
    if (!st->expect_trailers) return SHARP_FILTER_CONTINUE;
    st->expect_trailers = false;
    int64_t code;
    record(f, grpc_status(t, &code) && sharp_admc_grpc_success(&c->criteria, code));
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_admission_control_filter = {
    .name = "envoy.filters.http.admission_control",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl",
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(admc_state_t),
    .decode_headers = admc_decode_headers,
    .encode_headers = admc_encode_headers,
    .encode_trailers = admc_encode_trailers,
};
