/* hash_policy.h: Envoy's RouteAction.hash_policy, the request's input to
 * hashing load balancers. SHARP's one hashing balancer is the shuffle shard
 * (upstream/shard_lb.h), whose rendezvous hash needs the key's bytes rather
 * than Envoy's 64-bit hash, so the key is the policies' values themselves:
 *
 * - each policy contributes its value: header (all values of the header,
 *   sorted and joined with ',', as Envoy hashes them order-independently),
 *   cookie (the first cookie of that name, quotes removed), query_parameter
 *   (the first parameter of that name, not decoded, as Envoy's
 *   parseQueryString), connection_properties.source_ip (the downstream
 *   address without its port);
 * - policies are evaluated in order and, as in Envoy, a policy without a
 *   value is skipped and a terminal policy stops the evaluation once any
 *   value exists;
 * - the values are joined with '\n' (which none of them can contain), where
 *   Envoy combines hashes with a rotate-and-xor: two requests get the same
 *   key exactly when Envoy would feed the same values in.
 *
 * So with one policy (the usual case: a customer header) the key is the
 * header's value, and /shuffle_shard?key= takes that value as is. */
#ifndef SHARP_HTTP_HASH_POLICY_H
#define SHARP_HTTP_HASH_POLICY_H

#include "common.h"
#include "http/headers.h"
#include "sbuf.h"

typedef enum {
    SHARP_HASH_HEADER,          /* header.header_name */
    SHARP_HASH_COOKIE,          /* cookie.name (never generated: no ttl) */
    SHARP_HASH_SOURCE_IP,       /* connection_properties.source_ip */
    SHARP_HASH_QUERY_PARAMETER, /* query_parameter.name */
} sharp_hash_kind_t;

typedef struct {
    sharp_hash_kind_t kind;
    char *name; /* header name (lower-case), cookie or query parameter name; NULL for source_ip */
    bool terminal;
} sharp_hash_policy_t;

/* Appends the request's key to `out` (left empty when no policy has a
 * value) and returns whether any policy had one. `remote` is the downstream
 * address as "ip:port" ("[v6]:port"). */
bool sharp_hash_policy_key(const sharp_hash_policy_t *hp, uint32_t n, const sharp_headers_t *req,
                           const char *remote, sharp_sbuf_t *out);

#endif
