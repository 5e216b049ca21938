/* test_grpc_bridge.c: the gRPC HTTP/1 bridges' framing and header logic
 * (filters/grpc_bridge/bridge.c) and the header mutation filter's mutation
 * lists (filters/header_mutation/filter.c): frame headers, Envoy's
 * SimpleAtoi reading of numbers, content-length adjustment (including
 * lengths too short for a frame header), the response size header,
 * trailers merged into the HTTP/1 bridge's headers, the reverse bridge's
 * status mapping, and mutations applied in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "envoy/config/common/mutation_rules/v3/mutation_rules.pb-c.h"
#include "filters/grpc_bridge/bridge.h"
#include "filters/header_mutation/filter.h"

static sharp_str_t S(const char *s)
{
    return (sharp_str_t){s, strlen(s)};
}

static const char *get(const sharp_headers_t *h, const char *name)
{
    static char buf[256];
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, name, &v)) return NULL;
    snprintf(buf, sizeof buf, "%.*s", (int)v.len, v.p);
    return buf;
}

static void test_frame_header(void **state)
{
    (void)state;
    uint8_t h[SHARP_GRPC_FRAME_HEADER_SIZE];
    sharp_grpc_bridge_frame_header(h, 0);
    assert_memory_equal(h, "\0\0\0\0\0", 5);
    sharp_grpc_bridge_frame_header(h, 0x01020304);
    assert_memory_equal(h, "\0\x01\x02\x03\x04", 5);
    sharp_grpc_bridge_frame_header(h, UINT32_MAX);
    assert_memory_equal(h, "\0\xff\xff\xff\xff", 5);
}

static void test_atou64(void **state)
{
    (void)state;
    uint64_t n = 7;
    assert_true(sharp_grpc_bridge_atou64(S("0"), &n) && n == 0);
    assert_true(sharp_grpc_bridge_atou64(S(" 42\t"), &n) && n == 42);
    assert_true(sharp_grpc_bridge_atou64(S("+5"), &n) && n == 5);
    assert_true(sharp_grpc_bridge_atou64(S("18446744073709551615"), &n) && n == UINT64_MAX);
    assert_false(sharp_grpc_bridge_atou64(S("18446744073709551616"), &n));
    assert_false(sharp_grpc_bridge_atou64(S(""), &n));
    assert_false(sharp_grpc_bridge_atou64(S(" "), &n));
    assert_false(sharp_grpc_bridge_atou64(S("-1"), &n));
    assert_false(sharp_grpc_bridge_atou64(S("1x"), &n));
    assert_false(sharp_grpc_bridge_atou64(S("1 2"), &n));
}

static void test_adjust_content_length(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    /* none: nothing */
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, -5));
    assert_null(get(&h, "content-length"));
    sharp_headers_set_cstr(&h, "content-length", "12");
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, -5));
    assert_string_equal(get(&h, "content-length"), "7");
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, 5));
    assert_string_equal(get(&h, "content-length"), "12");
    /* 0 and garbage stay as they are */
    sharp_headers_set_cstr(&h, "content-length", "0");
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, 5));
    assert_string_equal(get(&h, "content-length"), "0");
    sharp_headers_set_cstr(&h, "content-length", "abc");
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, -5));
    assert_string_equal(get(&h, "content-length"), "abc");
    /* too short for a frame header: refused, left alone */
    sharp_headers_set_cstr(&h, "content-length", "4");
    assert_false(sharp_grpc_bridge_adjust_content_length(&h, -5));
    assert_string_equal(get(&h, "content-length"), "4");
    sharp_headers_set_cstr(&h, "content-length", "5");
    assert_true(sharp_grpc_bridge_adjust_content_length(&h, -5));
    assert_string_equal(get(&h, "content-length"), "0");
    sharp_headers_free(&h);
}

static void test_size_header(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    uint64_t n = 0;
    assert_false(sharp_grpc_bridge_size_header(&h, "x-size", &n));
    sharp_headers_add_cstr(&h, "x-size", "17, 20");
    assert_true(sharp_grpc_bridge_size_header(&h, "x-size", &n));
    assert_int_equal(n, 17);
    sharp_headers_set_cstr(&h, "x-size", "huge");
    assert_false(sharp_grpc_bridge_size_header(&h, "x-size", &n));
    sharp_headers_set_cstr(&h, "x-size", ",3");
    assert_false(sharp_grpc_bridge_size_header(&h, "x-size", &n));
    sharp_headers_free(&h);
}

static void test_is_protobuf(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    assert_false(sharp_grpc_bridge_is_protobuf(&h));
    sharp_headers_set_cstr(&h, "content-type", "application/x-protobuf");
    assert_true(sharp_grpc_bridge_is_protobuf(&h));
    sharp_headers_set_cstr(&h, "content-type", "application/x-protobuf; charset=x");
    assert_false(sharp_grpc_bridge_is_protobuf(&h));
    sharp_headers_set_cstr(&h, "content-type", "application/grpc");
    assert_false(sharp_grpc_bridge_is_protobuf(&h));
    sharp_headers_free(&h);
}

static void test_merge_trailers(void **state)
{
    (void)state;
    sharp_headers_t r, t;
    sharp_headers_init(&r);
    sharp_headers_init(&t);
    sharp_headers_add_cstr(&r, ":status", "200");
    sharp_headers_add_cstr(&t, "grpc-status", "0");
    sharp_grpc_bridge_merge_trailers(&r, &t, 12);
    assert_string_equal(get(&r, ":status"), "200");
    assert_string_equal(get(&r, "grpc-status"), "0");
    assert_null(get(&r, "grpc-message"));
    assert_string_equal(get(&r, "content-length"), "12");
    /* a failure: 503, status and message copied */
    sharp_headers_set_cstr(&t, "grpc-status", "14");
    sharp_headers_add_cstr(&t, "grpc-message", "gone%20away");
    sharp_grpc_bridge_merge_trailers(&r, &t, 0);
    assert_string_equal(get(&r, ":status"), "503");
    assert_string_equal(get(&r, "grpc-status"), "14");
    assert_string_equal(get(&r, "grpc-message"), "gone%20away");
    assert_string_equal(get(&r, "content-length"), "0");
    /* a status that is no number is a failure too */
    sharp_headers_set_cstr(&r, ":status", "200");
    sharp_headers_set_cstr(&t, "grpc-status", "ok");
    sharp_grpc_bridge_merge_trailers(&r, &t, 1);
    assert_string_equal(get(&r, ":status"), "503");
    /* no grpc-status: the status stays */
    sharp_headers_clear(&t);
    sharp_headers_set_cstr(&r, ":status", "200");
    sharp_grpc_bridge_merge_trailers(&r, &t, 1);
    assert_string_equal(get(&r, ":status"), "200");
    sharp_headers_free(&r);
    sharp_headers_free(&t);
}

static void test_status_from_http(void **state)
{
    (void)state;
    assert_int_equal(sharp_grpc_bridge_status_from_http(200), 0);
    assert_int_equal(sharp_grpc_bridge_status_from_http(400), 13);
    assert_int_equal(sharp_grpc_bridge_status_from_http(401), 16);
    assert_int_equal(sharp_grpc_bridge_status_from_http(403), 7);
    assert_int_equal(sharp_grpc_bridge_status_from_http(404), 12);
    assert_int_equal(sharp_grpc_bridge_status_from_http(429), 14);
    assert_int_equal(sharp_grpc_bridge_status_from_http(503), 14);
    assert_int_equal(sharp_grpc_bridge_status_from_http(201), 2);
    assert_int_equal(sharp_grpc_bridge_status_from_http(500), 2);
}

typedef Envoy__Config__Common__MutationRules__V3__HeaderMutation hm_pb_t;

static hm_pb_t *mk_append(const char *k, const char *v, int action, bool keep)
{
    hm_pb_t *m = calloc(1, sizeof *m);
    envoy__config__common__mutation_rules__v3__header_mutation__init(m);
    Envoy__Config__Core__V3__HeaderValueOption *o = calloc(1, sizeof *o);
    envoy__config__core__v3__header_value_option__init(o);
    Envoy__Config__Core__V3__HeaderValue *hv = calloc(1, sizeof *hv);
    envoy__config__core__v3__header_value__init(hv);
    hv->key = (char *)k;
    hv->value = (char *)v;
    o->header = hv;
    o->append_action = action;
    o->keep_empty_value = keep;
    m->action_case = ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_APPEND;
    m->append = o;
    return m;
}

static hm_pb_t *mk_remove(const char *k)
{
    hm_pb_t *m = calloc(1, sizeof *m);
    envoy__config__common__mutation_rules__v3__header_mutation__init(m);
    m->action_case = ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_REMOVE;
    m->remove = (char *)k;
    return m;
}

static void free_pb(hm_pb_t **pb, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pb[i]->action_case ==
            ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_APPEND) {
            free(pb[i]->append->header);
            free(pb[i]->append);
        }
        free(pb[i]);
    }
}

static void test_mutations_in_order(void **state)
{
    (void)state;
    hm_pb_t *pb[] = {
        mk_append("X-A", "1", 0, false), /* APPEND_IF_EXISTS_OR_ADD */
        mk_append("x-a", "2", 0, false),
        mk_append("x-b", "first", 1, false), /* ADD_IF_ABSENT */
        mk_append("x-b", "second", 1, false),
        mk_append("x-a", "only", 2, false),  /* OVERWRITE_IF_EXISTS_OR_ADD */
        mk_append("x-c", "never", 3, false), /* OVERWRITE_IF_EXISTS: x-c absent */
        mk_remove("X-B"),
        mk_append("x-b", "again", 3, false), /* absent after the removal */
        mk_append("x-e", "", 0, false),
        mk_append("x-k", "", 0, true),
    };
    size_t n = sizeof pb / sizeof pb[0];
    sharp_hm_list_t l;
    char err[256] = "";
    assert_int_equal(sharp_hm_list_init(&l, "m", pb, n, err, sizeof err), 0);
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-b", "old");
    sharp_hm_list_apply(&l, &h, NULL);
    assert_string_equal(get(&h, "x-a"), "only");
    assert_int_equal(
        sharp_headers_find(&h, "x-a", 3, (uint32_t)sharp_headers_find(&h, "x-a", 3, 0) + 1), -1);
    assert_null(get(&h, "x-b"));
    assert_null(get(&h, "x-c"));
    assert_null(get(&h, "x-e"));
    assert_string_equal(get(&h, "x-k"), "");
    sharp_headers_free(&h);
    sharp_hm_list_free(&l);
    free_pb(pb, n);
}

static void test_mutation_errors(void **state)
{
    (void)state;
    hm_pb_t *none = calloc(1, sizeof *none);
    envoy__config__common__mutation_rules__v3__header_mutation__init(none);
    sharp_hm_list_t l;
    char err[256] = "";
    assert_int_equal(
        sharp_hm_list_init(&l, "mutations.request_mutations", &none, 1, err, sizeof err), -1);
    assert_string_equal(err, "mutations.request_mutations[0]: one of remove or append is required");
    sharp_hm_list_free(&l);
    free(none);
    hm_pb_t *bad = mk_append("x", "%NOT_A_COMMAND%", 0, false);
    assert_int_equal(sharp_hm_list_init(&l, "m", &bad, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "m[0].append.header.value"));
    sharp_hm_list_free(&l);
    free_pb(&bad, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_header),          cmocka_unit_test(test_atou64),
        cmocka_unit_test(test_adjust_content_length), cmocka_unit_test(test_size_header),
        cmocka_unit_test(test_is_protobuf),           cmocka_unit_test(test_merge_trailers),
        cmocka_unit_test(test_status_from_http),      cmocka_unit_test(test_mutations_in_order),
        cmocka_unit_test(test_mutation_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
