"""coord_check: the coordinate check of Tensor Programs V (issue 16).

A hand-written muP MLP (the abc-equivalent form with one global Adam learning rate: hidden and
readout weights carry a forward multiplier ``base/width``, so Adam's sign-like update moves
them by ``lr * base/width``) is flat; the same MLP in the standard parametrization grows. These
models do not use ``initwise.parametrize``, so they check the measurement itself.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

import initwise
from initwise import CoordCheckReport, audit_widths, coord_check


class _MuLinear(nn.Module):
    """``y = x (mult * w)^T + b``: the multiplier is part of the forward, not of the weight."""

    def __init__(self, fan_in: int, fan_out: int, mult: float, std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) * std)
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.mult = mult

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight * self.mult, self.bias)


def hand_mup_mlp(w: int, base: int = 64) -> nn.Module:
    """40 -> w -> w -> w -> 10 ReLU MLP in muP for Adam with one global lr (equal to SP at base).

    Effective weights: input std 1/sqrt(40), update O(lr); hidden std 1/sqrt(w), update
    O(lr/r); readout std 1/(sqrt(base) r), update O(lr/r), with r = w/base.
    """
    r = w / base
    return nn.Sequential(_MuLinear(40, w, 1.0, 40**-0.5), nn.ReLU(),
                         _MuLinear(w, w, 1 / r, r * w**-0.5), nn.ReLU(),
                         _MuLinear(w, w, 1 / r, r * w**-0.5), nn.ReLU(),
                         _MuLinear(w, 10, 1 / r, base**-0.5))


def sp_mlp(w: int) -> nn.Module:
    return nn.Sequential(nn.Linear(40, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                         nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


WIDTHS = [64, 128, 256, 512]


def test_hand_mup_is_flat_and_sp_grows() -> None:
    x, y = _batch()
    mup = coord_check(hand_mup_mlp, WIDTHS, x, targets=y, parametrization=None, steps=3)
    sp = coord_check(sp_mlp, WIDTHS, x, targets=y, parametrization=None, steps=3)
    assert mup.layers == ["0", "1", "2", "3", "4", "5", "6"]
    assert mup.types["0"] == "_MuLinear" and sp.types["3"] == "ReLU"
    for name in mup.layers:
        assert mup.verdict(name) == "flat", mup.table()
    assert mup.ok
    # SP under Adam: the hidden pre-activation grows with width once the weights move (each
    # step changes every one of the w inputs' weights by about lr, coherently).
    assert sp.verdict("2") == "grows" and not sp.ok
    assert sp.row("2", 3).slope > 0.5 and sp.row("2", 3).ratio > 2.5, sp.table()
    # At init (step 0) both are flat in the hidden layers: the difference is training.
    assert abs(sp.row("2", 0).slope) < 0.1 and abs(mup.row("2", 0).slope) < 0.2
    # muP's readout vanishes at init (1/sqrt(width)); step 0 is not judged.
    assert mup.row("6", 0).slope == pytest.approx(-0.5, abs=0.25)
    assert "grows" in sp.table() and "slope" in sp.table()


def test_measurement_is_mean_abs_of_the_module_output() -> None:
    x, y = _batch(16)
    rep = coord_check(sp_mlp, [16, 32], x, targets=y, parametrization=None, steps=1)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = sp_mlp(32)
    # step 0: the model as built with seed 0, before any update
    h = net[0](x).detach()
    assert rep.measurement(32).sizes["0"][0] == pytest.approx(float(h.abs().mean()), rel=1e-6)
    assert rep.measurement(32).sizes["1"][0] == pytest.approx(float(h.relu().abs().mean()),
                                                              rel=1e-6)
    # step 1: after one Adam step on the same batch
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    with torch.no_grad():
        out = net(x)
    assert rep.measurement(32).sizes["6"][1] == pytest.approx(float(out.abs().mean()), rel=1e-5)
    assert rep.measurement(32).loss[0] > rep.measurement(32).loss[1]
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched


def test_json_round_trip_and_plot(tmp_path: object) -> None:
    x, y = _batch(16)
    seen: list[initwise.CoordProgress] = []
    rep = coord_check(hand_mup_mlp, [32, 64, 128], x, targets=y, parametrization=None, steps=2,
                      progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3] and seen[-1].total == 3 and seen[-1].width == 128
    back = CoordCheckReport.from_json(rep.to_json())
    assert back.to_dict() == rep.to_dict()
    assert back.verdicts() == rep.verdicts()
    assert json.loads(rep.to_json())["rows"][0]["layer"] == "0"
    pytest.importorskip("matplotlib")
    p = tmp_path / "coord.png"  # type: ignore[operator]
    fig = rep.plot(str(p), layers=["0", "2", "6"])
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == ["t = 0", "t = 1", "t = 2"]
    assert len(visible[0].get_lines()) == 3 and visible[0].get_xscale() == "log"


def test_depth_sweep() -> None:
    x, y = _batch(16)

    def factory(w: int, depth: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(40, w), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(w, w), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(w, 10))

    rep = coord_check(factory, [16, 32], x, targets=y, parametrization=None, steps=1,
                      depths=[1, 2, 4])
    assert {(m.width, m.depth) for m in rep.measurements} == {
        (w, d) for w in (16, 32) for d in (1, 2, 4)}
    # Module "0" is the same first layer at every depth (same seed): at init its output does
    # not depend on depth at all.
    r0 = rep.row("0", 0, axis="depth", at=32)
    assert r0.sizes == [1, 2, 4] and r0.slope == pytest.approx(0.0, abs=1e-9)
    assert "0" in rep.verdicts(axis="depth")
    # Width rows exist per depth; a layer present only in deeper models has no depth row.
    assert rep.row("2", 1, at=4).axis == "width"
    assert not [r for r in rep.rows if r.layer == "6" and r.axis == "depth"]


def test_seeds_average_the_runs() -> None:
    """seeds=N: each width's sizes and losses are the means of the N single-seed runs."""
    x, y = _batch(16)

    def factory(w: int) -> nn.Module:
        return nn.Sequential(nn.Linear(40, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))

    runs = [coord_check(factory, [16, 64], x, targets=y, steps=2, seed=s) for s in (3, 4)]
    both = coord_check(factory, [16, 64], x, targets=y, steps=2, seed=3, seeds=2)
    assert both.seeds == 2 and "mean of 2 seeds" in both.table()
    for i, m in enumerate(both.measurements):
        for name, vals in m.sizes.items():
            want = [(a + b) / 2 for a, b in zip(runs[0].measurements[i].sizes[name],
                                                runs[1].measurements[i].sizes[name], strict=True)]
            assert vals == pytest.approx(want, rel=1e-12)
        assert m.loss == pytest.approx([(a + b) / 2 for a, b in zip(
            runs[0].measurements[i].loss, runs[1].measurements[i].loss, strict=True)], rel=1e-12)
    again = type(both).from_json(both.to_json())
    assert again.seeds == 2 and again.rows == both.rows
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        coord_check(factory, [16, 64], x, targets=y, steps=1, seeds=0)


def test_bad_arguments() -> None:
    x, y = _batch(8)
    with pytest.raises(ValueError, match="at least two widths"):
        coord_check(sp_mlp, [64], x, targets=y, parametrization=None)
    with pytest.raises(ValueError, match="increasing"):
        coord_check(sp_mlp, [128, 64], x, targets=y, parametrization=None)
    with pytest.raises(ValueError, match="adamw"):
        coord_check(sp_mlp, [8, 16], x, targets=y, parametrization=None,
                    optimizer="adamax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr"):
        coord_check(sp_mlp, [8, 16], x, targets=y, parametrization=None, lr=-1.0)
    with pytest.raises(ValueError, match="steps"):
        coord_check(sp_mlp, [8, 16], x, targets=y, parametrization=None, steps=0)
    with pytest.raises(ValueError, match=r"targets= .* or loss="):
        coord_check(sp_mlp, [8, 16], x, parametrization=None)
    rep = coord_check(sp_mlp, [8, 16], x, targets=y, parametrization=None, steps=1)
    with pytest.raises(ValueError, match="layer"):
        rep.verdict("nope")
    # a custom loss without targets
    got = coord_check(sp_mlp, [8, 16], x, parametrization=None, steps=1,
                      loss=lambda out: out.pow(2).mean())
    assert got.measurement(8).loss[0] > 0


def test_diverged_run_is_unknown() -> None:
    x, y = _batch(8)
    rep = coord_check(sp_mlp, [8, 16], x * 1e30, targets=y, parametrization=None, steps=2,
                      lr=1e30)
    assert any(m.diverged for m in rep.measurements)
    assert "unknown" in rep.verdicts().values()
    assert CoordCheckReport.from_json(rep.to_json()).to_dict() == rep.to_dict()


def test_audit_widths_is_not_the_mup_coordinate_check() -> None:
    """audit_widths measures at init and sees no learning rate: a correct muP model's gradients
    shrink like 1/width on purpose, which it reports as 'not flat' (its docs say so and point
    to coord_check, which judges the same model flat)."""
    x, y = _batch()
    aw = audit_widths(hand_mup_mlp, WIDTHS, x, loss_fn=nn.functional.cross_entropy, targets=y)
    rms = {r.name: r for r in aw.quantity("rms")}
    assert all(rms[n].flat for n in ("0", "2", "4")), aw.to_markdown()
    grads = [r for r in aw.quantity("grad_rms") if r.name in ("0", "2", "4")]
    assert grads and all(not r.flat and r.slope == pytest.approx(-1.0, abs=0.1) for r in grads)
    assert not any(r.flat for r in aw.quantity("sgd_update"))
    assert "coord_check" in (audit_widths.__doc__ or "")
    cc = coord_check(hand_mup_mlp, WIDTHS, x, targets=y, parametrization=None, steps=2)
    assert all(cc.verdict(n) == "flat" for n in ("0", "2", "4"))


def test_gpt2_from_config() -> None:
    transformers = pytest.importorskip("transformers")

    def factory(w: int) -> nn.Module:
        cfg = transformers.GPT2Config(n_layer=2, n_embd=w, n_head=4, vocab_size=128,
                                      n_positions=32, attn_pdrop=0.0, embd_pdrop=0.0,
                                      resid_pdrop=0.0)
        return transformers.GPT2LMHeadModel(cfg)

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    rep = coord_check(factory, [32, 64], {"input_ids": ids, "labels": ids},
                      parametrization=None, steps=1)
    assert "transformer.h.0.mlp.c_fc" in rep.layers and "lm_head" in rep.layers
    assert all(math.isfinite(v) for m in rep.measurements for v in m.loss)
    assert rep.measurement(32).loss[1] < rep.measurement(32).loss[0]
    # Through initwise.parametrize: muP at the base width is SP, above it differs.
    kw: dict[str, Any] = {"steps": 1}
    mup = coord_check(factory, [32, 64], {"input_ids": ids, "labels": ids},
                      parametrization="mup", **kw)
    sp = coord_check(factory, [32, 64], {"input_ids": ids, "labels": ids},
                     parametrization="sp", **kw)
    assert mup.measurement(32).loss == sp.measurement(32).loss
    assert mup.measurement(64).loss[1] != sp.measurement(64).loss[1]


# ----------------------------------------------------------------------------- with parametrize


def test_parametrized_mup_is_flat_and_sp_grows_fast() -> None:
    """Through initwise.parametrize: the same verdicts on a small width range (fast tier)."""
    x, y = _batch()
    mup = coord_check(sp_mlp, WIDTHS, x, targets=y, parametrization="mup", steps=3)
    sp = coord_check(sp_mlp, WIDTHS, x, targets=y, parametrization="sp", steps=3)
    assert mup.parametrization == "mup" and mup.base_width == 64
    assert mup.ok, mup.table()
    assert sp.verdict("2") == "grows" and sp.verdict("6") == "grows", sp.table()
    # At the base width muP is SP: the same weights, the same updates, the same sizes.
    assert mup.measurement(64).sizes == sp.measurement(64).sizes
    assert mup.measurement(64).loss == sp.measurement(64).loss


@pytest.mark.slow
def test_tensor_programs_v_figures() -> None:
    """The issue's measured claims: MLP 40 -> w -> w -> w -> 10 (ReLU), widths 64..2048, Adam lr
    0.01, 4 steps, one fixed batch of 64 Gaussian inputs with random labels (seed 0).

    Measured here (docs/coord_check.md): SP layer-2 pre-activation 12.0x from width 64 to 2048
    at step 4 (slope 0.77); SP output 245x at step 1, 63x at step 2, 19x at step 4; muP hidden
    layers 0.88x-1.14x over steps 1-4 (|slope| <= 0.05) and output 0.72x-0.88x.
    """
    x, y = _batch()
    widths = [64, 128, 256, 512, 1024, 2048]
    sp = coord_check(sp_mlp, widths, x, targets=y, parametrization="sp", steps=4, lr=0.01)
    mup = coord_check(sp_mlp, widths, x, targets=y, parametrization="mup", steps=4, lr=0.01)
    r2 = sp.row("2", 4)
    assert 8.0 < r2.ratio < 20.0 and 0.6 < r2.slope < 0.9, sp.table()
    # The SP output blows up with the first update and stays well above 2x (it falls back
    # as the large-width network's ReLUs die; how far depends on the batch: 7x-83x at step 4
    # over the batches and seeds we tried).
    assert sp.row("6", 1).ratio > 100.0
    assert all(sp.row("6", t).ratio > 5.0 for t in range(1, 5))
    hidden = [n for n in mup.layers if n != "6"]
    for t in range(1, 5):
        for n in hidden:
            r = mup.row(n, t)
            assert 0.7 < r.ratio < 1.4 and abs(r.slope) < 0.15, mup.table(step=t)
        out = mup.row("6", t)
        assert 0.5 < out.ratio < 2.0, mup.table(step=t)
    assert mup.ok and not sp.ok


@pytest.mark.slow
def test_depth_check_completep_flat_mup_grows() -> None:
    """Residual MLP with BatchNorm (compare's resmlp), width 256, 2, 8 and 32 blocks, Adam lr
    0.01: under muP the residual stream after the last block and the output grow with depth
    (about sqrt(L): measured slopes 0.53-0.56 and 0.48-0.50 at steps 0-3, from 2 to 32 blocks;
    means of 3 seeds); under CompleteP (branches times L_base/L) they stay within |slope| < 0.2
    (measured -0.19..-0.15 and -0.19..-0.04). The branch output itself shrinks
    like 1/L under CompleteP, by design (slope -1.00)."""
    from initwise.compare.models import build_model

    def factory(w: int, depth: int) -> nn.Module:
        return build_model("resmlp", (40,), 10, depth=depth, width=w, norm="batch")

    x, y = _batch()
    # means of 3 seeds: with 2, muP's output at depth 32 read a width slope of 0.226 at step 3
    # with 2 torch threads (0.19 with 1): one seed's draws decide a borderline row
    kw: dict[str, Any] = {"targets": y, "depths": [2, 8, 32], "steps": 3, "seeds": 3}
    mup = coord_check(factory, [64, 256], x, parametrization="mup", **kw)
    cp = coord_check(factory, [64, 256], x, parametrization="completep", **kw)
    assert "blocks" in mup.layers and "blocks.0" in mup.layers  # containers are measured
    for layer in ("blocks", "fc"):
        m, c = mup.slopes(layer, axis="depth", at=256), cp.slopes(layer, axis="depth", at=256)
        assert all(s > 0.35 for s in m[1:]), m
        assert all(abs(s) < 0.2 for s in c[1:]), c
    assert mup.verdict("fc", axis="depth") == "grows"
    assert cp.row("blocks.0.bn2", 1, axis="depth").slope == pytest.approx(-1.0, abs=0.05)
    assert mup.ok and cp.ok  # both are flat in width at every depth


def test_cli(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from initwise import cli

    args = ["coord-check", "mlp:depth=3", "--input-shape", "40", "--batch", "32",
            "--widths", "16,32,64", "--steps", "2"]
    assert cli.main([*args, "--parametrization", "sp", "--json"]) == 0
    got = CoordCheckReport.from_json(capsys.readouterr().out)
    assert got.parametrization == "sp" and got.widths == [16, 32, 64] and got.steps == 2
    assert got.layers[:3] == ["0", "1", "2"]  # Flatten, Linear, ReLU of compare's mlp
    png = tmp_path / "c.png"  # type: ignore[operator]
    code = cli.main([*args, "--parametrization", "none", "--plot", str(png), "--strict"])
    out = capsys.readouterr()
    assert code == 1 and "grows" in out.out and "worst" in out.out  # SP fails --strict
    assert "initwise coord-check: 3/3 models" in out.err  # progress off a terminal
    assert png.exists()
    assert cli.main([*args, "--parametrization", "mu-p"]) == 2
    assert "completep" in capsys.readouterr().err


def test_compiled_and_wrapped_models_measure_like_eager() -> None:
    x, y = _batch(16)
    kw: dict[str, Any] = {"targets": y, "parametrization": "mup", "steps": 2}
    eager = coord_check(sp_mlp, [32, 64], x, **kw)
    for wrap in (torch.compile, nn.DataParallel):
        got = coord_check(lambda w, wrap=wrap: wrap(sp_mlp(w)), [32, 64], x, **kw)
        assert got.layers == eager.layers  # no _orig_mod. / module. prefix
        assert [m.sizes for m in got.measurements] == [m.sizes for m in eager.measurements]


@pytest.mark.slow
def test_llama_from_config_mup_flat_except_by_design() -> None:
    """HF LLaMA (2 layers, GQA, RMSNorm, widths 32..128, Adam lr 0.01, 3 steps). Under muP every
    layer is flat but two, both by design: the query projections carry the 1/d attention
    multiplier sqrt(d_base/d) on their output (slope -1/2 at init), and the readout's logits
    start at 1/sqrt(width) and become O(1) only as Adam's updates accumulate (measured at
    widths 32..256: slope -0.51 at init, -0.38 after 3 steps, -0.25 after 6). Under SP the MLP's down projection grows
    (measured slope 0.29 after 2 steps)."""
    transformers = pytest.importorskip("transformers")

    def factory(w: int) -> nn.Module:
        cfg = transformers.LlamaConfig(hidden_size=w, intermediate_size=2 * w,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, vocab_size=128,
                                       max_position_embeddings=32)
        return transformers.LlamaForCausalLM(cfg)

    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "labels": ids}
    # means of 3 seeds: with one seed, finite-width noise at widths 32..128 can tip a flat
    # layer over the 0.2 slope (seed 0: layer 1's down projection read 0.21, o_proj -0.23)
    mup = coord_check(factory, [32, 64, 128], batch, parametrization="mup", steps=3, seeds=3)
    sp = coord_check(factory, [32, 64, 128], batch, parametrization="sp", steps=3, seeds=3)
    odd = {k for k, v in mup.verdicts().items() if v != "flat"}
    assert odd == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                   "lm_head"}, mup.table()
    assert mup.row("model.layers.0.self_attn.q_proj", 0).slope == pytest.approx(-0.5, abs=0.1)
    assert mup.row("lm_head", 0).slope < mup.row("lm_head", 3).slope < 0
    assert sp.verdict("model.layers.1.mlp.down_proj") == "grows", sp.table()


def test_coord_check_of_a_model_whose_forward_takes_labels() -> None:
    """A forward that takes labels and returns an output object with the loss (as Hugging Face
    models do): the batch is the parametrization's example inputs, so μP's meta trace runs
    (before: 'could not be traced on meta ... pass example_inputs=')."""

    class Out:
        def __init__(self, logits: torch.Tensor, loss: torch.Tensor) -> None:
            self.logits, self.loss = logits, loss

    class Net(nn.Module):
        def __init__(self, w: int) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, w), nn.Linear(w, 3)

        def forward(self, x: torch.Tensor, labels: torch.Tensor) -> Out:
            o = self.b(torch.relu(self.a(x)))
            return Out(o, nn.functional.cross_entropy(o, labels))

    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(8, 4, generator=g), "labels": torch.randint(0, 3, (8,), generator=g)}
    rep = initwise.coord_check(Net, [16, 32], batch, steps=2, parametrization="mup",
                               loss=lambda out: out.loss)
    assert rep.widths == [16, 32]
