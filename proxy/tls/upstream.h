/* upstream.h: the TLS transport socket of an upstream connection (a
 * cluster with an UpstreamTlsContext), between the pool's socket
 * (upstream/pool.c) and the client codecs (upstream/codec.h).
 *
 * Once TCP connects, the connection runs a client handshake with the
 * cluster's context: SNI from `sni`, or with auto_host_sni the host's
 * hostname when it has one; ALPN the context's alpn_protocols, else the
 * pool's protocol ("h2" or "http/1.1", Envoy's ALPN fallback); a session
 * the context kept from an earlier connection is offered for resumption.
 * The connection is connected for the codec only when the handshake
 * completes (sharp_upstream_conn_established: the codec's init, the
 * waiting requests); a failed handshake is a connect failure
 * (sharp_upstream_conn_connect_failed) with Envoy's transport failure
 * reason "TLS_error:|<code>:<library>:OPENSSL_internal:<REASON>[:<detail>]:TLS_error_end"
 * (tls/conn.h), which the router keeps for %UPSTREAM_TRANSPORT_FAILURE_REASON%.
 * cluster.<name>.ssl.* count handshakes and failures as Envoy's client
 * context stats.
 *
 * Reads: ciphertext from the socket goes to the engine, plaintext to the
 * codec's on_read, as a plaintext read would. Writes: the connection's
 * writer has this transport installed, so every write of the codec is
 * encrypted and its ciphertext written to the socket. */
#ifndef SHARP_TLS_UPSTREAM_H
#define SHARP_TLS_UPSTREAM_H

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

struct sharp_upstream_conn;

/* TCP connected: sets up the engine and the writer's transport and sends
 * the ClientHello. A failure is reported as a connect failure. */
void sharp_upstream_tls_start(struct sharp_upstream_conn *c);
/* Bytes read from the socket (nread > 0) or its end (nread < 0). */
void sharp_upstream_tls_read(struct sharp_upstream_conn *c, ssize_t nread, const uv_buf_t *buf);
/* The connection closes: close_notify when the socket takes it at once
 * (its queued writes are cancelled by the close: nothing may overtake
 * them). */
void sharp_upstream_tls_close(struct sharp_upstream_conn *c);
/* Our side of the connection ends, the other goes on (a TCP proxy's
 * half-close): close_notify is queued after what was written, before the
 * caller's FIN. */
void sharp_upstream_tls_shutdown(struct sharp_upstream_conn *c);
/* The connection is released (the engine lives on while a stream that
 * logs it holds a reference). */
void sharp_upstream_tls_free(struct sharp_upstream_conn *c);
/* The engine of a connection whose handshake completed, for the access
 * log's upstream TLS operators (tls/conn.h); NULL for plaintext. */
struct sharp_tls_conn;
struct sharp_tls_conn *sharp_upstream_tls_engine(const struct sharp_upstream_conn *c);

#endif
