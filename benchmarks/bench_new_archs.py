"""``auto`` on Hugging Face architectures outside the zoo: a new user's first hour, measured.

Each model is built offline from a tiny config (hidden 64, 2 layers, vocabulary 256;
transformers 5.x) and, per model:

- ``own Δ`` / ``auto Δ``: the model's own initial loss (eval, float32) minus ``ln n`` (``ln V``
  for language models, ``ln C`` for classifiers), after its own init and after
  ``initwise.init(model, "auto", seed=0)``; ``logit std`` under ``auto``;
- ``audit``: ``initwise.audit(model, inputs).verdict`` under ``auto``;
- ``lsuv Δ``: the loss after ``initwise.lsuv(model, inputs)`` on top of ``auto``;
- ``meta``: ``initwise.materialize`` of the same model built on the meta device: ``same`` when
  every tensor ``auto`` initializes is bit-identical to ``init`` on the eager model (tensors
  left to the model's own random init, ``keep``, are drawn from their own keys and differ);
- ``plan``: where ``auto`` read the structure from and how many tensors it inits / keeps.

    python benchmarks/bench_new_archs.py [--models qwen3,gpt_oss]

Not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

import initwise

V = 256
Spec = tuple[Callable[[], torch.nn.Module], Callable[[], dict[str, Any]], float]


def _specs() -> dict[str, Spec]:
    import transformers as T

    T.logging.set_verbosity_error()
    d = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             vocab_size=V, max_position_embeddings=64)

    def g(seed: int = 1) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def ids() -> dict[str, Any]:
        x = torch.randint(2, V, (4, 16), generator=g())
        return {"input_ids": x, "labels": x}

    def s2s() -> dict[str, Any]:
        return {"input_ids": torch.randint(2, V, (4, 12), generator=g()),
                "labels": torch.randint(2, V, (4, 10), generator=g(2))}

    def img(size: int) -> Callable[[], dict[str, Any]]:
        return lambda: {"pixel_values": torch.randn(4, 3, size, size, generator=g()),
                        "labels": torch.randint(0, 10, (4,), generator=g(2))}

    def audio() -> dict[str, Any]:
        return {"input_values": torch.randn(4, 4000, generator=g()),
                "labels": torch.randint(0, 2, (4,), generator=g(2))}

    def hf(cfg: str, cls: str, **kw: Any) -> Callable[[], torch.nn.Module]:
        return lambda: getattr(T, cls)(getattr(T, cfg)(**kw))

    lnv, ln10, ln2 = math.log(V), math.log(10), math.log(2)
    lm: dict[str, tuple[str, str, dict[str, Any]]] = {
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=2, head_dim=16)),
        "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(
            num_key_value_heads=2, head_dim=16, num_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=32, decoder_sparse_step=1)),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(num_key_value_heads=2, head_dim=16)),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(num_key_value_heads=2, head_dim=16)),
        "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(num_key_value_heads=2, pad_token_id=0)),
        "phimoe": ("PhimoeConfig", "PhimoeForCausalLM", dict(
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
        "granite": ("GraniteConfig", "GraniteForCausalLM", dict(
            num_key_value_heads=2, embedding_multiplier=12.0, residual_multiplier=0.22,
            attention_multiplier=0.0078125, logits_scaling=8.0, tie_word_embeddings=True)),
        "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", dict(
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)),
        "cohere": ("CohereConfig", "CohereForCausalLM", dict(num_key_value_heads=2)),
        "stablelm": ("StableLmConfig", "StableLmForCausalLM", dict(num_key_value_heads=2)),
        "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(num_key_value_heads=2)),
        "jamba": ("JambaConfig", "JambaForCausalLM", dict(
            num_key_value_heads=2, num_experts=2, num_experts_per_tok=1, attn_layer_period=2,
            attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, mamba_d_state=8,
            mamba_expand=2, mamba_dt_rank=8)),
        "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", dict(
            num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, pad_token_id=0)),
        "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(
            num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
            moe_intermediate_size=32, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=32,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, n_group=1, topk_group=1)),
        "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", dict(
            num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2)),
        "llama4": ("Llama4TextConfig", "Llama4ForCausalLM", dict(
            num_key_value_heads=2, head_dim=16, num_local_experts=2, num_experts_per_tok=1,
            intermediate_size_mlp=128, interleave_moe_layer_step=1)),
        "bigbird": ("BigBirdConfig", "BigBirdForMaskedLM", dict(attention_type="original_full")),
        "electra": ("ElectraConfig", "ElectraForMaskedLM", dict(embedding_size=32)),
        "albert": ("AlbertConfig", "AlbertForMaskedLM", dict(embedding_size=32)),
    }
    out: dict[str, Spec] = {k: (hf(c, m, **{**d, **kw}), ids, lnv) for k, (c, m, kw) in lm.items()}
    ssm = dict(hidden_size=64, num_hidden_layers=2, vocab_size=V, state_size=8)
    out["gptj"] = (hf("GPTJConfig", "GPTJForCausalLM", n_embd=64, n_layer=2, n_head=4,
                      vocab_size=V, n_positions=64, rotary_dim=8), ids, lnv)
    out["falcon_mamba"] = (hf("FalconMambaConfig", "FalconMambaForCausalLM", **ssm), ids, lnv)
    out["mamba2"] = (hf("Mamba2Config", "Mamba2ForCausalLM", num_heads=8, head_dim=16, n_groups=1,
                        expand=2, chunk_size=8, **ssm), ids, lnv)
    out["modernbert"] = (hf("ModernBertConfig", "ModernBertForMaskedLM", pad_token_id=0,
                            bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
                            global_attn_every_n_layers=1, **d), ids, lnv)
    out["distilbert"] = (hf("DistilBertConfig", "DistilBertForMaskedLM", dim=64, n_layers=2,
                            n_heads=4, hidden_dim=128, vocab_size=V, max_position_embeddings=64),
                         ids, lnv)
    t5 = dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=V,
              decoder_start_token_id=0)
    for name, cfg, cls in (("mt5", "MT5Config", "MT5ForConditionalGeneration"),
                           ("umt5", "UMT5Config", "UMT5ForConditionalGeneration"),
                           ("longt5", "LongT5Config", "LongT5ForConditionalGeneration")):
        out[name] = (hf(cfg, cls, **t5), s2s, lnv)
    out["pegasus"] = (hf("PegasusConfig", "PegasusForConditionalGeneration", d_model=64,
                         encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                         vocab_size=V, max_position_embeddings=64, pad_token_id=0,
                         decoder_start_token_id=0), s2s, lnv)
    vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_labels=10)
    out["beit"] = (hf("BeitConfig", "BeitForImageClassification", image_size=32, patch_size=8,
                      intermediate_size=128, **vit), img(32), ln10)
    out["dinov2"] = (hf("Dinov2Config", "Dinov2ForImageClassification", image_size=32,
                        patch_size=8, mlp_ratio=2, **vit), img(32), ln10)
    out["segformer"] = (hf("SegformerConfig", "SegformerForImageClassification",
                           num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                           hidden_sizes=[32, 64], num_attention_heads=[1, 2], patch_sizes=[7, 3],
                           strides=[4, 2], num_labels=10), img(32), ln10)
    out["mobilevit"] = (hf("MobileViTConfig", "MobileViTForImageClassification", image_size=64,
                           hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                           num_labels=10), img(64), ln10)
    out["efficientnet"] = (hf("EfficientNetConfig", "EfficientNetForImageClassification",
                              image_size=32, width_coefficient=0.25, depth_coefficient=0.25,
                              hidden_dim=320, num_labels=10), img(32), ln10)
    out["regnet"] = (hf("RegNetConfig", "RegNetForImageClassification", embedding_size=16,
                        hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=10),
                     img(32), ln10)
    out["hubert"] = (hf("HubertConfig", "HubertForSequenceClassification", hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                        conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                        num_labels=2), audio, ln2)
    return out


def _loss(model: torch.nn.Module, inputs: dict[str, Any]) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    return float(out.loss), float(out.logits.float().std())


def row(name: str, spec: Spec) -> str:
    build, inputs, ln_n = spec
    torch.manual_seed(0)
    model = build()
    own, _ = _loss(model, inputs())
    plan = initwise.init(model, "auto", seed=0)
    auto, std = _loss(model, inputs())
    try:
        verdict = initwise.audit(model, inputs()).verdict
    except Exception as e:  # a crash is a finding, printed
        verdict = f"crash {type(e).__name__}"
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        initwise.lsuv(model, inputs())
        lsuv = f"{_loss(model, inputs())[0] - ln_n:+.2f}"
    except Exception as e:
        lsuv = f"crash {type(e).__name__}"
    with torch.device("meta"):
        meta_model = build()
    initwise.materialize(meta_model, "auto", device="cpu", seed=0)
    ms = meta_model.state_dict()
    inited = [e.name for e in plan.entries if e.action == "init" and e.name in ms]
    same = all(torch.equal(ms[n], init_state[n]) for n in inited)
    acts = {a: sum(e.action == a for e in plan.entries) for a in ("init", "keep", "skip")}
    return (f"{name:13s} {own - ln_n:+7.2f} {auto - ln_n:+7.2f} {std:6.2f}  {verdict:10s} {lsuv:>7s}"
            f"  {'same' if same else 'DIFFERS':7s} {plan.source}: {acts['init']} init, "
            f"{acts['keep']} keep, {acts['skip']} skip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    specs = _specs()
    names = [m for m in args.models.split(",") if m] or list(specs)
    print(f"{'model':13s} {'own Δ':>7s} {'auto Δ':>7s} {'std':>6s}  {'audit':10s} {'lsuv Δ':>7s}"
          f"  {'meta':7s} plan")
    for name in names:
        print(row(name, specs[name]), flush=True)


if __name__ == "__main__":
    main()
