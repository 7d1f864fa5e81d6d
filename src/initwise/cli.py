"""The ``initwise`` command line: compare, audit, plan, gains, schemes.

Thin layers over the library. Heavy imports (torch, the library, matplotlib) happen inside the
sub-commands so that ``initwise --help`` is fast. Exit codes: 0 success, 1 runtime failure,
2 bad arguments, 130 interrupted (``compare`` still writes a partial report).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
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
  initwise gains
  initwise schemes

Run 'initwise COMMAND --help' for the options of each command.
"""

_EPILOG_COMPARE = """\
examples:
  initwise compare
      built-in demo: ReLU MLPs (width 128) of depth 5, 15 and 30 on scikit-learn's digits,
      schemes torch,xavier,kaiming,auto,lsuv,orthogonal, SGD lr 0.005, 10 epochs, 3 seeds
      (about a minute); writes initwise-report/index.html
  initwise compare --preset he2015          30-layer ReLU MLP, Xavier stalls, Kaiming trains
  initwise compare --preset seed-mlp        64-256-128-10 MLP with Adam, torch vs kaiming
  initwise compare --preset deep-resnet     16 unnormalized residual blocks: fixup, zero_residual
  initwise compare --arch resnet --norm none --schemes torch,fixup,zero_residual --depths 8
  initwise compare --dataset mydata.npz --arch mypkg.models:make_net --schemes torch,kaiming
  initwise compare --depths 10,20,40 --activation tanh --schemes xavier,kaiming --seeds 5

MODEL FACTORIES: --arch package.module:factory imports factory and calls
  factory(in_shape=..., n_classes=..., depth=..., width=..., activation=...) -> nn.Module
DATASETS: digits (needs scikit-learn), mnist1d, teacher, or a .npz file with arrays X
  (n_samples, ...) and y (n_samples integer labels).
The winner per depth is the best mean test accuracy; it is called significant when Welch's
t-test against the runner-up over seeds gives p < 0.05. Ctrl-C writes a partial report.
"""

_EPILOG_MODEL = """\
MODEL is a built-in architecture with options, e.g.
  mlp:depth=20,width=128,activation=gelu   cnn:depth=6   resnet:depth=8,norm=none
  resmlp:depth=16   transformer:depth=4
or a factory 'package.module:factory' called as
  factory(in_shape=..., n_classes=..., depth=..., width=..., activation=...).
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


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="initwise",
        description="Initialize PyTorch networks correctly, and measure that you did.",
        epilog=_EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser(
        "compare", help="train a network under several init schemes and write a report",
        description="Train the same network under several init schemes (same data split and "
                    "batch order per seed), measure signal scale at init, loss/accuracy curves, "
                    "gradient norms, steps to a target accuracy and divergence, and write an "
                    "HTML/Markdown/JSON report with figures.",
        epilog=_EPILOG_COMPARE, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--preset", help="a named experiment: default, he2015, seed-mlp, "
                                    "tanh-xavier, deep-resnet (options below override it)")
    c.add_argument("--schemes", type=_csv(str), metavar="A,B,...",
                   help="init schemes: torch (PyTorch default), lsuv, or any initwise policy "
                        "preset / scheme name (see 'initwise schemes')")
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
    c.add_argument("--epochs", type=int, help="training epochs per run (default 10)")
    c.add_argument("--batch-size", type=int, help="mini-batch size (default 64)")
    c.add_argument("--seeds", type=int, metavar="N", help="number of seeds 0..N-1 (default 3)")
    c.add_argument("--target-accuracy", type=float, metavar="ACC",
                   help="report the steps needed to reach this test accuracy (default 0.9)")
    c.add_argument("--out", default="initwise-report", metavar="DIR",
                   help="report folder (default: initwise-report)")
    c.add_argument("--json", action="store_true", help="print the results JSON to stdout")
    c.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    c.add_argument("--threads", type=int, help="torch CPU threads (default 1: fastest for small models; "
                        "raise it for large user models)")

    a = sub.add_parser("audit", help="measure forward/backward signal scale per layer at init",
                       description="Audit a model at init: per-layer forward output scale and "
                                   "backward gradient scale on a batch, with a verdict.",
                       epilog=_EPILOG_MODEL, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(a)
    a.add_argument("--policy", default="torch",
                   help="init to apply before auditing (default torch: as constructed)")
    a.add_argument("--plot", metavar="PNG", help="also save the audit plot to this file")
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_fail_on(a)

    pl = sub.add_parser("plan", help="show which init each parameter of a model would get",
                        description="Print the init plan of a policy for a model (what each "
                                    "parameter gets, with fans and std) without training.",
                        epilog=_EPILOG_MODEL, formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(pl)
    pl.add_argument("--policy", default="auto", help="policy preset (default auto)")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON")

    g = sub.add_parser("gains", help="list activation gains",
                       description="List every known activation with its exact variance-"
                                   "preserving gain 1/sqrt(E f(z)^2), z ~ N(0,1), and "
                                   "torch.nn.init.calculate_gain's value where torch has one.")
    g.add_argument("--json", action="store_true", help="print as JSON")
    s = sub.add_parser("schemes", help="list init schemes and policy presets",
                       description="List registered init schemes and whole-model policy presets "
                                   "(all usable with 'initwise compare --schemes').")
    s.add_argument("--json", action="store_true", help="print as JSON")
    _add_guard_commands(sub)
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="built-in spec like mlp:depth=20 or "
                                                  "package.module:factory")
    p.add_argument("--dataset", help="take the input batch from this dataset (digits, mnist1d, "
                                     "teacher, file.npz); default: Gaussian inputs")
    p.add_argument("--input-shape", type=_csv(int), default=[1, 8, 8], metavar="C,H,W",
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
    from .compare.models import build_model
    from .compare.run import init_batch

    for name, v in (("--batch", args.batch), ("--n-classes", args.n_classes)):
        if v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v}")
    if any(v < 1 for v in args.input_shape):
        raise ValueError("--input-shape entries must be integers >= 1, got "
                         + ",".join(str(v) for v in args.input_shape))
    arch, opts = _parse_model(args.model)
    if args.dataset:
        ds = load_dataset(args.dataset, seed=0)
        x, y = init_batch(ds, args.batch, seed=0)
        in_shape, n_classes = ds.in_shape, ds.n_classes
    else:
        gen = torch.Generator().manual_seed(0)
        in_shape, n_classes = tuple(args.input_shape), args.n_classes
        x = torch.randn(args.batch, *in_shape, generator=gen)
        y = torch.randint(0, n_classes, (args.batch,), generator=gen)
    torch.manual_seed(0)
    model = build_model(arch, in_shape, n_classes, **opts)
    return model, x, y


def _print_json(obj: Any, out: TextIO | None = None) -> None:
    print(json.dumps(obj, indent=1, default=str), file=out or sys.stdout)


# ----------------------------------------------------------------------------- commands


class _Progress:
    """A one-line progress bar with time remaining on stderr (TTY only)."""

    def __init__(self, enabled: bool, stream: TextIO) -> None:
        self.enabled, self.stream, self.width = enabled, stream, 0

    def __call__(self, ev: dict[str, Any]) -> None:
        if not self.enabled:
            return
        done, total = ev["done"], ev["total"]
        n = 24
        fill = round(n * done / total)
        eta = round(ev["eta_s"])
        r = ev["run"]
        acc = "error" if r.error else f"acc {r.test_accuracy:.3f}"
        line = (f"\r[{'#' * fill}{'.' * (n - fill)}] {done}/{total} runs  "
                f"{int(ev['elapsed_s'])}s elapsed, ~{eta // 60}:{eta % 60:02d} left  "
                f"(last: {r.scheme} d={r.depth} seed {r.seed} {acc})")
        self.width = max(self.width, len(line))
        self.stream.write(line.ljust(self.width))
        self.stream.flush()

    def start(self, total: int) -> None:
        if self.enabled:
            line = f"[{'.' * 24}] 0/{total} runs  starting..."
            self.width = len(line)
            self.stream.write(line)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.width:
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
                "target_accuracy", "threads"):
        v = getattr(args, key)
        if v is not None:
            setattr(cfg, key, v)
    if args.lr is None and args.optimizer is not None and (
            not args.preset or preset_overrides(args.preset).get("optimizer") != args.optimizer):
        # The user switched optimizer without giving --lr: use that optimizer's default lr
        # (resolved in CompareConfig.validate), not the preset's lr tuned for another one.
        cfg.lr = None
    return cfg


def _prepare_out(out: str) -> str | None:
    """Create the report folder and check it is writable; return an error message or None."""
    import os
    import tempfile

    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out!r} exists and is not a directory"
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        return f"--out {out!r} is not a writable directory ({e.strerror or e})"
    return None


def _cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from .compare.report import format_summary, write_report
    from .compare.run import run_compare

    try:
        cfg = _compare_config(args)
        cfg.validate()
    except ValueError as e:
        return _err("initwise compare", str(e), 2)
    bad_out = _prepare_out(args.out)
    if bad_out is not None:
        return _err("initwise compare", bad_out, 2)
    progress = _Progress(sys.stderr.isatty() and not args.quiet, sys.stderr)
    t0 = time.perf_counter()
    progress.start(cfg.seeds * len(cfg.depths) * len(cfg.widths) * len(cfg.schemes))
    try:
        result = run_compare(cfg, callback=progress, command=["initwise", *argv])
    except (ValueError, TypeError, FileNotFoundError) as e:
        progress.close()
        return _err("initwise compare", str(e), 2)
    except ImportError as e:
        progress.close()
        return _err("initwise compare", str(e), 1)
    progress.close()
    try:
        paths = write_report(result, args.out)
    except KeyboardInterrupt:
        print(f"initwise compare: interrupted while drawing figures; results.json, report.md "
              f"and index.html written to {args.out} (some figures missing)", file=sys.stderr)
        return 130
    except OSError as e:
        if args.json:
            _print_json(result.to_dict())
        return _err("initwise compare", f"could not write the report to {args.out!r}: {e}", 1)
    summary_stream = sys.stderr if args.json else sys.stdout
    if args.json:
        _print_json(result.to_dict())
    if not args.quiet:
        print(format_summary(result), file=summary_stream)
        print(f"\nreport: {paths['html']} ({time.perf_counter() - t0:.0f} s)",
              file=summary_stream)
    if result.partial:
        print(f"initwise compare: interrupted; partial report written to {args.out}",
              file=sys.stderr)
        return 130
    if result.runs and all(r.error is not None for r in result.runs):
        first = result.runs[0].error
        return _err("initwise compare", f"all runs failed (first error: {first}); report "
                    f"written to {args.out}", 1)
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    import torch

    _check_fail_on(args)
    model, x, y = _model_and_batch(args)
    if args.policy != "torch":
        from .compare.schemes import apply_scheme

        apply_scheme(model, args.policy, x, seed=0)
    from .audit import audit

    rep = audit(model, x, targets=y, loss_fn=torch.nn.functional.cross_entropy)
    if args.plot:
        rep.plot(args.plot)
    if args.json:
        _print_json(rep.to_dict())
    else:
        print(rep)
    return _audit_exit(args, rep)


def _cmd_plan(args: argparse.Namespace) -> int:
    model, x, _ = _model_and_batch(args)
    from .plan import plan as make_plan

    plan = make_plan(model, args.policy, example_inputs=x)
    if args.json:
        _print_json(plan.to_dict())
    else:
        print(plan)
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
        print(f"  {s['name']:<18} {s['formula']}")
    print("\nPolicy presets (initwise.init(model, policy=...)):")
    for p in policies:
        print(f"  {p['name']:<18} {p['summary']}")
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
    rep = digest(model, args.policy, seed=args.seed, example_inputs=x)
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

        apply_scheme(model, args.policy, x, seed=0)
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
        args = parser.parse_args(argv)
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
