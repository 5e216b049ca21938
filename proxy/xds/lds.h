/* lds.h: listeners from LDS (Envoy's ListenerManager, for the listeners of
 * dynamic_resources.lds_config), on the main thread.
 *
 * The subscription (xds.h; a file today, ADS next) delivers the state of
 * the world: every listener, and a version. sharp_lds_update is its
 * watcher's entry point and follows Envoy's LdsApiImpl and
 * ListenerManagerImpl:
 *
 * - listeners the update no longer names are removed first (so another
 *   listener of the update may take their address, and their sockets);
 * - then each listener in order: unchanged (the same resource) is skipped;
 *   a new name is added; a known one is replaced. When only its filter
 *   chains changed (every other field equal) and the workers run, the
 *   update is in place: chains equal to the old ones are handed over with
 *   their connections, only the connections of changed or removed chains
 *   drain (listener_in_place_updated). Otherwise the whole old version
 *   drains. A listener on the same address keeps its sockets, so no
 *   connection attempt is refused during the update;
 * - while the workers run, a new version whose connection managers take
 *   routes from RDS configurations that have not had their initial fetch
 *   (xds.h's sharp_xds_rds_fetched), or whose filter chains' TLS contexts
 *   wait for secrets from an SDS server (tls/sds.h's sharp_sds_waiting),
 *   warms first, as Envoy's warming listeners (its init manager holds the
 *   RDS and SdsApi init targets): in no snapshot, its new sockets bound
 *   but not listening, the version it replaces serving, until
 *   sharp_lds_routes_ready finds its routes and secrets there (or their
 *   initial_fetch_timeout passed);
 * - a listener that cannot be built (bad config, a route to an unknown
 *   cluster, the name of a static listener, a name twice, an address
 *   another listener has, a port that cannot be bound) is left out, its
 *   previous version (if any) stays, and the update is rejected
 *   (update_rejected, the NACK of a gRPC stream) with every reason; the
 *   other listeners of the update are applied, as in Envoy. Its failure is
 *   in /config_dump's error_state until the next update.
 *
 * A draining listener (or chain) takes no new connection; its connections
 * drain as for a server drain (HTTP/1: "connection: close" on the next
 * response; HTTP/2: GOAWAY; idle ones close after the connection
 * manager's drain_timeout) and whatever is left when --drain-time-s has
 * passed is closed. How the workers learn it: the main thread sets the
 * drain state of the listener and its chains (snapshot.h) before it
 * publishes the snapshot without them, and bumps the drain epoch; a worker
 * whose epoch is behind looks at its connections' chains at its next
 * wake-up (sharp_conn_drain_listeners). */
#ifndef SHARP_XDS_LDS_H
#define SHARP_XDS_LDS_H

#include "common.h"
#include "snapshot.h"

#include <protobuf-c/protobuf-c.h>

struct sharp_server;
typedef struct sharp_lds sharp_lds_t;

/* `source` names the file in error messages. */
sharp_lds_t *sharp_lds_new(struct sharp_server *srv, const char *source);
/* Closes the drain timers (shutdown; the loop then runs to its end). */
void sharp_lds_stop(sharp_lds_t *m);
void sharp_lds_free(sharp_lds_t *m);

/* The subscription's entry point (sharp_xds_watcher_t.on_update); `ud` is
 * the manager. Takes the resources of the listeners it keeps. */
int sharp_lds_update(void *ud, ProtobufCMessage **resources, size_t n, const char *version, bool *refused,
                     char *err, size_t errlen);
/* A route configuration or a secret had its initial fetch (xds.c):
 * warming listeners that waited only for what has come now serve. */
void sharp_lds_routes_ready(sharp_lds_t *m);
/* A listener of the last update refused before it reached sharp_lds_update
 * (a field SHARP does not implement): recorded as a failure of that update
 * (/config_dump's error_state; `pb`, when given, is taken to show it). */
void sharp_lds_refused(sharp_lds_t *m, const char *name, const char *why, ProtobufCMessage **pb);

/* The listeners serving now, in the snapshots after the static ones. */
size_t sharp_lds_listeners(const sharp_lds_t *m, sharp_listener_config_t ***out);

/* Bumped whenever a listener or chain starts draining or closing: a
 * worker whose last look is older scans its connections. */
uint32_t sharp_lds_drain_epoch(void);

/* /config_dump: Envoy's ListenersConfigDump.dynamic_listeners. A state is
 * absent when its `listener` is NULL; an entry without a name is an error
 * of the last update not tied to a listener (Envoy's overall error
 * state). */
typedef struct sharp_lds_state {
    const char *version_info;
    const ProtobufCMessage *listener;
    uint64_t last_updated_us;
} sharp_lds_state_t;
typedef struct sharp_lds_dump {
    const char *name;
    sharp_lds_state_t active, warming, draining;
    /* error_state: the failed resource, its reason and when */
    const ProtobufCMessage *failed;
    const char *details;
    uint64_t failed_us;
} sharp_lds_dump_t;
size_t sharp_lds_dump(const sharp_lds_t *m, sharp_lds_dump_t **out);
/* The version of the last update that changed something ("" before). */
const char *sharp_lds_version(const sharp_lds_t *m);

#endif
