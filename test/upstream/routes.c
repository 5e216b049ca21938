/* sharp-test-upstream endpoints: routing on the request target, response
 * generation, the /bytes streamer, the capacity-limited /work service and
 * the admin endpoints. See README.md for the list. */
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

unsigned char up_pattern[256 + UP_PIECE];

static char *name_hdr;    /* "x-upstream-name: NAME\r\nx-upstream-connection: " */
static size_t name_hdr_len;

/* scratch buffer for JSON bodies (single-threaded, reused) */
static char *sb;
static size_t sb_len, sb_cap;

#define CHECKSUM_SLICE (32u * 1024 * 1024)
#define MS_MAX 86400000ULL

void routes_init(void)
{
    for (size_t i = 0; i < sizeof up_pattern; i++)
        up_pattern[i] = (unsigned char)((i * 31 + 7) & 0xff);
    size_t n = g.name_len + 64;
    name_hdr = malloc(n);
    g.hello = malloc(g.name_len + 16);
    if (!name_hdr || !g.hello)
        abort();
    name_hdr_len = (size_t)snprintf(name_hdr, n, "x-upstream-name: %s\r\nx-upstream-connection: ",
                                    g.name);
    g.hello_len = (size_t)snprintf(g.hello, g.name_len + 16, "hello from %s\n", g.name);
}

void routes_free(void)
{
    free(name_hdr);
    free(g.hello);
    free(sb);
    name_hdr = g.hello = sb = NULL;
}

uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data, *e = p + len;
    while (p < e) {
        h ^= *p++;
        h *= FNV_PRIME;
    }
    return h;
}

/* ---- scratch JSON builder --------------------------------------------- */

static void sb_append(const void *d, size_t n)
{
    if (sb_cap - sb_len < n) {
        size_t cap = sb_cap ? sb_cap : 4096;
        while (cap - sb_len < n)
            cap *= 2;
        char *p = realloc(sb, cap);
        if (!p)
            abort();
        sb = p;
        sb_cap = cap;
    }
    memcpy(sb + sb_len, d, n);
    sb_len += n;
}

static void sb_str(const char *s)
{
    sb_append(s, strlen(s));
}

static void sb_u64(uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_append(tmp, (size_t)n);
}

static void sb_json(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_append("\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f)
            continue;
        sb_append(s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            sb_append(esc, 2);
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            esc[1] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
            sb_append(esc, 2);
        } else {
            sb_append(esc, 6);
        }
    }
    sb_append(s + run, n - run);
    sb_append("\"", 1);
}

static void sb_checksum_json(uint64_t bytes, uint64_t sum)
{
    char tmp[96];
    int n = snprintf(tmp, sizeof tmp, "{\"body_bytes\": %llu, \"checksum\": \"%016llx\"}\n",
                     (unsigned long long)bytes, (unsigned long long)sum);
    sb_len = 0;
    sb_append(tmp, (size_t)n);
}

/* ---- responses ------------------------------------------------------------ */

static const char *reason(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static void resp_status_line(conn_t *c, int code)
{
    out_str(c, "HTTP/1.1 ");
    out_u64(c, (uint64_t)code);
    out_str(c, " ");
    out_str(c, reason(code));
    out_str(c, "\r\n");
}

/* clen >= 0: content-length; -1: chunked; -2: no length (1xx/204/304) */
static void resp_rest(conn_t *c, const char *ctype, int64_t clen)
{
    out_append(c, name_hdr, name_hdr_len);
    out_u64(c, c->id);
    out_str(c, "\r\nx-upstream-request-on-connection: ");
    out_u64(c, c->nreq);
    for (unsigned i = 0; i < c->xh.n; i++) {
        out_str(c, "\r\n");
        out_append(c, c->xh.h[i].name, c->xh.h[i].name_len);
        out_str(c, ": ");
        out_append(c, c->xh.h[i].value, c->xh.h[i].value_len);
    }
    if (ctype && !xhdrs_has(&c->xh, "content-type")) {
        out_str(c, "\r\ncontent-type: ");
        out_str(c, ctype);
    }
    if (clen >= 0) {
        out_str(c, "\r\ncontent-length: ");
        out_u64(c, (uint64_t)clen);
    } else if (clen == -1) {
        out_str(c, "\r\ntransfer-encoding: chunked");
    }
    if (!c->keep_alive)
        out_str(c, "\r\nconnection: close\r\n\r\n");
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        out_str(c, "\r\nconnection: keep-alive\r\n\r\n");
    else
        out_str(c, "\r\n\r\n");
}

static void resp_simple(conn_t *c, int code, const char *ctype, const char *body, size_t len)
{
    int nobody = code < 200 || code == 204 || code == 304;
    resp_status_line(c, code);
    resp_rest(c, nobody ? NULL : ctype, nobody ? -2 : (int64_t)len);
    if (!nobody && !c->is_head)
        out_append(c, body, len);
    response_done(c);
}

static void resp_json(conn_t *c)
{
    resp_simple(c, 200, "application/json", sb, sb_len);
}

void resp_error(conn_t *c, int code)
{
    c->keep_alive = 0;
    c->is_head = 0;
    if (code == 431)
        resp_simple(c, 431, "text/plain", "request header fields too large\n", 32);
    else
        resp_simple(c, 400, "text/plain", "bad request\n", 12);
}

/* ---- routing ------------------------------------------------------------- */

static int path_is(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(p, lit, l) == 0;
}

/* Decimal with saturation; -1 if not all digits. */
static int parse_dec(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        if (v <= max)
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v > max ? max + 1 : v;
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

void xhdrs_parse(xhdrs_t *x, const char *q, size_t n)
{
    const char *e = q + n;
    while (q < e) {
        const char *amp = memchr(q, '&', (size_t)(e - q));
        const char *end = amp ? amp : e;
        if (end - q > 4 && memcmp(q, "hdr=", 4) == 0 && x->n < UP_XHDR_MAX) {
            /* percent-decode into the buffer, then split at the first ':' */
            char *out = x->buf + x->used;
            size_t room = UP_XHDR_BYTES - x->used, len = 0;
            int ok = 1;
            for (const char *p = q + 4; p < end && ok; p++) {
                char ch = *p;
                if (ch == '%' && end - p >= 3 && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
                    ch = (char)(hexval(p[1]) * 16 + hexval(p[2]));
                    p += 2;
                }
                if (len >= room || ch == '\r' || ch == '\n' || ch == '\0')
                    ok = 0;
                else
                    out[len++] = ch;
            }
            char *colon = ok ? memchr(out, ':', len) : NULL;
            if (colon && colon > out) {
                size_t nl = (size_t)(colon - out);
                const char *v = colon + 1;
                while (v < out + len && *v == ' ')
                    v++;
                x->h[x->n].name = out;
                x->h[x->n].name_len = nl;
                x->h[x->n].value = v;
                x->h[x->n].value_len = (size_t)(out + len - v);
                x->n++;
                x->used += len;
            }
        }
        q = end + 1;
    }
}

int xhdrs_has(const xhdrs_t *x, const char *name)
{
    for (unsigned i = 0; i < x->n; i++)
        if (x->h[i].name_len == strlen(name) && strncasecmp(x->h[i].name, name, x->h[i].name_len) == 0)
            return 1;
    return 0;
}

static void parse_query(conn_t *c, const char *q, size_t n)
{
    xhdrs_parse(&c->xh, q, n);
    const char *e = q + n;
    while (q < e) {
        const char *amp = memchr(q, '&', (size_t)(e - q));
        const char *end = amp ? amp : e;
        const char *eq = memchr(q, '=', (size_t)(end - q));
        if (eq) {
            const char *k = q, *v = eq + 1;
            size_t kl = (size_t)(eq - q), vl = (size_t)(end - v);
            uint64_t x = 0;
            if (parse_dec(v, vl, MS_MAX, &x) == 0) {
                if (x > MS_MAX)
                    x = MS_MAX;
                if (path_is(k, kl, "delay_ms"))
                    c->delay_ms = x;
                else if (path_is(k, kl, "chunk_delay_ms"))
                    c->chunk_delay_ms = x;
                else if (path_is(k, kl, "ms")) {
                    c->ms = x;
                    c->has_ms = 1;
                } else if (path_is(k, kl, "chunked"))
                    c->chunked = x != 0;
                else if (path_is(k, kl, "checksum"))
                    c->want_checksum = x != 0;
                else if (path_is(k, kl, "status"))
                    c->q_status = x;
                else if (path_is(k, kl, "reset"))
                    c->q_reset = x;
                else if (path_is(k, kl, "hang"))
                    c->q_hang = x;
                else if (path_is(k, kl, "slots")) {
                    c->q_slots = x;
                    c->has_slots = 1;
                }
            }
        }
        q = end + 1;
    }
}

static int header_is(conn_t *c, const hdr_t *h, const char *name, const char *val)
{
    return h->name_len == strlen(name) && h->val_len == strlen(val) &&
           strncasecmp(c->hbuf + h->name_off, name, h->name_len) == 0 &&
           strncasecmp(c->hbuf + h->val_off, val, h->val_len) == 0;
}

/* Called at headers-complete: decides the route; returns 0 or HPE_PAUSED
 * (for endpoints that drop the connection right away). */
int route_headers(conn_t *c)
{
    const char *path = c->hbuf;
    size_t pl = c->url_len;
    c->delay_ms = c->chunk_delay_ms = c->ms = c->n = 0;
    c->has_ms = c->chunked = c->want_checksum = c->delayed = 0;
    c->status_code = 0;
    c->q_status = c->q_reset = c->q_hang = c->q_slots = 0;
    c->has_slots = 0;
    c->xh.n = 0;
    c->xh.used = 0;

    if ((pl >= 7 && strncasecmp(path, "http://", 7) == 0) ||
        (pl >= 8 && strncasecmp(path, "https://", 8) == 0)) {
        const char *e = path + pl, *s = (const char *)memchr(path, ':', pl) + 3;
        while (s < e && *s != '/' && *s != '?')
            s++;
        path = s;
        pl = (size_t)(e - s);
    }
    const char *q = memchr(path, '?', pl);
    if (q) {
        parse_query(c, q + 1, (size_t)(path + pl - q - 1));
        pl = (size_t)(q - path);
    }

    route_t r = R_HELLO;
    uint64_t v;
    if (path_is(path, pl, "/echo"))
        r = R_ECHO;
    else if (pl > 8 && memcmp(path, "/status/", 8) == 0)
        r = parse_dec(path + 8, pl - 8, 999, &v) == 0 && v >= 100 && v <= 999
                ? (c->status_code = (int)v, R_STATUS)
                : R_BAD;
    else if (pl > 7 && memcmp(path, "/bytes/", 7) == 0)
        r = parse_dec(path + 7, pl - 7, UP_BYTES_MAX, &v) == 0 && v <= UP_BYTES_MAX
                ? (c->n = v, R_BYTES)
                : R_BAD;
    else if (path_is(path, pl, "/upload"))
        r = R_UPLOAD;
    else if (path_is(path, pl, "/reset"))
        r = R_RESET;
    else if (path_is(path, pl, "/close"))
        r = R_CLOSE;
    else if (path_is(path, pl, "/close-mid-body"))
        r = R_CLOSE_MID;
    else if (path_is(path, pl, "/garbage"))
        r = R_GARBAGE;
    else if (path_is(path, pl, "/slow-headers"))
        r = R_SLOW_HEADERS;
    else if (path_is(path, pl, "/work"))
        r = R_WORK;
    else if (path_is(path, pl, "/admin/service-time"))
        r = R_ADMIN_SERVICE_TIME;
    else if (path_is(path, pl, "/admin/stats"))
        r = R_ADMIN_STATS;
    else if (path_is(path, pl, "/admin/fault"))
        r = R_ADMIN_FAULT;
    if (r != R_ADMIN_SERVICE_TIME && r != R_ADMIN_STATS && r != R_ADMIN_FAULT) {
        if (g.fault_reset)
            r = R_RESET;
        else if (g.fault_hang)
            c->delay_ms = MS_MAX;
        else if (g.fault_status) {
            c->status_code = (int)g.fault_status;
            r = R_STATUS;
        }
    }
    c->route = r;
    c->hashing = r == R_UPLOAD;

    if (r == R_RESET) {
        c->close_mode = CM_RESET;
        return HPE_PAUSED;
    }
    if (r == R_CLOSE) {
        c->close_mode = CM_GRACEFUL;
        return HPE_PAUSED;
    }
    if (c->parser.http_major == 1 && c->parser.http_minor >= 1) {
        for (uint32_t i = 0; i < c->nhdrs; i++) {
            if (header_is(c, &c->hdrs[i], "expect", "100-continue")) {
                out_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
                break;
            }
        }
    }
    return 0;
}

/* ---- /work: N slots, FIFO queue --------------------------------------------- */

static int slot_free(void)
{
    return g.slots == 0 || g.in_service < g.slots;
}

static void work_peak(void)
{
    if (g.in_service + g.queued > g.work_peak)
        g.work_peak = g.in_service + g.queued;
}

static void work_start(conn_t *c)
{
    g.in_service++;
    work_peak();
    c->phase = PH_SERVICE;
    conn_timer_start(c, c->has_ms ? c->ms : g.service_ms);
}

static void work_kick(void)
{
    while (g.wq_head && slot_free()) {
        conn_t *c = g.wq_head;
        g.wq_head = c->wnext;
        if (g.wq_head)
            g.wq_head->wprev = NULL;
        else
            g.wq_tail = NULL;
        c->wnext = c->wprev = NULL;
        g.queued--;
        work_start(c);
    }
}

static void work_enqueue(conn_t *c)
{
    if (slot_free() && !g.wq_head) {
        work_start(c);
        return;
    }
    c->phase = PH_QUEUED;
    c->wprev = g.wq_tail;
    c->wnext = NULL;
    if (g.wq_tail)
        g.wq_tail->wnext = c;
    else
        g.wq_head = c;
    g.wq_tail = c;
    g.queued++;
    work_peak();
}

static void work_done(conn_t *c)
{
    g.in_service--;
    c->phase = PH_IDLE;
    work_kick();  /* queued requests get the slot before this connection's next one */
    resp_simple(c, 200, "text/plain", "work done\n", 10);
}

void route_on_close(conn_t *c)
{
    if (c->phase == PH_QUEUED) {
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            g.wq_head = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        else
            g.wq_tail = c->wprev;
        c->wnext = c->wprev = NULL;
        g.queued--;
    } else if (c->phase == PH_SERVICE) {
        g.in_service--;
        c->phase = PH_IDLE;
        work_kick();
    }
    c->phase = PH_IDLE;
}

/* ---- /bytes ----------------------------------------------------------------- */

static void checksum_slice(conn_t *c)
{
    uint64_t budget = CHECKSUM_SLICE;
    while (c->remaining && budget) {
        uint64_t k = c->remaining < UP_PIECE ? c->remaining : UP_PIECE;
        if (k > budget)
            k = budget;
        c->sum = fnv1a(c->sum, up_pattern + (c->pos & 255), (size_t)k);
        c->pos += k;
        c->remaining -= k;
        budget -= k;
    }
    if (c->remaining) {
        conn_timer_start(c, 0);  /* let other connections run */
        return;
    }
    sb_checksum_json(c->n, c->sum);
    resp_json(c);
}

void route_pump(conn_t *c)
{
    while (c->phase == PH_STREAM && !c->closed && !c->shutting && !c->wait_timer) {
        if (!c->remaining) {
            if (c->stream_chunked)
                out_str(c, "0\r\n\r\n");
            response_done(c);
            return;
        }
        if (pending_out(c) >= UP_HIGH_WM)
            return;  /* resumed from the write callback */
        if (c->chunk_delay_ms && c->pos && !c->delay_passed) {
            c->wait_timer = 1;
            conn_timer_start(c, c->chunk_delay_ms);
            return;
        }
        c->delay_passed = 0;
        size_t n = c->remaining < c->piece ? (size_t)c->remaining : c->piece;
        const char *data = (const char *)up_pattern + (c->pos & 255);
        if (c->stream_chunked) {
            char hdr[24];
            int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
            out_piece(c, hdr, (size_t)hl, data, n, "\r\n", 2);
        } else {
            out_piece(c, NULL, 0, data, n, NULL, 0);
        }
        c->pos += n;
        c->remaining -= n;
    }
}

static void bytes_start(conn_t *c)
{
    c->pos = 0;
    c->remaining = c->n;
    if (c->want_checksum) {
        c->sum = FNV_OFFSET;
        c->phase = PH_CHECKSUM;
        checksum_slice(c);
        return;
    }
    int chunked = c->chunked && c->parser.http_major == 1 && c->parser.http_minor >= 1;
    resp_status_line(c, 200);
    resp_rest(c, "application/octet-stream", chunked ? -1 : (int64_t)c->n);
    if (c->is_head) {
        response_done(c);
        return;
    }
    c->stream_chunked = chunked;
    c->piece = chunked || c->chunk_delay_ms ? UP_SLOW_PIECE : UP_PIECE;
    c->wait_timer = c->delay_passed = 0;
    c->phase = PH_STREAM;
    route_pump(c);
}

/* ---- dispatch at message-complete ------------------------------------------ */

static void echo(conn_t *c)
{
    sb_len = 0;
    sb_str("{\"method\": ");
    sb_json(llhttp_method_name((llhttp_method_t)c->parser.method),
            strlen(llhttp_method_name((llhttp_method_t)c->parser.method)));
    sb_str(", \"path\": ");
    sb_json(c->hbuf, c->url_len);
    char ver[16];
    int vl = snprintf(ver, sizeof ver, "%u.%u", c->parser.http_major, c->parser.http_minor);
    sb_str(", \"version\": ");
    sb_json(ver, (size_t)vl);
    sb_str(", \"headers\": [");
    for (uint32_t i = 0; i < c->nhdrs; i++) {
        const hdr_t *h = &c->hdrs[i];
        sb_str(i ? ", [" : "[");
        sb_json(c->hbuf + h->name_off, h->name_len);
        sb_str(", ");
        sb_json(c->hbuf + h->val_off, h->val_len);
        sb_str("]");
    }
    sb_str("], \"body_bytes\": ");
    sb_u64(c->body_bytes);
    sb_str(", \"upstream\": ");
    sb_json(g.name, g.name_len);
    sb_str("}\n");
    resp_json(c);
}

static void stats(conn_t *c)
{
    sb_len = 0;
    sb_str("{\"requests\": ");
    sb_u64(g.requests);
    sb_str(", \"connections_accepted\": ");
    sb_u64(g.accepted);
    sb_str(", \"connections_active\": ");
    sb_u64(g.active);
    sb_str(", \"in_service\": ");
    sb_u64(g.in_service);
    sb_str(", \"queued\": ");
    sb_u64(g.queued);
    sb_str(", \"work_peak\": ");
    sb_u64(g.work_peak);
    sb_str(", \"service_time_ms\": ");
    sb_u64(g.service_ms);
    sb_str(", \"slots\": ");
    sb_u64(g.slots);
    sb_str("}\n");
    resp_json(c);
}

static void work_kick(void);

void route_dispatch(conn_t *c)
{
    if (c->delay_ms && !c->delayed) {
        c->delayed = 1;
        c->phase = PH_DELAY;
        conn_timer_start(c, c->delay_ms);
        return;
    }
    char tmp[32];
    switch (c->route) {
    case R_HELLO:
        resp_simple(c, 200, "text/plain", g.hello, g.hello_len);
        break;
    case R_ECHO:
        echo(c);
        break;
    case R_STATUS: {
        int n = snprintf(tmp, sizeof tmp, "status %d\n", c->status_code);
        resp_simple(c, c->status_code, "text/plain", tmp, (size_t)n);
        break;
    }
    case R_BYTES:
        bytes_start(c);
        break;
    case R_UPLOAD:
        sb_checksum_json(c->body_bytes, c->body_hash);
        resp_json(c);
        break;
    case R_CLOSE_MID:
        resp_status_line(c, 200);
        resp_rest(c, "application/octet-stream", 1000000);
        if (!c->is_head)
            out_append(c, up_pattern, 1000);
        c->phase = PH_IDLE;
        c->close_mode = CM_GRACEFUL;
        break;
    case R_GARBAGE:
        out_str(c, "this is not http\r\n\r\n");
        c->phase = PH_IDLE;
        c->close_mode = CM_GRACEFUL;
        break;
    case R_SLOW_HEADERS:
        resp_status_line(c, 200);
        c->phase = PH_SLOWHDR;
        conn_timer_start(c, c->ms);
        break;
    case R_WORK:
        work_enqueue(c);
        break;
    case R_ADMIN_SERVICE_TIME:
        if (c->has_ms)
            g.service_ms = c->ms;
        if (c->has_slots) {
            g.slots = c->q_slots;
            work_kick(); /* more slots: queued requests start now */
        }
        sb_len = 0;
        sb_str("{\"service_time_ms\": ");
        sb_u64(g.service_ms);
        sb_str(", \"slots\": ");
        sb_u64(g.slots);
        sb_str("}\n");
        resp_json(c);
        break;
    case R_ADMIN_STATS:
        stats(c);
        break;
    case R_ADMIN_FAULT:
        g.fault_status = c->q_status >= 100 && c->q_status <= 999 ? c->q_status : 0;
        g.fault_reset = c->q_reset;
        g.fault_hang = c->q_hang;
        sb_len = 0;
        sb_str("{\"status\": ");
        sb_u64(g.fault_status);
        sb_str(", \"reset\": ");
        sb_u64(g.fault_reset ? 1 : 0);
        sb_str(", \"hang\": ");
        sb_u64(g.fault_hang ? 1 : 0);
        sb_str("}\n");
        resp_json(c);
        break;
    case R_RESET:
    case R_CLOSE:
    case R_BAD:
        resp_simple(c, 400, "text/plain", "bad request\n", 12);
        break;
    }
}

void route_timer(conn_t *c)
{
    switch (c->phase) {
    case PH_DELAY:
        route_dispatch(c);
        break;
    case PH_SERVICE:
        work_done(c);
        break;
    case PH_SLOWHDR:
        resp_rest(c, "text/plain", (int64_t)g.hello_len);
        if (!c->is_head)
            out_append(c, g.hello, g.hello_len);
        response_done(c);
        break;
    case PH_STREAM:
        c->wait_timer = 0;
        c->delay_passed = 1;
        route_pump(c);
        break;
    case PH_CHECKSUM:
        checksum_slice(c);
        break;
    default:
        break;
    }
}
