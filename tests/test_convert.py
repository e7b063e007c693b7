"""lorq convert-gguf: GGUF -> Hugging Face folder.

Every expectation here is computed independently of the C code: tensor values
come from the `gguf` Python package's own dequantizers (gguf.quants), the Q/K
un-permutation is done in numpy, and tokenizer.json must load and encode in the
`tokenizers` library. Synthetic GGUFs written with gguf.GGUFWriter cover every
tensor type the converter dequantizes, the qwen2 architecture, SentencePiece
vocabularies and malformed files."""
import json
import math
import pathlib
import random
import subprocess

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import load_file
from tokenizers import Tokenizer

HF_PARTS = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "ffn_norm": "post_attention_layernorm",
}
K_QUANTS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
ALL_TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]


def run(lorq_bin, *args):
    return subprocess.run([lorq_bin, *map(str, args)], capture_output=True, text=True, errors="replace", timeout=120)


def convert(lorq_bin, src, out, *extra):
    r = run(lorq_bin, "convert-gguf", src, out, *extra)
    assert r.returncode == 0, r.stderr
    return r


def hf_name(gguf_name):
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    blk, layer, part, kind = gguf_name.split(".")
    assert blk == "blk"
    return f"model.layers.{layer}.{HF_PARTS[part]}.{kind}"


def unpermute(w, n_head):
    """Inverse of llama.cpp's `w.reshape(n_head, 2, hd // 2, ...).swapaxes(1, 2)` on rows."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(reader, key):
    return reader.fields[key].contents()


def expected_tensors(path, permute=True):
    """name -> f32 array, from the gguf package alone."""
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    n_head = field(r, f"{arch}.attention.head_count")
    n_kv = field(r, f"{arch}.attention.head_count_kv") if f"{arch}.attention.head_count_kv" in r.fields else n_head
    out = {}
    for t in r.tensors:
        if t.name == "rope_freqs.weight":
            continue
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if permute and ".attn_q." in t.name:
            w = unpermute(w, n_head)
        if permute and ".attn_k." in t.name:
            w = unpermute(w, n_kv)
        out[hf_name(t.name)] = w
    return out


def assert_same_tensors(st_path, gguf_path, permute=True):
    got = load_file(str(st_path))
    want = expected_tensors(gguf_path, permute)
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == np.float32, name
        assert g.shape == w.shape, (name, g.shape, w.shape)
        assert np.array_equal(g.view(np.uint32), w.view(np.uint32)) or np.array_equal(g, w, equal_nan=True), \
            f"{name}: max abs diff {np.nanmax(np.abs(g - w))}"


def bf16_round(a):
    """f32 -> bf16 bits with round-to-nearest-even (what torch does), as f32."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
    nan = np.isnan(a)
    r[nan] = (u[nan] >> 16).astype(np.uint32) | 0x40
    return (r << 16).view(np.float32)


# ---------------------------------------------------------------- the bundled model


@pytest.fixture(scope="module")
def bundled(lorq_bin, model_gguf, tmp_path_factory):
    base = tmp_path_factory.mktemp("bundled")
    r32 = convert(lorq_bin, model_gguf, base / "f32")
    r16 = convert(lorq_bin, model_gguf, base / "bf16", "--dtype", "bf16")
    return {"f32": base / "f32", "bf16": base / "bf16", "log32": r32.stdout, "log16": r16.stdout}


def test_bundled_folder_files(bundled):
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"]:
        assert (bundled["f32"] / name).is_file(), name
    assert not list(bundled["f32"].parent.glob("*.tmp*"))
    assert "272 tensors" in bundled["log32"] and "134515008 parameters" in bundled["log32"]


def test_bundled_tensors_equal_gguf_package(bundled, model_gguf):
    assert_same_tensors(bundled["f32"] / "model.safetensors", model_gguf)
    got = load_file(str(bundled["f32"] / "model.safetensors"))
    assert "lm_head.weight" not in got  # tied embeddings
    assert got["model.embed_tokens.weight"].shape == (49152, 576)
    assert got["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert got["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert got["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)


def test_bundled_bf16_is_rounded_f32(bundled):
    f32 = load_file(str(bundled["f32"] / "model.safetensors"))
    raw = (bundled["bf16"] / "model.safetensors").read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    meta = json.loads(raw[8:8 + hlen])
    assert sorted(k for k in meta if k != "__metadata__") == sorted(f32)
    for name, a in f32.items():
        info = meta[name]
        assert info["dtype"] == "BF16" and info["shape"] == list(a.shape)
        b, e = info["data_offsets"]
        bits = np.frombuffer(raw[8 + hlen + b: 8 + hlen + e], dtype=np.uint16).astype(np.uint32)
        got = (bits << 16).view(np.float32).reshape(a.shape)
        assert np.array_equal(got, bf16_round(a)), name
    cfg = json.loads((bundled["bf16"] / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16"


def test_bundled_config_matches_metadata(bundled, model_gguf):
    r = gguf.GGUFReader(model_gguf)
    cfg = json.loads((bundled["f32"] / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["hidden_size"] == field(r, "llama.embedding_length") == 576
    assert cfg["intermediate_size"] == field(r, "llama.feed_forward_length")
    assert cfg["num_hidden_layers"] == field(r, "llama.block_count") == 30
    assert cfg["num_attention_heads"] == field(r, "llama.attention.head_count") == 9
    assert cfg["num_key_value_heads"] == field(r, "llama.attention.head_count_kv") == 3
    assert cfg["head_dim"] == field(r, "llama.rope.dimension_count") == 64
    assert cfg["max_position_embeddings"] == field(r, "llama.context_length")
    assert np.float32(cfg["rms_norm_eps"]) == np.float32(field(r, "llama.attention.layer_norm_rms_epsilon"))
    assert cfg["rms_norm_eps"] == 1e-5  # shortest decimal of the f32, as the original config
    assert cfg["rope_theta"] == field(r, "llama.rope.freq_base") == 100000.0
    assert cfg["rope_scaling"] is None
    assert cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"] is True
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 2)
    assert cfg["hidden_act"] == "silu" and cfg["attention_bias"] is False and cfg["mlp_bias"] is False
    assert cfg["torch_dtype"] == "float32"
    gen = json.loads((bundled["f32"] / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


def test_bundled_tokenizer(bundled, model_gguf):
    r = gguf.GGUFReader(model_gguf)
    tokens = field(r, "tokenizer.ggml.tokens")
    tok = Tokenizer.from_file(str(bundled["f32"] / "tokenizer.json"))
    assert tok.get_vocab_size() == len(tokens) == 49152
    ids = tok.encode("<|im_start|>user\nHi<|im_end|>").ids
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) > 3
    assert tok.encode("Hello who are you?").tokens == ["Hello", "Ġwho", "Ġare", "Ġyou", "?"]
    assert tok.encode("2024").ids == [tok.token_to_id(d) for d in "2024"]  # digits split individually
    for s in ["Hello, world!", "  two  spaces\n\ttab", "héllo wörld — 東京 🎉", "def f(x):\n    return x**2\n"]:
        assert tok.decode(tok.encode(s).ids, skip_special_tokens=False) == s
    for i, t in enumerate(tokens[:100]):
        assert tok.id_to_token(i) == t
    doc = json.loads((bundled["f32"] / "tokenizer.json").read_text())
    assert doc["model"]["type"] == "BPE" and doc["model"]["byte_fallback"] is False
    assert doc["model"]["merges"][:2] == ["Ġ t", "Ġ a"]
    assert [t["content"] for t in doc["added_tokens"]][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(doc["added_tokens"]) == 17 and all(t["special"] for t in doc["added_tokens"])
    cfg = json.loads((bundled["f32"] / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == field(r, "tokenizer.chat_template")
    assert (cfg["bos_token"], cfg["eos_token"], cfg["pad_token"], cfg["unk_token"]) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert cfg["add_bos_token"] is False and cfg["model_max_length"] == 8192
    assert cfg["added_tokens_decoder"]["2"]["content"] == "<|im_end|>"


# ---------------------------------------------------------------- synthetic models


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def add_gpt2_vocab(w, pre="smollm"):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    tokens = specials + bytes_to_unicode() + ["Ġt", "he", "Ġthe", "in", "Ġa"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return len(tokens)


def encode_tensor(rng, shape, qtype):
    """A tensor of qtype: quantized with gguf.quants where it can, random blocks (sane scales) for K-quants."""
    if qtype in K_QUANTS:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = int(np.prod(shape)) // block
        raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
        for off in K_QUANTS[qtype]:
            raw[:, off:off + 2] = rng.uniform(-0.1, 0.1, n_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
        return raw.reshape(shape[0], -1), qtype
    w = rng.standard_normal(shape).astype(np.float32)
    if qtype == Q.F32:
        return w, None
    if qtype == Q.F16:
        return w.astype(np.float16), None
    return gguf.quants.quantize(w, qtype), qtype


def write_model(path, qtype=Q.Q8_0, arch="llama", n_layers=2, hidden=256, ffn=512, n_head=4, n_kv=2, tied=True,
                vocab=None, pre="smollm", seed=0, biases=False, extra=None, alignment=None):
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_block_count(n_layers)
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // n_head)
    n_vocab = vocab(w) if vocab else add_gpt2_vocab(w, pre)

    def tensor(name, shape, qt=qtype):
        data, raw = encode_tensor(rng, shape, qt)
        w.add_tensor(name, data, raw_dtype=raw)

    hd = hidden // n_head
    tensor("token_embd.weight", (n_vocab, hidden))
    for layer in range(n_layers):
        p = f"blk.{layer}."
        tensor(p + "attn_norm.weight", (hidden,), Q.F32)
        tensor(p + "attn_q.weight", (n_head * hd, hidden))
        tensor(p + "attn_k.weight", (n_kv * hd, hidden))
        tensor(p + "attn_v.weight", (n_kv * hd, hidden))
        tensor(p + "attn_output.weight", (hidden, n_head * hd))
        if biases:
            tensor(p + "attn_q.bias", (n_head * hd,), Q.F32)
            tensor(p + "attn_k.bias", (n_kv * hd,), Q.F32)
            tensor(p + "attn_v.bias", (n_kv * hd,), Q.F32)
        tensor(p + "ffn_gate.weight", (ffn, hidden))
        tensor(p + "ffn_up.weight", (ffn, hidden))
        tensor(p + "ffn_down.weight", (hidden, ffn))
        tensor(p + "ffn_norm.weight", (hidden,), Q.F32)
    tensor("output_norm.weight", (hidden,), Q.F32)
    if not tied:
        tensor("output.weight", (n_vocab, hidden))
    for name, data, raw in extra or []:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_dequantization_matches_gguf_package(lorq_bin, tmp_path, qtype):
    src = write_model(tmp_path / "m.gguf", qtype, tied=(qtype != Q.Q4_0), seed=int(qtype))
    r = gguf.GGUFReader(src)
    assert {t.tensor_type for t in r.tensors if t.name.endswith("attn_q.weight")} == {qtype}
    convert(lorq_bin, src, tmp_path / "out")
    assert_same_tensors(tmp_path / "out" / "model.safetensors", src)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is (qtype != Q.Q4_0)
    assert cfg["vocab_size"] == 264 and cfg["num_key_value_heads"] == 2


def test_tiny_llama_end_to_end(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf", Q.Q4_K, tied=False, alignment=64)
    convert(lorq_bin, src, tmp_path / "out", "--dtype", "bf16")
    st = (tmp_path / "out" / "model.safetensors").read_bytes()
    header = json.loads(st[8:8 + int.from_bytes(st[:8], "little")])
    assert header["lm_head.weight"]["dtype"] == "BF16" and header["lm_head.weight"]["shape"] == [264, 256]
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert tok.encode("<|im_start|> the cat<|im_end|>").tokens == \
        ["<|im_start|>", "Ġthe", "Ġ", "c", "a", "t", "<|im_end|>"]
    assert tok.decode(tok.encode("in the 99 cats").ids) == "in the 99 cats"


def test_qwen2_biases_without_permutation(lorq_bin, tmp_path):
    src = write_model(tmp_path / "q.gguf", Q.Q8_0, arch="qwen2", biases=True, pre="qwen2")
    convert(lorq_bin, src, tmp_path / "out")
    assert_same_tensors(tmp_path / "out" / "model.safetensors", src, permute=False)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    doc = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert doc["normalizer"] == {"type": "NFC"}
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert tok.decode(tok.encode("the 123 in").ids) == "the 123 in"


def test_llama_bpe_pre_tokenizer_and_bos(lorq_bin, tmp_path):
    def vocab(w):
        n = add_gpt2_vocab(w, "llama-bpe")
        w.add_add_bos_token(True)
        return n
    src = write_model(tmp_path / "m.gguf", vocab=vocab)
    convert(lorq_bin, src, tmp_path / "out")
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    enc = tok.encode("the 12345")
    assert enc.ids[0] == 1  # bos added by the post-processor
    assert enc.tokens[1:] == ["t", "he", "Ġ", "1", "2", "3", "4", "5"]
    assert tok.decode(enc.ids, skip_special_tokens=True) == "the 12345"
    assert json.loads((tmp_path / "out" / "tokenizer.json").read_text())["model"]["ignore_merges"] is True


def transformers_merges(tokens, scores):
    """transformers' GGUFTokenizerSkeleton: merges derived from a SentencePiece vocabulary and its scores."""
    vocab = {t: scores[i] for i, t in enumerate(tokens)}
    merges = []
    for piece, score in vocab.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]), reverse=True))
    return [f"{a} {b}" for a, b, _ in sorted(merges, key=lambda m: m[2], reverse=True)]


def spm_vocab(w):
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "llo", "hello", "▁hello", "▁w", "or", "▁wor",
              "ld", "▁world", "lo", "el"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    scores[-1] = scores[-2] = -100.0  # low-priority pieces, and a tie
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    spm_vocab.tokens, spm_vocab.scores = tokens, scores
    return len(tokens)


def test_sentencepiece_vocabulary(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf", vocab=spm_vocab)
    convert(lorq_bin, src, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    r = gguf.GGUFReader(src)
    scores = [float(s) for s in field(r, "tokenizer.ggml.scores")]
    assert doc["model"]["merges"] == transformers_merges(field(r, "tokenizer.ggml.tokens"), scores)
    assert doc["model"]["byte_fallback"] is True and doc["model"]["unk_token"] == "<unk>"
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    enc = tok.encode("hello world")
    assert enc.tokens == ["<s>", "▁hello", "▁world"]
    assert tok.decode(enc.ids, skip_special_tokens=True) == "hello world"
    assert tok.encode("hi!").tokens == ["<s>", "▁", "h", "<0x69>", "<0x21>"]
    assert tok.decode(tok.encode("hé!").ids, skip_special_tokens=True) == "hé!"
    cfg = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["bos_token"] == "<s>" and cfg["unk_token"] == "<unk>"


def llama3_factors(theta, dim, factor=8.0, low=1.0, high=4.0, orig=8192):
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / theta ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            s = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - s) / factor + s))
    return np.array(out, dtype=np.float32)


def test_llama3_rope_freqs_become_rope_scaling(lorq_bin, tmp_path):
    good = [("rope_freqs.weight", llama3_factors(10000.0, 64), None)]
    src = write_model(tmp_path / "m.gguf", extra=good)
    r = convert(lorq_bin, src, tmp_path / "out")
    assert "rope_freqs.weight" in r.stderr
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert "lm_head.weight" not in load_file(str(tmp_path / "out" / "model.safetensors"))
    bad = [("rope_freqs.weight", np.full(32, 3.0, dtype=np.float32), None)]
    src = write_model(tmp_path / "b.gguf", extra=bad)
    r = run(lorq_bin, "convert-gguf", src, tmp_path / "bad")
    assert r.returncode == 1 and "rope_freqs" in r.stderr and not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- errors


def test_unsupported_tensor_type_is_named(lorq_bin, tmp_path):
    block, size = gguf.GGML_QUANT_SIZES[Q.IQ2_XXS]
    raw = np.zeros((256, 256 // block * size), dtype=np.uint8)
    src = write_model(tmp_path / "m.gguf", Q.Q8_0)
    # Same model but with one IQ2_XXS projection.
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "llama")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        val = f.contents()
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, val, vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, val, vtype)
    for t in r.tensors:
        if t.name == "blk.1.attn_output.weight":
            w.add_tensor(t.name, raw, raw_dtype=Q.IQ2_XXS)
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type if t.tensor_type != Q.F32 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    res = run(lorq_bin, "convert-gguf", tmp_path / "iq.gguf", tmp_path / "out")
    assert res.returncode == 1
    assert "IQ2_XXS" in res.stderr and "blk.1.attn_output.weight" in res.stderr
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_and_usage(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf", arch="gpt2")
    r = run(lorq_bin, "convert-gguf", src, tmp_path / "out")
    assert r.returncode == 1 and "architecture 'gpt2' is not supported" in r.stderr
    r = run(lorq_bin, "convert-gguf", tmp_path / "missing.gguf", tmp_path / "out")
    assert r.returncode == 1 and "missing.gguf" in r.stderr
    assert run(lorq_bin, "convert-gguf", src).returncode == 2
    assert run(lorq_bin, "convert-gguf", src, tmp_path / "o", "--dtype", "f8").returncode == 2


def test_refuses_non_empty_destination(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    r = run(lorq_bin, "convert-gguf", src, tmp_path / "out")
    assert r.returncode == 1 and "not empty" in r.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    convert(lorq_bin, src, tmp_path / "empty")


def assert_clean_failure_or_success(r, out):
    assert r.returncode in (0, 1), f"rc={r.returncode} stderr={r.stderr[-500:]}"
    if r.returncode == 1:
        assert r.stderr.startswith("lorq convert-gguf: ") and len(r.stderr) > 25
        assert not out.exists()
    assert not list(out.parent.glob(out.name + ".tmp-*"))


def test_truncated_files_fail_cleanly(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf", Q.Q4_0, n_layers=1)
    data = src.read_bytes()
    header_end = gguf.GGUFReader(src).data_offset
    cuts = sorted(set(list(range(0, header_end, 7)) + [header_end + i * 997 for i in range(40)] + [len(data) - 1]))
    trunc = tmp_path / "t.gguf"
    out = tmp_path / "out"
    for cut in cuts:
        if cut >= len(data):
            continue
        trunc.write_bytes(data[:cut])
        r = run(lorq_bin, "convert-gguf", trunc, out)
        assert r.returncode == 1, (cut, r.stderr)
        assert_clean_failure_or_success(r, out)


def test_corrupted_files_fail_cleanly(lorq_bin, tmp_path):
    src = write_model(tmp_path / "m.gguf", Q.Q4_0, n_layers=1)
    data = src.read_bytes()
    header_end = gguf.GGUFReader(src).data_offset
    rng = random.Random(1234)
    bad = tmp_path / "c.gguf"
    for i in range(400):
        b = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 8])):
            pos = rng.randrange(header_end) if rng.random() < 0.9 else rng.randrange(len(b))
            b[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))])
        bad.write_bytes(bytes(b))
        out = tmp_path / f"out{i}"
        r = run(lorq_bin, "convert-gguf", bad, out)
        assert_clean_failure_or_success(r, out)
