/* controller.c: the admission control history, rejection probability and
 * success criteria (see controller.h). */
#include "filters/admission_control/controller.h"
#include "common.h"

#include "envoy/extensions/filters/http/admission_control/v3/admission_control.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define NS_PER_S 1000000000ull

void sharp_admc_history_init(sharp_admc_history_t *h, uint64_t window_s)
{
    *h = (sharp_admc_history_t){.window_s = window_s};
}

void sharp_admc_history_free(sharp_admc_history_t *h)
{
    free(h->ring);
    h->ring = NULL;
    h->cap = h->head = h->len = 0;
}

static sharp_admc_bucket_t *at(sharp_admc_history_t *h, uint32_t i)
{
    return &h->ring[(h->head + i) % h->cap];
}

static void drop_oldest(sharp_admc_history_t *h)
{
    sharp_admc_bucket_t *b = at(h, 0);
    h->total.requests -= b->counts.requests;
    h->total.successes -= b->counts.successes;
    h->head = (h->head + 1) % h->cap;
    h->len--;
}

static void push(sharp_admc_history_t *h, uint64_t now_ns)
{
    if (h->len == h->cap) {
        /* Buckets are at least a second apart and younger than the window,
         * so the ring never holds more than window_s + 1 of them; it grows
         * only as far as the traffic spreads over the window. */
        uint32_t ncap = h->cap ? h->cap * 2 : 4;
        sharp_admc_bucket_t *n = sharp_calloc(ncap, sizeof *n);
        for (uint32_t i = 0; i < h->len; i++) n[i] = *at(h, i);
        free(h->ring);
        h->ring = n;
        h->cap = ncap;
        h->head = 0;
    }
    *at(h, h->len) = (sharp_admc_bucket_t){.start_ns = now_ns};
    h->len++;
}

static uint64_t age(uint64_t now_ns, uint64_t start_ns)
{
    return now_ns > start_ns ? now_ns - start_ns : 0;
}

/* Envoy's maybeUpdateHistoricalData. */
static void update(sharp_admc_history_t *h, uint64_t now_ns)
{
    /* in whole seconds: a window of centuries in nanoseconds overflows */
    while (h->len && age(now_ns, at(h, 0)->start_ns) / NS_PER_S >= h->window_s) drop_oldest(h);
    if (!h->len || age(now_ns, at(h, h->len - 1)->start_ns) >= NS_PER_S) push(h, now_ns);
}

void sharp_admc_record(sharp_admc_history_t *h, uint64_t now_ns, bool success)
{
    update(h, now_ns);
    sharp_admc_bucket_t *b = at(h, h->len - 1);
    b->counts.requests++;
    h->total.requests++;
    if (success) {
        b->counts.successes++;
        h->total.successes++;
    }
}

sharp_admc_counts_t sharp_admc_counts(sharp_admc_history_t *h, uint64_t now_ns)
{
    update(h, now_ns);
    return h->total;
}

uint32_t sharp_admc_average_rps(const sharp_admc_history_t *h, uint64_t now_ns)
{
    if (!h->len || !h->total.requests) return 0;
    uint64_t secs = age(now_ns, h->ring[h->head].start_ns) / NS_PER_S;
    if (secs < h->window_s) secs = h->window_s;
    if (!secs) secs = 1; /* a window under a second: Envoy would divide by zero */
    return (uint32_t)(h->total.requests / secs);
}

double sharp_admc_probability(double total, double successes, double sr, double aggression, double max_p)
{
    double p = (total - successes / sr) / (total + 1);
    /* Envoy raises a negative value to the power too and gets NaN, which
     * rejects nothing: the same as 0 */
    if (!(p > 0)) return 0;
    if (aggression != 1.0) p = pow(p, 1.0 / aggression);
    return p < max_p ? p : max_p;
}

bool sharp_admc_reject(double p, uint64_t random)
{
    const uint64_t accuracy = 10000;
    return (double)accuracy * (p > 0 ? p : 0) > (double)(random % accuracy);
}

int sharp_admc_criteria_from_proto(
    const Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria *pb,
    sharp_admc_criteria_t *out, char *err, size_t errlen)
{
    *out = (sharp_admc_criteria_t){.grpc_ok = SHARP_ADMC_GRPC_DEFAULT_OK};
    if (pb && pb->http_criteria) {
        const Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria__HttpCriteria
            *hc = pb->http_criteria;
        if (!hc->n_http_success_status) {
            snprintf(err, errlen, "http_criteria.http_success_status: must have at least 1 item");
            return -1;
        }
        out->ranges = sharp_calloc(hc->n_http_success_status, sizeof *out->ranges);
        for (size_t i = 0; i < hc->n_http_success_status; i++) {
            const Envoy__Type__V3__Int32Range *r = hc->http_success_status[i];
            int32_t start = r ? r->start : 0, end = r ? r->end : 0;
            /* Envoy's validHttpRange */
            if (!(start <= end && start < 600 && start >= 100 && end <= 600 && end >= 100)) {
                snprintf(err, errlen, "invalid HTTP range: [%d, %d)", start, end);
                sharp_admc_criteria_free(out);
                return -1;
            }
            out->ranges[out->nranges][0] = start;
            out->ranges[out->nranges][1] = end;
            out->nranges++;
        }
    }
    if (pb && pb->grpc_criteria) {
        const Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria__GrpcCriteria
            *gc = pb->grpc_criteria;
        if (!gc->n_grpc_success_status) {
            snprintf(err, errlen, "grpc_criteria.grpc_success_status: must have at least 1 item");
            sharp_admc_criteria_free(out);
            return -1;
        }
        out->grpc_ok = 0;
        for (size_t i = 0; i < gc->n_grpc_success_status; i++) {
            uint32_t code = gc->grpc_success_status[i];
            if (code > 16) {
                snprintf(err, errlen, "invalid gRPC code %u", code);
                sharp_admc_criteria_free(out);
                return -1;
            }
            out->grpc_ok |= 1u << code;
        }
    }
    return 0;
}

void sharp_admc_criteria_free(sharp_admc_criteria_t *c)
{
    free(c->ranges);
    c->ranges = NULL;
    c->nranges = 0;
}

bool sharp_admc_http_success(const sharp_admc_criteria_t *c, uint64_t status)
{
    if (!c->nranges) return status < 500;
    for (uint32_t i = 0; i < c->nranges; i++)
        if ((uint64_t)c->ranges[i][0] <= status && status < (uint64_t)c->ranges[i][1]) return true;
    return false;
}

bool sharp_admc_grpc_success(const sharp_admc_criteria_t *c, int64_t code)
{
    return code >= 0 && code <= 16 && (c->grpc_ok >> code) & 1u;
}
