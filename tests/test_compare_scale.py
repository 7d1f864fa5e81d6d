"""Running the grid in parallel, across torchrun ranks, and resuming it: the same numbers.

Every run is seeded from its own (seed, depth, width) and every process uses the same torch
thread count, so the results must be bit-for-bit those of a serial run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import initwise
from initwise import cli
from initwise.compare import CompareConfig, run_compare

TINY = {"dataset": "teacher", "depths": [2, 3], "widths": [8], "schemes": ["torch", "kaiming"],
        "seeds": 2, "epochs": 1, "batch_size": 128}
ARGS = ["--dataset", "teacher", "--depths", "2,3", "--widths", "8", "--schemes",
        "torch,kaiming", "--seeds", "2", "--epochs", "1", "--batch-size", "128"]


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _numbers(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every number of every run but its wall time."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in runs]


def _src_env() -> dict[str, str]:
    src = str(Path(initwise.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, [os.environ.get("PYTHONPATH")])]), "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def serial() -> dict[str, Any]:
    return run_compare(CompareConfig(**TINY)).to_dict()  # type: ignore[arg-type]


def test_jobs_2_gives_bitwise_the_serial_numbers(serial: dict[str, Any]) -> None:
    par = run_compare(CompareConfig(**TINY, jobs=2)).to_dict()  # type: ignore[arg-type]
    assert _numbers(par["runs"]) == _numbers(serial["runs"])
    assert par["summary"] == serial["summary"]
    assert [(r["seed"], r["depth"], r["scheme"]) for r in par["runs"]] == [
        (s, d, sc) for s in range(2) for d in (2, 3) for sc in ("torch", "kaiming")]


@pytest.mark.slow
def test_jobs_2_report_draws_figures_in_the_workers_bit_identical(tmp_path: Path) -> None:
    """``--jobs 2`` draws the figures in the sweep's worker processes: the same PNG bytes and
    the same numbers as a serial run; a pool left unusable (an interrupted sweep) falls back
    to drawing in the parent."""
    from initwise.compare.report import FIGURE_MODULES, write_report
    from initwise.compare.run import WorkerPool

    for jobs in (1, 2):
        assert cli.main(["compare", *ARGS, "--quiet", "--jobs", str(jobs),
                         "--out", str(tmp_path / f"j{jobs}")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "j1").glob("*.png"))
    assert len(pngs) >= 5
    for name in pngs:
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes(), name
    runs = [json.loads((tmp_path / f"j{j}" / "results.json").read_text())["runs"] for j in (1, 2)]
    assert _numbers(runs[0]) == _numbers(runs[1])

    cfg = CompareConfig(**TINY, jobs=2)  # type: ignore[arg-type]
    res = run_compare(cfg)
    with WorkerPool(cfg, preload=FIGURE_MODULES) as pool:
        pool.terminate()
        assert not pool.usable
        paths = write_report(res, str(tmp_path / "fallback"), pool=pool)
    assert (tmp_path / "fallback" / pngs[0]).read_bytes() == (tmp_path / "j1" / pngs[0]).read_bytes()
    assert set(pngs) <= set(paths)


def test_resume_after_interrupt_gives_the_same_numbers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serial: dict[str, Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    from initwise.compare import run as run_mod

    real = run_mod._one
    calls: list[int] = []

    def three_then_interrupt(*a: Any, **k: Any) -> Any:
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    out = tmp_path / "rep"
    monkeypatch.setattr(run_mod, "_one", three_then_interrupt)
    assert cli.main(["compare", *ARGS, "--quiet", "--out", str(out)]) == 130
    part = json.loads((out / "results.json").read_text())
    assert part["partial"] and part["completed_runs"] == 3
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(run_mod, "_one", real)
    # Another setting is refused, the same settings resume.
    assert cli.main(["compare", *ARGS, "--epochs", "2", "--quiet", "--resume", "--out",
                     str(out)]) == 2
    assert "cannot resume: the previous run used epochs=1" in capsys.readouterr().err
    assert cli.main(["compare", *ARGS, "--quiet", "--resume", "--out", str(out)]) == 0
    done = json.loads((out / "results.json").read_text())
    assert not done["partial"] and done["resumed_runs"] == 3 and done["completed_runs"] == 8
    assert _numbers(done["runs"]) == _numbers(serial["runs"])
    assert done["summary"] == serial["summary"]
    assert (out / "audit_init.png").exists() or not _has_matplotlib()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_gives_the_same_numbers(
        tmp_path: Path, serial: dict[str, Any]) -> None:
    """A real process killed with SIGKILL mid-sweep: no report, but the checkpoint written
    after every run lets --resume finish with the serial numbers."""
    from initwise.compare.report import checkpoint_path, read_checkpoint

    out = tmp_path / "rep"
    env = {**_src_env(), "INITWISE_PROGRESS_INTERVAL": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "initwise", "compare", *ARGS, "--out",
                             str(out)], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # progress lines off a terminal: one per run here
        if " 3/8 runs" in line or time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written where the report goes
    saved = read_checkpoint(checkpoint_path(str(out)))
    assert 3 <= len(saved["runs"]) < 8
    assert cli.main(["compare", *ARGS, "--quiet", "--resume", "--out", str(out)]) == 0
    done = json.loads((out / "results.json").read_text())
    assert done["resumed_runs"] == len(saved["runs"]) and not done["partial"]
    assert _numbers(done["runs"]) == _numbers(serial["runs"])
    assert not Path(checkpoint_path(str(out))).exists()  # the report holds every run now
    assert sorted(os.listdir(tmp_path)) == ["rep"]  # no staging folder, no checkpoint


def test_sigterm_is_handled_like_ctrl_c() -> None:
    old = cli._on_sigterm()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    finally:
        signal.signal(signal.SIGTERM, old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_ranks_one_report_same_numbers(tmp_path: Path,
                                                    serial: dict[str, Any]) -> None:
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
           str(_free_port()), "-m", "initwise", "compare", *ARGS, "--quiet", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_src_env(),
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report: ") == 1  # rank 0 only
    res = json.loads((out / "results.json").read_text())
    assert res["environment"]["world_size"] == 2 and not res["partial"]
    assert _numbers(res["runs"]) == _numbers(serial["runs"])
    assert res["summary"] == serial["summary"]


def test_device_cuda_without_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        CompareConfig(**TINY, device="cuda").validate()  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_cuda_trains_on_the_gpu() -> None:
    res = run_compare(CompareConfig(**{**TINY, "seeds": 1}, device="cuda"))  # type: ignore[arg-type]
    assert all(r.error is None for r in res.runs), [r.error for r in res.runs]


def test_eta_weights_runs_by_cost() -> None:
    """The time left is weighted by expected cost: deep runs count more than shallow ones."""
    from initwise.compare.run import job_cost

    cfg = CompareConfig(**TINY)  # type: ignore[arg-type]
    assert job_cost(cfg, 30, 128) > 4 * job_cost(cfg, 5, 128)
    import time

    from initwise.compare import run as run_mod

    seen: list[tuple[dict[str, Any], float]] = []
    started: list[float] = []
    execute = run_mod._execute

    def timed(*a: Any, **k: Any) -> Any:
        started.append(time.perf_counter())
        return execute(*a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(run_mod, "_execute", timed)
    try:
        run_compare(CompareConfig(**{**TINY, "depths": [2, 12], "schemes": ["torch"],  # type: ignore[arg-type]
                                     "seeds": 1}),
                    callback=lambda ev: seen.append((ev, time.perf_counter())))
    finally:
        mp.undo()
    # After the shallow run (cost 1 x 4), the deep one (1 x 14, 3.5x) is what is left: the time
    # left is 3.5x the time the runs took so far (the set-up before them is not counted).
    first, at = seen[0]
    ran = at - started[0]
    assert 3.0 * ran < first["eta_s"] < 4.0 * ran


def test_checkpoint_is_appended_and_survives_a_torn_line(tmp_path: Path) -> None:
    """One line per run (not the whole sweep each time); a line torn by a kill is ignored."""
    from initwise.compare.report import (
        append_checkpoint,
        checkpoint_path,
        read_checkpoint,
        write_checkpoint,
    )

    out = str(tmp_path / "rep")
    write_checkpoint(out, {"checkpoint": True, "config": {"seeds": 1}, "runs": [{"i": 0}],
                           "wall_time_s": 1.0})
    append_checkpoint(out, {"i": 1}, 2.0)
    with open(checkpoint_path(out), "a", encoding="utf-8") as f:
        f.write('{"run": {"i": 2')  # killed mid-write
    state = read_checkpoint(checkpoint_path(out))
    assert state["runs"] == [{"i": 0}, {"i": 1}] and state["wall_time_s"] == 2.0
    assert state["config"] == {"seeds": 1}
    os.remove(checkpoint_path(out))
    os.symlink(str(tmp_path / "elsewhere"), checkpoint_path(out))
    with pytest.raises(OSError):
        append_checkpoint(out, {"i": 3}, 3.0)  # a symlink in its place is refused
    assert not (tmp_path / "elsewhere").exists()
