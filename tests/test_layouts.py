"""Layouts of every weight tensor people use (issue 13 item 1): fused experts, fused
projections, explicit fan axes; measured per expert."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise
from initwise import register_layout, unregister_layout


class Experts(nn.Module):
    """E experts in two fused tensors, as Mixtral/Qwen-MoE store them: [E, 2I, H] and [E, H, I];
    every token dispatched to every expert, outputs combined with softmax router weights."""

    def __init__(self, e: int = 4, h: int = 64, i: int = 96) -> None:
        super().__init__()
        self.router = nn.Linear(h, e, bias=False)
        self.gate_up = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down = nn.Parameter(torch.empty(e, h, i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xe = x.expand(self.gate_up.shape[0], *x.shape)  # [E, T, H]
        g, u = torch.einsum("eth,eoh->eto", xe, self.gate_up).chunk(2, dim=-1)
        y = torch.einsum("eti,ehi->eth", nn.functional.silu(g) * u, self.down)
        w = torch.softmax(self.router(x), dim=-1)  # [T, E]
        return torch.einsum("eth,te->th", y, w)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.experts = Experts()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.experts(self.norm(x)))


def test_fused_experts_from_the_dataflow_get_per_matrix_fans() -> None:
    p = initwise.plan(Net(), "auto")
    gu, dn = p["experts.gate_up"], p["experts.down"]
    assert (gu.fan_in, gu.fan_out, gu.blocks) == (64.0, 96.0, 4)  # per expert, per gate/up part
    assert (dn.fan_in, dn.fan_out) == (96.0, 64.0)
    assert gu.activation == "linear" and dn.activation == "silu"
    assert gu.std == pytest.approx(1 / 8) and dn.std == pytest.approx(initwise.gain("silu") / math.sqrt(96))
    assert "residual_out" in dn.roles
    assert torch.__version__  # torch's own guess: fan_in 2I*H of the whole tensor
    assert nn.init._calculate_fan_in_and_fan_out(Experts().gate_up)[0] == 192 * 64


def test_per_expert_forward_variance_is_one() -> None:
    torch.manual_seed(0)
    m = Net()
    initwise.init(m, "auto", seed=0)
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    e = m.experts
    for k in range(4):
        g, u = (x @ e.gate_up[k].T).chunk(2, dim=-1)
        assert float(g.var()) == pytest.approx(1.0, rel=0.15)
        y = (nn.functional.silu(g) * u) @ e.down[k].T
        assert float(y.var()) == pytest.approx(1.0, rel=0.2), k


def test_hf_mixtral_experts_per_expert_variance() -> None:
    tf = pytest.importorskip("transformers")
    cfg = tf.MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                           num_local_experts=4)
    torch.manual_seed(0)
    m = tf.MixtralForCausalLM(cfg)
    p = initwise.init(m, "auto", seed=0)
    gu = p["model.layers.0.mlp.experts.gate_up_proj"]
    assert (gu.fan_in, gu.blocks) == (64.0, 4) and gu.std == pytest.approx(1 / 8)
    w = m.model.layers[0].mlp.experts.gate_up_proj.detach()
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(2))
    for k in range(4):
        assert float((x @ w[k].T).var()) == pytest.approx(1.0, rel=0.15)


def test_register_layout_overrides_and_orthogonal_per_expert() -> None:
    class Stacked(nn.Module):  # [in, E, out]: an unusual order only the author knows
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(32, 3, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,ieo->beo", x, self.w)

    register_layout(Stacked, "w", in_axis=0, out_axis=-1, batch_axis=1)
    try:
        e = initwise.plan(Stacked(), "auto")["w"]
        assert (e.fan_in, e.fan_out) == (32.0, 16.0)
        with pytest.raises(ValueError, match="parts must be an integer >= 1"):
            register_layout(Stacked, "w", in_axis=0, out_axis=2, parts=0)
        with pytest.raises(TypeError, match="in_axis must be an int or a sequence of ints"):
            register_layout(Stacked, "w", in_axis="0", out_axis=2)  # type: ignore[arg-type]
    finally:
        unregister_layout(Stacked, "w")
    m = Experts(e=3, h=16, i=8)
    initwise.init(m, "orthogonal", seed=0)
    for k in range(3):  # each expert its own orthogonal matrix (batch axis 0)
        d = m.down[k].detach()  # [16, 8]: orthogonal columns (times the gain)
        dtd = d.T @ d
        assert torch.allclose(dtd, dtd[0, 0] * torch.eye(8), atol=1e-5)


def test_fused_projection_in_a_plain_linear() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(32, 96)  # q, k, v in one Linear
            self.out = nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), dim=-1)
            return x + self.out(a @ v)

    p = initwise.plan(Attn(), "xavier")
    e = p["qkv.weight"]
    assert (e.blocks, e.fan_in, e.fan_out) == (3, 32.0, 32.0)  # xavier per block: 1/E, not 1/(2E)
    assert e.std == pytest.approx(math.sqrt(2 / 64))
