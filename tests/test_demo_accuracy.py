"""The demo adapters through the real stack: per-request routing proven by task accuracy.

redis-server, bin/lorq-worker serving the three demo adapters of adapters/demo,
and bin/lorq-gateway; requests go to TGI's /generate with `adapter_id`. On 100
held-out examples per task (tests/reference/demo_tasks.py), greedy answers
through the right adapter must reach 95% exact match, the base model without an
adapter must stay below 30%, and the same 300 requests shuffled across the
adapters and sent at once (so every step mixes adapters) must give the same
answers as when each task ran on its own. A request served with the wrong
adapter, or none, would show here.
"""
import concurrent.futures
import json
import pathlib
import random
import sys
import urllib.request

import pytest

from conftest import ROOT, Gateway, LorqProcess, RedisServer

sys.path.insert(0, str(ROOT / "tests" / "reference"))
import demo_tasks  # noqa: E402

DEMO = ROOT / "adapters" / "demo"
N = 100


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gateway_bin, worker_bin, model_dir):
    assert all((DEMO / t / "adapter_model.safetensors").exists() for t in demo_tasks.TASKS)
    d = tmp_path_factory.mktemp("demo")
    redis = RedisServer(d).start()
    adapters = ",".join(f"demo/{t}={DEMO / t}" for t in demo_tasks.TASKS)
    env = {"REDIS_URL": redis.url, "MODEL_ID": str(model_dir), "LORA_ADAPTERS": adapters}
    worker = LorqProcess([worker_bin], dict(env, MAX_RUNNING=64), d / "worker.log")
    gateway = Gateway(gateway_bin, dict(env, MAX_CONCURRENT_REQUESTS=1000), d / "gateway.log")
    try:
        gateway.wait_healthy(timeout=90)
        yield gateway
    finally:
        gateway.stop()
        worker.stop(timeout=30)
        redis.kill()


@pytest.fixture(scope="module")
def examples(model_dir):
    out = []
    for task in demo_tasks.TASKS:
        for ex in demo_tasks.heldout_examples(task, N):
            prompt = demo_tasks.render_chat(ex["messages"], model_dir)
            out.append(dict(ex, prompt=prompt))
    return out


def generate(url, prompt, max_new_tokens, adapter=None):
    params = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if adapter:
        params["adapter_id"] = adapter
    body = json.dumps({"inputs": prompt, "parameters": params}).encode()
    req = urllib.request.Request(url + "/generate", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())["generated_text"]


def run_all(url, requests, workers):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda r: generate(url, *r), requests))


def accuracy(examples, answers):
    by_task = {}
    for ex, out in zip(examples, answers):
        by_task.setdefault(ex["task"], []).append(demo_tasks.is_correct(out, ex["answer"]))
    return {t: sum(v) / len(v) for t, v in by_task.items()}


def test_task_accuracy_and_routing(stack, examples):
    reqs = [(ex["prompt"], demo_tasks.max_new_tokens(ex["task"]), f"demo/{ex['task']}") for ex in examples]

    # Each task on its own (steps hold one adapter at a time).
    alone = []
    for task in demo_tasks.TASKS:
        alone += run_all(stack.url, [r for r in reqs if r[2] == f"demo/{task}"], 8)
    acc = accuracy(examples, alone)
    print("\nexact match with the right adapter:", {t: f"{a:.0%}" for t, a in acc.items()})
    assert all(a >= 0.95 for a in acc.values()), acc

    # The base model, no adapter.
    base = run_all(stack.url, [(p, n, None) for p, n, _ in reqs], 16)
    base_acc = accuracy(examples, base)
    print("exact match with the base model:", {t: f"{a:.0%}" for t, a in base_acc.items()})
    assert all(a < 0.30 for a in base_acc.values()), base_acc

    # All 300 shuffled and concurrent: every step mixes adapters.
    order = list(range(len(reqs)))
    random.Random(7).shuffle(order)
    mixed = run_all(stack.url, [reqs[i] for i in order], 64)
    unshuffled = [None] * len(reqs)
    for k, i in enumerate(order):
        unshuffled[i] = mixed[k]
    assert accuracy(examples, unshuffled) == acc
    assert unshuffled == alone  # the same answers, token for token
