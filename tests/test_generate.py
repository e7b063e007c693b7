"""`lorq generate` end to end on the bundled model: the transformers greedy
continuation, streaming equal to the final text, EOS and stop sequences,
seeded sampling, and clear errors for bad flags and bad model folders."""
import json
import os
import shutil
import subprocess

import pytest

GOLDEN = os.path.join(os.path.dirname(__file__), "reference", "golden", "base_smollm2.json")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN) as f:
        return json.load(f)


def generate(lorq_bin, model_dir, *args, check=True):
    r = subprocess.run([lorq_bin, "generate", "--model", str(model_dir), *args], capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def gen_json(lorq_bin, model_dir, *args):
    return json.loads(generate(lorq_bin, model_dir, *args, "--json").stdout)


def test_capital_of_france_matches_transformers(lorq_bin, model_dir, golden):
    case = golden["cases"][0]
    assert case["prompt"] == "The capital of France is"
    out = gen_json(lorq_bin, model_dir, "--prompt", case["prompt"], "--max-new-tokens", "32", "--ignore-eos",
                   "--top-logits", "100")
    assert out["prompt_tokens"] == len(case["ids"])
    assert out["ids"] == case["greedy"]
    assert out["finish_reason"] == "length"
    assert out["top_logits"]["ids"][:10] == case["top_ids"][:10]
    for got, want in zip(out["top_logits"]["logits"], case["top_logits"]):
        assert abs(got - want) < 2e-3


def test_streamed_text_equals_final_text(lorq_bin, model_dir):
    args = ["--prompt", "Once upon a time", "--max-new-tokens", "40", "--ignore-eos"]
    streamed = generate(lorq_bin, model_dir, *args).stdout
    final = gen_json(lorq_bin, model_dir, *args)["text"]
    assert streamed == final + "\n"
    assert len(final) > 40


def test_stops_at_eos(lorq_bin, model_dir, golden):
    case = golden["cases"][0]
    eos = 2  # <|im_end|>, generation_config.json's eos_token_id
    assert eos in case["greedy"]
    out = gen_json(lorq_bin, model_dir, "--prompt-ids", ",".join(map(str, case["ids"])), "--max-new-tokens", "32")
    assert out["finish_reason"] == "eos_token"
    assert out["ids"] == case["greedy"][: case["greedy"].index(eos) + 1]
    assert "<|im_end|>" not in out["text"]


def test_stop_sequence_across_tokens(lorq_bin, model_dir):
    out = gen_json(lorq_bin, model_dir, "--prompt", "The capital of France is", "--max-new-tokens", "32",
                   "--stop", "answer is")
    assert out["finish_reason"] == "stop_sequence"
    assert out["text"].endswith("answer is") or "answer is" in out["text"]
    assert len(out["ids"]) < 32


def test_seeded_sampling_is_reproducible(lorq_bin, model_dir):
    args = ["--prompt", "My favourite food is", "--max-new-tokens", "24", "--temperature", "1.0", "--top-p", "0.95",
            "--do-sample", "--ignore-eos"]
    a = gen_json(lorq_bin, model_dir, *args, "--seed", "7")
    b = gen_json(lorq_bin, model_dir, *args, "--seed", "7")
    c = gen_json(lorq_bin, model_dir, *args, "--seed", "8")
    assert a["ids"] == b["ids"]
    assert a["ids"] != c["ids"]


def test_logprobs_and_top_tokens(lorq_bin, model_dir):
    out = gen_json(lorq_bin, model_dir, "--prompt", "Hello", "--max-new-tokens", "4", "--top-n-tokens", "5")
    for tok in out["tokens"]:
        assert tok["logprob"] <= 0.0
        assert len(tok["top"]) == 5
        assert tok["top"][0]["id"] == tok["id"]  # greedy picks the best
        lps = [t["logprob"] for t in tok["top"]]
        assert lps == sorted(lps, reverse=True)


@pytest.mark.parametrize("args, message", [
    (["--prompt", "x", "--temperature", "0"], "temperature must be strictly positive"),
    (["--prompt", "x", "--top-p", "1.5"], "top_p"),
    (["--prompt-ids", "1,abc"], "--prompt-ids"),
    (["--prompt-ids", "99999999"], "out of the vocabulary"),
    (["--prompt", "x", "--max-new-tokens", "0"], "max_new_tokens"),
])
def test_bad_flags_are_clear_errors(lorq_bin, model_dir, args, message):
    r = generate(lorq_bin, model_dir, *args, check=False)
    assert r.returncode != 0
    assert message in r.stderr


def copy_model(model_dir, dst):
    dst.mkdir()
    for name in os.listdir(model_dir):
        src = os.path.join(model_dir, name)
        if name == "model.safetensors":
            os.symlink(src, dst / name)
        elif os.path.isfile(src):
            shutil.copy(src, dst / name)
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "architecture GPT2LMHeadModel is not supported"),
    (lambda c: c.update(hidden_size=512), "has shape [49152, 576], expected [49152, 512]"),
    (lambda c: c.update(num_key_value_heads=4), "not a multiple of num_key_value_heads"),
    (lambda c: c.update(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "rope scaling type 'dynamic'"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act 'gelu'"),
    (lambda c: c.update(num_hidden_layers=31), "model.layers.30"),
])
def test_bad_config_is_a_clear_error(lorq_bin, model_dir, tmp_path, edit, message):
    m = copy_model(model_dir, tmp_path / "model")
    cfg = json.loads((m / "config.json").read_text())
    edit(cfg)
    (m / "config.json").write_text(json.dumps(cfg))
    r = generate(lorq_bin, m, "--prompt", "x", check=False)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
