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
 * the same kind. Thread-safe. */
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
 * sharp_gauge_set (any thread, atomic). */
void sharp_gauge_add(sharp_stats_shard_t *sh, sharp_stat_id_t id, int64_t delta);
void sharp_gauge_set(sharp_stats_t *s, sharp_stat_id_t id, int64_t value);
/* Records one value (milliseconds for SHARP_HIST_MILLISECONDS). */
void sharp_histogram_record(sharp_stats_shard_t *sh, sharp_stat_id_t id, uint64_t value);

/* Merged reads (any thread). */
uint64_t sharp_stats_counter_value(sharp_stats_t *s, sharp_stat_id_t id);
int64_t sharp_stats_gauge_value(sharp_stats_t *s, sharp_stat_id_t id);
/* Looks a stat up by full name; returns 0 and fills id and kind, or -1. */
int sharp_stats_find(sharp_stats_t *s, const char *name, sharp_stat_id_t *id,
                     sharp_stat_kind_t *kind);
/* Quantile q in [0,1] of the merged histogram since start; NAN if empty. */
double sharp_stats_histogram_quantile(sharp_stats_t *s, sharp_stat_id_t id, double q);
uint64_t sharp_stats_histogram_count(sharp_stats_t *s, sharp_stat_id_t id);

/* Renderers for the admin endpoints. `filter` is an extended regex (NULL for
 * all); returns 0, or -1 with a message in `err` when the regex is invalid.
 * used_only mirrors Envoy's ?usedonly. */
int sharp_stats_render_text(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen);
int sharp_stats_render_json(sharp_stats_t *s, const char *filter, bool used_only, sharp_sbuf_t *out,
                            char *err, size_t errlen);
int sharp_stats_render_prometheus(sharp_stats_t *s, const char *filter, bool used_only,
                                  sharp_sbuf_t *out, char *err, size_t errlen);

#endif
