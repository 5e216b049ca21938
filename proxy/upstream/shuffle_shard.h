/* shuffle_shard.h: shuffle sharding of customers over cells.
 *
 * Every customer key maps to a stable, pseudo-random order of the cells; the
 * first shard_size cells of that order are the customer's shard, the rest
 * are where it spills to when its whole shard is unhealthy. The order is
 * rendezvous (highest random weight) hashing: each cell gets the score
 * hash(seed, cell identity, key) and cells are ranked by score. So:
 * - stateless and consistent: any process with the same cells and seed
 *   computes the same shard for the same key, with no coordination;
 * - stable: adding or removing one cell only moves the customers whose
 *   shard contained, or now contains, that cell (about shard_size / N of
 *   them); every other customer keeps its shard.
 *
 * The object is immutable once built (main thread) and shared by all
 * workers; the functions below are pure and thread-safe. */
#ifndef SHARP_UPSTREAM_SHUFFLE_SHARD_H
#define SHARP_UPSTREAM_SHUFFLE_SHARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct sharp_shuffle_shard sharp_shuffle_shard_t;

/* Cells are named by their identity strings (for a cluster: the endpoint's
 * "ip:port", or its hostname when set). shard_size is clamped to
 * [1, ncells]. Returns NULL when ncells is 0. */
sharp_shuffle_shard_t *sharp_shuffle_shard_create(const char *const *cell_ids, uint32_t ncells,
                                                  uint32_t shard_size, uint64_t seed);
void sharp_shuffle_shard_free(sharp_shuffle_shard_t *ss);

uint32_t sharp_shuffle_shard_size(const sharp_shuffle_shard_t *ss);
uint32_t sharp_shuffle_shard_cells(const sharp_shuffle_shard_t *ss);

/* The customer's order of cells: out[0..shard_size) is its shard (best
 * score first), the rest the other cells in the customer's own order.
 * Writes min(max, ncells) cell indices (positions in cell_ids) and returns
 * that count. */
uint32_t sharp_shuffle_shard_order(const sharp_shuffle_shard_t *ss, const void *key, size_t keylen,
                                   uint32_t *out, uint32_t max);

/* The score rendezvous hashing ranks by, exposed for tests and tools. */
uint64_t sharp_shuffle_shard_score(uint64_t seed, const char *cell_id, const void *key, size_t keylen);

#endif
