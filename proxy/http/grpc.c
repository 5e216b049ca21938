/* grpc.c: see grpc.h. */
#include "http/grpc.h"

#include <string.h>
#include <strings.h>

bool sharp_grpc_is_request(const sharp_headers_t *h)
{
    sharp_str_t ct;
    if (!h || !sharp_headers_get_cstr(h, "content-type", &ct)) return false;
    const size_t n = 16; /* "application/grpc" */
    if (ct.len < n || strncasecmp(ct.p, "application/grpc", n) != 0) return false;
    return ct.len == n || ct.p[n] == '+' || ct.p[n] == ';';
}

uint32_t sharp_grpc_status_from_http(uint32_t http_status)
{
    switch (http_status) {
    case 400: return 13; /* Internal */
    case 401: return 16; /* Unauthenticated */
    case 403: return 7;  /* PermissionDenied */
    case 404: return 12; /* Unimplemented */
    case 429:
    case 502:
    case 503:
    case 504: return 14; /* Unavailable */
    default: return 2;   /* Unknown */
    }
}

uint32_t sharp_grpc_status_to_http(int64_t st)
{
    static const uint16_t http[] = {
        200, /* OK */
        499, /* Canceled: client closed request */
        500, /* Unknown */
        400, /* InvalidArgument */
        504, /* DeadlineExceeded */
        404, /* NotFound */
        409, /* AlreadyExists */
        403, /* PermissionDenied */
        429, /* ResourceExhausted */
        400, /* FailedPrecondition */
        409, /* Aborted */
        400, /* OutOfRange */
        501, /* Unimplemented */
        500, /* Internal */
        503, /* Unavailable */
        500, /* DataLoss */
        401, /* Unauthenticated */
    };
    return st >= 0 && st <= 16 ? http[st] : 500;
}

static bool header_status(const sharp_headers_t *h, int64_t *out)
{
    sharp_str_t v;
    if (!h || !sharp_headers_get_cstr(h, "grpc-status", &v) || !v.len) return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9' || i >= 10) {
            *out = -1; /* InvalidCode */
            return true;
        }
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = n > UINT32_MAX ? -1 : (int64_t)n;
    return true;
}

bool sharp_grpc_response_status(const sharp_headers_t *trailers, const sharp_headers_t *headers,
                                uint32_t http_status, int64_t *out)
{
    if (header_status(trailers, out) || header_status(headers, out)) return true;
    if (!http_status) return false;
    *out = sharp_grpc_status_from_http(http_status);
    return true;
}

static const char *const camel[] = {
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated",
};
static const char *const snake[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *sharp_grpc_status_name(int64_t code, bool snake_case)
{
    if (code < 0 || code > 16) return NULL;
    return snake_case ? snake[code] : camel[code];
}

void sharp_grpc_percent_encode(sharp_sbuf_t *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            sharp_sbuf_append(out, (const char *)&ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            sharp_sbuf_append(out, e, 3);
        }
    }
}

bool sharp_grpc_timeout_ms(sharp_str_t v, uint64_t *ms)
{
    /* TimeoutValue = 1*8DIGIT, TimeoutUnit = H / M / S / m / u / n */
    if (v.len < 2 || v.len > 9) return false;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') return false;
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    switch (v.p[v.len - 1]) {
    case 'H': *ms = n * 3600 * 1000; return true;
    case 'M': *ms = n * 60 * 1000; return true;
    case 'S': *ms = n * 1000; return true;
    case 'm': *ms = n; return true;
    case 'u': *ms = (n + 999) / 1000; return true;
    case 'n': *ms = (n + 999999) / 1000000; return true;
    default: return false;
    }
}

size_t sharp_grpc_timeout_format(uint64_t ms, char out[10])
{
    static const char units[] = "mSMH";
    const uint64_t max = 99999999;
    const char *unit = units;
    uint64_t t = ms;
    if (t > max) {
        t /= 1000;
        unit++;
    }
    while (t > max) {
        if (*unit == 'H') {
            t = max; /* no bigger unit: clipped to 8 digits of hours */
        } else {
            t /= 60;
            unit++;
        }
    }
    char digits[20];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + t % 10);
        t /= 10;
    } while (t);
    for (size_t i = 0; i < n; i++) out[i] = digits[n - 1 - i];
    out[n] = *unit;
    return n + 1;
}

static void put_varint(sharp_sbuf_t *out, uint64_t v)
{
    char b[10];
    size_t n = 0;
    do {
        b[n] = (char)(v & 0x7f);
        v >>= 7;
        if (v) b[n] |= (char)0x80;
        n++;
    } while (v);
    sharp_sbuf_append(out, b, n);
}

void sharp_grpc_health_request(sharp_sbuf_t *out, const char *service)
{
    /* HealthCheckRequest { string service = 1; }: an empty string is not
     * encoded (proto3 default) */
    sharp_sbuf_t msg = {0};
    size_t sl = service ? strlen(service) : 0;
    if (sl) {
        sharp_sbuf_append(&msg, "\x0a", 1);
        put_varint(&msg, sl);
        sharp_sbuf_append(&msg, service, sl);
    }
    char prefix[5] = {0, (char)(msg.len >> 24), (char)(msg.len >> 16), (char)(msg.len >> 8), (char)msg.len};
    sharp_sbuf_append(out, prefix, 5);
    if (msg.len) sharp_sbuf_append(out, msg.data, msg.len);
    sharp_sbuf_free(&msg);
}

static bool get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

int sharp_grpc_health_response_status(const char *data, size_t n, uint64_t *status)
{
    const unsigned char *p = (const unsigned char *)data;
    if (n < 5 || p[0] != 0) return -1; /* a compressed message is not decoded */
    size_t len = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) | ((size_t)p[3] << 8) | p[4];
    if (len != n - 5) return -1; /* exactly one message */
    const unsigned char *q = p + 5, *end = q + len;
    *status = 0; /* HealthCheckResponse { ServingStatus status = 1; }, UNKNOWN by default */
    while (q < end) {
        uint64_t key, v;
        if (!get_varint(&q, end, &key)) return -1;
        switch (key & 7) {
        case 0: /* varint */
            if (!get_varint(&q, end, &v)) return -1;
            if ((key >> 3) == 1) *status = v;
            break;
        case 1: /* 64-bit */
            if ((size_t)(end - q) < 8) return -1;
            q += 8;
            break;
        case 2: /* length-delimited: unknown fields are skipped */
            if (!get_varint(&q, end, &v) || v > (uint64_t)(end - q)) return -1;
            q += v;
            break;
        case 5: /* 32-bit */
            if ((size_t)(end - q) < 4) return -1;
            q += 4;
            break;
        default:
            return -1;
        }
    }
    return 0;
}
