/* lora.h — PEFT LoRA adapters for the base model.
 *
 * An adapter is a folder with adapter_config.json and adapter_model.safetensors
 * as PEFT's save_pretrained writes them. For each (layer, projection) it
 * adapts, it holds A [r][in] and B transposed, [r][out] (kernels/backend.h says
 * why), in backend memory, and the scale: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, where r and
 * alpha may come from rank_pattern / alpha_pattern. The model adds
 * scale · B·(A·x) to the projection's output (worker/model.c), computed with
 * the backend's segmented shrink/expand ops: weights are never merged into
 * the base, so any mix of adapters can share a step.
 *
 * Weights stay in the file's precision when it is bf16 (widening in the
 * kernel is exact, and a decode step that applies many adapters is bound by
 * reading them, so half the bytes is nearly half the time); f32 and f16 files
 * are held in f32, which represents them exactly. `bytes` is what is held.
 *
 * Loading is two steps, which the worker runs apart: parsing the files into
 * host memory (lq_lora_parse: the checks, the dtype conversion, B's
 * transpose, in exactly the layout the backend copy will have) and copying
 * that image to the backend (lq_lora_upload: one allocation, one copy). The
 * worker keeps parsed images in its host-memory tier (worker/host_tier.h), so
 * an adapter evicted from device memory comes back with an upload only, and
 * parses on its loader thread while only the upload touches the backend.
 * lq_lora_load does both and keeps nothing.
 *
 * Loading checks the adapter against the base model — module names, shapes,
 * layer indices — and refuses what lorq cannot apply faithfully (DoRA,
 * modules_to_save, embedding/lm_head adapters, pickled .bin weights) with a
 * message naming the problem. */
#ifndef LORQ_LORA_H
#define LORQ_LORA_H

#include <stddef.h>

#include "error.h"
#include "model.h"

typedef enum lq_proj {
    LQ_PROJ_Q,
    LQ_PROJ_K,
    LQ_PROJ_V,
    LQ_PROJ_O,
    LQ_PROJ_GATE,
    LQ_PROJ_UP,
    LQ_PROJ_DOWN,
    LQ_PROJ_COUNT
} lq_proj;

const char *lq_proj_name(lq_proj p); /* "q_proj", ... */

/* A comma list of projections ("q_proj,v_proj", or short "q,v", or "all") as a bit mask
 * for lq_lora_random. */
int lq_proj_mask_parse(const char *list, unsigned *mask, lq_error *err);

typedef struct lq_lora_module {
    int rank; /* 0: this (layer, projection) is not adapted */
    float scale;
    lq_dtype dtype; /* of A and B: LQ_DTYPE_F32 or LQ_DTYPE_BF16 */
    void *A, *B;    /* in the adapter's weights: A [rank][in], B [rank][out] (PEFT's lora_B transposed) */
} lq_lora_module;

typedef struct lq_lora {
    char *name;
    int n_layers;
    lq_lora_module *mods; /* [n_layers][LQ_PROJ_COUNT] */
    int max_rank;
    void *weights; /* backend memory: every module's A and B */
    size_t bytes;  /* backend memory held */
    lq_backend *backend; /* NULL in an lq_lora_host: weights is host memory */
} lq_lora;

/* An adapter parsed into host memory, ready to upload. A type of its own so
 * that it cannot be handed to the model by mistake. */
typedef struct lq_lora_host {
    lq_lora lora; /* backend NULL; weights malloc'd, A/B point into it; bytes as the upload will hold */
} lq_lora_host;

/* Reads and checks the folder into host memory (no backend call: safe on any thread). */
lq_lora_host *lq_lora_parse(const char *dir, const char *name, const lq_model *base, lq_error *err);
/* A backend copy of a parsed adapter, named as it is; h is left as it was. */
lq_lora *lq_lora_upload(const lq_lora_host *h, lq_backend *b, lq_error *err);
void lq_lora_host_free(lq_lora_host *h);

/* lq_lora_parse, then lq_lora_upload to the base model's backend. */
lq_lora *lq_lora_load(const char *dir, const char *name, const lq_model *base, lq_error *err);

/* A random adapter (dummy weights, as vLLM's --load-format dummy): rank r on the
 * projections whose bit is set in proj_mask, every layer, bf16 weights as PEFT
 * saves an adapter trained in bf16; for benchmarks. */
lq_lora *lq_lora_random(const lq_model *base, const char *name, int rank, unsigned proj_mask, unsigned long seed,
                        lq_error *err);

void lq_lora_free(lq_lora *a);

static inline const lq_lora_module *lq_lora_module_at(const lq_lora *a, int layer, lq_proj p) {
    return &a->mods[(size_t)layer * LQ_PROJ_COUNT + p];
}

/* Input and output sizes of a projection of the base model. */
void lq_proj_dims(const lq_model_config *c, lq_proj p, int *in, int *out);

#endif
