"""Apply an init scheme by name to a freshly built model: the only place compare touches init.

Names are ``"torch"`` (PyTorch's default init, i.e. leave the model as constructed),
``"lsuv"`` (:func:`initwise.lsuv` on a batch of training inputs) and every whole-model policy
preset (``"kaiming"``, ``"xavier"``, ``"auto"``, ``"orthogonal"``, ``"fixup"`` ...) or
registered scheme name that :func:`initwise.init` accepts; they are discovered from the library,
not listed here.

While the library's ``init`` is not importable (partial installs, development), a small
fallback built on ``torch.nn.init`` covers ``xavier``, ``kaiming``, ``lecun`` and
``orthogonal`` for Linear/Conv weights (biases zeroed); results record which backend ran.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["apply_scheme", "check_schemes", "scheme_names"]

_FALLBACK = ("xavier", "kaiming", "lecun", "orthogonal")


def _library() -> Any:
    import initwise

    return initwise


def _names_from(obj: Any) -> list[str]:
    if obj is None:
        return []
    if callable(obj) and not isinstance(obj, type):
        try:
            obj = obj()
        except TypeError:
            return []
    if isinstance(obj, dict):
        return [str(k) for k in obj]
    if isinstance(obj, Iterable) and not isinstance(obj, str):
        out = []
        for item in obj:
            name = item if isinstance(item, str) else getattr(item, "name", None)
            if isinstance(name, str):
                out.append(name)
        return out
    return []


def _policy_presets() -> list[str]:
    lib = _library()
    names: list[str] = []
    try:
        pol: Any = importlib.import_module("initwise.policy")
    except ImportError:
        pol = None
    for holder in (pol, lib):
        for attr in ("PRESETS", "POLICIES", "presets", "policies"):
            names += _names_from(getattr(holder, attr, None))
    return names


def _registered_schemes() -> list[str]:
    lib = _library()
    return _names_from(getattr(lib, "schemes", None))


def _has_init() -> bool:
    return callable(getattr(_library(), "init", None))


def _has_lsuv() -> bool:
    return callable(getattr(_library(), "lsuv", None))


def scheme_names() -> tuple[str, ...]:
    """Return every name :func:`apply_scheme` accepts, ``torch`` and ``lsuv`` first.

    Example:
        >>> {"torch", "kaiming", "xavier"} <= set(scheme_names())
        True
    """
    names = ["torch"]
    if _has_lsuv():
        names.append("lsuv")
    if _has_init():
        extra = _policy_presets() + _registered_schemes()
        names += [n for n in extra if n not in names]
    else:
        names += list(_FALLBACK)
    seen: dict[str, None] = dict.fromkeys(names)
    return tuple(seen)


def check_schemes(names: Iterable[str]) -> list[str]:
    """Validate ``names`` (unique, all known) and return them as a list.

    Raises ``ValueError`` listing the valid options for an unknown name.
    """
    valid = scheme_names()
    out: list[str] = []
    for n in names:
        if n not in valid:
            from .._checks import raise_unknown

            raise_unknown("scheme", n, valid)
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no schemes given")
    return out


def _fallback(model: nn.Module, name: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                continue
            w = m.weight
            fan_in = w.shape[1] * math.prod(w.shape[2:])
            fan_out = w.shape[0] * math.prod(w.shape[2:])
            if name == "xavier":
                std = math.sqrt(2.0 / (fan_in + fan_out))
            elif name == "kaiming":
                std = math.sqrt(2.0 / fan_in)
            elif name == "lecun":
                std = math.sqrt(1.0 / fan_in)
            else:
                nn.init.orthogonal_(w, gain=math.sqrt(2.0), generator=gen)
                std = -1.0
            if std > 0:
                w.normal_(0.0, std, generator=gen)
            if m.bias is not None:
                m.bias.zero_()


def _to_dict(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        try:
            return to_dict()
        except Exception:  # a report that cannot serialize must not sink the comparison
            return {"repr": repr(obj)[:2000]}
    return None


def apply_scheme(model: nn.Module, name: str, inputs: torch.Tensor, *, seed: int = 0
                 ) -> dict[str, Any]:
    """Initialize ``model`` in place with the scheme ``name``; return a JSON-able record.

    ``inputs`` is a batch of training inputs (used by data-dependent schemes such as LSUV and
    by ``initwise.init`` for shape inference).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> apply_scheme(m, "torch", torch.zeros(3, 4))["backend"]
        'torch'
    """
    check_schemes([name])
    if name == "torch":
        return {"scheme": name, "backend": "torch"}
    lib = _library()
    if name == "lsuv":
        rep = lib.lsuv(model, inputs, seed=seed)
        return {"scheme": name, "backend": "initwise.lsuv", "details": _to_dict(rep)}
    if _has_init():
        plan = lib.init(model, policy=name, example_inputs=inputs, seed=seed)
        return {"scheme": name, "backend": "initwise.init", "details": _to_dict(plan)}
    _fallback(model, name, seed)
    return {"scheme": name, "backend": "torch.nn.init fallback"}
