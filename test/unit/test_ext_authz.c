/* test_ext_authz.c: the ext_authz filter's decisions for an http_service
 * (filters/ext_authz/check.c), as Envoy's RawHttpClientImpl and filter
 * make them: which client headers the authorization request carries (the
 * defaults, allowed and disallowed lists, repeated names joined, the path
 * prefix, content-length, headers_to_add overwriting), how an answer is
 * classified (200 OK, 5xx or no status an error, anything else a denial),
 * which answer headers go where, x-envoy-auth-headers-to-remove, and how
 * an OK answer changes the request (set, add, append, remove, never a
 * pseudo-header or host); for a grpc_service, the CheckRequest's attribute
 * context and how a CheckResponse is read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "filters/ext_authz/check.h"
#include "grpc/framing.h"

#include "envoy/service/auth/v3/external_auth.pb-c.h"

static void matchers(sharp_ext_authz_matchers_t *l, sharp_string_match_kind_t kind,
                     const char *const *values)
{
    char err[128];
    uint32_t n = 0;
    while (values[n])
        n++;
    l->m = calloc(n ? n : 1, sizeof *l->m);
    l->set = true;
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(sharp_string_matcher_init(&l->m[l->n++], kind, values[i],
                                                   strlen(values[i]), false, err, sizeof err),
                         0);
}

static void cfg_free(sharp_ext_authz_http_t *c)
{
    free(c->path_prefix);
    sharp_ext_authz_matchers_free(&c->allowed_headers);
    sharp_ext_authz_matchers_free(&c->disallowed_headers);
    sharp_ext_authz_matchers_free(&c->upstream);
    sharp_ext_authz_matchers_free(&c->upstream_append);
    sharp_ext_authz_matchers_free(&c->client);
    sharp_ext_authz_matchers_free(&c->client_on_success);
    sharp_header_ops_free(&c->headers_to_add);
}

/* The value of `name` in h, "" when absent; *count gets how many entries. */
static const char *value_of(const sharp_headers_t *h, const char *name, int *count)
{
    static char buf[256];
    int n = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t k = sharp_headers_name(h, i);
        if (k.len == strlen(name) && memcmp(k.p, name, k.len) == 0) {
            if (!n) {
                sharp_str_t v = sharp_headers_value(h, i);
                snprintf(buf, sizeof buf, "%.*s", (int)v.len, v.p);
            }
            n++;
        }
    }
    if (count) *count = n;
    return buf;
}

static void request(sharp_headers_t *h)
{
    sharp_headers_init(h);
    sharp_headers_add_cstr(h, ":method", "POST");
    sharp_headers_add_cstr(h, ":path", "/api/v1?x=1");
    sharp_headers_add_cstr(h, ":authority", "example.com");
    sharp_headers_add_cstr(h, ":scheme", "http");
    sharp_headers_add_cstr(h, "authorization", "Bearer abc");
    sharp_headers_add_cstr(h, "content-length", "5");
    sharp_headers_add_cstr(h, "x-trace", "t1");
    sharp_headers_add_cstr(h, "x-tenant", "a");
    sharp_headers_add_cstr(h, "x-tenant", "b");
    sharp_headers_add_cstr(h, "x-secret-token", "s");
    sharp_headers_add_cstr(h, "cookie", "c=1");
    sharp_headers_add_cstr(h, "x-envoy-auth-partial-body", "from-the-client");
}

static void request_defaults_only(void **state)
{
    (void)state;
    sharp_ext_authz_http_t cfg = {0};
    sharp_headers_t req, out;
    request(&req);
    sharp_headers_init(&out);
    sharp_ext_authz_http_request(&cfg, &req, 0, -1, &out, NULL);
    /* content-length first, then the allowed ones in the client's order */
    assert_int_equal(out.n, 5);
    assert_memory_equal(sharp_headers_name(&out, 0).p, "content-length", 14);
    assert_string_equal(value_of(&out, "content-length", NULL), "0");
    assert_string_equal(value_of(&out, ":method", NULL), "POST");
    assert_string_equal(value_of(&out, ":path", NULL), "/api/v1?x=1");
    assert_string_equal(value_of(&out, ":authority", NULL), "example.com");
    assert_string_equal(value_of(&out, "authorization", NULL), "Bearer abc");
    sharp_headers_free(&req);
    sharp_headers_free(&out);
}

static void request_allowed_prefix_and_body(void **state)
{
    (void)state;
    sharp_ext_authz_http_t cfg = {0};
    char err[128];
    cfg.path_prefix = strdup("/check");
    matchers(&cfg.allowed_headers, SHARP_SM_PREFIX, (const char *[]){"x-", NULL});
    matchers(&cfg.disallowed_headers, SHARP_SM_CONTAINS, (const char *[]){"secret", NULL});
    cfg.headers_to_add.add = calloc(1, sizeof *cfg.headers_to_add.add);
    assert_int_equal(sharp_header_op_init(&cfg.headers_to_add.add[0], "x-trace", "from-config",
                                          SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false, err, sizeof err),
                     0);
    cfg.headers_to_add.nadd = 1;
    sharp_headers_t req, out;
    request(&req);
    sharp_headers_init(&out);
    sharp_ext_authz_http_request(&cfg, &req, 42, 1, &out, NULL);
    int n;
    assert_string_equal(value_of(&out, "content-length", &n), "42");
    assert_int_equal(n, 1); /* the client's 5 is not passed on */
    assert_string_equal(value_of(&out, ":path", NULL), "/check/api/v1?x=1");
    /* a repeated name goes as one entry, its values joined with "," */
    assert_string_equal(value_of(&out, "x-tenant", &n), "a,b");
    assert_int_equal(n, 1);
    /* disallowed wins over allowed */
    value_of(&out, "x-secret-token", &n);
    assert_int_equal(n, 0);
    value_of(&out, "cookie", &n);
    assert_int_equal(n, 0);
    value_of(&out, ":scheme", &n);
    assert_int_equal(n, 0);
    /* the client's x-envoy-auth-partial-body is replaced by the proxy's */
    assert_string_equal(value_of(&out, "x-envoy-auth-partial-body", &n), "true");
    assert_int_equal(n, 1);
    /* headers_to_add overwrites the client's value */
    assert_string_equal(value_of(&out, "x-trace", &n), "from-config");
    assert_int_equal(n, 1);
    sharp_headers_free(&req);
    sharp_headers_free(&out);
    cfg_free(&cfg);
}

static void utf8_sanitize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},           /* valid two-byte */
        {"\xe2\x82\xac", "\xe2\x82\xac"},         /* valid three-byte */
        {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"}, /* valid four-byte */
        {"a\xff"
         "b",
         "a!b"},                      /* never valid */
        {"\xc0\xaf", "!!"},           /* overlong */
        {"\xed\xa0\x80", "!!!"},      /* a surrogate */
        {"\xe2\x82", "!!"},           /* cut short */
        {"\xf4\x90\x80\x80", "!!!!"}, /* beyond U+10FFFF */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sharp_sbuf_t out = {0};
        sharp_ext_authz_utf8_sanitize(&out, cases[i].in, strlen(cases[i].in));
        assert_int_equal(out.len, strlen(cases[i].out));
        assert_memory_equal(out.data, cases[i].out, out.len);
        sharp_sbuf_free(&out);
    }
}

static void answer(sharp_headers_t *h, const char *status)
{
    sharp_headers_init(h);
    sharp_headers_add_cstr(h, ":status", status);
    sharp_headers_add_cstr(h, "x-user", "alice");
    sharp_headers_add_cstr(h, "x-append", "more");
    sharp_headers_add_cstr(h, "x-client", "hello");
    sharp_headers_add_cstr(h, "www-authenticate", "Bearer");
    sharp_headers_add_cstr(h, "x-envoy-auth-headers-to-remove", "x-drop , ,x-drop-too");
    sharp_headers_add_cstr(h, ":authority", "authz");
}

static void ok_answer(void **state)
{
    (void)state;
    sharp_ext_authz_http_t cfg = {0};
    matchers(&cfg.upstream, SHARP_SM_EXACT, (const char *[]){"x-user", NULL});
    matchers(&cfg.upstream_append, SHARP_SM_EXACT, (const char *[]){"x-append", NULL});
    matchers(&cfg.client_on_success, SHARP_SM_EXACT, (const char *[]){"x-client", NULL});
    sharp_headers_t a;
    answer(&a, "200");
    sharp_ext_authz_response_t r;
    sharp_ext_authz_response_init(&r);
    sharp_ext_authz_http_response(&cfg, &a, "ignored", 7, &r);
    assert_int_equal(r.status, SHARP_EXT_AUTHZ_OK);
    assert_int_equal(r.set.n, 1);
    assert_string_equal(value_of(&r.set, "x-user", NULL), "alice");
    assert_int_equal(r.add.n, 1);
    assert_string_equal(value_of(&r.add, "x-append", NULL), "more");
    assert_int_equal(r.response_add.n, 1);
    assert_int_equal(r.remove.n, 2);
    assert_memory_equal(sharp_headers_name(&r.remove, 0).p, "x-drop", 6);
    assert_int_equal(sharp_headers_name(&r.remove, 0).len, 6);
    assert_int_equal(r.body.len, 0);

    /* applied to the request: set replaces, add appends an entry, remove
     * never takes a pseudo-header or host */
    sharp_headers_t req;
    sharp_headers_init(&req);
    sharp_headers_add_cstr(&req, ":path", "/");
    sharp_headers_add_cstr(&req, "host", "h");
    sharp_headers_add_cstr(&req, "x-user", "mallory");
    sharp_headers_add_cstr(&req, "x-user", "eve");
    sharp_headers_add_cstr(&req, "x-append", "first");
    sharp_headers_add_cstr(&req, "x-drop", "1");
    sharp_headers_add(&r.remove, ":path", 5, "", 0);
    sharp_headers_add(&r.remove, "host", 4, "", 0);
    sharp_headers_add_cstr(&r.append, "x-append", "tail");
    sharp_headers_add_cstr(&r.append, "x-absent", "never");
    sharp_ext_authz_apply_request(&r, &req);
    int n;
    assert_string_equal(value_of(&req, "x-user", &n), "alice");
    assert_int_equal(n, 1);
    assert_string_equal(value_of(&req, "x-append", &n), "first,tail");
    assert_int_equal(n, 2);
    value_of(&req, "x-absent", &n);
    assert_int_equal(n, 0);
    value_of(&req, "x-drop", &n);
    assert_int_equal(n, 0);
    value_of(&req, ":path", &n);
    assert_int_equal(n, 1);
    value_of(&req, "host", &n);
    assert_int_equal(n, 1);
    sharp_headers_free(&req);
    sharp_headers_free(&a);
    sharp_ext_authz_response_free(&r);
    cfg_free(&cfg);
}

static void denied_answer(void **state)
{
    (void)state;
    sharp_ext_authz_http_t cfg = {0};
    sharp_headers_t a;
    answer(&a, "401");
    sharp_ext_authz_response_t r;
    sharp_ext_authz_response_init(&r);
    sharp_ext_authz_http_response(&cfg, &a, "go away", 7, &r);
    assert_int_equal(r.status, SHARP_EXT_AUTHZ_DENIED);
    assert_int_equal(r.http_status, 401);
    assert_int_equal(r.body.len, 7);
    assert_memory_equal(r.body.data, "go away", 7);
    /* allowed_client_headers unset: all but :authority and the remove list */
    int n;
    value_of(&r.set, ":authority", &n);
    assert_int_equal(n, 0);
    value_of(&r.set, "x-envoy-auth-headers-to-remove", &n);
    assert_int_equal(n, 0);
    assert_string_equal(value_of(&r.set, "x-user", NULL), "alice");
    assert_string_equal(value_of(&r.set, ":status", NULL), "401");
    assert_int_equal(r.remove.n, 0);
    sharp_ext_authz_response_free(&r);

    /* allowed_client_headers set: those and Envoy's defaults */
    matchers(&cfg.client, SHARP_SM_EXACT, (const char *[]){"x-client", NULL});
    sharp_ext_authz_response_init(&r);
    sharp_ext_authz_http_response(&cfg, &a, NULL, 0, &r);
    assert_string_equal(value_of(&r.set, "x-client", NULL), "hello");
    assert_string_equal(value_of(&r.set, "www-authenticate", NULL), "Bearer");
    value_of(&r.set, "x-user", &n);
    assert_int_equal(n, 0);
    sharp_ext_authz_response_free(&r);
    sharp_headers_free(&a);
    cfg_free(&cfg);
}

static void errors(void **state)
{
    (void)state;
    sharp_ext_authz_http_t cfg = {0};
    const char *codes[] = {"500", "503", "599", "abc"};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        sharp_headers_t a;
        answer(&a, codes[i]);
        sharp_ext_authz_response_t r;
        sharp_ext_authz_response_init(&r);
        sharp_ext_authz_http_response(&cfg, &a, "x", 1, &r);
        assert_int_equal(r.status, SHARP_EXT_AUTHZ_ERROR);
        assert_int_equal(r.set.n, 0);
        sharp_ext_authz_response_free(&r);
        sharp_headers_free(&a);
    }
    /* a 3xx or 4xx is a denial, a 204 too: only 200 allows */
    const char *denials[] = {"204", "302", "403", "499"};
    for (size_t i = 0; i < sizeof denials / sizeof *denials; i++) {
        sharp_headers_t a;
        answer(&a, denials[i]);
        sharp_ext_authz_response_t r;
        sharp_ext_authz_response_init(&r);
        sharp_ext_authz_http_response(&cfg, &a, NULL, 0, &r);
        assert_int_equal(r.status, SHARP_EXT_AUTHZ_DENIED);
        sharp_ext_authz_response_free(&r);
        sharp_headers_free(&a);
    }
}

static void grpc_check_request(void **state)
{
    (void)state;
    sharp_headers_t req;
    request(&req);
    const char *ext[] = {"k1", "v1", "k2", "v2", NULL};
    sharp_ext_authz_grpc_in_t in = {
        .headers = &req,
        .stream_id = 12345,
        .protocol = "HTTP/2",
        .source = "10.0.0.1:5555",
        .destination = "[::1]:8080",
        .service = "frontend",
        .time_us = 1700000000123456ull,
        .size = 5,
        .body = "hello world",
        .body_len = 5,
        .partial = true,
        .context_extensions = ext,
    };
    sharp_sbuf_t out = {0};
    sharp_ext_authz_grpc_request(&in, &out);
    sharp_grpc_frame_t fr;
    assert_int_equal(sharp_grpc_deframe((const uint8_t *)out.data, out.len, 1 << 20, &fr),
                     SHARP_GRPC_FRAME_OK);
    assert_int_equal(fr.used, out.len);
    Envoy__Service__Auth__V3__CheckRequest *cr =
        envoy__service__auth__v3__check_request__unpack(NULL, fr.len, fr.msg);
    assert_non_null(cr);
    const Envoy__Service__Auth__V3__AttributeContext *a = cr->attributes;
    assert_string_equal(a->source->address->socket_address->address, "10.0.0.1");
    assert_int_equal(a->source->address->socket_address->port_value, 5555);
    assert_string_equal(a->source->service, "frontend");
    assert_string_equal(a->destination->address->socket_address->address, "::1");
    assert_int_equal(a->destination->address->socket_address->port_value, 8080);
    const Envoy__Service__Auth__V3__AttributeContext__HttpRequest *h = a->request->http;
    assert_int_equal(a->request->time->seconds, 1700000000);
    assert_int_equal(a->request->time->nanos, 123456000);
    assert_string_equal(h->id, "12345");
    assert_string_equal(h->method, "POST");
    assert_string_equal(h->path, "/api/v1?x=1");
    assert_string_equal(h->host, "example.com");
    assert_string_equal(h->scheme, "http");
    assert_string_equal(h->protocol, "HTTP/2");
    assert_int_equal(h->size, 5);
    assert_string_equal(h->body, "hello");
    assert_int_equal(h->raw_body.len, 0);
    bool tenant = false, partial = false, method = false;
    for (size_t i = 0; i < h->n_headers; i++) {
        if (!strcmp(h->headers[i]->key, "x-tenant")) tenant = !strcmp(h->headers[i]->value, "a,b");
        if (!strcmp(h->headers[i]->key, "x-envoy-auth-partial-body"))
            partial = !strcmp(h->headers[i]->value, "true");
        if (!strcmp(h->headers[i]->key, ":method")) method = true;
    }
    assert_true(tenant);
    assert_true(partial);
    assert_true(method);
    /* every distinct name once, plus the partial-body header */
    assert_int_equal(h->n_headers, 10 + 1);
    assert_int_equal(a->n_context_extensions, 2);
    assert_string_equal(a->context_extensions[1]->key, "k2");
    assert_string_equal(a->context_extensions[1]->value, "v2");
    envoy__service__auth__v3__check_request__free_unpacked(cr, NULL);
    sharp_sbuf_free(&out);

    /* pack_as_bytes: raw_body; no body at all: no partial-body header */
    in.pack_as_bytes = true;
    sharp_ext_authz_grpc_request(&in, &out);
    assert_int_equal(sharp_grpc_deframe((const uint8_t *)out.data, out.len, 1 << 20, &fr),
                     SHARP_GRPC_FRAME_OK);
    cr = envoy__service__auth__v3__check_request__unpack(NULL, fr.len, fr.msg);
    assert_int_equal(cr->attributes->request->http->raw_body.len, 5);
    assert_string_equal(cr->attributes->request->http->body, "");
    envoy__service__auth__v3__check_request__free_unpacked(cr, NULL);
    sharp_sbuf_free(&out);
    in.body = NULL;
    in.source = "garbage";
    sharp_ext_authz_grpc_request(&in, &out);
    assert_int_equal(sharp_grpc_deframe((const uint8_t *)out.data, out.len, 1 << 20, &fr),
                     SHARP_GRPC_FRAME_OK);
    cr = envoy__service__auth__v3__check_request__unpack(NULL, fr.len, fr.msg);
    assert_int_equal(cr->attributes->request->http->n_headers, 10);
    assert_null(cr->attributes->source->address);
    envoy__service__auth__v3__check_request__free_unpacked(cr, NULL);
    sharp_sbuf_free(&out);
    sharp_headers_free(&req);
}

static Envoy__Config__Core__V3__HeaderValueOption *hvo(const char *k, const char *v, int append,
                                                       int action)
{
    Envoy__Config__Core__V3__HeaderValueOption *o = calloc(1, sizeof *o);
    envoy__config__core__v3__header_value_option__init(o);
    o->header = calloc(1, sizeof *o->header);
    envoy__config__core__v3__header_value__init(o->header);
    o->header->key = (char *)k;
    o->header->value = (char *)v;
    if (append >= 0) {
        o->append = calloc(1, sizeof *o->append);
        google__protobuf__bool_value__init(o->append);
        o->append->value = append;
    }
    o->append_action = action;
    return o;
}

static void hvo_free(Envoy__Config__Core__V3__HeaderValueOption *o)
{
    free(o->header);
    free(o->append);
    free(o);
}

static size_t pack(const ProtobufCMessage *m, uint8_t *buf)
{
    return protobuf_c_message_pack(m, buf);
}

static void grpc_check_response(void **state)
{
    (void)state;
    static uint8_t buf[4096];
    Envoy__Service__Auth__V3__CheckResponse r = ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__INIT;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    Envoy__Service__Auth__V3__OkHttpResponse ok = ENVOY__SERVICE__AUTH__V3__OK_HTTP_RESPONSE__INIT;
    Envoy__Config__Core__V3__HeaderValueOption *hs[2] = {hvo("x-set", "1", -1, 0),
                                                         hvo("x-app", "2", 1, 0)};
    Envoy__Config__Core__V3__HeaderValueOption *rs[4] = {
        hvo("r-add", "a", -1,
            ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD),
        hvo("r-absent", "b", -1,
            ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__ADD_IF_ABSENT),
        hvo("r-over", "c", -1,
            ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS),
        hvo("r-set", "d", 0, 0),
    };
    char *rm[] = {"x-gone"};
    ok.n_headers = 2;
    ok.headers = hs;
    ok.n_response_headers_to_add = 4;
    ok.response_headers_to_add = rs;
    ok.n_headers_to_remove = 1;
    ok.headers_to_remove = rm;
    r.status = &st;
    r.http_response_case = ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE_OK_RESPONSE;
    r.ok_response = &ok;
    size_t n = pack(&r.base, buf);
    sharp_ext_authz_response_t out;
    sharp_ext_authz_response_init(&out);
    assert_true(sharp_ext_authz_grpc_response(buf, n, &out));
    assert_int_equal(out.status, SHARP_EXT_AUTHZ_OK);
    assert_string_equal(value_of(&out.set, "x-set", NULL), "1");
    assert_string_equal(value_of(&out.append, "x-app", NULL), "2");
    assert_int_equal(out.set.n, 1);
    assert_int_equal(out.append.n, 1);
    assert_string_equal(value_of(&out.response_add, "r-add", NULL), "a");
    assert_string_equal(value_of(&out.response_add_if_absent, "r-absent", NULL), "b");
    assert_string_equal(value_of(&out.response_overwrite_if_exists, "r-over", NULL), "c");
    assert_string_equal(value_of(&out.response_set, "r-set", NULL), "d");
    assert_int_equal(out.remove.n, 1);
    sharp_ext_authz_response_free(&out);

    /* a non-zero status denies: 403 without a denied_response */
    st.code = 7;
    r.http_response_case = ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE__NOT_SET;
    n = pack(&r.base, buf);
    sharp_ext_authz_response_init(&out);
    assert_true(sharp_ext_authz_grpc_response(buf, n, &out));
    assert_int_equal(out.status, SHARP_EXT_AUTHZ_DENIED);
    assert_int_equal(out.http_status, 403);
    assert_int_equal(out.body.len, 0);
    sharp_ext_authz_response_free(&out);

    /* with one: its status, headers to set and body */
    Envoy__Service__Auth__V3__DeniedHttpResponse d =
        ENVOY__SERVICE__AUTH__V3__DENIED_HTTP_RESPONSE__INIT;
    Envoy__Type__V3__HttpStatus hs401 = ENVOY__TYPE__V3__HTTP_STATUS__INIT;
    hs401.code = 401;
    d.status = &hs401;
    d.n_headers = 2;
    d.headers = hs;
    d.body = "no";
    r.http_response_case = ENVOY__SERVICE__AUTH__V3__CHECK_RESPONSE__HTTP_RESPONSE_DENIED_RESPONSE;
    r.denied_response = &d;
    n = pack(&r.base, buf);
    sharp_ext_authz_response_init(&out);
    assert_true(sharp_ext_authz_grpc_response(buf, n, &out));
    assert_int_equal(out.status, SHARP_EXT_AUTHZ_DENIED);
    assert_int_equal(out.http_status, 401);
    assert_int_equal(out.body.len, 2);
    assert_int_equal(out.set.n, 1);
    sharp_ext_authz_response_free(&out);

    /* garbage does not parse */
    sharp_ext_authz_response_init(&out);
    assert_false(sharp_ext_authz_grpc_response((const uint8_t *)"\xff\xff\xff", 3, &out));
    sharp_ext_authz_response_free(&out);
    for (int i = 0; i < 2; i++)
        hvo_free(hs[i]);
    for (int i = 0; i < 4; i++)
        hvo_free(rs[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_defaults_only),
        cmocka_unit_test(request_allowed_prefix_and_body),
        cmocka_unit_test(ok_answer),
        cmocka_unit_test(denied_answer),
        cmocka_unit_test(errors),
        cmocka_unit_test(utf8_sanitize),
        cmocka_unit_test(grpc_check_request),
        cmocka_unit_test(grpc_check_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
