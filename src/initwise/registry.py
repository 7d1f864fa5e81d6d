"""The scheme registry: names, aliases, validated parameters and JSON configs.

>>> s = get_scheme("he").with_params(nonlinearity="relu")
>>> s.name, s.params["nonlinearity"]
('kaiming_normal', 'relu')
>>> get_scheme("he_normal").name  # Keras/JAX: a truncated normal
'he_truncated_normal'
>>> Scheme.from_config(s.to_config()) == s
True
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from . import _schemes as _s
from ._checks import check_choice, check_finite_positive, raise_unknown
from ._fans import Fans
from ._math import (
    compute_std,
    select_fan,
    shape_fans,
    trunc_normal_moments,
    uniform_bound,
)
from ._typing import DISTRIBUTIONS, FAN_MODES
from .gains import kaiming_gain
from .theory import check_critical, critical_, critical_sigma_w2

__all__ = ["Scheme", "SchemeStats", "get_scheme", "register_scheme", "schemes"]


@dataclass(frozen=True)
class SchemeStats:
    """What a scheme draws for a given shape: distribution, mean, std and uniform bound.

    ``std`` is the standard deviation of the values (``None`` for deterministic structured
    schemes such as ``eye``); ``bound`` is set for uniform draws (``U(-bound, bound)`` around
    ``mean``).
    """

    distribution: str
    mean: float
    std: float | None
    bound: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"distribution": self.distribution, "mean": self.mean, "std": self.std, "bound": self.bound}


_StatsFn = Callable[[tuple[int, ...], Fans, Mapping[str, Any]], SchemeStats]


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: Callable[..., torch.Tensor]
    stats: _StatsFn
    aliases: tuple[str, ...] = ()
    uses_fans: bool = False
    paper: str = ""
    formula: str = ""


_REGISTRY: dict[str, _Entry] = {}
_ALIASES: dict[str, str] = {}


def _signature_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """Parameters of an in-place scheme other than tensor, generator and fans, with defaults."""
    out: dict[str, Any] = {}
    for p in list(inspect.signature(fn).parameters.values())[1:]:
        if p.name in ("generator", "fans", "in_axis", "out_axis", "batch_axis"):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def register_scheme(
    name: str,
    fn: Callable[..., torch.Tensor],
    stats: _StatsFn,
    *,
    aliases: tuple[str, ...] = (),
    paper: str = "",
    formula: str = "",
) -> None:
    """Register an in-place scheme ``fn(tensor, ..., generator=None)`` under ``name``.

    ``stats(shape, fans, params)`` must return the :class:`SchemeStats` the scheme draws, so
    that plans can show it without touching a tensor.
    """
    if name in _REGISTRY or name in _ALIASES:
        raise ValueError(f"scheme {name!r} is already registered")
    uses_fans = "fans" in inspect.signature(fn).parameters
    _REGISTRY[name] = _Entry(name, fn, stats, aliases, uses_fans, paper, formula)
    for a in aliases:
        _ALIASES[a] = name


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"scheme name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise_unknown("scheme", name, list(_REGISTRY) + list(_ALIASES))


def _validate(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    entry = _REGISTRY[name]
    allowed = _signature_params(entry.fn)
    for k in params:
        if k not in allowed:
            raise_unknown(f"parameter for scheme {name!r}:", k, allowed)
    merged = {**allowed, **params}
    missing = [k for k, v in merged.items() if v is None and k not in ("gain",)]
    if missing:
        raise ValueError(f"scheme {name!r} needs parameter(s) {', '.join(missing)}")
    if "mode" in merged:
        modes = ("fan_in", "fan_out") if name.startswith("kaiming") else FAN_MODES
        check_choice("mode", merged["mode"], modes)
    if "distribution" in merged:
        check_choice("distribution", merged["distribution"], DISTRIBUTIONS)
    if "nonlinearity" in merged:

        kaiming_gain(merged["nonlinearity"], merged.get("a", 0), where=f"scheme {name!r}")
    for k in ("scale", "std"):
        if k in merged:
            check_finite_positive(k, merged[k], allow_zero=(k == "std" and name == "normal"))
    if merged.get("gain") is not None:
        check_finite_positive("gain", merged["gain"], allow_zero=name in ("orthogonal", "delta_orthogonal"))
    if name == "critical":
        check_critical(merged["activation"], merged["sigma_b2"])
    if "sparsity" in merged and not 0.0 <= float(merged["sparsity"]) <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {merged['sparsity']!r}")
    if name in ("uniform",) and not float(merged["a"]) <= float(merged["b"]):
        raise ValueError(f"uniform: need a <= b, got a={merged['a']}, b={merged['b']}")
    if name == "trunc_normal" and not float(merged["a"]) <= float(merged["b"]):
        raise ValueError(f"{name}: need a <= b, got a={merged['a']}, b={merged['b']}")
    if name == "truncated_normal" and not float(merged["a"]) < float(merged["b"]):
        raise ValueError(f"{name}: need a < b, got a={merged['a']}, b={merged['b']}")
    for k, v in merged.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"scheme {name!r}: parameter {k} must be finite, got {v}")
    return merged


@dataclass(frozen=True)
class Scheme:
    """A registered scheme with bound, validated parameters.

    Call it on a tensor (``scheme(tensor, fans=..., generator=...)``), ask what it would draw
    (:meth:`describe`), or round-trip it through JSON (:meth:`to_config` /
    :meth:`from_config`).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        canonical = _canonical(self.name)
        object.__setattr__(self, "name", canonical)
        object.__setattr__(self, "params", MappingProxyType(_validate(canonical, dict(self.params))))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scheme) and self.name == other.name and dict(self.params) == dict(other.params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted((k, repr(v)) for k, v in self.params.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Scheme({self.name}: {args})"

    @property
    def fn(self) -> Callable[..., torch.Tensor]:
        return _REGISTRY[self.name].fn

    @property
    def uses_fans(self) -> bool:
        """Whether the scheme's scale depends on the tensor's fans."""
        return _REGISTRY[self.name].uses_fans

    @property
    def paper(self) -> str:
        return _REGISTRY[self.name].paper

    @property
    def formula(self) -> str:
        return _REGISTRY[self.name].formula

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    def with_params(self, **params: Any) -> Scheme:
        """Return a copy with some parameters replaced (validated)."""
        return Scheme(self.name, {**self.params, **params})

    def __call__(
        self,
        tensor: torch.Tensor,
        *,
        fans: Fans | tuple[float, float] | None = None,
        generator: Any = None,
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {k: v for k, v in self.params.items() if v is not None or k != "gain"}
        if self.uses_fans and fans is not None:
            kwargs["fans"] = fans
        if "generator" in inspect.signature(self.fn).parameters:
            kwargs["generator"] = generator
        return self.fn(tensor, **kwargs)

    def describe(self, shape: tuple[int, ...] | torch.Size, fans: Fans | tuple[float, float] | None = None) -> SchemeStats:
        """Return what the scheme draws for a tensor of ``shape`` (and optional fans override)."""
        shape = tuple(int(s) for s in shape)
        if fans is None:
            f = Fans(*shape_fans(shape)) if len(shape) >= 2 else Fans(float("nan"), float("nan"))
        else:
            f = Fans(float(fans[0]), float(fans[1]))
        return _REGISTRY[self.name].stats(shape, f, self.params)

    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable ``{"name": ..., "params": {...}}``."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Scheme:
        """Rebuild a scheme from :meth:`to_config`'s output (validated)."""
        if not isinstance(config, Mapping) or "name" not in config:
            raise ValueError(f"scheme config must be a mapping with a 'name', got {config!r}")
        extra = set(config) - {"name", "params"}
        if extra:
            raise ValueError(f"unknown scheme config keys {sorted(extra)}; valid: name, params")
        return cls(config["name"], dict(config.get("params") or {}))


_EXAMPLE_VALUES = {"sparsity": 0.9, "val": 0.0}


def schemes() -> list[Scheme]:
    """List every registered scheme with its default parameters.

    Parameters without a default get an example value (``sparse``: sparsity 0.9;
    ``constant``: val 0.0).

    >>> [s.name for s in schemes()][:3]
    ['uniform', 'normal', 'trunc_normal']
    """
    out = []
    for name, entry in _REGISTRY.items():
        defaults = _signature_params(entry.fn)
        params = {k: _EXAMPLE_VALUES.get(k, v) for k, v in defaults.items() if v is not None or k in _EXAMPLE_VALUES}
        out.append(Scheme(name, params))
    return out


def get_scheme(name: str, **params: Any) -> Scheme:
    """Resolve a scheme by name or alias (``glorot_uniform`` = ``xavier_uniform``, ``he`` = ``kaiming_normal``).

    Keras's and JAX's names mean what they mean there: ``glorot_normal`` and ``he_normal`` are
    truncated normals (``glorot_truncated_normal``, ``he_truncated_normal``); torch's plain
    normals are ``xavier_normal`` and ``kaiming_normal``. (``lecun_normal`` is initwise's plain
    normal; Keras's is ``lecun_truncated_normal``. See ``docs/dropin.md``.)

    >>> get_scheme("glorot_normal").name
    'glorot_truncated_normal'
    """
    return Scheme(name, params)


def resolve_scheme_name(name: str) -> str:
    """The canonical name of a scheme name or alias (parameters are not checked).

    >>> resolve_scheme_name("He-Uniform")
    'kaiming_uniform'
    """
    return _canonical(name)


def scheme_names() -> list[str]:
    """All registered names and aliases."""
    return sorted([*_REGISTRY, *_ALIASES])


# ---------------------------------------------------------------------------------------------
# Statistics of each built-in scheme.
# ---------------------------------------------------------------------------------------------


def _vs_stats(scale: float, mode: str, distribution: str, f: Fans) -> SchemeStats:
    std = compute_std(scale, select_fan(f.fan_in, f.fan_out, mode))
    if distribution == "uniform":
        return SchemeStats("uniform", 0.0, std, uniform_bound(std))
    return SchemeStats(distribution, 0.0, std)


def _kaiming_gain(p: Mapping[str, Any]) -> float:
    if p.get("gain") is not None:
        return float(p["gain"])

    return float(kaiming_gain(p["nonlinearity"], p["a"]))


def _orth_std(shape: tuple[int, ...], gain: float) -> float:
    rows = shape[0]
    cols = math.prod(shape[1:])
    return gain / math.sqrt(max(rows, cols))


def _trunc_stats(p: Mapping[str, Any]) -> SchemeStats:
    mean, std = float(p["mean"]), float(p["std"])
    m, s = trunc_normal_moments((float(p["a"]) - mean) / std, (float(p["b"]) - mean) / std)
    return SchemeStats("truncated_normal", mean + std * m, std * s)


def _truncated_stats(p: Mapping[str, Any]) -> SchemeStats:
    m, s = trunc_normal_moments(float(p["a"]), float(p["b"]))
    parent = float(p["std"]) / s
    return SchemeStats("truncated_normal", float(p["mean"]) + parent * m, float(p["std"]))


def _register_builtins() -> None:
    def u_stats(shape: tuple[int, ...], f: Fans, p: Mapping[str, Any]) -> SchemeStats:
        a, b = float(p["a"]), float(p["b"])
        return SchemeStats("uniform", (a + b) / 2, (b - a) / math.sqrt(12.0), (b - a) / 2)

    register_scheme(
        "uniform", _s.uniform_, u_stats, paper="", formula="U(a, b)"
    )
    register_scheme(
        "normal",
        _s.normal_,
        lambda shape, f, p: SchemeStats("normal", float(p["mean"]), float(p["std"])),
        formula="N(mean, std²)",
    )
    register_scheme(
        "trunc_normal",
        _s.trunc_normal_,
        lambda shape, f, p: _trunc_stats(p),
        formula="N(mean, std²) truncated to [a, b] (absolute bounds, std of the parent)",
    )
    register_scheme(
        "truncated_normal",
        _s.truncated_normal_,
        lambda shape, f, p: _truncated_stats(p),
        formula="N(mean, σp²) truncated to mean + [a, b]·σp, σp set so the final std is `std`",
    )
    register_scheme(
        "constant",
        _s.constant_,
        lambda shape, f, p: SchemeStats("constant", float(p["val"]), 0.0),
        formula="val",
    )
    register_scheme("ones", _s.ones_, lambda shape, f, p: SchemeStats("constant", 1.0, 0.0), formula="1")
    register_scheme("zeros", _s.zeros_, lambda shape, f, p: SchemeStats("constant", 0.0, 0.0), formula="0")
    register_scheme(
        "eye", _s.eye_, lambda shape, f, p: SchemeStats("identity", 0.0, None), formula="I", aliases=("identity",)
    )
    register_scheme(
        "dirac", _s.dirac_, lambda shape, f, p: SchemeStats("dirac", 0.0, None), formula="δ (identity convolution)"
    )
    register_scheme(
        "variance_scaling",
        _s.variance_scaling_,
        lambda shape, f, p: _vs_stats(float(p["scale"]), p["mode"], p["distribution"], f),
        formula="std = sqrt(scale / fan(mode)); uniform bound sqrt(3)·std",
        paper="JAX/Keras variance_scaling (general form)",
    )
    glorot = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
    register_scheme(
        "xavier_uniform",
        _s.xavier_uniform_,
        lambda shape, f, p: _vs_stats(float(p["gain"]) ** 2, "fan_avg", "uniform", f),
        aliases=("glorot_uniform", "xavier", "glorot"),
        paper=glorot,
        formula="U(±gain·sqrt(6 / (fan_in + fan_out)))",
    )
    register_scheme(
        "xavier_normal",
        _s.xavier_normal_,
        lambda shape, f, p: _vs_stats(float(p["gain"]) ** 2, "fan_avg", "normal", f),
        paper=glorot,
        formula="N(0, gain²·2 / (fan_in + fan_out))",
    )
    register_scheme(
        "glorot_truncated_normal",
        _s.glorot_truncated_normal_,
        lambda shape, f, p: _vs_stats(1.0, "fan_avg", "truncated_normal", f),
        aliases=("glorot_normal",),
        paper=glorot + " (Keras/JAX glorot_normal)",
        formula="truncated N (±2 parent stds), variance 2 / (fan_in + fan_out)",
    )
    he = "He et al. 2015, Delving Deep into Rectifiers"
    register_scheme(
        "kaiming_uniform",
        _s.kaiming_uniform_,
        lambda shape, f, p: _vs_stats(_kaiming_gain(p) ** 2, p["mode"], "uniform", f),
        aliases=("he_uniform",),
        paper=he,
        formula="U(±gain·sqrt(3 / fan_mode))",
    )
    register_scheme(
        "kaiming_normal",
        _s.kaiming_normal_,
        lambda shape, f, p: _vs_stats(_kaiming_gain(p) ** 2, p["mode"], "normal", f),
        aliases=("kaiming", "he"),
        paper=he,
        formula="N(0, gain² / fan_mode)",
    )
    register_scheme(
        "he_truncated_normal",
        _s.he_truncated_normal_,
        lambda shape, f, p: _vs_stats(2.0, "fan_in", "truncated_normal", f),
        aliases=("he_normal",),
        paper=he + " (Keras/JAX he_normal)",
        formula="truncated N (±2 parent stds), variance 2 / fan_in",
    )
    lecun = "LeCun et al. 1998, Efficient BackProp"
    register_scheme(
        "lecun_uniform",
        _s.lecun_uniform_,
        lambda shape, f, p: _vs_stats(1.0, "fan_in", "uniform", f),
        paper=lecun,
        formula="U(±sqrt(3 / fan_in))",
    )
    register_scheme(
        "lecun_normal",
        _s.lecun_normal_,
        lambda shape, f, p: _vs_stats(1.0, "fan_in", "normal", f),
        aliases=("lecun",),
        paper=lecun + "; Klambauer et al. 2017 (SELU)",
        formula="N(0, 1 / fan_in)",
    )
    register_scheme(
        "lecun_truncated_normal",
        _s.lecun_truncated_normal_,
        lambda shape, f, p: _vs_stats(1.0, "fan_in", "truncated_normal", f),
        paper=lecun + "; Klambauer et al. 2017 (Keras/JAX lecun_normal)",
        formula="truncated N (±2 parent stds), variance 1 / fan_in",
    )
    register_scheme(
        "orthogonal",
        _s.orthogonal_,
        lambda shape, f, p: SchemeStats("orthogonal", 0.0, _orth_std(shape, float(p["gain"]))),
        paper="Saxe et al. 2013, Exact solutions to the nonlinear dynamics of learning in deep linear networks",
        formula="gain·Q, Q Haar-orthogonal (rows×prod(rest)); variance gain²/max(rows, cols)",
    )
    register_scheme(
        "delta_orthogonal",
        _s.delta_orthogonal_,
        lambda shape, f, p: SchemeStats(
            "delta_orthogonal", 0.0, float(p["gain"]) / math.sqrt(shape[0] * math.prod(shape[2:]))
        ),
        paper="Xiao et al. 2018, Dynamical Isometry and a Mean Field Theory of CNNs",
        formula="W[:, :, centre] = gain·Q (out×in orthonormal columns), 0 elsewhere",
    )

    def sparse_stats(shape: tuple[int, ...], f: Fans, p: Mapping[str, Any]) -> SchemeStats:
        rows = shape[0]
        keep = 1.0 - math.ceil(float(p["sparsity"]) * rows) / rows
        return SchemeStats("sparse_normal", 0.0, float(p["std"]) * math.sqrt(keep))

    register_scheme(
        "sparse",
        _s.sparse_,
        sparse_stats,
        paper="Martens 2010, Deep learning via Hessian-free optimization",
        formula="N(0, std²) with ceil(sparsity·rows) zeros per column",
    )


_register_builtins()


def _critical_stats(shape: tuple[int, ...], f: Fans, p: Mapping[str, Any]) -> SchemeStats:
    if len(shape) < 2 and not math.isfinite(f.fan_in):  # a bias
        return SchemeStats("normal", 0.0, math.sqrt(float(p["sigma_b2"])))
    sw2 = critical_sigma_w2(p["activation"], float(p["sigma_b2"]))
    return _vs_stats(sw2, "fan_in", "normal", f)


register_scheme(
    "critical",
    critical_,
    _critical_stats,
    aliases=("edge_of_chaos",),
    paper="Schoenholz et al. 2017, Deep Information Propagation",
    formula="W ~ N(0, σ_w²/fan_in) with χ₁(σ_w², σ_b²) = 1 for the activation; bias ~ N(0, σ_b²)",
)
