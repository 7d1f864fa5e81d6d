"""The audit on real architectures (issue 14): each family's own init reads healthy, and a
planted fault (one block x1000, a sqrt(d)-logit tie, a dead layer) is found and named.

Hugging Face models are built from small configs (hidden 128, 2 layers, vocabulary 1000), with
the initialization ``transformers`` gives them; nothing is downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from initwise import audit

T = pytest.importorskip("transformers")
T.logging.set_verbosity_error()

V = 1000


def _ids(b: int = 4, t: int = 16) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(1))


def _images(b: int = 4) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(2))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """A ResNet-18-like CNN (two stages, widths 32 and 64) under torch's default init."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Block(32, 32, 1), Block(32, 32, 1))
        self.layer2 = nn.Sequential(Block(32, 64, 2), Block(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _gpt2() -> tuple[nn.Module, Any]:
    cfg = T.GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=V, n_positions=64,
                       bos_token_id=0, eos_token_id=0)
    return T.GPT2LMHeadModel(cfg), _ids()


def _llama() -> tuple[nn.Module, Any]:
    cfg = T.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=V)
    return T.LlamaForCausalLM(cfg), _ids()


def _qwen2() -> tuple[nn.Module, Any]:
    cfg = T.Qwen2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                        tie_word_embeddings=True)
    return T.Qwen2ForCausalLM(cfg), _ids()


def _bert() -> tuple[nn.Module, Any]:
    cfg = T.BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=512, vocab_size=V)
    return T.BertForMaskedLM(cfg), _ids()


def _t5() -> tuple[nn.Module, Any]:
    cfg = T.T5Config(d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, vocab_size=V,
                     decoder_start_token_id=0)
    return T.T5ForConditionalGeneration(cfg), {"input_ids": _ids(), "decoder_input_ids": _ids()}


def _vit() -> tuple[nn.Module, Any]:
    cfg = T.ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=256, image_size=32, patch_size=8, num_labels=10)
    return T.ViTForImageClassification(cfg), _images()


def _whisper() -> tuple[nn.Module, Any]:
    cfg = T.WhisperConfig(d_model=128, encoder_layers=2, decoder_layers=2,
                          encoder_attention_heads=4, decoder_attention_heads=4,
                          encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=V,
                          num_mel_bins=16, max_source_positions=32, max_target_positions=32,
                          pad_token_id=0, bos_token_id=0, eos_token_id=0,
                          decoder_start_token_id=0)
    feats = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(3))
    return T.WhisperForConditionalGeneration(cfg), {"input_features": feats,
                                                    "decoder_input_ids": _ids(2, 8)}


def _clip() -> tuple[nn.Module, Any]:
    cfg = T.CLIPConfig(
        text_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "vocab_size": V, "max_position_embeddings": 32},
        vision_config={"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=64)
    return T.CLIPModel(cfg), {"input_ids": _ids(), "pixel_values": _images()}


def _mamba() -> tuple[nn.Module, Any]:
    cfg = T.MambaConfig(hidden_size=128, num_hidden_layers=2, vocab_size=V, state_size=8)
    return T.MambaForCausalLM(cfg), _ids()


def _mixtral() -> tuple[nn.Module, Any]:
    cfg = T.MixtralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                          num_local_experts=4, num_experts_per_tok=2)
    return T.MixtralForCausalLM(cfg), _ids()


def _qwen2_moe() -> tuple[nn.Module, Any]:
    cfg = T.Qwen2MoeConfig(hidden_size=128, intermediate_size=256, moe_intermediate_size=64,
                           shared_expert_intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                           num_experts=4, num_experts_per_tok=2)
    return T.Qwen2MoeForCausalLM(cfg), _ids()


def _resnet() -> tuple[nn.Module, Any]:
    return ResNet(), _images(8)


ZOO: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "gpt2": _gpt2, "llama": _llama, "qwen2": _qwen2, "bert": _bert, "t5": _t5, "vit": _vit,
    "whisper": _whisper, "clip": _clip, "mamba": _mamba, "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe, "resnet": _resnet,
}


def _build(name: str) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    return ZOO[name]()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_reference_init_is_healthy(name: str) -> None:
    model, x = _build(name)
    rep = audit(model, x)
    assert rep.verdict == "healthy", f"{name}: {rep.forward_reason} | {rep.backward_reason}"
    if rep.output is not None:  # an LM or a classifier starts near the uninformed loss
        assert rep.output.verdict == "healthy"
        assert rep.output.loss_ratio < 1.25, rep.output.why


def test_a_conv_x1000_before_batchnorm_is_divided_out_in_train_mode() -> None:
    """Train-mode BatchNorm re-sets the scale: a conv x1000 right before it is harmless
    (documented limitation: scale errors right before a norm are not flagged)."""
    model, x = _build("resnet")
    with torch.no_grad():
        model.layer2[0].conv1.weight.mul_(1000)
    assert audit(model, x).verdict == "healthy"


@pytest.mark.parametrize(("name", "layer"), [
    ("gpt2", "transformer.h.1.mlp.c_fc"),
    ("llama", "model.layers.1.mlp.up_proj"),
    ("bert", "bert.encoder.layer.1.intermediate.dense"),
    ("t5", "encoder.block.1.layer.1.DenseReluDense.wi"),
    ("resnet", "fc"),
])
def test_one_block_x1000_is_found_and_named(name: str, layer: str) -> None:
    model, x = _build(name)
    with torch.no_grad():
        model.get_submodule(layer).weight.mul_(1000)
    rep = audit(model, x)
    assert rep.verdict == "exploding"
    assert rep.forward_verdict == "exploding"
    assert rep.rows[rep.forward_first].name == layer, rep.forward_reason


@pytest.mark.parametrize("name", ["gpt2", "qwen2", "bert", "whisper", "mamba"])
def test_sqrt_d_logit_tie_is_exploding_for_every_family(name: str) -> None:
    """An N(0, 1) embedding tied to the LM head: logits of std ~sqrt(d) = 11.3 read the same
    (exploding, named at the output) whether the family is pre-norm or post-norm."""
    model, x = _build(name)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)
    rep = audit(model, x)
    assert rep.verdict == "exploding"
    out = rep.output
    assert out is not None and out.kind == "lm" and out.classes == V
    assert out.expected_loss == pytest.approx(math.log(V))
    assert out.verdict == "exploding" and out.loss_ratio > 2.0
    assert 8.0 < out.output_std < 16.0
    assert "output: exploding" in str(rep) and "ln V" in rep.to_markdown()


def test_tie_reads_the_same_for_gpt2_and_bert() -> None:
    """The issue's case: an N(0, 1) embedding tied to the head (what ``auto`` used to do) reads
    exploding for both; ``auto`` now gives the tied table N(0, 1/d) and both read healthy."""
    from initwise import init

    planted, fixed = {}, {}
    for name in ("gpt2", "bert"):
        model, x = _build(name)
        init(model, "auto")
        rep = audit(model, x)
        assert rep.output is not None
        fixed[name] = (rep.verdict, rep.output.verdict)
        table = model.get_input_embeddings().weight
        with torch.no_grad():
            table.normal_()  # the sqrt(d)-logit tie
        rep = audit(model, x)
        assert rep.output is not None
        planted[name] = (rep.verdict, rep.output.verdict)
    assert planted == {"gpt2": ("exploding", "exploding"), "bert": ("exploding", "exploding")}
    assert fixed == {"gpt2": ("healthy", "healthy"), "bert": ("healthy", "healthy")}


@pytest.mark.parametrize(("name", "layer"), [
    ("resnet", "stem"),
    ("gpt2", "transformer.wte"),
    ("llama", "model.embed_tokens"),
])
def test_dead_layer_is_found_and_named(name: str, layer: str) -> None:
    model, x = _build(name)
    with torch.no_grad():
        model.get_submodule(layer).weight.zero_()
    rep = audit(model, x)
    assert rep.verdict == "vanishing" and rep.input_independent
    assert rep.rows[rep.forward_first].name == layer
    assert "dead layer" in rep.forward_reason


def test_zero_init_last_of_a_branch_is_not_a_dead_layer() -> None:
    model, x = _build("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.zero_()
    rep = audit(model, x)
    assert rep.verdict == "healthy" and not rep.input_independent
    assert any("zero-initialized" in n for n in rep.notes)
