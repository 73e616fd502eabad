#!/usr/bin/env python3
"""Checks `mor eval` against lm-evaluation-harness (model "hf") on the same local task files.

Usage:
  lm_eval_parity.py --mor MOR --model BUNDLE --data-dir DIR --tasks t1,t2,... --num-fewshot N
                    --out WORKDIR [--tol 1e-4] [--batch-size 3] [--golden DIR]
                    [--mor-output DIR] [--routing causal|topk] [--limit N]

1. `mor eval BUNDLE --tasks ... --num-fewshot N --data-dir DIR --batch-size B --log-samples
   --output WORKDIR/mor --seed 1234 --device cpu --dtype float32` (skipped with --mor-output: compare
   an existing output).
2. lm_eval.simple_evaluate with HFLM(pretrained=WORKDIR/hf, dtype float32, device cpu, batch_size 4,
   add_bos_token False), log_samples, fewshot_random_seed 1234 and the tasks of
   tools/lm_eval_local.py (the harness's installed configs reading DIR). WORKDIR/hf is a copy of the
   bundle's Hugging Face files plus a tokenizer_config.json (PreTrainedTokenizerFast, BOS/EOS named
   after config.json's ids), so AutoTokenizer loads tokenizer.json and adds no special tokens.
   Its output is also written in mor's schema to WORKDIR/lm_eval/{results.json,samples_<task>.jsonl}.
3. Compares, per request: identical context and continuation strings, |ll difference| <= tol,
   same is_greedy (a differing is_greedy is a near-tie, not a failure, when some continuation
   position's top-2 log-probability gap in the HF model is <= tol); per document: identical
   metrics except where the choices involved are within tol of each other (reported as near-ties);
   per task: n, num_fewshot, version, acc / acc_norm (exact, up to the near-tie documents),
   acc_stderr / acc_norm_stderr (1e-6) and perplexity (relative 1e-4).
   Token counts, targets and documents that differ are reported as notes.

Prints `parity <task>: N docs, M requests, max |dll| X, scores mor=... lm_eval=...` per task, then
`lm_eval_parity: ok` (exit 0) or `lm_eval_parity: FAIL` after the list of mismatches (exit 1).
Exit 2: usage errors, lm_eval missing, or `mor eval` failed to run.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_eval_local  # noqa: E402

SCORE_KEYS = ("acc", "acc_norm", "perplexity")
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
            "tokenizer_config.json", "special_tokens_map.json")


# ----------------------------------------------------------------------------- helpers

def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def short(s: str, n: int = 70) -> str:
    r = repr(s)
    return r if len(r) <= n else r[: n // 2] + "..." + r[-n // 2:]


def resp_pair(r) -> tuple[float, bool]:
    """[ll, is_greedy] or [[ll, is_greedy]] (lm_eval's per-request list of repeats) -> (ll, greedy)."""
    if isinstance(r, (list, tuple)) and len(r) == 1 and isinstance(r[0], (list, tuple)):
        r = r[0]
    return float(r[0]), bool(r[1])


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# ----------------------------------------------------------------------------- HF copy of the bundle

def make_hf_copy(bundle: Path, dest: Path) -> Path:
    """Copies the bundle's Hugging Face files; adds tokenizer_config.json when the bundle has none."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in HF_FILES:
        if (bundle / name).is_file():
            shutil.copy2(bundle / name, dest / name)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (dest / name).is_file():
            raise FileNotFoundError(f"{bundle}: no {name} (is it a vanilla bundle from `mor export`?)")
    if not (dest / "tokenizer_config.json").is_file():
        config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
        tok = json.loads((dest / "tokenizer.json").read_text(encoding="utf-8"))
        id_to_text = {t["id"]: t["content"] for t in tok.get("added_tokens", [])}
        vocab = (tok.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, dict):
            for text, i in vocab.items():
                id_to_text.setdefault(i, text)
        tc = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
              "clean_up_tokenization_spaces": False}
        for key in ("bos", "eos"):
            i = config.get(f"{key}_token_id")
            if isinstance(i, list):
                i = i[0] if i else None
            if i is not None and i in id_to_text:
                tc[f"{key}_token"] = id_to_text[i]
        (dest / "tokenizer_config.json").write_text(json.dumps(tc, indent=2) + "\n", encoding="utf-8")
    return dest


# ----------------------------------------------------------------------------- the two runs

def run_mor(args, tasks: list[str], out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = [args.mor, "eval", str(args.model), "--tasks", ",".join(tasks), "--num-fewshot", str(args.num_fewshot),
           "--data-dir", str(args.data_dir), "--batch-size", str(args.batch_size), "--log-samples",
           "--output", str(out_dir), "--seed", "1234", "--device", "cpu", "--dtype", "float32"]
    if args.routing:
        cmd += ["--routing", args.routing]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    print("lm_eval_parity: running " + " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise RuntimeError(f"cannot run {args.mor}: {e}") from e
    (out_dir.parent / "mor_eval.log").write_text(p.stdout + p.stderr, encoding="utf-8")
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-20:])
        raise RuntimeError(f"mor eval exited with {p.returncode}:\n{tail}")


def load_mor_output(out_dir: Path, tasks: list[str]) -> tuple[dict, dict]:
    results_path = out_dir / "results.json"
    if not results_path.is_file():
        raise RuntimeError(f"{results_path} missing")
    results = json.loads(results_path.read_text(encoding="utf-8")).get("results", {})
    samples = {}
    for t in tasks:
        p = out_dir / f"samples_{t}.jsonl"
        samples[t] = read_jsonl(p) if p.is_file() else None
    return results, samples


class HFRun:
    """lm_eval's own evaluation with the hf model, plus the HF tokenization of every request."""

    def __init__(self, args, tasks: list[str], work: Path):
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        self.lm = HFLM(pretrained=str(work / "hf"), dtype="float32", device="cpu", batch_size=args.hf_batch_size,
                       add_bos_token=False)
        tm = lm_eval_local.task_manager(args.data_dir, tasks, work / "lm_eval_tasks")
        self.out = lm_eval.simple_evaluate(
            model=self.lm, tasks=list(tasks), num_fewshot=args.num_fewshot, fewshot_random_seed=1234,
            task_manager=tm, log_samples=True, bootstrap_iters=args.bootstrap_iters, cache_requests=False,
            limit=args.limit or None)

    def encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """TemplateLM.loglikelihood's tokenization (empty context -> prefix token)."""
        lm = self.lm
        if context == "":
            cont = lm.tok_encode(continuation, add_special_tokens=False)
            return ([lm.prefix_token_id], cont) if lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
        return lm._encode_pair(context, continuation)

    def greedy_gap(self, context: str, continuation: str) -> float:
        """min over continuation positions of |logp(target) - max logp(other)| in the HF model."""
        import torch

        ctx, cont = self.encode(context, continuation)
        inp = (ctx + cont)[-(self.lm.max_length + 1):][:-1]
        with torch.no_grad():
            logits = self.lm.model(torch.tensor([inp], dtype=torch.long)).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)[-len(cont):]
        gap = math.inf
        for pos, tok in enumerate(cont):
            row = logp[pos].clone()
            target = row[tok].item()
            row[tok] = -math.inf
            gap = min(gap, abs(target - row.max().item()))
        return gap

    def normalized(self, tasks: list[str]) -> tuple[dict, dict]:
        """(results, samples) in mor's schema."""
        out = self.out
        results = {}
        for t in tasks:
            r = out["results"].get(t, {})
            entry = {"version": out.get("versions", {}).get(t), "num_fewshot": out.get("n-shot", {}).get(t),
                     "n": (out.get("n-samples", {}).get(t) or {}).get("effective")}
            for key, v in r.items():
                if "," in key:
                    name, filt = key.split(",", 1)
                    if filt == "none":
                        entry[name] = v
            results[t] = entry
        samples = {}
        for t in tasks:
            rows = []
            for s in out.get("samples", {}).get(t, []):
                args = [list(a) for a in s["arguments"]]
                enc = [self.encode(c, x) for c, x in args]
                metrics = {k: s[k] for k in s.get("metrics", [])}
                rows.append({"task": t, "doc_id": s["doc_id"], "doc": s["doc"], "target": s["target"],
                             "arguments": args, "resps": [list(resp_pair(r)) for r in s["resps"]],
                             "context_tokens": [len(c) for c, _ in enc],
                             "context_tokens_truncated": [
                                 len(c) - max(0, len(c) + len(x) - (self.lm.max_length + 1)) for c, x in enc],
                             "continuation_tokens": [len(x) for _, x in enc], "metrics": metrics})
            rows.sort(key=lambda r: r["doc_id"])
            samples[t] = rows
        return results, samples


# ----------------------------------------------------------------------------- comparison

class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.near_ties: list[str] = []

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def note(self, msg: str) -> None:
        self.notes.append(msg)


def _as_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def choice_lengths(doc: dict, args: list) -> list[int] | None:
    """The code-point lengths acc_norm divides by: doc_to_choice without the target delimiter."""
    if isinstance(doc.get("choices"), list) and len(doc["choices"]) == len(args) and all(
            isinstance(c, str) for c in doc["choices"]):
        return [len(c) for c in doc["choices"]]  # hellaswag (processed choices)
    conts = [a[1] for a in args]
    if len(set(conts)) == 1 and len(conts) > 1:
        return None  # winogrande: shared continuation, no acc_norm
    return [max(len(c) - 1, 1) for c in conts]  # " " + choice


def decision_is_near_tie(lls_a: list[float], lls_b: list[float], lens: list[int] | None, norm: bool,
                         tol: float) -> bool:
    """True when the argmax could flip by moving each ll by tol (in either run)."""
    for lls in (lls_a, lls_b):
        if norm and lens:
            vals = [ll / n for ll, n in zip(lls, lens)]
            slack = [tol / n for n in lens]
        else:
            vals, slack = list(lls), [tol] * len(lls)
        best = max(range(len(vals)), key=lambda i: vals[i])
        for j in range(len(vals)):
            if j != best and vals[best] - vals[j] <= slack[best] + slack[j] + 1e-12:
                return True
    return False


def compare_task(task: str, mor_res: dict | None, mor_samples: list | None, lm_res: dict, lm_samples: list,
                 tol: float, rep: Report, hf: HFRun | None, golden: list | None) -> str:
    if mor_res is None:
        rep.fail(f"{task}: missing from mor results.json")
    if mor_samples is None:
        rep.fail(f"{task}: mor wrote no samples_{task}.jsonl")
        mor_samples = []
    mor_by_id = {}
    for s in mor_samples:
        if s.get("doc_id") in mor_by_id:
            rep.fail(f"{task}: doc {s.get('doc_id')} appears twice in mor's samples")
        mor_by_id[s.get("doc_id")] = s
    lm_by_id = {s["doc_id"]: s for s in lm_samples}
    if set(mor_by_id) != set(lm_by_id):
        only_mor = sorted(set(mor_by_id) - set(lm_by_id))
        only_lm = sorted(set(lm_by_id) - set(mor_by_id))
        rep.fail(f"{task}: documents differ (only mor: {only_mor[:10]}, only lm_eval: {only_lm[:10]})")

    if golden is not None:
        lm_reqs = [(s["doc_id"], i, a[0], a[1]) for s in lm_samples for i, a in enumerate(s["arguments"])]
        gold = [(g["doc_id"], g["idx"], g["context"], g["continuation"]) for g in golden]
        if lm_reqs != gold:
            rep.fail(f"{task}: the installed lm_eval's requests differ from the golden file "
                     f"({len(lm_reqs)} vs {len(gold)} requests); regenerate tests/fixtures/eval/requests?")

    n_req = 0
    max_dll = 0.0
    tie_docs = {"acc": 0, "acc_norm": 0}
    for doc_id in sorted(lm_by_id):
        lm_s = lm_by_id[doc_id]
        m_s = mor_by_id.get(doc_id)
        if m_s is None:
            continue
        where = f"{task} doc {doc_id}"
        l_args, m_args = lm_s["arguments"], m_s.get("arguments") or []
        if len(l_args) != len(m_args):
            rep.fail(f"{where}: {len(m_args)} requests in mor, {len(l_args)} in lm_eval")
            continue
        l_resps = [resp_pair(r) for r in lm_s["resps"]]
        try:
            m_resps = [resp_pair(r) for r in m_s.get("resps") or []]
        except (TypeError, ValueError, IndexError):
            rep.fail(f"{where}: unreadable mor resps {m_s.get('resps')!r}"[:200])
            continue
        if len(m_resps) != len(l_args):
            rep.fail(f"{where}: {len(m_resps)} resps in mor for {len(l_args)} requests")
            continue
        strings_ok = True
        for i, (la, ma) in enumerate(zip(l_args, m_args)):
            n_req += 1
            if list(ma)[:2] != list(la):
                strings_ok = False
                if ma[0] != la[0]:
                    k = next((j for j in range(min(len(ma[0]), len(la[0]))) if ma[0][j] != la[0][j]),
                             min(len(ma[0]), len(la[0])))
                    rep.fail(f"{where} request {i}: context differs at char {k}: "
                             f"mor {short(ma[0][max(0, k - 20):k + 30])} vs lm_eval {short(la[0][max(0, k - 20):k + 30])}")
                if ma[1] != la[1]:
                    rep.fail(f"{where} request {i}: continuation mor {short(ma[1])} vs lm_eval {short(la[1])}")
                continue
            (lll, lg), (mll, mg) = l_resps[i], m_resps[i]
            d = abs(lll - mll) if math.isfinite(lll) and math.isfinite(mll) else math.inf
            max_dll = max(max_dll, d)
            if d > tol:
                rep.fail(f"{where} request {i}: ll mor {mll:.8g} vs lm_eval {lll:.8g} (|d| {d:.3g} > {tol:g})")
            if lg != mg:
                gap = hf.greedy_gap(la[0], la[1]) if hf is not None else None
                if gap is not None and gap <= tol:
                    rep.near_ties.append(f"{where} request {i}: is_greedy mor {mg} vs lm_eval {lg}, "
                                         f"top-2 log-prob gap {gap:.3g} <= tol")
                else:
                    rep.fail(f"{where} request {i}: is_greedy mor {mg} vs lm_eval {lg}"
                             + (f" (top-2 log-prob gap {gap:.3g})" if gap is not None else ""))
            for key in ("context_tokens", "continuation_tokens"):
                lv, mv = lm_s.get(key), m_s.get(key)
                alt = lm_s.get("context_tokens_truncated") if key == "context_tokens" else None
                if isinstance(lv, list) and isinstance(mv, list) and len(mv) == len(lv) and mv[i] != lv[i] and \
                        not (isinstance(alt, list) and len(alt) == len(lv) and mv[i] == alt[i]):
                    rep.note(f"{where} request {i}: {key} mor {mv[i]} vs HF {lv[i]}")
        if not strings_ok:
            continue
        # per-document metrics
        l_lls = [r[0] for r in l_resps]
        m_lls = [r[0] for r in m_resps]
        lens = choice_lengths(lm_s["doc"], l_args)
        m_metrics = m_s.get("metrics") or {}
        for key, lv in lm_s["metrics"].items():
            if key not in m_metrics:
                rep.fail(f"{where}: metric {key} missing in mor's sample")
                continue
            mv = m_metrics[key]
            if key == "perplexity":  # the document's ll
                fl, fm = _as_float(lv), _as_float(mv)
                if fl is None or fm is None or abs(fl - fm) > tol:
                    rep.fail(f"{where}: perplexity item mor {mv} vs lm_eval {lv}")
                continue
            if _as_float(lv) == _as_float(mv):
                continue
            if key in ("acc", "acc_norm") and len(l_lls) > 1 and decision_is_near_tie(
                    l_lls, m_lls, lens, key == "acc_norm", tol):
                tie_docs[key] += 1
                rep.near_ties.append(f"{where}: {key} mor {mv} vs lm_eval {lv} (choices within tol; "
                                     f"lls mor {[round(x, 6) for x in m_lls]}, lm_eval {[round(x, 6) for x in l_lls]})")
            elif key == "acc" and len(l_lls) == 1 and rep.near_ties and rep.near_ties[-1].startswith(where + " request "):
                tie_docs[key] += 1  # lambada: acc is is_greedy, already classified above
            else:
                rep.fail(f"{where}: {key} mor {mv} vs lm_eval {lv}")
        if m_s.get("target") is not None and str(m_s.get("target")) != str(lm_s["target"]):
            rep.note(f"{where}: target mor {m_s.get('target')!r} vs lm_eval {lm_s['target']!r}")
        m_doc = m_s.get("doc")
        if isinstance(m_doc, dict):
            diff = [k for k, v in lm_s["doc"].items() if k in m_doc and m_doc[k] != v]
            if diff:
                rep.note(f"{where}: doc fields differ: {diff}")

    # per-task scores
    n_docs = len(lm_samples)
    mor_scores: list[str] = []
    lm_scores: list[str] = []
    if mor_res is not None:
        for key in ("n", "num_fewshot"):
            if key in mor_res and lm_res.get(key) is not None and _as_float(mor_res[key]) != _as_float(lm_res[key]):
                rep.fail(f"{task}: {key} mor {mor_res[key]} vs lm_eval {lm_res[key]}")
        if "version" in mor_res and lm_res.get("version") is not None and \
                _as_float(mor_res["version"]) != _as_float(lm_res["version"]):
            rep.fail(f"{task}: version mor {mor_res['version']} vs lm_eval {lm_res['version']}")
        for key in SCORE_KEYS:
            if key not in lm_res:
                continue
            lv, mv = _as_float(lm_res[key]), _as_float(mor_res.get(key))
            mor_scores.append(f"{key} {fmt(mv)}")
            lm_scores.append(f"{key} {fmt(lv)}")
            if mv is None:
                rep.fail(f"{task}: mor results.json lacks {key}")
                continue
            if key == "perplexity":
                if abs(mv - lv) > 1e-4 * abs(lv):
                    rep.fail(f"{task}: perplexity mor {mv:.8g} vs lm_eval {lv:.8g} (relative tolerance 1e-4)")
            elif mv != lv and abs(mv - lv) > tie_docs.get(key, 0) / max(n_docs, 1) + 1e-12:
                rep.fail(f"{task}: {key} mor {mv!r} vs lm_eval {lv!r}")
            se = f"{key}_stderr"
            ls, ms = _as_float(lm_res.get(se)), _as_float(mor_res.get(se))
            if key != "perplexity" and ls is not None and ms is not None and abs(ls - ms) > 1e-6 \
                    and tie_docs.get(key, 0) == 0:
                rep.fail(f"{task}: {se} mor {ms:.8g} vs lm_eval {ls:.8g}")
    return (f"parity {task}: {n_docs} docs, {n_req} requests, max |dll| {max_dll:.3g}, "
            f"scores mor=[{', '.join(mor_scores)}] lm_eval=[{', '.join(lm_scores)}]")


def compare(tasks, mor_results, mor_samples, lm_results, lm_samples, tol, hf=None, golden_dir=None,
            num_fewshot=None) -> Report:
    rep = Report()
    for t in tasks:
        golden = None
        if golden_dir is not None and num_fewshot is not None:
            gp = Path(golden_dir) / f"{t}.{num_fewshot}shot.jsonl"
            golden = read_jsonl(gp) if gp.is_file() else None
        line = compare_task(t, mor_results.get(t), mor_samples.get(t), lm_results[t], lm_samples[t], tol, rep, hf,
                            golden)
        print(line, flush=True)
    return rep


# ----------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mor", help="the mor binary (not needed with --mor-output)")
    ap.add_argument("--model", required=True, help="a vanilla mor bundle (also a Hugging Face model directory)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", required=True, help="comma-separated; mmlu expands to the mmlu_<subject> present")
    ap.add_argument("--num-fewshot", type=int, default=0)
    ap.add_argument("--out", required=True, help="work directory (created)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |ll difference| per request (default 1e-4)")
    ap.add_argument("--batch-size", type=int, default=3, help="mor eval --batch-size (default 3)")
    ap.add_argument("--hf-batch-size", type=int, default=4, help="lm_eval hf batch size (default 4)")
    ap.add_argument("--bootstrap-iters", type=int, default=1000,
                    help="lm_eval bootstrap iterations (perplexity stderr only; default 1000)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N documents of each task")
    ap.add_argument("--routing", choices=("causal", "topk"), help="passed to mor eval")
    ap.add_argument("--mor-output", help="compare this existing `mor eval --output` directory instead of running mor")
    ap.add_argument("--golden", help="also check lm_eval's requests against DIR/<task>.<k>shot.jsonl")
    args = ap.parse_args()
    if not args.mor and not args.mor_output:
        ap.error("--mor or --mor-output is required")

    work = Path(args.out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lm_eval_local.configure_offline(str(work / "cache"))
    os.environ.setdefault("DISABLE_MULTIPROC", "1")  # bootstrap stderr in-process, no worker pool
    os.environ.setdefault("TQDM_DISABLE", "1")
    args.data_dir = str(Path(args.data_dir).resolve())
    args.model = Path(args.model).resolve()
    try:
        tasks = lm_eval_local.expand_tasks(args.tasks, args.data_dir)
        for t in tasks:
            lm_eval_local.data_files(args.data_dir, t)
    except (ValueError, FileNotFoundError) as e:
        print(f"lm_eval_parity: {e}", file=sys.stderr)
        return 2
    try:
        import lm_eval  # noqa: F401
        import torch
    except ImportError as e:
        print(f"lm_eval_parity: {e}: install lm-eval[hf] into the virtualenv", file=sys.stderr)
        return 2
    torch.manual_seed(1234)

    try:
        make_hf_copy(args.model, work / "hf")
    except FileNotFoundError as e:
        print(f"lm_eval_parity: {e}", file=sys.stderr)
        return 2

    # mor first: its failure is the cheapest to report
    mor_dir = Path(args.mor_output).resolve() if args.mor_output else work / "mor"
    try:
        if not args.mor_output:
            run_mor(args, tasks, mor_dir)
        mor_results, mor_samples = load_mor_output(mor_dir, tasks)
    except RuntimeError as e:
        print(f"lm_eval_parity: {e}", file=sys.stderr)
        return 2

    logging.disable(logging.WARNING)
    hf = HFRun(args, tasks, work)
    lm_results, lm_samples = hf.normalized(tasks)
    lm_dir = work / "lm_eval"
    lm_dir.mkdir(exist_ok=True)
    (lm_dir / "results.json").write_text(json.dumps({"results": lm_results}, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    for t in tasks:
        write_jsonl(lm_dir / f"samples_{t}.jsonl", lm_samples[t])

    rep = compare(tasks, mor_results, mor_samples, lm_results, lm_samples, args.tol, hf, args.golden,
                  args.num_fewshot)
    for line in rep.near_ties:
        print(f"near-tie: {line}")
    for line in rep.notes[:40]:
        print(f"note: {line}")
    if len(rep.notes) > 40:
        print(f"note: ... {len(rep.notes) - 40} more")
    if rep.failures:
        print(f"lm_eval_parity: FAIL, {len(rep.failures)} mismatches (num_fewshot {args.num_fewshot}; "
              f"outputs in {mor_dir} and {lm_dir}):")
        for line in rep.failures[:100]:
            print(f"  {line}")
        if len(rep.failures) > 100:
            print(f"  ... {len(rep.failures) - 100} more")
        return 1
    print(f"lm_eval_parity: ok ({len(tasks)} tasks, num_fewshot {args.num_fewshot}, tol {args.tol:g}"
          f"{', ' + str(len(rep.near_ties)) + ' near-ties' if rep.near_ties else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
