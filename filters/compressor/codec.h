/* codec.h: the compressor libraries of envoy.filters.http.compressor
 * (Envoy's envoy.compression.{gzip,brotli,zstd}.compressor), as streaming
 * compressors: zlib (gzip framing), libbrotlienc and libzstd.
 *
 * A library config is immutable and shared by all workers; a compressor is
 * one stream's state. sharp_compressor_compress takes the next input and
 * hands the output to `emit` in pieces of at most the library's chunk_size
 * bytes (its output buffer), as Envoy's compressors fill their output
 * chunks. What each call flushes is Envoy's: gzip ends every call with
 * Z_SYNC_FLUSH (Z_FINISH at the end), brotli with BROTLI_OPERATION_FLUSH
 * (FINISH), zstd keeps what it has not yet emitted until the end
 * (ZSTD_e_continue, then ZSTD_e_end). */
#ifndef SHARP_FILTERS_COMPRESSOR_CODEC_H
#define SHARP_FILTERS_COMPRESSOR_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envoy/config/core/v3/extension.pb-c.h"

typedef enum {
    SHARP_COMPRESSOR_GZIP,
    SHARP_COMPRESSOR_BROTLI,
    SHARP_COMPRESSOR_ZSTD,
} sharp_compressor_kind_t;

typedef struct sharp_compressor_lib {
    sharp_compressor_kind_t kind;
    const char *encoding;     /* content-encoding: "gzip", "br", "zstd" */
    const char *stats_prefix; /* the library's stats segment: "gzip", "brotli", "zstd" */
    uint32_t chunk_size;      /* output buffer (4096..65536) */
    union {
        struct {
            int level;       /* zlib level, Z_DEFAULT_COMPRESSION for DEFAULT_COMPRESSION */
            int strategy;    /* zlib strategy */
            int window_bits; /* 9..15; gzip framing is added */
            int memory_level; /* 1..9 */
        } gzip;
        struct {
            uint32_t quality, window_bits, input_block_bits, mode;
            bool disable_literal_context_modeling;
        } brotli;
        struct {
            int level;
            bool checksum;
            int strategy; /* 0: the library's default */
        } zstd;
    } u;
} sharp_compressor_lib_t;

/* The library of a compressor_library (gzip, brotli or zstd typed_config),
 * with Envoy's defaults; ranges are the support table's (Envoy's
 * validation rules). Returns -1 with err filled for another type or
 * parameters the library refuses. */
int sharp_compressor_lib_init(sharp_compressor_lib_t *lib, const Envoy__Config__Core__V3__TypedExtensionConfig *tec,
                              char *err, size_t errlen);
void sharp_compressor_lib_free(sharp_compressor_lib_t *lib);

/* A compression library's typed_config (the compressor's
 * compressor_library, the decompressor's decompressor_library) unpacked
 * as the one of `descs` its type names (`kind`: "compressor" or
 * "decompressor", for errors): the message, to free with
 * protobuf_c_message_free_unpacked, and its index in *which. NULL with
 * "<field>...: why" in err for another type (`supported` lists the types
 * taken) or a bad message. */
ProtobufCMessage *sharp_codec_library_unpack(const Envoy__Config__Core__V3__TypedExtensionConfig *tec,
                                             const char *field, const char *kind, const ProtobufCMessageDescriptor *const *descs,
                                             size_t ndescs, const char *supported, size_t *which, char *err,
                                             size_t errlen);

typedef struct sharp_compressor sharp_compressor_t;

typedef void (*sharp_compressor_emit_fn)(void *arg, const char *p, size_t n);

/* A new stream compressor, or NULL when the library refuses the
 * parameters or memory runs out. */
sharp_compressor_t *sharp_compressor_new(const sharp_compressor_lib_t *lib);
/* Compresses n bytes (n may be 0); `finish` ends the compressed stream. Returns 0, or -1 on a library error
 * (the stream cannot go on). */
int sharp_compressor_compress(sharp_compressor_t *c, const char *p, size_t n, bool finish,
                              sharp_compressor_emit_fn emit, void *arg);
void sharp_compressor_free(sharp_compressor_t *c);

#endif
