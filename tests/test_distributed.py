"""Sharded init on torch.distributed: gathered weights equal single-process init, bit for bit.

Multi-process tests run gloo ranks on 127.0.0.1 (tests/_dist_helpers.py); large world sizes
are simulated in one process with torch's fake process group, comparing every simulated
rank's local block with the matching chunk of the single-process result.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from _dist_helpers import (
    Net,
    gloo_available,
    keyed_reference,
    keyed_reset,
    spawned,
)
from conftest import assert_variance
from initwise import random as iwr
from initwise._names import canonical_name
from initwise.distributed import fill_sharded_, local_box
from initwise.model.keyed import keyed_init

pytestmark = pytest.mark.distributed

STRUCTURED = {"lstm.weight_hh_l0", "conv.weight", "head.weight", "blocks.1.up.weight",
              "blocks.1.down.weight", "lstm.bias_ih_l0"}  # fmt: skip
ELEMENTWISE_2D = {"emb.weight", "blocks.0.up.weight", "blocks.0.down.weight"}


# ---------------------------------------------------------------------------------------------
# gloo: world sizes 1, 2, 4, every layout, every scheme
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not gloo_available(), reason="gloo backend unavailable")
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_sharded_init_equals_single_process(world_size: int) -> None:
    results = [r["layouts"] for r in spawned(world_size)]  # (one process group per world size)
    expected = {"fsdp2", "fsdp2_digest_check", "ddp_lsuv", "fsdp2_init_after_forward", "fsdp2_meta_materialize", "tp_parallelize_module",
                "distribute_tensor_shard0_shard1", "keyed_init_fsdp2", "keyed_init_distribute_tensor"}
    if world_size == 4:
        expected |= {"2d_mesh", "fsdp_over_tp_meta", "hsdp_meta"}
    for rank, res in enumerate(results):
        fallback = set(res.pop("_fallback"))
        assert set(res) == expected
        bad = {layout: names for layout, names in res.items() if names}
        assert not bad, f"rank {rank}/{world_size}: gathered weights differ from single-process init: {bad}"
        # structured schemes used the whole-parameter fallback, elementwise ones did not
        # (rank 0 always holds a non-empty block; empty blocks write nothing at all)
        assert rank > 0 or fallback >= STRUCTURED, fallback
        assert not (ELEMENTWISE_2D & fallback), fallback


# ---------------------------------------------------------------------------------------------
# fake process group: 8 to 64 simulated ranks in one process
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_pg():
    fake = pytest.importorskip("torch.testing._internal.distributed.fake_pg")

    def start(rank: int, world_size: int) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        dist.init_process_group("fake", store=fake.FakeStore(), rank=rank, world_size=world_size)

    yield start
    if dist.is_initialized():
        dist.destroy_process_group()


def _chunk(t: torch.Tensor, n: int, dim: int, i: int) -> torch.Tensor:
    """torch.chunk semantics (what Shard uses); an empty block for ranks past the last chunk."""
    parts = t.chunk(n, dim)
    if i < len(parts):
        return parts[i]
    shape = list(t.shape)
    shape[dim] = 0
    return t.new_empty(shape)


@pytest.mark.parametrize(("mesh_shape", "placements"), [
    ((8,), "S0"), ((64,), "S0"), ((64,), "S1"), ((8, 8), "S0S1"), ((8, 8), "S1S0"), ((4, 16), "S0S0"),
])  # fmt: skip
def test_simulated_ranks_blocks_equal_single_process(fake_pg, mesh_shape, placements) -> None:
    """8-64 simulated ranks: each rank's block (DTensor's sharding math) of every scheme.

    The block is filled the way :func:`initwise.init` fills a DTensor's local
    tensor (engine fills boxed to the rank's offset) and compared with ``torch.chunk`` of the
    single-process tensor. (DTensor objects themselves are exercised by the gloo tests: under a
    re-created fake group DTensor ops hand back a cached mesh with a stale coordinate.)
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    from initwise.distributed import ELEMENTWISE_SCHEMES
    from initwise.random._engine import shard_scope
    from initwise.registry import get_scheme

    dims = [int(c) for c in placements[1::2]]
    world = math.prod(mesh_shape)
    gshape = (67, 19)
    fans = (19.0, 67.0)
    extra = {"constant": {"val": 0.5}}
    wholes = {}
    for name in sorted(ELEMENTWISE_SCHEMES):
        scheme = get_scheme(name, **extra.get(name, {}))
        wholes[name] = (scheme, scheme(torch.empty(gshape), fans=fans, generator=iwr.key(1, name)))
    for rank in sorted({0, 1, world // 2 + 3, world - 1}):
        fake_pg(rank, world)
        mesh = init_device_mesh("cpu", mesh_shape)
        shape, offset = compute_local_shape_and_global_offset(gshape, mesh, [Shard(d) for d in dims])
        coord = mesh.get_coordinate()
        for name, (scheme, whole) in wholes.items():
            want = whole
            for mdim, d in enumerate(dims):
                want = _chunk(want, mesh_shape[mdim], d, coord[mdim])
            assert tuple(want.shape) == tuple(shape)
            local = torch.empty(shape)
            if local.numel():
                with shard_scope(local, tuple(offset), gshape) as foreign:
                    scheme(local, fans=fans, generator=iwr.key(1, name))
                assert not foreign
            assert torch.equal(local, want), f"{name} rank {rank} of {mesh_shape} {placements}"


def test_fill_sharded_fallback_when_fill_is_not_elementwise(fake_pg) -> None:
    """elementwise=True with a fill that draws into a scratch tensor still gives the right block."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    k = iwr.key(3, "w")
    from initwise import orthogonal_

    whole = orthogonal_(torch.empty(12, 5), generator=k)
    for rank in range(4):
        fake_pg(rank, 4)
        mesh = init_device_mesh("cpu", (4,))
        d = distribute_tensor(torch.zeros(12, 5), mesh, [Shard(1)], src_data_rank=None)
        fill_sharded_(d, lambda t: orthogonal_(t, generator=k), elementwise=True)
        assert torch.equal(d.to_local(), _chunk(whole, 4, 1, rank))
        shape, offset = local_box(d)
        assert shape == tuple(d.to_local().shape) and offset[0] == 0


def test_partial_placement_is_refused(fake_pg) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial

    fake_pg(0, 2)
    mesh = init_device_mesh("cpu", (2,))
    d = DTensor.from_local(torch.zeros(3, 4), mesh, [Partial()], run_check=False)
    with pytest.raises(ValueError, match=r"[Pp]artial"):
        local_box(d)
    with pytest.raises(ValueError, match="expected a DTensor"):
        local_box(torch.zeros(2))


def _shard_rows(model: nn.Module, mesh, keep: set[str] = frozenset()) -> nn.Module:  # type: ignore[assignment]
    """Every parameter (but ``keep``) becomes this rank's ``Shard(0)`` DTensor block (FSDP2's
    placement), filled with NaN: only what init writes can pass a comparison."""
    from torch.distributed.tensor import DTensor, Shard

    for name, p in list(model.named_parameters()):
        if name in keep:
            continue
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        block = _chunk(p.detach(), mesh.size(), 0, mesh.get_local_rank()).clone().fill_(math.nan)
        d = DTensor.from_local(block, mesh, [Shard(0)], run_check=False, shape=p.shape, stride=p.stride())
        setattr(mod, leaf, nn.Parameter(d))
    return model


def test_hf_conv1d_weights_under_shard0_equal_single_process(fake_pg) -> None:
    """GPT-2's Conv1D weights (stored [in, out], drawn as their [out, in] transpose) sharded
    as FSDP2 shards them: every block equals the same rows of the single-process init. They
    were drawn as stored (other values: max diff ~1 at every world size, FSDP2 eager and
    meta alike) and c_attn lost its q, k, v blocks (fan_out 48 instead of 16)."""
    transformers = pytest.importorskip("transformers")
    from torch.distributed.device_mesh import init_device_mesh

    from initwise import init, plan

    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=61, n_positions=16)
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(cfg)
    want = init(ref, "gpt2", seed=3)
    world, rank = 3, 1  # c_attn [16, 48]: rows 6..11 of 16 (uneven)
    fake_pg(rank, world)
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    m = _shard_rows(transformers.GPT2LMHeadModel(cfg), mesh, keep={"transformer.wte.weight"})
    got = init(m, "gpt2", seed=3)
    for e in want.entries:
        if e.action == "init":
            g = got[e.name]
            assert (g.fan_in, g.fan_out, g.std) == (e.fan_in, e.fan_out, e.std), e.name
    refp = dict(ref.named_parameters())
    conv = 0
    for name, p in m.named_parameters():
        if name == "transformer.wte.weight":
            continue
        conv += name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        assert torch.equal(p.to_local(), _chunk(refp[name].detach(), world, 0, rank)), name
    assert conv == 4
    assert plan(m, "gpt2", seed=3)["transformer.h.0.attn.c_attn.weight"].fan_out == 16.0

    # built on meta, fully_shard, materialize: the plan held the meta weights' transposes,
    # and FSDP2's DTensors cannot be given storage while other references exist
    from torch.distributed.fsdp import fully_shard

    from initwise import materialize

    with torch.device("meta"):
        sp, fs = transformers.GPT2LMHeadModel(cfg), transformers.GPT2LMHeadModel(cfg)
    materialize(sp, "auto", device="cpu", seed=3)
    for block in fs.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(fs, mesh=mesh)
    materialize(fs, "auto", device="cpu", seed=3)
    spp = dict(sp.named_parameters())
    for name, p in fs.named_parameters():
        assert torch.equal(p.to_local(), _chunk(spp[name].detach(), world, 0, rank)), name

    # only= leaves the tied wte / lm_head to GPT-2's _init_weights: FSDP2 gives a DTensor
    # storage in place (swap_tensors), so the tie's second name no longer looked like meta,
    # was hidden from the rebuild, and materialize raised "nothing wrote lm_head.weight"
    with torch.device("meta"):
        sp, fs = transformers.GPT2LMHeadModel(cfg), transformers.GPT2LMHeadModel(cfg)
    materialize(sp, "auto", device="cpu", seed=3, only="transformer.h.0")
    fully_shard(fs.transformer.h[0], mesh=mesh)
    fully_shard(fs, mesh=mesh)
    materialize(fs, "auto", device="cpu", seed=3, only="transformer.h.0")
    spp = dict(sp.named_parameters())
    assert fs.lm_head.weight is fs.transformer.wte.weight
    for name, p in fs.named_parameters():
        assert torch.equal(p.to_local(), _chunk(spp[name].detach(), world, 0, rank)), name


def test_lsuv_and_audit_refuse_sharded_parameters_by_name(fake_pg) -> None:
    """lsuv and audit run the whole model in one process: a DTensor parameter is refused
    before anything runs, naming it (audit of an FSDP2 model read storage FSDP2 had freed and
    killed the process with SIGSEGV; lsuv failed inside its first pass with "mixed
    torch.Tensor and DTensor"). The model is left as it was."""
    from torch.distributed.device_mesh import init_device_mesh

    from initwise import audit, lsuv

    fake_pg(0, 2)
    mesh = init_device_mesh("cpu", (2,))
    torch.manual_seed(0)
    m = _shard_rows(nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)), mesh, keep={"0.bias"})
    before = [p.to_local().clone() if hasattr(p, "to_local") else p.clone() for p in m.parameters()]
    x = torch.randn(8, 6)
    with pytest.raises(ValueError, match=r"lsuv: parameter '0\.weight' is a DTensor.*unsharded"):
        lsuv(m, x)
    with pytest.raises(ValueError, match=r"audit: parameter '0\.weight' is a DTensor.*unsharded"):
        audit(m, x)
    after = [p.to_local() if hasattr(p, "to_local") else p for p in m.parameters()]
    assert all(torch.equal(a, b) or (a.isnan().all() and b.isnan().all()) for a, b in zip(after, before, strict=True))


# ---------------------------------------------------------------------------------------------
# keyed_init (single process)
# ---------------------------------------------------------------------------------------------


def test_keyed_init_is_independent_of_global_rng_and_matches_initwise_schemes() -> None:
    from initwise import kaiming_uniform_

    a, b = nn.Linear(20, 30), nn.Linear(20, 30)
    torch.manual_seed(0)
    with keyed_init(a, seed=4) as stats:
        a.reset_parameters()
    torch.manual_seed(1)
    with keyed_init(b, seed=4):
        b.reset_parameters()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert stats.draws == {"weight": 1, "bias": 1}
    want = kaiming_uniform_(torch.empty(30, 20), a=math.sqrt(5), generator=iwr.key(4, "weight"))
    assert torch.equal(a.weight, want)
    # a different seed gives different values
    with keyed_init(b, seed=5):
        b.reset_parameters()
    assert not torch.equal(a.weight, b.weight)


def test_keyed_init_tensor_methods_draws_and_statistics() -> None:
    m = nn.Embedding(400, 500)
    with keyed_init(m, seed=0) as stats:
        m.weight.data.normal_(0.0, 0.02)  # .data is a new tensor object: found by storage
        first = m.weight.detach().clone()
        m.weight.data.normal_(0.0, 0.02)  # second draw: a different, still keyed stream
    assert stats.draws == {"weight": 2}
    assert not torch.equal(first, m.weight)
    assert torch.equal(first, iwr.normal_(torch.empty(400, 500), iwr.key(0, "weight"), std=0.02))
    assert torch.equal(m.weight, iwr.normal_(torch.empty(400, 500), iwr.key(0, "weight").child("draw1"), std=0.02))
    assert_variance(m.weight, 0.02**2, excess_kurtosis=0.0)


def test_keyed_init_passes_unknown_tensors_through_and_restores_on_error() -> None:
    orig_fn, had_method = torch.nn.init.normal_, "normal_" in vars(torch.Tensor)
    m = nn.Linear(3, 3)
    with pytest.raises(RuntimeError, match="boom"), keyed_init(m, seed=0) as stats:
        torch.manual_seed(0)
        x = torch.empty(50).normal_()
        y = torch.nn.init.uniform_(torch.empty(50))
        raise RuntimeError("boom")
    torch.manual_seed(0)
    assert torch.equal(x, torch.empty(50).normal_())
    assert torch.equal(y, torch.empty(50).uniform_())
    assert stats.passed_through == 1 and stats.draws == {}
    assert torch.nn.init.normal_ is orig_fn and ("normal_" in vars(torch.Tensor)) == had_method


def test_keyed_init_hf_gpt2_init_weights() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16)
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        m = transformers.GPT2LMHeadModel(cfg)
        with keyed_init(m, seed=9) as stats:
            m.apply(m._init_weights)
        models.append(m)
    a, b = models
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n
    assert stats.draws["transformer.h.0.mlp.c_proj.weight"] >= 1
    w = a.transformer.wte.weight
    assert_variance(w, 0.02**2, excess_kurtosis=0.0)
    c = torch.cat([a.transformer.h[i].attn.c_proj.weight.flatten() for i in range(2)])
    assert_variance(c, (0.02 / math.sqrt(4)) ** 2, excess_kurtosis=0.0)


@pytest.mark.skipif(not gloo_available(), reason="gloo backend unavailable")
def test_keyed_reference_is_deterministic() -> None:
    a, b = keyed_reference(1), keyed_reference(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    net = Net()
    keyed_reset(net, 2)
    assert not torch.equal(net.emb.weight, a["emb.weight"])


# ---------------------------------------------------------------------------------------------
# canonical names
# ---------------------------------------------------------------------------------------------


def test_canonical_names_of_real_wrappers() -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.nn.utils import parametrizations

    base = [n for n, _ in Net().named_parameters()]
    net = Net()
    net.blocks[0] = checkpoint_wrapper(net.blocks[0])
    parametrizations.orthogonal(net.head)
    compiled = torch.compile(net)
    names = [canonical_name(n) for n, _ in compiled.named_parameters()]
    assert sorted(names) == sorted(base)
    assert canonical_name("module.module.x.weight") == "x.weight"
    assert canonical_name("module.x", strip_module=False) == "module.x"
    assert canonical_name("a._fsdp_wrapped_module.b.parametrizations.weight.original0") == "a.b.weight.original0"
    with pytest.raises(TypeError):
        canonical_name(3)  # type: ignore[arg-type]


_TORCH_DTENSOR_NATIVE = {"normal_", "uniform_", "xavier_uniform_", "kaiming_normal_", "lecun_uniform_"}
DROPIN_ON_DTENSOR = [
    ("trunc_normal_", (64, 12), {"std": 0.02, "a": -0.04, "b": 0.04}),
    ("truncated_normal_", (64, 12), {"std": 0.02}),
    ("normal_", (64, 12), {"std": 0.02}),
    ("uniform_", (64, 12), {"a": -1.0, "b": 1.0}),
    ("xavier_uniform_", (64, 12), {}),
    ("kaiming_normal_", (64, 12, 3), {"mode": "fan_out"}),
    ("lecun_uniform_", (64, 12), {"fans": (7.0, 5.0)}),
    ("he_truncated_normal_", (64, 12, 3), {}),
    ("variance_scaling_", (64, 12), {"scale": 2.0, "distribution": "truncated_normal", "in_axis": 0, "out_axis": 1}),
    ("orthogonal_", (64, 12), {"gain": 1.5}),
    ("delta_orthogonal_", (64, 12, 3), {}),
    ("sparse_", (64, 12), {"sparsity": 0.3}),
]


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("keyed", [True, False], ids=["key", "torch-generator"])
@pytest.mark.parametrize("name,shape,kwargs", DROPIN_ON_DTENSOR, ids=[d[0] for d in DROPIN_ON_DTENSOR])
def test_dropin_scheme_called_on_a_dtensor_writes_its_block_of_the_whole(
    fake_pg, monkeypatch, name: str, shape: tuple[int, ...], kwargs: dict, keyed: bool, dim: int
) -> None:
    """``initwise.trunc_normal_(dtensor, ...)`` as TorchTitan calls ``nn.init.trunc_normal_`` on
    sharded parameters: each rank's block is that block of the scheme applied to the whole
    (with a torch generator: the same generator state on every rank, as DTensor's RNG needs)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import initwise

    if not keyed and name in _TORCH_DTENSOR_NATIVE:
        pytest.skip("with a torch generator these run as DTensor random ops, exactly as torch.nn.init's")

    def gen() -> object:
        return iwr.key(9, name) if keyed else torch.Generator().manual_seed(9)

    import initwise._sharding as sharding

    local_paths: list[bool] = []
    real = sharding.fill_sharded
    monkeypatch.setattr(sharding, "fill_sharded", lambda *a: local_paths.append(real(*a)) or local_paths[-1])
    fn = getattr(initwise, name)
    whole = fn(torch.empty(shape), **kwargs, generator=gen())
    for rank in range(4):
        fake_pg(rank, 4)
        mesh = init_device_mesh("cpu", (4,))
        d = distribute_tensor(torch.zeros(shape), mesh, [Shard(dim)], src_data_rank=None)
        assert fn(d, **kwargs, generator=gen()) is d
        assert torch.equal(d.to_local(), _chunk(whole, 4, dim, rank)), (name, rank)
    # keyed elementwise schemes never hold the whole parameter (docs/distributed.md)
    shard_local = keyed and name not in {"orthogonal_", "delta_orthogonal_", "sparse_"}
    assert local_paths == [shard_local] * 4
