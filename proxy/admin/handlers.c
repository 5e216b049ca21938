/* handlers.c: the admin endpoints with Envoy's paths, texts and JSON shapes.
 *
 * Each handler builds its whole response in memory: the admin pages are
 * small next to the proxy's traffic and are read by people and scrapers a
 * few times a minute. JSON is built compact and pretty-printed at the end
 * where Envoy pretty-prints (one space per level). */
#include "admin/handlers.h"
#include "admin/json.h"
#include "config/bootstrap.h"
#include "config/mapper.h"
#include "heap.h"
#include "log.h"
#include "runtime.h"
#include "scaling.h"
#include "upstream/cluster.h"
#include "kernel/kernel.h"
#include "upstream/outlier.h"
#include "upstream/shard_lb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <time.h>
#include <uv.h>


typedef void (*handler_fn)(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp);

typedef struct {
    const char *id, *help;
} param_help_t;

typedef struct {
    const char *prefix;
    const char *help;
    bool mutates; /* POST required, as Envoy marks state-changing endpoints */
    handler_fn fn;
    param_help_t params[5];
} handler_t;

static void help_text(sharp_sbuf_t *b);

/* ---- helpers -------------------------------------------------------------- */

static void text(sharp_admin_response_t *rsp, unsigned status, const char *s)
{
    rsp->status = status;
    rsp->content_type = SHARP_ADMIN_CT_TEXT;
    sharp_sbuf_puts(&rsp->body, s);
}

/* Replaces the body with its pretty-printed form and marks it JSON. */
static void finish_json(sharp_admin_response_t *rsp, sharp_sbuf_t *compact)
{
    rsp->content_type = SHARP_ADMIN_CT_JSON;
    sharp_json_pretty(compact->data ? compact->data : "", compact->len, &rsp->body);
    sharp_sbuf_free(compact);
}

/* Envoy's server state, where a failed health check turns LIVE into
 * DRAINING. */
static const char *state_name(const sharp_server_t *srv)
{
    switch (srv->state) {
    case SHARP_SERVER_LIVE:
        return srv->healthcheck_failed ? "DRAINING" : "LIVE";
    case SHARP_SERVER_DRAINING:
        return "DRAINING";
    case SHARP_SERVER_PRE_INITIALIZING:
        return "PRE_INITIALIZING";
    case SHARP_SERVER_INITIALIZING:
        return "INITIALIZING";
    }
    return "DRAINING";
}

/* Writes {"socket_address":{"address":"1.2.3.4","port_value":80}} for an
 * IPv4 or IPv6 socket address, {"pipe":{"path":"/run/x.sock"}} for a Unix
 * one (Envoy's addressToProtobufAddress: the path as printed, no mode), {}
 * for anything else. */
static void socket_address_json(sharp_sbuf_t *b, const struct sockaddr_storage *ss)
{
    char ip[INET6_ADDRSTRLEN] = "";
    unsigned port = 0;
    if (ss->ss_family == AF_UNIX) {
        char path[SHARP_ADDR_STRLEN];
        sharp_addr_str((const struct sockaddr *)ss, path, sizeof path);
        sharp_sbuf_puts(b, "{\"pipe\":{\"path\":");
        sharp_json_str(b, path);
        sharp_sbuf_puts(b, "}}");
        return;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
    } else {
        sharp_sbuf_puts(b, "{}");
        return;
    }
    sharp_sbuf_printf(b, "{\"socket_address\":{\"address\":\"%s\",\"port_value\":%u}}", ip, port);
}


/* ---- /, /help, 404 -------------------------------------------------------- */

static void h_help(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    help_text(&rsp->body);
}

/* ---- server state -------------------------------------------------------- */

static void h_ready(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const char *st = state_name(rq->srv);
    rsp->status = strcmp(st, "LIVE") == 0 ? 200 : 503;
    sharp_sbuf_printf(&rsp->body, "%s\n", st);
}

static void h_server_info(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const sharp_server_t *srv = rq->srv;
    const sharp_options_t *o = &srv->opts;
    uint64_t up = (sharp_now_ns() - srv->start_ns) / 1000000000ull;
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"version\":");
    sharp_json_str(&b, "sharp/" SHARP_VERSION "/Clean/RELEASE/OpenSSL");
    sharp_sbuf_printf(&b, ",\"state\":\"%s\"", state_name(srv));
    sharp_sbuf_printf(&b, ",\"uptime_current_epoch\":\"%llus\",\"uptime_all_epochs\":\"%llus\"",
                      (unsigned long long)up, (unsigned long long)up);
    sharp_sbuf_puts(&b, ",\"hot_restart_version\":\"disabled\"");
    sharp_sbuf_printf(&b, ",\"command_line_options\":{\"base_id\":\"%u\",\"concurrency\":%u",
                      o->base_id, srv->nworkers);
    sharp_sbuf_puts(&b, ",\"config_path\":");
    sharp_json_str(&b, o->config_path ? o->config_path : "");
    sharp_sbuf_puts(&b, ",\"config_yaml\":");
    sharp_json_str(&b, o->config_yaml ? o->config_yaml : "");
    sharp_sbuf_puts(&b, ",\"allow_unknown_static_fields\":false,\"reject_unknown_dynamic_fields\":"
                        "false,\"admin_address_path\":\"\",\"local_address_ip_version\":\"v4\"");
    sharp_sbuf_printf(&b, ",\"log_level\":\"%s\",\"component_log_level\":",
                      sharp_log_level_name(o->log_level));
    sharp_json_str(&b, o->component_log_level ? o->component_log_level : "");
    sharp_sbuf_puts(&b, ",\"log_format\":");
    sharp_json_str(&b, o->log_format ? o->log_format : SHARP_DEFAULT_LOG_FORMAT);
    sharp_sbuf_puts(&b, ",\"log_path\":");
    sharp_json_str(&b, o->log_path ? o->log_path : "");
    sharp_sbuf_puts(&b, ",\"service_cluster\":");
    sharp_json_str(&b, o->service_cluster ? o->service_cluster : "");
    sharp_sbuf_puts(&b, ",\"service_node\":");
    sharp_json_str(&b, o->service_node ? o->service_node : "");
    sharp_sbuf_printf(&b,
                      ",\"service_zone\":\"\",\"file_flush_interval\":\"10s\",\"drain_time\":"
                      "\"%us\",\"parent_shutdown_time\":\"%us\",\"mode\":\"%s\",\"disable_hot_"
                      "restart\":true,\"enable_mutex_tracing\":false,\"restart_epoch\":%u,"
                      "\"cpuset_threads\":false,\"disabled_extensions\":[],\"drain_strategy\":"
                      "\"Gradual\"}",
                      o->drain_time_s, o->parent_shutdown_time_s,
                      o->validate_only ? "Validate" : "Serve", o->restart_epoch);
    sharp_sbuf_puts(&b, ",\"node\":{\"id\":");
    sharp_json_str(&b, srv->node_id);
    sharp_sbuf_puts(&b, ",\"cluster\":");
    sharp_json_str(&b, srv->node_cluster);
    sharp_sbuf_puts(&b, ",\"user_agent_name\":\"sharp\"}}");
    finish_json(rsp, &b);
}

static void h_hot_restart_version(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_sbuf_puts(&rsp->body, "disabled");
}

static void h_memory(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    /* Envoy's fields; what each means per allocator: README.md */
    sharp_heap_stats_t hs;
    sharp_heap_stats(&hs);
    sharp_sbuf_t b = {0};
    sharp_sbuf_printf(&b,
                      "{\"allocated\":\"%llu\",\"heap_size\":\"%llu\",\"pageheap_unmapped\":\"%llu\","
                      "\"pageheap_free\":\"%llu\",\"total_thread_cache\":\"%llu\","
                      "\"total_physical_bytes\":\"%llu\"}",
                      (unsigned long long)hs.allocated, (unsigned long long)hs.heap_size,
                      (unsigned long long)hs.pageheap_unmapped, (unsigned long long)hs.pageheap_free,
                      (unsigned long long)hs.total_thread_cache, (unsigned long long)hs.total_physical);
    finish_json(rsp, &b);
}

static void h_certs(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    /* Envoy's /certs: one entry per TLS context, listeners' then clusters' */
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"certificates\":[");
    sharp_snapshot_certs(rq->srv->snap, &b);
    sharp_sbuf_puts(&b, "]}");
    finish_json(rsp, &b);
}

/* Envoy's RuntimeHandler: the layers of the current snapshot by name, and
 * for every key its value in each layer ("" where a layer lacks it) and the
 * final one (the last non-empty). */
static void h_runtime(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const sharp_runtime_snapshot_t *s = rq->srv->runtime ? rq->srv->runtime->current : NULL;
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"layers\":[");
    for (uint32_t i = 0; s && i < s->nlayers; i++) {
        sharp_sbuf_puts(&b, i ? ",\"" : "\"");
        sharp_sbuf_json_escape(&b, s->layers[i].name, strlen(s->layers[i].name));
        sharp_sbuf_puts(&b, "\"");
    }
    sharp_sbuf_puts(&b, "],\"entries\":{");
    for (uint32_t k = 0; s && k < s->nmerged; k++) {
        const char *key = s->merged[k]->key, *final_value = "";
        sharp_sbuf_puts(&b, k ? ",\"" : "\"");
        sharp_sbuf_json_escape(&b, key, strlen(key));
        sharp_sbuf_puts(&b, "\":{\"layer_values\":[");
        for (uint32_t i = 0; i < s->nlayers; i++) {
            const sharp_runtime_entry_t *e = sharp_runtime_values_find(&s->layers[i].values, key);
            const char *v = e ? e->raw : "";
            if (v[0]) final_value = v;
            sharp_sbuf_puts(&b, i ? ",\"" : "\"");
            sharp_sbuf_json_escape(&b, v, strlen(v));
            sharp_sbuf_puts(&b, "\"");
        }
        sharp_sbuf_puts(&b, "],\"final_value\":\"");
        sharp_sbuf_json_escape(&b, final_value, strlen(final_value));
        sharp_sbuf_puts(&b, "\"}");
    }
    sharp_sbuf_puts(&b, "}}");
    finish_json(rsp, &b);
}

/* Envoy's handlerRuntimeModify: query parameters, or else the form values
 * of the body; an empty value removes an override. */
static void h_runtime_modify(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const sharp_query_t *q = rq->query.n ? &rq->query : &rq->form;
    if (!q->n) {
        text(rsp, 400, "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n"
                       "       or send the parameters as form values\n"
                       "use an empty value to remove a previously added override");
        return;
    }
    /* a key given twice takes its first value, as Envoy's parameter map */
    const char **keys = sharp_calloc(q->n, sizeof *keys), **values = sharp_calloc(q->n, sizeof *values);
    size_t n = 0;
    for (size_t i = 0; i < q->n; i++) {
        bool seen = false;
        for (size_t k = 0; k < n && !seen; k++)
            seen = strcmp(keys[k], q->params[i].key) == 0;
        if (seen) continue;
        keys[n] = q->params[i].key;
        values[n++] = q->params[i].value;
    }
    char err[256];
    if (!rq->srv->runtime ||
        sharp_runtime_merge_admin(rq->srv->runtime, keys, values, n, err, sizeof err) < 0) {
        text(rsp, 503, rq->srv->runtime ? err : "No admin layer specified");
    } else {
        for (size_t i = 0; i < n; i++)
            sharp_debug(runtime, "admin override %s=%s", keys[i], values[i][0] ? values[i] : "(removed)");
        text(rsp, 200, "OK\n");
    }
    free(keys);
    free(values);
}

static void h_init_dump(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{}");
    finish_json(rsp, &b);
}

/* ---- mutating commands ---------------------------------------------------- */

static void h_healthcheck_fail(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    rq->srv->healthcheck_failed = true;
    sharp_server_update_state_gauges(rq->srv);
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

static void h_healthcheck_ok(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    rq->srv->healthcheck_failed = false;
    sharp_server_update_state_gauges(rq->srv);
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

static void h_drain_listeners(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    /* graceful and inboundonly are accepted; every listener is inbound here
     * and the workers' drain is always the graceful one. */
    sharp_server_drain_listeners(rq->srv);
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

static void h_reset_counters(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    if (rq->srv->stats) sharp_stats_reset_counters(rq->srv->stats);
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

static void h_reopen_logs(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_server_reopen_logs(rq->srv);
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

static void h_quitquitquit(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_log_info("admin: shutdown requested via /quitquitquit");
    rsp->quit_after = true;
    sharp_sbuf_puts(&rsp->body, "OK\n");
}

/* Envoy's /logging: level=<l> sets every logger, paths=<name>:<l>,... and
 * <name>=<l> set only the named ones. Every name and level is checked
 * before anything changes. Returns NULL on success or Envoy's message. */
static const char *change_log_level(const sharp_query_t *q)
{
    if (q->n != 1) return "invalid number of parameters";
    const sharp_query_param_t *p = &q->params[0];
    if (strcmp(p->key, "level") == 0) {
        int lvl = sharp_log_level_parse(p->value);
        if (lvl < 0) return "unknown logger level";
        sharp_info(admin, "change all log levels: level='%s'", sharp_log_level_name(lvl));
        sharp_log_set_all((sharp_log_level_t)lvl);
        return NULL;
    }
    int ids[SHARP_LOGGER_COUNT], lvls[SHARP_LOGGER_COUNT];
    size_t n = 0;
    if (strcmp(p->key, "paths") == 0) {
        char *copy = sharp_strdup(p->value), *save = NULL;
        const char *err = NULL;
        for (char *item = strtok_r(copy, ",", &save); item && !err;
             item = strtok_r(NULL, ",", &save)) {
            while (*item == ' ' || *item == '\t') item++;
            if (!*item) continue; /* absl::SkipWhitespace */
            char *colon = strchr(item, ':');
            if (!colon || colon == item || !colon[1]) {
                err = "empty logger name or empty logger level";
                break;
            }
            *colon = '\0';
            int l = sharp_log_level_parse(colon + 1);
            int id = sharp_logger_find(item);
            if (l < 0) err = "unknown logger level";
            else if (id < 0) err = "unknown logger name";
            else {
                size_t k = 0;
                while (k < n && ids[k] != id) k++;
                ids[k] = id;
                lvls[k] = l;
                if (k == n) n++;
            }
        }
        free(copy);
        if (err) return err;
    } else {
        int l = sharp_log_level_parse(p->value);
        if (l < 0) return "unknown logger level";
        int id = sharp_logger_find(p->key);
        if (id < 0) return "unknown logger name";
        ids[n] = id;
        lvls[n++] = l;
    }
    for (size_t k = 0; k < n; k++) {
        sharp_info(admin, "change log level: name='%s' level='%s'", sharp_logger_name(ids[k]),
                   sharp_log_level_name(lvls[k]));
        sharp_log_set(ids[k], (sharp_log_level_t)lvls[k]);
    }
    return NULL;
}

static void h_logging(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    if (rq->query.n) {
        const char *err = change_log_level(&rq->query);
        if (err) {
            rsp->status = 400;
            sharp_sbuf_printf(&rsp->body, "error: %s\n\n", err);
            sharp_sbuf_puts(&rsp->body,
                            "usage: /logging?<name>=<level> (change single level)\n"
                            "usage: /logging?paths=name1:level1,name2:level2,... (change multiple "
                            "levels)\n"
                            "usage: /logging?level=<level> (change all levels)\n"
                            "levels: ");
            for (int i = SHARP_LOG_TRACE; i <= SHARP_LOG_OFF; i++)
                sharp_sbuf_printf(&rsp->body, "%s ", sharp_log_level_name(i));
            sharp_sbuf_puts(&rsp->body, "\n");
        }
    }
    sharp_sbuf_puts(&rsp->body, "active loggers:\n");
    for (int i = 0; i < SHARP_LOGGER_COUNT; i++)
        sharp_sbuf_printf(&rsp->body, "  %s: %s\n", sharp_logger_name(i),
                          sharp_log_level_name(sharp_log_get(i)));
    sharp_sbuf_puts(&rsp->body, "\n");
}

/* ---- stats ----------------------------------------------------------------- */

typedef int (*render_fn)(sharp_stats_t *, const char *, bool, sharp_sbuf_t *, char *, size_t);

static void render_stats(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp,
                         render_fn render, const char *ctype)
{
    const char *filter = sharp_query_get(&rq->query, "filter");
    if (filter && !*filter) filter = NULL;
    bool used_only = sharp_query_has(&rq->query, "usedonly");
    char err[256] = "";
    if (!rq->srv->stats) {
        text(rsp, 503, "stats are not available yet\n");
        return;
    }
    /* the circuit breaker gauges are computed when shown: every cluster's,
     * unless the filter names one stat that is none of them (a monitor
     * polling one counter; 10,000 clusters' gauges cost 10 ms) */
    char lit[512];
    if (!filter || !sharp_stats_filter_exact(filter, lit, sizeof lit) || strstr(lit, ".circuit_breakers."))
        for (uint32_t i = 0; rq->srv->snap && i < rq->srv->snap->nclusters; i++)
            sharp_cluster_refresh_gauges(rq->srv->snap->clusters[i]);
    if (rq->srv->stats_flush_on_admin) sharp_server_flush_stats(rq->srv);
    if (render(rq->srv->stats, filter, used_only, &rsp->body, err, sizeof err) < 0) {
        sharp_sbuf_reset(&rsp->body);
        rsp->status = 400;
        rsp->content_type = SHARP_ADMIN_CT_TEXT;
        sharp_sbuf_printf(&rsp->body, "Invalid re2 regex%s%s\n", err[0] ? ": " : "", err);
        return;
    }
    rsp->content_type = ctype;
}

static void h_stats(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const char *type = sharp_query_get(&rq->query, "type");
    if (type && strcmp(type, "All") != 0 && strcmp(type, "Counters") != 0 &&
        strcmp(type, "Gauges") != 0 && strcmp(type, "Histograms") != 0 &&
        strcmp(type, "TextReadouts") != 0) {
        text(rsp, 400, "invalid &type= param");
        return;
    }
    const char *format = sharp_query_get(&rq->query, "format");
    if (!format || strcmp(format, "text") == 0)
        render_stats(rq, rsp, sharp_stats_render_text, SHARP_ADMIN_CT_TEXT);
    else if (strcmp(format, "json") == 0)
        render_stats(rq, rsp, sharp_stats_render_json, SHARP_ADMIN_CT_JSON);
    else if (strcmp(format, "prometheus") == 0)
        render_stats(rq, rsp, sharp_stats_render_prometheus, SHARP_ADMIN_CT_PROMETHEUS);
    else if (strcmp(format, "html") == 0 || strcmp(format, "active-html") == 0)
        text(rsp, 400, "HTML output is not supported by this server");
    else
        text(rsp, 400, "usage: /stats?format=(html|active-html|json|prometheus|text)\n\n");
}

static void h_stats_prometheus(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    render_stats(rq, rsp, sharp_stats_render_prometheus, SHARP_ADMIN_CT_PROMETHEUS);
}

/* ---- clusters -------------------------------------------------------------- */

static void health_flags_text(sharp_sbuf_t *b, uint32_t f)
{
    if (!f) {
        sharp_sbuf_puts(b, "healthy");
        return;
    }
    if (f & SHARP_HOST_FAILED_ACTIVE_HC) sharp_sbuf_puts(b, "/failed_active_hc");
    if (f & SHARP_HOST_FAILED_OUTLIER) sharp_sbuf_puts(b, "/failed_outlier_check");
    if (f & SHARP_HOST_FAILED_EDS_HEALTH) sharp_sbuf_puts(b, "/failed_eds_health");
    if (f & SHARP_HOST_PENDING_REMOVAL) sharp_sbuf_puts(b, "/pending_dynamic_removal");
}

typedef struct {
    uint64_t cx_active, cx_connect_fail, cx_total, rq_active, rq_error, rq_success, rq_timeout,
        rq_total;
} host_counts_t;

static host_counts_t host_counts(const sharp_host_t *h)
{
    host_counts_t c;
    int64_t cx = atomic_load_explicit(&h->active_cx, memory_order_relaxed);
    int64_t rq = atomic_load_explicit(&h->active_rq, memory_order_relaxed);
    c.cx_active = cx > 0 ? (uint64_t)cx : 0;
    c.rq_active = rq > 0 ? (uint64_t)rq : 0;
    c.cx_connect_fail = atomic_load_explicit(&h->cx_connect_fail, memory_order_relaxed);
    c.cx_total = atomic_load_explicit(&h->cx_total, memory_order_relaxed);
    c.rq_error = atomic_load_explicit(&h->rq_error, memory_order_relaxed);
    c.rq_success = atomic_load_explicit(&h->rq_success, memory_order_relaxed);
    c.rq_timeout = atomic_load_explicit(&h->rq_timeout, memory_order_relaxed);
    c.rq_total = atomic_load_explicit(&h->rq_total, memory_order_relaxed);
    return c;
}

static void thresholds_text(sharp_sbuf_t *b, const char *cluster, const char *prio,
                            const sharp_cb_thresholds_t *t)
{
    sharp_sbuf_printf(b, "%s::%s_priority::max_connections::%u\n", cluster, prio,
                      t->max_connections);
    sharp_sbuf_printf(b, "%s::%s_priority::max_pending_requests::%u\n", cluster, prio,
                      t->max_pending_requests);
    sharp_sbuf_printf(b, "%s::%s_priority::max_requests::%u\n", cluster, prio, t->max_requests);
    sharp_sbuf_printf(b, "%s::%s_priority::max_retries::%u\n", cluster, prio, t->max_retries);
}

/* The shortest decimal that reads back as v, as Envoy's fmt prints a
 * double ("-1", "100", "43.2", "66.66666666666667"); %g's exponent form
 * only where plain digits cannot do it. */
static void double_text(sharp_sbuf_t *b, double v)
{
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, v);
        if (strtod(s, NULL) == v && (!strchr(s, 'e') || prec == 17)) break;
    }
    sharp_sbuf_puts(b, s);
}

/* Envoy's addOutlierInfo: the last interval's success-rate numbers, -1
 * when they were not computed. */
static void outlier_text(sharp_sbuf_t *b, const sharp_cluster_t *c)
{
    const sharp_outlier_t *od = c->outlier;
    if (!od) return;
    sharp_sbuf_printf(b, "%s::outlier::success_rate_average::%g\n", c->name,
                      od->sr_average[SHARP_OUTLIER_EXTERNAL]);
    sharp_sbuf_printf(b, "%s::outlier::success_rate_ejection_threshold::%g\n", c->name,
                      od->sr_threshold[SHARP_OUTLIER_EXTERNAL]);
    sharp_sbuf_printf(b, "%s::outlier::local_origin_success_rate_average::%g\n", c->name,
                      od->sr_average[SHARP_OUTLIER_LOCAL]);
    sharp_sbuf_printf(b, "%s::outlier::local_origin_success_rate_ejection_threshold::%g\n", c->name,
                      od->sr_threshold[SHARP_OUTLIER_LOCAL]);
}

/* `,"name":{"value":v}` when v is set (Envoy's Percent fields). */
static void percent_json(sharp_sbuf_t *b, const char *name, double v, bool set)
{
    if (!set) return;
    sharp_sbuf_printf(b, ",\"%s\":{\"value\":", name);
    double_text(b, v);
    sharp_sbuf_puts(b, "}");
}

static void clusters_text(const sharp_snapshot_t *snap, sharp_sbuf_t *b)
{
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) {
        const sharp_cluster_t *c = snap->clusters[i];
        sharp_sbuf_printf(b, "%s::observability_name::%s\n", c->name, c->stat_name);
        outlier_text(b, c);
        sharp_cb_thresholds_t cb; /* the runtime's values, as Envoy's resource manager */
        sharp_cluster_cb_effective(c, SHARP_PRIORITY_DEFAULT, &cb);
        thresholds_text(b, c->name, "default", &cb);
        sharp_cluster_cb_effective(c, SHARP_PRIORITY_HIGH, &cb);
        thresholds_text(b, c->name, "high", &cb);
        sharp_sbuf_printf(b, "%s::added_via_api::false\n", c->name);
        if (c->shuffle_shard) /* SHARP */
            sharp_sbuf_printf(b, "%s::shuffle_shard::shard_size::%u\n", c->name, c->shuffle_shard->shard_size);
        for (uint32_t k = 0; k < c->nhosts; k++) {
            const sharp_host_t *h = c->hosts[k];
            host_counts_t n = host_counts(h);
            const char *cn = c->name, *a = h->address;
            sharp_sbuf_printf(b, "%s::%s::cx_active::%llu\n", cn, a,
                              (unsigned long long)n.cx_active);
            sharp_sbuf_printf(b, "%s::%s::cx_connect_fail::%llu\n", cn, a,
                              (unsigned long long)n.cx_connect_fail);
            sharp_sbuf_printf(b, "%s::%s::cx_total::%llu\n", cn, a, (unsigned long long)n.cx_total);
            sharp_sbuf_printf(b, "%s::%s::rq_active::%llu\n", cn, a,
                              (unsigned long long)n.rq_active);
            sharp_sbuf_printf(b, "%s::%s::rq_error::%llu\n", cn, a, (unsigned long long)n.rq_error);
            sharp_sbuf_printf(b, "%s::%s::rq_success::%llu\n", cn, a,
                              (unsigned long long)n.rq_success);
            sharp_sbuf_printf(b, "%s::%s::rq_timeout::%llu\n", cn, a,
                              (unsigned long long)n.rq_timeout);
            sharp_sbuf_printf(b, "%s::%s::rq_total::%llu\n", cn, a, (unsigned long long)n.rq_total);
            sharp_sbuf_printf(b, "%s::%s::hostname::%s\n", cn, a, h->hostname);
            sharp_sbuf_printf(b, "%s::%s::health_flags::", cn, a);
            health_flags_text(b, atomic_load_explicit(&h->health_flags, memory_order_relaxed));
            sharp_sbuf_puts(b, "\n");
            sharp_sbuf_printf(b, "%s::%s::weight::%u\n", cn, a, h->weight);
            const char *region, *zone, *sub_zone;
            sharp_locality_get(h->locality, &region, &zone, &sub_zone);
            sharp_sbuf_printf(b, "%s::%s::region::%s\n", cn, a, region);
            sharp_sbuf_printf(b, "%s::%s::zone::%s\n", cn, a, zone);
            sharp_sbuf_printf(b, "%s::%s::sub_zone::%s\n", cn, a, sub_zone);
            sharp_sbuf_printf(b, "%s::%s::canary::false\n", cn, a);
            sharp_sbuf_printf(b, "%s::%s::priority::%u\n", cn, a, h->priority);
            sharp_sbuf_printf(b, "%s::%s::success_rate::", cn, a);
            double_text(b, sharp_outlier_success_rate(c, h, SHARP_OUTLIER_EXTERNAL));
            sharp_sbuf_printf(b, "\n%s::%s::local_origin_success_rate::", cn, a);
            double_text(b, sharp_outlier_success_rate(c, h, SHARP_OUTLIER_LOCAL));
            sharp_sbuf_puts(b, "\n");
            /* SHARP: the outlier breaker's view of the host */
            if (c->outlier)
                sharp_sbuf_printf(b, "%s::%s::outlier_state::%s\n", cn, a,
                                  sharp_outlier_breaker_name(sharp_outlier_breaker(h)));
            /* SHARP: the host's kernel TCP signals */
            if (sharp_kernel_source() != SHARP_KERNEL_SOURCE_OFF) sharp_kernel_host_text(b, cn, h);
            /* SHARP: the host's diagnosis, when it has one */
            const char *dg = sharp_diag_host_text(h);
            if (dg[0]) sharp_sbuf_printf(b, "%s::%s::diagnosis::%s\n", cn, a, dg);
        }
    }
}

static void thresholds_json(sharp_sbuf_t *b, const char *prio, const sharp_cb_thresholds_t *t)
{
    sharp_sbuf_puts(b, "{");
    if (prio) sharp_sbuf_printf(b, "\"priority\":\"%s\",", prio);
    sharp_sbuf_printf(b,
                      "\"max_connections\":%u,\"max_pending_requests\":%u,\"max_requests\":%u,"
                      "\"max_retries\":%u}",
                      t->max_connections, t->max_pending_requests, t->max_requests, t->max_retries);
}

static void clusters_json(const sharp_snapshot_t *snap, sharp_sbuf_t *b)
{
    sharp_sbuf_puts(b, "{\"cluster_statuses\":[");
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) {
        const sharp_cluster_t *c = snap->clusters[i];
        if (i) sharp_sbuf_puts(b, ",");
        sharp_sbuf_puts(b, "{\"name\":");
        sharp_json_str(b, c->name);
        const sharp_outlier_t *od = c->outlier;
        if (od)
            percent_json(b, "success_rate_ejection_threshold",
                         od->sr_threshold[SHARP_OUTLIER_EXTERNAL],
                         od->sr_threshold[SHARP_OUTLIER_EXTERNAL] > 0);
        sharp_sbuf_puts(b, ",\"host_statuses\":[");
        for (uint32_t k = 0; k < c->nhosts; k++) {
            const sharp_host_t *h = c->hosts[k];
            host_counts_t n = host_counts(h);
            uint32_t f = atomic_load_explicit(&h->health_flags, memory_order_relaxed);
            if (k) sharp_sbuf_puts(b, ",");
            sharp_sbuf_puts(b, "{\"address\":");
            socket_address_json(b, &h->addr);
            sharp_sbuf_printf(b,
                              ",\"stats\":[{\"name\":\"cx_connect_fail\",\"value\":\"%llu\"},"
                              "{\"name\":\"cx_total\",\"value\":\"%llu\"},"
                              "{\"name\":\"rq_error\",\"value\":\"%llu\"},"
                              "{\"name\":\"rq_success\",\"value\":\"%llu\"},"
                              "{\"name\":\"rq_timeout\",\"value\":\"%llu\"},"
                              "{\"name\":\"rq_total\",\"value\":\"%llu\"},"
                              "{\"type\":\"GAUGE\",\"name\":\"cx_active\",\"value\":\"%llu\"},"
                              "{\"type\":\"GAUGE\",\"name\":\"rq_active\",\"value\":\"%llu\"}]",
                              (unsigned long long)n.cx_connect_fail, (unsigned long long)n.cx_total,
                              (unsigned long long)n.rq_error, (unsigned long long)n.rq_success,
                              (unsigned long long)n.rq_timeout, (unsigned long long)n.rq_total,
                              (unsigned long long)n.cx_active, (unsigned long long)n.rq_active);
            sharp_sbuf_puts(b, ",\"health_status\":{");
            if (f & SHARP_HOST_FAILED_ACTIVE_HC)
                sharp_sbuf_puts(b, "\"failed_active_health_check\":true,");
            if (f & SHARP_HOST_FAILED_OUTLIER) sharp_sbuf_puts(b, "\"failed_outlier_check\":true,");
            sharp_sbuf_printf(b, "\"eds_health_status\":\"%s\"",
                              f & SHARP_HOST_FAILED_EDS_HEALTH ? "UNHEALTHY" : "HEALTHY");
            if (f & SHARP_HOST_PENDING_REMOVAL)
                sharp_sbuf_puts(b, ",\"pending_dynamic_removal\":true");
            sharp_sbuf_puts(b, "}");
            double sr = sharp_outlier_success_rate(c, h, SHARP_OUTLIER_EXTERNAL);
            percent_json(b, "success_rate", sr, sr >= 0);
            sharp_sbuf_printf(b, ",\"weight\":%u", h->weight);
            if (h->hostname[0]) {
                sharp_sbuf_puts(b, ",\"hostname\":");
                sharp_json_str(b, h->hostname);
            }
            if (h->priority) sharp_sbuf_printf(b, ",\"priority\":%u", h->priority);
            sr = sharp_outlier_success_rate(c, h, SHARP_OUTLIER_LOCAL);
            percent_json(b, "local_origin_success_rate", sr, sr >= 0);
            /* proto JSON: the names that are set */
            const char *region, *zone, *sub_zone;
            sharp_locality_get(h->locality, &region, &zone, &sub_zone);
            sharp_sbuf_puts(b, ",\"locality\":{");
            const char *sep = "";
            const char *names[3] = {"region", "zone", "sub_zone"}, *vals[3] = {region, zone, sub_zone};
            for (int li = 0; li < 3; li++) {
                if (!vals[li][0]) continue;
                sharp_sbuf_printf(b, "%s\"%s\":", sep, names[li]);
                sharp_json_str(b, vals[li]);
                sep = ",";
            }
            sharp_sbuf_puts(b, "}");
            /* SHARP: the outlier breaker's view of the host */
            if (od)
                sharp_sbuf_printf(b, ",\"outlier_state\":\"%s\"",
                                  sharp_outlier_breaker_name(sharp_outlier_breaker(h)));
            /* SHARP: the host's kernel TCP signals */
            if (sharp_kernel_source() != SHARP_KERNEL_SOURCE_OFF) {
                sharp_sbuf_puts(b, ",\"kernel\":");
                sharp_kernel_host_json(b, h);
            }
            /* SHARP: the host's diagnosis, when it has one */
            const char *dg = sharp_diag_host_text(h);
            if (dg[0]) {
                sharp_sbuf_puts(b, ",\"diagnosis\":");
                sharp_json_str(b, dg);
            }
            sharp_sbuf_puts(b, "}");
        }
        sharp_sbuf_puts(b, "]");
        if (od)
            percent_json(b, "local_origin_success_rate_ejection_threshold",
                         od->sr_threshold[SHARP_OUTLIER_LOCAL], od->sr_threshold[SHARP_OUTLIER_LOCAL] > 0);
        sharp_sbuf_puts(b, ",\"circuit_breakers\":{\"thresholds\":[");
        sharp_cb_thresholds_t cb;
        sharp_cluster_cb_effective(c, SHARP_PRIORITY_DEFAULT, &cb);
        thresholds_json(b, NULL, &cb);
        sharp_sbuf_puts(b, ",");
        sharp_cluster_cb_effective(c, SHARP_PRIORITY_HIGH, &cb);
        thresholds_json(b, "HIGH", &cb);
        sharp_sbuf_puts(b, "]},\"observability_name\":");
        sharp_json_str(b, c->stat_name);
        sharp_sbuf_puts(b, "}");
    }
    sharp_sbuf_puts(b, "]}");
}

static void h_clusters(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const char *format = sharp_query_get(&rq->query, "format");
    if (format && strcmp(format, "json") == 0) {
        sharp_sbuf_t b = {0};
        clusters_json(rq->srv->snap, &b);
        finish_json(rsp, &b);
    } else {
        clusters_text(rq->srv->snap, &rsp->body);
    }
}

/* SHARP: the kernel TCP signals of every host (kernel/kernel.h). */
static void h_kernel(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_sbuf_t b = {0};
    sharp_kernel_admin_json(&b, rq->srv->snap);
    finish_json(rsp, &b);
}

/* ---- listeners ------------------------------------------------------------- */

static void h_listeners(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const sharp_snapshot_t *snap = rq->srv->snap;
    const char *format = sharp_query_get(&rq->query, "format");
    if (format && strcmp(format, "json") == 0) {
        sharp_sbuf_t b = {0};
        sharp_sbuf_puts(&b, "{\"listener_statuses\":[");
        for (uint32_t i = 0; snap && i < snap->nlisteners; i++) {
            const sharp_listener_config_t *l = snap->listeners[i];
            if (i) sharp_sbuf_puts(&b, ",");
            sharp_sbuf_puts(&b, "{\"name\":");
            sharp_json_str(&b, l->name ? l->name : "");
            sharp_sbuf_puts(&b, ",\"local_address\":");
            socket_address_json(&b, &l->addr);
            sharp_sbuf_puts(&b, "}");
        }
        sharp_sbuf_puts(&b, "]}");
        finish_json(rsp, &b);
        return;
    }
    for (uint32_t i = 0; snap && i < snap->nlisteners; i++)
        sharp_sbuf_printf(&rsp->body, "%s::%s\n",
                          snap->listeners[i]->name ? snap->listeners[i]->name : "",
                          snap->listeners[i]->address);
}

/* ---- shuffle_shard ---------------------------------------------------------- */

/* SHARP: a customer's cells in a shuffle-shard cluster, in the customer's
 * order, with what the balancer would pick for it now (shard_lb.h). */
static void h_shuffle_shard(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    const char *name = sharp_query_get(&rq->query, "cluster");
    const char *key = sharp_query_get(&rq->query, "key");
    if (!name || !name[0]) {
        text(rsp, 400, "usage: /shuffle_shard?cluster=<name>&key=<customer key>\n");
        return;
    }
    const sharp_cluster_t *c = rq->srv->snap ? sharp_snapshot_cluster(rq->srv->snap, name) : NULL;
    if (!c) {
        rsp->status = 404;
        sharp_sbuf_printf(&rsp->body, "unknown cluster '%s'\n", name);
        return;
    }
    const sharp_shard_policy_t *p = c->shuffle_shard;
    if (!p) {
        rsp->status = 400;
        sharp_sbuf_printf(&rsp->body, "cluster '%s' does not use the shuffle-shard load balancing policy\n", name);
        return;
    }
    if (!key) {
        text(rsp, 400, "missing key: /shuffle_shard?cluster=<name>&key=<customer key>\n");
        return;
    }
    uint32_t n = p->ss ? c->nhosts : 0;
    uint32_t *order = sharp_calloc(n ? n : 1, sizeof *order);
    if (n) n = sharp_shuffle_shard_order(p->ss, key, strlen(key), order, n);
    uint32_t k = SHARP_MIN(p->shard_size, n);
    sharp_sbuf_t b = {0};
    sharp_sbuf_puts(&b, "{\"cluster\":");
    sharp_json_str(&b, c->name);
    sharp_sbuf_puts(&b, ",\"key\":");
    sharp_json_str(&b, key);
    sharp_sbuf_printf(&b, ",\"shard_size\":%u,\"seed\":\"%llu\",\"on_shard_unhealthy\":\"%s\",\"pick\":\"%s\",\"cells\":[",
                      p->shard_size, (unsigned long long)p->seed,
                      p->on_unhealthy == SHARP_SHARD_SPILL ? "SPILL" : "FAIL",
                      p->pick == SHARP_SHARD_PICK_FIRST_HEALTHY ? "FIRST_HEALTHY" : "LEAST_REQUEST");
    for (uint32_t i = 0; i < n; i++) {
        const sharp_host_t *h = c->hosts[order[i]];
        if (i) sharp_sbuf_puts(&b, ",");
        sharp_sbuf_puts(&b, "{\"address\":");
        sharp_json_str(&b, h->address);
        sharp_sbuf_puts(&b, ",\"hostname\":");
        sharp_json_str(&b, h->hostname);
        sharp_sbuf_printf(&b, ",\"in_shard\":%s,\"healthy\":%s}", i < k ? "true" : "false",
                          sharp_lb_host_usable(h) ? "true" : "false");
    }
    const sharp_host_t *chosen = n ? sharp_shard_lb_peek(p, c->hosts, order, n) : NULL;
    sharp_sbuf_puts(&b, "],\"chosen_if_now\":");
    if (chosen) sharp_json_str(&b, chosen->address);
    else sharp_sbuf_puts(&b, "null");
    sharp_sbuf_puts(&b, "}");
    free(order);
    finish_json(rsp, &b);
}

/* /scaling: the scaling agent's last decision for each scaled cluster
 * (proxy/scaling.h); no clusters without a ScalingAgent extension. */
static void h_scaling(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    sharp_sbuf_t b = {0};
    sharp_scaling_render_json(rq->srv->scaling, &b);
    finish_json(rsp, &b);
}

/* ---- the table ------------------------------------------------------------- */

/* Sorted by path, which is also the order /help prints them in. */
static const handler_t handlers[] = {
    {"/", "Admin home page", false, h_help, {{0}}},
    {"/certs", "print certs on machine", false, h_certs, {{0}}},
    {"/clusters",
     "upstream cluster status",
     false,
     h_clusters,
     {{"format", "File format to use; One of (text, json)"}, {0}}},
    {"/config_dump",
     "dump current Envoy configs (experimental)",
     false,
     sharp__admin_config_dump,
     {{"resource", "The resource to dump"},
      {"mask", "The mask to apply. When both resource and mask are specified, the mask is applied to "
               "every element in the desired repeated field so that only a subset of fields are "
               "returned. The mask is parsed as a ProtobufWkt::FieldMask"},
      {"name_regex", "Dump only the currently loaded configurations whose names match the specified "
                     "regex. Can be used with both resource and mask query parameters."},
      {"include_eds", "Dump currently loaded configuration including EDS. See the response definition "
                      "for more information"},
      {0}}},
    {"/drain_listeners",
     "drain listeners",
     true,
     h_drain_listeners,
     {{"graceful", "When draining listeners, enter a graceful drain period prior to closing "
                   "listeners."},
      {"inboundonly", "Drains all inbound listeners."},
      {0}}},
    {"/healthcheck/fail",
     "cause the server to fail health checks",
     true,
     h_healthcheck_fail,
     {{0}}},
    {"/healthcheck/ok", "cause the server to pass health checks", true, h_healthcheck_ok, {{0}}},
    {"/help", "print out list of admin commands", false, h_help, {{0}}},
    {"/hot_restart_version",
     "print the hot restart compatibility version",
     false,
     h_hot_restart_version,
     {{0}}},
    {"/init_dump",
     "dump current Envoy init manager information (experimental)",
     false,
     h_init_dump,
     {{0}}},
    {"/kernel",
     "SHARP: kernel TCP signals per upstream host (source, retransmission rate, RTT, resets, connects)",
     false,
     h_kernel,
     {{0}}},
    {"/listeners",
     "print listener info",
     false,
     h_listeners,
     {{"format", "File format to use; One of (text, json)"}, {0}}},
    {"/logging",
     "query/change logging levels",
     true,
     h_logging,
     {{"paths", "Change multiple logging levels by setting to "
                "<logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>."},
      {"level", "desired logging level; One of (, trace, debug, info, warning, error, critical, "
                "off)"},
      {0}}},
    {"/memory", "print current allocation/heap usage", false, h_memory, {{0}}},
    {"/quitquitquit", "exit the server", true, h_quitquitquit, {{0}}},
    {"/ready",
     "print server state, return 200 if LIVE, otherwise return 503",
     false,
     h_ready,
     {{0}}},
    {"/reopen_logs",
     "reopen access logs",
     true,
     h_reopen_logs,
     {{0}}},
    {"/reset_counters", "reset all counters to zero", true, h_reset_counters, {{0}}},
    {"/runtime", "print runtime values", false, h_runtime, {{0}}},
    {"/runtime_modify",
     "Adds or modifies runtime values as passed in query parameters. To delete a previously added key, "
     "use an empty string as the value. Note that deletion only applies to overrides added via this "
     "endpoint; values loaded from disk can be modified via override but not deleted. E.g. "
     "?key1=value1&key2=value2...",
     true,
     h_runtime_modify,
     {{0}}},
    {"/scaling",
     "SHARP: the scaling agent's last decision per scaled cluster (policy action, guardian, HPA rule, observation)",
     false,
     h_scaling,
     {{0}}},
    {"/server_info", "print server version/status information", false, h_server_info, {{0}}},
    {"/shuffle_shard",
     "SHARP: a customer's cells in a shuffle-shard cluster, in its order",
     false,
     h_shuffle_shard,
     {{"cluster", "The shuffle-shard cluster"},
      {"key", "The customer key (the route's hash_policy value; several joined by a newline)"},
      {0}}},
    {"/stats",
     "print server stats",
     false,
     h_stats,
     {{"usedonly", "Only include stats that have been written by system since restart"},
      {"filter", "Regular expression (Google re2) for filtering stats"},
      {"format", "Format to use; One of (text, json, prometheus)"},
      {0}}},
    {"/stats/prometheus",
     "print server stats in prometheus format",
     false,
     h_stats_prometheus,
     {{"usedonly", "Only include stats that have been written by system since restart"},
      {"filter", "Regular expression (Google re2) for filtering stats"},
      {0}}},
};
static const size_t nhandlers = SHARP_ARRAY_SIZE(handlers);

static void help_text(sharp_sbuf_t *b)
{
    sharp_sbuf_puts(b, "admin commands are:\n");
    for (size_t i = 0; i < nhandlers; i++) {
        const handler_t *h = &handlers[i];
        sharp_sbuf_printf(b, "  %s%s: %s\n", h->prefix, h->mutates ? " (POST)" : "", h->help);
        for (const param_help_t *p = h->params; p->id; p++)
            sharp_sbuf_printf(b, "      %s: %s\n", p->id, p->help);
    }
}

bool sharp__admin_allowed(const sharp_server_t *srv, sharp_str_t target)
{
    /* Envoy's admin.allow_paths: matched against the path with its query,
     * so a prefix matcher allows "/stats?filter=..." */
    const sharp_config_t *cfg = srv ? srv->config : NULL;
    if (!cfg || !cfg->nadmin_allow) return true;
    for (size_t i = 0; i < cfg->nadmin_allow; i++)
        if (sharp_string_matcher_match(&cfg->admin_allow[i], target)) return true;
    return false;
}

void sharp__admin_handle(const sharp_admin_request_t *rq, sharp_admin_response_t *rsp)
{
    rsp->status = 200;
    rsp->content_type = SHARP_ADMIN_CT_TEXT;
    if (!sharp__admin_allowed(rq->srv, rq->target)) {
        rsp->status = 403;
        sharp_sbuf_printf(&rsp->body, "request to path %.*s not allowed by admin.allow_paths\n",
                          (int)SHARP_MIN(rq->target.len, 256), rq->target.p);
        return;
    }
    for (size_t i = 0; i < nhandlers; i++) {
        const handler_t *h = &handlers[i];
        if (!sharp_str_eq(rq->path, h->prefix, strlen(h->prefix))) continue;
        if (h->mutates && strcmp(rq->method, "POST") != 0) {
            sharp_log_warn("admin path \"%s\" mutates state, method=%s rather than POST", h->prefix,
                           rq->method);
            sharp_sbuf_printf(&rsp->body, "Method %s not allowed, POST required.", rq->method);
            rsp->status = 405;
            return;
        }
        h->fn(rq, rsp);
        return;
    }
    rsp->status = 404;
    sharp_sbuf_puts(&rsp->body, "invalid path. ");
    help_text(&rsp->body);
}

const char *sharp__admin_reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}
