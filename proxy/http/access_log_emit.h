/* access_log_emit.h: access loggers configured on a connection manager
 * (envoy.access_loggers.file / stdout / stderr) and the per-worker buffers
 * they write through. Formatting lives in access_log.c; this file owns the
 * files and the buffering: each worker appends lines to its own buffer and
 * writes it with one write(2) when it passes 64 KiB and every second. */
#ifndef SHARP_HTTP_ACCESS_LOG_EMIT_H
#define SHARP_HTTP_ACCESS_LOG_EMIT_H

#include "http/stream_info.h"

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "http/access_log.h"

struct sharp_worker;
struct sharp_hcm_config;
typedef struct sharp_access_log sharp_access_log_t;

/* From an envoy.config.accesslog.v3.AccessLog message. A connection
 * manager's log (`worker_buffered`) is written through each worker's buffer
 * for its file: logs naming the same path share one file and one buffer
 * slot, kept until sharp_access_log_files_close_all, since a listener
 * update (LDS) may free the log while a worker still buffers lines for it.
 * Otherwise (the admin's) the log owns its file. With `open_file` false
 * (--mode validate) the file is only checked, not created, and the log must
 * not be used. */
sharp_access_log_t *sharp_access_log_create(const ProtobufCMessage *access_log, bool worker_buffered,
                                            bool open_file, char *err, size_t errlen);
/* Reopens every shared file (SIGUSR1, /reopen_logs); -1 with the first
 * failure in err when one could not be reopened (the others are). */
int sharp_access_log_files_reopen(char *err, size_t errlen);
/* Closes the shared files (the server's end, after the workers). */
void sharp_access_log_files_close_all(void);
/* The admin's deprecated access_log_path: a file logger with Envoy's default
 * format. `open_file` as above. */
sharp_access_log_t *sharp_access_log_create_path(const char *path, bool open_file, char *err,
                                                 size_t errlen);
/* Renders one entry and writes it at once (one write(2)): for the admin
 * server on the main thread, whose requests are few and must not wait for a
 * worker's flush timer. */
void sharp_access_log_write_now(const sharp_access_log_t *l, const sharp_stream_info_t *si);
/* SIGUSR1 and /reopen_logs: see sharp_access_log_file_reopen (a shared
 * file is reopened by sharp_access_log_files_reopen instead). */
int sharp_access_log_reopen(sharp_access_log_t *l, char *err, size_t errlen);
void sharp_access_log_free(sharp_access_log_t *l);

/* A SubstitutionFormatString (text_format, text_format_source, json_format,
 * omit_empty_values) as a compiled format. As Envoy's validation, one of the
 * three formats must be set. */
sharp_access_log_format_t *sharp_access_log_compile_sfs(const Envoy__Config__Core__V3__SubstitutionFormatString *f,
                                                        char *err, size_t errlen);
/* The bytes of a DataSource, NUL-terminated (the length excludes the NUL);
 * NULL with a message on error. The caller frees. */
char *sharp_data_source_read(const Envoy__Config__Core__V3__DataSource *ds, size_t *len, char *err, size_t errlen);

/* Writes one entry per access log whose filter accepts the stream. */
void sharp_access_log_emit_all(struct sharp_worker *w, const struct sharp_hcm_config *hcm,
                               const sharp_stream_info_t *si);
void sharp_access_log_worker_init(struct sharp_worker *w);
void sharp_access_log_worker_flush(struct sharp_worker *w);
void sharp_access_log_worker_free(struct sharp_worker *w);

#endif
