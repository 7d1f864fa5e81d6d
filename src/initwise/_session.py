"""Running a user's model for a verb: inputs to call arguments, and leaving the model as it was.

Shared by ``lsuv``, ``audit`` and the planner's ``example_inputs``:

- :func:`call_args`: the one meaning of the ``inputs`` argument: a tensor (``model(x)``), a
  tuple/list (positional, ``model(*inputs)``), a dict (keywords, ``model(**inputs)``), or a
  DataLoader / iterable of batches (its first batch; a ``(x, y)`` batch sends only ``x``),
  optionally mapped by ``input_fn`` first. A ``PackedSequence`` is one input.
- :class:`ModelState`: a snapshot of what running a model may change (modes,
  ``requires_grad``, buffers, including buffers a forward re-assigns), restored exactly.
- :func:`suspend_in_place_compile`: modules compiled in place run eagerly while hooks watch.
- :func:`preserved_rng`: torch's global CPU and CUDA random states, as they were on entry.
- :func:`deferred_interrupts`: Ctrl-C held back while a model is being put back as it was.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import _torch

__all__ = [
    "ModelState",
    "call_args",
    "deferred_interrupts",
    "input_tensors",
    "memory_signature",
    "preserved_rng",
    "primary_output",
    "suspend_in_place_compile",
]

_PACKED: type = nn.utils.rnn.PackedSequence  # a NamedTuple, but one input


def _is_batch_container(x: Any) -> bool:
    return isinstance(x, (torch.Tensor, tuple, list, Mapping))


def call_args(inputs: Any, input_fn: Callable[[Any], Any] | None = None, *, verb: str = "inputs"
              ) -> tuple[tuple[Any, ...], dict[str, Any]]:  # fmt: skip
    """``(args, kwargs)`` for ``model(*args, **kwargs)`` from a verb's ``inputs`` argument."""
    if input_fn is None and not _is_batch_container(inputs):
        if isinstance(inputs, Iterable) and not isinstance(inputs, (str, bytes)):  # a DataLoader or any iterable of batches
            batch = next(iter(inputs))
            if isinstance(batch, (tuple, list)) and not isinstance(batch, _PACKED):
                batch = batch[0]  # (x, y) batch: only x goes to the model
            inputs = batch
        else:
            raise TypeError(
                f"{verb}: inputs must be a tensor, a tuple/list of positional inputs, a dict of "
                f"keyword inputs or a DataLoader, got {type(inputs).__name__}"
            )
    if input_fn is not None:
        if not _is_batch_container(inputs) and isinstance(inputs, Iterable):
            inputs = next(iter(inputs))
        inputs = input_fn(inputs)
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)) and not isinstance(inputs, _PACKED):
        return tuple(inputs), {}
    return (inputs,), {}


def input_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors among the call arguments (top level)."""
    return [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]


def primary_output(out: Any) -> torch.Tensor | None:
    """The tensor an output stands for: itself, the first floating tensor of a sequence, or
    ``logits`` / the first floating value of a mapping (e.g. a Hugging Face ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, Mapping):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return primary_output(out["logits"])
        for v in out.values():
            p = primary_output(v)
            if p is not None:
                return p
        return None
    if isinstance(out, (tuple, list)):
        for v in out:
            p = primary_output(v)
            if p is not None:
                return p
    return None


class ModelState:
    """Snapshot of what running ``model`` may change, restored exactly by :meth:`restore`.

    Training flags of every module, ``requires_grad`` of every parameter (``grads=True``),
    and every buffer: its values, and the buffer object itself (a forward that re-assigns a
    buffer, ``self.steps = self.steps + 1``, gets the original object back, with its values).
    """

    def __init__(self, model: nn.Module, *, grads: bool = True) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()] if grads else []
        self.buffers: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = [
            (m, name, b, b.detach().clone())
            for m in model.modules()
            for name, b in _torch.own_buffers(m).items()
            if b is not None
        ]

    def restore_modes(self) -> None:
        for m, flag in self.training:
            m.training = flag

    def restore(self) -> None:
        self.restore_modes()
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        with torch.no_grad():
            for m, name, b, saved in self.buffers:
                _torch.own_buffers(m)[name] = b
                b.copy_(saved)


@contextmanager
def suspend_in_place_compile(model: nn.Module) -> Iterator[None]:
    """Run modules compiled in place (``module.compile()``) eagerly inside the block.

    Dynamo would otherwise trace a verb's hooks (and guard on weights they change).
    ``torch.compile(model)`` wrappers are unwrapped by the caller (:func:`initwise._modules.unwrap`).
    """
    saved = []
    for m in model.modules():
        impl = _torch.in_place_compiled(m)
        if impl is not None:
            saved.append((m, impl))
            _torch.set_in_place_compiled(m, None)
    try:
        yield
    finally:
        for m, impl in saved:
            _torch.set_in_place_compiled(m, impl)


def memory_signature(t: torch.Tensor) -> tuple[Any, ...] | None:
    """Where ``t``'s elements live (equal for tensor objects aliasing the same elements);
    ``None`` for empty or meta tensors, which have no memory to share."""
    if t.numel() == 0 or t.is_meta:
        return None
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave torch's global random state (CPU, and every CUDA device once CUDA is initialized)
    exactly as it was on entry, whatever the block (a user's forward, a module's reset) drew."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block and deliver it on exit.

    For short sections that must not stop half-way (putting a model back as it was). Only the
    main thread can install signal handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[tuple[int, Any]] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if pending and callable(old):
            old(*pending[0])
        elif pending and old == signal.SIG_DFL:  # pragma: no cover - default action: terminate
            signal.raise_signal(signal.SIGINT)
