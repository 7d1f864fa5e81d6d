"""Every bad input to the command line: a clear one-line error, the right exit code, no report.

Each case gives the arguments, the expected exit code (2: bad arguments, 1: a runtime failure
such as a user factory that raises) and a piece of the message; every case also checks that
nothing was written (no partial report, no folder created) and that no traceback leaked.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch

from initwise import cli

FAST = ["--dataset", "teacher", "--depths", "2", "--widths", "8", "--epochs", "1",
        "--seeds", "1", "--batch-size", "256", "--schemes", "torch", "--quiet"]

# (id, argv, exit code, message). "{d}" in an argument is replaced by the test folder.
CASES: list[tuple[str, list[str], int, str]] = [
    ("unknown-scheme", ["compare", "--schemes", "kaiming,nope"], 2, "Valid options:"),
    ("scheme-typo", ["compare", "--schemes", "kaiminG"], 2, "did you mean 'kaiming'"),
    ("flag-typo", ["compare", "--schemse", "torch"], 2, "did you mean --schemes?"),
    ("flag-typo-epochs", ["compare", "--epoch", "3", "--depthz", "2"], 2,
     "did you mean --depths?"),
    ("stray-positional", ["compare", "foo"], 2, "unrecognized arguments: foo"),
    ("unknown-arch", ["compare", "--arch", "vgg"], 2, "mlp"),
    ("unknown-activation", ["compare", "--activation", "rleu"], 2, "did you mean 'relu'"),
    ("unknown-optimizer", ["compare", "--optimizer", "lbfgs"], 2, "invalid choice"),
    ("unknown-norm", ["compare", "--norm", "group"], 2, "invalid choice"),
    ("depths-not-int", ["compare", "--depths", "five"], 2, "comma-separated list of ints"),
    ("depths-zero", ["compare", "--depths", "0"], 2, "depths must be"),
    ("depths-negative", ["compare", "--depths", "-3"], 2, "depths must be"),
    ("depths-empty", ["compare", "--depths", ","], 2, "at least one value"),
    ("widths-zero", ["compare", "--widths", "0"], 2, "widths must be"),
    ("unknown-preset", ["compare", "--preset", "he2016"], 2, "he2015"),
    ("unknown-dataset", ["compare", "--dataset", "imagenet"], 2, "digits, mnist1d, teacher"),
    ("missing-npz", ["compare", "--dataset", "{d}/missing.npz"], 2, "not found"),
    ("garbage-npz", ["compare", "--dataset", "{d}/garbage.npz"], 2, "not a valid .npz"),
    ("epochs-zero", ["compare", "--epochs", "0"], 2, "epochs must be an integer >= 1"),
    ("epochs-float", ["compare", "--epochs", "1.5"], 2, "invalid int value"),
    ("seeds-zero", ["compare", "--seeds", "0"], 2, "seeds must be an integer >= 1"),
    ("seeds-word", ["compare", "--seeds", "x"], 2, "invalid int value"),
    ("batch-zero", ["compare", "--batch-size", "0"], 2, "batch_size must be"),
    ("lr-zero", ["compare", "--lr", "0"], 2, "lr must be finite and > 0"),
    ("lr-negative", ["compare", "--lr", "-1"], 2, "lr must be finite and > 0"),
    ("lr-nan", ["compare", "--lr", "nan"], 2, "lr must be finite and > 0"),
    ("lr-inf", ["compare", "--lr", "inf"], 2, "lr must be finite and > 0"),
    ("momentum-2", ["compare", "--momentum", "2"], 2, "momentum must be in [0, 1)"),
    ("momentum-1", ["compare", "--momentum", "1"], 2, "momentum must be in [0, 1)"),
    ("momentum-negative", ["compare", "--momentum", "-0.1"], 2, "momentum must be"),
    ("momentum-nan", ["compare", "--momentum", "nan"], 2, "momentum must be"),
    ("target-2", ["compare", "--target-accuracy", "2"], 2, "target_accuracy must be in [0, 1]"),
    ("target-negative", ["compare", "--target-accuracy", "-0.5"], 2,
     "target_accuracy must be in [0, 1]"),
    ("threads-zero", ["compare", "--threads", "0"], 2, "threads must be an integer >= 1"),
    ("jobs-zero", ["compare", "--jobs", "0"], 2, "jobs must be an integer >= 1"),
    ("jobs-negative", ["compare", "--jobs", "-2"], 2, "jobs must be an integer >= 1"),
    ("device-unknown", ["compare", "--device", "tpu"], 2, "unknown device 'tpu'"),
    ("out-is-file", ["compare", "--out", "{d}/afile"], 2, "exists and is not a directory"),
    ("out-under-file", ["compare", "--out", "{d}/afile/sub"], 2, "not a writable directory"),
    ("out-foreign-files", ["compare", "--out", "{d}/project"], 2,
     "not part of an initwise report"),
    ("resume-nothing", ["compare", "--resume", "--out", "{d}/empty"], 2, "nothing to resume"),
    ("resume-garbage", ["compare", "--resume", "--out", "{d}/garbled"], 2, "cannot read"),
    ("resume-other-config", ["compare", "--resume", "--out", "{d}/other"], 2,
     "cannot resume: the previous run used epochs=99"),
    ("factory-no-module", ["compare", "--arch", "no_such_module_xyz:make"], 2,
     "cannot import module 'no_such_module_xyz'"),
    ("factory-no-attr", ["compare", "--arch", "bad_input_ok_mod:nope"], 2,
     "has no attribute 'nope'"),
    ("factory-syntax", ["compare", "--arch", "bad_input_syntax_mod:make"], 2,
     "bad_input_syntax_mod.py, line 3"),
    ("factory-signature", ["compare", "--arch", "bad_input_ok_mod:two_args"], 2,
     "cannot take the keyword arguments"),
    ("factory-raises", ["compare", "--arch", "bad_input_ok_mod:raises"], 1,
     "model factory 'bad_input_ok_mod:raises' raised ZeroDivisionError: no luck"),
    ("factory-not-module", ["compare", "--arch", "bad_input_ok_mod:not_a_module"], 2,
     "returned int, expected a torch.nn.Module"),
    ("factory-not-callable", ["compare", "--arch", "bad_input_ok_mod:CONSTANT"], 2,
     "is not callable"),
    # teacher: 32 features, 10 classes; cross-entropy takes any number of logits >= 10 and
    # MSE broadcasts (n, 1) against (n,), so a wrong head must be caught before training
    ("factory-too-many-logits", ["compare", "--arch", "bad_input_ok_mod:head_13"], 2,
     "to an output of shape (2, 13); the dataset has 10 classes, so it must return shape "
     "(2, 10)"),
    ("factory-one-output", ["compare", "--arch", "bad_input_ok_mod:head_1"], 2,
     "output of shape (2, 1)"),
    ("factory-tuple-output", ["compare", "--arch", "bad_input_ok_mod:tuple_out"], 2,
     "to a tuple, not a tensor"),
    ("factory-regression-head", ["compare", "--task", "regression", "--arch",
                                 "bad_input_ok_mod:head_1"], 2,
     "the dataset has 10 regression targets, so it must return shape (2, 10)"),
    ("transfer-factory-head", ["compare", "--lrs", "0.01", "--widths", "8,16", "--arch",
                               "bad_input_ok_mod:head_13"], 2, "output of shape (2, 13)"),
    # LSUV options are checked before training, not by each run failing in turn
    ("lsuv-tol-word", ["compare", "--schemes", "torch,lsuv:tol=x"], 2,
     "scheme 'lsuv:tol=x': tol must be a real number"),
    ("lsuv-verify-word", ["compare", "--schemes", "lsuv:verify=maybe"], 2,
     "verify must be True, False or 'auto'"),
    ("lsuv-max-iter-zero", ["compare", "--schemes", "lsuv:max_iter=0"], 2,
     "max_iter must be an integer >= 1"),
    ("lsuv-seed", ["compare", "--schemes", "lsuv:seed=3"], 2,
     "the seed is set per run from --seeds"),
    ("lsuv-input-fn", ["compare", "--schemes", "lsuv:input_fn=x"], 2,
     "'input_fn' cannot be set here"),
    # a layer name the model does not have (the built-in MLP's layers are net.0, net.2, ...)
    ("lsuv-only-missing", ["compare", "--schemes", "torch,lsuv:only=nope"], 2,
     "unknown layer name in only= 'nope'"),
    # a module of the model that LSUV does not calibrate (the MLP's first ReLU) is refused too
    ("lsuv-only-activation", ["compare", "--schemes", "torch,lsuv:only=2", "--depths", "3"], 2,
     "unknown layer name in only= '2'"),
    # coord-check of a user factory: one that ignores width= would read every layer 'flat'
    ("coord-factory-ignores-width", ["coord-check", "bad_input_ok_mod:head_13", "--widths",
                                     "8,16", "--dataset", "teacher"], 2,
     "has the same parameters at width 8 and 16: its factory ignores width="),
    # a factory that takes no n_classes gets no random labels (one that does is trained on the
    # Gaussian batch's random labels, as the built-in architectures are)
    ("coord-factory-no-labels", ["coord-check", "bad_input_ok_mod:no_classes", "--widths",
                                 "8,16"], 2, "random inputs have no labels: give --dataset"),
    ("audit-bad-depth", ["audit", "mlp:depth=x"], 2, "integer"),
    ("audit-bad-option", ["audit", "mlp:color=red"], 2, "Valid options"),
    ("audit-bad-policy", ["audit", "mlp:depth=3,width=8", "--policy", "kaimin"], 2,
     "did you mean 'kaiming'"),
    ("audit-batch-zero", ["audit", "mlp:depth=3,width=8", "--batch", "0"], 2, ">= 1"),
    ("audit-flag-typo", ["audit", "mlp:depth=3", "--plott", "x.png"], 2,
     "did you mean --plot?"),
    ("plan-unknown-arch", ["plan", "vgg:depth=3"], 2, "mlp"),
    ("plan-bad-shape", ["plan", "mlp:depth=3", "--input-shape", "1,0,8"], 2, ">= 1"),
    ("unknown-command", ["frobnicate"], 2, "invalid choice"),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "afile").write_text("")
    (tmp_path / "garbage.npz").write_text("not a zip")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "results.json").write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(
        {"config": {"epochs": 99}, "runs": []}))
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "bad_input_ok_mod.py").write_text(textwrap.dedent("""
        import math
        from torch import nn
        CONSTANT = 3
        def two_args(a, b):
            return nn.Identity()
        def raises(**kwargs):
            raise ZeroDivisionError("no luck")
        def not_a_module(**kwargs):
            return 7
        def head_13(in_shape, **kwargs):
            return nn.Linear(in_shape[0], 13)
        def no_classes(in_shape, width=8):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU(),
                                 nn.Linear(width, 4))
        def head_1(in_shape, **kwargs):
            return nn.Linear(in_shape[0], 1)
        class _Pair(nn.Linear):
            def forward(self, x):
                return super().forward(x), x
        def tuple_out(in_shape, n_classes, **kwargs):
            return _Pair(in_shape[0], n_classes)
    """))
    (mods / "bad_input_syntax_mod.py").write_text("x = 1\n\ndef make(:\n    pass\n")
    monkeypatch.syspath_prepend(str(mods))
    for m in ("bad_input_ok_mod", "bad_input_syntax_mod"):
        monkeypatch.delitem(__import__("sys").modules, m, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


@pytest.mark.parametrize(("argv", "code", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_writes_nothing(
        argv: list[str], code: int, message: str, workdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    if "--device" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = [a.replace("{d}", str(workdir)) for a in argv]
    if argv[0] == "compare":
        extra = [a for a in FAST if a not in argv]
        # Keep the case's own value for any option it sets.
        given = {a for a in argv if a.startswith("--")}
        extra, skip = [], False
        for a in FAST:
            if skip:
                skip = False
                continue
            if a in given:
                skip = a != "--quiet"
                continue
            extra.append(a)
        if "--out" not in argv:
            extra += ["--out", str(workdir / "report")]
        argv = [*argv, *extra]
    before = _tree(workdir)
    old_threads = torch.get_num_threads()
    try:
        rc = cli.main(argv)
    finally:
        torch.set_num_threads(old_threads)
    cap = capsys.readouterr()
    assert rc == code, (cap.out, cap.err)
    assert message in cap.err, cap.err
    assert "Traceback" not in cap.err + cap.out
    if code != 0 and argv[0] != "frobnicate":
        last = [ln for ln in cap.err.strip().splitlines() if ln.strip()][-1]
        assert "error:" in last  # one line saying what is wrong
    assert _tree(workdir) == before  # no partial report, no folder, nothing touched
    assert not os.path.exists(workdir / "report")


def test_table_has_at_least_40_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
