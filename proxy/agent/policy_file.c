/* policy_file.c: see policy_file.h. */
#include "policy_file.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent_util.h"

#define HEADER_SIZE 64

uint32_t sharp_crc32(uint32_t crc, const void *data, size_t len)
{
    /* Bit by bit: policy files are small, and no table means no shared
     * state to initialize. */
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put_u32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
}

static void put_f64(unsigned char *b, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_u64(b, v);
}

static uint32_t get_u32(const unsigned char *b)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static uint64_t get_u64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static double get_f64(const unsigned char *b)
{
    uint64_t v = get_u64(b);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

#define FLAG_NORM 1u
#define FLAG_RANGE 2u

static size_t file_size_for(size_t obs_dim, size_t n_params, bool range)
{
    return HEADER_SIZE + (range ? 32 : 16) * obs_dim + 8 * n_params + 4;
}

int sharp_policy_save(const sharp_policy_t *p, const char *path, char *err, size_t errlen)
{
    size_t size = file_size_for((size_t)p->obs_dim, p->n_params, p->has_range);
    unsigned char *buf = agent_calloc(size, 1);
    memcpy(buf, SHARP_POLICY_FILE_MAGIC, 8);
    put_u32(buf + 8, SHARP_POLICY_FILE_VERSION);
    put_u32(buf + 12, (uint32_t)p->obs_dim);
    put_u32(buf + 16, (uint32_t)p->n_actions);
    put_u32(buf + 20, (uint32_t)p->n_hidden);
    for (int i = 0; i < p->n_hidden; i++)
        put_u32(buf + 24 + 4 * i, (uint32_t)p->hidden[i]);
    put_u32(buf + 36, (p->norm_obs ? FLAG_NORM : 0u) | (p->has_range ? FLAG_RANGE : 0u));
    put_u64(buf + 40, (uint64_t)p->n_params);
    put_f64(buf + 48, p->norm.count);
    put_f64(buf + 56, p->norm.clip);
    unsigned char *q = buf + HEADER_SIZE;
    for (int i = 0; i < p->obs_dim; i++, q += 8)
        put_f64(q, p->norm.mean[i]);
    for (int i = 0; i < p->obs_dim; i++, q += 8)
        put_f64(q, p->norm.var[i]);
    if (p->has_range) {
        for (int i = 0; i < p->obs_dim; i++, q += 8)
            put_f64(q, p->range_lo[i]);
        for (int i = 0; i < p->obs_dim; i++, q += 8)
            put_f64(q, p->range_hi[i]);
    }
    for (size_t i = 0; i < p->n_params; i++, q += 8)
        put_f64(q, p->params[i]);
    put_u32(q, sharp_crc32(0, buf, size - 4));

    size_t tlen = strlen(path) + 16;
    char *tmp = agent_calloc(tlen, 1);
    snprintf(tmp, tlen, "%s.tmp", path);
    int rc = -1;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    size_t wrote = fwrite(buf, 1, size, f);
    int werr = ferror(f) ? errno : 0;
    if (fclose(f) != 0 && !werr)
        werr = errno ? errno : EIO;
    if (wrote != size || werr) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(werr ? werr : EIO));
        remove(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        remove(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(buf);
    return rc;
}

sharp_policy_t *sharp_policy_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    sharp_policy_t *p = NULL;
    unsigned char *buf = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    /* The header first: the size the file should have comes from it, and
     * nothing larger than the header is read or allocated before the
     * header is known to be sane. */
    unsigned char head[HEADER_SIZE];
    size_t have = sb.st_size > 0 ? (size_t)sb.st_size : 0;
    size_t got = fread(head, 1, have < HEADER_SIZE ? have : HEADER_SIZE, f);
    if (got != (have < HEADER_SIZE ? have : HEADER_SIZE)) {
        snprintf(err, errlen, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "file shrank while reading");
        goto out;
    }
    if (have < 8 || memcmp(head, SHARP_POLICY_FILE_MAGIC, 8) != 0) {
        /* Too short to tell: truncated only if what is there agrees with
         * the magic. */
        if (have < 8 && memcmp(head, SHARP_POLICY_FILE_MAGIC, have) == 0)
            snprintf(err, errlen, "%s: truncated (%zu bytes, the header alone is %d)", path, have, HEADER_SIZE);
        else
            snprintf(err, errlen, "%s: not a SHARP policy file (bad magic)", path);
        goto out;
    }
    if (have < 12) {
        snprintf(err, errlen, "%s: truncated (%zu bytes, the header alone is %d)", path, have, HEADER_SIZE);
        goto out;
    }
    uint32_t version = get_u32(head + 8);
    if (version != SHARP_POLICY_FILE_VERSION) {
        snprintf(err, errlen, "%s: unsupported policy file version %u (this build reads version %u)", path, version,
                 SHARP_POLICY_FILE_VERSION);
        goto out;
    }
    if (have < HEADER_SIZE) {
        snprintf(err, errlen, "%s: truncated (%zu bytes, the header alone is %d)", path, have, HEADER_SIZE);
        goto out;
    }
    uint32_t obs_dim = get_u32(head + 12), n_actions = get_u32(head + 16), n_hidden = get_u32(head + 20);
    uint32_t flags = get_u32(head + 36);
    uint64_t n_params = get_u64(head + 40);
    int hidden[SHARP_POLICY_MAX_HIDDEN] = {0};
    if (obs_dim < 1 || obs_dim > SHARP_POLICY_MAX_OBS || n_actions < 2 || n_actions > SHARP_POLICY_MAX_ACTIONS ||
        n_hidden < 1 || n_hidden > SHARP_POLICY_MAX_HIDDEN) {
        snprintf(err, errlen, "%s: corrupt header: dimensions out of bounds (obs %u, actions %u, hidden layers %u)",
                 path, obs_dim, n_actions, n_hidden);
        goto out;
    }
    for (uint32_t i = 0; i < SHARP_POLICY_MAX_HIDDEN; i++) {
        uint32_t h = get_u32(head + 24 + 4 * i);
        if (i < n_hidden ? (h < 1 || h > SHARP_MLP_MAX_WIDTH) : h != 0) {
            snprintf(err, errlen, "%s: corrupt header: hidden layer %u has width %u", path, i, h);
            goto out;
        }
        if (i < n_hidden)
            hidden[i] = (int)h;
    }
    if (flags & ~(FLAG_NORM | FLAG_RANGE)) {
        snprintf(err, errlen, "%s: corrupt header: unknown flags 0x%x", path, flags);
        goto out;
    }
    /* Sizes from the dimensions alone: nothing is allocated for a header
     * until the file is known to be as long as it says and intact. */
    int sizes[SHARP_MLP_MAX_LAYERS + 1];
    sizes[0] = (int)obs_dim;
    for (uint32_t i = 0; i < n_hidden; i++)
        sizes[i + 1] = hidden[i];
    sharp_mlp_t actor, critic;
    sizes[n_hidden + 1] = (int)n_actions;
    int shape_ok = sharp_mlp_shape(&actor, sizes, (int)n_hidden + 1) == 0;
    sizes[n_hidden + 1] = 1;
    shape_ok = shape_ok && sharp_mlp_shape(&critic, sizes, (int)n_hidden + 1) == 0;
    if (!shape_ok) {
        snprintf(err, errlen, "%s: corrupt header: unusable dimensions", path);
        goto out;
    }
    size_t count_params = actor.n_params + critic.n_params;
    if (n_params != count_params) {
        snprintf(err, errlen, "%s: corrupt header: %llu parameters where the dimensions make %zu", path,
                 (unsigned long long)n_params, count_params);
        goto out;
    }
    bool range = flags & FLAG_RANGE;
    size_t want = file_size_for(obs_dim, count_params, range);
    if (have < want) {
        snprintf(err, errlen, "%s: truncated (%zu bytes of %zu)", path, have, want);
        goto out;
    }
    if (have > want) {
        snprintf(err, errlen, "%s: %zu unexpected bytes after the policy", path, have - want);
        goto out;
    }
    buf = agent_calloc(want, 1);
    memcpy(buf, head, HEADER_SIZE);
    if (fread(buf + HEADER_SIZE, 1, want - HEADER_SIZE, f) != want - HEADER_SIZE) {
        snprintf(err, errlen, "cannot read %s: %s", path, ferror(f) ? strerror(errno) : "file shrank while reading");
        goto out;
    }
    uint32_t crc = get_u32(buf + want - 4), calc = sharp_crc32(0, buf, want - 4);
    if (crc != calc) {
        snprintf(err, errlen, "%s: checksum mismatch (stored %08x, computed %08x): the file is corrupt", path, crc,
                 calc);
        goto out;
    }
    double count = get_f64(buf + 48), clip = get_f64(buf + 56);
    if (!(clip > 0.0 && isfinite(clip)) || !(count >= 0.0 && isfinite(count))) {
        snprintf(err, errlen, "%s: invalid normalizer statistics", path);
        goto out;
    }
    p = sharp_policy_new((int)obs_dim, (int)n_actions, hidden, (int)n_hidden, flags & FLAG_NORM, clip);
    if (!p) {
        snprintf(err, errlen, "%s: corrupt header: unusable dimensions", path);
        goto out;
    }
    p->norm.count = count;
    const unsigned char *q = buf + HEADER_SIZE;
    for (uint32_t i = 0; i < obs_dim; i++, q += 8)
        p->norm.mean[i] = get_f64(q);
    for (uint32_t i = 0; i < obs_dim; i++, q += 8)
        p->norm.var[i] = get_f64(q);
    for (uint32_t i = 0; i < obs_dim; i++) {
        if (!isfinite(p->norm.mean[i]) || !isfinite(p->norm.var[i]) || p->norm.var[i] < 0.0) {
            snprintf(err, errlen, "%s: invalid normalizer statistics for observation %u", path, i);
            goto fail;
        }
    }
    if (range) {
        p->has_range = true;
        for (uint32_t i = 0; i < obs_dim; i++, q += 8)
            p->range_lo[i] = get_f64(q);
        for (uint32_t i = 0; i < obs_dim; i++, q += 8)
            p->range_hi[i] = get_f64(q);
        for (uint32_t i = 0; i < obs_dim; i++) {
            if (!isfinite(p->range_lo[i]) || !isfinite(p->range_hi[i]) || p->range_lo[i] > p->range_hi[i]) {
                snprintf(err, errlen, "%s: invalid trained range for observation %u", path, i);
                goto fail;
            }
        }
    }
    for (size_t i = 0; i < p->n_params; i++, q += 8) {
        p->params[i] = get_f64(q);
        if (!isfinite(p->params[i])) {
            snprintf(err, errlen, "%s: parameter %zu is not a finite number", path, i);
            goto fail;
        }
    }
    goto out;
fail:
    sharp_policy_free(p);
    p = NULL;
out:
    free(buf);
    fclose(f);
    return p;
}
