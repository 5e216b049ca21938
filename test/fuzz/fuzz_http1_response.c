/* fuzz_http1_response.c: libFuzzer target for the upstream HTTP/1 response
 * path, in process and over real sockets (http1_harness.h): the pool's
 * client codec (llhttp callbacks, 1xx, upgrades, close-delimited bodies,
 * connection reuse), the router's handling of what it reports, the
 * response filter chain, header mutations and the downstream encoder.
 *
 * Input: byte 0 is options, byte 1 the split seed (fz_split), the rest is
 * what the fake upstream answers to the one request the proxy forwards,
 * written in those chunks with the loop settling between them (each chunk
 * is a separate read for the pool).
 *   options & 7: the client's request
 *     0 GET          1 HEAD          2 POST with content-length
 *     3 WebSocket upgrade            4 GET, HTTP/1.0
 *     5 chunked POST                 6 GET on a mirrored route (the
 *       shadow gets the same answer) 7 GET with connection: close
 *   options & 8: the upstream closes its connection after its last byte
 *     (otherwise the client goes away first).
 *   options & 16: once settled, the client sends a second GET on the same
 *     connection (an idle upstream connection is reused for it; the
 *     upstream does not answer it).
 *
 * Besides the sanitizers' invariants, one oracle (fz_responses_t): what the
 * client receives must parse as strict HTTP/1.1 responses, no more final
 * ones than it sent requests. */
#include "http1_harness.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const requests[8] = {
    "GET /r HTTP/1.1\r\nhost: fuzz\r\nuser-agent: fuzz\r\n\r\n",
    "HEAD /r HTTP/1.1\r\nhost: fuzz\r\n\r\n",
    "POST /r HTTP/1.1\r\nhost: fuzz\r\ncontent-length: 5\r\n\r\nhello",
    "GET /ws HTTP/1.1\r\nhost: fuzz\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    "GET /r HTTP/1.0\r\nhost: fuzz\r\n\r\n",
    "POST /r HTTP/1.1\r\nhost: fuzz\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /mirror/r HTTP/1.1\r\nhost: fuzz\r\n\r\n",
    "GET /r HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n",
};
static const char second_request[] = "GET /second HTTP/1.1\r\nhost: fuzz\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t opts = data[0];
    uint8_t seed = data[1];
    const char *resp = (const char *)data + 2;
    size_t len = size - 2;

    static fz_responses_t rr;
    static fz_run_t r;
    memset(&r, 0, sizeof r);
    fz_responses_init(&r, &rr, "fuzz_http1_response", (opts & 7) == 1);
    fz_start(&r);
    const char *req = requests[opts & 7];
    rr.requests_sent = 1;
    fz_client_send(&r, req, strlen(req));
    fz_settle(&r); /* accepted, routed, forwarded: the upstream has the request */

    /* the answer, to every connection the proxy opened (a mirrored
     * request's shadow gets the same one) */
    fz_upstream_answer(&r, -1, resp, len, seed, opts & 8);
    if (opts & 16) {
        rr.requests_sent++;
        fz_client_send(&r, second_request, sizeof second_request - 1);
        fz_settle(&r);
    }
    fz_finish(&r);
    return 0;
}
