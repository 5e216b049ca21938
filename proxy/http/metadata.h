/* metadata.h: a stream's dynamic metadata (Envoy's StreamInfo
 * dynamicMetadata): per namespace ("envoy.lb") a protobuf Struct of values,
 * set by filters while the stream runs and read by the access log's
 * %DYNAMIC_METADATA(...)%. Values are a tree of Struct/Value kinds kept as
 * plain C, so a stream that sets none pays nothing (the stream info holds a
 * NULL pointer). Owned by the stream: freed after its access logs. */
#ifndef SHARP_HTTP_METADATA_H
#define SHARP_HTTP_METADATA_H

#include "common.h"
#include "sbuf.h"

typedef enum {
    SHARP_MD_UNSET, /* a google.protobuf.Value without a kind */
    SHARP_MD_NULL,
    SHARP_MD_NUMBER,
    SHARP_MD_STRING,
    SHARP_MD_BOOL,
    SHARP_MD_STRUCT,
    SHARP_MD_LIST,
} sharp_md_kind_t;

typedef struct sharp_md_value {
    sharp_md_kind_t kind;
    bool b;
    double number;
    char *s; /* STRING: len bytes (may hold NULs), NUL-terminated */
    size_t len;
    uint32_t n, cap;              /* STRUCT fields or LIST items */
    char **keys;                  /* STRUCT: n keys, in insertion order */
    struct sharp_md_value *items; /* STRUCT values / LIST items */
} sharp_md_value_t;

typedef struct sharp_dynamic_metadata {
    uint32_t n, cap;
    char **ns;
    sharp_md_value_t *structs; /* one STRUCT per namespace */
} sharp_dynamic_metadata_t;

/* Frees what v holds and leaves it UNSET. */
void sharp_md_value_clear(sharp_md_value_t *v);
/* A STRING value of a copy of s[0..len). */
void sharp_md_value_string(sharp_md_value_t *v, const char *s, size_t len);
/* Sets key in a STRUCT, taking v's contents (v is left UNSET); an existing
 * key's value is replaced, as protobuf's map merge. */
void sharp_md_struct_set(sharp_md_value_t *st, const char *key, size_t klen, sharp_md_value_t *v);
const sharp_md_value_t *sharp_md_struct_get(const sharp_md_value_t *st, const char *key,
                                            size_t klen);

/* Envoy's setDynamicMetadata(ns, {key: v}): the namespace is created on
 * first use (*md allocated when NULL), the key merged into it. Takes v. */
void sharp_dynamic_metadata_set(sharp_dynamic_metadata_t **md, const char *ns, size_t nslen,
                                const char *key, size_t klen, sharp_md_value_t *v);
/* Envoy's filter_metadata[ns] = st: the namespace's struct replaced by a
 * copy of the STRUCT `st` (an empty one leaves the namespace empty). */
void sharp_dynamic_metadata_replace(sharp_dynamic_metadata_t **md, const char *ns, size_t nslen,
                                    const sharp_md_value_t *st);
/* A deep copy of src into dst (which is overwritten). */
void sharp_md_value_copy(sharp_md_value_t *dst, const sharp_md_value_t *src);
/* The namespace's STRUCT, or NULL. */
const sharp_md_value_t *sharp_dynamic_metadata_ns(const sharp_dynamic_metadata_t *md,
                                                  const char *ns, size_t nslen);
void sharp_dynamic_metadata_free(sharp_dynamic_metadata_t *md);

/* Parses a serialized google.protobuf.Value (protobuf's ParseFromString,
 * with its default nesting limit of 100 messages). False on bad bytes. */
bool sharp_md_value_parse(const uint8_t *p, size_t n, sharp_md_value_t *out);

/* A STRUCT value from a protobuf-c google.protobuf.Struct (a message that
 * arrived in another one, such as ext_authz's CheckResponse). False, out
 * cleared, when a string is not UTF-8 (protobuf would not parse it). */
struct Google__Protobuf__Struct;
bool sharp_md_value_from_struct(const struct Google__Protobuf__Struct *st, sharp_md_value_t *out);

/* The value as Envoy's Json::Utility::appendValueToString writes it: keys
 * sorted, strings escaped, numbers as std::to_chars' shortest form, NaN
 * and an UNSET value as null. */
void sharp_md_value_json(const sharp_md_value_t *v, sharp_sbuf_t *out);
/* A number as std::to_chars(double) writes it (the shortest digits that
 * read back the same, fixed or exponent notation whichever is shorter,
 * fixed on a tie): 1, 1.5, 1e+06, 0.001, 1e-05. */
void sharp_md_number(double d, sharp_sbuf_t *out);

#endif
