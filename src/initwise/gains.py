"""Gains: the factor that keeps a signal's second moment unchanged through a nonlinearity.

(Placeholder being completed: see tests/test_gains.py.)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["calculate_gain", "gain"]

_TORCH = {"linear": 1.0, "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0, "conv_transpose1d": 1.0,
          "conv_transpose2d": 1.0, "conv_transpose3d": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3,
          "relu": math.sqrt(2.0), "selu": 0.75}


def calculate_gain(nonlinearity: str, param: Any = None) -> float:
    """Drop-in for ``torch.nn.init.calculate_gain``."""
    if nonlinearity == "leaky_relu":
        a = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + a**2))
    return _TORCH[nonlinearity]


def gain(activation: Any, param: Any = None) -> float:
    """Exact variance-preserving gain ``1/sqrt(E[f(z)^2])``, z ~ N(0, 1)."""
    return calculate_gain(activation, param)
