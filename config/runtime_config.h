/* runtime_config.h: the bootstrap's layered_runtime
 * (envoy.config.bootstrap.v3.LayeredRuntime) -> the runtime loader of
 * runtime.h, with Envoy's checks (LoaderImpl, ProtoLayer). */
#ifndef SHARP_CONFIG_RUNTIME_CONFIG_H
#define SHARP_CONFIG_RUNTIME_CONFIG_H

#include "runtime.h"
#include "sbuf.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

/* Builds the loader for `lr` (NULL when the bootstrap has no
 * layered_runtime: no layers, as Envoy; present but without layers: one
 * admin layer named ""), loads its first snapshot and registers runtime.*
 * stats when `stats` is not NULL. `service_cluster` is the node's cluster
 * for disk layers with append_service_cluster. Returns the loader, or NULL
 * with the offending field's path in `epath` and what is wrong in `emsg`. */
sharp_runtime_t *sharp_config_layered_runtime(const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr,
                                              const char *service_cluster, sharp_stats_t *stats, char *epath,
                                              size_t epathlen, char *emsg, size_t emsglen);

/* A Struct's values as Envoy's ProtoLayer flattens a static_layer or an
 * RTDS Runtime's layer: nested objects are dotted keys, an empty object or
 * one with numerator or denominator is one value (a FractionalPercent),
 * numbers, bools and strings are values, null and lists are errors. Adds to
 * `out`; 0, or -1 with the path of the offending value (`path` names the
 * struct) in epath and the message in emsg. */
int sharp_config_runtime_struct(const Google__Protobuf__Struct *st, const char *path, sharp_runtime_values_t *out,
                                char *epath, size_t epathlen, char *emsg, size_t emsglen);

/* A google.protobuf.Value as Envoy's runtime text (its YAML rendering):
 * 5000 -> "5000", true -> "true", a struct -> "key: value" lines. */
void sharp_config_runtime_value_text(const Google__Protobuf__Value *v, sharp_sbuf_t *out);

/* Applies the runtime's re2.max_program_size.error_level / warn_level
 * (Envoy's defaults 100 and none) to regex compilation. At load, a key
 * present without a non-negative number is an error (-1, with the path of
 * the layer value and the message); afterwards (/runtime_modify) such a
 * value means the default, as Envoy's getInteger. */
int sharp_config_runtime_regex_limits(const sharp_runtime_t *rt,
                                      const Envoy__Config__Bootstrap__V3__LayeredRuntime *lr, bool strict,
                                      char *epath, size_t epathlen, char *emsg, size_t emsglen);

#endif
