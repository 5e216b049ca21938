/* worker.h: a worker thread: one libuv loop, its own listening sockets
 * (SO_REUSEPORT), downstream connections, upstream connection pools and
 * stats shard. Nothing on a worker is touched by another thread except
 * through uv_async messages and atomics. */
#ifndef SHARP_WORKER_H
#define SHARP_WORKER_H

#include "common.h"
#include "runtime.h"
#include "snapshot.h"
#include "stats.h"
#include "upstream/env.h"
#include "upstream/lb.h"
#include "upstream/subset.h"
#include "dispatcher_stats.h"

#include <uv.h>

struct sharp_server;
struct sharp_pool;
struct sharp_access_log_writer;

/* Per worker, per cluster: load balancer and one pool per host and
 * priority (as Envoy, a HIGH-priority route's requests get their own
 * connections, counted in the HIGH circuit breakers). A cluster with
 * use_downstream_protocol_config has a second pool per host and priority,
 * its HTTP/2 one, as Envoy keys its pools by protocol too; pools[] are then
 * the HTTP/1.1 ones. A pool, and each array of them, is made when a request
 * first needs it (sharp_cluster_pool), as Envoy's cluster manager makes
 * its pools: a push of 1,000 clusters costs the worker's loop their
 * balancers, not 2,000 pools, most of which would never see a request. */
typedef struct sharp_cluster_local {
    sharp_cluster_t *cluster; /* a reference */
    struct sharp_worker *worker;
    /* The host set lb and pools are built over (the worker's reference);
     * a newer one waits in cluster->pending[worker] until the next
     * wake-up (a DNS or EDS cluster's membership changed). */
    sharp_hostset_t *set;
    sharp_lb_t lb;
    /* lb_subset_config: a balancer per subset of set (upstream/subset.h);
     * lb stays the one over all hosts (the ANY_ENDPOINT fallback) */
    sharp_subset_lbs_t subsets;
    /* [priority][i], i indexed like set->hosts; NULL arrays and entries
     * until first used */
    struct sharp_pool **pools[SHARP_NPRIORITIES];
    struct sharp_pool **h2_pools[SHARP_NPRIORITIES]; /* likewise; only cluster->downstream_protocol uses them */
    /* The views that list it (worker thread only): an unchanged cluster's
     * balancer and pools pass from one view to the next; when the last
     * view holding it goes, its pools retire (requests in flight finish,
     * then they close). */
    uint32_t refs;
    /* Zone-aware routing: the worker's state of the local cluster
     * (cluster_manager.local_cluster_name) whose host set the balancer
     * reads; a reference unless it is this cluster itself. NULL without one. */
    struct sharp_cluster_local *zone_local;
    /* ORIGINAL_DST: the worker's hosts and their pools, made on demand
     * (upstream/original_dst.h); set, lb and pools stay empty for it */
    struct sharp_odst_local *odst;
} sharp_cluster_local_t;

/* What a worker serves with: a config snapshot and the worker's balancers
 * and pools for its clusters (clusters[i] for snap->clusters[i]). The
 * worker holds its current view; each stream holds the view current when
 * it began (a plain count: only the worker touches it), so a request keeps
 * its route table, clusters and pools until it ends while the next request
 * takes the newer view (config from xDS, xds/xds.h). */
typedef struct sharp_worker_view {
    struct sharp_worker *worker;
    sharp_snapshot_t *snap; /* a reference */
    sharp_cluster_local_t **clusters;
    uint32_t refs;
} sharp_worker_view_t;

/* The view's cluster of this name and its local state (*cl), NULL when the
 * view has none. */
sharp_cluster_t *sharp_view_cluster(const sharp_worker_view_t *v, const char *name, sharp_cluster_local_t **cl);
void sharp_view_unref(sharp_worker_view_t *v);

/* A host of the cluster for a request: its subset when the cluster has
 * subsets (the request's match criteria crit[0..len), has_crit false when
 * it has none), else the cluster's balancer. */
static inline sharp_host_t *sharp_cluster_choose(sharp_cluster_local_t *cl, bool has_crit, const uint8_t *crit,
                                                 size_t len)
{
    if (cl->subsets.plan) return sharp_subset_choose(&cl->subsets, &cl->lb, has_crit, crit, len);
    return sharp_lb_choose(&cl->lb);
}

/* The position of h in the worker's set: its index, which the main thread
 * keeps as the position in the newest set (always right for a STATIC
 * cluster), checked, else a search (a DNS cluster whose newer set this
 * worker has not taken yet). */
static inline uint32_t sharp_cluster_local_pos(const sharp_cluster_local_t *cl, const sharp_host_t *h)
{
    const sharp_hostset_t *s = cl->set;
    uint32_t i = atomic_load_explicit(&h->index, memory_order_relaxed);
    if (i < s->nhosts && s->hosts[i] == h) return i;
    for (i = 0; i < s->nhosts; i++)
        if (s->hosts[i] == h) break;
    return i;
}

/* The pool of host h (chosen by this worker's lb, so in its set) for a
 * request of this priority whose downstream protocol is `protocol`
 * (stream_info's "HTTP/2", "HTTP/1.1", "HTTP/1.0"): Envoy's
 * upstreamHttpProtocol(downstream protocol). Only a
 * use_downstream_protocol_config cluster looks at the protocol: HTTP/2 goes
 * over HTTP/2, everything else over HTTP/1.1 (Envoy has no HTTP/1.0
 * upstream). */
struct sharp_pool *sharp_cluster_pool_new(sharp_cluster_local_t *cl, int prio, uint32_t i, bool h2);
static inline struct sharp_pool *sharp_cluster_pool(sharp_cluster_local_t *cl, int prio, const sharp_host_t *h,
                                                    const char *protocol)
{
    uint32_t i = sharp_cluster_local_pos(cl, h);
    bool h2 = cl->cluster->downstream_protocol && protocol && strcmp(protocol, "HTTP/2") == 0;
    struct sharp_pool **a = h2 ? cl->h2_pools[prio] : cl->pools[prio];
    return a && a[i] ? a[i] : sharp_cluster_pool_new(cl, prio, i, h2);
}

typedef struct sharp_dlist {
    struct sharp_dlist *prev, *next;
} sharp_dlist_t;

static inline void sharp_dlist_init(sharp_dlist_t *l)
{
    l->prev = l->next = l;
}
static inline bool sharp_dlist_empty(const sharp_dlist_t *l)
{
    return l->next == l;
}
static inline void sharp_dlist_push(sharp_dlist_t *head, sharp_dlist_t *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void sharp_dlist_remove(sharp_dlist_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Deadlines: one-shot timers of the request path (the router's route,
 * per-try and max-stream-duration timeouts, a stream's deferred finish)
 * that almost every request starts. A libuv timer costs a heap insertion
 * and removal among all the worker's timers plus a handle to allocate and
 * close; a deadline is a node in a list of deadlines of one duration,
 * which are due in the order they were started (the loop's clock only goes
 * forward), so starting appends and stopping unlinks. Each list has one
 * libuv timer, armed for a time at or before its first deadline: stopping
 * the first leaves it armed, and when it fires it runs what is due and
 * re-arms for the next one. A duration without a list of its own (more
 * distinct durations pending at once than lists) gets a libuv timer of its
 * own. Deadlines due when the loop reaches its check phase (those started
 * for 0 ms in that turn) run there, after the turn's deferred flushes, not
 * in the next turn's timers. */
struct sharp_deadline_list;
typedef struct sharp_deadline {
    sharp_dlist_t link;
    struct sharp_deadline_list *list; /* the list it waits in; NULL: none */
    struct sharp_deadline_timer *own; /* its own libuv timer instead; NULL: none */
    uint64_t due;                     /* loop time (ms) it is due at, in a list */
    void (*cb)(struct sharp_deadline *d);
} sharp_deadline_t;

#define SHARP_DEADLINE_LISTS 8
typedef struct sharp_deadline_list {
    uv_timer_t timer;
    sharp_dlist_t pending; /* earliest first */
    uint64_t ms;           /* the duration of its deadlines, while any is pending */
    uint64_t armed;        /* when the timer is due, while it is active */
} sharp_deadline_list_t;

struct sharp_worker;
/* Starts (or restarts) d to call cb after ms milliseconds of loop time. */
void sharp_deadline_start(struct sharp_worker *w, sharp_deadline_t *d, void (*cb)(sharp_deadline_t *d), uint64_t ms);
/* Stops d if pending; a zeroed deadline is not pending. */
void sharp_deadline_stop(sharp_deadline_t *d);
/* The worker's lists' timers: set up with its loop, closed when it stops
 * (a deadline started after that gets a timer of its own). */
void sharp_deadlines_init(struct sharp_worker *w);
void sharp_deadlines_close(struct sharp_worker *w);
/* The check phase's pass (after the turn's deferred flushes): runs the
 * deadlines due now, those started for 0 ms while the loop polled or ran
 * callbacks (a stream's deferred finish or reset), in the turn that
 * started them instead of in the next turn's timers. A connection or
 * stream handle closed there would otherwise leave a closing handle, which
 * makes libuv poll once more without waiting (an epoll_wait per request).
 * Only what was due before the pass runs; one started by a callback waits
 * for its list's timer. True when any ran. */
bool sharp_deadlines_run_due(struct sharp_worker *w);
static inline bool sharp_deadline_pending(const sharp_deadline_t *d)
{
    return d->list || d->own;
}

/* A listening socket: TCP, a Unix domain socket (a pipe address), or a
 * UDP listener's datagram socket. */
typedef union sharp_listen_handle {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_udp_t udp;
    uv_poll_t poll; /* TCP: the worker accepts itself (sharp_listen_entry_t.fd) */
} sharp_listen_handle_t;

/* One listening socket the worker accepts on (listen_socket.h), open as
 * long as the worker's snapshot lists a listener on it: a listener update
 * that keeps the address changes only `listener`, the version new
 * connections take (LDS). */
typedef struct sharp_listen_entry {
    sharp_listen_handle_t h; /* first: the handle's callbacks find the entry */
    uint64_t sock_id;
    const sharp_listener_config_t *listener; /* held by the worker's snapshot */
    bool accept_paused; /* a connection is waiting, not accepted (stop_accepting_connections) */
    bool seen;
    /* TCP: the listening socket, watched by h.poll and accepted from one
     * connection per readiness, with the peer's address from accept4 (as
     * nginx without multi_accept). uv_listen accepts until EAGAIN, one
     * failing accept4 per wakeup, and leaves the address to a
     * getpeername. -1 for a pipe (uv_listen) or UDP. Closed with h. */
    int fd;
    /* TCP on one address (not 0.0.0.0 or [::]): the address it is bound
     * to, every accepted connection's local address (Envoy's listener
     * asks the kernel only when listening on the any address) */
    bool fixed_local;
    struct sockaddr_storage local;
    struct sharp_udp_listener *udp; /* a UDP listener's sessions (udp/udp_proxy.h), else NULL */
    sharp_dlist_t link; /* in worker->listens */
} sharp_listen_entry_t;

typedef struct sharp_worker {
    unsigned index; /* 0-based */
    struct sharp_server *server;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t wakeup;
    /* a descriptor held back for when accept4 fails with EMFILE/ENFILE:
     * closed to accept and close what waits (libuv's uv_listen does the
     * same), so a level-triggered listening socket does not spin */
    int reserve_fd;
    uv_timer_t tick; /* 1 s housekeeping: access log flush, drain checks */
    sharp_stats_shard_t *stats;
    sharp_snapshot_t *snap;
    /* The runtime snapshot this worker reads (sharp_runtime_tls on its
     * thread), and the next one the main thread hands over: the worker
     * takes it at its next wake-up, between two events of its loop. */
    sharp_runtime_snapshot_t *runtime;
    _Atomic(sharp_runtime_snapshot_t *) runtime_pending;
    /* the current view (holding a reference to snap), NULL before the
     * worker is set up and once it stopped */
    sharp_worker_view_t *view;
    /* a newer snapshot the main thread handed over (sharp_worker_set_snapshot),
     * taken at the next wake-up */
    _Atomic(sharp_snapshot_t *) snap_pending;
    /* clusters with a newer host set for this worker (cluster.h's
     * pending), each holding a reference, linked by their queue_next:
     * pushed by the main thread, taken whole at the wake-up */
    _Atomic(struct sharp_cluster *) hostset_queue;
    sharp_dlist_t listens; /* sharp_listen_entry_t: the sockets it accepts on */
    sharp_dlist_t connections;       /* downstream connections */
    sharp_dlist_t inspecting;        /* accepted, listener filters still reading (no filter chain yet) */
    sharp_dlist_t flush_list;        /* connections holding a response head not yet written */
    uv_check_t flush_check;          /* writes those heads at the end of each loop turn */
    sharp_dispatcher_stats_t dispatcher_stats; /* enable_dispatcher_stats */
    /* active while flush_list is not empty, so that the loop does not block
     * in poll before the check runs (a flush asked from a timer callback
     * would otherwise wait for the next I/O event or timer) */
    uv_idle_t flush_idle;
    struct sharp_access_log_writer **log_writers; /* one per access log of the snapshot (flat) */
    uint32_t nlog_writers;
    uint64_t rng;
    uint64_t drain_epoch; /* sharp_upstream_drain_epoch() of the last pass over the pools */
    uint32_t listener_drain_epoch; /* sharp_lds_drain_epoch() of the last pass over the connections */
    _Atomic bool stop_requested;
    _Atomic bool drain_requested;
    uint32_t overload_generation; /* overload state changes last applied */
    uint32_t overload_reset_state; /* reset_high_memory_stream state last acted on */
    bool draining;
    bool stopping;
    _Atomic uint32_t active_connections;
    sharp_dlist_t shadows;           /* mirrored requests in flight (upstream/shadow.h) */
    sharp_dlist_t zipkin_reporters;  /* one per Zipkin collector (http/zipkin.h) */
    sharp_dlist_t otel_reporters;    /* one per OpenTelemetry collector (http/otel.h) */
    sharp_dlist_t skywalking_reporters; /* one per SkyWalking collector (http/skywalking.h) */
    struct sharp_sw_index *skywalking_index; /* the current configuration's tracers' reporters */
    sharp_dlist_t datadog_reporters; /* one per Datadog agent (http/datadog.h) */
    sharp_dlist_t async_posts;       /* their reports in flight (upstream/async_post.h) */
    /* streams waiting for a dynamic forward proxy's DNS cache
     * (upstream/dfp.h) and the caches' epoch of the last pass over them */
    sharp_dlist_t dfp_waiters;
    uint64_t dfp_epoch;
    sharp_upstream_env_t upstream_env; /* what this worker's pools use of it */
    sharp_deadline_list_t deadlines[SHARP_DEADLINE_LISTS];
    /* the listeners' ssl.ciphers/versions/curves/sigalgs.<name> counters
     * a handshake counts (tls/downstream.c), by the name's (static) string
     * and the listener's stat name: found without formatting the name */
    struct sharp_tls_named_stat {
        const char *name;
        sharp_stat_id_t id;
        char listener[SHARP_ADDR_STRLEN];
    } tls_named_stats[4][4]; /* [kind][by the name's address] */
} sharp_worker_t;

int sharp_worker_start(sharp_worker_t *w);
/* The two halves of a worker's life without its thread, for the in-process
 * fuzz targets (test/fuzz/), which run the loop themselves:
 * sharp_worker_init sets up the loop, pools and listeners as
 * sharp_worker_start does before it starts the thread (0 or -1), and
 * sharp_worker_release frees what sharp_worker_join frees after the thread
 * has left its loop (after sharp_worker_stop and a loop run to the end). */
int sharp_worker_init(sharp_worker_t *w);
void sharp_worker_release(sharp_worker_t *w);
/* Asks the worker to stop accepting and close idle connections (thread-safe). */
void sharp_worker_drain(sharp_worker_t *w);
/* Asks the worker to close everything and leave its loop (thread-safe). */
void sharp_worker_stop(sharp_worker_t *w);
void sharp_worker_join(sharp_worker_t *w);
/* Hands a new runtime snapshot to a running worker (main thread; takes a
 * reference of its own). */
void sharp_worker_set_runtime(sharp_worker_t *w, sharp_runtime_snapshot_t *snap);
/* Hands a cluster's new host set to a running worker (main thread; takes a
 * reference of its own). The worker moves to it at its next wake-up: its
 * balancer then chooses among the new hosts, pools of hosts that stay are
 * kept, and those of hosts that left retire (sharp_pool_retire). */
void sharp_worker_set_hostset(sharp_worker_t *w, sharp_cluster_t *c);
/* Hands a new config snapshot to a running worker (main thread; takes a
 * reference of its own): from its next wake-up new streams use it. */
void sharp_worker_set_snapshot(sharp_worker_t *w, sharp_snapshot_t *snap);
uint64_t sharp_worker_random(sharp_worker_t *w);
/* The listener the worker accepts on for address a (an original
 * destination): the one bound to it exactly, else one bound to the
 * wildcard address of its family on its port; NULL when none (Envoy's
 * findActiveListenerByAddress). */
const sharp_listener_config_t *sharp_worker_listener_for(sharp_worker_t *w, const struct sockaddr_storage *a);
/* A connection joined flush_list: the flush check runs this loop turn. */
void sharp_worker_want_flush(sharp_worker_t *w);

#endif
