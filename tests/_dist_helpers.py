"""Helpers for multi-process torch.distributed tests: gloo on 127.0.0.1, bounded and clean.

``run_ranks(fn, world_size, *args)`` starts ``world_size`` spawned processes that each join a
gloo process group on a free port, run ``fn(rank, world_size, *args)`` and report what it
returned (a JSON-able value) or the traceback. The process group is destroyed even when ``fn``
raises; processes still alive at the timeout are killed and the call fails.

Also: tiny models and the policy used by the sharded-init tests (every registry scheme on
some parameter), shared by the parent (single-process reference) and the workers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from initwise.policy import Policy, Rule


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gloo_available() -> bool:
    return dist.is_available() and dist.is_gloo_available()


def _entry(rank: int, world_size: int, port: int, outdir: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    result: dict[str, Any]
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=__import__("datetime").timedelta(seconds=60),
        )
        try:
            result = {"ok": True, "value": fn(rank, world_size, *args)}
        finally:
            dist.destroy_process_group()
    except BaseException:
        result = {"ok": False, "error": traceback.format_exc()}
    with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 90.0) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; return their values."""
    with tempfile.TemporaryDirectory() as outdir:
        ctx = mp.start_processes(
            _entry, args=(world_size, free_port(), outdir, fn, args), nprocs=world_size,
            join=False, start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ranks did not finish within {timeout} s")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join(5)
        out = []
        for r in range(world_size):
            with open(os.path.join(outdir, f"rank{r}.json")) as f:
                res = json.load(f)
            if not res["ok"]:
                raise AssertionError(f"rank {r} of {world_size} failed:\n{res['error']}")
            out.append(res["value"])
        return out


# ---------------------------------------------------------------------------------------------
# Models and policies for the contract tests
# ---------------------------------------------------------------------------------------------


class Block(nn.Module):
    """A residual MLP block with deliberately odd sizes (uneven shards at 2 and 4 ranks)."""

    def __init__(self, d: int = 10, h: int = 7) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.up = nn.Linear(d, h)
        self.down = nn.Linear(h, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class Net(nn.Module):
    """Embedding (with padding_idx) -> 2 blocks -> LSTM -> head; conv branch for conv schemes."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(13, 10, padding_idx=5)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.lstm = nn.LSTM(10, 6, batch_first=True)
        self.conv = nn.Conv1d(6, 9, 3)
        self.head = nn.Linear(9, 5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        x, _ = self.lstm(x)
        x = self.conv(x.transpose(1, 2)).mean(-1)
        return self.head(x)


def _user_scheme(tensor: torch.Tensor, *, fans: Any = None, generator: Any = None, **_: Any) -> torch.Tensor:
    from initwise import random as iwr

    iwr.uniform_(tensor, generator, low=-0.5, high=0.5)
    with torch.no_grad():
        tensor.pow_(3)
    return tensor


def every_scheme_policy(variant: int = 0) -> Policy:
    """A policy that exercises every registry scheme somewhere in :class:`Net`.

    ``variant`` rotates the assignment so that each scheme also lands on differently shaped
    and differently sharded parameters.
    """
    fixed = [
        Rule("forget_gate_bias", name="lstm.bias_ih_l0"),
        Rule("orthogonal", name="lstm.weight_hh_l0", params={"gain": 1.5}),
        Rule("delta_orthogonal", name="conv.weight"),
        Rule("sparse", name="head.weight", params={"sparsity": 0.3}),
        Rule("eye", name="blocks.1.up.weight"),
        Rule(_user_scheme, name="blocks.1.down.weight"),
        Rule("ones", role="norm"),
    ]
    try:
        fixed.append(Rule("constant", role="norm_bias", params={"val": 0.25}))
    except ValueError:  # policy.py validates "constant" without its val (reported)
        fixed.append(Rule("uniform", role="norm_bias", params={"a": 0.2, "b": 0.3}))
    rotating = [
        ("normal", {"std": 0.1}), ("uniform", {"a": -0.2, "b": 0.3}), ("trunc_normal", {"std": 0.3}),
        ("truncated_normal", {"std": 0.05}), ("variance_scaling", {"scale": 2.0, "distribution": "truncated_normal"}),
        ("xavier_uniform", {}), ("xavier_normal", {}), ("kaiming_uniform", {"nonlinearity": "relu"}),
        ("kaiming_normal", {"mode": "fan_out"}), ("lecun_uniform", {}), ("lecun_normal", {}), ("zeros", {}),
    ]
    targets = ["emb.weight", "blocks.0.up.weight", "blocks.0.down.weight", "lstm.weight_ih_l0",
               "blocks.0.up.bias", "blocks.0.down.bias", "conv.bias", "head.bias",
               "blocks.1.up.bias", "blocks.1.down.bias", "lstm.bias_hh_l0"]  # fmt: skip
    rules = list(fixed)
    for i, t in enumerate(targets):
        name, params = rotating[(i + variant) % len(rotating)]
        if "bias" in t and name in ("xavier_uniform", "xavier_normal", "kaiming_uniform",
                                           "kaiming_normal", "lecun_uniform", "lecun_normal",
                                           "variance_scaling"):
            name, params = "normal", {"mean": 0.5, "std": 0.2}
        rules.append(Rule(name, name=t, params=params))
    rules.append(Rule("auto", role=("weight", "embedding", "recurrent", "recurrent_input")))
    rules.append(Rule("zeros"))
    return Policy(tuple(rules), name=f"every_scheme_{variant}")


def reference(policy: Policy, seed: int) -> dict[str, torch.Tensor]:
    """Single-process ``initwise.init`` of a plain :class:`Net`: the values every layout must match."""
    from initwise.model import init as plan_init

    torch.manual_seed(1000 + seed)  # the values must not depend on this
    net = Net()
    plan_init(net, policy, seed=seed)
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def keyed_reset(model: nn.Module, seed: int) -> None:
    """Existing-style init code (reset_parameters + nn.init calls) run under keyed_init."""
    from initwise.model.keyed import keyed_init

    with keyed_init(model, seed=seed):
        for mod in model.modules():
            if mod is not model and hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        torch.nn.init.orthogonal_(model.lstm.weight_hh_l0, gain=0.5)  # type: ignore[union-attr]
        torch.nn.init.xavier_normal_(model.blocks[0].up.weight)  # type: ignore[index, union-attr]
        torch.nn.init.trunc_normal_(model.head.weight, std=0.02)  # type: ignore[union-attr]
        model.emb.weight.data.normal_(0.0, 0.02)  # type: ignore[union-attr]
        torch.nn.init.zeros_(model.head.bias)  # type: ignore[union-attr]


def keyed_reference(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(2000 + seed)
    net = Net()
    keyed_reset(net, seed)
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def compare(model: nn.Module, ref: dict[str, torch.Tensor]) -> list[str]:
    """Names whose gathered value differs from ``ref`` (bitwise); gathers DTensors over gloo."""
    from initwise.distributed import is_dtensor

    bad = []
    for n, p in model.named_parameters():
        full = p.full_tensor() if is_dtensor(p) else p
        if not torch.equal(full.detach(), ref[n]):
            diff = (full.detach() - ref[n]).abs().max().item() if full.shape == ref[n].shape else math.nan
            bad.append(f"{n} (max diff {diff})")
    return bad


# ---------------------------------------------------------------------------------------------
# Workers (module level so that spawned processes can import them)
# ---------------------------------------------------------------------------------------------


def _fsdp(model: nn.Module, mesh: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for b in model.blocks:  # type: ignore[union-attr]
        fully_shard(b, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _tp_plan() -> dict[str, Any]:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    return {"blocks.0.up": ColwiseParallel(), "blocks.0.down": RowwiseParallel(),
            "blocks.1.up": ColwiseParallel(), "blocks.1.down": RowwiseParallel(),
            "emb": RowwiseParallel(), "head": ColwiseParallel()}  # fmt: skip


def _distribute_all(model: nn.Module, mesh: Any, choose: Callable[[int, torch.Tensor], list[Any]]) -> nn.Module:
    from torch.distributed.tensor import distribute_tensor

    for i, (name, p) in enumerate(list(model.named_parameters())):
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        d = distribute_tensor(p.detach(), mesh, choose(i, p), src_data_rank=None)
        setattr(mod, leaf, nn.Parameter(d, requires_grad=p.requires_grad))
    return model


def digest_and_check(model: nn.Module, ref: dict[str, torch.Tensor], policy: Policy, seed: int) -> list[str]:
    """``digest`` and ``check`` of a sharded model equal those of the single-process model
    (every parameter gathered); ``digest(policy=...)``, which copies the model, refuses FSDP2
    clearly; a NaN in one rank's shard is found on every rank. Returns what went wrong."""
    from initwise import check, digest

    net = Net()
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(ref[n])
    bad = []
    if digest(model).total != digest(net).total:
        bad.append("digest differs from the single-process model's")
    kinds = [(f.parameter, f.kind) for f in check(model).findings]
    if kinds != [(f.parameter, f.kind) for f in check(net).findings]:
        bad.append(f"check findings {kinds}")
    try:
        digest(model, policy, seed=seed)
        bad.append("digest(policy=...) of an FSDP2 model did not refuse")
    except ValueError as e:
        if "cannot be copied" not in str(e):
            bad.append(f"digest(policy=...): {e}")
    w = model.get_parameter("head.weight")
    if dist.get_rank() == 0:
        with torch.no_grad():
            w.to_local()[0, 0] = math.nan  # type: ignore[operator]
    kinds = [(f.parameter, f.kind) for f in check(model).findings]
    if ("head.weight", "non_finite") not in kinds:
        bad.append(f"a NaN in rank 0's shard of head.weight: check found {kinds}")
    return bad


def init_after_forward(mesh: Any, policy: Policy, seed: int, ref: dict[str, torch.Tensor]) -> list[str]:
    """init (and keyed_init) of an FSDP2 model right after a forward with
    ``reshard_after_forward=False``, when the registered parameters are the unsharded
    all-gathered copies: the values must land in the sharded parameters (what the optimizer
    steps and checkpoints save). They landed in the copies, which FSDP2 drops at the next
    reshard: the init was lost, silently. Also: lsuv and audit refuse the model then."""
    from torch.distributed.fsdp import fully_shard

    from initwise import audit, init

    idx = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(0))
    model = Net()
    for b in model.blocks:
        fully_shard(b, mesh=mesh, reshard_after_forward=False)
    fully_shard(model, mesh=mesh, reshard_after_forward=False)
    with torch.no_grad():
        model(idx)
    init(model, policy, seed=seed)
    bad = compare(model, ref)
    for m in model.modules():
        if hasattr(m, "reshard"):
            m.reshard()
    bad += [f"after reshard: {n}" for n in compare(model, ref)]
    with torch.no_grad():
        model(idx)
    kref = keyed_reference(seed)
    keyed_reset(model, seed)
    for m in model.modules():
        if hasattr(m, "reshard"):
            m.reshard()
    bad += [f"keyed_init: {n}" for n in compare(model, kref)]
    with torch.no_grad():
        model(idx)
    try:
        audit(model, idx)
        bad.append("audit ran on an FSDP2 model")
    except ValueError as e:
        if "fully_shard" not in str(e):
            bad.append(f"audit: {e}")
    return bad


def ddp_lsuv(rank: int, world_size: int) -> list[str]:
    """lsuv through a DistributedDataParallel wrapper: at one rank it calibrates the module;
    over several, where every rank's batch differs and the replicas would keep different
    weights (DDP never re-syncs them; they did), it refuses before touching the model."""
    from torch.nn.parallel import DistributedDataParallel

    from initwise import lsuv

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 40), nn.Tanh(), nn.Linear(40, 3))
    before = [p.detach().clone() for p in net.parameters()]
    ddp = DistributedDataParallel(net)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(100 + rank))
    try:
        lsuv(ddp, x, seed=1)
    except ValueError as e:
        if world_size == 1 or "DistributedDataParallel over" not in str(e):
            return [f"refused: {e}"]
        changed = any(not torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))
        return ["refused after changing the model"] if changed else []
    return [] if world_size == 1 else ["lsuv over DDP replicas did not refuse"]


def worker_layouts(rank: int, world_size: int, seed: int, variant: int) -> dict[str, list[str]]:
    """Every layout at this world size; returns {layout: [mismatching names]}."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import parallelize_module

    from initwise import init, materialize

    policy = every_scheme_policy(variant)
    ref = reference(policy, seed)
    out: dict[str, list[str]] = {}
    mesh = init_device_mesh("cpu", (world_size,))
    torch.manual_seed(rank)  # different torch RNG state on every rank: must not matter

    m = _fsdp(Net(), mesh)
    plan = init(m, policy, seed=seed)
    out["fsdp2"] = compare(m, ref)
    out["ddp_lsuv"] = ddp_lsuv(rank, world_size)
    out["fsdp2_init_after_forward"] = init_after_forward(mesh, policy, seed, ref)
    out["fsdp2_digest_check"] = digest_and_check(m, ref, policy, seed)
    note = [n for n in plan.notes if "fallback for:" in n]
    out["_fallback"] = note[0].split("fallback for: ")[1].split(", ") if note else ["<no note>"]

    kref = keyed_reference(seed)
    m = _fsdp(Net(), mesh)
    keyed_reset(m, seed)
    out["keyed_init_fsdp2"] = compare(m, kref)
    m = _distribute_all(Net(), mesh, lambda i, p: [Shard(i % p.dim())])
    keyed_reset(m, seed)
    out["keyed_init_distribute_tensor"] = compare(m, kref)

    with torch.device("meta"):
        m = Net()
    _fsdp(m, mesh)
    materialize(m, policy, device="cpu", seed=seed)
    out["fsdp2_meta_materialize"] = compare(m, ref)

    m = parallelize_module(Net(), mesh, _tp_plan())
    init(m, policy, seed=seed)
    out["tp_parallelize_module"] = compare(m, ref)

    def alternate(i: int, p: torch.Tensor) -> list[Any]:
        if p.dim() >= 2:
            return [Shard(i % 2)]
        return [Shard(0) if i % 2 else Replicate()]

    m = _distribute_all(Net(), mesh, alternate)
    init(m, policy, seed=seed)
    out["distribute_tensor_shard0_shard1"] = compare(m, ref)

    if world_size == 4:
        mesh2 = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))

        def two_d(i: int, p: torch.Tensor) -> list[Any]:
            if p.dim() >= 2:
                return [[Shard(0), Shard(1)], [Shard(1), Shard(0)], [Shard(0), Shard(0)]][i % 3]
            return [Shard(0), Replicate()]

        m = _distribute_all(Net(), mesh2, two_d)
        init(m, policy, seed=seed)
        out["2d_mesh"] = compare(m, ref)

        with torch.device("meta"):
            m = Net()
        parallelize_module(m, mesh2["tp"], _tp_plan())
        _fsdp(m, mesh2["dp"])
        materialize(m, policy, device="cpu", seed=seed)
        out["fsdp_over_tp_meta"] = compare(m, ref)

        with torch.device("meta"):
            m = Net()
        _fsdp(m, mesh2)  # HSDP: a 2-D mesh, placements (Replicate(), Shard(0))
        materialize(m, policy, device="cpu", seed=seed)
        out["hsdp_meta"] = compare(m, ref)
    return out


# ---------------------------------------------------------------------------------------------
# End-to-end flows (issue 19, item 2): build -> shard -> init -> train -> checkpoint
# ---------------------------------------------------------------------------------------------

E2E_SEED = 11
VOCAB, DIM, HEADS, HIDDEN = 37, 16, 4, 24  # vocab 37: uneven FSDP shards at 2 and 4 ranks


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(DIM, DIM) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, hd = x.size(0), x.size(1), DIM // HEADS
        # -1 heads: under tensor parallelism each rank holds HEADS / tp of them
        q = self.q(x).view(b, t, -1, hd).transpose(1, 2)
        k = self.k(x).view(b, t, -1, hd).transpose(1, 2)
        v = self.v(x).view(b, t, -1, hd).transpose(1, 2)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(DIM, HIDDEN)
        self.act = nn.GELU()
        self.down = nn.Linear(HIDDEN, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class GptBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = nn.LayerNorm(DIM), Attention(), nn.LayerNorm(DIM), Mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGpt(nn.Module):
    """The documented flow's model: embedding, 2 pre-norm residual blocks, final norm, head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.blocks = nn.ModuleList([GptBlock(), GptBlock()])
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def e2e_batch() -> torch.Tensor:
    return torch.randint(0, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))


def e2e_loss(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    logits = model(idx[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))


def e2e_reference(threads: int) -> dict[str, Any]:
    """Single-process init of an eager TinyGpt with every preset at ``threads`` threads, and
    one SGD step of the ``auto`` model (its loss and the stepped parameters)."""
    from initwise import PRESETS, init, plan

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, Any] = {"presets": {}}
        for preset in PRESETS:
            torch.manual_seed(3)  # must not matter
            m = TinyGpt()
            init(m, preset, seed=E2E_SEED)
            out["presets"][preset] = {n: p.detach().clone() for n, p in m.named_parameters()}
        m = TinyGpt()
        init(m, "auto", seed=E2E_SEED)
        loss = e2e_loss(m, e2e_batch())
        loss.backward()
        torch.optim.SGD(m.parameters(), lr=0.5).step()
        out["plan"] = plan_summary(plan(TinyGpt(), "gpt2", seed=E2E_SEED))
        out["loss"] = loss.item()
        out["stepped"] = {n: p.detach().clone() for n, p in m.named_parameters()}
        return out
    finally:
        torch.set_num_threads(saved)


def plan_summary(p: Any) -> dict[str, tuple[Any, ...]]:
    """What a plan decides per tensor (scheme, std, gain, activation, action), for comparing plans."""
    return {e.name: (e.action, e.scheme, e.std, e.gain, e.activation) for e in p.entries}


def llama_config() -> Any:
    import transformers

    return transformers.LlamaConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=61)


def llama_reference(threads: int) -> dict[str, torch.Tensor] | None:
    """Single-process eager HF LLaMA (tiny config) + ``initwise.init``; None without transformers."""
    try:
        import transformers
    except ImportError:
        return None
    from initwise import init

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        m = transformers.LlamaForCausalLM(llama_config())
        init(m, "auto", seed=E2E_SEED)
        return {n: p.detach().clone() for n, p in m.named_parameters()}
    finally:
        torch.set_num_threads(saved)


def _gpt_tp_plan() -> dict[str, Any]:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    plan: dict[str, Any] = {}
    for i in range(2):
        for n in ("q", "k", "v"):
            plan[f"blocks.{i}.attn.{n}"] = ColwiseParallel()
        plan[f"blocks.{i}.attn.o"] = RowwiseParallel()
        plan[f"blocks.{i}.mlp.up"] = ColwiseParallel()
        plan[f"blocks.{i}.mlp.down"] = RowwiseParallel()
    return plan


def _gathered(model: nn.Module) -> dict[str, torch.Tensor]:
    from initwise.distributed import is_dtensor

    return {n: (p.full_tensor() if is_dtensor(p) else p).detach().clone() for n, p in model.named_parameters()}


def _local_blocks(model: nn.Module) -> dict[str, torch.Tensor]:
    from initwise.distributed import is_dtensor

    return {n: (p.to_local() if is_dtensor(p) else p).detach() for n, p in model.named_parameters()}  # type: ignore[operator]


def _blocks_of(model: nn.Module, ref: dict[str, torch.Tensor], local: bool) -> dict[str, torch.Tensor]:
    """``ref``'s blocks that ``model``'s parameters hold on this rank (``local_box``)."""
    from initwise.distributed import is_dtensor, local_box

    if not local:
        return ref
    out = {}
    for n, p in model.named_parameters():
        if is_dtensor(p):
            shape, offset = local_box(p)
            out[n] = ref[n][tuple(slice(o, o + s) for o, s in zip(offset, shape, strict=True))]
        else:
            out[n] = ref[n]
    return out


def _diff(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> list[str]:
    bad = []
    for n, w in want.items():
        g = got[n]
        if g.shape != w.shape or not torch.equal(g, w):
            d = (g - w).abs().max().item() if g.shape == w.shape else math.nan
            bad.append(f"{n} (max diff {d:.3g})")
    return bad


def _train_and_checkpoint(rank: int, build: Callable[[], nn.Module], ref: dict[str, Any], ckpt: str
                          ) -> dict[str, Any]:  # fmt: skip
    """forward -> backward -> SGD step -> DCP save -> load into a fresh model (another seed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    from initwise import materialize

    model = build()
    materialize(model, "auto", device="cpu", seed=E2E_SEED)
    loss = e2e_loss(model, e2e_batch())
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    stepped = _gathered(model)
    close = [n for n, w in ref["stepped"].items()
             if not torch.allclose(stepped[n], w, rtol=1e-4, atol=1e-6)]  # fmt: skip
    dcp.save(get_model_state_dict(model), checkpoint_id=ckpt)
    fresh = build()
    materialize(fresh, "auto", device="cpu", seed=E2E_SEED + 1)  # other values, then the load
    sd = get_model_state_dict(fresh)
    dcp.load(sd, checkpoint_id=ckpt)
    set_model_state_dict(fresh, sd)
    loaded = _gathered(fresh)
    with torch.no_grad():
        again, after = e2e_loss(fresh, e2e_batch()).item(), e2e_loss(model, e2e_batch()).item()
    return {
        "loss": loss.item(), "loss_ref": ref["loss"], "step_not_close": close,
        "load_differs": _diff(loaded, stepped), "loss_after_load": again, "loss_after_step": after,
    }  # fmt: skip


def worker_e2e(rank: int, world_size: int, refs: dict[int, dict[str, Any]],
               llama_refs: dict[int, Any], ckpt_dir: str) -> dict[str, Any]:  # fmt: skip
    """The documented flows at this world size (see tests/test_distributed_e2e.py)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import parallelize_module

    from initwise import PRESETS, init, materialize, plan
    from initwise.model.presets import get_policy

    torch.manual_seed(100 + rank)  # a different global RNG state on every rank: must not matter
    mesh = init_device_mesh("cpu", (world_size,))
    mesh2 = init_device_mesh("cpu", (2, world_size // 2), mesh_dim_names=("dp", "tp")) if world_size == 4 else None

    def fsdp(m: nn.Module, dp: Any = mesh) -> nn.Module:
        for b in m.blocks:  # type: ignore[union-attr]
            fully_shard(b, mesh=dp)
        fully_shard(m, mesh=dp)
        return m

    def meta() -> nn.Module:
        with torch.device("meta"):
            return TinyGpt()

    builders: dict[str, tuple[Callable[[], nn.Module], bool]] = {  # (build, on meta)
        "fsdp2_materialize": (lambda: fsdp(meta()), True),
        "fsdp2_init": (lambda: fsdp(TinyGpt()), False),
        "tp_materialize": (lambda: parallelize_module(meta(), mesh, _gpt_tp_plan()), True),
        "tp_init": (lambda: parallelize_module(TinyGpt(), mesh, _gpt_tp_plan()), False),
    }
    if mesh2 is not None:
        builders["2d_materialize"] = (
            lambda: fsdp(parallelize_module(meta(), mesh2["tp"], _gpt_tp_plan()), mesh2["dp"]), True)
    out: dict[str, Any] = {"init": {}, "train": {}, "cpu_s": {}}
    clock = time.process_time()

    def lap(what: str) -> None:
        nonlocal clock
        now = time.process_time()
        out["cpu_s"][what] = round(now - clock, 2)
        clock = now

    for layout, (build, on_meta) in builders.items():
        for preset in PRESETS:
            m = build()
            if on_meta:
                materialize(m, preset, device="cpu", seed=E2E_SEED)
            else:
                init(m, preset, seed=E2E_SEED)
            # every rank checks its own block against the same block of the reference (no
            # communication: equal blocks everywhere <=> equal gathered tensors); the gathered
            # full tensors are compared for one preset per layout
            got = _gathered(m) if preset == "gpt2" else _local_blocks(m)
            out["init"][f"{layout}/{preset}"] = {
                str(t): _diff(got, _blocks_of(m, refs[t]["presets"][preset], preset != "gpt2")) for t in refs
            }
        lap(f"init {layout}")
        if layout == "fsdp2_init":  # dry runs on the sharded model: same plan, and it still trains
            m = build()
            init(m, "gpt2", seed=E2E_SEED)
            plans = [plan_summary(plan(m, "gpt2", seed=E2E_SEED)),
                     plan_summary(plan(m, "gpt2", seed=E2E_SEED, example_inputs=e2e_batch()))]
            ref_plan = refs[1]["plan"]
            loss = e2e_loss(m, e2e_batch())
            loss.backward()
            out["dry_run"] = {
                "plan_differs": [[n for n in ref_plan if tuple(p[n]) != tuple(ref_plan[n])] for p in plans],
                "loss": loss.item(),
            }
        if on_meta:
            ckpt = os.path.join(ckpt_dir, f"ws{world_size}_{layout}")
            out["train"][layout] = _train_and_checkpoint(rank, build, refs[1], ckpt)
            lap(f"train {layout}")

    # a materialize interrupted half-way under FSDP2 goes back to meta; the retry is exact
    calls = [0]

    def stop(tensor: torch.Tensor, **_: Any) -> torch.Tensor:
        """Passes validation's dry run, then Ctrl-C in the write pass (after other writes)."""
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return tensor.zero_()

    m = fsdp(meta())
    pol = Policy((Rule(stop, name="blocks.1.mlp.down.weight"), *get_policy("auto").rules))
    try:
        materialize(m, pol, device="cpu", seed=E2E_SEED)
        out["interrupt"] = "no KeyboardInterrupt"
    except KeyboardInterrupt:
        on_meta = all(p.to_local().is_meta for p in m.parameters())  # type: ignore[attr-defined]
        materialize(m, "auto", device="cpu", seed=E2E_SEED)
        out["interrupt"] = {"back_on_meta": on_meta, "calls": calls[0],
                            "retry_differs": _diff(_gathered(m), refs[1]["presets"]["auto"])}
    # init interrupted half-way on an eager FSDP2 model: every rank's shards as they were
    calls[0] = 0
    m = fsdp(TinyGpt())
    before = _local_blocks(m)
    before = {n: t.clone() for n, t in before.items()}
    try:
        init(m, pol, seed=E2E_SEED)
        out["interrupt_init"] = "no KeyboardInterrupt"
    except KeyboardInterrupt:
        out["interrupt_init"] = {"calls": calls[0], "changed": _diff(_local_blocks(m), before)}
    lap("interrupt")

    if world_size == 2 and llama_refs.get(1) is not None:  # (importing transformers costs)
        from transformers import LlamaForCausalLM

        with torch.device("meta"):
            lm = LlamaForCausalLM(llama_config())
        for layer in lm.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(lm, mesh=mesh)
        materialize(lm, "auto", device="cpu", seed=E2E_SEED)
        got = _gathered(lm)
        res: dict[str, Any] = {str(t): _diff(got, r) for t, r in llama_refs.items()}
        ids = torch.randint(0, 61, (2, 9), generator=torch.Generator().manual_seed(1))
        loss = lm(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.optim.SGD(lm.parameters(), lr=0.1).step()
        res["loss"] = loss.item()
        res["finite_after_step"] = all(bool(torch.isfinite(p.to_local()).all()) for p in lm.parameters())  # type: ignore[attr-defined]
        out["llama"] = res
        lap("llama")
    return out


def worker_all(rank: int, world_size: int, seed: int, variant: int, e2e: tuple[Any, ...] | None) -> dict[str, Any]:
    """One process group for the layout contract and (world sizes 2, 4) the end-to-end flows."""
    out: dict[str, Any] = {"layouts": worker_layouts(rank, world_size, seed, variant)}
    if e2e is not None:
        out["e2e"] = worker_e2e(rank, world_size, *e2e)
    return out


_SPAWNED: dict[int, list[Any]] = {}


def spawned(world_size: int) -> list[Any]:
    """The per-rank results of :func:`worker_all` at ``world_size``, spawned once per session
    (the contract test and the end-to-end tests share one process group: spawning is the cost)."""
    if world_size not in _SPAWNED:
        e2e = None
        if world_size > 1:
            refs = {t: e2e_reference(t) for t in (1, 2)}
            llama = {t: llama_reference(t) for t in (1, 2)} if world_size == 2 else {}
            ckpt = tempfile.mkdtemp(prefix="initwise_dcp_")
            e2e = (refs, llama, ckpt)
        try:
            _SPAWNED[world_size] = run_ranks(worker_all, world_size, 7, world_size, e2e, timeout=300)
        finally:
            if e2e is not None:
                shutil.rmtree(e2e[2], ignore_errors=True)
    return _SPAWNED[world_size]


# ---------------------------------------------------------------------------------------------
# An odd world size (3 ranks): shards that do not divide, FSDP2 options, only=, HF models
# ---------------------------------------------------------------------------------------------

ODD_SEED = 5
ODD_ONLY = ("blocks.0.up.weight", "head")


class OddBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(10)
        self.up = nn.Linear(10, 130)
        self.down = nn.Linear(130, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(self.norm(x))))


class OddNet(nn.Module):
    """Dims 10 and 130: FSDP2 pads every shard at 3 ranks (4, 4, 2 rows; 44, 44, 42)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(130, 10)
        self.blocks = nn.ModuleList([OddBlock(), OddBlock()])
        self.head = nn.Linear(10, 130)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def odd_loss(model: nn.Module) -> torch.Tensor:
    idx = torch.randint(0, 130, (3, 5), generator=torch.Generator().manual_seed(3))
    return nn.functional.cross_entropy(model(idx).float().reshape(-1, 130), idx.reshape(-1))


def odd_hf_models() -> dict[str, Any]:
    """Tiny HF models with what LLaMA lacks: transposed Conv1D weights and a tied head
    (GPT-2), 3-D expert tensors (Qwen2-MoE), embeddings tied three ways (T5)."""
    import transformers as tr

    return {
        "gpt2": (tr.GPT2LMHeadModel, tr.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=61,
                                                   n_positions=16)),
        "qwen2moe": (tr.Qwen2MoeForCausalLM, tr.Qwen2MoeConfig(
            vocab_size=61, hidden_size=16, intermediate_size=24, moe_intermediate_size=12,
            shared_expert_intermediate_size=12, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, num_experts=3, num_experts_per_tok=2)),
        "t5": (tr.T5ForConditionalGeneration, tr.T5Config(
            vocab_size=61, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=4, decoder_start_token_id=0)),
    }


def _hf_blocks(model: nn.Module) -> list[nn.Module]:
    """The entries of the outermost ModuleLists (transformer blocks), for fully_shard."""
    taken: list[str] = []
    out: list[nn.Module] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and not any(name.startswith(t + ".") for t in taken):
            taken.append(name)
            out.extend(mod)
    return out


def odd_reference(threads: int) -> dict[str, Any]:
    """Single-process values at ``threads`` threads: OddNet init ``auto`` (and its loss), then
    ``xavier`` over ``only=ODD_ONLY``; each HF model materialized from meta with ``auto``."""
    from initwise import init, materialize

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        m = OddNet()
        init(m, "auto", seed=ODD_SEED)
        out: dict[str, Any] = {"auto": {n: p.detach().clone() for n, p in m.named_parameters()}}
        out["loss"] = odd_loss(m).item()
        init(m, "xavier", seed=ODD_SEED + 1, only=list(ODD_ONLY))
        out["only"] = {n: p.detach().clone() for n, p in m.named_parameters()}
        try:
            models = odd_hf_models()
        except ImportError:
            return out
        for kind, (cls, cfg) in models.items():
            with torch.device("meta"):
                hf = cls(cfg)
            materialize(hf, "auto", device="cpu", seed=ODD_SEED)
            out[kind] = {n: p.detach().clone() for n, p in hf.named_parameters()}
        return out
    finally:
        torch.set_num_threads(saved)


def worker_odd(rank: int, world_size: int, refs: dict[int, dict[str, Any]], ckpt: str) -> dict[str, Any]:
    """OddNet and tiny HF models at an odd world size; returns mismatches per case and thread count."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    from initwise import audit, init, materialize

    torch.manual_seed(100 + rank)  # must not matter
    mesh = init_device_mesh("cpu", (world_size,))
    out: dict[str, Any] = {}

    def versus(model: nn.Module, what: str) -> dict[str, list[str]]:
        got = _gathered(model)
        return {str(t): _diff(got, r[what]) for t, r in refs.items()}

    def fsdp(m: nn.Module, **kw: Any) -> nn.Module:
        for b in m.blocks:  # type: ignore[union-attr]
            fully_shard(b, mesh=mesh, **kw)
        fully_shard(m, mesh=mesh, **kw)
        return m

    def meta_odd() -> nn.Module:
        with torch.device("meta"):
            return OddNet()

    # meta -> FSDP2 without resharding after forward, bf16 compute -> materialize -> train -> DCP
    opts = {"reshard_after_forward": False, "mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16)}
    m = fsdp(meta_odd(), **opts)
    materialize(m, "auto", device="cpu", seed=ODD_SEED)
    out["fsdp2_bf16_materialize"] = versus(m, "auto")
    loss = odd_loss(m)
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    stepped = _gathered(m)
    dcp.save(get_model_state_dict(m), checkpoint_id=ckpt)
    fresh = fsdp(meta_odd(), **opts)
    materialize(fresh, "auto", device="cpu", seed=ODD_SEED + 9)
    sd = get_model_state_dict(fresh)
    dcp.load(sd, checkpoint_id=ckpt)
    set_model_state_dict(fresh, sd)
    out["train"] = {"loss": loss.item(), "loss_ref": refs[1]["loss"],
                    "finite": all(bool(torch.isfinite(t).all()) for t in stepped.values()),
                    "load_differs": _diff(_gathered(fresh), stepped)}  # fmt: skip

    # eager -> FSDP2 with CPU offload -> init, then init again over only= (not meta)
    m = fsdp(OddNet(), offload_policy=CPUOffloadPolicy(pin_memory=False))
    init(m, "auto", seed=ODD_SEED)
    init(m, "xavier", seed=ODD_SEED + 1, only=list(ODD_ONLY))
    out["fsdp2_offload_init_only"] = versus(m, "only")
    try:
        audit(m, torch.zeros(2, 3, dtype=torch.long))
        out["audit"] = "no error"
    except ValueError as e:
        out["audit"] = str(e)

    # tensor parallel, 130 columns / rows over 3 ranks
    tp = {f"blocks.{i}.{k}": ColwiseParallel() if k == "up" else RowwiseParallel()
          for i in range(2) for k in ("up", "down")}  # fmt: skip
    m = parallelize_module(OddNet(), mesh, tp)
    init(m, "auto", seed=ODD_SEED)
    out["tp_init"] = versus(m, "auto")
    m = parallelize_module(meta_odd(), mesh, tp)
    materialize(m, "auto", device="cpu", seed=ODD_SEED)
    out["tp_materialize"] = versus(m, "auto")

    if "gpt2" in refs[1]:
        ids = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(1))
        for kind, (cls, cfg) in odd_hf_models().items():
            with torch.device("meta"):
                hf = cls(cfg)
            for block in _hf_blocks(hf):
                fully_shard(block, mesh=mesh)
            fully_shard(hf, mesh=mesh)
            materialize(hf, "auto", device="cpu", seed=ODD_SEED)
            res: dict[str, Any] = versus(hf, kind)
            extra = {"decoder_input_ids": ids} if kind == "t5" else {}
            hf_loss = hf(input_ids=ids, labels=ids, **extra).loss
            hf_loss.backward()
            res["loss_finite"] = math.isfinite(hf_loss.item())
            out[f"hf_{kind}"] = res
    return out
