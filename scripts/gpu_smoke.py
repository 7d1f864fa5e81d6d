"""CUDA smoke check of the public API (run on a machine with a GPU: python scripts/gpu_smoke.py).

Not part of the test suite (CI has no GPU); prints one line per check and exits non-zero on
the first failure.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import initwise


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    dev = torch.device("cuda")
    torch.manual_seed(0)
    checks = []

    def check(name: str, ok: bool) -> None:
        checks.append(ok)
        print(("ok   " if ok else "FAIL ") + name, flush=True)

    w = torch.empty(256, 128, device=dev, dtype=torch.bfloat16)
    initwise.orthogonal_(w, generator=initwise.random.key(0, "w"))
    q = w.double()
    check("orthogonal_ bf16 on cuda", bool(torch.allclose(q.T @ q, torch.eye(128, device=dev, dtype=torch.float64), atol=5e-2)))
    t = torch.empty(10_000, device=dev)
    initwise.trunc_normal_(t, 0.0, 1.0, -1.0, 2.0, generator=torch.Generator().manual_seed(0))
    check("trunc_normal_ cuda tensor, cpu generator", bool(t.min() >= -1 and t.max() <= 2))
    a = initwise.random.normal_(torch.empty(1000, device=dev), initwise.random.key(1, "x"))
    b = initwise.random.normal_(torch.empty(1000), initwise.random.key(1, "x"))
    check("keyed engine: cuda == cpu bitwise", bool(torch.equal(a.cpu(), b)))

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
                          nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.SiLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).to(dev)
    x = torch.randn(8, 3, 16, 16, device=dev)
    cpu_model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU(),
                              nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.SiLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    initwise.init(model, "auto", seed=3)
    initwise.init(cpu_model, "auto", seed=3)
    same = all(torch.equal(p.cpu(), c) for p, c in zip(model.parameters(), cpu_model.parameters(), strict=True))
    check("init on cuda == init on cpu bitwise", same)
    rep = initwise.lsuv(model, x)
    check(f"lsuv on cuda ({rep.forward_passes} passes, err {rep.max_error:.1e})", rep.converged)
    r = initwise.audit(model, x, spectrum=True)
    check(f"audit + spectrum on cuda: {r.verdict}", r.verdict in ("healthy", "vanishing", "exploding"))

    class Rnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(8, 16, batch_first=True)
            self.out = nn.Linear(16, 2)

        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return self.out(self.gru(s)[0][:, -1])

    rnn = Rnn().to(dev)
    initwise.init(rnn, "auto")
    r = initwise.audit(rnn, torch.randn(4, 5, 8, device=dev), mode="eval")
    check(f"audit GRU eval mode on cuda: {r.verdict}", True)
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
