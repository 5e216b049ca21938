/* shuffle_shard.c: see shuffle_shard.h. Rendezvous hashing with a 64-bit
 * hash written for it.
 *
 * score(seed, cell, key) = mix(H(seed, CELL, cell) ^ H(seed, KEY, key)):
 * H is a byte-stream hash (xxhash64-style word rounds, then a full
 * avalanche finalizer), separated by domain so a cell id and an equal key
 * never hash alike, and `mix` is the same finalizer. The cells' H is
 * computed once, at create time; a lookup hashes the key once and then
 * costs one mix per cell. Everything is defined on bytes and 64-bit
 * arithmetic: words are read little-endian byte by byte and the seed enters
 * as an integer, never as memory, so every process on every machine ranks
 * the same way.
 *
 * Ranking: higher score first, equal scores by lower cell index. Small
 * requests (at most SMALL_TOP cells wanted) keep a sorted top list while
 * scanning the cells, with no buffer of n scores; larger ones score every
 * cell into a buffer (on the stack up to STACK_CELLS), select the shard
 * first and then the requested part of the rest. */
#include "upstream/shuffle_shard.h"
#include "common.h"

/* xxhash64's primes: odd, with well spread bits. */
#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

/* Domain tags, xored into the seed before it is mixed. */
#define DOMAIN_CELL 0x63656C6C2D696421ull /* "cell-id!" */
#define DOMAIN_KEY 0x637573742D6B6579ull  /* "cust-key" */

#define SMALL_TOP 16
#define STACK_CELLS 256

struct sharp_shuffle_shard {
    uint32_t ncells;
    uint32_t shard_size;
    uint64_t seed;
    uint64_t cell_hash[]; /* H(seed, CELL, cell_ids[i]) */
};

typedef struct {
    uint64_t score;
    uint32_t idx;
} scored_t;

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* A bijective 64-bit finalizer with full avalanche (Pelle Evensen's
 * "moremur" constants): every input bit flips every output bit with
 * probability close to 1/2. */
static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 27;
    x *= 0x3C79AC492BA7B653ull;
    x ^= x >> 33;
    x *= 0x1C69B3F74AC4AE35ull;
    x ^= x >> 27;
    return x;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

static inline uint64_t absorb(uint64_t h, uint64_t w)
{
    w = rotl64(w * P2, 31) * P1;
    return rotl64(h ^ w, 27) * P1 + P4;
}

/* H: the length goes in first, then 8-byte little-endian words, then the
 * 0..7 trailing bytes as one more word (always, so "" and "\0" differ by
 * length only, which is already in). */
static uint64_t hash_bytes(uint64_t seed, uint64_t domain, const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t h = mix64(seed ^ domain) + P5;
    h = absorb(h, (uint64_t)len);
    for (; len >= 8; p += 8, len -= 8)
        h = absorb(h, load_le64(p));
    uint64_t tail = 0;
    for (size_t i = 0; i < len; i++)
        tail |= (uint64_t)p[i] << (8 * i);
    h = absorb(h, tail);
    return mix64(h);
}

static inline uint64_t combine(uint64_t cell_hash, uint64_t key_hash)
{
    return mix64(cell_hash ^ key_hash);
}

uint64_t sharp_shuffle_shard_score(uint64_t seed, const char *cell_id, const void *key,
                                   size_t keylen)
{
    return combine(hash_bytes(seed, DOMAIN_CELL, cell_id, strlen(cell_id)),
                   hash_bytes(seed, DOMAIN_KEY, key, keylen));
}

sharp_shuffle_shard_t *sharp_shuffle_shard_create(const char *const *cell_ids, uint32_t ncells,
                                                  uint32_t shard_size, uint64_t seed)
{
    if (ncells == 0) return NULL;
    sharp_shuffle_shard_t *ss =
        sharp_calloc(1, sizeof *ss + (size_t)ncells * sizeof ss->cell_hash[0]);
    ss->ncells = ncells;
    ss->shard_size = shard_size < 1 ? 1 : shard_size > ncells ? ncells : shard_size;
    ss->seed = seed;
    for (uint32_t i = 0; i < ncells; i++)
        ss->cell_hash[i] = hash_bytes(seed, DOMAIN_CELL, cell_ids[i], strlen(cell_ids[i]));
    return ss;
}

void sharp_shuffle_shard_free(sharp_shuffle_shard_t *ss)
{
    free(ss);
}

uint32_t sharp_shuffle_shard_size(const sharp_shuffle_shard_t *ss)
{
    return ss->shard_size;
}

uint32_t sharp_shuffle_shard_cells(const sharp_shuffle_shard_t *ss)
{
    return ss->ncells;
}

/* The ranking: a before b. Indices are distinct, so this is a total order. */
static inline bool ahead(scored_t a, scored_t b)
{
    return a.score > b.score || (a.score == b.score && a.idx < b.idx);
}

static inline void swap_scored(scored_t *a, scored_t *b)
{
    scored_t t = *a;
    *a = *b;
    *b = t;
}

/* Ranks v[0..n): quicksort (median of three, smaller side first, so the
 * stack stays O(log n)) down to runs of INSERTION_RUN, then insertion. */
#define INSERTION_RUN 24
static void sort_ranked(scored_t *v, uint32_t n)
{
    while (n > INSERTION_RUN) {
        uint32_t mid = n / 2, last = n - 1;
        if (ahead(v[mid], v[0])) swap_scored(&v[mid], &v[0]);
        if (ahead(v[last], v[0])) swap_scored(&v[last], &v[0]);
        if (ahead(v[mid], v[last])) swap_scored(&v[mid], &v[last]);
        uint32_t store = 0;
        for (uint32_t i = 0; i < last; i++)
            if (ahead(v[i], v[last])) swap_scored(&v[i], &v[store++]);
        swap_scored(&v[store], &v[last]);
        if (store < n - store - 1) {
            sort_ranked(v, store);
            v += store + 1;
            n -= store + 1;
        } else {
            sort_ranked(v + store + 1, n - store - 1);
            n = store;
        }
    }
    for (uint32_t i = 1; i < n; i++) {
        scored_t x = v[i];
        uint32_t j = i;
        for (; j > 0 && ahead(x, v[j - 1]); j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

/* Moves the m best of v[0..n) to v[0..m), ranked. For few wanted, m scans;
 * otherwise quickselect (median-of-three pivot; scores are hash outputs, so
 * no input drives it quadratic) and a sort of the m. */
static void select_top(scored_t *v, uint32_t n, uint32_t m)
{
    if (m == 0 || n == 0) return;
    if (m > n) m = n;
    if (m <= SMALL_TOP) {
        for (uint32_t i = 0; i < m; i++) {
            uint32_t best = i;
            for (uint32_t j = i + 1; j < n; j++)
                if (ahead(v[j], v[best])) best = j;
            swap_scored(&v[i], &v[best]);
        }
        return;
    }
    /* Invariant: v[0..lo) rank ahead of v[lo..n), v[hi..n) behind v[0..hi),
     * and lo <= m <= hi; done when m is at either end. */
    uint32_t lo = 0, hi = n;
    while (lo < m && m < hi) {
        uint32_t mid = lo + (hi - lo) / 2, last = hi - 1;
        if (ahead(v[mid], v[lo])) swap_scored(&v[mid], &v[lo]);
        if (ahead(v[last], v[lo])) swap_scored(&v[last], &v[lo]);
        if (ahead(v[mid], v[last])) swap_scored(&v[mid], &v[last]);
        /* v[last] is now the median of the three: the pivot. */
        uint32_t store = lo;
        for (uint32_t i = lo; i < last; i++)
            if (ahead(v[i], v[last])) swap_scored(&v[i], &v[store++]);
        swap_scored(&v[store], &v[last]);
        if (m <= store)
            hi = store;
        else
            lo = store + 1;
    }
    sort_ranked(v, m);
}

/* Keeps the m best (m <= SMALL_TOP) while scoring, inserted in rank order. */
static uint32_t order_small(const sharp_shuffle_shard_t *ss, uint64_t kh, uint32_t *out, uint32_t m)
{
    scored_t top[SMALL_TOP];
    uint32_t cnt = 0;
    for (uint32_t c = 0; c < ss->ncells; c++) {
        scored_t s = {combine(ss->cell_hash[c], kh), c};
        if (cnt == m && !ahead(s, top[m - 1])) continue;
        uint32_t at = cnt < m ? cnt++ : m - 1;
        while (at > 0 && ahead(s, top[at - 1])) {
            top[at] = top[at - 1];
            at--;
        }
        top[at] = s;
    }
    for (uint32_t i = 0; i < m; i++)
        out[i] = top[i].idx;
    return m;
}

uint32_t sharp_shuffle_shard_order(const sharp_shuffle_shard_t *ss, const void *key, size_t keylen,
                                   uint32_t *out, uint32_t max)
{
    uint32_t n = ss->ncells;
    uint32_t m = max < n ? max : n;
    if (m == 0) return 0;
    uint64_t kh = hash_bytes(ss->seed, DOMAIN_KEY, key, keylen);
    if (m <= SMALL_TOP) return order_small(ss, kh, out, m);

    scored_t stack[STACK_CELLS];
    scored_t *v = n <= STACK_CELLS ? stack : sharp_calloc(n, sizeof *v);
    for (uint32_t c = 0; c < n; c++)
        v[c] = (scored_t){combine(ss->cell_hash[c], kh), c};
    /* The shard first, then as much of the rest as was asked for. */
    uint32_t k = ss->shard_size < m ? ss->shard_size : m;
    select_top(v, n, k);
    select_top(v + k, n - k, m - k);
    for (uint32_t i = 0; i < m; i++)
        out[i] = v[i].idx;
    if (v != stack) free(v);
    return m;
}
