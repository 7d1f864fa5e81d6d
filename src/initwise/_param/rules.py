"""The per-parametrization formulas: init, forward multipliers, learning rates, weight decay.

Every factor is relative to the base model in standard parametrization (SP), so that at the
base width and depth every parametrization *is* SP (all factors exactly 1). With
``m_in = fan_in / base_fan_in``, ``m_out = fan_out / base_fan_out`` and, for a parameter in a
repeated block, ``m_L = L / L_base``:

μP (Yang et al. 2022, Tensor Programs V, Table 3, in the ``mup`` package's form):

====== ================= ============ ======== =============
role   init std          multiplier   Adam LR  SGD LR
====== ================= ============ ======== =============
input  σ_base            1            1        m_out
hidden σ_base/√m_in      1            1/m_in   m_out/m_in
output σ_base            1/m_in       1        m_in
vector σ_base            1            1        m_out
fixed  SP                1            1        1
====== ================= ============ ======== =============

plus attention logits ``q·k · (d_base/d) · s_base`` (1/d instead of 1/√d: a multiplier
``√(d_base/d)`` on the queries for standard ``s = 1/√d`` attention).

CompleteP (Dey et al. 2025, Table 1; α=1, α=1/2 is Depth-μP, Yang et al. 2023 / Bordelon et
al. 2023): μP, and every residual branch is multiplied by ``m_L^-α``; every parameter inside a
repeated block has its Adam LR times ``m_L^(α-1)`` (SGD: ``m_L^(2α-1)``, the same argument
for an unnormalized update: derived, not from the paper); Adam's ε is times
``1/(m_N · m_L^α)`` with ``m_N`` the model's width ratio.

Spectral (Yang, Simon & Bernstein 2023): ``‖W‖ ∝ √(fan_out/fan_in)`` at init and for every
update: init std ``∝ min(1, √(fan_out/fan_in))/√fan_in``, Adam LR ``∝ 1/fan_in``, SGD LR
``∝ fan_out/fan_in``; embedding tables and vectors count fan-in 1 (one-hot rows, a constant
input). No forward multipliers.

Weight decay: each group's decay is divided by its width LR factor, so that ``lr · wd`` (the
decay per step of AdamW and of torch's coupled decay) does not change with width (``mup``'s
``MuAdam``/``MuSGD``, CompleteP's ``λ m_N`` for hidden weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .._checks import raise_unknown
from .shapes import TensorShape

__all__ = ["NAMES", "OPTIMIZERS", "Name", "Optimizer", "Scaling", "completep_eps", "scaling",
           "spectral_std_factor", "update_family"]

Name = Literal["sp", "mup", "completep", "spectral"]
NAMES: tuple[Name, ...] = ("sp", "mup", "completep", "spectral")
Optimizer = Literal["adam", "adamw", "sgd", "adamax", "nadam", "radam", "rmsprop", "adagrad",
                    "adadelta", "rprop", "sparseadam", "adafactor", "lion", "asgd"]
#: Which learning-rate column an optimizer takes. The rules depend only on how an update scales
#: with the gradient: entry-wise normalized (Adam-like: an update of O(lr) per entry whatever the
#: gradient's size; also sign and RMS-normalized methods) or linear in the gradient (SGD-like,
#: with or without momentum). Tensor Programs V, Section 4 / Table 3.
_FAMILY: dict[str, Literal["adam", "sgd"]] = {
    "adam": "adam", "adamw": "adam", "adamax": "adam", "nadam": "adam", "radam": "adam",
    "rmsprop": "adam", "adagrad": "adam", "adadelta": "adam", "rprop": "adam",
    "sparseadam": "adam", "adafactor": "adam", "lion": "adam", "sgd": "sgd", "asgd": "sgd",
}
OPTIMIZERS: tuple[str, ...] = tuple(_FAMILY)


def update_family(optimizer: object) -> Literal["adam", "sgd"]:
    """Return ``"adam"`` or ``"sgd"``: which learning-rate rule ``optimizer`` follows.

    ``optimizer`` is a name (``"adamw"``, case-insensitive) or a ``torch.optim.Optimizer``
    subclass or instance (``torch.optim.RMSprop``); anything else raises with the valid names.
    Optimizers whose update is neither entry-wise normalized nor linear in the gradient (Muon's
    orthogonalized updates, L-BFGS) have other width rules and are refused.

    >>> update_family("AdamW"), update_family("sgd")
    ('adam', 'sgd')
    """
    name = optimizer
    if not isinstance(optimizer, str):
        cls = optimizer if isinstance(optimizer, type) else type(optimizer)
        name = cls.__name__
    key = name.lower() if isinstance(name, str) else name
    if key not in _FAMILY:
        raise_unknown("optimizer", name, OPTIMIZERS)
    return _FAMILY[str(key)]


@dataclass(frozen=True)
class Scaling:
    """The factors of one parameter, relative to SP at the base.

    ``init``: its init std is ``init × base_std`` (``None``: the SP init at this width, kept);
    ``lr_adam`` / ``lr_sgd``: learning-rate factors (width part times depth part);
    ``width_adam`` / ``width_sgd``: their width parts (weight decay is divided by them);
    ``eps``: Adam's ε factor; ``multiplier``: the output multiplier of a readout (1 if none).
    """

    init: float | None
    lr_adam: float
    lr_sgd: float
    width_adam: float
    width_sgd: float
    eps: float = 1.0
    multiplier: float = 1.0


def spectral_std_factor(fan_in: float, fan_out: float) -> float:
    """``min(1, √(fan_out/fan_in)) / √fan_in``: the spectral condition's init std (up to a
    constant), Yang, Simon & Bernstein 2023, eq. (2)."""
    return min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in)


def _mup(t: TensorShape) -> tuple[float | None, float, float, float]:
    """(init factor, Adam LR, SGD LR, multiplier) of μP."""
    mi, mo = t.width_in, t.width_out
    if t.role == "input":
        return 1.0, 1.0, mo, 1.0
    if t.role == "hidden":
        return 1.0 / math.sqrt(mi), 1.0 / mi, mo / mi, 1.0
    if t.role == "output":
        return 1.0, 1.0, mi, 1.0 / mi
    if t.role == "vector":
        return 1.0, 1.0, mo, 1.0
    return None, 1.0, 1.0, 1.0


def _spectral(t: TensorShape) -> tuple[float | None, float, float]:
    if t.role == "fixed":
        return None, 1.0, 1.0
    fi, bfi = (1.0, 1.0) if t.is_table or len(t.shape) < 2 else (t.fan_in, t.base_fan_in)
    fo, bfo = t.fan_out, t.base_fan_out
    init = spectral_std_factor(fi, fo) / spectral_std_factor(bfi, bfo)
    return init, bfi / fi, (fo / bfo) / (fi / bfi)


def completep_eps(width: float, depth: float, alpha: float) -> float:
    """CompleteP's factor on Adam's ε: ``1 / (m_N · m_L^α)`` (Dey et al. 2025)."""
    return 1.0 / (width * depth**alpha)


def scaling(name: Name, t: TensorShape, *, depth: float = 1.0, alpha: float = 1.0, eps: float = 1.0) -> Scaling:
    """The :class:`Scaling` of parameter ``t`` under parametrization ``name``.

    ``depth``: ``m_L`` of the block ``t`` is in (1 outside blocks); ``alpha``: CompleteP's
    exponent; ``eps``: CompleteP's ε factor (:func:`completep_eps`, the same for all).

    >>> from initwise._param.shapes import TensorShape
    >>> h = TensorShape("w", (64, 64), (16, 16), "weight", "hidden", 64, 64, 16, 16)
    >>> s = scaling("mup", h)
    >>> s.init, s.lr_adam, s.lr_sgd
    (0.5, 0.25, 1.0)
    """
    if name == "sp":
        return Scaling(None, 1.0, 1.0, 1.0, 1.0)
    if name == "spectral":
        init, adam, sgd = _spectral(t)
        return Scaling(init, adam, sgd, adam, sgd)
    init, adam, sgd, mult = _mup(t)
    if name == "mup":
        return Scaling(init, adam, sgd, adam, sgd, multiplier=mult)
    # completep
    d_adam = depth ** (alpha - 1.0) if t.block else 1.0
    d_sgd = depth ** (2.0 * alpha - 1.0) if t.block else 1.0
    return Scaling(init, adam * d_adam, sgd * d_sgd, adam, sgd, eps=eps, multiplier=mult)
