/* nv_pin.h: header blocks handed to nghttp2 without its copy.
 *
 * nghttp2_submit_{request,response,headers,trailer} copy every name and
 * value they are given and lower-case each name a byte at a time, unless a
 * field carries NGHTTP2_NV_FLAG_NO_COPY_NAME / NO_COPY_VALUE: then the
 * session keeps the caller's pointers until the frame is packed, and the
 * memory must live until nghttp2 calls on_frame_send_callback or
 * on_frame_not_send_callback for that frame (or the session is deleted
 * with the frame still queued, which calls neither). Tying that to a
 * header map's life would be fragile: a request HEADERS can wait in the
 * session's queue for a stream slot (the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS), and a map may change or go with its
 * stream before the loop turn's flush packs the frame.
 *
 * So the encoders pin the block instead: one allocation holds a copy of
 * the bytes the fields point at (the map's buffer in one memcpy, the
 * codec's few pseudo-headers one by one), every field points into it with
 * both NO_COPY flags, and the block belongs to the connection (a list,
 * for the session's deletion) until nghttp2 says the frame went or will
 * not go. A memcpy of the buffer costs a fraction of nghttp2's copy, which
 * lower-cases each name a byte at a time.
 * The first field's name always starts the block's bytes, so the frame
 * nghttp2 hands back finds its block; no other HEADERS submitted on these
 * sessions sets NO_COPY_NAME on its first field. Names must be lower-case
 * (nghttp2 lower-cases only what it copies): a header map stores them so
 * (headers.h), and the codecs' own names are lower-case literals. */
#ifndef SHARP_HTTP_NV_PIN_H
#define SHARP_HTTP_NV_PIN_H

#include "common.h"
#include "small.h"

#include <nghttp2/nghttp2.h>

typedef struct sharp_nv_pin {
    struct sharp_nv_pin *prev, *next;
    /* the bytes follow */
} sharp_nv_pin_t;

#define SHARP_NV_PIN_FLAGS (NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE)

/* Copies what nv[0..nn) point at into a new block on *list and points the
 * fields at it, setting both NO_COPY flags (other flags are kept). The
 * fields from `first_map` on must point, name and value, into [base, base
 * + blen) (a header map's buffer): they move with one copy of it. The
 * fields before it (pseudo-headers the codec makes) and the first name
 * are copied alone, the first name at the start of the bytes. Returns the
 * block, or NULL for nn == 0 (nothing to pin: nghttp2 gets no fields). */
static inline sharp_nv_pin_t *sharp_nv_pin(sharp_nv_pin_t **list, nghttp2_nv *nv, size_t nn, size_t first_map,
                                           const char *base, size_t blen)
{
    if (!nn) return NULL;
    if (first_map > nn) first_map = nn;
    size_t total = first_map < nn ? blen : 0;
    if (!first_map) total += nv[0].namelen;
    for (size_t i = 0; i < first_map; i++) total += nv[i].namelen + nv[i].valuelen;
    sharp_nv_pin_t *b = sharp_small_alloc(sizeof *b + (total ? total : 1));
    uint8_t *w = (uint8_t *)(b + 1);
    /* the first name starts the bytes (sharp_nv_pin_release finds the block by it) */
    if (!first_map) {
        if (nv[0].namelen) memcpy(w, nv[0].name, nv[0].namelen);
        w += nv[0].namelen;
    }
    for (size_t i = 0; i < first_map; i++) {
        if (nv[i].namelen) memcpy(w, nv[i].name, nv[i].namelen);
        nv[i].name = w;
        w += nv[i].namelen;
        if (nv[i].valuelen) memcpy(w, nv[i].value, nv[i].valuelen);
        nv[i].value = w;
        w += nv[i].valuelen;
        nv[i].flags |= SHARP_NV_PIN_FLAGS;
    }
    if (first_map < nn) {
        if (blen) memcpy(w, base, blen);
        ptrdiff_t d = (const char *)w - base;
        for (size_t i = first_map; i < nn; i++) {
            nv[i].name += d;
            nv[i].value += d;
            nv[i].flags |= SHARP_NV_PIN_FLAGS;
        }
        if (!first_map) nv[0].name = (uint8_t *)(b + 1);
    }
    b->prev = NULL;
    b->next = *list;
    if (*list) (*list)->prev = b;
    *list = b;
    return b;
}

/* Frees a block: the submit that was to take it failed, or its frame has
 * gone (sharp_nv_pin_release). */
static inline void sharp_nv_pin_drop(sharp_nv_pin_t **list, sharp_nv_pin_t *b)
{
    if (!b) return;
    if (b->prev) b->prev->next = b->next;
    else *list = b->next;
    if (b->next) b->next->prev = b->prev;
    sharp_small_free(b);
}

/* From on_frame_send_callback and on_frame_not_send_callback: nghttp2 is
 * done with a pinned HEADERS frame's fields. */
static inline void sharp_nv_pin_release(sharp_nv_pin_t **list, const nghttp2_frame *frame)
{
    if (frame->hd.type != NGHTTP2_HEADERS || !frame->headers.nvlen ||
        !(frame->headers.nva[0].flags & NGHTTP2_NV_FLAG_NO_COPY_NAME))
        return;
    sharp_nv_pin_drop(list, (sharp_nv_pin_t *)(void *)frame->headers.nva[0].name - 1);
}

/* After nghttp2_session_del: the blocks of frames that never went. */
static inline void sharp_nv_pin_free_all(sharp_nv_pin_t **list)
{
    while (*list) sharp_nv_pin_drop(list, *list);
}

#endif
