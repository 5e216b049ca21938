/* listener_match.h: choosing a listener's filter chain for a new connection
 * (Envoy's FilterChainMatch).
 *
 * Every criterion a chain leaves unset matches any connection. A connection
 * takes a chain all of whose criteria it meets, decided criterion by
 * criterion in Envoy's order: destination port, destination IP, server
 * name, transport protocol, application protocols, directly connected
 * source IP, source type, source IP, source port. At each criterion only
 * the chains with the most specific match stay in the running (a longer
 * prefix beats a shorter one, an exact server name beats a wildcard, any
 * value beats an unset criterion); when none matches, the connection gets
 * the listener's default chain, if any. So a chain whose destination port
 * matches rules out every chain without one, even if the connection then
 * fails that chain's later criteria: Envoy's documented behaviour.
 *
 * Two chains that share one combination of values (one element of each
 * criterion, an unset criterion being its own element) could both claim a
 * connection: Envoy refuses such a listener, and so does the loader. */
#ifndef SHARP_LISTENER_MATCH_H
#define SHARP_LISTENER_MATCH_H

#include "net.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef enum {
    SHARP_FC_SOURCE_ANY = 0,
    SHARP_FC_SOURCE_LOCAL = 1,    /* SAME_IP_OR_LOOPBACK */
    SHARP_FC_SOURCE_EXTERNAL = 2,
} sharp_fc_source_type_t;

typedef struct sharp_fc_match {
    uint32_t destination_port; /* 0: any */
    sharp_cidr_t *prefix_ranges;
    uint32_t nprefix_ranges;
    char **server_names;       /* "*.example.com" wildcards; compared without case */
    uint32_t nserver_names;
    char *transport_protocol;  /* NULL: any */
    char **application_protocols;
    uint32_t napplication_protocols;
    sharp_cidr_t *direct_source_prefix_ranges;
    uint32_t ndirect_source_prefix_ranges;
    sharp_fc_source_type_t source_type;
    sharp_cidr_t *source_prefix_ranges;
    uint32_t nsource_prefix_ranges;
    uint32_t *source_ports;
    uint32_t nsource_ports;
} sharp_fc_match_t;

/* What is known of a connection when its chain is chosen. */
typedef struct sharp_fc_conn {
    const struct sockaddr *local;  /* destination address and port */
    const struct sockaddr *remote; /* source address and port */
    const struct sockaddr *direct_remote; /* the peer of the socket (= remote without PROXY protocol) */
    const char *server_name;       /* SNI, "" when unknown */
    const char *transport_protocol; /* "raw_buffer" without a TLS inspector */
    const char *const *application_protocols;
    uint32_t napplication_protocols;
} sharp_fc_conn_t;

/* SAME_IP_OR_LOOPBACK: the peer is a loopback address or the connection's
 * own local address (Envoy's Network::Utility::isSameIpOrLoopback). */
bool sharp_fc_conn_is_local(const sharp_fc_conn_t *conn);
/* Index of the chain `conn` takes among chains[0..n), or -1 for none. */
int sharp_fc_select(const sharp_fc_match_t *const *chains, uint32_t n, const sharp_fc_conn_t *conn);
/* Whether two chains share a combination of values (see above). */
bool sharp_fc_overlap(const sharp_fc_match_t *a, const sharp_fc_match_t *b);
void sharp_fc_match_free(sharp_fc_match_t *m);

#endif
