"""Golden outputs of the bundled base model from Hugging Face transformers.

transformers loads the original GGUF itself (its own dequantization and its
own undoing of the Q/K permutation), so these numbers are independent of our
converter. For each prompt we record the token ids, the top-100 logits at the
last prompt position and a 32-token greedy continuation (EOS not treated
specially, so every prompt yields 32 tokens); and the perplexity of a fixed
paragraph. Prompts are tokenized by transformers' tokenizer built from the
same GGUF; tests check our tokenizer agrees on them.

    .venv-ref/bin/python tests/reference/base_golden.py models/.cache/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/reference/golden/base_smollm2.json
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "Hello",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the boiling point of water at sea level?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woodcutter and his "
    "daughter. Every morning the woodcutter walked into the forest with his axe, and every evening he came back "
    "with a bundle of wood on his back. One day, as the sun was setting, he did not come back. His daughter waited "
    "by the fire until the moon was high, and then she took a lantern and went out to look for him.",
    "Les plus grandes villes d'Europe sont",
    "List three primary colors:\n1.",
    "Water is made of hydrogen and",
    "In 1492, Columbus sailed across the Atlantic Ocean. The journey took about",
]

PARAGRAPH = (
    "The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, about 30 times "
    "the diameter of Earth. Tidal forces between Earth and the Moon have synchronized the Moon's orbital period "
    "with its rotation period, so the same side of the Moon always faces Earth. The Moon's gravitational pull "
    "produces the tides of Earth's oceans, and it slowly lengthens the day."
)

N_NEW = 32
TOP = 100


def main(gguf_path, out_path):
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model.eval()
    cases = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tok(prompt, add_special_tokens=False).input_ids
            logits = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(logits, TOP)
            seq = list(ids)
            for _ in range(N_NEW):
                nxt = int(torch.argmax(model(torch.tensor([seq])).logits[0, -1]))
                seq.append(nxt)
            cases.append({
                "prompt": prompt,
                "ids": ids,
                "top_ids": top.indices.tolist(),
                "top_logits": [round(float(v), 6) for v in top.values],
                "greedy": seq[len(ids):],
                "greedy_text": tok.decode(seq[len(ids):]),
            })
        ids = tok(PARAGRAPH, add_special_tokens=False).input_ids
        logits = model(torch.tensor([ids])).logits[0]
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    golden = {
        "source": "transformers %s loading %s with gguf_file, float32" % (__import__("transformers").__version__, name),
        "cases": cases,
        "perplexity": {"text": PARAGRAPH, "ids": ids, "ppl": float(torch.exp(nll))},
    }
    with open(out_path, "w") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    print("wrote", out_path, "ppl", golden["perplexity"]["ppl"])


if __name__ == "__main__":
    main(*sys.argv[1:])
