/* hpack_hint.h: which header fields SHARP's HTTP/2 encoders (server and
 * client side) ask nghttp2 not to index in its HPACK dynamic table.
 *
 * nghttp2's encoder indexes every field it is not told otherwise about,
 * and finds an entry by walking a chain of the entries that share the
 * field's name. A field whose value changes on every message (a request
 * id, a per-connection request counter, a duration) then fills the table
 * with entries never used again: they evict the entries worth keeping,
 * and every later field of that name walks (and compares) all of them.
 * Request and trace ids are known by name; for numeric values a
 * connection remembers, per name, the last value it sent, and a name
 * whose numeric value has changed once is not indexed on that connection
 * any more. A value that stays the same (x-envoy-expected-rq-timeout-ms:
 * 15000) keeps being indexed, as do dates, which change once a second.
 * Not indexing changes only the representation on the wire, never what
 * the peer decodes. */
#ifndef SHARP_HTTP_HPACK_HINT_H
#define SHARP_HTTP_HPACK_HINT_H

#include "http/headers.h"

#define SHARP_HPACK_HINT_SLOTS 32

typedef struct {
    uint32_t last[SHARP_HPACK_HINT_SLOTS]; /* hash of the last numeric value, 0 = none yet */
    uint32_t changed;                      /* a bit per slot: its value has changed */
} sharp_hpack_hint_t;

static inline bool sharp_hpack_no_index(sharp_hpack_hint_t *hh, sharp_str_t name, sharp_str_t value)
{
    if (sharp_header_value_is_unique(name)) return true;
    if (!value.len || value.len > 20 || !name.len) return false;
    uint32_t vh = 2166136261u;
    for (size_t i = 0; i < value.len; i++) {
        unsigned char c = (unsigned char)value.p[i];
        if ((unsigned)(c - '0') > 9u) return false;
        vh = (vh ^ c) * 16777619u;
    }
    unsigned slot = ((unsigned)name.len * 7u + (unsigned char)name.p[0] * 3u +
                     (unsigned char)name.p[name.len - 1]) % SHARP_HPACK_HINT_SLOTS;
    uint32_t bit = (uint32_t)1 << slot;
    if (hh->changed & bit) return true;
    vh |= 1; /* never 0, which marks an unused slot */
    if (hh->last[slot] && hh->last[slot] != vh) {
        hh->changed |= bit;
        return true;
    }
    hh->last[slot] = vh;
    return false;
}

#endif
