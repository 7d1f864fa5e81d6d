"""Fans: how many inputs feed each output (fan_in) and how many outputs each input feeds (fan_out).

This is the one place that interprets weight shapes. Tensors follow torch's layout
``[out, in, *kernel]``. Modules whose weights are laid out differently, or whose real
connectivity differs from what the shape says (grouped and transposed convolutions, packed
attention projections, stacked RNN gates), are described by rules registered here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["Fans", "fans", "tensor_fans"]


class Fans(NamedTuple):
    """The fans of a weight: ``fan_in`` feeds each output, ``fan_out`` is fed by each input.

    Values are floats because some layers (strided transposed convolutions) have a
    non-integer average connectivity.
    """

    fan_in: float
    fan_out: float

    def select(self, mode: str) -> float:
        """Return the fan for ``mode`` (fan_in, fan_out, fan_avg or fan_geo_avg)."""
        from ._checks import check_choice
        from ._typing import FAN_MODES

        check_choice("mode", mode, FAN_MODES)
        if mode == "fan_in":
            return self.fan_in
        if mode == "fan_out":
            return self.fan_out
        if mode == "fan_avg":
            return (self.fan_in + self.fan_out) / 2.0
        return math.sqrt(self.fan_in * self.fan_out)


def tensor_fans(tensor: torch.Tensor | torch.Size | tuple[int, ...]) -> Fans:
    """Return the fans of a tensor (or shape) in torch's ``[out, in, *kernel]`` layout.

    ``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``, as in
    ``torch.nn.init._calculate_fan_in_and_fan_out``. Works on meta tensors.

    >>> tensor_fans(torch.empty(64, 32, 3, 3))
    Fans(fan_in=288.0, fan_out=576.0)
    """
    shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else tuple(tensor)
    if len(shape) < 2:
        raise ValueError(
            f"fans need a tensor with at least 2 dimensions ([out, in, *kernel]), got shape "
            f"{shape}; pass fans=Fans(fan_in, fan_out) explicitly for other layouts"
        )
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return Fans(float(shape[1] * receptive), float(shape[0] * receptive))


def fans(obj: torch.Tensor | torch.nn.Module, name: str = "weight") -> Fans:
    """Return the fans of a tensor, or of parameter ``name`` of a module.

    For modules the fans describe the real forward and backward connectivity (see the module
    rules in this file); unknown module types fall back to :func:`tensor_fans`.

    >>> fans(torch.nn.Linear(20, 30))
    Fans(fan_in=20.0, fan_out=30.0)
    """
    if isinstance(obj, torch.Tensor):
        return tensor_fans(obj)
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"fans: expected a tensor or nn.Module, got {type(obj).__name__}")
    param = getattr(obj, name, None)
    if not isinstance(param, torch.Tensor):
        raise ValueError(f"fans: {type(obj).__name__} has no tensor attribute {name!r}")
    return tensor_fans(param)
