"""Benchmark whole-model init against torch's own default init, measured in the same run.

Each measurement runs in a fresh subprocess so that peak memory (``ru_maxrss``; tracemalloc does
not see torch's allocations) belongs to that measurement alone.

- GPT-2 small (d=768, 12 layers, vocab 50257, own module): (a) build with torch's defaults;
  (b) build on the meta device, ``to_empty`` on CPU, then ``initwise.init(model, "gpt2")``.
- LLaMA ~1B (HF LlamaConfig hidden 2048, 16 layers, intermediate 5504, vocab 32000): (a) build
  with torch's/Hugging Face's default init; (b) build on meta, ``initwise.materialize(model,
  "auto", device="cpu")``; (c) ``initwise.plan`` on the meta model (target: under a second).

Usage: ``python benchmarks/bench_init.py [--quick]``. Prints times, ratios and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import torch
from torch import nn
torch.set_num_threads(1)
kind, layers, d, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d); self.c_attn = nn.Linear(d, 3 * d); self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d); self.c_fc = nn.Linear(d, 4 * d); self.act = nn.GELU()
        self.mlp_proj = nn.Linear(4 * d, d)

class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(vocab, d); self.wpe = nn.Embedding(1024, d)
        self.h = nn.ModuleList(Block() for _ in range(layers)); self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False); self.lm_head.weight = self.wte.weight

out = {}
if kind == "torch":
    t = time.perf_counter(); m = GPT(); out["seconds"] = time.perf_counter() - t
elif kind == "initwise":
    import initwise as P
    with torch.device("meta"):
        m = GPT()
    t = time.perf_counter()
    m = m.to_empty(device="cpu")
    m.lm_head.weight = m.wte.weight
    P.init(m, "gpt2", seed=0)
    out["seconds"] = time.perf_counter() - t
elif kind in ("llama_torch", "llama_initwise"):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=d, num_hidden_layers=layers, intermediate_size=5504 if d == 2048 else 4 * d,
                      num_attention_heads=16, num_key_value_heads=16, vocab_size=vocab)
    if kind == "llama_torch":
        t = time.perf_counter(); m = LlamaForCausalLM(cfg); out["seconds"] = time.perf_counter() - t
    else:
        import initwise as P
        with torch.device("meta"):
            m = LlamaForCausalLM(cfg)
        t = time.perf_counter()
        P.materialize(m, "auto", device="cpu", seed=0)
        out["seconds"] = time.perf_counter() - t
    out["params"] = sum(p.numel() for p in m.parameters())
elif kind == "llama_plan":
    import initwise as P
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(hidden_size=d, num_hidden_layers=layers, intermediate_size=5504 if d == 2048 else 4 * d,
                      num_attention_heads=16, num_key_value_heads=16, vocab_size=vocab)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    out["params"] = sum(p.numel() for p in m.parameters())
    t = time.perf_counter(); p = P.plan(m, "auto"); out["seconds"] = time.perf_counter() - t
    out["entries"] = len(p)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(*args: object) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller models (seconds, for CI smoke runs)")
    a = ap.parse_args()
    layers, d, vocab = (2, 256, 8000) if a.quick else (12, 768, 50257)
    t0 = time.perf_counter()
    ref = run("torch", layers, d, vocab)
    ours = run("initwise", layers, d, vocab)
    print(f"GPT-2-like d={d} layers={layers} vocab={vocab}")
    print(f"  torch default init (construction): {ref['seconds']:.3f} s, peak RSS {ref['peak_rss_mb']:.0f} MB")
    print(f"  initwise.init (to_empty + init):  {ours['seconds']:.3f} s, peak RSS {ours['peak_rss_mb']:.0f} MB")
    print(f"  ratio initwise/torch: {ours['seconds'] / ref['seconds']:.2f}x time, "
          f"{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x peak RSS")
    ll_shape = (4, 512, 32000) if a.quick else (16, 2048, 32000)
    lt = run("llama_torch", *ll_shape)
    li = run("llama_initwise", *ll_shape)
    print(f"LLaMA-like ({lt['params'] / 1e9:.2f} B params)")
    print(f"  torch/HF default init (construction): {lt['seconds']:.3f} s, peak RSS {lt['peak_rss_mb']:.0f} MB")
    print(f"  initwise.materialize (meta -> cpu, auto): {li['seconds']:.3f} s, peak RSS {li['peak_rss_mb']:.0f} MB")
    print(f"  ratio initwise/torch: {li['seconds'] / lt['seconds']:.2f}x time, "
          f"{li['peak_rss_mb'] / lt['peak_rss_mb']:.2f}x peak RSS")
    ll = run("llama_plan", *ll_shape)
    print(f"LLaMA-like on meta ({ll['params'] / 1e9:.2f} B params, {ll['entries']} entries): "
          f"plan {ll['seconds']:.3f} s (target < 1 s), peak RSS {ll['peak_rss_mb']:.0f} MB")
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
