"""Tied parameters: which names a model says share one tensor, and whether they do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .._sharding import whole_tensor
from .._torch import local_tensor
from .report import Finding


def expected_ties(model: nn.Module) -> list[tuple[str, str]]:
    """``(target, source)`` name pairs the model declares tied.

    Hugging Face models declare them (``get_expanded_tied_weights_keys``, which honours
    ``config.tie_word_embeddings``; older versions: a ``_tied_weights_keys`` mapping); plain
    torch models declare none.
    """
    expand = getattr(model, "get_expanded_tied_weights_keys", None)
    pairs: list[tuple[str, str]] = []
    if callable(expand):
        try:
            found = expand(all_submodels=True)
        except Exception:  # a model that cannot expand its own keys declares nothing usable
            found = {}
        if isinstance(found, Mapping):
            pairs = [(str(k), str(v)) for k, v in found.items()]
        return pairs
    for prefix, m in model.named_modules():
        keys = getattr(type(m), "_tied_weights_keys", None)
        if isinstance(keys, Mapping):
            pre = f"{prefix}." if prefix else ""
            pairs += [(pre + str(k), pre + str(v)) for k, v in keys.items()]
    return pairs


def _get(model: nn.Module, name: str) -> torch.Tensor | None:
    try:
        return model.get_parameter(name)
    except AttributeError:
        return None


@torch.no_grad()
def tie_findings(model: nn.Module, ties: Iterable[tuple[str, str]]) -> list[Finding]:
    """Findings for each expected tie whose two names hold different storage."""
    out: list[Finding] = []
    for target, source in ties:
        a, b = _get(model, target), _get(model, source)
        if a is None or b is None or a.is_meta or b.is_meta:
            continue
        # a DTensor's storage is its local shard's (FSDP2 keeps a tie as one DTensor)
        sa, sb = local_tensor(a).untyped_storage(), local_tensor(b).untyped_storage()
        if a is b or (sa.data_ptr() == sb.data_ptr() and a.shape == b.shape):
            continue
        same = a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(whole_tensor(a), whole_tensor(b)))
        if same:
            out.append(Finding(target, "tie_broken", "warning",
                               f"expected tied to {source}: equal values but separate storage "
                               "(training will move them apart)"))
        else:
            out.append(Finding(target, "tie_diverged", "error",
                               f"expected tied to {source}, but the two owners hold different "
                               "values (an init or load wrote one of them after tying)"))
    return out
