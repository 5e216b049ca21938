/* zone_lb.c: see zone_lb.h. The arithmetic is Envoy's, in the same
 * integer units (shares in 1/10000), so a configuration splits traffic as
 * it does under Envoy. */
#include "upstream/zone_lb.h"
#include "common.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    char *region, *zone, *sub_zone;
} locality_t;

/* Localities are few (a handful of zones) and never freed: an id stays
 * valid for the process's life. */
static struct {
    pthread_mutex_t mu;
    locality_t *v;
    uint32_t n, cap;
} table = {.mu = PTHREAD_MUTEX_INITIALIZER};

uint32_t sharp_locality_intern(const char *region, const char *zone, const char *sub_zone)
{
    region = region ? region : "";
    zone = zone ? zone : "";
    sub_zone = sub_zone ? sub_zone : "";
    if (!region[0] && !zone[0] && !sub_zone[0]) return 0;
    pthread_mutex_lock(&table.mu);
    uint32_t id = 0;
    for (uint32_t i = 0; i < table.n && !id; i++)
        if (!strcmp(table.v[i].region, region) && !strcmp(table.v[i].zone, zone) &&
            !strcmp(table.v[i].sub_zone, sub_zone))
            id = i + 1;
    if (!id) {
        if (table.n == table.cap) {
            table.cap = table.cap ? table.cap * 2 : 16;
            table.v = sharp_realloc(table.v, table.cap * sizeof *table.v);
        }
        table.v[table.n] = (locality_t){sharp_strdup(region), sharp_strdup(zone), sharp_strdup(sub_zone)};
        id = ++table.n;
    }
    pthread_mutex_unlock(&table.mu);
    return id;
}

int sharp_locality_cmp(uint32_t a, uint32_t b)
{
    if (a == b) return 0;
    static const locality_t empty = {"", "", ""};
    pthread_mutex_lock(&table.mu);
    const locality_t *x = a ? &table.v[a - 1] : &empty, *y = b ? &table.v[b - 1] : &empty;
    int c = strcmp(x->region, y->region);
    if (!c) c = strcmp(x->zone, y->zone);
    if (!c) c = strcmp(x->sub_zone, y->sub_zone);
    pthread_mutex_unlock(&table.mu);
    return c;
}

void sharp_locality_get(uint32_t id, const char **region, const char **zone, const char **sub_zone)
{
    *region = *zone = *sub_zone = "";
    pthread_mutex_lock(&table.mu);
    if (id && id <= table.n) {
        *region = table.v[id - 1].region;
        *zone = table.v[id - 1].zone;
        *sub_zone = table.v[id - 1].sub_zone;
    }
    pthread_mutex_unlock(&table.mu);
}

uint64_t sharp_zone_percentage(uint64_t count, uint64_t total)
{
    return total > 0 ? 10000ull * count / total : 0;
}

void sharp_zone_plan(const sharp_zone_input_t *in, sharp_zone_plan_t *out, sharp_zone_exit_t *why)
{
    memset(out, 0, sizeof *out);
    *why = SHARP_ZONE_EXIT_NONE;
    uint32_t n = in->nloc < SHARP_ZONE_MAX_LOCALITIES ? in->nloc : SHARP_ZONE_MAX_LOCALITIES;
    out->nloc = n;
    /* earlyExitNonLocalityRouting */
    uint64_t up_total = 0;
    for (uint32_t i = 0; i < n; i++) up_total += in->up_healthy[i];
    if (n < 2 || (in->local_nloc < 2 && !in->force_direct)) {
        *why = SHARP_ZONE_EXIT_FEW_LOCALITIES;
        return;
    }
    /* the local cluster does not list this proxy's locality: it is not
     * configured the way locality routing assumes */
    if (!in->local_has_local) {
        *why = SHARP_ZONE_EXIT_LOCAL_NOT_OK;
        return;
    }
    if (up_total < in->min_cluster_size) {
        *why = SHARP_ZONE_EXIT_TOO_SMALL;
        return;
    }
    uint64_t local_pct[SHARP_ZONE_MAX_LOCALITIES], up_pct[SHARP_ZONE_MAX_LOCALITIES];
    for (uint32_t i = 0; i < n; i++) {
        /* a locality without healthy upstream hosts takes nothing, whatever
         * its local share */
        if (!in->up_healthy[i]) {
            local_pct[i] = up_pct[i] = 0;
            continue;
        }
        local_pct[i] = sharp_zone_percentage(in->local_healthy[i], in->local_healthy_total);
        up_pct[i] = sharp_zone_percentage(in->up_healthy[i], up_total);
    }
    if (in->up_has_local && ((up_pct[0] > 0 && up_pct[0] >= local_pct[0]) || in->force_direct)) {
        out->state = SHARP_ZONE_DIRECT;
        return;
    }
    out->state = SHARP_ZONE_RESIDUAL;
    /* e.g. 20% of the proxies but 10% of the upstream hosts here: half of
     * this proxy's requests can stay local */
    out->local_percent_to_route = in->up_has_local && local_pct[0] > 0 ? up_pct[0] * 10000 / local_pct[0] : 0;
    /* The rest goes to the localities with more upstream than local share,
     * in proportion to the difference; accumulated so a sample finds its
     * bucket by a scan. */
    for (uint32_t i = 0; i < n; i++) {
        uint64_t last = i > 0 ? out->residual[i - 1] : 0;
        if (i == 0 && in->up_has_local)
            out->residual[i] = last;
        else if (up_pct[i] > local_pct[i])
            out->residual[i] = last + up_pct[i] - local_pct[i];
        else
            out->residual[i] = last;
    }
}

uint32_t sharp_zone_pick(const sharp_zone_plan_t *p, uint64_t (*rnd)(void *), void *arg, sharp_zone_pick_t *what)
{
    if (p->state == SHARP_ZONE_DIRECT) {
        *what = SHARP_ZONE_PICK_DIRECT;
        return 0;
    }
    if (rnd(arg) % 10000 < p->local_percent_to_route) {
        *what = SHARP_ZONE_PICK_SAMPLED;
        return 0;
    }
    uint64_t cap = p->residual[p->nloc - 1];
    if (cap == 0) {
        /* rounding left no locality with spare capacity */
        *what = SHARP_ZONE_PICK_NO_CAPACITY;
        return (uint32_t)(rnd(arg) % p->nloc);
    }
    *what = SHARP_ZONE_PICK_CROSS;
    uint64_t threshold = rnd(arg) % cap;
    uint32_t i = 0;
    while (threshold >= p->residual[i]) i++;
    return i;
}

double sharp_locality_effective_weight(uint32_t weight, uint32_t healthy, uint32_t total)
{
    if (!total || !weight) return 0.0;
    double avail = 1.4 * (double)healthy / (double)total;
    return (double)weight * (avail < 1.0 ? avail : 1.0);
}

void sharp_edf_reset(uint32_t n, const double *w, double *deadline, double *now)
{
    *now = 0.0;
    for (uint32_t i = 0; i < n; i++) deadline[i] = w[i] > 0 ? 1.0 / w[i] : 0.0;
}

int sharp_edf_pick(uint32_t n, const double *w, double *deadline, double *now)
{
    int best = -1;
    for (uint32_t i = 0; i < n; i++)
        if (w[i] > 0 && (best < 0 || deadline[i] < deadline[best])) best = (int)i;
    if (best < 0) return -1;
    *now = deadline[best];
    deadline[best] = *now + 1.0 / w[best];
    return best;
}
