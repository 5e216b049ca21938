/* locality_md.h: the metadata of an endpoint's locality (Envoy's
 * LocalityLbEndpoints.metadata, HostDescription::localityMetadata), read
 * by the rate limit metadata action with source CLUSTER_LOCALITY_ENTRY.
 *
 * One immutable, reference-counted object per LocalityLbEndpoints that has
 * filter_metadata, shared by that locality's hosts (each holds a
 * reference). A host without locality metadata has NULL, so a stream whose
 * host has none pays one load and no atomic read-modify-write.
 *
 * The main thread replaces a host's pointer in place (an EDS update that
 * changes only the locality metadata) and retires the host's reference to
 * the old object (retire.h): a worker that loaded the old pointer in the
 * callback still running takes its own reference before the retire runs.
 * A stream keeps the reference of its last try's host in its stream info
 * until it ends, so a host that leaves (and is freed) while the stream
 * still runs leaves the metadata alive. */
#ifndef SHARP_UPSTREAM_LOCALITY_MD_H
#define SHARP_UPSTREAM_LOCALITY_MD_H

#include "common.h"

#include <stdatomic.h>

struct sharp_dynamic_metadata;
struct sharp_host;

typedef struct sharp_locality_md {
    _Atomic uint32_t refs;
    struct sharp_dynamic_metadata *md; /* filter_metadata per namespace, never NULL */
    char *canon; /* the metadata as JSON, namespaces sorted: equality of two */
} sharp_locality_md_t;

/* Its metadata, NULL for none. */
static inline const struct sharp_dynamic_metadata *sharp_locality_md_of(const sharp_locality_md_t *lm)
{
    return lm ? lm->md : NULL;
}

/* A new object (one reference) taking `md`; NULL (md freed) when md has
 * no namespace. */
sharp_locality_md_t *sharp_locality_md_new(struct sharp_dynamic_metadata *md);
/* Another reference; NULL stays NULL. Any thread. */
sharp_locality_md_t *sharp_locality_md_ref(sharp_locality_md_t *lm);
/* Drops a reference (NULL: nothing); the last frees. Any thread. */
void sharp_locality_md_put(sharp_locality_md_t *lm);
/* Whether two carry the same metadata (both NULL included). */
bool sharp_locality_md_equal(const sharp_locality_md_t *a, const sharp_locality_md_t *b);

/* Worker: a reference to the host's locality metadata now, NULL when it
 * has none (no atomic read-modify-write then). */
sharp_locality_md_t *sharp_host_locality_md_get(const struct sharp_host *h);
/* Main thread: the host's locality metadata becomes `lm` (a reference of
 * its own is taken) unless equal; the previous one's reference is retired
 * (retire.h). Before the host is published this frees at once. */
void sharp_host_locality_md_set(struct sharp_host *h, sharp_locality_md_t *lm);
/* The host is being freed: drops its reference. */
void sharp_host_locality_md_destroy(struct sharp_host *h);

#endif
