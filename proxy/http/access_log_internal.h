/* access_log_internal.h: the compiled form of an access-log format, shared
 * by the compiler (access_log.c) and the renderer (access_log_ops.c). */
#ifndef SHARP_HTTP_ACCESS_LOG_INTERNAL_H
#define SHARP_HTTP_ACCESS_LOG_INTERNAL_H

#include "http/access_log.h"

typedef enum {
    OP_LITERAL,
    OP_START_TIME,
    OP_REQ,
    OP_RESP,
    OP_TRAILER,
    OP_RESPONSE_CODE,
    OP_RESPONSE_FLAGS,
    OP_RESPONSE_CODE_DETAILS,
    OP_BYTES_RECEIVED,
    OP_BYTES_SENT,
    OP_DURATION,
    OP_REQUEST_DURATION,
    OP_RESPONSE_DURATION,
    OP_ATTEMPT_COUNT,
    OP_UPSTREAM_HOST,
    OP_UPSTREAM_HOST_NOPORT,
    OP_UPSTREAM_CLUSTER,
    OP_UPSTREAM_CLUSTER_RAW,
    OP_UPSTREAM_LOCAL,
    OP_UPSTREAM_LOCAL_NOPORT,
    OP_UPSTREAM_FAILURE_REASON,
    OP_UPSTREAM_HOST_DIAGNOSIS, /* SHARP's */
    OP_DOWNSTREAM_REMOTE,
    OP_DOWNSTREAM_REMOTE_NOPORT,
    OP_DOWNSTREAM_DIRECT_REMOTE,
    OP_DOWNSTREAM_DIRECT_REMOTE_NOPORT,
    OP_DOWNSTREAM_LOCAL,
    OP_DOWNSTREAM_LOCAL_NOPORT,
    OP_DOWNSTREAM_LOCAL_PORT,
    OP_DOWNSTREAM_REMOTE_PORT,
    OP_PROTOCOL,
    OP_ROUTE_NAME,
    OP_HOSTNAME,
    OP_LOCAL_REPLY_BODY,
    OP_GRPC_STATUS,        /* CAMEL_STRING (default) */
    OP_GRPC_STATUS_SNAKE,  /* SNAKE_STRING */
    OP_GRPC_STATUS_NUMBER, /* NUMBER */
    /* the downstream connection's TLS (stream_info.h) */
    OP_DOWNSTREAM_TLS_VERSION,
    OP_DOWNSTREAM_TLS_CIPHER,
    OP_REQUESTED_SERVER_NAME,
    OP_DOWNSTREAM_PEER_URI_SAN,
    OP_DOWNSTREAM_PEER_SUBJECT,
    OP_DOWNSTREAM_LOCAL_SUBJECT,
    /* the last try's upstream connection's TLS (tls/conn.h's
     * sharp_tls_info_t, in that order from OP_UPSTREAM_TLS_VERSION) */
    OP_UPSTREAM_TLS_VERSION,
    OP_UPSTREAM_TLS_CIPHER,
    OP_UPSTREAM_TLS_SESSION_ID,
    OP_UPSTREAM_PEER_SUBJECT,
    OP_UPSTREAM_PEER_ISSUER,
    OP_UPSTREAM_PEER_CERT,
    OP_UPSTREAM_PEER_URI_SAN,
    OP_UPSTREAM_PEER_DNS_SAN,
    OP_UPSTREAM_PEER_IP_SAN,
    OP_UPSTREAM_LOCAL_URI_SAN,
    OP_UPSTREAM_LOCAL_DNS_SAN,
    OP_UPSTREAM_LOCAL_IP_SAN,
    OP_UPSTREAM_PEER_CERT_V_START, /* a time, formatted as START_TIME */
    OP_UPSTREAM_PEER_CERT_V_END,
    OP_DYNAMIC_METADATA, /* the stream's dynamic metadata (http/metadata.h) */
} al_op_t;

/* Command table flags. */
enum {
    CMD_ARG_REQUIRED = 1u << 0, /* %CMD(arg)% only */
    CMD_ARG_OPTIONAL = 1u << 1, /* %CMD% or %CMD(arg)% */
    CMD_LEN_ALLOWED = 1u << 2,  /* %CMD(arg):N% truncation */
    CMD_NUMERIC = 1u << 3,      /* a number in JSON output */
};

/* One piece of a START_TIME format. */
typedef enum {
    TS_STRFTIME,          /* text given to strftime (UTC) */
    TS_EPOCH,             /* %s */
    TS_FRACTION,          /* `digits` fractional digits, zero padded */
    TS_FRACTION_DOT,      /* "." + `digits` digits (%E<n>S after %S) */
    TS_FRACTION_TRIM,     /* fraction without trailing zeros (%E*f) */
    TS_FRACTION_TRIM_DOT, /* "." + trimmed fraction, nothing when zero (%E*S) */
} al_time_kind_t;

typedef struct {
    al_time_kind_t kind;
    int digits;
    char *text;
} al_time_seg_t;

typedef struct {
    al_op_t op;
    bool numeric;
    bool has_max; /* :N given */
    size_t max_len;
    char *text; /* literal text, or the lower-case header name */
    size_t len;
    char *alt; /* REQ(X?Y): the alternative header, lower-case */
    size_t alt_len;
    al_time_seg_t *segs; /* START_TIME, UPSTREAM_PEER_CERT_V_START / _END */
    uint32_t nsegs;
    char **path; /* DYNAMIC_METADATA(NS:K1:K2): the keys after the namespace (text) */
    uint32_t npath;
} al_piece_t;

/* What a JSON value is: a format string, a nested object or list, or a
 * number given in the config. */
typedef enum {
    AL_JSON_FORMAT,
    AL_JSON_OBJECT,
    AL_JSON_LIST,
    AL_JSON_NUMBER,
} al_json_kind_t;

/* A text format is one field without a key; a JSON format is one field per
 * key, sorted by key, each a format string or (json_format with nested
 * values) an object, a list or a number. */
typedef struct al_field {
    char *key;
    al_piece_t *pieces;
    uint32_t n, cap;
    bool single; /* exactly one operator and no literal text (typed JSON value) */
    al_json_kind_t kind;
    struct al_field *children; /* AL_JSON_OBJECT (sorted by key), AL_JSON_LIST */
    uint32_t nchildren;
    double number; /* AL_JSON_NUMBER */
} al_field_t;

struct sharp_access_log_format {
    bool json;
    bool omit_empty; /* SubstitutionFormatString.omit_empty_values */
    al_field_t *fields;
    uint32_t nfields;
    char *hostname; /* %HOSTNAME%, read once at compile time */
};

#endif
