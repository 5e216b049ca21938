/* proxy_protocol.h: the PROXY protocol header a load balancer puts before a
 * connection's bytes (HAProxy's proxy-protocol.txt), as Envoy's
 * envoy.filters.listener.proxy_protocol reads it: version 1 (a text line)
 * or version 2 (binary, with TLVs), told apart per connection.
 *
 * A pure function over the bytes read so far, called again as more come:
 * it says whether the header is complete, and then how long it is (the
 * bytes the listener drops before the filter chain sees the rest) and the
 * source and destination addresses it carries. It keeps Envoy's state
 * machine (Filter::readProxyHeader and parseBuffer), down to which stat a
 * verdict counts:
 * - with allow_requests_without_proxy_protocol, bytes that do not begin
 *   like an allowed version's signature pass untouched (not found);
 * - from 16 bytes on, anything but the v2 signature or "PROXY " is an error
 *   (not found); before that, a "\r\n" ends a v1 line (an error unless it
 *   is one);
 * - a v1 line is at most SHARP_PP_V1_MAX bytes with its "\r\n"; "PROXY
 *   UNKNOWN ..." keeps the connection's own addresses, as does a v2 LOCAL
 *   command (its address block and TLVs are skipped); v2 PROXY needs
 *   AF_INET or AF_INET6 over STREAM or DGRAM (UNSPEC and AF_UNIX are
 *   errors), an address block at least as long as the family's, and TLVs
 *   that fit it exactly;
 * - the addresses must be unicast (not any, multicast or broadcast);
 * - a version in disallowed_versions is denied once recognised.
 * A v2 header is at most 16 + 65535 bytes: the caller needs no more than
 * SHARP_PP_V2_MAX bytes to get a verdict. */
#ifndef SHARP_PROXY_PROTOCOL_H
#define SHARP_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Envoy's MAX_PROXY_PROTO_LEN_V1: the spec's 107 bytes, plus one */
#define SHARP_PP_V1_MAX 108
#define SHARP_PP_V2_HEADER_LEN 16
#define SHARP_PP_V2_MAX (SHARP_PP_V2_HEADER_LEN + 65535)

typedef enum {
    SHARP_PP_NEED_MORE, /* a proper beginning: read more */
    SHARP_PP_DONE,      /* a header (version 1 or 2), or none where that is allowed (version 0) */
    SHARP_PP_ERROR,     /* malformed, or no header where one is required */
    SHARP_PP_DENIED,    /* a header of a disallowed version */
} sharp_pp_result_t;

typedef struct sharp_pp_opts {
    bool allow_without; /* allow_requests_without_proxy_protocol */
    bool deny_v1, deny_v2; /* disallowed_versions */
} sharp_pp_opts_t;

typedef struct sharp_pp_header {
    int version;   /* 0: none (or not yet known), 1 or 2: the stats' versions.v<N> */
    size_t len;    /* bytes of the header, to drop before the payload */
    bool local;    /* v1 UNKNOWN or v2 LOCAL: the connection's addresses stay */
    struct sockaddr_storage src, dst; /* without `local`: the header's addresses */
    const uint8_t *tlvs; /* v2 PROXY: its TLVs (within the parsed bytes), well-formed */
    size_t tlvs_len;
} sharp_pp_header_t;

sharp_pp_result_t sharp_pp_parse(const uint8_t *p, size_t n, const sharp_pp_opts_t *opts, sharp_pp_header_t *out);

/* Walks the TLVs of a DONE header: false once there are no more. */
typedef struct sharp_pp_tlv {
    uint8_t type;
    const uint8_t *value;
    size_t len;
} sharp_pp_tlv_t;
bool sharp_pp_tlv_next(const sharp_pp_header_t *h, size_t *at, sharp_pp_tlv_t *out);

#endif
