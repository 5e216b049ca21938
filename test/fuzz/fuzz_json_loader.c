/* fuzz_json_loader.c: the direct JSON loader (config/, sharp_cfg_json_load)
 * against libyaml on the same text. For a text the direct loader takes,
 * libyaml's document must be the same tree node for node: type, tag,
 * scalar style and value, and start position (the mapper's error paths
 * and line:column come from them). A difference aborts. */
#include "config/mapper_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void same(yaml_document_t *a, int ia, yaml_document_t *b, int ib)
{
    yaml_node_t *x = yaml_document_get_node(a, ia), *y = yaml_document_get_node(b, ib);
    if (!x || !y || x->type != y->type || strcmp((char *)x->tag, (char *)y->tag) ||
        x->start_mark.line != y->start_mark.line || x->start_mark.column != y->start_mark.column)
        abort();
    if (x->type == YAML_SCALAR_NODE) {
        if (x->data.scalar.style != y->data.scalar.style || x->data.scalar.length != y->data.scalar.length ||
            memcmp(x->data.scalar.value, y->data.scalar.value, x->data.scalar.length))
            abort();
    } else if (x->type == YAML_SEQUENCE_NODE) {
        long n = x->data.sequence.items.top - x->data.sequence.items.start;
        if (n != y->data.sequence.items.top - y->data.sequence.items.start) abort();
        for (long i = 0; i < n; i++)
            same(a, x->data.sequence.items.start[i], b, y->data.sequence.items.start[i]);
    } else {
        long n = x->data.mapping.pairs.top - x->data.mapping.pairs.start;
        if (n != y->data.mapping.pairs.top - y->data.mapping.pairs.start) abort();
        for (long i = 0; i < n; i++) {
            same(a, x->data.mapping.pairs.start[i].key, b, y->data.mapping.pairs.start[i].key);
            same(a, x->data.mapping.pairs.start[i].value, b, y->data.mapping.pairs.start[i].value);
        }
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
    cfg_json_doc_t d;
    if (!sharp_cfg_json_load((const char *)data, len, &d)) return 0;
    yaml_parser_t p;
    yaml_document_t y;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, data, len);
    int ok = yaml_parser_load(&p, &y);
    yaml_parser_delete(&p);
    if (ok && yaml_document_get_root_node(&y)) same(&d.doc, 1, &y, 1);
    if (ok) yaml_document_delete(&y);
    sharp_cfg_json_free(&d);
    return 0;
}
