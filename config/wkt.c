/* wkt.c: the google.protobuf well-known types, recognized by full name and
 * handled through their descriptors only: Duration and Timestamp strings,
 * FieldMask strings, bare wrapper values, Struct/Value/ListValue from any
 * YAML, and Any with "@type" packed from the registry. */
#include "mapper_internal.h"
#include "config/support.h"

#include "google/protobuf/duration.pb-c.h"

#include <stdio.h>

#define MAX_DURATION_SECONDS 315576000000ll
#define MIN_TIMESTAMP_SECONDS (-62135596800ll) /* 0001-01-01T00:00:00Z */
#define MAX_TIMESTAMP_SECONDS 253402300799ll   /* 9999-12-31T23:59:59Z */

static const struct {
    const char *name;
    cfg_wkt_t kind;
} wkt_names[] = {
    {"google.protobuf.Duration", WKT_DURATION},       {"google.protobuf.Timestamp", WKT_TIMESTAMP},
    {"google.protobuf.FieldMask", WKT_FIELD_MASK},    {"google.protobuf.Struct", WKT_STRUCT},
    {"google.protobuf.Value", WKT_VALUE},             {"google.protobuf.ListValue", WKT_LIST_VALUE},
    {"google.protobuf.Any", WKT_ANY},                 {"google.protobuf.Empty", WKT_EMPTY},
    {"google.protobuf.DoubleValue", WKT_WRAPPER},     {"google.protobuf.FloatValue", WKT_WRAPPER},
    {"google.protobuf.Int64Value", WKT_WRAPPER},      {"google.protobuf.UInt64Value", WKT_WRAPPER},
    {"google.protobuf.Int32Value", WKT_WRAPPER},      {"google.protobuf.UInt32Value", WKT_WRAPPER},
    {"google.protobuf.BoolValue", WKT_WRAPPER},       {"google.protobuf.StringValue", WKT_WRAPPER},
    {"google.protobuf.BytesValue", WKT_WRAPPER},
};

cfg_wkt_t sharp_cfg_wkt_kind(const ProtobufCMessageDescriptor *d)
{
    if (!d || strncmp(d->name, "google.protobuf.", 16)) return WKT_NONE;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(wkt_names); i++)
        if (!strcmp(d->name, wkt_names[i].name)) return wkt_names[i].kind;
    return WKT_NONE;
}

bool sharp_cfg_wkt_special_in_any(cfg_wkt_t k)
{
    return k != WKT_NONE && k != WKT_EMPTY;
}

/* Sets an int64 or int32 member by name (Duration/Timestamp seconds, nanos). */
static void set_int(ProtobufCMessage *m, const char *name, int64_t v)
{
    const ProtobufCFieldDescriptor *f = sharp_cfg_field(m->descriptor, name);
    if (!f) return;
    if (f->type == PROTOBUF_C_TYPE_INT64 || f->type == PROTOBUF_C_TYPE_SINT64 ||
        f->type == PROTOBUF_C_TYPE_SFIXED64)
        *(int64_t *)sharp_cfg_member(m, f) = v;
    else
        *(int32_t *)sharp_cfg_member(m, f) = (int32_t)v;
    sharp_cfg_mark_present(m, f);
}

/* Up to 9 fractional digits after a '.', scaled to nanoseconds; protobuf's
 * TakeNanosAndAdvance. Advances *i; false when the fraction is malformed. */
static bool take_nanos(const char *s, size_t len, size_t *i, int32_t *nanos)
{
    int32_t n = 0;
    if (*i < len && s[*i] == '.') {
        size_t fs = ++*i;
        while (*i < len && s[*i] >= '0' && s[*i] <= '9') (*i)++;
        size_t digits = *i - fs;
        if (digits == 0 || digits > 9) return false;
        for (size_t k = fs; k < *i; k++) n = n * 10 + (s[k] - '0');
        for (size_t k = digits; k < 9; k++) n *= 10;
    }
    *nanos = n;
    return true;
}

/* A Duration string under protobuf's JSON rules (ParseDuration): an integer
 * part of digits and '-', seconds within +-315,576,000,000, up to 9
 * fractional digits, then exactly "s"; a leading '-' makes the nanos
 * negative too ("-0.5s"). Returns NULL, or what is wrong. */
static const char *parse_duration(const char *s, size_t len, int64_t *sec, int32_t *nanos)
{
    size_t i = 0;
    while (i < len && ((s[i] >= '0' && s[i] <= '9') || s[i] == '-')) i++;
    if (i == 0) return "a duration must start with an integer";
    bool neg = s[0] == '-';
    size_t d = neg ? 1 : 0;
    if (d == i) return "bad seconds";
    int64_t v = 0;
    for (size_t k = d; k < i; k++) {
        if (s[k] == '-') return "bad seconds";
        if (v > MAX_DURATION_SECONDS) continue; /* keep scanning; range is reported below */
        v = v * 10 + (s[k] - '0');
    }
    if (v > MAX_DURATION_SECONDS) return "out of range (protobuf's limit is +-315576000000s, about 10000 years)";
    int32_t n;
    if (!take_nanos(s, len, &i, &n)) return "bad fraction (1 to 9 digits after the '.')";
    if (i + 1 != len || s[i] != 's') return "a duration must end with a single 's' (seconds)";
    *sec = neg ? -v : v;
    *nanos = neg ? -n : n;
    return NULL;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* RFC 3339 as protobuf's JSON parser takes it: YYYY-MM-DDTHH:MM:SS
 * [.f{1,9}](Z|+HH:MM|-HH:MM) with an upper-case 'T' and 'Z'; the date must
 * exist and the instant lie within 0001-01-01T00:00:00Z ..
 * 9999-12-31T23:59:59.999999999Z (Timestamp's range). Returns NULL, or what
 * is wrong. */
static const char *parse_timestamp(const char *s, size_t len, int64_t *sec, int32_t *nanos)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, se, oh = 0, om = 0;
    if (len < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return "expected an RFC 3339 timestamp like \"2024-01-02T03:04:05Z\"";
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) || !digits(s + 11, 2, &h) ||
        !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
        return "expected an RFC 3339 timestamp like \"2024-01-02T03:04:05Z\"";
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || se > 59)
        return "no such date or time of day";
    size_t i = 19;
    int32_t n;
    if (!take_nanos(s, len, &i, &n)) return "bad fraction (1 to 9 digits after the '.')";
    int sign = 0;
    if (i + 1 == len && s[i] == 'Z') {
        sign = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':' &&
               digits(s + i + 1, 2, &oh) && digits(s + i + 4, 2, &om) && oh < 24 && om < 60) {
        sign = s[i] == '+' ? 1 : -1;
    } else {
        return "bad time zone: expected 'Z' or +HH:MM / -HH:MM";
    }
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    t -= sign * (int64_t)(oh * 3600 + om * 60);
    if (t < MIN_TIMESTAMP_SECONDS || t > MAX_TIMESTAMP_SECONDS)
        return "out of range (Timestamp holds 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z)";
    *sec = t;
    *nanos = n;
    return NULL;
}

/* FieldMask JSON form: "fooBar,baz.quxQuux" -> paths foo_bar, baz.qux_quux. */
static int map_field_mask(cfg_ctx_t *c, yaml_node_t *node, const cfg_scalar_t *sc, ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f = sharp_cfg_field(m->descriptor, "paths");
    if (!f || f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_STRING)
        return sharp_cfg_fail(c, node, "google.protobuf.FieldMask has no repeated string \"paths\"");
    if (sc->len == 0) return 0;
    size_t count = 1;
    for (size_t i = 0; i < sc->len; i++) count += sc->s[i] == ',';
    char **arr = sharp_calloc(count, sizeof *arr);
    *(char ***)sharp_cfg_member(m, f) = arr;
    size_t *n = (size_t *)((char *)m + f->quantifier_offset);
    for (size_t i = 0, start = 0; i <= sc->len; i++) {
        if (i < sc->len && sc->s[i] != ',') continue;
        sharp_sbuf_t p = {0};
        sharp_sbuf_append(&p, "", 0);
        for (size_t k = start; k < i; k++) {
            char ch = sc->s[k];
            if (ch >= 'A' && ch <= 'Z') {
                sharp_sbuf_append(&p, "_", 1);
                ch = (char)(ch - 'A' + 'a');
            }
            sharp_sbuf_append(&p, &ch, 1);
        }
        arr[(*n)++] = p.data;
        start = i + 1;
    }
    return 0;
}

/* google.protobuf.Value from any node: null, bool, number, string, mapping
 * (struct_value) or list (list_value). */
static int map_value_wkt(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *m)
{
    cfg_scalar_t sc;
    const char *member;
    double num = 0;
    protobuf_c_boolean b = 0;
    bool bv;
    if (!sharp_cfg_scalar_of(node, &sc)) {
        member = node->type == YAML_MAPPING_NODE ? "struct_value" : "list_value";
    } else if (sc.null) {
        member = "null_value";
    } else if (!sc.quoted && sharp_cfg_bool_word(sc.s, sc.len, &bv)) {
        member = "bool_value";
        b = bv;
    } else if (!sc.quoted && sharp_cfg_parse_double(sc.s, sc.len, &num)) {
        member = "number_value";
    } else {
        member = "string_value";
    }
    const ProtobufCFieldDescriptor *f = sharp_cfg_field(m->descriptor, member);
    if (!f) return sharp_cfg_fail(c, node, "google.protobuf.Value has no field \"%s\"", member);
    void *slot = sharp_cfg_member(m, f);
    if (f->type == PROTOBUF_C_TYPE_BOOL) {
        *(protobuf_c_boolean *)slot = b;
    } else if (f->type == PROTOBUF_C_TYPE_DOUBLE) {
        *(double *)slot = num;
    } else if (f->type == PROTOBUF_C_TYPE_STRING) {
        *(char **)slot = sharp_strndup(sc.s, sc.len);
    } else if (f->type == PROTOBUF_C_TYPE_ENUM) {
        *(int *)slot = 0;
    } else if (sharp_cfg_map_value(c, node, f, slot) < 0) {
        return -1;
    }
    sharp_cfg_mark_present(m, f);
    return 0;
}

/* Struct from a mapping and ListValue from a list, via their map / repeated
 * member ("fields" / "values"). */
static int map_container(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *m, const char *member,
                         yaml_node_type_t want)
{
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc) && sc.null) return 0;
    if (node->type != want)
        return sharp_cfg_fail(c, node, "expected %s for %s, got %s",
                              want == YAML_MAPPING_NODE ? "a mapping" : "a list", m->descriptor->name,
                              sharp_cfg_node_kind(node));
    const ProtobufCFieldDescriptor *f = sharp_cfg_field(m->descriptor, member);
    if (!f) return sharp_cfg_fail(c, node, "%s has no field \"%s\"", m->descriptor->name, member);
    return sharp_cfg_map_field(c, node, m, f);
}

/* Ends the mapping of an Any: on success (rc 0) `inner` packed into its
 * value and its type URL set; `inner` freed either way. Returns rc. */
static int pack_any(ProtobufCMessage *any, const ProtobufCFieldDescriptor *uf, const ProtobufCFieldDescriptor *vf,
                    ProtobufCMessage *inner, const cfg_scalar_t *url, int rc)
{
    if (rc == 0) {
        size_t sz = protobuf_c_message_get_packed_size(inner);
        ProtobufCBinaryData *bd = sharp_cfg_member(any, vf);
        if (sz) {
            bd->data = sharp_calloc(1, sz);
            bd->len = protobuf_c_message_pack(inner, bd->data);
        }
        sharp_cfg_mark_present(any, vf);
        *(char **)sharp_cfg_member(any, uf) = sharp_strndup(url->s, url->len);
        sharp_cfg_mark_present(any, uf);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    return rc;
}

/* udpa.type.v1.TypedStruct / xds.type.v3.TypedStruct: an extension's
 * config as {type_url, value: a Struct with its fields}, which Envoy turns
 * into the message type_url names (translateOpaqueConfig) with the same
 * strict mapping as a typed config. */
static bool typed_struct_url(const char *s, size_t len)
{
    size_t slash = len;
    while (slash > 0 && s[slash - 1] != '/') slash--;
    const char *n = s + slash;
    size_t nl = len - slash;
    static const char *const names[] = {"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (nl == strlen(names[i]) && !memcmp(n, names[i], nl)) return true;
    return false;
}

static int map_typed_struct(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *any,
                            const ProtobufCFieldDescriptor *uf, const ProtobufCFieldDescriptor *vf,
                            yaml_node_t *value_node, yaml_node_t *extra)
{
    yaml_node_t *url_node = NULL;
    if (extra) {
        /* the one other member a TypedStruct has is type_url */
        cfg_pair_t *pairs;
        size_t np;
        if (sharp_cfg_pairs(c, node, &pairs, &np) < 0) return -1;
        for (size_t i = 0; i < np; i++) {
            cfg_scalar_t k;
            if (!sharp_cfg_scalar_of(pairs[i].key, &k)) continue;
            if ((k.len == 5 && !memcmp(k.s, "@type", 5)) || (k.len == 5 && !memcmp(k.s, "value", 5))) continue;
            if (k.len == 8 && !memcmp(k.s, "type_url", 8) && !url_node) {
                url_node = pairs[i].value;
                continue;
            }
            size_t old = c->path.len;
            sharp_sbuf_printf(&c->path, "%s%.*s", old ? "." : "", (int)k.len, k.s);
            int rc = sharp_cfg_fail(c, pairs[i].key, "unknown field \"%.*s\" in a TypedStruct (type_url, value)",
                                    (int)k.len, k.s);
            free(pairs);
            return rc;
        }
        free(pairs);
    }
    cfg_scalar_t url;
    if (!url_node || !sharp_cfg_scalar_of(url_node, &url) || url.null || !url.len)
        return sharp_cfg_fail(c, url_node ? url_node : node, "a TypedStruct needs its type_url");
    const ProtobufCMessageDescriptor *td = sharp_type_registry_find(url.s, url.len);
    if (!td) {
        const sharp_support_extension_t *x = sharp_support_extension(url.s, url.len);
        if (x) return sharp_cfg_fail_unsupported(c, url_node, "%s is not supported by SHARP (%s)", x->type, x->note);
        return sharp_cfg_fail(c, url_node, "unknown type URL \"%.*s\"", (int)url.len, url.s);
    }
    if (sharp_cfg_wkt_kind(td) != WKT_NONE)
        return sharp_cfg_fail(c, url_node, "a TypedStruct cannot hold %s", td->name);
    ProtobufCMessage *inner = sharp_cfg_new_message(td);
    int rc = 0;
    if (value_node) {
        size_t old = sharp_cfg_push_field(c, "value");
        const ProtobufCMessageDescriptor *old_msg = c->ctx_msg;
        const ProtobufCFieldDescriptor *old_field = c->ctx_field;
        c->ctx_msg = NULL; /* an extension's fields have no outer context */
        c->ctx_field = NULL;
        rc = sharp_cfg_map_message(c, value_node, inner);
        c->ctx_msg = old_msg;
        c->ctx_field = old_field;
        if (rc == 0) sharp_cfg_pop(c, old);
    }
    return pack_any(any, uf, vf, inner, &url, rc);
}

/* Any: {"@type": url, fields of that type...}, or {"@type": url, "value": x}
 * for well-known types; the message is built, packed into `value`, freed. */
static int map_any(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *any)
{
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc) && sc.null) return 0;
    if (node->type != YAML_MAPPING_NODE)
        return sharp_cfg_fail(c, node, "expected a mapping with \"@type\" for google.protobuf.Any, got %s",
                              sharp_cfg_node_kind(node));
    const ProtobufCFieldDescriptor *uf = sharp_cfg_field(any->descriptor, "type_url"),
                                   *vf = sharp_cfg_field(any->descriptor, "value");
    if (!uf || !vf || uf->type != PROTOBUF_C_TYPE_STRING || vf->type != PROTOBUF_C_TYPE_BYTES)
        return sharp_cfg_fail(c, node, "google.protobuf.Any lacks type_url/value fields");
    cfg_pair_t *pairs;
    size_t np;
    if (sharp_cfg_pairs(c, node, &pairs, &np) < 0) return -1;
    yaml_node_t *type_node = NULL, *value_node = NULL, *extra = NULL;
    for (size_t i = 0; i < np; i++) {
        cfg_scalar_t k;
        if (!sharp_cfg_scalar_of(pairs[i].key, &k)) continue;
        if (k.len == 5 && !memcmp(k.s, "@type", 5)) {
            if (!type_node) type_node = pairs[i].value;
        } else if (k.len == 5 && !memcmp(k.s, "value", 5)) {
            if (!value_node) value_node = pairs[i].value;
        } else if (!extra) {
            extra = pairs[i].key;
        }
    }
    free(pairs);
    if (!type_node) {
        if (!np) return 0;
        return sharp_cfg_fail(c, node, "missing \"@type\" in google.protobuf.Any");
    }
    cfg_scalar_t url;
    if (!sharp_cfg_scalar_of(type_node, &url) || url.null || !url.len)
        return sharp_cfg_fail(c, type_node, "\"@type\" must be a type URL string");
    if (typed_struct_url(url.s, url.len)) return map_typed_struct(c, node, any, uf, vf, value_node, extra);
    const ProtobufCMessageDescriptor *td = sharp_type_registry_find(url.s, url.len);
    if (!td) {
        const sharp_support_extension_t *x = sharp_support_extension(url.s, url.len);
        if (x)
            return sharp_cfg_fail_unsupported(c, type_node, "%s is not supported by SHARP (%s)", x->type, x->note);
        return sharp_cfg_fail(c, type_node, "unknown type URL \"%.*s\"", (int)url.len, url.s);
    }

    ProtobufCMessage *inner = sharp_cfg_new_message(td);
    int rc;
    cfg_wkt_t kind = sharp_cfg_wkt_kind(td);
    if (sharp_cfg_wkt_special_in_any(kind)) {
        if (extra) {
            size_t old = c->path.len;
            cfg_scalar_t k;
            sharp_cfg_scalar_of(extra, &k);
            sharp_sbuf_printf(&c->path, "%s%.*s", old ? "." : "", (int)k.len, k.s);
            rc = sharp_cfg_fail(c, extra, "unknown field \"%.*s\": an Any holding %s takes only "
                                "\"@type\" and \"value\"", (int)k.len, k.s, td->name);
        } else {
            size_t old = sharp_cfg_push_field(c, "value");
            sharp_cfg_note(c, value_node);
            rc = value_node ? sharp_cfg_map_message(c, value_node, inner) : 0;
            if (rc == 0) sharp_cfg_pop(c, old);
        }
    } else {
        const ProtobufCMessageDescriptor *old_msg = c->ctx_msg;
        const ProtobufCFieldDescriptor *old_field = c->ctx_field;
        c->ctx_msg = NULL; /* an extension's fields have no outer context */
        c->ctx_field = NULL;
        rc = sharp_cfg_map_fields(c, node, inner, "@type");
        c->ctx_msg = old_msg;
        c->ctx_field = old_field;
    }
    return pack_any(any, uf, vf, inner, &url, rc);
}

/* Dispatch by kind; returns 1 for shapes the generic mapping handles
 * (a Duration/Timestamp/FieldMask given as a mapping, Empty). */
int sharp_cfg_wkt_map(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg, cfg_wkt_t kind)
{
    cfg_scalar_t sc;
    bool scalar = sharp_cfg_scalar_of(node, &sc);
    switch (kind) {
    case WKT_DURATION:
    case WKT_TIMESTAMP: {
        if (!scalar || sc.null) return 1;
        int64_t s = 0;
        int32_t n = 0;
        const char *bad = kind == WKT_DURATION ? parse_duration(sc.s, sc.len, &s, &n)
                                               : parse_timestamp(sc.s, sc.len, &s, &n);
        if (bad)
            return sharp_cfg_fail(c, node, "%s \"%.*s\": %s",
                                  kind == WKT_DURATION ? "bad duration" : "bad timestamp", (int)sc.len, sc.s, bad);
        set_int(msg, "seconds", s);
        set_int(msg, "nanos", n);
        return 0;
    }
    case WKT_FIELD_MASK:
        if (!scalar || sc.null) return 1;
        return map_field_mask(c, node, &sc, msg);
    case WKT_WRAPPER: {
        if (!scalar)
            return sharp_cfg_fail(c, node, "expected a bare value for %s, got %s", msg->descriptor->name,
                                  sharp_cfg_node_kind(node));
        const ProtobufCFieldDescriptor *f = sharp_cfg_field(msg->descriptor, "value");
        if (!f) return 1;
        int rc = sharp_cfg_scalar_value(c, node, f, sharp_cfg_member(msg, f), false);
        if (rc > 0) sharp_cfg_mark_present(msg, f);
        return rc < 0 ? -1 : 0;
    }
    case WKT_STRUCT:
        return map_container(c, node, msg, "fields", YAML_MAPPING_NODE);
    case WKT_LIST_VALUE:
        return map_container(c, node, msg, "values", YAML_SEQUENCE_NODE);
    case WKT_VALUE:
        return map_value_wkt(c, node, msg);
    case WKT_ANY:
        return map_any(c, node, msg);
    case WKT_EMPTY:
    case WKT_NONE:
        break;
    }
    return 1;
}

/* "1.5s" with 0, 3, 6 or 9 fractional digits, sign from either part. */
void sharp_cfg_format_duration(sharp_sbuf_t *b, int64_t s, int32_t nanos)
{
    bool neg = s < 0 || nanos < 0;
    uint64_t us = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    uint32_t un = nanos < 0 ? (uint32_t)-(int64_t)nanos : (uint32_t)nanos;
    sharp_sbuf_printf(b, "%s%llu", neg ? "-" : "", (unsigned long long)us);
    if (un % 1000000000u == 0) {
        /* whole seconds */
    } else if (un % 1000000 == 0) {
        sharp_sbuf_printf(b, ".%03u", un / 1000000);
    } else if (un % 1000 == 0) {
        sharp_sbuf_printf(b, ".%06u", un / 1000);
    } else {
        sharp_sbuf_printf(b, ".%09u", un);
    }
    sharp_sbuf_append(b, "s", 1);
}

/* RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits; false outside
 * years 0001..9999 or with nanos out of range. */
bool sharp_cfg_format_timestamp(sharp_sbuf_t *b, int64_t s, int32_t nanos)
{
    if (nanos < 0 || nanos > 999999999 || s < -62135596800ll || s > 253402300799ll) return false;
    int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400, rem = s - days * 86400;
    /* civil date from days since 1970-01-01 */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153, d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    sharp_sbuf_printf(b, "%04lld-%02u-%02uT%02u:%02u:%02u", (long long)y, m, d, (unsigned)(rem / 3600),
                      (unsigned)(rem / 60 % 60), (unsigned)(rem % 60));
    if (nanos % 1000000000 == 0) {
    } else if (nanos % 1000000 == 0) {
        sharp_sbuf_printf(b, ".%03d", nanos / 1000000);
    } else if (nanos % 1000 == 0) {
        sharp_sbuf_printf(b, ".%06d", nanos / 1000);
    } else {
        sharp_sbuf_printf(b, ".%09d", nanos);
    }
    sharp_sbuf_append(b, "Z", 1);
    return true;
}

int sharp_duration_ms(const Google__Protobuf__Duration *d, uint64_t *ms, char *err, size_t errlen)
{
    /* Envoy prints the Duration's DebugString */
    if (d->seconds < 0 || d->nanos < 0) {
        snprintf(err, errlen, "Expected positive duration: seconds: %lld nanos: %d", (long long)d->seconds, d->nanos);
        return -1;
    }
    if (d->nanos > 999999999 || d->seconds > MAX_DURATION_SECONDS) {
        snprintf(err, errlen, "Duration out-of-range: seconds: %lld nanos: %d", (long long)d->seconds, d->nanos);
        return -1;
    }
    *ms = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
    return 0;
}
