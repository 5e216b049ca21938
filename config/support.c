/* support.c: see support.h. The walk mirrors the mapper's path syntax
 * ("a.b[2].c", map entries as `m["key"]`, Any contents continuing below the
 * Any field), so a path found here is a path the source map knows. */
#include "config/support.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "config/mapper_internal.h"

/* ---- lookup ---------------------------------------------------------------- */

/* snake_case of a JSON lowerCamelCase name ("connectTimeout" ->
 * "connect_timeout"); proto names pass through unchanged. */
static void snake_of(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        char ch = s[i];
        if (ch >= 'A' && ch <= 'Z') {
            out[o++] = '_';
            ch = (char)(ch - 'A' + 'a');
        }
        out[o++] = ch;
    }
    out[o] = '\0';
}

static int field_cmp(const char *msg, const char *field, const sharp_support_field_t *e)
{
    int c = strcmp(msg, e->message);
    return c ? c : strcmp(field, e->field);
}

const sharp_support_field_t *sharp_support_field(const char *message, const char *field, size_t len)
{
    char name[256];
    snake_of(field, len, name, sizeof name);
    size_t lo = 0, hi = sharp_support_nfields;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = field_cmp(message, name, &sharp_support_fields[mid]);
        if (c == 0) return &sharp_support_fields[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const sharp_support_field_t *sharp_support_field_in(const char *message, const char *ctx, const char *field)
{
    if (ctx) {
        char key[512];
        snprintf(key, sizeof key, "%s@%s", message, ctx);
        const sharp_support_field_t *e = sharp_support_field(key, field, strlen(field));
        if (e) return e;
    }
    return sharp_support_field(message, field, strlen(field));
}

/* The memo of sharp_support_field_of: open addressing on the pair of field
 * descriptors (static data, so their addresses are stable keys), shared by
 * the threads that load configs. A full table starts over; config protos
 * have a few thousand fields in all. */
#define SUPPORT_MEMO_SLOTS 8192u

typedef struct {
    const ProtobufCFieldDescriptor *f, *pf;
    const sharp_support_field_t *e;
} support_memo_t;

static support_memo_t support_memo[SUPPORT_MEMO_SLOTS];
static unsigned support_memo_used;
static pthread_mutex_t support_memo_mu = PTHREAD_MUTEX_INITIALIZER;

/* In front of it, each thread's own direct-mapped copy of the entries it
 * looked up, read without the lock: an answer never changes (the table is
 * static data), and the walk of an xDS update asks for every field of
 * every message, thousands of times for a large EDS assignment. */
#define SUPPORT_NEAR_SLOTS 1024u
static __thread support_memo_t support_near[SUPPORT_NEAR_SLOTS];

const sharp_support_field_t *sharp_support_field_of(const ProtobufCMessageDescriptor *d,
                                                    const ProtobufCFieldDescriptor *f,
                                                    const ProtobufCMessageDescriptor *pd,
                                                    const ProtobufCFieldDescriptor *pf)
{
    if (!pd || !pf) pd = NULL, pf = NULL;
    uintptr_t h = ((uintptr_t)f >> 3) * (uintptr_t)0x9E3779B97F4A7C15ull ^
                  ((uintptr_t)pf >> 3) * (uintptr_t)0xC2B2AE3D27D4EB4Full;
    support_memo_t *near = &support_near[(unsigned)(h >> 17) & (SUPPORT_NEAR_SLOTS - 1)];
    if (near->f == f && near->pf == pf) return near->e;
    unsigned i = (unsigned)(h >> 17) & (SUPPORT_MEMO_SLOTS - 1);
    pthread_mutex_lock(&support_memo_mu);
    for (;; i = (i + 1) & (SUPPORT_MEMO_SLOTS - 1)) {
        const support_memo_t *m = &support_memo[i];
        if (!m->f) break;
        if (m->f == f && m->pf == pf) {
            const sharp_support_field_t *e = m->e;
            pthread_mutex_unlock(&support_memo_mu);
            *near = (support_memo_t){f, pf, e};
            return e;
        }
    }
    char ctx[320];
    if (pd) snprintf(ctx, sizeof ctx, "%s.%s", pd->name, pf->name);
    const sharp_support_field_t *e = sharp_support_field_in(d->name, pd ? ctx : NULL, f->name);
    if (2 * (support_memo_used + 1) > SUPPORT_MEMO_SLOTS) {
        memset(support_memo, 0, sizeof support_memo);
        support_memo_used = 0;
        i = (unsigned)(h >> 17) & (SUPPORT_MEMO_SLOTS - 1);
    }
    support_memo[i] = (support_memo_t){f, pf, e};
    support_memo_used++;
    pthread_mutex_unlock(&support_memo_mu);
    *near = (support_memo_t){f, pf, e};
    return e;
}

const sharp_support_extension_t *sharp_support_extension(const char *type, size_t len)
{
    const char *slash = memrchr(type, '/', len);
    if (slash) {
        len -= (size_t)(slash + 1 - type);
        type = slash + 1;
    }
    size_t lo = 0, hi = sharp_support_nextensions;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *t = sharp_support_extensions[mid].type;
        int c = strncmp(type, t, len);
        if (c == 0 && t[len]) c = -1;
        if (c == 0) return &sharp_support_extensions[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* ---- the walk -------------------------------------------------------------- */

typedef struct walk {
    const sharp_config_doc_t *doc;
    sharp_config_error_t *err;
    sharp_sbuf_t path;
    /* the failure breaks one of Envoy's validation rules (the resource is
     * invalid), rather than naming what SHARP does not implement */
    bool invalid;
} walk_t;

static int failf(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(walk_t *w, const char *fmt, ...)
{
    char what[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *path = w->path.len ? sharp_sbuf_cstr(&w->path) : "";
    if (w->doc) {
        sharp_config_doc_error(w->doc, path, w->err, "%s", what);
    } else {
        snprintf(w->err->msg, sizeof w->err->msg, "%s%s%s", path, *path ? ": " : "", what);
    }
    return -1;
}

static size_t push_field(walk_t *w, const char *name)
{
    size_t old = w->path.len;
    if (old) sharp_sbuf_append(&w->path, ".", 1);
    sharp_sbuf_append(&w->path, name, strlen(name));
    return old;
}


static void pop(walk_t *w, size_t old)
{
    w->path.len = old;
    if (w->path.data) w->path.data[old] = '\0';
}

static void *member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->offset;
}

static size_t count_of(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return *(const size_t *)((const char *)m + f->quantifier_offset);
}

/* A scalar value (or a message's pointer) read as a number; false for
 * strings and bytes. */
static bool scalar_number(ProtobufCType t, const void *p, double *out)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        *out = *(const int32_t *)p;
        return true;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        *out = *(const uint32_t *)p;
        return true;
    case PROTOBUF_C_TYPE_FLOAT: *out = *(const float *)p; return true;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        *out = (double)*(const int64_t *)p;
        return true;
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        *out = (double)*(const uint64_t *)p;
        return true;
    case PROTOBUF_C_TYPE_DOUBLE: *out = *(const double *)p; return true;
    case PROTOBUF_C_TYPE_BOOL: *out = *(const protobuf_c_boolean *)p ? 1 : 0; return true;
    default: return false;
    }
}

/* The number a message value stands for in a comparison: a Duration in
 * seconds, a wrapper's value; false for other messages. *is_duration tells
 * how to print it. */
static bool message_number(const ProtobufCMessage *m, double *out, bool *is_duration)
{
    cfg_wkt_t k = sharp_cfg_wkt_kind(m->descriptor);
    if (k == WKT_DURATION) {
        const ProtobufCFieldDescriptor *s = sharp_cfg_field(m->descriptor, "seconds"),
                                       *n = sharp_cfg_field(m->descriptor, "nanos");
        *out = (double)*(const int64_t *)member(m, s) + *(const int32_t *)member(m, n) / 1e9;
        *is_duration = true;
        return true;
    }
    if (k == WKT_WRAPPER) {
        const ProtobufCFieldDescriptor *v = sharp_cfg_field(m->descriptor, "value");
        return v && scalar_number(v->type, member(m, v), out);
    }
    return false;
}

static void format_number(char *buf, size_t cap, double v, bool duration)
{
    if (duration) snprintf(buf, cap, "%.9gs", v);
    else snprintf(buf, cap, "%.17g", v);
}

static const char *rule_words(sharp_rule_op_t op)
{
    switch (op) {
    case SHARP_RULE_GT: return "greater than";
    case SHARP_RULE_GTE: return "at least";
    case SHARP_RULE_LT: return "less than";
    case SHARP_RULE_LTE: return "at most";
    default: return "";
    }
}

/* The number in a rule's text after '=' ("gte=1ms" -> "1ms"). */
static const char *rule_operand(const sharp_support_rule_t *r)
{
    const char *eq = strchr(r->text, '=');
    return eq ? eq + 1 : r->text;
}

static int check_compare(walk_t *w, const sharp_support_rule_t *r, double v, bool duration)
{
    bool ok = true;
    switch (r->op) {
    case SHARP_RULE_GT: ok = v > r->x; break;
    case SHARP_RULE_GTE: ok = v >= r->x; break;
    case SHARP_RULE_LT: ok = v < r->x; break;
    case SHARP_RULE_LTE: ok = v <= r->x; break;
    default: break;
    }
    if (ok) return 0;
    char got[64];
    format_number(got, sizeof got, v, duration);
    w->invalid = true;
    return failf(w, "must be %s %s, got %s", rule_words(r->op), rule_operand(r), got);
}

static bool enum_defined(const ProtobufCFieldDescriptor *f, int32_t v)
{
    const ProtobufCEnumDescriptor *e = f->descriptor;
    for (unsigned i = 0; i < e->n_values; i++)
        if (e->values[i].value == v) return true;
    return false;
}

/* One element (or the single value) of field f at p against rule r. */
static int check_value(walk_t *w, const ProtobufCFieldDescriptor *f, const sharp_support_rule_t *r,
                       const void *p)
{
    double v;
    bool duration = false;
    if (r->op == SHARP_RULE_DEFINED) {
        if (f->type == PROTOBUF_C_TYPE_ENUM && !enum_defined(f, *(const int32_t *)p)) {
            w->invalid = true;
            return failf(w, "value %d is not a defined value of %s", *(const int32_t *)p,
                         ((const ProtobufCEnumDescriptor *)f->descriptor)->name);
        }
        return 0;
    }
    if (r->op == SHARP_RULE_CONST) {
        bool ok;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
            ok = !m || !message_number(m, &v, &duration) || v == r->x;
        } else {
            ok = !scalar_number(f->type, p, &v) || v == r->x;
        }
        if (ok) return 0;
        if (f->type == PROTOBUF_C_TYPE_ENUM) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value(f->descriptor, (int)v);
            return failf(w, "%s %s is not supported by SHARP (%s)", f->name, ev ? ev->name : "?",
                         r->note ? r->note : "only the default is");
        }
        char got[64];
        format_number(got, sizeof got, v, duration);
        return failf(w, "%s %s is not supported by SHARP (%s)", f->name, got, r->note ? r->note : "only the default is");
    }
    if (r->op == SHARP_RULE_MIN_LEN) {
        const char *s = f->type == PROTOBUF_C_TYPE_STRING ? *(const char *const *)p : NULL;
        if (f->type == PROTOBUF_C_TYPE_STRING && (!s || strlen(s) < (size_t)r->x)) {
            w->invalid = true;
            return failf(w, "must be at least %.0f character%s long", r->x, r->x == 1 ? "" : "s");
        }
        return 0;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        if (!m || !message_number(m, &v, &duration)) return 0;
    } else if (!scalar_number(f->type, p, &v)) {
        return 0;
    }
    return check_compare(w, r, v, duration);
}

static int check_rules(walk_t *w, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                       const sharp_support_field_t *e, bool set)
{
    for (unsigned i = 0; i < e->nrules; i++) {
        const sharp_support_rule_t *r = &e->rules[i];
        if (r->op == SHARP_RULE_REQUIRED) {
            if (!set) {
                w->invalid = true;
                return failf(w, "is required");
            }
            continue;
        }
        if (r->op == SHARP_RULE_MIN_ITEMS && f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = count_of(m, f);
            if (n < (size_t)r->x) {
                w->invalid = true;
                return failf(w, "needs at least %.0f item%s", r->x, r->x == 1 ? "" : "s");
            }
            continue;
        }
        /* A message, a oneof member or an optional scalar is checked only
         * when present; a plain proto3 scalar always (its default is a value). */
        bool presence = f->type == PROTOBUF_C_TYPE_MESSAGE || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                        (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset);
        if (presence && !set) continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            const char *arr = *(const char *const *)member(m, f);
            size_t n = count_of(m, f), esz = sharp_cfg_elem_size(f->type);
            for (size_t k = 0; k < n; k++) {
                size_t old = w->path.len;
                sharp_sbuf_printf(&w->path, "[%zu]", k);
                int rc = check_value(w, f, r, arr + k * esz);
                if (rc < 0) return rc;
                pop(w, old);
            }
        } else if (check_value(w, f, r, member(m, f)) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The field a message was reached through (both NULL at the root and
 * inside an Any): the support table's context for that message's fields. */
typedef struct {
    const ProtobufCMessageDescriptor *d;
    const ProtobufCFieldDescriptor *f;
} walk_ctx_t;

static const walk_ctx_t NO_CTX = {NULL, NULL};

static int walk_message(walk_t *w, const ProtobufCMessage *m, walk_ctx_t ctx);

/* An Any: its type must be an extension SHARP implements; its contents are
 * checked below the Any's own path, as the mapper writes them. */
static int walk_any(walk_t *w, const ProtobufCMessage *any)
{
    const ProtobufCFieldDescriptor *uf = sharp_cfg_field(any->descriptor, "type_url");
    const char *url = uf ? *(const char *const *)member(any, uf) : NULL;
    if (!url || !*url) return 0;
    size_t len = strlen(url);
    const ProtobufCMessageDescriptor *td = sharp_type_registry_find(url, len);
    if (td && sharp_cfg_wkt_kind(td) != WKT_NONE) return 0; /* a value, checked by whoever reads it */
    const sharp_support_extension_t *x = sharp_support_extension(url, len);
    if (!x) return failf(w, "unknown type URL \"%s\"", url);
    if (x->status != SHARP_FIELD_YES)
        return failf(w, "%s is not supported by SHARP (%s)", x->type, x->note ? x->note : "extension");
    if (!td) return failf(w, "%s is listed as supported but has no registered type", x->type);
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *inner = sharp_any_unpack(any, td, &e);
    if (!inner) return failf(w, "%s", e.msg);
    int rc = walk_message(w, inner, NO_CTX);
    protobuf_c_message_free_unpacked(inner, NULL);
    return rc;
}

/* A value of a message-typed field: Any, a well-known type (a leaf), or a
 * message walked field by field. */
static int walk_value(walk_t *w, const ProtobufCMessage *v, walk_ctx_t ctx)
{
    if (!v) return 0;
    cfg_wkt_t k = sharp_cfg_wkt_kind(v->descriptor);
    if (k == WKT_ANY) return walk_any(w, v);
    if (k != WKT_NONE) return 0;
    return walk_message(w, v, ctx);
}

/* A map field: a repeated <Field>Entry with key 1 and value 2. */
static bool is_map_entry(const ProtobufCMessageDescriptor *e)
{
    size_t n = strlen(e->short_name);
    return e->n_fields == 2 && e->fields[0].id == 1 && e->fields[1].id == 2 && !strcmp(e->fields[0].name, "key") &&
           !strcmp(e->fields[1].name, "value") && n > 5 && !strcmp(e->short_name + n - 5, "Entry");
}

static void push_map_key(walk_t *w, const ProtobufCMessage *entry)
{
    const ProtobufCFieldDescriptor *kf = &entry->descriptor->fields[0];
    const void *kp = member(entry, kf);
    double num;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        const char *k = *(const char *const *)kp;
        sharp_sbuf_printf(&w->path, "[\"%s\"]", k ? k : "");
    } else if (scalar_number(kf->type, kp, &num)) {
        sharp_sbuf_printf(&w->path, "[\"%.17g\"]", num);
    }
}

/* Field f of m, whose values are walked with the context "<m's type>.<f>". */
static int walk_field(walk_t *w, const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
    walk_ctx_t ctx = {m->descriptor, f};
    if (f->label != PROTOBUF_C_LABEL_REPEATED) return walk_value(w, *(ProtobufCMessage *const *)member(m, f), ctx);
    ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)member(m, f);
    size_t n = count_of(m, f);
    bool map = is_map_entry(f->descriptor);
    for (size_t i = 0; i < n; i++) {
        size_t old = w->path.len;
        int rc;
        if (map) {
            push_map_key(w, arr[i]);
            const ProtobufCFieldDescriptor *vf = &arr[i]->descriptor->fields[1];
            rc = vf->type == PROTOBUF_C_TYPE_MESSAGE
                     ? walk_value(w, *(ProtobufCMessage *const *)member(arr[i], vf), ctx)
                     : 0;
        } else {
            sharp_sbuf_append_index(&w->path, i);
            rc = walk_value(w, arr[i], ctx);
        }
        if (rc < 0) return rc;
        pop(w, old);
    }
    return 0;
}

static int walk_message(walk_t *w, const ProtobufCMessage *m, walk_ctx_t ctx)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (m->n_unknown_fields)
        return failf(w, "field number %u of %s is not supported by SHARP", m->unknown_fields[0].tag, d->name);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const sharp_support_field_t *e = sharp_support_field_of(d, f, ctx.d, ctx.f);
        bool set = sharp_cfg_field_present(m, f);
        if (!set && !(e && e->nrules)) continue; /* nothing to check: no path to build */
        size_t old = push_field(w, f->name);
        if (e && e->nrules && check_rules(w, m, f, e, set) < 0) return -1;
        if (set) {
            if (!e)
                return failf(w, "%s.%s is not supported by SHARP", d->name, f->name);
            if (e->status == SHARP_FIELD_NO)
                return failf(w, "%s is not supported by SHARP (%s)", f->name, e->note ? e->note : "this feature");
            if (e->status == SHARP_FIELD_YES && walk_field(w, m, f) < 0) return -1;
        }
        pop(w, old);
    }
    return 0;
}

int sharp_config_check_support_kind(const ProtobufCMessage *m, const sharp_config_doc_t *doc,
                                    const char *base_path, sharp_config_error_t *err, bool *invalid)
{
    sharp_config_error_t local;
    if (!err) err = &local;
    err->msg[0] = '\0';
    walk_t w = {.doc = doc, .err = err};
    if (base_path && *base_path) sharp_sbuf_append(&w.path, base_path, strlen(base_path));
    int rc = walk_value(&w, m, NO_CTX);
    sharp_sbuf_free(&w.path);
    if (invalid) *invalid = rc < 0 && w.invalid;
    return rc;
}

int sharp_config_check_support(const ProtobufCMessage *m, const sharp_config_doc_t *doc,
                               const char *base_path, sharp_config_error_t *err)
{
    return sharp_config_check_support_kind(m, doc, base_path, err, NULL);
}
