/* fuzz_config.c: libFuzzer target for the whole --mode validate path of a
 * bootstrap: YAML or strict-JSON parsing, mapping onto the Envoy protos, the
 * support table, and the translation into a snapshot (every cluster, route,
 * filter and access log built, nothing opened). The first input byte picks
 * the parser (even: YAML, odd: JSON); the rest is the text.
 *
 * Invariants checked by the sanitizers: no crash, no out-of-bounds access,
 * no undefined behaviour, and no leak on any accept or reject path. */
#include "config/bootstrap.h"
#include "config/mapper.h"
#include "config/support.h"
#include "config/types.h"
#include "http/filter.h"
#include "log.h"
#include "runtime.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sharp_log_set_all(SHARP_LOG_OFF);
    sharp_config_types_register();
    sharp_filters_register_builtin();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    bool json = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    sharp_config_error_t e = {{0}};
    const ProtobufCMessageDescriptor *d = &envoy__config__bootstrap__v3__bootstrap__descriptor;
    sharp_config_t *c = calloc(1, sizeof *c);
    snprintf(c->source, sizeof c->source, "%s", json ? "fuzz.json" : "fuzz.yaml");
    c->doc = json ? sharp_config_parse_json(text, len, c->source, d, &e)
                  : sharp_config_parse(text, len, c->source, d, &e);
    if (!c->doc) {
        free(c);
        return 0;
    }
    c->bootstrap = sharp_config_doc_message(c->doc);
    if (sharp_config_check_support(c->bootstrap, c->doc, NULL, &e) == 0) {
        sharp_server_t srv = {0};
        srv.opts.validate_only = true; /* creates no file, binds nothing */
        srv.opts.concurrency = 1;
        srv.nworkers = 1;
        srv.stats = sharp_stats_create(2);
        char err[2048];
        sharp_snapshot_t *snap = sharp_config_build_snapshot(c, &srv, err, sizeof err);
        if (snap) sharp_snapshot_unref(snap);
        sharp_runtime_free(srv.runtime); /* the server owns the runtime the build made */
        sharp_stats_destroy(srv.stats);
    }
    sharp_config_free(c);
    return 0;
}
