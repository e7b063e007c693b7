/* gguf_convert.h — turning a GGUF model into a Hugging Face model folder.
 *
 * The output is what transformers would save for the same model:
 * config.json, model.safetensors (dequantized to f32, or bf16), tokenizer.json
 * (the `tokenizers` library's format, rebuilt from tokenizer.ggml.*),
 * tokenizer_config.json (chat template, special tokens) and
 * generation_config.json. Architectures: llama (Llama, Mistral, SmolLM, ...)
 * and qwen2. Everything is written into a sibling temporary folder that is
 * renamed into place only when complete, so a failed conversion leaves no
 * folder that looks like a model. */
#ifndef LORQ_GGUF_CONVERT_H
#define LORQ_GGUF_CONVERT_H

#include <jansson.h>
#include <stdint.h>

#include "dtype.h"
#include "error.h"
#include "gguf.h"
#include "progress.h"

typedef struct gguf_convert_stats {
    uint64_t n_tensors;  /* tensors written */
    uint64_t n_params;   /* elements written */
    uint64_t out_bytes;  /* size of model.safetensors */
    char dropped[256];   /* GGUF tensors deliberately not written, with why; "" if none */
} gguf_convert_stats;

/* Converts in_path into out_dir (created; it must not exist or be empty).
 * dtype is LQ_DTYPE_F32 (exact) or LQ_DTYPE_BF16. progress may be NULL. */
int gguf_convert(const char *in_path, const char *out_dir, lq_dtype dtype, lq_progress *progress,
                 gguf_convert_stats *stats, lq_error *err);

/* The tokenizer half, also usable on its own: builds tokenizer.json and
 * tokenizer_config.json documents from the GGUF's tokenizer metadata.
 * context_length sets model_max_length (0: leave it out). */
int gguf_build_tokenizer(const gguf_ctx *g, uint64_t context_length, json_t **tokenizer_json,
                         json_t **tokenizer_config, lq_error *err);

#endif
