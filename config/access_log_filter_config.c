/* access_log_filter_config.c: see access_log_filter_config.h. */
#include "config/access_log_filter_config.h"
#include "config/route_config.h"
#include "runtime.h"

#include <stdio.h>
#include <string.h>

typedef Envoy__Config__Accesslog__V3__AccessLogFilter alf_pb_t;

static sharp_alf_t *build(const alf_pb_t *pb, const char *path, char *err, size_t errlen,
                          int depth);

static bool comparison(const Envoy__Config__Accesslog__V3__ComparisonFilter *c, const char *path,
                       sharp_alf_t *f, char *err, size_t errlen)
{
    if (!c) {
        snprintf(err, errlen, "%s.comparison: is required", path);
        return false;
    }
    switch (c->op) {
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__EQ:
        f->op = SHARP_ALF_EQ;
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE:
        f->op = SHARP_ALF_GE;
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE:
        f->op = SHARP_ALF_LE;
        break;
    default:
        snprintf(err, errlen, "%s.comparison.op: value %d is not a defined value", path,
                 (int)c->op);
        return false;
    }
    /* Without runtime layers the runtime key never overrides the default. */
    f->value = c->value ? c->value->default_value : 0;
    return true;
}

static bool children(const alf_pb_t *const *v, size_t n, const char *path, sharp_alf_t *f,
                     char *err, size_t errlen, int depth)
{
    if (n < 2) {
        snprintf(err, errlen, "%s.filters: needs at least 2 items", path);
        return false;
    }
    f->children = sharp_calloc(n, sizeof *f->children);
    char p[1024];
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s.filters[%zu]", path, i);
        f->children[i] = build(v[i], p, err, errlen, depth + 1);
        if (!f->children[i]) return false;
        f->nchildren++;
    }
    return true;
}

static sharp_alf_t *build(const alf_pb_t *pb, const char *path, char *err, size_t errlen, int depth)
{
    char p[1024];
    if (depth > 64) {
        snprintf(err, errlen, "%s: filters nested more than 64 deep", path);
        return NULL;
    }
    sharp_alf_t *f = sharp_calloc(1, sizeof *f);
    bool ok = true;
    switch (pb->filter_specifier_case) {
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_STATUS_CODE_FILTER:
        f->kind = SHARP_ALF_STATUS_CODE;
        snprintf(p, sizeof p, "%s.status_code_filter", path);
        ok = comparison(pb->status_code_filter->comparison, p, f, err, errlen);
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_DURATION_FILTER:
        f->kind = SHARP_ALF_DURATION;
        snprintf(p, sizeof p, "%s.duration_filter", path);
        ok = comparison(pb->duration_filter->comparison, p, f, err, errlen);
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_NOT_HEALTH_CHECK_FILTER:
        f->kind = SHARP_ALF_NOT_HEALTH_CHECK;
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RUNTIME_FILTER: {
        const Envoy__Config__Accesslog__V3__RuntimeFilter *r = pb->runtime_filter;
        f->kind = SHARP_ALF_RUNTIME;
        f->independent = r->use_independent_randomness;
        f->numerator = 0;
        f->denominator = 100; /* Envoy's default: 0% of 100 */
        if (r->percent_sampled) {
            f->numerator = r->percent_sampled->numerator;
            f->denominator = sharp_fractional_denominator(r->percent_sampled->denominator);
            if (!f->denominator) {
                snprintf(err, errlen,
                         "%s.runtime_filter.percent_sampled.denominator: value %d is not a defined "
                         "value",
                         path, (int)r->percent_sampled->denominator);
                ok = false;
            }
        }
        break;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER:
        f->kind = SHARP_ALF_AND;
        snprintf(p, sizeof p, "%s.and_filter", path);
        ok = children((const alf_pb_t *const *)pb->and_filter->filters, pb->and_filter->n_filters,
                      p, f, err, errlen, depth);
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_OR_FILTER:
        f->kind = SHARP_ALF_OR;
        snprintf(p, sizeof p, "%s.or_filter", path);
        ok = children((const alf_pb_t *const *)pb->or_filter->filters, pb->or_filter->n_filters, p,
                      f, err, errlen, depth);
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_HEADER_FILTER:
        f->kind = SHARP_ALF_HEADER;
        snprintf(p, sizeof p, "%s.header_filter.header", path);
        if (!pb->header_filter->header) {
            snprintf(err, errlen, "%s: is required", p);
            ok = false;
        } else {
            ok = sharp_config_header_matcher(pb->header_filter->header, p, &f->header, err,
                                             errlen) == 0;
        }
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RESPONSE_FLAG_FILTER: {
        const Envoy__Config__Accesslog__V3__ResponseFlagFilter *r = pb->response_flag_filter;
        f->kind = SHARP_ALF_RESPONSE_FLAG;
        f->any_flag = r->n_flags == 0;
        for (size_t i = 0; i < r->n_flags && ok; i++) {
            uint32_t bit = sharp_response_flag_from_str(r->flags[i]);
            if (!bit) {
                snprintf(err, errlen,
                         "%s.response_flag_filter.flags[%zu]: unknown response flag \"%s\"", path,
                         i, r->flags[i]);
                ok = false;
            }
            f->flags |= bit;
        }
        break;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_GRPC_STATUS_FILTER: {
        const Envoy__Config__Accesslog__V3__GrpcStatusFilter *g = pb->grpc_status_filter;
        f->kind = SHARP_ALF_GRPC_STATUS;
        f->exclude = g->exclude;
        for (size_t i = 0; i < g->n_statuses && ok; i++) {
            /* the enum's values are 0..16 (the support table checks "defined") */
            if ((int)g->statuses[i] < 0 || (int)g->statuses[i] > 16) {
                snprintf(err, errlen, "%s.grpc_status_filter.statuses[%zu]: unknown status %d", path, i,
                         (int)g->statuses[i]);
                ok = false;
            } else {
                f->grpc_statuses |= 1u << g->statuses[i];
            }
        }
        break;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_TRACEABLE_FILTER:
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_EXTENSION_FILTER:
        /* refused by the support table before translation; kept for xDS
         * callers that skip it */
        snprintf(err, errlen, "%s: this access log filter is not supported by SHARP", path);
        ok = false;
        break;
    default:
        snprintf(
            err, errlen,
            "%s: one of the filter kinds (status_code_filter, duration_filter, ...) is required",
            path);
        ok = false;
    }
    if (!ok) {
        sharp_alf_free(f);
        return NULL;
    }
    return f;
}

sharp_alf_t *sharp_config_access_log_filter(const alf_pb_t *pb, const char *path, char *err,
                                            size_t errlen)
{
    return build(pb, path, err, errlen, 0);
}
