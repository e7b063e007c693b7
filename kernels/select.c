/* select.c — which backend runs: --device / LORQ_DEVICE for lorq and lorq-worker.
 *
 * "auto" (the default) takes the GPU when the CUDA runtime sees one and the CPU
 * otherwise, saying why on stderr, so one binary serves GPU and CPU machines alike.
 * "cuda" asked for explicitly is a promise the caller relies on (benchmarks, a GPU
 * worker pool): failing to keep it is an error, not a quiet fallback.
 *
 * The build decides whether the CUDA backend exists: with CUDA on, the Makefile
 * compiles this file with LQ_HAVE_CUDA and kernels/cuda/ provides the two CUDA
 * entry points; without it (make CUDA=0, no nvcc, and the sanitized unit-test
 * build, where the CUDA runtime and ASan do not mix) the stubs below say so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#ifndef LQ_HAVE_CUDA
static const char NO_CUDA[] = "this lorq was built without CUDA (build with nvcc installed, and without CUDA=0)";

lq_backend *lq_backend_cuda_new(int device, lq_error *err) {
    (void)device;
    lq_fail(err, "--device cuda: %s", NO_CUDA);
    return NULL;
}

int lq_cuda_device_count(char *why, size_t why_size) {
    if (why && why_size) snprintf(why, why_size, "%s", NO_CUDA);
    return 0;
}
#endif

lq_backend *lq_backend_open(const char *name, int n_threads, lq_error *err) {
    if (!name || !*name) name = getenv("LORQ_DEVICE");
    if (!name || !*name) name = "auto";
    if (!strcmp(name, "cpu")) return lq_backend_cpu_new(n_threads, err);
    if (!strcmp(name, "cuda")) return lq_backend_cuda_new(0, err);
    if (strcmp(name, "auto") != 0) {
        lq_fail(err, "device '%s' is not one lorq knows (cpu, cuda, auto)", name);
        return NULL;
    }
    char why[256] = "";
    if (lq_cuda_device_count(why, sizeof why) > 0) return lq_backend_cuda_new(0, err);
#ifdef LQ_HAVE_CUDA
    /* Only a CUDA build has something to fall back from. */
    fprintf(stderr, "lorq: no GPU visible (%s); using the CPU backend\n", why);
#endif
    return lq_backend_cpu_new(n_threads, err);
}
