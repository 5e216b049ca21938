/* msgpack.h: a MessagePack encoder (https://msgpack.org/, the spec's
 * format families) appending to a growable buffer, for the Datadog
 * tracer's reports (http/datadog.h). Each value takes its smallest
 * encoding: positive and negative fixint, uint/int 8 to 64, fixstr and
 * str 8/16/32, fixarray and array 16/32, fixmap and map 16/32, float 64.
 * A container is written as its header followed by its elements (a map's
 * keys and values one after the other). Pure and unit tested
 * (test/unit/test_datadog.c). */
#ifndef SHARP_MSGPACK_H
#define SHARP_MSGPACK_H

#include "common.h"
#include "sbuf.h"

void sharp_msgpack_nil(sharp_sbuf_t *b);
void sharp_msgpack_bool(sharp_sbuf_t *b, bool v);
void sharp_msgpack_uint(sharp_sbuf_t *b, uint64_t v);
/* A negative value as a (negative fixint or) int; >= 0 as sharp_msgpack_uint. */
void sharp_msgpack_int(sharp_sbuf_t *b, int64_t v);
void sharp_msgpack_double(sharp_sbuf_t *b, double v);
/* A string of n bytes (they are not checked to be UTF-8); n < 2^32. */
void sharp_msgpack_str(sharp_sbuf_t *b, const char *s, size_t n);
static inline void sharp_msgpack_cstr(sharp_sbuf_t *b, const char *s)
{
    sharp_msgpack_str(b, s, strlen(s));
}
/* The header of an array of n elements / a map of n pairs. */
void sharp_msgpack_array(sharp_sbuf_t *b, uint32_t n);
void sharp_msgpack_map(sharp_sbuf_t *b, uint32_t n);

#endif
