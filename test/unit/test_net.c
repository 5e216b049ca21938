/* test_net.c: CIDR ranges (internal_address_config.cidr_ranges), Unix
 * domain socket addresses (Address.pipe), and the writer's count of
 * plaintext on the wire through a transport that grows the bytes (TLS). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "net.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool in_range(const sharp_cidr_t *c, const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(sharp_addr_parse(ip, 80, &ss, &len), 0);
    return sharp_cidr_contains(c, (const struct sockaddr *)&ss);
}

static void test_ipv4_ranges(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("10.1.2.3", 8, &c), 0); /* masked to 10.0.0.0/8 */
    assert_true(in_range(&c, "10.0.0.1"));
    assert_true(in_range(&c, "10.255.255.255"));
    assert_false(in_range(&c, "11.0.0.1"));
    assert_false(in_range(&c, "::ffff:10.0.0.1")); /* other family */
    assert_int_equal(sharp_cidr_parse("172.16.0.0", 12, &c), 0);
    assert_true(in_range(&c, "172.31.255.1"));
    assert_false(in_range(&c, "172.32.0.1"));
    assert_false(in_range(&c, "172.15.255.255"));
    assert_int_equal(sharp_cidr_parse("127.0.0.1", 32, &c), 0);
    assert_true(in_range(&c, "127.0.0.1"));
    assert_false(in_range(&c, "127.0.0.2"));
    assert_int_equal(sharp_cidr_parse("0.0.0.0", 0, &c), 0);
    assert_true(in_range(&c, "203.0.113.9"));
}

static void test_ipv6_ranges(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("fd00::", 8, &c), 0);
    assert_true(in_range(&c, "fd12:3456::1"));
    assert_false(in_range(&c, "fc00::1"));
    assert_false(in_range(&c, "10.0.0.1"));
    assert_int_equal(sharp_cidr_parse("2001:db8::", 33, &c), 0);
    assert_true(in_range(&c, "2001:db8:7fff::1"));
    assert_false(in_range(&c, "2001:db8:8000::1"));
    assert_int_equal(sharp_cidr_parse("::1", 128, &c), 0);
    assert_true(in_range(&c, "::1"));
    assert_false(in_range(&c, "::2"));
}

static void test_invalid(void **state)
{
    (void)state;
    sharp_cidr_t c;
    assert_int_equal(sharp_cidr_parse("10.0.0.0", 33, &c), -1);
    assert_int_equal(sharp_cidr_parse("::", 129, &c), -1);
    assert_int_equal(sharp_cidr_parse("localhost", 8, &c), -1);
    assert_int_equal(sharp_cidr_parse("", 0, &c), -1);
    assert_int_equal(sharp_cidr_parse("10.0.0.0/8", 8, &c), -1);
}

static void test_pipe_path(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256], out[SHARP_ADDR_STRLEN];
    assert_int_equal(sharp_pipe_addr("/run/a:b.sock", &ss, &len, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_UNIX);
    assert_int_equal(len, sizeof(struct sockaddr_un));
    assert_false(sharp_pipe_is_abstract((struct sockaddr *)&ss));
    assert_string_equal(sharp_addr_str((struct sockaddr *)&ss, out, sizeof out), "/run/a:b.sock");
    /* Envoy's sanitizeStatsName: ':' becomes '_', the path stays */
    assert_string_equal(sharp_addr_stat_name((struct sockaddr *)&ss, out, sizeof out), "/run/a_b.sock");
    assert_int_equal(sharp_pipe_addr("/x://y:/z", &ss, &len, err, sizeof err), 0);
    assert_string_equal(sharp_addr_stat_name((struct sockaddr *)&ss, out, sizeof out), "/x_y_z");
}

static void test_pipe_abstract(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256], out[SHARP_ADDR_STRLEN];
    assert_int_equal(sharp_pipe_addr("@envoy-admin", &ss, &len, err, sizeof err), 0);
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    /* the name without a trailing NUL: the address is as long as the name */
    assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("@envoy-admin"));
    assert_int_equal(un->sun_path[0], '\0');
    assert_memory_equal(un->sun_path + 1, "envoy-admin", 11);
    assert_true(sharp_pipe_is_abstract((struct sockaddr *)&ss));
    assert_string_equal(sharp_addr_str((struct sockaddr *)&ss, out, sizeof out), "@envoy-admin");
    assert_string_equal(sharp_addr_stat_name((struct sockaddr *)&ss, out, sizeof out), "@envoy-admin");
}

static void test_pipe_invalid(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    char err[256], path[200];
    assert_int_equal(sharp_pipe_addr("", &ss, &len, err, sizeof err), -1);
    assert_int_equal(sharp_pipe_addr("@", &ss, &len, err, sizeof err), -1);
    memset(path, 'x', sizeof path);
    path[0] = '/';
    path[108] = '\0'; /* 108 bytes: no room for the NUL in sun_path */
    assert_int_equal(sharp_pipe_addr(path, &ss, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "exceeds maximum UNIX domain socket path size of 108"));
    path[107] = '\0';
    assert_int_equal(sharp_pipe_addr(path, &ss, &len, err, sizeof err), 0);
    path[0] = '@'; /* the same limit for an abstract name */
    assert_int_equal(sharp_pipe_addr(path, &ss, &len, err, sizeof err), 0);
}

static void test_pipe_printed(void **state)
{
    (void)state;
    /* a printed pipe address has no port to strip */
    sharp_str_t s = sharp_addr_without_port("/run/a:80");
    assert_int_equal(s.len, strlen("/run/a:80"));
    s = sharp_addr_without_port("@name:1");
    assert_int_equal(s.len, strlen("@name:1"));
    s = sharp_addr_without_port("10.0.0.1:80");
    assert_int_equal(s.len, strlen("10.0.0.1"));
    assert_true(sharp_addr_is_pipe("/run/a"));
    assert_true(sharp_addr_is_pipe("@a"));
    assert_true(sharp_addr_is_pipe("run/x.sock")); /* relative paths are allowed */
    assert_true(sharp_addr_is_pipe("1.sock"));
    assert_true(sharp_addr_is_pipe("1.2.3.4:80x"));
    assert_true(sharp_addr_is_pipe("a:80"));
    s = sharp_addr_without_port("run/a:80");
    assert_int_equal(s.len, strlen("run/a:80"));
    assert_false(sharp_addr_is_pipe("10.0.0.1:80"));
    assert_false(sharp_addr_is_pipe("[::1]:80"));
    assert_false(sharp_addr_is_pipe("-"));
    assert_false(sharp_addr_is_pipe(""));
}

/* A transport that writes every byte twice (as TLS adds its records'
 * overhead), so the socket's queue counts more than the plaintext. */
static int doubling(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    for (unsigned i = 0; i < nbufs; i++) {
        char *twice = malloc(bufs[i].len * 2);
        memcpy(twice, bufs[i].base, bufs[i].len);
        memcpy(twice + bufs[i].len, bufs[i].base, bufs[i].len);
        uv_buf_t b = uv_buf_init(twice, (unsigned)(bufs[i].len * 2));
        int rc = sharp_writer_write_raw(w, &b, 1);
        free(twice);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Addresses as text: IPv4 (written by hand) as inet_ntop and "%u" would
 * write it, at the edges of each field; IPv6 in brackets. */
static void test_addr_printed(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        uint32_t port;
        const char *want;
    } cases[] = {
        {"0.0.0.0", 0, "0.0.0.0:0"},
        {"127.0.0.1", 10000, "127.0.0.1:10000"},
        {"255.255.255.255", 65535, "255.255.255.255:65535"},
        {"10.9.100.99", 9, "10.9.100.99:9"},
        {"1.20.199.200", 80, "1.20.199.200:80"},
        {"::1", 443, "[::1]:443"},
        {"2001:db8::7", 1, "[2001:db8::7]:1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        char out[64];
        assert_int_equal(sharp_addr_parse(cases[i].ip, cases[i].port, &ss, &len), 0);
        assert_string_equal(sharp_addr_str((struct sockaddr *)&ss, out, sizeof out), cases[i].want);
    }
    /* a buffer too small for every IPv4 address: snprintf's truncation */
    struct sockaddr_storage ss;
    socklen_t len;
    char small[8];
    assert_int_equal(sharp_addr_parse("127.0.0.1", 80, &ss, &len), 0);
    assert_string_equal(sharp_addr_str((struct sockaddr *)&ss, small, sizeof small), "127.0.0");
}

static void test_plain_written_through_a_transport(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    uv_pipe_t pipe;
    uv_pipe_init(&loop, &pipe, 0);
    assert_int_equal(uv_pipe_open(&pipe, sv[0]), 0);
    sharp_writer_t w;
    sharp_writer_init(&w, (uv_stream_t *)&pipe, NULL, NULL);
    w.transport = doubling;
    /* 100 writes of 1000 bytes: 200,000 bytes on the wire, most queued */
    char chunk[1000];
    memset(chunk, 'x', sizeof chunk);
    uv_buf_t b = uv_buf_init(chunk, sizeof chunk);
    for (int i = 0; i < 100; i++) assert_int_equal(sharp_writer_write(&w, &b, 1), 0);
    assert_true(w.plain_total == 100000 && w.raw_total == 200000);
    assert_true(w.queued > 0);
    uint64_t p = sharp_writer_plain_written(&w);
    /* only whole writes whose doubled bytes are all out count: never more
     * than half of what left, and a multiple of a write */
    assert_true(p <= (w.raw_total - w.queued) / 2);
    assert_int_equal(p % 1000, 0);
    assert_true(p < w.plain_total);
    /* the peer reads everything: the plaintext is all on the wire */
    char sink[65536];
    uint64_t read_total = 0;
    while (read_total < 200000) {
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t n = read(sv[1], sink, sizeof sink);
        if (n > 0) read_total += (uint64_t)n;
    }
    while (w.queued) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(sharp_writer_plain_written(&w), 100000);
    uv_close((uv_handle_t *)&pipe, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    sharp_writer_release(&w);
    close(sv[1]);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Without a transport, what is not queued is written. */
static void test_plain_written_in_the_clear(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uv_pipe_t pipe;
    uv_pipe_init(&loop, &pipe, 0);
    assert_int_equal(uv_pipe_open(&pipe, sv[0]), 0);
    sharp_writer_t w;
    sharp_writer_init(&w, (uv_stream_t *)&pipe, NULL, NULL);
    char chunk[100] = {0};
    uv_buf_t b = uv_buf_init(chunk, sizeof chunk);
    assert_int_equal(sharp_writer_write(&w, &b, 1), 0);
    assert_int_equal(sharp_writer_plain_written(&w), 100 - w.queued);
    uv_close((uv_handle_t *)&pipe, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    sharp_writer_release(&w);
    close(sv[1]);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4_ranges),
        cmocka_unit_test(test_ipv6_ranges),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_pipe_path),
        cmocka_unit_test(test_pipe_abstract),
        cmocka_unit_test(test_pipe_invalid),
        cmocka_unit_test(test_pipe_printed),
        cmocka_unit_test(test_addr_printed),
        cmocka_unit_test(test_plain_written_through_a_transport),
        cmocka_unit_test(test_plain_written_in_the_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
