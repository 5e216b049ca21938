/* context.c: see context.h. */
#include "tls/internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "log.h"
#include "retire.h"

#include <time.h>

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *ssl_error(void)
{
    static __thread char buf[200];
    unsigned long e = ERR_peek_last_error();
    if (!e) return "unknown";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

/* ---- certificates ------------------------------------------------------------ */

static void lower(char *s)
{
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

static void add_name(sharp_tls_cert_t *c, const char *name, size_t len)
{
    if (!len || memchr(name, '\0', len)) return;
    char *n = sharp_realloc(NULL, len + 1);
    /* "*.example.com" is kept as ".example.com", Envoy's wildcard key. */
    if (len > 2 && name[0] == '*' && name[1] == '.') {
        memcpy(n, name + 1, len - 1);
        n[len - 1] = '\0';
    } else {
        memcpy(n, name, len);
        n[len] = '\0';
    }
    lower(n);
    c->names = sharp_realloc(c->names, (c->nnames + 1) * sizeof *c->names);
    c->names[c->nnames++] = n;
}

/* Envoy's server name patterns: the DNS SANs, or the subject CN when the
 * certificate has no SAN extension at all (RFC 6125 6.4.4). */
static void cert_names(sharp_tls_cert_t *c)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(c->leaf, NID_subject_alt_name, NULL, NULL);
    if (sans) {
        for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
            if (g->type == GEN_DNS)
                add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName), (size_t)ASN1_STRING_length(g->d.dNSName));
        }
        GENERAL_NAMES_free(sans);
        return;
    }
    X509_NAME *subj = X509_get_subject_name(c->leaf);
    int i = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (i < 0) return;
    ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
    add_name(c, (const char *)ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn));
}

static int password_cb(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    if (!pw) return 0;
    size_t n = strlen(pw);
    if (n > (size_t)size) return -1;
    memcpy(buf, pw, n);
    return (int)n;
}

static void cert_free(sharp_tls_cert_t *c)
{
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    for (size_t i = 0; i < c->nnames; i++) free(c->names[i]);
    free(c->names);
    free(c->subject);
}

static int load_cert(const sharp_tls_cert_config_t *cc, sharp_tls_cert_t *c, char *err, size_t errlen)
{
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(cc->chain, (int)cc->chain_len);
    c->leaf = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
    if (!c->leaf) {
        BIO_free(bio);
        return fail(err, errlen, "Failed to load certificate chain from %s", cc->chain_source);
    }
    c->chain = sk_X509_new_null();
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!x) break;
        sk_X509_push(c->chain, x);
    }
    BIO_free(bio);
    /* A trailing "no start line" only marks the end of the PEM data. */
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        return fail(err, errlen, "Failed to load certificate chain from %s", cc->chain_source);
    ERR_clear_error();

    EVP_PKEY *pub = X509_get0_pubkey(c->leaf);
    c->ec_nid = NID_undef;
    if (pub && EVP_PKEY_is_a(pub, "EC")) {
        char group[64];
        size_t gl = 0;
        if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &gl))
            return fail(err, errlen, "Failed to load certificate chain from %s, only P-256, P-384 or P-521 ECDSA "
                        "certificates are supported", cc->chain_source);
        c->ec_nid = OBJ_sn2nid(group);
        if (c->ec_nid == NID_undef) c->ec_nid = EC_curve_nist2nid(group);
        if (c->ec_nid != NID_X9_62_prime256v1 && c->ec_nid != NID_secp384r1 && c->ec_nid != NID_secp521r1)
            return fail(err, errlen, "Failed to load certificate chain from %s, only P-256, P-384 or P-521 ECDSA "
                        "certificates are supported", cc->chain_source);
    } else if (pub && EVP_PKEY_is_a(pub, "RSA")) {
        if (EVP_PKEY_get_bits(pub) < 2048)
            return fail(err, errlen, "Failed to load certificate chain from %s, only RSA certificates with 2048-bit "
                        "or larger keys are supported", cc->chain_source);
    } else {
        return fail(err, errlen, "Failed to load certificate chain from %s, only RSA and ECDSA certificates are "
                    "supported", cc->chain_source);
    }

    bio = BIO_new_mem_buf(cc->key, (int)cc->key_len);
    c->key = PEM_read_bio_PrivateKey(bio, NULL, password_cb, cc->password);
    BIO_free(bio);
    if (!c->key) return fail(err, errlen, "Failed to load private key from %s, Cause: %s", cc->key_source, ssl_error());
    if (X509_check_private_key(c->leaf, c->key) != 1)
        return fail(err, errlen, "Failed to load private key from %s, Cause: %s", cc->key_source, ssl_error());
    cert_names(c);
    c->subject = sharp_tls_name_string(X509_get_subject_name(c->leaf));
    return 0;
}

/* ---- server: OCSP stapling -------------------------------------------------- */

/* Envoy's OcspResponseWrapperImpl (ocsp.cc): the staple is one successful
 * basic OCSPResponse for one certificate, whose serial number is the
 * leaf's; its signature is not checked (the staple comes from a trusted
 * source). Its nextUpdate decides whether it has expired. */
static int load_ocsp(const sharp_tls_cert_config_t *cc, sharp_tls_cert_t *c, char *err, size_t errlen)
{
    /* the TLS feature extension (RFC 7633) with status_request: the
     * certificate must be stapled */
    STACK_OF(ASN1_INTEGER) *features = X509_get_ext_d2i(c->leaf, NID_tlsfeature, NULL, NULL);
    for (int i = 0; features && i < sk_ASN1_INTEGER_num(features); i++)
        if (ASN1_INTEGER_get(sk_ASN1_INTEGER_value(features, i)) == TLSEXT_TYPE_status_request) c->must_staple = true;
    sk_ASN1_INTEGER_pop_free(features, ASN1_INTEGER_free);
    if (!cc->ocsp) return 0;
    const unsigned char *p = cc->ocsp;
    OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)cc->ocsp_len);
    OCSP_BASICRESP *b = NULL;
    int rc = -1;
    if (!r) {
        fail(err, errlen, "OCSP Response is not a well-formed ASN.1 SEQUENCE");
        goto out;
    }
    if (p != cc->ocsp + cc->ocsp_len) {
        fail(err, errlen, "Data contained more than a single OCSP response");
        goto out;
    }
    if (OCSP_response_status(r) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        fail(err, errlen, "OCSP response was unsuccessful");
        goto out;
    }
    if (!(b = OCSP_response_get1_basic(r))) {
        fail(err, errlen, "OCSP response has no body");
        goto out;
    }
    if (OCSP_resp_count(b) != 1) {
        fail(err, errlen, "OCSP Response must be for one certificate only");
        goto out;
    }
    OCSP_SINGLERESP *one = OCSP_resp_get0(b, 0);
    ASN1_INTEGER *serial = NULL;
    OCSP_id_get0_info(NULL, NULL, NULL, &serial, (OCSP_CERTID *)OCSP_SINGLERESP_get0_id(one));
    if (!serial || ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(c->leaf)) != 0) {
        fail(err, errlen, "OCSP response does not match its TLS certificate");
        goto out;
    }
    int reason;
    ASN1_GENERALIZEDTIME *revoked, *this_update, *next_update;
    OCSP_single_get0_status(one, &reason, &revoked, &this_update, &next_update);
    struct tm tm;
    if (this_update && ASN1_TIME_to_tm(this_update, &tm)) {
        c->this_update = (int64_t)timegm(&tm);
        if (c->this_update > (int64_t)time(NULL))
            sharp_log_warn("OCSP Response thisUpdate field is set in the future (certificate %s)", cc->chain_source);
    }
    if (next_update && ASN1_TIME_to_tm(next_update, &tm)) {
        c->has_next_update = true;
        c->next_update = (int64_t)timegm(&tm);
    }
    c->ocsp = cc->ocsp;
    c->ocsp_len = cc->ocsp_len;
    rc = 0;
out:
    OCSP_BASICRESP_free(b);
    OCSP_RESPONSE_free(r);
    ERR_clear_error();
    return rc;
}

/* Envoy's ServerContextImpl::ocspStapleAction: a must-staple certificate
 * upgrades the policy to MUST_STAPLE; a staple without nextUpdate, or past
 * it, has expired. */
static sharp_tls_ocsp_t ocsp_action(const sharp_tls_ctx_t *x, const sharp_tls_cert_t *c, bool capable)
{
    if (!capable) return SHARP_TLS_OCSP_NOT_REQUESTED;
    sharp_tls_ocsp_policy_t policy = c->must_staple ? SHARP_TLS_OCSP_MUST_STAPLE : x->cfg.ocsp_policy;
    bool valid = c->ocsp && c->has_next_update && c->next_update >= (int64_t)time(NULL);
    switch (policy) {
    case SHARP_TLS_OCSP_STRICT:
        return valid ? SHARP_TLS_OCSP_STAPLED : c->ocsp ? SHARP_TLS_OCSP_FAILED : SHARP_TLS_OCSP_OMITTED;
    case SHARP_TLS_OCSP_MUST_STAPLE:
        return valid ? SHARP_TLS_OCSP_STAPLED : SHARP_TLS_OCSP_FAILED;
    default:
        return valid ? SHARP_TLS_OCSP_STAPLED : SHARP_TLS_OCSP_OMITTED;
    }
}

/* OpenSSL asks for the staple once the certificate is chosen (only when
 * the client sent status_request): the one client_hello_cb decided on. */
static int status_cb(SSL *ssl, void *arg)
{
    (void)arg;
    sharp_tls_conn_t *c = SSL_get_app_data(ssl);
    if (!c || c->ocsp != SHARP_TLS_OCSP_STAPLED || !c->ocsp_cert) return SSL_TLSEXT_ERR_NOACK;
    unsigned char *der = OPENSSL_malloc(c->ocsp_cert->ocsp_len);
    if (!der) return SSL_TLSEXT_ERR_NOACK;
    memcpy(der, c->ocsp_cert->ocsp, c->ocsp_cert->ocsp_len);
    if (SSL_set_tlsext_status_ocsp_resp(ssl, der, (long)c->ocsp_cert->ocsp_len) != 1) {
        OPENSSL_free(der);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ---- server: certificate selection ------------------------------------------ */

/* The client's ECDSA curves: none unless it offers an ECDSA signature
 * algorithm; then the NIST curves among its supported groups (P-256 when
 * it sends no supported_groups). */
static size_t client_ecdsa_curves(SSL *ssl, int curves[3])
{
    const unsigned char *p;
    size_t len, n = 0;
    bool ecdsa = false;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_signature_algorithms, &p, &len) && len >= 2) {
        size_t l = (size_t)p[0] << 8 | p[1];
        if (l > len - 2) l = len - 2;
        for (size_t i = 2; i + 1 < 2 + l; i += 2) {
            unsigned v = (unsigned)p[i] << 8 | p[i + 1];
            if (v == 0x0403 || v == 0x0503 || v == 0x0603) ecdsa = true;
        }
    }
    if (!ecdsa) return 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_groups, &p, &len) && len >= 2) {
        size_t l = (size_t)p[0] << 8 | p[1];
        if (l > len - 2) l = len - 2;
        for (size_t i = 2; i + 1 < 2 + l && n < 3; i += 2) {
            unsigned v = (unsigned)p[i] << 8 | p[i + 1];
            if (v == 23) curves[n++] = NID_X9_62_prime256v1;
            else if (v == 24) curves[n++] = NID_secp384r1;
            else if (v == 25) curves[n++] = NID_secp521r1;
        }
        return n;
    }
    curves[n++] = NID_X9_62_prime256v1;
    return n;
}

/* The ClientHello's host_name (RFC 6066), lower-cased; NULL if none. */
static char *client_sni(SSL *ssl)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5) return NULL;
    size_t list = (size_t)p[0] << 8 | p[1];
    if (list + 2 > len || p[2] != TLSEXT_NAMETYPE_host_name) return NULL;
    size_t n = (size_t)p[3] << 8 | p[4];
    if (n == 0 || n + 5 > len || memchr(p + 5, '\0', n)) return NULL;
    char *s = sharp_realloc(NULL, n + 1);
    memcpy(s, p + 5, n);
    s[n] = '\0';
    lower(s);
    return s;
}

typedef struct {
    const int *curves;
    size_t ncurves;
    const sharp_tls_cert_t *selected, *candidate;
    const sharp_tls_ctx_t *x;
    bool ocsp_capable;
} pick_t;

/* Envoy's DefaultTlsCertificateSelector::findTlsContext "selected": a
 * certificate whose OCSP policy fails the client is not selected. */
static bool pick(pick_t *k, const sharp_tls_cert_t *c)
{
    if (ocsp_action(k->x, c, k->ocsp_capable) == SHARP_TLS_OCSP_FAILED) return false;
    for (size_t i = 0; i < k->ncurves; i++)
        if (c->ec_nid != NID_undef && c->ec_nid == k->curves[i]) {
            k->selected = c;
            return true;
        }
    if (!k->ncurves && c->ec_nid == NID_undef) {
        k->selected = c;
        return true;
    }
    if (k->ncurves && c->ec_nid == NID_undef && !k->candidate) k->candidate = c;
    return false;
}

static bool has_name(const sharp_tls_cert_t *c, const char *name)
{
    for (size_t i = 0; i < c->nnames; i++)
        if (!strcmp(c->names[i], name)) return true;
    return false;
}

/* The certificates for one name, first of each key type (an earlier
 * certificate wins a duplicate name), RSA before ECDSA as Envoy's map by
 * key type iterates. */
static void pick_by_name(sharp_tls_ctx_t *x, pick_t *k, const char *name)
{
    for (int pass = 0; pass < 2 && !k->selected; pass++) {
        bool want_ec = pass == 1;
        for (size_t i = 0; i < x->ncerts; i++) {
            const sharp_tls_cert_t *c = &x->certs[i];
            if ((c->ec_nid != NID_undef) != want_ec || !has_name(c, name)) continue;
            if (pick(k, c)) return;
            break;
        }
    }
}

static const sharp_tls_cert_t *select_cert(sharp_tls_ctx_t *x, SSL *ssl, const char *sni, bool ocsp_capable)
{
    int curves[3];
    pick_t k = {curves, client_ecdsa_curves(ssl, curves), NULL, NULL, x, ocsp_capable};
    if (sni) {
        pick_by_name(x, &k, sni);
        if (!k.selected) k.selected = k.candidate;
        if (!k.selected) {
            const char *dot = strchr(sni + 1, '.');
            if (dot && dot[1]) pick_by_name(x, &k, dot);
        }
        if (!k.selected) k.selected = k.candidate;
        if (!k.selected && !x->cfg.full_scan_certs_on_sni_mismatch) return &x->certs[0];
    }
    if (!k.selected) {
        k.candidate = NULL;
        for (size_t i = 0; i < x->ncerts; i++)
            if (pick(&k, &x->certs[i])) break;
        if (!k.selected) k.selected = k.candidate;
        if (!k.selected) k.selected = &x->certs[0];
    }
    return k.selected;
}

static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    sharp_tls_ctx_t *x = arg;
    sharp_tls_conn_t *c = SSL_get_app_data(ssl);
    free(c->sni);
    c->sni = client_sni(ssl);
    const unsigned char *ext;
    size_t ext_len;
    bool ocsp_capable = SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_status_request, &ext, &ext_len) == 1;
    const sharp_tls_cert_t *cert = x->ncerts == 1 ? &x->certs[0] : select_cert(x, ssl, c->sni, ocsp_capable);
    c->ocsp = ocsp_action(x, cert, ocsp_capable);
    c->ocsp_cert = c->ocsp == SHARP_TLS_OCSP_STAPLED ? cert : NULL;
    if (c->ocsp == SHARP_TLS_OCSP_FAILED) {
        sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_CONNECTION, "the certificate's OCSP staple policy fails: %s",
                                   cert->ocsp ? "its staple has expired" : "it has no staple");
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    /* one certificate: the context's own, set once (a connection's
     * SSL_use_cert_and_key checks the key against the certificate, some
     * 2% of a full handshake's CPU) */
    if (x->ncerts == 1) return SSL_CLIENT_HELLO_SUCCESS;
    if (SSL_use_cert_and_key(ssl, cert->leaf, cert->key, cert->chain, 1) != 1) {
        sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_CONNECTION, "cannot use the selected certificate: %s", ssl_error());
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg)
{
    sharp_tls_ctx_t *x = arg;
    unsigned char *o = NULL;
    /* Server preference: the first of ours that the client offers. */
    if (SSL_select_next_proto(&o, outlen, x->cfg.alpn, (unsigned)x->cfg.alpn_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* Envoy's ticket key layout: 16 bytes name, 32 HMAC-SHA256, 32 AES-256-CBC.
 * The first key encrypts; any key decrypts, and a ticket under an older key
 * is renewed. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    sharp_tls_ctx_t *x = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (enc) {
        const uint8_t *k = x->cfg.ticket_keys[0];
        memcpy(key_name, k, 16);
        if (RAND_bytes(iv, 16) != 1) return -1;
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k + 48, iv) != 1) return -1;
        if (EVP_MAC_init(hctx, k + 16, 32, params) != 1) return -1;
        return 1;
    }
    for (size_t i = 0; i < x->cfg.nticket_keys; i++) {
        const uint8_t *k = x->cfg.ticket_keys[i];
        if (memcmp(key_name, k, 16)) continue;
        if (EVP_MAC_init(hctx, k + 16, 32, params) != 1) return -1;
        if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k + 48, iv) != 1) return -1;
        return i == 0 ? 1 : 2;
    }
    return 0; /* unknown key: a full handshake */
}

/* ---- verification --------------------------------------------------------------- */

static bool ieq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && !strncasecmp(a, b, alen);
}

/* Envoy's Utility::dnsNameMatch: equal, or the certificate's "*.x.y"
 * covers exactly one label in front of ".x.y". */
static bool dns_name_match(const char *name, size_t nlen, const char *pattern, size_t plen)
{
    if (ieq(name, nlen, pattern, plen)) return true;
    if (plen > 1 && pattern[0] == '*' && pattern[1] == '.' && nlen > plen - 1) {
        size_t off = nlen - plen + 1;
        return !memchr(name, '.', off) && ieq(name + off, nlen - off, pattern + 1, plen - 1);
    }
    return false;
}

/* A GENERAL_NAME as Envoy's Utility::generalNameAsString. */
static bool general_name(const GENERAL_NAME *g, char *buf, size_t cap, sharp_str_t *out)
{
    const ASN1_STRING *s;
    switch (g->type) {
    case GEN_DNS: s = g->d.dNSName; break;
    case GEN_URI: s = g->d.uniformResourceIdentifier; break;
    case GEN_EMAIL: s = g->d.rfc822Name; break;
    case GEN_IPADD: {
        int n = ASN1_STRING_length(g->d.iPAddress);
        const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
        if (!inet_ntop(n == 4 ? AF_INET : AF_INET6, p, buf, (socklen_t)cap) || (n != 4 && n != 16)) return false;
        out->p = buf;
        out->len = strlen(buf);
        return true;
    }
    default: return false;
    }
    out->p = (const char *)ASN1_STRING_get0_data(s);
    out->len = (size_t)ASN1_STRING_length(s);
    return true;
}

static int gen_type(sharp_tls_san_type_t t)
{
    switch (t) {
    case SHARP_TLS_SAN_EMAIL: return GEN_EMAIL;
    case SHARP_TLS_SAN_DNS: return GEN_DNS;
    case SHARP_TLS_SAN_URI: return GEN_URI;
    case SHARP_TLS_SAN_IP: return GEN_IPADD;
    default: return -1;
    }
}

/* Envoy's StringSanMatcher: the SAN's type must match; an exact matcher on
 * a DNS SAN follows DNS wildcard rules. */
static bool san_matches(const sharp_tls_san_matcher_t *m, const GENERAL_NAME *g)
{
    if (m->type != SHARP_TLS_SAN_ANY && g->type != gen_type(m->type)) return false;
    char buf[64];
    sharp_str_t v;
    if (!general_name(g, buf, sizeof buf, &v)) return false;
    if (g->type == GEN_DNS && m->matcher.kind == SHARP_SM_EXACT && !m->matcher.ignore_case)
        return dns_name_match(m->matcher.value, m->matcher.len, v.p, v.len);
    return sharp_string_matcher_match(&m->matcher, v);
}

static bool match_sans(const sharp_tls_ctx_t *x, X509 *cert, const char *auto_sni)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!sans) return false;
    bool ok = false;
    for (int i = 0; i < sk_GENERAL_NAME_num(sans) && !ok; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (auto_sni) {
            char buf[8];
            sharp_str_t v;
            ok = g->type == GEN_DNS && general_name(g, buf, sizeof buf, &v) &&
                 dns_name_match(auto_sni, strlen(auto_sni), v.p, v.len);
            continue;
        }
        for (size_t j = 0; j < x->cfg.validation.nsans && !ok; j++) ok = san_matches(&x->cfg.validation.sans[j], g);
    }
    GENERAL_NAMES_free(sans);
    return ok;
}

static bool match_pins(const sharp_tls_ctx_t *x, X509 *cert)
{
    const sharp_tls_validation_config_t *v = &x->cfg.validation;
    uint8_t md[SHA256_DIGEST_LENGTH];
    unsigned mdlen = 0;
    if (v->nhashes && X509_digest(cert, EVP_sha256(), md, &mdlen) == 1)
        for (size_t i = 0; i < v->nhashes; i++)
            if (!memcmp(md, v->hashes[i], sizeof md)) return true;
    if (v->nspki) {
        unsigned char *der = NULL;
        int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
        if (len > 0) {
            SHA256(der, (size_t)len, md);
            OPENSSL_free(der);
            for (size_t i = 0; i < v->nspki; i++)
                if (!memcmp(md, v->spki[i], sizeof md)) return true;
        }
    }
    return false;
}

/* Replaces OpenSSL's chain verification with Envoy's DefaultCertValidator
 * order: chain, then SANs, then pins. */
static int verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    sharp_tls_ctx_t *x = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    sharp_tls_conn_t *c = SSL_get_app_data(ssl);
    const sharp_tls_validation_config_t *v = &x->cfg.validation;
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    if (!leaf) {
        sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_NO_CERT, "verify cert failed: empty cert chain");
        return 0;
    }
    bool validated = false;
    if (x->verify_ca) {
        if (X509_verify_cert(sctx) != 1) {
            int e = X509_STORE_CTX_get_error(sctx);
            sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_ERROR,
                                       "verify cert failed: X509_verify_cert: certificate verification error at "
                                       "depth %d: %s", X509_STORE_CTX_get_error_depth(sctx),
                                       X509_verify_cert_error_string(e));
            return v->accept_untrusted;
        }
        validated = true;
    }
    const char *auto_sni =
        !x->cfg.server && (x->cfg.auto_sni_san_validation || c->auto_san) && c->sni ? c->sni : NULL;
    if (auto_sni || v->nsans) {
        if (!match_sans(x, leaf, auto_sni)) {
            sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_SAN, "verify cert failed: SAN matcher");
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_HOSTNAME_MISMATCH);
            return v->accept_untrusted;
        }
        validated = true;
    }
    if (v->nhashes || v->nspki) {
        if (!match_pins(x, leaf)) {
            sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_CERT_HASH, "verify cert failed: cert hash and spki");
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
            return v->accept_untrusted;
        }
        validated = true;
    }
    if (!validated && !v->accept_untrusted) {
        /* Envoy: without a trusted CA, some check must have validated it. */
        sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_ERROR, "verify cert failed: nothing to verify against");
        return 0;
    }
    return 1;
}

static int load_pem_store(SSL_CTX *ctx, const char *pem, size_t len, bool want_certs, size_t *ncerts, size_t *ncrls)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!infos) return -1;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    *ncerts = *ncrls = 0;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *it = sk_X509_INFO_value(infos, i);
        if (it->x509 && want_certs) {
            X509_STORE_add_cert(store, it->x509);
            (*ncerts)++;
        }
        if (it->crl) {
            X509_STORE_add_crl(store, it->crl);
            (*ncrls)++;
        }
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    ERR_clear_error();
    return 0;
}

/* ---- client sessions ---------------------------------------------------------------- */

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    sharp_tls_ctx_t *x = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!x->cfg.max_session_keys) return 0;
    pthread_mutex_lock(&x->lock);
    if (x->nsessions == x->cfg.max_session_keys) {
        SSL_SESSION_free(x->sessions[0]);
        memmove(x->sessions, x->sessions + 1, (x->nsessions - 1) * sizeof *x->sessions);
        x->nsessions--;
    }
    x->sessions[x->nsessions++] = sess;
    pthread_mutex_unlock(&x->lock);
    return 1; /* the reference is ours */
}

SSL_SESSION *sharp_tls_ctx_take_session(sharp_tls_ctx_t *x)
{
    SSL_SESSION *s = NULL;
    pthread_mutex_lock(&x->lock);
    if (x->nsessions) {
        s = x->sessions[x->nsessions - 1];
        if (SSL_SESSION_get_protocol_version(s) >= TLS1_3_VERSION) {
            /* TLS 1.3 tickets are single-use (RFC 8446 C.4), as Envoy treats them. */
            x->nsessions--;
        } else {
            SSL_SESSION_up_ref(s);
        }
    }
    pthread_mutex_unlock(&x->lock);
    return s;
}

size_t sharp_tls_ctx_stored_sessions(sharp_tls_ctx_t *x)
{
    pthread_mutex_lock(&x->lock);
    size_t n = x->nsessions;
    pthread_mutex_unlock(&x->lock);
    return n;
}

/* ---- the context -------------------------------------------------------------------- */

/* Ties sessions to this configuration: contexts built from the same
 * certificates and verification settings (another worker, a reload)
 * resume each other's sessions; a different verification policy cannot. */
static void session_id_context(sharp_tls_ctx_t *x)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_DigestInit_ex(m, EVP_sha256(), NULL);
    for (size_t i = 0; i < x->ncerts; i++) {
        unsigned char d[SHA256_DIGEST_LENGTH];
        unsigned dl = 0;
        X509_digest(x->certs[i].leaf, EVP_sha256(), d, &dl);
        EVP_DigestUpdate(m, d, dl);
    }
    const sharp_tls_validation_config_t *v = &x->cfg.validation;
    if (v->ca) EVP_DigestUpdate(m, v->ca, v->ca_len);
    if (v->crl) EVP_DigestUpdate(m, v->crl, v->crl_len);
    if (v->nhashes) EVP_DigestUpdate(m, v->hashes, v->nhashes * sizeof *v->hashes);
    if (v->nspki) EVP_DigestUpdate(m, v->spki, v->nspki * sizeof *v->spki);
    for (size_t i = 0; i < v->nsans; i++) {
        EVP_DigestUpdate(m, &v->sans[i].type, sizeof v->sans[i].type);
        EVP_DigestUpdate(m, v->sans[i].matcher.value, v->sans[i].matcher.len);
    }
    unsigned char flags[3] = {x->cfg.require_client_cert, v->allow_expired, v->accept_untrusted};
    EVP_DigestUpdate(m, flags, sizeof flags);
    EVP_DigestFinal_ex(m, md, NULL);
    EVP_MD_CTX_free(m);
    SSL_CTX_set_session_id_context(x->ssl_ctx, md, SSL_MAX_SID_CTX_LENGTH);
}

/* Envoy's strict cipher list: every entry must be known on its own. */
static int set_ciphers(SSL_CTX *ctx, const char *list, char *err, size_t errlen)
{
    sharp_sbuf_t bad = {0};
    char *copy = sharp_strdup(list), *save = NULL;
    for (char *t = strtok_r(copy, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
        if (*t == '!' || *t == '-' || *t == '+' || *t == '@') continue;
        if (SSL_CTX_set_cipher_list(ctx, t) != 1) {
            if (bad.len) sharp_sbuf_append(&bad, ",", 1);
            sharp_sbuf_append(&bad, t, strlen(t));
        }
    }
    free(copy);
    ERR_clear_error();
    int rc = 0;
    if (bad.len || SSL_CTX_set_cipher_list(ctx, list) != 1)
        rc = fail(err, errlen, "Failed to initialize cipher suites %s. The following ciphers were rejected when tried "
                  "individually: %s", list, bad.len ? sharp_sbuf_cstr(&bad) : "");
    sharp_sbuf_free(&bad);
    ERR_clear_error();
    return rc;
}

static void ctx_free(sharp_tls_ctx_t *x)
{
    SSL_CTX_free(x->ssl_ctx);
    for (size_t i = 0; i < x->ncerts; i++) cert_free(&x->certs[i]);
    free(x->certs);
    for (size_t i = 0; i < x->nsessions; i++) SSL_SESSION_free(x->sessions[i]);
    free(x->sessions);
    pthread_mutex_destroy(&x->lock);
    sharp_tls_config_free(&x->cfg);
    free(x);
}

sharp_tls_ctx_t *sharp_tls_ctx_create(sharp_tls_config_t *cfg, char *err, size_t errlen)
{
    sharp_tls_ctx_t *x = sharp_calloc(1, sizeof *x);
    x->refs = 1;
    pthread_mutex_init(&x->lock, NULL);
    const sharp_tls_validation_config_t *v = &cfg->validation;
    if (cfg->server && cfg->require_client_cert && !v->ca && !v->nsans && !v->nhashes && !v->nspki &&
        !v->accept_untrusted) {
        fail(err, errlen, "require_client_certificate: a client certificate is required but validation_context "
             "has nothing to verify it against (trusted_ca, SAN matchers or certificate pins)");
        goto bad;
    }
    x->ssl_ctx = SSL_CTX_new(cfg->server ? TLS_server_method() : TLS_client_method());
    if (!x->ssl_ctx) {
        fail(err, errlen, "cannot create an OpenSSL context: %s", ssl_error());
        goto bad;
    }
    SSL_CTX *ctx = x->ssl_ctx;
    SSL_CTX_set_app_data(ctx, x);
    SSL_CTX_set_min_proto_version(ctx, cfg->min_version);
    SSL_CTX_set_max_proto_version(ctx, cfg->max_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (set_ciphers(ctx, cfg->cipher_list, err, errlen) < 0) goto bad;
    /* TLS 1.3's suites are not configurable in Envoy: BoringSSL's own
     * order, AES-128-GCM first, then AES-256-GCM and ChaCha20-Poly1305
     * (OpenSSL's default puts AES-256-GCM first, some 40% more CPU per
     * byte than AES-128-GCM for the same security level Envoy gives). */
    if (SSL_CTX_set_ciphersuites(ctx, SHARP_TLS13_CIPHERSUITES) != 1) {
        fail(err, errlen, "Failed to initialize TLS 1.3 cipher suites %s", SHARP_TLS13_CIPHERSUITES);
        goto bad;
    }
    if (SSL_CTX_set1_groups_list(ctx, cfg->curves) != 1) {
        fail(err, errlen, "Failed to initialize ECDH curves %s", cfg->curves);
        goto bad;
    }
    if (SSL_CTX_set1_sigalgs_list(ctx, cfg->sigalgs) != 1) {
        fail(err, errlen, "Failed to initialize TLS signature algorithms %s", cfg->sigalgs);
        goto bad;
    }
    ERR_clear_error();

    if (cfg->ncerts) {
        x->certs = sharp_calloc(cfg->ncerts, sizeof *x->certs);
        for (size_t i = 0; i < cfg->ncerts; i++) {
            x->ncerts++;
            if (load_cert(&cfg->certs[i], &x->certs[i], err, errlen) < 0) goto bad;
            if (!cfg->server) continue; /* a client's staple is read, and left (Envoy) */
            if (load_ocsp(&cfg->certs[i], &x->certs[i], err, errlen) < 0) goto bad;
            /* Envoy's ServerContextImpl: without a staple */
            if (!x->certs[i].ocsp && x->certs[i].must_staple) {
                fail(err, errlen, "OCSP response is required for must-staple certificate");
                goto bad;
            }
            if (!x->certs[i].ocsp && cfg->ocsp_policy == SHARP_TLS_OCSP_MUST_STAPLE) {
                fail(err, errlen, "Required OCSP response is missing from TLS context");
                goto bad;
            }
        }
    }

    /* Verification, as Envoy's DefaultCertValidator::initializeSslContexts. */
    int mode = SSL_VERIFY_NONE, mode_checks = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    if (v->accept_untrusted) mode = mode_checks = SSL_VERIFY_PEER;
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    if (v->ca) {
        size_t ncerts, ncrls;
        if (load_pem_store(ctx, v->ca, v->ca_len, true, &ncerts, &ncrls) < 0 || !ncerts) {
            fail(err, errlen, "Failed to load trusted CA certificates from %s", v->ca_source);
            goto bad;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
        if (ncrls) X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        if (v->allow_expired) X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);
        mode = SSL_VERIFY_PEER;
        x->verify_ca = true;
    }
    if (v->crl) {
        size_t ncerts, ncrls;
        if (load_pem_store(ctx, v->crl, v->crl_len, false, &ncerts, &ncrls) < 0 || !ncrls) {
            fail(err, errlen, "Failed to load CRL from %s", v->crl_source);
            goto bad;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN | X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    }
    if (v->nsans || v->nhashes || v->nspki || (!cfg->server && cfg->auto_sni_san_validation)) mode = mode_checks;

    if (cfg->server) {
        if (cfg->require_client_cert) mode |= SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, x);
        SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
        SSL_CTX_set_tlsext_status_arg(ctx, x);
        if (x->ncerts == 1 &&
            SSL_CTX_use_cert_and_key(ctx, x->certs[0].leaf, x->certs[0].key, x->certs[0].chain, 1) != 1) {
            fail(err, errlen, "Failed to load certificate chain from %s", cfg->certs[0].chain_source);
            goto bad;
        }
        if (cfg->alpn) SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, x);
        /* with its own order, a client that lists ChaCha20-Poly1305 first
         * (one without AES instructions) gets it, as BoringSSL decides */
        if (!cfg->prefer_client_ciphers)
            SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
        /* OpenSSL reads a timeout of 0 as "its default"; a session that
         * lasts 0 seconds is one never resumed. */
        bool zero_timeout = cfg->has_session_timeout && cfg->session_timeout_s == 0;
        bool stateless = !cfg->disable_stateless_resumption && !zero_timeout;
        bool stateful = !cfg->disable_stateful_resumption && !zero_timeout;
        if (!stateless) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        else if (cfg->nticket_keys) SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
        SSL_CTX_set_session_cache_mode(ctx, stateful ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_OFF);
        /* With both kinds off, TLS 1.3 must not send (stateful) tickets either. */
        if (!stateless && !stateful) SSL_CTX_set_num_tickets(ctx, 0);
        if (cfg->has_session_timeout && !zero_timeout) SSL_CTX_set_timeout(ctx, cfg->session_timeout_s);
        session_id_context(x);
    } else {
        if (x->ncerts) {
            sharp_tls_cert_t *c = &x->certs[0];
            if (SSL_CTX_use_cert_and_key(ctx, c->leaf, c->key, c->chain, 1) != 1) {
                fail(err, errlen, "Failed to load certificate chain from %s", cfg->certs[0].chain_source);
                goto bad;
            }
        }
        if (cfg->alpn && SSL_CTX_set_alpn_protos(ctx, cfg->alpn, (unsigned)cfg->alpn_len) != 0) {
            fail(err, errlen, "Failed to initialize ALPN protocols");
            goto bad;
        }
        if (cfg->max_session_keys) {
            x->sessions = sharp_calloc(cfg->max_session_keys, sizeof *x->sessions);
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        } else {
            SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
            SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        }
    }
    if (mode != SSL_VERIFY_NONE) SSL_CTX_set_cert_verify_callback(ctx, verify_cb, x);
    SSL_CTX_set_verify(ctx, mode, NULL);

    x->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    return x;
bad:
    /* cfg stays the caller's */
    SSL_CTX_free(x->ssl_ctx);
    for (size_t i = 0; i < x->ncerts; i++) cert_free(&x->certs[i]);
    free(x->certs);
    free(x->sessions);
    pthread_mutex_destroy(&x->lock);
    free(x);
    ERR_clear_error();
    return NULL;
}

void sharp_tls_ctx_ref(sharp_tls_ctx_t *x)
{
    __atomic_add_fetch(&x->refs, 1, __ATOMIC_RELAXED);
}

void sharp_tls_ctx_unref(sharp_tls_ctx_t *x)
{
    if (x && __atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) == 0) ctx_free(x);
}

sharp_tls_slot_t *sharp_tls_slot_new(sharp_tls_ctx_t *ctx)
{
    sharp_tls_slot_t *s = sharp_calloc(1, sizeof *s);
    atomic_init(&s->ctx, ctx);
    atomic_init(&s->refs, 1);
    return s;
}

sharp_tls_slot_t *sharp_tls_slot_ref(sharp_tls_slot_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

bool sharp_tls_slot_alone(sharp_tls_slot_t *s)
{
    return atomic_load_explicit(&s->refs, memory_order_acquire) == 1;
}

static void unref_retired(void *p)
{
    sharp_tls_ctx_unref(p);
}

void sharp_tls_slot_set(sharp_tls_slot_t *s, sharp_tls_ctx_t *ctx)
{
    sharp_tls_ctx_t *old = atomic_exchange_explicit(&s->ctx, ctx, memory_order_acq_rel);
    /* a worker may have loaded `old` and not yet taken its reference */
    sharp_retire(old, unref_retired);
}

void sharp_tls_slot_free(sharp_tls_slot_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    sharp_tls_ctx_unref(atomic_load_explicit(&s->ctx, memory_order_relaxed));
    free(s);
}

bool sharp_tls_ctx_is_server(const sharp_tls_ctx_t *x)
{
    return x->cfg.server;
}

const sharp_tls_config_t *sharp_tls_ctx_config(const sharp_tls_ctx_t *x)
{
    return &x->cfg;
}

/* ---- what /certs shows (Envoy's CertificateDetails) ---- */

static void json_time(sharp_sbuf_t *b, const char *key, const ASN1_TIME *t)
{
    struct tm tm;
    char out[32] = "";
    if (t && ASN1_TIME_to_tm(t, &tm) == 1) strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sharp_sbuf_printf(b, ",\"%s\":\"%s\"", key, out);
}

static void json_epoch(sharp_sbuf_t *b, const char *key, int64_t t)
{
    struct tm tm;
    char out[32] = "";
    time_t tt = (time_t)t;
    if (gmtime_r(&tt, &tm)) strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%SZ", &tm);
    sharp_sbuf_printf(b, "\"%s\":\"%s\"", key, out);
}

/* One certificate's details; its days until expiration (0 once expired).
 * `c`: a server's certificate, whose staple is shown as Envoy's
 * ocsp_details (thisUpdate, and nextUpdate or now without one). */
static int64_t cert_details(sharp_sbuf_t *b, X509 *x, const char *path, const sharp_tls_cert_t *c)
{
    sharp_sbuf_puts(b, "{\"path\":\"");
    sharp_sbuf_json_escape(b, path ? path : "<inline>", strlen(path ? path : "<inline>"));
    sharp_sbuf_puts(b, "\",\"serial_number\":\"");
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    for (char *p = hex; p && *p; p++) *p = (char)tolower((unsigned char)*p);
    if (hex) sharp_sbuf_puts(b, hex);
    OPENSSL_free(hex);
    BN_free(bn);
    sharp_sbuf_puts(b, "\",\"subject_alt_names\":[");
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int first = 1;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *kind = NULL;
        char ip[INET6_ADDRSTRLEN] = "";
        const unsigned char *v = NULL;
        int len = 0;
        if (g->type == GEN_DNS) kind = "dns", v = ASN1_STRING_get0_data(g->d.dNSName), len = ASN1_STRING_length(g->d.dNSName);
        else if (g->type == GEN_URI)
            kind = "uri", v = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
            len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        else if (g->type == GEN_IPADD) {
            int n = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
            if (n == 4 || n == 16) inet_ntop(n == 4 ? AF_INET : AF_INET6, a, ip, sizeof ip);
            kind = "ip_address", v = (const unsigned char *)ip, len = (int)strlen(ip);
        }
        if (!kind) continue;
        sharp_sbuf_printf(b, "%s{\"%s\":\"", first ? "" : ",", kind);
        sharp_sbuf_json_escape(b, (const char *)v, (size_t)len);
        sharp_sbuf_puts(b, "\"}");
        first = 0;
    }
    GENERAL_NAMES_free(names);
    sharp_sbuf_puts(b, "]");
    int days = 0, secs = 0;
    int64_t left = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) == 1 && (days > 0 || (days == 0 && secs > 0)))
        left = days;
    /* uint64 fields are strings in protobuf's JSON */
    sharp_sbuf_printf(b, ",\"days_until_expiration\":\"%lld\"", (long long)left);
    json_time(b, "valid_from", X509_get0_notBefore(x));
    json_time(b, "expiration_time", X509_get0_notAfter(x));
    if (c && c->ocsp) {
        sharp_sbuf_puts(b, ",\"ocsp_details\":{");
        json_epoch(b, "valid_from", c->this_update);
        sharp_sbuf_puts(b, ",");
        json_epoch(b, "expiration", c->has_next_update ? c->next_update : (int64_t)time(NULL));
        sharp_sbuf_puts(b, "}");
    }
    sharp_sbuf_puts(b, "}");
    return left;
}

static X509 *first_cert(const char *pem, size_t len)
{
    if (!pem || !len) return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

int64_t sharp_tls_ctx_certs_json(const sharp_tls_ctx_t *ctx, sharp_sbuf_t *b)
{
    int64_t min = INT64_MAX;
    sharp_sbuf_puts(b, "{\"ca_cert\":[");
    X509 *ca = first_cert(ctx->cfg.validation.ca, ctx->cfg.validation.ca_len);
    if (ca) {
        int64_t d = cert_details(b, ca, ctx->cfg.validation.ca_source, NULL);
        if (d < min) min = d;
        X509_free(ca);
    }
    sharp_sbuf_puts(b, "],\"cert_chain\":[");
    bool first = true;
    for (size_t i = 0; i < ctx->cfg.ncerts; i++) {
        X509 *x = first_cert(ctx->cfg.certs[i].chain, ctx->cfg.certs[i].chain_len);
        if (!x) continue;
        if (!first) sharp_sbuf_puts(b, ",");
        first = false;
        int64_t d = cert_details(b, x, ctx->cfg.certs[i].chain_source, i < ctx->ncerts ? &ctx->certs[i] : NULL);
        if (d < min) min = d;
        X509_free(x);
    }
    sharp_sbuf_puts(b, "]}");
    return min;
}

int64_t sharp_tls_ctx_days_until_first_expiry(sharp_tls_ctx_t *ctx)
{
    if (!ctx->first_expiry_read) {
        ctx->first_expiry_read = true;
        ctx->first_expiry = INT64_MAX;
        for (size_t i = 0; i <= ctx->cfg.ncerts; i++) {
            X509 *x = i < ctx->cfg.ncerts ? first_cert(ctx->cfg.certs[i].chain, ctx->cfg.certs[i].chain_len)
                                          : first_cert(ctx->cfg.validation.ca, ctx->cfg.validation.ca_len);
            struct tm tm;
            if (x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
                int64_t t = (int64_t)timegm(&tm);
                if (t < ctx->first_expiry) ctx->first_expiry = t;
            }
            X509_free(x);
        }
    }
    if (ctx->first_expiry == INT64_MAX) return -1;
    int64_t left = ctx->first_expiry - (int64_t)time(NULL);
    return left > 0 ? left / 86400 : 0;
}
