"""Presets faithful to their papers (issue 18 item 5): Fixup's scalar biases and multipliers
added when the model lacks them (removably, atomically, listed by ``plan``), He-style gains on
the first branch layer reading the residual stream (Fixup, ReZero), GPT-2's position std.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import initwise
from initwise import InitError
from test_audit_intent import ResMLP

X = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))


def _fixup(m: nn.Module, **kw: object) -> initwise.Plan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return initwise.init(m, "fixup", example_inputs=X, seed=0, **kw)  # type: ignore[arg-type]


def _hooks(m: nn.Module) -> int:
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())


def test_plan_lists_the_scalars_and_adds_nothing() -> None:
    torch.manual_seed(0)
    m = ResMLP(3)
    keys = list(m.state_dict())
    p = initwise.plan(m, "fixup", example_inputs=X)
    assert list(m.state_dict()) == keys and _hooks(m) == 0
    # per branch: a bias before each layer, a bias before the activation, a multiplier and a
    # bias closing the branch; and a bias before the classifier
    assert [(a.module, a.name) for a in p.added if a.module.startswith("blocks.0.")] == [
        ("blocks.0.fc1", "fixup_bias_in"), ("blocks.0.fc1", "fixup_bias_out"),
        ("blocks.0.fc2", "fixup_bias_in"), ("blocks.0.fc2", "fixup_scale"),
        ("blocks.0.fc2", "fixup_bias_out")]
    assert ("head", "fixup_bias_in") in [(a.module, a.name) for a in p.added]
    assert len(p.added) == 3 * 5 + 1
    assert "add: blocks.0.fc2.fixup_scale = 1" in p.table()
    back = initwise.Plan.from_json(p.to_json())
    assert back.added == p.added
    assert not initwise.plan(m, "auto", example_inputs=X).added
    assert "added" not in initwise.plan(m, "auto", example_inputs=X).to_dict()


def test_init_adds_them_as_parameters_the_function_unchanged_and_removable() -> None:
    torch.manual_seed(0)
    m = ResMLP(3)
    n0 = len(list(m.parameters()))
    p = _fixup(m)
    names = [n for n, _ in m.named_parameters() if "fixup" in n]
    assert len(names) == len(p.added) == len(list(m.parameters())) - n0
    assert m.blocks[1].fc2.fixup_scale.item() == 1.0 and m.blocks[1].fc1.fixup_bias_in.item() == 0
    opt = torch.optim.SGD(m.parameters(), lr=0.1)  # an optimizer built after init sees them
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == \
        sum(p.numel() for p in m.parameters())
    with torch.no_grad():  # make the branches non-zero: the scalars at 0/1 change nothing
        for b in m.blocks:
            b.fc2.weight.normal_(0, 0.1)
        m.head.weight.normal_(0, 0.1)
        y = m(X)
    nn.functional.cross_entropy(m(X), torch.arange(32) % 10).backward()
    assert m.blocks[0].fc2.fixup_scale.grad is not None
    assert m.blocks[0].fc1.fixup_bias_in.grad is not None and m.head.fixup_bias_in.grad is not None
    with torch.no_grad():
        m.blocks[0].fc2.fixup_scale.fill_(2.0)
        assert not torch.equal(m(X), y)
        m.blocks[0].fc2.fixup_scale.fill_(1.0)
    # re-init: nothing added twice, the multipliers back to 1
    with torch.no_grad():
        m.blocks[2].fc2.fixup_scale.fill_(3.0)
    p2 = _fixup(m)
    assert not p2.added and m.blocks[2].fc2.fixup_scale.item() == 1.0
    assert p2["blocks.2.fc2.fixup_scale"].role == "scalar_scale"
    with torch.no_grad():
        for b in m.blocks:
            b.fc2.weight.normal_(0, 0.1)
        m.head.weight.normal_(0, 0.1)
        y = m(X)
    assert len(initwise.remove_fixup_scalars(m)) == 7
    assert len(list(m.parameters())) == n0 and _hooks(m) == 0
    with torch.no_grad():
        assert torch.equal(m(X), y)  # the same function without them (0 and 1 exactly)


def test_init_is_atomic_when_a_scalar_cannot_be_added() -> None:
    torch.manual_seed(0)
    m = ResMLP(3)
    m.blocks[2].fc2.fixup_scale = 3.0  # a plain attribute in the way
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(InitError, match="fixup_scale"):
        _fixup(m)
    assert m.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert _hooks(m) == 0


def test_a_hand_written_fixup_block_gets_no_scalars() -> None:
    class FixupBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias1a, self.bias1b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
            self.scale = nn.Parameter(torch.ones(()))
            self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x + self.bias1a) + self.bias1b)
            return x + self.fc2(h) * self.scale

    m = nn.Sequential(nn.Linear(16, 16), FixupBlock(), FixupBlock(), nn.Linear(16, 10))
    p = initwise.plan(m, "fixup", example_inputs=X)
    assert not p.added and any("scalar parameters of their own" in n for n in p.notes)
    assert p["1.scale"].scheme == "ones" and p["1.bias1a"].scheme == "zeros"


def test_fixup_scalars_can_be_turned_off() -> None:
    p = initwise.plan(ResMLP(2), initwise.presets.fixup(scalars=False), example_inputs=X)
    assert not p.added
    pol = initwise.presets.fixup()
    assert initwise.Policy.from_dict(pol.to_dict()).fixup_scalars is True
    with pytest.raises(TypeError, match="fixup_scalars"):
        initwise.Policy.from_dict({**pol.to_dict(), "fixup_scalars": "yes"})


@pytest.mark.parametrize("preset", ["fixup", "rezero"])
def test_first_branch_layer_reading_the_stream_gets_the_branch_gain(preset: str) -> None:
    """``x + f(x)``, f = fc2∘relu∘fc1: He et al. 2015 on every branch layer (both papers), so
    fc1, which reads the linear stream, gets √2 like fc2; ``auto`` keeps the exact gain 1."""
    m = ResMLP(4, gate="scalar" if preset == "rezero" else None)
    p = initwise.plan(m, preset, example_inputs=X)
    auto = initwise.plan(m, "auto", example_inputs=X)
    for i in range(4):
        e = p[f"blocks.{i}.fc1.weight"]
        assert e.gain == pytest.approx(math.sqrt(2)) and e.activation == "relu"
        assert "reads the residual stream" in (e.post or "")
        assert auto[f"blocks.{i}.fc1.weight"].gain == 1.0
    if preset == "fixup":  # × L^(-1/(2m-2)) = 4^(-1/2) on top
        assert p["blocks.0.fc1.weight"].std == pytest.approx(math.sqrt(2 / 32) / 2)


def test_pre_norm_branches_keep_their_gain_under_rezero() -> None:
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    cfg = tr.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=16,
                        bos_token_id=0, eos_token_id=0)
    m = tr.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (2, 16))
    p, a = (initwise.plan(m, pol, example_inputs=ids) for pol in ("rezero", "auto"))
    for n in ("transformer.h.0.mlp.c_fc.weight", "transformer.h.1.attn.c_attn.weight"):
        assert p[n].gain == a[n].gain == 1.0  # they read a LayerNorm's output


def test_gpt2_position_embeddings_are_n_0_001() -> None:
    """Radford et al. 2019 (OpenAI's gpt-2 model.py): wpe ~ N(0, 0.01²), wte ~ N(0, 0.02²)."""
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    cfg = tr.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=256,
                        bos_token_id=0, eos_token_id=0)
    m = tr.GPT2LMHeadModel(cfg)
    p = initwise.init(m, "gpt2", seed=0)
    assert p["transformer.wpe.weight"].std == 0.01 and p["transformer.wte.weight"].std == 0.02
    w = m.transformer.wpe.weight.detach().double()
    se = math.sqrt(2 / w.numel())  # relative SE of a normal variance estimate
    assert abs(float(w.var()) / 0.01**2 - 1) < 6 * se


def test_materialize_adds_them_on_the_device() -> None:
    with torch.device("meta"):
        m = ResMLP(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = initwise.materialize(m, "fixup", device="cpu", example_inputs=X)
    assert p.added and m.blocks[1].fc2.fixup_scale.device.type == "cpu"
    assert m.blocks[1].fc2.fixup_scale.item() == 1.0
    assert torch.isfinite(m(X)).all()


def test_a_checkpoint_with_the_scalars_loads_into_a_fresh_model_after_fixup_init() -> None:
    """docs/model-init.md: the scalars are in state_dict; init(fixup) on a fresh model first,
    then a strict load gives identical outputs; a second init adds nothing."""
    torch.manual_seed(0)
    m = ResMLP(3)
    _fixup(m)
    n = len(list(m.parameters()))
    _fixup(m)
    assert len(list(m.parameters())) == n
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)  # trained: every scalar moved off its initial value
    sd = m.state_dict()
    fresh = ResMLP(3)
    with pytest.raises(RuntimeError, match="fixup_bias_in"):
        fresh.load_state_dict(sd)
    _fixup(fresh)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh(X), m(X))
