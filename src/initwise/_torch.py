"""The one seam between initwise and PyTorch's private API.

Everything initwise needs from torch that is not public API (underscored modules, classes and
attributes) is reached through this module, so a torch upgrade is checked in one place
(``tests/test_layout.py`` asserts no other module touches them). Each helper says what it
stands for; none changes torch's behaviour.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.parameter import is_lazy

__all__ = [
    "BatchNormBase",
    "ConvNd",
    "InstanceNormBase",
    "NormBase",
    "apply_to_own_tensors",
    "compile_wrapped",
    "composites_traced_through",
    "compute_local_shape_and_global_offset",
    "disable_torch_function",
    "global_hooks",
    "has_module_hooks",
    "in_place_compiled",
    "is_dtensor",
    "is_lazy",
    "local_tensor",
    "mha_packed_in_proj",
    "own_buffers",
    "own_parameters",
    "power_method",
    "readopt_fsdp_parameters",
    "rnn_weight_names",
    "set_in_place_compiled",
    "torch_fans",
    "version",
]

NormBase: type[nn.Module] = _NormBase  # BatchNorm*, SyncBatchNorm, InstanceNorm*
BatchNormBase: type[nn.Module] = _BatchNorm
InstanceNormBase: type[nn.Module] = _InstanceNorm
ConvNd: type[nn.Module] = _ConvNd

# torch.distributed (DTensor, FSDP2) is read only once the user's program has imported it:
# no tensor is a DTensor and no module is an FSDP2 module before that, and importing it costs
# more than half a second (it would slow every `import initwise`, and every compare worker).


def _loaded(module: str, attr: str) -> Any:
    mod = sys.modules.get(module)
    return None if mod is None else getattr(mod, attr, None)


def is_dtensor(tensor: object) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (False if unavailable).

    >>> is_dtensor(torch.zeros(2))
    False
    """
    cls = _loaded("torch.distributed.tensor", "DTensor")
    return cls is not None and isinstance(tensor, cls)


def _fsdp_module_type() -> Any:
    return _loaded("torch.distributed.fsdp", "FSDPModule")


def is_fsdp_module(module: object) -> bool:
    """Whether ``module`` is managed by FSDP2 (``fully_shard``)."""
    cls = _fsdp_module_type()
    return cls is not None and isinstance(module, cls)


def reshard_fsdp(model: nn.Module) -> None:
    """Reshard every FSDP2 module of ``model`` (``FSDPModule.reshard()``; a no-op where it is
    sharded): after a forward with ``reshard_after_forward=False`` the registered parameters
    are unsharded all-gathered copies that FSDP2 drops at the next reshard, and a write there
    would be lost; afterwards they are the sharded DTensors the optimizer and checkpoints use."""
    for module in model.modules():
        if is_fsdp_module(module):
            module.reshard()  # type: ignore[operator]


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (the tensor itself for a plain tensor)."""
    return tensor._local_tensor if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


def compute_local_shape_and_global_offset(shape: Any, mesh: Any, placements: Any) -> tuple[Any, Any]:
    """DTensor's own sharding math: this rank's block shape and its offset in the whole."""
    utils = importlib.import_module("torch.distributed.tensor._utils")
    return utils.compute_local_shape_and_global_offset(shape, mesh, placements)


def own_parameters(module: nn.Module) -> dict[str, nn.Parameter | None]:
    """The parameters registered directly on ``module`` (name -> parameter, writable)."""
    return module._parameters


def own_buffers(module: nn.Module) -> dict[str, torch.Tensor | None]:
    """The buffers registered directly on ``module`` (name -> buffer, writable)."""
    return module._buffers


def has_own_attr(module: nn.Module, name: str) -> bool:
    """``hasattr(module, name)`` for an instance attribute, parameter, buffer or submodule, by
    dict lookups (no ``nn.Module.__getattr__`` raising ``AttributeError``: ~2 µs a miss)."""
    return any(name in d for d in (module.__dict__, module._parameters, module._buffers,
                                   module._modules))  # fmt: skip


def apply_to_own_tensors(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``module._apply(fn, recurse=False)``: what ``to_empty(recurse=False)`` does."""
    module._apply(fn, recurse=False)


def rnn_weight_names(module: nn.RNNBase) -> list[str]:
    """The flat parameter names of a torch RNN (``weight_ih_l0``, ..., in torch's order)."""
    return list(module._flat_weights_names)


def mha_packed_in_proj(module: nn.MultiheadAttention) -> bool:
    """Whether an ``nn.MultiheadAttention`` stores q, k, v in one ``in_proj_weight``."""
    return bool(module._qkv_same_embed_dim)


def compile_wrapped(module: nn.Module) -> nn.Module | None:
    """The eager module inside a ``torch.compile(module)`` wrapper, else ``None``."""
    if type(module).__name__ != "OptimizedModule":  # first: a getattr that fails is slow
        return None
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else None


def in_place_compiled(module: nn.Module) -> Any:
    """The compiled call of a module compiled in place (``module.compile()``), else ``None``."""
    return getattr(module, "_compiled_call_impl", None)


def set_in_place_compiled(module: nn.Module, impl: Any) -> None:
    """Set (or, with ``None``, suspend) a module's in-place compiled call."""
    module._compiled_call_impl = impl


def global_hooks() -> bool:
    """Whether global forward (pre-)hooks are registered (``register_module_forward_hook``)."""
    g = nn.modules.module
    return bool(g._global_forward_hooks or g._global_forward_pre_hooks)


def has_module_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has its own forward or forward-pre hooks."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def sole_memory(tensor: torch.Tensor) -> torch.Tensor | None:
    """The tensor that owns ``tensor``'s memory when ``tensor`` covers all of it: ``tensor``
    itself, or the base of a view that spans its whole base (``linear`` of a batch of
    sequences returns such a view of its matrix product); ``None`` for a partial view, a
    subclass, a sparse or an inference tensor. Writing ``tensor`` in place writes only that."""
    if type(tensor) is not torch.Tensor or tensor.layout != torch.strided or tensor.is_inference():
        return None
    base = tensor._base
    if base is None:
        return tensor
    if (type(base) is torch.Tensor and base._base is None and tensor.is_contiguous() and base.is_contiguous()
            and tensor.data_ptr() == base.data_ptr() and tensor.numel() == base.numel()):  # fmt: skip
        return base
    return None


def whole_base(tensor: torch.Tensor) -> torch.Tensor | None:
    """The tensor whose memory ``tensor`` is, element for element, when ``tensor`` is itself or a
    view of all of it (a reshape, permute or transpose: same first element, same number of
    elements, no broadcast stride); ``None`` for a partial view (a slice) or a non-strided
    tensor."""
    if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
        return None
    base = tensor._base
    if base is None:
        return tensor
    if base.layout != torch.strided or tensor.numel() != base.numel() or base._base is not None \
            or tensor.data_ptr() != base.data_ptr() \
            or any(st == 0 and n > 1 for st, n in zip(tensor.stride(), tensor.shape, strict=True)):
        return None
    return base


def version(tensor: torch.Tensor) -> int:
    """The in-place modification counter of ``tensor``."""
    return int(tensor._version)


def disable_torch_function() -> Any:
    """A context in which ``__torch_function__`` overrides (modes included) are not called."""
    return torch._C.DisableTorchFunction()


@contextmanager
def composites_traced_through() -> Iterator[None]:
    """Inside the block, ``torch.nn.functional``'s Python composites that hand themselves as a
    whole to ``__torch_function__`` (``multi_head_attention_forward``) run their body instead,
    so a ``TorchFunctionMode`` sees the linear maps inside them. Process-wide while it runs."""
    functional: Any = torch.nn.functional
    saved = functional.has_torch_function
    functional.has_torch_function = lambda *a, **k: False
    try:
        yield
    finally:
        functional.has_torch_function = saved


def power_method(parametrization: nn.Module, weight: torch.Tensor, iterations: int) -> bool:
    """Re-run spectral norm's power iteration on ``weight``; False if not a spectral norm."""
    power = getattr(parametrization, "_power_method", None)
    reshape = getattr(parametrization, "_reshape_weight_to_matrix", None)
    if not (callable(power) and callable(reshape)) or weight.dim() <= 1:
        return False
    power(reshape(weight), iterations)
    return True


def torch_fans(tensor: torch.Tensor) -> tuple[int, int]:
    """torch's own ``(fan_in, fan_out)`` guess for ``tensor`` (``[out, in, *kernel]``)."""
    return torch.nn.init._calculate_fan_in_and_fan_out(tensor)


def readopt_fsdp_parameters(module: nn.Module) -> None:
    """Make an FSDP2 module's parameter bookkeeping adopt the parameters now registered on its
    modules (after they were put back by assignment), without resharding first (resharding
    would re-register the old ones). What ``load_state_dict(assign=True)`` triggers in FSDP2."""
    fsdp_module = _fsdp_module_type()
    if fsdp_module is None or not isinstance(module, fsdp_module):
        return
    state = module._get_fsdp_state()
    for group in state._fsdp_param_groups:
        for fsdp_param in group.fsdp_params:
            fsdp_param.reset_sharded_param()
