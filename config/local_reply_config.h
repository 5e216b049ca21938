/* local_reply_config.h: translation of the connection manager's
 * local_reply_config (LocalReplyConfig) into http/local_reply.h. */
#ifndef SHARP_CONFIG_LOCAL_REPLY_CONFIG_H
#define SHARP_CONFIG_LOCAL_REPLY_CONFIG_H

#include "http/local_reply.h"

#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"

/* NULL on error, with "field.path: message" (relative to the
 * LocalReplyConfig) in err. */
sharp_local_reply_t *sharp_config_local_reply(
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__LocalReplyConfig *pb,
    char *err, size_t errlen);

#endif
