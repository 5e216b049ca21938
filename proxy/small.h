/* small.h: small blocks from per-thread free lists.
 *
 * What a request allocates and frees again when it ends: its stream, its
 * header maps, nghttp2's stream, header copies, outbound items and frame
 * buffers (about ten small allocations on each HTTP/2 side). A connection
 * with 100 streams frees them in bursts, which overflow glibc's
 * per-thread cache (7 blocks per size) into its locked bins, and a stream
 * of 2.5 KiB is above that cache's sizes altogether: with glibc's
 * allocator alone, malloc and free were 15 to 19% of SHARP's CPU for an
 * HTTP/2 request. Blocks of up to 8 KiB come from a free list per thread
 * and size class here (at most 16 MiB kept per thread, and what a thread
 * did not need for a whole second goes back at its next tick); larger
 * ones go to malloc. A block freed on another thread than the one that
 * made it joins that thread's lists.
 *
 * Sanitizer builds pass every call to malloc, calloc, realloc and free,
 * so that the sanitizer sees each block as it is asked for. With mimalloc
 * (heap.h), which keeps free blocks per thread itself, the lists stay
 * empty: blocks go back to it at once. */
#ifndef SHARP_SMALL_H
#define SHARP_SMALL_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>

/* Abort on failure, as sharp_calloc does; free takes NULL. */
void *sharp_small_alloc(size_t size);
void *sharp_small_calloc(size_t n, size_t size);
void *sharp_small_realloc(void *p, size_t size);
void sharp_small_free(void *p);

/* nghttp2's allocator for nghttp2_session_*_new3 (NULL in sanitizer
 * builds: nghttp2's own, malloc). */
nghttp2_mem *sharp_small_nghttp2_mem(void);

/* Whether freed blocks are kept (off: every block goes back to the
 * allocator at once); set once at startup, before the workers start. */
void sharp_small_set_caching(bool on);
bool sharp_small_caching(void);
/* The calling thread's kept blocks, and their bytes. */
size_t sharp_small_cached(size_t *bytes);
/* Gives the calling thread's kept blocks back to the allocator (a release
 * of free memory, a thread that ends). */
void sharp_small_flush(void);
/* Once a second on each thread that allocates: gives back the blocks its
 * lists did not need since the last tick (their low-water marks). */
void sharp_small_tick(void);

#endif
