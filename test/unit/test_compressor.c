/* test_compressor.c: envoy.filters.http.compressor's Accept-Encoding
 * negotiation (Envoy's chooseEncoding, quirks included) and header tests,
 * and the compressor libraries built from their configs: every stream
 * decodes back to its input, each call flushes as Envoy's do, the output
 * comes in pieces of at most chunk_size, and each library parameter
 * changes what is produced. */
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
#include "filters/compressor/codec.h"
#include "filters/compressor/negotiate.h"
#include "sbuf.h"

#include <brotli/decode.h>
#include <zlib.h>
#include <zstd.h>

/* ---- negotiation ---- */

static const char *choose(const char *ae, const sharp_ae_offer_t *o, size_t n, sharp_ae_stat_t *st)
{
    return sharp_ae_choose((sharp_str_t){ae, strlen(ae)}, o, n, st);
}

static void expect(const char *ae, const sharp_ae_offer_t *o, size_t n, const char *enc, sharp_ae_stat_t stat)
{
    sharp_ae_stat_t st;
    const char *got = choose(ae, o, n, &st);
    if (strcmp(got, enc) || st != stat)
        fail_msg("accept-encoding \"%s\": got %s (stat %d), want %s (stat %d)", ae, got, st, enc, stat);
}

static const sharp_ae_offer_t GZ[] = {{"gzip", false}};

static void test_single_compressor(void **state)
{
    (void)state;
    expect("gzip", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    expect("deflate, gzip;q=1.0, *;q=0.5", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    expect(" , gzip", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    expect("gzip;level=1", GZ, 1, "gzip", SHARP_AE_COMPRESSOR); /* not a q parameter: q stays 1 */
    expect("gzip ; Q = 0.5", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    /* "gzip" weighs more than "*": q=0 on gzip rules it out whatever * says */
    expect("gzip;q=0,*;q=1", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("*;q=0,gzip;q=1", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    expect("deflate;q=0, gzip;q=0, *;q=0.3", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("identity", GZ, 1, "identity", SHARP_AE_IDENTITY);
    expect("identity;q=0.5, gzip;q=0.4", GZ, 1, "identity", SHARP_AE_IDENTITY);
    expect("gzip;q=0.4, identity;q=0.5", GZ, 1, "identity", SHARP_AE_IDENTITY);
    expect("*", GZ, 1, "gzip", SHARP_AE_WILDCARD);
    expect("deflate, br", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect(",,", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    /* names are compared exactly, as Envoy's map does */
    expect("GZIP", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    /* an unreadable q drops the entry; nan and negatives never win */
    expect("gzip;q=abc", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("gzip;q=abc, *", GZ, 1, "gzip", SHARP_AE_WILDCARD);
    expect("gzip;q=nan", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("gzip;q=-1", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("gzip;q=0x1", GZ, 1, "identity", SHARP_AE_NOT_VALID);
    expect("gzip;q=1e-1", GZ, 1, "gzip", SHARP_AE_COMPRESSOR);
    /* no compressor offered (content type not listed anywhere) */
    expect("gzip", GZ, 0, "identity", SHARP_AE_NOT_VALID);
}

static void test_several_compressors(void **state)
{
    (void)state;
    sharp_ae_offer_t o[] = {{"br", false}, {"zstd", false}, {"gzip", false}};
    expect("gzip, br", o, 3, "gzip", SHARP_AE_COMPRESSOR); /* equal q: the first entry */
    expect("br, gzip", o, 3, "br", SHARP_AE_COMPRESSOR);
    expect("gzip;q=0.5, br;q=0.8", o, 3, "br", SHARP_AE_COMPRESSOR);
    expect("*", o, 3, "br", SHARP_AE_WILDCARD); /* the first registered */
    expect("br;q=0, *", o, 3, "zstd", SHARP_AE_WILDCARD);
    /* choose_first takes ties, the last filter with it winning */
    sharp_ae_offer_t cf[] = {{"br", false}, {"zstd", true}, {"gzip", true}};
    expect("br, zstd, gzip", cf, 3, "gzip", SHARP_AE_COMPRESSOR);
    expect("br;q=0.9, zstd;q=0.5, gzip;q=0.5", cf, 3, "br", SHARP_AE_COMPRESSOR);
    /* two filters with one encoding: the first registered stands */
    sharp_ae_offer_t dup[] = {{"gzip", false}, {"gzip", true}, {"br", false}};
    expect("br, gzip", dup, 3, "br", SHARP_AE_COMPRESSOR);
}

static void test_envoy_map_quirks(void **state)
{
    (void)state;
    /* a tie with "*" makes Envoy's operator[] add "*" to its map, with
     * registration 0: sorted first, the wildcard then picks "*" itself and
     * nothing compresses */
    expect("*;q=0.5, *;q=0.5", GZ, 1, "*", SHARP_AE_WILDCARD);
    /* the same with "identity", sorted before "zstd" */
    sharp_ae_offer_t z[] = {{"zstd", false}};
    expect("identity;q=0.5, identity;q=0.5, *", z, 1, "identity", SHARP_AE_WILDCARD);
    /* but after "gzip" in name order: gzip stands */
    expect("identity;q=0.5, identity;q=0.5, *", GZ, 1, "gzip", SHARP_AE_WILDCARD);
}

static void test_header_helpers(void **state)
{
    (void)state;
    sharp_str_t m = sharp_ae_media_type(SHARP_STR("  Text/HTML ; charset=utf-8"));
    assert_int_equal(m.len, 9);
    assert_memory_equal(m.p, "Text/HTML", 9);
    char *types[] = {"application/json", "text/html"};
    assert_true(sharp_ae_type_listed(m, types, 2));
    assert_false(sharp_ae_type_listed(SHARP_STR("text/htm"), types, 2));
    assert_true(sharp_ae_has_token(SHARP_STR("public, No-Transform"), "no-transform", true));
    assert_false(sharp_ae_has_token(SHARP_STR("public, no-transformx"), "no-transform", true));
    /* vary is matched exactly (Envoy's findToken) */
    assert_false(sharp_ae_has_token(SHARP_STR("Accept-Encoding"), "accept-encoding", false));
    assert_true(sharp_ae_has_token(SHARP_STR("origin, accept-encoding"), "accept-encoding", false));
    uint64_t n;
    assert_true(sharp_ae_parse_length(SHARP_STR(" +42 "), &n));
    assert_int_equal(n, 42);
    assert_false(sharp_ae_parse_length(SHARP_STR("4 2"), &n));
    assert_false(sharp_ae_parse_length(SHARP_STR("99999999999999999999"), &n));
    assert_true(sharp_ae_etag_kept(SHARP_STR("W/\"abc\"")));
    assert_true(sharp_ae_etag_kept(SHARP_STR("w/\"abc\"")));
    assert_true(sharp_ae_etag_kept(SHARP_STR("\"\"")));
    assert_false(sharp_ae_etag_kept(SHARP_STR("\"abc\"")));
    assert_true(sharp_ae_transfer_encoding_compressed(SHARP_STR("chunked, GZIP"), "br"));
    assert_true(sharp_ae_transfer_encoding_compressed(SHARP_STR("x-custom"), "x-custom"));
    assert_false(sharp_ae_transfer_encoding_compressed(SHARP_STR("chunked"), "gzip"));
}

/* ---- libraries ---- */

/* A library from a compressor_library's YAML, through the config mapper
 * and the support table's types, as the loader builds it. */
static int lib_from_yaml(sharp_compressor_lib_t *lib, const char *typed_config_yaml, char *err, size_t errlen)
{
    sharp_config_types_register();
    char text[2048];
    snprintf(text, sizeof text, "compressor_library:\n  name: t\n  typed_config:\n%s", typed_config_yaml);
    sharp_config_error_t e;
    sharp_config_doc_t *doc = sharp_config_parse(
        text, strlen(text), "t.yaml", &envoy__extensions__filters__http__compressor__v3__compressor__descriptor, &e);
    if (!doc) fail_msg("%s", e.msg);
    const Envoy__Extensions__Filters__Http__Compressor__V3__Compressor *pb =
        (const void *)sharp_config_doc_message(doc);
    memset(lib, 0, sizeof *lib);
    int r = sharp_compressor_lib_init(lib, pb->compressor_library, err, errlen);
    sharp_config_doc_free(doc);
    return r;
}

#define GZIP_T "    \"@type\": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip\n"
#define BR_T "    \"@type\": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli\n"
#define ZSTD_T "    \"@type\": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd\n"

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

/* Inflates a gzip stream (possibly unfinished); returns the bytes. */
static size_t gunzip(const char *in, size_t n, char *out, size_t cap, bool *ended)
{
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int r = inflate(&z, Z_SYNC_FLUSH);
    assert_true(r == Z_OK || r == Z_STREAM_END || r == Z_BUF_ERROR);
    *ended = r == Z_STREAM_END;
    size_t got = cap - z.avail_out;
    inflateEnd(&z);
    return got;
}

static size_t unbrotli(const char *in, size_t n, char *out, size_t cap, bool *ended)
{
    BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    size_t ai = n, ao = cap;
    const uint8_t *ni = (const uint8_t *)in;
    uint8_t *no = (uint8_t *)out;
    BrotliDecoderResult r = BrotliDecoderDecompressStream(d, &ai, &ni, &ao, &no, NULL);
    assert_true(r != BROTLI_DECODER_RESULT_ERROR);
    *ended = r == BROTLI_DECODER_RESULT_SUCCESS;
    BrotliDecoderDestroyInstance(d);
    return cap - ao;
}

static size_t unzstd(const char *in, size_t n, char *out, size_t cap, bool *ended)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_inBuffer i = {in, n, 0};
    ZSTD_outBuffer o = {out, cap, 0};
    size_t r = ZSTD_decompressStream(d, &o, &i);
    assert_false(ZSTD_isError(r));
    *ended = r == 0;
    ZSTD_freeDCtx(d);
    return o.pos;
}

typedef size_t (*decode_fn)(const char *, size_t, char *, size_t, bool *);

/* Text-like input: words from a small vocabulary, with long-distance
 * repeats (a 6000-byte block comes back every 20000 bytes). */
static char *make_text(size_t n)
{
    static const char *words[] = {"compress", "envoy ", "stream ", "filter, ", "zlib ", "brotli\n", "the ", "a "};
    char *b = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        if (i >= 20000 && i % 20000 < 6000) {
            b[i] = b[i - 20000];
            continue;
        }
        x = x * 1103515245 + 12345;
        const char *w = words[(x >> 16) % 8];
        size_t k = 0;
        while (w[k] && i < n) b[i++] = w[k++];
        i--;
    }
    return b;
}

static char *make_random(size_t n)
{
    char *b = malloc(n);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (char)x;
    }
    return b;
}

/* Compresses `in` in `pieces` calls and the finish; checks the round trip
 * and, for libraries that flush each call, that the output of every call
 * decodes to everything given so far. Returns the compressed size. */
static size_t run(const char *typed_config, const char *in, size_t n, int pieces, decode_fn dec, bool flushes,
                  size_t *max_piece)
{
    sharp_compressor_lib_t lib;
    char err[256];
    if (lib_from_yaml(&lib, typed_config, err, sizeof err) < 0) fail_msg("%s", err);
    sharp_compressor_t *c = sharp_compressor_new(&lib);
    assert_non_null(c);
    sink_t s = {0};
    char *out = malloc(n + 1);
    size_t off = 0;
    for (int i = 0; i < pieces; i++) {
        size_t k = i == pieces - 1 ? n - off : n / (size_t)pieces;
        assert_int_equal(sharp_compressor_compress(c, in + off, k, false, sink, &s), 0);
        off += k;
        if (flushes) {
            bool ended;
            size_t got = dec(s.all.data, s.all.len, out, n + 1, &ended);
            assert_int_equal(got, off);
            assert_false(ended);
            assert_memory_equal(out, in, off);
        }
    }
    assert_int_equal(sharp_compressor_compress(c, NULL, 0, true, sink, &s), 0);
    /* nothing more after the end */
    assert_int_equal(sharp_compressor_compress(c, "x", 1, false, sink, &s), -1);
    bool ended;
    size_t got = dec(s.all.data, s.all.len, out, n + 1, &ended);
    assert_true(ended);
    assert_int_equal(got, n);
    assert_memory_equal(out, in, n);
    size_t size = s.all.len;
    if (max_piece) *max_piece = s.max_piece;
    sharp_sbuf_free(&s.all);
    free(out);
    sharp_compressor_free(c);
    sharp_compressor_lib_free(&lib);
    return size;
}

static void test_round_trips_and_flushes(void **state)
{
    (void)state;
    size_t n = 300000;
    char *t = make_text(n), *r = make_random(n);
    size_t gz = run(GZIP_T, t, n, 7, gunzip, true, NULL);
    size_t br = run(BR_T, t, n, 7, unbrotli, true, NULL);
    /* zstd emits only what fills its blocks until the end (as Envoy's) */
    size_t zs = run(ZSTD_T, t, n, 7, unzstd, false, NULL);
    assert_true(gz < n / 3 && br < n / 3 && zs < n / 3);
    /* incompressible data grows only a little */
    assert_true(run(GZIP_T, r, n, 3, gunzip, true, NULL) < n + n / 50);
    assert_true(run(BR_T, r, n, 3, unbrotli, true, NULL) < n + n / 50);
    assert_true(run(ZSTD_T, r, n, 3, unzstd, false, NULL) < n + n / 50);
    /* an empty body is still a valid stream */
    assert_true(run(GZIP_T, t, 0, 1, gunzip, false, NULL) > 0);
    assert_true(run(BR_T, t, 0, 1, unbrotli, false, NULL) > 0);
    assert_true(run(ZSTD_T, t, 0, 1, unzstd, false, NULL) > 0);
    free(t);
    free(r);
}

static void test_chunk_size(void **state)
{
    (void)state;
    size_t n = 400000, max;
    char *r = make_random(n);
    /* gzip and brotli default to 4096-byte output chunks, zstd to
     * ZSTD_CStreamOutSize() */
    run(GZIP_T, r, n, 1, gunzip, true, &max);
    assert_int_equal(max, 4096);
    run(GZIP_T "    chunk_size: 16384\n", r, n, 1, gunzip, true, &max);
    assert_int_equal(max, 16384);
    run(BR_T, r, n, 1, unbrotli, true, &max);
    assert_int_equal(max, 4096);
    run(BR_T "    chunk_size: 65536\n", r, n, 1, unbrotli, true, &max);
    assert_int_equal(max, 65536);
    run(ZSTD_T "    chunk_size: 8192\n", r, n, 1, unzstd, false, &max);
    assert_int_equal(max, 8192);
    run(ZSTD_T, r, n, 1, unzstd, false, &max);
    assert_true(max > 65536 && max <= ZSTD_CStreamOutSize());
    free(r);
}

static void test_gzip_parameters(void **state)
{
    (void)state;
    size_t n = 300000;
    char *t = make_text(n);
    size_t def = run(GZIP_T, t, n, 1, gunzip, true, NULL);
    size_t fast = run(GZIP_T "    compression_level: BEST_SPEED\n", t, n, 1, gunzip, true, NULL);
    size_t best = run(GZIP_T "    compression_level: BEST_COMPRESSION\n", t, n, 1, gunzip, true, NULL);
    size_t l9 = run(GZIP_T "    compression_level: COMPRESSION_LEVEL_9\n", t, n, 1, gunzip, true, NULL);
    assert_true(best < fast);
    assert_int_equal(best, l9); /* an alias */
    assert_true(def <= fast);
    /* the 6000-byte repeats 20000 bytes back need the 32 KiB window */
    size_t w9 = run(GZIP_T "    window_bits: 9\n", t, n, 1, gunzip, true, NULL);
    size_t w15 = run(GZIP_T "    window_bits: 15\n", t, n, 1, gunzip, true, NULL);
    assert_true(w15 < w9);
    assert_true(w15 < def); /* the default window is 12 bits */
    size_t m1 = run(GZIP_T "    memory_level: 1\n", t, n, 1, gunzip, true, NULL);
    size_t m9 = run(GZIP_T "    memory_level: 9\n", t, n, 1, gunzip, true, NULL);
    assert_int_not_equal(m1, m9);
    size_t huff = run(GZIP_T "    compression_strategy: HUFFMAN_ONLY\n", t, n, 1, gunzip, true, NULL);
    size_t rle = run(GZIP_T "    compression_strategy: RLE\n", t, n, 1, gunzip, true, NULL);
    size_t fixed = run(GZIP_T "    compression_strategy: FIXED\n", t, n, 1, gunzip, true, NULL);
    size_t filtered = run(GZIP_T "    compression_strategy: FILTERED\n", t, n, 1, gunzip, true, NULL);
    assert_true(huff > def && rle > def && fixed > def);
    assert_int_not_equal(filtered, def);
    free(t);
}

static void test_brotli_parameters(void **state)
{
    (void)state;
    size_t n = 300000;
    char *t = make_text(n);
    size_t def = run(BR_T, t, n, 1, unbrotli, true, NULL);
    size_t q0 = run(BR_T "    quality: 0\n", t, n, 1, unbrotli, true, NULL);
    size_t q11 = run(BR_T "    quality: 11\n", t, n, 1, unbrotli, true, NULL);
    assert_true(q11 < def && def < q0);
    size_t w10 = run(BR_T "    window_bits: 10\n", t, n, 1, unbrotli, true, NULL);
    assert_true(w10 > def); /* a 1 KiB window misses the repeats */
    size_t b16 = run(BR_T "    quality: 11\n    input_block_bits: 16\n", t, n, 1, unbrotli, true, NULL);
    assert_int_not_equal(b16, q11);
    size_t lcm = run(BR_T "    quality: 11\n    disable_literal_context_modeling: true\n", t, n, 1, unbrotli, true, NULL);
    assert_int_not_equal(lcm, q11);
    size_t font = run(BR_T "    quality: 11\n    encoder_mode: FONT\n", t, n, 1, unbrotli, true, NULL);
    size_t text = run(BR_T "    quality: 11\n    encoder_mode: TEXT\n", t, n, 1, unbrotli, true, NULL);
    size_t generic = run(BR_T "    quality: 11\n    encoder_mode: GENERIC\n", t, n, 1, unbrotli, true, NULL);
    assert_int_equal(generic, q11); /* DEFAULT is GENERIC */
    assert_true(font != q11 || text != q11);
    free(t);
}

static void test_zstd_parameters(void **state)
{
    (void)state;
    size_t n = 300000;
    char *t = make_text(n);
    size_t def = run(ZSTD_T, t, n, 1, unzstd, false, NULL);
    size_t l1 = run(ZSTD_T "    compression_level: 1\n", t, n, 1, unzstd, false, NULL);
    size_t l19 = run(ZSTD_T "    compression_level: 19\n", t, n, 1, unzstd, false, NULL);
    size_t l0 = run(ZSTD_T "    compression_level: 0\n", t, n, 1, unzstd, false, NULL);
    assert_true(l19 < def && def < l1);
    assert_int_equal(l0, def); /* 0 is the default level, 3 */
    /* the checksum adds 4 bytes at the end of the frame */
    size_t ck = run(ZSTD_T "    enable_checksum: true\n", t, n, 1, unzstd, false, NULL);
    assert_int_equal(ck, def + 4);
    size_t fast = run(ZSTD_T "    strategy: FAST\n", t, n, 1, unzstd, false, NULL);
    size_t btultra2 = run(ZSTD_T "    strategy: BTULTRA2\n", t, n, 1, unzstd, false, NULL);
    assert_true(btultra2 < fast);
    free(t);
}

static void test_library_types(void **state)
{
    (void)state;
    sharp_compressor_lib_t lib;
    char err[256];
    assert_int_equal(lib_from_yaml(&lib, GZIP_T, err, sizeof err), 0);
    assert_string_equal(lib.encoding, "gzip");
    assert_string_equal(lib.stats_prefix, "gzip");
    sharp_compressor_lib_free(&lib);
    assert_int_equal(lib_from_yaml(&lib, BR_T, err, sizeof err), 0);
    assert_string_equal(lib.encoding, "br");
    assert_string_equal(lib.stats_prefix, "brotli");
    sharp_compressor_lib_free(&lib);
    assert_int_equal(lib_from_yaml(&lib, ZSTD_T, err, sizeof err), 0);
    assert_string_equal(lib.encoding, "zstd");
    sharp_compressor_lib_free(&lib);
    /* any other message in compressor_library */
    assert_int_equal(lib_from_yaml(&lib,
                                   "    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n",
                                   err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "unsupported compressor library"));
    sharp_compressor_lib_free(&lib);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_compressor),   cmocka_unit_test(test_several_compressors),
        cmocka_unit_test(test_envoy_map_quirks),    cmocka_unit_test(test_header_helpers),
        cmocka_unit_test(test_round_trips_and_flushes), cmocka_unit_test(test_chunk_size),
        cmocka_unit_test(test_gzip_parameters),     cmocka_unit_test(test_brotli_parameters),
        cmocka_unit_test(test_zstd_parameters),     cmocka_unit_test(test_library_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
