/* mapper.h: YAML/JSON text -> protobuf-c messages, and messages -> JSON.
 *
 * The mapper walks protobuf-c descriptors only; it knows no generated type.
 * It applies the proto3 JSON mapping the way Envoy loads a v3 bootstrap:
 * proto (snake_case) or JSON (lowerCamelCase) field names, enums by name or
 * number, 64-bit integers as numbers or strings, bytes as base64, and the
 * well-known types google.protobuf.{Duration, Timestamp, FieldMask, the
 * wrappers, Struct, Value, ListValue, Any, Empty} recognized by full name.
 * Unknown fields, duplicate keys and two members of one oneof are errors.
 *
 * Field paths (in errors and in sharp_config_doc_where) use proto field
 * names: "static_resources.listeners[0].address", map entries as
 * `metadata["key"]` (Struct members too), list items as "[i]", and
 * fields of a message packed in an Any continue below the Any field
 * ("typed_config.stat_prefix"). The root message has the empty path.
 *
 * Allocation: every message the mapper builds, and every string, bytes and
 * array inside it, is malloc'ed, so protobuf_c_message_free_unpacked(m, NULL)
 * releases it. Nothing here aborts on bad input; only out of memory aborts.
 */
#ifndef SHARP_CONFIG_MAPPER_H
#define SHARP_CONFIG_MAPPER_H

#include <protobuf-c/protobuf-c.h>

#include "common.h"
#include "sbuf.h"

/* The first error found, formatted "file:line:col: path.to.field[2].x: what
 * is wrong" (the path part is left out for errors at the document root). */
typedef struct sharp_config_error {
    char msg[1024];
} sharp_config_error_t;

/* ---- Any type-URL registry --------------------------------------------- */

/* Registers a message type for Any resolution under its full name. Adding a
 * name twice keeps the latest descriptor. Not thread-safe: register
 * everything at startup, before any thread looks types up. */
void sharp_type_registry_add(const ProtobufCMessageDescriptor *d);

/* Finds the descriptor for a type URL such as
 * "type.googleapis.com/envoy.config.listener.v3.Listener": everything up to
 * the last '/' is a prefix and ignored, the rest must be a registered full
 * name. A URL without '/' is not accepted. Returns NULL if unknown. */
const ProtobufCMessageDescriptor *sharp_type_registry_find(const char *type_url, size_t len);

/* Forgets every registered type and releases the registry's memory. */
void sharp_type_registry_reset(void);

/* ---- Parsed documents ---------------------------------------------------- */

/* A parsed document: the message plus a source map from field path to the
 * line and column (1-based) where the field's key (or list item) was. */
typedef struct sharp_config_doc sharp_config_doc_t;

/* Parses one YAML (or JSON) document of `len` bytes onto a new message of
 * type `desc`. `source_name` names the text in errors ("bootstrap.yaml").
 * An empty document gives a message with every field at its default.
 * Returns NULL and fills `err` (if not NULL) on any error: YAML syntax
 * (position from libyaml), more than one document, a document that expands
 * through aliases to more than SHARP_CONFIG_MAX_NODES nodes or nests deeper
 * than SHARP_CONFIG_MAX_DEPTH, or anything the mapping rejects. */
sharp_config_doc_t *sharp_config_parse(const char *text, size_t len, const char *source_name,
                                       const ProtobufCMessageDescriptor *desc,
                                       sharp_config_error_t *err);

#define SHARP_CONFIG_MAX_NODES 1000000
#define SHARP_CONFIG_MAX_DEPTH 100

/* Like sharp_config_parse, for text that must be strict JSON: a syntax
 * check with the rules of protobuf's JSON lexer (which Envoy uses for JSON
 * files) comes first, so comments, trailing commas, bare keys and the like
 * are errors at their own line and column. */
sharp_config_doc_t *sharp_config_parse_json(const char *text, size_t len, const char *source_name,
                                            const ProtobufCMessageDescriptor *desc,
                                            sharp_config_error_t *err);

/* Reads the file at `path` and parses it by its name, as Envoy's
 * MessageUtil::loadFromFile does: *.yaml and *.yml (any case) as YAML, *.pb
 * and *.pb_text refused, anything else as strict JSON. A missing path or a
 * directory gets its own error. The file name appears in errors as given.
 * On success stores the document in *out and returns 0; on failure returns
 * -1, *out = NULL. */
int sharp_config_parse_file(const char *path, const ProtobufCMessageDescriptor *desc,
                            sharp_config_doc_t **out, sharp_config_error_t *err);

/* As sharp_config_parse_file, where an element of the root message's
 * repeated field `alone_field` (a DiscoveryResponse's "resources") that uses
 * what SHARP does not implement is left out of the message and listed
 * (sharp_config_doc_refused) instead of failing the document: an xDS file's
 * resources are refused one by one, as a gRPC response's are. */
int sharp_config_parse_file_alone(const char *path, const ProtobufCMessageDescriptor *desc, const char *alone_field,
                                  sharp_config_doc_t **out, sharp_config_error_t *err);

/* An element sharp_config_parse_file_alone left out: its index in the
 * field, its "name" key ("" without one) and why, with its position. */
typedef struct sharp_config_refused {
    size_t index;
    char *name;
    char *why;
} sharp_config_refused_t;
const sharp_config_refused_t *sharp_config_doc_refused(const sharp_config_doc_t *doc, size_t *n);

/* True when the text held no document at all (empty, only comments) or a
 * null one; the message then has every field at its default. */
bool sharp_config_doc_empty(const sharp_config_doc_t *doc);

/* The parsed message, owned by the document (NULL after take_message). */
ProtobufCMessage *sharp_config_doc_message(sharp_config_doc_t *doc);

/* Hands the message to the caller, who frees it with
 * protobuf_c_message_free_unpacked(m, NULL). The source map stays usable. */
ProtobufCMessage *sharp_config_doc_take_message(sharp_config_doc_t *doc);

/* The source name the document was parsed under. */
const char *sharp_config_doc_source(const sharp_config_doc_t *doc);

/* Looks up where `path` (the syntax of error paths, e.g.
 * "static_resources.listeners[0].address") appeared in the text. Returns
 * false, leaving *line and *col alone, if the path was not in the text. */
bool sharp_config_doc_where(const sharp_config_doc_t *doc, const char *path, int *line, int *col);

/* Formats a later (semantic) error the same way the parser does:
 * "file:line:col: path: message" when `path` is in the source map, else
 * "file: path: message". */
void sharp_config_doc_error(const sharp_config_doc_t *doc, const char *path,
                            sharp_config_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Frees the document and the message it still owns. NULL is fine. */
void sharp_config_doc_free(sharp_config_doc_t *doc);

/* ---- merge ----------------------------------------------------------------- */

/* Protobuf's MergeFrom(src) on `dst` (same type), as Envoy merges
 * --config-yaml over the -c file: singular scalars, strings and bytes set in
 * src replace dst's (proto3 fields without presence count as set when not
 * at their default), singular messages merge recursively, repeated fields
 * are appended, map entries replace dst's entry with the same key, and a
 * oneof member set in src replaces whichever member dst had (merging when
 * it is the same message member). Values are moved out of src, which is
 * left valid to free. */
void sharp_config_merge(ProtobufCMessage *dst, ProtobufCMessage *src);

/* google.protobuf.FieldMask, as Envoy's /config_dump?mask= applies it. A
 * path ("static_resources.clusters") names fields by proto name and walks
 * only through singular message fields. */
bool sharp_config_mask_path_valid(const ProtobufCMessageDescriptor *d, const char *path);
/* A deep copy of m (free with protobuf_c_message_free_unpacked(x, NULL))
 * trimmed to the valid `paths` as FieldMaskUtil::TrimMessage does: fields
 * not named are cleared, a path through a message keeps only what it names
 * inside. paths NULL: an untrimmed copy. NULL if m does not re-encode. */
ProtobufCMessage *sharp_config_trimmed_copy(const ProtobufCMessage *m, const char *const *paths, size_t n);

/* ---- redaction ------------------------------------------------------------ */

/* A field Envoy's protos mark [(udpa.annotations.sensitive) = true]. */
typedef struct {
    const char *message; /* full name: "envoy.extensions.transport_sockets.tls.v3.TlsCertificate" */
    const char *field;   /* "private_key" */
} sharp_sensitive_field_t;

/* The sensitive fields of the Envoy protos SHARP compiles (redact.c). */
extern const sharp_sensitive_field_t sharp_sensitive_fields[];
extern const size_t sharp_nsensitive_fields;

/* Whether field f of messages of type d is in that list. */
bool sharp_config_field_sensitive(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f);

/* Envoy's MessageUtil::redact on m, in place: inside a sensitive field
 * (recursively, through messages, lists and maps' values) every string and
 * bytes value becomes "[redacted]" and every other scalar is cleared; Any
 * (and TypedStruct) values are unpacked into their type, redacted the same
 * way and packed again. */
void sharp_config_redact(ProtobufCMessage *m);

/* A redacted deep copy of m (free with protobuf_c_message_free_unpacked(x,
 * NULL)), trimmed to `paths` first as sharp_config_trimmed_copy does (NULL:
 * the whole message). NULL if m does not re-encode. */
ProtobufCMessage *sharp_config_redacted_copy(const ProtobufCMessage *m, const char *const *paths, size_t n);

/* ---- Any ------------------------------------------------------------------ */

/* Unpacks a google.protobuf.Any message. With `expected`, the type URL's
 * name must equal expected->name; with expected NULL the type comes from the
 * registry. Returns a new message the caller frees with
 * protobuf_c_message_free_unpacked(m, NULL), or NULL with `err` filled (not
 * an Any, type mismatch, unknown type, bytes that do not decode). */
ProtobufCMessage *sharp_any_unpack(const ProtobufCMessage *any,
                                   const ProtobufCMessageDescriptor *expected,
                                   sharp_config_error_t *err);

/* ---- durations ------------------------------------------------------------ */

struct Google__Protobuf__Duration;
/* A Duration in milliseconds as Envoy's DurationUtil::durationToMilliseconds
 * (PROTOBUF_GET_MS_OR_DEFAULT) takes it: a negative seconds or nanos is
 * refused ("Expected positive duration"), and so is one past protobuf's
 * range. 0, or -1 with the message in err. */
int sharp_duration_ms(const struct Google__Protobuf__Duration *d, uint64_t *ms, char *err, size_t errlen);

/* ---- JSON output ---------------------------------------------------------- */

/* Appends `m` as compact proto3 JSON: proto field names in field-number
 * order, fields at their default left out (oneof members and proto2
 * has_-fields are printed when set), enums by name (number if unknown),
 * 64-bit integers as strings, bytes as base64, NaN/Infinity as strings,
 * Duration "1.5s", Timestamp RFC 3339, wrappers as bare values, Struct /
 * Value / ListValue as plain JSON, Any as {"@type": ..., fields} when the
 * type is registered and the bytes decode (else {"@type", "value": base64}). */
void sharp_config_to_json(const ProtobufCMessage *m, sharp_sbuf_t *out);

/* Same, pretty-printed with two-space indentation (for /config_dump). */
void sharp_config_to_json_pretty(const ProtobufCMessage *m, sharp_sbuf_t *out);

#endif
