/* stream_info.h: what is known about one stream when it completes, the input
 * of access logs and of every filter's completion callback. Field meanings
 * follow Envoy's StreamInfo. */
#ifndef SHARP_HTTP_STREAM_INFO_H
#define SHARP_HTTP_STREAM_INFO_H

#include "common.h"
#include "http/headers.h"
#include "net.h"

/* Envoy's response flags, one bit each, with their short codes. */
enum {
    SHARP_RF_FAILED_LOCAL_HEALTHCHECK = 1u << 0,    /* LH */
    SHARP_RF_NO_HEALTHY_UPSTREAM = 1u << 1,         /* UH */
    SHARP_RF_UPSTREAM_REQUEST_TIMEOUT = 1u << 2,    /* UT */
    SHARP_RF_LOCAL_RESET = 1u << 3,                 /* LR */
    SHARP_RF_UPSTREAM_REMOTE_RESET = 1u << 4,       /* UR */
    SHARP_RF_UPSTREAM_CONNECTION_FAILURE = 1u << 5, /* UF */
    SHARP_RF_UPSTREAM_CONNECTION_TERMINATION = 1u << 6, /* UC */
    SHARP_RF_UPSTREAM_OVERFLOW = 1u << 7,           /* UO */
    SHARP_RF_NO_ROUTE_FOUND = 1u << 8,              /* NR */
    SHARP_RF_DELAY_INJECTED = 1u << 9,              /* DI */
    SHARP_RF_FAULT_INJECTED = 1u << 10,             /* FI */
    SHARP_RF_RATE_LIMITED = 1u << 11,               /* RL */
    SHARP_RF_UNAUTHORIZED_EXTERNAL_SERVICE = 1u << 12, /* UAEX */
    SHARP_RF_RATELIMIT_SERVICE_ERROR = 1u << 13,    /* RLSE */
    SHARP_RF_DOWNSTREAM_CONNECTION_TERMINATION = 1u << 14, /* DC */
    SHARP_RF_UPSTREAM_RETRY_LIMIT_EXCEEDED = 1u << 15, /* URX */
    SHARP_RF_STREAM_IDLE_TIMEOUT = 1u << 16,        /* SI */
    SHARP_RF_INVALID_ENVOY_REQUEST_HEADERS = 1u << 17, /* IH */
    SHARP_RF_DOWNSTREAM_PROTOCOL_ERROR = 1u << 18,  /* DPE */
    SHARP_RF_UPSTREAM_MAX_STREAM_DURATION_REACHED = 1u << 19, /* UMSDR */
    SHARP_RF_RESPONSE_FROM_CACHE_FILTER = 1u << 20, /* RFCF */
    SHARP_RF_NO_FILTER_CONFIG_FOUND = 1u << 21,     /* NFCF */
    SHARP_RF_DURATION_TIMEOUT = 1u << 22,           /* DT */
    SHARP_RF_UPSTREAM_PROTOCOL_ERROR = 1u << 23,    /* UPE */
    SHARP_RF_NO_CLUSTER_FOUND = 1u << 24,           /* NC */
    SHARP_RF_OVERLOAD_MANAGER = 1u << 25,           /* OM */
    SHARP_RF_DNS_RESOLUTION_FAILURE = 1u << 26,     /* DF */
    SHARP_RF_DROP_OVERLOAD = 1u << 27,              /* DO */
    SHARP_RF_DOWNSTREAM_REMOTE_RESET = 1u << 28,    /* DR */
};

/* Writes the flags as Envoy prints them ("UF,URX"), or "-" when none.
 * Returns the length written (always NUL-terminated, truncated to cap). */
size_t sharp_response_flags_str(uint32_t flags, char *out, size_t cap);
/* The flag bit of one short code ("UH"), or 0 when Envoy has no such code. */
uint32_t sharp_response_flag_from_str(const char *code);

/* The downstream connection's TLS, for the access log's DOWNSTREAM_TLS_*,
 * REQUESTED_SERVER_NAME and DOWNSTREAM_PEER_* / LOCAL_SUBJECT operators.
 * Owned by the connection (proxy/tls/downstream.c); NULL fields are absent. */
typedef struct sharp_downstream_tls_info {
    const char *version; /* "TLSv1.3" */
    const char *cipher;  /* "TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256" */
    const char *sni;
    char *peer_uri_san, *peer_subject;
    const char *local_subject; /* the TLS engine's, as long as the connection */
    /* every URI and DNS subjectAltName of the peer's certificate,
     * NULL-terminated (NULL: none), for RBAC's authenticated principal */
    char **peer_uri_sans, **peer_dns_sans;
    bool peer_cert; /* the client presented a certificate (mutual TLS) */
    char *xfcc;     /* this connection's x-forwarded-client-cert element, when the HCM adds one */
} sharp_downstream_tls_info_t;

typedef struct sharp_stream_info {
    uint64_t start_wall_us; /* wall clock when the first byte of the request arrived */
    uint64_t start_ns;      /* monotonic, same instant */
    uint64_t end_ns;        /* monotonic, when the stream completed (0 while open) */
    uint64_t upstream_first_byte_ns;  /* 0 if no upstream response */
    uint64_t request_complete_ns;     /* last downstream request byte */
    const char *protocol;   /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" */
    uint32_t response_code; /* 0 if none was sent */
    uint32_t response_flags;
    const char *response_code_details; /* Envoy's details string ("via_upstream", "route_not_found") */
    uint64_t bytes_received; /* request body bytes */
    uint64_t bytes_sent;     /* response body bytes */
    char upstream_host[SHARP_ADDR_STRLEN];  /* "ip:port" of the chosen host, "" if none */
    char upstream_local_address[SHARP_ADDR_STRLEN];
    /* "ip:port": the trusted client address (x-forwarded-for with
     * xff_num_trusted_hops, port 0, when the HCM takes it from there) */
    char downstream_remote_address[SHARP_ADDR_STRLEN];
    char downstream_direct_remote_address[SHARP_ADDR_STRLEN]; /* the connection's peer */
    char downstream_local_address[SHARP_ADDR_STRLEN];
    const sharp_downstream_tls_info_t *downstream_tls; /* NULL: a plaintext connection */
    const char *upstream_cluster;     /* its observability name (alt_stat_name); NULL if none */
    const char *upstream_cluster_raw; /* its name */
    const char *route_name;       /* NULL if none */
    /* Envoy's transport failure reason of the last try's connection (a TLS
     * handshake that failed: "TLS_error:|...:TLS_error_end"); NULL if none */
    const char *upstream_transport_failure_reason;
    /* the last try's upstream connection's TLS engine (tls/conn.h), read by
     * the UPSTREAM_TLS_* / UPSTREAM_PEER_* operators when a line is
     * rendered; NULL for plaintext. The router holds a reference. */
    const struct sharp_tls_conn *upstream_tls;
    /* SHARP: the last try's host's diagnosis (upstream/diagnosis.h) when
     * it had one, for %UPSTREAM_HOST_DIAGNOSIS%; NULL if none. The router
     * holds a reference. */
    const char *upstream_host_diagnosis;
    const sharp_headers_t *request_headers;   /* may be NULL */
    const sharp_headers_t *response_headers;  /* may be NULL */
    const sharp_headers_t *response_trailers; /* may be NULL */
    char request_id[40];
    uint32_t attempt_count;
    bool health_check; /* the health check filter answered or marked it (Envoy's healthCheck()) */
    /* %LOCAL_REPLY_BODY%: the local reply's body while it is being formatted
     * (NULL otherwise, which renders as an empty value, as in Envoy) */
    const char *local_reply_body;
    size_t local_reply_body_len;
    /* Envoy's dynamic metadata (http/metadata.h), set by filters; NULL
     * until one sets some. The stream frees it after its access logs. */
    struct sharp_dynamic_metadata *dynamic_metadata;
    /* the last try's host's locality metadata (upstream/locality_md.h), a
     * reference the stream drops when it ends; NULL before a host is
     * chosen or when its locality has none */
    struct sharp_locality_md *upstream_locality_md;
} sharp_stream_info_t;

#endif
