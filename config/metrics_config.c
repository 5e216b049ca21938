/* metrics_config.c: see metrics_config.h. Envoy builds the same three
 * pieces right after loading the bootstrap, before any stat exists
 * (TagProducerImpl, StatsMatcherImpl, HistogramSettingsImpl), so they apply
 * to every stat, server.* included. */
#include "config/metrics_config.h"
#include "config/route_config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "stats_config.h"

typedef Envoy__Config__Metrics__V3__StatsConfig stats_config_pb_t;
typedef Envoy__Type__Matcher__V3__StringMatcher sm_pb_t;

/* Envoy's TagSpecifier.regex limit (max_bytes). */
#define MAX_TAG_REGEX 1024

typedef struct {
    char *epath, *emsg;
    size_t epathlen, emsglen;
} ctx_t;

static int fail(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->emsg, c->emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

static void at(ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void at(ctx_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->epath, c->epathlen, fmt, ap);
    va_end(ap);
}

/* A StringMatcher as the route tables translate it; the error's path (the
 * text before ": ") goes back to epath, for its position in the file. */
static int string_matcher(ctx_t *c, const sm_pb_t *pb, sharp_string_matcher_t *out)
{
    char err[1024] = "", path[512];
    snprintf(path, sizeof path, "%s", c->epath);
    if (sharp_config_string_matcher(pb, path, out, err, sizeof err) == 0) return 0;
    char *sep = strstr(err, ": ");
    if (sep) {
        *sep = '\0';
        snprintf(c->epath, c->epathlen, "%s", err);
        return fail(c, "%s", sep + 2);
    }
    return fail(c, "%s", err);
}

/* TagProducerImpl's constructor: the defaults (use_all_default_tags), then
 * each TagSpecifier: a regex, a fixed value, or (neither) the defaults of
 * that name. */
static int tags(ctx_t *c, const stats_config_pb_t *pb, sharp_stats_config_t *sc)
{
    for (size_t i = 0; i < pb->n_stats_tags; i++) {
        const Envoy__Config__Metrics__V3__TagSpecifier *t = pb->stats_tags[i];
        const char *name = t->tag_name;
        char msg[512] = "";
        at(c, "stats_config.stats_tags[%zu].tag_name", i);
        /* Envoy says so for regex tags; a fixed tag without a name would be a
         * label without a name in every Prometheus series, so it is refused
         * the same way. */
        if (!name[0]) return fail(c, "tag_name cannot be empty");
        switch (t->tag_value_case) {
        case ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_FIXED_VALUE:
            sharp_stats_config_add_fixed_tag(sc, name, t->fixed_value);
            break;
        case ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_REGEX:
            if (t->regex[0]) {
                at(c, "stats_config.stats_tags[%zu].regex", i);
                if (strlen(t->regex) > MAX_TAG_REGEX)
                    return fail(c, "value length must be at most %d bytes", MAX_TAG_REGEX);
                if (sharp_stats_config_add_regex_tag(sc, name, t->regex, msg, sizeof msg) < 0)
                    return fail(c, "Invalid regex '%s': %s", t->regex, msg);
                break;
            }
            /* an empty regex means "the default of this name" */
            __attribute__((fallthrough));
        default:
            if (sharp_stats_config_add_default_tag(sc, name) == 0)
                return fail(c,
                            "No regex specified for tag specifier and no default regex for "
                            "name: '%s'",
                            name);
        }
    }
    return 0;
}

static int matcher(ctx_t *c, const Envoy__Config__Metrics__V3__StatsMatcher *m,
                   sharp_stats_config_t *sc)
{
    const Envoy__Type__Matcher__V3__ListStringMatcher *list = NULL;
    const char *what = NULL;
    switch (m->stats_matcher_case) {
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_REJECT_ALL:
        sharp_stats_config_set_matcher(sc, m->reject_all ? SHARP_STATS_REJECT_ALL
                                                         : SHARP_STATS_ACCEPT_ALL);
        return 0;
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_EXCLUSION_LIST:
        sharp_stats_config_set_matcher(sc, SHARP_STATS_EXCLUSION_LIST);
        list = m->exclusion_list, what = "exclusion_list";
        break;
    case ENVOY__CONFIG__METRICS__V3__STATS_MATCHER__STATS_MATCHER_INCLUSION_LIST:
        sharp_stats_config_set_matcher(sc, SHARP_STATS_INCLUSION_LIST);
        list = m->inclusion_list, what = "inclusion_list";
        break;
    default:
        at(c, "stats_config.stats_matcher");
        return fail(c, "one of reject_all, exclusion_list, inclusion_list is required");
    }
    for (size_t i = 0; i < list->n_patterns; i++) {
        sharp_string_matcher_t sm;
        at(c, "stats_config.stats_matcher.%s.patterns[%zu]", what, i);
        if (string_matcher(c, list->patterns[i], &sm) < 0) return -1;
        sharp_stats_config_add_pattern(sc, &sm);
    }
    return 0;
}

static int buckets(ctx_t *c, const stats_config_pb_t *pb, sharp_stats_config_t *sc)
{
    for (size_t i = 0; i < pb->n_histogram_bucket_settings; i++) {
        const Envoy__Config__Metrics__V3__HistogramBucketSettings *h =
            pb->histogram_bucket_settings[i];
        sharp_string_matcher_t sm;
        char msg[256] = "";
        at(c, "stats_config.histogram_bucket_settings[%zu].match", i);
        if (!h->match) return fail(c, "value is required");
        if (string_matcher(c, h->match, &sm) < 0) return -1;
        at(c, "stats_config.histogram_bucket_settings[%zu].buckets", i);
        if (sharp_stats_config_add_buckets(sc, &sm, h->buckets, h->n_buckets, msg, sizeof msg) <
            0) {
            sharp_string_matcher_free(&sm);
            return fail(c, "%s", msg);
        }
    }
    return 0;
}

int sharp_config_stats(const stats_config_pb_t *pb, bool deferred, sharp_stats_t *stats,
                       char *epath, size_t epathlen, char *emsg, size_t emsglen)
{
    ctx_t c = {epath, emsg, epathlen, emsglen};
    bool defaults = !pb || !pb->use_all_default_tags || pb->use_all_default_tags->value;
    sharp_stats_config_t *sc = sharp_stats_config_create(defaults);
    sharp_stats_config_set_deferred(sc, deferred);
    if (pb && (tags(&c, pb, sc) < 0 || (pb->stats_matcher && matcher(&c, pb->stats_matcher, sc) < 0) ||
               buckets(&c, pb, sc) < 0)) {
        sharp_stats_config_free(sc);
        return -1;
    }
    if (stats)
        sharp_stats_set_config(stats, sc);
    else
        sharp_stats_config_free(sc);
    return 0;
}
