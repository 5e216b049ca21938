/* decodec.c: see decodec.h. The loops follow Envoy's decompressor
 * libraries (zlib_decompressor_impl.cc, brotli_decompressor_impl.cc):
 * the input is taken in, every full output chunk is handed on and counted
 * against the call's bound, and the call ends with the last, partial
 * chunk. */
#include "filters/compressor/decodec.h"
#include "common.h"

#include "envoy/extensions/compression/brotli/decompressor/v3/brotli.pb-c.h"
#include "envoy/extensions/compression/gzip/decompressor/v3/gzip.pb-c.h"

#include <brotli/decode.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct sharp_decompressor {
    const sharp_decompressor_lib_t *lib;
    bool done;     /* failed, or past the ratio: nothing more comes out */
    bool finished; /* the compressed stream ended */
    bool more;     /* stopped at max_out: output may come without more input */
    char *chunk;   /* lib->chunk_size bytes of output space */
    union {
        z_stream z;
        BrotliDecoderState *br;
    } u;
};

typedef Envoy__Extensions__Compression__Gzip__Decompressor__V3__Gzip gzip_pb_t;
typedef Envoy__Extensions__Compression__Brotli__Decompressor__V3__Brotli brotli_pb_t;

int sharp_decompressor_lib_init(sharp_decompressor_lib_t *lib,
                                const Envoy__Config__Core__V3__TypedExtensionConfig *tec, char *err,
                                size_t errlen)
{
    static const ProtobufCMessageDescriptor *const descs[] = {
        &envoy__extensions__compression__gzip__decompressor__v3__gzip__descriptor,
        &envoy__extensions__compression__brotli__decompressor__v3__brotli__descriptor,
    };
    size_t which;
    ProtobufCMessage *m =
        sharp_codec_library_unpack(tec, "decompressor_library", "decompressor", descs, 2,
                                   "gzip and brotli decompressors are", &which, err, errlen);
    if (!m) return -1;
    memset(lib, 0, sizeof *lib);
    if (which == 0) {
        /* Envoy's GzipDecompressorFactory defaults */
        const gzip_pb_t *g = (const gzip_pb_t *)m;
        lib->kind = SHARP_DECOMPRESSOR_GZIP;
        lib->encoding = "gzip";
        lib->stats_prefix = "gzip";
        lib->window_bits = g->window_bits ? g->window_bits->value : 15;
        lib->chunk_size = g->chunk_size ? g->chunk_size->value : 4096;
        lib->max_inflate_ratio = g->max_inflate_ratio ? g->max_inflate_ratio->value : 100;
    } else {
        const brotli_pb_t *b = (const brotli_pb_t *)m;
        lib->kind = SHARP_DECOMPRESSOR_BROTLI;
        lib->encoding = "br";
        lib->stats_prefix = "brotli";
        lib->chunk_size = b->chunk_size ? b->chunk_size->value : 4096;
        lib->max_inflate_ratio = 100; /* Envoy's fixed MaxInflateRatio */
        lib->disable_ring_buffer_reallocation = b->disable_ring_buffer_reallocation;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

sharp_decompressor_t *sharp_decompressor_new(const sharp_decompressor_lib_t *lib)
{
    sharp_decompressor_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->lib = lib;
    d->chunk = malloc(lib->chunk_size);
    bool ok = d->chunk != NULL;
    if (ok && lib->kind == SHARP_DECOMPRESSOR_GZIP) {
        /* window bits plus 16: gzip framing only, as Envoy's GzipHeaderValue */
        ok = inflateInit2(&d->u.z, (int)lib->window_bits | 16) == Z_OK;
        if (ok) {
            d->u.z.next_out = (Bytef *)d->chunk;
            d->u.z.avail_out = lib->chunk_size;
        }
    } else if (ok) {
        d->u.br = BrotliDecoderCreateInstance(NULL, NULL, NULL);
        ok = d->u.br && BrotliDecoderSetParameter(
                            d->u.br, BROTLI_DECODER_PARAM_DISABLE_RING_BUFFER_REALLOCATION,
                            lib->disable_ring_buffer_reallocation);
    }
    if (!ok) {
        sharp_decompressor_free(d);
        return NULL;
    }
    return d;
}

/* ---- gzip (zlib) ---- */

/* Both loops take input from p until it is used up (*used tells how much
 * went in), the stream ends, the output passes `limit` (the ratio) or, at
 * a chunk's end, reaches max_out: then d->more says output may still come
 * from what went in. */
static sharp_decompress_result_t gz_decompress(sharp_decompressor_t *d, const char *p, size_t n, size_t *used,
                                               uint64_t max_out, uint64_t limit, uint64_t *out_total,
                                               sharp_compressor_emit_fn emit, void *arg, int *zerr)
{
    z_stream *z = &d->u.z;
    uint32_t cs = d->lib->chunk_size;
    uint64_t out = 0;
    sharp_decompress_result_t res = SHARP_DECOMPRESS_OK;
    bool stop = false;
    do {
        /* avail_in is 32 bits wide */
        uInt take = n > (1u << 30) ? (1u << 30) : (uInt)n;
        z->next_in = (Bytef *)(uintptr_t)p;
        z->avail_in = take;
        for (;;) {
            int r = inflate(z, Z_NO_FLUSH);
            if (r == Z_STREAM_END) {
                d->finished = true;
                break;
            }
            if (r == Z_BUF_ERROR && z->avail_in == 0) break; /* needs more input */
            if (r < 0 || r == Z_NEED_DICT) {
                /* Z_NEED_DICT cannot come with gzip framing; it would
                 * stall, so it ends the stream as a data error */
                *zerr = r == Z_NEED_DICT ? Z_DATA_ERROR : r;
                res = SHARP_DECOMPRESS_ERROR;
                break;
            }
            if (z->avail_out == 0) {
                emit(arg, d->chunk, cs);
                out += cs;
                z->next_out = (Bytef *)d->chunk;
                z->avail_out = cs;
                if (out > limit) {
                    res = SHARP_DECOMPRESS_RATIO;
                    break;
                }
                if (out >= max_out) {
                    stop = true;
                    break;
                }
            }
        }
        size_t took = take - z->avail_in;
        p += took;
        n -= took;
        *used += took;
    } while (n && res == SHARP_DECOMPRESS_OK && !d->finished && !stop);
    d->more = stop && !d->finished;
    z->next_in = NULL;
    z->avail_in = 0;
    /* what the last chunk holds goes out with this call (not past a bomb) */
    if (res != SHARP_DECOMPRESS_RATIO && z->avail_out < cs) {
        emit(arg, d->chunk, cs - z->avail_out);
        out += cs - z->avail_out;
    }
    z->next_out = (Bytef *)d->chunk;
    z->avail_out = cs;
    if (d->finished && z->state) inflateEnd(z); /* the window goes with the stream's end */
    *out_total = out;
    return res;
}

/* ---- brotli ---- */

static sharp_decompress_result_t br_decompress(sharp_decompressor_t *d, const char *p, size_t n, size_t *used,
                                               uint64_t max_out, uint64_t limit, uint64_t *out_total,
                                               sharp_compressor_emit_fn emit, void *arg)
{
    uint32_t cs = d->lib->chunk_size;
    size_t avail_in = n;
    const uint8_t *next_in = (const uint8_t *)p;
    uint64_t out = 0;
    sharp_decompress_result_t res = SHARP_DECOMPRESS_OK;
    d->more = false;
    for (;;) {
        size_t avail_out = cs;
        uint8_t *next_out = (uint8_t *)d->chunk;
        BrotliDecoderResult r = BrotliDecoderDecompressStream(d->u.br, &avail_in, &next_in,
                                                              &avail_out, &next_out, NULL);
        if (r == BROTLI_DECODER_RESULT_ERROR) {
            res = SHARP_DECOMPRESS_ERROR;
            break;
        }
        size_t got = cs - avail_out;
        if (got) {
            emit(arg, d->chunk, got);
            out += got;
            if (out > limit) {
                res = SHARP_DECOMPRESS_RATIO;
                break;
            }
        }
        if (r == BROTLI_DECODER_RESULT_SUCCESS) {
            d->finished = true;
            break;
        }
        if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) break;
        /* NEEDS_MORE_OUTPUT: the next chunk, unless this call has given enough */
        if (out >= max_out) {
            d->more = true;
            break;
        }
    }
    *used += n - avail_in;
    *out_total = out;
    return res;
}

sharp_decompress_result_t sharp_decompressor_decompress_some(sharp_decompressor_t *d, const char *p, size_t n,
                                                             size_t *used, uint64_t max_out, uint64_t *allowance,
                                                             sharp_compressor_emit_fn emit, void *arg, int *zerr)
{
    *zerr = 0;
    *used = 0;
    if (d->done || d->finished) {
        *used = n; /* dropped */
        d->more = false;
        return SHARP_DECOMPRESS_OK;
    }
    if (!n && !d->more) return SHARP_DECOMPRESS_OK;
    uint64_t out = 0;
    sharp_decompress_result_t r =
        d->lib->kind == SHARP_DECOMPRESSOR_GZIP
            ? gz_decompress(d, p, n, used, max_out, *allowance, &out, emit, arg, zerr)
            : br_decompress(d, p, n, used, max_out, *allowance, &out, emit, arg);
    *allowance = out >= *allowance ? 0 : *allowance - out;
    if (r != SHARP_DECOMPRESS_OK) {
        d->done = true;
        d->more = false;
        *used = n;
    }
    return r;
}

sharp_decompress_result_t sharp_decompressor_decompress(sharp_decompressor_t *d, const char *p,
                                                        size_t n, sharp_compressor_emit_fn emit,
                                                        void *arg, int *zerr)
{
    *zerr = 0;
    if (d->done || d->finished || !n) return SHARP_DECOMPRESS_OK;
    uint64_t allowance = (uint64_t)d->lib->max_inflate_ratio * n;
    size_t used;
    return sharp_decompressor_decompress_some(d, p, n, &used, UINT64_MAX, &allowance, emit, arg, zerr);
}

bool sharp_decompressor_has_more(const sharp_decompressor_t *d)
{
    return d->more;
}

bool sharp_decompressor_finished(const sharp_decompressor_t *d)
{
    return d->finished;
}

void sharp_decompressor_free(sharp_decompressor_t *d)
{
    if (!d) return;
    if (d->lib->kind == SHARP_DECOMPRESSOR_GZIP) {
        if (d->u.z.state) inflateEnd(&d->u.z);
    } else if (d->u.br) {
        BrotliDecoderDestroyInstance(d->u.br);
    }
    free(d->chunk);
    free(d);
}
