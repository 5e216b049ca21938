/* internal.h: what context.c and conn.c share. */
#ifndef SHARP_TLS_INTERNAL_H
#define SHARP_TLS_INTERNAL_H

#include <pthread.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/conn.h"

typedef struct {
    X509 *leaf;
    STACK_OF(X509) *chain; /* intermediates */
    EVP_PKEY *key;
    int ec_nid;            /* the ECDSA key's curve, NID_undef for RSA */
    char **names;          /* lower-case server name patterns; "*.x" stored as ".x" */
    size_t nnames;
    char *subject;         /* the leaf's subject (RFC 2253), made once for the access log */
    /* servers: the OCSP staple (DER, the config's), its nextUpdate, and
     * whether the certificate has the must-staple TLS feature */
    const uint8_t *ocsp;
    size_t ocsp_len;
    bool has_next_update;
    int64_t this_update, next_update;
    bool must_staple;
} sharp_tls_cert_t;

struct sharp_tls_ctx {
    int refs;
    SSL_CTX *ssl_ctx;
    sharp_tls_config_t cfg;
    sharp_tls_cert_t *certs;
    size_t ncerts;
    /* the earliest notAfter of its CA and certificates (time_t), read once
     * by sharp_tls_ctx_days_until_first_expiry; main thread */
    int64_t first_expiry;
    bool first_expiry_read;
    bool verify_ca; /* a trusted CA is loaded: chains are verified */

    /* clients: sessions for resumption, newest last */
    pthread_mutex_t lock;
    SSL_SESSION **sessions;
    size_t nsessions;
};

struct sharp_tls_conn {
    /* the owner's reference and the streams' that log it (tls/conn.h):
     * all on the connection's thread, so not atomic */
    int refs;
    sharp_tls_ctx_t *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* network side: ciphertext in, ciphertext out */
    sharp_tls_on_data_cb on_data;
    void *ud;
    sharp_tls_state_t state;
    sharp_tls_failure_t failure;
    char error[256];
    /* Envoy's transport failure reason ("TLS_error:|...:TLS_error_end"),
     * made from OpenSSL's error queue when the connection fails; NULL
     * until then, or when the queue was empty */
    char *failure_reason;
    char *sni; /* requested (server, from the ClientHello) or sent (client) */
    /* client: the peer's certificate must have the SNI as a DNS SAN, as
     * with auto_sni_san_validation (a dynamic forward proxy's hosts) */
    bool auto_san;
    sharp_tls_ocsp_t ocsp;
    const sharp_tls_cert_t *ocsp_cert; /* SHARP_TLS_OCSP_STAPLED: whose staple */
    char *local_subject; /* a local certificate not among the context's: its subject, made on first use */
    bool paused, close_sent, close_received;
};

/* Client contexts: the session to offer on a new connection (a reference
 * the caller releases), or NULL. */
SSL_SESSION *sharp_tls_ctx_take_session(sharp_tls_ctx_t *ctx);
/* A name's RFC 2253 text (NULL for no name), to free. */
char *sharp_tls_name_string(X509_NAME *name);
/* Records a failure reason from the verify callback, first one wins. */
void sharp_tls_conn_set_failure(sharp_tls_conn_t *c, sharp_tls_failure_t f, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
