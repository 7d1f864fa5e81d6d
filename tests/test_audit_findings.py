"""Issue 14's findings, each on the real model that showed it, and the output-level check."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initwise import AuditReport, audit, init


def _cnn(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- audit after init(model, "auto") on BatchNorm models ------------------------------------

def test_audit_with_the_plan_of_init_auto_on_a_batchnorm_model() -> None:
    torch.manual_seed(0)
    net = _cnn(512)  # 512 ones: a one-pass float32 std reads ~3e-4 here
    plan = init(net, "auto")
    rep = audit(net, _x(4, 3, 8, 8), plan=plan)
    w = {x.name: x for x in rep.weights}
    for bn in ("1.weight", "4.weight"):
        assert w[bn].std == 0.0 and w[bn].mean == 1.0
        assert w[bn].intended_std == 0.0 and w[bn].matches_plan is True
    assert w["0.weight"].matches_plan is True and w["0.weight"].scheme is not None
    assert not any("differs from the plan" in n for n in rep.notes)
    assert rep.verdict == "healthy"


# -- train mode on HF Wav2Vec2 ---------------------------------------------------------------

def test_train_mode_runs_wav2vec2_which_sets_requires_grad_on_its_input() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    cfg = T.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, conv_dim=(32, 32), conv_stride=(5, 2),
                           conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                           num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    model = T.Wav2Vec2Model(cfg).eval()
    x = _x(2, 1600)
    rep = audit(model, x)  # mode="train"
    assert rep.mode == "train"
    names = [r.name for r in rep.rows]
    assert "feature_extractor.conv_layers.0.conv" in names
    assert rep.rows[0].name == "feature_extractor.conv_layers.0.conv" and rep.rows[0].reads_input
    assert not x.requires_grad and not model.training  # the caller's tensor and flags


# -- torch.compile ---------------------------------------------------------------------------

def _same_rows(a: AuditReport, b: AuditReport) -> None:
    assert [(r.name, r.call, r.type) for r in a.rows] == [(r.name, r.call, r.type) for r in b.rows]
    for ra, rb in zip(a.rows, b.rows, strict=True):
        assert ra.rms == pytest.approx(rb.rms, rel=1e-6, abs=1e-12)
        assert (ra.grad_norm is None) == (rb.grad_norm is None)
    assert [w.name for w in a.weights] == [w.name for w in b.weights]
    assert (a.verdict, a.forward_verdict, a.backward_verdict) == \
        (b.verdict, b.forward_verdict, b.backward_verdict)


def test_compiled_cnn_is_audited_eagerly_with_the_same_rows() -> None:
    torch.manual_seed(0)
    net = _cnn()
    x = _x(8, 3, 16, 16)
    eager = audit(net, x)
    compiled = audit(torch.compile(net), x)  # would fail inside dynamo if traced
    _same_rows(eager, compiled)
    assert eager.verdict == "healthy"


def test_compiled_gpt2_gives_the_same_rows_as_eager() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = T.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=32,
                       bos_token_id=0, eos_token_id=0)
    model = T.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 500, (2, 8), generator=torch.Generator().manual_seed(0))
    eager = audit(model, ids)
    assert len(eager.rows) > 20
    _same_rows(eager, audit(torch.compile(model), ids))
    model.compile()  # compiled in place: run eagerly for the audit
    _same_rows(eager, audit(model, ids))


# -- parametrizations ----------------------------------------------------------------------

def _mlp(weight_norm: bool, width: int = 512, depth: int = 4) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        layers += [nn.utils.parametrizations.weight_norm(lin) if weight_norm else lin, nn.ReLU()]
    return nn.Sequential(*layers)


def test_weight_normed_mlp_reads_like_the_same_function_without_weight_norm() -> None:
    x = _x(16, 512)
    plain, normed = audit(_mlp(False), x), audit(_mlp(True), x)
    assert not any(r.type in ("_WeightNorm", "ParametrizationList") for r in normed.rows)
    assert [(r.name, r.type) for r in normed.rows] == [(r.name, r.type) for r in plain.rows]
    for a, b in zip(plain.rows, normed.rows, strict=True):
        assert a.rms == pytest.approx(b.rms, rel=1e-4)
    assert normed.verdict == plain.verdict == "healthy"


# -- constant-index additive tables ----------------------------------------------------------

def test_t5_relative_attention_bias_and_clip_position_embedding_are_not_signal() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    ids = torch.randint(0, 500, (4, 12), generator=torch.Generator().manual_seed(0))
    t5 = T.T5ForConditionalGeneration(T.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                                 num_heads=4, vocab_size=500,
                                                 decoder_start_token_id=0))
    rep = audit(t5, {"input_ids": ids, "decoder_input_ids": ids})
    bias = [r for r in rep.rows if r.name.endswith("relative_attention_bias")]
    assert bias and all(r.constant and r.flag == "n/a" for r in bias)
    tokens = [r for r in rep.rows if r.type == "Embedding" and r not in bias]
    assert tokens and not any(r.constant for r in tokens)  # the token tables are signal
    assert rep.verdict == "healthy"

    vision = T.CLIPVisionModel(T.CLIPVisionConfig(hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  image_size=32, patch_size=8))
    rep = audit(vision, _x(4, 3, 32, 32))
    pos = next(r for r in rep.rows if r.name.endswith("position_embedding"))
    assert pos.constant and pos.flag == "n/a" and pos.grad_flag == "n/a"
    assert rep.verdict == "healthy"


def test_gpt2_position_table_is_constant_and_token_table_is_signal_even_for_one_example() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=500,
                                           n_positions=32, bos_token_id=0, eos_token_id=0))
    for batch in (1, 4):
        ids = torch.randint(0, 500, (batch, 8), generator=torch.Generator().manual_seed(0))
        rows = {r.name: r for r in audit(model, ids).rows}
        assert rows["transformer.wpe"].constant and not rows["transformer.wte"].constant


# -- saturation --------------------------------------------------------------------------------

def test_relu6_saturation_counts_outputs_near_6_not_its_zeros() -> None:
    net = nn.Sequential(nn.Identity(), nn.ReLU6())
    x = 3.0 * _x(64, 256)
    row = next(r for r in audit(net, x).rows if r.type == "ReLU6")
    near6 = float((x >= 6 - 0.02 * 6).double().mean())
    assert row.saturated_fraction == pytest.approx(near6, abs=1e-12)
    assert row.zero_fraction == pytest.approx(float((x <= 0).double().mean()), abs=1e-12)
    assert row.saturated_fraction < 0.05 < 0.45 < row.zero_fraction

    tanh = next(r for r in audit(nn.Sequential(nn.Identity(), nn.Tanh()), x).rows
                if r.type == "Tanh")
    y = torch.tanh(x)
    both = float(((y <= -1 + 0.04) | (y >= 1 - 0.04)).double().mean())
    assert tanh.saturated_fraction == pytest.approx(both, abs=1e-12)  # tanh: both sides


# -- output-level checks -----------------------------------------------------------------------

def test_classifier_with_class_targets_is_judged_against_ln_c() -> None:
    torch.manual_seed(0)
    net = _cnn()
    x, y = _x(8, 3, 16, 16), torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
    rep = audit(net, x, targets=y, loss_fn=F.cross_entropy)
    out = rep.output
    assert out is not None and out.kind == "classifier" and out.classes == 10
    assert out.source == "targets" and out.expected_loss == pytest.approx(math.log(10))
    assert out.target_loss == pytest.approx(rep.loss, rel=1e-5)
    assert out.verdict == "healthy" and 1.0 <= out.loss_ratio < 1.2
    with torch.no_grad():
        net[-1].weight.mul_(100)
    rep = audit(net, x, targets=y, loss_fn=F.cross_entropy)
    assert rep.output is not None and rep.output.verdict == "exploding"
    assert rep.verdict == "exploding"
    back = AuditReport.from_json(rep.to_json())
    assert back.output == rep.output
    assert "ln C" in rep.to_markdown()


def test_regression_targets_compare_output_scale_with_the_targets() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    x, t = _x(64, 32), _x(64, 1, seed=5)
    rep = audit(net, x, targets=t, loss_fn=F.mse_loss)
    out = rep.output
    assert out is not None and out.kind == "regression" and out.verdict == "healthy"
    assert out.expected_loss == pytest.approx(float((t ** 2).mean()), rel=1e-6)
    assert out.measured_loss == pytest.approx(rep.loss, rel=1e-5)
    with torch.no_grad():
        net[2].weight.mul_(30)
    assert audit(net, x, targets=t, loss_fn=F.mse_loss).output.verdict == "exploding"  # type: ignore[union-attr]


def test_no_output_check_without_a_known_head_or_targets() -> None:
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    assert audit(net, _x(4, 8)).output is None


def test_hf_classifier_uses_num_labels() -> None:
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    vit = T.ViTForImageClassification(T.ViTConfig(hidden_size=64, num_hidden_layers=1,
                                                  num_attention_heads=4, intermediate_size=128,
                                                  image_size=16, patch_size=8, num_labels=7))
    out = audit(vit, _x(4, 3, 16, 16)).output
    assert out is not None and (out.kind, out.classes, out.source) == \
        ("classifier", 7, "config.num_labels")


# -- weight statistics: one-pass where well conditioned, shifted-data elsewhere ----------------

def test_weight_statistics_match_float64_on_gpt2_for_both_variance_paths() -> None:
    """Every parameter's mean, std and rms against float64, on an HF GPT-2 whose tensors take
    both paths: wide (c_attn 64x192) and tall (wte 500x64, c_proj 256x64) weights are
    well conditioned (one pass); zero biases, all-ones LayerNorm weights and a planted tensor
    of mean 2 and std ~3e-4 (mean² / variance ~5e7: a one-pass float32 variance would be off
    by ~100%) take the exact shifted-data pass."""
    T = pytest.importorskip("transformers")
    torch.manual_seed(0)
    m = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=500,
                                       n_positions=64))
    with torch.no_grad():
        m.transformer.h[0].mlp.c_fc.weight.uniform_(2.0, 2.001)
    rep = audit(m, torch.randint(0, 500, (4, 16), generator=torch.Generator().manual_seed(1)))
    names = dict(m.named_parameters())
    for ws in rep.weights:
        d = names[ws.name].detach().double().reshape(-1)
        n = d.numel()
        # float32 sums of n terms: relative rounding ~n^0.5 * 6e-8 (here n <= 32768): 1e-5
        # leaves a wide margin
        assert ws.rms == pytest.approx(float(d.square().mean().sqrt()), rel=1e-5, abs=0.0)
        assert abs(ws.mean - float(d.mean())) <= 1e-6 * float(d.abs().mean()) + 1e-30, ws.name
        std = float(d.std(unbiased=False))
        if std == 0.0:
            assert ws.std == 0.0, ws.name
        else:
            assert ws.std == pytest.approx(std, rel=1e-4), (ws.name, n)
    w = {x.name: x for x in rep.weights}
    assert w["transformer.h.0.ln_1.weight"].std == 0.0
    assert w["transformer.h.0.attn.c_attn.bias"].std == 0.0
    assert 2e-4 < w["transformer.h.0.mlp.c_fc.weight"].std < 3.5e-4


class _DiscardedQueries(nn.Module):
    """Attention whose output is read only at the class token (CvT's last stage): the queries
    of the other positions, made by their own projection, never reach the loss."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.a, self.q, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        q = torch.cat([h[:, :1], self.q(h[:, 1:])], 1)
        att = torch.softmax(q @ h.transpose(1, 2) / math.sqrt(h.shape[-1]), -1) @ h
        return self.head(att[:, 0])


def test_a_path_the_forward_discards_is_not_vanishing() -> None:
    """CvT (cls_token in its last stage) read "vanishing: grad-norm ratio 0" at the spatial
    query projection of its last layer: exactly zero, because nothing reads those queries'
    outputs. A row whose gradient is exactly 0 with no row cutting it off is not judged."""
    torch.manual_seed(0)
    net = _DiscardedQueries()
    init(net, "auto", seed=0)
    rep = audit(net, _x(8, 12, 32))
    q = next(r for r in rep.rows if r.name == "q")
    assert q.grad_norm == 0.0 and q.grad_flag == "n/a"
    assert rep.verdict == "healthy", rep.backward_reason
    assert any("does not reach the loss" in n for n in rep.notes)


def test_a_gradient_cut_off_by_a_saturated_layer_stays_vanishing() -> None:
    """The same exact zero made by a layer (every Hardtanh input beyond ±1: derivative 0) is a
    failure of the init, and stays vanishing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 32), nn.Hardtanh(), nn.Linear(32, 10))
    with torch.no_grad():
        net[0].bias.fill_(50.0)
    rep = audit(net, _x(64, 32))
    assert rep.rows[0].grad_norm == 0.0 and rep.rows[0].grad_flag == "vanishing"
    assert rep.backward_verdict == "vanishing"


def test_a_row_reading_a_reshaped_row_output_has_that_row_as_its_source() -> None:
    """WavLM's gru_rel_pos_linear reads the heads view (view + permute) of the attention's
    input and gates the relative position bias: its gradient is ~1e-3 of the stream's by
    design, and the signal goes around it. The view was not recognised as the row's output, so
    the row had no source and WavLM read "vanishing: grad-norm ratio 0.000784"."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4, num_buckets=32, max_bucket_distance=100, num_labels=5,
                         layerdrop=0.0)
    net = tf.WavLMForSequenceClassification(cfg)
    init(net, "auto", seed=0)
    rep = audit(net, {"input_values": 0.3 * _x(2, 800)})
    gates = [r for r in rep.rows if r.name.endswith("gru_rel_pos_linear")]
    assert len(gates) == 2 and all(r.source is not None for r in gates)
    assert all(r.grad_ratio is not None and r.grad_ratio < 0.01 and r.grad_flag == "ok" for r in gates)
    assert rep.verdict == "healthy", rep.backward_reason


class _MeanPooled(nn.Module):
    """Features averaged over time by a functional mean (HF audio classifiers'
    ``hidden_states.mean(dim=1)``), then a classifier."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.proj, self.act, self.post, self.head = nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.post(self.act(self.proj(x))).mean(1))


@pytest.mark.parametrize("steps", [16, 400])
def test_a_functional_mean_over_time_is_a_backward_segment_boundary(steps: int) -> None:
    """Averaging T positions divides the gradient's norm by sqrt(T) whatever the init: a
    pooling row already opened a segment, a functional ``.mean(1)`` did not, so the same
    healthy model read "vanishing" (grad-norm ratio 0.05 at T = 400; WavLM at 4000 samples,
    0.072) or healthy (T = 16) by its input length. Now healthy at both."""
    torch.manual_seed(0)
    net = _MeanPooled()
    init(net, "auto", seed=0)
    rep = audit(net, _x(8, steps, 32))
    head = next(r for r in rep.rows if r.name == "head")
    assert head.pool_grads is not None  # measured on both sides of the mean
    g_out, g_in = head.pool_grads
    assert g_in / g_out == pytest.approx(steps ** -0.5, rel=1e-4)
    post = next(r for r in rep.rows if r.name == "post")
    assert post.grad_segment == head.index
    assert rep.verdict == "healthy", rep.backward_reason


def test_vanishing_before_a_functional_mean_is_still_found() -> None:
    torch.manual_seed(0)
    net = _MeanPooled()
    init(net, "auto", seed=0)
    with torch.no_grad():
        net.post.weight.mul_(1e-3)  # the gradient reaching proj is 1000x below post's
    rep = audit(net, _x(8, 400, 32))
    assert rep.backward_verdict == "vanishing"
    assert rep.rows[rep.backward_first].name in ("act", "proj")


class _ZeroFedLSTM(nn.Module):
    """An LSTM that reads a constant zero (Encodec's decoder reads its quantizer's codebook,
    a zeros buffer until a checkpoint is loaded): its output is exactly 0."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.lstm, self.head = nn.Linear(8, 16), nn.LSTM(16, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.lin(x) * 0.0)[0])


def test_rnn_biases_are_biases_for_the_dead_layer_reason() -> None:
    """``bias_hh_l0`` (0 under ``auto``) was counted as a weight (the test was
    ``name.endswith("bias")``): an LSTM with nonzero weights fed zeros read "a dead layer:
    all-zero weights and output". Its weights are not zero; with all-zero weights it is."""
    torch.manual_seed(0)
    net = _ZeroFedLSTM()
    init(net, "auto", seed=0)
    rep = audit(net, _x(4, 10, 8))
    row = next(r for r in rep.rows if r.name == "lstm")
    assert row.zero_fraction == 1.0 and not row.zero_init
    assert rep.verdict == "vanishing" and "all-zero weights" not in (rep.forward_reason or "")
    with torch.no_grad():
        for n, p in net.lstm.named_parameters():
            if n.startswith("weight"):
                p.zero_()
    assert next(r for r in audit(net, _x(4, 10, 8)).rows if r.name == "lstm").zero_init
