/* The TLS and HTTP inspectors (proxy/listener_inspect.c) on real
 * ClientHellos made by OpenSSL in memory (SNI, ALPN, several records, cut
 * at every length), and on plaintext HTTP/1.x and HTTP/2 prefaces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/ssl.h>
#include <string.h>

#include "listener_inspect.h"

/* The first flight of an OpenSSL client: its ClientHello record(s). */
static size_t client_hello(const char *sni, const char *alpn_wire, size_t alpn_len, uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    if (sni) SSL_set_tlsext_host_name(ssl, sni);
    if (alpn_wire) SSL_set_alpn_protos(ssl, (const unsigned char *)alpn_wire, (unsigned)alpn_len);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    size_t n = (size_t)BIO_read(wb, out, (int)cap);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return n;
}

static void sni_and_alpn(void **state)
{
    (void)state;
    uint8_t buf[16384];
    static const char alpn[] = "\x02h2\x08http/1.1";
    size_t n = client_hello("WWW.Example.com", alpn, sizeof alpn - 1, buf, sizeof buf);
    assert_true(n > 100);
    sharp_client_hello_t ch;
    assert_int_equal(sharp_inspect_tls(buf, n, &ch), SHARP_INSPECT_FOUND);
    assert_string_equal(ch.server_name, "www.example.com");
    assert_int_equal(ch.nalpn, 2);
    assert_string_equal(ch.alpn[0], "h2");
    assert_string_equal(ch.alpn[1], "http/1.1");
    /* every proper prefix asks for more */
    for (size_t k = 0; k < n; k++) assert_int_equal(sharp_inspect_tls(buf, k, &ch), SHARP_INSPECT_NEED_MORE);
}

static void no_sni_no_alpn(void **state)
{
    (void)state;
    uint8_t buf[16384];
    size_t n = client_hello(NULL, NULL, 0, buf, sizeof buf);
    sharp_client_hello_t ch;
    assert_int_equal(sharp_inspect_tls(buf, n, &ch), SHARP_INSPECT_FOUND);
    assert_string_equal(ch.server_name, "");
    assert_int_equal(ch.nalpn, 0);
}

/* A hello split into several handshake records (as a large one is). */
static void hello_across_records(void **state)
{
    (void)state;
    uint8_t buf[16384], split[20000];
    static const char alpn[] = "\x02h2";
    size_t n = client_hello("a.example", alpn, sizeof alpn - 1, buf, sizeof buf);
    /* re-frame the one record's payload as records of 50 bytes */
    size_t plen = n - 5, out = 0;
    for (size_t at = 0; at < plen; at += 50) {
        size_t k = plen - at < 50 ? plen - at : 50;
        split[out++] = 0x16;
        split[out++] = 3;
        split[out++] = 1;
        split[out++] = (uint8_t)(k >> 8);
        split[out++] = (uint8_t)k;
        memcpy(split + out, buf + 5 + at, k);
        out += k;
    }
    sharp_client_hello_t ch;
    assert_int_equal(sharp_inspect_tls(split, out, &ch), SHARP_INSPECT_FOUND);
    assert_string_equal(ch.server_name, "a.example");
    assert_int_equal(sharp_inspect_tls(split, out - 1, &ch), SHARP_INSPECT_NEED_MORE);
}

/* A ClientHello of about 60 KiB (a padding extension), framed in records
 * of at most 16 KiB, as OpenSSL would not make one: handshake header,
 * version, random, no session id, one cipher suite, null compression,
 * server_name then padding. Returns the bytes written. */
static size_t large_hello(uint8_t *out, size_t pad)
{
    static uint8_t msg[70000];
    size_t m = 4;
    msg[m++] = 3, msg[m++] = 3;
    memset(msg + m, 0x5a, 32), m += 32;
    msg[m++] = 0;
    msg[m++] = 0, msg[m++] = 2, msg[m++] = 0x13, msg[m++] = 0x01;
    msg[m++] = 1, msg[m++] = 0;
    static const char host[] = "big.example";
    size_t hl = sizeof host - 1, sni_len = 2 + 1 + 2 + hl;
    size_t ext_len = 4 + sni_len + 4 + pad;
    msg[m++] = (uint8_t)(ext_len >> 8), msg[m++] = (uint8_t)ext_len;
    msg[m++] = 0, msg[m++] = 0, msg[m++] = (uint8_t)(sni_len >> 8), msg[m++] = (uint8_t)sni_len;
    msg[m++] = (uint8_t)((sni_len - 2) >> 8), msg[m++] = (uint8_t)(sni_len - 2);
    msg[m++] = 0, msg[m++] = (uint8_t)(hl >> 8), msg[m++] = (uint8_t)hl;
    memcpy(msg + m, host, hl), m += hl;
    msg[m++] = 0, msg[m++] = 21, msg[m++] = (uint8_t)(pad >> 8), msg[m++] = (uint8_t)pad;
    memset(msg + m, 0, pad), m += pad;
    size_t body = m - 4;
    msg[0] = 1, msg[1] = (uint8_t)(body >> 16), msg[2] = (uint8_t)(body >> 8), msg[3] = (uint8_t)body;
    size_t o = 0;
    for (size_t at = 0; at < m; at += 16384) {
        size_t k = m - at < 16384 ? m - at : 16384;
        out[o++] = 0x16, out[o++] = 3, out[o++] = 1, out[o++] = (uint8_t)(k >> 8), out[o++] = (uint8_t)k;
        memcpy(out + o, msg + at, k), o += k;
    }
    return o;
}

/* A large hello arriving a byte at a time: every prefix asks for more,
 * the whole one is found, and the inspector copies each byte of the
 * message once (not all it has per read: 60 KiB a byte at a time would be
 * some 2 GB of copying). */
static void large_hello_byte_by_byte(void **state)
{
    (void)state;
    static uint8_t buf[70000];
    size_t n = large_hello(buf, 60000);
    assert_true(n > 60000 && n < SHARP_INSPECT_MAX_BYTES);
    sharp_client_hello_t ch;
    assert_int_equal(sharp_inspect_tls(buf, n, &ch), SHARP_INSPECT_FOUND);
    assert_string_equal(ch.server_name, "big.example");
    sharp_tls_inspector_t ti = {0};
    for (size_t k = 1; k < n; k++)
        assert_int_equal(sharp_tls_inspector_feed(&ti, buf, k, &ch), SHARP_INSPECT_NEED_MORE);
    assert_int_equal(sharp_tls_inspector_feed(&ti, buf, n, &ch), SHARP_INSPECT_FOUND);
    assert_string_equal(ch.server_name, "big.example");
    /* each payload byte once: the input less its record headers */
    assert_true(ti.copied <= n);
    assert_true(ti.copied >= n - 5 * 4);
    /* the verdict stays */
    assert_int_equal(sharp_tls_inspector_feed(&ti, buf, n, &ch), SHARP_INSPECT_FOUND);
    sharp_tls_inspector_free(&ti);
    /* a verdict other than FOUND stays too: not a handshake after all */
    sharp_tls_inspector_t t2 = {0};
    const uint8_t get[] = "GET / HTTP/1.1\r\n";
    assert_int_equal(sharp_tls_inspector_feed(&t2, get, 1, &ch), SHARP_INSPECT_NOT_FOUND);
    assert_int_equal(sharp_tls_inspector_feed(&t2, get, sizeof get - 1, &ch), SHARP_INSPECT_NOT_FOUND);
    sharp_tls_inspector_free(&t2);
    /* one past the limit is too large, found as soon as its length is in */
    sharp_tls_inspector_t t3 = {0};
    n = large_hello(buf, 65500);
    assert_int_equal(sharp_tls_inspector_feed(&t3, buf, 9, &ch), SHARP_INSPECT_TOO_LARGE);
    assert_int_equal(t3.copied, 4);
    sharp_tls_inspector_free(&t3);
}

static void not_tls(void **state)
{
    (void)state;
    sharp_client_hello_t ch;
    const char *get = "GET / HTTP/1.1\r\n";
    assert_int_equal(sharp_inspect_tls((const uint8_t *)get, strlen(get), &ch), SHARP_INSPECT_NOT_FOUND);
    /* a handshake record that is not a ClientHello (a ServerHello) */
    const uint8_t server_hello[] = {0x16, 3, 3, 0, 4, 2, 0, 0, 0};
    assert_int_equal(sharp_inspect_tls(server_hello, sizeof server_hello, &ch), SHARP_INSPECT_NOT_FOUND);
    /* an alert record */
    const uint8_t alert[] = {0x15, 3, 3, 0, 2, 2, 40};
    assert_int_equal(sharp_inspect_tls(alert, sizeof alert, &ch), SHARP_INSPECT_NOT_FOUND);
    /* a ClientHello that claims more than 64 KiB */
    const uint8_t huge[] = {0x16, 3, 1, 0x40, 0, 1, 0x01, 0x00, 0x00};
    assert_int_equal(sharp_inspect_tls(huge, sizeof huge, &ch), SHARP_INSPECT_TOO_LARGE);
    /* truncated lengths inside the hello are NOT_FOUND, never a read past */
    const uint8_t bad[] = {0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0xff, 0xff};
    assert_int_equal(sharp_inspect_tls(bad, sizeof bad, &ch), SHARP_INSPECT_NOT_FOUND);
}

static void http(void **state)
{
    (void)state;
    const char *proto = NULL;
    const char *h1 = "GET /x?y HTTP/1.1\r\nhost: a\r\n\r\n";
    assert_int_equal(sharp_inspect_http((const uint8_t *)h1, strlen(h1), &proto), SHARP_INSPECT_FOUND);
    assert_string_equal(proto, "http/1.1");
    const char *h10 = "POST / HTTP/1.0\n";
    assert_int_equal(sharp_inspect_http((const uint8_t *)h10, strlen(h10), &proto), SHARP_INSPECT_FOUND);
    assert_string_equal(proto, "http/1.0");
    const char *pre = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_int_equal(sharp_inspect_http((const uint8_t *)pre, strlen(pre), &proto), SHARP_INSPECT_FOUND);
    assert_string_equal(proto, "h2c");
    assert_int_equal(sharp_inspect_http((const uint8_t *)pre, 10, &proto), SHARP_INSPECT_NEED_MORE);
    assert_int_equal(sharp_inspect_http((const uint8_t *)"GET / HT", 8, &proto), SHARP_INSPECT_NEED_MORE);
    const char *h2 = "GET / HTTP/2.0\r\n";
    assert_int_equal(sharp_inspect_http((const uint8_t *)h2, strlen(h2), &proto), SHARP_INSPECT_NOT_FOUND);
    const uint8_t tls[] = {0x16, 3, 1, 0, 5};
    assert_int_equal(sharp_inspect_http(tls, sizeof tls, &proto), SHARP_INSPECT_NOT_FOUND);
    /* nothing read yet: no buffer (run under UBSan) */
    assert_int_equal(sharp_inspect_http(NULL, 0, &proto), SHARP_INSPECT_NEED_MORE);
    const char *sp = "GET /a b HTTP/1.1\r\n";
    assert_int_equal(sharp_inspect_http((const uint8_t *)sp, strlen(sp), &proto), SHARP_INSPECT_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sni_and_alpn),         cmocka_unit_test(no_sni_no_alpn), cmocka_unit_test(hello_across_records),
        cmocka_unit_test(large_hello_byte_by_byte),
        cmocka_unit_test(not_tls),              cmocka_unit_test(http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
