"""materialize: meta-device models get storage and values equal to an eager init, bit for bit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import initwise
from _dist_helpers import Net, every_scheme_policy, reference
from initwise.distributed import materialize
from initwise.policy import Policy, Rule


@pytest.mark.parametrize("variant", [0, 4])
def test_meta_materialize_equals_eager_init(variant: int) -> None:
    policy = every_scheme_policy(variant)
    ref = reference(policy, 3)
    with torch.device("meta"):
        m = Net()
    p = materialize(m, policy, device="cpu", seed=3)
    assert p.applied and any("materialized" in n for n in p.notes)
    for n, t in m.named_parameters():
        assert not t.is_meta and torch.equal(t, ref[n]), n


def test_batchnorm_buffers_and_keep_params_are_rebuilt() -> None:
    with torch.device("meta"):
        m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))
    pol = Policy((Rule("keep", name="2.bias"), Rule("keep", role="norm_stats"), Rule("auto", role="weight"), Rule("zeros")))
    materialize(m, pol, device="cpu", seed=0)
    bn = m[1]
    assert torch.equal(bn.running_mean, torch.zeros(8)) and torch.equal(bn.running_var, torch.ones(8))
    assert int(bn.num_batches_tracked) == 0
    bound = 1 / 8**0.5  # nn.Linear's own bias init, run by reset_parameters() (keyed)
    assert bool((m[2].bias.abs() <= bound).all()) and m[2].bias.abs().sum() > 0
    with torch.device("meta"):
        m2 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 4))
    torch.manual_seed(123)
    materialize(m2, pol, device="cpu", seed=0)
    assert torch.equal(m[2].bias, m2[2].bias)  # the kept parameter is keyed too


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.register_buffer("table", torch.arange(5.0))


def test_unrebuildable_buffer_raises_naming_it_and_reset_hook() -> None:
    with torch.device("meta"):
        m = nn.Sequential(_Odd())
    with pytest.raises(ValueError, match=r"0\.table"):
        materialize(m, device="cpu")
    assert m[0].lin.weight.is_meta  # failed before allocating anything

    def reset(name: str, module: nn.Module) -> bool:
        module.table.copy_(torch.arange(5.0))
        return True

    materialize(m, device="cpu", reset=reset)
    assert torch.equal(m[0].table, torch.arange(5.0))
    with pytest.raises(ValueError, match="meta"):
        materialize(m, device="meta")


def test_hf_llama_rotary_and_gpt2_ties() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    eager = transformers.LlamaForCausalLM(cfg)
    with torch.device("meta"):
        m = transformers.LlamaForCausalLM(cfg)
    materialize(m, "auto", device="cpu", seed=1)
    initwise.init(eager, "auto", seed=1)
    for (n, a), b in zip(m.named_parameters(), eager.parameters(), strict=True):
        assert torch.equal(a, b), n
    rot, rot_e = m.model.rotary_emb, eager.model.rotary_emb
    assert torch.equal(rot.inv_freq, rot_e.inv_freq) and torch.equal(rot.original_inv_freq, rot_e.original_inv_freq)

    gcfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=8)
    with torch.device("meta"):
        g = transformers.GPT2LMHeadModel(gcfg)
    assert g.lm_head.weight is g.transformer.wte.weight
    materialize(g, "gpt2", device="cpu", seed=0)
    assert g.lm_head.weight is g.transformer.wte.weight and not g.lm_head.weight.is_meta
    eg = transformers.GPT2LMHeadModel(gcfg)
    initwise.init(eg, "gpt2", seed=0)
    for (n, a), b in zip(g.named_parameters(), eg.parameters(), strict=True):
        assert torch.equal(a, b), n


def test_peak_memory_stays_near_model_size() -> None:
    """~200 MB model: materialize's peak RSS increase is below 1.5x the model (never two copies);
    init's backup of the tensors it writes (atomicity) costs about one model more, no more."""
    code = textwrap.dedent('''
        import torch, json
        from torch import nn
        import initwise
        from initwise.distributed import materialize
        torch.set_num_threads(1)
        def rss(field):
            for line in open("/proc/self/status"):
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        with torch.device("meta"):
            m = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(48)])
        size = sum(p.numel() * p.element_size() for p in m.parameters())
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM)
        base = rss("VmRSS:")
        materialize(m, "auto", device="cpu", seed=0)
        peak = rss("VmHWM:") - base
        # init of the now-real model keeps a copy of each tensor it has written (atomicity)
        open("/proc/self/clear_refs", "w").write("5")
        base = rss("VmRSS:")
        initwise.init(m, "auto", seed=1)
        print(json.dumps({"size": size, "peak": peak, "init_peak": rss("VmHWM:") - base}))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["size"] > 190e6
    assert 0.9 * r["size"] < r["peak"] < 1.5 * r["size"], r
    assert 0.9 * r["size"] < r["init_peak"] < 1.1 * r["size"], r


class _Counting(nn.Module):
    """A module whose reset writes its weight and bias (and may need the weight's values)."""

    def __init__(self, reads_weight: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(6, 5))
        self.bias = nn.Parameter(torch.empty(6))
        self.reads_weight = reads_weight
        self.weight_was_meta: list[bool] = []
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.weight_was_meta.append(self.weight.is_meta)
        nn.init.normal_(self.weight)
        if self.reads_weight:  # needs the values: cannot run on a meta twin
            with torch.no_grad():
                self.bias.copy_(self.weight[:, 0])
        else:
            nn.init.uniform_(self.bias, -0.1, 0.1)


@pytest.mark.parametrize("reads_weight", [False, True])
def test_module_resets_skip_the_tensors_the_plan_writes(reads_weight: bool) -> None:
    """keep on the bias: the module's reset rebuilds it, the plan writes the weight once."""
    pol = Policy((Rule("keep", name="0.bias"), Rule("auto", role="weight"), Rule("zeros")))
    eager = nn.Sequential(_Counting(reads_weight), nn.Linear(6, 3))
    initwise.init(eager, pol, seed=2)
    with torch.device("meta"):
        m = nn.Sequential(_Counting(reads_weight), nn.Linear(6, 3))
    m[0].weight_was_meta.clear()
    materialize(m, pol, device="cpu", seed=2)
    # the weight was a meta twin while the reset ran (retried on the real tensor if it read it)
    assert m[0].weight_was_meta == ([True, False] if reads_weight else [True])
    assert torch.equal(m[0].weight, eager[0].weight) and torch.equal(m[1].weight, eager[1].weight)
    assert m[0].bias.abs().sum() > 0 and not m[0].bias.is_meta
    with torch.device("meta"):
        m2 = nn.Sequential(_Counting(reads_weight), nn.Linear(6, 3))
    torch.manual_seed(9)
    materialize(m2, pol, device="cpu", seed=2)
    assert torch.equal(m[0].bias, m2[0].bias)  # the kept bias is keyed, whatever the global seed


def test_hf_subclass_buffers_and_ancestor_written_parameters_are_rebuilt() -> None:
    """Found by trying models outside the zoo. Gemma 3's scaled embedding is an nn.Embedding
    subclass whose ``reset_parameters`` does not write its ``embed_scale`` buffer (HF's
    ``_init_weights`` does): it must be √d, not uninitialized memory. FalconMamba's
    ``dt_proj.bias`` (left to the model by ``auto``) is written by the mixer's
    ``_init_weights``, an ancestor of ``dt_proj``: softplus(bias) must lie in the config's
    [time_step_min, time_step_max], as in the eagerly built model, not all softplus(0)."""
    from transformers import (
        FalconMambaConfig,
        FalconMambaForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
    )

    cfg = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    with torch.device("meta"):
        gemma = Gemma3ForCausalLM(cfg)
    materialize(gemma, "auto", device="cpu", seed=0)
    scale = gemma.model.embed_tokens.embed_scale
    assert float(scale) == pytest.approx(64**0.5)
    ids = torch.arange(32).reshape(2, 16)
    with torch.no_grad():
        assert bool(torch.isfinite(gemma(input_ids=ids).logits).all())

    fcfg = FalconMambaConfig(vocab_size=128, hidden_size=64, state_size=8, num_hidden_layers=2,
                             expand=2, conv_kernel=4, time_step_rank=8)
    with torch.device("meta"):
        fm = FalconMambaForCausalLM(fcfg)
    p = materialize(fm, "auto", device="cpu", seed=0)
    for i in range(2):
        assert p[f"backbone.layers.{i}.mixer.dt_proj.bias"].action == "keep"
        dt = nn.functional.softplus(fm.backbone.layers[i].mixer.dt_proj.bias)
        assert float(dt.min()) >= fcfg.time_step_floor * 0.999 and float(dt.max()) <= fcfg.time_step_max * 1.001
        assert float(dt.max()) / float(dt.min()) > 10  # spread over the range (log-uniform draws)


def test_buffer_no_rule_writes_raises_and_leaves_meta() -> None:
    """A buffer that the module's reset_parameters and the model's _init_weights both leave
    unset is an error naming it (the model goes back to meta), not uninitialized memory; a
    tensor loaded before materialize is never written by an ancestor's _init_weights."""

    class Scaled(nn.Linear):
        def __init__(self) -> None:
            super().__init__(4, 4)
            self.register_buffer("scale", torch.tensor(3.0), persistent=False)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = object()
            self.block = nn.Sequential(Scaled(), nn.Linear(4, 4))

        def _init_weights(self, module: nn.Module) -> None:  # writes nothing for Scaled's buffer
            if isinstance(module, nn.Sequential):  # a parent writing its child's tensor
                nn.init.ones_(module[1].weight)

    with torch.device("meta"):
        m = Model()
    with pytest.raises(ValueError, match=r"block\.0\.scale"):
        materialize(m, "auto", device="cpu", seed=0)
    assert all(t.is_meta for t in (*m.parameters(), *m.buffers()))

    with torch.device("meta"):
        m = Model()
    m.block[0].register_buffer("scale", torch.tensor(3.0), persistent=False)  # built for real
    loaded = torch.full((4, 4), 7.0)
    m.block[1].weight = nn.Parameter(loaded.clone())  # a weight the user loaded
    p = materialize(m, "auto", device="cpu", seed=0, only="block.0")
    assert p["block.1.bias"].action in ("keep", "skip")
    assert torch.equal(m.block[1].weight, loaded) and float(m.block[0].scale) == 3.0
    bound = 1 / 4**0.5  # block.1.bias: _init_weights leaves it, Linear.reset_parameters writes it
    assert bool(torch.isfinite(m.block[1].bias).all()) and bool((m.block[1].bias.abs() <= bound).all())


def test_a_sub_model_is_rebuilt_by_its_own_init_weights() -> None:
    """Llava's vision tower is a CLIPVisionModel, a PreTrainedModel of its own: Llava's
    ``_init_weights`` does not know CLIP's embeddings, CLIP's does (``class_embedding``,
    ``position_ids``). materialize raised "nothing wrote ...class_embedding, ...position_ids";
    it now uses the innermost enclosing ``_init_weights``, as Hugging Face's ``smart_apply``."""
    tf = pytest.importorskip("transformers")
    vc = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                             image_size=32, patch_size=8)
    tc = tf.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    cfg = tf.LlavaConfig(vision_config=vc, text_config=tc, image_token_index=127, vision_feature_layer=-1,
                         image_seq_length=16)
    with torch.device("meta"):
        m = tf.LlavaForConditionalGeneration(cfg)
    materialize(m, "auto", device="cpu", seed=0)
    emb = m.model.vision_tower.embeddings
    assert torch.equal(emb.position_ids, torch.arange(17).expand(1, -1))
    n = emb.class_embedding.numel()  # CLIP's N(0, 1/d): its std within 6 standard errors
    assert abs(float(emb.class_embedding.std()) * 32**0.5 - 1) < 6 * (0.5 / n) ** 0.5
    ids = torch.randint(0, 126, (1, 24))
    ids[:, :16] = 127
    with torch.no_grad():
        assert bool(torch.isfinite(m(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32)).logits).all())


def test_partly_meta_model_keeps_the_tensors_not_on_meta() -> None:
    """A pretrained backbone loaded (``load_state_dict(assign=True)``) into a meta-built HF
    LLaMA with a new untied head left on meta: ``materialize`` without ``only=`` initializes
    the head (bit for bit what ``only="lm_head"`` gives) and keeps every loaded tensor as
    loaded (do no harm), saying so in the plan; ``only=`` naming loaded tensors writes them,
    as asked."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    pretrained = {k: v for k, v in LlamaForCausalLM(cfg).state_dict().items() if not k.startswith("lm_head")}

    def build() -> nn.Module:
        with torch.device("meta"):
            m = LlamaForCausalLM(cfg)
        loaded = {k: v.clone() for k, v in pretrained.items()}  # assign=True: the model owns these
        missing, _ = m.load_state_dict(loaded, strict=False, assign=True)
        assert missing == ["lm_head.weight"]
        return m

    model = build()
    p = materialize(model, "auto", device="cpu", seed=0)
    for name, t in model.state_dict().items():
        if name in pretrained:
            assert torch.equal(t, pretrained[name]), name
    assert any("not on meta" in n and "kept" in n for n in p.notes)
    ref = build()
    materialize(ref, "auto", device="cpu", seed=0, only="lm_head")
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight)
    assert float(model.lm_head.weight.std()) > 0
    asked = build()
    materialize(asked, "auto", device="cpu", seed=0, only=["lm_head", "model.layers.0.mlp"])
    assert not torch.equal(asked.model.layers[0].mlp.up_proj.weight, pretrained["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(asked.model.layers[1].mlp.up_proj.weight, pretrained["model.layers.1.mlp.up_proj.weight"])
