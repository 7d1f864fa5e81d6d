"""Fixup's scalar biases and multipliers, added to a model that lacks them.

Zhang et al. 2019 (Fixup), section 3: "add a scalar multiplier (initialized at 1) in every
branch and a scalar bias (initialized at 0) before each convolution, linear, and element-wise
activation layer". For each residual branch the structure analysis finds (its weight layers
in order), each layer gets

* ``fixup_bias_in`` (0): added to the layer's input (the bias before each conv/linear);
* ``fixup_bias_out`` (0): added to its output, i.e. before the activation that follows
  (the bias before each element-wise activation), except after the branch's last layer;
* on the branch's last layer ``fixup_scale`` (1) multiplies the output and ``fixup_bias_out``
  (0) is added after it (the multiplier and the bias closing the branch, as in the paper's
  ``BasicBlock``: ``conv2(x + b2a) * scale + b2b``);

and the classifier gets ``fixup_bias_in`` (the bias before the final linear layer). They are
registered as parameters of the layer (an optimizer built after ``init`` sees them; their
names end in ``fixup_bias_in`` / ``fixup_bias_out`` / ``fixup_scale``, roles ``scalar_bias``
and ``scalar_scale``) and applied by forward (pre-)hooks. :func:`remove_fixup_scalars` takes
them off again. A branch whose block already has scalar parameters of its own (a Fixup model
written by hand) gets none.

``plan`` lists what ``init`` would add (:class:`AddedScalar`, ``Plan.added``) and adds nothing;
``init`` adds them only after every tensor's work has been validated, and takes them off again
if writing fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .._modules import is_weight_layer
from .structure import GraphInfo

__all__ = ["FIXUP_NAMES", "AddedScalar", "add_scalars", "plan_fixup_scalars", "remove_fixup_scalars"]

FIXUP_NAMES = ("fixup_bias_in", "fixup_bias_out", "fixup_scale")
_HANDLES = "_initwise_fixup_handles"


@dataclass(frozen=True)
class AddedScalar:
    """One scalar parameter ``init`` adds to a module: ``module.name = value``, applied to the
    module's ``where`` (``"input"`` or ``"output"``) by ``op`` (``"add"`` or ``"mul"``)."""

    module: str
    name: str
    value: float
    where: str
    op: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AddedScalar:
        return cls(**dict(d))

    def __str__(self) -> str:
        full = f"{self.module}.{self.name}" if self.module else self.name
        return f"{full} = {self.value:g} ({self.op} at the {self.where}: {self.reason})"


def _block_of(layers: Sequence[str]) -> str:
    """The deepest module containing every layer of a branch (their common name prefix)."""
    parts = [name.split(".") for name in layers]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if common and len(common) == len(parts[0]) and len(parts) == 1:
        common = common[:-1]  # one layer: its parent is the block
    return ".".join(common)


def _has_own_scalars(model: nn.Module, block: str, layers: Sequence[str]) -> bool:
    mods = dict(model.named_modules())
    b = mods.get(block)
    if b is not None and block:
        for p in b.parameters(recurse=False):
            if p.numel() == 1:
                return True
    return any(hasattr(mods.get(n), "fixup_bias_in") for n in layers)


def plan_fixup_scalars(model: nn.Module, info: GraphInfo, classifier: str | None
                       ) -> tuple[list[AddedScalar], list[str]]:
    """What Fixup's scalars ``init`` would add to ``model`` (module docs), and notes."""
    mods = dict(model.named_modules())
    added: list[AddedScalar] = []
    notes: list[str] = []
    own = 0
    for b in info.branches:
        layers = [n for n in b.layers if n in mods and is_weight_layer(mods[n])]
        if not layers:
            continue
        if _has_own_scalars(model, _block_of(layers), layers):
            own += 1
            continue
        for i, n in enumerate(layers):
            added.append(AddedScalar(n, "fixup_bias_in", 0.0, "input", "add",
                                     "Fixup scalar bias before the layer"))
            if i == len(layers) - 1:
                added.append(AddedScalar(n, "fixup_scale", 1.0, "output", "mul",
                                         "Fixup scalar multiplier closing the branch"))
                added.append(AddedScalar(n, "fixup_bias_out", 0.0, "output", "add",
                                         "Fixup scalar bias after the branch's multiplier"))
            else:
                added.append(AddedScalar(n, "fixup_bias_out", 0.0, "output", "add",
                                         "Fixup scalar bias before the activation"))
    if classifier and classifier in mods and added \
            and not hasattr(mods[classifier], "fixup_bias_in"):
        added.append(AddedScalar(classifier, "fixup_bias_in", 0.0, "input", "add",
                                 "Fixup scalar bias before the classifier"))
    if own:
        notes.append(f"fixup: {own} residual branch(es) already have scalar parameters of their "
                     "own: no Fixup scalars added there")
    if added:
        n_mod = len({a.module for a in added})
        notes.append(f"fixup: init adds {len(added)} scalar parameters (biases 0, multipliers 1) "
                     f"to {n_mod} modules, applied by forward hooks (Plan.added; "
                     "initwise.remove_fixup_scalars takes them off)")
    return added, notes


def _pre(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    bias = getattr(mod, "fixup_bias_in", None)
    if not isinstance(bias, torch.Tensor):
        return None
    return (args[0] + bias, *args[1:])


def _post(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
    if not isinstance(out, torch.Tensor):
        return None
    scale = getattr(mod, "fixup_scale", None)
    if isinstance(scale, torch.Tensor):
        out = out * scale
    bias = getattr(mod, "fixup_bias_out", None)
    return out + bias if isinstance(bias, torch.Tensor) else out


def add_scalars(model: nn.Module, added: Sequence[AddedScalar]) -> None:
    """Register the planned scalars as parameters of their modules, with their hooks (all or
    nothing: on an error, what was added is taken off again)."""
    mods = dict(model.named_modules())
    done: list[nn.Module] = []
    try:
        by_module: dict[str, list[AddedScalar]] = {}
        for a in added:
            by_module.setdefault(a.module, []).append(a)
        for name, items in by_module.items():
            m = mods[name]
            ref = next((p for p in m.parameters(recurse=False)), None)
            kw: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
            done.append(m)
            handles = []
            for a in items:
                if hasattr(m, a.name):
                    raise ValueError(f"{name} already has an attribute {a.name!r}")
                m.register_parameter(a.name, nn.Parameter(torch.full((), a.value, **kw)))
            if any(a.where == "input" for a in items):
                handles.append(m.register_forward_pre_hook(_pre))
            if any(a.where == "output" for a in items):
                handles.append(m.register_forward_hook(_post))
            setattr(m, _HANDLES, handles)
    except BaseException:
        for m in done:
            _strip(m)
        raise


def _strip(m: nn.Module) -> bool:
    found = False
    for h in getattr(m, _HANDLES, []):
        h.remove()
        found = True
    if hasattr(m, _HANDLES):
        delattr(m, _HANDLES)
    for n in FIXUP_NAMES:
        if isinstance(getattr(m, n, None), nn.Parameter):
            delattr(m, n)
            found = True
    return found


def remove_fixup_scalars(model: nn.Module, modules: Sequence[str] | None = None) -> list[str]:
    """Take off the Fixup scalars ``init(policy="fixup")`` added (parameters and hooks), on
    every module or on ``modules`` (qualified names); return the names of the modules they were
    on. Trained values are dropped with them.

    >>> net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> remove_fixup_scalars(net)
    []
    """
    keep = None if modules is None else set(modules)
    return [n for n, m in model.named_modules() if (keep is None or n in keep) and _strip(m)]
