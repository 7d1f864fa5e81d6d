"""The report's text, colours and files: what a reader sees, and a folder that is never half
one run and half another."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import initwise
from initwise import cli
from initwise.compare import CompareConfig, RunResult, run_compare, summarize, write_report
from initwise.compare.report import (
    REPORT_FILES,
    _rows,
    _verdict,
    format_summary,
    results_csv,
    scheme_color,
    takeaway,
)
from initwise.compare.run import CompareResult

TINY = {"dataset": "teacher", "depths": [2], "widths": [8], "epochs": 1, "batch_size": 128}


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny() -> CompareResult:
    return run_compare(CompareConfig(**TINY, schemes=["torch", "kaiming"], seeds=2))  # type: ignore[arg-type]


def _fake(scheme: str, acc: float, seed: int, depth: int = 3, **kw: Any) -> RunResult:
    kw.setdefault("train_loss", [1.0])
    return RunResult(scheme, depth, seed, acc, 0.5, acc, False, None, None, 10, 0.1, width=8,
                     **kw)


def test_colour_is_fixed_per_scheme_across_reports_and_figures() -> None:
    assert scheme_color("xavier") == "#ff7f0e" and scheme_color("kaiming") == "#1f77b4"
    # Independent of the order and set of schemes, and stable for unknown names across
    # processes (a CRC of the name, not Python's salted hash()).
    assert scheme_color("he_uniform") == "#7b4173" and scheme_color("my_scheme") == "#aec7e8"


def test_report_has_takeaway_first_glossary_config_csv_and_per_seed(
        tiny: CompareResult, tmp_path: Path) -> None:
    paths = write_report(tiny, str(tmp_path / "rep"))
    html = Path(paths["html"]).read_text()
    body = html[html.index("<body>"):]
    assert body.index("id='takeaway'") < body.index("<h2>Verdict")
    for section in ("Glossary", "Per seed", "Configuration", "Mean test accuracy",
                    "Stable gradients, convergence speed, accuracy", "Test accuracy per epoch"):
        assert section in html, section
    assert "final train loss" in html and "<td>momentum</td><td>0.9</td>" in html
    # Offline: no external script, style sheet, image or link.
    assert "<script src" not in html and "<link" not in html
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)
    rows = Path(paths["csv"]).read_text().splitlines()
    assert rows[0].startswith("scheme,depth,width,seed,test_accuracy") and len(rows) == 5
    md = Path(paths["md"]).read_text()
    assert md.split("\n", 3)[2].startswith("At depth 2")  # the takeaway opens the report
    assert "## Glossary" in md and "**audit at init**" in md
    # The test accuracy per epoch is a figure of its own.
    if (tmp_path / "rep" / "accuracy_vs_depth.png").exists():
        assert (tmp_path / "rep" / "test_accuracy_curves.png").exists()


def test_one_seed_has_no_fake_spread() -> None:
    runs = [_fake("a", 0.9, 0), _fake("b", 0.8, 0)]
    res = CompareResult({"schemes": ["a", "b"]}, runs, summarize(runs, ["a", "b"]), {}, {})
    row = _rows(res)[0]
    assert row[3] == "0.900 (1 seed)" and "±" not in row[3] and row[4] == "–"
    assert "one seed: spread unknown" in _verdict(res.summary[0])
    assert "not a result" in takeaway(res)


def test_equal_means_call_no_winner_whatever_the_order_of_schemes() -> None:
    """Equal mean accuracies (one seed each at chance, a two-sample test split) have no
    winner; before, the first scheme listed 'won, +0.0 points'."""
    runs = [_fake("a", 0.5, 0), _fake("b", 0.5, 0), _fake("c", 0.25, 0)]
    for order in (["a", "b", "c"], ["b", "a", "c"]):
        cell = summarize(runs, order)[0]
        assert cell["winner"] is None and cell["tied_at_top"] == order[:2]
        res = CompareResult({"schemes": order}, runs, [cell], {}, {})
        v = _verdict(cell)
        assert v == f"no winner: {order[0]}, {order[1]} have the same mean test accuracy " \
                    "(0.500); ahead of c"
        assert "wins" not in v and "no winner" in takeaway(res)
        assert not any(row[-1] for row in _rows(res))  # no ★
    # two seeds, the same mean from different values: also no winner (not a 0.0-point win)
    two = [_fake("a", 0.5, 0), _fake("a", 0.7, 1), _fake("b", 0.7, 0), _fake("b", 0.5, 1)]
    cell = summarize(two, ["a", "b"])[0]
    assert cell["winner"] is None and cell["tied_at_top"] == ["a", "b"]
    # a real difference still has a winner
    assert summarize([_fake("a", 0.5, 0), _fake("b", 0.75, 0)], ["a", "b"])[0]["winner"] == "b"


def test_partial_report_crowns_no_winner_among_schemes_that_did_not_all_run() -> None:
    runs = [_fake("a", 0.9, 0), _fake("b", 0.5, 0), _fake("a", 0.91, 1)]
    cells = summarize([*runs, _fake("a", 0.9, 0, depth=6)], ["a", "b"], expected_seeds=2)
    full, missing = cells
    # depth 3: b ran seed 0 only, so only seed 0 is compared (a fair pairing).
    assert full["seeds_used"] == [0] and full["schemes"]["a"]["test_accuracy"]["n"] == 1
    assert not full["complete"]
    assert "Interrupted: compared on the 1 seed(s) every scheme finished (0)" in _verdict(full)
    # depth 6: b never ran: no winner, the leader is named as such.
    assert missing["winner"] is None and missing["leader"] == "a" and missing["missing"] == ["b"]
    assert "no winner is called" in _verdict(missing) and "wins" not in _verdict(missing)


def test_all_failed_report_names_the_model_error_not_matplotlib(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import run as run_mod

    def broken(*a: Any, **k: Any) -> None:
        raise RuntimeError("model blew up")

    monkeypatch.setattr(run_mod, "train_one", broken)
    res = run_compare(CompareConfig(**TINY, schemes=["torch", "kaiming"], seeds=1))  # type: ignore[arg-type]
    assert {r.error_stage for r in res.runs} == {"train"}
    paths = write_report(res, str(tmp_path / "rep"))
    html = Path(paths["html"]).read_text()
    assert "install matplotlib" not in html and "pip install" not in html
    assert "no run finished, so there is nothing to draw" in html
    assert "Runs that failed (the model or its training, not the scheme)" in html
    assert "Schemes that failed to apply" not in html
    assert "Every run failed" in takeaway(res)


def test_scheme_that_does_not_apply_is_filed_as_a_scheme_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import run as run_mod

    real = run_mod.apply_scheme

    def picky(model: Any, name: str, *a: Any, **k: Any) -> Any:
        if name == "kaiming":
            raise ValueError("kaiming does not apply here")
        return real(model, name, *a, **k)

    monkeypatch.setattr(run_mod, "apply_scheme", picky)
    res = run_compare(CompareConfig(**TINY, schemes=["torch", "kaiming"], seeds=1))  # type: ignore[arg-type]
    from initwise.compare.report import _errors

    scheme_err, run_err = _errors(res)
    assert [e[2] for e in scheme_err] == ["kaiming"] and run_err == []


def test_diverged_run_does_not_stretch_the_loss_axis(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from initwise.compare.report import _fig_loss

    ok = _fake("a", 0.9, 0, loss_steps=[5, 10, 15], train_loss=[2.3, 1.0, 0.5])
    bad = _fake("b", 0.1, 0, loss_steps=[5, 10, 15], train_loss=[2.3, 1e13, 1e26])
    bad.diverged, bad.diverged_at_step = True, 16
    res = CompareResult({"schemes": ["a", "b"]}, [ok, bad], [], {}, {})
    notes = _fig_loss(res, str(tmp_path / "loss.png"))
    assert any("cut at 3×" in n for n in notes) and any("diverged" in n for n in notes)


def test_zero_layers_on_log_axes_are_marked_and_noted(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from initwise.compare.report import _fig_scale

    r = _fake("a", 0.9, 0)
    r.init_scale = {"forward_std": [1.0, 0.0, 0.5], "backward_std": [1.0, 1.0, 1.0]}
    res = CompareResult({"schemes": ["a"]}, [r], [], {}, {})
    notes = _fig_scale(res, str(tmp_path / "s.png"))
    assert notes and "exactly 0" in notes[0]


def test_report_never_follows_a_planted_symlink(tiny: CompareResult, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import report as rep

    monkeypatch.setattr(rep, "_have_matplotlib", lambda: False)  # documents only: faster
    out = tmp_path / "rep"
    write_report(tiny, str(out))  # a previous report
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    pid = os.getpid()
    # Every temporary name the old writer used, planted as a symlink to the victim.
    for name in (f"results.json.{pid}.tmp", f"report.md.{pid}.tmp", f"index.html.{pid}.tmp",
                 f".accuracy_vs_depth.png.{pid}.tmp.png"):
        os.symlink(victim, out / name)
    with pytest.raises(ValueError, match="not part of an initwise report"):
        write_report(tiny, str(out))  # the planted links are foreign files: refused
    for name in os.listdir(out):
        if name.endswith((".tmp", ".tmp.png")):
            os.remove(out / name)
    os.symlink(victim, out / "results.csv.new")  # any other plant is refused too
    with pytest.raises(ValueError):
        write_report(tiny, str(out))
    os.remove(out / "results.csv.new")
    write_report(tiny, str(out))
    assert victim.read_text() == "precious"
    assert set(os.listdir(out)) <= REPORT_FILES


@pytest.mark.slow
def test_killed_writer_leaves_the_previous_report_whole(tmp_path: Path) -> None:
    """SIGKILL while the new report is being written: the old report is intact and whole."""
    out = tmp_path / "rep"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from initwise.compare import CompareConfig, run_compare, write_report
        from initwise.compare import report as rep
        res = run_compare(CompareConfig(dataset="teacher", depths=[2], widths=[8], epochs=1,
                                        batch_size=128, schemes=["torch"], seeds=1))
        rep._have_matplotlib = lambda: False  # documents only: faster
        write_report(res, {str(out)!r})
        res.wall_time_s = 12345.0  # marks the second report
        if sys.argv[1] == "kill":
            real = rep._write_new
            def dying(path, data):
                real(path, data)
                if path.endswith("results.csv"):
                    os.kill(os.getpid(), signal.SIGKILL)
            rep._write_new = dying
        write_report(res, {str(out)!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(initwise.__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, "kill"], env=env, timeout=120,
                          capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    first = json.loads((out / "results.json").read_text())
    assert first["wall_time_s"] != 12345.0  # the old report, complete
    assert {"index.html", "report.md", "results.json", "results.csv"} <= set(os.listdir(out))
    assert not [n for n in os.listdir(out) if "tmp" in n]  # no orphan temporary files
    stale = [n for n in os.listdir(tmp_path) if n.startswith(".rep.initwise-staging-")]
    assert stale  # the dead writer's private staging folder, outside the report
    proc = subprocess.run([sys.executable, "-c", script, "again"], env=env, timeout=120,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert json.loads((out / "results.json").read_text())["wall_time_s"] == 12345.0
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".rep.initwise-staging-")]


def test_factory_loader_appends_the_working_directory(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.machinery

    from initwise.compare.models import load_factory

    (tmp_path / "matplotlib.py").write_text("raise ImportError('the stray one')\n")
    (tmp_path / "initwise_cwd_factory_abc.py").write_text(
        "from torch import nn\ndef make(**kw):\n    return nn.Identity()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path), ".")])
    monkeypatch.delitem(sys.modules, "initwise_cwd_factory_abc", raising=False)
    load_factory("initwise_cwd_factory_abc:make")
    assert sys.path[-1] == str(tmp_path) and sys.path[0] != str(tmp_path)
    spec = importlib.machinery.PathFinder.find_spec("matplotlib", sys.path)
    if spec is not None:  # an installed matplotlib wins over ./matplotlib.py
        assert spec.origin is not None and not spec.origin.startswith(str(tmp_path))
    sys.modules.pop("initwise_cwd_factory_abc", None)


def test_quiet_still_prints_the_report_path(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dataset", "teacher", "--depths", "2", "--widths", "8", "--epochs", "1",
            "--seeds", "1", "--schemes", "torch", "--batch-size", "256"]
    assert cli.main(["compare", *args, "--quiet", "--out", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == f"report: {tmp_path / 'r' / 'index.html'}" + cap.out.strip()[
        len(f"report: {tmp_path / 'r' / 'index.html'}"):]
    assert cap.out.count("\n") == 1 and cap.err == ""


def test_progress_lines_off_a_terminal_and_bar_within_80_columns(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ev = {"done": 3, "total": 54, "elapsed_s": 12.0, "eta_s": 200.0,
          "run": _fake("orthogonal_very_long_scheme_name", 0.9, 2, depth=30)}
    lines = io.StringIO()
    p = cli._Progress("lines", lines, interval=0.0)
    p.start(54)
    p(ev)
    p({**ev, "done": 54})
    out = lines.getvalue().splitlines()
    assert len(out) == 3 and out[1].startswith("initwise compare: 3/54 runs") and "\r" not in \
        lines.getvalue()
    monkeypatch.setenv("COLUMNS", "80")
    bar = io.StringIO()
    p = cli._Progress("bar", bar)
    p.start(54)
    p(ev)
    for seg in bar.getvalue().split("\r"):
        assert len(seg) <= 80, seg


def test_cli_audit_explains_its_columns_and_plan_has_no_noise(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "mlp:depth=3,width=8", "--policy", "kaiming"]) == 0
    out = capsys.readouterr().out
    for col in ("intended", "orth err", "sgd upd", "adam upd"):
        assert re.search(rf"^  {re.escape(col)} +\S", out, re.M), col
    assert cli.main(["audit", "--help"]) == 0
    assert "adam upd" in capsys.readouterr().out
    assert cli.main(["plan", "mlp:depth=3,width=8"]) == 0
    assert "match nothing in this model" not in capsys.readouterr().out
    assert cli.main(["schemes"]) == 0
    assert "`" not in capsys.readouterr().out


def test_summary_reads_as_a_sentence(tiny: CompareResult) -> None:
    text = format_summary(tiny)
    assert "final train loss" in text and "row " not in text
    assert results_csv(tiny).count("\n") == 1 + len(tiny.runs)


def test_configuration_table_names_norm_only_where_it_built_something() -> None:
    """``--norm`` (default batch) shapes only resnet/resmlp blocks: the table said 'norm batch'
    for an MLP, which has no normalization at all; 'preset None' read as Python's None."""
    from initwise.compare.report import _config_rows

    runs = [_fake("a", 0.9, 0), _fake("b", 0.8, 0)]
    base = {"schemes": ["a", "b"], "norm": "batch", "preset": None, "depths": [3]}
    for arch, has_norm in (("mlp", False), ("cnn", False), ("my.mod:make", False),
                           ("resmlp", True), ("resnet", True)):
        res = CompareResult({**base, "arch": arch}, runs, summarize(runs, ["a", "b"]), {}, {})
        rows = dict(_config_rows(res))
        assert ("norm" in rows) is has_norm, arch
        assert rows["preset"] == "none" and rows["arch"] == arch


def test_huge_and_tiny_numbers_are_printed_in_scientific_notation() -> None:
    """A final train loss of 3.5e27 (Adam at lr 1e9) printed as a 28-digit '3520...128.000',
    and a memorized 2e-7 as '0.000', which reads as an exact zero."""
    from initwise.compare.report import _fmt

    assert _fmt(3.520583390134309e27) == "3.52e+27" and _fmt(2e-7) == "2.00e-07"
    assert _fmt(0.953) == "0.953" and _fmt(0.0) == "0.000" and _fmt(12345.0) == "12345.000"
    runs = [_fake("a", 0.6, 0, train_loss=[3.520583390134309e27]),
            _fake("b", 0.4, 0, train_loss=[2e-7])]
    res = CompareResult({"schemes": ["a", "b"]}, runs, summarize(runs, ["a", "b"]), {}, {})
    text = format_summary(res)
    assert "3.52e+27" in text and "2.00e-07" in text and "3520583390" not in text
