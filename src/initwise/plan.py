"""Whole-model initialization: :func:`plan` (a dry run) and :func:`init` (apply it).

For every parameter (and BatchNorm running statistics) the plan records the rule of the
:class:`~initwise.policy.Policy` that matched and why, the scheme with its concrete
parameters, the fans, the gain and the activation it came from, and the resulting std/bound,
or why the tensor is skipped (tied to another name, not in ``only``, on the meta device) or
left to the module (``keep``).

**Reproducibility.** :func:`init` draws every parameter from the keyed counter-based engine
(:mod:`initwise.random`) with ``key = initwise.random.key(seed, qualified_name)`` (stacked
gate / q-k-v blocks use ``key.child("block<i>")``). A parameter's values therefore depend only
on ``(seed, its qualified name, the scheme and parameters its rule resolved to)``: they are
bit-identical run after run, whatever the global torch seed or the order in which modules
were built, and adding or removing another layer does not change them (unless it changes this
layer's own resolved scheme, e.g. its input activation or the ``n_layer`` of ``gpt2``).

**Atomicity.** :func:`init` fails before writing anything whenever it can: the whole plan is
built and validated first (scheme parameters, fans, shapes and dtypes; every built-in scheme is
run on a meta twin of its tensor, which performs all of its entry checks without allocating),
and user callables are *dry-run* on a scratch tensor of one parameter's size with the same key
(so a callable that raises, raises before the first write). Only then are values written,
directly into the parameters (no model-sized backup: memory stays at one parameter of scratch).
An error that appears only during the write pass (out of memory, interruption, a callable that
behaves differently on a second identical call) raises :class:`InitError` naming the parameters
already written.

**Ties.** A tensor registered under several names (e.g. ``wte.weight`` and ``lm_head.weight``)
is initialized once, under its first name in ``named_parameters(remove_duplicate=False)``
order; the other names are skipped with ``tied_to`` set.

>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> p = init(net, "auto", seed=0)
>>> e = p["2.weight"]
>>> e.activation, round(e.gain, 4), round(e.std, 4)
('relu', 1.4142, 0.3536)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Union

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import _graph
from ._checks import raise_unknown
from ._names import canonical_name
from .fans import Fans, tensor_fans
from .policy import Policy, Rule, get_policy, is_builtin_policy_name

__all__ = ["EntryChange", "InitError", "Plan", "PlanEntry", "init", "plan"]

log = logging.getLogger("initwise")

Only = Union[Iterable[str], Callable[[str], bool], None]  # noqa: UP007
EntryAction = Literal["init", "keep", "skip"]

_UNSTABLE = {"gelu", "gelu_tanh", "silu", "mish", "elu", "celu", "softplus", "hardswish"}
_RESIDUAL_NAMES = {"c_proj", "o_proj", "out_proj", "down_proj"}


class InitError(RuntimeError):
    """Raised when :func:`init` fails after it has started writing (see module docs)."""


@dataclass(frozen=True)
class PlanEntry:
    """How one parameter (or buffer) is initialized. All fields are JSON-able."""

    name: str
    kind: str  # "parameter" or "buffer"
    module: str
    module_type: str
    shape: tuple[int, ...]
    dtype: str
    role: str
    roles: tuple[str, ...]
    action: EntryAction
    reason: str
    rule: int | None = None
    rule_text: str = ""
    scheme: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fan_in: float | None = None
    fan_out: float | None = None
    blocks: int = 1
    gain: float | None = None
    activation: str | None = None
    scale: float = 1.0
    distribution: str | None = None
    mean: float | None = None
    std: float | None = None
    bound: float | None = None
    tied_to: str | None = None
    aliases: tuple[str, ...] = ()
    post: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["roles"] = list(self.roles)
        d["aliases"] = list(self.aliases)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlanEntry:
        kw = dict(d)
        for k in ("shape", "roles", "aliases"):
            kw[k] = tuple(kw.get(k) or ())
        kw["params"] = dict(kw.get("params") or {})
        return cls(**kw)


_DIFF_FIELDS = ("role", "action", "scheme", "params", "fan_in", "fan_out", "gain",
                "activation", "scale", "std", "bound", "mean", "tied_to", "shape")  # fmt: skip


@dataclass(frozen=True)
class EntryChange:
    """One difference between two plans: ``status`` is added, removed or changed."""

    name: str
    status: str
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.status != "changed":
            return f"{self.status:8s} {self.name}"
        parts = ", ".join(f"{k}: {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in self.changes.items())
        return f"changed  {self.name}: {parts}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


@dataclass
class Plan:
    """The result of :func:`plan` / :func:`init`: one :class:`PlanEntry` per tensor, and notes."""

    policy: str
    seed: int
    source: str
    entries: list[PlanEntry]
    notes: list[str] = field(default_factory=list)
    unmatched_rules: list[str] = field(default_factory=list)
    applied: bool = False

    def __iter__(self) -> Any:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PlanEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no plan entry {name!r}")

    def initialized(self) -> list[str]:
        """Names the plan writes (or wrote)."""
        return [e.name for e in self.entries if e.action == "init"]

    def coverage(self) -> dict[str, list[str]]:
        """Rule text -> names it covers; ``keep`` rules list what is left to the module."""
        out: dict[str, list[str]] = {}
        for e in self.entries:
            key = e.rule_text if e.rule is not None else "(no rule)"
            out.setdefault(key, []).append(e.name)
        return out

    def table(self) -> str:
        """A readable fixed-width table, then the notes."""
        head = ("name", "shape", "role", "scheme", "fan_in", "fan_out", "gain (act)", "std", "status")
        rows = [head]
        for e in self.entries:
            scheme = e.scheme or "-"
            if e.scheme == "variance_scaling":
                scheme = f"vs({e.params.get('distribution', '')})"
            elif e.scheme in ("normal", "uniform", "constant", "kaiming_uniform", "kaiming_normal"):
                scheme = f"{e.scheme}"
            if e.action == "keep":
                scheme = "keep"
            status = "init" if e.action == "init" else (e.reason if e.action == "skip" else "module")
            rows.append((
                e.name,
                "x".join(map(str, e.shape)) or "scalar",
                e.role,
                scheme + (f" x{e.scale:.3g}" if e.scale != 1.0 else ""),
                "-" if e.fan_in is None else f"{e.fan_in:g}",
                "-" if e.fan_out is None else f"{e.fan_out:g}",
                "-" if e.gain is None else f"{e.gain:.4f} ({e.activation})",
                "-" if e.std is None else f"{e.std:.4g}",
                status[:40],
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"Plan: policy={self.policy!r} seed={self.seed} activations from {self.source}"]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"note: {n}" for n in self.notes]
        if self.unmatched_rules and not is_builtin_policy_name(self.policy):
            lines += [f"unmatched rule: {u}" for u in self.unmatched_rules]
        elif self.unmatched_rules:
            lines.append(f"({len(self.unmatched_rules)} rules of preset {self.policy!r} match nothing in this model)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "source": self.source,
            "applied": self.applied,
            "notes": list(self.notes),
            "unmatched_rules": list(self.unmatched_rules),
            "entries": [e.to_dict() for e in self.entries],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        return cls(
            policy=d["policy"],
            seed=int(d["seed"]),
            source=d["source"],
            entries=[PlanEntry.from_dict(e) for e in d["entries"]],
            notes=list(d.get("notes", [])),
            unmatched_rules=list(d.get("unmatched_rules", [])),
            applied=bool(d.get("applied", False)),
        )

    @classmethod
    def from_json(cls, s: str) -> Plan:
        return cls.from_dict(json.loads(s))

    def diff(self, other: Plan) -> list[EntryChange]:
        """Entries that differ from ``other`` (``str()`` of each change is readable)."""
        mine = {e.name: e for e in self.entries}
        theirs = {e.name: e for e in other.entries}
        out: list[EntryChange] = []
        for name, e in mine.items():
            if name not in theirs:
                out.append(EntryChange(name, "removed"))
                continue
            o = theirs[name]
            ch = {}
            for f in _DIFF_FIELDS:
                a, b = getattr(e, f), getattr(o, f)
                if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12):
                    continue
                if a != b:
                    ch[f] = (a, b)
            if ch:
                out.append(EntryChange(name, "changed", ch))
        out += [EntryChange(n, "added") for n in theirs if n not in mine]
        return out


# --------------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------------


def _base_role(module: nn.Module, leaf: str, t: torch.Tensor, kind: str) -> str:
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        if leaf.startswith("weight_hh"):
            return "recurrent"
        if leaf.startswith("weight_"):
            return "recurrent_input"
        if leaf.startswith("bias"):
            return "recurrent_bias"
    if _graph.is_norm(module):
        if kind == "buffer":
            return "norm_stats"
        return "norm" if leaf == "weight" else ("norm_bias" if leaf == "bias" else "other")
    if _graph.is_embedding(module) and leaf == "weight":
        return "embedding"
    if t.numel() == 1 and not _graph.is_weight_layer(module):
        low = leaf.lower()
        if low.startswith("bias"):
            return "scalar_bias"
        if "scale" in low or "mult" in low:
            return "scalar_scale"
        return "gate"
    if t.dim() >= 2:
        return "weight"
    if "bias" in leaf:
        return "bias"
    return "other"


def _structure_roles(model: nn.Module, info: _graph.GraphInfo) -> dict[str, list[str]]:
    """Module name -> extra roles for its weight (residual_out, branch, ...)."""
    extra: dict[str, list[str]] = {}

    def add(m: str, r: str) -> None:
        lst = extra.setdefault(m, [])
        if r not in lst:
            lst.append(r)

    for b in info.branches:
        add(b.layers[-1], "residual_out")
        if b.trailing_norm is None:
            add(b.layers[-1], "branch_end")
        else:
            add(b.trailing_norm, "residual_norm")
            add(b.trailing_norm, "branch_end")
        for layer in b.layers:
            add(layer, "branch")
    mods = dict(model.named_modules())
    for name, m in mods.items():
        if not _graph.is_weight_layer(m) or not name:
            continue
        leaf = name.rsplit(".", 1)[-1]
        parent = mods.get(name.rsplit(".", 1)[0] if "." in name else "")
        ptype = type(parent).__name__ if parent is not None else ""
        # inside a stack of blocks (a numbered path: h.3.mlp.fc2), the second layer of a
        # feed-forward pair (OPT fc2, NeoX dense_4h_to_h, T5 wo, torch linear2) and an
        # attention's output (T5 o, NeoX attention.dense) write into the residual stream
        in_stack = any(part.isdigit() for part in name.split(".")[:-1])
        ffn_second = in_stack and parent is not None and any(
            leaf == second and isinstance(getattr(parent, first, None), nn.Module)
            for first, second in _graph.FFN_PAIRS
        )
        attn_out = in_stack and leaf in ("o", "dense") and ptype.endswith("Attention")
        if leaf in _RESIDUAL_NAMES or (leaf == "dense" and ptype.endswith("Output")) \
                or ffn_second or attn_out:
            add(name, "residual_out")
    linears = [n for n in info.order if isinstance(mods.get(n), nn.Linear)]
    if not linears:
        linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    if linears:
        add(linears[-1], "classifier")
    return extra


_ROLE_PRIORITY = ("residual_norm", "branch_end", "residual_out", "classifier", "branch")


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


@dataclass
class _Work:
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


# A chain this long of GELU/SiLU/Mish layers drifts noticeably (~1.8x in E[x^2] for SiLU).
_UNSTABLE_MIN_LAYERS = 4


def _key(seed: int, name: str, block: int | None) -> Any:
    from . import random as _random

    k = _random.key(seed, name)
    return k if block is None else k.child(f"block{block}")


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
    from torch.nn.utils import parametrize

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
    if only is None:
        return lambda n: True
    if callable(only):
        return lambda n: bool(only(n))
    if isinstance(only, str):
        raise TypeError("only= must be a list of names/prefixes or a predicate, not a single string")
    names = set(only)
    known = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    known |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    known |= {n for n, _ in model.named_modules(remove_duplicate=False) if n}
    known |= set(virtual)  # parametrized tensors, under their plain names
    for n in sorted(names):
        if n not in known:  # a typo would otherwise silently initialize nothing
            raise_unknown("name in only=", n, known, limit=20)

    def sel(n: str) -> bool:
        if n in names:
            return True
        parts = n.split(".")
        return any(".".join(parts[:i]) in names for i in range(1, len(parts)))

    return sel


def _n_layer(model: nn.Module, policy: Policy, info: _graph.GraphInfo) -> int | None:
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


def _build(model: nn.Module, policy_in: str | Policy | Iterable[Rule], example_inputs: Any,
           seed: int, only: Only) -> tuple[Plan, list[_Work]]:
    from .distributed import is_dtensor as _is_dtensor
    from .fans import _is_hf_conv1d, gate_blocks
    from .fans import fans as _fans_of
    from .registry import Scheme, get_scheme

    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    policy = get_policy(policy_in)
    lazy = [n for n, t in model.named_parameters() if is_lazy(t)]
    if lazy:
        raise ValueError(
            f"{', '.join(lazy[:5])}{' ...' if len(lazy) > 5 else ''}: uninitialized lazy "
            "parameter(s) (e.g. nn.LazyLinear); run one forward pass on a sample batch to give "
            "them their shapes, then plan/init the model"
        )
    info = _graph.analyze(model, example_inputs, policy.branches)
    extra = _structure_roles(model, info)
    notes = list(info.notes)
    n_layer: int | None = None
    branch_of = {layer: b for b in info.branches for layer in b.layers}
    used = [False] * len(policy.rules)

    param_items, setters = _parametrized_items(model)
    select = _selector(only, model, setters)
    items: list[tuple[str, str, torch.Tensor]] = param_items
    for n, b in model.named_buffers(remove_duplicate=False):
        leaf = n.rsplit(".", 1)[-1]
        if leaf in ("running_mean", "running_var"):
            items.append((n, "buffer", b))
    owner: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for n, _, t in items:
        o = owner.setdefault(id(t), n)
        aliases.setdefault(o, [])
        if o != n:
            aliases[o].append(n)

    entries: list[PlanEntry] = []
    work: list[_Work] = []
    unstable: dict[str, int] = {}
    for name, kind, t in items:
        modname, _, leaf = name.rpartition(".")
        module = model.get_submodule(modname) if modname else model
        base = _base_role(module, leaf, t, kind)
        roles = [base]
        if base in ("weight", "norm", "recurrent_input"):
            roles = [r for r in _ROLE_PRIORITY if r in extra.get(modname, [])] + roles
            if base == "norm":
                roles = [r for r in roles if r in ("residual_norm", "branch_end", "norm")]
            else:
                roles = [r for r in roles if r not in ("residual_norm",)]
                if base == "recurrent_input":
                    roles = [r for r in roles if r in ("branch", "recurrent_input")]
        common: dict[str, Any] = {
            "name": name, "kind": kind, "module": modname, "module_type": type(module).__name__,
            "shape": tuple(int(s) for s in t.shape), "dtype": str(t.dtype).replace("torch.", ""),
            "role": roles[0], "roles": tuple(roles),
        }  # fmt: skip
        o = owner[id(t)]
        if o != name:
            entries.append(PlanEntry(**common, action="skip", reason=f"tied to {o}", tied_to=o))
            continue
        rule_i, why = None, ""
        for i, r in enumerate(policy.rules):
            w = r.why(module, name, roles)
            if w is not None:
                rule_i, why = i, w
                break
        if rule_i is None:
            entries.append(PlanEntry(**common, action="keep", reason="no rule matched: left to the module",
                                     aliases=tuple(aliases[name])))
            continue
        used[rule_i] = True
        rule = policy.rules[rule_i]
        names = [name, *aliases[name]]
        picked = [n for n in names if select(n)
                  or (n in setters and any(select(o) for o in _originals(model, n)))]
        # a tied tensor is one tensor: initialize it only if every name it has is selected
        # (a checkpoint that omits the tied lm_head still loaded the embedding it shares)
        selected = len(picked) == len(names)
        skip_reason = None
        if not picked:
            skip_reason = "not in only"
        elif not selected:
            kept = [n for n in names if n not in picked]
            skip_reason = f"not initialized: tied to {', '.join(kept)}, which is not in only"
        elif t.is_meta:
            skip_reason = "meta: skipped"
        base_kw: dict[str, Any] = {**common, "rule": rule_i, "rule_text": f"#{rule_i} {rule.describe()}",
                                   "aliases": tuple(aliases[name])}
        if rule.scheme == "keep":
            entries.append(PlanEntry(**base_kw, action="keep", reason=f"{why}: left to the module"))
            continue

        # --- Hugging Face Conv1D stores [in, out]: work on the torch-layout view [out, in], and
        # GPT-2's packed attention projection c_attn is q, k, v (or k, v) blocks of [E, E]
        packed = 1
        if _is_hf_conv1d(module) and leaf == "weight" and t.dim() == 2 and name not in setters \
                and not _is_dtensor(t):
            t = t.t()
            nf, nx = t.shape
            if modname.rsplit(".", 1)[-1] in ("c_attn", "qkv") and nf % nx == 0 and nf // nx in (2, 3):
                packed = nf // nx

        # --- fans, blocks, gain
        blocks = 1
        f: Fans | None = None
        if rule.fans == "tensor":
            f = tensor_fans(t.shape) if t.dim() >= 2 else None
        else:
            try:
                blocks = int(gate_blocks(module, leaf))
            except (ValueError, TypeError, AttributeError):
                blocks = 1
            if t.dim() >= 2:
                try:
                    f = _fans_of(module, leaf)
                except ValueError:
                    f = None
                if packed > 1:
                    blocks = packed
                    f = None if f is None else Fans(f.fan_in, f.fan_out / packed)
                if f is None or not (f.fan_in > 0 and f.fan_out > 0):
                    f = tensor_fans((t.shape[0] // blocks, *t.shape[1:])) if t.shape[0] % blocks == 0 else None
        if blocks > 1 and (t.dim() == 0 or t.shape[0] % blocks):
            blocks = 1
        block_shape = (t.shape[0] // blocks, *t.shape[1:]) if t.dim() else ()
        act, g, act_src = None, None, ""
        if _graph.is_weight_layer(module) and t.dim() >= 2:
            act, g, act_src = info.activation_of(modname)
            if isinstance(module, nn.RNNBase) and not re.fullmatch(r"weight_ih_l0(_reverse)?", leaf):
                # stacked layers and LSTM projections read the previous layer's h = o·tanh(c),
                # not the module's input: linear (gain 1), like recurrent weights
                act, g, act_src = "linear", 1.0, "inside the recurrent module"
        gain_used = False

        # --- depth scale
        s = float(rule.scale)
        post: list[str] = []
        if rule.depth_scale == "gpt2":
            if n_layer is None:
                n_layer = _n_layer(model, policy, info)
                if n_layer is None:
                    raise ValueError("depth_scale='gpt2' needs n_layer: pass presets.gpt2(n_layer=...) "
                                     "or Policy(n_layer=...)")
                notes.append(f"gpt2 depth scaling uses n_layer={n_layer}")
            s *= 1.0 / math.sqrt(2.0 * n_layer)
        elif rule.depth_scale == "fixup":
            br = branch_of.get(modname)
            if br is None:
                post.append("fixup: not in a detected branch, unscaled")
            else:
            # Zhang et al. 2019: L residual branches, m layers per branch
                m, big_l = len(br.layers), len(info.branches)
                if m > 1:
                    s *= big_l ** (-1.0 / (2 * m - 2))

        # --- resolve the scheme
        special, value, scheme_obj = None, 0.0, None
        scheme_name: str | None
        params: dict[str, Any]
        leftover = 1.0
        if callable(rule.scheme) and not isinstance(rule.scheme, str):
            scheme_obj = rule.scheme
            scheme_name = getattr(rule.scheme, "__name__", "callable")
            params = dict(rule.params)
            leftover = s
        elif rule.scheme == "auto":
            if f is None:
                raise ValueError(f"{name}: action 'auto' needs fans (a weight with ≥2 dimensions); "
                                 f"shape {tuple(t.shape)} matched rule #{rule_i} ({rule.describe()})")
            gg = 1.0 if g is None else g
            gain_used = True
            scheme_name = "variance_scaling"
            params = {"scale": gg * gg * s * s, "mode": "fan_in",
                      "distribution": rule.params["distribution"]}
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
            scheme_name, params = "uniform", {"a": -bnd, "b": bnd}
        elif rule.scheme == "forget_gate_bias":
            if not isinstance(module, (nn.LSTM, nn.LSTMCell)) or not leaf.startswith("bias"):
                raise ValueError(f"{name}: forget_gate_bias applies to LSTM/LSTMCell biases only")
            if leaf.startswith("bias_ih"):
                special, value = "forget", float(rule.params["value"]) * s
                scheme_name, params = "forget_gate_bias", {"value": value}
            else:
                scheme_name, params = "zeros", {}
            blocks = 1
            block_shape = tuple(t.shape)
        else:
            assert isinstance(rule.scheme, str)
            params = dict(rule.params)
            if params.get("gain") == "auto":
                params["gain"] = 1.0 if g is None else g
                gain_used = True
            scheme_name = rule.scheme
            params, leftover = _fold(scheme_name, params, s)
        if scheme_obj is None and special is None:
            assert scheme_name is not None
            scheme_obj = get_scheme(scheme_name, **params)
            params = dict(scheme_obj.params)

        # --- describe
        dist, mean, std, bound = None, None, None, None
        if special == "forget":
            dist, mean, std = "constant", value / 4.0, None
            post.append(f"forget-gate block = {value:g}, other gates 0")
        elif isinstance(scheme_obj, Scheme):
            try:
                st = scheme_obj.describe(block_shape, f)
                dist, mean, std, bound = st.distribution, st.mean, st.std, st.bound
            except (ValueError, TypeError, ZeroDivisionError) as err:
                raise ValueError(f"{name}: scheme {scheme_name} cannot describe shape "
                                 f"{tuple(block_shape)}: {err}") from None
            if leftover != 1.0:
                mean = None if mean is None else mean * leftover
                std = None if std is None else std * leftover
                bound = None if bound is None else bound * leftover
        pad = getattr(module, "padding_idx", None) if base == "embedding" else None
        if isinstance(pad, int):
            post.append(f"padding_idx row {pad} zeroed")
        else:
            pad = None
        if gain_used and act is not None and act in _UNSTABLE:
            unstable[act] = unstable.get(act, 0) + 1
        reason = why if skip_reason is None else skip_reason
        if act_src and gain_used:
            reason += f"; gain from {act_src}"
        entry = PlanEntry(
            **base_kw, action="init" if skip_reason is None else "skip", reason=reason,
            scheme=scheme_name, params=_jsonable(params),
            fan_in=None if f is None else float(f.fan_in), fan_out=None if f is None else float(f.fan_out),
            blocks=blocks, gain=g if gain_used else None, activation=act if gain_used else None,
            scale=s,
            distribution=dist, mean=mean, std=std, bound=bound, post="; ".join(post) or None,
        )  # fmt: skip
        entries.append(entry)
        if skip_reason is None:
            work.append(_Work(entry, t, scheme_obj, f, special, value, pad, leftover, setters.get(name),
                              dict(params)))

    unmatched = [f"#{i} {r.describe()}" for i, r in enumerate(policy.rules) if not used[i]]
    if policy.strict and unmatched:
        raise ValueError(f"policy {policy.name!r} is strict and these rules match no parameter: "
                         + "; ".join(unmatched))
    n_unstable = sum(unstable.values())
    if n_unstable >= _UNSTABLE_MIN_LAYERS:
        notes.append(
            f"{n_unstable} layers take {'/'.join(sorted(unstable))} inputs: these activations have an "
            "unstable fixed point at the exact gain, so the signal's second moment drifts with "
            "depth (a plain 24-layer SiLU MLP ends ~39x too large) and no fixed gain cures that; "
            "consider initwise.lsuv (data-dependent scaling)"
        )
    ties = [f"{o} <- {', '.join(a)}" for o, a in aliases.items() if a]
    if ties:
        notes.append("tied tensors initialized once, under their first name: " + "; ".join(ties))
    return Plan(policy.name, seed, info.source, entries, notes, unmatched), work


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
    return out


# --------------------------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------------------------


def _blocks(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    if n == 1:
        return [t]
    rows = t.shape[0] // n
    return [t.narrow(0, i * rows, rows) for i in range(n)]


def _is_builtin(scheme: Any) -> bool:
    from .registry import Scheme

    return isinstance(scheme, Scheme) and getattr(scheme.fn, "__module__", "").startswith("initwise.")


def _call(w: _Work, target: torch.Tensor, block: int | None, seed: int) -> None:
    key = _key(seed, canonical_name(w.entry.name), block)
    if not hasattr(w.scheme, "describe"):  # user callable
        w.scheme(target, fans=w.fans, generator=key, **w.call_params)
    else:
        w.scheme(target, fans=w.fans, generator=key)


def _validate(work: Sequence[_Work], seed: int) -> None:
    for w in work:
        if w.setter is not None:  # the parametrization must accept an assignment
            module, attr = w.setter
            plist: Any = copy.deepcopy(getattr(module, "parametrizations")[attr])  # noqa: B009
            try:
                with torch.no_grad():
                    plist.right_inverse(torch.zeros_like(w.tensor, device="cpu").normal_())
            except Exception as err:
                raise ValueError(
                    f"{w.entry.name}: its parametrization ({', '.join(type(m).__name__ for m in plist)}) "
                    f"cannot be assigned a new value ({type(err).__name__}: {err}); initialize the "
                    "layer before parametrizing it, or exclude it with only="
                ) from err
        t = w.tensor
        if not t.is_floating_point():
            raise TypeError(f"{w.entry.name}: cannot initialize a {t.dtype} tensor "
                            f"(rule {w.entry.rule_text})")
        if w.special == "forget":
            continue
        n = w.entry.blocks
        shape = (t.shape[0] // n, *t.shape[1:]) if t.dim() else ()
        if _is_builtin(w.scheme):
            twin = torch.empty(shape, dtype=t.dtype, device="meta")
        else:  # dry-run untrusted code on a scratch tensor with the same keys
            twin = torch.empty(shape, dtype=t.dtype, device=t.device)
        try:
            for i in range(n):
                _call(w, twin, i if n > 1 else None, seed)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{w.entry.name} ({w.entry.rule_text}): {err}") from err


def _write(w: _Work, seed: int) -> None:
    if w.setter is not None:  # draw the computed tensor, assign it through right_inverse
        module, attr = w.setter
        scratch = torch.empty_like(w.tensor)
        _write(dataclasses.replace(w, tensor=scratch, setter=None), seed)
        with torch.no_grad():
            setattr(module, attr, scratch)
            plist: Any = getattr(module, "parametrizations")[attr]  # noqa: B009
            for pm in plist:
                power = getattr(pm, "_power_method", None)
                if callable(power) and scratch.dim() > 1:
                    # spectral norm: its power-iteration vectors belong to the old weight
                    power(pm._reshape_weight_to_matrix(scratch), 15)
        return
    t = w.tensor
    with torch.no_grad():
        if w.special == "forget":
            t.zero_()
            _blocks(t, 4)[1].fill_(w.value)
            return
        n = w.entry.blocks
        for i, view in enumerate(_blocks(t, n)):
            if _is_builtin(w.scheme):
                _call(w, view, i if n > 1 else None, seed)
            else:
                scratch = torch.empty_like(view)
                _call(w, scratch, i if n > 1 else None, seed)
                view.copy_(scratch)
            if w.post_scale != 1.0:
                view.mul_(w.post_scale)
        if w.padding_idx is not None:
            t[w.padding_idx].zero_()


def _reset_count(model: nn.Module, name: str) -> None:
    """Restart a norm's running-average count with its statistics (as ``reset_running_stats``).

    With ``momentum=None`` the next update weighs the statistics by ``1 / (count + 1)``: a
    stale count would keep the fresh statistics almost frozen.
    """
    modname, _, leaf = name.rpartition(".")
    if leaf not in ("running_mean", "running_var"):
        return
    count = getattr(model.get_submodule(modname) if modname else model, "num_batches_tracked", None)
    if isinstance(count, torch.Tensor) and not count.is_meta:
        with torch.no_grad():
            count.zero_()


def plan(model: nn.Module, policy: str | Policy | Iterable[Rule] = "auto", *, example_inputs: Any = None,
         seed: int = 0, only: Only = None) -> Plan:
    """Return what :func:`init` would do to ``model``, changing nothing (works on meta models).

    Args:
        model: the model.
        policy: a preset name (``initwise.policy.PRESETS``), a :class:`Policy` or a list of rules.
        example_inputs: inputs for a forward pass with hooks when ``torch.fx`` cannot trace the
            model (a tensor, a tuple of positional args or a dict of keyword args).
        seed: the seed of the keyed engine.
        only: parameter names, module-name prefixes (e.g. ``missing_keys``) or a predicate on
            the qualified name; everything else is skipped (``"not in only"``).

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> print(plan(net).table().splitlines()[4].split()[:4])
    ['0.bias', '4', 'bias', 'zeros']
    """
    return _build(model, policy, example_inputs, seed, only)[0]


def init(model: nn.Module, policy: str | Policy | Iterable[Rule] = "auto", *, example_inputs: Any = None,
         seed: int = 0, only: Only = None) -> Plan:
    """Initialize ``model`` in place by ``policy`` and return the applied :class:`Plan`.

    See the module documentation for reproducibility (values depend only on seed, name and
    rule), atomicity (validate everything, then write) and ties. Arguments as in :func:`plan`.

    >>> lin = torch.nn.Linear(3, 2)
    >>> _ = init(lin, "dcgan", seed=1)
    >>> lin.bias.abs().sum().item()
    0.0
    """
    from .distributed import is_dtensor, write_dtensor

    p, work = _build(model, policy, example_inputs, seed, only)
    _validate(work, seed)
    written: list[str] = []
    sharded, fallback = 0, []
    for w in work:
        try:
            if is_dtensor(w.tensor):
                sharded += 1
                if not write_dtensor(w, seed, _write):
                    fallback.append(w.entry.name)
            else:
                _write(w, seed)
            _reset_count(model, w.entry.name)
        except BaseException as err:
            raise InitError(
                f"init failed while writing {w.entry.name} after writing {len(written)} tensor(s) "
                f"({', '.join(written[:10])}{'...' if len(written) > 10 else ''}); those are changed"
            ) from err
        written.append(w.entry.name)
    if sharded:
        p.notes.append(
            f"{sharded} DTensor parameter(s) written shard-locally; whole-parameter (memory of "
            f"one parameter) fallback for: {', '.join(fallback) or 'none'}"
        )
    p.applied = True
    log.debug("initwise.init: wrote %d tensors with policy %s", len(written), p.policy)
    return p


def _field_names() -> list[str]:  # used by tests to check JSON completeness
    return [f.name for f in fields(PlanEntry)]
