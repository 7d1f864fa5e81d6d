"""initwise.digest and the CI commands (issue 14): init as a contract."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import initwise
from initwise import cli


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


# The pattern docs/audit.md recommends: pin the digest of your model's init in a test; any
# change to the plan, the seed or the engine shows up in review as a changed hash.
PINNED = "06fd16773fc32c75cd88acad6b9b853fc7063597d5c77047e5b90dd6171f7533"


def test_init_is_pinned() -> None:
    d = initwise.digest(_net(), "auto", seed=0)
    assert d.total == PINNED, f"the init changed: {d.parameters}"


def test_digest_before_the_float32_normal_is_reproducible() -> None:
    """The digest pinned before the float32 normal transform, under the "float64" setting."""
    from initwise import random as iwr

    with iwr.use_normal_precision("float64"):
        d = initwise.digest(_net(), "auto", seed=0)
    assert d.total == "a202751f30d31c955cb2319cd1088383d9a0859ae4e6fc0b1c731740b66b500a"


def test_digest_is_stable_and_sensitive() -> None:
    a = initwise.digest(_net(), "auto", seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert initwise.digest(_net(), "auto", seed=0).total == a.total
    finally:
        torch.set_num_threads(threads)
    b = initwise.digest(_net(), "auto", seed=1)
    assert b.total != a.total and set(a.diff(b)) == {"0.weight", "2.weight"}  # zero biases
    c = initwise.digest(_net(), "xavier", seed=0)
    assert c.total != a.total
    net = _net()
    before = initwise.digest(net)  # as constructed: the model itself is not re-initialized
    assert initwise.digest(net, "auto", seed=0).total == a.total
    assert initwise.digest(net).total == before.total
    assert json.loads(a.to_json())["parameters"] == a.parameters


def test_digest_looks_through_torch_compile() -> None:
    assert initwise.digest(torch.compile(_net()), "auto", seed=0).total == PINNED


def test_cli_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["digest", "mlp:depth=2,width=8", "--policy", "auto", "--seed", "3",
                     "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["seed"] == 3 and d["policy"] == "auto" and len(d["total"]) == 64
    assert cli.main(["digest", "mlp:depth=2,width=8", "--policy", "auto", "--seed", "3",
                     "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == d["total"]
    assert cli.main(["digest", "mlp:depth=2", "--seed", "x"]) == 2


def test_cli_audit_fail_on(capsys: pytest.CaptureFixture[str]) -> None:
    good = ["audit", "mlp:depth=4,width=32", "--batch", "64", "--policy", "kaiming"]
    assert cli.main([*good, "--fail-on", "vanishing,exploding"]) == 0
    bad = ["audit", "mlp:depth=4,width=32", "--batch", "64"]  # torch's default: vanishing
    assert cli.main(bad) == 0  # without --fail-on a verdict is only reported
    assert cli.main([*bad, "--fail-on", "vanishing,exploding"]) == 1
    assert cli.main([*bad, "--fail-on", "exploding"]) == 0
    assert cli.main([*good, "--fail-on", "sideways"]) == 2
    capsys.readouterr()


def test_cli_check_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "mlp:depth=2,width=8", "--strict"]) == 0
    assert "0 findings" in capsys.readouterr().out
    assert cli.main(["check", "mlp:depth=2,width=8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert cli.main(["check", "nosuch:depth=2"]) == 2
    capsys.readouterr()
