/* json_out.c: protobuf-c message -> proto3 JSON text (for /config_dump and
 * tests), driven by descriptors like the mapper. See mapper.h for the
 * exact output rules. */
#include "mapper_internal.h"

#include <math.h>
#include <stdio.h>

typedef struct {
    sharp_sbuf_t *b;
    int indent; /* spaces per level; 0 = compact */
    int level;
} jw_t;

static void write_message(jw_t *w, const ProtobufCMessage *m);

static void newline(jw_t *w)
{
    if (!w->indent) return;
    sharp_sbuf_append(w->b, "\n", 1);
    for (int i = 0; i < w->level * w->indent; i++) sharp_sbuf_append(w->b, " ", 1);
}

static void put_string(jw_t *w, const char *s, size_t n)
{
    sharp_sbuf_append(w->b, "\"", 1);
    sharp_sbuf_json_escape(w->b, s, n);
    sharp_sbuf_append(w->b, "\"", 1);
}

/* Opening '{' / '['; `first` tracks whether an item was written. */
static void open_c(jw_t *w, char ch, bool *first)
{
    sharp_sbuf_append(w->b, &ch, 1);
    w->level++;
    *first = true;
}

static void item(jw_t *w, bool *first)
{
    if (!*first) sharp_sbuf_append(w->b, ",", 1);
    *first = false;
    newline(w);
}

static void key(jw_t *w, bool *first, const char *k, size_t n)
{
    item(w, first);
    put_string(w, k, n);
    sharp_sbuf_puts(w->b, w->indent ? ": " : ":");
}

static void close_c(jw_t *w, char ch, bool first)
{
    w->level--;
    if (!first) newline(w);
    sharp_sbuf_append(w->b, &ch, 1);
}

static void put_double(jw_t *w, double v, bool is_float)
{
    if (isnan(v)) {
        sharp_sbuf_puts(w->b, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        sharp_sbuf_puts(w->b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char buf[48];
    for (int prec = is_float ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    sharp_sbuf_puts(w->b, buf);
}

/* One value of field f stored at slot. */
static void write_value(jw_t *w, const ProtobufCFieldDescriptor *f, const void *slot)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        sharp_sbuf_printf(w->b, "%d", *(const int32_t *)slot);
        break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        sharp_sbuf_printf(w->b, "%u", *(const uint32_t *)slot);
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        sharp_sbuf_printf(w->b, "\"%lld\"", (long long)*(const int64_t *)slot);
        break;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        sharp_sbuf_printf(w->b, "\"%llu\"", (unsigned long long)*(const uint64_t *)slot);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_double(w, *(const float *)slot, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_double(w, *(const double *)slot, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        sharp_sbuf_puts(w->b, *(const protobuf_c_boolean *)slot ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        int v = *(const int *)slot;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
        if (!strcmp(ed->name, "google.protobuf.NullValue")) sharp_sbuf_puts(w->b, "null");
        else if (ev) put_string(w, ev->name, strlen(ev->name));
        else sharp_sbuf_printf(w->b, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        put_string(w, s ? s : "", s ? strlen(s) : 0);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = slot;
        sharp_sbuf_append(w->b, "\"", 1);
        sharp_cfg_base64_encode(w->b, bd->data, bd->len);
        sharp_sbuf_append(w->b, "\"", 1);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)slot;
        if (sub) write_message(w, sub);
        else sharp_sbuf_puts(w->b, "null");
        break;
    }
    }
}

/* Map entries print as an object keyed by the entry's key as a string. */
static void write_map(jw_t *w, const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *entries, size_t n)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    bool first;
    open_c(w, '{', &first);
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *e = entries[i];
        const void *ks = (const char *)e + kf->offset;
        sharp_sbuf_t kb = {0};
        jw_t kw = {&kb, 0, 0};
        if (kf->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)ks;
            sharp_sbuf_puts(&kb, s ? s : "");
        } else {
            write_value(&kw, kf, ks);
            if (kb.len >= 2 && kb.data[0] == '"') { /* 64-bit keys come back quoted */
                memmove(kb.data, kb.data + 1, kb.len - 2);
                kb.len -= 2;
            }
        }
        key(w, &first, kb.data ? kb.data : "", kb.len);
        sharp_sbuf_free(&kb);
        write_value(w, vf, (const char *)e + vf->offset);
    }
    close_c(w, '}', first);
}

bool sharp_cfg_field_is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t n = strlen(e->short_name);
    return e->n_fields == 2 && e->fields[0].id == 1 && e->fields[1].id == 2 && n > 5 &&
           !strcmp(e->short_name + n - 5, "Entry") && !strcmp(e->fields[0].name, "key") &&
           !strcmp(e->fields[1].name, "value");
}

/* Writes the fields of m as key/value items of an already open object. */
static void write_fields(jw_t *w, const ProtobufCMessage *m, bool *first)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *slot = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            if (!n) continue;
            const char *arr = *(const char *const *)slot;
            key(w, first, f->name, strlen(f->name));
            if (sharp_cfg_field_is_map(f)) {
                write_map(w, f, (ProtobufCMessage *const *)arr, n);
                continue;
            }
            bool afirst;
            open_c(w, '[', &afirst);
            for (size_t j = 0; j < n; j++) {
                item(w, &afirst);
                write_value(w, f, arr + j * sharp_cfg_elem_size(f->type));
            }
            close_c(w, ']', afirst);
        } else if (sharp_cfg_field_present(m, f)) {
            key(w, first, f->name, strlen(f->name));
            write_value(w, f, slot);
        }
    }
}

static const void *member(const ProtobufCMessage *m, const char *name, const ProtobufCFieldDescriptor **fo)
{
    const ProtobufCFieldDescriptor *f = sharp_cfg_field(m->descriptor, name);
    if (fo) *fo = f;
    return f ? (const char *)m + f->offset : NULL;
}

static int64_t int_member(const ProtobufCMessage *m, const char *name)
{
    const ProtobufCFieldDescriptor *f;
    const void *p = member(m, name, &f);
    if (!p) return 0;
    return sharp_cfg_elem_size(f->type) == 8 ? *(const int64_t *)p : *(const int32_t *)p;
}

static void write_any(jw_t *w, const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *uf, *vf;
    char *const *url = (char *const *)member(m, "type_url", &uf);
    const ProtobufCBinaryData *bd = member(m, "value", &vf);
    bool first;
    open_c(w, '{', &first);
    if (url && *url && **url && bd) {
        key(w, &first, "@type", 5);
        put_string(w, *url, strlen(*url));
        ProtobufCMessage *inner = sharp_any_unpack(m, NULL, NULL);
        if (inner && sharp_cfg_wkt_special_in_any(sharp_cfg_wkt_kind(inner->descriptor))) {
            key(w, &first, "value", 5);
            write_message(w, inner);
        } else if (inner) {
            write_fields(w, inner, &first);
        } else {
            key(w, &first, "value", 5);
            write_value(w, vf, bd);
        }
        if (inner) protobuf_c_message_free_unpacked(inner, NULL);
    }
    close_c(w, '}', first);
}

/* Value: the JSON value its active member holds (null when unset). */
static void write_value_wkt(jw_t *w, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label != PROTOBUF_C_LABEL_REPEATED && sharp_cfg_field_present(m, f)) {
            write_value(w, f, (const char *)m + f->offset);
            return;
        }
    }
    sharp_sbuf_puts(w->b, "null");
}

static void write_field_mask(jw_t *w, const ProtobufCMessage *m)
{
    const ProtobufCFieldDescriptor *f;
    char **const *paths = (char **const *)member(m, "paths", &f);
    size_t n = f ? *(const size_t *)((const char *)m + f->quantifier_offset) : 0;
    sharp_sbuf_t s = {0};
    for (size_t i = 0; i < n; i++) {
        if (i) sharp_sbuf_append(&s, ",", 1);
        bool up = false;
        for (const char *p = (*paths)[i]; *p; p++) {
            if (*p == '_') {
                up = true;
                continue;
            }
            char ch = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            up = false;
            sharp_sbuf_append(&s, &ch, 1);
        }
    }
    put_string(w, s.data ? s.data : "", s.len);
    sharp_sbuf_free(&s);
}

static void write_message(jw_t *w, const ProtobufCMessage *m)
{
    bool first;
    const ProtobufCFieldDescriptor *f;
    const void *p;
    switch (sharp_cfg_wkt_kind(m->descriptor)) {
    case WKT_DURATION:
        sharp_sbuf_append(w->b, "\"", 1);
        sharp_cfg_format_duration(w->b, int_member(m, "seconds"), (int32_t)int_member(m, "nanos"));
        sharp_sbuf_append(w->b, "\"", 1);
        return;
    case WKT_TIMESTAMP: {
        sharp_sbuf_t t = {0};
        if (sharp_cfg_format_timestamp(&t, int_member(m, "seconds"), (int32_t)int_member(m, "nanos"))) {
            put_string(w, t.data, t.len);
            sharp_sbuf_free(&t);
            return;
        }
        sharp_sbuf_free(&t);
        break;
    }
    case WKT_FIELD_MASK:
        write_field_mask(w, m);
        return;
    case WKT_WRAPPER:
        if ((p = member(m, "value", &f)) != NULL) {
            write_value(w, f, p);
            return;
        }
        break;
    case WKT_STRUCT:
        if ((p = member(m, "fields", &f)) != NULL && sharp_cfg_field_is_map(f)) {
            write_map(w, f, *(ProtobufCMessage *const *const *)p,
                      *(const size_t *)((const char *)m + f->quantifier_offset));
            return;
        }
        break;
    case WKT_LIST_VALUE:
        if ((p = member(m, "values", &f)) != NULL && f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)p;
            open_c(w, '[', &first);
            for (size_t i = 0; i < n; i++) {
                item(w, &first);
                write_value(w, f, &arr[i]);
            }
            close_c(w, ']', first);
            return;
        }
        break;
    case WKT_VALUE:
        write_value_wkt(w, m);
        return;
    case WKT_ANY:
        write_any(w, m);
        return;
    default:
        break;
    }
    open_c(w, '{', &first);
    write_fields(w, m, &first);
    close_c(w, '}', first);
}

void sharp_config_to_json(const ProtobufCMessage *m, sharp_sbuf_t *out)
{
    jw_t w = {out, 0, 0};
    if (m) write_message(&w, m);
    else sharp_sbuf_puts(out, "null");
}

void sharp_config_to_json_pretty(const ProtobufCMessage *m, sharp_sbuf_t *out)
{
    jw_t w = {out, 2, 0};
    if (m) write_message(&w, m);
    else sharp_sbuf_puts(out, "null");
    sharp_sbuf_append(out, "\n", 1);
}
