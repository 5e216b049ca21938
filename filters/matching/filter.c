/* filter.c: envoy.extensions.common.matching.v3.ExtensionWithMatcher around
 * an HTTP filter (Envoy's match delegate filter), and the composite filter
 * (envoy.filters.http.composite) it drives.
 *
 * The wrapper's config holds the wrapped filter's factory and config and a
 * matcher (proxy/matcher.h) built once. Per stream it runs the wrapped
 * filter as a filter of its own (same stream and chain index, so the
 * wrapped filter's continue/local reply calls act at the wrapper's place)
 * and evaluates the matcher as Envoy's DelegatingStreamFilter does: on the
 * request headers, request trailers, response headers and response
 * trailers, until it is decided. A SkipFilter action skips the wrapped
 * filter from then on, for the rest of the stream (what it already saw
 * stays seen); an ExecuteFilterAction goes to the composite filter, which
 * from then on runs the action's filter for the stream. A wrapper without
 * a matcher skips its filter (Envoy's "no match tree: skip"). Undecided
 * (an input not known yet, such as response headers while the request is
 * decoded) the wrapped filter runs. */
#include "filters/matching/filter.h"
#include "http/stream.h"
#include "log.h"
#include "matcher.h"
#include "server.h"
#include "stats.h"
#include "worker.h"

#include "envoy/config/core/v3/extension.pb-c.h"
#include "envoy/extensions/common/matching/v3/extension_matcher.pb-c.h"
#include "envoy/extensions/filters/common/matcher/action/v3/skip_action.pb-c.h"
#include "envoy/extensions/filters/http/composite/v3/composite.pb-c.h"
#include "config/mapper.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a filter run inside another one ---- */

/* The inner filter's instance: made when first used, its state allocated
 * then (its size is its factory's). */
typedef struct {
    sharp_filter_t f;
    bool started;
} inner_t;

static void inner_start(inner_t *in, sharp_filter_t *outer, const sharp_filter_factory_t *fac,
                        const void *config)
{
    if (in->started) return;
    in->started = true;
    in->f.factory = fac;
    in->f.config = config;
    in->f.stream = outer->stream;
    in->f.index = outer->index;
    in->f.name = outer->name;
    in->f.state = fac->state_size ? sharp_calloc(1, fac->state_size) : NULL;
}

static sharp_filter_status_t inner_decode_headers(inner_t *in, sharp_headers_t *h, bool end)
{
    return in->f.factory->decode_headers ? in->f.factory->decode_headers(&in->f, h, end)
                                         : SHARP_FILTER_CONTINUE;
}
static sharp_filter_status_t inner_decode_data(inner_t *in, const char *p, size_t n, bool end)
{
    return in->f.factory->decode_data ? in->f.factory->decode_data(&in->f, p, n, end)
                                      : SHARP_FILTER_CONTINUE;
}
static sharp_filter_status_t inner_decode_trailers(inner_t *in, sharp_headers_t *t)
{
    /* as the connection manager does: a filter without decode_trailers
     * sees the end of the body */
    if (in->f.factory->decode_trailers) return in->f.factory->decode_trailers(&in->f, t);
    return inner_decode_data(in, NULL, 0, true);
}
static sharp_filter_status_t inner_encode_headers(inner_t *in, sharp_headers_t *h, bool end)
{
    return in->f.factory->encode_headers ? in->f.factory->encode_headers(&in->f, h, end)
                                         : SHARP_FILTER_CONTINUE;
}
static sharp_filter_status_t inner_encode_data(inner_t *in, const char *p, size_t n, bool end)
{
    return in->f.factory->encode_data ? in->f.factory->encode_data(&in->f, p, n, end)
                                      : SHARP_FILTER_CONTINUE;
}
static void inner_watermark(inner_t *in, bool above)
{
    if (in->started && in->f.factory->on_downstream_watermark)
        in->f.factory->on_downstream_watermark(&in->f, above);
}
static void inner_complete(inner_t *in, const sharp_stream_info_t *si)
{
    if (in->started && in->f.factory->on_complete) in->f.factory->on_complete(&in->f, si);
}
static void inner_destroy(inner_t *in)
{
    if (!in->started) return;
    if (in->f.factory->on_destroy) in->f.factory->on_destroy(&in->f);
    free(in->f.state);
    in->f.state = NULL;
    in->started = false;
}
static uint64_t inner_buffered(inner_t *in)
{
    return in->started && in->f.factory->buffered_bytes ? in->f.factory->buffered_bytes(&in->f) : 0;
}

/* ---- actions ---- */

typedef enum { ACTION_SKIP, ACTION_EXECUTE } action_kind_t;

typedef struct {
    action_kind_t kind;
    const sharp_filter_factory_t *factory; /* ACTION_EXECUTE: the filter to run, and its config */
    void *config;
} match_action_t;

static void action_free(void *p)
{
    match_action_t *a = p;
    if (a->factory && a->factory->destroy_config && a->config)
        a->factory->destroy_config(a->config);
    free(a);
}

typedef struct {
    const sharp_filter_factory_t *inner; /* the wrapped filter */
    sharp_filter_config_ctx_t *ctx;
} action_ctx_t;

static const char skip_type[] = "envoy.extensions.filters.common.matcher.action.v3.SkipFilter";
static const char execute_type[] = "envoy.extensions.filters.http.composite.v3.ExecuteFilterAction";

/* The filter of an ExecuteFilterAction's typed_config, with its config. */
static int
make_execute(const Envoy__Extensions__Filters__Http__Composite__V3__ExecuteFilterAction *pb,
             sharp_filter_config_ctx_t *ctx, const char *path, match_action_t *a, char *err,
             size_t errlen)
{
    if (pb->dynamic_config) {
        snprintf(err, errlen,
                 "%s.dynamic_config: not supported (filter configs from an extension config "
                 "discovery service)",
                 path);
        return -1;
    }
    if (pb->sample_percent) {
        snprintf(err, errlen, "%s.sample_percent: not supported", path);
        return -1;
    }
    const Envoy__Config__Core__V3__TypedExtensionConfig *tc = pb->typed_config;
    if (!tc || !tc->typed_config) {
        snprintf(err, errlen, "%s: one of typed_config and dynamic_config is required", path);
        return -1;
    }
    const sharp_filter_factory_t *fac = sharp_filter_find_by_type_url(
        tc->typed_config->type_url, strlen(tc->typed_config->type_url));
    if (!fac) {
        snprintf(err, errlen, "%s.typed_config: no HTTP filter handles typed_config type '%s'",
                 path, tc->typed_config->type_url);
        return -1;
    }
    if (fac->terminal) {
        snprintf(err, errlen,
                 "%s.typed_config: the terminal filter '%s' cannot run in the composite filter",
                 path, fac->name);
        return -1;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *msg = sharp_any_unpack(&tc->typed_config->base, NULL, &e);
    if (!msg) {
        snprintf(err, errlen, "%s.typed_config: %s", path, e.msg);
        return -1;
    }
    char ferr[512] = "";
    void *cfg = fac->create_config ? fac->create_config(msg, ctx, ferr, sizeof ferr) : NULL;
    protobuf_c_message_free_unpacked(msg, NULL);
    if (fac->create_config && !cfg) {
        snprintf(err, errlen, "%s.typed_config: %s", path,
                 ferr[0] ? ferr : "invalid filter config");
        return -1;
    }
    a->factory = fac;
    a->config = cfg;
    return 0;
}

static void *make_action(const char *name, const char *type_url, const ProtobufCMessage *msg,
                         void *arg, const char *path, char *err, size_t errlen)
{
    (void)name;
    action_ctx_t *ac = arg;
    const char *t = strrchr(type_url, '/');
    t = t ? t + 1 : type_url;
    match_action_t *a = sharp_calloc(1, sizeof *a);
    if (strcmp(t, skip_type) == 0) {
        a->kind = ACTION_SKIP;
        return a;
    }
    if (strcmp(t, execute_type) == 0) {
        if (!ac->inner) {
            snprintf(err, errlen, "%s: ExecuteFilterAction in a per-route matcher is not supported",
                     path);
            free(a);
            return NULL;
        }
        if (ac->inner != &sharp_composite_filter) {
            snprintf(err, errlen,
                     "%s: ExecuteFilterAction is an action of the composite filter "
                     "(envoy.filters.http.composite), not of '%s'",
                     path, ac->inner->name);
            free(a);
            return NULL;
        }
        a->kind = ACTION_EXECUTE;
        if (make_execute(
                (const Envoy__Extensions__Filters__Http__Composite__V3__ExecuteFilterAction *)msg,
                ac->ctx, path, a, err, errlen) < 0) {
            free(a);
            return NULL;
        }
        return a;
    }
    snprintf(
        err, errlen,
        "%s: action '%s' is not supported (SkipFilter, and ExecuteFilterAction for the composite "
        "filter)",
        path, t);
    free(a);
    return NULL;
}

/* ---- the composite filter ---- */

typedef struct {
    char *prefix;
    sharp_stats_t *stats;
    sharp_stat_id_t st_success;
} composite_config_t;

typedef struct {
    inner_t deleg; /* the action's filter, once a match picked one */
} composite_state_t;

static void *composite_create(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx,
                              char *err, size_t errlen)
{
    (void)msg;
    (void)err;
    (void)errlen;
    composite_config_t *c = sharp_calloc(1, sizeof *c);
    sharp_sbuf_t b = {0};
    sharp_sbuf_printf(&b, "http.%s.composite", ctx->stat_prefix ? ctx->stat_prefix : "");
    c->prefix = b.data;
    c->stats = ctx->server->stats;
    c->st_success = sharp_stats_counterf(c->stats, "%s.filter_delegation_success", c->prefix);
    sharp_stats_counterf(c->stats, "%s.filter_delegation_error", c->prefix);
    return c;
}

static void composite_destroy(void *p)
{
    composite_config_t *c = p;
    if (!c) return;
    free(c->prefix);
    free(c);
}

/* Envoy's Composite::Filter::onMatchCallback: the action's filter is the
 * stream's delegated filter from now on. */
static void composite_on_action(sharp_filter_t *f, const match_action_t *a)
{
    composite_state_t *st = f->state;
    const composite_config_t *c = f->config;
    if (st->deleg.started) return;
    inner_start(&st->deleg, f, a->factory, a->config);
    sharp_counter_inc(sharp_stream_worker(f->stream)->stats, c->st_success);
}

#define COMPOSITE_DELEGATE(call, dflt)                                                             \
    composite_state_t *st = f->state;                                                              \
    return st->deleg.started ? call : dflt

static sharp_filter_status_t composite_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                      bool end)
{
    COMPOSITE_DELEGATE(inner_decode_headers(&st->deleg, h, end), SHARP_FILTER_CONTINUE);
}
static sharp_filter_status_t composite_decode_data(sharp_filter_t *f, const char *p, size_t n,
                                                   bool end)
{
    COMPOSITE_DELEGATE(inner_decode_data(&st->deleg, p, n, end), SHARP_FILTER_CONTINUE);
}
static sharp_filter_status_t composite_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    COMPOSITE_DELEGATE(inner_decode_trailers(&st->deleg, t), SHARP_FILTER_CONTINUE);
}
static sharp_filter_status_t composite_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                                      bool end)
{
    COMPOSITE_DELEGATE(inner_encode_headers(&st->deleg, h, end), SHARP_FILTER_CONTINUE);
}
static sharp_filter_status_t composite_encode_data(sharp_filter_t *f, const char *p, size_t n,
                                                   bool end)
{
    COMPOSITE_DELEGATE(inner_encode_data(&st->deleg, p, n, end), SHARP_FILTER_CONTINUE);
}
static void composite_watermark(sharp_filter_t *f, bool above)
{
    composite_state_t *st = f->state;
    inner_watermark(&st->deleg, above);
}
static void composite_complete(sharp_filter_t *f, const sharp_stream_info_t *si)
{
    composite_state_t *st = f->state;
    inner_complete(&st->deleg, si);
}
static void composite_on_destroy(sharp_filter_t *f)
{
    composite_state_t *st = f->state;
    inner_destroy(&st->deleg);
}
static uint64_t composite_buffered(sharp_filter_t *f)
{
    composite_state_t *st = f->state;
    return inner_buffered(&st->deleg);
}

const sharp_filter_factory_t sharp_composite_filter = {
    .name = "envoy.filters.http.composite",
    .type_url = "type.googleapis.com/envoy.extensions.filters.http.composite.v3.Composite",
    .config_desc = &envoy__extensions__filters__http__composite__v3__composite__descriptor,
    .create_config = composite_create,
    .destroy_config = composite_destroy,
    .state_size = sizeof(composite_state_t),
    .decode_headers = composite_decode_headers,
    .decode_data = composite_decode_data,
    .decode_trailers = composite_decode_trailers,
    .encode_headers = composite_encode_headers,
    .encode_data = composite_encode_data,
    .on_downstream_watermark = composite_watermark,
    .on_complete = composite_complete,
    .on_destroy = composite_on_destroy,
    .buffered_bytes = composite_buffered,
};

/* ---- ExtensionWithMatcher ---- */

typedef struct {
    const sharp_filter_factory_t *inner;
    void *inner_config;
    sharp_matcher_t *matcher; /* NULL: the filter is always skipped */
} emw_config_t;

typedef struct {
    inner_t inner;
    bool decided; /* the matcher's result is final */
    bool skip;    /* SkipFilter: the wrapped filter is out of the stream */
    const sharp_headers_t *req, *req_trailers, *resp, *resp_trailers;
    /* the response headers kept while undecided after them (the caller's
     * map may not outlive encode_headers); has_copy: initialized */
    sharp_headers_t resp_copy;
    bool has_copy;
    const sharp_matcher_t *route_matcher; /* the route's ExtensionWithMatcherPerRoute */
} emw_state_t;

static void emw_destroy_config(void *p)
{
    emw_config_t *c = p;
    if (!c) return;
    sharp_matcher_free(c->matcher);
    if (c->inner && c->inner->destroy_config && c->inner_config)
        c->inner->destroy_config(c->inner_config);
    free(c);
}

static void *emw_create(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                        size_t errlen)
{
    const Envoy__Extensions__Common__Matching__V3__ExtensionWithMatcher *pb =
        (const Envoy__Extensions__Common__Matching__V3__ExtensionWithMatcher *)msg;
    if (!pb || !pb->extension_config) {
        snprintf(err, errlen, "extension_config: value is required");
        return NULL;
    }
    const Envoy__Config__Core__V3__TypedExtensionConfig *tc = pb->extension_config;
    if (!tc->typed_config) {
        snprintf(err, errlen, "extension_config.typed_config: value is required");
        return NULL;
    }
    const sharp_filter_factory_t *fac = sharp_filter_find_by_type_url(
        tc->typed_config->type_url, strlen(tc->typed_config->type_url));
    if (!fac) {
        snprintf(err, errlen, "extension_config: no HTTP filter handles typed_config type '%s'",
                 tc->typed_config->type_url);
        return NULL;
    }
    if (fac->terminal) {
        snprintf(err, errlen,
                 "extension_config: the terminal filter '%s' cannot be wrapped with a matcher",
                 fac->name);
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *inner_msg = sharp_any_unpack(&tc->typed_config->base, NULL, &e);
    if (!inner_msg) {
        snprintf(err, errlen, "extension_config.typed_config: %s", e.msg);
        return NULL;
    }
    emw_config_t *c = sharp_calloc(1, sizeof *c);
    c->inner = fac;
    char ferr[512] = "";
    c->inner_config =
        fac->create_config ? fac->create_config(inner_msg, ctx, ferr, sizeof ferr) : NULL;
    protobuf_c_message_free_unpacked(inner_msg, NULL);
    if (fac->create_config && !c->inner_config) {
        snprintf(err, errlen, "extension_config.typed_config: %s",
                 ferr[0] ? ferr : "invalid filter config");
        free(c);
        return NULL;
    }
    /* as Envoy: xds_matcher, else the deprecated matcher */
    action_ctx_t ac = {.inner = fac, .ctx = ctx};
    if (pb->xds_matcher)
        c->matcher = sharp_matcher_build(pb->xds_matcher, "xds_matcher", make_action, action_free,
                                         &ac, err, errlen);
    else if (pb->matcher)
        c->matcher = sharp_matcher_build_envoy(&pb->matcher->base, "matcher", make_action,
                                               action_free, &ac, err, errlen);
    if ((pb->xds_matcher || pb->matcher) && !c->matcher) {
        emw_destroy_config(c);
        return NULL;
    }
    return c;
}

/* ExtensionWithMatcherPerRoute: its matcher replaces the filter's for the
 * route's streams. As Envoy, its inputs may only be request headers. */
static void *emw_route_create(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const Envoy__Extensions__Common__Matching__V3__ExtensionWithMatcherPerRoute *pb =
        (const Envoy__Extensions__Common__Matching__V3__ExtensionWithMatcherPerRoute *)msg;
    Xds__Type__Matcher__V3__Matcher empty = XDS__TYPE__MATCHER__V3__MATCHER__INIT;
    action_ctx_t ac = {0};
    sharp_matcher_t *m =
        sharp_matcher_build(pb && pb->xds_matcher ? pb->xds_matcher : &empty, "xds_matcher",
                            make_action, action_free, &ac, err, errlen);
    if (!m) return NULL;
    static const char *const names[] = {
        "HttpRequestHeaderMatchInput", "HttpRequestTrailerMatchInput",
        "HttpResponseHeaderMatchInput", "HttpResponseTrailerMatchInput",
        "HttpRequestQueryParamMatchInput"};
    uint32_t other = sharp_matcher_inputs(m) & ~(uint32_t)SHARP_MATCH_IN_REQUEST_HEADER;
    if (other) {
        snprintf(
            err, errlen,
            "requirement violation while creating match tree: data input typeUrl "
            "type.googleapis.com/envoy.type.matcher.v3.%s not permitted according to allowlist",
            names[__builtin_ctz(other)]);
        sharp_matcher_free(m);
        return NULL;
    }
    return m;
}

static void emw_route_destroy(void *p)
{
    sharp_matcher_free(p);
}

/* Envoy's FilterMatchState::evaluateMatchTree; the matcher is the route's
 * (ExtensionWithMatcherPerRoute) when it has one, picked on the request
 * headers, else the filter's. */
static void emw_evaluate(sharp_filter_t *f, emw_state_t *st)
{
    const emw_config_t *c = f->config;
    if (st->decided) return;
    const sharp_matcher_t *matcher = st->route_matcher ? st->route_matcher : c->matcher;
    if (!matcher) {
        st->decided = st->skip = true;
        return;
    }
    sharp_match_data_t d = {.request_headers = st->req,
                            .request_trailers = st->req_trailers,
                            .response_headers = st->resp,
                            .response_trailers = st->resp_trailers};
    const void *action = NULL;
    sharp_match_result_t r = sharp_matcher_evaluate(matcher, &d, &action);
    if (r == SHARP_MATCH_INSUFFICIENT) return;
    st->decided = true;
    if (r != SHARP_MATCH_ACTION) return;
    const match_action_t *a = action;
    if (a->kind == ACTION_SKIP) {
        st->skip = true;
    } else {
        /* the wrapped filter is the composite filter (checked at config time) */
        inner_start(&st->inner, f, c->inner, c->inner_config);
        composite_on_action(&st->inner.f, a);
    }
}

static inner_t *emw_inner(sharp_filter_t *f, emw_state_t *st)
{
    const emw_config_t *c = f->config;
    inner_start(&st->inner, f, c->inner, c->inner_config);
    return &st->inner;
}

static sharp_filter_status_t emw_decode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end)
{
    emw_state_t *st = f->state;
    st->req = h;
    st->route_matcher = sharp_stream_route_config(f);
    emw_evaluate(f, st);
    if (st->skip) return SHARP_FILTER_CONTINUE;
    return inner_decode_headers(emw_inner(f, st), h, end);
}

static sharp_filter_status_t emw_decode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    emw_state_t *st = f->state;
    if (st->skip) return SHARP_FILTER_CONTINUE;
    return inner_decode_data(emw_inner(f, st), p, n, end);
}

static sharp_filter_status_t emw_decode_trailers(sharp_filter_t *f, sharp_headers_t *t)
{
    emw_state_t *st = f->state;
    st->req_trailers = t;
    emw_evaluate(f, st);
    if (st->skip) return SHARP_FILTER_CONTINUE;
    return inner_decode_trailers(emw_inner(f, st), t);
}

static sharp_filter_status_t emw_encode_headers(sharp_filter_t *f, sharp_headers_t *h, bool end)
{
    emw_state_t *st = f->state;
    st->resp = h;
    emw_evaluate(f, st);
    if (!st->decided && h != &f->stream->resp) {
        /* response trailers may still decide: keep what they will need */
        if (!st->has_copy) sharp_headers_init(&st->resp_copy);
        st->has_copy = true;
        sharp_headers_copy(&st->resp_copy, h);
        st->resp = &st->resp_copy;
    }
    if (st->skip) return SHARP_FILTER_CONTINUE;
    return inner_encode_headers(emw_inner(f, st), h, end);
}

static sharp_filter_status_t emw_encode_data(sharp_filter_t *f, const char *p, size_t n, bool end)
{
    emw_state_t *st = f->state;
    /* response trailers reach the filters as the end of the body; the
     * matcher sees them then (Envoy evaluates on encodeTrailers) */
    if (end && !n && f->stream->has_resp_trailers) {
        st->resp_trailers = &f->stream->resp_trailers;
        emw_evaluate(f, st);
    }
    if (st->skip) return SHARP_FILTER_CONTINUE;
    return inner_encode_data(emw_inner(f, st), p, n, end);
}

static void emw_watermark(sharp_filter_t *f, bool above)
{
    emw_state_t *st = f->state;
    inner_watermark(&st->inner, above);
}
static void emw_complete(sharp_filter_t *f, const sharp_stream_info_t *si)
{
    emw_state_t *st = f->state;
    inner_complete(&st->inner, si);
}
static void emw_on_destroy(sharp_filter_t *f)
{
    emw_state_t *st = f->state;
    inner_destroy(&st->inner);
    if (st->has_copy) sharp_headers_free(&st->resp_copy);
}
static uint64_t emw_buffered(sharp_filter_t *f)
{
    emw_state_t *st = f->state;
    return inner_buffered(&st->inner);
}

static const sharp_filter_factory_t *emw_wrapped(const void *config)
{
    const emw_config_t *c = config;
    return c->inner;
}

const sharp_filter_factory_t sharp_match_delegate_filter = {
    .name = "envoy.filters.http.match_delegate",
    .type_url = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
    .config_desc = &envoy__extensions__common__matching__v3__extension_with_matcher__descriptor,
    .create_config = emw_create,
    .destroy_config = emw_destroy_config,
    .state_size = sizeof(emw_state_t),
    .decode_headers = emw_decode_headers,
    .decode_data = emw_decode_data,
    .decode_trailers = emw_decode_trailers,
    .encode_headers = emw_encode_headers,
    .encode_data = emw_encode_data,
    .on_downstream_watermark = emw_watermark,
    .on_complete = emw_complete,
    .on_destroy = emw_on_destroy,
    .buffered_bytes = emw_buffered,
    .route_type_url =
        "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcherPerRoute",
    .route_config_desc =
        &envoy__extensions__common__matching__v3__extension_with_matcher_per_route__descriptor,
    .create_route_config = emw_route_create,
    .destroy_route_config = emw_route_destroy,
    .wrapped_factory = emw_wrapped,
};
