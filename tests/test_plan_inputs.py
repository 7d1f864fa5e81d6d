"""Inputs a user gets wrong when planning or initializing a whole model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initwise


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def test_only_with_a_typo_is_an_error_not_a_silent_no_op() -> None:
    m = _net()
    before = [p.clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"unknown name in only= '3.weight'; did you mean '2.weight'"):
        initwise.init(m, "kaiming", only=["3.weight"])
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    # module prefixes and buffer names (e.g. from load_state_dict's missing_keys) are accepted
    initwise.init(m, "kaiming", only=["2"])
    assert torch.equal(before[0], m[0].weight) and not torch.equal(before[2], m[2].weight)


def test_only_error_lists_a_bounded_number_of_names() -> None:
    big = nn.Sequential(*[nn.Linear(4, 4) for _ in range(40)])
    with pytest.raises(ValueError, match=r"\.\.\. \(\d+ more\)"):
        initwise.plan(big, "auto", only=["nope"])


def test_lazy_parameters_get_a_clear_error() -> None:
    m = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"uninitialized lazy parameter.*run one forward pass"):
        initwise.plan(m, "auto")
    m(torch.randn(3, 5))  # materializes the lazy layer
    assert initwise.init(m, "auto").applied


def _mk(wrap) -> nn.Module:  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), wrap(nn.Linear(16, 16)), nn.GELU(), nn.Linear(16, 2))


def test_parametrized_weights_are_initialized_through_the_parametrization() -> None:
    plain = _mk(lambda m: m)
    initwise.init(plain, "auto", seed=0)
    wn = _mk(nn.utils.parametrizations.weight_norm)
    p = initwise.init(wn, "auto", seed=0)
    # one entry for the weight the module computes, under the plain name and key, with the
    # gain of the ReLU that feeds it: the weight-normed layer equals the plain one
    assert "2.weight" in {e.name for e in p.entries}
    assert not any("original" in e.name for e in p.entries)
    assert p["2.weight"].activation == "relu"
    assert torch.allclose(wn[2].weight, plain[2].weight, atol=1e-6)
    og = _mk(nn.utils.parametrizations.orthogonal)
    initwise.init(og, "orthogonal", seed=0)
    w = og[2].weight
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-5)
    before = [t.clone() for t in wn.parameters()]
    with pytest.raises(ValueError, match="did you mean"):
        initwise.init(wn, "auto", only=["2.weigth"])
    assert all(torch.equal(a, b) for a, b in zip(before, wn.parameters(), strict=True))
    initwise.init(wn, "auto", seed=5, only=["2.weight"])
    assert not torch.equal(before[2], wn[2].parametrizations.weight.original1)


def test_lsuv_leaves_parametrized_layers_untouched_and_says_so() -> None:
    m = _mk(nn.utils.parametrizations.spectral_norm)
    orig = m[2].parametrizations.weight.original.clone()
    with pytest.warns(initwise.InitwiseWarning, match="parametrized"):
        rep = initwise.lsuv(m, torch.randn(64, 8))
    assert rep.parametrized == ["2"]
    assert torch.equal(orig, m[2].parametrizations.weight.original)
    assert rep.converged and rep.forward_passes <= 3
