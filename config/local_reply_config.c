/* local_reply_config.c: see local_reply_config.h. */
#include "config/local_reply_config.h"
#include "config/access_log_filter_config.h"
#include "config/route_config.h"
#include "http/access_log_emit.h"

#include <stdio.h>

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__LocalReplyConfig lr_pb_t;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__ResponseMapper mapper_pb_t;

/* A SubstitutionFormatString as a body format, with Envoy's content type:
 * content_type when set, application/json for json_format, else text/plain. */
static sharp_local_reply_format_t *
body_format(const Envoy__Config__Core__V3__SubstitutionFormatString *pb, const char *path,
            char *err, size_t errlen)
{
    char sub[512];
    sharp_access_log_format_t *fmt = sharp_access_log_compile_sfs(pb, sub, sizeof sub);
    if (!fmt) {
        snprintf(err, errlen, "%s: %s", path, sub);
        return NULL;
    }
    sharp_local_reply_format_t *f = sharp_calloc(1, sizeof *f);
    f->fmt = fmt;
    const char *ct =
        pb->content_type[0] ? pb->content_type
        : pb->format_case == ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT
            ? "application/json"
            : "text/plain";
    f->content_type = sharp_strdup(ct);
    return f;
}

static int mapper_from(const mapper_pb_t *pb, const char *path, sharp_local_reply_mapper_t *m,
                       char *err, size_t errlen)
{
    char p[512], sub[1024];
    if (!pb->filter) {
        snprintf(err, errlen, "%s.filter: is required", path);
        return -1;
    }
    snprintf(p, sizeof p, "%s.filter", path);
    m->filter = sharp_config_access_log_filter(pb->filter, p, err, errlen);
    if (!m->filter) return -1;
    if (pb->status_code) {
        uint32_t v = pb->status_code->value;
        if (v < 200 || v >= 600) {
            snprintf(err, errlen, "%s.status_code: must be in [200, 600), got %u", path, v);
            return -1;
        }
        m->status = v;
    }
    if (pb->body) {
        size_t len = 0;
        m->body = sharp_data_source_read(pb->body, &len, sub, sizeof sub);
        if (!m->body) {
            snprintf(err, errlen, "%s.body: %s", path, sub);
            return -1;
        }
        m->has_body = true;
        m->body_len = len;
    }
    if (pb->body_format_override) {
        snprintf(p, sizeof p, "%s.body_format_override", path);
        m->format = body_format(pb->body_format_override, p, err, errlen);
        if (!m->format) return -1;
    }
    if (pb->n_headers_to_add > 1000) {
        snprintf(err, errlen, "%s.headers_to_add: at most 1000 items, got %zu", path,
                 pb->n_headers_to_add);
        return -1;
    }
    if (sharp_config_header_ops(path, "headers_to_add", pb->headers_to_add, pb->n_headers_to_add,
                                "", NULL, 0, &m->headers, err, errlen) < 0)
        return -1;
    return 0;
}

sharp_local_reply_t *sharp_config_local_reply(const lr_pb_t *pb, char *err, size_t errlen)
{
    sharp_local_reply_t *lr = sharp_calloc(1, sizeof *lr);
    char p[256];
    if (pb->n_mappers) lr->mappers = sharp_calloc(pb->n_mappers, sizeof *lr->mappers);
    for (size_t i = 0; i < pb->n_mappers; i++) {
        snprintf(p, sizeof p, "mappers[%zu]", i);
        /* counted first so a half-built mapper is freed too */
        lr->nmappers++;
        if (mapper_from(pb->mappers[i], p, &lr->mappers[i], err, errlen) < 0) goto bad;
    }
    if (pb->body_format) {
        lr->format = body_format(pb->body_format, "body_format", err, errlen);
        if (!lr->format) goto bad;
    }
    return lr;
bad:
    sharp_local_reply_free(lr);
    return NULL;
}
