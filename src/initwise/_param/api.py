"""``parametrize``: a model's parametrization (SP, μP, CompleteP, spectral) relative to a base.

>>> import torch
>>> def mlp(w): return torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.ReLU(), torch.nn.Linear(w, 2))
>>> p = parametrize(mlp(64), "mup", base=mlp(16))
>>> [(e.name, e.role, e.lr_adam) for e in p.entries][:3]
[('0.weight', 'input', 1.0), ('0.bias', 'vector', 1.0), ('2.weight', 'output', 1.0)]
>>> p.multipliers[0].describe()
'readout  x0.25 on the input of 2'
>>> p.remove()
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .._checks import check_choice, check_real, check_seed
from .._modules import unwrap
from .._names import canonical_name
from ..model import init as _init
from ..model import materialize as _materialize
from ..model.policy import Policy, Rule
from .multipliers import Multiplier, install
from .rules import NAMES, Name, Optimizer, completep_eps, scaling, update_family
from .shapes import Structure, TensorShape, infer

__all__ = ["ParamEntry", "Parametrization", "parametrize"]


@dataclass(frozen=True)
class ParamEntry:
    """How one parameter is parametrized (all fields JSON-able)."""

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    kind: str
    role: str
    width_in: float
    width_out: float
    depth: float  # m_L of its block (1 outside repeated blocks)
    block: str
    std: float | None  # the init std it gets (None: the SP init is kept, e.g. constants)
    init_scale: float  # the SP init at this width is multiplied by this
    lr_adam: float
    lr_sgd: float
    wd_adam: float
    wd_sgd: float
    eps: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"], d["base_shape"] = list(self.shape), list(self.base_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ParamEntry:
        kw = dict(d)
        kw["shape"], kw["base_shape"] = tuple(kw["shape"]), tuple(kw["base_shape"])
        return cls(**kw)


def _policy_name(policy: object) -> str:
    if isinstance(policy, str):
        return policy
    if isinstance(policy, Policy):
        return policy.name
    return "custom"


@dataclass
class Parametrization:
    """What :func:`parametrize` decided: one :class:`ParamEntry` per parameter, the forward
    multipliers (installed on the model until :meth:`remove`), and how to init and train it.
    """

    name: Name
    entries: list[ParamEntry]
    multipliers: list[Multiplier]
    width: float = 1.0  # m_N, the model's width ratio to base (the most common hidden fan-in ratio)
    depth: dict[str, tuple[int, int]] = field(default_factory=dict)  # block path -> (L, L_base)
    alpha: float = 1.0
    policy: str = "auto"
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    _policy: object = field(default=None, repr=False, compare=False)
    _handles: list[RemovableHandle] = field(default_factory=list, repr=False, compare=False)

    # ---------------------------------------------------------------------------------- access
    def __iter__(self) -> Any:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> ParamEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no parameter {name!r} in this parametrization")

    @property
    def installed(self) -> bool:
        """Whether the forward multipliers are on the model now."""
        return bool(self._handles)

    def _model(self, verb: str) -> nn.Module:
        if self.model is None:
            raise ValueError(f"Parametrization.{verb}: not bound to a model; pass model= to "
                             "Parametrization.from_json / from_dict")
        return self.model

    # ------------------------------------------------------------------------------ the model
    def install(self) -> Parametrization:
        """Put the forward multipliers on the model (done by :func:`parametrize`).

        For a ``torch.compile`` d model, ``torch.compiler.reset()`` is called when hooks are
        added or removed: a compiled graph does not see hooks registered after it was built.
        """
        if not self._handles:
            model = self._model("install")
            inner, prefix = unwrap(model)
            self._handles = install(inner, self.multipliers, "Parametrization.install")
            if self._handles and "_orig_mod" in prefix:
                torch.compiler.reset()
        return self

    def remove(self) -> None:
        """Take the forward multipliers off the model (the model computes what it did before)."""
        for h in self._handles:
            h.remove()
        if self._handles and self.model is not None and "_orig_mod" in unwrap(self.model)[1]:
            torch.compiler.reset()
        self._handles = []

    def init(self, seed: int = 0, *, device: torch.device | str | None = None) -> Parametrization:
        """Initialize the model in place: the SP init (:func:`initwise.init` with this
        parametrization's ``policy``, keyed by parameter name, so layout-invariant), each
        parameter then multiplied by its ``init_scale`` (exactly SP where that is 1).

        A model on the meta device is given storage on ``device`` first and initialized by
        :func:`initwise.materialize` (tensors the policy keeps get their module's own init,
        keyed); a sharded (FSDP2) meta model gets its local shards only.
        """
        check_seed(seed, "Parametrization.init")
        model = self._model("init")
        policy = cast("str | Policy | Iterable[Rule]", self._policy if self._policy is not None else self.policy)
        if any(p.is_meta for p in model.parameters()):
            if device is None:
                raise ValueError("Parametrization.init: the model is on the meta device; pass device= "
                                 "(e.g. 'cpu' or 'cuda') to materialize it there")
            _materialize(model, policy, device=device, seed=seed)
        else:
            _init(model, policy, seed=seed)
        scale = {e.name: e.init_scale for e in self.entries if e.init_scale != 1.0}
        if scale:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    f = scale.get(canonical_name(n))
                    if f is not None:
                        p.mul_(f)
        return self

    def param_groups(self, lr: float, optimizer: Optimizer | str | type | object = "adam", *,
                     weight_decay: float = 0.0,
                     eps: float | None = None) -> list[dict[str, Any]]:
        """Parameter groups for any ``torch.optim`` optimizer: one per distinct set of factors.

        ``optimizer`` names the update rule the groups are for: a name (``"adamw"``,
        ``"rmsprop"``, ``"sgd"``, ...) or the ``torch.optim`` class or instance itself.
        Entry-wise normalized optimizers (Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad,
        Adadelta, Rprop, Adafactor, Lion) take the Adam column, SGD and ASGD the SGD one.

        Each group has ``params``, ``lr`` (``lr`` times the group's factor for that column),
        ``weight_decay``
        (divided by the group's width LR factor: ``lr · wd`` stays width-independent), ``eps``
        when given (times CompleteP's ε factor) and ``names`` (canonical parameter names, so
        that compiled, DDP- and FSDP2-wrapped models give the same groups). Frozen parameters
        are left out.

        ``weight_decay`` is set in every group (default 0: it overrides the optimizer's own
        default, e.g. AdamW's 0.01; pass the decay you want). ``eps`` is set only when given.
        """
        family = update_family(optimizer)
        lr = check_real("lr", lr, where="Parametrization.param_groups")
        weight_decay = check_real("weight_decay", weight_decay, where="Parametrization.param_groups")
        if eps is not None:
            eps = check_real("eps", eps, where="Parametrization.param_groups")
        model = self._model("param_groups")
        by_name = {e.name: e for e in self.entries}
        groups: dict[tuple[float, float, float], dict[str, Any]] = {}
        seen: set[int] = set()
        for n, p in model.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            cn = canonical_name(n)
            e = by_name.get(cn)
            if e is None:
                raise ValueError(f"Parametrization.param_groups: the model has a parameter {cn!r} "
                                 "this parametrization does not know (was it built for another model?)")
            f_lr = e.lr_sgd if family == "sgd" else e.lr_adam
            f_wd = e.wd_sgd if family == "sgd" else e.wd_adam
            key = (f_lr, f_wd, e.eps)
            g = groups.get(key)
            if g is None:
                g = {"params": [], "names": [], "lr": lr * f_lr if f_lr != 1.0 else lr,
                     "weight_decay": weight_decay * f_wd if f_wd != 1.0 else weight_decay,
                     "lr_factor": f_lr}
                if eps is not None:
                    g["eps"] = eps * e.eps if e.eps != 1.0 else eps
                groups[key] = g
            g["params"].append(p)
            g["names"].append(cn)
        return list(groups.values())

    # ------------------------------------------------------------------------------ reporting
    def table(self) -> str:
        """A readable fixed-width table: one row per parameter, then the multipliers and notes."""
        head = ("name", "shape", "base", "role", "m_in", "m_out", "m_L", "init std", "x SP init",
                "Adam LR", "SGD LR", "wd (adam)", "eps", "note")
        rows = [head]
        for e in self.entries:
            rows.append((
                e.name, "x".join(map(str, e.shape)) or "scalar", "x".join(map(str, e.base_shape)) or "scalar",
                e.role, f"{e.width_in:g}", f"{e.width_out:g}", f"{e.depth:g}",
                "SP" if e.std is None else f"{e.std:.4g}", f"{e.init_scale:.4g}",
                f"{e.lr_adam:.4g}", f"{e.lr_sgd:.4g}", f"{e.wd_adam:.4g}", f"{e.eps:.4g}", e.note,
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        depth = ", ".join(f"{k or '(model)'}: {a}/{b}" for k, (a, b) in self.depth.items()) or "as base"
        lines = [f"Parametrization: {self.name!r} (width ratio {self.width:g}, depth {depth}, "
                 f"SP init policy {self.policy!r}" + (f", alpha {self.alpha:g}" if self.name == "completep" else "")
                 + ")"]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"multiplier: {m.describe()}" for m in self.multipliers]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "depth": {k: list(v) for k, v in self.depth.items()},
            "alpha": self.alpha,
            "policy": self.policy,
            "notes": list(self.notes),
            "entries": [e.to_dict() for e in self.entries],
            "multipliers": [m.to_dict() for m in self.multipliers],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], model: nn.Module | None = None, *,
                  policy: object = None) -> Parametrization:
        """Rebuild a parametrization; with ``model`` (the same architecture and widths), bind
        it and install its multipliers (no ``base`` needed). ``policy``: the SP init policy
        object, when it was not a preset name (JSON keeps only its name)."""
        p = cls(
            name=cast(Name, check_choice("parametrization", d["name"], NAMES)),
            entries=[ParamEntry.from_dict(e) for e in d["entries"]],
            multipliers=[Multiplier(**m) for m in d["multipliers"]],
            width=float(d.get("width", 1.0)),
            depth={k: (int(v[0]), int(v[1])) for k, v in d.get("depth", {}).items()},
            alpha=float(d.get("alpha", 1.0)),
            policy=str(d.get("policy", "auto")),
            notes=list(d.get("notes", [])),
            _policy=policy,
        )
        if model is not None:
            inner, _ = unwrap(model)
            shapes = {canonical_name(n): tuple(t.shape) for n, t in inner.named_parameters()}
            for e in p.entries:
                if shapes.get(e.name) != e.shape:
                    raise ValueError(f"Parametrization.from_dict: model parameter {e.name!r} has shape "
                                     f"{shapes.get(e.name)}, the parametrization {e.shape}")
            p.model = model
            p.install()
        return p

    @classmethod
    def from_json(cls, s: str, model: nn.Module | None = None, *, policy: object = None) -> Parametrization:
        """:meth:`from_dict` of :meth:`to_json`'s string."""
        return cls.from_dict(json.loads(s), model, policy=policy)


# ------------------------------------------------------------------------------------------
# building one
# ------------------------------------------------------------------------------------------


def _global_width(s: Structure) -> float:
    """m_N: the most common fan-in ratio of the hidden weights (1 if none)."""
    ratios = Counter(t.width_in for t in s.tensors if t.role == "hidden")
    if not ratios:
        ratios = Counter(t.width_out for t in s.tensors if t.role in ("input", "vector"))
    if not ratios:
        return 1.0
    top = max(ratios.values())
    return max(r for r, c in ratios.items() if c == top)


def _entry(name: Name, t: TensorShape, depth: float, alpha: float, eps: float) -> ParamEntry:
    sc = scaling(name, t, depth=depth, alpha=alpha, eps=eps)
    note = ""
    if t.kind == "tied_embedding":
        note = "tied: input table (init, LR); readout multiplier on its output use"
    init_scale = 1.0
    if sc.init is not None and t.base_std and t.std:
        init_scale = t.base_std * sc.init / t.std
        if math.isclose(init_scale, 1.0, rel_tol=1e-12, abs_tol=0.0):
            init_scale = 1.0
    elif sc.init is not None and sc.init != 1.0:
        note = (note + "; " if note else "") + "SP init has no std (constant or kept): left as is"
    std = None if t.std is None else t.std * init_scale
    return ParamEntry(
        name=t.name, shape=t.shape, base_shape=t.base_shape, kind=t.kind, role=t.role,
        width_in=t.width_in, width_out=t.width_out, depth=depth, block=t.block, std=std,
        init_scale=init_scale, lr_adam=sc.lr_adam, lr_sgd=sc.lr_sgd,
        wd_adam=1.0 / sc.width_adam, wd_sgd=1.0 / sc.width_sgd, eps=sc.eps, note=note,
    )


def _multipliers(name: Name, s: Structure, entries: dict[str, ParamEntry], alpha: float,
                 depth_of: dict[str, float], attention: bool) -> tuple[list[Multiplier], list[str]]:
    out: list[Multiplier] = []
    notes: list[str] = []
    if name not in ("mup", "completep"):
        return out, notes
    for pname, module in s.readouts.items():
        e = entries[pname]
        f = 1.0 / e.width_in if e.role == "output" else 1.0 / e.width_out  # tied: the table's width
        if f != 1.0:
            if not module:
                raise ValueError(f"parametrize: the readout {pname!r} is applied inside a bigger module's "
                                 "forward (not by a Linear of its own): there is no module to put its "
                                 "1/width multiplier on; give the readout its own nn.Linear")
            out.append(Multiplier(module, "readout", f, param=pname))
    for a, b in s.attention:
        assert a.query is not None
        target = b.scale * b.head_dim / a.head_dim  # μP: s_base · d_base / d
        f = target / a.scale if a.scale > 0 else 1.0  # the logits are linear in the queries
        if math.isclose(f, 1.0, rel_tol=1e-12, abs_tol=0.0):
            continue
        if not attention:
            notes.append(f"attention of {canonical_name(a.query)}: 1/sqrt(d) kept (attention=False)")
            continue
        if not a.module:
            raise ValueError(f"parametrize: the queries of {canonical_name(a.query)!r} are computed inside "
                             "a bigger module's forward (e.g. nn.MultiheadAttention's packed in_proj): "
                             "there is no module output to put muP's 1/d attention multiplier on; "
                             "pass attention=False to keep 1/sqrt(d) (not muP-exact)")
        out.append(Multiplier(a.module, "query", f, part=a.part, parts=a.parts, param=canonical_name(a.query)))
    if name == "completep":
        for writer, module in s.writers:
            we = entries.get(writer)
            m_l = depth_of.get(we.block, 1.0) if we is not None else 1.0
            if m_l == 1.0:
                continue
            if not module:
                raise ValueError(f"parametrize: the residual branch written by {writer!r} ends inside a "
                                 "bigger module's forward: there is no module output to put CompleteP's "
                                 "branch multiplier on")
            out.append(Multiplier(module, "branch", m_l ** (-alpha), param=writer))
    return out, notes


def parametrize(model: nn.Module, name: Name | str, *, base: nn.Module, delta: nn.Module | None = None,
                policy: object = "auto", alpha: float = 1.0, attention: bool = True,
                example_inputs: object = None) -> Parametrization:
    """Parametrize ``model`` relative to ``base`` (the same model at its base width and depth).

    Names: ``"sp"`` (standard: the policy's init, plain groups, no multipliers), ``"mup"``
    (Yang et al. 2022), ``"completep"`` (μP and depth, Dey et al. 2025; ``alpha=0.5`` is
    Depth-μP), ``"spectral"`` (Yang, Simon & Bernstein 2023). The formulas are in
    :mod:`initwise._param.rules` and docs/parametrize.md. At the base width and depth every
    name is exactly SP.

    The forward multipliers are installed now (removable: :meth:`Parametrization.remove`);
    :meth:`Parametrization.init` writes the weights, :meth:`Parametrization.param_groups`
    gives the optimizer's groups.

    Args:
        model: the model to train (a ``torch.compile`` / DDP wrapper is looked through).
        name: the parametrization.
        base: the same architecture at the base width (and depth); may be on the meta device.
        delta: optionally the architecture at another width: dimensions where ``base`` and
            ``delta`` differ are the infinite ones (names roles at the base width itself).
        policy: the SP init (a preset name of :func:`initwise.init` or a policy).
        alpha: CompleteP's depth exponent, in [0.5, 1].
        attention: put μP's ``1/d`` attention multiplier on the queries (``False``: keep the
            model's ``1/√d``, for attention whose queries no hook can reach).
        example_inputs: inputs for the forward pass that reads the model's structure (on the
            meta device), when they cannot be synthesized from its first layer or config.
    """
    name = cast(Name, check_choice("parametrization", name, NAMES))
    if not isinstance(model, nn.Module):
        raise TypeError(f"parametrize: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(base, nn.Module):
        raise TypeError(f"parametrize: base must be an nn.Module (the model at its base width), got {type(base).__name__}")
    alpha = check_real("alpha", alpha, where="parametrize")
    if not 0.5 <= alpha <= 1.0:
        raise ValueError(f"parametrize: alpha must be in [0.5, 1] (0.5: Depth-muP, 1: CompleteP), got {alpha}")
    inner, _ = unwrap(model)
    binner, _ = unwrap(base)
    dinner = unwrap(delta)[0] if delta is not None else None
    s = infer(inner, binner, delta=dinner, policy=policy, example_inputs=example_inputs)
    if name in ("mup", "completep") and not s.traced:
        raise ValueError(f"parametrize: {name!r} places forward multipliers where the forward pass "
                         f"applies the readout, the queries and the residual branches, but {s.notes[-1]}; "
                         "pass example_inputs= (a tensor, a tuple of args or a dict of kwargs)")
    depth_of = {b.path: b.ratio for b in s.blocks}
    notes = list(s.notes)
    if name == "mup" and s.blocks:
        notes.append("depth differs from base: muP transfers across width only; use 'completep' for depth")
    if name == "completep" and s.blocks and not s.writers:
        raise ValueError("parametrize: 'completep' needs residual blocks, but no residual sum was found "
                         "in the forward pass; the depth of " + ", ".join(repr(b.path) for b in s.blocks)
                         + " differs from base")
    width = _global_width(s)
    m_l = max((b.ratio for b in s.blocks), default=1.0)
    eps = completep_eps(width, m_l, alpha) if name == "completep" else 1.0
    entries = [_entry(name, t, depth_of.get(t.block, 1.0), alpha, eps) for t in s.tensors]
    by_name = {e.name: e for e in entries}
    mults, more = _multipliers(name, s, by_name, alpha, depth_of, attention)
    p = Parametrization(
        name=name, entries=entries, multipliers=mults, width=width,
        depth={b.path: (b.depth, b.base_depth) for b in s.blocks}, alpha=alpha,
        policy=_policy_name(policy), notes=notes + more, model=model, _policy=policy,
    )
    return p.install()
