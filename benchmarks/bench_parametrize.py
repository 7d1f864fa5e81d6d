"""How much training steps move hidden pre-activations, across widths, under SP and μP.

The measurement behind docs/parametrize.md: the MLP of issue 16 (40 -> w -> w -> w -> 10,
ReLU), ``initwise.parametrize(model, name, base=<width 64>)``, Adam at lr 0.01 on a fixed
batch (64 inputs, cross-entropy on random labels), ``--steps`` steps. Printed per width: the
mean |Δ| of layer 2's pre-activation (the second Linear's output) from init, its ratio to the
smallest width's, and the mean |output logits| ratio; then the log-log slope over widths.
Under μP a hidden layer's update is width-independent (ratio ~1, slope ~0); under SP Adam's
update grows ~ linearly with width (every coordinate moves by about lr).

    python benchmarks/bench_parametrize.py [--widths 64,128,256,512,1024,2048] [--steps 4]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import initwise


def mlp(w: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(40, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, 10))


def measure(name: str, w: int, steps: int, lr: float) -> tuple[float, float]:
    torch.manual_seed(0)
    m = mlp(w)
    with torch.device("meta"):
        base = mlp(64)
    p = initwise.parametrize(m, name, base=base).init(seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 40, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    seen: dict[str, torch.Tensor] = {}
    h = m[2].register_forward_hook(lambda _m, _a, out: seen.__setitem__("h", out.detach()))
    with torch.no_grad():
        m(x)
    h0 = seen["h"]
    opt = torch.optim.Adam(p.param_groups(lr=lr, optimizer="adam"))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        out = m(x)
    h.remove()
    return float((seen["h"] - h0).abs().mean()), float(out.abs().mean())


def slope(ws: list[int], vs: list[float]) -> float:
    lx = [math.log(w) for w in ws]
    ly = [math.log(v) for v in vs]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.01)
    a = ap.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    for name in ("sp", "mup"):
        rows = [measure(name, w, a.steps, a.lr) for w in widths]
        print(f"{name}: Adam lr {a.lr}, {a.steps} steps, base width 64")
        print("  width  mean|Δh2|  ratio   mean|out|  ratio")
        for w, (dh, out) in zip(widths, rows, strict=True):
            print(f"  {w:5d}  {dh:9.4f}  {dh / rows[0][0]:5.2f}   {out:9.4f}  {out / rows[0][1]:5.2f}")
        print(f"  slope log|Δh2| vs log width: {slope(widths, [r[0] for r in rows]):.3f}; "
              f"log|out|: {slope(widths, [r[1] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
