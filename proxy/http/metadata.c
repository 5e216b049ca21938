/* metadata.c: see metadata.h. */
#include "http/metadata.h"

#include "google/protobuf/struct.pb-c.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void sharp_md_value_clear(sharp_md_value_t *v)
{
    if (!v) return;
    free(v->s);
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->keys) free(v->keys[i]);
        sharp_md_value_clear(&v->items[i]);
    }
    free(v->keys);
    free(v->items);
    memset(v, 0, sizeof *v);
}

void sharp_md_value_string(sharp_md_value_t *v, const char *s, size_t len)
{
    memset(v, 0, sizeof *v);
    v->kind = SHARP_MD_STRING;
    v->s = sharp_strndup(s, len);
    v->len = len;
}

static void md_grow(sharp_md_value_t *v, bool keys)
{
    if (v->n < v->cap) return;
    v->cap = v->cap ? v->cap * 2 : 4;
    v->items = sharp_realloc(v->items, v->cap * sizeof *v->items);
    if (keys) v->keys = sharp_realloc(v->keys, v->cap * sizeof *v->keys);
}

static int md_find(const sharp_md_value_t *st, const char *key, size_t klen)
{
    for (uint32_t i = 0; i < st->n; i++)
        if (strlen(st->keys[i]) == klen && memcmp(st->keys[i], key, klen) == 0) return (int)i;
    return -1;
}

void sharp_md_struct_set(sharp_md_value_t *st, const char *key, size_t klen, sharp_md_value_t *v)
{
    int i = md_find(st, key, klen);
    if (i >= 0) {
        sharp_md_value_clear(&st->items[i]);
    } else {
        md_grow(st, true);
        i = (int)st->n++;
        st->keys[i] = sharp_strndup(key, klen);
    }
    st->items[i] = *v;
    memset(v, 0, sizeof *v);
}

const sharp_md_value_t *sharp_md_struct_get(const sharp_md_value_t *st, const char *key,
                                            size_t klen)
{
    if (!st || st->kind != SHARP_MD_STRUCT) return NULL;
    int i = md_find(st, key, klen);
    return i < 0 ? NULL : &st->items[i];
}

static int md_ns_find(const sharp_dynamic_metadata_t *md, const char *ns, size_t nslen)
{
    for (uint32_t i = 0; md && i < md->n; i++)
        if (strlen(md->ns[i]) == nslen && memcmp(md->ns[i], ns, nslen) == 0) return (int)i;
    return -1;
}

void sharp_md_value_copy(sharp_md_value_t *dst, const sharp_md_value_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->kind = src->kind;
    dst->b = src->b;
    dst->number = src->number;
    if (src->s) {
        dst->s = sharp_strndup(src->s, src->len);
        dst->len = src->len;
    }
    if (!src->n) return;
    dst->n = dst->cap = src->n;
    dst->items = sharp_calloc(src->n, sizeof *dst->items);
    if (src->keys) dst->keys = sharp_calloc(src->n, sizeof *dst->keys);
    for (uint32_t i = 0; i < src->n; i++) {
        if (src->keys) dst->keys[i] = sharp_strdup(src->keys[i]);
        sharp_md_value_copy(&dst->items[i], &src->items[i]);
    }
}

/* The namespace's struct, made empty on first use. */
static sharp_md_value_t *md_ns(sharp_dynamic_metadata_t **mdp, const char *ns, size_t nslen)
{
    if (!*mdp) *mdp = sharp_calloc(1, sizeof **mdp);
    sharp_dynamic_metadata_t *md = *mdp;
    int i = md_ns_find(md, ns, nslen);
    if (i < 0) {
        if (md->n == md->cap) {
            md->cap = md->cap ? md->cap * 2 : 2;
            md->ns = sharp_realloc(md->ns, md->cap * sizeof *md->ns);
            md->structs = sharp_realloc(md->structs, md->cap * sizeof *md->structs);
        }
        i = (int)md->n++;
        md->ns[i] = sharp_strndup(ns, nslen);
        memset(&md->structs[i], 0, sizeof md->structs[i]);
        md->structs[i].kind = SHARP_MD_STRUCT;
    }
    return &md->structs[i];
}

void sharp_dynamic_metadata_set(sharp_dynamic_metadata_t **mdp, const char *ns, size_t nslen,
                                const char *key, size_t klen, sharp_md_value_t *v)
{
    sharp_md_struct_set(md_ns(mdp, ns, nslen), key, klen, v);
}

void sharp_dynamic_metadata_replace(sharp_dynamic_metadata_t **mdp, const char *ns, size_t nslen,
                                    const sharp_md_value_t *st)
{
    sharp_md_value_t *v = md_ns(mdp, ns, nslen);
    sharp_md_value_clear(v);
    sharp_md_value_copy(v, st);
    v->kind = SHARP_MD_STRUCT;
}

const sharp_md_value_t *sharp_dynamic_metadata_ns(const sharp_dynamic_metadata_t *md,
                                                  const char *ns, size_t nslen)
{
    int i = md_ns_find(md, ns, nslen);
    return i < 0 ? NULL : &md->structs[i];
}

void sharp_dynamic_metadata_free(sharp_dynamic_metadata_t *md)
{
    if (!md) return;
    for (uint32_t i = 0; i < md->n; i++) {
        free(md->ns[i]);
        sharp_md_value_clear(&md->structs[i]);
    }
    free(md->ns);
    free(md->structs);
    free(md);
}

/* ---- parsing a serialized google.protobuf.Value ---- */

/* protobuf's default recursion limit for parsing (io::CodedInputStream) */
#define MD_MAX_DEPTH 100

enum { PB_VALUE, PB_STRUCT, PB_ENTRY, PB_LIST };

static bool rd_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return false;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* Walks the wire format of one message of the Struct family without
 * recursing deeper than protobuf would parse, so the recursive unpack that
 * follows is bounded whatever the bytes say. */
static bool depth_ok(const uint8_t *p, size_t n, int type, int depth)
{
    if (depth > MD_MAX_DEPTH) return false;
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag, len;
        if (!rd_varint(&p, end, &tag)) return false;
        uint32_t field = (uint32_t)(tag >> 3);
        switch (tag & 7) {
        case 0:
            if (!rd_varint(&p, end, &len)) return false;
            break;
        case 1:
            if ((size_t)(end - p) < 8) return false;
            p += 8;
            break;
        case 5:
            if ((size_t)(end - p) < 4) return false;
            p += 4;
            break;
        case 2: {
            if (!rd_varint(&p, end, &len) || len > (uint64_t)(end - p)) return false;
            int child = -1;
            if (type == PB_VALUE && field == 5) child = PB_STRUCT;
            if (type == PB_VALUE && field == 6) child = PB_LIST;
            if (type == PB_STRUCT && field == 1) child = PB_ENTRY;
            if (type == PB_ENTRY && field == 2) child = PB_VALUE;
            if (type == PB_LIST && field == 1) child = PB_VALUE;
            if (child >= 0 && !depth_ok(p, (size_t)len, child, depth + 1)) return false;
            p += len;
            break;
        }
        default:
            return false;
        }
    }
    return true;
}

/* proto3 strings must be valid UTF-8 (protobuf refuses the message). */
static bool utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p++;
        int more;
        unsigned min;
        if (c < 0x80) continue;
        if ((c & 0xe0) == 0xc0) {
            more = 1;
            min = 0x80;
            c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2;
            min = 0x800;
            c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return false;
        }
        for (int i = 0; i < more; i++) {
            if ((*p & 0xc0) != 0x80) return false;
            c = (c << 6) | (*p++ & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
    }
    return true;
}

static bool from_pb(const Google__Protobuf__Value *pb, sharp_md_value_t *out);

static bool from_pb_struct(const Google__Protobuf__Struct *st, sharp_md_value_t *out)
{
    out->kind = SHARP_MD_STRUCT;
    for (size_t i = 0; st && i < st->n_fields; i++) {
        const Google__Protobuf__Struct__FieldsEntry *e = st->fields[i];
        const char *key = e->key ? e->key : "";
        if (!utf8_ok(key)) return false;
        sharp_md_value_t v = {0};
        if (e->value && !from_pb(e->value, &v)) {
            sharp_md_value_clear(&v);
            return false;
        }
        if (!e->value) v.kind = SHARP_MD_UNSET;
        sharp_md_struct_set(out, key, strlen(key), &v);
    }
    return true;
}

static bool from_pb(const Google__Protobuf__Value *pb, sharp_md_value_t *out)
{
    switch (pb->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        out->kind = SHARP_MD_NULL;
        return true;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        out->kind = SHARP_MD_NUMBER;
        out->number = pb->number_value;
        return true;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: {
        const char *s = pb->string_value ? pb->string_value : "";
        if (!utf8_ok(s)) return false;
        sharp_md_value_string(out, s, strlen(s));
        return true;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        out->kind = SHARP_MD_BOOL;
        out->b = pb->bool_value;
        return true;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return from_pb_struct(pb->struct_value, out);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        out->kind = SHARP_MD_LIST;
        for (size_t i = 0; pb->list_value && i < pb->list_value->n_values; i++) {
            md_grow(out, false);
            sharp_md_value_t *item = &out->items[out->n++];
            memset(item, 0, sizeof *item);
            if (!from_pb(pb->list_value->values[i], item)) return false;
        }
        return true;
    default:
        out->kind = SHARP_MD_UNSET;
        return true;
    }
}

bool sharp_md_value_from_struct(const Google__Protobuf__Struct *st, sharp_md_value_t *out)
{
    memset(out, 0, sizeof *out);
    if (from_pb_struct(st, out)) return true;
    sharp_md_value_clear(out);
    return false;
}

bool sharp_md_value_parse(const uint8_t *p, size_t n, sharp_md_value_t *out)
{
    memset(out, 0, sizeof *out);
    if (!depth_ok(p, n, PB_VALUE, 1)) return false;
    Google__Protobuf__Value *pb = google__protobuf__value__unpack(NULL, n, p);
    if (!pb) return false;
    bool ok = from_pb(pb, out);
    google__protobuf__value__free_unpacked(pb, NULL);
    if (!ok) sharp_md_value_clear(out);
    return ok;
}

/* ---- JSON ---- */

void sharp_md_number(double d, sharp_sbuf_t *out)
{
    if (isnan(d)) {
        sharp_sbuf_puts(out, "null");
        return;
    }
    if (isinf(d)) {
        sharp_sbuf_puts(out, d < 0 ? "-inf" : "inf");
        return;
    }
    /* the shortest digits that read back as d, in exponent notation:
     * "-d.ddde+XX" (printf writes at least two exponent digits, as
     * to_chars does) */
    char sci[48];
    for (int prec = 0; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec, d);
        if (strtod(sci, NULL) == d) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *q = sci;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    /* the same digits in fixed notation */
    char fixed[400];
    size_t fl = 0;
    if (neg) fixed[fl++] = '-';
    if (exp10 >= 0) {
        for (size_t i = 0; i < nd || (int)i <= exp10; i++) {
            if ((int)i == exp10 + 1 && i < nd) fixed[fl++] = '.';
            fixed[fl++] = i < nd ? digits[i] : '0';
        }
    } else {
        fixed[fl++] = '0';
        fixed[fl++] = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            fixed[fl++] = '0';
        for (size_t i = 0; i < nd; i++)
            fixed[fl++] = digits[i];
    }
    size_t sl = strlen(sci);
    if (fl <= sl)
        sharp_sbuf_append(out, fixed, fl);
    else
        sharp_sbuf_append(out, sci, sl);
}

static int cmp_key(const void *a, const void *b, void *keys)
{
    char **k = keys;
    return strcmp(k[*(const uint32_t *)a], k[*(const uint32_t *)b]);
}

/* The struct's field order by key. */
static void sort_keys(const sharp_md_value_t *v, uint32_t *ord)
{
    for (uint32_t i = 0; i < v->n; i++)
        ord[i] = i;
    if (v->n > 1) qsort_r(ord, v->n, sizeof *ord, cmp_key, v->keys);
}

void sharp_md_value_json(const sharp_md_value_t *v, sharp_sbuf_t *out)
{
    switch (v->kind) {
    case SHARP_MD_UNSET:
    case SHARP_MD_NULL:
        sharp_sbuf_puts(out, "null");
        return;
    case SHARP_MD_NUMBER:
        sharp_md_number(v->number, out);
        return;
    case SHARP_MD_STRING:
        sharp_sbuf_append(out, "\"", 1);
        sharp_sbuf_json_escape(out, v->s, v->len);
        sharp_sbuf_append(out, "\"", 1);
        return;
    case SHARP_MD_BOOL:
        sharp_sbuf_puts(out, v->b ? "true" : "false");
        return;
    case SHARP_MD_LIST:
        sharp_sbuf_append(out, "[", 1);
        for (uint32_t i = 0; i < v->n; i++) {
            if (i) sharp_sbuf_append(out, ",", 1);
            sharp_md_value_json(&v->items[i], out);
        }
        sharp_sbuf_append(out, "]", 1);
        return;
    case SHARP_MD_STRUCT: {
        /* keys sorted, as Envoy's structValueToJson */
        uint32_t local[16], *ord = v->n <= 16 ? local : sharp_calloc(v->n, sizeof *ord);
        sort_keys(v, ord);
        sharp_sbuf_append(out, "{", 1);
        for (uint32_t i = 0; i < v->n; i++) {
            if (i) sharp_sbuf_append(out, ",", 1);
            sharp_sbuf_append(out, "\"", 1);
            sharp_sbuf_json_escape(out, v->keys[ord[i]], strlen(v->keys[ord[i]]));
            sharp_sbuf_append(out, "\":", 2);
            sharp_md_value_json(&v->items[ord[i]], out);
        }
        sharp_sbuf_append(out, "}", 1);
        if (ord != local) free(ord);
        return;
    }
    }
}
