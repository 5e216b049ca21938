/* util.c: allocation, clocks and the name index (see common.h). */
#include "common.h"

#include <errno.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <unistd.h>
#include <string.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

void *sharp_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("sharp: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *sharp_realloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q) {
        fputs("sharp: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *sharp_strndup(const char *s, size_t n)
{
    char *d = sharp_calloc(1, n + 1);
    memcpy(d, s, n);
    return d;
}

uint64_t sharp_hash_bytes(uint64_t seed, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = sharp_hash_mix(seed, n);
    for (; n >= 8; b += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = sharp_hash_mix(h, w);
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, b, n);
        h = sharp_hash_mix(h, w);
    }
    return h;
}

uint64_t sharp_hash_seed(void)
{
    static _Atomic uint64_t seed;
    uint64_t s = seed;
    if (s) return s;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s = sharp_now_ns() ^ (uint64_t)getpid() << 32;
    s |= 1;
    uint64_t zero = 0;
    return atomic_compare_exchange_strong(&seed, &zero, s) ? s : seed;
}

uint64_t sharp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t sharp_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000;
}

int sharp_read_file(const char *path, size_t max, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    size_t cap = 4096, n = 0;
    char *buf = sharp_realloc(NULL, cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= max) {
                fclose(fp);
                free(buf);
                return -2;
            }
            cap *= 2;
            buf = sharp_realloc(buf, cap + 1);
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0) break;
    }
    bool bad = ferror(fp);
    int e = errno;
    fclose(fp);
    if (bad) {
        free(buf);
        errno = e;
        return -1;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

void sharp_name_index_init(sharp_name_index_t *ix, const char *const *names, uint32_t n)
{
    uint32_t cap = 8;
    while (cap < 2 * n) cap <<= 1;
    ix->names = names;
    ix->slots = sharp_calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    /* in order: along a probe sequence the first position with a name
     * comes before the later ones */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t k = sharp_name_hash(names[i]) & ix->mask;
        while (ix->slots[k]) k = (k + 1) & ix->mask;
        ix->slots[k] = i + 1;
    }
}

int32_t sharp_name_index_find(const sharp_name_index_t *ix, const char *name)
{
    for (uint32_t k = sharp_name_hash(name) & ix->mask; ix->slots[k]; k = (k + 1) & ix->mask)
        if (!strcmp(ix->names[ix->slots[k] - 1], name)) return (int32_t)ix->slots[k] - 1;
    return -1;
}

void sharp_name_index_free(sharp_name_index_t *ix)
{
    free(ix->slots);
    ix->slots = NULL;
}

bool sharp_parse_dec(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    if (!n) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

bool sharp_simple_atou(sharp_str_t v, uint64_t max, uint64_t *out)
{
    const char *p = v.p, *e = v.p + v.len;
    while (p < e && is_blank(*p))
        p++;
    while (e > p && is_blank(e[-1]))
        e--;
    if (p < e && *p == '+') p++;
    return sharp_parse_dec(p, (size_t)(e - p), max, out);
}

bool sharp_parse_hex64(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 16) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = sharp_hexval((unsigned char)p[i]);
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return true;
}

size_t sharp_percent_decode(const char *src, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        /* needs two characters after the '%': indexes i+1 and i+2 */
        if (src[i] == '%' && len - i > 2) {
            int h = sharp_hexval((unsigned char)src[i + 1]), l = sharp_hexval((unsigned char)src[i + 2]);
            if (h >= 0 && l >= 0) {
                dst[o++] = (char)(h * 16 + l);
                i += 2;
                continue;
            }
        }
        dst[o++] = src[i];
    }
    dst[o] = '\0';
    return o;
}
