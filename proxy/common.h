/* common.h: small helpers every SHARP module uses. No module state lives here. */
#ifndef SHARP_COMMON_H
#define SHARP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <stdlib.h>

#define sharp_container_of(ptr, type, member) \
    ((type *)((char *)(1 ? (ptr) : &((type *)0)->member) - offsetof(type, member)))

#define SHARP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SHARP_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SHARP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define sharp_likely(x) __builtin_expect(!!(x), 1)
#define sharp_unlikely(x) __builtin_expect(!!(x), 0)

/* A non-owning byte string. */
typedef struct {
    const char *p;
    size_t len;
} sharp_str_t;

#define SHARP_STR(lit) ((sharp_str_t){(lit), sizeof(lit) - 1})

static inline bool sharp_str_eq(sharp_str_t a, const char *b, size_t blen)
{
    return a.len == blen && memcmp(a.p, b, blen) == 0;
}

/* Zeroed allocation that aborts only on true memory exhaustion. Out of memory
 * is the one condition SHARP does not try to survive: every other failure is
 * a return code. */
void *sharp_calloc(size_t n, size_t size);
void *sharp_realloc(void *p, size_t size);
char *sharp_strndup(const char *s, size_t n);
static inline char *sharp_strdup(const char *s)
{
    return sharp_strndup(s, strlen(s));
}

/* Reads a whole file (a config DataSource) into a NUL-terminated buffer
 * the caller frees. 0; -1 with errno when it cannot be opened or read; -2
 * when it holds more than `max` bytes. */
int sharp_read_file(const char *path, size_t max, char **data, size_t *len);

/* Copies at most cap - 1 bytes of src (n bytes long) and a terminator:
 * snprintf(dst, cap, "%.*s", n, src) without the formatter, for the
 * request path. cap must be at least 1. */
static inline void sharp_copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}
#define SHARP_COPY_CSTR(dst, src) sharp_copy_str((dst), sizeof(dst), (src), strlen(src))

/* Writes v in decimal (no terminator); returns the number of digits.
 * out must hold 20 bytes. Used on the request path instead of snprintf. */
static inline size_t sharp_u64_to_str(uint64_t v, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

/* A hex digit's value, -1 for another character. */
static inline int sharp_hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Number parsing shared by the config, the filters and the tracers:
 * - sharp_parse_dec: decimal digits only (at least one), at most max;
 * - sharp_simple_atou: absl::SimpleAtoi for an unsigned type: blanks
 *   (" \t\n\v\f\r") around, an optional '+', then sharp_parse_dec;
 * - sharp_parse_hex64: 1 to 16 hex digits, nothing else (Envoy's
 *   StringUtil::atoull base 16 without strtoull's signs, blanks and 0x). */
bool sharp_parse_dec(const char *p, size_t n, uint64_t max, uint64_t *out);
bool sharp_simple_atou(sharp_str_t v, uint64_t max, uint64_t *out);
bool sharp_parse_hex64(const char *p, size_t n, uint64_t *out);

/* Percent-decodes `len` bytes of `src` into `dst`, which must hold at least
 * len + 1 bytes, and NUL-terminates it (Envoy's PercentEncoding::decode).
 * "%hh" with two hex digits becomes that byte; a '%' not followed by two hex
 * digits is kept literally, and '+' is kept as '+' (so a regex such as
 * "a.+b" survives unescaped). Returns the decoded length, at most `len`. A
 * decoded NUL byte is kept in the output; callers that need C strings treat
 * it as the end. */
size_t sharp_percent_decode(const char *src, size_t len, char *dst);

/* xorshift64*: fast, 64 bits of state, good enough for load balancing and
 * request ids. The state must not be zero. */
static inline uint64_t sharp_xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* FNV-1a of a NUL-terminated name. */
static inline uint32_t sharp_name_hash(const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 16777619u;
    return h;
}

/* Positions of n names by name, for lookups in constant time where a scan
 * of every name for every other would be quadratic (10,000 clusters in
 * one push). The caller keeps the array and its strings while the index
 * is used; find returns the first position holding the name, or -1. */
typedef struct sharp_name_index {
    const char *const *names;
    uint32_t *slots; /* position + 1, 0: empty */
    uint32_t mask;
} sharp_name_index_t;

void sharp_name_index_init(sharp_name_index_t *ix, const char *const *names, uint32_t n);
int32_t sharp_name_index_find(const sharp_name_index_t *ix, const char *name);
void sharp_name_index_free(sharp_name_index_t *ix);

/* A seeded 64-bit hash for tables whose keys a peer chooses: each step
 * mixes one word into h; sharp_hash_bytes folds a byte string (with its
 * length) into seed. The seed comes from sharp_hash_seed() (random per
 * process) or a worker's random source. */
static inline uint64_t sharp_hash_mix(uint64_t h, uint64_t v)
{
    /* then MurmurHash3's fmix64, so every bit of v reaches the low bits
     * (a bucket index) */
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}
uint64_t sharp_hash_bytes(uint64_t seed, const void *p, size_t n);
uint64_t sharp_hash_seed(void);

/* Monotonic clock in nanoseconds and wall clock in microseconds. */
uint64_t sharp_now_ns(void);
uint64_t sharp_wall_us(void);

/* Http1ProtocolOptions.header_key_format of a codec: how it writes HTTP/1
 * header names it encodes (lower-case, proper_case_words) and, with the
 * preserve_case stateful formatter, that it remembers the spelling of the
 * names it receives (http/headers.h). */
typedef enum { SHARP_H1_KEYS_LOWER = 0, SHARP_H1_KEYS_PROPER, SHARP_H1_KEYS_PRESERVE } sharp_h1_keys_t;
typedef struct {
    uint8_t mode;        /* sharp_h1_keys_t */
    bool proper_others;  /* preserve_case: formatter_type_on_envoy_headers PROPER_CASE */
    bool forward_reason; /* preserve_case: forward_reason_phrase */
} sharp_h1_key_format_t;

#endif
