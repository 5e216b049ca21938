/* hcm_internal.h: the seam between connections (conn_manager.c, which
 * hands these calls to the connection's codec, conn_internal.h) and the
 * protocol-independent stream logic (filter_chain.c). */
#ifndef SHARP_HTTP_HCM_INTERNAL_H
#define SHARP_HTTP_HCM_INTERNAL_H

#include "http/stream.h"

/* codec side (conn_manager.c, dispatched to the connection's codec) */
void sharp_codec_encode_headers(sharp_stream_t *s, sharp_headers_t *h, bool end_stream);
void sharp_codec_encode_data(sharp_stream_t *s, const char *p, size_t n, bool end_stream);
/* Ends the response with trailers (a codec that cannot carry them ends the body). */
void sharp_codec_encode_trailers(sharp_stream_t *s, sharp_headers_t *t);
void sharp_codec_read_disable(sharp_stream_t *s, bool disable);
void sharp_codec_reset(sharp_stream_t *s);
/* Sends "100 Continue" on the wire. */
void sharp_codec_send_continue(sharp_stream_t *s);
const char *sharp_h1_reason(uint32_t code);
/* Restarts the stream idle timer with s->idle_timeout_ms (0 stops it). */
void sharp_codec_touch(sharp_stream_t *s);
/* the request headers are complete: request_headers_timeout stops */
void sharp_codec_request_headers_done(sharp_stream_t *s);

/* stream side (filter_chain.c) */
/* Request headers are complete: header mutations, route resolution, decode
 * chain. `remote` is the peer address. */
void sharp_hcm_decode_headers(sharp_stream_t *s, bool end_stream, const struct sockaddr *remote);
void dec_run_data(sharp_stream_t *s, uint32_t from, const char *p, size_t n, bool end);
/* The connection's write queue crossed its watermark (above or below),
 * or the codec's own buffer of this stream's response did (HTTP/2's
 * unsent body): two sources of the response-side pause of every filter
 * of the stream (the router stops reading its upstream). */
void sharp_hcm_downstream_watermark(sharp_stream_t *s, bool above);
void sharp_hcm_codec_watermark(sharp_stream_t *s, bool above);
/* A stream begins while its connection is above its write watermark: it
 * starts paused, without telling filters that have not started yet (the
 * router looks when it binds its upstream: sharp_stream_encoder_paused). */
void sharp_hcm_stream_begin_above(sharp_stream_t *s);
/* The request ends with trailers (s->req_trailers, filled by the codec). */
void dec_run_trailers(sharp_stream_t *s, uint32_t from);

#endif
