"""Overhead of ``initwise.audit`` (no spectrum) against one plain forward+backward.

The peer, measured in the same run on the same model and batch: ``y = model(x)``,
``L = sum(y * R)``, ``torch.autograd.grad(L, params)`` (what the audit itself computes, without
hooks and statistics). Models: a ResNet-18-like CNN at 32x32 (batch 32), a GPT-2-small-sized
decoder stack (d=768, 12 layers, 12 heads, seq 128, batch 4, vocab 50257) and, with ``zoo``,
the audit zoo's Hugging Face families built from configs (``--width`` hidden, 4 layers, seq
128, batch 8; needs ``transformers``). Target (issue 14): ratio <= 1.3.
Times are the minimum of ``--repeats`` interleaved runs of each side (the median ratio is
printed too); on the CPU also the process CPU time, which waiting for a core on a shared
machine does not inflate; the load average tells how busy the machine was.

    python benchmarks/bench_audit.py [--device cpu|cuda] [--repeats 7]
        [--models resnet,gpt2,zoo] [--width 256]   (zoo,zoo:gpt2,zoo:vit: only those)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from initwise import audit
from initwise._audit import stats as audit_stats
from initwise._session import call_args, primary_output


class BasicBlock(nn.Module):
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


def resnet18(num_classes: int = 10) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


class GPTBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.act, self.out = nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), \
            nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.out(self.act(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 50257, d: int = 768, layers: int = 12, heads: int = 12,
                 ctx: int = 1024) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(GPTBlock(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as in GPT-2
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02 / (2 * layers) ** 0.5 if name.endswith(
                    ("proj.weight", "out.weight")) else 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def _time(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn`` after a warm-up."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t, time.process_time() - c


def zoo(width: int) -> dict[str, tuple[nn.Module, object]]:
    """The audit zoo's families at ``width`` (4 layers, vocabulary 8000, seq 128, batch 8)."""
    import transformers as T

    T.logging.set_verbosity_error()
    g = torch.Generator().manual_seed(0)
    v, d, h = 8000, width, max(width // 64, 2)
    ids = torch.randint(0, v, (8, 128), generator=g)
    img = torch.randn(8, 3, 64, 64, generator=g)
    llama = {"hidden_size": d, "intermediate_size": 4 * d, "num_hidden_layers": 4,
             "num_attention_heads": h, "num_key_value_heads": h, "vocab_size": v}
    return {
        "gpt2": (T.GPT2LMHeadModel(T.GPT2Config(n_embd=d, n_layer=4, n_head=h, vocab_size=v,
                                                 n_positions=256)), ids),
        "llama": (T.LlamaForCausalLM(T.LlamaConfig(**llama)), ids),
        "bert": (T.BertForMaskedLM(T.BertConfig(hidden_size=d, num_hidden_layers=4,
                                                num_attention_heads=h,
                                                intermediate_size=4 * d, vocab_size=v)), ids),
        "t5": (T.T5ForConditionalGeneration(T.T5Config(
            d_model=d, d_kv=64, d_ff=4 * d, num_layers=4, num_heads=h, vocab_size=v,
            decoder_start_token_id=0)), {"input_ids": ids, "decoder_input_ids": ids}),
        "vit": (T.ViTForImageClassification(T.ViTConfig(
            hidden_size=d, num_hidden_layers=4, num_attention_heads=h, intermediate_size=4 * d,
            image_size=64, patch_size=8, num_labels=100)), img),
        "mamba": (T.MambaForCausalLM(T.MambaConfig(hidden_size=d, num_hidden_layers=4,
                                                   vocab_size=v, state_size=16)), ids),
        "mixtral": (T.MixtralForCausalLM(T.MixtralConfig(**llama, num_local_experts=4,
                                                          num_experts_per_tok=2)), ids),
    }


def _to(x: object, device: torch.device) -> object:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def bench(name: str, model: nn.Module, x: object, repeats: int,
          device: torch.device) -> tuple[float, float]:
    model.to(device).train()
    x = _to(x, device)
    params = [p for p in model.parameters() if p.requires_grad]
    args, kwargs = call_args(x)

    def plain() -> None:
        y = primary_output(model(*args, **kwargs))
        assert y is not None
        r = torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(device)
        torch.autograd.grad((y * r).sum(), params, allow_unused=True)

    def audited() -> None:
        audit(model, x)

    # interleaved, so that a change in machine load hits both sides alike (shared CPUs); the
    # minimum of each side is the least disturbed run. On a CPU shared with other jobs the
    # process CPU time (all threads) is also printed: waiting for a core does not count in it.
    plains, audits = [], []
    for _ in range(repeats):
        plains.append(_time(plain, device))
        audits.append(_time(audited, device))
    t_plain, t_audit = min(w for w, _ in plains), min(w for w, _ in audits)
    med = statistics.median(w for w, _ in audits) / statistics.median(w for w, _ in plains)
    cpu = ""
    if device.type == "cpu":
        c_plain, c_audit = min(c for _, c in plains), min(c for _, c in audits)
        cpu = f"  CPU time {c_plain * 1e3:7.1f} / {c_audit * 1e3:7.1f} ms ratio {c_audit / c_plain:4.2f}x"
    rep = audit(model, x)
    print(f"{name:10s} {device.type:5s} rows {len(rep.rows):4d}  plain fwd+bwd "
          f"{t_plain * 1e3:8.1f} ms  audit {t_audit * 1e3:8.1f} ms  ratio "
          f"{t_audit / t_plain:4.2f}x (medians {med:4.2f}x){cpu}  verdict {rep.verdict}  "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return t_plain, t_audit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", default="resnet,gpt2")
    ap.add_argument("--width", type=int, default=256, help="hidden size of the zoo models")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    native = getattr(audit_stats, "_rowstats", None)
    kernel = "torch kernels" if native is None else (
        f"one C pass per tensor{' (AVX-512 float32)' if getattr(native, 'AVX512', 0) else ''}"
        f"{', on the OpenMP team' if native.openmp() else ', one thread'}")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"min of {args.repeats} interleaved, loadavg {os.getloadavg()[0]:.1f}, "
          f"CPU statistics: {kernel}")
    if "resnet" in args.models.split(","):
        bench("resnet18", resnet18(), torch.randn(32, 3, 32, 32, generator=g), args.repeats,
              device)
    if "gpt2" in args.models.split(","):
        bench("gpt2-small", GPT(), torch.randint(0, 50257, (4, 128), generator=g),
              args.repeats, device)
    if "zoo" in args.models:
        only = [m for m in args.models.split(",") if m.startswith("zoo:")]
        keep = {m.removeprefix("zoo:") for m in only}
        for name, (model, x) in zoo(args.width).items():
            if not keep or name in keep:
                bench(name, model, x, args.repeats, device)


if __name__ == "__main__":
    main()
