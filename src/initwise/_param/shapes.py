"""Which parameters are input-like, hidden, output-like or vector-like: read by comparing a
model with the same model at its base width (and depth).

A dimension is *infinite* (it grows with the model) when its size differs from the base's
(or, given ``delta``, when the base and the delta model differ there, so roles can be named
at the base width itself, as the ``mup`` package's ``delta`` does). The fans come from the
planner (:func:`initwise.plan`, which knows transposed ``Conv1D``, packed q-k-v and
embeddings), the uses (embedding lookups, the readout of a tied table, the queries of each
attention, the weights writing into residual sums) from the dataflow trace
(:mod:`initwise.model.dataflow`). Depth is the number of entries of each repeated container
(``nn.ModuleList`` / ``nn.Sequential`` whose children are all of one type: a stack of blocks)
whose length differs from the base's; a
block ``i`` of ``L`` is compared with the base's block ``i * L_base // L``.

Roles (Yang et al. 2022, Tensor Programs V, Table 3):

- ``input``: fan-out infinite, fan-in finite (first layer, embedding tables: vocabulary
  in, width out);
- ``hidden``: both infinite;
- ``output``: fan-in infinite, fan-out finite (the readout);
- ``vector``: a 0/1-D tensor of infinite size (biases, norm gains);
- ``fixed``: nothing infinite (treated as in standard parametrization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from .._fans import tensor_fans
from .._names import canonical_name
from ..model import plan as _plan
from ..model.dataflow import Attention
from ..model.entries import Plan, PlanEntry
from ..model.structure import GraphInfo, analyze

__all__ = ["ROLES", "Blocks", "Role", "Structure", "TensorShape", "infer"]

Role = Literal["input", "hidden", "output", "vector", "fixed"]
ROLES: tuple[Role, ...] = ("input", "hidden", "output", "vector", "fixed")
_TABLES = ("embedding", "tied_embedding", "position")


@dataclass(frozen=True)
class TensorShape:
    """One parameter compared with its base: fans, width ratios, role, block."""

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    kind: str  # the planner's role: weight, embedding, tied_embedding, bias, norm, ...
    role: Role
    fan_in: float
    fan_out: float
    base_fan_in: float
    base_fan_out: float
    block: str = ""  # the repeated container it belongs to ("" if none)
    std: float | None = None  # the std the planner's init gives it at this width
    base_std: float | None = None  # ... and at the base width

    @property
    def width_in(self) -> float:
        return self.fan_in / self.base_fan_in

    @property
    def width_out(self) -> float:
        return self.fan_out / self.base_fan_out

    @property
    def is_table(self) -> bool:
        return self.kind in _TABLES


@dataclass(frozen=True)
class Blocks:
    """A repeated container: its path, its length here and in the base."""

    path: str
    depth: int
    base_depth: int

    @property
    def ratio(self) -> float:
        return self.depth / self.base_depth


@dataclass
class Structure:
    """What :func:`infer` found."""

    tensors: list[TensorShape]
    blocks: list[Blocks]
    attention: list[tuple[Attention, Attention]]  # (here, in the base), matched by query
    readouts: dict[str, str]  # output-role parameter -> the module that applies it as a weight
    writers: list[tuple[str, str]]  # (writer parameter, module whose output is the branch)
    plan: Plan
    traced: bool = True  # the forward pass of both models ran on meta (uses are known)
    notes: list[str] = field(default_factory=list)


def _containers(model: nn.Module) -> dict[str, int]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)):
            kids = list(m.named_children())
            if kids and all(k.isdigit() for k, _ in kids) and len({type(c) for _, c in kids}) == 1:
                out[name] = len(kids)  # a stack of blocks of one type
    return out


def _blocks(model: nn.Module, base: nn.Module) -> list[Blocks]:
    mine, theirs = _containers(model), _containers(base)
    out = []
    for path, n in mine.items():
        nb = theirs.get(path)
        if nb is not None and nb != n:
            out.append(Blocks(path, n, nb))
    return out


def _to_base(name: str, blocks: list[Blocks]) -> tuple[str, str]:
    """The base's name for ``name`` (block ``i`` of ``L`` -> ``i * L_base // L``), and the block."""
    for b in sorted(blocks, key=lambda b: -len(b.path)):
        pre = f"{b.path}." if b.path else ""
        if name.startswith(pre):
            head, dot, rest = name[len(pre):].partition(".")
            if head.isdigit():
                return f"{pre}{int(head) * b.base_depth // b.depth}{dot}{rest}", b.path
    return name, ""


def _fans(e: PlanEntry | None, shape: tuple[int, ...]) -> tuple[float, float]:
    """(fan_in, fan_out) of a parameter: an embedding table is looked up by one-hot rows
    (fan-in: its first axis, fan-out: its last), a weight has the planner's fans, a vector
    fan-in 1 and fan-out its size."""
    kind = e.role if e is not None else ""
    if kind in _TABLES and len(shape) == 2:
        return float(shape[0]), float(shape[1])
    if e is not None and e.fan_in is not None and e.fan_out is not None and len(shape) >= 2:
        return float(e.fan_in), float(e.fan_out)
    if len(shape) >= 2:
        f = tensor_fans(shape)
        return float(f.fan_in), float(f.fan_out)
    return 1.0, float(math.prod(shape)) if shape else 1.0


def _role(kind: str, ndim: int, inf_in: bool, inf_out: bool) -> Role:
    if kind in _TABLES:
        return "input" if inf_out else "fixed"
    if ndim < 2:
        return "vector" if inf_out else "fixed"
    if inf_in and inf_out:
        return "hidden"
    if inf_out:
        return "input"
    if inf_in:
        return "output"
    return "fixed"


def _entries(p: Plan) -> dict[str, PlanEntry]:
    out: dict[str, PlanEntry] = {}
    for e in p.entries:
        if e.kind == "parameter":
            out.setdefault(canonical_name(e.name), e)
    return out


def _std(e: PlanEntry | None, by_name: dict[str, PlanEntry]) -> float | None:
    if e is not None and e.tied_to:
        e = by_name.get(canonical_name(e.tied_to), e)
    return None if e is None else e.std


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {canonical_name(n): p for n, p in model.named_parameters()}


def infer(model: nn.Module, base: nn.Module, *, delta: nn.Module | None = None, policy: object = "auto",
          example_inputs: object = None, where: str = "parametrize") -> Structure:
    """Compare ``model`` with ``base`` (and ``delta``); see the module documentation.

    ``model``, ``base`` and ``delta`` are unwrapped modules (no compile / DDP wrapper).
    Raises ``ValueError`` naming the first parameter whose structure does not match.
    """
    blocks = _blocks(model, base)
    mine, theirs = _params(model), _params(base)
    other = _params(delta) if delta is not None else None
    missing = []
    for n in mine:
        if _to_base(n, blocks)[0] not in theirs:
            missing.append(n)
    if missing:
        extra = [n for n in theirs if n not in {_to_base(m, blocks)[0] for m in mine}]
        raise ValueError(
            f"{where}: base does not match the model's structure: {len(missing)} parameter(s) of the "
            f"model have no counterpart in base, e.g. {missing[0]!r}"
            + (f"; base has {extra[0]!r} that the model lacks" if extra else "")
            + ". base must be the same architecture at its base width (and depth)")
    p_model = _plan(model, policy)  # type: ignore[arg-type]
    p_base = _plan(base, policy)  # type: ignore[arg-type]
    em, eb = _entries(p_model), _entries(p_base)
    ed = _entries(_plan(delta, policy)) if delta is not None else {}  # type: ignore[arg-type]
    tensors: list[TensorShape] = []
    for n, t in mine.items():
        bn, blk = _to_base(n, blocks)
        shape, bshape = tuple(t.shape), tuple(theirs[bn].shape)
        if len(shape) != len(bshape):
            raise ValueError(f"{where}: parameter {n!r} has shape {shape} but its base counterpart "
                             f"{bn!r} has shape {bshape}: a different number of dimensions")
        e, b = em.get(n), eb.get(bn)
        fi, fo = _fans(e, shape)
        bfi, bfo = _fans(b, bshape)
        inf_in, inf_out = fi != bfi, fo != bfo
        if other is not None and bn in other:
            dfi, dfo = _fans(ed.get(bn), tuple(other[bn].shape))
            inf_in, inf_out = inf_in or dfi != bfi, inf_out or dfo != bfo
        kind = e.role if e is not None else ("weight" if len(shape) >= 2 else "bias")
        tensors.append(TensorShape(
            name=n, shape=shape, base_shape=bshape, kind=kind, role=_role(kind, len(shape), inf_in, inf_out),
            fan_in=fi, fan_out=fo, base_fan_in=bfi, base_fan_out=bfo, block=blk,
            std=_std(e, em), base_std=_std(b, eb),
        ))
    info = analyze(model, example_inputs)
    binfo = analyze(base, example_inputs)
    s = Structure(tensors=tensors, blocks=blocks, attention=[], readouts={}, writers=[], plan=p_model,
                  traced=info.trace is not None and binfo.trace is not None)
    _uses(s, model, info, binfo, blocks)
    return s


def _owns(mods: dict[str, nn.Module], module: str, param: str, params: dict[str, torch.Tensor]) -> bool:
    """Whether ``module`` is a leaf whose own forward applies ``param`` (its output is the
    weight op's output, so a hook on it sees exactly that): ``Linear``, ``Conv1D``, a tied head."""
    m = mods.get(module)
    t = params.get(param)
    if m is None or t is None or next(iter(m.children()), None) is not None:
        return False
    return any(p is t for p in m.parameters(recurse=False))


def _uses(s: Structure, model: nn.Module, info: GraphInfo, binfo: GraphInfo, blocks: list[Blocks]) -> None:
    """Readout modules, attention sites (paired with the base's) and residual writers, each with
    the module a hook can go on (``""``: none can: the op runs inside a bigger module's forward)."""
    mods = dict(model.named_modules())
    params = _params(model)
    for t in s.tensors:
        if t.role == "output" or t.kind == "tied_embedding":
            u = next((u for u in info.usages.get(t.name, []) if u.kind == "weight"), None)
            if u is not None:
                s.readouts[t.name] = u.module if _owns(mods, u.module, t.name, params) else ""
            elif t.role == "output":  # no trace: the module that owns it, if it is a leaf layer
                parent = t.name.rpartition(".")[0]
                s.readouts[t.name] = parent if _owns(mods, parent, t.name, params) else ""
    if info.trace is None or binfo.trace is None:
        why = "; ".join(n for n in info.notes + binfo.notes if "failed" in n or "could not" in n)
        s.notes.append(f"the forward pass could not be traced on meta ({why}): attention and "
                       "residual branches unknown")
        return
    base_sites = {canonical_name(a.query): a for a in binfo.trace.attention if a.query is not None}
    for a in info.trace.attention:
        if a.query is None:
            s.notes.append("an attention op whose queries come from no single weight: its logit "
                           "scale is left as it is")
            continue
        q = canonical_name(a.query)
        b = base_sites.get(_to_base(q, blocks)[0])
        if b is None:
            s.notes.append(f"attention of {q}: no counterpart in base; its logit scale is left as it is")
            continue
        ok = _owns(mods, a.module, q, params) or (a.module in mods and a.part is None and a.module != ""
                                                   and next(iter(mods[a.module].children()), None) is None
                                                   and a.module != q.rpartition(".")[0])  # a q-norm
        s.attention.append((a if ok else Attention(a.query, "", a.part, a.parts, a.head_dim, a.scale), b))
    seen: set[str] = set()
    for _layers, writer, norm in info.trace.residual:
        w = canonical_name(writer)
        if w in seen:
            continue
        seen.add(w)
        u = next((u for u in info.usages.get(writer, []) if u.kind == "weight"), None)
        if norm is not None:
            target = norm
        elif u is not None and _owns(mods, u.module, w, params):
            target = u.module
        elif u is not None and isinstance(mods.get(u.module), nn.MultiheadAttention):
            target = u.module  # out_proj is its last op: its output (first element) is the branch
        else:
            target = ""
        s.writers.append((w, target))
