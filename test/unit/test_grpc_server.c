/* The gRPC server's calls (proxy/grpc/server.c) driven in memory by an
 * nghttp2 client session: a server-streaming handler that sends from a
 * timer and finishes, a client reset that cancels the handler (and stops
 * its timer), and a connection freed under a running call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <string.h>

#include "grpc/framing.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/server.h"

/* ---- a test service on the health descriptor: Check answers the
 * request's service name length as the status, Watch sends `ticks`
 * messages from a timer, one per 5 ms, then finishes OK ---- */

typedef struct ticker {
    sharp_grpc_call_t *call;
    uv_timer_t timer;
    int left, sent;
    bool cancelled, closed;
} ticker_t;

static ticker_t *last_ticker;
static int ticks = 3;

static void h_check(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    const Grpc__Health__V1__HealthCheckRequest *rq = (const void *)request;
    Grpc__Health__V1__HealthCheckResponse rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = (int)strlen(rq->service);
    sharp_grpc_call_add_metadata(call, "x-test", "yes");
    assert_int_equal(sharp_grpc_call_send(call, &rsp.base), 0);
    assert_int_equal(sharp_grpc_call_send(call, &rsp.base), -1); /* unary: one message */
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void on_ticker_close(uv_handle_t *h)
{
    ticker_t *t = h->data;
    t->closed = true;
}

static void on_tick(uv_timer_t *timer)
{
    ticker_t *t = timer->data;
    Grpc__Health__V1__HealthCheckResponse rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    assert_int_equal(sharp_grpc_call_send(t->call, &rsp.base), 0);
    t->sent++;
    if (--t->left == 0) {
        sharp_grpc_call_finish(t->call, SHARP_GRPC_OK, NULL);
        uv_close((uv_handle_t *)&t->timer, on_ticker_close);
    }
}

static void on_ticker_cancel(sharp_grpc_call_t *call, void *arg)
{
    (void)call;
    ticker_t *t = arg;
    t->cancelled = true;
    uv_close((uv_handle_t *)&t->timer, on_ticker_close);
}

static void h_watch(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)request;
    uv_loop_t *loop = data;
    ticker_t *t = calloc(1, sizeof *t);
    t->call = call;
    t->left = ticks;
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, on_tick, 5, 5);
    sharp_grpc_call_on_cancel(call, on_ticker_cancel, t);
    last_ticker = t;
}

static const sharp_grpc_method_impl_t impls[] = {{.handler = h_check}, {.handler = h_watch, .server_streaming = true}};

/* ---- the same descriptor served as a client-streaming Check (one answer
 * at the half-close: the sum of the services' lengths) and a bidirectional
 * Watch (each message answered at once with its service's length; OK at
 * the half-close) ---- */

typedef struct streamed {
    unsigned messages, total, half_closes;
} streamed_t;

static streamed_t streamed;

static void cs_message(sharp_grpc_call_t *call, const ProtobufCMessage *msg, void *arg)
{
    (void)call;
    streamed_t *st = arg;
    st->messages++;
    st->total += (unsigned)strlen(((const Grpc__Health__V1__HealthCheckRequest *)(const void *)msg)->service);
}

static void cs_half_close(sharp_grpc_call_t *call, void *arg)
{
    streamed_t *st = arg;
    st->half_closes++;
    Grpc__Health__V1__HealthCheckResponse rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = (int)st->total;
    assert_int_equal(sharp_grpc_call_send(call, &rsp.base), 0);
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void h_client_stream(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    assert_null(request);
    sharp_grpc_call_on_message(call, cs_message, cs_half_close, &streamed);
}

static void bidi_message(sharp_grpc_call_t *call, const ProtobufCMessage *msg, void *arg)
{
    streamed_t *st = arg;
    st->messages++;
    Grpc__Health__V1__HealthCheckResponse rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = (int)strlen(((const Grpc__Health__V1__HealthCheckRequest *)(const void *)msg)->service);
    assert_int_equal(sharp_grpc_call_send(call, &rsp.base), 0);
}

static void bidi_half_close(sharp_grpc_call_t *call, void *arg)
{
    ((streamed_t *)arg)->half_closes++;
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void h_bidi(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)data;
    assert_null(request);
    sharp_grpc_call_on_message(call, bidi_message, bidi_half_close, &streamed);
}

/* A client-streaming handler that registers nothing. */
static void h_deaf(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)call;
    (void)request;
    (void)data;
}

static const sharp_grpc_method_impl_t streaming_impls[] = {
    {.handler = h_client_stream, .client_streaming = true},
    {.handler = h_bidi, .client_streaming = true, .server_streaming = true},
};
static const sharp_grpc_method_impl_t deaf_impls[] = {
    {.handler = h_deaf, .client_streaming = true},
    {.handler = h_deaf, .client_streaming = true, .server_streaming = true},
};
static const sharp_grpc_method_impl_t *serve_impls = impls;

/* ---- the client side ---- */

typedef struct client {
    uv_loop_t loop;
    sharp_grpc_registry_t *reg;
    sharp_grpc_conn_t *conn;
    nghttp2_session *session;
    sharp_sbuf_t to_client;
    bool done;
    /* the last stream's response */
    char status[8], grpc_status[8], x_test[8];
    sharp_sbuf_t data;
    bool ended, reset;
} client_t;

static void io_write(void *ctx, sharp_sbuf_t *bytes)
{
    client_t *cl = ctx;
    sharp_sbuf_append(&cl->to_client, bytes->data, bytes->len);
    sharp_sbuf_free(bytes);
}

static size_t io_queued(void *ctx)
{
    (void)ctx;
    return 0;
}

static void io_done(void *ctx)
{
    ((client_t *)ctx)->done = true;
}

static const sharp_grpc_conn_io_t io = {io_write, io_queued, io_done, NULL, NULL};

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
                       const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
    (void)s;
    (void)f;
    (void)flags;
    client_t *cl = user;
    char *dst = NULL;
    if (nlen == 7 && memcmp(name, ":status", 7) == 0) dst = cl->status;
    if (nlen == 11 && memcmp(name, "grpc-status", 11) == 0) dst = cl->grpc_status;
    if (nlen == 6 && memcmp(name, "x-test", 6) == 0) dst = cl->x_test;
    if (dst && vlen < 8) {
        memcpy(dst, value, vlen);
        dst[vlen] = 0;
    }
    return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *user)
{
    (void)s;
    (void)flags;
    (void)id;
    sharp_sbuf_append(&((client_t *)user)->data, (const char *)data, len);
    return 0;
}

static int c_on_close(nghttp2_session *s, int32_t id, uint32_t err, void *user)
{
    (void)s;
    (void)id;
    client_t *cl = user;
    cl->ended = true;
    cl->reset = err != NGHTTP2_NO_ERROR;
    return 0;
}

static void client_init(client_t *cl)
{
    memset(cl, 0, sizeof *cl);
    uv_loop_init(&cl->loop);
    cl->reg = sharp_grpc_registry_new();
    assert_int_equal(
        sharp_grpc_registry_add(cl->reg, &grpc__health__v1__health__descriptor, serve_impls, &cl->loop, NULL), 0);
    cl->conn = sharp_grpc_conn_new(cl->reg, &cl->loop, &io, cl);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
    nghttp2_session_client_new(&cl->session, cb, cl);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(cl->session, NGHTTP2_FLAG_NONE, NULL, 0);
}

/* Moves bytes both ways until neither side has more to say. */
static void pump(client_t *cl)
{
    for (;;) {
        bool moved = false;
        const uint8_t *d;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(cl->session, &d)) > 0) {
            if (cl->conn) assert_int_equal(sharp_grpc_conn_recv(cl->conn, d, (size_t)n), 0);
            moved = true;
        }
        if (cl->to_client.len) {
            sharp_sbuf_t b = cl->to_client;
            memset(&cl->to_client, 0, sizeof cl->to_client);
            assert_int_equal(nghttp2_session_mem_recv(cl->session, (const uint8_t *)b.data, b.len), (ssize_t)b.len);
            sharp_sbuf_free(&b);
            moved = true;
        }
        if (!moved) return;
    }
}

typedef struct body_src {
    sharp_sbuf_t b;
    size_t off;
    bool hold; /* all sent: wait (deferred) instead of ending the stream */
} body_src_t;

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    (void)s;
    (void)id;
    (void)user;
    body_src_t *b = src->ptr;
    size_t n = SHARP_MIN(len, b->b.len - b->off);
    if (n) memcpy(buf, b->b.data + b->off, n);
    b->off += n;
    if (b->off == b->b.len) {
        if (b->hold && n == 0) return NGHTTP2_ERR_DEFERRED;
        if (!b->hold) *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static body_src_t body;

/* Starts a call whose request is HealthCheckRequest{service} for each of
 * services[0..n) and pumps; with hold, the client does not end its side. */
static int32_t client_call_n(client_t *cl, const char *path, const char *const *services, size_t n, bool hold)
{
    cl->ended = cl->reset = false;
    cl->status[0] = cl->grpc_status[0] = cl->x_test[0] = 0;
    sharp_sbuf_reset(&cl->data);
    sharp_sbuf_free(&body.b);
    body.off = 0;
    body.hold = hold;
    for (size_t i = 0; i < n; i++) {
        Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        rq.service = (char *)services[i];
        sharp_grpc_frame_message(&body.b, &rq.base);
    }
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
        {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
        {(uint8_t *)"te", (uint8_t *)"trailers", 2, 8, 0},
    };
    nghttp2_data_provider dp = {.source.ptr = &body, .read_callback = body_read};
    int32_t id = nghttp2_submit_request(cl->session, NULL, nv, 6, &dp, NULL);
    assert_true(id > 0);
    pump(cl);
    return id;
}

static int32_t client_call(client_t *cl, const char *path, const char *service)
{
    return client_call_n(cl, path, &service, 1, false);
}

/* Runs the loop until the stream ended (or 2 s). */
static void run_until_ended(client_t *cl)
{
    uint64_t until = uv_now(&cl->loop) + 2000;
    while (!cl->ended && uv_now(&cl->loop) < until) {
        uv_run(&cl->loop, UV_RUN_ONCE);
        pump(cl);
    }
}

static void client_free(client_t *cl)
{
    sharp_grpc_conn_free(cl->conn);
    cl->conn = NULL;
    uv_run(&cl->loop, UV_RUN_DEFAULT); /* close callbacks */
    assert_int_equal(uv_loop_close(&cl->loop), 0);
    nghttp2_session_del(cl->session);
    sharp_grpc_registry_free(cl->reg);
    sharp_sbuf_free(&cl->to_client);
    sharp_sbuf_free(&cl->data);
}

static void unary_call(void **state)
{
    (void)state;
    client_t cl;
    client_init(&cl);
    client_call(&cl, "/grpc.health.v1.Health/Check", "four");
    assert_true(cl.ended);
    assert_false(cl.reset);
    assert_string_equal(cl.status, "200");
    assert_string_equal(cl.x_test, "yes");
    assert_string_equal(cl.grpc_status, "0");
    assert_int_equal(cl.data.len, 7);
    assert_memory_equal(cl.data.data, "\0\0\0\0\2\x08\x04", 7);
    client_free(&cl);
}

/* A server-streaming handler sends from its timer, then finishes. */
static void streaming_from_timer(void **state)
{
    (void)state;
    client_t cl;
    client_init(&cl);
    ticks = 3;
    client_call(&cl, "/grpc.health.v1.Health/Watch", "");
    assert_false(cl.ended);
    assert_int_equal(cl.data.len, 0);
    ticker_t *t = last_ticker;
    run_until_ended(&cl);
    assert_true(cl.ended);
    assert_false(cl.reset);
    assert_string_equal(cl.grpc_status, "0");
    assert_int_equal(t->sent, 3);
    assert_false(t->cancelled);
    assert_int_equal(cl.data.len, 3 * 7);
    assert_memory_equal(cl.data.data + 14, "\0\0\0\0\2\x08\x01", 7);
    client_free(&cl);
    assert_true(t->closed);
    free(t);
}

/* The client resets the stream after the first message: the handler's
 * cancel callback runs once and its timer sends nothing more. */
static void client_reset_cancels(void **state)
{
    (void)state;
    client_t cl;
    client_init(&cl);
    ticks = 1000;
    int32_t id = client_call(&cl, "/grpc.health.v1.Health/Watch", "");
    ticker_t *t = last_ticker;
    while (t->sent < 1) {
        uv_run(&cl.loop, UV_RUN_ONCE);
        pump(&cl);
    }
    nghttp2_submit_rst_stream(cl.session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    pump(&cl);
    assert_true(t->cancelled);
    int sent = t->sent;
    uv_run(&cl.loop, UV_RUN_NOWAIT);
    assert_true(t->closed);
    assert_int_equal(t->sent, sent);
    client_free(&cl);
    free(t);
}

/* grpc-timeout is not sent by this client; the connection is freed under
 * a running call: the handler hears of it at once, and every handle
 * closes (uv_loop_close succeeds). */
static void conn_free_cancels(void **state)
{
    (void)state;
    client_t cl;
    client_init(&cl);
    ticks = 1000;
    client_call(&cl, "/grpc.health.v1.Health/Watch", "");
    ticker_t *t = last_ticker;
    assert_false(t->cancelled);
    sharp_grpc_conn_free(cl.conn);
    cl.conn = NULL;
    assert_true(t->cancelled);
    client_free(&cl);
    assert_true(t->closed);
    free(t);
}

/* Unknown methods and malformed messages never reach a handler. */
static void errors_before_the_handler(void **state)
{
    (void)state;
    client_t cl;
    client_init(&cl);
    last_ticker = NULL;
    client_call(&cl, "/grpc.health.v1.Health/Nope", "");
    assert_true(cl.ended);
    assert_string_equal(cl.grpc_status, "12");
    assert_int_equal(cl.data.len, 0);
    assert_null(last_ticker);
    client_free(&cl);
}

/* Client streaming: three messages, one of them larger than a DATA frame
 * (it arrives in pieces), reach the handler one by one; the answer comes
 * at the half-close. */
static void client_streaming(void **state)
{
    (void)state;
    serve_impls = streaming_impls;
    memset(&streamed, 0, sizeof streamed);
    client_t cl;
    client_init(&cl);
    char *big = malloc(40001);
    memset(big, 'b', 40000);
    big[40000] = 0;
    const char *services[] = {"one", big, "three"};
    client_call_n(&cl, "/grpc.health.v1.Health/Check", services, 3, false);
    run_until_ended(&cl);
    assert_true(cl.ended);
    assert_string_equal(cl.grpc_status, "0");
    assert_int_equal(streamed.messages, 3);
    assert_int_equal(streamed.half_closes, 1);
    /* HealthCheckResponse{status: 40008}: field 1 varint */
    assert_int_equal(cl.data.len, 5 + 4);
    assert_memory_equal(cl.data.data + 5, "\x08\xc8\xb8\x02", 4);
    client_free(&cl);
    free(big);
    serve_impls = impls;
}

/* Bidirectional: every message is answered before the client half-closes;
 * the half-close ends the call with OK. */
static void bidirectional(void **state)
{
    (void)state;
    serve_impls = streaming_impls;
    memset(&streamed, 0, sizeof streamed);
    client_t cl;
    client_init(&cl);
    const char *services[] = {"a", "bb", "ccc"};
    int32_t id = client_call_n(&cl, "/grpc.health.v1.Health/Watch", services, 3, true);
    assert_false(cl.ended);
    assert_int_equal(streamed.messages, 3);
    assert_int_equal(cl.data.len, 3 * 7);
    assert_memory_equal(cl.data.data, "\0\0\0\0\2\x08\x01\0\0\0\0\2\x08\x02\0\0\0\0\2\x08\x03", 21);
    assert_int_equal(streamed.half_closes, 0);
    body.hold = false;
    nghttp2_session_resume_data(cl.session, id);
    pump(&cl);
    run_until_ended(&cl);
    assert_true(cl.ended);
    assert_false(cl.reset);
    assert_string_equal(cl.grpc_status, "0");
    assert_int_equal(streamed.half_closes, 1);
    client_free(&cl);
    serve_impls = impls;
}

/* A message the handler registered no callback for, a malformed message in
 * a stream and a stream cut inside a message end the call with a status. */
static void client_streaming_errors(void **state)
{
    (void)state;
    client_t cl;
    serve_impls = deaf_impls;
    client_init(&cl);
    client_call(&cl, "/grpc.health.v1.Health/Check", "x");
    run_until_ended(&cl);
    assert_string_equal(cl.grpc_status, "12");
    client_free(&cl);

    serve_impls = streaming_impls;
    memset(&streamed, 0, sizeof streamed);
    /* a valid message, then one whose protobuf is garbage (field 1 as a
     * length-delimited string running past the message's end) */
    client_init(&cl);
    sharp_sbuf_free(&body.b);
    body.off = 0;
    body.hold = false;
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rq.service = (char *)"ok";
    sharp_grpc_frame_message(&body.b, &rq.base);
    sharp_sbuf_append(&body.b, "\0\0\0\0\2\x0a\x7f", 7);
    nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"POST", 7, 4, 0},
        {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
        {(uint8_t *)":authority", (uint8_t *)"x", 10, 1, 0},
        {(uint8_t *)":path", (uint8_t *)"/grpc.health.v1.Health/Watch", 5, 28, 0},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
    };
    nghttp2_data_provider dp = {.source.ptr = &body, .read_callback = body_read};
    assert_true(nghttp2_submit_request(cl.session, NULL, nv, 5, &dp, NULL) > 0);
    pump(&cl);
    run_until_ended(&cl);
    assert_string_equal(cl.grpc_status, "13");
    assert_int_equal(streamed.messages, 1);
    client_free(&cl);

    /* the client ends its side inside a message's prefix */
    memset(&streamed, 0, sizeof streamed);
    client_init(&cl);
    sharp_sbuf_free(&body.b);
    body.off = 0;
    sharp_grpc_frame_message(&body.b, &rq.base);
    sharp_sbuf_append(&body.b, "\0\0\0", 3);
    assert_true(nghttp2_submit_request(cl.session, NULL, nv, 5, &dp, NULL) > 0);
    pump(&cl);
    run_until_ended(&cl);
    assert_string_equal(cl.grpc_status, "13");
    assert_int_equal(streamed.messages, 1);
    assert_int_equal(streamed.half_closes, 0);
    client_free(&cl);
    serve_impls = impls;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unary_call),
        cmocka_unit_test(streaming_from_timer),
        cmocka_unit_test(client_reset_cancels),
        cmocka_unit_test(conn_free_cancels),
        cmocka_unit_test(errors_before_the_handler),
        cmocka_unit_test(client_streaming),
        cmocka_unit_test(bidirectional),
        cmocka_unit_test(client_streaming_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
