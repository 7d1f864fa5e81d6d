"""Entry checks shared by every scheme: one place decides how bad input is reported.

Every in-place scheme calls :func:`check_tensor` first. It raises a clear error for tensors
that can never be initialized (integer or bool dtypes, too few dimensions) and returns
``False`` for tensors where the call is a no-op (meta tensors, zero-element tensors; the
latter with a warning), so that all schemes behave the same on those inputs.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Iterable
from typing import NoReturn

import numpy as np
import torch

from ._errors import InitwiseWarning

__all__ = [
    "InitwiseWarning",
    "check_choice",
    "check_finite_positive",
    "check_seed",
    "check_tensor",
    "raise_unknown",
]


def raise_unknown(kind: str, value: object, valid: Iterable[str], *, limit: int | None = None) -> NoReturn:
    """Raise ``ValueError`` for an unknown option, listing the valid ones and a close match.

    ``limit`` caps how many valid options are listed (for long lists such as parameter names).
    """
    options = sorted(set(valid))
    msg = f"unknown {kind} {value!r}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), options, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    shown = options if limit is None or len(options) <= limit else [*options[:limit], f"... ({len(options) - limit} more)"]
    msg += f"{'' if msg.endswith('?') else '.'} Valid options: {', '.join(shown)}."
    raise ValueError(msg)


def check_choice(kind: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``, else raise :func:`raise_unknown`'s error."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise_unknown(kind, value, valid)
    return value


def check_finite_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Return ``float(value)`` if it is finite and positive (or zero when allowed), else raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "finite and >= 0" if allow_zero else "finite and > 0"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def check_tensor(tensor: object, fn: str, *, min_dim: int = 0, max_dim: int | None = None) -> bool:
    """Validate ``tensor`` for the in-place scheme ``fn``.

    Returns ``True`` when ``fn`` should fill the tensor and ``False`` when the call is a no-op
    (a meta tensor, or a tensor with no elements, which also warns). Raises ``TypeError`` for
    non-tensors and non-floating dtypes and ``ValueError`` for a wrong number of dimensions.
    All checks happen before anything is written.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{fn}: expected a torch.Tensor, got {type(tensor).__name__}")
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.is_complex():
        raise TypeError(
            f"{fn}: tensor must have a floating-point dtype (float16, bfloat16, float32, "
            f"float64), got {tensor.dtype}"
        )
    if tensor.dim() < min_dim:
        raise ValueError(
            f"{fn}: needs a tensor with at least {min_dim} dimensions, got shape "
            f"{tuple(tensor.shape)} ({tensor.dim()}-D)"
        )
    if max_dim is not None and tensor.dim() > max_dim:
        raise ValueError(
            f"{fn}: needs a tensor with at most {max_dim} dimensions, got shape "
            f"{tuple(tensor.shape)} ({tensor.dim()}-D)"
        )
    if tensor.is_meta:
        return False
    if tensor.numel() == 0:
        warnings.warn(
            f"{fn}: tensor has no elements (shape {tuple(tensor.shape)}); nothing to initialize",
            InitwiseWarning,
            stacklevel=3,
        )
        return False
    return True


def check_seed(seed: object, verb: str, *, allow_none: bool = False) -> int | None:
    """Return ``seed`` if it is a valid seed for ``verb``, else raise a clear ``TypeError``.

    The one meaning of ``seed=`` in ``init``, ``plan``, ``materialize``, ``lsuv`` and
    ``audit``: a Python ``int`` (a NumPy integer is accepted), which keys every
    random draw the verb makes; ``lsuv`` also accepts ``None`` (torch's global generator).
    """
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        extra = " or None" if allow_none else ""
        raise TypeError(f"{verb}: seed must be an int{extra}, got {type(seed).__name__} {seed!r}")
    return int(seed)
