/* test_redact.c: Envoy's MessageUtil::redact (config/redact.c), the
 * redaction every /config_dump section goes through: the sensitive fields'
 * strings and bytes read "[redacted]" (inside Any too), the rest of the
 * message is untouched, and every entry of the sensitive list names a real
 * field of SHARP's protos. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "config/mapper.h"
#include "config/types.h"

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "xds/type/v3/typed_struct.pb-c.h"

static const char KEY[] = "-----BEGIN PRIVATE KEY-----\\nMIIEsecretsecret\\n-----END PRIVATE KEY-----\\n";

/* The JSON of the redacted copy of the `desc` message the YAML gives. */
static char *redacted_json(const char *yaml, const ProtobufCMessageDescriptor *desc)
{
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "t.yaml", desc, &err);
    if (!d) fail_msg("unexpected parse failure: %s", err.msg);
    ProtobufCMessage *c = sharp_config_redacted_copy(sharp_config_doc_message(d), NULL, 0);
    assert_non_null(c);
    sharp_sbuf_t j = {0};
    sharp_config_to_json(c, &j);
    protobuf_c_message_free_unpacked(c, NULL);
    /* the original is left as it was */
    sharp_sbuf_t o = {0};
    sharp_config_to_json(sharp_config_doc_message(d), &o);
    assert_non_null(strstr(o.data, "MIIEsecretsecret"));
    sharp_sbuf_free(&o);
    sharp_config_doc_free(d);
    return j.data;
}

static void expect_in(const char *json, const char *want)
{
    if (!strstr(json, want)) fail_msg("wanted\n  %s\nin\n  %s", want, json);
}

/* A listener's DownstreamTlsContext (an Any in transport_socket), a
 * cluster's UpstreamTlsContext and static secrets: the same redaction in
 * every place, certificate chains and other fields kept. */
static void bootstrap_sensitive_fields_redacted(void **state)
{
    (void)state;
    char yaml[8192];
    snprintf(yaml, sizeof yaml,
             "static_resources:\n"
             "  listeners:\n"
             "  - name: l\n"
             "    address: {socket_address: {address: 127.0.0.1, port_value: 1}}\n"
             "    filter_chains:\n"
             "    - transport_socket:\n"
             "        name: envoy.transport_sockets.tls\n"
             "        typed_config:\n"
             "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
             "          common_tls_context:\n"
             "            tls_certificates:\n"
             "            - certificate_chain: {filename: /etc/chain.pem}\n"
             "              private_key: {inline_string: \"%s\"}\n"
             "              password: {environment_variable: KEY_PASSWORD}\n"
             "          session_ticket_keys:\n"
             "            keys: [{inline_bytes: c2VjcmV0c2VjcmV0}]\n"
             "  clusters:\n"
             "  - name: c\n"
             "    transport_socket:\n"
             "      name: envoy.transport_sockets.tls\n"
             "      typed_config:\n"
             "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n"
             "        sni: up.example\n"
             "        common_tls_context:\n"
             "          tls_certificates:\n"
             "          - certificate_chain: {inline_string: CHAIN}\n"
             "            private_key: {filename: /etc/client.key}\n"
             "            watched_directory: {path: /etc}\n"
             "  secrets:\n"
             "  - name: s\n"
             "    tls_certificate:\n"
             "      certificate_chain: {filename: /etc/s.pem}\n"
             "      password: {inline_bytes: c2VjcmV0c2VjcmV0}\n"
             "  - name: v\n"
             "    validation_context:\n"
             "      trusted_ca: {filename: /etc/ca.pem}\n",
             KEY);
    char *j = redacted_json(yaml, &envoy__config__bootstrap__v3__bootstrap__descriptor);
    assert_null(strstr(j, "MIIEsecretsecret"));
    assert_null(strstr(j, "c2VjcmV0c2VjcmV0"));
    assert_null(strstr(j, "KEY_PASSWORD"));
    assert_null(strstr(j, "/etc/client.key"));
    /* inside the listener's Any */
    expect_in(j, "\"tls_certificates\":[{\"certificate_chain\":{\"filename\":\"/etc/chain.pem\"},"
                 "\"private_key\":{\"inline_string\":\"[redacted]\"},"
                 "\"password\":{\"environment_variable\":\"[redacted]\"}}]");
    /* bytes: the bytes of "[redacted]", base64 in JSON */
    expect_in(j, "\"session_ticket_keys\":{\"keys\":[{\"inline_bytes\":\"W3JlZGFjdGVkXQ==\"}]}");
    /* inside the cluster's Any: a sensitive field's every string, as Envoy */
    expect_in(j, "\"sni\":\"up.example\"");
    expect_in(j, "\"tls_certificates\":[{\"certificate_chain\":{\"inline_string\":\"CHAIN\"},"
                 "\"private_key\":{\"filename\":\"[redacted]\"},\"watched_directory\":{\"path\":\"/etc\"}}]");
    /* static secrets */
    expect_in(j, "{\"name\":\"s\",\"tls_certificate\":{\"certificate_chain\":{\"filename\":\"/etc/s.pem\"},"
                 "\"password\":{\"inline_bytes\":\"W3JlZGFjdGVkXQ==\"}}}");
    expect_in(j, "{\"name\":\"v\",\"validation_context\":{\"trusted_ca\":{\"filename\":\"/etc/ca.pem\"}}}");
    free(j);
}

/* A sensitive message field: every string below it redacted, every other
 * scalar cleared (DataSource.watched_directory's path; the private key
 * provider's Any unpacked, its contents redacted, packed again). Fields the
 * loader refuses can still come in a message, so it is built by hand. */
static void sensitive_subtree_redacted_whole(void **state)
{
    (void)state;
    Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog fal = ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__INIT;
    fal.path = "/MIIEsecretsecret";
    uint8_t packed[256];
    size_t plen = protobuf_c_message_pack(&fal.base, packed);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
    any.value.data = packed;
    any.value.len = plen;
    Envoy__Extensions__TransportSockets__Tls__V3__PrivateKeyProvider pkp =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__PRIVATE_KEY_PROVIDER__INIT;
    pkp.provider_name = "p";
    pkp.config_type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__PRIVATE_KEY_PROVIDER__CONFIG_TYPE_TYPED_CONFIG;
    pkp.typed_config = &any;
    Envoy__Config__Core__V3__WatchedDirectory wd = ENVOY__CONFIG__CORE__V3__WATCHED_DIRECTORY__INIT;
    wd.path = "/MIIEsecretsecret";
    Envoy__Config__Core__V3__DataSource key = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT, chain = key, p12 = key;
    key.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
    key.filename = "/k.pem";
    key.watched_directory = &wd;
    chain.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
    chain.filename = "/c.pem";
    p12.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
    p12.inline_bytes.data = (uint8_t *)"MIIEsecretsecret";
    p12.inline_bytes.len = 16;
    Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate tc =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT;
    tc.certificate_chain = &chain;
    tc.private_key = &key;
    tc.pkcs12 = &p12;
    tc.private_key_provider = &pkp;
    Envoy__Extensions__TransportSockets__Tls__V3__Secret sec = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    sec.name = "s";
    sec.type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
    sec.tls_certificate = &tc;
    ProtobufCMessage *c = sharp_config_redacted_copy(&sec.base, NULL, 0);
    assert_non_null(c);
    sharp_sbuf_t j = {0};
    sharp_config_to_json(c, &j);
    protobuf_c_message_free_unpacked(c, NULL);
    assert_string_equal(j.data, "{\"name\":\"s\",\"tls_certificate\":{\"certificate_chain\":{\"filename\":\"/c.pem\"},"
                                "\"private_key\":{\"filename\":\"[redacted]\",\"watched_directory\":{\"path\":\"[redacted]\"}},"
                                "\"private_key_provider\":{\"provider_name\":\"p\",\"typed_config\":{\"@type\":"
                                "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\","
                                "\"path\":\"[redacted]\"}},"
                                "\"pkcs12\":{\"inline_bytes\":\"W3JlZGFjdGVkXQ==\"}}}");
    sharp_sbuf_free(&j);
    /* the original is untouched */
    assert_string_equal(fal.path, "/MIIEsecretsecret");
    assert_memory_equal(any.value.data, packed, plen);
}

/* A sensitive map (GenericSecret.secrets): its keys kept, its values
 * redacted, as Envoy does (several "[redacted]" keys would collide). */
static void sensitive_map_values_redacted(void **state)
{
    (void)state;
    Envoy__Config__Core__V3__DataSource v = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT, one = v;
    v.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
    v.inline_string = "MIIEsecretsecret";
    one.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE;
    one.environment_variable = "MIIEsecretsecret";
    Envoy__Extensions__TransportSockets__Tls__V3__GenericSecret__SecretsEntry e =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__GENERIC_SECRET__SECRETS_ENTRY__INIT;
    e.key = "token";
    e.value = &v;
    Envoy__Extensions__TransportSockets__Tls__V3__GenericSecret__SecretsEntry *entries[] = {&e};
    Envoy__Extensions__TransportSockets__Tls__V3__GenericSecret g =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__GENERIC_SECRET__INIT;
    g.secret = &one;
    g.n_secrets = 1;
    g.secrets = entries;
    ProtobufCMessage *c = sharp_config_redacted_copy(&g.base, NULL, 0);
    assert_non_null(c);
    sharp_sbuf_t j = {0};
    sharp_config_to_json(c, &j);
    protobuf_c_message_free_unpacked(c, NULL);
    assert_string_equal(j.data, "{\"secret\":{\"environment_variable\":\"[redacted]\"},"
                                "\"secrets\":{\"token\":{\"inline_string\":\"[redacted]\"}}}");
    sharp_sbuf_free(&j);
}

/* An Any holding a TypedStruct (as an xDS server may send): redacted as
 * the message its type_url names, JSON names and nested Anys included;
 * a TypedStruct of an unknown type is left as it is. */
static void typed_struct_redacted_as_its_type(void **state)
{
    (void)state;
    const char *yaml =
        "type_url: type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
        "value:\n"
        "  commonTlsContext:\n"
        "    tls_certificates:\n"
        "    - certificate_chain: {filename: /c.pem}\n"
        "      privateKey: {inline_string: MIIEsecretsecret, watched_directory: {path: /MIIEsecretsecret}}\n"
        "  session_ticket_keys: {keys: [{inline_bytes: c2VjcmV0c2VjcmV0}]}\n"
        "  require_client_certificate: true\n"
        "  unknown_key: {x: MIIEsecretsecret}\n";
    sharp_config_error_t err = {{0}};
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "t.yaml", &xds__type__v3__typed_struct__descriptor, &err);
    if (!d) fail_msg("unexpected parse failure: %s", err.msg);
    uint8_t buf[2048];
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/xds.type.v3.TypedStruct";
    any.value.data = buf;
    any.value.len = protobuf_c_message_pack(sharp_config_doc_message(d), buf);
    assert_true(any.value.len < sizeof buf);
    ProtobufCMessage *c = sharp_config_redacted_copy(&any.base, NULL, 0);
    assert_non_null(c);
    sharp_sbuf_t j = {0};
    sharp_config_to_json(c, &j);
    protobuf_c_message_free_unpacked(c, NULL);
    assert_string_equal(j.data,
        "{\"@type\":\"type.googleapis.com/xds.type.v3.TypedStruct\","
        "\"type_url\":\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\","
        "\"value\":{\"commonTlsContext\":{\"tls_certificates\":[{\"certificate_chain\":{\"filename\":\"/c.pem\"},"
        "\"privateKey\":{\"inline_string\":\"[redacted]\",\"watched_directory\":{\"path\":\"[redacted]\"}}}]},"
        "\"session_ticket_keys\":{\"keys\":[{\"inline_bytes\":\"W3JlZGFjdGVkXQ==\"}]},"
        "\"require_client_certificate\":true,\"unknown_key\":{\"x\":\"MIIEsecretsecret\"}}}");
    sharp_sbuf_free(&j);
    sharp_config_doc_free(d);
}

/* Nothing sensitive: the copy prints as the original. */
static void nothing_sensitive_unchanged(void **state)
{
    (void)state;
    const char *yaml = "name: v\nvalidation_context:\n  trusted_ca: {filename: /MIIEsecretsecret}\n"
                       "  allow_expired_certificate: true\n";
    char *j = redacted_json(yaml, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor);
    assert_string_equal(j, "{\"name\":\"v\",\"validation_context\":{\"trusted_ca\":{\"filename\":\"/MIIEsecretsecret\"},"
                           "\"allow_expired_certificate\":true}}");
    free(j);
}

/* Redaction after trimming: ?mask= paths through a sensitive field. */
static void trimmed_then_redacted(void **state)
{
    (void)state;
    sharp_config_error_t err = {{0}};
    const char *yaml = "name: s\ntls_certificate:\n  certificate_chain: {filename: /c.pem}\n"
                       "  private_key: {inline_string: MIIEsecretsecret}\n";
    sharp_config_doc_t *d = sharp_config_parse(yaml, strlen(yaml), "t.yaml",
                                               &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, &err);
    assert_non_null(d);
    const char *paths[] = {"tls_certificate.private_key"};
    ProtobufCMessage *c = sharp_config_redacted_copy(sharp_config_doc_message(d), paths, 1);
    sharp_sbuf_t j = {0};
    sharp_config_to_json(c, &j);
    assert_string_equal(j.data, "{\"tls_certificate\":{\"private_key\":{\"inline_string\":\"[redacted]\"}}}");
    sharp_sbuf_free(&j);
    protobuf_c_message_free_unpacked(c, NULL);
    sharp_config_doc_free(d);
}

/* Collects every message type reachable from d (by name, deduplicated). */
static size_t reach(const ProtobufCMessageDescriptor *d, const ProtobufCMessageDescriptor **seen, size_t n, size_t cap)
{
    for (size_t i = 0; i < n; i++)
        if (seen[i] == d) return n;
    assert_true(n < cap);
    seen[n++] = d;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE) n = reach(d->fields[i].descriptor, seen, n, cap);
    return n;
}

/* Every entry of the list names a message of SHARP's protos and one of its
 * fields (a typo or a renamed field would silently redact nothing). */
static void sensitive_list_names_real_fields(void **state)
{
    (void)state;
    static const ProtobufCMessageDescriptor *seen[4096];
    size_t n = 0;
    n = reach(&envoy__config__bootstrap__v3__bootstrap__descriptor, seen, n, 4096);
    n = reach(&envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor, seen, n, 4096);
    n = reach(&envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor, seen, n, 4096);
    n = reach(&envoy__extensions__transport_sockets__tls__v3__secret__descriptor, seen, n, 4096);
    assert_true(sharp_nsensitive_fields >= 8);
    for (size_t i = 0; i < sharp_nsensitive_fields; i++) {
        const sharp_sensitive_field_t *s = &sharp_sensitive_fields[i];
        const ProtobufCMessageDescriptor *d = NULL;
        for (size_t k = 0; k < n && !d; k++)
            if (!strcmp(seen[k]->name, s->message)) d = seen[k];
        if (!d) fail_msg("sensitive list: no message %s", s->message);
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, s->field);
        if (!f) fail_msg("sensitive list: %s has no field %s", s->message, s->field);
        assert_true(sharp_config_field_sensitive(d, f));
    }
    /* and a field not in the list is not sensitive */
    const ProtobufCMessageDescriptor *tc = &envoy__extensions__transport_sockets__tls__v3__tls_certificate__descriptor;
    assert_false(sharp_config_field_sensitive(tc, protobuf_c_message_descriptor_get_field_by_name(tc, "certificate_chain")));
}

int main(void)
{
    sharp_config_types_register();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bootstrap_sensitive_fields_redacted),
        cmocka_unit_test(sensitive_subtree_redacted_whole),
        cmocka_unit_test(sensitive_map_values_redacted),
        cmocka_unit_test(typed_struct_redacted_as_its_type),
        cmocka_unit_test(nothing_sensitive_unchanged),
        cmocka_unit_test(trimmed_then_redacted),
        cmocka_unit_test(sensitive_list_names_real_fields),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sharp_type_registry_reset();
    return rc;
}
