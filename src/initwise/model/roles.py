"""Roles: what each tensor of a model is (a weight, a norm scale, a residual output, ...).

:func:`base_role` reads one tensor's role from its module and name; :func:`structure_roles`
adds the roles that come from the model's structure (residual branches, the classifier).
The role vocabulary is :data:`initwise.model.policy.ROLES`.
"""

from __future__ import annotations

import torch
from torch import nn

from .._modules import is_embedding, is_norm, is_weight_layer
from .structure import FFN_PAIRS, GraphInfo

__all__ = ["ROLE_PRIORITY", "base_role", "structure_roles"]

# Names of layers that write into the residual stream (GPT-2, LLaMA, torch MHA, ...)
_RESIDUAL_NAMES = {"c_proj", "o_proj", "out_proj", "down_proj"}


def base_role(module: nn.Module, leaf: str, t: torch.Tensor, kind: str) -> str:
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
        add(b.layers[-1], "residual_out")
        if b.trailing_norm is None:
            add(b.layers[-1], "branch_end")
        else:
            add(b.trailing_norm, "residual_norm")
            add(b.trailing_norm, "branch_end")
        for layer in b.layers:
            add(layer, "branch")
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


ROLE_PRIORITY = ("residual_norm", "branch_end", "residual_out", "classifier", "branch")
