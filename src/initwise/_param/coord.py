"""The coordinate check of Tensor Programs V: layer sizes during training, across widths.

Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer" (2022), section 7 and Fig. 5: build the model at several widths, train each for a
few steps on one fixed batch, and record after every step the size of each layer's output
(mean ``|x|`` of its coordinates). Under a parametrization that transfers (muP) every curve is
flat in width; under the standard parametrization the layers after the first blow up with
width once training moves the weights (Adam's update of a width-``n`` matrix changes its
outputs by O(n) per step). A layer whose log-log slope against width stays below
``flat_slope`` at every step after the first update is ``flat``.

The default ``flat_slope`` is 0.2: over a 32x width range (64 to 2048) a flat layer changes by
at most 2x (``32 ** 0.2 = 2``); the standard parametrization's hidden layers grow with slopes
of 0.5 to 1 under Adam (see docs/coord_check.md for measured figures).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from .._checks import check_choice, check_finite_positive, check_seed, raise_unknown
from .._math import json_finite, loglog_slope
from .._modules import unwrap
from .._session import call_args, primary_output, suspend_in_place_compile
from .api import parametrize

__all__ = ["FLAT_SLOPE", "CoordCheckReport", "CoordMeasurement", "CoordProgress", "CoordRow",
           "coord_check", "coord_plot", "loglog_slope"]

#: ``|slope|`` below which a layer is called flat (32x the width moves it by at most 2x).
FLAT_SLOPE = 0.2

CoordOptimizer = Literal["adam", "adamw", "sgd"]
CoordVerdict = Literal["flat", "grows", "shrinks", "unknown"]
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")
_OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def _verdict(slopes: Sequence[float], flat_slope: float) -> CoordVerdict:
    finite = [s for s in slopes if math.isfinite(s)]
    if not finite or len(finite) < len(slopes):
        return "unknown"
    worst = max(finite, key=abs)
    if abs(worst) < flat_slope:
        return "flat"
    return "grows" if worst > 0 else "shrinks"


@dataclass(frozen=True)
class CoordMeasurement:
    """One model (one width and depth): mean ``|x|`` of each layer's output at steps 0..T.

    ``sizes[layer][t]`` is measured on the fixed batch after ``t`` optimizer steps;
    ``loss[t]`` is the loss of that forward pass. ``diverged`` is set when the loss stopped
    being finite (the later steps are then missing).
    """

    width: int
    depth: int | None
    sizes: dict[str, list[float]]
    loss: list[float]
    diverged: bool = False


@dataclass(frozen=True)
class CoordRow:
    """One layer at one step: its size across the swept widths (or depths) and the slope.

    ``axis`` is what varies (``"width"`` or ``"depth"``); ``at`` is what is held fixed (the
    depth of a width sweep, ``None`` without depths; the width of a depth sweep). ``ratio`` is
    the last value over the first (largest over smallest width).
    """

    layer: str
    type: str
    step: int
    axis: Literal["width", "depth"]
    at: int | None
    sizes: list[int]
    values: list[float]
    slope: float
    flat: bool

    @property
    def ratio(self) -> float:
        """Value at the largest size over the value at the smallest."""
        a, b = self.values[0], self.values[-1]
        return b / a if a and math.isfinite(a) and math.isfinite(b) else math.nan


@dataclass(frozen=True)
class CoordProgress:
    """What ``coord_check``'s ``progress`` callback receives after each model is trained."""

    done: int
    total: int
    width: int
    depth: int | None
    elapsed_s: float


@dataclass
class CoordCheckReport:
    """The result of :func:`coord_check`: raw measurements, rows with slopes, verdicts.

    ``layers`` lists the layers measured at every width (and depth), in forward order, and
    ``types`` their module classes. ``rows`` holds one :class:`CoordRow` per layer, step and
    sweep. :meth:`verdict` says per layer whether its size is ``flat``, ``grows`` or
    ``shrinks`` along an axis (the worst step decides).
    """

    parametrization: str | None
    widths: list[int]
    depths: list[int] | None
    base_width: int | None
    base_depth: int | None
    steps: int
    optimizer: str
    lr: float
    seed: int
    flat_slope: float
    layers: list[str]
    types: dict[str, str]
    measurements: list[CoordMeasurement]
    rows: list[CoordRow] = field(default_factory=list)
    seeds: int = 1  # sizes and losses are means over seeds seed .. seed + seeds - 1

    def __post_init__(self) -> None:
        if not self.rows:
            self.rows = _rows(self)

    # ------------------------------------------------------------------ queries
    def measurement(self, width: int, depth: int | None = None) -> CoordMeasurement:
        """Return the measurement of the model at ``width`` (and ``depth``)."""
        for m in self.measurements:
            if m.width == width and m.depth == depth:
                return m
        raise KeyError(f"no measurement at width={width}, depth={depth}; measured: "
                       f"{[(m.width, m.depth) for m in self.measurements]}")

    def row(self, layer: str, step: int, *, axis: Literal["width", "depth"] = "width",
            at: int | None = None) -> CoordRow:
        """Return the row of ``layer`` at ``step`` along ``axis`` (``at``: the fixed depth or
        width; by default the first depth of a width sweep, the largest width of a depth
        sweep)."""
        if at is None:
            at = (self.depths[0] if self.depths else None) if axis == "width" else self.widths[-1]
        for r in self.rows:
            if r.layer == layer and r.step == step and r.axis == axis and r.at == at:
                return r
        if layer not in self.layers:
            raise_unknown("layer", layer, self.layers, limit=20)
        raise KeyError(f"no {axis} row for layer {layer!r} at step {step} (at={at})")

    def slopes(self, layer: str, *, axis: Literal["width", "depth"] = "width",
               at: int | None = None) -> list[float]:
        """Return the log-log slope of ``layer`` at each step 0..steps."""
        return [self.row(layer, t, axis=axis, at=at).slope for t in range(self.steps + 1)]

    def verdict(self, layer: str, *, axis: Literal["width", "depth"] = "width") -> CoordVerdict:
        """Return ``flat`` when ``|slope| < flat_slope`` at every step 1..steps (and every
        fixed depth or width), else ``grows`` / ``shrinks`` by the sign of the steepest slope;
        ``unknown`` when a slope is undefined (a diverged run, a zero output).

        Step 0 (the init) is measured and plotted but does not count: muP's readout is
        deliberately ``O(1/sqrt(width))`` at init and becomes ``O(1)`` with the first update.
        """
        rows = [r for r in self.rows if r.layer == layer and r.axis == axis and r.step >= 1]
        if not rows:
            if layer not in self.layers:
                    raise_unknown("layer", layer, self.layers, limit=20)
            return "unknown"
        return _verdict([r.slope for r in rows], self.flat_slope)

    def verdicts(self, *, axis: Literal["width", "depth"] = "width") -> dict[str, CoordVerdict]:
        """Return :meth:`verdict` of every layer, in forward order."""
        have = {r.layer for r in self.rows if r.axis == axis}
        return {name: self.verdict(name, axis=axis) for name in self.layers if name in have}

    @property
    def ok(self) -> bool:
        """Whether every layer is flat in width (at every swept depth).

        Depth verdicts are read per layer (:meth:`verdicts` with ``axis="depth"``): under
        CompleteP or Depth-muP a residual branch's output is *meant* to shrink with depth
        (its multiplier is ``L^-alpha``), while the residual stream (a block's output) and
        the model's output should be flat.
        """
        return all(v == "flat" for v in self.verdicts(axis="width").values())

    def table(self, *, step: int | None = None) -> str:
        """Return a plain-text table: per layer, the width slope at ``step`` (default: the
        last), the ratio largest/smallest width there, the steepest slope over steps
        1..steps (what the verdict judges) and the verdict."""
        t = self.steps if step is None else step
        lines = [f"coord check ({self.parametrization or 'as built'}, {self.optimizer} "
                 f"lr {self.lr:g}, widths {self.widths[0]}..{self.widths[-1]}, step {t}"
                 + (f", mean of {self.seeds} seeds)" if self.seeds > 1 else ")"),
                 f"{'layer':<28} {'type':<14} {'slope':>7} {'ratio':>8} {'worst':>7}  verdict"]
        for name in self.layers:
            try:
                r = self.row(name, t)
            except KeyError:
                continue
            judged = [x.slope for x in self.rows if x.layer == name and x.axis == "width"
                      and x.step >= 1 and math.isfinite(x.slope)]
            worst = max(judged, key=abs) if judged else math.nan
            lines.append(f"{name[:28]:<28} {self.types.get(name, '')[:14]:<14} "
                         f"{r.slope:7.3f} {r.ratio:8.3g} {worst:7.3f}  {self.verdict(name)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (non-finite floats as ``None``); rows included for reading."""
        d = asdict(self)
        return cast(dict[str, Any], json_finite(d))

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_dict` as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoordCheckReport:
        """Rebuild a report from :meth:`to_dict`'s output (rows are recomputed)."""
        ms = [CoordMeasurement(width=int(m["width"]),
                               depth=None if m["depth"] is None else int(m["depth"]),
                               sizes={k: [_nan(v) for v in vs] for k, vs in m["sizes"].items()},
                               loss=[_nan(v) for v in m["loss"]],
                               diverged=bool(m.get("diverged", False)))
              for m in d["measurements"]]
        return cls(parametrization=d["parametrization"], widths=[int(w) for w in d["widths"]],
                   depths=None if d["depths"] is None else [int(x) for x in d["depths"]],
                   base_width=d["base_width"], base_depth=d["base_depth"],
                   steps=int(d["steps"]), optimizer=str(d["optimizer"]), lr=float(d["lr"]),
                   seed=int(d["seed"]), flat_slope=float(d["flat_slope"]),
                   layers=list(d["layers"]), types=dict(d["types"]), measurements=ms,
                   seeds=int(d.get("seeds", 1)))

    @classmethod
    def from_json(cls, s: str) -> CoordCheckReport:
        """Rebuild a report from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(s))

    def plot(self, path: str | None = None, **kwargs: Any) -> Any:
        """Draw the report with :func:`coord_plot` (saved to ``path`` when given)."""
        return coord_plot(self, path, **kwargs)


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)



def _rows(rep: CoordCheckReport) -> list[CoordRow]:
    rows: list[CoordRow] = []
    depths: list[int | None] = list(rep.depths) if rep.depths else [None]
    by = {(m.width, m.depth): m for m in rep.measurements}

    def sweep(name: str, typ: str, t: int, axis: Literal["width", "depth"], fixed: int | None,
              xs: list[int], keys: list[tuple[int, int | None]]) -> None:
        ms = [by.get(k) for k in keys]
        if any(m is None or name not in m.sizes for m in ms):
            return
        vals = [_at(m.sizes[name], t) for m in ms if m is not None]
        s = loglog_slope(xs, vals)
        rows.append(CoordRow(name, typ, t, axis, fixed, list(xs), vals, s,
                             math.isfinite(s) and abs(s) < rep.flat_slope))

    for name in rep.layers:
        typ = rep.types.get(name, "")
        for t in range(rep.steps + 1):
            for d in depths:  # width sweeps, one per depth
                sweep(name, typ, t, "width", d, rep.widths, [(w, d) for w in rep.widths])
            if rep.depths and len(rep.depths) > 1:
                for w in rep.widths:  # depth sweeps, one per width
                    sweep(name, typ, t, "depth", w, rep.depths, [(w, d) for d in rep.depths])
    return rows


def _at(values: list[float], t: int) -> float:
    return values[t] if t < len(values) else math.nan


# ----------------------------------------------------------------------------- running


def _default_loss(out: Any, targets: torch.Tensor | None) -> torch.Tensor:
    if targets is None:
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if isinstance(loss, torch.Tensor):
            return loss
        raise ValueError("coord_check: pass targets= (class indices or real targets) or loss= "
                         "(a callable); the model's output has no 'loss' to train on")
    y = primary_output(out)
    if y is None:
        raise ValueError("coord_check: the model's output holds no floating tensor to train on; "
                         "pass loss=")
    if not targets.is_floating_point():
        return nn.functional.cross_entropy(y.reshape(-1, y.shape[-1]).float(),
                                           targets.reshape(-1))
    return nn.functional.mse_loss(y.float(), targets.float())


class _Recorder:
    """Forward hooks on every submodule (leaves and containers such as residual blocks, whose
    output is the residual stream): mean ``|x|`` of its output, by module name."""

    def __init__(self, model: nn.Module) -> None:
        self.sizes: dict[str, float] = {}
        self.order: list[str] = []
        self.types: dict[str, str] = {}
        self.handles = []
        self.calls: dict[str, int] = {}
        for name, m in model.named_modules():
            if name:
                self.types[name] = type(m).__name__
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            y = primary_output(out)
            if y is None or y.numel() == 0:
                return
            k = self.calls.get(name, 0)
            self.calls[name] = k + 1
            key = name if k == 0 else f"{name}#{k + 1}"
            if key not in self.sizes:
                self.order.append(key)
                self.types.setdefault(key, self.types[name])
            self.sizes[key] = float(y.detach().abs().double().mean())
        return hook

    def reset(self) -> None:
        self.sizes, self.calls = {}, {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _train_and_measure(model: nn.Module, base: nn.Module | None, *, parametrization: str | None,
                       inputs: Any, targets: torch.Tensor | None,
                       loss: Callable[..., torch.Tensor] | None, steps: int, optimizer: str,
                       lr: float, weight_decay: float, seed: int, width: int, depth: int | None
                       ) -> tuple[CoordMeasurement, list[str], dict[str, str]]:
    handle: Any = None
    if parametrization is None:
        params: Any = list(model.parameters())
        kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    else:
        handle = _parametrize(model, parametrization, base, inputs)
        handle.init(seed=seed)
        params = handle.param_groups(lr=lr, optimizer=optimizer, weight_decay=weight_decay)
        kwargs = {}
    # A torch.compile / DataParallel / DDP wrapper is measured through the module it runs,
    # eagerly (the same math; compiling every width would dominate the time, and the hooks
    # would break the graph), with its own names (no ``_orig_mod.`` / ``module.`` prefix).
    inner, _prefix = unwrap(model)
    try:
        opt = _OPTIMIZER_CLASSES[optimizer](params, **kwargs)
        rec = _Recorder(inner)
        args, kw = call_args(inputs, verb="coord_check")
        sizes: dict[str, list[float]] = {}
        losses: list[float] = []
        diverged = False
        inner.train()
        try:
            with suspend_in_place_compile(inner):
                for t in range(steps + 1):
                    rec.reset()
                    opt.zero_grad(set_to_none=True)
                    out = inner(*args, **kw)
                    value = (_default_loss(out, targets) if loss is None
                             else loss(out, targets) if targets is not None else loss(out))
                    if t == 0:
                        order = list(rec.order)
                    for name in order:
                        sizes.setdefault(name, []).append(rec.sizes.get(name, math.nan))
                    losses.append(float(value.detach()))
                    if not math.isfinite(losses[-1]):
                        diverged = True
                        break
                    if t < steps:
                        value.backward()
                        opt.step()
        finally:
            rec.remove()
    finally:
        if handle is not None:
            handle.remove()
    return (CoordMeasurement(width, depth, sizes, losses, diverged), order,
            {k: rec.types[k] for k in order})


def _mean_over_seeds(runs: list[CoordMeasurement]) -> CoordMeasurement:
    """One measurement whose sizes and losses are the means of ``runs`` (same width/depth).

    A step some run did not reach (it diverged) is NaN in the mean; ``diverged`` if any did.
    """
    if len(runs) == 1:
        return runs[0]
    n = max(len(r.loss) for r in runs)

    def mean(rows: list[list[float]]) -> list[float]:
        out = []
        for t in range(n):
            vals = [r[t] if t < len(r) else math.nan for r in rows]
            out.append(math.fsum(vals) / len(vals))
        return out

    names = list(dict.fromkeys(k for r in runs for k in r.sizes))
    sizes = {k: mean([r.sizes.get(k, []) for r in runs]) for k in names}
    return CoordMeasurement(runs[0].width, runs[0].depth, sizes, mean([r.loss for r in runs]),
                            any(r.diverged for r in runs))


def _parametrize(model: nn.Module, name: str, base: nn.Module | None, inputs: Any = None) -> Any:
    """The one call into the parametrization (``initwise.parametrize``'s contract); the
    batch is its ``example_inputs``, for a model its meta trace cannot run without them (a
    forward that takes labels)."""
    return parametrize(model, name, base=cast(nn.Module, base), example_inputs=inputs)


def _build(factory: Callable[..., nn.Module], width: int, depth: int | None, seed: int,
           *, meta: bool = False) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if meta:
            with torch.device("meta"):
                return factory(width) if depth is None else factory(width, depth)
        return factory(width) if depth is None else factory(width, depth)


def coord_check(
    factory: Callable[..., nn.Module],
    widths: Sequence[int],
    inputs: Any,
    *,
    parametrization: str | None = "mup",
    base_width: int | None = None,
    base_depth: int | None = None,
    steps: int = 4,
    optimizer: CoordOptimizer = "adam",
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    depths: Sequence[int] | None = None,
    targets: torch.Tensor | None = None,
    loss: Callable[..., torch.Tensor] | None = None,
    seed: int = 0,
    seeds: int = 1,
    flat_slope: float = FLAT_SLOPE,
    progress: Callable[[CoordProgress], None] | None = None,
) -> CoordCheckReport:
    """Run the coordinate check of Tensor Programs V on ``factory`` across ``widths``.

    Yang et al., "Tensor Programs V" (2022), Fig. 5. For each width (and depth) the model
    ``factory(width)`` (``factory(width, depth)`` when ``depths`` is given) is built under
    ``torch.manual_seed(seed)`` (the global RNG is left untouched), parametrized with
    ``initwise.parametrize(model, parametrization, base=factory(base_width))`` (the base is
    built on the meta device) and initialized with ``seed``; then it is trained for ``steps``
    optimizer steps on the one fixed batch ``inputs``. Before the first step and after each
    step, forward hooks record the mean ``|x|`` of every submodule's output (named by module
    name; a module called twice gives ``name`` and ``name#2``). Per layer and step, the
    log-log slope against width gives the verdict: ``flat`` when ``|slope| < flat_slope``
    (0.2: 2x over a 32x width range) at every step after the first update (step 0, the init,
    is recorded but not judged: muP's output is meant to vanish there).

    ``parametrization=None`` trains the model as built with one learning rate (the plain
    PyTorch setup), for comparison. A ``torch.compile`` / ``DataParallel`` / DDP wrapper is
    parametrized as given and measured through the module it runs, eagerly (the same math;
    layer names without the wrapper's prefix).

    Args:
        factory: ``width -> model`` (``(width, depth) -> model`` with ``depths``).
        widths: at least two widths, increasing.
        inputs: the fixed batch (a tensor, a tuple of positional inputs or a dict).
        parametrization: ``"mup"``, ``"sp"``, ``"completep"``, ``"spectral"`` or ``None``.
        base_width, base_depth: the base shape (default: the smallest width and depth).
        steps: optimizer steps (the report holds steps 0..steps).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (no momentum).
        lr: the base learning rate (per-layer rates come from the parametrization).
        depths: also sweep depth (``factory(width, depth)``).
        targets: class indices (cross-entropy) or real targets (MSE) for the default loss.
        loss: ``loss(output, targets)`` (or ``loss(output)`` without targets).
        seed: seeds both the construction and the parametrization's init.
        seeds: average over this many seeds (``seed``, ``seed + 1``, ...): each width's mean
            ``|x|`` and loss are the means over the seeds (Tensor Programs V and the ``mup``
            package average several seeds too). A single seed at small widths can read a
            flat layer as growing or shrinking by chance.
        progress: called with a :class:`CoordProgress` after each model.

    >>> def mlp(w):
    ...     return nn.Sequential(nn.Linear(8, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
    ...                          nn.Linear(w, 4))
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(32, 8, generator=g), torch.randint(0, 4, (32,), generator=g)
    >>> rep = coord_check(mlp, [32, 128, 512], x, targets=y, parametrization=None, steps=2)
    >>> rep.verdict("0"), rep.verdict("2")
    ('flat', 'grows')
    """
    ws = [int(w) for w in widths]
    if len(ws) < 2:
        raise ValueError(f"coord_check: widths needs at least two widths, got {ws}")
    if any(w <= 0 for w in ws) or ws != sorted(set(ws)):
        raise ValueError(f"coord_check: widths must be positive and increasing, got {ws}")
    ds: list[int] | None = None
    if depths is not None:
        ds = [int(d) for d in depths]
        if not ds or any(d <= 0 for d in ds) or ds != sorted(set(ds)):
            raise ValueError(f"coord_check: depths must be positive and increasing, got {ds}")
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_finite_positive("lr", lr)
    check_finite_positive("weight_decay", weight_decay, allow_zero=True)
    check_finite_positive("flat_slope", flat_slope)
    seed = cast(int, check_seed(seed, "coord_check", allow_none=False))
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"coord_check: seeds must be an integer >= 1, got {seeds!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"coord_check: steps must be an integer >= 1, got {steps!r}")
    if parametrization is not None and not isinstance(parametrization, str):
        raise TypeError("coord_check: parametrization must be a name such as 'mup' or None, "
                        f"got {type(parametrization).__name__}")
    bw = ws[0] if base_width is None else int(base_width)
    bd = None if ds is None else (ds[0] if base_depth is None else int(base_depth))
    base = None
    if parametrization is not None:
        base = _build(factory, bw, bd, seed, meta=True)
    sweep: list[int | None] = list(ds) if ds else [None]
    grid = [(w, d) for d in sweep for w in ws]
    measurements: list[CoordMeasurement] = []
    layers: list[str] | None = None
    types: dict[str, str] = {}
    t0 = time.perf_counter()
    for i, (w, d) in enumerate(grid):
        runs: list[CoordMeasurement] = []
        for s in range(seed, seed + seeds):
            model = _build(factory, w, d, s)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)  # dropout and the like: the same stream at every width
                m, order, typ = _train_and_measure(
                    model, base, parametrization=parametrization, inputs=inputs, targets=targets,
                    loss=loss, steps=steps, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                    seed=s, width=w, depth=d)
            runs.append(m)
            types.update(typ)
            layers = list(order) if layers is None else layers + [n for n in order if n not in layers]
            del model
        measurements.append(_mean_over_seeds(runs))
        if progress is not None:
            progress(CoordProgress(i + 1, len(grid), w, d, time.perf_counter() - t0))
    return CoordCheckReport(parametrization=parametrization, widths=ws, depths=ds,
                            base_width=bw if parametrization is not None else None,
                            base_depth=bd if parametrization is not None else None,
                            steps=steps, optimizer=optimizer, lr=float(lr), seed=seed,
                            flat_slope=float(flat_slope), layers=layers or [], types=types,
                            measurements=measurements, seeds=seeds)


# ----------------------------------------------------------------------------- plotting

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22"]


def coord_plot(report: CoordCheckReport, path: str | None = None, *,
               layers: Sequence[str] | None = None, axis: Literal["width", "depth"] = "width",
               at: int | None = None, title: str | None = None) -> Any:
    """Draw the coordinate check like Tensor Programs V's Fig. 5: one panel per step.

    x: width (or depth), log scale; y: mean ``|x|`` of each layer's output, log scale; one
    line per layer (``layers``, default every layer). Returns the matplotlib ``Figure``
    (built on the Agg canvas, no pyplot); saves it to ``path`` when given.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("coord_plot needs matplotlib: pip install 'initwise[report]'") from e
    names = list(report.layers if layers is None else layers)
    for name in names:
        if name not in report.layers:
            raise_unknown("layer", name, report.layers, limit=20)
    if at is None:
        at = ((report.depths[0] if report.depths else None) if axis == "width"
              else report.widths[-1])
    n = report.steps + 1
    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(3.0 * ncols + 1.6, 2.7 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    rows = {(r.layer, r.step): r for r in report.rows if r.axis == axis and r.at == at}
    for t in range(nrows * ncols):
        ax = axes[t // ncols][t % ncols]
        if t >= n:
            ax.set_visible(False)
            continue
        for k, name in enumerate(names):
            r = rows.get((name, t))
            if r is None:
                continue
            ax.plot(r.sizes, [v if v > 0 else math.nan for v in r.values], marker="o",
                    ms=3, lw=1.2, color=_COLORS[k % len(_COLORS)],
                    ls="-" if k < len(_COLORS) else "--", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"t = {t}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        if t // ncols == nrows - 1 or t + ncols >= n:
            ax.set_xlabel(axis)
        if t % ncols == 0:
            ax.set_ylabel("mean |x|")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, title="layer")
    fig.suptitle(title or f"coordinate check: {report.parametrization or 'as built'}, "
                 f"{report.optimizer} lr {report.lr:g}"
                 + (f", depth {at}" if axis == "width" and at is not None else "")
                 + (f", width {at}" if axis == "depth" else ""), fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
