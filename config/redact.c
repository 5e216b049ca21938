/* redact.c: Envoy's MessageUtil::redact for /config_dump.
 *
 * Envoy marks the fields that hold secrets [(udpa.annotations.sensitive) =
 * true] in its protos and redacts them in every config dump. SHARP's
 * compiled protos do not carry that annotation, so the list below is the
 * one place that says which fields are sensitive: a new one is one line
 * (test_redact checks that every entry names a field of SHARP's protos). */
#include "mapper_internal.h"

#include <stdlib.h>

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
