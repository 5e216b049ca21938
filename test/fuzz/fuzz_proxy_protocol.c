/* fuzz_proxy_protocol.c: libFuzzer target for the PROXY protocol header
 * parser (proxy/proxy_protocol.h), as the listener calls it: over the bytes
 * read so far, again as more come. The first input byte picks the options
 * (bit 0 allow_requests_without_proxy_protocol, bit 1 a disallowed v1,
 * bit 2 a disallowed v2); the rest is what the client sent, parsed whole
 * and at several shorter lengths, each in a buffer of exactly that size.
 *
 * Invariants: no out-of-bounds read (the sanitizers), a header no longer
 * than the bytes it was read from, TLVs within the header, and a verdict
 * that more bytes never change: once a prefix is a header, every longer
 * input is the same header; once it closes the connection, so does every
 * longer input. */
#include "proxy_protocol.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sharp_pp_result_t parse_exact(const uint8_t *data, size_t n, const sharp_pp_opts_t *o, sharp_pp_header_t *h)
{
    /* nothing read yet is no buffer at all (the listener's timeout with
     * continue_on_listener_filters_timeout) */
    uint8_t *p = n ? malloc(n) : NULL;
    if (n) memcpy(p, data, n);
    sharp_pp_result_t r = sharp_pp_parse(p, n, o, h);
    if (r == SHARP_PP_DONE) {
        if (h->len > n) abort();
        if (h->tlvs) {
            if (h->version != 2 || h->local) abort();
            if (h->tlvs < p || h->tlvs + h->tlvs_len > p + h->len) abort();
            size_t at = 0, seen = 0;
            sharp_pp_tlv_t t;
            while (sharp_pp_tlv_next(h, &at, &t)) {
                if (t.value < h->tlvs || t.value + t.len > h->tlvs + h->tlvs_len) abort();
                seen += 3 + t.len;
            }
            if (seen != h->tlvs_len) abort(); /* the TLVs fill their block exactly */
        }
        if (h->version == 0 && h->len) abort();
        h->tlvs = NULL; /* points into p */
    }
    free(p);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    sharp_pp_opts_t o = {
        .allow_without = data[0] & 1,
        .deny_v1 = (data[0] >> 1) & 1,
        .deny_v2 = (data[0] >> 2) & 1,
    };
    data++;
    size--;
    /* the lengths a client's segments might end at: a few near the start,
     * the fixed parts' boundaries, and the whole */
    size_t cuts[] = {0, 1, 2, 5, 6, 12, 15, 16, 28, 52, size / 3, size / 2, size - (size > 0), size};
    sharp_pp_result_t first = SHARP_PP_NEED_MORE;
    sharp_pp_header_t fh = {0};
    size_t last = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        size_t n = cuts[i];
        if (n > size || (i && n < last)) continue; /* in increasing order only */
        last = n;
        sharp_pp_header_t h;
        sharp_pp_result_t r = parse_exact(data, n, &o, &h);
        if (first != SHARP_PP_NEED_MORE) {
            /* a header stays the same header; a connection closed stays
             * closed (whether as an error or a disallowed version, and
             * with which version's stats, may depend on where the bytes
             * were cut: a short line ending early, a v1 line too long) */
            if ((r == SHARP_PP_DONE) != (first == SHARP_PP_DONE) || r == SHARP_PP_NEED_MORE) abort();
            if (r == SHARP_PP_DONE && (h.version != fh.version || h.len != fh.len || h.local != fh.local)) abort();
        } else if (r != SHARP_PP_NEED_MORE) {
            first = r;
            fh = h;
        }
    }
    return 0;
}
