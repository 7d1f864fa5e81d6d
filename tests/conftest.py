"""Shared test helpers: seeded statistics with tolerances from the math."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def assert_variance(x: torch.Tensor | np.ndarray, target_var: float, *, excess_kurtosis: float,
                    mean: float = 0.0, k: float = 6.0) -> None:
    """Assert the sample variance is within ``k`` standard errors of ``target_var``.

    The relative standard error of a sample variance is ``sqrt((2 + excess_kurtosis) / n)``.
    """
    a = np.asarray(x.detach().double().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    a = a.ravel()
    n = a.size
    var = float(np.mean((a - mean) ** 2))
    rel_se = math.sqrt((2.0 + excess_kurtosis) / n)
    assert abs(var / target_var - 1.0) <= k * rel_se, (
        f"variance {var:.6g} vs target {target_var:.6g}: relative error "
        f"{abs(var / target_var - 1):.3g} > {k} x {rel_se:.3g}"
    )


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality: same dtype and shape, every byte equal (NaN-safe, sign of zero included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    if a.dtype == torch.bool:
        return bool(torch.equal(a, b))
    return bool(torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)))
