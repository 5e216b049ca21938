/* tls_config.h: translation of Envoy's TLS transport socket contexts
 * (envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext and
 * UpstreamTlsContext) into a plain struct the TLS engine (proxy/tls/)
 * builds its OpenSSL contexts from.
 *
 * Everything a context needs from outside is read here, once, when the
 * config loads: certificate chains, keys, CAs, CRLs and ticket keys from
 * their DataSources (file, inline string/bytes, environment variable), with
 * Envoy's errors. Defaults are Envoy's: TLS 1.2 minimum, TLS 1.3 maximum for
 * servers and TLS 1.2 for clients, Envoy's default cipher list (its
 * BoringSSL equal-preference groups flattened in order for OpenSSL), curves
 * X25519:P-256 and Envoy's documented signature algorithms. */
#ifndef SHARP_CONFIG_TLS_CONFIG_H
#define SHARP_CONFIG_TLS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/route.h"

#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"

#define SHARP_TLS_TICKET_KEY_LEN 80 /* 16 name + 32 HMAC + 32 AES, as Envoy */
#define SHARP_TLS_SHA256_LEN 32

typedef enum {
    SHARP_TLS_SAN_EMAIL = 1,
    SHARP_TLS_SAN_DNS = 2,
    SHARP_TLS_SAN_URI = 3,
    SHARP_TLS_SAN_IP = 4,
    SHARP_TLS_SAN_ANY = 5, /* the deprecated match_subject_alt_names: every type */
} sharp_tls_san_type_t;

typedef struct {
    sharp_tls_san_type_t type;
    sharp_string_matcher_t matcher;
} sharp_tls_san_matcher_t;

/* One certificate: the PEM chain (leaf first), its PEM private key and the
 * key's password (NULL when the key is not encrypted). `source` names where
 * the chain came from for errors ("<inline>" or the file name). */
typedef struct {
    char *chain;
    size_t chain_len;
    char *key;
    size_t key_len;
    char *password;
    char *chain_source;
    char *key_source;
    /* ocsp_staple: a DER OCSPResponse (NULL when none); servers parse and
     * staple it (tls/context.h), clients read it and leave it, as Envoy */
    uint8_t *ocsp;
    size_t ocsp_len;
} sharp_tls_cert_config_t;

/* DownstreamTlsContext.ocsp_staple_policy */
typedef enum {
    SHARP_TLS_OCSP_LENIENT = 0,
    SHARP_TLS_OCSP_STRICT = 1,
    SHARP_TLS_OCSP_MUST_STAPLE = 2,
} sharp_tls_ocsp_policy_t;

typedef struct {
    bool present;          /* a validation_context was configured */
    char *ca;              /* PEM bundle, NULL when no trusted_ca */
    size_t ca_len;
    char *ca_source;
    char *crl;             /* PEM CRLs, NULL when none */
    size_t crl_len;
    char *crl_source;
    sharp_tls_san_matcher_t *sans;
    size_t nsans;
    uint8_t (*spki)[SHARP_TLS_SHA256_LEN];   /* SHA-256 of the DER SubjectPublicKeyInfo */
    size_t nspki;
    uint8_t (*hashes)[SHARP_TLS_SHA256_LEN]; /* SHA-256 of the DER certificate */
    size_t nhashes;
    bool allow_expired;
    bool accept_untrusted; /* trust_chain_verification: ACCEPT_UNTRUSTED */
} sharp_tls_validation_config_t;

typedef struct sharp_tls_config {
    bool server;
    int min_version, max_version; /* OpenSSL's TLS1_2_VERSION etc. */
    char *cipher_list;            /* OpenSSL syntax, ':'-separated */
    char *curves;
    char *sigalgs;
    sharp_tls_cert_config_t *certs;
    size_t ncerts;
    sharp_tls_validation_config_t validation;
    uint8_t *alpn;                /* ALPN wire format (length-prefixed), NULL if none */
    size_t alpn_len;

    /* servers (DownstreamTlsContext) */
    bool require_client_cert;
    uint8_t (*ticket_keys)[SHARP_TLS_TICKET_KEY_LEN];
    size_t nticket_keys;
    bool disable_stateless_resumption;
    bool disable_stateful_resumption;
    bool has_session_timeout;
    uint32_t session_timeout_s;
    bool full_scan_certs_on_sni_mismatch;
    bool prefer_client_ciphers;
    sharp_tls_ocsp_policy_t ocsp_policy;

    /* clients (UpstreamTlsContext) */
    char *sni;                    /* NULL when not configured */
    bool auto_host_sni;
    bool auto_sni_san_validation;
    uint32_t max_session_keys;    /* default 1; 0 disables resumption */
} sharp_tls_config_t;

/* Translate a DownstreamTlsContext (server) or UpstreamTlsContext (client).
 * Return 0, or -1 with "field.path: what is wrong" in err (out is then
 * freed). Refused features are refused here too, not only by the support
 * table, so a caller that skipped the table cannot get a context that
 * silently lacks them. */
/* The static secrets (static_resources.secrets) that SdsSecretConfigs
 * without a config source name, for the translations that follow (NULL, 0
 * when done). Main thread. */
void sharp_tls_config_use_secrets(Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *secrets, size_t n);

/* Where SdsSecretConfigs with an sds_config get their secret (tls/sds.h):
 * the current secret of that source, of the kind wanted, or NULL with the
 * reason in err. `path` is the SdsSecretConfig's field path. Set by the
 * loader around the translations (NULL when done). Main thread. */
typedef const Envoy__Extensions__TransportSockets__Tls__V3__Secret *(*sharp_tls_sds_resolve_fn)(
    void *ud, const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *sds,
    Envoy__Extensions__TransportSockets__Tls__V3__Secret__TypeCase kind, const char *path, char *err, size_t errlen);
void sharp_tls_config_use_sds(sharp_tls_sds_resolve_fn fn, void *ud);

int sharp_tls_config_downstream(const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *pb,
                                sharp_tls_config_t *out, char *err, size_t errlen);
int sharp_tls_config_upstream(const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *pb,
                              sharp_tls_config_t *out, char *err, size_t errlen);
void sharp_tls_config_free(sharp_tls_config_t *c);

/* "[A|B]:C" (BoringSSL equal-preference groups) as an OpenSSL cipher list
 * "A:B:C". Returns a malloc'd string. */
char *sharp_tls_flatten_cipher_list(const char *const *names, size_t n);

#endif
