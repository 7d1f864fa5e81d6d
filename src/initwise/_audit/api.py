"""The :func:`audit` verb and :func:`audit_plot`."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable, Sequence
from typing import Any, get_args

import torch
from torch import nn

from .._checks import (
    check_choice,
    check_finite_positive,
    check_materialized,
    check_seed,
    check_unsharded,
)
from .._modules import unwrap
from .._session import ModelState, call_args, input_tensors, suspend_in_place_compile
from ..model.structure import analyze
from .passes import _run
from .plot import plot_reports
from .probes import correlation_trace, one_step_change, residual_growth
from .report import AuditMode, AuditReport, AuditThresholds, Layers
from .spectrum import _spectrum
from .stats import _input_square_sum, _plan_map

# ------------------------------------------------------------------------------------------
# audit
# ------------------------------------------------------------------------------------------

def _seed(seed: int, device: torch.device) -> None:
    """Seed the RNGs the audited forward uses (dropout): the CPU generator, and the model's
    CUDA device; ``torch.manual_seed`` would also reach every other backend (~15 ms)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def audit(
    model: nn.Module,
    inputs: Any,
    *,
    targets: Any = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    spectrum: bool = False,
    plan: Any = None,
    mode: AuditMode = "train",
    layers: Layers = "leaves",
    thresholds: AuditThresholds | None = None,
    seed: int = 0,
    spectrum_steps: int = 32,
    spectrum_examples: int | None = 1,
    correlation: bool | float = False,
    step_lr: float | None = None,
    residual: bool = False,
) -> AuditReport:
    """Audit how a model's initialization propagates signal forward and backward.

    See the module docstring for exactly what is measured, the verdict rules and the
    conventions (mode, default loss, update scales, model left unchanged).

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        targets: passed to ``loss_fn(output, targets)``.
        loss_fn: returns a scalar loss from the model's (primary) output; default: the seeded
            random projection ``Σ y ⊙ R``, ``R ~ N(0, 1)``.
        spectrum: also estimate the input-output Jacobian's singular values (floating-point
            inputs only) on the first ``spectrum_examples`` examples (``None``: the whole
            batch) with ``spectrum_steps`` Lanczos steps.
        plan: an initwise ``Plan`` (or entries with ``name``, ``std``/``bound``, ``scheme``)
            to compare each parameter's std with.
        mode: ``"train"`` (what the first training step sees) or ``"eval"``.
        layers: ``"leaves"``: every leaf module and every module with its own parameters;
            ``"weighted"``: modules with their own parameters only. The model itself always
            gives the last row (its output).
        thresholds: verdict thresholds (:class:`AuditThresholds`).
        seed: seeds the default loss's projection, dropout and the Lanczos start vector.
        correlation: also trace the cosine similarity of two inputs' representations layer
            by layer (Poole et al. 2016), with the mean-field prediction for a plain fully
            connected network: ``True`` pairs examples ``2i`` and ``2i+1`` of the batch; a
            float ``c0`` in ``[-1, 1]`` pairs each example with a seeded partner of the same
            norm at cosine exactly ``c0`` (one floating-point input). ``report.correlation``
            (:class:`CorrelationTrace`).
        step_lr: also measure the output change after one SGD step of this learning rate on
            the audit's loss (the Fixup principle), parameters restored bit-exactly:
            ``report.one_step`` (:class:`OneStepChange`).
        residual: also measure the residual stream's rms after each residual sum found by the
            structure analysis, and its growth over depth: ``report.residual_growth``
            (:class:`ResidualGrowth`).

    Returns:
        An :class:`AuditReport`.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(64, 64), nn.ReLU())])
    >>> for m in net:
    ...     if isinstance(m, nn.Linear):
    ...         _ = nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    >>> audit(net, torch.randn(32, 64)).verdict
    'healthy'
    >>> for m in net:
    ...     if isinstance(m, nn.Linear):
    ...         _ = nn.init.normal_(m.weight, std=0.01)
    >>> r = audit(net, torch.randn(32, 64))
    >>> r.forward_verdict, r.backward_verdict
    ('vanishing', 'vanishing')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"audit: model must be an nn.Module, got {type(model).__name__}")
    check_seed(seed, "audit", allow_none=False)
    check_materialized(model, "audit")
    check_unsharded(model, "audit")
    check_choice("mode", mode, get_args(AuditMode))
    check_choice("layers", layers, get_args(Layers))
    th = thresholds if thresholds is not None else AuditThresholds()
    if not isinstance(th, AuditThresholds):
        raise TypeError("audit: thresholds must be an AuditThresholds")
    if targets is not None and loss_fn is None:
        raise ValueError("audit: targets were given without loss_fn; pass loss_fn=...")
    args, kwargs = call_args(inputs, verb="audit")
    tensors = input_tensors(args, kwargs)
    if not tensors:
        raise ValueError("audit: inputs contain no tensor; pass a batch (a tensor, a tuple or a dict)")
    empty = [tuple(t.shape) for t in tensors if t.numel() == 0]
    if empty:
        raise ValueError(f"audit: inputs with no elements (shapes {empty}); pass a non-empty batch")
    floats = [t for t in tensors if t.is_floating_point()]
    squares = [_input_square_sum(t) for t in floats]
    if any(ss is None for ss in squares):
        raise ValueError("audit: inputs contain non-finite values (nan or inf)")
    # the inputs' rms (the reference of the first rows): Σx² and the element count
    in_sq = (math.fsum(ss for ss in squares if ss is not None),
             sum(t.numel() for t in floats)) if floats else None
    if not isinstance(correlation, (bool, int, float)) or (
            not isinstance(correlation, bool) and not -1.0 <= float(correlation) <= 1.0):
        raise ValueError(f"audit: correlation must be True, False or a cosine c0 in [-1, 1], "
                         f"got {correlation!r}")
    if step_lr is not None:
        check_finite_positive("step_lr", step_lr)
    plan_std = _plan_map(plan)
    # torch.compile(model) / DataParallel wrappers: audit the module they run, eagerly, so
    # the hooks see every layer (the same rows as the eager model) and dynamo never traces
    # them; modules compiled in place (module.compile()) run eagerly for the audit.
    model, _ = unwrap(model)

    params = list(dict.fromkeys(model.parameters()))
    device = params[0].device if params else (tensors[0].device if tensors else
                                              torch.device("cpu"))
    state = ModelState(model)
    devices = [device.index or 0] if device.type == "cuda" else []
    handles: list[Any] = []
    # The passes allocate ~10^4 short-lived Python objects (row records, hook closures,
    # autograd node lists): with the cyclic collector on, its generation scans cost ~10 ms per
    # audit of a 4-layer ViT (~8% of one forward + backward). Nothing the audit makes needs
    # it before it returns; it is switched back on (if it was on) when the audit ends.
    collect = gc.isenabled()
    gc.disable()
    try:
        # the audit needs autograd even when called under torch.no_grad() / inference_mode()
        # cuDNN's RNN backward refuses eval mode; the audit's own passes use the native kernels
        rnn_on_gpu = device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules())
        no_cudnn = (torch.backends.cudnn.flags(enabled=False) if rnn_on_gpu
                    else contextlib.nullcontext())
        with torch.inference_mode(False), torch.enable_grad(), no_cudnn, \
                torch.random.fork_rng(devices=devices), suspend_in_place_compile(model):
            _seed(seed, device)
            model.train(mode == "train")
            for p in params:
                if p.is_floating_point():
                    p.requires_grad_(True)
            # Inputs go in as they are, detached (a model may set requires_grad on a view of
            # its input, as Wav2Vec2 does; in-place ops on them stay legal): inference tensors
            # are copied, the caller's tensors are never modified through autograd.
            def plain(t: Any) -> Any:
                if isinstance(t, torch.Tensor):
                    return t.clone() if t.is_inference() else t.detach()
                return t

            gargs = tuple(plain(a) for a in args)
            gkwargs = {k: plain(v) for k, v in kwargs.items()}
            pads: dict[str, tuple[int, int]] = {}
            handles.extend(_count_padding(model, pads))
            report = _run(model, gargs, gkwargs, in_sq, targets, loss_fn, th, plan_std, layers,
                          handles, seed, dict(state.requires_grad))
            _note_padding(report, pads)
            for h in handles:  # the spectrum's transforms run without the audit's hooks
                h.remove()
            handles.clear()
            if correlation is not False:
                _seed(seed, device)
                report.correlation = correlation_trace(
                    model, gargs, gkwargs, True if correlation is True else float(correlation),
                    seed)
            if step_lr is not None:
                rg: dict[torch.Tensor, bool] = dict(state.requires_grad)
                report.one_step = one_step_change(
                    model, gargs, gkwargs, _loss_of(loss_fn, targets, seed), report.loss_kind,
                    float(step_lr), lambda: _seed(seed, device),
                    lambda p: rg.get(p, True))
            if residual:
                info = analyze(model, inputs)
                writers = {w for b in info.branches
                           for w in (b.layers[-1:] + ((b.trailing_norm,) if b.trailing_norm
                                                      else ()))}
                report.residual_growth = residual_growth(model, gargs, gkwargs, writers,
                                                         info.source, lambda: _seed(seed, device))
            if spectrum:
                for h in handles:  # the Lanczos products must not run the statistics hooks
                    h.remove()
                handles.clear()
                _seed(seed, device)
                report.spectrum = _spectrum(model, args, kwargs, spectrum_steps,
                                            spectrum_examples, seed)
    finally:
        for h in handles:
            h.remove()
        state.restore()
        if collect:
            gc.enable()
    report.mode = mode
    return report




def _count_padding(model: nn.Module, out: dict[str, tuple[int, int]]) -> list[Any]:
    """Hooks that count, on an embedding's first call, the ids it reads that are its
    ``padding_idx`` while that row is exactly zero: ``out[name] = (padding ids, ids)``."""
    handles = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Embedding) or m.padding_idx is None:
            continue

        def pre(mod: nn.Module, args: Any, _n: str = name, _e: nn.Embedding = m) -> None:
            if _n in out or not args or not isinstance(args[0], torch.Tensor):
                return
            ids, idx, table = args[0], int(_e.padding_idx or 0), _e.weight
            with torch.no_grad():
                zero = not bool(table[idx].any())
                n = int(torch.eq(ids, idx).sum()) if zero else 0
            out[_n] = (n, ids.numel())

        handles.append(m.register_forward_pre_hook(pre))
    return handles


def _note_padding(report: AuditReport, pads: dict[str, tuple[int, int]]) -> None:
    """Say when the inputs hold padding tokens: their embedding is a zero vector, and a
    normalization layer reading a zero vector divides by ``sqrt(eps)`` (x1000 at eps 1e-6)
    in the backward pass (a gated RMSNorm also for its gate: Mamba-2's ``in_proj`` reads
    'exploding' there; OLMo 2's post-sublayer norms read a zero attention output at a padding
    token that opens a sequence, and the MLP rows judged against that norm's input gradient
    read 'vanishing'). Those positions are not signal; the readings they reach are theirs,
    not the init's."""
    hit = {k: v for k, v in pads.items() if v[0] > 0}
    if not hit:
        return
    what = ", ".join(f"{k or 'the model'}: {n} of {t}" for k, (n, t) in hit.items())
    note = (f"the inputs hold padding tokens ({what} ids are the embedding's padding_idx, a zero "
            "vector): a normalization layer reading a zero vector scales its gradient by up to "
            "1/sqrt(eps), so the rows those positions reach may read 'exploding' backward, and "
            "the rows judged against that gradient 'vanishing', whatever the init; audit a "
            "batch without padding tokens to judge the init")
    report.notes.append(note)
    if report.backward_verdict != "healthy":
        report.backward_reason += f" ({note})"


def _loss_of(loss_fn: Callable[..., torch.Tensor] | None, targets: Any, seed: int
             ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The audit's loss as a function of the output: the user's, or ``Σ y ⊙ R`` seeded."""
    def loss(y: torch.Tensor) -> torch.Tensor:
        if loss_fn is None:
            gen = torch.Generator().manual_seed(seed)
            proj = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(y.device, y.dtype)
            return (y * proj).sum()
        out = loss_fn(y) if targets is None else loss_fn(y, targets)
        return out.reshape(())
    return loss


def audit_plot(reports: AuditReport | Sequence[AuditReport], path: str | None = None,
               labels: Sequence[str] | None = None) -> Any:
    """Plot forward and backward scale against depth for one or more reports, overlaid.

    Three panels share the depth axis (row index, log scale on y): the forward ratio
    ``rms / reference``, the backward ratio ``‖∂L/∂h‖ / ‖∂L/∂y‖``, and the zero/saturated
    fraction; the healthy band is shaded and each report's first out-of-band row marked.
    Needs matplotlib (the ``report`` extra). Returns the ``Figure``; saves it to ``path``.
    """
    reps = [reports] if isinstance(reports, AuditReport) else list(reports)
    return plot_reports(reps, path, labels)

