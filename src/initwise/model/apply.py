"""Whole-model initialization: :func:`plan` (a dry run) and :func:`init` (apply it).

For every parameter (and BatchNorm running statistics) the plan records the rule of the
:class:`~initwise.policy.Policy` that matched and why, the scheme with its concrete
parameters, the fans, the gain and the activation it came from, and the resulting std/bound,
or why the tensor is skipped (tied to another name, not in ``only``, on the meta device) or
left to the module (``keep``).

**Reproducibility.** :func:`init` draws every parameter from the keyed counter-based engine
(:mod:`initwise.random`) with ``key = initwise.random.key(seed, qualified_name)`` (stacked
gate / q-k-v blocks use ``key.child("block<i>")``). A parameter's values therefore depend only
on ``(seed, its qualified name, the scheme and parameters its rule resolved to)``: they are
bit-identical run after run, whatever the global torch seed or the order in which modules
were built, and adding or removing another layer does not change them (unless it changes this
layer's own resolved scheme, e.g. its input activation or the ``n_layer`` of ``gpt2``).

**Atomicity.** :func:`init` fails before writing anything whenever it can: the whole plan is
built and validated first (scheme parameters, fans, shapes and dtypes; every built-in scheme is
run on a meta twin of its tensor, which performs all of its entry checks without allocating),
and user callables are *dry-run* on a scratch tensor of one parameter's size with the same key
(so a callable that raises, raises before the first write). Only then are values written,
directly into the parameters. Should the write pass still stop half-way (out of memory, Ctrl-C,
a user callable that behaves differently on a second call), every tensor already written is
put back (Ctrl-C held back meanwhile) and the model is exactly as it was: ``KeyboardInterrupt``
and other non-``Exception`` s propagate as themselves, errors as :class:`InitError`. The price
is memory: the write pass keeps a copy of each tensor's old values from the moment it writes
it until it ends (peak: the model plus the tensors initialized; a plan that initializes every
parameter of a 4 GB model peaks at about 8 GB). :func:`~initwise.materialize` needs no copies
(its tensors hold nothing yet: a failure puts the model back on the meta device), so it stays
at the model's size. Planning (also :func:`plan` with ``example_inputs``, which runs the
model's forward) leaves modes, buffers and torch's global CPU/CUDA random state as they were,
and never runs FSDP2's forward hooks.

**Ties.** A tensor registered under several names (e.g. ``wte.weight`` and ``lm_head.weight``)
is initialized once, under its first name in ``named_parameters(remove_duplicate=False)``
order; the other names are skipped with ``tied_to`` set.

>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> p = init(net, "auto", seed=0)
>>> e = p["2.weight"]
>>> e.activation, round(e.gain, 4), round(e.std, 4)
('relu', 1.4142, 0.3536)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._errors import InitError, InitwiseWarning
from .._names import canonical_name
from .._session import deferred_interrupts, preserved_rng
from .._sharding import ELEMENTWISE_SCHEMES, fill_sharded, local_box
from .._torch import is_dtensor, local_tensor, own_parameters, power_method, reshard_fsdp, version
from ..registry import Scheme
from .entries import Plan, PlanEntry
from .keyed import keyed_init
from .policy import Policy, Rule
from .resolve import Only, Work, build, tensor_key
from .scalars import add_scalars, remove_fixup_scalars

__all__ = ["analyze", "init", "plan", "validate", "write_all", "write_dtensor", "write_model_init"]

log = logging.getLogger("initwise")


def _blocks(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    if n == 1:
        return [t]
    rows = t.shape[0] // n
    return [t.narrow(0, i * rows, rows) for i in range(n)]


def _is_builtin(scheme: Any) -> bool:
    return isinstance(scheme, Scheme) and getattr(scheme.fn, "__module__", "").startswith("initwise.")


def _call(w: Work, target: torch.Tensor, block: int | None, seed: int) -> None:
    key = tensor_key(seed, canonical_name(w.entry.name), block)
    if w.squeeze:  # a slice of a batch axis (one expert): one matrix
        target = target[0]
    if not hasattr(w.scheme, "describe"):  # user callable
        w.scheme(target, fans=w.fans, generator=key, **w.call_params)
    else:
        w.scheme(target, fans=w.fans, generator=key)


def validate(work: Sequence[Work], seed: int, *, scratch_device: torch.device | None = None) -> None:
    """Check every work item before anything is written (see the module docs, atomicity)."""
    for w in work:
        if w.setter is not None:  # the parametrization must accept an assignment
            module, attr = w.setter
            plist: Any = copy.deepcopy(getattr(module, "parametrizations")[attr])  # noqa: B009
            try:
                with torch.no_grad():
                    # a value where the parametrization lives (meta for materialize)
                    plist.right_inverse(torch.empty_like(w.tensor.detach()).normal_())
            except Exception as err:
                raise ValueError(
                    f"{w.entry.name}: its parametrization ({', '.join(type(m).__name__ for m in plist)}) "
                    f"cannot be assigned a new value ({type(err).__name__}: {err}); initialize the "
                    "layer before parametrizing it, or exclude it with only="
                ) from err
        t = w.tensor
        if not t.is_floating_point():
            raise TypeError(f"{w.entry.name}: cannot initialize a {t.dtype} tensor "
                            f"(rule {w.entry.rule_text})")
        if w.special == "forget":
            continue
        if w.special == "model_init":
            if w.setter is not None:
                raise ValueError(f"{w.entry.name}: action 'model_init' cannot write a parametrized "
                                 f"tensor (rule {w.entry.rule_text}); exclude it with only=")
            continue
        n = w.entry.blocks
        shape = (t.shape[0] // n, *t.shape[1:]) if t.dim() else ()
        if _is_builtin(w.scheme):
            twin = torch.empty(shape, dtype=t.dtype, device="meta")
        else:  # dry-run untrusted code on a scratch tensor with the same keys
            twin = torch.empty(shape, dtype=t.dtype, device=scratch_device or t.device)
        try:
            for i in range(n):
                _call(w, twin, i if n > 1 else None, seed)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{w.entry.name} ({w.entry.rule_text}): {err}") from err


def _write(w: Work, seed: int) -> None:
    if w.setter is not None:  # draw the computed tensor, assign it through right_inverse
        module, attr = w.setter
        scratch = torch.empty_like(w.tensor)
        _write(dataclasses.replace(w, tensor=scratch, setter=None), seed)
        with torch.no_grad():
            setattr(module, attr, scratch)
            plist: Any = getattr(module, "parametrizations")[attr]  # noqa: B009
            for pm in plist:
                # spectral norm: its power-iteration vectors belong to the old weight
                power_method(pm, scratch, 15)
        return
    t = w.tensor
    with torch.no_grad():
        if w.special == "forget":
            t.zero_()
            _blocks(t, 4)[1].fill_(w.value)
            return
        n = w.entry.blocks
        for i, view in enumerate(_blocks(t, n)):
            if _is_builtin(w.scheme):
                _call(w, view, i if n > 1 else None, seed)
            else:
                scratch = torch.empty_like(view)
                _call(w, scratch, i if n > 1 else None, seed)
                view.copy_(scratch)
            if w.post_scale != 1.0:
                view.mul_(w.post_scale)
        if w.padding_idx is not None:
            t[w.padding_idx].zero_()


# --------------------------------------------------------------------------------------------
# Sharded parameters
# --------------------------------------------------------------------------------------------


def _is_elementwise(work: Any) -> bool:
    s = work.scheme
    if not isinstance(s, Scheme) or not getattr(s.fn, "__module__", "").startswith("initwise."):
        return False
    if work.special is not None or work.entry.blocks != 1:
        return False
    if s.uses_fans and work.fans is None:  # the scheme would read fans off the local shape
        return False
    return s.name in ELEMENTWISE_SCHEMES


def write_dtensor(work: Any, seed: int, write: Callable[[Any, int], None]) -> bool:
    """Write one :func:`initwise.init` work item into a DTensor parameter, shard-locally.

    ``work`` is ``initwise.plan``'s per-tensor work item (a dataclass with ``tensor``,
    ``scheme``, ``fans``, ``special``, ``padding_idx`` and ``entry``) and ``write(work, seed)``
    the function that writes it into a plain tensor. Elementwise schemes run on the local block
    (the embedding ``padding_idx`` row is zeroed where it falls in the block); everything else
    runs ``write`` on a whole-parameter scratch tensor (see :func:`fill_sharded_`). Returns
    whether the block was generated shard-locally (False: the whole-parameter fallback ran).
    """
    t = work.tensor
    if not _is_elementwise(work):
        return fill_sharded(t, lambda x: write(dataclasses.replace(work, tensor=x), seed), False)
    local_ok = fill_sharded(
        t, lambda x: write(dataclasses.replace(work, tensor=x, padding_idx=None), seed), True
    )
    pad = work.padding_idx
    if pad is not None:
        shape, offset = local_box(t)
        r = int(pad) - offset[0]
        if 0 <= r < shape[0]:
            with torch.no_grad():
                local_tensor(t)[r].zero_()
    return local_ok


def _count_of(model: nn.Module, name: str) -> torch.Tensor | None:
    """The ``num_batches_tracked`` to restart with a norm's running statistics ``name``.

    With ``momentum=None`` the next update weighs the statistics by ``1 / (count + 1)``: a
    stale count would keep the fresh statistics almost frozen (``reset_running_stats`` zeroes
    both too).
    """
    modname, _, leaf = name.rpartition(".")
    if leaf not in ("running_mean", "running_var"):
        return None
    count = getattr(model.get_submodule(modname) if modname else model, "num_batches_tracked", None)
    if isinstance(count, torch.Tensor) and not count.is_meta:
        return count
    return None


class _Undo:
    """Old values of what the write pass has changed so far, put back if it stops half-way."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def save(self, tensors: Iterable[torch.Tensor]) -> None:
        if not self.enabled:
            return
        for t in tensors:
            loc = local_tensor(t)
            if loc.numel() and not loc.is_meta:
                self.saved.append((loc, loc.detach().clone()))

    def restore(self) -> None:
        with deferred_interrupts(), torch.no_grad():
            for loc, old in reversed(self.saved):
                loc.copy_(old)
        self.saved.clear()


def _changed_by(w: Work) -> list[torch.Tensor]:
    """The tensors writing ``w`` changes (a parametrization's originals and buffers too)."""
    if w.setter is None:
        return [w.tensor]
    module, attr = w.setter
    plist: nn.Module = getattr(module, "parametrizations")[attr]  # noqa: B009
    return [*plist.parameters(), *plist.buffers()]


def analyze(model: nn.Module, policy: str | Policy | Iterable[Rule], example_inputs: Any, seed: int,
            only: Only, *, meta_ok: bool = False) -> tuple[Plan, list[Work]]:
    """:func:`initwise.model.resolve.build` as a dry run: the structure is read from a shadow of
    the model (:mod:`initwise.model.dataflow`), so the model's modes, buffers and hooks are not
    touched (FSDP2's lazy state included); torch's random state is left as it was."""
    with preserved_rng():
        return build(model, policy, example_inputs, seed, only, meta_ok=meta_ok)


def plan(model: nn.Module, policy: str | Policy | Iterable[Rule] = "auto", *, example_inputs: Any = None,
         seed: int = 0, only: Only = None) -> Plan:
    """Return what :func:`init` would do to ``model``, changing nothing (works on meta models).

    Args:
        model: the model.
        policy: a preset name (``initwise.policy.PRESETS``), a :class:`Policy` or a list of rules.
        example_inputs: inputs for a forward pass with hooks when ``torch.fx`` cannot trace the
            model (a tensor, a tuple of positional args or a dict of keyword args).
        seed: the seed of the keyed engine.
        only: parameter names, module-name prefixes (e.g. ``missing_keys``) or a predicate on
            the qualified name; everything else is skipped (``"not in only"``).

    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> print(plan(net).table().splitlines()[4].split()[:4])
    ['0.bias', '4', 'bias', 'zeros']
    """
    return analyze(model, policy, example_inputs, seed, only)[0]


def init(model: nn.Module, policy: str | Policy | Iterable[Rule] = "auto", *, example_inputs: Any = None,
         seed: int = 0, only: Only = None) -> Plan:
    """Initialize ``model`` in place by ``policy`` and return the applied :class:`Plan`.

    See the module documentation for reproducibility (values depend only on seed, name and
    rule), atomicity (validate everything, then write) and ties. Arguments as in :func:`plan`.

    >>> lin = torch.nn.Linear(3, 2)
    >>> _ = init(lin, "dcgan", seed=1)
    >>> lin.bias.abs().sum().item()
    0.0
    """
    reshard_fsdp(model)  # write the sharded parameters, not FSDP2's all-gathered copies
    p, work = analyze(model, policy, example_inputs, seed, only)
    if only is None:
        _warn_if_loaded(work)
    with preserved_rng():  # user callables may draw from torch's global generator
        validate(work, seed)
        if not p.added:
            out = write_all(model, p, work, seed)
            _mark_written(w.tensor for w in work)
            return out
        try:  # Fixup's scalars: added after validation, taken off again if writing fails
            add_scalars(model, p.added)
        except Exception as err:
            raise InitError(f"init could not add Fixup's scalars ({type(err).__name__}: "
                            f"{err}); the model is unchanged") from err
        try:
            out = write_all(model, p, work, seed)
        except BaseException:
            remove_fixup_scalars(model, [a.module for a in p.added])
            raise
        _mark_written(w.tensor for w in work)
        return out


# id -> weak reference of each tensor an init wrote (the transformers mark stays on it; it holds
# no checkpoint values any more). By identity: a WeakSet compares tensors with ``==``.
_WRITTEN: dict[int, weakref.ref[torch.Tensor]] = {}


def _mark_written(tensors: Iterable[torch.Tensor]) -> None:
    for t in tensors:
        key = id(t)
        _WRITTEN[key] = weakref.ref(t, functools.partial(_forget, key))


def _forget(key: int, _ref: Any) -> None:
    _WRITTEN.pop(key, None)


def _written(t: torch.Tensor) -> bool:
    ref = _WRITTEN.get(id(t))
    return ref is not None and ref() is t


def _warn_if_loaded(work: Sequence[Work]) -> None:
    """Warn when ``init`` without ``only=`` is about to overwrite tensors that transformers'
    ``from_pretrained`` loaded (it marks them ``_is_hf_initialized``; a model built from a
    config has no such mark): the call asks for it, but re-initializing a checkpoint is
    usually a slip for initializing what it lacked."""
    loaded = [w.entry.name for w in work if getattr(w.tensor, "_is_hf_initialized", None) is True
              and not _written(w.tensor)]  # fmt: skip
    if loaded:
        warnings.warn(
            f"init: {len(loaded)} tensor(s) ({', '.join(loaded[:3])}{', ...' if len(loaded) > 3 else ''}) "
            "were loaded or initialized by transformers' from_pretrained and are overwritten as "
            "asked; to initialize only what the checkpoint lacked, pass only=missing_keys "
            "(from_pretrained(..., output_loading_info=True)['missing_keys'])",
            InitwiseWarning, stacklevel=3)


def write_all(model: nn.Module, p: Plan, work: Sequence[Work], seed: int, *, backup: bool = True) -> Plan:
    """The write pass: every validated work item into its tensor (DTensors shard-locally).

    All or nothing: if it stops half-way, the tensors already written get their old values back
    (``backup=False``: the caller puts the model back itself, as ``materialize`` does) and the
    error propagates, as :class:`InitError` for an ``Exception``, as itself otherwise.
    """
    undo = _Undo(backup)
    sharded, fallback, done = 0, [], 0
    own = [w for w in work if w.special == "model_init"]
    if own:  # first: the tensors other rules name are written after it
        work = [w for w in work if w.special != "model_init"]
        counts = [c for c in (_count_of(model, w.entry.name) for w in own) if c is not None]
        undo.save([t for w in own for t in _changed_by(w)] + counts)
        try:
            p.notes += write_model_init(model, own, seed, keep=[w.entry.name for w in work])
        except BaseException as err:  # the model's own code cannot be dry-run
            undo.restore()
            if not isinstance(err, Exception):
                raise
            raise InitError(f"init failed in the model's own init code (action model_init): "
                            f"{type(err).__name__}: {err}; the model is unchanged") from err
        with torch.no_grad():
            for c in counts:
                c.zero_()
        done += len(own)
    for w in work:
        try:
            count = _count_of(model, w.entry.name)
            undo.save([*_changed_by(w), *([] if count is None else [count])])
            if is_dtensor(w.tensor):
                sharded += 1
                if not write_dtensor(w, seed, _write):
                    fallback.append(w.entry.name)
            else:
                _write(w, seed)
            if count is not None:
                with torch.no_grad():
                    count.zero_()
        except BaseException as err:
            undo.restore()
            if not isinstance(err, Exception):
                raise
            before = (f"the {done} tensor(s) written before it were put back: the model is unchanged"
                      if backup else f"{done} tensor(s) were written before it")
            raise InitError(
                f"init failed while writing {w.entry.name} ({type(err).__name__}: {err}); {before}"
            ) from err
        done += 1
    if sharded:
        p.notes.append(
            f"{sharded} DTensor parameter(s) written shard-locally; whole-parameter (memory of "
            f"one parameter) fallback for: {', '.join(fallback) or 'none'}"
        )
    p.applied = True
    log.debug("initwise.init: wrote %d tensors with policy %s", done, p.policy)
    return p


# --------------------------------------------------------------------------------------------
# Action "model_init": the model's own init code, keyed
# --------------------------------------------------------------------------------------------


def _init_fn(module: nn.Module, outer: Callable[[nn.Module], None] | None) -> Callable[[nn.Module], None] | None:
    """The init function for ``module`` and its children: a Hugging Face ``PreTrainedModel``
    (a module with ``config`` and ``_init_weights``) brings its own, as in ``smart_apply``."""
    fn: Any = getattr(module, "_init_weights", None)
    if callable(fn) and hasattr(module, "config"):
        return fn
    return outer


def _own_init_calls(model: nn.Module, owners: set[str]) -> list[tuple[str, Callable[[], None]]]:
    """``(module name, call)`` for every module in ``owners``, children before parents."""
    calls: list[tuple[str, Callable[[], None]]] = []

    def walk(m: nn.Module, name: str, outer: Callable[[nn.Module], None] | None) -> None:
        fn = _init_fn(m, outer)
        for child_name, child in m.named_children():
            walk(child, f"{name}.{child_name}" if name else child_name, fn)
        if name not in owners:
            return
        reset: Any = getattr(m, "reset_parameters", None)
        if fn is not None:
            calls.append((name, functools.partial(fn, m)))
        elif callable(reset):
            calls.append((name, reset))

    walk(model, "", None)
    return calls


def _untie_aliases(model: nn.Module) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """Give every second name of a tied parameter (a tied LM head) a scratch copy for the
    duration of the model's init code, and return what to put back.

    Hugging Face runs ``_init_weights`` before it ties, so what the code writes through the
    head is dropped and the table keeps what the embedding's code wrote (ModernBERT writes its
    tied decoder from the root with 0.02/sqrt(2 n_layer), after the embedding's 0.02). Run on
    the tied model, the last write would win; with the head on a copy, the tensor gets what it
    gets from Hugging Face: the writes through its first name, ``init``'s canonical one."""
    first: set[int] = set()
    out: list[tuple[nn.Module, str, nn.Parameter]] = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in first:
            first.add(id(p))
            continue
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        if parametrize.is_parametrized(mod, leaf) or own_parameters(mod).get(leaf) is not p:
            continue
        out.append((mod, leaf, p))
        setattr(mod, leaf, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
    return out


def write_model_init(model: nn.Module, work: Sequence[Work], seed: int, keep: Sequence[str] = ()) -> list[str]:
    """Write the tensors of ``work`` (action ``model_init``) with the model's own init code, keyed.

    For every module holding a selected tensor, and its ancestors (a Hugging Face
    ``_init_weights`` may write a child's weight from the parent, as GPT-2 does for ``c_proj``),
    children first, run the innermost ``PreTrainedModel``'s ``_init_weights(module)`` (outside
    Hugging Face models: ``module.reset_parameters()``) inside :func:`keyed_init` (and
    transformers' ``guard_torch_init_functions`` when it is loaded, as ``initialize_weights``
    does). Values depend only on (seed, canonical name, that code). Tensors the code writes
    outside the selection are restored, except those named in ``keep`` (other rules write them
    next). Returns notes for the plan.

    >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)  # different global draws
    >>> _ = init(a, "hf", seed=0)
    >>> _ = init(b, "hf", seed=0)
    >>> torch.equal(a.weight, b.weight), bool(a.weight.abs().max() <= 0.5)
    (True, True)
    """
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    names = {n for w in work for n in (w.entry.name, *w.entry.aliases)}
    chosen = {id(tensors[n]) for n in names}
    for n in names:  # a norm's step count goes with its statistics (as reset_running_stats)
        mod, _, leaf = n.rpartition(".")
        count = tensors.get(f"{mod}.num_batches_tracked" if mod else "num_batches_tracked")
        if leaf in ("running_mean", "running_var") and count is not None:
            chosen.add(id(count))
    owners = {""}
    for n in names:
        parts = n.split(".")[:-1]
        owners.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    rewritten = {id(tensors[n]) for n in keep if n in tensors}
    others = {id(t): t for t in tensors.values() if id(t) not in chosen and id(t) not in rewritten}
    saved = {i: t.detach().clone() for i, t in others.items() if not t.is_meta}
    flags = {id(t): (t, getattr(t, "_is_hf_initialized", None)) for t in tensors.values()}
    before = {n: version(tensors[n]) for n in names}
    hf = sys.modules.get("transformers.initialization")
    guard = getattr(hf, "guard_torch_init_functions", None)
    untied = _untie_aliases(model)
    try:
        for t, _ in flags.values():  # transformers' init functions skip flagged tensors
            t._is_hf_initialized = id(t) not in chosen  # type: ignore[attr-defined]
        with torch.no_grad(), keyed_init(model, seed) as stats, \
                (guard() if callable(guard) else contextlib.nullcontext()):
            for _, call in _own_init_calls(model, owners):
                call()
    finally:
        for owner, leaf, tied in untied:
            setattr(owner, leaf, tied)
        for t, old in flags.values():
            if old is None:
                with contextlib.suppress(AttributeError):
                    del t._is_hf_initialized  # type: ignore[attr-defined]
            else:
                t._is_hf_initialized = old  # type: ignore[attr-defined]
        restored = []
        with torch.no_grad():
            for i, copy_of in saved.items():
                if not torch.equal(others[i], copy_of):
                    others[i].copy_(copy_of)
                    restored.append(i)
    notes = []
    params = dict(model.named_parameters())  # the names keyed_init keys by
    keyed = {w.entry.name for w in work if w.entry.name in params and canonical_name(w.entry.name) in stats.draws}
    bumped = {w.entry.name for w in work if version(tensors[w.entry.name]) != before[w.entry.name]}
    untouched = sorted(w.entry.name for w in work if w.entry.name in params
                       and w.entry.name not in keyed | bumped)
    if untouched:
        notes.append("model_init: the model's init code wrote none of " + ", ".join(untouched)
                     + " through torch.nn.init, Tensor.normal_/uniform_ or an in-place op (values "
                     "from construction kept, not keyed)")
    unkeyed = sorted((bumped - keyed) & set(params))
    if unkeyed:
        notes.append("model_init: written by in-place ops outside torch.nn.init (a constant is "
                     "exact; random values there are not keyed): " + ", ".join(unkeyed))
    if restored:
        notes.append(f"model_init: restored {len(restored)} tensor(s) outside the selection that "
                     "the model's init code also wrote")
    return notes


def field_names() -> list[str]:  # used by tests to check JSON completeness
    return [f.name for f in fields(PlanEntry)]
