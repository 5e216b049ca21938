/* listener_match.c: Envoy's filter chain selection (see listener_match.h). */
#include "listener_match.h"
#include "common.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A criterion's specificity for one chain and one connection: -1 when the
 * chain's criterion rules the connection out, 0 when the chain leaves it
 * unset, more when a configured value matches (higher is more specific). */
typedef int (*criterion_fn)(const sharp_fc_match_t *m, const sharp_fc_conn_t *c);

static int cidr_score(const sharp_cidr_t *r, uint32_t n, const struct sockaddr *sa)
{
    if (!n) return 0;
    int best = -1;
    for (uint32_t i = 0; sa && i < n; i++)
        if (sharp_cidr_contains(&r[i], sa) && (int)r[i].prefix_len + 1 > best) best = (int)r[i].prefix_len + 1;
    return best;
}

static uint32_t port_of(const struct sockaddr *sa)
{
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

static int c_destination_port(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (!m->destination_port) return 0;
    return port_of(c->local) == m->destination_port ? 1 : -1;
}

static int c_destination_ip(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    return cidr_score(m->prefix_ranges, m->nprefix_ranges, c->local);
}

/* Exact names beat wildcards; among wildcards, the longer suffix wins
 * ("*.b.example.com" over "*.example.com"), as Envoy tries them. */
static int c_server_name(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (!m->nserver_names) return 0;
    const char *sni = c->server_name ? c->server_name : "";
    size_t len = strlen(sni);
    int best = -1;
    for (uint32_t i = 0; len && i < m->nserver_names; i++) {
        const char *n = m->server_names[i];
        if (n[0] == '*' && n[1] == '.') {
            size_t sl = strlen(n) - 1; /* ".example.com" */
            if (len > sl && strcasecmp(sni + len - sl, n + 1) == 0 && (int)sl > best) best = (int)sl;
        } else if (strcasecmp(n, sni) == 0) {
            return 1 << 20;
        }
    }
    return best;
}

static int c_transport_protocol(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (!m->transport_protocol) return 0;
    return c->transport_protocol && strcmp(m->transport_protocol, c->transport_protocol) == 0 ? 1 : -1;
}

static int c_application_protocols(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (!m->napplication_protocols) return 0;
    for (uint32_t i = 0; i < m->napplication_protocols; i++)
        for (uint32_t k = 0; k < c->napplication_protocols; k++)
            if (strcmp(m->application_protocols[i], c->application_protocols[k]) == 0) return 1;
    return -1;
}

static int c_direct_source_ip(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    return cidr_score(m->direct_source_prefix_ranges, m->ndirect_source_prefix_ranges,
                      c->direct_remote ? c->direct_remote : c->remote);
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a)) return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return sa->sa_family == AF_UNIX; /* a pipe's peer is on this machine */
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family) return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return false;
}

/* SAME_IP_OR_LOOPBACK: the peer is a loopback address or the connection's
 * own local address (Envoy's Network::Utility::isSameIpOrLoopback). */
bool sharp_fc_conn_is_local(const sharp_fc_conn_t *c)
{
    return c->remote && (is_loopback(c->remote) || (c->local && same_ip(c->remote, c->local)));
}

static int c_source_type(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (m->source_type == SHARP_FC_SOURCE_ANY) return 0;
    return sharp_fc_conn_is_local(c) == (m->source_type == SHARP_FC_SOURCE_LOCAL) ? 1 : -1;
}

static int c_source_ip(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    return cidr_score(m->source_prefix_ranges, m->nsource_prefix_ranges, c->remote);
}

static int c_source_port(const sharp_fc_match_t *m, const sharp_fc_conn_t *c)
{
    if (!m->nsource_ports) return 0;
    uint32_t p = port_of(c->remote);
    for (uint32_t i = 0; i < m->nsource_ports; i++)
        if (m->source_ports[i] == p) return 1;
    return -1;
}

static const criterion_fn criteria[] = {
    c_destination_port, c_destination_ip, c_server_name,  c_transport_protocol, c_application_protocols,
    c_direct_source_ip, c_source_type,    c_source_ip,    c_source_port,
};

int sharp_fc_select(const sharp_fc_match_t *const *chains, uint32_t n, const sharp_fc_conn_t *conn)
{
    if (n == 0) return -1;
    /* candidates still in the running, in configuration order */
    uint32_t stack[16];
    int score_stack[16];
    bool small = n <= SHARP_ARRAY_SIZE(stack);
    uint32_t *cand = small ? stack : sharp_calloc(n, sizeof *cand);
    int *score = small ? score_stack : sharp_calloc(n, sizeof *score);
    uint32_t ncand = n;
    for (uint32_t i = 0; i < n; i++) cand[i] = i;
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(criteria) && ncand; k++) {
        int best = -1;
        for (uint32_t i = 0; i < ncand; i++) {
            score[i] = criteria[k](chains[cand[i]], conn);
            if (score[i] > best) best = score[i];
        }
        uint32_t kept = 0;
        for (uint32_t i = 0; i < ncand; i++)
            if (best >= 0 && score[i] == best) cand[kept++] = cand[i];
        ncand = kept;
    }
    int chosen = ncand ? (int)cand[0] : -1;
    if (!small) {
        free(score);
        free(cand);
    }
    return chosen;
}

/* ---- overlap: one shared element per criterion ---- */

static bool cidr_eq(const sharp_cidr_t *a, const sharp_cidr_t *b)
{
    size_t bytes = a->family == AF_INET ? 4 : 16;
    return a->family == b->family && a->prefix_len == b->prefix_len && memcmp(a->addr, b->addr, bytes) == 0;
}

static bool cidrs_share(const sharp_cidr_t *a, uint32_t na, const sharp_cidr_t *b, uint32_t nb)
{
    if (!na || !nb) return !na && !nb;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t k = 0; k < nb; k++)
            if (cidr_eq(&a[i], &b[k])) return true;
    return false;
}

static bool strs_share(char *const *a, uint32_t na, char *const *b, uint32_t nb)
{
    if (!na || !nb) return !na && !nb;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t k = 0; k < nb; k++)
            if (strcasecmp(a[i], b[k]) == 0) return true;
    return false;
}

static bool ports_share(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
    if (!na || !nb) return !na && !nb;
    for (uint32_t i = 0; i < na; i++)
        for (uint32_t k = 0; k < nb; k++)
            if (a[i] == b[k]) return true;
    return false;
}

bool sharp_fc_overlap(const sharp_fc_match_t *a, const sharp_fc_match_t *b)
{
    const char *ta = a->transport_protocol ? a->transport_protocol : "";
    const char *tb = b->transport_protocol ? b->transport_protocol : "";
    return a->destination_port == b->destination_port &&
           cidrs_share(a->prefix_ranges, a->nprefix_ranges, b->prefix_ranges, b->nprefix_ranges) &&
           strs_share(a->server_names, a->nserver_names, b->server_names, b->nserver_names) &&
           strcmp(ta, tb) == 0 &&
           strs_share(a->application_protocols, a->napplication_protocols, b->application_protocols,
                      b->napplication_protocols) &&
           cidrs_share(a->direct_source_prefix_ranges, a->ndirect_source_prefix_ranges,
                       b->direct_source_prefix_ranges, b->ndirect_source_prefix_ranges) &&
           a->source_type == b->source_type &&
           cidrs_share(a->source_prefix_ranges, a->nsource_prefix_ranges, b->source_prefix_ranges,
                       b->nsource_prefix_ranges) &&
           ports_share(a->source_ports, a->nsource_ports, b->source_ports, b->nsource_ports);
}

static void free_strs(char **s, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

void sharp_fc_match_free(sharp_fc_match_t *m)
{
    free(m->prefix_ranges);
    free_strs(m->server_names, m->nserver_names);
    free(m->transport_protocol);
    free_strs(m->application_protocols, m->napplication_protocols);
    free(m->direct_source_prefix_ranges);
    free(m->source_prefix_ranges);
    free(m->source_ports);
    memset(m, 0, sizeof *m);
}
