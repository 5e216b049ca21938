/* agent_util.h: allocation for the scaling agent library, which links
 * nothing of the proxy. As in the rest of SHARP, running out of memory is
 * the one failure that aborts. */
#ifndef SHARP_AGENT_UTIL_H
#define SHARP_AGENT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

static inline void *agent_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("sharp agent: out of memory\n", stderr);
        abort();
    }
    return p;
}

#endif
