/* negotiate.h: the decisions of envoy.filters.http.compressor that depend
 * only on header values, as Envoy's compressor_filter.cc makes them: which
 * encoding an Accept-Encoding value picks among the compressors of a chain,
 * and the header tests and rewrites around it. */
#ifndef SHARP_FILTERS_COMPRESSOR_NEGOTIATE_H
#define SHARP_FILTERS_COMPRESSOR_NEGOTIATE_H

#include "common.h"

/* Which kind of Accept-Encoding entry decided (the header_* stats). */
typedef enum {
    SHARP_AE_NOT_VALID,  /* nothing acceptable (or every entry q=0): identity */
    SHARP_AE_IDENTITY,   /* "identity" won */
    SHARP_AE_WILDCARD,   /* "*" won: the first compressor registered */
    SHARP_AE_COMPRESSOR, /* a compressor's encoding won */
} sharp_ae_stat_t;

/* One compressor of the chain that may compress the response (its content
 * types allow it), in chain order. */
typedef struct {
    const char *encoding;
    bool choose_first;
} sharp_ae_offer_t;

/* Envoy's chooseEncoding: the entries of `accept_encoding` (comma-separated,
 * each "name[;q=value]") against the offers. The highest q wins; a tie goes
 * to the entry seen first unless the later one's compressor has
 * choose_first; q=0 rules a compressor out; "*" picks the first offer
 * registered. Returns the chosen encoding: an offer's string, or
 * "identity" / "*" (which no compressor takes). */
const char *sharp_ae_choose(sharp_str_t accept_encoding, const sharp_ae_offer_t *offers, size_t n,
                            sharp_ae_stat_t *stat);

/* A content-type value's media type: up to the first ';', trimmed. */
sharp_str_t sharp_ae_media_type(sharp_str_t content_type);
/* True if `media` equals one of types[0..n) ignoring case. */
bool sharp_ae_type_listed(sharp_str_t media, char *const *types, size_t n);
/* A token of a comma-separated value, trimmed, equal to `token`; ignoring
 * case or not (Envoy's caseFindToken and findToken). */
bool sharp_ae_has_token(sharp_str_t value, const char *token, bool ignore_case);
/* A content-length value as Envoy's SimpleAtoi reads it. */
bool sharp_ae_parse_length(sharp_str_t v, uint64_t *out);
/* An ETag value Envoy keeps on a compressed response: a weak one (W/...),
 * or one of at most two bytes. */
bool sharp_ae_etag_kept(sharp_str_t etag);
/* A transfer-encoding value naming a compression (gzip, br, deflate,
 * compress, zstd, or `encoding`): the body is compressed already. */
bool sharp_ae_transfer_encoding_compressed(sharp_str_t te, const char *encoding);

#endif
