/* statsd.h: Envoy's statsd stats sinks (envoy.stat_sinks.statsd and
 * envoy.stat_sinks.dog_statsd) over UDP, and plain statsd over TCP to a
 * cluster (tcp_cluster_name, below).
 *
 * A sink runs on the main thread at every stats flush (the bootstrap's
 * stats_flush_interval): used counters as "<prefix>.<name>:<delta>|c" (the
 * change since the sink's previous flush), used gauges as
 * "<prefix>.<name>:<value>|g", and the values histograms recorded during
 * the interval as timers "<prefix>.<name>:<value>|ms". Envoy sends each
 * histogram value from the worker that records it; SHARP's workers keep
 * bucketed histograms only, so the sink sends, at the flush, one timer line
 * per non-empty bucket of the interval, its value the bucket's middle (exact
 * below 32, within ~3% above) and, when the bucket holds n > 1 values, the
 * statsd sample rate "|@<1/n>" so that a statsd server counts n values.
 *
 * Plain statsd uses full stat names; DogStatsD uses tag-extracted names
 * followed by "|#tag:value,...". Lines are packed into datagrams of at most
 * max_bytes_per_datagram bytes separated by '\n' (Envoy's default of 0, and
 * plain statsd, send one line per datagram); a line longer than that is sent
 * alone. Send errors are ignored: a sink never affects the proxy. A flush's
 * datagrams go out through sendmmsg(2) in batches, the same datagrams in the
 * same order as one sendto each. */
#ifndef SHARP_STATSD_H
#define SHARP_STATSD_H

#include "common.h"
#include "sbuf.h"
#include "stats.h"

#include <protobuf-c/protobuf-c.h>
#include <sys/socket.h>

/* Datagram packing, as Envoy's UdpStatsdSink::writeBuffer. */
typedef void (*sharp_statsd_send_fn)(void *arg, const char *data, size_t len);
typedef struct {
    sharp_sbuf_t buf;
    size_t max; /* 0: every line its own datagram */
    sharp_statsd_send_fn send;
    void *arg;
} sharp_statsd_packer_t;
void sharp_statsd_packer_add(sharp_statsd_packer_t *p, const char *line, size_t len);
/* Sends what is buffered; the packer can be reused (free its buf at the end). */
void sharp_statsd_packer_flush(sharp_statsd_packer_t *p);

/* Appends one line (without '\n') to out: prefix "." name ":" value type,
 * then, when ntags > 0, "|#" tag ":" value joined by ','. */
void sharp_statsd_format(sharp_sbuf_t *out, const char *prefix, const char *name, size_t namelen,
                         const char *value, const char *type, const sharp_stat_tag_t *tags,
                         size_t ntags);

typedef struct sharp_statsd_sink sharp_statsd_sink_t;
struct sharp_upstream_env;
struct sharp_snapshot;
/* prefix NULL or "": "envoy". dog: tag-extracted names and DogStatsD tags.
 * The socket is opened at the first flush. */
sharp_statsd_sink_t *sharp_statsd_sink_create(const struct sockaddr *addr, socklen_t addrlen,
                                              const char *prefix, bool dog, size_t max_bytes);
/* StatsdSink.tcp_cluster_name: Envoy's TcpStatsdSink. The flush's lines,
 * each ended by '\n', are written on one TCP connection to a host of the
 * cluster (a static one), made through the cluster's pool (connect timeout,
 * circuit breakers and upstream_cx_* stats apply) when a flush finds none
 * and kept until it closes. What the connection has not sent yet (queued,
 * or waiting for the connect) is bounded as in Envoy: a flush that finds
 * more than SHARP_STATSD_TCP_MAX_BUFFERED bytes there closes the connection,
 * drops its own lines and counts statsd.cx_overflow; without a host, or
 * when the connect fails, the flush's lines are dropped. The next flush
 * tries again. */
#define SHARP_STATSD_TCP_MAX_BUFFERED (16u * 1024 * 1024)
sharp_statsd_sink_t *sharp_statsd_sink_create_tcp(const char *cluster, const char *prefix);
/* Envoy's checkClusterAndLocalInfo("tcp statsd"): the cluster exists in
 * the bootstrap and the node has an id and a cluster. */
int sharp_statsd_sink_check(const sharp_statsd_sink_t *k, struct sharp_snapshot *snap,
                            const ProtobufCMessage *node, char *err, size_t errlen);
/* Closes the TCP sink's connection (shutdown); later flushes send nothing. */
void sharp_statsd_sink_stop(sharp_statsd_sink_t *k);
void sharp_statsd_sink_free(sharp_statsd_sink_t *k);
/* Sends the flush (main thread, right after sharp_stats_flush); env and
 * snap (the bootstrap's) serve the TCP sink's pool. */
void sharp_statsd_sink_flush(sharp_statsd_sink_t *k, sharp_stats_t *s, const struct sharp_upstream_env *env,
                             struct sharp_snapshot *snap);
/* Lines and datagrams sent so far (for logs and tests). */
uint64_t sharp_statsd_sink_datagrams(const sharp_statsd_sink_t *k);
/* TCP: flushes dropped for a collector that did not take its bytes. */
uint64_t sharp_statsd_sink_overflows(const sharp_statsd_sink_t *k);

#endif
