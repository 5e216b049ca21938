/* conn_manager.h: the HTTP connection manager (Envoy's HCM) for a downstream
 * HTTP/1.1 connection: codec (llhttp, strict), streams, the filter chain,
 * Envoy's request/response header mutations, local replies, timeouts, stats
 * and access logs. */
#ifndef SHARP_HTTP_CONN_MANAGER_H
#define SHARP_HTTP_CONN_MANAGER_H

#include "snapshot.h"
#include "worker.h"

#include <uv.h>

/* Takes a connection of listening socket `e` for listener `l`: `fd` (>= 0)
 * accepted by the worker (TCP, non-blocking) from `peer`, or else (fd < 0)
 * the one libuv has waiting on the pipe `e->h.stream` (uv_accept). */
void sharp_conn_accept(sharp_worker_t *w, const sharp_listener_config_t *l, sharp_listen_entry_t *e, int fd,
                       const struct sockaddr_storage *peer);
/* Drain: idle connections close now; busy ones close after their response. */
void sharp_conn_drain_all(sharp_worker_t *w);
/* A listener update (xds/lds.h) changed the drain state of listeners or
 * filter chains: connections on a draining chain start their drain
 * (sharp_conn_start_drain: HTTP/1 "connection: close" on the next response,
 * HTTP/2 GOAWAY, idle ones closed after drain_timeout), those on a closing
 * one, and sockets still in a closing listener's filters, are closed. */
void sharp_conn_drain_listeners(sharp_worker_t *w);
/* An overload action workers act on changed state: reduce_timeouts re-arms
 * the scaled timers, reset_high_memory_stream resets the largest streams. */
void sharp_conn_overload_update(sharp_worker_t *w);
/* Writes response heads held back to share a write with the first body
 * bytes (called once per loop turn from the worker's check handle). */
void sharp_conn_flush_pending(sharp_worker_t *w);
/* Close every connection at once (shutdown). */
void sharp_conn_close_all(sharp_worker_t *w);
/* A host drained its connections (upstream/cluster.h): TCP proxy
 * connections to a host that failed its health checks close when their
 * cluster says so (close_connections_on_host_health_failure). */
void sharp_conn_tcp_proxy_check_hosts(sharp_worker_t *w);

#endif
