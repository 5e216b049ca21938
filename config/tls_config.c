/* tls_config.c: see tls_config.h. */
#include "config/tls_config.h"
#include "config/mapper.h"
#include "config/route_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "sbuf.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common_pb_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext cvc_pb_t;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate cert_pb_t;
typedef Envoy__Config__Core__V3__DataSource ds_pb_t;

/* Envoy's default cipher list for both sides (non-FIPS), BoringSSL syntax. */
static const char *const default_ciphers[] = {
    "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
    "[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
};
static const char default_curves[] = "X25519:P-256";
/* BoringSSL's defaults, which Envoy documents as its own. */
static const char default_sigalgs[] = "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:rsa_pkcs1_sha256:"
                                      "ecdsa_secp384r1_sha384:rsa_pss_rsae_sha384:rsa_pkcs1_sha384:"
                                      "rsa_pss_rsae_sha512:rsa_pkcs1_sha512:rsa_pkcs1_sha1";

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Envoy's Filesystem::illegalPath: what cannot be canonicalized (a missing
 * file included) and the kernel's pseudo-file systems. */
static bool illegal_path(const char *path)
{
    char *real = realpath(path, NULL);
    if (!real) return true;
    bool bad = !strncmp(real, "/dev/", 5) || !strncmp(real, "/proc/", 6) || !strncmp(real, "/sys/", 5) ||
               !strcmp(real, "/dev") || !strcmp(real, "/proc") || !strcmp(real, "/sys");
    free(real);
    return bad;
}

/* The bytes of a DataSource, NUL-terminated (len excludes the NUL), as
 * Envoy's DataSource::read with allow_empty; an unset DataSource is NULL
 * with *len 0 and no error. `source` gets the file name or "<inline>". */
static int read_ds(const ds_pb_t *ds, const char *path, char **data, size_t *len, char **source, char *err,
                   size_t errlen)
{
    *data = NULL;
    *len = 0;
    if (source) *source = NULL;
    if (!ds || ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET) return 0;
    if (ds->watched_directory) return fail(err, errlen, "%s.watched_directory: watched directories are not supported by SHARP", path);
    const char *src = NULL;
    size_t n = 0;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        src = ds->inline_string;
        n = strlen(src);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        src = (const char *)ds->inline_bytes.data;
        n = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        src = getenv(ds->environment_variable);
        if (!src) return fail(err, errlen, "%s: Environment variable doesn't exist: %s", path, ds->environment_variable);
        n = strlen(src);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        if (illegal_path(ds->filename)) return fail(err, errlen, "%s: Invalid path: %s", path, ds->filename);
        int rc = sharp_read_file(ds->filename, 64u << 20, data, len);
        if (rc == -2) return fail(err, errlen, "%s: file %s is larger than 64 MiB", path, ds->filename);
        if (rc < 0) return fail(err, errlen, "%s: unable to read file: %s (%s)", path, ds->filename, strerror(errno));
        if (source) *source = sharp_strdup(ds->filename);
        return 0;
    }
    default:
        return 0;
    }
    char *buf = sharp_realloc(NULL, n + 1);
    if (n) memcpy(buf, src, n);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    if (source) *source = sharp_strdup("<inline>");
    return 0;
}

char *sharp_tls_flatten_cipher_list(const char *const *names, size_t n)
{
    sharp_sbuf_t b = {0};
    for (size_t i = 0; i < n; i++) {
        for (const char *p = names[i]; *p; p++) {
            /* OpenSSL has no equal-preference groups: keep the group's order. */
            char c = *p;
            if (c == '[' || c == ']') continue;
            if (c == '|') c = ':';
            sharp_sbuf_append(&b, &c, 1);
        }
        if (i + 1 < n) sharp_sbuf_append(&b, ":", 1);
    }
    char *s = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    return s;
}

static char *join(char *const *items, size_t n, const char *dflt)
{
    if (!n) return sharp_strdup(dflt);
    sharp_sbuf_t b = {0};
    for (size_t i = 0; i < n; i++) {
        if (i) sharp_sbuf_append(&b, ":", 1);
        sharp_sbuf_append(&b, items[i], strlen(items[i]));
    }
    char *s = sharp_strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    return s;
}

static int tls_version(int v, int dflt)
{
    switch (v) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0: return TLS1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1: return TLS1_1_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2: return TLS1_2_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3: return TLS1_3_VERSION;
    default: return dflt;
    }
}

/* Envoy: a 95-character fingerprint loses its colons, then the rest must be
 * exactly 32 bytes of hex. */
static bool decode_hash(const char *in, uint8_t out[SHARP_TLS_SHA256_LEN])
{
    char hex[128];
    size_t n = 0, len = strlen(in);
    if (len > 95) return false;
    for (size_t i = 0; i < len; i++) {
        if (len == 95 && in[i] == ':') continue;
        hex[n++] = in[i];
    }
    if (n != 2 * SHARP_TLS_SHA256_LEN) return false;
    for (size_t i = 0; i < SHARP_TLS_SHA256_LEN; i++) {
        int hi = sharp_hexval(hex[2 * i]), lo = sharp_hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool decode_spki(const char *in, uint8_t out[SHARP_TLS_SHA256_LEN])
{
    size_t len = strlen(in);
    if (len != 44 || in[43] != '=' || in[42] == '=') return false;
    uint8_t buf[36];
    int n = EVP_DecodeBlock(buf, (const unsigned char *)in, 44);
    if (n != 33) return false; /* 44 chars decode to 33 bytes, one of them padding */
    memcpy(out, buf, SHARP_TLS_SHA256_LEN);
    return true;
}

static int validation(const cvc_pb_t *v, const char *path, bool from_sds, sharp_tls_validation_config_t *out,
                      char *err, size_t errlen)
{
    char sub[256];
    out->present = true;
    if (v->ca_certificate_provider_instance)
        return fail(err, errlen, "%s.ca_certificate_provider_instance: certificate provider plugins are not supported by SHARP", path);
    /* Envoy watches a validation context's files only when SDS delivers it
     * (tls/sds.c does, watched_directory included); elsewhere the field
     * would do nothing, and SHARP says so */
    if (v->watched_directory && !from_sds)
        return fail(err, errlen, "%s.watched_directory: only applies to a validation context delivered by SDS "
                    "(an SdsSecretConfig with sds_config), as in Envoy: static files are read once", path);
    if (v->require_signed_certificate_timestamp && v->require_signed_certificate_timestamp->value)
        return fail(err, errlen, "%s.require_signed_certificate_timestamp: signed certificate timestamps are not supported by SHARP", path);
    if (v->custom_validator_config)
        return fail(err, errlen, "%s.custom_validator_config: custom certificate validators are not supported by SHARP", path);
    if (v->only_verify_leaf_cert_crl)
        return fail(err, errlen, "%s.only_verify_leaf_cert_crl: CRL checks of the leaf certificate only are not supported by SHARP", path);
    if (v->max_verify_depth)
        return fail(err, errlen, "%s.max_verify_depth: a maximum certificate chain depth is not supported by SHARP", path);

    snprintf(sub, sizeof sub, "%s.trusted_ca", path);
    if (read_ds(v->trusted_ca, sub, &out->ca, &out->ca_len, &out->ca_source, err, errlen) < 0) return -1;
    if (out->ca && !out->ca_len) {
        free(out->ca);
        out->ca = NULL;
    }
    snprintf(sub, sizeof sub, "%s.crl", path);
    if (read_ds(v->crl, sub, &out->crl, &out->crl_len, &out->crl_source, err, errlen) < 0) return -1;
    if (out->crl && !out->crl_len) {
        free(out->crl);
        out->crl = NULL;
    }

    if (v->n_match_typed_subject_alt_names) {
        out->sans = sharp_calloc(v->n_match_typed_subject_alt_names, sizeof *out->sans);
        for (size_t i = 0; i < v->n_match_typed_subject_alt_names; i++) {
            const Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher *m =
                v->match_typed_subject_alt_names[i];
            snprintf(sub, sizeof sub, "%s.match_typed_subject_alt_names[%zu]", path, i);
            if ((int)m->san_type < SHARP_TLS_SAN_EMAIL || (int)m->san_type > SHARP_TLS_SAN_IP)
                return fail(err, errlen, "%s.san_type: must be one of EMAIL, DNS, URI, IP_ADDRESS", sub);
            if (!m->matcher) return fail(err, errlen, "%s.matcher: is required", sub);
            char mpath[300];
            snprintf(mpath, sizeof mpath, "%s.matcher", sub);
            out->nsans++; /* counted first: a failed matcher may hold allocations */
            out->sans[i].type = (sharp_tls_san_type_t)m->san_type;
            if (sharp_config_string_matcher(m->matcher, mpath, &out->sans[i].matcher, err, errlen) < 0) return -1;
        }
    } else if (v->n_match_subject_alt_names) {
        /* Envoy's backward compatibility: the untyped matchers apply to SANs of
         * every type; ignored when the typed list is set (above). */
        out->sans = sharp_calloc(v->n_match_subject_alt_names, sizeof *out->sans);
        for (size_t i = 0; i < v->n_match_subject_alt_names; i++) {
            snprintf(sub, sizeof sub, "%s.match_subject_alt_names[%zu]", path, i);
            out->nsans++;
            out->sans[i].type = SHARP_TLS_SAN_ANY;
            if (sharp_config_string_matcher(v->match_subject_alt_names[i], sub, &out->sans[i].matcher, err, errlen) < 0)
                return -1;
        }
    }

    if (v->n_verify_certificate_hash) {
        out->hashes = sharp_calloc(v->n_verify_certificate_hash, sizeof *out->hashes);
        for (size_t i = 0; i < v->n_verify_certificate_hash; i++) {
            const char *h = v->verify_certificate_hash[i];
            size_t l = strlen(h);
            if (l < 64 || l > 95)
                return fail(err, errlen, "%s.verify_certificate_hash[%zu]: must be 64 to 95 characters long, got %zu",
                            path, i, l);
            if (!decode_hash(h, out->hashes[i]))
                return fail(err, errlen, "%s.verify_certificate_hash[%zu]: Invalid hex-encoded SHA-256 %s", path, i, h);
            out->nhashes++;
        }
    }
    if (v->n_verify_certificate_spki) {
        out->spki = sharp_calloc(v->n_verify_certificate_spki, sizeof *out->spki);
        for (size_t i = 0; i < v->n_verify_certificate_spki; i++) {
            const char *h = v->verify_certificate_spki[i];
            if (strlen(h) != 44)
                return fail(err, errlen, "%s.verify_certificate_spki[%zu]: must be 44 characters long, got %zu", path,
                            i, strlen(h));
            if (!decode_spki(h, out->spki[i]))
                return fail(err, errlen, "%s.verify_certificate_spki[%zu]: Invalid base64-encoded SHA-256 %s", path, i, h);
            out->nspki++;
        }
    }
    out->allow_expired = v->allow_expired_certificate;
    out->accept_untrusted =
        v->trust_chain_verification ==
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__TRUST_CHAIN_VERIFICATION__ACCEPT_UNTRUSTED;
    if (v->trust_chain_verification != 0 && !out->accept_untrusted)
        return fail(err, errlen, "%s.trust_chain_verification: value must be one of the defined enum values", path);

    /* Envoy's CertificateValidationContextConfigImpl: checks that mean
     * nothing without a CA to verify against are configuration errors. */
    if (!out->ca) {
        if (out->crl) return fail(err, errlen, "%s: Failed to load CRL from %s without trusted CA", path, out->crl_source);
        if (out->nsans)
            return fail(err, errlen, "%s: SAN-based verification of peer certificates without trusted CA is insecure and not allowed", path);
        if (out->allow_expired)
            return fail(err, errlen, "%s: Certificate validity period is always ignored without trusted CA", path);
    }
    return 0;
}

static int certificate(const cert_pb_t *c, const char *path, bool from_sds, sharp_tls_cert_config_t *out, char *err,
                       size_t errlen)
{
    char sub[256];
    if (c->pkcs12 && c->pkcs12->specifier_case)
        return fail(err, errlen, "%s.pkcs12: PKCS#12 certificates are not supported by SHARP", path);
    if (c->watched_directory && !from_sds)
        return fail(err, errlen, "%s.watched_directory: only applies to a certificate delivered by SDS (an "
                    "SdsSecretConfig with sds_config), as in Envoy: static files are read once", path);
    if (c->private_key_provider)
        return fail(err, errlen, "%s.private_key_provider: private key providers are not supported by SHARP", path);
    if (c->n_signed_certificate_timestamp)
        return fail(err, errlen, "%s.signed_certificate_timestamp: signed certificate timestamps are not supported by SHARP", path);
    snprintf(sub, sizeof sub, "%s.certificate_chain", path);
    if (read_ds(c->certificate_chain, sub, &out->chain, &out->chain_len, &out->chain_source, err, errlen) < 0) return -1;
    snprintf(sub, sizeof sub, "%s.private_key", path);
    if (read_ds(c->private_key, sub, &out->key, &out->key_len, &out->key_source, err, errlen) < 0) return -1;
    char *pw = NULL;
    size_t pwlen = 0;
    snprintf(sub, sizeof sub, "%s.password", path);
    if (read_ds(c->password, sub, &pw, &pwlen, NULL, err, errlen) < 0) return -1;
    if (pw && strlen(pw) != pwlen) {
        free(pw);
        return fail(err, errlen, "%s.password: contains a NUL byte", path);
    }
    out->password = pw;
    /* Envoy's TlsCertificateConfigImpl reads the staple after the key */
    snprintf(sub, sizeof sub, "%s.ocsp_staple", path);
    char *ocsp = NULL;
    size_t ocsp_len = 0;
    if (read_ds(c->ocsp_staple, sub, &ocsp, &ocsp_len, NULL, err, errlen) < 0) return -1;
    if (c->ocsp_staple &&
        c->ocsp_staple->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING) {
        free(ocsp);
        return fail(err, errlen, "%s: OCSP staple cannot be provided via inline_string", sub);
    }
    if (ocsp && !ocsp_len) {
        free(ocsp);
        ocsp = NULL;
    }
    out->ocsp = (uint8_t *)ocsp;
    out->ocsp_len = ocsp_len;
    if (!out->chain || !out->chain_len)
        return fail(err, errlen, "%s.certificate_chain: Failed to load certificate chain from %s", path,
                    out->chain_source ? out->chain_source : "<empty>");
    if (!out->key || !out->key_len)
        return fail(err, errlen, "%s.private_key: Failed to load incomplete private key from %s", path,
                    out->key_source ? out->key_source : "<empty>");
    return 0;
}

/* static_resources.secrets, which an SdsSecretConfig without sds_config
 * names (set by the loader around the translation of the transport
 * sockets; main thread). */
static Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *static_secrets;
static size_t nstatic_secrets;

void sharp_tls_config_use_secrets(Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *secrets, size_t n)
{
    static_secrets = secrets;
    nstatic_secrets = n;
}

static sharp_tls_sds_resolve_fn sds_resolve;
static void *sds_resolve_ud;

void sharp_tls_config_use_sds(sharp_tls_sds_resolve_fn fn, void *ud)
{
    sds_resolve = fn;
    sds_resolve_ud = ud;
}

typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig sds_pb_t;

/* The secret an SdsSecretConfig names, of the kind wanted: from its
 * sds_config source (tls/sds.h) or static_resources.secrets. NULL with
 * Envoy's message in err. `where` gets the path its fields are reported
 * under. */
static const Envoy__Extensions__TransportSockets__Tls__V3__Secret *
secret_by_name(const sds_pb_t *sds, const char *path, Envoy__Extensions__TransportSockets__Tls__V3__Secret__TypeCase kind,
               char *where, size_t wherelen, char *err, size_t errlen)
{
    if (sds->sds_config) {
        if (!sds_resolve) {
            fail(err, errlen, "%s.sds_config: secrets from SDS are not available here", path);
            return NULL;
        }
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s =
            sds_resolve(sds_resolve_ud, sds, kind, path, err, errlen);
        if (s) snprintf(where, wherelen, "%s(sds '%s')", path, sds->name);
        return s;
    }
    for (size_t i = 0; i < nstatic_secrets; i++)
        if (!strcmp(static_secrets[i]->name, sds->name) && static_secrets[i]->type_case == kind) {
            snprintf(where, wherelen, "static_resources.secrets[%s]", sds->name);
            return static_secrets[i];
        }
    fail(err, errlen, "%s.name: Unknown static secret: %s", path, sds->name);
    return NULL;
}

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
    combined_pb_t;

/* Envoy's combined validation context: default_validation_context with the
 * named secret's validation context (static, or from an SDS file or
 * server) merged over it by protobuf's MergeFrom (the secret's singular
 * fields win, repeated fields are appended after the default's, booleans
 * end up OR'ed), then checked and translated as one context. The secret is
 * read, never changed: both are copies. */
static int combined_validation(const combined_pb_t *cv, const char *path, sharp_tls_validation_config_t *out,
                               char *err, size_t errlen)
{
    char sub[256];
    if (cv->validation_context_certificate_provider || cv->validation_context_certificate_provider_instance)
        return fail(err, errlen, "%s: certificate provider plugins are not supported by SHARP", path);
    if (!cv->default_validation_context)
        return fail(err, errlen, "%s.default_validation_context: is required", path);
    if (!cv->validation_context_sds_secret_config)
        return fail(err, errlen, "%s.validation_context_sds_secret_config: is required", path);
    snprintf(sub, sizeof sub, "%s.validation_context_sds_secret_config", path);
    /* from an SDS source too (Istio's ROOTCA): a rotation translates the
     * whole TLS context again (tls/sds.c's rebuild), so the new secret is
     * merged with the default context as the first one was */
    bool from_sds = cv->validation_context_sds_secret_config->sds_config != NULL;
    if (cv->default_validation_context->watched_directory)
        return fail(err, errlen, "%s.default_validation_context.watched_directory: only applies to a validation "
                    "context delivered by SDS (the secret's), as in Envoy", path);
    char where[256];
    const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s =
        secret_by_name(cv->validation_context_sds_secret_config, sub,
                       ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT, where,
                       sizeof where, err, errlen);
    if (!s) return -1;
    ProtobufCMessage *merged = sharp_config_trimmed_copy(&cv->default_validation_context->base, NULL, 0);
    ProtobufCMessage *dynamic = sharp_config_trimmed_copy(&s->validation_context->base, NULL, 0);
    int rc = -1;
    if (!merged || !dynamic) {
        fail(err, errlen, "%s: the validation contexts cannot be combined", path);
    } else {
        sharp_config_merge(merged, dynamic);
        rc = validation((const cvc_pb_t *)merged, path, from_sds, out, err, errlen);
    }
    if (merged) protobuf_c_message_free_unpacked(merged, NULL);
    if (dynamic) protobuf_c_message_free_unpacked(dynamic, NULL);
    return rc;
}

static int common(const common_pb_t *c, sharp_tls_config_t *out, char *err, size_t errlen)
{
    const char *p = "common_tls_context";
    char sub[256];
    if (c->n_tls_certificate_sds_secret_configs && c->n_tls_certificates)
        /* Envoy ignores the SDS configs then; SHARP says so rather than
         * drop what was written */
        return fail(err, errlen, "%s.tls_certificate_sds_secret_configs: ignored when tls_certificates is set (as in "
                                 "Envoy): keep one of them", p);
    if (c->n_tls_certificate_sds_secret_configs) {
        out->certs = sharp_calloc(c->n_tls_certificate_sds_secret_configs, sizeof *out->certs);
        for (size_t i = 0; i < c->n_tls_certificate_sds_secret_configs; i++) {
            snprintf(sub, sizeof sub, "%s.tls_certificate_sds_secret_configs[%zu]", p, i);
            char where[192];
            const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = secret_by_name(
                c->tls_certificate_sds_secret_configs[i], sub,
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE, where, sizeof where, err,
                errlen);
            if (!s) return -1;
            out->ncerts++;
            snprintf(sub, sizeof sub, "%s.tls_certificate", where);
            if (certificate(s->tls_certificate, sub, c->tls_certificate_sds_secret_configs[i]->sds_config != NULL,
                            &out->certs[i], err, errlen) < 0)
                return -1;
        }
    }
    if (c->tls_certificate_provider_instance || c->tls_certificate_certificate_provider ||
        c->tls_certificate_certificate_provider_instance)
        return fail(err, errlen, "%s: certificate provider plugins are not supported by SHARP", p);
    if (c->custom_tls_certificate_selector)
        return fail(err, errlen, "%s.custom_tls_certificate_selector: custom TLS certificate selectors are not supported by SHARP", p);
    if (c->custom_handshaker)
        return fail(err, errlen, "%s.custom_handshaker: custom TLS handshakers are not supported by SHARP", p);
    if (c->key_log) return fail(err, errlen, "%s.key_log: TLS key logging is not supported by SHARP", p);

    const Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters *tp = c->tls_params;
    int dmax = out->server ? TLS1_3_VERSION : TLS1_2_VERSION;
    out->min_version = tls_version(tp ? tp->tls_minimum_protocol_version : 0, TLS1_2_VERSION);
    out->max_version = tls_version(tp ? tp->tls_maximum_protocol_version : 0, dmax);
    if (out->min_version > out->max_version)
        return fail(err, errlen, "%s.tls_params: tls_minimum_protocol_version is above tls_maximum_protocol_version", p);
    if (tp && tp->n_cipher_suites) {
        for (size_t i = 0; i < tp->n_cipher_suites; i++)
            if (!*tp->cipher_suites[i])
                return fail(err, errlen, "%s.tls_params.cipher_suites[%zu]: must not be empty", p, i);
        out->cipher_list = sharp_tls_flatten_cipher_list((const char *const *)tp->cipher_suites, tp->n_cipher_suites);
    } else {
        out->cipher_list = sharp_tls_flatten_cipher_list(default_ciphers, sizeof default_ciphers / sizeof *default_ciphers);
    }
    out->curves = join(tp ? tp->ecdh_curves : NULL, tp ? tp->n_ecdh_curves : 0, default_curves);
    out->sigalgs = join(tp ? tp->signature_algorithms : NULL, tp ? tp->n_signature_algorithms : 0, default_sigalgs);

    if (c->n_tls_certificates) {
        out->certs = sharp_calloc(c->n_tls_certificates, sizeof *out->certs);
        for (size_t i = 0; i < c->n_tls_certificates; i++) {
            snprintf(sub, sizeof sub, "%s.tls_certificates[%zu]", p, i);
            out->ncerts++;
            if (certificate(c->tls_certificates[i], sub, false, &out->certs[i], err, errlen) < 0) return -1;
        }
    }

    switch (c->validation_context_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE__NOT_SET:
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT:
        snprintf(sub, sizeof sub, "%s.validation_context", p);
        if (validation(c->validation_context, sub, false, &out->validation, err, errlen) < 0) return -1;
        break;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG: {
        snprintf(sub, sizeof sub, "%s.validation_context_sds_secret_config", p);
        char where[192];
        const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = secret_by_name(
            c->validation_context_sds_secret_config, sub,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT, where, sizeof where, err,
            errlen);
        if (!s) return -1;
        snprintf(sub, sizeof sub, "%s.validation_context", where);
        if (validation(s->validation_context, sub, c->validation_context_sds_secret_config->sds_config != NULL,
                       &out->validation, err, errlen) < 0)
            return -1;
        break;
    }
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT:
        snprintf(sub, sizeof sub, "%s.combined_validation_context", p);
        if (combined_validation(c->combined_validation_context, sub, &out->validation, err, errlen) < 0) return -1;
        break;
    default:
        return fail(err, errlen, "%s: certificate provider plugins are not supported by SHARP", p);
    }

    if (c->n_alpn_protocols) {
        size_t total = 0;
        for (size_t i = 0; i < c->n_alpn_protocols; i++) {
            size_t l = strlen(c->alpn_protocols[i]);
            if (l == 0 || l > 255)
                return fail(err, errlen, "%s.alpn_protocols[%zu]: a protocol name is 1 to 255 bytes", p, i);
            total += 1 + l;
        }
        out->alpn = sharp_realloc(NULL, total);
        for (size_t i = 0; i < c->n_alpn_protocols; i++) {
            size_t l = strlen(c->alpn_protocols[i]);
            out->alpn[out->alpn_len++] = (uint8_t)l;
            memcpy(out->alpn + out->alpn_len, c->alpn_protocols[i], l);
            out->alpn_len += l;
        }
    }
    return 0;
}

int sharp_tls_config_downstream(const Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *pb,
                                sharp_tls_config_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->server = true;
    static const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext empty_common =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
    int rc = -1;
    if (pb->require_sni && pb->require_sni->value) {
        fail(err, errlen, "require_sni: requiring SNI is not supported by SHARP");
        goto out;
    }
    if (pb->ocsp_staple_policy > 2) {
        fail(err, errlen, "ocsp_staple_policy: value must be one of the defined enum values");
        goto out;
    }
    out->ocsp_policy = (sharp_tls_ocsp_policy_t)pb->ocsp_staple_policy;
    if (common(pb->common_tls_context ? pb->common_tls_context : &empty_common, out, err, errlen) < 0) goto out;
    if (!out->ncerts) {
        fail(err, errlen, "common_tls_context.tls_certificates: No TLS certificates found for server context");
        goto out;
    }
    out->require_client_cert = pb->require_client_certificate && pb->require_client_certificate->value;
    switch (pb->session_ticket_keys_type_case) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS:
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS_SDS_SECRET_CONFIG: {
        const Envoy__Extensions__TransportSockets__Tls__V3__TlsSessionTicketKeys *k = pb->session_ticket_keys;
        if (pb->session_ticket_keys_type_case ==
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_SESSION_TICKET_KEYS_SDS_SECRET_CONFIG) {
            char where[192];
            const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = secret_by_name(
                pb->session_ticket_keys_sds_secret_config, "session_ticket_keys_sds_secret_config",
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_SESSION_TICKET_KEYS, where, sizeof where,
                err, errlen);
            if (!s) goto out;
            k = s->session_ticket_keys;
        }
        if (!k->n_keys) {
            fail(err, errlen, "session_ticket_keys.keys: must contain at least 1 item");
            goto out;
        }
        out->ticket_keys = sharp_calloc(k->n_keys, sizeof *out->ticket_keys);
        for (size_t i = 0; i < k->n_keys; i++) {
            char sub[64], *data;
            size_t len;
            snprintf(sub, sizeof sub, "session_ticket_keys.keys[%zu]", i);
            if (read_ds(k->keys[i], sub, &data, &len, NULL, err, errlen) < 0) goto out;
            if (len != SHARP_TLS_TICKET_KEY_LEN) {
                free(data);
                fail(err, errlen, "%s: Incorrect TLS session ticket key length. Length %zu, expected length %d.", sub,
                     len, SHARP_TLS_TICKET_KEY_LEN);
                goto out;
            }
            memcpy(out->ticket_keys[i], data, len);
            OPENSSL_cleanse(data, len);
            free(data);
            out->nticket_keys++;
        }
        break;
    }
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__SESSION_TICKET_KEYS_TYPE_DISABLE_STATELESS_SESSION_RESUMPTION:
        out->disable_stateless_resumption = pb->disable_stateless_session_resumption;
        break;
    default:
        break;
    }
    out->disable_stateful_resumption = pb->disable_stateful_session_resumption;
    if (pb->session_timeout) {
        if (pb->session_timeout->seconds < 0 || pb->session_timeout->nanos < 0 ||
            pb->session_timeout->seconds >= 4294967296LL) {
            fail(err, errlen, "session_timeout: must be at least 0s and less than 4294967296s");
            goto out;
        }
        out->has_session_timeout = true;
        out->session_timeout_s = (uint32_t)pb->session_timeout->seconds; /* whole seconds, as Envoy */
    }
    out->full_scan_certs_on_sni_mismatch =
        pb->full_scan_certs_on_sni_mismatch && pb->full_scan_certs_on_sni_mismatch->value;
    out->prefer_client_ciphers = pb->prefer_client_ciphers;
    rc = 0;
out:
    if (rc < 0) sharp_tls_config_free(out);
    return rc;
}

int sharp_tls_config_upstream(const Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext *pb,
                              sharp_tls_config_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    static const Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext empty_common =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
    int rc = -1;
    if (pb->allow_renegotiation) {
        fail(err, errlen, "allow_renegotiation: TLS renegotiation is not supported by SHARP");
        goto out;
    }
    if (pb->sni && *pb->sni) {
        if (strlen(pb->sni) > 255) {
            fail(err, errlen, "sni: value length must be at most 255 bytes");
            goto out;
        }
        out->sni = sharp_strdup(pb->sni);
    }
    if (common(pb->common_tls_context ? pb->common_tls_context : &empty_common, out, err, errlen) < 0) goto out;
    if (out->ncerts > 1) {
        fail(err, errlen, "common_tls_context.tls_certificates: Multiple TLS certificates are not supported for client contexts");
        goto out;
    }
    out->auto_host_sni = pb->auto_host_sni;
    out->auto_sni_san_validation = pb->auto_sni_san_validation;
    if (out->auto_sni_san_validation && !out->validation.ca) {
        fail(err, errlen, "auto_sni_san_validation: 'auto_sni_san_validation' was configured without configuring a trusted CA");
        goto out;
    }
    out->max_session_keys = pb->max_session_keys ? pb->max_session_keys->value : 1;
    rc = 0;
out:
    if (rc < 0) sharp_tls_config_free(out);
    return rc;
}

static void free_secret(char *p, size_t len)
{
    if (!p) return;
    OPENSSL_cleanse(p, len);
    free(p);
}

void sharp_tls_config_free(sharp_tls_config_t *c)
{
    if (!c) return;
    free(c->cipher_list);
    free(c->curves);
    free(c->sigalgs);
    for (size_t i = 0; i < c->ncerts; i++) {
        sharp_tls_cert_config_t *t = &c->certs[i];
        free(t->chain);
        free_secret(t->key, t->key_len);
        if (t->password) free_secret(t->password, strlen(t->password));
        free(t->chain_source);
        free(t->key_source);
        free(t->ocsp);
    }
    free(c->certs);
    sharp_tls_validation_config_t *v = &c->validation;
    free(v->ca);
    free(v->ca_source);
    free(v->crl);
    free(v->crl_source);
    for (size_t i = 0; i < v->nsans; i++) sharp_string_matcher_free(&v->sans[i].matcher);
    free(v->sans);
    free(v->spki);
    free(v->hashes);
    free(c->alpn);
    if (c->ticket_keys) OPENSSL_cleanse(c->ticket_keys, c->nticket_keys * sizeof *c->ticket_keys);
    free(c->ticket_keys);
    free(c->sni);
    memset(c, 0, sizeof *c);
}
