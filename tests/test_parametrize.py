"""``initwise.parametrize`` (issue 16): SP, μP, CompleteP and spectral relative to a base model."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import initwise
from _dist_helpers import gloo_available, run_ranks
from _param_models import TinyGPT, digest, fsdp_groups_and_values, one_adamw_step, tiny_gpt
from initwise._param.rules import scaling
from initwise._param.shapes import TensorShape


def mlp(w: int, d_in: int = 40, d_out: int = 10, hidden: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, w), nn.ReLU()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(w, w), nn.ReLU()]
    layers.append(nn.Linear(w, d_out))
    return nn.Sequential(*layers)


def _meta(fn, *a, **k):  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        return fn(*a, **k)


# ------------------------------------------------------------------------------------------
# equivalence at the base width: μP is exactly SP (weights and updates)
# ------------------------------------------------------------------------------------------


def _train(model: nn.Module, groups: list[dict], x: torch.Tensor, steps: int = 3) -> None:
    opt = torch.optim.Adam(groups)
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("name", ["mup", "completep", "spectral"])
def test_at_base_width_every_parametrization_is_exactly_sp(name: str) -> None:
    torch.manual_seed(0)
    a = mlp(32)
    b = copy.deepcopy(a)
    sp = initwise.parametrize(a, "sp", base=_meta(mlp, 32)).init(seed=3)
    pp = initwise.parametrize(b, name, base=_meta(mlp, 32)).init(seed=3)
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert pp.multipliers == []
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(1))
    _train(a, sp.param_groups(lr=1e-2), x)
    _train(b, pp.param_groups(lr=1e-2), x)
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_sp_init_is_initwise_init_and_groups_are_plain() -> None:
    a = mlp(48)
    b = copy.deepcopy(a)
    p = initwise.parametrize(a, "sp", base=_meta(mlp, 16)).init(seed=5)
    initwise.init(b, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    groups = p.param_groups(lr=0.1, optimizer="sgd", weight_decay=0.01)
    assert len(groups) == 1 and groups[0]["lr"] == 0.1 and groups[0]["weight_decay"] == 0.01
    assert p.multipliers == []


# ------------------------------------------------------------------------------------------
# μP rules against the formulas
# ------------------------------------------------------------------------------------------


def test_mup_roles_and_learning_rates_follow_tensor_programs_v() -> None:
    w, b = 128, 32
    m = mlp(w, hidden=3)
    p = initwise.parametrize(m, "mup", base=_meta(mlp, b, hidden=3))
    r = w / b
    roles = {e.name: e.role for e in p}
    assert roles == {"0.weight": "input", "0.bias": "vector", "2.weight": "hidden", "2.bias": "vector",
                     "4.weight": "hidden", "4.bias": "vector", "6.weight": "output", "6.bias": "fixed"}
    for e in p:
        adam, sgd = {"input": (1, r), "vector": (1, r), "hidden": (1 / r, 1), "output": (1, r),
                     "fixed": (1, 1)}[e.role]
        assert e.lr_adam == pytest.approx(adam) and e.lr_sgd == pytest.approx(sgd), e.name
        assert e.wd_adam == pytest.approx(1 / adam), e.name
    groups = {n: g for g in p.param_groups(lr=0.01, optimizer="adamw", weight_decay=0.1) for n in g["names"]}
    assert groups["2.weight"]["lr"] == pytest.approx(0.01 / r)
    assert groups["2.weight"]["weight_decay"] == pytest.approx(0.1 * r)  # lr * wd width-independent
    assert groups["0.weight"]["lr"] == 0.01 and groups["6.weight"]["lr"] == 0.01
    sgd = {n: g for g in p.param_groups(lr=0.1, optimizer="sgd") for n in g["names"]}
    assert sgd["0.weight"]["lr"] == pytest.approx(0.1 * r) and sgd["2.weight"]["lr"] == pytest.approx(0.1)
    assert [(x.module, x.kind, x.factor) for x in p.multipliers] == [("6", "readout", 1 / r)]


def test_mup_init_std_per_role_scales_as_the_table_says() -> None:
    """Measured stds: hidden ∝ 1/√fan_in (as SP), output constant in width (×1/m forward)."""
    base = _meta(mlp, 64)
    stds: dict[int, dict[str, float]] = {}
    for w in (256, 1024):
        m = mlp(w)
        p = initwise.parametrize(m, "mup", base=base).init(seed=0)
        stds[w] = {n: float(t.detach().std()) for n, t in m.named_parameters() if t.dim() == 2}
        e = p["4.weight"]
        assert e.std == pytest.approx(p["4.weight"].std)
        # planned std is what was written (6 standard errors of a normal's std estimate)
        n = m[4].weight.numel()
        assert abs(stds[w]["4.weight"] / e.std - 1) < 6 / math.sqrt(2 * n)
    assert stds[1024]["2.weight"] / stds[256]["2.weight"] == pytest.approx(0.5, rel=0.02)
    assert stds[1024]["4.weight"] / stds[256]["4.weight"] == pytest.approx(1.0, rel=0.05)
    assert stds[1024]["0.weight"] / stds[256]["0.weight"] == pytest.approx(1.0, rel=0.02)


def _hidden_change(name: str, w: int, steps: int = 1) -> float:
    torch.manual_seed(0)
    m = mlp(w)
    p = initwise.parametrize(m, name, base=_meta(mlp, 64)).init(seed=0)
    x = torch.randn(64, 40, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    pre: dict[str, torch.Tensor] = {}
    h = m[2].register_forward_hook(lambda mod, a, out: pre.__setitem__("h", out.detach()))
    m(x)
    before = pre["h"]
    opt = torch.optim.Adam(p.param_groups(lr=1e-2))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m(x)
    h.remove()
    return float((pre["h"] - before).abs().mean())


def test_one_adam_step_moves_hidden_preactivations_by_o1_under_mup_not_sp() -> None:
    """The coordinate check in one step: under μP the change of layer 2's pre-activation is
    width-independent, under SP it grows ~ width (Adam: every coordinate moves by lr)."""
    mup = [_hidden_change("mup", w) for w in (64, 256, 1024)]
    sp = [_hidden_change("sp", w) for w in (64, 256, 1024)]
    assert max(mup) / min(mup) < 1.5, mup
    assert sp[-1] / sp[0] > 6, sp  # 16x width: grows ~ linearly


# ------------------------------------------------------------------------------------------
# multipliers, JSON, errors
# ------------------------------------------------------------------------------------------


def test_remove_restores_the_outputs_exactly() -> None:
    m = mlp(64)
    x = torch.randn(4, 40)
    before = m(x)
    p = initwise.parametrize(m, "mup", base=_meta(mlp, 16))
    during = m(x)
    assert not torch.equal(before, during)
    assert torch.allclose(during - m[4].bias, (before - m[4].bias) / 4, atol=1e-6)
    p.remove()
    assert torch.equal(m(x), before) and not p.installed


def test_json_round_trip_rebinds_and_installs() -> None:
    m = mlp(64)
    p = initwise.parametrize(m, "mup", base=_meta(mlp, 16))
    s = p.to_json()
    q = initwise.Parametrization.from_json(s)
    assert q.to_dict() == p.to_dict() and q.table() == p.table()
    p.remove()
    m2 = copy.deepcopy(m)
    x = torch.randn(3, 40)
    plain = m2(x)
    q2 = initwise.Parametrization.from_json(s, model=m2)
    assert torch.allclose(m2(x) - m2[4].bias, (plain - m2[4].bias) / 4, atol=1e-6)
    q2.remove()
    with pytest.raises(ValueError, match="not bound to a model"):
        q.param_groups(lr=1.0)
    # the reloaded parametrization initializes exactly as the original
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    p.model = a
    p.init(seed=2)
    initwise.Parametrization.from_json(s, model=b).init(seed=2).remove()
    assert all(torch.equal(u, v) for u, v in zip(a.parameters(), b.parameters(), strict=True))


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown parametrization 'mupp'; did you mean 'mup'\?.*completep"):
        initwise.parametrize(mlp(8), "mupp", base=mlp(8))
    with pytest.raises(ValueError, match="base does not match"):
        initwise.parametrize(mlp(8, hidden=3), "mup", base=nn.Sequential(nn.Linear(40, 4)))
    p = initwise.parametrize(mlp(8), "mup", base=mlp(4))
    with pytest.raises(ValueError, match=r"unknown optimizer .adan.*adamw"):
        p.param_groups(lr=0.1, optimizer="adan")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# transformers: hand-written, HF GPT-2 and LLaMA
# ------------------------------------------------------------------------------------------


def _gpt2(w: int, depth: int = 2, *, meta: bool = False) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=depth, n_embd=w, n_head=4, vocab_size=64, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    return _meta(transformers.GPT2LMHeadModel, cfg) if meta else transformers.GPT2LMHeadModel(cfg)


def _llama(w: int, depth: int = 2, *, meta: bool = False) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(num_hidden_layers=depth, hidden_size=w, intermediate_size=2 * w,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                   max_position_embeddings=16, tie_word_embeddings=True)
    return _meta(transformers.LlamaForCausalLM, cfg) if meta else transformers.LlamaForCausalLM(cfg)


def _logits(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = m(x)
    return out.logits if hasattr(out, "logits") else out


MODELS = {
    "tiny_gpt": (lambda w, depth=2, meta=False: tiny_gpt(w, depth, meta=meta), "head", "blocks.0.qkv", 0),
    "gpt2": (_gpt2, "lm_head", "transformer.h.0.attn.c_attn", 0),
    "llama": (_llama, "lm_head", "model.layers.0.self_attn.q_proj", None),
}


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_transformers_roles_tied_readout_and_attention(arch: str) -> None:
    make, head, qmod, part = MODELS[arch]
    m = make(64)
    p = initwise.parametrize(m, "mup", base=make(16, meta=True))
    tied = next(e for e in p if e.kind == "tied_embedding")
    assert tied.role == "input" and tied.lr_adam == 1.0 and "readout multiplier" in tied.note
    hidden = [e for e in p if e.role == "hidden"]
    assert hidden and all(e.lr_adam == pytest.approx(0.25) for e in hidden)
    assert all(e.role in ("vector", "fixed") for e in p if len(e.shape) < 2)
    by_kind = {(x.kind, x.module): x for x in p.multipliers}
    assert by_kind[("readout", head)].factor == pytest.approx(0.25)  # 1/m on the tied readout
    q = by_kind[("query", qmod)]
    # heads fixed at 4: head size 16 -> 4 times the base's 4; 1/d attention = x sqrt(4/16) on q
    assert q.factor == pytest.approx(0.5) and q.part == part
    assert q.parts == (3 if part is not None else 1)
    assert sum(x.kind == "query" for x in p.multipliers) == 2
    assert "readout" in p.table() and tied.name in p.table()


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_transformers_query_multiplier_scales_only_the_queries_and_remove_restores(arch: str) -> None:
    make, _head, qmod, part = MODELS[arch]
    torch.manual_seed(0)
    m = make(32)
    m.eval()
    x = torch.randint(0, 16, (2, 8))
    seen: dict[str, torch.Tensor] = {}
    mod = m.get_submodule(qmod)

    def grab(_m: nn.Module, _a: object, out: torch.Tensor) -> None:
        seen["q"] = out.detach().clone()

    h = mod.register_forward_hook(grab)
    before = _logits(m, x)
    q0 = seen["q"]
    h.remove()
    p = initwise.parametrize(m, "mup", base=make(16, meta=True))
    h = mod.register_forward_hook(grab)  # after the multiplier's hook: sees its output
    _logits(m, x)
    q1 = seen["q"]
    h.remove()
    f = next(x.factor for x in p.multipliers if x.kind == "query" and x.module == qmod)
    d = q0.shape[-1] // (3 if part is not None else 1)
    sl = slice(0, d)
    assert torch.allclose(q1[..., sl], q0[..., sl] * f, atol=1e-6)
    assert torch.equal(q1[..., d:], q0[..., d:])
    p.remove()
    assert torch.equal(_logits(m, x), before)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("name", ["mup", "completep"])
def test_transformers_at_base_size_are_exactly_sp(arch: str, name: str) -> None:
    make = MODELS[arch][0]
    torch.manual_seed(0)
    a = make(32).eval()  # no dropout: the two runs see the same function
    b = copy.deepcopy(a)
    x = torch.randint(0, 16, (2, 8))
    sp = initwise.parametrize(a, "sp", base=make(32, meta=True)).init(seed=1)
    pp = initwise.parametrize(b, name, base=make(32, meta=True)).init(seed=1)
    assert pp.multipliers == []
    for (n, u), v in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(u, v), n
    for model, groups in ((a, sp.param_groups(lr=1e-3, optimizer="adamw", weight_decay=0.1)),
                          (b, pp.param_groups(lr=1e-3, optimizer="adamw", weight_decay=0.1))):
        opt = torch.optim.AdamW(groups)
        for _ in range(2):
            opt.zero_grad()
            _logits(model, x).logsumexp(-1).mean().backward()
            opt.step()
    for (n, u), v in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(u, v), n


def test_tied_embedding_std_is_constant_in_width_under_mup() -> None:
    """The tied table is treated as the input embedding: the std it gets does not change with
    width (the 1/width goes to the readout multiplier), whatever the SP policy gives it."""
    base = tiny_gpt(16, meta=True)
    stds = []
    for w in (64, 256):
        m = tiny_gpt(w)
        initwise.parametrize(m, "mup", base=base).init(seed=0)
        stds.append(float(m.wte.weight.detach().std()))
    n = 50 * 64
    assert stds[1] / stds[0] == pytest.approx(1.0, abs=6 / math.sqrt(n))


def test_completep_depth_rules() -> None:
    """Dey et al. 2025: branch x (L_base/L)^alpha; Adam LR inside blocks x m_L^(alpha-1) (hidden
    also / m_N); eps x 1/(m_N m_L^alpha); embeddings and final norm without the depth factor."""
    m = tiny_gpt(64, depth=8)
    for alpha in (1.0, 0.5):
        p = initwise.parametrize(m, "completep", base=tiny_gpt(16, depth=2, meta=True), alpha=alpha)
        assert p.depth == {"blocks": (8, 2)} and p.width == 4
        branch = [x for x in p.multipliers if x.kind == "branch"]
        assert sorted(x.module for x in branch) == sorted(f"blocks.{i}.{n}" for i in range(8) for n in ("proj", "fc2"))
        assert all(x.factor == pytest.approx(4 ** -alpha) for x in branch)
        assert p["blocks.5.fc1.weight"].lr_adam == pytest.approx(4 ** (alpha - 1) / 4)
        assert p["blocks.5.ln1.weight"].lr_adam == pytest.approx(4 ** (alpha - 1))
        assert p["blocks.5.fc1.weight"].wd_adam == pytest.approx(4)  # lr*wd width-independent
        assert p["wte.weight"].lr_adam == 1.0 and p["ln.weight"].lr_adam == 1.0
        assert all(e.eps == pytest.approx(1 / (4 * 4**alpha)) for e in p)
        g = {n: grp for grp in p.param_groups(lr=1.0, eps=1e-8) for n in grp["names"]}
        assert g["blocks.0.qkv.weight"]["eps"] == pytest.approx(1e-8 / (4 * 4**alpha))
        p.remove()


def test_completep_branch_multiplier_scales_the_residual_branch() -> None:
    torch.manual_seed(0)
    m = tiny_gpt(32, depth=4)
    x = torch.randn(2, 8, 32)
    blk = m.blocks[1]
    got: dict[str, torch.Tensor] = {}

    def grab(name: str) -> Any:
        return lambda _m, _a, out: got.__setitem__(name, out.detach().clone())

    h = blk.proj.register_forward_hook(grab("proj0"))
    r0 = blk(x) - x
    h.remove()
    p = initwise.parametrize(m, "completep", base=tiny_gpt(32, depth=2, meta=True))
    assert [x.kind for x in p.multipliers] == ["branch"] * 8  # width as base: no readout, no query
    assert {x.factor for x in p.multipliers} == {0.5}  # (L_base / L)^1
    hs = [blk.proj.register_forward_hook(grab("proj")), blk.fc2.register_forward_hook(grab("fc2"))]
    r1 = blk(x) - x
    for h in hs:
        h.remove()
    assert torch.equal(got["proj"], got["proj0"] * 0.5)  # the attention branch, halved
    assert torch.allclose(r1, got["proj"] + got["fc2"], atol=1e-6)  # x + f·attn + f·mlp
    p.remove()
    assert torch.equal(blk(x) - x, r0)


def test_mup_ignores_depth_with_a_note_and_completep_needs_residuals() -> None:
    p = initwise.parametrize(tiny_gpt(32, depth=4), "mup", base=tiny_gpt(32, depth=2, meta=True))
    assert any("completep" in n for n in p.notes) and p.multipliers == []

    class Stack(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for lin in self.layers:
                x = torch.tanh(lin(x))
            return x

    with pytest.raises(ValueError, match="'completep' needs residual blocks"):
        initwise.parametrize(Stack(4), "completep", base=Stack(2))


def test_spectral_rules() -> None:
    """Yang, Simon & Bernstein 2023: std ∝ min(1, √(fan_out/fan_in))/√fan_in, Adam LR ∝
    1/fan_in, SGD LR ∝ fan_out/fan_in; no forward multipliers."""
    m = mlp(256)
    p = initwise.parametrize(m, "spectral", base=mlp(64))
    assert p.multipliers == []
    hid, out, inp = p["2.weight"], p["4.weight"], p["0.weight"]
    assert (hid.lr_adam, hid.lr_sgd) == pytest.approx((0.25, 1.0))
    assert (out.lr_adam, out.lr_sgd) == pytest.approx((0.25, 0.25))
    assert (inp.lr_adam, inp.lr_sgd) == pytest.approx((1.0, 4.0))
    base = initwise.plan(mlp(64))
    # hidden: 1/√fan_in (x1/2); output (fan_out 10 < fan_in): √10/fan_in (x1/4); input: 1
    assert hid.std == pytest.approx(base["2.weight"].std * 0.5)
    assert out.std == pytest.approx(base["4.weight"].std * 0.25)
    assert inp.std == pytest.approx(base["0.weight"].std)


# ------------------------------------------------------------------------------------------
# wrappers: compile, meta, FSDP2
# ------------------------------------------------------------------------------------------


def test_compiled_model_same_parametrization_and_multipliers_apply() -> None:
    torch.manual_seed(0)
    m = tiny_gpt(32)
    eager = copy.deepcopy(m)
    c = torch.compile(m, backend="eager")
    x = torch.randint(0, 16, (2, 8))
    before = c(x)
    pc = initwise.parametrize(c, "mup", base=tiny_gpt(16, meta=True))
    pe = initwise.Parametrization.from_dict(pc.to_dict())
    ref = initwise.parametrize(eager, "mup", base=tiny_gpt(16, meta=True))
    assert pe.to_dict() == ref.to_dict()
    assert [g["names"] for g in pc.param_groups(lr=1.0)] == [g["names"] for g in ref.param_groups(lr=1.0)]
    assert torch.allclose(c(x), ref.model(x), atol=1e-6)  # type: ignore[misc]
    assert not torch.allclose(c(x), before)
    pc.remove()
    ref.remove()
    assert torch.equal(c(x), before)


def test_init_of_a_model_on_meta_materializes_it() -> None:
    a = tiny_gpt(48, meta=True)
    pa = initwise.parametrize(a, "mup", base=tiny_gpt(16, meta=True))
    with pytest.raises(ValueError, match="pass device="):
        pa.init(seed=4)
    pa.init(seed=4, device="cpu")
    assert a.head.weight is a.wte.weight  # still tied
    b = tiny_gpt(48)
    pb = initwise.parametrize(b, "mup", base=tiny_gpt(16, meta=True)).init(seed=4)
    assert pa.to_dict() == pb.to_dict()
    for (n, u), v in zip(a.named_parameters(), b.parameters(), strict=True):
        if n == "wpe.weight":  # kept by the policy: the module's own init, keyed (N(0, 1))
            assert torch.isfinite(u).all() and abs(float(u.detach().std()) - 1) < 6 / math.sqrt(2 * u.numel())
        else:
            assert torch.equal(u, v), n


@pytest.mark.distributed
@pytest.mark.skipif(not gloo_available(), reason="gloo backend unavailable")
def test_fsdp2_world_size_2_same_groups_values_and_multipliers() -> None:
    torch.manual_seed(0)
    m = tiny_gpt(48, 3)
    p = initwise.parametrize(m, "completep", base=tiny_gpt(16, 2, meta=True)).init(seed=7)
    groups = [[g["names"], g["lr"], g["weight_decay"]]
              for g in p.param_groups(lr=0.01, optimizer="adamw", weight_decay=0.1)]
    values = {n: digest(t) for n, t in m.named_parameters()}
    loss, stepped = one_adamw_step(m, p)  # shard -> init -> forward -> backward -> step
    for rank in run_ranks(fsdp_groups_and_values, 2, "completep", timeout=120):
        assert rank["groups"] == groups
        assert rank["values"] == values
        assert rank["multipliers"] == [x.to_dict() for x in p.multipliers]
        # the multipliers act under FSDP2 (same loss) and the groups' learning rates give the
        # same update (up to the reduce-scatter's summation order)
        assert rank["loss"] == pytest.approx(loss, rel=1e-5)
        for n, t in stepped.items():
            torch.testing.assert_close(torch.tensor(rank["stepped"][n]), t.detach().flatten(),
                                       rtol=1e-4, atol=1e-6, msg=n)


class _TorchEncoder(nn.Module):
    """nn.TransformerEncoderLayer stack: the queries are inside MultiheadAttention's forward."""

    def __init__(self, d: int, depth: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(6, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True) for _ in range(depth))
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for lay in self.layers:
            h = lay(h)
        return self.out(h)


def test_attention_no_hook_can_reach_is_an_error_unless_attention_false() -> None:
    with pytest.raises(ValueError, match="attention=False"):
        initwise.parametrize(_TorchEncoder(32), "mup", base=_TorchEncoder(8))
    p = initwise.parametrize(_TorchEncoder(32), "mup", base=_TorchEncoder(8), attention=False)
    assert [x.kind for x in p.multipliers] == ["readout"]
    assert any("attention=False" in n for n in p.notes)


def test_completep_branch_on_multihead_attention_output() -> None:
    torch.manual_seed(0)
    m = _TorchEncoder(16, depth=4)
    p = initwise.parametrize(m, "completep", base=_TorchEncoder(16, depth=2))
    mods = sorted(x.module for x in p.multipliers if x.kind == "branch")
    assert mods == sorted(f"layers.{i}.{n}" for i in range(4) for n in ("self_attn", "linear2"))
    x = torch.randn(2, 5, 6)
    lay = m.layers[0]
    got: list[torch.Tensor] = []
    h = lay.self_attn.register_forward_hook(lambda _m, _a, out: got.append(out[0].detach().clone()))
    m(x)
    p.remove()
    m(x)
    h.remove()
    assert torch.allclose(got[0], got[1] * 0.5, atol=1e-6)


def test_delta_names_roles_at_the_base_width() -> None:
    p = initwise.parametrize(mlp(16), "mup", base=mlp(16), delta=_meta(mlp, 32))
    assert {e.name: e.role for e in p}["2.weight"] == "hidden"
    assert p["4.weight"].role == "output" and p.multipliers == []
    assert all(e.lr_adam == 1.0 and e.init_scale == 1.0 for e in p)  # still exactly SP


def test_hf_json_round_trip_and_data_parallel_groups() -> None:
    m = _gpt2(32, depth=4)
    p = initwise.parametrize(m, "completep", base=_gpt2(16, depth=2, meta=True))
    s = p.to_json()
    q = initwise.Parametrization.from_json(s)
    assert q.to_dict() == p.to_dict() and q.table() == p.table() and q.multipliers == p.multipliers
    assert {x.kind for x in q.multipliers} == {"readout", "query", "branch"}
    p.remove()
    dp = nn.DataParallel(m)  # no GPU: runs the module itself, names gain "module."
    r = initwise.Parametrization.from_json(s, model=dp)
    assert [g["names"] for g in r.param_groups(lr=1.0)] == [g["names"] for g in p.param_groups(lr=1.0)]
    assert [g["lr"] for g in r.param_groups(lr=1.0, optimizer="sgd")] == \
        [g["lr"] for g in p.param_groups(lr=1.0, optimizer="sgd")]
    r.remove()


@given(
    fi=st.integers(1, 4096), fo=st.integers(1, 4096),
    role=st.sampled_from(["input", "hidden", "output", "vector", "fixed"]),
    name=st.sampled_from(["sp", "mup", "completep", "spectral"]),
)
def test_every_rule_is_the_identity_at_the_base(fi: int, fo: int, role: str, name: str) -> None:
    t = TensorShape("w", (fo, fi), (fo, fi), "weight", role, fi, fo, fi, fo)  # type: ignore[arg-type]
    s = scaling(name, t)  # type: ignore[arg-type]
    assert (s.init in (None, 1.0), s.lr_adam, s.lr_sgd, s.multiplier, s.eps) == (True, 1.0, 1.0, 1.0, 1.0)


@given(a=st.integers(1, 64), b=st.integers(1, 64))
def test_mup_hidden_factors_compose_over_successive_width_ratios(a: int, b: int) -> None:
    """Scaling 16 -> 16a -> 16ab is scaling 16 -> 16ab: the rules depend on the ratio only."""
    def h(w: int, base: int) -> Any:
        return scaling("mup", TensorShape("w", (w, w), (base, base), "weight", "hidden", w, w, base, base))

    one, two, both = h(16 * a, 16), h(16 * a * b, 16 * a), h(16 * a * b, 16)
    assert both.lr_adam == pytest.approx(one.lr_adam * two.lr_adam)
    assert both.init == pytest.approx(one.init * two.init)  # type: ignore[operator]


class _QNormAttention(nn.Module):
    """Queries normalized per head after their projection (as Qwen3 / OLMo-2 q_norm)."""

    def __init__(self, d: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.inp = nn.Linear(6, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.q_norm = nn.LayerNorm(d // heads)
        self.out = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        b, t, d = x.shape

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q = self.q_norm(heads(self.q(x)))
        a = torch.nn.functional.scaled_dot_product_attention(q, heads(self.k(x)), heads(self.v(x)))
        return self.out(a.transpose(1, 2).reshape(b, t, d))


def test_query_multiplier_goes_after_a_q_norm() -> None:
    x = torch.randn(2, 3, 6)  # (its input cannot be guessed from its first layer: a 3-D batch)
    with pytest.raises(ValueError, match=r"could not be traced.*pass example_inputs="):
        initwise.parametrize(_QNormAttention(64), "mup", base=_QNormAttention(16))
    p = initwise.parametrize(_QNormAttention(64), "mup", base=_QNormAttention(16), example_inputs=x)
    q = [x for x in p.multipliers if x.kind == "query"]
    assert [(x.module, x.part) for x in q] == [("q_norm", None)] and q[0].factor == pytest.approx(0.5)


def test_more_heads_of_the_same_size_keep_the_attention_scale() -> None:
    m = TinyGPT(64, 2, heads=8)  # head size 8, as the base's 16 / 2
    p = initwise.parametrize(m, "mup", base=_meta(TinyGPT, 16, 2, heads=2))
    assert [x.kind for x in p.multipliers] == ["readout"]


def test_readout_applied_by_a_bigger_module_is_an_error() -> None:
    class FunctionalHead(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, d)
            self.mid = nn.Linear(d, d)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(torch.relu(self.mid(self.emb(idx))), self.emb.weight)

    with pytest.raises(ValueError, match="no module to put its 1/width multiplier on"):
        initwise.parametrize(FunctionalHead(32), "mup", base=FunctionalHead(8))


def test_weight_decay_keeps_lr_times_wd_width_independent() -> None:
    p = initwise.parametrize(mlp(128), "mup", base=_meta(mlp, 32))
    for opt in ("adam", "adamw", "sgd"):
        for g in p.param_groups(lr=0.02, optimizer=opt, weight_decay=0.1):  # type: ignore[arg-type]
            assert g["lr"] * g["weight_decay"] == pytest.approx(0.02 * 0.1), (opt, g["names"])


def _residual_update(name: str, depth: int) -> float:
    """One Adam step (lr 0.01): mean |Δ| of the residual stream before the final norm, relative
    to its size at init (tiny GPT, width 64, base depth 2)."""
    torch.manual_seed(0)
    m = tiny_gpt(64, depth)
    p = initwise.parametrize(m, name, base=tiny_gpt(64, 2, meta=True)).init(seed=0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 50, (8, 16), generator=g), torch.randint(0, 50, (8, 16), generator=g)
    seen: dict[str, torch.Tensor] = {}
    h = m.ln.register_forward_hook(lambda _m, a, _o: seen.__setitem__("h", a[0].detach()))
    with torch.no_grad():
        m(x)
    h0 = seen["h"]
    opt = torch.optim.Adam(p.param_groups(lr=1e-2))
    opt.zero_grad()
    nn.functional.cross_entropy(m(x).flatten(0, 1), y.flatten()).backward()
    opt.step()
    with torch.no_grad():
        m(x)
    h.remove()
    return float((seen["h"] - h0).abs().mean() / h0.abs().mean())


def test_completep_relative_residual_update_is_depth_independent_mup_grows() -> None:
    """Depth 2 -> 16 at width 64 (measured: CompleteP 1.40, 1.34, 1.47; μP 1.40, 2.25, 2.42)."""
    cp = [_residual_update("completep", d) for d in (2, 8, 16)]
    mup = [_residual_update("mup", d) for d in (2, 8, 16)]
    assert max(cp) / min(cp) < 1.25, cp
    assert mup[-1] / mup[0] > 1.5, mup


def test_param_groups_take_any_torch_optimizer_by_name_class_or_instance() -> None:
    """Adam-like optimizers (entry-wise normalized updates) take the Adam column, SGD-like the
    SGD column; the class, an instance and the name give the same groups; Muon / L-BFGS and
    typos are refused with the valid names."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    base = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    p = initwise.parametrize(model, "mup", base=base)

    def lrs(opt: object) -> list[float]:
        return sorted(g["lr"] for g in p.param_groups(lr=0.1, optimizer=opt))

    adam, sgd = lrs("adam"), lrs("sgd")
    assert adam != sgd
    for name in ("RMSprop", "adagrad", "NAdam", "radam", "adamax", "adadelta", "rprop"):
        assert lrs(name) == adam, name
    assert lrs("asgd") == sgd
    assert lrs(torch.optim.RMSprop) == adam and lrs(torch.optim.SGD) == sgd
    opt = torch.optim.Adagrad(p.param_groups(lr=0.1, optimizer=torch.optim.Adagrad))
    assert lrs(opt) == adam
    opt.zero_grad()
    for bad in ("adma", torch.optim.LBFGS):
        with pytest.raises(ValueError, match="optimizer") as err:
            p.param_groups(lr=0.1, optimizer=bad)
        assert "adamw" in str(err.value) and "sgd" in str(err.value)
    p.remove()
