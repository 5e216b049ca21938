/* test_log.c: the --log-format pattern, --component-log-level and the
 * per-logger level checks (proxy/log.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"

/* 2024-03-05 14:07:09.012345678 UTC */
static const sharp_log_record_t rec = {
    .logger = SHARP_LOGGER_router, .level = SHARP_LOG_DEBUG, .file = "../proxy/http/route.c",
    .line = 42, .func = "pick", .msg = "a \"b\"\nc\\d", .tid = 1234, .pid = 99,
    .sec = 1709647629, .nsec = 12345678};

static void expect_render(const char *fmt, const char *want)
{
    char err[512] = "", out[1024];
    sharp_log_pattern_t *p = sharp_log_pattern_compile(fmt, err, sizeof err);
    if (!p) fail_msg("compile '%s': %s", fmt, err);
    sharp_log_pattern_render(p, &rec, out, sizeof out);
    if (strcmp(out, want) != 0) fail_msg("'%s' gave\n  %s\nwanted\n  %s", fmt, out, want);
    sharp_log_pattern_free(p);
}

static void test_default_format(void **state)
{
    expect_render(SHARP_DEFAULT_LOG_FORMAT,
                  "[2024-03-05 14:07:09.012][1234][debug][router] [proxy/http/route.c:42] a \"b\"\nc\\d");
}

static void test_flags(void **state)
{
    expect_render("%t|%P|%n|%l|%L", "1234|99|router|debug|D");
    expect_render("%Y-%m-%d %T.%e|%f|%F", "2024-03-05 14:07:09.012|012345|012345678");
    expect_render("%H:%M:%S %I %p|%r|%R|%X", "14:07:09 02 PM|02:07:09 PM|14:07|14:07:09");
    expect_render("%a %A %b %B %C %D %x", "Tue Tuesday Mar March 24 03/05/24 03/05/24");
    expect_render("%c", "Tue Mar 05 14:07:09 2024");
    expect_render("%z", "+00:00");
    expect_render("%s|%g|%#|%@|%!|%%", "route.c|proxy/http/route.c|42|proxy/http/route.c:42|pick|%");
    /* %_ escapes newlines only; %j escapes for a JSON string. */
    expect_render("%_", "a \"b\"\\nc\\d");
    expect_render("{\"msg\":\"%j\"}", "{\"msg\":\"a \\\"b\\\"\\nc\\\\d\"}");
    expect_render("plain text", "plain text");
}

static void test_unknown_flags_refused(void **state)
{
    char err[512];
    assert_null(sharp_log_pattern_compile("[%Q] %v", err, sizeof err));
    assert_non_null(strstr(err, "unsupported flag '%Q' at offset 1"));
    assert_null(sharp_log_pattern_compile("%v %", err, sizeof err));
    assert_non_null(strstr(err, "end of the pattern"));
    assert_null(sharp_log_pattern_compile("%^%v%$", err, sizeof err)); /* colour ranges */
    assert_null(sharp_log_pattern_compile("%-8l", err, sizeof err));   /* padding */
}

static void test_truncation(void **state)
{
    char err[64], out[8];
    sharp_log_pattern_t *p = sharp_log_pattern_compile("%v%v%v", err, sizeof err);
    assert_int_equal(sharp_log_pattern_render(p, &rec, out, sizeof out), 7);
    assert_string_equal(out, "a \"b\"\nc");
    sharp_log_pattern_free(p);
}

static void test_component_levels(void **state)
{
    char err[256];
    sharp_log_set_all(SHARP_LOG_INFO);
    assert_int_equal(sharp_log_component_levels("upstream:debug,connection:trace", true, err, sizeof err), 0);
    assert_int_equal(sharp_log_get(SHARP_LOGGER_upstream), SHARP_LOG_DEBUG);
    assert_int_equal(sharp_log_get(SHARP_LOGGER_connection), SHARP_LOG_TRACE);
    assert_int_equal(sharp_log_get(SHARP_LOGGER_router), SHARP_LOG_INFO);
    assert_int_equal(sharp_log_component_levels("http:warn", true, err, sizeof err), 0);
    assert_int_equal(sharp_log_get(SHARP_LOGGER_http), SHARP_LOG_WARN);

    /* Envoy's messages; a bad item changes nothing, not even earlier ones. */
    assert_int_equal(sharp_log_component_levels("router:debug,upstream:foo:bar", true, err, sizeof err), -1);
    assert_string_equal(err, "error: component log level not correctly specified 'upstream:foo:bar'");
    assert_int_equal(sharp_log_get(SHARP_LOGGER_router), SHARP_LOG_INFO);
    assert_int_equal(sharp_log_component_levels("upstream", true, err, sizeof err), -1);
    assert_string_equal(err, "error: component log level not correctly specified 'upstream'");
    assert_int_equal(sharp_log_component_levels("upstream:blah", true, err, sizeof err), -1);
    assert_string_equal(err, "error: invalid log level specified 'blah'");
    assert_int_equal(sharp_log_component_levels("upstream:", true, err, sizeof err), -1);
    assert_string_equal(err, "error: invalid log level specified ''");
    assert_int_equal(sharp_log_component_levels("blah:debug", true, err, sizeof err), -1);
    assert_string_equal(err, "error: invalid component specified 'blah'");
    assert_int_equal(sharp_log_component_levels("router:debug,", true, err, sizeof err), -1);
    assert_int_equal(sharp_log_get(SHARP_LOGGER_router), SHARP_LOG_INFO);
}

static int side_effects;
static int count(void)
{
    return ++side_effects;
}

static void test_disabled_statement_does_nothing(void **state)
{
    /* Below the level the arguments are not even evaluated. */
    sharp_log_set_all(SHARP_LOG_INFO);
    side_effects = 0;
    sharp_debug(router, "%d", count());
    sharp_trace(pool, "%d", count());
    assert_int_equal(side_effects, 0);
    sharp_log_set(SHARP_LOGGER_router, SHARP_LOG_OFF);
    sharp_critical(router, "%d", count());
    assert_int_equal(side_effects, 0);
    sharp_log_set_all(SHARP_LOG_INFO);
}

static void test_level_names(void **state)
{
    assert_int_equal(sharp_log_level_parse("warn"), SHARP_LOG_WARN);
    assert_int_equal(sharp_log_level_parse("warning"), SHARP_LOG_WARN);
    assert_int_equal(sharp_log_level_parse("off"), SHARP_LOG_OFF);
    assert_int_equal(sharp_log_level_parse("DEBUG"), -1); /* spdlog's names are lower case */
    assert_int_equal(sharp_logger_find("conn_handler"), SHARP_LOGGER_conn_handler);
    assert_int_equal(sharp_logger_find("nope"), -1);
}

int main(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_format),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_unknown_flags_refused),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_component_levels),
        cmocka_unit_test(test_disabled_statement_does_nothing),
        cmocka_unit_test(test_level_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
