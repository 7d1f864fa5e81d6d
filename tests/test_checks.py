"""The shared validators of ``initwise._checks`` on good input (bad input: test_bad_input.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from initwise._checks import (
    BadValueError,
    NotATensorError,
    UnsupportedDtypeError,
    ZeroValueError,
    check_batched_inputs,
    check_materialized,
    check_seed,
)


@given(st.integers(0, 2**63 - 1))
def test_check_seed_accepts_every_non_negative_int(seed: int) -> None:
    assert check_seed(seed, "lsuv") == seed
    assert check_seed(np.int64(seed % 2**62), "lsuv") == seed % 2**62


def test_check_seed_none_and_negative() -> None:
    assert check_seed(None, "lsuv") is None
    assert check_seed(-3, "init") == -3  # the keyed engine takes any int


def test_check_materialized_passes_real_models() -> None:
    check_materialized(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3)), "audit")


@pytest.mark.parametrize(
    "inputs",
    [torch.zeros(2, 3), (torch.zeros(4, 3), torch.zeros(4)), [torch.zeros(1, 5)], {"x": torch.zeros(3, 2), "mask": None}],
    ids=["tensor", "tuple", "list", "dict"],
)
def test_check_batched_inputs_passes_batches(inputs: object) -> None:
    check_batched_inputs(inputs, "lsuv")


@pytest.mark.parametrize(
    "cls,bases",
    [(BadValueError, (ValueError, RuntimeError)), (UnsupportedDtypeError, (TypeError, NotImplementedError)),
     (ZeroValueError, (ValueError, ZeroDivisionError)), (NotATensorError, (TypeError, AttributeError))],
    ids=lambda v: getattr(v, "__name__", "bases"),
)
def test_error_classes_derive_from_ours_and_torchs_type(cls: type, bases: tuple[type, ...]) -> None:
    assert all(issubclass(cls, b) for b in bases)
