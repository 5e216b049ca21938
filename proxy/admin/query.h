/* query.h: request-target helpers for the admin server: splitting a target
 * into path and query, percent-decoding, and a decoded query-parameter list.
 * Pure functions over bytes; no I/O and no server state. */
#ifndef SHARP_ADMIN_QUERY_H
#define SHARP_ADMIN_QUERY_H

#include "common.h"

#include <sys/types.h>

/* One decoded parameter. `value` is "" (never NULL) for a bare key such as
 * "usedonly"; `has_value` tells "k" from "k=". */
typedef struct sharp_query_param {
    char *key;
    char *value;
    bool has_value;
} sharp_query_param_t;

typedef struct sharp_query {
    sharp_query_param_t *params;
    size_t n;
} sharp_query_t;

/* Splits a request target at the first '?' (a '#' fragment is dropped).
 * `path` never includes the '?'; `query` is empty when there is none. Both
 * point into `target`. */
void sharp_url_split(const char *target, size_t len, sharp_str_t *path, sharp_str_t *query);


/* Parses a query string ("a=1&b&c=%2F", without the '?') into decoded
 * parameters, in order, duplicates kept. Empty segments ("a=1&&b") are
 * skipped. Always succeeds; `out` is overwritten and must be released with
 * sharp_query_free. */
void sharp_query_parse(const char *qs, size_t len, sharp_query_t *out);

/* The value of the first parameter named `key`, or NULL when absent. */
const char *sharp_query_get(const sharp_query_t *q, const char *key);

static inline bool sharp_query_has(const sharp_query_t *q, const char *key)
{
    return sharp_query_get(q, key) != NULL;
}

/* Releases the parameters; `q` is left empty and may be reused. */
void sharp_query_free(sharp_query_t *q);

#endif
