"""A zoo of real architectures, built offline from tiny configs, for checking ``init(model, "auto")``.

Each :class:`ZooEntry` knows how to build its model (seeded, no downloads), how to make a small
batch (inputs and labels), what its task is (so the expected initial loss is known: ``ln V`` for
a language model, ``ln C`` for a classifier, ``ln B`` for a contrastive model) and which of its
tensors carry model-specific meaning that an initializer must leave as the model made them.

Semantic tensors come from rules that hold for an unseen architecture (:func:`semantic_tensors`):
``requires_grad=False`` parameters, buffers other than normalization statistics (rotary
``inv_freq``, ``position_ids``, causal masks), and parameters named like a state-space model's
``A_log`` / ``D`` / ``dt_proj.bias``, a contrastive ``logit_scale`` / ``logit_bias``, a class or
distillation token, or a raw position table (a bare ``position_embedding(s)`` parameter, not an
``nn.Embedding``). Family-specific additions are listed per entry (``extra_semantic``).

Hugging Face families are built only when ``transformers`` imports and the class exists and
builds in the installed version; otherwise :func:`build` raises :class:`ZooSkip` with the reason.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Task = Literal["lm", "classifier", "seq2seq_lm", "contrastive", "features"]

VOCAB = 512
HIDDEN = 64
LAYERS = 2
HEADS = 4
FFN = 128
BATCH = 4
SEQ = 16
N_CLASSES = 10


class ZooSkip(Exception):
    """A family that cannot be built in this environment (missing class, build error)."""


@dataclass(frozen=True)
class ZooEntry:
    """One architecture: how to build it, feed it, score it, and what an init must not touch.

    ``make_batch(model)`` returns ``(inputs, labels)``: ``inputs`` are the keyword (HF) or
    positional (plain torch, a 1-tuple) arguments of the forward; ``labels`` are extra keyword
    arguments that make an HF model compute its own loss (``None`` for plain torch models, whose
    loss is ``loss(output, target)`` with the target in ``labels["target"]``). ``n`` is the
    vocabulary size V (``lm``, ``seq2seq_lm``), the class count C (``classifier``) or the batch
    size B (``contrastive``); the expected initial loss is ``ln n``.
    """

    name: str
    family: str
    factory: Callable[[], nn.Module]
    make_batch: Callable[[nn.Module], tuple[Any, dict[str, Any]]]
    task: Task
    n: int | None
    hf: bool = True
    extra_semantic: tuple[str, ...] = ()
    loss: Callable[[Any, dict[str, Any]], torch.Tensor] | None = None
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def expected_loss(self) -> float | None:
        return math.log(self.n) if self.n else None


# --------------------------------------------------------------------------------------------
# building

def _transformers() -> Any:
    try:
        import transformers
    except Exception as exc:  # pragma: no cover - depends on the environment
        raise ZooSkip(f"transformers not importable: {exc}") from exc
    return transformers


def _hf(config_cls: str, model_cls: str, **cfg: Any) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        t = _transformers()
        if not hasattr(t, config_cls) or not hasattr(t, model_cls):
            raise ZooSkip(f"transformers {t.__version__} has no {model_cls}")
        config = getattr(t, config_cls)(**cfg)
        try:
            model = getattr(t, model_cls)(config)
        except Exception as exc:
            raise ZooSkip(f"{model_cls} does not build: {type(exc).__name__}: {exc}") from exc
        return model
    return factory


def build(entry: ZooEntry, seed: int = 0) -> nn.Module:
    """Build ``entry``'s model with the global torch seed set (its own init is seeded)."""
    torch.manual_seed(seed)
    model = entry.factory()
    return model.float()


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# batches

def _lm_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=_gen())
    return {"input_ids": ids}, {"labels": ids}


def _mlm_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    """Masked LM: 25% of positions replaced by a mask id (4), labels only there (else -100)."""
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=_gen())
    masked = torch.rand(BATCH, SEQ, generator=_gen(3)) < 0.25
    masked[:, 1] = True
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    return {"input_ids": torch.where(masked, torch.full_like(ids, 4), ids)}, {"labels": labels}


def _seqcls_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=_gen())
    labels = torch.randint(0, N_CLASSES, (BATCH,), generator=_gen(2))
    return {"input_ids": ids}, {"labels": labels}


def _shift_right(model: nn.Module, labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs: the start token, then the labels shifted one position right."""
    start = getattr(getattr(model, "config", None), "decoder_start_token_id", None) or 0
    return torch.cat([torch.full_like(labels[:, :1], start), labels[:, :-1]], 1)


def _seq2seq_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=_gen())
    labels = torch.randint(5, VOCAB, (BATCH, SEQ), generator=_gen(2))
    return {"input_ids": ids, "decoder_input_ids": _shift_right(model, labels)}, {"labels": labels}


def _image_batch(size: int, channels: int = 3) -> Callable[[nn.Module], tuple[Any, dict[str, Any]]]:
    def make(model: nn.Module) -> tuple[Any, dict[str, Any]]:
        x = torch.randn(BATCH, channels, size, size, generator=_gen())
        labels = torch.randint(0, N_CLASSES, (BATCH,), generator=_gen(2))
        return {"pixel_values": x}, {"labels": labels}
    return make


def _whisper_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    feats = torch.randn(BATCH, 16, 64, generator=_gen())  # [B, mel bins, 2 * max_source_positions]
    labels = torch.randint(5, VOCAB, (BATCH, 8), generator=_gen(2))
    return {"input_features": feats, "decoder_input_ids": _shift_right(model, labels)}, {"labels": labels}


def _clip_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=_gen())
    px = torch.randn(BATCH, 3, 32, 32, generator=_gen(2))
    return {"input_ids": ids, "pixel_values": px}, {"return_loss": True}


def _audio_batch(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    x = torch.randn(BATCH, 1600, generator=_gen())
    labels = torch.randint(0, N_CLASSES, (BATCH,), generator=_gen(2))
    return {"input_values": x}, {"labels": labels}


def _torch_image_batch(size: int, classes: int | None = N_CLASSES,
                       per_pixel: bool = False) -> Callable[[nn.Module], tuple[Any, dict[str, Any]]]:
    def make(model: nn.Module) -> tuple[Any, dict[str, Any]]:
        x = torch.randn(BATCH, 3, size, size, generator=_gen())
        shape = (BATCH, size, size) if per_pixel else (BATCH,)
        assert classes is not None
        target = torch.randint(0, classes, shape, generator=_gen(2))
        return (x,), {"target": target}
    return make


def _ce(output: Any, labels: dict[str, Any]) -> torch.Tensor:
    return F.cross_entropy(output, labels["target"])


# --------------------------------------------------------------------------------------------
# hand-written CNNs

class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn plus identity (or a 1x1 conv-bn downsample)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = N_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, ch, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise 3x3, squeeze-excitation, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                                nn.BatchNorm2d(mid), nn.Hardswish())
        self.se = SqueezeExcite(mid, max(8, mid // 4))
        self.project = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.dw(self.expand(x))))
        return x + out if self.use_res else out


class TinyMobileNet(nn.Module):
    def __init__(self, classes: int = N_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(InvertedResidual(16, 16, 4, 1), InvertedResidual(16, 24, 4, 2),
                                    InvertedResidual(24, 24, 4, 1))
        self.head = nn.Sequential(nn.Conv2d(24, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.head(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyUNet(nn.Module):
    """Two-level U-Net: skip concatenations, ConvTranspose upsampling, per-pixel classes."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.enc1 = DoubleConv(3, 16)
        self.enc2 = DoubleConv(16, 32)
        self.bottom = DoubleConv(32, 64)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2)
        self.dec2 = DoubleConv(64, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec1 = DoubleConv(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


# --------------------------------------------------------------------------------------------
# the registry

_DEC = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, max_position_embeddings=64)
_NODROP = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_BERT = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
             num_attention_heads=HEADS, max_position_embeddings=64, **_NODROP)

ZOO: list[ZooEntry] = [
    ZooEntry("gpt2", "GPT-2", _hf("GPT2Config", "GPT2LMHeadModel", vocab_size=VOCAB, n_embd=HIDDEN,
             n_layer=LAYERS, n_head=HEADS, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
             _lm_batch, "lm", VOCAB, notes="tied lm_head/wte; Conv1D with packed c_attn"),
    ZooEntry("llama", "LLaMA", _hf("LlamaConfig", "LlamaForCausalLM", num_key_value_heads=2, **_DEC),
             _lm_batch, "lm", VOCAB, notes="gated MLP, GQA, rotary inv_freq"),
    ZooEntry("mistral", "Mistral", _hf("MistralConfig", "MistralForCausalLM", num_key_value_heads=2, **_DEC),
             _lm_batch, "lm", VOCAB),
    ZooEntry("qwen2", "Qwen2", _hf("Qwen2Config", "Qwen2ForCausalLM", num_key_value_heads=2, **_DEC),
             _lm_batch, "lm", VOCAB),
    ZooEntry("gemma", "Gemma", _hf("GemmaConfig", "GemmaForCausalLM", num_key_value_heads=1, head_dim=16,
             **_DEC), _lm_batch, "lm", VOCAB, notes="tied head, embeddings scaled by sqrt(d), RMSNorm 1+w"),
    ZooEntry("phi", "Phi", _hf("PhiConfig", "PhiForCausalLM", resid_pdrop=0.0, embd_pdrop=0.0, **_DEC),
             _lm_batch, "lm", VOCAB, notes="parallel attention/MLP, partial rotary"),
    ZooEntry("gpt_neox", "GPT-NeoX", _hf("GPTNeoXConfig", "GPTNeoXForCausalLM", **_DEC),
             _lm_batch, "lm", VOCAB, notes="packed query_key_value in a plain Linear"),
    ZooEntry("opt", "OPT", _hf("OPTConfig", "OPTForCausalLM", vocab_size=VOCAB, hidden_size=HIDDEN,
             ffn_dim=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=64,
             word_embed_proj_dim=HIDDEN, dropout=0.0, pad_token_id=1), _lm_batch, "lm", VOCAB),
    ZooEntry("bloom", "BLOOM", _hf("BloomConfig", "BloomForCausalLM", vocab_size=VOCAB, hidden_size=HIDDEN,
             n_layer=LAYERS, n_head=HEADS), _lm_batch, "lm", VOCAB, notes="ALiBi, packed qkv, tied head"),
    ZooEntry("falcon", "Falcon", _hf("FalconConfig", "FalconForCausalLM", vocab_size=VOCAB, hidden_size=HIDDEN,
             num_hidden_layers=LAYERS, num_attention_heads=HEADS), _lm_batch, "lm", VOCAB,
             notes="multi-query packed qkv, parallel attention"),
    ZooEntry("mixtral", "Mixtral", _hf("MixtralConfig", "MixtralForCausalLM", num_key_value_heads=2,
             num_local_experts=4, num_experts_per_tok=2, **_DEC), _lm_batch, "lm", VOCAB,
             notes="fused experts gate_up_proj [E, 2I, H], down_proj [E, H, I]"),
    ZooEntry("qwen2_moe", "Qwen2-MoE", _hf("Qwen2MoeConfig", "Qwen2MoeForCausalLM", num_key_value_heads=2,
             num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=128,
             **_DEC), _lm_batch, "lm", VOCAB, notes="fused experts + shared expert with sigmoid gate"),
    ZooEntry("bert_mlm", "BERT (MLM)", _hf("BertConfig", "BertForMaskedLM", **_BERT), _mlm_batch, "lm", VOCAB,
             notes="tied decoder/word_embeddings"),
    ZooEntry("bert_cls", "BERT (classifier)", _hf("BertConfig", "BertForSequenceClassification",
             num_labels=N_CLASSES, **_BERT), _seqcls_batch, "classifier", N_CLASSES),
    ZooEntry("roberta", "RoBERTa", _hf("RobertaConfig", "RobertaForMaskedLM", pad_token_id=1,
             **{**_BERT, "max_position_embeddings": 66}), _mlm_batch, "lm", VOCAB),
    ZooEntry("t5", "T5", _hf("T5Config", "T5ForConditionalGeneration", vocab_size=VOCAB, d_model=HIDDEN,
             d_kv=16, d_ff=FFN, num_layers=LAYERS, num_decoder_layers=LAYERS, num_heads=HEADS,
             dropout_rate=0.0, decoder_start_token_id=0), _seq2seq_batch, "seq2seq_lm", VOCAB,
             notes="no 1/sqrt(d) in attention; tied head rescaled by d^-1/2"),
    ZooEntry("bart", "BART", _hf("BartConfig", "BartForConditionalGeneration", vocab_size=VOCAB, d_model=HIDDEN,
             encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=HEADS,
             decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_position_embeddings=64,
             dropout=0.0, attention_dropout=0.0), _seq2seq_batch, "seq2seq_lm", VOCAB),
    ZooEntry("vit", "ViT", _hf("ViTConfig", "ViTForImageClassification", image_size=32, patch_size=8,
             hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
             num_labels=N_CLASSES, **_NODROP), _image_batch(32), "classifier", N_CLASSES,
             extra_semantic=("*position_embeddings", "*cls_token")),
    ZooEntry("whisper", "Whisper", _hf("WhisperConfig", "WhisperForConditionalGeneration", vocab_size=VOCAB,
             num_mel_bins=16, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS,
             encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FFN,
             decoder_ffn_dim=FFN, max_source_positions=32, max_target_positions=32, pad_token_id=0,
             bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
             _whisper_batch, "seq2seq_lm", VOCAB, extra_semantic=("model.encoder.embed_positions.weight",),
             notes="frozen sinusoidal encoder positions"),
    ZooEntry("clip", "CLIP", _hf("CLIPConfig", "CLIPModel",
             text_config=dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
                              num_attention_heads=HEADS, max_position_embeddings=SEQ),
             vision_config=dict(image_size=32, patch_size=8, hidden_size=HIDDEN, intermediate_size=FFN,
                                num_hidden_layers=LAYERS, num_attention_heads=HEADS),
             projection_dim=HIDDEN), _clip_batch, "contrastive", BATCH,
             extra_semantic=("logit_scale", "*class_embedding")),
    ZooEntry("wav2vec2", "Wav2Vec2", _hf("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", vocab_size=32,
             hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
             conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4, num_labels=N_CLASSES, classifier_proj_size=32,
             hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0, feat_proj_dropout=0.0,
             layerdrop=0.0, mask_time_prob=0.0), _audio_batch, "classifier", N_CLASSES,
             notes="conv feature extractor (group norm), weight-normed conv positions"),
    ZooEntry("mamba", "Mamba", _hf("MambaConfig", "MambaForCausalLM", vocab_size=VOCAB, hidden_size=HIDDEN,
             state_size=16, num_hidden_layers=LAYERS, expand=2, conv_kernel=4, use_mambapy=False),
             _lm_batch, "lm", VOCAB, extra_semantic=("*A_log", "*.D", "*dt_proj.bias"),
             notes="SSM: A_log = log(1..N), D = 1, dt bias = softplus^-1(dt in [1e-3, 0.1])"),
    ZooEntry("convnext", "ConvNeXt", _hf("ConvNextConfig", "ConvNextForImageClassification", num_channels=3,
             hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, patch_size=4, image_size=32,
             num_labels=N_CLASSES), _image_batch(32), "classifier", N_CLASSES,
             extra_semantic=("*layer_scale_parameter",), notes="layer scale 1e-6, depthwise 7x7"),
    ZooEntry("hf_resnet", "ResNet (HF)", _hf("ResNetConfig", "ResNetForImageClassification", num_channels=3,
             embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=N_CLASSES),
             _image_batch(32), "classifier", N_CLASSES),
    ZooEntry("resnet", "ResNet (torch)", TinyResNet, _torch_image_batch(16), "classifier", N_CLASSES,
             hf=False, loss=_ce, notes="BasicBlock, BN, 1x1 downsample"),
    ZooEntry("mobilenet", "MobileNetV3 (torch)", TinyMobileNet, _torch_image_batch(16), "classifier",
             N_CLASSES, hf=False, loss=_ce, notes="depthwise convs, squeeze-excitation, hardswish"),
    ZooEntry("unet", "U-Net (torch)", TinyUNet, _torch_image_batch(16, 4, per_pixel=True), "classifier", 4,
             hf=False, loss=_ce, notes="skip concatenations, ConvTranspose upsampling, per-pixel classes"),
]

BY_NAME = {e.name: e for e in ZOO}


# --------------------------------------------------------------------------------------------
# semantic tensors

_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")
# Parameter names whose values are the model's semantics, whatever the architecture.
_SEMANTIC_NAMES = ("*A_log", "*.D", "D", "*dt_proj.bias", "*logit_scale", "logit_scale", "*logit_bias",
                   "logit_bias", "*cls_token", "*dist_token", "*class_embedding", "*inv_freq")


def _is_raw_position_table(name: str) -> bool:
    """A bare ``...position_embedding(s)`` parameter (not the weight of an ``nn.Embedding``)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("position_embeddings", "position_embedding", "pos_embed", "pos_embedding")


def semantic_tensors(model: nn.Module, entry: ZooEntry | None = None) -> dict[str, str]:
    """Names of tensors an initializer must leave as the model made them, each with why.

    Rules (general): frozen parameters; buffers that are not normalization statistics;
    parameters named like SSM / contrastive / token / raw-position-table semantics. Then the
    entry's explicit family-specific patterns.
    """
    out: dict[str, str] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            out[name] = "requires_grad=False"
        elif any(fnmatch.fnmatchcase(name, pat) for pat in _SEMANTIC_NAMES):
            out[name] = "semantic name"
        elif _is_raw_position_table(name):
            out[name] = "raw position table"
        elif entry is not None and any(fnmatch.fnmatchcase(name, pat) for pat in entry.extra_semantic):
            out[name] = f"{entry.family}-specific"
    for name, _ in model.named_buffers():
        if name.rsplit(".", 1)[-1] in _NORM_STATS:
            continue
        out.setdefault(name, "buffer (not norm statistics)")
    return out


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by qualified name."""
    out: dict[str, torch.Tensor] = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return out


def snapshot(model: nn.Module, names: dict[str, str] | list[str]) -> dict[str, torch.Tensor]:
    """Clones of the named parameters/buffers."""
    tensors = named_tensors(model)
    return {n: tensors[n].detach().clone() for n in names}


# --------------------------------------------------------------------------------------------
# running

def _call(model: nn.Module, inputs: Any, extra: dict[str, Any] | None = None) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs, **(extra or {}))
    return model(*inputs)


def forward(model: nn.Module, entry: ZooEntry, batch: tuple[Any, dict[str, Any]]) -> Any:
    """One eval-mode, no-grad forward on the inputs alone (no labels)."""
    inputs, _ = batch
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _call(model, inputs)
    finally:
        model.train(was)


def primary_output(out: Any) -> torch.Tensor:
    """The main tensor of a forward's result (logits, ``last_hidden_state``, a plain tensor)."""
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "logits_per_image", "last_hidden_state"):
        v = getattr(out, key, None)
        if isinstance(v, torch.Tensor):
            return v
    if isinstance(out, (tuple, list)):
        return primary_output(out[0])
    raise TypeError(f"no tensor in {type(out).__name__}")


def initial_loss(model: nn.Module, entry: ZooEntry, batch: tuple[Any, dict[str, Any]]) -> float:
    """The model's own loss on the batch (float32, no grad) as the first training step sees it:
    eval mode (no dropout), except batch norms, which use the batch's statistics as in training
    (in eval mode, with fresh running statistics, a batch norm is the identity)."""
    inputs, labels = batch
    was = model.training
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    try:
        with torch.no_grad():
            if entry.hf:
                out = _call(model, inputs, labels)
                return float(out.loss)
            assert entry.loss is not None
            return float(entry.loss(_call(model, inputs), labels))
    finally:
        model.train(was)
        if saved:  # the batch statistics updated the running ones: put them back
            model.load_state_dict(saved, strict=False)


def build_all(names: list[str] | None = None) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Build every entry (or ``names``); return ``(models, skipped)`` with skip reasons."""
    models: dict[str, nn.Module] = {}
    skipped: dict[str, str] = {}
    for e in ZOO:
        if names is not None and e.name not in names:
            continue
        try:
            models[e.name] = build(e)
        except ZooSkip as exc:
            skipped[e.name] = str(exc)
    return models, skipped
