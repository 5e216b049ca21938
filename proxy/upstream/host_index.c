/* host_index.c: see host_index.h. */
#include "upstream/host_index.h"
#include "common.h"

#include <netinet/in.h>
#include <stdlib.h>

/* FNV-1a over the bytes sharp_addr_equal compares */
static uint32_t addr_hash(const struct sockaddr_storage *a)
{
    const unsigned char *p;
    size_t n;
    uint32_t h = 2166136261u ^ a->ss_family;
    if (a->ss_family == AF_INET) {
        p = (const unsigned char *)&((const struct sockaddr_in *)a)->sin_port; /* port, then address */
        n = sizeof(in_port_t) + sizeof(struct in_addr);
    } else if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a;
        h = (h ^ x->sin6_port) * 16777619u;
        p = (const unsigned char *)&x->sin6_addr;
        n = sizeof x->sin6_addr;
    } else {
        p = (const unsigned char *)((const struct sockaddr_un *)a)->sun_path;
        n = strnlen((const char *)p, sizeof((const struct sockaddr_un *)a)->sun_path);
    }
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

sharp_host_t *sharp_host_index_find(const sharp_host_index_t *ix, const struct sockaddr_storage *a)
{
    if (!ix->cap) return NULL;
    for (uint32_t k = addr_hash(a) & (ix->cap - 1); ix->slots[k]; k = (k + 1) & (ix->cap - 1))
        if (sharp_addr_equal(&ix->slots[k]->addr, a)) return ix->slots[k];
    return NULL;
}

static void put(sharp_host_index_t *ix, sharp_host_t *h)
{
    uint32_t k = addr_hash(&h->addr) & (ix->cap - 1);
    while (ix->slots[k]) k = (k + 1) & (ix->cap - 1);
    ix->slots[k] = h;
    ix->n++;
}

void sharp_host_index_add(sharp_host_index_t *ix, sharp_host_t *h)
{
    if (sharp_host_index_find(ix, &h->addr)) return;
    if (2 * (ix->n + 1) > ix->cap) { /* at most half full */
        sharp_host_index_t big = {.cap = ix->cap ? 2 * ix->cap : 16};
        big.slots = sharp_calloc(big.cap, sizeof *big.slots);
        for (uint32_t i = 0; i < ix->cap; i++)
            if (ix->slots[i]) put(&big, ix->slots[i]);
        free(ix->slots);
        *ix = big;
    }
    put(ix, h);
}

void sharp_host_index_free(sharp_host_index_t *ix)
{
    free(ix->slots);
    memset(ix, 0, sizeof *ix);
}
