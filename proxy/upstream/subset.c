/* subset.c: see subset.h. */
#include "upstream/subset.h"
#include "upstream/cluster.h"
#include "http/metadata.h"

#include "google/protobuf/struct.pb-c.h"

/* ---- the canonical form ---- */

enum {
    TAG_UNSET = 'u',
    TAG_NULL = 'n',
    TAG_NUMBER = 'd',
    TAG_STRING = 's',
    TAG_BOOL = 'b',
    TAG_STRUCT = 'o',
    TAG_LIST = 'l'
};

static void put_u32(sharp_sbuf_t *b, uint32_t v)
{
    sharp_sbuf_append(b, (const char *)&v, sizeof v);
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static void put_number(sharp_sbuf_t *b, double d)
{
    if (d == 0) d = 0; /* -0 equals 0, as MessageDifferencer compares doubles */
    char t = TAG_NUMBER;
    sharp_sbuf_append(b, &t, 1);
    sharp_sbuf_append(b, (const char *)&d, sizeof d);
}

static void put_string(sharp_sbuf_t *b, char tag, const char *s, size_t n)
{
    sharp_sbuf_append(b, &tag, 1);
    put_u32(b, (uint32_t)n);
    sharp_sbuf_append(b, s, n);
}

/* bytewise, a shorter prefix first: std::string's order */
static int key_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* Indices of keys[0..n) in key order (a key given twice: the later one
 * only, protobuf's map parse keeps the last). Returns the count kept. */
static uint32_t sorted_keys(const char *const *keys, const size_t *lens, uint32_t n, uint32_t *idx)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t at = m;
        bool dup = false;
        for (uint32_t k = 0; k < m; k++) {
            int c = key_cmp(keys[i], lens[i], keys[idx[k]], lens[idx[k]]);
            if (c == 0) {
                idx[k] = i;
                dup = true;
                break;
            }
            if (c < 0) {
                at = k;
                break;
            }
        }
        if (dup) continue;
        memmove(&idx[at + 1], &idx[at], (m - at) * sizeof *idx);
        idx[at] = i;
        m++;
    }
    return m;
}

static void pb_value(sharp_sbuf_t *b, const Google__Protobuf__Value *v);

static void pb_struct(sharp_sbuf_t *b, const Google__Protobuf__Struct *st, bool top)
{
    uint32_t n = st ? (uint32_t)st->n_fields : 0;
    const char **keys = sharp_calloc(n ? n : 1, sizeof *keys);
    size_t *lens = sharp_calloc(n ? n : 1, sizeof *lens);
    uint32_t *idx = sharp_calloc(n ? n : 1, sizeof *idx);
    for (uint32_t i = 0; i < n; i++) {
        keys[i] = st->fields[i]->key ? st->fields[i]->key : "";
        lens[i] = strlen(keys[i]);
    }
    uint32_t m = sorted_keys(keys, lens, n, idx);
    if (!top) {
        char t = TAG_STRUCT;
        sharp_sbuf_append(b, &t, 1);
        put_u32(b, m);
    }
    for (uint32_t k = 0; k < m; k++) {
        put_u32(b, (uint32_t)lens[idx[k]]);
        sharp_sbuf_append(b, keys[idx[k]], lens[idx[k]]);
        if (top) {
            /* a top-level value carries its length, so that a lookup can
             * skip it */
            size_t at = b->len;
            put_u32(b, 0);
            pb_value(b, st->fields[idx[k]]->value);
            uint32_t vl = (uint32_t)(b->len - at - 4);
            memcpy(b->data + at, &vl, 4);
        } else {
            pb_value(b, st->fields[idx[k]]->value);
        }
    }
    free(keys);
    free(lens);
    free(idx);
}

static void pb_value(sharp_sbuf_t *b, const Google__Protobuf__Value *v)
{
    char t;
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        t = TAG_NULL;
        sharp_sbuf_append(b, &t, 1);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        put_number(b, v->number_value);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        put_string(b, TAG_STRING, v->string_value, strlen(v->string_value));
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        t = TAG_BOOL;
        sharp_sbuf_append(b, &t, 1);
        t = v->bool_value ? 1 : 0;
        sharp_sbuf_append(b, &t, 1);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        pb_struct(b, v->struct_value, false);
        break;
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        uint32_t n = v->list_value ? (uint32_t)v->list_value->n_values : 0;
        t = TAG_LIST;
        sharp_sbuf_append(b, &t, 1);
        put_u32(b, n);
        for (uint32_t i = 0; i < n; i++)
            pb_value(b, v->list_value->values[i]);
        break;
    }
    default:
        t = TAG_UNSET;
        sharp_sbuf_append(b, &t, 1);
        break;
    }
}

static sharp_lbmeta_t *from_sbuf(const sharp_sbuf_t *b)
{
    if (!b->len) return NULL;
    sharp_lbmeta_t *m = sharp_calloc(1, sizeof *m + b->len);
    m->len = (uint32_t)b->len;
    memcpy(m->b, b->data, b->len);
    return m;
}

sharp_lbmeta_t *sharp_lbmeta_from_struct(const struct Google__Protobuf__Struct *st)
{
    sharp_sbuf_t b = {0};
    pb_struct(&b, st, true);
    sharp_lbmeta_t *m = from_sbuf(&b);
    sharp_sbuf_free(&b);
    return m;
}

sharp_lbmeta_t *sharp_lbmeta_dup(const sharp_lbmeta_t *m)
{
    if (!m) return NULL;
    sharp_lbmeta_t *d = sharp_calloc(1, sizeof *d + m->len);
    memcpy(d, m, sizeof *d + m->len);
    return d;
}

bool sharp_lbmeta_equal(const sharp_lbmeta_t *a, const sharp_lbmeta_t *b)
{
    uint32_t al = a ? a->len : 0, bl = b ? b->len : 0;
    return al == bl && (!al || !memcmp(a->b, b->b, al));
}

/* One field of a canonical struct. */
typedef struct {
    const char *key;
    uint32_t klen;
    const uint8_t *val; /* the value's length word, then the value */
    uint32_t vlen;
} field_t;

/* Reads the field at *pos; false at the end. */
static bool next_field(const uint8_t *b, size_t len, size_t *pos, field_t *f)
{
    if (*pos + 4 > len) return false;
    f->klen = get_u32(b + *pos);
    f->key = (const char *)b + *pos + 4;
    size_t at = *pos + 4 + f->klen;
    f->vlen = get_u32(b + at);
    f->val = b + at;
    *pos = at + 4 + f->vlen;
    return true;
}

static void put_field(sharp_sbuf_t *out, const field_t *f)
{
    put_u32(out, f->klen);
    sharp_sbuf_append(out, f->key, f->klen);
    sharp_sbuf_append(out, (const char *)f->val, 4 + f->vlen);
}

/* The fields of a[0..al) with those of o[0..ol) over them, appended to out. */
static void merge_bytes(const uint8_t *a, size_t al, const uint8_t *o, size_t ol, sharp_sbuf_t *out)
{
    size_t ap = 0, op = 0;
    field_t fa = {0}, fo = {0};
    bool ha = next_field(a, al, &ap, &fa), ho = next_field(o, ol, &op, &fo);
    while (ha || ho) {
        int c = !ha ? 1 : !ho ? -1 : key_cmp(fa.key, fa.klen, fo.key, fo.klen);
        if (c < 0) {
            put_field(out, &fa);
            ha = next_field(a, al, &ap, &fa);
        } else {
            put_field(out, &fo);
            if (c == 0) ha = next_field(a, al, &ap, &fa);
            ho = next_field(o, ol, &op, &fo);
        }
    }
}

/* The size of the canonical value at p (never past end; 0 when it is not
 * well formed, which values made here always are). */
static size_t value_size(const uint8_t *p, const uint8_t *end)
{
    if (p >= end) return 0;
    size_t n, at;
    switch (*p) {
    case TAG_UNSET:
    case TAG_NULL:
        return 1;
    case TAG_BOOL:
        return end - p >= 2 ? 2 : 0;
    case TAG_NUMBER:
        return end - p >= 9 ? 9 : 0;
    case TAG_STRING:
        if (end - p < 5) return 0;
        n = get_u32(p + 1);
        return (size_t)(end - p) >= 5 + n ? 5 + n : 0;
    case TAG_STRUCT:
    case TAG_LIST:
        if (end - p < 5) return 0;
        n = get_u32(p + 1);
        at = 5;
        for (size_t i = 0; i < n; i++) {
            if (*p == TAG_STRUCT) {
                if ((size_t)(end - p) < at + 4) return 0;
                size_t kl = get_u32(p + at);
                if ((size_t)(end - p) < at + 4 + kl) return 0;
                at += 4 + kl;
            }
            size_t vs = value_size(p + at, end);
            if (!vs) return 0;
            at += vs;
        }
        return at;
    default:
        return 0;
    }
}

sharp_lbmeta_t *sharp_lbmeta_merge(const sharp_lbmeta_t *base, const sharp_lbmeta_t *over)
{
    sharp_sbuf_t out = {0};
    const uint8_t *a = base ? base->b : NULL, *o = over ? over->b : NULL;
    size_t al = base ? base->len : 0, ol = over ? over->len : 0, ap = 0, op = 0;
    field_t fa = {0}, fo = {0};
    bool ha = next_field(a, al, &ap, &fa), ho = next_field(o, ol, &op, &fo);
    while (ha || ho) {
        int c = !ha ? 1 : !ho ? -1 : key_cmp(fa.key, fa.klen, fo.key, fo.klen);
        if (c < 0) {
            put_field(&out, &fa);
            ha = next_field(a, al, &ap, &fa);
        } else {
            put_field(&out, &fo);
            if (c == 0) ha = next_field(a, al, &ap, &fa);
            ho = next_field(o, ol, &op, &fo);
        }
    }
    sharp_lbmeta_t *m = from_sbuf(&out);
    sharp_sbuf_free(&out);
    return m;
}

static void md_value(sharp_sbuf_t *b, const sharp_md_value_t *v);

static void md_struct_fields(sharp_sbuf_t *b, const sharp_md_value_t *st, bool top)
{
    uint32_t n = st->n;
    size_t lens_s[16];
    uint32_t idx_s[16];
    size_t *lens = n <= 16 ? lens_s : sharp_calloc(n, sizeof *lens);
    uint32_t *idx = n <= 16 ? idx_s : sharp_calloc(n, sizeof *idx);
    for (uint32_t i = 0; i < n; i++)
        lens[i] = strlen(st->keys[i]);
    uint32_t m = sorted_keys((const char *const *)st->keys, lens, n, idx);
    if (!top) {
        char t = TAG_STRUCT;
        sharp_sbuf_append(b, &t, 1);
        put_u32(b, m);
    }
    for (uint32_t k = 0; k < m; k++) {
        put_u32(b, (uint32_t)lens[idx[k]]);
        sharp_sbuf_append(b, st->keys[idx[k]], lens[idx[k]]);
        if (top) {
            size_t at = b->len;
            put_u32(b, 0);
            md_value(b, &st->items[idx[k]]);
            uint32_t vl = (uint32_t)(b->len - at - 4);
            memcpy(b->data + at, &vl, 4);
        } else {
            md_value(b, &st->items[idx[k]]);
        }
    }
    if (lens != lens_s) free(lens);
    if (idx != idx_s) free(idx);
}

static void md_value(sharp_sbuf_t *b, const sharp_md_value_t *v)
{
    char t;
    switch (v->kind) {
    case SHARP_MD_NULL:
        t = TAG_NULL;
        sharp_sbuf_append(b, &t, 1);
        break;
    case SHARP_MD_NUMBER:
        put_number(b, v->number);
        break;
    case SHARP_MD_STRING:
        put_string(b, TAG_STRING, v->s, v->len);
        break;
    case SHARP_MD_BOOL:
        t = TAG_BOOL;
        sharp_sbuf_append(b, &t, 1);
        t = v->b ? 1 : 0;
        sharp_sbuf_append(b, &t, 1);
        break;
    case SHARP_MD_STRUCT:
        md_struct_fields(b, v, false);
        break;
    case SHARP_MD_LIST:
        t = TAG_LIST;
        sharp_sbuf_append(b, &t, 1);
        put_u32(b, v->n);
        for (uint32_t i = 0; i < v->n; i++)
            md_value(b, &v->items[i]);
        break;
    default:
        t = TAG_UNSET;
        sharp_sbuf_append(b, &t, 1);
        break;
    }
}

void sharp_lbmeta_merge_dynamic(const sharp_lbmeta_t *base, const struct sharp_md_value *dyn,
                                sharp_sbuf_t *out)
{
    /* the dynamic fields in canonical form first, then the merge appended
     * behind them and moved to the front: one buffer, which the caller
     * reuses. out->data moves as it grows, so the dynamic fields are read
     * again by offset at every step. */
    sharp_sbuf_reset(out);
    if (dyn && dyn->kind == SHARP_MD_STRUCT) md_struct_fields(out, dyn, true);
    size_t dl = out->len, dcur = 0;
    const uint8_t *a = base ? base->b : NULL;
    size_t al = base ? base->len : 0, ap = 0;
    field_t fa = {0}, fd = {0};
    bool ha = next_field(a, al, &ap, &fa);
    for (;;) {
        size_t dnext = dcur;
        bool hd = next_field((const uint8_t *)out->data, dl, &dnext, &fd);
        if (!ha && !hd) break;
        int c = !ha ? 1 : !hd ? -1 : key_cmp(fa.key, fa.klen, fd.key, fd.klen);
        if (c < 0) {
            put_field(out, &fa);
            ha = next_field(a, al, &ap, &fa);
            continue;
        }
        size_t koff = (size_t)((const uint8_t *)fd.key - (const uint8_t *)out->data);
        size_t voff = (size_t)(fd.val - (const uint8_t *)out->data);
        uint32_t klen = fd.klen, vlen = fd.vlen;
        put_u32(out, klen);
        sharp_sbuf_append(out, out->data + koff, klen);
        sharp_sbuf_append(out, out->data + voff, 4 + vlen);
        dcur = dnext;
        if (c == 0) ha = next_field(a, al, &ap, &fa);
    }
    if (out->len > dl) memmove(out->data, out->data + dl, out->len - dl); /* data is NULL when nothing was added */
    out->len -= dl;
}

/* ---- configuration ---- */

/* Whether node n's keys are selector s's first `depth` keys. */
static bool node_is(const sharp_subset_config_t *cfg, const sharp_subset_fbnode_t *n, uint32_t s,
                    uint32_t depth)
{
    if (n->depth != depth) return false;
    for (uint32_t k = 0; k < depth; k++)
        if (strcmp(cfg->selectors[n->sel].keys[k], cfg->selectors[s].keys[k])) return false;
    return true;
}

static size_t *lengths(char *const *s, uint32_t n)
{
    size_t *l = sharp_calloc(n ? n : 1, sizeof *l);
    for (uint32_t i = 0; i < n; i++)
        l[i] = strlen(s[i]);
    return l;
}

void sharp_subset_config_finish(sharp_subset_config_t *cfg)
{
    for (uint32_t s = 0; s < cfg->nselectors; s++) {
        sharp_subset_selector_t *sel = &cfg->selectors[s];
        free(sel->key_lens);
        free(sel->fallback_key_lens);
        sel->key_lens = lengths(sel->keys, sel->nkeys);
        sel->fallback_key_lens = lengths(sel->fallback_keys, sel->nfallback_keys);
    }
    uint32_t cap = 0;
    for (uint32_t s = 0; s < cfg->nselectors; s++)
        cap += cfg->selectors[s].nkeys;
    cfg->nodes = sharp_calloc(cap ? cap : 1, sizeof *cfg->nodes);
    for (uint32_t s = 0; s < cfg->nselectors; s++) {
        const sharp_subset_selector_t *sel = &cfg->selectors[s];
        if (sel->fallback == SHARP_SELECTOR_DEFAULT_SUBSET) cfg->any_selector_default = true;
        for (uint32_t d = 1; d <= sel->nkeys; d++) {
            bool found = false;
            for (uint32_t i = 0; i < cfg->nnodes && !found; i++)
                found = node_is(cfg, &cfg->nodes[i], s, d);
            if (found) continue;
            sharp_subset_fbnode_t *n = &cfg->nodes[cfg->nnodes++];
            n->sel = s;
            n->depth = d;
            if (d == sel->nkeys) {
                n->fallback = sel->fallback;
                n->params = s;
            }
        }
    }
    /* a node without a policy decides as no node does: the cluster's */
    free(cfg->fb_nodes);
    cfg->fb_nodes = sharp_calloc(cfg->nnodes ? cfg->nnodes : 1, sizeof *cfg->fb_nodes);
    cfg->nfb_nodes = 0;
    for (uint32_t i = 0; i < cfg->nnodes; i++)
        if (cfg->nodes[i].fallback != SHARP_SELECTOR_NOT_DEFINED) cfg->fb_nodes[cfg->nfb_nodes++] = i;
}

void sharp_subset_config_free(sharp_subset_config_t *cfg)
{
    if (!cfg) return;
    for (uint32_t i = 0; i < cfg->nselectors; i++) {
        for (uint32_t k = 0; k < cfg->selectors[i].nkeys; k++)
            free(cfg->selectors[i].keys[k]);
        free(cfg->selectors[i].keys);
        for (uint32_t k = 0; k < cfg->selectors[i].nfallback_keys; k++)
            free(cfg->selectors[i].fallback_keys[k]);
        free(cfg->selectors[i].fallback_keys);
        free(cfg->selectors[i].key_lens);
        free(cfg->selectors[i].fallback_key_lens);
    }
    free(cfg->nodes);
    free(cfg->fb_nodes);
    free(cfg->selectors);
    free(cfg->default_subset);
    free(cfg);
}

/* ---- the plan ---- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* The value of key in a host's metadata (its length word first), or NULL. */
static bool meta_get(const sharp_lbmeta_t *m, const char *key, size_t klen, field_t *out)
{
    if (!m) return false;
    size_t pos = 0;
    field_t f;
    while (next_field(m->b, m->len, &pos, &f)) {
        int c = key_cmp(f.key, f.klen, key, klen);
        if (c == 0) {
            *out = f;
            return true;
        }
        if (c > 0) break;
    }
    return false;
}

static size_t value_size(const uint8_t *p, const uint8_t *end);

/* Envoy's metadataLabelMatch: every pair of `want` is in the host's
 * metadata with an equal value (with list_as_any, a list value of the
 * host's matches when one of its elements is equal). */
static bool host_matches(const sharp_lbmeta_t *want, const sharp_lbmeta_t *have, bool list_as_any)
{
    if (!want) return true;
    size_t pos = 0;
    field_t w = {0}, h = {0};
    while (next_field(want->b, want->len, &pos, &w)) {
        if (!meta_get(have, w.key, w.klen, &h)) return false;
        const uint8_t *v = h.val + 4, *end = v + h.vlen;
        if (list_as_any && h.vlen >= 5 && *v == TAG_LIST) {
            uint32_t ne = get_u32(v + 1);
            bool any = false;
            const uint8_t *e = v + 5;
            for (uint32_t i = 0; i < ne && !any; i++) {
                size_t es = value_size(e, end);
                if (!es) break;
                any = es == w.vlen && !memcmp(e, w.val + 4, es);
                e += es;
            }
            if (!any) return false;
            continue;
        }
        if (h.vlen != w.vlen || memcmp(h.val, w.val, 4 + w.vlen)) return false;
    }
    return true;
}

int32_t sharp_subset_plan_find(const sharp_subset_plan_t *p, const uint8_t *crit, size_t len)
{
    if (!p || !p->cap) return -1;
    uint64_t h = hash_bytes(crit, len);
    for (uint32_t k = (uint32_t)h & (p->cap - 1);; k = (k + 1) & (p->cap - 1)) {
        uint32_t e = p->table[k];
        if (!e) return -1;
        const sharp_subset_entry_t *en = &p->entries[e - 1];
        if (en->hash == h && en->keylen == len && !memcmp(en->key, crit, len))
            return (int32_t)(e - 1);
    }
}

static void plan_index(sharp_subset_plan_t *p)
{
    p->cap = 16;
    while (p->cap < 2 * p->n)
        p->cap <<= 1;
    p->table = sharp_calloc(p->cap, sizeof *p->table);
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t k = (uint32_t)p->entries[i].hash & (p->cap - 1);
        while (p->table[k])
            k = (k + 1) & (p->cap - 1);
        p->table[k] = i + 1;
    }
}

/* The key of host h's subset for selector sel into key; false when the
 * host lacks one of the selector's keys. */
/* Appends a [u32 length][key] record of rec[0..rl) plus the field
 * (key, value v of vl bytes) to out. */
static void put_record(sharp_sbuf_t *out, const uint8_t *rec, uint32_t rl, const field_t *f,
                       const uint8_t *v, uint32_t vl)
{
    put_u32(out, rl + 8 + f->klen + vl);
    sharp_sbuf_append(out, (const char *)rec, rl);
    put_u32(out, f->klen);
    sharp_sbuf_append(out, f->key, f->klen);
    put_u32(out, vl);
    sharp_sbuf_append(out, (const char *)v, vl);
}

/* Envoy's extractSubsetMetadata: the keys of host h's subsets for selector
 * sel into `keys` as [u32 length][key] records, returning how many: none
 * when the host lacks one of the keys, one, or with list_as_any one per
 * combination of the list values' elements (an empty list drops what came
 * before it, as Envoy's loop does). At most SHARP_SUBSET_MAX_COMBINATIONS,
 * which the loader checks endpoints against. */
static uint32_t host_keys(const sharp_host_t *h, const sharp_subset_selector_t *sel,
                          bool list_as_any, sharp_sbuf_t *keys, sharp_sbuf_t *tmp)
{
    sharp_sbuf_reset(keys);
    uint32_t n = 0;
    for (uint32_t k = 0; k < sel->nkeys; k++) {
        field_t f;
        if (!meta_get(h->lb_meta, sel->keys[k], strlen(sel->keys[k]), &f)) return 0;
        const uint8_t *v = f.val + 4, *end = v + f.vlen;
        bool list = list_as_any && f.vlen >= 5 && *v == TAG_LIST;
        uint32_t ne = list ? get_u32(v + 1) : 1;
        sharp_sbuf_reset(tmp);
        uint32_t m = 0;
        size_t pos = 0;
        for (uint32_t r = 0; r < (n ? n : 1); r++) {
            const uint8_t *rec = (const uint8_t *)keys->data + pos + 4;
            uint32_t rl = n ? get_u32((const uint8_t *)keys->data + pos) : 0;
            if (n) pos += 4 + rl;
            const uint8_t *e = list ? v + 5 : v;
            for (uint32_t i = 0; i < ne && m < SHARP_SUBSET_MAX_COMBINATIONS; i++) {
                uint32_t es = list ? (uint32_t)value_size(e, end) : f.vlen;
                if (!es) break;
                put_record(tmp, rec, rl, &f, e, es);
                m++;
                e += es;
            }
        }
        sharp_sbuf_t t = *keys;
        *keys = *tmp;
        *tmp = t;
        n = m;
    }
    return n;
}

uint64_t sharp_subset_host_combinations(const sharp_subset_config_t *cfg,
                                        const sharp_lbmeta_t *meta)
{
    uint64_t most = 0;
    if (!cfg || !cfg->list_as_any || !meta) return meta ? 1 : 0;
    for (uint32_t s = 0; s < cfg->nselectors; s++) {
        uint64_t prod = 1;
        for (uint32_t k = 0; k < cfg->selectors[s].nkeys; k++) {
            field_t f;
            const char *key = cfg->selectors[s].keys[k];
            if (!meta_get(meta, key, strlen(key), &f)) {
                prod = 0;
                break;
            }
            const uint8_t *v = f.val + 4;
            if (f.vlen >= 5 && *v == TAG_LIST) {
                uint64_t ne = get_u32(v + 1);
                prod = ne ? (prod > UINT32_MAX ? prod : prod * ne) : 1; /* an empty list restarts */
            }
        }
        if (prod > most) most = prod;
    }
    return most;
}

/* Two passes over hosts x selectors: the first makes the entries and
 * counts their hosts, the second fills arrays of the right size (a cluster
 * of many hosts with a subset per host stays linear in memory). */
sharp_subset_plan_t *sharp_subset_plan_build(const sharp_subset_config_t *cfg,
                                             sharp_host_t *const *hosts, uint32_t n)
{
    sharp_subset_plan_t *p = sharp_calloc(1, sizeof *p);
    uint32_t cap = 0;
    sharp_sbuf_t keys = {0}, tmp = {0};
    sharp_host_t **last = NULL; /* per entry: the last host counted, so a host counts once */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < n; i++) {
            sharp_host_t *h = hosts[i];
            for (uint32_t s = 0; s < cfg->nselectors; s++) {
                uint32_t nk = host_keys(h, &cfg->selectors[s], cfg->list_as_any, &keys, &tmp);
                for (uint32_t r = 0, rpos = 0; r < nk; r++) {
                    sharp_str_t key = {keys.data + rpos + 4,
                                       get_u32((const uint8_t *)keys.data + rpos)};
                    rpos += 4 + (uint32_t)key.len;
                    int32_t e = sharp_subset_plan_find(p, (const uint8_t *)key.p, key.len);
                    if (e < 0) { /* first pass only */
                        if (p->n == cap) {
                            cap = cap ? 2 * cap : 8;
                            p->entries = sharp_realloc(p->entries, cap * sizeof *p->entries);
                            last = sharp_realloc(last, cap * sizeof *last);
                        }
                        sharp_subset_entry_t *en = &p->entries[p->n];
                        memset(en, 0, sizeof *en);
                        en->key = sharp_calloc(key.len ? key.len : 1, 1);
                        memcpy(en->key, key.p, key.len);
                        en->keylen = (uint32_t)key.len;
                        en->hash = hash_bytes(en->key, en->keylen);
                        en->single = cfg->selectors[s].single_host;
                        last[p->n] = NULL;
                        e = (int32_t)p->n++;
                        if (2 * p->n > p->cap) {
                            free(p->table);
                            plan_index(p);
                        } else {
                            uint32_t k = (uint32_t)en->hash & (p->cap - 1);
                            while (p->table[k])
                                k = (k + 1) & (p->cap - 1);
                            p->table[k] = p->n;
                        }
                    }
                    sharp_subset_entry_t *en = &p->entries[e];
                    /* two selectors with the same keys: the host once */
                    if (last[e] == h) continue;
                    last[e] = h;
                    if (pass == 0)
                        en->nhosts++;
                    else
                        en->hosts[en->nhosts++] = h;
                }
            }
        }
        if (pass == 0)
            for (uint32_t e = 0; e < p->n; e++) {
                p->entries[e].hosts =
                    sharp_calloc(p->entries[e].nhosts, sizeof *p->entries[e].hosts);
                p->entries[e].nhosts = 0;
                last[e] = NULL;
            }
    }
    free(last);
    sharp_sbuf_free(&keys);
    sharp_sbuf_free(&tmp);
    if (!p->cap) plan_index(p);
    /* Envoy's SingleHostLbSubset: per priority the first host, and of
     * those the lowest priority's; the others count as duplicates */
    for (uint32_t e = 0; e < p->n; e++) {
        sharp_subset_entry_t *en = &p->entries[e];
        if (!en->single || en->nhosts < 2) continue;
        uint32_t best = 0, nprio = 0;
        for (uint32_t i = 0; i < en->nhosts; i++) {
            bool first = true;
            for (uint32_t j = 0; j < i && first; j++)
                first = en->hosts[j]->priority != en->hosts[i]->priority;
            nprio += first;
            if (en->hosts[i]->priority < en->hosts[best]->priority) best = i;
        }
        p->single_duplicates += en->nhosts - nprio;
        en->hosts[0] = en->hosts[best];
        en->nhosts = 1;
    }
    if (cfg->fallback == SHARP_SUBSET_DEFAULT_SUBSET || cfg->any_selector_default) {
        p->has_default = true;
        p->dflt = sharp_calloc(n ? n : 1, sizeof *p->dflt);
        for (uint32_t i = 0; i < n; i++)
            if (host_matches(cfg->default_subset, hosts[i]->lb_meta, cfg->list_as_any))
                p->dflt[p->ndflt++] = hosts[i];
    }
    return p;
}

void sharp_subset_plan_free(sharp_subset_plan_t *p)
{
    if (!p) return;
    for (uint32_t i = 0; i < p->n; i++) {
        free(p->entries[i].key);
        free(p->entries[i].hosts);
    }
    free(p->entries);
    free(p->table);
    free(p->dflt);
    free(p);
}

void sharp_subset_plan_diff(const sharp_subset_plan_t *before, const sharp_subset_plan_t *now,
                            uint32_t *created, uint32_t *removed)
{
    *created = *removed = 0;
    for (uint32_t i = 0; now && i < now->n; i++)
        if (sharp_subset_plan_find(before, now->entries[i].key, now->entries[i].keylen) < 0)
            (*created)++;
    for (uint32_t i = 0; before && i < before->n; i++)
        if (sharp_subset_plan_find(now, before->entries[i].key, before->entries[i].keylen) < 0)
            (*removed)++;
}

/* ---- a worker's balancers ---- */

static void lb_like(sharp_lb_t *lb, const sharp_lb_t *tmpl, sharp_host_t *const *hosts, uint32_t n)
{
    sharp_lb_init(lb, tmpl->policy, hosts, n, tmpl->rng ^ (uintptr_t)lb);
    lb->choice_count = tmpl->choice_count;
    lb->panic_threshold = tmpl->panic_threshold;
    lb->active_request_bias = tmpl->active_request_bias;
    lb->stats = tmpl->stats;
    lb->st = tmpl->st;
    if (tmpl->zone) sharp_lb_set_zone(lb, tmpl->zone, tmpl->local_locality, tmpl->local_set);
}

void sharp_subset_lbs_init(sharp_subset_lbs_t *s, const sharp_subset_config_t *cfg,
                           const sharp_subset_plan_t *plan, const sharp_lb_t *tmpl)
{
    memset(s, 0, sizeof *s);
    if (!cfg || !plan) return;
    s->cfg = cfg;
    s->plan = plan;
    s->lbs = sharp_calloc(plan->n ? plan->n : 1, sizeof *s->lbs);
    for (uint32_t i = 0; i < plan->n; i++)
        lb_like(&s->lbs[i], tmpl, plan->entries[i].hosts, plan->entries[i].nhosts);
    if (plan->has_default) lb_like(&s->dflt, tmpl, plan->dflt, plan->ndflt);
}

void sharp_subset_lbs_destroy(sharp_subset_lbs_t *s)
{
    if (!s->plan) return;
    for (uint32_t i = 0; i < s->plan->n; i++)
        sharp_lb_destroy(&s->lbs[i]);
    free(s->lbs);
    if (s->plan->has_default) sharp_lb_destroy(&s->dflt);
    memset(s, 0, sizeof *s);
}

void sharp_subset_lbs_rezone(sharp_subset_lbs_t *s, const sharp_lb_t *tmpl)
{
    if (!s->plan || !tmpl->zone) return;
    for (uint32_t i = 0; i < s->plan->n; i++)
        sharp_lb_set_zone(&s->lbs[i], tmpl->zone, tmpl->local_locality, tmpl->local_set);
    if (s->plan->has_default)
        sharp_lb_set_zone(&s->dflt, tmpl->zone, tmpl->local_locality, tmpl->local_set);
}

static void count(const sharp_lb_t *any, sharp_stat_id_t id)
{
    if (any->stats && id) sharp_counter_inc(any->stats, id);
}

/* The selector map's node with a fallback policy for the criteria's keys
 * (in order), or NULL (Envoy's tryFindSelectorFallbackParams: a node
 * without a policy, or none, leaves the cluster's fallback). */
static const sharp_subset_fbnode_t *fallback_node(const sharp_subset_config_t *cfg,
                                                  const uint8_t *crit, size_t len)
{
    if (!cfg->nfb_nodes) return NULL;
    uint32_t n = 0;
    size_t pos = 0;
    field_t f;
    while (next_field(crit, len, &pos, &f))
        n++;
    for (uint32_t i = 0; i < cfg->nfb_nodes; i++) {
        const sharp_subset_fbnode_t *node = &cfg->nodes[cfg->fb_nodes[i]];
        if (node->depth != n) continue;
        const sharp_subset_selector_t *sel = &cfg->selectors[node->sel];
        bool same = true;
        pos = 0;
        for (uint32_t k = 0; k < n && same && next_field(crit, len, &pos, &f); k++)
            same = sel->key_lens[k] == f.klen && !memcmp(sel->keys[k], f.key, f.klen);
        if (same) return node;
    }
    return NULL;
}

static sharp_host_t *choose_iteration(sharp_subset_lbs_t *s, sharp_lb_t *any, bool has_crit,
                                      const uint8_t *crit, size_t len)
{
    const sharp_cluster_stats_t *st = any->st;
    if (has_crit) {
        int32_t i = sharp_subset_plan_find(s->plan, crit, len);
        if (i >= 0) {
            /* the subset exists (it has hosts): its answer, even none */
            if (st) count(any, st->lb_subsets_selected);
            if (s->plan->entries[i].single) return s->plan->entries[i].hosts[0];
            return sharp_lb_choose(&s->lbs[i]);
        }
        const sharp_subset_fbnode_t *node = fallback_node(s->cfg, crit, len);
        if (node && node->fallback != SHARP_SELECTOR_NOT_DEFINED) {
            /* Envoy's chooseHostForSelectorFallbackPolicy: no stats */
            switch (node->fallback) {
            case SHARP_SELECTOR_ANY_ENDPOINT:
                return sharp_lb_choose(any);
            case SHARP_SELECTOR_DEFAULT_SUBSET:
                return sharp_lb_choose(&s->dflt);
            case SHARP_SELECTOR_KEYS_SUBSET: {
                /* the criteria cut to fallback_keys_subset, balanced again */
                const sharp_subset_selector_t *sel = &s->cfg->selectors[node->params];
                uint8_t small[512];
                uint8_t *cut = len <= sizeof small ? small : sharp_calloc(len, 1);
                size_t cl = 0, pos = 0;
                field_t f;
                while (next_field(crit, len, &pos, &f)) {
                    bool keep = false;
                    for (uint32_t k = 0; k < sel->nfallback_keys && !keep; k++)
                        keep = sel->fallback_key_lens[k] == f.klen &&
                               !memcmp(sel->fallback_keys[k], f.key, f.klen);
                    if (!keep) continue;
                    memcpy(cut + cl, &f.klen, 4);
                    memcpy(cut + cl + 4, f.key, f.klen);
                    memcpy(cut + cl + 4 + f.klen, f.val, 4 + f.vlen);
                    cl += 8 + f.klen + f.vlen;
                }
                sharp_host_t *h = choose_iteration(s, any, true, cut, cl);
                if (cut != small) free(cut);
                return h;
            }
            default:
                return NULL;
            }
        }
    }
    sharp_lb_t *fb = s->cfg->fallback == SHARP_SUBSET_ANY_ENDPOINT     ? any
                     : s->cfg->fallback == SHARP_SUBSET_DEFAULT_SUBSET ? &s->dflt
                                                                       : NULL;
    if (!fb) return NULL;
    sharp_host_t *h = sharp_lb_choose(fb);
    if (h) {
        if (st) count(any, st->lb_subsets_fallback);
        return h;
    }
    if (s->cfg->panic_mode_any) {
        h = sharp_lb_choose(any);
        if (h && st) count(any, st->lb_subsets_fallback_panic);
    }
    return h;
}

/* Envoy's metadata_fallback_policy FALLBACK_LIST: the criteria's
 * "fallback_list" (a list of structs) is taken out, and each struct in turn
 * is merged over the rest of the criteria until one gives a host; a
 * missing list balances on the rest; an empty one, or a value that is not a
 * list, on the rest alone. The buffers are this path's only. */
static sharp_host_t *choose_fallback_list(sharp_subset_lbs_t *s, sharp_lb_t *any,
                                          const uint8_t *crit, size_t len, bool *done)
{
    size_t pos = 0;
    field_t f, fl = {0};
    bool found = false;
    while (!found && next_field(crit, len, &pos, &f))
        if (f.klen == 13 && !memcmp(f.key, "fallback_list", 13)) {
            fl = f;
            found = true;
        }
    *done = found;
    if (!found) return NULL;
    sharp_sbuf_t rest = {0}, over = {0}, merged = {0};
    pos = 0;
    while (next_field(crit, len, &pos, &f))
        if (f.key != fl.key) put_field(&rest, &f);
    const uint8_t *v = fl.val + 4, *end = v + fl.vlen;
    uint32_t n = *v == TAG_LIST && fl.vlen >= 5 ? get_u32(v + 1) : 0;
    sharp_host_t *h = NULL;
    if (!n) {
        h = choose_iteration(s, any, true, (const uint8_t *)rest.data, rest.len);
    } else {
        const uint8_t *e = v + 5;
        for (uint32_t i = 0; i < n && !h; i++) {
            size_t es = value_size(e, end);
            if (!es) break;
            sharp_sbuf_reset(&over);
            if (*e == TAG_STRUCT) {
                /* the element's fields in the criteria's form */
                uint32_t nf = get_u32(e + 1);
                const uint8_t *p = e + 5;
                for (uint32_t k = 0; k < nf; k++) {
                    uint32_t kl = get_u32(p);
                    size_t vs = value_size(p + 4 + kl, e + es);
                    put_u32(&over, kl);
                    sharp_sbuf_append(&over, (const char *)p + 4, kl);
                    put_u32(&over, (uint32_t)vs);
                    sharp_sbuf_append(&over, (const char *)p + 4 + kl, vs);
                    p += 4 + kl + vs;
                }
            }
            sharp_sbuf_reset(&merged);
            merge_bytes((const uint8_t *)rest.data, rest.len, (const uint8_t *)over.data, over.len,
                        &merged);
            h = choose_iteration(s, any, true, (const uint8_t *)merged.data, merged.len);
            e += es;
        }
    }
    sharp_sbuf_free(&rest);
    sharp_sbuf_free(&over);
    sharp_sbuf_free(&merged);
    return h;
}

sharp_host_t *sharp_subset_choose(sharp_subset_lbs_t *s, sharp_lb_t *any, bool has_crit,
                                  const uint8_t *crit, size_t len)
{
    if (has_crit && s->cfg->metadata_fallback_list) {
        bool done;
        sharp_host_t *h = choose_fallback_list(s, any, crit, len, &done);
        if (done) return h;
    }
    return choose_iteration(s, any, has_crit, crit, len);
}
