"""Activations inside feed-forward blocks that torch.fx keeps opaque or hooks cannot see."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initwise


def test_torch_transformer_layer_linear2_gets_its_activation_gain() -> None:
    for act, name in [("gelu", "gelu"), ("relu", "relu")]:
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, activation=act)
        model = nn.Sequential(nn.Linear(8, 32), layer, nn.Linear(32, 3))
        p = initwise.plan(model, "auto")
        assert p["1.linear2.weight"].activation == name
        assert p["1.linear2.weight"].gain == pytest.approx(initwise.gain(name))
        assert p["1.linear1.weight"].gain == pytest.approx(1.0)


def test_structure_rule_overrides_wrong_registration_order() -> None:
    class MLP(nn.Module):  # registers act after both layers, like Hugging Face's GPT2MLP
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(16, 64)
            self.fc2 = nn.Linear(64, 16)
            self.act = nn.SiLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x[torch.nonzero(x.abs().sum(-1) >= 0).squeeze(-1)]  # data-dependent shape: no meta pass
            if x.sum() > 0:  # data-dependent control flow: not traceable by torch.fx
                return self.fc2(self.act(self.fc1(x)))
            return self.fc2(self.act(self.fc1(-x)))

    p = initwise.plan(MLP(), "auto")
    assert p.source == "module_order"
    assert p["fc2.weight"].activation == "silu"
    assert p["fc1.weight"].activation == "linear"


@pytest.mark.slow
def test_hugging_face_blocks() -> None:
    transformers = pytest.importorskip("transformers")
    cases = [
        (transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100,
                                                              bos_token_id=0, eos_token_id=0)),
         "transformer.h.1.mlp.c_proj.weight", "gelu_tanh"),
        (transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=100)), "model.layers.1.mlp.down_proj.weight", "silu"),
        (transformers.BertModel(transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                        intermediate_size=128, vocab_size=100)),
         "encoder.layer.1.output.dense.weight", "gelu"),
    ]
    for model, key, act in cases:
        e = initwise.plan(model, "auto")[key]
        assert e.activation == act
        assert e.gain == pytest.approx(initwise.gain(act))


def test_compiled_model_gets_the_same_plan_and_weights() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))  # a functional activation: fx only

    plain = M()
    initwise.init(plain, "auto", seed=0)
    compiled = torch.compile(M())
    p = initwise.init(compiled, "auto", seed=0)
    assert p["_orig_mod.fc2.weight"].activation == "relu"
    assert torch.equal(compiled._orig_mod.fc2.weight, plain.fc2.weight)


@pytest.mark.slow
def test_gpt2_recipe_scales_residual_projections_of_other_architectures() -> None:
    transformers = pytest.importorskip("transformers")
    m = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=100))
    p = initwise.plan(m, "gpt2")
    want = 0.02 / (2 * 2) ** 0.5
    for name in ("gpt_neox.layers.1.mlp.dense_4h_to_h.weight", "gpt_neox.layers.1.attention.dense.weight"):
        assert p[name].std == pytest.approx(want)
    assert p["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"].std == pytest.approx(0.02)
    # outside a stack of blocks, a plain MLP's last layer is not a residual projection
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert initwise.plan(mlp, "gpt2")["2.weight"].std == pytest.approx(0.02)


@pytest.mark.slow
def test_gpt2_packed_c_attn_is_three_blocks() -> None:
    """HF Conv1D stores [in, out]; c_attn packs q, k, v: xavier must give each block 1/E."""
    from conftest import assert_variance

    transformers = pytest.importorskip("transformers")
    e = 128
    m = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=e, n_head=4, vocab_size=100, bos_token_id=0, eos_token_id=0))
    p = initwise.init(m, "xavier", seed=0)
    entry = p["transformer.h.0.attn.c_attn.weight"]
    assert (entry.blocks, entry.fan_in, entry.fan_out) == (3, e, e)
    w = m.transformer.h[0].attn.c_attn.weight.detach()  # [E, 3E]
    for i in range(3):
        assert_variance(w[:, i * e:(i + 1) * e], 1.0 / e, excess_kurtosis=-1.2)
