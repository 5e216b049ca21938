/* engine.h: Envoy's RBAC policy engine (envoy.config.rbac.v3.RBAC), shared
 * by the HTTP filter (envoy.filters.http.rbac) and the network filter
 * (envoy.filters.network.rbac).
 *
 * An engine holds the action and the policies, kept in lexicographic order
 * of their names (Envoy's std::map): a request matches a policy when any of
 * its permissions and any of its principals match; the first matching
 * policy is the effective one. ALLOW allows when a policy matches, DENY
 * when none does, LOG allows everything and reports whether one matched
 * (the access log hint). Permissions and principals are a tree of
 * and/or/not nodes over leaves that look at the request headers (absent
 * for a connection: header and url_path leaves then see an empty header
 * map, as Envoy's network filter does), the connection's addresses, its
 * requested server name, its peer certificate and the dynamic metadata.
 * Immutable once built, shared by every worker. */
#ifndef SHARP_FILTERS_RBAC_ENGINE_H
#define SHARP_FILTERS_RBAC_ENGINE_H

#include "common.h"
#include "http/headers.h"

#include <sys/socket.h>

struct Envoy__Config__Rbac__V3__RBAC;

typedef enum {
    SHARP_RBAC_ALLOW = 0,
    SHARP_RBAC_DENY = 1,
    SHARP_RBAC_LOG = 2,
} sharp_rbac_action_t;

typedef struct sharp_rbac_engine sharp_rbac_engine_t;

/* What the matchers look at (NULL: unknown or absent). */
typedef struct sharp_rbac_input {
    const sharp_headers_t *headers;      /* NULL: a connection, no request */
    const struct sockaddr *conn_remote;   /* source_ip: the connection's remote address */
    const struct sockaddr *direct_remote; /* direct_remote_ip: the physical peer */
    const struct sockaddr *remote;        /* remote_ip: the trusted client address (x-forwarded-for) */
    const struct sockaddr *local;         /* destination_ip, destination_port(_range) */
    const char *sni;                      /* requested_server_name; NULL is "" */
    /* authenticated: tls is false on a plaintext connection (no principal
     * matches); the peer certificate's URI and DNS SANs (NULL-terminated,
     * NULL: none) and subject (NULL is "") */
    bool tls;
    const char *const *uri_sans, *const *dns_sans;
    const char *subject;
    /* metadata: the stream's, or a TCP proxy connection's, dynamic
     * metadata (NULL: none) */
    const struct sharp_dynamic_metadata *metadata;
} sharp_rbac_input_t;

/* Builds an engine from its config; `path` prefixes field names in errors.
 * Both filters take the same leaves (in the network filter header and
 * url_path just never match, as in Envoy). Fields SHARP does not implement
 * are refused by name. NULL and err on a bad config. */
sharp_rbac_engine_t *sharp_rbac_engine_create(const struct Envoy__Config__Rbac__V3__RBAC *pb, const char *path,
                                              char *err, size_t errlen);
void sharp_rbac_engine_free(sharp_rbac_engine_t *e);

sharp_rbac_action_t sharp_rbac_engine_action(const sharp_rbac_engine_t *e);

/* The engine's policies, in the order it tries them (by name), and the
 * index of the one whose name sharp_rbac_engine_allowed returned (the
 * pointer itself, not a copy; -1 for another). */
uint32_t sharp_rbac_engine_npolicies(const sharp_rbac_engine_t *e);
int32_t sharp_rbac_engine_policy_index(const sharp_rbac_engine_t *e, const char *name);

/* Envoy's handleAction: whether the engine allows the input. *policy gets
 * the effective policy's name (NULL when none matched); *matched whether a
 * policy matched (the LOG action's access log hint). Either may be NULL. */
bool sharp_rbac_engine_allowed(const sharp_rbac_engine_t *e, const sharp_rbac_input_t *in, const char **policy,
                               bool *matched);

/* Envoy's RBAC responseDetail: "rbac_access_denied_matched_policy[<id>]"
 * with whitespace in the id made '_' ("none" when id is NULL). */
void sharp_rbac_response_detail(const char *id, char *out, size_t cap);

/* Envoy's statPrefixJoin: prefix + token, with a '.' between them unless
 * prefix is empty or already ends with one. Into out (truncated to cap). */
void sharp_rbac_stat_join(const char *prefix, const char *token, char *out, size_t cap);

#endif
