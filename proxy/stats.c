/* stats.c: the stat store, per-worker shards and histogram arithmetic. The
 * admin renderers live in stats_render.c.
 *
 * Memory layout and the threading contract:
 *
 * - Every stat has an id, handed out in registration order. Its metadata
 *   (name, kind, the absolute part of a gauge, the "used" flag) lives in
 *   fixed-size pages of STATS_PAGE_SLOTS entries; each shard has its own pages
 *   of 64-bit slots indexed by the same id. Pages are allocated under the
 *   registration lock for the metadata and every shard *before* the id is
 *   returned, and are never moved or freed until sharp_stats_destroy, so a
 *   writer indexing a page can never race with a realloc.
 * - A shard is written only by its owning thread. A slot holds a counter's
 *   value, a gauge's delta (two's complement), or a pointer to the shard's
 *   histogram data, which the owner allocates on its first record. Writes are
 *   a relaxed load plus a relaxed store (no read-modify-write, no fence): on
 *   x86 and arm64 they compile to plain moves, and readers on other threads
 *   use relaxed loads, so there is no data race in the C11 sense.
 * - Pointers that cross threads (pages, histogram data, histogram rows) are
 *   published with release stores and read with acquire loads, so the zeroed
 *   memory behind them is visible to the reader.
 * - Readers sum shards without a lock, so a merged value is not an atomic
 *   snapshot across shards; each shard's own value is always exact.
 */
#include "stats.h"
#include "log.h"
#include "stats_config.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

const double sharp_stats_default_buckets[SHARP_STATS_DEFAULT_NBUCKETS] = {
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000};

#define STATS_PAGE_BITS 10
#define STATS_PAGE_SLOTS (1u << STATS_PAGE_BITS)
#define STATS_MAX_PAGES 1024 /* 1M stats */
#define STATS_MAX (STATS_PAGE_SLOTS * STATS_MAX_PAGES)
#define HIST_SUB (1u << SHARP_HIST_SUB_BITS)

#define RELAXED memory_order_relaxed
#define ACQUIRE memory_order_acquire
#define RELEASE memory_order_release

/* Placeholder ids, one per kind: targets of registrations that failed (kind
 * conflict, store full). Hidden from enumeration and lookups. */
enum { DUMMY_COUNTER, DUMMY_GAUGE, DUMMY_HISTOGRAM, STATS_RESERVED };

/* One shard's data for one histogram, and also the main thread's interval
 * snapshots. Rows of HIST_SUB buckets are allocated when first touched. */
typedef struct {
    _Atomic uint64_t count;
    _Atomic uint64_t sum;
    _Atomic(_Atomic uint64_t *) rows[SHARP_HIST_ROWS];
} hist_data_t;

typedef struct {
    char *name;          /* NULL for placeholders */
    uint8_t kind;        /* sharp_stat_kind_t */
    uint8_t unit;        /* sharp_hist_unit_t */
    _Atomic bool used;   /* gauges, and counters added 0: see stat_used() */
    _Atomic int64_t abs; /* gauge: absolute part set by sharp_gauge_set */
    _Atomic uint64_t reset_base; /* counter: sum of the shards at the last reset */
    /* Histograms, guarded by flush_mu: cumulative values at the last flush
     * and the values recorded between the last two flushes. */
    hist_data_t *flushed_cum;
    hist_data_t *flushed_interval;
    /* What a renderer derived from the name once (Prometheus names, tags,
     * buckets), set by sharp_stats_set_render_cache; freed with free(). */
    _Atomic(void *) render_cache;
    _Atomic uint32_t group; /* deferred group (sharp_stats_defer), 0: none */
} stat_meta_t;

struct sharp_stats_shard {
    sharp_stats_t *store;
    _Atomic(_Atomic uint64_t *) pages[STATS_MAX_PAGES];
};

struct sharp_stats {
    unsigned nshards;
    sharp_stats_shard_t **shards;
    _Atomic uint32_t nstats; /* ids below this are fully initialized */
    _Atomic(stat_meta_t *) meta[STATS_MAX_PAGES];

    pthread_mutex_t mu; /* registration: name table, page allocation */
    /* open addressing: the name's hash in the high half, id + 1 in the
     * low one (0 = empty); a probe compares hashes before it reads a name,
     * so a registration (100 names per cluster of a CDS push) costs one
     * name comparison, not one per slot of its chain */
    uint64_t *table;
    size_t table_cap, table_len;

    pthread_mutex_t flush_mu; /* interval snapshots */
    _Atomic bool flushed;
    /* The histograms' ids in registration order, in pages of
     * STATS_PAGE_SLOTS allocated like the stat pages (under mu, never
     * moved): the flush visits histograms only. */
    _Atomic(uint32_t *) hist_ids[STATS_MAX_PAGES];
    _Atomic uint32_t nhist;

    sharp_stats_config_t *cfg; /* stats_config; NULL: Envoy's defaults */
    _Atomic uint32_t ngroups;  /* deferred groups handed out */
};

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* ---- addressing ------------------------------------------------------- */

static inline stat_meta_t *meta_of(sharp_stats_t *s, sharp_stat_id_t id)
{
    stat_meta_t *page = atomic_load_explicit(&s->meta[id >> STATS_PAGE_BITS], ACQUIRE);
    return &page[id & (STATS_PAGE_SLOTS - 1)];
}

static inline _Atomic uint64_t *slot_of(sharp_stats_shard_t *sh, sharp_stat_id_t id)
{
    _Atomic uint64_t *page = atomic_load_explicit(&sh->pages[id >> STATS_PAGE_BITS], ACQUIRE);
    return &page[id & (STATS_PAGE_SLOTS - 1)];
}

/* A valid, registered id of the given kind (placeholders included). */
static bool is_kind(sharp_stats_t *s, sharp_stat_id_t id, sharp_stat_kind_t kind)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return false;
    return meta_of(s, id)->kind == kind;
}

/* ---- histogram buckets -------------------------------------------------- */

static inline void hist_index(uint64_t v, unsigned *row, unsigned *sub)
{
    if (v < HIST_SUB) {
        *row = 0;
        *sub = (unsigned)v;
        return;
    }
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SHARP_HIST_SUB_BITS */
    *row = e - SHARP_HIST_SUB_BITS + 1;
    *sub = (unsigned)(v >> (e - SHARP_HIST_SUB_BITS)) & (HIST_SUB - 1);
}

/* Smallest value of bucket i, and how many integers it holds. */
static inline uint64_t bucket_lower(unsigned i)
{
    unsigned row = i >> SHARP_HIST_SUB_BITS, sub = i & (HIST_SUB - 1);
    return row == 0 ? sub : ((uint64_t)(HIST_SUB + sub) << (row - 1));
}

static inline uint64_t bucket_width(unsigned i)
{
    unsigned row = i >> SHARP_HIST_SUB_BITS;
    return row == 0 ? 1 : (uint64_t)1 << (row - 1);
}

static _Atomic uint64_t *hist_row(hist_data_t *h, unsigned row, bool create)
{
    _Atomic uint64_t *r = atomic_load_explicit(&h->rows[row], ACQUIRE);
    if (!r && create) {
        r = sharp_calloc(HIST_SUB, sizeof *r);
        atomic_store_explicit(&h->rows[row], r, RELEASE);
    }
    return r;
}

static void hist_data_free(hist_data_t *h)
{
    if (!h) return;
    for (unsigned r = 0; r < SHARP_HIST_ROWS; r++)
        free((void *)h->rows[r]);
    free(h);
}

/* Adds one shard's (or snapshot's) buckets into a dense merged histogram. */
static void hist_accumulate(sharp_hist_merged_t *m, hist_data_t *h)
{
    for (unsigned r = 0; r < SHARP_HIST_ROWS; r++) {
        _Atomic uint64_t *row = hist_row(h, r, false);
        if (!row) continue;
        uint64_t *dst = &m->buckets[r << SHARP_HIST_SUB_BITS];
        for (unsigned i = 0; i < HIST_SUB; i++) {
            uint64_t c = atomic_load_explicit(&row[i], RELAXED);
            dst[i] += c;
            m->count += c;
        }
    }
    m->sum += atomic_load_explicit(&h->sum, RELAXED);
}

/* ---- store lifecycle ---------------------------------------------------- */

static void alloc_page(sharp_stats_t *s, unsigned page)
{
    atomic_store_explicit(&s->meta[page], sharp_calloc(STATS_PAGE_SLOTS, sizeof(stat_meta_t)),
                          RELEASE);
    for (unsigned i = 0; i < s->nshards; i++)
        atomic_store_explicit(&s->shards[i]->pages[page],
                              sharp_calloc(STATS_PAGE_SLOTS, sizeof(_Atomic uint64_t)), RELEASE);
}

sharp_stats_t *sharp_stats_create(unsigned nshards)
{
    sharp_stats_t *s = sharp_calloc(1, sizeof *s);
    s->nshards = nshards ? nshards : 1;
    s->shards = sharp_calloc(s->nshards, sizeof *s->shards);
    for (unsigned i = 0; i < s->nshards; i++) {
        s->shards[i] = sharp_calloc(1, sizeof(sharp_stats_shard_t));
        s->shards[i]->store = s;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->flush_mu, NULL);
    alloc_page(s, 0);
    for (unsigned id = 0; id < STATS_RESERVED; id++) {
        stat_meta_t *m = meta_of(s, id);
        m->kind = (uint8_t)(id == DUMMY_COUNTER ? SHARP_STAT_COUNTER
                            : id == DUMMY_GAUGE ? SHARP_STAT_GAUGE
                                                : SHARP_STAT_HISTOGRAM);
        m->unit = SHARP_HIST_UNSPECIFIED;
    }
    atomic_store_explicit(&s->nstats, STATS_RESERVED, RELEASE);
    return s;
}

void sharp_stats_destroy(sharp_stats_t *s)
{
    if (!s) return;
    uint32_t n = atomic_load_explicit(&s->nstats, ACQUIRE);
    for (uint32_t id = 0; id < n; id++) {
        stat_meta_t *m = meta_of(s, id);
        if (m->kind == SHARP_STAT_HISTOGRAM) {
            for (unsigned i = 0; i < s->nshards; i++)
                hist_data_free((hist_data_t *)(uintptr_t)atomic_load_explicit(
                    slot_of(s->shards[i], id), ACQUIRE));
            hist_data_free(m->flushed_cum);
            hist_data_free(m->flushed_interval);
        }
        free(m->name);
        free(atomic_load_explicit(&m->render_cache, ACQUIRE));
    }
    sharp_stats_config_free(s->cfg);
    for (unsigned p = 0; p < STATS_MAX_PAGES; p++) {
        free(s->meta[p]);
        free(s->hist_ids[p]);
        for (unsigned i = 0; i < s->nshards; i++)
            free((void *)s->shards[i]->pages[p]);
    }
    for (unsigned i = 0; i < s->nshards; i++)
        free(s->shards[i]);
    free(s->shards);
    free(s->table);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->flush_mu);
    free(s);
}

sharp_stats_shard_t *sharp_stats_shard(sharp_stats_t *s, unsigned idx)
{
    return idx < s->nshards ? s->shards[idx] : NULL;
}

unsigned sharp_stats_nshards(const sharp_stats_t *s)
{
    return s->nshards;
}

void sharp_stats_set_config(sharp_stats_t *s, sharp_stats_config_t *cfg)
{
    pthread_mutex_lock(&s->mu);
    sharp_stats_config_t *old = s->cfg;
    s->cfg = cfg;
    pthread_mutex_unlock(&s->mu);
    sharp_stats_config_free(old);
}

const sharp_stats_config_t *sharp_stats_get_config(sharp_stats_t *s)
{
    return s->cfg;
}

void *sharp_stats_render_cache(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return NULL;
    return atomic_load_explicit(&meta_of(s, id)->render_cache, ACQUIRE);
}

bool sharp_stats_set_render_cache(sharp_stats_t *s, sharp_stat_id_t id, void *p)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return false;
    void *expected = NULL;
    return atomic_compare_exchange_strong_explicit(&meta_of(s, id)->render_cache, &expected, p,
                                                   RELEASE, ACQUIRE);
}

bool sharp_stats_deferred_creation(sharp_stats_t *s)
{
    return sharp_stats_config_deferred(s->cfg);
}

uint32_t sharp_stats_new_group(sharp_stats_t *s)
{
    return atomic_fetch_add_explicit(&s->ngroups, 1, RELAXED) + 1;
}

void sharp_stats_defer(sharp_stats_t *s, sharp_stat_id_t id, uint32_t group)
{
    if (id < STATS_RESERVED || id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return;
    atomic_store_explicit(&meta_of(s, id)->group, group, RELAXED);
}

uint32_t sharp_stats_group_of(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return 0;
    return atomic_load_explicit(&meta_of(s, id)->group, RELAXED);
}

uint32_t sharp_stats_ngroups(sharp_stats_t *s)
{
    return atomic_load_explicit(&s->ngroups, RELAXED);
}

/* ---- registration ------------------------------------------------------- */

static uint64_t hash_name(const char *p)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

/* Returns the table position holding `name`, or the empty position where it
 * would go. Caller holds mu and keeps the table at most half full. */
#define SLOT_ID(v) ((uint32_t)(v))
#define SLOT_TAG(v) ((uint32_t)((v) >> 32))
static uint64_t slot_make(uint32_t tag, uint32_t id1)
{
    return (uint64_t)tag << 32 | id1;
}

static size_t table_find_hashed(sharp_stats_t *s, const char *name, uint64_t h)
{
    size_t mask = s->table_cap - 1, i = (size_t)h & mask;
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint64_t v; (v = s->table[i]); i = (i + 1) & mask)
        if (SLOT_TAG(v) == tag && strcmp(meta_of(s, SLOT_ID(v) - 1)->name, name) == 0) break;
    return i;
}

static size_t table_find(sharp_stats_t *s, const char *name)
{
    return table_find_hashed(s, name, hash_name(name));
}

static void table_grow(sharp_stats_t *s)
{
    uint64_t *old = s->table;
    size_t old_cap = s->table_cap;
    s->table_cap = old_cap ? old_cap * 2 : 1024;
    s->table = sharp_calloc(s->table_cap, sizeof *s->table);
    size_t mask = s->table_cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i]) continue;
        /* names are unique: the first empty slot of the chain; the tag is
         * the hash's high half, the position needs the whole hash */
        size_t k = (size_t)hash_name(meta_of(s, SLOT_ID(old[i]) - 1)->name) & mask;
        while (s->table[k]) k = (k + 1) & mask;
        s->table[k] = old[i];
    }
    free(old);
}

static sharp_stat_id_t do_register(sharp_stats_t *s, const char *name, sharp_stat_kind_t kind,
                                   sharp_hist_unit_t unit)
{
    sharp_stat_id_t dummy = (sharp_stat_id_t)kind; /* DUMMY_* follow the kind order */
    if (!name || !*name) {
        sharp_log_error("stats: refusing to register a %s with an empty name", kind_names[kind]);
        return dummy;
    }
    /* stats_config.stats_matcher: a rejected stat is never created; writes
     * through its id land in the hidden placeholder, like Envoy's null
     * stats. Decided here, once per registration, never per request. */
    if (sharp_stats_config_rejects(s->cfg, name)) return dummy;
    pthread_mutex_lock(&s->mu);
    if ((s->table_len + 1) * 2 > s->table_cap) table_grow(s);
    uint64_t h = hash_name(name);
    size_t pos = table_find_hashed(s, name, h);
    if (s->table[pos]) {
        sharp_stat_id_t id = SLOT_ID(s->table[pos]) - 1;
        stat_meta_t *m = meta_of(s, id);
        pthread_mutex_unlock(&s->mu);
        if (m->kind == kind) return id;
        sharp_log_error("stats: '%s' is already registered as a %s, not a %s; writes through this "
                        "registration are dropped",
                        name, kind_names[m->kind], kind_names[kind]);
        return dummy;
    }
    uint32_t id = atomic_load_explicit(&s->nstats, RELAXED);
    if (id >= STATS_MAX) {
        pthread_mutex_unlock(&s->mu);
        sharp_log_error("stats: store is full (%u stats); '%s' is dropped", STATS_MAX, name);
        return dummy;
    }
    if ((id & (STATS_PAGE_SLOTS - 1)) == 0) alloc_page(s, id >> STATS_PAGE_BITS);
    stat_meta_t *m = meta_of(s, id);
    m->name = sharp_strdup(name);
    m->kind = (uint8_t)kind;
    m->unit = (uint8_t)unit;
    s->table[pos] = slot_make((uint32_t)(h >> 32), id + 1);
    s->table_len++;
    if (kind == SHARP_STAT_HISTOGRAM) {
        uint32_t k = atomic_load_explicit(&s->nhist, RELAXED);
        if ((k & (STATS_PAGE_SLOTS - 1)) == 0)
            atomic_store_explicit(&s->hist_ids[k >> STATS_PAGE_BITS],
                                  sharp_calloc(STATS_PAGE_SLOTS, sizeof(uint32_t)), RELEASE);
        atomic_load_explicit(&s->hist_ids[k >> STATS_PAGE_BITS], RELAXED)[k & (STATS_PAGE_SLOTS - 1)] = id;
        atomic_store_explicit(&s->nhist, k + 1, RELEASE);
    }
    atomic_store_explicit(&s->nstats, id + 1, RELEASE);
    pthread_mutex_unlock(&s->mu);
    return id;
}

static sharp_stat_id_t register_v(sharp_stats_t *s, sharp_stat_kind_t kind, sharp_hist_unit_t unit,
                                  const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    sharp_stat_id_t id;
    if (n < 0) {
        id = do_register(s, NULL, kind, unit);
    } else if ((size_t)n < sizeof small) {
        id = do_register(s, small, kind, unit);
    } else {
        char *big = malloc((size_t)n + 1);
        if (!big) abort();
        vsnprintf(big, (size_t)n + 1, fmt, ap2);
        id = do_register(s, big, kind, unit);
        free(big);
    }
    va_end(ap2);
    return id;
}

sharp_stat_id_t sharp_stats_counter(sharp_stats_t *s, const char *name)
{
    return do_register(s, name, SHARP_STAT_COUNTER, SHARP_HIST_UNSPECIFIED);
}

sharp_stat_id_t sharp_stats_gauge(sharp_stats_t *s, const char *name)
{
    return do_register(s, name, SHARP_STAT_GAUGE, SHARP_HIST_UNSPECIFIED);
}

sharp_stat_id_t sharp_stats_histogram(sharp_stats_t *s, const char *name, sharp_hist_unit_t unit)
{
    return do_register(s, name, SHARP_STAT_HISTOGRAM, unit);
}

sharp_stat_id_t sharp_stats_counterf(sharp_stats_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sharp_stat_id_t id = register_v(s, SHARP_STAT_COUNTER, SHARP_HIST_UNSPECIFIED, fmt, ap);
    va_end(ap);
    return id;
}

sharp_stat_id_t sharp_stats_gaugef(sharp_stats_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sharp_stat_id_t id = register_v(s, SHARP_STAT_GAUGE, SHARP_HIST_UNSPECIFIED, fmt, ap);
    va_end(ap);
    return id;
}

sharp_stat_id_t sharp_stats_histogramf(sharp_stats_t *s, sharp_hist_unit_t unit, const char *fmt,
                                       ...)
{
    va_list ap;
    va_start(ap, fmt);
    sharp_stat_id_t id = register_v(s, SHARP_STAT_HISTOGRAM, unit, fmt, ap);
    va_end(ap);
    return id;
}

/* ---- hot path ----------------------------------------------------------- */

static inline void mark_used(stat_meta_t *m)
{
    if (!atomic_load_explicit(&m->used, RELAXED)) atomic_store_explicit(&m->used, true, RELAXED);
}

void sharp_counter_add(sharp_stats_shard_t *sh, sharp_stat_id_t id, uint64_t n)
{
    _Atomic uint64_t *v = slot_of(sh, id);
    atomic_store_explicit(v, atomic_load_explicit(v, RELAXED) + n, RELAXED);
    /* A counter with a non-zero value is used; only add(0) needs the flag. */
    if (sharp_unlikely(n == 0)) mark_used(meta_of(sh->store, id));
}

void sharp_gauge_add(sharp_stats_shard_t *sh, sharp_stat_id_t id, int64_t delta)
{
    _Atomic uint64_t *v = slot_of(sh, id);
    atomic_store_explicit(v, atomic_load_explicit(v, RELAXED) + (uint64_t)delta, RELAXED);
    mark_used(meta_of(sh->store, id));
}

void sharp_gauge_set(sharp_stats_t *s, sharp_stat_id_t id, int64_t value)
{
    if (!is_kind(s, id, SHARP_STAT_GAUGE)) return;
    stat_meta_t *m = meta_of(s, id);
    atomic_store_explicit(&m->abs, value, RELAXED);
    mark_used(m);
}

void sharp_histogram_record(sharp_stats_shard_t *sh, sharp_stat_id_t id, uint64_t value)
{
    /* A zero-initialized id must not be taken for a histogram slot. */
    if (sharp_unlikely(id < STATS_RESERVED)) id = DUMMY_HISTOGRAM;
    _Atomic uint64_t *slot = slot_of(sh, id);
    hist_data_t *h = (hist_data_t *)(uintptr_t)atomic_load_explicit(slot, ACQUIRE);
    if (sharp_unlikely(!h)) {
        h = sharp_calloc(1, sizeof *h);
        atomic_store_explicit(slot, (uint64_t)(uintptr_t)h, RELEASE);
    }
    unsigned row, sub;
    hist_index(value, &row, &sub);
    _Atomic uint64_t *b = atomic_load_explicit(&h->rows[row], ACQUIRE);
    if (sharp_unlikely(!b)) b = hist_row(h, row, true);
    atomic_store_explicit(&b[sub], atomic_load_explicit(&b[sub], RELAXED) + 1, RELAXED);
    atomic_store_explicit(&h->count, atomic_load_explicit(&h->count, RELAXED) + 1, RELAXED);
    atomic_store_explicit(&h->sum, atomic_load_explicit(&h->sum, RELAXED) + value, RELAXED);
}

/* ---- merged reads ------------------------------------------------------- */

static uint64_t sum_slots(sharp_stats_t *s, sharp_stat_id_t id)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < s->nshards; i++)
        total += atomic_load_explicit(slot_of(s->shards[i], id), RELAXED);
    return total;
}

static hist_data_t *shard_hist(sharp_stats_t *s, unsigned shard, sharp_stat_id_t id)
{
    return (hist_data_t *)(uintptr_t)atomic_load_explicit(slot_of(s->shards[shard], id), ACQUIRE);
}

uint64_t sharp_stats_counter_value(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (!is_kind(s, id, SHARP_STAT_COUNTER)) return 0;
    /* Each shard only grows, so the sum never drops below the base. */
    return sum_slots(s, id) - atomic_load_explicit(&meta_of(s, id)->reset_base, RELAXED);
}

void sharp_stats_reset_counters(sharp_stats_t *s)
{
    uint32_t n = atomic_load_explicit(&s->nstats, ACQUIRE);
    for (sharp_stat_id_t id = STATS_RESERVED; id < n; id++)
        if (meta_of(s, id)->kind == SHARP_STAT_COUNTER)
            atomic_store_explicit(&meta_of(s, id)->reset_base, sum_slots(s, id), RELAXED);
}

uint64_t sharp_stats_counter_read(sharp_stats_t *s, sharp_stat_id_t id, bool *used)
{
    *used = false;
    if (!is_kind(s, id, SHARP_STAT_COUNTER)) return 0;
    stat_meta_t *m = meta_of(s, id);
    uint64_t sum = sum_slots(s, id);
    *used = atomic_load_explicit(&m->used, RELAXED) || sum != 0;
    return sum - atomic_load_explicit(&m->reset_base, RELAXED);
}

void sharp_stats_counters_read(sharp_stats_t *s, const sharp_stat_id_t *ids, uint32_t n, uint64_t *values,
                               bool *used)
{
    enum { MAX_SHARDS = 64 };
    if (s->nshards > MAX_SHARDS) {
        for (uint32_t i = 0; i < n; i++) values[i] = sharp_stats_counter_read(s, ids[i], &used[i]);
        return;
    }
    _Atomic uint64_t *pages[MAX_SHARDS];
    stat_meta_t *mpage = NULL;
    uint32_t at = UINT32_MAX, nstats = atomic_load_explicit(&s->nstats, ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        sharp_stat_id_t id = ids[i];
        values[i] = 0;
        used[i] = false;
        if (id >= nstats) continue;
        uint32_t p = id >> STATS_PAGE_BITS, k = id & (STATS_PAGE_SLOTS - 1);
        if (p != at) {
            at = p;
            mpage = atomic_load_explicit(&s->meta[p], ACQUIRE);
            for (unsigned j = 0; j < s->nshards; j++)
                pages[j] = atomic_load_explicit(&s->shards[j]->pages[p], ACQUIRE);
        }
        stat_meta_t *m = &mpage[k];
        if (m->kind != SHARP_STAT_COUNTER) continue;
        uint64_t sum = 0;
        for (unsigned j = 0; j < s->nshards; j++) sum += atomic_load_explicit(&pages[j][k], RELAXED);
        used[i] = atomic_load_explicit(&m->used, RELAXED) || sum != 0;
        values[i] = sum - atomic_load_explicit(&m->reset_base, RELAXED);
    }
}

int64_t sharp_stats_gauge_value(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (!is_kind(s, id, SHARP_STAT_GAUGE)) return 0;
    uint64_t v = sum_slots(s, id) + (uint64_t)atomic_load_explicit(&meta_of(s, id)->abs, RELAXED);
    return (int64_t)v;
}

uint64_t sharp_stats_histogram_count(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (!is_kind(s, id, SHARP_STAT_HISTOGRAM)) return 0;
    uint64_t n = 0;
    for (unsigned i = 0; i < s->nshards; i++) {
        hist_data_t *h = shard_hist(s, i, id);
        if (h) n += atomic_load_explicit(&h->count, RELAXED);
    }
    return n;
}

int sharp_stats_find(sharp_stats_t *s, const char *name, sharp_stat_id_t *id,
                     sharp_stat_kind_t *kind)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (s->table_cap) {
        size_t pos = table_find(s, name);
        if (s->table[pos]) {
            sharp_stat_id_t found = SLOT_ID(s->table[pos]) - 1;
            if (id) *id = found;
            if (kind) *kind = (sharp_stat_kind_t)meta_of(s, found)->kind;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint32_t sharp_stats_size(sharp_stats_t *s)
{
    return atomic_load_explicit(&s->nstats, ACQUIRE);
}

const char *sharp_stats_name(sharp_stats_t *s, sharp_stat_id_t id, sharp_stat_kind_t *kind)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return NULL;
    stat_meta_t *m = meta_of(s, id);
    if (kind) *kind = (sharp_stat_kind_t)m->kind;
    return m->name;
}

bool sharp_stats_used(sharp_stats_t *s, sharp_stat_id_t id)
{
    if (id >= atomic_load_explicit(&s->nstats, ACQUIRE)) return false;
    stat_meta_t *m = meta_of(s, id);
    switch ((sharp_stat_kind_t)m->kind) {
    case SHARP_STAT_COUNTER:
        return atomic_load_explicit(&m->used, RELAXED) || sum_slots(s, id) != 0;
    case SHARP_STAT_GAUGE:
        return atomic_load_explicit(&m->used, RELAXED);
    case SHARP_STAT_HISTOGRAM:
        return sharp_stats_histogram_count(s, id) != 0;
    }
    return false;
}

/* ---- merged histograms -------------------------------------------------- */

static void merge_shards(sharp_stats_t *s, sharp_stat_id_t id, sharp_hist_merged_t *m)
{
    memset(m, 0, sizeof *m);
    for (unsigned i = 0; i < s->nshards; i++) {
        hist_data_t *h = shard_hist(s, i, id);
        if (h) hist_accumulate(m, h);
    }
}

int sharp_stats_histogram_merge(sharp_stats_t *s, sharp_stat_id_t id,
                                sharp_hist_merged_t *cumulative, sharp_hist_merged_t *interval)
{
    if (!is_kind(s, id, SHARP_STAT_HISTOGRAM)) return -1;
    if (cumulative) merge_shards(s, id, cumulative);
    if (!interval) return 0;
    if (!atomic_load_explicit(&s->flushed, ACQUIRE)) {
        if (cumulative)
            memcpy(interval, cumulative, sizeof *interval);
        else
            merge_shards(s, id, interval);
        return 0;
    }
    memset(interval, 0, sizeof *interval);
    pthread_mutex_lock(&s->flush_mu);
    hist_data_t *iv = meta_of(s, id)->flushed_interval;
    if (iv) hist_accumulate(interval, iv);
    pthread_mutex_unlock(&s->flush_mu);
    return 0;
}

/* The shards' running totals of histogram id. A record bumps its bucket,
 * then count, then sum, and each only grows, so totals equal to those of the
 * last flush mean that nothing was recorded in between. */
static void shard_totals(sharp_stats_t *s, sharp_stat_id_t id, uint64_t *count, uint64_t *sum)
{
    uint64_t c = 0, v = 0;
    for (unsigned i = 0; i < s->nshards; i++) {
        hist_data_t *h = shard_hist(s, i, id);
        if (!h) continue;
        c += atomic_load_explicit(&h->count, RELAXED);
        v += atomic_load_explicit(&h->sum, RELAXED);
    }
    *count = c;
    *sum = v;
}

/* Empties a snapshot, keeping its rows (main thread, under flush_mu). */
static void hist_clear(hist_data_t *h)
{
    for (unsigned r = 0; r < SHARP_HIST_ROWS; r++) {
        _Atomic uint64_t *row = hist_row(h, r, false);
        if (!row) continue;
        for (unsigned i = 0; i < HIST_SUB; i++)
            atomic_store_explicit(&row[i], 0, RELAXED);
    }
    atomic_store_explicit(&h->count, 0, RELAXED);
    atomic_store_explicit(&h->sum, 0, RELAXED);
}

/* Closes the interval of histogram id, row by row: only the rows a shard
 * has touched are merged, and the interval is the new cumulative values
 * less the previous ones. `sum` is the shards' sum read before the rows
 * (main thread, under flush_mu). */
static void flush_histogram(sharp_stats_t *s, sharp_stat_id_t id, stat_meta_t *m, uint64_t sum)
{
    hist_data_t *cum = m->flushed_cum, *iv = m->flushed_interval;
    uint64_t cum_count = 0, iv_count = 0;
    for (unsigned r = 0; r < SHARP_HIST_ROWS; r++) {
        uint64_t cur[HIST_SUB];
        bool any = false;
        for (unsigned k = 0; k < s->nshards; k++) {
            hist_data_t *h = shard_hist(s, k, id);
            _Atomic uint64_t *row = h ? hist_row(h, r, false) : NULL;
            if (!row) continue;
            if (!any) memset(cur, 0, sizeof cur);
            any = true;
            for (unsigned i = 0; i < HIST_SUB; i++)
                cur[i] += atomic_load_explicit(&row[i], RELAXED);
        }
        if (!any) {
            /* no shard has the row, so neither can the snapshots, except
             * for zeros (rows are allocated before their first count) */
            _Atomic uint64_t *irow = hist_row(iv, r, false);
            if (irow)
                for (unsigned i = 0; i < HIST_SUB; i++)
                    atomic_store_explicit(&irow[i], 0, RELAXED);
            continue;
        }
        _Atomic uint64_t *crow = hist_row(cum, r, true), *irow = hist_row(iv, r, true);
        for (unsigned i = 0; i < HIST_SUB; i++) {
            uint64_t prev = atomic_load_explicit(&crow[i], RELAXED);
            /* shards only grow, but a bucket read racing with its writer
             * could make a difference look negative */
            uint64_t d = cur[i] > prev ? cur[i] - prev : 0;
            atomic_store_explicit(&crow[i], cur[i], RELAXED);
            atomic_store_explicit(&irow[i], d, RELAXED);
            cum_count += cur[i];
            iv_count += d;
        }
    }
    uint64_t prev_sum = atomic_load_explicit(&cum->sum, RELAXED);
    atomic_store_explicit(&iv->count, iv_count, RELAXED);
    atomic_store_explicit(&iv->sum, sum > prev_sum ? sum - prev_sum : 0, RELAXED);
    atomic_store_explicit(&cum->count, cum_count, RELAXED);
    atomic_store_explicit(&cum->sum, sum, RELAXED);
}

/* The cost of a flush follows what was recorded since the previous one: a
 * histogram whose shard totals did not move keeps its snapshots (its
 * interval is emptied once), one never recorded has none, and only the rows
 * the shards touched are merged. The workers' record path is unchanged. */
void sharp_stats_flush(sharp_stats_t *s)
{
    uint32_t n = atomic_load_explicit(&s->nhist, ACQUIRE);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t *page = atomic_load_explicit(&s->hist_ids[k >> STATS_PAGE_BITS], ACQUIRE);
        sharp_stat_id_t id = page[k & (STATS_PAGE_SLOTS - 1)];
        stat_meta_t *m = meta_of(s, id);
        uint64_t count, sum;
        shard_totals(s, id, &count, &sum);
        /* only this thread writes the snapshots: reading them needs no lock */
        hist_data_t *cum = m->flushed_cum, *iv = m->flushed_interval;
        if (!cum && count == 0 && sum == 0) continue; /* never recorded: empty interval */
        if (cum && count == atomic_load_explicit(&cum->count, RELAXED) &&
            sum == atomic_load_explicit(&cum->sum, RELAXED)) {
            if (!atomic_load_explicit(&iv->count, RELAXED) && !atomic_load_explicit(&iv->sum, RELAXED))
                continue;
            pthread_mutex_lock(&s->flush_mu);
            hist_clear(iv);
            pthread_mutex_unlock(&s->flush_mu);
            continue;
        }
        pthread_mutex_lock(&s->flush_mu);
        if (!cum) {
            m->flushed_cum = sharp_calloc(1, sizeof(hist_data_t));
            m->flushed_interval = sharp_calloc(1, sizeof(hist_data_t));
        }
        flush_histogram(s, id, m, sum);
        pthread_mutex_unlock(&s->flush_mu);
    }
    atomic_store_explicit(&s->flushed, true, RELEASE);
}

/* The value at rank q*count, interpolated linearly over the integers the
 * bucket holds: a bucket [lo, lo+w) of integer values spans lo..lo+w-1, so
 * single-integer buckets (all values below 64) give exact answers and wider
 * ones stay within w/lo <= 1/32 of the true value. q=0 gives the lower bound
 * of the smallest bucket, q=1 the upper bound of the largest. */
double sharp_hist_merged_quantile(const sharp_hist_merged_t *h, double q)
{
    if (h->count == 0 || isnan(q)) return NAN;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    double target = q * (double)h->count, cum = 0;
    unsigned last = 0;
    for (unsigned i = 0; i < SHARP_HIST_NBUCKETS; i++) {
        uint64_t c = h->buckets[i];
        if (!c) continue;
        last = i;
        if (cum + (double)c >= target) {
            double frac = (target - cum) / (double)c;
            if (frac < 0) frac = 0;
            if (frac > 1) frac = 1;
            return (double)bucket_lower(i) + frac * (double)(bucket_width(i) - 1);
        }
        cum += (double)c;
    }
    /* Rounding left target a hair above the total: the largest value. */
    return (double)bucket_lower(last) + (double)(bucket_width(last) - 1);
}

uint64_t sharp_hist_merged_count_le(const sharp_hist_merged_t *h, double le)
{
    if (isnan(le) || le < 0) return 0;
    if (le >= 18446744073709551615.0) return h->count;
    uint64_t limit = (uint64_t)floor(le), n = 0;
    for (unsigned i = 0; i < SHARP_HIST_NBUCKETS; i++) {
        uint64_t c = h->buckets[i];
        if (!c) continue;
        uint64_t lo = bucket_lower(i), w = bucket_width(i);
        if (lo > limit) break;
        if (lo + (w - 1) <= limit) {
            n += c;
        } else {
            unsigned __int128 part = (unsigned __int128)c * (limit - lo + 1) / w;
            n += (uint64_t)part;
        }
    }
    return n;
}

double sharp_stats_histogram_quantile(sharp_stats_t *s, sharp_stat_id_t id, double q)
{
    if (!is_kind(s, id, SHARP_STAT_HISTOGRAM)) return NAN;
    sharp_hist_merged_t *m = sharp_calloc(1, sizeof *m);
    merge_shards(s, id, m);
    double v = sharp_hist_merged_quantile(m, q);
    free(m);
    return v;
}
