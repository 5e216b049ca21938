/* arena.c: see arena.h. */
#include "arena.h"
#include "common.h"

#include <stdlib.h>
#include <string.h>

struct sharp_arena_chunk {
    struct sharp_arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

void *sharp_arena_alloc(sharp_arena_t *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    if (!n) n = sizeof(max_align_t);
    sharp_arena_chunk_t *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 64 * 1024 ? n : 64 * 1024;
        c = sharp_realloc(NULL, sizeof *c + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void sharp_arena_reset(sharp_arena_t *a)
{
    sharp_arena_chunk_t *c = a->head;
    if (!c) return;
    for (sharp_arena_chunk_t *n = c->next, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    c->next = NULL;
    c->used = 0;
}

void sharp_arena_free(sharp_arena_t *a)
{
    for (sharp_arena_chunk_t *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
}
