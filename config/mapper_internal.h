/* mapper_internal.h: what the config mapper's files share (not public API).
 *
 * doc.c owns parsing and the source map, mapper.c walks messages, scalar.c
 * converts scalar nodes to field values, wkt.c handles the well-known types,
 * registry.c resolves Any type URLs and json_out.c prints messages. */
#ifndef SHARP_CONFIG_MAPPER_INTERNAL_H
#define SHARP_CONFIG_MAPPER_INTERNAL_H

#include <yaml.h>

#include "mapper.h"

/* Source map: field path -> 1-based line/column. */
typedef struct cfg_srcmap cfg_srcmap_t;
void sharp_cfg_srcmap_put(cfg_srcmap_t *m, const char *path, size_t len, int line, int col);
/* The same with the path's hash (sharp_cfg_path_hash) already known. */
void sharp_cfg_srcmap_put_hashed(cfg_srcmap_t *m, const char *path, size_t len, uint64_t hash, int line, int col);

/* State of one mapping run over a libyaml document. `path` always holds the
 * path of the node being mapped. */
typedef struct cfg_ctx {
    yaml_document_t *ydoc;
    const char *source;
    sharp_config_error_t *err;
    cfg_srcmap_t *map; /* may be NULL */
    sharp_sbuf_t path;
    /* phash[n]: the hash of the path's first n bytes, for each length the
     * path has had through the push functions (its prefixes), so that
     * noting a node's position hashes only what its push appended */
    uint64_t *phash;
    size_t phash_cap;
    /* the field (of ctx_msg) the message being mapped was reached through
     * (both NULL at the root and inside an Any): the support table's
     * context for that message's fields */
    const ProtobufCMessageDescriptor *ctx_msg;
    const ProtobufCFieldDescriptor *ctx_field;
    /* sharp_config_parse_file_alone: the root's repeated field whose
     * elements are refused one by one, and what was left out; unsupported
     * is set by a failure on something SHARP does not implement */
    const char *alone_field;
    bool unsupported;
    sharp_config_refused_t *refused;
    size_t nrefused;
} cfg_ctx_t;

/* One key/value of a mapping after YAML merge keys ("<<") are expanded and
 * `!ignore`-tagged keys dropped. Merged pairs yield to explicit ones. */
typedef struct cfg_pair {
    yaml_node_t *key, *value;
    bool merged;
} cfg_pair_t;

/* The libyaml node tree of a JSON text, as libyaml's loader would build
 * it, when the text is strict JSON in the plain subset (doc.c): its nodes, children and values in blocks of its own, freed by
 * sharp_cfg_json_free (not yaml_document_delete). False (nothing to free)
 * sends the text to libyaml. */
typedef struct cfg_json_doc {
    yaml_document_t doc;
    yaml_node_pair_t *pairs;
    yaml_node_item_t *items;
    char *values;
} cfg_json_doc_t;
bool sharp_cfg_json_load(const char *text, size_t len, cfg_json_doc_t *out);
void sharp_cfg_json_free(cfg_json_doc_t *d);

/* Records the first error as "source:line:col: path: message" (node gives
 * the position; NULL means line 1, col 1). Always returns -1. */
int sharp_cfg_fail(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same, for a failure on something SHARP does not implement. */
int sharp_cfg_fail_unsupported(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Path helpers: push returns the old length to pass to pop. */
size_t sharp_cfg_push_field(cfg_ctx_t *c, const char *name);
size_t sharp_cfg_push_index(cfg_ctx_t *c, size_t i);
size_t sharp_cfg_push_key(cfg_ctx_t *c, const char *key, size_t len);
/* A field name as written (an unknown key), the path's "." separator first. */
size_t sharp_cfg_push_name(cfg_ctx_t *c, const char *name, size_t len);
void sharp_cfg_pop(cfg_ctx_t *c, size_t old_len);
void sharp_cfg_note(cfg_ctx_t *c, const yaml_node_t *node);

/* Scalar view of a node; `null` for plain null, ~, empty, or a missing node. */
typedef struct cfg_scalar {
    const char *s;
    size_t len;
    bool quoted;
    bool null;
} cfg_scalar_t;
bool sharp_cfg_scalar_of(const yaml_node_t *n, cfg_scalar_t *out);
const char *sharp_cfg_node_kind(const yaml_node_t *n);

/* Collects a mapping's pairs (see cfg_pair_t). *out is malloc'ed. */
int sharp_cfg_pairs(cfg_ctx_t *c, yaml_node_t *mapping, cfg_pair_t **out, size_t *n);

/* Allocates a message of type d with its defaults set. */
ProtobufCMessage *sharp_cfg_new_message(const ProtobufCMessageDescriptor *d);

/* Maps `node` onto the already-initialized `msg` (a mapping, or the special
 * form of a well-known type). Returns 0 or -1. */
int sharp_cfg_map_message(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg);

/* Maps a mapping's pairs onto msg's fields, skipping key `skip` (may be NULL). */
int sharp_cfg_map_fields(cfg_ctx_t *c, yaml_node_t *mapping, ProtobufCMessage *msg,
                         const char *skip);

/* Maps `node` onto field f of msg, whatever its shape (singular, repeated
 * or map), and marks it present. The path must already name f. 0 or -1. */
int sharp_cfg_map_field(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg,
                        const ProtobufCFieldDescriptor *f);

/* Converts `node` into one value of field `f` stored at `slot` (the member
 * itself, or one element of a repeated array). Returns 1 when a value was
 * stored, 0 when the node is null and the field stays unset, -1 on error. */
int sharp_cfg_map_value(cfg_ctx_t *c, yaml_node_t *node, const ProtobufCFieldDescriptor *f,
                        void *slot);

/* Size of one element of a repeated field's array of type t. */
size_t sharp_cfg_elem_size(ProtobufCType t);

/* Whether field f of m holds something, with proto3's rule for fields
 * without presence (set means different from the default): a non-empty
 * list, the chosen oneof member, a present message (an empty one too), an
 * optional field's has-flag, a non-empty string or bytes, a non-zero number. */
bool sharp_cfg_field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Marks a singular field as set: oneof case or proto2 has_ flag. */
void sharp_cfg_mark_present(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f);

/* Clears field f of m (frees what it held): an empty list, no oneof member,
 * a zero / unset scalar, no message. */
void sharp_cfg_clear_field(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Whether f is a map field (a repeated XxxEntry message of key and value). */
bool sharp_cfg_field_is_map(const ProtobufCFieldDescriptor *f);

/* Converts a scalar node into a non-message field value at slot. `is_key`
 * means a map key: never null, text taken as is. Returns 1, 0 or -1 as
 * sharp_cfg_map_value. */
int sharp_cfg_scalar_value(cfg_ctx_t *c, yaml_node_t *node, const ProtobufCFieldDescriptor *f,
                           void *slot, bool is_key);

/* yaml-cpp's bool words (y/n, yes/no, true/false, on/off in lower, UPPER or
 * Capitalized case); false if s is none of them. */
bool sharp_cfg_bool_word(const char *s, size_t len, bool *out);

/* Parses a JSON-style number; true if the whole text is one. */
bool sharp_cfg_parse_double(const char *s, size_t len, double *out);

/* Base64 (standard or URL-safe, padding optional). Returns malloc'ed bytes
 * or NULL when invalid; *out_len gets the length. */
uint8_t *sharp_cfg_base64_decode(const char *s, size_t len, size_t *out_len);
void sharp_cfg_base64_encode(sharp_sbuf_t *b, const uint8_t *p, size_t n);

/* Well-known types. */
typedef enum {
    WKT_NONE = 0,
    WKT_DURATION,
    WKT_TIMESTAMP,
    WKT_FIELD_MASK,
    WKT_WRAPPER,
    WKT_STRUCT,
    WKT_VALUE,
    WKT_LIST_VALUE,
    WKT_ANY,
    WKT_EMPTY,
} cfg_wkt_t;
cfg_wkt_t sharp_cfg_wkt_kind(const ProtobufCMessageDescriptor *d);
/* True for the types that use {"@type", "value"} inside an Any. */
bool sharp_cfg_wkt_special_in_any(cfg_wkt_t k);
/* Maps node onto a well-known-type message msg. Returns 0, -1, or 1 when the
 * generic field mapping should handle the node instead. */
int sharp_cfg_wkt_map(cfg_ctx_t *c, yaml_node_t *node, ProtobufCMessage *msg, cfg_wkt_t kind);

/* Generic member access by field name, for the well-known types. */
const ProtobufCFieldDescriptor *sharp_cfg_field(const ProtobufCMessageDescriptor *d,
                                                const char *name);
void *sharp_cfg_member(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f);

/* Formats a Duration/Timestamp for JSON output. */
void sharp_cfg_format_duration(sharp_sbuf_t *b, int64_t s, int32_t nanos);
bool sharp_cfg_format_timestamp(sharp_sbuf_t *b, int64_t s, int32_t nanos);

#endif
