"""``keyed_init``: run existing ``torch.nn.init`` / ``reset_parameters`` code with keyed draws.

Inside ``with keyed_init(model, seed=0):`` every random draw that existing init code makes
into one of ``model``'s parameters comes from initwise's keyed engine with
``initwise.random.key(seed, canonical_name(name))`` instead of torch's global generator, so the
values depend only on (seed, parameter name, the code that ran), not on the order of calls,
on other modules, on the global seed, or on how the parameter is sharded (DTensor parameters
are filled shard-locally, see :mod:`initwise.distributed`).

Patched for the duration of the block (restored on exit, also on error):

- ``torch.nn.init.{uniform_, normal_, trunc_normal_, xavier_uniform_, xavier_normal_,
  kaiming_uniform_, kaiming_normal_, orthogonal_, sparse_, constant_, zeros_, ones_, eye_,
  dirac_}`` and, if ``transformers`` is imported, the copies of them it keeps in
  ``transformers.initialization.TORCH_INIT_FUNCTIONS``: on a parameter they run initwise's
  drop-in of the same name (same distribution, fans from the global shape) with the key;
- ``torch.Tensor.normal_`` and ``torch.Tensor.uniform_`` (``tensor_methods=True``), so that
  ``module.weight.data.normal_(std=0.02)`` is keyed too.

A tensor is recognized as a parameter by identity, or by storage (data pointer, shape, strides,
dtype: ``p.data`` and a DTensor's local tensor are recognized; a slice such as ``w[0]`` is
not). Anything else falls through to torch's original function, unchanged. The ``n``-th
(from 0) keyed draw into a parameter uses ``key`` for ``n = 0`` and ``key.child(f"draw{n}")``
after, so code that draws twice into the same parameter stays deterministic. An explicit
``generator=`` passed to a patched call on a parameter is replaced by the key.

The patch is process-wide while the block runs (other threads see it too).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import _schemes
from .. import random as _random
from .._fans import tensor_fans
from .._names import canonical_name
from .._session import memory_signature
from .._sharding import fill_sharded_
from .._torch import local_tensor, reshard_fsdp

__all__ = ["KeyedInit", "keyed_init"]

_INIT_FNS = (
    "uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
    "kaiming_normal_", "orthogonal_", "sparse_", "constant_", "zeros_", "ones_", "eye_", "dirac_",
)  # fmt: skip
_ELEMENTWISE = frozenset(
    {"uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
     "kaiming_normal_", "constant_", "zeros_", "ones_"}
)  # fmt: skip
_FANS = frozenset({"xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"})
_RANDOM = frozenset({"uniform_", "normal_", "trunc_normal_", "orthogonal_", "sparse_"} | _FANS)


@dataclass
class KeyedInit:
    """What a :func:`keyed_init` block did: keyed draws per parameter and pass-throughs."""

    seed: int
    draws: dict[str, int] = field(default_factory=dict)
    passed_through: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "draws": dict(self.draws), "passed_through": self.passed_through}


class _Resolver:
    def __init__(self, model: nn.Module, seed: int) -> None:
        self.random = _random
        self.seed = seed
        self.by_id: dict[int, tuple[str, torch.Tensor]] = {}
        self.by_sig: dict[tuple[Any, ...], tuple[str, torch.Tensor]] = {}
        self.stats = KeyedInit(seed)
        for name, p in model.named_parameters():
            entry = (canonical_name(name), p)
            self.by_id[id(p)] = entry
            sig = memory_signature(local_tensor(p))
            if sig is not None:
                self.by_sig.setdefault(sig, entry)

    def find(self, t: object) -> tuple[str, torch.Tensor] | None:
        if not isinstance(t, torch.Tensor):
            return None
        hit = self.by_id.get(id(t))
        if hit is not None:
            return hit
        try:
            sig = memory_signature(local_tensor(t))
        except RuntimeError:  # tensors without storage
            return None
        return None if sig is None else self.by_sig.get(sig)

    def key(self, name: str) -> Any:
        n = self.stats.draws.get(name, 0)
        self.stats.draws[name] = n + 1
        k = self.random.key(self.seed, name)
        return k if n == 0 else k.child(f"draw{n}")


def _init_wrapper(fname: str, orig: Callable[..., torch.Tensor], res: _Resolver) -> Callable[..., torch.Tensor]:
    drop_in = getattr(_schemes, fname)
    sig = inspect.signature(orig)
    accepted = set(inspect.signature(drop_in).parameters)

    def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        hit = res.find(tensor)
        if hit is None:
            res.stats.passed_through += 1
            return orig(tensor, *args, **kwargs)
        name, param = hit
        bound = sig.bind(tensor, *args, **kwargs)
        bound.apply_defaults()
        kw = {k: v for k, v in bound.arguments.items() if k in accepted and k not in ("tensor", "generator")}
        if fname in _RANDOM:
            kw["generator"] = res.key(name)
        else:
            res.stats.draws[name] = res.stats.draws.get(name, 0)
        if fname in _FANS and param.dim() >= 2:
            kw["fans"] = tensor_fans(param.shape)
        fill_sharded_(param, lambda x: drop_in(x, **kw), elementwise=fname in _ELEMENTWISE)
        return tensor

    wrapper.__name__ = fname
    wrapper.__doc__ = orig.__doc__
    return wrapper


def _method_wrapper(fname: str, orig: Callable[..., torch.Tensor], res: _Resolver) -> Callable[..., torch.Tensor]:
    def wrapper(self: torch.Tensor, *args: Any, generator: Any = None, **kwargs: Any) -> torch.Tensor:
        hit = res.find(self)
        if hit is None:
            return orig(self, *args, generator=generator, **kwargs)
        name, param = hit
        rnd = res.random
        if fname == "normal_":
            mean = float(args[0]) if len(args) > 0 else float(kwargs.get("mean", 0.0))
            std = float(args[1]) if len(args) > 1 else float(kwargs.get("std", 1.0))
            k = res.key(name)
            fill_sharded_(param, lambda x: rnd.normal_(x, k, mean=mean, std=std), elementwise=True)
        else:
            low = float(args[0]) if len(args) > 0 else float(kwargs.get("from", 0.0))
            high = float(args[1]) if len(args) > 1 else float(kwargs.get("to", 1.0))
            k = res.key(name)
            fill_sharded_(param, lambda x: rnd.uniform_(x, k, low=low, high=high), elementwise=True)
        return self

    wrapper.__name__ = fname
    return wrapper


@contextlib.contextmanager
def keyed_init(model: nn.Module, seed: int = 0, *, tensor_methods: bool = True) -> Iterator[KeyedInit]:
    """Key the random draws that init code makes into ``model``'s parameters by their names.

    See the module documentation for what is patched. Yields a :class:`KeyedInit` that counts
    the keyed draws per (canonical) parameter name and the calls passed through to torch.

    Args:
        model: the model whose parameters are recognized.
        seed: the seed of the keyed engine.
        tensor_methods: also patch ``torch.Tensor.normal_`` / ``uniform_``.

    >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> with keyed_init(a, seed=0) as k:
    ...     a.reset_parameters()
    >>> with keyed_init(b, seed=0):
    ...     b.reset_parameters()
    >>> torch.equal(a.weight, b.weight), k.draws
    (True, {'weight': 1, 'bias': 1})
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"keyed_init: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(seed, int):
        raise TypeError(f"keyed_init: seed must be an int, got {type(seed).__name__}")
    reshard_fsdp(model)  # the code inside writes the sharded parameters, not FSDP2's copies
    res = _Resolver(model, seed)
    undo: list[Callable[[], None]] = []

    def set_attr(obj: Any, attr: str, value: Any) -> None:
        had = attr in vars(obj)
        old = vars(obj).get(attr)
        setattr(obj, attr, value)
        undo.append(lambda: setattr(obj, attr, old) if had else delattr(obj, attr))

    try:
        for fname in _INIT_FNS:
            set_attr(torch.nn.init, fname, _init_wrapper(fname, getattr(torch.nn.init, fname), res))
        hf = sys.modules.get("transformers.initialization")
        table = getattr(hf, "TORCH_INIT_FUNCTIONS", None)
        if isinstance(table, dict):
            saved = dict(table)
            for fname in _INIT_FNS:
                if fname in table:
                    table[fname] = _init_wrapper(fname, saved[fname], res)
            undo.append(lambda: table.update(saved))
        if tensor_methods:
            for fname in ("normal_", "uniform_"):
                set_attr(torch.Tensor, fname, _method_wrapper(fname, getattr(torch.Tensor, fname), res))
        yield res.stats
    finally:
        for u in reversed(undo):
            u()
