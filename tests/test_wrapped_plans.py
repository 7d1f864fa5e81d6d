"""The same architecture gets the same plan whatever wraps it (issue 19 item 1).

Structure is read from a meta shadow of the unwrapped model, so ``torch.compile``,
``DataParallel``, DDP, FSDP2 and tensor-parallel wrappers change nothing in the plan: not the
source, not a role, gain or std. The model is never run: FSDP2's lazy state is untouched
(its first forward still works) and no statistic of the model changes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn

import initwise

FIELDS = ("role", "roles", "scheme", "params", "fan_in", "fan_out", "gain", "activation", "std",
          "action", "blocks")  # fmt: skip


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class Net(nn.Module):
    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(3)])
        self.head = nn.Linear(d, 50, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def _key(p: initwise.Plan, prefix: str = "") -> dict[str, tuple[object, ...]]:
    return {e.name.removeprefix(prefix): tuple(getattr(e, f) for f in FIELDS) for e in p.entries}


@pytest.fixture(scope="module")
def group() -> Iterator[None]:
    if dist.is_initialized():
        yield
        return
    path = tempfile.mktemp(prefix="initwise-pg-")
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        if os.path.exists(path):
            os.remove(path)


@pytest.mark.parametrize("policy", ["auto", "gpt2", "zero_residual", "fixup"])
def test_plan_is_the_same_under_every_wrapper(group: None, policy: str) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    bare = initwise.plan(Net(), policy)
    assert bare.source == "dataflow"
    assert bare["blocks.0.down.weight"].activation == "gelu" or policy != "auto"
    assert "residual_out" in bare["blocks.2.down.weight"].roles
    assert bare["emb.weight"].role == "tied_embedding" or policy != "auto"

    compiled = torch.compile(Net())
    dp = nn.DataParallel(Net())
    ddp = DistributedDataParallel(Net())
    fsdp = Net()
    for b in fsdp.blocks:
        fully_shard(b)
    fully_shard(fsdp)
    assert any(type(p).__name__ == "DTensor" for p in fsdp.parameters())
    for wrapped, prefix in ((compiled, "_orig_mod."), (dp, "module."), (ddp, "module."), (fsdp, "")):
        p = initwise.plan(wrapped, policy)
        assert p.source == bare.source
        assert _key(p, prefix) == _key(bare), type(wrapped).__name__
    # the plan ran nothing: FSDP2's root forward still initializes its lazy state itself
    out = fsdp(torch.randint(0, 50, (2, 5)))
    assert out.shape == (2, 5, 50)


def test_plan_changes_no_state_of_the_model() -> None:
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    m.train()
    calls = []
    m.register_forward_hook(lambda *a: calls.append(1))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(16, 4)
    rng = torch.get_rng_state()
    initwise.plan(m, "auto", example_inputs=x)
    assert calls == []  # the user's model (and its hooks) never ran
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items()) and m.training
