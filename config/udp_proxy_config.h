/* udp_proxy_config.h: a UDP listener (envoy.config.listener.v3.Listener
 * whose socket_address.protocol is UDP) -> its UDP proxy config
 * (proxy/udp/udp_proxy.h): udp_listener_config and the one listener filter
 * a UDP listener takes, envoy.filters.udp_listener.udp_proxy
 * (envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig). */
#ifndef SHARP_CONFIG_UDP_PROXY_CONFIG_H
#define SHARP_CONFIG_UDP_PROXY_CONFIG_H

#include "snapshot.h"
#include "stats.h"

#include "envoy/config/listener/v3/listener.pb-c.h"

/* Sets l->udp from pb (the listener at field path `path`; l's address and
 * stat_name are set) and registers its stats in `stats`. Returns 0, or -1
 * with the offending field's full path in `epath` and what is wrong in
 * `emsg`. */
int sharp_config_udp_listener(sharp_listener_config_t *l, const Envoy__Config__Listener__V3__Listener *pb,
                              const char *path, sharp_stats_t *stats, char *epath, size_t epathlen, char *emsg,
                              size_t emsglen);

#endif
