/* sds.h: secrets an SdsSecretConfig takes from a config source (Envoy's
 * SdsApi over a filesystem subscription): tls_certificate_sds_secret_configs,
 * validation_context_sds_secret_config and
 * session_ticket_keys_sds_secret_config whose sds_config is a
 * path_config_source (or the deprecated `path`), or from an SDS server:
 * ADS or a gRPC api_config_source (GRPC or DELTA_GRPC), over xds.c's
 * streams (sharp_xds_secret_subscribe). REST and self are refused.
 *
 * One provider per secret (kind, name and source), shared by every filter
 * chain and cluster naming it, as Envoy shares its SdsApi. The file is read
 * when the config loads; a missing file, one that does not parse, or one
 * without exactly the named secret refuses the config (Envoy would start
 * the listener without a certificate and reset its connections until a good
 * file comes; SHARP never serves without the certificate). Then, on the
 * main loop:
 *
 * - the source file (xds/path_source.h) changes: it is read again
 *   (sds.<name>.update_attempt), and a secret that differs from the current
 *   one rebuilds the TLS context of every chain and cluster using it; all of
 *   them or none take the new secret. A file that cannot be read or parsed
 *   counts update_failure, one whose contents are refused (no secret, the
 *   wrong name or kind, a key that does not match its certificate...)
 *   update_rejected; either keeps the previous secret and logs a warning
 *   naming the file and the reason.
 * - a file the secret names (certificate_chain, private_key, trusted_ca,
 *   crl, ticket keys) changes: its directory is watched (or only the
 *   secret's watched_directory, when it has one) and, when the files' bytes
 *   differ, the contexts are rebuilt; a failure counts
 *   sds.<name>.key_rotation_failed and keeps the previous contexts.
 *
 * A secret from an SDS server comes after the config is loaded: the
 * listener's or cluster's slot starts empty (its TLS connections fail:
 * a downstream handshake is refused, an upstream connection fails as a
 * connect failure), and the workers wait for it as for every gRPC
 * subscription's initial fetch (initial_fetch_timeout, 15 s by default),
 * as Envoy's init manager waits for SDS. Each update from the server is
 * applied as a file's (all consumers or none; a refused one is NACKed
 * with the reason); the provider's sds.<name>.* stats are the
 * subscription's.
 *
 * Listeners from LDS and clusters from CDS use the same providers (the
 * bootstrap snapshot's): a consumer attached when they are built holds a
 * reference to their slot, and the housekeeping sweep (sharp_sds_sweep)
 * frees the consumers whose owner has gone, then the providers nobody
 * uses. While a secret of theirs has not come, they warm
 * (sharp_sds_waiting; xds/lds.h, xds.h's CDS warming).
 *
 * A rebuilt context reaches the workers through the chain's or cluster's
 * slot (tls/context.h): new handshakes use it at once, established
 * connections keep the context they started with. */
#ifndef SHARP_TLS_SDS_H
#define SHARP_TLS_SDS_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "stats.h"
#include "config/tls_config.h"

typedef struct sharp_sds sharp_sds_t;
struct sharp_tls_slot;

sharp_sds_t *sharp_sds_new(sharp_stats_t *stats);
/* The xDS manager whose streams carry secrets from SDS servers. */
struct sharp_xds;
void sharp_sds_use_xds(sharp_sds_t *sds, struct sharp_xds *xds);
/* After a translation failed: whether it failed only because a secret has
 * not come from its SDS server yet (then attach the consumer with an empty
 * slot: the secret's arrival builds its context). Clears the flag. */
bool sharp_sds_pending(sharp_sds_t *sds);
/* Frees the providers (after sharp_sds_stop once watching). NULL is fine. */
void sharp_sds_free(sharp_sds_t *sds);

/* The resolver config/tls_config.c calls for an SdsSecretConfig with an
 * sds_config (sharp_tls_config_use_sds(sharp_sds_resolve, sds)): the
 * provider's current secret, the provider created and its file read on
 * first use. */
const Envoy__Extensions__TransportSockets__Tls__V3__Secret *
sharp_sds_resolve(void *sds, const Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig *c,
                  Envoy__Extensions__TransportSockets__Tls__V3__Secret__TypeCase kind, const char *path, char *err,
                  size_t errlen);

/* The static secrets (static_resources.secrets) the contexts may also
 * name, for their rebuilds; they live as long as the loaded config. */
void sharp_sds_use_static_secrets(sharp_sds_t *sds, Envoy__Extensions__TransportSockets__Tls__V3__Secret *const *secrets,
                                  size_t n);

/* Around the translation of one TLS context: begin forgets the providers
 * the last one used; after the context is built, attach makes `slot` a
 * consumer of the providers this translation used, keeping `pb` (the
 * Downstream/UpstreamTlsContext, taken over) to rebuild it, and returns
 * true; false (pb left to the caller) when it used none. `what` names the
 * consumer in logs; `updated` counts its rebuilds
 * (ssl_context_update_by_sds). */
void sharp_sds_begin(sharp_sds_t *sds);
bool sharp_sds_attach(sharp_sds_t *sds, struct sharp_tls_slot *slot, ProtobufCMessage *pb, bool server,
                      const char *what, sharp_stat_id_t updated);

/* Whether the consumer `slot` (a filter chain's or cluster's) has no
 * context yet because a secret of its from an SDS server has not had its
 * initial fetch (an update, a rejection, initial_fetch_timeout): a listener
 * from LDS or a cluster from CDS warms until then (Envoy's SdsApi init
 * target in the listener's or cluster's init manager). */
bool sharp_sds_waiting(const sharp_sds_t *sds, struct sharp_tls_slot *slot);
/* Main thread: forgets the consumers whose chain or cluster is gone (its
 * slot reference left alone: a listener or cluster from LDS or CDS that
 * was removed or replaced, once nothing uses it), then the providers no
 * consumer uses: an SDS server's secret is unsubscribed, a file is no
 * longer watched (Envoy's SecretManagerImpl drops an SdsApi with its last
 * user). Returns how many providers went. */
size_t sharp_sds_sweep(sharp_sds_t *sds);

/* /config_dump's SecretsConfigDump.dynamic_active_secrets and
 * dynamic_warming_secrets: one entry per provider (a secret from an SDS
 * file or server), its secret redacted as Envoy's MessageUtil::redact
 * (private keys, passwords, ticket keys read "[redacted]"); a warming one
 * (nothing accepted yet) is a Secret with only its name and version_info
 * "uninitialized". Free with sharp_sds_dump_free. */
typedef struct sharp_sds_dump {
    const char *name, *version_info; /* the provider's: valid until the next change */
    uint64_t last_updated_us;
    ProtobufCMessage *secret; /* owned */
    bool active;
} sharp_sds_dump_t;
size_t sharp_sds_dump(const sharp_sds_t *sds, sharp_sds_dump_t **out);
void sharp_sds_dump_free(sharp_sds_dump_t *v, size_t n);
/* A copy of a secret with its sensitive fields redacted (caller frees). */
ProtobufCMessage *sharp_sds_redacted_copy(const Envoy__Extensions__TransportSockets__Tls__V3__Secret *s);

/* Starts watching every provider's file and the files its secret names
 * (main loop). Returns 0, or -1 with the reason in err. */
int sharp_sds_start(sharp_sds_t *sds, uv_loop_t *loop, char *err, size_t errlen);
/* Stops watching (the handles close with the loop's next turn). */
void sharp_sds_stop(sharp_sds_t *sds);

/* XXH64 with seed 0, Envoy's HashUtil::xxHash64 (the version gauge). */
uint64_t sharp_xxhash64(const void *data, size_t len);

#endif
