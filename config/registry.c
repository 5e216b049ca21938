/* registry.c: the Any type-URL registry (full message name -> descriptor)
 * and unpacking of google.protobuf.Any messages. See mapper.h. */
#include "mapper_internal.h"

#include <stdio.h>

/* Open-addressing table keyed by descriptor full name; grows at half load. */
static struct {
    const ProtobufCMessageDescriptor **slots;
    size_t cap, used;
} registry;

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static const ProtobufCMessageDescriptor **find_slot(const char *name, size_t len)
{
    size_t mask = registry.cap - 1;
    for (size_t i = name_hash(name, len) & mask;; i = (i + 1) & mask) {
        const ProtobufCMessageDescriptor **s = &registry.slots[i];
        if (!*s || (strlen((*s)->name) == len && !memcmp((*s)->name, name, len))) return s;
    }
}

void sharp_type_registry_add(const ProtobufCMessageDescriptor *d)
{
    if (!d || d->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) return;
    if ((registry.used + 1) * 2 > registry.cap) {
        const ProtobufCMessageDescriptor **old = registry.slots;
        size_t old_cap = registry.cap;
        registry.cap = old_cap ? old_cap * 2 : 64;
        registry.slots = sharp_calloc(registry.cap, sizeof *registry.slots);
        for (size_t i = 0; i < old_cap; i++)
            if (old[i]) *find_slot(old[i]->name, strlen(old[i]->name)) = old[i];
        free(old);
    }
    const ProtobufCMessageDescriptor **s = find_slot(d->name, strlen(d->name));
    if (!*s) registry.used++;
    *s = d;
}

const ProtobufCMessageDescriptor *sharp_type_registry_find(const char *type_url, size_t len)
{
    if (!type_url || !registry.cap) return NULL;
    size_t slash = len;
    while (slash > 0 && type_url[slash - 1] != '/') slash--;
    if (slash == 0 || slash == len) return NULL;
    return *find_slot(type_url + slash, len - slash);
}

void sharp_type_registry_reset(void)
{
    free(registry.slots);
    registry.slots = NULL;
    registry.cap = registry.used = 0;
}

ProtobufCMessage *sharp_any_unpack(const ProtobufCMessage *any, const ProtobufCMessageDescriptor *expected,
                                   sharp_config_error_t *err)
{
    sharp_config_error_t local;
    if (!err) err = &local;
    err->msg[0] = '\0';
    if (!any || sharp_cfg_wkt_kind(any->descriptor) != WKT_ANY) {
        snprintf(err->msg, sizeof err->msg, "not a google.protobuf.Any");
        return NULL;
    }
    const ProtobufCFieldDescriptor *uf = sharp_cfg_field(any->descriptor, "type_url"),
                                   *vf = sharp_cfg_field(any->descriptor, "value");
    if (!uf || !vf || uf->type != PROTOBUF_C_TYPE_STRING || vf->type != PROTOBUF_C_TYPE_BYTES) {
        snprintf(err->msg, sizeof err->msg, "google.protobuf.Any lacks type_url/value fields");
        return NULL;
    }
    const char *url = *(char *const *)sharp_cfg_member(any, uf);
    const ProtobufCBinaryData *bd = sharp_cfg_member(any, vf);
    if (!url) url = "";
    size_t ulen = strlen(url);
    const char *slash = strrchr(url, '/');
    const char *name = slash ? slash + 1 : NULL;
    const ProtobufCMessageDescriptor *d = expected;
    if (expected) {
        if (!name || strcmp(name, expected->name)) {
            snprintf(err->msg, sizeof err->msg, "type URL \"%s\" does not name %s", url, expected->name);
            return NULL;
        }
    } else {
        d = sharp_type_registry_find(url, ulen);
        if (!d) {
            snprintf(err->msg, sizeof err->msg, "unknown type URL \"%s\"", url);
            return NULL;
        }
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, bd->len, bd->data);
    if (!m) snprintf(err->msg, sizeof err->msg, "cannot decode %s from the Any's value bytes", d->name);
    return m;
}
