#!/usr/bin/env python3
"""Checks a vanilla mor bundle against Hugging Face transformers' LlamaForCausalLM.

Usage: hf_parity.py BUNDLE LOGITS.safetensors [--tol 1e-4]

LOGITS.safetensors is what `mor model logits BUNDLE --tokens ... --out LOGITS.safetensors` wrote:
the F32 tensor "logits" [1, T, V] and the token ids in its metadata ("tokens"). This script loads
BUNDLE with LlamaForCausalLM in float32 (eager attention), runs the same ids and compares:
exit 0 when max |ours - transformers| <= tol (default 1e-4), else 1 (2 for usage errors).
"""
import argparse
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("logits")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs logit difference allowed (default 1e-4)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch
        import transformers
        from safetensors import safe_open
    except ImportError as e:
        print(f"hf_parity: {e}: install transformers into the virtualenv (tools/setup.sh does)", file=sys.stderr)
        return 2

    with safe_open(args.logits, framework="pt") as f:
        ours = f.get_tensor("logits").to(torch.float32)
        tokens_text = (f.metadata() or {}).get("tokens")
    if not tokens_text:
        print(f"hf_parity: {args.logits}: no 'tokens' metadata (write it with mor model logits --out)", file=sys.stderr)
        return 2
    ids = [int(x) for x in tokens_text.split(",")]

    transformers.utils.logging.disable_progress_bar()
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
    model = transformers.LlamaForCausalLM.from_pretrained(args.bundle, attn_implementation="eager", **dtype_kw)
    model.eval()
    with torch.no_grad():
        theirs = model(torch.tensor([ids], dtype=torch.long)).logits.to(torch.float32)
    if theirs.shape != ours.shape:
        print(f"hf_parity: FAIL shapes differ: transformers {tuple(theirs.shape)}, mor {tuple(ours.shape)}")
        return 1
    diff = (theirs - ours).abs().max().item()
    scale = theirs.abs().max().item()
    argmax_same = bool((theirs.argmax(-1) == ours.argmax(-1)).all())
    verdict = "ok" if diff <= args.tol else "FAIL"
    print(f"hf_parity: {verdict} max abs diff {diff:.3e} (tolerance {args.tol:g}; max |logit| {scale:.3g}) "
          f"over {len(ids)} tokens x {ours.shape[-1]} logits, transformers {transformers.__version__}; "
          f"argmax {'identical' if argmax_same else 'DIFFERS'}")
    return 0 if diff <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
