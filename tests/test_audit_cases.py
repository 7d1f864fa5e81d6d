"""Audit on cases found in review: grad mode, global pooling, frozen batch norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initwise


def _mlp(std: float, depth: int = 20) -> nn.Module:
    net = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(64, 64), nn.ReLU())])
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
    return net


def test_audit_under_no_grad_and_inference_mode_still_judges_backward() -> None:
    torch.manual_seed(0)
    net = _mlp(0.01)
    x = torch.randn(32, 64)
    with torch.no_grad():
        assert initwise.audit(net, x).backward_verdict == "vanishing"
    with torch.inference_mode():
        xi = torch.randn(32, 64)
        r = initwise.audit(net, xi)
    assert (r.forward_verdict, r.backward_verdict) == ("vanishing", "vanishing")


def _cnn(init: str) -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for _ in range(4):
        layers += [nn.Conv2d(c, 32, 3, padding=1), nn.ReLU()]
        c = 32
    m = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    if init == "kaiming":
        initwise.init(m, "kaiming")
    else:
        for mod in m:
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(mod.weight, std=0.01)
    return m


@pytest.mark.parametrize("hw", [8, 32])
def test_global_pooling_does_not_make_a_good_cnn_vanishing(hw: int) -> None:
    """Pooling P positions divides the gradient norm by sqrt(P): a boundary, not a defect."""
    torch.manual_seed(0)
    r = initwise.audit(_cnn("kaiming"), torch.randn(8, 3, hw, hw))
    assert r.verdict == "healthy", r.backward_reason
    pooled = [row for row in r.rows if row.type == "AdaptiveAvgPool2d"]
    assert pooled and pooled[0].pool
    bad = initwise.audit(_cnn("small"), torch.randn(8, 3, hw, hw))
    assert bad.forward_verdict == "vanishing" and bad.backward_verdict == "vanishing"


class FrozenBatchNorm2d(nn.Module):
    """Like torchvision's: a batch norm that only ever uses fixed statistics."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.eps = 1e-5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return x * scale[None, :, None, None] + (self.bias - self.running_mean * scale)[None, :, None, None]


def test_frozen_batch_norm_is_not_a_reset() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        conv = nn.Conv2d(3 if i == 0 else 16, 16, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        layers += [conv, FrozenBatchNorm2d(16), nn.ReLU()]
    r = initwise.audit(nn.Sequential(*layers), torch.randn(4, 3, 8, 8))
    assert r.forward_verdict == "vanishing"


def test_empty_batch_is_an_error_not_a_healthy_verdict() -> None:
    with pytest.raises(ValueError, match="no elements"):
        initwise.audit(_mlp(0.01, depth=3), torch.randn(0, 64))


def test_attention_probabilities_are_not_judged_as_signal() -> None:
    """Found by a new-user trial (BLIP's and DeBERTa-v2's dropout on attention probabilities
    read "vanishing", rms/ref ~ 0.09): a row whose output is a softmax's, directly or through
    dropout, is rows of probabilities, reported as such and not judged."""
    import initwise

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(64, 64) for _ in range(4))
            self.drop = nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / 8.0, dim=-1)
            return x + self.o(self.drop(a) @ self.v(x))

    model = nn.Sequential(nn.Linear(64, 64), Attn(), nn.LayerNorm(64), nn.Linear(64, 10))
    initwise.init(model, "auto", seed=0)
    x = torch.randn(8, 48, 64, generator=torch.Generator().manual_seed(0))
    rep = initwise.audit(model, x, mode="train")
    row = next(r for r in rep.rows if r.name == "1.drop")
    assert row.probability and row.flag == "n/a" and row.grad_flag == "n/a"
    assert rep.verdict == "healthy", rep.verdict
    assert "(probabilities)" in str(rep)
    assert not any(r.probability for r in rep.rows if r.name != "1.drop")


def test_beit_layer_scale_through_drop_path_reads_scaled_by_design() -> None:
    """Found by a new-user trial: BEiT multiplies each branch by a raw parameter (λ = 0.1)
    and passes it through a drop-path module before the sum; the last layer's MLP read
    "vanishing" (grad ratio 0.055 = 0.1 x 0.55). The gate is found through the pass-through
    row, and a gate below 1 counts whatever the branch's own factors."""
    import transformers

    import initwise

    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    cfg = transformers.BeitConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128, num_labels=5,
                                  layer_scale_init_value=0.1)
    model = transformers.BeitForImageClassification(cfg).eval()
    initwise.init(model, "auto", seed=0)
    rep = initwise.audit(model, x)
    assert rep.verdict == "healthy", rep.backward_reason
    assert any("layer scale of 0.1" in line and "lambda_2" in line for line in rep.by_design)


def test_a_constant_logit_temperature_is_divided_out() -> None:
    """Found by a new-user trial (Cohere multiplies its logits by a constant logit_scale,
    0.0625: the output read "vanishing" at rms/ref 0.062 and the head's gradient at 0.0625,
    with the initial loss at ln V): a Python constant between the last row and the model's
    output is a temperature, judged divided out; a parameter there is not a constant."""
    import initwise

    class LM(nn.Module):
        def __init__(self, scale: float | None) -> None:
            super().__init__()
            self.emb, self.norm, self.head = nn.Embedding(128, 64), nn.LayerNorm(64), nn.Linear(64, 128)
            self.scale = scale

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            out = self.head(self.norm(self.emb(ids)))
            return out * self.scale if self.scale is not None else out

    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    for scale in (0.0625, None):
        model = LM(scale)
        initwise.init(model, "auto", seed=0)
        rep = initwise.audit(model, ids)
        assert rep.verdict == "healthy", (scale, rep.forward_reason, rep.backward_reason)
        head = next(r for r in rep.rows if r.name == "head")
        assert head.out_temperature == (scale if scale else None)
        assert any("logit temperature" in b for b in rep.by_design) == (scale is not None)


def test_a_constant_embedding_multiplier_is_part_of_the_signal() -> None:
    """Found by a new-user trial: Granite's ``embedding_multiplier`` (12 in its released
    configs) read 'exploding' at ``embed_tokens`` (grad-norm ratio 12: the gradient into a
    row whose output is used only times c is c x the stream's, whatever the weights), and
    Pegasus at d 512 with ``scale_embedding`` (token embeddings times sqrt(d) = 22.6, plus
    sinusoidal positions of rms 0.7) read 'exploding' at its positions (rms/ref 16: the
    reference was the unscaled embedding output, 0.044). A constant no init can change is the architecture's: the row is
    judged as its output times c (forward reference) and its gradient divided by c."""
    tf = pytest.importorskip("transformers")
    ids = torch.randint(2, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    cfg = tf.GraniteConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=128, vocab_size=256,
                           max_position_embeddings=64, embedding_multiplier=12.0,
                           residual_multiplier=0.22, attention_multiplier=0.0078125,
                           logits_scaling=8.0, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    granite = tf.GraniteForCausalLM(cfg)
    initwise.init(granite, "auto", seed=0)
    rep = initwise.audit(granite, {"input_ids": ids})
    assert rep.verdict == "healthy", (rep.forward_reason, rep.backward_reason)
    emb = next(r for r in rep.rows if r.name == "model.embed_tokens")
    assert emb.out_scale == pytest.approx(12.0)
    assert emb.grad_ratio is not None and emb.grad_ratio / 12 == pytest.approx(1, rel=0.5)
    assert any("model.embed_tokens" in b and "12" in b for b in rep.by_design)

    cfg = tf.PegasusConfig(d_model=512, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=256,
                           max_position_embeddings=64, pad_token_id=0, scale_embedding=True,
                           decoder_start_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    pegasus = tf.PegasusForConditionalGeneration(cfg)
    initwise.init(pegasus, "auto", seed=0)
    rep = initwise.audit(pegasus, {"input_ids": ids, "labels": ids})
    assert rep.forward_verdict == "healthy", rep.forward_reason
    pos = next(r for r in rep.rows if r.name == "model.encoder.embed_positions")
    assert pos.reference == pytest.approx(1.0, rel=0.1)  # the scaled token embeddings: rms 1
    tok = next(r for r in rep.rows if r.name == "model.encoder.embed_tokens")
    assert tok.out_scale == pytest.approx(512**0.5)


def test_padding_tokens_in_the_inputs_are_named() -> None:
    """Found by a new-user trial (Bamba, Zamba2, Jamba under ``auto`` read ``in_proj``
    'exploding', grad-norm ratio 23-94): one padding token in the batch. Its embedding is a
    zero vector, so ``in_proj``'s output there is zero and the gated RMSNorm divides by
    sqrt(eps) in the backward pass (the gate slice: ||dL/dz|| 118 against 0.25 for x, B, C and
    0.056 for dt). Without the padding token the same model reads healthy; with it the
    report names the padding tokens as the cause (it did not)."""
    from transformers import BambaConfig, BambaForCausalLM

    cfg = BambaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                      attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1,
                      mamba_d_state=8, mamba_expand=2, pad_token_id=0)
    torch.manual_seed(0)
    model = BambaForCausalLM(cfg).eval()
    initwise.init(model, "auto", seed=0)
    ids = torch.randint(1, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    clean = initwise.audit(model, ids)
    assert clean.verdict == "healthy", clean.backward_reason
    assert not any("padding" in n for n in clean.notes)
    ids[3, 1] = 0
    rep = initwise.audit(model, ids)
    assert rep.backward_verdict == "exploding"  # what the gradient really is at that position
    assert "model.embed_tokens: 1 of 64" in rep.backward_reason
    assert any("padding tokens" in n for n in rep.notes)


def test_olmo2_post_sublayer_norms_read_healthy_without_padding() -> None:
    """Found by a new-user trial (OLMo 2 read 'vanishing' at its MLP, under HF's init and
    ``auto``): not its post-sublayer norms. A padding token opening a sequence attends only to
    itself (value zero), so both post-norms read zero vectors there and the post-feed-forward
    norm's input gradient, the reference of the MLP rows, is inflated by 1/sqrt(eps) at a
    position where the MLP passes nothing back. Pad-free, and with the padding token mid-
    sequence, OLMo 2 reads healthy; with it first, the reason names the padding tokens."""
    from transformers import Olmo2Config, Olmo2ForCausalLM

    cfg = Olmo2Config(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                      pad_token_id=1)
    torch.manual_seed(0)
    model = Olmo2ForCausalLM(cfg).eval()
    initwise.init(model, "auto", seed=0)
    ids = torch.randint(2, 128, (4, 16), generator=torch.Generator().manual_seed(10))
    assert initwise.audit(model, ids).verdict == "healthy"
    ids[2, 5] = 1
    assert initwise.audit(model, ids).verdict == "healthy"
    ids[2, 5], ids[2, 0] = 7, 1
    rep = initwise.audit(model, ids)
    assert rep.backward_verdict == "vanishing"
    assert "padding tokens" in rep.backward_reason


class _PooledEncoder(nn.Module):
    """Pre-norm transformer encoder without a final norm, mean-pooled over tokens by a
    functional ``mean`` before a 5-class head: the common sentence classifier."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.emb = nn.Embedding(300, 64)
        self.enc = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.out = nn.Linear(64, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.enc(self.emb(ids)).mean(dim=1))


def test_functional_pooling_before_the_head_opens_a_backward_segment() -> None:
    """A mean over the 32 tokens between the last block and the head divides the gradient
    norm by sqrt(32) by design; the rows below it are judged against the gradient on both
    sides of that reduction, measured, as across a pooling module. A model whose gradient
    really decays below the pooling still reads vanishing."""
    torch.manual_seed(0)
    model = _PooledEncoder()
    initwise.init(model, "auto", seed=0)
    ids = torch.randint(0, 300, (8, 32), generator=torch.Generator().manual_seed(1))
    rep = initwise.audit(model, ids)
    assert rep.backward_verdict == "healthy", rep.backward_reason
    head = next(r for r in rep.rows if r.name == "out")
    assert head.pool_grads is not None
    g_out, g_in = head.pool_grads  # the mean's output and input
    assert g_in / g_out == pytest.approx(32 ** -0.5, rel=1e-4)
    below = [r for r in rep.rows if r.grad_segment == head.index]
    assert below and all(r.grad_flag in ("ok", "n/a") for r in below)
    # the same model without that boundary (scope 'global' judges everything against the
    # output gradient) reads the pooling's factor as vanishing: the boundary is what changed
    glob = initwise.audit(model, ids, thresholds=initwise.AuditThresholds(scope="global"))
    assert glob.backward_verdict == "vanishing"
    # a per-token MLP of 12 tanh layers at a third of the critical std, mean-pooled before
    # its head: its gradient decays layer by layer below the pooling, and is still found
    torch.manual_seed(0)
    deep = _PooledTanhMLP()
    rep = initwise.audit(deep, ids)
    assert rep.backward_verdict == "vanishing"
    first = rep.rows[rep.backward_first]
    assert first.name.startswith("body.") and first.grad_segment == len(rep.rows) - 2  # 'head'


class _PooledTanhMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(300, 64)
        self.body = nn.Sequential(*[m for _ in range(12) for m in (nn.Linear(64, 64), nn.Tanh())])
        for m in self.body:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=64 ** -0.5 / 3)
        self.head = nn.Linear(64, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.emb(ids)).mean(dim=1))
