/* listen_socket.c: see listen_socket.h. */
#include "listen_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static _Atomic uint64_t next_id = 1;

static sharp_lsock_t *lsock_new(const struct sockaddr_storage *addr, socklen_t addrlen, uint32_t pipe_mode,
                                unsigned flags, bool udp, const char *address, unsigned nworkers, bool listening,
                                char *err, size_t errlen)
{
    sharp_lsock_t *s = sharp_calloc(1, sizeof *s);
    atomic_init(&s->refs, 1);
    s->id = atomic_fetch_add(&next_id, 1);
    s->addr = *addr;
    s->addrlen = addrlen;
    s->pipe_mode = pipe_mode;
    s->udp = udp;
    s->flags = flags;
    snprintf(s->address, sizeof s->address, "%s", address);
    s->nfds = nworkers;
    s->fds = sharp_calloc(nworkers ? nworkers : 1, sizeof *s->fds);
    for (unsigned i = 0; i < nworkers; i++) atomic_init(&s->fds[i], -1);
    for (unsigned i = 0; i < nworkers; i++) {
        int fd;
        if (addr->ss_family == AF_UNIX && i > 0) {
            fd = fcntl(atomic_load(&s->fds[0]), F_DUPFD_CLOEXEC, 0);
            if (fd < 0) snprintf(err, errlen, "cannot duplicate the socket of '%s': %s", address, strerror(errno));
        } else if (udp) {
            fd = sharp_bind_socket((const struct sockaddr *)addr, addrlen, SOCK_DGRAM, 0, flags, address, err, errlen);
        } else {
            fd = listening ? sharp_listen_socket((const struct sockaddr *)addr, addrlen, pipe_mode, flags, address, err,
                                                 errlen)
                           : sharp_bind_socket((const struct sockaddr *)addr, addrlen, SOCK_STREAM, pipe_mode, flags,
                                               address, err, errlen);
        }
        if (fd < 0) {
            sharp_lsock_unref(s);
            return NULL;
        }
        atomic_store(&s->fds[i], fd);
    }
    s->listening = listening;
    return s;
}

sharp_lsock_t *sharp_lsock_open(const struct sockaddr_storage *addr, socklen_t addrlen, uint32_t pipe_mode, unsigned flags,
                                bool udp, const char *address, unsigned nworkers, char *err, size_t errlen)
{
    return lsock_new(addr, addrlen, pipe_mode, flags, udp, address, nworkers, true, err, errlen);
}

sharp_lsock_t *sharp_lsock_bind(const struct sockaddr_storage *addr, socklen_t addrlen, uint32_t pipe_mode, unsigned flags,
                                bool udp, const char *address, unsigned nworkers, char *err, size_t errlen)
{
    return lsock_new(addr, addrlen, pipe_mode, flags, udp, address, nworkers, udp, err, errlen);
}

int sharp_lsock_listen(sharp_lsock_t *s, char *err, size_t errlen)
{
    if (s->listening) return 0;
    for (uint32_t i = 0; i < s->nfds; i++) {
        int fd = atomic_load(&s->fds[i]);
        if (fd >= 0 && sharp_listen_fd(fd, s->address, err, errlen) < 0) return -1;
    }
    s->listening = true;
    return 0;
}

int sharp_lsock_take(sharp_lsock_t *s, unsigned worker)
{
    return worker < s->nfds ? atomic_exchange(&s->fds[worker], -1) : -1;
}

void sharp_lsock_release(sharp_lsock_t *s)
{
    for (uint32_t i = 0; s && i < s->nfds; i++) {
        int fd = atomic_exchange(&s->fds[i], -1);
        if (fd >= 0) close(fd);
    }
}

sharp_lsock_t *sharp_lsock_ref(sharp_lsock_t *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void sharp_lsock_unref(sharp_lsock_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    sharp_lsock_release(s);
    free((void *)s->fds);
    free(s);
}

static unsigned port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

bool sharp_lsock_compatible(const sharp_lsock_t *s, const struct sockaddr_storage *addr, uint32_t pipe_mode,
                            unsigned flags, bool udp)
{
    if (s->udp != udp || s->flags != flags) return false;
    if (addr->ss_family == AF_UNIX) {
        const struct sockaddr_un *a = (const void *)&s->addr, *b = (const void *)addr;
        /* an abstract name may hold NUL bytes: compare the whole path */
        return s->addr.ss_family == AF_UNIX && s->pipe_mode == pipe_mode &&
               !memcmp(a->sun_path, b->sun_path, sizeof a->sun_path);
    }
    /* a port chosen by the kernel (0) is never the same socket */
    if (!sharp_addr_equal(&s->addr, addr) || port_of(addr) == 0) return false;
    return addr->ss_family != AF_INET6 ||
           ((const struct sockaddr_in6 *)&s->addr)->sin6_scope_id == ((const struct sockaddr_in6 *)addr)->sin6_scope_id;
}
