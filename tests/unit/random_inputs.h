/* Random op inputs for the backend tests (CPU ops against a reference, GPU ops against
 * the CPU): a 64-bit LCG, so every machine draws the same values, uniform in [-1, 1).
 * Each test file sets its own seed with random_inputs_seed before drawing. */
#ifndef LQ_TESTS_RANDOM_INPUTS_H
#define LQ_TESTS_RANDOM_INPUTS_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state;

static inline void random_inputs_seed(uint64_t seed) { rng_state = seed; }

static inline float frand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* n values from frand in new memory (the caller frees). */
static inline float *rand_vec(size_t n) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

#endif
