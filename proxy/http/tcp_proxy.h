/* tcp_proxy.h: the TCP proxy network filter (tcp_proxy.c), which the
 * connection manager runs on a connection whose filter chain holds it in
 * place of an HTTP codec. Private to proxy/http. */
#ifndef SHARP_HTTP_TCP_PROXY_H
#define SHARP_HTTP_TCP_PROXY_H

#include <stdbool.h>

struct sharp_conn;
typedef struct sharp_tcp_session sharp_tcp_session_t;

/* The connection has its transport (plaintext, or TLS once the handshake
 * is done): the TCP proxy takes it over and connects to its upstream. */
void sharp_tcp_proxy_begin(struct sharp_conn *c);
/* The connection is closing: the upstream is let go and the access log
 * entry written (once). */
void sharp_tcp_proxy_end(struct sharp_conn *c);
/* The downstream's write queue crossed its limit: the upstream stops or
 * resumes being read. */
void sharp_tcp_proxy_downstream_watermark(struct sharp_conn *c, bool above);
/* Closes the connection when its upstream host failed its health checks
 * since it connected and the cluster has close_connections_on_host_health_failure. */
void sharp_tcp_proxy_check_host(struct sharp_conn *c);
/* The connection's stream info (its access log's, with the dynamic
 * metadata network filters set), NULL before the TCP proxy took it over. */
struct sharp_stream_info;
struct sharp_stream_info *sharp_tcp_proxy_info(struct sharp_conn *c);

#endif
