/* msgpack.c: the MessagePack encoder; see msgpack.h. */
#include "msgpack.h"

/* A type byte and the low `bytes` bytes of v, big-endian. */
static void put(sharp_sbuf_t *b, unsigned char type, uint64_t v, int bytes)
{
    char buf[9];
    buf[0] = (char)type;
    for (int i = 0; i < bytes; i++)
        buf[1 + i] = (char)(v >> (8 * (bytes - 1 - i)));
    sharp_sbuf_append(b, buf, (size_t)bytes + 1);
}

void sharp_msgpack_nil(sharp_sbuf_t *b)
{
    sharp_sbuf_append(b, "\xc0", 1);
}

void sharp_msgpack_bool(sharp_sbuf_t *b, bool v)
{
    sharp_sbuf_append(b, v ? "\xc3" : "\xc2", 1);
}

void sharp_msgpack_uint(sharp_sbuf_t *b, uint64_t v)
{
    if (v < 0x80) {
        char c = (char)v; /* positive fixint */
        sharp_sbuf_append(b, &c, 1);
    } else if (v <= UINT8_MAX) {
        put(b, 0xcc, v, 1);
    } else if (v <= UINT16_MAX) {
        put(b, 0xcd, v, 2);
    } else if (v <= UINT32_MAX) {
        put(b, 0xce, v, 4);
    } else {
        put(b, 0xcf, v, 8);
    }
}

void sharp_msgpack_int(sharp_sbuf_t *b, int64_t v)
{
    if (v >= 0) {
        sharp_msgpack_uint(b, (uint64_t)v);
    } else if (v >= -32) {
        char c = (char)(0xe0 | (v + 32)); /* negative fixint: 111xxxxx */
        sharp_sbuf_append(b, &c, 1);
    } else if (v >= INT8_MIN) {
        put(b, 0xd0, (uint64_t)v, 1);
    } else if (v >= INT16_MIN) {
        put(b, 0xd1, (uint64_t)v, 2);
    } else if (v >= INT32_MIN) {
        put(b, 0xd2, (uint64_t)v, 4);
    } else {
        put(b, 0xd3, (uint64_t)v, 8);
    }
}

void sharp_msgpack_double(sharp_sbuf_t *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put(b, 0xcb, bits, 8);
}

void sharp_msgpack_str(sharp_sbuf_t *b, const char *s, size_t n)
{
    if (n < 32) {
        char c = (char)(0xa0 | n); /* fixstr */
        sharp_sbuf_append(b, &c, 1);
    } else if (n <= UINT8_MAX) {
        put(b, 0xd9, n, 1);
    } else if (n <= UINT16_MAX) {
        put(b, 0xda, n, 2);
    } else {
        put(b, 0xdb, n, 4);
    }
    sharp_sbuf_append(b, s, n);
}

void sharp_msgpack_array(sharp_sbuf_t *b, uint32_t n)
{
    if (n < 16) {
        char c = (char)(0x90 | n); /* fixarray */
        sharp_sbuf_append(b, &c, 1);
    } else if (n <= UINT16_MAX) {
        put(b, 0xdc, n, 2);
    } else {
        put(b, 0xdd, n, 4);
    }
}

void sharp_msgpack_map(sharp_sbuf_t *b, uint32_t n)
{
    if (n < 16) {
        char c = (char)(0x80 | n); /* fixmap */
        sharp_sbuf_append(b, &c, 1);
    } else if (n <= UINT16_MAX) {
        put(b, 0xde, n, 2);
    } else {
        put(b, 0xdf, n, 4);
    }
}
