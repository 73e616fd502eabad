#!/usr/bin/env python3
"""Plots the metrics.jsonl of one or more `mor train` runs to a PNG (and/or dumps them to CSV).

Usage:
  python3 tools/plot_metrics.py RUN_DIR_OR_METRICS_JSONL [more ...] --out plot.png
      [--x step|tokens|flops] [--metrics loss,val_loss,lr,grad_norm,tokens_per_s]
      [--log-y] [--title T] [--csv table.csv]

Each input is a run directory (its metrics.jsonl is read) or a metrics.jsonl file; several runs are
overlaid, labelled with their directory names. Only "train" and "val" records are used (other kinds,
such as "event", are ignored). A run that was killed can leave a truncated last line: it is skipped
with a warning. After a resume the same step can appear more than once: the last occurrence of each
(kind, step) wins.

Metric names for --metrics:
  loss          train lm_loss (or loss when lm_loss is absent) and val val_loss in one panel
  train_loss    the train "loss" field (language-model loss plus auxiliary losses)
  depth_hist    stacked fraction of tokens per recursion depth over training, one panel per run
  any other     a field of the train and/or val records (val_loss, val_ppl, lr, grad_norm, mfu, ...)
Default: loss, lr, grad_norm, tokens_per_s, plus depth_hist when any run records it.

Only --out needs matplotlib (Agg backend); --csv works with the standard library alone.
"""

import argparse
import bisect
import csv
import json
import math
import os
import sys

PROG = "plot_metrics"
KINDS = ("train", "val")
DEFAULT_METRICS = ["loss", "lr", "grad_norm", "tokens_per_s"]
# Column order of the CSV (those present in some record are written, then any other scalar fields).
KNOWN_FIELDS = ["tokens", "flops", "time_s", "loss", "lm_loss", "aux_loss", "grad_norm", "lr",
                "tokens_per_s", "mfu", "mem_mb", "router_accuracy", "balance_entropy", "skipped",
                "val_loss", "val_ppl"]
X_LABELS = {"step": "step", "tokens": "tokens", "flops": "FLOPs"}


class UserError(Exception):
    """A problem with the inputs or arguments: reported as one line on stderr, exit code 1."""


def warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------------------------
# Reading


class Run:
    """The train and val records of one run, each a list of dicts sorted by step."""

    def __init__(self, label, path, train, val):
        self.label = label
        self.path = path
        self.train = train
        self.val = val

    def records(self, kind):
        return self.train if kind == "train" else self.val


def resolve_input(arg):
    """Returns (metrics.jsonl path, run label) for a run directory or a metrics file."""
    if os.path.isdir(arg):
        path = os.path.join(arg, "metrics.jsonl")
        if not os.path.isfile(path):
            raise UserError(f"no metrics.jsonl in run directory {arg}")
        run_dir = arg
    elif os.path.isfile(arg):
        path = arg
        run_dir = os.path.dirname(os.path.abspath(arg))
    else:
        raise UserError(f"no such file or directory: {arg}")
    label = os.path.basename(os.path.normpath(os.path.abspath(run_dir))) or run_dir
    return path, label


def read_metrics(path):
    """Parses a metrics.jsonl file into {kind: {step: record}} for the train and val kinds."""
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None

    numbered = [(i + 1, line) for i, line in enumerate(raw_lines) if line.strip()]
    by_kind = {kind: {} for kind in KINDS}
    for index, (lineno, line) in enumerate(numbered):
        last = index == len(numbered) - 1
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            if last:
                warn(f"{path}:{lineno}: skipping the unparsable last line (truncated by a killed run?)")
                continue
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise UserError(f"{path}:{lineno}: invalid JSON: {reason}") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object")
        kind = record.get("kind")
        if kind not in KINDS:
            continue  # "event" and any future kinds
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise UserError(f'{path}:{lineno}: "{kind}" record without an integer "step"')
        by_kind[kind][step] = record  # the last occurrence wins (resumed runs repeat steps)
    return by_kind


def load_runs(inputs):
    resolved = [resolve_input(arg) for arg in inputs]  # report any missing input before parsing
    labels = [label for _, label in resolved]
    runs = []
    for (path, label), arg in zip(resolved, inputs):
        if labels.count(label) > 1:  # two runs named alike in different places: show the paths
            label = os.path.normpath(arg)
        by_kind = read_metrics(path)
        train = [by_kind["train"][s] for s in sorted(by_kind["train"])]
        val = [by_kind["val"][s] for s in sorted(by_kind["val"])]
        runs.append(Run(label, path, train, val))
    empty = [run.path for run in runs if not run.train and not run.val]
    if len(empty) == len(runs):
        raise UserError("no train or val records in " + ", ".join(empty))
    for path in empty:
        warn(f"{path}: no train or val records")
    return runs


# ----------------------------------------------------------------------------------------------
# CSV


def csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form
    return str(value)


def write_csv(runs, out):
    present, extra, depths = set(), [], 0
    for run in runs:
        for kind in KINDS:
            for record in run.records(kind):
                for key, value in record.items():
                    if key in ("kind", "step"):
                        continue
                    if key == "depth_hist":
                        if isinstance(value, list):
                            depths = max(depths, len(value))
                        continue
                    if isinstance(value, (dict, list)):
                        continue
                    present.add(key)
                    if key not in KNOWN_FIELDS and key not in extra:
                        extra.append(key)
    fields = [f for f in KNOWN_FIELDS if f in present] + extra
    depth_cols = [f"depth_{d + 1}" for d in range(depths)]
    try:
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["run", "kind", "step"] + fields + depth_cols)
            for run in runs:
                for kind in KINDS:
                    for record in run.records(kind):
                        row = [run.label, kind, record["step"]]
                        row += [csv_value(record.get(f)) for f in fields]
                        hist = record.get("depth_hist")
                        hist = hist if isinstance(hist, list) else []
                        row += [csv_value(hist[d]) if d < len(hist) else "" for d in range(depths)]
                        writer.writerow(row)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None


# ----------------------------------------------------------------------------------------------
# Plotting


def import_matplotlib():
    """Returns pyplot with the Agg backend, or raises UserError-like exit when not installed."""
    try:
        import matplotlib
    except ImportError:
        if sys.prefix != sys.base_prefix:
            venv = sys.prefix
        else:
            venv = os.environ.get("MOR_VENV") or os.path.expanduser("~/.local/share/mor/venv")
        print(f"{PROG}: matplotlib is not installed; run: {venv}/bin/pip install matplotlib",
              file=sys.stderr)
        sys.exit(1)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    return plt, ticker


def x_getter(run, x_field):
    """Returns f(record) -> x value or None. Records lacking the x field (val records have no
    "flops") get it interpolated over step from the run's train records."""
    if x_field == "step":
        return lambda record: record["step"]
    ref_steps, ref_x = [], []
    for record in run.train:
        value = record.get(x_field)
        if is_number(value):
            ref_steps.append(record["step"])
            ref_x.append(float(value))

    def get(record):
        value = record.get(x_field)
        if is_number(value):
            return value
        if not ref_steps:
            return None
        step = record["step"]
        i = bisect.bisect_left(ref_steps, step)
        if i < len(ref_steps) and ref_steps[i] == step:
            return ref_x[i]
        if len(ref_steps) == 1:
            return None
        i = min(max(i, 1), len(ref_steps) - 1)  # interpolate, or extrapolate from the end segment
        s0, s1, x0, x1 = ref_steps[i - 1], ref_steps[i], ref_x[i - 1], ref_x[i]
        return x0 + (x1 - x0) * (step - s0) / (s1 - s0)

    return get


def series(run, kind, field, get_x):
    xs, ys = [], []
    for record in run.records(kind):
        y = record.get(field)
        if not is_number(y):
            continue
        x = get_x(record)
        if x is None:
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def has_field(runs, kind, field):
    return any(is_number(r.get(field)) for run in runs for r in run.records(kind))


def has_depth_hist(run):
    return any(isinstance(r.get("depth_hist"), list) and r["depth_hist"] for r in run.train)


def line_panel(runs, name):
    """Returns (title, [(kind, field, style)]) for a line panel, or None when no run has the data."""
    if name == "loss":
        lines = []
        if has_field(runs, "train", "lm_loss"):
            lines.append(("train", "lm_loss", "train"))
        elif has_field(runs, "train", "loss"):
            lines.append(("train", "loss", "train"))
        if has_field(runs, "val", "val_loss"):
            lines.append(("val", "val_loss", "val"))
        return ("loss", lines) if lines else None
    if name == "train_loss":
        return ("train loss (incl. aux)", [("train", "loss", "train")]) \
            if has_field(runs, "train", "loss") else None
    lines = [(kind, name, kind) for kind in KINDS if has_field(runs, kind, name)]
    return (name, lines) if lines else None


def plan_panels(runs, requested):
    """Returns a list of ("line", title, lines) and ("depth", run) panels for the requested metrics
    (None: the defaults, leaving out those no run records)."""
    explicit = requested is not None
    metrics = requested if explicit else DEFAULT_METRICS + ["depth_hist"]
    panels = []
    for name in metrics:
        if name == "depth_hist":
            depth_runs = [run for run in runs if has_depth_hist(run)]
            if not depth_runs and explicit:
                raise UserError("no run records depth_hist")
            panels += [("depth", run) for run in depth_runs]
            continue
        panel = line_panel(runs, name)
        if panel is None:
            if explicit:
                raise UserError(f"no run records the metric {name!r} "
                                f"(available: {', '.join(available_metrics(runs))})")
            continue
        panels.append(("line",) + panel)
    if not panels:
        raise UserError("nothing to plot: none of the metrics is recorded")
    return panels


def available_metrics(runs):
    names = {"loss"} if has_field(runs, "train", "lm_loss") or has_field(runs, "val", "val_loss") \
        else set()
    if has_field(runs, "train", "loss"):
        names.add("train_loss")
    for run in runs:
        if has_depth_hist(run):
            names.add("depth_hist")
        for kind in KINDS:
            for record in run.records(kind):
                names.update(k for k, v in record.items() if is_number(v) and k != "step")
    return sorted(names)


def plot(runs, panels, args):
    plt, ticker = import_matplotlib()

    n = len(panels)
    ncols = 1 if n == 1 else (2 if n <= 6 else 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 3.8 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    color_of = {id(run): colors[i % len(colors)] for i, run in enumerate(runs)}
    getters = {id(run): x_getter(run, args.x) for run in runs}
    several = len(runs) > 1

    for ax, panel in zip(axes.flat, panels):
        if panel[0] == "line":
            _, title, lines = panel
            kinds_in_panel = {kind for kind, _, _ in lines}
            positive = False
            for run in runs:
                for kind, field, style in lines:
                    xs, ys = series(run, kind, field, getters[id(run)])
                    if not xs:
                        continue
                    positive = positive or any(y > 0 for y in ys)
                    parts = ([run.label] if several else []) + \
                        ([style] if len(kinds_in_panel) > 1 or kind == "val" else [])
                    label = " ".join(parts) or None
                    if kind == "val":
                        ax.plot(xs, ys, color=color_of[id(run)], linestyle="--", marker="o",
                                markersize=3, linewidth=1.2, label=label)
                    else:
                        ax.plot(xs, ys, color=color_of[id(run)], linewidth=1.2, label=label)
            ax.set_title(title)
            if args.log_y and positive:
                ax.set_yscale("log")
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize="small")
        else:
            run = panel[1]
            get_x = getters[id(run)]
            points = []
            for record in run.train:
                hist = record.get("depth_hist")
                x = get_x(record)
                if isinstance(hist, list) and hist and x is not None:
                    points.append((x, [v if is_number(v) else 0.0 for v in hist]))
            depths = max(len(h) for _, h in points)
            xs = [x for x, _ in points]
            ys = [[h[d] if d < len(h) else 0.0 for _, h in points] for d in range(depths)]
            ax.stackplot(xs, ys, labels=[f"depth {d + 1}" for d in range(depths)], alpha=0.85)
            ax.set_ylim(0, 1)
            ax.set_title("depth histogram" + (f": {run.label}" if several else ""))
            ax.set_ylabel("fraction of tokens")
            ax.legend(fontsize="small", loc="upper right")
        ax.set_xlabel(X_LABELS[args.x])
        if args.x == "step":
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        else:
            ax.xaxis.set_major_formatter(ticker.EngFormatter())
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.remove()

    title = args.title if args.title is not None else (runs[0].label if not several else None)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(args.out, format="png", dpi=100)
    except OSError as e:
        raise UserError(f"cannot write {args.out}: {e.strerror}") from None
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit code 1, like the other tools
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(1)


def parse_args(argv):
    parser = Parser(prog="plot_metrics.py", description=__doc__.split("\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_METRICS_JSONL")
    parser.add_argument("--out", help="PNG file to write (needs matplotlib)")
    parser.add_argument("--csv", help="CSV file to write with the merged records of every run")
    parser.add_argument("--x", choices=["step", "tokens", "flops"], default="step",
                        help="x axis (default: step)")
    parser.add_argument("--metrics", help="comma-separated metrics, one panel each "
                        "(default: loss,lr,grad_norm,tokens_per_s[,depth_hist])")
    parser.add_argument("--log-y", action="store_true", help="logarithmic y axis on line panels")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    if args.out is None and args.csv is None:
        parser.error("nothing to do: give --out PLOT.png and/or --csv TABLE.csv")
    if args.metrics is not None:
        args.metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not args.metrics:
            parser.error("--metrics is empty")
    return args


def main(argv):
    args = parse_args(argv)
    if args.out is not None:
        import_matplotlib()  # fail before writing anything
    try:
        runs = load_runs(args.inputs)
        panels = plan_panels(runs, args.metrics) if args.out is not None else None
        if args.csv is not None:
            write_csv(runs, args.csv)
        if panels is not None:
            plot(runs, panels, args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
