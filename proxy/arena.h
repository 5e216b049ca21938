/* arena.h: a bump allocator for a message built at once and dropped at
 * once (a stats flush's request, a report to a management server): zeroed
 * blocks from 64 KiB chunks, all freed together. */
#ifndef SHARP_ARENA_H
#define SHARP_ARENA_H

#include <stddef.h>

typedef struct sharp_arena_chunk sharp_arena_chunk_t;

typedef struct {
    sharp_arena_chunk_t *head;
} sharp_arena_t;

/* A zeroed block of n bytes (at least one), aligned for any type. */
void *sharp_arena_alloc(sharp_arena_t *a, size_t n);
/* Frees every block; keeps the newest chunk for the next message (whose
 * size hardly changes from one flush to the next). */
void sharp_arena_reset(sharp_arena_t *a);
void sharp_arena_free(sharp_arena_t *a);

#endif
