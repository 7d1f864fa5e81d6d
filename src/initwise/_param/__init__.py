"""Parametrizations (SP, μP, CompleteP, spectral): init, forward multipliers and learning rates
as functions of width and depth, relative to a base model.

Modules: :mod:`.shapes` (roles, by comparing the model with its base), :mod:`.rules` (the
formulas), :mod:`.multipliers` (removable forward hooks), :mod:`.api` (``parametrize``).
"""

from __future__ import annotations

from .api import ParamEntry, Parametrization, parametrize
from .multipliers import Multiplier
from .rules import NAMES

__all__ = ["NAMES", "Multiplier", "ParamEntry", "Parametrization", "parametrize"]
