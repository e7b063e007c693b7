"""Test material for tokenizer parity: seeded text generators and the
tokenizers the parity test trains itself (no downloads).

Everything is a pure function of a seed, so a failure reproduces exactly.
Strings cover what breaks tokenizers: many scripts and both NFC and NFD
forms, emoji sequences, code, numbers, whitespace and control characters,
Unicode spaces, invalid UTF-8 (as raw bytes), added tokens inside text, the
empty string and long inputs."""
import json
import random
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

WORDS = {
    "en": "the quick brown fox jumps over lazy dog hello world tokenizer model server adapter request "
    "stream queue worker gateway batch throughput latency don't it's we're they've I'm you'll he'd".split(),
    "fr": "déjà vu où êtes-vous garçon naïve cœur élève Noël façade à côté fenêtre hôpital".split(),
    "de": "Straße Mädchen Größe übermäßig Fußgänger Äpfel Öl schön Weißbier".split(),
    "es": "niño señor mañana año corazón canción ¿qué? ¡hola! pingüino".split(),
    "ru": "Привет мир как дела язык модель Ёлка съешь же ещё этих мягких французских булок".split(),
    "el": "Καλημέρα κόσμε ελληνικά γλώσσα Ωμέγα ψυχή σοφία ΣΊΣΥΦΟΣ ὅτι".split(),
    "ar": "مرحبا بالعالم اللغة العربية كتاب مدرسة السلام عليكم ٣٤٥".split(),
    "he": "שלום עולם עברית ספר תודה".split(),
    "hi": "नमस्ते दुनिया भाषा हिन्दी किताब विद्यालय क्षत्रिय".split(),
    "zh": "你好 世界 中文 分词 模型 服务器 的 是 我们 人工智能".split(),
    "ja": "こんにちは 世界 日本語 カタカナ ひらがな 東京 ｶﾀｶﾅ".split(),
    "ko": "안녕하세요 세계 한국어 토크나이저 서울".split(),
    "th": "สวัสดี ภาษาไทย ประเทศ".split(),
    "vi": "Tiếng Việt xin chào thế giới người Nguyễn".split(),
    "misc": "ﬁne ﬂow ﬀ ﬃ ﬅ ß ẞ İstanbul ǅ Kelvin K Å ſ µ ﬆ Ǆ ᾼ".split(),
}

EMOJI = [
    "😀", "🤖", "🔥", "👍🏽", "👋🏿", "🇫🇷", "🇯🇵", "🏳️‍🌈", "👨‍👩‍👧‍👦", "🧑🏻‍💻", "❤️", "1️⃣", "#️⃣",
    "🫠", "☃", "✨", "👩‍❤️‍💋‍👨", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️", "™",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
    '{"key": "value", "list": [1, 2.5, -3e10], "nested": {"a": null}}',
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "if x != y and not z:\n        pass  # comment\r\n",
    "SELECT id, name FROM users WHERE age >= 18;",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "    \t  indented_line();\n\n\n",
    "<html><body class=\"main\">&amp;&lt;</body></html>",
    "fn main() { let v: Vec<u32> = vec![]; println!(\"{:?}\", v); }",
    "https://example.com/path?q=1&r=%20x#frag",
    "a_b-c.d/e\\f|g~h`i^j",
]

SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", "\r", " \n ", "\t\t", "        ", " \t\n", "\x0b", "\x0c"]

CONTROLS = [chr(c) for c in list(range(0, 32)) + [0x7F, 0x85]] + [
    "\u00a0", "\u1680", "\u180e", "\u2000", "\u2002", "\u2007", "\u200a", "\u200b", "\u200c", "\u200d",
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff", "\u2060", "\u00ad", "\ufffd", "\ufffe",
]

# Letters and digits new in Unicode 15.1/16.0 (PCRE2 10.42 does not know them).
NEW_UNICODE = ["\u1c89", "\u1c8a", "\ua7cb", "\U000105c0", "\U00010d40", "\U00016d40", "\U0001e5d0", "\U00031350"]

NUMBERS = ["0", "7", "42", "1234567", "3.14159", "-0.5", "1e-9", "1,000,000", "2024-06-01", "12:30",
           "٣٤٥", "²³", "½", "①②", "Ⅻ", "１２３", "0x1F", "9999999999999999999"]

INVALID_BYTES = [b"\x80", b"\xbf", b"\xc0\x80", b"\xc3", b"\xe4\xb8", b"\xed\xa0\x80", b"\xf0\x9f\x98",
                 b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\xfe\xff", b"\xe0\x80\x80", b"\xc3\x28", b"\xf0\x28\x8c\xbc"]


def _word(rng):
    lang = rng.choice(list(WORDS))
    w = rng.choice(WORDS[lang])
    r = rng.random()
    if r < 0.1:
        w = w.upper()
    elif r < 0.2:
        w = w.capitalize()
    elif r < 0.3:
        w = unicodedata.normalize("NFD", w)
    return w


def _random_char(rng):
    r = rng.random()
    if r < 0.4:
        return chr(rng.randint(0x20, 0x2FF))
    if r < 0.7:
        return chr(rng.randint(0x300, 0xD7FF))
    if r < 0.9:
        return chr(rng.randint(0xE000, 0xFFFD))
    return chr(rng.randint(0x10000, 0x10FFFF))


def _fragment(rng, specials):
    kind = rng.random()
    if kind < 0.35:
        return " ".join(_word(rng) for _ in range(rng.randint(1, 8)))
    if kind < 0.45:
        return rng.choice(EMOJI) * rng.randint(1, 2)
    if kind < 0.55:
        return rng.choice(CODE)
    if kind < 0.63:
        return rng.choice(NUMBERS)
    if kind < 0.71:
        return rng.choice(SPACES) * rng.randint(1, 4)
    if kind < 0.77:
        return "".join(rng.choice(CONTROLS) for _ in range(rng.randint(1, 3)))
    if kind < 0.82:
        return "".join(_random_char(rng) for _ in range(rng.randint(1, 6)))
    if kind < 0.85:
        return rng.choice(NEW_UNICODE)
    if kind < 0.90:
        c = rng.choice(["'s", "'S", "'ſ", "'t", "'T", "'re", "'RE", "'ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D", "'x"])
        return rng.choice(["", "it", "WE", " "]) + c + rng.choice(["", " ", "x", "s"])
    if specials and kind < 0.97:
        tok = rng.choice(specials)
        r = rng.random()
        if r < 0.25:
            return tok
        if r < 0.5:
            return " " + tok + " "
        if r < 0.6:
            return tok[:-1]  # almost a token
        if r < 0.7:
            return tok + tok
        if r < 0.8:
            return "\n" + tok + "\n"
        return rng.choice(["  ", "\t", "x", ""]) + tok + rng.choice(["  ", "\t", "x", "", "\n"])
    return rng.choice(["", " ", "?", "!", "...", "—", "“quoted”", "«»", "(", ")", "[]", "{}"])


def text_cases(seed, n, specials=()):
    """n test strings (str) and byte strings (bytes, possibly invalid UTF-8)."""
    rng = random.Random(seed)
    specials = list(specials)
    cases = ["", " ", "  ", "\n", "a", "Hello who are you?", " Hello", "Hello ", "\u00a0", "\u0085", "\r\n",
             "I'm here, it's 12345 o'clock!", "ſ", "'ſ", "\x00", "▁", "▁▁a", "<0x41>", "\ufffd"]
    cases += specials
    cases += [" " + t for t in specials] + [t + " " for t in specials]
    while len(cases) < n:
        r = rng.random()
        if r < 0.85:
            s = "".join(_fragment(rng, specials) for _ in range(rng.randint(1, 6)))
            if rng.random() < 0.15:
                s = unicodedata.normalize(rng.choice(["NFC", "NFD", "NFKC"]), s)
            cases.append(s)
        elif r < 0.97:
            base = "".join(_fragment(rng, specials) for _ in range(rng.randint(1, 4))).encode("utf-8")
            for _ in range(rng.randint(1, 3)):
                at = rng.randint(0, len(base))
                base = base[:at] + rng.choice(INVALID_BYTES) + base[at:]
            if rng.random() < 0.3:  # cut in the middle of a character
                base = base[: rng.randint(0, len(base))]
            cases.append(base)
        else:
            cases.append("".join(_fragment(rng, specials) for _ in range(rng.randint(600, 1500))))
    # Long inputs: one word of 20k characters for models without pre-tokenizer, long mixes, long runs.
    cases.append("".join(_word(rng) for _ in range(4000)))
    cases.append(" " * 12000 + "x")
    cases.append("ab" * 6000)
    cases.append("\n" * 3000 + "end")
    return cases


def training_corpus(seed, n=3000):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        lines.append("".join(_fragment(rng, []) for _ in range(rng.randint(1, 5))))
    return lines


def id_cases(seed, n, vocab_size, interesting):
    """Random id sequences for decode parity: any id, ids of single bytes (so
    multi-byte characters get split), specials, and ids past the vocabulary."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.5:
                seq.append(rng.randrange(vocab_size))
            elif r < 0.95 and interesting:
                seq.append(rng.choice(interesting))
            else:
                seq.append(vocab_size + rng.randint(0, 5))
        out.append(seq)
    return out


# ---- tokenizers the test trains ----

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_sentencepiece_style(corpus):
    """Llama-2 / Mistral shape: BPE with byte fallback over '▁'-joined text."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                         show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    spec = json.loads(tok.to_str())
    # Put the 256 byte tokens right after the three specials, as Llama's vocabulary has them.
    vocab = spec["model"]["vocab"]
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    new = {}
    for t, _ in ordered[:3]:
        new[t] = len(new)
    for b in range(256):
        new.setdefault(f"<0x{b:02X}>", len(new))
    for t, _ in ordered[3:]:
        new.setdefault(t, len(new))
    spec["model"]["vocab"] = new
    for a in spec["added_tokens"]:
        a["id"] = new[a["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken("[INST]", special=True, normalized=False)])
    # A non-special token matched against the normalized text ("▁<tool>").
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=True)])
    return tok


def train_llama3_style(corpus):
    """Llama-3 shape: byte-level BPE after the Llama-3 split pattern, ignore_merges."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    trainer = BpeTrainer(vocab_size=2500, special_tokens=specials, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]),
    ])
    tok.add_tokens([AddedToken("<|custom|>", special=False)])
    tok.add_tokens([AddedToken("lorq", special=False, single_word=True)])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, rstrip=True)])
    return tok


def train_extra(corpus, normalizer, pre_tokenizer, decoder, added=(), post=None, **bpe):
    """A small BPE with the given components, for the less common pieces."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]", **bpe))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    trainer = BpeTrainer(vocab_size=800, special_tokens=["[UNK]", "[CLS]", "[SEP]"], limit_alphabet=300,
                         show_progress=False, **bpe)
    tok.train_from_iterator(corpus, trainer)
    for a in added:
        tok.add_tokens([a])
    if post:
        tok.post_processor = post
    return tok


def extra_tokenizers(corpus):
    """(name, Tokenizer) for pipelines beyond the three families."""
    n, p, d = normalizers, pre_tokenizers, decoders
    yield "nfkc_lower_whitespace", train_extra(
        corpus, n.Sequence([n.NFKC(), n.Lowercase(), n.Strip()]), p.Whitespace(), None,
        [AddedToken("hello", single_word=True, lstrip=True, rstrip=True)],
        post=processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1)))
    yield "subword_prefix_suffix", train_extra(
        corpus, None, p.WhitespaceSplit(), None, post=processors.RobertaProcessing(("[SEP]", 2), ("[CLS]", 1)),
        continuing_subword_prefix="##", end_of_word_suffix="</w>")
    yield "nfd_punct_digits", train_extra(
        corpus, n.NFD(), p.Sequence([p.WhitespaceSplit(), p.Punctuation(), p.Digits(individual_digits=False)]),
        d.Fuse())
    yield "metaspace_first", train_extra(
        corpus, n.NFC(), p.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        d.Metaspace(replacement="▁", prepend_scheme="first"), [AddedToken("<sep>", special=True, normalized=False)])
    yield "metaspace_always_nosplit", train_extra(
        corpus, None, p.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        d.Metaspace(replacement="▁", prepend_scheme="always"))
    yield "split_behaviors", train_extra(
        corpus, n.Replace(Regex(r"\d+"), "#"),
        p.Sequence([p.Split(Regex(r"\s+"), "merged_with_previous"), p.Split(",", "merged_with_next"),
                    p.Split(Regex(r"[aeiou]"), "contiguous", invert=True), p.ByteLevel(add_prefix_space=True)]),
        d.ByteLevel())
    yield "bert_removed", train_extra(
        corpus, n.Sequence([n.NFKD(), n.Prepend("^")]),
        p.Sequence([p.BertPreTokenizer(), p.Split(Regex(r"[^\w]"), "removed")]),
        d.Sequence([d.Replace("^", "<"), d.Strip("<", 1, 1)]))
    yield "gpt2_prefix_space", train_extra(
        corpus, None, p.ByteLevel(add_prefix_space=True, use_regex=True), d.ByteLevel())
