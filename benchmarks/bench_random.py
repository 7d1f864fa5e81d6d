"""Throughput of initwise.random against torch's CPU generator, measured in the same run.

Prints GB/s of float32 output for uniform, normal and truncated normal at 64M and 256M
elements (``--quick``: 4M and 16M), with one thread and with all threads, beside
``torch.Tensor.uniform_`` / ``normal_``, ``torch.nn.init.trunc_normal_`` and the memory fill
bandwidth (``fill_``), and the ratios. A script, not a test::

    python benchmarks/bench_random.py --quick [--reps 9] [--cpu-time] [--baseline OLD.so]

``--baseline`` times another build of the extension (e.g. the ``_native*.so`` of an earlier
commit) in the same run, interleaved with the current one, and prints current / baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time
from collections.abc import Callable, Iterator
from types import ModuleType

import torch

from initwise import random as iwr
from initwise.random import _engine

_CLOCK = [time.perf_counter]
_BASELINE: list[ModuleType] = []


def _load_baseline(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_native", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline: cannot load {path!r}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextlib.contextmanager
def _engine_module(mod: ModuleType) -> Iterator[None]:
    saved = _engine._native
    _engine._native = mod
    try:
        yield
    finally:
        _engine._native = saved


def _timed_with(mod: ModuleType, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with _engine_module(mod):
            return fn()

    return run


def _gbps(fn: Callable[[], object], nbytes: int, reps: int) -> float:
    fn()  # warm up (page faults, thread start)
    best = float("inf")
    clock = _CLOCK[0]
    for _ in range(reps):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return nbytes / best / 1e9


def _report(n: int, threads: int, k: iwr.Key, reps: int) -> None:
    t = torch.empty(n, dtype=torch.float32)
    nbytes = 4 * n
    torch.set_num_threads(threads)
    iwr.set_num_threads(threads)
    fill = _gbps(lambda: t.fill_(1.0), nbytes, reps)
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "uniform": (lambda: iwr.uniform_(t, k, low=-1.0, high=1.0),
                    lambda: t.uniform_(-1.0, 1.0)),
        "normal": (lambda: iwr.normal_(t, k, std=0.02), lambda: t.normal_(0.0, 0.02)),
        "trunc_normal": (lambda: iwr.trunc_normal_(t, k, std=0.02, a=-2.0, b=2.0),
                         lambda: torch.nn.init.trunc_normal_(t, std=0.02, a=-0.04, b=0.04)),
    }
    for name, (ours, theirs) in pairs.items():
        a = _gbps(ours, nbytes, reps)
        b = _gbps(theirs, nbytes, reps)
        line = f"{n:>10} {threads:>4} {name:>13} {a:>9.3f} {b:>8.3f} {a / b:>6.2f} {fill:>7.2f}"
        if _BASELINE:
            old = _gbps(_timed_with(_BASELINE[0], ours), nbytes, reps)
            a2 = _gbps(ours, nbytes, reps)  # again after the baseline: interleaved
            a = max(a, a2)
            line = (f"{n:>10} {threads:>4} {name:>13} {a:>9.3f} {b:>8.3f} {a / b:>6.2f} {fill:>7.2f}"
                    f" {old:>9.3f} {a / old:>8.2f}")
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4M and 16M elements")
    ap.add_argument("--sizes", type=int, nargs="+", metavar="N",
                    help="element counts instead (e.g. 65536 to compare inside the L2 cache)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="the 'all threads' setting (default: all cores)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread only, timed by the thread's CPU time (time.thread_time): "
                         "on a shared machine this leaves out the time other jobs hold the core")
    ap.add_argument("--baseline", metavar="SO",
                    help="another build of initwise/random/_native (a .so path) to time alongside")
    args = ap.parse_args()
    if args.baseline:
        _BASELINE.append(_load_baseline(args.baseline))
    if args.cpu_time:
        _CLOCK[0] = time.thread_time
        args.threads = 1
    sizes = args.sizes or ([1 << 22, 1 << 24] if args.quick else [1 << 26, 1 << 28])
    k = iwr.key(0, "bench")
    clock = "thread CPU time" if args.cpu_time else "wall time"
    print(f"initwise.random backend={iwr.backend()}  torch {torch.__version__}  "
          f"cores={os.cpu_count()}  (GB/s of float32 output, best of {args.reps}, {clock})")
    header = f"{'n':>10} {'thr':>4} {'dist':>13} {'initwise':>9} {'torch':>8} {'ratio':>6} {'fill_':>7}"
    if _BASELINE:
        header += f" {'baseline':>9} {'vs base':>8}"
    print(header)
    for n in sizes:
        for threads in sorted({1, args.threads}):
            _report(n, threads, k, args.reps)
    iwr.set_num_threads(None)


if __name__ == "__main__":
    main()
