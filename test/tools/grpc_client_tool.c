/* grpc_client_tool: drives SHARP's gRPC client (proxy/grpc/client.h) from
 * the command line for the integration tests, on a libuv loop of its own as
 * the main thread would. It loads a bootstrap with SHARP's own loader and
 * snapshot code, makes a client for one cluster and runs actions one after
 * the other, printing one JSON line per event on stdout.
 *
 *   grpc_client_tool -c bootstrap.yaml --cluster NAME [--authority A]
 *       [--md k=v]... [--timeout-ms N] [--max-recv N] [-l level] ACTION...
 *
 * Actions:
 *   md:K=V             per-call metadata for the calls that follow (adds)
 *   nomd               clears it
 *   timeout:MS         per-call timeout for the calls that follow
 *   health:SERVICE     unary grpc.health.v1.Health/Check
 *   unary:PATH:SIZE    unary call with a BytesValue of SIZE bytes (response BytesValue)
 *   echo:PATH:N:SIZE   bidi stream: N BytesValue messages of SIZE bytes sent under
 *                      back-pressure, then half-close; the replies are checked
 *   hold:PATH:MS       bidi stream: one message, no half-close; cancelled after MS
 *   retry:PATH:BASE:MAX:MS  retrying stream for MS ms, or until a line on stdin when
 *                      MS is 0 (each open sends one message)
 *   sleep:MS
 *   wait               waits for a line on stdin
 *   destroy-in:MS      destroys the client MS ms later, whatever is in flight, and ends
 */
#include "grpc/client.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/server.h"
#include "http/grpc.h"
#include "log.h"
#include "sbuf.h"
#include "server.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uv_loop_t *loop;
static sharp_grpc_client_t *client;
static uint64_t t0;
static char **actions;
static int nactions, next_action;
static sharp_headers_t call_md;
static uint64_t call_timeout;
static uv_timer_t step_timer, destroy_timer, hold_timer;
static uv_pipe_t in_pipe;
static bool in_pipe_open, destroyed, finished;

static double now_ms(void)
{
    return (double)(sharp_now_ns() - t0) / 1e6;
}

static void run_next(void);

static void next_soon(void)
{
    if (!destroyed) uv_timer_start(&step_timer, (uv_timer_cb)run_next, 0, 0);
}

static void emit(sharp_sbuf_t *b)
{
    sharp_sbuf_printf(b, ",\"t_ms\":%.1f}\n", now_ms());
    fwrite(b->data, 1, b->len, stdout);
    fflush(stdout);
    sharp_sbuf_free(b);
}

static void put_str(sharp_sbuf_t *b, const char *k, const char *v)
{
    sharp_sbuf_printf(b, ",\"%s\":\"", k);
    sharp_sbuf_json_escape(b, v, strlen(v));
    sharp_sbuf_puts(b, "\"");
}

static void put_headers(sharp_sbuf_t *b, const char *k, const sharp_headers_t *h)
{
    sharp_sbuf_printf(b, ",\"%s\":[", k);
    for (uint32_t i = 0; h && i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        sharp_sbuf_puts(b, i ? ",[\"" : "[\"");
        sharp_sbuf_json_escape(b, n.p, n.len);
        sharp_sbuf_puts(b, "\",\"");
        sharp_sbuf_json_escape(b, v.p, v.len);
        sharp_sbuf_puts(b, "\"]");
    }
    sharp_sbuf_puts(b, "]");
}

static void begin(sharp_sbuf_t *b, const char *event, const char *action)
{
    memset(b, 0, sizeof *b);
    sharp_sbuf_puts(b, "{\"event\":\"");
    sharp_sbuf_puts(b, event);
    sharp_sbuf_puts(b, "\"");
    put_str(b, "action", action);
}

static void put_status(sharp_sbuf_t *b, int status, const char *message)
{
    const char *name = sharp_grpc_status_name(status, true);
    sharp_sbuf_printf(b, ",\"status\":%d,\"status_name\":\"%s\"", status, name ? name : "?");
    put_str(b, "message", message ? message : "");
}

/* ---- unary ---- */

static void on_unary(void *arg, int status, const char *message, const ProtobufCMessage *rsp,
                     const sharp_headers_t *trailers)
{
    const char *action = arg;
    sharp_sbuf_t b;
    begin(&b, "unary", action);
    put_status(&b, status, message);
    if (rsp && rsp->descriptor == &grpc__health__v1__health_check_response__descriptor)
        sharp_sbuf_printf(&b, ",\"response\":{\"status\":%d}",
                          (int)((const Grpc__Health__V1__HealthCheckResponse *)rsp)->status);
    else if (rsp)
        sharp_sbuf_printf(&b, ",\"response\":{\"len\":%zu}", ((const Google__Protobuf__BytesValue *)rsp)->value.len);
    put_headers(&b, "trailers", trailers);
    emit(&b);
    next_soon();
}

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 7 + 1);
}

/* ---- echo and hold streams ---- */

typedef struct {
    const char *action;
    sharp_grpc_stream_t *s;
    size_t n, size, sent, received, mismatches, full_events;
    uint8_t *buf;
    bool hold;
} echo_t;

static echo_t echo;

static void echo_send_more(void)
{
    while (echo.sent < echo.n) {
        memset(echo.buf, pattern(echo.sent), echo.size);
        Google__Protobuf__BytesValue m = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
        m.value.data = echo.buf;
        m.value.len = echo.size;
        sharp_grpc_send_result_t r = sharp_grpc_stream_send(echo.s, &m.base);
        if (r == SHARP_GRPC_SEND_REFUSED) return; /* ended, or waits for on_writable */
        echo.sent++;
        if (r == SHARP_GRPC_SEND_FULL) {
            echo.full_events++;
            return;
        }
    }
    if (!echo.hold) sharp_grpc_stream_close_send(echo.s);
}

static void echo_on_md(void *arg, const sharp_headers_t *h)
{
    (void)arg;
    sharp_sbuf_t b;
    begin(&b, "initial_metadata", echo.action);
    put_headers(&b, "metadata", h);
    emit(&b);
}

static void echo_on_message(void *arg, const ProtobufCMessage *m)
{
    (void)arg;
    const Google__Protobuf__BytesValue *v = (const Google__Protobuf__BytesValue *)m;
    size_t i = echo.received++;
    bool ok = v->value.len == echo.size;
    for (size_t k = 0; ok && k < v->value.len; k++) ok = v->value.data[k] == pattern(i);
    if (!ok) echo.mismatches++;
    if (echo.hold) {
        sharp_sbuf_t b;
        begin(&b, "message", echo.action);
        sharp_sbuf_printf(&b, ",\"len\":%zu", v->value.len);
        emit(&b);
    }
}

static void echo_on_close(void *arg, int status, const char *message, const sharp_headers_t *trailers)
{
    (void)arg;
    uv_timer_stop(&hold_timer);
    sharp_sbuf_t b;
    begin(&b, "close", echo.action);
    put_status(&b, status, message);
    sharp_sbuf_printf(&b, ",\"sent\":%zu,\"received\":%zu,\"mismatches\":%zu,\"full_events\":%zu", echo.sent,
                      echo.received, echo.mismatches, echo.full_events);
    put_headers(&b, "trailers", trailers);
    emit(&b);
    echo.s = NULL;
    free(echo.buf);
    echo.buf = NULL;
    next_soon();
}

static void echo_on_writable(void *arg)
{
    (void)arg;
    echo_send_more();
}

static const sharp_grpc_stream_callbacks_t echo_cb = {
    .on_initial_metadata = echo_on_md,
    .on_message = echo_on_message,
    .on_close = echo_on_close,
    .on_writable = echo_on_writable,
};

static void on_hold_timer(uv_timer_t *t)
{
    (void)t;
    if (!echo.s) return;
    sharp_grpc_stream_cancel(echo.s);
    echo.s = NULL;
    free(echo.buf);
    echo.buf = NULL;
    sharp_sbuf_t b;
    begin(&b, "cancelled", echo.action);
    emit(&b);
    next_soon();
}

/* ---- retrying stream ---- */

static sharp_grpc_retrying_stream_t *retrying;
static const char *retry_action;

static void rs_open(void *arg, sharp_grpc_retrying_stream_t *rs)
{
    (void)arg;
    Google__Protobuf__BytesValue m = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
    m.value.data = (uint8_t *)"hello";
    m.value.len = 5;
    int r = sharp_grpc_retrying_stream_send(rs, &m.base);
    sharp_sbuf_t b;
    begin(&b, "open", retry_action);
    sharp_sbuf_printf(&b, ",\"send\":%d", r);
    emit(&b);
}

static void rs_message(void *arg, const ProtobufCMessage *m)
{
    (void)arg;
    sharp_sbuf_t b;
    begin(&b, "message", retry_action);
    sharp_sbuf_printf(&b, ",\"len\":%zu", ((const Google__Protobuf__BytesValue *)m)->value.len);
    emit(&b);
}

static void rs_close(void *arg, int status, const char *message, uint64_t retry_in_ms)
{
    (void)arg;
    sharp_sbuf_t b;
    begin(&b, "close", retry_action);
    put_status(&b, status, message);
    sharp_sbuf_printf(&b, ",\"retry_in_ms\":%llu", (unsigned long long)retry_in_ms);
    emit(&b);
}

static const sharp_grpc_retry_callbacks_t rs_cb = {.on_open = rs_open, .on_message = rs_message, .on_close = rs_close};

static void on_retry_done(uv_timer_t *t)
{
    (void)t;
    sharp_grpc_retrying_stream_stop(retrying);
    retrying = NULL;
    sharp_sbuf_t b;
    begin(&b, "stopped", retry_action);
    emit(&b);
    next_soon();
}

/* ---- stdin and the end ---- */

static void retry_stop_now(void)
{
    on_retry_done(NULL);
}

static void (*stdin_then)(void);

static void in_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf)
{
    (void)h;
    static char mem[256];
    (void)n;
    *buf = uv_buf_init(mem, sizeof mem);
}

static void in_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread == 0) return;
    uv_read_stop(st);
    stdin_then();
}

static void read_stdin_line(void)
{
    if (!in_pipe_open) {
        uv_pipe_init(loop, &in_pipe, 0);
        uv_pipe_open(&in_pipe, 0);
        in_pipe_open = true;
    }
    uv_read_start((uv_stream_t *)&in_pipe, in_alloc, in_read);
}

static void close_handles(void)
{
    uv_timer_stop(&step_timer);
    uv_timer_stop(&hold_timer);
    uv_timer_stop(&destroy_timer);
    uv_handle_t *hs[] = {(uv_handle_t *)&step_timer, (uv_handle_t *)&hold_timer, (uv_handle_t *)&destroy_timer};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(hs); i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
    if (in_pipe_open && !uv_is_closing((uv_handle_t *)&in_pipe)) uv_close((uv_handle_t *)&in_pipe, NULL);
}

static void destroy_client(void)
{
    destroyed = true;
    sharp_grpc_client_destroy(client);
    client = NULL;
    retrying = NULL;
    echo.s = NULL;
    free(echo.buf);
    echo.buf = NULL;
    close_handles();
}

static void on_destroy_timer(uv_timer_t *t)
{
    (void)t;
    sharp_sbuf_t b;
    begin(&b, "destroyed", "destroy");
    emit(&b);
    destroy_client();
}

static void run_next(void)
{
    if (destroyed || finished) return;
    if (next_action >= nactions) {
        finished = true;
        sharp_sbuf_t b;
        begin(&b, "done", "");
        emit(&b);
        destroy_client();
        return;
    }
    char *a = actions[next_action++];
    char *copy = sharp_strdup(a);
    char *f[6] = {0};
    int nf = 0;
    for (char *p = copy, *tok; nf < 6 && (tok = strsep(&p, ":")); ) f[nf++] = tok;
    if (!strcmp(f[0], "md") && f[1] && strchr(f[1], '=')) {
        char *eq = strchr(a + 3, '=');
        sharp_headers_add(&call_md, a + 3, (size_t)(eq - (a + 3)), eq + 1, strlen(eq + 1));
        next_soon();
    } else if (!strcmp(f[0], "nomd")) {
        sharp_headers_clear(&call_md);
        next_soon();
    } else if (!strcmp(f[0], "timeout") && f[1]) {
        call_timeout = strtoull(f[1], NULL, 10);
        next_soon();
    } else if (!strcmp(f[0], "health")) {
        Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        rq.service = f[1] ? f[1] : "";
        sharp_grpc_unary(client, "/grpc.health.v1.Health/Check", &rq.base,
                         &grpc__health__v1__health_check_response__descriptor, call_timeout, &call_md, on_unary, a);
    } else if (!strcmp(f[0], "unary") && nf >= 3) {
        size_t n = strtoull(f[2], NULL, 10);
        uint8_t *buf = sharp_calloc(1, n ? n : 1);
        memset(buf, pattern(0), n);
        Google__Protobuf__BytesValue m = GOOGLE__PROTOBUF__BYTES_VALUE__INIT;
        m.value.data = buf;
        m.value.len = n;
        sharp_grpc_unary(client, f[1], &m.base, &google__protobuf__bytes_value__descriptor, call_timeout, &call_md,
                         on_unary, a);
        free(buf);
    } else if ((!strcmp(f[0], "echo") && nf >= 4) || (!strcmp(f[0], "hold") && nf >= 3)) {
        memset(&echo, 0, sizeof echo);
        echo.action = a;
        echo.hold = f[0][0] == 'h';
        echo.n = echo.hold ? 1 : strtoull(f[2], NULL, 10);
        echo.size = echo.hold ? 16 : strtoull(f[3], NULL, 10);
        echo.buf = sharp_calloc(1, echo.size ? echo.size : 1);
        echo.s = sharp_grpc_stream_start(client, f[1], &google__protobuf__bytes_value__descriptor, call_timeout,
                                         &call_md, &echo_cb, NULL);
        echo_send_more();
        if (echo.hold) uv_timer_start(&hold_timer, on_hold_timer, strtoull(f[2], NULL, 10), 0);
    } else if (!strcmp(f[0], "retry") && nf >= 5) {
        retry_action = a;
        retrying = sharp_grpc_retrying_stream_start(client, f[1], &google__protobuf__bytes_value__descriptor,
                                                    &call_md, strtoull(f[2], NULL, 10), strtoull(f[3], NULL, 10),
                                                    &rs_cb, NULL);
        uint64_t ms = strtoull(f[4], NULL, 10);
        if (ms) {
            uv_timer_start(&hold_timer, on_retry_done, ms, 0);
        } else {
            stdin_then = retry_stop_now;
            read_stdin_line();
        }
    } else if (!strcmp(f[0], "sleep") && f[1]) {
        uv_timer_start(&step_timer, (uv_timer_cb)run_next, strtoull(f[1], NULL, 10), 0);
    } else if (!strcmp(f[0], "wait")) {
        stdin_then = next_soon;
        read_stdin_line();
    } else if (!strcmp(f[0], "destroy-in") && f[1]) {
        uv_timer_start(&destroy_timer, on_destroy_timer, strtoull(f[1], NULL, 10), 0);
        next_soon();
    } else {
        fprintf(stderr, "unknown action '%s'\n", a);
        exit(2);
    }
    free(copy);
}

int main(int argc, char **argv)
{
    sharp_options_t o = {.concurrency = 1, .log_level = SHARP_LOG_WARN, .drain_time_s = 600,
                         .parent_shutdown_time_s = 900};
    sharp_grpc_client_config_t cfg = {0};
    sharp_headers_t md;
    sharp_headers_init(&md);
    sharp_headers_init(&call_md);
    static const struct option longopts[] = {
        {"cluster", required_argument, NULL, 'C'}, {"authority", required_argument, NULL, 'a'},
        {"md", required_argument, NULL, 'm'},      {"timeout-ms", required_argument, NULL, 't'},
        {"max-recv", required_argument, NULL, 'r'}, {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:l:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o.config_path = optarg; break;
        case 'l': o.log_level = sharp_log_level_parse(optarg); break;
        case 'C': cfg.cluster_name = optarg; break;
        case 'a': cfg.authority = optarg; break;
        case 'm': {
            char *eq = strchr(optarg, '=');
            if (!eq) return 2;
            sharp_headers_add(&md, optarg, (size_t)(eq - optarg), eq + 1, strlen(eq + 1));
            break;
        }
        case 't': cfg.timeout_ms = strtoull(optarg, NULL, 10); break;
        case 'r': cfg.max_recv_bytes = (uint32_t)strtoul(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    sharp_log_set_all((sharp_log_level_t)(o.log_level < 0 ? SHARP_LOG_WARN : o.log_level));
    actions = argv + optind;
    nactions = argc - optind;
    cfg.initial_metadata = &md;
    t0 = sharp_now_ns();
    sharp_server_t srv;
    if (sharp_server_init(&srv, &o) != 0) return 1;
    loop = uv_default_loop();
    static const bool never = false;
    uint64_t rng = sharp_now_ns() | 1;
    sharp_upstream_env_t env = {loop, sharp_stats_shard(srv.stats, 0), &rng, &never, &never};
    char err[512];
    client = sharp_grpc_client_create(&env, srv.snap, &cfg, err, sizeof err);
    int rc = 0;
    if (!client) {
        printf("{\"event\":\"error\",\"message\":\"%s\"}\n", err);
        rc = 1;
    } else {
        uv_timer_init(loop, &step_timer);
        uv_timer_init(loop, &destroy_timer);
        uv_timer_init(loop, &hold_timer);
        next_soon();
        uv_run(loop, UV_RUN_DEFAULT);
    }
    while (uv_run(loop, UV_RUN_NOWAIT)) {
    }
    uv_loop_close(loop);
    sharp_headers_free(&md);
    sharp_headers_free(&call_md);
    sharp_server_free(&srv);
    return rc;
}
