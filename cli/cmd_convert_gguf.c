/* cmd_convert_gguf.c — `lorq convert-gguf IN.gguf OUT_DIR [--dtype f32|bf16]`.
 *
 * Argument parsing and reporting only; the conversion itself lives in
 * common/gguf_convert.c so tests and other tools can call it. f32 is the
 * default because it is exact: every value is what the quantized blocks
 * decode to, bit for bit. bf16 halves the size at the cost of one rounding. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gguf_convert.h"

static int usage(void) {
    fprintf(stderr, "usage: lorq convert-gguf IN.gguf OUT_DIR [--dtype f32|bf16]\n");
    return 2;
}

static int parse_dtype(const char *s, lq_dtype *out) {
    if (!strcmp(s, "f32") || !strcmp(s, "float32")) *out = LQ_DTYPE_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = LQ_DTYPE_BF16;
    else return -1;
    return 0;
}

int cmd_convert_gguf(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    lq_dtype dtype = LQ_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fprintf(stdout, "usage: lorq convert-gguf IN.gguf OUT_DIR [--dtype f32|bf16]\n");
            return 0;
        } else if (!strcmp(a, "--dtype") || !strncmp(a, "--dtype=", 8)) {
            const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || parse_dtype(v, &dtype)) {
                fprintf(stderr, "lorq convert-gguf: --dtype must be f32 or bf16\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "lorq convert-gguf: unknown option '%s'\n", a);
            return usage();
        } else if (!in) in = a;
        else if (!out) out = a;
        else return usage();
    }
    if (!in || !out) return usage();

    lq_progress progress;
    gguf_convert_stats stats;
    lq_error err = {{0}};
    double t0 = lq_now();
    if (gguf_convert(in, out, dtype, &progress, &stats, &err)) {
        fprintf(stderr, "lorq convert-gguf: %s\n", err.msg);
        return 1;
    }
    double secs = lq_now() - t0;
    if (stats.dropped[0]) fprintf(stderr, "lorq convert-gguf: not written: %s\n", stats.dropped);
    printf("converted %s -> %s: %llu tensors, %llu parameters, %.1f MB %s, %.2f s\n", in, out,
           (unsigned long long)stats.n_tensors, (unsigned long long)stats.n_params, (double)stats.out_bytes / 1e6,
           lq_dtype_name(dtype), secs);
    return 0;
}
