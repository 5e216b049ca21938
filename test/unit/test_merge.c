/* test_merge.c: protobuf MergeFrom (config/merge.c), the semantics Envoy
 * applies to -c FILE --config-yaml YAML, on the sharp.test.v1 messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "config/mapper.h"
#include "mapper_test.pb-c.h"

static const ProtobufCMessageDescriptor *const all_desc = &sharp__test__v1__all__descriptor;

static sharp_config_doc_t *parse(const char *text)
{
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(text, strlen(text), "t.yaml", all_desc, &err);
    if (!d) fail_msg("unexpected parse failure: %s", err.msg);
    return d;
}

/* Merges `over` into `base` and compares the JSON of the result. */
static void expect_merge(const char *base, const char *over, const char *want)
{
    sharp_config_doc_t *b = parse(base), *o = parse(over);
    sharp_config_merge(sharp_config_doc_message(b), sharp_config_doc_message(o));
    sharp_config_doc_free(o); /* what was moved out must not be freed twice */
    sharp_sbuf_t j = {0};
    sharp_config_to_json(sharp_config_doc_message(b), &j);
    if (strcmp(j.data, want) != 0) fail_msg("merge gave\n  %s\nwanted\n  %s", j.data, want);
    sharp_sbuf_free(&j);
    sharp_config_doc_free(b);
}

static void test_scalars_replaced_when_set(void **state)
{
    expect_merge("f_int32: 1\nf_string: a\nf_bool: true\ncolor: RED\nf_double: 1.5",
                 "f_int32: 7\nf_string: b",
                 "{\"f_int32\":7,\"f_double\":1.5,\"f_bool\":true,\"f_string\":\"b\",\"color\":\"RED\"}");
    /* proto3 without presence: a zero / empty / false in the override is
     * "not set" and leaves the base value, exactly as MergeFrom does. */
    expect_merge("f_int32: 1\nf_string: a\nf_bool: true", "f_int32: 0\nf_string: \"\"\nf_bool: false",
                 "{\"f_int32\":1,\"f_bool\":true,\"f_string\":\"a\"}");
    expect_merge("f_bytes: YWJj", "f_bytes: eHl6", "{\"f_bytes\":\"eHl6\"}");
}

static void test_messages_merge_recursively(void **state)
{
    expect_merge("inner: {name: nn, value: 1}", "inner: {value: 2}",
                 "{\"inner\":{\"name\":\"nn\",\"value\":2}}");
    expect_merge("f_int32: 1", "inner: {name: x}", "{\"f_int32\":1,\"inner\":{\"name\":\"x\"}}");
    /* Nested several levels. */
    expect_merge("child: {child: {f_string: deep, f_int32: 1}}", "child: {child: {f_int32: 2}}",
                 "{\"child\":{\"child\":{\"f_int32\":2,\"f_string\":\"deep\"}}}");
    /* Well-known types are messages too: Duration seconds and nanos merge
     * field by field, a wrapper's false/0 does not override. */
    expect_merge("timeout: 1.5s", "timeout: 3s", "{\"timeout\":\"3.500s\"}");
    expect_merge("enabled: true\nmax_count: 5", "enabled: false\nmax_count: 7",
                 "{\"max_count\":7,\"enabled\":true}");
}

static void test_repeated_appended(void **state)
{
    expect_merge("r_int32: [1, 2]\nr_string: [a]\nr_inner: [{name: x}]\nr_bytes: [YQ==]",
                 "r_int32: [3]\nr_string: [b, c]\nr_inner: [{name: yy}]\nr_bytes: [Yg==]",
                 "{\"r_int32\":[1,2,3],\"r_string\":[\"a\",\"b\",\"c\"],"
                 "\"r_inner\":[{\"name\":\"x\"},{\"name\":\"yy\"}],\"r_bytes\":[\"YQ==\",\"Yg==\"]}");
    expect_merge("f_int32: 1", "r_double: [0.5]", "{\"f_int32\":1,\"r_double\":[0.5]}");
    expect_merge("children: [{f_int32: 1}]", "children: [{f_int32: 2}]",
                 "{\"children\":[{\"f_int32\":1},{\"f_int32\":2}]}");
}

static void test_maps_merge_by_key(void **state)
{
    expect_merge("labels: {a: '1', b: '2'}", "labels: {b: '3', c: '4'}",
                 "{\"labels\":{\"a\":\"1\",\"b\":\"3\",\"c\":\"4\"}}");
    /* A map value is replaced whole, not merged. */
    expect_merge("inners: {k: {name: nn, value: 1}}", "inners: {k: {value: 2}}",
                 "{\"inners\":{\"k\":{\"value\":2}}}");
    expect_merge("by_num: {1: a, 2: b}", "by_num: {2: c}", "{\"by_num\":{\"1\":\"a\",\"2\":\"c\"}}");
    /* Struct is a map too. */
    expect_merge("meta: {x: 1, y: {z: 2}}", "meta: {y: 3}", "{\"meta\":{\"x\":1,\"y\":3}}");
}

static void test_oneof(void **state)
{
    expect_merge("choice_name: a", "choice_num: 3", "{\"choice_num\":3}");
    expect_merge("choice_inner: {name: a}", "choice_name: b", "{\"choice_name\":\"b\"}");
    expect_merge("choice_inner: {name: a}", "choice_inner: {value: 2}",
                 "{\"choice_inner\":{\"name\":\"a\",\"value\":2}}");
    expect_merge("choice_num: 4", "f_int32: 1", "{\"f_int32\":1,\"choice_num\":4}");
}

static void test_any_replaced(void **state)
{
    /* An Any is type_url + bytes: both set in the override, both replaced. */
    expect_merge("typed: {'@type': type.googleapis.com/sharp.test.v1.Inner, name: a, value: 1}",
                 "typed: {'@type': type.googleapis.com/sharp.test.v1.Inner, value: 2}",
                 "{\"typed\":{\"@type\":\"type.googleapis.com/sharp.test.v1.Inner\",\"value\":2}}");
}

int main(void)
{
    sharp_type_registry_add(&sharp__test__v1__inner__descriptor);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_replaced_when_set),
        cmocka_unit_test(test_messages_merge_recursively),
        cmocka_unit_test(test_repeated_appended),
        cmocka_unit_test(test_maps_merge_by_key),
        cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_any_replaced),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sharp_type_registry_reset();
    return rc;
}
