"""Dataflow of a model's forward pass, traced on a meta-device shadow of the model.

What ``auto`` needs to know about a model is in its data dependencies, not in the order its
modules are registered: which nonlinearity feeds each weight (``act(gate(x)) * up(x)`` feeds
``down`` through a gated product; ``up`` reads ``x``), how each parameter is used (as the
weight of a linear map, with which axes contracted, which batched over experts; as a bias; as
an embedding table looked up by the input or by constant positions; in an ``exp``, ``mul`` or
``cat``), which outputs are split into fused parts (q/k/v, gate/up), which attention has no
``1/sqrt(d)`` on its logits, and which weight writes into each residual sum.

:func:`trace` finds all of it by running the forward pass once on a **shadow** of the model:
every module shallow-copied, every parameter and buffer replaced by an empty meta tensor of
the same (global) shape, every hook dropped. Nothing is computed, nothing of the user's model
is run, traced, hooked or changed (FSDP2 / tensor-parallel hooks and DTensors, DDP,
``torch.compile`` wrappers play no part), so the same architecture gives the same answer
whatever wraps it. A ``TorchFunctionMode`` records every tensor operation with its inputs.

The inputs are the caller's ``example_inputs`` moved to meta, or synthesized from the model:
Hugging Face models from their config (token ids, pixel values, audio features, decoder ids),
other models from their first layer (``Linear``: features, ``Conv*d``: images, ``Embedding``:
ids). A forward pass that cannot run on meta (data-dependent control flow, ``.item()``)
raises :class:`TraceError`; the caller then falls back (see :mod:`initwise.model.structure`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import _torch
from .._modules import is_activation, is_norm
from .._session import call_args
from ..gains import activation_name
from ..theory import length_map

__all__ = ["Attention", "Trace", "TraceError", "Usage", "meta_shadow", "model_init_semantics", "synthesize_inputs", "trace"]


class TraceError(RuntimeError):
    """The forward pass could not run on the meta shadow (the caller falls back)."""


# --------------------------------------------------------------------------------------------
# The shadow
# --------------------------------------------------------------------------------------------

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
               "_forward_hooks_always_called", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")  # fmt: skip


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    shape = tuple(t.shape)  # a DTensor's global shape
    return torch.empty(shape, dtype=t.dtype, device="meta")


def meta_shadow(model: nn.Module, *, meta: bool = True) -> tuple[nn.Module, dict[int, str]]:
    """A hook-free copy of ``model`` whose tensors are empty meta tensors; and shadow parameter
    ids -> the parameter's qualified name (every name of a tied parameter maps to its first).

    ``meta=False``: the copy shares the model's parameters (read, never written: the forward
    pass runs under ``no_grad``) and holds copies of its buffers, for a forward pass on real
    example inputs when the model cannot run on meta (data-dependent control flow).

    Modules are shallow copies: their Python attributes (configs, sizes, flags) are shared
    with the model except configs, which are copied so the shadow may switch a model to its
    eager code paths. Tensors are never copied, only their shapes: a billion-parameter model is
    shadowed in milliseconds.
    """
    tensors: dict[int, torch.Tensor] = {}
    names: dict[int, str] = {}
    clones: dict[int, nn.Module] = {}
    configs: dict[int, Any] = {}

    def shadow_tensor(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in tensors:
            if not meta:
                tensors[id(t)] = t if isinstance(t, nn.Parameter) else t.detach().clone()
            else:
                m = _meta_like(t)
                tensors[id(t)] = nn.Parameter(m, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else m
        return tensors[id(t)]

    def clone(m: nn.Module) -> nn.Module:
        if id(m) in clones:
            return clones[id(m)]
        new = object.__new__(type(m))  # no copy protocol: parametrized modules refuse it
        new.__dict__.update(m.__dict__)
        clones[id(m)] = new
        d = new.__dict__
        d["_parameters"] = {k: None if p is None else shadow_tensor(p) for k, p in _torch.own_parameters(m).items()}
        d["_buffers"] = {k: None if b is None else shadow_tensor(b) for k, b in _torch.own_buffers(m).items()}
        d["_modules"] = {k: None if c is None else clone(c) for k, c in m._modules.items()}
        for h in _HOOK_DICTS:
            if h in d:
                d[h] = type(d[h])()
        for k, v in list(d.items()):
            if k.startswith("_") or k == "training":
                continue
            if isinstance(v, torch.Tensor):  # an unregistered tensor attribute (a cache)
                d[k] = shadow_tensor(v)
            elif k == "config" and hasattr(v, "to_dict"):
                if id(v) not in configs:
                    configs[id(v)] = copy.copy(v)
                d[k] = configs[id(v)]
        return new

    shadow = clone(model)
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(tensors[id(p)]), name)
    for name, b in model.named_buffers(remove_duplicate=False):
        names.setdefault(id(tensors[id(b)]), name)
    for cfg in configs.values():  # eager code paths: every op visible, no fused kernels
        for attr, value in (("_experts_implementation", "batched_mm"),):
            with contextlib.suppress(Exception):
                setattr(cfg, attr, value)
    return shadow, names


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _hf_inputs(model: nn.Module) -> dict[str, torch.Tensor] | None:
    cfg = getattr(model, "config", None)
    main = getattr(model, "main_input_name", None)
    if cfg is None or not isinstance(main, str):
        return None
    b, s = 2, 8
    out: dict[str, torch.Tensor] = {}

    def sub(name: str) -> Any:
        return getattr(cfg, name, None)

    vision = sub("vision_config")
    if main == "input_ids" or (vision is not None and sub("text_config") is not None):
        out["input_ids"] = torch.zeros(b, s, dtype=torch.long, device="meta")
    if main == "pixel_values" or vision is not None:
        vc = vision if vision is not None else cfg
        size = getattr(vc, "image_size", 32)
        size = size[0] if isinstance(size, (list, tuple)) else size
        out["pixel_values"] = torch.empty(b, getattr(vc, "num_channels", 3), int(size), int(size), device="meta")
    if main == "input_features":
        n = getattr(cfg, "max_source_positions", 1500) * 2
        out["input_features"] = torch.empty(b, getattr(cfg, "num_mel_bins", 80), n, device="meta")
    if main == "input_values":
        out["input_values"] = torch.empty(b, 16000, device="meta")
    if getattr(cfg, "is_encoder_decoder", False):
        out["decoder_input_ids"] = torch.zeros(b, 4, dtype=torch.long, device="meta")
    return out or None


def synthesize_inputs(model: nn.Module) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Meta inputs for ``model`` when the caller gave none: guesses to try in order (a Hugging
    Face model's from its config; else one per distinct first-layer kind, in registration
    order: a module's first registered layer need not be the one that reads the input)."""
    hf = _hf_inputs(model)
    if hf is not None:
        return [((), hf)]
    out: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    seen: set[tuple[Any, ...]] = set()
    for m in model.modules():
        guess: tuple[torch.Tensor, ...] | None = None
        more: list[tuple[torch.Tensor, ...]] = []  # other sizes of the same kind of input
        if isinstance(m, nn.Embedding):
            guess = (torch.zeros(2, 8, dtype=torch.long, device="meta"),)
        elif isinstance(m, nn.Linear):
            guess = (torch.empty(2, m.in_features, device="meta"),)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            n = m.weight.dim() - 2
            # a network whose later layers fix the map size (patch tokens mixed by a Linear,
            # a flatten before the head) runs at one size only: the common ones, in turn
            sizes = {1: (256, 1024), 2: (64, 32, 224), 3: (16, 32)}[n]
            shaped: list[tuple[torch.Tensor, ...]] = [
                (torch.empty(2, m.in_channels, *([size] * n), device="meta"),) for size in sizes]
            guess, more = shaped[0], shaped[1:]
        elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            # a decoder or generator: a small map (a DCGAN generator reads z as [N, z, 1, 1])
            n = m.weight.dim() - 2
            guess = (torch.empty(2, m.in_channels, *([1] * n), device="meta"),)
        elif isinstance(m, nn.RNNBase):
            shape = (2, 8, m.input_size) if m.batch_first else (8, 2, m.input_size)
            guess = (torch.empty(*shape, device="meta"),)
        elif isinstance(m, nn.MultiheadAttention):
            guess = (torch.empty(2, 8, m.embed_dim, device="meta"),) * 3
        if guess is None:
            continue
        need = _required_positional(model)
        for g in (guess, *more):
            if len(g) < need:  # forward(src, tgt) and the like: the same kind of input each
                g = g + (g[0],) * (need - len(g))
            key = tuple((tuple(t.shape), t.dtype) for t in g)
            if key not in seen:
                seen.add(key)
                out.append((g, {}))
        if len(out) >= 6:
            break
    return out[:6]


def _required_positional(model: nn.Module) -> int:
    """How many positional arguments ``model.forward`` requires (0 if it cannot tell)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 0
    return sum(1 for p in params if p.default is p.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _to_meta(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.empty(tuple(x.shape), dtype=x.dtype, device="meta") if not x.is_meta else x
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)) and not hasattr(x, "_fields"):
        return type(x)(_to_meta(v) for v in x)
    return x


# --------------------------------------------------------------------------------------------
# The recorded graph
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    op: str
    inputs: list[_Node]
    index: int
    param: str | None = None  # a parameter or buffer of the model
    from_input: bool = False  # depends on the model's inputs
    activation: Any = None  # output of an activation module / function
    axes: tuple[int | None, ...] | None = None  # param-derived: which param axis each dim is
    scalars: tuple[float, ...] = ()
    weight: str | None = None  # output of a weight op: the weight's parameter name
    module: str = ""
    numel: int = 0
    n_out: int = 1
    last: int = 0  # size of the last dimension of (the first) output
    split_last: bool = False  # a split along the last dimension into equal parts
    norm_out: bool = False  # output of a normalization module
    src_param: str | None = None  # a parameter this is a view / cast / gather of
    value: float | None = None  # a one-element constant computed off meta (torch.tensor(d).sqrt())


@dataclass
class Usage:
    """How the forward pass used one parameter (one entry per use, in execution order)."""

    # weight, bias, embedding, position (constant indices), counted_position (positions computed
    # from the input by a cumsum), norm, table (read whole as data), other
    kind: str
    op: str
    module: str
    in_axes: tuple[int, ...] = ()
    out_axes: tuple[int, ...] = ()
    batch_axes: tuple[int, ...] = ()
    fused: int = 1
    fused_contiguous: bool = True
    fan_in: float = 0.0  # the contracted size (weights)
    input_index: int = -1  # the graph node of the op's input (weights)
    activation: Any = None
    query_scale: float = 1.0
    offset: float | None = None  # w + c with a Python number c (add, sub): c; else None


@dataclass(frozen=True)
class Attention:
    """One attention op: where its queries come from, their head size and the logit scale.

    ``query`` is the weight whose output the queries are (``None``: not found), ``part`` /
    ``parts`` the fused part of that output along its last dimension (q of a packed q-k-v:
    part 0 of 3; ``None`` / 1 when not fused), ``module`` the module whose output carries the
    queries (the weight's module, or the norm that normalizes the queries after it, e.g. a
    ``q_norm``), ``head_dim`` the size of one query vector and ``scale`` the factor the logits
    ``q . k`` are multiplied by (``1/sqrt(head_dim)`` in standard attention).
    """

    query: str | None
    module: str
    part: int | None
    parts: int
    head_dim: int
    scale: float


@dataclass
class Trace:
    """What :func:`trace` found (parameter names are the model's qualified names)."""

    usages: dict[str, list[Usage]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # weights in execution order
    module_order: list[str] = field(default_factory=list)  # their modules, first use
    residual: list[tuple[tuple[str, ...], str, str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # module -> what feeds the first weight op it runs (also when the weight is computed, e.g.
    # by a weight_norm parametrization, and so is no parameter)
    module_act: dict[str, Any] = field(default_factory=dict)
    nodes: list[Any] = field(default_factory=list, repr=False)  # the graph, execution order
    attention: list[Attention] = field(default_factory=list)  # attention ops, execution order

    def weight_usage(self, name: str) -> Usage | None:
        """The first use of ``name`` as a weight (or an embedding), if any."""
        for u in self.usages.get(name, []):
            if u.kind in ("weight", "embedding"):
                return u
        return None


# Conversions of dtype (or device) that keep a tensor's values: a weight read through one of
# them (``w.type(torch.float32)``, ``w.double()``, ``w.to(x)``) is still that weight. The one
# list of them: the trace, structure, roles and the planner all read it.
CASTS = frozenset({"to", "float", "half", "bfloat16", "double", "type", "type_as"})

# Operations that pass the signal through (shape, dtype, device, dropout in eval, pooling).
_PASS = frozenset({
    *CASTS, "split_part", "view", "reshape", "transpose", "permute", "contiguous", "clone",
    "detach", "flatten", "unflatten", "squeeze", "unsqueeze", "expand", "expand_as", "__getitem__", "getitem", "chunk", "split", "unbind",
    "tensor_split", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "pad", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_pool2d_with_indices", "interpolate", "upsample", "repeat", "repeat_interleave",
    "narrow", "select", "movedim", "moveaxis", "swapaxes", "view_as", "reshape_as", "t",
    "__get__", "T", "mT", "roll", "flip", "pixel_shuffle", "pixel_unshuffle", "index_select", "gather",
    "masked_fill", "contiguous_", "requires_grad_", "mean", "sum",
})  # fmt: skip
_SPLITS = frozenset({"chunk", "split", "unbind", "tensor_split"})
# Reads of a tensor's values (data-dependent control flow): faked on meta, see _fake_value
_VALUE_READS = frozenset({"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "__contains__"})

_ACT_FUNCS: dict[str, str] = {
    "relu": "relu", "relu_": "relu", "gelu": "gelu", "silu": "silu", "tanh": "tanh",
    "tanh_": "tanh", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "elu": "elu", "selu": "selu",
    "celu": "celu", "mish": "mish", "softplus": "softplus", "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid", "relu6": "relu6", "leaky_relu": "leaky_relu",
    "softsign": "softsign", "logsigmoid": "logsigmoid", "hardtanh": "hardtanh",
}  # fmt: skip
_GATES = frozenset({"sigmoid", "softmax", "hardsigmoid", "tanh"})
_WEIGHT_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                         "conv_transpose2d", "conv_transpose3d", "matmul", "__matmul__",
                         "__rmatmul__", "bmm", "mm", "addmm", "baddbmm", "einsum", "bilinear"})  # fmt: skip
_NORM_OPS = frozenset({"layer_norm", "group_norm", "batch_norm", "instance_norm", "rms_norm"})
_FACTORY = frozenset({"arange", "zeros", "ones", "full", "tensor", "empty", "zeros_like",
                      "ones_like", "full_like", "empty_like", "rand", "randn", "randint", "linspace",
                      "eye", "tril", "triu"})  # fmt: skip


def _name(func: Any) -> str:
    name = getattr(func, "__name__", "") or str(func)
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, Mapping):
        for v in x.values():
            yield from _tensors(v)


class _Recorder(TorchFunctionMode):
    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.nodes: dict[int, _Node] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids unique while recording
        self.ops: list[tuple[str, list[Any], dict[str, Any], _Node | None, list[_Node]]] = []
        self.module: list[str] = [""]
        self.count = 0
        self.fakes = 0

    def node_of(self, t: torch.Tensor) -> _Node:
        n = self.nodes.get(id(t))
        if n is None:
            pname = self.names.get(id(t))
            n = _Node("param" if pname else "const", [], self.count, param=pname, numel=t.numel(),
                      axes=tuple(range(t.dim())) if pname else None)
            if not pname and not t.is_meta and t.numel() == 1:
                with contextlib.suppress(Exception):
                    n.value = float(t.detach().reshape(()))
            self.count += 1
            self.nodes[id(t)] = n
            self.keep.append(t)
        return n

    def mark_input(self, t: torch.Tensor) -> None:
        n = _Node("input", [], self.count, from_input=True, numel=t.numel())
        self.count += 1
        self.nodes[id(t)] = n
        self.keep.append(t)

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        kwargs = dict(kwargs or {})
        name = _name(func)
        if name in _VALUE_READS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return self._fake_value(name, args[0])
        out = func(*args, **kwargs)
        if name in ("shape", "dtype", "device", "size", "dim", "ndim", "numel", "is_floating_point",
                    "data_ptr", "stride", "requires_grad", "is_meta", "__len__", "__repr__",
                    "element_size", "is_contiguous", "get_device", "layout", "storage_offset"):
            return out
        ins = [self.node_of(t) for t in _tensors((args, kwargs))]
        outs = list(_tensors(out))
        if not outs:
            return out
        node = _Node(name, ins, self.count, module=self.module[-1],
                     from_input=any(i.from_input for i in ins),
                     numel=outs[0].numel() if outs else 0)
        self.count += 1
        node.scalars = tuple(float(a) for a in (*args, *kwargs.values())
                             if isinstance(a, (int, float)) and not isinstance(a, bool))
        node.n_out = len(outs)
        if (not node.from_input and not outs[0].is_meta and outs[0].numel() == 1
                and all(i.value is not None for i in ins)):
            with contextlib.suppress(Exception):  # a scale computed from constants
                node.value = float(outs[0].detach().reshape(()))
        node.last = int(outs[0].shape[-1]) if outs[0].dim() else 0
        if name in _SPLITS and args and isinstance(args[0], torch.Tensor) and len(outs) > 1:
            src = args[0]
            dim = kwargs.get("dim", args[2] if len(args) > 2 else (args[1] if name == "unbind" and len(args) > 1 else 0))
            if name == "unbind":
                dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            node.split_last = (isinstance(dim, int) and src.dim() > 0 and dim % src.dim() == src.dim() - 1
                               and len({t.numel() for t in outs}) == 1)
        if name in _ACT_FUNCS:
            node.activation = self._act_spec(name, args, kwargs)
        self.ops.append((name, list(args), kwargs, node, ins))
        node.axes = self._axes(name, args, kwargs, ins, outs)
        if name in _PASS and ins and (ins[0].param or ins[0].src_param):
            node.src_param = ins[0].param or ins[0].src_param
        for i, t in enumerate(outs):
            if name in _SPLITS and len(outs) > 1:  # each part its own node
                part = _Node("split_part", [node], self.count, module=node.module,
                             from_input=node.from_input, numel=t.numel(), axes=node.axes)
                part.scalars = (float(i),)
                self.count += 1
                self.nodes[id(t)] = part
            else:
                self.nodes[id(t)] = node
            self.keep.append(t)
        return out

    def _fake_value(self, name: str, t: torch.Tensor) -> Any:
        """A value for a data-dependent read of a meta tensor (``if mask.any():``, ``.item()``):
        structure does not depend on which branch a forward takes for such reads."""
        self.fakes += 1
        if self.fakes > 10_000:
            raise TraceError("the forward pass keeps reading tensor values (a data-dependent loop)")
        if name in ("__bool__", "__contains__"):  # `pad_id in input_ids[:, [-1, 0]]`
            return False
        if name == "tolist":
            return torch.zeros(t.shape, dtype=torch.long).tolist()
        if t.is_floating_point() or t.is_complex():
            return 0.0
        return 1

    @staticmethod
    def _act_spec(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        act = _ACT_FUNCS[name]
        if act == "leaky_relu":
            return ("leaky_relu", args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01))
        if act == "gelu" and kwargs.get("approximate", "none") == "tanh":
            return "gelu_tanh"
        return act

    def _axes(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], ins: list[_Node],
              outs: list[torch.Tensor]) -> tuple[int | None, ...] | None:
        """For a param-derived result: which parameter axis each of its dims is (or None)."""
        if not ins or ins[0].axes is None or not args or not isinstance(args[0], torch.Tensor):
            return None
        src, axes = args[0], ins[0].axes
        out = outs[0]
        if name in CASTS or name in ("contiguous", "clone", "detach", "__get__", "expand",
                                     "expand_as", "requires_grad_"):
            return axes if out.dim() == len(axes) else None
        if name in _SPLITS:
            return axes
        if name in ("T", "mT", "mH", "H"):
            if out.dim() < 2:
                return axes
            if name in ("T", "H"):
                return tuple(reversed(axes))
            return (*axes[:-2], axes[-1], axes[-2])
        if name in ("t", "transpose", "swapaxes"):
            if out.dim() < 2:
                return axes
            a, b = (0, 1) if name == "t" else (int(args[1]), int(args[2]))
            lst = list(axes)
            lst[a], lst[b] = lst[b], lst[a]
            return tuple(lst)
        if name == "permute":
            dims = args[1:] if len(args) > 2 else args[1]
            return tuple(axes[int(d)] for d in dims)
        if name == "unsqueeze":
            lst = list(axes)
            d = int(args[1]) % (len(axes) + 1)
            lst.insert(d, None)
            return tuple(lst)
        if name == "squeeze":
            kept = [a for a, s in zip(axes, src.shape, strict=True) if s != 1]
            return tuple(kept) if len(kept) == out.dim() else None
        if name in ("__getitem__", "index_select"):
            idx = args[1] if len(args) > 1 else None
            if name == "index_select":  # index_select(t, dim, idx): one axis kept in place
                return axes
            items = idx if isinstance(idx, tuple) else (idx,)
            picked: list[int | None] = []
            for i, it in enumerate(items):
                if i >= len(axes):
                    break
                if isinstance(it, slice):
                    picked.append(axes[i])
                elif isinstance(it, torch.Tensor) and it.dtype in (torch.long, torch.int):
                    picked.extend([-1 - (axes[i] or 0)] * max(it.dim(), 1))  # gathered: a batch axis
                elif isinstance(it, int):
                    continue  # selected: gone
                else:
                    return None
            picked.extend(axes[len(items):])
            return tuple(picked) if len(picked) == out.dim() else None
        if name in ("view", "reshape"):
            if tuple(out.shape) == tuple(src.shape):
                return axes
            return None
        return None


def _module_stack(shadow: nn.Module, rec: _Recorder) -> list[Any]:
    handles = []
    for name, m in shadow.named_modules():
        def pre(mod: nn.Module, args: Any, _n: str = name) -> None:
            rec.module.append(_n)

        def post(mod: nn.Module, args: Any, out: Any, _n: str = name) -> None:
            rec.module.pop()
            if is_activation(mod):
                for t in _tensors(out):
                    n = rec.nodes.get(id(t))
                    if n is not None:
                        n.activation = mod
            elif is_norm(mod):
                for t in _tensors(out):
                    n = rec.nodes.get(id(t))
                    if n is not None:
                        n.norm_out = True

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    return handles


# --------------------------------------------------------------------------------------------
# Reading the graph
# --------------------------------------------------------------------------------------------


def _walk_pass(n: _Node) -> _Node:
    seen = 0
    while n.op in _PASS and n.inputs and seen < 10_000 and n.activation is None:
        n = n.inputs[0]
        seen += 1
    return n


def _is_gate(n: _Node) -> bool:
    """Whether ``n`` is a gate (a sigmoid / softmax weighting, routing weights, a scalar) rather
    than a value: searched a few operations back, not through weight ops."""
    if (n.param is not None and n.numel <= 1) or n.op == "const":
        return True
    frontier, seen = [n], 0
    for _ in range(6):
        nxt = []
        for x in frontier:
            seen += 1
            if x.op in ("softmax", "sigmoid", "hardsigmoid", "log_softmax") or (
                    x.activation is not None and _act_label(x.activation) in ("sigmoid", "hardsigmoid")):
                return True
            if x.weight is not None or x.op in ("input", "param"):
                continue
            nxt.extend(x.inputs)
        frontier = nxt
        if seen > 200:
            break
    return False


@dataclass(frozen=True)
class Gated:
    """What feeds a weight op through a product ``x * sigmoid(z)`` of independent tensors (a
    squeeze-excite or GLU gate): ``act`` makes ``x`` (``None``: linear, unit second moment),
    ``gate`` is the sigmoid; the product's second moment is ``E[act^2] E[sigmoid(z)^2]``, so
    its exact gain is the product of the two gains."""

    act: Any
    gate: Any


def _act_label(act: Any) -> str:
    if isinstance(act, tuple):
        return str(act[0])
    if isinstance(act, str):
        return act
    name = activation_name(act)
    return name or type(act).__name__


def _feeding_activation(n: _Node) -> Any:
    """What feeds a weight op's input: an activation (module, name or (name, param)), or None."""
    for _ in range(10_000):
        if n.activation is not None:
            return n.activation
        if n.op in _PASS and n.inputs:
            n = n.inputs[0]
            continue
        if n.op in ("mul", "__mul__", "mul_") and len(n.inputs) == 2:
            # a gated product: act(g) * up (SwiGLU, up linear: E[act(z)^2]), or anything times a
            # sigmoid of another tensor (squeeze-excite, GLU): E[x^2] E[sigmoid(z)^2]
            ys = [_walk_pass(x) for x in n.inputs]
            labels = [None if y.activation is None else _act_label(y.activation) for y in ys]
            value = next((i for i, lab in enumerate(labels) if lab not in (None, "sigmoid", "softmax")), None)
            gate = next((i for i, lab in enumerate(labels) if lab == "sigmoid"), None)
            if gate is not None and (value is None or value != gate):
                other = ys[1 - gate]
                src = _walk_pass(ys[gate].inputs[0]) if ys[gate].inputs else None
                if src is other:  # x * sigmoid(x): SiLU written out, not a gate
                    return "silu"
                if value is not None or labels[1 - gate] is None:
                    return Gated(None if value is None else ys[value].activation, ys[gate].activation)
            return None if value is None else ys[value].activation
        if n.op in _ADDS and len(n.inputs) >= 2:
            # x + (terms a parameter scales or makes) is x's signal: a learned per-channel
            # affine around the identity (ConvNeXt V2's GRN x + gamma·x·N(x) + beta, a bias
            # added apart) is the identity at its init gamma = beta = 0 and near it after
            values = [x for x in n.inputs if not _param_term(x)]
            if len(values) != 1:
                return None
            n = values[0]
            continue
        return None
    return None


_ADDS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__"})
_MULS = frozenset({"mul", "__mul__", "__rmul__", "mul_"})


def _is_param(n: _Node) -> bool:
    """Whether ``n`` is a parameter's values (through views, indexing, casts), not the input's."""
    return _param_node(n) is not None and not n.from_input


def _param_term(n: _Node, depth: int = 0) -> bool:
    """Whether ``n`` is a parameter (through views and casts), a product with one, or a sum of
    such terms: an addend whose size a parameter sets (zero when the parameter is zero)."""
    n = _walk_pass(n)
    if _is_param(n):
        return True
    if depth > 8 or len(n.inputs) < 2:
        return False
    if n.op in _MULS:
        return any(_is_param(_walk_pass(x)) for x in n.inputs)
    if n.op in _ADDS:
        return all(_param_term(x, depth + 1) for x in n.inputs)
    return False


def _operand_layout(name: str, args: Sequence[Any], pos: int, node: _Node, rec: _Recorder
                    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:  # fmt: skip
    """(in, out, batch) parameter axes of the operand at ``pos`` of a weight op."""
    axes = node.axes
    if axes is None:
        return None
    d = len(axes)

    def pick(dims: Sequence[int]) -> tuple[int, ...]:
        out = []
        for k in dims:
            a = axes[k]
            if a is None or a < 0:
                return ()
            out.append(a)
        return tuple(out)

    batch = tuple(sorted({-1 - a for a in axes if a is not None and a < 0}))
    lead = [k for k in range(d - 2)]
    batch = tuple(sorted(set(batch) | set(pick(lead)))) if lead else batch
    if name == "linear":
        return pick([d - 1]), pick([d - 2]), batch
    if name.startswith("conv"):
        return None  # convolution weights: the module's own layout (fans) is exact
    if name in ("matmul", "__matmul__", "bmm", "mm", "baddbmm", "addmm", "__rmatmul__"):
        first = {"addmm": 1, "baddbmm": 1}.get(name, 0)
        is_left = pos == first if name != "__rmatmul__" else pos != 0
        if d == 1:
            return pick([0]), (), batch
        if is_left:  # W @ x: W [..., out, in]
            return pick([d - 1]), pick([d - 2]), batch
        return pick([d - 2]), pick([d - 1]), batch  # x @ W: W [..., in, out]
    return None


def _fan_in(name: str, w: torch.Tensor, pos: int, node: _Node | None,
            lay: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None) -> float:
    """The size a weight op contracts its weight operand ``w`` over (per output)."""
    if name.startswith("conv"):
        return float(math.prod(w.shape[1:]))
    if name in ("linear", "bilinear") or w.dim() < 2:
        return float(w.shape[-1]) if w.dim() else 1.0
    if name == "einsum":
        if node is None or node.axes is None or lay is None:
            return 0.0
        return float(math.prod(w.shape[k] for k, ax in enumerate(node.axes) if ax in lay[0]))
    first = {"addmm": 1, "baddbmm": 1}.get(name, 0)
    left = (pos == first) if name != "__rmatmul__" else pos != 0
    return float(w.shape[-1] if left else w.shape[-2])


def _einsum_layout(eq: str, pos: int, node: _Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    if node.axes is None or "..." in eq or "->" not in eq:
        return None
    lhs, out = eq.replace(" ", "").split("->")
    terms = lhs.split(",")
    if pos >= len(terms):
        return None
    mine = terms[pos]
    others = set("".join(t for i, t in enumerate(terms) if i != pos))
    ins_, outs_, batch_ = [], [], []
    for k, c in enumerate(mine):
        a = node.axes[k] if k < len(node.axes) else None
        if a is None or a < 0:
            return None
        if c in out and c in others:
            batch_.append(a)
        elif c in out:
            outs_.append(a)
        elif c in others:
            ins_.append(a)
    return tuple(ins_), tuple(outs_), tuple(batch_)


def _consumers(rec: _Recorder) -> dict[int, list[_Node]]:
    """Node -> the nodes that read it (split parts included)."""
    out: dict[int, list[_Node]] = {}
    seen: set[int] = set()
    for node in [n for _, _, _, n, _ in rec.ops if n is not None] + list(rec.nodes.values()):
        if id(node) in seen:
            continue
        seen.add(id(node))
        for i in node.inputs:
            out.setdefault(id(i), []).append(node)
    return out


# How far (in ops) the parts of a split are followed to a ``cat`` that joins them again, and
# the ops that end the search: past a weight op, an attention or a softmax, q, k and v (or gate
# and up) have been combined, so a later ``cat`` says nothing about the split.
_REJOIN_DEPTH = 24
_MIXING_OPS = _WEIGHT_OPS | {"scaled_dot_product_attention", "softmax", "log_softmax"}


def _fused_parts(start: _Node, consumers: dict[int, list[_Node]]) -> tuple[int, bool]:
    """Into how many equal parts a weight op's output is split along its features (q/k/v,
    gate/up; 1 if not), and whether the parts are consecutive blocks (no reshape before the
    split; GPT-NeoX's per-head interleaved q/k/v is not). A split whose parts meet again in
    one ``cat`` before any weight op or attention mixes them (rotary halves; DeepSeek's
    no-rope and rope parts of the query, joined after the rotary code) is not a split into
    parts."""
    frontier = [(start, True)]
    for _ in range(4):
        nxt = []
        for n, contiguous in frontier:
            for c in consumers.get(id(n), []):
                if c.op in _SPLITS and c.split_last:
                    parts = [p for p in consumers.get(id(c), []) if p.op == "split_part"]
                    reach: dict[int, set[int]] = {}
                    for k, p in enumerate(parts):
                        near, seen = [p], {id(p)}
                        for _ in range(_REJOIN_DEPTH):
                            near = [d for x in near for d in consumers.get(id(x), [])
                                    if id(d) not in seen and d.op not in _MIXING_OPS]
                            seen.update(id(d) for d in near)
                            for d in near:
                                if d.op in ("cat", "stack", "concat", "concatenate"):
                                    reach.setdefault(id(d), set()).add(k)
                    if any(len(v) > 1 for v in reach.values()):
                        return 1, True
                    return c.n_out, contiguous
                if c.op in ("view", "reshape", "unflatten"):  # features regrouped: interleaved parts
                    nxt.append((c, contiguous and c.last == start.last))
                elif c.op in CASTS or c.op in ("transpose", "permute", "contiguous", "squeeze",
                                               "unsqueeze", "flatten", "add", "add_"):
                    nxt.append((c, contiguous))
        frontier = nxt
    return 1, True


def _ancestors(n: _Node, cache: dict[int, frozenset[int]]) -> frozenset[int]:
    hit = cache.get(id(n))
    if hit is not None:
        return hit
    out: set[int] = set()
    stack = [n]
    while stack:
        x = stack.pop()
        if id(x) in out:
            continue
        out.add(id(x))
        stack.extend(x.inputs)
    res = frozenset(out)
    cache[id(n)] = res
    return res


def _value_weights(n: _Node, depth: int = 0) -> tuple[list[_Node], str | None]:
    """The weight ops that write ``n`` along its value path (through norms, gates, dropout,
    sums of branches such as routed + shared experts), and the norm met on the way."""
    norm: str | None = None
    for _ in range(10_000):
        if n.weight is not None:
            return [n], norm
        if n.op in _NORM_OPS and n.inputs:
            norm = norm or n.module
            n = n.inputs[0]
            continue
        if n.op in _PASS and n.inputs:
            n = n.inputs[0]
            continue
        if n.op in ("mul", "__mul__", "mul_", "div", "__truediv__") and n.inputs:
            values = [x for x in n.inputs if not _is_gate(x)]
            if len(values) != 1:
                return [], norm
            n = values[0]
            continue
        if n.op in ("add", "__add__", "add_") and len(n.inputs) == 1:  # + a constant
            n = n.inputs[0]
            continue
        if n.op in ("einsum", "matmul", "__matmul__", "bmm") and len(n.inputs) == 2:
            values = [x for x in n.inputs if not _is_gate(x)]  # combine with routing weights
            if len(values) != 1:
                return [], norm
            n = values[0]
            continue
        if n.op in ("add", "__add__", "add_") and len(n.inputs) == 2 and depth < 4:
            out: list[_Node] = []
            for x in n.inputs:
                ws, nm = _value_weights(x, depth + 1)
                out += ws
                norm = norm or nm
            return out, norm
        return [], norm
    return [], norm


def _weight_input(n: _Node) -> _Node | None:
    """The activation input of a weight op's node (the operand that is not the weight)."""
    return next((x for x in n.inputs if _param_node(x) is None), None)


def _chain(n: _Node, stop: frozenset[int], depth: int = 0) -> list[str]:
    """The longest chain of weights along the value path ending at ``n``, back to the
    residual stream (``stop``): a residual branch's depth, Fixup's ``m``."""
    for _ in range(10_000):
        if id(n) in stop or depth > 64:
            return []
        if n.weight is not None:
            x = _weight_input(n)
            return [*(_chain(x, stop, depth + 1) if x is not None else []), n.weight]
        if n.op == "scaled_dot_product_attention" and len(n.inputs) >= 3:
            n = n.inputs[2]  # the values; queries and keys only weight them
            continue
        if n.op in ("mul", "__mul__", "mul_", "matmul", "__matmul__", "bmm", "div", "__truediv__",
                    "add", "__add__", "add_") and n.inputs:
            values = [x for x in n.inputs if not _is_gate(x)]
            chains = [_chain(x, stop, depth + 1) for x in values]
            return max(chains, key=len, default=[])
        if (n.op in _PASS or n.op in _NORM_OPS or n.activation is not None) and n.inputs:
            n = n.inputs[0]
            continue
        return []
    return []


def _value_weight(n: _Node) -> tuple[_Node | None, str | None]:
    ws, norm = _value_weights(n)
    return (ws[0] if ws else None), norm


# --------------------------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------------------------


def trace(model: nn.Module, example_inputs: Any = None) -> Trace:
    """Run ``model``'s forward pass on its meta shadow and read its dataflow (see module docs).

    When it cannot run on meta and ``example_inputs`` are given, the pass runs once more on
    them, on a shadow that reads the model's parameters (never writes them) and owns copies
    of its buffers; not for sharded or meta models, whose values are not all here.
    """
    try:
        return _trace(model, example_inputs, meta=True)
    except TraceError as err:
        local = not any(p.is_meta or _torch.is_dtensor(p) for p in model.parameters())
        if example_inputs is None or not local:
            raise
        try:
            tr = _trace(model, example_inputs, meta=False)
        except TraceError:
            raise err from None
        tr.notes.append(f"dataflow read on example_inputs (the model cannot run on meta: {err})")
        return tr


def _trace(model: nn.Module, example_inputs: Any, *, meta: bool) -> Trace:
    shadow, names = meta_shadow(model, meta=meta)
    shadow.eval()
    if example_inputs is not None:
        inputs = _to_meta(example_inputs) if meta else example_inputs
        guesses = [call_args(inputs, verb="example_inputs")]
    else:
        guesses = synthesize_inputs(shadow)
        if not guesses:
            raise TraceError("no example_inputs and no way to synthesize them for this model")
    err: TraceError | None = None
    for args, kwargs in guesses:
        try:
            return _run(shadow, names, args, kwargs)
        except TraceError as e:
            err = err or e
    assert err is not None
    raise err


def _run(shadow: nn.Module, names: dict[int, str], args: tuple[Any, ...], kwargs: dict[str, Any]
         ) -> Trace:  # fmt: skip
    rec = _Recorder(names)
    for t in _tensors((args, kwargs)):
        rec.mark_input(t)
    handles = _module_stack(shadow, rec)
    try:
        # grad enabled: torch's fused inference paths (MultiheadAttention, TransformerEncoder
        # layers) would hide every op; on meta nothing is computed either way
        with torch.enable_grad(), _torch.composites_traced_through(), rec:
            shadow(*args, **kwargs)
    except Exception as err:
        raise TraceError(f"{type(err).__name__}: {str(err)[:160]}") from err
    finally:
        for h in handles:
            h.remove()
    return _read(rec)


# ops whose result holds none of an operand's values: a comparison's booleans, a mask's
_NOT_VALUES = frozenset({
    "eq", "ne", "gt", "ge", "lt", "le", "__eq__", "__ne__", "__gt__", "__ge__", "__lt__",
    "__le__", "logical_and", "logical_or", "logical_not", "logical_xor", "isin", "isnan",
    "isinf", "isfinite",
})  # fmt: skip
# value operands of ops that also take a mask or a condition (the others are not followed)
_VALUE_OPERANDS = {"masked_fill": (0,), "masked_fill_": (0,), "where": (1, 2)}


def _counts_positions(n: _Node) -> bool:
    """Whether lookup indices count along the sequence (a ``cumsum`` among the sources of
    their values: XLM-R's and RoBERTa's padding-aware positions
    ``cumsum(ids != pad) * (ids != pad)``): positions, though computed from the input. Token
    ids are not counted, nor are they when only a mask applied to them came from a cumsum
    (``ids.masked_fill(cumsum(ids == eos) > 0, pad)``): masks, conditions and comparisons
    carry no values of their operands."""
    frontier, seen = [n], 0
    while frontier and seen < 64:
        x = frontier.pop()
        seen += 1
        if x.op == "cumsum":
            return True
        if x.weight is not None or x.op in _NOT_VALUES:
            continue
        keep = _VALUE_OPERANDS.get(x.op)
        frontier.extend(x.inputs if keep is None else [x.inputs[i] for i in keep if i < len(x.inputs)])
    return False


def _table_read(n: _Node, p: _Node | None) -> str | None:
    """The parameter ``n`` is (``p``: ``_param_node(n)``) or a view, cast or gather of, when
    an op reads it whole as data; else ``None``."""
    return p.param if p is not None else n.src_param


# ops that copy a tensor along a new or a size-1 axis (a batch of learned queries)
_BROADCASTS = frozenset({"repeat", "expand", "expand_as", "repeat_interleave", "tile", "broadcast_to"})


def _broadcast_table(n: _Node) -> bool:
    """Whether a parameter reaches ``n`` through a broadcast over a batch (DETR's learned
    object queries ``weight.unsqueeze(0).repeat(batch, 1, 1)``): one vector per query, like
    a token's embedding, not a table the model reads whole."""
    for _ in range(100):
        if n.param is not None or not n.inputs:
            return False
        if n.op in _BROADCASTS:
            return True
        n = n.inputs[0]
    return False


def _param_node(n: _Node) -> _Node | None:
    """The parameter a param-derived operand comes from (through views, indexing, casts)."""
    for _ in range(100):
        if n.param is not None:
            return n
        if n.axes is None or not n.inputs:
            return None
        n = n.inputs[0]
    return None


_OFFSET_SIGN = {"add": 1.0, "__add__": 1.0, "__radd__": 1.0, "add_": 1.0, "sub": -1.0, "__sub__": -1.0}


def _scalar_offset(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> float | None:
    """``c`` when the op is ``t + c`` (or ``t - c``: ``-c``) of one tensor and a Python number."""
    sign = _OFFSET_SIGN.get(name)
    if sign is None or kwargs.get("alpha", 1) != 1 or len(args) != 2:
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(tensors) != 1 or len(nums) != 1 or (sign < 0 and not isinstance(args[0], torch.Tensor)):
        return None
    return sign * float(nums[0])


def _read(rec: _Recorder) -> Trace:
    out = Trace()
    consumers = _consumers(rec)
    weight_nodes: list[tuple[_Node, str]] = []

    def use(pname: str, u: Usage) -> None:
        out.usages.setdefault(pname, []).append(u)

    for name, args, kwargs, node, ins in rec.ops:
        assert node is not None
        if (name == "linear" or name.startswith("conv")) and node.module not in out.module_act:
            xs = [a for a in args if isinstance(a, torch.Tensor)]
            xn = rec.nodes.get(id(xs[0])) if xs else None
            if xn is not None and xn.param is None:
                out.module_act[node.module] = _feeding_activation(xn)
        if name in _WEIGHT_OPS or name == "embedding":
            tensor_args = [a for a in args if isinstance(a, torch.Tensor)]
            for pos, a in enumerate(tensor_args if name != "einsum" else args[1:]):
                if not isinstance(a, torch.Tensor):
                    continue
                n = rec.nodes.get(id(a))
                p = _param_node(n) if n is not None else None
                if pos == 0 and (name == "linear" or name.startswith("conv")) and n is not None:
                    table = _table_read(n, p)
                    if table is not None and not _broadcast_table(n):  # a table read whole as
                        use(table, Usage("table", name, node.module))  # the layer's input
                        continue  # (DeBERTa-v2's rel_embeddings)
                if p is None or p.param is None:
                    continue
                if name == "embedding":
                    if pos == 1:
                        idx = tensor_args[0]
                        idx_node = rec.nodes.get(id(idx))
                        kind = "position"
                        if idx_node is not None and idx_node.from_input:
                            kind = "counted_position" if _counts_positions(idx_node) else "embedding"
                        use(p.param, Usage(kind, name, node.module))
                    continue
                if name in ("linear", "bilinear") or name.startswith("conv"):
                    bias_pos = 2
                    if pos == bias_pos and p.numel and a.dim() == 1:
                        use(p.param, Usage("bias", name, node.module))
                        continue
                    if pos != 1:
                        continue
                elif name in ("addmm", "baddbmm") and pos == 0:
                    use(p.param, Usage("bias", name, node.module))
                    continue
                if name == "einsum":
                    lay = _einsum_layout(str(args[0]), pos, n) if n is not None else None
                else:
                    lay = _operand_layout(name, tensor_args, pos, n, rec) if n is not None else None
                x_nodes = [rec.nodes.get(id(t)) for t in tensor_args if t is not a]
                x = next((xn for xn in x_nodes if xn is not None and xn.param is None), None)
                act = _feeding_activation(x) if x is not None else None
                u = Usage("weight", name, node.module, activation=act,
                          input_index=-1 if x is None else x.index)
                if lay is not None:
                    ins_, outs_, batch_ = lay
                    nd = len(p.axes) if p.axes is not None else 0
                    if ins_ and outs_ and name != "einsum":
                        # parameter axes the operand no longer has were indexed away (one expert
                        # of a stack, W[i]): one matrix per index, as a batch axis, never a
                        # receptive field that would multiply the fans
                        gone = set(range(nd)) - set(ins_) - set(outs_) - set(batch_)
                        batch_ = tuple(sorted(set(batch_) | gone))
                    u.in_axes, u.out_axes, u.batch_axes = ins_, outs_, batch_
                u.fan_in = _fan_in(name, a, pos, n, lay)
                u.fused, u.fused_contiguous = _fused_parts(node, consumers)
                use(p.param, u)
                node.weight = p.param
                weight_nodes.append((node, p.param))
                if p.param not in out.order:
                    out.order.append(p.param)
                    if node.module not in out.module_order:
                        out.module_order.append(node.module)
        elif name in _NORM_OPS:
            n0 = rec.nodes.get(id(args[0])) if args and isinstance(args[0], torch.Tensor) else None
            t0 = _table_read(n0, _param_node(n0)) if n0 is not None else None
            if t0 is not None:  # a table normalized whole
                use(t0, Usage("table", name, node.module))
            for t in list(args[1:]) + list(kwargs.values()):
                if isinstance(t, torch.Tensor):
                    n = rec.nodes.get(id(t))
                    if n is not None and n.param is not None:
                        use(n.param, Usage("norm", name, node.module))
        elif name not in _PASS:  # any other use of a parameter (or of a view / cast of it)
            for i in ins:
                p = _param_node(i) if i.param is not None or i.axes is not None else None
                pname = p.param if p is not None else i.src_param
                if pname is not None and name not in [u.op for u in out.usages.get(pname, [])]:
                    use(pname, Usage("other", name, node.module, offset=_scalar_offset(name, args, kwargs)))
    _attention_scales(rec, out, consumers)
    _residuals(rec, out)
    seen: dict[int, _Node] = {}
    for n in rec.nodes.values():
        seen.setdefault(id(n), n)
        for i in n.inputs:
            seen.setdefault(id(i), i)
    out.nodes = sorted(seen.values(), key=lambda n: n.index)
    return out


def _attention_scales(rec: _Recorder, out: Trace, consumers: dict[int, list[_Node]]) -> None:
    """Queries of attention whose logits lack ``1/sqrt(d)``: the factor their init needs."""
    for name, args, kwargs, node, _ in rec.ops:
        assert node is not None
        if name == "scaled_dot_product_attention":
            q = args[0] if args else kwargs.get("query")
            if not isinstance(q, torch.Tensor):
                continue
            d = q.shape[-1]
            scale = kwargs.get("scale")
            qn = rec.nodes.get(id(q))
            if qn is not None and d > 0:
                out.attention.append(_attention_site(qn, d, 1.0 / math.sqrt(d) if scale is None else float(scale), out))
            if scale is None or d <= 0:
                continue
            factor = (1.0 / math.sqrt(d)) / float(scale)
        elif name == "softmax":
            src = node.inputs[0] if node.inputs else None
            mult, terms = 1.0, 1
            while src is not None and src.op not in ("matmul", "__matmul__", "bmm", "einsum", "baddbmm"):
                if src.op in ("mul", "__mul__") and src.scalars:
                    mult *= math.prod(src.scalars)
                elif src.op in ("div", "__truediv__") and src.scalars:
                    mult /= math.prod(src.scalars)
                elif (c := _constant_factor(src)) is not None:
                    mult *= c[0]
                    src = c[1]
                    continue
                elif src.op in _ADDS and len(src.inputs) > 1:
                    # more query-key products summed into the logits, at the same scale
                    # (DeBERTa's c2c + c2p + p2c): variances add, as one term's times `terms`
                    terms += sum(_product_terms(x) for x in src.inputs[1:])
                elif src.op not in _PASS and src.op not in ("add", "__add__", "masked_fill", "where",
                                                              "add_", "float", "to"):
                    src = None
                    break
                src = src.inputs[0] if src.inputs else None
            operands = ([] if src is None else src.inputs[1:3] if src.op == "baddbmm" else src.inputs[:2])
            if len(operands) < 2:
                continue
            # q and k scaled before the product (torch's MultiheadAttention: q * d^-1/2, then
            # bmm / baddbmm): those factors are part of the logits' scale too
            mult *= _scalar_factor(operands[0]) * _scalar_factor(operands[1]) * math.sqrt(terms)
            qn = operands[0]
            q_t = next((t for t in rec.keep if rec.nodes.get(id(t)) is qn), None)
            if q_t is None or q_t.dim() < 1:
                continue
            d = q_t.shape[-1]
            out.attention.append(_attention_site(qn, d, mult, out))
            factor = (1.0 / math.sqrt(d)) / mult
        else:
            continue
        if qn is None or abs(factor - 1.0) < 1e-6:
            continue
        w, _ = _value_weight(qn)
        if w is not None and w.weight is not None:
            for u in out.usages.get(w.weight, []):
                if u.kind == "weight":
                    if u.fused > 1:  # a packed q-k-v: the factor belongs to the q part only
                        out.notes.append(
                            f"attention logits from {w.weight} are not scaled by 1/sqrt(d) (x{factor:.4g} "
                            "missing); it is a packed projection, so its query part is not rescaled")
                    else:
                        u.query_scale = factor
                    break


def _scalar_factor(n: _Node) -> float:
    """The product of the scalar factors applied to ``n`` since the op that made it, walking
    back through shape ops and multiplications / divisions by Python scalars."""
    f = 1.0
    for _ in range(64):
        if n.op in ("mul", "__mul__") and n.scalars and len(n.inputs) == 1:
            f *= math.prod(n.scalars)
        elif n.op in ("div", "__truediv__") and n.scalars and len(n.inputs) == 1:
            f /= math.prod(n.scalars)
        elif (c := _constant_factor(n)) is not None:
            f *= c[0]
            n = c[1]
            continue
        elif n.op not in _PASS or len(n.inputs) != 1:
            break
        n = n.inputs[0]
    return f


def _constant_factor(n: _Node) -> tuple[float, _Node] | None:
    """``(c, x)`` when ``n`` is ``x * c`` or ``x / c`` for a constant tensor ``c`` computed off
    meta (DeBERTa's ``k / torch.sqrt(torch.tensor(d) * 3)``)."""
    if len(n.inputs) != 2 or n.scalars:
        return None
    a, b = n.inputs
    if n.op in ("div", "__truediv__") and b.value and a.value is None:
        return 1.0 / b.value, a
    if n.op in ("mul", "__mul__", "__rmul__"):
        if b.value is not None and a.value is None:
            return b.value, a
        if a.value is not None and b.value is None:
            return a.value, b
    return None


def _product_terms(n: _Node, depth: int = 0) -> int:
    """How many query-key products (matmuls of two activations) a sum of logit terms holds,
    through shape ops, gathers and constant factors (DeBERTa's c2p + p2c position terms)."""
    if depth > 32:
        return 0
    if n.op in ("matmul", "__matmul__", "bmm", "einsum") and n.weight is None:
        return 1
    if n.op in _ADDS:
        return sum(_product_terms(x, depth + 1) for x in n.inputs)
    c = _constant_factor(n)
    if c is not None:
        return _product_terms(c[1], depth + 1)
    if (n.op in _PASS and n.inputs) or (n.op in ("div", "__truediv__", "mul", "__mul__") and len(n.inputs) == 1):
        return _product_terms(n.inputs[0], depth + 1)
    return 0


def _attention_site(qn: _Node, head_dim: int, scale: float, out: Trace) -> Attention:
    """Walk back from the queries of an attention op to the weight that computes them, through
    shape ops, rotary embeddings (products with constant tables, halves put back together,
    sums) and norms: the weight, the fused part of its output, and the module whose output
    they are. A split counts as the fused part only if the weight's output is split into as
    many parts as :func:`_fused_parts` found (rotary halves are not fused parts)."""
    found: set[tuple[str, int | None, int]] = set()
    norm: list[str] = []
    modules: dict[str, str] = {}
    seen: set[tuple[int, int | None]] = set()

    def walk(n: _Node, part: int | None, parts: int, depth: int) -> None:
        if (id(n), part) in seen or depth > 200 or len(found) > 8:
            return
        seen.add((id(n), part))
        if n.weight is not None:
            found.add((n.weight, part, parts))
            modules[n.weight] = n.module
            return
        if n.op == "split_part" and n.inputs:
            src = n.inputs[0]
            if src.split_last:
                walk(src, int(n.scalars[0]) if n.scalars else 0, src.n_out, depth + 1)
            else:
                walk(src, part, parts, depth + 1)
            return
        if n.op in _NORM_OPS and n.inputs:
            norm.append(n.module)
        for x in n.inputs:
            if x.from_input:
                walk(x, part, parts, depth + 1)

    walk(qn, None, 1, 0)
    weights = {w for w, _, _ in found}
    if len(weights) != 1:
        return Attention(None, "", None, 1, head_dim, scale)
    w = weights.pop()
    u = out.weight_usage(w)
    fused = u.fused if u is not None else 1
    parts_found = {p for _, p, n in found if p is not None and n == fused and fused > 1}
    if norm:  # the queries are normalized after the projection: their scale is the norm's
        return Attention(w, norm[0], None, 1, head_dim, scale)
    if fused > 1 and len(parts_found) != 1:
        return Attention(None, "", None, 1, head_dim, scale)
    part = parts_found.pop() if fused > 1 else None
    return Attention(w, modules[w], part, fused, head_dim, scale)


def _residuals(rec: _Recorder, out: Trace) -> None:
    """Residual sums: for ``skip + branch``, the branch's weights and the one writing into it."""
    cache: dict[int, frozenset[int]] = {}
    weight_of = {id(n): n.weight for _, _, _, n, _ in rec.ops if n is not None and n.weight}
    for name, _, _, node, ins in rec.ops:
        assert node is not None
        if name not in ("add", "__add__", "add_", "__iadd__", "__radd__") or len(ins) != 2:
            continue
        a, b = ins
        if a.numel != b.numel or a.numel == 0:
            continue
        anc_a, anc_b = _ancestors(a, cache), _ancestors(b, cache)
        if not (anc_a & anc_b):
            continue
        wa = {weight_of[i] for i in anc_a - anc_b if i in weight_of}
        wb = {weight_of[i] for i in anc_b - anc_a if i in weight_of}
        if len(wb) > len(wa):  # the branch is the term with more weights of its own
            a, b, wa, wb, anc_a, anc_b = b, a, wb, wa, anc_b, anc_a
        if not wa:
            continue
        identity = id(b) in anc_a
        if not identity and not (0 < len(wb) < len(wa)):
            continue
        writers, norm = _value_weights(a)
        for w in writers:
            if w.weight is None:
                continue
            chain = set(_chain(w, anc_b))
            layers = tuple(p for p in out.order if p in chain) or (w.weight,)
            out.residual.append((layers, w.weight, norm))


# --------------------------------------------------------------------------------------------
# What the model's own init does with each parameter
# --------------------------------------------------------------------------------------------

_RANDOM_WRITES = frozenset({"normal_", "uniform_", "trunc_normal_", "erfinv_", "clamp_", "mul_",
                            "add_", "exponential_", "geometric_", "log_normal_", "cauchy_",
                            "random_", "bernoulli_"})  # fmt: skip


class _WriteRecorder(TorchFunctionMode):
    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names = names
        self.writes: dict[str, list[tuple[str, tuple[float, ...]]]] = {}

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:  # fmt: skip
        name = _name(func)
        if args and isinstance(args[0], torch.Tensor) and name.endswith("_") and not name.startswith("__"):
            pname = self.names.get(id(args[0]))
            if pname is not None:
                scalars = tuple(float(a) for a in args[1:] if isinstance(a, (int, float)) and not isinstance(a, bool))
                self.writes.setdefault(pname, []).append((name, scalars))
        return func(*args, **(kwargs or {}))


def model_init_semantics(model: nn.Module) -> dict[str, str]:
    """Parameters whose values the model's authors set to something a generic init cannot
    redraw, and why: marked ``_no_reinit`` (Mamba's ``dt_proj.bias``), or written by the
    model's own ``_init_weights`` with computed values (``copy_``: ``A_log = log(1..N)``,
    sinusoidal tables) or a constant other than 0 and 1. The init runs on a meta shadow: the
    model is not touched.
    """
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if getattr(p, "_no_reinit", False):
            out[name] = "marked _no_reinit by the model"
    init_weights = getattr(model, "_init_weights", None)
    if not callable(init_weights):
        return out
    shadow, names = meta_shadow(model)
    rec = _WriteRecorder(names)
    try:
        with torch.no_grad(), rec:
            for m in shadow.modules():
                shadow._init_weights(m)  # type: ignore[operator]
    except Exception:  # an init that cannot run on meta: no verdicts from it
        return out
    for pname, writes in rec.writes.items():
        ops = {w[0] for w in writes}
        if "copy_" in ops:
            out.setdefault(pname, "set to computed values by the model's own _init_weights (copy_)")
            continue
        consts = [v for op, sc in writes if op == "fill_" for v in sc]
        if consts and not ops & {"normal_", "uniform_"} and any(v not in (0.0, 1.0) for v in consts):
            out.setdefault(pname, f"set to the constant {consts[-1]:g} by the model's own _init_weights")
    return out


# --------------------------------------------------------------------------------------------
# Second moments through the graph (whole-model targets)
# --------------------------------------------------------------------------------------------

ParamStats = Callable[[str], "tuple[float, float] | None"]
"""A parameter's planned ``(mean, std)`` by name, or ``None`` if unknown."""


def second_moments(tr: Trace, stats: ParamStats) -> dict[int, float]:
    """E[x²] per element of every node of ``tr``, propagated in execution order from unit
    second-moment inputs through the planned init (mean-field rules, one per kind of op).

    Weights: ``fan_in · σ² · q_in`` (+ the bias's); activations: ``E[φ(√q z)²]``
    (:func:`initwise.theory.length_map`); sums add, products multiply; normalization outputs
    are 1; attention returns its values' second moment; shape ops, pooling and dropout keep
    it. An estimate for targets such as "initial logits of unit variance", not a measurement.
    A ReLU of a nonnegative input (a ReLU output, or a sum of them plus exactly-zero terms,
    e.g. ``relu(x + α·f(x))`` with ReZero's ``α = 0``) is the identity: it keeps ``E[x²]``
    instead of halving it as for a zero-mean Gaussian input.
    """
    q: dict[int, float] = {}
    nonneg: set[int] = set()  # nodes whose values are >= 0
    weight_of: dict[int, tuple[str, Usage]] = {}
    for p, uses in tr.usages.items():
        for u in uses:
            if u.kind == "weight" and u.input_index >= 0:
                weight_of.setdefault(u.input_index, (p, u))

    def param_q(name: str | None) -> float:
        if name is None:
            return 1.0
        s = stats(name)
        return 1.0 if s is None else s[0] ** 2 + s[1] ** 2

    for n in tr.nodes:
        ins = [q.get(id(i), 1.0) for i in n.inputs]
        v: float
        if n.op == "input":
            v = 1.0
        elif n.op == "param":
            v = param_q(n.param)
        elif n.op == "const" or not ins:
            v = 1.0
        elif n.weight is not None:
            name = n.weight
            wu = next((x for x in tr.usages.get(name, []) if x.kind == "weight"), None)
            xs = [q.get(id(i), 1.0) for i in n.inputs if _param_node(i) is None]
            qx = xs[0] if xs else 1.0
            fan = wu.fan_in if wu is not None and wu.fan_in > 0 else 1.0
            s = stats(name)
            var = (1.0 / fan) if s is None else s[1] ** 2
            v = fan * var * qx
            bias = [i for i in n.inputs if i.param is not None and i.param != name]
            v += sum(param_q(b.param) for b in bias)
        elif n.norm_out or n.op in _NORM_OPS:
            v = 1.0
        elif n.activation is not None and n.op not in ("mul", "__mul__", "mul_"):
            relu = _act_label(n.activation) in _IDENTITY_ON_NONNEG
            if relu and n.inputs and id(n.inputs[0]) in nonneg:
                v = ins[0]
            else:
                v = _act_m2(n.activation, ins[0])
            if relu:
                nonneg.add(id(n))
        elif n.op in ("add", "__add__", "add_", "__iadd__", "__radd__", "sub", "__sub__", "__rsub__"):
            v = sum(ins) + sum(c * c for c in n.scalars)
        elif n.op in ("mul", "__mul__", "mul_", "__rmul__"):
            v = math.prod(ins) * math.prod(c * c for c in n.scalars) if ins else 1.0
        elif n.op in ("div", "__truediv__", "div_"):
            v = ins[0] / math.prod(c * c for c in n.scalars) if n.scalars else ins[0]
        elif n.op == "scaled_dot_product_attention":
            v = ins[2] if len(ins) > 2 else ins[-1]
        elif n.op in ("matmul", "__matmul__", "bmm", "einsum") and len(n.inputs) == 2:
            a, b = n.inputs
            v = ins[1] if _is_gate(a) else ins[0] if _is_gate(b) else ins[0] * ins[1]
        elif n.op in ("softmax", "log_softmax"):
            v = 1.0
        elif n.op in ("cat", "stack", "concat"):
            v = sum(ins) / len(ins)
        else:
            v = ins[0]
        if not math.isfinite(v) or v < 0:
            v = 1.0
        q[id(n)] = v
        if id(n) not in nonneg and n.inputs and n.weight is None and (
                (n.op in _PASS and id(n.inputs[0]) in nonneg)
                or (n.op in ("add", "__add__", "add_", "__iadd__", "__radd__") and all(
                    id(i) in nonneg or q.get(id(i), 1.0) == 0.0 for i in n.inputs)
                    and any(id(i) in nonneg for i in n.inputs))):
            nonneg.add(id(n))
    return {n.index: q[id(n)] for n in tr.nodes}


_IDENTITY_ON_NONNEG = frozenset({"relu", "relu6", "leaky_relu"})


def _act_m2(act: Any, qx: float) -> float:
    try:
        if isinstance(act, tuple):
            return float(length_map(qx, act[0], 1.0, param=act[1]))
        return float(length_map(qx, act, 1.0))
    except (ValueError, TypeError):
        return qx
