"""What the papers measure, as options of :func:`initwise.audit`.

* **Correlation propagation** (Poole et al. 2016; Schoenholz et al. 2017): the cosine
  similarity ``c = ⟨h(x₁), h(x₂)⟩ / (‖h(x₁)‖ ‖h(x₂)‖)`` of the representations of two inputs,
  layer by layer (uncentered, as the mean-field ``q₁₂ / √(q₁₁ q₂₂)``), averaged over pairs.
  For a plain fully connected network (only ``Linear`` and elementwise activation modules,
  alternating) the mean-field prediction of :mod:`initwise.theory` is computed from the
  measured ``σ_w² = fan_in · mean(W²)`` and ``σ_b² = mean(b²)`` of each layer and the input's
  ``q`` and ``c``: the length map ``q ↦ σ_w² E[φ(√q z)²] + σ_b²`` and the covariance map
  ``q₁₂ ↦ σ_w² E[φ(u₁) φ(u₂)] + σ_b²``, at each ``Linear`` row (pre-activations).
* **Output change after one optimizer step** (the Fixup principle, Zhang et al. 2019: a good
  init makes ``Δf = Θ(η)`` whatever the depth): ``‖f(θ − η ∇L) − f(θ)‖`` over ``‖f(θ)‖`` for
  one plain SGD step of learning rate ``η`` on the audit's loss. The parameters are restored
  bit-exactly afterwards (copied back), buffers by the audit's snapshot, and both forward
  passes run with the same seeded RNG inside the audit's forked RNG (dropout masks agree; the
  caller's RNG is untouched).
* **Residual-stream growth**: the rms of the residual stream after each residual sum, and its
  growth per sum and over depth. The sums are those the model's structure analysis finds
  (:func:`initwise.model.structure.analyze`: the modules writing into a residual sum, or
  their trailing norm), recognized at run time by a ``TorchFunctionMode``: a sum whose one
  term is a writer's output (carried through dropout, shape ops, a scalar or a gate) and
  whose other term (the stream before the sum) is not. ``depth_exponent`` is the least-squares slope of ``log rms`` against
  ``log k`` after the ``k``-th sum: ½ when each sum adds an independent term of the same
  size (a variance growing linearly in depth), 0 for a bounded stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import theory
from .._modules import is_activation, is_norm, layer_type
from .._session import input_tensors, primary_output

__all__ = ["CorrelationRow", "CorrelationTrace", "OneStepChange", "ResidualGrowth",
           "ResidualSum", "correlation_trace", "one_step_change", "residual_growth"]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass
class CorrelationRow:
    """One module call: the mean cosine of the two inputs' representations at its output, and
    the mean-field prediction (``Linear`` rows of a plain fully connected network only)."""

    index: int
    name: str
    type: str
    cosine: float
    theory: float | None = None
    q: float | None = None  # measured mean squared entry (Linear rows of a plain net)
    q_theory: float | None = None


@dataclass
class CorrelationTrace:
    """Correlation propagation between pairs of inputs (see the module docs).

    ``pairs``: how many pairs were averaged; ``pairing``: ``"batch"`` (examples ``2i`` and
    ``2i+1`` of the batch) or ``"c0=<value>"`` (each example with a partner of exactly that
    cosine and the same norm); ``input_cosine``: the inputs' mean cosine (floating inputs);
    ``plain``: the network is a plain fully connected one and ``theory`` is filled.
    """

    pairs: int
    pairing: str
    input_cosine: float | None
    plain: bool
    rows: list[CorrelationRow] = field(default_factory=list)
    note: str = ""

    def last(self) -> CorrelationRow | None:
        """The last row with a defined cosine (an all-zero output, e.g. a zero-initialized
        head, has none)."""
        return next((r for r in reversed(self.rows) if math.isfinite(r.cosine)), None)

    def final(self) -> float:
        """The cosine at :meth:`last` (nan when no row has one)."""
        r = self.last()
        return r.cosine if r is not None else math.nan


@dataclass
class OneStepChange:
    """The output change after one SGD step of learning rate ``lr`` (the Fixup principle).

    ``relative_change = ‖f(θ − lr·∇L) − f(θ)‖ / ‖f(θ)‖`` (``None`` when ``f(θ) = 0``, e.g. a
    zero-initialized head: then ``change_rms``, the rms per output entry, is the measure);
    ``change_per_lr = change_rms / lr``; ``loss_before`` / ``loss_after`` on the same batch.
    """

    lr: float
    loss_kind: str
    loss_before: float
    loss_after: float
    output_rms: float
    change_rms: float
    relative_change: float | None
    change_per_lr: float


@dataclass
class ResidualSum:
    """The residual stream after one residual sum: who wrote into it, its rms, the ratio to the
    stream before the sum (``ratio``) and to the stream before the first sum (``growth``)."""

    index: int
    writers: list[str]
    rms: float
    ratio: float
    growth: float


@dataclass
class ResidualGrowth:
    """Residual-stream rms across depth (see the module docs).

    ``initial_rms``: the stream entering the first sum; ``total_growth``: last rms over it;
    ``per_sum``: the geometric mean growth per sum; ``depth_exponent``: slope of ``log rms``
    against ``log k`` (k = 1, 2, ... sums); ``source``: the structure analysis used.
    """

    sums: list[ResidualSum]
    initial_rms: float
    total_growth: float
    per_sum: float
    depth_exponent: float
    source: str
    note: str = ""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _pair_cos(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ya = y.index_select(0, a).flatten(1).double()
    yb = y.index_select(0, b).flatten(1).double()
    num = (ya * yb).sum(1)
    den = ya.norm(dim=1) * yb.norm(dim=1)
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)),
                       torch.full_like(den, math.nan)).nanmean()


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if next(iter(m.children()), None) is None]


def _plain_fc(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The leaf modules of a plain fully connected network (``Linear`` and elementwise
    activations, alternating, starting with a ``Linear``), in registration order; else None."""
    leaves = [(n, m) for n, m in _leaves(model) if not isinstance(m, (nn.Identity, nn.Dropout))]
    if not leaves or type(leaves[0][1]) is not nn.Linear:
        return None
    prev_linear = False
    for _, m in leaves:
        if type(m) is nn.Linear:
            prev_linear = True
        elif is_activation(m) and prev_linear and not is_norm(m):
            prev_linear = False
        else:
            return None
    return leaves


def _theory_trace(layers: list[tuple[str, nn.Module]], q0: float, c0: float
                  ) -> dict[str, tuple[float, float]]:
    """Linear module name -> (predicted c, predicted q) of its output, by the mean-field maps."""
    out: dict[str, tuple[float, float]] = {}
    q, q12 = q0, c0 * q0  # of the current layer's input (the raw input first)
    act: nn.Module | None = None
    for name, m in layers:
        if type(m) is nn.Linear:
            w = m.weight.detach().double()
            sw2 = float(w.pow(2).mean()) * w.shape[1]
            sb2 = float(m.bias.detach().double().pow(2).mean()) if m.bias is not None else 0.0
            if act is None:  # a linear map of the raw input
                qn, q12n = sw2 * q + sb2, sw2 * q12 + sb2
            else:
                if not (math.isfinite(q) and q > 0):
                    return out
                c = max(-1.0, min(1.0, q12 / q))
                # E[φ(u)²] and E[φ(u₁)φ(u₂)] at variance q: the maps with σ_w² = 1, σ_b² = 0
                m2 = theory.length_map(q, act, 1.0, 0.0)
                m12 = theory.correlation_map(c, act, 1.0, 0.0, q=q) * q
                qn, q12n = sw2 * m2 + sb2, sw2 * m12 + sb2
            q, q12 = qn, q12n
            out[name] = (q12 / q if q > 0 else math.nan, q)
            act = None
        else:
            act = m
    return out


# --------------------------------------------------------------------------------------------
# (a) correlation propagation
# --------------------------------------------------------------------------------------------

def _partner(x: torch.Tensor, c0: float, seed: int) -> torch.Tensor:
    """For each example of ``x``, one of the same norm at cosine exactly ``c0``."""
    flat = x.detach().flatten(1).double()
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(flat.shape, generator=gen, dtype=torch.float64).to(flat.device)
    n = flat.norm(dim=1, keepdim=True).clamp_min(1e-300)
    u = flat / n
    z = z - (z * u).sum(1, keepdim=True) * u
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-300)
    y = (c0 * u + math.sqrt(max(1.0 - c0 * c0, 0.0)) * z) * n
    return y.to(x.dtype).reshape(x.shape)


def correlation_trace(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      pairing: bool | float, seed: int) -> CorrelationTrace:
    """Run the forward pass once and measure each module call's pair cosine (module docs)."""
    tensors = input_tensors(args, kwargs)
    batch = next((int(t.shape[0]) for t in tensors if t.dim() > 0), 1)
    if pairing is True:
        if batch < 2:
            raise ValueError("audit: correlation=True pairs examples 2i and 2i+1 of the batch; "
                             f"pass a batch of at least 2 examples (got {batch})")
        k = batch // 2
        a = torch.arange(0, 2 * k, 2)
        b = a + 1
        how = "batch"
    else:
        c0 = float(pairing)
        if len(tensors) != 1 or not tensors[0].is_floating_point() or not args \
                or args[0] is not tensors[0]:
            raise ValueError("audit: correlation=<c0> builds each example's partner from a single "
                             "floating-point input tensor; pass correlation=True to pair the "
                             "examples of the batch instead")
        x = tensors[0]
        args = (torch.cat([x, _partner(x, c0, seed)]), *args[1:])
        k = batch
        a = torch.arange(k)
        b = a + k
        how = f"c0={c0:g}"
    n_run = batch if how == "batch" else 2 * k
    dev_a: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
    found: list[tuple[str, str, torch.Tensor, torch.Tensor]] = []
    handles = []

    def make(name: str, m: nn.Module) -> Callable[..., None]:
        tname = layer_type(m)

        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            y = primary_output(out)
            if y is None or y.dim() == 0 or y.shape[0] != n_run or not y.is_floating_point():
                return
            ia, ib = dev_a.setdefault(y.device, (a.to(y.device), b.to(y.device)))
            with torch.no_grad():
                yy = y.detach()
                found.append((name, tname, _pair_cos(yy, ia, ib),
                              yy.double().pow(2).mean()))
        return hook

    for name, m in _leaves(model):
        handles.append(m.register_forward_hook(make(name, m)))
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    floats = [t for t in input_tensors(args, kwargs) if t.is_floating_point()]
    c_in = None
    if floats and floats[0].shape[0] >= int(b[-1]) + 1:
        c_in = float(_pair_cos(floats[0].detach(), a.to(floats[0].device),
                               b.to(floats[0].device)))
    vals = torch.stack([torch.stack([c, q]) for _, _, c, q in found]).cpu().tolist() \
        if found else []
    rows = [CorrelationRow(index=i, name=n, type=t, cosine=float(c))
            for i, ((n, t, _, _), (c, _)) in enumerate(zip(found, vals, strict=True))]
    plain = _plain_fc(model)
    note = ""
    if plain is not None and floats and c_in is not None:
        x = floats[0].detach()
        q0 = float(x.double().pow(2).mean())
        pred = _theory_trace(plain, q0, c_in)
        for r, (_, q) in zip(rows, vals, strict=True):
            if r.name in pred and r.type == "Linear":
                r.theory, r.q_theory = pred[r.name]
                r.q = float(q)
        note = ("plain fully connected network: theory = mean-field maps (initwise.theory) "
                "with each layer's measured sigma_w^2 = fan_in*mean(W^2), sigma_b^2 = "
                "mean(b^2), from the input's q and c")
    elif plain is None:
        note = "not a plain fully connected network: no mean-field prediction"
    return CorrelationTrace(pairs=k, pairing=how, input_cosine=c_in, plain=plain is not None,
                            rows=rows, note=note)


# --------------------------------------------------------------------------------------------
# (b) one SGD step
# --------------------------------------------------------------------------------------------

def one_step_change(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    loss_of: Callable[[torch.Tensor], torch.Tensor], loss_kind: str,
                    lr: float, reseed: Callable[[], None],
                    trainable: Callable[[torch.Tensor], bool]) -> OneStepChange:
    """Take one SGD step on ``loss_of(f(x))`` over the ``trainable`` parameters, measure the
    output change, restore the parameters bit-exactly (module docs)."""
    params = [p for p in dict.fromkeys(model.parameters())
              if trainable(p) and p.is_floating_point()]
    saved = [p.detach().clone() for p in params]
    try:
        reseed()
        y0 = primary_output(model(*args, **kwargs))
        if y0 is None:
            raise ValueError("audit: the model's output contains no floating-point tensor")
        loss = loss_of(y0)
        grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad \
            else tuple(None for _ in params)
        y0 = y0.detach()
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if g is not None:
                    p.add_(g.to(p.dtype), alpha=-lr)
            reseed()
            y1 = primary_output(model(*args, **kwargs))
            assert y1 is not None
            y1 = y1.detach()
            after = float(loss_of(y1))
            d = (y1.double() - y0.double())
            n0 = float(y0.double().norm())
            change = float(d.norm())
            numel = max(y0.numel(), 1)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    change_rms = change / math.sqrt(numel)
    return OneStepChange(lr=lr, loss_kind=loss_kind, loss_before=float(loss.detach()),
                         loss_after=after, output_rms=n0 / math.sqrt(numel),
                         change_rms=change_rms, relative_change=change / n0 if n0 > 0 else None,
                         change_per_lr=change_rms / lr)


# --------------------------------------------------------------------------------------------
# (c) residual-stream growth
# --------------------------------------------------------------------------------------------

# operations that carry a writer's output towards the sum (scale, shape, dtype, dropout, a gate)
_CARRY = frozenset({
    "dropout", "mul", "__mul__", "__rmul__", "mul_", "div", "__truediv__", "div_", "view",
    "reshape", "permute", "transpose", "contiguous", "to", "float", "half", "bfloat16",
    "type_as", "clone", "squeeze", "unsqueeze", "flatten", "unflatten", "view_as",
    "reshape_as", "expand_as",
})
_SUMS = frozenset({"add", "__add__", "__radd__", "__iadd__", "add_"})


class _SumRecorder(TorchFunctionMode):
    """Records each sum ``skip + t`` where ``t`` is (carried from) a writer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.derived: dict[int, tuple[torch.Tensor, tuple[str, ...]]] = {}
        self.points: list[tuple[tuple[str, ...], torch.Tensor, int, torch.Tensor]] = []

    def mark(self, t: torch.Tensor, writers: tuple[str, ...]) -> None:
        self.derived[id(t)] = (t, writers)

    def _of(self, a: Any) -> tuple[str, ...] | None:
        if isinstance(a, torch.Tensor):
            hit = self.derived.get(id(a))
            if hit is not None and hit[0] is a:
                return hit[1]
        return None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return out
        if name in _SUMS and len(args) >= 2:
            ws = [self._of(a) for a in args[:2]]
            if ws[0] is not None and ws[1] is not None:
                self.mark(out, tuple(dict.fromkeys((*ws[0], *ws[1]))))
            elif (ws[0] is None) != (ws[1] is None):
                skip = args[0] if ws[0] is None else args[1]
                who = ws[1] if ws[0] is None else ws[0]
                if isinstance(skip, torch.Tensor) and who is not None \
                        and skip.shape == out.shape:
                    with torch.no_grad():
                        ss = out.detach().double().pow(2).sum()
                        s0 = skip.detach().double().pow(2).sum()
                    self.points.append((who, ss, out.numel(), s0))
        elif name in _CARRY:
            for a in args:
                w = self._of(a)
                if w is not None:
                    self.mark(out, w)
                    break
        return out


def residual_growth(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    writers: set[str], source: str, reseed: Callable[[], None]
                    ) -> ResidualGrowth:
    """Run the forward pass once, recording the stream after each sum of a tensor and the
    output of a module in ``writers`` (carried through dropout, shape ops or a gate), module
    docs."""
    rec = _SumRecorder()
    handles = []
    mods = dict(model.named_modules())

    def make(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            y = primary_output(out)
            if y is not None:
                rec.mark(y, (name,))
        return hook

    for name in writers:
        if name not in mods:
            continue
        handles.append(mods[name].register_forward_hook(make(name)))
        # a module that uses its only child's weight without calling it (MultiheadAttention's
        # out_proj): the parent's output is the writer's
        parent = name.rpartition(".")[0]
        pm = mods.get(parent)
        if parent and pm is not None and [n for n, _ in pm.named_children()] == \
                [name.rpartition(".")[2]]:
            handles.append(pm.register_forward_hook(make(name)))
    try:
        reseed()
        with torch.no_grad(), rec:
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        rec.derived.clear()  # the writer outputs it held
    points = rec.points
    if not points:
        return ResidualGrowth(sums=[], initial_rms=math.nan, total_growth=math.nan,
                              per_sum=math.nan, depth_exponent=math.nan, source=source,
                              note="no residual sum found" if writers else
                              "the structure analysis found no residual writer")
    vals = torch.stack([torch.stack([p[1], p[3]]) for p in points]).cpu().tolist()
    rms = [math.sqrt(v[0] / max(p[2], 1)) for v, p in zip(vals, points, strict=True)]
    init = math.sqrt(vals[0][1] / max(points[0][2], 1))
    base = init if math.isfinite(init) and init > 0 else rms[0]
    sums = []
    prev = base
    for i, ((who, _, _, _), r) in enumerate(zip(points, rms, strict=True)):
        sums.append(ResidualSum(index=i, writers=list(who), rms=r,
                                ratio=r / prev if prev > 0 else math.inf,
                                growth=r / base if base > 0 else math.inf))
        prev = r
    total = rms[-1] / base if base > 0 else math.inf
    per = total ** (1.0 / len(rms)) if math.isfinite(total) and total > 0 else math.nan
    ks = [math.log(i + 1) for i in range(len(rms))]
    ls = [math.log(r) if r > 0 else math.nan for r in rms]
    if len(rms) >= 2 and all(math.isfinite(v) for v in ls):
        mk, ml = sum(ks) / len(ks), sum(ls) / len(ls)
        den = sum((k - mk) ** 2 for k in ks)
        slope = sum((k - mk) * (v - ml) for k, v in zip(ks, ls, strict=True)) / den
    else:
        slope = math.nan
    return ResidualGrowth(sums=sums, initial_rms=init, total_growth=total, per_sum=per,
                          depth_exponent=slope, source=source)
