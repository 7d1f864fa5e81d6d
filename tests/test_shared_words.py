"""The same words mean the same thing across ``init``, ``lsuv`` and ``audit`` (issue 12).

``inputs`` (a tensor, a tuple, a dict, a DataLoader), ``only=`` (names or prefixes, or a
predicate on the qualified name) and wrappers (``torch.compile``, ``DataParallel``) are read by
one shared helper each; the audit reads a real :class:`initwise.Plan` through typed data.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import initwise
from initwise._names import selection
from initwise._session import ModelState, call_args


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


X = torch.randn(32, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("form", ["tensor", "tuple", "list", "dataloader", "dataloader_xy"])
def test_inputs_mean_the_same_for_lsuv_and_audit(form: str) -> None:
    ds = TensorDataset(X, torch.zeros(32))
    inputs = {
        "tensor": X,
        "tuple": (X,),
        "list": [X],
        "dataloader": DataLoader(TensorDataset(X), batch_size=32),
        "dataloader_xy": DataLoader(ds, batch_size=32),
    }[form]
    args, kwargs = call_args(inputs)
    assert torch.equal(args[0], X) and kwargs == {}
    a, b = _mlp(), _mlp()
    initwise.lsuv(a, inputs, seed=0)
    initwise.lsuv(b, X, seed=0)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert initwise.audit(_mlp(), inputs).verdict == initwise.audit(_mlp(), X).verdict


def test_dict_inputs_are_keywords() -> None:
    args, kwargs = call_args({"input": X})
    assert args == () and torch.equal(kwargs["input"], X)


@pytest.mark.parametrize("bad", ["x", 5, None])
def test_bad_inputs_are_a_clear_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="audit: inputs must be"):
        initwise.audit(_mlp(), bad)
    with pytest.raises(TypeError, match="lsuv: inputs must be"):
        initwise.lsuv(_mlp(), bad)


def test_only_means_the_same_for_init_and_lsuv() -> None:
    # names/prefixes, a single name, and a predicate on the qualified tensor name
    for only in (["2"], "2", lambda n: n.startswith("2.")):
        m = _mlp()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        initwise.init(m, "kaiming", only=only, seed=0)
        changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {"2.weight", "2.bias"}
        m = _mlp()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        initwise.lsuv(m, X, only=only, seed=0)
        changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {"2.weight"}  # lsuv rescales weights only


def test_only_two_argument_predicate_gets_the_module() -> None:
    m = _mlp()
    p = initwise.init(m, "kaiming", only=lambda name, module: isinstance(module, nn.Linear)
                      and name.startswith("4."), seed=0)
    assert {e.name for e in p if e.action == "init"} == {"4.weight", "4.bias"}


@pytest.mark.parametrize("verb", ["init", "lsuv"])
def test_only_typos_and_types_are_clear_errors(verb: str) -> None:
    m = _mlp()
    before = [p.detach().clone() for p in m.parameters()]
    run = (lambda only: initwise.init(m, "auto", only=only)) if verb == "init" else (
        lambda only: initwise.lsuv(m, X, only=only))
    with pytest.raises(ValueError, match="did you mean '2'"):
        run(["2 "])
    with pytest.raises(TypeError, match=f"{verb}: only= must be"):
        run(5)
    with pytest.raises(TypeError, match="names must be strings"):
        run(["2", 3])
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_selection_prefix_rules() -> None:
    s = selection(["encoder.0", "head"], "init")
    assert s is not None
    assert s.matches("encoder.0.weight") and s.matches("head") and s.matches("head.bias")
    assert not s.matches("encoder.01.weight") and not s.matches("header.weight")


def test_lsuv_through_dataparallel_equals_bare_model() -> None:
    bare, wrapped = _mlp(), nn.DataParallel(_mlp())
    initwise.lsuv(bare, X, seed=3)
    initwise.lsuv(wrapped, X, seed=3)
    for a, b in zip(bare.parameters(), wrapped.module.parameters(), strict=True):
        assert torch.equal(a, b)


def test_audit_reads_a_real_plan() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 6 * 6, 10))
    p = initwise.init(m, "auto", seed=0)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    reports = [initwise.audit(m, x, plan=plan) for plan in (p, p.to_dict(), list(p.entries),
                                                             [e.to_dict() for e in p.entries])]
    rows = [{w.name: (w.intended_std, w.scheme) for w in r.weights} for r in reports]
    assert all(r == rows[0] for r in rows)
    assert rows[0]["4.weight"][0] == pytest.approx(p["4.weight"].std)
    assert rows[0]["1.weight"] == (0.0, "ones")  # a constant: intended std 0
    with pytest.raises(TypeError, match="unknown plan entry field"):
        initwise.audit(m, x, plan=[{"name": "4.weight", "skipped": False}])
    with pytest.raises(TypeError, match="plan= must be"):
        initwise.audit(m, x, plan="auto")


def test_model_state_restores_reassigned_buffers() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("steps", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.steps = self.steps + 1  # re-assigns the buffer
            return x

    m = Counter()
    obj = m.steps
    state = ModelState(m)
    m(torch.ones(1))
    state.restore()
    assert m.steps is obj and float(m.steps) == 0.0


def test_plan_with_example_inputs_restores_buffers() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    m.train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    initwise.plan(m, "auto", example_inputs=torch.randn(16, 4))
    assert m.training and all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("bad", [1.5, "0", True])
def test_seed_means_the_same_for_every_verb(bad: object) -> None:
    m = _mlp()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(TypeError, match="init: seed must be an int, got"):
        initwise.init(m, "auto", seed=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"lsuv: seed must be an int \(or None\), got"):
        initwise.lsuv(m, X, seed=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="audit: seed must be an int, got"):
        initwise.audit(m, X, seed=bad)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_lsuv_lists_what_it_does_not_calibrate() -> None:
    """Fused expert tensors (one [E, out, in] parameter) are not calibrated, and say so."""

    class Experts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 16, 8) * 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bi,eoi->bo", x, self.w)

    m = nn.Sequential(nn.Linear(6, 8), Experts(), nn.Linear(16, 3))
    with pytest.warns(initwise.InitwiseWarning, match=r"not calibrated \(1\.w \(Experts\): batched weights"):
        rep = initwise.lsuv(m, X)
    assert [u.split(" ", 1)[0] for u in rep.uncalibrated] == ["1.w"]
    assert "uncalibrated" in rep.to_dict()
