/* doc.c: parsing YAML/JSON text into a sharp_config_doc_t: libyaml loading,
 * the pre-check against alias bombs and cycles, the source map, error
 * formatting and path bookkeeping shared by the mapper. See mapper.h. */
#include "mapper_internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>

/* The source map: a path's first position, in an open-addressing table
 * whose entries keep the path's hash and length (a probe compares those
 * before any byte) and point into one arena of paths, so that a document
 * of tens of thousands of nodes costs no allocation per node. */
struct srcmap_entry {
    uint64_t hash;
    uint32_t off, len; /* the path in the arena; len UINT32_MAX: empty slot */
    int line, col;
};

struct cfg_srcmap {
    struct srcmap_entry *slots;
    size_t cap, used;
    char *arena;
    size_t alen, acap;
};

struct sharp_config_doc {
    ProtobufCMessage *msg;
    char *source;
    cfg_srcmap_t map;
    bool empty; /* no document, or a null one */
    sharp_config_refused_t *refused; /* sharp_config_parse_file_alone */
    size_t nrefused;
};

/* ---- source map --------------------------------------------------------- */

#define HASH_BASIS 1469598103934665603ull

/* FNV-1a, continued from h over n more bytes */
static uint64_t hash_more(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    return hash_more(HASH_BASIS, s, n);
}

static struct srcmap_entry *srcmap_slot(const cfg_srcmap_t *m, const char *path, size_t len, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct srcmap_entry *e = &m->slots[i];
        if (e->len == UINT32_MAX ||
            (e->hash == h && e->len == len && memcmp(m->arena + e->off, path, len) == 0))
            return e;
    }
}

static struct srcmap_entry *srcmap_table(size_t cap)
{
    struct srcmap_entry *t = sharp_calloc(cap, sizeof *t);
    for (size_t i = 0; i < cap; i++) t[i].len = UINT32_MAX;
    return t;
}

/* Adds path -> (line, col); the first position recorded for a path wins. */
void sharp_cfg_srcmap_put(cfg_srcmap_t *m, const char *path, size_t len, int line, int col)
{
    sharp_cfg_srcmap_put_hashed(m, path, len, hash_bytes(path, len), line, col);
}

void sharp_cfg_srcmap_put_hashed(cfg_srcmap_t *m, const char *path, size_t len, uint64_t h, int line, int col)
{
    if (len >= UINT32_MAX || m->alen + len >= UINT32_MAX) return; /* beyond any config */
    if ((m->used + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        struct srcmap_entry *t = srcmap_table(cap);
        for (size_t i = 0; i < m->cap; i++) {
            const struct srcmap_entry *o = &m->slots[i];
            if (o->len == UINT32_MAX) continue;
            size_t k = o->hash & (cap - 1);
            while (t[k].len != UINT32_MAX) k = (k + 1) & (cap - 1);
            t[k] = *o;
        }
        free(m->slots);
        m->slots = t;
        m->cap = cap;
    }
    struct srcmap_entry *e = srcmap_slot(m, path, len, h);
    if (e->len != UINT32_MAX) return;
    if (m->alen + len > m->acap) {
        m->acap = SHARP_MAX(m->acap * 2, m->alen + len + 4096);
        m->arena = sharp_realloc(m->arena, m->acap);
    }
    if (len) memcpy(m->arena + m->alen, path, len);
    *e = (struct srcmap_entry){h, (uint32_t)m->alen, (uint32_t)len, line, col};
    m->alen += len;
    m->used++;
}

static void srcmap_free(cfg_srcmap_t *m)
{
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

/* ---- errors and paths ---------------------------------------------------- */

static int cfg_vfail(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

int sharp_cfg_fail(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(c, node, fmt, ap);
    va_end(ap);
    return rc;
}

int sharp_cfg_fail_unsupported(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, ...)
{
    if (c->err && !c->err->msg[0]) c->unsupported = true;
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_vfail(c, node, fmt, ap);
    va_end(ap);
    return rc;
}

static int cfg_vfail(cfg_ctx_t *c, const yaml_node_t *node, const char *fmt, va_list ap)
{
    if (!c->err || c->err->msg[0]) return -1;
    char what[768];
    vsnprintf(what, sizeof what, fmt, ap);
    size_t line = node ? node->start_mark.line + 1 : 1, col = node ? node->start_mark.column + 1 : 1;
    const char *path = c->path.len ? c->path.data : "";
    snprintf(c->err->msg, sizeof c->err->msg, "%s:%zu:%zu: %s%s%s", c->source, line, col, path,
             c->path.len ? ": " : "", what);
    return -1;
}

/* After a push from length `old`: the new length's hash from old's. */
static size_t pushed(cfg_ctx_t *c, size_t old)
{
    size_t len = c->path.len;
    if (len >= c->phash_cap) {
        size_t cap = SHARP_MAX(2 * c->phash_cap, len + 64);
        c->phash = sharp_realloc(c->phash, cap * sizeof *c->phash);
        c->phash_cap = cap;
    }
    c->phash[len] = hash_more(old ? c->phash[old] : HASH_BASIS, c->path.data + old, len - old);
    return old;
}

size_t sharp_cfg_push_field(cfg_ctx_t *c, const char *name)
{
    return sharp_cfg_push_name(c, name, strlen(name));
}

size_t sharp_cfg_push_name(cfg_ctx_t *c, const char *name, size_t len)
{
    size_t old = c->path.len;
    if (old) sharp_sbuf_append(&c->path, ".", 1);
    sharp_sbuf_append(&c->path, name, len);
    return pushed(c, old);
}

size_t sharp_cfg_push_index(cfg_ctx_t *c, size_t i)
{
    size_t old = c->path.len;
    sharp_sbuf_append_index(&c->path, i);
    return pushed(c, old);
}

size_t sharp_cfg_push_key(cfg_ctx_t *c, const char *key, size_t len)
{
    size_t old = c->path.len;
    sharp_sbuf_append(&c->path, "[\"", 2);
    sharp_sbuf_append(&c->path, key, len);
    sharp_sbuf_append(&c->path, "\"]", 2);
    return pushed(c, old);
}

void sharp_cfg_pop(cfg_ctx_t *c, size_t old_len)
{
    c->path.len = old_len;
    if (c->path.data) c->path.data[old_len] = '\0';
}

/* Records the current path at node's position in the source map. */
void sharp_cfg_note(cfg_ctx_t *c, const yaml_node_t *node)
{
    if (c->map && node)
        sharp_cfg_srcmap_put_hashed(c->map, c->path.len ? c->path.data : "", c->path.len,
                                    c->path.len ? c->phash[c->path.len] : HASH_BASIS,
                                    (int)node->start_mark.line + 1, (int)node->start_mark.column + 1);
}

/* ---- node helpers -------------------------------------------------------- */

bool sharp_cfg_scalar_of(const yaml_node_t *n, cfg_scalar_t *out)
{
    memset(out, 0, sizeof *out);
    if (!n) {
        out->s = "";
        out->null = true;
        return true;
    }
    if (n->type != YAML_SCALAR_NODE) return false;
    out->s = (const char *)n->data.scalar.value;
    out->len = n->data.scalar.length;
    out->quoted = n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (!out->quoted) {
        const char *s = out->s;
        size_t l = out->len;
        out->null = l == 0 || (l == 1 && s[0] == '~') ||
                    (l == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
    }
    return true;
}

const char *sharp_cfg_node_kind(const yaml_node_t *n)
{
    if (!n) return "null";
    switch (n->type) {
    case YAML_MAPPING_NODE: return "a mapping";
    case YAML_SEQUENCE_NODE: return "a list";
    default: return "a scalar";
    }
}

static bool is_merge_key(const yaml_node_t *k)
{
    return k && k->type == YAML_SCALAR_NODE && k->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           k->data.scalar.length == 2 && !memcmp(k->data.scalar.value, "<<", 2);
}

static bool is_ignored_key(const yaml_node_t *k)
{
    return k && k->tag && !strcmp((const char *)k->tag, "!ignore");
}

static void pairs_append(cfg_pair_t **arr, size_t *n, size_t *cap, cfg_pair_t p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        *arr = sharp_realloc(*arr, *cap * sizeof **arr);
    }
    (*arr)[(*n)++] = p;
}

/* Appends m's own pairs, then the pairs of its merge sources, in order. */
static int collect_pairs(cfg_ctx_t *c, yaml_node_t *m, bool merged, cfg_pair_t **arr, size_t *n,
                         size_t *cap)
{
    yaml_node_pair_t *p;
    for (p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->ydoc, p->key);
        if (is_ignored_key(k) || is_merge_key(k)) continue;
        pairs_append(arr, n, cap,
                     (cfg_pair_t){k, yaml_document_get_node(c->ydoc, p->value), merged});
    }
    for (p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->ydoc, p->key);
        if (is_ignored_key(k) || !is_merge_key(k)) continue;
        yaml_node_t *v = yaml_document_get_node(c->ydoc, p->value);
        if (v && v->type == YAML_MAPPING_NODE) {
            if (collect_pairs(c, v, true, arr, n, cap) < 0) return -1;
        } else if (v && v->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *src = yaml_document_get_node(c->ydoc, *it);
                if (!src || src->type != YAML_MAPPING_NODE)
                    return sharp_cfg_fail(c, src ? src : v, "merge key \"<<\" needs mappings, got %s",
                                          sharp_cfg_node_kind(src));
                if (collect_pairs(c, src, true, arr, n, cap) < 0) return -1;
            }
        } else {
            return sharp_cfg_fail(c, v ? v : k, "merge key \"<<\" needs a mapping or a list of mappings");
        }
    }
    return 0;
}

int sharp_cfg_pairs(cfg_ctx_t *c, yaml_node_t *mapping, cfg_pair_t **out, size_t *n)
{
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    if (collect_pairs(c, mapping, false, out, n, &cap) < 0) {
        free(*out);
        *out = NULL;
        *n = 0;
        return -1;
    }
    return 0;
}

/* ---- pre-check ----------------------------------------------------------- */

struct precheck {
    cfg_ctx_t *c;
    size_t *size;   /* expanded size per node, saturating at MAX_NODES + 1 */
    uint8_t *state; /* 0 new, 1 in progress, 2 done */
};

/* Computes how many nodes walking `idx` visits once aliases are expanded,
 * rejecting cycles (an alias inside its own anchor) and deep nesting. */
static int precheck_node(struct precheck *pc, int idx, int depth, size_t *out)
{
    yaml_node_t *n = yaml_document_get_node(pc->c->ydoc, idx);
    if (!n) {
        *out = 0;
        return 0;
    }
    size_t i = (size_t)idx - 1;
    if (pc->state[i] == 2) {
        *out = pc->size[i];
        return 0;
    }
    if (pc->state[i] == 1) return sharp_cfg_fail(pc->c, n, "alias refers to a node that contains it");
    if (depth > SHARP_CONFIG_MAX_DEPTH)
        return sharp_cfg_fail(pc->c, n, "nesting deeper than %d levels", SHARP_CONFIG_MAX_DEPTH);
    pc->state[i] = 1;
    size_t total = 1, sub;
    if (n->type == YAML_SEQUENCE_NODE) {
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
            if (precheck_node(pc, *it, depth + 1, &sub) < 0) return -1;
            total = SHARP_MIN(total + sub, (size_t)SHARP_CONFIG_MAX_NODES + 1);
        }
    } else if (n->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
            if (precheck_node(pc, p->key, depth + 1, &sub) < 0) return -1;
            total = SHARP_MIN(total + sub, (size_t)SHARP_CONFIG_MAX_NODES + 1);
            if (precheck_node(pc, p->value, depth + 1, &sub) < 0) return -1;
            total = SHARP_MIN(total + sub, (size_t)SHARP_CONFIG_MAX_NODES + 1);
        }
    }
    pc->state[i] = 2;
    pc->size[i] = total;
    *out = total;
    return 0;
}

static int precheck(cfg_ctx_t *c)
{
    size_t nodes = (size_t)(c->ydoc->nodes.top - c->ydoc->nodes.start), total = 0;
    struct precheck pc = {c, sharp_calloc(nodes, sizeof(size_t)), sharp_calloc(nodes, 1)};
    int rc = precheck_node(&pc, 1, 0, &total);
    free(pc.size);
    free(pc.state);
    if (rc == 0 && total > SHARP_CONFIG_MAX_NODES)
        rc = sharp_cfg_fail(c, yaml_document_get_root_node(c->ydoc),
                            "document expands to more than %d nodes through aliases",
                            SHARP_CONFIG_MAX_NODES);
    return rc;
}

/* ---- parsing ------------------------------------------------------------- */

static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = sharp_hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* JSON writes characters beyond the BMP as a UTF-16 surrogate pair
 * ("\ud83d\ude00"), which libyaml rejects; rewrite each such escaped pair
 * as the equivalent "\U0001f600". Returns a new buffer, or NULL when the
 * text has no pair to rewrite. */
static char *rewrite_surrogates(const char *text, size_t len, size_t *out_len)
{
    char *out = NULL;
    size_t o = 0, i = 0, copied = 0;
    while (i + 12 <= len) {
        if (text[i] == '\\' && text[i + 1] == 'u' && text[i + 6] == '\\' && text[i + 7] == 'u') {
            size_t bs = 0;
            while (bs < i && text[i - 1 - bs] == '\\') bs++;
            long hi = hex4(text + i + 2), lo = hex4(text + i + 8);
            if (bs % 2 == 0 && hi >= 0xD800 && hi <= 0xDBFF && lo >= 0xDC00 && lo <= 0xDFFF) {
                if (!out) out = sharp_calloc(1, len + 1);
                memcpy(out + o, text + copied, i - copied);
                o += i - copied;
                long cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                o += (size_t)snprintf(out + o, 11, "\\U%08lx", cp);
                i += 12;
                copied = i;
                continue;
            }
        }
        i++;
    }
    if (!out) return NULL;
    memcpy(out + o, text + copied, len - copied);
    *out_len = o + len - copied;
    return out;
}

/* libyaml refuses a tab before the opening '{' or '[' of a JSON document
 * (block context); turn tabs in that leading whitespace into spaces. Works
 * in place on a buffer the caller owns, or copies into *owned. */
static const char *untab_json_start(const char *text, size_t len, char **owned)
{
    size_t i = 0;
    bool tab = false;
    while (i < len && strchr(" \t\r\n", text[i]) && text[i]) tab |= text[i++] == '\t';
    if (!tab || i == len || (text[i] != '{' && text[i] != '[')) return text;
    if (!*owned) {
        *owned = sharp_calloc(1, len + 1);
        memcpy(*owned, text, len);
    }
    for (size_t k = 0; k < i; k++)
        if ((*owned)[k] == '\t') (*owned)[k] = ' ';
    return *owned;
}

/* ---- strict JSON syntax ---------------------------------------------------- */

/* A JSON syntax check with the rules of protobuf's JSON lexer as Envoy uses
 * it (JsonStringToMessage, legacy syntax on): RFC 8259 plus single-quoted
 * strings (without escapes here, as libyaml reads them differently) and raw
 * control characters in strings; no comments, trailing commas or bare keys.
 * The mapping itself then goes through libyaml, which reads JSON as YAML.
 * Lines and columns are 1-based; columns count characters, not bytes. */
struct jscan {
    const char *s;
    size_t len, i;
    size_t line, col;
    const char *problem;
    size_t pline, pcol;
};

static void js_adv(struct jscan *j)
{
    if (j->s[j->i] == '\n') {
        j->line++;
        j->col = 1;
    } else if (((unsigned char)j->s[j->i] & 0xC0) != 0x80) {
        j->col++;
    }
    j->i++;
}

static bool js_fail(struct jscan *j, const char *what)
{
    if (!j->problem) {
        j->problem = what;
        j->pline = j->line;
        j->pcol = j->col;
    }
    return false;
}

/* Skips whitespace; a '/' here starts a comment, which JSON does not have. */
static bool js_ws(struct jscan *j)
{
    while (j->i < j->len && strchr(" \t\r\n", j->s[j->i]) && j->s[j->i]) js_adv(j);
    if (j->i + 1 < j->len && j->s[j->i] == '/' && (j->s[j->i + 1] == '/' || j->s[j->i + 1] == '*'))
        return js_fail(j, "comments are not allowed in JSON");
    return true;
}

static bool js_string(struct jscan *j)
{
    char q = j->s[j->i];
    js_adv(j);
    while (j->i < j->len) {
        char ch = j->s[j->i];
        if (ch == q) {
            js_adv(j);
            return true;
        }
        if (ch == '\\') {
            if (q == '\'') return js_fail(j, "escapes in single-quoted strings are not supported: use double quotes");
            js_adv(j);
            if (j->i >= j->len) break;
            ch = j->s[j->i];
            if (ch == 'u' || ch == 'U') {
                js_adv(j);
                for (int k = 0; k < 4; k++) {
                    if (j->i >= j->len || !strchr("0123456789abcdefABCDEF", j->s[j->i]) || !j->s[j->i])
                        return js_fail(j, "invalid Unicode escape");
                    js_adv(j);
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", ch) || !ch) return js_fail(j, "invalid escape in string");
        }
        js_adv(j);
    }
    return js_fail(j, "unterminated string");
}

static bool js_fail_at(struct jscan *j, size_t line, size_t col, const char *what)
{
    if (!j->problem) {
        j->line = line;
        j->col = col;
    }
    return js_fail(j, what);
}

static bool js_number(struct jscan *j)
{
    size_t sline = j->line, scol = j->col; /* number errors point at its start */
    if (j->s[j->i] == '-') js_adv(j);
    if (j->i >= j->len || j->s[j->i] < '0' || j->s[j->i] > '9') return js_fail_at(j, sline, scol, "expected a number");
    bool zero = j->s[j->i] == '0';
    js_adv(j);
    if (zero && j->i < j->len && j->s[j->i] >= '0' && j->s[j->i] <= '9')
        return js_fail_at(j, sline, scol, "number cannot have extraneous leading zero");
    while (j->i < j->len && j->s[j->i] >= '0' && j->s[j->i] <= '9') js_adv(j);
    if (j->i < j->len && j->s[j->i] == '.') {
        js_adv(j);
        if (j->i >= j->len || j->s[j->i] < '0' || j->s[j->i] > '9')
            return js_fail_at(j, sline, scol, "number cannot have trailing period");
        while (j->i < j->len && j->s[j->i] >= '0' && j->s[j->i] <= '9') js_adv(j);
    }
    if (j->i < j->len && (j->s[j->i] == 'e' || j->s[j->i] == 'E')) {
        js_adv(j);
        if (j->i < j->len && (j->s[j->i] == '+' || j->s[j->i] == '-')) js_adv(j);
        if (j->i >= j->len || j->s[j->i] < '0' || j->s[j->i] > '9') return js_fail_at(j, sline, scol, "bad exponent in number");
        while (j->i < j->len && j->s[j->i] >= '0' && j->s[j->i] <= '9') js_adv(j);
    }
    return true;
}

static bool js_value(struct jscan *j, int depth);

/* An object or array: `close` is '}' or ']'. */
static bool js_container(struct jscan *j, int depth, char close)
{
    if (depth > SHARP_CONFIG_MAX_DEPTH) return js_fail(j, "JSON content was too deeply nested");
    js_adv(j);
    if (!js_ws(j)) return false;
    if (j->i < j->len && j->s[j->i] == close) {
        js_adv(j);
        return true;
    }
    for (;;) {
        if (!js_ws(j)) return false;
        if (j->i >= j->len) return js_fail(j, close == '}' ? "unexpected end of input: missing '}'"
                                                          : "unexpected end of input: missing ']'");
        if (close == '}') {
            char ch = j->s[j->i];
            if (ch == '}') return js_fail(j, "trailing comma before '}'");
            if (ch != '"' && ch != '\'') return js_fail(j, "expected a quoted key");
            if (!js_string(j) || !js_ws(j)) return false;
            if (j->i >= j->len || j->s[j->i] != ':') return js_fail(j, "expected ':' after the key");
            js_adv(j);
        } else if (j->s[j->i] == ']') {
            return js_fail(j, "trailing comma before ']'");
        }
        if (!js_value(j, depth + 1) || !js_ws(j)) return false;
        if (j->i < j->len && j->s[j->i] == ',') {
            js_adv(j);
            continue;
        }
        if (j->i < j->len && j->s[j->i] == close) {
            js_adv(j);
            return true;
        }
        if (j->i >= j->len) return js_fail(j, close == '}' ? "unexpected end of input: missing '}'"
                                                          : "unexpected end of input: missing ']'");
        return js_fail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool js_word(struct jscan *j, const char *w)
{
    size_t n = strlen(w);
    if (j->len - j->i < n || memcmp(j->s + j->i, w, n)) return js_fail(j, "unexpected character");
    for (size_t k = 0; k < n; k++) js_adv(j);
    return true;
}

static bool js_value(struct jscan *j, int depth)
{
    if (!js_ws(j)) return false;
    if (j->i >= j->len) return js_fail(j, "unexpected end of input: expected a value");
    switch (j->s[j->i]) {
    case '{': return js_container(j, depth, '}');
    case '[': return js_container(j, depth, ']');
    case '"': case '\'': return js_string(j);
    case 't': return js_word(j, "true");
    case 'f': return js_word(j, "false");
    case 'n': return js_word(j, "null");
    default:
        if (j->s[j->i] == '-' || (j->s[j->i] >= '0' && j->s[j->i] <= '9')) return js_number(j);
        return js_fail(j, "unexpected character");
    }
}

/* Checks that text is exactly one JSON value. Returns false with the
 * problem and its position in *j. */
static bool json_check(struct jscan *j, const char *text, size_t len)
{
    *j = (struct jscan){.s = text, .len = len, .line = 1, .col = 1};
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) j->i = 3; /* UTF-8 byte order mark */
    if (!js_value(j, 0)) return false;
    if (!js_ws(j)) return false;
    if (j->i < j->len) return js_fail(j, "extraneous characters after the end of the JSON value");
    return true;
}

static void yaml_error(sharp_config_error_t *err, const char *source, const yaml_parser_t *p)
{
    snprintf(err->msg, sizeof err->msg, "%s:%zu:%zu: YAML syntax error: %s%s%s", source,
             p->problem_mark.line + 1, p->problem_mark.column + 1,
             p->problem ? p->problem : "invalid document", p->context ? " " : "",
             p->context ? p->context : "");
}

/* Loads the single document of the text into *ydoc (root may be NULL for an
 * empty text). Returns -1 with err filled on syntax errors or extra documents. */
static int load_document(const char *text, size_t len, const char *source, yaml_document_t *ydoc,
                         sharp_config_error_t *err)
{
    yaml_parser_t p;
    int rc = -1;
    if (!yaml_parser_initialize(&p)) {
        snprintf(err->msg, sizeof err->msg, "%s: cannot initialize the YAML parser", source);
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    if (!yaml_parser_load(&p, ydoc)) {
        yaml_error(err, source, &p);
        goto out;
    }
    if (yaml_document_get_root_node(ydoc)) {
        yaml_document_t extra;
        if (!yaml_parser_load(&p, &extra)) {
            yaml_error(err, source, &p);
            yaml_document_delete(ydoc);
            goto out;
        }
        yaml_node_t *root2 = yaml_document_get_root_node(&extra);
        if (root2) {
            snprintf(err->msg, sizeof err->msg,
                     "%s:%zu:%zu: more than one YAML document; a config file holds exactly one",
                     source, root2->start_mark.line + 1, root2->start_mark.column + 1);
            yaml_document_delete(&extra);
            yaml_document_delete(ydoc);
            goto out;
        }
        yaml_document_delete(&extra);
    }
    rc = 0;
out:
    yaml_parser_delete(&p);
    return rc;
}

/* ---- direct JSON loading --------------------------------------------------- */

/* libyaml reads JSON as YAML, through its scanner, token queue and event
 * parser, and allocates every node's tag and value: most of the cost of a
 * large JSON file (an EDS assignment of thousands of endpoints read every
 * update). A JSON document in the plain subset below is built here directly
 * as the same node tree libyaml makes (node order, tags, styles, values and
 * start marks), in a few blocks, and the mapper walks it as before. The
 * subset is strict JSON (the loader checks the syntax as it goes, numbers
 * included), so such a document needs no json_check either. Anything else
 * (a syntax error, non-ASCII bytes, tabs, carriage returns, \u escapes,
 * single quotes, control characters in strings, the depth and node limits)
 * goes through json_check and libyaml as before, so its errors and
 * readings stay as they were. */
struct jspan {
    size_t off, n; /* a container's children in the pairs or items block */
};

struct jload {
    const char *s;
    size_t len, i;
    size_t line, col; /* 0-based, as libyaml's marks */
    cfg_json_doc_t *out;
    size_t nn, ncap; /* nodes */
    struct jspan *spans;
    yaml_node_pair_t *pairs;
    size_t npairs, pcap;
    yaml_node_item_t *items;
    size_t nitems, icap;
    int *stack; /* the children of the open containers */
    size_t nstack, scap;
    size_t alen, acap; /* the values block */
};

#define JL_GROW(ptr, n, cap)                                          \
    do {                                                              \
        if ((n) == (cap)) {                                           \
            (cap) = (cap) ? 2 * (cap) : 64;                           \
            (ptr) = sharp_realloc((ptr), (cap) * sizeof *(ptr));      \
        }                                                             \
    } while (0)

static void jl_ws(struct jload *l)
{
    while (l->i < l->len) {
        char ch = l->s[l->i];
        if (ch == ' ') {
            l->col++;
        } else if (ch == '\n') {
            l->line++;
            l->col = 0;
        } else {
            return;
        }
        l->i++;
    }
}

static void jl_skip(struct jload *l)
{
    l->i++;
    l->col++;
}

/* A new node (1-based id, as libyaml's) starting here. */
static int jl_node(struct jload *l, yaml_node_type_t type)
{
    if (l->nn == l->ncap) {
        l->ncap = l->ncap ? 2 * l->ncap : 256;
        l->out->doc.nodes.start = sharp_realloc(l->out->doc.nodes.start, l->ncap * sizeof(yaml_node_t));
        l->spans = sharp_realloc(l->spans, l->ncap * sizeof *l->spans);
    }
    yaml_node_t *n = &l->out->doc.nodes.start[l->nn];
    memset(n, 0, sizeof *n);
    n->type = type;
    n->start_mark = (yaml_mark_t){l->i, l->line, l->col};
    l->spans[l->nn] = (struct jspan){0, 0};
    return (int)++l->nn;
}

static void jl_end(struct jload *l, int id)
{
    l->out->doc.nodes.start[id - 1].end_mark = (yaml_mark_t){l->i, l->line, l->col};
}

static int jl_value(struct jload *l, int depth);

/* An object or array at '{' or '[': its node, 0 to give up. Its children
 * wait on the stack until it closes, then move to the pairs or items block
 * in one piece. */
static int jl_container(struct jload *l, int depth)
{
    bool map = l->s[l->i] == '{';
    char close = map ? '}' : ']';
    int id = jl_node(l, map ? YAML_MAPPING_NODE : YAML_SEQUENCE_NODE);
    size_t base = l->nstack;
    jl_skip(l);
    jl_ws(l);
    if (l->i < l->len && l->s[l->i] == close) goto closed;
    for (;;) {
        jl_ws(l);
        if (l->i >= l->len) return 0;
        if (map) {
            if (l->s[l->i] != '"') return 0;
            int k = jl_value(l, depth + 1);
            if (!k) return 0;
            JL_GROW(l->stack, l->nstack, l->scap);
            l->stack[l->nstack++] = k;
            jl_ws(l);
            if (l->i >= l->len || l->s[l->i] != ':') return 0;
            jl_skip(l);
            jl_ws(l);
        }
        int v = jl_value(l, depth + 1);
        if (!v) return 0;
        JL_GROW(l->stack, l->nstack, l->scap);
        l->stack[l->nstack++] = v;
        jl_ws(l);
        if (l->i >= l->len) return 0;
        if (l->s[l->i] == ',') {
            jl_skip(l);
            continue;
        }
        if (l->s[l->i] != close) return 0;
        break;
    }
closed:
    jl_skip(l);
    jl_end(l, id);
    size_t n = l->nstack - base;
    if (map) {
        l->spans[id - 1] = (struct jspan){l->npairs, n / 2};
        for (size_t k = base; k < l->nstack; k += 2) {
            JL_GROW(l->pairs, l->npairs, l->pcap);
            l->pairs[l->npairs++] = (yaml_node_pair_t){l->stack[k], l->stack[k + 1]};
        }
    } else {
        l->spans[id - 1] = (struct jspan){l->nitems, n};
        for (size_t k = base; k < l->nstack; k++) {
            JL_GROW(l->items, l->nitems, l->icap);
            l->items[l->nitems++] = l->stack[k];
        }
    }
    l->nstack = base;
    return id;
}

/* A scalar's value: `n` bytes appended to the values block, which was
 * sized for the whole text (a value is never longer than its token). */
static yaml_char_t *jl_value_bytes(struct jload *l, const char *v, size_t n)
{
    if (l->alen + n + 1 > l->acap) return NULL;
    yaml_char_t *p = (yaml_char_t *)l->out->values + l->alen;
    memcpy(p, v, n);
    p[n] = '\0';
    l->alen += n + 1;
    return p;
}

/* A double-quoted string of printable ASCII and the one-character escapes
 * that mean the same in JSON and YAML, decoded in place in the values
 * block. */
static int jl_string(struct jload *l)
{
    int id = jl_node(l, YAML_SCALAR_NODE);
    char *v = l->out->values + l->alen;
    size_t n = 0;
    jl_skip(l);
    for (;;) {
        if (l->i >= l->len) return 0;
        unsigned char ch = (unsigned char)l->s[l->i];
        if (ch == '"') break;
        if (ch < 0x20 || ch >= 0x7F) return 0;
        if (ch == '\\') {
            if (l->i + 1 >= l->len) return 0;
            switch (l->s[l->i + 1]) {
            case '"': ch = '"'; break;
            case '\\': ch = '\\'; break;
            case '/': ch = '/'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'n': ch = '\n'; break;
            case 'r': ch = '\r'; break;
            case 't': ch = '\t'; break;
            default: return 0;
            }
            jl_skip(l);
        }
        jl_skip(l);
        if (l->alen + n + 1 >= l->acap) return 0;
        v[n++] = (char)ch;
    }
    jl_skip(l);
    v[n] = '\0';
    l->alen += n + 1;
    yaml_node_t *node = &l->out->doc.nodes.start[id - 1];
    node->tag = (yaml_char_t *)YAML_DEFAULT_SCALAR_TAG;
    node->data.scalar.value = (yaml_char_t *)v;
    node->data.scalar.length = n;
    node->data.scalar.style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    jl_end(l, id);
    return id;
}

/* Exactly true, false, null or a JSON number (RFC 8259: no leading zero,
 * digits on both sides of the point, an optional exponent), as json_check
 * has it: what the direct loader takes is strict JSON. */
static bool jl_plain_ok(const char *s, size_t n)
{
    if ((n == 4 && (!memcmp(s, "true", 4) || !memcmp(s, "null", 4))) || (n == 5 && !memcmp(s, "false", 5)))
        return true;
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n || !isdigit((unsigned char)s[i])) return false;
    if (s[i] == '0' && i + 1 < n && isdigit((unsigned char)s[i + 1])) return false;
    while (i < n && isdigit((unsigned char)s[i])) i++;
    if (i < n && s[i] == '.') {
        if (++i >= n || !isdigit((unsigned char)s[i])) return false;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !isdigit((unsigned char)s[i])) return false;
        while (i < n && isdigit((unsigned char)s[i])) i++;
    }
    return i == n;
}

static int jl_value(struct jload *l, int depth)
{
    /* precheck's limits: past them libyaml's path says why */
    if (depth > SHARP_CONFIG_MAX_DEPTH || l->nn >= SHARP_CONFIG_MAX_NODES || l->i >= l->len) return 0;
    char ch = l->s[l->i];
    if (ch == '{' || ch == '[') return jl_container(l, depth);
    if (ch == '"') return jl_string(l);
    /* a number, true, false or null: a plain scalar as written */
    int id = jl_node(l, YAML_SCALAR_NODE);
    size_t i = l->i;
    while (l->i < l->len && (isalnum((unsigned char)l->s[l->i]) || l->s[l->i] == '-' || l->s[l->i] == '+' ||
                             l->s[l->i] == '.'))
        jl_skip(l);
    if (!jl_plain_ok(l->s + i, l->i - i)) return 0;
    yaml_char_t *v = jl_value_bytes(l, l->s + i, l->i - i);
    if (!v) return 0;
    yaml_node_t *node = &l->out->doc.nodes.start[id - 1];
    node->tag = (yaml_char_t *)YAML_DEFAULT_SCALAR_TAG;
    node->data.scalar.value = v;
    node->data.scalar.length = l->i - i;
    node->data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
    jl_end(l, id);
    return id;
}

bool sharp_cfg_json_load(const char *text, size_t len, cfg_json_doc_t *out)
{
    memset(out, 0, sizeof *out);
    struct jload l = {.s = text, .len = len, .out = out, .acap = len + 2};
    out->values = sharp_realloc(NULL, l.acap);
    jl_ws(&l);
    bool ok = jl_value(&l, 0) != 0;
    if (ok) {
        jl_ws(&l);
        ok = l.i == l.len;
    }
    free(l.stack);
    out->pairs = l.pairs;
    out->items = l.items;
    yaml_document_t *d = &out->doc;
    /* no node at all (an empty text): no offset from a NULL start */
    d->nodes.end = d->nodes.start ? d->nodes.start + l.ncap : NULL;
    d->nodes.top = d->nodes.start ? d->nodes.start + l.nn : NULL;
    d->start_implicit = d->end_implicit = 1;
    if (ok) {
        /* the blocks are where they end up: the children's pointers now */
        for (size_t k = 0; k < l.nn; k++) {
            yaml_node_t *n = &d->nodes.start[k];
            if (n->type == YAML_MAPPING_NODE) {
                n->tag = (yaml_char_t *)YAML_DEFAULT_MAPPING_TAG;
                /* an empty mapping or sequence of a text with no other: no offset from NULL */
                n->data.mapping.pairs.start = l.pairs ? l.pairs + l.spans[k].off : NULL;
                n->data.mapping.pairs.top = n->data.mapping.pairs.end =
                    l.pairs ? n->data.mapping.pairs.start + l.spans[k].n : NULL;
                n->data.mapping.style = YAML_FLOW_MAPPING_STYLE;
            } else if (n->type == YAML_SEQUENCE_NODE) {
                n->tag = (yaml_char_t *)YAML_DEFAULT_SEQUENCE_TAG;
                n->data.sequence.items.start = l.items ? l.items + l.spans[k].off : NULL;
                n->data.sequence.items.top = n->data.sequence.items.end =
                    l.items ? n->data.sequence.items.start + l.spans[k].n : NULL;
                n->data.sequence.style = YAML_FLOW_SEQUENCE_STYLE;
            }
        }
    }
    free(l.spans);
    if (!ok) sharp_cfg_json_free(out);
    return ok;
}

void sharp_cfg_json_free(cfg_json_doc_t *d)
{
    free(d->doc.nodes.start);
    free(d->pairs);
    free(d->items);
    free(d->values);
    memset(d, 0, sizeof *d);
}

static void json_error(sharp_config_error_t *err, const char *source, const struct jscan *j, const char *why)
{
    snprintf(err->msg, sizeof err->msg, "%s:%zu:%zu: JSON syntax error: %s%s", source, j->pline, j->pcol,
             j->problem, why);
}

static bool looks_like_json(const char *text, size_t len)
{
    size_t i = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3;
    while (i < len && strchr(" \t\r\n", text[i]) && text[i]) i++;
    return i < len && (text[i] == '{' || text[i] == '[');
}

enum parse_mode { PARSE_YAML, PARSE_JSON };

static void refused_free(sharp_config_refused_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].why);
    }
    free(v);
}

static sharp_config_doc_t *parse_text(const char *text, size_t len, const char *source_name,
                                      const ProtobufCMessageDescriptor *desc, sharp_config_error_t *err,
                                      enum parse_mode mode, const char *alone_field)
{
    sharp_config_error_t local;
    if (!err) err = &local;
    err->msg[0] = '\0';
    if (!source_name) source_name = "<config>";
    if (!desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        snprintf(err->msg, sizeof err->msg, "%s: no message type to parse into", source_name);
        return NULL;
    }
    struct jscan js;
    /* JSON in the plain subset: built directly, within the limits (what the
     * direct loader takes is strict JSON: json_check would pass it) */
    cfg_json_doc_t jdoc;
    bool direct = mode == PARSE_JSON && sharp_cfg_json_load(text, len, &jdoc);
    if (mode == PARSE_JSON && !direct && !json_check(&js, text, len)) {
        json_error(err, source_name, &js,
                   " (a file whose name does not end in .yaml or .yml is read as strict JSON, as Envoy does)");
        return NULL;
    }
    yaml_document_t ydoc;
    int rc = 0;
    if (direct) {
        ydoc = jdoc.doc;
    } else {
        size_t fixed_len = len;
        char *fixed = rewrite_surrogates(text, len, &fixed_len);
        const char *input = untab_json_start(fixed ? fixed : text, fixed_len, &fixed);
        rc = load_document(input, fixed_len, source_name, &ydoc, err);
        free(fixed);
    }
    if (rc < 0) {
        /* libyaml's account of broken JSON (a comment, a trailing comma) is
         * often far from the mistake; YAML text in JSON form gets the JSON
         * checker's position instead */
        if (mode == PARSE_YAML && looks_like_json(text, len) && !json_check(&js, text, len))
            json_error(err, source_name, &js, " (the text is in JSON form)");
        return NULL;
    }

    sharp_config_doc_t *doc = sharp_calloc(1, sizeof *doc);
    doc->source = sharp_strdup(source_name);
    doc->msg = sharp_cfg_new_message(desc);
    cfg_ctx_t c = {.ydoc = &ydoc, .source = doc->source, .err = err, .map = &doc->map, .alone_field = alone_field};
    yaml_node_t *root = yaml_document_get_root_node(&ydoc);
    cfg_scalar_t sc;
    doc->empty = !root || (sharp_cfg_scalar_of(root, &sc) && sc.null);
    if (root) {
        sharp_cfg_note(&c, root);
        rc = direct ? 0 : precheck(&c); /* no alias, and within the limits */
        if (rc == 0) rc = sharp_cfg_map_message(&c, root, doc->msg);
    }
    sharp_sbuf_free(&c.path);
    free(c.phash);
    if (direct) sharp_cfg_json_free(&jdoc);
    else yaml_document_delete(&ydoc);
    doc->refused = c.refused;
    doc->nrefused = c.nrefused;
    if (rc < 0) {
        sharp_config_doc_free(doc);
        return NULL;
    }
    return doc;
}

const sharp_config_refused_t *sharp_config_doc_refused(const sharp_config_doc_t *doc, size_t *n)
{
    *n = doc ? doc->nrefused : 0;
    return doc ? doc->refused : NULL;
}

sharp_config_doc_t *sharp_config_parse(const char *text, size_t len, const char *source_name,
                                       const ProtobufCMessageDescriptor *desc,
                                       sharp_config_error_t *err)
{
    return parse_text(text, len, source_name, desc, err, PARSE_YAML, NULL);
}

sharp_config_doc_t *sharp_config_parse_json(const char *text, size_t len, const char *source_name,
                                            const ProtobufCMessageDescriptor *desc,
                                            sharp_config_error_t *err)
{
    return parse_text(text, len, source_name, desc, err, PARSE_JSON, NULL);
}

static bool ends_with_nocase(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

static int parse_file(const char *path, const ProtobufCMessageDescriptor *desc, const char *alone_field,
                      sharp_config_doc_t **out, sharp_config_error_t *err);

int sharp_config_parse_file(const char *path, const ProtobufCMessageDescriptor *desc,
                            sharp_config_doc_t **out, sharp_config_error_t *err)
{
    return parse_file(path, desc, NULL, out, err);
}

int sharp_config_parse_file_alone(const char *path, const ProtobufCMessageDescriptor *desc, const char *alone_field,
                                  sharp_config_doc_t **out, sharp_config_error_t *err)
{
    return parse_file(path, desc, alone_field, out, err);
}

static int parse_file(const char *path, const ProtobufCMessageDescriptor *desc, const char *alone_field,
                      sharp_config_doc_t **out, sharp_config_error_t *err)
{
    sharp_config_error_t local;
    if (!err) err = &local;
    *out = NULL;
    struct stat st;
    if (stat(path, &st) < 0) {
        if (errno == ENOENT)
            snprintf(err->msg, sizeof err->msg, "%s: no such file (the config path does not exist)", path);
        else
            snprintf(err->msg, sizeof err->msg, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        snprintf(err->msg, sizeof err->msg, "%s: is a directory, not a config file", path);
        return -1;
    }
    /* Envoy's MessageUtil::loadFromFile picks the format by extension */
    if (ends_with_nocase(path, ".pb") || ends_with_nocase(path, ".pb_text")) {
        snprintf(err->msg, sizeof err->msg,
                 "%s: binary (.pb) and text (.pb_text) protobuf config files are not supported: use YAML "
                 "(.yaml/.yml) or JSON", path);
        return -1;
    }
    bool yaml = ends_with_nocase(path, ".yaml") || ends_with_nocase(path, ".yml");
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err->msg, sizeof err->msg, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    sharp_sbuf_t buf = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sharp_sbuf_append(&buf, chunk, n);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err->msg, sizeof err->msg, "%s: read error", path);
        sharp_sbuf_free(&buf);
        return -1;
    }
    *out = parse_text(buf.data ? buf.data : "", buf.len, path, desc, err, yaml ? PARSE_YAML : PARSE_JSON,
                      alone_field);
    sharp_sbuf_free(&buf);
    return *out ? 0 : -1;
}

bool sharp_config_doc_empty(const sharp_config_doc_t *doc)
{
    return doc->empty;
}

ProtobufCMessage *sharp_config_doc_message(sharp_config_doc_t *doc)
{
    return doc->msg;
}

ProtobufCMessage *sharp_config_doc_take_message(sharp_config_doc_t *doc)
{
    ProtobufCMessage *m = doc->msg;
    doc->msg = NULL;
    return m;
}

const char *sharp_config_doc_source(const sharp_config_doc_t *doc)
{
    return doc->source;
}

bool sharp_config_doc_where(const sharp_config_doc_t *doc, const char *path, int *line, int *col)
{
    if (!doc || !path || !doc->map.cap) return false;
    size_t len = strlen(path);
    const struct srcmap_entry *e = srcmap_slot(&doc->map, path, len, hash_bytes(path, len));
    if (e->len == UINT32_MAX) return false;
    *line = e->line;
    *col = e->col;
    return true;
}

void sharp_config_doc_error(const sharp_config_doc_t *doc, const char *path,
                            sharp_config_error_t *err, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int line, col;
    const char *sep = path && *path ? ": " : "";
    if (!path) path = "";
    if (sharp_config_doc_where(doc, path, &line, &col))
        snprintf(err->msg, sizeof err->msg, "%s:%d:%d: %s%s%s", doc->source, line, col, path, sep, what);
    else
        snprintf(err->msg, sizeof err->msg, "%s: %s%s%s", doc->source, path, sep, what);
}

void sharp_config_doc_free(sharp_config_doc_t *doc)
{
    if (!doc) return;
    if (doc->msg) protobuf_c_message_free_unpacked(doc->msg, NULL);
    refused_free(doc->refused, doc->nrefused);
    srcmap_free(&doc->map);
    free(doc->source);
    free(doc);
}
