/* context.h: a TLS context (OpenSSL 3 SSL_CTX plus what SHARP adds to it)
 * built from a translated DownstreamTlsContext or UpstreamTlsContext
 * (config/tls_config.h). A context is shared by every connection of a
 * listener's filter chain or of a cluster, across worker threads: it is
 * immutable after creation except for the client session store, which has
 * its own lock. Connections hold a reference (proxy/tls/conn.h), so a
 * context replaced by a config change lives until its last connection.
 *
 * Server contexts follow Envoy's certificate selection: among the
 * configured certificates, the ones whose DNS SANs (or CN when there are no
 * SANs) equal the client's SNI, else the ones whose wildcard covers it, else
 * the first certificate (every certificate when
 * full_scan_certs_on_sni_mismatch); among those, an ECDSA certificate whose
 * curve the client supports, else an RSA one. ALPN picks the first of the
 * server's alpn_protocols the client offers (no ALPN when none matches).
 * Session tickets use the configured 80-byte keys (the first encrypts, all
 * decrypt) or OpenSSL's own key.
 *
 * Peer verification follows Envoy's default validator: the trusted CA
 * chain (with CRLs, allow_expired_certificate), then the SAN matchers (or,
 * for clients with auto_sni_san_validation, a DNS SAN equal to the SNI
 * sent), then the hash/SPKI pins (any pin matching passes);
 * ACCEPT_UNTRUSTED records failures but lets the handshake continue. */
#ifndef SHARP_TLS_CONTEXT_H
#define SHARP_TLS_CONTEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/tls_config.h"
#include "sbuf.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct sharp_tls_ctx sharp_tls_ctx_t;

/* The TLS 1.3 suites every context offers, in BoringSSL's order (Envoy's:
 * its cipher_suites apply to TLS 1.2 and below only). */
#define SHARP_TLS13_CIPHERSUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

/* Where a filter chain or a cluster keeps its context: the current one,
 * which the main thread replaces when a secret rotates (tls/sds.h). A
 * worker loads it with one atomic load and no lock, and may use the
 * pointer until its callback returns to the loop (a connection takes its
 * own reference); the replaced context is released through retire.h once
 * every worker has passed its loop, and lives on in the connections that
 * hold it. */
typedef struct sharp_tls_slot {
    _Atomic(sharp_tls_ctx_t *) ctx;
    /* its owner's (the chain's or cluster's) and, with SDS secrets, the
     * provider's consumer's (tls/sds.h): the owner may go on any thread,
     * the consumer learns it on the main thread (refs back to 1) */
    _Atomic uint32_t refs;
} sharp_tls_slot_t;

/* A slot holding `ctx` (the slot takes the caller's reference). */
sharp_tls_slot_t *sharp_tls_slot_new(sharp_tls_ctx_t *ctx);
/* Another reference (the SDS consumer's). */
sharp_tls_slot_t *sharp_tls_slot_ref(sharp_tls_slot_t *s);
/* Whether only one reference is left (its owner let it go). */
bool sharp_tls_slot_alone(sharp_tls_slot_t *s);
static inline sharp_tls_ctx_t *sharp_tls_slot_get(sharp_tls_slot_t *s)
{
    return atomic_load_explicit(&s->ctx, memory_order_acquire);
}
/* Main thread: `ctx` (the caller's reference) replaces the current context. */
void sharp_tls_slot_set(sharp_tls_slot_t *s, sharp_tls_ctx_t *ctx);
/* Drops a reference; the last releases the slot's context (nothing reads
 * the slot any more). */
void sharp_tls_slot_free(sharp_tls_slot_t *s);

/* Builds a context. On success the context takes over the contents of
 * `cfg` (which is left zeroed); on error returns NULL with Envoy's message
 * in err ("Failed to load certificate chain from ...") and `cfg` is left
 * for the caller to free. */
sharp_tls_ctx_t *sharp_tls_ctx_create(sharp_tls_config_t *cfg, char *err, size_t errlen);
void sharp_tls_ctx_ref(sharp_tls_ctx_t *ctx);
void sharp_tls_ctx_unref(sharp_tls_ctx_t *ctx);
bool sharp_tls_ctx_is_server(const sharp_tls_ctx_t *ctx);
const sharp_tls_config_t *sharp_tls_ctx_config(const sharp_tls_ctx_t *ctx);
/* Client contexts: sessions kept for resumption (at most max_session_keys). */
size_t sharp_tls_ctx_stored_sessions(sharp_tls_ctx_t *ctx);
/* Appends the context's certificates as Envoy's /certs shows them:
 * {"ca_cert":[...],"cert_chain":[...]} with each certificate's path,
 * serial number, subject alternative names, days until expiration and
 * validity. Returns the fewest days until one of them expires (0 once
 * expired), INT64_MAX when the context has no certificate. */
int64_t sharp_tls_ctx_certs_json(const sharp_tls_ctx_t *ctx, sharp_sbuf_t *b);
/* The same fewest days without the JSON: the certificates are read once
 * and their earliest expiry kept (main thread); -1 without certificates. */
int64_t sharp_tls_ctx_days_until_first_expiry(sharp_tls_ctx_t *ctx);

#endif
