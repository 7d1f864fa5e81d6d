"""``initwise.parametrize`` (issue 16): SP, μP, CompleteP and spectral relative to a base model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import initwise


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


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown parametrization 'mupp'; did you mean 'mup'\?.*completep"):
        initwise.parametrize(mlp(8), "mupp", base=mlp(8))
    with pytest.raises(ValueError, match="base does not match"):
        initwise.parametrize(mlp(8, hidden=3), "mup", base=nn.Sequential(nn.Linear(40, 4)))
    p = initwise.parametrize(mlp(8), "mup", base=mlp(4))
    with pytest.raises(ValueError, match=r"unknown optimizer .adan.*adamw"):
        p.param_groups(lr=0.1, optimizer="adan")  # type: ignore[arg-type]
