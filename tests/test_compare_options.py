"""compare: regression with MSE, full-batch GD, parametrized schemes, steps to a loss target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from initwise import cli
from initwise.compare.data import load_regression_dataset, make_teacher_regression
from initwise.compare.run import CompareConfig, run_compare
from initwise.compare.schemes import apply_scheme, check_schemes, parse_scheme, split_schemes
from initwise.compare.train import TrainConfig, loss_function, train_one


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def test_scheme_specs_parse_and_validate() -> None:
    assert split_schemes("torch, normal:std=0.01,variance_scaling:scale=2,mode=fan_in,lsuv") == [
        "torch", "normal:std=0.01", "variance_scaling:scale=2,mode=fan_in", "lsuv"]
    assert parse_scheme("critical:activation=tanh,sigma_b2=0.05") == (
        "critical", {"activation": "tanh", "sigma_b2": 0.05})
    assert check_schemes(["normal:std=0.01", "gpt2:n_layer=2", "lsuv:tol=0.01"]) == [
        "normal:std=0.01", "gpt2:n_layer=2", "lsuv:tol=0.01"]
    with pytest.raises(ValueError, match="did you mean 'std'"):
        check_schemes(["normal:stdd=0.01"])
    with pytest.raises(ValueError, match="did you mean 'normal'"):
        check_schemes(["nromal:std=0.01"])
    with pytest.raises(ValueError, match="did you mean 'tol'"):
        check_schemes(["lsuv:tl=0.1"])
    with pytest.raises(ValueError, match="key=value"):
        check_schemes(["normal:std"])
    with pytest.raises(ValueError, match="no parameters"):
        check_schemes(["torch"]) and check_schemes(["torch:"])


def test_parametrized_schemes_apply() -> None:
    x = torch.randn(8, 32)
    torch.manual_seed(0)
    m = _mlp()
    info = apply_scheme(m, "normal:std=0.01", x, seed=0)
    assert info["params"] == {"std": 0.01}
    w = torch.cat([p.detach().flatten() for n, p in m.named_parameters() if n.endswith("weight")])
    assert abs(float(w.std()) / 0.01 - 1) < 6 * math.sqrt(2 / w.numel())
    # the general form with He's parameters is He init, bit for bit
    a, b = _mlp(), _mlp()
    apply_scheme(a, "variance_scaling:scale=2,mode=fan_in", x, seed=3)
    apply_scheme(b, "kaiming_normal:nonlinearity=relu", x, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_regression_data() -> None:
    x, t = make_teacher_regression(400, seed=1)
    assert x.shape == (400, 32) and t.shape == (400, 10)
    ds = load_regression_dataset("teacher", seed=2)
    assert ds.x_train.shape == (2400, 32) and ds.y_test.shape == (600, 10)
    assert ds.y_train.dtype == torch.float32 and ds.n_classes == 10
    with pytest.raises(ValueError, match="Valid options: teacher"):
        load_regression_dataset("digits")


def test_full_batch_regression_and_steps_to_target_loss() -> None:
    ds = load_regression_dataset("teacher", seed=0)
    torch.manual_seed(0)
    m = _mlp()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=40, batch_size="full",
                      task="regression", loss="mse", target_loss=0.9, log_every=1)
    r = train_one(m, ds, cfg, scheme="torch", depth=3, seed=0)
    assert r.steps == 40 and r.loss_steps == list(range(1, 41))  # one step per epoch
    # the first step whose (full-batch) training loss is below the target: losses logged
    # after step k are those computed before update k, i.e. train_loss[k] is the loss after k
    k = r.steps_to_target_loss
    assert k is not None and 0 < k < 40
    assert r.train_loss[k] < 0.9 <= min(r.train_loss[:k])
    assert 0.3 < r.test_accuracy <= 1.0  # R²
    # mse on one-hot targets for classification
    f = loss_function("classification", "mse")
    out = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert float(f(out, torch.tensor([1, 0]))) == 0.0
    with pytest.raises(ValueError, match="needs loss 'mse'"):
        loss_function("regression", "cross_entropy")


def test_run_compare_regression_sweep() -> None:
    cfg = CompareConfig(dataset="teacher", task="regression", arch="mlp", depths=[2], widths=[32],
                        schemes=["normal:std=0.01", "kaiming"], seeds=2, epochs=30,
                        batch_size="full", optimizer="sgd", lr=0.1, momentum=0.9,
                        target_loss=0.9)
    res = run_compare(cfg)
    assert cfg.loss == "mse" and all(r.error is None for r in res.runs)
    cell = res.summary[0]
    assert cell["winner"] == "kaiming"  # N(0, 0.01²) sits on the small-init plateau
    assert cell["schemes"]["kaiming"]["reached_target_loss"] == 2
    assert cell["schemes"]["normal:std=0.01"]["reached_target_loss"] == 0
    json.dumps(res.to_dict())
    with pytest.raises(ValueError, match="needs loss 'mse'"):
        CompareConfig(dataset="teacher", task="regression", loss="cross_entropy").validate()
    with pytest.raises(ValueError, match="batch_size"):
        CompareConfig(batch_size="half").validate()


def test_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["compare", "--dataset", "teacher", "--task", "regression", "--arch", "mlp",
                   "--depths", "2", "--widths", "16", "--schemes",
                   "normal:std=0.01,variance_scaling:scale=2,mode=fan_in", "--batch-size", "full",
                   "--epochs", "3", "--seeds", "1", "--target-loss", "0.5",
                   "--out", str(tmp_path), "--json", "--quiet"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert d["config"]["batch_size"] == "full" and d["config"]["task"] == "regression"
    assert d["config"]["schemes"] == ["normal:std=0.01", "variance_scaling:scale=2,mode=fan_in"]
    assert d["config"]["target_loss"] == 0.5 and d["runs"][0]["steps"] == 3
    assert cli.main(["compare", "--batch-size", "many", "--out", str(tmp_path)]) == 2


def test_lsuv_spec_only_names_a_layer_even_when_it_looks_like_a_number() -> None:
    """``lsuv:only=2``: a Sequential's layer '2', not the int 2 (which lsuv refuses)."""
    from initwise.compare.schemes import apply_scheme

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    first = net[0].weight.detach().clone()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    info = apply_scheme(net, "lsuv:only=2", x, seed=0)
    assert [r["name"] for r in info["details"]["layers"]] == ["2.weight"]
    assert torch.equal(net[0].weight, first)  # the other layer untouched
    assert abs(float(net(x).detach().std()) - 1.0) < 0.02  # layer 2 calibrated (tol 0.01)


def test_time_left_comes_from_the_runs_not_from_loading_the_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first progress line's time left was (set-up + first run) x runs left: a slow data
    load (digits: importing scikit-learn) made it several times too long."""
    import time

    from initwise.compare import run as run_mod

    load = run_mod._load_data

    def slow_load(config: CompareConfig, seed: int) -> object:
        time.sleep(1.0)  # once: the check before the runs; the runs' data is cached per seed
        return load(config, seed)

    monkeypatch.setattr(run_mod, "_load_data", slow_load)
    events: list[dict[str, float]] = []
    cfg = CompareConfig(dataset="teacher", depths=[2], widths=[8], schemes=["torch", "kaiming"],
                        seeds=1, epochs=1, batch_size=256)
    run_compare(cfg, callback=lambda ev: events.append(dict(ev)))
    first = events[0]
    # two runs of the same cost: after the first, the time left is that run's time, which
    # is at most the time elapsed less the 1 s sleep (before: the whole elapsed time)
    assert first["elapsed_s"] >= 1.0
    assert first["eta_s"] <= first["elapsed_s"] - 1.0
