"""Policies and presets (the public path of :mod:`initwise.model.policy` and
:mod:`initwise.model.presets`)."""

from __future__ import annotations

from .model.policy import ACTIONS, ROLES, Policy, Rule
from .model.presets import PRESETS, get_policy, is_builtin_policy_name, presets

__all__ = ["ACTIONS", "PRESETS", "ROLES", "Policy", "Rule", "get_policy", "is_builtin_policy_name", "presets"]
