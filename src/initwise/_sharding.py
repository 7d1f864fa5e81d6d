"""Sharded-tensor geometry: which block of the whole a rank holds, and filling just that block.

Below the planner: :func:`local_box` reads a ``DTensor``'s block (DTensor's own sharding math),
and :func:`fill_sharded_` runs a fill so that a DTensor receives exactly its block of what the
fill writes to the whole, bit for bit (the keyed engine draws the block's elements by their
global indices). :mod:`initwise.model` uses them to write plans into FSDP2 / tensor-parallel
parameters; see :mod:`initwise.distributed` for the whole story.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ._torch import compute_local_shape_and_global_offset, is_dtensor, local_tensor
from .random._engine import shard_scope

__all__ = ["ELEMENTWISE_SCHEMES", "fill_sharded", "fill_sharded_", "is_dtensor", "local_box", "whole_tensor"]

log = logging.getLogger("initwise")

ELEMENTWISE_SCHEMES: frozenset[str] = frozenset({
    "uniform", "normal", "trunc_normal", "truncated_normal", "constant", "ones", "zeros",
    "variance_scaling", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
    "lecun_uniform", "lecun_normal",
})  # fmt: skip
"""Registry schemes whose value at an index depends only on the key and that index: generated
shard-locally. Every other scheme uses the whole-parameter fallback."""




def whole_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor, gathered (``full_tensor()``: a collective, so every rank
    of its mesh must call this for the same tensors in the same order; memory: one whole
    tensor); any other tensor as it is."""
    if is_dtensor(tensor):
        return tensor.detach().full_tensor()  # type: ignore[attr-defined]
    return tensor


def local_box(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(local_shape, global_offset)`` of this rank's block of the DTensor ``tensor``.

    The local tensor is ``whole[o0:o0+s0, o1:o1+s1, ...]``, computed with DTensor's own
    sharding math (``compute_local_shape_and_global_offset``) and checked against the local
    tensor's actual shape. Raises ``ValueError`` for ``Partial`` placements and for a non-DTensor.
    """
    if not is_dtensor(tensor):
        raise ValueError(f"local_box: expected a DTensor, got {type(tensor).__name__}")
    placements = tuple(tensor.placements)  # type: ignore[attr-defined]
    partial = [p for p in placements if p.is_partial()]
    if partial:
        raise ValueError(
            f"cannot initialize a DTensor with placement {partial[0]}: a partial sum has no "
            "elementwise initialization; redistribute it to Shard/Replicate first"
        )
    shape, offset = compute_local_shape_and_global_offset(
        tensor.shape, tensor.device_mesh, placements  # type: ignore[attr-defined]
    )
    local = local_tensor(tensor)
    if tuple(local.shape) != tuple(shape) or len(offset) != tensor.dim():
        raise ValueError(
            f"DTensor placements {placements} on mesh {tuple(tensor.device_mesh.shape)} give a "  # type: ignore[attr-defined]
            f"local block {tuple(shape)} at {tuple(offset)}, but the local tensor has shape "
            f"{tuple(local.shape)}: this layout is not a box of the whole and is not supported"
        )
    return tuple(int(s) for s in shape), tuple(int(o) for o in offset)


def fill_sharded_(
    tensor: torch.Tensor, fill: Callable[[torch.Tensor], object], *, elementwise: bool
) -> torch.Tensor:
    """Run ``fill`` so that a DTensor receives exactly its block of what ``fill`` writes to the whole.

    ``fill(t)`` initializes a plain tensor ``t`` of the global shape with keyed draws
    (``generator=`` an :class:`initwise.random.Key`). For a plain ``tensor`` it is simply called.
    For a DTensor:

    - ``elementwise=True``: ``fill`` runs on the local tensor while the engine's fills of that
      tensor draw its box of the whole (no communication, memory of the shard). If ``fill``
      draws into any other tensor the result is discarded and the fallback runs instead.
    - ``elementwise=False`` (the fallback): ``fill`` runs on a scratch tensor of the global
      shape (one parameter) and the local block is copied out of it.

    Either way the block equals the same elements of ``fill`` applied to the whole, bit for bit.

    >>> from initwise import random as iwr
    >>> w = torch.empty(4, 6)
    >>> _ = fill_sharded_(w, lambda t: iwr.normal_(t, iwr.key(0, "w")), elementwise=True)
    >>> torch.equal(w, iwr.normal_(torch.empty(4, 6), iwr.key(0, "w")))
    True
    """
    fill_sharded(tensor, fill, elementwise)
    return tensor


def fill_sharded(tensor: torch.Tensor, fill: Callable[[torch.Tensor], object], elementwise: bool) -> bool:
    """:func:`fill_sharded_`; returns whether the block was generated shard-locally."""
    if not is_dtensor(tensor):
        with torch.no_grad():
            fill(tensor)
        return True
    shape, offset = local_box(tensor)
    local = local_tensor(tensor)
    if local.numel() == 0:  # an empty shard (more ranks than rows): nothing to write
        return True
    gshape = tuple(int(s) for s in tensor.shape)
    with torch.no_grad():
        if elementwise:
            with shard_scope(local, offset, gshape) as foreign:
                fill(local)
            if not foreign:
                return True
            log.debug("fill_sharded_: fill drew into %s scratch tensors; using the fallback", foreign)
        whole = torch.empty(gshape, dtype=local.dtype, device=local.device)
        fill(whole)
        local.copy_(whole[tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))])
    return False

