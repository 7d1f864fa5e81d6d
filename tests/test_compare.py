"""Tests for initwise.compare: data, models, training/measurement, statistics, report."""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from initwise.compare import (
    CompareConfig,
    TrainConfig,
    build_model,
    format_summary,
    load_dataset,
    run_compare,
    summarize,
    train_one,
    welch_t_test,
    write_report,
)
from initwise.compare.data import make_mnist1d, make_teacher, stratified_split
from initwise.compare.models import ACTIVATIONS, load_factory, token_size
from initwise.compare.presets import PRESETS, preset_overrides, seed_mlp
from initwise.compare.schemes import apply_scheme, check_schemes, scheme_names
from initwise.compare.train import RunResult


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Small models train fastest (and least disturbed by other processes) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


TINY = {"dataset": "teacher", "depths": [2], "widths": [8], "epochs": 1, "seeds": 2,
        "batch_size": 128}


# ----------------------------------------------------------------------------- data


def test_stratified_split_per_class_fraction_and_seeded() -> None:
    y = np.repeat(np.arange(5), [10, 20, 30, 40, 50])
    tr, te = stratified_split(y, 0.2, seed=3)
    assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == y.size
    np.testing.assert_array_equal(np.bincount(y[te]), [2, 4, 6, 8, 10])
    _, te2 = stratified_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(y, 1.5, seed=0)


def test_digits_split_is_standardized_on_train() -> None:
    ds = load_dataset("digits", seed=0)
    assert ds.in_shape == (1, 8, 8) and ds.n_classes == 10
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    flat = ds.x_train.reshape(ds.x_train.shape[0], -1).double()
    std = flat.std(dim=0, unbiased=False)
    assert torch.allclose(flat.mean(dim=0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    # Constant pixels keep std 0; every other feature is standardized to exactly 1.
    assert torch.all(((std - 1).abs() < 1e-4) | (std < 1e-6))
    assert int((std < 1e-6).sum()) < 4


def test_mnist1d_templates_are_learnable_and_classes_balanced() -> None:
    x, y = make_mnist1d(1000, seed=0)
    assert x.shape == (1000, 1, 40) and np.all(np.isfinite(x))
    np.testing.assert_array_equal(np.bincount(y), [100] * 10)
    x2, _ = make_mnist1d(1000, seed=0)
    np.testing.assert_array_equal(x, x2)
    # Not trivially separable (noise and shifts), but far from random: class means differ.
    means = np.stack([x[y == c, 0].mean(axis=0) for c in range(10)])
    assert np.std(means) > 0.05


def test_teacher_labels_balanced_and_deterministic() -> None:
    _, y = make_teacher(2000, seed=1)
    counts = np.bincount(y, minlength=10)
    # Balanced within 5 binomial standard errors of n/10.
    assert np.all(np.abs(counts - 200) < 5 * math.sqrt(2000 * 0.1 * 0.9))
    np.testing.assert_array_equal(y, make_teacher(2000, seed=1)[1])


def test_npz_dataset_and_validation(tmp_path: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"  # type: ignore[operator]
    np.savez(good, X=rng.standard_normal((60, 3, 4)), y=np.repeat([5, 7, 9], 20))
    ds = load_dataset(str(good), seed=0)
    assert ds.in_shape == (3, 4) and ds.n_classes == 3
    assert set(ds.y_train.tolist()) == {0, 1, 2}
    bad_cases = {
        "nokeys.npz": ({"A": np.zeros((4, 2)), "y": np.zeros(4)}, "'X' and 'y'"),
        "shape.npz": ({"X": np.zeros((10, 2)), "y": np.zeros(9)}, "must have shape"),
        "float.npz": ({"X": np.zeros((10, 2)), "y": np.linspace(0, 1, 10)}, "integer"),
        "nan.npz": ({"X": np.full((10, 2), np.nan), "y": np.arange(10) % 2}, "NaN"),
        "one.npz": ({"X": np.zeros((10, 2)), "y": np.zeros(10, dtype=int)}, "single class"),
        "str.npz": ({"X": np.array([["a"]] * 10), "y": np.arange(10) % 2}, "numeric"),
    }
    for name, (arrays, msg) in bad_cases.items():
        path = tmp_path / name  # type: ignore[operator]
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=msg):
            load_dataset(str(path))
    with pytest.raises(FileNotFoundError):
        load_dataset(str(tmp_path / "missing.npz"))  # type: ignore[operator]
    with pytest.raises(ValueError, match="digits, mnist1d, teacher"):
        load_dataset("cifar")


# ----------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "resmlp", "transformer"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_builtin_archs_forward(arch: str, shape: tuple[int, ...]) -> None:
    m = build_model(arch, shape, 10, depth=3, width=8, activation="gelu", norm="none")
    out = m(torch.randn(5, *shape))
    assert out.shape == (5, 10) and torch.isfinite(out).all()


def test_mlp_depth_counts_linear_layers_and_resnet_blocks() -> None:
    m = build_model("mlp", (1, 8, 8), 10, depth=7, width=16)
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 7
    r = build_model("resnet", (32,), 10, depth=4, width=16, norm="batch")
    assert r(torch.randn(3, 32)).shape == (3, 10)
    assert sum(type(x).__name__ == "BasicBlock" for x in r.modules()) == 4
    assert sum(isinstance(x, nn.BatchNorm1d) for x in r.modules()) == 8


def test_model_errors_list_valid_options() -> None:
    with pytest.raises(ValueError, match=r"cnn, mlp, package.module:factory, resmlp, resnet"):
        build_model("vgg", (4,), 2)
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        build_model("mlp", (4,), 2, activation="reLu")
    with pytest.raises(ValueError, match="norm"):
        build_model("resnet", (1, 8, 8), 2, norm="layer")
    with pytest.raises(ValueError, match=r"\(C, L\) or \(C, H, W\)"):
        build_model("cnn", (32,), 2)
    with pytest.raises(ValueError, match="depth must be"):
        build_model("mlp", (4,), 2, depth=0)
    with pytest.raises(ValueError, match=r"package.module:factory"):
        load_factory("no_colon_here")
    with pytest.raises(ValueError, match="cannot import"):
        load_factory("initwise_no_such_mod:f")
    with pytest.raises(ValueError, match="no attribute"):
        load_factory("torch.nn:NoSuchThing")
    assert {"relu", "tanh", "gelu"} <= set(ACTIVATIONS)


def test_user_factory_gets_arguments_and_must_return_module() -> None:
    m = build_model("initwise.compare.presets:seed_mlp", (1, 8, 8), 10, width=32)
    assert [x.out_features for x in m.modules() if isinstance(x, nn.Linear)] == [32, 16, 10]
    with pytest.raises(TypeError, match=r"expected a torch.nn.Module"):
        build_model("builtins:dict", (1,), 2)


def test_token_size_divides() -> None:
    for n in range(1, 200):
        p = token_size(n)
        assert n % p == 0 and p * p >= n


def test_seed_mlp_matches_classic_shape() -> None:
    m = seed_mlp((1, 8, 8), 10)
    assert [(x.in_features, x.out_features) for x in m.modules()
            if isinstance(x, nn.Linear)] == [(64, 256), (256, 128), (128, 10)]


# ----------------------------------------------------------------------------- schemes


def test_scheme_names_and_validation() -> None:
    names = scheme_names()
    assert names[0] == "torch" and {"kaiming", "xavier"} <= set(names)
    with pytest.raises(ValueError, match=r"Valid options: .*kaiming"):
        check_schemes(["kaiming", "kaimin"])
    assert check_schemes(["torch", "torch", "kaiming"]) == ["torch", "kaiming"]


def test_kaiming_preserves_relu_signal_xavier_halves_it() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 256)
    out = {}
    for s in ("kaiming", "xavier"):
        m = build_model("mlp", (256,), 256, depth=11, width=256)
        apply_scheme(m, s, x, seed=0)
        sc = _hook_scale(m, x, torch.zeros(512, dtype=torch.long))
        out[s] = sc["forward_std"]
    # Kaiming: second moment preserved through ReLU layers (std within 25% after 10 layers);
    # Xavier on square layers: second moment halves per layer -> std ratio 2^(-1/2) per layer.
    assert 0.75 < out["kaiming"][-1] / out["kaiming"][0] < 1.33
    ratio = out["xavier"][-1] / out["xavier"][0]
    assert 0.5 * 2 ** (-5) < ratio < 2 * 2 ** (-5)


# ----------------------------------------------------------------------------- training


def test_train_one_measures_curves_and_grads() -> None:
    ds = load_dataset("teacher", seed=0)
    torch.manual_seed(0)
    m = build_model("mlp", ds.in_shape, ds.n_classes, depth=3, width=32)
    cfg = TrainConfig(epochs=3, batch_size=100, log_every=4, grad_every=5, target_accuracy=0.0)
    r = train_one(m, ds, cfg, scheme="torch", depth=3, seed=0)
    steps_per_epoch = ds.x_train.shape[0] // 100
    assert r.steps == 3 * steps_per_epoch and r.epoch_steps[-1] == r.steps
    assert r.loss_steps[0] == 4 and len(r.train_loss) == math.ceil(r.steps / 4)
    assert r.grad_steps == list(range(0, r.steps, 5))
    assert len(r.grad_layers) == 3 and all(len(g) == 3 for g in r.grad_norms)
    assert all(v > 0 for v in r.grad_norms[0])
    assert r.steps_to_target == steps_per_epoch  # target 0 reached at the first evaluation
    assert r.train_loss[-1] < r.train_loss[0]
    json.dumps(r.to_dict(), allow_nan=False)


def test_same_seed_same_batches_is_bitwise_reproducible() -> None:
    ds = load_dataset("teacher", seed=1)
    res = []
    for _ in range(2):
        torch.manual_seed(5)
        m = build_model("mlp", ds.in_shape, ds.n_classes, depth=2, width=16)
        res.append(train_one(m, ds, TrainConfig(epochs=1), scheme="torch", depth=2, seed=1))
    assert res[0].train_loss == res[1].train_loss
    assert res[0].test_accuracy == res[1].test_accuracy


def test_divergence_is_reported_not_raised() -> None:
    ds = load_dataset("teacher", seed=0)
    torch.manual_seed(0)
    m = build_model("mlp", ds.in_shape, ds.n_classes, depth=4, width=32)
    r = train_one(m, ds, TrainConfig(lr=1e8, epochs=3), scheme="torch", depth=4, seed=0)
    assert r.diverged and r.diverged_at_step is not None and r.steps == r.diverged_at_step
    d = r.to_dict()
    json.dumps(d, allow_nan=False)


# ----------------------------------------------------------------------------- statistics


def test_welch_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(0, rng.uniform(0.1, 2), size=rng.integers(2, 9))
        b = rng.normal(rng.uniform(-1, 1), rng.uniform(0.1, 2), size=rng.integers(2, 9))
        t, _dof, p = welch_t_test(list(a), list(b))
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert t == pytest.approx(ref.statistic, rel=1e-9)
        assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)
    assert welch_t_test([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    assert welch_t_test([1.0, 1.0], [0.0, 0.0])[2] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_t_test([1.0], [2.0, 3.0])


def _fake(scheme: str, acc: float, seed: int) -> RunResult:
    return RunResult(scheme, 10, seed, acc, 0.5, acc, False, None, None, 10, 0.1, width=8,
                     train_loss=[1.0, 0.5])


def test_summarize_winner_margin_and_significance() -> None:
    runs = [_fake("a", 0.9 + 0.01 * s, s) for s in range(3)]
    runs += [_fake("b", 0.5 + 0.01 * s, s) for s in range(3)]
    runs += [_fake("c", 0.89 + 0.02 * s, s) for s in range(3)]
    cell = summarize(runs, ["a", "b", "c"])[0]
    assert cell["ranking"] == ["a", "c", "b"] and cell["leader"] == "a"
    assert cell["margin"] == pytest.approx(0.0)  # a and c tie in mean: no winner
    assert cell["winner"] is None and cell["tied_at_top"] == ["a", "c"]
    assert cell["significant"] is False
    assert cell["tied_with_winner"] == ["c"] and cell["beats"] == ["b"]
    cell = summarize([r for r in runs if r.scheme != "c"], ["a", "b"])[0]
    assert cell["margin"] == pytest.approx(0.4) and cell["significant"] is True
    assert cell["schemes"]["a"]["test_accuracy"]["std"] == pytest.approx(0.01)
    one = summarize([_fake("a", 0.9, 0), _fake("b", 0.5, 0)], ["a", "b"])[0]
    assert one["significant"] is None and one["p_value"] is None


def _hook_scale(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
    """Independent reference: each Linear/Conv output's std and its loss-gradient rms, by hooks."""
    fwd: dict[str, float] = {}
    bwd: dict[str, float] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                fwd[name] = float(out.detach().std())
                out.register_hook(lambda g: bwd.__setitem__(name, float(g.pow(2).mean().sqrt())))
            handles.append(m.register_forward_hook(hook))
    try:
        nn.functional.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return {"layers": list(fwd), "forward_std": list(fwd.values()), "backward_std": [bwd[n] for n in fwd]}


def test_compare_scale_matches_independent_hooks() -> None:
    """The per-layer scale compare reads from initwise.audit agrees with plain hooks."""
    from initwise.compare.run import _audit

    torch.manual_seed(0)
    m = build_model("mlp", (16,), 4, depth=5, width=32)
    x, y = torch.randn(128, 16), torch.randint(0, 4, (128,))
    (lib, rep), own = _audit(m, x, y), _hook_scale(m, x, y)
    assert rep.verdict == lib["verdict"]
    assert lib["source"] == "initwise.audit" and lib["layers"] == own["layers"]
    np.testing.assert_allclose(lib["forward_std"], own["forward_std"], rtol=2e-3)
    np.testing.assert_allclose(lib["backward_std"], own["backward_std"], rtol=1e-4)


# ----------------------------------------------------------------------------- orchestration


def test_run_compare_fair_and_complete(tmp_path: pytest.TempPathFactory) -> None:
    cfg = CompareConfig(schemes=["torch", "kaiming"], **TINY)  # type: ignore[arg-type]
    seen = []
    res = run_compare(cfg, callback=lambda ev: seen.append((ev["done"], ev["total"])))
    assert seen == [(i, 4) for i in range(1, 5)] and not res.partial
    assert [(r.seed, r.scheme) for r in res.runs] == [(0, "torch"), (0, "kaiming"),
                                                      (1, "torch"), (1, "kaiming")]
    # Same batches for both schemes: the number of steps and the logging grid are identical.
    assert res.runs[0].loss_steps == res.runs[1].loss_steps
    # Different init: different starting loss.
    assert res.runs[0].train_loss[0] != res.runs[1].train_loss[0]
    d = res.to_dict()
    assert d["environment"]["torch"] == torch.__version__ and d["config"]["seeds"] == 2
    paths = write_report(res, str(tmp_path))
    with open(paths["json"]) as f:
        assert json.load(f)["completed_runs"] == 4
    text = format_summary(res)
    assert "depth 2, width 8:" in text and "kaiming" in text


def test_run_compare_interrupted_keeps_finished_runs(tmp_path: pytest.TempPathFactory) -> None:
    def stop(ev: dict) -> None:
        if ev["done"] == 1:
            raise KeyboardInterrupt

    cfg = CompareConfig(schemes=["torch", "kaiming"], **TINY)  # type: ignore[arg-type]
    res = run_compare(cfg, callback=stop)
    assert res.partial and len(res.runs) == 1 and res.total_runs == 4
    paths = write_report(res, str(tmp_path))
    with open(paths["html"]) as f:
        assert "Partial report" in f.read()
    assert "PARTIAL" in format_summary(res)


def test_run_compare_validates_before_training() -> None:
    for bad, msg in [({"epochs": 0}, "epochs"), ({"depths": []}, "depths"),
                     ({"optimizer": "rmsprop"}, "sgd"), ({"lr": -1.0}, "lr"),
                     ({"schemes": ["kaiminG"]}, "did you mean"),
                     ({"target_accuracy": 2.0}, "target_accuracy"), ({"threads": 0}, "threads")]:
        cfg = CompareConfig(**{**TINY, **bad})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=msg):
            run_compare(cfg)


def test_presets_are_valid_configs() -> None:
    for name in PRESETS:
        cfg = CompareConfig(**preset_overrides(name))
        assert cfg.depths and cfg.schemes
    with pytest.raises(ValueError, match="he2015"):
        preset_overrides("he2016")


def test_report_html_md_embed_figures(tmp_path: pytest.TempPathFactory) -> None:
    pytest.importorskip("matplotlib")
    cfg = CompareConfig(schemes=["torch", "xavier"], **{**TINY, "depths": [2, 3]})  # type: ignore[arg-type]
    res = run_compare(cfg)
    paths = write_report(res, str(tmp_path))
    with open(paths["html"]) as f:
        html = f.read()
    imgs = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    pngs = sorted(f for f in os.listdir(tmp_path) if f.endswith(".png"))
    assert len(imgs) == len(pngs) >= 4
    import base64

    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    with open(paths["md"]) as f:
        md = f.read()
    assert re.search(r"^\| depth \| width \| scheme", md, re.M)
    results = md.split("\n## Results\n")[1].split("\n## ")[0]  # one row per scheme and cell
    assert results.count("\n| 2 | 8 |") == 2 and results.count("\n| 3 | 8 |") == 2
    for name in ("accuracy_vs_depth.png", "signal_scale.png", "loss_curves.png"):
        with open(paths[name], "rb") as f:
            assert f.read(4) == b"\x89PNG"


# ----------------------------------------------------------------------------- review fixes


def test_duplicate_depths_widths_deduped_and_runs_counted_once() -> None:
    cfg = CompareConfig(**{**TINY, "depths": [3, 2, 3, 3], "widths": [8, 8]})  # type: ignore[arg-type]
    cfg.validate()
    assert cfg.depths == [3, 2] and cfg.widths == [8]
    runs = [_fake("a", 0.9 + 0.01 * s, s) for s in range(2) for _ in range(3)]
    runs += [_fake("b", 0.85 + 0.01 * s, s) for s in range(2) for _ in range(3)]
    cell = summarize(runs, ["a", "b"])[0]
    assert cell["schemes"]["a"]["test_accuracy"]["n"] == 2 and cell["schemes"]["a"]["runs"] == 2
    # Each (scheme, depth, width, seed) counts once: the p-value is that of 2 vs 2 values.
    assert cell["p_value"] == pytest.approx(welch_t_test([0.9, 0.91], [0.85, 0.86])[2])


def test_zero_seed_spread_is_not_called_significant() -> None:
    runs = [_fake("a", 0.9, s) for s in range(3)] + [_fake("b", 0.5, s) for s in range(3)]
    cell = summarize(runs, ["a", "b"])[0]
    assert cell["p_value"] is None and cell["significant"] is None and cell["no_seed_spread"]
    from initwise.compare.report import _verdict

    assert "no seed spread measured" in _verdict(cell)


def test_failing_training_run_is_recorded_and_others_continue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import run as run_mod

    real = run_mod.train_one

    def flaky(model: nn.Module, data: object, cfg: TrainConfig, *, scheme: str,
              **kw: object) -> RunResult:
        if scheme == "kaiming":
            raise RuntimeError("boom in training")
        return real(model, data, cfg, scheme=scheme, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(run_mod, "train_one", flaky)
    res = run_compare(CompareConfig(schemes=["torch", "kaiming"], **{**TINY, "seeds": 1}))  # type: ignore[arg-type]
    assert [r.scheme for r in res.runs] == ["torch", "kaiming"] and not res.partial
    assert res.runs[0].error is None and res.runs[1].error == "RuntimeError: boom in training"
    assert res.summary[0]["winner"] == "torch"
    assert res.summary[0]["schemes"]["kaiming"]["errors"] == ["RuntimeError: boom in training"]


def test_init_batch_is_a_seeded_shuffle_not_the_first_rows(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from initwise.compare import run as run_mod

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 100)  # class-sorted, as many user files are
    x = rng.standard_normal((400, 6)) + y[:, None]
    path = os.path.join(str(tmp_path), "sorted.npz")
    np.savez(path, X=x, y=y)
    seen: list[torch.Tensor] = []
    real = run_mod._audit

    def spy(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> object:
        seen.append(yb.clone())
        return real(model, xb, yb)

    monkeypatch.setattr(run_mod, "_audit", spy)
    run_compare(CompareConfig(dataset=path, depths=[2], widths=[8], schemes=["torch", "kaiming"],
                              seeds=1, epochs=1, init_batch=32))
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # same batch for every scheme
    # First 32 rows of the class-sorted split are all class 0; a shuffle of 320 rows of 4
    # balanced classes misses a class in 32 draws with probability < 4 * 0.75**32 ~ 4e-4.
    assert len(set(seen[0].tolist())) == 4
    ds = load_dataset(path, seed=0)
    xa, ya = run_mod.init_batch(ds, 32, seed=0)
    xb, _ = run_mod.init_batch(ds, 32, seed=1)
    assert torch.equal(ya, seen[0]) and not torch.equal(xa, xb)


def test_default_lr_follows_optimizer_unless_given() -> None:
    for opt, lr in (("sgd", 0.005), ("adam", 0.001)):
        cfg = CompareConfig(**{**TINY, "optimizer": opt})  # type: ignore[arg-type]
        assert cfg.lr is None
        cfg.validate()
        assert cfg.lr == lr and cfg.train_config().lr == lr
    cfg = CompareConfig(**{**TINY, "optimizer": "adam", "lr": 0.02})  # type: ignore[arg-type]
    cfg.validate()
    assert cfg.lr == 0.02


def test_report_interrupt_during_figures_still_writes_documents(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from initwise.compare import report as rep_mod

    res = run_compare(CompareConfig(schemes=["torch"], **{**TINY, "seeds": 1}))  # type: ignore[arg-type]

    def interrupted(result: object, path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(rep_mod, "_fig_scale", interrupted)
    out = str(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        write_report(res, out)
    files = sorted(os.listdir(out))
    # The figures drawn before the interrupt (accuracy, per-epoch accuracy, loss), no half file.
    assert files == ["accuracy_vs_depth.png", "index.html", "loss_curves.png", "report.md",
                     "results.csv", "results.json", "test_accuracy_curves.png"]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["completed_runs"] == 1
    with open(os.path.join(out, "index.html")) as f:
        assert f.read().count("data:image/png;base64,") == 3


def test_caption_says_when_cells_are_left_out() -> None:
    from initwise.compare.report import _caption
    from initwise.compare.run import CompareResult

    runs = [RunResult("a", d, 0, 0.5, 0.5, 0.5, False, None, None, 1, 0.1, width=8)
            for d in range(1, 6)]
    res = CompareResult({}, runs, [], {}, {})
    assert "Only the last 4 of 5" in _caption(res, "signal_scale.png")
    assert "Only the last 3 of 5" in _caption(res, "grad_norms.png")
    assert "Only the last" not in _caption(res, "accuracy_vs_depth.png")
    res.runs = runs[:3]
    assert "Only the last" not in _caption(res, "loss_curves.png")


def test_invalid_npz_is_a_clear_value_error(tmp_path: pytest.TempPathFactory) -> None:
    path = os.path.join(str(tmp_path), "garbage.npz")
    with open(path, "wb") as f:
        f.write(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.npz: not a valid \.npz file \("):
        load_dataset(path)
    arr = os.path.join(str(tmp_path), "arr.npz")
    with open(arr, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(ValueError, match=r"not a valid \.npz file \(it holds a single"):
        load_dataset(arr)


def test_factory_loader_finds_modules_in_the_working_directory(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    d = str(tmp_path)
    with open(os.path.join(d, "initwise_cwd_models_xyz.py"), "w") as f:
        f.write("from torch import nn\ndef make(**kw):\n    return nn.Identity()\n")
    monkeypatch.chdir(d)
    # As under the console script: neither '' nor the working directory on sys.path.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", d, ".")])
    monkeypatch.delitem(sys.modules, "initwise_cwd_models_xyz", raising=False)
    fn = load_factory("initwise_cwd_models_xyz:make")
    assert isinstance(fn(), nn.Identity)
    sys.modules.pop("initwise_cwd_models_xyz", None)
