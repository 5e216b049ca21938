/* access_log.c: see access_log.h. The format compiler lives here; the
 * operators' values and the file sink are in access_log_ops.c. */
#include "http/access_log_internal.h"

#include "google/protobuf/struct.pb-c.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static const struct {
    const char *name;
    al_op_t op;
    unsigned flags;
} commands[] = {
    {"START_TIME", OP_START_TIME, CMD_ARG_OPTIONAL},
    {"REQ", OP_REQ, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"REQUEST_HEADER", OP_REQ, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"RESP", OP_RESP, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"RESPONSE_HEADER", OP_RESP, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"TRAILER", OP_TRAILER, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"RESPONSE_TRAILER", OP_TRAILER, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, CMD_NUMERIC},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, 0},
    {"RESPONSE_CODE_DETAILS", OP_RESPONSE_CODE_DETAILS, 0},
    {"BYTES_RECEIVED", OP_BYTES_RECEIVED, CMD_NUMERIC},
    {"BYTES_SENT", OP_BYTES_SENT, CMD_NUMERIC},
    {"DURATION", OP_DURATION, CMD_NUMERIC},
    {"REQUEST_DURATION", OP_REQUEST_DURATION, CMD_NUMERIC},
    {"RESPONSE_DURATION", OP_RESPONSE_DURATION, CMD_NUMERIC},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", OP_ATTEMPT_COUNT, CMD_NUMERIC},
    {"UPSTREAM_HOST", OP_UPSTREAM_HOST, 0},
    {"UPSTREAM_REMOTE_ADDRESS", OP_UPSTREAM_HOST, 0},
    {"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_UPSTREAM_HOST_NOPORT, 0},
    {"UPSTREAM_CLUSTER", OP_UPSTREAM_CLUSTER, 0},
    {"UPSTREAM_CLUSTER_RAW", OP_UPSTREAM_CLUSTER_RAW, 0},
    {"UPSTREAM_LOCAL_ADDRESS", OP_UPSTREAM_LOCAL, 0},
    {"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_UPSTREAM_LOCAL_NOPORT, 0},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", OP_UPSTREAM_FAILURE_REASON, 0},
    /* SHARP: the last try's host's diagnosis (upstream/diagnosis.h) */
    {"UPSTREAM_HOST_DIAGNOSIS", OP_UPSTREAM_HOST_DIAGNOSIS, 0},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_DOWNSTREAM_REMOTE, 0},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_REMOTE_NOPORT, 0},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_DOWNSTREAM_DIRECT_REMOTE, 0},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_DIRECT_REMOTE_NOPORT, 0},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_DOWNSTREAM_LOCAL, 0},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_DOWNSTREAM_LOCAL_NOPORT, 0},
    {"DOWNSTREAM_LOCAL_PORT", OP_DOWNSTREAM_LOCAL_PORT, CMD_NUMERIC},
    {"DOWNSTREAM_REMOTE_PORT", OP_DOWNSTREAM_REMOTE_PORT, CMD_NUMERIC},
    {"PROTOCOL", OP_PROTOCOL, 0},
    {"ROUTE_NAME", OP_ROUTE_NAME, 0},
    {"HOSTNAME", OP_HOSTNAME, 0},
    {"LOCAL_REPLY_BODY", OP_LOCAL_REPLY_BODY, 0},
    {"GRPC_STATUS", OP_GRPC_STATUS, CMD_ARG_OPTIONAL},
    {"GRPC_STATUS_NUMBER", OP_GRPC_STATUS_NUMBER, CMD_NUMERIC},
    {"DOWNSTREAM_TLS_VERSION", OP_DOWNSTREAM_TLS_VERSION, 0},
    {"DOWNSTREAM_TLS_CIPHER", OP_DOWNSTREAM_TLS_CIPHER, 0},
    {"REQUESTED_SERVER_NAME", OP_REQUESTED_SERVER_NAME, 0},
    {"DOWNSTREAM_PEER_URI_SAN", OP_DOWNSTREAM_PEER_URI_SAN, 0},
    {"DOWNSTREAM_PEER_SUBJECT", OP_DOWNSTREAM_PEER_SUBJECT, 0},
    {"DOWNSTREAM_LOCAL_SUBJECT", OP_DOWNSTREAM_LOCAL_SUBJECT, 0},
    {"UPSTREAM_TLS_VERSION", OP_UPSTREAM_TLS_VERSION, 0},
    {"UPSTREAM_TLS_CIPHER", OP_UPSTREAM_TLS_CIPHER, 0},
    {"UPSTREAM_TLS_SESSION_ID", OP_UPSTREAM_TLS_SESSION_ID, 0},
    {"UPSTREAM_PEER_SUBJECT", OP_UPSTREAM_PEER_SUBJECT, 0},
    {"UPSTREAM_PEER_ISSUER", OP_UPSTREAM_PEER_ISSUER, 0},
    {"UPSTREAM_PEER_CERT", OP_UPSTREAM_PEER_CERT, 0},
    {"UPSTREAM_PEER_URI_SAN", OP_UPSTREAM_PEER_URI_SAN, 0},
    {"UPSTREAM_PEER_DNS_SAN", OP_UPSTREAM_PEER_DNS_SAN, 0},
    {"UPSTREAM_PEER_IP_SAN", OP_UPSTREAM_PEER_IP_SAN, 0},
    {"UPSTREAM_LOCAL_URI_SAN", OP_UPSTREAM_LOCAL_URI_SAN, 0},
    {"UPSTREAM_LOCAL_DNS_SAN", OP_UPSTREAM_LOCAL_DNS_SAN, 0},
    {"UPSTREAM_LOCAL_IP_SAN", OP_UPSTREAM_LOCAL_IP_SAN, 0},
    {"UPSTREAM_PEER_CERT_V_START", OP_UPSTREAM_PEER_CERT_V_START, CMD_ARG_OPTIONAL},
    {"UPSTREAM_PEER_CERT_V_END", OP_UPSTREAM_PEER_CERT_V_END, CMD_ARG_OPTIONAL},
    {"DYNAMIC_METADATA", OP_DYNAMIC_METADATA, CMD_ARG_REQUIRED | CMD_LEN_ALLOWED},
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static al_piece_t *new_piece(al_field_t *fl)
{
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 8;
        fl->pieces = sharp_realloc(fl->pieces, fl->cap * sizeof *fl->pieces);
    }
    al_piece_t *p = &fl->pieces[fl->n++];
    memset(p, 0, sizeof *p);
    return p;
}

/* Literal text joins the previous literal piece when there is one. */
static void add_literal(al_field_t *fl, const char *s, size_t n)
{
    if (!n) return;
    al_piece_t *p = fl->n && fl->pieces[fl->n - 1].op == OP_LITERAL ? &fl->pieces[fl->n - 1] : NULL;
    if (!p) {
        p = new_piece(fl);
        p->op = OP_LITERAL;
    }
    p->text = sharp_realloc(p->text, p->len + n + 1);
    memcpy(p->text + p->len, s, n);
    p->len += n;
    p->text[p->len] = '\0';
}

static char *lower_dup(const char *s, size_t n)
{
    char *d = sharp_strndup(s, n);
    for (size_t i = 0; i < n; i++)
        d[i] = (char)tolower((unsigned char)d[i]);
    return d;
}

/* Splits START_TIME's format into strftime text and the specifiers Envoy
 * (and absl, whose syntax the default format uses) add: %s epoch seconds,
 * %f / %1f..%9f fractional digits, %E<n>S and %E*S seconds with a fraction,
 * %E<n>f and %E*f the fraction alone, %Ez the UTC offset "+00:00", %E4Y the
 * year. Everything else is left to strftime, including "%%". */
typedef struct {
    al_time_seg_t *v;
    uint32_t n, cap;
    sharp_sbuf_t text; /* strftime text not yet pushed */
} seg_builder_t;

/* Pushes the pending strftime text as a segment, then (unless `kind` is
 * TS_STRFTIME, which only flushes) a special segment. */
static void seg_push(seg_builder_t *b, al_time_kind_t kind, int digits)
{
    for (int pass = 0; pass < 2; pass++) {
        bool text = pass == 0;
        if (text ? !b->text.len : kind == TS_STRFTIME) continue;
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 4;
            b->v = sharp_realloc(b->v, b->cap * sizeof *b->v);
        }
        al_time_seg_t *sg = &b->v[b->n++];
        memset(sg, 0, sizeof *sg);
        if (text) {
            sg->kind = TS_STRFTIME;
            sg->text = sharp_strndup(b->text.data, b->text.len);
            sharp_sbuf_reset(&b->text);
        } else {
            sg->kind = kind;
            sg->digits = digits;
        }
    }
}

/* Splits START_TIME's format into strftime text and the specifiers Envoy
 * (and absl, whose syntax the default format uses) add: %s epoch seconds,
 * %f / %1f..%9f fractional digits, %E<n>S and %E*S seconds with a fraction,
 * %E<n>f and %E*f the fraction alone, %Ez the UTC offset "+00:00", %E4Y the
 * year. Everything else is left to strftime, including "%%". */
static void compile_time_format(al_piece_t *p, const char *f, size_t n)
{
    seg_builder_t b = {0};
    for (size_t i = 0; i < n; i++) {
        if (f[i] != '%' || i + 1 >= n) {
            sharp_sbuf_append(&b.text, f + i, 1);
            continue;
        }
        char c = f[i + 1];
        if (c == '%') {
            sharp_sbuf_append(&b.text, "%%", 2);
            i++;
        } else if (c == 's') {
            seg_push(&b, TS_EPOCH, 0);
            i++;
        } else if (c == 'f') {
            seg_push(&b, TS_FRACTION, 9);
            i++;
        } else if (c >= '1' && c <= '9' && i + 2 < n && f[i + 2] == 'f') {
            seg_push(&b, TS_FRACTION, c - '0');
            i += 2;
        } else if (c == 'E' && i + 3 < n && (isdigit((unsigned char)f[i + 2]) || f[i + 2] == '*') &&
                   (f[i + 3] == 'S' || f[i + 3] == 'f')) {
            bool star = f[i + 2] == '*';
            int digits = star ? 9 : f[i + 2] - '0';
            if (f[i + 3] == 'S') {
                sharp_sbuf_append(&b.text, "%S", 2);
                if (star)
                    seg_push(&b, TS_FRACTION_TRIM_DOT, 9);
                else if (digits)
                    seg_push(&b, TS_FRACTION_DOT, digits);
            } else {
                seg_push(&b, star ? TS_FRACTION_TRIM : TS_FRACTION, digits);
            }
            i += 3;
        } else if (c == 'E' && i + 2 < n && f[i + 2] == 'z') {
            sharp_sbuf_append(&b.text, "+00:00", 6);
            i += 2;
        } else if (c == 'E' && i + 3 < n && f[i + 2] == '4' && f[i + 3] == 'Y') {
            sharp_sbuf_append(&b.text, "%Y", 2);
            i += 3;
        } else {
            sharp_sbuf_append(&b.text, f + i, 2);
            i++;
        }
    }
    seg_push(&b, TS_STRFTIME, 0);
    sharp_sbuf_free(&b.text);
    p->segs = b.v;
    p->nsegs = b.n;
}

/* Parses one operator, %NAME%, %NAME(arg)% or %NAME(arg):N%, starting at
 * the '%' at fmt[*pos], appends it to the field as a piece and moves *pos
 * past its closing '%'. False with a message naming the operator on error. */
static bool parse_command(al_field_t *fl, const char *fmt, size_t *pos, char *err, size_t errlen)
{
    size_t start = *pos, i = start + 1;
    size_t name_start = i;
    while (fmt[i] &&
           (isupper((unsigned char)fmt[i]) || isdigit((unsigned char)fmt[i]) || fmt[i] == '_'))
        i++;
    size_t name_len = i - name_start;
    const char *arg = NULL;
    size_t arg_len = 0;
    if (fmt[i] == '(') {
        const char *close = strchr(fmt + i + 1, ')');
        if (!close) {
            seterr(err, errlen, "unterminated '(' in command operator at offset %zu", start);
            return false;
        }
        arg = fmt + i + 1;
        arg_len = (size_t)(close - arg);
        i = (size_t)(close - fmt) + 1;
    }
    bool has_len = false;
    size_t max_len = 0;
    if (fmt[i] == ':') {
        i++;
        if (!isdigit((unsigned char)fmt[i])) {
            seterr(err, errlen, "expected a length after ':' in command operator at offset %zu",
                   start);
            return false;
        }
        while (isdigit((unsigned char)fmt[i])) {
            max_len = max_len * 10 + (size_t)(fmt[i] - '0');
            if (max_len > 1u << 30) break;
            i++;
        }
        has_len = true;
    }
    if (!name_len || fmt[i] != '%') {
        seterr(err, errlen,
               "invalid or unterminated command operator at offset %zu (text \"%.*s\")", start,
               (int)SHARP_MIN(strlen(fmt + start), 32), fmt + start);
        return false;
    }
    int cmd = -1;
    for (size_t k = 0; k < SHARP_ARRAY_SIZE(commands); k++)
        if (strlen(commands[k].name) == name_len &&
            memcmp(commands[k].name, fmt + name_start, name_len) == 0)
            cmd = (int)k;
    if (cmd < 0) {
        seterr(err, errlen, "unknown command operator %%%.*s%% at offset %zu", (int)name_len,
               fmt + name_start, start);
        return false;
    }
    unsigned flags = commands[cmd].flags;
    if ((flags & CMD_ARG_REQUIRED) && (!arg || !arg_len) && commands[cmd].op == OP_DYNAMIC_METADATA) {
        seterr(err, errlen, "command operator %%DYNAMIC_METADATA%% requires a namespace, e.g. "
                            "%%DYNAMIC_METADATA(envoy.lb:version)%%");
        return false;
    }
    if ((flags & CMD_ARG_REQUIRED) && (!arg || !arg_len)) {
        seterr(err, errlen, "command operator %%%s%% requires a header name, e.g. %%%s(X-FOO)%%",
               commands[cmd].name, commands[cmd].name);
        return false;
    }
    if (arg && !(flags & (CMD_ARG_REQUIRED | CMD_ARG_OPTIONAL))) {
        seterr(err, errlen, "command operator %%%s%% takes no argument", commands[cmd].name);
        return false;
    }
    if (has_len && !(flags & CMD_LEN_ALLOWED)) {
        seterr(err, errlen, "command operator %%%s%% takes no length", commands[cmd].name);
        return false;
    }
    const char *q = arg && commands[cmd].op != OP_DYNAMIC_METADATA ? memchr(arg, '?', arg_len) : NULL;
    if (q && memchr(q + 1, '?', arg_len - (size_t)(q + 1 - arg))) {
        seterr(err, errlen, "more than one alternative header in %%%s(%.*s)%%", commands[cmd].name,
               (int)arg_len, arg);
        return false;
    }
    al_piece_t *p = new_piece(fl);
    p->op = commands[cmd].op;
    p->numeric = (flags & CMD_NUMERIC) != 0;
    p->has_max = has_len;
    p->max_len = max_len;
    if (p->op == OP_REQ || p->op == OP_RESP || p->op == OP_TRAILER) {
        size_t main_len = q ? (size_t)(q - arg) : arg_len;
        p->text = lower_dup(arg, main_len);
        p->len = main_len;
        if (q) {
            p->alt = lower_dup(q + 1, arg_len - main_len - 1);
            p->alt_len = arg_len - main_len - 1;
        }
    } else if (p->op == OP_DYNAMIC_METADATA) {
        /* NAMESPACE:KEY*: the namespace, then a path of keys into it */
        const char *end = arg + arg_len, *c = memchr(arg, ':', arg_len);
        p->text = sharp_strndup(arg, (size_t)((c ? c : end) - arg));
        p->len = strlen(p->text);
        while (c) {
            const char *k = c + 1;
            c = memchr(k, ':', (size_t)(end - k));
            p->path = sharp_realloc(p->path, (p->npath + 1) * sizeof *p->path);
            p->path[p->npath++] = sharp_strndup(k, (size_t)((c ? c : end) - k));
        }
    } else if (p->op == OP_GRPC_STATUS && arg) {
        /* %GRPC_STATUS(CAMEL_STRING|SNAKE_STRING|NUMBER)% */
        if (arg_len == 12 && memcmp(arg, "CAMEL_STRING", 12) == 0) {
        } else if (arg_len == 12 && memcmp(arg, "SNAKE_STRING", 12) == 0) {
            p->op = OP_GRPC_STATUS_SNAKE;
        } else if (arg_len == 6 && memcmp(arg, "NUMBER", 6) == 0) {
            p->op = OP_GRPC_STATUS_NUMBER;
            p->numeric = true;
        } else {
            fl->n--;
            seterr(err, errlen, "GRPC_STATUS only supports CAMEL_STRING, SNAKE_STRING or NUMBER, not %.*s",
                   (int)arg_len, arg);
            return false;
        }
    } else if (p->op == OP_START_TIME || p->op == OP_UPSTREAM_PEER_CERT_V_START ||
               p->op == OP_UPSTREAM_PEER_CERT_V_END) {
        if (arg && arg_len)
            compile_time_format(p, arg, arg_len);
        else
            compile_time_format(p, "%Y-%m-%dT%H:%M:%E3SZ", 20);
    }
    *pos = i + 1;
    return true;
}

/* Splits a format into literal and operator pieces; "%%" is a literal '%'. */
static bool compile_field(al_field_t *fl, const char *fmt, char *err, size_t errlen)
{
    size_t i = 0, lit = 0;
    while (fmt[i]) {
        if (fmt[i] != '%') {
            i++;
            continue;
        }
        add_literal(fl, fmt + lit, i - lit);
        if (fmt[i + 1] == '%') {
            add_literal(fl, "%", 1);
            i += 2;
        } else if (!parse_command(fl, fmt, &i, err, errlen)) {
            return false;
        }
        lit = i;
    }
    add_literal(fl, fmt + lit, i - lit);
    return true;
}

static void free_field(al_field_t *fl)
{
    for (uint32_t i = 0; i < fl->nchildren; i++)
        free_field(&fl->children[i]);
    free(fl->children);
    for (uint32_t i = 0; i < fl->n; i++) {
        al_piece_t *p = &fl->pieces[i];
        free(p->text);
        free(p->alt);
        for (uint32_t k = 0; k < p->npath; k++)
            free(p->path[k]);
        free(p->path);
        for (uint32_t s = 0; s < p->nsegs; s++)
            free(p->segs[s].text);
        free(p->segs);
    }
    free(fl->pieces);
    free(fl->key);
}

void sharp_access_log_format_free(sharp_access_log_format_t *f)
{
    if (!f) return;
    for (uint32_t i = 0; i < f->nfields; i++)
        free_field(&f->fields[i]);
    free(f->fields);
    free(f->hostname);
    free(f);
}

static sharp_access_log_format_t *new_format(uint32_t nfields)
{
    sharp_access_log_format_t *f = sharp_calloc(1, sizeof *f);
    f->fields = sharp_calloc(nfields ? nfields : 1, sizeof *f->fields);
    f->nfields = nfields;
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "-");
    f->hostname = sharp_strdup(host);
    return f;
}

sharp_access_log_format_t *sharp_access_log_format_compile(const char *fmt, char *err,
                                                           size_t errlen)
{
    if (!fmt) fmt = SHARP_ACCESS_LOG_DEFAULT_FORMAT;
    sharp_access_log_format_t *f = new_format(1);
    if (!compile_field(&f->fields[0], fmt, err, errlen)) {
        sharp_access_log_format_free(f);
        return NULL;
    }
    return f;
}

void sharp_access_log_format_set_omit_empty(sharp_access_log_format_t *f, bool omit)
{
    f->omit_empty = omit;
}

static int cmp_field_key(const void *a, const void *b)
{
    return strcmp(((const al_field_t *)a)->key, ((const al_field_t *)b)->key);
}

sharp_access_log_format_t *sharp_access_log_format_compile_json(const char *const *keys,
                                                                const char *const *formats,
                                                                size_t n, char *err, size_t errlen)
{
    sharp_access_log_format_t *f = new_format((uint32_t)n);
    f->json = true;
    char sub[256];
    for (size_t i = 0; i < n; i++) {
        al_field_t *fl = &f->fields[i];
        fl->key = sharp_strdup(keys[i]);
        for (size_t k = 0; k < i; k++)
            if (strcmp(f->fields[k].key, keys[i]) == 0) {
                seterr(err, errlen, "json_format: duplicate key \"%s\"", keys[i]);
                goto bad;
            }
        if (!compile_field(fl, formats[i] ? formats[i] : "", sub, sizeof sub)) {
            seterr(err, errlen, "json_format.%s: %s", keys[i], sub);
            goto bad;
        }
        fl->single = fl->n == 1 && fl->pieces[0].op != OP_LITERAL;
    }
    qsort(f->fields, n, sizeof *f->fields, cmp_field_key);
    return f;
bad:
    sharp_access_log_format_free(f);
    return NULL;
}

/* ---- json_format as Envoy's StructFormatter reads it ---- */

static bool compile_json_value(al_field_t *fl, const Google__Protobuf__Value *v, sharp_sbuf_t *path, int depth,
                               char *err, size_t errlen);

static bool compile_json_object(al_field_t *fl, const Google__Protobuf__Struct *st, sharp_sbuf_t *path, int depth,
                                char *err, size_t errlen)
{
    fl->kind = AL_JSON_OBJECT;
    fl->children = sharp_calloc(st->n_fields ? st->n_fields : 1, sizeof *fl->children);
    for (size_t i = 0; i < st->n_fields; i++) {
        const char *key = st->fields[i]->key;
        for (uint32_t k = 0; k < fl->nchildren; k++)
            if (strcmp(fl->children[k].key, key) == 0) {
                seterr(err, errlen, "%s: duplicate key \"%s\"", sharp_sbuf_cstr(path), key);
                return false;
            }
        al_field_t *c = &fl->children[fl->nchildren++];
        c->key = sharp_strdup(key);
        size_t old = path->len;
        sharp_sbuf_printf(path, ".%s", key);
        bool ok = compile_json_value(c, st->fields[i]->value, path, depth + 1, err, errlen);
        path->len = old;
        if (!ok) return false;
    }
    qsort(fl->children, fl->nchildren, sizeof *fl->children, cmp_field_key);
    return true;
}

static bool compile_json_value(al_field_t *fl, const Google__Protobuf__Value *v, sharp_sbuf_t *path, int depth,
                               char *err, size_t errlen)
{
    if (depth > 32) {
        seterr(err, errlen, "%s: nested more than 32 levels", sharp_sbuf_cstr(path));
        return false;
    }
    switch (v ? v->kind_case : GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET) {
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: {
        char sub[256];
        fl->kind = AL_JSON_FORMAT;
        if (!compile_field(fl, v->string_value, sub, sizeof sub)) {
            seterr(err, errlen, "%s: %s", sharp_sbuf_cstr(path), sub);
            return false;
        }
        fl->single = fl->n == 1 && fl->pieces[0].op != OP_LITERAL;
        return true;
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        fl->kind = AL_JSON_NUMBER;
        fl->number = v->number_value;
        return true;
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return compile_json_object(fl, v->struct_value, path, depth, err, errlen);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE: {
        const Google__Protobuf__ListValue *l = v->list_value;
        fl->kind = AL_JSON_LIST;
        fl->children = sharp_calloc(l->n_values ? l->n_values : 1, sizeof *fl->children);
        for (size_t i = 0; i < l->n_values; i++) {
            size_t old = path->len;
            sharp_sbuf_printf(path, "[%zu]", i);
            bool ok = compile_json_value(&fl->children[fl->nchildren++], l->values[i], path, depth + 1, err, errlen);
            path->len = old;
            if (!ok) return false;
        }
        return true;
    }
    default:
        /* Envoy's message: bools and nulls have no format meaning */
        seterr(err, errlen,
               "%s: Only string values, nested structs, list values and number values are supported in "
               "structured access log format.",
               sharp_sbuf_cstr(path));
        return false;
    }
}

sharp_access_log_format_t *sharp_access_log_format_compile_struct(const Google__Protobuf__Struct *st, char *err,
                                                                  size_t errlen)
{
    sharp_access_log_format_t *f = new_format(1);
    f->json = true;
    sharp_sbuf_t path = {0};
    sharp_sbuf_puts(&path, "json_format");
    al_field_t root = {0};
    bool ok = compile_json_object(&root, st, &path, 0, err, errlen);
    sharp_sbuf_free(&path);
    /* the top-level object's members are the format's fields */
    free(f->fields);
    f->fields = root.children;
    f->nfields = root.nchildren;
    if (!f->fields) f->fields = sharp_calloc(1, sizeof *f->fields);
    if (!ok) {
        sharp_access_log_format_free(f);
        return NULL;
    }
    return f;
}
