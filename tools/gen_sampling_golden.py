#!/usr/bin/env python3
"""Writes tests/fixtures/engine/sampling_golden.json: reference values for mor::engine sampling,
computed with torch (log_softmax in float64) and numpy (top-k / top-p filtering), independently of
the C++ code. tests/unit/engine_sampling_test.cpp checks token_logprobs() against "logprobs" and
the Sampler's empirical distribution and support against "filters".

Run with the project's Python (numpy and torch installed there):
  /root/.local/share/mor/venv/bin/python tools/gen_sampling_golden.py

Non-finite logits are written as the strings "-inf", "inf" and "nan".
"""
import json
import math
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "engine", "sampling_golden.json")


def encode(values):
    out = []
    for v in values:
        v = float(v)
        if math.isnan(v):
            out.append("nan")
        elif math.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(v)
    return out


def f32(values):
    return np.asarray(values, dtype=np.float32)


def filtered_probs(logits, temperature, top_k, top_p):
    """softmax(logits / T) restricted to top-k and the top-p nucleus, renormalized (numpy)."""
    x = logits.astype(np.float64)
    finite = np.isfinite(x)
    x = np.where(finite, x, -np.inf)
    ids = np.flatnonzero(finite)
    # top-k on the logits, ties by lower id (stable sort of -x)
    if top_k > 0 and top_k < len(ids):
        order = ids[np.argsort(-x[ids], kind="stable")]
        ids = np.sort(order[:top_k])
    z = x[ids] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")  # descending probability, ties by lower id
        cum = np.cumsum(p[order])
        n = int(np.searchsorted(cum, top_p, side="left")) + 1
        n = min(n, len(order))
        keep = np.sort(order[:n])
        ids, p = ids[keep], p[keep] / p[keep].sum()
    probs = np.zeros(len(logits))
    probs[ids] = p
    return probs


def main():
    rng = np.random.default_rng(20240611)
    six = f32([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    ties = f32([1.0, 1.0, 1.0, 1.0])
    holes = f32([0.5, -np.inf, 1.5, np.nan, 1.0, np.inf, -0.25])
    wide = f32(rng.normal(0.0, 2.0, 32))
    filters = []
    for logits, settings in [
        (six, [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 4, 1.0), (1.0, 0, 0.8), (0.8, 5, 0.9),
               (2.0, 3, 0.95), (0.5, 2, 1.0), (1.0, 1, 1.0)]),
        (ties, [(1.0, 0, 0.5), (1.0, 0, 0.75), (1.0, 0, 0.5000001), (1.0, 2, 1.0)]),
        (holes, [(1.0, 0, 1.0), (1.0, 2, 1.0), (1.5, 0, 0.6)]),
        (wide, [(0.9, 10, 0.7), (1.2, 0, 0.5), (1.0, 16, 1.0)]),
    ]:
        for temperature, top_k, top_p in settings:
            probs = filtered_probs(logits, temperature, top_k, top_p)
            filters.append({"logits": encode(logits), "temperature": temperature, "top_k": top_k,
                            "top_p": top_p, "probs": probs.tolist()})

    logprobs = []
    for logits in [six, ties, holes, wide, f32(rng.normal(0.0, 8.0, 64)),
                   f32(rng.normal(30.0, 5.0, 20)), f32([-1e4, 3e4, 2.9999e4, 0.0])]:
        t = torch.tensor(logits.astype(np.float64))
        t = torch.where(torch.isfinite(t), t, torch.tensor(-math.inf, dtype=torch.float64))
        logprobs.append({"logits": encode(logits),
                         "log_softmax": encode(torch.log_softmax(t, dim=0).tolist())})

    with open(OUT, "w") as f:
        json.dump({"filters": filters, "logprobs": logprobs}, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}: {len(filters)} filter cases, {len(logprobs)} logprob cases")


if __name__ == "__main__":
    main()
