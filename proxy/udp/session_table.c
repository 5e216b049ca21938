/* session_table.c: see session_table.h. */
#include "session_table.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

void sharp_udp_table_init(sharp_udp_table_t *t, uint64_t seed)
{
    memset(t, 0, sizeof *t);
    t->seed = seed | 1;
}

void sharp_udp_table_free(sharp_udp_table_t *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

int sharp_udp_key_make(sharp_udp_key_t *k, const struct sockaddr *peer, const void *host)
{
    memset(k, 0, sizeof *k);
    k->host = host;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)peer;
        k->family = AF_INET;
        k->port = a->sin_port;
        memcpy(k->addr, &a->sin_addr, 4);
        return 0;
    }
    if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
        k->family = AF_INET6;
        k->port = a->sin6_port;
        k->scope = a->sin6_scope_id;
        memcpy(k->addr, &a->sin6_addr, 16);
        return 0;
    }
    return -1;
}

uint64_t sharp_udp_key_hash(const sharp_udp_table_t *t, const sharp_udp_key_t *k)
{
    uint64_t a, b;
    memcpy(&a, k->addr, 8);
    memcpy(&b, k->addr + 8, 8);
    uint64_t h = sharp_hash_mix(t->seed, (uint64_t)k->family << 48 | (uint64_t)k->port << 32 | k->scope);
    h = sharp_hash_mix(h, a);
    h = sharp_hash_mix(h, b);
    return sharp_hash_mix(h, (uint64_t)(uintptr_t)k->host);
}

static bool key_eq(const sharp_udp_key_t *x, const sharp_udp_key_t *y)
{
    return x->family == y->family && x->port == y->port && x->scope == y->scope && x->host == y->host &&
           memcmp(x->addr, y->addr, sizeof x->addr) == 0;
}

sharp_udp_entry_t *sharp_udp_table_find(const sharp_udp_table_t *t, const sharp_udp_key_t *k, uint64_t hash)
{
    if (!t->nbuckets) return NULL;
    for (sharp_udp_entry_t *e = t->buckets[hash & (t->nbuckets - 1)]; e; e = e->next)
        if (e->hash == hash && key_eq(&e->key, k)) return e;
    return NULL;
}

static void grow(sharp_udp_table_t *t)
{
    uint32_t n = t->nbuckets ? t->nbuckets * 2 : 16;
    sharp_udp_entry_t **b = sharp_calloc(n, sizeof *b);
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        sharp_udp_entry_t *e = t->buckets[i];
        while (e) {
            sharp_udp_entry_t *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void sharp_udp_table_insert(sharp_udp_table_t *t, sharp_udp_entry_t *e)
{
    if (t->count >= t->nbuckets) grow(t); /* at most one entry per bucket on average */
    sharp_udp_entry_t **head = &t->buckets[e->hash & (t->nbuckets - 1)];
    e->next = *head;
    *head = e;
    t->count++;
}

void sharp_udp_table_remove(sharp_udp_table_t *t, sharp_udp_entry_t *e)
{
    for (sharp_udp_entry_t **p = &t->buckets[e->hash & (t->nbuckets - 1)]; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            e->next = NULL;
            t->count--;
            return;
        }
    }
}
