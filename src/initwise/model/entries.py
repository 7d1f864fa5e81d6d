"""Plan data: what whole-model initialization decides per tensor, as JSON-able dataclasses.

:class:`PlanEntry` (one tensor: rule, scheme, fans, gain, std, or why it is skipped/kept),
:class:`Plan` (all entries and notes; table, JSON, diff) and :class:`EntryChange` (one
difference between two plans). Built by :mod:`initwise.model.resolve`, written by
:mod:`initwise.model.apply`, read by the audit and the CLI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .presets import is_builtin_policy_name
from .scalars import AddedScalar

__all__ = ["EntryAction", "EntryChange", "Plan", "PlanEntry"]

EntryAction = Literal["init", "keep", "skip"]


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
    added: list[AddedScalar] = field(default_factory=list)  # parameters init adds (Fixup)

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
            if e.scheme == "variance_scaling":  # the distribution and the fan it scales by
                scheme = f"{e.params.get('distribution', '')} /{e.params.get('mode', 'fan_in')}"
            if e.action == "keep":
                scheme = "keep"
            status = "init" if e.action == "init" else e.reason
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
        lines += [f"add: {a}" for a in self.added]
        lines += [f"note: {n}" for n in self.notes]
        if self.unmatched_rules and not is_builtin_policy_name(self.policy):  # a user's own rules
            lines += [f"unmatched rule: {u}" for u in self.unmatched_rules]
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
            **({"added": [a.to_dict() for a in self.added]} if self.added else {}),
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
            added=[AddedScalar.from_dict(a) for a in d.get("added", [])],
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
