"""Proof that the first pass is exact (``verify="auto"``): what the pass is watched for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import _torch
from .. import random as _random
from .._modules import is_hf_conv1d
from .._schemes import orthogonal_
from .units import _STOCK

# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

_KEEP_MODE: tuple[type, ...] = (_torch.BatchNormBase, _torch.InstanceNormBase)
# Modules whose own ``training`` flag only gates a fused inference path that skips submodule
# calls (and hence hooks); their dropout lives in submodules, which are in eval mode.
_NO_FASTPATH: tuple[type, ...] = (nn.TransformerEncoderLayer, nn.TransformerEncoder)



# -- Proof that the first pass is exact (``verify="auto"``) -----------------------------------
# The first pass's corrected outputs are what a fresh pass produces when every calibrated
# weight is used only by its own module's call (or after it is calibrated), each is used once,
# the module computes a stock linear map of it, and the forward pass is deterministic and
# stateless. Each condition is checked while the first pass runs; any doubt costs one
# verification pass, never a wrong report.

# Tensor accessors that read metadata, not values.
_METADATA = frozenset({
    "shape", "dtype", "device", "ndim", "layout", "is_cuda", "is_meta", "is_sparse",
    "is_quantized", "requires_grad", "grad", "grad_fn", "is_leaf", "names", "_version",
    "itemsize", "nbytes", "output_nr", "size", "dim", "numel", "nelement", "stride",
    "element_size", "is_floating_point", "is_complex", "is_contiguous", "data_ptr",
    "storage_offset", "get_device", "__len__", "__hash__", "__repr__", "__format__",
})  # fmt: skip
# Functions that read only the metadata of the argument at this position (a template).
_TEMPLATE_ARG = {"type_as": 1, "to": 1, "zeros_like": 0, "ones_like": 0, "empty_like": 0,
                 "full_like": 0, "new_zeros": 0, "new_ones": 0, "new_empty": 0, "new_full": 0,
                 "new_tensor": 0, "is_same_size": 1, "is_set_to": 1}  # fmt: skip
# Random functions: always random, or random only when their ``training`` argument is true
# (argument position, default). Dropout modules are in eval mode; functional calls may not be.
_ALWAYS_RANDOM = frozenset({
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like",
    "normal", "bernoulli", "multinomial", "poisson", "uniform_", "normal_", "bernoulli_",
    "random_", "exponential_", "geometric_", "cauchy_", "log_normal_", "gumbel_softmax",
    "fractional_max_pool2d", "fractional_max_pool3d", "native_dropout", "binomial",
    "_standard_gamma", "_sample_dirichlet", "rrelu_with_noise",
})  # fmt: skip
_TRAINING_RANDOM = {"dropout": (2, True), "dropout1d": (2, True), "dropout2d": (2, True),
                    "dropout3d": (2, True), "alpha_dropout": (2, False),
                    "feature_alpha_dropout": (2, False), "feature_dropout": (2, True),
                    "rrelu": (3, False), "scaled_dot_product_attention": (4, 0.0)}  # fmt: skip
def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a tensor property (``w.shape``, ``w.T``): its descriptor's name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _stock_forward(m: nn.Module) -> bool:
    """True if ``m``'s forward is the stock implementation of a known linear layer."""
    if "forward" in m.__dict__ or "_conv_forward" in m.__dict__:  # patched on the instance
        return False
    if is_hf_conv1d(m):
        return True
    t = type(m)
    for base in _STOCK:
        if isinstance(m, base):
            klass = next(k for k in t.__mro__ if k.__module__.startswith("torch.nn."))
            return all(getattr(t, f, None) is getattr(klass, f, None)
                       for f in ("forward", "_conv_forward"))  # fmt: skip
    return True  # custom_layers: the user declared the output linear in the weight


def _torch_nn_only(m: nn.Module) -> bool:
    """``m`` is one of torch.nn's own modules, run as torch defines it: no method replaced on
    the instance, no hook of its own."""
    return (type(m).__module__.startswith("torch.nn.modules.") and not _torch.has_module_hooks(m)
            and not any(callable(v) and hasattr(type(m), k) for k, v in vars(m).items()))  # fmt: skip


class _Watch(TorchFunctionMode):
    """Observes the first pass: calibrated weights read outside their module, random ops."""

    def __init__(self, run: Any) -> None:  # the run (``_Run``) that observes the pass
        super().__init__()
        self.run = run

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        kwargs = kwargs or {}
        if not self.run.internal:
            self.run.observe(func, args, kwargs)
        return func(*args, **kwargs)


def _orthogonal(t: torch.Tensor, name: str, seed: int | None, generator: torch.Generator) -> None:
    """Orthogonal pre-init of ``t``: keyed by (seed, name), or ``generator`` for a None seed."""
    orthogonal_(t, generator=generator if seed is None else _random.key(seed, name))


