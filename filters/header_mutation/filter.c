/* filter.c: envoy.filters.http.header_mutation, Envoy's header mutation
 * filter.
 *
 * The filter's mutations (HeaderMutation.mutations) apply first: its
 * request_mutations to the request headers in decode_headers, its
 * response_mutations to the response headers in encode_headers. Then the
 * per-route configs (HeaderMutationPerRoute at the weighted cluster, route,
 * virtual host and route table) apply theirs, the most specific first so
 * that the less specific ones win, or with most_specific_header_mutations_wins
 * the least specific first. The per-route configs are looked up once per
 * stream, when the request headers pass (or the response headers, for a
 * response without them), as Envoy does.
 *
 * Each list is applied mutation by mutation in order (Envoy's
 * Http::HeaderMutations): remove drops every value of a header; append
 * renders its value (substitution formatters, %REQ(...)%,
 * %DOWNSTREAM_REMOTE_ADDRESS%, ...; %RESP(...)% against the response
 * headers being mutated) and, unless the value is empty and
 * keep_empty_value is off, adds it (APPEND_IF_EXISTS_OR_ADD), adds it only
 * without an existing value (ADD_IF_ABSENT), replaces every value
 * (OVERWRITE_IF_EXISTS_OR_ADD) or replaces only existing values
 * (OVERWRITE_IF_EXISTS). Unlike route header operations, pseudo-headers
 * and host may be mutated. */
#include "filters/header_mutation/filter.h"
#include "http/access_log.h"

#include "envoy/config/common/mutation_rules/v3/mutation_rules.pb-c.h"
#include "envoy/extensions/filters/http/header_mutation/v3/header_mutation.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef Envoy__Config__Common__MutationRules__V3__HeaderMutation hm_pb_t;
typedef Envoy__Extensions__Filters__Http__HeaderMutation__V3__Mutations mutations_pb_t;
typedef Envoy__Extensions__Filters__Http__HeaderMutation__V3__HeaderMutation config_pb_t;
typedef Envoy__Extensions__Filters__Http__HeaderMutation__V3__HeaderMutationPerRoute route_pb_t;

typedef struct hm_mutations {
    sharp_hm_list_t request, response;
} hm_mutations_t;

typedef struct hm_config {
    hm_mutations_t mutations;
    bool most_specific_wins;
} hm_config_t;

/* the levels of per-route configs: weighted cluster, route, virtual host, table */
#define HM_MAX_LEVELS 4

typedef struct hm_state {
    bool routes_done;
    uint32_t nroutes;
    const hm_mutations_t *routes[HM_MAX_LEVELS]; /* in the order they apply */
} hm_state_t;

/* ---- mutation lists ---- */

int sharp_hm_list_init(sharp_hm_list_t *l, const char *path, hm_pb_t *const *pb, size_t n,
                       char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->m = sharp_calloc(n ? n : 1, sizeof *l->m);
    bool response = strstr(path, "response_mutations") != NULL;
    for (size_t i = 0; i < n; i++) {
        const hm_pb_t *m = pb[i];
        /* a response without a valid :status: Envoy answers 502 after the
         * filters; SHARP refuses the mutation instead */
        const char *name = m->action_case == ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_REMOVE
                               ? m->remove
                           : m->action_case == ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_APPEND &&
                                   m->append->header
                               ? m->append->header->key
                               : NULL;
        if (response && name && strcasecmp(name, ":status") == 0) {
            snprintf(err, errlen, "%s[%zu]: a header mutation may not change a response's :status in SHARP", path, i);
            return -1;
        }
        sharp_hm_mutation_t *out = &l->m[l->n];
        if (m->action_case ==
            ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_REMOVE) {
            out->remove = true;
            out->op.name = sharp_strdup(m->remove);
            for (char *c = out->op.name; *c; c++)
                if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
            l->n++;
            continue;
        }
        if (m->action_case !=
            ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_APPEND) {
            snprintf(err, errlen, "%s[%zu]: one of remove or append is required", path, i);
            return -1;
        }
        const Envoy__Config__Core__V3__HeaderValueOption *o = m->append;
        if (!o->header || !o->header->key[0]) {
            snprintf(err, errlen, "%s[%zu].append.header.key: is required", path, i);
            return -1;
        }
        sharp_header_append_t action = (sharp_header_append_t)o->append_action;
        if (o->append) {
            if (o->append_action !=
                ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD) {
                snprintf(
                    err, errlen,
                    "%s[%zu].append: Both append and append_action are set and it's not allowed",
                    path, i);
                return -1;
            }
            action =
                o->append->value ? SHARP_APPEND_IF_EXISTS_OR_ADD : SHARP_OVERWRITE_IF_EXISTS_OR_ADD;
        }
        char *raw = NULL, msg[256];
        const char *value = o->header->value;
        if (!value[0] && o->header->raw_value.len) {
            raw = sharp_strndup((const char *)o->header->raw_value.data, o->header->raw_value.len);
            value = raw;
        }
        int rc = sharp_header_op_init(&out->op, o->header->key, value, action, o->keep_empty_value,
                                      msg, sizeof msg);
        free(raw);
        if (rc < 0) {
            snprintf(err, errlen, "%s[%zu].append.header.value: %s", path, i, msg);
            return -1;
        }
        l->n++;
    }
    return 0;
}

void sharp_hm_list_free(sharp_hm_list_t *l)
{
    for (uint32_t i = 0; i < l->n; i++) {
        free(l->m[i].op.name);
        free(l->m[i].op.value);
        sharp_access_log_format_free(l->m[i].op.fmt);
    }
    free(l->m);
    memset(l, 0, sizeof *l);
}

void sharp_hm_list_apply(const sharp_hm_list_t *l, sharp_headers_t *h,
                         const sharp_stream_info_t *si)
{
    sharp_sbuf_t val = {0};
    for (uint32_t i = 0; i < l->n; i++) {
        const sharp_hm_mutation_t *m = &l->m[i];
        size_t nlen = strlen(m->op.name);
        if (m->remove) {
            if (nlen) sharp_headers_remove(h, m->op.name, nlen);
            continue;
        }
        const char *v = m->op.value;
        size_t vlen;
        if (m->op.fmt) {
            sharp_sbuf_reset(&val);
            sharp_access_log_format_render_header(m->op.fmt, si, &val);
            v = val.data ? val.data : "";
            vlen = val.len;
        } else {
            vlen = strlen(v);
        }
        if (!vlen && !m->op.keep_empty_value) continue;
        switch (m->op.action) {
        case SHARP_ADD_IF_ABSENT:
            if (sharp_headers_find(h, m->op.name, nlen, 0) >= 0) break;
            sharp_headers_add(h, m->op.name, nlen, v, vlen);
            break;
        case SHARP_OVERWRITE_IF_EXISTS:
            if (sharp_headers_find(h, m->op.name, nlen, 0) < 0) break;
            sharp_headers_set(h, m->op.name, nlen, v, vlen);
            break;
        case SHARP_OVERWRITE_IF_EXISTS_OR_ADD:
            sharp_headers_set(h, m->op.name, nlen, v, vlen);
            break;
        case SHARP_APPEND_IF_EXISTS_OR_ADD:
        default:
            sharp_headers_add(h, m->op.name, nlen, v, vlen);
            break;
        }
    }
    sharp_sbuf_free(&val);
}

/* ---- config ---- */

static void mutations_free(hm_mutations_t *m)
{
    sharp_hm_list_free(&m->request);
    sharp_hm_list_free(&m->response);
}

static int mutations_init(hm_mutations_t *out, const mutations_pb_t *pb, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!pb) return 0;
    if (sharp_hm_list_init(&out->request, "mutations.request_mutations", pb->request_mutations,
                           pb->n_request_mutations, err, errlen) < 0 ||
        sharp_hm_list_init(&out->response, "mutations.response_mutations", pb->response_mutations,
                           pb->n_response_mutations, err, errlen) < 0) {
        mutations_free(out);
        return -1;
    }
    return 0;
}

static void *create_config(const ProtobufCMessage *msg, sharp_filter_config_ctx_t *ctx, char *err,
                           size_t errlen)
{
    (void)ctx;
    const config_pb_t *pb = (const config_pb_t *)msg;
    hm_config_t *c = sharp_calloc(1, sizeof *c);
    if (pb) {
        if (mutations_init(&c->mutations, pb->mutations, err, errlen) < 0) {
            free(c);
            return NULL;
        }
        c->most_specific_wins = pb->most_specific_header_mutations_wins;
    }
    return c;
}

static void destroy_config(void *config)
{
    hm_config_t *c = config;
    if (!c) return;
    mutations_free(&c->mutations);
    free(c);
}

static void *create_route_config(const ProtobufCMessage *msg, char *err, size_t errlen)
{
    const route_pb_t *pb = (const route_pb_t *)msg;
    hm_mutations_t *m = sharp_calloc(1, sizeof *m);
    if (mutations_init(m, pb ? pb->mutations : NULL, err, errlen) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

static void destroy_route_config(void *config)
{
    if (!config) return;
    mutations_free(config);
    free(config);
}

/* ---- stream ---- */

/* Envoy's initializeRouteConfigs: sharp_stream_route_configs gives the
 * most specific first, the order that applies by default (the least
 * specific applied last wins); most_specific_header_mutations_wins
 * reverses it. */
static void init_routes(sharp_filter_t *f)
{
    hm_state_t *st = f->state;
    const hm_config_t *c = f->config;
    if (st->routes_done) return;
    st->routes_done = true;
    const void *cfgs[HM_MAX_LEVELS];
    uint32_t n = sharp_stream_route_configs(f, cfgs, HM_MAX_LEVELS);
    for (uint32_t i = 0; i < n; i++)
        st->routes[i] = cfgs[c->most_specific_wins ? n - 1 - i : i];
    st->nroutes = n;
}

static sharp_filter_status_t hm_decode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    const hm_config_t *c = f->config;
    hm_state_t *st = f->state;
    const sharp_stream_info_t *si = sharp_stream_info(f->stream);
    sharp_hm_list_apply(&c->mutations.request, h, si);
    init_routes(f);
    for (uint32_t i = 0; i < st->nroutes; i++)
        sharp_hm_list_apply(&st->routes[i]->request, h, si);
    return SHARP_FILTER_CONTINUE;
}

static sharp_filter_status_t hm_encode_headers(sharp_filter_t *f, sharp_headers_t *h,
                                               bool end_stream)
{
    (void)end_stream;
    const hm_config_t *c = f->config;
    hm_state_t *st = f->state;
    sharp_stream_info_t *si = sharp_stream_info(f->stream);
    /* %RESP(...)% reads the headers being mutated */
    const sharp_headers_t *saved = si->response_headers;
    si->response_headers = h;
    sharp_hm_list_apply(&c->mutations.response, h, si);
    init_routes(f);
    for (uint32_t i = 0; i < st->nroutes; i++)
        sharp_hm_list_apply(&st->routes[i]->response, h, si);
    si->response_headers = saved;
    return SHARP_FILTER_CONTINUE;
}

const sharp_filter_factory_t sharp_header_mutation_filter = {
    .name = "envoy.filters.http.header_mutation",
    .type_url =
        "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
    .config_desc =
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation__descriptor,
    .create_config = create_config,
    .destroy_config = destroy_config,
    .state_size = sizeof(hm_state_t),
    .decode_headers = hm_decode_headers,
    .encode_headers = hm_encode_headers,
    .route_type_url = "type.googleapis.com/"
                      "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
    .route_config_desc =
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation_per_route__descriptor,
    .create_route_config = create_route_config,
    .destroy_route_config = destroy_route_config,
};
