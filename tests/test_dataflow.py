"""What ``auto`` reads from a model's dataflow (issue 13 items 2-4), on small hand-written models.

Each case is a structure an unseen architecture may have; the zoo (tests/test_zoo.py) checks
the same on real Hugging Face families.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import initwise
from initwise.model import dataflow


class GatedMLP(nn.Module):  # registers act first: order is not dataflow
    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.act = nn.SiLU()
        self.down = nn.Linear(4 * d, d)
        self.up = nn.Linear(d, 4 * d)
        self.gate = nn.Linear(d, 4 * d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return x + self.down(self.act(self.gate(h)) * self.up(h))


def test_gated_product_and_norm_inputs() -> None:
    p = initwise.plan(GatedMLP(), "auto")
    assert p.source == "dataflow"
    assert p["down.weight"].activation == "silu"
    assert p["up.weight"].activation == "linear" and p["gate.weight"].activation == "linear"
    assert "residual_out" in p["down.weight"].roles


class SEBlock(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.fc1 = nn.Linear(c, c // 4)
        self.fc2 = nn.Linear(c // 4, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3))))))
        return F.relu(x + y * s[:, :, None, None])


class SENet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(SEBlock(), SEBlock())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(F.relu(self.stem(x))).mean((2, 3)))


def test_residual_writer_skips_squeeze_excitation_and_stem() -> None:
    p = initwise.plan(SENet(), "fixup")
    res = {e.name for e in p if "residual_out" in e.roles}
    assert res == {"blocks.0.conv2.weight", "blocks.1.conv2.weight"}  # not the SE fc2, not the stem
    assert "branch" not in p["stem.weight"].roles
    z = initwise.init(SENet(), "zero_residual", seed=0)
    assert z["blocks.0.bn2.weight"].scheme == "zeros"  # the branch's trailing norm ends it


def test_fused_contiguous_and_interleaved_parts() -> None:
    class Packed(nn.Module):
        def __init__(self, interleaved: bool) -> None:
            super().__init__()
            self.qkv = nn.Linear(32, 96)
            self.interleaved = interleaved

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.qkv(x)
            if self.interleaved:  # per head [q, k, v] (GPT-NeoX)
                q, k, v = y.view(*x.shape[:-1], 4, 24).chunk(3, dim=-1)
            else:
                q, k, v = y.chunk(3, dim=-1)
            return q * k + v

    a = initwise.plan(Packed(False), "xavier")["qkv.weight"]
    b = initwise.plan(Packed(True), "xavier")["qkv.weight"]
    assert (a.blocks, a.fan_out) == (3, 32.0)  # three [32, 32] blocks
    assert (b.blocks, b.fan_out) == (1, 32.0)  # interleaved: the fans, drawn as one tensor
    assert a.std == pytest.approx(b.std) == pytest.approx(math.sqrt(2 / 64))


def test_rotary_halves_are_not_parts() -> None:
    class Rope(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.q(x)
            a, b = q.chunk(2, dim=-1)
            return torch.cat((-b, a), dim=-1)

    assert initwise.plan(Rope(), "xavier")["q.weight"].blocks == 1


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(100, 32)
        self.pos = nn.Embedding(16, 32)
        self.fixed = nn.Embedding(100, 32)  # a frozen table (looked up by the input)
        self.fixed.weight.requires_grad_(False)
        self.cls = nn.Parameter(torch.randn(1, 1, 32) * 0.02)
        self.scale = nn.Parameter(torch.tensor(2.5))
        self.body = nn.Linear(32, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.tok(ids) + self.pos(pos) + self.fixed(ids)
        h = torch.cat([self.cls.expand(ids.shape[0], -1, -1), h], dim=1)
        logits = self.body(h) @ self.tok.weight.T
        return logits * self.scale.exp()


def test_do_no_harm_and_ties() -> None:
    torch.manual_seed(0)
    m = Tokens()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    p = initwise.init(m, "auto", seed=0)
    assert p["tok.weight"].role == "tied_embedding"
    assert p["tok.weight"].std == pytest.approx(1 / math.sqrt(32))  # logits O(1)
    assert p["pos.weight"].role == "position" and p["pos.weight"].action == "keep"
    assert p["fixed.weight"].action == "keep" and "frozen" in p["fixed.weight"].reason
    assert p["cls"].role == "other" and p["cls"].action == "keep"
    assert p["scale"].role == "other" and p["scale"].action == "keep"  # exp(scale): meaning
    for n in ("pos.weight", "fixed.weight", "cls", "scale"):
        assert torch.equal(before[n], dict(m.named_parameters())[n]), n
    # a rule that names a tensor still applies
    pol = initwise.Policy((initwise.Rule("zeros", name="fixed.weight"), *initwise.get_policy("auto").rules))
    m2 = Tokens()
    initwise.init(m2, pol, seed=0)
    assert torch.all(m2.fixed.weight == 0)


def test_unscaled_attention_gets_a_smaller_query() -> None:
    class NoScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), dim=-1)
            return a @ self.v(x)

    p = initwise.plan(NoScale(), "auto")
    assert p["q.weight"].std == pytest.approx(1 / 8 / 8)  # 1/sqrt(fan_in) x 1/sqrt(d)
    assert p["k.weight"].std == pytest.approx(1 / 8)
    assert "not scaled by 1/sqrt(d)" in (p["q.weight"].post or "")


def test_queries_scaled_before_the_product_count_and_packed_weights_are_not_shrunk() -> None:
    """Found by a new-user trial (SigLIP's pooling head): torch's MultiheadAttention scales q by
    d^-1/2 *before* ``bmm``/``baddbmm``; that is the logits' 1/sqrt(d), so the packed
    ``in_proj_weight`` keeps 1/sqrt(fan_in) (it had x0.25 on all of q, k and v). A packed
    q-k-v whose logits really lack the factor is not shrunk as a whole (a note says so)."""

    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.probe = nn.Parameter(torch.randn(1, 1, 64))
            self.mha = nn.MultiheadAttention(64, 4, batch_first=True)
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.probe.expand(x.shape[0], -1, -1)
            return self.fc(self.mha(q, x, x)[0][:, 0])

    for model, name in ((nn.MultiheadAttention(64, 4), "in_proj_weight"), (Pool(), "mha.in_proj_weight")):
        e = initwise.plan(model, "auto")[name]
        assert e.std == pytest.approx(1 / 8) and "not scaled" not in (e.post or ""), name

    class Packed(nn.Module):  # logits q.k without any 1/sqrt(d), q-k-v from one weight
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(64, 192)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v

    p = initwise.plan(Packed(), "auto")
    assert p["qkv.weight"].std == pytest.approx(1 / 8)
    assert any("packed projection" in n for n in p.notes)


def test_model_init_semantics_from_copy() -> None:
    class Ssm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.A_log = nn.Parameter(torch.empty(8, 4))
            self.proj = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x) * torch.exp(self.A_log).sum(-1)

        def _init_weights(self, module: nn.Module) -> None:
            if module is self:
                with torch.no_grad():
                    self.A_log.copy_(torch.log(torch.arange(1.0, 5.0)).expand(8, 4))

    m = Ssm()
    m._init_weights(m)
    assert "copy_" in dataflow.model_init_semantics(m)["A_log"]
    keep = m.A_log.detach().clone()
    p = initwise.init(m, "auto", seed=0)
    assert p["A_log"].action == "keep" and torch.equal(m.A_log, keep)


def test_value_reads_on_meta_take_a_branch() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x > 0).any()) and x.sum().item() > -1e9:
                return self.b(torch.tanh(self.a(x)))
            return self.b(torch.tanh(self.a(-x)))

    p = initwise.plan(Branchy())
    assert p.source == "dataflow" and p["b.weight"].activation == "tanh"


def test_classifier_head_gets_unit_logits_from_the_propagated_scale() -> None:
    class Wide(nn.Module):  # features summed from four unit-scale paths: second moment 4
        def __init__(self) -> None:
            super().__init__()
            self.paths = nn.ModuleList([nn.Linear(16, 32) for _ in range(4)])
            self.head = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(sum(p(x) for p in self.paths))

    torch.manual_seed(0)
    m = Wide()
    p = initwise.init(m, "auto", seed=0)
    assert p["head.weight"].std == pytest.approx(1 / math.sqrt(32 * 4))
    x = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = m(x)
    assert float(logits.var()) == pytest.approx(1.0, rel=0.25)


def test_gathered_bias_table_is_left_alone() -> None:
    """A relative-position bias table gathered by a constant index and reshaped (Swin, T5-like)
    is not a weight, however 2-D it is."""

    class RelBias(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Parameter(torch.randn(9, 2) * 0.02)
            self.register_buffer("index", torch.randint(0, 9, (16,)))
            self.qk = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bias = self.table[self.index].view(4, 4, 2).permute(2, 0, 1)
            return self.qk(x) + bias.sum(0)[: x.shape[-2], : x.shape[-1]].mean()

    m = RelBias()
    keep = m.table.detach().clone()
    p = initwise.init(m, "auto", seed=0)
    assert p["table"].role == "other" and p["table"].action == "keep"
    assert torch.equal(m.table, keep)


def test_two_input_forward_is_synthesized() -> None:
    """``nn.Transformer.forward(src, tgt)``: read from the dataflow, not registration order."""
    m = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                       dim_feedforward=64, batch_first=True)
    p = initwise.plan(m, "zero_residual")
    assert p.source == "dataflow"
    outs = {e.name for e in p if "residual_out" in e.roles}
    assert "decoder.layers.0.multihead_attn.out_proj.weight" in outs
    assert "encoder.layers.0.linear2.weight" in outs


def test_skip_first_residual_sum_keeps_the_whole_branch() -> None:
    """``x + f(x)`` (the skip written first, as Hugging Face blocks do) gives the same branch
    as ``f(x) + x``: both weights of the branch, so Fixup's m = 2 and L^(-1/(2m-2)) applies."""
    class Block(nn.Module):
        def __init__(self, skip_first: bool) -> None:
            super().__init__()
            self.fc1, self.fc2, self.skip_first = nn.Linear(8, 8), nn.Linear(8, 8), skip_first

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc2(torch.relu(self.fc1(x)))
            return x + h if self.skip_first else h + x

    for skip_first in (True, False):
        net = nn.Sequential(nn.Linear(4, 8), *[Block(skip_first) for _ in range(4)])
        tr = dataflow.trace(net, torch.randn(2, 4))
        assert [r[0] for r in tr.residual] == [(f"{i}.fc1.weight", f"{i}.fc2.weight")
                                              for i in range(1, 5)]
        p = initwise.plan(net, "fixup", example_inputs=torch.randn(2, 4))
        e = next(e for e in p.entries if e.name == "1.fc1.weight")
        assert e.std == pytest.approx(4 ** -0.5 / math.sqrt(8) * e.gain, rel=1e-12)


def test_relu_of_a_relu_keeps_the_second_moment() -> None:
    """relu(relu(h)) = relu(h): E[x²] stays 1/2 (it was halved again, giving the head gain 2
    instead of √2 and logits of second moment 2). Measured: the logits' E[y²] is 1 up to the
    finite-width spread of the head's row norms (relative SE √(2/512) per row, averaged)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.ReLU(), nn.Linear(512, 512))
    p = initwise.init(net, "auto", example_inputs=torch.randn(2, 256), seed=0)
    assert p["3.weight"].gain == pytest.approx(math.sqrt(2))
    with torch.no_grad():
        y = net(torch.randn(4096, 256, generator=torch.Generator().manual_seed(1)))
    v = float(y.pow(2).mean())
    assert abs(v - 1) < 0.1  # before: 2


def test_tied_head_is_found_without_dataflow() -> None:
    """Found by a new-user trial (JetMoe, whose forward the meta trace cannot run): in the
    module-order fallback a table tied to a linear head is still the head (tied_embedding,
    std 1/sqrt(d)), not an N(0, 1) embedding giving logits of std sqrt(d) (63.9 nats of initial
    loss there against ln V = 4.85)."""
    V, d = 128, 64

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(V, d)
            self.lin = nn.Linear(d, d)
            self.head = nn.Linear(d, V, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.emb(ids).reshape(-1, d)
            # data-dependent sizes (as a token router's): neither meta nor fx can run them
            sizes = torch.bincount((ids.reshape(-1) % 2), minlength=2).tolist()
            h = torch.cat([torch.relu(self.lin(part)) for part in h.split(sizes)])
            return self.head(h).reshape(*ids.shape, V)

    m = LM()
    p = initwise.init(m, "auto", seed=0)
    assert p.source == "module_order"
    e = p["emb.weight"]
    assert e.role == "tied_embedding" and e.std == pytest.approx(d**-0.5)
    ids = torch.randint(0, V, (8, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = m(ids)
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), torch.randint(0, V, (8 * 32,)))
    assert abs(float(loss) - math.log(V)) < 1.0


def test_a_tensor_the_forward_never_reads_is_left_as_made() -> None:
    """Found by a new-user trial (DINOv2's ``mask_token``, zeros in HF, used only when
    masking): a ≥2-D parameter of a module initwise has no layout for, which the traced
    forward never reads, is not a weight to redraw; a never-called nn.Linear still is one."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       image_size=32, patch_size=8)
    m = Dinov2Model(cfg)
    before = m.embeddings.mask_token.detach().clone()
    p = initwise.init(m, "auto", seed=0)
    e = p["embeddings.mask_token"]
    assert p.source == "dataflow" and e.role == "other" and e.action == "keep", (e.role, e.action)
    assert torch.equal(m.embeddings.mask_token, before)

    class Spare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    p = initwise.plan(Spare(), "auto")
    assert p["unused.weight"].role == "weight" and p["unused.weight"].action == "init"


def test_a_stack_indexed_per_expert_has_per_matrix_fans() -> None:
    """Found by a new-user trial (JetMoe's ParallelExperts: F.linear(x_i, self.weight[i])): the
    axis indexed away is one matrix per index, not a receptive field multiplying the fans
    (fan_in was E x in, std halved at 4 experts)."""

    class Experts(nn.Module):
        def __init__(self, e: int, n_in: int, n_out: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(e, n_out, n_in))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parts = x.chunk(self.weight.shape[0], dim=0)
            return torch.cat([nn.functional.linear(p, self.weight[i]) for i, p in enumerate(parts)])

    class MoE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = Experts(4, 64, 96), Experts(4, 96, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(torch.relu(self.up(x)))

    p = initwise.plan(MoE(), "auto", example_inputs=(torch.randn(8, 64),))
    assert p["up.weight"].fan_in == 64 and p["down.weight"].fan_in == 96
    assert p["up.weight"].std == pytest.approx(1 / 8)
    assert p["down.weight"].std == pytest.approx(2**0.5 / 96**0.5)  # after a ReLU


def test_sigmoid_gated_products_have_exact_gains() -> None:
    """Found by a new-user trial (EfficientNet's squeeze-excite: project_conv reads
    silu(x) * sigmoid(se)): a product with the sigmoid of an independent tensor has second
    moment E[act^2] E[sigmoid^2], so its exact gain is the product of the two gains (a GLU
    a * sigmoid(b) gets the sigmoid's alone; x * sigmoid(x) is SiLU written out). Measured:
    one block keeps unit scale (it fell to ~0.54 per block, ~0.007 after 8); a stack of 8
    stays within a factor 2.5 (the inputs after the first block are no longer isotropic
    Gaussians, which a per-layer gain cannot see)."""
    from initwise import gains

    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.fc1, self.gate, self.fc2 = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(nn.functional.silu(self.fc1(x)) * torch.sigmoid(self.gate(x)))

    class GLU(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.a, self.b, self.out, self.c = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.out(self.a(x) * torch.sigmoid(self.b(x)))
            return self.c(y * torch.sigmoid(y))  # SiLU written out

    d = 256
    net = nn.Sequential(*[Block(d) for _ in range(8)])
    p = initwise.init(net, "auto", seed=0)
    e = p["0.fc2.weight"]
    assert e.activation == "silu*sigmoid"
    assert e.gain == pytest.approx(gains.gain("silu") * gains.gain("sigmoid"))
    x = torch.randn(512, d, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        one = float(net[0](x).pow(2).mean().sqrt())
        rms = float(net(x).pow(2).mean().sqrt())
    assert 0.9 < one < 1.1, one
    assert 0.4 < rms < 2.5, rms
    q = initwise.plan(GLU(d), "auto")
    assert q["out.weight"].activation == "linear*sigmoid"
    assert q["out.weight"].gain == pytest.approx(gains.gain("sigmoid"))
    assert q["c.weight"].activation == "silu"


def test_a_learned_affine_around_the_identity_passes_the_activation() -> None:
    """ConvNeXt V2's GRN, ``x + gamma * x * N(x) + beta`` (gamma = beta = 0 at init), sits
    between the GELU and pwconv2: the sum of ``x`` and terms a parameter scales is ``x``'s
    signal, so pwconv2 has the GELU gain. Measured (HF ConvNextV2, hidden 64): the branch
    output rms was 0.65 with gain 1; with the GELU gain it is 1 within sampling error
    (a 256-wide fan-in: a few per cent). A sum of two values (a residual add) still
    counts as linear."""
    from transformers import ConvNextV2Config, ConvNextV2Model

    from initwise import gains

    cfg = ConvNextV2Config(num_channels=3, hidden_sizes=[64], depths=[2], num_stages=1, image_size=32)
    m = ConvNextV2Model(cfg).eval()
    p = initwise.init(m, "auto", seed=0)
    e = p["encoder.stages.0.layers.0.pwconv2.weight"]
    assert (e.activation, e.gain) == ("gelu", pytest.approx(gains.gain("gelu")))
    assert p["encoder.stages.0.layers.0.pwconv1.weight"].activation == "linear"
    assert p["encoder.stages.0.layers.1.dwconv.weight"].activation == "linear"  # x + branch
    out: list[float] = []
    m.encoder.stages[0].layers[0].pwconv2.register_forward_hook(
        lambda mod, i, o: out.append(float(o.pow(2).mean().sqrt())))
    with torch.no_grad():
        m(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert 0.85 < out[0] < 1.15, out


def test_padding_aware_positions_and_relative_position_tables_are_positions() -> None:
    """XLM-R / RoBERTa look their position table up with ``cumsum(ids != pad)``: indices
    computed from the input, but counted along the sequence, so positions (they were N(0, 1)
    token embeddings; BERT's identical table is a position table). DeBERTa-v2 tests
    ``pad_id in input_ids[...]`` (a value read the trace now fakes: it fell back to module
    order) and reads its ``rel_embeddings`` table whole through a LayerNorm and the position
    projections: a relative-position table, not N(0, 1). Its logits are three query-key
    products (c2c, c2p, p2c) each divided by the constant tensor sqrt(3 d): as one product
    divided by sqrt(d), so the queries keep std 1/sqrt(fan_in)."""
    from transformers import DebertaV2Config, DebertaV2Model, XLMRobertaConfig, XLMRobertaModel

    kw = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=96, max_position_embeddings=64)
    torch.manual_seed(0)
    x = XLMRobertaModel(XLMRobertaConfig(**kw))
    p = initwise.init(x, "auto", seed=0)
    for t in ("position_embeddings", "token_type_embeddings"):
        e = p[f"embeddings.{t}.weight"]
        assert (e.role, e.action) == ("position", "keep"), (e.role, e.reason)
    assert p["embeddings.word_embeddings.weight"].role == "embedding"
    assert float(x.embeddings.position_embeddings.weight.std()) < 0.05  # HF's own 0.02
    d = DebertaV2Model(DebertaV2Config(**kw, relative_attention=True, position_biased_input=False,
                                       pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm"))
    q = initwise.plan(d, "auto")
    assert not any("fell back" in n or "failed" in n for n in q.notes), q.notes
    e = q["encoder.rel_embeddings.weight"]
    assert (e.role, e.action) == ("position", "keep"), (e.role, e.reason)
    assert q["encoder.layer.0.attention.self.query_proj.weight"].std == pytest.approx(1 / 8)
    assert q["encoder.layer.0.intermediate.dense.weight"].role == "branch"


def test_inputs_synthesized_for_generators_and_fixed_size_conv_nets() -> None:
    """No example_inputs: a DCGAN generator (first layer a ConvTranspose2d reading z as
    [N, z, 1, 1]) and an MLP-Mixer (a conv stem whose patch count a token-mixing Linear fixes
    at 32x32 images) are traced from synthesized inputs, not planned in module order."""
    gen = nn.Sequential(
        nn.ConvTranspose2d(16, 32, 4, 1, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, 3, 4, 2, 1, bias=False), nn.Tanh())

    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 4, 4)  # 32x32 -> 64 patches
            self.tokens = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x).flatten(2)  # [N, 16, 64]
            return self.head((h + self.tokens(h)).mean(dim=2))

    for model in (gen, Mixer()):
        p = initwise.plan(model)
        assert p.source == "dataflow", (type(model).__name__, p.notes)
    assert initwise.plan(Mixer())["tokens.2.weight"].activation == "gelu"


def test_learned_queries_and_masked_token_ids_stay_embeddings() -> None:
    """Two lookalikes of position tables that are not: learned object queries broadcast over
    the batch before a linear map (DETR's ``query_embed.weight.unsqueeze(0).repeat(b, 1, 1)``:
    one vector per query, N(0, 1) in the original), and token ids whose mask comes from a
    cumsum (``ids.masked_fill(cumsum(ids == eos) > 0, pad)``: the values are still token ids)."""

    class Queries(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.query = nn.Embedding(10, 16)
            self.ref = nn.Linear(16, 2)
            self.proj = nn.Linear(8, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = self.query.weight.unsqueeze(0).repeat(x.shape[0], 1, 1)
            return self.ref(q).sigmoid() + self.proj(x).mean(1, keepdim=True)[..., :2]

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(100, 32), nn.Embedding(16, 32)
            self.head = nn.Linear(32, 100)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            ids = ids.masked_fill((ids == 2).long().cumsum(-1) > 0, 0)
            return self.head(self.tok(ids) + self.pos(torch.arange(ids.shape[1])))

    p = initwise.plan(Queries(), example_inputs=torch.randn(2, 5, 8))
    assert p.source == "dataflow" and p["query.weight"].role == "embedding"
    p = initwise.plan(LM(), example_inputs=torch.randint(3, 100, (2, 16)))
    assert p["tok.weight"].role == "embedding" and p["pos.weight"].role == "position"


@pytest.mark.parametrize("cast", ["type", "double", "half", "to", "float"])
def test_a_weight_read_through_a_dtype_cast_is_still_a_weight(cast: str) -> None:
    """Found by a new-user trial (DeepSeek-V3's router: ``F.linear(x.type(torch.float32),
    self.weight.type(torch.float32))``): ``.type(dtype)`` and ``.double()`` lost the weight, so
    the router was planned 'not used by the forward pass' and left as constructed."""
    dtype = {"double": torch.float64, "half": torch.float16}.get(cast, torch.float32)

    def conv(t: torch.Tensor) -> torch.Tensor:
        if cast == "type":
            return t.type(dtype)
        if cast == "to":
            return t.to(dtype)
        return getattr(t, cast)()

    class Router(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 32))  # no layout initwise knows

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(conv(x), conv(self.weight))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.router = nn.Linear(16, 32), Router()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.router(torch.relu(self.inp(x)))

    e = initwise.plan(Net(), "auto")["router.weight"]
    assert e.action == "init" and e.role == "classifier", (e.role, e.reason)
    assert e.fan_in == 32 and e.activation == "relu"
    assert e.std == pytest.approx(2**0.5 / 32**0.5)


def test_deepseek_v3_router_is_initialized() -> None:
    """DeepSeek-V3's ``DeepseekV3TopkRouter.weight`` (read through ``.type(torch.float32)``)
    gets N(0, 1/d) like every router, not left at the constructor's values."""
    tf = pytest.importorskip("transformers")
    cfg = tf.DeepseekV3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=4, intermediate_size=128, vocab_size=256,
                              max_position_embeddings=64, n_routed_experts=4, num_experts_per_tok=2,
                              n_shared_experts=1, moe_intermediate_size=32, first_k_dense_replace=1,
                              kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8,
                              v_head_dim=16, n_group=1, topk_group=1)  # fmt: skip
    torch.manual_seed(0)
    model = tf.DeepseekV3ForCausalLM(cfg)
    p = initwise.init(model, "auto", seed=0)
    e = p["model.layers.1.mlp.gate.weight"]
    assert e.action == "init" and e.fan_in == 64 and e.gain == 1.0, (e.action, e.reason)
    w = model.model.layers[1].mlp.gate.weight
    n = w.numel()  # 256 draws of N(0, 1/64): variance within 6 standard errors (sqrt(2/n))
    assert abs(w.var().item() * 64 - 1) < 6 * (2 / n) ** 0.5


def test_parts_joined_again_after_the_rotary_code_are_one_tensor() -> None:
    """Found by a new-user trial: DeepSeek-V3's ``q_b_proj`` output is split per head into its
    no-rope and rope parts, which meet again in a ``cat`` after the rotary code (8 ops on):
    the search for that ``cat`` stopped after 3, so the query was read as 2 interleaved parts
    with fan_out 32 (of 64) and ``xavier`` drew std sqrt(2/64) instead of torch's
    sqrt(2/96). Packed q/k/v parts, which meet only in the attention, stay parts."""
    tf = pytest.importorskip("transformers")
    cfg = tf.DeepseekV3Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                              num_key_value_heads=4, intermediate_size=128, vocab_size=256,
                              max_position_embeddings=64, first_k_dense_replace=1,
                              kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
                              qk_nope_head_dim=8, v_head_dim=16)  # fmt: skip
    e = initwise.plan(tf.DeepseekV3ForCausalLM(cfg), "xavier")["model.layers.0.self_attn.q_b_proj.weight"]
    assert (e.fan_in, e.fan_out, e.blocks) == (32, 64, 1)
    assert e.std == pytest.approx((2 / 96) ** 0.5)
    neox = tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=1,
                                                  num_attention_heads=4, intermediate_size=128,
                                                  vocab_size=256))  # fmt: skip
    e = initwise.plan(neox, "xavier")["gpt_neox.layers.0.attention.query_key_value.weight"]
    assert e.fan_out == 64  # q, k, v: three parts of 64 (per-head interleaved)
