"""Entry checks shared by every scheme: one place decides how bad input is reported.

Every in-place scheme calls :func:`check_tensor` first. It raises a clear error for tensors
that can never be initialized (integer or bool dtypes, too few dimensions) and returns
``False`` for tensors where the call is a no-op (meta tensors, zero-element tensors; the
latter with a warning), so that all schemes behave the same on those inputs.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Iterable
from typing import NoReturn

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ._errors import InitwiseError, InitwiseWarning
from ._torch import is_dtensor, is_fsdp_module

__all__ = [
    "BadValueError",
    "InitwiseWarning",
    "NotATensorError",
    "NotAnActivationError",
    "UnsupportedDtypeError",
    "ZeroValueError",
    "check_batched_inputs",
    "check_choice",
    "check_finite_positive",
    "check_materialized",
    "check_real",
    "check_seed",
    "check_tensor",
    "check_unsharded",
    "is_real_number",
    "raise_unknown",
]


# Errors for input torch rejects too: each also derives from the exception type torch raises
# for it, so code written against ``torch.nn.init`` that catches torch's type keeps working.


class BadValueError(InitwiseError, ValueError, RuntimeError):
    """A parameter value out of range where torch raises ``RuntimeError`` (``uniform_(a > b)``,
    ``normal_(std < 0)``, a negative gain)."""


class UnsupportedDtypeError(InitwiseError, TypeError, NotImplementedError):
    """A dtype a random scheme cannot fill (integer, bool) where torch raises
    ``NotImplementedError`` (``"normal_kernel_cpu" not implemented for 'Long'``)."""


class ZeroValueError(InitwiseError, ValueError, ZeroDivisionError):
    """A zero that torch divides by (``dirac_(groups=0)``, ``trunc_normal_(std=0)``)."""


class NotATensorError(InitwiseError, TypeError, AttributeError):
    """Something that is not a tensor where torch fails with ``AttributeError``."""


class NotAnActivationError(InitwiseError, TypeError, ValueError):
    """A nonlinearity that is neither a name, a module nor a callable (``calculate_gain(3)``),
    where torch raises ``ValueError`` ("Unsupported nonlinearity 3")."""


def raise_unknown(
    kind: str, value: object, valid: Iterable[str], *, limit: int | None = None, where: str = ""
) -> NoReturn:
    """Raise ``ValueError`` for an unknown option, listing the valid ones and a close match.

    ``limit`` caps how many valid options are listed (for long lists such as parameter names);
    ``where`` prefixes the message (the function name).
    """
    options = sorted(set(valid))
    msg = f"{where}: " if where else ""
    msg += f"unknown {kind} {value!r}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), options, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    shown = options if limit is None or len(options) <= limit else [*options[:limit], f"... ({len(options) - limit} more)"]
    msg += f"{'' if msg.endswith('?') else '.'} Valid options: {', '.join(shown)}."
    raise ValueError(msg)


def check_choice(kind: str, value: str, valid: Iterable[str], *, where: str = "") -> str:
    """Return ``value`` if it is one of ``valid``, else raise :func:`raise_unknown`'s error."""
    valid = tuple(valid)
    if not isinstance(value, str) or value not in valid:
        raise_unknown(kind, value, valid, where=where)
    return value


def is_real_number(value: object) -> bool:
    """True for what torch takes as a real number: a Python or NumPy real, or a 0-d real tensor.

    Bools (``True`` as a std) and bool tensors are not numbers here, by design; a tensor with
    dimensions (``tensor([0.5])``) is not one either, as in torch (``normal_(t, 0,
    tensor([0.5]))`` is torch's ``TypeError``).
    """
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """``value`` as an error message shows it: a tensor by shape and dtype, else its repr; and its type."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype} ({type(value).__name__})"
    return f"{value!r} ({type(value).__name__})"


def check_real(name: str, value: object, *, finite: bool = True, where: str = "") -> float:
    """Return ``float(value)`` for a real number (:func:`is_real_number`), else raise.

    ``TypeError`` names the parameter for non-numbers (``constant_(t, 'x')``); with ``finite``,
    ``ValueError`` for NaN and infinities. ``where`` prefixes the message (the function name).
    """
    prefix = f"{where}: " if where else ""
    if not is_real_number(value):
        raise TypeError(f"{prefix}{name} must be a real number, got {_shown(value)}")
    v = float(value)  # type: ignore[arg-type]
    if finite and not math.isfinite(v):
        raise ValueError(f"{prefix}{name} must be finite, got {value!r}")
    return v


def check_finite_positive(
    name: str,
    value: float,
    *,
    allow_zero: bool = False,
    where: str = "",
    error: type[ValueError] = ValueError,
) -> float:
    """Return ``float(value)`` if it is finite and positive (or zero when allowed), else raise.

    ``error`` is the class raised for a value out of range (:class:`BadValueError` where torch
    raises ``RuntimeError`` for it); ``where`` prefixes the message (the function name).
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, (str, bytes, bool)) or (isinstance(value, torch.Tensor) and not is_real_number(value)):
        raise TypeError(f"{prefix}{name} must be a real number, got {_shown(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{prefix}{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "finite and >= 0" if allow_zero else "finite and > 0"
        raise error(f"{prefix}{name} must be {need}, got {value!r}")
    return v


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the first frame outside initwise.

    For ``warnings.warn`` called in the function that calls this: its own frame is level 1;
    the schemes reach their entry checks through a varying number of initwise frames (a
    named scheme, ``variance_scaling_``'s core, the DTensor wrapper), so a fixed level points
    into initwise for some of them (Python 3.12's ``skip_file_prefixes``, by hand).
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


_FLOAT_DTYPES = "float16, bfloat16, float32, float64"


def check_tensor(
    tensor: object,
    fn: str,
    *,
    min_dim: int = 0,
    max_dim: int | None = None,
    allow_int: bool = False,
    allow_complex: bool = False,
) -> bool:
    """Validate ``tensor`` for the in-place scheme ``fn``.

    Returns ``True`` when ``fn`` should fill the tensor and ``False`` when the call is a no-op
    (a meta tensor, or a tensor with no elements, which also warns with torch's text
    "Initializing zero-element tensors is a no-op"). Raises :class:`NotATensorError` for
    non-tensors, :class:`UnsupportedDtypeError` for dtypes ``fn`` cannot fill (integer and
    bool unless ``allow_int``, complex unless ``allow_complex``) and ``ValueError`` for a wrong
    number of dimensions. All checks happen before anything is written.
    """
    if not isinstance(tensor, torch.Tensor):
        raise NotATensorError(f"{fn}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.is_complex():
        if not allow_complex:
            raise UnsupportedDtypeError(
                f"{fn}: complex tensors are not supported here, got {tensor.dtype}; use a "
                f"real floating-point dtype ({_FLOAT_DTYPES})"
            )
    elif not tensor.is_floating_point() and not allow_int:
        also = ", or complex64/complex128" if allow_complex else ""
        raise UnsupportedDtypeError(
            f"{fn}: tensor must have a floating-point dtype ({_FLOAT_DTYPES}{also}), got "
            f"{tensor.dtype}; integer and bool tensors only take zeros_, ones_, constant_, "
            "eye_ and dirac_"
        )
    if tensor.dim() < min_dim:
        raise ValueError(
            f"{fn}: needs a tensor with at least {min_dim} dimensions, got shape "
            f"{tuple(tensor.shape)} ({tensor.dim()}-D)"
        )
    if max_dim is not None and tensor.dim() > max_dim:
        raise ValueError(
            f"{fn}: needs a tensor with at most {max_dim} dimensions, got shape "
            f"{tuple(tensor.shape)} ({tensor.dim()}-D)"
        )
    if tensor.is_meta:
        return False
    if tensor.numel() == 0:
        warnings.warn(
            f"{fn}: Initializing zero-element tensors is a no-op (the tensor has no elements, "
            f"shape {tuple(tensor.shape)})",
            InitwiseWarning,
            stacklevel=caller_stacklevel(),
        )
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Shared validators for the model-level verbs (init, lsuv, audit): the same words, the same
# errors. ``where`` is the public function's name, used as the message prefix.
# ---------------------------------------------------------------------------------------------


def check_seed(
    seed: object, where: str, *, allow_none: bool = True, allow_negative: bool = True
) -> int | None:
    """Return ``seed`` as an ``int`` (a Python or NumPy integer, not a bool), else raise.

    ``TypeError`` for floats (``seed=1.5``), strings and bools; ``ValueError`` for negative
    seeds unless ``allow_negative`` (the keyed engine accepts any int, so the default does).
    ``None`` passes when ``allow_none``.

    >>> check_seed(3, "lsuv")
    3
    >>> check_seed(1.5, "lsuv")
    Traceback (most recent call last):
    ...
    TypeError: lsuv: seed must be an int (or None), got 1.5 (float)
    """
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        what = "an int (or None)" if allow_none else "an int"
        raise TypeError(f"{where}: seed must be {what}, got {seed!r} ({type(seed).__name__})")
    value = int(seed)
    if value < 0 and not allow_negative:
        raise ValueError(f"{where}: seed must be >= 0, got {value}")
    return value


def check_materialized(model: object, where: str, *, lazy_ok: bool = False) -> None:
    """Raise if ``model`` (an ``nn.Module``) holds meta tensors or uninitialized lazy parameters.

    The message names the first such tensor and says what to do: materialize it first
    (``initwise.materialize(model)`` or ``model.to_empty(device=...)``), or run a forward
    pass for lazy modules.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where}: expected an nn.Module, got {type(model).__name__}")
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        if is_lazy(t) and not lazy_ok:
            raise ValueError(
                f"{where}: {name} is an uninitialized lazy parameter; run one forward pass "
                "(or materialize the model) first"
            )
    for name, t in tensors:
        if not is_lazy(t) and t.is_meta:
            raise ValueError(
                f"{where}: the model has tensors on the meta device ({name}, shape "
                f"{tuple(t.shape)}), which hold no values: materialize it first, e.g. "
                "initwise.materialize(model) or model.to_empty(device='cpu') followed by "
                "initwise.init(model)"
            )


def check_unsharded(model: nn.Module, where: str) -> None:
    """Raise ``ValueError`` if ``model`` holds ``DTensor`` parameters (FSDP2 ``fully_shard``,
    tensor parallel, ``distribute_tensor``).

    ``lsuv`` and ``audit`` run the model and read whole weights and activations in one
    process; on a sharded model each rank would see only its shard (and FSDP2 swaps its
    parameters during forward and backward: the audit read freed storage and crashed the
    process). The message names the first sharded parameter and says what to do instead.
    """
    instead = (f"{where} runs the whole model in one process and does not support sharded "
               f"models. Run {where} on the same model unsharded, in one process, before sharding "
               "it (initwise.init of a sharded model equals the single-process init bit for bit)")
    for name, m in model.named_modules():
        if is_fsdp_module(m):  # (its parameters are plain tensors after some forwards)
            raise ValueError(f"{where}: module {name or '<root>'!r} ({type(m).__name__}) is "
                             f"sharded by FSDP2 fully_shard; {instead}")  # fmt: skip
    for name, p in model.named_parameters():
        if is_dtensor(p):
            placements = tuple(getattr(p, "placements", ()))
            raise ValueError(f"{where}: parameter {name!r} is a DTensor {placements} (a model "
                             "sharded by FSDP2 fully_shard, tensor parallel or distribute_tensor); "
                             f"{instead}")  # fmt: skip


def check_batched_inputs(inputs: object, where: str, *, min_dim: int = 2) -> None:
    """Raise if a floating-point input (or the first tensor of a tuple/list/dict) lacks a batch
    dimension (integer inputs may be a 1-D batch of indices, e.g. for an ``nn.Embedding``).

    ``lsuv(model, torch.randn(8))`` would calibrate on one unbatched sample: a 1-D tensor has
    no batch dimension (and statistics over one sample are meaningless), so this raises a
    ``ValueError`` that shows the shape and the fix (``x.unsqueeze(0)`` is still one sample;
    pass a batch ``[batch, features]``). Also rejects empty batches and non-tensor inputs
    holding no tensor at all.
    """
    first: torch.Tensor | None = None
    if isinstance(inputs, torch.Tensor):
        first = inputs
    elif isinstance(inputs, (tuple, list)):
        first = next((x for x in inputs if isinstance(x, torch.Tensor)), None)
    elif isinstance(inputs, dict):
        first = next((x for x in inputs.values() if isinstance(x, torch.Tensor)), None)
    if first is None:
        raise TypeError(
            f"{where}: inputs must be a tensor, or a tuple/list/dict holding tensors, with a "
            f"batch dimension first; got {type(inputs).__name__}"
        )
    if first.is_floating_point() and first.dim() < min_dim:  # index inputs may be 1-D batches
        raise ValueError(
            f"{where}: inputs need a batch dimension first (at least {min_dim}-D, e.g. "
            f"[batch, features]), got shape {tuple(first.shape)}; statistics over one "
            "unbatched sample are meaningless: pass a batch of samples"
        )
    if first.shape[0] == 0:
        raise ValueError(f"{where}: inputs have an empty batch (shape {tuple(first.shape)})")
