/* listener_inspect.h: what Envoy's TLS and HTTP inspector listener filters
 * learn from a connection's first bytes, before its filter chain is chosen
 * (listener_match.h): whether it starts with a TLS ClientHello, and then
 * the server name and ALPN protocols it asks for; or whether it is
 * plaintext HTTP/1.x or HTTP/2 with prior knowledge. Pure functions over
 * the bytes read so far, which the connection keeps and replays to the
 * chain's transport (TLS or plaintext) once it is chosen. */
#ifndef SHARP_LISTENER_INSPECT_H
#define SHARP_LISTENER_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Envoy's tls_inspector reads at most 64 KiB: a larger ClientHello is
 * client_hello_too_large and the connection is closed. */
#define SHARP_INSPECT_MAX_BYTES (64 * 1024)
#define SHARP_INSPECT_MAX_ALPN 16

typedef enum {
    SHARP_INSPECT_NEED_MORE = -1, /* a proper beginning: read more */
    SHARP_INSPECT_NOT_FOUND = 0,  /* not TLS (or not HTTP) */
    SHARP_INSPECT_FOUND = 1,
    SHARP_INSPECT_TOO_LARGE = 2,  /* a ClientHello above SHARP_INSPECT_MAX_BYTES */
} sharp_inspect_result_t;

typedef struct sharp_client_hello {
    char server_name[256];                          /* "" without SNI; lower case */
    char alpn[SHARP_INSPECT_MAX_ALPN][256];
    uint32_t nalpn;
} sharp_client_hello_t;

/* The TLS inspector: FOUND fills `out` (a ClientHello, SNI and ALPN if
 * present); NOT_FOUND for anything that is not a TLS handshake record
 * carrying a ClientHello (plaintext, or a malformed hello). */
sharp_inspect_result_t sharp_inspect_tls(const uint8_t *p, size_t n, sharp_client_hello_t *out);

/* The same over a connection's bytes as they arrive: each call passes all
 * the bytes read so far (the same prefix, grown), and the inspector takes
 * only those it has not seen, so a hello that comes one byte at a time
 * costs linear work, not a copy of all of it per read. Its verdict, once
 * not NEED_MORE, is kept (`out` is filled by the call that found it). A
 * zeroed struct is a new inspector; free releases what it holds. */
typedef struct sharp_tls_inspector {
    size_t at;       /* input bytes consumed */
    size_t rec_left; /* payload bytes of the current record still to come */
    uint8_t *hs;     /* the handshake message gathered so far */
    size_t hlen, hcap;
    uint64_t copied; /* bytes copied into hs in all (what the unit test bounds) */
    bool decided;    /* verdict holds the answer */
    sharp_inspect_result_t verdict;
} sharp_tls_inspector_t;
sharp_inspect_result_t sharp_tls_inspector_feed(sharp_tls_inspector_t *ti, const uint8_t *p, size_t n,
                                                sharp_client_hello_t *out);
void sharp_tls_inspector_free(sharp_tls_inspector_t *ti);

/* The HTTP inspector: FOUND sets *protocol to "h2c" (the HTTP/2 connection
 * preface), "http/1.1" or "http/1.0" (a request line); NOT_FOUND for
 * anything else. */
sharp_inspect_result_t sharp_inspect_http(const uint8_t *p, size_t n, const char **protocol);

#endif
