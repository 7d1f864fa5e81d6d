"""Train one model and measure it: the loop behind every cell of ``initwise compare``.

The hot path is a plain PyTorch loop. Measurement is kept off it: the loss is read once per
step (needed anyway to detect divergence), per-layer gradient norms are read every
``grad_every`` steps straight from ``param.grad`` (no hooks), and the test split is evaluated
once per epoch. A non-finite loss stops the run and is reported as a divergence, not raised.

Batch order comes from a generator seeded with the run's seed, so every scheme sees the same
batches in the same order within a seed; schemes differ only in their init.

Tasks and losses: classification with cross-entropy (default) or with MSE against one-hot
targets (``loss="mse"``); regression (``task="regression"``, float targets, MSE), where
``test_accuracy`` holds the test R² (``1 - SSE/SST``; 1 is perfect, 0 is the mean predictor) so
that rankings stay "higher is better". ``batch_size="full"`` is full-batch gradient descent
(one step per epoch). ``target_loss``: ``steps_to_target_loss`` is the number of optimizer steps
after which the training loss (of the batch about to be used, the whole set when full-batch)
first falls below it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
from torch import nn

from .._math import json_finite
from .data import Dataset

__all__ = ["RunResult", "TrainConfig", "evaluate", "evaluate_regression", "loss_function",
           "train_one"]

Optimizer = Literal["sgd", "adam"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
TASKS: tuple[str, ...] = ("classification", "regression")
LOSSES: tuple[str, ...] = ("cross_entropy", "mse")


@dataclass
class TrainConfig:
    """How to train: optimizer, learning rate, epochs, batch size and measurement cadence."""

    optimizer: Optimizer = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    epochs: int = 10
    batch_size: int | Literal["full"] = 64
    target_accuracy: float = 0.9
    log_every: int = 5
    grad_every: int = 10
    task: str = "classification"
    loss: str = "cross_entropy"
    target_loss: float | None = None


@dataclass
class RunResult:
    """Everything measured for one (scheme, depth, seed): curves, gradients, final scores."""

    scheme: str
    depth: int
    seed: int
    test_accuracy: float
    test_loss: float
    best_test_accuracy: float
    diverged: bool
    diverged_at_step: int | None
    steps_to_target: int | None
    steps: int
    time_s: float
    loss_steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    epoch_steps: list[int] = field(default_factory=list)
    epoch_test_accuracy: list[float] = field(default_factory=list)
    epoch_test_loss: list[float] = field(default_factory=list)
    epoch_train_accuracy: list[float] = field(default_factory=list)
    grad_layers: list[str] = field(default_factory=list)
    grad_steps: list[int] = field(default_factory=list)
    grad_norms: list[list[float]] = field(default_factory=list)
    init_scale: dict[str, Any] = field(default_factory=dict)
    init: dict[str, Any] = field(default_factory=dict)
    width: int = 0
    error: str | None = None
    #: where a failed run failed: "init" (the scheme), "model" (its forward at init), "train"
    error_stage: str | None = None
    audit_report: Any = field(default=None, repr=False, compare=False)
    steps_to_target_loss: int | None = None
    #: learning-rate transfer runs (``CompareConfig.lrs``): the base learning rate of the run
    lr: float | None = None
    #: learning-rate transfer runs: the loss on the whole training split after training
    train_split_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of every field but ``audit_report`` (the library object;
        its numbers are in ``init_scale``); non-finite floats become ``None``."""
        return json_finite({f.name: getattr(self, f.name) for f in fields(self)
                        if f.name != "audit_report"})



def _weight_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 2048,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
             ) -> tuple[float, float]:
    """Return ``(accuracy, mean loss)`` of ``model`` on ``(x, y)`` in eval mode (the loss is
    cross-entropy unless ``loss_fn``, a mean-reduced loss, is given)."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, x.shape[0], chunk):
        out = model(x[i:i + chunk])
        if loss_fn is None:
            loss_sum += float(nn.functional.cross_entropy(out, y[i:i + chunk], reduction="sum"))
        else:
            loss_sum += float(loss_fn(out, y[i:i + chunk])) * out.shape[0]
        correct += int((out.argmax(dim=1) == y[i:i + chunk]).sum())
    model.train(was_training)
    n = max(x.shape[0], 1)
    return correct / n, loss_sum / n


def loss_function(task: str, loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss for ``(task, loss)``: cross-entropy, MSE on one-hot targets, or MSE.

    Example:
        >>> f = loss_function("classification", "mse")
        >>> float(f(torch.tensor([[1.0, 0.0]]), torch.tensor([0])))
        0.0
    """
    if task == "regression":
        if loss != "mse":
            raise ValueError(f"task 'regression' needs loss 'mse', got {loss!r}")
        return nn.functional.mse_loss
    if loss == "mse":
        def mse_one_hot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            target = nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
            return nn.functional.mse_loss(out, target)

        return mse_one_hot
    return nn.functional.cross_entropy


@torch.no_grad()
def evaluate_regression(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float,
                                                                                     float]:
    """Return ``(R², mean squared error)`` of ``model`` on ``(x, y)`` in eval mode."""
    was_training = model.training
    model.eval()
    out = model(x).reshape(y.shape)
    model.train(was_training)
    sse = float(((out - y) ** 2).sum())
    sst = float(((y - y.mean(dim=0)) ** 2).sum())
    return (1.0 - sse / sst if sst > 0 else math.nan), sse / max(y.numel(), 1)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def _make_optimizer(model: nn.Module, cfg: TrainConfig, params: Any = None
                    ) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over ``params`` (parameter groups with their own learning
    rates, e.g. a parametrization's) or, by default, every parameter at ``cfg.lr``."""
    params = model.parameters() if params is None else params
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    from .._checks import raise_unknown

    raise_unknown("optimizer", cfg.optimizer, OPTIMIZERS)


def train_one(model: nn.Module, data: Dataset, cfg: TrainConfig, *, scheme: str, depth: int,
              seed: int, params: Any = None) -> RunResult:
    """Train ``model`` on ``data`` with ``cfg`` and return the measurements.

    ``params``: the optimizer's parameter groups (default: every parameter at ``cfg.lr``).

    Example:
        >>> from initwise.compare.data import load_dataset
        >>> ds = load_dataset("teacher", seed=0)
        >>> _ = torch.manual_seed(0)
        >>> m = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
        >>> r = train_one(m, ds, TrainConfig(epochs=1, batch_size=600), scheme="torch", depth=2,
        ...               seed=0)
        >>> r.steps, r.diverged, 0.0 <= r.test_accuracy <= 1.0
        (4, False, True)
    """
    t0 = time.perf_counter()
    model.train()
    opt = _make_optimizer(model, cfg, params)
    weights = _weight_params(model)
    res = RunResult(scheme, depth, seed, 0.0, float("nan"), 0.0, False, None, None, 0, 0.0,
                    grad_layers=[n for n, _ in weights])
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    bs = n if cfg.batch_size == "full" else min(int(cfg.batch_size), n)
    regression = cfg.task == "regression"
    loss_fn = loss_function(cfg.task, cfg.loss)
    step = 0
    loss_acc, loss_cnt = 0.0, 0
    for _epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        correct = seen = 0
        for i in range(0, n - bs + 1, bs):
            idx = perm[i:i + bs]
            xb, yb = data.x_train[idx], data.y_train[idx]
            out = model(xb)
            loss = loss_fn(out, yb)
            lv = loss.item()
            if not math.isfinite(lv):
                res.diverged, res.diverged_at_step = True, step
                break
            if (cfg.target_loss is not None and res.steps_to_target_loss is None
                    and lv < cfg.target_loss):
                res.steps_to_target_loss = step
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step % cfg.grad_every == 0:
                norms = torch.stack([p.grad.detach().norm() if p.grad is not None
                                     else torch.zeros(()) for _, p in weights])
                res.grad_steps.append(step)
                res.grad_norms.append(norms.tolist())
            opt.step()
            step += 1
            loss_acc += lv
            loss_cnt += 1
            if not regression:
                correct += int((out.detach().argmax(dim=1) == yb).sum())
            seen += bs
            if loss_cnt == cfg.log_every:
                res.loss_steps.append(step)
                res.train_loss.append(loss_acc / loss_cnt)
                loss_acc, loss_cnt = 0.0, 0
        acc, tl = (evaluate_regression(model, data.x_test, data.y_test) if regression
                   else evaluate(model, data.x_test, data.y_test,
                                 loss_fn=None if cfg.loss == "cross_entropy" else loss_fn))
        res.epoch_steps.append(step)
        res.epoch_test_accuracy.append(acc)
        res.epoch_test_loss.append(tl)
        res.epoch_train_accuracy.append(math.nan if regression else
                                        (correct / seen if seen else 0.0))
        if res.steps_to_target is None and acc >= cfg.target_accuracy:
            res.steps_to_target = step
        if res.diverged:
            break
    if loss_cnt:
        res.loss_steps.append(step)
        res.train_loss.append(loss_acc / loss_cnt)
    res.steps = step
    if res.epoch_test_accuracy:
        res.test_accuracy = res.epoch_test_accuracy[-1]
        res.test_loss = res.epoch_test_loss[-1]
        res.best_test_accuracy = max(res.epoch_test_accuracy)
    res.time_s = time.perf_counter() - t0
    return res
