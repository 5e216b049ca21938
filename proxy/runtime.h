/* runtime.h: Envoy's layered runtime (bootstrap layered_runtime).
 *
 * A runtime is a list of layers (static_layer, disk_layer, admin_layer,
 * rtds_layer: values an xDS subscription delivers, xds/xds.h);
 * each maps dotted keys ("health_check.min_interval") to string values, a
 * later layer overriding an earlier one. Every value is parsed once, when
 * its layer is built, into what Envoy's SnapshotImpl::Entry holds: a bool
 * ("true"/"false" or a whole number), a number (uint and double) and, for
 * any other text, a FractionalPercent written as YAML or JSON.
 *
 * Readers see an immutable, reference-counted snapshot. The main thread
 * owns the loader and builds a new snapshot on every change
 * (/runtime_modify, a disk layer's symlink swap); each worker swaps its
 * thread-local snapshot pointer between two events of its loop (see
 * worker.c), so a lookup on the data path is a thread-local load and a
 * binary search, without locks or atomics. */
#ifndef SHARP_RUNTIME_H
#define SHARP_RUNTIME_H

#include "common.h"
#include "stats.h"

#include <stdatomic.h>

typedef enum {
    SHARP_RUNTIME_LAYER_STATIC,
    SHARP_RUNTIME_LAYER_DISK,
    SHARP_RUNTIME_LAYER_ADMIN,
    SHARP_RUNTIME_LAYER_RTDS,
} sharp_runtime_layer_kind_t;

typedef struct sharp_runtime_entry {
    char *key;
    char *raw; /* the value as /runtime shows it */
    bool has_bool, has_uint, has_double, has_fractional;
    bool bool_value;
    uint64_t uint_value;
    double double_value;
    uint32_t numerator, denominator; /* denominator 100, 10000 or 1000000 */
} sharp_runtime_entry_t;

/* A layer's values, sorted by key, keys unique. */
typedef struct sharp_runtime_values {
    sharp_runtime_entry_t *entries;
    uint32_t n, cap;
} sharp_runtime_values_t;

typedef struct sharp_runtime_snapshot_layer {
    const char *name; /* owned by the loader, which outlives every snapshot */
    sharp_runtime_values_t values;
} sharp_runtime_snapshot_layer_t;

typedef struct sharp_runtime_snapshot {
    _Atomic int refs;
    sharp_runtime_snapshot_layer_t *layers; /* the layers loaded, in order */
    uint32_t nlayers;
    const sharp_runtime_entry_t **merged; /* final values, sorted by key */
    uint32_t nmerged;
} sharp_runtime_snapshot_t;

typedef struct sharp_runtime_layer_config {
    char *name;
    sharp_runtime_layer_kind_t kind;
    sharp_runtime_values_t values; /* static: from the bootstrap; admin: the overrides; rtds: the last
                                      Runtime resource accepted (empty before and after its removal) */
    char *disk_path;               /* disk: symlink_root/subdirectory[/service cluster] */
    char *symlink_root;
} sharp_runtime_layer_config_t;

typedef struct sharp_runtime {
    sharp_runtime_layer_config_t *layers;
    uint32_t nlayers;
    int admin_layer; /* index in layers, -1 without an admin layer */
    sharp_runtime_snapshot_t *current;
    sharp_stats_t *stats; /* NULL: no stats (unit tests, --mode validate) */
    struct {
        sharp_stat_id_t load_success, load_error, override_dir_exists, override_dir_not_exists,
            num_keys, num_layers, admin_overrides_active;
    } st;
    /* called on the main thread after every new snapshot (server.c hands it
     * to the workers) */
    void (*on_update)(void *arg, sharp_runtime_snapshot_t *snap);
    void *on_update_arg;
    struct sharp_runtime_watch *watches; /* disk layers' symlink_root watches */
} sharp_runtime_t;

/* ---- building (main thread) ---------------------------------------------- */

sharp_runtime_t *sharp_runtime_create(void);
/* Layers are added in the bootstrap's order. A static layer's values are
 * given with sharp_runtime_values_set before sharp_runtime_load. Each
 * returns the layer index, or -1 with a message (a duplicate name, a second
 * admin layer: Envoy's texts). */
int sharp_runtime_add_layer(sharp_runtime_t *rt, const char *name, sharp_runtime_layer_kind_t kind,
                            char *err, size_t errlen);
int sharp_runtime_set_disk(sharp_runtime_t *rt, int layer, const char *symlink_root, const char *subdirectory,
                           const char *service_cluster);
/* Registers runtime.* stats (Envoy's names) in `stats`. */
void sharp_runtime_stats_init(sharp_runtime_t *rt, sharp_stats_t *stats);
/* Builds the first snapshot (reads the disk layers). */
void sharp_runtime_load(sharp_runtime_t *rt);
/* Watches the disk layers' symlink roots on `loop` and reloads on a swap. */
int sharp_runtime_watch(sharp_runtime_t *rt, void *uv_loop);
/* Stops the watches (their handles close on the loop) and frees the loader
 * and its snapshot reference. */
void sharp_runtime_free(sharp_runtime_t *rt);

/* Sets one value of a layer's list (static layers, admin overrides), replacing
 * an existing key. Parses the value as Envoy's createEntry does. */
void sharp_runtime_values_set(sharp_runtime_values_t *v, const char *key, const char *raw);
bool sharp_runtime_values_remove(sharp_runtime_values_t *v, const char *key);
const sharp_runtime_entry_t *sharp_runtime_values_find(const sharp_runtime_values_t *v, const char *key);
void sharp_runtime_values_free(sharp_runtime_values_t *v);
/* Parses `raw` into the typed parts of `e` (Envoy's resolveEntryType). */
void sharp_runtime_entry_parse(sharp_runtime_entry_t *e);

/* An RTDS layer's new values (taken: *values is left empty), and a new
 * snapshot published. */
void sharp_runtime_set_layer_values(sharp_runtime_t *rt, int layer, sharp_runtime_values_t *values);

/* /runtime_modify: sets (or, for an empty value, removes) admin overrides and
 * publishes a new snapshot. -1 with Envoy's "No admin layer specified" when
 * the runtime has no admin layer. */
int sharp_runtime_merge_admin(sharp_runtime_t *rt, const char *const *keys, const char *const *values, size_t n,
                              char *err, size_t errlen);

/* ---- snapshots ------------------------------------------------------------- */

sharp_runtime_snapshot_t *sharp_runtime_snapshot_ref(sharp_runtime_snapshot_t *s);
void sharp_runtime_snapshot_unref(sharp_runtime_snapshot_t *s);
const sharp_runtime_entry_t *sharp_runtime_snapshot_get(const sharp_runtime_snapshot_t *s, const char *key);

/* The calling thread's snapshot: a worker's latest, the loader's on the
 * main thread. The pointer is stable until the thread returns to its loop. */
extern _Thread_local const sharp_runtime_snapshot_t *sharp_runtime_tls;
static inline const sharp_runtime_snapshot_t *sharp_runtime_current(void)
{
    return sharp_runtime_tls;
}

/* ---- lookups (any thread, its own snapshot), as Envoy's Snapshot ---------- */

/* The entry of `key` in the thread's snapshot, NULL if absent or key empty. */
const sharp_runtime_entry_t *sharp_runtime_get(const char *key);
/* getInteger: the value if it is a non-negative number, else the default. */
uint64_t sharp_runtime_get_u64(const char *key, uint64_t default_value);
/* getDouble. */
double sharp_runtime_get_double(const char *key, double default_value);
/* getBoolean (RuntimeFeatureFlag): "true"/"false" or a whole number. */
bool sharp_runtime_get_bool(const char *key, bool default_value);
/* A FractionalPercent's denominator (type.v3.FractionalPercent.DenominatorType,
 * which Envoy validates as enum defined_only) as a number: 100, 10000 or
 * 1000000; 0 for a value the enum does not define, which configs refuse. */
uint32_t sharp_fractional_denominator(int denominator);

/* featureEnabled(key, FractionalPercent default, random) as
 * RuntimeFractionalPercent uses it: the key's FractionalPercent, or a whole
 * number as a percentage (above 100: always), else the default;
 * then random % denominator < numerator. */
bool sharp_runtime_fraction_enabled(const char *key, uint32_t default_numerator, uint32_t default_denominator,
                                    uint64_t random);
/* featureEnabled(key, default percent, random): RuntimeUInt32/RuntimePercent
 * style integer percentages, random % 100 < min(value, 100). */
bool sharp_runtime_percent_enabled(const char *key, uint64_t default_percent, uint64_t random);

#endif
