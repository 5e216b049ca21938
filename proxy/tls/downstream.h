/* downstream.h: the TLS transport socket of a downstream connection
 * (a filter chain with a DownstreamTlsContext), between the socket and the
 * connection manager's codec (http/conn_internal.h).
 *
 * Reads: the socket's bytes are fed to the engine (tls/conn.h) and the
 * plaintext goes to the codec's dispatch, as a plaintext read would. Writes:
 * the connection's writer has this transport installed, so every write a
 * codec makes is encrypted and its ciphertext written to the socket; the
 * engine's output is drained after each record, so the only buffer that
 * grows is the writer's queue, which the connection's watermark
 * (per_connection_buffer_limit_bytes) bounds as for plaintext. The codec
 * is chosen once the handshake is done, from ALPN (codec_type AUTO). A
 * failed handshake closes the connection; listener.<address>.ssl.* count
 * handshakes and failures as Envoy's. */
#ifndef SHARP_TLS_DOWNSTREAM_H
#define SHARP_TLS_DOWNSTREAM_H

#include <stdbool.h>
#include <stddef.h>

struct sharp_conn;
struct sharp_tls_ctx;
struct sharp_downstream_tls_info;

/* A new connection of a TLS chain: the engine, and the writer's transport.
 * False when the engine could not be created: the connection is closed. */
bool sharp_conn_tls_start(struct sharp_conn *c, struct sharp_tls_ctx *ctx);
/* Ciphertext read from the socket (c->tls set). */
void sharp_conn_tls_read(struct sharp_conn *c, const char *p, size_t n);
/* The end of the loop turn's deferred flush of a TLS connection: what the
 * engine produced for a read and left for the codec's flush to carry (a
 * TLS 1.3 handshake's session tickets, which then share one write with
 * HTTP/2's SETTINGS) goes out if the flush wrote nothing. */
void sharp_conn_tls_flush(struct sharp_conn *c);
/* The codec's next write is the connection's last (an HTTP/1 response
 * that closes it, c->tls set): close_notify is made right behind its
 * records and goes out in the same write; the close then has nothing left
 * to send. */
void sharp_conn_tls_last_write(struct sharp_conn *c);
/* A graceful close (c->tls set): close_notify, queued before the FIN. */
void sharp_conn_tls_shutdown(struct sharp_conn *c);
/* An abrupt close (c->tls set): close_notify if the socket takes it at once. */
void sharp_conn_tls_close(struct sharp_conn *c);
/* The connection is released (nothing for a plaintext one). */
void sharp_conn_tls_free(struct sharp_conn *c);
/* What the access log shows: NULL for plaintext or before the handshake. */
const struct sharp_downstream_tls_info *sharp_conn_tls_info(const struct sharp_conn *c);

#endif
