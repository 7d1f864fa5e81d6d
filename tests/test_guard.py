"""initwise.check and initwise.watch (issue 14): provenance of every parameter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise
from initwise import CheckReport, check, init, watch


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 6 * 6, 10),
                         nn.LayerNorm(10))


def test_clean_models_have_no_findings() -> None:
    """No false positives: zeros, ones, constant biases, norm weights, every preset."""
    net = _net()
    assert check(net, strict=True).findings == []
    for policy in ("auto", "xavier", "kaiming", "orthogonal", "dcgan"):
        init(net, policy, seed=1)
        rep = check(net, strict=True)
        assert rep.findings == [], (policy, str(rep))
    with torch.no_grad():
        net[4].bias.fill_(0.1)
        net[4].weight.zero_()
    assert check(net, strict=True).findings == []


def test_hf_model_as_built_has_no_findings() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500,
                                           n_positions=32, bos_token_id=0, eos_token_id=0))
    assert check(model, strict=True).findings == []


@pytest.mark.parametrize(("fill", "kind"), [
    ("nan", "non_finite"), ("inf", "non_finite"), ("denormal", "denormal"),
    ("huge", "implausible"), ("rows", "identical_rows"),
])
def test_uninitialized_storage_is_named(fill: str, kind: str) -> None:
    net = _net()
    w = net[4].weight
    with torch.no_grad():
        if fill == "nan":
            w[3, 7] = math.nan
        elif fill == "inf":
            w[0, 0] = math.inf
        elif fill == "denormal":  # small integers read as float32: what recycled memory holds
            w.view(torch.int32)[:2] = torch.arange(1, 2 * w.shape[1] + 1).reshape(2, -1)
        elif fill == "huge":
            w[5, 5] = 3e31
        else:
            w.copy_(w[0].expand_as(w))
    rep = check(net)
    assert not rep.ok
    assert [(f.parameter, f.kind) for f in rep.findings if f.severity == "error"] == [("4.weight", kind)]
    assert "4.weight" in str(rep) and CheckReport.from_json(rep.to_json()).findings == rep.findings


def test_torch_empty_garbage_is_found() -> None:
    """Recycled allocator memory: the bit patterns of old int64 values read as float32."""
    lin = nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.view(torch.int64)[:] = torch.arange(64 * 32).reshape(64, 32)
    kinds = {f.kind for f in check(lin).of("weight")}
    assert "denormal" in kinds


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sampled_in_half_precision_is_detected(dtype: torch.dtype) -> None:
    lin = nn.Linear(256, 256)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, 256, generator=g, dtype=dtype) * 0.05)
    found = [f for f in check(lin).findings if f.kind == "low_precision"]
    assert [f.parameter for f in found] == ["weight"]
    assert str(dtype).removeprefix("torch.") in found[0].detail


def test_float32_samples_are_not_called_low_precision() -> None:
    """The test's power: 2^-13 per value; 200 float32 tensors of 16 values never trip it."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        lin = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(4, 4, generator=g))
        assert check(lin, strict=True).findings == []
    # integer-valued and constant tensors are exactly representable: never flagged
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(256.0).reshape(16, 16))
        lin.bias.fill_(0.5)
    assert check(lin, strict=True).findings == []


def test_broken_tie_is_named() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=500,
                                           n_positions=32, bos_token_id=0, eos_token_id=0))
    assert model.lm_head.weight is model.transformer.wte.weight
    model.lm_head.weight = nn.Parameter(model.transformer.wte.weight.detach().clone())
    rep = check(model)
    assert [(f.parameter, f.kind, f.severity) for f in rep.findings] == \
        [("lm_head.weight", "tie_broken", "warning")]
    assert rep.ok and not check(model, strict=True).ok
    with torch.no_grad():
        model.lm_head.weight.normal_()
    assert [(f.parameter, f.kind) for f in check(model).findings] == \
        [("lm_head.weight", "tie_diverged")]
    # a tie declared by the user on a plain model
    seq = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    assert check(seq, ties=[("1.weight", "0.weight")]).findings[0].kind == "tie_diverged"


# -- watch -------------------------------------------------------------------------------------

def test_watch_records_construction_load_and_init_with_callers() -> None:
    with watch() as log:
        lin = nn.Linear(4, 3)
    log.bind(lin)
    ops = [(e.parameter, e.op, e.phase) for e in log.events]
    assert ops == [("weight", "register", "construct"), ("bias", "register", "construct"),
                   ("weight", "torch.nn.init.kaiming_uniform_", "construct"),
                   ("bias", "torch.nn.init.uniform_", "construct")]
    assert log.rewritten == [] and log.findings() == []

    sd = {k: torch.zeros_like(v) for k, v in lin.state_dict().items()}
    with watch(lin) as log:
        lin.load_state_dict(sd)
        nn.init.trunc_normal_(lin.weight, std=0.02)  # five in-place ops: one write
        lin.bias.data = torch.ones(3)
    events = [(e.parameter, e.op, e.phase) for e in log.events]
    assert events == [("weight", "copy_", "load"), ("bias", "copy_", "load"),
                      ("weight", "torch.nn.init.trunc_normal_", "init"),
                      ("bias", ".data =", "init")]
    assert all(e.caller.startswith("test_guard.py:") for e in log.events)
    found = {(f.parameter, f.kind) for f in log.findings()}
    assert found == {("weight", "overwritten_after_load"), ("bias", "overwritten_after_load")}
    rep = check(lin, log=log)
    assert not rep.ok and {f.kind for f in rep.findings} == {"overwritten_after_load"}


def test_watch_finds_a_write_that_landed_on_a_copy() -> None:
    lin = nn.Linear(4, 4).double()
    with watch(lin) as log:
        lin.weight.detach().float().normal_()  # a float32 copy: the parameter is unchanged
    [f] = log.findings()
    assert (f.parameter, f.kind) == ("weight", "write_on_copy") and ".float()" in f.detail
    with watch(lin) as log:  # the legit pattern: sample into a copy, then copy it back
        c = lin.weight.detach().clone()
        c.normal_()
        lin.weight.data.copy_(c)
    assert log.findings() == []


def test_watch_finds_hf_init_weights_over_loaded_weights() -> None:
    """The Hugging Face class of bugs: ``_init_weights`` runs after the weights were loaded."""
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100, n_positions=16,
                       bos_token_id=0, eos_token_id=0)
    model = T.GPT2LMHeadModel(cfg)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with watch(model) as log:
        model.load_state_dict(sd)
        model.transformer.h[0].mlp.apply(model._init_weights)  # a late init of one block
    bad = sorted(f.parameter for f in log.findings() if f.kind == "overwritten_after_load")
    assert bad == ["transformer.h.0.mlp.c_fc.bias", "transformer.h.0.mlp.c_fc.weight",
                   "transformer.h.0.mlp.c_proj.bias", "transformer.h.0.mlp.c_proj.weight"]
    ev = log.writes("transformer.h.0.mlp.c_fc.weight")[-1]
    assert ev.phase == "init" and ev.caller.startswith("modeling_gpt2.py:")
    assert ev.caller.endswith("in _init_weights")


def test_exports() -> None:
    for name in ("check", "watch", "digest", "CheckReport", "WatchLog", "WriteEvent",
                 "DigestReport", "Finding", "OutputCheck"):
        assert name in initwise.__all__ and hasattr(initwise, name)
