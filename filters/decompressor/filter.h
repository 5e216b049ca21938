/* filter.h: envoy.filters.http.decompressor. */
#ifndef SHARP_FILTERS_DECOMPRESSOR_H
#define SHARP_FILTERS_DECOMPRESSOR_H

#include "http/filter.h"
#include "sbuf.h"

extern const sharp_filter_factory_t sharp_decompressor_filter;

/* Envoy's HeaderUtility::addEncodingToAcceptEncoding: the value's entries
 * (comma-separated, trimmed, empty ones dropped) but those whose coding
 * (before any ';') is `encoding`, joined by ',', then `encoding`. */
void sharp_decomp_accept_encoding(sharp_str_t value, const char *encoding, sharp_sbuf_t *out);
/* contentEncodingMatches: the first coding of a content-encoding value
 * (before any ',', trimmed) is `encoding`, ignoring case. */
bool sharp_decomp_encoding_matches(sharp_str_t value, const char *encoding);
/* modifyContentEncoding: the codings after the first (trimmed), or false
 * when there is only one (the header goes). */
bool sharp_decomp_remaining_codings(sharp_str_t value, sharp_str_t *rest);

#endif
