"""Learning-rate transfer: sweep a learning-rate grid over widths (and depths) per parametrization.

Yang et al., "Tensor Programs V" (2022), Fig. 1: under the standard parametrization (SP) the
learning rate that trains a network best moves as the network gets wider, so a rate tuned on a
small model is wrong for a large one; under muP it stays put. Dey et al. (2025, CompleteP) show
the same for depth: muP's optimum moves with the number of residual blocks, CompleteP's does
not.

``initwise compare`` runs this when ``CompareConfig.lrs`` is set (``--lrs``, or the presets
``lr-transfer`` and ``lr-transfer-depth``): every (seed, depth, width, parametrization, lr) is
one run. The model is built as for any compare run (same seed per cell), parametrized with
``initwise.parametrize(model, name, base=<the model at base width and depth, on meta>)``,
initialized with the run's seed and trained with the parametrization's parameter groups. The
quantity is the loss on the whole training split after training (Tensor Programs V plots the
training loss); a diverged run counts as infinitely bad. The optimum of a curve is the grid
point of lowest loss (mean over seeds), and the *shift* of a parametrization is how many grid
steps its optimum moves from the smallest to the largest width (or depth).

Runs are independent and seeded from their own coordinates, so ``--jobs N`` gives the same
numbers as a serial run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, cast

import numpy as np
import torch

from .models import build_model, check_output
from .run import (
    Callback,
    CompareConfig,
    CompareResult,
    _load_data,
    _on_device,
    dist_env,
    environment,
    run_spawned,
)
from .train import RunResult, evaluate, evaluate_regression, loss_function, train_one

__all__ = ["TRANSFER_FIGURES", "is_transfer", "run_transfer", "transfer_figures",
           "transfer_rows", "transfer_summary", "transfer_takeaway"]

TransferJob = tuple[int, int, int, str, float]  # (seed, depth, width, parametrization, lr)
TRANSFER_FIGURES = ("lr_transfer.png", "lr_transfer_depth.png")


def is_transfer(result: CompareResult | dict[str, Any]) -> bool:
    """Whether a result (or its config dict) is a learning-rate transfer sweep."""
    c = result.config if isinstance(result, CompareResult) else result
    return bool(c.get("lrs"))


def transfer_jobs(config: CompareConfig) -> list[TransferJob]:
    """Every run in serial order: seeds, widths, depths, parametrizations, then learning rates."""
    assert config.lrs is not None
    return [(seed, d, w, p, lr) for seed in range(config.seeds) for w in config.widths
            for d in config.depths for p in config.parametrizations for lr in config.lrs]


def base_shape(config: CompareConfig) -> tuple[int, int]:
    """``(base width, base depth)``: the config's, or the smallest width and depth swept."""
    return (config.base_width if config.base_width is not None else min(config.widths),
            config.base_depth if config.base_depth is not None else min(config.depths))


def _cost(config: CompareConfig, depth: int, width: int) -> float:
    return float(config.epochs) * (depth + 2.0) * (1.0 + width / 256.0)


def _one_transfer(config: CompareConfig, data: Any, job: TransferJob) -> RunResult:
    """Build, parametrize, init and train one run; failures are recorded, not raised."""
    import initwise

    seed, depth, width, name, lr = job
    t0 = time.perf_counter()
    tcfg = config.train_config()
    tcfg.lr = lr
    bw, bd = base_shape(config)
    try:
        torch.manual_seed(seed * 7919 + depth * 31 + width)
        model = build_model(config.arch, data.in_shape, data.n_classes, depth=depth,
                            width=width, activation=config.activation, norm=config.norm)
        with torch.device("meta"):
            base = build_model(config.arch, data.in_shape, data.n_classes, depth=bd, width=bw,
                               activation=config.activation, norm=config.norm)
        p = initwise.parametrize(model, name, base=base)
        p.init(seed=seed)
        groups = p.param_groups(lr=lr, optimizer=cast(Any, config.optimizer))
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        r = RunResult(name, depth, seed, math.nan, math.nan, math.nan, False, None, None, 0,
                      time.perf_counter() - t0, width=width, error=f"{type(e).__name__}: {e}",
                      error_stage="init", lr=lr)
        return r
    try:
        dev = config.device
        res = train_one(model.to(dev), _on_device(data, dev), tcfg, scheme=name, depth=depth,
                        seed=seed, params=groups)
        if res.diverged:
            final = math.inf
        elif config.task == "regression":
            final = evaluate_regression(model, data.x_train.to(dev), data.y_train.to(dev))[1]
        else:
            loss = config.resolved_loss()
            final = evaluate(model, data.x_train.to(dev), data.y_train.to(dev),
                             loss_fn=None if loss == "cross_entropy"
                             else loss_function(config.task, loss))[1]
    except Exception as e:  # one failing run must not lose the others
        return RunResult(name, depth, seed, math.nan, math.nan, math.nan, False, None, None, 0,
                         time.perf_counter() - t0, width=width,
                         error=f"{type(e).__name__}: {e}", error_stage="train", lr=lr)
    finally:
        p.remove()
    res.width, res.lr = width, lr
    res.train_split_loss = final if math.isfinite(final) else math.inf
    res.time_s = time.perf_counter() - t0
    return res



_WORKER: dict[str, Any] = {}


def _worker_init(config: CompareConfig, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _WORKER.update(config=config, data={})


def _worker_run(item: tuple[int, TransferJob]) -> tuple[int, RunResult]:
    i, job = item
    config = _WORKER["config"]
    cache = _WORKER["data"]
    if job[0] not in cache:
        cache[job[0]] = _load_data(config, seed=job[0])
    return i, _one_transfer(config, cache[job[0]], job)


def _execute(config: CompareConfig, todo: list[tuple[int, TransferJob]], threads: int,
             on_result: Callable[[int, RunResult], None]) -> None:
    """Run ``todo`` serially or in ``config.jobs`` spawned worker processes (same numbers)."""
    if config.jobs <= 1 or len(todo) <= 1:
        cache: dict[int, Any] = {}
        for i, job in todo:
            if job[0] not in cache:
                cache[job[0]] = _load_data(config, seed=job[0])
            on_result(i, _one_transfer(config, cache[job[0]], job))
        return
    order = sorted(todo, key=lambda t: -_cost(config, t[1][1], t[1][2]))
    run_spawned(config.jobs, order, _worker_run, _worker_init, (config, threads), on_result)


def run_transfer(config: CompareConfig, *, callback: Callback | None = None,
                 command: list[str] | None = None,
                 previous: dict[str, Any] | None = None) -> CompareResult:
    """Run the learning-rate transfer sweep of ``config`` (``config.lrs`` set; validated).

    Returns a :class:`CompareResult` whose ``runs`` carry ``lr`` and ``train_split_loss`` and
    whose ``summary`` is :func:`transfer_summary`. ``callback`` gets the same events as
    :func:`~initwise.compare.run.run_compare`'s. ``KeyboardInterrupt`` returns a partial result.
    """
    if previous is not None:
        raise ValueError("--resume is not supported for a learning-rate sweep (--lrs); "
                         "rerun it without --resume")
    if dist_env()[1] > 1:
        raise ValueError("a learning-rate sweep (--lrs) runs in one process; use --jobs N "
                         "instead of torchrun")
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    threads = config.threads or old_threads
    jobs = transfer_jobs(config)
    data = _load_data(config, seed=0)
    info = data.describe()
    bw, bd = base_shape(config)
    for d, w in dict.fromkeys((j[1], j[2]) for j in jobs):  # fail fast on a bad architecture
        check_output(build_model(config.arch, data.in_shape, data.n_classes, depth=d, width=w,
                                 activation=config.activation, norm=config.norm),
                     data.x_train[:2], data.n_classes, config.arch,
                     regression=config.task == "regression")
    with torch.device("meta"):
        build_model(config.arch, data.in_shape, data.n_classes, depth=bd, width=bw,
                    activation=config.activation, norm=config.norm)
    total_cost = sum(_cost(config, j[1], j[2]) for j in jobs) or 1.0
    done: dict[int, RunResult] = {}
    state = {"cost": 0.0}

    def on_result(i: int, run: RunResult) -> None:
        done[i] = run
        state["cost"] += _cost(config, run.depth, run.width)
        if callback is not None:
            now = time.perf_counter()
            callback({"done": len(done), "total": len(jobs), "elapsed_s": now - t0,
                      "eta_s": (now - t_runs) * (total_cost - state["cost"]) / state["cost"],
                      "run": run})

    partial = False
    torch.set_num_threads(threads)
    t_runs = time.perf_counter()  # the rate of the runs, without the set-up before them
    try:
        _execute(config, list(enumerate(jobs)), threads, on_result)
    except KeyboardInterrupt:
        partial = True
    finally:
        torch.set_num_threads(old_threads)
    runs = [done[i] for i in sorted(done)]
    env = environment()
    env["torch_threads"] = threads
    return CompareResult(asdict(config), runs, transfer_summary(runs, config), info, env,
                         partial=partial or len(runs) < len(jobs), total_runs=len(jobs),
                         wall_time_s=time.perf_counter() - t0,
                         command=command if command is not None else list(sys.argv))


# ----------------------------------------------------------------------------- summary


def _loss(r: RunResult) -> float:
    if r.error is not None or r.train_split_loss is None:
        return math.nan
    return float(r.train_split_loss)


def transfer_summary(runs: list[RunResult], config: CompareConfig | dict[str, Any]
                     ) -> list[dict[str, Any]]:
    """One curve per (parametrization, depth, width): mean loss per learning rate and optimum.

    A curve is a dict ``{"kind": "curve", "parametrization", "depth", "width", "lrs", "loss",
    "seeds", "best_lr", "best_index"}`` (``loss`` None where no run finished; a diverged run
    is ``inf`` and makes its grid point's mean ``inf``). Then one ``{"kind": "shift", ...}``
    per parametrization and fixed depth (``axis: "width"``) or fixed width (``axis:
    "depth"``): ``from``/``to`` the smallest and largest size, their optimal learning rates,
    and ``steps``, the number of grid steps between them (signed: negative when the optimum
    falls as the size grows).
    """
    c = asdict(config) if isinstance(config, CompareConfig) else config
    lrs = [float(x) for x in c["lrs"]]
    out: list[dict[str, Any]] = []
    curves: dict[tuple[str, int, int], dict[str, Any]] = {}
    for p in c["parametrizations"]:
        for d in c["depths"]:
            for w in c["widths"]:
                vals, seeds = [], []
                for lr in lrs:
                    rs = [r for r in runs if r.scheme == p and r.depth == d and r.width == w
                          and r.lr == lr]
                    ls = [_loss(r) for r in rs]
                    ls = [x for x in ls if not math.isnan(x)]
                    vals.append(float(np.mean(ls)) if ls else None)
                    seeds.append(len(ls))
                finite = [(v, i) for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
                best = min(finite)[1] if finite else None
                cur = {"kind": "curve", "parametrization": p, "depth": d, "width": w,
                       "lrs": lrs, "loss": vals, "seeds": seeds,
                       "best_index": best, "best_lr": None if best is None else lrs[best]}
                curves[(p, d, w)] = cur
                out.append(cur)
    ws, ds = sorted(c["widths"]), sorted(c["depths"])
    for p in c["parametrizations"]:
        if len(ws) > 1:
            for d in ds:
                out.append(_shift(p, "width", d, curves[(p, d, ws[0])], curves[(p, d, ws[-1])],
                                  ws[0], ws[-1]))
        if len(ds) > 1:
            for w in ws:
                out.append(_shift(p, "depth", w, curves[(p, ds[0], w)], curves[(p, ds[-1], w)],
                                  ds[0], ds[-1]))
    return out


def _shift(p: str, axis: str, at: int, a: dict[str, Any], b: dict[str, Any], lo: int,
           hi: int) -> dict[str, Any]:
    ia, ib = a["best_index"], b["best_index"]
    lrs = a["lrs"]
    # An optimum at the smallest or largest learning rate of the grid is only a bound: the
    # loss may keep falling beyond it, so the shift measured there may be too small.
    ends = ({min(lrs), max(lrs)} if len(lrs) > 1 else set())
    at_end = [size for size, cur in ((lo, a), (hi, b)) if cur["best_lr"] in ends]
    return {"kind": "shift", "parametrization": p, "axis": axis, "at": at, "from": lo,
            "to": hi, "best_lr_from": a["best_lr"], "best_lr_to": b["best_lr"],
            "steps": None if ia is None or ib is None else ib - ia, "at_grid_end": at_end}


def transfer_takeaway(result: CompareResult) -> str:
    """One sentence per sweep: how far each parametrization's optimum moved."""
    parts = []
    for s in result.summary:
        if s.get("kind") != "shift":
            continue
        fixed = "depth" if s["axis"] == "width" else "width"
        if s["steps"] is None:
            moved = "has no finished optimum"
        else:
            moved = (f"moves {abs(s['steps'])} grid step{'s' if abs(s['steps']) != 1 else ''}"
                     f" ({s['best_lr_from']:.3g} → {s['best_lr_to']:.3g})")
        part = (f"{s['parametrization']}: the best learning rate {moved} from "
                f"{s['axis']} {s['from']} to {s['to']} ({fixed} {s['at']})")
        edge = s.get("at_grid_end") or []
        if s["steps"] is not None and edge:
            part += (f", but at {s['axis']} {' and '.join(map(str, edge))} it is an end of the "
                     "learning-rate grid, so the optimum may lie beyond it and the shift is "
                     "not measured (extend --lrs)")
        parts.append(part)
    if not parts:
        return "Learning-rate sweep: one width and one depth, so nothing to transfer."
    return "; ".join(parts) + "."


def transfer_rows(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """The table of the report: per curve, the loss at each learning rate, the optimum bold."""
    c = result.config
    head = ["parametrization", "depth", "width", *[f"{lr:.3g}" for lr in c["lrs"]], "best lr"]
    rows = []
    for s in result.summary:
        if s.get("kind") != "curve":
            continue
        cells = []
        for i, v in enumerate(s["loss"]):
            txt = "-" if v is None else "diverged" if not math.isfinite(v) else f"{v:.3f}"
            cells.append(f"**{txt}**" if i == s["best_index"] else txt)
        rows.append([s["parametrization"], str(s["depth"]), str(s["width"]), *cells,
                     "-" if s["best_lr"] is None else f"{s['best_lr']:.3g}"])
    return head, rows


def format_transfer_summary(result: CompareResult) -> str:
    """The terminal summary of a learning-rate sweep: optimum per curve, then the shifts."""
    lines = [f"{'parametrization':<16} {'depth':>5} {'width':>6}  best lr   loss"]
    for s in result.summary:
        if s.get("kind") == "curve":
            i = s["best_index"]
            lines.append(f"{s['parametrization']:<16} {s['depth']:>5} {s['width']:>6}  "
                         + ("-" if i is None else f"{s['best_lr']:<8.3g}  {s['loss'][i]:.4f}"))
    lines += ["", transfer_takeaway(result)]
    if result.partial:
        lines.append(f"PARTIAL: interrupted after {len(result.runs)}/{result.total_runs} runs")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def _viridis(k: int, n: int) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"](0.1 + 0.8 * (k / max(n - 1, 1)))


def transfer_figures(result: CompareResult, out: str) -> list[str]:
    """Draw ``lr_transfer.png`` (loss against learning rate, one line per width, one panel
    per parametrization and depth) and, with several depths, ``lr_transfer_depth.png`` (one
    line per depth); each curve's optimum is marked. Returns the names written."""
    import os

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = result.config
    curves = [s for s in result.summary if s.get("kind") == "curve"]
    ps, ws, ds = list(c["parametrizations"]), sorted(c["widths"]), sorted(c["depths"])
    made = []
    sweeps: list[tuple[str, str, list[int], list[int]]] = []
    if len(ws) > 1:
        sweeps.append((TRANSFER_FIGURES[0], "width", ws, ds))
    if len(ds) > 1:
        sweeps.append((TRANSFER_FIGURES[1], "depth", ds, ws))
    if not sweeps:
        sweeps.append((TRANSFER_FIGURES[0], "width", ws, ds))
    finite = [v for s in curves for v in s["loss"] if v is not None and math.isfinite(v)]
    if not finite:
        return []
    lo = min(finite)
    first = [s["loss"][0] for s in curves if s["loss"][0] is not None
             and math.isfinite(s["loss"][0])]
    hi = max(first) * 1.15 if first else max(finite)
    for name, axis, sizes, fixed in sweeps:
        fig = Figure(figsize=(4.2 * len(ps) + 1.2, 3.3 * len(fixed) + 0.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(fixed), len(ps), sharex=True, sharey=True, squeeze=False)
        for row, f in enumerate(fixed):
            for col, p in enumerate(ps):
                ax = axes[row][col]
                for k, size in enumerate(sizes):
                    key = (p, f, size) if axis == "width" else (p, size, f)
                    s = next((x for x in curves if (x["parametrization"], x["depth"],
                                                    x["width"]) == key), None)
                    if s is None:
                        continue
                    y = [math.nan if v is None else min(v, hi) for v in s["loss"]]
                    color = _viridis(k, len(sizes))
                    ax.plot(s["lrs"], y, marker="o", ms=3, lw=1.4, color=color,
                            label=f"{axis} {size}")
                    if s["best_index"] is not None:
                        i = s["best_index"]
                        ax.plot([s["lrs"][i]], [s["loss"][i]], marker="*", ms=13, color=color,
                                markeredgecolor="black", markeredgewidth=0.6, zorder=5)
                ax.set_xscale("log", base=2)
                if lo > 0:
                    ax.set_yscale("log")
                ax.set_ylim(lo * 0.8 if lo > 0 else lo, hi)
                ax.grid(alpha=0.3, which="both")
                other = "depth" if axis == "width" else "width"
                ax.set_title(f"{p} ({other} {f})", fontsize=10)
                if row == len(fixed) - 1:
                    ax.set_xlabel("learning rate")
                if col == 0:
                    ax.set_ylabel("training loss after training")
        axes[0][-1].legend(fontsize=8, loc="upper right")
        fig.suptitle(f"learning-rate transfer across {axis} (★: each {axis}'s best rate)",
                     fontsize=11)
        fig.savefig(os.path.join(out, name), dpi=100, format="png")
        made.append(name)
    return made


TRANSFER_CAPTIONS = {
    "lr_transfer.png": "Training loss after training (log scale) against the learning rate "
                       "(log scale), "
                       "one line per width (darker: narrower), one panel per parametrization. "
                       "★ marks each width's best learning rate: under a parametrization that "
                       "transfers the stars line up vertically (Tensor Programs V, Fig. 1). "
                       "Diverged runs are drawn at the top edge.",
    "lr_transfer_depth.png": "The same against depth: one line per depth (darker: shallower). "
                             "Under CompleteP the best rate stays put as blocks are added "
                             "(Dey et al. 2025).",
}
