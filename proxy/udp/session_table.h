/* session_table.h: the UDP proxy's sessions of one listening socket, found
 * by their key: the downstream peer's address (Envoy's LocalPeerAddresses:
 * the local address is the socket's own), plus the upstream host with
 * per-packet load balancing (Envoy's LocalPeerHostAddresses). A chained
 * hash table with a random seed (a hostile peer cannot choose colliding
 * ports), grown as it fills; entries are embedded in the sessions. No I/O:
 * the table knows nothing of sockets or timers (test_udp_session_table). */
#ifndef SHARP_UDP_SESSION_TABLE_H
#define SHARP_UDP_SESSION_TABLE_H

#include "common.h"

#include <sys/socket.h>

typedef struct sharp_udp_key {
    uint16_t family; /* AF_INET or AF_INET6 */
    uint16_t port;   /* network order */
    uint32_t scope;  /* sin6_scope_id */
    uint8_t addr[16];
    const void *host; /* NULL unless per-packet load balancing */
} sharp_udp_key_t;

typedef struct sharp_udp_entry {
    struct sharp_udp_entry *next; /* in its bucket */
    uint64_t hash;
    sharp_udp_key_t key;
} sharp_udp_entry_t;

typedef struct sharp_udp_table {
    sharp_udp_entry_t **buckets;
    uint32_t nbuckets; /* a power of two, 0 before the first insert */
    uint32_t count;
    uint64_t seed;
} sharp_udp_table_t;

void sharp_udp_table_init(sharp_udp_table_t *t, uint64_t seed);
/* Frees the buckets; the entries are their owners'. */
void sharp_udp_table_free(sharp_udp_table_t *t);
/* The key of peer (IPv4 or IPv6) and host; -1 for another family. */
int sharp_udp_key_make(sharp_udp_key_t *k, const struct sockaddr *peer, const void *host);
uint64_t sharp_udp_key_hash(const sharp_udp_table_t *t, const sharp_udp_key_t *k);
sharp_udp_entry_t *sharp_udp_table_find(const sharp_udp_table_t *t, const sharp_udp_key_t *k, uint64_t hash);
/* Adds e (its key and hash set; not in the table yet). */
void sharp_udp_table_insert(sharp_udp_table_t *t, sharp_udp_entry_t *e);
/* Removes e, which is in the table. */
void sharp_udp_table_remove(sharp_udp_table_t *t, sharp_udp_entry_t *e);

#endif
