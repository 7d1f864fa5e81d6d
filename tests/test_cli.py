"""Tests for the initwise command line (in-process via cli.main, plus one real subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from initwise import cli

TINY = ["--dataset", "teacher", "--depths", "2", "--widths", "8", "--epochs", "1",
        "--seeds", "2", "--batch-size", "128", "--quiet"]


@pytest.fixture(autouse=True)
def _restore_threads() -> object:
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def test_compare_end_to_end_writes_report(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    rc = cli.main(["compare", *TINY, "--schemes", "torch,kaiming", "--out", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    with open(out / "results.json") as f:
        saved = json.load(f)
    assert printed["summary"] == saved["summary"]
    assert saved["config"]["schemes"] == ["torch", "kaiming"] and not saved["partial"]
    assert saved["command"][:2] == ["initwise", "compare"]
    assert set(saved["environment"]) >= {"python", "torch", "numpy", "initwise"}
    assert len(saved["runs"]) == 4
    html = (out / "index.html").read_text()
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html)
    assert "<link" not in html and "<script src" not in html  # self-contained
    md = (out / "report.md").read_text()
    assert "| depth | width | scheme |" in md
    assert (out / "accuracy_vs_depth.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_summary_in_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in TINY if a != "--quiet"]
    rc = cli.main(["compare", *args, "--schemes", "torch,xavier", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "depth 2, width 8:" in out and "wins" in out and "index.html" in out


def test_he2015_kaiming_beats_xavier_at_depth_30(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """He et al. (2015), reduced budget: 30 ReLU layers, SGD + momentum, 5 epochs, 3 seeds.

    The preset's own recipe (lr 0.002, 40 epochs, 5 seeds) takes minutes; at this budget a
    larger lr (0.005) shows the same claim.
    """
    rc = cli.main(["compare", "--preset", "he2015", "--epochs", "5", "--seeds", "3", "--lr",
                   "0.005", "--out", str(tmp_path / "rep"), "--quiet", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    cell = res["summary"][0]
    assert cell["depth"] == 30 and cell["winner"] == "kaiming"
    k = cell["schemes"]["kaiming"]["test_accuracy"]
    x = cell["schemes"]["xavier"]["test_accuracy"]
    assert x["max"] < 0.2  # Xavier stalls near chance (0.1)
    # Beyond the seed spread: seed ranges do not overlap, and Welch's t-test gives p < 0.05.
    assert k["min"] > x["max"] + 0.1
    assert cell["margin"] == pytest.approx(k["mean"] - x["mean"]) and cell["margin"] > 0.2
    assert cell["significant"] is True and cell["p_value"] < 0.05


@pytest.mark.parametrize(("argv", "needle"), [
    (["compare", "--schemes", "kaiming,nope"], "Valid options:"),
    (["compare", "--arch", "vgg", "--dataset", "teacher"], "mlp"),
    (["compare", "--activation", "rleu", "--dataset", "teacher"], "did you mean 'relu'"),
    (["compare", "--optimizer", "lbfgs"], "invalid choice"),
    (["compare", "--depths", "five"], "comma-separated list of ints"),
    (["compare", "--preset", "he2016"], "he2015"),
    (["compare", "--dataset", "imagenet"], "digits, mnist1d, teacher"),
    (["compare", "--epochs", "0"], "epochs must be"),
    (["plan", "vgg:depth=3"], "mlp"),
    (["audit", "mlp:depth=x"], "integer"),
    (["audit", "mlp:color=red"], "Valid options"),
    (["frobnicate"], "invalid choice"),
    ([], "usage"),
])
def test_bad_arguments_exit_2_with_valid_options(argv: list[str], needle: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    cap = capsys.readouterr()
    assert needle in cap.err + cap.out


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--preset he2015" in out and "package.module:factory" in out
    assert cli.main(["--help"]) == 0
    assert "initwise compare" in capsys.readouterr().out


def test_interrupt_writes_partial_report_exit_130(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import run as run_mod

    real = run_mod._one
    calls = []

    def one_then_interrupt(*args: object, **kwargs: object) -> object:
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run_mod, "_one", one_then_interrupt)
    rc = cli.main(["compare", *TINY, "--schemes", "torch,kaiming", "--out", str(tmp_path)])
    assert rc == 130
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["partial"] is True and res["completed_runs"] == 1 and res["total_runs"] == 4
    assert "Partial report" in (tmp_path / "index.html").read_text()
    assert "Partial report" in (tmp_path / "report.md").read_text()


def test_user_npz_dataset_and_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "mine.npz", X=x, y=y)
    (tmp_path / "my_models_for_initwise.py").write_text(textwrap.dedent("""
        from torch import nn
        CALLS = []
        def make(in_shape, n_classes, depth, width, activation):
            CALLS.append((tuple(in_shape), n_classes, depth, width, activation))
            return nn.Sequential(nn.Linear(in_shape[0], width), nn.Tanh(),
                                 nn.Linear(width, n_classes))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = cli.main(["compare", "--dataset", str(tmp_path / "mine.npz"), "--arch",
                   "my_models_for_initwise:make", "--depths", "3", "--widths", "12",
                   "--activation", "tanh", "--schemes", "torch,xavier", "--epochs", "2",
                   "--seeds", "1", "--quiet", "--json", "--out", str(tmp_path / "r")])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"]["name"] == "mine.npz" and res["dataset"]["in_shape"] == [6]
    import my_models_for_initwise as mm  # type: ignore[import-not-found]

    assert mm.CALLS[0] == ((6,), 2, 3, 12, "tanh")
    assert len(res["runs"]) == 2 and all(r["error"] is None for r in res["runs"])
    # A bad factory is a usage error.
    assert cli.main(["compare", "--dataset", "teacher", "--arch", "my_models_for_initwise:nope",
                     "--quiet", "--out", str(tmp_path / "r2")]) == 2


def test_one_model_commands_take_a_users_own_model_and_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """audit / plan / check / digest on a user's model (HF GPT-2): a factory gets only the
    arguments it names (none here), may return its own example inputs (token ids), and a
    model the default Gaussian batch cannot run is told what to do."""
    (tmp_path / "own_models_for_initwise.py").write_text(textwrap.dedent("""
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
        def gpt2():
            torch.manual_seed(0)
            return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=97,
                                              n_positions=32, bos_token_id=0, eos_token_id=0))
        def gpt2_and_tokens():
            ids = torch.randint(0, 97, (8, 32), generator=torch.Generator().manual_seed(0))
            return gpt2(), {"input_ids": ids}
        def linear(n_classes, hidden):
            return torch.nn.Linear(hidden, n_classes)
        def posonly(in_shape, /):
            return torch.nn.Flatten()
        class CNN(torch.nn.Module):
            def __init__(self, in_shape, n_classes):
                super().__init__()
                c, h, w = in_shape
                self.conv = torch.nn.Conv2d(c, 8, 3, padding=1)
                self.fc = torch.nn.Linear(8 * h * w, n_classes)
            def forward(self, x):
                if x.dim() == 3:  # control flow on the input: torch.fx cannot trace it
                    x = x.unsqueeze(0)
                return self.fc(torch.relu(self.conv(x)).flatten(1))
        def cnn(in_shape, n_classes):  # built for the Gaussian batch it is given the shape of
            return CNN(in_shape, n_classes)
        def three_classes(**kwargs):  # a catch-all names no n_classes: no random labels 0..9
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["audit", "own_models_for_initwise:gpt2_and_tokens", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["verdict"] == "healthy", rep["verdict"]
    # the plan traces the model on its own inputs (a failed trace on Gaussian floats would fall
    # back to module order, where GPT-2's position table reads as an N(0, 1) embedding)
    for spec in ("own_models_for_initwise:gpt2", "own_models_for_initwise:gpt2_and_tokens"):
        assert cli.main(["plan", spec, "--json"]) == 0
        entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
        assert entries["transformer.wpe.weight"]["role"] == "position", spec
        assert entries["transformer.h.0.mlp.c_proj.weight"]["activation"] == "gelu_tanh", spec
    assert cli.main(["check", "own_models_for_initwise:gpt2_and_tokens", "--policy", "auto"]) == 0
    assert "0 findings" in capsys.readouterr().out
    assert cli.main(["digest", "own_models_for_initwise:gpt2", "--policy", "auto"]) == 0
    assert "transformer.wte.weight" in capsys.readouterr().out
    # no inputs of its own: the default Gaussian batch fails, and the error says what to do
    assert cli.main(["audit", "own_models_for_initwise:gpt2"]) == 1
    err = capsys.readouterr().err
    assert "forward pass failed" in err and "return (model, example_inputs)" in err
    # a parameter the command line cannot fill is named (a positional-only one too)
    assert cli.main(["plan", "own_models_for_initwise:linear"]) == 2
    err = capsys.readouterr().err
    assert "requires hidden" in err and "default values" in err
    assert cli.main(["plan", "own_models_for_initwise:posonly"]) == 2
    assert "requires in_shape" in capsys.readouterr().err
    # a factory given in_shape is planned on the batch it was built for (its ReLU is seen)
    assert cli.main(["plan", "own_models_for_initwise:cnn", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert entries["fc.weight"]["activation"] == "relu"
    assert cli.main(["audit", "own_models_for_initwise:three_classes"]) == 0
    capsys.readouterr()
    # its own inputs replace --dataset, and the user is told
    assert cli.main(["audit", "own_models_for_initwise:gpt2_and_tokens", "--dataset", "digits"]) == 0
    assert "factory returned its own example inputs" in capsys.readouterr().err


def test_gains_and_schemes_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gains", "--json"]) == 0
    rows = {r["activation"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["relu"]["gain"] == pytest.approx(2**0.5)
    assert cli.main(["schemes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"torch", "kaiming", "xavier"} <= set(data["compare_names"])
    assert cli.main(["gains"]) == 0
    assert "relu" in capsys.readouterr().out


def test_audit_and_plan_commands(capsys: pytest.CaptureFixture[str]) -> None:
    import initwise

    if not callable(getattr(initwise, "audit", None)) or not callable(getattr(initwise, "plan",
                                                                              None)):
        pytest.skip("initwise.audit / initwise.plan not in this build yet")
    assert cli.main(["audit", "mlp:depth=6,width=32", "--policy", "kaiming", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)
    assert cli.main(["plan", "mlp:depth=3,activation=gelu", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_python_dash_m_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "initwise", "compare", *TINY, "--schemes", "torch",
         "--seeds", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "index.html").exists()
    assert json.loads((tmp_path / "results.json").read_text())["completed_runs"] == 1


# ----------------------------------------------------------------------------- review fixes


def test_out_checked_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from initwise.compare import run as run_mod

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(run_mod, "run_compare", no_training)
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["compare", *TINY, "--out", str(afile)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["compare", *TINY, "--out", str(afile / "sub")]) == 2
    assert "not a writable directory" in capsys.readouterr().err


def test_report_write_error_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from initwise.compare import report as rep_mod

    def disk_full(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rep_mod, "write_report", disk_full)
    rc = cli.main(["compare", *TINY, "--seeds", "1", "--schemes", "torch", "--out",
                   str(tmp_path)])
    assert rc == 1
    assert "could not write the report" in capsys.readouterr().err


def test_all_runs_failed_exit_1_report_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from initwise.compare import run as run_mod

    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("model blew up")

    monkeypatch.setattr(run_mod, "train_one", broken)
    rc = cli.main(["compare", *TINY, "--schemes", "torch,kaiming", "--out", str(tmp_path)])
    assert rc == 1
    assert "all runs failed" in capsys.readouterr().err
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["completed_runs"] == 4
    assert all(r["error"] == "RuntimeError: model blew up" for r in res["runs"])


@pytest.mark.parametrize("extra", [["--batch", "0"], ["--n-classes", "0"],
                                   ["--input-shape", "1,0,8"], ["--input-shape", "-3"]])
@pytest.mark.parametrize("command", ["audit", "plan"])
def test_audit_plan_sizes_must_be_positive(command: str, extra: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([command, "mlp:depth=2,width=8", *extra]) == 2
    assert ">= 1" in capsys.readouterr().err


def test_file_errors_are_messages_not_tracebacks(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "missing.npz")
    assert cli.main(["audit", "mlp:depth=2,width=8", "--dataset", missing]) == 2
    assert "not found" in capsys.readouterr().err
    pytest.importorskip("matplotlib")
    (tmp_path / "afile").write_text("")
    rc = cli.main(["audit", "mlp:depth=2,width=8", "--plot", str(tmp_path / "afile" / "a.png")])
    assert rc == 1
    assert "initwise audit: error:" in capsys.readouterr().err


def test_gains_torch_column_is_torchs_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gains", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows
    for r in rows:
        try:
            want: float | None = float(torch.nn.init.calculate_gain(r["activation"]))
        except ValueError:
            want = None
        assert r["torch_calculate_gain"] == want, r
    names = {r["activation"]: r for r in rows}
    if "gelu" in names:  # initwise knows gelu's gain, torch does not
        assert names["gelu"]["torch_calculate_gain"] is None and names["gelu"]["gain"] > 1


@pytest.mark.parametrize(("argv", "lr"), [
    ([], 0.005), (["--optimizer", "adam"], 0.001), (["--preset", "he2015"], 0.002),
    (["--preset", "he2015", "--optimizer", "adam"], 0.001),
    (["--preset", "seed-mlp", "--optimizer", "sgd"], 0.005),
    (["--preset", "he2015", "--optimizer", "adam", "--lr", "0.03"], 0.03),
])
def test_default_lr_follows_final_optimizer(argv: list[str], lr: float) -> None:
    args = cli._build_parser().parse_args(["compare", *argv])
    cfg = cli._compare_config(args)
    cfg.validate()
    assert cfg.lr == lr


def test_duplicate_depths_dedupe_in_cli(tmp_path: Path) -> None:
    rc = cli.main(["compare", "--dataset", "teacher", "--depths", "2,2,2", "--widths", "8,8",
                   "--epochs", "1", "--seeds", "1", "--batch-size", "128", "--quiet",
                   "--schemes", "torch", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["depths"] == [2] and res["total_runs"] == 1


def test_audit_command_measures_what_the_papers_measure(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["audit", "resmlp:depth=4,width=32", "--policy", "fixup", "--correlation",
                     "--step-lr", "0.01", "--residual"]) == 0
    out = capsys.readouterr().out
    assert "correlation of two inputs" in out and "one SGD step (lr 0.01" in out
    assert "residual stream (4 sums" in out
    assert cli.main(["audit", "mlp:depth=3,width=16", "--step-lr", "-1"]) == 2
    assert "step_lr" in capsys.readouterr().err


def test_coord_check_of_a_factory_with_its_own_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A factory returning ``(model, example_inputs)`` (a dict whose labels give the model its
    own loss) is measured on those inputs, as audit and plan take them (was: a traceback,
    ``'dict' object has no attribute 'shape'``)."""
    (tmp_path / "coord_own_inputs_mod.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Out:
            def __init__(self, logits, loss):
                self.logits, self.loss = logits, loss

        class Net(nn.Module):
            def __init__(self, width):
                super().__init__()
                self.a, self.b = nn.Linear(4, width), nn.Linear(width, 3)

            def forward(self, x, labels):
                out = self.b(torch.relu(self.a(x)))
                return Out(out, nn.functional.cross_entropy(out, labels))

        def make(width=16, **kwargs):
            g = torch.Generator().manual_seed(0)
            return Net(width), {"x": torch.randn(8, 4, generator=g),
                                "labels": torch.randint(0, 3, (8,), generator=g)}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["coord-check", "coord_own_inputs_mod:make", "--widths", "8,32", "--steps",
                   "1", "--parametrization", "none", "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    assert rep["widths"] == [8, 32]
    assert "Traceback" not in cap.err


def test_one_model_commands_take_compare_style_parametrized_schemes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--policy normal:std=0.01`` / ``lsuv:tol=0.05``: audit validated them as compare does and
    then failed with "unknown preset or scheme 'normal:std=0.01'" (exit 2); plan and digest too."""
    model = "mlp:depth=3,width=16"

    def run(*argv: str) -> tuple[int, str, str]:
        rc = cli.main(list(argv))
        cap = capsys.readouterr()
        return rc, cap.out, cap.err

    rc, out, err = run("digest", model, "--policy", "variance_scaling:scale=2,mode=fan_in",
                       "--json")
    assert rc == 0, err
    spec = json.loads(out)["parameters"]
    rc, out, err = run("digest", model, "--policy", "kaiming_normal", "--json")
    he = json.loads(out)["parameters"]
    # He init is variance_scaling(2, fan_in) bit for bit on the weights (biases: the policy's)
    assert all(spec[k] == he[k] for k in he if k.endswith("weight"))
    rc, out, err = run("plan", model, "--policy", "normal:std=0.01", "--json")
    assert rc == 0, err
    rows = {e["name"]: e for e in json.loads(out)["entries"]}
    assert rows["3.weight"]["std"] == pytest.approx(0.01)
    for policy in ("normal:std=0.01", "lsuv:tol=0.05", "gpt2:n_layer=12"):
        rc, out, err = run("audit", model, "--policy", policy, "--json")
        assert rc == 0 and "unknown preset" not in err, (policy, err)
    rc, out, err = run("plan", model, "--policy", "lsuv:tol=0.1")
    assert rc == 2 and "LSUV calibrates on data; it has no init plan" in err
    rc, out, err = run("audit", model, "--policy", "normal:sdt=0.01")
    assert rc == 2 and "did you mean 'std'" in err


def test_interrupt_while_writing_the_report_says_what_was_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """SIGTERM after the last run used to kill the process outright (its handler was put back
    before the report was written), and an interrupt outside the figures printed 'the report
    in OUT has every number' when nothing had been written. Now SIGTERM is Ctrl-C until the
    report is written, the message says OUT was not updated, and --resume writes it."""
    import signal

    from initwise.compare import report as rep_mod

    out = tmp_path / "rep"
    real_md = rep_mod._md
    handlers = []

    def interrupted_md(*a: object, **k: object) -> str:
        handlers.append(signal.getsignal(signal.SIGTERM))
        raise KeyboardInterrupt  # as SIGTERM's handler raises it

    monkeypatch.setattr(rep_mod, "_md", interrupted_md)
    argv = ["compare", *TINY, "--schemes", "torch", "--seeds", "1", "--out", str(out)]
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(argv) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # put back once the command ends
    err = capsys.readouterr().err
    assert f"{out} was not updated" in err and "has every number" not in err
    assert "--resume" in err and not out.exists()
    assert handlers and handlers[0] is not before  # SIGTERM still acts as Ctrl-C while writing
    monkeypatch.setattr(rep_mod, "_md", real_md)
    assert cli.main([*argv, "--resume"]) == 0  # the finished run came from the checkpoint
    res = json.loads((out / "results.json").read_text())
    assert res["completed_runs"] == 1 and res["resumed_runs"] == 1 and not res["partial"]
