#!/usr/bin/env python3
"""lm-evaluation-harness scoring a model THROUGH `mor serve` equals `mor eval` on the same bundle.

Starts `mor serve MODEL --port 0`, runs lm_eval's `local-completions` model (OpenAI completions
with echo + logprobs, tokenized requests, the bundle's tokenizer.json) on local fixture tasks
(tools/lm_eval_local.py), runs `mor eval MODEL` on the same files, and compares every request's
log-likelihood (|difference| <= --tol) and every task score (acc / acc_norm exactly, perplexity to
1e-5 relative). Works for any bundle, MoR included (lm_eval only talks HTTP). Exit code 0/1.

usage: lm_eval_serve_check.py --mor build/mor --model BUNDLE --data-dir DIR --tasks piqa,... --out WORK
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lm_eval_local  # noqa: E402


def start_server(mor: str, model: str, work: Path) -> tuple[subprocess.Popen, int]:
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([mor, "serve", model, "--port", "0", "--set", "engine.kv_memory_mb=64"],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        text = (work / "serve.log").read_text()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", text)
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError("mor serve exited: " + text)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mor serve did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mor", required=True)
    ap.add_argument("--model", required=True, help="bundle directory with tokenizer.json")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", default="piqa,arc_easy,lambada_openai")
    ap.add_argument("--num-fewshot", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    work = Path(args.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lm_eval_local.configure_offline(str(work / "cache"))
    tasks = args.tasks.split(",")

    # The bundle's tokenizer as a Hugging Face tokenizer directory (no BOS added).
    tok = work / "tokenizer"
    tok.mkdir()
    shutil.copy(Path(args.model) / "tokenizer.json", tok / "tokenizer.json")
    (tok / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
         "clean_up_tokenization_spaces": False}))

    subprocess.run([args.mor, "eval", args.model, "--tasks", ",".join(tasks), "--data-dir", args.data_dir,
                    "--num-fewshot", str(args.num_fewshot), "--log-samples", "--output", str(work / "mor"),
                    "--bootstrap-iters", "0", "--device", "cpu", "--dtype", "float32", "-q"],
                   check=True, stdout=subprocess.DEVNULL)

    proc, port = start_server(args.mor, args.model, work)
    try:
        import lm_eval
        lm_eval_local.write_task_yamls(args.data_dir, tasks, work / "yaml")
        tm = lm_eval_local.task_manager(args.data_dir, tasks, work / "yaml")
        res = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=(f"model=mor,base_url=http://127.0.0.1:{port}/v1/completions,tokenizer_backend=huggingface,"
                        f"tokenizer={tok},tokenized_requests=True,num_concurrent=4,max_retries=1"),
            tasks=tasks, task_manager=tm, num_fewshot=args.num_fewshot, log_samples=True,
            fewshot_random_seed=1234, bootstrap_iters=0)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)

    bad = []
    mor_results = json.loads((work / "mor" / "results.json").read_text())["results"]
    for task in tasks:
        mine = [json.loads(line) for line in (work / "mor" / f"samples_{task}.jsonl").read_text().splitlines()]
        theirs = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        if len(mine) != len(theirs):
            bad.append(f"{task}: {len(mine)} vs {len(theirs)} documents")
            continue
        worst = 0.0
        for a, b in zip(mine, theirs):
            lls_b = [(r[0][0] if isinstance(r[0], (list, tuple)) else r[0]) for r in b["resps"]]
            lls_a = [r[0] for r in a["resps"]]
            for x, y in zip(lls_a, lls_b):
                worst = max(worst, abs(x - y))
        if worst > args.tol:
            bad.append(f"{task}: max |dll| {worst:.3g} > {args.tol}")
        r_lm, r_mor = res["results"][task], mor_results[task]
        scores = []
        for metric in ("acc", "acc_norm", "perplexity"):
            if metric not in r_mor or f"{metric},none" not in r_lm:
                continue
            a, b = r_mor[metric], r_lm[f"{metric},none"]
            scores.append(f"{metric} mor={a:.6g} served={b:.6g}")
            same = abs(a - b) <= 1e-5 * abs(a) if metric == "perplexity" else a == b
            if not same:
                bad.append(f"{task}.{metric}: mor eval {a} vs lm_eval through mor serve {b}")
        print(f"served {task}: {len(mine)} docs, max |dll| {worst:.3g}, " + ", ".join(scores))
    if bad:
        print("lm_eval_serve_check: FAILED\n  " + "\n  ".join(bad))
        return 1
    print("lm_eval_serve_check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
