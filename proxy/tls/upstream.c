/* upstream.c: see upstream.h. */
#include "tls/upstream.h"

#include "log.h"
#include "tls/conn.h"
#include "tls/internal.h"
#include "upstream/codec.h"
#include "upstream/original_dst.h"

#include <stdio.h>
#include <string.h>

struct sharp_upstream_tls {
    sharp_tls_conn_t *engine;
    bool open;        /* the handshake completed: counted, connected for the codec */
    bool peer_closed; /* the server's close_notify was handed on */
};

static sharp_cluster_t *cluster_of(sharp_upstream_conn_t *c)
{
    return c->pool->cluster;
}

static int send_ciphertext(sharp_upstream_conn_t *c)
{
    return sharp_tls_conn_send(c->tls->engine, &c->writer);
}

/* The writer's transport: every write of the codec is encrypted here. */
static int tls_write(sharp_writer_t *w, const uv_buf_t *bufs, unsigned nbufs)
{
    sharp_upstream_conn_t *c = sharp_container_of(w, sharp_upstream_conn_t, writer);
    size_t left;
    int rc = sharp_tls_conn_encrypt(c->tls->engine, w, bufs, nbufs, false, &left);
    if (rc == UV_ENOTCONN)
        sharp_debug(connection, "[C%llu] TLS: %zu bytes not written (connection not open)", c->id, left);
    return rc;
}

/* Envoy's ContextImpl::logHandshake in the cluster's scope: handshake,
 * session_reused, no_certificate, ciphers.<name>, versions.<v>,
 * curves.<name>, sigalgs.<name> (the named ones registered on first use). */
static void count_handshake(sharp_upstream_conn_t *c)
{
    sharp_cluster_t *cl = cluster_of(c);
    sharp_tls_conn_t *e = c->tls->engine;
    sharp_stats_shard_t *sh = sharp_upstream_conn_shard(c);
    sharp_counter_inc(sh, cl->st.ssl.handshake);
    if (sharp_tls_conn_session_reused(e)) sharp_counter_inc(sh, cl->st.ssl.session_reused);
    if (!sharp_tls_conn_peer_has_cert(e)) sharp_counter_inc(sh, cl->st.ssl.no_certificate);
    const char *cipher = sharp_tls_conn_cipher(e), *version = sharp_tls_conn_version(e), *curve = sharp_tls_conn_curve(e);
    if (cipher) sharp_counter_inc(sh, sharp_stats_counterf(cl->stats, "cluster.%s.ssl.ciphers.%s", cl->stat_name, cipher));
    if (version) sharp_counter_inc(sh, sharp_stats_counterf(cl->stats, "cluster.%s.ssl.versions.%s", cl->stat_name, version));
    if (curve) sharp_counter_inc(sh, sharp_stats_counterf(cl->stats, "cluster.%s.ssl.curves.%s", cl->stat_name, curve));
    /* the server's signature: its certificate's key and the hash it chose */
    const char *sigalg = sharp_tls_conn_peer_sigalg(e);
    if (sigalg) sharp_counter_inc(sh, sharp_stats_counterf(cl->stats, "cluster.%s.ssl.sigalgs.%s", cl->stat_name, sigalg));
}

/* Envoy's SslSocket::drainErrorQueue: a failed verification counts its
 * own fail_verify_*, anything else connection_error. */
static void count_failure(sharp_upstream_conn_t *c)
{
    sharp_cluster_t *cl = cluster_of(c);
    sharp_stat_id_t id;
    switch (sharp_tls_conn_failure(c->tls->engine)) {
    case SHARP_TLS_FAIL_VERIFY_ERROR: id = cl->st.ssl.fail_verify_error; break;
    case SHARP_TLS_FAIL_VERIFY_SAN: id = cl->st.ssl.fail_verify_san; break;
    case SHARP_TLS_FAIL_VERIFY_CERT_HASH: id = cl->st.ssl.fail_verify_cert_hash; break;
    case SHARP_TLS_FAIL_VERIFY_NO_CERT: id = cl->st.ssl.fail_verify_no_cert; break;
    default: id = cl->st.ssl.connection_error; break;
    }
    sharp_counter_inc(sharp_upstream_conn_shard(c), id);
}

/* A handshake that did not complete: a connect failure, with Envoy's
 * transport failure reason, the engine's when it failed with OpenSSL
 * errors, else `why` in the same frame (a socket that ended, a write that
 * failed). */
static void handshake_failed(sharp_upstream_conn_t *c, const char *why)
{
    const char *reason = c->tls->engine ? sharp_tls_conn_failure_reason(c->tls->engine) : NULL;
    if (reason) {
        sharp_upstream_conn_connect_failed(c, reason);
        return;
    }
    char detail[320];
    snprintf(detail, sizeof detail, "TLS_error:|%s:TLS_error_end", why);
    sharp_upstream_conn_connect_failed(c, detail);
}

/* auto_config: the codec ALPN picked (Envoy's mixed pool: h2, else
 * HTTP/1.1, also when the server chose none). The pool takes it for its
 * estimates of the next connections, as Envoy's remembers the protocol. */
static void select_codec(sharp_upstream_conn_t *c, const char *alpn)
{
    sharp_pool_t *p = c->pool;
    bool h2 = alpn && !strcmp(alpn, "h2");
    c->codec = p->codec = h2 ? &sharp_http2_client_codec : &sharp_http1_client_codec;
    sharp_counter_inc(sharp_upstream_conn_shard(c), h2 ? cluster_of(c)->st.cx_http2_total : cluster_of(c)->st.cx_http1_total);
}

static void handshake_done(sharp_upstream_conn_t *c)
{
    struct sharp_upstream_tls *t = c->tls;
    t->open = true;
    sharp_tls_conn_t *e = t->engine;
    count_handshake(c);
    const char *v = sharp_tls_conn_version(e), *ci = sharp_tls_conn_cipher(e), *alpn = sharp_tls_conn_alpn(e),
               *sni = sharp_tls_conn_sni(e);
    sharp_debug(connection, "[C%llu] TLS handshake done: %s %s, ALPN %s, SNI %s%s", c->id, v ? v : "-",
                ci ? ci : "-", alpn ? alpn : "-", sni ? sni : "-", sharp_tls_conn_session_reused(e) ? ", resumed" : "");
    if (cluster_of(c)->auto_http && c->codec != &sharp_tcp_client_codec) select_codec(c, alpn); /* a TCP proxy speaks no HTTP */
    sharp_upstream_conn_established(c);
}

/* Plaintext from the engine: to the codec, as a plaintext read would go. */
static bool on_plaintext(void *ud, const uint8_t *p, size_t n)
{
    sharp_upstream_conn_t *c = ud;
    if (c->state == CX_CLOSING) return false;
    if (!c->tls->open) handshake_done(c);
    if (c->state == CX_CLOSING) return false;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    c->codec->on_read(c, (ssize_t)n, &b);
    return c->state != CX_CLOSING;
}

/* The end of the connection for the codec. */
static void conn_ended(sharp_upstream_conn_t *c, int status)
{
    uv_buf_t b = uv_buf_init(NULL, 0);
    c->codec->on_read(c, status, &b);
}

void sharp_upstream_tls_start(sharp_upstream_conn_t *c)
{
    sharp_cluster_t *cl = cluster_of(c);
    sharp_tls_ctx_t *ctx = sharp_tls_slot_get(cl->tls); /* the current one: secrets may rotate */
    if (!ctx) {
        c->tls = sharp_calloc(1, sizeof *c->tls);
        sharp_counter_inc(sharp_upstream_conn_shard(c), cl->st.ssl.connection_error);
        handshake_failed(c, "the TLS context's SDS secret has not come yet");
        return;
    }
    const sharp_tls_config_t *cfg = sharp_tls_ctx_config(ctx);
    /* auto_host_sni: the host's hostname when it has one, else `sni` */
    /* a dynamic forward proxy's hosts: Envoy's auto_sni and
     * auto_san_validation, from the name the host was resolved from */
    bool dfp = cl->odst && cl->odst->dfp;
    const char *sni = (cfg->auto_host_sni || dfp) && c->pool->host->hostname[0] ? c->pool->host->hostname : NULL;
    struct sharp_upstream_tls *t = sharp_calloc(1, sizeof *t);
    c->tls = t;
    t->engine = sharp_tls_conn_new(ctx, sni, on_plaintext, c);
    if (!t->engine) {
        sharp_counter_inc(sharp_upstream_conn_shard(c), cl->st.ssl.connection_error);
        handshake_failed(c, "cannot create a TLS connection");
        return;
    }
    if (dfp) sharp_tls_conn_set_auto_san(t->engine);
    /* Envoy's ALPN fallback (Http::wrapTransportSocketOptions): without
     * alpn_protocols the pool's protocols are offered, both in
     * auto_config's order. */
    if (!cfg->alpn) {
        static const uint8_t h2[] = "\x02h2", h1[] = "\x08http/1.1", both[] = "\x02h2\x08http/1.1";
        if (cl->auto_http) SSL_set_alpn_protos(t->engine->ssl, both, sizeof both - 1);
        else if (c->codec == &sharp_http2_client_codec) SSL_set_alpn_protos(t->engine->ssl, h2, sizeof h2 - 1);
        else SSL_set_alpn_protos(t->engine->ssl, h1, sizeof h1 - 1);
    }
    c->writer.transport = tls_write;
    sharp_debug(connection, "[C%llu] TLS handshake with %s (SNI %s)", c->id, c->pool->host->address,
                sharp_tls_conn_sni(t->engine) ? sharp_tls_conn_sni(t->engine) : "-");
    sharp_tls_state_t st = sharp_tls_conn_process(t->engine); /* the ClientHello */
    if (send_ciphertext(c) < 0 || st == SHARP_TLS_FAILED) {
        if (st == SHARP_TLS_FAILED) count_failure(c);
        handshake_failed(c, st == SHARP_TLS_FAILED ? sharp_tls_conn_error(t->engine) : "write failed");
        return;
    }
    sharp_upstream_conn_read_start(c);
}

void sharp_upstream_tls_read(sharp_upstream_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    struct sharp_upstream_tls *t = c->tls;
    if (nread < 0) {
        /* the socket ended: before the handshake completed it is a connect
         * failure (no ssl.* counter, as Envoy's syscall errors) */
        if (!t->open) handshake_failed(c, nread == UV_EOF ? "connection closed by peer" : uv_err_name((int)nread));
        else conn_ended(c, (int)nread);
        return;
    }
    const char *p = buf->base;
    size_t n = (size_t)nread, off = 0;
    for (;;) {
        size_t took = sharp_tls_conn_feed(t->engine, p + off, n - off);
        off += took;
        sharp_tls_state_t st = sharp_tls_conn_process(t->engine);
        if (c->state == CX_CLOSING) return;
        if (st != SHARP_TLS_HANDSHAKING && st != SHARP_TLS_FAILED && !t->open) handshake_done(c);
        if (c->state == CX_CLOSING) return;
        /* the handshake's messages and alerts; records the codec wrote
         * were sent as they were written */
        if (send_ciphertext(c) < 0) {
            if (!t->open) handshake_failed(c, "write failed");
            return; /* else the writer's error reaches the codec */
        }
        if (st == SHARP_TLS_FAILED) {
            if (!t->open) {
                count_failure(c);
                handshake_failed(c, sharp_tls_conn_error(t->engine));
                return;
            }
            sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(c)->st.ssl.connection_error);
            sharp_debug(connection, "[C%llu] TLS error: %s", c->id, sharp_tls_conn_error(t->engine));
            conn_ended(c, UV_EPROTO);
            return;
        }
        if (st == SHARP_TLS_PEER_CLOSED) {
            if (!t->peer_closed) {
                t->peer_closed = true;
                conn_ended(c, UV_EOF);
            }
            return;
        }
        if (off == n) return;
        if (!took) {
            /* The engine holds its limit of ciphertext and cannot make
             * progress with it: a handshake message larger than any
             * legitimate one. */
            sharp_counter_inc(sharp_upstream_conn_shard(c), cluster_of(c)->st.ssl.connection_error);
            if (!t->open) handshake_failed(c, "handshake message too large");
            else conn_ended(c, UV_EPROTO);
            return;
        }
    }
}

void sharp_upstream_tls_close(sharp_upstream_conn_t *c)
{
    struct sharp_upstream_tls *t = c->tls;
    if (!t->engine || !t->open) return;
    sharp_tls_conn_close_now(t->engine, &c->writer, (uv_stream_t *)&c->tcp);
}

void sharp_upstream_tls_shutdown(sharp_upstream_conn_t *c)
{
    struct sharp_upstream_tls *t = c->tls;
    if (!t->engine || !t->open) return;
    sharp_tls_conn_close(t->engine);
    send_ciphertext(c);
}

struct sharp_tls_conn *sharp_upstream_tls_engine(const sharp_upstream_conn_t *c)
{
    return c->tls && c->tls->open ? c->tls->engine : NULL;
}

void sharp_upstream_tls_free(sharp_upstream_conn_t *c)
{
    struct sharp_upstream_tls *t = c->tls;
    sharp_tls_conn_free(t->engine);
    free(t);
    c->tls = NULL;
    sharp_writer_release(&c->writer);
}
