"""Whole-model init: signal propagation by activation, recipes, real architectures, guarantees."""

from __future__ import annotations

import copy
import importlib
import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from initwise.policy import Policy, Rule, presets

P = importlib.import_module("initwise.model")

ACTS = {
    "gelu": nn.GELU, "silu": nn.SiLU, "mish": nn.Mish, "tanh": nn.Tanh, "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2), "selu": nn.SELU, "none": nn.Identity,
}  # fmt: skip
UNSTABLE = {"gelu", "silu", "mish"}
WIDTH, DEPTH, BATCH = 512, 24, 128


def _kappa(make: object) -> float:
    """E f(z)^4 / (E f(z)^2)^2 - 1 for z ~ N(0, 1) (Gauss-Hermite, 200 nodes)."""
    x, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    f = make()(torch.from_numpy(x)).numpy()  # type: ignore[operator]
    m2, m4 = (w * f**2).sum(), (w * f**4).sum()
    return float(m4 / m2**2 - 1)


def _mlp(acts: list[str]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a in acts:
        layers += [nn.Linear(WIDTH, WIDTH), ACTS[a]()]
    return nn.Sequential(*layers)


def _second_moments(net: nn.Sequential) -> list[float]:
    x = torch.randn(BATCH, WIDTH, generator=torch.Generator().manual_seed(7))
    out = []
    with torch.no_grad():
        for m in net:
            x = m(x)
            if isinstance(m, nn.Linear):
                out.append(float(x.pow(2).mean()))
    return out


@pytest.mark.parametrize("act", [*ACTS, "mixed"])
def test_auto_keeps_unit_second_moment_through_depth(act: str) -> None:
    acts = ["relu", "tanh", "gelu", "leaky_relu", "silu", "selu"] * 4 if act == "mixed" else [act] * DEPTH
    net = _mlp(acts)
    p = P.init(net, "auto", seed=3)
    assert p.source == "dataflow"
    assert p["0.weight"].gain == 1.0  # first layer: raw data
    q = _second_moments(net)
    # log q_l random-walks: per layer Var[log ratio] = kappa_f / width, plus 2/width from the
    # last layer's chi-square; band = 6 sd around the drift -var/2 (math in docs/model-init.md).
    kappa = max(_kappa(ACTS[a]) for a in set(acts))
    unstable = bool(UNSTABLE & set(acts))
    check = 8 if unstable else DEPTH
    for i, qi in enumerate(q[:check]):
        var = (kappa * i + 2) / WIDTH
        assert abs(math.log(qi) + var / 2) <= 6 * math.sqrt(var), (i, qi)
    has_note = any("unstable fixed point" in n and "lsuv" in n for n in p.notes)
    assert has_note == unstable
    # torch's own defaults, measured beside it: the weights shrink the signal by E[f²]/3 per
    # layer, so it vanishes down to the floor of the U(±1/sqrt(512)) biases (~1/1536 per layer)
    torch.manual_seed(0)
    q_torch = _second_moments(_mlp(acts))
    assert q_torch[-1] < 1e-2


def test_unstable_silu_drifts_as_documented() -> None:
    net = _mlp(["silu"] * DEPTH)
    P.init(net, "auto", seed=0)
    q = _second_moments(net)
    assert q[-1] > 4 or q[-1] < 0.25  # the drift the plan warns about is real


def test_activation_discovery_functional_and_fallbacks() -> None:
    class Fn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.nn.functional.dropout(torch.nn.functional.gelu(self.a(x)).view(-1, 8)))

    p = P.plan(Fn())
    assert p.source == "dataflow" and p["b.weight"].activation == "gelu"

    class Untraceable(Fn):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow defeats fx
                return self.b(self.act(self.a(x)))
            return self.b(self.act(self.a(-x)))

    class Reg(Untraceable):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.SiLU()  # registered after b: module order gets it wrong

    m = Reg()
    p2 = P.plan(m)  # the meta pass takes one branch of `if x.sum() > 0`: the structure is the same
    assert p2.source == "dataflow" and p2["b.weight"].activation == "silu"
    p3 = P.plan(m, example_inputs=torch.ones(2, 8))
    assert p3.source == "dataflow" and p3["b.weight"].activation == "silu"


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.act = nn.SiLU()
        self.up = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(self.act(self.conv(x)))  # (B, 8, 2H, 2W)
        seq = h.flatten(2).transpose(1, 2)
        s, _ = self.lstm(seq)
        a, _ = self.attn(s, s, s)
        s = s + a
        s = s + self.ff(s)
        return self.head(s.mean(1))


def test_mixed_model_plan_and_structured_parts() -> None:
    m = Mixed()
    p = P.init(m, "auto", seed=1, example_inputs=torch.randn(2, 3, 4, 4))
    assert p["up.weight"].activation == "silu"
    assert p["up.weight"].fan_in == pytest.approx(16 * 16 / 4)  # layer-aware transposed fans
    w = m.lstm.weight_hh_l0.detach()
    for blk in w.chunk(4):  # orthogonal per gate block
        torch.testing.assert_close(blk @ blk.T, torch.eye(32), atol=1e-5, rtol=0)
    b = m.lstm.bias_ih_l0.detach().chunk(4)
    assert torch.all(b[1] == 1) and all(torch.all(x == 0) for x in (b[0], b[2], b[3]))
    assert torch.all(m.lstm.bias_hh_l0 == 0)
    assert p["attn.in_proj_weight"].blocks == 3 and p["attn.in_proj_weight"].fan_in == 32
    assert "residual_out" in p["ff.2.weight"].roles and p["ff.2.weight"].activation == "relu"
    assert p["head.weight"].role == "classifier"
    out = m(torch.randn(2, 3, 4, 4))
    assert torch.isfinite(out).all()


def _ks_uniform(x: torch.Tensor, bound: float) -> float:
    return float(stats.kstest(x.detach().double().flatten().numpy(), stats.uniform(-bound, 2 * bound).cdf).pvalue)


def test_torch_preset_matches_torch_constructors() -> None:
    m = nn.ModuleDict({
        "lin": nn.Linear(300, 200), "conv": nn.Conv2d(16, 32, 3, groups=2),
        "tconv": nn.ConvTranspose2d(16, 8, 4, stride=2), "emb": nn.Embedding(500, 40, padding_idx=0),
        "rnn": nn.LSTM(30, 50), "mha": nn.MultiheadAttention(64, 4), "ln": nn.LayerNorm(10),
    })  # fmt: skip
    p = P.init(m, "torch", seed=0)
    for name, fan in (("lin", 300), ("conv", 8 * 9), ("tconv", 8 * 16)):  # torch: tensor fans
        mod = m[name]
        assert _ks_uniform(mod.weight, 1 / math.sqrt(fan)) > 1e-4, name
        assert mod.bias.abs().max() <= 1 / math.sqrt(fan)
        ref = type(mod)(*{"lin": (300, 200), "conv": (16, 32, 3), "tconv": (16, 8, 4)}[name],
                        **({"groups": 2} if name == "conv" else {"stride": 2} if name == "tconv" else {}))
        ks = stats.ks_2samp(mod.weight.detach().flatten().numpy(), ref.weight.detach().flatten().numpy())
        assert ks.pvalue > 1e-4, name  # same distribution as torch's own constructor
    e = m["emb"].weight.detach()
    assert torch.all(e[0] == 0) and stats.kstest(e[1:].flatten().numpy(), "norm").pvalue > 1e-4
    for n, t in m["rnn"].named_parameters():
        assert _ks_uniform(t, 1 / math.sqrt(50)) > 1e-4, n
    assert _ks_uniform(m["mha"].in_proj_weight, math.sqrt(6 / (64 + 192))) > 1e-4
    assert torch.all(m["mha"].in_proj_bias == 0) and torch.all(m["mha"].out_proj.bias == 0)
    assert _ks_uniform(m["mha"].out_proj.weight, 1 / 8) > 1e-4
    assert p["ln.weight"].scheme == "ones"


def test_gpt2_recipe_on_hf_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=1000, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    m = transformers.GPT2LMHeadModel(cfg)
    p = P.init(m, "gpt2", seed=0)
    proj = [e for e in p if e.name.endswith("c_proj.weight")]
    assert len(proj) == 8 and all(e.role == "residual_out" for e in proj)
    target = 0.02 / math.sqrt(2 * 4)
    from tests.conftest import assert_variance

    for e in proj:
        assert e.std == pytest.approx(target)
        assert_variance(m.get_parameter(e.name), target**2, excess_kurtosis=0.0)
    assert_variance(m.transformer.wte.weight, 0.02**2, excess_kurtosis=0.0)
    assert_variance(m.transformer.h[0].mlp.c_fc.weight, 0.02**2, excess_kurtosis=0.0)
    assert p["lm_head.weight"].tied_to == "transformer.wte.weight"
    assert m.lm_head.weight is m.transformer.wte.weight
    assert "tied" in p.table() and p["transformer.h.0.ln_1.weight"].role == "norm"
    assert presets.gpt2(n_layer=16) is not None
    p16 = P.plan(m, presets.gpt2(n_layer=16))
    assert p16["transformer.h.0.attn.c_proj.weight"].std == pytest.approx(0.02 / math.sqrt(32))


def test_hf_llama_and_bert_plans_are_sensible() -> None:
    transformers = pytest.importorskip("transformers")
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=300))  # fmt: skip
    p = P.plan(llama, "auto")
    assert p["model.layers.0.self_attn.o_proj.weight"].role == "residual_out"
    assert p["model.layers.1.mlp.down_proj.weight"].role == "residual_out"
    assert p["model.embed_tokens.weight"].role == "embedding"
    assert p["model.layers.0.input_layernorm.weight"].role == "norm"
    assert p["lm_head.weight"].role == "classifier"
    bert = transformers.BertModel(transformers.BertConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=300))
    pb = P.plan(bert, "gpt2")
    assert pb["encoder.layer.0.output.dense.weight"].role == "residual_out"
    assert pb["encoder.layer.0.attention.output.dense.weight"].role == "residual_out"
    assert pb["pooler.dense.weight"].role != "residual_out"
    assert "encoder.layer.0.attention.self.query.weight" in pb.table()


# ---------------------------------------------------------------- ResNet (no torchvision)


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += idt
        return self.relu(out)


def resnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        Basic(16, 16), Basic(16, 32, 2), Basic(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 10),
    )  # fmt: skip


def test_resnet_fixup_zero_residual_kaiming() -> None:
    m = resnet()
    p = P.init(m, "fixup", seed=0)
    assert [e.name for e in p if e.role == "residual_out"] == ["3.conv2.weight", "4.conv2.weight", "5.conv2.weight"]
    assert p["4.downsample.0.weight"].role == "weight"  # the shortcut is not a branch
    L, mm = 3, 2
    s = L ** (-1 / (2 * mm - 2))
    e = p["4.conv1.weight"]
    assert e.scale == pytest.approx(s) and e.std == pytest.approx(math.sqrt(2 / (16 * 9)) * s)
    from tests.conftest import assert_variance

    assert_variance(m[4].conv1.weight, (math.sqrt(2 / 144) * s) ** 2, excess_kurtosis=0.0)
    assert torch.all(m[5].conv2.weight == 0) and torch.all(m[8].weight == 0)
    m2 = resnet()
    p2 = P.init(m2, "zero_residual", seed=0)
    assert [e.name for e in p2 if e.role == "residual_norm"] == ["3.bn2.weight", "4.bn2.weight", "5.bn2.weight"]
    assert torch.all(m2[3].bn2.weight == 0) and torch.all(m2[3].bn1.weight == 1)
    assert m2[3].conv2.weight.std() > 0
    m3 = resnet()
    P.init(m3, "kaiming", seed=0)
    assert_variance(m3[5].conv2.weight, 2 / (32 * 9), excess_kurtosis=0.0)
    # explicit branches override detection
    p4 = P.plan(resnet(), presets.fixup(branches=["3"]))
    assert [e.name for e in p4 if e.role == "residual_out"] == ["3.conv2.weight"]


def test_rezero_and_dcgan() -> None:
    class RZ(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = nn.Linear(8, 8)
            self.resweight = nn.Parameter(torch.tensor(0.5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.resweight * self.f(x)

    m = RZ()
    p = P.init(m, "rezero")
    assert p["resweight"].role == "gate" and m.resweight.item() == 0.0
    g = nn.Sequential(nn.ConvTranspose2d(8, 4, 4), nn.BatchNorm2d(4), nn.ReLU())
    P.init(g, "dcgan", seed=0)
    from tests.conftest import assert_variance

    assert_variance(g[1].weight.detach() - 1, 0.02**2, excess_kurtosis=0.0) if g[1].weight.numel() > 100 else None
    assert_variance(g[0].weight, 0.02**2, excess_kurtosis=0.0)
    assert abs(float(g[1].weight.detach().mean()) - 1) < 0.1 and torch.all(g[0].bias == 0)


# ---------------------------------------------------------------- guarantees


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_atomic_when_a_scheme_fails_midway() -> None:
    m = _mlp(["relu"] * 5)
    before = _snapshot(m)
    calls = {"n": 0}

    def flaky(t: torch.Tensor, *, fans: object, generator: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("boom on the 3rd parameter")
        return t.fill_(0.5)

    with pytest.raises(ValueError, match="boom"):
        P.init(m, Policy((Rule(flaky, role="weight"), Rule("zeros", role="bias"))))
    after = _snapshot(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # invalid scheme for a shape is caught before any write too
    with pytest.raises(ValueError):
        P.init(m, Policy((Rule("zeros", role="bias"), Rule("eye", role="weight", name="re:^[02]"),
                          Rule("dirac", role="weight"))))
    assert all(torch.equal(before[k], v) for k, v in _snapshot(m).items())


def test_only_with_partially_loaded_state_dict() -> None:
    src = resnet()
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith(("8.", "5."))}
    dst = resnet()
    res = dst.load_state_dict(sd, strict=False)
    loaded = _snapshot(dst)
    p = P.init(dst, "auto", seed=0, only=res.missing_keys)
    assert set(p.initialized()) <= set(res.missing_keys)
    assert "8.weight" in p.initialized() and p["3.conv1.weight"].reason.startswith("not in only")
    for k, v in dst.state_dict().items():
        if k not in res.missing_keys:
            assert torch.equal(v, loaded[k]), k
    p2 = P.plan(dst, only=["5"])  # module prefix
    assert set(p2.initialized()) == {e.name for e in p2 if e.name.startswith("5.") and e.action == "init"}
    p3 = P.plan(dst, only=lambda n: n.endswith("bias"))
    assert all(n.endswith("bias") for n in p3.initialized())


def test_tied_weights_initialized_once() -> None:
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.head = nn.Linear(16, 50, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(x))

    m = LM()
    p = P.init(m, "auto", seed=0)
    assert p["head.weight"].tied_to == "emb.weight" and p["emb.weight"].aliases == ("head.weight",)
    assert p.initialized().count("emb.weight") == 1 and "head.weight" not in p.initialized()
    assert m.head.weight is m.emb.weight


def test_reproducible_and_stable_under_edits() -> None:
    def build(extra: bool, order: int) -> nn.Module:
        torch.manual_seed(order)
        d = {"a": nn.Linear(16, 32), "b": nn.Linear(32, 8)} if order == 0 else {"b": nn.Linear(32, 8), "a": nn.Linear(16, 32)}
        if extra:
            d["c"] = nn.Linear(8, 8)
        return nn.ModuleDict(d)

    ref = build(False, 0)
    P.init(ref, "auto", seed=5)
    for extra, order in ((False, 0), (False, 1), (True, 0), (True, 1)):
        m = build(extra, order)
        torch.manual_seed(1234 + order)
        P.init(m, "auto", seed=5)
        for k in ("a.weight", "b.weight"):
            assert torch.equal(m.get_parameter(k), ref.get_parameter(k)), (extra, order, k)
    other = build(False, 0)
    P.init(other, "auto", seed=6)
    assert not torch.equal(other.get_parameter("a.weight"), ref.get_parameter("a.weight"))


def test_meta_models_plan_and_skip() -> None:
    with torch.device("meta"):
        m = resnet()
    p = P.plan(m, "kaiming")
    e = p["3.conv1.weight"]
    assert e.action == "skip" and e.reason == "meta: skipped" and e.std == pytest.approx(math.sqrt(2 / 144))
    p2 = P.init(m, "kaiming")
    assert p2.applied and not p2.initialized()


def test_plan_json_round_trip_and_diff() -> None:
    m = resnet()
    p = P.plan(m, "auto")
    back = P.Plan.from_json(p.to_json())
    assert back == p and json.loads(p.to_json())["entries"][0]["name"] == "0.weight"
    assert p.diff(back) == []
    d = p.diff(P.plan(m, "fixup"))
    names = {c.name: c for c in d}
    assert "8.weight" in names and "scheme" in names["8.weight"].changes
    assert "8.weight" in str(names["8.weight"]) and "->" in str(names["8.weight"])
    assert "3.bn1.weight" not in names  # unchanged entries are not reported
    cov = p.coverage()
    assert any("keep" in k for k in cov) or all(e.action != "keep" for e in p)


def test_no_warnings_and_nothing_changed_by_plan() -> None:
    m = resnet()
    m.train()
    before = _snapshot(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.plan(m, "auto", example_inputs=torch.randn(2, 3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in _snapshot(m).items()) and m.training
    assert copy.deepcopy(m) is not None


def test_resetting_running_stats_restarts_the_count() -> None:
    """With momentum=None, a stale num_batches_tracked would freeze the fresh statistics."""
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, momentum=None), nn.ReLU())
    net.train()
    for i in range(5):
        net(torch.randn(16, 4, generator=torch.Generator().manual_seed(i)) * 3 + 2)
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm1d) and int(bn.num_batches_tracked) == 5
    P.init(net, "kaiming", only=["0.weight"])  # statistics not selected: count kept
    assert int(bn.num_batches_tracked) == 5
    P.init(net, "kaiming")
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    net(torch.randn(16, 4, generator=torch.Generator().manual_seed(9)))  # the first batch counts fully
    x = net[0](torch.randn(16, 4, generator=torch.Generator().manual_seed(9))).detach()
    assert torch.allclose(bn.running_mean, x.mean(0), atol=1e-6)


class _OnePlusLayerNorm(nn.LayerNorm):
    """A norm that applies ``1 + w`` (Nemotron's ``LayerNorm1P``), built at torch's ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


def test_norm_applied_as_one_plus_w_gets_unit_scale() -> None:
    """A norm scale the forward applies as ``w + c`` is written as (the rule's scale) - c: unit
    scale under ``auto`` whatever the constructor stored (it was left at torch's ones: scale 2,
    every block's output 2x, Nemotron's initial loss ln V + 2.0 instead of + 0.43); the
    ``torch`` preset still writes the stored tensor as torch's constructor does."""
    m = nn.Sequential(nn.Linear(16, 32), _OnePlusLayerNorm(32), nn.Linear(32, 8))
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    p = P.init(m, "auto", seed=0)
    assert p["1.weight"].action == "init" and p["1.weight"].scheme == "constant"
    assert torch.all(m[1].weight == 0.0)
    with torch.no_grad():
        assert m[1](m[0](x)).pow(2).mean().item() == pytest.approx(1.0, rel=1e-3)
    # any rule's value is the applied scale: dcgan-style N(1, 0.02^2) is stored around 0
    P.init(m, Policy([Rule("normal", {"mean": 1.0, "std": 0.02}, role="norm"), Rule("keep")]), seed=0)
    assert m[1].weight.mean().item() == pytest.approx(0.0, abs=6 * 0.02 / math.sqrt(32))
    P.init(m, "torch", seed=0)
    assert torch.all(m[1].weight == 1.0)


def test_nemotron_norms_unit_scale_and_loss_near_ln_v() -> None:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    v = 1000
    m = tf.NemotronForCausalLM(tf.NemotronConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64))  # fmt: skip
    P.init(m, "auto", seed=0)
    ids = torch.randint(0, v, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = m(input_ids=ids, labels=ids).loss.item()
    assert all(torch.all(mod.weight == 0.0) for mod in m.modules() if type(mod).__name__ == "NemotronLayerNorm1P")
    assert abs(loss - math.log(v)) < 1.0, loss  # 8.9 (ln V + 2.0) before


def test_init_warns_before_overwriting_weights_from_pretrained(tmp_path: object) -> None:
    """A checkpoint loaded by transformers' from_pretrained, then init without only=: the call
    overwrites it as asked, with a warning that names the tensors and the way to initialize
    only what the checkpoint lacked; a model built from a config and init(only=...) do not warn."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import initwise
    from initwise import InitwiseWarning

    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=50)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    with pytest.warns(InitwiseWarning, match=r"loaded or initialized by transformers' from_pretrained.*only=missing_keys"):
        initwise.init(loaded, "auto", seed=0)
    assert any(not torch.equal(before[k], v) for k, v in loaded.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InitwiseWarning)
        initwise.init(loaded, "auto", seed=1)  # its checkpoint values are gone: no warning again
        initwise.init(LlamaForCausalLM.from_pretrained(tmp_path), "auto", seed=0, only=[])
        initwise.init(LlamaForCausalLM(cfg), "auto", seed=0)
