"""``watch``: record every write to a model's parameters during construction, load and init.

A :class:`torch.overrides.TorchFunctionMode` sees every torch call in the block: in-place
tensor methods (``normal_``, ``copy_``, ``mul_``, ``__setitem__``...), ``torch.nn.init.*``,
``out=`` arguments and ``.data =`` assignments. A call whose target shares storage with a
watched parameter (``p``, ``p.data``, a view of ``p``) is a write to it; copies made from a
parameter (``.float()``, ``.clone()``, ``.to()``...) are remembered, and a write to one is a
write that "landed on a copy". Parameters registered inside the block (a model built in it)
are watched from their registration (``register_module_parameter_registration_hook``).

Each write is attributed to the first stack frame outside torch and this module (the line
that asked for it), its op (the outermost ``torch.nn.init`` function on the stack, else the
torch method), and a phase: the innermost of ``load`` (``load_state_dict`` and friends),
``construct`` (a module's ``__init__`` / ``reset_parameters``) and ``init`` (``_init_weights``,
or anything else) found on the stack. Nested ops of one call (``trunc_normal_`` runs five)
are one write.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .report import WatchLog, WriteEvent

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_HERE = os.path.dirname(__file__) + os.sep
_INITWISE_DIR = os.path.dirname(_HERE.rstrip(os.sep)) + os.sep
_NOT_WRITES = frozenset({"requires_grad_", "share_memory_", "retain_grad", "record_stream_",
                         "pin_memory_"})
_WRITE_DUNDERS = frozenset({"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__",
                            "__idiv__", "__ipow__", "__iand__", "__ior__"})
_COPY_OPS = frozenset({"to", "float", "double", "half", "bfloat16", "clone", "contiguous", "cpu",
                       "cuda", "type"})
_PRIMITIVES = frozenset(n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_"))
_LOAD = frozenset({"_load_from_state_dict", "load_state_dict", "_load_state_dict_into_model",
                   "_load_state_dict_into_meta_model", "load_state_dict_into_meta_model"})
_CONSTRUCT = frozenset({"reset_parameters", "_reset_parameters"})
_INIT = frozenset({"_init_weights", "init_weights", "_initialize_weights", "initialize_weights",
                   "_init_weight"})


def _key(t: torch.Tensor) -> tuple[int, str] | None:
    if t.is_meta or t.numel() == 0:
        return None
    try:
        return (int(t.untyped_storage().data_ptr()), str(t.device))
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None


def _where(frame: types.FrameType) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}"


def _site(fallback_op: str) -> tuple[str, str, str]:
    """(op, phase, caller) of the current write, from the Python stack."""
    frame = inspect.currentframe()
    op, phase, caller = fallback_op, "", ""
    while frame is not None:
        code = frame.f_code
        fname = code.co_filename
        if fname.startswith(_TORCH_DIR) and fname.endswith(os.path.join("nn", "init.py")):
            op = f"torch.nn.init.{code.co_name}"
        elif fname.startswith(_INITWISE_DIR) and not fname.startswith(_HERE) and \
                not fname.endswith("contextlib.py"):
            op = f"initwise.{code.co_name}" if not op.startswith("torch.nn.init") else op
        if not phase:
            if code.co_name in _LOAD:
                phase = "load"
            elif code.co_name in _CONSTRUCT or (code.co_name == "__init__" and isinstance(
                    frame.f_locals.get("self"), nn.Module)):
                phase = "construct"
            elif code.co_name in _INIT:
                phase = "init"
        # wrappers of the init primitives (transformers' own ``normal_``...) are not callers
        wrapper = code.co_name in _PRIMITIVES
        if not caller and not wrapper and not fname.startswith(_TORCH_DIR) and \
                not fname.startswith(_HERE) and not fname.endswith("contextlib.py"):
            caller = _where(frame)
        frame = frame.f_back
    return op, phase or "init", caller


class _Recorder(TorchFunctionMode):
    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        with contextlib.suppress(Exception):  # recording must never break the user's code
            self.watch.seen(func, args, kwargs, out)
        return out


class _Watch:
    def __init__(self, model: nn.Module | None) -> None:
        self.model = model
        self.log = WatchLog()
        self.params: dict[tuple[int, str], nn.Parameter] = {}
        self.copies: dict[tuple[int, str], tuple[Any, nn.Parameter, str]] = {}
        self.refs: list[nn.Parameter] = []  # event -> parameter object
        self.local: dict[int, str] = {}  # id(param) -> a name from its registration
        if model is not None:
            for n, p in model.named_parameters(remove_duplicate=False):
                self.track(p, n)

    def track(self, p: nn.Parameter, name: str) -> None:
        k = _key(p)
        if k is not None:
            self.params[k] = p
        self.local.setdefault(id(p), name)

    def record(self, p: nn.Parameter, fallback_op: str, on_copy: bool = False,
               copy_from: str = "") -> None:
        op, phase, caller = _site(fallback_op)
        name = self.local.get(id(p), f"<{tuple(p.shape)}>")
        ev = self.log.events
        if ev and not on_copy and self.refs[-1] is p and ev[-1].caller == caller and \
                ev[-1].phase == phase and not ev[-1].on_copy and \
                (ev[-1].op == op or op.startswith("torch.nn.init") or op.startswith("initwise")):
            ev[-1].op = op if op.startswith(("torch.nn.init", "initwise")) else ev[-1].op
            return
        ev.append(WriteEvent(index=len(ev), parameter=name, op=op, phase=phase, caller=caller,
                             on_copy=on_copy, copy_from=copy_from))
        self.refs.append(p)

    def target(self, t: Any) -> nn.Parameter | None:
        if not isinstance(t, torch.Tensor):
            return None
        k = _key(t)
        return self.params.get(k) if k is not None else None

    def seen(self, func: Any, args: Any, kwargs: Any, out: Any) -> None:
        name = getattr(func, "__name__", "")
        first = args[0] if args else kwargs.get("tensor")
        if name == "__set__" and getattr(getattr(func, "__self__", None), "__name__", "") == "data":
            p = first if isinstance(first, nn.Parameter) else self.target(first)
            if p is not None:
                self.track(p, self.local.get(id(p), ""))
                self.record(p, ".data =")
            return
        is_init = getattr(func, "__module__", "") == "torch.nn.init"
        writes = is_init or name in _WRITE_DUNDERS or (
            name.endswith("_") and not name.startswith("_") and name not in _NOT_WRITES)
        targets = [first] if writes else []
        if isinstance(kwargs.get("out"), torch.Tensor):
            targets.append(kwargs["out"])
        for t in targets:
            p = self.target(t)
            if p is not None:
                self.record(p, name)
                continue
            k = _key(t) if isinstance(t, torch.Tensor) else None
            c = self.copies.get(k) if k is not None else None
            if c is not None and c[0]() is not None:
                self.record(c[1], name, on_copy=True, copy_from=c[2])
        if name in _COPY_OPS and isinstance(out, torch.Tensor) and out is not first:
            p = self.target(first)
            k = _key(out)
            if p is not None and k is not None and k != _key(first):
                _, _, caller = _site(name)
                self.copies[k] = (weakref.ref(out), p, f".{name}() at {caller}")

    def registered(self, module: nn.Module, name: str, param: Any) -> None:
        if isinstance(param, nn.Parameter):
            self.track(param, f"{type(module).__name__}.{name}")
            self.record(param, "register")

    def bind(self, model: nn.Module) -> None:
        names: dict[int, str] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), n)
        for ev, p in zip(self.log.events, self.refs, strict=True):
            if id(p) in names:
                ev.parameter = names[id(p)]


@contextmanager
def watch(model: nn.Module | None = None) -> Iterator[WatchLog]:
    """Record every write to ``model``'s parameters (and to any parameter created) in the block.

    Yields a :class:`WatchLog`: one :class:`WriteEvent` per write, with the parameter's
    qualified name, the op, the phase (``construct``, ``load``, ``init``) and the caller.
    ``log.findings()`` reports parameters overwritten after a load (the Hugging Face class of
    bugs where ``_init_weights`` runs over loaded weights), writes that landed on a copy and
    parameters written more than once; pass the log to :func:`initwise.check` to include them.
    Without ``model``, parameters created in the block are named ``Class.name`` until
    :func:`WatchLog.bind` gives them the names of the model that owns them.

    >>> lin = nn.Linear(4, 4)
    >>> with watch(lin) as log:
    ...     _ = lin.load_state_dict({"weight": torch.zeros(4, 4), "bias": torch.zeros(4)})
    ...     _ = nn.init.normal_(lin.weight)
    >>> [(e.parameter, e.op, e.phase) for e in log.events]
    [('weight', 'copy_', 'load'), ('bias', 'copy_', 'load'), ('weight', 'torch.nn.init.normal_', 'init')]
    >>> [f.kind for f in log.findings()]
    ['overwritten_after_load']
    """
    w = _Watch(model)
    handle = torch.nn.modules.module.register_module_parameter_registration_hook(w.registered)
    log = w.log
    log._binder = w.bind  # type: ignore[attr-defined]
    try:
        with _Recorder(w):
            yield log
    finally:
        handle.remove()
        if model is not None:
            w.bind(model)
