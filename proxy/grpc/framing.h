/* framing.h: gRPC's length-prefixed messages (gRPC over HTTP/2,
 * "Length-Prefixed-Message"): a compressed flag byte, a 4-byte big-endian
 * length, then the message. Pure functions, unit-tested on their own. */
#ifndef SHARP_GRPC_FRAMING_H
#define SHARP_GRPC_FRAMING_H

#include "sbuf.h"

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#define SHARP_GRPC_PREFIX_LEN 5

typedef enum {
    SHARP_GRPC_FRAME_OK,         /* one whole message at the start of the input */
    SHARP_GRPC_FRAME_NEED_MORE,  /* the input ends inside the prefix or the message */
    SHARP_GRPC_FRAME_TOO_LARGE,  /* the prefix announces more than the maximum */
    SHARP_GRPC_FRAME_BAD_FLAG,   /* a flag byte other than 0 or 1 */
} sharp_grpc_frame_result_t;

typedef struct {
    bool compressed;     /* the flag byte was 1 */
    uint32_t len;        /* the message's length, as announced */
    const uint8_t *msg;  /* the message's bytes (OK only) */
    size_t used;         /* prefix + message (OK only) */
} sharp_grpc_frame_t;

/* Reads the message at the start of p[0, n). The size check needs only the
 * prefix, so an oversized message is refused before its body is buffered:
 * TOO_LARGE is returned as soon as the 5 prefix bytes are there. */
sharp_grpc_frame_result_t sharp_grpc_deframe(const uint8_t *p, size_t n, uint32_t max_len,
                                             sharp_grpc_frame_t *out);

/* Appends an uncompressed length-prefixed message holding `m` packed. */
void sharp_grpc_frame_message(sharp_sbuf_t *out, const ProtobufCMessage *m);

#endif
