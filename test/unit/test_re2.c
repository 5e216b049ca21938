/* test_re2.c: the RE2 shim (re2_shim.h) and Envoy's compile rules on top of
 * it (safe_regex.h): RE2 syntax, full and partial matches, errors, program
 * size limits, GlobalReplace substitutions, and linear time on a pattern
 * that makes backtracking engines exponential. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <cmocka.h>

#include "re2_shim.h"
#include "safe_regex.h"

static sharp_re2_t *compile(const char *pattern)
{
    char err[256] = "";
    sharp_re2_t *re = sharp_re2_compile(pattern, strlen(pattern), err, sizeof err);
    if (!re) fail_msg("'%s': %s", pattern, err);
    return re;
}

static bool full(const char *pattern, const char *s)
{
    sharp_re2_t *re = compile(pattern);
    bool ok = sharp_re2_full_match(re, s, strlen(s));
    sharp_re2_free(re);
    return ok;
}

static bool partial(const char *pattern, const char *s)
{
    sharp_re2_t *re = compile(pattern);
    bool ok = sharp_re2_partial_match(re, s, strlen(s));
    sharp_re2_free(re);
    return ok;
}

static void test_full_match(void **state)
{
    assert_true(full("/users/\\d+", "/users/42"));
    assert_false(full("/users/\\d+", "/users/42/x")); /* the whole value */
    assert_false(full("/users/\\d+", "x/users/42"));
    assert_true(full("a|bc", "bc"));
    assert_false(full("a|bc", "abc"));
    assert_true(full("", ""));
    assert_false(full("", "a"));
    assert_true(full("\\w+@\\w+\\.com", "ab_1@host.com"));
    assert_true(full("\\s\\S\\D\\W", " x-!"));
    assert_true(full("(?:ab)+c", "ababc"));
    assert_true(full("(?P<id>[0-9]+)/x", "42/x"));
    assert_true(full("\\Aab\\z", "ab"));
    assert_true(full("\\x41\\n", "A\n"));
    /* non-greedy operators match the same whole values as greedy ones */
    assert_true(full("a.*?b", "axxbxb"));
    assert_true(full("a+?b??", "aa"));
    assert_true(full("a{2,3}?", "aaa"));
    /* NUL bytes are ordinary bytes: the length bounds the input */
    sharp_re2_t *re = compile("a.b");
    assert_true(sharp_re2_full_match(re, "a\0b", 3));
    assert_false(sharp_re2_full_match(re, "a\0bc", 4));
    assert_false(sharp_re2_full_match(re, "a\0bc", 2));
    sharp_re2_free(re);
}

static void test_partial_match(void **state)
{
    /* the admin's ?filter=: a match anywhere in the stat name */
    assert_true(partial("rq_2xx", "http.ingress.downstream_rq_2xx"));
    assert_true(partial("^http\\.", "http.ingress.downstream_rq_2xx"));
    assert_false(partial("^ingress", "http.ingress.downstream_rq_2xx"));
    assert_true(partial("cluster\\.[^.]+\\.upstream_cx_total$", "cluster.a.upstream_cx_total"));
    assert_false(partial("cluster\\.[^.]+\\.upstream_cx_total$", "cluster.a.b.upstream_cx_total"));
    assert_true(partial("", "anything"));
}

static void test_case_insensitive_and_classes(void **state)
{
    assert_true(full("(?i)hello", "HeLLo"));
    assert_false(full("hello", "HeLLo"));
    assert_true(full("(?i:AB)c", "abc"));
    assert_false(full("(?i:AB)c", "abC"));
    assert_true(partial("(?i)upstream_RQ", "cluster.a.upstream_rq_total"));
    /* POSIX classes inside brackets, Perl classes, Unicode classes */
    assert_true(full("[[:alpha:]]+", "abcXYZ"));
    assert_false(full("[[:alpha:]]+", "abc1"));
    assert_true(full("[[:digit:][:upper:]]+", "A1B2"));
    assert_true(full("[^[:space:]]+", "a-b"));
    assert_false(full("[^[:space:]]+", "a b"));
    assert_true(full("[\\d.]+", "1.2.3"));
    assert_true(full("[\\w-]+", "a-b_c"));
    assert_true(full("\\pL+", "\xc3\xa9t\xc3\xa9")); /* UTF-8 letters */
    assert_true(full("(?s)a.b", "a\nb"));
    assert_false(full("a.b", "a\nb"));
}

static void bad(const char *pattern, const char *want)
{
    char err[256] = "";
    assert_null(sharp_re2_compile(pattern, strlen(pattern), err, sizeof err));
    if (strcmp(err, want) != 0) fail_msg("'%s': error '%s', want '%s'", pattern, err, want);
}

static void test_invalid_patterns(void **state)
{
    bad("(unclosed", "missing ): (unclosed");
    bad("[a", "missing ]: [a");
    bad("a(?=b)", "invalid perl operator: (?=");
    bad("(a)\\1", "invalid escape sequence: \\1");
    bad("a**", "bad repetition operator: **");
    bad("x{1001}", "invalid repetition size: {1001}");
    bad("[z-a]", "invalid character class range: z-a");
    bad("a\\", "trailing \\");
    /* the compile rules say which regex and keep RE2's text */
    char err[256];
    assert_null(sharp_regex_compile("(a", NULL, err, sizeof err));
    assert_string_equal(err, "invalid regex '(a': missing ): (a");
}

static void test_program_size_limit(void **state)
{
    sharp_re2_t *small = compile("abc"), *big = compile("\\p{L}+");
    int s1 = sharp_re2_program_size(small), s2 = sharp_re2_program_size(big);
    assert_true(s1 > 0 && s1 < 100);
    assert_true(s2 > 100);
    sharp_re2_free(small);
    sharp_re2_free(big);

    char err[512], want[512];
    /* runtime error level: default 100 */
    sharp_regex_set_runtime_limits(SHARP_REGEX_DEFAULT_ERROR_LEVEL, UINT32_MAX);
    assert_null(sharp_regex_compile("\\p{L}+", NULL, err, sizeof err));
    snprintf(
        want, sizeof want,
        "regex '\\p{L}+' RE2 program size of %d > max program size of 100 set for the error level "
        "threshold. Increase configured max program size if necessary.",
        s2);
    assert_string_equal(err, want);
    sharp_re2_t *re = sharp_regex_compile("abc", NULL, err, sizeof err);
    assert_non_null(re);
    sharp_re2_free(re);
    /* a limit equal to the size passes, one below fails */
    sharp_regex_set_runtime_limits((uint32_t)s2, UINT32_MAX);
    re = sharp_regex_compile("\\p{L}+", NULL, err, sizeof err);
    assert_non_null(re);
    sharp_re2_free(re);
    sharp_regex_set_runtime_limits((uint32_t)s2 - 1, 1); /* the warn level only logs */
    assert_null(sharp_regex_compile("\\p{L}+", NULL, err, sizeof err));
    sharp_regex_set_runtime_limits(1000000, 1);
    re = sharp_regex_compile("\\p{L}+", NULL, err, sizeof err);
    assert_non_null(re);
    sharp_re2_free(re);
    uint32_t e, w;
    sharp_regex_runtime_limits(&e, &w);
    assert_int_equal(e, 1000000);
    assert_int_equal(w, 1);

    /* GoogleRE2.max_program_size replaces the runtime limits, both ways */
    sharp_regex_set_runtime_limits(SHARP_REGEX_DEFAULT_ERROR_LEVEL, UINT32_MAX);
    sharp_regex_opts_t o = {.has_max_program_size = true, .max_program_size = (uint32_t)s2};
    re = sharp_regex_compile("\\p{L}+", &o, err, sizeof err);
    assert_non_null(re);
    sharp_re2_free(re);
    o.max_program_size = 3;
    assert_null(sharp_regex_compile("abc", &o, err, sizeof err));
    snprintf(want, sizeof want,
             "regex 'abc' RE2 program size of %d > max program size of 3. Increase configured max "
             "program size if necessary.",
             s1);
    assert_string_equal(err, want);
}

static char *replace(const char *pattern, const char *s, const char *rewrite, int *n)
{
    sharp_re2_t *re = compile(pattern);
    char *out = NULL;
    size_t len = 0;
    *n = sharp_re2_replace_all(re, s, strlen(s), rewrite, &out, &len);
    assert_non_null(out);
    assert_int_equal(len, strlen(out));
    sharp_re2_free(re);
    return out;
}

static void test_rewrite_substitution(void **state)
{
    int n;
    char *out = replace("^/service/([^/]+)(/.*)$", "/service/foo/v1/api", "\\2/instance/\\1", &n);
    assert_string_equal(out, "/v1/api/instance/foo");
    assert_int_equal(n, 1);
    free(out);
    out = replace("b+", "yabba dabba doo", "d", &n); /* every non-overlapping match */
    assert_string_equal(out, "yada dada doo");
    assert_int_equal(n, 2);
    free(out);
    out = replace("(\\d+)", "a1b22", "<\\0|\\1>\\\\", &n); /* \0 whole match, \\ a backslash */
    assert_string_equal(out, "a<1|1>\\b<22|22>\\");
    free(out);
    out = replace("x", "abc", "y", &n);
    assert_string_equal(out, "abc");
    assert_int_equal(n, 0);
    free(out);

    char err[256];
    sharp_re2_t *re = compile("(a)");
    assert_int_equal(sharp_re2_check_rewrite(re, "\\1-\\0", err, sizeof err), 0);
    assert_int_equal(sharp_re2_check_rewrite(re, "\\2", err, sizeof err), -1);
    assert_string_equal(
        err, "Rewrite schema requests 2 matches, but the regexp only has 1 parenthesized "
             "subexpressions.");
    assert_int_equal(sharp_re2_check_rewrite(re, "\\x", err, sizeof err), -1);
    assert_string_equal(err, "Rewrite schema error: '\\' must be followed by a digit or '\\'.");
    sharp_re2_free(re);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* (a+)+$ against "aaaa...ab" takes exponential time in a backtracking
 * engine (already hopeless at 40 characters); RE2 is linear. The bound is
 * generous for a loaded machine or a sanitizer build. */
static void test_linear_time(void **state)
{
    size_t n = 100000;
    char *s = malloc(n + 1);
    memset(s, 'a', n);
    s[n - 1] = 'b';
    s[n] = '\0';
    sharp_re2_t *re = compile("(a+)+$");
    sharp_re2_t *re2 = compile("(a|aa)*c");
    double t0 = now_s();
    assert_false(sharp_re2_full_match(re, s, n));
    assert_true(sharp_re2_partial_match(re, s, n - 1)); /* only a's: it matches */
    assert_false(sharp_re2_full_match(re2, s, n));
    assert_false(sharp_re2_partial_match(re2, s, n));
    char *out = NULL;
    size_t len;
    assert_int_equal(sharp_re2_replace_all(re, s, n, "x", &out, &len), 0);
    double dt = now_s() - t0;
    free(out);
    sharp_re2_free(re);
    sharp_re2_free(re2);
    free(s);
    if (dt >= 1.0) fail_msg("RE2 took %.3f s on 100k characters", dt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_match),
        cmocka_unit_test(test_partial_match),
        cmocka_unit_test(test_case_insensitive_and_classes),
        cmocka_unit_test(test_invalid_patterns),
        cmocka_unit_test(test_program_size_limit),
        cmocka_unit_test(test_rewrite_substitution),
        cmocka_unit_test(test_linear_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
