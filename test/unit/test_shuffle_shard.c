/* test_shuffle_shard.c: rendezvous shuffle sharding: determinism (golden
 * values), stability when a cell is added or removed, uniformity
 * (chi-square), the failover order, clamps and the partial orders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "upstream/shuffle_shard.h"
#include "common.h"

#include <math.h>

#define SEED 0x5348415250ull /* "SHARP" */
#define MAXC 1024

typedef struct {
    char buf[MAXC][40];
    const char *ids[MAXC];
    uint32_t n;
} cells_t;

/* Cells named like cluster endpoints: 10.0.<i/250>.<i%250+1>:80. */
static void cells_init(cells_t *c, uint32_t n)
{
    c->n = n;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(c->buf[i], sizeof c->buf[i], "10.0.%u.%u:80", i / 250, i % 250 + 1);
        c->ids[i] = c->buf[i];
    }
}

static size_t key_of(char *buf, size_t cap, uint32_t i)
{
    return (size_t)snprintf(buf, cap, "customer-%u", i);
}

/* The reference ranking, from the public score function: higher score
 * first, equal scores by lower index. */
static void reference_order(const char *const *ids, uint32_t n, uint64_t seed, const void *key,
                            size_t keylen, uint32_t *out)
{
    uint64_t sc[MAXC];
    for (uint32_t i = 0; i < n; i++) {
        sc[i] = sharp_shuffle_shard_score(seed, ids[i], key, keylen);
        out[i] = i;
    }
    for (uint32_t i = 1; i < n; i++) { /* insertion sort: small n in tests */
        uint32_t x = out[i], j = i;
        while (j > 0 && (sc[out[j - 1]] < sc[x] || (sc[out[j - 1]] == sc[x] && out[j - 1] > x))) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = x;
    }
}

static bool is_permutation(const uint32_t *v, uint32_t n)
{
    bool seen[MAXC] = {0};
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] >= n || seen[v[i]]) return false;
        seen[v[i]] = true;
    }
    return true;
}

/* Upper regularized incomplete gamma Q(a, x): the chi-square p-value is
 * Q(df / 2, stat / 2). Series below a + 1, Lentz's continued fraction above. */
static double gamma_q(double a, double x)
{
    if (x <= 0) return 1.0;
    double lg = lgamma(a);
    if (x < a + 1) {
        double sum = 1.0 / a, term = sum;
        for (int n = 1; n < 1000; n++) {
            term *= x / (a + n);
            sum += term;
            if (fabs(term) < fabs(sum) * 1e-15) break;
        }
        return 1.0 - sum * exp(-x + a * log(x) - lg);
    }
    double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
    for (int i = 1; i < 1000; i++) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300) c = 1e-300;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-15) break;
    }
    return exp(-x + a * log(x) - lg) * h;
}

static double chi2_pvalue(double stat, double df)
{
    return gamma_q(df / 2, stat / 2);
}

static void test_gamma_q_sanity(void **state)
{
    /* Known critical values: chi2(19) 0.001 -> 43.820, chi2(1) 0.05 -> 3.841. */
    assert_true(fabs(chi2_pvalue(43.820, 19) - 0.001) < 2e-5);
    assert_true(fabs(chi2_pvalue(3.841, 1) - 0.05) < 2e-4);
    assert_true(fabs(chi2_pvalue(19, 19) - 0.4566) < 1e-3);
}

static void test_create_clamps(void **state)
{
    cells_t c;
    cells_init(&c, 5);
    assert_null(sharp_shuffle_shard_create(c.ids, 0, 3, SEED));
    sharp_shuffle_shard_free(NULL);

    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, 5, 0, SEED);
    assert_non_null(ss);
    assert_int_equal(sharp_shuffle_shard_size(ss), 1);
    assert_int_equal(sharp_shuffle_shard_cells(ss), 5);
    sharp_shuffle_shard_free(ss);

    ss = sharp_shuffle_shard_create(c.ids, 5, 100, SEED);
    assert_int_equal(sharp_shuffle_shard_size(ss), 5);
    sharp_shuffle_shard_free(ss);

    ss = sharp_shuffle_shard_create(c.ids, 5, 2, SEED);
    assert_int_equal(sharp_shuffle_shard_size(ss), 2);
    sharp_shuffle_shard_free(ss);

    /* One cell: every key gets it. */
    ss = sharp_shuffle_shard_create(c.ids, 1, 3, SEED);
    assert_int_equal(sharp_shuffle_shard_size(ss), 1);
    uint32_t out[4] = {9, 9, 9, 9};
    assert_int_equal(sharp_shuffle_shard_order(ss, "k", 1, out, 4), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 9);
    sharp_shuffle_shard_free(ss);
}

/* A change of the hash, the key encoding or the ranking fails here: every
 * process and machine must agree on these numbers. */
static void test_golden(void **state)
{
    assert_true(sharp_shuffle_shard_score(SEED, "10.0.0.1:80", "customer-42", 11) ==
                0x23BA4F76D017DE73ull);
    assert_true(sharp_shuffle_shard_score(0, "10.0.0.1:80", "customer-42", 11) ==
                0xF6B91AF72A55D3A8ull);
    assert_true(sharp_shuffle_shard_score(0, "", NULL, 0) == 0x43BEDF3318EBDD2Eull);
    assert_true(sharp_shuffle_shard_score(0, "cell-with-a-longer-identity:8443",
                                          "a key longer than eight bytes",
                                          29) == 0x2103E230B8C6F141ull);

    cells_t c;
    cells_init(&c, 10); /* 10.0.0.1:80 .. 10.0.0.10:80 */
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, 10, 3, SEED);
    static const uint32_t golden[10] = {8, 9, 2, 4, 6, 3, 7, 5, 1, 0};
    uint32_t out[10];
    assert_int_equal(sharp_shuffle_shard_order(ss, "customer-42", 11, out, 10), 10);
    assert_memory_equal(out, golden, sizeof golden);
    sharp_shuffle_shard_free(ss);
}

/* Same inputs, same order: the same object twice, a second object built
 * independently from copies of the ids elsewhere in memory, keys at every
 * alignment, and the reference ranking from the public score. */
static void test_deterministic(void **state)
{
    cells_t c;
    cells_init(&c, 37);
    char *copies[37];
    for (uint32_t i = 0; i < 37; i++)
        copies[i] = sharp_strdup(c.ids[i]);
    sharp_shuffle_shard_t *a = sharp_shuffle_shard_create(c.ids, 37, 4, SEED);
    sharp_shuffle_shard_t *b = sharp_shuffle_shard_create((const char *const *)copies, 37, 4, SEED);
    for (uint32_t i = 0; i < 37; i++) { /* a is precomputed; b must not see the old memory */
        memset(copies[i], 'x', strlen(copies[i]));
        free(copies[i]);
    }
    for (uint32_t i = 0; i < 2000; i++) {
        char key[32], shifted[48];
        size_t len = key_of(key, sizeof key, i);
        uint32_t o1[37], o2[37], o3[37], ref[37];
        assert_int_equal(sharp_shuffle_shard_order(a, key, len, o1, 37), 37);
        assert_int_equal(sharp_shuffle_shard_order(a, key, len, o2, 37), 37);
        memcpy(shifted + 1 + i % 8, key, len); /* another address and alignment */
        assert_int_equal(sharp_shuffle_shard_order(b, shifted + 1 + i % 8, len, o3, 37), 37);
        reference_order(c.ids, 37, SEED, key, len, ref);
        assert_memory_equal(o1, o2, sizeof o1);
        assert_memory_equal(o1, o3, sizeof o1);
        assert_memory_equal(o1, ref, sizeof o1);
    }
    sharp_shuffle_shard_free(a);
    sharp_shuffle_shard_free(b);
}

/* Keys of every length 0..40 (all tail lengths of the word loop), binary
 * keys with zero bytes, and an empty key. */
static void test_key_lengths(void **state)
{
    cells_t c;
    cells_init(&c, 9);
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, 9, 2, SEED);
    uint8_t key[40];
    for (uint32_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(i * 37);
    key[5] = 0;
    uint64_t prev = 0;
    for (size_t len = 0; len <= sizeof key; len++) {
        uint32_t out[9], ref[9];
        assert_int_equal(sharp_shuffle_shard_order(ss, len ? key : NULL, len, out, 9), 9);
        reference_order(c.ids, 9, SEED, key, len, ref);
        assert_memory_equal(out, ref, sizeof out);
        uint64_t s = sharp_shuffle_shard_score(SEED, c.ids[0], key, len);
        assert_true(s != prev); /* a zero byte appended is a different key */
        prev = s;
    }
    sharp_shuffle_shard_free(ss);
}

/* Strong avalanche: flipping any one bit of the key, or of the cell id,
 * flips each bit of the score with probability about 1/2. */
static void test_avalanche(void **state)
{
    enum { SAMPLES = 2000, KEYBITS = 128, CELLBITS = 96 };
    static uint32_t flips[KEYBITS][64];
    memset(flips, 0, sizeof flips);
    uint64_t rng = 0x1234567ull;
    for (int s = 0; s < SAMPLES; s++) {
        uint8_t key[16];
        for (int i = 0; i < 16; i += 8) {
            uint64_t r = sharp_xorshift64s(&rng);
            memcpy(key + i, &r, 8);
        }
        uint64_t base = sharp_shuffle_shard_score(SEED, "10.0.0.1:80", key, sizeof key);
        for (int bit = 0; bit < KEYBITS; bit++) {
            key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            uint64_t d = base ^ sharp_shuffle_shard_score(SEED, "10.0.0.1:80", key, sizeof key);
            key[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            for (int o = 0; o < 64; o++)
                flips[bit][o] += (uint32_t)(d >> o & 1);
        }
    }
    for (int bit = 0; bit < KEYBITS; bit++)
        for (int o = 0; o < 64; o++) {
            double p = (double)flips[bit][o] / SAMPLES; /* sd 0.011 */
            assert_true(p > 0.44 && p < 0.56);
        }

    memset(flips, 0, sizeof flips);
    for (int s = 0; s < SAMPLES; s++) {
        char id[13];
        for (int i = 0; i < 12; i++)
            id[i] = (char)(0x21 + sharp_xorshift64s(&rng) % 64); /* flips stay printable */
        id[12] = 0;
        char key[32];
        size_t len = key_of(key, sizeof key, (uint32_t)s);
        uint64_t base = sharp_shuffle_shard_score(SEED, id, key, len);
        for (int bit = 0; bit < CELLBITS; bit++) {
            if (bit % 8 == 7) continue; /* keep ids free of NUL and high bytes */
            id[bit / 8] ^= (char)(1u << (bit % 8));
            uint64_t d = base ^ sharp_shuffle_shard_score(SEED, id, key, len);
            id[bit / 8] ^= (char)(1u << (bit % 8));
            for (int o = 0; o < 64; o++)
                flips[bit][o] += (uint32_t)(d >> o & 1);
        }
    }
    for (int bit = 0; bit < CELLBITS; bit++) {
        if (bit % 8 == 7) continue;
        for (int o = 0; o < 64; o++) {
            double p = (double)flips[bit][o] / SAMPLES;
            assert_true(p > 0.44 && p < 0.56);
        }
    }
}

static void test_seed_changes_shards(void **state)
{
    cells_t c;
    cells_init(&c, 20);
    sharp_shuffle_shard_t *a = sharp_shuffle_shard_create(c.ids, 20, 3, SEED);
    sharp_shuffle_shard_t *b = sharp_shuffle_shard_create(c.ids, 20, 3, SEED + 1);
    int same = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        uint32_t x[3], y[3];
        sharp_shuffle_shard_order(a, key, len, x, 3);
        sharp_shuffle_shard_order(b, key, len, y, 3);
        same += memcmp(x, y, sizeof x) == 0;
    }
    /* Independent ordered triples agree with probability 1/6840. */
    assert_true(same < 10);
    sharp_shuffle_shard_free(a);
    sharp_shuffle_shard_free(b);
}

/* The customer's shard as cell ids, in rank order. */
static void shard_ids(const sharp_shuffle_shard_t *ss, const char *const *ids, const char *key,
                      size_t len, uint32_t k, const char **out)
{
    uint32_t idx[16];
    assert_int_equal(sharp_shuffle_shard_order(ss, key, len, idx, k), k);
    for (uint32_t i = 0; i < k; i++)
        out[i] = ids[idx[i]];
}

static bool contains(const char *const *v, uint32_t n, const char *id)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(v[i], id) == 0) return true;
    return false;
}

/* Adding a cell (at the front of the list, so every index shifts: the
 * ranking follows identities, not positions). A customer whose new shard
 * does not hold the new cell keeps exactly its shard; one whose does gets
 * the new cell in and its old last cell out, the others in the same order.
 * About k / (N + 1) of the customers move. */
static void test_stable_on_add(void **state)
{
    enum { N = 20, K = 3, KEYS = 50000 };
    cells_t c;
    cells_init(&c, N + 1);
    const char *before[N], *after[N + 1];
    for (uint32_t i = 0; i < N; i++)
        before[i] = c.ids[i];
    after[0] = c.ids[N];
    for (uint32_t i = 0; i < N; i++)
        after[i + 1] = c.ids[i];
    sharp_shuffle_shard_t *a = sharp_shuffle_shard_create(before, N, K, SEED);
    sharp_shuffle_shard_t *b = sharp_shuffle_shard_create(after, N + 1, K, SEED);
    uint32_t moved = 0;
    for (uint32_t i = 0; i < KEYS; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        const char *x[K], *y[K];
        shard_ids(a, before, key, len, K, x);
        shard_ids(b, after, key, len, K, y);
        if (!contains(y, K, c.ids[N])) {
            for (uint32_t j = 0; j < K; j++)
                assert_string_equal(x[j], y[j]);
            continue;
        }
        moved++;
        const char *rest[K];
        uint32_t n = 0;
        for (uint32_t j = 0; j < K; j++)
            if (y[j] != c.ids[N]) rest[n++] = y[j];
        assert_int_equal(n, K - 1);
        for (uint32_t j = 0; j < K - 1; j++)
            assert_string_equal(rest[j], x[j]);
    }
    double share = (double)moved / KEYS, ideal = (double)K / (N + 1);
    print_message("add: moved %.4f, ideal k/(N+1) %.4f\n", share, ideal);
    assert_true(fabs(share - ideal) < 0.05 * ideal);
    sharp_shuffle_shard_free(a);
    sharp_shuffle_shard_free(b);
}

/* Removing a cell from the middle: only customers that had it move (to
 * their next cell in order); about k / N of them. */
static void test_stable_on_remove(void **state)
{
    enum { N = 20, K = 3, KEYS = 50000, GONE = 7 };
    cells_t c;
    cells_init(&c, N);
    const char *after[N - 1];
    for (uint32_t i = 0, n = 0; i < N; i++)
        if (i != GONE) after[n++] = c.ids[i];
    sharp_shuffle_shard_t *a = sharp_shuffle_shard_create(c.ids, N, K, SEED);
    sharp_shuffle_shard_t *b = sharp_shuffle_shard_create(after, N - 1, K, SEED);
    uint32_t moved = 0;
    for (uint32_t i = 0; i < KEYS; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        const char *x[K + 1], *y[K];
        shard_ids(a, c.ids, key, len, K + 1, x); /* the shard and the next cell */
        shard_ids(b, after, key, len, K, y);
        if (!contains(x, K, c.ids[GONE])) {
            for (uint32_t j = 0; j < K; j++)
                assert_string_equal(x[j], y[j]);
            continue;
        }
        moved++;
        for (uint32_t j = 0, n = 0; j <= K; j++)
            if (x[j] != c.ids[GONE]) assert_string_equal(x[j], y[n++]);
    }
    double share = (double)moved / KEYS, ideal = (double)K / N;
    print_message("remove: moved %.4f, ideal k/N %.4f\n", share, ideal);
    assert_true(fabs(share - ideal) < 0.05 * ideal);
    sharp_shuffle_shard_free(a);
    sharp_shuffle_shard_free(b);
}

/* How often each cell is in a shard, over 100k customers. Each customer
 * puts k distinct cells in, so a cell's count is binomial(n, p = k/N) and
 * the counts sum to n*k; their covariance is n p (1-p) N/(N-1) (I - J/N),
 * so sum (O - E)^2 / (E (1 - p) N / (N - 1)) is chi-square with N - 1
 * degrees of freedom (for k = 1 this is Pearson's statistic). */
static double cell_share_pvalue(uint32_t n_cells, uint32_t k, uint32_t keys, bool binary_keys)
{
    cells_t c;
    cells_init(&c, n_cells);
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, n_cells, k, SEED);
    uint64_t count[MAXC] = {0};
    for (uint32_t i = 0; i < keys; i++) {
        char key[32];
        size_t len;
        if (binary_keys) { /* sequential 8-byte little-endian integers */
            for (int b = 0; b < 8; b++)
                key[b] = (char)((uint64_t)i >> (8 * b));
            len = 8;
        } else {
            len = key_of(key, sizeof key, i);
        }
        uint32_t out[16];
        sharp_shuffle_shard_order(ss, key, len, out, k);
        for (uint32_t j = 0; j < k; j++)
            count[out[j]]++;
    }
    double p = (double)k / n_cells, e = (double)keys * p, stat = 0;
    for (uint32_t i = 0; i < n_cells; i++)
        stat += ((double)count[i] - e) * ((double)count[i] - e);
    stat /= e * (1 - p) * n_cells / (n_cells - 1);
    double pv = chi2_pvalue(stat, n_cells - 1);
    print_message("cells %u k %u keys %u%s: chi2 %.2f df %u p %.4f\n", n_cells, k, keys,
                  binary_keys ? " (binary)" : "", stat, n_cells - 1, pv);
    sharp_shuffle_shard_free(ss);
    return pv;
}

static void test_uniform_cells(void **state)
{
    /* Fixed seed and keys, so these are fixed numbers; 0.001 leaves room
     * for a change of hash to land anywhere but in a real bias. */
    assert_true(cell_share_pvalue(20, 3, 100000, false) > 0.001);
    assert_true(cell_share_pvalue(20, 1, 100000, false) > 0.001);
    assert_true(cell_share_pvalue(100, 2, 100000, false) > 0.001);
    assert_true(cell_share_pvalue(20, 3, 100000, true) > 0.001);
}

/* Every k-subset is equally likely: the blast radius of f failed cells
 * depends on exactly that. Pearson over the 45 pairs of 10 cells. */
static void test_uniform_pairs(void **state)
{
    enum { N = 10, K = 2, KEYS = 100000 };
    cells_t c;
    cells_init(&c, N);
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, N, K, SEED);
    uint64_t count[N][N];
    memset(count, 0, sizeof count);
    for (uint32_t i = 0; i < KEYS; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        uint32_t out[K];
        sharp_shuffle_shard_order(ss, key, len, out, K);
        count[SHARP_MIN(out[0], out[1])][SHARP_MAX(out[0], out[1])]++;
    }
    double e = KEYS / 45.0, stat = 0;
    for (uint32_t i = 0; i < N; i++)
        for (uint32_t j = i + 1; j < N; j++)
            stat += (count[i][j] - e) * (count[i][j] - e) / e;
    double pv = chi2_pvalue(stat, 44);
    print_message("pairs of 10 cells: chi2 %.2f df 44 p %.4f\n", stat, pv);
    assert_true(pv > 0.001);
    sharp_shuffle_shard_free(ss);
}

/* The order: the shard first (the same cells order(max = k) gives), then a
 * permutation of the other cells, all in descending score; max < ncells
 * gives a prefix; max 0 writes nothing. */
static void test_failover_order(void **state)
{
    enum { N = 12, K = 3 };
    cells_t c;
    cells_init(&c, N);
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, N, K, SEED);
    for (uint32_t i = 0; i < 1000; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        uint32_t full[N + 4], shard[K], part[N];
        assert_int_equal(sharp_shuffle_shard_order(ss, key, len, full, N + 4), N);
        assert_true(is_permutation(full, N));
        assert_int_equal(sharp_shuffle_shard_order(ss, key, len, shard, K), K);
        assert_memory_equal(full, shard, sizeof shard);
        for (uint32_t j = 1; j < N; j++) {
            uint64_t s0 = sharp_shuffle_shard_score(SEED, c.ids[full[j - 1]], key, len);
            uint64_t s1 = sharp_shuffle_shard_score(SEED, c.ids[full[j]], key, len);
            assert_true(s0 > s1);
        }
        for (uint32_t m = 1; m < N; m++) {
            memset(part, 0xff, sizeof part);
            assert_int_equal(sharp_shuffle_shard_order(ss, key, len, part, m), m);
            assert_memory_equal(part, full, m * sizeof part[0]);
            assert_int_equal(part[m], UINT32_MAX);
        }
        part[0] = 77;
        assert_int_equal(sharp_shuffle_shard_order(ss, key, len, part, 0), 0);
        assert_int_equal(part[0], 77);
    }
    sharp_shuffle_shard_free(ss);
}

/* Equal scores (the same id twice) rank by cell index. */
static void test_ties_by_index(void **state)
{
    const char *ids[] = {"a:1", "b:1", "a:1", "c:1", "b:1"};
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(ids, 5, 2, SEED);
    for (uint32_t i = 0; i < 200; i++) {
        char key[32];
        size_t len = key_of(key, sizeof key, i);
        uint32_t out[5], pos[5];
        assert_int_equal(sharp_shuffle_shard_order(ss, key, len, out, 5), 5);
        assert_true(is_permutation(out, 5));
        for (uint32_t j = 0; j < 5; j++)
            pos[out[j]] = j;
        assert_int_equal(pos[2], pos[0] + 1); /* a twin sits right behind its first */
        assert_int_equal(pos[4], pos[1] + 1);
    }
    sharp_shuffle_shard_free(ss);
}

/* Large cell counts and shard sizes take the other code paths (scores in
 * a buffer, on the heap above 256 cells; quickselect above 16): they must
 * rank exactly like the reference. */
static void test_large(void **state)
{
    static cells_t c;
    cells_init(&c, 1000);
    static const uint32_t shapes[][3] = {
        /* ncells, shard_size, max */
        {1000, 20, 1000}, {1000, 20, 50},  {1000, 20, 17}, {1000, 20, 10}, {1000, 3, 1000},
        {1000, 3, 40},    {300, 100, 300}, {300, 16, 300}, {256, 17, 256}, {256, 256, 256},
        {200, 2, 200},    {17, 17, 17},    {40, 5, 16},
    };
    for (size_t s = 0; s < SHARP_ARRAY_SIZE(shapes); s++) {
        uint32_t n = shapes[s][0], k = shapes[s][1], max = shapes[s][2];
        sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(c.ids, n, k, SEED);
        for (uint32_t i = 0; i < 30; i++) {
            char key[32];
            size_t len = key_of(key, sizeof key, i * 7919u);
            uint32_t out[MAXC], ref[MAXC];
            assert_int_equal(sharp_shuffle_shard_order(ss, key, len, out, max), max);
            reference_order(c.ids, n, SEED, key, len, ref);
            assert_memory_equal(out, ref, max * sizeof out[0]);
        }
        sharp_shuffle_shard_free(ss);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gamma_q_sanity),
        cmocka_unit_test(test_create_clamps),
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_key_lengths),
        cmocka_unit_test(test_avalanche),
        cmocka_unit_test(test_seed_changes_shards),
        cmocka_unit_test(test_stable_on_add),
        cmocka_unit_test(test_stable_on_remove),
        cmocka_unit_test(test_uniform_cells),
        cmocka_unit_test(test_uniform_pairs),
        cmocka_unit_test(test_failover_order),
        cmocka_unit_test(test_ties_by_index),
        cmocka_unit_test(test_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
