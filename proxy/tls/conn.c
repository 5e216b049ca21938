/* conn.c: see conn.h. */
#include "tls/internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "common.h"

#define TLS_RECORD_MAX 16384

void sharp_tls_conn_set_failure(sharp_tls_conn_t *c, sharp_tls_failure_t f, const char *fmt, ...)
{
    if (c->failure != SHARP_TLS_FAIL_NONE) return;
    c->failure = f;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
}

void sharp_tls_conn_set_auto_san(sharp_tls_conn_t *c)
{
    c->auto_san = true;
}

sharp_tls_conn_t *sharp_tls_conn_new(sharp_tls_ctx_t *ctx, const char *sni, sharp_tls_on_data_cb on_data, void *ud)
{
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    if (!ssl) return NULL;
    sharp_tls_conn_t *c = sharp_calloc(1, sizeof *c);
    c->refs = 1;
    sharp_tls_ctx_ref(ctx);
    c->ctx = ctx;
    c->ssl = ssl;
    c->on_data = on_data;
    c->ud = ud;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    /* An empty input BIO means "wait for more", not end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(ssl, c->rbio, c->wbio);
    SSL_set_app_data(ssl, c);
    if (ctx->cfg.server) {
        SSL_set_accept_state(ssl);
    } else {
        const char *name = sni && *sni ? sni : ctx->cfg.sni;
        if (name) {
            c->sni = sharp_strdup(name);
            SSL_set_tlsext_host_name(ssl, name);
        }
        SSL_SESSION *s = sharp_tls_ctx_take_session(ctx);
        /* a session made with another server name is not resumed: its
         * certificate was checked for that name (a dynamic forward proxy's
         * hosts, or auto_host_sni's, share one context) */
        const char *was = s ? SSL_SESSION_get0_hostname(s) : NULL;
        if (s && was && (!name || strcmp(was, name) != 0)) {
            SSL_SESSION_free(s);
            s = NULL;
        }
        if (s) {
            SSL_set_session(ssl, s);
            SSL_SESSION_free(s);
        }
        SSL_set_connect_state(ssl);
    }
    return c;
}

void sharp_tls_conn_ref(sharp_tls_conn_t *c)
{
    c->refs++;
}

void sharp_tls_conn_free(sharp_tls_conn_t *c)
{
    if (!c || --c->refs > 0) return;
    SSL_free(c->ssl); /* frees both BIOs */
    sharp_tls_ctx_unref(c->ctx);
    free(c->sni);
    free(c->failure_reason);
    free(c->local_subject);
    free(c);
}

size_t sharp_tls_conn_feed(sharp_tls_conn_t *c, const void *data, size_t len)
{
    if (c->state == SHARP_TLS_FAILED) return 0;
    size_t held = BIO_ctrl_pending(c->rbio);
    if (held >= SHARP_TLS_MAX_CIPHERTEXT_IN) return 0;
    size_t n = len < SHARP_TLS_MAX_CIPHERTEXT_IN - held ? len : SHARP_TLS_MAX_CIPHERTEXT_IN - held;
    if (!n) return 0;
    int w = BIO_write(c->rbio, data, (int)n);
    return w > 0 ? (size_t)w : 0;
}

#define FAILURE_REASON_MAX_ERRORS 8 /* queue entries kept in the failure reason */

/* OpenSSL wants the thread's error queue empty before an SSL_* call whose
 * result SSL_get_error reads. Clearing an empty queue still walks and
 * frees all its slots (about 900 instructions, three times a keep-alive
 * request), so the queue is looked at first: empty, as it nearly always
 * is (a failure empties it into its reason), costs a peek. */
static inline void clear_error_queue(void)
{
    if (ERR_peek_error() != 0) ERR_clear_error();
}

/* Envoy's drainErrorQueue text from what is left in OpenSSL's error queue
 * (which it empties): see sharp_tls_conn_failure_reason. */
static void record_failure_reason(sharp_tls_conn_t *c)
{
    if (c->failure_reason) {
        ERR_clear_error();
        return;
    }
    sharp_sbuf_t b = {0};
    bool verify_failed = false, no_cert = false;
    unsigned long e;
    int n = 0;
    while ((e = ERR_get_error()) != 0) {
        if (n++ >= FAILURE_REASON_MAX_ERRORS) continue;
        int lib = ERR_GET_LIB(e);
        if (lib == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) verify_failed = true;
        if (lib == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) no_cert = true;
        const char *libname = ERR_lib_error_string(e), *reason = ERR_reason_error_string(e);
        sharp_sbuf_puts(&b, b.len ? "|" : "TLS_error:|");
        sharp_sbuf_printf(&b, "%lu:%s:OPENSSL_internal:", e, libname ? libname : "");
        /* BoringSSL's reasons are their macro names; OpenSSL's texts are
         * those names in lower case with spaces. A system error keeps its
         * strerror text, as BoringSSL's does. */
        for (const char *r = reason ? reason : ""; *r; r++) {
            char ch = *r;
            if (lib != ERR_LIB_SYS) ch = ch == ' ' ? '_' : (char)toupper((unsigned char)ch);
            sharp_sbuf_append(&b, &ch, 1);
        }
    }
    if (!b.len) return;
    /* Envoy adds the certificate validator's detail ("verify cert failed:
     * SAN matcher") to a failed verification */
    if (verify_failed && c->failure != SHARP_TLS_FAIL_NONE && c->failure != SHARP_TLS_FAIL_CONNECTION && c->error[0])
        sharp_sbuf_printf(&b, ":%s", c->error);
    else if (no_cert)
        sharp_sbuf_puts(&b, ":peer did not provide required client certificate");
    sharp_sbuf_puts(&b, ":TLS_error_end");
    c->failure_reason = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
}

/* Classifies a failed handshake or read for the stats and the log. */
static void failed(sharp_tls_conn_t *c)
{
    c->state = SHARP_TLS_FAILED;
    unsigned long e = ERR_peek_error();
    if (c->failure == SHARP_TLS_FAIL_NONE) {
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
            sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_VERIFY_NO_CERT, "verify cert failed: peer did not return a certificate");
        } else {
            char buf[200] = "connection error";
            if (e) ERR_error_string_n(e, buf, sizeof buf);
            sharp_tls_conn_set_failure(c, SHARP_TLS_FAIL_CONNECTION, "%s", buf);
        }
    }
    record_failure_reason(c);
}

sharp_tls_state_t sharp_tls_conn_process(sharp_tls_conn_t *c)
{
    if (c->state == SHARP_TLS_HANDSHAKING) {
        clear_error_queue();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return c->state;
            failed(c);
            return c->state;
        }
        c->state = SHARP_TLS_OPEN;
        if (c->ctx->cfg.server) {
            const char *sn = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
            if (sn && !c->sni) c->sni = sharp_strdup(sn);
        }
    }
    if (c->state != SHARP_TLS_OPEN) return c->state;
    /* Reading also takes in post-handshake messages (TLS 1.3 tickets). */
    uint8_t buf[TLS_RECORD_MAX];
    while (!c->paused) {
        size_t got = 0;
        clear_error_queue();
        if (SSL_read_ex(c->ssl, buf, sizeof buf, &got) == 1) {
            if (c->on_data && !c->on_data(c->ud, buf, got)) c->paused = true;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->close_received = true;
            c->state = SHARP_TLS_PEER_CLOSED;
            break;
        }
        failed(c);
        break;
    }
    return c->state;
}

void sharp_tls_conn_resume(sharp_tls_conn_t *c)
{
    c->paused = false;
}

size_t sharp_tls_conn_write(sharp_tls_conn_t *c, const void *data, size_t len)
{
    /* After the peer's close_notify our side stays open (a half-close): a
     * response to what came before it may still be written. */
    if ((c->state != SHARP_TLS_OPEN && c->state != SHARP_TLS_PEER_CLOSED) || c->close_sent) return 0;
    size_t done = 0;
    while (done < len && BIO_ctrl_pending(c->wbio) < SHARP_TLS_MAX_CIPHERTEXT_OUT) {
        size_t n = len - done < TLS_RECORD_MAX ? len - done : TLS_RECORD_MAX, w = 0;
        clear_error_queue();
        if (SSL_write_ex(c->ssl, (const uint8_t *)data + done, n, &w) != 1) {
            int e = SSL_get_error(c->ssl, 0);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) failed(c);
            break;
        }
        done += w;
    }
    return done;
}

size_t sharp_tls_conn_pending(const sharp_tls_conn_t *c)
{
    return BIO_ctrl_pending(c->wbio);
}

size_t sharp_tls_conn_drain(sharp_tls_conn_t *c, void *buf, size_t cap)
{
    if (!cap) return 0;
    int n = BIO_read(c->wbio, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return n > 0 ? (size_t)n : 0;
}

void sharp_tls_conn_close(sharp_tls_conn_t *c)
{
    if (c->close_sent || c->state == SHARP_TLS_FAILED || c->state == SHARP_TLS_HANDSHAKING) {
        c->close_sent = true;
        return;
    }
    c->close_sent = true;
    clear_error_queue();
    SSL_shutdown(c->ssl);
    clear_error_queue();
}

sharp_tls_state_t sharp_tls_conn_state(const sharp_tls_conn_t *c)
{
    return c->state;
}

sharp_tls_failure_t sharp_tls_conn_failure(const sharp_tls_conn_t *c)
{
    return c->failure;
}

sharp_tls_ocsp_t sharp_tls_conn_ocsp(const sharp_tls_conn_t *c)
{
    return c->ocsp;
}

const char *sharp_tls_conn_error(const sharp_tls_conn_t *c)
{
    return c->error;
}

const char *sharp_tls_conn_failure_reason(const sharp_tls_conn_t *c)
{
    return c->failure_reason;
}

bool sharp_tls_conn_close_notify_received(const sharp_tls_conn_t *c)
{
    return c->close_received;
}

const char *sharp_tls_conn_version(const sharp_tls_conn_t *c)
{
    return c->state == SHARP_TLS_HANDSHAKING ? NULL : SSL_get_version(c->ssl);
}

const char *sharp_tls_conn_cipher(const sharp_tls_conn_t *c)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
    return ci ? SSL_CIPHER_get_name(ci) : NULL;
}

const char *sharp_tls_conn_curve(const sharp_tls_conn_t *c)
{
    if (c->state == SHARP_TLS_HANDSHAKING) return NULL;
    int nid = SSL_get_negotiated_group(c->ssl);
    if (nid == NID_undef || nid == 0) return NULL;
    /* BoringSSL's names, which Envoy's ssl.curves.<name> use */
    switch (nid) {
    case NID_X25519: return "X25519";
    case NID_X448: return "X448";
    case NID_X9_62_prime256v1: return "P-256";
    case NID_secp384r1: return "P-384";
    case NID_secp521r1: return "P-521";
    default: break;
    }
    const char *n = SSL_group_to_name(c->ssl, nid);
    return n ? n : OBJ_nid2sn(nid);
}

const char *sharp_tls_conn_alpn(const sharp_tls_conn_t *c)
{
    /* The selected protocol is not NUL-terminated inside OpenSSL. */
    static __thread char buf[256];
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    if (!p || !len) return NULL;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

const char *sharp_tls_conn_sni(const sharp_tls_conn_t *c)
{
    return c->sni;
}

bool sharp_tls_conn_session_reused(const sharp_tls_conn_t *c)
{
    return c->state != SHARP_TLS_HANDSHAKING && SSL_session_reused(c->ssl);
}

/* BoringSSL's name of a hash in a signature algorithm ("sha256"). */
static const char *sigalg_hash(int nid)
{
    switch (nid) {
    case NID_sha1: return "sha1";
    case NID_sha256: return "sha256";
    case NID_sha384: return "sha384";
    case NID_sha512: return "sha512";
    case NID_md5_sha1: return "md5_sha1";
    default: return NULL;
    }
}

const char *sharp_tls_conn_peer_sigalg(const sharp_tls_conn_t *c)
{
    if (c->state == SHARP_TLS_HANDSHAKING) return NULL;
    int type = NID_undef, hash = NID_undef;
    if (SSL_get_peer_signature_type_nid(c->ssl, &type) != 1) return NULL;
    if (SSL_get_peer_signature_nid(c->ssl, &hash) != 1) hash = NID_undef;
    const char *h = sigalg_hash(hash);
    /* the TLS code points' names: static strings, so a counter name can
     * be made from them without copying */
    static const char *const pkcs1[] = {"rsa_pkcs1_sha1", "rsa_pkcs1_sha256", "rsa_pkcs1_sha384", "rsa_pkcs1_sha512",
                                        "rsa_pkcs1_md5_sha1"};
    static const char *const rsae[] = {NULL, "rsa_pss_rsae_sha256", "rsa_pss_rsae_sha384", "rsa_pss_rsae_sha512",
                                       NULL};
    static const char *const pss[] = {NULL, "rsa_pss_pss_sha256", "rsa_pss_pss_sha384", "rsa_pss_pss_sha512", NULL};
    /* with the curve, as Envoy asks BoringSSL (include_curve): the TLS 1.3
     * code points, which TLS 1.2's ecdsa_<hash> share */
    static const char *const ecdsa[] = {"ecdsa_sha1", "ecdsa_secp256r1_sha256", "ecdsa_secp384r1_sha384",
                                        "ecdsa_secp521r1_sha512", NULL};
    int i = !h ? -1 : !strcmp(h, "sha1") ? 0 : !strcmp(h, "sha256") ? 1 : !strcmp(h, "sha384") ? 2
                    : !strcmp(h, "sha512") ? 3 : 4;
    switch (type) {
    case EVP_PKEY_ED25519: return "ed25519";
    case EVP_PKEY_ED448: return "ed448";
    case EVP_PKEY_RSA: return i >= 0 ? pkcs1[i] : NULL;
    case EVP_PKEY_EC: return i >= 0 ? ecdsa[i] : NULL;
    case EVP_PKEY_RSA_PSS: {
        /* rsae: an rsaEncryption key signing with PSS; pss: an RSASSA-PSS key */
        X509 *peer = SSL_get0_peer_certificate(c->ssl);
        EVP_PKEY *k = peer ? X509_get0_pubkey(peer) : NULL;
        bool pss_key = k && EVP_PKEY_get_id(k) == EVP_PKEY_RSA_PSS;
        return i >= 0 ? (pss_key ? pss[i] : rsae[i]) : NULL;
    }
    default: return NULL;
    }
}

bool sharp_tls_conn_peer_has_cert(const sharp_tls_conn_t *c)
{
    return SSL_get0_peer_certificate(c->ssl) != NULL;
}

char *sharp_tls_name_string(X509_NAME *name)
{
    if (!name) return NULL;
    BIO *b = BIO_new(BIO_s_mem());
    X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = sharp_realloc(NULL, (size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    BIO_free(b);
    return s;
}

char *sharp_tls_conn_peer_subject(const sharp_tls_conn_t *c)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    return x ? sharp_tls_name_string(X509_get_subject_name(x)) : NULL;
}

const char *sharp_tls_conn_local_subject(sharp_tls_conn_t *c)
{
    X509 *x = SSL_get_certificate(c->ssl);
    if (!x) return NULL;
    /* the context's certificates have theirs made at load: printing a
     * name costs more than the rest of a resumed handshake's bookkeeping */
    for (size_t i = 0; i < c->ctx->ncerts; i++)
        if (c->ctx->certs[i].leaf == x) return c->ctx->certs[i].subject;
    if (!c->local_subject) c->local_subject = sharp_tls_name_string(X509_get_subject_name(x));
    return c->local_subject;
}

char *sharp_tls_conn_peer_uri_san(const sharp_tls_conn_t *c)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    if (!x) return NULL;
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char *out = NULL;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && !out; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_URI) continue;
        int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        out = sharp_realloc(NULL, (size_t)n + 1);
        memcpy(out, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), (size_t)n);
        out[n] = '\0';
    }
    GENERAL_NAMES_free(sans);
    return out;
}

char **sharp_tls_conn_peer_sans(const sharp_tls_conn_t *c, int type)
{
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    GENERAL_NAMES *sans = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    char **out = NULL;
    size_t n = 0;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != type) continue;
        const ASN1_STRING *as = type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
        int len = ASN1_STRING_length(as);
        out = sharp_realloc(out, (n + 2) * sizeof *out);
        out[n] = sharp_realloc(NULL, (size_t)len + 1);
        memcpy(out[n], ASN1_STRING_get0_data(as), (size_t)len);
        out[n][len] = '\0';
        out[++n] = NULL;
    }
    GENERAL_NAMES_free(sans);
    return out;
}

void sharp_tls_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++) free(v[i]);
    free(v);
}

/* ---- Envoy's Ssl::ConnectionInfo, for the access log ---- */

/* Envoy's Utility::getSubjectAltNames: each SAN of the type, ','-joined;
 * IP addresses in their text form. */
static bool put_sans(sharp_sbuf_t *out, X509 *x, int type)
{
    GENERAL_NAMES *sans = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    size_t at = out->len;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != type) continue;
        size_t before = out->len;
        if (out->len > at) sharp_sbuf_append(out, ",", 1);
        if (type == GEN_IPADD) {
            const ASN1_OCTET_STRING *ip = g->d.iPAddress;
            char text[INET6_ADDRSTRLEN];
            int fam = ASN1_STRING_length(ip) == 4 ? AF_INET : ASN1_STRING_length(ip) == 16 ? AF_INET6 : 0;
            if (!fam || !inet_ntop(fam, ASN1_STRING_get0_data(ip), text, sizeof text)) {
                out->len = before; /* not an address: left out */
                continue;
            }
            sharp_sbuf_puts(out, text);
        } else {
            const ASN1_IA5STRING *v = type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
            sharp_sbuf_append(out, (const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
        }
    }
    GENERAL_NAMES_free(sans);
    return out->len > at;
}

static bool put_name(sharp_sbuf_t *out, X509_NAME *name)
{
    char *s = sharp_tls_name_string(name);
    bool ok = s && s[0];
    if (ok) sharp_sbuf_puts(out, s);
    free(s);
    return ok;
}

static void xfcc_pem(sharp_sbuf_t *b, X509 *x);

bool sharp_tls_conn_put_info(const sharp_tls_conn_t *c, sharp_tls_info_t what, sharp_sbuf_t *out)
{
    if (c->state == SHARP_TLS_HANDSHAKING) return false;
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    switch (what) {
    case SHARP_TLS_INFO_VERSION: {
        const char *v = SSL_get_version(c->ssl);
        if (!v || !*v) return false;
        sharp_sbuf_puts(out, v);
        return true;
    }
    case SHARP_TLS_INFO_CIPHER: {
        const char *v = sharp_tls_conn_cipher(c);
        if (!v || !*v) return false;
        sharp_sbuf_puts(out, v);
        return true;
    }
    case SHARP_TLS_INFO_SESSION_ID: {
        SSL_SESSION *sess = SSL_get_session(c->ssl);
        unsigned int len = 0;
        const unsigned char *id = sess ? SSL_SESSION_get_id(sess, &len) : NULL;
        if (!id || !len) return false;
        for (unsigned int i = 0; i < len; i++) sharp_sbuf_printf(out, "%02x", id[i]);
        return true;
    }
    case SHARP_TLS_INFO_PEER_SUBJECT: return peer && put_name(out, X509_get_subject_name(peer));
    case SHARP_TLS_INFO_PEER_ISSUER: return peer && put_name(out, X509_get_issuer_name(peer));
    case SHARP_TLS_INFO_PEER_CERT:
        if (!peer) return false;
        xfcc_pem(out, peer);
        return true;
    case SHARP_TLS_INFO_PEER_URI_SAN: return put_sans(out, peer, GEN_URI);
    case SHARP_TLS_INFO_PEER_DNS_SAN: return put_sans(out, peer, GEN_DNS);
    case SHARP_TLS_INFO_PEER_IP_SAN: return put_sans(out, peer, GEN_IPADD);
    case SHARP_TLS_INFO_LOCAL_URI_SAN: return put_sans(out, SSL_get_certificate(c->ssl), GEN_URI);
    case SHARP_TLS_INFO_LOCAL_DNS_SAN: return put_sans(out, SSL_get_certificate(c->ssl), GEN_DNS);
    case SHARP_TLS_INFO_LOCAL_IP_SAN: return put_sans(out, SSL_get_certificate(c->ssl), GEN_IPADD);
    }
    return false;
}

bool sharp_tls_conn_peer_validity(const sharp_tls_conn_t *c, bool not_after, int64_t *epoch_s)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer) return false;
    const ASN1_TIME *t = not_after ? X509_get0_notAfter(peer) : X509_get0_notBefore(peer);
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return false;
    *epoch_s = (int64_t)timegm(&tm);
    return true;
}

void sharp_tls_conn_set_alpn(sharp_tls_conn_t *c, const uint8_t *wire, size_t len)
{
    SSL_set_alpn_protos(c->ssl, wire, (unsigned)len);
}

/* ---- x-forwarded-client-cert (Envoy's mutateXfccRequestHeader) ---- */

static void xfcc_sans(sharp_sbuf_t *b, X509 *x, int type, const char *key, bool *first)
{
    GENERAL_NAMES *sans = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != type) continue;
        const ASN1_IA5STRING *s = type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
        sharp_sbuf_printf(b, "%s%s=", *first ? "" : ";", key);
        sharp_sbuf_append(b, (const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
        *first = false;
    }
    GENERAL_NAMES_free(sans);
}

/* A PEM, percent-encoded as Envoy's urlEncode (unreserved characters kept). */
static void xfcc_pem(sharp_sbuf_t *b, X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    static const char hex[] = "0123456789ABCDEF";
    for (long i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            sharp_sbuf_append(b, (const char *)&ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            sharp_sbuf_append(b, e, 3);
        }
    }
    BIO_free(bio);
}

char *sharp_tls_conn_xfcc(const sharp_tls_conn_t *c, unsigned what)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer) return NULL;
    sharp_sbuf_t b = {0};
    bool first = true;
    xfcc_sans(&b, SSL_get_certificate(c->ssl), GEN_URI, "By", &first);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1) {
        sharp_sbuf_puts(&b, first ? "Hash=" : ";Hash=");
        for (unsigned i = 0; i < mdlen; i++) sharp_sbuf_printf(&b, "%02x", md[i]);
        first = false;
    }
    if (what & SHARP_XFCC_CERT) {
        sharp_sbuf_puts(&b, first ? "Cert=\"" : ";Cert=\"");
        xfcc_pem(&b, peer);
        sharp_sbuf_puts(&b, "\"");
        first = false;
    }
    if (what & SHARP_XFCC_CHAIN) {
        sharp_sbuf_puts(&b, first ? "Chain=\"" : ";Chain=\"");
        /* the certificates the client sent, its own first (OpenSSL's
         * server-side chain leaves the leaf out) */
        xfcc_pem(&b, peer);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c->ssl);
        for (int i = 0; chain && i < sk_X509_num(chain); i++)
            if (X509_cmp(sk_X509_value(chain, i), peer) != 0) xfcc_pem(&b, sk_X509_value(chain, i));
        sharp_sbuf_puts(&b, "\"");
        first = false;
    }
    if (what & SHARP_XFCC_SUBJECT) {
        char *subj = sharp_tls_name_string(X509_get_subject_name(peer));
        sharp_sbuf_printf(&b, "%sSubject=\"%s\"", first ? "" : ";", subj ? subj : "");
        free(subj);
        first = false;
    }
    if (what & SHARP_XFCC_URI) xfcc_sans(&b, peer, GEN_URI, "URI", &first);
    if (what & SHARP_XFCC_DNS) xfcc_sans(&b, peer, GEN_DNS, "DNS", &first);
    char *out = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    return out;
}

/* ---- the engine between a writer and its socket (every TLS transport) ---- */

int sharp_tls_conn_send(sharp_tls_conn_t *c, sharp_writer_t *w)
{
    static __thread char buf[SHARP_TLS_MAX_CIPHERTEXT_OUT];
    size_t n;
    while ((n = sharp_tls_conn_drain(c, buf, sizeof buf)) > 0) {
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        int rc = sharp_writer_write_raw(w, &b, 1);
        if (rc < 0) return rc;
    }
    return 0;
}

int sharp_tls_conn_encrypt(sharp_tls_conn_t *c, sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs, bool last,
                           size_t *unwritten)
{
    *unwritten = 0;
    if (w->failed) return UV_EPIPE;
    /* Small buffers (a response head and its body) make one record, not
     * one each: a record's overhead and its AEAD pass are per record. */
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (nbufs > 1 && total <= 16384) {
        static __thread char joined[16384];
        size_t at = 0;
        for (unsigned i = 0; i < nbufs; i++) {
            if (bufs[i].len) memcpy(joined + at, bufs[i].base, bufs[i].len);
            at += bufs[i].len;
        }
        uv_buf_t one = uv_buf_init(joined, (unsigned)total);
        return sharp_tls_conn_encrypt(c, w, &one, 1, last, unwritten);
    }
    /* Every buffer is encrypted before the records go out, so one write
     * (one system call) carries them all, as a plaintext writev would; the
     * engine's bounded output is sent early only when it is full. */
    for (unsigned i = 0; i < nbufs; i++) {
        size_t off = 0;
        while (off < bufs[i].len) {
            size_t k = sharp_tls_conn_write(c, bufs[i].base + off, bufs[i].len - off);
            off += k;
            if (k) continue;
            int rc = sharp_tls_conn_send(c, w);
            if (rc < 0) return rc;
            /* the output was just drained: taking nothing now means the
             * engine is not open (handshaking, closed or failed) */
            k = sharp_tls_conn_write(c, bufs[i].base + off, bufs[i].len - off);
            if (!k) {
                *unwritten = bufs[i].len - off;
                return UV_ENOTCONN;
            }
            off += k;
        }
    }
    if (last) sharp_tls_conn_close(c);
    return sharp_tls_conn_send(c, w);
}

void sharp_tls_conn_close_now(sharp_tls_conn_t *c, sharp_writer_t *w, uv_stream_t *stream)
{
    sharp_tls_conn_close(c);
    /* Only onto an empty queue: the socket closes now, queued writes are
     * cancelled, and close_notify must not overtake them. What the engine
     * still holds before it (a handshake's tickets that waited for the
     * turn's flush) goes with it; a short write ends it. */
    static __thread char buf[4096];
    size_t n;
    while ((n = sharp_tls_conn_drain(c, buf, sizeof buf)) > 0) {
        if (w->queued != 0 || w->failed) break;
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        if (uv_try_write(stream, &b, 1) != (int)n) break;
    }
}
