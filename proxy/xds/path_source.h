/* path_source.h: Envoy's filesystem subscription
 * (envoy.config.core.v3.PathConfigSource, and the deprecated ConfigSource
 * `path`): a file holding a DiscoveryResponse, read at once and again
 * whenever it changes. Generic over the resource type, so that SDS
 * (tls/sds.h) and later file-based LDS/CDS share it.
 *
 * The file is parsed as Envoy's MessageUtil::loadFromFile does (by its
 * extension: YAML for .yaml/.yml, else strict JSON) and its resources are
 * decoded as the type the subscriber wants and checked against the support
 * table (a resource using a field SHARP refuses is refused as in the
 * bootstrap).
 *
 * Watching follows Envoy: without watched_directory the file's directory is
 * watched for the file being moved into place (the atomic way to replace
 * it; SHARP also reloads when the file is written in place and closed);
 * with watched_directory only that directory is watched, and any entry
 * moved into it (a Kubernetes ConfigMap's `..data` symlink swap) reloads
 * the path. */
#ifndef SHARP_XDS_PATH_SOURCE_H
#define SHARP_XDS_PATH_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>
#include <uv.h>

/* A resource refused alone: it uses what SHARP does not implement. */
typedef struct sharp_discovery_refusal {
    char *name, *why;
    ProtobufCMessage *msg; /* as read; the reader may take it (set it to NULL) */
} sharp_discovery_refusal_t;

/* What one read of the file gave. */
typedef struct sharp_discovery {
    char *version_info;            /* "" when the file has none */
    ProtobufCMessage **resources;  /* decoded as the requested type */
    size_t nresources;
    sharp_discovery_refusal_t *refused; /* sharp_path_source_read_some only */
    size_t nrefused;
} sharp_discovery_t;

/* Reads `path` as a DiscoveryResponse whose resources are `type`. Returns 0,
 * or -1 with the reason in err; *parsed tells whether the file was read
 * and parsed (a later error rejects its contents: Envoy's update_rejected)
 * or not (missing, unreadable, not a DiscoveryResponse: update_failure). */
int sharp_path_source_read(const char *path, const ProtobufCMessageDescriptor *type, sharp_discovery_t *out,
                           bool *parsed, char *err, size_t errlen);
/* As sharp_path_source_read, for the resources of a wildcard type (the
 * clusters or listeners of a file): one that uses what SHARP does not
 * implement is refused alone, in out->refused, as the mux refuses one of a
 * gRPC response and as Envoy's CdsApiHelper and LdsApiImpl go on past a
 * resource they cannot build; the file is still refused whole when it
 * breaks one of Envoy's validation rules. */
int sharp_path_source_read_some(const char *path, const ProtobufCMessageDescriptor *type, sharp_discovery_t *out,
                                bool *parsed, char *err, size_t errlen);
void sharp_discovery_free(sharp_discovery_t *d);
/* A resource's name field ("" when it has none). */
const char *sharp_resource_name(const ProtobufCMessage *m);

/* Envoy's checkFilesystemSubscriptionBackingPath: the path must exist and
 * a watched directory must be a directory. 0, or -1 with the reason
 * (reported under `field`) in err. */
int sharp_path_source_check(const char *path, const char *watched_directory, const char *field, char *err,
                            size_t errlen);

typedef struct sharp_path_source sharp_path_source_t;

/* Starts watching `path` (or `watched_directory` when not NULL) on the
 * main loop; `cb` runs after each change, and the subscriber reads the
 * file again. NULL with the reason in err. */
sharp_path_source_t *sharp_path_source_watch(uv_loop_t *loop, const char *path, const char *watched_directory,
                                             void (*cb)(void *ud), void *ud, char *err, size_t errlen);
void sharp_path_source_free(sharp_path_source_t *s);

#endif
