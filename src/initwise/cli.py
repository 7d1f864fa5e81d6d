"""The ``initwise`` command line: compare, audit, plan, gains, schemes.

Thin layers over the library. Heavy imports (torch, the library, matplotlib) happen inside the
sub-commands so that ``initwise --help`` is fast. Exit codes: 0 success, 1 runtime failure,
2 bad arguments, 130 interrupted (``compare`` still writes a partial report).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["main"]

_EPILOG_MAIN = """\
examples:
  initwise compare                         # built-in demo: deep ReLU MLPs on digits (~1-2 min)
  initwise compare --preset he2015         # He et al. 2015: 30-layer ReLU net, Xavier vs Kaiming
  initwise compare --schemes torch,kaiming --arch cnn --depths 4,8
  initwise audit mlp:depth=30 --policy kaiming
  initwise audit mlp:depth=30 --fail-on vanishing,exploding   # exit 1 on a bad verdict (CI)
  initwise check mlp:depth=5 --strict       # exit 1 on uninitialized / low-precision weights
  initwise digest mlp:depth=5 --policy auto --seed 0   # pin the init: SHA-256 per parameter
  initwise plan mlp:depth=5,activation=gelu --policy auto
  initwise plan transformer:depth=4 --diff gpt2 olmo2
  initwise gains
  initwise schemes
  initwise coord-check mlp:depth=4 --widths 64,256,1024 --parametrization mup

Run 'initwise COMMAND --help' for the options of each command.
"""

_EPILOG_COMPARE = """\
examples:
  initwise compare
      built-in demo: ReLU MLPs (width 128) of depth 5, 15 and 30 on scikit-learn's digits,
      schemes torch,xavier,kaiming,auto,lsuv,orthogonal, SGD lr 0.005, 10 epochs, 3 seeds
      (about a minute); writes initwise-report/index.html
  initwise compare --preset he2015          30-layer ReLU MLP, Xavier stalls, Kaiming trains
                                            (SGD lr 0.002, 40 epochs, 5 seeds: a few minutes)
  initwise compare --preset seed-mlp        64-256-128-10 MLP with Adam, torch vs kaiming:
                                            gradients, convergence speed, accuracy
  initwise compare --jobs 2                 the default run in 2 worker processes
  torchrun --nproc-per-node 4 -m initwise compare --depths 10,20,40,80
                                            the grid split over 4 ranks, one report
  initwise compare --preset deep-resnet     16 unnormalized residual blocks: fixup, zero_residual
  initwise compare --preset lr-transfer     learning-rate transfer across width, SP vs muP
                                            (Tensor Programs V, Fig. 1; about a minute)
  initwise compare --preset lr-transfer-depth
                                            the same across depth, muP vs CompleteP
  initwise compare --lrs 0.001,0.002,0.004 --parametrizations sp,mup --widths 64,512
  initwise compare --arch resnet --norm none --schemes torch,fixup,zero_residual --depths 8
  initwise compare --dataset mydata.npz --arch mypkg.models:make_net --schemes torch,kaiming
  initwise compare --depths 10,20,40 --activation tanh --schemes xavier,kaiming --seeds 5

MODEL FACTORIES: --arch package.module:factory imports factory and calls
  factory(in_shape=..., n_classes=..., depth=..., width=..., activation=...) -> nn.Module
DATASETS: digits (needs scikit-learn), mnist1d, teacher, or a .npz file with arrays X
  (n_samples, ...) and y (n_samples integer labels).
The winner per depth is the best mean test accuracy; it is called significant when Welch's
t-test against the runner-up over seeds gives p < 0.05. Ctrl-C (or SIGTERM) writes a partial
report; --resume continues it. --jobs N runs the grid in N processes, with the same numbers
as a serial run; under torchrun (WORLD_SIZE > 1) the ranks share the grid and rank 0 writes
the report.
"""

_AUDIT_LEGEND = """\
columns of the parameter table:
  std       measured standard deviation of the parameter
  intended  the std the init plan intended ('-': no plan, e.g. --policy torch or lsuv)
  std/int   measured std / intended std (1 = exactly as planned)
  orth err  orthogonal weights only: ||G/g^2 - I||_F with G the Gram matrix of the short side
            and g the gain (0 = exactly orthogonal)
  grad rms  root-mean-square of the loss gradient of the parameter on the batch
  sgd upd   ||dL/dW|| / ||W||: one SGD step of learning rate lr changes W by lr x this,
            relative to W
  adam upd  sqrt(number of nonzero gradient entries) / ||W||: Adam's first step changes W by
            lr x this, relative to W, whatever the gradient's scale
"""

_EPILOG_MODEL = """\
MODEL is a built-in architecture with options, e.g.
  mlp:depth=20,width=128,activation=gelu   cnn:depth=6   resnet:depth=8,norm=none
  resmlp:depth=16   transformer:depth=4
or a factory 'package.module:factory', called with those of in_shape, n_classes, depth,
width, activation that it names (a factory with no parameters is called as factory()). It
returns the model, or (model, example_inputs) to be run on its own inputs (a tensor, a tuple
of positional inputs, or a dict of keyword inputs such as token ids for a language model;
the audit then uses its default loss, a seeded random projection of the output).
"""


class _UsageError(Exception):
    """Bad arguments detected after parsing (reported with exit code 2)."""


def _csv(kind: type) -> Any:
    def parse(s: str) -> list[Any]:
        try:
            vals = [kind(v.strip()) for v in s.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {kind.__name__}s, got {s!r}") from None
        if not vals:
            raise argparse.ArgumentTypeError("expected at least one value")
        return vals
    return parse


def _scheme_list(s: str) -> list[str]:
    from .compare.schemes import split_schemes

    vals = split_schemes(s)
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one scheme")
    return vals


def _batch_size(s: str) -> int | str:
    if s.strip().lower() == "full":
        return "full"
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'full', got {s!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="initwise",
        description="Initialize PyTorch networks correctly, and measure that you did.",
        epilog=_EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "compare", help="train a network under several init schemes and write a report",
        description="Train the same network under several init schemes (same data split and\n"
                    "batch order per seed), measure signal scale at init, loss/accuracy curves,\n"
                    "gradient norms, steps to a target accuracy and divergence, and write a\n"
                    "report: index.html (self-contained, interactive), report.md, results.json,\n"
                    "results.csv and PNG figures.",
        epilog=_EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--preset", help="a named experiment: default, he2015, seed-mlp, "
                                    "tanh-xavier, deep-resnet, lr-transfer, lr-transfer-depth "
                                    "(options below override it)")
    c.add_argument("--schemes", type=_scheme_list, metavar="A,B,...",
                   help="init schemes: torch (PyTorch default), lsuv, or any initwise policy "
                        "preset / scheme name (see 'initwise schemes'), optionally with "
                        "parameters: normal:std=0.01, variance_scaling:scale=2,mode=fan_in")
    c.add_argument("--arch", help="mlp, cnn, resnet, resmlp, transformer, or "
                                           "package.module:factory")
    c.add_argument("--depths", "--depth", type=_csv(int), metavar="D,...",
                   help="depths to sweep (default 5,15,30): layers for mlp/cnn, blocks for "
                        "resnet/resmlp/transformer")
    c.add_argument("--widths", "--width", type=_csv(int), metavar="W,...",
                   help="hidden width(s) / channels (default 128)")
    c.add_argument("--activation", help="activation name (see 'initwise gains'); default relu")
    c.add_argument("--norm", choices=["batch", "none"], help="resnet/resmlp normalization")
    c.add_argument("--dataset", help="digits (default), mnist1d, teacher, or a .npz file")
    c.add_argument("--optimizer", choices=["sgd", "adam"], help="sgd (momentum 0.9) or adam")
    c.add_argument("--lr", type=float, help="learning rate (default: sgd 0.005, adam 0.001, for the "
                                                 "final optimizer; a preset's own lr if it sets one)")
    c.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    c.add_argument("--lrs", type=_csv(float), metavar="LR,...",
                   help="learning-rate transfer: sweep these learning rates over the widths "
                        "and depths under each --parametrizations (replaces --schemes)")
    c.add_argument("--parametrizations", type=_csv(str), metavar="P,...",
                   help="with --lrs: sp, mup, completep, spectral (default sp,mup)")
    c.add_argument("--epochs", type=int, help="training epochs per run (default 10)")
    c.add_argument("--batch-size", type=_batch_size, help="mini-batch size (default 64), or "
                                                         "'full' for full-batch gradient descent")
    c.add_argument("--seeds", type=int, metavar="N", help="number of seeds 0..N-1 (default 3)")
    c.add_argument("--target-accuracy", type=float, metavar="ACC",
                   help="report the steps needed to reach this test accuracy (default 0.9)")
    c.add_argument("--task", choices=["classification", "regression"],
                   help="classification (default) or regression (real-valued targets, MSE; "
                        "datasets: teacher); for regression 'accuracy' is the test R²")
    c.add_argument("--loss", choices=["cross_entropy", "mse"],
                   help="training loss (default cross_entropy; mse for regression; mse in "
                        "classification is against one-hot targets)")
    c.add_argument("--target-loss", type=float, metavar="LOSS",
                   help="also report the steps until the training loss falls below LOSS")
    c.add_argument("--out", default="initwise-report", metavar="DIR",
                   help="report folder (default: initwise-report)")
    c.add_argument("--json", action="store_true", help="print the results JSON to stdout")
    c.add_argument("--quiet", action="store_true",
                   help="no progress or summary table (the report path is still printed)")
    c.add_argument("--threads", type=int, help="torch CPU threads per process (default 1: "
                                                "fastest for small models; raise it for large "
                                                "user models)")
    c.add_argument("--jobs", type=int, metavar="N",
                   help="worker processes (default 1); the numbers are identical to a serial "
                        "run")
    c.add_argument("--device", help="cpu (default), cuda or cuda:N (needs a CUDA GPU)")
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep from DIR/results.json (same options)")

    a = sub.add_parser("audit", help="measure forward/backward signal scale per layer at init",
                       description="Audit a model at init: per-layer forward output scale and "
                                   "backward gradient scale on a batch, with a verdict.",
                       epilog=_EPILOG_MODEL + "\n" + _AUDIT_LEGEND,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(a)
    a.add_argument("--policy", default="torch",
                   help="init to apply before auditing (default torch: as constructed)")
    a.add_argument("--plot", metavar="PNG", help="also save the audit plot to this file")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.add_argument("--correlation", action="store_true",
                   help="also trace the cosine of pairs of examples layer by layer (with the "
                        "mean-field prediction for a plain fully connected net)")
    a.add_argument("--step-lr", type=float, metavar="LR",
                   help="also measure the output change after one SGD step of this lr")
    a.add_argument("--residual", action="store_true",
                   help="also measure the residual stream's rms after each residual sum")
    _add_fail_on(a)

    pl = sub.add_parser("plan", help="show which init each parameter of a model would get",
                        description="Print the init plan of a policy for a model (what each "
                                    "parameter gets, with fans and std) without training.",
                        epilog=_EPILOG_MODEL, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(pl)
    pl.add_argument("--policy", default="auto", help="policy preset (default auto)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")
    pl.add_argument("--diff", nargs=2, metavar=("A", "B"),
                    help="show, per parameter, what changes from policy A to policy B")

    g = sub.add_parser("gains", help="list activation gains",
                       description="List every known activation with its exact variance-"
                                   "preserving gain 1/sqrt(E f(z)^2), z ~ N(0,1), and "
                                   "torch.nn.init.calculate_gain's value where torch has one.")
    g.add_argument("--json", action="store_true", help="print as JSON")
    s = sub.add_parser("schemes", help="list init schemes and policy presets",
                       description="List registered init schemes and whole-model policy presets "
                                   "(all usable with 'initwise compare --schemes').")
    s.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(_subparsers={"compare": c, "audit": a, "plan": pl, "gains": g,
                                "schemes": s})
    _add_guard_commands(sub)
    _add_coord_command(sub)
    return p


def _did_you_mean(sub: argparse.ArgumentParser, extras: list[str]) -> str:
    """An 'unrecognized arguments' message with the closest option of ``sub``."""
    import difflib

    canonical = {o: next(x for x in act.option_strings if x.startswith("--"))
                 for act in sub._actions for o in act.option_strings if o.startswith("--")}
    msg = f"unrecognized arguments: {' '.join(extras)}"
    for x in extras:
        if x.startswith("-"):
            close = difflib.get_close_matches(x.split("=", 1)[0], list(canonical), n=1,
                                              cutoff=0.6)
            if close:
                return f"{msg}; did you mean {canonical[close[0]]}?"
    return msg


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="built-in spec like mlp:depth=20 or "
                                                  "package.module:factory")
    p.add_argument("--dataset", help="take the input batch from this dataset (digits, mnist1d, "
                                     "teacher, file.npz); default: Gaussian inputs")
    p.add_argument("--input-shape", type=_csv(int), default=None, metavar="C,H,W",
                   help="shape of one input sample for Gaussian inputs (default 1,8,8)")
    p.add_argument("--n-classes", type=int, default=10, help="outputs (default 10)")
    p.add_argument("--batch", type=int, default=256, help="batch size of the inputs")


# ----------------------------------------------------------------------------- helpers


def _err(prog: str, msg: str, code: int) -> int:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    return code


def _parse_model(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``arch:k=v,...`` into arch and options; factories pass through unchanged."""
    from .compare.models import ARCHS

    head, _, rest = spec.partition(":")
    if head not in ARCHS:
        if ":" in spec:
            return spec, {}
        from ._checks import raise_unknown

        raise_unknown("model", spec, (*ARCHS, "package.module:factory"))
    opts: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        k, eq, v = item.partition("=")
        if not eq:
            raise ValueError(f"model option {item!r} must look like key=value")
        if k in ("depth", "width"):
            try:
                opts[k] = int(v)
            except ValueError:
                raise ValueError(f"model option {k} must be an integer, got {v!r}") from None
        elif k in ("activation", "norm"):
            opts[k] = v
        else:
            raise ValueError(f"unknown model option {k!r}. Valid options: activation, depth, "
                             "norm, width")
    return head, opts


def _model_and_batch(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    import torch

    from .compare.data import load_dataset
    from .compare.models import build_model, build_user_model
    from .compare.run import init_batch

    for name, v in (("--batch", args.batch), ("--n-classes", args.n_classes)):
        if v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v}")
    shape_given = args.input_shape is not None
    shape = args.input_shape if shape_given else [1, 8, 8]
    if any(v < 1 for v in shape):
        raise ValueError("--input-shape entries must be integers >= 1, got "
                         + ",".join(str(v) for v in shape))
    arch, opts = _parse_model(args.model)
    args.inputs_guessed = False
    args.own_inputs = False
    if args.dataset:
        ds = load_dataset(args.dataset, seed=0)
        x, y = init_batch(ds, args.batch, seed=0)
        in_shape, n_classes = ds.in_shape, ds.n_classes
    else:
        gen = torch.Generator().manual_seed(0)
        in_shape, n_classes = tuple(shape), args.n_classes
        x = torch.randn(args.batch, *in_shape, generator=gen)
        y = torch.randint(0, n_classes, (args.batch,), generator=gen)
    args.in_shape_used, args.n_classes_used = in_shape, n_classes
    torch.manual_seed(0)
    if ":" not in arch:
        return build_model(arch, in_shape, n_classes, **opts), x, y
    # a user factory: given what it names of these; its own example inputs replace the batch
    model, own, given = build_user_model(arch, in_shape=in_shape, n_classes=n_classes, depth=5,
                                         width=64, activation="relu")  # fmt: skip
    if own is not None:
        args.own_inputs = True
        if args.dataset or shape_given:
            print(f"initwise {args.command}: note: the factory returned its own example inputs; they are "
                  "used and --dataset / --input-shape are not (nor labels: the audit uses its "
                  "default loss)", file=sys.stderr)  # fmt: skip
        return model, own, None
    # Gaussian inputs of a default shape that a model built without in_shape may not take
    # (token ids, other sizes): plans synthesize their own; the audit tries them and says
    # what to do if they fail. A factory given in_shape built its model for them.
    args.inputs_guessed = not (args.dataset or shape_given or "in_shape" in given)
    # labels for a dataset's classes, or for the n_classes outputs the factory was asked for
    # (as for the built-in architectures); else the audit's default loss
    return model, x, y if (args.dataset or "n_classes" in given) else None


def _example_inputs(args: argparse.Namespace, x: Any) -> Any:
    """``x`` as the ``example_inputs`` of a plan, or ``None`` where it is only a guess."""
    return None if getattr(args, "inputs_guessed", False) else x


def _run_on_inputs(args: argparse.Namespace, x: Any, fn: Callable[[], Any]) -> Any:
    """``fn()``, which runs the model on ``x`` (audit, LSUV); if that fails on a guessed
    default batch, the error (same type) says how to give the model its own inputs."""
    from ._errors import InitwiseError

    try:
        return fn()
    except InitwiseError as e:
        if not getattr(args, "inputs_guessed", False) or "forward pass" not in str(e):
            raise
        hint = (f"{e}. These were Gaussian inputs of shape {tuple(x.shape)} (the default); "
                "have the factory return (model, example_inputs), e.g. (model, {'input_ids': "
                "ids}) for a language model, or pass --input-shape or --dataset")
        err = copy.copy(e)  # the same type and attributes (LSUVError.layer), a new message
        err.args = (hint, *e.args[1:])
        raise err from e


_UNMATCHED_RULES = re.compile(r"\(\d+ rules? of preset '[^']*' match(es)? nothing in this model\)")
_REST = re.compile(r":[a-z]+:`~?([^`]+)`|``([^`]+)``|`([^`]+)`")


def _dedupe_rows(text: str) -> str:
    """``row 6 6 (ReLU)`` -> ``row 6 (ReLU)``: a Sequential names its layers by their index.

    Example:
        >>> _dedupe_rows("first leaves the band at row 6 6 (ReLU); row 7 fc (Linear)")
        'first leaves the band at row 6 (ReLU); row 7 fc (Linear)'
    """
    return re.sub(r"\brow (\d+) \1 \(", r"row \1 (", text)


def _plain(text: str) -> str:
    """Drop reStructuredText markup (``code``, :func:`name`) from a docstring line.

    Example:
        >>> _plain("He et al.: ``N(0, 2/fan_in)``, see :func:`initwise.init`")
        'He et al.: N(0, 2/fan_in), see initwise.init'
    """
    return _REST.sub(lambda m: next(g for g in m.groups() if g is not None), text)


def _print_json(obj: Any, out: TextIO | None = None) -> None:
    print(json.dumps(obj, indent=1, default=str), file=out or sys.stdout)


# ----------------------------------------------------------------------------- commands


class _Progress:
    """Progress on stderr: a one-line bar on a terminal, periodic plain lines otherwise.

    The bar is cut to the terminal's width (it never wraps); off a terminal (CI logs, pipes)
    a line is printed every ``interval`` seconds and at the end. The time left comes from
    ``run_compare``, which weights every run by its expected cost (depth x epochs).
    """

    def __init__(self, mode: str, stream: TextIO, interval: float = 10.0,
                 prog: str = "initwise compare", unit: str = "runs") -> None:
        self.mode, self.stream, self.interval = mode, stream, interval
        self.prog, self.unit = prog, unit
        self.width, self.last = 0, 0.0

    @staticmethod
    def _eta(s: float) -> str:
        s = max(0, round(s))
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else \
            f"{s // 60}:{s % 60:02d}"

    def __call__(self, ev: dict[str, Any]) -> None:
        if self.mode == "off":
            return
        done, total = ev["done"], ev["total"]
        r = ev["run"]
        acc = "error" if r.error else f"acc {r.test_accuracy:.3f}"
        where = f"depth {r.depth}"
        if getattr(r, "lr", None) is not None:  # a learning-rate sweep
            where = f"depth {r.depth} width {r.width} lr {r.lr:.3g}"
            acc = "error" if r.error else f"loss {r.train_split_loss:.3f}"
        self.show(done, total, f"{int(ev['elapsed_s'])}s elapsed, ~{self._eta(ev['eta_s'])} "
                               f"left  (last: {r.scheme} {where} seed {r.seed}: {acc})")

    def show(self, done: int, total: int, text: str) -> None:
        """Draw ``done/total`` followed by ``text`` (the bar, or a periodic line)."""
        if self.mode == "off":
            return
        text = f"{done}/{total} {self.unit}  {text}"
        if self.mode == "lines":
            now = time.monotonic()
            if done == total or now - self.last >= self.interval:
                self.last = now
                self.stream.write(f"{self.prog}: {text}\n")
                self.stream.flush()
            return
        import shutil

        cols = shutil.get_terminal_size((80, 24)).columns - 1
        n = 20
        fill = round(n * done / total)
        line = f"[{'#' * fill}{'.' * (n - fill)}] {text}"[:cols]
        self.stream.write("\r" + line.ljust(self.width))
        self.width = max(self.width, len(line))
        self.stream.flush()

    def start(self, total: int, note: str = "") -> None:
        self.last = time.monotonic()
        if self.mode == "lines":
            self.stream.write(f"{self.prog}: {total} {self.unit}{note}\n")
            self.stream.flush()
        elif self.mode == "bar":
            line = f"[{'.' * 20}] 0/{total} {self.unit}  starting...{note}"
            self.width = len(line)
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self.mode == "bar" and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _compare_config(args: argparse.Namespace) -> Any:
    from .compare.presets import preset_overrides
    from .compare.run import CompareConfig

    cfg = CompareConfig()
    if args.preset:
        for k, v in preset_overrides(args.preset).items():
            setattr(cfg, k, v)
        cfg.preset = args.preset
    for key in ("schemes", "arch", "depths", "widths", "activation", "norm", "dataset",
                "optimizer", "lr", "momentum", "epochs", "batch_size", "seeds",
                "target_accuracy", "threads", "jobs", "device", "task", "loss", "target_loss",
                "lrs", "parametrizations"):
        v = getattr(args, key)
        if v is not None:
            setattr(cfg, key, v)
    if args.lr is None and args.optimizer is not None and (
            not args.preset or preset_overrides(args.preset).get("optimizer") != args.optimizer):
        # The user switched optimizer without giving --lr: use that optimizer's default lr
        # (resolved in CompareConfig.validate), not the preset's lr tuned for another one.
        cfg.lr = None
    return cfg


def _previous(out: str) -> dict[str, Any]:
    """Read what ``--resume`` continues (``ValueError`` with what is wrong).

    ``out/results.json`` (written on Ctrl-C or SIGTERM), or the checkpoint next to ``out``
    (written after every run, so it survives SIGKILL), whichever holds more runs.
    """
    from .compare.report import checkpoint_path, read_checkpoint

    found: list[dict[str, Any]] = []
    path = os.path.join(out, "results.json")
    for p in (path, checkpoint_path(out)):
        try:
            if p == path:
                with open(p, encoding="utf-8") as f:
                    prev = json.load(f)
            else:
                prev = read_checkpoint(p)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise ValueError(f"--resume: cannot read {p}: {e}") from None
        if not isinstance(prev, dict) or not isinstance(prev.get("runs"), list):
            raise ValueError(f"--resume: {p} is not an initwise compare results.json")
        found.append(prev)
    if not found:
        raise ValueError(f"--resume: nothing to resume, {path} does not exist")
    return max(found, key=lambda d: len(d["runs"]))


class _Checkpoint:
    """Progress callback wrapper: saves the finished runs after each one (for --resume)."""

    def __init__(self, inner: Any, out: str, cfg: Any, previous: dict[str, Any] | None
                 ) -> None:
        from dataclasses import asdict

        self.inner, self.out = inner, out
        self.state: dict[str, Any] = {"checkpoint": True, "config": None, "runs": list(
            (previous or {}).get("runs") or []), "wall_time_s": float(
            (previous or {}).get("wall_time_s") or 0.0)}
        self.cfg, self.asdict, self.t0 = cfg, asdict, time.perf_counter()
        self.base_wall = self.state["wall_time_s"]

    def __call__(self, ev: dict[str, Any]) -> None:
        from .compare.report import append_checkpoint, write_checkpoint

        run = ev["run"].to_dict()
        wall = self.base_wall + time.perf_counter() - self.t0
        with contextlib.suppress(OSError):  # a convenience: the report is written at the end
            if self.state["config"] is None:  # the first run: the whole file (header, old runs)
                self.state["config"] = self.asdict(self.cfg)
                self.state["runs"].append(run)
                self.state["wall_time_s"] = wall
                write_checkpoint(self.out, self.state)
            else:  # then one line per run
                append_checkpoint(self.out, run, wall)
        self.inner(ev)


def _on_sigterm() -> Any:
    """Treat SIGTERM like Ctrl-C during the sweep (a partial report, then --resume)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from .compare.report import FIGURE_MODULES, out_problem
    from .compare.run import WorkerPool

    prog = "initwise compare"
    try:
        cfg = _compare_config(args)
        cfg.validate()
        previous = _previous(args.out) if args.resume else None
    except (ValueError, TypeError) as e:
        return _err(prog, str(e), 2)
    bad_out = out_problem(args.out)
    if bad_out is not None:
        return _err(prog, bad_out, 2)
    if cfg.jobs <= 1 or cfg.lrs is not None:  # a learning-rate sweep runs its own workers
        return _compare_and_report(args, argv, cfg, previous, None)
    # One pool for the runs and the report's figures, started before the checks of the data
    # and architecture so that the workers import torch meanwhile.
    with WorkerPool(cfg, preload=FIGURE_MODULES) as pool:
        return _compare_and_report(args, argv, cfg, previous, pool)


def _compare_and_report(args: argparse.Namespace, argv: list[str], cfg: Any,
                        previous: dict[str, Any] | None, pool: Any) -> int:
    import signal

    from .compare.report import ReportInterrupted, format_summary, write_report
    from .compare.run import dist_env, run_compare
    from .compare.transfer import run_transfer

    prog = "initwise compare"
    rank, world = dist_env()
    mode = "off" if args.quiet or rank != 0 else "bar" if sys.stderr.isatty() else "lines"
    try:  # seconds between progress lines off a terminal
        interval = float(os.environ.get("INITWISE_PROGRESS_INTERVAL", "10"))
    except ValueError:
        interval = 10.0
    progress = _Progress(mode, sys.stderr, interval)
    t0 = time.perf_counter()
    total = cfg.seeds * len(cfg.depths) * len(cfg.widths) * (
        len(cfg.schemes) if cfg.lrs is None else len(cfg.parametrizations) * len(cfg.lrs))
    note = (f", {cfg.jobs} worker processes" if cfg.jobs > 1 else "") + (
        f", {world} torchrun ranks" if world > 1 else "") + (
        f", resuming {args.out}/results.json" if previous is not None else "")
    progress.start(total, note)
    old_term = _on_sigterm()
    try:  # SIGTERM is Ctrl-C until the report is written, figures included
        # After every run, the finished runs are saved next to --out (one rank: not under torchrun)
        callback = _Checkpoint(progress, args.out, cfg, previous) if world == 1 else progress
        try:
            if cfg.lrs is None:
                result = run_compare(cfg, callback=callback, command=["initwise", *argv],
                                     previous=previous, pool=pool)
            else:
                result = run_transfer(cfg, callback=callback, command=["initwise", *argv],
                                      previous=previous)
        except (ValueError, TypeError, FileNotFoundError) as e:
            progress.close()
            return _err(prog, str(e), 2)
        except (ImportError, RuntimeError) as e:
            progress.close()
            return _err(prog, str(e), 1)
        progress.close()
        if result.rank != 0:
            return 0  # rank 0 gathered every run and writes the one report
        try:  # SIGTERM still acts as Ctrl-C here: the report keeps the figures drawn so far
            paths = write_report(result, args.out, pool=pool)
        except ReportInterrupted:
            print(f"{prog}: interrupted while drawing figures; the report in {args.out} has "
                  "every number, some figures are missing", file=sys.stderr)
            return 130
        except KeyboardInterrupt:  # before the new report was swapped in: out is as it was
            again = ("the finished runs are saved next to it: run the same command with "
                     "--resume to write it" if world == 1 and cfg.lrs is None else
                     "rerun to write it")
            print(f"{prog}: interrupted while writing the report; {args.out} was not "
                  f"updated ({again})", file=sys.stderr)
            return 130
        except (OSError, ValueError) as e:
            if args.json:
                _print_json(result.to_dict())
            return _err(prog, f"could not write the report to {args.out!r}: {e}", 1)
        summary_stream = sys.stderr if args.json else sys.stdout
        if args.json:
            _print_json(result.to_dict())
        if not args.quiet:
            print(format_summary(result), file=summary_stream)
            print("", file=summary_stream)
        print(f"report: {paths['html']} ({time.perf_counter() - t0:.0f} s)", file=summary_stream)
        if result.partial:
            again = "continue with --resume" if cfg.lrs is None else "rerun to complete it"
            print(f"{prog}: interrupted; partial report written to {args.out} "
                  f"({len(result.runs)}/{result.total_runs} runs; {again})", file=sys.stderr)
            return 130
        if result.runs and all(r.error is not None for r in result.runs):
            first = result.runs[0].error
            return _err(prog, f"all runs failed (first error: {first}); report "
                        f"written to {args.out}", 1)
        return 0
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _cmd_audit(args: argparse.Namespace) -> int:
    import torch

    _check_fail_on(args)
    model, x, y = _model_and_batch(args)
    plan = None
    lsuv = args.policy.partition(":")[0] == "lsuv"
    if args.policy != "torch" and not lsuv:
        from . import init as init_model
        from .compare.schemes import policy_of

        # a preset, a scheme, or a parametrized spec such as normal:std=0.01 (as compare)
        plan = init_model(model, policy=policy_of(args.policy),
                          example_inputs=_example_inputs(args, x), seed=0)
    elif lsuv:  # lsuv or lsuv:tol=0.05
        from .compare.schemes import apply_scheme

        _run_on_inputs(args, x, lambda: apply_scheme(model, args.policy, x, seed=0))
    from ._audit import audit

    # a factory's own inputs come without labels: the audit's default loss (a seeded random
    # projection of the output) then drives the backward pass
    loss_fn = None if y is None else torch.nn.functional.cross_entropy
    rep = _run_on_inputs(args, x, lambda: audit(
        model, x, targets=y, loss_fn=loss_fn, plan=plan, correlation=bool(args.correlation),
        step_lr=args.step_lr, residual=bool(args.residual)))  # fmt: skip
    if args.plot:
        rep.plot(args.plot)
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(_dedupe_rows(str(rep)))
        print("\n" + _AUDIT_LEGEND.rstrip())
    return _audit_exit(args, rep)


def _cmd_plan(args: argparse.Namespace) -> int:
    model, x, _ = _model_and_batch(args)
    from .compare.schemes import policy_of
    from .model import plan as make_plan

    def policy(spec: str) -> Any:  # a parametrized spec (normal:std=0.01) as in compare
        return policy_of(spec) if ":" in spec else spec

    if args.diff:
        x = _example_inputs(args, x)
        return _plan_diff(make_plan(model, policy(args.diff[0]), example_inputs=x),
                          make_plan(model, policy(args.diff[1]), example_inputs=x), args.json)
    plan = make_plan(model, policy(args.policy), example_inputs=_example_inputs(args, x))
    if args.json:
        _print_json(plan.to_dict())
    else:
        # A preset's rules for layers this model does not have are not news: leave them out.
        print("\n".join(ln for ln in str(plan).splitlines()
                        if not _UNMATCHED_RULES.fullmatch(ln.strip())))
    return 0


def _plan_diff(a: Any, b: Any, as_json: bool) -> int:
    """Print ``a.diff(b)``: one row per changed field of each parameter, or JSON."""
    changes = a.diff(b)
    if as_json:
        _print_json({"a": a.policy, "b": b.policy, "tensors": len(a.entries),
                     "changes": [{"name": c.name, "status": c.status,
                                  "changes": {k: list(v) for k, v in c.changes.items()}}
                                 for c in changes]})
        return 0

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return ", ".join(f"{k}={fmt(x)}" for k, x in v.items()) or "-"
        return "-" if v is None else str(v)

    print(f"Plan diff: A={a.policy!r} -> B={b.policy!r}: {len(changes)} of {len(a.entries)} "
          "tensors change")
    if not changes:
        print("(no parameter changes)")
        return 0
    rows = [("name", "field", "A", "B")]
    for c in changes:
        if c.status != "changed":
            rows.append((c.name, c.status, "", ""))
        for i, (k, (x, y)) in enumerate(c.changes.items()):
            rows.append((c.name if i == 0 else "", k, fmt(x), fmt(y)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _cmd_gains(args: argparse.Namespace) -> int:
    import torch

    from . import gains as g

    names = list(getattr(g, "ACTIVATIONS", ()))
    if not names:
        from .compare.models import ACTIVATIONS

        names = list(ACTIVATIONS)
    rows = []
    for n in names:
        try:
            exact: float | None = float(g.gain(n))
        except (ValueError, KeyError, TypeError):
            exact = None
        try:  # torch's own value, None where torch rejects the name
            torch_gain: float | None = float(torch.nn.init.calculate_gain(n))
        except (ValueError, KeyError, TypeError):
            torch_gain = None
        rows.append({"activation": n, "gain": exact, "torch_calculate_gain": torch_gain})
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'activation':<14} {'gain (exact)':>12} {'torch':>8}")
    for r in rows:
        ex = "–" if r["gain"] is None else f"{r['gain']:.4f}"
        tg = "–" if r["torch_calculate_gain"] is None else f"{r['torch_calculate_gain']:.4f}"
        print(f"{r['activation']:<14} {ex:>12} {tg:>8}")
    return 0


def _cmd_schemes(args: argparse.Namespace) -> int:
    import inspect

    from .compare.schemes import scheme_names
    from .policy import PRESETS, presets
    from .registry import schemes as registered

    schemes = [{"name": s.name, "params": dict(s.params), "formula": s.formula, "paper": s.paper,
                "summary": s.doc.splitlines()[0] if s.doc else ""} for s in registered()]
    policies = [{"name": n, "summary": (inspect.getdoc(getattr(presets, n)) or "").splitlines()[0]}
                for n in PRESETS]
    names = list(scheme_names())
    data = {"schemes": schemes, "policies": policies, "compare_names": names}
    if args.json:
        _print_json(data)
        return 0
    print("Schemes (initwise.get_scheme(name), in-place functions name_):")
    for s in schemes:
        print(f"  {s['name']:<18} {_plain(str(s['formula']))}")
    print("\nPolicy presets (initwise.init(model, policy=...)):")
    for p in policies:
        print(f"  {p['name']:<18} {_plain(p['summary'])}")
    print("\nNames accepted by 'initwise compare --schemes':")
    print("  " + ", ".join(names))
    return 0


# ----------------------------------------------------------------------------- CI guards
# `initwise audit --fail-on`, `initwise check --strict`, `initwise digest`: exit 0 when clean,
# 1 on findings, 2 on a usage error.

_FAIL_ON = ("vanishing", "exploding")


def _add_fail_on(a: argparse.ArgumentParser) -> None:
    a.add_argument("--fail-on", type=_csv(str), metavar="V,...", default=None,
                   help="exit 1 when the verdict (forward, backward or output) is one of these: "
                        "vanishing, exploding")


def _audit_exit(args: argparse.Namespace, rep: Any) -> int:
    fail_on = getattr(args, "fail_on", None)
    if not fail_on:
        return 0
    verdicts = {rep.verdict, rep.forward_verdict, rep.backward_verdict}
    if rep.output is not None:
        verdicts.add(rep.output.verdict)
    return 1 if verdicts & set(fail_on) else 0


def _add_guard_commands(sub: Any) -> None:
    d = sub.add_parser("digest", help="hash a model's initial weights (pin them in CI)",
                       description="SHA-256 of each parameter of MODEL after init with POLICY "
                                   "and SEED (keyed engine: stable across platforms), and a "
                                   "total. Without --policy: the weights as constructed.",
                       epilog=_EPILOG_MODEL, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(d)
    d.add_argument("--policy", default=None, help="init policy preset (default: as constructed)")
    d.add_argument("--seed", type=int, default=0, help="seed of the keyed engine (default 0)")
    d.add_argument("--json", action="store_true", help="print the digest as JSON")
    c = sub.add_parser("check", help="provenance guard: uninitialized, low-precision, untied",
                       description="Check MODEL's parameters for values that were never "
                                   "initialized, sampled in bf16/fp16, or broken ties. Exit 1 "
                                   "on an error finding (with --strict: on any finding).",
                       epilog=_EPILOG_MODEL, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(c)
    c.add_argument("--policy", default="torch",
                   help="init to apply before checking (default torch: as constructed)")
    c.add_argument("--strict", action="store_true", help="fail on warnings and infos too")
    c.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_coord_command(sub: Any) -> None:
    k = sub.add_parser(
        "coord-check", help="the muP coordinate check: layer sizes over training, across widths",
        description="Build MODEL at each width (and depth), parametrize it, train a few steps "
                    "on one batch and print, per layer, the log-log slope of its mean |x| "
                    "against width and a verdict (flat / grows / shrinks). Tensor Programs V, "
                    "Fig. 5. The width (and depth) in MODEL are replaced by the sweep.",
        epilog=_EPILOG_MODEL + "\nexample:\n  initwise coord-check mlp:depth=4 --widths "
                               "64,128,256,512,1024,2048 --parametrization sp --plot coord.png\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(k)
    k.add_argument("--widths", type=_csv(int), default=[64, 128, 256, 512, 1024],
                   metavar="W,...", help="widths (default 64,128,256,512,1024)")
    k.add_argument("--depths", type=_csv(int), metavar="D,...", help="also sweep depth")
    k.add_argument("--parametrization", default="mup",
                   help="sp, mup, completep, spectral, or none (as built, one lr); default mup")
    k.add_argument("--steps", type=int, default=4, help="optimizer steps (default 4)")
    k.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    k.add_argument("--lr", type=float, default=0.01, help="base learning rate (default 0.01)")
    k.add_argument("--seed", type=int, default=0, help="seed of construction and init")
    k.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="average over N seeds (seed .. seed+N-1; default 1)")
    k.add_argument("--plot", metavar="PNG", help="save the plot (one panel per step)")
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.add_argument("--strict", action="store_true",
                   help="exit 1 unless every layer is flat in width")


def _shapes(factory: Any, *size: int) -> list[tuple[str, tuple[int, ...]]] | None:
    """The parameter shapes of ``factory(*size)`` built on the meta device (None: it cannot)."""
    import torch

    try:
        with torch.device("meta"):
            model = factory(*size)
    except Exception:  # e.g. a factory that needs real tensors: coord_check will say more
        return None
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def _check_factory_scales(arch: str, factory: Any, widths: list[int],
                          depths: list[int] | None) -> None:
    """A factory that ignores ``width`` (or ``depth``) builds one model at every size, and
    the coordinate check would call every layer flat: refuse it."""
    ws = sorted(set(widths))
    if len(ws) >= 2:
        d = None if not depths else depths[0]
        a, b = (_shapes(factory, w) if d is None else _shapes(factory, w, d)
                for w in (ws[0], ws[-1]))
        if a is not None and a == b:
            raise ValueError(f"model {arch!r} has the same parameters at width {ws[0]} and "
                             f"{ws[-1]}: its factory ignores width=, so a coordinate check "
                             "across widths would measure one model; build the model from "
                             "width=")
    ds = sorted(set(depths or []))
    if len(ds) >= 2:
        a, b = (_shapes(factory, ws[0], d) for d in (ds[0], ds[-1]))
        if a is not None and a == b:
            raise ValueError(f"model {arch!r} has the same parameters at depth {ds[0]} and "
                             f"{ds[-1]}: its factory ignores depth=; build the model from "
                             "depth=")


def _cmd_coord(args: argparse.Namespace) -> int:
    from ._param.coord import coord_check
    from .compare.models import build_model, build_user_model

    _model, x, y = _model_and_batch(args)  # validates the spec and builds the batch
    arch, opts = _parse_model(args.model)
    in_shape, n_classes = args.in_shape_used, args.n_classes_used
    depth = opts.pop("depth", 5)
    opts.pop("width", None)
    user = ":" in arch
    if user and y is None and not args.own_inputs:
        raise ValueError(
            f"coord-check trains {arch!r} on a batch, and random inputs have no labels: give "
            "--dataset (digits, mnist1d, teacher or a .npz; the factory gets its in_shape and "
            "n_classes), or let the factory return (model, example_inputs) for a model whose "
            "output carries its own loss")

    def factory(width: int, d: int | None = None) -> Any:
        d = depth if d is None else d
        if user:  # as audit and plan call it; its own example inputs are the batch
            return build_user_model(arch, in_shape=in_shape, n_classes=n_classes, depth=d,
                                    width=width, activation="relu")[0]
        return build_model(arch, in_shape, n_classes, width=width, depth=d, **opts)

    if user:
        _check_factory_scales(arch, factory, args.widths, args.depths)
    name = None if args.parametrization == "none" else args.parametrization
    mode = "off" if args.quiet or args.json else "bar" if sys.stderr.isatty() else "lines"
    progress = _Progress(mode, sys.stderr, 10.0, prog="initwise coord-check", unit="models")
    total = len(args.widths) * len(args.depths or [None])
    progress.start(total)
    try:
        rep = coord_check(
            factory, args.widths, x, targets=y, parametrization=name, steps=args.steps,
            optimizer=args.optimizer, lr=args.lr, depths=args.depths, seed=args.seed,
            seeds=args.seeds, progress=lambda ev: progress.show(ev.done, ev.total, (
                f"{int(ev.elapsed_s)}s elapsed  (last: width {ev.width}"
                + (f" depth {ev.depth})" if ev.depth else ")"))))
    finally:
        progress.close()
    if args.plot:
        rep.plot(args.plot)
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(rep.table())
        if args.depths and len(args.depths) > 1:
            print("\nverdicts across depth: " + ", ".join(
                f"{k}: {v}" for k, v in rep.verdicts(axis="depth").items()))
    return 1 if args.strict and not rep.ok else 0


def _check_fail_on(args: argparse.Namespace) -> None:
    bad = [v for v in (getattr(args, "fail_on", None) or []) if v not in _FAIL_ON]
    if bad:
        raise ValueError(f"--fail-on: unknown verdict(s) {', '.join(bad)}; valid: "
                         + ", ".join(_FAIL_ON))


def _cmd_digest(args: argparse.Namespace) -> int:
    from ._checks import check_seed
    from ._guard import digest

    check_seed(args.seed, "digest")
    model, x, _ = _model_and_batch(args)
    from .compare.schemes import policy_of

    spec = args.policy
    rep = digest(model, policy_of(spec) if spec and ":" in spec else spec, seed=args.seed,
                 example_inputs=_example_inputs(args, x))
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(rep)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from ._guard import check

    model, x, _ = _model_and_batch(args)
    if args.policy != "torch":
        from .compare.schemes import apply_scheme

        lsuv = args.policy.partition(":")[0] == "lsuv"  # runs the inputs; a plan only reads them
        _run_on_inputs(args, x, lambda: apply_scheme(
            model, args.policy, x if lsuv else _example_inputs(args, x), seed=0))
    rep = check(model, strict=args.strict)
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(rep)
    return 0 if rep.ok else 1


_GUARD_COMMANDS = {"digest": _cmd_digest, "check": _cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``initwise`` command line with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit code: 0 success, 1 failure, 2 bad arguments, 130 interrupted.

    Example:
        >>> main(["--version"])
        initwise 0.1.0
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            sub = (args._subparsers or {}).get(args.command)
            if sub is None:
                parser.error(f"unrecognized arguments: {' '.join(extras)}")
            sub.error(_did_you_mean(sub, extras))  # this command's usage, not the top level
    except SystemExit as e:  # argparse: 2 for usage errors, 0 for --help
        return int(e.code) if isinstance(e.code, int) else 2
    if args.version:
        from . import __version__

        print(f"initwise {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "compare":
            return _cmd_compare(args, argv)
        if args.command == "audit":
            return _cmd_audit(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "gains":
            return _cmd_gains(args)
        if args.command == "coord-check":
            return _cmd_coord(args)
        if args.command in _GUARD_COMMANDS:
            return _GUARD_COMMANDS[args.command](args)
        return _cmd_schemes(args)
    except (ValueError, FileNotFoundError) as e:
        return _err(f"initwise {args.command}", str(e), 2)
    except (RuntimeError, ImportError, TypeError) as e:
        return _err(f"initwise {args.command}", str(e), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `initwise audit ... | head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # e.g. --plot into a missing folder: a message, not a traceback
        return _err(f"initwise {args.command}", str(e), 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
