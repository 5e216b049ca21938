/* fuzz_grpc_server.c: libFuzzer target for SHARP's own gRPC server (the
 * admin listener's HTTP/2 side, proxy/grpc/server.c) with
 * grpc.health.v1.Health registered: nghttp2's server session, the gRPC
 * request checks (content-type, path, grpc-timeout, message framing and
 * sizes), unary Check and server-streaming Watch, trailers-only errors, the
 * plain (non-gRPC) requests the admin answers, deadlines and cancellation.
 *
 * Input: one options byte, then what the client sends after the connection
 * preface (which the target always sends first), in chunks whose sizes come
 * from the options' split seed; the loop runs between chunks, so deadline
 * timers of 0 and 1 ms fire.
 *   options & 1: the server is serving (else NOT_SERVING)
 *   options & 2: the socket's queue stays above the high-water mark until
 *                the input ends (the server must hold its output back)
 *   options & 4: the health state flips after each chunk (Watch calls get
 *                new messages)
 *   options >> 3: split seed
 *
 * Oracle, besides the sanitizers (and LeakSanitizer at each input's end):
 * whatever the server writes is well-formed HTTP/2 framing: a sequence of
 * whole frames (9-byte header plus the length it gives), none longer than
 * the default SETTINGS_MAX_FRAME_SIZE (16384, which the server never
 * raises), connection-level frames (SETTINGS, PING, GOAWAY) on stream 0,
 * and HEADERS, DATA and RST_STREAM only on odd (client-opened) streams. */
#include "grpc/health.h"
#include "grpc/server.h"
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

typedef struct {
    sharp_sbuf_t out;   /* everything written, checked at the end */
    bool backpressure;  /* write_queued reports a full socket */
    bool done;
    bool serving;
} fz_t;

static void fz_write(void *ctx, sharp_sbuf_t *bytes)
{
    fz_t *f = ctx;
    sharp_sbuf_append(&f->out, bytes->data, bytes->len);
    sharp_sbuf_reset(bytes);
}

static size_t fz_write_queued(void *ctx)
{
    fz_t *f = ctx;
    return f->backpressure ? SHARP_GRPC_CONN_WRITE_HIGH + 1 : 0;
}

static void fz_done(void *ctx)
{
    ((fz_t *)ctx)->done = true;
}

static void fz_plain(void *ctx, const struct sharp_headers *req, const char *body, size_t len,
                     sharp_grpc_plain_response_t *rsp)
{
    (void)ctx;
    (void)req;
    rsp->status = 200;
    rsp->content_type = "text/plain";
    sharp_sbuf_append(&rsp->body, "plain ", 6);
    sharp_sbuf_append(&rsp->body, body, len);
}

static const sharp_grpc_conn_io_t fz_io = {fz_write, fz_write_queued, fz_done, fz_plain, NULL};

static bool fz_serving(void *arg)
{
    return ((fz_t *)arg)->serving;
}

static void check_framing(const sharp_sbuf_t *out)
{
    size_t at = 0;
    while (at < out->len) {
        if (out->len - at < 9) {
            fprintf(stderr, "fuzz_grpc_server: a partial frame header at %zu of %zu\n", at, out->len);
            abort();
        }
        const uint8_t *h = (const uint8_t *)out->data + at;
        uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
        uint8_t type = h[3];
        uint32_t stream = ((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) & 0x7fffffffu;
        if (len > 16384) {
            fprintf(stderr, "fuzz_grpc_server: frame of type %u with %u bytes\n", type, len);
            abort();
        }
        bool conn_level = type == 0x4 || type == 0x6 || type == 0x7; /* SETTINGS, PING, GOAWAY */
        bool stream_level = type == 0x0 || type == 0x1 || type == 0x3; /* DATA, HEADERS, RST_STREAM */
        if ((conn_level && stream != 0) || (stream_level && (stream == 0 || stream % 2 == 0))) {
            fprintf(stderr, "fuzz_grpc_server: frame of type %u on stream %u\n", type, stream);
            abort();
        }
        if (out->len - at - 9 < len) {
            fprintf(stderr, "fuzz_grpc_server: frame of %u bytes cut at the end of the output\n", len);
            abort();
        }
        at += 9 + (size_t)len;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sharp_log_set_all(SHARP_LOG_OFF);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t opt = data[0];
    data++;
    size--;
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return 0;
    fz_t f = {.backpressure = opt & 2, .serving = opt & 1};
    sharp_grpc_registry_t *reg = sharp_grpc_registry_new();
    sharp_grpc_health_t *health = sharp_grpc_health_register(reg, fz_serving, &f);
    sharp_grpc_conn_t *c = sharp_grpc_conn_new(reg, &loop, &fz_io, &f);

    int rc = sharp_grpc_conn_recv(c, (const uint8_t *)preface, sizeof preface - 1);
    uint32_t seed = opt >> 3;
    size_t at = 0;
    while (rc == 0 && at < size && !f.done) {
        /* chunk sizes 1..64, or the rest, from a small LCG on the seed */
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % 8 == 0 ? size - at : 1 + (seed >> 16) % 64;
        if (n > size - at) n = size - at;
        rc = sharp_grpc_conn_recv(c, data + at, n);
        at += n;
        uv_run(&loop, UV_RUN_NOWAIT);
        if (opt & 4) {
            f.serving = !f.serving;
            sharp_grpc_health_changed(health);
        }
    }
    f.backpressure = false;
    if (!f.done) sharp_grpc_conn_flush(c);
    uv_run(&loop, UV_RUN_NOWAIT);
    check_framing(&f.out);

    sharp_grpc_conn_free(c);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0) {
    }
    sharp_grpc_registry_free(reg);
    uv_loop_close(&loop);
    sharp_sbuf_free(&f.out);
    return 0;
}
