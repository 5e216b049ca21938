/* test_admin.c: the admin server's pure helpers: request-target splitting,
 * percent-decoding, query parameters and the JSON pretty-printer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "admin/json.h"
#include "admin/query.h"

static void split(const char *target, const char *want_path, const char *want_query)
{
    sharp_str_t path, query;
    sharp_url_split(target, strlen(target), &path, &query);
    assert_int_equal(path.len, strlen(want_path));
    assert_memory_equal(path.p, want_path, path.len);
    assert_int_equal(query.len, strlen(want_query));
    assert_memory_equal(query.p, want_query, query.len);
}

static void test_url_split(void **state)
{
    split("/stats", "/stats", "");
    split("/stats?", "/stats", "");
    split("/stats?filter=a&usedonly", "/stats", "filter=a&usedonly");
    split("/stats?a=1#frag", "/stats", "a=1");
    split("/x#f?not=query", "/x", "");
    split("", "", "");
    split("?a", "", "a");
}

static void decode(const char *in, const char *want)
{
    char out[256];
    size_t n = sharp_percent_decode(in, strlen(in), out);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
}

static void test_url_decode(void **state)
{
    decode("", "");
    decode("plain", "plain");
    decode("a%20b", "a b");
    decode("%2f%2F", "//");
    decode("cluster%5C..%2B", "cluster\\..+");
    decode("a+b", "a+b");   /* '+' is not a space */
    decode("100%", "100%"); /* truncated escapes stay literal */
    decode("100%2", "100%2");
    decode("%zz%4", "%zz%4"); /* non-hex digits stay literal */
    decode("%41%42%43", "ABC");
    decode("%%41", "%A");
}

static void test_url_decode_nul(void **state)
{
    char out[8];
    size_t n = sharp_percent_decode("a%00b", 5, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[1], '\0');
    assert_int_equal(out[2], 'b');
}

static void test_query_parse(void **state)
{
    sharp_query_t q;
    const char *qs = "filter=cluster%5C.a%7Cb&usedonly&&format=json&empty=&filter=second";
    sharp_query_parse(qs, strlen(qs), &q);
    assert_int_equal(q.n, 5);
    assert_string_equal(q.params[0].key, "filter");
    assert_string_equal(q.params[0].value, "cluster\\.a|b");
    assert_true(q.params[0].has_value);
    assert_string_equal(q.params[1].key, "usedonly");
    assert_string_equal(q.params[1].value, "");
    assert_false(q.params[1].has_value);
    assert_true(q.params[3].has_value);
    assert_string_equal(sharp_query_get(&q, "filter"), "cluster\\.a|b"); /* first wins */
    assert_string_equal(sharp_query_get(&q, "format"), "json");
    assert_string_equal(sharp_query_get(&q, "empty"), "");
    assert_true(sharp_query_has(&q, "usedonly"));
    assert_false(sharp_query_has(&q, "missing"));
    assert_null(sharp_query_get(&q, "missing"));
    sharp_query_free(&q);
    assert_int_equal(q.n, 0);
    assert_null(q.params);
}

static void test_query_parse_edges(void **state)
{
    sharp_query_t q;
    sharp_query_parse("", 0, &q);
    assert_int_equal(q.n, 0);
    sharp_query_free(&q);

    sharp_query_parse("&&&", 3, &q);
    assert_int_equal(q.n, 0);
    sharp_query_free(&q);

    sharp_query_parse("=v&k%3Dx=y%3Dz&a==b", 19, &q);
    assert_int_equal(q.n, 3);
    assert_string_equal(q.params[0].key, "");
    assert_string_equal(q.params[0].value, "v");
    assert_string_equal(q.params[1].key, "k=x"); /* decoded after splitting */
    assert_string_equal(q.params[1].value, "y=z");
    assert_string_equal(q.params[2].key, "a");
    assert_string_equal(q.params[2].value, "=b");
    sharp_query_free(&q);

    /* Many parameters grow the array. */
    sharp_sbuf_t b = {0};
    for (int i = 0; i < 100; i++)
        sharp_sbuf_printf(&b, "%sk%d=%d", i ? "&" : "", i, i);
    sharp_query_parse(b.data, b.len, &q);
    assert_int_equal(q.n, 100);
    assert_string_equal(sharp_query_get(&q, "k99"), "99");
    sharp_query_free(&q);
    sharp_sbuf_free(&b);
}

static void pretty(const char *in, const char *want)
{
    sharp_sbuf_t b = {0};
    sharp_json_pretty(in, strlen(in), &b);
    assert_string_equal(sharp_sbuf_cstr(&b), want);
    sharp_sbuf_free(&b);
}

static void test_json_pretty(void **state)
{
    pretty("{}", "{}");
    pretty("[]", "[]");
    pretty("{\"a\":1}", "{\n \"a\": 1\n}");
    pretty("{\"a\":[],\"b\":{ },\"c\":[1,2]}",
           "{\n \"a\": [],\n \"b\": {},\n \"c\": [\n  1,\n  2\n ]\n}");
    /* Strings are copied untouched, escapes included. */
    pretty("{\"k\":\"a,b:{c}[\\\"x\\\\\"}", "{\n \"k\": \"a,b:{c}[\\\"x\\\\\"\n}");
    /* Whitespace outside strings is dropped, inside kept. */
    pretty(" { \"a b\" :\n true } ", "{\n \"a b\": true\n}");
}

static void test_json_pretty_garbage(void **state)
{
    /* Not JSON: must not crash or read past the end. */
    const char *inputs[] = {
        "\"unterminated", "\"ends with backslash\\", "}}]]", "{{{[", ":::", ","};
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        sharp_sbuf_t b = {0};
        sharp_json_pretty(inputs[i], strlen(inputs[i]), &b);
        sharp_sbuf_free(&b);
    }
}

static void test_json_str(void **state)
{
    sharp_sbuf_t b = {0};
    sharp_json_str(&b, "a\"b\n");
    assert_string_equal(sharp_sbuf_cstr(&b), "\"a\\\"b\\n\"");
    sharp_sbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_split),           cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_url_decode_nul),      cmocka_unit_test(test_query_parse),
        cmocka_unit_test(test_query_parse_edges),   cmocka_unit_test(test_json_pretty),
        cmocka_unit_test(test_json_pretty_garbage), cmocka_unit_test(test_json_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
