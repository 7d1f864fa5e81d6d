"""``initwise.materialize`` of a 1.06B LLaMA-like model against Hugging Face's eager construction.

Each measurement runs in a fresh subprocess (so that peak memory is its own): wall time of

  initwise : ``LlamaForCausalLM(cfg)`` built under ``torch.device("meta")`` (not timed), then
             ``initwise.materialize(model, "auto", device="cpu", seed=0)``
  hf       : ``LlamaForCausalLM(cfg)`` built eagerly (allocation + Hugging Face's own init)
  torch    : meta build, then ``to_empty(device="cpu")`` and every module's ``reset_parameters``
             (plain torch, torch's global RNG; HF's ``_init_weights`` not run)

and the peak resident memory above the process's resident size before the timed step
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), as a ratio to the parameters' bytes.
Sharded: ``--world-sizes 2 4`` also runs meta -> ``fully_shard`` -> materialize on that many
gloo ranks (each rank ``cores // world_size`` threads, at least 1) and reports the slowest
rank's wall and CPU time. Prints ratios against HF's eager construction measured in the same
run, the machine's load average before and after, and one JSON line.

    python benchmarks/bench_materialize.py                 # the 1.06B model, 2 threads
    python benchmarks/bench_materialize.py --quick         # 2 layers, hidden 1024 (~0.2B)
    python benchmarks/bench_materialize.py --profile       # cProfile of one materialize
    python benchmarks/bench_materialize.py --first-touch 4.5 [--huge]  # the machine's page faults

``--first-touch GB`` measures what the machine charges for fresh memory, in a fresh process:
256 MiB float32 tensors allocated one after the other and held, each written once
(``fill_``), CPU ns per element for each (``--huge``: after ``madvise(MADV_HUGEPAGE)``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def config(quick: bool):  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig

    if quick:
        return LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                           num_attention_heads=16, num_key_value_heads=16, vocab_size=32000)
    return LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=18,
                       num_attention_heads=16, num_key_value_heads=16, vocab_size=32000)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _maxrss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(mode: str, quick: bool, threads: int, profile: str | None) -> dict[str, float]:
    """One measurement in this (fresh) process."""
    import torch
    from transformers import LlamaForCausalLM

    import initwise

    torch.set_num_threads(threads)
    cfg = config(quick)
    with torch.device("meta"):
        m = LlamaForCausalLM(cfg)
    nbytes = sum(p.numel() * p.element_size() for p in m.parameters())
    if mode == "hf":
        del m
    base = _rss()
    if _maxrss() > base + 64 * 2**20:  # imports peaked higher than where we are now
        base = _maxrss()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "initwise":
        if profile:
            import cProfile

            cProfile.runctx('initwise.materialize(m, "auto", device="cpu", seed=0)', globals(), locals(), profile)
        else:
            initwise.materialize(m, "auto", device="cpu", seed=0)
    elif mode == "hf":
        m = LlamaForCausalLM(cfg)
    else:
        m.to_empty(device="cpu")
        for mod in m.modules():
            if callable(getattr(mod, "reset_parameters", None)):
                mod.reset_parameters()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": wall, "cpu_s": cpu, "peak_over_params": (_maxrss() - base) / nbytes,
            "param_bytes": nbytes}  # fmt: skip


def sharded(rank: int, world_size: int, quick: bool, threads: int) -> dict[str, float]:
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM

    import initwise

    torch.set_num_threads(threads)
    mesh = init_device_mesh("cpu", (world_size,))
    with torch.device("meta"):
        m = LlamaForCausalLM(config(quick))
    for layer in m.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    local = sum(p.to_local().numel() * p.element_size() for p in m.parameters())
    base = _rss()
    t0, c0 = time.perf_counter(), time.process_time()
    initwise.materialize(m, "auto", device="cpu", seed=0)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "peak_over_local": (_maxrss() - base) / local}  # fmt: skip


def first_touch(gb: float, huge: bool) -> list[float]:
    """CPU ns per element to write each of a sequence of fresh, held 256 MiB tensors."""
    import ctypes

    import torch

    torch.set_num_threads(1)
    n = 1 << 26
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    keep, out = [], []
    for _ in range(max(1, int(gb * 2**30 / (4 * n)))):
        c0 = time.process_time()
        t = torch.empty(n)
        if huge:  # MADV_HUGEPAGE on the 2 MiB-aligned interior
            lo, hi = (t.data_ptr() + (1 << 21) - 1) >> 21 << 21, (t.data_ptr() + 4 * n) >> 21 << 21
            libc.madvise(lo, hi - lo, 14)
        t.fill_(1.0)
        out.append((time.process_time() - c0) * 1e9 / n)
        keep.append(t)
    return out


def run_child(mode: str, quick: bool, threads: int, profile: str | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", mode, "--threads", str(threads)]
    cmd += ["--quick"] if quick else []
    cmd += ["--profile-to", profile] if profile else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeat", type=int, default=2, help="runs per mode (best and all are printed)")
    ap.add_argument("--modes", nargs="+", default=["initwise", "hf", "torch"])
    ap.add_argument("--world-sizes", type=int, nargs="*", default=[])
    ap.add_argument("--profile", action="store_true", help="cProfile one materialize, print the top")
    ap.add_argument("--first-touch", type=float, metavar="GB", help="page-fault cost of GB of fresh memory")
    ap.add_argument("--huge", action="store_true", help="with --first-touch: MADV_HUGEPAGE")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_touch:
        if args.child:
            print(json.dumps(first_touch(args.first_touch, args.huge)))
            return
        cmd = [sys.executable, __file__, "--child", "first-touch", "--first-touch", str(args.first_touch)]
        out = subprocess.run(cmd + (["--huge"] if args.huge else []), capture_output=True, text=True, check=True)
        costs = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"first touch of 256 MiB tensors, held, {'2 MiB' if args.huge else '4 KiB'} pages "
              f"(CPU ns/element, in order; load {os.getloadavg()[0]:.2f}):")
        print(" ".join(f"{c:.1f}" for c in costs))
        return
    if args.child:
        print(json.dumps(child(args.child, args.quick, args.threads, args.profile_to)))
        return
    if args.profile:
        path = "/tmp/initwise_materialize.prof"
        print(run_child("initwise", args.quick, args.threads, path))
        import pstats

        pstats.Stats(path).sort_stats("cumulative").print_stats(40)
        pstats.Stats(path).sort_stats("tottime").print_stats(25)
        return
    load0 = os.getloadavg()
    res: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes}
    for _ in range(args.repeat):  # interleaved, so that load changes hit every mode alike
        for mode in args.modes:
            res[mode].append(run_child(mode, args.quick, args.threads))
    best = {m: min(r, key=lambda x: x["wall_s"]) for m, r in res.items()}
    nbytes = next(iter(best.values()))["param_bytes"]
    print(f"model: {nbytes / 4 / 1e9:.3f}B parameters, {nbytes / 1e9:.2f} GB fp32; {args.threads} thread(s); "
          f"load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    for mode, b in best.items():
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in res[mode])
        ratio = f" | hf/this {best['hf']['wall_s'] / b['wall_s']:.2f}x" if "hf" in best else ""
        print(f"{mode:9s}: best {b['wall_s']:.2f} s (runs: {walls}), cpu {b['cpu_s']:.2f} s, "
              f"peak {b['peak_over_params']:.3f}x the parameters{ratio}")
    rows = []
    if args.world_sizes:
        sys.path.insert(0, os.path.join(HERE, "..", "tests"))
        from _dist_helpers import run_ranks

        cores = os.cpu_count() or 1
        for ws in args.world_sizes:
            r = run_ranks(sharded, ws, args.quick, max(1, cores // ws), timeout=1800)
            row = {"world_size": ws, "wall_s": max(x["wall_s"] for x in r), "cpu_s": max(x["cpu_s"] for x in r),
                   "peak_over_local": max(x["peak_over_local"] for x in r)}  # fmt: skip
            rows.append(row)
            print(f"sharded ws={ws}: slowest rank {row['wall_s']:.2f} s wall, {row['cpu_s']:.2f} s cpu, "
                  f"peak {row['peak_over_local']:.3f}x its shard")
    print(json.dumps({"threads": args.threads, "load": [load0[0], os.getloadavg()[0]], "runs": res,
                      "sharded": rows}))


if __name__ == "__main__":
    main()
