/* test_header_to_metadata.c: the header-to-metadata filter's rules
 * (filters/header_to_metadata/rules.c, Envoy's HeaderToMetadataFilter) and
 * the stream's dynamic metadata they fill (proxy/http/metadata.c): Envoy's
 * Base64::decodeWithoutPadding, absl::SimpleAtod for NUMBER, a serialized
 * google.protobuf.Value for PROTOBUF_VALUE (with protobuf's nesting
 * limit), the value length limit, present/missing/remove/cookie/regex
 * rewrite with their counters, and the JSON Envoy's access log writes
 * (std::to_chars numbers, sorted keys). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "filters/header_to_metadata/rules.h"
#include "http/metadata.h"
#include "safe_regex.h"

#include "google/protobuf/struct.pb-c.h"

static char *b64(const char *in, bool *ok)
{
    static sharp_sbuf_t b;
    sharp_sbuf_reset(&b);
    *ok = sharp_sbuf_base64_decode(&b, in, strlen(in));
    return *ok ? sharp_strndup(b.data, b.len) : NULL;
}

static void base64_as_envoy(void **state)
{
    (void)state;
    bool ok;
    char *s;
    s = b64("Zm9v", &ok);
    assert_true(ok);
    assert_string_equal(s, "foo");
    free(s);
    s = b64("Zm9vYg", &ok); /* no padding */
    assert_true(ok);
    assert_string_equal(s, "foob");
    free(s);
    s = b64("Zm9vYg==", &ok);
    assert_true(ok);
    assert_string_equal(s, "foob");
    free(s);
    s = b64("Zm9vYmE=", &ok);
    assert_true(ok);
    assert_string_equal(s, "fooba");
    free(s);
    const char *bad[] = {"", "=", "==", "Zm9v!", "Zm9vY", "Zm9vYh", "Zm-_", "Zm9v===", "Zm 9v"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = b64(bad[i], &ok);
        assert_false(ok);
        assert_null(s);
    }
}

static void number_value(const char *in, bool ok, double want)
{
    sharp_md_value_t v;
    sharp_h2m_result_t r =
        sharp_h2m_make_value(in, strlen(in), SHARP_H2M_NUMBER, SHARP_H2M_ENCODE_NONE, &v);
    if (!ok) {
        assert_int_equal(r, SHARP_H2M_BAD_VALUE);
        return;
    }
    assert_int_equal(r, SHARP_H2M_ADDED);
    assert_int_equal(v.kind, SHARP_MD_NUMBER);
    assert_true(v.number == want);
    sharp_md_value_clear(&v);
}

static void numbers_as_simple_atod(void **state)
{
    (void)state;
    number_value("1", true, 1);
    number_value(" 2.5\t", true, 2.5);
    number_value("+3", true, 3);
    number_value("-7e2", true, -700);
    number_value(".5", true, 0.5);
    number_value("+-3", false, 0);
    number_value("0x10", false, 0);
    number_value("abc", false, 0);
    number_value("1e", false, 0);
    number_value("1 2", false, 0);
    number_value("--1", false, 0);
}

static char *json(const sharp_md_value_t *v)
{
    sharp_sbuf_t b = {0};
    sharp_md_value_json(v, &b);
    char *s = sharp_strndup(b.data, b.len);
    sharp_sbuf_free(&b);
    return s;
}

static void number_json(double d, const char *want)
{
    sharp_sbuf_t b = {0};
    sharp_md_number(d, &b);
    assert_string_equal(sharp_sbuf_cstr(&b), want);
    sharp_sbuf_free(&b);
}

static void numbers_as_to_chars(void **state)
{
    (void)state;
    number_json(1, "1");
    number_json(1.5, "1.5");
    number_json(100, "100");
    number_json(1e6, "1e+06");
    number_json(123456789, "123456789");
    number_json(0.001, "0.001");
    number_json(0.0001, "1e-04");
    number_json(0.1, "0.1");
    number_json(-2.25, "-2.25");
    number_json(1e21, "1e+21");
    number_json(1.0 / 3, "0.3333333333333333");
    number_json(0.0 / 0.0, "null");
}

/* A serialized google.protobuf.Value {"b": true, "a": "x", "l": [1, null]}. */
static uint8_t *pack_struct(size_t *n)
{
    Google__Protobuf__Value sv = GOOGLE__PROTOBUF__VALUE__INIT, a = GOOGLE__PROTOBUF__VALUE__INIT,
                            b = GOOGLE__PROTOBUF__VALUE__INIT, l = GOOGLE__PROTOBUF__VALUE__INIT,
                            one = GOOGLE__PROTOBUF__VALUE__INIT,
                            nul = GOOGLE__PROTOBUF__VALUE__INIT;
    Google__Protobuf__Struct st = GOOGLE__PROTOBUF__STRUCT__INIT;
    Google__Protobuf__ListValue lv = GOOGLE__PROTOBUF__LIST_VALUE__INIT;
    Google__Protobuf__Struct__FieldsEntry e[3] = {GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                                  GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT,
                                                  GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT};
    Google__Protobuf__Struct__FieldsEntry *ep[3] = {&e[0], &e[1], &e[2]};
    Google__Protobuf__Value *items[2] = {&one, &nul};
    a.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    a.string_value = "x";
    b.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
    b.bool_value = true;
    one.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    one.number_value = 1;
    nul.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
    lv.n_values = 2;
    lv.values = items;
    l.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
    l.list_value = &lv;
    e[0].key = "b";
    e[0].value = &b;
    e[1].key = "a";
    e[1].value = &a;
    e[2].key = "l";
    e[2].value = &l;
    st.n_fields = 3;
    st.fields = ep;
    sv.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
    sv.struct_value = &st;
    *n = google__protobuf__value__get_packed_size(&sv);
    uint8_t *p = malloc(*n);
    google__protobuf__value__pack(&sv, p);
    return p;
}

static size_t put_varint(uint8_t *p, size_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* A Value of `depth` lists nested in each other around true. */
static uint8_t *pack_nested(int depth, size_t *n)
{
    size_t cap = 16 + (size_t)depth * 12, len = 2;
    uint8_t *a = malloc(cap), *b = malloc(cap);
    a[0] = 0x20; /* Value.bool_value */
    a[1] = 0x01;
    for (int i = 0; i < depth; i++) {
        uint8_t lv[16];
        size_t k = 0;
        lv[k++] = 0x0a; /* ListValue.values */
        k += put_varint(lv + k, len);
        size_t m = 0;
        b[m++] = 0x32; /* Value.list_value */
        m += put_varint(b + m, k + len);
        memcpy(b + m, lv, k);
        m += k;
        memcpy(b + m, a, len);
        len = m + len;
        uint8_t *t = a;
        a = b;
        b = t;
    }
    free(b);
    *n = len;
    return a;
}

static void protobuf_values(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = pack_struct(&n);
    sharp_md_value_t v;
    assert_int_equal(sharp_h2m_make_value((const char *)p, n, SHARP_H2M_PROTOBUF_VALUE,
                                          SHARP_H2M_ENCODE_NONE, &v),
                     SHARP_H2M_ADDED);
    char *s = json(&v);
    assert_string_equal(s, "{\"a\":\"x\",\"b\":true,\"l\":[1,null]}");
    free(s);
    sharp_md_value_clear(&v);
    free(p);
    /* not a Value: a truncated length */
    assert_int_equal(
        sharp_h2m_make_value("\x2a\x05", 2, SHARP_H2M_PROTOBUF_VALUE, SHARP_H2M_ENCODE_NONE, &v),
        SHARP_H2M_BAD_VALUE);
    /* lists nested in lists: 40 deep parses, 60 deep (120 messages) is
     * over protobuf's limit of 100 and refused without recursing further */
    size_t dl;
    uint8_t *d = pack_nested(40, &dl);
    assert_int_equal(sharp_h2m_make_value((const char *)d, dl, SHARP_H2M_PROTOBUF_VALUE,
                                          SHARP_H2M_ENCODE_NONE, &v),
                     SHARP_H2M_ADDED);
    assert_int_equal(v.kind, SHARP_MD_LIST);
    sharp_md_value_clear(&v);
    free(d);
    d = pack_nested(60, &dl);
    assert_int_equal(sharp_h2m_make_value((const char *)d, dl, SHARP_H2M_PROTOBUF_VALUE,
                                          SHARP_H2M_ENCODE_NONE, &v),
                     SHARP_H2M_BAD_VALUE);
    free(d);
    d = pack_nested(5000, &dl);
    assert_int_equal(sharp_h2m_make_value((const char *)d, dl, SHARP_H2M_PROTOBUF_VALUE,
                                          SHARP_H2M_ENCODE_NONE, &v),
                     SHARP_H2M_TOO_LONG);
    free(d);
    /* base64 of the protobuf value */
    p = pack_struct(&n);
    sharp_sbuf_t enc = {0};
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        for (size_t k = 0; k < 4 && k <= (n - i) * 4 / 3; k++) {
            char c = tbl[(w >> (18 - 6 * k)) & 63];
            sharp_sbuf_append(&enc, &c, 1);
        }
    }
    assert_int_equal(sharp_h2m_make_value(enc.data, enc.len, SHARP_H2M_PROTOBUF_VALUE,
                                          SHARP_H2M_ENCODE_BASE64, &v),
                     SHARP_H2M_ADDED);
    assert_int_equal(v.kind, SHARP_MD_STRUCT);
    sharp_md_value_clear(&v);
    sharp_sbuf_free(&enc);
    free(p);
}

static void value_length_limit(void **state)
{
    (void)state;
    char *big = malloc(SHARP_H2M_MAX_VALUE_LEN);
    memset(big, 'a', SHARP_H2M_MAX_VALUE_LEN);
    sharp_md_value_t v;
    assert_int_equal(sharp_h2m_make_value(big, SHARP_H2M_MAX_VALUE_LEN, SHARP_H2M_STRING, 0, &v),
                     SHARP_H2M_TOO_LONG);
    assert_int_equal(
        sharp_h2m_make_value(big, SHARP_H2M_MAX_VALUE_LEN - 1, SHARP_H2M_STRING, 0, &v),
        SHARP_H2M_ADDED);
    assert_int_equal(v.len, SHARP_H2M_MAX_VALUE_LEN - 1);
    sharp_md_value_clear(&v);
    assert_int_equal(sharp_h2m_make_value("!!", 2, SHARP_H2M_STRING, SHARP_H2M_ENCODE_BASE64, &v),
                     SHARP_H2M_BASE64_FAILED);
    free(big);
}

static void kv(sharp_h2m_kv_t *k, const char *ns, const char *key, const char *value, int type)
{
    k->set = true;
    k->ns = (char *)(ns ? ns : SHARP_H2M_NAMESPACE);
    k->key = (char *)key;
    k->value = (char *)(value ? value : "");
    k->type = type;
}

static const char *md_json(const sharp_dynamic_metadata_t *md, const char *ns)
{
    static char buf[512];
    const sharp_md_value_t *st = sharp_dynamic_metadata_ns(md, ns, strlen(ns));
    if (!st) return "(none)";
    char *s = json(st);
    snprintf(buf, sizeof buf, "%s", s);
    free(s);
    return buf;
}

static void rules_present_missing_remove(void **state)
{
    (void)state;
    sharp_h2m_rule_t r[4];
    memset(r, 0, sizeof r);
    r[0].header = "x-version";
    kv(&r[0].present, "envoy.lb", "version", NULL, SHARP_H2M_STRING);
    kv(&r[0].missing, "envoy.lb", "default", "true", SHARP_H2M_STRING);
    r[1].header = "x-num";
    r[1].remove = true;
    kv(&r[1].present, NULL, "num", NULL, SHARP_H2M_NUMBER);
    r[2].cookie = "session";
    kv(&r[2].present, "envoy.lb", "session", NULL, SHARP_H2M_STRING);
    r[3].header = ":path";
    char err[256];
    r[3].re = sharp_regex_compile("^/(cluster[\\d\\w-]+)/?.*$", NULL, err, sizeof err);
    assert_non_null(r[3].re);
    r[3].subst = "\\1";
    kv(&r[3].present, "envoy.lb", "cluster", NULL, SHARP_H2M_STRING);
    for (int i = 0; i < 4; i++) sharp_h2m_rule_lengths(&r[i]);
    assert_int_equal(r[2].name_len, 7);
    assert_int_equal(r[0].missing.value_len, 4);

    sharp_headers_t h;
    sharp_headers_init(&h);
    sharp_headers_add_cstr(&h, ":path", "/cluster-a1/x");
    sharp_headers_add_cstr(&h, "x-version", "1.0");
    sharp_headers_add_cstr(&h, "x-version", "2.0");
    sharp_headers_add_cstr(&h, "x-num", " 42 ");
    sharp_headers_add_cstr(&h, "cookie", "a=b; session=\"s1\"");
    sharp_dynamic_metadata_t *md = NULL;
    sharp_h2m_counts_t c = {0};
    sharp_h2m_apply(r, 4, &h, &md, &c);
    assert_string_equal(md_json(md, "envoy.lb"),
                        "{\"cluster\":\"cluster-a1\",\"session\":\"s1\",\"version\":\"1.0,2.0\"}");
    assert_string_equal(md_json(md, SHARP_H2M_NAMESPACE), "{\"num\":42}");
    sharp_str_t v;
    assert_false(sharp_headers_get_cstr(&h, "x-num", &v));
    assert_true(sharp_headers_get_cstr(&h, "x-version", &v));
    assert_int_equal(c.rules_processed, 4);
    assert_int_equal(c.metadata_added, 4);
    assert_int_equal(c.header_not_found, 0);
    sharp_dynamic_metadata_free(md);

    /* missing: on_header_missing's value; a rewrite that leaves nothing */
    sharp_headers_clear(&h);
    sharp_headers_add_cstr(&h, ":path", "/cluster-");
    sharp_re2_free(r[3].re);
    r[3].re = sharp_regex_compile("^.*$", NULL, err, sizeof err);
    r[3].subst = "";
    md = NULL;
    memset(&c, 0, sizeof c);
    sharp_h2m_apply(r, 4, &h, &md, &c);
    assert_string_equal(md_json(md, "envoy.lb"), "{\"default\":\"true\"}");
    assert_int_equal(c.header_not_found, 1);
    assert_int_equal(c.regex_substitution_failed, 1);
    assert_int_equal(c.metadata_added, 1);
    sharp_dynamic_metadata_free(md);
    sharp_re2_free(r[3].re);
    sharp_headers_free(&h);
}

static void metadata_merge(void **state)
{
    (void)state;
    sharp_dynamic_metadata_t *md = NULL;
    sharp_md_value_t v;
    sharp_md_value_string(&v, "a", 1);
    sharp_dynamic_metadata_set(&md, "ns", 2, "k", 1, &v);
    sharp_md_value_string(&v, "b", 1);
    sharp_dynamic_metadata_set(&md, "ns", 2, "k", 1, &v); /* replaces */
    v = (sharp_md_value_t){.kind = SHARP_MD_NUMBER, .number = 2};
    sharp_dynamic_metadata_set(&md, "ns", 2, "j", 1, &v);
    assert_string_equal(md_json(md, "ns"), "{\"j\":2,\"k\":\"b\"}");
    assert_string_equal(md_json(md, "other"), "(none)");
    sharp_md_value_string(&v, "q\"\n", 3);
    sharp_dynamic_metadata_set(&md, "other", 5, "s", 1, &v);
    assert_string_equal(md_json(md, "other"), "{\"s\":\"q\\\"\\n\"}");
    sharp_dynamic_metadata_free(md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base64_as_envoy),     cmocka_unit_test(numbers_as_simple_atod),
        cmocka_unit_test(numbers_as_to_chars), cmocka_unit_test(protobuf_values),
        cmocka_unit_test(value_length_limit),  cmocka_unit_test(rules_present_missing_remove),
        cmocka_unit_test(metadata_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
