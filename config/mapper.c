/* mapper.c: the generic walk of a libyaml node tree onto a protobuf-c message
 * through its descriptor: field lookup by proto or JSON name, singular,
 * repeated and map fields, oneofs, presence. Scalars are converted in
 * scalar.c and well-known types in wkt.c. */
#include "mapper_internal.h"
#include "config/support.h"

ProtobufCMessage *sharp_cfg_new_message(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = sharp_calloc(1, d->sizeof_message);
    protobuf_c_message_init(d, m);
    return m;
}

const ProtobufCFieldDescriptor *sharp_cfg_field(const ProtobufCMessageDescriptor *d, const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

void *sharp_cfg_member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->offset;
}

static void *quantifier(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (char *)m + f->quantifier_offset;
}

bool sharp_cfg_field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const void *slot = (const char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) return *(const size_t *)quantifier(m, f) > 0;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) return *(const uint32_t *)quantifier(m, f) == f->id;
    if (f->label == PROTOBUF_C_LABEL_REQUIRED) return true;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) return *(void *const *)slot != NULL;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)slot;
            return s && s != f->default_value;
        }
        return *(const protobuf_c_boolean *)quantifier(m, f);
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)slot;
        return s && *s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)slot)->len > 0;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)slot != 0;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)slot != 0;
    default:
        return sharp_cfg_elem_size(f->type) == 8 ? *(const uint64_t *)slot != 0 : *(const uint32_t *)slot != 0;
    }
}

void sharp_cfg_mark_present(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        *(uint32_t *)quantifier(msg, f) = f->id;
    } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
               f->type != PROTOBUF_C_TYPE_MESSAGE) {
        *(protobuf_c_boolean *)quantifier(msg, f) = 1;
    }
}

size_t sharp_cfg_elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32: case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 8;
}

/* lowerCamelCase JSON name of a proto field name, compared without
 * building it: '_' is dropped and the letter after it upper-cased. */
static bool json_name_eq(const char *proto, const char *key, size_t len)
{
    size_t k = 0;
    bool upper = false;
    for (const char *p = proto; *p; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        char ch = *p;
        if (upper && ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        upper = false;
        if (k >= len || key[k] != ch) return false;
        k++;
    }
    return k == len;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d, const char *key,
                                                  size_t len)
{
    if (strlen(key) == len) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (f) return f;
    }
    for (unsigned i = 0; i < d->n_fields; i++)
        if (json_name_eq(d->fields[i].name, key, len)) return &d->fields[i];
    return NULL;
}

/* True if `f` is a proto map field: a repeated message named after the field
 * ("foo_bar" -> "FooBarEntry") with key = 1 and value = 2, nested in `owner`. */
static bool is_map_field(const ProtobufCMessageDescriptor *owner, const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2) return false;
    if (strcmp(e->fields[0].name, "key") || strcmp(e->fields[1].name, "value")) return false;
    size_t on = strlen(owner->name);
    if (strncmp(e->name, owner->name, on) || e->name[on] != '.') return false;
    const char *s = e->short_name;
    bool upper = true;
    for (const char *p = f->name; *p; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        char ch = *p;
        if (upper && ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        upper = false;
        if (*s++ != ch) return false;
    }
    return !strcmp(s, "Entry");
}

static bool null_allowed_as_element(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_MESSAGE && sharp_cfg_wkt_kind(f->descriptor) == WKT_VALUE;
}

struct item_list {
    yaml_node_t **v;
    size_t n, cap;
};

static void items_push(struct item_list *l, yaml_node_t *node)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = sharp_realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = node;
}

/* The elements of a repeated field's value as Envoy reads them: protobuf's
 * JsonStringToMessage always runs its parser with allow_legacy_syntax, which
 * takes a single non-list value as a one-element list ("domains: '*'", one
 * mapping for a list of messages) and flattens a list nested in the list
 * into it, except where the element type is google.protobuf.Value (a list
 * is then one element). Nesting depth is bounded by the document pre-check. */
static void collect_items(cfg_ctx_t *c, yaml_node_t *node, bool flatten, struct item_list *out)
{
    if (node->type != YAML_SEQUENCE_NODE) {
        items_push(out, node);
        return;
    }
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        yaml_node_t *item = yaml_document_get_node(c->ydoc, *it);
        if (flatten && item && item->type == YAML_SEQUENCE_NODE) collect_items(c, item, flatten, out);
        else items_push(out, item);
    }
}

/* The element a JSON null inside a list stands for under protobuf's legacy
 * syntax: the type's default (0, "", false, the first enum number, an empty
 * message). */
static void default_element(const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) *(char **)slot = sharp_strdup("");
    else if (f->type == PROTOBUF_C_TYPE_MESSAGE) *(ProtobufCMessage **)slot = sharp_cfg_new_message(f->descriptor);
    /* numbers, bools, enums and bytes are already zero */
}

/* Maps a YAML value onto repeated field f of msg (see collect_items). The
 * array is sized up front and n_<field> counts the finished elements, so
 * freeing msg midway releases exactly what was built. */
/* The "name" key of a mapping node (an xDS resource's), "" without one. */
static char *item_name(cfg_ctx_t *c, yaml_node_t *item)
{
    if (item->type != YAML_MAPPING_NODE) return sharp_strdup("");
    for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top; p++) {
        cfg_scalar_t k, v;
        if (sharp_cfg_scalar_of(yaml_document_get_node(c->ydoc, p->key), &k) && k.len == 4 && !memcmp(k.s, "name", 4) &&
            sharp_cfg_scalar_of(yaml_document_get_node(c->ydoc, p->value), &v) && !v.null)
            return sharp_strndup(v.s, v.len);
    }
    return sharp_strdup("");
}

static int map_repeated(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *f)
{
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc) && sc.null) return 0;
    struct item_list items = {0};
    collect_items(c, node, !null_allowed_as_element(f), &items);
    if (!items.n) {
        free(items.v);
        return 0;
    }
    size_t esz = sharp_cfg_elem_size(f->type);
    char *arr = sharp_calloc(items.n, esz);
    size_t *n = quantifier(msg, f);
    *(void **)sharp_cfg_member(msg, f) = arr;
    *n = 0;
    int rc = 0;
    /* the root's field whose elements are refused one by one */
    bool alone = c->alone_field && f->type == PROTOBUF_C_TYPE_MESSAGE && !strcmp(f->name, c->alone_field) &&
                 c->path.len == strlen(c->alone_field);
    for (size_t i = 0; i < items.n; i++) {
        yaml_node_t *item = items.v[i];
        size_t old = sharp_cfg_push_index(c, i);
        sharp_cfg_note(c, item);
        void *slot = arr + *n * esz;
        rc = sharp_cfg_map_value(c, item, f, slot);
        if (rc < 0 && alone && c->unsupported) {
            /* left out (the slot stays empty: a message is stored only
             * when it mapped whole), listed with its name and why */
            c->refused = sharp_realloc(c->refused, (c->nrefused + 1) * sizeof *c->refused);
            c->refused[c->nrefused++] = (sharp_config_refused_t){i, item_name(c, item), sharp_strdup(c->err->msg)};
            c->err->msg[0] = '\0';
            c->unsupported = false;
            sharp_cfg_pop(c, old);
            rc = 0;
            continue;
        }
        if (rc < 0) break;
        if (rc == 0) default_element(f, slot);
        sharp_cfg_pop(c, old);
        (*n)++;
        rc = 0;
    }
    free(items.v);
    return rc;
}

/* Maps a YAML mapping onto map field f: one <Field>Entry per pair, keys
 * converted to the key type, duplicate keys rejected, a null value taken as
 * the value type's default (as protobuf's JSON parser does). */
static int map_map(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc) && sc.null) return 0;
    if (node->type != YAML_MAPPING_NODE)
        return sharp_cfg_fail(c, node, "expected a mapping for map field \"%s\", got %s", f->name,
                              sharp_cfg_node_kind(node));
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    cfg_pair_t *pairs;
    size_t np;
    if (sharp_cfg_pairs(c, node, &pairs, &np) < 0) return -1;
    int rc = 0;
    if (!np) goto out;
    ProtobufCMessage **arr = sharp_calloc(np, sizeof *arr);
    size_t *n = quantifier(msg, f);
    *(void **)sharp_cfg_member(msg, f) = arr;
    *n = 0;
    for (size_t i = 0; i < np && rc == 0; i++) {
        cfg_scalar_t k;
        if (!sharp_cfg_scalar_of(pairs[i].key, &k)) {
            rc = sharp_cfg_fail(c, pairs[i].key, "map keys must be scalars");
            break;
        }
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++) {
            cfg_scalar_t o;
            sharp_cfg_scalar_of(pairs[j].key, &o);
            dup = o.len == k.len && !memcmp(o.s, k.s, k.len);
        }
        size_t old = sharp_cfg_push_key(c, k.s, k.len);
        if (dup && pairs[i].merged) {
            sharp_cfg_pop(c, old);
            continue;
        }
        if (dup) {
            rc = sharp_cfg_fail(c, pairs[i].key, "duplicate key \"%.*s\"", (int)k.len, k.s);
            break;
        }
        sharp_cfg_note(c, pairs[i].key);
        ProtobufCMessage *entry = sharp_cfg_new_message(ed);
        arr[(*n)++] = entry;
        if (sharp_cfg_scalar_value(c, pairs[i].key, kf, sharp_cfg_member(entry, kf), true) < 0) {
            rc = -1;
            break;
        }
        int vr = sharp_cfg_map_value(c, pairs[i].value, vf, sharp_cfg_member(entry, vf));
        if (vr == 0) default_element(vf, sharp_cfg_member(entry, vf)); /* protobuf: null is the default */
        if (vr < 0) {
            rc = -1;
            break;
        }
        sharp_cfg_pop(c, old);
    }
out:
    free(pairs);
    return rc;
}

/* True if node holds nothing: null, or an empty list or mapping. */
static bool empty_node(const yaml_node_t *node)
{
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc)) return sc.null;
    if (node->type == YAML_SEQUENCE_NODE) return node->data.sequence.items.top == node->data.sequence.items.start;
    return false;
}

int sharp_cfg_map_field(cfg_ctx_t *c, yaml_node_t *value, ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *f)
{
    const ProtobufCMessageDescriptor *old_msg = c->ctx_msg;
    const ProtobufCFieldDescriptor *old_field = c->ctx_field;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        c->ctx_msg = msg->descriptor;
        c->ctx_field = f;
    }
    int rc;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        rc = is_map_field(msg->descriptor, f) ? map_map(c, value, msg, f) : map_repeated(c, value, msg, f);
    } else {
        rc = sharp_cfg_map_value(c, value, f, sharp_cfg_member(msg, f));
        if (rc > 0) sharp_cfg_mark_present(msg, f);
        rc = rc < 0 ? -1 : 0;
    }
    c->ctx_msg = old_msg;
    c->ctx_field = old_field;
    return rc;
}

/* Maps each key of `mapping` to a field of msg by proto or JSON name. An
 * explicit key naming a field twice, or a second member of a oneof, is an
 * error; a key that came in through "<<" silently yields to one already set.
 * Unknown keys are errors whose path ends in the unknown key. */
int sharp_cfg_map_fields(cfg_ctx_t *c, yaml_node_t *mapping, ProtobufCMessage *msg, const char *skip)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    cfg_pair_t *pairs;
    size_t np;
    if (sharp_cfg_pairs(c, mapping, &pairs, &np) < 0) return -1;
    const ProtobufCFieldDescriptor **seen = sharp_calloc(d->n_fields ? d->n_fields : 1, sizeof *seen);
    int rc = 0;
    for (size_t i = 0; i < np && rc == 0; i++) {
        cfg_scalar_t k;
        if (!sharp_cfg_scalar_of(pairs[i].key, &k) || k.null) {
            rc = sharp_cfg_fail(c, pairs[i].key, "field names must be strings, got %s",
                                k.null ? "null" : sharp_cfg_node_kind(pairs[i].key));
            break;
        }
        if (skip && strlen(skip) == k.len && !memcmp(skip, k.s, k.len)) continue;
        const ProtobufCFieldDescriptor *f = find_field(d, k.s, k.len);
        if (!f) {
            sharp_cfg_push_name(c, k.s, k.len);
            /* A real Envoy field SHARP's protos leave out names its feature. */
            const sharp_support_field_t *e = sharp_support_field(d->name, k.s, k.len);
            if (e && e->status == SHARP_FIELD_NO)
                rc = sharp_cfg_fail_unsupported(c, pairs[i].key, "%s is not supported by SHARP (%s)", e->field,
                                                e->note);
            else
                rc = sharp_cfg_fail(c, pairs[i].key, "unknown field \"%.*s\" in %s", (int)k.len, k.s, d->name);
            break;
        }
        unsigned fi = (unsigned)(f - d->fields);
        size_t old = sharp_cfg_push_field(c, f->name);
        if (seen[fi]) {
            if (!pairs[i].merged)
                rc = sharp_cfg_fail(c, pairs[i].key, "duplicate field \"%s\"", f->name);
            sharp_cfg_pop(c, old);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            for (unsigned j = 0; j < d->n_fields; j++) {
                const ProtobufCFieldDescriptor *o = seen[j];
                if (!o || o == f || !(o->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                    o->quantifier_offset != f->quantifier_offset)
                    continue;
                if (pairs[i].merged) break;
                rc = sharp_cfg_fail(c, pairs[i].key,
                                    "\"%s\" and \"%s\" are members of the same oneof; set only one",
                                    o->name, f->name);
                break;
            }
            if (rc < 0) break;
            uint32_t cs = *(uint32_t *)quantifier(msg, f);
            if (cs != 0 && cs != f->id) { /* a merged sibling lost to an explicit one */
                sharp_cfg_pop(c, old);
                continue;
            }
        }
        seen[fi] = f;
        sharp_cfg_note(c, pairs[i].key);
        /* A message field SHARP refuses is refused here, before its contents
         * are mapped: an extension inside it that SHARP does not know, or an
         * Envoy field its protos leave out, would otherwise hide the reason. */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && !empty_node(pairs[i].value)) {
            const sharp_support_field_t *e = sharp_support_field_of(d, f, c->ctx_msg, c->ctx_field);
            if (e && e->status == SHARP_FIELD_NO) {
                rc = sharp_cfg_fail_unsupported(c, pairs[i].key, "%s is not supported by SHARP (%s)", f->name,
                                                e->note);
                break;
            }
        }
        rc = sharp_cfg_map_field(c, pairs[i].value, msg, f);
        if (rc == 0) sharp_cfg_pop(c, old);
    }
    free(seen);
    free(pairs);
    return rc;
}

/* Well-known types first (they may hand back to the generic path), then a
 * mapping onto fields; null leaves msg as it is. */
int sharp_cfg_map_message(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg)
{
    cfg_wkt_t kind = sharp_cfg_wkt_kind(msg->descriptor);
    if (kind != WKT_NONE) {
        int rc = sharp_cfg_wkt_map(c, node, msg, kind);
        if (rc <= 0) return rc;
    }
    cfg_scalar_t sc;
    if (sharp_cfg_scalar_of(node, &sc) && sc.null) return 0;
    if (node->type != YAML_MAPPING_NODE)
        return sharp_cfg_fail(c, node, "expected a mapping for %s, got %s", msg->descriptor->name,
                              sharp_cfg_node_kind(node));
    return sharp_cfg_map_fields(c, node, msg, NULL);
}

/* One value of field f: scalars go to scalar.c; a message is built in full
 * and stored in the slot only when it mapped without error, so a failure
 * leaves the owner consistent for protobuf_c_message_free_unpacked. */
int sharp_cfg_map_value(cfg_ctx_t *c, yaml_node_t *node, const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) return sharp_cfg_scalar_value(c, node, f, slot, false);
    const ProtobufCMessageDescriptor *d = f->descriptor;
    cfg_scalar_t sc;
    bool is_null = sharp_cfg_scalar_of(node, &sc) && sc.null;
    if (is_null && sharp_cfg_wkt_kind(d) != WKT_VALUE) return 0;
    ProtobufCMessage *sub = sharp_cfg_new_message(d);
    if (sharp_cfg_map_message(c, node, sub) < 0) {
        protobuf_c_message_free_unpacked(sub, NULL);
        return -1;
    }
    *(ProtobufCMessage **)slot = sub;
    return 1;
}
