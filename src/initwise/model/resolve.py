"""Whole-model planning as named stages: tensors -> roles -> rule -> layout -> gain -> depth
scale -> scheme -> entry.

:func:`build` runs the stages for every tensor of a model and returns the :class:`Plan` and,
for the tensors it initializes, the :class:`Work` items the write pass needs. Each stage is a
small function of its own:

1. :func:`collect_tensors`: parameters (parametrized tensors folded back into the tensor
   their module computes), normalization statistics, and which names share one tensor;
2. :func:`tensor_roles`: the roles of a tensor (:mod:`initwise.model.roles`);
3. :func:`match_rule`: the first rule of the policy that matches, and why;
4. layout: the view, fans and blocks (:func:`initwise._fans.plan_layout`);
5. :func:`input_gain`: the activation feeding a weight layer, and its exact gain
   (:mod:`initwise.model.structure`);
6. :func:`depth_scale`: GPT-2's ``1/sqrt(2 n_layer)`` or Fixup's ``L^(-1/(2m-2))``;
7. :func:`resolve_scheme`: the concrete registry scheme and parameters (or a special action);
8. :func:`describe`: the distribution, mean, std and bound the entry records.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import random as _random
from .._checks import check_seed, raise_unknown
from .._fans import Fans, TensorLayout, WeightAxes, plan_layout, tensor_fans
from .._modules import is_weight_layer
from .._names import selection
from .._torch import is_dtensor, is_lazy
from ..registry import Scheme, get_scheme
from . import structure
from .dataflow import CASTS, second_moments
from .entries import Plan, PlanEntry
from .policy import Policy, Rule
from .presets import get_policy
from .roles import (
    ROLE_PRIORITY,
    base_role,
    norm_offset,
    param_structure_roles,
    refine_role,
    structure_roles,
)
from .scalars import plan_fixup_scalars
from .structure import Branch, GraphInfo

__all__ = ["Only", "Work", "build", "rebind", "tensor_key"]

Only = Union[str, Iterable[str], Callable[..., bool], None]  # noqa: UP007

_UNSTABLE = {"gelu", "gelu_tanh", "silu", "mish", "elu", "celu", "softplus", "hardswish"}


@dataclass
class Work:
    """What the write pass needs for one tensor the plan initializes (internal)."""

    entry: PlanEntry
    tensor: torch.Tensor
    scheme: Any  # registry Scheme, user callable, or None for special actions
    fans: Fans | None
    special: str | None = None
    value: float = 0.0
    padding_idx: int | None = None
    post_scale: float = 1.0
    # (module, attribute) for a parametrized tensor (weight_norm, spectral_norm, orthogonal...):
    # the values are drawn for the tensor the module computes and assigned through the
    # parametrization's right_inverse
    setter: tuple[nn.Module, str] | None = None
    # a user callable's parameters as given (the entry keeps a JSON-able copy)
    call_params: dict[str, Any] = field(default_factory=dict)
    # the tensor is drawn as its transpose (a Hugging Face Conv1D weight)
    transposed: bool = False
    # blocks are slices of a batch axis (experts): each is drawn as one matrix, without it
    squeeze: bool = False




def tensor_key(seed: int, name: str, block: int | None) -> Any:
    """The keyed-engine key of one tensor (``block``: of one of its stacked blocks)."""
    k = _random.key(seed, name)
    return k if block is None else k.child(f"block{block}")


def _fold(name: str, params: dict[str, Any], s: float) -> tuple[dict[str, Any], float]:
    """Fold a multiplier ``s`` into a registry scheme's params; return (params, leftover)."""
    if s == 1.0:
        return params, 1.0
    p = dict(params)
    if name in ("normal", "trunc_normal", "truncated_normal"):
        p["mean"] = float(p.get("mean", 0.0)) * s
        p["std"] = float(p.get("std", 1.0)) * s
        if name == "trunc_normal":
            p["a"] = float(p.get("a", -2.0)) * s
            p["b"] = float(p.get("b", 2.0)) * s
        return p, 1.0
    if name == "uniform":
        p["a"], p["b"] = float(p.get("a", 0.0)) * s, float(p.get("b", 1.0)) * s
        return p, 1.0
    if name == "variance_scaling":
        p["scale"] = float(p.get("scale", 1.0)) * s * s
        return p, 1.0
    if name in ("zeros",):
        return p, 1.0
    if name == "constant":
        p["val"] = float(p["val"]) * s
        return p, 1.0
    return p, s


def _shift(name: str, params: dict[str, Any], c: float) -> tuple[str, dict[str, Any]] | None:
    """The registry scheme whose draws are those of ``name(**params)`` minus ``c``, or ``None``.

    A norm scale the forward pass applies as ``w + c`` (Gemma's, Nemotron's ``1 + w``): a rule
    states the scale the layer applies (``ones`` = unit scale), the tensor stores it minus ``c``.
    """
    p = dict(params)
    if name in ("ones", "zeros"):
        return "constant", {"val": (1.0 if name == "ones" else 0.0) - c}
    if name == "constant":
        return name, {**p, "val": float(p["val"]) - c}
    if name in ("normal", "truncated_normal"):
        return name, {**p, "mean": float(p.get("mean", 0.0)) - c}
    if name == "trunc_normal":  # absolute bounds move with the mean
        return name, {**p, "mean": float(p.get("mean", 0.0)) - c, "a": float(p.get("a", -2.0)) - c,
                      "b": float(p.get("b", 2.0)) - c}
    if name == "uniform":
        return name, {**p, "a": float(p.get("a", 0.0)) - c, "b": float(p.get("b", 1.0)) - c}
    return None


# A chain this long of GELU/SiLU/Mish layers drifts noticeably (~1.8x in E[x^2] for SiLU).
_UNSTABLE_MIN_LAYERS = 4



# --------------------------------------------------------------------------------------------
# Stage 1: tensors
# --------------------------------------------------------------------------------------------


def _parametrized_items(model: nn.Module) -> tuple[list[tuple[str, str, torch.Tensor]],
                                                      dict[str, tuple[nn.Module, str]]]:
    """Parameters to plan, with torch parametrizations folded back into the tensor they define.

    ``m.parametrizations.weight.original0/1`` (weight_norm's g and v, spectral norm's original,
    ...) become one item ``m.weight`` holding the tensor the module computes; writing it
    assigns the drawn tensor through the parametrization (``right_inverse``) under the plain
    name's key. weight_norm then computes exactly the plain layer's weight; parametrizations
    that transform their input keep doing so (spectral norm divides by the largest singular
    value, recomputed here; orthogonal projects), so the plan's std is that of the drawn tensor.
    """
    items: list[tuple[str, str, torch.Tensor]] = []
    setters: dict[str, tuple[nn.Module, str]] = {}
    done: set[str] = set()
    for n, p in model.named_parameters(remove_duplicate=False):
        head, sep, tail = n.partition("parametrizations.")
        if not sep:
            items.append((n, "parameter", p))
            continue
        attr = tail.split(".", 1)[0]
        modname = head[:-1]
        virtual = f"{head}{attr}"
        if virtual in done:
            continue
        done.add(virtual)
        module = model.get_submodule(modname) if modname else model
        if not parametrize.is_parametrized(module, attr):
            items.append((n, "parameter", p))
            continue
        with torch.no_grad():
            value = getattr(module, attr)
        items.append((virtual, "parameter", value))
        setters[virtual] = (module, attr)
    return items, setters


def _originals(model: nn.Module, virtual: str) -> list[str]:
    """The parameter names behind a parametrized tensor (``m.parametrizations.w.original*``)."""
    head, _, attr = virtual.rpartition(".")
    prefix = f"{head}.parametrizations.{attr}." if head else f"parametrizations.{attr}."
    return [n for n, _ in model.named_parameters(remove_duplicate=False) if n.startswith(prefix)]


def _selector(only: Only, model: nn.Module, virtual: Iterable[str] = ()) -> Callable[[str], bool]:
    """``only=`` as a test on qualified tensor names (see :class:`initwise._names.Selection`)."""
    sel = selection(only, "init")
    if sel is None:
        return lambda n: True
    pred = sel.predicate
    if pred is not None:
        if sel.arity == 2:  # fn(name, module): the module that owns the tensor
            def owner(n: str) -> nn.Module:
                mod = n.rpartition(".")[0]
                return model.get_submodule(mod) if mod else model

            return lambda n: bool(pred(n, owner(n)))
        return lambda n: bool(pred(n))
    assert sel.names is not None
    known = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    known |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    known |= {n for n, _ in model.named_modules(remove_duplicate=False) if n}
    known |= set(virtual)  # parametrized tensors, under their plain names
    for n in sorted(set(sel.names)):
        if n not in known:  # a typo would otherwise silently initialize nothing
            raise_unknown("name in only=", n, known, limit=20)
    return sel.matches



@dataclass
class Tensors:
    """Stage 1's result: every tensor to plan, the parametrized ones, and the ties."""

    items: list[tuple[str, str, torch.Tensor]]  # (name, "parameter" | "buffer", tensor)
    setters: dict[str, tuple[nn.Module, str]]
    owner: dict[int, str]  # id(tensor) -> the first name it has
    aliases: dict[str, list[str]]  # first name -> the other names of the same tensor


def collect_tensors(model: nn.Module) -> Tensors:
    """Parameters (parametrizations folded), norm statistics, and the names each tensor has."""
    items, setters = _parametrized_items(model)
    for n, b in model.named_buffers(remove_duplicate=False):
        if n.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
            items.append((n, "buffer", b))
    owner: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for n, _, t in items:
        o = owner.setdefault(id(t), n)
        aliases.setdefault(o, [])
        if o != n:
            aliases[o].append(n)
    return Tensors(items, setters, owner, aliases)


# --------------------------------------------------------------------------------------------
# The model-wide context the stages share
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    model: nn.Module
    policy: Policy
    info: GraphInfo
    extra_roles: dict[str, list[str]]
    branch_of: dict[str, Branch]
    notes: list[str]
    n_layer: int | None = None
    used: list[bool] = field(default_factory=list)
    unstable: dict[str, int] = field(default_factory=dict)
    meta_ok: bool = False  # plan meta tensors as if they had storage (materialize)
    param_roles: dict[str, list[str]] = field(default_factory=dict)
    head_gain: dict[str, float] = field(default_factory=dict)  # whole-model target for heads
    tied_heads: dict[str, str] = field(default_factory=dict)  # embedding table -> the linear layer sharing it


# --------------------------------------------------------------------------------------------
# Stages 2-3: roles and rule
# --------------------------------------------------------------------------------------------


def tensor_roles(ctx: _Context, module: nn.Module, modname: str, leaf: str, t: torch.Tensor,
                 kind: str, name: str = "") -> tuple[list[str], str | None]:
    """The roles of one tensor, most specific first (its primary role is the first), and why
    the dataflow changed its base role (``None`` if it did not)."""
    base = base_role(module, leaf, t, kind)
    why: str | None = None
    if kind == "parameter":
        base, why = refine_role(base, module, name, ctx.info)
    if base == "embedding" and name in ctx.tied_heads and not ctx.info.usages.get(name):
        # no dataflow (module-order fallback): the tie itself says the table is the output head
        base, why = "tied_embedding", f"the table is also the weight of {ctx.tied_heads[name]}"
    if base == "tied_embedding":
        return ["tied_embedding", "embedding"], why
    roles = [base]
    if base in ("weight", "norm", "recurrent_input"):
        extra = ctx.extra_roles.get(modname, []) + ctx.param_roles.get(name, [])
        roles = [r for r in ROLE_PRIORITY if r in extra] + roles
        if base == "norm":
            roles = [r for r in roles if r in ("residual_norm", "branch_end", "norm")]
        else:
            roles = [r for r in roles if r not in ("residual_norm",)]
            if base == "recurrent_input":
                roles = [r for r in roles if r in ("branch", "recurrent_input")]
    return roles, why


def match_rule(policy: Policy, module: nn.Module, name: str, roles: list[str]) -> tuple[int | None, str]:
    """The index of the first rule of ``policy`` that matches the tensor, and why."""
    for i, r in enumerate(policy.rules):
        w = r.why(module, name, roles)
        if w is not None:
            return i, w
    return None, ""


def _do_no_harm(ctx: _Context, rule: Rule, name: str, kind: str, t: torch.Tensor) -> str | None:
    """Why a tensor is left as the model made it although a rule matched it, or ``None``.

    A rule that names the tensor (``name=``) always applies. Otherwise: frozen parameters
    (``requires_grad=False``: sinusoidal tables, fixed buffers made parameters) and
    parameters whose values the model's authors set (see
    :func:`initwise.model.dataflow.model_init_semantics`) are not re-drawn.
    """
    if rule.name is not None or kind != "parameter":
        return None
    if isinstance(t, nn.Parameter) and not t.requires_grad:
        return "frozen (requires_grad=False)"
    why = ctx.info.semantic.get(name)
    if why is not None:
        return why
    return None


def _skip_reason(names: list[str], select: Callable[[str], bool], setters: Mapping[str, Any],
                 model: nn.Module, t: torch.Tensor, meta_ok: bool) -> str | None:
    picked = [n for n in names if select(n)
              or (n in setters and any(select(o) for o in _originals(model, n)))]
    # a tied tensor is one tensor: initialize it only if every name it has is selected
    # (a checkpoint that omits the tied lm_head still loaded the embedding it shares)
    if not picked:
        return "not in only"
    if len(picked) != len(names):
        kept = [n for n in names if n not in picked]
        return f"not initialized: tied to {', '.join(kept)}, which is not in only"
    if t.is_meta and not meta_ok:
        return "meta: skipped"
    return None


# --------------------------------------------------------------------------------------------
# Stages 5-6: gain and depth scale
# --------------------------------------------------------------------------------------------


def input_gain(ctx: _Context, module: nn.Module, modname: str, leaf: str, t: torch.Tensor,
               name: str = "") -> tuple[str | None, float | None, str]:  # fmt: skip
    """``(activation, exact gain, how it was found)`` of the signal feeding a weight layer."""
    if not (is_weight_layer(module) and t.dim() >= 2):
        return None, None, ""
    act, g, src = ctx.info.activation_of(modname, name or None)
    if isinstance(module, nn.RNNBase) and not re.fullmatch(r"weight_ih_l0(_reverse)?", leaf):
        # stacked layers and LSTM projections read the previous layer's h = o·tanh(c),
        # not the module's input: linear (gain 1), like recurrent weights
        act, g, src = "linear", 1.0, "inside the recurrent module"
    return act, g, src


_THROUGH_OPS = frozenset({*CASTS, "dropout", "view", "reshape", "contiguous", "clone", "permute",
                          "transpose", "flatten", "unsqueeze", "squeeze"})
_NORM_OPS = frozenset({"layer_norm", "group_norm", "batch_norm", "instance_norm", "rms_norm"})


def _reads_stream(ctx: _Context, name: str) -> bool:
    """Whether a weight reads the residual stream itself: its input (through dropout and shape
    ops) is not the output of a normalization (a pre-norm branch reads unit scale)."""
    tr, u = ctx.info.trace, ctx.info.usage(name)
    if tr is None or u is None or u.kind != "weight" or u.input_index < 0:
        return False
    by_index = {n.index: n for n in tr.nodes}
    n = by_index.get(u.input_index)
    for _ in range(16):
        if n is None:
            return False
        if n.norm_out or n.op in _NORM_OPS:
            return False
        if n.op not in _THROUGH_OPS or not n.inputs:
            return True
        n = n.inputs[0]
    return True


def stream_gain(ctx: _Context, rule: Rule, modname: str, name: str, act: str | None,
                g: float | None) -> tuple[str | None, float | None, list[str]]:
    """``stream_gain="branch"`` (Fixup, ReZero: He et al. 2015 on every branch layer): the
    first layer of a residual branch that reads the residual stream itself (no activation or
    normalization between) gets the gain of the nonlinearity inside its branch instead of the
    exact gain 1 of its linear input."""
    if rule.scheme != "auto" or rule.params.get("stream_gain") != "branch" or act != "linear":
        return act, g, []
    br = ctx.branch_of.get(modname)
    if br is None or br.layers[0] != modname or not _reads_stream(ctx, name):
        return act, g, []
    for layer in br.layers:
        a, ga, _ = ctx.info.activation_of(layer)
        if a != "linear" and layer != modname:
            return a, ga, [f"reads the residual stream: the gain of its branch's {a} "
                           "(He et al. 2015 on every branch layer, as Fixup and ReZero)"]
    return act, g, []


def depth_scale(ctx: _Context, rule: Rule, modname: str) -> tuple[float, list[str]]:
    """The rule's ``scale`` times its depth factor, and notes for the entry's ``post``."""
    s = float(rule.scale)
    post: list[str] = []
    if rule.depth_scale == "gpt2":
        if ctx.n_layer is None:
            ctx.n_layer = _n_layer(ctx.model, ctx.policy, ctx.info)
            if ctx.n_layer is None:
                raise ValueError("depth_scale='gpt2' needs n_layer: pass presets.gpt2(n_layer=...) "
                                 "or Policy(n_layer=...)")
            ctx.notes.append(f"gpt2 depth scaling uses n_layer={ctx.n_layer}")
        s *= 1.0 / math.sqrt(2.0 * ctx.n_layer)
    elif rule.depth_scale in ("small_init", "wang", "deepnet"):
        s *= _width_depth_factor(ctx, rule.depth_scale)
    elif rule.depth_scale == "fixup":
        br = ctx.branch_of.get(modname)
        if br is None:
            post.append("fixup: not in a detected branch, unscaled")
        else:
            # Zhang et al. 2019: L residual branches, m layers per branch
            m, big_l = len(br.layers), len(ctx.info.branches)
            if m > 1:
                s *= big_l ** (-1.0 / (2 * m - 2))
    return s, post


def _width_depth_factor(ctx: _Context, kind: str) -> float:
    """``small_init``: sqrt(2/(5d)); ``wang``: 2/(n_layer·sqrt(d)); ``deepnet``: (8·n_layer)^(-1/4)."""
    if kind in ("wang", "deepnet") and ctx.n_layer is None:
        ctx.n_layer = _n_layer(ctx.model, ctx.policy, ctx.info)
        if ctx.n_layer is None:
            raise ValueError(f"depth_scale={kind!r} needs n_layer: pass Policy(n_layer=...)")
        ctx.notes.append(f"{kind} depth scaling uses n_layer={ctx.n_layer}")
    if kind == "deepnet":
        assert ctx.n_layer is not None
        return float((8.0 * ctx.n_layer) ** -0.25)
    d = ctx.policy.d_model or _d_model(ctx.model)
    if d is None:
        raise ValueError(f"depth_scale={kind!r} needs the model width d: the model has no "
                         "config.hidden_size / n_embd / d_model and no single embedding width; "
                         "pass Policy(d_model=...) or presets.small_init(d_model=...)")
    note = f"{kind} uses the model width d={d}"
    if note not in ctx.notes:
        ctx.notes.append(note)
    if kind == "small_init":
        return math.sqrt(2.0 / (5.0 * d))
    assert ctx.n_layer is not None
    return 2.0 / (ctx.n_layer * math.sqrt(d))


def _d_model(model: nn.Module) -> int | None:
    """The model width: ``config.hidden_size`` (``n_embd``, ``d_model``, ...), else the width of
    its embeddings when they all have the same one."""
    cfg = getattr(model, "config", None)
    for attr in ("hidden_size", "n_embd", "d_model", "dim", "model_dim"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    widths = {int(m.weight.shape[-1]) for m in model.modules()
              if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    return widths.pop() if len(widths) == 1 else None


# --------------------------------------------------------------------------------------------
# Stages 7-8: scheme and description
# --------------------------------------------------------------------------------------------


@dataclass
class Resolved:
    """Stage 7's result: the scheme object (or a special action) and its parameters."""

    scheme_name: str | None
    params: dict[str, Any]
    scheme: Any = None  # registry Scheme or user callable; None for special actions
    special: str | None = None
    value: float = 0.0
    leftover: float = 1.0  # a multiplier the scheme's parameters could not absorb
    gain_used: bool = False
    blocks: int | None = None  # set by actions that fix the blocks (forget gate)


def resolve_scheme(rule: Rule, rule_i: int, name: str, module: nn.Module, leaf: str,
                   t: torch.Tensor, f: Fans | None, g: float | None, s: float) -> Resolved:
    """The concrete scheme of a tensor: the rule's scheme or action with gain and scale folded in."""
    if callable(rule.scheme) and not isinstance(rule.scheme, str):
        return Resolved(getattr(rule.scheme, "__name__", "callable"), dict(rule.params),
                        scheme=rule.scheme, leftover=s)
    if rule.scheme == "model_init":  # the model's own init code, keyed (apply.write_model_init)
        return Resolved("model_init", {}, special="model_init", blocks=1)
    if rule.scheme == "auto":
        if f is None:
            raise ValueError(f"{name}: action 'auto' needs fans (a weight with ≥2 dimensions); "
                             f"shape {tuple(t.shape)} matched rule #{rule_i} ({rule.describe()})")
        gg = 1.0 if g is None else g
        res = Resolved("variance_scaling", {"scale": gg * gg * s * s, "mode": "fan_in",
                                            "distribution": rule.params["distribution"]}, gain_used=True)
    elif rule.scheme == "inv_sqrt_uniform":
        of = rule.params["of"]
        if of == "fan_in":
            wt = getattr(module, "weight", None)
            if not isinstance(wt, torch.Tensor) or wt.dim() < 2:
                raise ValueError(f"{name}: inv_sqrt_uniform(of='fan_in') needs the module's weight")
            v: float = tensor_fans(wt.shape).fan_in
        else:
            attr = getattr(module, of, None)
            if not isinstance(attr, (int, float)):
                raise ValueError(f"{name}: {type(module).__name__} has no numeric attribute {of!r}")
            v = float(attr)
        bnd = rule.params["scale"] / math.sqrt(v) * s if v > 0 else 0.0
        res = Resolved("uniform", {"a": -bnd, "b": bnd})
    elif rule.scheme == "forget_gate_bias":
        if not isinstance(module, (nn.LSTM, nn.LSTMCell)) or not leaf.startswith("bias"):
            raise ValueError(f"{name}: forget_gate_bias applies to LSTM/LSTMCell biases only")
        if leaf.startswith("bias_ih"):
            value = float(rule.params["value"]) * s
            return Resolved("forget_gate_bias", {"value": value}, special="forget", value=value, blocks=1)
        res = Resolved("zeros", {}, blocks=1)
    else:
        assert isinstance(rule.scheme, str)
        params = dict(rule.params)
        gain_used = False
        if params.get("gain") == "auto":
            params["gain"] = 1.0 if g is None else g
            gain_used = True
        params, leftover = _fold(rule.scheme, params, s)
        res = Resolved(rule.scheme, params, leftover=leftover, gain_used=gain_used)
    assert res.scheme_name is not None
    res.scheme = get_scheme(res.scheme_name, **res.params)
    res.params = dict(res.scheme.params)
    return res


def describe(res: Resolved, name: str, block_shape: tuple[int, ...], f: Fans | None, post: list[str]
             ) -> tuple[str | None, float | None, float | None, float | None]:  # fmt: skip
    """``(distribution, mean, std, bound)`` of what the resolved scheme draws."""
    if res.special == "forget":
        post.append(f"forget-gate block = {res.value:g}, other gates 0")
        return "constant", res.value / 4.0, None, None
    if res.special == "model_init":
        post.append("the model's own init code (Hugging Face _init_weights, else "
                    "reset_parameters) run under keyed_init")
        return None, None, None, None
    if not isinstance(res.scheme, Scheme):
        return None, None, None, None
    try:
        st = res.scheme.describe(block_shape, f)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ValueError(f"{name}: scheme {res.scheme_name} cannot describe shape "
                         f"{tuple(block_shape)}: {err}") from None
    mean, std, bound = st.mean, st.std, st.bound
    if res.leftover != 1.0:
        mean = None if mean is None else mean * res.leftover
        std = None if std is None else std * res.leftover
        bound = None if bound is None else bound * res.leftover
    return st.distribution, mean, std, bound


def _n_layer(model: nn.Module, policy: Policy, info: GraphInfo) -> int | None:
    if policy.n_layer is not None:
        return policy.n_layer
    cfg = getattr(model, "config", None)
    for attr in ("n_layer", "num_hidden_layers", "num_layers", "n_layers"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    if info.branches:
        return max(1, len(info.branches) // 2)
    lists = [len(m) for m in model.modules() if isinstance(m, nn.ModuleList)]
    return max(lists) if lists else None



# --------------------------------------------------------------------------------------------
# All stages
# --------------------------------------------------------------------------------------------


def check_model(model: nn.Module, seed: int) -> None:
    """The checks every whole-model verb makes before it reads the model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    check_seed(seed, "init", allow_none=False)
    lazy = [n for n, t in model.named_parameters() if is_lazy(t)]
    if lazy:
        raise ValueError(
            f"{', '.join(lazy[:5])}{' ...' if len(lazy) > 5 else ''}: uninitialized lazy "
            "parameter(s) (e.g. nn.LazyLinear); run one forward pass on a sample batch to give "
            "them their shapes, then plan/init the model"
        )


def _tied_heads(model: nn.Module, ts: Tensors) -> dict[str, str]:
    """Embedding tables that are also the weight of a linear layer (a tied output head), by
    the names each tensor has: ``{table's names: the linear layer}``."""
    out: dict[str, str] = {}
    for first, others in ts.aliases.items():
        names = [first, *others]
        heads = [n.rpartition(".")[0] for n in names
                 if isinstance(model.get_submodule(n.rpartition(".")[0]) if "." in n else model, nn.Linear)]
        if heads and len(heads) < len(names):
            for n in names:
                out[n] = heads[0] or "<root>"
    return out


def build(model: nn.Module, policy_in: str | Policy | Iterable[Rule], example_inputs: Any,
          seed: int, only: Only, *, meta_ok: bool = False) -> tuple[Plan, list[Work]]:
    """Run every stage for every tensor of ``model``: the plan and the write pass's work.

    ``meta_ok``: plan meta tensors as if they had storage (``materialize`` plans a meta model
    once, then rebinds the work to the allocated tensors with :func:`rebind`).
    """
    check_model(model, seed)
    policy = get_policy(policy_in)
    info = structure.analyze(model, example_inputs, policy.branches)
    ctx = _Context(model, policy, info, structure_roles(model, info),
                   {layer: b for b in info.branches for layer in b.layers}, list(info.notes),
                   used=[False] * len(policy.rules), meta_ok=meta_ok,
                   param_roles=param_structure_roles(info))
    ts = collect_tensors(model)
    ctx.tied_heads = _tied_heads(model, ts)
    select = _selector(only, model, ts.setters)
    entries: list[PlanEntry] = []
    work: list[Work] = []
    for name, kind, t in ts.items:
        entry, w = _plan_tensor(ctx, ts, select, name, kind, t)
        entries.append(entry)
        if w is not None:
            work.append(w)
    ctx.head_gain = _head_gains(ctx, entries, ts)
    if ctx.head_gain:  # the heads again, with their whole-model target
        by_name = {n: (k, t) for n, k, t in ts.items}
        for i, e in enumerate(entries):
            if e.name in ctx.head_gain:
                k, t = by_name[e.name]
                entry, w = _plan_tensor(ctx, ts, select, e.name, k, t)
                entries[i] = entry
                work = [x for x in work if x.entry.name != e.name] + ([w] if w is not None else [])
    p = _finish(ctx, ts, seed, entries)
    if policy.fixup_scalars:
        head = next((e.module for e in entries if "classifier" in e.roles), None)
        p.added, notes = plan_fixup_scalars(model, info, head)
        p.notes += notes
    return p, work


def _head_gains(ctx: _Context, entries: list[PlanEntry], ts: Tensors) -> dict[str, float]:
    """Classifier heads under ``auto``: the gain that gives their logits unit variance, from
    their input's second moment propagated through the plan (a residual CNN's pooled
    features are far from unit scale; a pre-norm transformer's are at 1 and keep gain 1)."""
    tr, pre = ctx.info.trace, ctx.info.prefix
    heads = [e for e in entries if e.action == "init" and "classifier" in e.roles
             and e.rule is not None and ctx.policy.rules[e.rule].scheme == "auto"]
    if tr is None or not heads:
        return {}
    planned = {e.name: e for e in entries}
    tensors = {n: t for n, _, t in ts.items}

    def stats(name: str) -> tuple[float, float] | None:
        e = planned.get(pre + name)
        if e is not None and e.action == "init":
            std = e.std if e.std is not None else (e.bound / math.sqrt(3.0) if e.bound else 0.0)
            return (e.mean or 0.0, float(std))
        t = tensors.get(pre + name)
        if t is None or t.is_meta or t.numel() < 2 or is_dtensor(t) or not t.is_floating_point():
            return None
        with torch.no_grad():
            return (float(t.float().mean()), float(t.float().std()))

    q = second_moments(tr, stats)
    out = {}
    for e in heads:
        u = tr.weight_usage(e.name.removeprefix(pre))
        if u is None or u.input_index < 0:
            continue
        qx = q.get(u.input_index, 1.0)
        assumed = 1.0 if e.gain is None else 1.0 / e.gain**2  # what the layer-local gain assumes
        if qx > 0 and math.isfinite(qx) and abs(qx / assumed - 1.0) > 1e-6:
            out[e.name] = 1.0 / math.sqrt(qx)
    return out


def _plan_tensor(ctx: _Context, ts: Tensors, select: Callable[[str], bool], name: str, kind: str,
                 t: torch.Tensor) -> tuple[PlanEntry, Work | None]:
    model = ctx.model
    modname, _, leaf = name.rpartition(".")
    module = model.get_submodule(modname) if modname else model
    roles, role_why = tensor_roles(ctx, module, modname, leaf, t, kind, name)
    common: dict[str, Any] = {
        "name": name, "kind": kind, "module": modname, "module_type": type(module).__name__,
        "shape": tuple(int(s) for s in t.shape), "dtype": str(t.dtype).replace("torch.", ""),
        "role": roles[0], "roles": tuple(roles),
    }  # fmt: skip
    o = ts.owner[id(t)]
    if o != name:
        return PlanEntry(**common, action="skip", reason=f"tied to {o}", tied_to=o), None
    rule_i, why = match_rule(ctx.policy, module, name, roles)
    if rule_i is None:
        return PlanEntry(**common, action="keep", reason="no rule matched: left to the module",
                         aliases=tuple(ts.aliases[name])), None
    ctx.used[rule_i] = True
    rule = ctx.policy.rules[rule_i]
    skip_reason = _skip_reason([name, *ts.aliases[name]], select, ts.setters, model, t, ctx.meta_ok)
    base_kw: dict[str, Any] = {**common, "rule": rule_i, "rule_text": f"#{rule_i} {rule.describe()}",
                               "aliases": tuple(ts.aliases[name])}
    if rule.scheme == "keep":
        reason = f"{why}: left to the module" + (f" ({role_why})" if role_why else "")
        return PlanEntry(**base_kw, action="keep", reason=reason), None
    harm = _do_no_harm(ctx, rule, name, kind, t)
    if harm is not None:
        return PlanEntry(**base_kw, action="keep", reason=f"{harm}: left as the model made it "
                         "(a rule with name= that matches it initializes it)"), None

    usage = ctx.info.usage(name) if kind == "parameter" else None
    axes = None
    if usage is not None and usage.kind == "weight":
        axes = WeightAxes(tuple(usage.in_axes), tuple(usage.out_axes), tuple(usage.batch_axes),
                          usage.fused, usage.fused_contiguous)
    layout: TensorLayout = plan_layout(module, leaf, t, module_name=modname, source=rule.fans,
                                       transposable=name not in ts.setters,
                                       usage=axes)
    act, g, act_src = input_gain(ctx, module, modname, leaf, t, name)
    act, g, stream_why = stream_gain(ctx, rule, modname, name, act, g)
    s, post = depth_scale(ctx, rule, modname)
    post = [*stream_why, *post]
    if rule.scheme == "auto" and name in ctx.head_gain:
        g = ctx.head_gain[name]
        post.append(f"head: its input's second moment, propagated through the plan, is {1 / g**2:.3g}: "
                    "std set so the initial logits have unit variance")
    if rule.scheme == "auto" and usage is not None and usage.query_scale != 1.0:
        # logits q.k without 1/sqrt(d): the query's std carries the factor (T5)
        s *= usage.query_scale
        post.append(f"attention logits are not scaled by 1/sqrt(d): query std x {usage.query_scale:.4g}")
    res = resolve_scheme(rule, rule_i, name, module, leaf, t, layout.fans, g, s)
    off = norm_offset(name, ctx.info) if kind == "parameter" and roles[-1] == "norm" else None
    if off is not None and res.special is None and off != 0.0 and rule.fans != "tensor":
        shifted = _shift(res.scheme_name or "", res.params, off) if isinstance(res.scheme, Scheme) else None
        if shifted is None:
            return PlanEntry(**base_kw, action="keep", reason=f"{why}: left to the module ({role_why}; "
                             f"scheme {res.scheme_name} cannot be shifted by {off:g})"), None
        res.scheme_name, res.params = shifted
        res.scheme = get_scheme(res.scheme_name, **res.params)
        res.params = dict(res.scheme.params)
        post.append(f"{role_why}")
    blocks = layout.blocks if res.blocks is None else res.blocks
    block_shape = layout.block_shape if res.blocks is None else tuple(t.shape)
    squeeze = False
    if res.blocks is None and layout.batch_axes == (0,) and layout.view.dim() >= 3:
        blocks, squeeze = int(layout.view.shape[0]), True  # one matrix per expert
        block_shape = tuple(layout.view.shape[1:])
    dist, mean, std, bound = describe(res, name, block_shape, layout.fans, post)

    pad = getattr(module, "padding_idx", None) if roles[-1] == "embedding" else None
    if isinstance(pad, int):
        post.append(f"padding_idx row {pad} zeroed")
    else:
        pad = None
    base_act = None if act is None else act.split("*", 1)[0]  # "silu*sigmoid": a gated product
    if res.gain_used and base_act is not None and base_act in _UNSTABLE:
        ctx.unstable[base_act] = ctx.unstable.get(base_act, 0) + 1
    reason = why if skip_reason is None else skip_reason
    if act_src and res.gain_used:
        reason += f"; gain from {act_src}"
    f = layout.fans
    entry = PlanEntry(
        **base_kw, action="init" if skip_reason is None else "skip", reason=reason,
        scheme=res.scheme_name, params=_jsonable(res.params),
        fan_in=None if f is None else float(f.fan_in), fan_out=None if f is None else float(f.fan_out),
        blocks=blocks, gain=g if res.gain_used else None, activation=act if res.gain_used else None,
        scale=s, distribution=dist, mean=mean, std=std, bound=bound, post="; ".join(post) or None,
    )  # fmt: skip
    if skip_reason is not None:
        return entry, None
    return entry, Work(entry, layout.view, res.scheme, f, res.special, res.value, pad, res.leftover,
                       ts.setters.get(name), dict(res.params), layout.view is not t, squeeze)


def _finish(ctx: _Context, ts: Tensors, seed: int, entries: list[PlanEntry]) -> Plan:
    policy, notes = ctx.policy, ctx.notes
    unmatched = [f"#{i} {r.describe()}" for i, r in enumerate(policy.rules) if not ctx.used[i]]
    if policy.strict and unmatched:
        raise ValueError(f"policy {policy.name!r} is strict and these rules match no parameter: "
                         + "; ".join(unmatched))
    n_unstable = sum(ctx.unstable.values())
    if n_unstable >= _UNSTABLE_MIN_LAYERS:
        notes.append(
            f"{n_unstable} layers take {'/'.join(sorted(ctx.unstable))} inputs: these activations have an "
            "unstable fixed point at the exact gain, so the signal's second moment drifts with "
            "depth (a plain 24-layer SiLU MLP ends ~39x too large) and no fixed gain cures that; "
            "consider initwise.lsuv (data-dependent scaling)"
        )
    ties = [f"{o} <- {', '.join(a)}" for o, a in ts.aliases.items() if a]
    if ties:
        notes.append("tied tensors initialized once, under their first name: " + "; ".join(ties))
    return Plan(policy.name, seed, ctx.info.source, entries, notes, unmatched)


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return out




def rebind(model: nn.Module, work: list[Work]) -> list[Work]:
    """The same work on ``model``'s current tensors (after ``materialize`` gave them storage).

    Tensors are found again by name; a parametrized tensor is recomputed by its module.
    """
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    out = []
    for w in work:
        if w.setter is not None:
            module, attr = w.setter
            with torch.no_grad():
                t = getattr(module, attr)
        else:
            t = tensors[w.entry.name]
        out.append(dataclasses.replace(w, tensor=t.t() if w.transposed else t))
    return out
