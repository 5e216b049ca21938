/* test_decompressor.c: envoy.filters.http.decompressor's header rules
 * (Envoy's addEncodingToAcceptEncoding, contentEncodingMatches,
 * modifyContentEncoding) and its libraries built from their configs:
 * streams made by the compressor libraries come back whole in any
 * pieces, the output comes in pieces of at most chunk_size, one call's
 * output is bounded by max_inflate_ratio times its input (a bomb is cut
 * there and the decompressor is done), corrupt input is an error that
 * ends the stream, and a cut-short stream gives what it held. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/mapper.h"
#include "config/types.h"
#include "envoy/extensions/filters/http/compressor/v3/compressor.pb-c.h"
#include "envoy/extensions/filters/http/decompressor/v3/decompressor.pb-c.h"
#include "filters/compressor/codec.h"
#include "filters/compressor/decodec.h"
#include "filters/decompressor/filter.h"
#include "sbuf.h"

#include <zlib.h>

/* ---- header rules ---- */

static char *add_ae(const char *v, const char *enc)
{
    static char buf[256];
    sharp_sbuf_t out = {0};
    sharp_decomp_accept_encoding((sharp_str_t){v, strlen(v)}, enc, &out);
    snprintf(buf, sizeof buf, "%.*s", (int)out.len, out.data ? out.data : "");
    sharp_sbuf_free(&out);
    return buf;
}

static void test_accept_encoding(void **state)
{
    (void)state;
    /* Envoy's ModifyAcceptEncodingHeader cases */
    assert_string_equal(add_ae("one,two", "three"), "one,two,three");
    assert_string_equal(add_ae("one,two", "one"), "two,one");
    assert_string_equal(add_ae("one;q=0.3,two", "two"), "one;q=0.3,two");
    assert_string_equal(add_ae("one;q=0.3,two", "one"), "two,one");
    assert_string_equal(add_ae("", "one"), "one");
    /* entries trimmed, empty ones dropped, the coding compared exactly */
    assert_string_equal(add_ae(" br , ,gzip ; q=0.5,deflate", "gzip"), "br,deflate,gzip");
    assert_string_equal(add_ae("GZIP", "gzip"), "GZIP,gzip");
    assert_string_equal(add_ae(",,,", "gzip"), "gzip");
}

static bool matches(const char *v, const char *enc)
{
    return sharp_decomp_encoding_matches((sharp_str_t){v, strlen(v)}, enc);
}

static void test_content_encoding(void **state)
{
    (void)state;
    assert_true(matches("gzip", "gzip"));
    assert_true(matches(" GZip ", "gzip"));
    assert_true(matches("gzip, br", "gzip"));
    assert_false(matches("br, gzip", "gzip"));
    assert_false(matches("gzipx", "gzip"));
    assert_false(matches("", "gzip"));
    assert_true(matches("br,gzip", "br"));
    sharp_str_t rest;
    assert_false(sharp_decomp_remaining_codings((sharp_str_t){" gzip ", 6}, &rest));
    assert_true(sharp_decomp_remaining_codings((sharp_str_t){"gzip, br ,x", 11}, &rest));
    assert_int_equal(rest.len, 5);
    assert_memory_equal(rest.p, "br ,x", 5);
}

/* ---- libraries ---- */

static void *parse_filter(const char *yaml, const ProtobufCMessageDescriptor *d,
                          sharp_config_doc_t **doc)
{
    sharp_config_types_register();
    sharp_config_error_t e;
    *doc = sharp_config_parse(yaml, strlen(yaml), "t.yaml", d, &e);
    if (!*doc) fail_msg("%s", e.msg);
    return (void *)sharp_config_doc_message(*doc);
}

static int dlib_from_yaml(sharp_decompressor_lib_t *lib, const char *typed_config_yaml, char *err,
                          size_t errlen)
{
    char text[2048];
    snprintf(text, sizeof text, "decompressor_library:\n  name: t\n  typed_config:\n%s",
             typed_config_yaml);
    sharp_config_doc_t *doc;
    const Envoy__Extensions__Filters__Http__Decompressor__V3__Decompressor *pb = parse_filter(
        text, &envoy__extensions__filters__http__decompressor__v3__decompressor__descriptor, &doc);
    int r = sharp_decompressor_lib_init(lib, pb->decompressor_library, err, errlen);
    sharp_config_doc_free(doc);
    return r;
}

static void clib_from_yaml(sharp_compressor_lib_t *lib, const char *typed_config_yaml)
{
    char text[2048], err[256];
    snprintf(text, sizeof text, "compressor_library:\n  name: t\n  typed_config:\n%s",
             typed_config_yaml);
    sharp_config_doc_t *doc;
    const Envoy__Extensions__Filters__Http__Compressor__V3__Compressor *pb = parse_filter(
        text, &envoy__extensions__filters__http__compressor__v3__compressor__descriptor, &doc);
    memset(lib, 0, sizeof *lib);
    if (sharp_compressor_lib_init(lib, pb->compressor_library, err, sizeof err) < 0)
        fail_msg("%s", err);
    sharp_config_doc_free(doc);
}

#define GZIP_C                                                                                     \
    "    \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n"
#define BR_C                                                                                       \
    "    \"@type\": "                                                                              \
    "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli\n"
#define GZIP_D                                                                                     \
    "    \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip\n"
#define BR_D                                                                                       \
    "    \"@type\": "                                                                              \
    "type.googleapis.com/envoy.extensions.compression.brotli.decompressor.v3.Brotli\n"

typedef struct {
    sharp_sbuf_t all;
    size_t pieces, max_piece;
} sink_t;

static void sink(void *arg, const char *p, size_t n)
{
    sink_t *s = arg;
    sharp_sbuf_append(&s->all, p, n);
    s->pieces++;
    if (n > s->max_piece) s->max_piece = n;
}

static void compress_all(const char *typed, const char *in, size_t n, sharp_sbuf_t *out)
{
    sharp_compressor_lib_t lib;
    clib_from_yaml(&lib, typed);
    sharp_compressor_t *c = sharp_compressor_new(&lib);
    assert_non_null(c);
    sink_t s = {0};
    assert_int_equal(sharp_compressor_compress(c, in, n, true, sink, &s), 0);
    sharp_compressor_free(c);
    sharp_compressor_lib_free(&lib);
    *out = s.all;
}

/* Text that compresses about 3:1 (below every ratio bound). */
static char *text_input(size_t n)
{
    char *in = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        in[i] = (char)('a' + (x >> 16) % 8);
    }
    return in;
}

static void round_trip(const char *ctyped, const char *dtyped, size_t piece)
{
    size_t n = 300000;
    char *in = text_input(n);
    sharp_sbuf_t z;
    compress_all(ctyped, in, n, &z);
    sharp_decompressor_lib_t lib;
    char err[256];
    assert_int_equal(dlib_from_yaml(&lib, dtyped, err, sizeof err), 0);
    sharp_decompressor_t *d = sharp_decompressor_new(&lib);
    assert_non_null(d);
    sink_t s = {0};
    for (size_t off = 0; off < z.len; off += piece) {
        size_t k = z.len - off < piece ? z.len - off : piece;
        int zerr;
        assert_int_equal(sharp_decompressor_decompress(d, z.data + off, k, sink, &s, &zerr),
                         SHARP_DECOMPRESS_OK);
    }
    assert_true(sharp_decompressor_finished(d));
    assert_int_equal(s.all.len, n);
    assert_memory_equal(s.all.data, in, n);
    assert_true(s.max_piece <= lib.chunk_size);
    sharp_decompressor_free(d);
    sharp_sbuf_free(&s.all);
    sharp_sbuf_free(&z);
    free(in);
}

static void test_round_trips(void **state)
{
    (void)state;
    size_t pieces[] = {1, 7, 1000, 1u << 20};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        round_trip(GZIP_C, GZIP_D, pieces[i]);
        round_trip(GZIP_C "    window_bits: 9\n",
                   GZIP_D "    window_bits: 9\n    chunk_size: 8192\n", pieces[i]);
        round_trip(BR_C, BR_D, pieces[i]);
        round_trip(BR_C, BR_D "    disable_ring_buffer_reallocation: true\n    chunk_size: 65536\n",
                   pieces[i]);
    }
}

static void test_library_config(void **state)
{
    (void)state;
    sharp_decompressor_lib_t lib;
    char err[256];
    assert_int_equal(dlib_from_yaml(&lib, GZIP_D, err, sizeof err), 0);
    assert_string_equal(lib.encoding, "gzip");
    assert_string_equal(lib.stats_prefix, "gzip");
    assert_int_equal(lib.window_bits, 15);
    assert_int_equal(lib.chunk_size, 4096);
    assert_int_equal(lib.max_inflate_ratio, 100);
    assert_int_equal(dlib_from_yaml(&lib, GZIP_D "    max_inflate_ratio: 7\n", err, sizeof err), 0);
    assert_int_equal(lib.max_inflate_ratio, 7);
    assert_int_equal(dlib_from_yaml(&lib, BR_D, err, sizeof err), 0);
    assert_string_equal(lib.encoding, "br");
    assert_string_equal(lib.stats_prefix, "brotli");
    assert_int_equal(lib.max_inflate_ratio, 100);
    /* a compressor library is not a decompressor library */
    assert_int_equal(dlib_from_yaml(&lib, GZIP_C, err, sizeof err), -1);
    assert_non_null(strstr(err, "decompressor_library: unsupported decompressor library"));
    assert_non_null(strstr(err, "envoy.extensions.compression.gzip.compressor.v3.Gzip"));
}

/* A bomb: 64 MiB of zeros, about 1000:1. Cut at the ratio, or (above
 * what deflate can reach) let through with every call still bounded. */
static void bomb(const char *ctyped, const char *dtyped, uint32_t ratio, size_t piece, bool cut)
{
    size_t n = 64u << 20;
    char *in = calloc(1, n);
    sharp_sbuf_t z;
    compress_all(ctyped, in, n, &z);
    free(in);
    assert_true(z.len * 500 < n);
    sharp_decompressor_lib_t lib;
    char err[256];
    assert_int_equal(dlib_from_yaml(&lib, dtyped, err, sizeof err), 0);
    assert_int_equal(lib.max_inflate_ratio, ratio);
    sharp_decompressor_t *d = sharp_decompressor_new(&lib);
    sink_t s = {0};
    sharp_decompress_result_t r = SHARP_DECOMPRESS_OK;
    size_t off = 0, k = 0;
    for (; off < z.len && r == SHARP_DECOMPRESS_OK; off += k) {
        k = z.len - off < piece ? z.len - off : piece;
        size_t before = s.all.len;
        int zerr;
        r = sharp_decompressor_decompress(d, z.data + off, k, sink, &s, &zerr);
        /* one call: at most ratio x its input and one more chunk */
        assert_true(s.all.len - before <= (size_t)ratio * k + lib.chunk_size);
    }
    if (!cut) {
        assert_int_equal(r, SHARP_DECOMPRESS_OK);
        assert_true(sharp_decompressor_finished(d));
        assert_int_equal(s.all.len, n);
        sharp_decompressor_free(d);
        sharp_sbuf_free(&s.all);
        sharp_sbuf_free(&z);
        return;
    }
    assert_int_equal(r, SHARP_DECOMPRESS_RATIO);
    assert_false(sharp_decompressor_finished(d));
    /* the decompressor is done: the rest gives nothing */
    size_t got = s.all.len;
    int zerr;
    if (off < z.len)
        assert_int_equal(
            sharp_decompressor_decompress(d, z.data + off, z.len - off, sink, &s, &zerr),
            SHARP_DECOMPRESS_OK);
    assert_int_equal(s.all.len, got);
    assert_true(got < n);
    sharp_decompressor_free(d);
    sharp_sbuf_free(&s.all);
    sharp_sbuf_free(&z);
}

static void test_inflate_ratio_bound(void **state)
{
    (void)state;
    bomb(GZIP_C "    compression_level: BEST_COMPRESSION\n", GZIP_D, 100, 65536, true);
    bomb(GZIP_C "    compression_level: BEST_COMPRESSION\n", GZIP_D "    max_inflate_ratio: 10\n",
         10, 1000, true);
    bomb(GZIP_C "    compression_level: BEST_COMPRESSION\n", GZIP_D "    max_inflate_ratio: 1032\n",
         1032, 16384, false);
    bomb(BR_C, BR_D, 100, 4096, true);
    /* Envoy's LimitMaxDecompressOutputSize: 20 KB of zeros in a 69-byte
     * stream at ratio 10 gives one 4096-byte chunk */
    sharp_decompressor_lib_t lib;
    char err[256];
    assert_int_equal(dlib_from_yaml(&lib, GZIP_D "    max_inflate_ratio: 10\n", err, sizeof err),
                     0);
    char zeros[20000] = {0};
    sharp_sbuf_t z;
    compress_all(GZIP_C "    compression_level: BEST_COMPRESSION\n", zeros, sizeof zeros, &z);
    assert_true(z.len < 100);
    sharp_decompressor_t *d = sharp_decompressor_new(&lib);
    sink_t s = {0};
    int zerr;
    assert_int_equal(sharp_decompressor_decompress(d, z.data, z.len, sink, &s, &zerr),
                     SHARP_DECOMPRESS_RATIO);
    assert_int_equal(s.all.len, 4096);
    sharp_decompressor_free(d);
    sharp_sbuf_free(&s.all);
    sharp_sbuf_free(&z);
}

static void test_corrupt_and_truncated(void **state)
{
    (void)state;
    sharp_decompressor_lib_t lib;
    char err[256];
    assert_int_equal(dlib_from_yaml(&lib, GZIP_D, err, sizeof err), 0);
    /* not gzip at all: a data error, nothing out, then done */
    sharp_decompressor_t *d = sharp_decompressor_new(&lib);
    sink_t s = {0};
    int zerr;
    const char junk[] = "this is not a gzip stream at all, just text";
    assert_int_equal(sharp_decompressor_decompress(d, junk, sizeof junk, sink, &s, &zerr),
                     SHARP_DECOMPRESS_ERROR);
    assert_int_equal(zerr, Z_DATA_ERROR);
    assert_int_equal(s.all.len, 0);
    assert_int_equal(sharp_decompressor_decompress(d, junk, sizeof junk, sink, &s, &zerr),
                     SHARP_DECOMPRESS_OK);
    sharp_decompressor_free(d);

    size_t n = 100000;
    char *in = text_input(n);
    sharp_sbuf_t z;
    compress_all(GZIP_C, in, n, &z);
    /* cut short: what it held comes out, no error, not finished */
    d = sharp_decompressor_new(&lib);
    assert_int_equal(sharp_decompressor_decompress(d, z.data, z.len / 2, sink, &s, &zerr),
                     SHARP_DECOMPRESS_OK);
    assert_false(sharp_decompressor_finished(d));
    assert_true(s.all.len > 0 && s.all.len < n);
    assert_memory_equal(s.all.data, in, s.all.len);
    sharp_decompressor_free(d);
    sharp_sbuf_reset(&s.all);
    /* corrupted in the middle: the part before comes out, then an error */
    z.data[z.len / 2] ^= 0x55;
    z.data[z.len / 2 + 1] ^= 0xaa;
    d = sharp_decompressor_new(&lib);
    sharp_decompress_result_t r = sharp_decompressor_decompress(d, z.data, z.len, sink, &s, &zerr);
    assert_int_equal(r, SHARP_DECOMPRESS_ERROR);
    assert_true(s.all.len < n);
    sharp_decompressor_free(d);
    sharp_sbuf_reset(&s.all);
    z.data[z.len / 2] ^= 0x55;
    z.data[z.len / 2 + 1] ^= 0xaa;
    /* bytes after the end of the stream are dropped */
    sharp_sbuf_append(&z, "trailing", 8);
    d = sharp_decompressor_new(&lib);
    assert_int_equal(sharp_decompressor_decompress(d, z.data, z.len, sink, &s, &zerr),
                     SHARP_DECOMPRESS_OK);
    assert_true(sharp_decompressor_finished(d));
    assert_int_equal(s.all.len, n);
    assert_int_equal(sharp_decompressor_decompress(d, "more", 4, sink, &s, &zerr),
                     SHARP_DECOMPRESS_OK);
    assert_int_equal(s.all.len, n);
    sharp_decompressor_free(d);
    sharp_sbuf_free(&s.all);
    sharp_sbuf_free(&z);
    free(in);

    /* brotli: junk is an error */
    assert_int_equal(dlib_from_yaml(&lib, BR_D, err, sizeof err), 0);
    d = sharp_decompressor_new(&lib);
    assert_int_equal(
        sharp_decompressor_decompress(d, "\xff\xff\xff\xff\xff\xff", 6, sink, &s, &zerr),
        SHARP_DECOMPRESS_ERROR);
    sharp_decompressor_free(d);
    sharp_sbuf_free(&s.all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding),     cmocka_unit_test(test_content_encoding),
        cmocka_unit_test(test_round_trips),         cmocka_unit_test(test_library_config),
        cmocka_unit_test(test_inflate_ratio_bound), cmocka_unit_test(test_corrupt_and_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
