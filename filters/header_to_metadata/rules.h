/* rules.h: the rule evaluation of envoy.filters.http.header_to_metadata,
 * without I/O (Envoy's HeaderToMetadataFilter::writeHeaderToMetadata,
 * applyKeyValue and addMetadata, and Base64::decodeWithoutPadding). */
#ifndef SHARP_FILTERS_HEADER_TO_METADATA_RULES_H
#define SHARP_FILTERS_HEADER_TO_METADATA_RULES_H

#include "http/headers.h"
#include "http/metadata.h"
#include "re2_shim.h"

/* Envoy's MAX_HEADER_VALUE_LEN: a value (after the rule's value or
 * rewrite, before decoding) of this many bytes or more adds nothing. */
#define SHARP_H2M_MAX_VALUE_LEN 8192u
/* The namespace of a KeyValuePair without metadata_namespace. */
#define SHARP_H2M_NAMESPACE "envoy.filters.http.header_to_metadata"

/* Config.ValueType and Config.ValueEncode, Envoy's numbers. */
enum { SHARP_H2M_STRING = 0, SHARP_H2M_NUMBER = 1, SHARP_H2M_PROTOBUF_VALUE = 2 };
enum { SHARP_H2M_ENCODE_NONE = 0, SHARP_H2M_ENCODE_BASE64 = 1 };

typedef struct {
    bool set;
    char *ns; /* never empty: SHARP_H2M_NAMESPACE when unset */
    char *key;
    char *value; /* "" when unset */
    size_t ns_len, key_len, value_len; /* sharp_h2m_rule_lengths */
    int type, encode;
} sharp_h2m_kv_t;

typedef struct {
    char *header; /* lower-case; NULL for a cookie rule */
    char *cookie;
    size_t name_len; /* the header's or the cookie's (sharp_h2m_rule_lengths) */
    bool remove;
    sharp_h2m_kv_t present, missing;
    sharp_re2_t *re; /* on_header_present.regex_value_rewrite */
    char *subst;
} sharp_h2m_rule_t;

/* Sets the lengths of a built rule's strings, which evaluation reads. */
void sharp_h2m_rule_lengths(sharp_h2m_rule_t *r);

/* What one evaluation did, for the filter's stats (Envoy's counters). */
typedef struct {
    uint64_t rules_processed, metadata_added, header_not_found;
    uint64_t base64_decode_failed, header_value_too_long, regex_substitution_failed;
} sharp_h2m_counts_t;

typedef enum {
    SHARP_H2M_ADDED,
    SHARP_H2M_TOO_LONG,
    SHARP_H2M_BASE64_FAILED,
    SHARP_H2M_BAD_VALUE, /* not a number, or not a serialized google.protobuf.Value */
} sharp_h2m_result_t;


/* Envoy's addMetadata without the map: the value s[0..n) (not empty)
 * decoded as `encode` and converted to `type`. */
sharp_h2m_result_t sharp_h2m_make_value(const char *s, size_t n, int type, int encode,
                                        sharp_md_value_t *out);

/* Runs the rules in order over the headers (removing those of rules with
 * `remove`) and sets the metadata they make in *md. */
void sharp_h2m_apply(const sharp_h2m_rule_t *rules, uint32_t n, sharp_headers_t *h,
                     sharp_dynamic_metadata_t **md, sharp_h2m_counts_t *counts);

#endif
