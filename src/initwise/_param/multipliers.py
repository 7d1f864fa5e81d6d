"""Forward multipliers, installed as removable hooks.

Three kinds, each on one module:

- ``readout``: the module's input is multiplied by ``factor`` (μP's ``1/m_in`` on the
  readout: ``W (x·f) + b``, the bias unscaled, as the ``mup`` package's ``MuReadout``);
- ``query``: the module's output, or one fused part of it along the last dimension (q of a
  packed q-k-v such as GPT-2's ``c_attn``), is multiplied by ``factor`` (attention ``1/d``);
- ``branch``: the module's output (the last layer of a residual branch, or the norm after it)
  is multiplied by ``factor`` (CompleteP's ``m_L^-α``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["KINDS", "Kind", "Multiplier", "install"]

Kind = Literal["readout", "query", "branch"]
KINDS: tuple[Kind, ...] = ("readout", "query", "branch")


@dataclass(frozen=True)
class Multiplier:
    """One forward multiplier: on which module, what it multiplies, by how much, and why."""

    module: str
    kind: Kind
    factor: float
    part: int | None = None  # query: the fused part of the output (None: all of it)
    parts: int = 1
    param: str = ""  # the parameter it belongs to (readout weight, query weight, writer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        where = {"readout": "input of", "query": "output of", "branch": "output of"}[self.kind]
        part = f" (part {self.part} of {self.parts})" if self.part is not None else ""
        return f"{self.kind:8s} x{self.factor:.6g} on the {where} {self.module or '(model)'}{part}"


def _scale(x: Any, f: float) -> Any:
    if isinstance(x, torch.Tensor):
        return x * f
    if isinstance(x, tuple) and x and isinstance(x[0], torch.Tensor):
        return (x[0] * f, *x[1:])
    raise TypeError(f"cannot multiply a module output of type {type(x).__name__}")


def _readout(f: float) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (args[0] * f, *args[1:]), kwargs
        key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
        return args, {**kwargs, key: kwargs[key] * f}

    return hook


def _query(f: float, part: int | None, parts: int) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, out: Any) -> Any:
        if part is None:
            return _scale(out, f)
        size = out.shape[-1] // parts
        chunks = list(out.split(size, dim=-1))
        chunks[part] = chunks[part] * f
        return torch.cat(chunks, dim=-1)

    return hook


def _branch(f: float) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, out: Any) -> Any:
        return _scale(out, f)

    return hook


def install(model: nn.Module, mults: list[Multiplier], where: str = "parametrize") -> list[RemovableHandle]:
    """Register every multiplier on ``model`` (unwrapped); the handles remove them."""
    mods = dict(model.named_modules())
    missing = [m.module for m in mults if m.module not in mods]
    if missing:
        raise ValueError(f"{where}: no module {missing[0]!r} in the model to put a forward multiplier on")
    handles: list[RemovableHandle] = []
    try:
        for m in mults:
            mod = mods[m.module]
            if m.kind == "readout":
                handles.append(mod.register_forward_pre_hook(_readout(m.factor), with_kwargs=True))
            elif m.kind == "query":
                handles.append(mod.register_forward_hook(_query(m.factor, m.part, m.parts)))
            else:
                handles.append(mod.register_forward_hook(_branch(m.factor)))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles
