"""Sharded and meta-device initialization: the same weights at any number of ranks.

**Sharded init.** With :func:`init`, a model whose parameters are ``DTensor`` s (FSDP2
``fully_shard``, tensor parallel ``Shard(0)``/``Shard(1)``, 2-D meshes, FSDP on top of TP,
uneven shards) is initialized shard by shard: every rank writes only its own block, with no
communication, and fans, gains and stds come from the *global* shapes. The gathered weights are
bit-identical to a single-process :func:`initwise.init` of the same model with the same seed and
policy, at any world size and for any placement, because each value comes from the keyed
counter-based engine (:mod:`initwise.random`): element ``i`` of parameter ``name`` is a pure
function of ``(seed, name, i)``.

- *Elementwise schemes* (:data:`ELEMENTWISE_SCHEMES`: the normal / uniform / truncated-normal
  families, variance scaling, Glorot / He / LeCun, constants) are generated shard-locally:
  the engine fills the local block with its box offset in the whole (``offset=`` per-dimension
  starts, ``global_shape=``), so memory is that of the shard.
- *Everything else* (orthogonal, delta-orthogonal, sparse, eye, dirac, LSTM forget-gate
  biases, stacked q-k-v / gate blocks, user callables) uses the **fallback**: each rank builds
  the whole parameter (one parameter, never the model) from its key exactly as a single
  process would, and keeps its block. Results are identical; the cost is one parameter of
  scratch memory and the full parameter's compute on every rank.

Placements: ``Shard`` (even or uneven), ``Replicate`` and FSDP-over-TP strided shards whose
local block is a box in the whole; ``Partial`` is refused (a partial sum has no
elementwise init).

**Meta materialization.** :func:`materialize` gives a model built under
``torch.device("meta")`` (optionally already sharded) real storage module by module, rebuilds
its buffers (see :func:`materialize` for the rules) and initializes it with :func:`init`: peak
memory is the model plus one parameter, and the values equal an eager ``init`` bit for bit.

>>> import torch, initwise
>>> with torch.device("meta"):
...     net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> p = materialize(net, device="cpu", seed=0)
>>> eager = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> _ = initwise.init(eager, seed=0)
>>> torch.equal(net[2].weight, eager[2].weight)
True
"""

from __future__ import annotations

from ._names import canonical_name
from ._sharding import ELEMENTWISE_SCHEMES, fill_sharded_, is_dtensor, local_box
from .model.apply import write_dtensor
from .model.meta import materialize

__all__ = [
    "ELEMENTWISE_SCHEMES",
    "canonical_name",
    "fill_sharded_",
    "is_dtensor",
    "local_box",
    "materialize",
    "write_dtensor",
]
