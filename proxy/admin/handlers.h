/* handlers.h: the admin endpoints, internal to proxy/admin. admin.c owns the
 * sockets and HTTP/1.1 framing; handlers.c turns one parsed request into one
 * complete response. Everything runs on the main thread. */
#ifndef SHARP_ADMIN_HANDLERS_H
#define SHARP_ADMIN_HANDLERS_H

#include "admin/query.h"
#include "sbuf.h"
#include "server.h"

#define SHARP_ADMIN_CT_TEXT "text/plain; charset=UTF-8"
#define SHARP_ADMIN_CT_JSON "application/json"
#define SHARP_ADMIN_CT_PROMETHEUS "text/plain; version=0.0.4; charset=UTF-8"

typedef struct sharp_admin_request {
    sharp_server_t *srv;
    const char *method; /* "GET", "POST", ... as llhttp names it */
    sharp_str_t path;   /* without the query, not decoded */
    sharp_str_t target; /* the path and its query as received (admin.allow_paths) */
    sharp_query_t query;
    sharp_query_t form; /* an application/x-www-form-urlencoded body's values */
} sharp_admin_request_t;

typedef struct sharp_admin_response {
    unsigned status;          /* 200 unless the handler says otherwise */
    const char *content_type; /* static string */
    sharp_sbuf_t body;
    bool quit_after; /* shut the server down once the response is written */
} sharp_admin_response_t;

/* Routes `rq` to its endpoint and fills `rsp` (status, content type, body).
 * `rsp` must arrive zeroed; the caller frees rsp->body. Never fails: a
 * target no admin.allow_paths matcher matches (when there are any) gives
 * 403, unknown paths 404 with the help text, mutating endpoints asked with
 * another method than POST 405. */
void sharp__admin_handle(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp);

/* Whether admin.allow_paths lets `target` (a path with its query, or a
 * gRPC call's :path) be served: true without allow_paths. */
bool sharp__admin_allowed(const sharp_server_t *srv, sharp_str_t target);

/* /config_dump (config_dump.c). */
void sharp__admin_config_dump(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp);

/* HTTP reason phrase for the status codes the admin server sends. */
const char *sharp__admin_reason(unsigned status);

#endif
