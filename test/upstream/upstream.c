/* sharp-test-upstream: a small single-process HTTP/1.1 server used as the
 * demo upstream, as a fault injector in integration tests and as a service
 * with a real capacity limit in overload benchmarks.
 *
 * This file holds the process setup and the connection layer: reading,
 * parsing with llhttp, pipelining (one request at a time, the parser is
 * paused while a response is outstanding), output staging and backpressure,
 * and the various ways of closing a connection. Endpoints are in routes.c. */
#include "upstream.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

server_t g;

static char rbuf[64 * 1024];  /* shared read buffer while the parser runs */
static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;
static conn_t *all_conns;
static llhttp_settings_t settings;
static int stopping;

static void after_io(conn_t *c);
static void read_update(conn_t *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void *xrealloc(void *p, size_t n)
{
    void *r = realloc(p, n);
    if (!r) {
        fprintf(stderr, "sharp-test-upstream: out of memory\n");
        abort();
    }
    return r;
}

/* ---- write requests ---------------------------------------------------- */

typedef struct wreq {
    uv_write_t req;
    struct wreq *next_free;
    conn_t *c;
    char *heap;       /* owned buffer, freed on completion */
    char small[24];   /* chunk-size line */
} wreq_t;

static wreq_t *wreq_free_list;
static unsigned wreq_free_count;

static wreq_t *wreq_get(conn_t *c)
{
    wreq_t *w = wreq_free_list;
    if (w) {
        wreq_free_list = w->next_free;
        wreq_free_count--;
    } else {
        w = xrealloc(NULL, sizeof *w);
    }
    w->c = c;
    w->heap = NULL;
    return w;
}

static void wreq_put(wreq_t *w)
{
    free(w->heap);
    w->heap = NULL;
    if (wreq_free_count >= 1024) {
        free(w);
        return;
    }
    w->next_free = wreq_free_list;
    wreq_free_list = w;
    wreq_free_count++;
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    conn_t *c = w->c;
    c->wq--;
    wreq_put(w);
    if (c->closed)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->phase == PH_STREAM && !c->wait_timer)
        route_pump(c);
    after_io(c);
}

static void submit(conn_t *c, wreq_t *w, uv_buf_t *b, unsigned n)
{
    c->wq++;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, b, n, on_write) != 0) {
        c->wq--;
        wreq_put(w);
        conn_close(c);
    }
}

/* ---- output staging ----------------------------------------------------- */

size_t pending_out(conn_t *c)
{
    return c->ob_len + uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

void out_append(conn_t *c, const void *data, size_t len)
{
    if (c->closed || c->shutting)
        return;
    if (c->ob_cap - c->ob_len < len) {
        size_t cap = c->ob_cap ? c->ob_cap : 2048;
        while (cap - c->ob_len < len)
            cap *= 2;
        c->ob = xrealloc(c->ob, cap);
        c->ob_cap = cap;
    }
    memcpy(c->ob + c->ob_len, data, len);
    c->ob_len += len;
}

void out_str(conn_t *c, const char *s)
{
    out_append(c, s, strlen(s));
}

void out_u64(conn_t *c, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_append(c, tmp + i, sizeof tmp - i);
}

/* Hands staged bytes to the socket: uv_try_write when nothing is queued,
 * the rest (or everything, to keep ordering) goes out as one uv_write that
 * takes ownership of the staging buffer. */
static void out_flush(conn_t *c)
{
    if (!c->ob_len || c->closed)
        return;
    if (c->shutting) {
        c->ob_len = 0;
        return;
    }
    size_t off = 0, len = c->ob_len;
    if (c->wq == 0) {
        uv_buf_t b = uv_buf_init(c->ob, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r >= 0 && (size_t)r == len) {
            c->ob_len = 0;
            return;
        }
        if (r < 0 && r != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (r > 0)
            off = (size_t)r;
    }
    wreq_t *w = wreq_get(c);
    w->heap = c->ob;
    c->ob = NULL;
    c->ob_cap = 0;
    c->ob_len = 0;
    uv_buf_t b = uv_buf_init(w->heap + off, (unsigned)(len - off));
    submit(c, w, &b, 1);
}

/* Writes hdr (copied) + data (must stay valid: the static pattern) + tail
 * (static) after any staged output. */
void out_piece(conn_t *c, const char *hdr, size_t hlen, const char *data, size_t dlen,
               const char *tail, size_t tlen)
{
    out_flush(c);
    if (c->closed || c->shutting)
        return;
    wreq_t *w = wreq_get(c);
    uv_buf_t b[3];
    unsigned n = 0, i = 0;
    if (hlen) {
        memcpy(w->small, hdr, hlen);
        b[n++] = uv_buf_init(w->small, (unsigned)hlen);
    }
    b[n++] = uv_buf_init((char *)data, (unsigned)dlen);
    if (tlen)
        b[n++] = uv_buf_init((char *)tail, (unsigned)tlen);
    if (c->wq == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, b, n);
        if (r < 0 && r != UV_EAGAIN) {
            wreq_put(w);
            conn_close(c);
            return;
        }
        if (r > 0) {
            size_t k = (size_t)r;
            while (i < n && k >= b[i].len) {
                k -= b[i].len;
                i++;
            }
            if (i == n) {
                wreq_put(w);
                return;
            }
            b[i].base += k;
            b[i].len -= k;
        }
    }
    submit(c, w, b + i, n - i);
}

/* ---- connection lifecycle ----------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open)
        return;
    free(c->hbuf);
    free(c->hdrs);
    free(c->ob);
    free(c->pend);
    free(c);
}

void conn_close(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    route_on_close(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        all_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    g.active--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->closed)
        return;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    route_timer(c);
    after_io(c);
}

void conn_timer_start(conn_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

void response_done(conn_t *c)
{
    c->phase = PH_IDLE;
    if (!c->keep_alive && c->close_mode == CM_NONE)
        c->close_mode = CM_GRACEFUL;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closed)
        return;
    if (status < 0 || c->peer_eof || stopping) {
        conn_close(c);
        return;
    }
    /* Keep reading (and discarding) for a while so that unread request
     * bytes do not turn our close into a reset that destroys the response
     * before the client has read it. */
    c->lingering = 1;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_timer, UP_LINGER_MS, 0);
    read_update(c);
}

static void start_close(conn_t *c)
{
    if (c->close_mode == CM_RESET) {
        if (c->wq || c->ob_len)
            return;  /* earlier pipelined responses go out first */
        uv_os_fd_t fd;
        struct linger l = {1, 0};
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        conn_close(c);
        return;
    }
    c->shutting = 1;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* ---- input ---------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn_t *c = h->data;
    if (!c->paused || c->lingering) {
        *buf = uv_buf_init(rbuf, sizeof rbuf);
        return;
    }
    if (!c->pend) {
        c->pend = xrealloc(NULL, UP_PEND_MIN);
        c->pend_cap = UP_PEND_MIN;
    }
    *buf = uv_buf_init(c->pend + c->pend_len, (unsigned)(c->pend_cap - c->pend_len));
}

static void save_leftover(conn_t *c, const char *pos, size_t left)
{
    if (c->pend && pos >= c->pend && pos <= c->pend + c->pend_cap) {
        memmove(c->pend, pos, left);
        c->pend_len = left;
        return;
    }
    if (c->pend_cap < left || !c->pend) {
        size_t cap = left > UP_PEND_MIN ? left : UP_PEND_MIN;
        free(c->pend);
        c->pend = xrealloc(NULL, cap);
        c->pend_cap = cap;
    }
    memcpy(c->pend, pos, left);
    c->pend_len = left;
}

static void feed(conn_t *c, const char *data, size_t len)
{
    c->in_execute = 1;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    c->in_execute = 0;
    if (c->closed || c->close_mode != CM_NONE || err == HPE_OK)
        return;
    if (err == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        c->paused = 1;
        save_leftover(c, pos, (size_t)(data + len - pos));
        return;
    }
    if (err == HPE_PAUSED_UPGRADE || err == HPE_PAUSED_H2_UPGRADE) {
        c->keep_alive = 0;
        if (c->phase == PH_IDLE)
            c->close_mode = CM_GRACEFUL;
        return;
    }
    resp_error(c, c->err_status ? c->err_status : 400);
}

static void feed_pend(conn_t *c)
{
    size_t len = c->pend_len;
    c->pend_len = 0;
    feed(c, c->pend, len);
}

static void read_update(conn_t *c)
{
    int want = !c->shutting && c->close_mode == CM_NONE && !c->peer_eof;
    if (want && c->paused) {
        if (pending_out(c) >= UP_HIGH_WM)
            want = 0;  /* response throttled by the client */
        else if (c->pend && c->pend_len >= c->pend_cap)
            want = 0;
    }
    if (c->lingering)
        want = 1;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* Common tail of every event on a connection: flush staged output, resume
 * the parser once the outstanding response is finished, start closing. */
static void after_io(conn_t *c)
{
    for (;;) {
        if (c->closed)
            return;
        out_flush(c);
        if (c->closed)
            return;
        if (c->paused && c->phase == PH_IDLE && c->close_mode == CM_NONE &&
            pending_out(c) < UP_HIGH_WM) {
            c->paused = 0;
            llhttp_resume(&c->parser);
            if (c->pend_len)
                feed_pend(c);
            continue;
        }
        break;
    }
    if (c->close_mode == CM_NONE && c->peer_eof && !c->paused)
        c->close_mode = CM_GRACEFUL;
    if (c->close_mode != CM_NONE && !c->shutting) {
        start_close(c);
        if (c->closed)
            return;
    }
    read_update(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (c->closed)
        return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            uv_read_stop(s);
            c->reading = 0;
            return;
        }
        if (nread != UV_EOF || c->lingering || c->phase == PH_QUEUED) {
            conn_close(c);
            return;
        }
        c->peer_eof = 1;
        uv_read_stop(s);
        c->reading = 0;
        after_io(c);
        return;
    }
    if (nread == 0 || c->lingering || c->close_mode != CM_NONE)
        return;
    if (buf->base == rbuf) {
        feed(c, rbuf, (size_t)nread);
    } else {
        c->pend_len += (size_t)nread;
        if (!c->paused)
            feed_pend(c);
    }
    after_io(c);
}

/* ---- parser callbacks ------------------------------------------------------ */

static int hb_append(conn_t *c, const char *at, size_t len)
{
    if ((size_t)c->hlen + len > UP_HDR_MAX) {
        c->err_status = 431;
        return -1;
    }
    if (c->hcap - c->hlen < len) {
        uint32_t cap = c->hcap ? c->hcap : 1024;
        while (cap - c->hlen < len)
            cap *= 2;
        c->hbuf = xrealloc(c->hbuf, cap);
        c->hcap = cap;
    }
    memcpy(c->hbuf + c->hlen, at, len);
    c->hlen += (uint32_t)len;
    return 0;
}

static int cb_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    c->hlen = c->url_len = c->nhdrs = 0;
    c->hstate = 0;
    c->body_bytes = 0;
    c->body_hash = FNV_OFFSET;
    c->hashing = 0;
    c->phase = PH_BODY;
    c->nreq++;
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (hb_append(c, at, len))
        return -1;
    c->url_len += (uint32_t)len;
    return 0;
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->hstate != 1) {
        if (c->nhdrs == UP_MAX_HEADERS) {
            c->err_status = 431;
            return -1;
        }
        if (c->nhdrs == c->hdrs_cap) {
            c->hdrs_cap = c->hdrs_cap ? c->hdrs_cap * 2 : 32;
            c->hdrs = xrealloc(c->hdrs, c->hdrs_cap * sizeof *c->hdrs);
        }
        hdr_t *h = &c->hdrs[c->nhdrs++];
        h->name_off = h->val_off = c->hlen;
        h->name_len = h->val_len = 0;
        c->hstate = 1;
    }
    if (hb_append(c, at, len))
        return -1;
    c->hdrs[c->nhdrs - 1].name_len += (uint32_t)len;
    return 0;
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (!c->nhdrs)
        return -1;
    hdr_t *h = &c->hdrs[c->nhdrs - 1];
    if (c->hstate != 2) {
        h->val_off = c->hlen;
        c->hstate = 2;
    }
    if (hb_append(c, at, len))
        return -1;
    h->val_len += (uint32_t)len;
    return 0;
}

static int cb_span_complete(llhttp_t *p)
{
    ((conn_t *)p->data)->hstate = 0;
    return 0;
}

/* --exit-on-header: a request carrying the header kills the process at
 * once (exit 3, no response), like a cell crashing on a poison request. */
static void exit_on_poison(const conn_t *c)
{
    size_t n = strlen(g.exit_on_header);
    for (uint32_t i = 0; i < c->nhdrs; i++)
        if (c->hdrs[i].name_len == n && !strncasecmp(c->hbuf + c->hdrs[i].name_off, g.exit_on_header, n)) {
            if (!g.quiet)
                fprintf(stderr, "sharp-test-upstream: %s: request with %s, exiting\n", g.name, g.exit_on_header);
            _exit(3);
        }
}

static int cb_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    if (g.exit_on_header)
        exit_on_poison(c);
    g.requests++;
    c->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    c->is_head = p->method == HTTP_HEAD;
    return route_headers(c);
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    c->body_bytes += len;
    if (c->hashing)
        c->body_hash = fnv1a(c->body_hash, at, len);
    return 0;
}

static int cb_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    route_dispatch(c);
    if (c->closed || c->close_mode != CM_NONE || c->phase != PH_IDLE ||
        pending_out(c) >= UP_HIGH_WM)
        return HPE_PAUSED;
    return 0;
}

/* ---- server -------------------------------------------------------------- */

static void on_connection(uv_stream_t *srv, int status)
{
    if (status < 0 || stopping)
        return;
    if (g.h2) {
        h2_on_connection(srv);
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(g.loop, &c->tcp);
    uv_timer_init(g.loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = all_conns;
    if (all_conns)
        all_conns->prev = c;
    all_conns = c;
    g.active++;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    c->id = ++g.accepted;
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    read_update(c);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (stopping)
        return;
    stopping = 1;
    uv_close((uv_handle_t *)&listener, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    while (all_conns)
        conn_close(all_conns);
    h2_close_all();
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sharp-test-upstream [--address 127.0.0.1] [--port 8080] [--slots N]\n"
            "                           [--service-time-ms T] [--name NAME] [--quiet]\n"
            "                           [--exit-on-header NAME] [--unix PATH]\n"
            "                           [--h2] [--h2-max-streams N]\n");
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* --unix PATH: a Unix domain stream socket instead of TCP; a leading '@'
 * names the abstract namespace (the address is as long as the name). A
 * stale file at PATH is removed first. libuv reads, writes and accepts on
 * it through the TCP handle like any stream fd. */
static int listen_unix(const char *path)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un.sun_path) {
        fprintf(stderr, "sharp-test-upstream: bad unix path '%s'\n", path);
        return -1;
    }
    memcpy(un.sun_path, path, n);
    socklen_t len = sizeof un;
    if (path[0] == '@') {
        un.sun_path[0] = 0;
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&un, len) != 0) {
        fprintf(stderr, "sharp-test-upstream: cannot bind unix:%s: %s\n", path, strerror(errno));
        return -1;
    }
    int r;
    uv_tcp_init(g.loop, &listener);
    if ((r = uv_tcp_open(&listener, fd)) != 0 || (r = uv_listen((uv_stream_t *)&listener, 4096, on_connection)) != 0) {
        fprintf(stderr, "sharp-test-upstream: cannot listen on unix:%s: %s\n", path, uv_strerror(r));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1";
    const char *unix_path = NULL;
    uint64_t port = 8080, h2_max_streams = 0;
    g.name = "upstream";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char key[32];
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a) : strlen(a);
        if (klen >= sizeof key)
            klen = sizeof key - 1;
        memcpy(key, a, klen);
        key[klen] = 0;
        if (!strcmp(key, "--quiet")) {
            g.quiet = 1;
            continue;
        }
        if (!strcmp(key, "--h2")) {
            g.h2 = 1;
            continue;
        }
        if (!strcmp(key, "-h") || !strcmp(key, "--help")) {
            usage(stdout);
            return 0;
        }
        v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        int bad = !v;
        if (bad)
            ;
        else if (!strcmp(key, "--address"))
            address = v;
        else if (!strcmp(key, "--port"))
            bad = parse_u64(v, 65535, &port);
        else if (!strcmp(key, "--slots"))
            bad = parse_u64(v, 1000000000, &g.slots);
        else if (!strcmp(key, "--service-time-ms"))
            bad = parse_u64(v, 86400000, &g.service_ms);
        else if (!strcmp(key, "--name"))
            g.name = v;
        else if (!strcmp(key, "--exit-on-header"))
            g.exit_on_header = v;
        else if (!strcmp(key, "--unix"))
            unix_path = v;
        else if (!strcmp(key, "--h2-max-streams"))
            bad = parse_u64(v, 2147483647, &h2_max_streams);
        else
            bad = 1;
        if (bad) {
            fprintf(stderr, "sharp-test-upstream: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    g.name_len = strlen(g.name);

    signal(SIGPIPE, SIG_IGN);
    g.loop = uv_default_loop();
    routes_init();
    h2_init(h2_max_streams);

    settings.on_message_begin = cb_message_begin;
    settings.on_url = cb_url;
    settings.on_header_field = cb_header_field;
    settings.on_header_value = cb_header_value;
    settings.on_header_field_complete = cb_span_complete;
    settings.on_header_value_complete = cb_span_complete;
    settings.on_headers_complete = cb_headers_complete;
    settings.on_body = cb_body;
    settings.on_message_complete = cb_message_complete;

    struct sockaddr_storage ss;
    int r;
    if (unix_path) {
        if (listen_unix(unix_path) != 0)
            return 1;
        uv_signal_init(g.loop, &sig_term);
        uv_signal_init(g.loop, &sig_int);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        printf("listening on unix:%s\n", unix_path);
        fflush(stdout);
        goto run;
    }
    if (uv_ip4_addr(address, (int)port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(address, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
        fprintf(stderr, "sharp-test-upstream: bad address '%s'\n", address);
        return 2;
    }
    uv_tcp_init(g.loop, &listener);
    if ((r = uv_tcp_bind(&listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&listener, 4096, on_connection)) != 0) {
        fprintf(stderr, "sharp-test-upstream: cannot listen on %s:%llu: %s\n", address,
                (unsigned long long)port, uv_strerror(r));
        return 1;
    }
    int sl = sizeof ss;
    uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &sl);
    int bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);

    uv_signal_init(g.loop, &sig_term);
    uv_signal_init(g.loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    printf("listening on %s:%d\n", address, bound);
    fflush(stdout);
    if (!g.quiet)
        fprintf(stderr, "sharp-test-upstream: name=%s slots=%llu service-time-ms=%llu\n", g.name,
                (unsigned long long)g.slots, (unsigned long long)g.service_ms);

run:
    uv_run(g.loop, UV_RUN_DEFAULT);

    if (!g.quiet)
        fprintf(stderr, "sharp-test-upstream: exiting after %llu requests on %llu connections\n",
                (unsigned long long)g.requests, (unsigned long long)g.accepted);
    uv_loop_close(g.loop);
    routes_free();
    h2_free();
    while (wreq_free_list) {
        wreq_t *w = wreq_free_list;
        wreq_free_list = w->next_free;
        free(w);
    }
    return 0;
}
