"""Tiny random models of each supported architecture, and their logits from transformers.

Covers what the bundled model does not: Mistral (with and without a sliding
window shorter than the longest prompt), Qwen2 (q/k/v biases), GQA ratios,
rope scaling (linear, llama3), untied and tied embeddings, and weights stored
as bf16 and f16. Each model is a few hundred KB, saved as a Hugging Face
folder under tests/reference/tiny/NAME with golden.json beside it: for a few
prompts, the logits at every position and an 8-token greedy continuation.
Weights are rounded to their storage dtype before the reference runs in
float32, so both sides compute with the same numbers.

    .venv-ref/bin/python tests/reference/tiny_golden.py tests/reference/tiny [NAME ...]

(names: only those models, e.g. a new one, leaving the others' files as they are)
"""
import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

COMMON = dict(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=256,
              rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)

MODELS = {
    "llama3-bf16": (LlamaForCausalLM, LlamaConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32}), torch.bfloat16),
    "mistral-linear-f32": (MistralForCausalLM, MistralConfig(
        **COMMON, num_attention_heads=6, num_key_value_heads=2, sliding_window=None, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}), torch.float32),
    # Each position sees itself and the 7 before it: the 40-token prompt and its continuation reach past that.
    "mistral-window-f32": (MistralForCausalLM, MistralConfig(
        **COMMON, num_attention_heads=4, num_key_value_heads=2, sliding_window=8, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}), torch.float32),
    "qwen2-f16": (Qwen2ForCausalLM, Qwen2Config(
        **COMMON, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), torch.float16),
}

PROMPTS = [[5], [1, 17, 99, 3, 64, 64, 12], list(range(3, 123, 3))]


def main(out_dir, *names):
    for name, (cls, cfg, dtype) in MODELS.items():
        if names and name not in names:
            continue
        torch.manual_seed(len(name))
        model = cls(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.5 if p.dim() == 1 else 0.2)  # biases and norms non-trivial
                p.copy_(p.to(dtype).to(torch.float32))
        cases = []
        with torch.no_grad():
            for ids in PROMPTS:
                logits = model(torch.tensor([ids])).logits[0]
                seq = list(ids)
                for _ in range(8):
                    seq.append(int(torch.argmax(model(torch.tensor([seq])).logits[0, -1])))
                cases.append({"ids": ids, "logits": [[round(float(v), 6) for v in row] for row in logits],
                              "greedy": seq[len(ids):]})
        folder = os.path.join(out_dir, name)
        model.to(dtype).save_pretrained(folder, safe_serialization=True)
        with open(os.path.join(folder, "golden.json"), "w") as f:
            json.dump({"source": "transformers %s, float32 compute" % __import__("transformers").__version__,
                       "cases": cases}, f)
        print("wrote", folder)


if __name__ == "__main__":
    main(*sys.argv[1:])
