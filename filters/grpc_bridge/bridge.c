/* bridge.c: framing and header logic of the gRPC HTTP/1 bridges (see
 * bridge.h). */
#include "filters/grpc_bridge/bridge.h"
#include "http/grpc.h"

#include <stdio.h>
#include <string.h>

void sharp_grpc_bridge_frame_header(uint8_t out[SHARP_GRPC_FRAME_HEADER_SIZE], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool sharp_grpc_bridge_atou64(sharp_str_t v, uint64_t *out)
{
    const char *p = v.p, *end = v.p + v.len;
    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    if (p < end && *p == '+') p++;
    if (p == end) return false;
    uint64_t n = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (n > (UINT64_MAX - d) / 10) return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

bool sharp_grpc_bridge_size_header(const sharp_headers_t *h, const char *name, uint64_t *out)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, name, &v)) return false;
    const char *comma = memchr(v.p, ',', v.len);
    if (comma) v.len = (size_t)(comma - v.p);
    return sharp_grpc_bridge_atou64(v, out);
}

bool sharp_grpc_bridge_adjust_content_length(sharp_headers_t *h, int64_t delta)
{
    sharp_str_t v;
    uint64_t n;
    if (!sharp_headers_get_cstr(h, "content-length", &v) || !sharp_grpc_bridge_atou64(v, &n) ||
        n == 0)
        return true;
    if (delta < 0 && n < (uint64_t)-delta) return false;
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)(n + (uint64_t)delta));
    sharp_headers_set_cstr(h, "content-length", buf);
    return true;
}

bool sharp_grpc_bridge_is_protobuf(const sharp_headers_t *h)
{
    sharp_str_t ct;
    static const char pb[] = "application/x-protobuf";
    return sharp_headers_get_cstr(h, "content-type", &ct) && ct.len == sizeof pb - 1 &&
           memcmp(ct.p, pb, ct.len) == 0;
}

void sharp_grpc_bridge_merge_trailers(sharp_headers_t *resp, const sharp_headers_t *trailers,
                                      uint64_t body_len)
{
    sharp_str_t v;
    if (sharp_headers_get_cstr(trailers, "grpc-status", &v)) {
        uint64_t code;
        if (!sharp_grpc_bridge_atou64(v, &code) || code != 0)
            sharp_headers_set_cstr(resp, ":status", "503");
        sharp_headers_set(resp, "grpc-status", 11, v.p, v.len);
    }
    if (sharp_headers_get_cstr(trailers, "grpc-message", &v))
        sharp_headers_set(resp, "grpc-message", 12, v.p, v.len);
    char buf[24];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)body_len);
    sharp_headers_set_cstr(resp, "content-length", buf);
}

uint32_t sharp_grpc_bridge_status_from_http(uint32_t http_status)
{
    return http_status == 200 ? 0 : sharp_grpc_status_from_http(http_status);
}
