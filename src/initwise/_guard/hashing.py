"""``digest``: a stable hash of a model's initial weights, per parameter, for CI."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import check_seed
from .._modules import unwrap
from .._sharding import whole_tensor
from ..model import init
from ..model.policy import Policy, Rule
from .report import DigestReport


def tensor_sha256(name: str, t: torch.Tensor) -> str:
    """SHA-256 of a tensor's name, dtype, shape and values (contiguous, little-endian); a
    DTensor's whole value (gathered: every rank must hash the same tensors in the same order)."""
    h = hashlib.sha256()
    h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
    data = whole_tensor(t.detach()).cpu().contiguous()
    if data.dtype == torch.bfloat16:
        data = data.view(torch.int16)
    arr = data.numpy()
    h.update(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


def digest(model: nn.Module, policy: str | Policy | Iterable[Rule] | None = None, *,
           seed: int = 0, example_inputs: Any = None) -> DigestReport:
    """Hash the initial weights of ``model``: one SHA-256 per parameter and a total.

    With ``policy``, a copy of the model is initialized by ``initwise.init(copy, policy,
    seed=seed)`` first (the model itself is not changed): the keyed engine draws every value
    from (seed, parameter name, rule) alone, so the digest is the same across thread counts,
    devices and platforms, and changes exactly when the plan or the seed does. Without
    ``policy`` the model's current values are hashed as they are (``seed`` is recorded only).
    Sharded parameters (FSDP2, tensor parallel: ``DTensor``) are hashed whole, gathered one at
    a time, so a sharded model's digest equals the single-process model's at any world size
    and placement; call it on every rank (the gathers are collectives).

    Pin it in a test so that any change to the init shows up in review::

        def test_init_is_pinned():
            assert initwise.digest(make_model(), "auto", seed=0).total == "3f5c..."

    >>> a = digest(nn.Linear(4, 3), "xavier", seed=1)
    >>> a.total == digest(nn.Linear(4, 3), "xavier", seed=1).total
    True
    >>> sorted(a.parameters)
    ['bias', 'weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"digest: model must be an nn.Module, got {type(model).__name__}")
    check_seed(seed, "digest")
    inner, _ = unwrap(model)
    if policy is not None:
        try:
            inner = copy.deepcopy(inner)
        except Exception as e:  # FSDP2: "FSDP does not support deepcopy"
            raise ValueError(
                f"digest: policy= initializes a copy of the model, and this model cannot be "
                f"copied ({type(e).__name__}: {e}); initialize the model itself "
                "(initwise.init / initwise.materialize) and call digest(model) without policy"
            ) from e
        init(inner, policy, seed=seed, example_inputs=example_inputs)
    per: dict[str, str] = {}
    for name, p in inner.named_parameters():
        if p.is_meta:
            raise ValueError(f"digest: parameter {name!r} is on the meta device (no values)")
        per[name] = tensor_sha256(name, p)
    total = hashlib.sha256("\n".join(f"{n}:{h}" for n, h in sorted(per.items())).encode())
    label = policy if isinstance(policy, str) or policy is None else type(policy).__name__
    return DigestReport(model=type(inner).__name__, seed=seed, policy=label,
                        total=total.hexdigest(), parameters=per)
