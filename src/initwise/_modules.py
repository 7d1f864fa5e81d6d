"""What a module is: the one vocabulary that fans, the planner, LSUV and the audit all use.

"Is this a normalization layer / a weight layer / an embedding table / an activation / a
Hugging Face ``Conv1D`` / a wrapper (``torch.compile``, ``DataParallel``, DDP)" is answered
here and nowhere else, so that every verb sees the same model (a ``LlamaRMSNorm`` is a norm to
all of them).
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import _torch
from .gains import activation_name

__all__ = [
    "ACTIVATION_TYPES",
    "CONV_TYPES",
    "activation_bounds",
    "is_activation",
    "is_bias_name",
    "is_embedding",
    "is_hf_conv1d",
    "is_norm",
    "is_weight_layer",
    "layer_type",
    "parametrization_modules",
    "replicas",
    "resets_scale",
    "saturation_bounds",
    "sequence_first",
    "unwrap",
]

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
)  # fmt: skip
CONV_TYPES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    _torch.NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)  # fmt: skip
_NORM_NAME = re.compile(r"(rms|layer|group|batch|instance|scale)_?norm", re.IGNORECASE)

# Output bounds of bounded activations (for the audit's saturated fraction).
_BOUNDS: dict[type[nn.Module], tuple[float, float]] = {
    nn.Tanh: (-1.0, 1.0),
    nn.Sigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
}


def _is_leaf(module: nn.Module) -> bool:
    return next(iter(module.children()), None) is None


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation (torch's or a Hugging Face one)."""
    if isinstance(module, ACTIVATION_TYPES):
        return True
    if any(True for _ in module.parameters(recurse=False)) or not _is_leaf(module):
        return False
    return activation_name(module) is not None and not isinstance(module, nn.Identity)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer.

    torch's BatchNorm*/SyncBatchNorm/InstanceNorm*, LayerNorm, GroupNorm, RMSNorm,
    LocalResponseNorm; any leaf whose class name says so (``LlamaRMSNorm``, ``T5LayerNorm``,
    ``LayerNorm2d``, ``FusedLayerNorm``, ``FrozenBatchNorm2d``...); or, by structure, a leaf
    with an ``eps`` / ``variance_epsilon`` attribute whose own parameters are a 1-D
    ``weight`` (and ``bias``).

    >>> is_norm(nn.LayerNorm(4)), is_norm(nn.Linear(4, 4))
    (True, False)
    """
    if isinstance(module, _NORM_TYPES):
        return True
    t = type(module)
    if t.__module__.startswith("torch.nn.modules.") and t is not nn.Module \
            and not any(_torch.has_own_attr(module, a) for a in ("eps", "variance_epsilon")):  # fmt: skip
        # a torch.nn type without an eps: not a norm unless its name says so, fixed per type
        stock = _STOCK_IS_NORM.get(t)
        if stock is None:
            _STOCK_IS_NORM[t] = stock = _is_norm(module)
        return stock
    return _is_norm(module)


# torch.nn's own module types (not nn.Module itself) -> is_norm of an instance without an
# ``eps``: the structural test below costs ~10 µs a module (hasattr through
# nn.Module.__getattr__), and the audit and LSUV ask for every module
_STOCK_IS_NORM: dict[type, bool] = {}


def _is_norm(module: nn.Module) -> bool:
    if not _is_leaf(module):
        return False
    if "Norm" in type(module).__name__ or _NORM_NAME.search(type(module).__name__):
        return True
    if not (hasattr(module, "eps") or hasattr(module, "variance_epsilon")):
        return False
    own = dict(module.named_parameters(recurse=False))
    return "weight" in own and set(own) <= {"weight", "bias"} and all(p.dim() == 1 for p in own.values())


def resets_scale(module: nn.Module) -> bool:
    """Whether ``module`` is a norm that re-sets the scale of its output in its current mode.

    Batch and instance norms do so only when they use batch statistics (train mode, or no
    running statistics); with running statistics (eval mode, ``FrozenBatchNorm2d``) they are a
    fixed affine map. Every other norm always does.
    """
    if isinstance(module, _torch.NormBase):
        return bool(module.training or getattr(module, "running_var", None) is None)
    if not is_norm(module):
        return False
    frozen = type(module).__name__.lower().startswith("frozen")
    running = getattr(module, "running_var", None) is not None and not module.training
    return not (frozen or running)


def is_bias_name(leaf: str) -> bool:
    """Whether a module's own tensor named ``leaf`` is a bias: ``bias``, the RNN biases
    ``bias_ih_l0`` / ``bias_hh_l1_reverse``, ``in_proj_bias``."""
    return leaf == "bias" or leaf.startswith("bias_") or leaf.endswith("_bias")


def is_embedding(module: nn.Module) -> bool:
    """Whether ``module`` is an embedding table."""
    return isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or (
        "Embedding" in type(module).__name__ and isinstance(getattr(module, "weight", None), torch.Tensor)
        and _is_leaf(module)
    )


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (a linear layer stored ``[in, out]``)."""
    t = type(module)
    return t.__name__ == "Conv1D" and (hasattr(module, "nf") or t.__module__.startswith("transformers"))


def is_weight_layer(module: nn.Module) -> bool:
    """Whether ``module`` directly owns a ≥2-D parameter and is not an embedding or norm."""
    if is_embedding(module) or is_norm(module):
        return False
    if any(_torch.is_lazy(p) or p.dim() >= 2 for p in module.parameters(recurse=False)):
        return True  # (a lazy layer's weight has no shape yet: a weight layer all the same)
    # a parametrized weight (weight_norm, spectral_norm, ...) lives in module.parametrizations
    # (a submodule: looked up directly, not by a getattr that raises for most modules)
    plist = getattr(module, "parametrizations", None) if _torch.has_own_attr(module, "parametrizations") else None
    return isinstance(plist, nn.ModuleDict) and any(p.dim() >= 2 for p in plist.parameters())


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """``(lower, upper)`` output bounds of a bounded activation (tanh, sigmoid, hardtanh...)."""
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return (float(module.min_val), float(module.max_val))
    for cls, b in _BOUNDS.items():
        if isinstance(module, cls):
            return b
    return None


def saturation_bounds(module: nn.Module) -> tuple[float | None, float | None] | None:
    """The bounds near which ``module``'s outputs count as saturated: ``(lower, upper)``, a
    side ``None`` where the bound is not a saturation (``None``: not a bounded activation).

    A lower bound of 0 reached by a ReLU-like hard zero (ReLU6, ``Hardtanh(0, t)``) is the
    ReLU's inactive side, counted as exact zeros, not as saturation: only the upper bound
    saturates. Tanh, sigmoid, softsign and hardsigmoid saturate on both sides (their lower
    bound is approached, or held, by the same mechanism as the upper one).

    >>> saturation_bounds(nn.ReLU6()), saturation_bounds(nn.Tanh()), saturation_bounds(nn.ReLU())
    ((None, 6.0), (-1.0, 1.0), None)
    """
    b = activation_bounds(module)
    if b is None:
        return None
    if isinstance(module, nn.Hardtanh) and b[0] == 0.0:
        return (None, b[1])
    return (b[0], b[1])


def parametrization_modules(model: nn.Module) -> set[nn.Module]:
    """The modules that implement parametrizations inside ``model`` (``ParametrizationList``
    containers and their members, e.g. ``_WeightNorm``): internals of a parametrized layer,
    not layers of the model's dataflow.

    >>> lin = nn.utils.parametrizations.weight_norm(nn.Linear(3, 3))
    >>> sorted(type(m).__name__ for m in parametrization_modules(lin))
    ['ModuleDict', 'ParametrizationList', '_WeightNorm']
    """
    out: set[nn.Module] = set()
    for m in model.modules():
        if parametrize.is_parametrized(m):
            plist = getattr(m, "parametrizations", None)
            if isinstance(plist, nn.Module):
                out.update(plist.modules())
    return out


def layer_type(module: nn.Module) -> str:
    """The class name of ``module`` as its user wrote it (``Linear`` for a parametrized
    ``ParametrizedLinear``)."""
    cls = type(module)
    if parametrize.is_parametrized(module) and len(cls.__mro__) > 1:
        return cls.__mro__[1].__name__
    return cls.__name__


_WRAPPER_ATTRS = {"DistributedDataParallel": "module", "DataParallel": "module"}


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The module a wrapper runs, and the name prefix the wrapper adds to its parameters.

    Unwraps ``torch.compile(model)`` (``_orig_mod.``), ``DataParallel`` and
    ``DistributedDataParallel`` (``module.``), repeatedly; any other model is returned as is
    with prefix ``""``.

    >>> inner, prefix = unwrap(nn.DataParallel(nn.Linear(2, 2)))
    >>> type(inner).__name__, prefix
    ('Linear', 'module.')
    """
    prefix = ""
    while True:
        inner = _torch.compile_wrapped(model)
        if inner is not None:
            model, prefix = inner, prefix + "_orig_mod."
            continue
        attr = _WRAPPER_ATTRS.get(type(model).__name__)
        sub = getattr(model, attr, None) if attr else None
        if isinstance(sub, nn.Module):
            model, prefix = sub, prefix + attr + "."  # type: ignore[operator]
            continue
        return model, prefix


def replicas(model: nn.Module) -> int:
    """How many data-parallel replicas of the model a ``DistributedDataParallel`` wrapper
    (looked through as :func:`unwrap` does) keeps identical: its process group's size; 1 for
    any other model. DDP broadcasts rank 0's weights once, at construction, and never again.

    >>> replicas(nn.DataParallel(nn.Linear(2, 2)))
    1
    """
    while True:
        inner = _torch.compile_wrapped(model)
        if inner is not None:
            model = inner
            continue
        if type(model).__name__ == "DistributedDataParallel":
            group = getattr(model, "process_group", None)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                return int(torch.distributed.get_world_size(group))
            return 1
        sub = getattr(model, _WRAPPER_ATTRS.get(type(model).__name__, ""), None)
        if not isinstance(sub, nn.Module):
            return 1
        model = sub


def sequence_first(model: nn.Module) -> bool:
    """True if the model has torch layers that take ``[time, batch, ...]`` inputs."""
    kinds = (nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer,
             nn.TransformerDecoderLayer, nn.Transformer)  # fmt: skip
    return any(isinstance(m, kinds) and not getattr(m, "batch_first", True) for m in model.modules())
