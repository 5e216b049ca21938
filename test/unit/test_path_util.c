/* test_path_util.c: path normalization against the vectors of Envoy's
 * test/common/http/path_utility_test.cc, plus the cases the connection
 * manager relies on (traversal, escaped dots and slashes, fragments). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/path_util.h"

typedef struct {
    const char *in, *want;
} pair_t;

static void expect_canonical(const char *in, const char *want)
{
    sharp_sbuf_t out = {0};
    bool ok = sharp_path_canonicalize(in, strlen(in), &out);
    if (!ok || out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
        fail_msg("canonicalize(\"%s\"): got %s \"%s\", want \"%s\"", in, ok ? "ok" : "invalid",
                 out.data ? out.data : "", want);
    sharp_sbuf_free(&out);
}

static void test_already_normal(void **state)
{
    (void)state;
    expect_canonical("/xyz", "/xyz");
    expect_canonical("/x/y/z", "/x/y/z");
}

static void test_invalid_paths(void **state)
{
    (void)state;
    const char *bad[] = {"/xyz/.%00../abc", "/xyz/%00.%00./abc", "/xyz/AAAAA%%0000/abc"};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(bad); i++) {
        sharp_sbuf_t out = {0};
        if (sharp_path_canonicalize(bad[i], strlen(bad[i]), &out))
            fail_msg("\"%s\" should be invalid, got \"%s\"", bad[i], out.data);
        sharp_sbuf_free(&out);
    }
    /* a raw NUL too */
    sharp_sbuf_t out = {0};
    assert_false(sharp_path_canonicalize("/a\0b", 4, &out));
    sharp_sbuf_free(&out);
}

static void test_normalize_valid_paths(void **state)
{
    (void)state;
    static const pair_t v[] = {
        {"/a/b/../c", "/a/c"},
        {"/a/b/./c", "/a/b/c"},
        {"a/b/../c", "/a/c"},
        {"/a/b/../../../../c", "/c"},
        {"/a/..\\c", "/c"},
        {"/%c0%af", "/%c0%af"},
        {"/%5c%25", "/%5c%25"},
        {"/a/b/%2E%2E/c", "/a/c"},
        {"/a/b/%2E./c", "/a/c"},
        {"/a/b/%2E/c", "/a/b/c"},
        {"..", "/"},
        {"/../a/b", "/a/b"},
        {"/./a/b", "/a/b"},
        {"/xyz/..;foo=bar/abc", "/abc"},
        {"/..;foo=bar/abc", "/abc"},
        {"/xyz/..;foo=bar", "/"},
        {"/xyz/.;foo=bar/abc", "/xyz/abc"},
        {"/.;foo=bar/abc", "/abc"},
        {"/xyz/.;foo=bar", "/xyz/"},
        {"/xyz/..;foo=bar/.;v1=2,v2=3/abc", "/abc"},
        {"/..;foo=bar/abc/.;mmm", "/abc/"},
        {"/.;aaa/..;foo=bar/abc/.;mmm", "/abc/"},
        {"/xyz/..;foo=bar/.;fff=zzz", "/"},
        {"/xyz/..;foo=bar/.;fff=zzz?blah=woops", "/?blah=woops"},
        {"/xyz/..;foo=bar/.;fff=zzz/remain;blah-bluh?query", "/remain;blah-bluh?query"},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(v); i++) expect_canonical(v[i].in, v[i].want);
}

static void test_case_and_unreserved(void **state)
{
    (void)state;
    expect_canonical("/A/B/C", "/A/B/C");
    expect_canonical("/a/b/%2E%2E/c", "/a/c");
    expect_canonical("/a/b/%2e%2e/c", "/a/c");
    expect_canonical("/a/%2F%2f/c", "/a/%2F%2f/c");
    /* unreserved characters are decoded, reserved ones kept as written */
    expect_canonical("/%61dmin/%7E%2d%5F%30", "/admin/~-_0");
    expect_canonical("/a%3Fb%3fc", "/a%3Fb%3fc");
    /* characters that may not appear raw are encoded with upper-case hex */
    expect_canonical("/a b\"<>^`{|}", "/a%20b%22%3C%3E%5E%60%7B%7C%7D");
    expect_canonical("/\x7f\xc3\xa9", "/%7F%C3%A9");
    /* the query is left alone */
    expect_canonical("/a/../b?x=/../y&%41", "/b?x=/../y&%41");
    expect_canonical("", "/");
    /* a '%' that starts no escape is kept; one that would form an escape
     * once an inner escape is decoded is encoded */
    expect_canonical("/a%zz", "/a%zz");
    expect_canonical("/a%", "/a%");
    expect_canonical("/%%30%30", "/%2500");
}

static void test_traversal_bypasses(void **state)
{
    (void)state;
    expect_canonical("/x/../admin/secret", "/admin/secret");
    expect_canonical("/%2e%2e/admin", "/admin");
    expect_canonical("/x/%2e%2E/admin", "/admin");
    expect_canonical("/public/..\\admin", "/admin");
    expect_canonical("\\admin", "/admin");
    expect_canonical("/public\\..\\admin", "/admin");
    expect_canonical("/.%2e/admin", "/admin");
}

static void expect_merge(const char *in, const char *want)
{
    sharp_sbuf_t out = {0};
    sharp_path_merge_slashes(in, strlen(in), &out);
    if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
        fail_msg("merge_slashes(\"%s\") = \"%s\", want \"%s\"", in, out.data, want);
    sharp_sbuf_free(&out);
}

static void test_merge_slashes(void **state)
{
    (void)state;
    expect_merge("", "");
    expect_merge("a//b/c", "a/b/c");
    expect_merge("/a//b/c/", "/a/b/c/");
    expect_merge("a//b/c/", "a/b/c/");
    expect_merge("/a", "/a");
    expect_merge("//a/b/c", "/a/b/c");
    expect_merge("/a//b/c", "/a/b/c");
    expect_merge("/a/b/c//", "/a/b/c/");
    expect_merge("/a///b/c", "/a/b/c");
    expect_merge("/a////b/c", "/a/b/c");
    expect_merge("/a//b?a=///c", "/a/b?a=///c");
    expect_merge("/a//b?", "/a/b?");
    expect_merge("//a/?b", "/a/?b");
    expect_merge("//admin", "/admin");
}

static void expect_strip(const char *in, const char *want)
{
    sharp_sbuf_t out = {0};
    sharp_path_strip_dot_segment_params(in, strlen(in), &out);
    if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
        fail_msg("strip(\"%s\") = \"%s\", want \"%s\"", in, out.data, want);
    sharp_sbuf_free(&out);
}

static void test_strip_dot_segment_params(void **state)
{
    (void)state;
    expect_strip("", "");
    expect_strip("/xyz", "/xyz");
    expect_strip("/xyz/..;foo=bar/abc", "/xyz/../abc");
    expect_strip("/..;foo=bar/abc", "/../abc");
    expect_strip("/xyz/..;foo=bar", "/xyz/..");
    expect_strip("/xyz/..;", "/xyz/..");
    expect_strip("/a/..;foo/b/..;bar/c", "/a/../b/../c");
    expect_strip("/a/..;param1;param2/b", "/a/../b");
    expect_strip("/xyz/..foo", "/xyz/..foo");
    expect_strip("/xyz/...;foo", "/xyz/...;foo");
    expect_strip("/xyz/remove/..;foo?param=/.;foo", "/xyz/remove/..?param=/.;foo");
    expect_strip("/xyz/remove/..;foo#frag=/.;foo", "/xyz/remove/..#frag=/.;foo");
    expect_strip("/xyz?param=/..;foo", "/xyz?param=/..;foo");
    expect_strip("/xyz#frag=/..;foo", "/xyz#frag=/..;foo");
    expect_strip("/xyz/.;foo=bar/abc", "/xyz/./abc");
    expect_strip("/.;foo=bar/abc", "/./abc");
    expect_strip("/xyz/.;foo=bar", "/xyz/.");
    expect_strip("/xyz/.;", "/xyz/.");
    expect_strip("/a/.;foo/b/.;bar/c", "/a/./b/./c");
    expect_strip("/a/.;param1;param2/b", "/a/./b");
    expect_strip("/xyz/.foo", "/xyz/.foo");
    expect_strip("/xyz?param=/.;foo", "/xyz?param=/.;foo");
    expect_strip("/xyz#frag=/.;foo", "/xyz#frag=/.;foo");
}

static void expect_unescape(const char *in, const char *want, bool found)
{
    sharp_sbuf_t out = {0};
    bool f = sharp_path_unescape_slashes(in, strlen(in), &out);
    if (f != found || out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
        fail_msg("unescape_slashes(\"%s\") = \"%s\"/%d, want \"%s\"/%d", in, out.data, f, want, found);
    sharp_sbuf_free(&out);
}

static void test_unescape_slashes(void **state)
{
    (void)state;
    expect_unescape("", "", false);
    expect_unescape("%2f%2F", "//", true);
    expect_unescape("/a%2Fb%2fc/", "/a/b/c/", true);
    expect_unescape("%2b", "%2b", false);
    expect_unescape("/a/b/c", "/a/b/c", false);
    expect_unescape("%2", "%2", false);
    expect_unescape("%", "%", false);
    expect_unescape("/abc%2", "/abc%2", false);
    expect_unescape("foo%", "foo%", false);
    expect_unescape("/a%2F", "/a/", true);
    expect_unescape("%2fa/", "/a/", true);
    expect_unescape("%%2fa/", "%/a/", true);
    expect_unescape("%2%2fa/", "%2/a/", true);
    expect_unescape("%5c%5C", "\\\\", true);
    expect_unescape("/a%5Cb%5cc/", "/a\\b\\c/", true);
    expect_unescape("/a%5C", "/a\\", true);
    expect_unescape("%5ca/", "\\a/", true);
    expect_unescape("/x/%2E%2e/z%2f%2Fabc%5C../def", "/x/%2E%2e/z//abc\\../def", true);
    expect_unescape("%2fa%5Cb%2fc%5c", "/a\\b/c\\", true);
    expect_unescape("%2fa%5Cb%2fc%5c?%2fabcd%5C%%2f%", "/a\\b/c\\?%2fabcd%5C%%2f%", true);
}

static sharp_path_action_t run(const char *in, bool norm, bool merge, sharp_escaped_slashes_action_t a,
                               sharp_sbuf_t *out)
{
    return sharp_path_normalize(in, strlen(in), norm, merge, a, out);
}

static void test_normalize_pipeline(void **state)
{
    (void)state;
    sharp_sbuf_t out = {0};
    /* the connection manager's order: escaped slashes, RFC 3986, merge */
    assert_int_equal(run("//x/../admin//secret", true, true, SHARP_ESCAPED_SLASHES_KEEP, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/admin/secret");
    assert_int_equal(run("//admin", true, true, SHARP_ESCAPED_SLASHES_DEFAULT, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/admin");
    assert_int_equal(run("//admin", true, false, SHARP_ESCAPED_SLASHES_DEFAULT, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "//admin");
    /* nothing configured: unchanged */
    assert_int_equal(run("/a/../b%2F", false, false, SHARP_ESCAPED_SLASHES_DEFAULT, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/a/../b%2F");
    /* escaped slashes, each action */
    assert_int_equal(run("/admin%2Fsecret", true, true, SHARP_ESCAPED_SLASHES_KEEP, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/admin%2Fsecret");
    assert_int_equal(run("/admin%2Fsecret", true, true, SHARP_ESCAPED_SLASHES_REJECT, &out), SHARP_PATH_REJECT);
    assert_int_equal(run("/admin%2Fsecret", true, true, SHARP_ESCAPED_SLASHES_UNESCAPE_AND_REDIRECT, &out),
                     SHARP_PATH_REDIRECT);
    assert_string_equal(out.data, "/admin/secret");
    assert_int_equal(run("/admin%2Fsecret", false, false, SHARP_ESCAPED_SLASHES_UNESCAPE_AND_FORWARD, &out),
                     SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/admin/secret");
    /* %5C becomes a backslash, which normalization turns into a slash */
    assert_int_equal(run("/x%5C..%5Cadmin", true, false, SHARP_ESCAPED_SLASHES_UNESCAPE_AND_FORWARD, &out),
                     SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/admin");
    /* no escaped slash: no redirect even with that action */
    assert_int_equal(run("/a/b", true, true, SHARP_ESCAPED_SLASHES_UNESCAPE_AND_REDIRECT, &out), SHARP_PATH_CONTINUE);
    /* the query is never touched */
    assert_int_equal(run("/a?x=%2F", true, true, SHARP_ESCAPED_SLASHES_REJECT, &out), SHARP_PATH_CONTINUE);
    assert_string_equal(out.data, "/a?x=%2F");
    /* a fragment is rejected whatever the configuration */
    assert_int_equal(run("/a#frag", false, false, SHARP_ESCAPED_SLASHES_DEFAULT, &out), SHARP_PATH_REJECT);
    /* normalization failure */
    assert_int_equal(run("/a/%00", true, false, SHARP_ESCAPED_SLASHES_DEFAULT, &out), SHARP_PATH_REJECT);
    sharp_sbuf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_already_normal),
        cmocka_unit_test(test_invalid_paths),
        cmocka_unit_test(test_normalize_valid_paths),
        cmocka_unit_test(test_case_and_unreserved),
        cmocka_unit_test(test_traversal_bypasses),
        cmocka_unit_test(test_merge_slashes),
        cmocka_unit_test(test_strip_dot_segment_params),
        cmocka_unit_test(test_unescape_slashes),
        cmocka_unit_test(test_normalize_pipeline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
