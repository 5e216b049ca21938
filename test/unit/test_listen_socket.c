/* test_listen_socket.c: a listener's sockets (listen_socket.h): one per
 * worker, each taken once; those no worker took closed on release; which
 * addresses a new listener version may take over; a warming listener's
 * sockets bound (the port is taken) but refusing connections until they
 * listen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "listen_socket.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void addr(const char *ip, unsigned port, struct sockaddr_storage *ss, socklen_t *len)
{
    assert_int_equal(sharp_addr_parse(ip, port, ss, len), 0);
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

static void test_one_socket_per_worker_taken_once(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    addr("127.0.0.1", 0, &ss, &len);
    char err[256];
    sharp_lsock_t *s = sharp_lsock_open(&ss, len, 0, 0, false, "127.0.0.1:0", 3, err, sizeof err);
    assert_non_null(s);
    int a = sharp_lsock_take(s, 0), b = sharp_lsock_take(s, 1);
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(sharp_lsock_take(s, 0), -1); /* taken once */
    assert_int_equal(sharp_lsock_take(s, 7), -1); /* no such worker */
    int c = atomic_load(&s->fds[2]);
    assert_true(fd_open(c));
    sharp_lsock_release(s); /* worker 2 never took its socket: closed */
    assert_false(fd_open(c));
    assert_int_equal(sharp_lsock_take(s, 2), -1);
    assert_true(fd_open(a) && fd_open(b)); /* the workers' own */
    sharp_lsock_ref(s);
    sharp_lsock_unref(s);
    sharp_lsock_unref(s);
    close(a);
    close(b);
}

static void test_bind_failure(void **state)
{
    (void)state;
    /* a port another socket holds without SO_REUSEPORT */
    int other = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(other, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(other, 1), 0);
    socklen_t sl = sizeof sin;
    getsockname(other, (struct sockaddr *)&sin, &sl);
    struct sockaddr_storage ss;
    socklen_t len;
    addr("127.0.0.1", ntohs(sin.sin_port), &ss, &len);
    char err[256] = "";
    assert_null(sharp_lsock_open(&ss, len, 0, 0, false, "taken", 2, err, sizeof err));
    assert_non_null(strstr(err, "cannot bind 'taken'"));
    close(other);
}

/* Whether a TCP connection to the port is refused (nothing listens). */
static bool connect_refused(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int e = errno;
    close(fd);
    return rc < 0 && e == ECONNREFUSED;
}

static void test_bound_then_listening(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    addr("127.0.0.1", 0, &ss, &len);
    char err[256];
    /* the port: one bound socket's, reused by the listener's (SO_REUSEPORT) */
    int probe = sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, 0, "probe", err, sizeof err);
    assert_true(probe >= 0);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    getsockname(probe, (struct sockaddr *)&sin, &sl);
    unsigned port = ntohs(sin.sin_port);
    addr("127.0.0.1", port, &ss, &len);
    sharp_lsock_t *s = sharp_lsock_bind(&ss, len, 0, 0, false, "warming", 2, err, sizeof err);
    assert_non_null(s);
    close(probe);
    assert_false(s->listening);
    assert_true(connect_refused(port)); /* bound only: refused */
    assert_int_equal(sharp_lsock_listen(s, err, sizeof err), 0);
    assert_true(s->listening);
    assert_false(connect_refused(port));
    assert_int_equal(sharp_lsock_listen(s, err, sizeof err), 0); /* once is enough */
    sharp_lsock_unref(s);
    assert_true(connect_refused(port));
}

static void test_compatible_addresses(void **state)
{
    (void)state;
    sharp_lsock_t s = {0};
    socklen_t len;
    addr("127.0.0.1", 8080, &s.addr, &len);
    struct sockaddr_storage o;
    addr("127.0.0.1", 8080, &o, &len);
    assert_true(sharp_lsock_compatible(&s, &o, 0, 0, false));
    addr("127.0.0.1", 8081, &o, &len);
    assert_false(sharp_lsock_compatible(&s, &o, 0, 0, false));
    addr("127.0.0.2", 8080, &o, &len);
    assert_false(sharp_lsock_compatible(&s, &o, 0, 0, false));
    addr("::1", 8080, &o, &len);
    assert_false(sharp_lsock_compatible(&s, &o, 0, 0, false));
    /* an ephemeral port is a new socket every time */
    addr("127.0.0.1", 0, &s.addr, &len);
    addr("127.0.0.1", 0, &o, &len);
    assert_false(sharp_lsock_compatible(&s, &o, 0, 0, false));
    addr("::1", 9000, &s.addr, &len);
    addr("::1", 9000, &o, &len);
    assert_true(sharp_lsock_compatible(&s, &o, 0, 0, false));
    /* pipes: the same path and mode */
    char perr[128];
    assert_int_equal(sharp_pipe_addr("/run/x.sock", &s.addr, &len, perr, sizeof perr), 0);
    assert_int_equal(sharp_pipe_addr("/run/x.sock", &o, &len, perr, sizeof perr), 0);
    s.pipe_mode = 0600;
    assert_true(sharp_lsock_compatible(&s, &o, 0600, 0, false));
    assert_false(sharp_lsock_compatible(&s, &o, 0666, 0, false));
    assert_int_equal(sharp_pipe_addr("/run/y.sock", &o, &len, perr, sizeof perr), 0);
    assert_false(sharp_lsock_compatible(&s, &o, 0600, 0, false));
    assert_int_equal(sharp_pipe_addr("@abs", &s.addr, &len, perr, sizeof perr), 0);
    assert_int_equal(sharp_pipe_addr("@abs", &o, &len, perr, sizeof perr), 0);
    s.pipe_mode = 0;
    assert_true(sharp_lsock_compatible(&s, &o, 0, 0, false));
}

/* A UDP listener's sockets: datagram sockets, one per worker on the same
 * port (SO_REUSEPORT), next to a TCP listener on that port; a UDP socket is
 * never a TCP listener's. */
static void test_udp_sockets(void **state)
{
    (void)state;
    char err[256];
    struct sockaddr_storage ss;
    socklen_t len;
    addr("127.0.0.1", 0, &ss, &len);
    int probe = sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, 0, "probe", err, sizeof err);
    assert_true(probe >= 0);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    getsockname(probe, (struct sockaddr *)&sin, &sl);
    unsigned port = ntohs(sin.sin_port);
    addr("127.0.0.1", port, &ss, &len);
    sharp_lsock_t *tcp = sharp_lsock_open(&ss, len, 0, 0, false, "tcp", 1, err, sizeof err);
    assert_non_null(tcp);
    close(probe);
    sharp_lsock_t *udp = sharp_lsock_bind(&ss, len, 0, 0, true, "udp", 2, err, sizeof err);
    assert_non_null(udp);
    assert_true(udp->listening); /* nothing to listen for */
    assert_int_equal(sharp_lsock_listen(udp, err, sizeof err), 0);
    int fd = sharp_lsock_take(udp, 1);
    assert_true(fd >= 0);
    int type = 0;
    socklen_t tl = sizeof type;
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl), 0);
    assert_int_equal(type, SOCK_DGRAM);
    close(fd);
    assert_true(sharp_lsock_compatible(udp, &ss, 0, 0, true));
    assert_false(sharp_lsock_compatible(udp, &ss, 0, 0, false));
    assert_false(sharp_lsock_compatible(tcp, &ss, 0, 0, true));
    sharp_lsock_unref(udp);
    sharp_lsock_unref(tcp);
}

/* A UDP listener's socket has no SO_REUSEADDR (Envoy sets it on stream
 * sockets only): another socket, with SO_REUSEADDR but not SO_REUSEPORT,
 * cannot bind the same address and port to take its datagrams. A TCP
 * listener keeps SO_REUSEADDR. */
static void test_udp_socket_not_shared(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    addr("127.0.0.1", 0, &ss, &len);
    char err[256];
    int fd = sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_DGRAM, 0, 0, "udp", err, sizeof err);
    assert_true(fd >= 0);
    int v = -1;
    socklen_t vl = sizeof v;
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &vl), 0);
    assert_int_equal(v, 0);
    int type = 0;
    vl = sizeof type;
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &vl), 0);
    assert_int_equal(type, SOCK_DGRAM);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    int other = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    setsockopt(other, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(other, (struct sockaddr *)&sin, sl), -1);
    assert_int_equal(errno, EADDRINUSE);
    close(other);
    close(fd);
    int tcp = sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, 0, "tcp", err, sizeof err);
    assert_true(tcp >= 0);
    vl = sizeof v;
    assert_int_equal(getsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &v, &vl), 0);
    assert_int_equal(v, 1);
    close(tcp);
}

/* freebind: an address this host does not have (TEST-NET-1) binds only
 * with it; ipv4_compat: IPV6_V6ONLY off, so the IPv4-mapped loopback binds
 * and takes IPv4 clients; a socket with other options is not the same. */
static void test_freebind_and_ipv4_compat(void **state)
{
    (void)state;
    char err[256];
    struct sockaddr_storage ss;
    socklen_t len;
    addr("192.0.2.1", 0, &ss, &len);
    assert_int_equal(sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, 0, "nf", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot bind"));
    int fd = sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, SHARP_SOCK_FREEBIND, "fb", err, sizeof err);
    assert_true(fd >= 0);
    int v = 0;
    socklen_t vl = sizeof v;
    assert_int_equal(getsockopt(fd, IPPROTO_IP, IP_FREEBIND, &v, &vl), 0);
    assert_int_equal(v, 1);
    close(fd);
    addr("::ffff:127.0.0.1", 0, &ss, &len);
    assert_int_equal(sharp_bind_socket((struct sockaddr *)&ss, len, SOCK_STREAM, 0, 0, "v6only", err, sizeof err), -1);
    fd = sharp_listen_socket((struct sockaddr *)&ss, len, 0, SHARP_SOCK_V4COMPAT, "compat", err, sizeof err);
    assert_true(fd >= 0);
    vl = sizeof v;
    assert_int_equal(getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vl), 0);
    assert_int_equal(v, 0);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&bound, &bl), 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = ((struct sockaddr_in6 *)&bound)->sin6_port};
    to.sin_addr.s_addr = htonl(0x7f000001);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&to, sizeof to), 0);
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    int a = accept(fd, (struct sockaddr *)&peer, &pl);
    assert_true(a >= 0);
    assert_int_equal(peer.ss_family, AF_INET6);
    sharp_addr_unmap_v4(&peer);
    assert_int_equal(peer.ss_family, AF_INET);
    assert_int_equal(ntohl(((struct sockaddr_in *)&peer)->sin_addr.s_addr), 0x7f000001);
    close(a);
    close(c);
    close(fd);
    /* an IPv6 address stays as it is */
    addr("::1", 80, &ss, &len);
    sharp_addr_unmap_v4(&ss);
    assert_int_equal(ss.ss_family, AF_INET6);
    sharp_lsock_t s = {.addr = ss, .flags = SHARP_SOCK_V4COMPAT};
    assert_true(sharp_lsock_compatible(&s, &ss, 0, SHARP_SOCK_V4COMPAT, false));
    assert_false(sharp_lsock_compatible(&s, &ss, 0, 0, false));
    assert_false(sharp_lsock_compatible(&s, &ss, 0, SHARP_SOCK_V4COMPAT | SHARP_SOCK_FREEBIND, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_socket_per_worker_taken_once),
        cmocka_unit_test(test_bind_failure),
        cmocka_unit_test(test_bound_then_listening),
        cmocka_unit_test(test_compatible_addresses),
        cmocka_unit_test(test_udp_sockets),
        cmocka_unit_test(test_udp_socket_not_shared),
        cmocka_unit_test(test_freebind_and_ipv4_compat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
