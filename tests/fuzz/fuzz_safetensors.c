/* fuzz_safetensors.c — libFuzzer target: any byte string fed to st_parse must
 * either fail cleanly or yield tensors whose every byte is readable. */
#include <stddef.h>
#include <stdint.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_set s;
    lq_error err;
    if (st_parse(&s, data, size, &err) != 0) return 0;
    volatile unsigned sum = 0;
    for (size_t i = 0; i < s.n_tensors; i++) {
        const unsigned char *p = s.tensors[i].data;
        for (size_t j = 0; j < s.tensors[i].nbytes; j++) sum += p[j];
        (void)st_find(&s, s.tensors[i].name);
    }
    (void)st_meta(&s, "format");
    st_close(&s);
    return 0;
}
