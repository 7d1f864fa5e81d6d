"""Check the keyed engine on an accelerator: bit-identity with the CPU, then speed.

Run on a machine with a GPU (nothing in the test suite needs one)::

    PYTHONPATH=src python scripts/gpu_random_check.py [--device cuda] [--quick]

1. Bit-identity: every distribution x dtype (float64/32/16, bfloat16) x geometry (flat with
   odd offsets, boxes of a larger whole, non-contiguous views, ``sample`` at indices up to
   2**62) generated on the device (torch-ops path) equals the CPU values (C path) bit for bit.
   Also checks the device's ``torch.sqrt`` (only needed within one ulp) and float64 division.
2. Speed: GB/s of float32 output of the keyed fills on the device against
   ``torch.Tensor.normal_`` / ``uniform_`` on the same device, same run (synchronized, best
   of N), and against generating on the CPU and copying (the pre-torch-ops behaviour).

Prints one line per check; exits 1 on any mismatch. Paste the speed table into docs/random.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from initwise import random as iwr
from initwise.random import _torchops

FILLS = {"uniform": iwr.uniform_, "normal": iwr.normal_, "trunc_normal": iwr.trunc_normal_}
PARAMS = [
    ("uniform", {"low": -0.3, "high": 0.7}),
    ("normal", {"mean": 0.0, "std": 0.02}),
    ("trunc_normal", {"std": 1.0, "a": -2.0, "b": 2.0}),
    ("trunc_normal", {"a": 3.0, "b": math.inf}),
    ("trunc_normal", {"a": -math.inf, "b": -7.0}),
]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
REF = "native" if iwr.native_available() else "numpy"  # the CPU path the device must equal


def cpu_fill(dist: str, shape: tuple[int, ...], dtype: torch.dtype, k: iwr.Key, **kw: object) -> torch.Tensor:
    with iwr.use_backend(REF):  # type: ignore[arg-type]
        return FILLS[dist](torch.empty(shape, dtype=dtype), k, **kw)  # type: ignore[arg-type]


def identity(dev: torch.device, quick: bool) -> bool:
    ok = True

    def check(name: str, good: bool) -> None:
        nonlocal ok
        ok &= good
        print(("ok   " if good else "FAIL ") + name, flush=True)

    x = torch.rand(1 << 20, dtype=torch.float64) * 700.0
    exact = torch.tensor([math.sqrt(v) for v in x.tolist()], dtype=torch.float64)
    check("isqrt on device == correctly rounded (math.sqrt)", torch.equal(_torchops.isqrt(x.to(dev)).cpu(), exact))
    raw = torch.sqrt(x.to(dev)).cpu()
    print(f"info device torch.sqrt differs from correctly rounded in "
          f"{int((raw != exact).sum())} of {x.numel()} (isqrt corrects these)")
    a, b = torch.rand(1 << 20, dtype=torch.float64) + 0.5, torch.rand(1 << 20, dtype=torch.float64) + 0.5
    check("float64 division on device == CPU", torch.equal((a.to(dev) / b.to(dev)).cpu(), a / b))
    xf = (torch.rand(1 << 20) * 700.0).float()
    exact32 = torch.from_numpy(np.sqrt(xf.numpy()))  # NumPy's float32 sqrt is IEEE
    check("isqrt32 on device == correctly rounded", torch.equal(_torchops.isqrt32(xf.to(dev)).cpu(), exact32))
    af, bf = a.float(), b.float()
    check("float32 division on device == CPU", torch.equal((af.to(dev) / bf.to(dev)).cpu(), af / bf))
    k = iwr.key(19, "gpu-check")
    n = 200_001 if quick else 4_000_037
    geoms = [((n,), 0, None), ((n,), 2**45 + 7, None), ((513, 1001), (17, 3), (1000, 1100)),
             ((64, 3, 33), (5, 0, 11), (80, 3, 50))]
    for dist, params in PARAMS:
        for dtype in DTYPES:
            for shape, off, gs in geoms:
                cpu = cpu_fill(dist, shape, dtype, k, offset=off, global_shape=gs, **params)
                got = FILLS[dist](torch.empty(shape, dtype=dtype, device=dev), k, offset=off,
                                  global_shape=gs, **params)
                check(f"{dist} {params} {str(dtype)[6:]} {shape} offset {off}",
                      got.device.type == dev.type and torch.equal(got.cpu(), cpu))
            big = torch.zeros(300, 160, dtype=dtype, device=dev)
            FILLS[dist](big[:, ::2], k, **params)
            check(f"{dist} {str(dtype)[6:]} non-contiguous view",
                  torch.equal(big[:, ::2].cpu(), cpu_fill(dist, (300, 80), dtype, k, **params)))
        idx = torch.tensor([0, 1, 2**33 + 1, 2**61, 2**62 - 1])
        got = iwr.sample(k, dist, idx.to(dev), dtype=torch.float64, **params).cpu()  # type: ignore[arg-type]
        with iwr.use_backend(REF):  # type: ignore[arg-type]
            want = iwr.sample(k, dist, idx, dtype=torch.float64, **params)  # type: ignore[arg-type]
        check(f"sample {dist} at large indices", torch.equal(got, want))
    return ok


def _best(fn: Callable[[], object], reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    best = math.inf
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def speed(dev: torch.device, quick: bool) -> None:
    print(f"\n{torch.cuda.get_device_name(dev)}, torch {torch.__version__}: GB/s of float32 output, best of 5")
    print(f"{'n':>10} {'dist':>13} {'keyed':>8} {'torch':>8} {'ratio':>6} {'cpu+copy':>9}")
    k = iwr.key(0, "bench")
    for n in ([1 << 24] if quick else [1 << 24, 1 << 28]):
        t = torch.empty(n, device=dev)
        theirs = {"uniform": lambda t=t: t.uniform_(-1.0, 1.0), "normal": lambda t=t: t.normal_(0.0, 0.02),
                  "trunc_normal": lambda t=t: torch.nn.init.trunc_normal_(t, std=0.02, a=-0.04, b=0.04)}
        for dist, params in PARAMS[:3]:
            ours = _best(lambda d=dist, p=params, t=t: FILLS[d](t, k, **p), 5)
            peer = _best(theirs[dist], 5)
            with iwr.use_backend(REF):  # type: ignore[arg-type]
                host = _best(lambda d=dist, p=params, t=t: FILLS[d](t, k, **p), 2)
            gb = 4 * n / 1e9
            print(f"{n:>10} {dist:>13} {gb / ours:8.2f} {gb / peer:8.2f} {peer / ours:6.2f} {gb / host:9.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    dev = torch.device(args.device)
    if dev.type == "cpu":  # a dry run of the device code path on the CPU
        with iwr.use_backend("torch"):
            ok = identity(dev, args.quick)
    else:
        ok = identity(dev, args.quick)
    if dev.type == "cuda":
        speed(dev, args.quick)
    print("ALL OK" if ok else "MISMATCHES: see FAIL lines")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
