/* ratelimit_policy.c: route rate_limits and their descriptors; see
 * ratelimit_policy.h. */
#include "http/ratelimit_policy.h"
#include "http/metadata.h"
#include "net.h"
#include "sbuf.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_entry(sharp_rl_descriptor_t *d, const char *k, size_t klen, const char *v,
                      size_t vlen)
{
    d->entries = sharp_realloc(d->entries, ((size_t)d->n + 1) * sizeof *d->entries);
    d->entries[d->n].key = sharp_strndup(k, klen);
    d->entries[d->n].value = sharp_strndup(v, vlen);
    d->n++;
}

static void add_cstr(sharp_rl_descriptor_t *d, const char *k, const char *v)
{
    add_entry(d, k, strlen(k), v, strlen(v));
}

/* The client's IP as text: false for an address that is not an IP. */
static bool remote_ip(const char *printed, char *out, size_t cap)
{
    if (!printed || !printed[0] || sharp_addr_is_pipe(printed)) return false;
    sharp_str_t ip = sharp_addr_without_port(printed);
    if (!ip.len || ip.len >= cap) return false;
    memcpy(out, ip.p, ip.len);
    out[ip.len] = '\0';
    unsigned char buf[16];
    return inet_pton(AF_INET, out, buf) == 1 || inet_pton(AF_INET6, out, buf) == 1;
}

/* Envoy's CidrRange::asString of the masked client address. */
static bool masked_ip(const char *ip, const sharp_rl_action_t *a, char *out, size_t cap)
{
    unsigned char buf[16];
    bool v6 = inet_pton(AF_INET6, ip, buf) == 1;
    sharp_cidr_t c;
    if (sharp_cidr_parse(ip, v6 ? a->v6_mask : a->v4_mask, &c) < 0) return false;
    char txt[INET6_ADDRSTRLEN];
    if (!inet_ntop(c.family, c.addr, txt, sizeof txt)) return false;
    snprintf(out, cap, "%s/%u", txt, c.prefix_len);
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Envoy's PercentEncoding::decode: "%XX" with two hex digits is that
 * byte, anything else is kept as is ('+' too). */
static void pct_decode(const char *p, size_t n, sharp_sbuf_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
            (lo = hexval(p[i + 2])) >= 0) {
            char c = (char)(hi << 4 | lo);
            sharp_sbuf_append(out, &c, 1);
            i += 2;
        } else {
            sharp_sbuf_append(out, &p[i], 1);
        }
    }
}

/* Envoy's QueryParameterValueMatchAction: the query of :path parsed and
 * percent-decoded (QueryParamsMulti::parseAndDecodeQueryString), each
 * matcher checking the first value of its parameter. */
static bool query_match(const sharp_rl_action_t *a, sharp_str_t path)
{
    const char *mark = memchr(path.p, '?', path.len);
    sharp_str_t q =
        mark ? (sharp_str_t){mark + 1, path.len - (size_t)(mark + 1 - path.p)} : SHARP_STR("");
    bool all = true;
    for (uint32_t m = 0; m < a->nquery && all; m++) {
        const sharp_query_matcher_t *qm = &a->query[m];
        bool found = false, ok = false;
        size_t i = 0;
        while (i < q.len && !found) {
            const char *amp = memchr(q.p + i, '&', q.len - i);
            size_t end = amp ? (size_t)(amp - q.p) : q.len;
            const char *eq = memchr(q.p + i, '=', end - i);
            size_t kend = eq ? (size_t)(eq - q.p) : end;
            if (kend > i) {
                sharp_sbuf_t name = {0};
                pct_decode(q.p + i, kend - i, &name);
                if (name.len == strlen(qm->name) && memcmp(name.data, qm->name, name.len) == 0) {
                    found = true;
                    sharp_sbuf_t val = {0};
                    if (eq) pct_decode(eq + 1, end - kend - 1, &val);
                    ok = qm->present_match ||
                         sharp_string_matcher_match(
                             &qm->sm, (sharp_str_t){val.data ? val.data : "", val.len});
                    sharp_sbuf_free(&val);
                }
                sharp_sbuf_free(&name);
            }
            i = end + 1;
        }
        all = found && ok;
    }
    return all;
}

/* Envoy's Metadata::metadataValue(...).string_value(): the STRING at the
 * action's namespace and path, NULL for anything else. */
static const sharp_md_value_t *md_string(const sharp_rl_action_t *a, const sharp_rl_input_t *in)
{
    const struct sharp_dynamic_metadata *md = a->md_source == SHARP_RL_MD_DYNAMIC       ? in->dynamic_metadata
                                              : a->md_source == SHARP_RL_MD_ROUTE_ENTRY ? in->route_metadata
                                                                                        : in->locality_metadata;
    if (!md) return NULL;
    const sharp_md_value_t *v = sharp_dynamic_metadata_ns(md, a->md_ns, strlen(a->md_ns));
    for (uint32_t i = 0; v && i < a->md_npath; i++)
        v = v->kind == SHARP_MD_STRUCT ? sharp_md_struct_get(v, a->md_path[i], strlen(a->md_path[i])) : NULL;
    return v && v->kind == SHARP_MD_STRING ? v : NULL;
}

/* One action: false when it fails (no descriptor from its RateLimit). */
static bool action(const sharp_rl_action_t *a, const sharp_rl_input_t *in, sharp_rl_descriptor_t *d)
{
    char ip[SHARP_ADDR_STRLEN], masked[SHARP_ADDR_STRLEN + 8];
    sharp_str_t v;
    switch (a->kind) {
    case SHARP_RL_SOURCE_CLUSTER:
        add_cstr(d, "source_cluster", in->local_cluster ? in->local_cluster : "");
        return true;
    case SHARP_RL_DESTINATION_CLUSTER:
        if (!in->route_cluster) return false;
        add_cstr(d, "destination_cluster", in->route_cluster);
        return true;
    case SHARP_RL_REQUEST_HEADERS:
        if (!sharp_headers_get_cstr(in->headers, a->header_name, &v)) return a->skip_if_absent;
        add_entry(d, a->key, strlen(a->key), v.p, v.len);
        return true;
    case SHARP_RL_REMOTE_ADDRESS:
        if (!remote_ip(in->remote_address, ip, sizeof ip)) return false;
        add_cstr(d, "remote_address", ip);
        return true;
    case SHARP_RL_MASKED_REMOTE_ADDRESS:
        if (!remote_ip(in->remote_address, ip, sizeof ip) ||
            !masked_ip(ip, a, masked, sizeof masked))
            return false;
        add_cstr(d, "masked_remote_address", masked);
        return true;
    case SHARP_RL_GENERIC_KEY:
        add_cstr(d, a->key, a->value);
        return true;
    case SHARP_RL_HEADER_VALUE_MATCH: {
        bool m = true;
        for (uint32_t i = 0; i < a->nheaders && m; i++)
            m = sharp_header_matcher_match(&a->headers[i], in->headers);
        if (m != a->expect_match) return false;
        add_cstr(d, a->key, a->value);
        return true;
    }
    case SHARP_RL_METADATA: {
        const sharp_md_value_t *s = md_string(a, in);
        if (s && s->len) {
            add_entry(d, a->key, strlen(a->key), s->s, s->len);
            return true;
        }
        if (a->value && a->value[0]) {
            add_cstr(d, a->key, a->value);
            return true;
        }
        return a->skip_if_absent;
    }
    case SHARP_RL_QUERY_VALUE_MATCH: {
        sharp_str_t path = SHARP_STR("");
        sharp_headers_get_cstr(in->headers, ":path", &path);
        if (query_match(a, path) != a->expect_match) return false;
        add_cstr(d, a->key, a->value);
        return true;
    }
    }
    return false;
}

static void descriptor_free(sharp_rl_descriptor_t *d)
{
    for (uint32_t i = 0; i < d->n; i++) {
        free(d->entries[i].key);
        free(d->entries[i].value);
    }
    free(d->entries);
    d->entries = NULL;
    d->n = 0;
}

bool sharp_rate_limit_populate(const sharp_rate_limit_t *rl, const sharp_rl_input_t *in,
                               sharp_rl_descriptors_t *out)
{
    sharp_rl_descriptor_t d = {0};
    for (uint32_t i = 0; i < rl->nactions; i++) {
        if (!action(&rl->actions[i], in, &d)) {
            descriptor_free(&d);
            return false;
        }
    }
    d.has_hits_addend = rl->has_hits_addend;
    d.hits_addend = rl->hits_addend;
    if (out->n == out->cap) {
        out->cap = out->cap ? 2 * out->cap : 4;
        out->d = sharp_realloc(out->d, out->cap * sizeof *out->d);
    }
    out->d[out->n++] = d;
    return true;
}

void sharp_rl_descriptors_free(sharp_rl_descriptors_t *d)
{
    for (uint32_t i = 0; i < d->n; i++)
        descriptor_free(&d->d[i]);
    free(d->d);
    d->d = NULL;
    d->n = d->cap = 0;
}

void sharp_rate_limits_free(sharp_rate_limits_t *r)
{
    for (uint32_t i = 0; i < r->n; i++) {
        sharp_rate_limit_t *rl = &r->v[i];
        for (uint32_t j = 0; j < rl->nactions; j++) {
            sharp_rl_action_t *a = &rl->actions[j];
            free(a->key);
            free(a->value);
            free(a->header_name);
            for (uint32_t k = 0; k < a->nheaders; k++) {
                free(a->headers[k].name);
                sharp_string_matcher_free(&a->headers[k].sm);
            }
            free(a->headers);
            for (uint32_t k = 0; k < a->nquery; k++) {
                free(a->query[k].name);
                sharp_string_matcher_free(&a->query[k].sm);
            }
            free(a->query);
            free(a->md_ns);
            for (uint32_t k = 0; k < a->md_npath; k++)
                free(a->md_path[k]);
            free(a->md_path);
        }
        free(rl->actions);
        free(rl->disable_key);
    }
    free(r->v);
    r->v = NULL;
    r->n = 0;
}
