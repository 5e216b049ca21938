/* The PROXY protocol header (proxy/proxy_protocol.c): v1 lines and v2
 * binary headers (TCP4, TCP6, LOCAL, UNSPEC, TLVs), fed whole and one byte
 * at a time, and malformed, oversized and hostile ones, with Envoy's
 * verdicts (which version's stats they count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy_protocol.h"

static const sharp_pp_opts_t strict = {0};

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static sharp_pp_result_t parse_str(const char *s, const sharp_pp_opts_t *o, sharp_pp_header_t *h)
{
    return sharp_pp_parse((const uint8_t *)s, strlen(s), o, h);
}

static void addr_is(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    char buf[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        assert_int_equal(ntohs(in->sin_port), port);
    } else {
        assert_int_equal(ss->ss_family, AF_INET6);
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
        assert_int_equal(ntohs(in6->sin6_port), port);
    }
    assert_string_equal(buf, ip);
}

/* Every proper prefix of p[0..n) needs more; the whole gives `want`. */
static void fragments(const uint8_t *p, size_t n, sharp_pp_result_t want)
{
    sharp_pp_header_t h;
    for (size_t i = 0; i < n; i++) assert_int_equal(sharp_pp_parse(p, i, &strict, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(sharp_pp_parse(p, n, &strict, &h), want);
}

static void v1_tcp4(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    const char *line = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
    assert_int_equal(parse_str(line, &strict, &h), SHARP_PP_DONE);
    assert_int_equal(h.version, 1);
    assert_false(h.local);
    assert_int_equal(h.len, strlen("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"));
    addr_is(&h.src, "192.0.2.1", 56324);
    addr_is(&h.dst, "198.51.100.2", 443);
    assert_null(h.tlvs);
    fragments((const uint8_t *)line, h.len, SHARP_PP_DONE);
}

static void v1_tcp6_and_unknown(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    assert_int_equal(parse_str("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n", &strict, &h), SHARP_PP_DONE);
    addr_is(&h.src, "2001:db8::1", 1);
    addr_is(&h.dst, "2001:db8::2", 65535);
    /* UNKNOWN: the real connection's addresses, whatever follows */
    assert_int_equal(parse_str("PROXY UNKNOWN\r\n", &strict, &h), SHARP_PP_DONE);
    assert_true(h.local);
    assert_int_equal(h.len, 15);
    assert_int_equal(parse_str("PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\nxyz", &strict, &h),
                     SHARP_PP_DONE);
    assert_true(h.local);
    assert_int_equal(h.version, 1);
}

static void v1_malformed(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    const char *bad[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",          /* a part missing */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",      /* one too many */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",       /* an empty part */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",    /* port out of range */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",          /* not an IPv4 address */
        "PROXY TCP4 ::1 ::2 1 2\r\n",                /* IPv6 under TCP4 */
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",        /* IPv4 under TCP6 */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 0.0.0.0 5.6.7.8 1 2\r\n",        /* not unicast */
        "PROXY TCP4 1.2.3.4 224.0.0.1 1 2\r\n",
        "PROXY TCP4 255.255.255.255 5.6.7.8 1 2\r\n",
        "PROXY TCP6 :: 2001:db8::2 1 2\r\n",
        "PROXY TCP6 2001:db8::1 ff02::1 1 2\r\n",
        "PROXY\r\n",
        "PROXY \r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(parse_str(bad[i], &strict, &h), SHARP_PP_ERROR);
        assert_int_equal(h.version, 1); /* counted as versions.v1.error */
    }
    /* a short line that is not PROXY at all: a v1 error too (Envoy) */
    assert_int_equal(parse_str("GET /\r\n", &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 1);
    /* 16 bytes that are neither signature: not found */
    assert_int_equal(parse_str("GET / HTTP/1.1\r\nHost: x\r\n\r\n", &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 0);
    /* fewer: wait */
    assert_int_equal(parse_str("GET / HTTP", &strict, &h), SHARP_PP_NEED_MORE);
}

static void v1_oversized(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    char line[256];
    /* 108 bytes with the CRLF: accepted (Envoy's limit) */
    snprintf(line, sizeof line, "PROXY UNKNOWN %*s\r\n", 108 - 16, "x");
    assert_int_equal(strlen(line), 108);
    assert_int_equal(parse_str(line, &strict, &h), SHARP_PP_DONE);
    snprintf(line, sizeof line, "PROXY UNKNOWN %*s\r\n", 109 - 16, "x");
    assert_int_equal(parse_str(line, &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 1);
    /* no end of line within the limit: an error without reading on */
    memset(line, 'A', sizeof line);
    memcpy(line, "PROXY ", 6);
    assert_int_equal(sharp_pp_parse((const uint8_t *)line, 108, &strict, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(sharp_pp_parse((const uint8_t *)line, 109, &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(sharp_pp_parse((const uint8_t *)line, sizeof line, &strict, &h), SHARP_PP_ERROR);
}

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *addr, size_t alen, const uint8_t *tlv,
                 size_t tlen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    size_t l = alen + tlen;
    out[14] = (uint8_t)(l >> 8);
    out[15] = (uint8_t)l;
    if (alen) memcpy(out + 16, addr, alen);
    if (tlen) memcpy(out + 16 + alen, tlv, tlen);
    return 16 + l;
}

static const uint8_t a4[12] = {10, 1, 2, 3, 192, 168, 0, 9, 0xdc, 0x04, 0x01, 0xbb}; /* :56324 -> :443 */

static void v2_tcp4(void **state)
{
    (void)state;
    uint8_t b[128];
    size_t n = v2(b, 0x21, 0x11, a4, sizeof a4, NULL, 0);
    memcpy(b + n, "payload", 7);
    sharp_pp_header_t h;
    assert_int_equal(sharp_pp_parse(b, n + 7, &strict, &h), SHARP_PP_DONE);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.len, 28);
    assert_false(h.local);
    addr_is(&h.src, "10.1.2.3", 56324);
    addr_is(&h.dst, "192.168.0.9", 443);
    fragments(b, n, SHARP_PP_DONE);
    /* DGRAM is taken as well (Envoy) */
    n = v2(b, 0x21, 0x12, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_DONE);
}

static void v2_tcp6(void **state)
{
    (void)state;
    uint8_t a6[36] = {0};
    inet_pton(AF_INET6, "2001:db8::5", a6);
    inet_pton(AF_INET6, "2001:db8::6", a6 + 16);
    a6[32] = 0x30, a6[33] = 0x39, a6[34] = 0, a6[35] = 80;
    uint8_t b[128];
    size_t n = v2(b, 0x21, 0x21, a6, sizeof a6, NULL, 0);
    sharp_pp_header_t h;
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_DONE);
    assert_int_equal(h.len, 52);
    addr_is(&h.src, "2001:db8::5", 12345);
    addr_is(&h.dst, "2001:db8::6", 80);
    fragments(b, n, SHARP_PP_DONE);
    /* a v4 address block under AF_INET6 is too short */
    n = v2(b, 0x21, 0x21, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 2);
}

static void v2_local_and_unspec(void **state)
{
    (void)state;
    uint8_t b[128];
    sharp_pp_header_t h;
    /* LOCAL: no address, the connection's own stay */
    size_t n = v2(b, 0x20, 0x00, NULL, 0, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_DONE);
    assert_true(h.local);
    assert_int_equal(h.len, 16);
    /* LOCAL with an address block and TLVs (even malformed ones): skipped */
    const uint8_t junk[5] = {0xee, 0xff, 0xff, 1, 2};
    n = v2(b, 0x20, 0x11, a4, sizeof a4, junk, sizeof junk);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_DONE);
    assert_true(h.local);
    assert_int_equal(h.len, n);
    assert_null(h.tlvs);
    fragments(b, n, SHARP_PP_DONE);
    /* PROXY over UNSPEC or AF_UNIX: unsupported, an error */
    n = v2(b, 0x21, 0x00, NULL, 0, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 2);
    uint8_t un[216] = {0};
    n = v2(b, 0x21, 0x31, un, 0, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    /* PROXY over an UNSPEC transport */
    n = v2(b, 0x21, 0x10, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
}

static void v2_malformed(void **state)
{
    (void)state;
    uint8_t b[128];
    sharp_pp_header_t h;
    /* version 1 in the binary header, commands 2..15 */
    size_t n = v2(b, 0x11, 0x11, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    n = v2(b, 0x22, 0x11, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    /* an address length below the family's */
    n = v2(b, 0x21, 0x11, a4, 8, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, 16, &strict, &h), SHARP_PP_ERROR);
    /* not unicast */
    uint8_t any[12] = {0, 0, 0, 0, 1, 2, 3, 4, 0, 1, 0, 2};
    n = v2(b, 0x21, 0x11, any, sizeof any, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    assert_int_equal(h.version, 2);
}

static void v2_tlvs(void **state)
{
    (void)state;
    uint8_t b[256];
    sharp_pp_header_t h;
    const uint8_t tlv[] = {0x02, 0, 3, 'a', 'b', 'c', 0xe0, 0, 0, 0x30, 0, 1, 0};
    size_t n = v2(b, 0x21, 0x11, a4, sizeof a4, tlv, sizeof tlv);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_DONE);
    assert_int_equal(h.len, n);
    size_t at = 0;
    sharp_pp_tlv_t t;
    assert_true(sharp_pp_tlv_next(&h, &at, &t));
    assert_int_equal(t.type, 2);
    assert_int_equal(t.len, 3);
    assert_memory_equal(t.value, "abc", 3);
    assert_true(sharp_pp_tlv_next(&h, &at, &t));
    assert_int_equal(t.type, 0xe0);
    assert_int_equal(t.len, 0);
    assert_true(sharp_pp_tlv_next(&h, &at, &t));
    assert_int_equal(t.type, 0x30);
    assert_int_equal(t.len, 1);
    assert_false(sharp_pp_tlv_next(&h, &at, &t));
    fragments(b, n, SHARP_PP_DONE);
    /* a value longer than the block, a length cut short: errors */
    const uint8_t over[] = {0x02, 0, 9, 'a'};
    n = v2(b, 0x21, 0x11, a4, sizeof a4, over, sizeof over);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    const uint8_t cut[] = {0x02, 0};
    n = v2(b, 0x21, 0x11, a4, sizeof a4, cut, sizeof cut);
    assert_int_equal(sharp_pp_parse(b, n, &strict, &h), SHARP_PP_ERROR);
    /* the largest header: 16 + 65535 bytes, waited for in full */
    static uint8_t big[SHARP_PP_V2_MAX];
    memset(big, 0, sizeof big);
    memcpy(big, sig, 12);
    big[12] = 0x21, big[13] = 0x11, big[14] = 0xff, big[15] = 0xff;
    memcpy(big + 16, a4, 12);
    /* one TLV filling the rest: 65535 - 12 - 3 bytes of value */
    big[28] = 0xee, big[29] = (uint8_t)((65520) >> 8), big[30] = (uint8_t)65520;
    assert_int_equal(sharp_pp_parse(big, sizeof big - 1, &strict, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(sharp_pp_parse(big, sizeof big, &strict, &h), SHARP_PP_DONE);
    assert_int_equal(h.len, SHARP_PP_V2_MAX);
}

static void without_proxy_protocol(void **state)
{
    (void)state;
    sharp_pp_opts_t allow = {.allow_without = true};
    sharp_pp_header_t h;
    /* anything that is not a signature's beginning passes at once */
    assert_int_equal(parse_str("G", &allow, &h), SHARP_PP_DONE);
    assert_int_equal(h.version, 0);
    assert_int_equal(h.len, 0);
    assert_int_equal(parse_str("GET / HTTP/1.1\r\n", &allow, &h), SHARP_PP_DONE);
    assert_int_equal(parse_str("PROXX", &allow, &h), SHARP_PP_DONE);
    /* a signature's beginning waits; a header is still read */
    assert_int_equal(parse_str("PROX", &allow, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(sharp_pp_parse(sig, 5, &allow, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &allow, &h), SHARP_PP_DONE);
    assert_int_equal(h.version, 1);
    /* with v1 disallowed, a v1 line is just data */
    sharp_pp_opts_t v2only = {.allow_without = true, .deny_v1 = true};
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &v2only, &h), SHARP_PP_DONE);
    assert_int_equal(h.version, 0);
}

static void disallowed_versions(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    sharp_pp_opts_t no1 = {.deny_v1 = true}, no2 = {.deny_v2 = true};
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &no1, &h), SHARP_PP_DENIED);
    assert_int_equal(h.version, 1);
    assert_int_equal(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &no2, &h), SHARP_PP_DONE);
    uint8_t b[64];
    size_t n = v2(b, 0x21, 0x11, a4, sizeof a4, NULL, 0);
    assert_int_equal(sharp_pp_parse(b, n, &no2, &h), SHARP_PP_DENIED);
    assert_int_equal(h.version, 2);
    assert_int_equal(sharp_pp_parse(b, n, &no1, &h), SHARP_PP_DONE);
}

/* Nothing read yet is no buffer at all (the listener filters' timeout
 * with continue_on_listener_filters_timeout before the first byte): no
 * verdict, and no comparison with a null pointer (run under UBSan). */
static void nothing_read(void **state)
{
    (void)state;
    sharp_pp_header_t h;
    sharp_pp_opts_t allow = {.allow_without = true};
    assert_int_equal(sharp_pp_parse(NULL, 0, &strict, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(sharp_pp_parse(NULL, 0, &allow, &h), SHARP_PP_NEED_MORE);
    assert_int_equal(h.version, 0);
}

/* Random bytes after either signature never read past the buffer (run
 * under ASan) and always give a verdict or ask for at most SHARP_PP_V2_MAX. */
static void hostile(void **state)
{
    (void)state;
    uint8_t b[300];
    sharp_pp_header_t h;
    uint32_t x = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        if (round & 1) {
            memcpy(b, sig, 12);
            n = 12;
        } else {
            memcpy(b, "PROXY ", 6);
            n = 6;
        }
        size_t len = n + (x % (sizeof b - n));
        for (; n < len; n++) {
            x = x * 1103515245u + 12345u;
            b[n] = (uint8_t)(x >> 16);
            if (!(round & 1) && (x & 0x300) == 0) b[n] = (x & 0x400) ? ' ' : '\n';
        }
        sharp_pp_result_t r = sharp_pp_parse(b, len, &strict, &h);
        if (r == SHARP_PP_DONE) assert_true(h.len <= len);
        if (r == SHARP_PP_NEED_MORE) assert_true(len < SHARP_PP_V2_MAX);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4),      cmocka_unit_test(v1_tcp6_and_unknown), cmocka_unit_test(v1_malformed),
        cmocka_unit_test(v1_oversized), cmocka_unit_test(v2_tcp4),             cmocka_unit_test(v2_tcp6),
        cmocka_unit_test(v2_local_and_unspec), cmocka_unit_test(v2_malformed), cmocka_unit_test(v2_tlvs),
        cmocka_unit_test(without_proxy_protocol), cmocka_unit_test(disallowed_versions), cmocka_unit_test(hostile),
        cmocka_unit_test(nothing_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
