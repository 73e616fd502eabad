#!/usr/bin/env python3
"""Converts few-shot evaluation datasets into the JSON Lines layout that `mor eval` reads.

Usage:
  python3 tools/convert_eval_data.py TASK INPUT... --out DATA_DIR [--split NAME] [--force]

TASK is one of lambada_openai, hellaswag, piqa, winogrande, arc_easy, arc_challenge, openbookqa,
mmlu. Each INPUT is a file or a directory (read recursively, in sorted path order):

  *.parquet        a Hugging Face dataset file (the Hub's data files or refs/convert/parquet,
                   Dataset.to_parquet); needs pyarrow
  *.jsonl, *.json  JSON Lines (Dataset.to_json, or the original releases' files); a .json file
                   holding one JSON array of objects is read too
  *.csv            mmlu only: the original MMLU release, data/{dev,val,test}/<subject>_<split>.csv
                   (no header; question, A, B, C, D, answer letter)
  *-labels.lst     piqa only: the original release's labels (one 0/1 per line), paired by name
                   with its records file (train-labels.lst <-> train.jsonl); a records file without
                   labels picks up a neighbouring NAME-labels.lst by itself

Both the Hugging Face field schemas and the original release formats are accepted, record by
record (HellaSwag int labels, PIQA .lst labels, WinoGrande qID, ARC/OpenBookQA nested questions,
MMLU CSV and the cais/mmlu "all" configuration).

The split comes from --split or from the file name (the last of the words train, validation,
valid, val, dev, test, tests in it; else the parent directory's name): validation-00000-of-00001
.parquet, hellaswag_val.jsonl and ARC-Easy-Dev.jsonl are validation; for mmlu "dev" stays "dev".
In a directory, files that cannot be used (an unknown split, a split the layout does not have,
another configuration such as WinoGrande's train_s or ARC-Challenge when converting arc_easy)
are skipped with a "skipped" line; given by name they are an error.

Output, under DATA_DIR (one JSON object per line, fields in this order, UTF-8):
  lambada_openai/test.jsonl                  text
  hellaswag/{train,validation}.jsonl         ind, activity_label, ctx_a, ctx_b, ctx, endings,
                                             source_id, split, split_type, label ("0".."3")
  piqa/{train,validation}.jsonl              goal, sol1, sol2, label (0/1)
  winogrande/{train,validation}.jsonl        sentence, option1, option2, answer ("1"/"2")
  arc_easy|arc_challenge/{train,validation,test}.jsonl
                                             id, question, choices {text, label}, answerKey
  openbookqa/{train,validation,test}.jsonl   id, question_stem, choices {text, label}, answerKey
  mmlu/{dev,test}/<subject>.jsonl            question, subject, choices (4), answer (0-3)
Inputs that map to the same output file (e.g. parquet shards) are concatenated in input order.
Every input is read and checked before anything is written; files are written atomically, and an
existing file is replaced only with --force. Errors are one line on stderr naming the file, the
line (JSON Lines, CSV; 1-based) or row (parquet; 0-based, as dataset[i]) and the field; exit
code 1.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
import tempfile

PROG = "convert_eval_data"

# The splits each task has in the layout, in output order.
TASK_SPLITS = {
    "lambada_openai": ("test",),
    "hellaswag": ("train", "validation"),
    "piqa": ("train", "validation"),
    "winogrande": ("train", "validation"),
    "arc_easy": ("train", "validation", "test"),
    "arc_challenge": ("train", "validation", "test"),
    "openbookqa": ("train", "validation", "test"),
    "mmlu": ("dev", "test"),
}

# File-name words that name a split; "dev" is the validation split except in MMLU, which has both.
SPLIT_WORDS = {"train": "train", "validation": "validation", "valid": "validation",
               "val": "validation", "dev": "dev", "test": "test", "tests": "test"}

MMLU_SUBJECTS = frozenset("""
abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology
college_chemistry college_computer_science college_mathematics college_medicine college_physics
computer_security conceptual_physics econometrics electrical_engineering elementary_mathematics
formal_logic global_facts high_school_biology high_school_chemistry high_school_computer_science
high_school_european_history high_school_geography high_school_government_and_politics
high_school_macroeconomics high_school_mathematics high_school_microeconomics high_school_physics
high_school_psychology high_school_statistics high_school_us_history high_school_world_history
human_aging human_sexuality international_law jurisprudence logical_fallacies machine_learning
management marketing medical_genetics miscellaneous moral_disputes moral_scenarios nutrition
philosophy prehistory professional_accounting professional_law professional_medicine
professional_psychology public_relations security_studies sociology us_foreign_policy virology
world_religions
""".split())
assert len(MMLU_SUBJECTS) == 57

KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".lst": "lst"}


class UserError(Exception):
    """A problem with an input, an output or the arguments: one line on stderr, exit code 1."""

    def __init__(self, path, message, loc=None, field=None):
        parts = [str(path)] if path is not None else []
        if loc is not None:
            parts.append(loc)
        if field is not None:
            parts.append(field)
        parts.append(message)
        super().__init__(": ".join(parts))


def one_line(text):
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------
# File names: kind, split, configuration variants


def kind_of(path):
    name = os.path.basename(path).lower()
    for ext, kind in KINDS.items():
        if name.endswith(ext):
            return kind
    return None


def stem_of(path):
    name = os.path.basename(path)
    ext = os.path.splitext(name)[1]
    return name[:-len(ext)] if ext.lower() in KINDS else name


def words(text):
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def canonical_split(word, task):
    split = SPLIT_WORDS.get(word.lower())
    if split == "dev" and task != "mmlu":
        return "validation"
    return split


def infer_split(path, task):
    """The split named by the file name (its last split word), else by the parent directory."""
    for text in (stem_of(path), os.path.basename(os.path.dirname(os.path.abspath(path)))):
        found = [canonical_split(w, task) for w in words(text) if w in SPLIT_WORDS]
        if found:
            return found[-1]
    return None


# Words in a path below a directory given as input that mark another configuration of the dataset
# than the one mor eval reads: (words, duplicate, why). A "duplicate" configuration holds the same
# data as the default one and is skipped only when the directory has files outside it. The MMLU
# "all" word counts only as a whole directory name.
VARIANTS = {
    "lambada_openai": [
        ({"de", "fr", "it", "es"}, False,
         "a translated LAMBADA (mor eval reads the English default configuration)"),
        ({"en"}, True, "the 'en' copy of the default LAMBADA configuration")],
    "winogrande": [({"xs", "s", "m", "l", "debiased"}, False,
                    "another WinoGrande configuration (mor eval reads winogrande_xl)")],
    "arc_easy": [({"challenge"}, False, "ARC-Challenge data (converting arc_easy)")],
    "arc_challenge": [({"easy"}, False, "ARC-Easy data (converting arc_challenge)")],
    "openbookqa": [({"additional"}, False,
                    "the OpenBookQA 'additional' configuration (mor eval reads 'main')")],
    "mmlu": [({"auxiliary"}, False, "the MMLU auxiliary training data"),
             ({"all"}, True, "the cais/mmlu 'all' configuration (the per-subject files next to "
              "it are read)")],
}


def variant_of(task, rel):
    """(duplicate, why) of the first configuration variant a relative path is in, else None."""
    comps = rel.split(os.sep)
    found = set()
    for i, comp in enumerate(comps):
        found.update(words(stem_of(comp) if i == len(comps) - 1 else comp))
    dirs = {c.lower() for c in comps[:-1]}
    for names, duplicate, why in VARIANTS.get(task, []):
        if names & (dirs if task == "mmlu" and duplicate else found):
            return duplicate, why
    return None


# ----------------------------------------------------------------------------------------------
# Inputs


class Source:
    def __init__(self, path, kind, explicit, rel):
        self.path, self.kind, self.explicit, self.rel = path, kind, explicit, rel
        self.split = None
        self.labels = None  # piqa: the paired .lst Source


def walk(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def collect(task, inputs, split_override):
    """The input files to read, in order, with their splits; notes the skipped ones."""
    sources, seen = [], set()

    def add(src):
        key = os.path.realpath(src.path)
        if key not in seen:
            seen.add(key)
            sources.append(src)

    for arg in inputs:
        if os.path.isdir(arg):
            found = []
            for path in walk(arg):
                kind = kind_of(path)
                if kind is not None:
                    found.append(Source(path, kind, False, os.path.relpath(path, arg)))
            plain = [s for s in found if variant_of(task, s.rel) is None]
            for src in found:
                variant = variant_of(task, src.rel)
                if variant is not None and (not variant[0] or plain):
                    print(f"skipped {src.path}: {variant[1]}")
                else:
                    add(src)
        elif os.path.isfile(arg):
            kind = kind_of(arg)
            if kind is None:
                raise UserError(arg, "unknown file format (expected .parquet, .jsonl, .json, "
                                ".csv for mmlu or -labels.lst for piqa)")
            add(Source(arg, kind, True, os.path.basename(arg)))
        elif os.path.exists(arg):
            raise UserError(arg, "neither a file nor a directory")
        else:
            raise UserError(arg, "no such file or directory")

    kept = []
    for src in sources:
        reason = None
        if src.kind == "csv" and task != "mmlu":
            reason = "CSV input is read only for mmlu (the original MMLU release)"
        elif src.kind == "lst" and task != "piqa":
            reason = "label files (.lst) are read only for piqa"
        else:
            src.split = (canonical_split(split_override, task) if split_override
                         else infer_split(src.path, task))
            if src.split is None:
                reason = ("cannot tell the split from the file name (no train, validation, val, "
                          "valid, dev or test in it); give --split")
            elif src.split not in TASK_SPLITS[task]:
                reason = (f"split '{src.split}': {task} has no such split in the layout "
                          f"({', '.join(TASK_SPLITS[task])})")
        if reason is None:
            kept.append(src)
        elif src.explicit:
            raise UserError(src.path, reason)
        else:
            print(f"skipped {src.path}: {reason}")

    if task == "piqa":
        kept = pair_labels(kept)
    return kept


def labels_stem(src):
    stem = stem_of(src.path)
    return re.sub(r"[-_.]labels$", "", stem, flags=re.IGNORECASE)


def pair_labels(sources):
    """Attaches each PIQA *-labels.lst to its records file (same name without -labels)."""
    records = [s for s in sources if s.kind != "lst"]
    for lst in (s for s in sources if s.kind == "lst"):
        want = labels_stem(lst)
        same = [s for s in records if stem_of(s.path) == want]
        near = [s for s in same if os.path.dirname(os.path.abspath(s.path))
                == os.path.dirname(os.path.abspath(lst.path))]
        match = near if near else same
        if len(match) != 1:
            what = "no" if not match else "more than one"
            raise UserError(lst.path, f"{what} records file named {want}.* among the inputs "
                            "to pair these labels with", field="label")
        if match[0].labels is not None:
            raise UserError(lst.path, f"{match[0].path} already has the labels "
                            f"{match[0].labels.path}", field="label")
        match[0].labels = lst
    for src in records:  # a records file given alone picks up its neighbouring labels file
        if src.labels is None:
            lst = os.path.join(os.path.dirname(src.path), stem_of(src.path) + "-labels.lst")
            if os.path.isfile(lst):
                src.labels = Source(lst, "lst", False, os.path.basename(lst))
    return records


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UserError(path, f"cannot read: {e.strerror}") from None


def read_json_records(path, kind):
    """[(location, record)] of a JSON Lines file (or a .json file holding one array)."""
    data = read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if kind == "json" and data.lstrip()[:1] == b"[":
        try:
            items = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UserError(path, f"not valid UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise UserError(path, f"not valid JSON ({e.msg})", f"line {e.lineno}") from None
        return [(f"record {i}", item) for i, item in enumerate(items)]
    out = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {n}", json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError:
            raise UserError(path, "not valid UTF-8", f"line {n}") from None
        except json.JSONDecodeError as e:
            raise UserError(path, f"not valid JSON ({e.msg} at column {e.colno})",
                            f"line {n}") from None
    return out


def read_parquet_records(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(path, f"reading parquet needs pyarrow, which {sys.executable} cannot "
                        "import (pip install pyarrow, or convert with Dataset.to_json)") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise UserError(path, f"cannot read as parquet: {one_line(e)}") from None
    return [(f"row {i}", row) for i, row in enumerate(rows)]


def read_mmlu_csv(path):
    """The original MMLU CSV: no header, question, A, B, C, D, answer letter."""
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(path, f"not valid UTF-8 (byte {e.start})") from None
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            loc = f"line {reader.line_num}"
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 6:
                raise UserError(path, f"{len(row)} columns, expected 6 (question, A, B, C, D, "
                                "answer letter)", loc)
            out.append((loc, {"question": row[0], "choices": row[1:5], "answer": row[5]}))
    except csv.Error as e:
        raise UserError(path, f"not valid CSV ({e})", f"line {reader.line_num}") from None
    return out


def read_labels(path):
    """A PIQA *-labels.lst: one 0 or 1 per line (trailing blank lines ignored)."""
    try:
        lines = read_bytes(path).decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(path, f"not valid UTF-8 (byte {e.start})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels = []
    for n, line in enumerate(lines, 1):
        value = line.strip()
        if value not in ("0", "1"):
            raise UserError(path, f"'{value}' is not 0 or 1", f"line {n}", "label")
        labels.append(int(value))
    return labels


def read_records(src):
    if src.kind == "parquet":
        return read_parquet_records(src.path)
    if src.kind == "csv":
        return read_mmlu_csv(src.path)
    return read_json_records(src.path, src.kind)


# ----------------------------------------------------------------------------------------------
# Records: checked and normalised to the layout's schema


class Where:
    """Where a record came from, for error messages."""

    def __init__(self, path, loc):
        self.path, self.loc = path, loc

    def fail(self, field, message):
        raise UserError(self.path, message, self.loc, field)


def get(rec, field, where, name=None):
    name = name or field
    if not isinstance(rec, dict):
        where.fail(name, "not a JSON object")
    if field not in rec:
        where.fail(name, "missing")
    if rec[field] is None:
        where.fail(name, "missing (null)")
    return rec[field]


def type_name(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def as_str(value, where, field, nonempty=False):
    if not isinstance(value, str):
        where.fail(field, f"expected a string, got {type_name(value)}")
    if nonempty and not value.strip():
        where.fail(field, "empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        where.fail(field, "not valid Unicode (a lone surrogate)")
    return value


def as_int(value, where, field):
    """An integer, or a string or integral number that spells one."""
    if isinstance(value, bool):
        where.fail(field, f"expected an integer, got {type_name(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    if isinstance(value, str) and not value.strip():
        where.fail(field, "empty: an unlabelled (test) record cannot be used for evaluation")
    where.fail(field, f"expected an integer, got {json.dumps(value, ensure_ascii=False)}")


def in_range(value, lo, hi, where, field):
    if not lo <= value <= hi:
        where.fail(field, f"{value} is out of range [{lo}, {hi}]")
    return value


def str_list(value, where, field, count=None):
    if not isinstance(value, list):
        where.fail(field, f"expected a list, got {type_name(value)}")
    if count is not None and len(value) != count:
        where.fail(field, f"{len(value)} items, expected {count}")
    return [as_str(v, where, f"{field}[{i}]") for i, v in enumerate(value)]


def norm_lambada(rec, where, ctx):
    return {"text": as_str(get(rec, "text", where), where, "text", nonempty=True)}


def norm_hellaswag(rec, where, ctx):
    out = {"ind": as_int(get(rec, "ind", where), where, "ind")}
    for field in ("activity_label", "ctx_a", "ctx_b", "ctx"):
        out[field] = as_str(get(rec, field, where), where, field)
    out["endings"] = str_list(get(rec, "endings", where), where, "endings", 4)
    for field in ("source_id", "split", "split_type"):
        out[field] = as_str(get(rec, field, where), where, field)
    label = in_range(as_int(get(rec, "label", where), where, "label"), 0, 3, where, "label")
    out["label"] = str(label)  # Rowan/hellaswag keeps the label as a string
    return out


def norm_piqa(rec, where, ctx):
    out = {f: as_str(get(rec, f, where), where, f) for f in ("goal", "sol1", "sol2")}
    label = None
    if isinstance(rec, dict) and rec.get("label") is not None:
        label = in_range(as_int(rec["label"], where, "label"), 0, 1, where, "label")
    if ctx.get("label") is not None:
        if label is not None and label != ctx["label"]:
            where.fail("label", f"{label} here but {ctx['label']} in {ctx['labels_path']}")
        label = ctx["label"]
    if label is None:
        where.fail("label", "missing (the original release keeps the labels in a separate "
                   "*-labels.lst: give it too)")
    out["label"] = label
    return out


def norm_winogrande(rec, where, ctx):
    out = {}
    out["sentence"] = as_str(get(rec, "sentence", where), where, "sentence")
    if "_" not in out["sentence"]:
        where.fail("sentence", "no '_' blank in it")
    for field in ("option1", "option2"):
        out[field] = as_str(get(rec, field, where), where, field)
    answer = get(rec, "answer", where)
    if isinstance(answer, str) and not answer.strip():
        where.fail("answer", "empty: an unlabelled (test) record cannot be used for evaluation")
    out["answer"] = str(in_range(as_int(answer, where, "answer"), 1, 2, where, "answer"))
    return out


def norm_choices(value, where, field):
    """{"text": [...], "label": [...]} from that form or from a list of {text, label}."""
    if isinstance(value, list):  # the original releases
        texts, labels = [], []
        for i, choice in enumerate(value):
            texts.append(as_str(get(choice, "text", where, f"{field}[{i}].text"), where,
                                f"{field}[{i}].text"))
            labels.append(as_str(get(choice, "label", where, f"{field}[{i}].label"), where,
                                 f"{field}[{i}].label", nonempty=True))
    elif isinstance(value, dict):
        texts = str_list(get(value, "text", where, f"{field}.text"), where, f"{field}.text")
        labels = str_list(get(value, "label", where, f"{field}.label"), where, f"{field}.label")
        if len(texts) != len(labels):
            where.fail(field, f"{len(texts)} texts but {len(labels)} labels")
    else:
        where.fail(field, f"expected an object or a list, got {type_name(value)}")
    if len(texts) < 2:
        where.fail(field, f"{len(texts)} choices, expected at least 2")
    if len(set(labels)) != len(labels):
        where.fail(field, f"repeated labels {labels}")
    return {"text": texts, "label": labels}


def norm_multiple_choice(rec, where, stem_field):
    """ARC and OpenBookQA: the HF flat form or the original nested question {stem, choices}."""
    out = {"id": as_str(get(rec, "id", where), where, "id")}
    question = rec.get("question") if isinstance(rec, dict) else None
    if isinstance(question, dict):  # original release
        out[stem_field] = as_str(get(question, "stem", where, "question.stem"), where,
                                 "question.stem")
        choices = norm_choices(get(question, "choices", where, "question.choices"), where,
                               "question.choices")
    else:
        out[stem_field] = as_str(get(rec, stem_field, where), where, stem_field)
        choices = norm_choices(get(rec, "choices", where), where, "choices")
    out["choices"] = choices
    key = get(rec, "answerKey", where)
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    key = as_str(key, where, "answerKey", nonempty=True)
    if key not in choices["label"]:
        where.fail("answerKey", f"'{key}' is not one of the choice labels {choices['label']}")
    out["answerKey"] = key
    return out


def norm_arc(rec, where, ctx):
    return norm_multiple_choice(rec, where, "question")


def norm_openbookqa(rec, where, ctx):
    return norm_multiple_choice(rec, where, "question_stem")


def norm_mmlu(rec, where, ctx):
    out = {"question": as_str(get(rec, "question", where), where, "question")}
    subject = rec.get("subject")
    if subject is None or (isinstance(subject, str) and not subject.strip()):
        subject = ctx.get("subject")
        if subject is None:
            where.fail("subject", "missing, and the file name names no MMLU subject")
    subject = as_str(subject, where, "subject")
    if subject not in MMLU_SUBJECTS:
        where.fail("subject", f"'{subject}' is not one of the 57 MMLU subjects")
    out["subject"] = subject
    out["choices"] = str_list(get(rec, "choices", where), where, "choices", 4)
    answer = get(rec, "answer", where)
    if isinstance(answer, str) and answer.strip().upper() in ("A", "B", "C", "D"):
        answer = "ABCD".index(answer.strip().upper())
    elif isinstance(answer, str) and not re.fullmatch(r"\s*-?[0-9]+\s*", answer):
        where.fail("answer", f"{json.dumps(answer, ensure_ascii=False)} is not A, B, C, D "
                   "or 0-3")
    else:
        answer = in_range(as_int(answer, where, "answer"), 0, 3, where, "answer")
    out["answer"] = answer
    return out


NORMALIZERS = {
    "lambada_openai": norm_lambada, "hellaswag": norm_hellaswag, "piqa": norm_piqa,
    "winogrande": norm_winogrande, "arc_easy": norm_arc, "arc_challenge": norm_arc,
    "openbookqa": norm_openbookqa, "mmlu": norm_mmlu,
}


def subject_from_path(src):
    """The MMLU subject a file name implies: <subject>_<split>.csv, or a <subject>/ directory."""
    stem = stem_of(src.path)
    stripped = re.sub(r"[-_](dev|val|valid|validation|test|train)$", "", stem,
                      flags=re.IGNORECASE)
    parent = os.path.dirname(os.path.abspath(src.path))
    for name in (stripped, stem, os.path.basename(parent),
                 os.path.basename(os.path.dirname(parent))):
        if name in MMLU_SUBJECTS:
            return name
    return None


# ----------------------------------------------------------------------------------------------
# Conversion


def output_path(task, split, record):
    if task == "mmlu":
        return os.path.join("mmlu", split, record["subject"] + ".jsonl")
    return os.path.join(task, split + ".jsonl")


def convert(task, sources):
    """{relative output path: [encoded lines]} from every source, checked."""
    outputs = {}
    normalize = NORMALIZERS[task]
    for src in sources:
        records = read_records(src)
        if not records:
            raise UserError(src.path, "no records")
        ctx = {"subject": subject_from_path(src)} if task == "mmlu" else {}
        labels = None
        if src.labels is not None:
            labels = read_labels(src.labels.path)
            if len(labels) != len(records):
                raise UserError(src.labels.path, f"{len(labels)} labels for {len(records)} "
                                f"records in {src.path}", field="label")
            ctx["labels_path"] = src.labels.path
        for i, (loc, rec) in enumerate(records):
            where = Where(src.path, loc)
            if not isinstance(rec, dict):
                where.fail(None, f"expected a JSON object, got {type_name(rec)}")
            if labels is not None:
                ctx["label"] = labels[i]
            out = normalize(rec, where, ctx)
            line = json.dumps(out, ensure_ascii=False, allow_nan=False) + "\n"
            outputs.setdefault(output_path(task, src.split, out), []).append(line.encode("utf-8"))
    return outputs


UMASK = os.umask(0o022)
os.umask(UMASK)


def write_atomic(path, lines):
    directory = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                   suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~UMASK)  # mkstemp creates the file 0600
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UserError(e.filename or path, f"cannot write: {e.strerror}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def run(args):
    sources = collect(args.task, args.inputs, args.split)
    if not sources:
        raise UserError(None, f"no {args.task} input among {' '.join(args.inputs)}")
    outputs = convert(args.task, sources)
    targets = [(os.path.join(args.out, rel), outputs[rel]) for rel in sorted(outputs)]
    for path, _ in targets:  # refuse before writing anything
        if os.path.isdir(path):
            raise UserError(path, "exists and is a directory")
        if os.path.lexists(path) and not args.force:
            raise UserError(path, "exists (give --force to replace it)")
    for path, lines in targets:
        write_atomic(path, lines)
        print(f"wrote {path}: {len(lines)} records")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 1, like the other tools
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(1)


def parse_args(argv):
    parser = Parser(prog="convert_eval_data.py", description=__doc__.split("\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("task", metavar="TASK", choices=sorted(TASK_SPLITS),
                        help="one of: " + ", ".join(TASK_SPLITS))
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files or directories")
    parser.add_argument("--out", required=True, metavar="DATA_DIR",
                        help="the evaluation data directory (mor eval's eval.data_dir)")
    parser.add_argument("--split", metavar="NAME",
                        help="the split of every input (train, validation, val, valid, dev, "
                        "test) instead of inferring it from the file names")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    if args.split is not None and args.split.lower() not in SPLIT_WORDS:
        parser.error(f"--split: unknown split '{args.split}' (train, validation, val, valid, "
                     "dev, test)")
    return args


def main(argv):
    args = parse_args(argv)
    try:
        run(args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
