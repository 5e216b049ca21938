/* test_support.c: the field support table (config/support.table) against
 * the descriptors SHARP compiles, and the check that enforces it.
 *
 * The walk starts at the Bootstrap and at every extension the table marks
 * implemented, and descends through every implemented message field. Every
 * field of every message reached must have an entry (implemented, hint or
 * refused); every entry must name a field that exists, unless it is a
 * refused Envoy field that SHARP's protos leave out; every message in the
 * table must be reachable. A field added to proto/ without a decision fails
 * here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/mapper.h"
#include "config/mapper_internal.h"
#include "envoy/service/health/v3/hds.pb-c.h"
#include "config/support.h"
#include "config/types.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"

#define MAX_SEEN 4096

/* Each message is visited once per context ("<parent>.<field>" it is
 * reached through), since the table may decide per context. */
typedef struct walk {
    const ProtobufCMessageDescriptor *seen[MAX_SEEN];
    char *seen_ctx[MAX_SEEN];
    size_t nseen;
    sharp_sbuf_t problems;
    unsigned nproblems;
} walk_t;

static bool seen(walk_t *w, const ProtobufCMessageDescriptor *d, const char *ctx)
{
    for (size_t i = 0; i < w->nseen; i++)
        if (w->seen[i] == d && !strcmp(w->seen_ctx[i], ctx ? ctx : "")) return true;
    assert_true(w->nseen < MAX_SEEN);
    w->seen[w->nseen] = d;
    w->seen_ctx[w->nseen++] = strdup(ctx ? ctx : "");
    return false;
}

static void walk_free(walk_t *w)
{
    for (size_t i = 0; i < w->nseen; i++) free(w->seen_ctx[i]);
    sharp_sbuf_free(&w->problems);
}

static bool map_entry(const ProtobufCMessageDescriptor *e)
{
    size_t n = strlen(e->short_name);
    return e->n_fields == 2 && !strcmp(e->fields[0].name, "key") && !strcmp(e->fields[1].name, "value") &&
           n > 5 && !strcmp(e->short_name + n - 5, "Entry");
}

static void visit(walk_t *w, const ProtobufCMessageDescriptor *d, const char *ctx)
{
    if (sharp_cfg_wkt_kind(d) != WKT_NONE) return;
    if (map_entry(d)) {
        const ProtobufCFieldDescriptor *v = &d->fields[1];
        if (v->type == PROTOBUF_C_TYPE_MESSAGE) visit(w, v->descriptor, ctx);
        return;
    }
    if (seen(w, d, ctx)) return;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const sharp_support_field_t *e = sharp_support_field_in(d->name, ctx, f->name);
        if (!e) {
            sharp_sbuf_printf(&w->problems, "  no entry: message %s field %s%s%s\n", d->name, f->name,
                              ctx ? " reached through " : "", ctx ? ctx : "");
            w->nproblems++;
            continue;
        }
        if (e->status == SHARP_FIELD_YES && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            char sub[320];
            snprintf(sub, sizeof sub, "%s.%s", d->name, f->name);
            visit(w, f->descriptor, sub);
        }
    }
}

static bool table_lists_message(const char *name)
{
    for (size_t i = 0; i < sharp_support_nfields; i++)
        if (!strcmp(sharp_support_fields[i].message, name)) return true;
    return false;
}

static void walk_all(walk_t *w)
{
    sharp_config_types_register();
    visit(w, &envoy__config__bootstrap__v3__bootstrap__descriptor, NULL);
    /* what the health discovery service sends, checked as received (hds.c) */
    visit(w, &envoy__service__health__v3__health_check_specifier__descriptor, NULL);
    for (size_t i = 0; i < sharp_support_nextensions; i++) {
        const sharp_support_extension_t *x = &sharp_support_extensions[i];
        /* A refused extension is walked too when the table already lists
         * its message: its decisions are prepared ahead of the extension
         * line flipping, and must be as complete as an implemented one's. */
        if (x->status != SHARP_FIELD_YES && !table_lists_message(x->type)) continue;
        char url[300];
        snprintf(url, sizeof url, "type.googleapis.com/%s", x->type);
        const ProtobufCMessageDescriptor *d = sharp_type_registry_find(url, strlen(url));
        if (!d) {
            sharp_sbuf_printf(&w->problems, "  extension %s is marked implemented but not registered\n", x->type);
            w->nproblems++;
            continue;
        }
        visit(w, d, NULL);
    }
}

static void every_field_has_a_decision(void **state)
{
    walk_t w = {0};
    walk_all(&w);
    if (w.nproblems) {
        print_message("%s", sharp_sbuf_cstr(&w.problems));
        fail_msg("%u fields without a decision (listed above)", w.nproblems);
    }
    walk_free(&w);
}

/* The descriptor of a table message ("Name" or "Name@parent.field") if the
 * walk reached it (in that context). */
static const ProtobufCMessageDescriptor *reached(walk_t *w, const char *key)
{
    const char *at = strchr(key, '@');
    size_t n = at ? (size_t)(at - key) : strlen(key);
    for (size_t i = 0; i < w->nseen; i++)
        if (strlen(w->seen[i]->name) == n && !strncmp(w->seen[i]->name, key, n) &&
            (!at || !strcmp(w->seen_ctx[i], at + 1)))
            return w->seen[i];
    return NULL;
}

static void every_entry_names_a_reachable_field(void **state)
{
    walk_t w = {0};
    walk_all(&w);
    sharp_sbuf_t bad = {0};
    unsigned nbad = 0;
    for (size_t i = 0; i < sharp_support_nfields; i++) {
        const sharp_support_field_t *e = &sharp_support_fields[i];
        const ProtobufCMessageDescriptor *d = reached(&w, e->message);
        if (!d) {
            if (i == 0 || strcmp(sharp_support_fields[i - 1].message, e->message)) {
                sharp_sbuf_printf(&bad, "  message %s is never mapped (unreachable through implemented fields)\n",
                                  e->message);
                nbad++;
            }
            continue;
        }
        if (!protobuf_c_message_descriptor_get_field_by_name(d, e->field) && e->status != SHARP_FIELD_NO) {
            sharp_sbuf_printf(&bad, "  %s.%s is not a field of SHARP's proto but is marked %s\n", e->message,
                              e->field, e->status == SHARP_FIELD_YES ? "yes" : "hint");
            nbad++;
        }
        if (e->status == SHARP_FIELD_NO && (!e->note || !*e->note)) {
            sharp_sbuf_printf(&bad, "  %s.%s is refused without naming the feature\n", e->message, e->field);
            nbad++;
        }
    }
    if (nbad) {
        print_message("%s", sharp_sbuf_cstr(&bad));
        fail_msg("%u stale table entries (listed above)", nbad);
    }
    sharp_sbuf_free(&bad);
    walk_free(&w);
}

static void table_is_sorted_for_lookup(void **state)
{
    for (size_t i = 1; i < sharp_support_nfields; i++) {
        int c = strcmp(sharp_support_fields[i - 1].message, sharp_support_fields[i].message);
        if (!c) c = strcmp(sharp_support_fields[i - 1].field, sharp_support_fields[i].field);
        assert_true(c < 0);
    }
    for (size_t i = 1; i < sharp_support_nextensions; i++)
        assert_true(strcmp(sharp_support_extensions[i - 1].type, sharp_support_extensions[i].type) < 0);
    assert_non_null(sharp_support_field("envoy.config.cluster.v3.Cluster", "connect_timeout", 15));
    assert_non_null(sharp_support_field("envoy.config.cluster.v3.Cluster", "connectTimeout", 14));
    assert_null(sharp_support_field("envoy.config.cluster.v3.Cluster", "no_such_field", 13));
    const char *url = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
    const sharp_support_extension_t *x = sharp_support_extension(url, strlen(url));
    assert_non_null(x);
    assert_int_equal(x->status, SHARP_FIELD_YES);
    url = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Route";
    assert_null(sharp_support_extension(url, strlen(url)));
}

/* ---- the check on parsed bootstraps --------------------------------------- */

static bool last_invalid;

static const char *check(const char *yaml)
{
    static sharp_config_error_t err;
    last_invalid = false;
    sharp_config_types_register();
    memset(&err, 0, sizeof err);
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "b.yaml",
                                               &envoy__config__bootstrap__v3__bootstrap__descriptor, &err);
    if (!d) return err.msg;
    int rc = sharp_config_check_support_kind(sharp_config_doc_message(d), d, NULL, &err, &last_invalid);
    sharp_config_doc_free(d);
    return rc < 0 ? err.msg : NULL;
}

static void expect(const char *yaml, const char *want)
{
    const char *got = check(yaml);
    if (!want) {
        if (got) fail_msg("unexpected error: %s", got);
        return;
    }
    if (!got) fail_msg("expected an error containing \"%s\"", want);
    if (!strstr(got, want)) fail_msg("error \"%s\" lacks \"%s\"", got, want);
}

static const char *const cluster_head = "static_resources:\n"
                                        "  clusters:\n"
                                        "  - name: c\n"
                                        "    connect_timeout: 1s\n";

static char *with_cluster(const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s%s", cluster_head, extra);
    return buf;
}

static void refused_field_names_path_position_and_feature(void **state)
{
    expect(with_cluster("    upstream_connection_options:\n      happy_eyeballs_config: {}\n"),
           "b.yaml:6:7: static_resources.clusters[0].upstream_connection_options.happy_eyeballs_config");
    expect(with_cluster("    upstream_connection_options:\n      happy_eyeballs_config: {}\n"),
           "is not supported by SHARP");
}

static void default_values_of_refused_fields_pass(void **state)
{
    /* A refused scalar at its default, or an absent message, is no use of the feature. */
    expect(with_cluster("    respect_dns_ttl: false\n"), NULL);
}

static void unknown_extension_and_known_envoy_extension(void **state)
{
    expect(with_cluster("    transport_socket:\n      name: starttls\n      typed_config:\n"
                        "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.starttls.v3.StartTlsConfig\n"),
           "is not supported by SHARP");
    expect(with_cluster("    transport_socket:\n      name: x\n      typed_config:\n"
                        "        \"@type\": type.googleapis.com/acme.NoSuchThing\n"),
           "unknown type URL");
}

static void validation_rules_apply(void **state)
{
    expect("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: -5s\n",
           "static_resources.clusters[0].connect_timeout: must be greater than 0s, got -5s");
    expect("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 0.25s\n", NULL);
    expect("static_resources:\n  clusters:\n  - connect_timeout: 1s\n", "must be at least 1 character long");
}

/* What xDS refuses alone (SHARP does not implement it) against what makes
 * the whole response invalid (Envoy's validation rules). */
static void failure_kinds(void **state)
{
    expect(with_cluster("    upstream_connection_options:\n      happy_eyeballs_config: {}\n"), "not supported");
    assert_false(last_invalid);
    expect(with_cluster("    transport_socket:\n      name: x\n      typed_config:\n"
                        "        \"@type\": type.googleapis.com/acme.NoSuchThing\n"),
           "unknown type URL");
    assert_false(last_invalid);
    expect("static_resources:\n  clusters:\n  - name: c\n    connect_timeout: -5s\n", "must be greater");
    assert_true(last_invalid);
    expect("static_resources:\n  clusters:\n  - connect_timeout: 1s\n", "must be at least 1 character");
    assert_true(last_invalid);
    expect(with_cluster("    respect_dns_ttl: false\n"), NULL);
    assert_false(last_invalid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(failure_kinds),
        cmocka_unit_test(every_field_has_a_decision),
        cmocka_unit_test(every_entry_names_a_reachable_field),
        cmocka_unit_test(table_is_sorted_for_lookup),
        cmocka_unit_test(refused_field_names_path_position_and_feature),
        cmocka_unit_test(default_values_of_refused_fields_pass),
        cmocka_unit_test(unknown_extension_and_known_envoy_extension),
        cmocka_unit_test(validation_rules_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
