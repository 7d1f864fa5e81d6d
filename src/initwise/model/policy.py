"""Policies: ordered rules that say how each parameter of a model is initialized.

A :class:`Policy` is an ordered list of :class:`Rule` s. For every parameter, the first rule
whose criteria all match wins. A rule matches on

- ``module``: the owning module's class (a class: ``isinstance``; a string: the name of any
  class in its MRO, e.g. ``"Linear"`` or ``"GPT2MLP"``; a tuple of those: any of them);
- ``name``: the qualified parameter name (``"transformer.h.0.mlp.c_proj.weight"``) against a
  glob pattern (``fnmatch``: ``"*.c_proj.weight"``), or a regular expression when the pattern
  starts with ``"re:"`` (``re.search``: ``"re:h\\.[0-9]+\\.attn"``);
- ``role``: what the parameter is (see :data:`ROLES`), found by :func:`initwise.plan`.

and names a *scheme*: a registry name with parameters (``"kaiming_normal"``,
``{"nonlinearity": "relu"}``; see :func:`initwise.schemes`) or a special action:

- ``"auto"``: variance-preserving ``N(0, g²/fan_in)`` (``distribution`` param: normal, uniform
  or truncated_normal) with layer-aware fans and ``g`` the exact gain of the nonlinearity on
  the layer's *input* side (1 for the first layer, fed raw data); ``stream_gain="branch"``:
  the first layer of a residual branch reading the stream itself (no activation or norm
  between) takes the gain of its branch's nonlinearity, He-style, as Fixup and ReZero do;
- ``"keep"``: leave the parameter to the module (its constructor / ``reset_parameters``);
- ``"forget_gate_bias"``: LSTM ``bias_ih``: 0 except the forget-gate block = ``value``
  (default 1; Jozefowicz et al. 2015); ``bias_hh``: 0 (torch adds the two biases);
- ``"inv_sqrt_uniform"``: ``U(±scale/sqrt(v))`` with ``v`` the fan_in of the module's weight
  tensor (``of="fan_in"``) or an integer attribute of the module (``of="hidden_size"``): the
  bound torch's own constructors use;
- ``"model_init"``: the model's own init code, run keyed: Hugging Face ``_init_weights`` of the
  innermost ``PreTrainedModel`` holding the tensor (called on the tensor's module and its
  ancestors, children first, as ``PreTrainedModel.initialize_weights`` does), or the module's
  ``reset_parameters()`` outside Hugging Face models; inside :func:`initwise.keyed_init`, so the
  values depend only on (seed, name, that code). Tensors outside the selection are left as
  they were.

``scale`` multiplies the drawn values; ``depth_scale`` adds a model-dependent factor:
``"gpt2"`` = ``1/sqrt(2·n_layer)`` (Radford et al. 2019), ``"fixup"`` =
``L^(-1/(2m-2))`` (Zhang et al. 2019), ``"small_init"`` = ``sqrt(2/(5·d))`` (Nguyen & Salazar
2019), ``"wang"`` = ``2/(n_layer·sqrt(d))`` (GPT-NeoX ``wang_init``) and ``"deepnet"`` =
``(8·n_layer)^(-1/4)`` (Wang et al. 2022), with ``d`` the model width (``config.hidden_size``,
``n_embd``, ``d_model``; else the embedding width). ``fans="tensor"`` uses the raw tensor fans and treats
stacked parameters as one tensor, exactly as ``torch.nn.init`` does; ``"module"`` (default)
uses :func:`initwise.fans` and initializes stacked gate/q-k-v blocks separately.

Every rule is validated when it is built, and policies round-trip through JSON:

>>> p = Policy([Rule("zeros", role="bias"), Rule("auto", role="weight")], name="mine")
>>> Policy.from_dict(p.to_dict()) == p
True
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Union, get_args

from torch import nn

from .._checks import check_choice, check_finite_positive, raise_unknown
from .._typing import DISTRIBUTIONS
from ..registry import get_scheme, resolve_scheme_name, scheme_names

__all__ = ["ACTIONS", "ROLES", "Policy", "Rule"]

Role = Literal[
    "weight",
    "bias",
    "norm",
    "norm_bias",
    "norm_stats",
    "embedding",
    "recurrent",
    "recurrent_input",
    "recurrent_bias",
    "branch",
    "residual_out",
    "residual_norm",
    "branch_end",
    "classifier",
    "gate",
    "scalar_bias",
    "scalar_scale",
    "tied_embedding",
    "position",
    "other",
]
ROLES: tuple[str, ...] = get_args(Role)
"""Every role a parameter can have. A parameter has a primary role and may have several
(e.g. ``("residual_out", "branch", "weight")``); a rule's ``role`` matches any of them.

- ``weight`` / ``bias``: ≥2-D weight and bias of a weight layer (Linear, Conv*, ConvTranspose*,
  Bilinear, MultiheadAttention projections, HF Conv1D, any module with a ≥2-D parameter);
- ``norm`` / ``norm_bias`` / ``norm_stats``: weight, bias and running statistics (buffers) of a
  normalization layer (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm, any class whose
  name contains ``Norm``);
- ``embedding``: the table of an ``Embedding``/``EmbeddingBag`` (or ``*Embedding*`` class);
- ``recurrent`` (``weight_hh*``), ``recurrent_input`` (``weight_ih*``, ``weight_hr*``),
  ``recurrent_bias`` (``bias_ih*``, ``bias_hh*``) of RNN/LSTM/GRU modules and cells;
- ``branch``: a weight inside a residual branch; ``residual_out``: the last weight layer of a
  residual branch (found by structure, or by name: ``c_proj``, ``o_proj``, ``out_proj``,
  ``down_proj``, ``dense`` inside a ``*Output`` module); ``residual_norm``: a norm weight after
  the last layer of a branch; ``branch_end``: what zeroes the branch (its ``residual_norm`` if
  there is one, else its ``residual_out`` weight);
- ``classifier``: the weight of the last ``nn.Linear`` (in execution order when known);
- ``gate``: a scalar (one-element) parameter such as ReZero's ``resweight``/``alpha``;
  ``scalar_bias`` / ``scalar_scale``: one-element parameters named ``bias*`` / ``scale*``
  (Fixup's ``bias1a``, ``scale``);
- ``tied_embedding``: an embedding table that is also the output head (GPT-2's ``wte`` /
  ``lm_head``; found in the forward pass's dataflow); it also has the role ``embedding``;
- ``position``: a table looked up by constant indices, not by the input (learned position
  embeddings, T5's relative attention bias; from the dataflow);
- ``other``: anything else (e.g. a ``pos_embed``/``cls_token`` tensor of a custom module, a
  state-space ``A_log``, a contrastive ``logit_scale``: tensors the dataflow shows are not
  used as weights).
"""

Action = Literal["auto", "keep", "forget_gate_bias", "inv_sqrt_uniform", "model_init"]
ACTIONS: tuple[str, ...] = get_args(Action)
FanSource = Literal["module", "tensor"]
DepthScale = Literal["none", "gpt2", "fixup", "small_init", "wang", "deepnet"]
_FAN_SOURCES: tuple[str, ...] = get_args(FanSource)
_DEPTH_SCALES: tuple[str, ...] = get_args(DepthScale)

_ACTION_PARAMS: dict[str, dict[str, Any]] = {
    "auto": {"distribution": "normal"},
    "keep": {},
    "forget_gate_bias": {"value": 1.0},
    "inv_sqrt_uniform": {"of": "fan_in", "scale": 1.0},
    "model_init": {},
}

ModuleSpec = Union[str, type, tuple[Union[str, type], ...], None]  # noqa: UP007
UserScheme = Callable[..., Any]


def _check_params(scheme: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``params`` for an action or a registry scheme; return the merged params."""
    if scheme in _ACTION_PARAMS:
        allowed = _ACTION_PARAMS[scheme]
        optional = {"stream_gain"} if scheme == "auto" else set()
        for k in params:
            if k not in allowed and k not in optional:
                raise_unknown(f"parameter for action {scheme!r}:", k, [*allowed, *optional])
        merged = {**allowed, **params}
        if scheme == "auto":

            check_choice("distribution", merged["distribution"], DISTRIBUTIONS)
            if "stream_gain" in merged:
                check_choice("stream_gain", merged["stream_gain"], ("exact", "branch"))
        elif scheme == "forget_gate_bias":
            v = float(merged["value"])
            if not math.isfinite(v):
                raise ValueError(f"forget_gate_bias: value must be finite, got {v}")
            merged["value"] = v
        elif scheme == "inv_sqrt_uniform":
            if not isinstance(merged["of"], str):
                raise TypeError("inv_sqrt_uniform: 'of' must be 'fan_in' or a module attribute name")
            merged["scale"] = check_finite_positive("scale", merged["scale"])
        return merged
    probe = {k: (1.0 if v == "auto" and k == "gain" else v) for k, v in params.items()}
    get_scheme(scheme, **probe)  # raises with the valid names / parameters
    return dict(params)


def _scheme_name(scheme: str) -> str:
    key = scheme.strip().lower().replace("-", "_")
    if key in ACTIONS:
        return key
    try:
        return resolve_scheme_name(key)
    except ValueError:
        raise_unknown("scheme or action", scheme, [*scheme_names(), *ACTIONS])


def _module_spec(module: ModuleSpec) -> tuple[str | type, ...] | None:
    if module is None:
        return None
    items = module if isinstance(module, tuple) else (module,)
    for m in items:
        if isinstance(m, str):
            if not m.isidentifier():
                raise ValueError(f"Rule.module: {m!r} is not a class name")
        elif not (isinstance(m, type) and issubclass(m, nn.Module)):
            raise TypeError(f"Rule.module must be nn.Module classes or class names, got {m!r}")
    return tuple(items)


def _compile_name(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"Rule.name must be a non-empty glob or 're:' pattern, got {pattern!r}")
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as err:
            raise ValueError(f"Rule.name: invalid regular expression {pattern[3:]!r}: {err}") from None
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True)
class Rule:
    """One line of a :class:`Policy`: criteria (module, name, role) and what to do.

    Args:
        scheme: a registry scheme name (``"xavier_uniform"``; aliases accepted), an action
            (:data:`ACTIONS`), or a callable ``fn(tensor, *, fans, generator)`` (not
            JSON-serialisable; it is dry-run before anything is written).
        params: the scheme's or action's parameters; ``gain="auto"`` is replaced by the exact
            input-side gain of the layer.
        module: class, class name or tuple of them; ``None`` matches any module.
        name: glob (or ``"re:"`` regex) on the qualified parameter name; ``None`` matches any.
        role: a role or tuple of roles (:data:`ROLES`); ``None`` matches any.
        fans: ``"module"`` (layer-aware fans, stacked blocks separately; a norm scale the
            forward applies as ``w + c`` is written as the rule's value minus ``c``) or
            ``"tensor"`` (raw tensor fans, whole tensor, the stored values, as torch does).
        scale: multiplies the values (``std``, bounds and means scale with it).
        depth_scale: ``"none"``, ``"gpt2"`` (× ``1/sqrt(2·n_layer)``), ``"fixup"``
            (× ``L^(-1/(2m-2))``), ``"small_init"`` (× ``sqrt(2/(5·d))``), ``"wang"``
            (× ``2/(n_layer·sqrt(d))``) or ``"deepnet"`` (× ``(8·n_layer)^(-1/4)``).
        note: free text shown in plans (paper, formula).

    >>> Rule("zeros", role="bias").matches(nn.Linear(2, 2), "fc.bias", ("bias",))
    True
    >>> Rule("zeros", role="biass")
    Traceback (most recent call last):
    ...
    ValueError: unknown role 'biass'; did you mean 'bias'? Valid options: ...
    """

    scheme: str | UserScheme
    params: Mapping[str, Any] = field(default_factory=dict)
    module: ModuleSpec = None
    name: str | None = None
    role: str | tuple[str, ...] | None = None
    fans: FanSource = "module"
    scale: float = 1.0
    depth_scale: DepthScale = "none"
    note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.scheme, str):
            scheme = _scheme_name(self.scheme)
            object.__setattr__(self, "scheme", scheme)
            params = _check_params(scheme, dict(self.params))
        elif callable(self.scheme):
            params = dict(self.params)
        else:
            raise TypeError(
                f"Rule.scheme must be a scheme name, an action ({', '.join(ACTIONS)}) or a "
                f"callable, got {type(self.scheme).__name__}"
            )
        object.__setattr__(self, "params", MappingProxyType(params))
        object.__setattr__(self, "module", _module_spec(self.module))
        _compile_name(self.name)
        if self.role is not None:
            roles = (self.role,) if isinstance(self.role, str) else tuple(self.role)
            for r in roles:
                check_choice("role", r, ROLES)
            object.__setattr__(self, "role", roles if len(roles) > 1 else roles[0])
        check_choice("fans", self.fans, _FAN_SOURCES)
        check_choice("depth_scale", self.depth_scale, _DEPTH_SCALES)
        if self.scale == 0:
            raise ValueError("Rule.scale must be > 0; use the 'zeros' scheme for zero-initialized tensors")
        object.__setattr__(self, "scale", check_finite_positive("Rule.scale", self.scale))
        if not isinstance(self.note, str):
            raise TypeError("Rule.note must be a string")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.to_dict(strict=False) == other.to_dict(strict=False)

    def __hash__(self) -> int:
        return hash(repr(self.to_dict(strict=False)))

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this rule matches (empty: any)."""
        if self.role is None:
            return ()
        return (self.role,) if isinstance(self.role, str) else tuple(self.role)

    @property
    def is_callable(self) -> bool:
        """Whether the scheme is a user callable (not JSON-serialisable, dry-run first)."""
        return not isinstance(self.scheme, str)

    def matches(self, module: nn.Module, name: str, roles: Sequence[str]) -> bool:
        """Whether this rule applies to parameter ``name`` of ``module`` with ``roles``."""
        return self.why(module, name, roles) is not None

    def why(self, module: nn.Module, name: str, roles: Sequence[str]) -> str | None:
        """Return a short explanation of the match, or ``None`` if the rule does not match."""
        parts: list[str] = []
        if self.module is not None:
            assert isinstance(self.module, tuple)
            mro = {c.__name__ for c in type(module).__mro__}
            hit = next(
                (m for m in self.module if (m in mro if isinstance(m, str) else isinstance(module, m))),
                None,
            )
            if hit is None:
                return None
            parts.append(f"module is {hit if isinstance(hit, str) else hit.__name__}")
        if self.name is not None:
            pat = _compile_name(self.name)
            assert pat is not None
            ok = pat.search(name) if self.name.startswith("re:") else pat.match(name)
            if not ok:
                return None
            parts.append(f"name ~ {self.name!r}")
        if self.roles:
            hit_role = next((r for r in roles if r in self.roles), None)
            if hit_role is None:
                return None
            parts.append(f"role {hit_role}")
        return ", ".join(parts) if parts else "catch-all"

    def describe(self) -> str:
        """One line: criteria -> scheme(params)."""
        crit = []
        if self.module is not None:
            assert isinstance(self.module, tuple)
            crit.append("module=" + "|".join(m if isinstance(m, str) else m.__name__ for m in self.module))
        if self.name is not None:
            crit.append(f"name={self.name}")
        if self.roles:
            crit.append("role=" + "|".join(self.roles))
        what = self.scheme if isinstance(self.scheme, str) else getattr(self.scheme, "__name__", "callable")
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        extra = ""
        if self.scale != 1.0:
            extra += f" x{self.scale:g}"
        if self.depth_scale != "none":
            extra += f" x{self.depth_scale}"
        return f"{' '.join(crit) or 'any'} -> {what}({args}){extra}"

    def to_dict(self, strict: bool = True) -> dict[str, Any]:
        """JSON-able dict; raises ``TypeError`` for callable schemes or classes unless ``strict=False``."""
        if self.is_callable:
            if strict:
                raise TypeError(
                    "a Rule with a callable scheme cannot be serialised; register it with "
                    "initwise.registry.register_scheme and use its name"
                )
            scheme: Any = f"<callable {getattr(self.scheme, '__name__', '?')} {id(self.scheme)}>"
        else:
            scheme = self.scheme
        mods: Any = None
        if self.module is not None:
            assert isinstance(self.module, tuple)
            mods = []
            for m in self.module:
                if isinstance(m, str):
                    mods.append(m)
                elif strict and m.__module__.split(".")[0] != "torch":
                    mods.append(m.__name__)
                else:
                    mods.append(m.__name__)
        return {
            "scheme": scheme,
            "params": dict(self.params),
            "module": mods,
            "name": self.name,
            "role": list(self.roles) or None,
            "fans": self.fans,
            "scale": self.scale,
            "depth_scale": self.depth_scale,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        """Rebuild (and validate) a rule from :meth:`to_dict`'s output.

        The dict is checked as JSON, strictly: every field has its JSON type (``scale`` a
        number, not ``"2"``; ``module`` / ``role`` a string or a list of strings, ...),
        ``scheme`` is required, and a wrong field is an error naming it.

        >>> Rule.from_dict({"scheme": "zeros", "role": "bias"}).describe()
        'role=bias -> zeros()'
        >>> Rule.from_dict({"role": "bias"})
        Traceback (most recent call last):
        ...
        ValueError: Rule: the field 'scheme' is required (a scheme name or an action: auto, keep, forget_gate_bias, inv_sqrt_uniform, model_init)
        """
        if not isinstance(d, Mapping):
            raise TypeError(
                f"a rule must be a JSON object with a 'scheme' field, e.g. "
                f'{{"scheme": "zeros", "role": "bias"}}; got {d!r} ({type(d).__name__})'
            )
        valid = {"scheme", "params", "module", "name", "role", "fans", "scale", "depth_scale", "note"}
        for k in d:
            if k not in valid:
                raise_unknown("Rule field", k, valid)
        if "scheme" not in d:
            raise ValueError(
                f"Rule: the field 'scheme' is required (a scheme name or an action: {', '.join(ACTIONS)})"
            )
        _json_type("Rule.scheme", d["scheme"], str)
        params = d.get("params")
        if params is not None:
            _json_type("Rule.params", params, Mapping)
        mod = _json_names("Rule.module", d.get("module"))
        role = _json_names("Rule.role", d.get("role"))
        for key in ("name", "fans", "depth_scale", "note"):
            if d.get(key) is not None:
                _json_type(f"Rule.{key}", d[key], str)
        scale = d.get("scale", 1.0)
        _json_number("Rule.scale", scale)
        return cls(
            scheme=d["scheme"],
            params=dict(params or {}),
            module=mod,
            name=d.get("name"),
            role=role,
            fans=d.get("fans") or "module",
            scale=scale,
            depth_scale=d.get("depth_scale") or "none",
            note=d.get("note") or "",
        )


_JSON_NAMES = {str: "a string", Mapping: "an object", list: "a list", bool: "true or false"}


def _json_type(field_name: str, value: object, kind: type) -> None:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(
            f"{field_name} must be {_JSON_NAMES.get(kind, kind.__name__)}, got {value!r} "
            f"({type(value).__name__})"
        )


def _json_number(field_name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{field_name} must be a number (e.g. 0.5), got {value!r} ({type(value).__name__}); "
            "strings are not converted"
        )


def _json_names(field_name: str, value: object) -> str | tuple[str, ...] | None:
    """A string or a list of strings (JSON has no tuples); ``None`` stays ``None``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(
        f"{field_name} must be a string or a list of strings, got {value!r} ({type(value).__name__})"
    )


@dataclass(frozen=True)
class Policy:
    """An ordered list of rules (first match wins) plus model-level options.

    Args:
        rules: the rules, most specific first.
        name: shown in plans.
        strict: raise when a rule matches no parameter (otherwise the plan lists it).
        n_layer: number of transformer blocks for ``depth_scale="gpt2"`` (default: inferred
            from ``model.config`` or the structure).
        branches: qualified module names that are residual branches (overrides detection).
        d_model: the model width for ``depth_scale="small_init"``/``"wang"`` (default:
            ``model.config.hidden_size`` / ``n_embd`` / ``d_model``, else the embedding width).
        fixup_scalars: ``init`` adds Fixup's scalar biases and multipliers to residual branches
            that lack them (:mod:`initwise.model.scalars`); ``plan`` lists them.

    >>> Policy([Rule("keep")]).describe().splitlines()[1]
    '  0. any -> keep()'
    """

    rules: tuple[Rule, ...]
    name: str = "custom"
    strict: bool = False
    n_layer: int | None = None
    branches: tuple[str, ...] | None = None
    d_model: int | None = None
    fixup_scalars: bool = False

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        for i, r in enumerate(rules):
            if not isinstance(r, Rule):
                raise TypeError(f"Policy.rules[{i}] must be a Rule, got {type(r).__name__}")
        object.__setattr__(self, "rules", rules)
        if self.n_layer is not None and (not isinstance(self.n_layer, int) or self.n_layer < 1):
            raise ValueError(f"Policy.n_layer must be a positive int, got {self.n_layer!r}")
        if self.d_model is not None and (not isinstance(self.d_model, int) or self.d_model < 1):
            raise ValueError(f"Policy.d_model must be a positive int, got {self.d_model!r}")
        if not isinstance(self.fixup_scalars, bool):
            raise TypeError(f"Policy.fixup_scalars must be True or False, got {self.fixup_scalars!r}")
        if self.branches is not None:
            if isinstance(self.branches, str):
                raise TypeError("Policy.branches must be a sequence of module names, not a string")
            object.__setattr__(self, "branches", tuple(self.branches))

    def with_rules(self, *rules: Rule, first: bool = True) -> Policy:
        """Return a copy with ``rules`` added before (default) or after the existing ones."""
        new = (*rules, *self.rules) if first else (*self.rules, *rules)
        return Policy(new, self.name, self.strict, self.n_layer, self.branches, self.d_model,
                      self.fixup_scalars)

    def replace(self, **changes: Any) -> Policy:
        """Return a copy with fields replaced (``strict``, ``n_layer``, ``branches``, ``name``,
        ``d_model``, ``fixup_scalars``)."""
        d = {"rules": self.rules, "name": self.name, "strict": self.strict,
             "n_layer": self.n_layer, "branches": self.branches, "d_model": self.d_model,
             "fixup_scalars": self.fixup_scalars, **changes}  # fmt: skip
        return Policy(**d)

    def describe(self) -> str:
        """A numbered listing of the rules."""
        lines = [f"Policy {self.name!r}" + (" (strict)" if self.strict else "")]
        lines += [f"  {i}. {r.describe()}" for i, r in enumerate(self.rules)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (see :meth:`from_dict`)."""
        return {
            "name": self.name,
            "strict": self.strict,
            "n_layer": self.n_layer,
            "branches": list(self.branches) if self.branches is not None else None,
            "rules": [r.to_dict() for r in self.rules],
            **({"d_model": self.d_model} if self.d_model is not None else {}),
            **({"fixup_scalars": True} if self.fixup_scalars else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """Rebuild (and validate) a policy from :meth:`to_dict`'s output.

        Checked as JSON, strictly: ``strict`` is ``true``/``false`` (not ``"false"``),
        ``branches`` a list of module names (not a string), ``rules`` a list of rule objects,
        ``n_layer`` a positive integer; a wrong field is an error naming it.

        >>> Policy.from_dict({"rules": [{"scheme": "keep"}], "strict": "false"})
        Traceback (most recent call last):
        ...
        TypeError: Policy.strict must be true or false, got 'false' (str)
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"a policy must be a JSON object with a 'rules' list, got {type(d).__name__}")
        valid = {"name", "strict", "n_layer", "branches", "rules", "d_model", "fixup_scalars"}
        for k in d:
            if k not in valid:
                raise_unknown("Policy field", k, valid)
        rules = d.get("rules", [])
        if not isinstance(rules, (list, tuple)):
            raise TypeError(
                f"Policy.rules must be a list of rule objects, e.g. "
                f'[{{"scheme": "zeros", "role": "bias"}}], got {rules!r} ({type(rules).__name__})'
            )
        built = []
        for i, r in enumerate(rules):
            try:
                built.append(Rule.from_dict(r))
            except (TypeError, ValueError) as err:
                raise type(err)(f"Policy.rules[{i}]: {err}") from None
        if d.get("name") is not None:
            _json_type("Policy.name", d["name"], str)
        strict = d.get("strict", False)
        _json_type("Policy.strict", strict, bool)
        fixup_scalars = d.get("fixup_scalars", False)
        _json_type("Policy.fixup_scalars", fixup_scalars, bool)
        n_layer = d.get("n_layer")
        if n_layer is not None and (isinstance(n_layer, bool) or not isinstance(n_layer, int)):
            raise TypeError(f"Policy.n_layer must be a positive integer or null, got {n_layer!r} ({type(n_layer).__name__})")
        b = d.get("branches")
        if b is not None and (not isinstance(b, (list, tuple)) or not all(isinstance(x, str) for x in b)):
            raise TypeError(
                f"Policy.branches must be a list of qualified module names (strings) or null, got "
                f"{b!r} ({type(b).__name__})"
            )
        return cls(
            rules=tuple(built),
            name=d.get("name") or "custom",
            strict=strict,
            n_layer=n_layer,
            branches=tuple(b) if b is not None else None,
            d_model=d.get("d_model"),
            fixup_scalars=fixup_scalars,
        )
