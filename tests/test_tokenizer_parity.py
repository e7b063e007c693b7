"""Tokenizer parity: `lorq tokenize --jsonl` against the `tokenizers` library.

For every test string: ids (with and without add_special_tokens), decode with
and without skip_special_tokens, and the streaming-decode pieces, which must
concatenate to the decode and never end in U+FFFD before the final flush.
Raw byte strings (invalid UTF-8) are compared with the library encoding
their bytes.decode('utf-8', 'replace'). Random id sequences (splitting
multi-byte characters, hitting byte-fallback and special tokens, ids past the
vocabulary) check decode on its own.

Three families: SmolLM2's converted tokenizer.json (byte-level BPE with
Digits), a SentencePiece-style BPE with byte fallback (Llama-2/Mistral) and
a Llama-3-style byte-level BPE, the last two trained here. A few smaller
tokenizers cover the remaining normalizers, pre-tokenizers and decoders,
and a sweep over every code point checks the regex classes against
Oniguruma."""
import json
import pathlib
import subprocess

import pytest
from tokenizers import Tokenizer

import tokenizer_cases as cases

N_STRINGS = 2200


def run_batch(lorq_bin, tokenizer_path, requests):
    lines = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([lorq_bin, "tokenize", "--model", str(tokenizer_path), "--jsonl"], input=lines.encode(),
                          capture_output=True, timeout=600)
    out = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(out) == len(requests), proc.stderr.decode()[-2000:]
    return out


def text_of(case):
    return case.decode("utf-8", "replace") if isinstance(case, bytes) else case


def request_for(case, add_special):
    r = {"hex": case.hex()} if isinstance(case, bytes) else {"text": case}
    r["add_special_tokens"] = add_special
    return r


def ids_mismatch(ref, case, add, want, got):
    """A failure record that shows where the ids first differ, as tokens."""
    i = next((k for k in range(min(len(want), len(got))) if want[k] != got[k]), min(len(want), len(got)))
    show = lambda ids: [ref.id_to_token(t) for t in ids[max(0, i - 3):i + 4]]
    return (text_of(case)[:200], add, f"ids differ at {i}", "want", show(want), "got", show(got))


def check_decodes(ref, ids, got, what, failures):
    want = ref.decode(ids, skip_special_tokens=False)
    want_skip = ref.decode(ids, skip_special_tokens=True)
    if got.get("decode") != want:
        failures.append((what, "decode", ids, want, got.get("decode")))
    if got.get("decode_skip") != want_skip:
        failures.append((what, "decode_skip", ids, want_skip, got.get("decode_skip")))
    for key, full in (("stream", want), ("stream_skip", want_skip)):
        pieces = got.get(key, [])
        joined = "".join(pieces) + got.get(key + "_flush", "")
        if joined != full:
            failures.append((what, key, ids, full, pieces + ["<flush>", got.get(key + "_flush")]))
        if any(p.endswith("\ufffd") for p in pieces):
            failures.append((what, key + " piece ends in U+FFFD", ids, full, pieces))


def report(failures, total, name):
    if failures:
        lines = [f"{len(failures)} mismatches in {total} checks for {name}; first ones:"]
        for f in failures[:8]:
            lines.append("  " + repr(f)[:600])
        pytest.fail("\n".join(lines))


def check_parity(lorq_bin, path, seed, n_strings=N_STRINGS, n_ids=600):
    ref = Tokenizer.from_file(str(path))
    specials = sorted(ref.get_added_tokens_decoder().items())
    strings = cases.text_cases(seed, n_strings, [t.content for _, t in specials])
    requests = [request_for(c, add) for c in strings for add in (True, False)]
    byte_tokens = [ref.token_to_id(f"<0x{b:02X}>") for b in range(256)]
    interesting = [i for i in byte_tokens if i is not None] + [i for i, _ in specials]
    # Single byte-level characters, so that sequences cut UTF-8 characters apart.
    interesting += [ref.token_to_id(c) for c in "ÃĤĥåæçèéĳ¤¨" if ref.token_to_id(c) is not None]
    id_seqs = cases.id_cases(seed + 1, n_ids, ref.get_vocab_size(), interesting)
    requests += [{"ids": s} for s in id_seqs]
    answers = run_batch(lorq_bin, path, requests)
    failures = []
    k = 0
    for case in strings:
        for add in (True, False):
            got = answers[k]
            k += 1
            if "error" in got:
                failures.append((case, add, "error", got["error"]))
                continue
            want = ref.encode(text_of(case), add_special_tokens=add).ids
            if got["ids"] != want:
                failures.append(ids_mismatch(ref, case, add, want, got["ids"]))
                continue
            check_decodes(ref, want, got, case, failures)
    for seq in id_seqs:
        got = answers[k]
        k += 1
        if "error" in got:
            failures.append((seq, "error", got["error"]))
            continue
        check_decodes(ref, seq, got, "ids", failures)
    report(failures, len(requests), path)
    return len(strings), len(id_seqs)


@pytest.fixture(scope="module")
def corpus():
    return cases.training_corpus(1234)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """The SentencePiece-style and Llama-3-style tokenizers, saved to tokenizer.json files."""
    base = tmp_path_factory.mktemp("tokenizers")
    out = {}
    for name, tok in (("spm", cases.train_sentencepiece_style(corpus)), ("llama3", cases.train_llama3_style(corpus))):
        path = base / name / "tokenizer.json"
        path.parent.mkdir()
        tok.save(str(path))
        out[name] = path
    return out


def test_smollm2_parity(lorq_bin, model_dir):
    path = pathlib.Path(model_dir) / "tokenizer.json"
    assert path.exists(), f"{path} is missing: make setup converts the model"
    n, m = check_parity(lorq_bin, path, seed=1)
    assert n >= 2000 and m >= 500


def test_smollm2_cli_hello(lorq_bin, model_dir):
    want = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json")).encode("Hello who are you?").ids
    out = subprocess.run([lorq_bin, "tokenize", "--model", str(model_dir), "Hello who are you?"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == " ".join(map(str, want))
    ids = out.stdout.split()
    dec = subprocess.run([lorq_bin, "tokenize", "--model", str(model_dir), "--decode", *ids],
                         capture_output=True, text=True, timeout=60)
    assert dec.returncode == 0, dec.stderr
    assert dec.stdout == "Hello who are you?\n"


def test_sentencepiece_style_parity(lorq_bin, trained):
    tok = json.loads(trained["spm"].read_text())
    assert tok["model"]["byte_fallback"] and tok["pre_tokenizer"] is None
    n, m = check_parity(lorq_bin, trained["spm"], seed=2)
    assert n >= 2000 and m >= 500


def test_llama3_style_parity(lorq_bin, trained):
    tok = json.loads(trained["llama3"].read_text())
    assert tok["model"]["ignore_merges"]
    n, m = check_parity(lorq_bin, trained["llama3"], seed=3)
    assert n >= 2000 and m >= 500


def test_extra_components_parity(lorq_bin, corpus, tmp_path):
    for i, (name, tok) in enumerate(cases.extra_tokenizers(corpus)):
        path = tmp_path / name / "tokenizer.json"
        path.parent.mkdir()
        tok.save(str(path))
        check_parity(lorq_bin, path, seed=100 + i, n_strings=250, n_ids=60)


def byte_level_probe(tmp_path, pattern):
    """A tokenizer whose ids are the UTF-8 bytes of the characters `pattern` does NOT match."""
    from tokenizers import decoders, models, pre_tokenizers, Regex
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), "removed"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    path = tmp_path / f"probe{abs(hash(pattern))}" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return tok, path


@pytest.mark.parametrize("pattern", [r"[^\p{L}]", r"[^\p{N}]", r"\S", r"\W", r"\D", r"[^\s\p{L}\p{N}]+",
                                     r"\p{L}+|\s|\d"])
def test_regex_classes_match_oniguruma(lorq_bin, tmp_path, pattern):
    """Every code point through Split(Regex, removed): PCRE2 must agree with Oniguruma."""
    tok, path = byte_level_probe(tmp_path, pattern)
    chunks = []
    chars = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]
    for i in range(0, len(chars), 40000):
        chunks.append("".join(chars[i:i + 40000]))
    answers = run_batch(lorq_bin, path, [{"text": c, "ids_only": True, "add_special_tokens": False} for c in chunks])
    for chunk, got in zip(chunks, answers):
        want = tok.encode(chunk, add_special_tokens=False).ids
        if got.get("ids") != want:
            kept = tok.decode(want)
            mine = tok.decode(got.get("ids", []))
            diff = sorted(set(kept) ^ set(mine))
            pytest.fail(f"{pattern}: code points classified differently: {[hex(ord(c)) for c in diff[:20]]}")
