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
