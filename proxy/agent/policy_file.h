/* policy_file.h: a trained policy on disk (the networks' weights and the
 * observation normalizer's statistics).
 *
 * Little-endian, fixed layout, version 1:
 *
 *   offset  size            field
 *        0     8            magic "SHARPPOL"
 *        8     4  u32       version (1)
 *       12     4  u32       obs_dim
 *       16     4  u32       n_actions
 *       20     4  u32       n_hidden (1..3)
 *       24    12  u32[3]    hidden widths (unused ones 0)
 *       36     4  u32       flags: bit 0 observation normalization on,
 *                           bit 1 the trained observation range follows
 *       40     8  u64       parameter count (actor + critic)
 *       48     8  f64       normalizer count
 *       56     8  f64       normalizer clip
 *       64  8*obs  f64[]     normalizer mean
 *        .  8*obs  f64[]     normalizer variance
 *        .  8*obs  f64[]     with flag bit 1: the lowest value of each
 *        .  8*obs  f64[]     observation met in training, then the highest
 *        .  8*params f64[]   parameters: actor layers then critic layers,
 *                           each layer's weights input-major then biases
 *      end     4  u32       CRC-32 (IEEE 802.3) of every byte before it
 *
 * Loading checks, in this order, and says which failed: the file opens
 * and is a regular file, the magic, the version, a whole header, the
 * dimensions (in bounds, parameter count consistent), the size they imply
 * (truncated or trailing bytes), the checksum, then the values (finite,
 * variances not negative, ranges with lo <= hi). Files without the range
 * (CartPole's) are byte for byte what they were before it existed. Nothing past the header is read or allocated
 * before the size checks out. Saving writes a temporary file next to the
 * target and renames it, so a reader never sees half a file. */
#ifndef SHARP_AGENT_POLICY_FILE_H
#define SHARP_AGENT_POLICY_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define SHARP_POLICY_FILE_MAGIC "SHARPPOL"
#define SHARP_POLICY_FILE_VERSION 1u

/* 0, or -1 with a message in err. */
int sharp_policy_save(const sharp_policy_t *p, const char *path, char *err, size_t errlen);
/* The policy, or NULL with a message in err. */
sharp_policy_t *sharp_policy_load(const char *path, char *err, size_t errlen);

/* CRC-32 (IEEE, reflected, as zlib's crc32) continuing from `crc` (0 to
 * start). */
uint32_t sharp_crc32(uint32_t crc, const void *data, size_t len);

#endif
