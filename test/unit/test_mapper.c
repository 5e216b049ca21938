/* test_mapper.c: the YAML/JSON -> protobuf-c config mapper (config/mapper.h)
 * against the sharp.test.v1 messages in test/unit/proto/mapper_test.proto. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

#include "config/mapper.h"
#include "config/mapper_internal.h"
#include "mapper_test.pb-c.h"

typedef Sharp__Test__V1__All All;
typedef Sharp__Test__V1__Inner Inner;

static const ProtobufCMessageDescriptor *const all_desc = &sharp__test__v1__all__descriptor;

/* ---- helpers -------------------------------------------------------------- */

static sharp_config_doc_t *parse_as(const char *text, const char *source)
{
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(text, strlen(text), source, all_desc, &err);
    if (!d) fail_msg("unexpected parse failure: %s", err.msg);
    return d;
}

static sharp_config_doc_t *parse(const char *text)
{
    return parse_as(text, "t.yaml");
}

static All *msg_of(sharp_config_doc_t *d)
{
    return (All *)sharp_config_doc_message(d);
}

/* Parses text expecting failure; every `want` substring must be in the error. */
static void expect_error(const char *text, ...)
{
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(text, strlen(text), "t.yaml", all_desc, &err);
    if (d) {
        sharp_config_doc_free(d);
        fail_msg("parse of <<%s>> should have failed", text);
    }
    va_list ap;
    va_start(ap, text);
    for (const char *want; (want = va_arg(ap, const char *)) != NULL;)
        if (!strstr(err.msg, want)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, want);
    va_end(ap);
}

static char *to_json(const ProtobufCMessage *m)
{
    sharp_sbuf_t b = {0};
    sharp_config_to_json(m, &b);
    char *s = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    return s;
}

static int setup_registry(void **state)
{
    (void)state;
    sharp_type_registry_add(&sharp__test__v1__inner__descriptor);
    sharp_type_registry_add(&sharp__test__v1__all__descriptor);
    sharp_type_registry_add(&google__protobuf__duration__descriptor);
    sharp_type_registry_add(&google__protobuf__timestamp__descriptor);
    sharp_type_registry_add(&google__protobuf__struct__descriptor);
    sharp_type_registry_add(&google__protobuf__value__descriptor);
    sharp_type_registry_add(&google__protobuf__uint32_value__descriptor);
    sharp_type_registry_add(&google__protobuf__any__descriptor);
    sharp_type_registry_add(&google__protobuf__empty__descriptor);
    return 0;
}

static int teardown_registry(void **state)
{
    (void)state;
    sharp_type_registry_reset();
    return 0;
}

/* ---- scalars ---------------------------------------------------------------- */

static void test_scalars_proto_names(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int32: -12\n"
                                  "f_int64: -9223372036854775808\n"
                                  "f_uint32: 4294967295\n"
                                  "f_uint64: 18446744073709551615\n"
                                  "f_sint32: -3\n"
                                  "f_sint64: \"-4\"\n"
                                  "f_fixed32: 5\n"
                                  "f_fixed64: '6'\n"
                                  "f_sfixed32: -7\n"
                                  "f_sfixed64: -8\n"
                                  "f_float: 1.5\n"
                                  "f_double: -2.25e3\n"
                                  "f_bool: true\n"
                                  "f_string: hello world\n"
                                  "f_bytes: aGVsbG8=\n"
                                  "color: GREEN\n");
    All *m = msg_of(d);
    assert_int_equal(m->f_int32, -12);
    assert_true(m->f_int64 == INT64_MIN);
    assert_true(m->f_uint32 == UINT32_MAX);
    assert_true(m->f_uint64 == UINT64_MAX);
    assert_int_equal(m->f_sint32, -3);
    assert_int_equal(m->f_sint64, -4);
    assert_int_equal(m->f_fixed32, 5);
    assert_int_equal(m->f_fixed64, 6);
    assert_int_equal(m->f_sfixed32, -7);
    assert_int_equal(m->f_sfixed64, -8);
    assert_true(m->f_float == 1.5f);
    assert_true(m->f_double == -2250.0);
    assert_true(m->f_bool);
    assert_string_equal(m->f_string, "hello world");
    assert_int_equal(m->f_bytes.len, 5);
    assert_memory_equal(m->f_bytes.data, "hello", 5);
    assert_int_equal(m->color, SHARP__TEST__V1__COLOR__GREEN);
    sharp_config_doc_free(d);
}

static void test_json_names(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("fInt32: 7\nfString: x\nrString: [a, b]\nmaxCount: 3\n"
                                  "choiceName: pick\nfSfixed64: 9\n");
    All *m = msg_of(d);
    assert_int_equal(m->f_int32, 7);
    assert_string_equal(m->f_string, "x");
    assert_int_equal(m->n_r_string, 2);
    assert_string_equal(m->r_string[1], "b");
    assert_non_null(m->max_count);
    assert_int_equal(m->max_count->value, 3);
    assert_int_equal(m->choice_case, SHARP__TEST__V1__ALL__CHOICE_CHOICE_NAME);
    assert_string_equal(m->choice_name, "pick");
    assert_int_equal(m->f_sfixed64, 9);
    sharp_config_doc_free(d);
    /* the same field under both names is a duplicate */
    expect_error("f_int32: 1\nfInt32: 2\n", "duplicate field \"f_int32\"", NULL);
}

static void test_number_forms(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int32: \"42\"\n"  /* quoted number for an int */
                                  "f_int64: 1e3\n"     /* integral exponent form */
                                  "f_uint32: 2.0\n"
                                  "f_string: '0123'\n" /* quoted number text is a string */
                                  "f_float: NaN\n"
                                  "f_double: -Infinity\n"
                                  "r_double: [Infinity, '1.5', .5, -0]\n"
                                  "f_bool: False\n");
    All *m = msg_of(d);
    assert_int_equal(m->f_int32, 42);
    assert_int_equal(m->f_int64, 1000);
    assert_int_equal(m->f_uint32, 2);
    assert_string_equal(m->f_string, "0123");
    assert_true(isnan(m->f_float));
    assert_true(isinf(m->f_double) && m->f_double < 0);
    assert_int_equal(m->n_r_double, 4);
    assert_true(isinf(m->r_double[0]));
    assert_true(m->r_double[1] == 1.5 && m->r_double[2] == 0.5);
    assert_false(m->f_bool);
    sharp_config_doc_free(d);
}

static void test_integer_errors(void **state)
{
    (void)state;
    expect_error("f_int32: 2147483648\n", "t.yaml:1:10: f_int32: ", "out of range for int32", NULL);
    expect_error("f_int32: -2147483649\n", "out of range for int32", NULL);
    expect_error("f_uint32: 4294967296\n", "out of range for uint32", NULL);
    expect_error("f_uint32: -1\n", "t.yaml:1:11: f_uint32: value -1 is out of range for uint32", NULL);
    expect_error("f_uint64: -5e0\n", "out of range for uint64", NULL);
    expect_error("f_int64: -9223372036854775809\n", "out of range for int64", NULL);
    expect_error("f_fixed32: 4294967296\n", "out of range for fixed32", NULL);
    expect_error("f_sint32: 3e9\n", "out of range for sint32", NULL);
    expect_error("f_uint64: 18446744073709551616\n", "out of range for uint64", NULL);
    expect_error("f_int64: \"9223372036854775808\"\n", "out of range for int64", NULL);
    expect_error("f_int32: 1.5\n", "expected an integer (int32), got \"1.5\"", NULL);
    expect_error("f_int32: abc\n", "expected an integer", NULL);
    expect_error("f_int32: \"\"\n", "expected an integer", NULL);
    expect_error("f_fixed64: '0x10'\n", "expected an integer", NULL); /* a string: SimpleAtoi has no 0x */
    /* unquoted, yaml-cpp reads the base from the prefix, as in Envoy */
    sharp_config_doc_t *r = parse("f_fixed64: 0x10\nf_int32: -0x1F\nf_uint32: 017\nf_int64: 09\n");
    assert_int_equal(msg_of(r)->f_fixed64, 16);
    assert_int_equal(msg_of(r)->f_int32, -31);
    assert_int_equal(msg_of(r)->f_uint32, 15);
    assert_int_equal(msg_of(r)->f_int64, 9); /* not octal: yaml-cpp falls back to a decimal float */
    sharp_config_doc_free(r);
    expect_error("f_int32: 0x80000000\n", "out of range for int32", NULL);
    expect_error("f_int32: [1]\n", "expected a scalar of type int32, got a list", NULL);
    expect_error("f_float: 1e39\n", "out of range for float", NULL);
    expect_error("f_double: 1e999\n", "out of range for double", NULL);
    expect_error("f_double: inf\n", "expected a number", NULL);
}

/* Envoy's YAML loader turns unquoted numbers and yaml-cpp bool words into
 * JSON numbers and bools, which protobuf refuses for string and bytes
 * fields; quoted, they are strings. Map keys are always strings. */
static void test_strings_need_quotes_for_numbers_and_bools(void **state)
{
    (void)state;
    static const char *const bad[] = {"123", "-1.5", "1e3", "0x1F", "017", ".inf", "yes", "Off", "y", "TRUE"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64], want[96];
        snprintf(text, sizeof text, "f_string: %s\n", bad[i]);
        snprintf(want, sizeof want, "t.yaml:1:11: f_string: expected a string, got the ");
        expect_error(text, want, bad[i], "quote it", NULL);
    }
    expect_error("name_w: 5\n", "name_w: expected a string, got the number 5", NULL);
    expect_error("r_string: [a, 7]\n", "r_string[1]: expected a string", NULL);
    expect_error("f_bytes: 1234\n", "f_bytes: expected a string", NULL);
    sharp_config_doc_t *d = parse("f_string: '123'\nr_string: [\"yes\", 1a, Infinity, .5x, 'on']\n"
                                  "labels: {1: a, true: b}\nchild:\n  f_string: |\n    7\n");
    All *m = msg_of(d);
    assert_string_equal(m->f_string, "123");
    assert_int_equal(m->n_r_string, 5);
    assert_string_equal(m->r_string[1], "1a");
    assert_string_equal(m->r_string[2], "Infinity"); /* not a yaml-cpp float */
    assert_string_equal(m->child->f_string, "7\n"); /* a block scalar is a string */
    assert_string_equal(m->labels[0]->key, "1");
    assert_string_equal(m->labels[1]->key, "true");
    sharp_config_doc_free(d);
}

static void test_bool_and_bytes(void **state)
{
    (void)state;
    /* Envoy's YAML loader: yaml-cpp bool words unquoted, then protobuf's
     * SimpleAtob for a string; an unquoted number is a JSON number, refused */
    static const struct { const char *text; bool v; } words[] = {
        {"yes", true}, {"No", false}, {"ON", true}, {"off", false}, {"y", true}, {"N", false},
        {"'1'", true}, {"\"0\"", false}, {"t", true}, {"'YES'", true}, {"F", false}, {"'tRuE'", true},
        {"yEs", true}, /* not a yaml-cpp case, so a string; SimpleAtob ignores case */
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "f_bool: %s\n", words[i].text);
        sharp_config_doc_t *b = parse(text);
        if (msg_of(b)->f_bool != words[i].v) fail_msg("%s read as %d", words[i].text, msg_of(b)->f_bool);
        sharp_config_doc_free(b);
    }
    expect_error("f_bool: 1\n", "t.yaml:1:9: f_bool: expected true or false, got \"1\"", NULL);
    expect_error("f_bool: maybe\n", "expected true or false", NULL);
    sharp_config_doc_t *v = parse("value: on\n"); /* a Value too: Envoy's parseYamlNode makes it a bool */
    assert_int_equal(msg_of(v)->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
    sharp_config_doc_free(v);
    sharp_config_doc_t *d = parse("f_bool: True\nr_bytes: ['-_8', '+/8=', 'YQ', 'YWI', '']\n");
    All *m = msg_of(d);
    assert_true(m->f_bool);
    assert_int_equal(m->n_r_bytes, 5);
    assert_int_equal(m->r_bytes[0].len, 2);
    assert_memory_equal(m->r_bytes[0].data, "\xfb\xff", 2); /* URL-safe alphabet */
    assert_memory_equal(m->r_bytes[1].data, "\xfb\xff", 2); /* standard, padded */
    assert_memory_equal(m->r_bytes[2].data, "a", 1);        /* unpadded */
    assert_memory_equal(m->r_bytes[3].data, "ab", 2);
    assert_int_equal(m->r_bytes[4].len, 0);
    sharp_config_doc_free(d);
    expect_error("f_bytes: 'a$b='\n", "invalid base64", NULL);
    expect_error("f_bytes: 'abcde'\n", "invalid base64", NULL);
}

static void test_enums(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("color: 3\nr_color: [RED, 2, BLUE, 77]\n");
    All *m = msg_of(d);
    assert_int_equal(m->color, SHARP__TEST__V1__COLOR__BLUE);
    assert_int_equal(m->n_r_color, 4);
    assert_int_equal(m->r_color[0], SHARP__TEST__V1__COLOR__RED);
    assert_int_equal(m->r_color[1], SHARP__TEST__V1__COLOR__GREEN);
    assert_int_equal(m->r_color[3], 77); /* proto3 enums are open */
    sharp_config_doc_free(d);
    /* Envoy parses enums with case_insensitive_enum_parsing: any ASCII case
     * matches, quoted decimal numbers too (declared or not), and JSON number
     * forms of an integer are numbers */
    d = parse("color: blue\nr_color: [red, Green, bLuE, '2', \" 3 \", \"-4\", color_unspecified, 2.0, 1e0]\n");
    m = msg_of(d);
    assert_int_equal(m->color, SHARP__TEST__V1__COLOR__BLUE);
    assert_int_equal(m->n_r_color, 9);
    int want[] = {1, 2, 3, 2, 3, -4, 0, 2, 1};
    for (size_t i = 0; i < 9; i++) assert_int_equal((int)m->r_color[i], want[i]);
    sharp_config_doc_free(d);
    d = parse_as("{\"color\": \"green\"}", "t.json");
    assert_int_equal(msg_of(d)->color, SHARP__TEST__V1__COLOR__GREEN);
    sharp_config_doc_free(d);
    expect_error("color: PURPLE\n", "t.yaml:1:8: color: unknown value \"PURPLE\" for enum sharp.test.v1.Color",
                 "valid values (any case): COLOR_UNSPECIFIED, RED, GREEN, BLUE", NULL);
    expect_error("color: re d\n", "unknown value \"re d\"", NULL);
    expect_error("color: '2.0'\n", "unknown value \"2.0\"", NULL); /* a quoted non-integer is a name */
    expect_error("color: 2147483648\n", "out of range for enum", NULL);
    expect_error("color: '2147483648'\n", "unknown value", NULL);
    expect_error("r_color: [RED, 1.5]\n", "r_color[1]", NULL);
}

static void test_null_handling(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int32: null\nf_string: ~\ninner:\nr_int32: null\nlabels: null\n"
                                  "timeout: null\nvalue: null\n");
    All *m = msg_of(d);
    assert_int_equal(m->f_int32, 0);
    assert_string_equal(m->f_string, "");
    assert_null(m->inner);
    assert_int_equal(m->n_r_int32, 0);
    assert_int_equal(m->n_labels, 0);
    assert_null(m->timeout);
    assert_non_null(m->value); /* a Value holds JSON null */
    assert_int_equal(m->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    sharp_config_doc_free(d);
    /* quoted "null" is a string */
    d = parse("f_string: \"null\"\n");
    assert_string_equal(msg_of(d)->f_string, "null");
    sharp_config_doc_free(d);
    /* protobuf's legacy JSON syntax (always on in JsonStringToMessage): a
     * null list element or map value is the type's default */
    d = parse("r_int32: [1, null]\nr_string: [null, a]\nr_inner: [null]\nr_color: [~]\n"
              "labels: {a: null}\ninners: {b: ~}\n");
    m = msg_of(d);
    assert_int_equal(m->n_r_int32, 2);
    assert_int_equal(m->r_int32[1], 0);
    assert_int_equal(m->n_r_string, 2);
    assert_string_equal(m->r_string[0], "");
    assert_int_equal(m->n_r_inner, 1);
    assert_string_equal(m->r_inner[0]->name, "");
    assert_int_equal(m->n_r_color, 1);
    assert_string_equal(m->labels[0]->value, "");
    assert_non_null(m->inners[0]->value);
    char *js = to_json(&m->base);
    assert_non_null(strstr(js, "\"r_string\":[\"\",\"a\"]"));
    free(js);
    sharp_config_doc_free(d);
}

/* ---- messages, repeated, maps, oneofs ----------------------------------------- */

static void test_nested_and_repeated(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("inner: {name: a, value: 1}\n"
                                  "r_int32: [1, 2, 3]\n"
                                  "r_inner:\n"
                                  "- name: x\n"
                                  "- {}\n"
                                  "- name: z\n"
                                  "  value: 26\n"
                                  "child:\n"
                                  "  f_string: deep\n"
                                  "  child: {f_int32: 5}\n");
    All *m = msg_of(d);
    assert_string_equal(m->inner->name, "a");
    assert_int_equal(m->inner->value, 1);
    assert_int_equal(m->n_r_int32, 3);
    assert_int_equal(m->r_int32[2], 3);
    assert_int_equal(m->n_r_inner, 3);
    assert_string_equal(m->r_inner[0]->name, "x");
    assert_string_equal(m->r_inner[1]->name, "");
    assert_int_equal(m->r_inner[2]->value, 26);
    assert_string_equal(m->child->f_string, "deep");
    assert_int_equal(m->child->child->f_int32, 5);
    sharp_config_doc_free(d);
    /* protobuf's legacy JSON syntax, which Envoy's loader always gets: a
     * single value stands for a one-element list, and a list nested in a
     * list is flattened into it */
    d = parse("r_int32: 5\nr_string: '*'\nr_inner: {name: solo}\nr_double: [[1, [2]], 3]\n"
              "r_color: green\n");
    m = msg_of(d);
    assert_int_equal(m->n_r_int32, 1);
    assert_int_equal(m->r_int32[0], 5);
    assert_int_equal(m->n_r_string, 1);
    assert_string_equal(m->r_string[0], "*");
    assert_int_equal(m->n_r_inner, 1);
    assert_string_equal(m->r_inner[0]->name, "solo");
    assert_int_equal(m->n_r_double, 3);
    assert_true(m->r_double[1] == 2.0 && m->r_double[2] == 3.0);
    assert_int_equal(m->n_r_color, 1);
    int line = 0, col = 0;
    assert_true(sharp_config_doc_where(d, "r_inner[0]", &line, &col));
    assert_int_equal(line, 3);
    assert_int_equal(col, 10);
    sharp_config_doc_free(d);
    d = parse("list: [[1, 2], 3]\n"); /* a ListValue keeps nested lists */
    assert_int_equal(msg_of(d)->list->n_values, 2);
    assert_int_equal(msg_of(d)->list->values[0]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
    sharp_config_doc_free(d);
    expect_error("r_inner: {nam: b}\n", "t.yaml:1:11: r_inner[0].nam: unknown field \"nam\"", NULL);
    expect_error("r_int32: [1, [x]]\n", "r_int32[1]: expected an integer", NULL);
    expect_error("inner: 5\n", "inner: expected a mapping for sharp.test.v1.Inner, got a scalar", NULL);
    expect_error("r_inner: [{name: a}, {nam: b}]\n", "r_inner[1].nam: unknown field \"nam\" in sharp.test.v1.Inner",
                 NULL);
}

static void test_maps(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("labels: {a: '1', b: \"2\", \"c d\": x}\n"
                                  "inners:\n"
                                  "  one: {name: n1}\n"
                                  "  two: {}\n"
                                  "by_num: {'7': seven, -1: minus}\n"
                                  "by_bool: {true: 10, false: \"-20\"}\n");
    All *m = msg_of(d);
    assert_int_equal(m->n_labels, 3);
    assert_string_equal(m->labels[0]->key, "a");
    assert_string_equal(m->labels[0]->value, "1");
    assert_string_equal(m->labels[1]->value, "2");
    assert_string_equal(m->labels[2]->key, "c d");
    assert_int_equal(m->n_inners, 2);
    assert_string_equal(m->inners[0]->key, "one");
    assert_string_equal(m->inners[0]->value->name, "n1");
    assert_non_null(m->inners[1]->value);
    assert_int_equal(m->n_by_num, 2);
    assert_int_equal(m->by_num[0]->key, 7);
    assert_int_equal(m->by_num[1]->key, -1);
    assert_string_equal(m->by_num[1]->value, "minus");
    assert_int_equal(m->n_by_bool, 2);
    assert_true(m->by_bool[0]->key);
    assert_int_equal(m->by_bool[1]->value, -20);
    sharp_config_doc_free(d);
    expect_error("labels: {a: x, a: y}\n", "labels[\"a\"]: duplicate key \"a\"", NULL);
    expect_error("by_num: {x: y}\n", "by_num[\"x\"]: expected an integer", NULL);
    expect_error("by_bool: {maybe: 1}\n", "expected true or false", NULL);
    expect_error("labels: [a]\n", "expected a mapping for map field \"labels\"", NULL);
    expect_error("labels: x\n", "expected a mapping for map field \"labels\"", NULL);
}

static void test_oneof(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("choice_inner: {name: in}\n");
    All *m = msg_of(d);
    assert_int_equal(m->choice_case, SHARP__TEST__V1__ALL__CHOICE_CHOICE_INNER);
    assert_string_equal(m->choice_inner->name, "in");
    sharp_config_doc_free(d);
    d = parse("choice_num: 0\n");
    assert_int_equal(msg_of(d)->choice_case, SHARP__TEST__V1__ALL__CHOICE_CHOICE_NUM);
    sharp_config_doc_free(d);
    expect_error("choice_name: a\nchoice_inner: {name: b}\n",
                 "t.yaml:2:1: choice_inner: \"choice_name\" and \"choice_inner\" are members of the same oneof",
                 NULL);
    expect_error("choice_inner: {name: b}\nchoiceNum: 3\n", "same oneof", NULL);
}

static void test_unknown_field(void **state)
{
    (void)state;
    expect_error("f_int32: 1\n"
                 "children:\n"
                 "  - f_string: a\n"
                 "  - inner:\n"
                 "      name: b\n"
                 "      adress: c\n",
                 "t.yaml:6:7: children[1].inner.adress: unknown field \"adress\" in sharp.test.v1.Inner", NULL);
    expect_error("nope: 1\n", "t.yaml:1:1: nope: unknown field \"nope\" in sharp.test.v1.All", NULL);
    expect_error("f_int32: 1\nf_int32: 2\n", "t.yaml:2:1: f_int32: duplicate field \"f_int32\"", NULL);
    expect_error("[1, 2]\n", "expected a mapping for sharp.test.v1.All, got a list", NULL);
    expect_error("? [a]\n: 1\n", "field names must be strings", NULL);
}

/* ---- well-known types ------------------------------------------------------------ */

static void test_duration(void **state)
{
    (void)state;
    static const struct { const char *text; int64_t s; int32_t n; } ok[] = {
        {"1.5s", 1, 500000000}, {"0.25s", 0, 250000000}, {"10s", 10, 0}, {"-1s", -1, 0},
        {"1.000340012s", 1, 340012}, {"-0.5s", 0, -500000000}, {"315576000000s", 315576000000ll, 0},
        {"0s", 0, 0}, {"-5s", -5, 0}, {"-315576000000.999999999s", -315576000000ll, -999999999},
        {"007s", 7, 0}, {"-1.5s", -1, -500000000},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "timeout: %s\n", ok[i].text);
        sharp_config_doc_t *d = parse(text);
        All *m = msg_of(d);
        assert_non_null(m->timeout);
        assert_int_equal(m->timeout->seconds, ok[i].s);
        assert_int_equal(m->timeout->nanos, ok[i].n);
        sharp_config_doc_free(d);
    }
    sharp_config_doc_t *d = parse("timeout: {seconds: 3, nanos: 7}\n");
    assert_int_equal(msg_of(d)->timeout->seconds, 3);
    assert_int_equal(msg_of(d)->timeout->nanos, 7);
    sharp_config_doc_free(d);
    /* protobuf's ParseDuration: each kind of mistake has its own reason */
    static const struct { const char *text, *why; } bad[] = {
        {"10", "must end with a single 's'"}, {"1m", "must end with a single 's'"},
        {"1.5 s", "must end with a single 's'"}, {"1.5S", "must end with a single 's'"},
        {"1.5ss", "must end with a single 's'"}, {"1.s", "bad fraction"},
        {"1.0000000001s", "bad fraction"}, {"s", "must start with an integer"},
        {"+1s", "must start with an integer"}, {".5s", "must start with an integer"},
        {"--1s", "bad seconds"}, {"1-2s", "bad seconds"}, {"-s", "bad seconds"},
        {"315576000001s", "out of range"}, {"-315576000001s", "out of range"},
        {"99999999999999999999999s", "out of range"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64], want[96];
        snprintf(text, sizeof text, "timeout: %s\n", bad[i].text);
        snprintf(want, sizeof want, "t.yaml:1:10: timeout: bad duration \"%s\": ", bad[i].text);
        expect_error(text, want, bad[i].why, NULL);
    }
    expect_error("timeout: 315576000001s\n", "out of range", NULL);
    expect_error("timeout: [1]\n", "expected a mapping for google.protobuf.Duration", NULL);
}

static void test_timestamp(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("when: 1972-01-01T10:00:20.021Z\n");
    assert_int_equal(msg_of(d)->when->seconds, 63108020);
    assert_int_equal(msg_of(d)->when->nanos, 21000000);
    sharp_config_doc_free(d);
    d = parse("when: '2024-02-29T01:00:00+01:00'\n");
    assert_int_equal(msg_of(d)->when->seconds, 1709164800);
    sharp_config_doc_free(d);
    d = parse("when: 0001-01-01T00:00:00Z\n");
    assert_int_equal(msg_of(d)->when->seconds, -62135596800ll);
    sharp_config_doc_free(d);
    d = parse("when: 9999-12-31T23:59:59.999999999Z\n");
    assert_int_equal(msg_of(d)->when->seconds, 253402300799ll);
    assert_int_equal(msg_of(d)->when->nanos, 999999999);
    sharp_config_doc_free(d);
    expect_error("when: 2023-02-29T00:00:00Z\n", "t.yaml:1:7: when: bad timestamp", "no such date", NULL);
    expect_error("when: yesterday\n", "RFC 3339", NULL);
    expect_error("when: 2024-01-01t00:00:00Z\n", "RFC 3339", NULL);  /* protobuf wants 'T' */
    expect_error("when: 2024-01-01T00:00:00z\n", "bad time zone", NULL); /* and 'Z' */
    expect_error("when: 2024-01-01T00:00:00\n", "RFC 3339", NULL);
    expect_error("when: 2024-01-01T00:00:00.Z\n", "bad fraction", NULL);
    expect_error("when: 0001-01-01T00:00:00+00:01\n", "bad timestamp", "out of range", NULL);
    expect_error("when: 9999-12-31T23:59:59-00:01\n", "out of range", NULL);
}

static void test_wrappers(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("max_count: 0\nenabled: false\nname_w: hi\ndbl_w: 2.5\n"
                                  "i64_w: '-9000000000'\nbytes_w: AQI=\n");
    All *m = msg_of(d);
    assert_non_null(m->max_count); /* present even at the default value */
    assert_int_equal(m->max_count->value, 0);
    assert_non_null(m->enabled);
    assert_false(m->enabled->value);
    assert_string_equal(m->name_w->value, "hi");
    assert_true(m->dbl_w->value == 2.5);
    assert_true(m->i64_w->value == -9000000000ll);
    assert_int_equal(m->bytes_w->value.len, 2);
    sharp_config_doc_free(d);
    expect_error("max_count: {value: 3}\n", "expected a bare value for google.protobuf.UInt32Value", NULL);
    expect_error("max_count: -3\n", "max_count: value -3 is out of range for uint32", NULL);
    sharp_config_doc_t *on = parse("enabled: on\n"); /* yaml-cpp's bool word, as Envoy reads it */
    assert_true(msg_of(on)->enabled->value);
    sharp_config_doc_free(on);
    expect_error("enabled: 2\n", "expected true or false", NULL);
}

static void test_struct_value_list(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("meta:\n"
                                  "  s: text\n"
                                  "  n: 1.5\n"
                                  "  q: '12'\n"
                                  "  b: true\n"
                                  "  z: null\n"
                                  "  l: [1, two, {three: 3}]\n"
                                  "  o: {k: v}\n"
                                  "value: [x]\n"
                                  "list: [1, null, [], {}]\n"
                                  "empty: {}\n");
    All *m = msg_of(d);
    Google__Protobuf__Struct *st = m->meta;
    assert_int_equal(st->n_fields, 7);
    assert_string_equal(st->fields[0]->key, "s");
    assert_int_equal(st->fields[0]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    assert_string_equal(st->fields[0]->value->string_value, "text");
    assert_true(st->fields[1]->value->number_value == 1.5);
    assert_int_equal(st->fields[2]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
    assert_true(st->fields[3]->value->bool_value);
    assert_int_equal(st->fields[4]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    Google__Protobuf__ListValue *l = st->fields[5]->value->list_value;
    assert_int_equal(l->n_values, 3);
    assert_string_equal(l->values[1]->string_value, "two");
    assert_string_equal(l->values[2]->struct_value->fields[0]->key, "three");
    assert_int_equal(st->fields[6]->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
    assert_int_equal(m->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
    assert_int_equal(m->list->n_values, 4);
    assert_int_equal(m->list->values[1]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
    assert_non_null(m->empty);
    sharp_config_doc_free(d);
    expect_error("meta: [1]\n", "expected a mapping for google.protobuf.Struct", NULL);
    expect_error("list: {a: 1}\n", "expected a list for google.protobuf.ListValue", NULL);
    expect_error("meta: {a: 1, a: 2}\n", "meta[\"a\"]: duplicate key", NULL);
    expect_error("empty: {x: 1}\n", "unknown field \"x\" in google.protobuf.Empty", NULL);
}

static void test_any(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("typed:\n"
                                  "  '@type': type.googleapis.com/sharp.test.v1.Inner\n"
                                  "  name: packed\n"
                                  "  value: 9\n"
                                  "r_any:\n"
                                  "- {'@type': type.googleapis.com/google.protobuf.Duration, value: 2.5s}\n"
                                  "- {value: {f_int32: 4}, '@type': example.com/x/sharp.test.v1.All}\n"
                                  "- '@type': type.googleapis.com/google.protobuf.Any\n"
                                  "  value: {'@type': type.googleapis.com/google.protobuf.UInt32Value, value: 8}\n"
                                  "- {}\n");
    All *m = msg_of(d);
    assert_string_equal(m->typed->type_url, "type.googleapis.com/sharp.test.v1.Inner");
    sharp_config_error_t err = {{0}};
    Inner *in = (Inner *)sharp_any_unpack(&m->typed->base, &sharp__test__v1__inner__descriptor, &err);
    assert_non_null(in);
    assert_string_equal(in->name, "packed");
    assert_int_equal(in->value, 9);
    protobuf_c_message_free_unpacked(&in->base, NULL);

    assert_int_equal(m->n_r_any, 4);
    Google__Protobuf__Duration *du = (Google__Protobuf__Duration *)sharp_any_unpack(&m->r_any[0]->base, NULL, &err);
    assert_non_null(du);
    assert_int_equal(du->seconds, 2);
    assert_int_equal(du->nanos, 500000000);
    protobuf_c_message_free_unpacked(&du->base, NULL);

    All *a = (All *)sharp_any_unpack(&m->r_any[1]->base, NULL, &err);
    assert_non_null(a);
    /* All is no special type, so "value" is its own field All.value (a Value) */
    assert_non_null(a->value);
    assert_int_equal(a->value->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
    assert_int_equal(a->f_int32, 0);
    protobuf_c_message_free_unpacked(&a->base, NULL);

    Google__Protobuf__Any *nested = (Google__Protobuf__Any *)sharp_any_unpack(&m->r_any[2]->base, NULL, &err);
    assert_non_null(nested);
    Google__Protobuf__UInt32Value *u = (Google__Protobuf__UInt32Value *)sharp_any_unpack(&nested->base, NULL, &err);
    assert_non_null(u);
    assert_int_equal(u->value, 8);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    protobuf_c_message_free_unpacked(&nested->base, NULL);

    assert_string_equal(m->r_any[3]->type_url, "");

    /* type mismatch and unknown types when unpacking */
    assert_null(sharp_any_unpack(&m->typed->base, &google__protobuf__duration__descriptor, &err));
    assert_non_null(strstr(err.msg, "does not name google.protobuf.Duration"));
    assert_null(sharp_any_unpack(&m->base, NULL, &err));
    assert_non_null(strstr(err.msg, "not a google.protobuf.Any"));
    sharp_config_doc_free(d);
}

static void test_any_errors(void **state)
{
    (void)state;
    expect_error("typed:\n  '@type': type.googleapis.com/sharp.test.v1.Nope\n  name: x\n",
                 "t.yaml:2:12: typed: unknown type URL \"type.googleapis.com/sharp.test.v1.Nope\"", NULL);
    expect_error("typed: {name: x}\n", "typed: missing \"@type\" in google.protobuf.Any", NULL);
    expect_error("typed: {'@type': sharp.test.v1.Inner}\n", "unknown type URL", NULL);
    expect_error("typed: {'@type': type.googleapis.com/sharp.test.v1.Inner, nam: x}\n",
                 "typed.nam: unknown field \"nam\" in sharp.test.v1.Inner", NULL);
    expect_error("typed: {'@type': type.googleapis.com/google.protobuf.Duration, value: 5}\n",
                 "typed.value: bad duration \"5\": a duration must end with a single 's'", NULL);
    expect_error("typed: {'@type': type.googleapis.com/google.protobuf.Duration, value: 1s, x: 1}\n",
                 "typed.x: unknown field \"x\"", NULL);
    expect_error("typed: [1]\n", "expected a mapping with \"@type\"", NULL);
    expect_error("r_any: [{'@type': [x]}]\n", "r_any[0]: \"@type\" must be a type URL string", NULL);
}

/* ---- YAML features ------------------------------------------------------------------- */

static void test_yaml_syntax_errors(void **state)
{
    (void)state;
    expect_error("f_int32: 1\nr_int32: [1, 2\nf_string: x\n", "t.yaml:3:", "YAML syntax error", NULL);
    expect_error("a: b\n  c: d\n", "t.yaml:2:4: YAML syntax error", NULL);
    expect_error("f_int32: 1\n---\nf_int32: 2\n", "t.yaml:3:1: more than one YAML document", NULL);
    expect_error("f_string: \"\\q\"\n", "YAML syntax error", NULL);
}

static void test_aliases_and_merge(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("inner: &in {name: shared, value: 3}\n"
                                  "r_inner: [*in, *in]\n"
                                  "child: &base\n"
                                  "  f_int32: 1\n"
                                  "  f_string: base\n"
                                  "children:\n"
                                  "- <<: *base\n"
                                  "  f_string: override\n"
                                  "- {<<: [*base], fInt32: 9}\n"
                                  "!ignore scratch: {anything: [goes]}\n");
    All *m = msg_of(d);
    assert_int_equal(m->n_r_inner, 2);
    assert_string_equal(m->r_inner[1]->name, "shared");
    assert_true(m->r_inner[0] != m->r_inner[1] && m->r_inner[0] != m->inner);
    assert_int_equal(m->n_children, 2);
    assert_int_equal(m->children[0]->f_int32, 1);
    assert_string_equal(m->children[0]->f_string, "override");
    assert_int_equal(m->children[1]->f_int32, 9);
    assert_string_equal(m->children[1]->f_string, "base");
    sharp_config_doc_free(d);
    expect_error("children: &a [{children: *a}]\n", "alias refers to a node that contains it", NULL);
    expect_error("children: [{<<: 5}]\n", "merge key \"<<\" needs a mapping", NULL);
}

static void test_alias_bomb(void **state)
{
    (void)state;
    /* 10^7 nodes once expanded, from a few lines */
    expect_error("r_string: &a [x, x, x, x, x, x, x, x, x, x]\n"
                 "meta:\n"
                 "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                 "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                 "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                 "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
                 "more than 1000000 nodes", NULL);
    /* deep nesting is refused before it reaches the mapper */
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "value: ");
    for (int i = 0; i < 300; i++) sharp_sbuf_puts(&b, "[");
    for (int i = 0; i < 300; i++) sharp_sbuf_puts(&b, "]");
    expect_error(sharp_sbuf_cstr(&b), "nesting deeper than", NULL);
    sharp_sbuf_free(&b);
}

static void test_json_input(void **state)
{
    (void)state;
    const char *json = "{\n"
                       "\t\"fInt32\":1,\"f_int64\": \"-5\",\n"
                       "  \"f_string\": \"q\\\" b\\\\ n\\n e\\u00e9 s\\/ \\ud83d\\ude00\",\n"
                       "  \"r_inner\": [{\"name\": \"a\"}, {\"value\": 2}],\n"
                       "  \"labels\": {\"k\": \"v\"},\n"
                       "  \"timeout\": \"0.25s\",\n"
                       "  \"typed\": {\"@type\": \"type.googleapis.com/sharp.test.v1.Inner\", \"name\": \"j\"},\n"
                       "  \"meta\": {\"x\": [true, null, 1e2, \"s\"]},\n"
                       "  \"f_bool\": true, \"f_double\": 1.25E-2\n"
                       "}\n";
    sharp_config_doc_t *d = parse_as(json, "t.json");
    All *m = msg_of(d);
    assert_int_equal(m->f_int32, 1);
    assert_int_equal(m->f_int64, -5);
    assert_string_equal(m->f_string, "q\" b\\ n\n e\xc3\xa9 s/ \xf0\x9f\x98\x80");
    assert_int_equal(m->n_r_inner, 2);
    assert_int_equal(m->r_inner[1]->value, 2);
    assert_string_equal(m->labels[0]->value, "v");
    assert_int_equal(m->timeout->nanos, 250000000);
    assert_non_null(m->typed->value.data);
    assert_true(m->meta->fields[0]->value->list_value->values[2]->number_value == 100.0);
    assert_true(m->f_bool);
    assert_true(m->f_double == 0.0125);
    int line, col;
    assert_true(sharp_config_doc_where(d, "labels", &line, &col));
    assert_int_equal(line, 5);
    assert_int_equal(col, 3);
    sharp_config_doc_free(d);
    d = parse_as("\t\n\t{\"fInt32\": 3}\n", "tabs.json"); /* tab-indented JSON */
    assert_int_equal(msg_of(d)->f_int32, 3);
    sharp_config_doc_free(d);
    sharp_config_error_t err = {{0}};
    const char *bad = "{\"r_inner\": [{\"name\": \"a\"}, {\"nme\": 2}]}";
    assert_null(sharp_config_parse(bad, strlen(bad), "b.json", all_desc, &err));
    assert_string_equal(err.msg, "b.json:1:30: r_inner[1].nme: unknown field \"nme\" in sharp.test.v1.Inner");
}

/* The same node of two documents: type, tag, style, value, start mark and
 * children, recursively. */
static void expect_same_node(yaml_document_t *a, int ia, yaml_document_t *b, int ib)
{
    yaml_node_t *x = yaml_document_get_node(a, ia), *y = yaml_document_get_node(b, ib);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(x->type, y->type);
    assert_string_equal((const char *)x->tag, (const char *)y->tag);
    assert_int_equal(x->start_mark.line, y->start_mark.line);
    assert_int_equal(x->start_mark.column, y->start_mark.column);
    switch (x->type) {
    case YAML_SCALAR_NODE:
        assert_int_equal(x->data.scalar.style, y->data.scalar.style);
        assert_int_equal(x->data.scalar.length, y->data.scalar.length);
        assert_memory_equal(x->data.scalar.value, y->data.scalar.value, x->data.scalar.length);
        break;
    case YAML_SEQUENCE_NODE: {
        long n = x->data.sequence.items.top - x->data.sequence.items.start;
        assert_int_equal(n, y->data.sequence.items.top - y->data.sequence.items.start);
        for (long i = 0; i < n; i++)
            expect_same_node(a, x->data.sequence.items.start[i], b, y->data.sequence.items.start[i]);
        break;
    }
    case YAML_MAPPING_NODE: {
        long n = x->data.mapping.pairs.top - x->data.mapping.pairs.start;
        assert_int_equal(n, y->data.mapping.pairs.top - y->data.mapping.pairs.start);
        for (long i = 0; i < n; i++) {
            expect_same_node(a, x->data.mapping.pairs.start[i].key, b, y->data.mapping.pairs.start[i].key);
            expect_same_node(a, x->data.mapping.pairs.start[i].value, b, y->data.mapping.pairs.start[i].value);
        }
        break;
    }
    default: fail_msg("unexpected node type %d", x->type);
    }
}

/* JSON in the plain subset is loaded without libyaml's scanner into the
 * tree libyaml would build; anything else is left to libyaml. */
static void test_json_direct_load(void **state)
{
    (void)state;
    static const char *const same[] = {
        "{\"version_info\": \"7\", \"resources\": [{\"@type\": "
        "\"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\", \"cluster_name\": \"e\", "
        "\"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
        "{\"address\": \"127.0.0.1\", \"port_value\": 20000}}}}, {\"endpoint\": {\"address\": "
        "{\"socket_address\": {\"address\": \"127.0.0.2\", \"port_value\": 20001}}}, "
        "\"load_balancing_weight\": 3}]}]}]}",
        "{\n  \"a\": [1, -2.5, 3e10, 4E-2, true, false, null],\n  \"b\": {},\n  \"c\": [],\n"
        "  \"d\": \"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t end\",\n  \"e\" : [ [ ], { \"x\" : { } } ]\n}\n",
        "\n\n   [\"x\",\n\"y\"  ,  {\"k\":\"v\"}]  \n",
        "\"just a string\"",
        "42",
        "{\"\": \"\", \"key with spaces\": \"  padded  \"}",
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        cfg_json_doc_t direct;
        yaml_document_t loaded;
        assert_true(sharp_cfg_json_load(same[i], strlen(same[i]), &direct));
        yaml_parser_t p;
        assert_true(yaml_parser_initialize(&p));
        yaml_parser_set_input_string(&p, (const unsigned char *)same[i], strlen(same[i]));
        assert_true(yaml_parser_load(&p, &loaded));
        yaml_parser_delete(&p);
        expect_same_node(&direct.doc, 1, &loaded, 1);
        assert_int_equal(direct.doc.nodes.top - direct.doc.nodes.start, loaded.nodes.top - loaded.nodes.start);
        sharp_cfg_json_free(&direct);
        yaml_document_delete(&loaded);
    }
    static const char *const left[] = {
        "{\t\"a\": 1}",          "{\"a\": 1}\r\n",  "{\"a\": \"\\u00e9\"}", "{\"a\": \"\xc3\xa9\"}",
        "{'a': 1}",              "{\"a\": \"x\ty\"}", "\xEF\xBB\xBF{}",
        /* not JSON: left to json_check, which says where */
        "{\"a\": tru}", "[01]", "[1.]", "[-]", "[1e]", "[.5]", "[1,]", "{\"a\": 1,}", "[1] x", "{\"a\" 1}",
        "[1 2]", "{a: 1}", "[/* c */ 1]", "", "[", "nulls",
    };
    for (size_t i = 0; i < sizeof left / sizeof *left; i++) {
        cfg_json_doc_t d;
        assert_false(sharp_cfg_json_load(left[i], strlen(left[i]), &d));
    }
    /* nesting past the limit goes to libyaml, whose path refuses it as before */
    char deep[512] = "";
    for (int i = 0; i < 101; i++) strcat(deep, "[");
    strcat(deep, "1");
    for (int i = 0; i < 101; i++) strcat(deep, "]");
    cfg_json_doc_t d;
    assert_false(sharp_cfg_json_load(deep, strlen(deep), &d));
    /* the same mapping and positions through the direct path */
    const char *bad = "{\n  \"r_inner\": [{\"name\": \"a\"},\n    {\"nme\": 2}]}";
    sharp_config_error_t err = {{0}};
    assert_null(sharp_config_parse_json(bad, strlen(bad), "b.json", all_desc, &err));
    assert_string_equal(err.msg, "b.json:3:6: r_inner[1].nme: unknown field \"nme\" in sharp.test.v1.Inner");
    /* a syntax error is still json_check's, with its position */
    const char *broken = "{\"f_int32\": 1,\n \"f_uint32\": 02}";
    assert_null(sharp_config_parse_json(broken, strlen(broken), "s.json", all_desc, &err));
    assert_non_null(strstr(err.msg, "s.json:2:14: JSON syntax error: number cannot have extraneous leading zero"));
    memset(&err, 0, sizeof err);
    const char *good = "{\"fInt32\": 9, \"labels\": {\"k\": \"v\"},\n \"r_inner\": [{\"name\": \"a\\/b\"}]}";
    sharp_config_doc_t *doc = sharp_config_parse_json(good, strlen(good), "g.json", all_desc, &err);
    assert_non_null(doc);
    assert_int_equal(msg_of(doc)->f_int32, 9);
    assert_string_equal(msg_of(doc)->r_inner[0]->name, "a/b");
    int line, col;
    assert_true(sharp_config_doc_where(doc, "r_inner[0].name", &line, &col));
    assert_int_equal(line, 2);
    assert_int_equal(col, 15);
    sharp_config_doc_free(doc);
}

static void test_where(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int32: 1\n"
                                  "inner:\n"
                                  "  name: x\n"
                                  "r_inner:\n"
                                  "  - value: 1\n"
                                  "  - name: yy\n"
                                  "    value: 2\n"
                                  "labels:\n"
                                  "  key1: v\n"
                                  "typed:\n"
                                  "  '@type': type.googleapis.com/sharp.test.v1.Inner\n"
                                  "  name: in-any\n"
                                  "meta: {a: {b: 1}}\n"
                                  "maxCount: 4\n");
    int line = 0, col = 0;
    struct { const char *path; int line, col; } want[] = {
        {"f_int32", 1, 1}, {"inner", 2, 1}, {"inner.name", 3, 3}, {"r_inner[0]", 5, 5},
        {"r_inner[1].value", 7, 5}, {"labels[\"key1\"]", 9, 3}, {"typed.name", 12, 3},
        {"meta[\"a\"][\"b\"]", 13, 12}, {"max_count", 14, 1}, {"", 1, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!sharp_config_doc_where(d, want[i].path, &line, &col)) fail_msg("no position for \"%s\"", want[i].path);
        if (line != want[i].line || col != want[i].col)
            fail_msg("%s at %d:%d, expected %d:%d", want[i].path, line, col, want[i].line, want[i].col);
    }
    assert_false(sharp_config_doc_where(d, "f_string", &line, &col));
    assert_false(sharp_config_doc_where(d, "maxCount", &line, &col));

    sharp_config_error_t err;
    sharp_config_doc_error(d, "r_inner[1].value", &err, "must be %s", "odd");
    assert_string_equal(err.msg, "t.yaml:7:5: r_inner[1].value: must be odd");
    sharp_config_doc_error(d, "f_string", &err, "is required");
    assert_string_equal(err.msg, "t.yaml: f_string: is required");
    assert_string_equal(sharp_config_doc_source(d), "t.yaml");

    ProtobufCMessage *own = sharp_config_doc_take_message(d);
    assert_null(sharp_config_doc_message(d));
    assert_true(sharp_config_doc_where(d, "inner.name", &line, &col));
    sharp_config_doc_free(d);
    protobuf_c_message_free_unpacked(own, NULL);
}

/* Writes text to a new file under /tmp whose name ends in `suffix`. */
static void write_temp(char *path, size_t size, const char *suffix, const char *text)
{
    snprintf(path, size, "/tmp/sharp_mapper_XXXXXX%s", suffix);
    int fd = mkstemps(path, (int)strlen(suffix));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Parses a file expecting failure; the error must hold every `want`
 * substring, where "%s" in one stands for the path. */
static void expect_file_error(const char *path, const char *want, const char *want2)
{
    sharp_config_doc_t *d;
    sharp_config_error_t err = {{0}};
    assert_int_equal(sharp_config_parse_file(path, all_desc, &d, &err), -1);
    assert_null(d);
    char w[512];
    snprintf(w, sizeof w, want, path);
    if (!strstr(err.msg, w)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, w);
    if (want2 && !strstr(err.msg, want2)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, want2);
}

static void test_empty_and_file(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("");
    assert_int_equal(msg_of(d)->f_int32, 0);
    assert_true(sharp_config_doc_empty(d));
    sharp_config_doc_free(d);
    d = parse("# only a comment\n");
    assert_true(sharp_config_doc_empty(d));
    sharp_config_doc_free(d);
    d = parse("{}");
    assert_false(sharp_config_doc_empty(d));
    sharp_config_doc_free(d);

    char path[128];
    write_temp(path, sizeof path, ".json", "{\"fInt32\": 77, \"timeout\": \"1s\"}");
    sharp_config_error_t err = {{0}};
    assert_int_equal(sharp_config_parse_file(path, all_desc, &d, &err), 0);
    assert_int_equal(msg_of(d)->f_int32, 77);
    sharp_config_doc_free(d);
    unlink(path);

    /* YAML by name (any case), as Envoy's loadFromFile decides */
    static const char *const yaml_names[] = {".yaml", ".yml", ".YAML", ".Yml"};
    for (size_t i = 0; i < 4; i++) {
        write_temp(path, sizeof path, yaml_names[i], "f_int32: 1\nf_uint32: x\n");
        expect_file_error(path, "%s:2:11: f_uint32: expected an integer", NULL);
        unlink(path);
    }
    /* anything else is strict JSON: YAML text there is a JSON error */
    static const char *const json_names[] = {".json", ".conf", "", ".JSON"};
    for (size_t i = 0; i < 4; i++) {
        write_temp(path, sizeof path, json_names[i], "f_int32: 1\n");
        expect_file_error(path, "%s:1:1: JSON syntax error: unexpected character",
                          "is read as strict JSON, as Envoy does");
        unlink(path);
    }
    write_temp(path, sizeof path, ".json", "");
    expect_file_error(path, "%s:1:1: JSON syntax error: unexpected end of input", NULL);
    unlink(path);
    write_temp(path, sizeof path, ".pb", "x");
    expect_file_error(path, "%s: binary (.pb) and text (.pb_text) protobuf config files are not supported", NULL);
    unlink(path);

    expect_file_error("/nonexistent/x.yaml", "/nonexistent/x.yaml: no such file", NULL);
    expect_file_error("/tmp", "/tmp: is a directory", NULL);
}

/* JSON files: protobuf's JSON lexer rules, each mistake at its own place */
static void test_strict_json(void **state)
{
    (void)state;
    static const struct { const char *text, *want; } bad[] = {
        {"{\n  \"f_int32\": 1, // one\n  \"f_uint32\": 2\n}", "t.json:2:17: JSON syntax error: comments are not allowed"},
        {"/* header */\n{}", "t.json:1:1: JSON syntax error: comments are not allowed"},
        {"{\"f_int32\": 1,\n}", "t.json:2:1: JSON syntax error: trailing comma before '}'"},
        {"{\"r_int32\": [1, 2, ]}", "t.json:1:20: JSON syntax error: trailing comma before ']'"},
        {"{f_int32: 1}", "t.json:1:2: JSON syntax error: expected a quoted key"},
        {"{\"f_int32\" 1}", "t.json:1:12: JSON syntax error: expected ':' after the key"},
        {"{\"f_int32\": 1 \"f_uint32\": 2}", "t.json:1:15: JSON syntax error: expected ',' or '}'"},
        {"{\"f_int32\": 01}", "t.json:1:13: JSON syntax error: number cannot have extraneous leading zero"},
        {"{\"f_double\": 1.}", "t.json:1:14: JSON syntax error: number cannot have trailing period"},
        {"{\"f_string\": \"a\\qb\"}", "t.json:1:17: JSON syntax error: invalid escape"},
        {"{\"f_string\": \"abc}", "unterminated string"},
        {"{\"f_int32\": 1}\n{}", "t.json:2:1: JSON syntax error: extraneous characters"},
        {"{\"f_bool\": True}", "t.json:1:12: JSON syntax error: unexpected character"},
        {"{\"f_int32\": 1", "unexpected end of input: missing '}'"},
        {"{\"f_string\": \"\xc3\xa9\xc3\xa9\", x}", "t.json:1:20: JSON syntax error: expected a quoted key"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sharp_config_error_t err = {{0}};
        sharp_config_doc_t *d = sharp_config_parse_json(bad[i].text, strlen(bad[i].text), "t.json", all_desc, &err);
        if (d) fail_msg("<<%s>> should fail", bad[i].text);
        if (!strstr(err.msg, bad[i].want)) fail_msg("error \"%s\" lacks \"%s\"", err.msg, bad[i].want);
    }
    /* legacy single quotes, a byte order mark, and semantic errors keep their positions */
    const char *ok = "\xEF\xBB\xBF{'f_string': 'x', \"r_int32\": [], \"inner\": {}}";
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse_json(ok, strlen(ok), "t.json", all_desc, &err);
    if (!d) fail_msg("%s", err.msg);
    assert_string_equal(msg_of(d)->f_string, "x");
    sharp_config_doc_free(d);
    const char *sem = "{\n  \"inner\": {\n    \"nme\": 1\n  }\n}";
    assert_null(sharp_config_parse_json(sem, strlen(sem), "t.json", all_desc, &err));
    assert_string_equal(err.msg, "t.json:3:5: inner.nme: unknown field \"nme\" in sharp.test.v1.Inner");
    /* YAML input in JSON form gets the JSON checker's account of a syntax
     * error rather than libyaml's */
    const char *y = "{\n  \"f_int32\": 1, // one\n  \"f_uint32\": 2\n}\n";
    assert_null(sharp_config_parse(y, strlen(y), "t.yaml", all_desc, &err));
    if (!strstr(err.msg, "t.yaml:2:17: JSON syntax error: comments are not allowed in JSON (the text is in JSON form)"))
        fail_msg("%s", err.msg);
}

/* ---- registry and JSON output ------------------------------------------------------------ */

static void test_registry(void **state)
{
    (void)state;
    const char *u = "type.googleapis.com/sharp.test.v1.Inner";
    assert_ptr_equal(sharp_type_registry_find(u, strlen(u)), &sharp__test__v1__inner__descriptor);
    u = "a/b/c/sharp.test.v1.All";
    assert_ptr_equal(sharp_type_registry_find(u, strlen(u)), &sharp__test__v1__all__descriptor);
    u = "sharp.test.v1.All";
    assert_null(sharp_type_registry_find(u, strlen(u)));
    u = "type.googleapis.com/";
    assert_null(sharp_type_registry_find(u, strlen(u)));
    u = "type.googleapis.com/sharp.test.v1.Inner.Extra";
    assert_null(sharp_type_registry_find(u, strlen(u)));
    /* length-limited: only the first len bytes count */
    u = "type.googleapis.com/sharp.test.v1.Innerxyz";
    assert_ptr_equal(sharp_type_registry_find(u, strlen(u) - 3), &sharp__test__v1__inner__descriptor);
}

static void test_to_json(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int32: -1\nf_int64: 5\nf_uint64: 6\nf_float: 0.1\nf_double: NaN\n"
                                  "f_bool: false\nf_string: \"a\\\"b\"\nf_bytes: AQI\ncolor: RED\n"
                                  "r_color: [BLUE, 9]\nlabels: {x: 'y'}\nby_num: {3: three}\n"
                                  "timeout: 1.5s\nmax_count: 0\ni64_w: 7\nchoice_num: 0\n"
                                  "when: 2024-01-02T03:04:05.5Z\n"
                                  "meta: {k: [1, 'a', null, true, {}]}\n"
                                  "typed: {'@type': type.googleapis.com/sharp.test.v1.Inner, name: 'n', value: 2}\n"
                                  "r_any: [{'@type': type.googleapis.com/google.protobuf.Duration, value: -0.001s}]\n");
    char *js = to_json(sharp_config_doc_message(d));
    assert_string_equal(js,
                        "{\"f_int32\":-1,\"f_int64\":\"5\",\"f_uint64\":\"6\",\"f_float\":0.1,"
                        "\"f_double\":\"NaN\",\"f_string\":\"a\\\"b\",\"f_bytes\":\"AQI=\",\"color\":\"RED\","
                        "\"labels\":{\"x\":\"y\"},\"choice_num\":0,\"timeout\":\"1.500s\","
                        "\"typed\":{\"@type\":\"type.googleapis.com/sharp.test.v1.Inner\",\"name\":\"n\",\"value\":2},"
                        "\"max_count\":0,\"meta\":{\"k\":[1,\"a\",null,true,{}]},"
                        "\"when\":\"2024-01-02T03:04:05.500Z\",\"r_color\":[\"BLUE\",9],\"by_num\":{\"3\":\"three\"},"
                        "\"r_any\":[{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"-0.001s\"}],"
                        "\"i64_w\":\"7\"}");
    free(js);
    sharp_config_doc_free(d);

    /* an empty message prints as {} and pretty output indents */
    All empty = SHARP__TEST__V1__ALL__INIT;
    js = to_json(&empty.base);
    assert_string_equal(js, "{}");
    free(js);
    Inner in = SHARP__TEST__V1__INNER__INIT;
    in.name = "p";
    in.value = 1;
    sharp_sbuf_t b = {0};
    sharp_config_to_json_pretty(&in.base, &b);
    assert_string_equal(sharp_sbuf_cstr(&b), "{\n  \"name\": \"p\",\n  \"value\": 1\n}\n");
    sharp_sbuf_free(&b);

    /* an Any whose type is not registered keeps its bytes */
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/unknown.Type";
    any.value.data = (uint8_t *)"\x08\x01";
    any.value.len = 2;
    js = to_json(&any.base);
    assert_string_equal(js, "{\"@type\":\"type.googleapis.com/unknown.Type\",\"value\":\"CAE=\"}");
    free(js);
}

/* JSON output parses back to a message with the same wire bytes. */
static void test_json_round_trip(void **state)
{
    (void)state;
    sharp_config_doc_t *d = parse("f_int64: -9223372036854775808\nf_uint64: 18446744073709551615\n"
                                  "f_float: 3.4028235e38\nf_double: 0.1\nf_bytes: '//79'\ncolor: 2\n"
                                  "inner: {name: i}\nr_string: [a, 'b c', '']\n"
                                  "inners: {k: {value: 3}}\nby_bool: {false: 1}\n"
                                  "timeout: -1.000340012s\nenabled: true\ndbl_w: -0.5\n"
                                  "typed:\n"
                                  "  '@type': type.googleapis.com/sharp.test.v1.All\n"
                                  "  timeout: 2s\n"
                                  "  typed: {'@type': type.googleapis.com/google.protobuf.Struct, value: {a: [1]}}\n"
                                  "  choice_inner: {}\n"
                                  "value: {x: 'y'}\nlist: [1, [2]]\nempty: {}\n");
    ProtobufCMessage *m1 = sharp_config_doc_message(d);
    char *js = to_json(m1);
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d2 = sharp_config_parse(js, strlen(js), "dump.json", all_desc, &err);
    if (!d2) fail_msg("re-parse of %s failed: %s", js, err.msg);
    ProtobufCMessage *m2 = sharp_config_doc_message(d2);
    size_t n1 = protobuf_c_message_get_packed_size(m1), n2 = protobuf_c_message_get_packed_size(m2);
    assert_int_equal(n1, n2);
    uint8_t *b1 = malloc(n1), *b2 = malloc(n2);
    protobuf_c_message_pack(m1, b1);
    protobuf_c_message_pack(m2, b2);
    assert_memory_equal(b1, b2, n1);
    char *js2 = to_json(m2);
    assert_string_equal(js, js2);
    assert_non_null(strstr(js, "\"timeout\":\"-1.000340012s\""));
    assert_non_null(strstr(js, "\"typed\":{\"@type\":\"type.googleapis.com/sharp.test.v1.All\",\"choice_inner\":{},"
                               "\"timeout\":\"2s\",\"typed\":{\"@type\":\"type.googleapis.com/google.protobuf.Struct\","
                               "\"value\":{\"a\":[1]}}}"));
    free(b1);
    free(b2);
    free(js);
    free(js2);
    sharp_config_doc_free(d2);
    sharp_config_doc_free(d);
}

/* Every kind of error midway through a big message must free what was built. */
static void test_errors_free_partial_work(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "r_string: [a, b]\nr_inner: [{name: x}, {value: bad}]\n",
        "labels: {a: b}\ninners: {x: {name: y}, z: {nope: 1}}\n",
        "choice_name: abc\nchoice_inner: {name: x}\n",
        "meta: {a: [1, {b: 2}], c: {d: [x, {e: [f]}]}}\nf_int32: nope\n",
        "typed: {'@type': type.googleapis.com/sharp.test.v1.All, r_any: [{'@type': type.googleapis.com/sharp.test.v1.Inner, name: x}, {'@type': y/z}]}\n",
        "r_bytes: [AQI, AQI, '@@']\n",
        "child: {child: {child: {r_inner: [{name: a}], labels: {a: b}, f_bool: maybe}}}\n",
        "value: {a: [1, 2, {b: c}]}\nlist: [1, 2]\nempty: {x: 1}\n",
        "children: [{r_color: [RED, PINK]}]\n",
        "by_num: {1: a, 2: b, x: c}\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) expect_error(cases[i], "t.yaml:", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_proto_names),
        cmocka_unit_test(test_json_names),
        cmocka_unit_test(test_number_forms),
        cmocka_unit_test(test_integer_errors),
        cmocka_unit_test(test_strings_need_quotes_for_numbers_and_bools),
        cmocka_unit_test(test_bool_and_bytes),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_null_handling),
        cmocka_unit_test(test_nested_and_repeated),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_oneof),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_timestamp),
        cmocka_unit_test(test_wrappers),
        cmocka_unit_test(test_struct_value_list),
        cmocka_unit_test(test_any),
        cmocka_unit_test(test_any_errors),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_aliases_and_merge),
        cmocka_unit_test(test_alias_bomb),
        cmocka_unit_test(test_json_input),
        cmocka_unit_test(test_json_direct_load),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_empty_and_file),
        cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_to_json),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_errors_free_partial_work),
    };
    return cmocka_run_group_tests(tests, setup_registry, teardown_registry);
}
