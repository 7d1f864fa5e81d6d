"""The :func:`lsuv` verb: options checked, the model run until every layer is calibrated."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from .._checks import (
    InitwiseWarning,
    check_batched_inputs,
    check_finite_positive,
    check_materialized,
    check_seed,
    check_unsharded,
)
from .._errors import LSUVError
from .._modules import CONV_TYPES, is_weight_layer, replicas, sequence_first, unwrap
from .._names import selection
from .._session import ModelState, call_args, suspend_in_place_compile
from .._torch import is_lazy
from .proof import _KEEP_MODE, _NO_FASTPATH
from .report import LayerRule, LSUVLayer, LSUVReport, LSUVStep
from .run import _Run
from .units import Only, _discover, _memory, _select

logger = logging.getLogger("initwise.lsuv")


def _check_inputs(args: tuple[Any, ...], kwargs: dict[str, Any], seq_first: bool = False) -> None:
    named = [(f"inputs[{i}]", a) for i, a in enumerate(args)]
    named += [(f"inputs[{k!r}]", v) for k, v in kwargs.items()]
    tensors: list[tuple[str, torch.Tensor, int | None]] = []  # (name, values, batch size)
    for n, a in named:
        if isinstance(a, nn.utils.rnn.PackedSequence):  # batch: the sequences at step 0
            tensors.append((n, a.data, int(a.batch_sizes[0])))
        elif isinstance(a, torch.Tensor):
            tensors.append((n, a, int(a.shape[0]) if a.dim() >= 1 else None))
    if not tensors:
        raise TypeError("lsuv: inputs contain no tensor")
    masks = set()
    for n, t, _ in tensors:
        if not t.is_floating_point() or bool(torch.isfinite(t).all()):
            continue
        # -inf is how additive attention masks say "never"; in the data it makes the first
        # layer's output non-finite, which is reported there
        if bool(torch.isnan(t).any()) or bool((t == math.inf).any()):
            raise ValueError(f"lsuv: {n} contains NaN or +inf values")
        masks.add(n)
    name, first, batch = next((x for x in tensors if x[0] not in masks), tensors[0])
    if seq_first and first.dim() >= 3 and first.shape[1] >= 2:
        return  # [time, batch, ...] for sequence-first layers: dim 0 may be one time step
    if batch is not None and batch < 2:
        raise ValueError(
            f"lsuv: a batch of {batch} sample(s) (leading dimension of {name}, shape "
            f"{tuple(first.shape)}); LSUV needs a mini-batch of at least 2 samples "
            "(per-layer statistics of a single example are not those of the data)"
        )


def _uncovered(model: nn.Module, units: list[Any], parametrized: list[str], only: Any) -> list[str]:
    """Weights of weighted modules that no unit calibrates, with why (for the report)."""
    covered = {_memory(u.weight.param) for u in units}  # memory: tied through .data too
    covered |= {_memory(t) for u in units for _, t, _ in u.weight.extra_ortho}
    sel = selection(only, "lsuv")
    left_on_purpose = {p.split(" ", 1)[0] for p in parametrized}
    out = []
    for mname, m in model.named_modules():
        if not is_weight_layer(m) or (mname or "<root>") in left_on_purpose \
                or "parametrizations" in mname.split("."):  # reported as parametrized
            continue
        for leaf, p in m.named_parameters(recurse=False):
            name = f"{mname}.{leaf}" if mname else leaf
            if is_lazy(p) or p.dim() < 2 or name in left_on_purpose or _memory(p) in covered:
                continue
            if isinstance(m, (nn.RNNBase, nn.RNNCellBase)) and leaf.startswith(("weight_hh", "weight_hr")):
                continue  # recurrent weights are left untouched by design
            if sel is not None and sel.names is not None and not sel.matches(name):
                continue
            if sel is not None and sel.predicate is not None:
                continue  # a predicate selects layers, not these weights
            if p.dim() >= 3 and p.shape[0] > 1 and not isinstance(m, CONV_TYPES):
                what = "batched weights (e.g. fused experts)"
            elif leaf.endswith("weight"):
                what = "a weight of a layer LSUV has no rule for"
            else:  # a token, a position table, a scale: maybe not a weight at all
                what = "a tensor of a module LSUV has no rule for (a token or table is not calibrated)"
            out.append(f"{name} ({type(m).__name__}): {what}; if it is a weight whose output is "
                       f"linear in it, pass custom_layers={{{type(m).__name__}: LayerRule(...)}}")
    return out


def lsuv(
    model: nn.Module,
    inputs: Any,
    *,
    target_std: float = 1.0,
    tol: float = 0.01,
    max_iter: int = 10,
    orthogonal_first: bool = True,
    seed: int | None = 0,
    only: Only = None,
    include_bias: bool = True,
    zero_bias: bool = False,
    input_fn: Callable[[Any], Any] | None = None,
    custom_layers: Mapping[type, LayerRule | str] | None = None,
    progress: Callable[[LSUVStep], None] | None = None,
    verify: bool | Literal["auto"] = "auto",
) -> LSUVReport:
    """Initialize ``model`` in place by LSUV: orthogonal pre-init, then unit output std per layer.

    Mishkin & Matas, "All you need is a good init" (ICLR 2016). Every weighted layer (see the
    module docstring) is calibrated in execution order, in one forward pass: a hook rescales
    ``W`` by the exact ``s`` solving ``std(s * (y - b) + b) = target_std`` and passes the
    corrected output on. When the first pass cannot be proven to equal a fresh pass with the
    final weights (see the module docstring), further passes verify (and fix drift) until one
    needs no correction.

    Args:
        model: the model; modified in place (only calibrated weights and, with
            ``zero_bias``, their biases).
        inputs: a tensor (``model(x)``), a tuple/list (positional: ``model(*inputs)``), a dict
            (keywords: ``model(**inputs)``), or a DataLoader / iterable of batches (its first
            batch; a tuple/list batch ``(x, y)`` sends only ``x``). Must be on the model's
            device.
        target_std: the output std every calibrated layer gets.
        tol: relative tolerance ``|std / target_std - 1| <= tol`` for the verification pass.
        max_iter: maximum number of calibration passes (a final verification pass follows
            if the last one still corrected something).
        orthogonal_first: pre-initialize weights orthogonally (per gate / q, k, v block);
            ``False`` keeps the current weights and only rescales them.
        seed: seed of the orthogonal pre-init, per weight name (independent of the global RNG
            and of the order of layers); ``None`` uses the global RNG.
        only: calibrate only these layers: module or parameter names (exact or prefixes on
            ``.``), or a predicate ``(module_name, module) -> bool``. Others are untouched.
        include_bias: target the std of the output with the bias (default) or without it.
        zero_bias: zero the calibrated layers' biases before calibrating.
        input_fn: maps ``inputs`` (or a DataLoader's first batch) to the model input, which is
            then passed by the tensor / tuple / dict rule above.
        custom_layers: ``{LayerType: LayerRule(...)}`` or ``{LayerType: "weight_name"}`` for
            user layers whose output is linear in that weight.
        progress: called with an :class:`LSUVStep` after each layer call is measured.
        verify: ``"auto"`` (default): a verification pass only when the first pass is not
            provably exact (``report.verify_reasons`` says why); ``True``: always;
            ``False``: never (the reasons are still reported).

    Returns:
        An :class:`LSUVReport` (rows in execution order, forward passes used, convergence).

    Raises:
        LSUVError: a layer produced non-finite values, zero variance, or its bias alone
            exceeds the target; the model is restored bitwise.
        ValueError: bad options, non-finite inputs, a one-sample batch, unknown ``only`` names.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        >>> report = lsuv(net, torch.randn(64, 16, generator=torch.Generator().manual_seed(0)))
        >>> report.forward_passes, report.converged, round(report.layers[-1].std_after, 2)
        (1, True, 1.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"lsuv: model must be an nn.Module, got {type(model).__name__}")
    n_replicas = replicas(model)
    if n_replicas > 1:
        raise ValueError(
            f"lsuv: the model is DistributedDataParallel over {n_replicas} ranks: each rank "
            "would calibrate on its own batch and the replicas would keep different weights "
            "(DDP syncs weights only once, at construction). Run lsuv on the module before "
            "wrapping it in DDP (DDP then broadcasts rank 0's calibrated weights)"
        )
    # torch.compile(model), DataParallel, DDP (one rank): calibrate the module they run (same
    # names, same keys, the same weights as on the bare model)
    model, _ = unwrap(model)
    check_materialized(model, "lsuv", lazy_ok=True)  # lazy layers get their shapes in pass 1
    check_unsharded(model, "lsuv")
    seed = check_seed(seed, "lsuv", allow_none=True)
    target = check_finite_positive("target_std", target_std)
    tol = check_finite_positive("tol", tol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if verify not in (True, False, "auto") or (verify is not True and verify == 1):
        raise ValueError(f"verify must be True, False or 'auto', got {verify!r}")
    custom: dict[type, LayerRule] = {}
    for t, r in (custom_layers or {}).items():
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise TypeError(f"custom_layers keys must be nn.Module types, got {t!r}")
        custom[t] = LayerRule(r) if isinstance(r, str) else r
        if not isinstance(custom[t], LayerRule):
            raise TypeError(f"custom_layers values must be LayerRule or str, got {r!r}")
    args, kwargs = call_args(inputs, input_fn, verb="lsuv")
    if any(isinstance(t, torch.Tensor) for t in (*args, *kwargs.values())):
        check_batched_inputs(args if args else kwargs, "lsuv")
    _check_inputs(args, kwargs, sequence_first(model))
    parametrized: list[str] = []
    units = _select(_discover(model, custom, parametrized), only)
    if parametrized:
        warnings.warn(
            f"lsuv: left untouched ({', '.join(parametrized)}): parametrized layers (rescale "
            "before applying weight_norm/spectral_norm-style parametrizations) and weights tied "
            "to an embedding table are not calibrated",
            InitwiseWarning,
            stacklevel=2,
        )
    uncalibrated = _uncovered(model, units, parametrized, only)
    if uncalibrated:
        warnings.warn(
            f"lsuv: not calibrated ({'; '.join(uncalibrated[:5])}"
            f"{f'; and {len(uncalibrated) - 5} more' if len(uncalibrated) > 5 else ''})",
            InitwiseWarning,
            stacklevel=2,
        )
    if not units:
        raise ValueError(f"lsuv: no layer to calibrate in {type(model).__name__}")

    run = _Run(model, units, target=target, tol=tol, include_bias=include_bias,
               orthogonal_first=orthogonal_first, zero_bias=zero_bias, seed=seed,
               progress=progress)  # fmt: skip
    # modes and buffers (a forward that re-assigns a buffer gets the original object back)
    state = ModelState(model, grads=False)
    eager = contextlib.ExitStack()
    handles: list[Any] = []
    converged = False
    verified = True
    missing: list[str] = []
    try:
        eager.enter_context(suspend_in_place_compile(model))
        for m in model.modules():
            if isinstance(m, _NO_FASTPATH):
                m.training = True
            elif not isinstance(m, _KEEP_MODE):
                m.training = False
        prove = verify is not True
        watch = run.proof_begin() if prove else None  # before install(): sees foreign hooks
        handles = run.install()
        run.prepare()

        def forward() -> Any:
            try:
                return model(*args, **kwargs)
            except LSUVError:
                raise
            except Exception as err:
                last = run.last_visited
                where = f" after layer {last!r}" if last else " before the first calibrated layer"
                raise LSUVError(
                    f"lsuv: the model's forward pass {run.pass_index} failed{where}: "
                    f"{type(err).__name__}: {err}",
                    last,
                ) from err

        with torch.no_grad():
            for _ in range(max_iter):
                if run.pass_index == 0 and watch is not None:
                    run.watching = True
                    try:
                        with watch:
                            run.run_pass(forward)
                    finally:
                        run.watching = False
                else:
                    run.run_pass(forward)
                if run.pass_index == 1:
                    missing = [u.weight.name for u in units if not u.weight.preinit_done]
                    if prove:
                        run.proof_end()
                        if verify is False or not run.reasons:
                            converged, verified = True, False  # rows: the corrected outputs
                            break
                if run.pass_index > 1 and run.corrections == 0:
                    converged = True
                    break
            if not converged:
                saved_tol, run.tol = run.tol, math.inf  # measure only
                run.run_pass(forward)
                run.tol = saved_tol
    except BaseException:
        run.restore_params()
        raise
    finally:
        for h in handles:
            h.remove()
        state.restore()
        eager.close()
        torch.clear_autocast_cache()

    rows: list[LSUVLayer] = []
    errors: list[float] = []
    scales = {u.weight.name: u.weight for u in units}
    for key in run.order:
        module, kind, before, after, normalized = run.rows[key]
        w = scales[key[0]]
        rows.append(LSUVLayer(key[0], module, kind, key[1], key[1] == 0, before, after,
                              w.scale, w.iterations, normalized))  # fmt: skip
        if key[1] == 0:
            errors.append(abs(after / target - 1.0))
    max_error = max(errors, default=0.0)
    converged = max_error <= tol
    if not converged:
        warnings.warn(
            f"lsuv: not converged after {run.pass_index} passes: max |std/target - 1| = "
            f"{max_error:.3g} > tol {tol:g}",
            InitwiseWarning,
            stacklevel=2,
        )
    if run.nonlinear:
        warnings.warn(f"lsuv: not calibrated ({'; '.join(run.nonlinear.values())})", InitwiseWarning,
                      stacklevel=2)  # fmt: skip
        uncalibrated = [*uncalibrated, *run.nonlinear.values()]
    skipped = sorted(set(missing))
    if skipped:
        logger.info("lsuv: layers never executed, left untouched: %s", ", ".join(skipped))
    report = LSUVReport(rows, run.pass_index, target, tol, include_bias, converged, max_error,
                        skipped, parametrized, verified, list(run.reasons), uncalibrated)  # fmt: skip
    logger.info("%s", report)
    return report

