"""Canonical parameter names: the same model gets the same names (and keys) under any wrapper.

Wrappers insert path segments into ``named_parameters()``: ``torch.compile`` adds
``_orig_mod``, activation checkpointing ``_checkpoint_wrapped_module``, FSDP1
``_fsdp_wrapped_module``, DDP and ``DataParallel`` a leading ``module``, and
``torch.nn.utils.parametrize`` moves ``weight`` to ``parametrizations.weight.original``.
:func:`canonical_name` removes all of them, so initwise's keyed engine draws the same values
for a parameter whatever wraps the model (FSDP2 ``fully_shard`` and tensor parallelism do not
rename parameters).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["WRAPPER_SEGMENTS", "Selection", "canonical_name", "name_matches", "selection"]

WRAPPER_SEGMENTS: frozenset[str] = frozenset(
    {"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module", "_offload_wrapped_module"}
)
"""Path segments that wrappers insert anywhere in a name; always removed."""


def canonical_name(name: str, *, strip_module: bool = True) -> str:
    """Return ``name`` without the path segments that wrappers insert.

    Removes ``_orig_mod`` (``torch.compile``), ``_checkpoint_wrapped_module`` (activation
    checkpointing), ``_fsdp_wrapped_module`` / ``_offload_wrapped_module`` (FSDP1) anywhere;
    leading ``module`` segments (DDP, ``DataParallel``; disable with ``strip_module=False``
    for a model whose own top-level child is called ``module``); and turns
    ``X.parametrizations.W.original`` into ``X.W`` (``original<i>`` into ``X.W.original<i>``,
    e.g. the two tensors of a weight-norm parametrization).

    Args:
        name: a qualified parameter or buffer name.
        strip_module: remove leading ``module.`` segments (DDP / DataParallel).

    >>> canonical_name("module._orig_mod.h.0._checkpoint_wrapped_module.attn.weight")
    'h.0.attn.weight'
    >>> canonical_name("fc.parametrizations.weight.original")
    'fc.weight'
    >>> canonical_name("fc.parametrizations.weight.original1")
    'fc.weight.original1'
    """
    if not isinstance(name, str):
        raise TypeError(f"canonical_name: expected a str, got {type(name).__name__}")
    parts = [p for p in name.split(".") if p not in WRAPPER_SEGMENTS]
    if strip_module:
        while len(parts) > 1 and parts[0] == "module":
            parts = parts[1:]
    out: list[str] = []
    i = 0
    while i < len(parts):
        if (
            parts[i] == "parametrizations"
            and i + 2 < len(parts)
            and (parts[i + 2] == "original" or (
                parts[i + 2].startswith("original") and parts[i + 2][len("original"):].isdigit()
            ))
        ):
            out.append(parts[i + 1])
            if parts[i + 2] != "original":
                out.append(parts[i + 2])
            i += 3
            continue
        out.append(parts[i])
        i += 1
    return ".".join(out)


@dataclass(frozen=True)
class Selection:
    """What a verb's ``only=`` selects: names (exact, or prefixes on ``.``), or a predicate.

    The one meaning of ``only=`` in ``init``, ``plan``, ``materialize`` and ``lsuv``:

    - a name or a list of names: a tensor is selected when one of them is its qualified name
      or a module prefix of it (``"encoder"`` selects ``encoder.0.weight``; the
      ``missing_keys`` of a partial ``load_state_dict`` select exactly what did not load);
      a name that matches nothing is an error (a typo would otherwise select nothing);
    - a predicate ``fn(name) -> bool`` on the tensor's qualified name (``lsuv`` also accepts
      ``fn(module_name, module) -> bool``).
    """

    names: tuple[str, ...] | None = None
    predicate: Callable[..., bool] | None = None
    arity: int = 1

    def matches(self, name: str) -> bool:
        """Whether ``name`` (a qualified tensor or module name) is selected by the names."""
        return self.names is not None and any(name_matches(name, p) for p in self.names)


def name_matches(name: str, pattern: str) -> bool:
    """``pattern`` is ``name`` or a module prefix of it (``a.b`` of ``a.b.c``; ``w`` of ``w[v]``)."""
    return name == pattern or name.startswith(pattern + ".") or name.startswith(pattern + "[")


def selection(only: object, verb: str) -> Selection | None:
    """Check ``only=`` of ``verb`` and return its :class:`Selection` (``None``: everything).

    >>> selection(["encoder", "head.weight"], "init").matches("encoder.0.bias")
    True
    >>> selection(5, "init")
    Traceback (most recent call last):
    ...
    TypeError: init: only= must be a name, a list of names or a predicate fn(name) -> bool, got int
    """
    if only is None:
        return None
    if callable(only):
        try:
            params = inspect.signature(only).parameters.values()
            required = [p for p in params if p.default is p.empty
                        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            arity = 2 if len(required) >= 2 else 1
        except (TypeError, ValueError):  # builtins without a signature
            arity = 1
        return Selection(predicate=only, arity=arity)
    if isinstance(only, str):
        return Selection(names=(only,))
    if isinstance(only, (bytes, int, float)) or not isinstance(only, Iterable):
        raise TypeError(f"{verb}: only= must be a name, a list of names or a predicate fn(name) -> bool, "
                        f"got {type(only).__name__}")
    names = tuple(only)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(f"{verb}: only= names must be strings, got {bad[0]!r} ({type(bad[0]).__name__})")
    return Selection(names=names)
