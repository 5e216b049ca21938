/* store.c: see store.h. */
#include "filters/cache/store.h"
#include "sbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *hnext;               /* hash chain */
    struct entry *lru_prev, *lru_next; /* most recently used first */
    uint64_t hash;
    char *key;
    size_t klen;
    sharp_headers_t headers;  /* read and written under the store's mutex */
    sharp_cache_body_t *body; /* NULL for a vary marker */
    int64_t response_time_ms;
    uint64_t charge; /* bytes counted against max_bytes */
    /* a vary marker's variants; a variant's marker and its siblings: a
     * marker replaced or evicted takes its variants along */
    struct entry *variants, *marker, *vnext, *vprev;
} entry_t;

struct sharp_cache_store {
    pthread_mutex_t mu;
    entry_t **buckets;
    uint32_t nbuckets; /* a power of two */
    uint32_t n;
    uint64_t bytes;
    uint64_t max_bytes;
    uint32_t max_entries;
    entry_t *lru_head, *lru_tail;
    uint64_t seed;
};

/* What an entry costs besides its key, headers and body: its bookkeeping. */
#define ENTRY_OVERHEAD 128u

void sharp_cache_body_release(sharp_cache_body_t *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

void sharp_cache_hit_free(sharp_cache_hit_t *hit)
{
    sharp_headers_free(&hit->headers);
    sharp_cache_body_release(hit->body);
    hit->body = NULL;
    sharp_sbuf_free(&hit->entry_key);
}

/* Keys are a request's host, path and query: the hash is seeded with the
 * process's random seed, so a client cannot choose keys of one bucket. */
static uint64_t hash_key(const sharp_cache_store_t *st, sharp_str_t k)
{
    return sharp_hash_bytes(st->seed, k.p, k.len);
}

sharp_cache_store_t *sharp_cache_store_new(uint64_t max_bytes, uint32_t max_entries)
{
    sharp_cache_store_t *st = sharp_calloc(1, sizeof *st);
    pthread_mutex_init(&st->mu, NULL);
    st->nbuckets = 64;
    st->buckets = sharp_calloc(st->nbuckets, sizeof *st->buckets);
    st->max_bytes = max_bytes;
    st->max_entries = max_entries ? max_entries : 1;
    st->seed = sharp_hash_seed();
    return st;
}

static void entry_free(entry_t *e)
{
    free(e->key);
    sharp_headers_free(&e->headers);
    sharp_cache_body_release(e->body);
    free(e);
}

void sharp_cache_store_free(sharp_cache_store_t *st)
{
    if (!st) return;
    for (entry_t *e = st->lru_head, *next; e; e = next) {
        next = e->lru_next;
        entry_free(e);
    }
    free(st->buckets);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static entry_t *find(sharp_cache_store_t *st, sharp_str_t key, uint64_t h)
{
    for (entry_t *e = st->buckets[h & (st->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->klen == key.len && !memcmp(e->key, key.p, key.len)) return e;
    return NULL;
}

static void lru_unlink(sharp_cache_store_t *st, entry_t *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        st->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        st->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(sharp_cache_store_t *st, entry_t *e)
{
    e->lru_next = st->lru_head;
    e->lru_prev = NULL;
    if (st->lru_head) st->lru_head->lru_prev = e;
    st->lru_head = e;
    if (!st->lru_tail) st->lru_tail = e;
}

static void remove_entry(sharp_cache_store_t *st, entry_t *e)
{
    while (e->variants) {
        entry_t *v = e->variants;
        e->variants = v->vnext;
        v->marker = NULL;
        remove_entry(st, v);
    }
    entry_t *m = e->marker;
    if (m) {
        if (e->vprev)
            e->vprev->vnext = e->vnext;
        else
            m->variants = e->vnext;
        if (e->vnext) e->vnext->vprev = e->vprev;
    }
    entry_t **pp = &st->buckets[e->hash & (st->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(st, e);
    st->n--;
    st->bytes -= e->charge;
    entry_free(e);
    /* a marker without variants serves nothing */
    if (m && !m->variants) remove_entry(st, m);
}

static void grow(sharp_cache_store_t *st)
{
    uint32_t nb = st->nbuckets * 2;
    entry_t **b = sharp_calloc(nb, sizeof *b);
    for (uint32_t i = 0; i < st->nbuckets; i++) {
        for (entry_t *e = st->buckets[i], *next; e; e = next) {
            next = e->hnext;
            e->hnext = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = nb;
}

/* Puts a new entry at `key` (replacing one there), evicting the least
 * recently used ones to stay within the bounds. Takes the body reference. */
static entry_t *put(sharp_cache_store_t *st, sharp_str_t key, const sharp_headers_t *headers,
                    sharp_cache_body_t *body, int64_t response_time_ms)
{
    uint64_t charge =
        ENTRY_OVERHEAD + key.len + sharp_headers_byte_size(headers) + (body ? body->len : 0);
    if (charge > st->max_bytes) {
        sharp_cache_body_release(body);
        return NULL;
    }
    uint64_t h = hash_key(st, key);
    entry_t *old = find(st, key, h);
    if (old) remove_entry(st, old);
    while (st->lru_tail && (st->bytes + charge > st->max_bytes || st->n + 1 > st->max_entries))
        remove_entry(st, st->lru_tail);
    entry_t *e = sharp_calloc(1, sizeof *e);
    e->hash = h;
    e->key = sharp_strndup(key.p, key.len);
    e->klen = key.len;
    sharp_headers_init(&e->headers);
    sharp_headers_copy(&e->headers, headers);
    e->body = body;
    e->response_time_ms = response_time_ms;
    e->charge = charge;
    if (st->n + 1 > st->nbuckets) grow(st);
    entry_t **b = &st->buckets[h & (st->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    lru_push_front(st, e);
    st->n++;
    st->bytes += charge;
    return e;
}

static void promote(sharp_cache_store_t *st, entry_t *e)
{
    lru_unlink(st, e);
    lru_push_front(st, e);
}

/* Whether marker m holds the same vary values as `vary`. */
static bool same_vary(const entry_t *m, const sharp_headers_t *vary)
{
    if (m->headers.n != vary->n) return false;
    for (uint32_t i = 0; i < vary->n; i++) {
        sharp_str_t a = sharp_headers_value(&m->headers, i), b = sharp_headers_value(vary, i);
        if (a.len != b.len || memcmp(a.p, b.p, a.len)) return false;
    }
    return true;
}

/* The key of a response varied by a request: key, NUL, vary identifier. */
static void varied_key(sharp_str_t key, sharp_sbuf_t *vary_id, sharp_sbuf_t *out)
{
    sharp_sbuf_append(out, key.p, key.len);
    sharp_sbuf_append(out, "", 1);
    sharp_sbuf_append(out, vary_id->data, vary_id->len);
}

/* Fills hit from entry e (under the lock), found at `full`. */
static void take_hit(sharp_cache_store_t *st, entry_t *e, sharp_sbuf_t *full, sharp_cache_hit_t *hit)
{
    sharp_headers_copy(&hit->headers, &e->headers);
    atomic_fetch_add(&e->body->refs, 1);
    hit->body = e->body;
    hit->response_time_ms = e->response_time_ms;
    hit->entry_key = *full;
    *full = (sharp_sbuf_t){0};
    promote(st, e);
    /* a variant's marker is as recently used as the variant */
    if (e->marker) promote(st, e->marker);
}

bool sharp_cache_store_lookup(sharp_cache_store_t *st, sharp_str_t key,
                              const sharp_cache_vary_allow_t *allow, const sharp_headers_t *req,
                              sharp_cache_hit_t *hit)
{
    memset(hit, 0, sizeof *hit);
    sharp_headers_init(&hit->headers);
    sharp_sbuf_t full = {0};
    sharp_headers_t vary;
    sharp_headers_init(&vary);
    pthread_mutex_lock(&st->mu);
    entry_t *e = find(st, key, hash_key(st, key));
    bool found = e && e->body;
    if (found) {
        sharp_sbuf_append(&full, key.p, key.len);
        take_hit(st, e, &full, hit);
    } else if (e) {
        /* a vary marker: its vary values copied, the identifier (header
         * names parsed and sorted, the allowed_vary_headers matchers) made
         * without the lock */
        sharp_headers_copy(&vary, &e->headers);
    }
    pthread_mutex_unlock(&st->mu);
    if (found || !vary.n) {
        sharp_headers_free(&vary);
        return found;
    }
    sharp_sbuf_t id = {0};
    bool ok = sharp_cache_vary_identifier(&vary, allow, req, &id);
    sharp_headers_free(&vary);
    if (ok) varied_key(key, &id, &full);
    sharp_sbuf_free(&id);
    if (!ok) {
        sharp_sbuf_free(&full);
        return false;
    }
    /* the variant as it is now: if the marker was replaced meanwhile, its
     * variants went with it, and one under a new marker of the same vary
     * values has this key */
    sharp_str_t fk = {full.data, full.len};
    pthread_mutex_lock(&st->mu);
    e = find(st, fk, hash_key(st, fk));
    found = e && e->body && e->marker;
    if (found) take_hit(st, e, &full, hit);
    pthread_mutex_unlock(&st->mu);
    sharp_sbuf_free(&full);
    return found;
}

bool sharp_cache_store_insert(sharp_cache_store_t *st, sharp_str_t key,
                              const sharp_cache_vary_allow_t *allow, const sharp_headers_t *req,
                              const sharp_headers_t *resp, sharp_cache_body_t *body,
                              int64_t response_time_ms)
{
    atomic_fetch_add(&body->refs, 1);
    if (!sharp_cache_has_vary(resp)) {
        pthread_mutex_lock(&st->mu);
        bool ok = put(st, key, resp, body, response_time_ms) != NULL;
        pthread_mutex_unlock(&st->mu);
        return ok;
    }
    sharp_sbuf_t id = {0}, full = {0};
    if (!sharp_cache_vary_identifier(resp, allow, req, &id)) {
        sharp_sbuf_free(&id);
        sharp_cache_body_release(body);
        return false;
    }
    varied_key(key, &id, &full);
    sharp_headers_t marker;
    sharp_headers_init(&marker);
    for (int i = sharp_headers_find(resp, "vary", 4, 0); i >= 0;
         i = sharp_headers_find(resp, "vary", 4, (uint32_t)i + 1)) {
        sharp_str_t v = sharp_headers_value(resp, (uint32_t)i);
        sharp_headers_add(&marker, "vary", 4, v.p, v.len);
    }
    sharp_str_t fk = {full.data, full.len};
    pthread_mutex_lock(&st->mu);
    /* a marker of other vary values (or a response without Vary) is
     * replaced, its variants dropped; one of the same values is kept with
     * its other variants */
    entry_t *m = find(st, key, hash_key(st, key));
    if (m && (m->body || !same_vary(m, &marker))) remove_entry(st, m);
    bool ok = put(st, fk, resp, body, response_time_ms) != NULL;
    if (ok) {
        /* putting the variant may have evicted the marker, and putting
         * the marker the variant */
        m = find(st, key, hash_key(st, key));
        if (m)
            promote(st, m);
        else
            m = put(st, key, &marker, NULL, response_time_ms);
        entry_t *v = find(st, fk, hash_key(st, fk));
        if (v && !m) remove_entry(st, v);
        if (v && m) {
            v->marker = m;
            v->vnext = m->variants;
            if (m->variants) m->variants->vprev = v;
            m->variants = v;
        }
        ok = v && m;
    }
    pthread_mutex_unlock(&st->mu);
    sharp_headers_free(&marker);
    sharp_sbuf_free(&id);
    sharp_sbuf_free(&full);
    return ok;
}

void sharp_cache_store_update(sharp_cache_store_t *st, sharp_str_t entry_key,
                              const sharp_headers_t *update, int64_t response_time_ms)
{
    pthread_mutex_lock(&st->mu);
    entry_t *e = find(st, entry_key, hash_key(st, entry_key));
    if (e && e->body) {
        size_t before = sharp_headers_byte_size(&e->headers);
        sharp_cache_apply_header_update(update, &e->headers);
        size_t after = sharp_headers_byte_size(&e->headers);
        e->charge = e->charge - before + after;
        st->bytes = st->bytes - before + after;
        e->response_time_ms = response_time_ms;
        promote(st, e);
        if (e->marker) promote(st, e->marker);
        /* a larger header set may have passed the bound: the oldest go */
        while (st->bytes > st->max_bytes && st->lru_tail && st->lru_tail != e &&
               st->lru_tail != e->marker)
            remove_entry(st, st->lru_tail);
    }
    pthread_mutex_unlock(&st->mu);
}

uint64_t sharp_cache_store_bytes(sharp_cache_store_t *st)
{
    pthread_mutex_lock(&st->mu);
    uint64_t b = st->bytes;
    pthread_mutex_unlock(&st->mu);
    return b;
}

uint32_t sharp_cache_store_entries(sharp_cache_store_t *st)
{
    pthread_mutex_lock(&st->mu);
    uint32_t n = st->n;
    pthread_mutex_unlock(&st->mu);
    return n;
}

static pthread_mutex_t global_mu = PTHREAD_MUTEX_INITIALIZER;
static sharp_cache_store_t *global_store;
static uint32_t global_refs;

sharp_cache_store_t *sharp_cache_store_acquire(void)
{
    pthread_mutex_lock(&global_mu);
    if (!global_store)
        global_store =
            sharp_cache_store_new(SHARP_CACHE_STORE_MAX_BYTES, SHARP_CACHE_STORE_MAX_ENTRIES);
    global_refs++;
    sharp_cache_store_t *st = global_store;
    pthread_mutex_unlock(&global_mu);
    return st;
}

void sharp_cache_store_release(void)
{
    pthread_mutex_lock(&global_mu);
    if (global_refs && --global_refs == 0) {
        sharp_cache_store_free(global_store);
        global_store = NULL;
    }
    pthread_mutex_unlock(&global_mu);
}
