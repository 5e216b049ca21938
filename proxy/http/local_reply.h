/* local_reply.h: the connection manager's local_reply_config (Envoy's
 * "local reply modification"), applied to every response the proxy
 * generates itself.
 *
 * As Envoy's LocalReplyImpl::rewrite: the reply's status is first recorded
 * (response headers and stream info, so a status_code_filter sees it), then
 * the mappers are tried in order and the first whose filter matches applies
 * all its rewrites: the body (replaced when set), headers_to_add, the status
 * code, and its body_format_override. The body is then formatted with that
 * override, else the config's body_format, else left as it is; %LOCAL_REPLY_
 * BODY% in a format is the body at that point. The content type is the
 * format's content_type, else application/json for a json_format, else
 * text/plain. */
#ifndef SHARP_HTTP_LOCAL_REPLY_H
#define SHARP_HTTP_LOCAL_REPLY_H

#include "common.h"
#include "sbuf.h"
#include "http/access_log.h"
#include "http/access_log_filter.h"
#include "http/route.h"

typedef struct {
    sharp_access_log_format_t *fmt;
    char *content_type;
} sharp_local_reply_format_t;

typedef struct {
    sharp_alf_t *filter;
    uint32_t status; /* 0: keep the code */
    bool has_body;
    char *body;
    size_t body_len;
    sharp_local_reply_format_t *format; /* body_format_override, NULL if none */
    sharp_header_ops_t headers;         /* headers_to_add */
} sharp_local_reply_mapper_t;

typedef struct sharp_local_reply {
    sharp_local_reply_mapper_t *mappers;
    uint32_t nmappers;
    sharp_local_reply_format_t *format; /* body_format, NULL: the body unchanged as text/plain */
} sharp_local_reply_t;

/* Rewrites a local reply about to be sent. `lr` may be NULL (Envoy's default
 * LocalReply: only the status is recorded). `resp` holds the reply's headers
 * (":status" is set here), *code the status, `body` the body; *content_type
 * receives the content type the body calls for (a static or config-owned
 * string). si->response_code follows *code. */
void sharp_local_reply_rewrite(const sharp_local_reply_t *lr, sharp_stream_info_t *si,
                               sharp_headers_t *resp, uint32_t *code, sharp_sbuf_t *body,
                               const char **content_type, sharp_alf_random_fn rnd, void *rnd_ctx);
void sharp_local_reply_format_free(sharp_local_reply_format_t *f);
void sharp_local_reply_free(sharp_local_reply_t *lr);

#endif
