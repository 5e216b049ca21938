/* host_index.h: hosts by address, an open-addressing hash of pointers.
 * A cluster indexes every host it owns (all_hosts), so an EDS or DNS
 * update finds the host an address already has in constant time instead
 * of comparing it with every host: a 10,000-endpoint assignment costs the
 * main thread 10,000 lookups, not 10^8 comparisons. Main thread only. */
#ifndef SHARP_UPSTREAM_HOST_INDEX_H
#define SHARP_UPSTREAM_HOST_INDEX_H

#include "net.h"
#include "upstream/host.h"

#include <string.h>
#include <sys/un.h>

typedef struct sharp_host_index {
    sharp_host_t **slots; /* NULL = empty; a power of two of them */
    uint32_t cap, n;
} sharp_host_index_t;

/* The host indexed under address a, or NULL. */
sharp_host_t *sharp_host_index_find(const sharp_host_index_t *ix, const struct sockaddr_storage *a);
/* Indexes h under its address, unless a host already is there (the first
 * of several hosts with one address stays the one found). */
void sharp_host_index_add(sharp_host_index_t *ix, sharp_host_t *h);
void sharp_host_index_free(sharp_host_index_t *ix);

#endif
