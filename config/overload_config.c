/* overload_config.c: see overload_config.h. */
#include "config/overload_config.h"
#include "config/mapper.h"

#include "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.pb-c.h"
#include "envoy/extensions/resource_monitors/fixed_heap/v3/fixed_heap.pb-c.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef Envoy__Config__Overload__V3__OverloadManager om_pb_t;

#define GLOBAL_CX_MONITOR "envoy.resource_monitors.global_downstream_max_connections"

typedef struct {
    char *epath, *emsg;
    size_t epathlen, emsglen;
} ctx_t;

static int fail(ctx_t *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, const char *path, const char *fmt, ...)
{
    snprintf(c->epath, c->epathlen, "%s", path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->emsg, c->emsglen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Envoy's overload actions that SHARP does not implement: refused by name. */
static const char *const unsupported_actions[] = {
    "envoy.overload_actions.close_idle_http_connections",
};

static uint64_t ms_of(const Google__Protobuf__Duration *d)
{
    return (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
}

static int build_monitor(ctx_t *x, const Envoy__Config__Overload__V3__ResourceMonitor *pb, const char *path,
                         sharp_ol_monitor_t *m, sharp_stats_t *stats)
{
    char p[512];
    snprintf(p, sizeof p, "%s.typed_config", path);
    if (!pb->typed_config) return fail(x, p, "is required");
    sharp_config_error_t e = {0};
    ProtobufCMessage *msg = sharp_any_unpack(&pb->typed_config->base, NULL, &e);
    if (!msg) return fail(x, p, "%s", e.msg);
    int rc = 0;
    bool global = strcmp(pb->name, GLOBAL_CX_MONITOR) == 0;
    if (msg->descriptor == &envoy__extensions__resource_monitors__fixed_heap__v3__fixed_heap_config__descriptor) {
        const Envoy__Extensions__ResourceMonitors__FixedHeap__V3__FixedHeapConfig *fh = (const void *)msg;
        if (global) {
            rc = fail(x, p, "resource monitor '%s' is the global downstream connection limit: it takes a "
                      "DownstreamConnectionsConfig", pb->name);
            goto done;
        }
        m->kind = SHARP_OL_MONITOR_FIXED_HEAP;
        m->max = fh->max_heap_size_bytes;
    } else if (msg->descriptor ==
               &envoy__extensions__resource_monitors__downstream_connections__v3__downstream_connections_config__descriptor) {
        const Envoy__Extensions__ResourceMonitors__DownstreamConnections__V3__DownstreamConnectionsConfig *dc =
            (const void *)msg;
        /* Envoy creates the downstream connections monitor only as the
         * proactive resource of that name */
        if (!global) {
            rc = fail(x, p, "a DownstreamConnectionsConfig monitor must be named '" GLOBAL_CX_MONITOR "', not '%s'",
                      pb->name);
            goto done;
        }
        m->kind = SHARP_OL_MONITOR_DOWNSTREAM_CONNECTIONS;
        m->max = (uint64_t)dc->max_active_downstream_connections;
    } else {
        rc = fail(x, p, "%s is not a resource monitor SHARP implements (fixed_heap, downstream_connections)",
                  msg->descriptor->name);
        goto done;
    }
    m->name = sharp_strdup(pb->name);
    if (m->kind == SHARP_OL_MONITOR_FIXED_HEAP) {
        m->pressure = sharp_stats_gaugef(stats, "overload.%s.pressure", pb->name);
        m->failed_updates = sharp_stats_counterf(stats, "overload.%s.failed_updates", pb->name);
        m->skipped_updates = sharp_stats_counterf(stats, "overload.%s.skipped_updates", pb->name);
    }
done:
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

/* reduce_timeouts' timers. TRANSPORT_SOCKET_CONNECT and
 * HTTP_DOWNSTREAM_STREAM_FLUSH scale timers SHARP does not have yet (TLS
 * handshakes, HTTP/2 stream flushes): refused by name. */
static int scale_timers(ctx_t *x, const Envoy__Config__Overload__V3__ScaleTimersOverloadActionConfig *st,
                        const char *path, sharp_overload_config_t *c)
{
    char p[600];
    for (size_t i = 0; i < st->n_timer_scale_factors; i++) {
        const Envoy__Config__Overload__V3__ScaleTimersOverloadActionConfig__ScaleTimer *t = st->timer_scale_factors[i];
        snprintf(p, sizeof p, "%s.timer_scale_factors[%zu].timer", path, i);
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &envoy__config__overload__v3__scale_timers_overload_action_config__timer_type__descriptor, t->timer);
        const char *tname = v ? v->name : "unknown";
        sharp_ol_timer_t which;
        switch (t->timer) {
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__TIMER_TYPE__HTTP_DOWNSTREAM_CONNECTION_IDLE:
            which = SHARP_OL_TIMER_CONNECTION_IDLE;
            break;
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__TIMER_TYPE__HTTP_DOWNSTREAM_STREAM_IDLE:
            which = SHARP_OL_TIMER_STREAM_IDLE;
            break;
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__TIMER_TYPE__HTTP_DOWNSTREAM_CONNECTION_MAX:
            which = SHARP_OL_TIMER_CONNECTION_MAX;
            break;
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__TIMER_TYPE__UNSPECIFIED:
            return fail(x, p, "a timer type is required (UNSPECIFIED is not one)");
        default:
            return fail(x, p, "scaling the %s timer is not supported by SHARP (only HTTP_DOWNSTREAM_CONNECTION_IDLE, "
                        "HTTP_DOWNSTREAM_STREAM_IDLE and HTTP_DOWNSTREAM_CONNECTION_MAX)", tname);
        }
        sharp_ol_timer_scale_t *ts = &c->timers[which];
        if (ts->set) return fail(x, p, "Found duplicate entry for timer type %s", tname);
        snprintf(p, sizeof p, "%s.timer_scale_factors[%zu]", path, i);
        switch (t->overload_adjust_case) {
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__SCALE_TIMER__OVERLOAD_ADJUST_MIN_TIMEOUT:
            ts->min_ms = ms_of(t->min_timeout);
            break;
        case ENVOY__CONFIG__OVERLOAD__V3__SCALE_TIMERS_OVERLOAD_ACTION_CONFIG__SCALE_TIMER__OVERLOAD_ADJUST_MIN_SCALE:
            ts->is_scale = true;
            ts->min_scale = t->min_scale->value / 100.0;
            break;
        default:
            return fail(x, p, "one of min_timeout or min_scale is required");
        }
        ts->set = true;
    }
    return 0;
}

static int build_action(ctx_t *x, const Envoy__Config__Overload__V3__OverloadAction *pb, const char *path,
                        sharp_overload_config_t *c, sharp_ol_action_t *a, sharp_stats_t *stats)
{
    char p[512];
    snprintf(p, sizeof p, "%s.name", path);
    int kind = sharp_overload_action_kind(pb->name);
    if (kind < 0) {
        for (size_t i = 0; i < SHARP_ARRAY_SIZE(unsupported_actions); i++)
            if (strcmp(pb->name, unsupported_actions[i]) == 0)
                return fail(x, p, "overload action %s is not supported by SHARP", pb->name);
        return fail(x, p, "unknown overload action '%s'", pb->name);
    }
    for (uint32_t i = 0; i < c->nactions; i++)
        if (c->actions[i].kind == (sharp_ol_action_kind_t)kind)
            return fail(x, p, "Duplicate overload action %s", pb->name);
    a->kind = (sharp_ol_action_kind_t)kind;
    a->name = sharp_strdup(pb->name);
    a->triggers = sharp_calloc(pb->n_triggers ? pb->n_triggers : 1, sizeof *a->triggers);
    for (size_t i = 0; i < pb->n_triggers; i++) {
        const Envoy__Config__Overload__V3__Trigger *t = pb->triggers[i];
        snprintf(p, sizeof p, "%s.triggers[%zu]", path, i);
        sharp_ol_trigger_t *tr = &a->triggers[a->ntriggers];
        uint32_t mi = c->nmonitors;
        for (uint32_t k = 0; k < c->nmonitors; k++)
            if (strcmp(c->monitors[k].name, t->name) == 0) mi = k;
        if (mi == c->nmonitors)
            return fail(x, p, "Unknown trigger resource %s for overload action %s", t->name, pb->name);
        if (c->monitors[mi].kind == SHARP_OL_MONITOR_DOWNSTREAM_CONNECTIONS)
            return fail(x, p, "%s is a proactive resource (a limit taken at accept), not a trigger", t->name);
        for (uint32_t k = 0; k < a->ntriggers; k++)
            if (a->triggers[k].monitor == mi)
                return fail(x, p, "Duplicate trigger resource for overload action %s", pb->name);
        tr->monitor = mi;
        switch (t->trigger_oneof_case) {
        case ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_THRESHOLD:
            tr->threshold = t->threshold->value;
            break;
        case ENVOY__CONFIG__OVERLOAD__V3__TRIGGER__TRIGGER_ONEOF_SCALED:
            tr->scaled = true;
            tr->scaling = t->scaled->scaling_threshold;
            tr->saturation = t->scaled->saturation_threshold;
            if (tr->scaling >= tr->saturation)
                return fail(x, p, "scaling_threshold must be less than saturation_threshold");
            break;
        default:
            return fail(x, p, "one of threshold or scaled is required");
        }
        a->ntriggers++;
    }
    snprintf(p, sizeof p, "%s.typed_config", path);
    if (pb->typed_config) {
        sharp_config_error_t e = {0};
        ProtobufCMessage *msg = sharp_any_unpack(&pb->typed_config->base, NULL, &e);
        if (!msg) return fail(x, p, "%s", e.msg);
        if (msg->descriptor == &envoy__config__overload__v3__scale_timers_overload_action_config__descriptor &&
            a->kind == SHARP_OL_REDUCE_TIMEOUTS) {
            int rc = scale_timers(x, (const void *)msg, p, c);
            protobuf_c_message_free_unpacked(msg, NULL);
            if (rc < 0) return -1;
        } else if (msg->descriptor != &envoy__config__overload__v3__shrink_heap_config__descriptor ||
            a->kind != SHARP_OL_SHRINK_HEAP) {
            fail(x, p, "%s is not a configuration of overload action %s", msg->descriptor->name, pb->name);
            protobuf_c_message_free_unpacked(msg, NULL);
            return -1;
        } else {
            const Envoy__Config__Overload__V3__ShrinkHeapConfig *sc = (const void *)msg;
            if (sc->timer_interval) c->shrink_interval_ms = ms_of(sc->timer_interval);
            if (sc->max_unfreed_memory_bytes) c->shrink_max_unfreed = sc->max_unfreed_memory_bytes->value;
            protobuf_c_message_free_unpacked(msg, NULL);
        }
    } else if (a->kind == SHARP_OL_REDUCE_TIMEOUTS) {
        /* Envoy: "reduce_timeouts requires a ScaleTimersOverloadActionConfig" */
        return fail(x, p, "overload action %s requires a ScaleTimersOverloadActionConfig", pb->name);
    }
    a->active = sharp_stats_gaugef(stats, "overload.%s.active", pb->name);
    a->scale_percent = sharp_stats_gaugef(stats, "overload.%s.scale_percent", pb->name);
    if (a->kind == SHARP_OL_SHRINK_HEAP)
        c->shrink_count = sharp_stats_counterf(stats, "overload.%s.shrink_count", pb->name);
    return 0;
}

sharp_overload_config_t *sharp_config_overload(const om_pb_t *pb, sharp_stats_t *stats, bool *failed,
                                               char *epath, size_t epathlen, char *emsg, size_t emsglen)
{
    ctx_t x = {.epath = epath, .emsg = emsg, .epathlen = epathlen, .emsglen = emsglen};
    *failed = false;
    if (!pb) return NULL;
    sharp_overload_config_t *c = sharp_calloc(1, sizeof *c);
    c->refresh_ms = pb->refresh_interval ? ms_of(pb->refresh_interval) : 1000;
    if (c->refresh_ms == 0) c->refresh_ms = 1; /* the table refuses 0s; a sub-millisecond value rounds up */
    c->shrink_interval_ms = 10 * 1000;
    c->shrink_max_unfreed = 100ull * 1024 * 1024;
    c->monitors = sharp_calloc(pb->n_resource_monitors ? pb->n_resource_monitors : 1, sizeof *c->monitors);
    c->actions = sharp_calloc(pb->n_actions ? pb->n_actions : 1, sizeof *c->actions);
    char p[256];
    for (size_t i = 0; i < pb->n_resource_monitors; i++) {
        const Envoy__Config__Overload__V3__ResourceMonitor *m = pb->resource_monitors[i];
        snprintf(p, sizeof p, "overload_manager.resource_monitors[%zu]", i);
        for (uint32_t k = 0; k < c->nmonitors; k++)
            if (strcmp(c->monitors[k].name, m->name) == 0) {
                snprintf(p, sizeof p, "overload_manager.resource_monitors[%zu].name", i);
                fail(&x, p, "Duplicate resource monitor %s", m->name);
                goto bad;
            }
        if (build_monitor(&x, m, p, &c->monitors[c->nmonitors], stats) < 0) goto bad;
        c->nmonitors++;
    }
    for (size_t i = 0; i < pb->n_actions; i++) {
        snprintf(p, sizeof p, "overload_manager.actions[%zu]", i);
        sharp_ol_action_t *a = &c->actions[c->nactions];
        int rc = build_action(&x, pb->actions[i], p, c, a, stats);
        c->nactions++; /* freed with the config, complete or not */
        if (rc < 0) goto bad;
    }
    if (pb->buffer_factory_config) c->min_account_pow2 = pb->buffer_factory_config->minimum_account_to_track_power_of_two;
    for (uint32_t i = 0; i < c->nactions; i++) {
        if (c->actions[i].kind != SHARP_OL_RESET_HIGH_MEMORY_STREAM || c->min_account_pow2) continue;
        /* Envoy accepts this and, tracking no stream, never resets one */
        snprintf(p, sizeof p, "overload_manager.actions[%u].name", i);
        fail(&x, p, "overload action %s needs buffer_factory_config.minimum_account_to_track_power_of_two: "
             "without it no stream's memory is tracked and the action could never reset one", c->actions[i].name);
        goto bad;
    }
    c->reset_streams_count =
        sharp_stats_counter(stats, "overload.envoy.overload_actions.reset_high_memory_stream.count");
    c->refresh_interval_delay = sharp_stats_histogram(stats, "overload.refresh_interval_delay", SHARP_HIST_MILLISECONDS);
    return c;
bad:
    sharp_overload_config_free(c);
    *failed = true;
    return NULL;
}
