/* check.c: the ext_authz filter's decisions without I/O; see check.h. */
#include "filters/ext_authz/check.h"
#include "grpc/framing.h"

#include "envoy/service/auth/v3/external_auth.pb-c.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool sharp_ext_authz_matchers_match(const sharp_ext_authz_matchers_t *l, sharp_str_t name)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (sharp_string_matcher_match(&l->m[i], name)) return true;
    return false;
}

void sharp_ext_authz_matchers_free(sharp_ext_authz_matchers_t *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        sharp_string_matcher_free(&l->m[i]);
    free(l->m);
    memset(l, 0, sizeof *l);
}

static bool name_is(sharp_str_t n, const char *s)
{
    size_t len = strlen(s);
    return n.len == len && strncasecmp(n.p, s, len) == 0;
}

/* Envoy's defaults for an http_service: Authorization, Method, Path, Host. */
static bool request_header_allowed(const sharp_ext_authz_http_t *cfg, sharp_str_t n)
{
    bool allowed = name_is(n, "authorization") || name_is(n, ":method") || name_is(n, ":path") ||
                   name_is(n, ":authority") ||
                   sharp_ext_authz_matchers_match(&cfg->allowed_headers, n);
    return allowed && !sharp_ext_authz_matchers_match(&cfg->disallowed_headers, n);
}

#define PARTIAL_BODY "x-envoy-auth-partial-body"

void sharp_ext_authz_utf8_sanitize(sharp_sbuf_t *out, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len = 0;
        unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range */
        if (c < 0x80)
            len = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c == 0xE0)
            len = 3, lo = 0xA0;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            len = 3;
        else if (c == 0xED)
            len = 3, hi = 0x9F;
        else if (c == 0xF0)
            len = 4, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            len = 4;
        else if (c == 0xF4)
            len = 4, hi = 0x8F;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) {
            unsigned char b = s[i + k];
            ok = k == 1 ? b >= lo && b <= hi : b >= 0x80 && b <= 0xBF;
        }
        if (!ok) {
            /* one bad byte becomes '!' (Envoy's sanitizeUtf8String) */
            sharp_sbuf_puts(out, "!");
            i++;
            continue;
        }
        sharp_sbuf_append(out, p + i, len);
        i += len;
    }
}

void sharp_ext_authz_http_request(const sharp_ext_authz_http_t *cfg, const sharp_headers_t *req,
                                  size_t body_len, int partial, sharp_headers_t *out,
                                  const struct sharp_stream_info *si)
{
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", body_len);
    sharp_headers_add_cstr(out, "content-length", cl);
    sharp_sbuf_t v = {0};
    for (uint32_t i = 0; i < req->n; i++) {
        sharp_str_t n = sharp_headers_name(req, i);
        /* the client's own x-envoy-auth-partial-body never goes */
        if (name_is(n, "content-length") || name_is(n, PARTIAL_BODY) ||
            !request_header_allowed(cfg, n))
            continue;
        /* a repeated name went out with its first entry */
        if (sharp_headers_find(req, n.p, n.len, 0) != (int)i) continue;
        v.len = 0;
        if (name_is(n, ":path") && cfg->path_prefix) sharp_sbuf_puts(&v, cfg->path_prefix);
        bool first = true;
        for (int j = (int)i; j >= 0; j = sharp_headers_find(req, n.p, n.len, (uint32_t)j + 1)) {
            sharp_str_t val = sharp_headers_value(req, (uint32_t)j);
            if (!first) sharp_sbuf_puts(&v, ",");
            sharp_ext_authz_utf8_sanitize(&v, val.p, val.len);
            first = false;
        }
        sharp_headers_add(out, n.p, n.len, v.data ? v.data : "", v.len);
    }
    sharp_sbuf_free(&v);
    if (partial >= 0) sharp_headers_add_cstr(out, PARTIAL_BODY, partial ? "true" : "false");
    sharp_header_ops_apply_si(&cfg->headers_to_add, out, si);
}

void sharp_ext_authz_response_init(sharp_ext_authz_response_t *r)
{
    memset(r, 0, sizeof *r);
    sharp_headers_init(&r->set);
    sharp_headers_init(&r->add);
    sharp_headers_init(&r->append);
    sharp_headers_init(&r->remove);
    sharp_headers_init(&r->response_add);
    sharp_headers_init(&r->response_set);
    sharp_headers_init(&r->response_add_if_absent);
    sharp_headers_init(&r->response_overwrite_if_exists);
}

void sharp_ext_authz_response_free(sharp_ext_authz_response_t *r)
{
    sharp_headers_free(&r->set);
    sharp_headers_free(&r->add);
    sharp_headers_free(&r->append);
    sharp_headers_free(&r->remove);
    sharp_headers_free(&r->response_add);
    sharp_headers_free(&r->response_set);
    sharp_headers_free(&r->response_add_if_absent);
    sharp_headers_free(&r->response_overwrite_if_exists);
    sharp_sbuf_free(&r->body);
    sharp_md_value_clear(&r->metadata);
}

#define HEADERS_TO_REMOVE "x-envoy-auth-headers-to-remove"

/* Envoy's client matchers: with allowed_client_headers unset every header
 * but Host (:authority); else those and its defaults. */
static bool client_header_allowed(const sharp_ext_authz_http_t *cfg, sharp_str_t n)
{
    if (!cfg->client.set) return !name_is(n, ":authority");
    return name_is(n, ":status") || name_is(n, "content-length") ||
           name_is(n, "www-authenticate") || name_is(n, "location") ||
           sharp_ext_authz_matchers_match(&cfg->client, n);
}

void sharp_ext_authz_http_response(const sharp_ext_authz_http_t *cfg, const sharp_headers_t *resp,
                                   const char *body, size_t blen, sharp_ext_authz_response_t *out)
{
    uint32_t code = sharp_headers_status(resp);
    if (code == 0 || (code >= 500 && code < 600)) {
        out->status = SHARP_EXT_AUTHZ_ERROR;
        return;
    }
    bool ok = code == 200;
    out->status = ok ? SHARP_EXT_AUTHZ_OK : SHARP_EXT_AUTHZ_DENIED;
    out->http_status = code;
    for (uint32_t i = 0; i < resp->n; i++) {
        sharp_str_t n = sharp_headers_name(resp, i), v = sharp_headers_value(resp, i);
        if (name_is(n, HEADERS_TO_REMOVE)) {
            if (!ok) continue;
            /* a comma-separated list of names, empty items dropped, trimmed */
            sharp_str_t rest = v, item;
            while (sharp_list_next(&rest, &item))
                if (item.len) sharp_headers_add(&out->remove, item.p, item.len, "", 0);
            continue;
        }
        if (ok) {
            if (sharp_ext_authz_matchers_match(&cfg->upstream, n))
                sharp_headers_add(&out->set, n.p, n.len, v.p, v.len);
            if (sharp_ext_authz_matchers_match(&cfg->upstream_append, n))
                sharp_headers_add(&out->add, n.p, n.len, v.p, v.len);
            if (sharp_ext_authz_matchers_match(&cfg->client_on_success, n))
                sharp_headers_add(&out->response_add, n.p, n.len, v.p, v.len);
        } else if (client_header_allowed(cfg, n)) {
            sharp_headers_add(&out->set, n.p, n.len, v.p, v.len);
        }
    }
    if (!ok && blen) sharp_sbuf_append(&out->body, body, blen);
}

void sharp_ext_authz_apply_request(const sharp_ext_authz_response_t *r, sharp_headers_t *h)
{
    for (uint32_t i = 0; i < r->set.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->set, i), v = sharp_headers_value(&r->set, i);
        sharp_headers_set(h, n.p, n.len, v.p, v.len);
    }
    for (uint32_t i = 0; i < r->add.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->add, i), v = sharp_headers_value(&r->add, i);
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
    sharp_sbuf_t b = {0};
    for (uint32_t i = 0; i < r->append.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->append, i), v = sharp_headers_value(&r->append, i);
        int at = sharp_headers_find(h, n.p, n.len, 0);
        if (at < 0) continue; /* only an existing header is appended to */
        /* Envoy's appendCopy changes the first entry of that name: the
         * entries of the name are put back after the others, the first
         * with the value appended */
        sharp_headers_t same;
        sharp_headers_init(&same);
        for (int j = at; j >= 0; j = sharp_headers_find(h, n.p, n.len, (uint32_t)j + 1)) {
            sharp_str_t cur = sharp_headers_value(h, (uint32_t)j);
            b.len = 0;
            sharp_sbuf_append(&b, cur.p, cur.len);
            if (j == at) {
                sharp_sbuf_puts(&b, ",");
                sharp_sbuf_append(&b, v.p, v.len);
            }
            sharp_headers_add(&same, n.p, n.len, b.data, b.len);
        }
        sharp_headers_remove(h, n.p, n.len);
        for (uint32_t j = 0; j < same.n; j++) {
            sharp_str_t sv = sharp_headers_value(&same, j);
            sharp_headers_add(h, n.p, n.len, sv.p, sv.len);
        }
        sharp_headers_free(&same);
    }
    sharp_sbuf_free(&b);
    for (uint32_t i = 0; i < r->remove.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->remove, i);
        if ((n.len && n.p[0] == ':') || name_is(n, "host")) continue;
        sharp_headers_remove(h, n.p, n.len);
    }
}

/* ---- gRPC ---- */

typedef Envoy__Service__Auth__V3__AttributeContext__HttpRequest__HeadersEntry hdr_entry_t;
typedef Envoy__Service__Auth__V3__AttributeContext__ContextExtensionsEntry ext_entry_t;

/* "ip:port" or "[ip6]:port" into a SocketAddress (strings owned by `buf`). */
static void socket_address(const char *s, Envoy__Config__Core__V3__Address *a,
                           Envoy__Config__Core__V3__SocketAddress *sa, char *buf, size_t cap)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon) return;
    const char *host = s;
    size_t hlen = (size_t)(colon - s);
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host++;
        hlen -= 2;
    }
    if (hlen >= cap) return;
    memcpy(buf, host, hlen);
    buf[hlen] = 0;
    sa->address = buf;
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa->port_value = (uint32_t)strtoul(colon + 1, NULL, 10);
    a->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    a->socket_address = sa;
}

void sharp_ext_authz_grpc_request(const sharp_ext_authz_grpc_in_t *in, sharp_sbuf_t *out)
{
    const sharp_headers_t *h = in->headers;
    Envoy__Service__Auth__V3__CheckRequest req = ENVOY__SERVICE__AUTH__V3__CHECK_REQUEST__INIT;
    Envoy__Service__Auth__V3__AttributeContext ac =
        ENVOY__SERVICE__AUTH__V3__ATTRIBUTE_CONTEXT__INIT;
    Envoy__Service__Auth__V3__AttributeContext__Peer src =
        ENVOY__SERVICE__AUTH__V3__ATTRIBUTE_CONTEXT__PEER__INIT;
    Envoy__Service__Auth__V3__AttributeContext__Peer dst =
        ENVOY__SERVICE__AUTH__V3__ATTRIBUTE_CONTEXT__PEER__INIT;
    Envoy__Config__Core__V3__Address src_a = ENVOY__CONFIG__CORE__V3__ADDRESS__INIT;
    Envoy__Config__Core__V3__Address dst_a = ENVOY__CONFIG__CORE__V3__ADDRESS__INIT;
    Envoy__Config__Core__V3__SocketAddress src_sa = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    Envoy__Config__Core__V3__SocketAddress dst_sa = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT;
    Envoy__Service__Auth__V3__AttributeContext__Request rq =
        ENVOY__SERVICE__AUTH__V3__ATTRIBUTE_CONTEXT__REQUEST__INIT;
    Envoy__Service__Auth__V3__AttributeContext__HttpRequest http =
        ENVOY__SERVICE__AUTH__V3__ATTRIBUTE_CONTEXT__HTTP_REQUEST__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char src_buf[64] = "", dst_buf[64] = "", id[24];
    req.attributes = &ac;
    ac.source = &src;
    ac.destination = &dst;
    ac.request = &rq;
    socket_address(in->source, &src_a, &src_sa, src_buf, sizeof src_buf);
    socket_address(in->destination, &dst_a, &dst_sa, dst_buf, sizeof dst_buf);
    if (src_a.address_case) src.address = &src_a;
    if (dst_a.address_case) dst.address = &dst_a;
    src.service = (char *)(in->service ? in->service : "");
    rq.http = &http;
    ts.seconds = (int64_t)(in->time_us / 1000000);
    ts.nanos = (int32_t)(in->time_us % 1000000 * 1000);
    rq.time = &ts;
    snprintf(id, sizeof id, "%llu", in->stream_id);
    http.id = id;
    http.size = (int64_t)in->size;
    http.protocol = (char *)(in->protocol ? in->protocol : "");
    /* the header strings are copied NUL-terminated into one arena */
    sharp_sbuf_t arena = {0};
    size_t nh = 0;
    hdr_entry_t *entries = calloc(h->n + 2, sizeof *entries);
    hdr_entry_t **ptrs = calloc(h->n + 2, sizeof *ptrs);
    size_t *offs = calloc(2 * (h->n + 2), sizeof *offs);
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t n = sharp_headers_name(h, i);
        if (sharp_headers_find(h, n.p, n.len, 0) != (int)i) continue;
        if (in->allowed && in->allowed->set && !sharp_ext_authz_matchers_match(in->allowed, n))
            continue;
        if (in->disallowed && sharp_ext_authz_matchers_match(in->disallowed, n)) continue;
        if (name_is(n, PARTIAL_BODY)) continue; /* the client's own never goes */
        offs[2 * nh] = arena.len;
        sharp_sbuf_append(&arena, n.p, n.len);
        sharp_sbuf_append(&arena, "", 1);
        offs[2 * nh + 1] = arena.len;
        bool first = true;
        for (int j = (int)i; j >= 0; j = sharp_headers_find(h, n.p, n.len, (uint32_t)j + 1)) {
            sharp_str_t v = sharp_headers_value(h, (uint32_t)j);
            if (!first) sharp_sbuf_puts(&arena, ",");
            sharp_ext_authz_utf8_sanitize(&arena, v.p, v.len);
            first = false;
        }
        sharp_sbuf_append(&arena, "", 1);
        nh++;
    }
    if (in->body) {
        offs[2 * nh] = arena.len;
        sharp_sbuf_puts(&arena, "x-envoy-auth-partial-body");
        sharp_sbuf_append(&arena, "", 1);
        offs[2 * nh + 1] = arena.len;
        sharp_sbuf_puts(&arena, in->partial ? "true" : "false");
        sharp_sbuf_append(&arena, "", 1);
        nh++;
    }
    /* method, path, host and scheme come from the request whatever the
     * header lists say (Envoy's setHttpRequest) */
    static const char *const pseudo[4] = {":method", ":path", ":authority", ":scheme"};
    size_t poff[4];
    for (int k = 0; k < 4; k++) {
        sharp_str_t v = {"", 0};
        sharp_headers_get_cstr(h, pseudo[k], &v);
        poff[k] = arena.len;
        sharp_sbuf_append(&arena, v.p, v.len);
        sharp_sbuf_append(&arena, "", 1);
    }
    http.method = arena.data + poff[0];
    http.path = arena.data + poff[1];
    http.host = arena.data + poff[2];
    http.scheme = arena.data + poff[3];
    for (size_t i = 0; i < nh; i++) {
        envoy__service__auth__v3__attribute_context__http_request__headers_entry__init(&entries[i]);
        entries[i].key = arena.data + offs[2 * i];
        entries[i].value = arena.data + offs[2 * i + 1];
        ptrs[i] = &entries[i];
    }
    http.n_headers = nh;
    http.headers = ptrs;
    char *body = NULL;
    if (in->body) {
        if (in->pack_as_bytes) {
            http.raw_body.data = (uint8_t *)in->body;
            http.raw_body.len = in->body_len;
        } else {
            body = sharp_strndup(in->body, in->body_len);
            http.body = body;
        }
    }
    size_t nx = 0;
    while (in->context_extensions && in->context_extensions[2 * nx])
        nx++;
    ext_entry_t *xe = calloc(nx ? nx : 1, sizeof *xe);
    ext_entry_t **xp = calloc(nx ? nx : 1, sizeof *xp);
    for (size_t i = 0; i < nx; i++) {
        envoy__service__auth__v3__attribute_context__context_extensions_entry__init(&xe[i]);
        xe[i].key = (char *)in->context_extensions[2 * i];
        xe[i].value = (char *)in->context_extensions[2 * i + 1];
        xp[i] = &xe[i];
    }
    ac.n_context_extensions = nx;
    ac.context_extensions = xp;
    sharp_grpc_frame_message(out, &req.base);
    free(xe);
    free(xp);
    free(body);
    free(entries);
    free(ptrs);
    free(offs);
    sharp_sbuf_free(&arena);
}

static void header_option(const Envoy__Config__Core__V3__HeaderValueOption *o,
                          sharp_headers_t *append, sharp_headers_t *set)
{
    if (!o->header || !o->header->key) return;
    const char *k = o->header->key, *v = o->header->value ? o->header->value : "";
    sharp_headers_add_cstr(o->append && o->append->value ? append : set, k, v);
}

bool sharp_ext_authz_grpc_response(const uint8_t *msg, size_t n, sharp_ext_authz_response_t *out)
{
    Envoy__Service__Auth__V3__CheckResponse *r =
        envoy__service__auth__v3__check_response__unpack(NULL, n, msg);
    if (!r) return false;
    if (!r->status || r->status->code == 0) {
        out->status = SHARP_EXT_AUTHZ_OK;
        out->http_status = 200;
        const Envoy__Service__Auth__V3__OkHttpResponse *ok =
            r->http_response_case ==
                    ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE_OK_RESPONSE
                ? r->ok_response
                : NULL;
        if (ok) {
            for (size_t i = 0; i < ok->n_headers; i++)
                header_option(ok->headers[i], &out->append, &out->set);
            for (size_t i = 0; i < ok->n_response_headers_to_add; i++) {
                const Envoy__Config__Core__V3__HeaderValueOption *o =
                    ok->response_headers_to_add[i];
                if (!o->header || !o->header->key) continue;
                const char *k = o->header->key, *v = o->header->value ? o->header->value : "";
                sharp_headers_t *to;
                if (o->append) {
                    to = o->append->value ? &out->response_add : &out->response_set;
                } else {
                    switch (o->append_action) {
                    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__ADD_IF_ABSENT:
                        to = &out->response_add_if_absent;
                        break;
                    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS:
                        to = &out->response_overwrite_if_exists;
                        break;
                    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD:
                        to = &out->response_set;
                        break;
                    default:
                        to = &out->response_add;
                        break;
                    }
                }
                sharp_headers_add_cstr(to, k, v);
            }
            for (size_t i = 0; i < ok->n_headers_to_remove; i++)
                if (ok->headers_to_remove[i][0])
                    sharp_headers_add_cstr(&out->remove, ok->headers_to_remove[i], "");
        }
    } else {
        out->status = SHARP_EXT_AUTHZ_DENIED;
        out->http_status = 403;
        const Envoy__Service__Auth__V3__DeniedHttpResponse *d =
            r->http_response_case ==
                    ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE_DENIED_RESPONSE
                ? r->denied_response
                : NULL;
        if (d) {
            /* the local reply takes the headers to set (Envoy's denial) */
            sharp_headers_t appended;
            sharp_headers_init(&appended);
            for (size_t i = 0; i < d->n_headers; i++)
                header_option(d->headers[i], &appended, &out->set);
            sharp_headers_free(&appended);
            if (d->status && d->status->code > 0) out->http_status = (uint32_t)d->status->code;
            if (d->body && d->body[0]) sharp_sbuf_puts(&out->body, d->body);
        }
    }
    /* Envoy's GrpcClientImpl: OkHttpResponse.dynamic_metadata (deprecated)
     * overrides the CheckResponse's */
    const Google__Protobuf__Struct *md = r->dynamic_metadata;
    if (r->http_response_case == ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE_OK_RESPONSE &&
        r->ok_response && r->ok_response->dynamic_metadata)
        md = r->ok_response->dynamic_metadata;
    bool ok = !md || sharp_md_value_from_struct(md, &out->metadata);
    envoy__service__auth__v3__check_response__free_unpacked(r, NULL);
    return ok;
}
