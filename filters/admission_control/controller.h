/* controller.h: the admission control filter's arithmetic (Envoy's
 * ThreadLocalControllerImpl, shouldRejectRequest and
 * SuccessCriteriaEvaluator), free of the stream so it runs on a fake clock.
 *
 * A history counts requests and successes over the sampling window in
 * buckets of one second, as Envoy's deque does: a request opens a new
 * bucket when the newest one is a second old or more, and buckets whose
 * start is a whole window old are dropped before the counts are read or
 * added to. Each worker owns one history (no locks, no shared cache
 * lines); nothing else touches it. */
#ifndef SHARP_FILTERS_ADMISSION_CONTROL_CONTROLLER_H
#define SHARP_FILTERS_ADMISSION_CONTROL_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sharp_admc_counts {
    uint32_t requests;
    uint32_t successes;
} sharp_admc_counts_t;

typedef struct sharp_admc_bucket {
    uint64_t start_ns;
    sharp_admc_counts_t counts;
} sharp_admc_bucket_t;

typedef struct sharp_admc_history {
    uint64_t window_s;          /* the sampling window in whole seconds */
    sharp_admc_bucket_t *ring;  /* oldest at head; at most window_s + 1 live buckets */
    uint32_t cap, head, len;
    sharp_admc_counts_t total;  /* the sum of the live buckets */
} sharp_admc_history_t;

void sharp_admc_history_init(sharp_admc_history_t *h, uint64_t window_s);
void sharp_admc_history_free(sharp_admc_history_t *h);
/* recordSuccess/recordFailure at `now_ns` (a monotonic clock). */
void sharp_admc_record(sharp_admc_history_t *h, uint64_t now_ns, bool success);
/* requestCounts(): drops stale buckets first. */
sharp_admc_counts_t sharp_admc_counts(sharp_admc_history_t *h, uint64_t now_ns);
/* averageRps(): the window's requests over max(window, age of the oldest
 * bucket) in whole seconds (at least 1), 0 without requests. Like Envoy's
 * it drops nothing, so it may count buckets the next read drops. */
uint32_t sharp_admc_average_rps(const sharp_admc_history_t *h, uint64_t now_ns);

/* The rejection probability:
 *   min(max_p, max(0, (total - successes / sr) / (total + 1)) ^ (1 / aggression))
 * with sr and max_p as fractions (sr_threshold / 100, capped at 1) and
 * aggression at least 1. */
double sharp_admc_probability(double total, double successes, double sr, double aggression, double max_p);
/* Envoy's draw with four significant figures: 10000 * p > random % 10000. */
bool sharp_admc_reject(double p, uint64_t random);

/* What counts as a success. */
typedef struct sharp_admc_criteria {
    int32_t (*ranges)[2]; /* [start, end) of successful HTTP statuses */
    uint32_t nranges;     /* 0: the default, every status below 500 */
    uint32_t grpc_ok;     /* bit k: gRPC status k is a success */
} sharp_admc_criteria_t;

/* The default gRPC successes: Ok, Cancelled, Unknown, InvalidArgument,
 * NotFound, AlreadyExists, PermissionDenied, FailedPrecondition,
 * OutOfRange, Unimplemented, Unauthenticated. */
#define SHARP_ADMC_GRPC_DEFAULT_OK                                                                             \
    ((1u << 0) | (1u << 1) | (1u << 2) | (1u << 3) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 9) | (1u << 11) | \
     (1u << 12) | (1u << 16))

struct Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria;
/* Builds the criteria (NULL: the defaults); -1 and Envoy's message in err
 * for a range outside [100, 600] or with start > end, or a gRPC code above
 * 16. */
int sharp_admc_criteria_from_proto(
    const struct Envoy__Extensions__Filters__Http__AdmissionControl__V3__AdmissionControl__SuccessCriteria *pb,
    sharp_admc_criteria_t *out, char *err, size_t errlen);
void sharp_admc_criteria_free(sharp_admc_criteria_t *c);
bool sharp_admc_http_success(const sharp_admc_criteria_t *c, uint64_t status);
/* code: a grpc-status; -1 (a value that is not a number, Envoy's
 * InvalidCode) and codes above 16 are failures. */
bool sharp_admc_grpc_success(const sharp_admc_criteria_t *c, int64_t code);

#endif
