"""Models and flows whose results must stay bit-identical across refactors.

``digests()`` runs ``init`` / ``plan`` with every preset, ``lsuv`` and ``materialize`` on a
fixed set of models and returns a SHA-256 per (flow, model, policy) of what initwise decides
and writes: the plan's JSON and the bytes of every tensor the plan initializes (tensors left
to the model are not hashed, so the digests do not depend on how a library version builds its
modules; the plan is hashed without ``source`` and ``notes``, which say how the structure was
found, not what was decided). ``tests/test_layout_identity.py`` compares them with digests recorded before the
layout change; ``python tests/_golden_models.py`` prints them as JSON.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import initwise

POLICIES = ("auto", "torch", "xavier", "kaiming", "lecun", "orthogonal", "gpt2", "fixup",
            "zero_residual", "rezero", "dcgan", "xavier_normal")  # fmt: skip


class _Block(nn.Module):
    def __init__(self, c: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c if stride == 1 else c // 2, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.downsample = None if stride == 1 else nn.Sequential(
            nn.Conv2d(c // 2, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + skip)


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(_Block(8), _Block(8))
        self.layer2 = nn.Sequential(_Block(16, 2), _Block(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class _RNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16, padding_idx=0)
        self.lstm = nn.LSTM(16, 24, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(48, 12, batch_first=True)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.emb(x))
        h, _ = self.gru(h)
        return self.head(h[:, -1])


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64), nn.SiLU(),
                         nn.Linear(64, 10))


def _transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(32, 3))


def _weight_norm() -> nn.Module:
    from torch.nn.utils.parametrizations import weight_norm

    return nn.Sequential(weight_norm(nn.Linear(12, 32)), nn.ReLU(), weight_norm(nn.Linear(32, 4)))


def _hf(kind: str) -> nn.Module | None:
    try:
        import transformers as tf
    except Exception:
        return None
    if kind == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97,
                                                n_positions=32))
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, intermediate_size=64,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=2, vocab_size=97,
                                                  max_position_embeddings=32))
    if kind == "bert":
        return tf.BertForSequenceClassification(tf.BertConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=97, max_position_embeddings=32, num_labels=3))
    raise ValueError(kind)


MODELS: dict[str, Callable[[], nn.Module | None]] = {
    "mlp": _mlp,
    "resnet": _ResNet,
    "rnn": _RNN,
    "transformer": _transformer,
    "weight_norm": _weight_norm,
    "gpt2": lambda: _hf("gpt2"),
    "llama": lambda: _hf("llama"),
    "bert": lambda: _hf("bert"),
}


def _inputs(name: str) -> Any:
    g = torch.Generator().manual_seed(123)
    if name == "mlp":
        return torch.randn(64, 20, generator=g)
    if name == "resnet":
        return torch.randn(8, 3, 8, 8, generator=g)
    if name == "rnn":
        return torch.randint(1, 50, (8, 7), generator=g)
    if name == "transformer":
        return torch.randn(8, 6, 32, generator=g)
    if name == "weight_norm":
        return torch.randn(32, 12, generator=g)
    return {"input_ids": torch.randint(0, 97, (4, 9), generator=g)}


def _build(name: str) -> nn.Module | None:
    torch.manual_seed(0)
    m = MODELS[name]()
    if m is not None:
        m.eval()
    return m


def _hash_tensors(model: nn.Module, names: list[str], h: Any) -> None:
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    for n in names:
        t = tensors.get(n)
        if t is None:  # a parametrized tensor, planned under its plain name
            mod, _, attr = n.rpartition(".")
            with torch.no_grad():
                t = getattr(model.get_submodule(mod) if mod else model, attr)
        h.update(n.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())


def _plan_json(p: Any) -> str:
    """The plan's decisions (without how structure was found: ``source`` and ``notes``)."""
    d = p.to_dict()
    d.pop("source", None)
    d.pop("notes", None)
    return json.dumps(d, sort_keys=True)


def _digest_init(name: str, policy: str) -> tuple[str, str]:
    model = _build(name)
    if model is None:
        return "unavailable", "unavailable"
    try:
        p = initwise.init(model, policy, seed=7)
    except Exception as err:
        return f"error: {type(err).__name__}", f"error: {type(err).__name__}"
    h = hashlib.sha256()
    _hash_tensors(model, p.initialized(), h)
    return h.hexdigest(), hashlib.sha256(_plan_json(p).encode()).hexdigest()


def _digest_lsuv(name: str) -> str:
    model = _build(name)
    if model is None:
        return "unavailable"
    x = _inputs(name)
    try:
        rep = initwise.lsuv(model, x, seed=3)
    except Exception as err:
        return f"error: {type(err).__name__}"
    h = hashlib.sha256()
    h.update(str(rep.converged).encode())
    names = sorted({n for n, _ in model.named_parameters()})
    _hash_tensors(model, names, h)
    return h.hexdigest()


def _digest_materialize(name: str, policy: str) -> str:
    torch.manual_seed(0)
    with torch.device("meta"):
        model = MODELS[name]()
    if model is None:
        return "unavailable"
    h = hashlib.sha256()
    try:
        initwise.materialize(model, policy, device="cpu", seed=5)
    except Exception as err:
        return f"error: {type(err).__name__}"
    names = sorted({n for n, _ in model.named_parameters()} | {
        n for n, _ in model.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")})
    _hash_tensors(model, names, h)
    return h.hexdigest()


def digests(models: tuple[str, ...] = tuple(MODELS)) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in models:
        for pol in POLICIES:
            out[f"init/{m}/{pol}"], out[f"plan/{m}/{pol}"] = _digest_init(m, pol)
        out[f"lsuv/{m}"] = _digest_lsuv(m)
        if m in ("mlp", "resnet", "transformer", "llama"):
            out[f"materialize/{m}/auto"] = _digest_materialize(m, "auto")
            out[f"materialize/{m}/gpt2"] = _digest_materialize(m, "gpt2")
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    json.dump(digests(), sys.stdout, indent=1, sort_keys=True)
    print()
