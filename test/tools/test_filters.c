/* test_filters.c: `sharp-test-filters`, the sharp binary (proxy/main.c)
 * with HTTP filters for the integration tests only, for filter
 * behaviours no built-in filter has. They are registered before the
 * built-in ones and configured by name alone (an HttpFilter without
 * typed_config); the request's headers tell them what to do.
 *
 * sharp.test.hold_response: with `x-test-hold-response-ms: N` (N > 0) it
 * stops the response headers (SHARP_FILTER_STOP from encode_headers) and
 * continues them N ms later, as a filter waiting for an answer about the
 * response would (Envoy's ext_proc, a Lua script). Meanwhile the body
 * waits behind it; with `x-test-hold-response-mode: buffer` its
 * encode_data returns SHARP_FILTER_STOP for that body (it wants the whole
 * body, Envoy's StopIterationAndBuffer), otherwise CONTINUE (Envoy's
 * StopIterationAndWatermark).
 *
 * sharp.test.hold_request: the same on the request side. With
 * `x-test-hold-request-ms: N` (N > 0) it stops the request headers and
 * continues them N ms later; the body meanwhile waits behind it. With
 * `x-test-hold-request-mode: buffer` its decode_data returns
 * SHARP_FILTER_STOP for that body (it wants the whole body, Envoy's
 * StopIterationAndBuffer, as Envoy's buffer filter does), otherwise
 * CONTINUE (StopIterationAndWatermark). With `x-test-hold-request-mode:
 * buffer-body` it lets the headers through at once (the router sends them
 * upstream, and the upstream may answer) and then wants the whole body
 * (SHARP_FILTER_STOP from every decode_data). */
#undef main
#include "http/filter.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

int sharp_main(int argc, char **argv);

typedef struct hold_state {
    sharp_filter_t *f;
    uint64_t hold_ms;
    bool buffer;
    bool buffer_body; /* hold_request: headers through, the whole body held */
    bool holding;
    sharp_deadline_t release;
} hold_state_t;

static void on_release(sharp_deadline_t *d)
{
    hold_state_t *st = sharp_container_of(d, hold_state_t, release);
    st->holding = false;
    sharp_stream_continue_encoding(st->f);
}

static sharp_filter_status_t hold_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                 bool end_stream)
{
    (void)end_stream;
    hold_state_t *st = f->state;
    st->f = f;
    sharp_str_t v;
    if (sharp_headers_get_cstr(h, "x-test-hold-response-ms", &v) && v.len && v.len < 16) {
        char num[16];
        memcpy(num, v.p, v.len);
        num[v.len] = '\0';
        st->hold_ms = strtoull(num, NULL, 10);
    }
    st->buffer =
        sharp_headers_get_cstr(h, "x-test-hold-response-mode", &v) && sharp_str_eq(v, "buffer", 6);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t hold_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                 bool end_stream)
{
    (void)h;
    hold_state_t *st = f->state;
    if (!st->f || !st->hold_ms || end_stream) return SHARP_FILTER_CONTINUE;
    st->holding = true;
    sharp_deadline_start(sharp_stream_worker(f->stream), &st->release, on_release, st->hold_ms);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t hold_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                              bool end_stream)
{
    (void)p;
    (void)n;
    (void)end_stream;
    hold_state_t *st = f->state;
    return st->holding && st->buffer ? SHARP_FILTER_STOP : SHARP_FILTER_CONTINUE;
}

static void hold_on_destroy(sharp_filter_t *f)
{
    hold_state_t *st = f->state;
    sharp_deadline_stop(&st->release);
}

static const sharp_filter_factory_t hold_response_filter = {
    .name = "sharp.test.hold_response",
    .type_url = "type.googleapis.com/sharp.test.HoldResponse",
    .state_size = sizeof(hold_state_t),
    .decode_headers = hold_decode_headers,
    .encode_headers = hold_encode_headers,
    .encode_data = hold_encode_data,
    .on_destroy = hold_on_destroy,
};

static uint64_t header_ms(sharp_headers_t *h, const char *name)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, name, &v) || !v.len || v.len >= 16) return 0;
    char num[16];
    memcpy(num, v.p, v.len);
    num[v.len] = '\0';
    return strtoull(num, NULL, 10);
}

static void on_request_release(sharp_deadline_t *d)
{
    hold_state_t *st = sharp_container_of(d, hold_state_t, release);
    st->holding = false;
    sharp_stream_continue_decoding(st->f);
}

static sharp_filter_status_t hold_req_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                     bool end_stream)
{
    hold_state_t *st = f->state;
    st->f = f;
    st->hold_ms = header_ms(h, "x-test-hold-request-ms");
    sharp_str_t v;
    bool mode = sharp_headers_get_cstr(h, "x-test-hold-request-mode", &v);
    st->buffer = mode && sharp_str_eq(v, "buffer", 6);
    st->buffer_body = mode && sharp_str_eq(v, "buffer-body", 11);
    if (!st->hold_ms || end_stream) return SHARP_FILTER_CONTINUE;
    st->holding = true;
    sharp_deadline_start(sharp_stream_worker(f->stream), &st->release, on_request_release,
                         st->hold_ms);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t hold_req_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                                  bool end_stream)
{
    (void)p;
    (void)n;
    (void)end_stream;
    hold_state_t *st = f->state;
    if (st->buffer_body) return SHARP_FILTER_STOP;
    return st->holding && st->buffer ? SHARP_FILTER_STOP : SHARP_FILTER_CONTINUE;
}

static const sharp_filter_factory_t hold_request_filter = {
    .name = "sharp.test.hold_request",
    .type_url = "type.googleapis.com/sharp.test.HoldRequest",
    .state_size = sizeof(hold_state_t),
    .decode_headers = hold_req_decode_headers,
    .decode_data = hold_req_decode_data,
    .on_destroy = hold_on_destroy,
};

int main(int argc, char **argv)
{
    sharp_filter_register(&hold_response_filter);
    sharp_filter_register(&hold_request_filter);
    return sharp_main(argc, argv);
}
