/* filter.c: envoy.filters.http.stateful_session, Envoy's stateful session
 * filter.
 *
 * The session state (StatefulSession.session_state) is the cookie one
 * (envoy.http.stateful_session.cookie) or the header one
 * (envoy.http.stateful_session.header). The config is the most specific
 * StatefulSessionPerRoute of the request's route (disabled: the filter does
 * nothing; stateful_session: replaces the filter's), else the filter's.
 *
 * Request: a cookie state applies only when the request's path matches the
 * cookie's path (session.h). The address its value names ("ip:port")
 * becomes the stream's override host, with the config's strict; the router
 * takes that host when the route's cluster has it and it is healthy, else
 * balances as usual, or with strict answers 503 (filters/router/router.c).
 *
 * Response: when the stream had an upstream host other than the one the
 * request named (none, a dead one, one of another cluster), the state is
 * rewritten: Set-Cookie name="<value>"[; Max-Age][; Path]; HttpOnly with
 * an envoy.Cookie {address, expires = monotonic seconds + ttl}, or the
 * header set to base64 of the address. Local replies leave it alone. */
#include "filters/stateful_session/filter.h"
#include "filters/stateful_session/session.h"
#include "config/mapper.h"
#include "http/stream.h"

#include "envoy/extensions/filters/http/stateful_session/v3/stateful_session.pb-c.h"
#include "envoy/extensions/http/stateful_session/cookie/v3/cookie.pb-c.h"
#include "envoy/extensions/http/stateful_session/header/v3/header.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef Envoy__Extensions__Filters__Http__StatefulSession__V3__StatefulSession ss_pb_t;
typedef Envoy__Extensions__Filters__Http__StatefulSession__V3__StatefulSessionPerRoute
    ss_route_pb_t;
typedef Envoy__Extensions__Http__StatefulSession__Cookie__V3__CookieBasedSessionState cookie_pb_t;
typedef Envoy__Extensions__Http__StatefulSession__Header__V3__HeaderBasedSessionState header_pb_t;

typedef struct ss_config {
    bool disabled; /* a per-route StatefulSessionPerRoute.disabled */
    bool strict;
    bool cookie; /* the cookie state, else the header one */
    char *name;  /* cookie name, or header name (lower-case) */
    char *path;  /* cookie path, "" for none */
    uint64_t ttl_s;
} ss_config_t;

typedef struct ss_state {
    bool active;   /* the session applies to the stream */
    bool has_addr; /* the request named a host */
    char addr[SHARP_SESSION_ADDR_MAX + 1];
} ss_state_t;

static void config_free(ss_config_t *c)
{
    if (!c) return;
    free(c->name);
    free(c->path);
    free(c);
}

static ss_config_t *config_build(const ss_pb_t *pb, char *err, size_t errlen)
{
    const Envoy__Config__Core__V3__TypedExtensionConfig *tec = pb ? pb->session_state : NULL;
    if (!tec || !tec->typed_config || !tec->typed_config->type_url) {
        snprintf(err, errlen, "session_state: a typed_config is required");
        return NULL;
    }
    const char *url = tec->typed_config->type_url;
    const char *slash = strrchr(url, '/');
    const char *type = slash ? slash + 1 : url;
    const ProtobufCMessageDescriptor *desc;
    if (!strcmp(
            type,
            envoy__extensions__http__stateful_session__cookie__v3__cookie_based_session_state__descriptor
                .name))
        desc =
            &envoy__extensions__http__stateful_session__cookie__v3__cookie_based_session_state__descriptor;
    else if (
        !strcmp(
            type,
            envoy__extensions__http__stateful_session__header__v3__header_based_session_state__descriptor
                .name))
        desc =
            &envoy__extensions__http__stateful_session__header__v3__header_based_session_state__descriptor;
    else {
        snprintf(
            err, errlen,
            "session_state: unsupported session state '%s' (envoy.http.stateful_session.cookie, "
            "envoy.http.stateful_session.header)",
            type);
        return NULL;
    }
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *m = sharp_any_unpack(&tec->typed_config->base, desc, &e);
    if (!m) {
        snprintf(err, errlen, "session_state.typed_config: %s", e.msg);
        return NULL;
    }
    ss_config_t *c = sharp_calloc(1, sizeof *c);
    c->strict = pb->strict;
    if (desc ==
        &envoy__extensions__http__stateful_session__cookie__v3__cookie_based_session_state__descriptor) {
        const cookie_pb_t *ck = (const cookie_pb_t *)m;
        c->cookie = true;
        if (!ck->cookie || !ck->cookie->name || !ck->cookie->name[0]) {
            snprintf(
                err, errlen,
                "session_state.typed_config.cookie.name: Cookie key cannot be empty for cookie "
                "based stateful sessions");
            goto fail;
        }
        uint64_t ms = 0;
        if (ck->cookie->ttl && sharp_duration_ms(ck->cookie->ttl, &ms, err, errlen) < 0) goto fail;
        c->name = sharp_strdup(ck->cookie->name);
        c->path = sharp_strdup(ck->cookie->path ? ck->cookie->path : "");
        c->ttl_s = ms / 1000; /* std::chrono::seconds of the ttl */
    } else {
        const header_pb_t *hd = (const header_pb_t *)m;
        if (!hd->name || !hd->name[0]) {
            snprintf(
                err, errlen,
                "session_state.typed_config.name: Header name cannot be empty for header based "
                "stateful sessions");
            goto fail;
        }
        c->name = sharp_strdup(hd->name);
        for (char *q = c->name; *q; q++)
            if (*q >= 'A' && *q <= 'Z') *q = (char)(*q - 'A' + 'a');
        c->path = sharp_strdup("");
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return c;
fail:
    protobuf_c_message_free_unpacked(m, NULL);
    config_free(c);
    return NULL;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    (void)ctx;
    return config_build((const ss_pb_t *)msg, err, errlen);
}

static void destroy_config(void *p)
{
    config_free(p);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const ss_route_pb_t *pb = (const ss_route_pb_t *)msg;
    switch (pb->override_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__STATEFUL_SESSION__V3__STATEFUL_SESSION_PER_ROUTE__OVERRIDE_DISABLED:
        if (!pb->disabled) {
            snprintf(err, errlen, "disabled: value must equal true");
            return NULL;
        }
        ss_config_t *c = sharp_calloc(1, sizeof *c);
        c->disabled = true;
        return c;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__STATEFUL_SESSION__V3__STATEFUL_SESSION_PER_ROUTE__OVERRIDE_STATEFUL_SESSION:
        return config_build(pb->stateful_session, err, errlen);
    default:
        snprintf(err, errlen, "override: one of disabled or stateful_session is required");
        return NULL;
    }
}

static sharp_filter_status_t ss_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    const ss_config_t *c = sharp_stream_route_config(f);
    if (!c) c = f->config;
    ss_state_t *st = f->state;
    if (c->disabled) return SHARP_FILTER_CONTINUE;
    sharp_str_t v;
    if (c->cookie) {
        sharp_str_t path = {"", 0};
        sharp_headers_get_cstr(h, ":path", &path);
        if (!sharp_session_path_match(c->path, strlen(c->path), path.p, path.len))
            return SHARP_FILTER_CONTINUE;
        st->active = true;
        if (sharp_headers_cookie_value(h, c->name, strlen(c->name), &v))
            st->has_addr =
                sharp_session_cookie_decode(v.p, v.len, sharp_now_ns() / 1000000000ull, st->addr);
    } else {
        st->active = true;
        if (sharp_headers_get_cstr(h, c->name, &v))
            st->has_addr = sharp_session_header_decode(v.p, v.len, st->addr);
    }
    if (st->has_addr) {
        sharp_stream_t *s = f->stream;
        SHARP_COPY_CSTR(s->override_host, st->addr);
        s->override_host_strict = c->strict;
    }
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t ss_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    ss_state_t *st = f->state;
    if (!st->active) return SHARP_FILTER_CONTINUE;
    const ss_config_t *c = sharp_stream_route_config(f);
    if (!c) c = f->config;
    if (c->disabled) return SHARP_FILTER_CONTINUE;
    const char *host = f->stream->info.upstream_host;
    if (!host[0] || (st->has_addr && !strcmp(host, st->addr))) return SHARP_FILTER_CONTINUE;
    sharp_sbuf_t val = {0}, line = {0};
    if (c->cookie) {
        uint64_t expires = c->ttl_s ? sharp_now_ns() / 1000000000ull + c->ttl_s : 0;
        sharp_session_cookie_encode(&val, host, strlen(host), expires);
        sharp_session_set_cookie(&line, c->name, val.data, val.len, c->ttl_s, c->path);
        sharp_headers_add(h, "set-cookie", 10, line.data, line.len);
    } else {
        sharp_session_header_encode(&val, host, strlen(host));
        sharp_headers_set(h, c->name, strlen(c->name), val.data, val.len);
    }
    sharp_sbuf_free(&val);
    sharp_sbuf_free(&line);
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_stateful_session_filter = {
    .name = "envoy.filters.http.stateful_session",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
    .config_desc =
        &envoy__extensions__filters__http__stateful_session__v3__stateful_session__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(ss_state_t),
    .decode_headers = ss_decode_headers,
    .encode_headers = ss_encode_headers,
    .route_type_url = "type.googleapis.com/"
                      "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
    .route_config_desc =
        &envoy__extensions__filters__http__stateful_session__v3__stateful_session_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_config,
};
