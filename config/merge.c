/* merge.c: protobuf MergeFrom over protobuf-c messages (see mapper.h). */
#include "config/mapper.h"
#include "config/mapper_internal.h"

static bool is_map(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    size_t n = strlen(e->short_name);
    return e->n_fields == 2 && e->fields[0].id == 1 && e->fields[1].id == 2 && n > 5 &&
           !strcmp(e->short_name + n - 5, "Entry") && !strcmp(e->fields[0].name, "key") &&
           !strcmp(e->fields[1].name, "value");
}

/* Frees the value of singular field f held at `slot` and resets it. */
static void free_value(const ProtobufCFieldDescriptor *f, void *slot)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage **m = slot;
        if (*m) protobuf_c_message_free_unpacked(*m, NULL);
        *m = NULL;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char **s = slot;
        if (*s && *s != f->default_value && *s != protobuf_c_empty_string) free(*s);
        *s = NULL;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = slot;
        const ProtobufCBinaryData *d = f->default_value;
        if (b->data && (!d || b->data != d->data)) free(b->data);
        b->data = NULL;
        b->len = 0;
        break;
    }
    default: memset(slot, 0, sharp_cfg_elem_size(f->type)); break;
    }
}

/* Moves the singular value at src_slot to dst_slot (freeing what dst held)
 * and leaves src empty, so freeing src does not free it twice. */
static void move_value(const ProtobufCFieldDescriptor *f, void *dst_slot, void *src_slot)
{
    free_value(f, dst_slot);
    memcpy(dst_slot, src_slot, sharp_cfg_elem_size(f->type));
    memset(src_slot, 0, sharp_cfg_elem_size(f->type));
}

static bool keys_equal(const ProtobufCFieldDescriptor *kf, const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    const void *ka = (const char *)a + kf->offset, *kb = (const char *)b + kf->offset;
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        const char *sa = *(char *const *)ka, *sb = *(char *const *)kb;
        return strcmp(sa ? sa : "", sb ? sb : "") == 0;
    }
    return memcmp(ka, kb, sharp_cfg_elem_size(kf->type)) == 0;
}

/* A map merges by key: an entry of src replaces dst's entry with the same
 * key (as a whole: map values are not merged), other keys are added. */
static void merge_map(const ProtobufCFieldDescriptor *f, ProtobufCMessage *dst, ProtobufCMessage *src)
{
    size_t *dn = (size_t *)((char *)dst + f->quantifier_offset);
    size_t *sn = (size_t *)((char *)src + f->quantifier_offset);
    ProtobufCMessage ***da = (ProtobufCMessage ***)((char *)dst + f->offset);
    ProtobufCMessage ***sa = (ProtobufCMessage ***)((char *)src + f->offset);
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    *da = sharp_realloc(*da, (*dn + *sn) * sizeof **da);
    for (size_t i = 0; i < *sn; i++) {
        ProtobufCMessage *e = (*sa)[i];
        size_t k = 0;
        while (k < *dn && !keys_equal(kf, (*da)[k], e)) k++;
        if (k < *dn) protobuf_c_message_free_unpacked((*da)[k], NULL);
        else (*dn)++;
        (*da)[k] = e;
    }
    free(*sa);
    *sa = NULL;
    *sn = 0;
}

/* Repeated fields are appended (elements moved from src). */
static void merge_repeated(const ProtobufCFieldDescriptor *f, ProtobufCMessage *dst, ProtobufCMessage *src)
{
    size_t *dn = (size_t *)((char *)dst + f->quantifier_offset);
    size_t *sn = (size_t *)((char *)src + f->quantifier_offset);
    if (*sn == 0) return;
    if (is_map(f)) {
        merge_map(f, dst, src);
        return;
    }
    char **da = (char **)((char *)dst + f->offset);
    char **sa = (char **)((char *)src + f->offset);
    size_t es = sharp_cfg_elem_size(f->type);
    *da = sharp_realloc(*da, (*dn + *sn) * es);
    memcpy(*da + *dn * es, *sa, *sn * es);
    *dn += *sn;
    free(*sa);
    *sa = NULL;
    *sn = 0;
}

static const ProtobufCFieldDescriptor *field_by_id(const ProtobufCMessageDescriptor *d, uint32_t id)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].id == id) return &d->fields[i];
    return NULL;
}

void sharp_config_merge(ProtobufCMessage *dst, ProtobufCMessage *src)
{
    const ProtobufCMessageDescriptor *d = dst->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *dslot = (char *)dst + f->offset, *sslot = (char *)src + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            merge_repeated(f, dst, src);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *dcase = (uint32_t *)((char *)dst + f->quantifier_offset);
            uint32_t *scase = (uint32_t *)((char *)src + f->quantifier_offset);
            if (*scase != f->id) continue;
            if (*dcase == f->id && f->type == PROTOBUF_C_TYPE_MESSAGE && *(void **)dslot) {
                sharp_config_merge(*(ProtobufCMessage **)dslot, *(ProtobufCMessage **)sslot);
                continue;
            }
            /* Another member (or none) was set: it goes, src's member comes. */
            const ProtobufCFieldDescriptor *old = *dcase ? field_by_id(d, *dcase) : NULL;
            if (old) free_value(old, dslot);
            memcpy(dslot, sslot, sharp_cfg_elem_size(f->type));
            memset(sslot, 0, sharp_cfg_elem_size(f->type));
            *dcase = f->id;
            *scase = 0;
            continue;
        }
        if (!sharp_cfg_field_present(src, f)) continue;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && *(void **)dslot) {
            sharp_config_merge(*(ProtobufCMessage **)dslot, *(ProtobufCMessage **)sslot);
            continue;
        }
        move_value(f, dslot, sslot);
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
            f->type != PROTOBUF_C_TYPE_STRING)
            *(protobuf_c_boolean *)((char *)dst + f->quantifier_offset) = 1;
    }
}

/* ---- FieldMask ---------------------------------------------------------------- */

static const ProtobufCFieldDescriptor *field_named(const ProtobufCMessageDescriptor *d, const char *name,
                                                  size_t len)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (strlen(d->fields[i].name) == len && memcmp(d->fields[i].name, name, len) == 0) return &d->fields[i];
    return NULL;
}

bool sharp_config_mask_path_valid(const ProtobufCMessageDescriptor *d, const char *path)
{
    const char *p = path;
    if (!*p) return false;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        const ProtobufCFieldDescriptor *f = field_named(d, p, len);
        if (!f) return false;
        if (!dot) return true;
        /* Only singular message fields can be walked through. */
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED) return false;
        d = f->descriptor;
        p = dot + 1;
    }
}

void sharp_cfg_clear_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    void *slot = (char *)m + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t *n = (size_t *)((char *)m + f->quantifier_offset);
        char **arr = slot;
        size_t es = sharp_cfg_elem_size(f->type);
        for (size_t i = 0; i < *n; i++) {
            void *e = *arr + i * es;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) protobuf_c_message_free_unpacked(*(ProtobufCMessage **)e, NULL);
            else if (f->type == PROTOBUF_C_TYPE_STRING) free(*(char **)e);
            else if (f->type == PROTOBUF_C_TYPE_BYTES) free(((ProtobufCBinaryData *)e)->data);
        }
        free(*arr);
        *arr = NULL;
        *n = 0;
        return;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *c = (uint32_t *)((char *)m + f->quantifier_offset);
        if (*c != f->id) return; /* the union holds another member */
        free_value(f, slot);
        *c = 0;
        return;
    }
    free_value(f, slot);
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING)
        *(protobuf_c_boolean *)((char *)m + f->quantifier_offset) = 0;
}

/* FieldMaskUtil::TrimMessage on m, in place, with paths already checked. */
static void trim(ProtobufCMessage *m, const char *const *paths, size_t n)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char **sub = sharp_calloc(n ? n : 1, sizeof *sub);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        size_t fl = strlen(f->name), nsub = 0;
        bool whole = false, named = false;
        for (size_t k = 0; k < n; k++) {
            if (strncmp(paths[k], f->name, fl) != 0) continue;
            if (paths[k][fl] == '\0') whole = named = true;
            else if (paths[k][fl] == '.') {
                named = true;
                sub[nsub++] = paths[k] + fl + 1;
            }
        }
        if (whole) continue;
        if (!named) {
            sharp_cfg_clear_field(m, f);
            continue;
        }
        bool present = !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                       *(uint32_t *)((char *)m + f->quantifier_offset) == f->id;
        ProtobufCMessage *child = present ? *(ProtobufCMessage **)((char *)m + f->offset) : NULL;
        if (child) trim(child, sub, nsub);
    }
    free(sub);
}

ProtobufCMessage *sharp_config_trimmed_copy(const ProtobufCMessage *m, const char *const *paths, size_t n)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = sharp_calloc(len ? len : 1, 1);
    protobuf_c_message_pack(m, buf);
    ProtobufCMessage *copy = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
    free(buf);
    if (copy && paths) trim(copy, paths, n);
    return copy;
}
