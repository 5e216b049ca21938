/* stream_info.c: see stream_info.h. */
#include "http/stream_info.h"

/* Short codes in Envoy's order, which is also the bit order. */
/* clang-format off */
static const char *const flag_codes[] = {
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
    "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
};
/* clang-format on */

size_t sharp_response_flags_str(uint32_t flags, char *out, size_t cap)
{
    if (!cap) return 0;
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(flag_codes); i++) {
        if (!(flags & (1u << i))) continue;
        const char *code = flag_codes[i];
        size_t need = strlen(code) + (len ? 1 : 0);
        if (len + need >= cap) break;
        if (len) out[len++] = ',';
        memcpy(out + len, code, strlen(code));
        len += strlen(code);
        out[len] = '\0';
    }
    if (!len && cap >= 2) {
        out[0] = '-';
        out[1] = '\0';
        len = 1;
    }
    return len;
}

uint32_t sharp_response_flag_from_str(const char *code)
{
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(flag_codes); i++)
        if (strcmp(flag_codes[i], code) == 0) return 1u << i;
    return 0;
}
