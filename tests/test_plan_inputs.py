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


def test_only_missing_tied_head_leaves_the_loaded_embedding_alone() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.emb.weight

    src = LM()
    sd = {k: v for k, v in src.state_dict().items() if k != "head.weight"}  # safetensors style
    m = LM()
    missing = m.load_state_dict(sd, strict=False).missing_keys
    assert missing == ["head.weight"]
    p = initwise.init(m, "gpt2", only=missing)
    assert torch.equal(m.emb.weight, src.emb.weight)
    e = p["emb.weight"]
    assert e.action == "skip" and "tied to head.weight" not in e.reason
    assert "not in only" in e.reason


def test_rrelu_gain_is_exact_and_planning_does_not_blow_up() -> None:
    import math

    r = nn.RReLU(0.1, 0.3)
    ea2 = (0.1**2 + 0.1 * 0.3 + 0.3**2) / 3
    assert initwise.gain(r) == pytest.approx(math.sqrt(2 / (1 + ea2)), rel=1e-12)
    m = nn.Sequential(nn.Linear(8, 16), nn.RReLU(), nn.Linear(16, 2))
    assert initwise.plan(m, "auto")["2.weight"].activation == "leaky_relu"
    with pytest.raises(ValueError, match="does not settle"):
        initwise.gain(lambda x: x * torch.rand_like(x))


def test_parametrization_that_refuses_assignment_fails_before_any_write() -> None:
    m = _mk(lambda lin: nn.utils.parametrizations.orthogonal(lin, orthogonal_map="cayley", use_trivialization=False))
    before = [t.clone() for t in m.parameters()]
    with pytest.raises(ValueError, match="cannot be assigned a new value"):
        initwise.init(m, "auto")
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_spectral_norm_layer_is_normalized_right_after_init() -> None:
    m = _mk(nn.utils.parametrizations.spectral_norm)
    initwise.init(m, "dcgan", seed=0)
    m.eval()
    assert torch.linalg.matrix_norm(m[2].weight, 2).item() == pytest.approx(1.0, abs=1e-3)


def test_only_accepts_the_names_behind_a_parametrization() -> None:
    m = _mk(nn.utils.parametrizations.weight_norm)
    missing = ["2.parametrizations.weight.original0", "2.parametrizations.weight.original1"]
    p = initwise.init(m, "auto", only=missing)
    assert p["2.weight"].action == "init" and p["0.weight"].action == "skip"
