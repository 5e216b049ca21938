/* cors_config.c: see cors_config.h. Envoy's CorsPolicyImplBase: the
 * messages have no validation rules of their own; each origin matcher is a
 * StringMatcher with its rules, and a RuntimeFractionalPercent needs its
 * default_value. */
#include "config/cors_config.h"
#include "config/route_config.h"
#include "runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fields both messages share. */
typedef struct {
    Envoy__Type__Matcher__V3__StringMatcher **origins;
    size_t norigins;
    const char *allow_methods, *allow_headers, *expose_headers, *max_age;
    const Google__Protobuf__BoolValue *allow_credentials, *allow_private_network_access,
        *forward_not_matching_preflights;
    const Envoy__Config__Core__V3__RuntimeFractionalPercent *filter_enabled, *shadow_enabled;
} fields_t;

static char *nonempty_dup(const char *s)
{
    return s && s[0] ? sharp_strdup(s) : NULL;
}

static sharp_cors_bool_t tri(const Google__Protobuf__BoolValue *b)
{
    return !b ? SHARP_CORS_UNSET : b->value ? SHARP_CORS_TRUE : SHARP_CORS_FALSE;
}

/* path.field, for the runtime fraction's error messages */
static int fraction_from(const Envoy__Config__Core__V3__RuntimeFractionalPercent *rf, const char *path,
                         const char *field, sharp_runtime_fraction_t *out, char *err, size_t errlen)
{
    char p[512];
    snprintf(p, sizeof p, "%s%s%s", path, path[0] ? "." : "", field);
    return sharp_config_runtime_fraction(rf, p, out, err, errlen);
}

static sharp_cors_policy_t *build(const fields_t *f, const char *path, char *err, size_t errlen)
{
    sharp_cors_policy_t *p = sharp_calloc(1, sizeof *p);
    char fp[512];
    if (f->norigins) {
        p->origins = sharp_calloc(f->norigins, sizeof *p->origins);
        for (size_t i = 0; i < f->norigins; i++) {
            snprintf(fp, sizeof fp, "%s%sallow_origin_string_match[%zu]", path, path[0] ? "." : "",
                     i);
            if (sharp_config_string_matcher(f->origins[i], fp, &p->origins[i], err, errlen) < 0) {
                sharp_string_matcher_free(&p->origins[i]);
                goto fail;
            }
            p->norigins++;
        }
    }
    p->allow_methods = nonempty_dup(f->allow_methods);
    p->allow_headers = nonempty_dup(f->allow_headers);
    p->expose_headers = nonempty_dup(f->expose_headers);
    p->max_age = nonempty_dup(f->max_age);
    p->allow_credentials = tri(f->allow_credentials);
    p->allow_private_network_access = tri(f->allow_private_network_access);
    p->forward_not_matching_preflights = tri(f->forward_not_matching_preflights);
    if (f->filter_enabled) {
        if (fraction_from(f->filter_enabled, path, "filter_enabled", &p->filter_enabled, err,
                          errlen) < 0)
            goto fail;
        p->has_filter_enabled = true;
    }
    if (f->shadow_enabled) {
        if (fraction_from(f->shadow_enabled, path, "shadow_enabled", &p->shadow_enabled, err,
                          errlen) < 0)
            goto fail;
        p->has_shadow_enabled = true;
    }
    return p;
fail:
    sharp_cors_policy_free(p);
    return NULL;
}

sharp_cors_policy_t *
sharp_config_cors_policy(const Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy *pb,
                         const char *path, char *err, size_t errlen)
{
    fields_t f = {
        .origins = pb->allow_origin_string_match,
        .norigins = pb->n_allow_origin_string_match,
        .allow_methods = pb->allow_methods,
        .allow_headers = pb->allow_headers,
        .expose_headers = pb->expose_headers,
        .max_age = pb->max_age,
        .allow_credentials = pb->allow_credentials,
        .allow_private_network_access = pb->allow_private_network_access,
        .forward_not_matching_preflights = pb->forward_not_matching_preflights,
        .filter_enabled = pb->filter_enabled,
        .shadow_enabled = pb->shadow_enabled,
    };
    return build(&f, path, err, errlen);
}

sharp_cors_policy_t *sharp_config_route_cors_policy(const Envoy__Config__Route__V3__CorsPolicy *pb,
                                                    const char *path, char *err, size_t errlen)
{
    fields_t f = {
        .origins = pb->allow_origin_string_match,
        .norigins = pb->n_allow_origin_string_match,
        .allow_methods = pb->allow_methods,
        .allow_headers = pb->allow_headers,
        .expose_headers = pb->expose_headers,
        .max_age = pb->max_age,
        .allow_credentials = pb->allow_credentials,
        .allow_private_network_access = pb->allow_private_network_access,
        .forward_not_matching_preflights = pb->forward_not_matching_preflights,
        .filter_enabled =
            pb->enabled_specifier_case ==
                    ENVOY__CONFIG__ROUTE__V3__CORS_POLICY__ENABLED_SPECIFIER_FILTER_ENABLED
                ? pb->filter_enabled
                : NULL,
        .shadow_enabled = pb->shadow_enabled,
    };
    return build(&f, path, err, errlen);
}
