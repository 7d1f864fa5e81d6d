"""What the papers measure, as audit options (issue 18 item 2): correlation propagation between
two inputs against the mean-field maps, the output change after one SGD step (the Fixup
principle), residual-stream growth across depth; on known answers and real architectures.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import initwise
from initwise import audit, theory
from initwise.policy import Policy
from test_audit_intent import ResMLP

X = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))


def _tanh_net(sw2: float, sb2: float, depth: int = 30, width: int = 256) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        nn.init.normal_(lin.weight, std=math.sqrt(sw2 / width))
        nn.init.normal_(lin.bias, std=math.sqrt(sb2))
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# (a) correlation propagation
# --------------------------------------------------------------------------------------------

def test_orthogonal_linear_net_keeps_correlation_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Linear(64, 64, bias=False) for _ in range(20)])
    for m in net:
        nn.init.orthogonal_(m.weight)
    rep = audit(net, torch.randn(32, 64), correlation=0.3)
    c = rep.correlation
    assert c is not None and c.plain and c.pairs == 32 and c.pairing == "c0=0.3"
    assert c.input_cosine == pytest.approx(0.3, abs=1e-9)  # the partners are built exactly
    assert len(c.rows) == 20
    for r in c.rows:  # an orthogonal map preserves inner products: float32 round-off only
        assert r.cosine == pytest.approx(0.3, abs=1e-5)
        assert r.theory == pytest.approx(0.3, abs=1e-9)


@pytest.mark.parametrize(("sw2", "phase"), [(0.5, "ordered"), (4.0, "chaotic")])
def test_tanh_correlation_follows_the_mean_field_map(sw2: float, phase: str) -> None:
    """Width 256, 64 pairs: measured vs the c-map iterated from the measured σ_w², σ_b².
    Ordered: every pair converges to c* = 1; chaotic: to c* < 1 (Poole et al. 2016, Fig. 2).
    The finite-width deviation of the mean-field maps is O(1/N) per layer; measured at most
    0.03 here (0.05 at the critical point, where c converges slowest), the bound is 0.05."""
    net = _tanh_net(sw2, 0.05)
    rep = audit(net, torch.randn(64, 256, generator=torch.Generator().manual_seed(3)),
                correlation=0.5)
    c = rep.correlation
    assert c is not None and c.plain
    lin = [r for r in c.rows if r.type == "Linear"]
    assert len(lin) == 30 and all(r.theory is not None for r in lin)
    assert max(abs(r.cosine - r.theory) for r in lin if r.theory is not None) < 0.05
    mf = theory.mean_field("tanh", sw2, 0.05)
    assert mf.phase == phase
    assert lin[-1].cosine == pytest.approx(mf.c_star, abs=0.05)
    if phase == "ordered":
        assert lin[-1].cosine > 0.999
    else:
        assert lin[-1].cosine < 0.3
    assert all(r.theory is None for r in c.rows if r.type == "Tanh")


def test_correlation_on_real_architectures_and_round_trip() -> None:
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    cfg = tr.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=128, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    m = tr.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(1))
    rep = audit(m, ids, correlation=True)  # ids: pairs of the batch
    c = rep.correlation
    assert c is not None and not c.plain and c.pairing == "batch" and c.pairs == 2
    assert c.input_cosine is None and all(r.theory is None for r in c.rows)
    assert all(-1.0 <= r.cosine <= 1.0 for r in c.rows)
    assert {"transformer.h.0.attn.c_attn", "lm_head"} <= {r.name for r in c.rows}
    back = initwise.AuditReport.from_json(rep.to_json())
    assert back.correlation == c
    assert "correlation of two inputs" in str(rep)
    with pytest.raises(ValueError, match="single floating-point input"):
        audit(m, ids, correlation=0.5)
    with pytest.raises(ValueError, match="correlation must be"):
        audit(m, ids, correlation=2.0)
    with pytest.raises(ValueError, match="at least 2 examples"):
        audit(m, ids[:1], correlation=True)


# --------------------------------------------------------------------------------------------
# (b) one SGD step
# --------------------------------------------------------------------------------------------

def test_one_step_is_exact_on_a_linear_layer_and_restores_the_model() -> None:
    """y = xWᵀ + b, L = Σ y⊙R: one step gives Δy = −lr (x xᵀ R + 1 1ᵀ R) exactly."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 4).double()
    x = torch.randn(16, 8, dtype=torch.float64)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    rng = torch.get_rng_state()
    rep = audit(lin, x, step_lr=0.05, seed=7)
    o = rep.one_step
    assert o is not None
    r = torch.randn((16, 4), generator=torch.Generator().manual_seed(7)).double()
    delta = -0.05 * (x @ x.T @ r + torch.ones(16, 16, dtype=torch.float64) @ r)
    y = lin(x).detach()
    assert o.change_rms == pytest.approx(float(delta.pow(2).mean().sqrt()), rel=1e-9)
    assert o.relative_change == pytest.approx(float(delta.norm() / y.norm()), rel=1e-9)
    assert o.loss_after == pytest.approx(float(((y + delta) * r).sum()), rel=1e-9)
    assert all(torch.equal(before[k], v) for k, v in lin.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_one_step_fixup_principle_change_independent_of_depth() -> None:
    """Fixup's Δf after one SGD step is Θ(η) whatever the depth; the default init's grows
    with depth (measured: 0.55, 2.1, 1.8e5 at 4, 16, 64 blocks, lr 0.01)."""
    change: dict[tuple[str, int], float] = {}
    for depth in (8, 64):
        for pol in ("torch", "fixup"):
            torch.manual_seed(0)
            m = ResMLP(depth)
            if pol == "fixup":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    initwise.init(m, "fixup", example_inputs=X, seed=0)
            state = {k: v.clone() for k, v in m.state_dict().items()}
            o = audit(m, X, step_lr=0.01).one_step
            assert o is not None
            assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
            change[pol, depth] = o.change_rms
            if pol == "fixup":
                assert o.relative_change is None  # zero head: f(θ) = 0
    assert change["fixup", 64] == pytest.approx(change["fixup", 8], rel=0.1)
    assert change["torch", 64] > 100 * change["torch", 8]


def test_one_step_leaves_frozen_parameters_and_dropout_consistent() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))
    m[0].weight.requires_grad_(False)
    rep = audit(m, X, step_lr=1e-12)  # a tiny step: same dropout mask, so a tiny change
    o = rep.one_step
    assert o is not None and o.relative_change is not None and o.relative_change < 1e-9
    assert not m[0].weight.requires_grad
    with pytest.raises(ValueError, match="step_lr"):
        audit(m, X, step_lr=-1.0)


# --------------------------------------------------------------------------------------------
# (c) residual-stream growth
# --------------------------------------------------------------------------------------------

def _gpt2(n_layer: int, policy: object) -> tuple[float, float, int]:
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    cfg = tr.GPT2Config(n_layer=n_layer, n_embd=64, n_head=4, vocab_size=128, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    m = tr.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(1))
    initwise.init(m, policy, example_inputs=ids, seed=0)
    g = audit(m, ids, residual=True).residual_growth
    assert g is not None and len(g.sums) == 2 * n_layer
    assert g.sums[0].writers == ["transformer.h.0.attn.c_proj"]
    assert g.sums[-1].writers == [f"transformer.h.{n_layer - 1}.mlp.c_proj"]
    return g.total_growth, g.depth_exponent, len(g.sums)


@pytest.mark.slow
def test_gpt2_scaling_bounds_residual_growth_and_without_it_grows_like_sqrt_depth() -> None:
    """Measured (d 64, 4x32 tokens): with 1/√(2L) on the residual writers the stream grows
    1.33-1.34x over depth at 2, 8 and 32 layers; with 0.02 on every writer 2.1x, 3.8x, 8.3x
    (depth exponent 0.44-0.50: the variance grows linearly in depth)."""
    gpt2 = initwise.presets.gpt2()
    flat = Policy(gpt2.rules[1:], name="gpt2_unscaled")  # the same without the depth scale
    scaled = {n: _gpt2(n, gpt2) for n in (2, 16)}
    unscaled = {n: _gpt2(n, flat) for n in (2, 16)}
    assert scaled[16][0] == pytest.approx(scaled[2][0], rel=0.1)
    assert scaled[16][1] < 0.15
    assert unscaled[16][0] > 2 * unscaled[2][0]  # √8 = 2.8 expected
    assert 0.35 < unscaled[16][1] < 0.6


def test_residual_sums_of_llama_and_a_resnet_cnn() -> None:
    tr = pytest.importorskip("transformers")
    tr.logging.set_verbosity_error()
    cfg = tr.LlamaConfig(num_hidden_layers=3, hidden_size=64, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    m = tr.LlamaForCausalLM(cfg)
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    rep = audit(m, ids, residual=True)
    g = rep.residual_growth
    assert g is not None and g.source == "dataflow"
    assert [s.writers[0].rsplit(".", 2)[-2] for s in g.sums] == ["self_attn", "mlp"] * 3
    assert g.initial_rms == pytest.approx(
        float(m.model.embed_tokens(ids).double().pow(2).mean().sqrt()), rel=1e-6)
    assert all(s.ratio == pytest.approx(s.rms / p, rel=1e-9)
               for p, s in zip([g.initial_rms] + [s.rms for s in g.sums], g.sums, strict=False))
    assert "residual stream" in str(rep)
    assert initwise.AuditReport.from_json(rep.to_json()).residual_growth == g

    class Blk(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = nn.Sequential(*[Blk(8) for _ in range(4)])
            self.fc = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    torch.manual_seed(0)
    g = audit(ResNet(), torch.randn(8, 3, 16, 16), residual=True).residual_growth
    assert g is not None
    assert [s.writers for s in g.sums] == [[f"blocks.{i}.bn2"] for i in range(4)]
    # each sum adds a unit-variance BatchNorm output to the stream: it grows
    assert all(s.ratio > 1 for s in g.sums)


def test_residual_growth_of_a_plain_net_finds_no_sum() -> None:
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    g = audit(net, X, residual=True).residual_growth
    assert g is not None and g.sums == [] and "no residual writer" in g.note


def test_plot_probes(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    import pathlib
    torch.manual_seed(0)
    a = audit(_tanh_net(0.5, 0.05, depth=6, width=64), torch.randn(16, 64), correlation=0.5)
    torch.manual_seed(0)
    b = audit(ResMLP(6), X, correlation=True, residual=True)
    out = pathlib.Path(str(tmp_path)) / "probes.png"
    fig = a.plot_probes(str(out), b, labels=["tanh", "resmlp"])
    assert out.stat().st_size > 0 and len(fig.get_axes()) == 2
    labels = fig.get_axes()[0].get_legend_handles_labels()[1]
    assert any("mean-field theory" in t for t in labels)
    with pytest.raises(ValueError, match="no report has correlation"):
        audit(ResMLP(2), X).plot_probes()
