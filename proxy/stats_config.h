/* stats_config.h: Envoy's bootstrap stats_config (envoy.config.metrics.v3.
 * StatsConfig) as the stat store applies it: the tag producer (default and
 * custom tag extractors, fixed tags), the stats matcher deciding which stats
 * are created at all, and per-histogram Prometheus buckets.
 *
 * A config is built by the bootstrap translator, then handed to the store
 * with sharp_stats_set_config() before any stat is registered; it is
 * read-only afterwards and may be read from any thread. */
#ifndef SHARP_STATS_CONFIG_H
#define SHARP_STATS_CONFIG_H

#include "http/route.h"
#include "stats.h"

/* An empty config: Envoy's default tag extractors when use_all_default_tags
 * (Envoy's default is true), no matcher, default buckets. */
sharp_stats_config_t *sharp_stats_config_create(bool use_all_default_tags);
void sharp_stats_config_free(sharp_stats_config_t *c);

/* stats_tags, in config order. A regex tag is compiled as Envoy compiles it
 * (std::regex, ECMAScript); returns 0, or -1 with the compile error. */
int sharp_stats_config_add_regex_tag(sharp_stats_config_t *c, const char *name,
                                     const char *regex, char *err, size_t errlen);
/* A tag_name without regex or fixed_value: Envoy's default extractors of
 * that name. Returns how many were added (0: there is no default of that
 * name, which Envoy refuses). */
size_t sharp_stats_config_add_default_tag(sharp_stats_config_t *c, const char *name);
void sharp_stats_config_add_fixed_tag(sharp_stats_config_t *c, const char *name,
                                      const char *value);

/* stats_matcher. */
typedef enum {
    SHARP_STATS_ACCEPT_ALL, /* no matcher, or reject_all: false */
    SHARP_STATS_REJECT_ALL,
    SHARP_STATS_EXCLUSION_LIST,
    SHARP_STATS_INCLUSION_LIST,
} sharp_stats_matcher_mode_t;
void sharp_stats_config_set_matcher(sharp_stats_config_t *c, sharp_stats_matcher_mode_t mode);
/* Appends a pattern of the inclusion or exclusion list; the config takes
 * over what *m owns and clears *m. */
void sharp_stats_config_add_pattern(sharp_stats_config_t *c, sharp_string_matcher_t *m);
/* True when the matcher keeps the stat `name` from being created. */
bool sharp_stats_config_rejects(const sharp_stats_config_t *c, const char *name);

/* histogram_bucket_settings, in config order (the first match wins). Takes
 * over *m like add_pattern; `buckets` is copied and sorted. Returns 0, or -1
 * with a message when a bound is not > 0 or appears twice (Envoy's rules). */
int sharp_stats_config_add_buckets(sharp_stats_config_t *c, sharp_string_matcher_t *m,
                                   const double *buckets, size_t n, char *err, size_t errlen);
/* The buckets for histogram `name`, or NULL for Envoy's default ones. */
const double *sharp_stats_config_buckets(const sharp_stats_config_t *c, const char *name,
                                         size_t *n);

/* Bootstrap.deferred_stat_options.enable_deferred_creation_stats (see
 * sharp_stats_deferred_creation); false for a NULL config. */
void sharp_stats_config_set_deferred(sharp_stats_config_t *c, bool deferred);
bool sharp_stats_config_deferred(const sharp_stats_config_t *c);

/* Tag extraction with this config (NULL: Envoy's defaults), as
 * sharp_stats_extract_tags. Fixed tag values point into the config. */
size_t sharp_stats_config_extract_tags(const sharp_stats_config_t *c, const char *name,
                                       sharp_sbuf_t *out, sharp_stat_tag_t *tags, size_t max);

#endif
