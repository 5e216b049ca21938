/* stats.h: Envoy-named counters, gauges and histograms.
 *
 * A stat is registered once by name (any thread; registration takes a lock
 * and is never on the request path) and gets a small integer id. Each worker
 * writes into its own shard without locks or atomics read-modify-write; the
 * admin handler merges all shards on read. Names follow Envoy exactly
 * ("cluster.<name>.upstream_rq_total"); the Prometheus renderer derives
 * Envoy's tag-extracted names and labels from them with Envoy's default tag
 * extraction rules.
 */
#ifndef SHARP_STATS_H
#define SHARP_STATS_H

#include "common.h"
#include "sbuf.h"

typedef struct sharp_stats sharp_stats_t;
typedef struct sharp_stats_shard sharp_stats_shard_t;
typedef uint32_t sharp_stat_id_t;

typedef enum {
    SHARP_STAT_COUNTER,
    SHARP_STAT_GAUGE,
    SHARP_STAT_HISTOGRAM,
} sharp_stat_kind_t;

/* Histogram units decide how values are printed (Envoy prints ms). */
typedef enum {
    SHARP_HIST_MILLISECONDS,
    SHARP_HIST_UNSPECIFIED,
} sharp_hist_unit_t;

/* Creates a store with `nshards` shards: shard 0 belongs to the main thread,
 * shards 1..n to workers. */
sharp_stats_t *sharp_stats_create(unsigned nshards);
void sharp_stats_destroy(sharp_stats_t *s);
sharp_stats_shard_t *sharp_stats_shard(sharp_stats_t *s, unsigned idx);
unsigned sharp_stats_nshards(const sharp_stats_t *s);

/* Registration: returns the existing id when the name is already known with
 * the same kind. Thread-safe. Registering a known name with another kind is a
 * programming error: it is logged and the id of a hidden placeholder of the
 * requested kind is returned, so writes through it are harmless. */
sharp_stat_id_t sharp_stats_counter(sharp_stats_t *s, const char *name);
sharp_stat_id_t sharp_stats_gauge(sharp_stats_t *s, const char *name);
sharp_stat_id_t sharp_stats_histogram(sharp_stats_t *s, const char *name, sharp_hist_unit_t unit);
/* printf-style helpers for names built from config ("cluster.%s.upstream_rq_total"). */
sharp_stat_id_t sharp_stats_counterf(sharp_stats_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
sharp_stat_id_t sharp_stats_gaugef(sharp_stats_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
sharp_stat_id_t sharp_stats_histogramf(sharp_stats_t *s, sharp_hist_unit_t unit, const char *fmt,
                                       ...) __attribute__((format(printf, 3, 4)));

/* Hot path: only the shard's owning thread writes to it. */
void sharp_counter_add(sharp_stats_shard_t *sh, sharp_stat_id_t id, uint64_t n);
static inline void sharp_counter_inc(sharp_stats_shard_t *sh, sharp_stat_id_t id)
{
    sharp_counter_add(sh, id, 1);
}
/* Gauges are the sum of per-shard deltas plus one absolute part set with
 * sharp_gauge_set (any thread, atomic). set replaces only the absolute part:
 * a gauge is meant to be either set (server.uptime) or moved by deltas
 * (downstream_cx_active), not both. */
void sharp_gauge_add(sharp_stats_shard_t *sh, sharp_stat_id_t id, int64_t delta);
void sharp_gauge_set(sharp_stats_t *s, sharp_stat_id_t id, int64_t value);
/* Records one value (milliseconds for SHARP_HIST_MILLISECONDS). */
void sharp_histogram_record(sharp_stats_shard_t *sh, sharp_stat_id_t id, uint64_t value);

/* Envoy's /reset_counters: every counter reads 0 from now on (gauges and
 * histograms are left alone, and a counter stays "used"). The workers'
 * shards are not written: each counter remembers the sum it had, and reads
 * subtract it. Main thread. */
void sharp_stats_reset_counters(sharp_stats_t *s);

/* Merged reads (any thread). */
uint64_t sharp_stats_counter_value(sharp_stats_t *s, sharp_stat_id_t id);
int64_t sharp_stats_gauge_value(sharp_stats_t *s, sharp_stat_id_t id);
/* Looks a stat up by full name; returns 0 and fills id and kind, or -1. */
int sharp_stats_find(sharp_stats_t *s, const char *name, sharp_stat_id_t *id,
                     sharp_stat_kind_t *kind);
/* Quantile q in [0,1] of the merged histogram since start; NAN if empty. */
double sharp_stats_histogram_quantile(sharp_stats_t *s, sharp_stat_id_t id, double q);
uint64_t sharp_stats_histogram_count(sharp_stats_t *s, sharp_stat_id_t id);

/* Enumeration for renderers and exporters (any thread). Ids below
 * sharp_stats_size() are valid; sharp_stats_name returns NULL for the few
 * internal placeholder ids (the targets of failed registrations). */
uint32_t sharp_stats_size(sharp_stats_t *s);
/* Envoy's default histogram bucket bounds (HistogramSettingsImpl;
 * milliseconds for times), for the Prometheus output and the sinks. */
#define SHARP_STATS_DEFAULT_NBUCKETS 19
extern const double sharp_stats_default_buckets[SHARP_STATS_DEFAULT_NBUCKETS];
const char *sharp_stats_name(sharp_stats_t *s, sharp_stat_id_t id, sharp_stat_kind_t *kind);
/* Envoy's notion of "used": a counter or gauge has been written at least once
 * (add, even of 0, or set), a histogram has recorded at least one value. */
bool sharp_stats_used(sharp_stats_t *s, sharp_stat_id_t id);
/* A counter's value and whether it is used, from one pass over the shards
 * (a sink reads both for every counter at every flush). */
uint64_t sharp_stats_counter_read(sharp_stats_t *s, sharp_stat_id_t id, bool *used);
/* The same for n counters, ids ascending (a sink's list): the pages of
 * consecutive ids are looked up once. */
void sharp_stats_counters_read(sharp_stats_t *s, const sharp_stat_id_t *ids, uint32_t n, uint64_t *values,
                               bool *used);

/* Histogram buckets are log-linear: values below 32 get one bucket each, and
 * every power of two above that is split into 32 equal buckets, so a bucket's
 * width is at most 1/32 of its lower bound (~3% relative error) over the whole
 * uint64 range. A merged histogram is a dense copy of all buckets (15 KB);
 * shards keep only the 32-bucket rows they have touched. */
#define SHARP_HIST_SUB_BITS 5
#define SHARP_HIST_ROWS 60
#define SHARP_HIST_NBUCKETS (SHARP_HIST_ROWS << SHARP_HIST_SUB_BITS)
typedef struct {
    uint64_t count; /* sum of buckets */
    uint64_t sum;   /* exact sum of recorded values */
    uint64_t buckets[SHARP_HIST_NBUCKETS];
} sharp_hist_merged_t;

/* Merges all shards of histogram `id` into `cumulative` (values since start)
 * and `interval` (values between the last two sharp_stats_flush calls, or the
 * cumulative values when the store was never flushed); either may be NULL.
 * Returns -1 when id is not a histogram. */
int sharp_stats_histogram_merge(sharp_stats_t *s, sharp_stat_id_t id,
                                sharp_hist_merged_t *cumulative, sharp_hist_merged_t *interval);
/* Quantile q in [0,1] (NAN when empty), interpolated inside the bucket. */
double sharp_hist_merged_quantile(const sharp_hist_merged_t *h, double q);
/* Number of recorded values <= le (interpolated inside a straddling bucket). */
uint64_t sharp_hist_merged_count_le(const sharp_hist_merged_t *h, double le);
/* Closes a histogram interval, like Envoy's stats flush (stats_flush_interval,
 * 5 s by default). Call from one thread (the main thread's timer). */
void sharp_stats_flush(sharp_stats_t *s);

/* Envoy's default tag extraction: writes the tag-extracted name of `name` to
 * `out` (e.g. "cluster.upstream_rq_xx") and up to `max` tags as (tag name,
 * value) pairs in Envoy's order (e.g. {"envoy.response_code_class", "2"},
 * {"envoy.cluster_name", "local_service"}); values point into `name` with
 * their length in `len`. Returns the number of tags (at most max). */
typedef struct {
    const char *tag;   /* "envoy.cluster_name" */
    const char *value; /* inside the stat name, not NUL-terminated */
    size_t len;
} sharp_stat_tag_t;
size_t sharp_stats_extract_tags(const char *name, sharp_sbuf_t *out, sharp_stat_tag_t *tags,
                                size_t max);

/* The bootstrap's stats_config (stats_config.h). Set once, before the first
 * registration: the store takes ownership (a previous config is freed), and
 * from then on the matcher decides which registrations create a stat and
 * the tag producer and bucket rules shape the Prometheus view. */
typedef struct sharp_stats_config sharp_stats_config_t;
void sharp_stats_set_config(sharp_stats_t *s, sharp_stats_config_t *cfg);
/* NULL when none was set (Envoy's default tags, no matcher). */
const sharp_stats_config_t *sharp_stats_get_config(sharp_stats_t *s);

/* One pointer per stat for what a renderer derives from the name and config
 * once (they never change for a stat). set installs p only when the slot is
 * still empty and returns whether it did (the caller frees p otherwise);
 * the store frees installed pointers with free(). */
void *sharp_stats_render_cache(sharp_stats_t *s, sharp_stat_id_t id);
bool sharp_stats_set_render_cache(sharp_stats_t *s, sharp_stat_id_t id, void *p);

/* Envoy's deferred_stat_options.enable_deferred_creation_stats: Envoy then
 * creates a cluster's traffic stats (ClusterTrafficStats) on their first use,
 * so an idle cluster lists none of them. SHARP keeps registering them
 * eagerly (the hot path is unchanged) and puts them in a deferred group: the
 * admin views leave a group's stats out until one of them is used, and then
 * show all of them, zeros included, as Envoy does once the block exists. */
bool sharp_stats_deferred_creation(sharp_stats_t *s);
/* A new group id (never 0). Thread-safe. */
uint32_t sharp_stats_new_group(sharp_stats_t *s);
/* Puts stat `id` into `group` (placeholder ids are left alone). */
void sharp_stats_defer(sharp_stats_t *s, sharp_stat_id_t id, uint32_t group);
/* The stat's group, 0 for none; and the number of groups handed out. */
uint32_t sharp_stats_group_of(sharp_stats_t *s, sharp_stat_id_t id);
uint32_t sharp_stats_ngroups(sharp_stats_t *s);

/* Renderers for the admin endpoints. `filter` is an RE2 regex (NULL for
 * all) searched anywhere in the full stat name; returns 0, or -1 with a
 * message in `err` when the regex is invalid. used_only mirrors Envoy's
 * ?usedonly. Output is appended to `out`. Text and JSON show each histogram's
 * interval and cumulative quantiles (see sharp_stats_flush); Prometheus uses
 * the cumulative ones, as Envoy does. */
/* Whether the admin filter regex names one stat exactly, as ^a\.b$: the
 * name, unescaped, into lit (the views then look it up instead of matching
 * every name). */
bool sharp_stats_filter_exact(const char *filter, char *lit, size_t cap);
int sharp_stats_render_text(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen);
int sharp_stats_render_json(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen);
int sharp_stats_render_prometheus(sharp_stats_t *s, const char *filter, bool used_only,
                                  sharp_sbuf_t *out, char *err, size_t errlen);

#endif
