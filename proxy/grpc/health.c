/* health.c: grpc.health.v1.Health (see health.h). Watch calls are kept in a
 * list and told of every change by sharp_grpc_health_changed, which the
 * server calls wherever its state or health check flag changes (with the
 * server.live gauge). A watcher whose client reads nothing and whose queue
 * is full ends with RESOURCE_EXHAUSTED rather than growing. */
#include "grpc/health.h"
#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "worker.h" /* sharp_dlist_t */

typedef Grpc__Health__V1__HealthCheckRequest health_req_t;
typedef Grpc__Health__V1__HealthCheckResponse health_rsp_t;

struct sharp_grpc_health {
    sharp_grpc_serving_fn serving;
    void *arg;
    sharp_dlist_t watchers;
};

typedef struct watcher {
    sharp_dlist_t link;
    sharp_grpc_health_t *h;
    sharp_grpc_call_t *call;
    char *service;
    int last; /* the status last sent */
} watcher_t;

/* The status of a service name, -1 for one this server does not know. */
static int service_status(const sharp_grpc_health_t *h, const char *service)
{
    if (strcmp(service, "") != 0 && strcmp(service, "sharp") != 0) return -1;
    return h->serving(h->arg) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static int send_status(sharp_grpc_call_t *call, int status)
{
    health_rsp_t rsp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    rsp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    return sharp_grpc_call_send(call, &rsp.base);
}

static void h_check(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    const health_req_t *rq = (const health_req_t *)request;
    int st = service_status(data, rq->service);
    if (st < 0) {
        sharp_grpc_call_finish(call, SHARP_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    send_status(call, st);
    sharp_grpc_call_finish(call, SHARP_GRPC_OK, NULL);
}

static void watcher_free(watcher_t *w)
{
    sharp_dlist_remove(&w->link);
    free(w->service);
    free(w);
}

static void on_watch_cancel(sharp_grpc_call_t *call, void *arg)
{
    (void)call;
    watcher_free(arg);
}

static void h_watch(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    const health_req_t *rq = (const health_req_t *)request;
    sharp_grpc_health_t *h = data;
    int st = service_status(h, rq->service);
    if (st < 0) st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    watcher_t *w = sharp_calloc(1, sizeof *w);
    w->h = h;
    w->call = call;
    w->service = sharp_strdup(rq->service);
    w->last = st;
    sharp_dlist_push(&h->watchers, &w->link);
    sharp_grpc_call_on_cancel(call, on_watch_cancel, w);
    send_status(call, st);
}

void sharp_grpc_health_changed(sharp_grpc_health_t *h)
{
    if (!h) return;
    /* Sending may end other watches (a failed write closes a connection
     * and cancels its calls), so the walk starts over after each send; it
     * ends because every watcher is brought up to date once. */
again:
    for (sharp_dlist_t *n = h->watchers.next; n != &h->watchers; n = n->next) {
        watcher_t *w = sharp_container_of(n, watcher_t, link);
        int st = service_status(h, w->service);
        if (st < 0) st = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
        if (st == w->last) continue;
        w->last = st;
        sharp_grpc_call_t *call = w->call;
        if (send_status(call, st) != 0) {
            watcher_free(w);
            sharp_grpc_call_finish(call, SHARP_GRPC_RESOURCE_EXHAUSTED, "health updates not read");
        }
        goto again;
    }
}

static void health_free(void *p)
{
    sharp_grpc_health_t *h = p;
    /* every call has been cancelled (connections go first) */
    while (!sharp_dlist_empty(&h->watchers)) watcher_free(sharp_container_of(h->watchers.next, watcher_t, link));
    free(h);
}

static const sharp_grpc_method_impl_t health_methods[] = {
    {.handler = h_check},                          /* Check */
    {.handler = h_watch, .server_streaming = true}, /* Watch */
};

sharp_grpc_health_t *sharp_grpc_health_register(sharp_grpc_registry_t *r, sharp_grpc_serving_fn serving, void *arg)
{
    const ProtobufCServiceDescriptor *d = &grpc__health__v1__health__descriptor;
    /* the handler table follows the descriptor's method order */
    if (d->n_methods != 2 || strcmp(d->methods[0].name, "Check") != 0 || strcmp(d->methods[1].name, "Watch") != 0)
        return NULL;
    sharp_grpc_health_t *h = sharp_calloc(1, sizeof *h);
    h->serving = serving;
    h->arg = arg;
    sharp_dlist_init(&h->watchers);
    if (sharp_grpc_registry_add(r, d, health_methods, h, health_free) != 0) {
        free(h);
        return NULL;
    }
    return h;
}
