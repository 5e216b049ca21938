/* sharp-test-upstream: shared definitions between the connection/IO layer
 * (upstream.c) and the endpoint handlers (routes.c). */
#ifndef SHARP_TEST_UPSTREAM_H
#define SHARP_TEST_UPSTREAM_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define UP_HDR_MAX (64 * 1024)      /* request line target + header bytes */
#define UP_MAX_HEADERS 1024         /* header lines per request */
#define UP_PEND_MIN (16 * 1024)     /* buffered input while a response is pending */
#define UP_HIGH_WM (256 * 1024)     /* output bytes queued before we throttle */
#define UP_PIECE (64 * 1024)        /* /bytes write size */
#define UP_SLOW_PIECE (16 * 1024)   /* /bytes chunk size (chunked or delayed) */
#define UP_BYTES_MAX 1000000000000ULL
#define UP_LINGER_MS 2000

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

typedef enum {
    PH_IDLE,      /* no request or response in progress */
    PH_BODY,      /* request headers seen, reading the body */
    PH_DELAY,     /* ?delay_ms timer running */
    PH_QUEUED,    /* /work waiting for a slot */
    PH_SERVICE,   /* /work holding a slot */
    PH_SLOWHDR,   /* /slow-headers between status line and the rest */
    PH_STREAM,    /* /bytes body being produced */
    PH_CHECKSUM,  /* /bytes?checksum=1 being computed in slices */
} phase_t;

typedef enum {
    R_HELLO, R_ECHO, R_STATUS, R_BYTES, R_UPLOAD, R_RESET, R_CLOSE, R_CLOSE_MID,
    R_GARBAGE, R_SLOW_HEADERS, R_WORK, R_ADMIN_SERVICE_TIME, R_ADMIN_STATS, R_ADMIN_FAULT, R_BAD,
} route_t;

typedef enum { CM_NONE, CM_GRACEFUL, CM_RESET } close_mode_t;

typedef struct {
    uint32_t name_off, name_len, val_off, val_len;
} hdr_t;

/* ?hdr=name:value response headers (percent-decoded), kept per request */
#define UP_XHDR_MAX 16
#define UP_XHDR_BYTES 4096
typedef struct {
    char buf[UP_XHDR_BYTES];
    size_t used;
    unsigned n;
    struct {
        const char *name, *value;
        size_t name_len, value_len;
    } h[UP_XHDR_MAX];
} xhdrs_t;

typedef struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    llhttp_t parser;
    struct conn *prev, *next;    /* all live connections */
    struct conn *wprev, *wnext;  /* /work FIFO */
    uint64_t id;                 /* accept sequence number */
    uint64_t nreq;               /* requests seen on this connection */
    int handles_open;

    unsigned closed : 1, reading : 1, paused : 1, peer_eof : 1, shutting : 1,
        lingering : 1, in_execute : 1, keep_alive : 1, is_head : 1, delayed : 1,
        chunked : 1, want_checksum : 1, hashing : 1, has_ms : 1, wait_timer : 1,
        delay_passed : 1, stream_chunked : 1;
    unsigned hstate;             /* 0 none, 1 in header name, 2 in value */
    close_mode_t close_mode;
    phase_t phase;
    route_t route;
    int err_status;

    /* current request */
    char *hbuf;
    uint32_t hlen, hcap, url_len;
    hdr_t *hdrs;
    uint32_t nhdrs, hdrs_cap;
    uint64_t body_bytes, body_hash;
    uint64_t delay_ms, chunk_delay_ms, ms, n;
    int status_code;
    uint64_t q_status, q_reset, q_hang, q_slots; /* /admin/fault, /admin/service-time query */
    unsigned has_slots : 1;
    xhdrs_t xh; /* ?hdr= */

    /* /bytes streaming and checksum */
    uint64_t pos, remaining, sum;
    size_t piece;

    /* staged output not yet handed to the socket */
    char *ob;
    size_t ob_len, ob_cap;
    unsigned wq;                 /* outstanding uv_write requests */

    /* input received while the parser is paused */
    char *pend;
    size_t pend_len, pend_cap;
} conn_t;

typedef struct {
    uv_loop_t *loop;
    const char *name;
    size_t name_len;
    int quiet;
    const char *exit_on_header; /* --exit-on-header: lower-case name, NULL when unset */
    int h2;                     /* --h2: every connection speaks HTTP/2 (prior knowledge) */
    uint64_t slots, service_ms;
    /* /admin/fault: applied to every non-admin request while set */
    uint64_t fault_status, fault_reset, fault_hang;
    uint64_t requests, accepted, active, in_service, queued;
    uint64_t work_peak; /* most /work requests present at once (in service + queued) */
    conn_t *wq_head, *wq_tail;
    char *hello;
    size_t hello_len;
} server_t;

extern server_t g;
extern unsigned char up_pattern[256 + UP_PIECE];

/* upstream.c */
void out_append(conn_t *c, const void *data, size_t len);
void out_str(conn_t *c, const char *s);
void out_u64(conn_t *c, uint64_t v);
void out_piece(conn_t *c, const char *hdr, size_t hlen, const char *data, size_t dlen,
               const char *tail, size_t tlen);
size_t pending_out(conn_t *c);
void conn_close(conn_t *c);
void conn_timer_start(conn_t *c, uint64_t ms);
void response_done(conn_t *c);

/* h2.c: --h2, HTTP/2 with prior knowledge */
void h2_init(uint64_t max_streams);
void h2_on_connection(uv_stream_t *srv);
void h2_close_all(void);
void h2_free(void);

/* routes.c */
void routes_init(void);
void routes_free(void);
int route_headers(conn_t *c);
void route_dispatch(conn_t *c);
void route_timer(conn_t *c);
void route_pump(conn_t *c);
void route_on_close(conn_t *c);
uint64_t fnv1a(uint64_t h, const void *data, size_t len);
/* Adds the ?hdr=name:value parameters of a query string (n bytes after
 * the '?') to x; malformed or excess ones are ignored. */
void xhdrs_parse(xhdrs_t *x, const char *q, size_t n);
/* Whether x sets the header `name` (case-insensitive). */
int xhdrs_has(const xhdrs_t *x, const char *name);
void resp_error(conn_t *c, int code);

#endif
