/* store.h: the in-memory HTTP cache (Envoy's SimpleHttpCache), bounded.
 *
 * One store serves every cache filter of the process with the
 * SimpleHttpCacheConfig storage, as Envoy's singleton does; the workers
 * share it under one mutex. Entries are keyed by the filter's cache key
 * (hashed with the process's random seed, so a client cannot choose keys
 * of one bucket); a response with a Vary header is stored as a marker at the key, holding its
 * vary headers, and the response itself at the key extended by the vary
 * identifier of the request that fetched it (Envoy's varyInsert), so each
 * variant is looked up by the identifier of the request at hand. A marker
 * lives as long as its variants: a variant's hit or update makes its
 * marker recently used too, a marker replaced (by a response without Vary
 * or with other vary values) or evicted takes its variants along, and a
 * marker whose last variant goes is removed. A lookup of a varied key
 * copies the marker's vary values under the lock and makes the request's
 * identifier without it, then looks the variant up under the lock again.
 *
 * Unlike Envoy's unbounded SimpleHttpCache, the store holds at most
 * `max_bytes` (headers, bodies and keys counted) and `max_entries`
 * entries: an insert that would pass either bound evicts the least
 * recently used entries first, and an entry larger than max_bytes is not
 * stored. Bodies are reference counted, so a stream serving an entry keeps
 * its body while another thread evicts or replaces it. */
#ifndef SHARP_FILTERS_CACHE_STORE_H
#define SHARP_FILTERS_CACHE_STORE_H

#include "filters/cache/cache_headers.h"

#include <stdatomic.h>
#include <stdint.h>

/* The bound SHARP gives the process-wide store. */
#define SHARP_CACHE_STORE_MAX_BYTES (128u * 1024 * 1024)
#define SHARP_CACHE_STORE_MAX_ENTRIES 65536u

typedef struct sharp_cache_store sharp_cache_store_t;

/* A stored body, shared by the entry and the streams serving it. */
typedef struct sharp_cache_body {
    atomic_uint refs;
    size_t len;
    char data[];
} sharp_cache_body_t;

void sharp_cache_body_release(sharp_cache_body_t *b);

/* A lookup's result: a copy of the stored headers (initialized by the
 * store; the caller frees them), a reference to the body (release it), when
 * the response was stored or last validated, and the entry's full key (for
 * a header update after a 304; the caller frees it). */
typedef struct {
    sharp_headers_t headers;
    sharp_cache_body_t *body;
    int64_t response_time_ms;
    sharp_sbuf_t entry_key;
} sharp_cache_hit_t;

void sharp_cache_hit_free(sharp_cache_hit_t *hit);

sharp_cache_store_t *sharp_cache_store_new(uint64_t max_bytes, uint32_t max_entries);
void sharp_cache_store_free(sharp_cache_store_t *st);

/* The entry for `key` that fits the request (through the vary identifier
 * when a marker is stored there): true and *hit filled, or false. A hit
 * becomes the most recently used entry. */
bool sharp_cache_store_lookup(sharp_cache_store_t *st, sharp_str_t key,
                              const sharp_cache_vary_allow_t *allow, const sharp_headers_t *req,
                              sharp_cache_hit_t *hit);
/* Stores a response (its headers copied, `body` taken: the store holds a
 * reference, the caller keeps its own) for `key` and the request `req`,
 * replacing what was stored there. False when it was not stored (a vary
 * header not allowed, or larger than the store). */
bool sharp_cache_store_insert(sharp_cache_store_t *st, sharp_str_t key,
                              const sharp_cache_vary_allow_t *allow, const sharp_headers_t *req,
                              const sharp_headers_t *resp, sharp_cache_body_t *body,
                              int64_t response_time_ms);
/* Freshens the entry at `entry_key` (a lookup's) with a 304's headers
 * (sharp_cache_apply_header_update) and a new response time. */
void sharp_cache_store_update(sharp_cache_store_t *st, sharp_str_t entry_key,
                              const sharp_headers_t *update, int64_t response_time_ms);

/* What the store holds now. */
uint64_t sharp_cache_store_bytes(sharp_cache_store_t *st);
uint32_t sharp_cache_store_entries(sharp_cache_store_t *st);

/* The process-wide store, created by the first caller; each acquire is
 * matched by a release, and the last release frees it. */
sharp_cache_store_t *sharp_cache_store_acquire(void);
void sharp_cache_store_release(void);

#endif
