/* runtime_config.c: layered_runtime -> runtime loader (runtime_config.h). */
#include "config/runtime_config.h"
#include "safe_regex.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

typedef Envoy__Config__Bootstrap__V3__LayeredRuntime layered_t;
typedef Envoy__Config__Bootstrap__V3__RuntimeLayer layer_t;

/* Sets the error path to `path` and the message; evaluates to -1. */
#define ERR(...) set_err(epath, epathlen, path, emsg, emsglen, __VA_ARGS__)

static int set_err(char *epath, size_t epathlen, const char *path, char *emsg, size_t emsglen, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int set_err(char *epath, size_t epathlen, const char *path, char *emsg, size_t emsglen, const char *fmt, ...)
{
    snprintf(epath, epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(emsg, emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static void number_text(double d, sharp_sbuf_t *out)
{
    /* protobuf's JSON number: whole numbers without a fraction, else the
     * shortest text that reads back the same */
    if (d == floor(d) && fabs(d) < 1e15) {
        sharp_sbuf_printf(out, "%.0f", d);
        return;
    }
    char buf[64];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    sharp_sbuf_puts(out, buf);
}

static int field_cmp(const void *a, const void *b)
{
    const Google__Protobuf__Struct__FieldsEntry *const *x = a, *const *y = b;
    return strcmp((*x)->key, (*y)->key);
}

static void value_text(const Google__Protobuf__Value *v, sharp_sbuf_t *out, bool flow)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        number_text(v->number_value, out);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        sharp_sbuf_puts(out, v->string_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        sharp_sbuf_puts(out, v->bool_value ? "true" : "false");
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE: {
        const Google__Protobuf__Struct *st = v->struct_value;
        size_t n = st ? st->n_fields : 0;
        if (!n) {
            sharp_sbuf_puts(out, "{}");
            break;
        }
        /* keys in order, as protobuf's JSON printer gives them */
        const Google__Protobuf__Struct__FieldsEntry **f = sharp_calloc(n, sizeof *f);
        for (size_t i = 0; i < n; i++)
            f[i] = st->fields[i];
        qsort(f, n, sizeof *f, field_cmp);
        if (flow) sharp_sbuf_puts(out, "{");
        for (size_t i = 0; i < n; i++) {
            if (i) sharp_sbuf_puts(out, flow ? ", " : "\n");
            sharp_sbuf_printf(out, "%s: ", f[i]->key);
            if (f[i]->value) value_text(f[i]->value, out, true);
            else sharp_sbuf_puts(out, "null");
        }
        if (flow) sharp_sbuf_puts(out, "}");
        free(f);
        break;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        const Google__Protobuf__ListValue *l = v->list_value;
        sharp_sbuf_puts(out, "[");
        for (size_t i = 0; l && i < l->n_values; i++) {
            if (i) sharp_sbuf_puts(out, ", ");
            value_text(l->values[i], out, true);
        }
        sharp_sbuf_puts(out, "]");
        break;
    }
    default:
        sharp_sbuf_puts(out, "null");
        break;
    }
}

void sharp_config_runtime_value_text(const Google__Protobuf__Value *v, sharp_sbuf_t *out)
{
    value_text(v, out, false);
}

/* Envoy's ProtoLayer::walkProtoValue: nested structs are dotted keys; a
 * struct that is empty or has a numerator or denominator is one value (a
 * FractionalPercent); lists and nulls are errors. Envoy keeps whichever of
 * two values flattening to the same key its map yields first; SHARP
 * refuses such a layer rather than pick one. */
static int walk(const Google__Protobuf__Value *v, const char *key, const char *path, sharp_runtime_values_t *out,
                char *epath, size_t epathlen, char *emsg, size_t emsglen, unsigned depth)
{
    if (depth > 64) return ERR("runtime keys nest too deeply");
    if (v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE) {
        const Google__Protobuf__Struct *st = v->struct_value;
        bool leaf = !st || !st->n_fields;
        for (size_t i = 0; st && i < st->n_fields; i++)
            if (strcmp(st->fields[i]->key, "numerator") == 0 || strcmp(st->fields[i]->key, "denominator") == 0)
                leaf = true;
        if (!leaf) {
            for (size_t i = 0; i < st->n_fields; i++) {
                const Google__Protobuf__Struct__FieldsEntry *f = st->fields[i];
                size_t kl = strlen(key) + strlen(f->key) + 2, pl = strlen(path) + strlen(f->key) + 2;
                char *k = sharp_calloc(kl, 1), *p = sharp_calloc(pl, 1);
                snprintf(k, kl, "%s.%s", key, f->key);
                snprintf(p, pl, "%s.%s", path, f->key);
                int rc = walk(f->value, k, p, out, epath, epathlen, emsg, emsglen, depth + 1);
                free(k);
                free(p);
                if (rc < 0) return -1;
            }
            return 0;
        }
    } else if (!v || v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET ||
               v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE ||
               v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE) {
        return ERR("Invalid runtime entry value for %s", key);
    }
    if (sharp_runtime_values_find(out, key))
        return ERR("runtime key '%s' is given twice in this layer (as a dotted key and nested)", key);
    sharp_sbuf_t text = {0};
    sharp_config_runtime_value_text(v, &text);
    sharp_runtime_values_set(out, key, sharp_sbuf_cstr(&text));
    sharp_sbuf_free(&text);
    return 0;
}

int sharp_config_runtime_struct(const Google__Protobuf__Struct *st, const char *path, sharp_runtime_values_t *out,
                                char *epath, size_t epathlen, char *emsg, size_t emsglen)
{
    for (size_t k = 0; st && k < st->n_fields; k++) {
        const Google__Protobuf__Struct__FieldsEntry *f = st->fields[k];
        size_t fl = strlen(path) + strlen(f->key) + 2;
        char *fp = sharp_calloc(fl, 1);
        snprintf(fp, fl, "%s.%s", path, f->key);
        int rc = walk(f->value, f->key, fp, out, epath, epathlen, emsg, emsglen, 0);
        free(fp);
        if (rc < 0) return -1;
    }
    return 0;
}

sharp_runtime_t *sharp_config_layered_runtime(const layered_t *lr, const char *service_cluster, sharp_stats_t *stats,
                                              char *epath, size_t epathlen, char *emsg, size_t emsglen)
{
    sharp_runtime_t *rt = sharp_runtime_create();
    char path[160];
    snprintf(path, sizeof path, "layered_runtime");
    /* Envoy's InitialImpl: a layered_runtime without layers gets one admin
     * layer; no layered_runtime at all means no layers */
    if (lr && !lr->n_layers && sharp_runtime_add_layer(rt, "", SHARP_RUNTIME_LAYER_ADMIN, emsg, emsglen) < 0)
        goto bad;
    for (size_t i = 0; lr && i < lr->n_layers; i++) {
        const layer_t *l = lr->layers[i];
        snprintf(path, sizeof path, "layered_runtime.layers[%zu]", i);
        sharp_runtime_layer_kind_t kind;
        switch (l->layer_specifier_case) {
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_STATIC_LAYER:
            kind = SHARP_RUNTIME_LAYER_STATIC;
            break;
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_DISK_LAYER:
            kind = SHARP_RUNTIME_LAYER_DISK;
            break;
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_ADMIN_LAYER:
            kind = SHARP_RUNTIME_LAYER_ADMIN;
            break;
        case ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_RTDS_LAYER:
            /* empty until its subscription (xds.h) delivers the layer */
            kind = SHARP_RUNTIME_LAYER_RTDS;
            break;
        default:
            /* PGV: the layer_specifier oneof is required */
            ERR("one of static_layer, disk_layer, admin_layer, rtds_layer is required");
            goto bad;
        }
        int idx = sharp_runtime_add_layer(rt, l->name, kind, emsg, emsglen);
        if (idx < 0) {
            snprintf(path + strlen(path), sizeof path - strlen(path), ".name");
            snprintf(epath, epathlen, "%s", path);
            goto bad_msg;
        }
        if (kind == SHARP_RUNTIME_LAYER_STATIC) {
            char p[200];
            snprintf(p, sizeof p, "%s.static_layer", path);
            if (sharp_config_runtime_struct(l->static_layer, p, &rt->layers[idx].values, epath, epathlen, emsg,
                                            emsglen) < 0)
                goto bad_msg;
        } else if (kind == SHARP_RUNTIME_LAYER_DISK) {
            const Envoy__Config__Bootstrap__V3__RuntimeLayer__DiskLayer *d = l->disk_layer;
            sharp_runtime_set_disk(rt, idx, d->symlink_root ? d->symlink_root : "",
                                   d->subdirectory ? d->subdirectory : "",
                                   d->append_service_cluster ? (service_cluster ? service_cluster : "") : NULL);
        }
    }
    if (stats) sharp_runtime_stats_init(rt, stats);
    sharp_runtime_load(rt);
    return rt;
bad:
    snprintf(epath, epathlen, "%s", path);
bad_msg:
    sharp_runtime_free(rt);
    return NULL;
}

/* The bootstrap path of the layer value that gives `key` its final value. */
static void value_path(const sharp_runtime_t *rt, const layered_t *lr, const char *key, char *epath, size_t epathlen)
{
    const sharp_runtime_snapshot_t *s = rt->current;
    snprintf(epath, epathlen, "layered_runtime");
    for (uint32_t i = s->nlayers; i-- > 0;) {
        if (!sharp_runtime_values_find(&s->layers[i].values, key)) continue;
        for (size_t k = 0; lr && k < lr->n_layers; k++) {
            if (strcmp(lr->layers[k]->name, s->layers[i].name) != 0) continue;
            if (lr->layers[k]->layer_specifier_case ==
                ENVOY__CONFIG__BOOTSTRAP__V3__RUNTIME_LAYER__LAYER_SPECIFIER_STATIC_LAYER)
                snprintf(epath, epathlen, "layered_runtime.layers[%zu].static_layer.%s", k, key);
            else
                snprintf(epath, epathlen, "layered_runtime.layers[%zu].disk_layer (%s)", k, key);
            return;
        }
        return;
    }
}

int sharp_config_runtime_regex_limits(const sharp_runtime_t *rt, const layered_t *lr, bool strict, char *epath,
                                      size_t epathlen, char *emsg, size_t emsglen)
{
    static const char *const keys[2] = {"re2.max_program_size.error_level", "re2.max_program_size.warn_level"};
    uint32_t lim[2] = {SHARP_REGEX_DEFAULT_ERROR_LEVEL, UINT32_MAX};
    for (int i = 0; i < 2; i++) {
        const sharp_runtime_entry_t *e = sharp_runtime_snapshot_get(rt->current, keys[i]);
        if (!e) continue;
        if (!e->has_uint) {
            if (!strict) continue;
            value_path(rt, lr, keys[i], epath, epathlen);
            snprintf(emsg, emsglen, "must be a non-negative integer");
            return -1;
        }
        /* more than 32 bits: no limit */
        lim[i] = e->uint_value >= UINT32_MAX ? UINT32_MAX : (uint32_t)e->uint_value;
    }
    sharp_regex_set_runtime_limits(lim[0], lim[1]);
    return 0;
}
