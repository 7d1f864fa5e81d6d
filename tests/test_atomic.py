"""Atomicity (issue 19, item 4): validate before allocating or writing, all-or-nothing writes,
Ctrl-C propagates as itself and leaves the model as it was, dry runs restore what they touch."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import torch
from torch import nn

import initwise
from initwise import InitError
from initwise._session import deferred_interrupts
from initwise.model.presets import get_policy
from initwise.policy import Policy, Rule


class _Net(nn.Module):
    """Weights, biases, BatchNorm statistics (and their count), a weight-normed layer, a tie."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(8, 8))
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx).transpose(1, 2)
        x = torch.relu(self.bn(self.conv(x))).transpose(1, 2)
        return self.head(torch.tanh(self.fc(x)))


def _state(model: nn.Module) -> dict[str, Any]:
    """Everything a write pass may change, compared exactly (device, dtype, values, objects)."""
    out: dict[str, Any] = {}
    for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        out[n] = (t.device.type, t.dtype, tuple(t.shape), None if t.is_meta else t.detach().clone(), id(t))
    return out


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for n in a:
        (da, ta, sa, va, ia), (db, tb, sb, vb, ib) = a[n], b[n]
        assert (da, ta, sa, ia) == (db, tb, sb, ib), n
        assert (va is None) == (vb is None), n
        if va is not None:
            assert torch.equal(va, vb), n


class _Interrupting:
    """A user scheme (uniform draws, keyed) that raises ``exc`` on the ``at``-th call of the
    write pass; the dry-run calls of validation (one per tensor) are counted first."""

    def __init__(self, exc: BaseException, at: int) -> None:
        self.exc, self.at, self.calls, self.armed = exc, at, 0, False

    def __call__(self, tensor: torch.Tensor, *, fans: Any = None, generator: Any = None, **_: Any) -> torch.Tensor:
        from initwise import random as iwr

        if self.armed:
            self.calls += 1
            if self.calls == self.at:
                raise self.exc
        iwr.uniform_(tensor, generator, low=-0.1, high=0.1)
        return tensor


def _policy(fn: Any) -> Policy:
    return Policy((Rule(fn, role=("weight", "embedding")), Rule("zeros", role="bias"),
                   Rule("ones", role="norm"), Rule("zeros", name="*running_mean"),
                   Rule("ones", name="*running_var")), name="interrupting")  # fmt: skip


def _arm_after_validation(monkeypatch: pytest.MonkeyPatch, fn: _Interrupting) -> None:
    from initwise.model import apply

    orig = apply.write_all

    def armed(*a: Any, **k: Any) -> Any:
        fn.armed = True
        return orig(*a, **k)

    monkeypatch.setattr(apply, "write_all", armed)
    from initwise.model import meta

    monkeypatch.setattr(meta, "write_all", armed)


def _trained() -> _Net:
    """A model whose values matter: trained a step, BatchNorm statistics and count moved."""
    torch.manual_seed(0)
    net = _Net()
    net(torch.randint(0, 11, (4, 5))).sum().backward()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(p.grad)
    return net


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), ValueError("third call differs")])
def test_init_stopped_half_way_leaves_the_model_as_it_was(monkeypatch, exc) -> None:
    net = _trained()
    assert int(net.bn.num_batches_tracked) == 1
    before = _state(net)
    rng = torch.get_rng_state()
    fn = _Interrupting(exc, at=3)
    _arm_after_validation(monkeypatch, fn)
    expected = KeyboardInterrupt if isinstance(exc, KeyboardInterrupt) else InitError
    with pytest.raises(expected) as info:
        initwise.init(net, _policy(fn), seed=0)
    assert fn.calls == 3  # it really stopped on the third weight, after two were written
    if expected is InitError:
        assert "put back: the model is unchanged" in str(info.value)
        assert info.value.__cause__ is exc
    _assert_same(before, _state(net))  # weights, weight_norm's g and v, statistics, count
    assert torch.equal(rng, torch.get_rng_state())
    # and the same call, uninterrupted, writes everything
    fn.at = -1
    initwise.init(net, _policy(fn), seed=0)
    assert int(net.bn.num_batches_tracked) == 0 and not torch.equal(net.conv.weight, before["conv.weight"][3])


def test_the_backup_is_one_copy_per_written_tensor_and_is_released() -> None:
    """The copies live only while the write pass runs (the memory cost in apply's docs)."""
    from initwise.model import apply

    undo = apply._Undo(True)
    net = _trained()
    undo.save(net.parameters())
    assert len(undo.saved) == len(list(net.parameters()))
    with torch.no_grad():
        net.conv.weight.zero_()
    undo.restore()
    assert net.conv.weight.abs().sum() > 0
    assert undo.saved == []


def _meta_net() -> _Net:
    with torch.device("meta"):
        return _Net()


def _clean(policy: Any = "auto", **kw: Any) -> dict[str, torch.Tensor]:
    m = _meta_net()
    initwise.materialize(m, policy, device="cpu", seed=5, **kw)
    return {n: t.detach().clone() for n, t in m.state_dict().items()}


def _on_meta_exactly(m: nn.Module, ids: dict[str, int]) -> None:
    for n, t in [*m.named_parameters(remove_duplicate=False), *m.named_buffers(remove_duplicate=False)]:
        assert t.is_meta, n
        assert id(t) == ids[n], n  # the very objects it had
    assert m.head.weight is m.emb.weight


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"policy": "autoo"}, ValueError, "autoo"),
    ({"only": ["fc.weight", "conv.wieght"]}, ValueError, "conv.wieght"),
    ({"seed": "5"}, TypeError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"policy": Policy((Rule("keep", name="bn.weight"), *get_policy("auto").rules))}, None, None),
])  # fmt: skip
def test_materialize_validates_everything_before_allocating(kwargs, error, match) -> None:
    m = _meta_net()
    ids = {n: id(t) for n, t in [*m.named_parameters(remove_duplicate=False), *m.named_buffers(remove_duplicate=False)]}
    if error is None:  # a keep rule on a module that can rebuild it: fine
        initwise.materialize(m, device="cpu", **kwargs)
        return
    with pytest.raises(error, match=match):
        initwise.materialize(m, device="cpu", **kwargs)
    _on_meta_exactly(m, ids)
    # the retry with the mistake fixed equals a clean run, bit for bit
    fixed = {k: v for k, v in kwargs.items() if k != "seed"}
    fixed = {k: (["fc.weight", "conv.weight"] if k == "only" else "auto") for k in fixed}
    initwise.materialize(m, device="cpu", seed=5, **fixed)
    for n, t in _clean(**fixed).items():
        assert torch.equal(m.state_dict()[n], t), n


class _NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))


def test_materialize_refuses_a_kept_parameter_its_module_cannot_rebuild_before_allocating() -> None:
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(4, 4), _NoReset())
    with pytest.raises(ValueError, match=r"1\.scale.*reset_parameters"):
        initwise.materialize(m, Policy((Rule("keep", name="1.scale"), *get_policy("auto").rules)), device="cpu")
    assert all(p.is_meta for p in m.parameters())


def test_materialize_interrupted_in_the_write_pass_goes_back_to_meta(monkeypatch) -> None:
    m = _meta_net()
    ids = {n: id(t) for n, t in [*m.named_parameters(remove_duplicate=False), *m.named_buffers(remove_duplicate=False)]}
    rng = torch.get_rng_state()
    fn = _Interrupting(KeyboardInterrupt(), at=2)
    _arm_after_validation(monkeypatch, fn)
    with pytest.raises(KeyboardInterrupt):
        initwise.materialize(m, _policy(fn), device="cpu", seed=5)
    assert fn.calls == 2
    assert torch.equal(rng, torch.get_rng_state())
    _on_meta_exactly(m, ids)  # the very meta tensors it had, ties included
    fn.at = -1
    initwise.materialize(m, _policy(fn), device="cpu", seed=5)
    fn.calls, fn.armed = 0, False
    for n, t in _clean(_policy(fn)).items():
        assert torch.equal(m.state_dict()[n], t), n


class _Noisy(nn.Module):
    """A forward that draws from torch's RNG, bumps a buffer, re-assigns one, flips a mode."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Linear(6, 3)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema", torch.zeros(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        self.ema = self.ema * 0.5 + x.mean(0)
        self.b.train()
        x = torch.relu(self.a(x)) + torch.rand_like(x)  # not traceable by fx: data-dependent
        if float(x.sum()) > -1e9:
            x = self.drop(x)
        return self.b(x)


def test_dry_runs_restore_buffers_modes_and_rng() -> None:
    net = _Noisy().eval()
    before = _state(net)
    ema = net.ema
    cpu = torch.get_rng_state()
    p = initwise.plan(net, "auto", example_inputs=torch.randn(5, 6))
    cpu = torch.get_rng_state()  # (randn above drew; from here nothing may)
    p = initwise.plan(net, "auto", example_inputs=torch.ones(5, 6))
    assert p.source == "dataflow", p.notes  # read on a shadow: the model never runs
    assert torch.equal(cpu, torch.get_rng_state())
    assert net.ema is ema and not net.training and not net.b.training
    after = _state(net)
    for n in ("steps", "ema"):
        assert torch.equal(before[n][3], after[n][3]), n
    # init and materialize too
    initwise.init(net, "auto", example_inputs=torch.ones(5, 6), seed=0)
    assert torch.equal(cpu, torch.get_rng_state()) and int(net.steps) == 0
    with torch.device("meta"):
        m = _Noisy()

    def reset(name: str, module: nn.Module) -> bool:
        module.steps.zero_()
        module.ema.zero_()
        return True

    initwise.materialize(m, "auto", device="cpu", seed=0, reset=reset)
    assert torch.equal(cpu, torch.get_rng_state())
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        cuda = torch.cuda.get_rng_state_all()
        initwise.plan(net, "auto", example_inputs=torch.ones(5, 6))
        assert all(torch.equal(a, b) for a, b in zip(cuda, torch.cuda.get_rng_state_all(), strict=True))


def test_user_scheme_drawing_from_the_global_rng_leaves_it_unchanged() -> None:
    def draws(tensor: torch.Tensor, **_: Any) -> torch.Tensor:
        with torch.no_grad():
            return tensor.copy_(torch.randn(tensor.shape) * 0.01)

    net = nn.Sequential(nn.Linear(4, 4), nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)))
    state = torch.get_rng_state()
    initwise.init(net, Policy((Rule(draws, role="weight"), Rule("zeros"))), seed=0)
    assert torch.equal(state, torch.get_rng_state())


def test_deferred_interrupts_hold_ctrl_c_until_the_block_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        signal.raise_signal(signal.SIGINT)
        reached.append(True)  # not interrupted inside the block
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
