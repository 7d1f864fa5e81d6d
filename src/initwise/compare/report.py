"""Write a comparison report: ``index.html``, ``report.md``, ``results.json``, ``results.csv``
and PNG figures.

``index.html`` is self-contained (inline CSS and JavaScript, data embedded as JSON, figures
embedded as base64 PNG) and opens from disk, offline: its interactive charts (toggle schemes,
hover for values) are drawn as inline SVG by a few lines of JavaScript written here, no CDN.
``results.json`` holds every number, the configuration, the command line and versions;
``results.csv`` one row per run. Figures need matplotlib (the ``report`` extra); without it
the other files are still written.

The whole folder is written into a fresh private staging folder next to ``out`` and swapped
into place at the end (an atomic exchange on Linux), so after any kill ``out`` holds one
complete report, never files of two runs, and never follows a symlink planted at a
predictable name. Every scheme has a fixed colour, the same in every figure and every report
(:func:`scheme_color`). The text summary (:func:`format_summary`) is what the CLI prints.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import importlib.util
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import zlib
from typing import Any

import numpy as np

from .._audit.plot import plot_reports
from .._math import json_finite
from .run import CompareResult, WorkerPool
from .transfer import (
    TRANSFER_CAPTIONS,
    TRANSFER_FIGURES,
    format_transfer_summary,
    is_transfer,
    transfer_figures,
    transfer_rows,
    transfer_takeaway,
)

__all__ = ["REPORT_FILES", "ReportInterrupted", "append_checkpoint", "checkpoint_path",
           "format_summary", "out_problem", "read_checkpoint", "scheme_color", "takeaway",
           "write_checkpoint", "write_report"]

FIGURES = ("accuracy_vs_depth.png", "test_accuracy_curves.png", "loss_curves.png",
           "signal_scale.png", "grad_norms.png")
#: every file a report folder may hold (``--out`` may already hold these, nothing else)
REPORT_FILES = frozenset({"index.html", "report.md", "results.json", "results.csv",
                          *FIGURES, "audit_init.png", *TRANSFER_FIGURES})

_CAPTIONS = {
    "accuracy_vs_depth.png": "Test accuracy after training against depth: mean ± std over "
                             "seeds (line), each seed a small dot. Dotted grey: chance.",
    "test_accuracy_curves.png": "Test accuracy after each epoch: mean over seeds (line) and "
                                "the range of the seeds (band). A run that reaches a high "
                                "accuracy and then collapses shows here, not in the final "
                                "number alone.",
    "loss_curves.png": "Training loss (mean over each 5 steps; line: mean over seeds, band: "
                       "min–max over seeds).",
    "signal_scale.png": "At init (seed 0), per weighted layer counted 1..L from the input: "
                        "the spread (std) of the layer's output (left) and of the loss "
                        "gradient with respect to that output (right). Flat near 1 is "
                        "healthy; a line falling to the right (left panel) or to the left "
                        "(right panel) is a vanishing signal.",
    "grad_norms.png": "Size (norm) of each weight matrix's gradient at the first training step "
                      "(seed 0), layers counted 1..L from the input. Equal heights: every "
                      "layer learns at the same rate; a slope: stable gradients are missing.",
    "audit_init.png": "initwise.audit at init for the deepest network (seed 0), layers "
                      "counted 1..L from the input: output size relative to the input (top), "
                      "gradient size relative to the output's gradient (middle), fraction of "
                      "exact zeros after each activation (bottom; about 0.5 is normal for "
                      "ReLU). Shaded: the band the audit calls healthy.",
}
_LIMITS = {"signal_scale.png": 4, "loss_curves.png": 4, "grad_norms.png": 3,
           "test_accuracy_curves.png": 4}

# A fixed colour per scheme name (colour-blind-friendly where possible), the same in every
# figure of every report; unknown names get a colour from a hash of the name.
_KNOWN_COLORS = {
    "torch": "#7f7f7f", "xavier": "#ff7f0e", "kaiming": "#1f77b4", "auto": "#2ca02c",
    "lsuv": "#9467bd", "orthogonal": "#8c564b", "fixup": "#e377c2", "zero_residual": "#17becf",
    "lecun": "#bcbd22", "gpt2": "#d62728", "rezero": "#393b79", "dcgan": "#637939",
}
_EXTRA_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                 "#f7b6d2", "#dbdb8d", "#9edae5", "#843c39", "#7b4173", "#3182bd",
                 "#e6550d", "#31a354", "#756bb1", "#636363")
_DASHES = ("-", "--", "-.", ":")


def scheme_color(name: str) -> str:
    """Return the fixed hex colour of scheme ``name`` (the same in every report).

    Example:
        >>> scheme_color("kaiming"), scheme_color("xavier")
        ('#1f77b4', '#ff7f0e')
        >>> scheme_color("he_uniform") == scheme_color("he_uniform")
        True
    """
    if name in _KNOWN_COLORS:
        return _KNOWN_COLORS[name]
    return _EXTRA_COLORS[zlib.crc32(name.encode()) % len(_EXTRA_COLORS)]


def _dash(name: str) -> str:
    return _DASHES[zlib.crc32(name.encode()) % len(_DASHES)] if name not in ("kaiming",
                                                                              "torch") else "-"


def _cells_of(result: CompareResult) -> list[tuple[int, int]]:
    return sorted({(r.depth, r.width) for r in result.runs})


def _caption(result: CompareResult, name: str, notes: tuple[str, ...] | list[str] = ()) -> str:
    """The figure caption, saying when only the last cells are shown, plus ``notes``."""
    cap = _CAPTIONS[name]
    n_cells = len(_cells_of(result))
    limit = _LIMITS.get(name)
    if limit is not None and n_cells > limit:
        cap += (f" Only the last {limit} of {n_cells} (depth, width) cells are shown; every "
                "number is in results.json.")
    cap += "".join(" " + n for n in notes)
    return cap


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        if abs(x) >= 1e5 or 0 < abs(x) < 0.5 * 10.0 ** -nd:
            # a loss of 3.5e27 (lr far too high) or 2e-7 (memorized): fixed point would print
            # 28 digits, or a 0.000 that reads as an exact zero
            return f"{x:.2e}"
        return f"{x:.{nd}f}"
    return str(x)


def _pfmt(p: float | None) -> str:
    """``p=0.036`` or ``p<1e-4`` (the t-distribution tail is not resolved below that)."""
    if p is None:
        return "p=–"
    return "p<1e-4" if p < 1e-4 else f"p={p:.2g}"


def _acc(stats: dict[str, Any]) -> str:
    """``mean ± std`` over seeds; one seed has no spread, so no ``± 0.000``."""
    if not stats["n"]:
        return "–"
    if stats["n"] == 1:
        return f"{_fmt(stats['mean'])} (1 seed)"
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])}"


def _verdict(cell: dict[str, Any]) -> str:
    w = cell["winner"]
    if cell.get("missing"):
        lead = cell.get("leader")
        return (f"incomplete: {', '.join(cell['missing'])} did not run here (interrupted), so "
                "no winner is called" + (f"; leading so far: {lead}" if lead else ""))
    top = cell.get("tied_at_top") or []
    if w is None and len(top) > 1:
        mean = _mean(cell, top[0])
        s = (f"no winner: {', '.join(top)} have the same mean test accuracy"
             + (f" ({_fmt(mean)})" if mean is not None else ""))
        rest = [x for x in cell["ranking"] if x not in top]
        return s + (f"; ahead of {', '.join(rest)}" if rest else "")
    if w is None:
        return "no finished runs"
    if cell["runner_up"] is None:
        return f"{w} (the only scheme that finished)"
    s = f"{w} wins, +{cell['margin'] * 100:.1f} points over {cell['runner_up']}"
    if cell.get("no_seed_spread"):
        s += " (no seed spread measured: every seed gave the same accuracy, so no p-value)"
    elif cell["significant"] is None:
        s += " (one seed: spread unknown, not a significant result)"
    else:
        word = "beyond" if cell["significant"] else "within"
        s += f" ({word} the seed spread, Welch {_pfmt(cell['p_value'])})"
    if cell.get("vs_torch") is not None and cell["runner_up"] != "torch":
        s += f"; +{cell['vs_torch'] * 100:.1f} points over PyTorch's default init"
    if cell.get("tied_with_winner") or cell.get("beats"):
        s += ". Tied with: " + (", ".join(cell["tied_with_winner"]) or "none")
        s += "; significantly better than: " + (", ".join(cell["beats"]) or "none")
    if cell.get("complete") is False:
        used = cell.get("seeds_used") or []
        s += (f". Interrupted: compared on the {len(used)} seed(s) every scheme finished "
              f"({', '.join(map(str, used))})")
    return s


def _mean(cell: dict[str, Any], s: str) -> float | None:
    st = cell["schemes"].get(s)
    return None if st is None else st["test_accuracy"]["mean"]


def takeaway(result: CompareResult) -> str:
    """Return the report's first paragraph: what won, by how much, how sure, what the audit saw.

    Example:
        >>> from .run import CompareConfig, run_compare
        >>> res = run_compare(CompareConfig(dataset="teacher", depths=[2], widths=[8],
        ...                                 schemes=["torch"], seeds=1, epochs=1))
        >>> takeaway(res).startswith("At depth 2")
        True
    """
    if not result.runs:
        return "No run finished, so there is nothing to compare yet."
    if all(r.error is not None for r in result.runs):
        return ("Every run failed, so there is nothing to compare; the errors are listed "
                "below.")
    if is_transfer(result):
        return transfer_takeaway(result)
    out: list[str] = []
    cells = result.summary
    shown = cells if len(cells) <= 4 else cells[-4:]
    for cell in shown:
        where = f"At depth {cell['depth']}" + (f", width {cell['width']}"
                                               if len({c['width'] for c in cells}) > 1 else "")
        if cell.get("missing"):
            out.append(f"{where} the sweep was interrupted before {', '.join(cell['missing'])} "
                       "ran: no winner is called.")
            continue
        w = cell["winner"]
        top = cell.get("tied_at_top") or []
        if w is None and len(top) > 1:
            out.append(f"{where} {', '.join(top)} reached the same mean test accuracy, "
                       f"{_fmt(_mean(cell, top[0]))}: no winner.")
            continue
        if w is None:
            out.append(f"{where} no run finished.")
            continue
        n = cell["schemes"][w]["test_accuracy"]["n"]
        s = f"{where} {w} reached the best mean test accuracy, {_fmt(_mean(cell, w))}"
        if cell["runner_up"] is None:
            out.append(s + ".")
            continue
        s += (f", {cell['margin'] * 100:.1f} points above {cell['runner_up']} "
              f"({_fmt(_mean(cell, cell['runner_up']))})")
        if cell.get("no_seed_spread"):
            s += "; every seed gave the same accuracy, so no p-value can be given"
        elif cell["significant"] is None:
            s += "; with one seed the seed-to-seed spread is unknown, so this is not a result"
        elif cell["significant"]:
            s += (f"; that is beyond the seed-to-seed spread (Welch {_pfmt(cell['p_value'])}, "
                  f"{n} seeds)")
        else:
            tied = [w, *cell.get("tied_with_winner", [])]
            s += (f"; that is within the seed-to-seed spread (Welch {_pfmt(cell['p_value'])}, "
                  f"{n} seeds), so {', '.join(tied)} are tied")
        if cell.get("beats"):
            s += f"; it is significantly better than {', '.join(cell['beats'])}"
        low = [x for x in cell["ranking"] if (_mean(cell, x) or 0.0) < 1.5 / max(
            result.dataset.get("n_classes", 10), 1)]
        if low:
            s += f"; {', '.join(low)} stayed near chance"
        out.append(s + ".")
    if len(cells) > len(shown):
        out.insert(0, f"(The last {len(shown)} of {len(cells)} cells; every cell is in the "
                      "table below.)")
    # What the audit saw at init, for the deepest cell.
    last = cells[-1]
    verdicts: dict[str, list[str]] = {}
    for s, st in last["schemes"].items():
        if st.get("init_verdict"):
            verdicts.setdefault(st["init_verdict"], []).append(s)
    if verdicts:
        parts = [f"{v} for {', '.join(ss)}" for v, ss in sorted(verdicts.items())]
        out.append(f"The audit at init (depth {last['depth']}, seed 0) read "
                   + "; ".join(parts) + ".")
        w = last.get("winner")
        wv = last["schemes"].get(w, {}).get("init_verdict") if w else None
        if w and wv and wv != "healthy":
            out.append(f"{w} won although the audit called its signal at init {wv}: the "
                       "audit describes step 0 only, and training can recover"
                       + _recovery(result, last["depth"])
                       + ". The accuracy columns say how well it did.")
    if result.partial:
        out.append(f"This report is partial: {len(result.runs)} of {result.total_runs} runs "
                   "finished.")
    return " ".join(out)


def _recovery(result: CompareResult, depth: int) -> str:
    """Why a scheme the audit did not call healthy can still train, for this setting."""
    c = result.config
    why = []
    if c.get("optimizer") == "adam":
        why.append("Adam rescales every update, whatever the gradient's size")
    if c.get("arch") in ("resnet", "resmlp"):
        why.append("in a residual network the audit also measures inside the branches, where "
                   "a small signal is harmless because the identity path carries it")
    if depth <= 5:
        why.append("a shallow network has few layers to lose the signal in")
    return (": " + "; ".join(why)) if why else ""


def _errors(result: CompareResult) -> tuple[list[tuple[int, int, str, str]],
                                            list[tuple[int, int, str, str]]]:
    """Failed runs split into (scheme did not apply, model or training failed)."""
    scheme_err: list[tuple[int, int, str, str]] = []
    run_err: list[tuple[int, int, str, str]] = []
    seen: set[tuple[int, int, str, str]] = set()
    for r in result.runs:
        if r.error is None:
            continue
        key = (r.depth, r.width, r.scheme, r.error)
        if key in seen:
            continue
        seen.add(key)
        (scheme_err if getattr(r, "error_stage", None) == "init" else run_err).append(key)
    return scheme_err, run_err


def _audit_reasons(result: CompareResult) -> list[tuple[int, int, str, str, str]]:
    """(depth, width, scheme, verdict, reason) for each cell and scheme not called healthy."""
    out = []
    for cell in result.summary:
        for s, st in cell["schemes"].items():
            v, why = st.get("init_verdict"), st.get("init_reason")
            if v and v != "healthy" and why:
                why = re.sub(r"\brow (\d+) \1 \(", r"row \1 (", why)  # "row 6 6 (ReLU)"
                out.append((cell["depth"], cell["width"], s, v, why))
    return out


def _rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for cell in result.summary:
        for s in cell["ranking"] + [k for k in cell["schemes"] if k not in cell["ranking"]]:
            st = cell["schemes"][s]
            a = st["test_accuracy"]
            stt = st["steps_to_target"]
            n = st["runs"] - len(st["errors"])
            reach = (f"{_fmt(stt['mean'], 0)} ({st['reached_target']}/{n})" if stt["n"]
                     else f"never (0/{n})" if n else "–")
            rows.append([str(cell["depth"]), str(cell["width"]), s,
                         _acc(a) if a["n"] else "error",
                         f"[{_fmt(a['min'])}, {_fmt(a['max'])}]" if a["n"] > 1 else "–",
                         _fmt(st["final_train_loss"]["mean"]), reach,
                         f"{st['diverged']}/{n}" if n else "–", st.get("init_verdict") or "–",
                         "★" if s == cell["winner"] else ""])
    return rows


_HEAD = ["depth", "width", "scheme", "test acc (mean ± std)", "[min, max]",
         "final train loss", "steps to target (reached)", "diverged", "audit at init", "best"]

_GLOSSARY = [
    ("test acc (mean ± std)", "accuracy on the held-out 20% after the last epoch, mean and "
     "standard deviation over seeds (one seed: no spread, so none is shown)"),
    ("[min, max]", "the worst and the best seed"),
    ("final train loss", "cross-entropy on the training batches, mean of the last 5 steps, "
     "averaged over the seeds that did not diverge"),
    ("steps to target (reached)", "optimizer steps until the test accuracy (measured after "
     "each epoch) first reached the target accuracy, mean over the seeds that reached it; "
     "in brackets how many seeds reached it"),
    ("diverged", "seeds whose loss became infinite or NaN (the run stops there)"),
    ("audit at init", "initwise.audit on one batch before training (seed 0): healthy when "
     "every layer's output size, relative to the input, and every layer's gradient size, "
     "relative to the output's gradient, stay within a factor 10 (the audit's band); "
     "vanishing or exploding when a layer falls below or above it. It describes step 0 "
     "only: an optimizer can recover from a vanishing start, so read it next to the accuracy"),
    ("gradient spread at init", "largest over smallest per-layer weight-gradient norm at the "
     "first step (median over seeds): 1 means every layer learns at the same rate (stable "
     "gradients), 1e6 means the first layers get a millionth of the last one's gradient"),
    ("best", "★ the winner: the highest mean test accuracy (only when every scheme ran)"),
    ("Welch p", "two-sided Welch t-test of the winner against another scheme over seeds; "
     "p < 0.05 is called beyond the seed-to-seed spread"),
]


def format_summary(result: CompareResult) -> str:
    """Return the terminal summary: a table per scheme and cell, then a winner per cell."""
    if is_transfer(result):
        return format_transfer_summary(result)
    rows = _rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(_HEAD)]
    line = "  ".join(h.ljust(w) for h, w in zip(_HEAD, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    out.append("")
    for cell in result.summary:
        out.append(f"depth {cell['depth']}, width {cell['width']}: {_verdict(cell)}")
    if result.partial:
        out.append(f"PARTIAL: interrupted after {len(result.runs)}/{result.total_runs} runs")
    return "\n".join(out)


def _claims_rows(result: CompareResult) -> list[list[str]]:
    """Per cell and scheme: stable gradients, convergence speed, accuracy (the seed claims)."""
    rows = []
    for cell in result.summary:
        for s in cell["ranking"]:
            st = cell["schemes"][s]
            g = st.get("grad_spread_at_init")
            stt = st["steps_to_target"]
            rows.append([str(cell["depth"]), str(cell["width"]), s,
                         "–" if g is None else ("inf" if not math.isfinite(g) else f"{g:.3g}"),
                         f"{_fmt(stt['mean'], 0)}" if stt["n"] else "never",
                         _acc(st["test_accuracy"])])
    return rows


_CLAIMS_HEAD = ["depth", "width", "scheme", "gradient spread at init (max/min layer)",
                "steps to target", "test acc"]


def _pivot(result: CompareResult) -> tuple[list[str], list[list[str]]]:
    """Mean test accuracy, one row per (depth, width), one column per scheme (winner in bold)."""
    schemes = list(result.config.get("schemes", []))
    rows = []
    for cell in result.summary:
        r = [str(cell["depth"]), str(cell["width"])]
        for s in schemes:
            m = _mean(cell, s)
            txt = _fmt(m) if m is not None else ("error" if s in cell["schemes"] else "–")
            r.append(f"**{txt}**" if s == cell["winner"] else txt)
        rows.append(r)
    return ["depth", "width", *schemes], rows


def _seed_rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for r in result.runs:
        rows.append([str(r.seed), r.scheme, str(r.depth), str(r.width),
                     "error" if r.error else _fmt(r.test_accuracy),
                     "–" if r.error else _fmt(r.best_test_accuracy),
                     _fmt(r.train_loss[-1]) if r.train_loss and not r.diverged else "–",
                     "–" if r.steps_to_target is None else str(r.steps_to_target),
                     f"step {r.diverged_at_step}" if r.diverged else "no",
                     (r.init_scale or {}).get("verdict", "–") if not r.error else "–"])
    return rows


_SEED_HEAD = ["seed", "scheme", "depth", "width", "test acc", "best epoch acc",
              "final train loss", "steps to target", "diverged", "audit at init"]

_CSV_FIELDS = ["scheme", "depth", "width", "seed", "test_accuracy", "best_test_accuracy",
               "test_loss", "final_train_loss", "steps_to_target", "steps", "diverged",
               "diverged_at_step", "init_verdict", "time_s", "error_stage", "error"]


def results_csv(result: CompareResult) -> str:
    """Return one CSV row per run (the columns of :data:`_CSV_FIELDS`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    transfer = is_transfer(result)  # a learning-rate sweep: two more columns
    w.writerow(_CSV_FIELDS + (["lr", "train_split_loss"] if transfer else []))
    for r in result.runs:
        def num(x: Any) -> str:
            return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else repr(x)

        w.writerow([r.scheme, r.depth, r.width, r.seed, num(r.test_accuracy),
                    num(r.best_test_accuracy), num(r.test_loss),
                    num(r.train_loss[-1]) if r.train_loss else "", num(r.steps_to_target),
                    r.steps, int(r.diverged), num(r.diverged_at_step),
                    (r.init_scale or {}).get("verdict", ""), f"{r.time_s:.3f}",
                    getattr(r, "error_stage", None) or "", r.error or ""]
                   + ([num(r.lr), num(r.train_split_loss)] if transfer else []))
    return buf.getvalue()


def _config_rows(result: CompareResult) -> list[tuple[str, str]]:
    c = result.config
    keys = ["preset", "dataset", "arch", "activation", "norm", "depths", "widths", "schemes",
            "seeds", "optimizer", "lr", "momentum", "epochs", "batch_size", "target_accuracy",
            "test_fraction", "init_batch", "threads", "jobs", "device"]
    if is_transfer(result):  # a learning-rate sweep: its grid instead of schemes and one lr
        keys = [k for k in keys if k not in ("schemes", "lr", "target_accuracy", "init_batch")]
        keys += ["parametrizations", "lrs", "base_width", "base_depth"]
    rows = [(k, ", ".join(map(str, c[k])) if isinstance(c.get(k), list) else str(c.get(k)))
            for k in keys if k in c]
    if c.get("optimizer") == "adam":
        rows = [r for r in rows if r[0] != "momentum"]
    if c.get("arch") not in ("resnet", "resmlp"):
        # --norm builds only the residual nets' blocks: 'norm batch' beside an MLP, a CNN or a
        # user model would say it had batch normalization
        rows = [r for r in rows if r[0] != "norm"]
    rows = [(k, "none" if k == "preset" and v == "None" else v) for k, v in rows]
    ds = result.dataset
    if ds:
        rows.append(("data", f"{ds.get('n_train')} train / {ds.get('n_test')} test samples, "
                             f"input shape {ds.get('in_shape')}, {ds.get('n_classes')} classes"))
    return rows


# ----------------------------------------------------------------------------- figures


def _figure(ncols: int, nrows: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib figure on the Agg canvas (no pyplot state, no windows)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, path: str, dpi: int = 100) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")


def _int_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _schemes(result: CompareResult) -> list[str]:
    return list(result.config.get("schemes") or dict.fromkeys(r.scheme for r in result.runs))


def _fig_accuracy(result: CompareResult, path: str) -> list[str]:
    schemes = _schemes(result)
    widths = sorted({r.width for r in result.runs})
    fig, axes = _figure(len(widths), 1, (max(6.0, 4.5 * len(widths)), 4.2))
    for ax, width in zip(axes[0], widths, strict=True):
        depths = sorted({r.depth for r in result.runs if r.width == width})
        n = len(schemes)
        for k, s in enumerate(schemes):
            xs, means, stds = [], [], []
            for j, d in enumerate(depths):
                accs = [r.test_accuracy for r in result.runs if r.width == width and r.depth == d
                        and r.scheme == s and r.error is None]
                if not accs:
                    continue
                off = (k - (n - 1) / 2) * min(0.08, 0.6 / max(n, 1))
                xs.append(j + off)
                means.append(float(np.mean(accs)))
                stds.append(float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0)
                ax.scatter([j + off] * len(accs), accs, s=9, color=scheme_color(s), alpha=0.45,
                           zorder=2)
            if xs:
                ax.errorbar(xs, means, yerr=stds, color=scheme_color(s), marker="o", capsize=4,
                            linewidth=1.6, label=s, zorder=3)
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        # Keep one depth (or a few) away from the panel edges.
        ax.set_xlim(-0.6, len(depths) - 0.4)
        ax.set_xlabel("depth (number of layers / blocks)")
        ax.set_ylabel("test accuracy after training")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{result.config.get('arch')}, width {width}, "
                     f"{result.config.get('activation')}", fontsize=10)
        chance = 1.0 / max(result.dataset.get("n_classes", 10), 1)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.text(0.01, chance + 0.01, "chance", color="grey", fontsize=8,
                transform=ax.get_yaxis_transform())
    axes[0][-1].legend(loc="best", fontsize=8, framealpha=0.85)
    _save(fig, path, dpi=100)
    return []


def _cells(result: CompareResult, limit: int = 4) -> list[tuple[int, int]]:
    return _cells_of(result)[-limit:]


def _fig_test_curves(result: CompareResult, path: str) -> list[str]:
    schemes = _schemes(result)
    cells = _cells(result, limit=_LIMITS["test_accuracy_curves.png"])
    fig, axes = _figure(len(cells), 1, (max(6.0, 4.3 * len(cells)), 3.8))
    for ax, (d, w) in zip(axes[0], cells, strict=True):
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.error is None and r.epoch_test_accuracy]
            if not rs:
                continue
            n = max(len(r.epoch_test_accuracy) for r in rs)
            # A diverged run stops early: carry its last accuracy forward.
            ys = np.asarray([r.epoch_test_accuracy + [r.epoch_test_accuracy[-1]]
                             * (n - len(r.epoch_test_accuracy)) for r in rs], dtype=np.float64)
            ep = np.arange(1, n + 1)
            ax.plot(ep, ys.mean(axis=0), color=scheme_color(s), label=s, linewidth=1.5,
                    linestyle=_dash(s), marker="." if n <= 20 else None)
            if len(rs) > 1:
                ax.fill_between(ep, ys.min(axis=0), ys.max(axis=0), color=scheme_color(s),
                                alpha=0.13)
        ax.set_ylim(-0.02, 1.02)
        _int_ticks(ax)
        ax.set_title(f"depth {d}, width {w}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, framealpha=0.85)
    _save(fig, path)
    return []


def _fig_loss(result: CompareResult, path: str) -> list[str]:
    """Train loss; a diverged run cannot stretch the axis: values above the top are clipped."""
    schemes = _schemes(result)
    cells = _cells(result, limit=_LIMITS["loss_curves.png"])
    fig, axes = _figure(len(cells), 1, (max(6.0, 4.3 * len(cells)), 3.8))
    clipped = diverged = False
    for ax, (d, w) in zip(axes[0], cells, strict=True):
        curves = []
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.train_loss and r.error is None]
            if rs:
                n = min(len(r.train_loss) for r in rs)
                ys = np.asarray([r.train_loss[:n] for r in rs], dtype=np.float64)
                curves.append((s, rs, np.asarray(rs[0].loss_steps[:n]), ys))
        healthy = [c[3] for c in curves if not any(r.diverged for r in c[1])]
        firsts = [float(y[0]) for ys in healthy for y in ys if np.isfinite(y[0])]
        # The top of the axis: a few times the largest starting loss of the runs that did
        # not diverge (or of all runs when every one diverged).
        ref = firsts or [float(v) for c in curves for v in c[3][:, 0] if np.isfinite(v)]
        top = 3.0 * max(ref) if ref else 10.0
        bottom = None
        for s, rs, steps, ys in curves:
            mean = ys.mean(axis=0)
            over = mean > top
            clipped |= bool(over.any())
            ax.plot(steps, np.minimum(mean, top), color=scheme_color(s), label=s,
                    linewidth=1.4, linestyle=_dash(s))
            if over.any():
                ax.plot(steps[over], np.full(int(over.sum()), top), ls="none", marker="^",
                        ms=4, color=scheme_color(s), clip_on=False)
            if len(rs) > 1:
                ax.fill_between(steps, np.minimum(ys.min(axis=0), top),
                                np.minimum(ys.max(axis=0), top), color=scheme_color(s),
                                alpha=0.13)
            pos = ys[np.isfinite(ys) & (ys > 0)]
            if pos.size:
                bottom = float(pos.min()) if bottom is None else min(bottom, float(pos.min()))
            for r in rs:
                if r.diverged and r.diverged_at_step is not None:
                    diverged = True
                    ax.plot([r.diverged_at_step], [top], ls="none", marker="x", ms=8, mew=2,
                            color=scheme_color(s), clip_on=False)
        ax.set_yscale("log")
        if bottom is not None and bottom < top:
            ax.set_ylim(bottom / 1.5, top * 1.05)
        ax.set_title(f"depth {d}, width {w}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("train loss (log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=8, framealpha=0.85)
    _save(fig, path)
    notes = []
    if clipped:
        notes.append("The axis is cut at 3× the largest starting loss of the runs that did "
                     "not diverge; values above it are drawn at the top edge (▲).")
    if diverged:
        notes.append("× at the top edge: a run diverged there (its loss became infinite or "
                     "NaN and the run stopped).")
    return notes


def _log_panel(ax: Any, x: np.ndarray, y: np.ndarray, s: str) -> bool:
    """Plot ``y`` on a log axis; zeros and non-finite values are returned for marking."""
    ok = np.isfinite(y) & (y > 0)
    ax.plot(x, np.where(ok, y, np.nan), marker=".", color=scheme_color(s), label=s,
            linestyle=_dash(s))
    return bool((~ok).any())


def _mark_zeros(ax: Any, marks: list[tuple[np.ndarray, str]]) -> None:
    lo = ax.get_ylim()[0]
    for xs, s in marks:
        ax.plot(xs, np.full(xs.size, lo), ls="none", marker="v", ms=6, color=scheme_color(s),
                clip_on=False)


def _fig_scale(result: CompareResult, path: str) -> list[str]:
    schemes = _schemes(result)
    cells = _cells(result, limit=_LIMITS["signal_scale.png"])
    fig, axes = _figure(2, len(cells), (11, 3.0 * len(cells) + 0.6))
    zero = False
    for row, (d, w) in enumerate(cells):
        marks: list[list[tuple[np.ndarray, str]]] = [[], []]
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.init_scale]
            if not rs:
                continue
            sc = rs[0].init_scale
            for c, key in enumerate(("forward_std", "backward_std")):
                y = np.asarray(sc[key], dtype=np.float64)
                x = np.arange(1, y.size + 1)
                if _log_panel(axes[row][c], x, y, s):
                    marks[c].append((x[~(np.isfinite(y) & (y > 0))], s))
        for c, what in enumerate(("forward: spread of the layer's output",
                                  "backward: spread of the gradient at the layer's output")):
            ax = axes[row][c]
            ax.set_yscale("log")
            if c == 0:
                ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
            _int_ticks(ax)
            ax.set_title(f"depth {d}, width {w}: {what}", fontsize=9)
            ax.set_xlabel("layer (1 = first, from the input)")
            ax.set_ylabel("std (log scale)")
            ax.grid(alpha=0.3, which="both")
            if marks[c]:
                zero = True
                _mark_zeros(ax, marks[c])
    axes[0][0].legend(fontsize=8, framealpha=0.85)
    _save(fig, path)
    return (["▼ at the bottom edge: a layer whose value is exactly 0 (or not finite), which a "
             "log axis cannot show."] if zero else [])


def _fig_grads(result: CompareResult, path: str) -> list[str]:
    schemes = _schemes(result)
    cells = _cells(result, limit=_LIMITS["grad_norms.png"])
    fig, axes = _figure(len(cells), 1, (max(6.0, 4.6 * len(cells)), 3.8))
    zero = False
    for ax, (d, w) in zip(axes[0], cells, strict=True):
        marks = []
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.grad_norms]
            if not rs:
                continue
            g = np.asarray(rs[0].grad_norms[0], dtype=np.float64)
            x = np.arange(1, g.size + 1)
            if _log_panel(ax, x, g, s):
                marks.append((x[~(np.isfinite(g) & (g > 0))], s))
        ax.set_yscale("log")
        _int_ticks(ax)
        ax.set_title(f"depth {d}, width {w}: gradient size at the first step", fontsize=9)
        ax.set_xlabel("weight matrix (1 = first, from the input)")
        ax.set_ylabel("gradient norm (log scale)")
        ax.grid(alpha=0.3, which="both")
        if marks:
            zero = True
            _mark_zeros(ax, marks)
    axes[0][0].legend(fontsize=8, framealpha=0.85)
    _save(fig, path)
    return (["▼ at the bottom edge: a gradient exactly 0 (or not finite), which a log axis "
             "cannot show."] if zero else [])


def _fig_audit(result: CompareResult, path: str) -> list[str] | bool:
    """Overlay the library's audit plots of every scheme for the deepest cell, if available."""
    cells = _cells(result, limit=1)
    if not cells:
        return False
    reps, labels, colors = [], [], []
    for s in _schemes(result):
        for r in result.runs:
            if (r.depth, r.width, r.scheme) == (*cells[0], s) and r.audit_report is not None:
                reps.append(r.audit_report)
                labels.append(s)
                colors.append(scheme_color(s))
                break
    if not reps:
        return False
    plot_reports(reps, path, labels, colors=colors)
    return [] if os.path.exists(path) else False


_FIG_FUNCS = {"accuracy_vs_depth.png": "_fig_accuracy",
              "test_accuracy_curves.png": "_fig_test_curves", "loss_curves.png": "_fig_loss",
              "signal_scale.png": "_fig_scale", "grad_norms.png": "_fig_grads",
              "audit_init.png": "_fig_audit"}


_NO_MATPLOTLIB = "matplotlib is not installed (pip install 'initwise[report]')"
#: What a worker process imports to draw the figures (``WorkerPool(preload=...)``).
FIGURE_MODULES = (__name__, "matplotlib.figure", "matplotlib.backends.backend_agg")


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return False
    return True


def _render(fn_name: str, result: CompareResult | bytes, path: str) -> list[str] | None:
    """Draw one figure into ``path``: its caption notes, or ``None`` if it was not drawn.
    In a worker process ``result`` arrives pickled (once per figure, not once per argument)."""
    if isinstance(result, bytes):
        result = pickle.loads(result)
    got = getattr(sys.modules[__name__], fn_name)(result, path)
    if got is False or not os.path.exists(path):
        return None
    return list(got or [])


# Measured drawing cost (signal_scale draws one panel per depth and scheme, ~2x the others):
# the pool starts the costliest first, so that the workers finish together.
_FIG_COST = {"signal_scale.png": 2.0}


def _write_figures(result: CompareResult, out: str, pool: WorkerPool | None = None
                   ) -> tuple[list[str], dict[str, list[str]], bool, str | None]:
    """Render the figures into ``out`` (a private staging folder), each an independent task
    in ``pool``'s workers when it is given and usable, else here one after another.

    Returns ``(names written, caption notes per name, interrupted, why none)``. A
    ``KeyboardInterrupt`` stops the rendering and is reported, not raised, so that the caller
    can still write the documents.
    """
    parallel = pool is not None and pool.usable
    # in the pool, matplotlib is imported by the workers only (the parent never draws)
    if not (_have_matplotlib() if not parallel else
            importlib.util.find_spec("matplotlib") is not None):
        return [], {}, False, _NO_MATPLOTLIB
    if not any(r.error is None for r in result.runs):
        return [], {}, False, "no run finished, so there is nothing to draw"
    if is_transfer(result):
        try:
            return transfer_figures(result, out), {}, False, None
        except KeyboardInterrupt:
            return [], {}, True, None
    made: list[str] = []
    notes: dict[str, list[str]] = {}
    tasks: dict[str, Any] = {}
    if parallel:
        assert pool is not None
        blob = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        first = sorted(_FIG_FUNCS, key=lambda n: -_FIG_COST.get(n, 1.0))
        tasks = {name: pool.pool.apply_async(
            _render, (_FIG_FUNCS[name], blob, os.path.join(out, name))) for name in first}
    for name, fn_name in _FIG_FUNCS.items():
        path = os.path.join(out, name)
        try:
            got = tasks[name].get() if parallel else _render(fn_name, result, path)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                os.remove(path)
            return made, notes, True, None
        except ImportError:  # a worker that cannot import matplotlib
            if not parallel:
                raise
            return made, notes, False, None if made else _NO_MATPLOTLIB
        if got is None:
            continue
        made.append(name)
        notes[name] = got
    return made, notes, False, None


# ----------------------------------------------------------------------------- interactive data


def _clean(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _thin(n: int, limit: int = 150) -> list[int]:
    step = max(1, math.ceil(n / limit))
    idx = list(range(0, n, step))
    if idx and idx[-1] != n - 1:
        idx.append(n - 1)
    return idx


def _chart_data(result: CompareResult) -> dict[str, Any]:
    """The numbers behind the interactive charts (means over seeds, min-max bands)."""
    schemes = _schemes(result)
    cells = _cells(result, limit=4)
    acc_panels, loss_panels, depth_panels = [], [], []
    for d, w in cells:
        acc_series, loss_series = [], []
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.error is None]
            if not rs:
                continue
            if all(r.epoch_test_accuracy for r in rs):
                n = max(len(r.epoch_test_accuracy) for r in rs)
                ys = np.asarray([r.epoch_test_accuracy + [r.epoch_test_accuracy[-1]]
                                 * (n - len(r.epoch_test_accuracy)) for r in rs])
                acc_series.append({"scheme": s, "x": list(range(1, n + 1)),
                                   "y": [_clean(float(v)) for v in ys.mean(axis=0)],
                                   "lo": [_clean(float(v)) for v in ys.min(axis=0)],
                                   "hi": [_clean(float(v)) for v in ys.max(axis=0)]})
            if all(r.train_loss for r in rs):
                n = min(len(r.train_loss) for r in rs)
                ys = np.asarray([r.train_loss[:n] for r in rs], dtype=np.float64)
                mean = ys.mean(axis=0)
                idx = _thin(n)
                loss_series.append({"scheme": s, "x": [rs[0].loss_steps[i] for i in idx],
                                    "y": [_clean(float(mean[i])) for i in idx],
                                    "diverged": [r.diverged_at_step for r in rs if r.diverged]})
        title = f"depth {d}, width {w}"
        acc_panels.append({"title": title, "xlabel": "epoch", "ylabel": "test accuracy",
                           "ymin": 0.0, "ymax": 1.0, "series": acc_series})
        firsts = [ls["y"][0] for ls in loss_series if ls["y"] and ls["y"][0] is not None
                  and not ls["diverged"]] or [ls["y"][0] for ls in loss_series
                                              if ls["y"] and ls["y"][0] is not None]
        top = 3.0 * max(firsts) if firsts else None
        for ls in loss_series:
            ls["v"] = ls["y"]
            if top is not None:
                ls["y"] = [None if v is None else min(v, top) for v in ls["y"]]
        loss_panels.append({"title": title, "xlabel": "training step",
                            "ylabel": "train loss (log)", "log": True, "ymax": top,
                            "series": loss_series})
    for width in sorted({r.width for r in result.runs}):
        depths = sorted({r.depth for r in result.runs if r.width == width})
        series = []
        for s in schemes:
            xs: list[int] = []
            ms: list[float] = []
            lo: list[float] = []
            hi: list[float] = []
            for j, d in enumerate(depths):
                accs = [r.test_accuracy for r in result.runs if (r.depth, r.width, r.scheme)
                        == (d, width, s) and r.error is None]
                if accs:
                    xs.append(j)
                    ms.append(float(np.mean(accs)))
                    lo.append(float(np.min(accs)))
                    hi.append(float(np.max(accs)))
            if xs:
                series.append({"scheme": s, "x": xs, "y": ms, "lo": lo, "hi": hi,
                               "labels": [f"depth {depths[j]}" for j in xs]})
        depth_panels.append({"title": f"width {width}", "xlabel": "depth",
                             "ylabel": "test accuracy", "ymin": 0.0, "ymax": 1.0,
                             "xticks": [[j, str(d)] for j, d in enumerate(depths)],
                             "xmin": -0.5, "xmax": len(depths) - 0.5, "series": series})
    return {"schemes": schemes, "colors": {s: scheme_color(s) for s in schemes},
            "charts": [
                {"id": "chart-acc-epoch", "title": "Test accuracy per epoch (mean over seeds; "
                 "band: min–max)", "panels": acc_panels},
                {"id": "chart-loss", "title": "Training loss (mean over seeds; a diverged run "
                 "is cut at the top)", "panels": loss_panels},
                {"id": "chart-acc-depth", "title": "Test accuracy against depth (mean; band: "
                 "min–max over seeds)", "panels": depth_panels}]}


# Small, dependency-free chart code: inline SVG, scheme toggles, hover values.
_JS = r"""
(function(){
'use strict';
var D=JSON.parse(document.getElementById('report-data').textContent);
var NS='http://www.w3.org/2000/svg';
var tip=document.getElementById('tip');
function el(t,a,p){var e=document.createElementNS(NS,t);for(var k in a){e.setAttribute(k,a[k]);}
 if(p){p.appendChild(e);}return e;}
function fmt(v){if(v===null||v===undefined){return '–';}var a=Math.abs(v);
 return (a!==0&&(a>=1e4||a<1e-3))?v.toExponential(2):String(+v.toPrecision(4));}
function niceTicks(lo,hi,n){var span=hi-lo;if(!(span>0)){return [lo];}
 var step=Math.pow(10,Math.floor(Math.log10(span/n)));var err=span/n/step;
 if(err>=5){step*=5;}else if(err>=2){step*=2;}
 var out=[];for(var v=Math.ceil(lo/step)*step;v<=hi+1e-9*span;v+=step){out.push(+v.toPrecision(12));}
 return out;}
function showTip(ev,text){tip.textContent=text;tip.style.display='block';
 tip.style.left=(ev.pageX+12)+'px';tip.style.top=(ev.pageY+12)+'px';}
function hideTip(){tip.style.display='none';}
function panel(box,p){
 var W=380,H=250,L=58,R=12,T=26,B=40;
 var svg=el('svg',{width:W,height:H,viewBox:'0 0 '+W+' '+H,'class':'chart'},box);
 var xs=[],ys=[];
 p.series.forEach(function(s){s.x.forEach(function(v){xs.push(v);});
  [s.y,s.lo||[],s.hi||[]].forEach(function(a){a.forEach(function(v){
   if(v!==null&&(!p.log||v>0)){ys.push(v);}});});});
 if(!xs.length){el('text',{x:W/2,y:H/2,'text-anchor':'middle'},svg).textContent='no data';return;}
 var x0=p.xmin!==undefined?p.xmin:Math.min.apply(null,xs),x1=p.xmax!==undefined?p.xmax:Math.max.apply(null,xs);
 if(x1===x0){x0-=1;x1+=1;}
 var y0=p.ymin!==undefined?p.ymin:Math.min.apply(null,ys),y1=(p.ymax!==undefined&&p.ymax!==null)?p.ymax:Math.max.apply(null,ys);
 var f=p.log?function(v){return Math.log10(v);}:function(v){return v;};
 if(p.log){y0=Math.min.apply(null,ys);}
 var fy0=f(y0),fy1=f(y1);if(!(fy1>fy0)){fy0-=0.5;fy1+=0.5;}
 var pad=(fy1-fy0)*0.04;fy0-=pad;fy1+=pad;
 function sx(v){return L+(v-x0)/(x1-x0)*(W-L-R);}
 function sy(v){return T+(1-(f(v)-fy0)/(fy1-fy0))*(H-T-B);}
 el('rect',{x:L,y:T,width:W-L-R,height:H-T-B,fill:'#fff',stroke:'#ccc'},svg);
 var xt=p.xticks||niceTicks(x0,x1,5).map(function(v){return [v,String(v)];});
 xt.forEach(function(t){var X=sx(t[0]);el('line',{x1:X,x2:X,y1:H-B,y2:H-B+4,stroke:'#888'},svg);
  el('text',{x:X,y:H-B+15,'text-anchor':'middle','class':'tick'},svg).textContent=t[1];});
 var yt=p.log?(function(){var o=[],m=[1],e,i,v;for(var pass=0;pass<3;pass++){o=[];
   for(e=Math.floor(fy0);e<=Math.ceil(fy1);e++){for(i=0;i<m.length;i++){v=m[i]*Math.pow(10,e);
    if(Math.log10(v)>=fy0&&Math.log10(v)<=fy1){o.push(v);}}}
   if(o.length>=3){break;}m=pass===0?[1,2,5]:[1,1.5,2,3,5,7];}return o;})()
   :niceTicks(y0,y1,5);
 yt.forEach(function(v){var Y=sy(v);el('line',{x1:L,x2:W-R,y1:Y,y2:Y,stroke:'#eee'},svg);
  el('text',{x:L-5,y:Y+4,'text-anchor':'end','class':'tick'},svg).textContent=fmt(v);});
 el('text',{x:(L+W-R)/2,y:14,'text-anchor':'middle','class':'ptitle'},svg).textContent=p.title;
 el('text',{x:(L+W-R)/2,y:H-6,'text-anchor':'middle','class':'axis'},svg).textContent=p.xlabel;
 el('text',{x:14,y:(T+H-B)/2,'text-anchor':'middle','class':'axis',
  transform:'rotate(-90 14 '+((T+H-B)/2)+')'},svg).textContent=p.ylabel;
 p.series.forEach(function(s){
  var c=D.colors[s.scheme]||'#333';
  var g=el('g',{'class':'series','data-scheme':s.scheme},svg);
  if(s.lo&&s.hi){var up=[],dn=[];for(var i=0;i<s.x.length;i++){
    if(s.lo[i]!==null&&s.hi[i]!==null&&(!p.log||s.lo[i]>0)){up.push(sx(s.x[i])+','+sy(s.hi[i]));dn.unshift(sx(s.x[i])+','+sy(s.lo[i]));}}
   if(up.length>1){el('polygon',{points:up.concat(dn).join(' '),fill:c,'fill-opacity':0.15,stroke:'none'},g);}}
  var d='',pen=false;
  for(var j=0;j<s.x.length;j++){var v=s.y[j];
   if(v===null||(p.log&&!(v>0))){pen=false;continue;}
   d+=(pen?'L':'M')+sx(s.x[j]).toFixed(1)+' '+sy(v).toFixed(1);pen=true;}
  el('path',{d:d,fill:'none',stroke:c,'stroke-width':1.8},g);
  for(var k=0;k<s.x.length;k++){var y=s.y[k];if(y===null||(p.log&&!(y>0))){continue;}
   var shown=s.v?s.v[k]:y;
   var lab=s.scheme+': '+(s.labels?s.labels[k]:p.xlabel+' '+s.x[k])+', '+p.ylabel+' '+fmt(shown)
     +(s.lo?' (seeds '+fmt(s.lo[k])+'–'+fmt(s.hi[k])+')':'');
   var pt=el('circle',{cx:sx(s.x[k]),cy:sy(y),r:(s.x.length>60?1.6:3),fill:c,'class':'pt','data-tip':lab},g);
   el('title',{},pt).textContent=lab;
   pt.addEventListener('mouseenter',function(ev){showTip(ev,this.getAttribute('data-tip'));});
   pt.addEventListener('mouseleave',hideTip);}
  (s.diverged||[]).forEach(function(st){var X=sx(st);
   var m=el('text',{x:X,y:T+10,'text-anchor':'middle',fill:c,'class':'pt','data-tip':s.scheme+': diverged at step '+st},g);
   m.textContent='×';m.addEventListener('mouseenter',function(ev){showTip(ev,this.getAttribute('data-tip'));});
   m.addEventListener('mouseleave',hideTip);});
 });
}
D.charts.forEach(function(ch){var box=document.getElementById(ch.id);if(!box){return;}
 ch.panels.forEach(function(p){panel(box,p);});});
function apply(){var on={};Array.prototype.forEach.call(document.querySelectorAll('input.toggle'),
 function(i){on[i.getAttribute('data-scheme')]=i.checked;});
 Array.prototype.forEach.call(document.querySelectorAll('g.series'),function(g){
  g.style.display=on[g.getAttribute('data-scheme')]===false?'none':'';});}
Array.prototype.forEach.call(document.querySelectorAll('input.toggle'),function(i){
 i.addEventListener('change',apply);});
document.getElementById('toggle-all').addEventListener('click',function(){
 var boxes=document.querySelectorAll('input.toggle'),any=false;
 Array.prototype.forEach.call(boxes,function(i){any=any||!i.checked;});
 Array.prototype.forEach.call(boxes,function(i){i.checked=any;});apply();});
document.body.setAttribute('data-charts-ready','1');
})();
"""

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid
#ddd;padding-bottom:.2em}table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}th{background:#f4f4f4}
tr.win td{background:#eef8ee;font-weight:600}.partial{background:#fff3cd;border:1px solid #e0c36a;
padding:.6em 1em;border-radius:4px}.verdict{margin:.2em 0}.sig{color:#17692c}.nsig{color:#8a6d00}
.takeaway{font-size:1.05em;background:#f3f7fb;border-left:4px solid #1f77b4;padding:.7em 1em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;
color:#555}code,pre{background:#f6f6f6;border-radius:3px}pre{padding:.6em;overflow-x:auto;
font-size:.85em}.muted{color:#666;font-size:.9em}.sw{display:inline-block;width:.9em;height:.9em;
border-radius:2px;margin:0 .3em -.1em .2em}.toggles label{margin-right:1em;cursor:pointer;
white-space:nowrap}.charts{display:flex;flex-wrap:wrap;gap:.4em 1em}h3{font-size:1em;margin:.6em 0 .2em}svg.chart{border:1px solid #eee}
svg.chart .tick{font-size:10px;fill:#555}svg.chart .axis{font-size:11px;fill:#333}
svg.chart .ptitle{font-size:12px;font-weight:600}svg.chart .pt{cursor:pointer}
#tip{position:absolute;display:none;background:#222;color:#fff;font-size:12px;padding:.3em .5em;
border-radius:3px;pointer-events:none;z-index:10}dl.gloss dt{font-weight:600}
dl.gloss dd{margin:0 0 .4em 1.2em}
"""


def _title(result: CompareResult) -> str:
    c = result.config
    arch = str(c.get("arch")).rsplit(":", 1)[-1]  # a user factory by its name
    return (f"initwise compare: {arch} ({c.get('activation')}) on {c.get('dataset')}"
            + (f" — preset {c['preset']}" if c.get("preset") else ""))


def _html_table(head: list[str], rows: list[list[str]], win_col: int | None = None) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cls = " class=win" if win_col is not None and r[win_col] else ""
        cells = r
        out.append(f"<tr{cls}>" + "".join(
            f"<td><b>{e(x[2:-2])}</b></td>" if x.startswith("**") and x.endswith("**")
            else f"<td>{e(x)}</td>" for x in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _swatch(s: str) -> str:
    return f"<span class='sw' style='background:{scheme_color(s)}'></span>"


def _html(result: CompareResult, figures: list[str], notes: dict[str, list[str]], out: str,
          why_no_figures: str | None) -> str:
    e = html.escape
    c = result.config
    data = json.dumps(json_finite(_chart_data(result)), allow_nan=False).replace("</", "<\\/")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{e(_title(result))}</title><style>{_CSS}</style></head><body>"
             f"<h1>{e(_title(result))}</h1>"]
    if result.partial:
        parts.append(f"<p class='partial'><b>Partial report:</b> the run was interrupted after "
                     f"{len(result.runs)} of {result.total_runs} runs. "
                     + ("Rerun it to complete it.</p>" if is_transfer(result)
                        else "Resume it with <code>--resume</code>.</p>"))
    parts.append(f"<p class='takeaway' id='takeaway'>{e(takeaway(result))}</p>")
    if is_transfer(result):
        return "\n".join(parts + _html_transfer(result, figures, out, why_no_figures))
    parts.append(f"<p class='muted'>{len(result.runs)}/{result.total_runs} runs, "
                 f"{result.wall_time_s:.1f} s. Downloads: <a href='results.csv' "
                 f"download>results.csv</a> (one row per run), <a href='results.json'>"
                 f"results.json</a> (every number); the CSV is also "
                 f"<a id='csv-inline' download='results.csv' href='data:text/csv;base64,"
                 f"{base64.b64encode(results_csv(result).encode()).decode()}'>embedded</a> "
                 f"in this page.</p>")
    parts.append("<h2>Verdict</h2>")
    for cell in result.summary:
        cls = "sig" if cell["significant"] else "nsig"
        parts.append(f"<p class='verdict'><b>depth {cell['depth']}, width {cell['width']}:</b> "
                     f"<span class='{cls}'>{e(_verdict(cell))}</span></p>")
    head, rows = _pivot(result)
    parts.append("<h2>Mean test accuracy</h2>" + _html_table(
        head[:2] + [f"{s}" for s in head[2:]], rows))
    parts.append("<h2>Interactive charts</h2><p class='toggles' id='toggles'>Schemes: "
                 + "".join(f"<label>{_swatch(s)}<input type='checkbox' class='toggle' "
                           f"data-scheme='{e(s)}' checked> {e(s)}</label>"
                           for s in _schemes(result))
                 + "<button type='button' id='toggle-all'>all / none</button></p>"
                 "<p class='muted'>Click a scheme to hide or show it; hover a point for its "
                 "value.</p>")
    parts.append("<div class='charts'>")
    for ch in ("chart-acc-epoch", "chart-loss", "chart-acc-depth"):
        title = {"chart-acc-epoch": "Test accuracy per epoch", "chart-loss": "Training loss",
                 "chart-acc-depth": "Test accuracy against depth"}[ch]
        parts.append(f"<div><h3>{title}</h3><div class='charts' id='{ch}'></div></div>")
    parts.append("</div>")
    parts.append("<h2>Results</h2>" + _html_table(_HEAD, _rows(result), win_col=len(_HEAD) - 1))
    parts.append("<h2>Stable gradients, convergence speed, accuracy</h2>"
                 + _html_table(_CLAIMS_HEAD, _claims_rows(result))
                 + f"<p class='muted'>Steps to target: to {c.get('target_accuracy')} test "
                   "accuracy, mean over the seeds that reached it.</p>")
    why = _audit_reasons(result)
    if why:
        parts.append("<h2>Why the audit at init said so</h2><ul>" + "".join(
            f"<li>depth {d}, width {w}, {e(s)}: {e(v)}: {e(m)}</li>" for d, w, s, v, m in why)
            + "</ul><p class='muted'>Seed 0, one batch, before training; see the glossary.</p>")
    scheme_err, run_err = _errors(result)
    if scheme_err:
        parts.append("<h2>Schemes that failed to apply</h2><ul>" + "".join(
            f"<li>depth {d}, width {w}, {e(s)}: {e(m)}</li>" for d, w, s, m in scheme_err[:20])
            + "</ul>")
    if run_err:
        parts.append("<h2>Runs that failed (the model or its training, not the scheme)</h2><ul>"
                     + "".join(f"<li>depth {d}, width {w}, {e(s)}: {e(m)}</li>"
                               for d, w, s, m in run_err[:20]) + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name in figures:
        with open(os.path.join(out, name), "rb") as f:
            b64 = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<figure><img alt='{e(name)}' src=\"data:image/png;base64,{b64}\">"
                     f"<figcaption>{e(_caption(result, name, notes.get(name, ())))}"
                     "</figcaption></figure>")
    if not figures:
        parts.append(f"<p class='muted'>No figures: {e(why_no_figures or 'none drawn')}.</p>")
    parts.append("<h2>Glossary</h2><dl class='gloss'>" + "".join(
        f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _GLOSSARY) + "</dl>")
    parts.append("<h2>Per seed</h2><details><summary>every run (" + str(len(result.runs))
                 + ")</summary>" + _html_table(_SEED_HEAD, _seed_rows(result)) + "</details>")
    parts.append("<h2>Configuration</h2>" + _html_table(["setting", "value"],
                                                        [list(r) for r in _config_rows(result)]))
    parts.append("<h2>Reproduce</h2><pre>" + e(" ".join(result.command or [])) + "</pre>")
    parts.append(_html_table(["version", ""], [[k, str(v)] for k, v in
                                               result.environment.items()]))
    parts.append("<div id='tip'></div><script type='application/json' id='report-data'>"
                 + data + "</script><script>" + _JS + "</script></body></html>")
    return "\n".join(parts)


def _html_transfer(result: CompareResult, figures: list[str], out: str,
                   why_no_figures: str | None) -> list[str]:
    """The body of a learning-rate transfer report (``transfer.py`` computes the content)."""
    e = html.escape
    head, rows = transfer_rows(result)
    parts = [f"<p class='muted'>{len(result.runs)}/{result.total_runs} runs, "
             f"{result.wall_time_s:.1f} s. Every number is in <a href='results.json'>"
             "results.json</a>, one row per run in <a href='results.csv' download>"
             "results.csv</a>.</p>",
             "<h2>Training loss per learning rate</h2>" + _html_table(head, rows)
             + "<p class='muted'>Loss on the whole training split after training, mean over "
               "seeds; bold: the best learning rate of the row.</p>", "<h2>Figures</h2>"]
    for name in figures:
        with open(os.path.join(out, name), "rb") as f:
            b64 = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<figure><img alt='{e(name)}' src=\"data:image/png;base64,{b64}\">"
                     f"<figcaption>{e(TRANSFER_CAPTIONS.get(name, ''))}</figcaption></figure>")
    if not figures:
        parts.append(f"<p class='muted'>No figures: {e(why_no_figures or 'none drawn')}.</p>")
    _s, run_err = _errors(result)
    errs = _s + run_err
    if errs:
        parts.append("<h2>Runs that failed</h2><ul>" + "".join(
            f"<li>depth {d}, width {w}, {e(s)}: {e(m)}</li>" for d, w, s, m in errs[:20])
            + "</ul>")
    parts.append("<h2>Configuration</h2>" + _html_table(
        ["setting", "value"], [list(r) for r in _config_rows(result)]))
    parts.append("<h2>Reproduce</h2><pre>" + e(" ".join(result.command or [])) + "</pre>")
    parts.append(_html_table(["version", ""], [[k, str(v)] for k, v in
                                               result.environment.items()]))
    parts.append("</body></html>")
    return parts


def _md_transfer(result: CompareResult, figures: list[str], why_no_figures: str | None
                 ) -> list[str]:
    head, rows = transfer_rows(result)
    lines = [f"{len(result.runs)}/{result.total_runs} runs in {result.wall_time_s:.1f} s; "
             "every number is in `results.json`, one row per run in `results.csv`.", "",
             "## Training loss per learning rate", "", *_md_table(head, rows), "",
             "Loss on the whole training split after training, mean over seeds; bold: the "
             "best learning rate of the row.", "", "## Figures", ""]
    lines += [f"![{name}]({name})\n\n{TRANSFER_CAPTIONS.get(name, '')}\n" for name in figures]
    if not figures:
        lines += [f"No figures: {why_no_figures or 'none drawn'}.", ""]
    _s, run_err = _errors(result)
    if _s + run_err:
        lines += ["## Runs that failed", ""]
        lines += [f"- depth {d}, width {w}, {s}: {m}" for d, w, s, m in (_s + run_err)[:20]]
        lines.append("")
    lines += ["## Configuration", "",
              *_md_table(["setting", "value"], [list(r) for r in _config_rows(result)]), "",
              "## Reproduce", "", "```", " ".join(result.command or []), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result.environment.items()), ""]
    return lines



def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def _md(result: CompareResult, figures: list[str], notes: dict[str, list[str]],
        why_no_figures: str | None) -> str:
    c = result.config
    lines = [f"# {_title(result)}", ""]
    if result.partial:
        lines += [f"> **Partial report**: interrupted after {len(result.runs)} of "
                  f"{result.total_runs} runs ("
                  + ("rerun to complete it" if is_transfer(result) else "resume with `--resume`")
                  + ").", ""]
    if is_transfer(result):
        return "\n".join([*lines, takeaway(result), "",
                          *_md_transfer(result, figures, why_no_figures)])
    lines += [takeaway(result), "",
              f"{len(result.runs)}/{result.total_runs} runs in {result.wall_time_s:.1f} s; "
              "every number is in `results.json`, one row per run in `results.csv`.", "",
              "## Verdict", ""]
    lines += [f"- **depth {cell['depth']}, width {cell['width']}**: {_verdict(cell)}"
              for cell in result.summary]
    head, rows = _pivot(result)
    lines += ["", "## Mean test accuracy", "", *_md_table(head, rows), "", "## Results", "",
              *_md_table(_HEAD, _rows(result)), "",
              "## Stable gradients, convergence speed, accuracy", "",
              *_md_table(_CLAIMS_HEAD, _claims_rows(result)), "",
              f"Steps to target: to {c.get('target_accuracy')} test accuracy.", ""]
    why = _audit_reasons(result)
    if why:
        lines += ["## Why the audit at init said so", ""]
        lines += [f"- depth {d}, width {w}, {s}: {v}: {m}" for d, w, s, v, m in why]
        lines.append("")
    scheme_err, run_err = _errors(result)
    if scheme_err:
        lines += ["## Schemes that failed to apply", ""]
        lines += [f"- depth {d}, width {w}, {s}: {m}" for d, w, s, m in scheme_err[:20]]
        lines.append("")
    if run_err:
        lines += ["## Runs that failed (the model or its training, not the scheme)", ""]
        lines += [f"- depth {d}, width {w}, {s}: {m}" for d, w, s, m in run_err[:20]]
        lines.append("")
    lines += ["## Figures", ""]
    lines += [f"![{name}]({name})\n\n{_caption(result, name, notes.get(name, ()))}\n"
              for name in figures]
    if not figures:
        lines += [f"No figures: {why_no_figures or 'none drawn'}.", ""]
    lines += ["## Glossary", ""]
    lines += [f"- **{k}**: {v}" for k, v in _GLOSSARY]
    lines += ["", "## Per seed", "", *_md_table(_SEED_HEAD, _seed_rows(result)), "",
              "## Configuration", "",
              *_md_table(["setting", "value"], [list(r) for r in _config_rows(result)]), "",
              "## Reproduce", "", "```", " ".join(result.command or []), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result.environment.items()), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- writing

_STAGING = ".initwise-staging-"


def _write_new(path: str, data: bytes) -> None:
    """Create ``path`` (which must not exist) and write ``data``; never follows a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _exchange(a: str, b: str) -> bool:
    """Atomically swap the paths ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _clean_stale(parent: str, base: str) -> None:
    """Remove staging folders of ``base`` left by killed processes (their pid is gone)."""
    prefix = f".{base}{_STAGING}"
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_s = name[len(prefix):].split("-", 1)[0]
        if pid_s.isdigit():
            pid = int(pid_s)
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
                continue  # still running: not ours to remove
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def checkpoint_path(out: str) -> str:
    """Where a running sweep keeps its finished runs (next to ``out``, not inside it)."""
    final = os.path.realpath(out)
    return os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.initwise-"
                                                "checkpoint.json")


def write_checkpoint(out: str, state: dict[str, Any]) -> None:
    """Atomically replace the sweep's checkpoint with ``state`` (config and runs so far).

    The checkpoint is JSON lines: a header (``checkpoint``, ``config``, ``wall_time_s``), then
    one line per finished run (:func:`append_checkpoint`), so saving after every run costs one
    run, not all of them, and ``--resume`` survives even SIGKILL (a torn last line is ignored).
    Removed when the report is written. The file is created by :func:`tempfile.mkstemp`
    (``O_EXCL``) and renamed over the old one: no symlink is followed.
    """
    path = checkpoint_path(out)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            head = {k: v for k, v in state.items() if k != "runs"}
            f.write(json.dumps(head, allow_nan=False) + "\n")
            for run in state.get("runs") or []:
                f.write(json.dumps({"run": run}, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def append_checkpoint(out: str, run: dict[str, Any], wall_time_s: float) -> None:
    """Add one finished run to the checkpoint :func:`write_checkpoint` created (a symlink put
    in its place is refused: ``O_NOFOLLOW``)."""
    line = json.dumps({"run": run, "wall_time_s": wall_time_s}, allow_nan=False) + "\n"
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(checkpoint_path(out), flags)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(line)


def read_checkpoint(path: str) -> dict[str, Any]:
    """The state a checkpoint holds: its header, ``runs`` and the latest ``wall_time_s``."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines:
        raise ValueError("empty checkpoint")
    state: dict[str, Any] = json.loads(lines[0])
    if not isinstance(state, dict):
        raise ValueError("not a compare checkpoint")
    runs: list[Any] = []
    for i, line in enumerate(lines[1:], 1):
        try:
            rec = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                break  # a line torn by a kill mid-write
            raise
        runs.append(rec["run"])
        if "wall_time_s" in rec:
            state["wall_time_s"] = rec["wall_time_s"]
    state["runs"] = runs
    return state


def out_problem(out: str) -> str | None:
    """Return why ``out`` cannot receive a report (or ``None``): checked before any training.

    ``out`` may be missing (it is created), or a folder holding only report files (a previous
    report, replaced as a whole). Its parent folder must be writable: the new report is
    staged next to it and swapped in.
    """
    path = os.path.realpath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"--out {out!r} exists and is not a directory"
    if os.path.isdir(path):
        try:
            foreign = sorted(n for n in os.listdir(path) if n not in REPORT_FILES)
        except OSError as e:
            return f"--out {out!r} is not a readable directory ({e.strerror or e})"
        if foreign:
            shown = ", ".join(repr(n) for n in foreign[:3]) + (" ..." if len(foreign) > 3
                                                               else "")
            return (f"--out {out!r} holds files that are not part of an initwise report "
                    f"({shown}); the report replaces the whole folder, so give a new or "
                    "empty folder")
    anc = os.path.dirname(path)
    while anc and not os.path.exists(anc):
        anc = os.path.dirname(anc)
    if not anc or not os.path.isdir(anc) or not os.access(anc, os.W_OK | os.X_OK):
        return (f"--out {out!r} is not a writable directory (its parent "
                f"{os.path.dirname(path)!r} must be a writable folder)")
    return None


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) arrived while figures rendered, and the report was still written:
    every number, the figures finished so far. A plain ``KeyboardInterrupt`` out of
    :func:`write_report` means the report was not swapped in (``out`` is as it was)."""


def write_report(result: CompareResult, out: str, *, pool: WorkerPool | None = None
                 ) -> dict[str, str]:
    """Write the report folder ``out``; return ``{kind: path}`` of the files written.

    Everything is written into a fresh private staging folder next to ``out`` (created with
    :func:`tempfile.mkdtemp`, files opened with ``O_EXCL | O_NOFOLLOW``), then swapped into
    place as a whole, so ``out`` always holds one complete report. A folder ``out`` that
    holds anything but report files is refused (``ValueError``). If ``KeyboardInterrupt``
    arrives while figures render, the documents are still written with the figures finished
    so far, swapped in, then :class:`ReportInterrupted` (a ``KeyboardInterrupt``) is raised;
    an interrupt at any other moment leaves ``out`` as it was. ``pool`` (the :class:`WorkerPool`
    that ran the sweep) draws the figures in its workers, each figure a task; the files are
    the same bytes as when drawn here.

    Example:
        >>> import tempfile
        >>> from .run import CompareConfig, run_compare
        >>> res = run_compare(CompareConfig(dataset="teacher", depths=[2], widths=[8],
        ...                                 schemes=["torch"], seeds=1, epochs=1))
        >>> paths = write_report(res, os.path.join(tempfile.mkdtemp(), "rep"))
        >>> {"html", "json", "md", "csv"} <= set(paths)
        True
    """
    problem = out_problem(out)
    if problem is not None:
        raise ValueError(problem)
    final = os.path.realpath(out)
    parent, base = os.path.dirname(final), os.path.basename(final)
    os.makedirs(parent, exist_ok=True)
    _clean_stale(parent, base)
    stage = tempfile.mkdtemp(prefix=f".{base}{_STAGING}{os.getpid()}-", dir=parent)
    try:
        docs = {"json": "results.json", "csv": "results.csv", "md": "report.md",
                "html": "index.html"}
        _write_new(os.path.join(stage, docs["json"]),
                   json.dumps(result.to_dict(), indent=1, allow_nan=False).encode())
        _write_new(os.path.join(stage, docs["csv"]), results_csv(result).encode())
        figures, notes, interrupted, why = _write_figures(result, stage, pool)
        _write_new(os.path.join(stage, docs["md"]),
                   _md(result, figures, notes, why).encode())
        _write_new(os.path.join(stage, docs["html"]),
                   _html(result, figures, notes, stage, why).encode())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)
        if os.path.isdir(final):
            if _exchange(stage, final):
                shutil.rmtree(stage, ignore_errors=True)  # the previous report
            else:
                old = f"{stage}-old"
                os.rename(final, old)
                os.rename(stage, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, final)
    finally:
        if os.path.isdir(stage) and os.path.basename(stage).startswith(f".{base}{_STAGING}"):
            shutil.rmtree(stage, ignore_errors=True)
    with contextlib.suppress(OSError):  # the report now holds every finished run
        os.remove(checkpoint_path(out))
    paths = {k: os.path.join(out, v) for k, v in docs.items()}
    for name in figures:
        paths[name] = os.path.join(out, name)
    if interrupted:
        raise ReportInterrupted
    return paths
