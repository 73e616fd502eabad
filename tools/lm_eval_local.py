#!/usr/bin/env python3
"""lm-evaluation-harness tasks that read local JSON Lines files instead of the Hugging Face Hub.

For each supported task the harness's own installed YAML is used unchanged (templates, process_docs,
splits, metrics, few-shot sampler, version); only the dataset location is overridden. A small YAML
per task is written into a directory:

    include: <site-packages>/lm_eval/tasks/hellaswag/hellaswag.yaml
    task: hellaswag
    dataset_path: json
    dataset_name: null
    dataset_kwargs: {data_files: {train: DATA/hellaswag/train.jsonl, validation: ...}}

and loaded with lm_eval.tasks.TaskManager(include_path=that directory, include_defaults=False), so
`!function` helpers keep resolving next to the installed YAML. The directory also works with the
lm_eval command line (`lm_eval --include_path DIR --tasks hellaswag ...`).

Data layout (the documented layout of `mor eval --data-dir`):

    lambada_openai/test.jsonl
    hellaswag/{train,validation}.jsonl
    piqa/{train,validation}.jsonl
    winogrande/{train,validation}.jsonl
    arc_easy/{train,validation,test}.jsonl
    arc_challenge/{train,validation,test}.jsonl
    openbookqa/{train,validation,test}.jsonl
    mmlu/{dev,test}/<subject>.jsonl          (task mmlu_<subject>)

Everything runs offline: call configure_offline() before anything imports `datasets`, `transformers`
or `lm_eval` (it sets HF_HUB_OFFLINE, HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE and points HF_HOME /
HF_DATASETS_CACHE at a private directory).

Usage as a script (prints the task YAML directory it wrote):
    lm_eval_local.py --data-dir DIR --out YAML_DIR [--tasks t1,t2,...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# task name -> (YAML path relative to lm_eval/tasks, data folder, splits that may be present)
_TASKS = {
    "lambada_openai": ("lambada/lambada_openai.yaml", "lambada_openai", ("test",)),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag", ("train", "validation")),
    "piqa": ("piqa/piqa.yaml", "piqa", ("train", "validation")),
    "winogrande": ("winogrande/default.yaml", "winogrande", ("train", "validation")),
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy", ("train", "validation", "test")),
    "arc_challenge": ("arc/arc_challenge.yaml", "arc_challenge", ("train", "validation", "test")),
    "openbookqa": ("openbookqa/openbookqa.yaml", "openbookqa", ("train", "validation", "test")),
}
MMLU_SPLITS = ("dev", "test")
DEFAULT_TASKS = ["lambada_openai", "hellaswag", "piqa", "winogrande", "arc_easy", "arc_challenge", "openbookqa"]


def configure_offline(cache_dir: str | None = None) -> str:
    """Sets the offline environment; returns the cache directory used. Call before importing datasets."""
    if cache_dir is None:
        cache_dir = tempfile.mkdtemp(prefix="lm_eval_local_")
    os.makedirs(cache_dir, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HOME"] = os.path.join(cache_dir, "hf_home")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(cache_dir, "datasets")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cache_dir


def _tasks_root() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).resolve().parent / "tasks"


def is_supported(task: str) -> bool:
    return task in _TASKS or (task.startswith("mmlu_") and len(task) > len("mmlu_"))


def installed_yaml(task: str) -> Path:
    """The installed harness YAML that defines `task`."""
    if task in _TASKS:
        rel = _TASKS[task][0]
    elif task.startswith("mmlu_"):
        rel = f"mmlu/default/{task}.yaml"
    else:
        raise KeyError(f"unsupported task {task!r}")
    path = _tasks_root() / rel
    if path.is_file():
        return path
    # a different harness layout: ask the full task index (slow, ~10 s)
    from lm_eval.tasks import TaskManager

    entry = TaskManager().task_index.get(task)
    if entry is None or entry.yaml_path is None:
        raise KeyError(f"the installed lm_eval has no task {task!r}")
    return Path(entry.yaml_path)


def data_files(data_dir: str | os.PathLike, task: str) -> dict[str, str]:
    """{split: absolute path} for the splits of `task` present under data_dir."""
    root = Path(data_dir).resolve()
    if task in _TASKS:
        folder, splits = _TASKS[task][1], _TASKS[task][2]
        files = {s: root / folder / f"{s}.jsonl" for s in splits}
    elif task.startswith("mmlu_"):
        subject = task[len("mmlu_"):]
        files = {s: root / "mmlu" / s / f"{subject}.jsonl" for s in MMLU_SPLITS}
    else:
        raise KeyError(f"unsupported task {task!r}")
    present = {s: str(p) for s, p in files.items() if p.is_file()}
    if not present:
        raise FileNotFoundError(f"{task}: no data files under {root} (expected e.g. {next(iter(files.values()))})")
    return present


def write_task_yamls(data_dir: str | os.PathLike, tasks: list[str], out_dir: str | os.PathLike) -> Path:
    """Writes one YAML per task into out_dir (include: installed YAML + local dataset); returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        cfg_lines = [
            f"include: {json.dumps(str(installed_yaml(task)))}",
            f"task: {json.dumps(task)}",
            "dataset_path: json",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
        ]
        for split, path in data_files(data_dir, task).items():
            cfg_lines.append(f"    {split}: {json.dumps(path)}")
        # JSON strings are valid YAML flow scalars, so paths with odd characters stay intact
        (out / f"{task}.yaml").write_text("\n".join(cfg_lines) + "\n", encoding="utf-8")
    return out


def task_manager(data_dir: str | os.PathLike, tasks: list[str], yaml_dir: str | os.PathLike):
    """A TaskManager that knows exactly `tasks`, each reading its local files."""
    from lm_eval.tasks import TaskManager

    write_task_yamls(data_dir, tasks, yaml_dir)
    return TaskManager(include_path=str(yaml_dir), include_defaults=False)


def load_tasks(data_dir: str | os.PathLike, tasks: list[str], yaml_dir: str | os.PathLike) -> dict:
    """{task name: ConfigurableTask} built from the installed configs and the local files."""
    return task_manager(data_dir, tasks, yaml_dir).load(list(tasks))["tasks"]


def expand_tasks(spec: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """Comma-separated task names; `mmlu` expands to every mmlu_<subject> present under data_dir."""
    out: list[str] = []
    for name in [t.strip() for t in spec.split(",") if t.strip()]:
        if name == "mmlu":
            if data_dir is None:
                raise ValueError("mmlu needs --data-dir to list its subjects")
            subjects = sorted(p.stem for p in (Path(data_dir) / "mmlu" / "test").glob("*.jsonl"))
            out += [f"mmlu_{s}" for s in subjects]
        elif is_supported(name):
            out.append(name)
        else:
            raise ValueError(f"unsupported task {name!r} (supported: {', '.join(DEFAULT_TASKS)}, mmlu, mmlu_<subject>)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True, help="directory for the task YAMLs")
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS + ["mmlu"]))
    args = ap.parse_args()
    configure_offline()
    tasks = expand_tasks(args.tasks, args.data_dir)
    print(write_task_yamls(args.data_dir, tasks, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
