/* locality_md.c: see locality_md.h. */
#include "upstream/locality_md.h"
#include "upstream/host.h"
#include "http/metadata.h"
#include "retire.h"
#include "sbuf.h"

#include <stdlib.h>
#include <string.h>

static int ns_cmp(const void *a, const void *b)
{
    return strcmp(**(char *const *const *)a, **(char *const *const *)b);
}

sharp_locality_md_t *sharp_locality_md_new(sharp_dynamic_metadata_t *md)
{
    if (!md || !md->n) {
        sharp_dynamic_metadata_free(md);
        return NULL;
    }
    /* canonical text: namespaces sorted, each struct as JSON (sorted keys) */
    char ***order = sharp_calloc(md->n, sizeof *order);
    for (uint32_t i = 0; i < md->n; i++)
        order[i] = &md->ns[i];
    qsort(order, md->n, sizeof *order, ns_cmp);
    sharp_sbuf_t b = {0};
    for (uint32_t i = 0; i < md->n; i++) {
        uint32_t k = (uint32_t)(order[i] - md->ns);
        sharp_sbuf_puts(&b, md->ns[k]);
        sharp_sbuf_puts(&b, "=");
        sharp_md_value_json(&md->structs[k], &b);
        sharp_sbuf_puts(&b, ";");
    }
    free(order);
    sharp_locality_md_t *lm = sharp_calloc(1, sizeof *lm);
    atomic_init(&lm->refs, 1);
    lm->md = md;
    lm->canon = sharp_calloc(1, b.len + 1);
    memcpy(lm->canon, b.data, b.len);
    sharp_sbuf_free(&b);
    return lm;
}

sharp_locality_md_t *sharp_locality_md_ref(sharp_locality_md_t *lm)
{
    if (lm) atomic_fetch_add_explicit(&lm->refs, 1, memory_order_relaxed);
    return lm;
}

void sharp_locality_md_put(sharp_locality_md_t *lm)
{
    if (!lm || atomic_fetch_sub_explicit(&lm->refs, 1, memory_order_acq_rel) != 1) return;
    sharp_dynamic_metadata_free(lm->md);
    free(lm->canon);
    free(lm);
}

bool sharp_locality_md_equal(const sharp_locality_md_t *a, const sharp_locality_md_t *b)
{
    if (a == b) return true;
    return a && b && !strcmp(a->canon, b->canon);
}

sharp_locality_md_t *sharp_host_locality_md_get(const sharp_host_t *h)
{
    /* a replaced object's host reference is retired only once every worker
     * has come back to its loop, so the one loaded here lives until the
     * reference is taken */
    sharp_locality_md_t *lm =
        atomic_load_explicit(&((sharp_host_t *)h)->locality_md, memory_order_acquire);
    return sharp_locality_md_ref(lm);
}

static void retired(void *p)
{
    sharp_locality_md_put(p);
}

void sharp_host_locality_md_set(sharp_host_t *h, sharp_locality_md_t *lm)
{
    sharp_locality_md_t *old = atomic_load_explicit(&h->locality_md, memory_order_relaxed);
    if (sharp_locality_md_equal(old, lm)) return;
    sharp_locality_md_ref(lm);
    old = atomic_exchange_explicit(&h->locality_md, lm, memory_order_acq_rel);
    if (old) sharp_retire(old, retired);
}

void sharp_host_locality_md_destroy(sharp_host_t *h)
{
    sharp_locality_md_put(atomic_exchange_explicit(&h->locality_md, NULL, memory_order_relaxed));
}
