"""Tests for initwise.audit: known cases with known answers, exact statistics, invariants."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
import torch
from torch import nn

from initwise import (
    AuditError,
    AuditReport,
    AuditThresholds,
    WidthAuditReport,
    audit,
    audit_plot,
    audit_widths,
)

WIDTH = 128


def mlp(depth: int, init: str | float, act: type[nn.Module] = nn.ReLU, width: int = WIDTH,
        seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        with torch.no_grad():
            if init == "kaiming":
                std = math.sqrt(2.0 / width)
            elif init == "xavier":
                std = math.sqrt(2.0 / (width + width))
            else:
                std = float(init)
            lin.weight.normal_(0.0, std, generator=g)
            lin.bias.zero_()
        layers += [lin, act()]
    return nn.Sequential(*layers)


def x_in(batch: int = 32, width: int = WIDTH, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))


# -- known cases --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("init", "fwd", "bwd"),
    [(0.01, "vanishing", "vanishing"),
     ("kaiming", "healthy", "healthy"),
     (2.0 * math.sqrt(2.0 / WIDTH), "exploding", "exploding")],
)
def test_deep_relu_mlp_verdicts(init: str | float, fwd: str, bwd: str) -> None:
    rep = audit(mlp(50, init), x_in())
    assert (rep.forward_verdict, rep.backward_verdict) == (fwd, bwd)
    assert rep.verdict == (fwd if fwd != "healthy" else bwd)
    assert len(rep.rows) == 101  # 50 Linear + 50 ReLU + the model output
    relu_zero = [r.zero_fraction for r in rep.rows if r.type == "ReLU"][:10]
    if init == "kaiming":
        assert rep.forward_first is None and rep.backward_first is None
        # Kaiming conserves E[h^2] per element and ||dL/dh|| (module docs): per-layer gain 1,
        # so after 50 layers the ratio is 1 up to finite-width fluctuation (well inside 10x).
        assert 0.2 < rep.rows[-1].ratio < 5 and 0.2 < rep.rows[0].grad_ratio < 5
        assert all(0.35 < z < 0.65 for z in relu_zero)  # half the ReLUs are off
    elif init == 0.01:
        # rms gain per Linear+ReLU = 0.01 * sqrt(128 / 2) = 0.08 < 1/10: out within 2 layers.
        assert rep.forward_first is not None and rep.forward_first <= 3
    else:
        # rms gain per layer 2: the ratio passes 10 by layer log2(10) ~ 3.3, ~row 6-8.
        assert rep.forward_first is not None and rep.forward_first <= 9
        assert rep.rows[-1].ratio > 1e10


def test_tanh_xavier_healthy_and_std1_saturates_and_explodes() -> None:
    good = audit(mlp(16, "xavier", nn.Tanh), x_in())
    assert good.verdict == "healthy"
    bad = audit(mlp(16, 1.0, nn.Tanh), x_in())
    # std 1 at width 128: pre-activation rms ~ sqrt(128) > 10 -> forward exploding at row 0;
    # chaotic phase chi = n E[tanh'(h)^2] ~ 128 * (4/3) / sqrt(2 pi 128 * 0.9) > 1: backward
    # explodes although the tanh outputs are bounded.
    assert bad.forward_verdict == "exploding" and bad.forward_first == 0
    assert bad.backward_verdict == "exploding"
    # Saturated fraction = P(|h| >= atanh(1 - 2 * margin)) for the Gaussian pre-activation h
    # (std measured on the preceding Linear row); binomial SE sqrt(p(1-p)/n) with n = 4096.
    thr = math.atanh(1.0 - 2 * bad.thresholds.saturation_margin)
    for pre, act in zip(bad.rows[0:30:2], bad.rows[1:30:2], strict=True):
        assert act.type == "Tanh" and pre.type == "Linear"
        p = math.erfc(thr / (pre.std * math.sqrt(2.0)))
        assert act.saturated_fraction == pytest.approx(p, abs=6 * math.sqrt(p * (1 - p) / 4096)
                                                       + 0.01)
        assert act.saturated_fraction > 0.8
    assert any("saturated" in n for n in bad.notes)
    assert all(r.saturated_fraction < 0.2 for r in good.rows if r.type == "Tanh")


def test_orthogonal_deep_linear_network_is_isometric() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(48, 48, bias=False) for _ in range(20)])
    for m in net:
        nn.init.orthogonal_(m.weight)
    rep = audit(net, x_in(8, 48), spectrum=True, spectrum_steps=64)
    s = rep.spectrum
    assert s is not None
    assert abs(s.max_sv - 1) < 1e-4 and abs(s.min_sv - 1) < 1e-4
    assert abs(s.mean_sq_sv - 1) < 1e-4 and s.log_sv_std < 1e-4 and s.condition < 1 + 2e-4
    assert rep.verdict == "healthy"
    assert all(w.orthogonal and w.orth_error is not None and w.orth_error < 1e-4
               for w in rep.weights)


def test_spectrum_matches_exact_svd() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 40), nn.Tanh(), nn.Linear(40, 30), nn.Tanh(),
                        nn.Linear(30, 20))
    x = torch.randn(4, 12)
    jac = torch.autograd.functional.jacobian(lambda v: net(v.reshape(1, 12)).reshape(-1), x[0])
    sv = torch.linalg.svdvals(jac.double())
    rep = audit(net, x, spectrum=True, spectrum_steps=32, mode="eval")
    s = rep.spectrum
    assert s is not None and s.exact and s.side == "JtJ" and s.dim == 12
    assert torch.allclose(torch.tensor(s.singular_values, dtype=torch.float64), sv, rtol=1e-4)
    assert s.mean_sq_sv == pytest.approx(float((sv**2).mean()), rel=1e-4)
    assert s.log_sv_std == pytest.approx(float(sv.log().std(unbiased=False)), rel=1e-3)
    # Not exhausted (dim 12 > 6 steps): Ritz values interlace, so the estimates are bounds.
    s6 = audit(net, x, spectrum=True, spectrum_steps=6, mode="eval").spectrum
    assert s6 is not None and not s6.exact
    assert float(sv[-1]) * (1 - 1e-5) <= s6.min_sv and s6.max_sv <= float(sv[0]) * (1 + 1e-5)
    assert s6.max_sv > 0.9 * float(sv[0])


def test_residual_network_with_zero_init_last_is_healthy() -> None:
    class Block(nn.Module):
        def __init__(self, d: int, zero: bool) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.fc1, self.act, self.fc2 = nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)
            if zero:
                nn.init.zeros_(self.fc2.weight)
                nn.init.zeros_(self.fc2.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    torch.manual_seed(0)
    for zero in (False, True):
        net = nn.Sequential(*[Block(64, zero) for _ in range(12)])
        rep = audit(net, x_in(16, 64))
        assert rep.verdict == "healthy", str(rep)
        # Pre-norm residual stream: variance grows additively, rms ratio ~ sqrt(1 + c L) < 10.
        assert 1.0 - 1e-6 <= rep.rows[-1].ratio < 10
        if zero:
            assert rep.rows[-1].ratio == pytest.approx(1.0, abs=1e-6)  # branches are zero
            fc2 = [r for r in rep.rows if r.name.endswith("fc2")]
            assert all(r.zero_init and r.flag == "skipped" for r in fc2)
            assert any("zero-initialized" in n for n in rep.notes)


def test_transformer_encoder() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True)
    enc = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    x = torch.randn(4, 10, 32)
    rep = audit(enc, x)
    types = {r.type for r in rep.rows}
    assert {"MultiheadAttention", "Linear", "LayerNorm", "Dropout"} <= types
    assert rep.verdict == "healthy", str(rep)
    # Each MultiheadAttention runs once per layer; its in_proj weight got a gradient.
    assert sum(r.type == "MultiheadAttention" for r in rep.rows) == 3
    w = {w.name: w for w in rep.weights}
    assert w["layers.0.self_attn.in_proj_weight"].grad_norm > 0
    assert_unchanged_after(enc, x)


# -- exact statistics -----------------------------------------------------------------------

def test_layer_and_weight_statistics_are_exact() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(20, 30)
    relu = nn.ReLU()
    net = nn.Sequential(lin, relu)
    x = torch.randn(16, 20)
    rep = audit(net, x, seed=3)
    h = lin(x).detach().double()
    y = torch.relu(h)
    r0, r1, out = rep.rows
    assert (r0.name, r1.name, out.name, out.kind) == ("0", "1", "", "output")
    assert r0.mean == pytest.approx(float(h.mean()), rel=1e-5, abs=1e-7)
    assert r0.std == pytest.approx(float(h.std(unbiased=False)), rel=1e-5)
    assert r0.max_abs == pytest.approx(float(h.abs().max()), rel=1e-6)
    assert r1.zero_fraction == float((y == 0).double().mean())
    assert r1.ratio == pytest.approx(float(y.pow(2).mean().sqrt() / x.double().pow(2).mean()
                                           .sqrt()), rel=1e-5)
    # Default loss: dL/dy = R ~ N(0, 1) from Generator(seed); gradients exactly known.
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    assert out.grad_norm == pytest.approx(float(r.norm()), rel=1e-6)
    gh = r * (h > 0)
    assert r0.grad_norm == pytest.approx(float(gh.norm()), rel=1e-5)
    assert r0.grad_ratio == pytest.approx(float(gh.norm() / r.norm()), rel=1e-5)
    gw = gh.T.float() @ x
    w = next(w for w in rep.weights if w.name == "0.weight")
    assert w.std == pytest.approx(float(lin.weight.detach().double().std(unbiased=False)), rel=1e-5)
    assert w.sgd_update == pytest.approx(float(gw.norm() / lin.weight.detach().norm()), rel=1e-5)
    assert w.adam_update == pytest.approx(
        math.sqrt(int((gw != 0).sum())) / float(lin.weight.detach().norm()), rel=1e-5)


def test_module_called_twice_gives_two_rows() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.fc(x)))

    rep = audit(Twice(), torch.randn(4, 8))
    fc = [r for r in rep.rows if r.name == "fc"]
    assert [r.call for r in fc] == [0, 1] and [r.index for r in fc] == [0, 1]
    assert all(r.grad_norm is not None and r.grad_norm > 0 for r in fc)


def test_plan_comparison() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.normal_(net[0].weight, std=0.1)
    nn.init.normal_(net[2].weight, std=0.05)
    # the typed entry vocabulary (PlanEntry's ``action``, not the old duck-typed ``skipped``)
    entries = [{"name": "0.weight", "std": 0.1, "bound": None, "scheme": "normal"},
               {"name": "2.weight", "std": 0.1, "bound": None, "scheme": "normal"},
               {"name": "0.bias", "std": None, "bound": None, "scheme": "zeros",
                "action": "skip"}]
    rep = audit(net, torch.randn(8, 64), plan=entries)
    w = {w.name: w for w in rep.weights}
    assert w["0.weight"].matches_plan is True
    assert w["0.weight"].std_ratio == pytest.approx(1.0, abs=6 * 0.5 * math.sqrt(2 / 4096))
    assert w["2.weight"].matches_plan is False and w["2.weight"].std_ratio == pytest.approx(
        0.5, rel=0.1)
    assert w["0.bias"].intended_std is None
    assert any("2.weight" in n for n in rep.notes)


# -- invariants, errors, outputs --------------------------------------------------------

def _snapshot(model: nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": {n: (None if p.grad is None else p.grad.clone())
                  for n, p in model.named_parameters()},
        "grad_ids": {n: id(p.grad) for n, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "rg": [p.requires_grad for p in model.parameters()],
        "rng": torch.get_rng_state(),
    }


def assert_unchanged_after(model: nn.Module, inputs: object, **kw: object) -> None:
    before = _snapshot(model)
    with contextlib.suppress(AuditError, ValueError, TypeError):
        audit(model, inputs, **kw)  # type: ignore[arg-type]
    after = _snapshot(model)
    for k, v in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(v, after["state"][k]), k  # type: ignore[index]
    for n, g in before["grads"].items():  # type: ignore[union-attr]
        g2 = after["grads"][n]  # type: ignore[index]
        assert (g is None and g2 is None) or torch.equal(g, g2), n
    assert before["grad_ids"] == after["grad_ids"]
    assert before["modes"] == after["modes"] and before["rg"] == after["rg"]
    assert torch.equal(before["rng"], after["rng"])  # type: ignore[arg-type]
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert not m._backward_hooks and not m._backward_pre_hooks


def test_model_left_exactly_as_it_was() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                        nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    net.eval()
    net[1].train()  # mixed modes are restored per module
    net[5].weight.grad = torch.randn_like(net[5].weight)
    net[0].bias.requires_grad_(False)
    x = torch.randn(4, 3, 8, 8)
    assert_unchanged_after(net, x)
    assert_unchanged_after(net, x, spectrum=True, spectrum_examples=2)
    assert_unchanged_after(net, torch.randn(4, 5, 8, 8))  # forward error: hooks still removed
    rep = audit(net, x)
    w = {w.name: w for w in rep.weights}
    assert w["0.bias"].requires_grad is False and w["0.bias"].grad_norm is not None


def test_bad_inputs_get_clear_errors() -> None:
    net = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(AuditError, match="forward pass failed") as ei:
        audit(net, torch.randn(2, 5))
    assert isinstance(ei.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match="non-finite"):
        audit(net, torch.tensor([[math.nan] * 8]))
    with pytest.raises(ValueError, match="targets were given without loss_fn"):
        audit(net, torch.randn(2, 8), targets=torch.zeros(2))
    with pytest.raises(ValueError, match="Valid options: eval, train"):
        audit(net, torch.randn(2, 8), mode="training")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inputs must be"):
        audit(net, "x")
    with pytest.raises(AuditError, match="loss_fn failed"):
        audit(net, torch.randn(2, 8), targets=torch.zeros(3, dtype=torch.long),
              loss_fn=nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="band must be > 1"):
        AuditThresholds(band=0.5)
    with pytest.raises(ValueError, match="floating-point inputs"):
        audit(nn.Sequential(nn.Embedding(10, 4)), torch.tensor([[1, 2]]), spectrum=True)


def test_nonfinite_activations_are_reported_not_raised() -> None:
    net = mlp(6, 1e15)
    rep = audit(net, x_in())
    assert rep.forward_verdict == "exploding" and rep.verdict == "exploding"
    assert any(r.nonfinite for r in rep.rows)
    json.loads(rep.to_json())  # strict JSON even with infinities


def test_loss_fn_targets_and_kwargs_inputs() -> None:
    class Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.fc = nn.Linear(16, 5)

        def forward(self, ids: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
            return {"logits": self.fc(self.emb(ids)).mean(1) * scale}

    ids = torch.randint(0, 50, (6, 7), generator=torch.Generator().manual_seed(0))
    t = torch.randint(0, 5, (6,), generator=torch.Generator().manual_seed(1))
    rep = audit(Kw(), {"ids": ids}, targets=t, loss_fn=nn.functional.cross_entropy)
    assert rep.input_rms is None and rep.reference_rms == pytest.approx(rep.rows[0].rms)
    assert rep.loss_kind == "cross_entropy" and rep.loss > 0
    assert rep.rows[0].type == "Embedding" and rep.rows[0].ratio == pytest.approx(1.0)


def test_json_round_trip_and_text() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
    rep = audit(net, torch.randn(8, 16), spectrum=True)
    s = rep.to_json()
    back = AuditReport.from_json(s)
    assert back == rep and back.to_json() == s
    assert json.loads(s)["verdict"] == rep.verdict
    md = rep.to_markdown()
    assert "| # | layer |" in md and "healthy band" in md
    text = str(rep)
    assert "verdict: healthy" in text and "rms/ref" in text and "sgd upd" in text


def _is_png(path: object) -> bool:
    with open(path, "rb") as f:  # type: ignore[call-overload]
        head = f.read(8)
        rest = f.read()
    return head == b"\x89PNG\r\n\x1a\n" and len(rest) > 5000 and rest.endswith(
        b"IEND\xaeB`\x82")


def test_plot_writes_png(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    a = audit(mlp(10, "kaiming"), x_in())
    b = audit(mlp(10, 0.01), x_in())
    p1 = tmp_path / "a.png"  # type: ignore[operator]
    a.plot(str(p1), b, labels=["kaiming", "std 0.01"])
    assert _is_png(p1)
    p2 = tmp_path / "b.png"  # type: ignore[operator]
    fig = audit_plot([a, b], str(p2))
    assert _is_png(p2) and len(fig.axes) == 3
    with pytest.raises(ValueError, match="2 reports but 1 labels"):
        audit_plot([a, b], None, labels=["x"])


def test_audit_widths_coordinate_check(tmp_path: object) -> None:
    def factory(init: str | float):  # type: ignore[no-untyped-def]
        def make(w: int) -> nn.Module:
            net = nn.Sequential(nn.Linear(32, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                                nn.Linear(w, w), nn.ReLU())
            for m in net:
                if isinstance(m, nn.Linear):
                    std = math.sqrt(2.0 / m.in_features) if init == "kaiming" else float(init)
                    nn.init.normal_(m.weight, std=std)
                    nn.init.zeros_(m.bias)
            return net
        return make

    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    widths = [32, 64, 128, 256, 512]
    rep = audit_widths(factory("kaiming"), widths, x)
    assert all(r.flat for r in rep.quantity("rms")), rep.to_markdown()
    # Fixed std 0.1 (not scaled with width): hidden pre-activations grow like sqrt(width).
    sp = audit_widths(factory(0.1), widths, x)
    slopes = {r.name: r.slope for r in sp.quantity("rms")}
    assert slopes["0"] == pytest.approx(0.0, abs=0.25)  # fan_in 32 fixed
    assert slopes["2"] == pytest.approx(0.5, abs=0.1) and slopes["4"] == pytest.approx(1.0, abs=0.1)
    assert not any(r.flat for r in sp.quantity("rms") if r.name in ("2", "4"))
    back = WidthAuditReport.from_dict(json.loads(sp.to_json()))
    assert back.to_dict() == sp.to_dict()
    assert "| layer |" in sp.to_markdown()
    with pytest.raises(ValueError, match="exactly one of inputs or inputs_fn"):
        audit_widths(factory("kaiming"), widths)
    pytest.importorskip("matplotlib")
    p = tmp_path / "w.png"  # type: ignore[operator]
    rep.plot(str(p))
    assert _is_png(p)


# -- normalization-aware segments -------------------------------------------------------------

IDS = torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(0))


def _transformers():  # type: ignore[no-untyped-def]
    return pytest.importorskip("transformers")  # skip only these tests when it is missing


def gpt2(seed: int = 0) -> nn.Module:
    transformers = _transformers()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=1000)
    return transformers.GPT2LMHeadModel(cfg)


def test_gpt2_own_init_is_healthy_and_global_scope_false_alarms() -> None:
    model = gpt2()
    rep = audit(model, IDS)
    assert (rep.forward_verdict, rep.backward_verdict) == ("healthy", "healthy"), str(rep)
    # Token ids: no float input, the first segment's reference is the embedding output (0.02).
    assert rep.input_rms is None and rep.reference_rms == pytest.approx(rep.rows[0].rms)
    assert rep.reference_rms == pytest.approx(0.02, rel=0.1)
    norms = [r for r in rep.rows if r.norm]
    assert len(norms) == 9 and all(r.type == "LayerNorm" for r in norms)
    # LayerNorm sets the scale to ~1 (gamma = 1): ~50x the 0.02 residual stream it reads.
    assert all(r.in_rms is not None and r.rms / r.in_rms > 15 for r in norms)
    # Each row after ln_1 lies in the segment it opened; the embedding dropout enters ln_1.
    ln1 = next(r for r in rep.rows if r.name == "transformer.h.0.ln_1")
    c_attn = rep.rows[ln1.index + 1]
    assert c_attn.segment == ln1.index and rep.rows[ln1.index - 1].feeds_norm
    assert c_attn.grad_segment == next(r for r in rep.rows if r.name.endswith("h.0.ln_2")).index
    # The old global rule: LayerNorm rows read ~50x the input, a false "exploding".
    glob = audit(model, IDS, thresholds=AuditThresholds(scope="global"))
    assert glob.forward_verdict == "exploding" and glob.rows[ln1.index].flag == "exploding"
    assert glob.rows[ln1.index].ratio == pytest.approx(rep.rows[ln1.index].global_ratio)
    assert glob.rows[ln1.index].ratio > 30
    assert "seg" in str(rep) and "(norm: resets ref)" in str(rep)


def test_gpt2_with_one_broken_block_is_flagged_at_that_block() -> None:
    model = gpt2()
    with torch.no_grad():
        model.transformer.h[2].mlp.c_fc.weight.mul_(1000.0)
    rep = audit(model, IDS)
    assert rep.forward_verdict == "exploding" and rep.verdict == "exploding"
    first = rep.rows[rep.forward_first]  # type: ignore[index]
    assert first.name == "transformer.h.2.mlp.c_fc"
    # Judged against its own segment (after h.2.ln_2, scale ~1): rms ~ 1000 * 0.02 * sqrt(128).
    assert rep.rows[first.segment].name == "transformer.h.2.ln_2"  # type: ignore[index]
    assert 100 < first.ratio < 1000 and "h.2.mlp.c_fc" in rep.forward_reason


def test_llama_and_bert_own_init_are_healthy() -> None:
    transformers = _transformers()
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, vocab_size=500))
    rep = audit(llama, IDS)
    assert rep.verdict == "healthy", str(rep)
    assert sum(r.norm and r.type == "LlamaRMSNorm" for r in rep.rows) == 5
    rotary = [r for r in rep.rows if r.constant]  # cos/sin tables: no input, no parameter
    assert rotary and all(r.flag == "n/a" and r.grad_norm is None for r in rotary)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(  # BERT-Small widths, 2 layers
        hidden_size=512, num_hidden_layers=2, num_attention_heads=8, intermediate_size=2048,
        vocab_size=500))
    rep = audit(bert, IDS)
    assert rep.verdict == "healthy", str(rep)
    # q, k and v read the same tensor: the small query/key gradients (near-uniform attention
    # at init) do not make the summed gradient vanish.
    q = next(r for r in rep.rows if r.name.endswith("layer.1.attention.self.query"))
    v = next(r for r in rep.rows if r.name.endswith("layer.1.attention.self.value"))
    assert q.shares_input_with is None and v.shares_input_with == q.index
    assert q.grad_ratio is not None and q.grad_ratio < 0.1 and q.grad_flag == "ok"


def bn_mlp(depth: int, std: float, width: int = WIDTH) -> nn.Sequential:
    g = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        with torch.no_grad():
            lin.weight.normal_(0.0, std, generator=g)
            lin.bias.zero_()
        layers += [lin, nn.BatchNorm1d(width), nn.ReLU()]
    return nn.Sequential(*layers)


def test_batchnorm_fixes_tiny_init_in_train_mode_only() -> None:
    net = bn_mlp(30, 0.01)
    rep = audit(net, x_in())
    assert (rep.forward_verdict, rep.backward_verdict) == ("healthy", "healthy"), str(rep)
    lin = [r for r in rep.rows if r.type == "Linear"]
    # Linear gain 0.01 * sqrt(128) * rms(ReLU) ~ 0.08 < 1/10: it enters the next BatchNorm,
    # which re-sets it; backward, BN divides by that 0.08 again (scale invariance).
    assert all(r.feeds_norm and r.flag == "ok" for r in lin)
    assert all(0.03 < r.global_ratio < 0.2 for r in lin[1:])
    # Eval mode: running statistics (mean 0, var 1) make BN an identity, not a reset.
    ev = audit(net, x_in(), mode="eval")
    assert not any(r.norm for r in ev.rows)
    assert ev.forward_verdict == "vanishing" and ev.forward_first is not None
    assert ev.forward_first <= 3


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collector_state_is_restored(enabled: bool) -> None:
    import gc

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        audit(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(3, 4))
        assert gc.isenabled() is enabled
        with pytest.raises(AuditError):
            audit(nn.Linear(4, 4), torch.randn(3, 5))  # the forward fails inside the passes
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_tall_orthogonal_weight_found_by_its_column_norms() -> None:
    torch.manual_seed(0)
    tall, wide = nn.Linear(16, 64, bias=False), nn.Linear(64, 16, bias=False)
    for m in (tall, wide):
        nn.init.orthogonal_(m.weight)
    rand = nn.Linear(16, 64, bias=False)  # default init: column norms spread, not orthogonal
    rep = audit(nn.Sequential(tall, wide, rand), torch.randn(8, 16))
    w = {s.name: s for s in rep.weights}
    assert w["0.weight"].orthogonal and w["1.weight"].orthogonal
    assert w["0.weight"].orth_error is not None and w["0.weight"].orth_error < 1e-4
    assert not w["2.weight"].orthogonal


def test_output_check_losses_match_cross_entropy_over_several_blocks() -> None:
    torch.manual_seed(0)
    classes, n = 3000, 300  # 87 rows per 1 MiB block: four blocks
    head = nn.Linear(16, classes)
    x = torch.randn(n, 16)
    t = torch.randint(0, classes, (n,))
    t[::7] = -100  # ignored positions
    rep = audit(head, x, targets=t, loss_fn=nn.functional.cross_entropy)
    z = head(x).detach().double()
    assert rep.output is not None
    assert rep.output.measured_loss == pytest.approx(
        float(-torch.log_softmax(z, -1).mean()), rel=1e-6)
    assert rep.output.target_loss == pytest.approx(
        float(nn.functional.cross_entropy(z, t, ignore_index=-100)), rel=1e-6)
