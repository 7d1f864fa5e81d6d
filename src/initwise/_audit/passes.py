"""One forward and one backward pass with statistics hooks on every layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import _torch
from .._errors import AuditError
from .._modules import (
    is_activation,
    is_bias_name,
    is_embedding,
    layer_type,
    parametrization_modules,
    resets_scale,
    saturation_bounds,
)
from .._session import input_tensors, primary_output
from .output import output_check
from .report import AuditReport, AuditThresholds, LayerStats, WeightStats
from .stats import (
    Raw,
    _flat32,
    _grad_moments,
    _grad_stats,
    _mean_square,
    _norm,
    _orth_error,
    _out_moments,
    _out_stats,
    _param_grad_moments,
    _param_grad_stats,
    _read_raw,
    _shifted_moments,
    _weight_moments,
    _weight_shifted,
    _weight_stats,
)
from .verdict import _batch, _judge, _reference


def _constant_scale(fn: Any) -> tuple[Any, float] | None:
    """``(node, c)`` when ``fn`` multiplies (or divides) one tensor by a Python constant ``c``
    (not a parameter: the other input has no autograd node), else ``None``."""
    kind = fn.name()
    if kind not in ("MulBackward0", "DivBackward0"):
        return None
    nodes = [n for n, _ in fn.next_functions]
    other = getattr(fn, "_saved_other", None)
    if len(nodes) != 2 or nodes[0] is None or nodes[1] is not None \
            or not isinstance(other, torch.Tensor) or other.dim() != 0:  # fmt: skip
        return None
    c = float(other)
    c = 1.0 / c if kind == "DivBackward0" and c != 0 else c
    return (nodes[0], c) if math.isfinite(c) and c != 0.0 else None


def _scaled_outputs(root: Any, gfn_row: dict[Any, int]) -> dict[int, float]:
    """Rows whose output the graph under ``root`` uses only times a Python constant ``c``
    (Granite's ``embedding_multiplier``, Gemma's and Pegasus' sqrt(d) on the token
    embeddings): ``{row: c}``. A row whose output is also read unscaled is not one."""
    consumers: dict[Any, int] = {}
    scaled: list[tuple[Any, float]] = []
    seen = {root}
    todo = [root]
    while todo:
        fn = todo.pop()
        cs = _constant_scale(fn)
        if cs is not None and cs[0] in gfn_row:
            scaled.append(cs)
        for nxt, _ in fn.next_functions:
            if nxt is None:
                continue
            consumers[nxt] = consumers.get(nxt, 0) + 1
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return {gfn_row[src]: c for src, c in scaled if consumers.get(src) == 1 and c != 1.0}


def _softmax_output(y: torch.Tensor) -> bool:
    """``y`` is a softmax's output (attention probabilities), possibly through dropout or a
    mask: rows of probabilities, whose rms says nothing about the signal's scale."""
    fn = y.grad_fn
    for _ in range(4):
        if fn is None:
            return False
        kind = type(fn).__name__
        if "Softmax" in kind:
            return True
        if kind not in ("NativeDropoutBackward0", "MulBackward0", "MaskedFillBackward0",
                        "CloneBackward0", "ToCopyBackward0"):
            return False
        fn = next((f for f, _ in fn.next_functions if f is not None), None)
    return False


def _kind(m: nn.Module) -> str:
    if any(True for _ in m.parameters(recurse=False)):
        return "weighted"
    if type(m).__module__ == "torch.nn.modules.activation":
        return "activation"
    return "other"


def _storage(t: torch.Tensor) -> int:
    """Where ``t``'s storage starts (-1 for tensors without one: functorch wrappers, meta)."""
    try:
        return -1 if t.is_meta else int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return -1


def _index_from_input(idx: torch.Tensor, batch: int, input_storages: set[int]) -> bool:
    """Whether an embedding's integer indices depend on the model's input.

    Indices that are (a view of) an integer model input do. Otherwise, with a batch of more
    than one example, they do when they vary along the batch dimension; position ids
    (``arange``, a ``position_ids`` buffer, relative-position buckets) are the same for every
    example (batch dimension 1, absent, or an expanded copy) and do not. With one example and
    indices computed inside the model, they are taken as input-independent.
    """
    if _storage(idx) in input_storages:
        return True
    if batch > 1 and idx.dim() >= 1 and idx.shape[0] == batch:
        return bool((idx != idx[:1]).any())
    return False


_SHAPE_NODES = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "TransposeBackward0",
    "PermuteBackward0", "CloneBackward0", "ExpandBackward0", "SqueezeBackward0",
    "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0", "ToCopyBackward0",
    "TBackward0", "AliasBackward0",
    # a slice of a sum is the sum of the terms' slices (BEiT's pooler: tokens [:, 1:] averaged)
    "SliceBackward0", "SelectBackward0",
    # elementwise maps of one tensor: part of the term they shape
    "GeluBackward0", "SiluBackward0", "ReluBackward0", "TanhBackward0", "SigmoidBackward0",
    "NativeDropoutBackward0", "MulBackward1", "DivBackward1",
    # reductions of a sum are sums of the terms' reductions (a global mean before the head)
    "MeanBackward0", "MeanBackward1", "SumBackward1",
})
_ADD_NODES = frozenset({"AddBackward0", "AddBackward1"})
# A functional pooling between two rows (``x.mean(1)``, ``F.adaptive_avg_pool2d``, ``x.sum``,
# max pools)
_REDUCE_NODES = frozenset({
    "MeanBackward0", "MeanBackward1", "SumBackward0", "SumBackward1",
    "AvgPool1DBackward0", "AvgPool2DBackward0", "AvgPool3DBackward0",
    "AdaptiveAvgPool1DBackward0", "AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool3DBackward0",
    "MaxPool1DWithIndicesBackward0", "MaxPool2DWithIndicesBackward0",
    "MaxPool3DWithIndicesBackward0", "AdaptiveMaxPool1DBackward0", "AdaptiveMaxPool2DBackward0",
    "AdaptiveMaxPool3DBackward0", "AmaxBackward0", "MaxBackward0", "LogsumexpBackward0",
})


def _reduction_node(fn: Any, rows: dict[Any, int]) -> Any:
    """The autograd node of a pooling/reduction that a tensor was computed from by ops of one
    tensor (views, elementwise maps, dropout: nodes with one input that needs a gradient)
    since the last row output (``head(x.mean(dim=1))``, ``head(drop(x.mean(1)))``), or
    ``None``. What produced the reduced tensor does not matter (a row, a residual sum)."""
    for _ in range(8):
        if fn is None or fn in rows:
            return None
        if fn.name() in _REDUCE_NODES:
            return fn
        nxt = [n for n, _ in fn.next_functions if n is not None]
        if len(nxt) != 1:
            return None
        fn = nxt[0]
    return None


def _addend_nodes(fn: Any) -> list[Any]:
    """The autograd nodes of the terms of the sum that produced a tensor (``[]`` if it is not
    a sum of two or more tensors): for each term, the chain of nodes from the sum down
    through shape ops and elementwise maps of one tensor, nested sums opened."""
    def chain(f: Any) -> list[Any]:
        out = []
        for _ in range(16):
            if f is None:
                break
            out.append(f)
            if f.name() == "MulBackward0":  # a term times a gate parameter is still the term
                gated = _gated_product(f)
                if gated is None:
                    break
                f = gated[0]
                continue
            if f.name() not in _SHAPE_NODES:
                break
            nxt = [n for n, _ in f.next_functions if n is not None]
            if len(nxt) != 1:
                break
            f = nxt[0]
        return out

    top_chain = chain(fn)
    top = top_chain[-1] if top_chain else None
    if top is None or top.name() not in _ADD_NODES:
        return []
    if len([n for n, _ in top.next_functions if n is not None]) < 2:
        return []
    out: list[Any] = []
    stack = [top]
    seen = 0
    while stack and seen < 64:
        seen += 1
        f = stack.pop()
        for n, _ in f.next_functions:
            c = chain(n)
            if not c:
                continue
            out.extend(c)
            if c[-1].name() in _ADD_NODES:
                stack.append(c[-1])
    return out


# nodes between a parameter and its use as an elementwise gate (broadcast, index, cast)
_GATE_PATH = frozenset({
    "ExpandBackward0", "ViewBackward0", "UnsafeViewBackward0", "UnsqueezeBackward0",
    "SqueezeBackward0", "SqueezeBackward1", "SelectBackward0", "SliceBackward0",
    "IndexBackward0", "ToCopyBackward0", "ReshapeAliasBackward0", "PermuteBackward0",
    "TransposeBackward0", "AliasBackward0", "CloneBackward0",
})


def _gate_param(f: Any) -> torch.Tensor | None:
    """The parameter an autograd path leads to through broadcasts and casts only (None when
    it leads anywhere else)."""
    for _ in range(8):
        if f is None:
            return None
        if f.name().endswith("AccumulateGrad"):
            v = f.variable
            return v if isinstance(v, nn.Parameter) else None
        if f.name() not in _GATE_PATH:
            return None
        nxt = [n for n, _ in f.next_functions if n is not None]
        if len(nxt) != 1:
            return None
        f = nxt[0]
    return None


def _gated_product(f: Any) -> tuple[Any, torch.Tensor] | None:
    """``(node of t, p)`` when the autograd node ``f`` is ``p ⊙ t`` for a parameter ``p``
    reached through broadcasts and casts only (:func:`_gate_param`) and a tensor ``t`` that is
    not such a parameter; else ``None``."""
    if f.name() != "MulBackward0":
        return None
    ops = [n for n, _ in f.next_functions]
    if len(ops) != 2:
        return None
    params = [_gate_param(o) for o in ops]
    if (params[0] is None) == (params[1] is None):
        return None
    k = 0 if params[0] is not None else 1
    gate, operand = params[k], ops[1 - k]
    return None if operand is None or gate is None else (operand, gate)


def _reaches(start: Any, targets: set[Any], limit: int = 4096) -> bool:
    """Whether the autograd graph below ``start`` contains one of ``targets`` (bounded walk)."""
    seen: set[Any] = set()
    stack = [start]
    while stack and len(seen) < limit:
        f = stack.pop()
        if f in targets:
            return True
        if f in seen:
            continue
        seen.add(f)
        stack.extend(n for n, _ in f.next_functions if n is not None)
    return False


def _gated_terms(fn: Any) -> list[tuple[Any, torch.Tensor]]:
    """The branch terms of a residual sum multiplied by a parameter (a ReZero gate ``α``, a
    layer scale ``γ``): ``(node of the gated tensor, parameter)`` for each term ``p ⊙ t`` of
    the sum that produced a tensor, where ``t`` is computed from another term of the same sum
    (the skip): ``x + α·f(x)`` is a gated branch, ``s·x + f(x)`` is not (``x`` does not
    descend from ``f(x)``)."""
    top = fn
    for _ in range(16):  # down to the sum, through shape ops and elementwise maps
        if top is None or top.name() in _ADD_NODES or top.name() not in _SHAPE_NODES:
            break
        nxt = [n for n, _ in top.next_functions if n is not None]
        top = nxt[0] if len(nxt) == 1 else None
    if top is None or top.name() not in _ADD_NODES:
        return []
    ends: list[list[Any]] = []  # each direct term: its chain of nodes from the sum down
    for n, _ in top.next_functions:
        c: list[Any] = []
        f = n
        for _ in range(16):
            if f is None:
                break
            c.append(f)
            if f.name() not in _SHAPE_NODES:
                break
            nxt = [m for m, _ in f.next_functions if m is not None]
            if len(nxt) != 1:
                break
            f = nxt[0]
        if c:
            ends.append(c)
    if len(ends) < 2:
        return []
    out: list[tuple[Any, torch.Tensor]] = []
    for i, c in enumerate(ends):
        gated = _gated_product(c[-1])
        if gated is None:
            continue
        operand, gate = gated
        skip = {node for j, o in enumerate(ends) if j != i for node in o}
        if _reaches(operand, skip):
            out.append((operand, gate))
    return out


def _run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
         in_sq: tuple[float, int] | None, targets: Any, loss_fn: Callable[..., torch.Tensor] | None,
         th: AuditThresholds, plan_std: dict[str, tuple[float | None, str | None]],
         layers: str, handles: list[Any], seed: int, orig_rg: dict[torch.Tensor, bool]
         ) -> AuditReport:
    records: list[dict[str, Any]] = []
    out_stats: list[Raw] = []
    grad_stats: dict[int, Raw] = {}
    calls: dict[str, int] = {}

    norm_in: dict[int, tuple[Raw, int]] = {}  # row -> (raw norm, numel) of a norm's input
    last: list[Any] = [None]  # the previous row's output tensor (for feeds_norm)
    readers: dict[int, tuple[torch.Tensor, int]] = {}  # id(input) -> (input, first reader)
    batch = _batch(args, kwargs)
    # The model's inputs do not require grad (a model may set requires_grad on a view of
    # them, as Wav2Vec2 does): a row whose output requires no grad depends on no parameter,
    # and it depends on the input when it reads a model input or such a row's output.
    inputs = input_tensors(args, kwargs)
    from_input: set[int] = {id(t) for t in inputs}
    int_storages = {_storage(t) for t in inputs if not t.is_floating_point()
                    and not t.is_complex() and t.numel() > 0} - {-1}
    input_storages = {_storage(t) for t in inputs if t.numel() > 0} - {-1}
    row_of: dict[int, int] = {}  # id(row output) -> row
    row_of_base: dict[int, int] = {}  # id(the memory a row output is all of) -> row
    keep: list[torch.Tensor] = []  # row outputs, alive while their ids are keys
    gfn_row: dict[Any, int] = {}  # autograd node of a row output -> row
    passes_from: dict[int, int] = {}  # pass-through row -> the row it passes on
    in_src: dict[int, tuple[str, int]] = {}  # row -> where its input gradient is measured
    in_hooked: dict[int, int] = {}  # id(input tensor) -> the row whose hook measures it
    in_grad: dict[int, Raw] = {}  # row -> gradient stats at its input (hooks)
    # row -> gradient stats at the output and the input of a functional pooling it reads
    pool_grad: dict[int, tuple[Raw, Raw]] = {}
    pooled: set[Any] = set()  # reduction nodes hooked
    dup_of: dict[int, int] = {}  # row -> the earlier row with the very same output tensor

    def make_hook(name: str, m: nn.Module, leaf: bool, param_free: bool) -> Callable[..., None]:
        bounds = saturation_bounds(m)
        is_norm = m is not model and resets_scale(m)
        embedding = is_embedding(m)
        # what the module is does not change between calls: decided once, not per call
        type_name = layer_type(m)
        kind = _kind(m)
        if m is model and kind != "weighted":
            kind = "output"
        passes_on = param_free and not embedding and bounds is None and not is_norm \
            and not is_activation(m)

        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            y = primary_output(out)
            if y is None or y.numel() == 0:
                return
            call = calls.get(name, 0)
            calls[name] = call + 1
            x_in = primary_output(inp)
            ids = inp[0] if isinstance(inp, tuple) and inp and isinstance(inp[0], torch.Tensor) \
                else None
            if y.requires_grad:
                # an additive table looked up with input-independent indices (positions,
                # relative-position buckets) is a learned bias, not signal
                constant = (embedding and ids is not None and not ids.is_floating_point()
                            and not _index_from_input(ids, batch, int_storages))
            else:
                constant = not any(isinstance(t, torch.Tensor) and id(t) in from_input
                                   for t in (inp if isinstance(inp, tuple) else (inp,)))
                if not constant:
                    from_input.add(id(y))
            rec = {"name": name, "call": call, "type": type_name,
                   "kind": kind, "shape": list(y.shape), "numel": y.numel(),
                   "module": mod, "norm": False, "feeds_norm": False,
                   "constant": constant, "probability": _softmax_output(y),
                   "embedding": embedding}
            idx = len(records)
            # siblings reading one tensor (q, k, v) share a gradient; the model (or any
            # container) reading its own input is not a sibling of its first layer
            if x_in is not None and mod is not model and leaf:
                first = readers.setdefault(id(x_in), (x_in, idx))
                rec["shares_input_with"] = first[1] if first[0] is x_in and first[1] != idx \
                    else None
            if mod is model and y.grad_fn is not None:
                temp = _constant_scale(y.grad_fn)
                if temp is not None and gfn_row.get(temp[0]) is not None:
                    # the output is a row's times a constant (a logit temperature, Cohere's
                    # logit_scale): both are judged with that constant divided out
                    rec["temperature"] = temp[1]
                    records[gfn_row[temp[0]]]["out_temperature"] = temp[1]
            if mod is not model and any(isinstance(t, torch.Tensor) and t.numel() > 0
                                        and _storage(t) in input_storages
                                        for t in (inp if isinstance(inp, tuple) else (inp,))):
                rec["reads_input"] = True
                if x_in is not None and x_in.is_floating_point():
                    norm_in[idx] = (_norm(x_in), x_in.numel())
            records.append(rec)
            # a container (or the model) returning its last layer's output: the same tensor,
            # the same statistics and gradient, measured once
            same = row_of.get(id(y))
            if same is not None and records[same].get("bounds") == bounds:
                dup_of[idx] = same
                out_stats.append(out_stats[same])
            else:
                out_stats.append(_out_stats(y, bounds, th.saturation_margin))
            rec["bounds"] = bounds
            src = row_of.get(id(x_in)) if x_in is not None else None
            if src is None and x_in is not None:
                # a reshape or permute of a row's whole output (WavLM's gate projection reads
                # the heads view of the attention input): that row's output, rearranged
                whole = _torch.whole_base(x_in)
                src = row_of_base.get(id(whole)) if whole is not None else None
            rec["src"] = src
            # the gradient at the row's input (summed over every reader of that tensor): the
            # producing row's gradient, or a hook on the input
            if x_in is not None and x_in.requires_grad and mod is not model:
                if src is not None:
                    in_src[idx] = ("row", src)
                elif id(x_in) in in_hooked:
                    in_src[idx] = ("hook", in_hooked[id(x_in)])
                else:
                    in_hooked[id(x_in)] = idx
                    in_src[idx] = ("hook", idx)

                    def ihook(g: torch.Tensor) -> None:
                        in_grad[idx] = _grad_stats(g)
                    handles.append(x_in.register_hook(ihook))
                # residual sums: the rows whose outputs are added (directly, or through shape
                # ops and nested sums) to form this row's input are addends
                if x_in.grad_fn is not None:
                    for a in _addend_nodes(x_in.grad_fn):
                        r_add = gfn_row.get(a)
                        if r_add is not None:
                            records[r_add]["addend"] = True
                    # a branch multiplied by a parameter before the sum (ReZero's α, a layer
                    # scale γ): its gradient is scaled by that parameter, by design
                    for node, gate in _gated_terms(x_in.grad_fn):
                        r_g = gfn_row.get(node)
                        if r_g is not None:
                            records[r_g]["gate"] = gate
                    # a pass-through row (drop path) reading a row's output times a parameter
                    # (BEiT, ConvNeXt: drop_path(γ · f(x)) + x): the gate, if it is an addend
                    gated = _gated_product(x_in.grad_fn) if passes_on else None
                    if gated is not None and gfn_row.get(gated[0]) is not None:
                        rec["gated_input"] = (gfn_row[gated[0]], gated[1])
            # a functional pooling (x.mean(1), F.adaptive_avg_pool2d) between the row that
            # makes a tensor and this row: the gradient norm changes across it by design
            # (1/sqrt(N) for a mean over N), as across a pooling module's row; measured at
            # both sides of the reduction (a hook on its autograd node)
            red = (_reduction_node(x_in.grad_fn, gfn_row) if x_in is not None
                   and x_in.requires_grad and mod is not model and src is None else None)  # fmt: skip
            if red is not None and red not in gfn_row and red not in pooled:
                pooled.add(red)

                def nhook(grad_in: Any, grad_out: Any, _i: int = idx) -> None:
                    gi = next((g for g in grad_in if isinstance(g, torch.Tensor)), None)
                    go = grad_out[0] if grad_out and isinstance(grad_out[0], torch.Tensor) else None
                    if gi is not None and go is not None and gi.numel() > go.numel():
                        pool_grad[_i] = (_grad_stats(go), _grad_stats(gi))
                handles.append(red.register_hook(nhook))
            # parameter-free rows that shrink the tensor (global/avg pooling, mean): the
            # gradient norm legitimately drops by sqrt(numel_in / numel_out) across them
            pool = (not is_norm and mod is not model and x_in is not None and param_free
                    and x_in.numel() > y.numel() and x_in.requires_grad)
            if pool:
                rec["pool"] = True
            x = x_in if is_norm else None
            if x is not None and x.numel() > 0:
                rec["norm"] = True
                norm_in[idx] = (_norm(x), x.numel())
                prev = last[0]
                if prev is not None and prev[1] is x:
                    records[prev[0]]["feeds_norm"] = True
            last[0] = (idx, y)
            row_of[id(y)] = idx
            keep.append(y)
            whole_y = _torch.whole_base(y)
            if whole_y is not None:
                row_of_base[id(whole_y)] = idx
                keep.append(whole_y)
            if y.requires_grad:
                if y.grad_fn is not None:
                    gfn_row[y.grad_fn] = idx
                    # a pass-through row (dropout, identity) hands the addend role down
                    if src is not None and passes_on and x_in is not None \
                            and x_in.shape == y.shape:
                        passes_from[idx] = src

                if idx not in dup_of:
                    def ghook(g: torch.Tensor) -> None:
                        grad_stats[idx] = _grad_stats(g)
                    handles.append(y.register_hook(ghook))

        return hook

    internals = parametrization_modules(model)
    for name, m in model.named_modules():
        if m in internals:
            continue
        is_leaf = next(iter(m.children()), None) is None
        weighted = next(iter(m.parameters(recurse=False)), None) is not None
        if m is model or weighted or (layers == "leaves" and is_leaf):
            handles.append(m.register_forward_hook(make_hook(name, m, is_leaf, not weighted)))

    try:
        out = model(*args, **kwargs)
    except Exception as e:
        raise AuditError(
            f"audit: the model's forward pass failed on the given inputs "
            f"({type(e).__name__}: {e})"
        ) from e
    last[0] = None
    y = primary_output(out)
    if y is not None and y.grad_fn is not None:
        for row, c in _scaled_outputs(y.grad_fn, gfn_row).items():
            if records[row]["embedding"]:  # an embedding multiplier (a scaled branch is a gate)
                records[row]["out_scale"] = c
    readers.clear()
    row_of.clear()  # the forward's bookkeeping: free the row outputs and graph nodes it held
    keep.clear()
    gfn_row.clear()
    y = primary_output(out)
    if y is None:
        raise AuditError("audit: the model's output contains no floating-point tensor")
    # a dead network: examples that differ give the same output
    same_output = None
    if batch > 1 and y.dim() > 0 and y.shape[0] == batch and any(
            t.dim() > 0 and t.shape[0] == batch and bool((t != t[:1]).any()) for t in inputs):
        with torch.no_grad():  # the first and the last example: enough to tell, 2/B of y
            same_output = bool(torch.equal(y[:1], y[-1:]))
    # The loss: user's, or a seeded unit-variance random projection.
    if loss_fn is None:
        gen = torch.Generator().manual_seed(seed)
        proj = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(y.device, y.dtype)
        loss = (y * proj).sum()
        loss_kind = "default: sum(y * R), R ~ N(0, 1) seeded"
    else:
        try:
            loss = loss_fn(y) if targets is None else loss_fn(y, targets)
        except Exception as e:
            raise AuditError(
                f"audit: loss_fn failed on the model output of shape {tuple(y.shape)} "
                f"({type(e).__name__}: {e})"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise AuditError("audit: loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        loss_kind = getattr(loss_fn, "__name__", type(loss_fn).__name__)

    pnames: dict[torch.Tensor, str] = {}
    for pn, prm in model.named_parameters():
        pnames.setdefault(prm, pn)
    plist = [p for p in pnames if p.requires_grad]
    grads: tuple[torch.Tensor | None, ...] = tuple(None for _ in plist)
    # each parameter's gradient is measured as autograd hands it over (one hook per
    # parameter, called once with the whole gradient), while it is still in cache: read
    # after the backward, the gradients of a small model cost ~2x more (cold memory)
    pgrad: dict[torch.Tensor, Raw] = {}

    def make_phook(p: torch.Tensor) -> Callable[[torch.Tensor], None]:
        def phook(g: torch.Tensor) -> None:
            pgrad[p] = _param_grad_stats(g)
        return phook

    if loss.requires_grad and plist:
        for p in plist:
            handles.append(p.register_hook(make_phook(p)))
        try:
            grads = torch.autograd.grad(loss, plist, allow_unused=True)
        except Exception as e:
            raise AuditError(f"audit: the backward pass failed ({type(e).__name__}: {e})") from e
    gmap: dict[torch.Tensor, torch.Tensor | None] = dict(zip(plist, grads, strict=True))

    # Weight statistics: raw vectors per parameter (and its gradient, if any).
    plist_all = list(pnames)
    wraw = [_weight_stats(p) for p in plist_all]
    graw = {i: pgrad[p] if p in pgrad else _param_grad_stats(pg)
            for i, p in enumerate(plist_all) if (pg := gmap.get(p)) is not None}

    # The one host sync for all statistics.
    for i, j in dup_of.items():
        if j in grad_stats:
            grad_stats[i] = grad_stats[j]
    groups = (out_stats, list(grad_stats.values()), list(in_grad.values()),
              [v for v, _ in norm_in.values()], wraw, list(graw.values()),
              [v for pair in pool_grad.values() for v in pair])
    host = _read_raw([t for part in groups for t in part])
    at = 0
    got = []
    for part in groups:
        got.append(host[at:at + len(part)])
        at += len(part)
    fwd = [_out_moments(v, rec["numel"], rec["bounds"] is not None)
           for v, rec in zip(got[0], records, strict=True)]
    bwd = {k: _grad_moments(v) for k, v in zip(grad_stats, got[1], strict=True)}
    hooked_in = {k: _grad_moments(v)[0] for k, v in zip(in_grad, got[2], strict=True)}
    nin = {k: _mean_square(v[0], n)
           for (k, (_, n)), v in zip(norm_in.items(), got[3], strict=True)}
    pool_ss = {k: (_grad_moments(got[6][2 * n])[0], _grad_moments(got[6][2 * n + 1])[0])
               for n, k in enumerate(pool_grad)}
    nin_grad: dict[int, float] = {}
    for i, (how, j) in in_src.items():
        if how == "row" and j in bwd:
            nin_grad[i] = bwd[j][0]
        elif how == "hook" and j in hooked_in:
            nin_grad[i] = hooked_in[j]
    gmom = {i: _param_grad_moments(v, int(plist_all[i].numel()))
            for i, v in zip(graw, got[5], strict=True)}
    wmom = [_weight_moments(v, int(p.numel())) for p, v in zip(plist_all, got[4], strict=True)]
    # parameters whose one-pass variance is ill-conditioned (constant norm weights, biases):
    # the exact shifted-data statistics, in a second (small) read-back
    redo = [i for i, m in enumerate(wmom) if m is None]
    if redo:
        shifted = _read_raw([_weight_shifted(plist_all[i]) for i in redo])
        for i, v in zip(redo, shifted, strict=True):
            _, ss, spread = got[4][i]
            wmom[i] = (*_shifted_moments(v, int(plist_all[i].numel())), ss, spread)
    wst = [(*m, *gmom.get(i, (math.nan, math.nan))) for i, m in enumerate(wmom)
           if m is not None]

    weights: list[WeightStats] = []
    zero_params: set[str] = set()
    for (p, name), (mean, var, s2, spread, gss, gnnz) in zip(pnames.items(), wst, strict=True):
        n = int(p.numel())
        rms = math.sqrt(max(s2 / max(n, 1), 0.0))
        norm = rms * math.sqrt(n)
        ws = WeightStats(name=name, shape=list(p.shape), numel=n, mean=mean,
                         std=math.sqrt(max(var, 0.0)), rms=rms, norm=norm, zero=s2 == 0,
                         requires_grad=orig_rg.get(p, True))
        if ws.zero:
            zero_params.add(name)
        intended = plan_std.get(name)
        if intended is not None:
            ws.intended_std, ws.scheme = intended
            if ws.intended_std is not None and ws.intended_std > 0:
                ws.std_ratio = ws.std / ws.intended_std
                tol = th.plan_sigmas * 0.5 * math.sqrt(2.0 / max(n, 1))
                ws.matches_plan = abs(ws.std_ratio - 1.0) <= tol
            elif ws.intended_std == 0:
                ws.matches_plan = ws.std == 0
        declared = ws.scheme is not None and "orth" in ws.scheme.lower()
        candidate = p.dim() >= 2 and min(p.shape[0], n // max(p.shape[0], 1)) >= 2 and (
            math.isfinite(spread) and spread < th.orthogonality_tol)
        if (declared or candidate) and p.dim() >= 2 and not ws.zero:
            ws.orth_gain, err = _orth_error(p)
            if declared or err <= th.orthogonality_tol:
                ws.orthogonal = True
                ws.orth_error = err
        if not math.isnan(gss):
            ws.grad_norm = math.sqrt(max(gss, 0.0))
            ws.grad_rms = ws.grad_norm / math.sqrt(max(n, 1))
            # a relative update of an all-zero tensor (zero-init bias, zero-init-last) is
            # undefined: None (shown as '-'); its grad rms is still reported
            ws.sgd_update = ws.grad_norm / norm if norm > 0 else None
            ws.adam_update = math.sqrt(gnnz) / norm if norm > 0 else None
        weights.append(ws)
    del pnames

    # Rows.
    in_rms = None
    if in_sq is not None:  # the floating-point inputs' Σx² and count (read by audit)
        in_rms = math.sqrt(in_sq[0] / max(in_sq[1], 1))
    for rec in records:  # a gated term carried into the sum by a pass-through row
        src_gate = rec.get("gated_input")
        if src_gate is not None and rec.get("addend") and records[src_gate[0]].get("gate") is None:
            records[src_gate[0]]["gate"] = src_gate[1]
    rows: list[LayerStats] = []
    param_owner = {id(mp): f"{n}" for n, mp in model.named_parameters()}
    for i, (rec, st) in enumerate(zip(records, fwd, strict=True)):
        s1, s2, lo, hi, zeros, sat = st
        numel = rec["numel"]
        mean = s1 / numel
        m2 = s2 / numel
        var = max(m2 - mean * mean, 0.0)
        bounds = saturation_bounds(rec["module"])
        nonfinite = not (math.isfinite(lo) and math.isfinite(hi))
        mod = rec["module"]
        own_zero = bool(zero_params) and any(param_owner.get(id(mp)) in zero_params
                       for pn, mp in mod.named_parameters(recurse=False)
                       if not is_bias_name(pn))
        r = LayerStats(index=i, name=rec["name"], call=rec["call"], type=rec["type"],
                       kind=rec["kind"], shape=rec["shape"], numel=numel, mean=mean,
                       std=math.sqrt(var) if not nonfinite else math.nan,
                       second_moment=m2, rms=math.sqrt(max(m2, 0.0)) if not nonfinite
                       else math.inf, zero_fraction=zeros / numel,
                       saturated_fraction=(sat / numel) if bounds is not None else None,
                       max_abs=max(abs(lo), abs(hi)) if not nonfinite else math.inf,
                       nonfinite=nonfinite)
        r.zero_init = own_zero and zeros == numel
        r.norm, r.feeds_norm, r.constant = rec["norm"], rec["feeds_norm"], rec["constant"]
        r.probability = bool(rec.get("probability", False))
        r.pool = bool(rec.get("pool", False))
        r.addend = bool(rec.get("addend", False))
        r.reads_input = bool(rec.get("reads_input", False))
        r.temperature = rec.get("temperature")
        r.out_temperature = rec.get("out_temperature")
        r.out_scale = rec.get("out_scale")
        r.source = rec.get("src")
        gate = rec.get("gate")
        if gate is not None:
            r.gate = param_owner.get(id(gate), "")
            with torch.no_grad():
                r.gate_scale = float(_flat32(gate.detach()).pow(2).mean().sqrt())
        r.shares_input_with = rec.get("shares_input_with")
        if i in nin:
            r.in_rms = math.sqrt(nin[i]) if math.isfinite(nin[i]) else math.inf
        if i in nin_grad:
            r.grad_in_norm = math.sqrt(nin_grad[i]) if math.isfinite(nin_grad[i]) else math.inf
        if i in pool_ss:
            r.pool_grads = tuple(math.sqrt(v) if math.isfinite(v) else math.inf  # type: ignore[assignment]
                                 for v in pool_ss[i])
        if i in bwd:
            gss, gmax = bwd[i]
            r.grad_norm = math.sqrt(gss) if math.isfinite(gss) else math.inf
            r.grad_rms = r.grad_norm / math.sqrt(numel)
            r.grad_max_abs = gmax
        rows.append(r)

    # an addend passed on by a pass-through row (dropout, identity) is its source's output
    for i in sorted(passes_from, reverse=True):
        if rows[i].addend:
            rows[passes_from[i]].addend = True
    ref = _reference(rows, in_rms, th)
    out_row = next((r for r in reversed(rows) if r.name == "" and r.call == 0), None)
    out_gnorm = out_row.grad_norm if out_row is not None and out_row.grad_norm else None
    if out_gnorm is None:
        # The output's gradient, from the loss directly.
        out_gnorm = float("nan")

    head = next(((rec["name"], rec["module"]) for rec in reversed(records)
                 if rec["module"] is not model and rec["kind"] == "weighted"), None)
    report = AuditReport(
        model=layer_type(model), mode="", batch=batch, loss=float(loss.detach()),
        loss_kind=loss_kind, input_rms=in_rms, reference_rms=ref,
        output_grad_norm=out_gnorm, thresholds=th, rows=rows, weights=weights,
        forward_verdict="healthy", backward_verdict="healthy", verdict="healthy",
        output=output_check(model, out, y, targets, head, th),
        input_independent=bool(same_output))
    _judge(report)
    return report


