/* redact.c: Envoy's MessageUtil::redact for /config_dump.
 *
 * Envoy marks the fields that hold secrets [(udpa.annotations.sensitive) =
 * true] in its protos and redacts them in every config dump. SHARP's
 * compiled protos do not carry that annotation, so the list below is the
 * one place that says which fields are sensitive: a new one is one line
 * (test_redact checks that every entry names a field of SHARP's protos). */
#include "mapper_internal.h"

#include <stdlib.h>

#include "google/protobuf/struct.pb-c.h"

const sharp_sensitive_field_t sharp_sensitive_fields[] = {
    /* api/envoy/extensions/transport_sockets/tls/v3/common.proto */
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "private_key"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "pkcs12"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsCertificate", "password"},
    {"envoy.extensions.transport_sockets.tls.v3.PrivateKeyProvider", "typed_config"},
    {"envoy.extensions.transport_sockets.tls.v3.TlsSessionTicketKeys", "keys"},
    /* api/envoy/extensions/transport_sockets/tls/v3/secret.proto */
    {"envoy.extensions.transport_sockets.tls.v3.GenericSecret", "secret"},
    {"envoy.extensions.transport_sockets.tls.v3.GenericSecret", "secrets"},
    /* api/envoy/config/core/v3/grpc_service.proto */
    {"envoy.config.core.v3.GrpcService.GoogleGrpc.SslCredentials", "private_key"},
};
const size_t sharp_nsensitive_fields = sizeof sharp_sensitive_fields / sizeof *sharp_sensitive_fields;

static const char REDACTED[] = "[redacted]";

bool sharp_config_field_sensitive(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    for (size_t i = 0; i < sharp_nsensitive_fields; i++)
        if (!strcmp(sharp_sensitive_fields[i].field, f->name) && !strcmp(sharp_sensitive_fields[i].message, d->name))
            return true;
    return false;
}

static void redact_message(ProtobufCMessage *m, bool sensitive);

static void set_string(const ProtobufCFieldDescriptor *f, char **s)
{
    if (*s && *s != f->default_value && *s != protobuf_c_empty_string) free(*s);
    *s = sharp_strdup(REDACTED);
}

static void set_bytes(const ProtobufCFieldDescriptor *f, ProtobufCBinaryData *b)
{
    const ProtobufCBinaryData *d = f->default_value;
    if (b->data && (!d || b->data != d->data)) free(b->data);
    b->len = sizeof REDACTED - 1;
    b->data = sharp_calloc(1, b->len);
    memcpy(b->data, REDACTED, b->len);
}

/* Envoy's redactOpaque for an Any: the message its type_url names,
 * redacted and packed back. false when the type is not known (then the
 * Any is redacted as a plain message, as Envoy does). */
static bool redact_any(ProtobufCMessage *any, bool sensitive)
{
    const ProtobufCFieldDescriptor *uf = sharp_cfg_field(any->descriptor, "type_url"),
                                   *vf = sharp_cfg_field(any->descriptor, "value");
    if (!uf || !vf) return false;
    char *const *url = sharp_cfg_member(any, uf);
    ProtobufCBinaryData *bd = sharp_cfg_member(any, vf);
    bool has_url = *url && **url, has_value = bd->len > 0;
    if (!has_url && !has_value) return true;
    if (!has_url || !has_value) return false;
    ProtobufCMessage *inner = sharp_any_unpack(any, NULL, NULL);
    if (!inner) return false;
    redact_message(inner, sensitive);
    size_t len = protobuf_c_message_get_packed_size(inner);
    uint8_t *buf = sharp_calloc(1, len ? len : 1);
    protobuf_c_message_pack(inner, buf);
    protobuf_c_message_free_unpacked(inner, NULL);
    const ProtobufCBinaryData *d = vf->default_value;
    if (bd->data && (!d || bd->data != d->data)) free(bd->data);
    bd->data = buf;
    bd->len = len;
    return true;
}

/* ---- TypedStruct -------------------------------------------------------------------------- */

/* Envoy redacts a TypedStruct as the message its type_url names (it turns
 * the Struct into that message, redacts it and turns it back into JSON).
 * Here the Struct is walked with that message's descriptor instead: the
 * same values change, and a Struct SHARP cannot read stays as it is. */

static void value_clear(Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: free(v->string_value); break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        if (v->struct_value) protobuf_c_message_free_unpacked(&v->struct_value->base, NULL);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        if (v->list_value) protobuf_c_message_free_unpacked(&v->list_value->base, NULL);
        break;
    default: break;
    }
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET;
}

static void value_set_string(Google__Protobuf__Value *v, const char *s)
{
    value_clear(v);
    v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
    v->string_value = sharp_strdup(s);
}

/* Every string below v "[redacted]", every other scalar null (what a
 * sensitive Struct, Value or unknown content becomes). */
static void value_redact_all(Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: value_set_string(v, REDACTED); break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        v->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        for (size_t i = 0; v->struct_value && i < v->struct_value->n_fields; i++)
            if (v->struct_value->fields[i]->value) value_redact_all(v->struct_value->fields[i]->value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        for (size_t i = 0; v->list_value && i < v->list_value->n_values; i++) value_redact_all(v->list_value->values[i]);
        break;
    default: break;
    }
}

/* Whether JSON key `k` names field `name`: its proto name or its
 * lowerCamelCase JSON name, as protobuf's JSON parser accepts both. */
static bool key_names(const char *k, const char *name)
{
    if (!strcmp(k, name)) return true;
    for (bool up = false; *name; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        char c = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
        up = false;
        if (*k++ != c) return false;
    }
    return *k == '\0';
}

static void struct_redact_as(Google__Protobuf__Struct *st, const ProtobufCMessageDescriptor *d, bool sensitive,
                             const char *skip);

/* One JSON value of field f (an element, for a repeated field). false: the
 * value is a scalar that redaction clears (the caller drops it). */
static bool value_redact_as(Google__Protobuf__Value *v, const ProtobufCFieldDescriptor *f, bool sensitive)
{
    if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES) {
        if (sensitive && v->kind_case != GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE)
            value_set_string(v, f->type == PROTOBUF_C_TYPE_STRING ? REDACTED : "W3JlZGFjdGVkXQ==");
        return true;
    }
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) return !sensitive;
    const ProtobufCMessageDescriptor *md = f->descriptor;
    switch (sharp_cfg_wkt_kind(md)) {
    case WKT_NONE:
        if (v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE && v->struct_value)
            struct_redact_as(v->struct_value, md, sensitive, NULL);
        else if (sensitive) value_redact_all(v);
        return true;
    case WKT_ANY: {
        Google__Protobuf__Struct *st = v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE ? v->struct_value : NULL;
        const ProtobufCMessageDescriptor *td = NULL;
        for (size_t i = 0; st && i < st->n_fields && !td; i++) {
            Google__Protobuf__Value *u = st->fields[i]->value;
            if (!strcmp(st->fields[i]->key, "@type") && u && u->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
                td = sharp_type_registry_find(u->string_value, strlen(u->string_value));
        }
        if (td && sharp_cfg_wkt_kind(td) == WKT_NONE) struct_redact_as(st, td, sensitive, "@type");
        else if (sensitive) value_redact_all(v);
        return true;
    }
    default:
        /* Struct, Value, wrappers, Duration...: their scalars, when sensitive */
        if (sensitive) value_redact_all(v);
        return true;
    }
}

/* The entries of Struct st as the fields of a message of type d. */
static void struct_redact_as(Google__Protobuf__Struct *st, const ProtobufCMessageDescriptor *d, bool sensitive,
                             const char *skip)
{
    size_t k = 0;
    for (size_t i = 0; i < st->n_fields; i++) {
        Google__Protobuf__Struct__FieldsEntry *e = st->fields[i];
        bool keep = true;
        const ProtobufCFieldDescriptor *f = NULL;
        if (!(skip && !strcmp(e->key, skip)))
            for (unsigned j = 0; j < d->n_fields && !f; j++)
                if (key_names(e->key, d->fields[j].name)) f = &d->fields[j];
        Google__Protobuf__Value *v = e->value;
        if (skip && !strcmp(e->key, skip)) {
            /* the Any's "@type" */
        } else if (!f || !v) {
            if (sensitive && v) value_redact_all(v);
        } else {
            bool s = sensitive || sharp_config_field_sensitive(d, f);
            if (f->label == PROTOBUF_C_LABEL_REPEATED && sharp_cfg_field_is_map(f)) {
                /* {key: value}: the values, as the map entries' value field */
                const ProtobufCFieldDescriptor *vf = &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[1];
                Google__Protobuf__Struct *m =
                    v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE ? v->struct_value : NULL;
                for (size_t j = 0; m && j < m->n_fields; j++)
                    if (m->fields[j]->value && !value_redact_as(m->fields[j]->value, vf, s))
                        value_clear(m->fields[j]->value); /* a cleared map value: null */
            } else if (f->label == PROTOBUF_C_LABEL_REPEATED && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE &&
                       v->list_value) {
                for (size_t j = 0; j < v->list_value->n_values; j++)
                    if (!value_redact_as(v->list_value->values[j], f, s)) keep = false;
            } else {
                keep = value_redact_as(v, f, s);
            }
        }
        if (keep) st->fields[k++] = e;
        else protobuf_c_message_free_unpacked(&e->base, NULL);
    }
    st->n_fields = k;
}

/* udpa.type.v1.TypedStruct / xds.type.v3.TypedStruct (both type_url and a
 * Struct value). false when not one, or of a type SHARP does not know. */
static bool redact_typed_struct(ProtobufCMessage *m, bool sensitive)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (strcmp(d->name, "udpa.type.v1.TypedStruct") && strcmp(d->name, "xds.type.v3.TypedStruct")) return false;
    const ProtobufCFieldDescriptor *uf = sharp_cfg_field(d, "type_url"), *vf = sharp_cfg_field(d, "value");
    if (!uf || !vf) return false;
    const char *url = *(char *const *)sharp_cfg_member(m, uf);
    Google__Protobuf__Struct *st = *(Google__Protobuf__Struct **)sharp_cfg_member(m, vf);
    bool has_url = url && *url;
    if (!has_url && !st) return true;
    if (!has_url || !st) return false;
    const ProtobufCMessageDescriptor *td = sharp_type_registry_find(url, strlen(url));
    if (!td || sharp_cfg_wkt_kind(td) != WKT_NONE) return false;
    struct_redact_as(st, td, sensitive, NULL);
    return true;
}

/* A map's entries: only values are redacted (redacting keys would leave
 * several "[redacted]" keys), as in Envoy. */
static void redact_map(ProtobufCMessage *const *entries, size_t n, const ProtobufCFieldDescriptor *f, bool sensitive)
{
    const ProtobufCFieldDescriptor *vf = &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[1];
    for (size_t i = 0; i < n; i++) {
        ProtobufCMessage *e = entries[i];
        void *slot = sharp_cfg_member(e, vf);
        if (sensitive && vf->type == PROTOBUF_C_TYPE_STRING) set_string(vf, slot);
        else if (sensitive && vf->type == PROTOBUF_C_TYPE_BYTES) set_bytes(vf, slot);
        else if (vf->type == PROTOBUF_C_TYPE_MESSAGE) {
            ProtobufCMessage *v = *(ProtobufCMessage **)slot;
            if (v) redact_message(v, sensitive);
        } else if (sensitive) {
            sharp_cfg_clear_field(e, vf);
        }
    }
}

static void redact_message(ProtobufCMessage *m, bool sensitive)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (sharp_cfg_wkt_kind(d) == WKT_ANY && redact_any(m, sensitive)) return;
    if (redact_typed_struct(m, sensitive)) return;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool s = sensitive || sharp_config_field_sensitive(d, f);
        void *slot = sharp_cfg_member(m, f);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)((char *)m + f->quantifier_offset);
            if (!n) continue;
            char *arr = *(char **)slot;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && sharp_cfg_field_is_map(f)) {
                redact_map((ProtobufCMessage *const *)arr, n, f, s);
            } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                for (size_t k = 0; k < n; k++) redact_message(((ProtobufCMessage **)arr)[k], s);
            } else if (!s) {
                continue;
            } else if (f->type == PROTOBUF_C_TYPE_STRING) {
                for (size_t k = 0; k < n; k++) set_string(f, &((char **)arr)[k]);
            } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
                for (size_t k = 0; k < n; k++) set_bytes(f, &((ProtobufCBinaryData *)arr)[k]);
            } else {
                sharp_cfg_clear_field(m, f);
            }
            continue;
        }
        if (!sharp_cfg_field_present(m, f)) continue;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            ProtobufCMessage *sub = *(ProtobufCMessage **)slot;
            if (sub) redact_message(sub, s);
        } else if (!s) {
            continue;
        } else if (f->type == PROTOBUF_C_TYPE_STRING) {
            set_string(f, slot);
        } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
            set_bytes(f, slot);
        } else {
            sharp_cfg_clear_field(m, f);
        }
    }
}

void sharp_config_redact(ProtobufCMessage *m)
{
    if (m) redact_message(m, false);
}

ProtobufCMessage *sharp_config_redacted_copy(const ProtobufCMessage *m, const char *const *paths, size_t n)
{
    ProtobufCMessage *c = sharp_config_trimmed_copy(m, paths, n);
    sharp_config_redact(c);
    return c;
}
