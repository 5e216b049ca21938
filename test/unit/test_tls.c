/* test_tls.c: the TLS engine (proxy/tls/) and the translation of Envoy's
 * TLS contexts (config/tls_config.c).
 *
 * The group setup makes a PKI with the openssl CLI in a temporary
 * directory: a CA, server certificates (RSA and ECDSA for the same names,
 * another name, a wildcard, an expired one, a wrong-SAN one), client
 * certificates (good, revoked by a CRL, from another CA). Each handshake
 * runs a client engine against a server engine in memory, moving the bytes
 * each drains into the other. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/mapper.h"
#include "config/support.h"
#include "config/tls_config.h"
#include "config/types.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "sbuf.h"
#include "tls/conn.h"
#include "tls/context.h"

static char dir[256];

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[2400];
    snprintf(full, sizeof full, "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
    if (system(full) != 0) fail_msg("command failed: %s", cmd);
}

/* A certificate signed by `ca`: key type "rsa" or "ec", extensions in ext. */
static void issue(const char *name, const char *ca, const char *type, const char *subj, const char *ext,
                  const char *days)
{
    if (!strcmp(type, "rsa"))
        sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out %s.key", name);
    else
        sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s.key", name);
    sh("printf '%s\\n' > %s.ext", ext, name);
    sh("openssl req -new -key %s.key -subj '%s' -out %s.csr", name, subj, name);
    sh("openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -days %s -sha256 -extfile %s.ext "
       "-out %s.crt", name, ca, ca, days, name, name);
}

static int setup_pki(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/sharp_tls_test_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    const char *ca_ext = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign";
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -subj '/CN=Test CA' -days 30 %s", ca_ext);
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca2.key -out ca2.crt -subj '/CN=Other CA' -days 30 %s", ca_ext);
    const char *srv = "extendedKeyUsage=serverAuth\\nsubjectAltName=";
    char ext[256];
    snprintf(ext, sizeof ext, "%sDNS:www.example.com,DNS:api.example.com", srv);
    issue("rsa", "ca", "rsa", "/CN=rsa www", ext, "30");
    issue("ecdsa", "ca", "ec", "/CN=ecdsa www", ext, "30");
    snprintf(ext, sizeof ext, "%sDNS:other.test", srv);
    issue("other", "ca", "rsa", "/CN=other", ext, "30");
    snprintf(ext, sizeof ext, "%sDNS:*.wild.test", srv);
    issue("wild", "ca", "rsa", "/CN=wild", ext, "30");
    snprintf(ext, sizeof ext, "%sDNS:wrong.test", srv);
    issue("wrongsan", "ca", "rsa", "/CN=wrongsan", ext, "30");
    snprintf(ext, sizeof ext, "%sDNS:www.example.com", srv);
    issue("expired", "ca", "rsa", "/CN=expired", ext, "-1");
    snprintf(ext, sizeof ext, "%sDNS:www.example.com,IP:127.0.0.1,IP:::1", srv);
    issue("ipsan", "ca", "ec", "/CN=ipsan/O=Example", ext, "30");
    const char *cli = "extendedKeyUsage=clientAuth\\nsubjectAltName=URI:spiffe://example/client,DNS:client.test";
    issue("client", "ca", "ec", "/CN=client/O=Example", cli, "30");
    issue("revoked", "ca", "ec", "/CN=revoked", cli, "30");
    issue("client2", "ca2", "ec", "/CN=stranger", cli, "30");
    /* A CRL from the CA that revokes "revoked". */
    sh("touch index.txt && echo 01 > crlnumber && printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\n"
       "crlnumber=crlnumber\\ndefault_md=sha256\\ndefault_crl_days=30\\n' > ca.cnf");
    sh("openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -revoke revoked.crt");
    sh("openssl ca -config ca.cnf -keyfile ca.key -cert ca.crt -gencrl -out crl.pem");
    /* An encrypted key for the password field. */
    sh("openssl pkey -in rsa.key -aes256 -passout pass:sekrit -out rsa_enc.key");
    /* Session ticket keys: two of 80 bytes, one of 79. */
    sh("openssl rand -out tk1.bin 80 && openssl rand -out tk2.bin 80 && openssl rand -out tk_short.bin 79");
    return 0;
}

static int teardown_pki(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- building contexts from YAML ------------------------------------------------ */

/* "%D" in the YAML is replaced by the PKI directory. */
static char *expand(const char *yaml)
{
    sharp_sbuf_t b = {0};
    for (const char *p = yaml; *p; p++) {
        if (p[0] == '%' && p[1] == 'D') {
            sharp_sbuf_append(&b, dir, strlen(dir));
            p++;
        } else {
            sharp_sbuf_append(&b, p, 1);
        }
    }
    char *s = strdup(sharp_sbuf_cstr(&b));
    sharp_sbuf_free(&b);
    return s;
}

/* Translates (and, when err_out is NULL, builds) a context; returns NULL
 * and the error text in err_out on a translation or build error. */
static sharp_tls_ctx_t *make_ctx(bool server, const char *yaml, char *err_out, size_t errlen)
{
    sharp_config_types_register();
    char *text = expand(yaml);
    sharp_config_error_t perr = {{0}};
    const ProtobufCMessageDescriptor *d =
        server ? &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
               : &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor;
    sharp_config_doc_t *doc = sharp_config_parse(text, strlen(text), "tls.yaml", d, &perr);
    free(text);
    if (!doc && err_out) {
        /* Refused fields stop at the mapper, which applies the support table. */
        snprintf(err_out, errlen, "%s", perr.msg);
        return NULL;
    }
    if (!doc) fail_msg("parse: %s", perr.msg);
    sharp_tls_config_t cfg;
    char err[512] = "";
    int rc = server ? sharp_tls_config_downstream((void *)sharp_config_doc_message(doc), &cfg, err, sizeof err)
                    : sharp_tls_config_upstream((void *)sharp_config_doc_message(doc), &cfg, err, sizeof err);
    sharp_config_doc_free(doc);
    sharp_tls_ctx_t *ctx = NULL;
    if (rc == 0) {
        ctx = sharp_tls_ctx_create(&cfg, err, sizeof err);
        if (!ctx) sharp_tls_config_free(&cfg);
    }
    if (err_out) snprintf(err_out, errlen, "%s", err);
    else if (!ctx) fail_msg("context: %s", err);
    return ctx;
}

static const char *ctx_error(bool server, const char *yaml)
{
    static char err[512];
    sharp_tls_ctx_t *ctx = make_ctx(server, yaml, err, sizeof err);
    if (ctx) {
        sharp_tls_ctx_unref(ctx);
        return NULL;
    }
    return err;
}

static void expect_error(bool server, const char *yaml, const char *want)
{
    const char *got = ctx_error(server, yaml);
    if (!got) fail_msg("expected an error containing \"%s\"", want);
    if (!strstr(got, want)) fail_msg("error \"%s\" lacks \"%s\"", got, want);
}

#define CERT(n) "    - certificate_chain: {filename: %D/" n ".crt}\n      private_key: {filename: %D/" n ".key}\n"
#define SERVER_RSA "common_tls_context:\n  tls_certificates:\n" CERT("rsa")
#define CLIENT_CA "common_tls_context:\n  validation_context:\n    trusted_ca: {filename: %D/ca.crt}\n"

/* ---- in-memory handshakes ----------------------------------------------------------- */

typedef struct {
    sharp_sbuf_t got;
    bool pause_after_one;
} sink_t;

static bool on_data(void *ud, const uint8_t *data, size_t len)
{
    sink_t *s = ud;
    sharp_sbuf_append(&s->got, (const char *)data, len);
    return !s->pause_after_one;
}

typedef struct {
    sharp_tls_conn_t *c, *s;
    sink_t cs, ss;
} pair_t;

/* Moves what each side drains into the other, with a small socket-like
 * buffer so partial feeds happen, until nothing moves. */
static void pump(pair_t *p)
{
    uint8_t buf[7000];
    for (int round = 0; round < 100000; round++) {
        bool moved = false;
        sharp_tls_conn_process(p->c);
        sharp_tls_conn_process(p->s);
        sharp_tls_conn_t *from[2] = {p->c, p->s}, *to[2] = {p->s, p->c};
        for (int i = 0; i < 2; i++) {
            size_t n = sharp_tls_conn_drain(from[i], buf, sizeof buf);
            size_t off = 0;
            while (off < n) {
                size_t f = sharp_tls_conn_feed(to[i], buf + off, n - off);
                if (!f) {
                    if (sharp_tls_conn_state(to[i]) == SHARP_TLS_FAILED) break;
                    sharp_tls_conn_process(to[i]);
                    f = sharp_tls_conn_feed(to[i], buf + off, n - off);
                    if (!f) break; /* the receiver is paused: drop is not allowed, so stop here */
                }
                off += f;
            }
            assert_int_equal(off, n);
            if (n) moved = true;
        }
        if (!moved) {
            sharp_tls_conn_process(p->c);
            sharp_tls_conn_process(p->s);
            if (!sharp_tls_conn_pending(p->c) && !sharp_tls_conn_pending(p->s)) return;
        }
    }
    fail_msg("pump did not settle");
}

static pair_t *connect_pair(sharp_tls_ctx_t *cctx, sharp_tls_ctx_t *sctx, const char *sni)
{
    pair_t *p = calloc(1, sizeof *p);
    p->c = sharp_tls_conn_new(cctx, sni, on_data, &p->cs);
    p->s = sharp_tls_conn_new(sctx, NULL, on_data, &p->ss);
    assert_non_null(p->c);
    assert_non_null(p->s);
    pump(p);
    return p;
}

static void pair_free(pair_t *p)
{
    sharp_tls_conn_free(p->c);
    sharp_tls_conn_free(p->s);
    sharp_sbuf_free(&p->cs.got);
    sharp_sbuf_free(&p->ss.got);
    free(p);
}

static void expect_open(pair_t *p)
{
    if (sharp_tls_conn_state(p->c) != SHARP_TLS_OPEN || sharp_tls_conn_state(p->s) != SHARP_TLS_OPEN)
        fail_msg("handshake failed: client \"%s\", server \"%s\"", sharp_tls_conn_error(p->c), sharp_tls_conn_error(p->s));
}

/* The peer certificate's subject as the client saw it. */
static void expect_server_subject(pair_t *p, const char *want)
{
    expect_open(p);
    char *subj = sharp_tls_conn_peer_subject(p->c);
    assert_non_null(subj);
    if (!strstr(subj, want)) fail_msg("server certificate \"%s\", expected \"%s\"", subj, want);
    free(subj);
}

static pair_t *handshake(const char *client_yaml, const char *server_yaml, const char *sni)
{
    sharp_tls_ctx_t *cctx = make_ctx(false, client_yaml, NULL, 0);
    sharp_tls_ctx_t *sctx = make_ctx(true, server_yaml, NULL, 0);
    pair_t *p = connect_pair(cctx, sctx, sni);
    sharp_tls_ctx_unref(cctx); /* the connections hold references */
    sharp_tls_ctx_unref(sctx);
    return p;
}

/* ---- translation -------------------------------------------------------------------- */

static void translation_defaults_follow_envoy(void **state)
{
    sharp_tls_ctx_t *s = make_ctx(true, SERVER_RSA, NULL, 0);
    sharp_tls_ctx_t *c = make_ctx(false, "sni: www.example.com\n", NULL, 0);
    const sharp_tls_config_t *sc = sharp_tls_ctx_config(s), *cc = sharp_tls_ctx_config(c);
    assert_int_equal(sc->min_version, TLS1_2_VERSION);
    assert_int_equal(sc->max_version, TLS1_3_VERSION);
    assert_int_equal(cc->min_version, TLS1_2_VERSION);
    assert_int_equal(cc->max_version, TLS1_2_VERSION);
    assert_string_equal(sc->cipher_list, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                                         "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
                                         "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384");
    assert_string_equal(sc->curves, "X25519:P-256");
    assert_int_equal(cc->max_session_keys, 1);
    assert_string_equal(cc->sni, "www.example.com");
    sharp_tls_ctx_unref(s);
    sharp_tls_ctx_unref(c);
    const char *groups[] = {"[A|B]", "C"};
    char *flat = sharp_tls_flatten_cipher_list(groups, 2);
    assert_string_equal(flat, "A:B:C");
    free(flat);
}

static void translation_errors_are_envoys(void **state)
{
    expect_error(true, "common_tls_context:\n  tls_certificates:\n"
                       "    - certificate_chain: {filename: /nonexistent/x.crt}\n      private_key: {inline_string: x}\n",
                 "common_tls_context.tls_certificates[0].certificate_chain: Invalid path: /nonexistent/x.crt");
    unsetenv("SHARP_TLS_TEST_UNSET");
    expect_error(true, "common_tls_context:\n  tls_certificates:\n"
                       "    - certificate_chain: {environment_variable: SHARP_TLS_TEST_UNSET}\n",
                 "Environment variable doesn't exist: SHARP_TLS_TEST_UNSET");
    expect_error(true, "common_tls_context:\n  tls_certificates:\n"
                       "    - certificate_chain: {inline_string: garbage}\n      private_key: {inline_string: x}\n",
                 "Failed to load certificate chain from <inline>");
    expect_error(true, "common_tls_context:\n  tls_certificates:\n"
                       "    - certificate_chain: {filename: %D/rsa.crt}\n      private_key: {filename: %D/ecdsa.key}\n",
                 "Failed to load private key from");
    expect_error(true, "common_tls_context: {}\n", "No TLS certificates found for server context");
    expect_error(false, "common_tls_context:\n  tls_certificates:\n" CERT("client") CERT("revoked"),
                 "Multiple TLS certificates are not supported for client contexts");
    char sni[400] = "sni: ";
    memset(sni + 5, 'a', 300);
    strcpy(sni + 305, "\n");
    expect_error(false, sni, "sni: value length must be at most 255 bytes");
    expect_error(true, SERVER_RSA "session_ticket_keys:\n  keys:\n  - filename: %D/tk_short.bin\n",
                 "session_ticket_keys.keys[0]: Incorrect TLS session ticket key length. Length 79, expected length 80.");
    expect_error(false, "common_tls_context:\n  validation_context:\n    allow_expired_certificate: true\n",
                 "Certificate validity period is always ignored without trusted CA");
    expect_error(false, "common_tls_context:\n  validation_context:\n    match_typed_subject_alt_names:\n"
                        "    - san_type: DNS\n      matcher: {exact: x}\n",
                 "SAN-based verification of peer certificates without trusted CA is insecure and not allowed");
    expect_error(false, "common_tls_context:\n  validation_context:\n    crl: {filename: %D/crl.pem}\n",
                 "Failed to load CRL from");
    expect_error(false, CLIENT_CA "    verify_certificate_hash: ['zz6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a']\n",
                 "Invalid hex-encoded SHA-256 zz6ff72f");
    expect_error(false, CLIENT_CA "    verify_certificate_spki: ['!!!!IYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=']\n",
                 "Invalid base64-encoded SHA-256");
    expect_error(false, "common_tls_context:\n  validation_context:\n    trusted_ca: {inline_string: 'not a pem'}\n",
                 "Failed to load trusted CA certificates from <inline>");
    expect_error(false, "auto_sni_san_validation: true\n", "'auto_sni_san_validation' was configured without configuring a trusted CA");
    expect_error(false, "allow_renegotiation: true\n", "TLS renegotiation");
    expect_error(true, "common_tls_context:\n  tls_certificates:\n"
                       "  - pkcs12: {filename: %D/x.p12}\n", "(PKCS#12 certificates)");
    expect_error(true, SERVER_RSA "  tls_certificate_sds_secret_configs: [{name: x}]\n", "ignored when tls_certificates is set");
    expect_error(true, SERVER_RSA "session_ticket_keys_sds_secret_config: {name: x}\n", "Unknown static secret: x");
    /* OCSP: Envoy's checks of the staple at load */
    expect_error(true, SERVER_RSA "ocsp_staple_policy: MUST_STAPLE\n", "Required OCSP response is missing from TLS context");
    expect_error(true, SERVER_RSA "      ocsp_staple: {inline_string: abcd}\n", "OCSP staple cannot be provided via inline_string");
    expect_error(true, SERVER_RSA "      ocsp_staple: {inline_bytes: YWJjZA==}\n", "OCSP Response is not a well-formed ASN.1 SEQUENCE");
    /* SEQUENCE { ENUMERATED internalError }: no response bytes */
    expect_error(true, SERVER_RSA "      ocsp_staple: {inline_bytes: MAMKAQI=}\n", "OCSP response was unsuccessful");
    /* SEQUENCE { ENUMERATED successful }: no body */
    expect_error(true, SERVER_RSA "      ocsp_staple: {inline_bytes: MAMKAQA=}\n", "OCSP response has no body");
    expect_error(true, SERVER_RSA "      ocsp_staple: {inline_bytes: MAMKAQAA}\n", "Data contained more than a single OCSP response");
    expect_error(true, SERVER_RSA "      ocsp_staple: {filename: /nonexistent/ocsp.der}\n", "ocsp_staple: Invalid path: /nonexistent/ocsp.der");
    expect_error(true, SERVER_RSA "  tls_params: {cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, NOT-A-CIPHER]}\n",
                 "The following ciphers were rejected when tried individually: NOT-A-CIPHER");
    expect_error(true, SERVER_RSA "  tls_params: {ecdh_curves: [NOPE]}\n", "Failed to initialize ECDH curves NOPE");
    expect_error(true, SERVER_RSA "  tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}\n",
                 "tls_minimum_protocol_version is above tls_maximum_protocol_version");
    expect_error(true, SERVER_RSA "require_client_certificate: true\n", "has nothing to verify it against");
}

/* The translator refuses what the table refuses, for callers that skip it. */
static void translator_refuses_unsupported_fields(void **state)
{
    char err[256];
    sharp_tls_config_t cfg;
    Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext u =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT;
    u.allow_renegotiation = 1;
    assert_int_equal(sharp_tls_config_upstream(&u, &cfg, err, sizeof err), -1);
    assert_string_equal(err, "allow_renegotiation: TLS renegotiation is not supported by SHARP");
    Envoy__Extensions__TransportSockets__Tls__V3__TlsKeyLog kl = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_KEY_LOG__INIT;
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext common =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT;
    common.key_log = &kl;
    u.allow_renegotiation = 0;
    u.common_tls_context = &common;
    assert_int_equal(sharp_tls_config_upstream(&u, &cfg, err, sizeof err), -1);
    assert_string_equal(err, "common_tls_context.key_log: TLS key logging is not supported by SHARP");
    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext dtc =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__INIT;
    dtc.ocsp_staple_policy = 7;
    assert_int_equal(sharp_tls_config_downstream(&dtc, &cfg, err, sizeof err), -1);
    assert_string_equal(err, "ocsp_staple_policy: value must be one of the defined enum values");
}

/* The support table still refuses the TLS contexts, though they parse. */
static void tls_contexts_pass_the_table_downstream_only(void **state)
{
    sharp_config_types_register();
    const char *yaml = "static_resources:\n  listeners:\n  - name: l\n    address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
                       "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n"
                       "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
                       "          common_tls_context: {alpn_protocols: [h2]}\n";
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "b.yaml",
                                               &envoy__config__bootstrap__v3__bootstrap__descriptor, &err);
    if (!d) fail_msg("parse: %s", err.msg);
    assert_int_equal(sharp_config_check_support(sharp_config_doc_message(d), d, NULL, &err), 0);
    sharp_config_doc_free(d);
    yaml = "static_resources:\n  clusters:\n  - name: c\n    transport_socket:\n      name: tls\n      typed_config:\n"
           "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
           "        sni: x\n";
    d = sharp_config_parse(yaml, strlen(yaml), "b.yaml", &envoy__config__bootstrap__v3__bootstrap__descriptor, &err);
    if (!d) fail_msg("parse: %s", err.msg);
    assert_int_equal(sharp_config_check_support(sharp_config_doc_message(d), d, NULL, &err), 0);
    sharp_config_doc_free(d);
    /* a refused field of the upstream context */
    yaml = "static_resources:\n  clusters:\n  - name: c\n    transport_socket:\n      name: tls\n      typed_config:\n"
           "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
           "        allow_renegotiation: true\n";
    d = sharp_config_parse(yaml, strlen(yaml), "b.yaml", &envoy__config__bootstrap__v3__bootstrap__descriptor, &err);
    if (!d) fail_msg("parse: %s", err.msg);
    assert_int_equal(sharp_config_check_support(sharp_config_doc_message(d), d, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "allow_renegotiation"));
    sharp_config_doc_free(d);
    /* A misspelt field inside the context is a parse error naming it. */
    yaml = "static_resources:\n  clusters:\n  - name: c\n    transport_socket:\n      name: tls\n      typed_config:\n"
           "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
           "        snii: x\n";
    d = sharp_config_parse(yaml, strlen(yaml), "b.yaml", &envoy__config__bootstrap__v3__bootstrap__descriptor, &err);
    assert_null(d);
    assert_non_null(strstr(err.msg, "snii"));
}

/* ---- certificate selection ---------------------------------------------------------- */

#define MULTI_SERVER "common_tls_context:\n  tls_certificates:\n" CERT("rsa") CERT("ecdsa") CERT("other") CERT("wild")

static void sni_selects_the_certificate(void **state)
{
    const char *client = "sni: x\n"; /* overridden per connection below */
    struct {
        const char *sni, *subject;
    } cases[] = {
        {"www.example.com", "CN=ecdsa www"}, /* ECDSA-capable client: the ECDSA one of the pair */
        {"API.example.com", "CN=ecdsa www"},
        {"other.test", "CN=other"},
        {"a.wild.test", "CN=wild"},          /* wildcard */
        {"a.b.wild.test", "CN=rsa www"},     /* one label only: no match, the first certificate */
        {"unknown.test", "CN=rsa www"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pair_t *p = handshake(client, MULTI_SERVER, cases[i].sni);
        expect_server_subject(p, cases[i].subject);
        assert_non_null(sharp_tls_conn_sni(p->s));
        assert_true(!strcasecmp(sharp_tls_conn_sni(p->s), cases[i].sni)); /* %REQUESTED_SERVER_NAME% */
        pair_free(p);
    }
}

static void key_type_follows_client_signature_algorithms(void **state)
{
    const char *rsa_only = "common_tls_context:\n  tls_params:\n    signature_algorithms: [rsa_pss_rsae_sha256, rsa_pkcs1_sha256]\n";
    pair_t *p = handshake(rsa_only, MULTI_SERVER, "www.example.com");
    expect_server_subject(p, "CN=rsa www");
    pair_free(p);
    p = handshake("{}", MULTI_SERVER, "www.example.com");
    expect_server_subject(p, "CN=ecdsa www");
    pair_free(p);
    /* No SNI: every certificate is a candidate, ECDSA preferred. */
    p = handshake("{}", MULTI_SERVER, NULL);
    expect_server_subject(p, "CN=ecdsa www");
    pair_free(p);
    /* SNI mismatch: the first certificate, unless full_scan_certs_on_sni_mismatch. */
    p = handshake("{}", MULTI_SERVER, "nowhere.test");
    expect_server_subject(p, "CN=rsa www");
    pair_free(p);
    p = handshake("{}", MULTI_SERVER "full_scan_certs_on_sni_mismatch: true\n", "nowhere.test");
    expect_server_subject(p, "CN=ecdsa www");
    pair_free(p);
}

static void alpn_uses_server_preference(void **state)
{
    const char *server = SERVER_RSA "  alpn_protocols: [h2, http/1.1]\n";
    pair_t *p = handshake("common_tls_context: {alpn_protocols: [http/1.1, h2]}\n", server, NULL);
    expect_open(p);
    assert_string_equal(sharp_tls_conn_alpn(p->s), "h2");
    assert_string_equal(sharp_tls_conn_alpn(p->c), "h2");
    pair_free(p);
    p = handshake("common_tls_context: {alpn_protocols: [http/1.1]}\n", server, NULL);
    expect_open(p);
    assert_string_equal(sharp_tls_conn_alpn(p->c), "http/1.1");
    pair_free(p);
    /* Nothing in common: no ALPN, the handshake still completes. */
    p = handshake("common_tls_context: {alpn_protocols: [spdy/3]}\n", server, NULL);
    expect_open(p);
    assert_null(sharp_tls_conn_alpn(p->s));
    pair_free(p);
}

/* ---- client certificates ------------------------------------------------------------- */

#define MTLS_SERVER SERVER_RSA "  validation_context:\n    trusted_ca: {filename: %D/ca.crt}\nrequire_client_certificate: true\n"
#define CLIENT_WITH(n) "common_tls_context:\n  tls_certificates:\n" CERT(n)

static void mutual_tls_accepts_and_refuses(void **state)
{
    pair_t *p = handshake(CLIENT_WITH("client"), MTLS_SERVER, NULL);
    expect_open(p);
    char *s = sharp_tls_conn_peer_subject(p->s), *uri = sharp_tls_conn_peer_uri_san(p->s);
    assert_string_equal(s, "O=Example,CN=client"); /* %DOWNSTREAM_PEER_SUBJECT% */
    assert_string_equal(uri, "spiffe://example/client"); /* %DOWNSTREAM_PEER_URI_SAN% */
    free(s);
    free(uri);
    pair_free(p);

    p = handshake("{}", MTLS_SERVER, NULL);
    assert_int_equal(sharp_tls_conn_state(p->s), SHARP_TLS_FAILED);
    assert_int_equal(sharp_tls_conn_failure(p->s), SHARP_TLS_FAIL_VERIFY_NO_CERT);
    assert_int_equal(sharp_tls_conn_state(p->c), SHARP_TLS_FAILED); /* it got the alert */
    pair_free(p);

    p = handshake(CLIENT_WITH("client2"), MTLS_SERVER, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->s), SHARP_TLS_FAIL_VERIFY_ERROR);
    assert_non_null(strstr(sharp_tls_conn_error(p->s), "unable to get local issuer certificate"));
    pair_free(p);

    /* Without require_client_certificate a CA makes the certificate optional. */
    p = handshake("{}", SERVER_RSA "  validation_context:\n    trusted_ca: {filename: %D/ca.crt}\n", NULL);
    expect_open(p);
    assert_false(sharp_tls_conn_peer_has_cert(p->s)); /* ssl.no_certificate */
    pair_free(p);
}

static void crl_revokes(void **state)
{
    const char *server = SERVER_RSA "  validation_context:\n    trusted_ca: {filename: %D/ca.crt}\n"
                                    "    crl: {filename: %D/crl.pem}\nrequire_client_certificate: true\n";
    pair_t *p = handshake(CLIENT_WITH("revoked"), server, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->s), SHARP_TLS_FAIL_VERIFY_ERROR);
    assert_non_null(strstr(sharp_tls_conn_error(p->s), "certificate revoked"));
    pair_free(p);
    p = handshake(CLIENT_WITH("client"), server, NULL);
    expect_open(p);
    pair_free(p);
}

/* ---- server verification by clients -------------------------------------------------- */

static void san_matchers(void **state)
{
    const char *ok = CLIENT_CA "    match_typed_subject_alt_names:\n    - san_type: DNS\n      matcher: {exact: nope.test}\n"
                               "    - san_type: DNS\n      matcher: {exact: api.example.com}\n";
    pair_t *p = handshake(ok, SERVER_RSA, "www.example.com");
    expect_open(p);
    pair_free(p);
    /* A wildcard SAN covers an exact matcher of one label more. */
    const char *wild = CLIENT_CA "    match_typed_subject_alt_names:\n    - san_type: DNS\n      matcher: {exact: x.wild.test}\n";
    p = handshake(wild, "common_tls_context:\n  tls_certificates:\n" CERT("wild"), NULL);
    expect_open(p);
    pair_free(p);
    /* The type must match too: a URI matcher does not see DNS SANs. */
    const char *uri = CLIENT_CA "    match_typed_subject_alt_names:\n    - san_type: URI\n      matcher: {suffix: example.com}\n";
    p = handshake(uri, SERVER_RSA, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_SAN);
    assert_int_equal(sharp_tls_conn_state(p->s), SHARP_TLS_FAILED);
    pair_free(p);
    p = handshake(ok, "common_tls_context:\n  tls_certificates:\n" CERT("wrongsan"), NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_SAN);
    pair_free(p);
    /* The deprecated untyped list matches SANs of any type. */
    const char *legacy = CLIENT_CA "    match_subject_alt_names: [{prefix: api.}]\n";
    p = handshake(legacy, SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    /* auto_sni_san_validation: a DNS SAN must equal the SNI sent. */
    const char *autosan = "auto_sni_san_validation: true\n" CLIENT_CA;
    p = handshake(autosan, SERVER_RSA, "api.example.com");
    expect_open(p);
    pair_free(p);
    p = handshake(autosan, MULTI_SERVER, "other.test");
    expect_open(p);
    pair_free(p);
    p = handshake(autosan, SERVER_RSA, "other.test");
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_SAN);
    pair_free(p);
    /* ACCEPT_UNTRUSTED: recorded, not fatal. */
    p = handshake(CLIENT_CA "    trust_chain_verification: ACCEPT_UNTRUSTED\n"
                            "    match_typed_subject_alt_names:\n    - san_type: DNS\n      matcher: {exact: nope.test}\n",
                  SERVER_RSA, NULL);
    expect_open(p);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_SAN);
    pair_free(p);
}

static void read_cert(const char *name, X509 **out)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s.crt", dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    *out = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(*out);
}

static void certificate_pins(void **state)
{
    X509 *x;
    read_cert("rsa", &x);
    unsigned char md[32];
    unsigned mdlen;
    X509_digest(x, EVP_sha256(), md, &mdlen);
    char hex[65], colons[96];
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
        snprintf(colons + 3 * i, 4, i < 31 ? "%02X:" : "%02X", md[i]);
    }
    unsigned char *der = NULL;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    unsigned char spki_md[32];
    EVP_Digest(der, (size_t)len, spki_md, NULL, EVP_sha256(), NULL);
    OPENSSL_free(der);
    char spki[64];
    EVP_EncodeBlock((unsigned char *)spki, spki_md, 32);
    X509_free(x);
    const char *other = "0000000000000000000000000000000000000000000000000000000000000000";
    char yaml[1024];
    /* Pins alone (no CA) verify the server. */
    snprintf(yaml, sizeof yaml, "common_tls_context:\n  validation_context:\n    verify_certificate_hash: ['%s', '%s']\n", other, hex);
    pair_t *p = handshake(yaml, SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    snprintf(yaml, sizeof yaml, "common_tls_context:\n  validation_context:\n    verify_certificate_hash: ['%s']\n", colons);
    p = handshake(yaml, SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    snprintf(yaml, sizeof yaml, "common_tls_context:\n  validation_context:\n    verify_certificate_spki: ['%s']\n", spki);
    p = handshake(yaml, SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    /* Any pin of either list passes. */
    snprintf(yaml, sizeof yaml, "common_tls_context:\n  validation_context:\n    verify_certificate_hash: ['%s']\n"
                                "    verify_certificate_spki: ['%s']\n", other, spki);
    p = handshake(yaml, SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    /* The ECDSA certificate matches neither. */
    p = handshake(yaml, "common_tls_context:\n  tls_certificates:\n" CERT("ecdsa"), NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_CERT_HASH);
    assert_string_equal(sharp_tls_conn_error(p->c), "verify cert failed: cert hash and spki");
    pair_free(p);
}

static void expired_certificates(void **state)
{
    const char *expired = "common_tls_context:\n  tls_certificates:\n" CERT("expired");
    pair_t *p = handshake(CLIENT_CA, expired, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_ERROR);
    assert_non_null(strstr(sharp_tls_conn_error(p->c), "certificate has expired"));
    pair_free(p);
    p = handshake(CLIENT_CA "    allow_expired_certificate: true\n", expired, NULL);
    expect_open(p);
    pair_free(p);
    /* Without a validation context a client does not verify (Envoy's default). */
    p = handshake("{}", expired, NULL);
    expect_open(p);
    pair_free(p);
    /* A server from another CA fails the chain. */
    p = handshake("common_tls_context:\n  validation_context:\n    trusted_ca: {filename: %D/ca2.crt}\n", SERVER_RSA, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_ERROR);
    pair_free(p);
}

/* ---- versions, ciphers, keys ------------------------------------------------------------- */

static void versions_and_ciphers(void **state)
{
    pair_t *p = handshake("{}", SERVER_RSA, NULL);
    expect_open(p);
    assert_string_equal(sharp_tls_conn_version(p->s), "TLSv1.2"); /* client maximum 1.2 by default */
    assert_string_equal(sharp_tls_conn_cipher(p->s), "ECDHE-RSA-AES128-GCM-SHA256");
    pair_free(p);
    p = handshake("common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}}\n", SERVER_RSA, NULL);
    assert_string_equal(sharp_tls_conn_version(p->s), "TLSv1.3");
    pair_free(p);
    p = handshake("{}", SERVER_RSA "  tls_params: {tls_minimum_protocol_version: TLSv1_3}\n", NULL);
    assert_int_equal(sharp_tls_conn_state(p->s), SHARP_TLS_FAILED);
    assert_int_equal(sharp_tls_conn_failure(p->s), SHARP_TLS_FAIL_CONNECTION);
    pair_free(p);
    /* Server preference by default; prefer_client_ciphers takes the client's order. */
    const char *client = "common_tls_context: {tls_params: {cipher_suites: [ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256]}}\n";
    p = handshake(client, SERVER_RSA, NULL);
    assert_string_equal(sharp_tls_conn_cipher(p->s), "ECDHE-RSA-AES128-GCM-SHA256");
    pair_free(p);
    p = handshake(client, SERVER_RSA "prefer_client_ciphers: true\n", NULL);
    assert_string_equal(sharp_tls_conn_cipher(p->s), "ECDHE-RSA-AES256-GCM-SHA384");
    pair_free(p);
    /* ecdh_curves: nothing in common fails. */
    p = handshake("common_tls_context: {tls_params: {ecdh_curves: [P-384]}}\n",
                  SERVER_RSA "  tls_params: {ecdh_curves: [X25519]}\n", NULL);
    assert_int_equal(sharp_tls_conn_state(p->s), SHARP_TLS_FAILED);
    pair_free(p);
    /* An encrypted key with its password. */
    p = handshake("{}", "common_tls_context:\n  tls_certificates:\n  - certificate_chain: {filename: %D/rsa.crt}\n"
                        "    private_key: {filename: %D/rsa_enc.key}\n    password: {inline_string: sekrit}\n", NULL);
    expect_open(p);
    pair_free(p);
    expect_error(true, "common_tls_context:\n  tls_certificates:\n  - certificate_chain: {filename: %D/rsa.crt}\n"
                       "    private_key: {filename: %D/rsa_enc.key}\n    password: {inline_string: wrong}\n",
                 "Failed to load private key from");
}

/* ---- sessions --------------------------------------------------------------------------- */

/* Both sides send close_notify: OpenSSL does not resume a session whose
 * connection ended without it. */
static void close_both(pair_t *p)
{
    sharp_tls_conn_close(p->c);
    pump(p);
    sharp_tls_conn_close(p->s);
    pump(p);
}

static bool resumes(sharp_tls_ctx_t *cctx, sharp_tls_ctx_t *s1, sharp_tls_ctx_t *s2)
{
    pair_t *p = connect_pair(cctx, s1, NULL);
    expect_open(p);
    assert_false(sharp_tls_conn_session_reused(p->c));
    close_both(p);
    pair_free(p);
    p = connect_pair(cctx, s2, NULL);
    expect_open(p);
    bool r = sharp_tls_conn_session_reused(p->c);
    assert_int_equal(r, sharp_tls_conn_session_reused(p->s));
    pair_free(p);
    return r;
}

static void session_resumption(void **state)
{
    const char *v13 = "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}}\n";
    const char *keys = "session_ticket_keys:\n  keys:\n  - filename: %D/tk1.bin\n  - filename: %D/tk2.bin\n";
    const char *keys_rotated = "session_ticket_keys:\n  keys:\n  - filename: %D/tk2.bin\n  - filename: %D/tk1.bin\n";
    const char *other_keys = "session_ticket_keys:\n  keys:\n  - filename: %D/tk2.bin\n";
    const char *clients[] = {"{}", v13};
    for (int i = 0; i < 2; i++) {
        sharp_tls_ctx_t *c = make_ctx(false, clients[i], NULL, 0);
        /* OpenSSL's own ticket key: the same context resumes. */
        sharp_tls_ctx_t *s = make_ctx(true, SERVER_RSA, NULL, 0);
        assert_true(resumes(c, s, s));
        /* The configured keys: a second context from the same keys resumes,
         * also when the encrypting key has rotated to second place. */
        char y1[512], y2[512], y3[512];
        snprintf(y1, sizeof y1, "%s%s", SERVER_RSA, keys);
        snprintf(y2, sizeof y2, "%s%s", SERVER_RSA, keys_rotated);
        snprintf(y3, sizeof y3, "%s%s", SERVER_RSA, other_keys);
        sharp_tls_ctx_t *k1 = make_ctx(true, y1, NULL, 0), *k1b = make_ctx(true, y1, NULL, 0);
        sharp_tls_ctx_t *k2 = make_ctx(true, y2, NULL, 0), *k3 = make_ctx(true, y3, NULL, 0);
        assert_true(resumes(c, k1, k1b));
        assert_true(resumes(c, k1, k2));
        assert_true(resumes(c, k3, k1));           /* tk2 is known to k1 (second key) */
        assert_false(resumes(c, k1, k3));          /* tk1 is unknown to k3 */
        assert_false(resumes(c, s, k1b));          /* OpenSSL's key is unknown to k1b */
        sharp_tls_ctx_unref(s);
        sharp_tls_ctx_unref(k1);
        sharp_tls_ctx_unref(k1b);
        sharp_tls_ctx_unref(k2);
        sharp_tls_ctx_unref(k3);
        sharp_tls_ctx_unref(c);
    }
    /* max_session_keys: 0 keeps nothing. */
    sharp_tls_ctx_t *c0 = make_ctx(false, "max_session_keys: 0\n", NULL, 0);
    sharp_tls_ctx_t *s = make_ctx(true, SERVER_RSA, NULL, 0);
    assert_false(resumes(c0, s, s));
    assert_int_equal(sharp_tls_ctx_stored_sessions(c0), 0);
    sharp_tls_ctx_unref(c0);
    /* Stateless off: TLS 1.2 session IDs from the server cache still resume on
     * the same context; both off: nothing resumes. */
    sharp_tls_ctx_t *c = make_ctx(false, "max_session_keys: 3\n", NULL, 0);
    sharp_tls_ctx_t *nt = make_ctx(true, SERVER_RSA "disable_stateless_session_resumption: true\n", NULL, 0);
    assert_true(resumes(c, nt, nt));
    assert_true(sharp_tls_ctx_stored_sessions(c) >= 1 && sharp_tls_ctx_stored_sessions(c) <= 3);
    sharp_tls_ctx_t *none = make_ctx(true, SERVER_RSA "disable_stateless_session_resumption: true\n"
                                                      "disable_stateful_session_resumption: true\n", NULL, 0);
    assert_false(resumes(c, none, none));
    /* session_timeout: 0s never resumes; 1s resumes at once but not 2s later. */
    sharp_tls_ctx_t *t0 = make_ctx(true, SERVER_RSA "session_timeout: 0s\n", NULL, 0);
    sharp_tls_ctx_t *t1 = make_ctx(true, SERVER_RSA "session_timeout: 1s\n", NULL, 0);
    sharp_tls_ctx_t *c1 = make_ctx(false, "{}", NULL, 0);
    assert_false(resumes(c1, t0, t0));
    assert_true(resumes(c1, t1, t1));
    pair_t *p = connect_pair(c1, t1, NULL);
    close_both(p);
    pair_free(p);
    sleep(2);
    p = connect_pair(c1, t1, NULL);
    expect_open(p);
    assert_false(sharp_tls_conn_session_reused(p->s));
    pair_free(p);
    sharp_tls_ctx_unref(c1);
    sharp_tls_ctx_unref(t0);
    sharp_tls_ctx_unref(t1);
    sharp_tls_ctx_unref(none);
    sharp_tls_ctx_unref(nt);
    sharp_tls_ctx_unref(c);
    sharp_tls_ctx_unref(s);
}

/* ---- what the access log and the stats read ---------------------------------------------- */

/* Envoy's drainErrorQueue text, with OpenSSL 3's codes: the queue's
 * entries, the validator's detail after a failed verification. */
static void failure_reasons_are_envoys(void **state)
{
    pair_t *p = handshake("common_tls_context:\n  validation_context:\n    trusted_ca: {filename: %D/ca2.crt}\n",
                          SERVER_RSA, NULL);
    assert_int_equal(sharp_tls_conn_state(p->c), SHARP_TLS_FAILED);
    assert_string_equal(sharp_tls_conn_failure_reason(p->c),
                        "TLS_error:|167772294:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
                        "verify cert failed: X509_verify_cert: certificate verification error at depth 0: "
                        "unable to get local issuer certificate:TLS_error_end");
    /* the server got the alert: the reason names it */
    assert_non_null(strstr(sharp_tls_conn_failure_reason(p->s), ":SSL routines:OPENSSL_internal:"));
    assert_non_null(strstr(sharp_tls_conn_failure_reason(p->s), "ALERT_UNKNOWN_CA:TLS_error_end"));
    pair_free(p);

    p = handshake(CLIENT_CA "    match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: other.test}}]\n",
                  SERVER_RSA, NULL);
    assert_string_equal(sharp_tls_conn_failure_reason(p->c),
                        "TLS_error:|167772294:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
                        "verify cert failed: SAN matcher:TLS_error_end");
    pair_free(p);

    p = handshake("{}", MTLS_SERVER, NULL);
    const char *r = sharp_tls_conn_failure_reason(p->s);
    assert_non_null(r);
    assert_non_null(strstr(r, ":SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE:"
                              "peer did not provide required client certificate:TLS_error_end"));
    pair_free(p);

    /* no version in common: OpenSSL's own reason, no validator detail */
    p = handshake("{}", SERVER_RSA "  tls_params: {tls_minimum_protocol_version: TLSv1_3}\n", NULL);
    r = sharp_tls_conn_failure_reason(p->s);
    assert_non_null(r);
    assert_true(!strncmp(r, "TLS_error:|", 11));
    assert_non_null(strstr(r, ":SSL routines:OPENSSL_internal:UNSUPPORTED_PROTOCOL:TLS_error_end"));
    pair_free(p);

    p = handshake("{}", SERVER_RSA, NULL);
    expect_open(p);
    assert_null(sharp_tls_conn_failure_reason(p->c));
    assert_null(sharp_tls_conn_failure_reason(p->s));
    pair_free(p);
}

static const char *sigalg_with(const char *client, const char *server, bool at_server)
{
    static char name[64];
    pair_t *p = handshake(client, server, NULL);
    expect_open(p);
    const char *n = sharp_tls_conn_peer_sigalg(at_server ? p->s : p->c);
    snprintf(name, sizeof name, "%s", n ? n : "(none)");
    pair_free(p);
    return name;
}

/* ssl.sigalgs.<name>: the peer's signature, in BoringSSL's names. */
static void peer_signature_algorithms(void **state)
{
    const char *v13 = "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}}\n";
    const char *ecdsa_server = "common_tls_context:\n  tls_certificates:\n" CERT("ecdsa");
    assert_string_equal(sigalg_with("{}", SERVER_RSA, false), "rsa_pss_rsae_sha256");
    assert_string_equal(sigalg_with(v13, SERVER_RSA, false), "rsa_pss_rsae_sha256");
    assert_string_equal(sigalg_with("{}", ecdsa_server, false), "ecdsa_secp256r1_sha256");
    assert_string_equal(sigalg_with(v13, ecdsa_server, false), "ecdsa_secp256r1_sha256");
    assert_string_equal(sigalg_with("common_tls_context: {tls_params: {signature_algorithms: [rsa_pkcs1_sha384]}}\n",
                                    SERVER_RSA, false), "rsa_pkcs1_sha384");
    assert_string_equal(sigalg_with("common_tls_context: {tls_params: {signature_algorithms: [rsa_pss_rsae_sha512]}}\n",
                                    SERVER_RSA, false), "rsa_pss_rsae_sha512");
    /* a server sees one only from a client certificate (ECDSA here) */
    assert_string_equal(sigalg_with("{}", SERVER_RSA, true), "(none)");
    assert_string_equal(sigalg_with(CLIENT_WITH("client"), MTLS_SERVER, true), "ecdsa_secp256r1_sha256");
    /* a resumed session signs nothing */
    sharp_tls_ctx_t *c = make_ctx(false, "{}", NULL, 0), *s = make_ctx(true, SERVER_RSA, NULL, 0);
    pair_t *p = connect_pair(c, s, NULL);
    assert_string_equal(sharp_tls_conn_peer_sigalg(p->c), "rsa_pss_rsae_sha256");
    close_both(p);
    pair_free(p);
    p = connect_pair(c, s, NULL);
    assert_true(sharp_tls_conn_session_reused(p->c));
    assert_null(sharp_tls_conn_peer_sigalg(p->c));
    pair_free(p);
    sharp_tls_ctx_unref(c);
    sharp_tls_ctx_unref(s);
}

static char *info(const sharp_tls_conn_t *c, sharp_tls_info_t what)
{
    static char buf[8192];
    sharp_sbuf_t b = {0};
    bool ok = sharp_tls_conn_put_info(c, what, &b);
    if (ok) assert_true(b.len > 0);
    else assert_int_equal(b.len, 0);
    snprintf(buf, sizeof buf, "%s", ok ? sharp_sbuf_cstr(&b) : "(none)");
    sharp_sbuf_free(&b);
    return buf;
}

/* Envoy's Ssl::ConnectionInfo for the UPSTREAM_TLS_* / _PEER_* / _LOCAL_*
 * operators, read through a reference that outlives the connection's
 * owner (a stream logging after its upstream connection closed). */
static void connection_info_for_the_access_log(void **state)
{
    pair_t *p = handshake(CLIENT_CA "  tls_certificates:\n" CERT("client"),
                          "common_tls_context:\n  tls_certificates:\n" CERT("ipsan")
                          "  validation_context:\n    trusted_ca: {filename: %D/ca.crt}\n", NULL);
    expect_open(p);
    sharp_tls_conn_t *c = p->c;
    sharp_tls_conn_ref(c);
    pair_free(p); /* the owner's reference goes */
    assert_string_equal(info(c, SHARP_TLS_INFO_VERSION), "TLSv1.2");
    assert_string_equal(info(c, SHARP_TLS_INFO_CIPHER), "ECDHE-ECDSA-AES128-GCM-SHA256");
    const char *id = info(c, SHARP_TLS_INFO_SESSION_ID);
    assert_int_equal(strlen(id), 64);
    assert_int_equal(strspn(id, "0123456789abcdef"), 64);
    assert_string_equal(info(c, SHARP_TLS_INFO_PEER_SUBJECT), "O=Example,CN=ipsan");
    assert_string_equal(info(c, SHARP_TLS_INFO_PEER_ISSUER), "CN=Test CA");
    assert_string_equal(info(c, SHARP_TLS_INFO_PEER_DNS_SAN), "www.example.com");
    assert_string_equal(info(c, SHARP_TLS_INFO_PEER_IP_SAN), "127.0.0.1,::1");
    assert_string_equal(info(c, SHARP_TLS_INFO_PEER_URI_SAN), "(none)");
    assert_string_equal(info(c, SHARP_TLS_INFO_LOCAL_URI_SAN), "spiffe://example/client");
    assert_string_equal(info(c, SHARP_TLS_INFO_LOCAL_DNS_SAN), "client.test");
    assert_string_equal(info(c, SHARP_TLS_INFO_LOCAL_IP_SAN), "(none)");
    const char *pem = info(c, SHARP_TLS_INFO_PEER_CERT);
    assert_true(!strncmp(pem, "-----BEGIN%20CERTIFICATE-----%0A", 32));
    assert_null(strchr(pem, '\n'));
    int64_t from, to;
    assert_true(sharp_tls_conn_peer_validity(c, false, &from));
    assert_true(sharp_tls_conn_peer_validity(c, true, &to));
    assert_true(to - from >= 30 * 86400 - 60 && to - from <= 30 * 86400 + 60);
    assert_true(from <= (int64_t)time(NULL));
    sharp_tls_conn_free(c);

    /* a client without a certificate of its own, a DNS-only server */
    p = handshake("{}", SERVER_RSA, NULL);
    assert_string_equal(info(p->c, SHARP_TLS_INFO_PEER_DNS_SAN), "www.example.com,api.example.com");
    assert_string_equal(info(p->c, SHARP_TLS_INFO_LOCAL_DNS_SAN), "(none)");
    assert_string_equal(info(p->s, SHARP_TLS_INFO_PEER_SUBJECT), "(none)"); /* no client certificate */
    assert_false(sharp_tls_conn_peer_validity(p->s, false, &from));
    pair_free(p);
}

/* ---- combined validation contexts ---------------------------------------------------- */

/* static_resources.secrets for the translations: validation contexts
 * parsed from YAML ("%D" is the PKI directory). */
static sharp_config_doc_t *secret_docs[4];
static Envoy__Extensions__TransportSockets__Tls__V3__Secret *secrets[4];

static void use_secrets(const char *const *yaml, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *text = expand(yaml[i]);
        sharp_config_error_t perr = {{0}};
        secret_docs[i] = sharp_config_parse(text, strlen(text), "secret.yaml",
                                            &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, &perr);
        free(text);
        if (!secret_docs[i]) fail_msg("secret: %s", perr.msg);
        secrets[i] = (void *)sharp_config_doc_message(secret_docs[i]);
    }
    sharp_tls_config_use_secrets(secrets, n);
}

static void drop_secrets(size_t n)
{
    sharp_tls_config_use_secrets(NULL, 0);
    for (size_t i = 0; i < n; i++) sharp_config_doc_free(secret_docs[i]);
}

#define COMBINED(dflt, name)                                                                                      \
    "common_tls_context:\n  combined_validation_context:\n    default_validation_context: " dflt "\n"             \
    "    validation_context_sds_secret_config: {name: " name "}\n"
#define SAN(n) "{san_type: DNS, matcher: {exact: " #n "}}"

/* Envoy merges the secret over the default (MergeFrom): the secret's
 * singular fields win, repeated ones are appended, booleans are OR'ed;
 * the checks apply to the result. */
static void combined_validation_context_merges(void **state)
{
    const char *yaml[] = {
        "name: ca\nvalidation_context: {trusted_ca: {filename: %D/ca.crt}}\n",
        "name: ca_www\nvalidation_context: {trusted_ca: {filename: %D/ca.crt}, match_typed_subject_alt_names: ["
        SAN(www.example.com) "]}\n",
        "name: empty\nvalidation_context: {}\n",
        "name: ca2\nvalidation_context: {trusted_ca: {filename: %D/ca2.crt}}\n",
    };
    use_secrets(yaml, 4);
    /* the default's SAN matcher with the secret's CA (neither is valid alone) */
    pair_t *p = handshake(COMBINED("{match_typed_subject_alt_names: [" SAN(www.example.com) "]}", "ca"), SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    p = handshake(COMBINED("{match_typed_subject_alt_names: [" SAN(other.test) "]}", "ca"), SERVER_RSA, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_SAN);
    pair_free(p);
    /* repeated fields appended: other.test or www.example.com matches */
    p = handshake(COMBINED("{match_typed_subject_alt_names: [" SAN(other.test) "]}", "ca_www"), SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    /* singular fields: the secret's CA replaces the default's */
    p = handshake(COMBINED("{trusted_ca: {filename: %D/ca2.crt}}", "ca"), SERVER_RSA, NULL);
    expect_open(p);
    pair_free(p);
    p = handshake(COMBINED("{trusted_ca: {filename: %D/ca.crt}}", "ca2"), SERVER_RSA, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_ERROR);
    pair_free(p);
    /* an empty secret leaves the default whole; booleans: the default's true stays */
    const char *expired = "common_tls_context:\n  tls_certificates:\n" CERT("expired");
    p = handshake(COMBINED("{trusted_ca: {filename: %D/ca.crt}, allow_expired_certificate: true}", "empty"), expired,
                  NULL);
    expect_open(p);
    pair_free(p);
    p = handshake(COMBINED("{trusted_ca: {filename: %D/ca.crt}}", "empty"), expired, NULL);
    assert_int_equal(sharp_tls_conn_failure(p->c), SHARP_TLS_FAIL_VERIFY_ERROR);
    pair_free(p);
    /* server side: client certificates verified with the combined context */
    p = handshake(CLIENT_WITH("client"), SERVER_RSA "  combined_validation_context:\n"
                  "    default_validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: "
                  "{exact: 'spiffe://example/client'}}]}\n    validation_context_sds_secret_config: {name: ca}\n"
                  "require_client_certificate: true\n", NULL);
    expect_open(p);
    pair_free(p);
    /* the checks see the merged context; names are looked up as Envoy's */
    expect_error(false, COMBINED("{match_typed_subject_alt_names: [" SAN(www.example.com) "]}", "empty"),
                 "common_tls_context.combined_validation_context: SAN-based verification of peer certificates "
                 "without trusted CA is insecure and not allowed");
    expect_error(false, COMBINED("{}", "nope"),
                 "common_tls_context.combined_validation_context.validation_context_sds_secret_config.name: "
                 "Unknown static secret: nope");
    expect_error(false, "common_tls_context:\n  combined_validation_context:\n    default_validation_context: {}\n",
                 "validation_context_sds_secret_config: is required");
    drop_secrets(4);
}

/* ---- data ----------------------------------------------------------------------------- */

static void data_both_ways_bounded_and_close_notify(void **state)
{
    pair_t *p = handshake("common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}}\n", SERVER_RSA, NULL);
    expect_open(p);
    /* Nothing can be written before the handshake on a fresh connection. */
    size_t big = 3u << 20;
    uint8_t *data = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (uint8_t)(i * 31 + (i >> 13));
    size_t sent_c = 0, sent_s = 0;
    uint8_t buf[9000];
    int rounds = 0;
    while (sent_c < big || sent_s < big || sharp_tls_conn_pending(p->c) || sharp_tls_conn_pending(p->s)) {
        assert_true(++rounds < 200000);
        size_t w = sharp_tls_conn_write(p->c, data + sent_c, big - sent_c);
        sent_c += w;
        sent_s += sharp_tls_conn_write(p->s, data + sent_s, big - sent_s);
        /* The engine buffers at most the bound (plus one record) unless drained. */
        assert_true(sharp_tls_conn_pending(p->c) <= SHARP_TLS_MAX_CIPHERTEXT_OUT + 16384 + 256);
        sharp_tls_conn_t *from[2] = {p->c, p->s}, *to[2] = {p->s, p->c};
        for (int i = 0; i < 2; i++) {
            size_t n = sharp_tls_conn_drain(from[i], buf, sizeof buf), off = 0;
            while (off < n) {
                size_t f = sharp_tls_conn_feed(to[i], buf + off, n - off);
                if (!f) sharp_tls_conn_process(to[i]);
                off += f;
            }
            sharp_tls_conn_process(to[i]);
        }
    }
    pump(p);
    assert_int_equal(p->ss.got.len, big);
    assert_int_equal(p->cs.got.len, big);
    assert_memory_equal(p->ss.got.data, data, big);
    assert_memory_equal(p->cs.got.data, data, big);

    /* Feeding is bounded when nothing is processed. */
    size_t took = 0;
    for (int i = 0; i < 100; i++) took += sharp_tls_conn_feed(p->s, data, 4096);
    assert_int_equal(took, SHARP_TLS_MAX_CIPHERTEXT_IN);
    pair_free(p);

    /* Pause and resume delivery. */
    p = handshake("{}", SERVER_RSA, NULL);
    p->ss.pause_after_one = true;
    for (int i = 0; i < 3; i++) assert_int_equal(sharp_tls_conn_write(p->c, "hello", 5), 5);
    pump(p);
    assert_int_equal(p->ss.got.len, 5);
    p->ss.pause_after_one = false;
    sharp_tls_conn_resume(p->s);
    sharp_tls_conn_process(p->s);
    assert_int_equal(p->ss.got.len, 15);

    /* close_notify: the server sees the client's, answers with its own. */
    sharp_tls_conn_close(p->c);
    assert_int_equal(sharp_tls_conn_write(p->c, "late", 4), 0);
    pump(p);
    assert_int_equal(sharp_tls_conn_state(p->s), SHARP_TLS_PEER_CLOSED);
    assert_true(sharp_tls_conn_close_notify_received(p->s));
    /* a half-close: the server may still answer before its own close */
    assert_int_equal(sharp_tls_conn_write(p->s, "bye", 3), 3);
    sharp_tls_conn_close(p->s);
    assert_int_equal(sharp_tls_conn_write(p->s, "late", 4), 0);
    pump(p);
    assert_true(sharp_tls_conn_close_notify_received(p->c));
    pair_free(p);

    /* Garbage instead of a ClientHello is a connection error, not a crash. */
    sharp_tls_ctx_t *s = make_ctx(true, SERVER_RSA, NULL, 0);
    sharp_tls_conn_t *c = sharp_tls_conn_new(s, NULL, NULL, NULL);
    assert_int_equal(sharp_tls_conn_write(c, "x", 1), 0);
    sharp_tls_conn_feed(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    assert_int_equal(sharp_tls_conn_process(c), SHARP_TLS_FAILED);
    assert_int_equal(sharp_tls_conn_failure(c), SHARP_TLS_FAIL_CONNECTION);
    assert_true(sharp_tls_conn_error(c)[0] != '\0');
    sharp_tls_conn_free(c);
    sharp_tls_ctx_unref(s);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(translation_defaults_follow_envoy),
        cmocka_unit_test(translation_errors_are_envoys),
        cmocka_unit_test(translator_refuses_unsupported_fields),
        cmocka_unit_test(tls_contexts_pass_the_table_downstream_only),
        cmocka_unit_test(sni_selects_the_certificate),
        cmocka_unit_test(key_type_follows_client_signature_algorithms),
        cmocka_unit_test(alpn_uses_server_preference),
        cmocka_unit_test(mutual_tls_accepts_and_refuses),
        cmocka_unit_test(crl_revokes),
        cmocka_unit_test(san_matchers),
        cmocka_unit_test(certificate_pins),
        cmocka_unit_test(expired_certificates),
        cmocka_unit_test(versions_and_ciphers),
        cmocka_unit_test(session_resumption),
        cmocka_unit_test(failure_reasons_are_envoys),
        cmocka_unit_test(peer_signature_algorithms),
        cmocka_unit_test(connection_info_for_the_access_log),
        cmocka_unit_test(combined_validation_context_merges),
        cmocka_unit_test(data_both_ways_bounded_and_close_notify),
    };
    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
