/* framing.c: gRPC's length-prefixed messages (see framing.h). */
#include "grpc/framing.h"

sharp_grpc_frame_result_t sharp_grpc_deframe(const uint8_t *p, size_t n, uint32_t max_len,
                                             sharp_grpc_frame_t *out)
{
    memset(out, 0, sizeof *out);
    if (n < SHARP_GRPC_PREFIX_LEN) return SHARP_GRPC_FRAME_NEED_MORE;
    if (p[0] > 1) return SHARP_GRPC_FRAME_BAD_FLAG;
    out->compressed = p[0] == 1;
    out->len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (out->len > max_len) return SHARP_GRPC_FRAME_TOO_LARGE;
    if (n - SHARP_GRPC_PREFIX_LEN < out->len) return SHARP_GRPC_FRAME_NEED_MORE;
    out->msg = p + SHARP_GRPC_PREFIX_LEN;
    out->used = SHARP_GRPC_PREFIX_LEN + (size_t)out->len;
    return SHARP_GRPC_FRAME_OK;
}

void sharp_grpc_frame_message(sharp_sbuf_t *out, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t prefix[SHARP_GRPC_PREFIX_LEN] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                                             (uint8_t)(len >> 8), (uint8_t)len};
    sharp_sbuf_append(out, (const char *)prefix, sizeof prefix);
    if (!len) return;
    uint8_t *tmp = sharp_calloc(1, len);
    protobuf_c_message_pack(m, tmp);
    sharp_sbuf_append(out, (const char *)tmp, len);
    free(tmp);
}
