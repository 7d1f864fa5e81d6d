"""Verdicts: each row against its segment's reference, the first row out of band named."""

from __future__ import annotations

import math
from typing import Any

from .._session import input_tensors
from .report import _SEVERITY, AuditReport, AuditThresholds, LayerStats, _fmt, _span


def _batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for t in input_tensors(args, kwargs):
        if t.dim() > 0:
            return int(t.shape[0])
    return 1


def _reference(rows: list[LayerStats], in_rms: float | None, th: AuditThresholds) -> float:
    if th.reference == "unit":
        return 1.0
    if th.reference == "input" and in_rms is not None and in_rms > 0:
        return in_rms
    for r in rows:
        if not (r.constant or r.probability) and math.isfinite(r.rms) and r.rms > 0:
            return r.rms
    return 1.0


def _nearest(v: float, lo: float, hi: float) -> float:
    """The point of ``[lo, hi]`` nearest to ``v`` (``v`` itself inside; ``hi`` for nan)."""
    return hi if math.isnan(v) else min(max(v, lo), hi)


def _where(rep: AuditReport, seg: int | None, backward: bool) -> str:
    if seg is None:
        return ("the output gradient" if backward else
                "the model input" if rep.input_rms is not None and rep.thresholds.reference
                == "input" else f"reference '{rep.thresholds.reference}'")
    r = rep.rows[seg]
    return f"segment after row {seg} {r.name or '(model)'} ({r.type})"


def _input_gradient_in_band(rep: AuditReport, r: LayerStats, floor: float) -> bool:
    """Whether the gradient reaching ``r``'s input, or the input of the parameter-free or
    normalization rows that lead to it (at most 4), is at least ``floor``: the backward signal
    then goes around ``r`` (through the other readers of that tensor, or a residual skip)."""
    row: LayerStats | None = r
    for _ in range(4):
        if row is None:
            return False
        g = row.grad_in_norm
        if g is not None and math.isfinite(g) and g >= floor:
            return True
        src = row.source
        if src is None or src >= len(rep.rows):
            return False
        row = rep.rows[src]
        if row.kind == "weighted" and not row.norm:
            return False
    return False


def _unreached(rep: AuditReport) -> list[LayerStats]:
    """Rows flagged vanishing whose gradient is exactly zero because their output does not
    reach the loss (the forward discards it: CvT's spatial queries in a layer whose only output
    read is the class token): every element of the gradient is 0 and the zero starts at no row,
    i.e. no row that reads them (directly or through other all-zero rows) has a nonzero output
    gradient and an all-zero input gradient (a dead or saturated layer, which stays vanishing)."""
    readers: dict[int, list[LayerStats]] = {}
    for q in rep.rows:
        if q.source is not None:
            readers.setdefault(q.source, []).append(q)
    out = []
    for r in rep.rows:
        if r.grad_flag != "vanishing" or r.grad_norm != 0.0:
            continue
        todo, seen, dies = [r], {r.index}, False
        while todo and not dies:
            for q in readers.get(todo.pop().index, []):
                if q.index in seen:
                    continue
                seen.add(q.index)
                if q.grad_norm == 0.0:
                    todo.append(q)
                elif q.grad_norm is not None and q.grad_in_norm == 0.0:
                    dies = True
        if not dies:
            out.append(r)
    return out


def _zero_head(rep: AuditReport) -> LayerStats | None:
    """The model's last weighted layer when it is zero-initialized and its weight receives a
    gradient (Fixup's classifier, a zero-init head): the output is the same for every example
    by design until the first step, which makes it depend on the input."""
    last = next((r for r in reversed(rep.rows) if r.kind == "weighted" and r.name
                 and not r.constant), None)
    if last is None or not last.zero_init:
        return None
    live = any(w.name.startswith(f"{last.name}.") and len(w.shape) >= 2 and w.zero
               and w.grad_norm and math.isfinite(w.grad_norm) for w in rep.weights)
    return last if live else None


def _gated_rows(rep: AuditReport) -> dict[int, LayerStats]:
    """Row -> the gated row whose branch it is in, for residual branches multiplied by a
    parameter before the sum (ReZero's ``α``, a layer scale ``γ``) that shrinks it
    (``rms(γ) < 1``; with the branch's own factors it may take the gradient out of the band,
    BEiT's 0.1 with a 0.55 branch): from each gated row up its
    chain of sources while the gradient stays at the gated row's scale (below ``band`` times
    it), i.e. until the chain reaches the stream the branch reads."""
    band = rep.thresholds.band
    out: dict[int, LayerStats] = {}
    for g in rep.rows:
        if g.gate_scale is None or g.gate_scale >= 1.0 or g.grad_norm is None \
                or not math.isfinite(g.grad_norm):
            continue
        row: LayerStats | None = g
        for _ in range(len(rep.rows)):
            if row is None or row.grad_norm is None or row.grad_norm > band * g.grad_norm \
                    or row.index in out:
                break
            out[row.index] = g
            row = rep.rows[row.source] if row.source is not None else None
    return out


def _by_design_gates(rep: AuditReport, gated: dict[int, LayerStats]) -> list[str]:
    """What the gated branches were read as, one line per kind of gate and its scale."""
    found: dict[tuple[str, str], tuple[set[int], list[str]]] = {}
    numel = {w.name: w.numel for w in rep.weights}
    for i, g in gated.items():
        if rep.rows[i].grad_flag == "scaled" and g.gate is not None \
                and g.gate_scale is not None:
            kind = "gate" if numel.get(g.gate, 1) == 1 else "layer scale"
            rows, names = found.setdefault((kind, f"{g.gate_scale:.3g}"), (set(), []))
            rows.add(g.index)
            if g.gate not in names:
                names.append(g.gate)
    out = []
    for (kind, v), (rows, names) in found.items():
        params = f"{len(names)} parameters, " if len(names) != len(rows) else ""
        out.append(f"{len(rows)} residual branch{'es' if len(rows) > 1 else ''} multiplied by a "
                   f"{kind} of {v} before the sum ({params}e.g. {names[0]}): gradient scaled "
                   f"by design ({kind} {v}), not vanishing")
    return out


def _judge(rep: AuditReport) -> None:
    """Set ratios, segments, flags, verdicts and reasons on ``rep`` (rules: module docs)."""
    th = rep.thresholds
    lo, hi = 1.0 / th.band, th.band
    segmented = th.scope == "segment"
    seen_zero_init = False
    notes: list[str] = []
    by_design: list[str] = []
    head = _zero_head(rep) if rep.input_independent else None
    dead = rep.input_independent and head is None
    if head is not None:
        by_design.append(f"row {head.index} {head.name} ({head.type}): output layer "
                         "zero-initialized (Fixup, zero-init head): the output is the same for "
                         "every example until the first step, whose update of this layer "
                         "makes it depend on the input")
    # Forward, in execution order: each normalization row opens a segment whose reference is
    # the interval between its input's and its output's rms.
    ref0 = rep.reference_rms
    span: tuple[float, float] = (ref0, ref0)
    seg: int | None = None
    for r in rep.rows:
        label = f"row {r.index} {r.name or '(model)'} ({r.type})"
        if segmented and r.reads_input and not r.constant and th.reference == "input":
            # a row reading a model input directly (a second tower, a decoder's ids) is judged
            # against that input: its rms, or for integer ids the row's own output
            new_ref = r.in_rms if r.in_rms is not None else r.rms * abs(r.out_scale or 1.0)
            if math.isfinite(new_ref) and new_ref > 0:
                span, seg = (new_ref, new_ref), None
        r.segment = seg
        r.global_ratio = r.rms / ref0 if ref0 > 0 else math.inf
        r.reference = _nearest(r.rms, *span)
        r.ratio = r.rms / r.reference if r.reference > 0 else math.inf
        r.flag = "ok"
        if r.constant or r.probability:  # not signal: reported, not judged
            r.flag = "n/a"
            continue
        if r.zero_init and dead:
            r.flag = "vanishing"  # a dead layer: the output no longer depends on the input
            seen_zero_init = True
            continue
        if r.zero_init or (seen_zero_init and r.zero_fraction == 1.0 and not r.nonfinite):
            r.flag = "skipped"
            if r.zero_init:
                notes.append(f"{label}: zero-initialized (skipped by the verdict)")
            seen_zero_init = True
            continue
        judged = not (segmented and (r.norm or r.feeds_norm))
        ratio = r.ratio / abs(r.temperature) if r.temperature else r.ratio  # a logit temperature
        if r.out_scale:  # used only times a constant: judged as the model goes on with it
            ratio *= abs(r.out_scale)
        if r.nonfinite or (judged and ratio > hi):
            r.flag = "exploding"
        elif r.addend:
            pass  # a small term of a residual sum: the sum carries the signal
        elif (judged and ratio < lo) or r.zero_fraction > th.max_zero_fraction:
            r.flag = "vanishing"
        if r.saturated_fraction is not None and r.saturated_fraction > 0.5:
            notes.append(f"{label}: {r.saturated_fraction:.0%} of outputs saturated")
        if segmented and r.norm and (new := _span(r.in_rms, r.rms)) is not None \
                and math.isfinite(r.rms) and r.rms > 0:
            span, seg = new, r.index
    first = next((r for r in rep.rows if r.flag in ("vanishing", "exploding")), None)
    if first is None and dead:
        first = rep.rows[-1] if rep.rows else None
        if first is not None:
            first.flag = "vanishing"
    if first is not None:
        rep.forward_verdict = first.flag
        rep.forward_first = first.index
        in_band = lo <= first.ratio <= hi or (segmented and (first.norm or first.feeds_norm))
        why = ("non-finite values" if first.nonfinite else
               "a dead layer: all-zero weights and output, and the model's output is the "
               "same for every example" if first.zero_init and dead else
               "the model's output is the same for every example (it does not depend on "
               "the input)" if dead and first is rep.rows[-1] else
               f"{first.zero_fraction:.1%} exact zeros" if in_band else
               f"rms/ref = {first.ratio:.3g} (reference rms {first.reference:.3g}: "
               f"{_where(rep, first.segment, False)})")
        rep.forward_reason = (f"first leaves the band at row {first.index} "
                              f"{first.name or '(model)'} ({first.type}): {why}")
    # Backward, in gradient-flow order (output to input): each normalization row opens a
    # segment whose reference is the interval between the gradient norms at its output and at
    # its input.
    blocked = seen_zero_init
    g0 = rep.output_grad_norm
    g_ok = math.isfinite(g0) and g0 > 0
    gspan: tuple[float, float] = (g0, g0)
    gseg: int | None = None
    gated = _gated_rows(rep)
    for r in reversed(rep.rows):
        r.grad_ratio = r.grad_reference = r.grad_global_ratio = r.grad_segment = None
        if r.grad_norm is None:
            r.grad_flag = "n/a"
            continue
        if g_ok:
            r.grad_segment = gseg
            r.grad_global_ratio = r.grad_norm / g0
            r.grad_reference = _nearest(r.grad_norm, *gspan)
            r.grad_ratio = (r.grad_norm / r.grad_reference if r.grad_reference > 0
                            else math.inf)
        if r.constant or r.probability:  # not signal: reported, not judged
            r.grad_flag = "n/a"
            continue
        if blocked and r.grad_norm == 0.0:
            r.grad_flag = "skipped"
            continue
        judged = not (segmented and r.norm)
        gr = r.grad_ratio
        if gr is not None and r.out_temperature:  # its output is scaled by a constant after it
            gr = gr / abs(r.out_temperature)
        if gr is not None and r.out_scale:  # used only times a constant: c x the stream's
            gr = gr / abs(r.out_scale)
        if gr is None:
            r.grad_flag = "exploding" if not math.isfinite(r.grad_norm) else "n/a"
        elif not math.isfinite(gr) or (judged and gr > hi):
            r.grad_flag = "exploding"
        elif judged and gr < lo:
            gate = gated.get(r.index)
            # in a gated branch the gradient is the stream's times the gate: judged by that
            r.grad_flag = ("scaled" if gate is not None and gate.gate_scale is not None
                           and gr >= lo * gate.gate_scale else "vanishing")
        else:
            r.grad_flag = "ok"
        if segmented and g_ok and (r.norm or r.pool) and r.index not in gated and \
                r.grad_in_norm is not None and \
                math.isfinite(r.grad_in_norm) and r.grad_in_norm > 0:
            gspan = _span(r.grad_norm, r.grad_in_norm) or gspan
            gseg = r.index
        elif segmented and g_ok and r.pool_grads is not None:
            # the row reads a functional pooling's output (x.mean(1) before a head): the rows
            # below it are judged against the gradient on both sides of that reduction
            gspan = _span(*r.pool_grads) or gspan
            gseg = r.index
    # Rows reading the same tensor (q, k, v projections) send back one summed gradient: the
    # gradient vanishes there only when it does in every one of them.
    group_max: dict[int, float] = {}
    for r in rep.rows:
        if r.grad_ratio is not None and r.grad_flag in ("ok", "vanishing", "exploding"):
            key = r.index if r.shares_input_with is None else r.shares_input_with
            group_max[key] = max(group_max.get(key, 0.0), r.grad_ratio)
    for r in rep.rows:
        key = r.index if r.shares_input_with is None else r.shares_input_with
        if r.grad_flag == "vanishing" and group_max.get(key, 0.0) >= lo:
            r.grad_flag = "ok"
        # a small gradient at a row that only modulates its input (attention scores, a
        # router, a selection projection) does not stop the backward signal when the
        # gradient at that input, summed over all of its readers, is in the band
        if r.grad_flag == "vanishing" and not r.norm and not r.pool and r.grad_reference \
                and _input_gradient_in_band(rep, r, lo * r.grad_reference):
            r.grad_flag = "ok"
    unreached = _unreached(rep)
    for r in unreached:
        r.grad_flag = "n/a"
    if unreached:
        names = ", ".join(f"{r.index} {r.name}" for r in unreached[:3])
        notes.append(f"{len(unreached)} row{'s' if len(unreached) > 1 else ''} with an exactly zero "
                     f"gradient that no row cuts off (e.g. row {names}): their output does not "
                     "reach the loss (discarded by the forward), not judged")
    by_design += _by_design_gates(rep, gated)
    head = next((r for r in rep.rows if r.out_temperature), None)
    if head is not None:
        by_design.append(f"the model's output is row {head.index} {head.name}'s times the constant "
                         f"{head.out_temperature:.4g} (a logit temperature): the output's scale and "
                         "that row's gradient are judged with it divided out")
    for r in rep.rows:
        if r.out_scale:
            by_design.append(f"row {r.index} {r.name}'s output is used only times the constant "
                             f"{r.out_scale:.4g} (an embedding multiplier): its output is judged "
                             "times it and its gradient divided by it")
    bfirst = next((r for r in reversed(rep.rows) if r.grad_flag in ("vanishing", "exploding")),
                  None)
    if bfirst is not None:
        rep.backward_verdict = bfirst.grad_flag
        rep.backward_first = bfirst.index
        ref = (f" (reference {bfirst.grad_reference / g0:.3g} x ‖∂L/∂y‖: "
               f"{_where(rep, bfirst.grad_segment, True)})"
               if bfirst.grad_reference is not None else "")
        rep.backward_reason = (f"first leaves the band at row {bfirst.index} "
                               f"{bfirst.name or '(model)'} ({bfirst.type}): grad-norm ratio "
                               f"{_fmt(bfirst.grad_ratio)}{ref}")
    f, b = rep.forward_verdict, rep.backward_verdict
    rep.verdict = f if _SEVERITY[f] >= _SEVERITY[b] else b
    if rep.output is not None and _SEVERITY[rep.output.verdict] > _SEVERITY[rep.verdict]:
        rep.verdict = rep.output.verdict
    n_norm = sum(r.norm for r in rep.rows)
    if segmented and n_norm:
        notes.append(f"{n_norm} normalization rows re-set the reference (scope 'segment'): "
                     "the scale entering them is judged only for non-finite values and "
                     "dead units")
    for w in rep.weights:
        if w.matches_plan is False:
            notes.append(f"{w.name}: std {w.std:.4g} differs from the plan's "
                         f"{w.intended_std:.4g} (ratio {w.std_ratio:.3g})")
    rep.notes = notes
    rep.by_design = by_design


