/* fuzz_http2_response.c: libFuzzer target for the upstream HTTP/2 response
 * path, in process and over real sockets (http1_harness.h): the pool's
 * nghttp2 client codec against a hostile or broken HTTP/2 server (its
 * SETTINGS, frames in any order and state, HPACK, flow control, resets,
 * GOAWAY, 1xx, trailers, padding, CONTINUATION), the retries it causes
 * (the route retries resets and refused streams once), the router's
 * handling of what the codec reports, the response filter chain and the
 * downstream HTTP/1 encoder.
 *
 * Input: byte 0 is options, byte 1 the split seed (fz_split), the rest is
 * what the fake HTTP/2 server writes, from its first byte (its SETTINGS,
 * the server's connection preface), on each HTTP/2 connection the proxy
 * has opened once its request is forwarded, in those chunks with the loop
 * settling between them. What the proxy writes to it is read and dropped.
 *   options & 7: the downstream HTTP/1.1 client's request (path /h2/...,
 *     routed to the HTTP/2 cluster)
 *     0 GET          1 HEAD          2 POST with content-length
 *     3 chunked POST with a trailer  4 GET, HTTP/1.0
 *     5 gRPC-like POST (te: trailers)
 *     6 GET with connection: close   7 two pipelined GETs
 *   options & 8: the server closes its connections after its last byte
 *     (otherwise the client goes away first).
 *   options & 16: once settled, the client sends another GET on the same
 *     connection (the HTTP/2 connection is reused for it when it is still
 *     good; the server does not answer it).
 *
 * Besides the sanitizers' invariants (and LeakSanitizer at each input's
 * end), the oracle is fz_responses_t: what the client receives must parse
 * as strict HTTP/1.1 responses, no more final ones than it sent requests. */
#include "http1_harness.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const requests[8] = {
    "GET /h2/r HTTP/1.1\r\nhost: fuzz\r\nuser-agent: fuzz\r\n\r\n",
    "HEAD /h2/r HTTP/1.1\r\nhost: fuzz\r\n\r\n",
    "POST /h2/r HTTP/1.1\r\nhost: fuzz\r\ncontent-length: 5\r\n\r\nhello",
    "POST /h2/r HTTP/1.1\r\nhost: fuzz\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
    "GET /h2/r HTTP/1.0\r\nhost: fuzz\r\n\r\n",
    ("POST /h2/pkg.Svc/Call HTTP/1.1\r\nhost: fuzz\r\ncontent-type: application/grpc\r\nte: trailers\r\n"
     "content-length: 5\r\n\r\n\0\0\0\0\0"),
    "GET /h2/r HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n",
    "GET /h2/r HTTP/1.1\r\nhost: fuzz\r\n\r\nGET /h2/s HTTP/1.1\r\nhost: fuzz\r\n\r\n",
};
static const char second_request[] = "GET /h2/second HTTP/1.1\r\nhost: fuzz\r\n\r\n";

/* The request strings hold a NUL (the gRPC message): their lengths. */
static size_t request_len(unsigned kind)
{
    const char *r = requests[kind];
    if (kind != 5) return strlen(r);
    return strlen(r) + 5;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t opts = data[0];
    uint8_t seed = data[1];
    const char *frames = (const char *)data + 2;
    size_t len = size - 2;

    static fz_responses_t rr;
    static fz_run_t r;
    memset(&r, 0, sizeof r);
    fz_responses_init(&r, &rr, "fuzz_http2_response", (opts & 7) == 1);
    fz_start(&r);
    unsigned kind = opts & 7;
    rr.requests_sent = kind == 7 ? 2 : 1;
    fz_client_send(&r, requests[kind], request_len(kind));
    fz_settle(&r); /* accepted, routed, forwarded: the server has the request */

    fz_upstream_answer(&r, 1, frames, len, seed, opts & 8);
    if (opts & 16) {
        rr.requests_sent++;
        fz_client_send(&r, second_request, sizeof second_request - 1);
        fz_settle(&r);
    }
    fz_finish(&r);
    return 0;
}
