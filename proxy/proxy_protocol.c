/* proxy_protocol.c: the PROXY protocol header (proxy_protocol.h). */
#include "proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN 6

#define V2_CMD_LOCAL 0
#define V2_CMD_PROXY 1
#define V2_AF_INET 1
#define V2_AF_INET6 2
#define V2_STREAM 1
#define V2_DGRAM 2
#define V2_ADDR_LEN_INET 12
#define V2_ADDR_LEN_INET6 36

static size_t min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Envoy's isUnicastAddress: neither the any address, nor multicast, nor
 * (IPv4) the broadcast address. */
static bool unicast(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
        return a != 0 && a != 0xffffffffu && (a >> 28) != 0xe;
    }
    const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    return !IN6_IS_ADDR_UNSPECIFIED(a) && !IN6_IS_ADDR_MULTICAST(a);
}

/* A port as Envoy reads it from a v1 line: decimal, at most 65535. */
static bool parse_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) return false;
    *out = (uint16_t)v;
    return true;
}

static bool parse_addr(int family, const char *s, size_t n, const char *port, size_t plen,
                       struct sockaddr_storage *out)
{
    char ip[INET6_ADDRSTRLEN];
    uint16_t po;
    if (n == 0 || n >= sizeof ip || !parse_port(port, plen, &po)) return false;
    memcpy(ip, s, n);
    ip[n] = 0;
    memset(out, 0, sizeof *out);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        in->sin_port = htons(po);
        return inet_pton(AF_INET, ip, &in->sin_addr) == 1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(po);
    return inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1;
}

/* Envoy's parseV1Header: the line without trailing white space, split at
 * every single space (empty parts kept), is "PROXY" then UNKNOWN (and
 * anything), or TCP4/TCP6 with exactly four more parts. */
static bool parse_v1(const uint8_t *p, size_t len, sharp_pp_header_t *out)
{
    const char *s = (const char *)p;
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r' || s[len - 1] == '\n' ||
                   s[len - 1] == '\f' || s[len - 1] == '\v'))
        len--;
    const char *part[6];
    size_t plen[6], np = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || s[i] == ' ') {
            if (np < 6) {
                part[np] = s + start;
                plen[np] = i - start;
            }
            np++; /* UNKNOWN may have any number of parts */
            start = i + 1;
        }
    }
    if (np < 2 || plen[0] != 5 || memcmp(part[0], "PROXY", 5) != 0) return false;
    if (plen[1] == 7 && memcmp(part[1], "UNKNOWN", 7) == 0) {
        out->local = true;
        return true;
    }
    if (np != 6 || plen[1] != 4) return false;
    int family;
    if (memcmp(part[1], "TCP4", 4) == 0) family = AF_INET;
    else if (memcmp(part[1], "TCP6", 4) == 0) family = AF_INET6;
    else return false;
    return parse_addr(family, part[2], plen[2], part[4], plen[4], &out->src) &&
           parse_addr(family, part[3], plen[3], part[5], plen[5], &out->dst);
}

/* Envoy's parseTlvs: type, 16-bit length, value, to the block's end. */
static bool tlvs_valid(const uint8_t *p, size_t n)
{
    size_t at = 0;
    while (at < n) {
        if (n - at < 3) return false;
        size_t vlen = (size_t)p[at + 1] << 8 | p[at + 2];
        if (n - at - 3 < vlen) return false;
        at += 3 + vlen;
    }
    return true;
}

sharp_pp_result_t sharp_pp_parse(const uint8_t *p, size_t n, const sharp_pp_opts_t *o, sharp_pp_header_t *out)
{
    memset(out, 0, sizeof *out);
    /* nothing read yet (a timeout before the first byte): no buffer to
     * compare, and nothing to say */
    if (!n) return SHARP_PP_NEED_MORE;
    if (o->allow_without) {
        bool v2 = !o->deny_v2 && memcmp(p, v2_sig, min_sz(sizeof v2_sig, n)) == 0;
        bool v1 = !o->deny_v1 && memcmp(p, v1_sig, min_sz(V1_SIG_LEN, n)) == 0;
        if (!v1 && !v2) return SHARP_PP_DONE; /* version 0: not found, allowed */
    }
    if (n >= SHARP_PP_V2_HEADER_LEN) {
        if (memcmp(p, v2_sig, sizeof v2_sig) == 0) out->version = 2;
        else if (memcmp(p, v1_sig, V1_SIG_LEN) != 0) return SHARP_PP_ERROR; /* neither: not found */
    }
    if (out->version == 2) {
        if (o->deny_v2) return SHARP_PP_DENIED;
        uint8_t ver_cmd = p[12], fam = p[13];
        if (ver_cmd >> 4 != 2) return SHARP_PP_ERROR;
        size_t addr_len = 0;
        if ((ver_cmd & 0xf) != V2_CMD_LOCAL) {
            if (fam >> 4 == V2_AF_INET) addr_len = V2_ADDR_LEN_INET;
            else if (fam >> 4 == V2_AF_INET6) addr_len = V2_ADDR_LEN_INET6;
            else return SHARP_PP_ERROR; /* UNSPEC, AF_UNIX */
        }
        size_t hdr_addr_len = (size_t)p[14] << 8 | p[15];
        if (hdr_addr_len < addr_len) return SHARP_PP_ERROR;
        if (n < SHARP_PP_V2_HEADER_LEN + addr_len) return SHARP_PP_NEED_MORE;
        if ((ver_cmd & 0xf) == V2_CMD_LOCAL) {
            out->local = true;
        } else {
            /* Envoy's parseV2Header: PROXY over STREAM or DGRAM only */
            if ((ver_cmd & 0xf) != V2_CMD_PROXY || ((fam & 0xf) != V2_STREAM && (fam & 0xf) != V2_DGRAM))
                return SHARP_PP_ERROR;
            const uint8_t *a = p + SHARP_PP_V2_HEADER_LEN;
            if (fam >> 4 == V2_AF_INET) {
                struct sockaddr_in *s = (struct sockaddr_in *)&out->src, *d = (struct sockaddr_in *)&out->dst;
                s->sin_family = d->sin_family = AF_INET;
                memcpy(&s->sin_addr, a, 4);
                memcpy(&d->sin_addr, a + 4, 4);
                memcpy(&s->sin_port, a + 8, 2);
                memcpy(&d->sin_port, a + 10, 2);
            } else {
                struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src, *d = (struct sockaddr_in6 *)&out->dst;
                s->sin6_family = d->sin6_family = AF_INET6;
                memcpy(&s->sin6_addr, a, 16);
                memcpy(&d->sin6_addr, a + 16, 16);
                memcpy(&s->sin6_port, a + 32, 2);
                memcpy(&d->sin6_port, a + 34, 2);
            }
        }
        out->len = SHARP_PP_V2_HEADER_LEN + hdr_addr_len;
        if (n < out->len) return SHARP_PP_NEED_MORE; /* the TLVs are still coming */
        if (!out->local) {
            out->tlvs = p + SHARP_PP_V2_HEADER_LEN + addr_len;
            out->tlvs_len = hdr_addr_len - addr_len;
            if (!tlvs_valid(out->tlvs, out->tlvs_len)) return SHARP_PP_ERROR;
            if (!unicast(&out->src) || !unicast(&out->dst)) return SHARP_PP_ERROR;
        }
        return SHARP_PP_DONE;
    }
    /* v1 (or not yet known): the line's end, looked for from index 1; a
     * "\r\n" at the very start may still be the v2 signature */
    size_t end = 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i] == '\n' && p[i - 1] == '\r') {
            if (i > 1) end = i + 1;
            break;
        }
    }
    if (!end) return n > SHARP_PP_V1_MAX ? SHARP_PP_ERROR : SHARP_PP_NEED_MORE;
    out->version = 1;
    if (end > SHARP_PP_V1_MAX) return SHARP_PP_ERROR;
    if (o->deny_v1) return SHARP_PP_DENIED;
    if (!parse_v1(p, end, out)) return SHARP_PP_ERROR;
    out->len = end;
    if (!out->local && (!unicast(&out->src) || !unicast(&out->dst))) return SHARP_PP_ERROR;
    return SHARP_PP_DONE;
}

bool sharp_pp_tlv_next(const sharp_pp_header_t *h, size_t *at, sharp_pp_tlv_t *out)
{
    if (!h->tlvs || *at + 3 > h->tlvs_len) return false;
    const uint8_t *t = h->tlvs + *at;
    out->type = t[0];
    out->len = (size_t)t[1] << 8 | t[2];
    out->value = t + 3;
    *at += 3 + out->len;
    return true;
}
