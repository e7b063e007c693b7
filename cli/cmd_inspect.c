/* cmd_inspect.c — `lorq inspect PATH`: list the tensors of a safetensors file
 * or model folder (sharded or not), after full header validation.
 *
 * With --json it prints one JSON object {name: {dtype, shape, fnv1a64}} where
 * fnv1a64 hashes the tensor's raw bytes, so tests (and users comparing two
 * checkpoints) can check contents without dumping them. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "safetensors.h"

static uint64_t fnv1a64(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void print_table(const st_set *s) {
    size_t total = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const st_tensor *t = &s->tensors[i];
        printf("%-60s %-5s [", t->name, lq_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf("%s%" PRId64, d ? ", " : "", t->shape[d]);
        printf("]\n");
        total += t->numel;
    }
    printf("%zu tensors, %zu parameters\n", s->n_tensors, total);
}

static void print_json(const st_set *s) {
    json_t *root = json_object();
    for (size_t i = 0; i < s->n_tensors; i++) {
        const st_tensor *t = &s->tensors[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        char hash[17];
        snprintf(hash, sizeof hash, "%016" PRIx64, fnv1a64(t->data, t->nbytes));
        json_object_set_new(root, t->name,
                            json_pack("{s:s, s:o, s:s}", "dtype", lq_dtype_name(t->dtype), "shape", shape, "fnv1a64", hash));
    }
    json_dumpf(root, stdout, JSON_COMPACT);
    putchar('\n');
    json_decref(root);
}

int cmd_inspect(int argc, char **argv) {
    int as_json = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) as_json = 1;
        else if (argv[i][0] == '-' || path) {
            fprintf(stderr, "usage: lorq inspect [--json] FILE.safetensors|MODEL_DIR\n");
            return 2;
        } else path = argv[i];
    }
    if (!path) {
        fprintf(stderr, "usage: lorq inspect [--json] FILE.safetensors|MODEL_DIR\n");
        return 2;
    }
    st_set s;
    lq_error err;
    if (st_open(&s, path, &err) != 0) {
        fprintf(stderr, "lorq inspect: %s\n", err.msg);
        return 1;
    }
    if (as_json) print_json(&s);
    else print_table(&s);
    st_close(&s);
    return 0;
}
