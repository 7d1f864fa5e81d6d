"""Benchmark ``initwise compare``: wall time of the default run and the cost of measuring.

1. Training steps per second of ``initwise.compare.train.train_one`` (loss read every step,
   per-layer grad norms every 10 steps, test evaluation per epoch) against a plain PyTorch loop
   (same model, data, batch order, optimizer; no measurement), interleaved, best of N repeats.
   Target: overhead <= 20%.
2. Wall time of the default ``initwise compare`` run, serial and with ``--jobs 2``, printed as
   a speedup ratio (target >= 1.7x on 2 free cores), and a check that both give the same
   numbers (skip with ``--no-default``; ``--keep DIR`` keeps the serial report).

Run: ``python benchmarks/bench_compare.py [--repeats 5] [--no-default] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch
from torch import nn

from initwise.compare.data import load_dataset
from initwise.compare.models import build_model
from initwise.compare.train import TrainConfig, train_one


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
               seed: int) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    gen = torch.Generator().manual_seed(seed)
    n, bs, steps = x.shape[0], cfg.batch_size, 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps


def bench_overhead(depth: int, width: int, repeats: int) -> tuple[float, float]:
    ds = load_dataset("digits", seed=0)
    cfg = TrainConfig(epochs=3, lr=0.005)
    best_plain = best_meas = float("inf")
    steps = 0
    for _ in range(repeats):
        torch.manual_seed(0)
        m = build_model("mlp", ds.in_shape, ds.n_classes, depth=depth, width=width)
        t0 = time.perf_counter()
        steps = plain_loop(m, ds.x_train, ds.y_train, cfg, seed=0)
        best_plain = min(best_plain, time.perf_counter() - t0)
        torch.manual_seed(0)
        m = build_model("mlp", ds.in_shape, ds.n_classes, depth=depth, width=width)
        t0 = time.perf_counter()
        r = train_one(m, ds, cfg, scheme="torch", depth=depth, seed=0)
        best_meas = min(best_meas, time.perf_counter() - t0)
        assert r.steps == steps
    return steps / best_plain, steps / best_meas


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-default", action="store_true", help="skip the default-run timing")
    ap.add_argument("--no-overhead", action="store_true", help="skip the overhead timing")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes to compare (2)")
    ap.add_argument("--keep", metavar="DIR", help="copy the serial run's report here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), cpu_count={os.cpu_count()}, "
          f"loadavg={os.getloadavg()[0]:.1f}")
    if not args.no_overhead:
        print(f"{'model':<24} {'plain steps/s':>14} {'measured steps/s':>17} {'overhead':>9}")
        for depth, width in ((5, 128), (30, 128)):
            plain, meas = bench_overhead(depth, width, args.repeats)
            print(f"{f'mlp depth {depth} width {width}':<24} {plain:>14.0f} {meas:>17.0f} "
                  f"{(plain / meas - 1) * 100:>8.1f}%")
    if not args.no_default:
        from initwise import cli

        walls, numbers = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for jobs in (1, args.jobs):
                out = os.path.join(tmp, f"jobs{jobs}")
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                rc = cli.main(["compare", "--quiet", "--jobs", str(jobs), "--out", out])
                walls[jobs] = time.perf_counter() - t0
                with open(os.path.join(out, "results.json")) as f:
                    runs = json.load(f)["runs"]
                numbers[jobs] = [{k: v for k, v in r.items() if k != "time_s"} for r in runs]
                print(f"default 'initwise compare --jobs {jobs}': {walls[jobs]:.1f} s wall "
                      f"(exit code {rc}), loadavg before {load:.1f}")
                if jobs == 1 and args.keep:
                    shutil.rmtree(args.keep, ignore_errors=True)
                    shutil.copytree(out, args.keep)
        same = numbers[1] == numbers[args.jobs]
        print(f"--jobs {args.jobs} vs serial: {walls[1] / walls[args.jobs]:.2f}x faster "
              f"(target >= 1.7x on 2 free cores); identical numbers: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
