/* check.h: the parts of the ext_authz filter that decide without I/O:
 * which headers the authorization request carries, and what an
 * authorization service's answer means for the request (Envoy's
 * CheckRequestUtils and RawHttpClientImpl for an http_service). */
#ifndef SHARP_FILTERS_EXT_AUTHZ_CHECK_H
#define SHARP_FILTERS_EXT_AUTHZ_CHECK_H

#include "common.h"
#include "http/headers.h"
#include "http/metadata.h"
#include "http/route.h"
#include "sbuf.h"

/* A ListStringMatcher: a name matches when any pattern does. */
typedef struct {
    sharp_string_matcher_t *m;
    uint32_t n;
    bool set; /* the list was configured */
} sharp_ext_authz_matchers_t;

bool sharp_ext_authz_matchers_match(const sharp_ext_authz_matchers_t *l, sharp_str_t name);
void sharp_ext_authz_matchers_free(sharp_ext_authz_matchers_t *l);

/* What an http_service check needs. */
typedef struct {
    char *path_prefix;
    /* ExtAuthz.allowed_headers, or the deprecated
     * authorization_request.allowed_headers; Authorization, :method, :path
     * and :authority are always allowed */
    sharp_ext_authz_matchers_t allowed_headers;
    sharp_ext_authz_matchers_t disallowed_headers;
    sharp_header_ops_t headers_to_add; /* authorization_request.headers_to_add: overwrite or add */
    sharp_ext_authz_matchers_t upstream, upstream_append, client, client_on_success;
} sharp_ext_authz_http_t;

/* The authorization request's head for an http_service: content-length
 * (the body's length, 0 without one) first, then each request header that
 * is allowed and not disallowed, values of a repeated name joined with ","
 * and made valid UTF-8 as in the CheckRequest, :path with path_prefix
 * before it (the client's own x-envoy-auth-partial-body never); then
 * x-envoy-auth-partial-body when a body was held (`partial` 1: cut at
 * max_request_bytes, 0: whole, -1: no body held); then headers_to_add. */
void sharp_ext_authz_http_request(const sharp_ext_authz_http_t *cfg, const sharp_headers_t *req,
                                  size_t body_len, int partial, sharp_headers_t *out,
                                  const struct sharp_stream_info *si);
/* Envoy's sanitizeUtf8String: appends p[0, n) with every byte that breaks
 * a well-formed UTF-8 sequence replaced by '!' (header values in the
 * CheckRequest, and so in an http_service's request). */
void sharp_ext_authz_utf8_sanitize(sharp_sbuf_t *out, const char *p, size_t n);

typedef enum {
    SHARP_EXT_AUTHZ_OK,
    SHARP_EXT_AUTHZ_DENIED,
    SHARP_EXT_AUTHZ_ERROR,
} sharp_ext_authz_status_t;

/* What the filter does with an answer (Envoy's ExtAuthz::Response). Header
 * lists are name/value pairs in `hdrs` (name at 2i, value at 2i+1). */
typedef struct {
    sharp_ext_authz_status_t status;
    uint32_t http_status;         /* DENIED: the status for the client */
    sharp_headers_t set;          /* OK: set on the request; DENIED: on the local reply */
    sharp_headers_t add;          /* OK: added to the request (another entry) */
    sharp_headers_t append;       /* OK: appended to an existing request header's value with "," */
    sharp_headers_t remove;       /* OK: names removed from the request */
    sharp_headers_t response_add; /* OK: added to the client's response */
    sharp_headers_t response_set; /* OK: set on the client's response */
    sharp_headers_t response_add_if_absent;       /* OK: added to the response when absent */
    sharp_headers_t response_overwrite_if_exists; /* OK: set on the response when present */
    sharp_sbuf_t body;                            /* DENIED: the local reply's body */
    /* gRPC: the CheckResponse's dynamic_metadata (ok_response's deprecated
     * one instead when set), a STRUCT; UNSET when none */
    sharp_md_value_t metadata;
} sharp_ext_authz_response_t;

void sharp_ext_authz_response_init(sharp_ext_authz_response_t *r);
void sharp_ext_authz_response_free(sharp_ext_authz_response_t *r);

/* An http_service's answer: a 5xx is an error; 200 is OK with the allowed
 * upstream headers (set), upstream headers to append (added as another
 * entry), client headers on success, and the names listed in
 * x-envoy-auth-headers-to-remove; any other status denies with its body
 * and the allowed client headers (all but :authority when
 * allowed_client_headers is unset; else those and :status,
 * content-length, www-authenticate, location). */
void sharp_ext_authz_http_response(const sharp_ext_authz_http_t *cfg, const sharp_headers_t *resp,
                                   const char *body, size_t blen, sharp_ext_authz_response_t *out);

/* ---- gRPC (envoy.service.auth.v3.Authorization/Check) ---- */

/* What goes into a CheckRequest (Envoy's CheckRequestUtils::createHttpCheck). */
typedef struct {
    const sharp_headers_t *headers; /* the client's request headers */
    unsigned long long stream_id;
    const char *protocol;    /* "HTTP/1.1", "HTTP/2" */
    const char *source;      /* the downstream peer, "ip:port" */
    const char *destination; /* the local address, "ip:port" */
    const char *service;     /* x-envoy-downstream-service-cluster, or "" */
    uint64_t time_us;        /* the request's start, wall clock */
    uint64_t size;           /* request body bytes received so far */
    const char *body;        /* held body (with_request_body), or NULL */
    size_t body_len;
    bool partial;                          /* the body was cut at max_request_bytes */
    bool pack_as_bytes;                    /* raw_body instead of body */
    const char *const *context_extensions; /* key, value, ..., NULL */
    /* ExtAuthz.allowed_headers (unset: every header) and
     * disallowed_headers; either may be NULL */
    const sharp_ext_authz_matchers_t *allowed, *disallowed;
} sharp_ext_authz_grpc_in_t;

/* Appends the gRPC-framed CheckRequest. Headers go into the attribute
 * context's map as in Envoy: every request header (pseudo-headers
 * included; only the allowed ones when allowed_headers is set, never a
 * disallowed one) under its name, values of a repeated name joined with
 * ",", and x-envoy-auth-partial-body with a held body. */
void sharp_ext_authz_grpc_request(const sharp_ext_authz_grpc_in_t *in, sharp_sbuf_t *out);

/* A CheckResponse message (unframed): status code 0 is OK with
 * ok_response's mutations (a header whose append is true appended to an
 * existing one, else set; response_headers_to_add by append or
 * append_action; headers_to_remove), anything else a denial (403 unless
 * denied_response.status says otherwise, with its headers and body).
 * false when the message does not parse (an error). */
bool sharp_ext_authz_grpc_response(const uint8_t *msg, size_t n, sharp_ext_authz_response_t *out);

/* Applies an OK answer to the request headers, as Envoy's filter does:
 * set, add, append, then remove (never a pseudo-header or host). */
void sharp_ext_authz_apply_request(const sharp_ext_authz_response_t *r, sharp_headers_t *h);

#endif
