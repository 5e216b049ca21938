/* matcher.c: Envoy's generic matching API. See matcher.h. */
#include "matcher.h"
#include "config/mapper.h"
#include "http/route.h"
#include "log.h"
#include "sbuf.h"

#include "envoy/extensions/matching/common_inputs/network/v3/network_inputs.pb-c.h"
#include "envoy/type/matcher/v3/http_inputs.pb-c.h"
#include "xds/type/matcher/v3/ip.pb-c.h"
#include "xds/type/matcher/v3/matcher.pb-c.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef Xds__Type__Matcher__V3__Matcher matcher_pb_t;
typedef Xds__Type__Matcher__V3__Matcher__OnMatch on_match_pb_t;
typedef Xds__Type__Matcher__V3__Matcher__MatcherList__Predicate predicate_pb_t;
typedef Xds__Type__Matcher__V3__Matcher__MatcherTree__MatchMap match_map_pb_t;

typedef enum {
    INPUT_REQUEST_HEADER,
    INPUT_REQUEST_TRAILER,
    INPUT_RESPONSE_HEADER,
    INPUT_RESPONSE_TRAILER,
    INPUT_QUERY_PARAM,
    /* the network inputs (sharp_matcher_build_network) */
    INPUT_DESTINATION_IP,
    INPUT_DESTINATION_PORT,
    INPUT_SOURCE_IP,
    INPUT_SOURCE_PORT,
    INPUT_DIRECT_SOURCE_IP,
    INPUT_SOURCE_TYPE,
    INPUT_SERVER_NAME,
    INPUT_TRANSPORT_PROTOCOL,
    INPUT_APPLICATION_PROTOCOL,
    INPUT_FILTER_STATE,
} input_kind_t;

typedef struct {
    input_kind_t kind;
    char *name; /* header name (lower-case), query parameter or filter state key */
    size_t name_len;
} input_t;

typedef struct on_match {
    bool set;
    sharp_matcher_t *matcher; /* nested matcher, or */
    void *action;             /* the action */
} on_match_t;

typedef enum { PRED_SINGLE, PRED_OR, PRED_AND, PRED_NOT } pred_kind_t;

typedef struct predicate {
    pred_kind_t kind;
    input_t input;             /* PRED_SINGLE */
    sharp_string_matcher_t sm; /* PRED_SINGLE */
    struct predicate *sub;     /* PRED_OR/AND: n of them; PRED_NOT: one */
    uint32_t nsub;
} predicate_t;

typedef struct {
    predicate_t pred;
    on_match_t on_match;
} field_matcher_t;

typedef struct {
    char *key;
    size_t len;
    on_match_t on_match;
} map_entry_t;

/* One range of an IPMatcher: its range matcher's on_match is shared by
 * all its ranges (ip_om[om]). */
typedef struct {
    sharp_cidr_t cidr;
    uint32_t om;
    bool exclusive;
} ip_range_t;

struct sharp_matcher {
    bool is_tree;
    /* list */
    field_matcher_t *fm;
    uint32_t nfm;
    /* tree */
    input_t input;
    bool prefix; /* prefix_match_map: entries sorted by key length, longest first */
    map_entry_t *map;
    uint32_t nmap;
    /* custom_match IPMatcher: ranges sorted by prefix length, longest
     * first, then in the order of the config (Envoy's TrieMatcher) */
    bool ip;
    ip_range_t *ranges;
    uint32_t nranges;
    on_match_t *ip_om;
    uint32_t nip_om;
    on_match_t on_no_match;
    void (*free_action)(void *);
    uint32_t inputs; /* SHARP_MATCH_IN_* of the whole tree (the root's) */
};

typedef struct {
    sharp_match_action_fn make_action;
    void (*free_action)(void *);
    void *arg;
    char *err;
    size_t errlen;
    uint32_t inputs;
    int depth;
    bool legacy;  /* from envoy.config.common.matcher.v3.Matcher */
    bool network; /* the network inputs, not HTTP's */
    uint32_t net_flags;  /* SHARP_MATCH_NET_* */
    char *epath;         /* the refused field's path apart from err's message, or NULL: "path: message" */
    size_t epathlen;
} build_t;

#define MAX_DEPTH 32

static int fail(build_t *b, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(build_t *b, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b->epath) {
        snprintf(b->epath, b->epathlen, "%s", path);
        snprintf(b->err, b->errlen, "%s", msg);
    } else {
        snprintf(b->err, b->errlen, "%s: %s", path, msg);
    }
    return -1;
}

/* make_action refused the action at `path` with "PATH: message", PATH
 * being path or a field below it: apart for a caller that wants them so.
 * PATH is found after path's own text, which may hold ": " (a map key). */
static void action_refused(build_t *b, const char *path)
{
    if (!b->epath) return;
    size_t n = strlen(path);
    const char *rest = strncmp(b->err, path, n) == 0 ? b->err + n : NULL;
    const char *sep = rest ? strstr(rest, ": ") : NULL;
    if (!sep) { /* a message alone: the action's */
        snprintf(b->epath, b->epathlen, "%s", path);
        return;
    }
    snprintf(b->epath, b->epathlen, "%.*s", (int)(sep - b->err), b->err);
    memmove(b->err, sep + 2, strlen(sep + 2) + 1);
}

/* ---- evaluation ---- */

typedef enum { AVAIL_NONE, AVAIL_ABSENT, AVAIL_VALUE } avail_t;

/* Envoy's PercentEncoding::decode of p[0, n) into b. */
static void pct_decode(sharp_sbuf_t *b, const char *p, size_t n)
{
    sharp_sbuf_reset(b);
    sharp_sbuf_reserve(b, n + 1);
    b->len = sharp_percent_decode(p, n, b->data);
}

/* An address or port input's text, on the evaluation's stack: no
 * allocation per connection or datagram. */
#define VALUE_MAX INET6_ADDRSTRLEN

static avail_t ip_value(const struct sockaddr *sa, char *buf, sharp_str_t *out)
{
    if (!sa) return AVAIL_ABSENT;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, VALUE_MAX);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, VALUE_MAX);
    else
        return AVAIL_ABSENT; /* not an IP address (a pipe): no value, as Envoy */
    *out = (sharp_str_t){buf, strlen(buf)};
    return AVAIL_VALUE;
}

static avail_t port_value(const struct sockaddr *sa, char *buf, sharp_str_t *out)
{
    unsigned port;
    if (sa && sa->sa_family == AF_INET)
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    else if (sa && sa->sa_family == AF_INET6)
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    else
        return AVAIL_ABSENT;
    int n = snprintf(buf, VALUE_MAX, "%u", port);
    *out = (sharp_str_t){buf, (size_t)n};
    return AVAIL_VALUE;
}

static bool ip_input(input_kind_t k)
{
    return k == INPUT_DESTINATION_IP || k == INPUT_SOURCE_IP || k == INPUT_DIRECT_SOURCE_IP;
}

/* The address an IP input reads. */
static const struct sockaddr *ip_input_addr(input_kind_t k, const sharp_fc_conn_t *c)
{
    if (k == INPUT_DESTINATION_IP) return c->local;
    if (k == INPUT_SOURCE_IP) return c->remote;
    return c->direct_remote ? c->direct_remote : c->remote;
}

static avail_t str_value(const char *v, sharp_str_t *out)
{
    if (!v || !v[0]) return AVAIL_ABSENT;
    *out = (sharp_str_t){v, strlen(v)};
    return AVAIL_VALUE;
}

/* A network input (Envoy's source/common/network/matching/inputs.cc):
 * always known once the connection's chain is chosen; an empty server
 * name or protocol, or an address that is not IP, is no value. */
static avail_t net_input_get(const input_t *in, const sharp_fc_conn_t *c, sharp_sbuf_t *tmp, char *buf,
                             sharp_str_t *out)
{
    if (!c) return AVAIL_NONE;
    switch (in->kind) {
    case INPUT_DESTINATION_IP:
    case INPUT_SOURCE_IP:
    case INPUT_DIRECT_SOURCE_IP:
        return ip_value(ip_input_addr(in->kind, c), buf, out);
    case INPUT_DESTINATION_PORT:
        return port_value(c->local, buf, out);
    case INPUT_SOURCE_PORT:
        return port_value(c->remote, buf, out);
    case INPUT_SOURCE_TYPE:
        return str_value(sharp_fc_conn_is_local(c) ? "local" : NULL, out);
    case INPUT_SERVER_NAME:
        return str_value(c->server_name, out);
    case INPUT_TRANSPORT_PROTOCOL:
        return str_value(c->transport_protocol, out);
    case INPUT_APPLICATION_PROTOCOL:
        /* 'h2','http/1.1' */
        if (!c->napplication_protocols) return AVAIL_ABSENT;
        sharp_sbuf_reset(tmp);
        for (uint32_t i = 0; i < c->napplication_protocols; i++)
            sharp_sbuf_printf(tmp, "%s'%s'", i ? "," : "", c->application_protocols[i]);
        *out = (sharp_str_t){tmp->data, tmp->len};
        return AVAIL_VALUE;
    case INPUT_FILTER_STATE:
        /* a connection has filter state objects only from listener
         * filters that set them; those SHARP implements (the TLS and HTTP
         * inspectors, original_dst on Linux) set none, as in Envoy: no
         * value */
        return AVAIL_ABSENT;
    default:
        return AVAIL_NONE;
    }
}

/* The input's value into *out (`tmp` or, for an address or port, `buf` of
 * VALUE_MAX bytes holds it when built). */
static avail_t input_get(const input_t *in, const sharp_match_data_t *d, sharp_sbuf_t *tmp, char *buf,
                         sharp_str_t *out)
{
    if (in->kind >= INPUT_DESTINATION_IP) return net_input_get(in, d->conn, tmp, buf, out);
    const sharp_headers_t *h = NULL;
    switch (in->kind) {
    case INPUT_REQUEST_HEADER:
    case INPUT_QUERY_PARAM:
        h = d->request_headers;
        break;
    case INPUT_REQUEST_TRAILER:
        h = d->request_trailers;
        break;
    case INPUT_RESPONSE_HEADER:
        h = d->response_headers;
        break;
    case INPUT_RESPONSE_TRAILER:
        h = d->response_trailers;
        break;
    default:
        break;
    }
    if (!h) return AVAIL_NONE;
    if (in->kind == INPUT_QUERY_PARAM) {
        sharp_str_t path;
        if (!sharp_headers_get_cstr(h, ":path", &path)) return AVAIL_NONE;
        const char *qm = memchr(path.p, '?', path.len);
        if (!qm) return AVAIL_ABSENT;
        sharp_str_t q = {qm + 1, path.len - (size_t)(qm + 1 - path.p)};
        size_t nlen = in->name_len, i = 0;
        while (i < q.len) {
            const char *amp = memchr(q.p + i, '&', q.len - i);
            size_t end = amp ? (size_t)(amp - q.p) : q.len;
            const char *eq = memchr(q.p + i, '=', end - i);
            size_t kend = eq ? (size_t)(eq - q.p) : end;
            pct_decode(tmp, q.p + i, kend - i);
            if (tmp->len == nlen && memcmp(tmp->data, in->name, nlen) == 0) {
                if (eq)
                    pct_decode(tmp, eq + 1, end - kend - 1);
                else
                    sharp_sbuf_reset(tmp);
                *out = (sharp_str_t){tmp->data ? tmp->data : "", tmp->len};
                return AVAIL_VALUE;
            }
            i = end + 1;
        }
        return AVAIL_ABSENT;
    }
    /* Envoy's getAllOfHeaderAsString: the values joined with "," */
    return sharp_headers_get_all(h, in->name, in->name_len, tmp, out) ? AVAIL_VALUE : AVAIL_ABSENT;
}

/* A predicate: 1 true, 0 false, -1 not decidable yet. */
static int pred_eval(const predicate_t *p, const sharp_match_data_t *d)
{
    switch (p->kind) {
    case PRED_SINGLE: {
        sharp_sbuf_t tmp = {0};
        char buf[VALUE_MAX];
        sharp_str_t v;
        avail_t a = input_get(&p->input, d, &tmp, buf, &v);
        int r = a == AVAIL_NONE     ? -1
                : a == AVAIL_ABSENT ? 0
                                    : sharp_string_matcher_match(&p->sm, v);
        free(tmp.data);
        return r;
    }
    case PRED_OR: {
        bool unable = false;
        for (uint32_t i = 0; i < p->nsub; i++) {
            int r = pred_eval(&p->sub[i], d);
            if (r < 0)
                unable = true;
            else if (r)
                return 1;
        }
        return unable ? -1 : 0;
    }
    case PRED_AND:
        for (uint32_t i = 0; i < p->nsub; i++) {
            int r = pred_eval(&p->sub[i], d);
            if (r <= 0) return r;
        }
        return 1;
    case PRED_NOT: {
        int r = pred_eval(p->sub, d);
        return r < 0 ? r : !r;
    }
    }
    return 0;
}

static sharp_match_result_t handle(const on_match_t *om, const sharp_match_data_t *d,
                                   const void **action)
{
    if (!om->set) return SHARP_MATCH_NONE;
    if (om->matcher) return sharp_matcher_evaluate(om->matcher, d, action);
    *action = om->action;
    return SHARP_MATCH_ACTION;
}

/* Envoy's TrieMatcher: the ranges holding the address, the longest prefix
 * first; the first one's on_match always, the others' unless exclusive,
 * until one matches. */
static sharp_match_result_t ip_match(const sharp_matcher_t *m, const struct sockaddr *sa,
                                     const sharp_match_data_t *d, const void **action)
{
    bool first = true;
    for (uint32_t i = 0; i < m->nranges; i++) {
        const ip_range_t *r = &m->ranges[i];
        if (!sharp_cidr_contains(&r->cidr, sa)) continue;
        if (!first && r->exclusive) continue;
        sharp_match_result_t res = handle(&m->ip_om[r->om], d, action);
        if (res != SHARP_MATCH_NONE) return res;
        first = false;
    }
    return SHARP_MATCH_NONE;
}

/* The same for an input read as text (an address in a header): one that
 * is not an IP address matches none. */
static sharp_match_result_t ip_evaluate(const sharp_matcher_t *m, sharp_str_t v,
                                        const sharp_match_data_t *d, const void **action)
{
    char ip[INET6_ADDRSTRLEN + 1];
    struct sockaddr_storage ss = {0};
    if (v.len >= sizeof ip) return SHARP_MATCH_NONE;
    memcpy(ip, v.p, v.len);
    ip[v.len] = 0;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return SHARP_MATCH_NONE;
    return ip_match(m, (const struct sockaddr *)&ss, d, action);
}

sharp_match_result_t sharp_matcher_evaluate(const sharp_matcher_t *m, const sharp_match_data_t *d,
                                            const void **action)
{
    *action = NULL;
    if (!m->is_tree) {
        for (uint32_t i = 0; i < m->nfm; i++) {
            int r = pred_eval(&m->fm[i].pred, d);
            if (r < 0) return SHARP_MATCH_INSUFFICIENT;
            if (!r) continue;
            sharp_match_result_t res = handle(&m->fm[i].on_match, d, action);
            if (res != SHARP_MATCH_NONE) return res;
        }
        return handle(&m->on_no_match, d, action);
    }
    sharp_sbuf_t tmp = {0};
    char buf[VALUE_MAX];
    sharp_str_t v;
    const struct sockaddr *sa = NULL;
    avail_t a;
    if (m->ip && d->conn && ip_input(m->input.kind)) {
        /* the address itself, not its text parsed back */
        sa = ip_input_addr(m->input.kind, d->conn);
        a = sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) ? AVAIL_VALUE : AVAIL_ABSENT;
    } else {
        a = input_get(&m->input, d, &tmp, buf, &v);
    }
    sharp_match_result_t res = SHARP_MATCH_NONE;
    if (a == AVAIL_NONE) {
        res = SHARP_MATCH_INSUFFICIENT;
    } else if (a == AVAIL_VALUE && m->ip) {
        res = sa ? ip_match(m, sa, d, action) : ip_evaluate(m, v, d, action);
    } else if (a == AVAIL_VALUE) {
        for (uint32_t i = 0; i < m->nmap; i++) {
            const map_entry_t *e = &m->map[i];
            bool hit = m->prefix ? v.len >= e->len && memcmp(v.p, e->key, e->len) == 0
                                 : v.len == e->len && memcmp(v.p, e->key, e->len) == 0;
            if (!hit) continue;
            res = handle(&e->on_match, d, action);
            /* exact: one key; prefix: longest first, then shorter ones */
            if (res != SHARP_MATCH_NONE || !m->prefix) break;
        }
    }
    free(tmp.data);
    if (a != AVAIL_NONE && res == SHARP_MATCH_NONE) res = handle(&m->on_no_match, d, action);
    return res;
}

bool sharp_matcher_needs_response(const sharp_matcher_t *m)
{
    return m->inputs & (SHARP_MATCH_IN_RESPONSE_HEADER | SHARP_MATCH_IN_RESPONSE_TRAILER);
}

uint32_t sharp_matcher_inputs(const sharp_matcher_t *m)
{
    return m->inputs;
}

/* ---- building ---- */

static void on_match_free(on_match_t *om, void (*free_action)(void *))
{
    if (om->matcher) sharp_matcher_free(om->matcher);
    if (om->action && free_action) free_action(om->action);
}

static void pred_free(predicate_t *p)
{
    if (p->kind == PRED_SINGLE) {
        free(p->input.name);
        sharp_string_matcher_free(&p->sm);
        return;
    }
    uint32_t n = p->kind == PRED_NOT ? 1 : p->nsub;
    for (uint32_t i = 0; p->sub && i < n; i++)
        pred_free(&p->sub[i]);
    free(p->sub);
}

void sharp_matcher_free(sharp_matcher_t *m)
{
    if (!m) return;
    for (uint32_t i = 0; i < m->nfm; i++) {
        pred_free(&m->fm[i].pred);
        on_match_free(&m->fm[i].on_match, m->free_action);
    }
    free(m->fm);
    for (uint32_t i = 0; i < m->nmap; i++) {
        free(m->map[i].key);
        on_match_free(&m->map[i].on_match, m->free_action);
    }
    free(m->map);
    for (uint32_t i = 0; i < m->nip_om; i++)
        on_match_free(&m->ip_om[i], m->free_action);
    free(m->ip_om);
    free(m->ranges);
    free(m->input.name);
    on_match_free(&m->on_no_match, m->free_action);
    free(m);
}

static sharp_matcher_t *build(build_t *b, const matcher_pb_t *pb, const char *path);

static const char *type_name(const char *url)
{
    const char *s = strrchr(url, '/');
    return s ? s + 1 : url;
}

/* A TypedExtensionConfig's typed_config, unpacked; NULL after fail(). */
static ProtobufCMessage *unpack(build_t *b, const Xds__Core__V3__TypedExtensionConfig *tc,
                                const char *path)
{
    char p[1024];
    snprintf(p, sizeof p, "%s.typed_config", path);
    if (!tc->typed_config) return fail(b, p, "is required"), NULL;
    sharp_config_error_t e = {{0}};
    ProtobufCMessage *msg = sharp_any_unpack(&tc->typed_config->base, NULL, &e);
    if (!msg) fail(b, p, "%s", e.msg);
    return msg;
}

static int build_input(build_t *b, const Xds__Core__V3__TypedExtensionConfig *tc, const char *path,
                       input_t *in)
{
    if (!tc) return fail(b, path, "input is required");
    char p[1024];
    snprintf(p, sizeof p, "%s.input", path);
    ProtobufCMessage *msg = unpack(b, tc, p);
    if (!msg) return -1;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    const char *name = NULL;
    static const struct {
        const ProtobufCMessageDescriptor *d;
        input_kind_t kind;
    } net[] = {
        {&envoy__extensions__matching__common_inputs__network__v3__destination_ipinput__descriptor,
         INPUT_DESTINATION_IP},
        {&envoy__extensions__matching__common_inputs__network__v3__destination_port_input__descriptor,
         INPUT_DESTINATION_PORT},
        {&envoy__extensions__matching__common_inputs__network__v3__source_ipinput__descriptor,
         INPUT_SOURCE_IP},
        {&envoy__extensions__matching__common_inputs__network__v3__source_port_input__descriptor,
         INPUT_SOURCE_PORT},
        {&envoy__extensions__matching__common_inputs__network__v3__direct_source_ipinput__descriptor,
         INPUT_DIRECT_SOURCE_IP},
        {&envoy__extensions__matching__common_inputs__network__v3__source_type_input__descriptor,
         INPUT_SOURCE_TYPE},
        {&envoy__extensions__matching__common_inputs__network__v3__server_name_input__descriptor,
         INPUT_SERVER_NAME},
        {&envoy__extensions__matching__common_inputs__network__v3__transport_protocol_input__descriptor,
         INPUT_TRANSPORT_PROTOCOL},
        {&envoy__extensions__matching__common_inputs__network__v3__application_protocol_input__descriptor,
         INPUT_APPLICATION_PROTOCOL},
        {&envoy__extensions__matching__common_inputs__network__v3__filter_state_input__descriptor,
         INPUT_FILTER_STATE},
    };
    for (size_t i = 0; i < sizeof net / sizeof net[0]; i++) {
        if (d != net[i].d) continue;
        if (!b->network) {
            int r =
                fail(b, p,
                     "match input '%s' is not supported here (SHARP reads the network inputs only "
                     "in a listener's filter_chain_matcher and the UDP proxy's matcher)",
                     d->name);
            protobuf_c_message_free_unpacked(msg, NULL);
            return r;
        }
        in->kind = net[i].kind;
        if ((b->net_flags & SHARP_MATCH_NET_UDP) && in->kind != INPUT_DESTINATION_IP &&
            in->kind != INPUT_DESTINATION_PORT && in->kind != INPUT_SOURCE_IP && in->kind != INPUT_SOURCE_PORT) {
            protobuf_c_message_free_unpacked(msg, NULL);
            return fail(b, p, "Didn't find a registered implementation for '%s' with type URL: '%s' (the UDP "
                        "proxy's matcher reads a datagram's DestinationIPInput, DestinationPortInput, "
                        "SourceIPInput and SourcePortInput)", tc->name, d->name);
        }
        if (in->kind == INPUT_DESTINATION_IP && (b->net_flags & SHARP_MATCH_NET_NO_LOCAL_IP)) {
            protobuf_c_message_free_unpacked(msg, NULL);
            return fail(b, p, "match input '%s' is not supported on a UDP listener bound to a wildcard address "
                        "(SHARP does not read a datagram's destination address there)", d->name);
        }
        if (in->kind == INPUT_FILTER_STATE) {
            const char *key =
                ((Envoy__Extensions__Matching__CommonInputs__Network__V3__FilterStateInput *)msg)
                    ->key;
            if (!key[0]) {
                protobuf_c_message_free_unpacked(msg, NULL);
                return fail(b, p, "key: value length must be at least 1 characters");
            }
            in->name = sharp_strdup(key);
            in->name_len = strlen(key);
        }
        protobuf_c_message_free_unpacked(msg, NULL);
        return 0;
    }
    if (b->network) {
        int r =
            fail(b, p,
                 "match input '%s' is not supported in a network matcher (a listener's "
                 "filter_chain_matcher, the UDP proxy's matcher: SHARP implements "
                 "the network inputs: DestinationIPInput, DestinationPortInput, SourceIPInput, "
                 "SourcePortInput, DirectSourceIPInput, SourceTypeInput, ServerNameInput, "
                 "TransportProtocolInput, ApplicationProtocolInput, FilterStateInput)",
                 d->name);
        protobuf_c_message_free_unpacked(msg, NULL);
        return r;
    }
    if (d == &envoy__type__matcher__v3__http_request_header_match_input__descriptor) {
        in->kind = INPUT_REQUEST_HEADER;
        name = ((Envoy__Type__Matcher__V3__HttpRequestHeaderMatchInput *)msg)->header_name;
    } else if (d == &envoy__type__matcher__v3__http_request_trailer_match_input__descriptor) {
        in->kind = INPUT_REQUEST_TRAILER;
        name = ((Envoy__Type__Matcher__V3__HttpRequestTrailerMatchInput *)msg)->header_name;
    } else if (d == &envoy__type__matcher__v3__http_response_header_match_input__descriptor) {
        in->kind = INPUT_RESPONSE_HEADER;
        name = ((Envoy__Type__Matcher__V3__HttpResponseHeaderMatchInput *)msg)->header_name;
    } else if (d == &envoy__type__matcher__v3__http_response_trailer_match_input__descriptor) {
        in->kind = INPUT_RESPONSE_TRAILER;
        name = ((Envoy__Type__Matcher__V3__HttpResponseTrailerMatchInput *)msg)->header_name;
    } else if (d == &envoy__type__matcher__v3__http_request_query_param_match_input__descriptor) {
        in->kind = INPUT_QUERY_PARAM;
        name = ((Envoy__Type__Matcher__V3__HttpRequestQueryParamMatchInput *)msg)->query_param;
        if (!name[0]) {
            protobuf_c_message_free_unpacked(msg, NULL);
            return fail(b, p, "query_param: value length must be at least 1 characters");
        }
    } else {
        int r =
            fail(b, p,
                 "match input '%s' is not supported (SHARP implements the HTTP request/response "
                 "header and trailer inputs and HttpRequestQueryParamMatchInput)",
                 d->name);
        protobuf_c_message_free_unpacked(msg, NULL);
        return r;
    }
    /* HTTP_HEADER_NAME, strict: false: no NUL, CR or LF */
    if (in->kind != INPUT_QUERY_PARAM && strpbrk(name, "\r\n")) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return fail(b, p, "header_name: value does not match regex pattern");
    }
    in->name = sharp_strdup(name);
    in->name_len = strlen(name);
    if (in->kind != INPUT_QUERY_PARAM)
        for (char *c = in->name; *c; c++)
            if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
    b->inputs |= 1u << in->kind; /* the HTTP input kinds follow SHARP_MATCH_IN_*'s order */
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}

static int build_on_match(build_t *b, const on_match_pb_t *pb, const char *path, on_match_t *om)
{
    char p[1024];
    if (pb->keep_matching) {
        snprintf(p, sizeof p, "%s.keep_matching", path);
        return fail(b, p, "keep_matching is not supported");
    }
    if (pb->on_match_case == XDS__TYPE__MATCHER__V3__MATCHER__ON_MATCH__ON_MATCH_MATCHER) {
        snprintf(p, sizeof p, "%s.matcher", path);
        om->matcher = build(b, pb->matcher, p);
        if (!om->matcher) return -1;
    } else if (pb->on_match_case == XDS__TYPE__MATCHER__V3__MATCHER__ON_MATCH__ON_MATCH_ACTION) {
        snprintf(p, sizeof p, "%s.action", path);
        ProtobufCMessage *msg = unpack(b, pb->action, p);
        if (!msg) return -1;
        char ap[1100];
        snprintf(ap, sizeof ap, "%s.typed_config", p);
        om->action = b->make_action(pb->action->name, pb->action->typed_config->type_url, msg,
                                    b->arg, ap, b->err, b->errlen);
        protobuf_c_message_free_unpacked(msg, NULL);
        if (!om->action) {
            action_refused(b, ap);
            return -1;
        }
    } else {
        return fail(b, path, "one of matcher and action is required");
    }
    om->set = true;
    return 0;
}

static int build_pred(build_t *b, const predicate_pb_t *pb, const char *path, predicate_t *out)
{
    char p[1024];
    if (++b->depth > MAX_DEPTH) return fail(b, path, "predicates nest deeper than %d", MAX_DEPTH);
    int rc = 0;
    switch (pb->match_type_case) {
    case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__MATCH_TYPE_SINGLE_PREDICATE: {
        const Xds__Type__Matcher__V3__Matcher__MatcherList__Predicate__SinglePredicate *sp =
            pb->single_predicate;
        out->kind = PRED_SINGLE;
        snprintf(p, sizeof p, "%s.single_predicate", path);
        if (build_input(b, sp->input, p, &out->input) < 0) {
            rc = -1;
            break;
        }
        if (sp->matcher_case ==
            XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__SINGLE_PREDICATE__MATCHER_CUSTOM_MATCH) {
            snprintf(p, sizeof p, "%s.single_predicate.custom_match", path);
            rc = fail(b, p, "custom_match '%s' is not supported (only value_match)",
                      sp->custom_match->typed_config
                          ? type_name(sp->custom_match->typed_config->type_url)
                          : sp->custom_match->name);
            break;
        }
        if (sp->matcher_case !=
            XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__SINGLE_PREDICATE__MATCHER_VALUE_MATCH) {
            rc = fail(b, p, "one of value_match and custom_match is required");
            break;
        }
        const Xds__Type__Matcher__V3__StringMatcher *sm = sp->value_match;
        snprintf(p, sizeof p, "%s.single_predicate.value_match", path);
        char e[512] = "";
        int r;
        switch (sm->match_pattern_case) {
        case XDS__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
            r = sharp_string_matcher_init(&out->sm, SHARP_SM_EXACT, sm->exact, strlen(sm->exact),
                                          sm->ignore_case, e, sizeof e);
            break;
        case XDS__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
            r = sharp_string_matcher_init(&out->sm, SHARP_SM_PREFIX, sm->prefix, strlen(sm->prefix),
                                          sm->ignore_case, e, sizeof e);
            break;
        case XDS__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
            r = sharp_string_matcher_init(&out->sm, SHARP_SM_SUFFIX, sm->suffix, strlen(sm->suffix),
                                          sm->ignore_case, e, sizeof e);
            break;
        case XDS__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
            r = sharp_string_matcher_init(&out->sm, SHARP_SM_CONTAINS, sm->contains,
                                          strlen(sm->contains), sm->ignore_case, e, sizeof e);
            break;
        case XDS__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
            if (sm->ignore_case) {
                r = -1;
                snprintf(e, sizeof e, "ignore_case has no effect for safe_regex.");
                break;
            }
            /* Envoy's RegexMatcher (the deprecated matcher's) came here
             * through its wire format: its GoogleRE2's max_program_size is
             * an unknown field of xds's */
            if (b->legacy && sm->safe_regex->google_re2 &&
                sm->safe_regex->google_re2->base.n_unknown_fields) {
                r = -1;
                snprintf(
                    e, sizeof e,
                    "safe_regex.google_re2.max_program_size is not supported in the deprecated "
                    "matcher (use xds_matcher)");
                break;
            }
            /* xds's RegexMatcher requires its engine (validate.required) */
            if (!b->legacy && sm->safe_regex->engine_type_case !=
                                  XDS__TYPE__MATCHER__V3__REGEX_MATCHER__ENGINE_TYPE_GOOGLE_RE2) {
                r = -1;
                snprintf(e, sizeof e, "safe_regex.google_re2: value is required");
                break;
            }
            r = sharp_string_matcher_init_regex(&out->sm, sm->safe_regex->regex, NULL, e, sizeof e);
            break;
        default:
            r = -1;
            snprintf(e, sizeof e,
                     "one of exact, prefix, suffix, safe_regex and contains is required");
        }
        if (r < 0) rc = fail(b, p, "%s", e[0] ? e : "invalid string matcher");
        break;
    }
    case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__MATCH_TYPE_OR_MATCHER:
    case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__MATCH_TYPE_AND_MATCHER: {
        bool is_or =
            pb->match_type_case ==
            XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__MATCH_TYPE_OR_MATCHER;
        const Xds__Type__Matcher__V3__Matcher__MatcherList__Predicate__PredicateList *pl =
            is_or ? pb->or_matcher : pb->and_matcher;
        out->kind = is_or ? PRED_OR : PRED_AND;
        snprintf(p, sizeof p, "%s.%s.predicate", path, is_or ? "or_matcher" : "and_matcher");
        if (pl->n_predicate < 2) {
            rc = fail(b, p, "value must contain at least 2 item(s)");
            break;
        }
        out->sub = sharp_calloc(pl->n_predicate, sizeof *out->sub);
        out->nsub = (uint32_t)pl->n_predicate;
        for (size_t i = 0; i < pl->n_predicate && rc == 0; i++) {
            char q[1100];
            snprintf(q, sizeof q, "%s[%zu]", p, i);
            rc = build_pred(b, pl->predicate[i], q, &out->sub[i]);
        }
        break;
    }
    case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_LIST__PREDICATE__MATCH_TYPE_NOT_MATCHER:
        out->kind = PRED_NOT;
        out->sub = sharp_calloc(1, sizeof *out->sub);
        snprintf(p, sizeof p, "%s.not_matcher", path);
        rc = build_pred(b, pb->not_matcher, p, out->sub);
        break;
    default:
        rc = fail(b, path,
                  "one of single_predicate, or_matcher, and_matcher and not_matcher is required");
    }
    b->depth--;
    return rc;
}

static int cmp_range(const void *a, const void *b)
{
    const ip_range_t *x = a, *y = b;
    if (x->cidr.prefix_len != y->cidr.prefix_len)
        return x->cidr.prefix_len < y->cidr.prefix_len ? 1 : -1;
    return x->om < y->om ? -1 : x->om > y->om ? 1 : 0;
}

/* custom_match xds.type.matcher.v3.IPMatcher (Envoy's trie matcher). */
static int build_ip(build_t *b, const Xds__Core__V3__TypedExtensionConfig *tc, const char *path,
                    sharp_matcher_t *m)
{
    ProtobufCMessage *msg = unpack(b, tc, path);
    if (!msg) return -1;
    const Xds__Type__Matcher__V3__IPMatcher *ipm = (const Xds__Type__Matcher__V3__IPMatcher *)msg;
    int rc = 0;
    m->ip = true;
    size_t n = 0;
    for (size_t i = 0; i < ipm->n_range_matchers; i++)
        n += ipm->range_matchers[i]->n_ranges;
    m->ip_om = ipm->n_range_matchers ? sharp_calloc(ipm->n_range_matchers, sizeof *m->ip_om) : NULL;
    m->ranges = n ? sharp_calloc(n, sizeof *m->ranges) : NULL;
    for (size_t i = 0; i < ipm->n_range_matchers && rc == 0; i++) {
        const Xds__Type__Matcher__V3__IPMatcher__IPRangeMatcher *rm = ipm->range_matchers[i];
        char q[1100];
        snprintf(q, sizeof q, "%s.typed_config.range_matchers[%zu]", path, i);
        for (size_t k = 0; k < rm->n_ranges; k++) {
            const Xds__Core__V3__CidrRange *cr = rm->ranges[k];
            ip_range_t *r = &m->ranges[m->nranges];
            uint32_t len = cr->prefix_len ? cr->prefix_len->value : 0;
            if (!cr->address_prefix[0]) {
                char q2[1200];
                snprintf(q2, sizeof q2, "%s.ranges[%zu].address_prefix", q, k);
                rc = fail(b, q2, "value length must be at least 1 characters");
                break;
            }
            if (sharp_cidr_parse(cr->address_prefix, len, &r->cidr) < 0) {
                char q2[1200];
                snprintf(q2, sizeof q2, "%s.ranges[%zu]", q, k);
                rc = fail(b, q2, "malformed IP address or prefix length: %s/%u", cr->address_prefix,
                          len);
                break;
            }
            r->om = (uint32_t)i;
            r->exclusive = rm->exclusive;
            m->nranges++;
        }
        if (rc < 0) break;
        snprintf(q, sizeof q, "%s.typed_config.range_matchers[%zu].on_match", path, i);
        m->nip_om++;
        if (!rm->on_match)
            rc = fail(b, q, "value is required");
        else
            rc = build_on_match(b, rm->on_match, q, &m->ip_om[i]);
    }
    if (rc == 0 && m->nranges > 1) qsort(m->ranges, m->nranges, sizeof *m->ranges, cmp_range);
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

static int cmp_len_desc(const void *a, const void *b)
{
    const map_entry_t *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0;
}

static sharp_matcher_t *build(build_t *b, const matcher_pb_t *pb, const char *path)
{
    char p[1024];
    if (++b->depth > MAX_DEPTH)
        return fail(b, path, "matchers nest deeper than %d", MAX_DEPTH), NULL;
    sharp_matcher_t *m = sharp_calloc(1, sizeof *m);
    m->free_action = b->free_action;
    int rc = 0;
    if (pb->matcher_type_case == XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_TYPE_MATCHER_LIST) {
        const Xds__Type__Matcher__V3__Matcher__MatcherList *l = pb->matcher_list;
        snprintf(p, sizeof p, "%s.matcher_list.matchers", path);
        if (l->n_matchers == 0) rc = fail(b, p, "value must contain at least 1 item(s)");
        m->fm = l->n_matchers ? sharp_calloc(l->n_matchers, sizeof *m->fm) : NULL;
        for (size_t i = 0; i < l->n_matchers && rc == 0; i++) {
            const Xds__Type__Matcher__V3__Matcher__MatcherList__FieldMatcher *fm = l->matchers[i];
            char q[1100];
            m->nfm++;
            snprintf(q, sizeof q, "%s[%zu].predicate", p, i);
            if (!fm->predicate) {
                rc = fail(b, q, "value is required");
                break;
            }
            if ((rc = build_pred(b, fm->predicate, q, &m->fm[i].pred)) < 0) break;
            snprintf(q, sizeof q, "%s[%zu].on_match", p, i);
            if (!fm->on_match) {
                rc = fail(b, q, "value is required");
                break;
            }
            rc = build_on_match(b, fm->on_match, q, &m->fm[i].on_match);
        }
    } else if (pb->matcher_type_case ==
               XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_TYPE_MATCHER_TREE) {
        const Xds__Type__Matcher__V3__Matcher__MatcherTree *t = pb->matcher_tree;
        m->is_tree = true;
        snprintf(p, sizeof p, "%s.matcher_tree", path);
        rc = build_input(b, t->input, p, &m->input);
        const match_map_pb_t *mm = NULL;
        if (rc == 0) switch (t->tree_type_case) {
            case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_TREE__TREE_TYPE_EXACT_MATCH_MAP:
                mm = t->exact_match_map;
                snprintf(p, sizeof p, "%s.matcher_tree.exact_match_map.map", path);
                break;
            case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_TREE__TREE_TYPE_PREFIX_MATCH_MAP:
                mm = t->prefix_match_map;
                m->prefix = true;
                snprintf(p, sizeof p, "%s.matcher_tree.prefix_match_map.map", path);
                break;
            case XDS__TYPE__MATCHER__V3__MATCHER__MATCHER_TREE__TREE_TYPE_CUSTOM_MATCH:
                snprintf(p, sizeof p, "%s.matcher_tree.custom_match", path);
                if (t->custom_match->typed_config &&
                    !strcmp(type_name(t->custom_match->typed_config->type_url),
                            "xds.type.matcher.v3.IPMatcher")) {
                    rc = build_ip(b, t->custom_match, p, m);
                    break;
                }
                rc = fail(b, p,
                          "custom_match '%s' is not supported (only exact_match_map, "
                          "prefix_match_map and xds.type.matcher.v3.IPMatcher)",
                          t->custom_match->typed_config
                              ? type_name(t->custom_match->typed_config->type_url)
                              : t->custom_match->name);
                break;
            default:
                rc = fail(b, p,
                          "one of exact_match_map, prefix_match_map and custom_match is required");
            }
        if (mm) {
            if (mm->n_map == 0) rc = fail(b, p, "value must contain at least 1 pair(s)");
            m->map = mm->n_map ? sharp_calloc(mm->n_map, sizeof *m->map) : NULL;
            for (size_t i = 0; i < mm->n_map && rc == 0; i++) {
                char q[1400];
                snprintf(q, sizeof q, "%s[\"%s\"]", p, mm->map[i]->key);
                map_entry_t *e = &m->map[m->nmap++];
                e->key = sharp_strdup(mm->map[i]->key);
                e->len = strlen(e->key);
                if (!mm->map[i]->value) {
                    rc = fail(b, q, "an OnMatch is required");
                    break;
                }
                rc = build_on_match(b, mm->map[i]->value, q, &e->on_match);
            }
            if (m->prefix && m->nmap > 1) qsort(m->map, m->nmap, sizeof *m->map, cmp_len_desc);
        }
    } else if (b->legacy) {
        /* envoy.config.common.matcher.v3's matcher_type is required */
        rc = fail(b, path, "one of matcher_list and matcher_tree is required");
    }
    /* without a matcher type, Envoy's AnyMatcher: on_no_match alone decides */
    if (rc == 0 && pb->on_no_match) {
        snprintf(p, sizeof p, "%s.on_no_match", path);
        rc = build_on_match(b, pb->on_no_match, p, &m->on_no_match);
    }
    b->depth--;
    if (rc < 0) {
        sharp_matcher_free(m);
        return NULL;
    }
    return m;
}

sharp_matcher_t *sharp_matcher_build(const matcher_pb_t *pb, const char *path,
                                     sharp_match_action_fn make_action, void (*free_action)(void *),
                                     void *arg, char *err, size_t errlen)
{
    build_t b = {.make_action = make_action,
                 .free_action = free_action,
                 .arg = arg,
                 .err = err,
                 .errlen = errlen};
    sharp_matcher_t *m = build(&b, pb, path);
    if (m) m->inputs = b.inputs;
    return m;
}

sharp_matcher_t *sharp_matcher_build_network(const matcher_pb_t *pb, const char *path,
                                             sharp_match_action_fn make_action,
                                             void (*free_action)(void *), void *arg, uint32_t flags,
                                             char *epath, size_t epathlen, char *err, size_t errlen)
{
    build_t b = {.make_action = make_action,
                 .free_action = free_action,
                 .arg = arg,
                 .err = err,
                 .errlen = errlen,
                 .network = true,
                 .net_flags = flags,
                 .epath = epath,
                 .epathlen = epathlen};
    if (epath) snprintf(epath, epathlen, "%s", path);
    sharp_matcher_t *m = build(&b, pb, path);
    if (m) m->inputs = b.inputs;
    return m;
}

sharp_matcher_t *sharp_matcher_build_envoy(const ProtobufCMessage *pb, const char *path,
                                           sharp_match_action_fn make_action,
                                           void (*free_action)(void *), void *arg, char *err,
                                           size_t errlen)
{
    /* the same messages with the same field numbers: through the wire */
    size_t n = protobuf_c_message_get_packed_size(pb);
    uint8_t *buf = sharp_calloc(1, n ? n : 1);
    protobuf_c_message_pack(pb, buf);
    matcher_pb_t *x = xds__type__matcher__v3__matcher__unpack(NULL, n, buf);
    free(buf);
    if (!x) {
        snprintf(err, errlen, "%s: cannot be read as an xds.type.matcher.v3.Matcher", path);
        return NULL;
    }
    build_t b = {.make_action = make_action,
                 .free_action = free_action,
                 .arg = arg,
                 .err = err,
                 .errlen = errlen,
                 .legacy = true};
    sharp_matcher_t *m = build(&b, x, path);
    if (m) m->inputs = b.inputs;
    xds__type__matcher__v3__matcher__free_unpacked(x, NULL);
    return m;
}
