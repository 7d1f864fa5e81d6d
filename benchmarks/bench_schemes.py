"""Benchmark: each initwise scheme against its torch.nn.init namesake, measured in the same run.

Prints, for 4096x4096 float32 (``--size`` to change), the median time of initwise and of torch
and their ratio (initwise / torch; < 1 is faster), then orthogonal_ on sizes 256-4096 (with a
torch generator: torch's algorithm, bitwise; with an initwise Key: reflectors without QR).
Target: no scheme slower than torch's by more than 5%.

    python benchmarks/bench_schemes.py [--size 4096] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
from collections.abc import Callable

import torch

import initwise

CASES: list[tuple[str, tuple, dict]] = [
    ("uniform_", (-0.1, 0.1), {}),
    ("normal_", (0.0, 0.02), {}),
    ("trunc_normal_", (0.0, 0.02, -0.04, 0.04), {}),
    ("constant_", (0.5,), {}),
    ("zeros_", (), {}),
    ("ones_", (), {}),
    ("eye_", (), {}),
    ("xavier_uniform_", (), {}),
    ("xavier_normal_", (), {}),
    ("kaiming_uniform_", (), {"a": math.sqrt(5)}),
    ("kaiming_normal_", (), {"nonlinearity": "relu"}),
    ("sparse_", (0.9,), {}),
]


def _time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median times of two callables, interleaved (ours, theirs, ours, ...) so that drifts in
    clock speed or background load hit both alike."""
    ours()
    theirs()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((ours, a), (theirs, b)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="1024x1024, 3 repeats")
    args = ap.parse_args()
    n, reps = (1024, 3) if args.quick else (args.size, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tensor {n}x{n} float32")
    print(f"{'scheme':<18}{'initwise ms':>12}{'torch ms':>10}{'ratio':>8}")
    t = torch.empty(n, n)
    worst = 0.0
    for name, a, kw in CASES:
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        ours_fn = getattr(initwise, name)
        theirs_fn = getattr(torch.nn.init, name)
        takes_gen = name not in ("constant_", "zeros_", "ones_", "eye_")
        ours_kw = {**kw, "generator": g1} if takes_gen else kw
        theirs_kw = {**kw, "generator": g2} if takes_gen else kw
        ours, theirs = _time_pair(functools.partial(ours_fn, t, *a, **ours_kw),
                                  functools.partial(theirs_fn, t, *a, **theirs_kw), reps)
        worst = max(worst, ours / theirs)
        print(f"{name:<18}{ours * 1e3:>12.2f}{theirs * 1e3:>10.2f}{ours / theirs:>8.2f}")
    print("\northogonal_ (float32); keyed: an initwise.random.Key as generator (Householder")
    print("reflectors without QR, the same Haar law), Q formed by initwise's own kernel below 1024")
    print("columns (method 'auto'), and by LAPACK's orgqr (method 'lapack', the previous values)")
    print(f"{'size':<8}{'initwise ms':>12}{'torch ms':>10}{'ratio':>8}{'keyed ms':>10}{'ratio':>8}"
          f"{'lapack ms':>11}{'keyed/lapack':>14}")  # fmt: skip
    for size in [64, 128, 256, 512, 1024] + ([] if args.quick else [2048, 4096]):
        m = torch.empty(size, size)
        r = 3 if size >= 2048 else reps * (4 if size <= 256 else 1)
        ours, theirs = _time_pair(
            functools.partial(initwise.orthogonal_, m, generator=torch.Generator().manual_seed(0)),
            functools.partial(torch.nn.init.orthogonal_, m, generator=torch.Generator().manual_seed(0)), r)
        keyed_fn = functools.partial(initwise.orthogonal_, m, generator=initwise.random.key(0, "w"))

        def lapack(fn: Callable[[], object] = keyed_fn) -> object:
            with initwise.random.use_orthogonal_method("lapack"):
                return fn()

        keyed, theirs2 = _time_pair(
            keyed_fn, functools.partial(torch.nn.init.orthogonal_, m, generator=torch.Generator().manual_seed(0)), r)
        keyed2, old = _time_pair(keyed_fn, lapack, r)
        if size >= 256:  # below, initwise's ~15-20 us of argument checks per call show
            worst = max(worst, ours / theirs)
        print(f"{size:<8}{ours * 1e3:>12.2f}{theirs * 1e3:>10.2f}{ours / theirs:>8.2f}"
              f"{keyed * 1e3:>10.2f}{keyed / theirs2:>8.2f}{old * 1e3:>11.2f}{keyed2 / old:>14.2f}")  # fmt: skip
    print(f"\nworst ratio {worst:.2f} (target <= 1.05)")


if __name__ == "__main__":
    main()
