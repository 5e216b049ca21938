/* scalar.c: converting YAML scalars into protobuf-c scalar field values
 * under the proto3 JSON rules: range-checked integers from numbers or
 * strings, floats with NaN/Infinity, strict booleans, base64 bytes, enums
 * by name or number. */
#include "mapper_internal.h"

#include <errno.h>
#include <strings.h>
#include <math.h>
#include <stdio.h>

static const char *type_name(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: return "int32";
    case PROTOBUF_C_TYPE_SINT32: return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
    case PROTOBUF_C_TYPE_INT64: return "int64";
    case PROTOBUF_C_TYPE_SINT64: return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32: return "uint32";
    case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
    case PROTOBUF_C_TYPE_UINT64: return "uint64";
    case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT: return "float";
    case PROTOBUF_C_TYPE_DOUBLE: return "double";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_ENUM: return "enum";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "bytes";
    case PROTOBUF_C_TYPE_MESSAGE: return "message";
    }
    return "?";
}

/* Strict JSON number syntax (sign, digits, fraction, exponent), also
 * accepting a leading '+' and a bare fraction like ".5" as YAML does. */
bool sharp_cfg_parse_double(const char *s, size_t len, double *out)
{
    size_t i = 0;
    bool digits = false;
    if (i < len && (s[i] == '-' || s[i] == '+')) i++;
    while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits = true;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++, digits = true;
    }
    if (!digits) return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+')) i++;
        bool exp = false;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++, exp = true;
        if (!exp) return false;
    }
    if (i != len || len > 400) return false;
    char buf[401];
    memcpy(buf, s, len);
    buf[len] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

/* NaN / Infinity spellings of proto3 JSON and YAML. */
static bool parse_special_float(const char *s, size_t len, double *out)
{
    static const struct { const char *t; int v; } names[] = {
        {"NaN", 0}, {".nan", 0}, {".NaN", 0}, {".NAN", 0},
        {"Infinity", 1}, {"+Infinity", 1}, {".inf", 1}, {".Inf", 1}, {".INF", 1}, {"+.inf", 1},
        {"-Infinity", -1}, {"-.inf", -1}, {"-.Inf", -1}, {"-.INF", -1},
    };
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(names); i++) {
        if (strlen(names[i].t) == len && !memcmp(names[i].t, s, len)) {
            *out = names[i].v == 0 ? NAN : names[i].v > 0 ? INFINITY : -INFINITY;
            return true;
        }
    }
    return false;
}

/* yaml-cpp's convert<int64_t> as Envoy's YAML loader applies it to an
 * unquoted scalar: the stream picks the base from the prefix, so "0x1F" is
 * hexadecimal and "017" octal (decimal digits stay decimal). True with the
 * value when the text is such a hexadecimal or octal integer. */
static bool yaml_cpp_radix_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < len && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
    int base;
    if (len - i > 2 && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X')) base = 16, i += 2;
    else if (len - i > 1 && s[i] == '0') base = 8, i += 1;
    else return false;
    uint64_t v = 0;
    for (; i < len; i++) {
        int d = s[i] >= '0' && s[i] <= '9' ? s[i] - '0'
              : s[i] >= 'a' && s[i] <= 'f' ? s[i] - 'a' + 10
              : s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 10 : 99;
        if (d >= base) return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return false;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (v > (uint64_t)INT64_MAX + (neg ? 1 : 0)) return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

/* True when Envoy's YAML loader would turn this unquoted scalar into a JSON
 * number or bool rather than a string: yaml-cpp's bool words, its integers
 * (decimal, 0x hexadecimal, 0 octal) and its decimal floats, .inf and .nan. */
static bool yaml_cpp_non_string(const cfg_scalar_t *sc, const char **what)
{
    bool b;
    double d;
    int64_t i;
    static const char *const special[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf",
                                          "-.INF", ".nan", ".NaN", ".NAN"};
    if (sc->quoted) return false;
    if (sharp_cfg_bool_word(sc->s, sc->len, &b)) return *what = "bool", true;
    if (yaml_cpp_radix_int(sc->s, sc->len, &i) || sharp_cfg_parse_double(sc->s, sc->len, &d))
        return *what = "number", true;
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(special); k++)
        if (strlen(special[k]) == sc->len && !memcmp(special[k], sc->s, sc->len)) return *what = "number", true;
    return false;
}

/* Parses an integer in [min, max] (signed) or [0, umax] (unsigned) from
 * decimal digits, or from a number with fraction/exponent whose value is
 * integral. Returns 0, or -1 with the error recorded. */
static int parse_int(cfg_ctx_t *c, yaml_node_t *node, const cfg_scalar_t *sc, bool is_signed,
                     int64_t min, int64_t max, uint64_t umax, const char *tname, int64_t *sv, uint64_t *uv)
{
    char buf[64];
    if (sc->len == 0 || sc->len >= sizeof buf) goto not_int;
    memcpy(buf, sc->s, sc->len);
    buf[sc->len] = '\0';
    int64_t radix;
    if (!sc->quoted && yaml_cpp_radix_int(sc->s, sc->len, &radix)) {
        /* Envoy's YAML loader has already turned 0x1F / 017 into a number */
        if (is_signed ? radix < min || radix > max : radix < 0 || (uint64_t)radix > umax) goto range;
        if (is_signed) *sv = radix;
        else *uv = (uint64_t)radix;
        return 0;
    }
    size_t i = buf[0] == '-' ? 1 : 0;
    bool plain_digits = buf[i] != '\0';
    for (size_t j = i; buf[j]; j++)
        if (buf[j] < '0' || buf[j] > '9') plain_digits = false;
    if (plain_digits) {
        if (buf[0] == '-' && !is_signed) {
            if (strspn(buf + 1, "0") == strlen(buf + 1)) {
                *uv = 0;
                return 0;
            }
            return sharp_cfg_fail(c, node, "value %s is out of range for %s (negative)", buf, tname);
        }
        errno = 0;
        if (is_signed) {
            long long v = strtoll(buf, NULL, 10);
            if (errno == ERANGE || v < min || v > max) goto range;
            *sv = v;
        } else {
            unsigned long long v = strtoull(buf, NULL, 10);
            if (errno == ERANGE || v > umax) goto range;
            *uv = v;
        }
        return 0;
    }
    double d;
    if (!sharp_cfg_parse_double(sc->s, sc->len, &d)) goto not_int;
    if (!isfinite(d) || floor(d) != d) goto not_int;
    if (is_signed) {
        if (d < (double)min || d >= -(double)INT64_MIN || d > (double)max) goto range;
        *sv = (int64_t)d;
    } else {
        if (d < 0) return sharp_cfg_fail(c, node, "value %s is out of range for %s (negative)", buf, tname);
        if (d >= 18446744073709551616.0 || d > (double)umax) goto range;
        *uv = (uint64_t)d;
    }
    return 0;
range:
    return sharp_cfg_fail(c, node, "value %.*s is out of range for %s", (int)sc->len, sc->s, tname);
not_int:
    return sharp_cfg_fail(c, node, "expected an integer (%s), got \"%.*s\"", tname, (int)sc->len, sc->s);
}

static int parse_float(cfg_ctx_t *c, yaml_node_t *node, const cfg_scalar_t *sc, bool is_float, double *out)
{
    bool numeric = sharp_cfg_parse_double(sc->s, sc->len, out);
    if (!numeric && !parse_special_float(sc->s, sc->len, out))
        return sharp_cfg_fail(c, node, "expected a number, got \"%.*s\"", (int)sc->len, sc->s);
    if (numeric && (!isfinite(*out) || (is_float && !isfinite((float)*out))))
        return sharp_cfg_fail(c, node, "value %.*s is out of range for %s", (int)sc->len, sc->s,
                              is_float ? "float" : "double");
    return 0;
}

/* yaml-cpp's convert<bool>, which Envoy's YAML loader applies to every
 * unquoted scalar first: y/n, yes/no, true/false, on/off, each in lower,
 * UPPER or Capitalized case. */
bool sharp_cfg_bool_word(const char *s, size_t len, bool *out)
{
    static const char *const t[] = {"y", "yes", "true", "on"}, *const f[] = {"n", "no", "false", "off"};
    char low[8];
    if (len == 0 || len >= sizeof low) return false;
    bool all_low = true, all_up = true, cap = s[0] >= 'A' && s[0] <= 'Z';
    for (size_t i = 0; i < len; i++) {
        bool up = s[i] >= 'A' && s[i] <= 'Z', lo = s[i] >= 'a' && s[i] <= 'z';
        if (!up && !lo) return false;
        all_low &= lo;
        all_up &= up;
        if (i > 0) cap &= lo;
        low[i] = up ? (char)(s[i] - 'A' + 'a') : s[i];
    }
    if (!all_low && !all_up && !cap) return false;
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(t); i++) {
        if (strlen(t[i]) == len && !memcmp(t[i], low, len)) return *out = true, true;
        if (strlen(f[i]) == len && !memcmp(f[i], low, len)) return *out = false, true;
    }
    return false;
}

/* absl::SimpleAtob, which protobuf's JSON parser (legacy syntax) applies to
 * a quoted bool: true/t/yes/y/1 or false/f/no/n/0 in any case. */
static bool simple_atob(const char *s, size_t len, bool *out)
{
    static const char *const t[] = {"true", "t", "yes", "y", "1"}, *const f[] = {"false", "f", "no", "n", "0"};
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(t); i++) {
        if (strlen(t[i]) == len && !strncasecmp(t[i], s, len)) return *out = true, true;
        if (strlen(f[i]) == len && !strncasecmp(f[i], s, len)) return *out = false, true;
    }
    return false;
}

/* A bool as Envoy's loader reads it: an unquoted yaml-cpp bool word is a
 * JSON bool; an unquoted number is a JSON number, which protobuf refuses for
 * a bool; any other text is a JSON string, taken through SimpleAtob. */
static int parse_bool(cfg_ctx_t *c, yaml_node_t *node, const cfg_scalar_t *sc, protobuf_c_boolean *out)
{
    bool v;
    double d;
    if (!sc->quoted && sharp_cfg_bool_word(sc->s, sc->len, &v)) {
        *out = v;
        return 0;
    }
    if ((sc->quoted || !sharp_cfg_parse_double(sc->s, sc->len, &d)) && simple_atob(sc->s, sc->len, &v)) {
        *out = v;
        return 0;
    }
    return sharp_cfg_fail(c, node, "expected true or false, got \"%.*s\"", (int)sc->len, sc->s);
}

static int b64val(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+' || ch == '-') return 62;
    if (ch == '/' || ch == '_') return 63;
    return -1;
}

uint8_t *sharp_cfg_base64_decode(const char *s, size_t len, size_t *out_len)
{
    while (len && s[len - 1] == '=') len--;
    if (len % 4 == 1) return NULL;
    uint8_t *out = sharp_calloc(1, len * 3 / 4 + 1);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(s[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

void sharp_cfg_base64_encode(sharp_sbuf_t *b, const uint8_t *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        sharp_sbuf_append(b, q, 4);
    }
}

/* absl::SimpleAtoi for int32 as protobuf's JSON parser applies it to a
 * quoted enum value: optional surrounding whitespace, an optional sign,
 * decimal digits only, in int32 range. */
static bool simple_atoi32(const char *s, size_t len, int32_t *out)
{
    size_t i = 0, end = len;
    while (i < end && strchr(" \t\n\v\f\r", s[i])) i++;
    while (end > i && strchr(" \t\n\v\f\r", s[end - 1])) end--;
    bool neg = false;
    if (i < end && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i == end) return false;
    int64_t v = 0;
    for (; i < end; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
        if (v > (int64_t)INT32_MAX + 1) return false;
    }
    if (neg) v = -v;
    if (v < INT32_MIN || v > INT32_MAX) return false;
    *out = (int32_t)v;
    return true;
}

static bool ascii_ieq(const char *a, size_t alen, const char *b)
{
    size_t i = 0;
    for (; i < alen && b[i]; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (char)(y - 'A' + 'a');
        if (x != y) return false;
    }
    return i == alen && !b[i];
}

/* An enum value the way Envoy loads one: protobuf's JSON parser with
 * case_insensitive_enum_parsing (MessageUtil::loadFromJson sets it), so a
 * name matches its declared value ignoring ASCII case ("round_robin",
 * "auto"), the first declared match winning. A name that matches nothing
 * may be a decimal number in quotes ("2"). A YAML number is a JSON number:
 * any int32, declared or not (proto3 enums are open). Unknown names list
 * the valid ones. */
static int parse_enum(cfg_ctx_t *c, yaml_node_t *node, const cfg_scalar_t *sc,
                      const ProtobufCEnumDescriptor *ed, int *out)
{
    int64_t v;
    uint64_t unused;
    bool numeric = !sc->quoted && sc->len > 0 &&
                   (sc->s[0] == '-' || sc->s[0] == '+' || sc->s[0] == '.' || (sc->s[0] >= '0' && sc->s[0] <= '9'));
    if (numeric) {
        if (parse_int(c, node, sc, true, INT32_MIN, INT32_MAX, 0, "enum", &v, &unused) < 0) return -1;
        *out = (int)v;
        return 0;
    }
    for (unsigned i = 0; i < ed->n_values; i++) {
        if (ascii_ieq(sc->s, sc->len, ed->values[i].name)) {
            *out = ed->values[i].value;
            return 0;
        }
    }
    /* an alias (allow_alias: BEST_COMPRESSION for COMPRESSION_LEVEL_9) is
     * only in the by-name index */
    for (unsigned i = 0; i < ed->n_value_names; i++) {
        if (ascii_ieq(sc->s, sc->len, ed->values_by_name[i].name)) {
            *out = ed->values[ed->values_by_name[i].index].value;
            return 0;
        }
    }
    int32_t n;
    if (simple_atoi32(sc->s, sc->len, &n)) {
        *out = n;
        return 0;
    }
    sharp_sbuf_t names = {0};
    for (unsigned i = 0; i < ed->n_values; i++) {
        if (i) sharp_sbuf_puts(&names, ", ");
        sharp_sbuf_puts(&names, ed->values[i].name);
    }
    sharp_cfg_fail(c, node, "unknown value \"%.*s\" for enum %s; valid values (any case): %s", (int)sc->len,
                   sc->s, ed->name, names.data ? names.data : "(none)");
    sharp_sbuf_free(&names);
    return -1;
}

/* Dispatches on the field type; see mapper_internal.h for the contract.
 * Null leaves the field unset except for google.protobuf.NullValue. */
int sharp_cfg_scalar_value(cfg_ctx_t *c, yaml_node_t *node, const ProtobufCFieldDescriptor *f, void *slot,
                           bool is_key)
{
    cfg_scalar_t sc;
    if (!sharp_cfg_scalar_of(node, &sc))
        return sharp_cfg_fail(c, node, "expected a scalar of type %s, got %s", type_name(f->type),
                              sharp_cfg_node_kind(node));
    if (sc.null && !is_key) {
        if (f->type == PROTOBUF_C_TYPE_ENUM &&
            !strcmp(((const ProtobufCEnumDescriptor *)f->descriptor)->name, "google.protobuf.NullValue")) {
            *(int *)slot = 0;
            return 1;
        }
        return 0;
    }
    int64_t sv = 0;
    uint64_t uv = 0;
    double d;
    const char *tn = type_name(f->type);
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        if (parse_int(c, node, &sc, true, INT32_MIN, INT32_MAX, 0, tn, &sv, &uv) < 0) return -1;
        *(int32_t *)slot = (int32_t)sv;
        return 1;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        if (parse_int(c, node, &sc, true, INT64_MIN, INT64_MAX, 0, tn, &sv, &uv) < 0) return -1;
        *(int64_t *)slot = sv;
        return 1;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        if (parse_int(c, node, &sc, false, 0, 0, UINT32_MAX, tn, &sv, &uv) < 0) return -1;
        *(uint32_t *)slot = (uint32_t)uv;
        return 1;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        if (parse_int(c, node, &sc, false, 0, 0, UINT64_MAX, tn, &sv, &uv) < 0) return -1;
        *(uint64_t *)slot = uv;
        return 1;
    case PROTOBUF_C_TYPE_FLOAT:
        if (parse_float(c, node, &sc, true, &d) < 0) return -1;
        *(float *)slot = (float)d;
        return 1;
    case PROTOBUF_C_TYPE_DOUBLE:
        if (parse_float(c, node, &sc, false, &d) < 0) return -1;
        *(double *)slot = d;
        return 1;
    case PROTOBUF_C_TYPE_BOOL:
        return parse_bool(c, node, &sc, slot) < 0 ? -1 : 1;
    case PROTOBUF_C_TYPE_ENUM:
        return parse_enum(c, node, &sc, f->descriptor, slot) < 0 ? -1 : 1;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES: {
        const char *what;
        if (!is_key && yaml_cpp_non_string(&sc, &what))
            return sharp_cfg_fail(c, node, "expected a string, got the %s %.*s: Envoy's YAML loader reads "
                                  "it unquoted as a JSON %s, which protobuf refuses for a %s field; quote it",
                                  what, (int)sc.len, sc.s, what, tn);
        if (f->type == PROTOBUF_C_TYPE_BYTES) break;
        *(char **)slot = sharp_strndup(sc.s, sc.len);
        return 1;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        break;
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) {
        size_t n = 0;
        uint8_t *data = sharp_cfg_base64_decode(sc.s, sc.len, &n);
        if (!data) return sharp_cfg_fail(c, node, "invalid base64 for bytes field");
        ProtobufCBinaryData *bd = slot;
        bd->data = data;
        bd->len = n;
        return 1;
    }
    return sharp_cfg_fail(c, node, "internal: field \"%s\" is not a scalar", f->name);
}
