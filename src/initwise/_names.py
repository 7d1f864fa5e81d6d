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

__all__ = ["WRAPPER_SEGMENTS", "canonical_name"]

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
