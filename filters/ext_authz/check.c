/* check.c: the ext_authz filter's decisions without I/O; see check.h. */
#include "filters/ext_authz/check.h"

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
    for (uint32_t i = 0; i < l->n; i++) sharp_string_matcher_free(&l->m[i]);
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
                   name_is(n, ":authority") || sharp_ext_authz_matchers_match(&cfg->allowed_headers, n);
    return allowed && !sharp_ext_authz_matchers_match(&cfg->disallowed_headers, n);
}

void sharp_ext_authz_http_request(const sharp_ext_authz_http_t *cfg, const sharp_headers_t *req, size_t body_len,
                                  sharp_headers_t *out, const struct sharp_stream_info *si)
{
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", body_len);
    sharp_headers_add_cstr(out, "content-length", cl);
    sharp_sbuf_t v = {0};
    for (uint32_t i = 0; i < req->n; i++) {
        sharp_str_t n = sharp_headers_name(req, i);
        if (name_is(n, "content-length") || !request_header_allowed(cfg, n)) continue;
        /* a repeated name went out with its first entry */
        if (sharp_headers_find(req, n.p, n.len, 0) != (int)i) continue;
        v.len = 0;
        if (name_is(n, ":path") && cfg->path_prefix) sharp_sbuf_puts(&v, cfg->path_prefix);
        bool first = true;
        for (int j = (int)i; j >= 0; j = sharp_headers_find(req, n.p, n.len, (uint32_t)j + 1)) {
            sharp_str_t val = sharp_headers_value(req, (uint32_t)j);
            if (!first) sharp_sbuf_puts(&v, ",");
            sharp_sbuf_append(&v, val.p, val.len);
            first = false;
        }
        sharp_headers_add(out, n.p, n.len, v.data ? v.data : "", v.len);
    }
    sharp_sbuf_free(&v);
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
}

void sharp_ext_authz_response_free(sharp_ext_authz_response_t *r)
{
    sharp_headers_free(&r->set);
    sharp_headers_free(&r->add);
    sharp_headers_free(&r->append);
    sharp_headers_free(&r->remove);
    sharp_headers_free(&r->response_add);
    sharp_headers_free(&r->response_set);
    sharp_sbuf_free(&r->body);
}

#define HEADERS_TO_REMOVE "x-envoy-auth-headers-to-remove"

/* Envoy's client matchers: with allowed_client_headers unset every header
 * but Host (:authority); else those and its defaults. */
static bool client_header_allowed(const sharp_ext_authz_http_t *cfg, sharp_str_t n)
{
    if (!cfg->client.set) return !name_is(n, ":authority");
    return name_is(n, ":status") || name_is(n, "content-length") || name_is(n, "www-authenticate") ||
           name_is(n, "location") || sharp_ext_authz_matchers_match(&cfg->client, n);
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
            if (sharp_ext_authz_matchers_match(&cfg->upstream, n)) sharp_headers_add(&out->set, n.p, n.len, v.p, v.len);
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
