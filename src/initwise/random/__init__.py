"""Keyed, counter-based random numbers for initialization (Philox4x32-10).

torch's CPU generator is sequential: a tensor's values depend on everything drawn before it,
element ``i`` cannot be produced without ``0 .. i-1``, and ``normal_`` runs on one core. Here
element ``i`` of a named tensor is a pure function of ``(key, i)``:

* values do not depend on construction order, thread count or chunking;
* a shard (``offset`` / ``global_shape``) equals the same elements of the whole;
* a native C path (multithreaded, vectorized), a pure NumPy path and a torch-ops path (any
  device) give bit-identical values: float64 values rounded once to the tensor's dtype, and
  for ``normal_`` into float32 and narrower tensors a float32 Box-Muller (see
  :func:`normal_precision`).

>>> import torch
>>> from initwise import random as iwr
>>> k = iwr.key(0, "encoder.layer0.weight")
>>> w = iwr.normal_(torch.empty(64, 32), k, std=0.02)
>>> with iwr.use_backend("numpy"):
...     w2 = iwr.normal_(torch.empty(64, 32), k, std=0.02)
>>> torch.equal(w, w2)
True

See docs/random.md for the design and the guarantees.
"""

from __future__ import annotations

from ._engine import (
    Backend,
    Key,
    NormalPrecision,
    OrthogonalMethod,
    RandomDistribution,
    backend,
    get_num_threads,
    key,
    native_available,
    normal_,
    normal_precision,
    orthogonal_method,
    sample,
    set_num_threads,
    trunc_normal_,
    uniform_,
    use_backend,
    use_normal_precision,
    use_orthogonal_method,
)

__all__ = [
    "Backend",
    "Key",
    "NormalPrecision",
    "OrthogonalMethod",
    "RandomDistribution",
    "backend",
    "get_num_threads",
    "key",
    "native_available",
    "normal_",
    "normal_precision",
    "orthogonal_method",
    "sample",
    "set_num_threads",
    "trunc_normal_",
    "uniform_",
    "use_backend",
    "use_normal_precision",
    "use_orthogonal_method",
]
