/* json.h: small JSON output helpers for the admin pages. */
#ifndef SHARP_ADMIN_JSON_H
#define SHARP_ADMIN_JSON_H

#include "common.h"
#include "sbuf.h"

/* Appends `in` (compact or already spaced JSON) to `out` re-indented the way
 * Envoy's admin pretty-prints: a newline and one space per nesting level
 * after every '{', '[' and ',', `"key": value`, and empty containers kept as
 * "{}" and "[]". Whitespace outside strings is dropped first; strings,
 * escapes included, are copied unchanged. Input that is not valid JSON is
 * still copied without reading past `n` bytes (the layout is then
 * unspecified). */
void sharp_json_pretty(const char *in, size_t n, sharp_sbuf_t *out);

/* Appends "\"s\"" with JSON escaping. */
void sharp_json_str(sharp_sbuf_t *out, const char *s);

#endif
