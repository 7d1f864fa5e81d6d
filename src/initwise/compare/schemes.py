"""Apply an init scheme by name to a freshly built model: the only place compare touches init.

Names are ``"torch"`` (PyTorch's default init, i.e. leave the model as constructed),
``"lsuv"`` (:func:`initwise.lsuv` on a batch of training inputs), every whole-model policy
preset (``"kaiming"``, ``"xavier"``, ``"auto"``, ``"orthogonal"``, ``"fixup"`` ...) and every
registered fan-based or orthogonal scheme (``"xavier_normal"``, ``"he_uniform"`` ..., applied to
every weight through ``initwise.presets.scheme``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["apply_scheme", "check_schemes", "scheme_names"]

def scheme_names() -> tuple[str, ...]:
    """Return every name :func:`apply_scheme` accepts, ``torch`` and ``lsuv`` first.

    Example:
        >>> {"torch", "lsuv", "kaiming", "xavier", "xavier_normal"} <= set(scheme_names())
        True
    """
    from ..policy import PRESETS
    from ..registry import resolve_scheme_name, schemes
    from ..registry import scheme_names as registered

    # every registered name or alias of a fan-based or orthogonal scheme (applied to each weight)
    ok = {s.name for s in schemes() if (s.uses_fans or s.name == "orthogonal")}
    usable = [n for n in registered() if resolve_scheme_name(n) in ok]
    return tuple(dict.fromkeys(["torch", "lsuv", *PRESETS, *usable]))


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
    import initwise

    if name == "lsuv":
        rep = initwise.lsuv(model, inputs, seed=seed)
        return {"scheme": name, "backend": "initwise.lsuv", "details": _to_dict(rep)}
    plan = initwise.init(model, policy=name, example_inputs=inputs, seed=seed)
    return {"scheme": name, "backend": "initwise.init", "details": _to_dict(plan)}
