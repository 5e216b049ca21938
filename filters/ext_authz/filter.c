/* filter.c: envoy.filters.http.ext_authz, Envoy's external authorization
 * HTTP filter, with an http_service or a grpc_service (envoy_grpc)
 * authorization server.
 *
 * decode_headers stops the request and sends the authorization request to
 * the server's cluster through the worker's own pools (call.c): for an
 * http_service a copy of the request head (check.c chooses its headers),
 * for a grpc_service an envoy.service.auth.v3.Authorization/Check call over
 * HTTP/2 whose CheckRequest describes the request (check.c builds it, with
 * the per-route context extensions merged over the route's levels). The
 * answer resumes the stream from the loop: OK lets the request go on with
 * the answer's header mutations (and response headers for the client),
 * a denial is returned to the client as a local reply with the answer's
 * status, body and headers (response flag UAEX, details ext_authz_denied),
 * and a failure (no cluster or host, connect failure, timeout, reset, an
 * HTTP 5xx, a gRPC status other than OK, an unreadable CheckResponse)
 * denies with status_on_error (403; ext_authz_error) unless
 * failure_mode_allow lets the request through (with
 * x-envoy-auth-failure-mode-allowed: true under
 * failure_mode_allow_header_add). With with_request_body the request body
 * is held (up to max_request_bytes; beyond it 413, or with
 * allow_partial_message the check goes with what was held) and sent with
 * the check. A request without a route is not checked, nor one whose most
 * specific ExtAuthzPerRoute says disabled; filter_enabled/deny_at_disable
 * are Envoy's runtime switches.
 *
 * Stats: http.<hcm stat_prefix>.ext_authz.[<stat_prefix>.]{ok,denied,
 * error,disabled,failure_mode_allowed}, and Envoy's older per-cluster
 * ones, cluster.<route cluster>.ext_authz.[<stat_prefix>.]{ok,denied,error,
 * failure_mode_allowed}, registered on first use (a route's cluster may
 * come from CDS after the filter's config); a denial also counts its
 * status in the route cluster's upstream_rq_<code> unless
 * charge_cluster_response_stats is false. */
#include "filters/ext_authz/filter.h"
#include "filters/ext_authz/call.h"
#include "filters/ext_authz/check.h"
#include "config/route_config.h"
#include "grpc/framing.h"
#include "http/grpc.h"
#include "http/route.h"
#include "http/stream.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/extensions/filters/http/ext_authz/v3/ext_authz.pb-c.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Envoy__Extensions__Filters__Http__ExtAuthz__V3__ExtAuthz ea_pb_t;
typedef Envoy__Extensions__Filters__Http__ExtAuthz__V3__ExtAuthzPerRoute ea_route_pb_t;
typedef Envoy__Type__Matcher__V3__ListStringMatcher lsm_pb_t;

typedef struct ea_config {
    bool grpc;       /* grpc_service, else http_service */
    char *authority; /* gRPC: :authority (envoy_grpc.authority, else the cluster name) */
    sharp_headers_t initial_metadata; /* gRPC: sent with every call */
    bool pack_as_bytes;
    char *cluster;
    uint64_t timeout_ms;
    sharp_ext_authz_http_t http;
    bool failure_mode_allow, failure_mode_allow_header_add;
    uint32_t status_on_error;
    bool with_body, allow_partial;
    uint32_t max_request_bytes;
    bool has_enabled;
    sharp_runtime_fraction_t enabled;
    bool has_deny_at_disable, deny_default;
    char *deny_key;
    bool charge_cluster_response_stats;
    char *stat_prefix; /* "" or "<stat_prefix>." */
    sharp_stats_t *stats;
    sharp_stat_id_t st_ok, st_denied, st_error, st_disabled, st_failure_mode_allowed;
    bool ignore_metadata; /* enable_dynamic_metadata_ingestion false */
    sharp_stat_id_t st_ignored_metadata;
} ea_config_t;

typedef struct ea_route_config {
    bool disabled;
    bool disable_request_body_buffering;
    char **context_extensions; /* key, value, ..., NULL */
} ea_route_config_t;

typedef struct ea_state {
    sharp_filter_t *f;
    sharp_ext_authz_call_t *call;
    bool buffering;                   /* holding the body for the check */
    sharp_sbuf_t body;                /* the body for the check (up to max_request_bytes) */
    uint64_t body_seen;               /* all body bytes seen while buffering */
    bool with_body;                   /* the check carries the held body */
    sharp_ext_authz_response_t *resp; /* the OK answer's response headers, for encode_headers */
    bool partial;                     /* the held body was cut at max_request_bytes */
    uint64_t start_ns;                /* when the call started (ext_authz_duration) */
} ea_state_t;

/* ---- config ---- */

static void config_free(void *p)
{
    ea_config_t *c = p;
    if (!c) return;
    free(c->cluster);
    free(c->authority);
    sharp_headers_free(&c->initial_metadata);
    free(c->http.path_prefix);
    sharp_ext_authz_matchers_free(&c->http.allowed_headers);
    sharp_ext_authz_matchers_free(&c->http.disallowed_headers);
    sharp_ext_authz_matchers_free(&c->http.upstream);
    sharp_ext_authz_matchers_free(&c->http.upstream_append);
    sharp_ext_authz_matchers_free(&c->http.client);
    sharp_ext_authz_matchers_free(&c->http.client_on_success);
    sharp_header_ops_free(&c->http.headers_to_add);
    free(c->enabled.key);
    free(c->deny_key);
    free(c->stat_prefix);
    free(c);
}

static int matchers_from(const lsm_pb_t *pb, const char *path, sharp_ext_authz_matchers_t *out,
                         char *err, size_t errlen)
{
    if (!pb) return 0;
    out->set = true;
    out->m = sharp_calloc(pb->n_patterns ? pb->n_patterns : 1, sizeof *out->m);
    for (size_t i = 0; i < pb->n_patterns; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s.patterns[%zu]", path, i);
        if (sharp_config_string_matcher(pb->patterns[i], p, &out->m[out->n], err, errlen) < 0)
            return -1;
        out->n++;
    }
    return 0;
}

/* Envoy's toErrorCode: a status outside 100..511 is 403. */
static uint32_t error_code(int code)
{
    return code >= 100 && code <= 511 ? (uint32_t)code : 403;
}

static int common_build(const ea_pb_t *pb, ea_config_t *c, char *err, size_t errlen);
static ea_config_t *grpc_config_build(const ea_pb_t *pb, char *err, size_t errlen);

static ea_config_t *config_build(const ea_pb_t *pb, char *err, size_t errlen)
{
    bool grpc = pb->services_case ==
                ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_AUTHZ__V3__EXT_AUTHZ__SERVICES_GRPC_SERVICE;
    if (!grpc &&
        pb->services_case !=
            ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_AUTHZ__V3__EXT_AUTHZ__SERVICES_HTTP_SERVICE) {
        snprintf(err, errlen, "grpc_service or http_service: an authorization service is required");
        return NULL;
    }
    if (grpc) return grpc_config_build(pb, err, errlen);
    if (pb->transport_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        snprintf(err, errlen, "transport_api_version: V2 is no longer supported (use V3)");
        return NULL;
    }
    if (pb->clear_route_cache) {
        snprintf(err, errlen,
                 "clear_route_cache: not supported by SHARP (re-resolving the route after the "
                 "authorization)");
        return NULL;
    }
    if (pb->validate_mutations) {
        snprintf(err, errlen,
                 "validate_mutations: not supported by SHARP (validating the authorization "
                 "response's header mutations)");
        return NULL;
    }
    const Envoy__Extensions__Filters__Http__ExtAuthz__V3__HttpService *hs = pb->http_service;
    const Envoy__Extensions__Filters__Http__ExtAuthz__V3__AuthorizationRequest *areq =
        hs->authorization_request;
    const Envoy__Extensions__Filters__Http__ExtAuthz__V3__AuthorizationResponse *aresp =
        hs->authorization_response;
    if (pb->allowed_headers && areq && areq->allowed_headers) {
        snprintf(err, errlen, "Invalid duplicate configuration for allowed_headers.");
        return NULL;
    }
    if (aresp && aresp->dynamic_metadata_from_headers) {
        snprintf(err, errlen,
                 "http_service.authorization_response.dynamic_metadata_from_headers: not supported "
                 "by SHARP (dynamic metadata)");
        return NULL;
    }
    ea_config_t *c = sharp_calloc(1, sizeof *c);
    const Envoy__Config__Core__V3__HttpUri *uri = hs->server_uri;
    /* a missing server_uri names no cluster: every check fails, as in Envoy */
    c->cluster = sharp_strdup(uri && uri->cluster ? uri->cluster : "");
    /* HttpUri.timeout is required (the support table checks it) */
    c->timeout_ms = uri && uri->timeout ? (uint64_t)uri->timeout->seconds * 1000 +
                                              (uint64_t)uri->timeout->nanos / 1000000
                                        : 200;
    if (hs->path_prefix && hs->path_prefix[0]) c->http.path_prefix = sharp_strdup(hs->path_prefix);
    if (matchers_from(pb->allowed_headers ? pb->allowed_headers
                      : areq              ? areq->allowed_headers
                                          : NULL,
                      pb->allowed_headers ? "allowed_headers"
                                          : "http_service.authorization_request.allowed_headers",
                      &c->http.allowed_headers, err, errlen) < 0 ||
        matchers_from(pb->disallowed_headers, "disallowed_headers", &c->http.disallowed_headers,
                      err, errlen) < 0)
        goto fail;
    if (aresp &&
        (matchers_from(aresp->allowed_upstream_headers,
                       "http_service.authorization_response.allowed_upstream_headers",
                       &c->http.upstream, err, errlen) < 0 ||
         matchers_from(aresp->allowed_upstream_headers_to_append,
                       "http_service.authorization_response.allowed_upstream_headers_to_append",
                       &c->http.upstream_append, err, errlen) < 0 ||
         matchers_from(aresp->allowed_client_headers,
                       "http_service.authorization_response.allowed_client_headers",
                       &c->http.client, err, errlen) < 0 ||
         matchers_from(aresp->allowed_client_headers_on_success,
                       "http_service.authorization_response.allowed_client_headers_on_success",
                       &c->http.client_on_success, err, errlen) < 0))
        goto fail;
    size_t nadd = areq ? areq->n_headers_to_add : 0;
    c->http.headers_to_add.add = sharp_calloc(nadd ? nadd : 1, sizeof *c->http.headers_to_add.add);
    for (size_t i = 0; i < nadd; i++) {
        const Envoy__Config__Core__V3__HeaderValue *hv = areq->headers_to_add[i];
        char msg[256];
        if (!hv->key || !hv->key[0]) {
            snprintf(
                err, errlen,
                "http_service.authorization_request.headers_to_add[%zu].key: value length must "
                "be at least 1 characters",
                i);
            goto fail;
        }
        char *raw = NULL;
        const char *value = hv->value ? hv->value : "";
        if (!value[0] && hv->raw_value.len)
            value = raw = sharp_strndup((const char *)hv->raw_value.data, hv->raw_value.len);
        /* Envoy's HeaderParser with OVERWRITE_IF_EXISTS_OR_ADD */
        int rc =
            sharp_header_op_init(&c->http.headers_to_add.add[c->http.headers_to_add.nadd], hv->key,
                                 value, SHARP_OVERWRITE_IF_EXISTS_OR_ADD, false, msg, sizeof msg);
        free(raw);
        if (rc < 0) {
            snprintf(err, errlen,
                     "http_service.authorization_request.headers_to_add[%zu].value: %s", i, msg);
            goto fail;
        }
        c->http.headers_to_add.nadd++;
    }
    c->http.headers_to_add.remove = sharp_calloc(1, sizeof *c->http.headers_to_add.remove);
    if (common_build(pb, c, err, errlen) < 0) goto fail;
    return c;
fail:
    config_free(c);
    return NULL;
}

/* The fields both services share. */
static int common_build(const ea_pb_t *pb, ea_config_t *c, char *err, size_t errlen)
{
    c->failure_mode_allow = pb->failure_mode_allow;
    c->failure_mode_allow_header_add = pb->failure_mode_allow_header_add;
    c->status_on_error = error_code(pb->status_on_error ? (int)pb->status_on_error->code : 0);
    if (pb->with_request_body) {
        c->with_body = true;
        c->max_request_bytes = pb->with_request_body->max_request_bytes;
        c->allow_partial = pb->with_request_body->allow_partial_message;
    }
    if (pb->filter_enabled) {
        const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf = pb->filter_enabled;
        if (!rf->default_value) {
            snprintf(err, errlen, "filter_enabled.default_value: value is required");
            return -1;
        }
        c->enabled.denominator = sharp_fractional_denominator(rf->default_value->denominator);
        if (!c->enabled.denominator) {
            snprintf(err, errlen, "filter_enabled.default_value.denominator: unknown");
            return -1;
        }
        c->has_enabled = true;
        c->enabled.numerator = rf->default_value->numerator;
        if (rf->runtime_key && rf->runtime_key[0]) c->enabled.key = sharp_strdup(rf->runtime_key);
    }
    if (pb->deny_at_disable) {
        c->has_deny_at_disable = true;
        c->deny_default =
            pb->deny_at_disable->default_value && pb->deny_at_disable->default_value->value;
        c->deny_key =
            sharp_strdup(pb->deny_at_disable->runtime_key ? pb->deny_at_disable->runtime_key : "");
    }
    c->charge_cluster_response_stats =
        !pb->charge_cluster_response_stats || pb->charge_cluster_response_stats->value;
    c->stat_prefix = sharp_strdup("");
    if (pb->stat_prefix && pb->stat_prefix[0]) {
        free(c->stat_prefix);
        size_t n = strlen(pb->stat_prefix);
        c->stat_prefix = sharp_calloc(1, n + 2);
        memcpy(c->stat_prefix, pb->stat_prefix, n);
        c->stat_prefix[n] = '.';
    }
    return 0;
}

/* A grpc_service: envoy_grpc only (google_grpc is refused by the support
 * table); the fields that only shape a CheckRequest in ways SHARP does
 * not are refused here. */
static ea_config_t *grpc_config_build(const ea_pb_t *pb, char *err, size_t errlen)
{
    const Envoy__Config__Core__V3__GrpcService *gs = pb->grpc_service;
    if (gs->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        !gs->envoy_grpc) {
        snprintf(err, errlen,
                 "grpc_service.envoy_grpc: is required by SHARP (its own gRPC client)");
        return NULL;
    }
    struct {
        bool set;
        const char *field, *what;
    } refused[] = {
        {gs->envoy_grpc->retry_policy != NULL, "grpc_service.envoy_grpc.retry_policy",
         "retries of the Check call"},
        {pb->include_peer_certificate, "include_peer_certificate",
         "the peer certificate in the CheckRequest"},
        {pb->include_tls_session, "include_tls_session", "the TLS session in the CheckRequest"},
        {pb->encode_raw_headers, "encode_raw_headers", "raw headers in the CheckRequest"},
        {pb->n_metadata_context_namespaces || pb->n_typed_metadata_context_namespaces,
         "metadata_context_namespaces", "dynamic metadata in the CheckRequest"},
        {pb->n_route_metadata_context_namespaces || pb->n_route_typed_metadata_context_namespaces,
         "route_metadata_context_namespaces", "route metadata in the CheckRequest"},
        {pb->bootstrap_metadata_labels_key && pb->bootstrap_metadata_labels_key[0],
         "bootstrap_metadata_labels_key", "destination labels in the CheckRequest"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        if (refused[i].set) {
            snprintf(err, errlen, "%s: not supported by SHARP with grpc_service (%s)",
                     refused[i].field, refused[i].what);
            return NULL;
        }
    }
    ea_config_t *c = sharp_calloc(1, sizeof *c);
    c->grpc = true;
    c->cluster = sharp_strdup(gs->envoy_grpc->cluster_name ? gs->envoy_grpc->cluster_name : "");
    c->authority = sharp_strdup(gs->envoy_grpc->authority && gs->envoy_grpc->authority[0]
                                    ? gs->envoy_grpc->authority
                                    : c->cluster);
    /* GrpcService.timeout: 200ms when absent (Envoy's default for ext_authz) */
    c->timeout_ms =
        gs->timeout ? (uint64_t)gs->timeout->seconds * 1000 + (uint64_t)gs->timeout->nanos / 1000000
                    : 200;
    sharp_headers_init(&c->initial_metadata);
    for (size_t i = 0; i < gs->n_initial_metadata; i++)
        sharp_headers_add_cstr(&c->initial_metadata, gs->initial_metadata[i]->key,
                               gs->initial_metadata[i]->value ? gs->initial_metadata[i]->value
                                                              : "");
    c->http.headers_to_add.add = sharp_calloc(1, sizeof *c->http.headers_to_add.add);
    c->http.headers_to_add.remove = sharp_calloc(1, sizeof *c->http.headers_to_add.remove);
    c->pack_as_bytes = pb->with_request_body && pb->with_request_body->pack_as_bytes;
    /* Envoy adds no default names for a gRPC server: unset means every header */
    if (matchers_from(pb->allowed_headers, "allowed_headers", &c->http.allowed_headers, err,
                      errlen) < 0 ||
        matchers_from(pb->disallowed_headers, "disallowed_headers", &c->http.disallowed_headers,
                      err, errlen) < 0 ||
        common_build(pb, c, err, errlen) < 0) {
        config_free(c);
        return NULL;
    }
    return c;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    if (!msg) {
        snprintf(err, errlen, "http_service: an authorization service is required");
        return NULL;
    }
    ea_config_t *c = config_build((const ea_pb_t *)msg, err, errlen);
    if (!c) return NULL;
    sharp_stats_t *s = ctx->server->stats;
    c->stats = s;
    c->st_ok = sharp_stats_counterf(s, "http.%s.ext_authz.%sok", ctx->stat_prefix, c->stat_prefix);
    c->st_denied =
        sharp_stats_counterf(s, "http.%s.ext_authz.%sdenied", ctx->stat_prefix, c->stat_prefix);
    c->st_error =
        sharp_stats_counterf(s, "http.%s.ext_authz.%serror", ctx->stat_prefix, c->stat_prefix);
    c->st_disabled =
        sharp_stats_counterf(s, "http.%s.ext_authz.%sdisabled", ctx->stat_prefix, c->stat_prefix);
    c->st_failure_mode_allowed = sharp_stats_counterf(s, "http.%s.ext_authz.%sfailure_mode_allowed",
                                                      ctx->stat_prefix, c->stat_prefix);
    const ea_pb_t *pb = (const ea_pb_t *)msg;
    c->ignore_metadata = pb->enable_dynamic_metadata_ingestion && !pb->enable_dynamic_metadata_ingestion->value;
    c->st_ignored_metadata = sharp_stats_counterf(s, "http.%s.ext_authz.%signored_dynamic_metadata",
                                                  ctx->stat_prefix, c->stat_prefix);
    return c;
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const ea_route_pb_t *pb = (const ea_route_pb_t *)msg;
    ea_route_config_t *c = sharp_calloc(1, sizeof *c);
    switch (pb->override_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_AUTHZ__V3__EXT_AUTHZ_PER_ROUTE__OVERRIDE_DISABLED:
        if (!pb->disabled) {
            snprintf(err, errlen, "disabled: value must equal true");
            goto fail;
        }
        c->disabled = true;
        return c;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__EXT_AUTHZ__V3__EXT_AUTHZ_PER_ROUTE__OVERRIDE_CHECK_SETTINGS:
        if (!pb->check_settings) {
            snprintf(err, errlen, "check_settings: value is required");
            goto fail;
        }
        if (pb->check_settings->with_request_body) {
            snprintf(
                err, errlen,
                "check_settings.with_request_body: not supported by SHARP (per-route request body "
                "buffering settings)");
            goto fail;
        }
        c->disable_request_body_buffering = pb->check_settings->disable_request_body_buffering;
        c->context_extensions =
            sharp_calloc(2 * pb->check_settings->n_context_extensions + 1, sizeof(char *));
        for (size_t i = 0; i < pb->check_settings->n_context_extensions; i++) {
            c->context_extensions[2 * i] =
                sharp_strdup(pb->check_settings->context_extensions[i]->key);
            c->context_extensions[2 * i + 1] =
                sharp_strdup(pb->check_settings->context_extensions[i]->value);
        }
        return c;
    default:
        snprintf(err, errlen, "override: value is required");
        goto fail;
    }
fail:
    free(c);
    return NULL;
}

static void route_config_free(void *p)
{
    ea_route_config_t *c = p;
    if (!c) return;
    for (size_t i = 0; c->context_extensions && c->context_extensions[i]; i++)
        free(c->context_extensions[i]);
    free(c->context_extensions);
    free(c);
}

/* ---- the check ---- */

/* The context extensions of every level's CheckSettings, merged from the
 * least specific level to the most specific (route table, virtual host,
 * route, weighted cluster): a more specific level's key wins, as Envoy's
 * FilterConfigPerRoute::merge. Key/value pairs into `out` (NULL-ended). */
static void context_extensions(sharp_filter_t *f, const char ***out)
{
    sharp_stream_t *s = f->stream;
    const ea_route_config_t *levels[4] = {
        sharp_route_filter_config(s->routes, NULL, NULL, NULL, f->name, f->factory),
        s->vhost ? sharp_route_filter_config(NULL, s->vhost, NULL, NULL, f->name, f->factory)
                 : NULL,
        s->route ? sharp_route_filter_config(NULL, NULL, s->route, NULL, f->name, f->factory)
                 : NULL,
        s->route_wc ? sharp_route_filter_config(NULL, NULL, NULL, s->route_wc, f->name, f->factory)
                    : NULL,
    };
    size_t cap = 0;
    for (int l = 0; l < 4; l++)
        for (size_t i = 0;
             levels[l] && levels[l]->context_extensions && levels[l]->context_extensions[i]; i++)
            cap++;
    const char **kv = sharp_calloc(cap + 1, sizeof *kv);
    size_t n = 0;
    for (int l = 0; l < 4; l++) {
        for (size_t i = 0;
             levels[l] && levels[l]->context_extensions && levels[l]->context_extensions[i];
             i += 2) {
            const char *k = levels[l]->context_extensions[i],
                       *v = levels[l]->context_extensions[i + 1];
            size_t j = 0;
            while (j < n && strcmp(kv[j], k) != 0)
                j += 2;
            kv[j] = k;
            kv[j + 1] = v;
            if (j == n) n += 2;
        }
    }
    *out = kv;
}

/* Envoy's async client appends the local node's address to
 * x-forwarded-for: the first non-loopback IPv4 address of the machine's
 * interfaces, else 127.0.0.1 (as upstream/shadow.c). */
static char local_address[INET_ADDRSTRLEN] = "127.0.0.1";
static pthread_once_t local_address_once = PTHREAD_ONCE_INIT;

static void find_local_address(void)
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
        const struct in_addr *in = &((const struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if ((ntohl(in->s_addr) >> 24) == 127) continue;
        inet_ntop(AF_INET, in, local_address, sizeof local_address);
        break;
    }
    freeifaddrs(ifs);
}

/* cluster.<route cluster>.ext_authz.[<stat_prefix>.]<name>, registered on
 * first use. */
static void count_cluster(sharp_filter_t *f, const ea_config_t *c, const char *name)
{
    sharp_stream_t *s = f->stream;
    if (!s->route_cluster) return;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *rc = sharp_view_cluster(s->view, s->route_cluster, &cl);
    if (!rc) return;
    sharp_counter_inc(w->stats, sharp_stats_counterf(c->stats, "cluster.%s.ext_authz.%s%s",
                                                     rc->stat_name, c->stat_prefix, name));
}

static void on_done(void *ctx, const sharp_ext_authz_result_t *r);

static void start_check(sharp_filter_t *f)
{
    const ea_config_t *c = f->config;
    ea_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_headers_t h;
    sharp_headers_init(&h);
    size_t blen = st->body.len;
    sharp_sbuf_t grpc_body = {0};
    if (c->grpc) {
        const sharp_stream_info_t *si = sharp_stream_info(s);
        const char **kv = NULL;
        context_extensions(f, &kv);
        sharp_str_t svc = {"", 0};
        sharp_headers_get_cstr(sharp_stream_request_headers(s),
                               "x-envoy-downstream-service-cluster", &svc);
        char *service = sharp_strndup(svc.p, svc.len);
        sharp_ext_authz_grpc_in_t in = {
            .headers = sharp_stream_request_headers(s),
            .stream_id = s->id,
            .protocol = si->protocol,
            .source = sharp_stream_downstream_peer_str(s), /* the connection's remote address, as Envoy's */
            .destination = si->downstream_local_address,
            .service = service,
            .time_us = si->start_wall_us,
            .size = si->bytes_received,
            .body = st->with_body ? (st->body.data ? st->body.data : "") : NULL,
            .body_len = blen,
            .partial = st->partial,
            .pack_as_bytes = c->pack_as_bytes,
            .context_extensions = kv,
            .allowed = &c->http.allowed_headers,
            .disallowed = &c->http.disallowed_headers,
        };
        sharp_ext_authz_grpc_request(&in, &grpc_body);
        free(service);
        free(kv);
        sharp_ext_authz_grpc_head(&h, "/envoy.service.auth.v3.Authorization/Check", c->authority, c->timeout_ms,
                                  &c->initial_metadata);
    } else {
        sharp_ext_authz_http_request(&c->http, sharp_stream_request_headers(s), blen,
                                     st->with_body ? st->partial : -1, &h, sharp_stream_info(s));
        if (!sharp_headers_get_cstr(&h, ":scheme", NULL))
            sharp_headers_add_cstr(&h, ":scheme", "http");
        /* as Envoy's async client: an internal request of this proxy */
        sharp_headers_set_cstr(&h, "x-envoy-internal", "true");
        pthread_once(&local_address_once, find_local_address);
        sharp_headers_set_cstr(&h, "x-forwarded-for", local_address);
    }
    sharp_cluster_local_t *cl = NULL;
    sharp_cluster_t *ac = sharp_view_cluster(s->view, c->cluster, &cl);
    if (!ac)
        sharp_debug(http, "[C%llu][S%llu] ext_authz cluster '%s' does not exist", s->conn_id, s->id,
                    c->cluster);
    sharp_ext_authz_call_args_t a = {
        .worker = w,
        .cluster = ac,
        .view = s->view,
        .cl = cl,
        .headers = &h,
        .body = c->grpc ? grpc_body.data : st->body.data,
        .body_len = c->grpc ? grpc_body.len : blen,
        .http2 = c->grpc,
        .timeout_ms = c->timeout_ms,
        .max_response_bytes = sharp_stream_buffer_limit(s),
        .conn_id = s->conn_id,
        .stream_id = s->id,
        .done = on_done,
        .ctx = f,
    };
    st->f = f;
    st->start_ns = sharp_now_ns();
    st->call = sharp_ext_authz_call_start(&a);
    sharp_headers_free(&h);
    sharp_sbuf_free(&grpc_body);
    sharp_sbuf_free(&st->body);
}

/* Headers of a denial that go into the local reply: not its status,
 * length or connection-specific fields (the local reply has its own). */
static bool reply_header(sharp_str_t n)
{
    return n.len && n.p[0] != ':' &&
           !(n.len == 14 && strncasecmp(n.p, "content-length", 14) == 0) &&
           !sharp_header_is_connection_specific(n);
}

static void deny(sharp_filter_t *f, const ea_config_t *c, sharp_ext_authz_response_t *resp)
{
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    sharp_counter_inc(w->stats, c->st_denied);
    count_cluster(f, c, "denied");
    if (c->charge_cluster_response_stats && s->route_cluster) {
        sharp_cluster_local_t *cl = NULL;
        sharp_cluster_t *rc = sharp_view_cluster(s->view, s->route_cluster, &cl);
        if (rc) sharp_cluster_count_response(rc, w->stats, resp->http_status);
    }
    const sharp_headers_t *set = &resp->set;
    const char **hdrs = sharp_calloc(2 * (size_t)set->n + 1, sizeof *hdrs);
    char **owned = sharp_calloc(2 * (size_t)set->n + 1, sizeof *owned);
    size_t k = 0;
    for (uint32_t i = 0; i < set->n; i++) {
        sharp_str_t n = sharp_headers_name(set, i), v = sharp_headers_value(set, i);
        if (!reply_header(n)) continue;
        owned[k] = sharp_strndup(n.p, n.len);
        hdrs[k] = owned[k];
        k++;
        owned[k] = sharp_strndup(v.p, v.len);
        hdrs[k] = owned[k];
        k++;
    }
    sharp_stream_send_local_reply_body(f, resp->http_status, resp->body.data, resp->body.len,
                                       SHARP_RF_UNAUTHORIZED_EXTERNAL_SERVICE, "ext_authz_denied",
                                       hdrs);
    for (size_t i = 0; i < k; i++)
        free(owned[i]);
    free(owned);
    free(hdrs);
}

/* The check failed, or the filter is disabled with deny_at_disable. */
static void deny_error(sharp_filter_t *f, const ea_config_t *c)
{
    sharp_stream_send_local_reply(f, c->status_on_error, NULL,
                                  SHARP_RF_UNAUTHORIZED_EXTERNAL_SERVICE, "ext_authz_error");
}

/* A Check call's answer: a gRPC status other than OK, or a body that is
 * not one CheckResponse, is an error (Envoy's onFailure). */
static void grpc_answer(const sharp_ext_authz_result_t *r, sharp_ext_authz_response_t *resp)
{
    resp->status = SHARP_EXT_AUTHZ_ERROR;
    int64_t gs;
    if (!sharp_grpc_response_status(r->trailers->n ? r->trailers : NULL, r->headers,
                                    sharp_headers_status(r->headers), &gs) ||
        gs != 0)
        return;
    sharp_grpc_frame_t fr;
    if (sharp_grpc_deframe((const uint8_t *)r->body->data, r->body->len, (uint32_t)r->body->len,
                           &fr) != SHARP_GRPC_FRAME_OK ||
        fr.compressed || fr.used != r->body->len)
        return;
    if (!sharp_ext_authz_grpc_response(fr.msg, fr.len, resp)) resp->status = SHARP_EXT_AUTHZ_ERROR;
}

/* Envoy's onComplete: the answer's dynamic metadata goes into the
 * stream's namespace envoy.filters.http.ext_authz, with the call's
 * duration in milliseconds as ext_authz_duration on an OK; with
 * enable_dynamic_metadata_ingestion false it is only counted. */
static void ingest_metadata(sharp_filter_t *f, const ea_config_t *c, sharp_ext_authz_response_t *resp)
{
    ea_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    if (c->ignore_metadata) {
        sharp_counter_inc(sharp_stream_worker(s)->stats, c->st_ignored_metadata);
        return;
    }
    if (resp->status == SHARP_EXT_AUTHZ_OK && st->start_ns) {
        uint64_t now = sharp_now_ns();
        sharp_md_value_t d = {.kind = SHARP_MD_NUMBER,
                              .number = (double)((now > st->start_ns ? now - st->start_ns : 0) / 1000000)};
        sharp_md_struct_set(&resp->metadata, "ext_authz_duration", 18, &d);
    }
    static const char ns[] = "envoy.filters.http.ext_authz";
    sharp_dynamic_metadata_t **md = &sharp_stream_info(s)->dynamic_metadata;
    for (uint32_t i = 0; i < resp->metadata.n; i++)
        sharp_dynamic_metadata_set(md, ns, sizeof ns - 1, resp->metadata.keys[i], strlen(resp->metadata.keys[i]),
                                   &resp->metadata.items[i]);
}

static void on_done(void *ctx, const sharp_ext_authz_result_t *r)
{
    sharp_filter_t *f = ctx;
    const ea_config_t *c = f->config;
    ea_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    st->call = NULL;
    sharp_ext_authz_response_t resp;
    sharp_ext_authz_response_init(&resp);
    if (r->failed)
        resp.status = SHARP_EXT_AUTHZ_ERROR;
    else if (c->grpc)
        grpc_answer(r, &resp);
    else
        sharp_ext_authz_http_response(&c->http, r->headers, r->body->data, r->body->len, &resp);
    if (resp.metadata.kind == SHARP_MD_STRUCT && resp.metadata.n) ingest_metadata(f, c, &resp);
    switch (resp.status) {
    case SHARP_EXT_AUTHZ_OK:
        sharp_debug(http, "[C%llu][S%llu] ext_authz: the authorization service allowed the request",
                    s->conn_id, s->id);
        sharp_ext_authz_apply_request(&resp, sharp_stream_request_headers(s));
        if (resp.response_add.n || resp.response_set.n || resp.response_add_if_absent.n ||
            resp.response_overwrite_if_exists.n) {
            st->resp = sharp_calloc(1, sizeof *st->resp);
            sharp_ext_authz_response_init(st->resp);
            sharp_headers_copy(&st->resp->response_add, &resp.response_add);
            sharp_headers_copy(&st->resp->response_set, &resp.response_set);
            sharp_headers_copy(&st->resp->response_add_if_absent, &resp.response_add_if_absent);
            sharp_headers_copy(&st->resp->response_overwrite_if_exists,
                               &resp.response_overwrite_if_exists);
        }
        count_cluster(f, c, "ok");
        sharp_counter_inc(w->stats, c->st_ok);
        sharp_ext_authz_response_free(&resp);
        sharp_stream_continue_decoding(f);
        return;
    case SHARP_EXT_AUTHZ_DENIED:
        sharp_debug(
            http,
            "[C%llu][S%llu] ext_authz: the authorization service denied the request (status %u)",
            s->conn_id, s->id, resp.http_status);
        deny(f, c, &resp);
        sharp_ext_authz_response_free(&resp);
        return;
    case SHARP_EXT_AUTHZ_ERROR:
        break;
    }
    sharp_ext_authz_response_free(&resp);
    count_cluster(f, c, "error");
    sharp_counter_inc(w->stats, c->st_error);
    if (c->failure_mode_allow) {
        sharp_debug(
            http,
            "[C%llu][S%llu] ext_authz: the check failed (%s), failure_mode_allow lets the request "
            "through",
            s->conn_id, s->id, r->failed ? r->reason : "a 5xx answer");
        sharp_counter_inc(w->stats, c->st_failure_mode_allowed);
        count_cluster(f, c, "failure_mode_allowed");
        if (c->failure_mode_allow_header_add)
            sharp_headers_add_cstr(sharp_stream_request_headers(s),
                                   "x-envoy-auth-failure-mode-allowed", "true");
        sharp_stream_continue_decoding(f);
        return;
    }
    sharp_debug(http, "[C%llu][S%llu] ext_authz: the check failed (%s): status %u", s->conn_id,
                s->id, r->failed ? r->reason : "a 5xx answer", c->status_on_error);
    deny_error(f, c);
}

/* ---- filter callbacks ---- */

static sharp_filter_status_t ea_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    const ea_config_t *c = f->config;
    ea_state_t *st = f->state;
    sharp_stream_t *s = f->stream;
    sharp_worker_t *w = sharp_stream_worker(s);
    /* Envoy checks nothing without a route */
    if (!sharp_stream_route(s)) return SHARP_FILTER_CONTINUE;
    const ea_route_config_t *rc = sharp_stream_route_config(f);
    if (rc && rc->disabled) return SHARP_FILTER_CONTINUE;
    if (c->has_enabled && !sharp_fraction_enabled(&c->enabled, sharp_worker_random(w))) {
        sharp_counter_inc(w->stats, c->st_disabled);
        if (c->has_deny_at_disable && sharp_runtime_get_bool(c->deny_key, c->deny_default)) {
            deny_error(f, c);
            return SHARP_FILTER_STOP;
        }
        return SHARP_FILTER_CONTINUE;
    }
    bool upgrade = s->upgrade_request;
    sharp_str_t m;
    if (sharp_headers_get_cstr(h, ":method", &m) && sharp_str_eq(m, "CONNECT", 7)) upgrade = true;
    if (c->with_body && !(rc && rc->disable_request_body_buffering) && !end_stream && !upgrade) {
        st->buffering = true;
        return SHARP_FILTER_STOP;
    }
    start_check(f);
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t ea_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                            bool end_stream)
{
    const ea_config_t *c = f->config;
    ea_state_t *st = f->state;
    if (!st->buffering) return SHARP_FILTER_CONTINUE;
    st->body_seen += n;
    if (st->body.len < c->max_request_bytes) {
        size_t take = c->max_request_bytes - st->body.len;
        sharp_sbuf_append(&st->body, p, n < take ? n : take);
    }
    bool full = st->body_seen >= c->max_request_bytes;
    if (!c->allow_partial && st->body_seen > c->max_request_bytes) {
        /* Envoy's decoder buffer limit, max_request_bytes without
         * allow_partial_message */
        st->buffering = false;
        sharp_sbuf_free(&st->body);
        sharp_stream_request_too_large(f);
        return SHARP_FILTER_STOP;
    }
    /* the connection manager stops reading at the stream's buffer limit:
     * a body held for the check cannot grow past it */
    if (!end_stream && !full && st->body_seen >= sharp_stream_buffer_limit(f->stream)) {
        if (!c->allow_partial) {
            st->buffering = false;
            sharp_sbuf_free(&st->body);
            sharp_stream_request_too_large(f);
            return SHARP_FILTER_STOP;
        }
        full = true;
    }
    if (end_stream || (c->allow_partial && full)) {
        st->buffering = false;
        st->with_body = true;
        st->partial = st->body_seen > st->body.len;
        start_check(f);
        /* the body waits for the answer behind the stop on headers, paused
         * at the buffer limit (Envoy's StopIterationAndWatermark) */
        return SHARP_FILTER_CONTINUE;
    }
    /* the body is buffered whole (Envoy's StopIterationAndBuffer) */
    return SHARP_FILTER_STOP;
}

static sharp_filter_status_t ea_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    ea_state_t *st = f->state;
    const sharp_ext_authz_response_t *r = st->resp;
    if (!r) return SHARP_FILTER_CONTINUE;
    /* Envoy's order: add, set, then (gRPC) add if absent, overwrite if exists */
    for (uint32_t i = 0; i < r->response_add.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->response_add, i),
                    v = sharp_headers_value(&r->response_add, i);
        sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
    for (uint32_t i = 0; i < r->response_set.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->response_set, i),
                    v = sharp_headers_value(&r->response_set, i);
        sharp_headers_set(h, n.p, n.len, v.p, v.len);
    }
    for (uint32_t i = 0; i < r->response_add_if_absent.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->response_add_if_absent, i),
                    v = sharp_headers_value(&r->response_add_if_absent, i);
        if (sharp_headers_find(h, n.p, n.len, 0) < 0) sharp_headers_add(h, n.p, n.len, v.p, v.len);
    }
    for (uint32_t i = 0; i < r->response_overwrite_if_exists.n; i++) {
        sharp_str_t n = sharp_headers_name(&r->response_overwrite_if_exists, i),
                    v = sharp_headers_value(&r->response_overwrite_if_exists, i);
        if (sharp_headers_find(h, n.p, n.len, 0) >= 0) sharp_headers_set(h, n.p, n.len, v.p, v.len);
    }
    return SHARP_FILTER_CONTINUE;
}

static void ea_on_destroy(sharp_filter_t *f)
{
    ea_state_t *st = f->state;
    if (st->call) sharp_ext_authz_call_cancel(st->call);
    st->call = NULL;
    sharp_sbuf_free(&st->body);
    if (st->resp) {
        sharp_ext_authz_response_free(st->resp);
        free(st->resp);
        st->resp = NULL;
    }
}

static uint64_t ea_buffered_bytes(sharp_filter_t *f)
{
    const ea_state_t *st = f->state;
    return st->body.len;
}

const sharp_filter_factory_t sharp_ext_authz_filter = {
    .name = "envoy.filters.http.ext_authz",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    .config_desc = &envoy__extensions__filters__http__ext_authz__v3__ext_authz__descriptor,
    .create_config = create_config,
    .destroy_config = config_free,
    .state_size = sizeof(ea_state_t),
    .decode_headers = ea_decode_headers,
    .decode_data = ea_decode_data,
    .encode_headers = ea_encode_headers,
    .on_destroy = ea_on_destroy,
    .buffered_bytes = ea_buffered_bytes,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    .route_config_desc =
        &envoy__extensions__filters__http__ext_authz__v3__ext_authz_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = route_config_free,
};
