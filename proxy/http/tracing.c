/* tracing.c: sampling decisions, B3 context, spans and their Zipkin v2
 * JSON; see tracing.h. */
#include "http/tracing.h"
#include "http/datadog.h"
#include "runtime.h"

#include <stdio.h>

void sharp_zipkin_config_free(sharp_zipkin_config_t *zc)
{
    if (!zc) return;
    free(zc->cluster);
    free(zc->endpoint);
    free(zc->hostname);
    free(zc);
}

void sharp_otel_config_free(sharp_otel_config_t *oc)
{
    if (!oc) return;
    free(oc->cluster);
    free(oc->path);
    free(oc->authority);
    free(oc->service_name);
    for (uint32_t i = 0; i < oc->nhdrs; i++) {
        free(oc->hdr_names[i]);
        free(oc->hdr_values[i]);
    }
    free(oc->hdr_names);
    free(oc->hdr_values);
    free(oc);
}

void sharp_skywalking_config_free(sharp_skywalking_config_t *sc)
{
    if (!sc) return;
    free(sc->cluster);
    free(sc->authority);
    free(sc->service_name);
    free(sc->instance_name);
    free(sc->token);
    for (uint32_t i = 0; i < sc->nhdrs; i++) {
        free(sc->hdr_names[i]);
        free(sc->hdr_values[i]);
    }
    free(sc->hdr_names);
    free(sc->hdr_values);
    free(sc);
}

void sharp_datadog_config_free(sharp_datadog_config_t *dc)
{
    if (!dc) return;
    free(dc->cluster);
    free(dc->hostname);
    free(dc->service);
    free(dc->slots);
    free(dc);
}

void sharp_tracing_config_free(sharp_tracing_config_t *tc)
{
    if (!tc) return;
    sharp_datadog_config_free(tc->datadog);
    sharp_zipkin_config_free(tc->zipkin);
    sharp_otel_config_free(tc->otel);
    sharp_skywalking_config_free(tc->skywalking);
    sharp_custom_tags_free(&tc->custom_tags);
    free((char *)tc->node_id);
    free((char *)tc->zone);
    free((char *)tc->service_name);
    free(tc);
}

/* ---- x-request-id ---- */

/* UUIDRequestIDExtension: the version digit (position 14) carries the
 * reason. */
#define TRACE_BYTE_POSITION 14

sharp_trace_reason_t sharp_request_id_reason(const char *rid, size_t len)
{
    if (!rid || len != 36) return SHARP_TRACE_NOT_TRACEABLE;
    switch (rid[TRACE_BYTE_POSITION]) {
    case '9': return SHARP_TRACE_SAMPLING;
    case 'a': return SHARP_TRACE_SERVICE_FORCED;
    case 'b': return SHARP_TRACE_CLIENT_FORCED;
    default: return SHARP_TRACE_NOT_TRACEABLE;
    }
}

void sharp_request_id_set_reason(char *rid, size_t len, sharp_trace_reason_t r)
{
    if (!rid || len != 36) return;
    switch (r) {
    case SHARP_TRACE_SAMPLING: rid[TRACE_BYTE_POSITION] = '9'; break;
    case SHARP_TRACE_SERVICE_FORCED: rid[TRACE_BYTE_POSITION] = 'a'; break;
    case SHARP_TRACE_CLIENT_FORCED: rid[TRACE_BYTE_POSITION] = 'b'; break;
    case SHARP_TRACE_NOT_TRACEABLE: rid[TRACE_BYTE_POSITION] = '4'; break;
    default: break; /* Envoy writes no other reason */
    }
}

bool sharp_request_id_integer(const char *rid, size_t len, uint64_t *out)
{
    if (!rid || len < 8) return false;
    return sharp_parse_hex64(rid, 8, out);
}

sharp_trace_reason_t sharp_tracing_decide(const sharp_trace_sampling_t *f, char *rid, size_t len,
                                          const sharp_trace_inputs_t *in, bool *decided)
{
    *decided = false;
    uint64_t v;
    /* a missing or corrupted request id: no decision */
    if (!sharp_request_id_integer(rid, len, &v)) return SHARP_TRACE_NOT_TRACEABLE;
    const uint64_t result = v % 10000;
    /* no transformation while the request is being traced already */
    sharp_trace_reason_t r = sharp_request_id_reason(rid, len);
    if (r == SHARP_TRACE_NOT_TRACEABLE) {
        if (in->client_trace_id &&
            sharp_runtime_fraction_enabled("tracing.client_enabled", f->client_num, f->client_den, in->client_random))
            r = SHARP_TRACE_CLIENT_FORCED;
        else if (in->force_trace)
            r = SHARP_TRACE_SERVICE_FORCED;
        else if (sharp_runtime_fraction_enabled("tracing.random_sampling", f->random_num, f->random_den, result))
            r = SHARP_TRACE_SAMPLING;
        sharp_request_id_set_reason(rid, len, r);
    }
    if (r != SHARP_TRACE_NOT_TRACEABLE &&
        !sharp_runtime_fraction_enabled("tracing.global_enabled", f->overall_num, f->overall_den, result)) {
        r = SHARP_TRACE_NOT_TRACEABLE;
        sharp_request_id_set_reason(rid, len, r);
    }
    *decided = true;
    return r;
}

/* ---- B3 ---- */

static bool valid_flag(char c)
{
    return c == '1' || c == '0' || c == 'd';
}

int sharp_b3_sampled(const sharp_headers_t *h)
{
    sharp_str_t b3;
    if (sharp_headers_get_cstr(h, "b3", &b3)) {
        size_t pos;
        switch (b3.len) {
        case 1: pos = 0; break;
        case 35: pos = 34; break; /* 16 + 1 + 16 + 2 */
        case 51: pos = 50; break; /* 32 + 1 + 16 + 2 */
        case 52: pos = 34; break; /* 16 + 1 + 16 + 2 + 1 + 16 */
        case 68: pos = 50; break; /* 32 + 1 + 16 + 2 + 1 + 16 */
        default: return -1;
        }
        if (!valid_flag(b3.p[pos])) return -1;
        return b3.p[pos] != '0';
    }
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, "x-b3-sampled", &v)) return -1;
    /* "true" from old Zipkin tracers too */
    return (v.len == 1 && v.p[0] == '1') || (v.len == 4 && memcmp(v.p, "true", 4) == 0);
}

#define B3_MAX_LENGTH (32 + 1 + 16 + 3 + 16) /* traceid128-spanid-1-parentid */

static int bad(const char **why, const char *msg)
{
    if (why) *why = msg;
    return -1;
}

/* Envoy's extractSpanContextFromB3SingleFormat. */
static int extract_single(sharp_str_t b3, bool sampled, sharp_b3_context_t *out, const char **why)
{
    const char *s = b3.p;
    size_t len = b3.len, pos = 0;
    if (len == 0) return bad(why, "empty b3 header");
    if (len == 1) return valid_flag(s[0]) ? 0 : bad(why, "invalid sampling flag in b3 header");
    if (len < 16 + 1 + 16) return bad(why, "truncated b3 header");
    if (len > B3_MAX_LENGTH) return bad(why, "b3 header too long");
    sharp_b3_context_t c = {0};
    if (s[32] == '-') {
        if (!sharp_parse_hex64(s, 16, &c.trace_hi)) return bad(why, "invalid trace id high in b3 header");
        pos += 16;
        if (!sharp_parse_hex64(s + pos, 16, &c.trace_lo)) return bad(why, "invalid trace id in b3 header");
    } else if (!sharp_parse_hex64(s, 16, &c.trace_lo)) {
        return bad(why, "invalid trace id in b3 header");
    }
    pos += 16;
    if (s[pos++] != '-') return bad(why, "no span id in b3 header");
    size_t n = len - pos < 16 ? len - pos : 16;
    if (!sharp_parse_hex64(s + pos, n, &c.span_id)) return bad(why, "invalid span id in b3 header");
    pos += 16;
    if (len > pos) {
        /* "-<flag>" and maybe "-<parent id>" follow */
        if (len == pos + 1) return bad(why, "truncated b3 header");
        if (s[pos++] != '-') return bad(why, "no sampling field in b3 header");
        if (len == pos + 1 || (len >= pos + 2 && s[pos + 1] == '-')) {
            if (!valid_flag(s[pos])) return bad(why, "invalid sampling flag in b3 header");
            pos++;
        } else {
            return bad(why, "truncated b3 header");
        }
        if (len > pos) {
            if (len != pos + 17) return bad(why, "truncated b3 header");
            pos++; /* the '-' checked above */
            if (!sharp_parse_hex64(s + pos, len - pos, &c.parent_id)) return bad(why, "invalid parent id in b3 header");
        }
    }
    c.sampled = sampled;
    *out = c;
    return 1;
}

int sharp_b3_extract(const sharp_headers_t *h, bool sampled, sharp_b3_context_t *out, const char **why)
{
    sharp_str_t b3;
    if (sharp_headers_get_cstr(h, "b3", &b3)) return extract_single(b3, sampled, out, why);
    sharp_str_t tid, sid, pid;
    if (!sharp_headers_get_cstr(h, "x-b3-traceid", &tid) || !sharp_headers_get_cstr(h, "x-b3-spanid", &sid))
        return 0;
    sharp_b3_context_t c = {0};
    /* a 128-bit trace id is two 64-bit halves */
    if (tid.len == 32) {
        if (!sharp_parse_hex64(tid.p, 16, &c.trace_hi) || !sharp_parse_hex64(tid.p + 16, 16, &c.trace_lo))
            return bad(why, "invalid x-b3-traceid");
    } else if (!sharp_parse_hex64(tid.p, tid.len, &c.trace_lo)) {
        return bad(why, "invalid x-b3-traceid");
    }
    if (!sharp_parse_hex64(sid.p, sid.len, &c.span_id)) return bad(why, "invalid x-b3-spanid");
    if (sharp_headers_get_cstr(h, "x-b3-parentspanid", &pid) && pid.len &&
        !sharp_parse_hex64(pid.p, pid.len, &c.parent_id))
        return bad(why, "invalid x-b3-parentspanid");
    c.sampled = sampled;
    *out = c;
    return 1;
}

/* ---- spans ---- */

void sharp_span_set_name(sharp_span_t *sp, const char *name, size_t len)
{
    /* a Datadog span's operation is its resource (the name here) */
    if (sp->sw) return; /* SkyWalking's Span::setOperation does nothing */
    free(sp->name);
    sp->name = sharp_strndup(name, len);
}

void sharp_span_start(sharp_span_t *sp, const sharp_tracing_config_t *tc, const sharp_b3_context_t *ctx,
                      bool sampled, const char *name, size_t name_len, uint64_t start_wall_us, uint64_t start_ns,
                      uint64_t (*random)(void *), void *rarg)
{
    memset(sp, 0, sizeof *sp);
    sp->start_wall_us = start_wall_us;
    sp->start_ns = start_ns;
    sp->name = sharp_strndup(name, name_len);
    bool shared = tc->zipkin ? tc->zipkin->shared_span_context : true;
    if (!ctx) {
        /* a root span: its id is the trace id */
        sp->id = sp->trace_lo = random(rarg);
        if (tc->zipkin && tc->zipkin->trace_id_128bit) sp->trace_hi = random(rarg);
        sp->server = !tc->egress;
        sp->sampled = sampled;
        return;
    }
    sp->trace_lo = ctx->trace_lo;
    sp->trace_hi = ctx->trace_hi;
    sp->sampled = ctx->sampled;
    if (tc->egress || !shared) {
        /* a child of the caller's span */
        sp->id = random(rarg);
        sp->parent_id = ctx->span_id;
        sp->has_parent = true;
        sp->server = false;
    } else {
        /* ingress, sharing the caller's span */
        sp->id = ctx->span_id;
        sp->parent_id = ctx->parent_id;
        sp->has_parent = ctx->parent_id != 0;
        sp->server = true;
    }
}

/* value as a decimal number (digits only); false if it is none. */
static bool tag_number(const char *value, size_t vlen, unsigned long *out)
{
    if (!vlen || vlen > 15) return false;
    unsigned long v = 0;
    for (size_t i = 0; i < vlen; i++) {
        if (value[i] < '0' || value[i] > '9') return false;
        v = v * 10 + (unsigned long)(value[i] - '0');
    }
    *out = v;
    return true;
}

/* Envoy's OpenTelemetry Span::setTag: any value of a non-empty key; a
 * key already set gets the new value; http.status_code sets the status
 * ERROR for 5xx, and for 4xx too on a CLIENT span; grpc.status_code sets
 * the status (convertGrpcStatusToTraceStatusCode): on a CLIENT span ERROR
 * for any status but OK, on a SERVER span for Unknown, DeadlineExceeded,
 * Unimplemented, Internal, Unavailable and DataLoss, else UNSET. */
static void otel_attr(sharp_span_t *sp, const char *key, const char *value, size_t vlen)
{
    if (!key[0]) return;
    unsigned long code;
    if (!strcmp(key, "http.status_code")) {
        if (tag_number(value, vlen, &code) && code >= 400 && (!sp->server || code >= 500)) sp->status_error = true;
    } else if (!strcmp(key, "grpc.status_code")) {
        bool err = false;
        if (tag_number(value, vlen, &code)) {
            if (!sp->server) err = code != 0;
            else err = code == 2 || code == 4 || code == 12 || code == 13 || code == 14 || code == 15;
        }
        sp->status_error = err;
    }
    for (uint32_t i = 0; i < sp->nattrs; i++)
        if (!strcmp(sp->akeys[i], key)) {
            free(sp->avals[i]);
            sp->avals[i] = sharp_strndup(value, vlen);
            return;
        }
    if (sp->nattrs == sp->cap_attrs) {
        sp->cap_attrs = sp->cap_attrs ? sp->cap_attrs * 2 : 24;
        sp->akeys = sharp_realloc(sp->akeys, sp->cap_attrs * sizeof *sp->akeys);
        sp->avals = sharp_realloc(sp->avals, sp->cap_attrs * sizeof *sp->avals);
    }
    sp->akeys[sp->nattrs] = sharp_strdup(key);
    sp->avals[sp->nattrs++] = sharp_strndup(value, vlen);
}

/* Envoy's SkyWalking Span::setTag: every tag is added (cpp2sky's addTag,
 * empty values and repeated keys too), http.url as url, http.status_code
 * as status_code; error also flags the span; peer.address is its peer. */
static void sw_tag(sharp_span_t *sp, const char *key, const char *value, size_t vlen)
{
    if (!strcmp(key, "peer.address")) {
        free(sp->peer);
        sp->peer = sharp_strndup(value, vlen);
        return;
    }
    if (!strcmp(key, "http.url")) key = "url";
    else if (!strcmp(key, "http.status_code")) key = "status_code";
    else if (!strcmp(key, "error")) sp->status_error = true;
    if (sp->nattrs == sp->cap_attrs) {
        sp->cap_attrs = sp->cap_attrs ? sp->cap_attrs * 2 : 24;
        sp->akeys = sharp_realloc(sp->akeys, sp->cap_attrs * sizeof *sp->akeys);
        sp->avals = sharp_realloc(sp->avals, sp->cap_attrs * sizeof *sp->avals);
    }
    sp->akeys[sp->nattrs] = sharp_strdup(key);
    sp->avals[sp->nattrs++] = sharp_strndup(value, vlen);
}

void sharp_span_tag(sharp_span_t *sp, const char *key, const char *value, size_t vlen)
{
    if (sp->sw) {
        sw_tag(sp, key, value, vlen);
        return;
    }
    if (sp->otel) {
        otel_attr(sp, key, value, vlen);
        return;
    }
    if (sp->dd) {
        sharp_dd_span_tag(sp, key, value, vlen);
        return;
    }
    if (!key[0] || !vlen) return;
    if (sp->ntags == sp->cap_tags) {
        sp->cap_tags = sp->cap_tags ? sp->cap_tags * 2 : 24;
        sp->tag_refs = sharp_realloc(sp->tag_refs, sp->cap_tags * sizeof *sp->tag_refs);
    }
    struct sharp_span_tag_ref *r = &sp->tag_refs[sp->ntags++];
    r->off = (uint32_t)sp->tags.len;
    sharp_json_string(&sp->tags, key, strlen(key));
    r->klen = (uint32_t)sp->tags.len - r->off;
    sharp_sbuf_puts(&sp->tags, ":");
    sharp_json_string(&sp->tags, value, vlen);
    r->len = (uint32_t)sp->tags.len - r->off;
}

bool sharp_span_has_tag(const sharp_span_t *sp, const char *key)
{
    if (sp->dd && !strcmp(key, "error")) return sharp_dd_span_error(sp);
    for (uint32_t i = 0; i < sp->nattrs; i++)
        if (!strcmp(sp->akeys[i], key)) return true;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < sp->ntags; i++) {
        const struct sharp_span_tag_ref *r = &sp->tag_refs[i];
        /* keys are compared as written: a key needing no escape reads as itself */
        if (r->klen == n + 2 && memcmp(sp->tags.data + r->off + 1, key, n) == 0) return true;
    }
    return false;
}

void sharp_span_free(sharp_span_t *sp)
{
    free(sp->name);
    sp->name = NULL;
    sharp_sbuf_free(&sp->tags);
    free(sp->tag_refs);
    sp->tag_refs = NULL;
    sp->ntags = sp->cap_tags = 0;
    for (uint32_t i = 0; i < sp->nattrs; i++) {
        free(sp->akeys[i]);
        free(sp->avals[i]);
    }
    free(sp->akeys);
    free(sp->avals);
    sp->akeys = sp->avals = NULL;
    sp->nattrs = sp->cap_attrs = 0;
    free(sp->tracestate);
    sp->tracestate = NULL;
    free(sp->peer);
    sp->peer = NULL;
    sharp_dd_span_free(sp->dd);
    sp->dd = NULL;
}

static void hex64(uint64_t w, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)w);
}

/* Envoy's traceIdAsHexString: 32 digits for a 128-bit trace id. */
static size_t trace_id_hex(const sharp_span_t *sp, char out[33])
{
    if (sp->trace_hi) {
        snprintf(out, 33, "%016llx%016llx", (unsigned long long)sp->trace_hi, (unsigned long long)sp->trace_lo);
        return 32;
    }
    hex64(sp->trace_lo, out);
    return 16;
}

void sharp_span_inject(const sharp_span_t *sp, sharp_headers_t *h)
{
    char t[33], x[17];
    size_t tn = trace_id_hex(sp, t);
    sharp_headers_set(h, "x-b3-traceid", 12, t, tn);
    hex64(sp->id, x);
    sharp_headers_set(h, "x-b3-spanid", 11, x, 16);
    if (sp->has_parent) {
        hex64(sp->parent_id, x);
        sharp_headers_set(h, "x-b3-parentspanid", 17, x, 16);
    }
    sharp_headers_set(h, "x-b3-sampled", 12, sp->sampled ? "1" : "0", 1);
}

/* The length of the valid UTF-8 sequence at p (at most n bytes), 0 if
 * there is none. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t need;
    uint32_t min;
    if (c >= 0xc2 && c <= 0xdf) need = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) need = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) need = 4, min = 0x10000;
    else return 0;
    if (n < need) return 0;
    uint32_t cp = c & (0xff >> (need + 1));
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return need;
}

void sharp_json_string(sharp_sbuf_t *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    sharp_sbuf_puts(out, "\"");
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        const char *esc = NULL;
        char u[8];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(u, sizeof u, "\\u%04x", c);
            esc = u;
        } else if (c >= 0x80) {
            adv = utf8_seq(p + i, n - i);
            if (!adv) {
                esc = "\\ufffd";
                adv = 1;
            }
        }
        if (esc) {
            if (run) sharp_sbuf_append(out, s + i - run, run);
            run = 0;
            sharp_sbuf_puts(out, esc);
        } else {
            run += adv;
        }
        i += adv;
    }
    if (run) sharp_sbuf_append(out, s + n - run, run);
    sharp_sbuf_puts(out, "\"");
}

void sharp_span_json(const sharp_span_t *sp, uint64_t end_wall_us, uint64_t duration_us, const char *local_ip,
                     const char *service_name, bool shared_span_context, sharp_sbuf_t *out)
{
    char t[33], x[17], num[32];
    size_t tn = trace_id_hex(sp, t);
    sharp_sbuf_puts(out, "{\"traceId\":");
    sharp_json_string(out, t, tn);
    if (sp->has_parent) {
        hex64(sp->parent_id, x);
        sharp_sbuf_puts(out, ",\"parentId\":\"");
        sharp_sbuf_append(out, x, 16);
        sharp_sbuf_puts(out, "\"");
    }
    hex64(sp->id, x);
    sharp_sbuf_puts(out, ",\"id\":\"");
    sharp_sbuf_append(out, x, 16);
    sharp_sbuf_puts(out, sp->server ? "\",\"kind\":\"SERVER\"" : "\",\"kind\":\"CLIENT\"");
    if (sp->name && sp->name[0]) {
        sharp_sbuf_puts(out, ",\"name\":");
        sharp_json_string(out, sp->name, strlen(sp->name));
    }
    snprintf(num, sizeof num, "%llu", (unsigned long long)sp->start_wall_us);
    sharp_sbuf_puts(out, ",\"timestamp\":");
    sharp_sbuf_puts(out, num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)duration_us);
    sharp_sbuf_puts(out, ",\"duration\":");
    sharp_sbuf_puts(out, num);
    sharp_sbuf_puts(out, ",\"localEndpoint\":{");
    bool comma = false;
    if (local_ip && local_ip[0]) {
        sharp_sbuf_puts(out, strchr(local_ip, ':') ? "\"ipv6\":" : "\"ipv4\":");
        sharp_json_string(out, local_ip, strlen(local_ip));
        sharp_sbuf_puts(out, ",\"port\":0");
        comma = true;
    }
    if (service_name && service_name[0]) {
        sharp_sbuf_puts(out, comma ? ",\"serviceName\":" : "\"serviceName\":");
        sharp_json_string(out, service_name, strlen(service_name));
    }
    sharp_sbuf_puts(out, "}");
    if (sp->ntags) {
        sharp_sbuf_puts(out, ",\"tags\":{");
        bool first = true;
        for (uint32_t i = 0; i < sp->ntags; i++) {
            const struct sharp_span_tag_ref *r = &sp->tag_refs[i];
            const char *k = sp->tags.data + r->off;
            bool replaced = false;
            for (uint32_t j = i + 1; j < sp->ntags && !replaced; j++)
                replaced = sp->tag_refs[j].klen == r->klen && memcmp(sp->tags.data + sp->tag_refs[j].off, k, r->klen) == 0;
            if (replaced) continue;
            if (!first) sharp_sbuf_puts(out, ",");
            first = false;
            sharp_sbuf_append(out, k, r->len);
        }
        sharp_sbuf_puts(out, "}");
    }
    if (sp->server && shared_span_context) sharp_sbuf_puts(out, ",\"shared\":true");
    snprintf(num, sizeof num, "%llu", (unsigned long long)end_wall_us);
    sharp_sbuf_puts(out, ",\"annotations\":[{\"timestamp\":");
    sharp_sbuf_puts(out, num);
    sharp_sbuf_puts(out, sp->server ? ",\"value\":\"ss\"}]" : ",\"value\":\"cr\"}]");
    sharp_sbuf_puts(out, "}");
}

/* ---- W3C trace context and OTLP ---- */

static bool all_zeros(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != '0') return false;
    return true;
}

static bool all_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sharp_hexval(p[i]) < 0) return false;
    return true;
}

int sharp_traceparent_parse(const char *v, size_t len, sharp_w3c_context_t *out, const char **why)
{
    if (len != 55) return bad(why, "invalid traceparent header length");
    if (v[2] != '-' || v[35] != '-' || v[52] != '-') return bad(why, "invalid traceparent hyphenation");
    const char *ver = v, *tid = v + 3, *pid = v + 36, *flags = v + 53;
    if (!all_hex(ver, 2) || !all_hex(tid, 32) || !all_hex(pid, 16) || !all_hex(flags, 2))
        return bad(why, "invalid traceparent header hex");
    if (all_zeros(tid, 32)) return bad(why, "invalid trace id");
    if (all_zeros(pid, 16)) return bad(why, "invalid parent id");
    sharp_w3c_context_t c = {0};
    sharp_parse_hex64(tid, 16, &c.trace_hi);
    sharp_parse_hex64(tid + 16, 16, &c.trace_lo);
    sharp_parse_hex64(pid, 16, &c.parent_id);
    c.sampled = sharp_hexval(flags[1]) & 1;
    *out = c;
    return 0;
}

void sharp_traceparent_format(uint64_t trace_hi, uint64_t trace_lo, uint64_t span_id, bool sampled, char out[56])
{
    snprintf(out, 56, "00-%016llx%016llx-%016llx-%s", (unsigned long long)trace_hi, (unsigned long long)trace_lo,
             (unsigned long long)span_id, sampled ? "01" : "00");
}

void sharp_span_start_otel(sharp_span_t *sp, bool egress, const sharp_w3c_context_t *ctx, const char *tracestate,
                           size_t ts_len, bool sampled, const char *name, size_t name_len, uint64_t start_wall_us,
                           uint64_t start_ns, uint64_t (*random)(void *), void *rarg)
{
    memset(sp, 0, sizeof *sp);
    sp->otel = true;
    sp->start_wall_us = start_wall_us;
    sp->start_ns = start_ns;
    sp->name = sharp_strndup(name, name_len);
    sp->server = !egress;
    if (!ctx) {
        sp->trace_hi = random(rarg);
        sp->trace_lo = random(rarg);
        sp->id = random(rarg);
        sp->sampled = sampled;
        return;
    }
    sp->trace_hi = ctx->trace_hi;
    sp->trace_lo = ctx->trace_lo;
    sp->parent_id = ctx->parent_id;
    sp->has_parent = true;
    sp->id = random(rarg);
    sp->sampled = ctx->sampled;
    if (tracestate && ts_len) sp->tracestate = sharp_strndup(tracestate, ts_len);
}

void sharp_span_inject_w3c(const sharp_span_t *sp, sharp_headers_t *h)
{
    char tp[56];
    sharp_traceparent_format(sp->trace_hi, sp->trace_lo, sp->id, sp->sampled, tp);
    sharp_headers_set(h, "traceparent", 11, tp, 55);
    if (sp->tracestate) sharp_headers_set(h, "tracestate", 10, sp->tracestate, strlen(sp->tracestate));
}

/* protobuf wire format */
static void pb_varint(sharp_sbuf_t *b, uint64_t v)
{
    char buf[10];
    size_t n = 0;
    do {
        buf[n++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    sharp_sbuf_append(b, buf, n);
}

static void pb_bytes(sharp_sbuf_t *b, uint32_t field, const void *p, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    sharp_sbuf_append(b, p, n);
}

static void pb_fixed64(sharp_sbuf_t *b, uint32_t field, uint64_t v)
{
    pb_varint(b, (uint64_t)field << 3 | 1);
    char buf[8];
    for (int i = 0; i < 8; i++) buf[i] = (char)(v >> (8 * i));
    sharp_sbuf_append(b, buf, 8);
}

static void be64(uint64_t v, unsigned char *out)
{
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* KeyValue {key = 1, value = 2: AnyValue {string_value = 1}} */
static void pb_string_kv(sharp_sbuf_t *b, uint32_t field, const char *k, const char *v)
{
    sharp_sbuf_t any = {0}, kv = {0};
    pb_bytes(&any, 1, v, strlen(v));
    pb_bytes(&kv, 1, k, strlen(k));
    pb_bytes(&kv, 2, any.data, any.len);
    pb_bytes(b, field, kv.data, kv.len);
    sharp_sbuf_free(&any);
    sharp_sbuf_free(&kv);
}

void sharp_span_otlp(const sharp_span_t *sp, uint64_t end_unix_ns, sharp_sbuf_t *out)
{
    unsigned char id[16];
    be64(sp->trace_hi, id);
    be64(sp->trace_lo, id + 8);
    pb_bytes(out, 1, id, 16); /* trace_id */
    be64(sp->id, id);
    pb_bytes(out, 2, id, 8); /* span_id */
    if (sp->tracestate) pb_bytes(out, 3, sp->tracestate, strlen(sp->tracestate));
    if (sp->has_parent) {
        be64(sp->parent_id, id);
        pb_bytes(out, 4, id, 8); /* parent_span_id */
    }
    pb_bytes(out, 5, sp->name, strlen(sp->name));
    pb_varint(out, 6 << 3);
    pb_varint(out, sp->server ? 2 : 3); /* kind: SPAN_KIND_SERVER, SPAN_KIND_CLIENT */
    pb_fixed64(out, 7, sp->start_wall_us * 1000);
    pb_fixed64(out, 8, end_unix_ns);
    for (uint32_t i = 0; i < sp->nattrs; i++) pb_string_kv(out, 9, sp->akeys[i], sp->avals[i]);
    if (sp->status_error) {
        /* status = 15: Status {code = 3: STATUS_CODE_ERROR (2)} */
        const char st[] = {3 << 3, 2};
        pb_bytes(out, 15, st, sizeof st);
    }
}

void sharp_otlp_frame_span(sharp_sbuf_t *out, const char *span, size_t len)
{
    pb_bytes(out, 2, span, len);
}

void sharp_otlp_request(const char *service_name, const char *spans, size_t spans_len, sharp_sbuf_t *out)
{
    sharp_sbuf_t res = {0}, scope = {0}, ss = {0}, rs = {0};
    pb_string_kv(&res, 1, "service.name", service_name); /* Resource.attributes */
    pb_bytes(&scope, 1, "envoy", 5);                     /* InstrumentationScope.name */
    pb_bytes(&ss, 1, scope.data, scope.len);             /* ScopeSpans.scope */
    sharp_sbuf_append(&ss, spans, spans_len);            /* ScopeSpans.spans */
    pb_bytes(&rs, 1, res.data, res.len);                 /* ResourceSpans.resource */
    pb_bytes(&rs, 2, ss.data, ss.len);                   /* ResourceSpans.scope_spans */
    pb_bytes(out, 1, rs.data, rs.len);                   /* ExportTraceServiceRequest.resource_spans */
    sharp_sbuf_free(&res);
    sharp_sbuf_free(&scope);
    sharp_sbuf_free(&ss);
    sharp_sbuf_free(&rs);
}

/* ---- SkyWalking ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void sharp_sw_base64(sharp_sbuf_t *out, const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    char q[4];
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        q[0] = b64_chars[u[i] >> 2];
        q[1] = b64_chars[(u[i] & 3) << 4 | u[i + 1] >> 4];
        q[2] = b64_chars[(u[i + 1] & 15) << 2 | u[i + 2] >> 6];
        q[3] = b64_chars[u[i + 2] & 63];
        sharp_sbuf_append(out, q, 4);
    }
    if (n - i == 1) {
        q[0] = b64_chars[u[i] >> 2];
        q[1] = b64_chars[(u[i] & 3) << 4];
        q[2] = q[3] = '=';
        sharp_sbuf_append(out, q, 4);
    } else if (n - i == 2) {
        q[0] = b64_chars[u[i] >> 2];
        q[1] = b64_chars[(u[i] & 3) << 4 | u[i + 1] >> 4];
        q[2] = b64_chars[(u[i + 1] & 15) << 2];
        q[3] = '=';
        sharp_sbuf_append(out, q, 4);
    }
}

char *sharp_sw_base64_decode(const char *p, size_t n)
{
    sharp_sbuf_t b = {0};
    char *out = sharp_sbuf_base64_decode(&b, p, n) ? sharp_strndup(b.data, b.len) : sharp_strdup("");
    sharp_sbuf_free(&b);
    return out;
}

/* std::stoi: blanks, a sign, digits (at least one), anything after; an
 * int's range. */
static bool sw_stoi(const char *p, size_t n, int32_t *out)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-')) neg = p[i++] == '-';
    if (i >= n || p[i] < '0' || p[i] > '9') return false;
    int64_t v = 0;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        v = v * 10 + (p[i] - '0');
        if (v > (int64_t)INT32_MAX + 1) return false;
    }
    if (neg) v = -v;
    if (v > INT32_MAX || v < INT32_MIN) return false;
    *out = (int32_t)v;
    return true;
}

int sharp_sw8_parse(const char *v, size_t len, sharp_sw8_t *out, const char **why)
{
    const char *f[8];
    size_t fl[8], nf = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && v[i] != '-') continue;
        if (nf == 8) return bad(why, "Invalid span context format. It must have 8 fields.");
        f[nf] = v + start;
        fl[nf++] = i - start;
        start = i + 1;
    }
    if (nf != 8) return bad(why, "Invalid span context format. It must have 8 fields.");
    if (fl[0] != 1 || (f[0][0] != '0' && f[0][0] != '1'))
        return bad(why, "Invalid span context format. sample field must be 0 or 1.");
    int32_t span_id;
    if (!sw_stoi(f[3], fl[3], &span_id)) return bad(why, "Invalid span context format. span id is not a number.");
    memset(out, 0, sizeof *out);
    out->span_id = span_id;
    out->trace_id = sharp_sw_base64_decode(f[1], fl[1]);
    out->segment_id = sharp_sw_base64_decode(f[2], fl[2]);
    out->service = sharp_sw_base64_decode(f[4], fl[4]);
    out->instance = sharp_sw_base64_decode(f[5], fl[5]);
    out->endpoint = sharp_sw_base64_decode(f[6], fl[6]);
    out->target = sharp_sw_base64_decode(f[7], fl[7]);
    return 0;
}

void sharp_sw8_free(sharp_sw8_t *c)
{
    free(c->trace_id);
    free(c->segment_id);
    free(c->service);
    free(c->instance);
    free(c->endpoint);
    free(c->target);
    memset(c, 0, sizeof *c);
}

void sharp_sw_uuid(uint64_t a, uint64_t b, char out[37])
{
    unsigned char r[16];
    for (int i = 0; i < 8; i++) {
        r[i] = (unsigned char)(a >> (8 * i));
        r[8 + i] = (unsigned char)(b >> (8 * i));
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* variant RFC 4122 */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]);
}

static sharp_span_t *sw_span_new(sharp_sw_segment_t *seg, const char *name, size_t name_len, bool http,
                                 uint64_t start_wall_us)
{
    sharp_span_t *sp = sharp_calloc(1, sizeof *sp);
    sp->sw = true;
    sp->sampled = true; /* SkyWalking's sampling is always on */
    sp->seg = seg;
    sp->sw_id = (int32_t)seg->nspans;
    sp->sw_http = http;
    sp->name = sharp_strndup(name, name_len);
    sp->start_wall_us = start_wall_us;
    seg->spans = sharp_realloc(seg->spans, (seg->nspans + 1) * sizeof *seg->spans);
    seg->spans[seg->nspans++] = sp;
    seg->open++;
    return sp;
}

sharp_span_t *sharp_sw_start(const sharp_skywalking_config_t *sc, sharp_sw8_t *parent, const char *name,
                             size_t name_len, bool http, uint64_t start_wall_us, uint64_t start_ns,
                             uint64_t (*random)(void *), void *rarg)
{
    sharp_sw_segment_t *seg = sharp_calloc(1, sizeof *seg);
    seg->service = sc->service_name;
    seg->instance = sc->instance_name;
    char id[37];
    if (parent) {
        seg->parent = *parent;
        memset(parent, 0, sizeof *parent);
        seg->has_parent = true;
        seg->trace_id = sharp_strdup(seg->parent.trace_id);
    } else {
        uint64_t a = random(rarg), b = random(rarg);
        sharp_sw_uuid(a, b, id);
        seg->trace_id = sharp_strdup(id);
    }
    uint64_t a = random(rarg), b = random(rarg);
    sharp_sw_uuid(a, b, seg->segment_id);
    sharp_span_t *sp = sw_span_new(seg, name, name_len, http, start_wall_us);
    sp->sw_parent = -1;
    sp->server = true;
    sp->start_ns = start_ns;
    return sp;
}

sharp_span_t *sharp_sw_exit_start(sharp_span_t *entry, uint64_t start_wall_us)
{
    sharp_span_t *sp = sw_span_new(entry->seg, entry->name, strlen(entry->name), entry->sw_http, start_wall_us);
    sp->sw_exit = true;
    sp->sw_parent = entry->sw_id;
    return sp;
}

bool sharp_sw8_format(const sharp_sw_segment_t *seg, const char *target, size_t target_len, sharp_sbuf_t *out)
{
    if (!seg->nspans || !seg->spans[seg->nspans - 1]->sw_exit) return false;
    const char *endpoint = seg->spans[0]->name;
    char id[16];
    sharp_sbuf_puts(out, "1-");
    sharp_sw_base64(out, seg->trace_id, strlen(seg->trace_id));
    sharp_sbuf_puts(out, "-");
    sharp_sw_base64(out, seg->segment_id, strlen(seg->segment_id));
    snprintf(id, sizeof id, "-%d-", seg->spans[seg->nspans - 1]->sw_id);
    sharp_sbuf_puts(out, id);
    sharp_sw_base64(out, seg->service, strlen(seg->service));
    sharp_sbuf_puts(out, "-");
    sharp_sw_base64(out, seg->instance, strlen(seg->instance));
    sharp_sbuf_puts(out, "-");
    sharp_sw_base64(out, endpoint, strlen(endpoint));
    sharp_sbuf_puts(out, "-");
    sharp_sw_base64(out, target, target_len);
    return true;
}

bool sharp_sw_span_finish(sharp_span_t *sp, uint64_t end_wall_us)
{
    if (sp->sw_finished) return false;
    sp->sw_finished = true;
    sp->end_wall_us = end_wall_us;
    return --sp->seg->open == 0;
}

void sharp_sw_segment_free(sharp_sw_segment_t *seg)
{
    if (!seg) return;
    for (uint32_t i = 0; i < seg->nspans; i++) {
        sharp_span_free(seg->spans[i]);
        free(seg->spans[i]);
    }
    free(seg->spans);
    free(seg->trace_id);
    sharp_sw8_free(&seg->parent);
    free(seg);
}
