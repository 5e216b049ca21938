/* conn.h: one TLS connection over memory BIOs, independent of sockets and
 * of the event loop. The transport socket feeds it the ciphertext it read
 * and sends what it drains; plaintext comes out through a callback and
 * goes in through sharp_tls_conn_write.
 *
 *   read from socket -> sharp_tls_conn_feed (takes what fits) ->
 *   sharp_tls_conn_process (handshake, then plaintext to on_data) ->
 *   sharp_tls_conn_drain (ciphertext to send: handshake, alerts, records)
 *   plaintext to send -> sharp_tls_conn_write (takes what fits) -> drain
 *
 * Buffering is bounded: feed takes at most SHARP_TLS_MAX_CIPHERTEXT_IN
 * unprocessed bytes; write stops taking plaintext once
 * SHARP_TLS_MAX_CIPHERTEXT_OUT bytes wait to be drained; on_data returning
 * false pauses delivery, leaving the rest in the engine (at most one
 * record of plaintext plus the bounded ciphertext) until
 * sharp_tls_conn_resume. The caller stops reading its socket while feed
 * takes nothing, and stops accepting plaintext while write takes nothing. */
#ifndef SHARP_TLS_CONN_H
#define SHARP_TLS_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "tls/context.h"

#define SHARP_TLS_MAX_CIPHERTEXT_IN (64u * 1024)
#define SHARP_TLS_MAX_CIPHERTEXT_OUT (64u * 1024)

typedef enum {
    SHARP_TLS_HANDSHAKING,
    SHARP_TLS_OPEN,
    SHARP_TLS_PEER_CLOSED, /* the peer's close_notify arrived */
    SHARP_TLS_FAILED,
} sharp_tls_state_t;

/* Why a handshake failed, for Envoy's ssl.* stats. */
typedef enum {
    SHARP_TLS_FAIL_NONE,
    SHARP_TLS_FAIL_VERIFY_ERROR,     /* ssl.fail_verify_error: chain verification */
    SHARP_TLS_FAIL_VERIFY_SAN,       /* ssl.fail_verify_san */
    SHARP_TLS_FAIL_VERIFY_CERT_HASH, /* ssl.fail_verify_cert_hash: no hash/SPKI pin matched */
    SHARP_TLS_FAIL_VERIFY_NO_CERT,   /* ssl.fail_verify_no_cert: a required peer certificate is missing */
    SHARP_TLS_FAIL_CONNECTION,       /* ssl.connection_error: anything else (protocol, versions, ciphers) */
} sharp_tls_failure_t;

/* A server connection's OCSP stapling, decided on its ClientHello (Envoy's
 * OcspStapleAction), for the ssl.ocsp_staple_* stats. */
typedef enum {
    SHARP_TLS_OCSP_PENDING,       /* no ClientHello yet */
    SHARP_TLS_OCSP_NOT_REQUESTED, /* no status_request: not counted */
    SHARP_TLS_OCSP_STAPLED,       /* ocsp_staple_requests, ocsp_staple_responses */
    SHARP_TLS_OCSP_OMITTED,       /* ocsp_staple_requests, ocsp_staple_omitted */
    SHARP_TLS_OCSP_FAILED,        /* ocsp_staple_requests, ocsp_staple_failed: the handshake fails */
} sharp_tls_ocsp_t;

typedef struct sharp_tls_conn sharp_tls_conn_t;

/* Plaintext for the application; return false to pause delivery. */
typedef bool (*sharp_tls_on_data_cb)(void *ud, const uint8_t *data, size_t len);

/* A connection of `ctx` (server or client, as the context). `sni` (clients
 * only, may be NULL) overrides the context's sni: the upstream host's name
 * for auto_host_sni. */
sharp_tls_conn_t *sharp_tls_conn_new(sharp_tls_ctx_t *ctx, const char *sni, sharp_tls_on_data_cb on_data, void *ud);
/* A client connection whose peer must have its SNI as a DNS SAN (Envoy's
 * auto_san_validation), when the context verifies the peer (a trusted CA). */
void sharp_tls_conn_set_auto_san(sharp_tls_conn_t *c);
/* Drops a reference; the last one frees the connection. The owner holds
 * the first; a stream that logs its upstream connection's TLS details
 * takes another (sharp_tls_conn_ref), so the details outlive the socket.
 * Only the accessors below may be used through such a reference, and only
 * on the connection's thread (the count is not atomic). */
void sharp_tls_conn_free(sharp_tls_conn_t *c);
void sharp_tls_conn_ref(sharp_tls_conn_t *c);
/* Client connections, before the handshake: the ALPN protocols offered
 * (wire format) in place of the context's. */
void sharp_tls_conn_set_alpn(sharp_tls_conn_t *c, const uint8_t *wire, size_t len);

/* ---- the engine as a writer's transport (net.h), shared by the
 * downstream, upstream and health check sockets ---- */
/* Writes everything the engine has for the wire to the writer, bypassing
 * its transport: the writer's queue is the one place ciphertext waits. */
int sharp_tls_conn_send(sharp_tls_conn_t *c, sharp_writer_t *w);
/* The body of a writer transport: encrypts the buffers and sends the
 * records (with `last`, close_notify after them, in the same write).
 * UV_ENOTCONN (with *unwritten the bytes left) when the engine is not
 * open; a writer error as it comes. */
int sharp_tls_conn_encrypt(sharp_tls_conn_t *c, sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs, bool last,
                           size_t *unwritten);
/* An abrupt close: close_notify, written only if the socket's queue is
 * empty (the close cancels queued writes, which it must not overtake). */
void sharp_tls_conn_close_now(sharp_tls_conn_t *c, sharp_writer_t *w, uv_stream_t *stream);

/* What set_current_client_cert_details adds to x-forwarded-client-cert. */
enum {
    SHARP_XFCC_SUBJECT = 1u << 0,
    SHARP_XFCC_CERT = 1u << 1,
    SHARP_XFCC_CHAIN = 1u << 2,
    SHARP_XFCC_DNS = 1u << 3,
    SHARP_XFCC_URI = 1u << 4,
};
/* Server connections after the handshake: this connection's element of
 * x-forwarded-client-cert as Envoy writes it (By= for each URI SAN of our
 * certificate, Hash= the SHA-256 of the client's, then Cert, Chain,
 * Subject, URI, DNS as `what` asks, ';'-separated); NULL when the client
 * presented no certificate. The caller frees it. */
char *sharp_tls_conn_xfcc(const sharp_tls_conn_t *c, unsigned what);

/* Takes up to `len` bytes of ciphertext; returns how many (0 when the
 * engine already holds SHARP_TLS_MAX_CIPHERTEXT_IN unprocessed bytes). */
size_t sharp_tls_conn_feed(sharp_tls_conn_t *c, const void *data, size_t len);
/* Advances the handshake and delivers plaintext. Returns the state. */
sharp_tls_state_t sharp_tls_conn_process(sharp_tls_conn_t *c);
void sharp_tls_conn_resume(sharp_tls_conn_t *c);
/* Encrypts up to `len` bytes once the handshake is done (also after the
 * peer's close_notify: a half-close); returns how many were taken (0 while
 * handshaking, after our close, a failure, or when the output is full). */
size_t sharp_tls_conn_write(sharp_tls_conn_t *c, const void *data, size_t len);
/* Ciphertext waiting to be sent, and taking it. */
size_t sharp_tls_conn_pending(const sharp_tls_conn_t *c);
size_t sharp_tls_conn_drain(sharp_tls_conn_t *c, void *buf, size_t cap);
/* Queues close_notify (once); no plaintext is taken afterwards. */
void sharp_tls_conn_close(sharp_tls_conn_t *c);

sharp_tls_state_t sharp_tls_conn_state(const sharp_tls_conn_t *c);
sharp_tls_failure_t sharp_tls_conn_failure(const sharp_tls_conn_t *c);
sharp_tls_ocsp_t sharp_tls_conn_ocsp(const sharp_tls_conn_t *c);
/* Why it failed ("verify cert failed: SAN matcher", OpenSSL's reason...). */
const char *sharp_tls_conn_error(const sharp_tls_conn_t *c);
/* Envoy's transport failure reason (SslSocket::drainErrorQueue): every
 * entry of OpenSSL's error queue at the failure as
 * "|<code>:<library>:OPENSSL_internal:<REASON>", then the certificate
 * validation detail after a failed verification, framed by "TLS_error:"
 * and ":TLS_error_end". The code is OpenSSL 3's packed error code (Envoy
 * prints BoringSSL's, e.g. 268435581 for CERTIFICATE_VERIFY_FAILED where
 * OpenSSL has 167772294); OpenSSL 3 names no functions, so the function
 * field is BoringSSL's constant "OPENSSL_internal"; the reason is
 * OpenSSL's text upper-cased with '_' for spaces, which is BoringSSL's
 * spelling for the SSL library's reasons. NULL when the connection has not
 * failed or the queue was empty. */
const char *sharp_tls_conn_failure_reason(const sharp_tls_conn_t *c);
bool sharp_tls_conn_close_notify_received(const sharp_tls_conn_t *c);

/* After the handshake (NULL / false when not applicable). */
const char *sharp_tls_conn_version(const sharp_tls_conn_t *c);     /* "TLSv1.3" */
const char *sharp_tls_conn_cipher(const sharp_tls_conn_t *c);      /* OpenSSL/IANA-style name */
const char *sharp_tls_conn_alpn(const sharp_tls_conn_t *c);        /* selected protocol */
const char *sharp_tls_conn_curve(const sharp_tls_conn_t *c);       /* key exchange group, "X25519", "P-256" */
const char *sharp_tls_conn_sni(const sharp_tls_conn_t *c);         /* requested (server) or sent (client) */
bool sharp_tls_conn_session_reused(const sharp_tls_conn_t *c);
/* The signature algorithm the peer signed this handshake with, in
 * BoringSSL's names (SSL_get_signature_algorithm_name with the curve, as
 * Envoy's ssl.sigalgs.<name>): "rsa_pss_rsae_sha256",
 * "ecdsa_secp256r1_sha256", "rsa_pkcs1_sha256", "ed25519"... NULL when the
 * peer signed nothing: a resumed session (OpenSSL keeps the algorithm per
 * handshake, BoringSSL in the session, so Envoy also counts resumptions
 * under the first handshake's algorithm), a client without a certificate,
 * RSA key exchange. */
const char *sharp_tls_conn_peer_sigalg(const sharp_tls_conn_t *c);
bool sharp_tls_conn_peer_has_cert(const sharp_tls_conn_t *c);
/* The peer certificate's subject (RFC 2253) and first URI SAN; malloc'd,
 * NULL when absent. */
char *sharp_tls_conn_peer_subject(const sharp_tls_conn_t *c);
char *sharp_tls_conn_peer_uri_san(const sharp_tls_conn_t *c);
/* Every subjectAltName of the peer's certificate of one GENERAL_NAME type
 * (GEN_URI, GEN_DNS), in certificate order, as a NULL-terminated array
 * (NULL when there is none); free with sharp_tls_strv_free. */
char **sharp_tls_conn_peer_sans(const sharp_tls_conn_t *c, int type);
void sharp_tls_strv_free(char **v);
/* The subject of the certificate this side presents, NULL without one;
 * it lives as long as the connection. */
const char *sharp_tls_conn_local_subject(sharp_tls_conn_t *c);

/* Envoy's Ssl::ConnectionInfo values for the access log's UPSTREAM_TLS_*,
 * UPSTREAM_PEER_* and UPSTREAM_LOCAL_* operators, computed when a log line
 * is rendered, not per request. */
typedef enum {
    SHARP_TLS_INFO_VERSION,       /* tlsVersion(): "TLSv1.2" */
    SHARP_TLS_INFO_CIPHER,        /* ciphersuiteString() */
    SHARP_TLS_INFO_SESSION_ID,    /* sessionId(): lower-case hex */
    SHARP_TLS_INFO_PEER_SUBJECT,  /* RFC 2253 */
    SHARP_TLS_INFO_PEER_ISSUER,
    SHARP_TLS_INFO_PEER_CERT,     /* the PEM, URL-encoded */
    SHARP_TLS_INFO_PEER_URI_SAN,  /* SAN lists: every one of the type, ',' between */
    SHARP_TLS_INFO_PEER_DNS_SAN,
    SHARP_TLS_INFO_PEER_IP_SAN,
    SHARP_TLS_INFO_LOCAL_URI_SAN, /* of the certificate we presented */
    SHARP_TLS_INFO_LOCAL_DNS_SAN,
    SHARP_TLS_INFO_LOCAL_IP_SAN,
} sharp_tls_info_t;
/* Appends the value and returns true, or appends nothing and returns false
 * when there is none or it is empty (Envoy's formatter prints neither). */
bool sharp_tls_conn_put_info(const sharp_tls_conn_t *c, sharp_tls_info_t what, sharp_sbuf_t *out);
/* The peer certificate's notBefore (not_after false) or notAfter, in
 * seconds since the epoch; false without a peer certificate. */
bool sharp_tls_conn_peer_validity(const sharp_tls_conn_t *c, bool not_after, int64_t *epoch_s);

#endif
