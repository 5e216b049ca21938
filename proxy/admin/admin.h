/* admin.h: the admin HTTP server on its own listener, served by the main
 * thread's loop, with Envoy's paths and formats. */
#ifndef SHARP_ADMIN_H
#define SHARP_ADMIN_H

#include "server.h"

typedef struct sharp_admin sharp_admin_t;

/* Binds and listens on addr:port (numeric IP), or on a Unix domain socket
 * (addrlen and pipe_mode then matter, as for a listener). Returns NULL and
 * fills err. */
sharp_admin_t *sharp_admin_start(sharp_server_t *srv, uv_loop_t *loop, const struct sockaddr *addr,
                                 socklen_t addrlen, uint32_t pipe_mode, char *err, size_t errlen);
/* Closes the listener and all admin connections; frees itself once closed. */
void sharp_admin_stop(sharp_admin_t *a);

#endif
