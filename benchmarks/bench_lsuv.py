"""Benchmark initwise.lsuv against the ``lsuv`` package (PyPI 0.3.0) on the same models and batch.

Measures, for each model: wall time, full forward passes (a pre-hook on the root module) and the
final std error ``max |std - 1|`` over the weighted layers, measured by an independent fresh
forward pass with ``torch.std``. Prints ratios (reference / initwise). Run:

    python benchmarks/bench_lsuv.py [--threads 1] [--repeats 3] [--min-time 1.0] [--batch 256]

Both libraries run in the same process, on deep copies of the same freshly built model, with the
same number of torch threads. The reference is run with its default tolerance (0.1) and with
initwise's (0.01).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from initwise import lsuv

WEIGHTED = (nn.Linear, nn.Conv2d)


def mlp(depth: int = 50, width: int = 256) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(width, width)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)


def cnn(depth: int = 20, channels: int = 32) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1)]
    for _ in range(depth - 1):
        layers += [nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)]
    return nn.Sequential(*layers)


def std_error(model: nn.Module, x: torch.Tensor) -> float:
    stds: list[float] = []
    hooks = [m.register_forward_hook(lambda m, i, o: stds.append(float(o.double().std())))
             for m in model.modules() if isinstance(m, WEIGHTED)]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return max(abs(s - 1.0) for s in stds)


def timed(fn: Callable[[nn.Module], Any], model: nn.Module) -> tuple[float, int]:
    calls = [0]
    h = model.register_forward_pre_hook(lambda m, i: calls.__setitem__(0, calls[0] + 1))
    t0 = time.perf_counter()
    fn(model)
    dt = time.perf_counter() - t0
    h.remove()
    return dt, calls[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="best of at least N wall times")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="repeat each method until this many seconds are spent (max 25 runs)")
    ap.add_argument("--batch", type=int, default=256,
                    help="MLP batch size (the pre-init QR cost is fixed; passes scale with it)")
    opts = ap.parse_args()
    torch.set_num_threads(opts.threads)
    import lsuv as ref_pkg  # the peer

    cases = {
        f"MLP 50x256, batch {opts.batch}": (
            mlp, torch.randn(opts.batch, 256, generator=torch.Generator().manual_seed(0))),
        "CNN 20x32ch, 3x32x32, batch 32": (
            cnn, torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))),
    }  # fmt: skip
    peers: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
        "initwise.lsuv (tol 0.01)": lambda m, x: lsuv(m, x, tol=0.01),
        "lsuv 0.3.0 (std_tol 0.1)": lambda m, x: ref_pkg.lsuv_with_singlebatch(m, x, verbose=False),
        "lsuv 0.3.0 (std_tol 0.01)": lambda m, x: ref_pkg.lsuv_with_singlebatch(
            m, x, std_tol=0.01, verbose=False),
        # Calibration only (no orthogonal pre-init, same starting weights): the QR of the
        # pre-init is a fixed cost both pay; this isolates the passes.
        "initwise.lsuv, no pre-init": lambda m, x: lsuv(m, x, orthogonal_first=False),
        "lsuv 0.3.0, no pre-init": lambda m, x: ref_pkg.lsuv_with_singlebatch(
            m, x, std_tol=0.01, do_orthonorm=False, verbose=False),
    }  # fmt: skip
    pairs = [("initwise.lsuv (tol 0.01)", "lsuv 0.3.0 (std_tol 0.1)"),
             ("initwise.lsuv (tol 0.01)", "lsuv 0.3.0 (std_tol 0.01)"),
             ("initwise.lsuv, no pre-init", "lsuv 0.3.0, no pre-init")]  # fmt: skip
    print(f"torch {torch.__version__}, {opts.threads} thread(s), {platform.processor() or platform.machine()}")
    for case, (build, x) in cases.items():
        torch.manual_seed(0)
        base = build()
        print(f"\n{case}")
        print(f"  {'method':28s} {'time [s]':>9s} {'fwd passes':>10s} {'max|std-1|':>11s}")
        results = {}
        for name, fn in peers.items():
            # best of at least --repeats runs, and of as many as fit in --min-time seconds (up
            # to 25): a 0.1 s run is disturbed by a hiccup that a 2 s run averages out
            best, spent, runs = float("inf"), 0.0, 0
            while runs < opts.repeats or (spent < opts.min_time and runs < 25):
                model = copy.deepcopy(base)
                dt, passes = timed(lambda m, fn=fn, x=x: fn(m, x), model)
                best, spent, runs = min(best, dt), spent + dt, runs + 1
            err = std_error(model, x)
            results[name] = (best, passes, err)
            print(f"  {name:28s} {best:9.3f} {passes:10d} {err:11.2e}   (best of {runs})")
        for mine, peer in pairs:
            (t0, p0, e0), (t, p, e) = results[mine], results[peer]
            print(f"  {mine} vs {peer}: {t / t0:.1f}x faster, {p / p0:.1f}x fewer passes, "
                  f"peer's std error / ours = {e / max(e0, 1e-12):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
