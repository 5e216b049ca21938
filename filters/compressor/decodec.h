/* decodec.h: the decompressor libraries of envoy.filters.http.decompressor
 * (Envoy's envoy.compression.{gzip,brotli}.decompressor), as streaming
 * decompressors: zlib (gzip framing) and libbrotlidec.
 *
 * A library config is immutable and shared by all workers; a decompressor
 * is one stream's state. sharp_decompressor_decompress takes the next
 * input and hands the output to `emit` in pieces of at most the library's
 * chunk_size bytes, as Envoy's decompressors fill their output chunks.
 *
 * Decompression bombs: one call's output may not exceed max_inflate_ratio
 * times that call's input (Envoy's rule, checked each time a chunk fills:
 * gzip's max_inflate_ratio, 100 for brotli). Past it the call stops, the
 * rest of the input is dropped and the decompressor is done: later calls
 * give nothing. So one call never holds more than ratio x input plus one
 * chunk, whatever the input claims to expand to. A library error ends the
 * decompressor the same way. The end of the compressed stream ends it too
 * (bytes after it are dropped, as zlib and brotli leave them); a stream
 * that is cut short is not an error: what it held has been given. */
#ifndef SHARP_FILTERS_COMPRESSOR_DECODEC_H
#define SHARP_FILTERS_COMPRESSOR_DECODEC_H

#include "filters/compressor/codec.h"

typedef enum {
    SHARP_DECOMPRESSOR_GZIP,
    SHARP_DECOMPRESSOR_BROTLI,
} sharp_decompressor_kind_t;

typedef struct sharp_decompressor_lib {
    sharp_decompressor_kind_t kind;
    const char *encoding;     /* content-encoding: "gzip", "br" */
    const char *stats_prefix; /* the library's stats segment: "gzip", "brotli" */
    uint32_t chunk_size;      /* output buffer (4096..65536) */
    uint32_t max_inflate_ratio;
    uint32_t window_bits;                  /* gzip: 9..15; gzip framing is added */
    bool disable_ring_buffer_reallocation; /* brotli */
} sharp_decompressor_lib_t;

/* The library of a decompressor_library (gzip or brotli typed_config),
 * with Envoy's defaults. Returns -1 with err filled for another type. */
int sharp_decompressor_lib_init(sharp_decompressor_lib_t *lib,
                                const Envoy__Config__Core__V3__TypedExtensionConfig *tec, char *err,
                                size_t errlen);

typedef enum {
    SHARP_DECOMPRESS_OK,
    SHARP_DECOMPRESS_RATIO, /* the output went past max_inflate_ratio x the input */
    SHARP_DECOMPRESS_ERROR, /* the library failed: for gzip, zlib's code in *zerr */
} sharp_decompress_result_t;

typedef struct sharp_decompressor sharp_decompressor_t;

/* A new stream decompressor, or NULL when memory runs out. */
sharp_decompressor_t *sharp_decompressor_new(const sharp_decompressor_lib_t *lib);
/* Decompresses n bytes. After a result other than OK the decompressor is
 * done: later calls return OK and give nothing. */
sharp_decompress_result_t sharp_decompressor_decompress(sharp_decompressor_t *d, const char *p,
                                                        size_t n, sharp_compressor_emit_fn emit,
                                                        void *arg, int *zerr);
/* The same in bounded steps, for a caller that holds compressed input
 * while what it made cannot go on (Envoy has no such step: its output
 * piles up behind a stopped filter): takes input from the n bytes at p
 * until they are used up or, at a chunk's end, max_out bytes have come
 * out; *used tells how many went in (the rest is for a later call). The
 * ratio bound is the caller's: *allowance is how much output the input
 * given so far still allows (max_inflate_ratio x its bytes), less what
 * came out; past it the result is SHARP_DECOMPRESS_RATIO. After a stop at
 * max_out, sharp_decompressor_has_more tells that output may still come
 * from input already taken: the next call may pass no bytes. */
sharp_decompress_result_t sharp_decompressor_decompress_some(sharp_decompressor_t *d, const char *p, size_t n,
                                                             size_t *used, uint64_t max_out, uint64_t *allowance,
                                                             sharp_compressor_emit_fn emit, void *arg, int *zerr);
bool sharp_decompressor_has_more(const sharp_decompressor_t *d);
/* The end of the compressed stream was seen (bytes after it are dropped). */
bool sharp_decompressor_finished(const sharp_decompressor_t *d);
void sharp_decompressor_free(sharp_decompressor_t *d);

#endif
