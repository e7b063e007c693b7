"""Exact-match accuracy of the demo adapters through the engine's command line.

For each held-out example of a task (demo_tasks.heldout_examples) it runs
`lorq generate --model MODEL [--adapter DIR] --prompt-ids IDS --max-new-tokens N
--json --threads 1` (greedy; the ids are the chat-templated prompt tokenized
with `tokenizers` from the model's tokenizer.json), takes "text" from the JSON
and judges it with demo_tasks.is_correct. At most two generate processes run at
a time.

    python tests/reference/eval_demo.py --lorq bin/lorq [--model models/SmolLM2-135M-Instruct]
        [--adapters adapters/demo] [--tasks sentiment,extract,numwords] [--n 100] [--base] [--json OUT]

Needs only `tokenizers` and `jinja2` (both in the test venv). Importable:
evaluate(lorq, model_dir, task, adapter_dir, n) returns a dict with the
accuracy and the wrong answers.
"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_tasks  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_JOBS = 2


def generate(lorq, model_dir, ids, max_new_tokens, adapter_dir=None, timeout=300):
    """One greedy generation through `lorq generate --json`; returns its JSON object."""
    cmd = [lorq, "generate", "--model", model_dir, "--prompt-ids", ",".join(map(str, ids)),
           "--max-new-tokens", str(max_new_tokens), "--json", "--threads", "1"]
    if adapter_dir:
        cmd += ["--adapter", adapter_dir]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:2]), p.returncode, p.stderr.strip()[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


def evaluate(lorq, model_dir, task, adapter_dir=None, n=100, jobs=MAX_JOBS):
    """Greedy exact-match accuracy on the first n held-out examples of task."""
    examples = demo_tasks.heldout_examples(task, n)
    budget = demo_tasks.max_new_tokens(task)

    def one(e):
        out = generate(lorq, model_dir, demo_tasks.prompt_ids(e["messages"], model_dir), budget, adapter_dir)
        return out["text"], out.get("finish_reason")

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, MAX_JOBS))) as pool:
        results = list(pool.map(one, examples))
    wrong = [{"prompt": e["messages"][0]["content"], "answer": e["answer"], "output": text, "finish": fin}
             for e, (text, fin) in zip(examples, results) if not demo_tasks.is_correct(text, e["answer"])]
    correct = len(examples) - len(wrong)
    return {"task": task, "adapter": adapter_dir, "n": len(examples), "correct": correct,
            "accuracy": correct / len(examples), "wrong": wrong}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lorq", default=os.path.join(ROOT, "bin", "lorq"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct"))
    ap.add_argument("--adapters", default=os.path.join(ROOT, "adapters", "demo"))
    ap.add_argument("--tasks", default=",".join(demo_tasks.TASKS))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=MAX_JOBS)
    ap.add_argument("--base", action="store_true", help="also measure the base model without adapter")
    ap.add_argument("--no-adapter", action="store_true", help="only the base model")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--show-wrong", type=int, default=3, help="print this many wrong answers per run")
    a = ap.parse_args()

    runs = []
    for task in a.tasks.split(","):
        variants = ([] if a.no_adapter else [os.path.join(a.adapters, task)]) + ([None] if a.base or a.no_adapter else [])
        for adapter in variants:
            r = evaluate(a.lorq, a.model, task, adapter, a.n, a.jobs)
            runs.append(r)
            print("%-10s %-28s %3d/%d  %.0f%%" % (task, adapter or "(base model)", r["correct"], r["n"],
                                                  100 * r["accuracy"]), flush=True)
            for w in r["wrong"][:a.show_wrong]:
                print("    expected %r got %r" % (w["answer"], w["output"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
