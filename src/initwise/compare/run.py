"""Orchestrate a comparison: schemes x depths x widths x seeds, then summarize with statistics.

Within a seed every scheme gets the same data split, the same batch order and the same
freshly constructed architecture (built under the same torch seed); only the init differs.
Seeds are the outer loop, so an interrupted run (Ctrl-C) keeps complete seeds first and the
partial result is still a fair comparison of what finished.

Significance: for each (depth, width) cell the winner is the scheme with the highest mean test
accuracy; it is compared with the runner-up by Welch's two-sided t-test over seeds. The
difference is called significant when p < 0.05 (needs >= 2 seeds per scheme). Every other
scheme is also tested against the winner: ``tied_with_winner`` (p >= 0.05) or ``beats``.
When both groups have exactly zero spread over seeds (e.g. identical accuracies), the test is
undefined: ``p_value`` and ``significant`` stay ``None`` and ``no_seed_spread`` is ``True``.

The batch used to apply data-dependent inits (LSUV, ``auto``) and to audit the network at init
is ``init_batch`` samples drawn by a seeded permutation of the training split (the same batch
for every scheme within a seed), never the first rows, which may all be one class.

A run that raises (in the init, the audit or in training) is recorded with its ``error`` and
the comparison continues.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .data import load_dataset, load_regression_dataset
from .models import build_model
from .schemes import apply_scheme, check_schemes
from .train import RunResult, TrainConfig, _finite, loss_function, train_one

__all__ = ["DEFAULT_LR", "CompareConfig", "CompareResult", "init_batch", "run_compare",
           "summarize", "welch_t_test"]

DEFAULT_SCHEMES: tuple[str, ...] = ("torch", "xavier", "kaiming", "auto", "lsuv", "orthogonal")
#: Learning rate used when ``CompareConfig.lr`` is ``None``, per optimizer.
DEFAULT_LR: dict[str, float] = {"sgd": 0.005, "adam": 0.001}


@dataclass
class CompareConfig:
    """The full configuration of a comparison (JSON-able; enough to rerun it)."""

    dataset: str = "digits"
    arch: str = "mlp"
    depths: list[int] = field(default_factory=lambda: [5, 15, 30])
    widths: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    norm: str = "batch"
    schemes: list[str] = field(default_factory=lambda: list(DEFAULT_SCHEMES))
    seeds: int = 3
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    epochs: int = 10
    batch_size: int | str = 64  # or "full": full-batch gradient descent
    target_accuracy: float = 0.9
    test_fraction: float = 0.2
    init_batch: int = 256
    log_every: int = 5
    grad_every: int = 10
    threads: int | None = 1
    preset: str | None = None
    task: str = "classification"
    loss: str | None = None
    target_loss: float | None = None

    def resolved_lr(self) -> float:
        """Return ``lr``, or the optimizer's default when it is ``None`` (sgd 0.005, adam 0.001).

        Example:
            >>> CompareConfig(optimizer="adam").resolved_lr()
            0.001
        """
        return DEFAULT_LR.get(self.optimizer, DEFAULT_LR["sgd"]) if self.lr is None else self.lr

    def train_config(self) -> TrainConfig:
        """Return the :class:`TrainConfig` part."""
        return TrainConfig(optimizer=self.optimizer,  # type: ignore[arg-type]
                           lr=self.resolved_lr(),
                           momentum=self.momentum, epochs=self.epochs,
                           batch_size=self.batch_size,  # type: ignore[arg-type]
                           target_accuracy=self.target_accuracy,
                           log_every=self.log_every, grad_every=self.grad_every,
                           task=self.task, loss=self.resolved_loss(),
                           target_loss=self.target_loss)

    def resolved_loss(self) -> str:
        """Return ``loss``, or the task's default (cross_entropy; mse for regression)."""
        if self.loss is not None:
            return self.loss
        return "mse" if self.task == "regression" else "cross_entropy"

    def validate(self) -> None:
        """Raise ``ValueError`` for inconsistent settings (before any training starts)."""
        from .._checks import check_choice, check_finite_positive
        from .train import OPTIMIZERS

        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        self.lr = self.resolved_lr()
        check_finite_positive("lr", self.lr)
        check_finite_positive("momentum", self.momentum, allow_zero=True)
        from .train import LOSSES, TASKS

        check_choice("task", self.task, TASKS)
        check_choice("loss", self.resolved_loss(), LOSSES)
        if self.task == "regression" and self.resolved_loss() != "mse":
            raise ValueError("task 'regression' needs loss 'mse'")
        self.loss = self.resolved_loss()
        if self.target_loss is not None:
            check_finite_positive("target_loss", self.target_loss)
        for name in ("epochs", "batch_size", "seeds", "init_batch", "log_every", "grad_every"):
            v = getattr(self, name)
            if name == "batch_size" and v == "full":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("depths", "widths"):
            vals = getattr(self, name)
            if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in vals):
                raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {vals!r}")
            # Repeated values would pool the same runs twice and inflate significance.
            setattr(self, name, list(dict.fromkeys(vals)))
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not 0.0 <= self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in [0, 1], got {self.target_accuracy!r}")
        if self.schemes == list(DEFAULT_SCHEMES):
            # The default list adapts to what this installation provides.
            from .schemes import scheme_names

            self.schemes = [s for s in DEFAULT_SCHEMES if s in scheme_names()]
        self.schemes = check_schemes(self.schemes)


@dataclass
class CompareResult:
    """All runs, their per-cell summary, the configuration and the environment."""

    config: dict[str, Any]
    runs: list[RunResult]
    summary: list[dict[str, Any]]
    dataset: dict[str, Any]
    environment: dict[str, Any]
    partial: bool = False
    total_runs: int = 0
    wall_time_s: float = 0.0
    command: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of everything (non-finite floats become ``None``)."""
        return _finite({"config": self.config, "command": self.command, "partial": self.partial,
                        "completed_runs": len(self.runs), "total_runs": self.total_runs,
                        "wall_time_s": self.wall_time_s, "dataset": self.dataset,
                        "environment": self.environment, "summary": self.summary,
                        "runs": [r.to_dict() for r in self.runs]})


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln) * _betacf(b, a, 1.0 - x) / b


def welch_t_test(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Return ``(t, dof, two-sided p)`` of Welch's unequal-variance t-test of mean(a) vs mean(b).

    Example:
        >>> t, dof, p = welch_t_test([0.9, 0.92, 0.91], [0.1, 0.12, 0.11])
        >>> round(t, 1), p < 1e-4
        (98.0, True)
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least 2 values per group")
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    diff = float(xa.mean() - xb.mean())
    if va + vb == 0.0:
        return (math.copysign(math.inf, diff) if diff else 0.0,
                float(xa.size + xb.size - 2), 0.0 if diff else 1.0)
    t = diff / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    p = _betainc(dof / 2.0, 0.5, dof / (dof + t * t))
    return float(t), float(dof), float(min(max(p, 0.0), 1.0))


def _stats(values: list[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, "std": None, "se": None, "min": None, "max": None}
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"n": int(a.size), "mean": float(a.mean()), "std": std,
            "se": std / math.sqrt(a.size), "min": float(a.min()), "max": float(a.max())}


def _no_spread(a: list[float], b: list[float]) -> bool:
    """True when both groups have no spread but different means (Welch is undefined)."""
    return (float(np.ptp(a)) == 0.0 and float(np.ptp(b)) == 0.0
            and float(np.mean(a)) != float(np.mean(b)))


def summarize(runs: list[RunResult], schemes: list[str], alpha: float = 0.05
              ) -> list[dict[str, Any]]:
    """Summarize runs per (depth, width): per-scheme statistics, winner and significance.

    Each ``(scheme, depth, width, seed)`` counts once (the first run given for it), so
    duplicated runs cannot inflate the number of seeds behind a t-test.
    """
    unique: dict[tuple[str, int, int, int], RunResult] = {}
    for r in runs:
        unique.setdefault((r.scheme, r.depth, r.width, r.seed), r)
    runs = list(unique.values())
    cells = sorted({(r.depth, r.width) for r in runs})
    out = []
    for depth, width in cells:
        per: dict[str, dict[str, Any]] = {}
        accs: dict[str, list[float]] = {}
        for s in schemes:
            rs = [r for r in runs if r.depth == depth and r.width == width and r.scheme == s]
            if not rs:
                continue
            ok = [r for r in rs if r.error is None]
            accs[s] = [r.test_accuracy for r in ok]
            reached = [r.steps_to_target for r in ok if r.steps_to_target is not None]
            reached_loss = [r.steps_to_target_loss for r in ok
                            if r.steps_to_target_loss is not None]
            per[s] = {"test_accuracy": _stats(accs[s]),
                      "final_train_loss": _stats([r.train_loss[-1] for r in ok
                                                  if r.train_loss and not r.diverged]),
                      "steps_to_target": _stats([float(x) for x in reached]),
                      "reached_target": len(reached), "diverged": sum(r.diverged for r in ok),
                      "steps_to_target_loss": _stats([float(x) for x in reached_loss]),
                      "reached_target_loss": len(reached_loss),
                      "errors": [r.error for r in rs if r.error is not None], "runs": len(rs),
                      "init_verdict": next((r.init_scale["verdict"] for r in ok
                                            if "verdict" in r.init_scale), None)}
        ranked = sorted((s for s in accs if accs[s]), key=lambda s: -float(np.mean(accs[s])))
        cell: dict[str, Any] = {"depth": depth, "width": width, "schemes": per,
                                "ranking": ranked, "winner": ranked[0] if ranked else None,
                                "runner_up": None, "margin": None, "p_value": None,
                                "t": None, "significant": None, "no_seed_spread": False,
                                "vs_torch": None}
        if ranked and "torch" in accs and accs["torch"] and ranked[0] != "torch":
            cell["vs_torch"] = float(np.mean(accs[ranked[0]]) - np.mean(accs["torch"]))
        cell["tied_with_winner"], cell["beats"] = [], []
        for other in ranked[1:]:
            if (len(accs[ranked[0]]) >= 2 and len(accs[other]) >= 2
                    and not _no_spread(accs[ranked[0]], accs[other])):
                p_other = welch_t_test(accs[ranked[0]], accs[other])[2]
                cell["tied_with_winner" if p_other >= alpha else "beats"].append(other)
        if len(ranked) >= 2:
            w, r2 = ranked[0], ranked[1]
            cell["runner_up"] = r2
            cell["margin"] = float(np.mean(accs[w]) - np.mean(accs[r2]))
            if len(accs[w]) >= 2 and len(accs[r2]) >= 2 and _no_spread(accs[w], accs[r2]):
                # Zero variance in both groups: the t statistic is infinite and p = 0 would be
                # an artefact (e.g. deterministic runs), not evidence. Say so instead.
                cell["no_seed_spread"] = True
            elif len(accs[w]) >= 2 and len(accs[r2]) >= 2:
                t, _dof, p = welch_t_test(accs[w], accs[r2])
                cell["t"], cell["p_value"], cell["significant"] = t, p, bool(p < alpha)
        out.append(cell)
    return out


def environment() -> dict[str, Any]:
    """Return the versions needed to reproduce a result."""
    import initwise

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "initwise": initwise.__version__,
            "platform": platform.platform(), "torch_threads": torch.get_num_threads()}


Callback = Callable[[dict[str, Any]], None]


def _cost(depth: int, width: int) -> float:
    return float(depth * width + 1000)


def run_compare(config: CompareConfig, *, callback: Callback | None = None,
                command: list[str] | None = None) -> CompareResult:
    """Run every (seed, width, depth, scheme) of ``config`` and return the result.

    ``callback`` receives ``{"done", "total", "elapsed_s", "eta_s", "run"}`` after each run.
    On ``KeyboardInterrupt`` the runs finished so far are returned with ``partial=True``.

    Example:
        >>> cfg = CompareConfig(dataset="teacher", depths=[2], widths=[16], schemes=["torch"],
        ...                     seeds=1, epochs=1)
        >>> res = run_compare(cfg)
        >>> len(res.runs), res.partial, res.summary[0]["winner"]
        (1, False, 'torch')
    """
    config.validate()
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    cells = [(d, w) for w in config.widths for d in config.depths]
    jobs = [(seed, d, w, s) for seed in range(config.seeds) for d, w in cells
            for s in config.schemes]
    total_cost = sum(_cost(d, w) for _, d, w, _ in jobs)
    done_cost = 0.0
    runs: list[RunResult] = []
    partial = False
    tcfg = config.train_config()
    # Fail fast, before any training, on a bad dataset or architecture.
    data = _load_data(config, seed=0)
    dataset_info = data.describe()
    for d, w in cells:
        build_model(config.arch, data.in_shape, data.n_classes, depth=d, width=w,
                    activation=config.activation, norm=config.norm)
    try:
        for i, (seed, depth, width, scheme) in enumerate(jobs):
            if i > 0 and jobs[i - 1][0] != seed:
                data = _load_data(config, seed=seed)
                dataset_info = data.describe()
            runs.append(_one(config, tcfg, data, scheme, depth, width, seed))
            done_cost += _cost(depth, width)
            if callback is not None:
                elapsed = time.perf_counter() - t0
                callback({"done": i + 1, "total": len(jobs), "elapsed_s": elapsed,
                          "eta_s": elapsed * (total_cost - done_cost) / done_cost,
                          "run": runs[-1]})
    except KeyboardInterrupt:
        partial = True
    finally:
        torch.set_num_threads(old_threads)
    cfg_dict = asdict(config)
    env = environment()
    env["torch_threads"] = config.threads or old_threads
    return CompareResult(cfg_dict, runs, summarize(runs, config.schemes), dataset_info, env,
                         partial=partial, total_runs=len(jobs),
                         wall_time_s=time.perf_counter() - t0,
                         command=command if command is not None else list(sys.argv))


def _load_data(config: CompareConfig, seed: int) -> Any:
    """The data set of ``config`` split with ``seed`` (real-valued targets for regression)."""
    if config.task == "regression":
        return load_regression_dataset(config.dataset, seed=seed,
                                       test_fraction=config.test_fraction)
    return load_dataset(config.dataset, seed=seed, test_fraction=config.test_fraction)


def _audit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
           loss_fn: Callable[..., torch.Tensor] | None = None) -> tuple[dict[str, Any], Any]:
    """Per-layer forward/backward scale at init, and the :func:`initwise.audit` report."""
    import initwise

    from .scale import scale_from_audit

    rep = initwise.audit(model, x, targets=y,
                         loss_fn=torch.nn.functional.cross_entropy if loss_fn is None else loss_fn)
    return scale_from_audit(rep), rep


def init_batch(data: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)``: ``n`` training samples drawn by a permutation seeded with ``seed``.

    Example:
        >>> from .data import load_dataset, load_regression_dataset
        >>> x, y = init_batch(load_dataset("teacher"), 64, seed=0)
        >>> tuple(x.shape), len(set(y.tolist())) > 5
        ((64, 32), True)
    """
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    idx = torch.randperm(int(data.x_train.shape[0]), generator=gen)[:n]
    return data.x_train[idx], data.y_train[idx]


def _failed(scheme: str, depth: int, width: int, seed: int, t0: float,
            e: BaseException) -> RunResult:
    return RunResult(scheme, depth, seed, float("nan"), float("nan"), float("nan"), False,
                     None, None, 0, time.perf_counter() - t0, width=width,
                     error=f"{type(e).__name__}: {e}")


def _one(config: CompareConfig, tcfg: TrainConfig, data: Any, scheme: str, depth: int,
         width: int, seed: int) -> RunResult:
    torch.manual_seed(seed * 7919 + depth * 31 + width)
    x0, y0 = init_batch(data, config.init_batch, seed)
    t0 = time.perf_counter()
    model = build_model(config.arch, data.in_shape, data.n_classes, depth=depth, width=width,
                        activation=config.activation, norm=config.norm)
    try:
        info = apply_scheme(model, scheme, x0, seed=seed)
        scale, report = (_audit(model, x0, y0) if tcfg.loss == "cross_entropy"
                         else _audit(model, x0, y0, loss_function(tcfg.task, tcfg.loss)))
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        # A scheme that does not apply to this architecture is a result, not a crash.
        return _failed(scheme, depth, width, seed, t0, e)
    try:
        res = train_one(model, data, tcfg, scheme=scheme, depth=depth, seed=seed)
    except Exception as e:  # one failing run must not lose all the others: record it
        return _failed(scheme, depth, width, seed, t0, e)
    res.width = width
    res.init = info if seed == 0 else {k: v for k, v in info.items() if k != "details"}
    res.init_scale = scale
    res.audit_report = report if seed == 0 else None
    return res
