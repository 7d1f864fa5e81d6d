"""initwise: neural-network weight initialization, correct and measured.

The public API is re-exported here from focused modules: ``fans`` (connectivity),
``gains`` (activation gains), ``schemes`` (in-place drop-ins for ``torch.nn.init``),
``registry`` (names, aliases, configs), ``numpy`` (framework-free forms), ``random``
(the keyed counter-based engine) and ``theory`` (mean-field signal propagation).
"""

from __future__ import annotations

from . import random, theory
from ._checks import InitwiseWarning
from ._context import KeyedInit, keyed_init
from ._names import canonical_name
from .audit import (
    AuditError,
    AuditReport,
    AuditThresholds,
    WidthAuditReport,
    audit,
    audit_plot,
    audit_widths,
)
from .distributed import materialize
from .fans import (
    FanRule,
    Fans,
    describe_layout,
    fans,
    gate_blocks,
    register_fans,
    tensor_fans,
    unregister_fans,
)
from .gains import (
    ACTIVATIONS,
    activation_name,
    calculate_gain,
    gain,
    mean_and_second_moment,
    second_moment,
)
from .lsuv import LayerRule, LSUVError, LSUVLayer, LSUVReport, LSUVStep, lsuv
from .plan import EntryChange, InitError, Plan, PlanEntry, init, plan
from .policy import PRESETS, Policy, Rule, get_policy, presets
from .registry import Scheme, SchemeStats, get_scheme, register_scheme, schemes
from .schemes import (
    compute_std,
    constant_,
    delta_orthogonal_,
    dirac_,
    eye_,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal_,
    ones_,
    orthogonal_,
    sparse_,
    trunc_normal_,
    truncated_normal_,
    uniform_,
    variance_scaling_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "PRESETS",
    "AuditError",
    "AuditReport",
    "AuditThresholds",
    "EntryChange",
    "FanRule",
    "Fans",
    "InitError",
    "InitwiseWarning",
    "KeyedInit",
    "LSUVError",
    "LSUVLayer",
    "LSUVReport",
    "LSUVStep",
    "LayerRule",
    "Plan",
    "PlanEntry",
    "Policy",
    "Rule",
    "Scheme",
    "SchemeStats",
    "WidthAuditReport",
    "__version__",
    "activation_name",
    "audit",
    "audit_plot",
    "audit_widths",
    "calculate_gain",
    "canonical_name",
    "compute_std",
    "constant_",
    "delta_orthogonal_",
    "describe_layout",
    "dirac_",
    "eye_",
    "fans",
    "gain",
    "gate_blocks",
    "get_policy",
    "get_scheme",
    "init",
    "kaiming_normal_",
    "kaiming_uniform_",
    "keyed_init",
    "lecun_normal_",
    "lecun_uniform_",
    "lsuv",
    "materialize",
    "mean_and_second_moment",
    "normal_",
    "ones_",
    "orthogonal_",
    "plan",
    "presets",
    "random",
    "register_fans",
    "register_scheme",
    "schemes",
    "second_moment",
    "sparse_",
    "tensor_fans",
    "theory",
    "trunc_normal_",
    "truncated_normal_",
    "uniform_",
    "unregister_fans",
    "variance_scaling_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
