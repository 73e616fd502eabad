#!/usr/bin/env python3
"""Golden loglikelihood requests from lm-evaluation-harness, built without a model.

Usage: lm_eval_requests.py --data-dir DIR --out DIR [--tasks t1,t2,...] [--seed 1234]

For each task (default: lambada_openai, hellaswag, piqa, winogrande, arc_easy, arc_challenge,
openbookqa and every mmlu_<subject> under DIR/mmlu/test) and each few-shot count in {0, 3}
({0, 5} for mmlu_<subject>), this runs lm_eval.simple_evaluate itself, with the tasks of
tools/lm_eval_local.py (the harness's installed configs reading DIR) and fewshot_random_seed 1234,
on a stand-in model that records the requests it is asked for and answers (0.0, False). So the
seeding, the num_fewshot override and build_all_requests (all documents, rank 0 of 1) are the
harness's own code path. It writes OUT/<task>.<k>shot.jsonl, one line per request in document order
then choice order:

    {"doc_id": 0, "idx": 0, "context": "...", "continuation": " ..."}
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lm_eval_local  # noqa: E402


def shot_counts(task: str) -> tuple[int, int]:
    return (0, 5) if task.startswith("mmlu_") else (0, 3)


def recording_lm():
    from lm_eval.api.model import LM

    class RecordingLM(LM):
        """Answers every loglikelihood request with (0.0, False) and keeps the requests."""

        def __init__(self) -> None:
            super().__init__()
            self.requests = []

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            self.requests.extend(requests)
            return [(0.0, False) for _ in requests]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("no loglikelihood_rolling task is supported")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("no generate_until task is supported")

    return RecordingLM()


def build_requests(data_dir: str, tasks: list[str], num_fewshot: int, workdir: str, seed: int = 1234) -> dict:
    """{task: [(doc_id, idx, context, continuation), ...]} exactly as simple_evaluate builds them."""
    import lm_eval

    lm = recording_lm()
    tm = lm_eval_local.task_manager(data_dir, tasks, os.path.join(workdir, f"tasks-{num_fewshot}shot"))
    lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        fewshot_random_seed=seed,
        task_manager=tm,
        bootstrap_iters=0,
        log_samples=False,
        cache_requests=False,
    )
    out: dict[str, list] = {t: [] for t in tasks}
    for inst in lm.requests:
        context, continuation = inst.args
        out[inst.task_name].append((inst.doc_id, inst.idx, context, continuation))
    for t in out:
        out[t].sort(key=lambda r: (r[0], r[1]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=",".join(lm_eval_local.DEFAULT_TASKS + ["mmlu"]))
    ap.add_argument("--seed", type=int, default=1234, help="fewshot_random_seed (default 1234)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="lm_eval_requests_")
    lm_eval_local.configure_offline(os.path.join(work, "cache"))
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.disable(logging.WARNING)  # the harness warns about every override; keep the output readable
    tasks = lm_eval_local.expand_tasks(args.tasks, args.data_dir)
    os.makedirs(args.out, exist_ok=True)

    by_shots: dict[int, list[str]] = {}
    for t in tasks:
        for k in shot_counts(t):
            by_shots.setdefault(k, []).append(t)
    for k, ts in sorted(by_shots.items()):
        reqs = build_requests(args.data_dir, ts, k, work, args.seed)
        for t in ts:
            path = os.path.join(args.out, f"{t}.{k}shot.jsonl")
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                for doc_id, idx, ctx, cont in reqs[t]:
                    f.write(json.dumps({"doc_id": doc_id, "idx": idx, "context": ctx, "continuation": cont},
                                       ensure_ascii=False) + "\n")
            ndocs = len({r[0] for r in reqs[t]})
            print(f"{path}: {ndocs} docs, {len(reqs[t])} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
