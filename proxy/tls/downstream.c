/* downstream.c: see downstream.h. */
#include "tls/downstream.h"

#include "http/conn_internal.h"
#include "log.h"
#include "server.h"
#include "tls/conn.h"

#include <openssl/x509v3.h>
#include <string.h>

struct sharp_conn_tls {
    sharp_tls_conn_t *engine;
    bool open;        /* the handshake completed: counted, codec chosen */
    bool peer_closed; /* the client's close_notify was handed on */
    bool ocsp_counted; /* the ClientHello's OCSP stapling was counted */
    bool last_write;   /* the next write closes: close_notify goes with it */
    sharp_downstream_tls_info_t info;
};

/* Envoy's ServerContextImpl::selectTlsContext: ocsp_staple_requests for a
 * client that asked (status_request), then what was done about it. */
static void count_ocsp(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    if (t->ocsp_counted) return;
    sharp_tls_ocsp_t o = sharp_tls_conn_ocsp(t->engine);
    if (o == SHARP_TLS_OCSP_PENDING) return;
    t->ocsp_counted = true;
    if (o == SHARP_TLS_OCSP_NOT_REQUESTED) return;
    const sharp_listener_ssl_stats_t *st = &c->listener->ssl;
    sharp_stats_shard_t *sh = SHARP_CONN_STATS(c);
    sharp_counter_inc(sh, st->ocsp_staple_requests);
    sharp_counter_inc(sh, o == SHARP_TLS_OCSP_STAPLED   ? st->ocsp_staple_responses
                          : o == SHARP_TLS_OCSP_OMITTED ? st->ocsp_staple_omitted
                                                        : st->ocsp_staple_failed);
}

static int send_ciphertext(sharp_conn_t *c)
{
    return sharp_tls_conn_send(c->tls->engine, &c->writer);
}

/* The writer's transport: every write of the codecs is encrypted here. */
static int tls_write(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    sharp_conn_t *c = sharp_container_of(w, sharp_conn_t, writer);
    size_t left;
    bool last = c->tls->last_write;
    c->tls->last_write = false;
    int rc = sharp_tls_conn_encrypt(c->tls->engine, w, bufs, nbufs, last, &left);
    if (rc == UV_ENOTCONN)
        sharp_debug(connection, "[C%llu] TLS: %zu bytes not written (connection not open)", c->id, left);
    return rc;
}

static sharp_stats_t *stats_store(sharp_conn_t *c)
{
    return c->worker->server->stats;
}

enum { NAMED_CIPHER, NAMED_VERSION, NAMED_CURVE, NAMED_SIGALG };

/* listener.<stat name>.ssl.<kind>.<name>: registered on first use, then
 * found in the worker's small cache by the name's address (OpenSSL's and
 * our names are static strings) and the listener's stat name. */
static sharp_stat_id_t named_counter(sharp_conn_t *c, int kind, const char *name)
{
    static const char *const fmt[] = {"listener.%s.ssl.ciphers.%s", "listener.%s.ssl.versions.%s",
                                       "listener.%s.ssl.curves.%s", "listener.%s.ssl.sigalgs.%s"};
    const char *sn = c->listener->stat_name;
    struct sharp_tls_named_stat *row = c->worker->tls_named_stats[kind];
    uintptr_t h = (uintptr_t)name;
    struct sharp_tls_named_stat *e = &row[(h >> 4 ^ h >> 9) % 4];
    if (e->name == name && !strcmp(e->listener, sn)) return e->id;
    sharp_stat_id_t id = sharp_stats_counterf(stats_store(c), fmt[kind], sn, name);
    e->name = name;
    e->id = id;
    SHARP_COPY_CSTR(e->listener, sn);
    return id;
}

/* Envoy's ContextImpl::logHandshake: handshake, session_reused,
 * no_certificate, ciphers.<name>, versions.<v>, curves.<name>,
 * sigalgs.<name>. */
static void count_handshake(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    const sharp_listener_ssl_stats_t *st = &c->listener->ssl;
    sharp_stats_shard_t *sh = SHARP_CONN_STATS(c);
    sharp_counter_inc(sh, st->handshake);
    if (sharp_tls_conn_session_reused(t->engine)) sharp_counter_inc(sh, st->session_reused);
    if (!sharp_tls_conn_peer_has_cert(t->engine)) sharp_counter_inc(sh, st->no_certificate);
    if (t->info.cipher) sharp_counter_inc(sh, named_counter(c, NAMED_CIPHER, t->info.cipher));
    if (t->info.version) sharp_counter_inc(sh, named_counter(c, NAMED_VERSION, t->info.version));
    const char *curve = sharp_tls_conn_curve(t->engine);
    if (curve) sharp_counter_inc(sh, named_counter(c, NAMED_CURVE, curve));
    /* the client's CertificateVerify: only a client certificate signs */
    const char *sigalg = sharp_tls_conn_peer_sigalg(t->engine);
    if (sigalg) sharp_counter_inc(sh, named_counter(c, NAMED_SIGALG, sigalg));
}

/* Envoy's SslSocket::drainErrorQueue: a failed verification counts its
 * own fail_verify_* (not connection_error), anything else connection_error. */
static void count_failure(sharp_conn_t *c)
{
    const sharp_listener_ssl_stats_t *st = &c->listener->ssl;
    sharp_stat_id_t id;
    switch (sharp_tls_conn_failure(c->tls->engine)) {
    case SHARP_TLS_FAIL_VERIFY_ERROR: id = st->fail_verify_error; break;
    case SHARP_TLS_FAIL_VERIFY_SAN: id = st->fail_verify_san; break;
    case SHARP_TLS_FAIL_VERIFY_CERT_HASH: id = st->fail_verify_cert_hash; break;
    case SHARP_TLS_FAIL_VERIFY_NO_CERT: id = st->fail_verify_no_cert; break;
    default: id = st->connection_error; break;
    }
    sharp_counter_inc(SHARP_CONN_STATS(c), id);
}

static void handshake_done(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    t->open = true;
    sharp_tls_conn_t *e = t->engine;
    t->info.version = sharp_tls_conn_version(e);
    t->info.cipher = sharp_tls_conn_cipher(e);
    t->info.sni = sharp_tls_conn_sni(e);
    t->info.peer_uri_san = sharp_tls_conn_peer_uri_san(e);
    t->info.peer_subject = sharp_tls_conn_peer_subject(e);
    t->info.peer_uri_sans = sharp_tls_conn_peer_sans(e, GEN_URI);
    t->info.peer_dns_sans = sharp_tls_conn_peer_sans(e, GEN_DNS);
    t->info.local_subject = sharp_tls_conn_local_subject(e);
    t->info.peer_cert = sharp_tls_conn_peer_has_cert(e);
    /* APPEND_FORWARD and SANITIZE_SET write the client's certificate
     * details into x-forwarded-client-cert: made once per connection */
    int fcc = SHARP_CONN_HCM(c)->forward_client_cert;
    if (fcc == 2 || fcc == 3) t->info.xfcc = sharp_tls_conn_xfcc(e, SHARP_CONN_HCM(c)->client_cert_details);
    count_handshake(c);
    const char *alpn = sharp_tls_conn_alpn(e);
    sharp_debug(connection, "[C%llu] TLS handshake done: %s %s, ALPN %s, SNI %s%s", c->id,
                t->info.version ? t->info.version : "-", t->info.cipher ? t->info.cipher : "-", alpn ? alpn : "-",
                t->info.sni ? t->info.sni : "-", sharp_tls_conn_session_reused(e) ? ", resumed" : "");
    sharp_conn_select_codec(c, alpn);
}

/* Plaintext from the engine: to the codec, as a plaintext read would go. */
static bool on_plaintext(void *ud, const uint8_t *p, size_t n)
{
    sharp_conn_t *c = ud;
    if (c->closing || c->shutdown) return false;
    if (!c->tls->open) handshake_done(c);
    if (c->closing) return false;
    if (n && !sharp_conn_net_rbac_allows(c)) return false;
    c->codec->dispatch(c, (const char *)p, n);
    return !c->closing && !c->shutdown;
}

bool sharp_conn_tls_start(sharp_conn_t *c, sharp_tls_ctx_t *ctx)
{
    if (!ctx) {
        /* its SDS secret has not come from the server yet: no handshake
         * is possible (Envoy's listener would still be warming) */
        sharp_debug(connection, "[C%llu] no TLS context: the SDS secret has not come yet", c->id);
        sharp_counter_inc(SHARP_CONN_STATS(c), c->listener->ssl.connection_error);
        sharp_conn_close(c);
        return false;
    }
    struct sharp_conn_tls *t = sharp_calloc(1, sizeof *t);
    t->engine = sharp_tls_conn_new(ctx, NULL, on_plaintext, c);
    c->tls = t;
    c->writer.transport = tls_write;
    if (!t->engine) {
        sharp_log_warn("[C%llu] cannot create a TLS connection", c->id);
        sharp_counter_inc(SHARP_CONN_STATS(c), c->listener->ssl.connection_error);
        sharp_conn_close(c);
        return false;
    }
    return true;
}

void sharp_conn_tls_read(sharp_conn_t *c, const char *p, size_t n)
{
    struct sharp_conn_tls *t = c->tls;
    size_t off = 0;
    for (;;) {
        size_t took = sharp_tls_conn_feed(t->engine, p + off, n - off);
        off += took;
        sharp_tls_state_t st = sharp_tls_conn_process(t->engine);
        if (c->closing) return;
        count_ocsp(c);
        if (st != SHARP_TLS_HANDSHAKING && st != SHARP_TLS_FAILED && !t->open) handshake_done(c);
        if (c->closing) return;
        /* the handshake's answers and alerts; records the codec wrote
         * were sent as they were written. With a flush of the codec's
         * output due this turn (HTTP/2's SETTINGS after the handshake, a
         * response head) what is left (the tickets after the client's
         * Finished) waits for it and shares its write. */
        if ((st == SHARP_TLS_FAILED || !sharp_conn_flush_deferred(c)) && send_ciphertext(c) < 0)
            return; /* the socket is gone: the read side sees it */
        if (st == SHARP_TLS_FAILED) {
            if (!t->open) count_failure(c);
            else sharp_counter_inc(SHARP_CONN_STATS(c), c->listener->ssl.connection_error);
            sharp_debug(connection, "[C%llu] TLS error: %s", c->id, sharp_tls_conn_error(t->engine));
            sharp_conn_close(c);
            return;
        }
        if (st == SHARP_TLS_PEER_CLOSED) {
            if (!t->peer_closed) {
                t->peer_closed = true;
                sharp_conn_remote_closed(c, UV_EOF);
            }
            return;
        }
        if (c->shutdown) return; /* closing: what is left is dropped, as a plaintext read after the close */
        if (off == n) return;
        if (!took) {
            /* The engine holds its limit of ciphertext and cannot make
             * progress with it: a handshake message larger than any
             * legitimate one. */
            sharp_counter_inc(SHARP_CONN_STATS(c), c->listener->ssl.connection_error);
            sharp_debug(connection, "[C%llu] TLS error: handshake larger than %u bytes", c->id,
                        SHARP_TLS_MAX_CIPHERTEXT_IN);
            sharp_conn_close(c);
            return;
        }
    }
}

void sharp_conn_tls_last_write(sharp_conn_t *c)
{
    c->tls->last_write = true;
}

void sharp_conn_tls_flush(sharp_conn_t *c)
{
    if (c->tls->engine) send_ciphertext(c);
}

void sharp_conn_tls_shutdown(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    if (!t->engine) return;
    sharp_tls_conn_close(t->engine);
    send_ciphertext(c);
}

void sharp_conn_tls_close(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    if (!t->engine || !t->open) return;
    sharp_tls_conn_close_now(t->engine, &c->writer, (uv_stream_t *)&c->tcp);
}

void sharp_conn_tls_free(sharp_conn_t *c)
{
    struct sharp_conn_tls *t = c->tls;
    if (!t) return;
    sharp_tls_conn_free(t->engine);
    free(t->info.peer_uri_san);
    free(t->info.peer_subject);
    sharp_tls_strv_free(t->info.peer_uri_sans);
    sharp_tls_strv_free(t->info.peer_dns_sans);
    free(t->info.xfcc);
    free(t);
    c->tls = NULL;
}

const sharp_downstream_tls_info_t *sharp_conn_tls_info(const sharp_conn_t *c)
{
    return c->tls && c->tls->open ? &c->tls->info : NULL;
}
