#!/usr/bin/env python3
"""Checks a tokenizer.json written by `mor tokenizer train` against the Hugging Face `tokenizers` library.

Modes (the project's virtualenv needs `pip install tokenizers`):

  check_trained_tokenizer.py TOKENIZER TEXT [--out CASES.jsonl]
      Loads TOKENIZER with `tokenizers`, encodes every line of TEXT (split on "\\n", the newline not
      included) and then the whole TEXT, and writes one {"text": ..., "ids": [...]} JSON line per
      encoding (stdout without --out). The C++ test encodes the same texts with mor::io::Tokenizer
      and requires the same ids.

  check_trained_tokenizer.py TOKENIZER --compare-training CORPUS... [--min-frequency N]
      Trains the library's own BpeTrainer with the settings TOKENIZER declares (vocab size, special
      tokens, Digits pre-tokenizer or not, the 256-symbol ByteLevel alphabet), every CORPUS file one
      document, and reports whether it learns the very vocabulary and merges of TOKENIZER. Exit 1
      when they differ. (The library cuts no special tokens out of the text; use a corpus without
      them.)

  check_trained_tokenizer.py --make-fixtures --mor build/mor
      Regenerates tests/fixtures/tokenizer/mor-trained/: for every <name>.options there, trains
      <name>.json with `mor tokenizer train corpus.txt ...`, checks it against the library's trainer
      and writes <name>.cases.jsonl from texts.txt with the library.
"""

import argparse
import json
import os
import subprocess
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "tokenizer", "mor-trained")


def encode_cases(tokenizer_path, text_path):
    tok = Tokenizer.from_file(tokenizer_path)
    with open(text_path, "rb") as f:
        text = f.read().decode("utf-8")
    texts = text.split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    texts.append(text)
    return [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]


def write_cases(cases, out):
    lines = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(lines)
    else:
        sys.stdout.write(lines)


def corpus_documents(paths):
    docs = []
    for p in paths:
        if os.path.isdir(p):
            files = []
            for root, dirs, names in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                files += [os.path.join(root, n) for n in names if not n.startswith(".")]
            files.sort(key=lambda s: s.encode())
        else:
            files = [p]
        for f in files:
            with open(f, "rb") as fh:
                docs.append(fh.read().decode("utf-8"))
    return docs


def compare_training(tokenizer_path, corpus, min_frequency):
    """Trains the library's BpeTrainer like `mor tokenizer train`; returns a list of differences."""
    with open(tokenizer_path, encoding="utf-8") as f:
        ours = json.load(f)
    specials = [t["content"] for t in ours["added_tokens"]]
    pre = ours["pre_tokenizer"]
    split_digits = pre["type"] == "Sequence"
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) if split_digits else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        # The size asked for is not stored; training to the size reached stops at the same merge.
        vocab_size=len(ours["model"]["vocab"]),
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_documents(corpus), trainer=trainer)
    theirs = json.loads(tok.to_str())
    problems = []
    if theirs["model"]["vocab"] != ours["model"]["vocab"]:
        problems.append("vocabularies differ (%d vs %d tokens)" % (len(theirs["model"]["vocab"]), len(ours["model"]["vocab"])))
    tm, om = theirs["model"]["merges"], ours["model"]["merges"]
    if tm != om:
        first = next((i for i, (a, b) in enumerate(zip(tm, om)) if a != b), min(len(tm), len(om)))
        problems.append("merges differ from rank %d (library %d merges, ours %d)" % (first, len(tm), len(om)))
    if theirs["pre_tokenizer"] != ours["pre_tokenizer"]:
        problems.append("pre-tokenizers differ")
    return problems


def read_options(path):
    opts = {"vocab-size": None, "min-frequency": "2", "special": [], "split-digits": False}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "special":
                opts["special"].append(parts[1])
            elif parts[0] == "split-digits":
                opts["split-digits"] = True
            else:
                opts[parts[0]] = parts[1]
    return opts


def make_fixtures(mor):
    corpus = os.path.join(FIXTURE_DIR, "corpus.txt")
    texts = os.path.join(FIXTURE_DIR, "texts.txt")
    failed = False
    for name in sorted(n[: -len(".options")] for n in os.listdir(FIXTURE_DIR) if n.endswith(".options")):
        opts = read_options(os.path.join(FIXTURE_DIR, name + ".options"))
        out = os.path.join(FIXTURE_DIR, name + ".json")
        cmd = [mor, "tokenizer", "train", corpus, "--out", out, "--vocab-size", opts["vocab-size"],
               "--min-frequency", opts["min-frequency"], "-q"]
        cmd += [a for s in opts["special"] for a in ("--special", s)] or ["--no-special"]
        if opts["split-digits"]:
            cmd.append("--split-digits")
        subprocess.run(cmd, check=True)
        problems = compare_training(out, [corpus], int(opts["min-frequency"]))
        print("%s: %s" % (name, "; ".join(problems) if problems else "same vocabulary and merges as the library's BpeTrainer"))
        failed |= bool(problems)
        cases = encode_cases(out, texts)
        write_cases(cases, os.path.join(FIXTURE_DIR, name + ".cases.jsonl"))
        print("%s: %d cases written" % (name, len(cases)))
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tokenizer", nargs="?")
    ap.add_argument("text", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--compare-training", nargs="+", metavar="CORPUS")
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--make-fixtures", action="store_true")
    ap.add_argument("--mor", default="build/mor")
    args = ap.parse_args()
    if args.make_fixtures:
        return make_fixtures(args.mor)
    if not args.tokenizer:
        ap.error("give a tokenizer.json")
    if args.compare_training:
        problems = compare_training(args.tokenizer, args.compare_training, args.min_frequency)
        print("; ".join(problems) if problems else "same vocabulary and merges as the library's BpeTrainer")
        return 1 if problems else 0
    if not args.text:
        ap.error("give a text file to encode")
    write_cases(encode_cases(args.tokenizer, args.text), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
