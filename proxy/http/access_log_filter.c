/* access_log_filter.c: see access_log_filter.h. */
#include "http/access_log_filter.h"
#include "http/grpc.h"

static bool compare(const sharp_alf_t *f, uint64_t lhs)
{
    switch (f->op) {
    case SHARP_ALF_GE:
        return lhs >= f->value;
    case SHARP_ALF_LE:
        return lhs <= f->value;
    case SHARP_ALF_EQ:
    default:
        return lhs == f->value;
    }
}

/* Envoy's UUID request id extension: the first 8 characters of
 * x-request-id read as hex, or nothing. */
static bool request_id_integer(const sharp_headers_t *h, uint64_t *out)
{
    sharp_str_t v;
    if (!h || !sharp_headers_get_cstr(h, "x-request-id", &v) || v.len < 8) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < 8; i++) {
        char c = v.p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return false;
        x = x * 16 + d;
    }
    *out = x;
    return true;
}

bool sharp_alf_evaluate(const sharp_alf_t *f, const sharp_stream_info_t *si,
                        sharp_alf_random_fn rnd, void *rnd_ctx)
{
    switch (f->kind) {
    case SHARP_ALF_STATUS_CODE:
        return compare(f, si->response_code);
    case SHARP_ALF_DURATION: {
        if (!si->start_ns) return false;
        uint64_t end = si->end_ns ? si->end_ns : sharp_now_ns();
        return compare(f, end > si->start_ns ? (end - si->start_ns) / 1000000 : 0);
    }
    case SHARP_ALF_NOT_HEALTH_CHECK:
        return !si->health_check;
    case SHARP_ALF_RUNTIME: {
        uint64_t r;
        if (f->independent || !request_id_integer(si->request_headers, &r))
            r = rnd(rnd_ctx);
        else
            r %= f->denominator;
        /* Envoy's featureEnabled with the default numerator (no runtime
         * override): capped at the denominator */
        uint64_t n = SHARP_MIN(f->numerator, f->denominator);
        return r % f->denominator < n;
    }
    case SHARP_ALF_AND:
        for (uint32_t i = 0; i < f->nchildren; i++)
            if (!sharp_alf_evaluate(f->children[i], si, rnd, rnd_ctx)) return false;
        return true;
    case SHARP_ALF_OR:
        for (uint32_t i = 0; i < f->nchildren; i++)
            if (sharp_alf_evaluate(f->children[i], si, rnd, rnd_ctx)) return true;
        return false;
    case SHARP_ALF_HEADER: {
        if (si->request_headers) return sharp_header_matcher_match(&f->header, si->request_headers);
        sharp_headers_t empty;
        sharp_headers_init(&empty);
        bool m = sharp_header_matcher_match(&f->header, &empty);
        sharp_headers_free(&empty);
        return m;
    }
    case SHARP_ALF_RESPONSE_FLAG:
        return f->any_flag ? si->response_flags != 0 : (si->response_flags & f->flags) != 0;
    case SHARP_ALF_GRPC_STATUS: {
        /* Envoy's GrpcStatusFilter: no status at all counts as UNKNOWN, a
         * status beyond the known ones (or not a number) matches none */
        int64_t code = 2;
        if (sharp_grpc_response_status(si->response_trailers, si->response_headers, si->response_code, &code) &&
            (code < 0 || code > 16))
            return f->exclude;
        bool found = (f->grpc_statuses >> code) & 1u;
        return f->exclude ? !found : found;
    }
    }
    return false;
}

void sharp_alf_free(sharp_alf_t *f)
{
    if (!f) return;
    for (uint32_t i = 0; i < f->nchildren; i++)
        sharp_alf_free(f->children[i]);
    free(f->children);
    free(f->header.name);
    sharp_string_matcher_free(&f->header.sm);
    free(f);
}
