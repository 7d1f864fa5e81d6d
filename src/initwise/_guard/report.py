"""The guard's results as data: findings, the check report, write events, digests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
FindingKind = Literal[
    "non_finite", "denormal", "implausible", "identical_rows", "low_precision", "tie_broken",
    "tie_diverged", "write_on_copy", "overwritten_after_load", "rewritten",
]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


@dataclass
class Finding:
    """One problem with one parameter (``parameter`` is its qualified name)."""

    parameter: str
    kind: str
    severity: str
    detail: str


@dataclass
class CheckReport:
    """Result of :func:`initwise.check`: the findings, worst first, and what was checked.

    ``ok`` is False when there is an ``"error"`` finding (with ``strict``: any finding).
    """

    model: str
    parameters: int
    findings: list[Finding] = field(default_factory=list)
    strict: bool = False

    @property
    def ok(self) -> bool:
        """Whether nothing (strict: nothing at all; else: no error) was found."""
        if self.strict:
            return not self.findings
        return not any(f.severity == "error" for f in self.findings)

    def of(self, parameter: str) -> list[Finding]:
        """The findings about one parameter."""
        return [f for f in self.findings if f.parameter == parameter]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``ok`` included)."""
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (round-trips through :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, s: str) -> CheckReport:
        """Rebuild a report from :meth:`to_json`."""
        d = json.loads(s)
        return cls(model=d["model"], parameters=d["parameters"], strict=d.get("strict", False),
                   findings=[Finding(**f) for f in d["findings"]])

    def __str__(self) -> str:
        head = (f"initwise check: {self.model}: {self.parameters} parameters, "
                f"{len(self.findings)} findings ({'ok' if self.ok else 'FAILED'})")
        if not self.findings:
            return head
        rows = [[f.severity, f.parameter, f.kind, f.detail] for f in self.findings]
        return head + "\n" + _table(["severity", "parameter", "kind", "detail"], rows)


@dataclass
class WriteEvent:
    """One write to a parameter seen by :func:`initwise.watch`.

    ``op``: what wrote (``torch.nn.init.normal_``, ``copy_``, ``.data =``, ``register``...);
    ``phase``: ``"construct"`` (inside a module's ``__init__`` / ``reset_parameters``),
    ``"load"`` (``load_state_dict``) or ``"init"`` (anything else); ``caller``: the first frame
    outside torch and initwise's guard, as ``file:line in function``; ``on_copy``: the write
    went to a copy of the parameter (made by ``copy_from``), not to the parameter.
    """

    index: int
    parameter: str
    op: str
    phase: str
    caller: str
    on_copy: bool = False
    copy_from: str = ""


@dataclass
class WatchLog:
    """Every write to a watched parameter, in order (see :func:`initwise.watch`)."""

    events: list[WriteEvent] = field(default_factory=list)

    def bind(self, model: Any) -> WatchLog:
        """Name the events by ``model``'s qualified parameter names (a model built inside
        ``watch()`` without one); returns the log."""
        binder = getattr(self, "_binder", None)
        if binder is not None:
            binder(model)
        return self

    def writes(self, parameter: str) -> list[WriteEvent]:
        """The writes to one parameter (copies excluded)."""
        return [e for e in self.events if e.parameter == parameter and not e.on_copy]

    def counts(self) -> dict[str, int]:
        """Parameter -> number of writes (registration excluded)."""
        out: dict[str, int] = {}
        for e in self.events:
            if not e.on_copy and e.op != "register":
                out[e.parameter] = out.get(e.parameter, 0) + 1
        return out

    @property
    def rewritten(self) -> list[str]:
        """Parameters written more than once after construction (load and init writes)."""
        seen: dict[str, int] = {}
        for e in self.events:
            if not e.on_copy and e.phase != "construct" and e.op != "register":
                seen[e.parameter] = seen.get(e.parameter, 0) + 1
        return [p for p, n in seen.items() if n > 1]

    def findings(self) -> list[Finding]:
        """Writes that undo a load, writes lost on a copy, repeated writes."""
        out: list[Finding] = []
        loaded: dict[str, WriteEvent] = {}
        last_write: dict[str, int] = {}
        for e in self.events:
            if not e.on_copy:
                last_write[e.parameter] = e.index
        for e in self.events:
            if e.on_copy:
                if last_write.get(e.parameter, -1) < e.index:
                    out.append(Finding(e.parameter, "write_on_copy", "error",
                                       f"{e.op} at {e.caller} wrote to a copy made by "
                                       f"{e.copy_from}; the parameter never received it"))
                continue
            if e.phase == "load":
                loaded[e.parameter] = e
            elif e.parameter in loaded and e.op != "register":
                first = loaded.pop(e.parameter)
                out.append(Finding(e.parameter, "overwritten_after_load", "error",
                                   f"loaded by {first.op} at {first.caller}, then overwritten "
                                   f"by {e.op} at {e.caller}"))
        flagged = {f.parameter for f in out if f.kind == "overwritten_after_load"}
        for p in self.rewritten:
            if p not in flagged:
                ops = ", ".join(f"{e.op} ({e.phase}) at {e.caller}" for e in self.writes(p)
                                if e.op != "register")
                out.append(Finding(p, "rewritten", "info", f"written more than once: {ops}"))
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def __str__(self) -> str:
        rows = [[str(e.index), e.parameter, e.op, e.phase, "copy" if e.on_copy else "",
                 e.caller] for e in self.events]
        return _table(["#", "parameter", "op", "phase", "copy", "caller"], rows)


@dataclass
class DigestReport:
    """Result of :func:`initwise.digest`: a SHA-256 per parameter and one for the model.

    Each parameter's hash covers its name, dtype, shape and the bytes of its values
    (contiguous, little-endian); ``total`` hashes the sorted ``name:hash`` lines.
    """

    model: str
    seed: int
    policy: str | None
    total: str
    parameters: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def diff(self, other: DigestReport) -> list[str]:
        """Names whose hash differs between two digests (or that only one of them has)."""
        names = sorted(set(self.parameters) | set(other.parameters))
        return [n for n in names if self.parameters.get(n) != other.parameters.get(n)]

    def __str__(self) -> str:
        lines = [f"initwise digest: {self.model} (seed {self.seed}, policy {self.policy})",
                 f"total  {self.total}"]
        lines += [f"{h}  {n}" for n, h in self.parameters.items()]
        return "\n".join(lines)
