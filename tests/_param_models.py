"""Models and a gloo worker for tests/test_parametrize.py (module level: spawned ranks import it)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-LN transformer block: fused q-k-v projection, scaled_dot_product_attention, MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """A hand-written GPT: token + position embeddings, blocks, final norm, tied head."""

    def __init__(self, d: int = 32, depth: int = 2, heads: int = 4, vocab: int = 50, seq: int = 16) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def tiny_gpt(d: int, depth: int = 2, *, meta: bool = False) -> TinyGPT:
    if meta:
        with torch.device("meta"):
            return TinyGPT(d, depth)
    return TinyGPT(d, depth)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def fsdp_groups_and_values(rank: int, world_size: int, name: str) -> dict[str, Any]:
    """FSDP2 (fully_shard per block, then the model): the parametrization's groups and the
    gathered values of its init."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import initwise

    torch.manual_seed(0)
    model = tiny_gpt(48, 3)
    mesh = init_device_mesh("cpu", (world_size,))
    for b in model.blocks:
        fully_shard(b, mesh=mesh)
    fully_shard(model, mesh=mesh)
    p = initwise.parametrize(model, name, base=tiny_gpt(16, 2, meta=True)).init(seed=7)
    groups = [(g["names"], g["lr"], g["weight_decay"]) for g in p.param_groups(lr=0.01, optimizer="adamw",
                                                                               weight_decay=0.1)]
    values = {n: digest(t.full_tensor()) for n, t in model.named_parameters()}
    loss, stepped = one_adamw_step(model, p)
    return {"groups": groups, "values": values, "multipliers": [m.to_dict() for m in p.multipliers],
            "loss": loss, "stepped": {n: t.full_tensor().flatten().tolist() for n, t in stepped.items()}}


def one_adamw_step(model: nn.Module, p: Any) -> tuple[float, dict[str, torch.Tensor]]:
    """Forward (with the parametrization's multipliers), backward and one AdamW step with its
    groups on a fixed batch; return the loss and the parameters after the step."""
    idx = (torch.arange(32) * 7 % 50).reshape(2, 16)
    opt = torch.optim.AdamW(p.param_groups(lr=0.01, optimizer="adamw", weight_decay=0.1))
    loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    opt.step()
    return float(loss.detach()), dict(model.named_parameters())
