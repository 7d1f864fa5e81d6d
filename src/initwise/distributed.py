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

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._names import canonical_name
from .random._engine import shard_scope

__all__ = [
    "ELEMENTWISE_SCHEMES",
    "canonical_name",
    "fill_sharded_",
    "is_dtensor",
    "local_box",
    "materialize",
    "write_dtensor",
]

log = logging.getLogger("initwise")

ELEMENTWISE_SCHEMES: frozenset[str] = frozenset({
    "uniform", "normal", "trunc_normal", "truncated_normal", "constant", "ones", "zeros",
    "variance_scaling", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
    "lecun_uniform", "lecun_normal",
})  # fmt: skip
"""Registry schemes whose value at an index depends only on the key and that index: generated
shard-locally. Every other scheme uses the whole-parameter fallback."""



# --------------------------------------------------------------------------------------------
# DTensor geometry
# --------------------------------------------------------------------------------------------


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (False if unavailable).

    >>> is_dtensor(torch.zeros(2))
    False
    """
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch built without distributed
        return False
    return isinstance(tensor, DTensor)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor._local_tensor  # type: ignore[attr-defined]


def local_box(tensor: torch.Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(local_shape, global_offset)`` of this rank's block of the DTensor ``tensor``.

    The local tensor is ``whole[o0:o0+s0, o1:o1+s1, ...]``, computed with DTensor's own
    sharding math (``compute_local_shape_and_global_offset``) and checked against the local
    tensor's actual shape. Raises ``ValueError`` for ``Partial`` placements and for a non-DTensor.
    """
    if not is_dtensor(tensor):
        raise ValueError(f"local_box: expected a DTensor, got {type(tensor).__name__}")
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

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
    local = _local(tensor)
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
    _fill_sharded(tensor, fill, elementwise)
    return tensor


def _fill_sharded(tensor: torch.Tensor, fill: Callable[[torch.Tensor], object], elementwise: bool) -> bool:
    """:func:`fill_sharded_`; returns whether the block was generated shard-locally."""
    if not is_dtensor(tensor):
        with torch.no_grad():
            fill(tensor)
        return True
    shape, offset = local_box(tensor)
    local = _local(tensor)
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


# --------------------------------------------------------------------------------------------
# init with DTensor support
# --------------------------------------------------------------------------------------------


def _is_elementwise(work: Any) -> bool:
    from .registry import Scheme

    s = work.scheme
    if not isinstance(s, Scheme) or not getattr(s.fn, "__module__", "").startswith("initwise."):
        return False
    if work.special is not None or work.entry.blocks != 1:
        return False
    if s.uses_fans and work.fans is None:  # the scheme would read fans off the local shape
        return False
    return s.name in ELEMENTWISE_SCHEMES


def write_dtensor(work: Any, seed: int, write: Callable[[Any, int], None]) -> bool:
    """Write one :func:`initwise.init` work item into a DTensor parameter, shard-locally.

    ``work`` is ``initwise.plan``'s per-tensor work item (a dataclass with ``tensor``,
    ``scheme``, ``fans``, ``special``, ``padding_idx`` and ``entry``) and ``write(work, seed)``
    the function that writes it into a plain tensor. Elementwise schemes run on the local block
    (the embedding ``padding_idx`` row is zeroed where it falls in the block); everything else
    runs ``write`` on a whole-parameter scratch tensor (see :func:`fill_sharded_`). Returns
    whether the block was generated shard-locally (False: the whole-parameter fallback ran).
    """
    t = work.tensor
    if not _is_elementwise(work):
        return _fill_sharded(t, lambda x: write(dataclasses.replace(work, tensor=x), seed), False)
    local_ok = _fill_sharded(
        t, lambda x: write(dataclasses.replace(work, tensor=x, padding_idx=None), seed), True
    )
    pad = work.padding_idx
    if pad is not None:
        shape, offset = local_box(t)
        r = int(pad) - offset[0]
        if 0 <= r < shape[0]:
            with torch.no_grad():
                _local(t)[r].zero_()
    return local_ok


# --------------------------------------------------------------------------------------------
# materialize
# --------------------------------------------------------------------------------------------

_BN_BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
ResetFn = Callable[[str, nn.Module], bool]


def _rope_values(module: nn.Module, device: torch.device) -> torch.Tensor | None:
    """``inv_freq`` of a Hugging Face-style rotary embedding, recomputed from its config."""
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None
    fn = getattr(module, "rope_init_fn", None)  # transformers < 5 stores it on the module
    rope_type = getattr(module, "rope_type", "default")
    if fn is None and rope_type == "default":
        fn = getattr(module, "compute_default_rope_parameters", None)
    if fn is None:
        try:
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        except ImportError:
            return None
        fn = ROPE_INIT_FUNCTIONS.get(rope_type)
    if fn is None:
        return None
    try:
        out = fn(cfg, device)
    except TypeError:
        out = fn(cfg)
    inv = out[0] if isinstance(out, tuple) else out
    return inv if isinstance(inv, torch.Tensor) else None


def _buffer_rule(name: str, module: nn.Module, buffers: list[str], root: nn.Module,
                 reset: ResetFn | None) -> str:
    """Which rule rebuilds ``module``'s meta buffers (checked before anything is allocated)."""
    if reset is not None:
        return "reset"
    if set(buffers) <= _BN_BUFFERS and callable(getattr(module, "reset_running_stats", None)):
        return "reset_running_stats"
    if "inv_freq" in buffers and "Rotary" in type(module).__name__ and getattr(module, "config", None) is not None:
        return "rope"
    if callable(getattr(module, "reset_parameters", None)):
        return "reset_parameters"
    if callable(getattr(root, "_init_weights", None)):
        return "_init_weights"
    full = ", ".join(f"{name}.{b}" if name else b for b in buffers)
    raise ValueError(
        f"materialize: cannot rebuild buffer(s) {full} of module {name or '<root>'!r} "
        f"({type(module).__name__}) from the meta device: it has no reset_running_stats(), "
        "rotary config or reset_parameters(), and the model has no _init_weights(). Pass "
        "reset=fn (fn(module_name, module) -> True once it has filled them), or build that "
        "module outside the meta device"
    )


def _apply_rule(rule: str, name: str, module: nn.Module, root: nn.Module, device: torch.device,
                reset: ResetFn | None) -> None:
    if rule == "reset":
        assert reset is not None
        if not reset(name, module):
            raise ValueError(f"materialize: reset() returned False for module {name!r}")
    elif rule == "reset_running_stats":
        module.reset_running_stats()  # type: ignore[operator]
    elif rule == "rope":
        inv = _rope_values(module, device)
        if inv is None:
            raise ValueError(f"materialize: cannot recompute inv_freq of rotary module {name!r} "
                             f"({type(module).__name__}) from its config; pass reset=fn")
        with torch.no_grad():
            for b in ("inv_freq", "original_inv_freq"):
                buf = getattr(module, b, None)
                if isinstance(buf, torch.Tensor):
                    buf.copy_(inv.to(buf.device, buf.dtype))
    elif rule == "reset_parameters":
        module.reset_parameters()  # type: ignore[operator]
    else:
        root._init_weights(module)  # type: ignore[operator]


def _allocate(model: nn.Module, device: torch.device) -> tuple[set[str], set[str]]:
    """``to_empty`` module by module, children first, keeping ties and non-meta tensors."""
    made: dict[int, torch.Tensor] = {}
    param_obj: dict[int, nn.Parameter] = {}
    keep_alive: list[torch.Tensor] = []  # meta originals: their ids must stay unique
    meta_params: set[str] = set()
    meta_buffers: set[str] = set()

    def empty(t: torch.Tensor) -> torch.Tensor:
        if not t.is_meta:
            return t
        if id(t) not in made:
            keep_alive.append(t)
            made[id(t)] = torch.empty_like(t, device=device)
        return made[id(t)]

    for mname, module in reversed(list(model.named_modules())):
        params = {n: p for n, p in module._parameters.items() if p is not None}
        buffers = {n: b for n, b in module._buffers.items() if b is not None}
        if not any(t.is_meta for t in (*params.values(), *buffers.values())):
            continue
        prefix = f"{mname}." if mname else ""
        meta_params.update(prefix + n for n, p in params.items() if p.is_meta)
        meta_buffers.update(prefix + n for n, b in buffers.items() if b.is_meta)
        keep_alive.extend(params.values())
        module._apply(empty, recurse=False)
        for n, old in params.items():  # re-tie parameters shared between modules
            new = module._parameters[n]
            if id(old) in param_obj and new is not param_obj[id(old)]:
                module._parameters[n] = param_obj[id(old)]
            elif isinstance(new, nn.Parameter):
                param_obj.setdefault(id(old), new)
    return meta_params, meta_buffers


def materialize(
    model: nn.Module,
    policy: Any = "auto",
    *,
    device: torch.device | str,
    seed: int = 0,
    example_inputs: Any = None,
    only: Any = None,
    reset: ResetFn | None = None,
) -> Any:
    """Give a meta-device model real storage on ``device`` and initialize it; return the Plan.

    1. Storage: every module's meta parameters and buffers are replaced by uninitialized
       tensors on ``device`` with ``module._apply(..., recurse=False)`` (what
       ``to_empty(recurse=False)`` does), children before parents so FSDP2 modules re-register
       their sharded parameters; tied parameters stay tied; tensors not on meta are untouched.
       DTensor parameters get storage for their local shard only.
    2. Buffers, per module, by the first rule that applies (checked before step 1, so a model
       with a buffer no rule can rebuild fails before allocating, naming the buffer):
       ``reset(name, module)`` if given; ``reset_running_stats()`` (BatchNorm statistics);
       Hugging Face rotary embeddings (``inv_freq`` and ``original_inv_freq`` recomputed from
       the module's ``config`` with its rope init function); the module's
       ``reset_parameters()``; the model's ``_init_weights(module)`` (Hugging Face).
    3. Parameters the policy leaves to the module (``keep``, or not in ``only``) get their
       module's ``reset_parameters()`` (or the model's ``_init_weights``); these resets run
       inside :func:`initwise.keyed_init`, so their draws are keyed by name too.
    4. :func:`init` with ``policy``, ``seed``, ``example_inputs`` and ``only``.

    Peak memory is the model's own size plus one parameter of scratch; the values are
    bit-identical to ``init`` of the same model built eagerly.

    Args:
        model: a model whose parameters/buffers are (partly) on the meta device.
        policy: as in :func:`initwise.init`.
        device: where storage is allocated (for DTensors: the local shards' device).
        seed: the seed of the keyed engine.
        example_inputs, only: as in :func:`initwise.init`.
        reset: ``fn(module_name, module) -> bool`` that rebuilds a module's buffers; called
            first for every module with meta buffers; must return True.

    >>> with torch.device("meta"):
    ...     bn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> _ = materialize(bn, device="cpu")
    >>> bn[1].running_var.tolist() == [1.0] * 8
    True
    """
    from ._context import keyed_init
    from .plan import plan as make_plan

    if not isinstance(model, nn.Module):
        raise TypeError(f"materialize: expected an nn.Module, got {type(model).__name__}")
    dev = torch.device(device)
    if dev.type == "meta":
        raise ValueError("materialize: device must be a real device, not 'meta'")
    rules: list[tuple[str, nn.Module, str]] = []
    for mname, module in model.named_modules():
        bufs = [n for n, b in module._buffers.items() if b is not None and b.is_meta]
        if bufs:
            rules.append((mname, module, _buffer_rule(mname, module, bufs, model, reset)))

    meta_params, _ = _allocate(model, dev)

    pre = make_plan(model, policy, example_inputs=example_inputs, seed=seed, only=only)
    needs: dict[str, nn.Module] = {}
    for e in pre.entries:
        left = e.action == "keep" or (e.action == "skip" and e.tied_to is None)
        if left and e.kind == "parameter" and e.name in meta_params:
            needs.setdefault(e.module, model.get_submodule(e.module) if e.module else model)
    for mname, module in needs.items():
        if not (callable(getattr(module, "reset_parameters", None)) or callable(getattr(model, "_init_weights", None))):
            names = [e.name for e in pre.entries if e.module == mname and e.name in meta_params]
            raise ValueError(
                f"materialize: parameter(s) {', '.join(names)} are left to the module by the policy "
                f"but {type(module).__name__} has no reset_parameters() to rebuild them from meta"
            )
    done = {m for _, m, r in rules if r in ("reset_parameters", "_init_weights")}
    with keyed_init(model, seed=seed):
        for mname, module, rule in rules:
            _apply_rule(rule, mname, module, model, dev, reset)
        done_ids = {id(m) for m in done}
        for module in needs.values():
            if id(module) in done_ids:
                continue
            reset_params = getattr(module, "reset_parameters", None)
            if callable(reset_params):
                reset_params()
            else:
                model._init_weights(module)  # type: ignore[operator]
    from .plan import init

    p = init(model, policy, example_inputs=example_inputs, seed=seed, only=only)
    p.notes.append(
        f"materialized {len(meta_params)} parameter(s) on {dev}; buffers rebuilt by "
        + (", ".join(sorted({f"{r}" for _, _, r in rules})) or "nothing (none on meta)")
    )
    return p

