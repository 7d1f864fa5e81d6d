"""What LSUV calibrates: every weighted layer's weight (or weight block) as units, found by type."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import torch
from torch import nn

from .. import _torch
from .._checks import raise_unknown
from .._modules import CONV_TYPES, is_hf_conv1d
from .._names import name_matches, selection
from .._session import memory_signature
from .report import LayerRule

Only = Union[str, Sequence[str], Callable[..., bool], None]  # noqa: UP007


# --------------------------------------------------------------------------------------------
# Units: one calibrated weight (or weight block) as seen by one module
# --------------------------------------------------------------------------------------------


class _Weight:
    """State of one calibrated weight (block), shared by all modules that use it."""

    def __init__(self, name: str, param: torch.Tensor, rows: slice | None, blocks: int,
                 extra_ortho: list[tuple[str, torch.Tensor, slice | None]]) -> None:  # fmt: skip
        self.name = name
        self.param = param
        self.rows = rows
        self.blocks = blocks
        self.extra_ortho = extra_ortho  # (name, tensor, rows): pre-init only (MHA q, k)
        self.preinit_done = False
        self.scale = 1.0
        self.iterations = 0
        self.calls = 0  # calls in the current pass

    def view(self) -> torch.Tensor:
        return self.param if self.rows is None else self.param[self.rows]


class _Unit:
    """A weight as used by one module: where its output is and how the bias broadcasts."""

    def __init__(self, module_name: str, module: nn.Module, kind: str, weight: _Weight,
                 bias: torch.Tensor | None, bias_rows: slice | None, at: Literal["output", "input"],
                 bias_dim: Callable[[torch.Tensor], int],
                 take_input: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None,
                 ) -> None:  # fmt: skip
        self.module_name = module_name
        self.module = module
        self.kind = kind
        self.weight = weight
        self.bias_param = bias
        self.bias_rows = bias_rows
        self.at = at
        self.bias_dim = bias_dim
        self.take_input = take_input
        self.rnn_layer = 0  # > 0: input weights of that layer of a stacked RNN

    def bias(self) -> torch.Tensor | None:
        if self.bias_param is None:
            return None
        return self.bias_param if self.bias_rows is None else self.bias_param[self.bias_rows]

    def names(self) -> tuple[str, ...]:
        base = self.weight.name.split("[", 1)[0]
        return (self.module_name, self.weight.name, base)


def _last(_: torch.Tensor) -> int:
    return -1


def _fixed(d: int) -> Callable[[torch.Tensor], int]:
    def dim(_: torch.Tensor) -> int:
        return d

    return dim


def _conv_channel(weight_dim: int) -> Callable[[torch.Tensor], int]:
    def dim(y: torch.Tensor) -> int:
        return 1 if y.dim() == weight_dim else 0  # unbatched conv input: channels first

    return dim


_CONVS = CONV_TYPES
_STOCK: tuple[type, ...] = (nn.Linear, *_CONVS, nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)


def _own_weights(m: nn.Module) -> bool:
    """False if a stock layer's weight is not its own Parameter (recomputed by a hook)."""
    if isinstance(m, nn.RNNBase):
        return all(n in _torch.own_parameters(m) for n in _torch.rnn_weight_names(m) if n.startswith("weight_ih"))
    if isinstance(m, nn.RNNCellBase):
        return "weight_ih" in _torch.own_parameters(m)
    if isinstance(m, nn.MultiheadAttention):
        names = ["in_proj_weight"] if _torch.mha_packed_in_proj(m) else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
        return all(n in _torch.own_parameters(m) for n in names)  # out_proj: judged on its own
    return "weight" in _torch.own_parameters(m)




def _rnn_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    x = args[0] if args else kwargs.get("input")
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return x.data
    return x


def _rnn_layer_output(m: nn.RNNBase, layer: int, x: Any, hx: Any) -> Any:
    """Output sequence of one layer of a stacked RNN (its input for the next layer).

    Runs a one-layer torch module of the same type (dropout between layers is off: the module
    is in eval mode during calibration) on ``m``'s own parameters of that layer.
    """
    d = 2 if m.bidirectional else 1
    inner = m.proj_size if isinstance(m, nn.LSTM) and m.proj_size > 0 else m.hidden_size
    kw: dict[str, Any] = {"num_layers": 1, "bias": m.bias, "batch_first": m.batch_first,
                          "bidirectional": m.bidirectional, "device": "meta"}  # fmt: skip
    base: type[nn.RNNBase]
    if isinstance(m, nn.LSTM):
        base, kw["proj_size"] = nn.LSTM, m.proj_size
    elif isinstance(m, nn.GRU):
        base = nn.GRU
    else:
        base, kw["nonlinearity"] = nn.RNN, m.nonlinearity
    tmp = base(m.input_size if layer == 0 else inner * d, m.hidden_size, **kw)
    for name in _torch.rnn_weight_names(tmp):
        setattr(tmp, name, getattr(m, name.replace("_l0", f"_l{layer}")))
    if hx is not None:  # [num_layers * d, ...]: this layer's initial state
        hx = tuple(h[layer * d : (layer + 1) * d] for h in hx) if isinstance(hx, tuple) else hx[layer * d : (layer + 1) * d]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-contiguous weights on cuDNN
        return tmp(x, hx)[0]


def _mha_value(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[2] if len(args) > 2 else kwargs.get("value")


def _memory(t: torch.Tensor) -> tuple[Any, ...]:
    """Where ``t``'s values live (``memory_signature``), or its identity when it has no plain
    memory yet (lazy, meta, empty) or none at all (sparse and wrapper subclasses)."""
    if nn.parameter.is_lazy(t):
        return (id(t),)
    try:
        sig = memory_signature(t)
    except (RuntimeError, NotImplementedError, ValueError):
        sig = None
    return (id(t),) if sig is None else sig


def _param(module: nn.Module, name: str | None) -> torch.Tensor | None:
    if name is None:
        return None
    p = getattr(module, name, None)
    return p if isinstance(p, torch.Tensor) else None


def _discover(model: nn.Module, custom: Mapping[type, LayerRule],
              parametrized: list[str] | None = None) -> list[_Unit]:  # fmt: skip
    """All calibratable units of ``model`` (module registration order; execution decides).

    Modules with torch parametrizations (``weight_norm``, ``spectral_norm``, ...) are left out
    and their names appended to ``parametrized``: their weight is recomputed from other
    tensors at every call, so it cannot be rescaled in place (spectral norm even undoes any
    scale by design).
    """
    weights: dict[tuple[tuple[Any, ...], int | None], _Weight] = {}
    units: list[_Unit] = []
    skip: set[int] = set()
    for mname, m in model.named_modules():
        if nn.utils.parametrize.is_parametrized(m):
            skip.add(id(m))
            if parametrized is not None:
                parametrized.append(mname or "<root>")
        elif (isinstance(m, _STOCK) or is_hf_conv1d(m)) and not _own_weights(m):
            # ``weight`` recomputed by a pre-hook from other tensors (hook-based weight_norm,
            # spectral_norm, pruning): a rescale would be thrown away at the next call
            skip.add(id(m))
            if parametrized is not None:
                parametrized.append(f"{mname or '<root>'} (weight computed by a forward pre-hook)")

    def weight(name: str, p: torch.Tensor, rows: slice | None = None, blocks: int = 1,
               extra: list[tuple[str, torch.Tensor, slice | None]] | None = None) -> _Weight:  # fmt: skip
        # keyed by memory, not object: Parameters tied through ``.data`` are one weight
        key = (_memory(p), None if rows is None else rows.start)
        if key not in weights:
            weights[key] = _Weight(name, p, rows, blocks, extra or [])
        return weights[key]

    for mname, m in model.named_modules():
        if id(m) in skip:
            continue
        prefix = f"{mname}." if mname else ""
        rule = next((r for t, r in custom.items() if isinstance(m, t)), None)
        if rule is not None:
            w = _param(m, rule.weight)
            if w is None:
                raise ValueError(
                    f"custom_layers: {mname or '<root>'} ({type(m).__name__}) has no tensor "
                    f"attribute {rule.weight!r}"
                )
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + rule.weight, w),
                               _param(m, rule.bias), None, "output", _fixed(rule.bias_dim)))  # fmt: skip
        elif isinstance(m, nn.MultiheadAttention):
            e = m.embed_dim
            bias = m.in_proj_bias
            if _torch.mha_packed_in_proj(m):
                assert m.in_proj_weight is not None
                wv = weight(prefix + "in_proj_weight[v]", m.in_proj_weight, slice(2 * e, 3 * e),
                            extra=[(prefix + "in_proj_weight[q]", m.in_proj_weight, slice(0, e)),
                                   (prefix + "in_proj_weight[k]", m.in_proj_weight, slice(e, 2 * e))])  # fmt: skip
            else:
                assert m.v_proj_weight is not None
                assert m.q_proj_weight is not None and m.k_proj_weight is not None
                wv = weight(prefix + "v_proj_weight", m.v_proj_weight,
                            extra=[(prefix + "q_proj_weight", m.q_proj_weight, None),
                                   (prefix + "k_proj_weight", m.k_proj_weight, None)])  # fmt: skip
            units.append(_Unit(mname, m, "MultiheadAttention[v]", wv, bias,
                               slice(2 * e, 3 * e), "input", _last, _mha_value))  # fmt: skip
            if "weight" in _torch.own_parameters(m.out_proj):  # else parametrized (reported) or computed
                wo = weight(prefix + "out_proj.weight", m.out_proj.weight)
                units.append(_Unit(mname, m, "MultiheadAttention[out]", wo, m.out_proj.bias,
                                   None, "output", _last))  # fmt: skip
            skip.add(id(m.out_proj))  # called functionally by MHA, never as a module
        elif isinstance(m, (nn.RNNBase, nn.RNNCellBase)):
            layers = [(0, "")]
            if isinstance(m, nn.RNNBase):  # every layer, both directions, in execution order
                dirs = ["", "_reverse"] if m.bidirectional else [""]
                layers = [(k, f"_l{k}{r}") for k in range(m.num_layers) for r in dirs]
            for k, s in layers:
                w = _param(m, "weight_ih" + s)
                if w is None:
                    continue
                blocks = max(1, w.shape[0] // m.hidden_size)
                unit = _Unit(mname, m, type(m).__name__, weight(prefix + "weight_ih" + s, w,
                             blocks=blocks), _param(m, "bias_ih" + s), None, "input", _last,
                             _rnn_input)  # fmt: skip
                unit.rnn_layer = k
                units.append(unit)
        elif isinstance(m, _CONVS):
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + "weight", m.weight),
                               m.bias, None, "output", _conv_channel(m.weight.dim())))  # fmt: skip
        elif isinstance(m, nn.Linear) or is_hf_conv1d(m):
            w = _param(m, "weight")
            if w is None:
                continue
            units.append(_Unit(mname, m, type(m).__name__, weight(prefix + "weight", w),
                               _param(m, "bias"), None, "output", _last))  # fmt: skip
    # A weight tied to an embedding table (a language model's output head) is the table: LSUV
    # must not orthogonalize and rescale the embeddings through it. Left out and reported.
    tables = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
              for p in m.parameters(recurse=False)}
    kept = [u for u in units if id(u.weight.param) not in tables]
    if parametrized is not None:
        parametrized.extend(f"{u.weight.name} (tied to an embedding)" for u in units
                            if id(u.weight.param) in tables)
    return kept


def _select(units: list[_Unit], only: Only) -> list[_Unit]:
    """The units ``only=`` selects (see :class:`initwise._names.Selection`): names of layers or
    of their weights (exact or prefixes), or a predicate on the weight's name (or on
    ``(module_name, module)``)."""
    sel = selection(only, "lsuv")
    if sel is None:
        return units
    pred = sel.predicate
    if pred is not None:
        if sel.arity == 2:
            return [u for u in units if pred(u.module_name, u.module)]
        return [u for u in units if pred(u.names()[2])]
    assert sel.names is not None
    for p in sel.names:
        if not any(name_matches(n, p) for u in units for n in u.names()):
            raise_unknown("layer name in only=", p, {n for u in units for n in u.names()})
    return [u for u in units if any(sel.matches(n) for n in u.names())]


