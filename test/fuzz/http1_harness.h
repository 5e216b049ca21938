/* http1_harness.h: the in-process serving setup shared by the fuzz targets
 * of the data path (fuzz_http1_request, fuzz_http1_response,
 * fuzz_http2_request, fuzz_http2_response).
 *
 * One process-wide server state is built once from a fixed bootstrap (the
 * real sharp_server_init: config, support table, snapshot, stats, runtime).
 * Each input then gets a fresh worker (sharp_worker_init: its own loop,
 * pools, access log writers and listener) that the harness runs on its own
 * thread, with real sockets on both sides:
 *   - the downstream client is a plain non-blocking Unix socket connected
 *     to the listener (abstract address), so the real accept path
 *     (sharp_conn_accept), read path and codec run;
 *   - each upstream is a plain listening Unix socket (abstract address)
 *     that a cluster's one STATIC endpoint names (up speaks HTTP/1, up2
 *     HTTP/2); the pool really connects to it, and the target decides what
 *     it answers.
 * The harness alternates one non-blocking turn of the worker's loop with
 * one pass over its own sockets (accept, read, answer). "Settled" means
 * several turns in a row moved no byte, the loop has no ready event and no
 * due timer. Every phase is bounded in turns, so each input ends in bounded
 * time; a worker that does not wind down after its stop is reported as a
 * finding (abort), and so is anything left allocated (LeakSanitizer). */
#ifndef SHARP_FUZZ_HTTP1_HARNESS_H
#define SHARP_FUZZ_HTTP1_HARNESS_H

#include "server.h"
#include "worker.h"

#include <llhttp.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_MAX_UPSTREAM 8

typedef struct fz_run fz_run_t;

/* What the fake upstream does with the bytes one of its connections
 * received (the target's part); data is NULL with n 0 on the proxy's EOF. */
typedef void (*fz_upstream_data_cb)(fz_run_t *r, int idx, const char *data, size_t n);
/* Called once per accepted upstream connection. */
typedef void (*fz_upstream_accept_cb)(fz_run_t *r, int idx);

#define FZ_CLUSTERS 2 /* up (HTTP/1) and up2 (HTTP/2), in the bootstrap's order */

typedef struct fz_upstream {
    int fd;            /* -1 once closed */
    int cluster;       /* the index of the cluster whose endpoint accepted it */
    bool eof;          /* the proxy closed its side */
    bool close_after;  /* close once `out` has been sent */
    char *out;         /* bytes queued for the proxy (sent as the socket takes them) */
    size_t out_len;
} fz_upstream_t;

struct fz_run {
    sharp_worker_t w;
    int up_listen_fd[FZ_CLUSTERS];
    int client_fd;             /* -1 once closed */
    bool client_eof;           /* the proxy closed the downstream connection */
    size_t client_received;
    fz_upstream_t up[FZ_MAX_UPSTREAM];
    int nup;
    size_t upstream_received;
    fz_upstream_data_cb on_upstream_data;
    fz_upstream_accept_cb on_upstream_accept;
    /* bytes the downstream client received, for the target to check */
    void (*on_client_data)(fz_run_t *r, const char *data, size_t n);
    void *target; /* the target's per-input state */
};

/* Builds the process-wide server state from the fixed bootstrap (once). */
void fz_env_init(void);
/* Starts a worker and the fake upstream, connects the client. */
void fz_start(fz_run_t *r);
/* Runs loop turns until settled (bounded). */
void fz_settle(fz_run_t *r);
/* Sends bytes as the downstream client: all of them, turning the loop
 * while the socket is full (bounded; what cannot be sent is dropped). */
void fz_client_send(fz_run_t *r, const char *p, size_t n);
/* Half-closes the client's sending side (a FIN to the proxy). */
void fz_client_shutdown(fz_run_t *r);
/* Queues bytes on upstream connection idx as the fake upstream; they go
 * out as the socket takes them, on this call and the following turns (so
 * it may be called from the target's callbacks). */
void fz_upstream_send(fz_run_t *r, int idx, const char *p, size_t n);
/* Closes upstream connection idx (the proxy sees EOF) once what is queued
 * has been sent. */
void fz_upstream_close(fz_run_t *r, int idx);
/* The upstream targets' answer: the n bytes at p, split by `seed`
 * (fz_split), each chunk sent on every upstream connection of `cluster`
 * (-1: of any) open at that moment, the loop settling after each; then,
 * with `close`, every upstream connection closes (and the loop settles). */
void fz_upstream_answer(fz_run_t *r, int cluster, const char *p, size_t n, uint8_t seed, bool close);
/* Closes both ends, stops the worker, runs its loop to the end and frees
 * everything the run made. */
void fz_finish(fz_run_t *r);

/* The response oracle of the upstream targets (fuzz_http1_response,
 * fuzz_http2_response): what the downstream HTTP/1.1 client receives must
 * parse as strict HTTP/1.1 responses (llhttp; a truncated last one is fine,
 * the proxy resets a response it cannot finish), up to a 101 (what follows
 * is the tunnel's), and hold no more final responses than the client sent
 * requests (requests_sent, kept by the target). */
typedef struct fz_responses {
    llhttp_t parser;
    llhttp_settings_t settings;
    const char *target_name; /* in the finding's message */
    bool first_is_head;      /* the first request is a HEAD: its response has no body */
    unsigned requests_sent;
    unsigned final_responses;
    bool informational; /* the response being parsed is a 1xx */
    bool done;          /* upgraded, or the stream stopped being HTTP */
} fz_responses_t;
/* Resets rr and makes it r's target and client-data check. */
void fz_responses_init(fz_run_t *r, fz_responses_t *rr, const char *target_name, bool first_is_head);

/* Splits n bytes into up to 8 chunks whose cut points follow from `seed`
 * (seed & 7 cuts, positions from a generator seeded by seed and n): fills
 * ends[] with each chunk's end offset, returns the number of chunks. The
 * same seed and length always give the same chunks. */
int fz_split(uint8_t seed, size_t n, size_t ends[9]);
/* An oracle failed: prints the offending bytes (escaped, at most 4 KiB) and
 * aborts, which libFuzzer reports as a finding. */
void fz_abort_with_chunk(const char *data, size_t n) __attribute__((noreturn));

#endif
