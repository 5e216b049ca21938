/* test_flow_control.c: the connection manager's flow control
 * (proxy/http/filter_chain.c) on a stream of three fake filters over a
 * fake codec. The downstream's read pause is held by sources and counted
 * (Envoy's readDisable): the held request data, each filter's decoder
 * watermark and read_disable; the codec reads again only when the last
 * source lets go, and a source saying the same twice counts once. The
 * response-side pause is counted per filter (Envoy's high watermark
 * count): the connection's write watermark, the codec's own, each
 * filter's encoder watermark and the response data held behind a filter
 * that stopped the headers; the producing filter hears the first pause
 * and the end of the last. Held response data above the buffer limit
 * pauses the filters after the holder until it continues, or, when the
 * holder buffers the whole body, becomes a 500 counted in rs_too_large.
 * Held request data the same: a pause, or a 413 counted in
 * downstream_rq_too_large when the holder buffers the whole body. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/conn_internal.h"
#include "http/hcm_internal.h"
#include "small.h"
#include "stats.h"
#include "worker.h"

#define LIMIT 1000
#define NF 3

/* ---- the fake codec ---- */

static struct {
    bool read_disabled;
    unsigned read_disable_calls;
    uint32_t status; /* the response head the codec got, 0: none */
    bool headers_end;
    size_t data; /* response body bytes the codec got */
    bool data_end;
    char body[64];
} codec;

static void c_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end)
{
    (void)s;
    codec.status = sharp_headers_status(h);
    codec.headers_end = end;
}

static void c_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end)
{
    (void)s;
    if (codec.data + n < sizeof codec.body) memcpy(codec.body + codec.data, p, n);
    codec.data += n;
    codec.data_end = end;
}

static void c_encode_trailers(sharp_stream_t *s, sharp_headers_t *t)
{
    (void)t;
    c_encode_data(s, NULL, 0, true);
}

static void c_read_disable(sharp_stream_t *s, bool disable)
{
    (void)s;
    /* the stream tells the codec only on a change */
    assert_true(codec.read_disabled != disable);
    codec.read_disabled = disable;
    codec.read_disable_calls++;
}

static const sharp_server_codec_t fake_codec = {
    .name = "fake",
    .encode_headers = c_encode_headers,
    .encode_data = c_encode_data,
    .encode_trailers = c_encode_trailers,
    .read_disable = c_read_disable,
};

/* ---- the fake filters: a holder (0), a middle one (1), a producer (2,
 * terminal, the router's place) ---- */

typedef struct {
    unsigned above, below; /* on_downstream_watermark edges heard */
    bool paused;
    bool stop_headers;          /* encode_headers returns STOP */
    sharp_filter_status_t data; /* encode_data's status */
    sharp_filter_status_t ddata; /* decode_data's status (not the terminal filter) */
    size_t got;                 /* request bytes it took (the producer) */
} fstate_t;

static sharp_filter_status_t f_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end)
{
    (void)h;
    (void)end;
    return f->factory->terminal ? SHARP_FILTER_STOP : SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t f_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    (void)p;
    (void)end;
    fstate_t *st = f->state;
    st->got += n;
    return f->factory->terminal ? SHARP_FILTER_STOP : st->ddata;
}

static sharp_filter_status_t f_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end)
{
    (void)h;
    (void)end;
    fstate_t *st = f->state;
    return st->stop_headers ? SHARP_FILTER_STOP : SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t f_encode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    (void)p;
    (void)n;
    (void)end;
    fstate_t *st = f->state;
    return st->data;
}

static void f_watermark(sharp_filter_t *f, bool above)
{
    fstate_t *st = f->state;
    /* edges only: never the same twice in a row */
    assert_true(st->paused != above);
    st->paused = above;
    if (above)
        st->above++;
    else
        st->below++;
}

static const sharp_filter_factory_t plain = {
    .name = "test.plain",
    .type_url = "type.googleapis.com/test.Plain",
    .state_size = sizeof(fstate_t),
    .decode_headers = f_decode_headers,
    .decode_data = f_decode_data,
    .encode_headers = f_encode_headers,
    .encode_data = f_encode_data,
    .on_downstream_watermark = f_watermark,
};

static const sharp_filter_factory_t terminal = {
    .name = "test.terminal",
    .type_url = "type.googleapis.com/test.Terminal",
    .terminal = true,
    .state_size = sizeof(fstate_t),
    .decode_headers = f_decode_headers,
    .decode_data = f_decode_data,
    .encode_headers = f_encode_headers,
    .encode_data = f_encode_data,
    .on_downstream_watermark = f_watermark,
};

/* ---- the stream ---- */

static sharp_stats_t *stats;
static sharp_worker_t worker;
static sharp_listener_config_t listener;
static sharp_hcm_config_t hcm;
static sharp_conn_t conn;
static fstate_t fs[NF];

static sharp_stream_t *stream(void)
{
    memset(&codec, 0, sizeof codec);
    memset(fs, 0, sizeof fs);
    memset(&conn, 0, sizeof conn);
    conn.codec = &fake_codec;
    conn.listener = &listener;
    conn.worker = &worker;
    sharp_stream_t *s = calloc(1, sizeof *s + NF * sizeof(sharp_filter_t));
    s->conn = &conn;
    s->hcm = &hcm;
    s->nfilters = NF;
    s->filters = (sharp_filter_t *)(s + 1);
    for (uint32_t i = 0; i < NF; i++) {
        sharp_filter_t *f = &s->filters[i];
        f->factory = i == NF - 1 ? &terminal : &plain;
        f->stream = s;
        f->index = i;
        f->state = &fs[i];
        f->name = f->factory->name;
    }
    s->dec_data_stop = -1;
    s->enc_next = NF - 1;
    s->grpc_known = true;
    sharp_headers_init(&s->req);
    sharp_headers_init(&s->resp);
    sharp_headers_init(&s->req_trailers);
    sharp_headers_init(&s->resp_trailers);
    return s;
}

static void stream_free(sharp_stream_t *s)
{
    sharp_headers_free(&s->req);
    sharp_headers_free(&s->resp);
    sharp_headers_free(&s->req_trailers);
    sharp_headers_free(&s->resp_trailers);
    sharp_sbuf_free(&s->dec_buf);
    sharp_sbuf_free(&s->enc_buf);
    sharp_small_free(s->details_copy);
    free(s);
}

static sharp_filter_t *F(sharp_stream_t *s, uint32_t i)
{
    return &s->filters[i];
}

static int setup(void **state)
{
    (void)state;
    stats = sharp_stats_create(2);
    worker.stats = sharp_stats_shard(stats, 1);
    worker.rng = 42;
    listener.buffer_limit = LIMIT;
    hcm.server_name = "envoy";
    hcm.st.rs_too_large = sharp_stats_counter(stats, "http.test.rs_too_large");
    hcm.st.rq_too_large = sharp_stats_counter(stats, "http.test.downstream_rq_too_large");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sharp_stats_destroy(stats);
    return 0;
}

/* ---- the downstream's read pause ---- */

static void read_pause_resumes_after_the_last_source(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    sharp_stream_decoder_watermark(F(s, 2), true); /* the router: upstream write buffer full */
    assert_true(codec.read_disabled);
    sharp_stream_read_disable(F(s, 1), true);      /* a decompressor's held input */
    sharp_stream_decoder_watermark(F(s, 0), true); /* a bandwidth limit's buffer */
    assert_int_equal(s->read_pauses, 3);
    assert_int_equal(codec.read_disable_calls, 1);
    /* one source letting go does not resume reading while others hold it */
    sharp_stream_decoder_watermark(F(s, 0), false);
    assert_true(codec.read_disabled);
    sharp_stream_read_disable(F(s, 1), false);
    assert_true(codec.read_disabled);
    sharp_stream_decoder_watermark(F(s, 2), false);
    assert_false(codec.read_disabled);
    assert_int_equal(s->read_pauses, 0);
    assert_int_equal(codec.read_disable_calls, 2);
    stream_free(s);
}

static void read_pause_source_counts_once(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    /* a source saying the same twice holds it once, and one release
     * lets it go; a release without a hold changes nothing */
    sharp_stream_read_disable(F(s, 1), false);
    assert_int_equal(codec.read_disable_calls, 0);
    sharp_stream_read_disable(F(s, 1), true);
    sharp_stream_read_disable(F(s, 1), true);
    sharp_stream_decoder_watermark(F(s, 2), true);
    sharp_stream_decoder_watermark(F(s, 2), true);
    assert_int_equal(s->read_pauses, 2);
    sharp_stream_read_disable(F(s, 1), false);
    sharp_stream_read_disable(F(s, 1), false);
    assert_true(codec.read_disabled);
    assert_int_equal(s->read_pauses, 1);
    sharp_stream_decoder_watermark(F(s, 2), false);
    assert_false(codec.read_disabled);
    assert_int_equal(codec.read_disable_calls, 2);
    stream_free(s);
}

static void held_request_and_filter_pause_overlap(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    /* the first filter stopped the request headers (an authorization
     * wait): the body is held behind it, and above the limit the
     * connection manager pauses the downstream */
    s->dec_stopped = true;
    s->dec_next = 1;
    char body[LIMIT + 100];
    memset(body, 'x', sizeof body);
    dec_run_data(s, 0, body, sizeof body, false);
    assert_true(codec.read_disabled);
    assert_true(s->dec_buf_paused);
    /* meanwhile the middle filter pauses the downstream for a reason of
     * its own */
    sharp_stream_read_disable(F(s, 1), true);
    /* the first filter continues: the held body reaches the producer, and
     * the connection manager's pause ends, the middle filter's does not */
    sharp_stream_continue_decoding(F(s, 0));
    assert_int_equal(fs[2].got, sizeof body);
    assert_false(s->dec_buf_paused);
    assert_true(codec.read_disabled);
    sharp_stream_read_disable(F(s, 1), false);
    assert_false(codec.read_disabled);
    stream_free(s);
}

/* ---- the response-side pause ---- */

static void encoder_pause_counted_per_filter(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    /* the connection above its write watermark, then the middle filter's
     * own buffer above the limit (a fault filter's response rate limit) */
    sharp_hcm_downstream_watermark(s, true);
    assert_int_equal(fs[2].above, 1);
    assert_int_equal(fs[1].above, 1);
    sharp_stream_encoder_watermark(F(s, 1), true);
    assert_int_equal(fs[2].above, 1);
    assert_int_equal(F(s, 2)->enc_pauses, 2);
    assert_int_equal(F(s, 1)->enc_pauses, 1); /* its own pause is for the filters after it */
    /* the connection drains: the producer stays paused for the filter */
    sharp_hcm_downstream_watermark(s, false);
    assert_true(fs[2].paused);
    assert_int_equal(fs[2].below, 0);
    assert_false(fs[1].paused);
    /* and the other way round: the filter drains while the connection is
     * above again */
    sharp_hcm_downstream_watermark(s, true);
    sharp_stream_encoder_watermark(F(s, 1), false);
    assert_true(fs[2].paused);
    assert_true(sharp_stream_encoder_paused(F(s, 2)));
    sharp_hcm_downstream_watermark(s, false);
    assert_false(fs[2].paused);
    assert_false(sharp_stream_encoder_paused(F(s, 2)));
    assert_int_equal(fs[2].above, 1);
    assert_int_equal(fs[2].below, 1);
    stream_free(s);
}

static void codec_and_connection_watermarks_overlap(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    /* HTTP/2: the stream's unsent body above the limit and the socket's
     * queue above its watermark are two sources */
    sharp_hcm_codec_watermark(s, true);
    sharp_hcm_downstream_watermark(s, true);
    sharp_hcm_codec_watermark(s, true);
    sharp_hcm_downstream_watermark(s, false);
    assert_true(fs[2].paused);
    sharp_hcm_codec_watermark(s, false);
    assert_false(fs[2].paused);
    assert_int_equal(fs[2].above, 1);
    assert_int_equal(fs[2].below, 1);
    stream_free(s);
}

static void stream_begins_paused(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    /* a stream of a connection already above its watermark: paused from
     * the start, without a call to filters that have not started */
    sharp_hcm_stream_begin_above(s);
    assert_true(sharp_stream_encoder_paused(F(s, 2)));
    assert_int_equal(fs[2].above, 0);
    /* the filters look when they start (the router binding its upstream) */
    for (uint32_t i = 0; i < NF; i++)
        fs[i].paused = sharp_stream_encoder_paused(F(s, i));
    /* the connection drains: the filters hear the end */
    sharp_hcm_downstream_watermark(s, false);
    assert_false(sharp_stream_encoder_paused(F(s, 2)));
    assert_int_equal(fs[2].below, 1);
    stream_free(s);
}

/* The producer's response headers reach the holder (0), which stops them. */
static void held_headers(sharp_stream_t *s, sharp_filter_status_t data_status)
{
    fs[0].stop_headers = true;
    fs[0].data = data_status;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":status", "200");
    sharp_stream_encode_headers(F(s, 2), &h, false);
    sharp_headers_free(&h);
    assert_true(s->enc_stopped);
    assert_int_equal(codec.status, 0);
}

static void held_response_pauses_the_producer(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    held_headers(s, SHARP_FILTER_CONTINUE);
    char body[400];
    memset(body, 'y', sizeof body);
    /* within the limit: held, nothing paused */
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    assert_false(fs[2].paused);
    /* above it: the filters after the holder pause (the router stops
     * reading its upstream), the holder itself does not hear it */
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    assert_true(fs[2].paused);
    assert_true(fs[1].paused);
    assert_false(fs[0].paused);
    assert_int_equal(codec.data, 0);
    /* the connection goes above its watermark too */
    sharp_hcm_downstream_watermark(s, true);
    /* the holder lets the response go: the held body follows the headers,
     * and the producer stays paused while the connection is above */
    sharp_stream_continue_encoding(F(s, 0));
    assert_int_equal(codec.status, 200);
    assert_int_equal(codec.data, 3 * sizeof body);
    assert_false(s->enc_buf_above);
    assert_true(fs[2].paused);
    sharp_hcm_downstream_watermark(s, false);
    assert_false(fs[2].paused);
    assert_int_equal(fs[2].above, 1);
    /* later data flows straight through */
    sharp_stream_encode_data(F(s, 2), body, 10, true);
    assert_int_equal(codec.data, 3 * sizeof body + 10);
    assert_true(codec.data_end);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rs_too_large), 0);
    stream_free(s);
}

static void held_response_buffered_too_large(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    uint64_t before = sharp_stats_counter_value(stats, hcm.st.rs_too_large);
    /* the holder wants the whole body (STOP from encode_data) */
    held_headers(s, SHARP_FILTER_STOP);
    char body[600];
    memset(body, 'z', sizeof body);
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    assert_int_equal(codec.status, 0);
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    /* Envoy's responseDataTooLarge: a 500 straight to the codec, counted,
     * the held body dropped, nothing paused */
    assert_int_equal(codec.status, 500);
    assert_false(codec.headers_end);
    assert_int_equal(codec.data, 21);
    assert_memory_equal(codec.body, "Internal Server Error", 21);
    assert_true(codec.data_end);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rs_too_large), before + 1);
    assert_string_equal(s->info.response_code_details, "response_payload_too_large");
    assert_int_equal(s->enc_buf.len, 0);
    assert_false(fs[2].paused);
    assert_int_equal(fs[2].above, 0);
    /* what the upstream still sends is dropped */
    sharp_stream_encode_data(F(s, 2), body, sizeof body, true);
    assert_int_equal(codec.data, 21);
    /* the holder's continue has nothing left to do */
    sharp_stream_continue_encoding(F(s, 0));
    assert_int_equal(codec.data, 21);
    stream_free(s);
}

/* ---- the request side's bound ---- */

static void held_request_buffered_too_large(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    uint64_t before = sharp_stats_counter_value(stats, hcm.st.rq_too_large);
    /* the first filter stopped the request headers and wants the whole
     * body (STOP from decode_data, Envoy's StopIterationAndBuffer) */
    s->dec_stopped = true;
    s->dec_next = 1;
    fs[0].ddata = SHARP_FILTER_STOP;
    char body[600];
    memset(body, 'q', sizeof body);
    dec_run_data(s, 0, body, sizeof body, false);
    assert_true(s->dec_buffering);
    assert_int_equal(codec.status, 0);
    assert_false(codec.read_disabled);
    dec_run_data(s, 0, body, sizeof body, false);
    /* Envoy's requestDataTooLarge: a 413, counted, what was held dropped,
     * the downstream not paused, nothing reached the filters after it */
    assert_int_equal(codec.status, 413);
    assert_int_equal(codec.data, 17);
    assert_memory_equal(codec.body, "Payload Too Large", 17);
    assert_true(codec.data_end);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rq_too_large), before + 1);
    assert_string_equal(s->info.response_code_details, "request_payload_too_large");
    assert_int_equal(s->dec_buf.len, 0);
    assert_false(codec.read_disabled);
    assert_int_equal(s->read_pauses, 0);
    assert_int_equal(fs[1].got + fs[2].got, 0);
    /* the rest of the request goes nowhere, the holder's continue neither */
    dec_run_data(s, 0, body, sizeof body, true);
    sharp_stream_continue_decoding(F(s, 0));
    assert_int_equal(fs[2].got, 0);
    assert_int_equal(codec.data, 17);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rq_too_large), before + 1);
    stream_free(s);
}

static void held_request_data_stop_too_large(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    uint64_t before = sharp_stats_counter_value(stats, hcm.st.rq_too_large);
    /* the middle filter let the headers go and stops on the data */
    fs[1].ddata = SHARP_FILTER_STOP;
    char body[LIMIT + 1];
    memset(body, 'q', sizeof body);
    dec_run_data(s, 0, body, LIMIT, false);
    assert_int_equal(s->dec_data_stop, 1);
    assert_int_equal(codec.status, 0);
    /* exactly at the limit is within it; one byte more is not */
    dec_run_data(s, 0, body, 1, false);
    assert_int_equal(codec.status, 413);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rq_too_large), before + 1);
    assert_int_equal(fs[0].got, LIMIT + 1);
    assert_int_equal(fs[2].got, 0);
    stream_free(s);
}

/* The usual case of a data stop: the headers went through every filter and
 * the terminal one (the router) holds them, as it does once it has sent
 * them upstream. The filter's stop on the data still holds the body at it
 * (it did not: the body went on to the terminal filter). */
static void held_request_data_stop_behind_terminal(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    uint64_t before = sharp_stats_counter_value(stats, hcm.st.rq_too_large);
    s->dec_stopped = true;
    s->dec_next = NF;
    fs[1].ddata = SHARP_FILTER_STOP;
    char body[LIMIT + 1];
    memset(body, 'q', sizeof body);
    dec_run_data(s, 0, body, LIMIT, false);
    assert_int_equal(s->dec_data_stop, 1);
    assert_true(s->dec_buffering);
    assert_int_equal(fs[NF - 1].got, 0);
    assert_int_equal(codec.status, 0);
    dec_run_data(s, 0, body, 1, false);
    assert_int_equal(codec.status, 413);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rq_too_large), before + 1);
    assert_int_equal(fs[NF - 1].got, 0);
    stream_free(s);
}

static void held_request_streaming_pauses(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    uint64_t before = sharp_stats_counter_value(stats, hcm.st.rq_too_large);
    /* the holder wanted the body whole, then lets it stream (CONTINUE, as
     * ext_authz once its check has what it needs): the last word counts */
    s->dec_stopped = true;
    s->dec_next = 1;
    fs[0].ddata = SHARP_FILTER_STOP;
    char body[600];
    memset(body, 'q', sizeof body);
    dec_run_data(s, 0, body, sizeof body, false);
    fs[0].ddata = SHARP_FILTER_CONTINUE;
    dec_run_data(s, 0, body, sizeof body, false);
    assert_false(s->dec_buffering);
    assert_int_equal(codec.status, 0);
    assert_true(codec.read_disabled);
    assert_true(s->dec_buf_paused);
    /* on continue the body goes on whole and reading resumes */
    sharp_stream_continue_decoding(F(s, 0));
    assert_int_equal(fs[2].got, 2 * sizeof body);
    assert_false(codec.read_disabled);
    assert_int_equal(sharp_stats_counter_value(stats, hcm.st.rq_too_large), before);
    stream_free(s);
}

static void held_request_within_limit_continues(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    s->dec_stopped = true;
    s->dec_next = 1;
    fs[0].ddata = SHARP_FILTER_STOP;
    char body[LIMIT];
    memset(body, 'q', sizeof body);
    dec_run_data(s, 0, body, sizeof body, true);
    assert_int_equal(codec.status, 0);
    assert_false(codec.read_disabled);
    /* the holder lets it go: the filters after it see the body whole, and
     * the next stop starts with no buffering flag left over */
    fs[0].ddata = SHARP_FILTER_CONTINUE;
    sharp_stream_continue_decoding(F(s, 0));
    assert_false(s->dec_buffering);
    assert_int_equal(fs[2].got, sizeof body);
    assert_true(s->dec_end_sent);
    stream_free(s);
}

static void held_response_replaced_by_local_reply(void **state)
{
    (void)state;
    sharp_stream_t *s = stream();
    held_headers(s, SHARP_FILTER_CONTINUE);
    char body[LIMIT + 1];
    memset(body, 'w', sizeof body);
    sharp_stream_encode_data(F(s, 2), body, sizeof body, false);
    assert_true(fs[2].paused);
    /* a filter answers instead (a timeout): the held body and its pause
     * go (the holder lets the local reply's headers pass) */
    fs[0].stop_headers = false;
    sharp_stream_send_local_reply(F(s, 2), 504, "upstream request timeout", 0,
                                  "upstream_response_timeout");
    assert_int_equal(codec.status, 504);
    assert_int_equal(s->enc_buf.len, 0);
    assert_false(fs[2].paused);
    stream_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_pause_resumes_after_the_last_source),
        cmocka_unit_test(read_pause_source_counts_once),
        cmocka_unit_test(held_request_and_filter_pause_overlap),
        cmocka_unit_test(encoder_pause_counted_per_filter),
        cmocka_unit_test(codec_and_connection_watermarks_overlap),
        cmocka_unit_test(stream_begins_paused),
        cmocka_unit_test(held_response_pauses_the_producer),
        cmocka_unit_test(held_response_buffered_too_large),
        cmocka_unit_test(held_response_replaced_by_local_reply),
        cmocka_unit_test(held_request_buffered_too_large),
        cmocka_unit_test(held_request_data_stop_too_large),
        cmocka_unit_test(held_request_data_stop_behind_terminal),
        cmocka_unit_test(held_request_streaming_pauses),
        cmocka_unit_test(held_request_within_limit_continues),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
