/* The hash behind sds.<name>.version and the file-change check
 * (proxy/tls/sds.c): XXH64 with seed 0, as Envoy's HashUtil::xxHash64, on
 * the reference values of xxHash (every tail length path: stripes of 32
 * bytes, 8-byte words, a 4-byte word, single bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "tls/sds.h"

static uint64_t h(const char *s)
{
    return sharp_xxhash64(s, strlen(s));
}

static void xxhash64_reference_values(void **state)
{
    (void)state;
    assert_true(h("") == 0xEF46DB3751D8E999ull);
    assert_true(h("a") == 0xD24EC4F1A98C6E5Bull);
    assert_true(h("abc") == 0x44BC2CF5AD770999ull);
    assert_true(h("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(xxhash64_reference_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
