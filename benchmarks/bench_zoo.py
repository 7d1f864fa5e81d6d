"""The model zoo under three inits: ``auto``, the family's own init, and initwise's ``torch``.

For every entry of ``tests/_zoo.py`` (tiny configs, built offline), per init:

- ``loss``: the model's own initial loss (eval, float32) and its distance to ``ln n`` (``ln V``
  for language models, ``ln C`` for classifiers, ``ln B`` for contrastive);
- ``med|ln r|`` / ``max|ln r|``: median and max over the audit's rows of ``|ln ratio|``, the
  per-layer output rms against its segment's reference (``initwise.audit``, train mode,
  default loss); 0 is a perfectly preserved scale, ``ln 10 = 2.3`` is the audit's band edge;
- the time of ``init(model, "auto")`` against the time of building the model (its own init
  included), as a ratio measured in the same run.

    python benchmarks/bench_zoo.py [--models gpt2,mixtral] [--repeats 3]

Not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import initwise

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
_zoo: Any = importlib.import_module("_zoo")

INITS = ("auto", "own", "torch")


def _scale_summary(model: torch.nn.Module, inputs: Any) -> tuple[float, float, str]:
    """(median, max) of |ln ratio| over the audit's rows, and the verdict."""
    try:
        report = initwise.audit(model, inputs)
    except Exception as exc:
        return math.nan, math.nan, f"error: {type(exc).__name__}"
    logs = [abs(math.log(r.ratio)) for r in report.rows
            if r.flag != "n/a" and math.isfinite(r.ratio) and r.ratio > 0]
    if not logs:
        return math.nan, math.nan, report.verdict
    return statistics.median(logs), max(logs), report.verdict


def measure(entry: Any, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for how in INITS:
        model = _zoo.build(entry)
        if how != "own":
            initwise.init(model, how, seed=0)
        batch = entry.make_batch(model)
        try:
            loss = _zoo.initial_loss(model, entry, batch)
        except Exception as exc:
            loss = math.nan
            print(f"  {entry.name}/{how}: loss failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        med, mx, verdict = _scale_summary(model, batch[0])
        rows.append(dict(name=entry.name, init=how, loss=loss, target=entry.expected_loss,
                         med=med, max=mx, verdict=verdict))
    build_t, init_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = _zoo.build(entry)
        build_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        initwise.init(model, "auto", seed=0)
        init_t.append(time.perf_counter() - t0)
    b, i = statistics.median(build_t), statistics.median(init_t)
    rows[0].update(build_s=b, init_s=i)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    names = [n for n in args.models.split(",") if n] or [e.name for e in _zoo.ZOO]
    print(f"{'model':<10} {'init':<6} {'loss':>8} {'ln n':>6} {'Δ':>7} {'med|ln r|':>9} "
          f"{'max|ln r|':>9} {'verdict':<10} {'build ms':>9} {'init ms':>8} {'init/build':>10}")
    for name in names:
        entry = _zoo.BY_NAME[name]
        try:
            rows = measure(entry, args.repeats)
        except _zoo.ZooSkip as exc:
            print(f"{name:<10} skipped: {exc}")
            continue
        for r in rows:
            target = r["target"] if r["target"] is not None else math.nan
            timing = ""
            if "build_s" in r:
                timing = (f" {1e3 * r['build_s']:>9.1f} {1e3 * r['init_s']:>8.1f} "
                          f"{r['init_s'] / r['build_s']:>10.2f}")
            print(f"{r['name']:<10} {r['init']:<6} {r['loss']:>8.2f} {target:>6.2f} "
                  f"{r['loss'] - target:>+7.2f} {r['med']:>9.3f} {r['max']:>9.2f} {r['verdict']:<10}{timing}")


if __name__ == "__main__":
    main()
