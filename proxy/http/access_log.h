/* access_log.h: Envoy access-log format strings and the file sink.
 *
 * A format ("[%START_TIME%] \"%REQ(:METHOD)% ...\"\n") is compiled once at
 * config time into a list of literal pieces and command operators, then
 * rendered per stream from its sharp_stream_info_t. Missing values print
 * "-" in text formats and null in JSON formats, as in Envoy. The same
 * formatter expands %VAR% values in request/response header mutations
 * (with missing values rendered empty, as Envoy's header formatter does)
 * and formats local reply bodies (%LOCAL_REPLY_BODY% is the reply's text).
 *
 * The file sink is shared by all workers (one O_APPEND descriptor); each
 * worker owns a writer that batches lines in a buffer and writes them with a
 * single write(2) when the buffer passes 64 KiB, or when the worker flushes
 * (a 1 s timer and shutdown). With O_APPEND each write lands whole at the end
 * of the file, so workers never interleave inside each other's lines. */
#ifndef SHARP_HTTP_ACCESS_LOG_H
#define SHARP_HTTP_ACCESS_LOG_H

#include "common.h"
#include "sbuf.h"
#include "http/stream_info.h"

#include <stdatomic.h>

/* Envoy's default format, used when an access log names none. */
#define SHARP_ACCESS_LOG_DEFAULT_FORMAT                                                            \
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "             \
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "                   \
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "      \
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

typedef struct sharp_access_log_format sharp_access_log_format_t;

/* Compiles a text format. Unknown operators, unterminated operators and bad
 * arguments are errors naming the operator (and its byte offset), e.g.
 * "unknown command operator %FOO% at offset 4". NULL on error. */
sharp_access_log_format_t *sharp_access_log_format_compile(const char *fmt, char *err,
                                                           size_t errlen);
/* Compiles Envoy's json_format: `n` keys each with its own format string.
 * Each rendering is one JSON object on one line ("{...}\n") with the keys
 * sorted (Envoy always sorts them). A value that is exactly one numeric
 * operator (%RESPONSE_CODE%, %DURATION%, %BYTES_SENT%, ...) is rendered as a
 * JSON number, an operator without a value as null, anything else as a
 * string. NULL on error, with the key named in the message. */
sharp_access_log_format_t *sharp_access_log_format_compile_json(const char *const *keys,
                                                                const char *const *formats,
                                                                size_t n, char *err, size_t errlen);
/* Compiles Envoy's json_format Struct: string values are format strings,
 * numbers stay numbers, nested objects and lists render as such (keys
 * sorted at every level); bools and nulls are refused with Envoy's message.
 * NULL on error, with the value's path ("json_format.a.b[1]: ..."). */
struct Google__Protobuf__Struct;
sharp_access_log_format_t *sharp_access_log_format_compile_struct(const struct Google__Protobuf__Struct *st,
                                                                  char *err, size_t errlen);
/* Appends the rendering for `si` to `out`. `si` may be NULL (every
 * stream-dependent operator is then missing). */
void sharp_access_log_format_render(const sharp_access_log_format_t *f,
                                    const sharp_stream_info_t *si, sharp_sbuf_t *out);
/* Like render, but missing values are rendered as nothing instead of "-"
 * (the header mutation flavour). Text formats only. */
void sharp_access_log_format_render_header(const sharp_access_log_format_t *f,
                                           const sharp_stream_info_t *si, sharp_sbuf_t *out);
void sharp_access_log_format_free(sharp_access_log_format_t *f);
/* Envoy's omit_empty_values: a text format renders missing values as
 * nothing instead of "-"; a JSON format leaves out keys whose value is
 * missing or empty. */
void sharp_access_log_format_set_omit_empty(sharp_access_log_format_t *f, bool omit);

/* ---- file sink ---- */

typedef struct sharp_access_log_file {
    int fd;
    char *path;
    _Atomic uint64_t write_errors; /* failed or short writes, all workers */
} sharp_access_log_file_t;

/* Opens `path` for appending (created 0644 if missing). "/dev/stdout" and
 * "/dev/stderr" use the process's own descriptors (duplicated), so they work
 * whatever fd 1 and 2 are (pipe, socket, tty). NULL with a message on error. */
sharp_access_log_file_t *sharp_access_log_file_open(const char *path, char *err, size_t errlen);
void sharp_access_log_file_close(sharp_access_log_file_t *f);
/* For --mode validate, which creates no file: 0 when `path` could be opened
 * for appending (it exists and is writable, or its directory lets us create
 * it), else -1 with the same message open would give. */
int sharp_access_log_file_check(const char *path, char *err, size_t errlen);
/* Reopens the file under its path (logrotate moved it away: the next writes
 * create and fill a new file). The standard streams are left alone. */
int sharp_access_log_file_reopen(sharp_access_log_file_t *f, char *err, size_t errlen);

#define SHARP_ACCESS_LOG_FLUSH_BYTES (64 * 1024)

/* A worker's batching buffer in front of a shared file. */
typedef struct sharp_access_log_writer {
    sharp_access_log_file_t *file; /* not owned */
    sharp_sbuf_t buf;
    uint64_t lines;
} sharp_access_log_writer_t;

void sharp_access_log_writer_init(sharp_access_log_writer_t *w, sharp_access_log_file_t *file);
/* Appends bytes (normally one whole line) and flushes past 64 KiB. */
void sharp_access_log_writer_append(sharp_access_log_writer_t *w, const char *p, size_t n);
/* Renders one entry straight into the buffer and flushes past 64 KiB. */
void sharp_access_log_writer_log(sharp_access_log_writer_t *w, const sharp_access_log_format_t *f,
                                 const sharp_stream_info_t *si);
/* Writes everything buffered with one write(2) (retried on EINTR and after a
 * short write). Returns 0, or -1 when bytes were lost (counted in the file's
 * write_errors; the buffer is emptied either way so a broken sink cannot grow
 * memory without bound). */
int sharp_access_log_writer_flush(sharp_access_log_writer_t *w);
/* Flushes and releases the buffer. */
void sharp_access_log_writer_destroy(sharp_access_log_writer_t *w);

#endif
