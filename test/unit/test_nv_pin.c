/* test_nv_pin: header blocks handed to nghttp2 without its copy (nv_pin.h),
 * through real client and server sessions in memory: the peer decodes what
 * was submitted even when the map changed before the frame was packed, and
 * every block goes when nghttp2 says the frame went, gave up on it, or the
 * session is deleted with it still queued. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "http/headers.h"
#include "http/nv_pin.h"

#include <string.h>

static bool in_map(const uint8_t *p, size_t n, const char *base, size_t blen)
{
    return (uintptr_t)p >= (uintptr_t)base && (uintptr_t)p + n <= (uintptr_t)base + blen;
}

typedef struct {
    sharp_nv_pin_t *pins;
    int sent_headers, not_sent_headers;
} side_t;

typedef struct {
    char names[16][32], values[16][64];
    int n;
} seen_t;

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ng;
    side_t *sd = ud;
    if (frame->hd.type == NGHTTP2_HEADERS) sd->sent_headers++;
    sharp_nv_pin_release(&sd->pins, frame);
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int err, void *ud)
{
    (void)ng;
    (void)err;
    side_t *sd = ud;
    if (frame->hd.type == NGHTTP2_HEADERS) sd->not_sent_headers++;
    sharp_nv_pin_release(&sd->pins, frame);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)ng;
    (void)frame;
    (void)flags;
    seen_t *sn = ud;
    if (sn->n < 16) {
        snprintf(sn->names[sn->n], sizeof sn->names[0], "%.*s", (int)namelen, (const char *)name);
        snprintf(sn->values[sn->n], sizeof sn->values[0], "%.*s", (int)valuelen, (const char *)value);
        sn->n++;
    }
    return 0;
}

static nghttp2_session *client(side_t *sd)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
    nghttp2_session *ng;
    assert_int_equal(nghttp2_session_client_new(&ng, cb, sd), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(ng, NGHTTP2_FLAG_NONE, NULL, 0);
    return ng;
}

static nghttp2_session *server(seen_t *sn)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session *ng;
    assert_int_equal(nghttp2_session_server_new(&ng, cb, sn), 0);
    nghttp2_session_callbacks_del(cb);
    return ng;
}

/* Everything a session has to send, into the other one. */
static void pump(nghttp2_session *from, nghttp2_session *to)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(from, &data);
        assert_true(n >= 0);
        if (n == 0) break;
        if (to) assert_int_equal(nghttp2_session_mem_recv(to, data, (size_t)n), n);
    }
}

/* A request built as the client codec builds one: literal pseudo-headers,
 * values and regular fields from a map. */
static size_t request_nv(const sharp_headers_t *h, nghttp2_nv *nv)
{
    size_t nn = 0;
    nv[nn++] = (nghttp2_nv){(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nv[nn++] = (nghttp2_nv){(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE};
    for (uint32_t i = 0; i < h->n; i++) {
        sharp_str_t k = sharp_headers_name(h, i), v = sharp_headers_value(h, i);
        nv[nn++] = (nghttp2_nv){(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len,
                                i == 2 ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE};
    }
    return nn;
}

static void fill(sharp_headers_t *h)
{
    sharp_headers_init(h);
    sharp_headers_add_cstr(h, ":authority", "example.com");
    sharp_headers_add_cstr(h, ":path", "/a/b?c=d");
    sharp_headers_add_cstr(h, "X-Request-Id", "0123456789");
    sharp_headers_add_cstr(h, "accept", "*/*");
}

/* The fields point into one block with both NO_COPY flags (others kept),
 * the first name at its start; the bytes are those submitted. */
static void test_pin_layout(void **state)
{
    (void)state;
    sharp_headers_t h;
    fill(&h);
    nghttp2_nv nv[8];
    size_t nn = request_nv(&h, nv);
    sharp_nv_pin_t *list = NULL;
    sharp_nv_pin_t *b = sharp_nv_pin(&list, nv, nn, 2, h.buf, h.blen);
    assert_non_null(b);
    assert_ptr_equal(list, b);
    assert_ptr_equal(nv[0].name, (uint8_t *)(b + 1));
    for (size_t i = 0; i < nn; i++) {
        assert_int_equal(nv[i].flags & SHARP_NV_PIN_FLAGS, SHARP_NV_PIN_FLAGS);
        assert_false(in_map(nv[i].name, nv[i].namelen, h.buf, h.blen));
        assert_false(in_map(nv[i].value, nv[i].valuelen, h.buf, h.blen));
    }
    assert_true(nv[4].flags & NGHTTP2_NV_FLAG_NO_INDEX);
    assert_memory_equal(nv[1].value, "http", 4);
    assert_memory_equal(nv[4].name, "x-request-id", 12);
    assert_memory_equal(nv[5].value, "*/*", 3);
    /* every field from the map (trailers): the first name still starts the bytes */
    sharp_str_t k = sharp_headers_name(&h, 2), v = sharp_headers_value(&h, 2);
    nghttp2_nv t[2] = {{(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len, NGHTTP2_NV_FLAG_NONE}};
    k = sharp_headers_name(&h, 3), v = sharp_headers_value(&h, 3);
    t[1] = (nghttp2_nv){(uint8_t *)k.p, (uint8_t *)v.p, k.len, v.len, NGHTTP2_NV_FLAG_NONE};
    sharp_nv_pin_t *tb = sharp_nv_pin(&list, t, 2, 0, h.buf, h.blen);
    assert_ptr_equal(t[0].name, (uint8_t *)(tb + 1));
    assert_memory_equal(t[0].name, "x-request-id", 12);
    assert_memory_equal(t[0].value, "0123456789", 10);
    assert_memory_equal(t[1].name, "accept", 6);
    assert_memory_equal(t[1].value, "*/*", 3);
    assert_false(in_map(t[1].value, t[1].valuelen, h.buf, h.blen));
    assert_ptr_equal(list, tb);
    assert_ptr_equal(list->next, b);
    sharp_nv_pin_drop(&list, b);
    assert_ptr_equal(list, tb);
    assert_null(tb->next);
    /* nothing to pin */
    assert_null(sharp_nv_pin(&list, nv, 0, 0, h.buf, h.blen));
    sharp_nv_pin_free_all(&list);
    assert_null(list);
    sharp_headers_free(&h);
}

/* The map is overwritten and freed after the submit, before the frame is
 * packed: the server decodes the request as submitted, and the block goes
 * when the frame is sent. */
static void test_submit_outlives_map(void **state)
{
    (void)state;
    side_t sd = {0};
    seen_t sn = {0};
    nghttp2_session *c = client(&sd), *s = server(&sn);
    sharp_headers_t h;
    fill(&h);
    nghttp2_nv nv[8];
    size_t nn = request_nv(&h, nv);
    assert_non_null(sharp_nv_pin(&sd.pins, nv, nn, 2, h.buf, h.blen));
    assert_true(nghttp2_submit_request(c, NULL, nv, nn, NULL, NULL) > 0);
    memset(h.buf, 'Z', h.bcap);
    sharp_headers_free(&h);
    memset(nv, 0, sizeof nv);
    pump(c, s);
    assert_int_equal(sd.sent_headers, 1);
    assert_null(sd.pins);
    assert_int_equal(sn.n, 6);
    assert_string_equal(sn.names[0], ":method");
    assert_string_equal(sn.values[0], "GET");
    assert_string_equal(sn.names[2], ":authority");
    assert_string_equal(sn.values[2], "example.com");
    assert_string_equal(sn.values[3], "/a/b?c=d");
    assert_string_equal(sn.names[4], "x-request-id");
    assert_string_equal(sn.values[5], "*/*");
    nghttp2_session_del(c);
    nghttp2_session_del(s);
}

/* A request that waits for a stream slot when the session ends goes with
 * the connection's list; one the session gives up on (its GOAWAY came
 * first) goes through on_frame_not_send; a failed submit is dropped. */
static void test_unsent_blocks_freed(void **state)
{
    (void)state;
    side_t sd = {0};
    seen_t sn = {0};
    nghttp2_session *c = client(&sd), *s = server(&sn);
    nghttp2_settings_entry one = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1};
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, &one, 1);
    pump(s, c);
    pump(c, s);
    sharp_headers_t h;
    fill(&h);
    nghttp2_nv nv[8];
    for (int i = 0; i < 3; i++) {
        size_t nn = request_nv(&h, nv);
        sharp_nv_pin(&sd.pins, nv, nn, 2, h.buf, h.blen);
        assert_true(nghttp2_submit_request(c, NULL, nv, nn, NULL, NULL) > 0);
    }
    pump(c, s); /* the first goes; two wait for the slot */
    assert_int_equal(sd.sent_headers, 1);
    assert_non_null(sd.pins);
    assert_non_null(sd.pins->next);
    assert_null(sd.pins->next->next);
    nghttp2_session_del(c);
    sharp_nv_pin_free_all(&sd.pins);
    assert_null(sd.pins);

    /* a GOAWAY first: the queued request is not sent */
    side_t sd2 = {0};
    nghttp2_session *c2 = client(&sd2);
    size_t nn = request_nv(&h, nv);
    sharp_nv_pin(&sd2.pins, nv, nn, 2, h.buf, h.blen);
    assert_true(nghttp2_submit_request(c2, NULL, nv, nn, NULL, NULL) > 0);
    nghttp2_session_terminate_session(c2, NGHTTP2_NO_ERROR);
    pump(c2, NULL);
    assert_int_equal(sd2.not_sent_headers, 1);
    assert_null(sd2.pins);

    /* a submit nghttp2 refuses: the caller drops the block */
    nn = request_nv(&h, nv);
    sharp_nv_pin_t *b = sharp_nv_pin(&sd2.pins, nv, nn, 2, h.buf, h.blen);
    if (nghttp2_submit_trailer(c2, 1000, nv, nn) != 0) sharp_nv_pin_drop(&sd2.pins, b);
    else sharp_nv_pin_free_all(&sd2.pins);
    assert_null(sd2.pins);
    nghttp2_session_del(c2);
    nghttp2_session_del(s);
    sharp_headers_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin_layout),
        cmocka_unit_test(test_submit_outlives_map),
        cmocka_unit_test(test_unsent_blocks_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
