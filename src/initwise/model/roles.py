"""Roles: what each tensor of a model is (a weight, a norm scale, a residual output, ...).

:func:`base_role` reads one tensor's role from its module and name; :func:`structure_roles`
adds the roles that come from the model's structure (residual branches, the classifier).
The role vocabulary is :data:`initwise.model.policy.ROLES`.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _torch
from .._modules import is_embedding, is_hf_conv1d, is_norm, is_weight_layer
from .dataflow import CASTS
from .structure import FFN_PAIRS, GraphInfo

__all__ = ["ROLE_PRIORITY", "base_role", "param_structure_roles", "refine_role", "structure_roles"]

# Names of layers that write into the residual stream (GPT-2, LLaMA, torch MHA, ...)
_RESIDUAL_NAMES = {"c_proj", "o_proj", "out_proj", "down_proj"}


def base_role(module: nn.Module, leaf: str, t: torch.Tensor, kind: str) -> str:
    if leaf in ("fixup_bias_in", "fixup_bias_out"):  # added by init(policy="fixup")
        return "scalar_bias"
    if leaf == "fixup_scale":
        return "scalar_scale"
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        if leaf.startswith("weight_hh"):
            return "recurrent"
        if leaf.startswith("weight_"):
            return "recurrent_input"
        if leaf.startswith("bias"):
            return "recurrent_bias"
    if is_norm(module):
        if kind == "buffer":
            return "norm_stats"
        return "norm" if leaf == "weight" else ("norm_bias" if leaf == "bias" else "other")
    if is_embedding(module) and leaf == "weight":
        return "embedding"
    if t.numel() == 1 and not is_weight_layer(module):
        low = leaf.lower()
        if low.startswith("bias"):
            return "scalar_bias"
        if "scale" in low or "mult" in low:
            return "scalar_scale"
        return "gate"
    if t.dim() >= 2:
        return "weight"
    if "bias" in leaf:
        return "bias"
    return "other"


def structure_roles(model: nn.Module, info: GraphInfo) -> dict[str, list[str]]:
    """Module name -> extra roles for its weight (residual_out, branch, ...)."""
    extra: dict[str, list[str]] = {}

    def add(m: str, r: str) -> None:
        lst = extra.setdefault(m, [])
        if r not in lst:
            lst.append(r)

    for b in info.branches:
        if b.source == "dataflow":  # weights get their roles by parameter (param_structure_roles)
            if b.trailing_norm is not None:
                add(b.trailing_norm, "residual_norm")
                add(b.trailing_norm, "branch_end")
            continue
        add(b.layers[-1], "residual_out")
        if b.trailing_norm is None:
            add(b.layers[-1], "branch_end")
        else:
            add(b.trailing_norm, "residual_norm")
            add(b.trailing_norm, "branch_end")
        for layer in b.layers:
            add(layer, "branch")
    if info.source == "dataflow":  # the residual sums and the head are known exactly
        # ... except a head whose weight a parametrization computes (no parameter to name)
        mods = dict(model.named_modules())
        linears = [n for n in info.order if isinstance(mods.get(n), nn.Linear)]
        if linears and f"{linears[-1]}.weight" not in info.usages:
            add(linears[-1], "classifier")
        return extra
    mods = dict(model.named_modules())
    for name, m in mods.items():
        if not is_weight_layer(m) or not name:
            continue
        leaf = name.rsplit(".", 1)[-1]
        parent = mods.get(name.rsplit(".", 1)[0] if "." in name else "")
        ptype = type(parent).__name__ if parent is not None else ""
        # inside a stack of blocks (a numbered path: h.3.mlp.fc2), the second layer of a
        # feed-forward pair (OPT fc2, NeoX dense_4h_to_h, T5 wo, torch linear2) and an
        # attention's output (T5 o, NeoX attention.dense) write into the residual stream
        in_stack = any(part.isdigit() for part in name.split(".")[:-1])
        ffn_second = in_stack and parent is not None and any(
            leaf == second and isinstance(getattr(parent, first, None), nn.Module)
            for first, second in FFN_PAIRS
        )
        attn_out = in_stack and leaf in ("o", "dense") and ptype.endswith("Attention")
        if leaf in _RESIDUAL_NAMES or (leaf == "dense" and ptype.endswith("Output")) \
                or ffn_second or attn_out:
            add(name, "residual_out")
    linears = [n for n in info.order if isinstance(mods.get(n), nn.Linear)]
    if not linears:
        linears = [n for n, m in mods.items() if isinstance(m, nn.Linear)]
    if linears:
        add(linears[-1], "classifier")
    return extra


ROLE_PRIORITY = ("residual_norm", "residual_out", "branch_end", "classifier", "branch")


_KNOWN_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, _torch.ConvNd, nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase,
    nn.Embedding, nn.EmbeddingBag,
)  # fmt: skip
# Ways a scalar gate or scale is used (any other use, e.g. exp(logit_scale), gives it meaning)
_SCALAR_USES = frozenset({*CASTS, "mul", "__mul__", "__rmul__", "mul_", "add", "__add__",
                          "__radd__", "add_", "expand", "expand_as", "view", "reshape",
                          "__getitem__", "sub", "__sub__", "__rsub__"})  # fmt: skip


def refine_role(base: str, module: nn.Module, name: str, info: GraphInfo) -> tuple[str, str | None]:
    """``base`` corrected by how the forward pass used the tensor (dataflow only), and why.

    - an embedding table also used as a linear weight: ``tied_embedding`` (the output head);
    - an embedding table looked up only by constant indices, or by positions counted along
      the sequence (XLM-R's padding-aware ``cumsum``), or read whole as data (DeBERTa-v2's
      ``rel_embeddings``, the input of a norm or linear map): ``position``;
    - a ≥2-D parameter of a module initwise has no layout for, never used as a weight (a
      position table added to the input, a class token, a state-space ``A_log``) or not used
      at all by the traced forward (a mask token): ``other``;
    - a bias never added as a bias of its layer's output, a scalar used other than as a
      multiplier or an offset (``exp(logit_scale)``): ``other``.
    """
    uses = info.usages.get(name)
    if not uses:
        known = isinstance(module, _KNOWN_LAYERS) or is_hf_conv1d(module)
        if base == "weight" and not known and info.source == "dataflow":
            # a tensor of a module initwise has no layout for that the forward never read (a
            # mask token used only when masking): nothing says it is a weight
            return "other", "not used by the forward pass the dataflow traced"
        return base, None
    kinds = {u.kind for u in uses}
    ops = sorted({u.op for u in uses})
    if base == "embedding":
        if "weight" in kinds:
            return "tied_embedding", "the table is also the output head"
        if "position" in kinds and "embedding" not in kinds:
            return "position", "looked up by constant positions, not by the input"
        if "counted_position" in kinds and "embedding" not in kinds:
            return "position", ("looked up by indices counted along the sequence (a cumsum of the "
                                "input's mask), not by token ids")
        if "table" in kinds and "embedding" not in kinds:
            table_ops = sorted({u.op for u in uses if u.kind == "table"})
            return "position", (f"read whole by {', '.join(table_ops)} (a relative-position "
                                "table), not looked up by the input")
        return base, None
    if base == "norm" and uses[0].op in ("add", "__add__", "__radd__", "add_", "sub", "__rsub__"):
        c = norm_offset(name, info)
        if c is not None:
            return base, f"a norm scale used as w {'+' if c >= 0 else '-'} {abs(c):g}: written as the scale minus {c:g}"
        return "other", "a norm scale used as an offset (1 + w): its neutral value is the model's own"
    known = isinstance(module, _KNOWN_LAYERS) or is_hf_conv1d(module)
    if base == "bias" and "bias" not in kinds and not known:
        return "other", f"used by {', '.join(ops)} in the forward pass, not as its layer's bias"
    if base in ("gate", "scalar_bias", "scalar_scale") and any(u.op not in _SCALAR_USES for u in uses):
        return "other", f"used by {', '.join(ops)} in the forward pass"
    if base == "weight" and not known and not kinds & {"weight", "embedding"}:
        return "other", f"used by {', '.join(ops)} in the forward pass, not as a weight"
    return base, None


def norm_offset(name: str, info: GraphInfo) -> float | None:
    """``c`` when the forward pass uses the norm scale ``name`` only as ``w + c`` (``w - c``:
    ``-c``), a Python number: the scale the layer applies is ``w + c`` (Gemma's and Nemotron's
    ``1 + w``); ``None`` otherwise."""
    uses = info.usages.get(name) or []
    offs = {u.offset for u in uses}
    if len(offs) != 1:
        return None
    return next(iter(offs))


def param_structure_roles(info: GraphInfo) -> dict[str, list[str]]:
    """Parameter name -> roles from the dataflow's residual sums (branch, residual_out,
    branch_end) and its last linear map (classifier)."""
    out: dict[str, list[str]] = {}

    def add(p: str, r: str) -> None:
        lst = out.setdefault(p, [])
        if r not in lst:
            lst.append(r)

    for p in info.residual_writers:
        add(p, "residual_out")
    for b in info.branches:
        if b.source != "dataflow":
            continue
        for p, uses in info.usages.items():
            if p.rpartition(".")[0] in b.layers and any(u.kind == "weight" for u in uses):
                add(p, "branch")
    for p in info.residual_writers:
        hit = next((b for b in info.branches if b.source == "dataflow" and p.rpartition(".")[0] in b.layers), None)
        if hit is None or hit.trailing_norm is None:
            add(p, "branch_end")
    last = [p for p, uses in info.usages.items() if any(u.kind == "weight" and u.op in ("linear", "addmm", "matmul")
                                                         for u in uses)]
    order = [p for p in info.weight_order if p in last]  # execution order of first use as a weight
    if order:
        add(order[-1], "classifier")
    return out
