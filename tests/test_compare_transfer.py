"""``initwise compare`` learns learning-rate transfer (issue 16): the sweep, its report, presets.

The measured claims (slow tier) reproduce Tensor Programs V's Fig. 1 in small: from the
smallest to the largest width the muP optimum moves by at most one grid step (a factor 2) and
the SP optimum by at least two; across depth the same for CompleteP against plain muP.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from initwise import cli
from initwise.compare import CompareConfig, run_compare, write_report
from initwise.compare.presets import preset_overrides
from initwise.compare.report import REPORT_FILES
from initwise.compare.transfer import run_transfer, transfer_summary

TINY: dict[str, Any] = {"dataset": "teacher", "arch": "mlp", "depths": [3], "widths": [8, 32],
                        "optimizer": "adam", "epochs": 1, "seeds": 1, "batch_size": 128,
                        "lrs": [1e-3, 1e-2], "parametrizations": ["sp", "mup"]}


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny() -> Any:
    return run_transfer(_cfg(**TINY))


def _cfg(**kw: Any) -> CompareConfig:
    cfg = CompareConfig(**kw)
    cfg.validate()
    return cfg


def _shift(summary: list[dict[str, Any]], p: str, axis: str) -> int:
    (s,) = [s for s in summary if s["kind"] == "shift" and s["parametrization"] == p
            and s["axis"] == axis]
    assert s["steps"] is not None
    return int(s["steps"])


def test_sweep_runs_every_cell_and_summarizes(tiny: Any) -> None:
    assert [(r.scheme, r.width, r.lr) for r in tiny.runs] == [
        (p, w, lr) for w in (8, 32) for p in ("sp", "mup") for lr in (1e-3, 1e-2)]
    assert all(r.error is None and r.train_split_loss is not None for r in tiny.runs)
    curves = [s for s in tiny.summary if s["kind"] == "curve"]
    assert len(curves) == 4 and all(len(c["loss"]) == 2 for c in curves)
    for c in curves:
        assert c["best_lr"] == c["lrs"][c["best_index"]]
        assert c["loss"][c["best_index"]] == min(c["loss"])
    # At the base width (8) muP is SP: the same weights and updates, the same loss.
    base = {(r.scheme, r.lr): r.train_split_loss for r in tiny.runs if r.width == 8}
    assert base[("sp", 1e-3)] == base[("mup", 1e-3)] and base[("sp", 1e-2)] == base[("mup", 1e-2)]
    wide = {(r.scheme, r.lr): r.train_split_loss for r in tiny.runs if r.width == 32}
    assert wide[("sp", 1e-2)] != wide[("mup", 1e-2)]
    shifts = [s for s in tiny.summary if s["kind"] == "shift"]
    assert {(s["parametrization"], s["axis"], s["from"], s["to"]) for s in shifts} == {
        ("sp", "width", 8, 32), ("mup", "width", 8, 32)}
    # The summary is a pure function of the runs.
    assert transfer_summary(tiny.runs, tiny.config) == tiny.summary


def test_train_split_loss_is_the_loss_on_the_training_split(tiny: Any) -> None:
    """Rebuild one run by hand through the public API and compare the number."""
    import initwise
    from initwise.compare.data import load_dataset
    from initwise.compare.models import build_model
    from initwise.compare.train import TrainConfig, train_one

    data = load_dataset("teacher", seed=0)
    torch.manual_seed(0 * 7919 + 3 * 31 + 32)
    model = build_model("mlp", data.in_shape, data.n_classes, depth=3, width=32)
    with torch.device("meta"):
        base = build_model("mlp", data.in_shape, data.n_classes, depth=3, width=8)
    p = initwise.parametrize(model, "mup", base=base)
    p.init(seed=0)
    train_one(model, data, TrainConfig(optimizer="adam", lr=1e-2, epochs=1, batch_size=128),
              scheme="mup", depth=3, seed=0, params=p.param_groups(lr=1e-2, optimizer="adam"))
    model.eval()
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(data.x_train), data.y_train))
    (run,) = [r for r in tiny.runs if (r.scheme, r.width, r.lr) == ("mup", 32, 1e-2)]
    assert run.train_split_loss == pytest.approx(loss, rel=1e-6)


def test_report_has_the_transfer_table_and_figure(tiny: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = write_report(tiny, str(tmp_path / "rep"))
    files = set(p.name for p in (tmp_path / "rep").iterdir())
    assert "lr_transfer.png" in files and files <= REPORT_FILES
    md = Path(paths["md"]).read_text()
    assert "## Training loss per learning rate" in md and "| parametrization |" in md
    assert "grid step" in md.splitlines()[2]
    html = Path(paths["html"]).read_text()
    assert "lr_transfer.png" in html and "data:image/png;base64" in html
    csv_head = Path(paths["csv"]).read_text().splitlines()[0].split(",")
    assert csv_head[-2:] == ["lr", "train_split_loss"]
    got = json.loads(Path(paths["json"]).read_text())
    assert got["config"]["lrs"] == [1e-3, 1e-2] and got["runs"][0]["lr"] == 1e-3


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="lrs must be a non-empty list"):
        _cfg(**{**TINY, "lrs": [0.01, -1.0]})
    with pytest.raises(ValueError, match="completep"):
        _cfg(**{**TINY, "parametrizations": ["mu-p"]})
    with pytest.raises(ValueError, match="run_transfer"):
        run_compare(CompareConfig(**TINY))
    with pytest.raises(ValueError, match="--resume is not supported"):
        run_transfer(_cfg(**TINY), previous={"runs": []})
    assert _cfg(**{**TINY, "lrs": [0.01, 0.001, 0.01]}).lrs == [0.001, 0.01]


def test_cli_and_presets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("lr-transfer", "lr-transfer-depth"):
        p = preset_overrides(name)
        assert p["lrs"] and all(b / a == 2.0 for a, b in zip(p["lrs"], p["lrs"][1:], strict=False))
    assert preset_overrides("lr-transfer")["parametrizations"] == ["sp", "mup"]
    assert preset_overrides("lr-transfer-depth")["parametrizations"] == ["mup", "completep"]
    out = tmp_path / "rep"
    code = cli.main(["compare", "--preset", "lr-transfer", "--dataset", "teacher",
                     "--widths", "8,16", "--lrs", "0.001,0.01", "--seeds", "1",
                     "--batch-size", "128", "--out", str(out)])
    got = capsys.readouterr()
    assert code == 0, got.err
    assert "best lr" in got.out and "grid step" in got.out
    assert "lr 0.01" in got.err  # the progress line names the learning rate
    assert json.loads((out / "results.json").read_text())["total_runs"] == 8
    assert cli.main(["compare", "--lrs", "0.01", "--parametrizations", "nope",
                     "--out", str(tmp_path / "x")]) == 2
    assert "parametrization" in capsys.readouterr().err


def test_interrupt_gives_a_partial_report(tiny: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import transfer

    real = transfer._one_transfer
    calls: list[int] = []

    def two_then_interrupt(*a: Any, **k: Any) -> Any:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(transfer, "_one_transfer", two_then_interrupt)
    part = run_transfer(_cfg(**TINY))
    assert part.partial and len(part.runs) == 2 and part.total_runs == 8
    assert [r.to_dict()["train_split_loss"] for r in part.runs] == [
        r.to_dict()["train_split_loss"] for r in tiny.runs[:2]]
    paths = write_report(part, str(tmp_path / "rep"))
    assert "rerun to complete it" in Path(paths["md"]).read_text()


@pytest.mark.slow
def test_jobs_2_gives_bitwise_the_serial_numbers(tiny: Any) -> None:
    par = run_transfer(_cfg(**{**TINY, "jobs": 2}))

    def numbers(res: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.to_dict().items() if k != "time_s"} for r in res.runs]

    assert numbers(par) == numbers(tiny)
    assert par.summary == tiny.summary


@pytest.mark.slow
def test_width_transfer_mup_holds_sp_moves() -> None:
    """Digits, ReLU MLP with 2 hidden layers, Adam, 1 epoch, widths 64 and 1024, lr grid
    2^-12..2^-4 (factor 2). Measured: SP's best rate falls 4 grid steps (2^-6 -> 2^-10),
    muP's does not move (2^-6)."""
    res = run_transfer(_cfg(dataset="digits", arch="mlp", depths=[3], widths=[64, 1024],
                            optimizer="adam", epochs=1, seeds=1,
                            lrs=[2.0**k for k in range(-12, -3)],
                            parametrizations=["sp", "mup"]))
    assert all(r.error is None for r in res.runs)
    sp, mup = _shift(res.summary, "sp", "width"), _shift(res.summary, "mup", "width")
    assert abs(mup) <= 1 and sp <= -2, (sp, mup)


@pytest.mark.slow
def test_depth_transfer_completep_holds_mup_moves() -> None:
    """Residual MLP with BatchNorm (digits), width 64, 2 and 32 blocks, Adam, 1 epoch, lr grid
    2^-11..2^-6. Measured: muP's best rate falls 3 grid steps (2^-7 -> 2^-10), CompleteP's
    stays at 2^-7."""
    res = run_transfer(_cfg(dataset="digits", arch="resmlp", norm="batch", depths=[2, 32],
                            widths=[64], optimizer="adam", epochs=1, seeds=1,
                            lrs=[2.0**k for k in range(-11, -5)],
                            parametrizations=["mup", "completep"]))
    assert all(r.error is None for r in res.runs)
    mup, cp = _shift(res.summary, "mup", "depth"), _shift(res.summary, "completep", "depth")
    assert abs(cp) <= 1 and abs(mup) >= 2, (mup, cp)
    best = {(s["parametrization"], s["depth"]): s["loss"][s["best_index"]]
            for s in res.summary if s["kind"] == "curve"}
    assert best[("completep", 32)] < best[("mup", 32)]
    assert not math.isnan(best[("mup", 2)])


def test_an_optimum_at_the_end_of_the_lr_grid_is_not_called_a_measured_shift() -> None:
    """Best lr at the largest (or smallest) lr of the grid: the loss may keep falling beyond
    it, so '0 grid steps' is no evidence of transfer (before: said without a caveat)."""
    from initwise.compare.run import CompareResult
    from initwise.compare.train import RunResult
    from initwise.compare.transfer import transfer_takeaway

    def run(width: int, lr: float, loss: float) -> RunResult:
        r = RunResult("sp", 2, 0, 0.5, 0.5, 0.5, False, None, None, 1, 0.1, width=width)
        r.lr, r.train_split_loss = lr, loss
        return r

    cfg = {"lrs": [0.001, 0.01, 0.1], "parametrizations": ["sp"], "depths": [2],
           "widths": [8, 32]}
    # the loss falls with lr at both widths: the optimum is the grid's largest lr
    edge = [run(w, lr, 1.0 / lr) for w in (8, 32) for lr in cfg["lrs"]]
    shift = next(s for s in transfer_summary(edge, cfg) if s["kind"] == "shift")
    assert shift["steps"] == 0 and shift["at_grid_end"] == [8, 32]
    text = transfer_takeaway(CompareResult(cfg, edge, transfer_summary(edge, cfg), {}, {}))
    assert "at width 8 and 32 it is an end of the learning-rate grid" in text
    assert "extend --lrs" in text
    # an interior optimum (0.01 at both widths) keeps the plain sentence
    inner = [run(w, lr, abs(math.log10(lr) + 2) + 1) for w in (8, 32) for lr in cfg["lrs"]]
    shift = next(s for s in transfer_summary(inner, cfg) if s["kind"] == "shift")
    assert shift["steps"] == 0 and shift["at_grid_end"] == []
    text = transfer_takeaway(CompareResult(cfg, inner, transfer_summary(inner, cfg), {}, {}))
    assert "moves 0 grid steps (0.01 → 0.01)" in text and "end of the" not in text
