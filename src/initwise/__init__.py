"""initwise: neural-network weight initialization, correct and measured.

The public API is re-exported here from focused modules: ``fans`` (connectivity),
``gains`` (activation gains), ``schemes`` (in-place drop-ins for ``torch.nn.init``),
``registry`` (names, aliases, configs), ``numpy`` (framework-free forms) and ``random``
(the keyed counter-based engine).
"""

from __future__ import annotations

import sys as _sys

from . import _audit, _fans, _lsuv, _schemes, model, random
from ._audit import (
    AuditReport,
    AuditThresholds,
    LayerStats,
    OutputCheck,
    SpectrumSummary,
    WeightStats,
    WidthAuditReport,
    WidthRow,
    audit,
    audit_plot,
    audit_widths,
)
from ._errors import AuditError, InitError, InitwiseError, InitwiseWarning, LSUVError
from ._fans import (
    FanRule,
    Fans,
    describe_layout,
    fans,
    gate_blocks,
    register_fans,
    tensor_fans,
    unregister_fans,
)
from ._guard import CheckReport, DigestReport, Finding, WatchLog, WriteEvent, check, digest, watch
from ._lsuv import LayerRule, LSUVLayer, LSUVReport, LSUVStep, lsuv
from ._names import canonical_name
from ._schemes import (
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
from .gains import (
    ACTIVATIONS,
    activation_name,
    calculate_gain,
    gain,
    mean_and_second_moment,
    second_moment,
)
from .model import (
    PRESETS,
    EntryChange,
    KeyedInit,
    Plan,
    PlanEntry,
    Policy,
    Rule,
    get_policy,
    init,
    keyed_init,
    materialize,
    plan,
)
from .model.presets import presets
from .registry import Scheme, SchemeStats, get_scheme, register_scheme, schemes

# One-release aliases of the module paths before 0.2 (``from initwise.plan import Plan``):
# the implementation modules are private (``_fans``, ``_schemes``, ``_lsuv``, ``_audit``) or
# in ``initwise.model`` so that no module is shadowed by the facade function of its name.
for _old, _new in {"fans": _fans, "schemes": _schemes, "plan": model, "lsuv": _lsuv,
                   "audit": _audit}.items():  # fmt: skip
    _sys.modules.setdefault(f"{__name__}.{_old}", _new)
del _old, _new

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "PRESETS",
    "AuditError",
    "AuditReport",
    "AuditThresholds",
    "CheckReport",
    "DigestReport",
    "EntryChange",
    "FanRule",
    "Fans",
    "Finding",
    "InitError",
    "InitwiseError",
    "InitwiseWarning",
    "KeyedInit",
    "LSUVError",
    "LSUVLayer",
    "LSUVReport",
    "LSUVStep",
    "LayerRule",
    "LayerStats",
    "OutputCheck",
    "Plan",
    "PlanEntry",
    "Policy",
    "Rule",
    "Scheme",
    "SchemeStats",
    "SpectrumSummary",
    "WatchLog",
    "WeightStats",
    "WidthAuditReport",
    "WidthRow",
    "WriteEvent",
    "__version__",
    "activation_name",
    "audit",
    "audit_plot",
    "audit_widths",
    "calculate_gain",
    "canonical_name",
    "check",
    "compute_std",
    "constant_",
    "delta_orthogonal_",
    "describe_layout",
    "digest",
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
    "model",
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
    "trunc_normal_",
    "truncated_normal_",
    "uniform_",
    "unregister_fans",
    "variance_scaling_",
    "watch",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]
