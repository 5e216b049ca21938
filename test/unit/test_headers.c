/* test_headers.c: the header map (add/get/set/remove, pieces, tokens). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/headers.h"
#include "http/hpack_hint.h"

static bool value_is(const sharp_headers_t *h, const char *name, const char *want)
{
    sharp_str_t v;
    if (!sharp_headers_get_cstr(h, name, &v)) return false;
    return v.len == strlen(want) && memcmp(v.p, want, v.len) == 0;
}

static void test_add_get_lowercases(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "Content-Type", "text/plain");
    sharp_headers_add_cstr(&h, ":path", "/a");
    assert_int_equal(h.n, 2);
    sharp_str_t n = sharp_headers_name(&h, 0);
    assert_int_equal(n.len, 12);
    assert_memory_equal(n.p, "content-type", 12);
    assert_true(value_is(&h, "CONTENT-TYPE", "text/plain"));
    assert_true(value_is(&h, ":path", "/a"));
    assert_false(sharp_headers_get_cstr(&h, "content", NULL));
    assert_true(sharp_headers_get_cstr(&h, "content-type", NULL));
    sharp_headers_free(&h);
}

/* Names of every length up to 24 (words, a word and a tail, four-byte
 * halves, bytes): a lookup in any case finds its own name and no other of
 * that length, whichever byte differs; :status first answers the status. */
static void test_name_compare_lengths(void **state)
{
    (void)state;
    for (size_t len = 1; len <= 24; len++) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        char name[32], q[32];
        for (size_t k = 0; k < len; k++) name[k] = (char)('a' + k % 26);
        /* the same name with one byte changed, at each position */
        for (size_t k = 0; k < len; k++) {
            memcpy(q, name, len);
            q[k] = q[k] == 'z' ? 'y' : 'z';
            sharp_headers_add(&h, q, len, "other", 5);
        }
        sharp_headers_add(&h, name, len, "mine", 4);
        for (size_t k = 0; k < len; k++) q[k] = (char)(name[k] - 32); /* upper case */
        sharp_str_t v;
        assert_true(sharp_headers_get(&h, q, len, &v));
        assert_int_equal(v.len, 4);
        assert_memory_equal(v.p, "mine", 4);
        assert_int_equal(sharp_headers_find(&h, name, len, 0), (int)len);
        /* a one-byte difference at each position misses */
        for (size_t k = 0; k < len; k++) {
            memcpy(q, name, len);
            q[k] = '0';
            assert_false(sharp_headers_get(&h, q, len, NULL));
        }
        sharp_headers_free(&h);
    }
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":status", "204");
    sharp_headers_add_cstr(&h, ":status", "500");
    assert_int_equal(sharp_headers_status(&h), 204);
    sharp_headers_clear(&h);
    sharp_headers_add_cstr(&h, "server", "x");
    sharp_headers_add_cstr(&h, ":Status", "302");
    assert_int_equal(sharp_headers_status(&h), 302);
    sharp_headers_clear(&h);
    sharp_headers_add_cstr(&h, ":status", "20x");
    assert_int_equal(sharp_headers_status(&h), 0);
    sharp_headers_free(&h);
}

static void test_repeated_and_find(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "x-a", "1");
    sharp_headers_add_cstr(&h, "x-b", "2");
    sharp_headers_add_cstr(&h, "X-A", "3");
    assert_true(value_is(&h, "x-a", "1")); /* first value */
    int i = sharp_headers_find(&h, "x-a", 3, 0);
    assert_int_equal(i, 0);
    i = sharp_headers_find(&h, "x-a", 3, (uint32_t)i + 1);
    assert_int_equal(i, 2);
    assert_int_equal(sharp_headers_find(&h, "x-a", 3, 3), -1);
    sharp_headers_free(&h);
}

static void test_set_replaces_all_keeps_position(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "a", "1");
    sharp_headers_add_cstr(&h, "b", "2");
    sharp_headers_add_cstr(&h, "a", "3");
    sharp_headers_add_cstr(&h, "c", "4");
    sharp_headers_set_cstr(&h, "A", "new");
    assert_int_equal(h.n, 3);
    sharp_str_t n0 = sharp_headers_name(&h, 0), v0 = sharp_headers_value(&h, 0);
    assert_memory_equal(n0.p, "a", 1);
    assert_memory_equal(v0.p, "new", 3);
    assert_memory_equal(sharp_headers_name(&h, 2).p, "c", 1);
    sharp_headers_set_cstr(&h, "d", "5"); /* absent: added at the end */
    assert_int_equal(h.n, 4);
    assert_true(value_is(&h, "d", "5"));
    sharp_headers_free(&h);
}

static void test_remove(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "a", "1");
    sharp_headers_add_cstr(&h, "b", "2");
    sharp_headers_add_cstr(&h, "A", "3");
    assert_int_equal(sharp_headers_remove_cstr(&h, "a"), 2);
    assert_int_equal(h.n, 1);
    assert_true(value_is(&h, "b", "2"));
    assert_int_equal(sharp_headers_remove_cstr(&h, "zz"), 0);
    sharp_headers_free(&h);
}

static void test_append_pieces(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_append_last_value(&h, "x", 1); /* no header yet: ignored */
    sharp_headers_add(&h, "Us", 2, "", 0);
    sharp_headers_append_last_name(&h, "ER-Agent", 8);
    sharp_headers_append_last_value(&h, "curl/", 5);
    sharp_headers_append_last_value(&h, "8.0", 3);
    assert_int_equal(h.n, 1);
    assert_true(value_is(&h, "user-agent", "curl/8.0"));
    sharp_headers_add(&h, "host", 4, "ex", 2);
    sharp_headers_append_last_value(&h, "ample.com", 9);
    assert_true(value_is(&h, "host", "example.com"));
    assert_true(value_is(&h, "user-agent", "curl/8.0"));
    sharp_headers_free(&h);
}

static void test_copy_clear_and_size(void **state)
{
    sharp_headers_t a, b;
    sharp_headers_init(&a);
    sharp_headers_init(&b);
    sharp_headers_add_cstr(&a, "ab", "cde");
    sharp_headers_add_cstr(&a, "f", "");
    assert_int_equal(sharp_headers_byte_size(&a), 6);
    sharp_headers_add_cstr(&b, "old", "x");
    sharp_headers_copy(&b, &a);
    assert_int_equal(b.n, 2);
    assert_false(sharp_headers_get_cstr(&b, "old", NULL));
    assert_true(value_is(&b, "ab", "cde"));
    sharp_headers_clear(&a);
    assert_int_equal(a.n, 0);
    assert_int_equal(sharp_headers_byte_size(&a), 0);
    sharp_headers_add_cstr(&a, "z", "1");
    assert_true(value_is(&a, "z", "1"));
    sharp_headers_free(&a);
    sharp_headers_free(&b);
}

static void test_many_headers_grow(void **state)
{
    sharp_headers_t h;
    sharp_headers_init(&h);
    char name[16], val[64];
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof name, "h%d", i);
        snprintf(val, sizeof val, "value-%d-%040d", i, i);
        sharp_headers_add_cstr(&h, name, val);
    }
    assert_int_equal(h.n, 200);
    snprintf(val, sizeof val, "value-%d-%040d", 137, 137);
    assert_true(value_is(&h, "H137", val));
    sharp_headers_free(&h);
}

static void test_has_token(void **state)
{
    assert_true(sharp_header_value_has_token(SHARP_STR("keep-alive, close"), "close"));
    assert_true(sharp_header_value_has_token(SHARP_STR("Keep-Alive,Upgrade"), "upgrade"));
    assert_true(sharp_header_value_has_token(SHARP_STR(" close "), "close"));
    assert_true(sharp_header_value_has_token(SHARP_STR("a,\tclose\t,b"), "CLOSE"));
    assert_false(sharp_header_value_has_token(SHARP_STR("closed"), "close"));
    assert_false(sharp_header_value_has_token(SHARP_STR("keep-alive"), "close"));
    assert_false(sharp_header_value_has_token(SHARP_STR(""), "close"));
    assert_false(sharp_header_value_has_token(SHARP_STR("x close"), "close"));
}

static void test_list_next(void **state)
{
    (void)state;
    sharp_str_t rest = SHARP_STR(" 5xx,, gateway-error ,\treset\t,"), item;
    const char *want[] = {"5xx", "gateway-error", "reset"};
    for (int i = 0; i < 3; i++) {
        assert_true(sharp_list_next(&rest, &item));
        assert_int_equal(item.len, strlen(want[i]));
        assert_memory_equal(item.p, want[i], item.len);
    }
    assert_false(sharp_list_next(&rest, &item));
    rest = SHARP_STR(" , ,");
    assert_false(sharp_list_next(&rest, &item));
    rest = (sharp_str_t){"503,418", 3}; /* only the given length */
    assert_true(sharp_list_next(&rest, &item));
    assert_int_equal(item.len, 3);
    assert_false(sharp_list_next(&rest, &item));
}

/* A value taken from the same map (the router sets x-envoy-original-path
 * from :path) stays valid while the add or set grows the buffer under it:
 * ASan reported a use after free here. */
static void test_value_from_same_map_survives_growth(void **state)
{
    (void)state;
    for (size_t fill = 400; fill < 1200; fill += 7) {
        sharp_headers_t h;
        sharp_headers_init(&h);
        char path[1300];
        path[0] = '/';
        memset(path + 1, 'p', fill - 1);
        path[fill] = '\0';
        sharp_headers_add_cstr(&h, ":path", path);
        sharp_headers_add_cstr(&h, "host", "a");
        sharp_str_t v;
        assert_true(sharp_headers_get_cstr(&h, ":path", &v));
        sharp_headers_set(&h, "x-envoy-original-path", 21, v.p, v.len);
        assert_true(value_is(&h, "x-envoy-original-path", path));
        assert_true(sharp_headers_get_cstr(&h, "host", &v));
        sharp_headers_add(&h, "x-copied-host-with-a-long-name-to-move-the-buffer", 49, v.p, v.len);
        assert_true(value_is(&h, "x-copied-host-with-a-long-name-to-move-the-buffer", "a"));
        assert_true(sharp_headers_get_cstr(&h, ":path", &v));
        sharp_headers_set(&h, "host", 4, v.p, v.len); /* replacing an existing one */
        assert_true(value_is(&h, "host", path));
        assert_true(value_is(&h, ":path", path));
        sharp_headers_free(&h);
    }
}

/* Fuzz finding empty-header-name-null-buffer: a first header whose name and
 * value are both empty left the map without a buffer, and reading its
 * spans added an offset to NULL (UBSan). */
static void test_empty_first_header_has_spans(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add(&h, "", 0, "", 0);
    assert_int_equal(h.n, 1);
    sharp_str_t nm = sharp_headers_name(&h, 0), v = sharp_headers_value(&h, 0);
    assert_non_null(nm.p);
    assert_non_null(v.p);
    assert_int_equal(nm.len + v.len, 0);
    sharp_headers_free(&h);
}

/* Names are lower-cased eight bytes at a time: every byte value at every
 * position of a long name, and at the tail, changes exactly as one byte
 * at a time would ('A'..'Z' only), and lookups in any case find it. */
static void test_lowercase_every_byte(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    for (unsigned len = 1; len <= 19; len++) {
        for (unsigned c = 0; c < 256; c++) {
            char name[19], want[19], other[19];
            for (unsigned i = 0; i < len; i++) {
                /* byte c at every position, other bytes of all kinds around it */
                unsigned char b = (unsigned char)((i % 3 == 0) ? c : (i % 3 == 1) ? (c ^ 0x80u) : (c + 37u * i));
                name[i] = (char)b;
                want[i] = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
                other[i] = (char)(b >= 'a' && b <= 'z' ? b - 32 : b);
            }
            sharp_headers_clear(&h);
            sharp_headers_add(&h, name, len, "v", 1);
            sharp_str_t n = sharp_headers_name(&h, 0);
            assert_int_equal(n.len, len);
            assert_memory_equal(n.p, want, len);
            assert_int_equal(sharp_headers_find(&h, name, len, 0), 0);
            assert_int_equal(sharp_headers_find(&h, want, len, 0), 0);
            assert_int_equal(sharp_headers_find(&h, other, len, 0), 0);
            /* one byte different (not only by case) is another name */
            for (unsigned i = 0; i < len; i++) {
                char diff[19];
                memcpy(diff, want, len);
                diff[i] = (char)(diff[i] ^ 0x01);
                if ((unsigned char)want[i] >= 0x60 && (unsigned char)want[i] <= 0x7b) diff[i] = (char)(want[i] ^ 0x02);
                bool same = (unsigned char)diff[i] >= 'A' && (unsigned char)diff[i] <= 'Z' &&
                            (unsigned char)(diff[i] + 32) == (unsigned char)want[i];
                if (!same) assert_int_equal(sharp_headers_find(&h, diff, len, 0), -1);
            }
        }
    }
    sharp_headers_free(&h);
}

static sharp_str_t S(const char *s)
{
    return (sharp_str_t){s, strlen(s)};
}

/* Ids are never indexed; a numeric value is indexed until it changes on
 * the connection, then never again; other values always are. */
static void test_hpack_no_index(void **state)
{
    (void)state;
    sharp_hpack_hint_t hh = {0};
    assert_true(sharp_hpack_no_index(&hh, S("x-request-id"), S("4b6f8a0e-1")));
    assert_true(sharp_hpack_no_index(&hh, S("traceparent"), S("00-abc-def-01")));
    assert_false(sharp_hpack_no_index(&hh, S("x-request-ids"), S("a")));
    /* a constant number stays indexed */
    for (int i = 0; i < 5; i++)
        assert_false(sharp_hpack_no_index(&hh, S("x-envoy-expected-rq-timeout-ms"), S("15000")));
    /* a counter: indexed the first time only */
    assert_false(sharp_hpack_no_index(&hh, S("x-upstream-request-on-connection"), S("1")));
    assert_true(sharp_hpack_no_index(&hh, S("x-upstream-request-on-connection"), S("2")));
    assert_true(sharp_hpack_no_index(&hh, S("x-upstream-request-on-connection"), S("2")));
    /* not a number: the hint leaves it to the encoder */
    for (int i = 0; i < 3; i++) {
        char d[32];
        snprintf(d, sizeof d, "Sun, 06 Dec 2026 16:0%d:00 GMT", i);
        assert_false(sharp_hpack_no_index(&hh, S("date"), S(d)));
    }
    assert_false(sharp_hpack_no_index(&hh, S("x-empty"), S("")));
    assert_false(sharp_hpack_no_index(&hh, S("x-long-number"), S("123456789012345678901")));
    /* the other connection has its own memory */
    sharp_hpack_hint_t other = {0};
    assert_false(sharp_hpack_no_index(&other, S("x-upstream-request-on-connection"), S("7")));
}

static bool starts_x(sharp_str_t n, void *arg)
{
    (void)arg;
    return n.len && n.p[0] == 'x';
}

static void test_remove_matching(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, "X-A", "1");
    sharp_headers_add_cstr(&h, "host", "h");
    sharp_headers_add_cstr(&h, "x-b", "22");
    sharp_headers_add_cstr(&h, "accept", "*/*");
    sharp_headers_add_cstr(&h, "x-a", "333");
    size_t before = sharp_headers_byte_size(&h);
    assert_int_equal(sharp_headers_remove_matching(&h, starts_x, NULL), 3);
    assert_int_equal(h.n, 2);
    assert_int_equal(sharp_headers_byte_size(&h), before - (4 + 5 + 6));
    sharp_str_t v;
    assert_true(sharp_headers_get_cstr(&h, "host", &v) && v.len == 1);
    assert_true(sharp_headers_get_cstr(&h, "accept", &v) && v.len == 3);
    assert_false(sharp_headers_get_cstr(&h, "x-a", NULL));
    assert_int_equal(sharp_headers_remove_matching(&h, starts_x, NULL), 0);
    sharp_headers_free(&h);
}

/* the client codecs' one pass: first values, absent ones NULL, an empty
 * value present */
static void test_request_head_scan(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":method", "POST");
    sharp_headers_add_cstr(&h, ":path", "/a");
    sharp_headers_add_cstr(&h, ":authority", "example.com");
    sharp_headers_add_cstr(&h, "Host", "other");
    sharp_headers_add_cstr(&h, "content-length", "");
    sharp_headers_add_cstr(&h, "connection", "Upgrade");
    sharp_headers_add_cstr(&h, ":path", "/second");
    sharp_request_head_t rh;
    sharp_request_head_scan(&h, &rh);
    assert_true(sharp_str_eq(rh.method, "POST", 4));
    assert_true(sharp_str_eq(rh.path, "/a", 2));
    assert_true(sharp_str_eq(rh.authority, "example.com", 11));
    assert_true(sharp_str_eq(rh.host, "other", 5));
    assert_non_null(rh.content_length.p);
    assert_int_equal(rh.content_length.len, 0);
    assert_true(sharp_str_eq(rh.connection, "Upgrade", 7));
    assert_null(rh.scheme.p);
    assert_null(rh.upgrade.p);
    sharp_headers_free(&h);
}

/* getAllOfHeaderAsString: one value as is, several joined with ",", an
 * empty one included (",a", not "a") */
static void test_get_all_joined(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_sbuf_t tmp = {0};
    sharp_str_t v = SHARP_STR("untouched");
    assert_false(sharp_headers_get_all(&h, "x", 1, &tmp, &v));
    assert_int_equal(v.len, 9);
    sharp_headers_add_cstr(&h, "x", "");
    assert_true(sharp_headers_get_all(&h, "x", 1, &tmp, &v));
    assert_int_equal(v.len, 0);
    sharp_headers_add_cstr(&h, "y", "other");
    sharp_headers_add_cstr(&h, "X", "a");
    assert_true(sharp_headers_get_all(&h, "x", 1, &tmp, &v));
    assert_int_equal(v.len, 2);
    assert_memory_equal(v.p, ",a", 2);
    sharp_headers_add_cstr(&h, "x", "b");
    assert_true(sharp_headers_get_all(&h, "x", 1, &tmp, &v));
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.p, ",a,b", 4);
    sharp_sbuf_free(&tmp);
    sharp_headers_free(&h);
}

static void fmt(const sharp_headers_t *h, bool proper, const char *name, const char *want)
{
    char b[128];
    size_t n = strlen(name);
    memcpy(b, name, n);
    sharp_header_name_format(h, proper, b, n);
    b[n] = '\0';
    assert_string_equal(b, want);
}

/* Envoy's ProperCaseHeaderKeyFormatter cases */
static void test_proper_case(void **state)
{
    (void)state;
    sharp_headers_t h;
    sharp_headers_init(&h);
    fmt(&h, true, "content-type", "Content-Type");
    fmt(&h, true, "foo$b#$are", "Foo$B#$Are");
    fmt(&h, true, "te", "Te");
    fmt(&h, true, "x-9abc_def", "X-9abc_Def");
    fmt(&h, true, "1a-b", "1a-B");
    fmt(&h, true, "", "");
    fmt(&h, false, "content-type", "content-type");
    sharp_headers_free(&h);
}

/* preserve_case: first spelling wins, names split across reads join, the
 * rest lower-case or proper-cased (PROPER_CASE), the memory is bounded and
 * goes with clear, and a copy keeps it. */
static void test_preserve_case(void **state)
{
    (void)state;
    sharp_headers_t h, c;
    sharp_headers_init(&h);
    sharp_headers_init(&c);
    sharp_headers_case_enable(&h, false, true);
    sharp_headers_add(&h, "X-Foo", 5, "1", 1);
    sharp_headers_case_name(&h, "X-Fo", 4, true);
    sharp_headers_case_name(&h, "o", 1, false);
    sharp_headers_case_name(&h, "x-FOO", 5, true);
    sharp_headers_case_name(&h, "ETag", 4, true);
    sharp_headers_case_reason(&h, "Very ", 5);
    sharp_headers_case_reason(&h, "OK", 2);
    fmt(&h, true, "x-foo", "X-Foo"); /* the map's memory wins over the codec's proper case */
    fmt(&h, false, "etag", "ETag");
    fmt(&h, true, "x-other", "x-other"); /* DEFAULT: the rest lower-case */
    sharp_str_t r;
    assert_true(sharp_headers_case_reason_get(&h, &r));
    assert_int_equal(r.len, 7);
    assert_memory_equal(r.p, "Very OK", 7);
    sharp_headers_copy(&c, &h);
    fmt(&c, false, "x-foo", "X-Foo");
    assert_true(sharp_headers_case_reason_get(&c, &r));
    sharp_headers_clear(&h);
    assert_null(h.cases);
    fmt(&h, false, "x-foo", "x-foo");
    assert_false(sharp_headers_case_reason_get(&h, &r));
    /* PROPER_CASE for names not received; no reason kept without forward_reason_phrase */
    sharp_headers_case_enable(&h, true, false);
    sharp_headers_case_name(&h, "x-lower", 7, true);
    sharp_headers_case_reason(&h, "Nope", 4);
    assert_false(sharp_headers_case_reason_get(&h, &r));
    fmt(&h, false, "x-lower", "x-lower");
    fmt(&h, false, "x-added", "X-Added");
    /* bounded: names past the limit are not remembered */
    char nm[32];
    for (unsigned i = 0; i < SHARP_HEADER_CASE_MAX_NAMES + 10; i++) {
        int n = snprintf(nm, sizeof nm, "N%u", i);
        sharp_headers_case_name(&h, nm, (size_t)n, true);
        sharp_headers_case_name(&h, "Z", 1, false);
    }
    fmt(&h, false, "n5z", "N5Z");
    snprintf(nm, sizeof nm, "n%uz", SHARP_HEADER_CASE_MAX_NAMES + 5);
    char want[32];
    snprintf(want, sizeof want, "N%uz", SHARP_HEADER_CASE_MAX_NAMES + 5); /* PROPER_CASE, not remembered */
    fmt(&h, false, nm, want);
    sharp_headers_free(&h);
    sharp_headers_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_all_joined),
        cmocka_unit_test(test_add_get_lowercases),
        cmocka_unit_test(test_repeated_and_find),
        cmocka_unit_test(test_name_compare_lengths),
        cmocka_unit_test(test_set_replaces_all_keeps_position),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_append_pieces),
        cmocka_unit_test(test_copy_clear_and_size),
        cmocka_unit_test(test_many_headers_grow),
        cmocka_unit_test(test_has_token),
        cmocka_unit_test(test_list_next),
        cmocka_unit_test(test_value_from_same_map_survives_growth),
        cmocka_unit_test(test_empty_first_header_has_spans),
        cmocka_unit_test(test_lowercase_every_byte),
        cmocka_unit_test(test_hpack_no_index),
        cmocka_unit_test(test_remove_matching),
        cmocka_unit_test(test_request_head_scan),
        cmocka_unit_test(test_proper_case),
        cmocka_unit_test(test_preserve_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
