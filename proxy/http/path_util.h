/* path_util.h: Envoy's request path normalization (Http::PathUtil and
 * ConnectionManagerUtility::maybeNormalizePath): RFC 3986 dot-segment
 * removal with the URL canonicalizer Envoy uses (percent-encoded unreserved
 * characters decoded, backslashes turned into slashes, NUL rejected),
 * merging of adjacent slashes, and the handling of escaped slashes
 * (%2F, %5C). Every function works on the whole :path value and leaves the
 * query (from the first '?') untouched. */
#ifndef SHARP_HTTP_PATH_UTIL_H
#define SHARP_HTTP_PATH_UTIL_H

#include "common.h"
#include "sbuf.h"

/* HttpConnectionManager.PathWithEscapedSlashesAction, with Envoy's numbers. */
typedef enum {
    SHARP_ESCAPED_SLASHES_DEFAULT = 0, /* IMPLEMENTATION_SPECIFIC_DEFAULT: keep */
    SHARP_ESCAPED_SLASHES_KEEP = 1,
    SHARP_ESCAPED_SLASHES_REJECT = 2,
    SHARP_ESCAPED_SLASHES_UNESCAPE_AND_REDIRECT = 3,
    SHARP_ESCAPED_SLASHES_UNESCAPE_AND_FORWARD = 4,
} sharp_escaped_slashes_action_t;

typedef enum {
    SHARP_PATH_CONTINUE,
    SHARP_PATH_REJECT,   /* 400 */
    SHARP_PATH_REDIRECT, /* 307 to the normalized path */
} sharp_path_action_t;

/* RFC 3986 normalization (PathUtil::canonicalPath): writes the canonical
 * path into out (reset first). False when the path cannot be normalized
 * (a NUL, raw or escaped), in which case Envoy answers 400. */
bool sharp_path_canonicalize(const char *p, size_t n, sharp_sbuf_t *out);
/* "/a//b" -> "/a/b" (PathUtil::mergeSlashes). */
void sharp_path_merge_slashes(const char *p, size_t n, sharp_sbuf_t *out);
/* %2F/%2f -> '/', %5C/%5c -> '\' in the path part. Returns whether any was
 * found (PathUtil::unescapeSlashes' FoundAndUnescaped). */
bool sharp_path_unescape_slashes(const char *p, size_t n, sharp_sbuf_t *out);
/* "/a/..;x/b" -> "/a/../b", "/.;x" -> "/." (PathUtil::stripParametersFromDotSegments). */
void sharp_path_strip_dot_segment_params(const char *p, size_t n, sharp_sbuf_t *out);

/* The whole of maybeNormalizePath: a fragment is rejected, escaped slashes
 * get `action`, then normalize_path and merge_slashes apply in that order.
 * out holds the resulting path (meaningful for CONTINUE and REDIRECT). */
sharp_path_action_t sharp_path_normalize(const char *p, size_t n, bool normalize_path, bool merge_slashes,
                                         sharp_escaped_slashes_action_t action, sharp_sbuf_t *out);

#endif
