"""Reference recipes (issue 13, item 5): ``hf``, ``megatron``, ``olmo2``, ``small_init``,
``modded_nanogpt``, ``deepnet``, and ``initwise plan --diff``.

Each recipe is checked against the numbers of its source (docs/model-init.md, "Reference
recipes") on tiny GPT-2 and LLaMA models built from configs: the measured variance of every
tensor class within 6 standard errors of the documented formula (``sqrt((2 + excess
kurtosis) / n)``), zero-inits exactly zero, truncation bounds respected. ``hf`` is checked for
distributional parity with the model's own ``_init_weights`` (two-sample KS, p > 1e-4, on every
tensor of at least 1000 elements; exact equality for constants) and for bit-reproducibility.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from scipy import stats
from torch import nn

import initwise
from conftest import assert_variance
from initwise.cli import main
from initwise.policy import PRESETS, Policy, Rule, get_policy, presets

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)

RECIPES = ("hf", "megatron", "olmo2", "small_init", "modded_nanogpt", "deepnet")
D, L, V = 64, 4, 256  # width, blocks, vocabulary of the tiny models


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gpt2(n_layer: int = L, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=D, n_head=2, vocab_size=V, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    with _quiet():
        return transformers.GPT2LMHeadModel(cfg)


def llama(n_layer: int = L, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(num_hidden_layers=n_layer, hidden_size=D, intermediate_size=2 * D,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                                   max_position_embeddings=32)
    with _quiet():
        return transformers.LlamaForCausalLM(cfg)


def bert(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=D, intermediate_size=2 * D,
                                  num_attention_heads=2, vocab_size=V, max_position_embeddings=32)
    with _quiet():
        return transformers.BertForMaskedLM(cfg)


def t5(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.T5Config(num_layers=2, num_decoder_layers=2, d_model=D, d_kv=16, d_ff=2 * D,
                                num_heads=4, vocab_size=V)
    with _quiet():
        return transformers.T5ForConditionalGeneration(cfg)


def modernbert(seed: int = 0) -> nn.Module:
    """Its tied decoder is written by the root's ``_init_weights`` with another std than the
    embedding (0.02 / sqrt(2 n_layer) vs 0.02); Hugging Face inits before it ties, so the
    embedding's values are the ones the model keeps."""
    torch.manual_seed(seed)
    cfg = transformers.ModernBertConfig(num_hidden_layers=2, hidden_size=D, intermediate_size=2 * D,
                                        num_attention_heads=4, vocab_size=V, max_position_embeddings=32,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                                        sep_token_id=2, global_attn_every_n_layers=1)
    with _quiet():
        return transformers.ModernBertForMaskedLM(cfg)


MODELS: dict[str, Callable[..., nn.Module]] = {"gpt2": gpt2, "llama": llama, "bert": bert, "t5": t5,
                                               "modernbert": modernbert}


def _init(model: nn.Module, policy: str | Policy, seed: int = 0, **kw: object) -> initwise.Plan:
    with _quiet():
        return initwise.init(model, policy, seed=seed, **kw)  # type: ignore[arg-type]


def _by_role(plan: initwise.Plan, model: nn.Module, role: str) -> list[torch.Tensor]:
    params = dict(model.named_parameters())
    return [params[e.name] for e in plan.entries if e.action == "init" and e.role == role and e.name in params]


# --------------------------------------------------------------------------------------------
# Listing, JSON
# --------------------------------------------------------------------------------------------


def test_every_recipe_is_a_listed_preset() -> None:
    assert set(RECIPES) <= set(PRESETS) and set(RECIPES) <= set(initwise.PRESETS)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schemes", "--json"]) == 0
    listed = {p["name"]: p["summary"] for p in json.loads(out.getvalue())["policies"]}
    for name in RECIPES:
        assert listed[name], name


@pytest.mark.parametrize(
    "policy",
    [*(get_policy(n) for n in RECIPES), presets.small_init(d_model=512, n_layer=12),
     presets.megatron(n_layer=24, std=0.006), presets.deepnet(n_encoder=6, n_decoder=6),
     presets.olmo2(std=0.01)],
    ids=lambda p: p.name,
)
def test_recipes_round_trip_through_json(policy: Policy) -> None:
    back = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert back == policy and back.d_model == policy.d_model and back.describe() == policy.describe()


def test_model_init_and_new_depth_scales_validate() -> None:
    with pytest.raises(ValueError, match="parameter for action 'model_init'"):
        Rule("model_init", {"std": 1.0})
    with pytest.raises(ValueError, match="did you mean 'wang'"):
        Rule("normal", depth_scale="wnag")
    with pytest.raises(ValueError, match="d_model"):
        Policy((Rule("keep"),), d_model=0)
    with pytest.raises(ValueError, match="n_encoder and n_decoder"):
        presets.deepnet(n_encoder=6)


# --------------------------------------------------------------------------------------------
# hf: the model's own init, keyed
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_hf_matches_the_models_own_init_in_distribution(arch: str) -> None:
    ref = MODELS[arch](seed=0)  # the constructor ran HF's initialize_weights (global RNG)
    mine = MODELS[arch](seed=1)
    tied = [id(p) for _, p in mine.named_parameters(remove_duplicate=False)]
    plan = _init(mine, "hf", seed=7)
    assert [id(p) for _, p in mine.named_parameters(remove_duplicate=False)] == tied  # still tied
    assert {e.scheme for e in plan.entries if e.action == "init"} == {"model_init"}
    assert all("keyed_init" in (e.post or "") for e in plan.entries if e.action == "init")
    assert not any(n.startswith("model_init:") for n in plan.notes), plan.notes
    theirs = dict(ref.named_parameters())
    checked = 0
    for name, p in mine.named_parameters():
        a, b = theirs[name].detach().flatten(), p.detach().flatten()
        if bool((a == a[0]).all()):  # a constant (norm 1, bias 0): exactly equal
            assert torch.equal(a, b), name
        elif a.numel() >= 1000:
            pv = stats.ks_2samp(a.double().numpy(), b.double().numpy()).pvalue
            assert pv > 1e-4, f"{arch} {name}: KS p = {pv:.2g}"
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_hf_is_bit_reproducible_whatever_the_global_seed(arch: str) -> None:
    a, b = MODELS[arch](seed=0), MODELS[arch](seed=123)
    torch.manual_seed(5)
    _init(a, "hf", seed=3)
    torch.manual_seed(99)
    torch.randn(17)  # the global stream moved on
    _init(b, "hf", seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = MODELS[arch](seed=0)
    _init(c, "hf", seed=4)
    assert not torch.equal(next(iter(c.parameters())), next(iter(a.parameters())))


def test_hf_values_do_not_depend_on_other_layers_or_construction_order() -> None:
    two, three = llama(n_layer=2), llama(n_layer=3)
    _init(two, "hf", seed=0)
    _init(three, "hf", seed=0)
    big = dict(three.named_parameters())
    for name, p in two.named_parameters():
        assert torch.equal(p, big[name]), name


def test_hf_does_not_depend_on_construction_order() -> None:
    class AB(nn.Module):
        def __init__(self, flip: bool) -> None:
            super().__init__()
            if flip:
                self.b = nn.Conv1d(6, 8, 3)
                self.a = nn.Linear(30, 20)
            else:
                self.a = nn.Linear(30, 20)
                self.b = nn.Conv1d(6, 8, 3)

    x, y = AB(False), AB(True)
    _init(x, "hf", seed=11)
    _init(y, "hf", seed=11)
    assert all(torch.equal(v, y.state_dict()[k]) for k, v in x.state_dict().items())


def test_hf_with_only_writes_the_selection_with_the_full_run_values() -> None:
    full, part = gpt2(), gpt2(seed=3)
    _init(full, "hf", seed=0)
    before = {k: v.clone() for k, v in part.state_dict().items()}
    sel = ["transformer.h.1.mlp.c_proj.weight", "transformer.h.0.attn.c_attn.weight"]
    plan = _init(part, "hf", seed=0, only=sel)
    assert sorted(plan.initialized()) == sorted(sel)
    ref = full.state_dict()
    for k, v in part.state_dict().items():
        assert torch.equal(v, ref[k] if k in sel else before[k]), k
    # c_proj kept GPT-2's depth-scaled std, drawn by the parent GPT2MLP
    assert_variance(ref["transformer.h.1.mlp.c_proj.weight"], (0.02 / math.sqrt(2 * L)) ** 2,
                    excess_kurtosis=0.0)


def test_hf_runs_reset_parameters_of_plain_modules_keyed() -> None:
    net = nn.Sequential(nn.Linear(40, 50), nn.ReLU(), nn.LayerNorm(50), nn.Linear(50, 60))
    _init(net, "hf", seed=2)
    twin = nn.Sequential(nn.Linear(40, 50), nn.ReLU(), nn.LayerNorm(50), nn.Linear(50, 60))
    with initwise.keyed_init(twin, seed=2):
        for m in twin.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    for (n, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b), n
    w = net[3].weight.detach()
    assert w.abs().max() <= 1 / math.sqrt(50)
    assert stats.kstest(w.flatten().double().numpy(), stats.uniform(-50**-0.5, 2 * 50**-0.5).cdf).pvalue > 1e-4


def test_hf_mixed_with_other_rules_and_a_parameter_no_code_writes() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(32, 32)
            self.extra = nn.Parameter(torch.full((32, 32), 3.0))  # no reset_parameters covers it

    net = Block()
    plan = _init(net, Policy((Rule("zeros", role="bias"), Rule("model_init")), name="mix"), seed=0)
    assert torch.all(net.fc.bias == 0) and plan["fc.bias"].scheme == "zeros"
    assert torch.all(net.extra == 3.0)  # nothing wrote it: kept, and the plan says so
    assert any("extra" in n and "wrote none" in n for n in plan.notes)


def test_hf_materialize_of_a_meta_model_equals_init() -> None:
    with torch.device("meta"):
        meta = llama(n_layer=2)
    with _quiet():
        initwise.materialize(meta, "hf", device="cpu", seed=1)
    ref = llama(n_layer=2, seed=8)
    _init(ref, "hf", seed=1)
    want = ref.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in meta.state_dict().items())


def test_hf_failing_model_code_raises_init_error_and_restores_the_rest() -> None:
    class Bad(nn.Linear):
        def reset_parameters(self) -> None:
            if hasattr(self, "armed"):
                raise RuntimeError("boom")
            super().reset_parameters()

    net = nn.Sequential(nn.Linear(8, 8), Bad(8, 8))
    net[1].armed = True
    keep = net[0].weight.detach().clone()
    with pytest.raises(initwise.InitError, match="model_init"):
        _init(net, "hf", seed=0, only=["1.weight"])
    assert torch.equal(net[0].weight, keep)


# --------------------------------------------------------------------------------------------
# The numbers of each recipe on tiny GPT-2 / LLaMA models
# --------------------------------------------------------------------------------------------


def _check_tail(plan: initwise.Plan, model: nn.Module) -> None:
    """Biases 0, norm weights 1, norm biases 0: exactly."""
    for role, value in (("bias", 0.0), ("norm", 1.0), ("norm_bias", 0.0)):
        for t in _by_role(plan, model, role):
            assert torch.all(t == value), role


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("name", ["megatron", "small_init"])
def test_normal_recipes_reproduce_their_stds(make: Callable[..., nn.Module], name: str) -> None:
    model = make()
    plan = _init(model, name, seed=0)
    if name == "megatron":  # Megatron-LM init_method_normal / scaled_init_method_normal
        std, out_std = 0.02, 0.02 / math.sqrt(2 * L)
    else:  # GPT-NeoX small_init / wang_init
        std, out_std = math.sqrt(2 / (5 * D)), 2 / (L * math.sqrt(D))
    outs = _by_role(plan, model, "residual_out")
    assert len(outs) == 2 * L
    for t in outs:
        assert_variance(t, out_std**2, excess_kurtosis=0.0)
    others = [*_by_role(plan, model, "weight"), *_by_role(plan, model, "branch"),
              *_by_role(plan, model, "embedding"), *_by_role(plan, model, "tied_embedding"),
              *_by_role(plan, model, "classifier")]
    assert len(others) >= 2 * L + 1
    for t in others:
        assert_variance(t, std**2, excess_kurtosis=0.0)
    for e in plan.entries:
        if e.action == "init" and e.role == "residual_out":
            assert e.std == pytest.approx(out_std, rel=1e-12)
    _check_tail(plan, model)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_olmo2_is_a_normal_truncated_at_three_sigma(make: Callable[..., nn.Module]) -> None:
    model = make()
    plan = _init(model, "olmo2", seed=0)
    tn = stats.truncnorm(-3.0, 3.0, scale=0.02)
    weights = [t for r in ("weight", "residual_out", "embedding", "classifier") for t in _by_role(plan, model, r)]
    assert len(weights) >= 3 * L
    for t in weights:
        assert t.abs().max() <= 0.06
        assert_variance(t, float(tn.var()), excess_kurtosis=float(tn.stats(moments="k")))
    big = torch.cat([t.detach().flatten() for t in weights]).double().numpy()
    assert stats.kstest(big, tn.cdf).pvalue > 1e-4
    assert all(e.std == pytest.approx(math.sqrt(tn.var()), rel=1e-9) for e in plan.entries
               if e.action == "init" and e.scheme == "trunc_normal")
    _check_tail(plan, model)


def test_modded_nanogpt_zeroes_projections_and_head() -> None:
    model = llama()
    plan = _init(model, "modded_nanogpt", seed=0)
    zeros = [*_by_role(plan, model, "residual_out"), model.lm_head.weight]
    assert len(zeros) == 2 * L + 1 and all(torch.all(t == 0) for t in zeros)
    for e in plan.entries:
        if e.action == "init" and e.role == "weight":
            t = model.get_parameter(e.name)
            bound = math.sqrt(3) * 0.5 / math.sqrt(t.shape[1])
            assert t.abs().max() <= bound
            assert_variance(t, (0.5 / math.sqrt(t.shape[1])) ** 2, excess_kurtosis=-1.2)
    assert_variance(model.model.embed_tokens.weight, 1.0, excess_kurtosis=0.0)
    _check_tail(plan, model)


def test_deepnet_gains() -> None:
    model = llama()
    plan = _init(model, "deepnet", seed=0)
    beta = (8 * L) ** -0.25
    for e in plan.entries:
        if e.action != "init" or ".layers." not in e.name or e.role not in ("weight", "residual_out"):
            continue
        t = model.get_parameter(e.name)
        gain = 1.0 if e.name.rsplit(".", 2)[-2] in ("q_proj", "k_proj") else beta
        target = gain**2 * 2.0 / (t.shape[0] + t.shape[1])
        assert e.std == pytest.approx(math.sqrt(target), rel=1e-9), e.name
        assert_variance(t, target, excess_kurtosis=0.0)


def test_deepnet_encoder_decoder_betas() -> None:
    p = presets.deepnet(n_encoder=6, n_decoder=12)
    scales = [r.scale for r in p.rules if r.name and "coder" in r.name]
    assert scales == pytest.approx([0.87 * (6**4 * 12) ** (-1 / 16), (12 * 12) ** -0.25])


def test_deepnet_on_an_encoder_decoder() -> None:
    model = t5()
    n = m = 2
    plan = _init(model, presets.deepnet(n_encoder=n, n_decoder=m), seed=0)
    b_enc, b_dec = 0.87 * (n**4 * m) ** (-1 / 16), (12 * m) ** -0.25
    xavier = math.sqrt(2.0 / (D + D))  # d_model = n_heads · d_kv = 64
    for name, gain in (("encoder.block.1.layer.0.SelfAttention.v.weight", b_enc),
                       ("encoder.block.1.layer.0.SelfAttention.q.weight", 1.0),
                       ("decoder.block.0.layer.1.EncDecAttention.o.weight", b_dec),
                       ("decoder.block.0.layer.1.EncDecAttention.k.weight", 1.0)):
        assert plan[name].std == pytest.approx(gain * xavier, rel=1e-9), name
        assert_variance(model.get_parameter(name), (gain * xavier) ** 2, excess_kurtosis=0.0)


def test_small_init_takes_an_explicit_width() -> None:
    net = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    plan = _init(net, presets.small_init(d_model=400, n_layer=2), seed=0)
    assert plan["0.weight"].std == pytest.approx(math.sqrt(2 / (5 * 400)))


# --------------------------------------------------------------------------------------------
# initwise plan --diff
# --------------------------------------------------------------------------------------------


def test_plan_diff_table_and_json() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "mlp:depth=3,width=16", "--diff", "gpt2", "megatron"]) == 0
    assert "no parameter changes" in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "mlp:depth=3,width=16", "--diff", "auto", "olmo2"]) == 0
    text = out.getvalue()
    assert "trunc_normal" in text and "variance_scaling" in text
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "mlp:depth=3,width=16", "--diff", "auto", "olmo2", "--json"]) == 0
    data = json.loads(out.getvalue())
    assert data["a"] == "auto" and data["b"] == "olmo2"
    ch = {c["name"]: c for c in data["changes"]}
    some = next(iter(ch.values()))
    assert some["status"] == "changed" and some["changes"]["scheme"] == ["variance_scaling", "trunc_normal"]
