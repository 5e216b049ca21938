/* codec.c: see codec.h. The loops follow Envoy's compressor libraries
 * (zlib_compressor_impl.cc, brotli_compressor_impl.cc,
 * zstd_compressor_impl.cc): the input is taken in, every full output chunk
 * is handed on, and the call ends with the library's flush (or finish)
 * whose output goes out with the last, partial chunk. */
#include "filters/compressor/codec.h"
#include "common.h"
#include "config/mapper.h"

#include "envoy/extensions/compression/brotli/compressor/v3/brotli.pb-c.h"
#include "envoy/extensions/compression/gzip/compressor/v3/gzip.pb-c.h"
#include "envoy/extensions/compression/zstd/compressor/v3/zstd.pb-c.h"

#include <brotli/encode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

struct sharp_compressor {
    const sharp_compressor_lib_t *lib;
    bool finished;
    char *chunk; /* lib->chunk_size bytes of output space */
    union {
        z_stream z;
        BrotliEncoderState *br;
        ZSTD_CCtx *zs;
    } u;
    size_t out_pos; /* zstd and brotli: bytes of chunk already filled */
};

/* ---- gzip (zlib) ---- */

/* Runs deflate with `flush` until it needs more input: every full chunk is
 * emitted; a partial one only at a flush, as Envoy's process() does. */
static int gz_run(sharp_compressor_t *c, int flush, sharp_compressor_emit_fn emit, void *arg)
{
    z_stream *z = &c->u.z;
    uint32_t cs = c->lib->chunk_size;
    for (;;) {
        int r = deflate(z, flush);
        if (r == Z_STREAM_ERROR) return -1;
        if (z->avail_out == 0) {
            emit(arg, c->chunk, cs);
            z->next_out = (Bytef *)c->chunk;
            z->avail_out = cs;
            continue; /* there may be more output waiting */
        }
        break; /* room left: deflate took all the input and did the flush */
    }
    if (flush != Z_NO_FLUSH && z->avail_out < cs) {
        emit(arg, c->chunk, cs - z->avail_out);
        z->next_out = (Bytef *)c->chunk;
        z->avail_out = cs;
    }
    return 0;
}

static int gz_compress(sharp_compressor_t *c, const char *p, size_t n, bool finish, sharp_compressor_emit_fn emit,
                       void *arg)
{
    z_stream *z = &c->u.z;
    while (n) {
        /* avail_in is 32 bits wide */
        uInt take = n > (1u << 30) ? (1u << 30) : (uInt)n;
        z->next_in = (Bytef *)(uintptr_t)p;
        z->avail_in = take;
        if (gz_run(c, Z_NO_FLUSH, emit, arg) < 0) return -1;
        p += take;
        n -= take;
    }
    z->next_in = NULL;
    z->avail_in = 0;
    return gz_run(c, finish ? Z_FINISH : Z_SYNC_FLUSH, emit, arg);
}

/* ---- brotli ---- */

static void br_drain(sharp_compressor_t *c, size_t avail_out, bool partial, sharp_compressor_emit_fn emit, void *arg)
{
    uint32_t cs = c->lib->chunk_size;
    c->out_pos = cs - avail_out;
    if (c->out_pos == cs || (partial && c->out_pos)) {
        emit(arg, c->chunk, c->out_pos);
        c->out_pos = 0;
    }
}

static int br_op(sharp_compressor_t *c, BrotliEncoderOperation op, size_t *avail_in, const uint8_t **next_in,
                 sharp_compressor_emit_fn emit, void *arg)
{
    uint32_t cs = c->lib->chunk_size;
    size_t avail_out = cs - c->out_pos;
    uint8_t *next_out = (uint8_t *)c->chunk + c->out_pos;
    if (!BrotliEncoderCompressStream(c->u.br, op, avail_in, next_in, &avail_out, &next_out, NULL)) return -1;
    br_drain(c, avail_out, false, emit, arg);
    return 0;
}

static int br_compress(sharp_compressor_t *c, const char *p, size_t n, bool finish, sharp_compressor_emit_fn emit,
                       void *arg)
{
    size_t avail_in = n;
    const uint8_t *next_in = (const uint8_t *)p;
    while (avail_in > 0)
        if (br_op(c, BROTLI_OPERATION_PROCESS, &avail_in, &next_in, emit, arg) < 0) return -1;
    /* the encoder may hold more than the chunk has room for, and a finish
     * adds the last meta-block: go on until it has nothing left */
    BrotliEncoderOperation op = finish ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_FLUSH;
    do {
        if (br_op(c, op, &avail_in, &next_in, emit, arg) < 0) return -1;
    } while (BrotliEncoderHasMoreOutput(c->u.br) || (finish && !BrotliEncoderIsFinished(c->u.br)));
    br_drain(c, c->lib->chunk_size - c->out_pos, true, emit, arg);
    return 0;
}

/* ---- zstd ---- */

static int zs_run(sharp_compressor_t *c, ZSTD_inBuffer *in, ZSTD_EndDirective mode, sharp_compressor_emit_fn emit,
                  void *arg)
{
    uint32_t cs = c->lib->chunk_size;
    for (;;) {
        ZSTD_outBuffer out = {c->chunk, cs, 0};
        size_t remaining = ZSTD_compressStream2(c->u.zs, &out, in, mode);
        if (ZSTD_isError(remaining)) return -1;
        if (out.pos) emit(arg, c->chunk, out.pos);
        if (mode == ZSTD_e_end ? remaining == 0 : in->pos == in->size) return 0;
    }
}

static int zs_compress(sharp_compressor_t *c, const char *p, size_t n, bool finish, sharp_compressor_emit_fn emit,
                       void *arg)
{
    ZSTD_inBuffer in = {p, n, 0};
    if (n && zs_run(c, &in, ZSTD_e_continue, emit, arg) < 0) return -1;
    if (finish) {
        ZSTD_inBuffer none = {NULL, 0, 0};
        return zs_run(c, &none, ZSTD_e_end, emit, arg);
    }
    return 0;
}

/* ---- config ---- */

typedef Envoy__Extensions__Compression__Gzip__Compressor__V3__Gzip gzip_pb_t;
typedef Envoy__Extensions__Compression__Brotli__Compressor__V3__Brotli brotli_pb_t;
typedef Envoy__Extensions__Compression__Zstd__Compressor__V3__Zstd zstd_pb_t;

/* Shared with the decompressor libraries (decodec.c): the library's
 * typed_config unpacked as the one of `descs` its type names. */
ProtobufCMessage *sharp_codec_library_unpack(const Envoy__Config__Core__V3__TypedExtensionConfig *tec,
                                             const char *field, const char *kind, const ProtobufCMessageDescriptor *const *descs,
                                             size_t ndescs, const char *supported, size_t *which, char *err,
                                             size_t errlen)
{
    if (!tec || !tec->typed_config || !tec->typed_config->type_url) {
        snprintf(err, errlen, "%s: a typed_config is required", field);
        return NULL;
    }
    const char *url = tec->typed_config->type_url;
    const char *slash = strrchr(url, '/');
    const char *type = slash ? slash + 1 : url;
    size_t i = 0;
    while (i < ndescs && strcmp(type, descs[i]->name) != 0) i++;
    if (i == ndescs) {
        snprintf(err, errlen, "%s: unsupported %s library '%s' (%s)", field, kind, type, supported);
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&tec->typed_config->base, descs[i], &e);
    if (!m) {
        snprintf(err, errlen, "%s.typed_config: %s", field, e.msg);
        return NULL;
    }
    *which = i;
    return m;
}

/* The library's parameters, with Envoy's defaults. Ranges were checked by
 * the support table (Envoy's validation rules). */
int sharp_compressor_lib_init(sharp_compressor_lib_t *lib, const Envoy__Config__Core__V3__TypedExtensionConfig *tec,
                              char *err, size_t errlen)
{
    static const ProtobufCMessageDescriptor *const descs[] = {
        &envoy__extensions__compression__gzip__compressor__v3__gzip__descriptor,
        &envoy__extensions__compression__brotli__compressor__v3__brotli__descriptor,
        &envoy__extensions__compression__zstd__compressor__v3__zstd__descriptor,
    };
    size_t which;
    ProtobufCMessage *m = sharp_codec_library_unpack(tec, "compressor_library", "compressor", descs, 3,
                                                     "gzip, brotli and zstd compressors are", &which, err, errlen);
    if (!m) return -1;
    const ProtobufCMessageDescriptor *desc = descs[which];
    if (desc == &envoy__extensions__compression__gzip__compressor__v3__gzip__descriptor) {
        const gzip_pb_t *g = (const gzip_pb_t *)m;
        lib->kind = SHARP_COMPRESSOR_GZIP;
        lib->encoding = sharp_strdup("gzip");
        lib->stats_prefix = "gzip";
        lib->chunk_size = g->chunk_size ? g->chunk_size->value : 4096;
        /* DEFAULT_COMPRESSION is zlib's default level; the others are
         * zlib's levels by number, as are the strategies */
        lib->u.gzip.level = g->compression_level ? (int)g->compression_level : Z_DEFAULT_COMPRESSION;
        lib->u.gzip.strategy = (int)g->compression_strategy;
        lib->u.gzip.window_bits = g->window_bits ? (int)g->window_bits->value : 12;
        lib->u.gzip.memory_level = g->memory_level ? (int)g->memory_level->value : 5;
    } else if (desc == &envoy__extensions__compression__brotli__compressor__v3__brotli__descriptor) {
        const brotli_pb_t *b = (const brotli_pb_t *)m;
        lib->kind = SHARP_COMPRESSOR_BROTLI;
        lib->encoding = sharp_strdup("br");
        lib->stats_prefix = "brotli";
        lib->chunk_size = b->chunk_size ? b->chunk_size->value : 4096;
        lib->u.brotli.quality = b->quality ? b->quality->value : 3;
        lib->u.brotli.window_bits = b->window_bits ? b->window_bits->value : 18;
        lib->u.brotli.input_block_bits = b->input_block_bits ? b->input_block_bits->value : 24;
        lib->u.brotli.disable_literal_context_modeling = b->disable_literal_context_modeling;
        switch (b->encoder_mode) {
        case ENVOY__EXTENSIONS__COMPRESSION__BROTLI__COMPRESSOR__V3__BROTLI__ENCODER_MODE__GENERIC:
            lib->u.brotli.mode = BROTLI_MODE_GENERIC;
            break;
        case ENVOY__EXTENSIONS__COMPRESSION__BROTLI__COMPRESSOR__V3__BROTLI__ENCODER_MODE__TEXT:
            lib->u.brotli.mode = BROTLI_MODE_TEXT;
            break;
        case ENVOY__EXTENSIONS__COMPRESSION__BROTLI__COMPRESSOR__V3__BROTLI__ENCODER_MODE__FONT:
            lib->u.brotli.mode = BROTLI_MODE_FONT;
            break;
        default: lib->u.brotli.mode = BROTLI_DEFAULT_MODE; break;
        }
    } else {
        const zstd_pb_t *z = (const zstd_pb_t *)m;
        lib->kind = SHARP_COMPRESSOR_ZSTD;
        lib->encoding = sharp_strdup("zstd");
        lib->stats_prefix = "zstd";
        lib->chunk_size = z->chunk_size ? z->chunk_size->value : (uint32_t)ZSTD_CStreamOutSize();
        /* 0 is zstd's default level, as in Envoy */
        lib->u.zstd.level = z->compression_level ? (int)z->compression_level->value : ZSTD_CLEVEL_DEFAULT;
        lib->u.zstd.checksum = z->enable_checksum;
        lib->u.zstd.strategy = (int)z->strategy;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    /* a compressor made now proves the library takes the parameters */
    sharp_compressor_t *probe = sharp_compressor_new(lib);
    if (!probe) {
        snprintf(err, errlen, "compressor_library: the %s library refused its parameters", lib->stats_prefix);
        return -1;
    }
    sharp_compressor_free(probe);
    return 0;
}

void sharp_compressor_lib_free(sharp_compressor_lib_t *lib)
{
    free((char *)lib->encoding);
    lib->encoding = NULL;
}

/* ---- common ---- */

sharp_compressor_t *sharp_compressor_new(const sharp_compressor_lib_t *lib)
{
    sharp_compressor_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->lib = lib;
    c->chunk = malloc(lib->chunk_size);
    if (!c->chunk) {
        free(c);
        return NULL;
    }
    bool ok = false;
    switch (lib->kind) {
    case SHARP_COMPRESSOR_GZIP:
        /* window bits plus 16: a gzip header and trailer around the data */
        ok = deflateInit2(&c->u.z, lib->u.gzip.level, Z_DEFLATED, lib->u.gzip.window_bits | 16,
                          lib->u.gzip.memory_level, lib->u.gzip.strategy) == Z_OK;
        if (ok) {
            c->u.z.next_out = (Bytef *)c->chunk;
            c->u.z.avail_out = lib->chunk_size;
        }
        break;
    case SHARP_COMPRESSOR_BROTLI:
        c->u.br = BrotliEncoderCreateInstance(NULL, NULL, NULL);
        ok = c->u.br && BrotliEncoderSetParameter(c->u.br, BROTLI_PARAM_QUALITY, lib->u.brotli.quality) &&
             BrotliEncoderSetParameter(c->u.br, BROTLI_PARAM_LGWIN, lib->u.brotli.window_bits) &&
             BrotliEncoderSetParameter(c->u.br, BROTLI_PARAM_LGBLOCK, lib->u.brotli.input_block_bits) &&
             BrotliEncoderSetParameter(c->u.br, BROTLI_PARAM_DISABLE_LITERAL_CONTEXT_MODELING,
                                       lib->u.brotli.disable_literal_context_modeling) &&
             BrotliEncoderSetParameter(c->u.br, BROTLI_PARAM_MODE, lib->u.brotli.mode);
        break;
    case SHARP_COMPRESSOR_ZSTD:
        c->u.zs = ZSTD_createCCtx();
        ok = c->u.zs && !ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zs, ZSTD_c_checksumFlag, lib->u.zstd.checksum)) &&
             !ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zs, ZSTD_c_strategy, lib->u.zstd.strategy)) &&
             !ZSTD_isError(ZSTD_CCtx_setParameter(c->u.zs, ZSTD_c_compressionLevel, lib->u.zstd.level));
        break;
    }
    if (!ok) {
        sharp_compressor_free(c);
        return NULL;
    }
    return c;
}

int sharp_compressor_compress(sharp_compressor_t *c, const char *p, size_t n, bool finish,
                              sharp_compressor_emit_fn emit, void *arg)
{
    if (c->finished) return n || !finish ? -1 : 0;
    int r = -1;
    switch (c->lib->kind) {
    case SHARP_COMPRESSOR_GZIP: r = gz_compress(c, p, n, finish, emit, arg); break;
    case SHARP_COMPRESSOR_BROTLI: r = br_compress(c, p, n, finish, emit, arg); break;
    case SHARP_COMPRESSOR_ZSTD: r = zs_compress(c, p, n, finish, emit, arg); break;
    }
    if (finish || r < 0) c->finished = true;
    return r;
}

void sharp_compressor_free(sharp_compressor_t *c)
{
    if (!c) return;
    switch (c->lib->kind) {
    case SHARP_COMPRESSOR_GZIP:
        if (c->u.z.state) deflateEnd(&c->u.z);
        break;
    case SHARP_COMPRESSOR_BROTLI:
        if (c->u.br) BrotliEncoderDestroyInstance(c->u.br);
        break;
    case SHARP_COMPRESSOR_ZSTD:
        if (c->u.zs) ZSTD_freeCCtx(c->u.zs);
        break;
    }
    free(c->chunk);
    free(c);
}
