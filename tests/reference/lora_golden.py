"""LoRA adapters for the bundled base model, and golden outputs from PEFT.

Builds a few PEFT LoRA adapters on SmolLM2-135M-Instruct (loaded by
transformers from the original GGUF, dequantized to float32, as in
base_golden.py), saves each with PEFT's own save_pretrained, and records what
PEFT computes with them. PEFT initializes lora_B to zero, which would prove
nothing, so every lora_A / lora_B is re-drawn from seeded normals, scaled
against the base weight it adapts so the adapter visibly changes the model
while the logits stay sane. The LoRA weights are rounded to bfloat16 and saved
as BF16 (small files); the goldens are computed in float32 from those
bf16-exact values, so the saved files alone reproduce them (checked below by
reloading each folder with PeftModel.from_pretrained on a fresh base).

The adapters cover: plain r/alpha scaling, use_rslora (alpha/sqrt(r)),
layers_to_transform, a large rank, all seven projections, rank_pattern and
alpha_pattern (PEFT matches a pattern key against a module name as the regex
`(.*\\.)?(key)$`, first key in dict order wins), and target_modules given as a
regex string (re.fullmatch against the module name; layers_to_transform is
ignored then, so the layers are chosen by the regex itself).

For each adapter and prompt (the token ids are those of base_smollm2.json, so
the greedy continuations can be compared with the base model's) we record the
top-100 logits at the last prompt position and a 32-token greedy continuation
(manual argmax loop over the full sequence, EOS not treated specially), as
base_golden.py does for the base model.

    .venv-ref/bin/python tests/reference/lora_golden.py models/.cache/SmolLM2-135M-Instruct.Q4_1.gguf \
        tests/reference/adapters tests/reference/golden/lora_smollm2.json
"""
import copy
import json
import math
import os
import shutil
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_GOLDEN = os.path.join(HERE, "golden", "base_smollm2.json")
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # written as base_model_name_or_path (not a local path)

N_NEW = 32
TOP = 100
CASES = list(range(9))  # indexes into base_smollm2.json cases (1 to 98 tokens)

ALL7 = r".*\.(1[0-4])\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

# name, LoraConfig arguments, seed, strength (std of scaling * B @ A relative to the std of the base weight)
ADAPTERS = [
    ("r8-qv", dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), 1, 0.3),
    ("r16-attn-rslora", dict(r=16, lora_alpha=32, use_rslora=True,
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                             layers_to_transform=list(range(15))), 2, 0.25),
    ("r64-qv-layers", dict(r=64, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                           layers_to_transform=[0, 1, 2, 3, 27, 28, 29]), 3, 0.5),
    ("r8-all-pattern", dict(r=8, lora_alpha=8, target_modules=ALL7,
                            rank_pattern={"gate_proj": 4, "down_proj": 12},
                            alpha_pattern={"up_proj": 24, "layers.12.self_attn.o_proj": 2}), 4, 0.3),
]


def lora_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def randomize(model, seed, strength):
    """Re-draw every lora_A / lora_B (module-name order, one seeded generator), round to bf16."""
    g = torch.Generator().manual_seed(seed)
    for _, m in lora_layers(model):
        w = m.get_base_layer().weight
        a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
        r, n_in = a.shape
        # entries of B @ A have std sqrt(r / n_in) * std(B) when std(A) = 1 / sqrt(n_in)
        std_b = strength * float(w.std()) / (m.scaling["default"] * math.sqrt(r / n_in))
        with torch.no_grad():
            a.copy_((torch.randn(a.shape, generator=g) / math.sqrt(n_in)).to(torch.bfloat16).float())
            b.copy_((torch.randn(b.shape, generator=g) * std_b).to(torch.bfloat16).float())


def settings(model):
    """Effective per-module settings as PEFT built them: layers, r, alpha, scaling per projection."""
    out = {}
    for name, m in lora_layers(model):
        proj = name.rsplit(".", 1)[1]
        layer = int(name.split(".layers.")[1].split(".")[0])
        e = out.setdefault(proj, {"layers": [], "r": {}, "alpha": {}, "scaling": {}})
        e["layers"].append(layer)
        for k, v in (("r", m.r["default"]), ("alpha", m.lora_alpha["default"]), ("scaling", m.scaling["default"])):
            e[k].setdefault(str(v), []).append(layer)
    # collapse {value: [layers]} to the value when every layer has the same one
    for e in out.values():
        for k in ("r", "alpha", "scaling"):
            if len(e[k]) == 1:
                e[k] = float(next(iter(e[k]))) if k != "r" else int(next(iter(e[k])))
    return out


def last_logits(model, ids):
    return model(torch.tensor([ids])).logits[0, -1]


def record(model, tok, ids):
    logits = last_logits(model, ids)
    top = torch.topk(logits, TOP)
    seq, margins = list(ids), []
    for i in range(N_NEW):
        step = logits if i == 0 else last_logits(model, seq)
        two = torch.topk(step, 2).values
        margins.append(round(float(two[0] - two[1]), 6))
        seq.append(int(torch.argmax(step)))
    return logits, {
        "ids": ids,
        "top_ids": top.indices.tolist(),
        "top_logits": [round(float(v), 6) for v in top.values],
        "greedy": seq[len(ids):],
        "greedy_text": tok.decode(seq[len(ids):]),
        "max_abs_logit": round(float(logits.abs().max()), 3),
        # top-1 minus top-2 logit at each greedy step: a near-tie there may flip under other arithmetic
        "greedy_margins": margins,
    }


def save_bf16(model, folder):
    """PEFT's save_pretrained with the LoRA parameters in bf16, so the file stores BF16."""
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.data = p.data.to(torch.bfloat16)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    model.peft_config["default"].base_model_name_or_path = BASE_ID
    model.save_pretrained(folder, save_embedding_layers=False)  # False: no Hub look-up for the base config
    readme = os.path.join(folder, "README.md")  # PEFT's model card template, not needed
    if os.path.exists(readme):
        os.remove(readme)
    for p in lora:
        p.data = p.data.float()


def main(gguf_path, adapters_dir, out_path):
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    pristine = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    base_cases = json.load(open(BASE_GOLDEN))["cases"]
    prompts = [base_cases[i] for i in CASES]

    with torch.no_grad():  # the base model here is the one base_smollm2.json was made from
        c = prompts[0]
        logits = last_logits(pristine, c["ids"])
        d = float((logits[c["top_ids"]] - torch.tensor(c["top_logits"])).abs().max())
        print("base vs base_smollm2.json: top-100 max abs diff %.2e" % d)
        assert d < 1e-4

    golden = {
        "source": "peft %s on transformers %s loading %s with gguf_file, float32; LoRA weights bf16-exact" % (
            __import__("peft").__version__, __import__("transformers").__version__, name),
        "base": name,
        "adapters": {},
    }
    os.makedirs(adapters_dir, exist_ok=True)
    for aname, kwargs, seed, strength in ADAPTERS:
        model = get_peft_model(copy.deepcopy(pristine), LoraConfig(**kwargs)).eval()
        randomize(model, seed, strength)
        eff = settings(model)
        print("\n== %s  %s" % (aname, kwargs))
        for proj, e in eff.items():
            print("   %-9s r=%s alpha=%s scaling=%s layers=%s" % (proj, e["r"], e["alpha"], e["scaling"], e["layers"]))
        path = os.path.join(adapters_dir, aname)
        save_bf16(model, path)
        cases = []
        with torch.no_grad():
            for bc in prompts:
                logits, case = record(model, tok, bc["ids"])
                case["prompt"] = bc["prompt"]
                cases.append(case)
                moved = float((logits[bc["top_ids"]] - torch.tensor(bc["top_logits"])).abs().max())
                print("   %3d tok: top1 %6d (base %6d)  max|logit| %6.2f  moved %5.2f  min margin %.4f  greedy %s base | %r" % (
                    len(bc["ids"]), case["top_ids"][0], bc["top_ids"][0], case["max_abs_logit"], moved, min(case["greedy_margins"]),
                    "==" if case["greedy"] == bc["greedy"] else "!=", case["greedy_text"][:60]))
        golden["adapters"][aname] = {
            "path": os.path.relpath(path),
            "config": {k: v for k, v in kwargs.items()},
            "seed": seed,
            "strength": strength,
            "effective": eff,
            "cases": cases,
        }
        del model

    with open(out_path, "w") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    print("\nwrote", out_path)

    # The saved folders alone must reproduce the goldens.
    print("\nreload check (PeftModel.from_pretrained on a fresh base):")
    total = 0
    for aname, a in golden["adapters"].items():
        path = a["path"]
        with safe_open(os.path.join(path, "adapter_model.safetensors"), "pt") as f:
            keys = list(f.keys())
            dtypes = {f.get_slice(k).get_dtype() for k in keys}
        model = PeftModel.from_pretrained(copy.deepcopy(pristine), path).eval()
        worst, same_top = 0.0, True
        with torch.no_grad():
            for c in a["cases"]:
                logits = last_logits(model, c["ids"])
                worst = max(worst, float((logits[c["top_ids"]] - torch.tensor(c["top_logits"])).abs().max()))
                same_top &= torch.topk(logits, TOP).indices.tolist() == c["top_ids"]
        differs = sum(c["greedy"] != base_cases[i]["greedy"] for i, c in zip(CASES, a["cases"]))
        top1 = sum(c["top_ids"][0] != base_cases[i]["top_ids"][0] for i, c in zip(CASES, a["cases"]))
        size = sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
        total += size
        print("  %-16s %4d tensors %s  max abs diff %.2e  same top-100 ids %s  greedy differs %d/%d  "
              "top-1 differs %d/%d  %s %d bytes" % (aname, len(keys), sorted(dtypes), worst, same_top,
                                                    differs, len(CASES), top1, len(CASES), sorted(os.listdir(path)),
                                                    size))
        assert worst < 1e-5 and dtypes == {"BF16"}
        del model
    print("  total %d bytes" % total)


if __name__ == "__main__":
    main(*sys.argv[1:])
