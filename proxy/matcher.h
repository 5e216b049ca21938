/* matcher.h: Envoy's generic matching API (xds.type.matcher.v3.Matcher)
 * over HTTP data.
 *
 * A matcher is built once from its config on the main thread and is
 * immutable afterwards (shared by all workers). Evaluating it against a
 * stream's data gives one of three results, as Envoy's match trees do:
 * - SHARP_MATCH_ACTION: the action found (an on_match's, possibly through
 *   nested matchers, or the most specific on_no_match);
 * - SHARP_MATCH_NONE: the matcher decided that nothing matched (no
 *   on_no_match applies);
 * - SHARP_MATCH_INSUFFICIENT: an input the decision needs is not known yet
 *   (response headers while the request is decoded): evaluate again when
 *   more data has arrived.
 *
 * Semantics are Envoy's (source/common/matcher): matcher_list is first
 * match wins, a predicate that cannot be decided stops the list; a matched
 * entry whose nested matcher does not match lets the list go on; trees look
 * the input up in an exact or longest-prefix map, a prefix map retrying
 * shorter prefixes when a longer one's nested matcher does not match; an
 * absent input value goes to on_no_match (a single predicate on it is
 * false). Inputs: request and response headers and trailers (all values of
 * the header joined with ","), and request query parameters (the first
 * value, percent-decoded); or, built with sharp_matcher_build_network, the
 * network inputs of a connection (Envoy's envoy.matching.inputs.*: the
 * destination and source addresses and ports, the direct source address,
 * the source type, server name, transport and application protocols,
 * filter state; a connection's or, for the UDP proxy, a datagram's, whose
 * inputs are only the addresses and ports (SHARP_MATCH_NET_UDP), its
 * DestinationIPInput refused on a socket bound to a wildcard address).
 * Trees may also use the xds.type.matcher.v3.IPMatcher
 * custom match (the input parsed as an IP address, the longest matching
 * range first). Actions are made by the caller's callback from each
 * action's TypedExtensionConfig. */
#ifndef SHARP_MATCHER_H
#define SHARP_MATCHER_H

#include "common.h"
#include "http/headers.h"
#include "listener_match.h"

#include <protobuf-c/protobuf-c.h>

struct Xds__Type__Matcher__V3__Matcher;

/* The data of one stream; NULL: not known (yet). */
typedef struct sharp_match_data {
    const sharp_headers_t *request_headers;
    const sharp_headers_t *request_trailers;
    const sharp_headers_t *response_headers;
    const sharp_headers_t *response_trailers;
    /* a connection's addresses, SNI, transport and application protocols:
     * the network inputs (a listener's filter_chain_matcher) */
    const sharp_fc_conn_t *conn;
} sharp_match_data_t;

typedef enum {
    SHARP_MATCH_INSUFFICIENT,
    SHARP_MATCH_NONE,
    SHARP_MATCH_ACTION,
} sharp_match_result_t;

typedef struct sharp_matcher sharp_matcher_t;

/* Makes the action of an OnMatch from its TypedExtensionConfig: `name` and
 * the unpacked typed_config (type_url its type). Returns it, or NULL with
 * `err` filled to refuse the config. */
typedef void *(*sharp_match_action_fn)(const char *name, const char *type_url,
                                       const ProtobufCMessage *msg, void *arg, const char *path,
                                       char *err, size_t errlen);

/* Builds a matcher; NULL and `err` (naming the field under `path`) on a bad
 * or unsupported config. free_action frees what make_action returned. */
sharp_matcher_t *sharp_matcher_build(const struct Xds__Type__Matcher__V3__Matcher *pb,
                                     const char *path, sharp_match_action_fn make_action,
                                     void (*free_action)(void *), void *arg, char *err,
                                     size_t errlen);
/* sharp_matcher_build_network's flags. */
enum {
    /* the UDP proxy's matcher: the inputs Envoy registers for a datagram
     * (UdpMatchingData: the destination and source IP addresses and
     * ports); the others are refused as Envoy refuses them ("Didn't find a
     * registered implementation") */
    SHARP_MATCH_NET_UDP = 1u << 0,
    /* DestinationIPInput has no value to read (a UDP socket bound to a
     * wildcard address): refused */
    SHARP_MATCH_NET_NO_LOCAL_IP = 1u << 1,
};
/* The same over a connection's data (the network inputs; HTTP inputs are
 * refused), with SHARP_MATCH_NET_* `flags`. A refusal puts the field's path
 * in `epath` and the message alone in `err` (make_action's "PATH: message"
 * is split so too). */
sharp_matcher_t *sharp_matcher_build_network(const struct Xds__Type__Matcher__V3__Matcher *pb,
                                             const char *path, sharp_match_action_fn make_action,
                                             void (*free_action)(void *), void *arg, uint32_t flags,
                                             char *epath, size_t epathlen, char *err, size_t errlen);
/* The same from the deprecated envoy.config.common.matcher.v3.Matcher
 * (Envoy's StringMatcher: its RegexMatcher's engine is optional). */
sharp_matcher_t *sharp_matcher_build_envoy(const ProtobufCMessage *pb, const char *path,
                                           sharp_match_action_fn make_action,
                                           void (*free_action)(void *), void *arg, char *err,
                                           size_t errlen);
/* Evaluates against `d`; for SHARP_MATCH_ACTION *action is the action. */
sharp_match_result_t sharp_matcher_evaluate(const sharp_matcher_t *m, const sharp_match_data_t *d,
                                            const void **action);
/* Whether some input of the matcher reads response headers or trailers. */
bool sharp_matcher_needs_response(const sharp_matcher_t *m);
/* The inputs the matcher reads, a mask of these bits. */
enum {
    SHARP_MATCH_IN_REQUEST_HEADER = 1u << 0,
    SHARP_MATCH_IN_REQUEST_TRAILER = 1u << 1,
    SHARP_MATCH_IN_RESPONSE_HEADER = 1u << 2,
    SHARP_MATCH_IN_RESPONSE_TRAILER = 1u << 3,
    SHARP_MATCH_IN_QUERY_PARAM = 1u << 4,
};
uint32_t sharp_matcher_inputs(const sharp_matcher_t *m);
void sharp_matcher_free(sharp_matcher_t *m);

#endif
