"""--load-format dummy and --device on the CPU: random weights for any config.json
generate and benchmark (what make bench-gpu runs at Mistral-7B shape, here at a tiny
shape), bad configs and unknown devices are clear errors, and --device cuda without a
usable GPU says so instead of crashing."""
import json
import subprocess

import pytest

TINY = {
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 72,
    "intermediate_size": 136,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 49152,  # the bundled tokenizer's ids must fit
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
}


def run(lorq_bin, *args, timeout=300):
    return subprocess.run([lorq_bin, *args], capture_output=True, text=True, timeout=timeout)


def dummy_generate(lorq_bin, model, model_dir, *args):
    return run(lorq_bin, "generate", "--load-format", "dummy", "--model", str(model), "--tokenizer", str(model_dir),
               "--device", "cpu", "--prompt", "Hello there", "--max-new-tokens", "6", "--ignore-eos", "--json", *args)


@pytest.fixture()
def tiny_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    return tmp_path


def test_dummy_model_generates(lorq_bin, model_dir, tiny_config):
    r = dummy_generate(lorq_bin, tiny_config, model_dir)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["ids"]) == 6 and out["finish_reason"] == "length"
    # the same seed gives the same weights: the run is reproducible
    again = json.loads(dummy_generate(lorq_bin, tiny_config / "config.json", model_dir).stdout)
    assert again["ids"] == out["ids"]


def test_dummy_adapter(lorq_bin, model_dir, tiny_config):
    base = json.loads(dummy_generate(lorq_bin, tiny_config, model_dir, "--top-logits", "3").stdout)
    r = dummy_generate(lorq_bin, tiny_config, model_dir, "--top-logits", "3", "--dummy-adapter-rank", "8",
                       "--lora-targets", "q,v,down_proj")
    assert r.returncode == 0, r.stderr
    assert "[adapter dummy: max rank 8" in r.stderr
    adapted = json.loads(r.stdout)
    assert adapted["top_logits"]["logits"] != base["top_logits"]["logits"]


@pytest.mark.parametrize("config, message", [
    ({**TINY, "hidden_size": None}, "missing integer 'hidden_size'"),
    ({**TINY, "num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ({**TINY, "architectures": ["GPT2LMHeadModel"]}, "architecture GPT2LMHeadModel is not supported"),
    ("{not json", "not a JSON object"),
])
def test_dummy_bad_config(lorq_bin, model_dir, tmp_path, config, message):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    r = dummy_generate(lorq_bin, tmp_path, model_dir)
    assert r.returncode == 1
    assert message in r.stderr and "--load-format dummy" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "Sanitizer" not in r.stderr


def test_dummy_bad_flags(lorq_bin, model_dir, tiny_config):
    r = dummy_generate(lorq_bin, tiny_config, model_dir, "--lora-targets", "q,lm_head")
    assert r.returncode == 2 and "LoRA target 'lm_head'" in r.stderr
    r = run(lorq_bin, "generate", "--load-format", "pickle", "--model", str(tiny_config), "--prompt", "x")
    assert r.returncode == 2 and "--load-format" in r.stderr


def test_device_errors(lorq_bin, model_dir):
    r = run(lorq_bin, "generate", "--model", str(model_dir), "--device", "tpu", "--prompt", "x")
    assert r.returncode == 1 and "device 'tpu' is not one lorq knows" in r.stderr
    # Without a usable GPU (or without CUDA in the build) an explicit cuda is a clear error.
    r = run(lorq_bin, "generate", "--model", str(model_dir), "--device", "cuda", "--prompt", "x",
            "--max-new-tokens", "2")
    if r.returncode == 0:
        pytest.skip("a GPU is visible here: make test-gpu covers --device cuda")
    assert r.returncode == 1 and "--device cuda:" in r.stderr, r.stderr


def test_bench_dummy_cpu(lorq_bin, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "max_position_embeddings": 1024}))  # a 512-token prefill
    r = run(lorq_bin, "bench", "--device", "cpu", "--threads", "2", "--load-format", "dummy", "--model",
            str(tmp_path), "--lora-rank", "4,8", "--lora-targets", "q,v", timeout=600)
    assert r.returncode == 0, r.stderr
    # the adapters' flags are honoured: ranks cycled over the adapters, the targets named
    assert "32 distinct rank-4/8 bf16 adapters (q_proj, v_proj)" in r.stdout, r.stdout
    assert "MistralForCausalLM" in r.stdout
    bad = run(lorq_bin, "bench", "--model", str(tmp_path), "--lora-rank", "0")
    assert bad.returncode == 2 and "--lora-rank is a rank from 1 to 4096" in bad.stderr
