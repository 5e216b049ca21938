/* listen_socket.h: a listener's listening sockets, one per worker.
 *
 * TCP: one SO_REUSEPORT socket per worker, the kernel spreading new
 * connections across them. A Unix socket has no SO_REUSEPORT balancing:
 * as in Envoy (ListenSocketFactoryImpl turns ReusePort into NoReusePort for
 * pipes), it is bound once and every other worker gets a dup of it; all
 * workers then accept from the one queue.
 *
 * The main thread binds them (so a busy port is a clean error) and every
 * version of a listener on the same address shares them: a listener update
 * (LDS) that keeps the address keeps the sockets, and no connection attempt
 * is refused while the workers move to the new version. Each worker takes
 * its descriptor once (sharp_lsock_take) and then owns it: it closes it
 * when a snapshot no longer lists the socket. sharp_lsock_release closes
 * the descriptors no worker took (the listener was removed first).
 *
 * UDP: one SO_REUSEPORT datagram socket per worker, bound at once (there is
 * nothing to listen for, so a warming UDP listener's socket takes datagrams
 * into its buffer until a worker reads it). A TCP and a UDP listener on the
 * same address and port are two sockets. */
#ifndef SHARP_LISTEN_SOCKET_H
#define SHARP_LISTEN_SOCKET_H

#include "common.h"
#include "net.h"

#include <stdatomic.h>
#include <sys/socket.h>

typedef struct sharp_lsock {
    _Atomic uint32_t refs; /* the listener versions naming it (memory only) */
    uint64_t id;           /* the workers' key for their handle */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t pipe_mode;
    char address[SHARP_ADDR_STRLEN];
    uint32_t nfds;
    _Atomic int *fds;      /* [worker]: -1 once taken or released */
    uint32_t users;        /* main thread: the listeners serving on it now or warming on it */
    bool listening;        /* main thread: listen(2) was called (a warming listener's socket is only bound) */
    bool udp;              /* datagram sockets */
    unsigned flags;        /* SHARP_SOCK_* options (net.h) */
} sharp_lsock_t;

/* Binds and listens on `addr` for `nworkers` workers (binds datagram
 * sockets with `udp`). NULL with the reason in err. */
sharp_lsock_t *sharp_lsock_open(const struct sockaddr_storage *addr, socklen_t addrlen, uint32_t pipe_mode, unsigned flags,
                                bool udp, const char *address, unsigned nworkers, char *err, size_t errlen);
/* The same, bound only: the address is the listener's (a busy port is an
 * error now) but connection attempts are refused until sharp_lsock_listen
 * (Envoy's warming listener: bound, listening once it is warm). */
sharp_lsock_t *sharp_lsock_bind(const struct sockaddr_storage *addr, socklen_t addrlen, uint32_t pipe_mode, unsigned flags,
                                bool udp, const char *address, unsigned nworkers, char *err, size_t errlen);
/* Listens on the descriptors no worker has taken yet (all of them: no
 * snapshot listed the socket). 0 (also when already listening), or -1 with
 * the reason. */
int sharp_lsock_listen(sharp_lsock_t *s, char *err, size_t errlen);
/* A worker's descriptor, now the worker's; -1 when it was taken or the
 * socket released. */
int sharp_lsock_take(sharp_lsock_t *s, unsigned worker);
/* Closes the descriptors no worker has taken (main thread, once no
 * snapshot it publishes lists the socket). */
void sharp_lsock_release(sharp_lsock_t *s);
sharp_lsock_t *sharp_lsock_ref(sharp_lsock_t *s);
/* The last reference releases (any thread) and frees. */
void sharp_lsock_unref(sharp_lsock_t *s);
/* Whether a listener on (addr, pipe_mode, flags, udp) can take over socket
 * s: the same address, socket options and protocol, and not an ephemeral port (port 0 binds a new
 * one each time). */
bool sharp_lsock_compatible(const sharp_lsock_t *s, const struct sockaddr_storage *addr, uint32_t pipe_mode,
                            unsigned flags, bool udp);

#endif
