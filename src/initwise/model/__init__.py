"""The model wing: whole-model initialization, from a policy to the writes.

Floors, each importing only those above it in this list's reverse:

- :mod:`.policy` (rules) and :mod:`.presets` (named policies: ``presets``, ``get_policy``);
- :mod:`.structure` (which activation feeds each layer, residual branches) and :mod:`.roles`;
- :mod:`.scalars` (Fixup's scalar biases and multipliers, added by ``init`` when lacking);
- :mod:`.entries` (the plan data: :class:`Plan`, :class:`PlanEntry`);
- :mod:`.resolve` (the staged planner) and :mod:`.apply` (``plan``, ``init``: validate, write);
- :mod:`.keyed` (``keyed_init``) and :mod:`.meta` (``materialize``).
"""

from __future__ import annotations

from .apply import init, plan
from .entries import EntryChange, Plan, PlanEntry
from .keyed import KeyedInit, keyed_init
from .meta import materialize
from .policy import ACTIONS, ROLES, Policy, Rule
from .presets import PRESETS, get_policy
from .scalars import AddedScalar, remove_fixup_scalars

__all__ = [
    "ACTIONS",
    "PRESETS",
    "ROLES",
    "AddedScalar",
    "EntryChange",
    "KeyedInit",
    "Plan",
    "PlanEntry",
    "Policy",
    "Rule",
    "get_policy",
    "init",
    "keyed_init",
    "materialize",
    "plan",
    "remove_fixup_scalars",
]
