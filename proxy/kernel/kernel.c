/* kernel.c: the kernel signals' main-thread side (kernel.h): the source,
 * the watched remotes, the interval, stats and admin output. */
#include "kernel/kernel.h"
#include "kernel/ebpf.h"
#include "kernel/tcpinfo.h"
#include "admin/json.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "upstream/cluster.h"
#include "upstream/diagnosis.h"
#include "upstream/outlier.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/stat.h>

#define INTERVAL_KEY "sharp.kernel.interval_ms"
#define INTERVAL_DEFAULT_MS 1000
#define INTERVAL_MIN_MS 100
#define INTERVAL_MAX_MS 60000

/* A watched remote: the userspace mirror of an entry of the probes'
 * `remotes` map and its slot of their counters, with the counters last
 * read from it. */
typedef struct {
    struct sharp_tcp_remote key;
    uint32_t slot; /* its slot in the probes' counters, once in the map */
    uint64_t gen;  /* identity of the map entry: a new entry starts at zero */
    uint64_t mark; /* the reconciliation that last found a host for it */
    sharp_tcp_counters_t cur;
    bool read_ok;
    bool pending; /* added since the last flush_pending: not in the map yet */
} watch_t;

static struct {
    sharp_kernel_mode_t mode;
    sharp_kernel_source_t source;
    char reason[320]; /* why the probes do not run (tcp_info), "" otherwise */
    struct sharp_server *srv;
    uv_timer_t timer;
    bool started;
    uint64_t interval_ms;
    uint64_t last_tick_ns;
    sharp_kernel_bpf_t *bpf;
    bool no_batch; /* the kernel has no batch lookups: one lookup per remote */
    /* watched remotes: an array, and an open-addressing index of
     * positions + 1 (0: empty) over it, a power of two of slots */
    watch_t *w;
    uint32_t nw, wcap;
    uint32_t *ix;
    uint32_t ixcap;
    uint64_t gen, mark;
    bool full_logged;
    /* per-cluster scratch */
    double *scratch;
    sharp_tcp_signals_t **sigs;
    size_t scratch_cap;
    sharp_stats_t *stats;
    struct {
        sharp_stat_id_t ebpf, watched, read_errors, tag_errors;
    } st;
    uint64_t tag_errors_seen;
} K;

int sharp_kernel_mode_parse(const char *s, sharp_kernel_mode_t *out)
{
    if (strcmp(s, "auto") == 0) *out = SHARP_KERNEL_MODE_AUTO;
    else if (strcmp(s, "tcp_info") == 0) *out = SHARP_KERNEL_MODE_TCP_INFO;
    else if (strcmp(s, "off") == 0) *out = SHARP_KERNEL_MODE_OFF;
    else return -1;
    return 0;
}

void sharp_kernel_set_mode(sharp_kernel_mode_t m)
{
    K.mode = m;
}

bool sharp_kernel_enabled(void)
{
    return K.mode != SHARP_KERNEL_MODE_OFF;
}

sharp_kernel_source_t sharp_kernel_source(void)
{
    return K.source;
}

const char *sharp_kernel_source_name(sharp_kernel_source_t s)
{
    switch (s) {
    case SHARP_KERNEL_SOURCE_EBPF: return "ebpf";
    case SHARP_KERNEL_SOURCE_TCP_INFO: return "tcp_info";
    default: return "off";
    }
}

void sharp_kernel_cluster_stats_init(sharp_cluster_t *c, sharp_stats_t *s)
{
    if (!sharp_kernel_enabled()) return;
    const char *n = c->stat_name;
    c->st.kernel.on = true;
#define C(field, stat) c->st.kernel.field = sharp_stats_counterf(s, "cluster.%s.kernel." stat, n)
#define G(field, stat) c->st.kernel.field = sharp_stats_gaugef(s, "cluster.%s.kernel." stat, n)
    C(segments_out, "segments_out");
    C(retransmits, "retransmits");
    C(syn_retransmits, "syn_retransmits");
    C(resets_received, "resets_received");
    C(resets_sent, "resets_sent");
    C(connects, "connects");
    C(connect_failures, "connect_failures");
    C(closes, "closes");
    G(rtt_median_us, "rtt_median_us");
    G(retransmit_rate_median_ppm, "retransmit_rate_median_ppm");
    G(retransmit_rate_max_ppm, "retransmit_rate_max_ppm");
#undef C
#undef G
}

/* ---- watched remotes ---------------------------------------------------- */

static bool host_key(const sharp_host_t *h, struct sharp_tcp_remote *k)
{
    memset(k, 0, sizeof *k);
    if (h->addr.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&h->addr;
        memcpy(k->addr, &a->sin_addr, 4);
        k->port = ntohs(a->sin_port);
    } else if (h->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&h->addr;
        memcpy(k->addr, &a->sin6_addr, 16);
        k->port = ntohs(a->sin6_port);
    } else {
        return false; /* a Unix socket: no TCP */
    }
    k->family = h->addr.ss_family;
    return true;
}

static uint32_t key_hash(const struct sharp_tcp_remote *k)
{
    /* FNV-1a over the key's bytes */
    const unsigned char *p = (const unsigned char *)k;
    uint32_t x = 2166136261u;
    for (size_t i = 0; i < sizeof *k; i++) x = (x ^ p[i]) * 16777619u;
    return x;
}

static void index_insert(uint32_t pos)
{
    uint32_t m = K.ixcap - 1, i = key_hash(&K.w[pos].key) & m;
    while (K.ix[i]) i = (i + 1) & m;
    K.ix[i] = pos + 1;
}

static void index_rebuild(void)
{
    uint32_t cap = 64;
    while (cap < 2 * K.nw) cap *= 2;
    if (cap != K.ixcap) {
        free(K.ix);
        K.ix = sharp_calloc(cap, sizeof *K.ix);
        K.ixcap = cap;
    } else {
        memset(K.ix, 0, cap * sizeof *K.ix);
    }
    for (uint32_t i = 0; i < K.nw; i++) index_insert(i);
}

static watch_t *watch_find(const struct sharp_tcp_remote *k)
{
    if (!K.ixcap) return NULL;
    uint32_t m = K.ixcap - 1;
    for (uint32_t i = key_hash(k) & m; K.ix[i]; i = (i + 1) & m) {
        watch_t *w = &K.w[K.ix[i] - 1];
        if (memcmp(&w->key, k, sizeof *k) == 0) return w;
    }
    return NULL;
}

/* Marks the host's remote as wanted; a remote not watched yet is added,
 * pending until flush_pending puts the new ones in the map together (an
 * EDS or CDS push brings hundreds: one batch, not a system call each). */
static void watch_host(const sharp_host_t *h)
{
    struct sharp_tcp_remote k;
    if (!host_key(h, &k)) return;
    watch_t *w = watch_find(&k);
    if (w) {
        w->mark = K.mark;
        return;
    }
    if (K.nw == K.wcap) {
        K.wcap = K.wcap ? 2 * K.wcap : 64;
        K.w = sharp_realloc(K.w, K.wcap * sizeof *K.w);
    }
    w = &K.w[K.nw++];
    memset(w, 0, sizeof *w);
    w->key = k;
    w->gen = ++K.gen;
    w->mark = K.mark;
    w->pending = true;
    if (2 * K.nw > K.ixcap) index_rebuild();
    else index_insert(K.nw - 1);
}

/* Puts the pending remotes in the probes' map; those it cannot take (the
 * map full) are forgotten, said once in the log. */
static void flush_pending(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < K.nw; i++) n += K.w[i].pending;
    if (!n) return;
    struct sharp_tcp_remote *keys = sharp_calloc(n, sizeof *keys);
    uint32_t *pos = sharp_calloc(n, sizeof *pos);
    bool *ok = sharp_calloc(n, sizeof *ok);
    uint32_t *slots = sharp_calloc(n, sizeof *slots);
    for (uint32_t i = 0, j = 0; i < K.nw; i++)
        if (K.w[i].pending) pos[j] = i, keys[j++] = K.w[i].key;
    size_t nok = sharp_kernel_bpf_watch_many(K.bpf, keys, n, ok, slots);
    for (uint32_t j = 0; j < n; j++) {
        K.w[pos[j]].pending = !ok[j]; /* still pending: to be dropped */
        K.w[pos[j]].slot = slots[j];
    }
    if (nok < n) {
        if (!K.full_logged) /* the map is full (E2BIG): said once */
            sharp_log_warn("kernel signals: cannot watch %zu remote(s): the probes' table is full (%u remotes)",
                           (size_t)(n - nok), sharp_kernel_bpf_max_remotes(K.bpf));
        K.full_logged = true;
        uint32_t kept = 0;
        for (uint32_t i = 0; i < K.nw; i++)
            if (!K.w[i].pending) K.w[kept++] = K.w[i];
        K.nw = kept;
        index_rebuild();
    }
    free(keys);
    free(pos);
    free(ok);
    free(slots);
}

/* Makes the watched set the remotes of the current clusters' hosts: adds
 * the missing ones, unwatches the others. */
static void reconcile(void)
{
    const sharp_snapshot_t *snap = K.srv->snap;
    K.mark++;
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) {
        const sharp_cluster_t *c = snap->clusters[i];
        for (uint32_t k = 0; k < c->nhosts; k++) watch_host(c->hosts[k]);
    }
    flush_pending();
    /* the remotes no host wants any more, out of the map together */
    uint32_t kept = 0, ngone = 0;
    for (uint32_t i = 0; i < K.nw; i++) ngone += K.w[i].mark != K.mark;
    struct sharp_tcp_remote *gone = ngone ? sharp_calloc(ngone, sizeof *gone) : NULL;
    uint32_t *gone_slots = ngone ? sharp_calloc(ngone, sizeof *gone_slots) : NULL;
    ngone = 0;
    for (uint32_t i = 0; i < K.nw; i++) {
        if (K.w[i].mark == K.mark) {
            K.w[kept++] = K.w[i];
            continue;
        }
        gone_slots[ngone] = K.w[i].slot;
        gone[ngone++] = K.w[i].key;
    }
    sharp_kernel_bpf_unwatch_many(K.bpf, gone, gone_slots, ngone);
    free(gone);
    free(gone_slots);
    if (kept != K.nw) {
        K.nw = kept;
        K.full_logged = false;
        index_rebuild();
    }
    sharp_gauge_set(K.stats, K.st.watched, K.nw);
}

void sharp_kernel_hosts_changed(sharp_cluster_t *c)
{
    if (K.source != SHARP_KERNEL_SOURCE_EBPF) return;
    for (uint32_t k = 0; k < c->nhosts; k++) watch_host(c->hosts[k]);
    flush_pending();
    sharp_gauge_set(K.stats, K.st.watched, K.nw);
}

void sharp_kernel_snapshot_changed(void)
{
    if (K.source == SHARP_KERNEL_SOURCE_EBPF && K.srv) reconcile();
}

/* ---- the interval ------------------------------------------------------- */

static void grow_scratch(size_t n)
{
    if (n <= K.scratch_cap) return;
    K.scratch_cap = n * 2;
    free(K.scratch);
    free(K.sigs);
    K.scratch = sharp_calloc(K.scratch_cap, sizeof *K.scratch);
    K.sigs = sharp_calloc(K.scratch_cap, sizeof *K.sigs);
}

static void tcpinfo_counters(sharp_host_kernel_t *k, sharp_tcp_counters_t *out)
{
    memset(out, 0, sizeof *out);
#define L(f) out->f = atomic_load_explicit(&k->f, memory_order_relaxed)
    L(segs_out);
    L(retrans);
    L(rtt_sum_us);
    L(rttvar_sum_us);
    L(rtt_samples);
    L(connects);
    L(connect_lat_sum_us);
    L(connect_fail);
    L(rst_rx);
    L(closes);
#undef L
}

static void cluster_interval(sharp_cluster_t *c)
{
    uint64_t now_ms = uv_now(K.srv->loop);
    if (K.source == SHARP_KERNEL_SOURCE_OFF) { /* no kernel signals: the hosts' diagnosis only */
        sharp_diag_cluster_interval(c, now_ms);
        return;
    }
    grow_scratch(c->nhosts ? c->nhosts : 1);
    size_t n = 0;
    sharp_tcp_counters_t sum = {0};
    for (uint32_t i = 0; i < c->nhosts; i++) {
        sharp_host_t *h = c->hosts[i];
        sharp_host_kernel_t *k = &h->kern;
        sharp_tcp_counters_t cur;
        uint64_t gen = 1;
        if (K.source == SHARP_KERNEL_SOURCE_EBPF) {
            struct sharp_tcp_remote key;
            watch_t *w = host_key(h, &key) ? watch_find(&key) : NULL;
            if (!w || !w->read_ok) continue;
            cur = w->cur;
            gen = w->gen;
        } else {
            if (h->addr.ss_family != AF_INET && h->addr.ss_family != AF_INET6) continue;
            tcpinfo_counters(k, &cur);
        }
        if (!k->has_prev) sharp_tcp_signals_init(&k->sig);
        if (!k->has_prev || k->prev_gen != gen) memset(&k->prev, 0, sizeof k->prev);
        sharp_tcp_signals_update(&k->sig, &k->prev, &cur);
        k->prev = cur;
        k->prev_gen = gen;
        k->has_prev = true;
        const sharp_tcp_signals_t *s = &k->sig;
        sum.segs_out += s->segs_out;
        sum.retrans += s->retrans;
        sum.syn_retrans += s->syn_retrans;
        sum.rst_rx += s->rst_rx;
        sum.rst_tx += s->rst_tx;
        sum.connects += s->connects;
        sum.connect_fail += s->connect_fail;
        sum.closes += s->closes;
        K.sigs[n++] = &k->sig;
    }
    double rtt_median = sharp_tcp_cluster_ratios(K.sigs, n, K.scratch);
    double rate_median = sharp_tcp_median_retrans_rate(K.sigs, n, K.scratch);
    double rate_max = -1;
    for (size_t i = 0; i < n; i++)
        if (K.sigs[i]->retrans_rate > rate_max) rate_max = K.sigs[i]->retrans_rate;
    /* the kernel outlier monitor, when the cluster has one, then the
     * hosts' diagnosis, both on this interval's signals */
    sharp_outlier_kernel_interval(c, now_ms);
    sharp_diag_cluster_interval(c, now_ms);
    if (!c->st.kernel.on) return;
    sharp_stats_shard_t *sh = sharp_stats_shard(c->stats, 0);
    sharp_counter_add(sh, c->st.kernel.segments_out, sum.segs_out);
    sharp_counter_add(sh, c->st.kernel.retransmits, sum.retrans);
    sharp_counter_add(sh, c->st.kernel.syn_retransmits, sum.syn_retrans);
    sharp_counter_add(sh, c->st.kernel.resets_received, sum.rst_rx);
    sharp_counter_add(sh, c->st.kernel.resets_sent, sum.rst_tx);
    sharp_counter_add(sh, c->st.kernel.connects, sum.connects);
    sharp_counter_add(sh, c->st.kernel.connect_failures, sum.connect_fail);
    sharp_counter_add(sh, c->st.kernel.closes, sum.closes);
    sharp_gauge_set(c->stats, c->st.kernel.rtt_median_us, rtt_median > 0 ? (int64_t)(rtt_median + 0.5) : 0);
    sharp_gauge_set(c->stats, c->st.kernel.retransmit_rate_median_ppm,
                    rate_median > 0 ? (int64_t)(rate_median * 1e6 + 0.5) : 0);
    sharp_gauge_set(c->stats, c->st.kernel.retransmit_rate_max_ppm,
                    rate_max > 0 ? (int64_t)(rate_max * 1e6 + 0.5) : 0);
}

static uint64_t interval_from_runtime(void)
{
    uint64_t v = sharp_runtime_get_u64(INTERVAL_KEY, INTERVAL_DEFAULT_MS);
    return v < INTERVAL_MIN_MS ? INTERVAL_MIN_MS : v > INTERVAL_MAX_MS ? INTERVAL_MAX_MS : v;
}

static void batch_entry(void *arg, uint32_t slot, const struct sharp_tcp_remote *key, const sharp_tcp_counters_t *c)
{
    (void)arg;
    watch_t *w = watch_find(key);
    if (!w || w->slot != slot) return; /* cannot happen: SHARP alone fills the maps */
    w->cur = *c;
    w->read_ok = true;
}

/* Every watched remote's counters: in batches, else one lookup each. */
static void read_counters(void)
{
    for (uint32_t i = 0; i < K.nw; i++) K.w[i].read_ok = false;
    if (!K.no_batch) {
        int rc = sharp_kernel_bpf_read_all(K.bpf, batch_entry, NULL);
        if (rc == 0) return;
        if (rc == -EINVAL || rc == -ENOTSUP || rc == -EOPNOTSUPP || rc == -ENOSYS) {
            sharp_debug(main, "kernel signals: no batch map lookups (%s), one lookup per remote", strerror(-rc));
            K.no_batch = true;
        }
        /* else (ENOSPC: a hash bucket longer than a batch; anything else):
         * this time, one lookup per remote */
        for (uint32_t i = 0; i < K.nw; i++) K.w[i].read_ok = false;
    }
    for (uint32_t i = 0; i < K.nw; i++) {
        watch_t *w = &K.w[i];
        w->read_ok = sharp_kernel_bpf_read(K.bpf, w->slot, &w->key, &w->cur) == 0;
        if (!w->read_ok) sharp_counter_inc(sharp_stats_shard(K.stats, 0), K.st.read_errors);
    }
}

void sharp_kernel_tick(void)
{
    if (!K.srv) return;
    K.last_tick_ns = sharp_now_ns();
    if (K.source == SHARP_KERNEL_SOURCE_EBPF) {
        reconcile();
        /* the tagged sockets' segments and RTT, sampled into the counters */
        if (sharp_kernel_bpf_sample(K.bpf) < 0) sharp_counter_inc(sharp_stats_shard(K.stats, 0), K.st.read_errors);
        read_counters();
        uint64_t te = sharp_kernel_bpf_tag_failures(K.bpf);
        sharp_counter_add(sharp_stats_shard(K.stats, 0), K.st.tag_errors, te - K.tag_errors_seen);
        K.tag_errors_seen = te;
    }
    const sharp_snapshot_t *snap = K.srv->snap;
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) cluster_interval(snap->clusters[i]);
}

static void on_timer(uv_timer_t *t)
{
    sharp_kernel_tick();
    uint64_t ms = interval_from_runtime();
    if (ms != K.interval_ms) {
        K.interval_ms = ms;
        atomic_store_explicit(&sharp_tcpinfo_interval_ms, (uint32_t)ms, memory_order_relaxed);
        uv_timer_start(t, on_timer, ms, ms);
    }
}

static uint32_t own_netns(void)
{
    struct stat st;
    return stat("/proc/self/ns/net", &st) == 0 ? (uint32_t)st.st_ino : 0;
}

void sharp_kernel_start(sharp_server_t *srv, uv_loop_t *loop)
{
    if (K.started) return;
    K.srv = srv;
    K.stats = srv->stats;
    K.interval_ms = interval_from_runtime();
    K.source = SHARP_KERNEL_SOURCE_OFF;
    if (K.mode == SHARP_KERNEL_MODE_OFF) /* the interval still runs: the hosts' diagnosis */
        goto timer;
    K.st.ebpf = sharp_stats_gauge(K.stats, "kernel.ebpf_active");
    K.st.watched = sharp_stats_gauge(K.stats, "kernel.watched_remotes");
    K.st.read_errors = sharp_stats_counter(K.stats, "kernel.read_errors");
    K.st.tag_errors = sharp_stats_counter(K.stats, "kernel.tag_errors");
    atomic_store_explicit(&sharp_tcpinfo_interval_ms, (uint32_t)K.interval_ms, memory_order_relaxed);
    K.reason[0] = '\0';
    if (K.mode == SHARP_KERNEL_MODE_TCP_INFO) {
        snprintf(K.reason, sizeof K.reason, "--kernel-signals tcp_info");
    } else {
        K.bpf = sharp_kernel_bpf_open(own_netns(), K.reason, sizeof K.reason);
    }
    if (K.bpf) {
        K.source = SHARP_KERNEL_SOURCE_EBPF;
        sharp_log_info("kernel signals: eBPF probes attached (%s: %s), interval %llu ms",
                       sharp_kernel_bpf_attach_kind(K.bpf), sharp_kernel_bpf_probes(K.bpf),
                       (unsigned long long)K.interval_ms);
    } else {
        K.source = SHARP_KERNEL_SOURCE_TCP_INFO;
        atomic_store_explicit(&sharp_tcpinfo_enabled, true, memory_order_release);
        sharp_log_info("kernel signals: TCP_INFO of SHARP's own upstream sockets, no eBPF: %s", K.reason);
    }
    sharp_gauge_set(K.stats, K.st.ebpf, K.source == SHARP_KERNEL_SOURCE_EBPF);
    if (K.source == SHARP_KERNEL_SOURCE_EBPF) reconcile();
timer:
    sharp_kernel_tick(); /* the baseline */
    uv_timer_init(loop, &K.timer);
    uv_timer_start(&K.timer, on_timer, K.interval_ms, K.interval_ms);
    uv_unref((uv_handle_t *)&K.timer);
    K.started = true;
}

void sharp_kernel_stop(void)
{
    if (!K.started) return;
    K.started = false;
    uv_timer_stop(&K.timer);
    uv_close((uv_handle_t *)&K.timer, NULL);
    atomic_store_explicit(&sharp_tcpinfo_enabled, false, memory_order_relaxed);
    K.tag_errors_seen = 0;
    sharp_kernel_bpf_close(K.bpf);
    K.bpf = NULL;
    free(K.w);
    free(K.ix);
    free(K.scratch);
    free(K.sigs);
    K.w = NULL;
    K.ix = NULL;
    K.scratch = NULL;
    K.sigs = NULL;
    K.nw = K.wcap = K.ixcap = 0;
    K.scratch_cap = 0;
    K.no_batch = false;
    K.source = SHARP_KERNEL_SOURCE_OFF;
    K.srv = NULL;
}

/* ---- admin -------------------------------------------------------------- */

/* -1 (unknown) as JSON null */
static void num_json(sharp_sbuf_t *b, double v)
{
    if (v < 0) sharp_sbuf_puts(b, "null");
    else sharp_sbuf_printf(b, "%.6g", v);
}

static void counters_json(sharp_sbuf_t *b, const sharp_tcp_signals_t *s, bool interval)
{
    const sharp_tcp_counters_t *t = &s->total;
    uint64_t v[] = {
        interval ? s->segs_out : t->segs_out,         interval ? s->retrans : t->retrans,
        interval ? s->syn_retrans : t->syn_retrans,   interval ? s->rst_rx : t->rst_rx,
        interval ? s->rst_tx : t->rst_tx,             interval ? s->connects : t->connects,
        interval ? s->connect_fail : t->connect_fail, interval ? s->closes : t->closes,
    };
    static const char *const names[] = {"segments_out", "retransmits", "syn_retransmits", "resets_received",
                                        "resets_sent", "connects", "connect_failures", "closes"};
    sharp_sbuf_puts(b, "{");
    for (size_t i = 0; i < SHARP_ARRAY_SIZE(v); i++) {
        /* TCP_INFO sees no reset SHARP's kernel sends */
        if (i == 4 && K.source == SHARP_KERNEL_SOURCE_TCP_INFO) {
            sharp_sbuf_printf(b, "%s\"%s\":null", i ? "," : "", names[i]);
            continue;
        }
        sharp_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", names[i], (unsigned long long)v[i]);
    }
    sharp_sbuf_puts(b, "}");
}

void sharp_kernel_host_json(sharp_sbuf_t *b, const sharp_host_t *h)
{
    const sharp_host_kernel_t *k = &h->kern;
    sharp_sbuf_printf(b, "{\"source\":\"%s\"", sharp_kernel_source_name(K.source));
    if (!k->has_prev) {
        sharp_sbuf_puts(b, "}");
        return;
    }
    const sharp_tcp_signals_t *s = &k->sig;
    sharp_sbuf_printf(b, ",\"intervals\":%llu,\"retransmit_rate\":", (unsigned long long)s->intervals);
    num_json(b, s->retrans_rate);
    sharp_sbuf_puts(b, ",\"rtt_us\":");
    num_json(b, s->rtt_us);
    sharp_sbuf_puts(b, ",\"rttvar_us\":");
    num_json(b, s->rttvar_us);
    sharp_sbuf_puts(b, ",\"rtt_ratio\":");
    num_json(b, s->rtt_ratio);
    sharp_sbuf_puts(b, ",\"connect_latency_us\":");
    num_json(b, s->connect_latency_us);
    sharp_sbuf_puts(b, ",\"interval\":");
    counters_json(b, s, true);
    sharp_sbuf_puts(b, ",\"total\":");
    counters_json(b, s, false);
    sharp_sbuf_puts(b, "}");
}

static void num_text(sharp_sbuf_t *b, double v)
{
    if (v < 0) sharp_sbuf_puts(b, "-1");
    else sharp_sbuf_printf(b, "%.6g", v);
}

void sharp_kernel_host_text(sharp_sbuf_t *b, const char *cn, const sharp_host_t *h)
{
    const char *a = h->address;
    const sharp_host_kernel_t *k = &h->kern;
    sharp_tcp_signals_t none;
    sharp_tcp_signals_init(&none);
    const sharp_tcp_signals_t *s = k->has_prev ? &k->sig : &none;
    sharp_sbuf_printf(b, "%s::%s::kernel.source::%s\n", cn, a, sharp_kernel_source_name(K.source));
    sharp_sbuf_printf(b, "%s::%s::kernel.retransmit_rate::", cn, a);
    num_text(b, s->retrans_rate);
    sharp_sbuf_printf(b, "\n%s::%s::kernel.rtt_us::", cn, a);
    num_text(b, s->rtt_us);
    sharp_sbuf_printf(b, "\n%s::%s::kernel.rttvar_us::", cn, a);
    num_text(b, s->rttvar_us);
    sharp_sbuf_printf(b, "\n%s::%s::kernel.rtt_ratio::", cn, a);
    num_text(b, s->rtt_ratio);
    sharp_sbuf_printf(b, "\n%s::%s::kernel.connect_latency_us::", cn, a);
    num_text(b, s->connect_latency_us);
    sharp_sbuf_puts(b, "\n");
    const sharp_tcp_counters_t *t = &s->total;
    sharp_sbuf_printf(b, "%s::%s::kernel.segments_out::%llu\n", cn, a, (unsigned long long)t->segs_out);
    sharp_sbuf_printf(b, "%s::%s::kernel.retransmits::%llu\n", cn, a, (unsigned long long)t->retrans);
    sharp_sbuf_printf(b, "%s::%s::kernel.resets_received::%llu\n", cn, a, (unsigned long long)t->rst_rx);
    if (K.source != SHARP_KERNEL_SOURCE_TCP_INFO)
        sharp_sbuf_printf(b, "%s::%s::kernel.resets_sent::%llu\n", cn, a, (unsigned long long)t->rst_tx);
    sharp_sbuf_printf(b, "%s::%s::kernel.connect_failures::%llu\n", cn, a, (unsigned long long)t->connect_fail);
}

void sharp_kernel_admin_json(sharp_sbuf_t *b, const sharp_snapshot_t *snap)
{
    sharp_sbuf_printf(b, "{\"source\":\"%s\"", sharp_kernel_source_name(K.source));
    if (K.source == SHARP_KERNEL_SOURCE_TCP_INFO) {
        sharp_sbuf_puts(b, ",\"fallback_reason\":");
        sharp_json_str(b, K.reason);
    }
    if (K.source == SHARP_KERNEL_SOURCE_OFF) {
        sharp_sbuf_puts(b, ",\"clusters\":[]}");
        return;
    }
    sharp_sbuf_printf(b, ",\"interval_ms\":%llu", (unsigned long long)K.interval_ms);
    if (K.bpf) {
        sharp_sbuf_puts(b, ",\"probes\":");
        sharp_json_str(b, sharp_kernel_bpf_probes(K.bpf));
        sharp_sbuf_printf(b, ",\"attach\":\"%s\"", sharp_kernel_bpf_attach_kind(K.bpf));
        sharp_sbuf_printf(b, ",\"watched_remotes\":%u,\"max_watched_remotes\":%u", K.nw,
                          sharp_kernel_bpf_max_remotes(K.bpf));
        int64_t tagged = sharp_kernel_bpf_tagged_sockets(K.bpf);
        if (tagged >= 0)
            sharp_sbuf_printf(b, ",\"tagged_sockets\":%lld,\"tag_slots\":%u", (long long)tagged,
                              sharp_kernel_bpf_tag_slots(K.bpf));
    }
    sharp_sbuf_puts(b, ",\"clusters\":[");
    for (uint32_t i = 0; snap && i < snap->nclusters; i++) {
        const sharp_cluster_t *c = snap->clusters[i];
        if (i) sharp_sbuf_puts(b, ",");
        sharp_sbuf_puts(b, "{\"name\":");
        sharp_json_str(b, c->name);
        if (c->st.kernel.on) {
            sharp_sbuf_printf(b, ",\"rtt_median_us\":%lld,\"retransmit_rate_median_ppm\":%lld",
                              (long long)sharp_stats_gauge_value(c->stats, c->st.kernel.rtt_median_us),
                              (long long)sharp_stats_gauge_value(c->stats, c->st.kernel.retransmit_rate_median_ppm));
        }
        sharp_sbuf_puts(b, ",\"hosts\":[");
        for (uint32_t k = 0; k < c->nhosts; k++) {
            const sharp_host_t *h = c->hosts[k];
            if (k) sharp_sbuf_puts(b, ",");
            sharp_sbuf_puts(b, "{\"address\":");
            sharp_json_str(b, h->address);
            sharp_sbuf_puts(b, ",\"signals\":");
            sharp_kernel_host_json(b, h);
            sharp_sbuf_puts(b, "}");
        }
        sharp_sbuf_puts(b, "]}");
    }
    sharp_sbuf_puts(b, "]}");
}
