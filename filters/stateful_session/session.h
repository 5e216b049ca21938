/* session.h: the session states of envoy.filters.http.stateful_session,
 * their value codecs and the cookie's path rule (pure functions). */
#ifndef SHARP_FILTERS_STATEFUL_SESSION_SESSION_H
#define SHARP_FILTERS_STATEFUL_SESSION_SESSION_H

#include "common.h"
#include "net.h"
#include "sbuf.h"

#include <stdbool.h>
#include <stdint.h>

/* The longest address a session value may carry ("ip:port"); a longer one
 * names no host and is ignored. */
#define SHARP_SESSION_ADDR_MAX (SHARP_ADDR_STRLEN - 1)

/* The cookie state's value: base64 of an envoy.Cookie message {address = 1
 * (string), expires = 2 (uint64 seconds of the monotonic clock)},
 * expires omitted when 0 (no ttl). Appended to out. */
void sharp_session_cookie_encode(sharp_sbuf_t *out, const char *addr, size_t alen,
                                 uint64_t expires);

/* Reads a cookie value as Envoy's CookieBasedSessionStateFactory does:
 * base64 (padded, as Envoy's Base64::decode wants it); bytes that parse as
 * an envoy.Cookie give its address, ignored when its expires is set and
 * before now_s; bytes that do not parse are taken as the address itself
 * (the older, plain format). Returns true with the address in addr (NUL
 * terminated) or false: not base64, no or an empty address, expired, too
 * long. */
bool sharp_session_cookie_decode(const char *v, size_t n, uint64_t now_s,
                                 char addr[SHARP_SESSION_ADDR_MAX + 1]);

/* The header state's value: base64 of the address, no message. */
void sharp_session_header_encode(sharp_sbuf_t *out, const char *addr, size_t alen);
bool sharp_session_header_decode(const char *v, size_t n, char addr[SHARP_SESSION_ADDR_MAX + 1]);

/* Envoy's cookie path rule: no path matches everything; a path ending in
 * '/' matches by prefix; otherwise the request path must equal it or go on
 * with '/', '?' or '#'. */
bool sharp_session_path_match(const char *cookie_path, size_t plen, const char *path, size_t n);

/* Envoy's makeSetCookieValue(name, value, path, max_age, httponly=true):
 * name="value"[; Max-Age=N][; Path=p]; HttpOnly. Appended to out. */
void sharp_session_set_cookie(sharp_sbuf_t *out, const char *name, const char *value, size_t vlen,
                              uint64_t max_age_s, const char *path);

#endif
