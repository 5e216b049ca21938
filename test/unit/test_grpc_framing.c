/* gRPC's length-prefixed messages (proxy/grpc/framing.c) and the service
 * registry's path lookup (proxy/grpc/server.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "grpc/framing.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/server.h"

static void frame_roundtrip(void **state)
{
    (void)state;
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rq.service = "sharp";
    sharp_sbuf_t b = {0};
    sharp_grpc_frame_message(&b, &rq.base);
    const uint8_t want[] = {0, 0, 0, 0, 7, 0x0a, 5, 's', 'h', 'a', 'r', 'p'};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    /* every cut short of the whole message needs more */
    sharp_grpc_frame_t f;
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(sharp_grpc_deframe((const uint8_t *)b.data, n, 100, &f), SHARP_GRPC_FRAME_NEED_MORE);
    assert_int_equal(sharp_grpc_deframe((const uint8_t *)b.data, b.len, 100, &f), SHARP_GRPC_FRAME_OK);
    assert_false(f.compressed);
    assert_int_equal(f.len, 7);
    assert_int_equal(f.used, 12);
    assert_ptr_equal(f.msg, (const uint8_t *)b.data + 5);
    Grpc__Health__V1__HealthCheckRequest *back =
        grpc__health__v1__health_check_request__unpack(NULL, f.len, f.msg);
    assert_non_null(back);
    assert_string_equal(back->service, "sharp");
    grpc__health__v1__health_check_request__free_unpacked(back, NULL);
    sharp_sbuf_free(&b);
}

static void frame_empty_message(void **state)
{
    (void)state;
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    sharp_sbuf_t b = {0};
    sharp_grpc_frame_message(&b, &rq.base); /* proto3 default: no bytes */
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "\0\0\0\0\0", 5);
    sharp_grpc_frame_t f;
    assert_int_equal(sharp_grpc_deframe((const uint8_t *)b.data, b.len, 0, &f), SHARP_GRPC_FRAME_OK);
    assert_int_equal(f.len, 0);
    assert_int_equal(f.used, 5);
    sharp_sbuf_free(&b);
}

static void deframe_limits_and_flags(void **state)
{
    (void)state;
    sharp_grpc_frame_t f;
    /* the size is refused from the prefix alone, before the body */
    const uint8_t big[] = {0, 0, 0x40, 0, 1};
    assert_int_equal(sharp_grpc_deframe(big, sizeof big, 4 * 1024 * 1024, &f), SHARP_GRPC_FRAME_TOO_LARGE);
    assert_int_equal(f.len, 4 * 1024 * 1024 + 1);
    const uint8_t max[] = {0, 0, 0x40, 0, 0};
    assert_int_equal(sharp_grpc_deframe(max, sizeof max, 4 * 1024 * 1024, &f), SHARP_GRPC_FRAME_NEED_MORE);
    const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(sharp_grpc_deframe(huge, sizeof huge, UINT32_MAX - 1, &f), SHARP_GRPC_FRAME_TOO_LARGE);
    /* flag 1 is a compressed message, reported as such; others are invalid */
    const uint8_t comp[] = {1, 0, 0, 0, 1, 'x'};
    assert_int_equal(sharp_grpc_deframe(comp, sizeof comp, 10, &f), SHARP_GRPC_FRAME_OK);
    assert_true(f.compressed);
    const uint8_t bad[] = {2, 0, 0, 0, 0};
    assert_int_equal(sharp_grpc_deframe(bad, sizeof bad, 10, &f), SHARP_GRPC_FRAME_BAD_FLAG);
    /* two messages: the first is read, `used` says where the next starts */
    const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 0};
    assert_int_equal(sharp_grpc_deframe(two, sizeof two, 10, &f), SHARP_GRPC_FRAME_OK);
    assert_int_equal(f.used, 6);
    assert_int_equal(sharp_grpc_deframe(two + 6, sizeof two - 6, 10, &f), SHARP_GRPC_FRAME_OK);
    assert_int_equal(f.len, 0);
}

static void h_none(sharp_grpc_call_t *call, const ProtobufCMessage *request, void *data)
{
    (void)request;
    (void)data;
    sharp_grpc_call_finish(call, SHARP_GRPC_UNIMPLEMENTED, NULL);
}

static void registry_paths(void **state)
{
    (void)state;
    static const sharp_grpc_method_impl_t impls[] = {{.handler = h_none}, {.handler = h_none, .server_streaming = true}};
    sharp_grpc_registry_t *r = sharp_grpc_registry_new();
    assert_int_equal(sharp_grpc_registry_add(r, &grpc__health__v1__health__descriptor, impls, NULL, NULL), 0);
    assert_int_equal(sharp_grpc_registry_add(r, &grpc__health__v1__health__descriptor, impls, NULL, NULL), -1);
    bool known;
    const char *p = "/grpc.health.v1.Health/Watch";
    const ProtobufCMethodDescriptor *m = sharp_grpc_registry_find(r, p, strlen(p), &known);
    assert_non_null(m);
    assert_true(known);
    assert_string_equal(m->name, "Watch");
    assert_ptr_equal(m->output, &grpc__health__v1__health_check_response__descriptor);
    p = "/grpc.health.v1.Health/List";
    assert_null(sharp_grpc_registry_find(r, p, strlen(p), &known));
    assert_true(known);
    const char *unknown[] = {"/grpc.health.v1.Healt/Check", "/grpc.health.v1.Health", "grpc.health.v1.Health/Check",
                             "/", "", "/grpc.health.v1.Health/Check/x"};
    for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
        assert_null(sharp_grpc_registry_find(r, unknown[i], strlen(unknown[i]), &known));
        assert_true(i == 5 ? known : !known);
    }
    sharp_grpc_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_roundtrip),
        cmocka_unit_test(frame_empty_message),
        cmocka_unit_test(deframe_limits_and_flags),
        cmocka_unit_test(registry_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
