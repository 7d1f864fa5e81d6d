""":func:`materialize`: a meta-device model (optionally sharded) gets storage and its init.

The plan is built once, on the meta model, and validated before anything is allocated; storage
is then given module by module (children first, so FSDP2 modules re-register their shards),
buffers are rebuilt by their rules, tensors the policy leaves to their modules are reset by the
model's own init (keyed), and the plan is written. Peak memory is the model plus one
parameter; the values equal an eager :func:`initwise.init` bit for bit. The whole story of
sharded and meta-device init is in :mod:`initwise.distributed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from .._names import canonical_name
from .._session import deferred_interrupts, preserved_rng
from .._torch import apply_to_own_tensors, own_buffers, own_parameters, readopt_fsdp_parameters
from .apply import analyze, validate, write_all
from .keyed import keyed_init
from .resolve import rebind
from .scalars import add_scalars, remove_fixup_scalars

__all__ = ["materialize"]

log = logging.getLogger("initwise")

_BN_BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
ResetFn = Callable[[str, nn.Module], bool]
_UNBOUND = torch.empty(0, device="meta")  # a work item's tensor until rebind() finds it again


def _rope_values(module: nn.Module, device: torch.device) -> torch.Tensor | None:
    """``inv_freq`` of a Hugging Face-style rotary embedding, recomputed from its config."""
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None
    fn = getattr(module, "rope_init_fn", None)  # transformers < 5 stores it on the module
    rope_type = getattr(module, "rope_type", "default")
    if fn is None and rope_type == "default":
        fn = getattr(module, "compute_default_rope_parameters", None)
    if fn is None:
        try:
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        except ImportError:
            return None
        fn = ROPE_INIT_FUNCTIONS.get(rope_type)
    if fn is None:
        return None
    try:
        out = fn(cfg, device)
    except TypeError:
        out = fn(cfg)
    inv = out[0] if isinstance(out, tuple) else out
    return inv if isinstance(inv, torch.Tensor) else None


def _init_weights_of(root: nn.Module, name: str) -> Callable[[nn.Module], object] | None:
    """The ``_init_weights`` that initializes module ``name``: that of its innermost enclosing
    module (itself included) that has one, as Hugging Face's ``smart_apply`` switches to a
    sub-model's own (Llava's CLIP vision tower: CLIP's, which writes ``class_embedding`` and
    ``position_ids``; Llava's does not); ``None`` if none has one."""
    parts = name.split(".") if name else []
    for k in range(len(parts), -1, -1):
        fn = getattr(root.get_submodule(".".join(parts[:k])) if k else root, "_init_weights", None)
        if callable(fn):
            return cast(Callable[[nn.Module], object], fn)
    return None


def _buffer_rule(name: str, module: nn.Module, buffers: list[str], root: nn.Module,
                 reset: ResetFn | None) -> str:
    """Which rule rebuilds ``module``'s meta buffers (checked before anything is allocated)."""
    if reset is not None:
        return "reset"
    if set(buffers) <= _BN_BUFFERS and callable(getattr(module, "reset_running_stats", None)):
        return "reset_running_stats"
    if "inv_freq" in buffers and "Rotary" in type(module).__name__ and getattr(module, "config", None) is not None:
        return "rope"
    if callable(getattr(module, "reset_parameters", None)):
        return "reset_parameters"
    if _init_weights_of(root, name) is not None:
        return "_init_weights"
    full = ", ".join(f"{name}.{b}" if name else b for b in buffers)
    raise ValueError(
        f"materialize: cannot rebuild buffer(s) {full} of module {name or '<root>'!r} "
        f"({type(module).__name__}) from the meta device: it has no reset_running_stats(), "
        "rotary config or reset_parameters(), and the model has no _init_weights(). Pass "
        "reset=fn (fn(module_name, module) -> True once it has filled them), or build that "
        "module outside the meta device"
    )


def _apply_rule(rule: str, name: str, module: nn.Module, root: nn.Module, device: torch.device,
                reset: ResetFn | None) -> None:
    if rule == "reset":
        assert reset is not None
        if not reset(name, module):
            raise ValueError(f"materialize: reset() returned False for module {name!r}")
    elif rule == "reset_running_stats":
        module.reset_running_stats()  # type: ignore[operator]
    elif rule == "rope":
        inv = _rope_values(module, device)
        if inv is None:
            raise ValueError(f"materialize: cannot recompute inv_freq of rotary module {name!r} "
                             f"({type(module).__name__}) from its config; pass reset=fn")
        with torch.no_grad():
            for b in ("inv_freq", "original_inv_freq"):
                buf = getattr(module, b, None)
                if isinstance(buf, torch.Tensor):
                    buf.copy_(inv.to(buf.device, buf.dtype))
    elif rule == "reset_parameters":
        module.reset_parameters()  # type: ignore[operator]
    else:
        fn = _init_weights_of(root, name)
        assert fn is not None
        fn(module)


class _Allocation:
    """What :func:`_allocate` gave storage to, so that :meth:`undo` can put it back on meta."""

    def __init__(self) -> None:
        self.modules: list[nn.Module] = []
        # (a module's own parameter or buffer dict, name, the meta tensor it held)
        self.originals: list[tuple[dict[str, Any], str, torch.Tensor]] = []
        self.meta_params: set[str] = set()
        self.meta_buffers: set[str] = set()

    def undo(self) -> None:
        """Every module gets back the very meta tensors it had (ties included)."""
        with deferred_interrupts():
            for table, name, t in self.originals:
                if not t.is_meta:
                    # ``_apply`` gave this very object storage (for DTensors it swaps the new
                    # tensor's contents in with ``torch.utils.swap_tensors``): swap meta back in
                    twin = torch.empty_like(t, device="meta")
                    if isinstance(t, nn.Parameter):
                        twin = nn.Parameter(twin, requires_grad=t.requires_grad)
                    torch.utils.swap_tensors(t, twin)
                table[name] = t
            for module in self.modules:  # FSDP2 adopts them back
                readopt_fsdp_parameters(module)


def _allocate(model: nn.Module, device: torch.device, out: _Allocation) -> None:
    """``to_empty`` module by module, children first, keeping ties and non-meta tensors."""
    made: dict[int, torch.Tensor] = {}
    param_obj: dict[int, nn.Parameter] = {}
    keep_alive: list[torch.Tensor] = []  # meta originals: their ids must stay unique
    # which tensors were on meta, read before anything is allocated: a DTensor parameter gets
    # its storage in place (``_apply`` swaps it), so under a second name (a tie: GPT-2's
    # lm_head / wte) it no longer looks like meta once the first module has been given storage
    modules = list(model.named_modules())
    was_meta = {id(t) for _, m in modules for t in (*own_parameters(m).values(), *own_buffers(m).values())
                if t is not None and t.is_meta}  # fmt: skip

    def empty(t: torch.Tensor) -> torch.Tensor:
        if not t.is_meta:
            return t
        if id(t) not in made:
            keep_alive.append(t)
            made[id(t)] = torch.empty_like(t, device=device)
        return made[id(t)]

    for mname, module in reversed(modules):
        params = {n: p for n, p in own_parameters(module).items() if p is not None}
        buffers = {n: b for n, b in own_buffers(module).items() if b is not None}
        if not any(id(t) in was_meta for t in (*params.values(), *buffers.values())):
            continue
        prefix = f"{mname}." if mname else ""
        out.meta_params.update(prefix + n for n, p in params.items() if id(p) in was_meta)
        out.meta_buffers.update(prefix + n for n, b in buffers.items() if id(b) in was_meta)
        keep_alive.extend(params.values())
        out.modules.append(module)
        out.originals.extend((own_parameters(module), n, p) for n, p in params.items() if id(p) in was_meta)
        out.originals.extend((own_buffers(module), n, b) for n, b in buffers.items() if id(b) in was_meta)
        apply_to_own_tensors(module, empty)
        for n, old in params.items():  # re-tie parameters shared between modules
            new = own_parameters(module)[n]
            if id(old) in param_obj and new is not param_obj[id(old)]:
                own_parameters(module)[n] = param_obj[id(old)]
            elif isinstance(new, nn.Parameter):
                param_obj.setdefault(id(old), new)


def materialize(
    model: nn.Module,
    policy: Any = "auto",
    *,
    device: torch.device | str,
    seed: int = 0,
    example_inputs: Any = None,
    only: Any = None,
    reset: ResetFn | None = None,
) -> Any:
    """Give a meta-device model real storage on ``device`` and initialize it; return the Plan.

    1. Storage: every module's meta parameters and buffers are replaced by uninitialized
       tensors on ``device`` with ``module._apply(..., recurse=False)`` (what
       ``to_empty(recurse=False)`` does), children before parents so FSDP2 modules re-register
       their sharded parameters; tied parameters stay tied; tensors not on meta are untouched.
       DTensor parameters get storage for their local shard only.
    2. Buffers, per module, by the first rule that applies (checked before step 1, so a model
       with a buffer no rule can rebuild fails before allocating, naming the buffer):
       ``reset(name, module)`` if given; ``reset_running_stats()`` (BatchNorm statistics);
       Hugging Face rotary embeddings (``inv_freq`` and ``original_inv_freq`` recomputed from
       the module's ``config`` with its rope init function); the module's
       ``reset_parameters()``; the model's ``_init_weights(module)`` (Hugging Face).
    3. Parameters the policy leaves to the module (``keep``, or not in ``only``) get the
       model's ``_init_weights`` on the module and its ancestors (Hugging Face), or the
       module's ``reset_parameters()``; these resets run inside :func:`initwise.keyed_init`, so
       their draws are keyed by name too. Module resets may write only the tensors being
       rebuilt (the plan's own and tensors not on meta are meta twins meanwhile): each tensor
       is written once, a loaded one never. A rebuilt tensor that nothing wrote (checked with
       a sentinel after step 4) raises, naming it, and the model goes back to meta.
    4. :func:`init` with ``policy``, ``seed``, ``example_inputs`` and ``only``. Without
       ``only``, a model only partly on meta gets its meta tensors initialized and the others
       (loaded, or built for real) kept as they are; the plan's notes name them.

    All or nothing: everything that can be checked (policy, ``only=``, ``seed``, the plan, the
    rules of steps 2-3) is checked before step 1; if anything later stops it (Ctrl-C, out of
    memory, a user callable), every module gets back the meta tensors it had and the exception
    propagates (``KeyboardInterrupt`` as itself). torch's global random state is left as it was.
    Peak memory is the model's own size plus one parameter of scratch; the values the
    plan writes are bit-identical to ``init`` of the same model built eagerly (tensors left to
    the model's own random init are keyed draws from its distribution, not an eager model's
    global-RNG values).

    Args:
        model: a model whose parameters/buffers are (partly) on the meta device.
        policy: as in :func:`initwise.init`.
        device: where storage is allocated (for DTensors: the local shards' device).
        seed: the seed of the keyed engine.
        example_inputs, only: as in :func:`initwise.init`.
        reset: ``fn(module_name, module) -> bool`` that rebuilds a module's buffers; called
            first for every module with meta buffers; must return True.

    >>> with torch.device("meta"):
    ...     bn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    >>> _ = materialize(bn, device="cpu")
    >>> bn[1].running_var.tolist() == [1.0] * 8
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"materialize: expected an nn.Module, got {type(model).__name__}")
    dev = torch.device(device)
    if dev.type == "meta":
        raise ValueError("materialize: device must be a real device, not 'meta'")
    loaded: list[str] = []
    if only is None:
        # a partly-meta model (a pretrained backbone loaded, a new head on meta): the tensors
        # that are not on meta were loaded or built for real; they are kept unless only= asks
        on_meta, loaded = _meta_split(model)
        if loaded and on_meta:
            only = partial(_is_in, frozenset(on_meta))
        else:
            loaded = []
    with preserved_rng():
        p, work, rules, needs = _prepare(model, policy, dev, seed, example_inputs, only, reset)
        allocation = _Allocation()
        try:
            _allocate(model, dev, allocation)
            planned = {n for w in work if w.setter is None for n in (w.entry.name, *w.entry.aliases)}
            marks = _rebuild(model, rules, needs, dev, seed, reset, planned, allocation)
            p = write_all(model, p, rebind(model, work), seed, backup=False)
            _check_written(marks)
            add_scalars(model, p.added)  # Fixup's scalars, on the allocated layers' device
        except BaseException:
            allocation.undo()  # nothing was there before: back on meta, as it was
            remove_fixup_scalars(model, [a.module for a in p.added])
            raise
    if loaded:
        shown = ", ".join(loaded[:5]) + (f" and {len(loaded) - 5} more" if len(loaded) > 5 else "")
        p.notes.append(
            f"{len(loaded)} tensor(s) not on meta (loaded or built for real) kept as they are: "
            f"{shown}; pass only= naming them to initialize them too"
        )
    p.notes.append(
        f"materialized {len(allocation.meta_params)} parameter(s) on {dev}; buffers rebuilt by "
        + (", ".join(sorted({f"{r}" for _, _, r in rules})) or "nothing (none on meta)")
    )
    return p


def _is_in(names: frozenset[str], name: str) -> bool:
    return name in names


def _meta_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Canonical names of the model's parameters and persistent buffers on meta, and of those
    that are not (each tensor once; a tied tensor under all its names)."""
    on_meta: list[str] = []
    real: list[str] = []
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in tensors:
        (on_meta if t.is_meta else real).append(canonical_name(name))
    return on_meta, real


def _prepare(model: nn.Module, policy: Any, dev: torch.device, seed: int, example_inputs: Any, only: Any,
             reset: ResetFn | None) -> tuple[Any, list[Any], list[tuple[str, nn.Module, str]], dict[str, nn.Module]]:
    """Everything ``materialize`` checks before it allocates: the plan of the meta model (built
    once), the buffer rules and the modules that must rebuild what the policy leaves to them."""
    rules: list[tuple[str, nn.Module, str]] = []
    for mname, module in model.named_modules():
        bufs = [n for n, b in own_buffers(module).items() if b is not None and b.is_meta]
        if bufs:
            rules.append((mname, module, _buffer_rule(mname, module, bufs, model, reset)))
    meta_params = {n for n, q in model.named_parameters(remove_duplicate=False) if q.is_meta}
    p, work = analyze(model, policy, example_inputs, seed, only, meta_ok=True)
    validate(work, seed, scratch_device=dev)
    # the write pass finds its tensors again by name (rebind): the work items must not keep
    # the meta tensors (or views of them, a Conv1D weight's transpose) alive, or DTensor
    # parameters cannot be given storage (``_apply`` swaps them in place, which torch refuses
    # while other references exist)
    work = [dataclasses.replace(w, tensor=_UNBOUND) for w in work]
    needs: dict[str, nn.Module] = {}
    for e in p.entries:
        left = e.action == "keep" or (e.action == "skip" and e.tied_to is None)
        if left and e.kind == "parameter" and e.name in meta_params:
            needs.setdefault(e.module, model.get_submodule(e.module) if e.module else model)
    for mname, module in needs.items():
        if not (callable(getattr(module, "reset_parameters", None)) or _init_weights_of(model, mname) is not None):
            names = [e.name for e in p.entries if e.module == mname and e.name in meta_params]
            raise ValueError(
                f"materialize: parameter(s) {', '.join(names)} are left to the module by the policy "
                f"but {type(module).__name__} has no reset_parameters() to rebuild them from meta"
            )
    return p, work, rules, needs


def _reset_once(module: nn.Module, prefix: str, writable: set[str], planned: set[str],
                run: Callable[[], object]) -> None:
    """``run()`` a module's reset allowed to write only ``writable`` tensors (the plan's own
    and any tensor not rebuilt from meta are meta twins: each tensor is written once, a
    loaded one never); if the reset needs the planned tensors' values (it raises on meta),
    run it again with those exposed."""
    try:
        with _only_writable(module, prefix, writable):
            run()
    except Exception:
        log.debug("materialize: reset of %s needs its parameters' values; writing them twice", prefix)
        with _only_writable(module, prefix, writable | planned):
            run()


def _sentinel(t: torch.Tensor) -> float | int | None:
    """A value no rule writes by accident (NaN, or the dtype's minimum), to find buffer
    elements a rule left unwritten; ``None`` for dtypes without one (bool)."""
    if t.is_floating_point() or t.is_complex():
        return float("nan")
    if t.dtype == torch.bool:
        return None
    return int(torch.iinfo(t.dtype).min)


def _unwritten(t: torch.Tensor, mark: float | int) -> bool:
    """``t`` (its local shard, for a DTensor: no collective) still holds ``mark`` somewhere."""
    to_local = getattr(t, "to_local", None)
    if callable(to_local):
        t = to_local()
    with torch.no_grad():
        return bool(torch.isnan(t).any()) if isinstance(mark, float) else bool((t == mark).any())


@contextlib.contextmanager
def _only_writable(module: nn.Module, prefix: str, writable: set[str]) -> Iterator[None]:
    """Inside the block, every parameter and buffer of ``module``'s subtree whose name is not
    in ``writable`` is a meta twin: code run there can write only the tensors being rebuilt
    (never a loaded weight, never one the plan writes next)."""
    swapped: list[tuple[dict[str, Any], str, torch.Tensor]] = []
    try:
        for sub_name, sub in module.named_modules(prefix=prefix.rstrip(".")):
            pre = f"{sub_name}." if sub_name else ""
            tables: tuple[dict[str, Any], ...] = (own_parameters(sub), own_buffers(sub))
            for table in tables:
                for n, t in list(table.items()):
                    if t is None or t.is_meta or pre + n in writable:
                        continue
                    twin = torch.empty(t.shape, dtype=t.dtype, device="meta")
                    if isinstance(t, nn.Parameter):
                        twin = nn.Parameter(twin, t.requires_grad)
                    swapped.append((table, n, t))
                    table[n] = twin
        yield
    finally:
        for table, n, t in swapped:
            table[n] = t


def _rebuild(model: nn.Module, rules: list[tuple[str, nn.Module, str]], needs: dict[str, nn.Module],
             dev: torch.device, seed: int, reset: ResetFn | None, planned: set[str],
             allocation: _Allocation | None = None) -> dict[str, tuple[torch.Tensor, float | int]]:
    """Buffers by their rules, and parameters the policy leaves to their modules (keyed).

    Every module reset runs allowed to write only the tensors being rebuilt
    (:func:`_only_writable`): those the plan writes next and those not rebuilt from meta (a
    weight the user loaded) are meta twins, so each tensor is written once and a loaded one
    never. The tensors being rebuilt are first filled with a sentinel (NaN, or the integer
    minimum): a ``reset_parameters`` that leaves a buffer unwritten is followed by the model's
    ``_init_weights(module)`` (Hugging Face writes a subclass's extra buffers there, e.g.
    Gemma 3's ``embed_scale``); for a parameter left to the model's own init,
    ``_init_weights`` also runs on the module's ancestors, innermost first, as
    ``PreTrainedModel.initialize_weights`` does (a Mamba mixer sets its child's
    ``dt_proj.bias``), then ``reset_parameters`` writes what it still left. Returns the
    sentinels, which :func:`_check_written` checks after the plan's writes: a tensor nothing
    wrote raises (the caller puts the model back on meta) instead of holding uninitialized
    memory.
    """
    done = {id(m) for _, m, r in rules if r in ("reset_parameters", "_init_weights")}
    names = {id(m): n for n, m in model.named_modules()}
    init_weights = getattr(model, "_init_weights", None)  # an HF model: sub-models use their own
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    meta_params = allocation.meta_params if allocation is not None else set(tensors)
    meta_buffers = allocation.meta_buffers if allocation is not None else set()
    # what the rebuild may write: tensors rebuilt from meta that the plan does not write next
    writable = (set(meta_params) - planned) | set(meta_buffers)
    marks: dict[str, float | int] = {}
    with torch.no_grad():
        for n in sorted(writable):
            mark = _sentinel(tensors[n]) if n in tensors else None
            if mark is not None:
                tensors[n].fill_(mark)
                marks[n] = mark

    def unwritten(prefix: str) -> list[str]:
        return [n for n in marks if n.startswith(prefix) and "." not in n[len(prefix):]
                and _unwritten(tensors[n], marks[n])]  # fmt: skip

    with keyed_init(model, seed=seed):
        for mname, module, rule in rules:
            pre = f"{mname}." if mname else ""
            if rule in ("reset_parameters", "_init_weights"):
                _reset_once(module, pre, writable, planned,
                            partial(_apply_rule, rule, mname, module, model, dev, reset))  # fmt: skip
                own = _init_weights_of(model, mname)
                if rule == "reset_parameters" and own is not None and unwritten(pre):
                    _reset_once(module, pre, writable, planned, partial(own, module))
            else:
                _apply_rule(rule, mname, module, model, dev, reset)
        ran: set[int] = set()
        for module in needs.values():
            pre = f"{names[id(module)]}." if names[id(module)] else ""
            if id(module) not in done:
                # the model's own init (Hugging Face's _init_weights) first: it is what built the
                # eager model's values (GPT-2's position table N(0, 0.02²), not Embedding's N(0, 1))
                own = _init_weights_of(model, names[id(module)])
                if own is not None:
                    _reset_once(module, pre, writable, planned, partial(own, module))
                else:
                    _reset_once(module, pre, writable, planned, getattr(module, "reset_parameters"))  # noqa: B009
            if not callable(init_weights):
                continue
            parts = names[id(module)].split(".") if names[id(module)] else []
            for k in range(len(parts) - 1, -1, -1):  # its ancestors, innermost first
                aname = ".".join(parts[:k])
                ancestor = model.get_submodule(aname) if aname else model
                if id(ancestor) in ran:
                    continue
                ran.add(id(ancestor))
                try:
                    with _only_writable(ancestor, f"{aname}." if aname else "", writable):
                        own = _init_weights_of(model, aname)
                        if own is not None:
                            own(ancestor)
                except Exception as err:  # it needs values we hid: what it would write stays
                    log.debug("materialize: _init_weights(%s) skipped on meta twins: %s",
                              aname or "<root>", err)  # fmt: skip
        for module in needs.values():  # what the model's own init did not write: the module's
            pre = f"{names[id(module)]}." if names[id(module)] else ""
            reset_parameters = getattr(module, "reset_parameters", None)
            left = set(unwritten(pre))
            if left and callable(init_weights) and callable(reset_parameters):
                _reset_once(module, pre, left, planned, reset_parameters)  # those tensors only
    return {n: (tensors[n], mark) for n, mark in marks.items()}


def _check_written(marks: dict[str, tuple[torch.Tensor, float | int]]) -> None:
    """After the plan's writes: a tensor rebuilt from meta that still holds its sentinel was
    written by nothing (it would hold uninitialized memory)."""
    left = sorted(n for n, (t, mark) in marks.items() if _unwritten(t, mark))
    if left:
        raise ValueError(
            f"materialize: nothing wrote {', '.join(left)} (the module's reset_parameters() and "
            "the model's _init_weights() leave them unset, so they would hold uninitialized "
            "memory). Pass reset=fn (fn(module_name, module) -> True once it has filled a "
            "module's buffers), a policy that initializes those parameters, or build that "
            "module outside the meta device"
        )
