/* sbuf.h: a growable byte buffer for building responses and text output
 * (admin pages, access log lines, config dumps). Not for the data path's
 * body bytes, which move in libuv buffers. */
#ifndef SHARP_SBUF_H
#define SHARP_SBUF_H

#include "common.h"

typedef struct {
    char *data;
    size_t len, cap;
} sharp_sbuf_t;

void sharp_sbuf_append(sharp_sbuf_t *b, const char *p, size_t n);
/* Room for `extra` more bytes after len and a terminator. */
void sharp_sbuf_reserve(sharp_sbuf_t *b, size_t extra);
static inline void sharp_sbuf_puts(sharp_sbuf_t *b, const char *s)
{
    sharp_sbuf_append(b, s, strlen(s));
}
void sharp_sbuf_printf(sharp_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "[i]" (a list index in a field path), without printf: a list of
 * thousands of endpoints has as many. */
void sharp_sbuf_append_index(sharp_sbuf_t *b, size_t i);
/* Appends s as the inside of a JSON string (quotes not included). */
void sharp_sbuf_json_escape(sharp_sbuf_t *b, const char *s, size_t n);
/* Keeps a terminating NUL after data (not counted in len). */
const char *sharp_sbuf_cstr(sharp_sbuf_t *b);
void sharp_sbuf_reset(sharp_sbuf_t *b);
/* Appends the decoding of standard base64 as Envoy's
 * Base64::decodeWithoutPadding reads it (padding optional, at most two
 * '='; the unused low bits of the last character zero; not one character
 * alone in its quantum); false, out unchanged, when s is empty or not
 * such base64. */
bool sharp_sbuf_base64_decode(sharp_sbuf_t *out, const char *s, size_t n);
void sharp_sbuf_free(sharp_sbuf_t *b);

#endif
