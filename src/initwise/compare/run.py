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
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .._math import json_finite
from .data import load_dataset, load_regression_dataset
from .models import build_model, check_output
from .schemes import apply_scheme, check_scheme_for_model, check_schemes
from .train import RunResult, TrainConfig, loss_function, train_one

__all__ = ["DEFAULT_LR", "CompareConfig", "CompareResult", "WorkerPool", "init_batch",
           "run_compare", "summarize", "welch_t_test"]

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
    jobs: int = 1
    device: str = "cpu"
    task: str = "classification"
    loss: str | None = None
    target_loss: float | None = None
    #: a learning-rate grid: compare then sweeps learning-rate transfer (``transfer.py``)
    lrs: list[float] | None = None
    #: the parametrizations of a learning-rate sweep (``initwise.parametrize`` names)
    parametrizations: list[str] = field(default_factory=lambda: ["sp", "mup"])
    #: base shape of a learning-rate sweep (default: the smallest width and depth)
    base_width: int | None = None
    base_depth: int | None = None

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
        from .train import LOSSES, OPTIMIZERS, TASKS

        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("task", self.task, TASKS)
        check_choice("loss", self.resolved_loss(), LOSSES)
        if self.task == "regression" and self.resolved_loss() != "mse":
            raise ValueError("task 'regression' needs loss 'mse'")
        self.loss = self.resolved_loss()
        if self.target_loss is not None:
            check_finite_positive("target_loss", self.target_loss)
        self.lr = self.resolved_lr()
        check_finite_positive("lr", self.lr)
        check_finite_positive("momentum", self.momentum, allow_zero=True)
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        for name in ("epochs", "batch_size", "seeds", "init_batch", "log_every", "grad_every",
                     "jobs"):
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
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        check_device(self.device)
        if self.lrs is not None:
            self._validate_transfer()
        if self.schemes == list(DEFAULT_SCHEMES):
            # The default list adapts to what this installation provides.
            from .schemes import scheme_names

            self.schemes = [s for s in DEFAULT_SCHEMES if s in scheme_names()]
        self.schemes = check_schemes(self.schemes)


    def _validate_transfer(self) -> None:
        from .._checks import check_choice
        from .._param import NAMES

        lrs = self.lrs or []
        if not lrs or any(isinstance(v, bool) or not isinstance(v, (int, float))
                          or not math.isfinite(v) or v <= 0 for v in lrs):
            raise ValueError(f"lrs must be a non-empty list of positive learning rates, got "
                             f"{self.lrs!r}")
        self.lrs = sorted({float(v) for v in lrs})
        if not self.parametrizations:
            raise ValueError("parametrizations must name at least one of " + ", ".join(NAMES))
        for p in self.parametrizations:
            check_choice("parametrization", p, NAMES)
        self.parametrizations = list(dict.fromkeys(self.parametrizations))
        for name in ("base_width", "base_depth"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


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
    #: the torchrun rank that holds this result (only rank 0 holds the runs)
    rank: int = 0
    #: runs taken over from a previous results.json (``--resume``)
    resumed_runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of everything (non-finite floats become ``None``)."""
        return json_finite({"config": self.config, "command": self.command, "partial": self.partial,
                        "completed_runs": len(self.runs), "total_runs": self.total_runs,
                        "wall_time_s": self.wall_time_s, "resumed_runs": self.resumed_runs,
                        "dataset": self.dataset,
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
        return {"n": 0, "mean": None, "std": None, "se": None, "min": None, "max": None,
                "median": None}
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"n": int(a.size), "mean": float(a.mean()), "std": std,
            "se": std / math.sqrt(a.size), "min": float(a.min()), "max": float(a.max()),
            "median": float(np.median(a))}


def _no_spread(a: list[float], b: list[float]) -> bool:
    """True when both groups have no spread but different means (Welch is undefined)."""
    return (float(np.ptp(a)) == 0.0 and float(np.ptp(b)) == 0.0
            and float(np.mean(a)) != float(np.mean(b)))


def _grad_spread(rs: list[RunResult]) -> float | None:
    """Median over seeds of max/min per-layer weight-gradient norm at the first step.

    1 means every layer gets a gradient of the same size (stable gradients); 1e6 means the
    first layer gets a millionth of the last one's (vanishing).
    """
    vals = []
    for r in rs:
        if not r.grad_norms:
            continue
        g = np.asarray(r.grad_norms[0], dtype=np.float64)
        g = g[np.isfinite(g)]
        if g.size and g.min() > 0:
            vals.append(float(g.max() / g.min()))
        elif g.size:
            vals.append(math.inf)
    return float(np.median(vals)) if vals else None


def summarize(runs: list[RunResult], schemes: list[str], alpha: float = 0.05,
              expected_seeds: int | None = None) -> list[dict[str, Any]]:
    """Summarize runs per (depth, width): per-scheme statistics, winner and significance.

    Each ``(scheme, depth, width, seed)`` counts once (the first run given for it), so
    duplicated runs cannot inflate the number of seeds behind a t-test. A cell where a scheme
    of ``schemes`` has no run at all (an interrupted sweep) is marked ``complete: False`` and no
    winner is called (``leader`` holds the best mean so far). When the schemes ran different
    numbers of seeds, the statistics use only the seeds that every scheme ran (a fair pairing);
    ``seeds_used`` says which. ``expected_seeds`` (the configured number) only sets
    ``complete``. When several schemes share the best mean exactly, no winner is called
    either: ``tied_at_top`` lists them.
    """
    unique: dict[tuple[str, int, int, int], RunResult] = {}
    for r in runs:
        unique.setdefault((r.scheme, r.depth, r.width, r.seed), r)
    runs = list(unique.values())
    cells = sorted({(r.depth, r.width) for r in runs})
    out = []
    for depth, width in cells:
        in_cell = [r for r in runs if r.depth == depth and r.width == width]
        missing = [s for s in schemes if not any(r.scheme == s for r in in_cell)]
        seed_sets = [{r.seed for r in in_cell if r.scheme == s} for s in schemes
                     if s not in missing]
        common = sorted(set.intersection(*seed_sets)) if seed_sets else []
        complete = not missing and (expected_seeds is None or len(common) >= expected_seeds)
        per: dict[str, dict[str, Any]] = {}
        accs: dict[str, list[float]] = {}
        for s in schemes:
            rs = [r for r in in_cell if r.scheme == s and r.seed in common]
            if not rs:
                continue
            ok = [r for r in rs if r.error is None]
            accs[s] = [r.test_accuracy for r in ok]
            reached = [r.steps_to_target for r in ok if r.steps_to_target is not None]
            reached_loss = [r.steps_to_target_loss for r in ok
                            if r.steps_to_target_loss is not None]
            per[s] = {"test_accuracy": _stats(accs[s]),
                      "best_test_accuracy": _stats([r.best_test_accuracy for r in ok]),
                      "final_train_loss": _stats([r.train_loss[-1] for r in ok
                                                  if r.train_loss and not r.diverged]),
                      "steps_to_target": _stats([float(x) for x in reached]),
                      "reached_target": len(reached), "diverged": sum(r.diverged for r in ok),
                      "steps_to_target_loss": _stats([float(x) for x in reached_loss]),
                      "reached_target_loss": len(reached_loss),
                      "errors": [r.error for r in rs if r.error is not None],
                      "error_stages": [getattr(r, "error_stage", None) for r in rs
                                       if r.error is not None],
                      "runs": len(rs), "seeds": sorted(r.seed for r in rs),
                      "grad_spread_at_init": _grad_spread(ok),
                      "init_verdict": next((r.init_scale["verdict"] for r in ok
                                            if "verdict" in r.init_scale), None),
                      "init_reason": next(("; ".join(x for x in (
                          r.init_scale.get("forward_reason"), r.init_scale.get("backward_reason"))
                          if x) for r in ok if "verdict" in r.init_scale), None)}
        ranked = sorted((s for s in accs if accs[s]), key=lambda s: -float(np.mean(accs[s])))
        cell: dict[str, Any] = {"depth": depth, "width": width, "schemes": per,
                                "ranking": ranked, "winner": ranked[0] if ranked else None,
                                "runner_up": None, "margin": None, "p_value": None,
                                "t": None, "significant": None, "no_seed_spread": False,
                                "vs_torch": None, "complete": complete, "missing": missing,
                                "seeds_used": common, "leader": ranked[0] if ranked else None}
        cell["tied_with_winner"], cell["beats"] = [], []
        if missing:
            # Some scheme never ran in this cell: crowning a winner would compare against
            # an absent competitor. Report the leader only.
            cell["winner"] = None
            out.append(cell)
            continue
        best = float(np.mean(accs[ranked[0]])) if ranked else 0.0
        top = [s for s in ranked if abs(float(np.mean(accs[s])) - best) <= 1e-12]
        cell["tied_at_top"] = top if len(top) > 1 else []
        if len(top) > 1:
            # The same mean (one seed each at chance, a tiny test set): the order of --schemes
            # would pick the "winner". Call none; ``leader`` keeps the first for the tables.
            cell["winner"] = None
        if ranked and "torch" in accs and accs["torch"] and ranked[0] != "torch":
            cell["vs_torch"] = float(np.mean(accs[ranked[0]]) - np.mean(accs["torch"]))
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
Job = tuple[int, int, int, str]  # (seed, depth, width, scheme)


def job_cost(config: CompareConfig, depth: int, width: int) -> float:
    """Expected relative cost of one run: epochs x (layers + fixed overhead) x width factor.

    Used for the ETA (deep runs cost more than shallow ones) and to hand the most expensive
    runs out first to worker processes.
    """
    return float(config.epochs) * (depth + 2.0) * (1.0 + width / 256.0)


def job_list(config: CompareConfig) -> list[Job]:
    """Every run of ``config`` in serial order: seeds outer, then widths, depths, schemes."""
    cells = [(d, w) for w in config.widths for d in config.depths]
    return [(seed, d, w, s) for seed in range(config.seeds) for d, w in cells
            for s in config.schemes]


def check_device(device: str) -> str:
    """Validate ``device`` (``cpu``, ``cuda`` or ``cuda:N``) against this machine."""
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA GPU is available here "
                             "(torch.cuda.is_available() is False); use --device cpu")
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) here (valid: cuda:0..cuda:"
                             f"{torch.cuda.device_count() - 1})")
        return device
    raise ValueError(f"unknown device {device!r}. Valid options: cpu, cuda, cuda:N")


def _run_from_dict(d: dict[str, Any]) -> RunResult:
    """Rebuild a :class:`RunResult` from ``results.json`` (``None`` floats back to NaN)."""
    names = {f.name for f in fields(RunResult)}
    kw = {k: v for k, v in d.items() if k in names}
    for k in ("test_accuracy", "test_loss", "best_test_accuracy", "time_s"):
        if kw.get(k) is None:
            kw[k] = math.nan
    for k in ("train_loss", "epoch_test_accuracy", "epoch_test_loss", "epoch_train_accuracy"):
        kw[k] = [math.nan if v is None else v for v in kw.get(k) or []]
    kw["grad_norms"] = [[math.nan if v is None else v for v in row]
                        for row in kw.get("grad_norms") or []]
    return RunResult(**kw)


_RESUME_IGNORED = ("jobs",)


def resumable_runs(config: CompareConfig, previous: dict[str, Any]) -> list[RunResult]:
    """Return the finished runs of a previous ``results.json`` of the same configuration.

    Raises ``ValueError`` naming the first setting that differs (only ``jobs`` may change:
    it does not change any number).
    """
    prev = dict(previous.get("config") or {})
    now = asdict(config)
    for k in now:
        if k in _RESUME_IGNORED:
            continue
        if k in prev and prev[k] != now[k]:
            raise ValueError(f"cannot resume: the previous run used {k}={prev[k]!r}, this one "
                             f"{k}={now[k]!r}; rerun with the same settings or without --resume")
    wanted = set(job_list(config))
    runs = [_run_from_dict(d) for d in previous.get("runs") or []]
    return [r for r in runs if (r.seed, r.depth, r.width, r.scheme) in wanted]


# ----------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _data_for(config: CompareConfig, seed: int, cache: dict[int, Any]) -> Any:
    """The split of ``seed``, cached: a worker gets runs of every seed, most expensive first."""
    if seed not in cache:
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[seed] = _load_data(config, seed=seed)
    return cache[seed]


def _worker_init(config: CompareConfig, threads: int) -> None:
    """Set up a worker process: same thread count as a serial run, Ctrl-C left to the parent."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _WORKER.update(config=config, tcfg=config.train_config(), data={})


def _worker_run(job: tuple[int, Job]) -> tuple[int, RunResult]:
    i, (seed, depth, width, scheme) = job
    config = _WORKER["config"]
    data = _data_for(config, seed, _WORKER["data"])
    return i, _one(config, _WORKER["tcfg"], data, scheme, depth, width, seed)


class WorkerPool:
    """``config.jobs`` spawned worker processes, shared by a comparison's runs and its report.

    Each worker uses ``config.threads`` torch threads (default 1; the parent's count when
    ``None``) and ignores Ctrl-C (the parent handles it). ``preload`` names modules the
    workers import once they run out of training runs (matplotlib for the figures: the idle
    tail of the sweep pays for it, not the report). A pool whose sweep was interrupted still
    holds queued runs: it is terminated and :attr:`usable` turns ``False``.

    Use it as a context manager: ``with WorkerPool(config) as pool:``.
    """

    def __init__(self, config: CompareConfig, preload: tuple[str, ...] = ()) -> None:
        import multiprocessing as mp

        self.jobs = config.jobs
        self.preload = preload
        threads = config.threads or torch.get_num_threads()
        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        self.pool: Any = ctx.Pool(config.jobs, initializer=_worker_init,
                                  initargs=(config, threads))

    @property
    def usable(self) -> bool:
        return self.pool is not None

    def warm(self) -> None:
        """Queue the imports of :attr:`preload` behind the tasks already queued."""
        import importlib

        for name in self.preload:
            for _ in range(self.jobs):
                self.pool.apply_async(importlib.import_module, (name,))

    def terminate(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def _execute(config: CompareConfig, todo: list[tuple[int, Job]], threads: int,
             on_result: Callable[[int, RunResult], None],
             shared: WorkerPool | None = None) -> None:
    """Run ``todo`` (index, job) serially or in ``config.jobs`` worker processes (those of
    ``shared`` when given and usable, else a pool of its own).

    Every run is seeded from its own (seed, depth, width) and every process uses ``threads``
    torch threads, so a result does not depend on which process ran it or in which order.
    """
    if config.jobs <= 1 or len(todo) <= 1:
        tcfg = config.train_config()
        cache: dict[int, Any] = {}
        for i, (seed, depth, width, scheme) in todo:
            data = _data_for(config, seed, cache)
            on_result(i, _one(config, tcfg, data, scheme, depth, width, seed))
        return
    # Most expensive first (longest-processing-time order): the workers finish together.
    order = sorted(todo, key=lambda t: -job_cost(config, t[1][1], t[1][2]))
    if shared is not None and shared.usable:
        done = False
        try:
            results = shared.pool.imap_unordered(_worker_run, order, chunksize=1)
            shared.warm()
            for i, run in results:
                on_result(i, run)
            done = True
        finally:
            if not done:  # runs still queued: the pool cannot serve the report
                shared.terminate()
        return
    run_spawned(config.jobs, order, _worker_run, _worker_init, (config, threads), on_result)


def run_spawned(jobs: int, order: list[Any], worker: Callable[[Any], tuple[int, Any]],
                initializer: Callable[..., None], initargs: tuple[Any, ...],
                on_result: Callable[[int, Any], None]) -> None:
    """Run ``worker`` over ``order`` in ``jobs`` spawned processes, in that order of hand-out,
    calling ``on_result(i, result)`` as each finishes; the pool is torn down on any exit."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
    pool = ctx.Pool(min(jobs, len(order)), initializer=initializer, initargs=initargs)
    try:
        for i, run in pool.imap_unordered(worker, order, chunksize=1):
            on_result(i, run)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def dist_env() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of a ``torchrun`` job from the environment, or (0, 1)."""
    import os

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, world) if world > 1 else (0, 1)


def run_compare(config: CompareConfig, *, callback: Callback | None = None,
                command: list[str] | None = None,
                previous: dict[str, Any] | None = None,
                pool: WorkerPool | None = None) -> CompareResult:
    """Run every (seed, width, depth, scheme) of ``config`` and return the result.

    ``callback`` receives ``{"done", "total", "elapsed_s", "eta_s", "run"}`` after each run.
    On ``KeyboardInterrupt`` the runs finished so far are returned with ``partial=True``.
    ``previous`` (a ``results.json`` dict of the same configuration) resumes a sweep: its
    finished runs are kept and only the missing ones are run. ``config.jobs > 1`` runs the
    grid in worker processes. Inside a ``torchrun`` job (``WORLD_SIZE`` > 1) each rank runs
    its share of the grid and rank 0 gathers every run (gloo); other ranks return a result
    with ``rank > 0`` and no runs. The numbers are the same whichever way the grid is run.
    With ``jobs > 1`` the workers are spawned: a script calling this needs the usual
    ``if __name__ == "__main__":`` guard. ``pool`` (a :class:`WorkerPool` of ``config``) runs
    the grid in its workers and stays open for the report's figures. ``wall_time_s`` of a resumed sweep adds the previous part's time.

    Example:
        >>> cfg = CompareConfig(dataset="teacher", depths=[2], widths=[16], schemes=["torch"],
        ...                     seeds=1, epochs=1)
        >>> res = run_compare(cfg)
        >>> len(res.runs), res.partial, res.summary[0]["winner"]
        (1, False, 'torch')
    """
    config.validate()
    if config.lrs is not None:
        raise ValueError("config.lrs is set: a learning-rate sweep runs with "
                         "initwise.compare.transfer.run_transfer")
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    threads = config.threads or old_threads
    jobs = job_list(config)
    index = {j: i for i, j in enumerate(jobs)}
    done_runs: dict[int, RunResult] = {}
    if previous is not None:
        for r in resumable_runs(config, previous):
            done_runs.setdefault(index[(r.seed, r.depth, r.width, r.scheme)], r)
    resumed = len(done_runs)
    rank, world = dist_env()
    todo = [(i, j) for i, j in enumerate(jobs) if i not in done_runs]
    if world > 1:  # a share of the grid per rank, balanced by expected cost
        todo = sorted(todo, key=lambda t: -job_cost(config, t[1][1], t[1][2]))[rank::world]
    total_cost = sum(job_cost(config, d, w) for _i, (_s, d, w, _sc) in todo) or 1.0
    progress = {"done": 0, "cost": 0.0}
    partial = False
    # Fail fast, before any training, on a bad dataset or architecture.
    data = _load_data(config, seed=0)
    dataset_info = data.describe()
    for d, w in dict.fromkeys((d, w) for _s, d, w, _sc in jobs):
        probe = build_model(config.arch, data.in_shape, data.n_classes, depth=d, width=w,
                            activation=config.activation, norm=config.norm)
        check_output(probe, data.x_train[:2], data.n_classes, config.arch,
                     regression=config.task == "regression")
        for scheme in config.schemes:  # e.g. an lsuv:only= name the model does not have
            check_scheme_for_model(scheme, probe)

    def on_result(i: int, run: RunResult) -> None:
        done_runs[i] = run
        progress["done"] += 1
        progress["cost"] += job_cost(config, run.depth, run.width)
        if callback is not None:
            now = time.perf_counter()
            # The rate comes from the runs alone: loading the data and checking the models
            # before the first run is not a cost the remaining runs will pay again.
            ran = now - t_exec
            callback({"done": resumed + progress["done"], "total": len(jobs) if world == 1
                      else len(todo), "elapsed_s": now - t0,
                      "eta_s": ran * (total_cost - progress["cost"]) / progress["cost"],
                      "run": run})

    torch.set_num_threads(threads)
    t_exec = time.perf_counter()
    try:
        _execute(config, todo, threads, on_result, pool)
    except KeyboardInterrupt:
        partial = True
    finally:
        torch.set_num_threads(old_threads)
    if world > 1:
        done_runs, partial = _gather(done_runs, partial, rank, world)
    if previous is not None:
        _reaudit(config, done_runs)
    runs = [done_runs[i] for i in sorted(done_runs)]
    # A resumed sweep: the time of the first part plus the time spent running the rest.
    wall = (time.perf_counter() - t0 if previous is None else
            float(previous.get("wall_time_s") or 0.0) + time.perf_counter() - t_exec)
    cfg_dict = asdict(config)
    env = environment()
    env["torch_threads"] = threads
    if world > 1:
        env["world_size"] = world
    return CompareResult(cfg_dict, runs, summarize(runs, config.schemes,
                                                   expected_seeds=config.seeds),
                         dataset_info, env, partial=partial or (rank == 0 and
                                                                len(runs) < len(jobs)),
                         total_runs=len(jobs), wall_time_s=wall,
                         command=command if command is not None else list(sys.argv),
                         rank=rank, resumed_runs=resumed)


def _gather(mine: dict[int, RunResult], partial: bool, rank: int, world: int
            ) -> tuple[dict[int, RunResult], bool]:
    """Gather every rank's runs on rank 0 over gloo (initialized here if needed)."""
    import datetime

    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(hours=6))
    try:
        got: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object((mine, partial), got, dst=0)
        if rank != 0 or got is None:
            return {}, partial
        merged: dict[int, RunResult] = {}
        for runs, part in got:
            merged.update(runs)
            partial = partial or bool(part)
        return merged, partial
    finally:
        if created:
            dist.destroy_process_group()


def _reaudit(config: CompareConfig, runs: dict[int, RunResult]) -> None:
    """Recompute the audit reports of resumed seed-0 runs (results.json keeps only numbers)."""
    cache: dict[int, Any] = {}
    for r in runs.values():
        if r.seed == 0 and r.error is None and r.audit_report is None:
            data = _data_for(config, 0, cache)
            try:
                _model, _info, _scale, r.audit_report = _prepare(
                    config, data, r.scheme, r.depth, r.width, r.seed)
            except Exception:  # the figure is optional; the numbers are already there
                r.audit_report = None


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


class _StageError(Exception):
    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(str(error))
        self.stage, self.error = stage, error


def _failed(scheme: str, depth: int, width: int, seed: int, t0: float,
            e: BaseException, stage: str) -> RunResult:
    r = RunResult(scheme, depth, seed, float("nan"), float("nan"), float("nan"), False,
                  None, None, 0, time.perf_counter() - t0, width=width,
                  error=f"{type(e).__name__}: {e}")
    r.error_stage = stage
    return r


def _prepare(config: CompareConfig, data: Any, scheme: str, depth: int, width: int,
             seed: int) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], Any]:
    """Build the model under the run's torch seed, apply ``scheme``, audit it at init.

    Raises :class:`_StageError` with stage ``"init"`` when the scheme fails to apply and
    ``"model"`` when the model itself fails (its forward pass in the audit).
    """
    torch.manual_seed(seed * 7919 + depth * 31 + width)
    x0, y0 = init_batch(data, config.init_batch, seed)
    model = build_model(config.arch, data.in_shape, data.n_classes, depth=depth, width=width,
                        activation=config.activation, norm=config.norm)
    try:
        info = apply_scheme(model, scheme, x0, seed=seed)
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        # A scheme that does not apply to this architecture is a result, not a crash.
        raise _StageError("init", e) from e
    try:
        loss = config.resolved_loss()
        scale, report = (_audit(model, x0, y0) if loss == "cross_entropy"
                         else _audit(model, x0, y0, loss_function(config.task, loss)))
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        raise _StageError("model", e) from e
    return model, info, scale, report


def _on_device(data: Any, device: str) -> Any:
    if device == "cpu":
        return data
    import dataclasses

    return dataclasses.replace(data, x_train=data.x_train.to(device),
                               y_train=data.y_train.to(device), x_test=data.x_test.to(device),
                               y_test=data.y_test.to(device))


def _one(config: CompareConfig, tcfg: TrainConfig, data: Any, scheme: str, depth: int,
         width: int, seed: int) -> RunResult:
    t0 = time.perf_counter()
    try:
        model, info, scale, report = _prepare(config, data, scheme, depth, width, seed)
    except _StageError as e:
        return _failed(scheme, depth, width, seed, t0, e.error, e.stage)
    try:
        # Init and audit happen on the CPU (the same weights whatever the device).
        res = train_one(model.to(config.device), _on_device(data, config.device), tcfg,
                        scheme=scheme, depth=depth, seed=seed)
    except Exception as e:  # one failing run must not lose all the others: record it
        return _failed(scheme, depth, width, seed, t0, e, "train")
    res.width = width
    res.init = info if seed == 0 else {k: v for k, v in info.items() if k != "details"}
    res.init_scale = scale
    res.audit_report = report if seed == 0 else None
    return res
