"""Model structure for whole-model init: which activation feeds each layer, and residual branches.

Three sources, best first (the plan records which one was used):

1. ``fx``: :func:`torch.fx.symbolic_trace` (weight layers, norms and activation modules are
   kept as leaves). From each weight layer the graph is walked *backwards* through shape ops,
   dropout, pooling and padding to the op that produced its input: an activation module or
   function (``F.gelu``, ``torch.relu``, ``x.relu()``...) gives its gain; anything else (the
   raw input, a norm, an addition, a product) counts as linear (gain 1). Residual additions
   ``a + b`` are found where one side is the skip (``b`` is an ancestor of ``a``, or ``b``'s own
   path has fewer weight layers, e.g. a ``downsample``); the weight layers on the other side
   form the branch, in execution order.
2. ``hooks``: with ``example_inputs`` (when fx fails), forward hooks record the order in which
   leaf modules run; a layer's input activation is the last activation *module* run since the
   previous weight or norm layer. Functional activations (``F.gelu`` inside ``forward``) are
   invisible to hooks.
3. ``module_order``: neither of the above: the same rule over the registration order of the
   leaf modules (``named_modules()``), which is right for ``nn.Sequential``-style models and
   wrong where ``__init__`` registers modules in another order than ``forward`` runs them.

Without fx, residual branches are modules with a ``downsample`` or ``shortcut`` attribute
(torchvision's BasicBlock/Bottleneck style): their weight layers outside that attribute form
the branch. ``Policy(branches=[...])`` names branches explicitly.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import gains as _gains
from .._modules import is_activation, is_embedding, is_norm, is_weight_layer, unwrap
from .dataflow import (
    CASTS,
    Gated,
    Trace,
    TraceError,
    Usage,
    meta_shadow,
    model_init_semantics,
    trace,
)

__all__ = ["FFN_PAIRS", "Branch", "GraphInfo", "analyze"]

log = logging.getLogger("initwise")

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.PixelShuffle,
)  # fmt: skip
_PASS_FUNCS: set[Any] = {
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.flatten, torch.reshape,
    torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze, operator.getitem,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.pad, torch.chunk,
    torch.split, F.interpolate, torch.clone,
}  # fmt: skip
_PASS_METHODS = {
    *CASTS, "view", "reshape", "permute", "transpose", "contiguous", "flatten", "squeeze",
    "unsqueeze", "chunk", "split", "clone", "expand", "__getitem__", "detach", "unflatten",
    "view_as", "reshape_as",
}  # fmt: skip
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "sigmoid": "sigmoid",
                "tanh_": "tanh", "sigmoid_": "sigmoid"}  # fmt: skip
_ADD_FUNCS: set[Any] = {operator.add, operator.iadd, torch.add}


@dataclass(frozen=True)
class Branch:
    """A residual branch: its weight layers (in order), and its norm after the last layer."""

    layers: tuple[str, ...]
    trailing_norm: str | None
    source: str


@dataclass
class GraphInfo:
    """What :func:`analyze` found."""

    source: str
    input_act: dict[str, Any] = field(default_factory=dict)  # weight layer -> activation obj|None
    order: list[str] = field(default_factory=list)  # weight layers in execution order
    branches: list[Branch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # from the dataflow (source "dataflow"): how each parameter is used, by qualified name
    usages: dict[str, list[Usage]] = field(default_factory=dict)
    residual_writers: set[str] = field(default_factory=set)  # parameters writing residual sums
    semantic: dict[str, str] = field(default_factory=dict)  # parameter -> why its values matter
    trace: Trace | None = field(default=None, repr=False)  # the dataflow graph (unprefixed names)
    weight_order: list[str] = field(default_factory=list)  # weights, in the order first used as such
    prefix: str = ""  # the wrapper prefix the trace's names lack

    def usage(self, param: str) -> Usage | None:
        """The first use of ``param`` as a weight or an embedding table (dataflow only)."""
        for u in self.usages.get(param, []):
            if u.kind in ("weight", "embedding"):
                return u
        return None

    def activation_of(self, module_name: str, param: str | None = None) -> tuple[str, float, str]:
        """Return ``(activation name, exact gain, how found)`` for a weight layer's input
        (``param``: of that parameter's own use, e.g. one of a module's expert tensors)."""
        u = self.usage(param) if param is not None else None
        if u is not None and u.kind == "weight":
            if u.activation is None:
                return "linear", 1.0, self.source
            return _act_name(u.activation), _act_gain(u.activation), self.source
        if module_name not in self.input_act:
            return "linear", 1.0, f"not reached by {self.source}: linear assumed"
        obj = self.input_act[module_name]
        if obj is None:
            return "linear", 1.0, self.source
        return _act_name(obj), _act_gain(obj), self.source


def _act_name(obj: Any) -> str:
    if isinstance(obj, Gated):
        return f"{'linear' if obj.act is None else _act_name(obj.act)}*{_act_name(obj.gate)}"
    if isinstance(obj, tuple):
        return str(obj[0])
    name = _gains.activation_name(obj)
    return name if name is not None else type(obj).__name__


def _act_gain(obj: Any) -> float:
    if isinstance(obj, Gated):
        return (1.0 if obj.act is None else _act_gain(obj.act)) * _act_gain(obj.gate)
    try:
        if isinstance(obj, tuple):
            return float(_gains.gain(obj[0], obj[1]))
        return float(_gains.gain(obj))
    except (ValueError, TypeError) as err:
        log.warning("initwise: no gain for activation %r (%s); using 1", obj, err)
        return 1.0


# --------------------------------------------------------------------------------------------
# fx
# --------------------------------------------------------------------------------------------


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if is_weight_layer(m) or is_norm(m) or is_activation(m) or is_embedding(m):
            return True
        return super().is_leaf_module(m, qualname)


def _fx_activation(node: torch.fx.Node, mods: dict[str, nn.Module]) -> Any:
    """The activation (module, name or (name, param)) found walking back from ``node``."""
    seen = 0
    while seen < 10_000:
        seen += 1
        if node.op == "call_module":
            m = mods.get(str(node.target))
            if m is None:
                return None
            if is_activation(m):
                return m
            if not isinstance(m, _PASS_MODULES):
                return None
        elif node.op == "call_function":
            name = _gains.activation_name(node.target) if callable(node.target) else None
            if name is not None:
                if name == "leaky_relu":
                    slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
                    return ("leaky_relu", slope)
                if name == "gelu" and node.kwargs.get("approximate", "none") == "tanh":
                    return "gelu_tanh"
                return name
            if not (_hashable(node.target) and node.target in _PASS_FUNCS):
                return None
        elif node.op == "call_method":
            if node.target in _ACT_METHODS:
                return _ACT_METHODS[str(node.target)]
            if node.target not in _PASS_METHODS:
                return None
        else:  # placeholder, get_attr, output
            return None
        nxt = next((a for a in node.args if isinstance(a, torch.fx.Node)), None)
        if nxt is None:
            return None
        node = nxt
    return None


def _hashable(x: Any) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


def _ancestors(node: torch.fx.Node) -> set[torch.fx.Node]:
    out: set[torch.fx.Node] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n in out:
            continue
        out.add(n)
        stack.extend(n.all_input_nodes)
    return out


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and _hashable(node.target) and node.target in _ADD_FUNCS:
        return True
    return node.op == "call_method" and node.target in ("add", "add_", "__add__", "__iadd__")


def _fx_branches(gm: torch.fx.GraphModule, mods: dict[str, nn.Module]) -> list[Branch]:
    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    if len(nodes) > 20_000:
        return []

    def layers_in(s: set[torch.fx.Node], pred: Any) -> list[str]:
        hits = sorted(
            (n for n in s if n.op == "call_module" and str(n.target) in mods and pred(mods[str(n.target)])),
            key=index.__getitem__,
        )
        out: list[str] = []
        for n in hits:
            if str(n.target) not in out:
                out.append(str(n.target))
        return out

    branches: list[Branch] = []
    for node in nodes:
        if not _is_add(node):
            continue
        args = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        if len(args) != 2:
            continue
        a, b = args
        anc_a, anc_b = _ancestors(a), _ancestors(b)
        only_a, only_b = anc_a - anc_b, anc_b - anc_a
        if not (anc_a & anc_b):
            continue
        wa, wb = layers_in(only_a, is_weight_layer), layers_in(only_b, is_weight_layer)
        if len(wb) > len(wa):
            a, b, only_a, only_b, wa, wb = b, a, only_b, only_a, wb, wa
        if not wa:
            continue
        identity_skip = b in anc_a
        if not identity_skip and not (0 < len(wb) < len(wa)):
            continue
        norms = [n for n in only_a if n.op == "call_module" and is_norm(mods.get(str(n.target), nn.Module()))]
        last_layer = max(
            (n for n in only_a if n.op == "call_module" and str(n.target) == wa[-1]), key=index.__getitem__
        )
        trailing = [n for n in norms if index[n] > index[last_layer]]
        tn = str(max(trailing, key=index.__getitem__).target) if trailing else None
        branches.append(Branch(tuple(wa), tn, "fx"))
    return branches


def _try_fx(model: nn.Module, info: GraphInfo) -> bool:
    try:
        graph = _Tracer().trace(model)
        gm = torch.fx.GraphModule(model, graph)
    except Exception as err:  # fx raises many types on untraceable models
        info.notes.append(f"torch.fx could not trace the model ({type(err).__name__}: {str(err)[:120]})")
        return False
    mods = dict(model.named_modules())
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        m = mods.get(target)
        if m is None or not is_weight_layer(m) or target in info.input_act:
            continue
        src = next((a for a in node.args if isinstance(a, torch.fx.Node)), None)
        info.input_act[target] = _fx_activation(src, mods) if src is not None else None
        info.order.append(target)
    info.branches = _fx_branches(gm, mods)
    return True


# --------------------------------------------------------------------------------------------
# hooks and module order
# --------------------------------------------------------------------------------------------


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_modules():
        special = is_weight_layer(m) or is_norm(m) or is_activation(m) or is_embedding(m)
        if special or not any(True for _ in m.children()):
            out.append((name, m))
    # drop modules nested in a recorded weight layer (e.g. MultiheadAttention.out_proj)
    layers = [n for n, m in out if is_weight_layer(m) and n]
    return [(n, m) for n, m in out if not any(n.startswith(p + ".") for p in layers)]


def _from_sequence(seq: Iterable[tuple[str, nn.Module]], info: GraphInfo) -> None:
    act: Any = None
    for name, m in seq:
        if is_weight_layer(m):
            if name not in info.input_act:
                info.input_act[name] = act
                info.order.append(name)
            act = None
        elif is_activation(m):
            act = m
        elif is_norm(m) or is_embedding(m):
            act = None


def _attr_branches(model: nn.Module, order: Sequence[str]) -> list[Branch]:
    pos = {n: i for i, n in enumerate(order)}
    out = []
    for name, m in model.named_modules():
        skip_attr = next((a for a in ("downsample", "shortcut") if hasattr(m, a)), None)
        if skip_attr is None:
            continue
        out.append(_module_branch(model, name, pos, exclude=f"{name}.{skip_attr}" if name else skip_attr,
                                  source=f"attribute {skip_attr!r}"))
    return [b for b in out if b.layers]


def _module_branch(model: nn.Module, name: str, pos: dict[str, int], *, exclude: str | None,
                   source: str) -> Branch:
    sub = model.get_submodule(name) if name else model
    seq = []
    for i, (n, m) in enumerate(sub.named_modules()):
        full = f"{name}.{n}" if name and n else (name or n)
        if exclude and (full == exclude or full.startswith(exclude + ".")):
            continue
        if is_weight_layer(m) or is_norm(m):
            seq.append((pos.get(full, len(pos) + i), full, m))
    seq.sort(key=lambda t: t[0])
    layers = [f for _, f, m in seq if is_weight_layer(m)]
    trailing = None
    if layers:
        last = max(i for i, (_, f, _m) in enumerate(seq) if f == layers[-1])
        after = [f for _, f, m in seq[last + 1:] if is_norm(m)]
        trailing = after[-1] if after else None
    return Branch(tuple(layers), trailing, source)


# --------------------------------------------------------------------------------------------
# known block structures (feed-forward blocks whose inside fx and hooks cannot see)
# --------------------------------------------------------------------------------------------

_ACT_ATTRS = ("activation", "act", "act_fn", "activation_fn", "intermediate_act_fn", "activation_function")
# (first layer, second layer) of a feed-forward block: the activation feeds the second one.
# Gated blocks (LLaMA's gate/up -> down) multiply act(gate) by a linear `up`: the product's
# second moment is E[act(z)^2] * 1, so the second layer gets the activation's gain too.
FFN_PAIRS = (
    ("linear1", "linear2"), ("c_fc", "c_proj"), ("fc1", "fc2"), ("w1", "w2"),
    ("gate_proj", "down_proj"), ("up_proj", "down_proj"), ("dense_h_to_4h", "dense_4h_to_h"),
    ("wi", "wo"), ("lin1", "lin2"), ("fc_in", "fc_out"),
)  # fmt: skip


def _block_activation(module: nn.Module) -> Any:
    for attr in _ACT_ATTRS:
        obj = getattr(module, attr, None)
        if obj is None or isinstance(obj, (str, bool, int, float)):
            continue
        if isinstance(obj, nn.Module):
            if is_activation(obj):
                return obj
        elif callable(obj) and _gains.activation_name(obj) is not None:
            return obj
    return None


def _block_rules(model: nn.Module) -> dict[str, Any]:
    """Weight layer -> activation feeding it, read from well-known feed-forward block layouts.

    Covers torch's ``TransformerEncoderLayer``/``DecoderLayer`` (``activation`` between
    ``linear1`` and ``linear2``; torch.fx keeps these modules opaque and hooks cannot see their
    functional activation), Hugging Face GPT-2 (``c_fc``/``act``/``c_proj``), LLaMA-style gated
    MLPs (``gate_proj``/``up_proj``/``act_fn``/``down_proj``), BERT (``intermediate`` with
    ``intermediate_act_fn`` followed by ``output.dense``) and the common ``fc1``/``fc2`` names.
    """
    out: dict[str, Any] = {}
    for name, m in model.named_modules():
        pre = f"{name}." if name else ""
        act = _block_activation(m)
        if act is not None:
            for first, second in FFN_PAIRS:
                a, b = getattr(m, first, None), getattr(m, second, None)
                if isinstance(a, nn.Module) and isinstance(b, nn.Module) and is_weight_layer(b):
                    out[pre + second] = act
                    break
        inter, output = getattr(m, "intermediate", None), getattr(m, "output", None)
        if isinstance(inter, nn.Module) and isinstance(output, nn.Module):
            act = _block_activation(inter)
            dense = getattr(output, "dense", None)
            if act is not None and isinstance(dense, nn.Module) and is_weight_layer(dense):
                out[pre + "output.dense"] = act
    return out


def _apply_block_rules(model: nn.Module, info: GraphInfo) -> None:
    """Fill in what fx/hooks could not see; override the registration-order guess."""
    used = []
    for layer, act in _block_rules(model).items():
        seen = info.input_act.get(layer)
        if info.source == "fx" and layer in info.input_act:
            continue  # fx traced this layer's input: that is evidence, keep it
        if info.source == "hooks" and seen is not None:
            continue  # hooks saw an activation module run right before it
        info.input_act[layer] = act
        used.append(layer)
    if used:
        shown = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
        info.notes.append(f"input activation of {shown} read from the feed-forward block's structure")


def _from_trace(tr: Trace, shadow: nn.Module, info: GraphInfo) -> None:
    """Fill ``info`` from the dataflow of the shadow (names are the model's own)."""
    mods = dict(shadow.named_modules())
    info.usages = tr.usages
    for param in tr.order:
        u = tr.weight_usage(param)
        mod = param.rpartition(".")[0]
        if u is None or u.kind != "weight" or mod not in mods:
            continue
        if mod not in info.input_act:
            info.input_act[mod] = u.activation
            info.order.append(mod)
    for mod, act in tr.module_act.items():  # weights computed by a parametrization
        if mod in mods and mod not in info.input_act:
            info.input_act[mod] = act
            info.order.append(mod)
    seen: set[tuple[str, ...]] = set()
    for layers, writer, norm in tr.residual:
        info.residual_writers.add(writer)
        modules = tuple(dict.fromkeys(p.rpartition(".")[0] for p in layers))
        key = (*modules, writer)
        if key in seen or not modules:
            continue
        seen.add(key)
        wmod = writer.rpartition(".")[0]
        ordered = (*(m for m in modules if m != wmod), wmod)
        info.branches.append(Branch(ordered, norm if norm in mods else None, "dataflow"))
    info.notes.extend(tr.notes)
    info.trace = tr
    info.weight_order = list(tr.order)


def _prefixed(info: GraphInfo, pre: str) -> GraphInfo:
    def p(x: str) -> str:
        return pre + x

    return GraphInfo(
        source=info.source,
        input_act={p(k): v for k, v in info.input_act.items()},
        order=[p(k) for k in info.order],
        branches=[Branch(tuple(p(x) for x in b.layers),
                         None if b.trailing_norm is None else p(b.trailing_norm), b.source)
                  for b in info.branches],
        notes=info.notes,
        usages={p(k): v for k, v in info.usages.items()},
        residual_writers={p(k) for k in info.residual_writers},
        semantic={p(k): v for k, v in info.semantic.items()},
        trace=info.trace,
        weight_order=[p(k) for k in info.weight_order],
        prefix=pre,
    )


def analyze(model: nn.Module, example_inputs: Any = None, branches: Sequence[str] | None = None) -> GraphInfo:
    """Find each weight layer's input activation, how each parameter is used, and the residual
    branches of ``model``, without running, tracing or changing ``model`` itself.

    Everything is read from a meta-device shadow of the unwrapped model (see
    :func:`initwise.model.dataflow.meta_shadow`: no hooks, no DTensors, no compile wrapper),
    so the answer is the same whatever wraps the model. Sources, best first (the plan records
    which one was used): the shadow's ``dataflow`` (a forward pass on meta inputs, see
    :mod:`initwise.model.dataflow`), ``fx`` (``torch.fx`` on the shadow), ``module_order``
    (registration order, with known feed-forward block layouts). ``branches`` (module names)
    overrides residual-branch detection.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    >>> g = analyze(net)
    >>> g.source, g.activation_of("2")[0], g.activation_of("0")[0]
    ('dataflow', 'gelu', 'linear')
    """
    inner, pre = unwrap(model)
    shadow, _ = meta_shadow(inner)
    info = GraphInfo(source="dataflow")
    try:
        _from_trace(trace(inner, example_inputs), shadow, info)
    except TraceError as err:
        info = GraphInfo(source="fx")
        info.notes.append(f"dataflow trace on meta failed ({err})")
        if not _try_fx(shadow, info):
            info.input_act.clear()
            info.order.clear()
            info.source = "module_order"
            _from_sequence(_leaves(shadow), info)
            info.notes.append(
                "fell back to module registration order (the activation module registered "
                "between two weight layers feeds the second); pass example_inputs that run "
                "on the meta device for an exact answer"
            )
        info.branches = _attr_branches(shadow, info.order) if info.source != "fx" else info.branches
    if info.source != "dataflow":
        _apply_block_rules(shadow, info)
    info.semantic = model_init_semantics(inner)
    if branches is not None:  # explicit branches replace every detected one
        info.residual_writers = set()
        pos = {n: i for i, n in enumerate(info.order)}
        info.branches = [_module_branch(shadow, b.removeprefix(pre), pos, exclude=None,
                                        source="Policy.branches") for b in branches]
    return _prefixed(info, pre) if pre else info
