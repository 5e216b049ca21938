/* sharp-blast-radius: shuffle sharding's blast radius, by simulation.
 *
 * 1,000,000 customers ("customer-<i>") are placed by sharp_shuffle_shard_order
 * on N cells with shards of k cells, for N in {10, 100} and k in {1, 2, 3}.
 * Each customer's shard is computed once per (N, k) and stored as k cell
 * indices; a trial then fails f random cells (f in {1, 2, 3}, a fixed PRNG
 * seed) and passes over the stored shards with a failed-cell bitmap,
 * counting the customers that lost ALL their k cells. Three tables:
 *
 * - blast radius: the mean share lost over the trials, next to the ideal
 *   C(f,k)/C(N,k) (a random f-set contains a given k-set with exactly that
 *   probability; 0 when f < k) and to plain sharding's f/N. PASS: within
 *   10% of the ideal, and exactly 0 when the ideal is 0. (The mean over
 *   random failures is the ideal for ANY placement of customers on k-sets;
 *   what the hash decides is how evenly they spread over the k-sets, i.e.
 *   the worst case, hence the second table.)
 * - shard balance: customers per k-set of cells. Ideal rendezvous hashing
 *   puts each customer on a uniformly random k-set, so the counts are
 *   multinomial and Pearson's statistic is chi-square with C(N,k)-1
 *   degrees of freedom. PASS: p-value > 0.001 (judged when the mean per
 *   k-set is at least 5). The most crowded k-set is
 *   the worst blast radius of f = k failures.
 * - movement: one cell added (N -> N+1, appended); the share of customers
 *   whose shard (as a set) changes, next to the ideal k/(N+1). PASS:
 *   within 10% (when at least MIN_EXPECTED customers are expected to
 *   move), and no customer's shard changes without taking the new cell
 *   (rendezvous stability).
 *
 * Work is split over --threads threads; the failure sets are drawn up front
 * from one PRNG, so the output does not depend on the thread count. Exits 1
 * when any row fails. */
#include "upstream/shuffle_shard.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CELLS 250 /* cell indices are stored in one byte */
#define MAX_K 3
#define MAX_F 3
#define MAX_THREADS 64
#define TOLERANCE 0.10
/* A row is judged against the ideal only when it expects at least this
 * many customers in total (lost over all trials, or moved) (relative sd <= 1/sqrt(400) = 5%, so
 * 10% is two sd or more; with the defaults every row qualifies). */
#define MIN_EXPECTED 400.0
#define BALANCE_MIN_P 0.001

static const uint32_t cell_counts[] = {10, 100};

static struct {
    uint32_t customers;
    uint32_t trials;
    uint64_t fail_seed;
    uint64_t shard_seed;
    uint32_t threads;
    char (*ids)[32];
    const char **idp;
} G;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n) without modulo bias (Lemire's multiply and reject). */
static uint32_t rand_below(uint64_t *s, uint32_t n)
{
    uint64_t m = (uint64_t)(uint32_t)(xorshift64s(s) >> 32) * n;
    if ((uint32_t)m < n) {
        uint32_t t = (uint32_t)-n % n;
        while ((uint32_t)m < t)
            m = (uint64_t)(uint32_t)(xorshift64s(s) >> 32) * n;
    }
    return (uint32_t)(m >> 32);
}

static double choose(uint32_t n, uint32_t k)
{
    if (k > n) return 0;
    double r = 1;
    for (uint32_t i = 0; i < k; i++)
        r = r * (n - i) / (i + 1);
    return r;
}

/* Chi-square upper tail by the Wilson-Hilferty normal approximation
 * (good to a few percent of p for the degrees of freedom used here). */
static double chi2_pvalue(double stat, double df)
{
    double h = 2.0 / (9.0 * df);
    double z = (cbrt(stat / df) - (1 - h)) / sqrt(h);
    return 0.5 * erfc(z / sqrt(2.0));
}

/* ---- parallel parts ---------------------------------------------------- */

typedef struct {
    /* shard computation */
    const sharp_shuffle_shard_t *ss;
    uint8_t *shards; /* customers * k */
    uint32_t k;
    uint32_t from, to;
    /* trials */
    const uint8_t *failed_sets; /* trials * N bitmaps */
    uint32_t ncells;
    uint32_t tfrom, tto;
    uint64_t *lost; /* per trial */
} job_t;

static void *compute_shards(void *arg)
{
    job_t *j = arg;
    char key[32];
    uint32_t out[MAX_K];
    for (uint32_t i = j->from; i < j->to; i++) {
        int len = snprintf(key, sizeof key, "customer-%u", i);
        uint32_t n = sharp_shuffle_shard_order(j->ss, key, (size_t)len, out, j->k);
        if (n != j->k) abort();
        for (uint32_t c = 0; c < j->k; c++)
            j->shards[(size_t)i * j->k + c] = (uint8_t)out[c];
    }
    return NULL;
}

static uint64_t count_lost(const uint8_t *shards, uint32_t customers, uint32_t k,
                           const uint8_t *failed)
{
    uint64_t lost = 0;
    switch (k) {
    case 1:
        for (uint32_t i = 0; i < customers; i++)
            lost += failed[shards[i]];
        break;
    case 2:
        for (uint32_t i = 0; i < customers; i++)
            lost += failed[shards[2 * i]] & failed[shards[2 * i + 1]];
        break;
    default:
        for (uint32_t i = 0; i < customers; i++)
            lost += failed[shards[3 * i]] & failed[shards[3 * i + 1]] & failed[shards[3 * i + 2]];
        break;
    }
    return lost;
}

static void *run_trials(void *arg)
{
    job_t *j = arg;
    for (uint32_t t = j->tfrom; t < j->tto; t++)
        j->lost[t] =
            count_lost(j->shards, G.customers, j->k, j->failed_sets + (size_t)t * j->ncells);
    return NULL;
}

static void run_parallel(void *(*fn)(void *), job_t *jobs, uint32_t n)
{
    pthread_t th[MAX_THREADS];
    for (uint32_t i = 1; i < n; i++)
        if (pthread_create(&th[i], NULL, fn, &jobs[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(2);
        }
    fn(&jobs[0]);
    for (uint32_t i = 1; i < n; i++)
        pthread_join(th[i], NULL);
}

static uint8_t *shards_for(uint32_t ncells, uint32_t k)
{
    sharp_shuffle_shard_t *ss = sharp_shuffle_shard_create(G.idp, ncells, k, G.shard_seed);
    uint8_t *shards = malloc((size_t)G.customers * k);
    if (!ss || !shards) abort();
    job_t jobs[MAX_THREADS];
    for (uint32_t t = 0; t < G.threads; t++) {
        jobs[t] = (job_t){.ss = ss, .shards = shards, .k = k};
        jobs[t].from = (uint32_t)((uint64_t)G.customers * t / G.threads);
        jobs[t].to = (uint32_t)((uint64_t)G.customers * (t + 1) / G.threads);
    }
    run_parallel(compute_shards, jobs, G.threads);
    sharp_shuffle_shard_free(ss);
    return shards;
}

/* ---- the three tables ---------------------------------------------------- */

typedef struct {
    char text[160];
} row_t;

static row_t blast_rows[64], balance_rows[16], move_rows[16];
static uint32_t nblast, nbalance, nmove, nfail;

static void blast(uint32_t n, uint32_t k, const uint8_t *shards, uint64_t *rng)
{
    uint8_t *sets = calloc((size_t)G.trials * n, 1);
    uint64_t *lost = calloc(G.trials, sizeof *lost);
    if (!sets || !lost) abort();
    for (uint32_t f = 1; f <= MAX_F; f++) {
        /* f distinct cells per trial: a partial Fisher-Yates shuffle. */
        memset(sets, 0, (size_t)G.trials * n);
        for (uint32_t t = 0; t < G.trials; t++) {
            uint32_t perm[MAX_CELLS];
            for (uint32_t i = 0; i < n; i++)
                perm[i] = i;
            for (uint32_t i = 0; i < f; i++) {
                uint32_t j = i + rand_below(rng, n - i);
                uint32_t x = perm[i];
                perm[i] = perm[j];
                perm[j] = x;
                sets[(size_t)t * n + perm[i]] = 1;
            }
        }
        job_t jobs[MAX_THREADS];
        for (uint32_t t = 0; t < G.threads; t++) {
            jobs[t] = (job_t){.shards = (uint8_t *)shards,
                              .k = k,
                              .failed_sets = sets,
                              .ncells = n,
                              .lost = lost};
            jobs[t].tfrom = (uint32_t)((uint64_t)G.trials * t / G.threads);
            jobs[t].tto = (uint32_t)((uint64_t)G.trials * (t + 1) / G.threads);
        }
        run_parallel(run_trials, jobs, G.threads);

        uint64_t sum = 0, worst = 0;
        for (uint32_t t = 0; t < G.trials; t++) {
            sum += lost[t];
            if (lost[t] > worst) worst = lost[t];
        }
        double per_trial = (double)sum / G.trials;
        double share = per_trial / G.customers;
        double ideal = choose(f, k) / choose(n, k);
        double plain = (double)f / n;
        char err[32], verdict[32];
        if (ideal == 0) {
            snprintf(err, sizeof err, "%s", "exact 0");
            bool ok = sum == 0;
            snprintf(verdict, sizeof verdict, "%s", ok ? "PASS" : "FAIL");
            nfail += !ok;
        } else {
            double rel = (share - ideal) / ideal;
            snprintf(err, sizeof err, "%+.2f%%", 100 * rel);
            if (ideal * G.customers * G.trials < MIN_EXPECTED) {
                snprintf(verdict, sizeof verdict, "%s", "n/a (too few)");
            } else {
                bool ok = fabs(rel) <= TOLERANCE;
                snprintf(verdict, sizeof verdict, "%s", ok ? "PASS" : "FAIL");
                nfail += !ok;
            }
        }
        snprintf(blast_rows[nblast++].text, sizeof blast_rows[0].text,
                 "%4u %2u %2u %6u %12.1f %11.5f %11.5f %9.3f %9s %10.5f  %s", n, k, f, G.trials,
                 per_trial, 100 * share, 100 * ideal, 100 * plain, err,
                 100.0 * (double)worst / G.customers, verdict);
    }
    free(sets);
    free(lost);
}

/* Rank of a k-set {a < b < c} of n cells in a dense n^k table. */
static size_t set_slot(const uint8_t *s, uint32_t k, uint32_t n)
{
    uint32_t v[MAX_K];
    for (uint32_t i = 0; i < k; i++)
        v[i] = s[i];
    for (uint32_t i = 1; i < k; i++) /* sort the k (<= 3) indices */
        for (uint32_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint32_t x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    size_t slot = 0;
    for (uint32_t i = 0; i < k; i++)
        slot = slot * n + v[i];
    return slot;
}

static void balance(uint32_t n, uint32_t k, const uint8_t *shards)
{
    size_t slots = 1;
    for (uint32_t i = 0; i < k; i++)
        slots *= n;
    uint32_t *count = calloc(slots, sizeof *count);
    if (!count) abort();
    for (uint32_t i = 0; i < G.customers; i++)
        count[set_slot(shards + (size_t)i * k, k, n)]++;
    double sets = choose(n, k), e = G.customers / sets, stat = 0;
    uint32_t max = 0;
    /* Empty slots that are not sorted k-sets stay 0; visit the k-sets only. */
    for (size_t s = 0; s < slots; s++) {
        uint32_t v[MAX_K];
        size_t x = s;
        for (uint32_t i = k; i-- > 0;) {
            v[i] = (uint32_t)(x % n);
            x /= n;
        }
        bool valid = true;
        for (uint32_t i = 1; i < k; i++)
            if (v[i - 1] >= v[i]) valid = false;
        if (!valid) continue;
        stat += (count[s] - e) * (count[s] - e) / e;
        if (count[s] > max) max = count[s];
    }
    double df = sets - 1;
    char verdict[32];
    if (df < 1 || e < 5) { /* Pearson's approximation needs about 5 per set */
        snprintf(verdict, sizeof verdict, "%s", "n/a");
        snprintf(balance_rows[nbalance++].text, sizeof balance_rows[0].text,
                 "%4u %2u %8.0f %10.1f %9u %9.4f %9s %8s  %s", n, k, sets, e, max,
                 100.0 * max / G.customers, "-", "-", verdict);
    } else {
        double p = chi2_pvalue(stat, df);
        bool ok = p > BALANCE_MIN_P;
        nfail += !ok;
        snprintf(balance_rows[nbalance++].text, sizeof balance_rows[0].text,
                 "%4u %2u %8.0f %10.1f %9u %9.4f %9.3f %8.4f  %s", n, k, sets, e, max,
                 100.0 * max / G.customers, stat / df, p, ok ? "PASS" : "FAIL");
    }
    free(count);
}

static void movement(uint32_t n, uint32_t k, const uint8_t *before)
{
    uint8_t *after = shards_for(n + 1, k);
    uint64_t moved = 0, bad = 0;
    for (uint32_t i = 0; i < G.customers; i++) {
        const uint8_t *x = before + (size_t)i * k, *y = after + (size_t)i * k;
        bool has_new = false, same = true;
        for (uint32_t a = 0; a < k; a++) {
            if (y[a] == n) has_new = true;
            bool found = false;
            for (uint32_t b = 0; b < k; b++)
                if (x[b] == y[a]) found = true;
            if (!found) same = false;
        }
        if (same) continue;
        moved++;
        if (!has_new) bad++;
    }
    free(after);
    double share = (double)moved / G.customers, ideal = (double)k / (n + 1);
    double rel = (share - ideal) / ideal;
    bool measurable = ideal * G.customers >= MIN_EXPECTED;
    bool ok = (!measurable || fabs(rel) <= TOLERANCE) && bad == 0;
    nfail += !ok;
    snprintf(move_rows[nmove++].text, sizeof move_rows[0].text,
             "%4u %2u %10" PRIu64 " %9.4f %11.4f %+8.2f%% %10" PRIu64 "  %s", n, k, moved,
             100 * share, 100 * ideal, 100 * rel, bad,
             !ok          ? "FAIL"
             : measurable ? "PASS"
                          : "n/a (too few)");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sharp-blast-radius [--customers 1000000] [--trials 200] [--seed 1]\n"
               "                          [--shard-seed 0] [--threads 2]\n");
}

int main(int argc, char **argv)
{
    G.customers = 1000000;
    G.trials = 200;
    G.fail_seed = 1;
    G.shard_seed = 0;
    G.threads = 2;
    static const struct option opts[] = {
        {"customers", required_argument, NULL, 'c'},
        {"trials", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"shard-seed", required_argument, NULL, 'S'},
        {"threads", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "c:t:s:S:j:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            G.customers = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 't':
            G.trials = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 's':
            G.fail_seed = strtoull(optarg, NULL, 0);
            break;
        case 'S':
            G.shard_seed = strtoull(optarg, NULL, 0);
            break;
        case 'j':
            G.threads = (uint32_t)strtoul(optarg, NULL, 0);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (G.customers == 0 || G.trials == 0 || G.threads == 0 || G.threads > MAX_THREADS) {
        usage(stderr);
        return 2;
    }
    /* The golden score of test/unit/test_shuffle_shard.c: this binary is
     * built separately, so the two agree only if the hash is the same. */
    if (sharp_shuffle_shard_score(0x5348415250ull, "10.0.0.1:80", "customer-42", 11) !=
        0x23BA4F76D017DE73ull) {
        fprintf(stderr, "shuffle shard hash differs from the golden value\n");
        return 1;
    }

    G.ids = calloc(MAX_CELLS, sizeof *G.ids);
    G.idp = calloc(MAX_CELLS, sizeof *G.idp);
    for (uint32_t i = 0; i < MAX_CELLS; i++) {
        snprintf(G.ids[i], sizeof G.ids[i], "10.0.%u.%u:8080", i / 250, i % 250 + 1);
        G.idp[i] = G.ids[i];
    }

    double t0 = now_s();
    uint64_t rng = G.fail_seed ? G.fail_seed : 0x9E3779B97F4A7C15ull;
    for (size_t ni = 0; ni < sizeof cell_counts / sizeof cell_counts[0]; ni++) {
        uint32_t n = cell_counts[ni];
        for (uint32_t k = 1; k <= MAX_K; k++) {
            uint8_t *shards = shards_for(n, k);
            blast(n, k, shards, &rng);
            balance(n, k, shards);
            movement(n, k, shards);
            free(shards);
        }
    }
    double elapsed = now_s() - t0;

    printf("sharp-blast-radius: %u customers (\"customer-<i>\"), cells \"10.0.0.<j>:8080\", "
           "shard seed %" PRIu64 ",\n%u trials per row (failed cells drawn with PRNG seed %" PRIu64
           "), %u threads\n\n",
           G.customers, G.shard_seed, G.trials, G.fail_seed, G.threads);
    printf("Blast radius: customers who lose ALL k cells of their shard when f random cells fail\n"
           "(ideal = C(f,k)/C(N,k); plain = plain sharding, one cell per customer: f/N;\n"
           " worst = the worst single trial; PASS = within %.0f%% of ideal, exactly 0 if ideal is "
           "0)\n",
           100 * TOLERANCE);
    printf("%4s %2s %2s %6s %12s %11s %11s %9s %9s %10s  %s\n", "N", "k", "f", "trials",
           "lost/trial", "measured %", "ideal %", "plain %", "rel.err", "worst %", "result");
    for (uint32_t i = 0; i < nblast; i++)
        printf("%s\n", blast_rows[i].text);
    printf("\nShard balance: customers per k-set of cells (the worst f=k blast radius is the "
           "fullest set;\nPearson chi-square over all C(N,k) sets, PASS = p > %.3f)\n",
           BALANCE_MIN_P);
    printf("%4s %2s %8s %10s %9s %9s %9s %8s  %s\n", "N", "k", "k-sets", "mean/set", "max/set",
           "max %", "chi2/df", "p", "result");
    for (uint32_t i = 0; i < nbalance; i++)
        printf("%s\n", balance_rows[i].text);
    printf("\nMovement: one cell added (N -> N+1): customers whose shard changes\n"
           "(ideal = k/(N+1); stray = changed without taking the new cell, must be 0;\n"
           " PASS = within %.0f%% of ideal and no stray)\n",
           100 * TOLERANCE);
    printf("%4s %2s %10s %9s %11s %9s %10s  %s\n", "N", "k", "moved", "moved %", "ideal %",
           "rel.err", "stray", "result");
    for (uint32_t i = 0; i < nmove; i++)
        printf("%s\n", move_rows[i].text);
    uint32_t rows = nblast + nbalance + nmove;
    printf("\n%.1f s. RESULT: %s (%u of %u rows failed)\n", elapsed, nfail ? "FAIL" : "PASS", nfail,
           rows);
    free(G.ids);
    free(G.idp);
    return nfail ? 1 : 0;
}
