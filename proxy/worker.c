/* worker.c: worker threads. Each runs its own loop with its own listening
 * sockets (SO_REUSEPORT, opened by the main thread so bind errors surface
 * at startup), connections, pools and stats shard. The main thread talks to
 * a worker only through atomics and its uv_async handle. */
#include "worker.h"
#include "listen_socket.h"
#include "retire.h"
#include "http/conn_manager.h"
#include "http/access_log_emit.h"
#include "log.h"
#include "overload.h"
#include "server.h"
#include "config/bootstrap.h"
#include "upstream/pool.h"
#include "upstream/async_post.h"
#include "upstream/original_dst.h"
#include "upstream/dfp.h"
#include "kernel/tcpinfo.h"
#include "upstream/shadow.h"
#include "http/otel.h"
#include "http/datadog.h"
#include "http/skywalking.h"
#include "http/zipkin.h"
#include "xds/lds.h"
#include "udp/udp_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

uint64_t sharp_worker_random(sharp_worker_t *w)
{
    return sharp_xorshift64s(&w->rng);
}

/* ---- deadlines (worker.h) ---- */

typedef struct sharp_deadline_timer {
    uv_timer_t t;
    sharp_deadline_t *d; /* NULL once stopped */
} sharp_deadline_timer_t;

static void free_deadline_timer(uv_handle_t *h)
{
    free(sharp_container_of((uv_timer_t *)h, sharp_deadline_timer_t, t));
}

static void on_own_deadline(uv_timer_t *t)
{
    sharp_deadline_timer_t *dt = sharp_container_of(t, sharp_deadline_timer_t, t);
    sharp_deadline_t *d = dt->d;
    uv_close((uv_handle_t *)t, free_deadline_timer);
    if (!d) return;
    d->own = NULL;
    d->cb(d);
}

static void on_deadline_list(uv_timer_t *t)
{
    sharp_deadline_list_t *l = sharp_container_of(t, sharp_deadline_list_t, timer);
    uint64_t now = uv_now(t->loop);
    /* a callback may stop or start other deadlines of this list: the first
     * one is read again each time. One started now for 0 ms runs in this
     * pass, as a libuv timer started for 0 ms from a timer callback does. */
    while (!sharp_dlist_empty(&l->pending)) {
        sharp_deadline_t *d = sharp_container_of(l->pending.next, sharp_deadline_t, link);
        if (d->due > now) {
            if (!uv_is_active((uv_handle_t *)t) || l->armed > d->due) {
                l->armed = d->due;
                uv_timer_start(t, on_deadline_list, d->due - now, 0);
            }
            return;
        }
        sharp_dlist_remove(&d->link);
        d->list = NULL;
        d->cb(d);
    }
}

void sharp_deadline_stop(sharp_deadline_t *d)
{
    if (d->list) {
        sharp_dlist_remove(&d->link);
        d->list = NULL; /* the list's timer stays armed: it re-arms when it fires */
    }
    if (d->own) {
        uv_timer_stop(&d->own->t);
        d->own->d = NULL;
        uv_close((uv_handle_t *)&d->own->t, free_deadline_timer);
        d->own = NULL;
    }
}

void sharp_deadline_start(sharp_worker_t *w, sharp_deadline_t *d, void (*cb)(sharp_deadline_t *d), uint64_t ms)
{
    sharp_deadline_stop(d);
    d->cb = cb;
    sharp_deadline_list_t *l = NULL, *unused = NULL;
    for (unsigned i = 0; i < SHARP_DEADLINE_LISTS && !w->stopping; i++) {
        sharp_deadline_list_t *c = &w->deadlines[i];
        if (sharp_dlist_empty(&c->pending)) {
            if (!unused) unused = c;
        } else if (c->ms == ms) {
            l = c;
            break;
        }
    }
    if (!l && unused) {
        l = unused;
        l->ms = ms;
    }
    if (!l) {
        sharp_deadline_timer_t *dt = sharp_calloc(1, sizeof *dt);
        uv_timer_init(&w->loop, &dt->t);
        dt->d = d;
        d->own = dt;
        uv_timer_start(&dt->t, on_own_deadline, ms, 0);
        return;
    }
    uint64_t now = uv_now(&w->loop);
    d->due = now + ms < now ? UINT64_MAX : now + ms; /* clamped as libuv clamps */
    sharp_dlist_push(&l->pending, &d->link);
    d->list = l;
    /* an unused list's timer may still be armed for a later time than this
     * (it served a longer duration) */
    if (!uv_is_active((uv_handle_t *)&l->timer) || l->armed > d->due) {
        l->armed = d->due;
        uv_timer_start(&l->timer, on_deadline_list, ms, 0);
    }
}

/* See worker.h. The due ones move to a list of this pass first: a
 * callback may stop any of them (unlinked from there) or start one again
 * (appended to the list's pending, for a later pass). */
bool sharp_deadlines_run_due(sharp_worker_t *w)
{
    bool ran = false;
    uint64_t now = uv_now(&w->loop);
    for (unsigned i = 0; i < SHARP_DEADLINE_LISTS; i++) {
        sharp_deadline_list_t *l = &w->deadlines[i];
        if (sharp_dlist_empty(&l->pending)) continue;
        sharp_deadline_t *first = sharp_container_of(l->pending.next, sharp_deadline_t, link);
        if (first->due > now) continue;
        sharp_dlist_t due;
        sharp_dlist_init(&due);
        while (!sharp_dlist_empty(&l->pending)) {
            sharp_deadline_t *d = sharp_container_of(l->pending.next, sharp_deadline_t, link);
            if (d->due > now) break;
            sharp_dlist_remove(&d->link);
            sharp_dlist_push(&due, &d->link);
        }
        while (!sharp_dlist_empty(&due)) {
            sharp_deadline_t *d = sharp_container_of(due.next, sharp_deadline_t, link);
            sharp_dlist_remove(&d->link);
            d->list = NULL;
            ran = true;
            d->cb(d);
        }
        /* nothing left for the list's timer: not woken for nothing */
        if (sharp_dlist_empty(&l->pending)) uv_timer_stop(&l->timer);
    }
    return ran;
}

void sharp_deadlines_init(sharp_worker_t *w)
{
    for (unsigned i = 0; i < SHARP_DEADLINE_LISTS; i++) {
        uv_timer_init(&w->loop, &w->deadlines[i].timer);
        sharp_dlist_init(&w->deadlines[i].pending);
    }
}

void sharp_deadlines_close(sharp_worker_t *w)
{
    for (unsigned i = 0; i < SHARP_DEADLINE_LISTS; i++) {
        uv_timer_stop(&w->deadlines[i].timer);
        uv_close((uv_handle_t *)&w->deadlines[i].timer, NULL);
    }
}

static bool accepting_stopped(const sharp_listener_config_t *l)
{
    return !l->bypass_overload_manager && sharp_overload_state(SHARP_OL_STOP_ACCEPTING_CONNECTIONS) >= 1000000u;
}

/* A pipe listener's connection (uv_listen). */
static void on_connection(uv_stream_t *server, int status)
{
    sharp_worker_t *w = server->loop->data;
    if (status < 0 || w->draining) return;
    sharp_listen_entry_t *e = (sharp_listen_entry_t *)server;
    const sharp_listener_config_t *l = e->listener;
    if (accepting_stopped(l)) {
        /* stop_accepting_connections saturated (Envoy's disableListeners):
         * the connection is left unaccepted, and libuv stops polling the
         * listening socket until it is; later ones wait in the kernel's
         * backlog. */
        e->accept_paused = true;
        return;
    }
    sharp_conn_accept(w, l, e, -1, NULL);
}

/* Out of descriptors: the reserved one is let go to accept and close what
 * waits (the clients see their connection closed), as libuv's uv_listen
 * does; else the level-triggered socket would wake the loop at once again. */
static void accept_out_of_fds(sharp_worker_t *w, sharp_listen_entry_t *e)
{
    sharp_debug(conn_handler, "listener '%s': out of file descriptors, closing waiting connections",
                e->listener->name);
    if (w->reserve_fd < 0) return;
    close(w->reserve_fd);
    w->reserve_fd = -1;
    int fd;
    while ((fd = accept4(e->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0 || errno == EINTR)
        if (fd >= 0) close(fd);
    w->reserve_fd = open("/", O_RDONLY | O_CLOEXEC);
}

/* One connection of a TCP listening socket, if one waits. */
static void accept_one(sharp_worker_t *w, sharp_listen_entry_t *e)
{
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int fd;
    do {
        fd = accept4(e->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        /* EAGAIN: another worker sharing the socket took it; ECONNABORTED
         * and the like: that connection is gone, the next readiness
         * brings the next one */
        if (errno == EMFILE || errno == ENFILE) accept_out_of_fds(w, e);
        return;
    }
    if (len < sizeof(sa_family_t)) peer.ss_family = AF_UNSPEC;
    sharp_conn_accept(w, e->listener, e, fd, &peer);
}

static void on_listen_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    sharp_worker_t *w = h->loop->data;
    sharp_listen_entry_t *e = (sharp_listen_entry_t *)h;
    if (status < 0) {
        /* an error condition on the socket: libuv stopped polling it */
        sharp_log_error("worker %u: listening socket of listener '%s' failed: %s", w->index, e->listener->name,
                        uv_strerror(status));
        return;
    }
    if (w->draining || accepting_stopped(e->listener)) {
        /* as for a pipe: the connection waits in the kernel's backlog and
         * the socket is not polled until accepting resumes */
        uv_poll_stop(h);
        e->accept_paused = !w->draining;
        return;
    }
    accept_one(w, e);
}

const sharp_listener_config_t *sharp_worker_listener_for(sharp_worker_t *w, const struct sockaddr_storage *a)
{
    const sharp_listener_config_t *wild = NULL;
    for (sharp_dlist_t *n = w->listens.next; n != &w->listens; n = n->next) {
        const sharp_listener_config_t *l = sharp_container_of(n, sharp_listen_entry_t, link)->listener;
        if (l->addr.ss_family != a->ss_family || l->udp) continue;
        if (sharp_addr_equal(&l->addr, a)) return l;
        if (wild) continue;
        if (a->ss_family == AF_INET) {
            const struct sockaddr_in *x = (const void *)&l->addr, *y = (const void *)a;
            if (x->sin_port == y->sin_port && x->sin_addr.s_addr == htonl(INADDR_ANY)) wild = l;
        } else if (a->ss_family == AF_INET6) {
            const struct sockaddr_in6 *x = (const void *)&l->addr, *y = (const void *)a;
            if (x->sin6_port == y->sin6_port && IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr)) wild = l;
        }
    }
    return wild;
}

/* stop_accepting_connections no longer saturated: take the connection each
 * paused listener left waiting, which makes libuv poll it again. */
static void resume_accepting(sharp_worker_t *w)
{
    for (sharp_dlist_t *n = w->listens.next; n != &w->listens; n = n->next) {
        sharp_listen_entry_t *e = sharp_container_of(n, sharp_listen_entry_t, link);
        if (!e->accept_paused || w->draining) continue;
        if (accepting_stopped(e->listener)) continue;
        e->accept_paused = false;
        if (e->fd >= 0) {
            uv_poll_start(&e->h.poll, UV_READABLE, on_listen_readable);
            accept_one(w, e);
        } else {
            sharp_conn_accept(w, e->listener, e, -1, NULL);
        }
    }
}

static void free_listen_entry(uv_handle_t *h)
{
    sharp_listen_entry_t *e = (sharp_listen_entry_t *)h;
    if (e->fd >= 0) close(e->fd); /* a poll handle does not own its descriptor */
    free(e);
}

/* Stops accepting on a socket: its descriptor closes (the worker's own).
 * A UDP socket's sessions end with it. */
static void close_listen_entry(sharp_listen_entry_t *e)
{
    sharp_dlist_remove(&e->link);
    sharp_udp_listener_close(e->udp);
    e->udp = NULL;
    uv_close(&e->h.handle, free_listen_entry);
}

static void close_listeners(sharp_worker_t *w)
{
    while (!sharp_dlist_empty(&w->listens))
        close_listen_entry(sharp_container_of(w->listens.next, sharp_listen_entry_t, link));
}

/* Accepts on fd for listener l; NULL (fd closed) when libuv refuses it. */
static sharp_listen_entry_t *open_listen_entry(sharp_worker_t *w, const sharp_listener_config_t *l, int fd)
{
    sharp_listen_entry_t *e = sharp_calloc(1, sizeof *e);
    e->fd = -1;
    /* A Unix listener is a pipe handle; its accepted connections are plain
     * stream fds that the connection manager reads and writes as it does
     * TCP ones (libuv accepts a pipe server's connection into a TCP handle
     * on Unix). */
    int rc;
    if (l->udp) {
        uv_udp_init(&w->loop, &e->h.udp);
        rc = uv_udp_open(&e->h.udp, fd);
        /* libuv sets SO_REUSEADDR on the socket it adopts: cleared again
         * (sharp_bind_socket), else any local user could bind the port */
        if (rc == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){0}, sizeof(int)) < 0)
            rc = uv_translate_sys_error(errno);
        e->h.handle.data = e;
        e->sock_id = l->sock->id;
        e->listener = l;
        if (rc == 0 && !(e->udp = sharp_udp_listener_open(w, l, &e->h.udp))) rc = UV_EINVAL;
        if (rc < 0) {
            sharp_log_error("worker %u: UDP listener on %s failed: %s", w->index, l->address, uv_strerror(rc));
            if (uv_fileno(&e->h.handle, &(uv_os_fd_t){0}) != 0) close(fd);
            uv_close(&e->h.handle, free_listen_entry);
            return NULL;
        }
        sharp_dlist_push(&w->listens, &e->link);
        return e;
    }
    if (l->addr.ss_family != AF_UNIX) {
        /* TCP: the worker accepts (sharp_listen_entry_t.fd) */
        e->sock_id = l->sock->id;
        e->listener = l;
        rc = listen(fd, 4096) < 0 ? uv_translate_sys_error(errno) : 0;
        if (rc == 0) rc = uv_poll_init_socket(&w->loop, &e->h.poll, fd);
        if (rc < 0) {
            /* no handle was made: the descriptor is still ours */
            sharp_log_error("worker %u: listen on %s failed: %s", w->index, l->address, uv_strerror(rc));
            close(fd);
            free(e);
            return NULL;
        }
        e->fd = fd;
        e->h.handle.data = e;
        rc = uv_poll_start(&e->h.poll, UV_READABLE, on_listen_readable);
        if (rc < 0) {
            sharp_log_error("worker %u: listen on %s failed: %s", w->index, l->address, uv_strerror(rc));
            uv_close(&e->h.handle, free_listen_entry);
            return NULL;
        }
        socklen_t len = sizeof e->local;
        e->fixed_local = getsockname(fd, (struct sockaddr *)&e->local, &len) == 0 && !sharp_addr_is_any(&e->local);
        sharp_dlist_push(&w->listens, &e->link);
        return e;
    }
    uv_pipe_init(&w->loop, &e->h.pipe, 0);
    rc = uv_pipe_open(&e->h.pipe, fd);
    e->h.handle.data = e;
    e->sock_id = l->sock->id;
    e->listener = l;
    if (rc == 0) rc = uv_listen(&e->h.stream, 4096, on_connection);
    if (rc < 0) {
        sharp_log_error("worker %u: listen on %s failed: %s", w->index, l->address, uv_strerror(rc));
        /* the handle owns the descriptor once opened; otherwise close it here */
        if (uv_fileno(&e->h.handle, &(uv_os_fd_t){0}) != 0) close(fd);
        uv_close(&e->h.handle, free_listen_entry);
        return NULL;
    }
    sharp_dlist_push(&w->listens, &e->link);
    return e;
}

/* Makes the worker accept on the listeners of snapshot s: a socket it
 * already accepts on takes the listener's version in s (new connections
 * use it from now on, and no connection attempt meets a closed socket), a
 * new one is opened, one s no longer lists is closed. A draining worker
 * opens nothing. Counts Envoy's listener_create_success per listener
 * version the worker starts serving, listener_create_failure per socket it
 * cannot listen on. -1 when one failed. */
static int sync_listeners(sharp_worker_t *w, const sharp_snapshot_t *s)
{
    const sharp_server_t *srv = w->server;
    int rc = 0;
    for (sharp_dlist_t *n = w->listens.next; n != &w->listens; n = n->next)
        sharp_container_of(n, sharp_listen_entry_t, link)->seen = false;
    for (uint32_t i = 0; i < s->nlisteners; i++) {
        const sharp_listener_config_t *l = s->listeners[i];
        if (!l->sock) continue;
        sharp_listen_entry_t *e = NULL;
        for (sharp_dlist_t *n = w->listens.next; n != &w->listens && !e; n = n->next) {
            sharp_listen_entry_t *c = sharp_container_of(n, sharp_listen_entry_t, link);
            if (c->sock_id == l->sock->id) e = c;
        }
        if (e) {
            e->seen = true;
            if (e->listener != l) {
                e->listener = l;
                if (e->udp) sharp_udp_listener_update(e->udp, l);
                sharp_counter_inc(w->stats, srv->st.listener_create_success);
            }
            continue;
        }
        if (w->draining) continue;
        int fd = sharp_lsock_take(l->sock, w->index);
        if (fd < 0) continue; /* released: a later snapshot no longer lists it */
        e = open_listen_entry(w, l, fd);
        if (!e) {
            sharp_counter_inc(w->stats, srv->st.listener_create_failure);
            rc = -1;
            continue;
        }
        e->seen = true;
        sharp_counter_inc(w->stats, srv->st.listener_create_success);
    }
    sharp_dlist_t *n = w->listens.next;
    while (n != &w->listens) {
        sharp_listen_entry_t *e = sharp_container_of(n, sharp_listen_entry_t, link);
        n = n->next;
        if (!e->seen) close_listen_entry(e);
    }
    return rc;
}

static sharp_pool_t *new_pool(sharp_worker_t *w, sharp_cluster_t *c, sharp_host_t *h, int prio, bool h2)
{
    sharp_pool_t *p = sharp_pool_create(&w->upstream_env, c, h, (sharp_priority_t)prio);
    if (h2) sharp_pool_use_http2(p);
    return p;
}

/* The balancer over cl->set, from the shape the main thread made with the
 * set; `reuse`: the balancer's scratch memory is kept (a set adopted). */
static void build_lb(sharp_worker_t *w, sharp_cluster_local_t *cl, bool reuse)
{
    sharp_cluster_t *c = cl->cluster;
    sharp_lb_init_shaped(&cl->lb, c->lb_policy, cl->set->hosts, cl->set->nhosts, sharp_worker_random(w),
                         cl->set->lb_shape, reuse ? &cl->lb : NULL);
    cl->lb.choice_count = c->choice_count;
    cl->lb.panic_threshold = c->panic_threshold;
    cl->lb.active_request_bias = c->active_request_bias;
    cl->lb.stats = w->stats;
    cl->lb.st = &c->st;
    if (c->zone_on)
        sharp_lb_set_zone(&cl->lb, &c->zone, c->local_locality, cl->zone_local ? &cl->zone_local->set : NULL);
    if (c->locality_weighted) sharp_lb_set_locality_weighted(&cl->lb);
    sharp_subset_lbs_init(&cl->subsets, c->subset, cl->set->subsets, &cl->lb);
}

/* A worker's balancer and pools for cluster c, over the host set the main
 * thread left for this worker (it does so before handing over a snapshot
 * with a new cluster), else, while the workers are set up on the main
 * thread, the cluster's current set. */
static sharp_cluster_local_t *cluster_local_new(sharp_worker_t *w, sharp_cluster_t *c)
{
    sharp_cluster_local_t *cl = sharp_calloc(1, sizeof *cl);
    cl->cluster = sharp_cluster_ref(c);
    cl->worker = w;
    cl->set = w->index < c->npending ? atomic_exchange(&c->pending[w->index], NULL) : NULL;
    if (c->odst) {
        /* its hosts come from sharp_odst_choose, not from a set */
        sharp_hostset_release(cl->set);
        cl->set = sharp_hostset_new(NULL, 0, 0);
    }
    if (!cl->set) cl->set = sharp_hostset_ref(c->set);
    build_lb(w, cl, false);
    return cl;
}

sharp_pool_t *sharp_cluster_pool_new(sharp_cluster_local_t *cl, int prio, uint32_t i, bool h2)
{
    sharp_pool_t ***slot = h2 ? &cl->h2_pools[prio] : &cl->pools[prio];
    uint32_t n = cl->set->nhosts;
    if (i >= n) abort(); /* a host of the worker's set (sharp_cluster_local_pos) */
    if (!*slot) *slot = sharp_calloc(n, sizeof **slot);
    if (!(*slot)[i]) (*slot)[i] = new_pool(cl->worker, cl->cluster, cl->set->hosts[i], prio, h2);
    return (*slot)[i];
}

/* The last view listing the cluster went: its pools retire (a stopping
 * worker destroys them), and the cluster reference goes. */
static void cluster_local_unref(sharp_worker_t *w, sharp_cluster_local_t *cl)
{
    if (--cl->refs) return;
    for (int prio = 0; prio < SHARP_NPRIORITIES; prio++) {
        for (uint32_t h = 0; h < cl->set->nhosts; h++) {
            sharp_pool_t *p = cl->pools[prio] ? cl->pools[prio][h] : NULL, *p2 = cl->h2_pools[prio] ? cl->h2_pools[prio][h] : NULL;
            if (p) (w->stopping ? sharp_pool_destroy : sharp_pool_retire)(p);
            if (p2) (w->stopping ? sharp_pool_destroy : sharp_pool_retire)(p2);
        }
        free(cl->pools[prio]);
        free(cl->h2_pools[prio]);
    }
    sharp_odst_local_free(cl, w->stopping);
    sharp_subset_lbs_destroy(&cl->subsets);
    sharp_lb_destroy(&cl->lb);
    sharp_hostset_release(cl->set);
    sharp_cluster_unref(cl->cluster);
    sharp_cluster_local_t *zl = cl->zone_local;
    free(cl);
    if (zl && zl != cl) cluster_local_unref(w, zl);
}

/* Points a zone-aware cluster's balancer at the view's local cluster (the
 * one cluster_manager.local_cluster_name names, when the snapshot has it). */
static void link_zone_local(sharp_worker_t *w, sharp_worker_view_t *v, sharp_cluster_local_t *cl)
{
    sharp_cluster_t *c = cl->cluster;
    if (!c->zone_on) return;
    int32_t i = c->zone_local_cluster ? sharp_snapshot_cluster_index(v->snap, c->zone_local_cluster) : -1;
    sharp_cluster_local_t *target = i >= 0 ? v->clusters[i] : NULL;
    if (target == cl->zone_local) return;
    sharp_cluster_local_t *old = cl->zone_local;
    if (target && target != cl) target->refs++;
    cl->zone_local = target;
    sharp_lb_set_zone(&cl->lb, &c->zone, c->local_locality, target ? &target->set : NULL);
    sharp_subset_lbs_rezone(&cl->subsets, &cl->lb);
    if (old && old != cl) cluster_local_unref(w, old);
}

/* A view of snapshot s, keeping the balancers and pools of the clusters
 * the previous view `old` also has (the same cluster object: unchanged by
 * the update), found by name in the old snapshot's index: a push of 10,000
 * clusters costs the worker's loop 10,000 lookups, not 10^8 comparisons. */
static sharp_worker_view_t *view_new(sharp_worker_t *w, sharp_snapshot_t *s, const sharp_worker_view_t *old)
{
    sharp_worker_view_t *v = sharp_calloc(1, sizeof *v);
    v->snap = sharp_snapshot_ref(s);
    v->refs = 1;
    v->clusters = sharp_calloc(s->nclusters ? s->nclusters : 1, sizeof *v->clusters);
    for (uint32_t i = 0; i < s->nclusters; i++) {
        sharp_cluster_local_t *cl = NULL;
        int32_t k = old ? sharp_snapshot_cluster_index(old->snap, s->clusters[i]->name) : -1;
        if (k >= 0 && old->snap->clusters[k] == s->clusters[i]) cl = old->clusters[k];
        if (!cl) cl = cluster_local_new(w, s->clusters[i]);
        cl->refs++;
        v->clusters[i] = cl;
    }
    for (uint32_t i = 0; i < s->nclusters; i++) link_zone_local(w, v, v->clusters[i]);
    return v;
}

void sharp_view_unref(sharp_worker_view_t *v)
{
    if (!v || --v->refs) return;
    for (uint32_t i = 0; i < v->snap->nclusters; i++) cluster_local_unref(v->worker, v->clusters[i]);
    free(v->clusters);
    sharp_snapshot_unref(v->snap);
    free(v);
}

sharp_cluster_t *sharp_view_cluster(const sharp_worker_view_t *v, const char *name, sharp_cluster_local_t **cl)
{
    int32_t i = sharp_snapshot_cluster_index(v->snap, name);
    if (i < 0) return NULL;
    if (cl) *cl = v->clusters[i];
    return v->snap->clusters[i];
}

static void setup_clusters(sharp_worker_t *w)
{
    w->view = view_new(w, w->snap, NULL);
    w->view->worker = w;
}

/* For each host of the new set, its index in the old one, or -1: a host
 * kept across an update (DNS, EDS) is the same object. The main thread
 * wrote it down when it made the set (ns->prev) for the set before it,
 * which is the worker's unless it skipped one; else a hash of the old
 * set's hosts makes it linear: a 1,000-endpoint assignment on the worker's
 * loop costs microseconds, not a million comparisons. */
static int32_t *match_hosts(const sharp_hostset_t *os, const sharp_hostset_t *ns, bool *owned)
{
    *owned = false;
    if (ns->prev && ns->generation == os->generation + 1) return ns->prev;
    *owned = true;
    int32_t *where = sharp_calloc(ns->nhosts ? ns->nhosts : 1, sizeof *where);
    uint32_t cap = 16;
    while (cap < 2 * os->nhosts) cap <<= 1;
    int32_t *table = sharp_calloc(cap, sizeof *table); /* old index + 1, 0 = empty */
#define HOST_SLOT(h_) ((uint32_t)(((uintptr_t)(h_) >> 4) * 2654435761u) & (cap - 1))
    for (uint32_t j = 0; j < os->nhosts; j++) {
        uint32_t k = HOST_SLOT(os->hosts[j]);
        while (table[k]) k = (k + 1) & (cap - 1);
        table[k] = (int32_t)j + 1;
    }
    for (uint32_t i = 0; i < ns->nhosts; i++) {
        where[i] = -1;
        for (uint32_t k = HOST_SLOT(ns->hosts[i]); table[k]; k = (k + 1) & (cap - 1))
            if (os->hosts[table[k] - 1] == ns->hosts[i]) {
                where[i] = table[k] - 1;
                break;
            }
    }
#undef HOST_SLOT
    free(table);
    return where;
}

/* Moves a cluster to a newer host set, between two events: no request is
 * between choosing a host and taking its pool. Pools of hosts in both sets
 * move to their new positions; hosts that are new get pools; pools of
 * hosts that left retire: they take no new request (nothing finds them any
 * more), their requests in flight complete, and they free themselves with
 * their last connection. What depends on the hosts alone (the balancer's
 * levels, the positions in the previous set) the main thread made with the
 * set, and the old set goes back to it (sharp_hostset_release): a cluster
 * with no pool yet costs the worker the same whatever its size, one with
 * pools a move per host. */
static void apply_hostset(sharp_worker_t *w, sharp_cluster_local_t *cl, sharp_hostset_t *ns)
{
    sharp_hostset_t *os = cl->set;
    int32_t *where = NULL;
    bool where_owned = false;
    for (int prio = 0; prio < SHARP_NPRIORITIES; prio++) {
        for (int kind = 0; kind < 2; kind++) {
            sharp_pool_t ***slot = kind ? &cl->h2_pools[prio] : &cl->pools[prio];
            if (!*slot) continue;
            if (!where) where = match_hosts(os, ns, &where_owned);
            sharp_pool_t **old = *slot, **pools = sharp_calloc(ns->nhosts ? ns->nhosts : 1, sizeof *pools);
            /* a set lists a host once; if it did twice, the second gets a
             * pool of its own when first used; new hosts too */
            for (uint32_t i = 0; i < ns->nhosts; i++)
                if (where[i] >= 0 && (uint32_t)where[i] < os->nhosts && old[where[i]]) {
                    pools[i] = old[where[i]];
                    old[where[i]] = NULL;
                }
            for (uint32_t j = 0; j < os->nhosts; j++)
                if (old[j]) sharp_pool_retire(old[j]);
            free(old);
            *slot = pools;
        }
    }
    if (where_owned) free(where);
    sharp_subset_lbs_destroy(&cl->subsets);
    sharp_lb_destroy_keep(&cl->lb);
    cl->set = ns;
    build_lb(w, cl, true);
    sharp_hostset_release(os);
}

/* The clusters queued since the last wake-up, oldest first. Each was
 * taken off the queue (queued cleared) before its pending set is taken, so
 * a set the main thread publishes meanwhile queues the cluster again. */
static sharp_cluster_t *take_hostset_queue(sharp_worker_t *w)
{
    sharp_cluster_t *c = atomic_exchange(&w->hostset_queue, NULL), *fifo = NULL;
    while (c) {
        sharp_cluster_t *next = c->queue_next[w->index];
        c->queue_next[w->index] = fifo;
        fifo = c;
        c = next;
    }
    for (c = fifo; c; c = c->queue_next[w->index]) atomic_store(&c->queued[w->index], false);
    return fifo;
}

/* The clusters of the current view the main thread published a host set
 * for: the queue names them, so a wake-up costs nothing per cluster of the
 * view. A queued cluster the view does not have (not yet, or no more)
 * keeps its pending set for the view that takes it (cluster_local_new). */
static void check_hostsets(sharp_worker_t *w)
{
    if (!atomic_load_explicit(&w->hostset_queue, memory_order_relaxed)) return;
    sharp_cluster_t *c = take_hostset_queue(w);
    while (c) {
        sharp_cluster_t *next = c->queue_next[w->index];
        int32_t k = w->view && !w->stopping ? sharp_snapshot_cluster_index(w->view->snap, c->name) : -1;
        sharp_cluster_local_t *cl = k >= 0 && w->view->clusters[k]->cluster == c ? w->view->clusters[k] : NULL;
        sharp_hostset_t *ns = cl ? atomic_exchange(&c->pending[w->index], NULL) : NULL;
        if (ns && c->odst) {
            /* the cleanup may have removed hosts: their pools retire */
            sharp_hostset_release(ns);
            sharp_odst_local_sweep(cl);
        } else if (ns) {
            apply_hostset(w, cl, ns);
        }
        sharp_cluster_unref(c);
        c = next;
    }
}

void sharp_worker_set_hostset(sharp_worker_t *w, sharp_cluster_t *c)
{
    if (w->index >= c->npending) return;
    /* an older set the worker has not taken yet is dropped here */
    sharp_hostset_unref(atomic_exchange(&c->pending[w->index], sharp_hostset_ref(c->set)));
    if (!atomic_exchange(&c->queued[w->index], true)) {
        sharp_cluster_ref(c);
        c->queue_next[w->index] = atomic_load(&w->hostset_queue);
        while (!atomic_compare_exchange_weak(&w->hostset_queue, &c->queue_next[w->index], c))
            ;
    }
    uv_async_send(&w->wakeup);
}

/* A newer snapshot: new streams take a view of it, built now; the old view
 * goes once its last stream ends, retiring the pools of the clusters the
 * update replaced or removed. */
static void check_snapshot(sharp_worker_t *w)
{
    if (!atomic_load_explicit(&w->snap_pending, memory_order_relaxed)) return;
    sharp_snapshot_t *ns = atomic_exchange(&w->snap_pending, NULL);
    if (!ns) return;
    if (w->stopping || !w->view) {
        sharp_snapshot_unref(ns);
        return;
    }
    /* the host sets handed over with the previous view first: a kept
     * cluster's balancer moves to its newest set */
    check_hostsets(w);
    sharp_worker_view_t *old = w->view;
    w->view = view_new(w, ns, old);
    w->view->worker = w;
    /* the listeners before the snapshot goes: an entry keeps a pointer to
     * its listener, which the old snapshot may hold last */
    sync_listeners(w, ns);
    sharp_zipkin_sync(w, ns);
    sharp_otel_sync(w, ns);
    sharp_skywalking_sync(w, ns);
    sharp_datadog_sync(w, ns);
    sharp_snapshot_unref(w->snap);
    w->snap = ns; /* the handed-over reference */
    sharp_view_unref(old);
    sharp_debug(main, "worker %u: configuration version %llu", w->index, (unsigned long long)ns->version);
}

void sharp_worker_set_snapshot(sharp_worker_t *w, sharp_snapshot_t *snap)
{
    sharp_snapshot_unref(atomic_exchange(&w->snap_pending, sharp_snapshot_ref(snap)));
    uv_async_send(&w->wakeup);
}

/* Calls fn on every pool of the worker's current view: both protocols'
 * pools of a use_downstream_protocol_config cluster. (Pools of older views
 * still in use serve their last requests: they drain as they finish.) */
static void each_pool(sharp_worker_t *w, void (*fn)(struct sharp_pool *p))
{
    for (uint32_t i = 0; w->view && i < w->view->snap->nclusters; i++) {
        sharp_cluster_local_t *cl = w->view->clusters[i];
        for (int prio = 0; prio < SHARP_NPRIORITIES; prio++)
            for (uint32_t h = 0; h < cl->set->nhosts; h++) {
                if (cl->pools[prio] && cl->pools[prio][h]) fn(cl->pools[prio][h]);
                if (cl->h2_pools[prio] && cl->h2_pools[prio][h]) fn(cl->h2_pools[prio][h]);
            }
        sharp_odst_local_each_pool(cl, fn);
    }
}

/* Stopping: the connections are closed (their streams, holding views, are
 * gone), so the current view is the last; its pools are destroyed. */
static void teardown_clusters(sharp_worker_t *w)
{
    sharp_worker_view_t *v = w->view;
    w->view = NULL;
    sharp_view_unref(v);
    sharp_snapshot_unref(atomic_exchange(&w->snap_pending, NULL));
    for (sharp_cluster_t *c = take_hostset_queue(w), *next; c; c = next) {
        next = c->queue_next[w->index];
        sharp_cluster_unref(c);
    }
}

static void begin_drain(sharp_worker_t *w)
{
    if (w->draining) return;
    w->draining = true;
    close_listeners(w);
    sharp_conn_drain_all(w);
    each_pool(w, sharp_pool_close_idle);
}

/* Drains the pools of hosts that failed health checks or were ejected
 * since the last pass (upstream/cluster.h). */
static void check_host_drains(sharp_worker_t *w)
{
    uint64_t epoch = sharp_upstream_drain_epoch();
    if (epoch == w->drain_epoch || !w->view || w->stopping) return;
    w->drain_epoch = epoch;
    each_pool(w, sharp_pool_check_drain);
    sharp_conn_tcp_proxy_check_hosts(w);
}

/* A listener update started or ended the drain of listeners or chains
 * (xds/lds.h): after the snapshot without them, so that no later accept
 * takes them. */
static void check_listener_drains(sharp_worker_t *w)
{
    uint32_t epoch = sharp_lds_drain_epoch();
    if (epoch == w->listener_drain_epoch || w->stopping) return;
    w->listener_drain_epoch = epoch;
    sharp_conn_drain_listeners(w);
}

static void on_wakeup(uv_async_t *a)
{
    sharp_worker_t *w = a->data;
    sharp_runtime_snapshot_t *rt = atomic_exchange(&w->runtime_pending, NULL);
    if (rt) {
        sharp_runtime_snapshot_unref(w->runtime);
        w->runtime = rt;
        sharp_runtime_tls = rt;
    }
    check_snapshot(w);
    check_hostsets(w);
    check_host_drains(w);
    check_listener_drains(w);
    sharp_dfp_worker_poll(w); /* streams whose host a DNS cache resolved */
    /* between two events: no TLS context loaded from a slot is still in use */
    sharp_retire_quiescent(w->index);
    uint32_t og = sharp_overload_generation();
    if (og != w->overload_generation) {
        w->overload_generation = og;
        sharp_conn_overload_update(w);
        resume_accepting(w);
    }
    if (atomic_load(&w->drain_requested)) begin_drain(w);
    if (atomic_load(&w->stop_requested) && !w->stopping) {
        w->stopping = true;
        begin_drain(w);
        sharp_conn_close_all(w);
        sharp_shadow_abort_all(w); /* before their pools go */
        sharp_skywalking_stop_all(w); /* its streams, before the others in flight */
        sharp_async_post_cancel_all(w);
        sharp_zipkin_stop_all(w);
        sharp_otel_stop_all(w);
        sharp_datadog_stop_all(w);
        teardown_clusters(w);
        sharp_access_log_worker_flush(w);
        uv_timer_stop(&w->tick);
        uv_close((uv_handle_t *)&w->tick, NULL);
        uv_check_stop(&w->flush_check);
        uv_close((uv_handle_t *)&w->flush_check, NULL);
        uv_idle_stop(&w->flush_idle);
        uv_close((uv_handle_t *)&w->flush_idle, NULL);
        uv_close((uv_handle_t *)&w->wakeup, NULL);
        sharp_dispatcher_stats_stop(&w->dispatcher_stats);
        sharp_deadlines_close(w);
    }
}

static void on_flush_check(uv_check_t *h)
{
    sharp_worker_t *w = h->data;
    sharp_conn_flush_pending(w);
    /* a finished stream's end (its connection's close with HTTP/1.0) in
     * this turn, then what it wrote */
    if (!w->stopping && sharp_deadlines_run_due(w)) sharp_conn_flush_pending(w);
    if (sharp_dlist_empty(&w->flush_list)) uv_idle_stop(&w->flush_idle);
}

static void on_flush_idle(uv_idle_t *h)
{
    (void)h; /* only keeps poll from blocking; the check does the work */
}

void sharp_worker_want_flush(sharp_worker_t *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->flush_idle)) uv_idle_start(&w->flush_idle, on_flush_idle);
}

static void on_tick(uv_timer_t *t)
{
    sharp_worker_t *w = t->data;
    sharp_access_log_worker_flush(w);
    check_host_drains(w);
    sharp_heap_thread_tick(); /* this thread's free heap memory (mimalloc) */
    if (sharp_tcpinfo_on() && !w->stopping) each_pool(w, sharp_pool_tcpinfo_tick); /* kernel/tcpinfo.h */
}

static void worker_main(void *arg)
{
    sharp_worker_t *w = arg;
    sharp_runtime_tls = w->runtime;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* drain what close callbacks remain */
    while (uv_run(&w->loop, UV_RUN_NOWAIT)) {
    }
    sharp_heap_thread_exit();
}

int sharp_worker_init(sharp_worker_t *w)
{
    uv_loop_init(&w->loop);
    w->loop.data = w;
    sharp_dlist_init(&w->connections);
    sharp_dlist_init(&w->inspecting);
    sharp_dlist_init(&w->shadows);
    sharp_dlist_init(&w->zipkin_reporters);
    sharp_dlist_init(&w->async_posts);
    sharp_dlist_init(&w->dfp_waiters);
    sharp_dlist_init(&w->otel_reporters);
    sharp_dlist_init(&w->skywalking_reporters);
    sharp_dlist_init(&w->datadog_reporters);
    w->rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(w->index + 1) * 0xBF58476D1CE4E5B9ull) ^ sharp_now_ns();
    w->upstream_env = (sharp_upstream_env_t){&w->loop, w->stats, &w->rng, &w->draining, &w->stopping};
    w->reserve_fd = open("/", O_RDONLY | O_CLOEXEC);
    uv_async_init(&w->loop, &w->wakeup, on_wakeup);
    w->wakeup.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    sharp_dlist_init(&w->flush_list);
    uv_check_init(&w->loop, &w->flush_check);
    w->flush_check.data = w;
    uv_check_start(&w->flush_check, on_flush_check);
    uv_idle_init(&w->loop, &w->flush_idle);
    w->flush_idle.data = w;
    uv_timer_start(&w->tick, on_tick, 1000, 1000);
    if (w->server && w->server->config->enable_dispatcher_stats) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "listener_manager.worker_%u.dispatcher.", w->index);
        sharp_dispatcher_stats_start(&w->dispatcher_stats, &w->loop, w->server->stats, w->stats, prefix);
    }
    sharp_deadlines_init(w);
    sharp_access_log_worker_init(w);
    w->drain_epoch = sharp_upstream_drain_epoch();
    w->listener_drain_epoch = sharp_lds_drain_epoch();
    setup_clusters(w);
    sharp_dlist_init(&w->listens);
    sharp_zipkin_sync(w, w->snap);
    sharp_otel_sync(w, w->snap);
    sharp_skywalking_sync(w, w->snap);
    sharp_datadog_sync(w, w->snap);
    return sync_listeners(w, w->snap);
}

int sharp_worker_start(sharp_worker_t *w)
{
    if (sharp_worker_init(w) != 0) return -1;
    return uv_thread_create(&w->thread, worker_main, w);
}

void sharp_worker_drain(sharp_worker_t *w)
{
    atomic_store(&w->drain_requested, true);
    uv_async_send(&w->wakeup);
}

void sharp_worker_stop(sharp_worker_t *w)
{
    atomic_store(&w->stop_requested, true);
    uv_async_send(&w->wakeup);
}

void sharp_worker_set_runtime(sharp_worker_t *w, sharp_runtime_snapshot_t *snap)
{
    /* an older snapshot the worker has not taken yet is dropped here */
    sharp_runtime_snapshot_unref(atomic_exchange(&w->runtime_pending, sharp_runtime_snapshot_ref(snap)));
    uv_async_send(&w->wakeup);
}

void sharp_worker_join(sharp_worker_t *w)
{
    uv_thread_join(&w->thread);
    sharp_worker_release(w);
}

void sharp_worker_release(sharp_worker_t *w)
{
    /* what the main thread queued after the worker's last wake-up */
    for (sharp_cluster_t *c = take_hostset_queue(w), *next; c; c = next) {
        next = c->queue_next[w->index];
        sharp_cluster_unref(c);
    }
    sharp_runtime_snapshot_unref(atomic_exchange(&w->runtime_pending, NULL));
    sharp_runtime_snapshot_unref(w->runtime);
    w->runtime = NULL;
    sharp_access_log_worker_free(w);
    if (w->reserve_fd >= 0) close(w->reserve_fd);
    w->reserve_fd = -1;
    uv_loop_close(&w->loop);
}
