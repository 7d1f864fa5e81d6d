"""How much training steps move hidden pre-activations, across widths, under SP and μP.

The measurement behind docs/parametrize.md: the MLP of issue 16 (40 -> w -> w -> w -> 10,
ReLU), ``initwise.parametrize(model, name, base=<width 64>)``, Adam at lr 0.01 on a fixed
batch (64 inputs, cross-entropy on random labels), ``--steps`` steps. Printed per width: the
mean |Δ| of layer 2's pre-activation (the second Linear's output) from init, its ratio to the
smallest width's, and the mean |output logits| ratio; then the log-log slope over widths.
Under μP a hidden layer's update is width-independent (ratio ~1, slope ~0); under SP Adam's
update grows ~ linearly with width (every coordinate moves by about lr).

Depth (``--depths``): a pre-LN transformer (width 64, 4 heads, fused q-k-v, GELU MLP, tied
head; vocabulary 50, 8 sequences of 16 tokens) at base depth 2, one Adam step at lr 0.01:
the mean |Δ| of the residual stream before the final norm, relative to its size at init, under
μP (no depth rule) and CompleteP (α = 1).

    python benchmarks/bench_parametrize.py [--widths 64,128,256,512,1024,2048] [--steps 4]
        [--depths 2,4,8,16,32]
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


class Block(nn.Module):
    def __init__(self, d: int, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.ln1, self.ln2 = heads, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(d, -1))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, depth: int, d: int = 64, vocab: int = 50, seq: int = 16) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def measure_depth(name: str, depth: int, lr: float) -> float:
    torch.manual_seed(0)
    m = GPT(depth)
    with torch.device("meta"):
        base = GPT(2)
    p = initwise.parametrize(m, name, base=base).init(seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 50, (8, 16), generator=g), torch.randint(0, 50, (8, 16), generator=g)
    seen: dict[str, torch.Tensor] = {}
    h = m.ln.register_forward_hook(lambda _m, a, _o: seen.__setitem__("h", a[0].detach()))
    with torch.no_grad():
        m(x)
    h0 = seen["h"]
    opt = torch.optim.Adam(p.param_groups(lr=lr))
    opt.zero_grad()
    nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()).backward()
    opt.step()
    with torch.no_grad():
        m(x)
    h.remove()
    return float((seen["h"] - h0).abs().mean() / h0.abs().mean())


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
    ap.add_argument("--depths", default="2,4,8,16,32")
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
    depths = [int(d) for d in a.depths.split(",")] if a.depths else []
    if depths:
        print(f"depth: one Adam step at lr {a.lr}, base depth 2, width 64: mean|Δ residual| / mean|residual|")
        print("  name       " + "  ".join(f"{d:6d}" for d in depths))
        for name in ("mup", "completep"):
            vals = [measure_depth(name, d, a.lr) for d in depths]
            print(f"  {name:9s}  " + "  ".join(f"{v:6.3f}" for v in vals))


if __name__ == "__main__":
    main()
