"""Sharded init vs build-then-shard, and meta materialize vs eager construction (LLaMA-like).

Per rank (gloo, local processes): wall time and peak RSS increase of
  initwise : build on meta -> fully_shard -> initwise.distributed.materialize (own shard only)
  torch    : build the full model with torch's default init -> fully_shard
and, in one process, materialize from meta vs eager construction + initwise.init.
Prints ratios torch / initwise. ``--quick`` uses 2 layers and hidden 1024 (fits small machines);
the default is the ~1B model of the task (hidden 2048, 16 layers, intermediate 5504, vocab 32000:
~4.4 GB per full fp32 copy; world size 4 of the torch baseline needs ~18 GB of RAM).

    python benchmarks/bench_distributed.py --quick --world-sizes 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def _cfg(quick: bool):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    if quick:
        return LlamaConfig(hidden_size=1024, intermediate_size=2752, num_hidden_layers=2,
                           num_attention_heads=16, num_key_value_heads=16, vocab_size=32000)
    return LlamaConfig(hidden_size=2048, intermediate_size=5504, num_hidden_layers=16,
                       num_attention_heads=16, num_key_value_heads=16, vocab_size=32000)


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def _measure(fn) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss("VmRSS:")
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t, _rss("VmHWM:") - base


def worker(rank: int, world_size: int, quick: bool, mode: str) -> dict[str, float]:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM

    from initwise.distributed import materialize

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    cfg = _cfg(quick)
    mesh = init_device_mesh("cpu", (world_size,))

    def shard(m):  # type: ignore[no-untyped-def]
        for layer in m.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        return m

    if mode == "initwise":
        def run() -> None:
            with torch.device("meta"):
                m = shard(LlamaForCausalLM(cfg))
            materialize(m, "auto", device="cpu", seed=0)
    else:
        def run() -> None:
            shard(LlamaForCausalLM(cfg))
    t, peak = _measure(run)
    return {"time_s": t, "peak_bytes": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    import torch
    from transformers import LlamaForCausalLM

    from _dist_helpers import run_ranks
    from initwise import init, materialize

    cfg = _cfg(args.quick)
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    print(f"model: {n / 1e6:.0f}M parameters, {n * 4 / 2**30:.2f} GiB fp32")
    rows = []
    for ws in args.world_sizes:
        res = {mode: run_ranks(worker, ws, args.quick, mode, timeout=3600) for mode in ("initwise", "torch")}
        iw = max(r["time_s"] for r in res["initwise"]), max(r["peak_bytes"] for r in res["initwise"])
        tc = max(r["time_s"] for r in res["torch"]), max(r["peak_bytes"] for r in res["torch"])
        rows.append({"world_size": ws, "initwise_s": iw[0], "initwise_peak_GiB": iw[1] / 2**30,
                     "torch_s": tc[0], "torch_peak_GiB": tc[1] / 2**30})
        print(f"ws={ws}: sharded init {iw[0]:.2f} s, peak {iw[1] / 2**30:.2f} GiB/rank | build full + "
              f"fully_shard {tc[0]:.2f} s, peak {tc[1] / 2**30:.2f} GiB/rank | time ratio torch/initwise "
              f"{tc[0] / iw[0]:.2f}, memory ratio {tc[1] / max(iw[1], 1):.2f}")

    def mat() -> None:
        with torch.device("meta"):
            m = LlamaForCausalLM(cfg)
        materialize(m, "auto", device="cpu", seed=0)

    def eager() -> None:
        init(LlamaForCausalLM(cfg), "auto", seed=0)

    tm, pm = _measure(mat)
    te, pe = _measure(eager)
    print(f"single process: materialize from meta {tm:.2f} s, peak {pm / 2**30:.2f} GiB | eager build + "
          f"init {te:.2f} s, peak {pe / 2**30:.2f} GiB | ratios eager/materialize: time {te / tm:.2f}, "
          f"memory {pe / max(pm, 1):.2f}")
    print(json.dumps({"params": n, "sharded": rows, "materialize_s": tm, "eager_s": te,
                      "materialize_peak": pm, "eager_peak": pe}))


if __name__ == "__main__":
    main()
