/* headers.h: an ordered HTTP header map, the one representation the codecs,
 * filters and router share. Names are stored lower-case (HTTP/2 style;
 * the HTTP/2 encoders hand them to nghttp2 as they are, nv_pin.h);
 * request pseudo-headers are entries named ":method", ":path", ":authority",
 * ":scheme", response ones ":status", exactly as in Envoy. The map owns one
 * growable byte buffer, so a request costs two allocations however many
 * headers it has; a sharp_str_t returned by a getter stays valid until the
 * next change to the map. */
#ifndef SHARP_HTTP_HEADERS_H
#define SHARP_HTTP_HEADERS_H

#include "common.h"
#include "sbuf.h"

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} sharp_header_entry_t;

/* Header names as an HTTP/1 peer spelled them (Envoy's preserve_case
 * stateful formatter), kept only on maps whose codec was configured for it:
 * see sharp_headers_case_enable. */
typedef struct sharp_header_case sharp_header_case_t;

typedef struct sharp_headers {
    sharp_header_entry_t *e;
    uint32_t n, cap;
    char *buf;
    uint32_t blen, bcap;
    /* A bit per name hash (sharp_header_name_bit) of every name added since
     * the map was cleared: a lookup of a name whose bit is clear answers
     * "absent" without a scan, which is what most of the sanitizing
     * removals per request (x-envoy-*, hop-by-hop) find. Removal leaves
     * bits set: a set bit only means "scan". */
    uint64_t names;
    uint32_t bytes; /* sharp_headers_byte_size, kept up to date */
    sharp_header_case_t *cases; /* NULL unless preserve_case: the default path never looks further */
} sharp_headers_t;

void sharp_headers_init(sharp_headers_t *h);
void sharp_headers_clear(sharp_headers_t *h); /* keeps the memory for reuse */
void sharp_headers_free(sharp_headers_t *h);
void sharp_headers_copy(sharp_headers_t *dst, const sharp_headers_t *src);
/* Appends the map the way Envoy's debug logs print one: a line
 * "'name', 'value'" per header, each preceded by a newline. */
void sharp_headers_dump(const sharp_headers_t *h, sharp_sbuf_t *out);

/* Appends a header; the name is lower-cased. */
void sharp_headers_add(sharp_headers_t *h, const char *name, size_t nlen, const char *value,
                       size_t vlen);
static inline void sharp_headers_add_cstr(sharp_headers_t *h, const char *name, const char *value)
{
    sharp_headers_add(h, name, strlen(name), value, strlen(value));
}
/* Appends to the value of the last header (for values that arrive in pieces). */
void sharp_headers_append_last_value(sharp_headers_t *h, const char *p, size_t n);
void sharp_headers_append_last_name(sharp_headers_t *h, const char *p, size_t n);
/* Replaces every header of that name with one (or adds it). */
void sharp_headers_set(sharp_headers_t *h, const char *name, size_t nlen, const char *value,
                       size_t vlen);
static inline void sharp_headers_set_cstr(sharp_headers_t *h, const char *name, const char *value)
{
    sharp_headers_set(h, name, strlen(name), value, strlen(value));
}
/* Removes every header of that name (case-insensitive); returns how many. */
size_t sharp_headers_remove(sharp_headers_t *h, const char *name, size_t nlen);
static inline size_t sharp_headers_remove_cstr(sharp_headers_t *h, const char *name)
{
    return sharp_headers_remove(h, name, strlen(name));
}
/* What the client codecs read of a request before writing it, found in
 * one pass over the map instead of a lookup per name: the pseudo-headers,
 * and host, connection, upgrade and content-length. First values, as
 * sharp_headers_get; p is NULL for an absent one. */
typedef struct {
    sharp_str_t method, path, authority, scheme, host, connection, upgrade, content_length;
} sharp_request_head_t;
void sharp_request_head_scan(const sharp_headers_t *h, sharp_request_head_t *out);

/* Removes, in one pass, every header whose (lower-case) name `match`
 * accepts; returns how many. For a set of names most requests do not
 * carry, cheaper than a lookup per name. */
size_t sharp_headers_remove_matching(sharp_headers_t *h, bool (*match)(sharp_str_t name, void *arg), void *arg);
/* First value of a header (case-insensitive name); false if absent. */
bool sharp_headers_get(const sharp_headers_t *h, const char *name, size_t nlen, sharp_str_t *out);
static inline bool sharp_headers_get_cstr(const sharp_headers_t *h, const char *name,
                                          sharp_str_t *out)
{
    return sharp_headers_get(h, name, strlen(name), out);
}
/* Index of the n-th header with that name at or after `from`, or -1. */
int sharp_headers_find(const sharp_headers_t *h, const char *name, size_t nlen, uint32_t from);
/* Envoy's HeaderUtility::getAllOfHeaderAsString: the value of the header
 * when it occurs once, else all its values joined with "," (built in
 * `tmp`, which is reset). False, *out untouched, when it is absent. */
bool sharp_headers_get_all(const sharp_headers_t *h, const char *name, size_t nlen, sharp_sbuf_t *tmp,
                           sharp_str_t *out);

static inline sharp_str_t sharp_headers_name(const sharp_headers_t *h, uint32_t i)
{
    return (sharp_str_t){h->buf + h->e[i].name_off, h->e[i].name_len};
}
static inline sharp_str_t sharp_headers_value(const sharp_headers_t *h, uint32_t i)
{
    return (sharp_str_t){h->buf + h->e[i].value_off, h->e[i].value_len};
}
/* Bytes of names and values, the measure Envoy's max_request_headers_kb uses. */
static inline size_t sharp_headers_byte_size(const sharp_headers_t *h)
{
    return h->bytes;
}

/* ---- header key formats (Http1ProtocolOptions.header_key_format) ----
 * Names stay lower-case in the map; an HTTP/1 encoder that writes a name
 * (lower-case, as stored) passes it through sharp_header_name_format when
 * the map has cases or its codec proper-cases, which rewrites it in place
 * (a format never changes a name's length).
 *
 * Envoy's PreserveCaseHeaderFormatter: the receiving HTTP/1 codec attaches
 * a formatter to the map it builds and tells it each name as it arrived;
 * the encoder on the other side writes a remembered name as first spelled
 * (a later spelling of the same name does not replace it), any other name
 * lower-case or, with formatter_type_on_envoy_headers PROPER_CASE,
 * proper-cased; with forward_reason_phrase the response's reason phrase is
 * kept for the status line. The memory holds at most
 * SHARP_HEADER_CASE_MAX_NAMES names (then the rest go unremembered), each
 * no longer than what the codec already accepted as a header block. */
#define SHARP_HEADER_CASE_MAX_NAMES 1024u
void sharp_headers_case_enable(sharp_headers_t *h, bool proper_others, bool keep_reason);
/* A part of a received name: `first` starts a new name, else the part
 * continues the last one (a name split across reads). */
void sharp_headers_case_name(sharp_headers_t *h, const char *p, size_t n, bool first);
void sharp_headers_case_reason(sharp_headers_t *h, const char *p, size_t n);
/* The reason phrase kept with forward_reason_phrase; false if none. */
bool sharp_headers_case_reason_get(const sharp_headers_t *h, sharp_str_t *out);
/* Envoy's ProperCaseHeaderKeyFormatter: the first character and any letter
 * after a character that is neither a letter nor a digit upper-cased. */
void sharp_header_proper_case(char *p, size_t n);
/* Formats the name at p (n bytes, as stored) for HTTP/1: the map's
 * remembered spelling, else proper case if `proper` (the encoding codec's
 * proper_case_words, or the memory's PROPER_CASE), else unchanged. */
void sharp_header_name_format(const sharp_headers_t *h, bool proper, char *p, size_t n);

/* The response's :status as a number; 0 when absent or not three digits. */
uint32_t sharp_headers_status(const sharp_headers_t *h);
/* The hop-by-hop header fields no HTTP/2 message may carry and no proxy
 * forwards (RFC 9113 section 8.2.2): connection, keep-alive,
 * proxy-connection, transfer-encoding, upgrade. */
bool sharp_header_is_connection_specific(sharp_str_t name);
/* Headers whose value differs on every message (request and trace ids): an
 * HPACK encoder sends them without indexing, since an entry for one would
 * only push reusable entries out of the dynamic table, and lengthen the
 * chains nghttp2's encoder walks for every later header of that name. */
bool sharp_header_value_is_unique(sharp_str_t name);

/* Envoy's parseCookieValue: the value of the first `name=value` pair of
 * any cookie header, pairs split at ';', leading blanks skipped, names
 * compared exactly, one pair of surrounding double quotes removed. An
 * empty value counts as none. *out points into the map. */
bool sharp_headers_cookie_value(const sharp_headers_t *h, const char *name, size_t nlen, sharp_str_t *out);

/* Comma-separated token search in a header value ("close" in "keep-alive, close"),
 * case-insensitive. */
bool sharp_header_value_has_token(sharp_str_t value, const char *token);
/* Walks a comma-separated list (a header value, a retry_on string): stores
 * the next item, trimmed of spaces and tabs, in *item and advances *rest
 * past it. Empty items are skipped; false at the end of the list. */
bool sharp_list_next(sharp_str_t *rest, sharp_str_t *item);

#endif
