/* rules.c: see rules.h. */
#include "filters/header_to_metadata/rules.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>


/* absl::SimpleAtod after Envoy's StringUtil::trim: whitespace around, an
 * optional '+' (not "+-"), then what std::from_chars reads in general
 * format: decimal with an optional exponent, inf, infinity or nan, no hex.
 * Out of range is +-infinity. */
static bool parse_number(const char *s, size_t n, double *out)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (n && *s == '+') {
        s++;
        n--;
        if (n && *s == '-') return false;
    }
    if (!n) return false;
    size_t digits = *s == '-' ? 1 : 0;
    if (n > digits + 1 && s[digits] == '0' && (s[digits + 1] == 'x' || s[digits + 1] == 'X'))
        return false;
    if (isspace((unsigned char)s[digits]) || s[digits] == '+' || s[digits] == '-') return false;
    char buf[128];
    char *tmp = n < sizeof buf ? buf : sharp_calloc(n + 1, 1);
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    bool ok = end == tmp + n;
    if (tmp != buf) free(tmp);
    if (!ok) return false;
    *out = d;
    return true;
}

sharp_h2m_result_t sharp_h2m_make_value(const char *s, size_t n, int type, int encode,
                                        sharp_md_value_t *out)
{
    memset(out, 0, sizeof *out);
    if (n >= SHARP_H2M_MAX_VALUE_LEN) return SHARP_H2M_TOO_LONG;
    sharp_sbuf_t dec = {0};
    if (encode == SHARP_H2M_ENCODE_BASE64) {
        if (!sharp_sbuf_base64_decode(&dec, s, n)) {
            sharp_sbuf_free(&dec);
            return SHARP_H2M_BASE64_FAILED;
        }
        s = dec.data;
        n = dec.len;
    }
    sharp_h2m_result_t r = SHARP_H2M_ADDED;
    switch (type) {
    case SHARP_H2M_NUMBER: {
        double d;
        if (parse_number(s, n, &d)) {
            out->kind = SHARP_MD_NUMBER;
            out->number = d;
        } else {
            r = SHARP_H2M_BAD_VALUE;
        }
        break;
    }
    case SHARP_H2M_PROTOBUF_VALUE:
        if (!sharp_md_value_parse((const uint8_t *)s, n, out)) r = SHARP_H2M_BAD_VALUE;
        break;
    default:
        sharp_md_value_string(out, s, n);
        break;
    }
    sharp_sbuf_free(&dec);
    return r;
}

static void kv_lengths(sharp_h2m_kv_t *kv)
{
    if (!kv->set) return;
    kv->ns_len = strlen(kv->ns);
    kv->key_len = strlen(kv->key);
    kv->value_len = strlen(kv->value);
}

void sharp_h2m_rule_lengths(sharp_h2m_rule_t *r)
{
    r->name_len = strlen(r->header ? r->header : r->cookie);
    kv_lengths(&r->present);
    kv_lengths(&r->missing);
}

/* Envoy's applyKeyValue: the pair's own value, else the header's through
 * the rule's rewrite; nothing for an empty result. */
static void apply_kv(const sharp_h2m_rule_t *r, const sharp_h2m_kv_t *kv, const char *v, size_t n,
                     sharp_dynamic_metadata_t **md, sharp_h2m_counts_t *counts)
{
    char *rewritten = NULL;
    if (kv->value_len) {
        v = kv->value;
        n = kv->value_len;
    } else if (r->re) {
        size_t outlen = 0;
        if (sharp_re2_replace_all(r->re, v, n, r->subst, &rewritten, &outlen) < 0) return;
        if (n && !outlen) counts->regex_substitution_failed++;
        v = rewritten;
        n = outlen;
    }
    if (n) {
        sharp_md_value_t val;
        switch (sharp_h2m_make_value(v, n, kv->type, kv->encode, &val)) {
        case SHARP_H2M_ADDED:
            sharp_dynamic_metadata_set(md, kv->ns, kv->ns_len, kv->key, kv->key_len, &val);
            counts->metadata_added++;
            break;
        case SHARP_H2M_TOO_LONG:
            counts->header_value_too_long++;
            break;
        case SHARP_H2M_BASE64_FAILED:
            counts->base64_decode_failed++;
            break;
        case SHARP_H2M_BAD_VALUE:
            break;
        }
        sharp_md_value_clear(&val);
    }
    free(rewritten);
}

/* The rule's value: every value of the header joined with ',' (Envoy's
 * getAllOfHeaderAsString), removed after when the rule says so; or the
 * cookie's. False when absent. */
static bool extract(const sharp_h2m_rule_t *r, sharp_headers_t *h, sharp_sbuf_t *out)
{
    if (!r->header) {
        sharp_str_t v;
        if (!sharp_headers_cookie_value(h, r->cookie, r->name_len, &v)) return false;
        sharp_sbuf_append(out, v.p, v.len);
        return true;
    }
    sharp_str_t v;
    if (!sharp_headers_get_all(h, r->header, r->name_len, out, &v)) return false;
    /* one value is not in `out` yet; copied before a remove drops it */
    if (v.p != out->data) {
        sharp_sbuf_reset(out);
        sharp_sbuf_append(out, v.p, v.len);
    }
    if (r->remove) sharp_headers_remove(h, r->header, r->name_len);
    return true;
}

void sharp_h2m_apply(const sharp_h2m_rule_t *rules, uint32_t n, sharp_headers_t *h,
                     sharp_dynamic_metadata_t **md, sharp_h2m_counts_t *counts)
{
    sharp_sbuf_t v = {0};
    for (uint32_t i = 0; i < n; i++) {
        const sharp_h2m_rule_t *r = &rules[i];
        sharp_sbuf_reset(&v);
        bool present = extract(r, h, &v);
        counts->rules_processed++;
        if (present && r->present.set) {
            apply_kv(r, &r->present, v.data ? v.data : "", v.len, md, counts);
        } else if (!present && r->missing.set) {
            counts->header_not_found++;
            apply_kv(r, &r->missing, "", 0, md, counts);
        }
    }
    sharp_sbuf_free(&v);
}
