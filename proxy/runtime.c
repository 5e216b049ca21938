/* runtime.c: Envoy's layered runtime (see runtime.h): value parsing as
 * SnapshotImpl::resolveEntryType, layers, snapshots, the admin layer, disk
 * layers and their symlink watch, RTDS layers' values, and the lookups. */
#include "runtime.h"
#include "config/mapper.h"
#include "log.h"

#include "envoy/type/v3/percent.pb-c.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <uv.h>

_Thread_local const sharp_runtime_snapshot_t *sharp_runtime_tls;

/* ---- values ---------------------------------------------------------------- */

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    /* absl::SimpleAtoi: optional '+', decimal digits, no overflow */
    if (n && s[0] == '+') s++, n--;
    return sharp_parse_u64(s, n, out, NULL);
}

static bool parse_double(const char *s, size_t n, double *out)
{
    /* absl::SimpleAtod: decimal or exponent notation, "inf" and "nan";
     * no hexadecimal */
    if (!n || n > 400) return false;
    char buf[401];
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (strpbrk(buf, "xX") || (buf[0] == '+' && (buf[1] == '+' || buf[1] == '-'))) return false;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (end == buf || *end) return false;
    *out = d;
    return true;
}

/* The FractionalPercent Envoy reads from a value that is neither a bool nor a
 * number: YAML or JSON of the message, strictly (unknown fields and
 * undefined denominators make it no fractional percent at all). */
static bool parse_fractional(const char *raw, uint32_t *num, uint32_t *den)
{
    const char *p = raw;
    while (isspace((unsigned char)*p))
        p++;
    if (!*p || (*p != '{' && !strchr(p, ':'))) return false; /* not a mapping */
    sharp_config_error_t e = {{0}};
    sharp_config_doc_t *doc =
        sharp_config_parse(raw, strlen(raw), "runtime value", &envoy__type__v3__fractional_percent__descriptor, &e);
    if (!doc) return false;
    const Envoy__Type__V3__FractionalPercent *fp =
        (const Envoy__Type__V3__FractionalPercent *)sharp_config_doc_message(doc);
    bool ok = true;
    switch (fp->denominator) {
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED: *den = 100; break;
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND: *den = 10000; break;
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__MILLION: *den = 1000000; break;
    default: ok = false; break;
    }
    *num = fp->numerator;
    sharp_config_doc_free(doc);
    return ok;
}

void sharp_runtime_entry_parse(sharp_runtime_entry_t *e)
{
    e->has_bool = e->has_uint = e->has_double = e->has_fractional = false;
    const char *s = e->raw;
    size_t n = strlen(s);
    /* parseEntryBooleanValue works on the text without surrounding blanks */
    size_t b = 0, l = n;
    while (b < l && isspace((unsigned char)s[b]))
        b++;
    while (l > b && isspace((unsigned char)s[l - 1]))
        l--;
    uint64_t u;
    if (parse_u64(s + b, l - b, &u)) {
        e->has_bool = true;
        e->bool_value = u != 0;
    } else if (l - b == 4 && strncasecmp(s + b, "true", 4) == 0) {
        e->has_bool = e->bool_value = true;
        return;
    } else if (l - b == 5 && strncasecmp(s + b, "false", 5) == 0) {
        e->has_bool = true;
        e->bool_value = false;
        return;
    }
    double d;
    if (parse_double(s + b, l - b, &d) && d >= 0 && d <= (double)UINT64_MAX) {
        /* a whole number is also a double; 3.7 reads as 3 */
        e->has_double = e->has_uint = true;
        e->double_value = d;
        e->uint_value = d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
        return;
    }
    e->has_fractional = parse_fractional(s, &e->numerator, &e->denominator);
}

static int key_cmp(const char *a, const char *b)
{
    return strcmp(a, b);
}

/* Index of key, or -(insertion point) - 1. */
static long values_search(const sharp_runtime_values_t *v, const char *key)
{
    long lo = 0, hi = (long)v->n - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        int c = key_cmp(v->entries[mid].key, key);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -lo - 1;
}

const sharp_runtime_entry_t *sharp_runtime_values_find(const sharp_runtime_values_t *v, const char *key)
{
    long i = values_search(v, key);
    return i >= 0 ? &v->entries[i] : NULL;
}

static void entry_free(sharp_runtime_entry_t *e)
{
    free(e->key);
    free(e->raw);
}

static void entry_copy(sharp_runtime_entry_t *dst, const sharp_runtime_entry_t *src)
{
    *dst = *src;
    dst->key = sharp_strdup(src->key);
    dst->raw = sharp_strdup(src->raw);
}

void sharp_runtime_values_set(sharp_runtime_values_t *v, const char *key, const char *raw)
{
    long i = values_search(v, key);
    sharp_runtime_entry_t *e;
    if (i >= 0) {
        e = &v->entries[i];
        free(e->raw);
    } else {
        size_t at = (size_t)(-i - 1);
        if (v->n == v->cap) {
            v->cap = v->cap ? v->cap * 2 : 8;
            v->entries = realloc(v->entries, v->cap * sizeof *v->entries);
            if (!v->entries) abort();
        }
        memmove(&v->entries[at + 1], &v->entries[at], (v->n - at) * sizeof *v->entries);
        v->n++;
        e = &v->entries[at];
        memset(e, 0, sizeof *e);
        e->key = sharp_strdup(key);
    }
    e->raw = sharp_strdup(raw);
    sharp_runtime_entry_parse(e);
}

bool sharp_runtime_values_remove(sharp_runtime_values_t *v, const char *key)
{
    long i = values_search(v, key);
    if (i < 0) return false;
    entry_free(&v->entries[i]);
    memmove(&v->entries[i], &v->entries[i + 1], (v->n - (size_t)i - 1) * sizeof *v->entries);
    v->n--;
    return true;
}

void sharp_runtime_values_free(sharp_runtime_values_t *v)
{
    for (uint32_t i = 0; i < v->n; i++)
        entry_free(&v->entries[i]);
    free(v->entries);
    memset(v, 0, sizeof *v);
}

static void values_copy(sharp_runtime_values_t *dst, const sharp_runtime_values_t *src)
{
    dst->n = dst->cap = src->n;
    dst->entries = sharp_calloc(src->n ? src->n : 1, sizeof *dst->entries);
    for (uint32_t i = 0; i < src->n; i++)
        entry_copy(&dst->entries[i], &src->entries[i]);
}

/* ---- disk layers ------------------------------------------------------------ */

#define DISK_MAX_DEPTH 16            /* Envoy's MaxWalkDepth */
#define DISK_MAX_FILE (16u << 20)    /* a runtime value is a few bytes */

/* A file's value as Envoy's DiskLayer reads it: lines starting with '#'
 * are comments, empty lines vanish, the last line loses trailing blanks. */
static char *disk_value(const char *text, size_t len)
{
    /* the lines, without empty ones (StringUtil::splitToken) */
    sharp_str_t lines[64], *ls = lines;
    size_t nl = 0, cap = SHARP_ARRAY_SIZE(lines);
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        if (j > i) {
            if (nl == cap) {
                cap *= 2;
                sharp_str_t *nls = sharp_calloc(cap, sizeof *nls);
                memcpy(nls, ls, nl * sizeof *nls);
                if (ls != lines) free(ls);
                ls = nls;
            }
            ls[nl++] = (sharp_str_t){text + i, j - i};
        }
        i = j + 1;
    }
    char *out = sharp_calloc(len + 1, 1);
    size_t o = 0;
    for (size_t k = 0; k < nl; k++) {
        sharp_str_t line = ls[k];
        if (line.p[0] == '#') continue;
        /* Envoy compares by content with the last line */
        sharp_str_t last = ls[nl - 1];
        if (line.len == last.len && memcmp(line.p, last.p, line.len) == 0) {
            size_t n = line.len;
            while (n && isspace((unsigned char)line.p[n - 1]))
                n--;
            memcpy(out + o, line.p, n);
            o += n;
        } else {
            memcpy(out + o, line.p, line.len);
            o += line.len;
            out[o++] = '\n';
        }
    }
    out[o] = '\0';
    if (ls != lines) free(ls);
    return out;
}

static int disk_walk(const char *path, const char *prefix, unsigned depth, sharp_runtime_values_t *v, char *err,
                     size_t errlen)
{
    if (depth > DISK_MAX_DEPTH) {
        snprintf(err, errlen, "Walk recursion depth exceeded %u", DISK_MAX_DEPTH);
        return -1;
    }
    /* Envoy's illegalPath: nothing under /dev, /sys or /proc */
    char real[PATH_MAX];
    if (!realpath(path, real) || strncmp(real, "/dev", 4) == 0 || strncmp(real, "/sys", 4) == 0 ||
        strncmp(real, "/proc", 5) == 0) {
        snprintf(err, errlen, "Invalid path: %s", path);
        return -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        snprintf(err, errlen, "unable to open directory %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char full[PATH_MAX], key[PATH_MAX];
        if (snprintf(full, sizeof full, "%s/%s", path, de->d_name) >= (int)sizeof full ||
            snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", de->d_name) >= (int)sizeof key) {
            snprintf(err, errlen, "path too long under %s", path);
            rc = -1;
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            rc = disk_walk(full, key, depth + 1, v, err, errlen);
        } else if (S_ISREG(st.st_mode)) {
            if ((uint64_t)st.st_size > DISK_MAX_FILE) {
                snprintf(err, errlen, "%s: file larger than %u bytes", full, DISK_MAX_FILE);
                rc = -1;
                break;
            }
            FILE *f = fopen(full, "rb");
            if (!f) {
                snprintf(err, errlen, "unable to read %s: %s", full, strerror(errno));
                rc = -1;
                break;
            }
            char *text = sharp_calloc((size_t)st.st_size + 1, 1);
            size_t len = fread(text, 1, (size_t)st.st_size, f);
            fclose(f);
            char *val = disk_value(text, len);
            free(text);
            sharp_runtime_values_set(v, key, val);
            free(val);
        }
    }
    closedir(d);
    return rc;
}

/* ---- snapshots -------------------------------------------------------------- */

sharp_runtime_snapshot_t *sharp_runtime_snapshot_ref(sharp_runtime_snapshot_t *s)
{
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void sharp_runtime_snapshot_unref(sharp_runtime_snapshot_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (uint32_t i = 0; i < s->nlayers; i++) {
        free((char *)s->layers[i].name);
        sharp_runtime_values_free(&s->layers[i].values);
    }
    free(s->layers);
    free(s->merged);
    free(s);
}

const sharp_runtime_entry_t *sharp_runtime_snapshot_get(const sharp_runtime_snapshot_t *s, const char *key)
{
    if (!s || !key || !key[0]) return NULL;
    long lo = 0, hi = (long)s->nmerged - 1;
    while (lo <= hi) {
        long mid = (lo + hi) / 2;
        int c = strcmp(s->merged[mid]->key, key);
        if (c == 0) return s->merged[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

typedef struct {
    const sharp_runtime_entry_t *e;
    uint32_t layer;
} merge_item_t;

static int merge_cmp(const void *a, const void *b)
{
    const merge_item_t *x = a, *y = b;
    int c = strcmp(x->e->key, y->e->key);
    if (c) return c;
    return x->layer < y->layer ? -1 : x->layer > y->layer;
}

/* The final value of each key: the one of the last layer that has it. */
static void snapshot_merge(sharp_runtime_snapshot_t *s)
{
    size_t total = 0;
    for (uint32_t i = 0; i < s->nlayers; i++)
        total += s->layers[i].values.n;
    merge_item_t *items = sharp_calloc(total ? total : 1, sizeof *items);
    size_t k = 0;
    for (uint32_t i = 0; i < s->nlayers; i++)
        for (uint32_t j = 0; j < s->layers[i].values.n; j++)
            items[k++] = (merge_item_t){&s->layers[i].values.entries[j], i};
    qsort(items, total, sizeof *items, merge_cmp);
    s->merged = sharp_calloc(total ? total : 1, sizeof *s->merged);
    for (size_t i = 0; i < total; i++) {
        if (i + 1 < total && strcmp(items[i].e->key, items[i + 1].e->key) == 0) continue;
        s->merged[s->nmerged++] = items[i].e;
    }
    free(items);
}

/* Envoy's createNewSnapshot: every layer in order; a disk layer whose
 * directory does not exist is left out, one that fails to load too (and
 * counts a load error). */
static sharp_runtime_snapshot_t *build_snapshot(sharp_runtime_t *rt)
{
    sharp_runtime_snapshot_t *s = sharp_calloc(1, sizeof *s);
    s->refs = 1;
    s->layers = sharp_calloc(rt->nlayers ? rt->nlayers : 1, sizeof *s->layers);
    unsigned disk_layers = 0, error_layers = 0;
    for (uint32_t i = 0; i < rt->nlayers; i++) {
        const sharp_runtime_layer_config_t *l = &rt->layers[i];
        sharp_runtime_snapshot_layer_t *sl = &s->layers[s->nlayers];
        if (l->kind == SHARP_RUNTIME_LAYER_DISK) {
            struct stat st;
            if (stat(l->disk_path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
            char err[512] = "";
            if (disk_walk(l->disk_path, "", 1, &sl->values, err, sizeof err) < 0) {
                sharp_runtime_values_free(&sl->values);
                error_layers++;
                sharp_debug(runtime, "error loading runtime values for layer '%s' from disk: %s", l->name, err);
                continue;
            }
            disk_layers++;
        } else {
            values_copy(&sl->values, &l->values);
        }
        sl->name = sharp_strdup(l->name);
        s->nlayers++;
    }
    snapshot_merge(s);
    if (rt->stats) {
        sharp_stats_shard_t *sh = sharp_stats_shard(rt->stats, 0);
        sharp_gauge_set(rt->stats, rt->st.num_layers, s->nlayers);
        sharp_counter_inc(sh, error_layers ? rt->st.load_error : rt->st.load_success);
        /* Envoy counts an override directory when more than one disk layer
         * loaded (the primary and its override) */
        sharp_counter_inc(sh, disk_layers > 1 ? rt->st.override_dir_exists : rt->st.override_dir_not_exists);
        sharp_gauge_set(rt->stats, rt->st.num_keys, s->nmerged);
    }
    return s;
}

static void publish(sharp_runtime_t *rt)
{
    sharp_runtime_snapshot_t *s = build_snapshot(rt);
    sharp_runtime_snapshot_t *old = rt->current;
    rt->current = s;
    sharp_runtime_tls = s; /* the main thread reads the loader's snapshot */
    if (rt->on_update) rt->on_update(rt->on_update_arg, s);
    sharp_runtime_snapshot_unref(old);
}

/* ---- loader ----------------------------------------------------------------- */

typedef struct sharp_runtime_watch {
    uv_fs_event_t ev;
    sharp_runtime_t *rt; /* NULL once the loader is gone */
    char *base;          /* symlink_root's last component */
    struct sharp_runtime_watch *next;
} sharp_runtime_watch_t;

sharp_runtime_t *sharp_runtime_create(void)
{
    sharp_runtime_t *rt = sharp_calloc(1, sizeof *rt);
    rt->admin_layer = -1;
    return rt;
}

int sharp_runtime_add_layer(sharp_runtime_t *rt, const char *name, sharp_runtime_layer_kind_t kind, char *err,
                            size_t errlen)
{
    for (uint32_t i = 0; i < rt->nlayers; i++)
        if (strcmp(rt->layers[i].name, name) == 0) {
            snprintf(err, errlen, "Duplicate layer name: %s", name);
            return -1;
        }
    if (kind == SHARP_RUNTIME_LAYER_ADMIN && rt->admin_layer >= 0) {
        snprintf(err, errlen, "Too many admin layers specified in LayeredRuntime, at most one may be specified");
        return -1;
    }
    rt->layers = realloc(rt->layers, (rt->nlayers + 1) * sizeof *rt->layers);
    if (!rt->layers) abort();
    sharp_runtime_layer_config_t *l = &rt->layers[rt->nlayers];
    memset(l, 0, sizeof *l);
    l->name = sharp_strdup(name);
    l->kind = kind;
    if (kind == SHARP_RUNTIME_LAYER_ADMIN) rt->admin_layer = (int)rt->nlayers;
    return (int)rt->nlayers++;
}

int sharp_runtime_set_disk(sharp_runtime_t *rt, int layer, const char *symlink_root, const char *subdirectory,
                           const char *service_cluster)
{
    sharp_runtime_layer_config_t *l = &rt->layers[layer];
    /* Envoy: symlink_root + "/" + subdirectory [+ "/" + service cluster] */
    size_t n = strlen(symlink_root) + strlen(subdirectory) + (service_cluster ? strlen(service_cluster) : 0) + 3;
    l->disk_path = sharp_calloc(n, 1);
    snprintf(l->disk_path, n, "%s/%s%s%s", symlink_root, subdirectory, service_cluster ? "/" : "",
             service_cluster ? service_cluster : "");
    l->symlink_root = sharp_strdup(symlink_root);
    return 0;
}

void sharp_runtime_stats_init(sharp_runtime_t *rt, sharp_stats_t *stats)
{
    rt->stats = stats;
    rt->st.load_success = sharp_stats_counter(stats, "runtime.load_success");
    rt->st.load_error = sharp_stats_counter(stats, "runtime.load_error");
    rt->st.override_dir_exists = sharp_stats_counter(stats, "runtime.override_dir_exists");
    rt->st.override_dir_not_exists = sharp_stats_counter(stats, "runtime.override_dir_not_exists");
    rt->st.num_keys = sharp_stats_gauge(stats, "runtime.num_keys");
    rt->st.num_layers = sharp_stats_gauge(stats, "runtime.num_layers");
    rt->st.admin_overrides_active = sharp_stats_gauge(stats, "runtime.admin_overrides_active");
}

void sharp_runtime_load(sharp_runtime_t *rt)
{
    publish(rt);
}

void sharp_runtime_set_layer_values(sharp_runtime_t *rt, int layer, sharp_runtime_values_t *values)
{
    sharp_runtime_values_t *v = &rt->layers[layer].values;
    sharp_runtime_values_free(v);
    *v = *values;
    memset(values, 0, sizeof *values);
    publish(rt);
}

int sharp_runtime_merge_admin(sharp_runtime_t *rt, const char *const *keys, const char *const *values, size_t n,
                              char *err, size_t errlen)
{
    if (rt->admin_layer < 0) {
        snprintf(err, errlen, "No admin layer specified");
        return -1;
    }
    sharp_runtime_values_t *v = &rt->layers[rt->admin_layer].values;
    for (size_t i = 0; i < n; i++) {
        if (values[i][0]) sharp_runtime_values_set(v, keys[i], values[i]);
        else sharp_runtime_values_remove(v, keys[i]);
    }
    if (rt->stats) sharp_gauge_set(rt->stats, rt->st.admin_overrides_active, v->n ? 1 : 0);
    publish(rt);
    return 0;
}

static void on_watch(uv_fs_event_t *h, const char *filename, int events, int status)
{
    sharp_runtime_watch_t *w = h->data;
    if (status < 0 || !w->rt || !filename || strcmp(filename, w->base) != 0) return;
    /* Envoy reloads when the symlink is moved into place (an atomic swap);
     * a rename event of the name covers that move */
    if (!(events & UV_RENAME)) return;
    sharp_debug(runtime, "runtime symlink root '%s' changed: reloading", w->base);
    publish(w->rt);
}

int sharp_runtime_watch(sharp_runtime_t *rt, void *uv_loop)
{
    for (uint32_t i = 0; i < rt->nlayers; i++) {
        const sharp_runtime_layer_config_t *l = &rt->layers[i];
        if (l->kind != SHARP_RUNTIME_LAYER_DISK) continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", l->symlink_root);
        size_t n = strlen(dir);
        while (n > 1 && dir[n - 1] == '/')
            dir[--n] = '\0';
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        sharp_runtime_watch_t *w = sharp_calloc(1, sizeof *w);
        w->rt = rt;
        w->base = sharp_strdup(base);
        if (slash == dir) dir[1] = '\0';
        else if (slash) *slash = '\0';
        else snprintf(dir, sizeof dir, ".");
        uv_fs_event_init(uv_loop, &w->ev);
        w->ev.data = w;
        int rc = uv_fs_event_start(&w->ev, on_watch, dir, 0);
        uv_unref((uv_handle_t *)&w->ev); /* never what keeps the loop running */
        w->next = rt->watches;
        rt->watches = w;
        if (rc < 0) {
            sharp_log_warn("runtime layer '%s': cannot watch %s for symlink swaps: %s", l->name, dir, uv_strerror(rc));
            return -1;
        }
    }
    return 0;
}

static void on_watch_closed(uv_handle_t *h)
{
    sharp_runtime_watch_t *w = h->data;
    free(w->base);
    free(w);
}

void sharp_runtime_free(sharp_runtime_t *rt)
{
    if (!rt) return;
    for (sharp_runtime_watch_t *w = rt->watches, *next; w; w = next) {
        next = w->next;
        w->rt = NULL;
        uv_close((uv_handle_t *)&w->ev, on_watch_closed);
    }
    for (uint32_t i = 0; i < rt->nlayers; i++) {
        free(rt->layers[i].name);
        free(rt->layers[i].disk_path);
        free(rt->layers[i].symlink_root);
        sharp_runtime_values_free(&rt->layers[i].values);
    }
    free(rt->layers);
    if (sharp_runtime_tls == rt->current) sharp_runtime_tls = NULL;
    sharp_runtime_snapshot_unref(rt->current);
    free(rt);
}

/* ---- lookups ------------------------------------------------------------------ */

const sharp_runtime_entry_t *sharp_runtime_get(const char *key)
{
    return sharp_runtime_snapshot_get(sharp_runtime_tls, key);
}

uint64_t sharp_runtime_get_u64(const char *key, uint64_t default_value)
{
    const sharp_runtime_entry_t *e = sharp_runtime_get(key);
    return e && e->has_uint ? e->uint_value : default_value;
}

double sharp_runtime_get_double(const char *key, double default_value)
{
    const sharp_runtime_entry_t *e = sharp_runtime_get(key);
    return e && e->has_double ? e->double_value : default_value;
}

bool sharp_runtime_get_bool(const char *key, bool default_value)
{
    const sharp_runtime_entry_t *e = sharp_runtime_get(key);
    return e && e->has_bool ? e->bool_value : default_value;
}

bool sharp_runtime_fraction_enabled(const char *key, uint32_t default_numerator, uint32_t default_denominator,
                                    uint64_t random)
{
    uint64_t num = default_numerator, den = default_denominator;
    const sharp_runtime_entry_t *e = sharp_runtime_get(key);
    if (e && e->has_fractional) {
        num = e->numerator;
        den = e->denominator;
    } else if (e && e->has_uint) {
        /* a whole number is a percentage; above 100 always */
        if (e->uint_value > 100) return true;
        num = e->uint_value;
        den = 100;
    }
    /* ProtobufPercentHelper::evaluateFractionalPercent */
    return den && random % den < num;
}

bool sharp_runtime_percent_enabled(const char *key, uint64_t default_percent, uint64_t random)
{
    uint64_t v = sharp_runtime_get_u64(key, default_percent);
    return random % 100 < (v < 100 ? v : 100);
}
