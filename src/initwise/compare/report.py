"""Write a comparison report: ``index.html``, ``report.md``, ``results.json`` and PNG figures.

``index.html`` is self-contained (inline CSS, figures embedded as base64 PNG) and opens from
disk. ``results.json`` holds every number, the configuration, the command line and versions.
Figures need matplotlib (the ``report`` extra); without it the HTML/MD/JSON are still written.
The text summary (:func:`format_summary`) is what the CLI prints in the terminal.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from typing import Any

import numpy as np

from .run import CompareResult

__all__ = ["format_summary", "write_report"]

FIGURES = ("accuracy_vs_depth.png", "signal_scale.png", "loss_curves.png", "grad_norms.png")
_CAPTIONS = {
    "accuracy_vs_depth.png": "Test accuracy after training vs depth (mean ± std over seeds; "
                             "thin markers: individual seeds).",
    "signal_scale.png": "At init (seed 0): std of each layer's output (forward) and of the loss "
                        "gradient with respect to it (backward), per layer.",
    "loss_curves.png": "Training loss (mean over seeds, band: min–max).",
    "grad_norms.png": "Per-layer weight-gradient norm at the first step (seed 0).",
    "audit_init.png": "initwise.audit_plot at init for the deepest network (seed 0): forward "
                      "ratio rms/reference, backward ratio, zero/saturated fraction per layer; "
                      "healthy band shaded.",
}


_LIMITS = {"signal_scale.png": 4, "loss_curves.png": 4, "grad_norms.png": 3}


def _caption(result: CompareResult, name: str) -> str:
    """The figure caption, saying when only the last (deepest/widest) cells are shown."""
    cap = _CAPTIONS[name]
    n_cells = len({(r.depth, r.width) for r in result.runs})
    limit = _LIMITS.get(name)
    if limit is not None and n_cells > limit:
        cap += (f" Only the last {limit} of {n_cells} (depth, width) cells are shown; every "
                "number is in results.json.")
    return cap


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _pfmt(p: float | None) -> str:
    if p is None:
        return "–"
    return "<1e-4" if p < 1e-4 else f"{p:.3g}"


def _verdict(cell: dict[str, Any]) -> str:
    w = cell["winner"]
    if w is None:
        return "no finished runs"
    if cell["runner_up"] is None:
        return f"{w} (only scheme)"
    s = (f"{w} wins, +{cell['margin'] * 100:.1f} points over {cell['runner_up']}")
    if cell.get("no_seed_spread"):
        s += " (no seed spread measured: every seed gave the same accuracy, so no p-value)"
    elif cell["significant"] is None:
        s += " (one seed: spread unknown)"
    else:
        word = "beyond" if cell["significant"] else "within"
        s += f" ({word} seed spread, Welch p={_pfmt(cell['p_value'])})"
    if cell.get("vs_torch") is not None:
        s += f"; +{cell['vs_torch'] * 100:.1f} points over PyTorch default"
    if cell.get("tied_with_winner") or cell.get("beats"):
        s += ". Tied with: " + (", ".join(cell["tied_with_winner"]) or "none")
        s += "; significantly better than: " + (", ".join(cell["beats"]) or "none")
    return s


def _rows(result: CompareResult) -> list[list[str]]:
    rows = []
    for cell in result.summary:
        for s in cell["ranking"] + [k for k in cell["schemes"] if k not in cell["ranking"]]:
            st = cell["schemes"][s]
            a = st["test_accuracy"]
            stt = st["steps_to_target"]
            n = st["runs"] - len(st["errors"])
            reach = f"{_fmt(stt['mean'], 0)} ({st['reached_target']}/{n})" if n else "–"
            rows.append([str(cell["depth"]), str(cell["width"]), s,
                         f"{_fmt(a['mean'])} ± {_fmt(a['std'])}" if a["n"] else "error",
                         f"[{_fmt(a['min'])}, {_fmt(a['max'])}]" if a["n"] else "–",
                         _fmt(st["final_train_loss"]["mean"]), reach,
                         f"{st['diverged']}/{n}" if n else "–", st.get("init_verdict") or "–",
                         "★" if s == cell["winner"] else ""])
    return rows


_HEAD = ["depth", "width", "scheme", "test acc (mean ± std)", "[min, max]", "final loss",
         "steps to target (reached)", "diverged", "audit at init", "best"]


def format_summary(result: CompareResult) -> str:
    """Return the terminal summary: a table per scheme and cell, then a winner per cell."""
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


# ----------------------------------------------------------------------------- figures


def _colors(schemes: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {s: cmap(i % 10) for i, s in enumerate(schemes)}


def _styles(schemes: list[str]) -> dict[str, str]:
    return {s: ("-", "--", "-.", ":")[i % 4] for i, s in enumerate(schemes)}


def _int_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _fig_accuracy(result: CompareResult, path: str) -> None:
    import matplotlib.pyplot as plt

    schemes = result.config["schemes"]
    col = _colors(schemes)
    widths = sorted({r.width for r in result.runs})
    fig, axes = plt.subplots(1, len(widths), figsize=(6.0 * len(widths), 4.2), squeeze=False)
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
                off = (k - (n - 1) / 2) * 0.08
                xs.append(j + off)
                means.append(float(np.mean(accs)))
                stds.append(float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0)
                ax.scatter([j + off] * len(accs), accs, s=9, color=col[s], alpha=0.45, zorder=2)
            if xs:
                ax.errorbar(xs, means, yerr=stds, color=col[s], marker="o", capsize=4,
                            linewidth=1.6, label=s, zorder=3)
        ax.set_xticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("depth")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{result.config['arch']}, width {width}, {result.config['activation']}")
        chance = 1.0 / max(result.dataset.get("n_classes", 10), 1)
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1)
        ax.text(0.01, chance + 0.01, "chance", color="grey", fontsize=8,
                transform=ax.get_yaxis_transform())
    axes[0][-1].legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cells(result: CompareResult, limit: int = 4) -> list[tuple[int, int]]:
    cells = sorted({(r.depth, r.width) for r in result.runs})
    return cells[-limit:]


def _fig_scale(result: CompareResult, path: str) -> None:
    import matplotlib.pyplot as plt

    schemes = result.config["schemes"]
    col = _colors(schemes)
    sty = _styles(schemes)
    cells = _cells(result, limit=_LIMITS["signal_scale.png"])
    fig, axes = plt.subplots(len(cells), 2, figsize=(11, 3.0 * len(cells) + 0.6), squeeze=False)
    for row, (d, w) in enumerate(cells):
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.init_scale]
            if not rs:
                continue
            sc = rs[0].init_scale
            for c, key in enumerate(("forward_std", "backward_std")):
                y = np.asarray(sc[key], dtype=np.float64)
                y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
                axes[row][c].plot(np.arange(1, y.size + 1), y, marker=".", color=col[s], label=s,
                                  linestyle=sty[s])
        for c, what in enumerate(("forward: layer output std", "backward: grad std at output")):
            ax = axes[row][c]
            ax.set_yscale("log")
            if c == 0:
                ax.axhline(1.0, color="grey", linestyle=":", linewidth=1)
            _int_ticks(ax)
            ax.set_title(f"depth {d}, width {w} — {what}", fontsize=10)
            ax.set_xlabel("layer")
            ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_loss(result: CompareResult, path: str) -> None:
    import matplotlib.pyplot as plt

    schemes = result.config["schemes"]
    col = _colors(schemes)
    sty = _styles(schemes)
    cells = _cells(result, limit=_LIMITS["loss_curves.png"])
    fig, axes = plt.subplots(1, len(cells), figsize=(5.2 * len(cells), 4.0), squeeze=False)
    for ax, (d, w) in zip(axes[0], cells, strict=True):
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.train_loss]
            if not rs:
                continue
            n = min(len(r.train_loss) for r in rs)
            steps = np.asarray(rs[0].loss_steps[:n])
            ys = np.asarray([r.train_loss[:n] for r in rs], dtype=np.float64)
            ax.plot(steps, ys.mean(axis=0), color=col[s], label=s, linewidth=1.4,
                    linestyle=sty[s])
            if len(rs) > 1:
                ax.fill_between(steps, ys.min(axis=0), ys.max(axis=0), color=col[s], alpha=0.15)
            for r in rs:
                if r.diverged and r.diverged_at_step is not None:
                    ax.axvline(r.diverged_at_step, color=col[s], linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"depth {d}, width {w}")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.grid(alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fig_grads(result: CompareResult, path: str) -> None:
    import matplotlib.pyplot as plt

    schemes = result.config["schemes"]
    col = _colors(schemes)
    sty = _styles(schemes)
    cells = _cells(result, limit=_LIMITS["grad_norms.png"])
    fig, axes = plt.subplots(1, len(cells), figsize=(5.2 * len(cells), 3.8), squeeze=False)
    for ax, (d, w) in zip(axes[0], cells, strict=True):
        for s in schemes:
            rs = [r for r in result.runs if (r.depth, r.width, r.scheme) == (d, w, s)
                  and r.grad_norms]
            if not rs:
                continue
            g = np.asarray(rs[0].grad_norms[0], dtype=np.float64)
            g = np.where(np.isfinite(g) & (g > 0), g, np.nan)
            ax.plot(np.arange(1, g.size + 1), g, marker=".", color=col[s], label=s,
                    linestyle=sty[s])
        ax.set_yscale("log")
        _int_ticks(ax)
        ax.set_title(f"depth {d}, width {w}: grad norm at step 0", fontsize=10)
        ax.set_xlabel("weight (input → output)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write_figures(result: CompareResult, out: str) -> tuple[list[str], bool]:
    """Render the figures into ``out``; return ``(names written, interrupted)``.

    Each figure is rendered to a temporary name and moved into place, so a figure file is
    always complete. A ``KeyboardInterrupt`` stops the rendering and is reported, not raised,
    so that the caller can still write the documents.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
    except ImportError:
        return [], False
    if not any(r.error is None for r in result.runs):
        return [], False  # nothing finished: nothing to draw
    made: list[str] = []
    jobs: list[tuple[str, Any]] = list(zip(FIGURES, (_fig_accuracy, _fig_scale, _fig_loss,
                                                      _fig_grads), strict=True))
    jobs.append(("audit_init.png", _fig_audit))
    for name, fn in jobs:
        tmp = os.path.join(out, f".{name}.{os.getpid()}.tmp.png")
        try:
            ok = fn(result, tmp)
            if ok is False or not os.path.exists(tmp):
                continue
            os.replace(tmp, os.path.join(out, name))
            made.append(name)
        except KeyboardInterrupt:
            return made, True
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return made, False


def _fig_audit(result: CompareResult, path: str) -> bool:
    """Overlay the library's audit plots of every scheme for the deepest cell, if available."""
    from .. import audit_plot as plot

    cells = _cells(result, limit=1)
    if not cells:
        return False
    reps, labels = [], []
    for s in result.config["schemes"]:
        for r in result.runs:
            if (r.depth, r.width, r.scheme) == (*cells[0], s) and r.audit_report is not None:
                reps.append(r.audit_report)
                labels.append(s)
                break
    if not reps:
        return False
    import matplotlib.pyplot as plt

    fig = plot(reps, path, labels=labels)
    plt.close(fig)
    return os.path.exists(path)


# ----------------------------------------------------------------------------- documents

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid
#ddd;padding-bottom:.2em}table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}th{background:#f4f4f4}
tr.win td{background:#eef8ee;font-weight:600}.partial{background:#fff3cd;border:1px solid #e0c36a;
padding:.6em 1em;border-radius:4px}.verdict{margin:.2em 0}.sig{color:#17692c}.nsig{color:#8a6d00}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;
color:#555}code,pre{background:#f6f6f6;border-radius:3px}pre{padding:.6em;overflow-x:auto;
font-size:.85em}.muted{color:#666;font-size:.9em}
"""


def _title(result: CompareResult) -> str:
    c = result.config
    return (f"initwise compare: {c['arch']} ({c['activation']}) on {c['dataset']}"
            + (f" — preset {c['preset']}" if c.get("preset") else ""))


def _html(result: CompareResult, figures: list[str], out: str) -> str:
    e = html.escape
    c = result.config
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(_title(result))}"
             f"</title><style>{_CSS}</style></head><body><h1>{e(_title(result))}</h1>"]
    parts.append(f"<p class='muted'>{len(result.runs)}/{result.total_runs} runs, "
                 f"{result.wall_time_s:.1f} s; schemes {e(', '.join(c['schemes']))}; depths "
                 f"{e(str(c['depths']))}; widths {e(str(c['widths']))}; {c['seeds']} seed(s); "
                 f"{e(c['optimizer'])} lr={c['lr']}, {c['epochs']} epochs, batch "
                 f"{c['batch_size']}.</p>")
    if result.partial:
        parts.append(f"<p class='partial'><b>Partial report:</b> the run was interrupted after "
                     f"{len(result.runs)} of {result.total_runs} runs.</p>")
    parts.append("<h2>Verdict</h2>")
    for cell in result.summary:
        cls = "sig" if cell["significant"] else "nsig"
        parts.append(f"<p class='verdict'><b>depth {cell['depth']}, width {cell['width']}:</b> "
                     f"<span class='{cls}'>{e(_verdict(cell))}</span></p>")
    parts.append("<p class='muted'>Winner: highest mean test accuracy. “Beyond seed spread” "
                 "means Welch's two-sided t-test against the runner-up gives p &lt; 0.05.</p>")
    parts.append("<h2>Results</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in _HEAD[:-1])
                 + "</tr>")
    for r in _rows(result):
        parts.append(f"<tr{' class=win' if r[-1] else ''}>"
                     + "".join(f"<td>{e(x)}</td>" for x in r[:-1]) + "</tr>")
    parts.append("</table>")
    errs = [(cell["depth"], s, err) for cell in result.summary
            for s, st in cell["schemes"].items() for err in st["errors"]]
    if errs:
        parts.append("<h2>Schemes that failed to apply</h2><ul>"
                     + "".join(f"<li>depth {d}, {e(s)}: {e(m)}</li>" for d, s, m in errs[:20])
                     + "</ul>")
    parts.append("<h2>Figures</h2>")
    for name in figures:
        with open(os.path.join(out, name), "rb") as f:
            b64 = base64.b64encode(f.read()).decode("ascii")
        parts.append(f"<figure><img alt='{e(name)}' src=\"data:image/png;base64,{b64}\">"
                     f"<figcaption>{e(_caption(result, name))}</figcaption></figure>")
    if not figures:
        parts.append("<p class='muted'>No figures: install matplotlib "
                     "(<code>pip install 'initwise[report]'</code>).</p>")
    parts.append("<h2>Reproduce</h2><pre>" + e(" ".join(result.command or [])) + "</pre>")
    parts.append("<pre>" + e(json.dumps({"config": c, "environment": result.environment},
                                        indent=1)) + "</pre>")
    parts.append("<p class='muted'>Every number is in results.json.</p></body></html>")
    return "\n".join(parts)


def _md(result: CompareResult, figures: list[str]) -> str:
    c = result.config
    lines = [f"# {_title(result)}", ""]
    if result.partial:
        lines += [f"> **Partial report**: interrupted after {len(result.runs)} of "
                  f"{result.total_runs} runs.", ""]
    lines += [f"{len(result.runs)}/{result.total_runs} runs in {result.wall_time_s:.1f} s. "
              f"Schemes: {', '.join(c['schemes'])}; depths {c['depths']}; widths {c['widths']}; "
              f"{c['seeds']} seed(s); {c['optimizer']} lr={c['lr']}, {c['epochs']} epochs.", "",
              "## Verdict", ""]
    lines += [f"- **depth {cell['depth']}, width {cell['width']}**: {_verdict(cell)}"
              for cell in result.summary]
    lines += ["", "Winner: highest mean test accuracy; beyond seed spread = Welch's two-sided "
              "t-test vs the runner-up, p < 0.05.", "", "## Results", "",
              "| " + " | ".join(_HEAD) + " |", "|" + "---|" * len(_HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})\n\n{_caption(result, name)}\n" for name in figures]
    lines += ["## Reproduce", "", "```", " ".join(result.command or []), "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result.environment.items()), ""]
    return "\n".join(lines)


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it into place."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_report(result: CompareResult, out: str) -> dict[str, str]:
    """Write the report folder ``out``; return ``{kind: path}`` of the files written.

    ``results.json`` and ``report.md`` are written first (every number is safe before the slow
    figure rendering); each file is written under a temporary name and renamed into place. If
    ``KeyboardInterrupt`` arrives while figures render, the documents are still written with
    the figures finished so far, then the interrupt is re-raised.

    Example:
        >>> import tempfile
        >>> from .run import CompareConfig, run_compare
        >>> res = run_compare(CompareConfig(dataset="teacher", depths=[2], widths=[8],
        ...                                 schemes=["torch"], seeds=1, epochs=1))
        >>> paths = write_report(res, tempfile.mkdtemp())
        >>> {"html", "json", "md"} <= set(paths)
        True
    """
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, "results.json"), "md": os.path.join(out, "report.md"),
             "html": os.path.join(out, "index.html")}
    _atomic_write(paths["json"], json.dumps(result.to_dict(), indent=1, allow_nan=False))
    _atomic_write(paths["md"], _md(result, []))
    figures, interrupted = _write_figures(result, out)
    if figures:
        _atomic_write(paths["md"], _md(result, figures))
    _atomic_write(paths["html"], _html(result, figures, out))
    for name in figures:
        paths[name] = os.path.join(out, name)
    if interrupted:
        raise KeyboardInterrupt
    return paths
