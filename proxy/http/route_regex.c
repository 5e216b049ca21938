/* route_regex.c: RE2-syntax regular expressions on POSIX regcomp (see
 * sharp_regex_compile in route.h). Envoy's safe_regex is RE2; SHARP has no
 * RE2, so the common RE2-only spellings are rewritten into POSIX ERE and the
 * rest is rejected at config time rather than silently matching something
 * else. */
#include "http/route.h"

#include <ctype.h>
#include <stdio.h>

#include "sbuf.h"

typedef struct {
    const char *p; /* pattern */
    size_t i, n;
    sharp_sbuf_t out;
    char *err;
    size_t errlen;
} rx_t;

static int rx_fail(rx_t *x, const char *what)
{
    if (x->err && x->errlen) snprintf(x->err, x->errlen, "%s at offset %zu", what, x->i);
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes a single-character escape (\n, \t, \xHH, \. ...) at x->i (which
 * points after the backslash). Returns the byte, or -1 for escapes that are
 * not one character. */
static int escape_char(rx_t *x)
{
    char c = x->p[x->i];
    switch (c) {
    case 'n':
        return '\n';
    case 't':
        return '\t';
    case 'r':
        return '\r';
    case 'f':
        return '\f';
    case 'v':
        return '\v';
    case 'x':
        if (x->i + 2 < x->n && hexval(x->p[x->i + 1]) >= 0 && hexval(x->p[x->i + 2]) >= 0) {
            int v = hexval(x->p[x->i + 1]) * 16 + hexval(x->p[x->i + 2]);
            x->i += 2;
            return v ? v : -1;
        }
        return -1;
    default:
        return ispunct((unsigned char)c) ? c : -1;
    }
}

/* Emits a literal byte outside brackets, escaped when ERE would read it as
 * an operator. */
static void put_literal(rx_t *x, int c)
{
    if (strchr(".[]()*+?{}|^$\\", c)) sharp_sbuf_append(&x->out, "\\", 1);
    char ch = (char)c;
    sharp_sbuf_append(&x->out, &ch, 1);
}

/* Reads one bracket member at x->i: appends a class to `body` and returns
 * -2, or returns the literal byte (`escaped` says it was written with a
 * backslash, so a '-' is not a range); -1 on error. */
static int bracket_member(rx_t *x, sharp_sbuf_t *body, bool *escaped)
{
    *escaped = false;
    char c = x->p[x->i];
    if (c == '[' && x->i + 1 < x->n && x->p[x->i + 1] == ':') {
        const char *end = strstr(x->p + x->i, ":]");
        if (!end) return rx_fail(x, "unterminated [: :] class");
        sharp_sbuf_append(body, x->p + x->i, (size_t)(end + 2 - (x->p + x->i)));
        x->i = (size_t)(end + 2 - x->p);
        return -2;
    }
    if (c != '\\' || x->i + 1 >= x->n) {
        x->i++;
        return (unsigned char)c;
    }
    x->i++;
    char e = x->p[x->i];
    const char *cls = e == 'd' ? "0-9" : e == 'w' ? "_[:alnum:]" : e == 's' ? "[:space:]" : NULL;
    if (cls) {
        sharp_sbuf_puts(body, cls);
        x->i++;
        return -2;
    }
    if (e == 'D' || e == 'W' || e == 'S')
        return rx_fail(x, "negated class escape inside [] is not supported");
    int lit = escape_char(x);
    if (lit < 0) return rx_fail(x, "unsupported escape inside []");
    x->i++;
    *escaped = true;
    return lit;
}

/* A bracket expression. POSIX brackets have no escapes, so the members are
 * collected first and re-emitted with ']' first, '^' not first and '-' last,
 * where POSIX reads them literally. */
static int bracket(rx_t *x)
{
    sharp_sbuf_t body = {0};
    bool negate = false, rbracket = false, caret = false, dash = false;
    x->i++; /* '[' */
    if (x->i < x->n && x->p[x->i] == '^') {
        negate = true;
        x->i++;
    }
    bool first = true;
    while (x->i < x->n && (x->p[x->i] != ']' || first)) {
        first = false;
        bool escaped;
        int m = bracket_member(x, &body, &escaped);
        if (m == -1) {
            sharp_sbuf_free(&body);
            return -1;
        }
        if (m == -2) continue;
        bool range_dash = m == '-' && !escaped && body.len && x->i < x->n && x->p[x->i] != ']';
        if (m == ']')
            rbracket = true;
        else if (m == '^' && !body.len)
            caret = true;
        else if (m == '-' && !range_dash)
            dash = true;
        else {
            char ch = (char)m;
            sharp_sbuf_append(&body, &ch, 1);
        }
    }
    if (x->i >= x->n) {
        sharp_sbuf_free(&body);
        return rx_fail(x, "missing ']'");
    }
    x->i++; /* ']' */
    if (!rbracket && !body.len && !caret && !dash) {
        sharp_sbuf_free(&body);
        return rx_fail(x, "empty []");
    }
    if (!negate && caret && !rbracket && !body.len) {
        /* only '^' (and maybe '-'): a leading '^' would negate */
        sharp_sbuf_puts(&x->out, dash ? "[-^]" : "\\^");
        sharp_sbuf_free(&body);
        return 0;
    }
    sharp_sbuf_append(&x->out, negate ? "[^" : "[", negate ? 2 : 1);
    if (rbracket) sharp_sbuf_append(&x->out, "]", 1);
    sharp_sbuf_append(&x->out, body.data ? body.data : "", body.len);
    if (caret) sharp_sbuf_append(&x->out, "^", 1);
    if (dash) sharp_sbuf_append(&x->out, "-", 1);
    sharp_sbuf_append(&x->out, "]", 1);
    sharp_sbuf_free(&body);
    return 0;
}

static int translate(rx_t *x, bool *icase)
{
    if (strncmp(x->p, "(?i)", 4) == 0) {
        *icase = true;
        x->i = 4;
    }
    while (x->i < x->n) {
        char c = x->p[x->i];
        if (c == '[') {
            if (bracket(x) < 0) return -1;
            continue;
        }
        if (c == '(' && x->i + 1 < x->n && x->p[x->i + 1] == '?') {
            if (x->i + 2 < x->n && x->p[x->i + 2] == ':') {
                x->i += 3;
            } else if (x->i + 3 < x->n && x->p[x->i + 2] == 'P' && x->p[x->i + 3] == '<') {
                const char *gt = memchr(x->p + x->i, '>', x->n - x->i);
                if (!gt) return rx_fail(x, "unterminated group name");
                x->i = (size_t)(gt - x->p) + 1;
            } else {
                return rx_fail(x, "unsupported group flags or lookaround");
            }
            sharp_sbuf_append(&x->out, "(", 1);
            continue;
        }
        if ((c == '*' || c == '+' || c == '?' || c == '}') && x->i + 1 < x->n &&
            x->p[x->i + 1] == '?') {
            sharp_sbuf_append(&x->out, &c, 1); /* lazy: same whole-value matches */
            x->i += 2;
            continue;
        }
        if (c != '\\') {
            sharp_sbuf_append(&x->out, &c, 1);
            x->i++;
            continue;
        }
        if (++x->i >= x->n) return rx_fail(x, "trailing backslash");
        char e = x->p[x->i];
        const char *rep = NULL;
        switch (e) {
        case 'd':
            rep = "[0-9]";
            break;
        case 'D':
            rep = "[^0-9]";
            break;
        case 'w':
            rep = "[_[:alnum:]]";
            break;
        case 'W':
            rep = "[^_[:alnum:]]";
            break;
        case 's':
            rep = "[[:space:]]";
            break;
        case 'S':
            rep = "[^[:space:]]";
            break;
        case 'A':
            rep = "^";
            break;
        case 'z':
            rep = "$";
            break;
        case 'b':
            rep = "\\b";
            break;
        case 'B':
            rep = "\\B";
            break;
        case 'p':
        case 'P':
            return rx_fail(x, "unicode classes (\\p) are not supported");
        default:
            break;
        }
        if (rep) {
            sharp_sbuf_puts(&x->out, rep);
            x->i++;
            continue;
        }
        if (isdigit((unsigned char)e)) return rx_fail(x, "backreferences are not supported");
        int lit = escape_char(x);
        if (lit < 0) return rx_fail(x, "unsupported escape");
        put_literal(x, lit);
        x->i++;
    }
    return 0;
}

int sharp_regex_compile(regex_t *re, const char *pattern, char *err, size_t errlen)
{
    rx_t x = {.p = pattern, .n = strlen(pattern), .err = err, .errlen = errlen};
    bool icase = false;
    sharp_sbuf_puts(&x.out, "^(");
    if (translate(&x, &icase) < 0) {
        sharp_sbuf_free(&x.out);
        return -1;
    }
    sharp_sbuf_puts(&x.out, ")$");
    int rc =
        regcomp(re, sharp_sbuf_cstr(&x.out), REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0));
    if (rc != 0) {
        char msg[128];
        regerror(rc, re, msg, sizeof msg);
        if (err && errlen) snprintf(err, errlen, "%s", msg);
        sharp_sbuf_free(&x.out);
        return -1;
    }
    sharp_sbuf_free(&x.out);
    return 0;
}
