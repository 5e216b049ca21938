/* json.c: see json.h. */
#include "admin/json.h"

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static void newline(sharp_sbuf_t *out, int depth)
{
    sharp_sbuf_append(out, "\n", 1);
    for (int i = 0; i < depth; i++)
        sharp_sbuf_append(out, " ", 1);
}

void sharp_json_pretty(const char *in, size_t n, sharp_sbuf_t *out)
{
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        switch (c) {
        case '"': {
            /* Copy the whole string, skipping over escaped characters. */
            size_t j = i + 1;
            while (j < n && in[j] != '"')
                j += in[j] == '\\' ? 2 : 1;
            if (j >= n) j = n - 1;
            sharp_sbuf_append(out, in + i, j - i + 1);
            i = j;
            break;
        }
        case '{':
        case '[': {
            size_t j = i + 1;
            while (j < n && is_ws(in[j]))
                j++;
            if (j < n && in[j] == (c == '{' ? '}' : ']')) {
                sharp_sbuf_append(out, c == '{' ? "{}" : "[]", 2);
                i = j;
                break;
            }
            sharp_sbuf_append(out, &c, 1);
            newline(out, ++depth);
            break;
        }
        case '}':
        case ']':
            if (depth > 0) depth--;
            newline(out, depth);
            sharp_sbuf_append(out, &c, 1);
            break;
        case ',':
            sharp_sbuf_append(out, ",", 1);
            newline(out, depth);
            break;
        case ':':
            sharp_sbuf_append(out, ": ", 2);
            break;
        default:
            if (!is_ws(c)) sharp_sbuf_append(out, &c, 1);
        }
    }
}

void sharp_json_str(sharp_sbuf_t *out, const char *s)
{
    sharp_sbuf_append(out, "\"", 1);
    sharp_sbuf_json_escape(out, s, strlen(s));
    sharp_sbuf_append(out, "\"", 1);
}
