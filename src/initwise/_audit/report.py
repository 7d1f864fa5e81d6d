"""The audit's results as data: thresholds, per-layer and per-weight statistics, the report."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from .._checks import check_choice, check_finite_positive
from .._math import decode_nonfinite, encode_nonfinite
from .plot import plot_probes, plot_reports, plot_widths
from .probes import (
    CorrelationRow,
    CorrelationTrace,
    OneStepChange,
    ResidualGrowth,
    ResidualSum,
)
from .spectrum import SpectrumSummary

Verdict = Literal["healthy", "vanishing", "exploding"]
AuditMode = Literal["train", "eval"]
Reference = Literal["input", "first", "unit"]
Scope = Literal["segment", "global"]
Layers = Literal["leaves", "weighted"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
_SEVERITY = {"healthy": 0, "vanishing": 1, "exploding": 2}



def _span(a: float | None, b: float | None) -> tuple[float, float] | None:
    """``(min, max)`` of the finite positive values among ``a`` and ``b`` (None if none)."""
    vals = [v for v in (a, b) if v is not None and math.isfinite(v) and v > 0]
    return (min(vals), max(vals)) if vals else None



@dataclass(frozen=True)
class AuditThresholds:
    """Thresholds of the audit verdict (data: shown in every report, overridable).

    Attributes:
        band: healthy band ``[1 / band, band]`` for the forward ratio ``rms(h) / reference``
            and the backward ratio ``‖∂L/∂h‖ / ‖∂L/∂y‖``.
        max_zero_fraction: a row with more exact zeros than this is "vanishing" (dead).
        reference: forward reference scale of the first segment: ``"input"`` = rms of the
            model's floating-point inputs (falls back to the first row's rms when there are
            none, e.g. token ids: the embedding output), ``"first"`` = rms of the first row,
            ``"unit"`` = 1.
        scope: ``"segment"`` (default): normalization layers re-set the reference (each row
            is judged against the segment it lies in, see the module docs); ``"global"``:
            every row is judged against the model input (forward) and the output gradient
            (backward), normalization layers included.
        saturation_margin: an output of a bounded activation (tanh, sigmoid, ...) counts as
            saturated within ``margin × (upper − lower)`` of a bound.
        plan_sigmas: a weight's std matches its plan within this many standard errors
            (``rel. SE(std) = sqrt(2 / n) / 2`` for normal weights, a conservative bound).
        orthogonality_tol: a weight not declared orthogonal is reported as orthogonal when
            ``‖WWᵀ/g² − I‖_F`` (or ``WᵀW`` for tall ``W``) is below this.
        flat_slope: :func:`audit_widths` calls a quantity flat in width when ``|slope|`` of
            ``log(value)`` against ``log(width)`` is below this (halfway to ``±1/2``, the
            nearest exponent with which quantities scale in standard parametrization).
        max_loss_ratio: output check (:class:`OutputCheck`): logits whose cross-entropy
            against uniformly random labels exceeds this many times ``ln C`` (the loss of an
            uninformed model over ``C`` classes) are "exploding". 2 means logits with a
            per-position std of about 3.7 over 1000 classes, 2.1 over 10.

    >>> AuditThresholds(band=100.0).band
    100.0
    """

    band: float = 10.0
    max_zero_fraction: float = 0.99
    reference: Reference = "input"
    scope: Scope = "segment"
    saturation_margin: float = 0.02
    plan_sigmas: float = 6.0
    orthogonality_tol: float = 1e-3
    flat_slope: float = 0.25
    max_loss_ratio: float = 2.0

    def __post_init__(self) -> None:
        check_finite_positive("band", self.band)
        if self.band <= 1:
            raise ValueError(f"band must be > 1, got {self.band!r}")
        if not 0 < self.max_zero_fraction <= 1:
            raise ValueError(f"max_zero_fraction must be in (0, 1], got {self.max_zero_fraction!r}")
        check_choice("reference", self.reference, get_args(Reference))
        check_choice("scope", self.scope, get_args(Scope))
        check_finite_positive("saturation_margin", self.saturation_margin)
        check_finite_positive("plan_sigmas", self.plan_sigmas)
        check_finite_positive("orthogonality_tol", self.orthogonality_tol)
        check_finite_positive("flat_slope", self.flat_slope)
        check_finite_positive("max_loss_ratio", self.max_loss_ratio)
        if self.max_loss_ratio <= 1:
            raise ValueError(f"max_loss_ratio must be > 1, got {self.max_loss_ratio!r}")


@dataclass
class LayerStats:
    """Statistics of one layer call's output and of the gradient with respect to it.

    ``ratio`` is ``rms / reference`` and ``grad_ratio`` is ``grad_norm / grad_reference``, the
    references of the row's segment (module docs, "Segments"); ``segment`` / ``grad_segment``
    are the index of the normalization row that opened it (``None``: the first segment, whose
    reference is the model input, resp. ``‖∂L/∂y‖``). ``global_ratio`` and
    ``grad_global_ratio`` are against the model input and ``‖∂L/∂y‖`` throughout. ``norm``:
    a normalization layer (``in_rms`` and ``grad_in_norm`` are its input's rms and gradient
    norm); ``feeds_norm``: the row's output is a normalization layer's input. ``constant``:
    the output depends on neither the inputs nor a parameter (e.g. rotary cos/sin tables).
    ``probability``: the output is a softmax's (attention probabilities, e.g. through their
    dropout): rows that sum to 1, not signal; reported and not judged, like ``constant``.
    ``temperature``: the model's output is a row's output times this constant (a logit
    temperature such as Cohere's ``logit_scale``), and ``out_temperature`` marks that row:
    the output's ``ratio`` and that row's ``grad_ratio`` are judged with it divided out.
    ``out_scale``: an embedding row's output is used only times this constant (a multiplier:
    Granite's ``embedding_multiplier``, sqrt(d) in Gemma, Pegasus, BART): its ``ratio`` is
    judged times it and its ``grad_ratio`` divided by it (a constant no init can change), and
    a segment it opens by reading token ids has its output times it as the reference.
    ``pool``: a parameter-free row that shrinks its input (a pooling module); ``pool_grads``:
    the row reads a functional pooling's output (``head(x.mean(1))``, ``F.avg_pool2d``), and
    these are the gradient norms at that reduction's output and input. Either opens a
    backward segment, as a normalization row does: across a mean over ``N`` values the
    gradient norm drops by ``1/sqrt(N)`` by design.
    ``flag`` is ``"ok"``, ``"vanishing"``, ``"exploding"``, ``"skipped"`` (zero-init) or
    ``"n/a"`` (constant); ``grad_flag`` likewise, ``"n/a"`` when no gradient reached it, and
    ``"scaled"`` when its gradient is small by design: the row's output is a residual branch
    multiplied by a parameter before the sum (``gate``, the parameter's name; ``gate_scale``,
    its rms: ReZero's ``α = 0``, ConvNeXt's layer scale ``1e-6``), or feeds such a row, and
    the gradient ratio divided by ``gate_scale`` is in the band.
    """

    index: int
    name: str
    call: int
    type: str
    kind: str
    shape: list[int]
    numel: int
    mean: float
    std: float
    second_moment: float
    rms: float
    zero_fraction: float
    saturated_fraction: float | None
    max_abs: float
    nonfinite: bool
    ratio: float = math.nan
    zero_init: bool = False
    grad_rms: float | None = None
    grad_norm: float | None = None
    grad_max_abs: float | None = None
    grad_ratio: float | None = None
    flag: str = "ok"
    grad_flag: str = "n/a"
    norm: bool = False
    feeds_norm: bool = False
    pool: bool = False
    pool_grads: tuple[float, float] | None = None
    constant: bool = False
    probability: bool = False
    temperature: float | None = None
    out_temperature: float | None = None
    out_scale: float | None = None
    in_rms: float | None = None
    grad_in_norm: float | None = None
    reference: float = math.nan
    segment: int | None = None
    global_ratio: float = math.nan
    grad_reference: float | None = None
    grad_segment: int | None = None
    grad_global_ratio: float | None = None
    shares_input_with: int | None = None
    addend: bool = False
    reads_input: bool = False
    source: int | None = None
    gate: str | None = None
    gate_scale: float | None = None


@dataclass
class WeightStats:
    """Statistics of one parameter and its gradient (update scales are per unit lr)."""

    name: str
    shape: list[int]
    numel: int
    mean: float
    std: float
    rms: float
    norm: float
    zero: bool
    requires_grad: bool
    intended_std: float | None = None
    scheme: str | None = None
    std_ratio: float | None = None
    matches_plan: bool | None = None
    orthogonal: bool = False
    orth_gain: float | None = None
    orth_error: float | None = None
    grad_rms: float | None = None
    grad_norm: float | None = None
    sgd_update: float | None = None
    adam_update: float | None = None


OutputKind = Literal["lm", "classifier", "regression"]


@dataclass
class OutputCheck:
    """The model's output against what an uninformed model gives (part of the verdict).

    For logits over ``classes`` (a language model's vocabulary, a classifier's labels), an
    uninformed model predicts the uniform distribution: its cross-entropy is ``ln C`` whatever
    the labels. ``measured_loss`` is the cross-entropy of the model's logits against
    uniformly random labels, ``mean(logsumexp(z) − mean(z))`` over positions (``≥ ln C``, equal
    for constant logits; about ``ln C + s²/2`` for logits of small per-position std ``s``),
    so it needs no labels; ``target_loss`` is the cross-entropy against the given targets (or
    the model's own ``loss``) when there are any. The verdict is "exploding" when
    ``loss_ratio = measured_loss / ln C`` exceeds ``max_loss_ratio`` or the logits are not
    finite. For regression (floating targets of the output's shape) the uninformed model
    predicts 0: ``expected_loss = mean(t²)``, ``measured_loss = mean((y − t)²)``, and the
    verdict is "exploding" when ``rms(y) / rms(t)`` (``output_scale``) exceeds ``√band``.

    ``source`` says how the head was recognized (``config.vocab_size``, ``config.num_labels``,
    ``targets``, ``head <name>``).
    """

    kind: str
    classes: int | None
    source: str
    expected_loss: float
    measured_loss: float
    loss_ratio: float
    output_std: float
    verdict: str
    why: str
    target_loss: float | None = None
    output_scale: float | None = None




def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


@dataclass
class AuditReport:
    """Result of :func:`audit`: per-layer rows, per-parameter weights, verdicts (JSON-able).

    ``forward_first`` / ``backward_first`` are the row indices where the signal first leaves
    the healthy band (``None`` when healthy); ``forward_reason`` / ``backward_reason`` say why.
    ``by_design`` says what the audit read as the recipe's intent and did not call vanishing:
    residual branches multiplied by a gate or layer scale (their rows flagged ``"scaled"``), a
    zero-initialized output layer.
    """

    model: str
    mode: str
    batch: int
    loss: float
    loss_kind: str
    input_rms: float | None
    reference_rms: float
    output_grad_norm: float
    thresholds: AuditThresholds
    rows: list[LayerStats]
    weights: list[WeightStats]
    forward_verdict: str
    backward_verdict: str
    verdict: str
    forward_first: int | None = None
    backward_first: int | None = None
    forward_reason: str = ""
    backward_reason: str = ""
    notes: list[str] = field(default_factory=list)
    spectrum: SpectrumSummary | None = None
    output: OutputCheck | None = None
    input_independent: bool = False
    by_design: list[str] = field(default_factory=list)
    correlation: CorrelationTrace | None = None
    one_step: OneStepChange | None = None
    residual_growth: ResidualGrowth | None = None

    # -- data ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (non-finite floats as ``"inf"``/``"nan"`` strings)."""
        d: dict[str, Any] = encode_nonfinite(asdict(self))
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Return the report as strict JSON (round-trips through :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        d = decode_nonfinite(dict(d))
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["thresholds"] = AuditThresholds(**d["thresholds"])
        kw["rows"] = [LayerStats(**r) for r in d["rows"]]
        kw["weights"] = [WeightStats(**w) for w in d["weights"]]
        kw["spectrum"] = SpectrumSummary(**d["spectrum"]) if d.get("spectrum") else None
        kw["output"] = OutputCheck(**d["output"]) if d.get("output") else None
        if d.get("correlation"):
            c = dict(d["correlation"])
            c["rows"] = [CorrelationRow(**r) for r in c["rows"]]
            kw["correlation"] = CorrelationTrace(**c)
        kw["one_step"] = OneStepChange(**d["one_step"]) if d.get("one_step") else None
        if d.get("residual_growth"):
            g = dict(d["residual_growth"])
            g["sums"] = [ResidualSum(**r) for r in g["sums"]]
            kw["residual_growth"] = ResidualGrowth(**g)
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> AuditReport:
        """Rebuild a report from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(s))

    # -- text ------------------------------------------------------------------------------
    def _summary_lines(self) -> list[str]:
        t = self.thresholds
        out = f", output: {self.output.verdict}" if self.output is not None else ""
        lines = [
            f"verdict: {self.verdict}  (forward: {self.forward_verdict}, "
            f"backward: {self.backward_verdict}{out})",
        ]
        if self.forward_reason:
            lines.append(f"forward: {self.forward_reason}")
        if self.backward_reason:
            lines.append(f"backward: {self.backward_reason}")
        if self.output is not None:
            lines.append(f"output: {self.output.verdict}: {self.output.why}")
        lines.append(
            f"healthy band: rms/ref and grad-norm ratio in [{1 / t.band:.3g}, {t.band:.3g}], "
            f"zeros <= {t.max_zero_fraction:.3g}; reference rms = {self.reference_rms:.4g} "
            f"({t.reference}); scope = {t.scope} (seg/gseg: the normalization row whose "
            f"segment a row is in; ref: its reference); mode = {self.mode}; "
            f"loss = {self.loss_kind}"
        )
        if self.spectrum is not None:
            s = self.spectrum
            lines.append(
                f"jacobian spectrum ({s.side}, dim {s.dim}, {s.steps} Lanczos steps"
                f"{', exact' if s.exact else ''}): mean sv^2 {s.mean_sq_sv:.4g}, "
                f"max sv {s.max_sv:.4g}, min sv {s.min_sv:.4g}, std log sv {s.log_sv_std:.3g}, "
                f"condition {s.condition:.4g}"
            )
        if self.correlation is not None:
            c = self.correlation
            last = c.last()
            th = [r for r in c.rows if r.theory is not None]
            dev = max((abs(r.cosine - r.theory) for r in th if r.theory is not None),
                      default=None)
            lines.append(
                f"correlation of two inputs ({c.pairs} pairs, {c.pairing}): input "
                f"{_fmt(c.input_cosine)} -> {_fmt(c.final())} at "
                f"{(last.name or '(model)') if last is not None else '-'}"
                + (f"; mean-field theory at {len(th)} Linear rows, max |measured - theory| "
                   f"{_fmt(dev)}" if th else ""))
        if self.one_step is not None:
            o = self.one_step
            lines.append(
                f"one SGD step (lr {o.lr:g}, loss {o.loss_kind}): output change rms "
                f"{o.change_rms:.4g} ({_fmt(o.relative_change)} of the output's norm; "
                f"{o.change_per_lr:.4g} per unit lr), loss {o.loss_before:.4g} -> "
                f"{o.loss_after:.4g}")
        if self.residual_growth is not None:
            g = self.residual_growth
            lines.append(
                f"residual stream ({len(g.sums)} sums, {g.source}): rms {_fmt(g.initial_rms)} "
                f"-> {_fmt(g.sums[-1].rms if g.sums else None)}, growth {_fmt(g.total_growth)} "
                f"({_fmt(g.per_sum)} per sum, depth exponent {_fmt(g.depth_exponent)})"
                + (f"; {g.note}" if g.note else ""))
        lines += [f"by design: {n}" for n in self.by_design]
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def _layer_table(self, markdown: bool) -> str:
        header = ["#", "layer", "type", "shape", "mean", "std", "zeros", "sat", "max|x|",
                  "seg", "ref", "rms/ref", "grad rms", "gseg", "grad/ref", "flag"]
        segmented = self.thresholds.scope == "segment"
        rows = []
        for r in self.rows:
            flag = r.flag if r.flag not in ("ok", "n/a") else ""
            if r.grad_flag not in ("ok", "n/a"):
                flag = f"{flag}{'/' if flag else ''}grad {r.grad_flag}"
            if segmented and r.norm and not flag:
                flag = "(norm: resets ref)"
            elif segmented and r.feeds_norm and not flag:
                flag = "(enters norm)"
            elif r.constant and not flag:
                flag = "(constant)"
            elif r.probability and not flag:
                flag = "(probabilities)"
            name = r.name or "(model)"
            if r.call:
                name += f"#{r.call}"
            rows.append([str(r.index), name, r.type, "x".join(map(str, r.shape)),
                         _fmt(r.mean), _fmt(r.std), _fmt(r.zero_fraction, ".2f"),
                         _fmt(r.saturated_fraction, ".2f"), _fmt(r.max_abs),
                         "in" if r.segment is None else f"#{r.segment}", self._span_text(r),
                         _fmt(r.ratio), _fmt(r.grad_rms),
                         "-" if r.grad_reference is None else
                         "out" if r.grad_segment is None else f"#{r.grad_segment}",
                         _fmt(r.grad_ratio), flag])
        return _table(header, rows, markdown)

    def _span_text(self, r: LayerStats) -> str:
        """The reference interval of ``r``'s forward segment, as text."""
        if r.segment is None:
            return _fmt(self.reference_rms)
        norm = self.rows[r.segment]
        span = _span(norm.in_rms, norm.rms)
        if span is None or span[0] == span[1]:
            return _fmt(norm.rms)
        return f"{span[0]:.3g}..{span[1]:.3g}"

    def _weight_table(self, markdown: bool) -> str:
        header = ["parameter", "shape", "std", "intended", "std/int", "orth err", "grad rms",
                  "sgd upd", "adam upd"]
        rows = []
        for w in self.weights:
            orth = _fmt(w.orth_error) if w.orth_error is not None else ""
            rows.append([w.name, "x".join(map(str, w.shape)), _fmt(w.std),
                         _fmt(w.intended_std), _fmt(w.std_ratio), orth, _fmt(w.grad_rms),
                         _fmt(w.sgd_update), _fmt(w.adam_update)])
        return _table(header, rows, markdown)

    def _probe_tables(self, markdown: bool) -> list[str]:
        out: list[str] = []
        if self.correlation is not None and self.correlation.rows:
            body = [[str(r.index), r.name or "(model)", r.type, _fmt(r.cosine, ".4f"),
                     _fmt(r.theory, ".4f")] for r in self.correlation.rows]
            out += ["### Correlation of two inputs" if markdown else "correlation of two inputs",
                    "", _table(["#", "layer", "type", "cosine", "theory"], body, markdown), ""]
        if self.residual_growth is not None and self.residual_growth.sums:
            body = [[str(s.index), ", ".join(s.writers), _fmt(s.rms), _fmt(s.ratio),
                     _fmt(s.growth)] for s in self.residual_growth.sums]
            out += ["### Residual stream" if markdown else "residual stream", "",
                    _table(["#", "writers", "rms", "ratio", "growth"], body,
                           markdown), ""]
        return out

    def to_markdown(self) -> str:
        """Return the report as Markdown: summary, layer table, weight table (and the optional
        correlation and residual-stream tables)."""
        parts = [f"## initwise audit: {self.model}", ""]
        parts += [f"- {line}" for line in self._summary_lines()]
        parts += ["", "### Layers", "", self._layer_table(True), "", "### Parameters", "",
                  self._weight_table(True), "", *self._probe_tables(True)]
        return "\n".join(parts)

    def __str__(self) -> str:
        parts = [f"initwise audit: {self.model}", *self._summary_lines(), "",
                 self._layer_table(False), "", self._weight_table(False)]
        probes = self._probe_tables(False)
        if probes:
            parts += ["", *probes[:-1]]
        return "\n".join(parts)

    # -- plots -----------------------------------------------------------------------------
    def plot(self, path: str | None = None, *others: AuditReport,
             labels: Sequence[str] | None = None) -> Any:
        """Plot forward and backward scale against depth (log scale), overlaying ``others``.

        Needs matplotlib (the ``report`` extra). Returns the matplotlib ``Figure``; writes it
        to ``path`` when given.
        """
        return plot_reports([self, *others], path, labels)

    def plot_probes(self, path: str | None = None, *others: AuditReport,
                    labels: Sequence[str] | None = None) -> Any:
        """Plot the correlation of two inputs against depth (with the mean-field theory) and
        the residual stream's rms across residual sums, overlaying ``others`` (reports audited
        with ``correlation=`` / ``residual=True``). Needs matplotlib; returns the Figure."""
        return plot_probes([self, *others], path, labels)




@dataclass
class WidthRow:
    """One layer across widths: its values per width and the log-log slope against width."""

    name: str
    call: int
    type: str
    quantity: str
    values: list[float]
    slope: float
    flat: bool


@dataclass
class WidthAuditReport:
    """Result of :func:`audit_widths`: per-layer quantities against width, with slopes.

    ``rows`` hold, for each layer present at every width, the forward output ``rms`` (per
    coordinate), the backward ``grad_rms`` (per coordinate) and, for weighted layers, the
    weight's ``sgd_update`` scale. ``flat`` marks ``|slope| < flat_slope``.
    """

    widths: list[int]
    flat_slope: float
    rows: list[WidthRow]
    verdicts: list[str]
    reports: list[AuditReport] = field(default_factory=list)

    def quantity(self, name: str) -> list[WidthRow]:
        """Rows of one quantity: ``"rms"``, ``"grad_rms"`` or ``"sgd_update"``."""
        return [r for r in self.rows if r.quantity == name]

    def to_dict(self, *, include_reports: bool = False) -> dict[str, Any]:
        """Return a JSON-able dict (the per-width reports only when asked)."""
        d = asdict(self)
        if not include_reports:
            d["reports"] = []
        return dict(encode_nonfinite(d))

    def to_json(self, indent: int | None = 2) -> str:
        """Return strict JSON (per-width reports left out)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WidthAuditReport:
        """Rebuild from :meth:`to_dict`."""
        d = decode_nonfinite(dict(d))
        return cls(widths=list(d["widths"]), flat_slope=d["flat_slope"],
                   rows=[WidthRow(**r) for r in d["rows"]], verdicts=list(d["verdicts"]),
                   reports=[AuditReport.from_dict(r) for r in d.get("reports", [])])

    def to_markdown(self) -> str:
        """Return a Markdown table per quantity (values per width, slope, flat)."""
        out = [f"## initwise width audit: widths {self.widths}", "",
               f"- flat: |slope of log value vs log width| < {self.flat_slope}",
               f"- verdicts per width: {', '.join(self.verdicts)}", ""]
        for q in ("rms", "grad_rms", "sgd_update"):
            rows = self.quantity(q)
            if not rows:
                continue
            header = ["layer", "type", *[f"w={w}" for w in self.widths], "slope", "flat"]
            body = [[(r.name or "(model)") + (f"#{r.call}" if r.call else ""), r.type,
                     *[_fmt(v) for v in r.values], f"{r.slope:+.3f}", "yes" if r.flat else "no"]
                    for r in rows]
            out += [f"### {q}", "", _table(header, body, True), ""]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | None = None, quantity: str = "rms") -> Any:
        """Plot ``quantity`` against width (log-log), one line per layer. Needs matplotlib."""
        return plot_widths(self, path, quantity)


