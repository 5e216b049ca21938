/* health_check_config.c: see health_check_config.h. Fields that would change
 * what a check does but that SHARP does not implement are rejected, with a
 * message saying so, rather than silently ignored. */
#include "config/health_check_config.h"
#include "config/route_config.h"
#include "upstream/health_check.h"

#include <stdarg.h>
#include <stdio.h>

typedef Envoy__Config__Core__V3__HealthCheck hc_pb_t;
typedef Envoy__Config__Core__V3__HealthCheck__Payload payload_pb_t;

typedef struct {
    char *epath, *emsg;
    size_t epathlen, emsglen;
} ctx_t;

static int fail(ctx_t *c, const char *path, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(ctx_t *c, const char *path, const char *field, const char *fmt, ...)
{
    if (field)
        snprintf(c->epath, c->epathlen, "%s.%s", path, field);
    else
        snprintf(c->epath, c->epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->emsg, c->emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool positive(const Google__Protobuf__Duration *d)
{
    return d && (d->seconds > 0 || (d->seconds == 0 && d->nanos > 0));
}

static uint64_t ms(const Google__Protobuf__Duration *d, uint64_t dflt)
{
    if (!d) return dflt;
    if (d->seconds < 0 || d->nanos < 0) return 0;
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

/* A required Duration that must be > 0 (Envoy: {required: true, gt: {}}). */
static int required_duration(ctx_t *c, const char *path, const char *field,
                             const Google__Protobuf__Duration *d, uint64_t *out)
{
    if (!d) return fail(c, path, field, "is required");
    if (!positive(d)) return fail(c, path, field, "must be greater than 0s");
    *out = ms(d, 0);
    return 0;
}

/* An optional Duration that must be > 0 when given. */
static int optional_duration(ctx_t *c, const char *path, const char *field,
                             const Google__Protobuf__Duration *d, uint64_t dflt, uint64_t *out)
{
    if (d && !positive(d)) return fail(c, path, field, "must be greater than 0s");
    *out = ms(d, dflt);
    return 0;
}

/* Payload.text is hex (Envoy decodes it; an empty or invalid string is an
 * error), Payload.binary raw bytes. */
static int payload_from(ctx_t *c, const char *path, const payload_pb_t *pb, sharp_hc_payload_t *out)
{
    if (pb->payload_case == ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_BINARY) {
        out->len = pb->binary.len;
        out->data = sharp_calloc(1, out->len ? out->len : 1);
        if (out->len) memcpy(out->data, pb->binary.data, out->len);
        return 0;
    }
    if (pb->payload_case != ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__PAYLOAD__PAYLOAD_TEXT)
        return fail(c, path, NULL, "one of text, binary is required");
    size_t n = strlen(pb->text);
    if (!n || n % 2) return fail(c, path, "text", "invalid hex string '%s'", pb->text);
    out->data = sharp_calloc(1, n / 2);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = sharp_hexval(pb->text[2 * i]), lo = sharp_hexval(pb->text[2 * i + 1]);
        if (hi < 0 || lo < 0) return fail(c, path, "text", "invalid hex string '%s'", pb->text);
        out->data[i] = (uint8_t)(hi << 4 | lo);
    }
    out->len = n / 2;
    return 0;
}

/* Envoy's HttpStatusChecker range checks. */
static int ranges_from(ctx_t *c, const char *path, const char *field, const char *kind,
                       Envoy__Type__V3__Int64Range *const *pb, size_t n, sharp_hc_range_t **out,
                       uint32_t *nout)
{
    char p[1024];
    *out = sharp_calloc(n ? n : 1, sizeof **out);
    for (size_t i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%s.%s[%zu]", path, field, i);
        int64_t start = pb[i]->start, end = pb[i]->end;
        if (start >= end)
            return fail(c, p, NULL,
                        "Invalid http %s status range: expecting start < end, but found start=%lld "
                        "and end=%lld",
                        kind, (long long)start, (long long)end);
        if (start < 100)
            return fail(
                c, p, NULL,
                "Invalid http %s status range: expecting start >= 100, but found start=%lld", kind,
                (long long)start);
        if (end > 600)
            return fail(c, p, NULL,
                        "Invalid http %s status range: expecting end <= 600, but found end=%lld",
                        kind, (long long)end);
        (*out)[(*nout)++] = (sharp_hc_range_t){(uint32_t)start, (uint32_t)end};
    }
    return 0;
}

static const char *method_name(Envoy__Config__Core__V3__RequestMethod m)
{
    switch (m) {
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__HEAD:
        return "HEAD";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__POST:
        return "POST";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__PUT:
        return "PUT";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__DELETE:
        return "DELETE";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__OPTIONS:
        return "OPTIONS";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__TRACE:
        return "TRACE";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__PATCH:
        return "PATCH";
    case ENVOY__CONFIG__CORE__V3__REQUEST_METHOD__CONNECT:
        return NULL;
    default:
        return "GET";
    }
}

static int http_from(ctx_t *c, const char *path,
                     const Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck *pb,
                     sharp_hc_config_t *cfg)
{
    cfg->type = SHARP_HC_HTTP;
    if (!pb->path[0]) return fail(c, path, "path", "is required");
    if (strpbrk(pb->path, " \r\n"))
        return fail(c, path, "path", "must not contain spaces or line breaks");
    if (strpbrk(pb->host, " \r\n"))
        return fail(c, path, "host", "must not contain spaces or line breaks");
    /* HTTP3 is refused by the support table's "defined"... and here: SHARP
     * has no HTTP/3 */
    if (pb->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP3)
        return fail(c, path, "codec_client_type", "HTTP3 is not supported by SHARP (HTTP/3 health checks)");
    cfg->http2 = pb->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2;
    const char *m = method_name(pb->method);
    if (!m) return fail(c, path, "method", "CONNECT is not allowed");
    cfg->method = sharp_strdup(m);
    cfg->path = sharp_strdup(pb->path);
    cfg->host = pb->host[0] ? sharp_strdup(pb->host) : NULL;
    if (ranges_from(c, path, "expected_statuses", "expected", pb->expected_statuses,
                    pb->n_expected_statuses, &cfg->expected, &cfg->nexpected) < 0 ||
        ranges_from(c, path, "retriable_statuses", "retriable", pb->retriable_statuses,
                    pb->n_retriable_statuses, &cfg->retriable, &cfg->nretriable) < 0)
        return -1;
    char err[1024] = "";
    if (sharp_config_header_ops(path, "request_headers_to_add", pb->request_headers_to_add,
                                pb->n_request_headers_to_add, "request_headers_to_remove",
                                pb->request_headers_to_remove, pb->n_request_headers_to_remove,
                                &cfg->headers, err, sizeof err) < 0) {
        /* the message is "<full field path>: <what>" */
        const char *colon = strstr(err, ": ");
        if (!colon) return fail(c, path, NULL, "%s", err);
        snprintf(c->epath, c->epathlen, "%.*s", (int)(colon - err), err);
        snprintf(c->emsg, c->emsglen, "%s", colon + 2);
        return -1;
    }
    return 0;
}

/* GrpcHealthCheck: Envoy's gRPC checker needs an HTTP/2 cluster. */
static int grpc_from(ctx_t *c, const char *path, const sharp_cluster_t *cluster,
                     const Envoy__Config__Core__V3__HealthCheck__GrpcHealthCheck *pb, sharp_hc_config_t *cfg)
{
    cfg->type = SHARP_HC_GRPC;
    if (!cluster->http2)
        return fail(c, path, NULL, "%s cluster must support HTTP/2 for gRPC healthchecking", cluster->name);
    /* authority: HTTP_HEADER_VALUE (not strict) */
    if (strpbrk(pb->authority, "\r\n"))
        return fail(c, path, "authority", "must not contain line breaks");
    cfg->grpc_service = sharp_strdup(pb->service_name);
    cfg->grpc_authority = pb->authority[0] ? sharp_strdup(pb->authority) : NULL;
    char err[1024] = "";
    if (sharp_config_header_ops(path, "initial_metadata", pb->initial_metadata, pb->n_initial_metadata, NULL, NULL,
                                0, &cfg->headers, err, sizeof err) < 0) {
        const char *colon = strstr(err, ": ");
        if (!colon) return fail(c, path, NULL, "%s", err);
        snprintf(c->epath, c->epathlen, "%.*s", (int)(colon - err), err);
        snprintf(c->emsg, c->emsglen, "%s", colon + 2);
        return -1;
    }
    return 0;
}

static int tcp_from(ctx_t *c, const char *path,
                    const Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck *pb,
                    sharp_hc_config_t *cfg)
{
    char p[1024];
    cfg->type = SHARP_HC_TCP;
    if (pb->send) {
        snprintf(p, sizeof p, "%s.send", path);
        if (payload_from(c, p, pb->send, &cfg->send) < 0) return -1;
    }
    cfg->receive = sharp_calloc(pb->n_receive ? pb->n_receive : 1, sizeof *cfg->receive);
    for (size_t i = 0; i < pb->n_receive; i++) {
        snprintf(p, sizeof p, "%s.receive[%zu]", path, i);
        if (payload_from(c, p, pb->receive[i], &cfg->receive[cfg->nreceive++]) < 0) return -1;
    }
    return 0;
}

static int hc_from(ctx_t *c, const char *path, const sharp_cluster_t *cluster, const hc_pb_t *pb,
                   sharp_hc_config_t *cfg)
{
    char p[1024];
    if (required_duration(c, path, "timeout", pb->timeout, &cfg->timeout_ms) < 0 ||
        required_duration(c, path, "interval", pb->interval, &cfg->interval_ms) < 0)
        return -1;
    if (!pb->unhealthy_threshold) return fail(c, path, "unhealthy_threshold", "is required");
    if (!pb->healthy_threshold) return fail(c, path, "healthy_threshold", "is required");
    cfg->unhealthy_threshold = pb->unhealthy_threshold->value;
    cfg->healthy_threshold = pb->healthy_threshold->value;
    cfg->interval_jitter_ms = ms(pb->interval_jitter, 0);
    cfg->initial_jitter_ms = ms(pb->initial_jitter, 0);
    cfg->interval_jitter_percent = pb->interval_jitter_percent;
    if (optional_duration(c, path, "no_traffic_interval", pb->no_traffic_interval, 60000,
                          &cfg->no_traffic_interval_ms) < 0 ||
        optional_duration(c, path, "no_traffic_healthy_interval", pb->no_traffic_healthy_interval,
                          cfg->no_traffic_interval_ms, &cfg->no_traffic_healthy_interval_ms) < 0 ||
        optional_duration(c, path, "unhealthy_interval", pb->unhealthy_interval, cfg->interval_ms,
                          &cfg->unhealthy_interval_ms) < 0 ||
        optional_duration(c, path, "unhealthy_edge_interval", pb->unhealthy_edge_interval,
                          cfg->unhealthy_interval_ms, &cfg->unhealthy_edge_interval_ms) < 0 ||
        optional_duration(c, path, "healthy_edge_interval", pb->healthy_edge_interval,
                          cfg->interval_ms, &cfg->healthy_edge_interval_ms) < 0)
        return -1;
    cfg->reuse_connection = !pb->reuse_connection || pb->reuse_connection->value;
    if (pb->alt_port) {
        if (pb->alt_port->value > 65535)
            return fail(c, path, "alt_port", "%u is out of range", pb->alt_port->value);
        cfg->alt_port = pb->alt_port->value;
    }
    switch (pb->health_checker_case) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_HTTP_HEALTH_CHECK:
        snprintf(p, sizeof p, "%s.http_health_check", path);
        return http_from(c, p, pb->http_health_check, cfg);
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK:
        snprintf(p, sizeof p, "%s.tcp_health_check", path);
        return tcp_from(c, p, pb->tcp_health_check, cfg);
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK:
        snprintf(p, sizeof p, "%s.grpc_health_check", path);
        return grpc_from(c, p, cluster, pb->grpc_health_check, cfg);
    default:
        return fail(c, path, NULL, "one of http_health_check, tcp_health_check, grpc_health_check is required");
    }
}

int sharp_config_health_checks(sharp_cluster_t *c, Envoy__Config__Core__V3__HealthCheck *const *hcs,
                               size_t n, const char *path, sharp_stats_t *stats, char *epath,
                               size_t epathlen, char *emsg, size_t emsglen)
{
    ctx_t ctx = {.epath = epath, .emsg = emsg, .epathlen = epathlen, .emsglen = emsglen};
    if (n == 0) return 0;
    char p[1024];
    snprintf(p, sizeof p, "%s.health_checks", path);
    if (n > 1) return fail(&ctx, p, NULL, "Multiple health checks not supported");
    snprintf(p, sizeof p, "%s.health_checks[0]", path);
    sharp_hc_config_t *cfg = sharp_calloc(1, sizeof *cfg);
    if (hc_from(&ctx, p, c, hcs[0], cfg) < 0) {
        sharp_hc_config_free(cfg);
        return -1;
    }
    sharp_hc_stats_init(cfg, stats, c->stat_name);
    c->health_check = cfg;
    /* unhealthy until the first check passes, except the endpoints that
     * are never checked (health_check_config.disable_active_health_check) */
    for (uint32_t i = 0; i < c->nhosts; i++)
        if (!c->hosts[i]->hc.disabled) sharp_host_health_set(c->hosts[i], SHARP_HOST_FAILED_ACTIVE_HC);
    return 0;
}
