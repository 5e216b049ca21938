/* local_reply.c: see local_reply.h. */
#include "http/local_reply.h"

#include <stdio.h>

static void set_status(sharp_headers_t *resp, sharp_stream_info_t *si, uint32_t code)
{
    char b[16];
    int n = snprintf(b, sizeof b, "%u", code);
    sharp_headers_set(resp, ":status", 7, b, (size_t)n);
    si->response_code = code;
}

static void format_body(const sharp_local_reply_format_t *f, sharp_stream_info_t *si,
                        sharp_sbuf_t *body)
{
    sharp_sbuf_t out = {0};
    si->local_reply_body = body->data ? body->data : "";
    si->local_reply_body_len = body->len;
    sharp_access_log_format_render(f->fmt, si, &out);
    si->local_reply_body = NULL;
    si->local_reply_body_len = 0;
    sharp_sbuf_free(body);
    *body = out;
}

void sharp_local_reply_rewrite(const sharp_local_reply_t *lr, sharp_stream_info_t *si,
                               sharp_headers_t *resp, uint32_t *code, sharp_sbuf_t *body,
                               const char **content_type, sharp_alf_random_fn rnd, void *rnd_ctx)
{
    *content_type = "text/plain";
    /* the status filter reads the stream info, %RESP(:STATUS)% the headers */
    set_status(resp, si, *code);
    if (!lr) return;
    const sharp_headers_t *saved = si->response_headers;
    si->response_headers = resp;
    const sharp_local_reply_format_t *fmt = NULL;
    for (uint32_t i = 0; i < lr->nmappers; i++) {
        const sharp_local_reply_mapper_t *m = &lr->mappers[i];
        if (!sharp_alf_evaluate(m->filter, si, rnd, rnd_ctx)) continue;
        if (m->has_body) {
            sharp_sbuf_reset(body);
            sharp_sbuf_append(body, m->body, m->body_len);
        }
        if (m->headers.nadd || m->headers.nremove) sharp_header_ops_apply_si(&m->headers, resp, si);
        if (m->status && m->status != *code) {
            *code = m->status;
            set_status(resp, si, *code);
        }
        fmt = m->format;
        break;
    }
    if (!fmt) fmt = lr->format;
    if (fmt) {
        format_body(fmt, si, body);
        *content_type = fmt->content_type;
    }
    si->response_headers = saved;
}

void sharp_local_reply_format_free(sharp_local_reply_format_t *f)
{
    if (!f) return;
    sharp_access_log_format_free(f->fmt);
    free(f->content_type);
    free(f);
}

void sharp_local_reply_free(sharp_local_reply_t *lr)
{
    if (!lr) return;
    for (uint32_t i = 0; i < lr->nmappers; i++) {
        sharp_local_reply_mapper_t *m = &lr->mappers[i];
        sharp_alf_free(m->filter);
        free(m->body);
        sharp_local_reply_format_free(m->format);
        sharp_header_ops_free(&m->headers);
    }
    free(lr->mappers);
    sharp_local_reply_format_free(lr->format);
    free(lr);
}
