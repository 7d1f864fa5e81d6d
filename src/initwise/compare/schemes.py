"""Apply an init scheme by name to a freshly built model: the only place compare touches init.

Names are ``"torch"`` (PyTorch's default init, i.e. leave the model as constructed),
``"lsuv"`` (:func:`initwise.lsuv` on a batch of training inputs), every whole-model policy
preset (``"kaiming"``, ``"xavier"``, ``"auto"``, ``"orthogonal"``, ``"fixup"`` ...) and every
registered fan-based or orthogonal scheme (``"xavier_normal"``, ``"he_uniform"`` ..., applied to
every weight through ``initwise.presets.scheme``).

A name may carry parameters, ``name:key=value,key=value`` (values parsed as int, float, bool or
string): ``"normal:std=0.01"`` (any registered scheme, applied to every weight),
``"variance_scaling:scale=2,mode=fan_in"``, ``"critical:activation=tanh"``, a preset's options
(``"gpt2:n_layer=12"``) or LSUV's keyword arguments (``"lsuv:tol=0.01"``). The spec string is the
scheme's label in the results.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["apply_scheme", "check_scheme_for_model", "check_schemes", "parse_scheme", "policy_of", "scheme_names",
           "split_schemes"]

def scheme_names() -> tuple[str, ...]:
    """Return every name :func:`apply_scheme` accepts, ``torch`` and ``lsuv`` first.

    Example:
        >>> {"torch", "lsuv", "kaiming", "xavier", "xavier_normal"} <= set(scheme_names())
        True
    """
    from ..policy import PRESETS
    from ..registry import resolve_scheme_name, schemes
    from ..registry import scheme_names as registered

    # every registered name or alias of a fan-based or orthogonal scheme (applied to each weight)
    ok = {s.name for s in schemes() if (s.uses_fans or s.name == "orthogonal")}
    usable = [n for n in registered() if resolve_scheme_name(n) in ok]
    return tuple(dict.fromkeys(["torch", "lsuv", *PRESETS, *usable]))


def _value(v: str) -> Any:
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v.strip()


def parse_scheme(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name:key=value,..."`` into the name and its parameters.

    Example:
        >>> parse_scheme("variance_scaling:scale=2,mode=fan_in")
        ('variance_scaling', {'scale': 2, 'mode': 'fan_in'})
        >>> parse_scheme("kaiming")
        ('kaiming', {})
    """
    name, sep, rest = spec.partition(":")
    params: dict[str, Any] = {}
    if sep:
        for item in filter(None, (t.strip() for t in rest.split(","))):
            k, eq, v = item.partition("=")
            if not eq or not k.strip():
                raise ValueError(f"scheme {spec!r}: parameter {item!r} must look like key=value")
            params[k.strip()] = _value(v)
        if not params:
            raise ValueError(f"scheme {spec!r}: no parameters after ':'")
    return name.strip(), params


def split_schemes(text: str) -> list[str]:
    """Split a comma-separated list of scheme specs, keeping ``key=value`` items with their
    scheme.

    Example:
        >>> split_schemes("torch,normal:std=0.01,variance_scaling:scale=2,mode=fan_in,kaiming")
        ['torch', 'normal:std=0.01', 'variance_scaling:scale=2,mode=fan_in', 'kaiming']
    """
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if out and ":" in out[-1] and "=" in item and ":" not in item:
            out[-1] += "," + item
        else:
            out.append(item)
    return out


def _policy_for(name: str, params: dict[str, Any]) -> Any:
    """The policy of a parametrized spec (validated): a preset's options or a scheme's params."""
    import initwise

    from ..policy import PRESETS

    if name in PRESETS:
        try:
            return getattr(initwise.presets, name)(**params)
        except TypeError as e:
            raise ValueError(f"scheme {name!r}: {e}") from None
    return initwise.presets.scheme(name, **params)


#: LSUV options a scheme spec cannot set: the run's seed comes from ``--seeds``, and these
#: take Python callables or mappings.
_LSUV_NOT_IN_SPEC = {"seed": "the seed is set per run from --seeds",
                     "input_fn": "it takes a Python callable",
                     "progress": "it takes a Python callable",
                     "custom_layers": "it takes a Python mapping of layer types"}


def _check_lsuv_values(spec: str, params: dict[str, Any]) -> None:
    """Refuse LSUV options a spec cannot set, and check the others' values by running LSUV
    on a tiny probe model (``only=`` names layers of the real model, so it is checked there).
    """
    import warnings

    import initwise

    for k, why in _LSUV_NOT_IN_SPEC.items():
        if k in params:
            raise ValueError(f"scheme {spec!r}: lsuv's {k!r} cannot be set here ({why})")
    probe = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            initwise.lsuv(probe, x, **{k: v for k, v in params.items() if k != "only"})
    except (ValueError, TypeError) as e:
        raise ValueError(f"scheme {spec!r}: {e}") from None


def check_schemes(names: Iterable[str]) -> list[str]:
    """Validate ``names`` (unique, all known; parametrized specs built once) and return them.

    Raises ``ValueError`` listing the valid options for an unknown name.
    """
    valid = scheme_names()
    out: list[str] = []
    for n in names:
        if ":" in n:
            base, params = parse_scheme(n)
            if base == "torch":
                raise ValueError("scheme 'torch' takes no parameters")
            if base == "lsuv":
                import inspect

                import initwise

                allowed = [k for k in inspect.signature(initwise.lsuv).parameters
                           if k not in ("model", "inputs")]
                for k in params:
                    if k not in allowed:
                        from .._checks import raise_unknown

                        raise_unknown("parameter for lsuv:", k, allowed)
                _check_lsuv_values(n, params)
            else:
                from ..registry import scheme_names as registered

                if base not in valid and base not in registered():
                    from .._checks import raise_unknown

                    raise_unknown("scheme", base, [*valid, *registered()])
                _policy_for(base, params)
            if n not in out:
                out.append(n)
            continue
        if n not in valid:
            from .._checks import raise_unknown

            raise_unknown("scheme", n, valid)
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no schemes given")
    return out


def policy_of(spec: str) -> Any:
    """The ``initwise.init`` policy of a scheme spec: the name itself, or for
    ``"name:key=value,..."`` the validated policy it builds (``lsuv`` and ``torch`` are not
    policies; :func:`apply_scheme` applies them).

    Example:
        >>> policy_of("kaiming")
        'kaiming'
        >>> type(policy_of("normal:std=0.01")).__name__
        'Policy'
    """
    check_schemes([spec])
    if ":" not in spec:
        return spec
    base, params = parse_scheme(spec)
    if base == "lsuv":
        raise ValueError(f"scheme {spec!r}: LSUV calibrates on data; it has no init plan")
    return _policy_for(base, params)


def _to_dict(obj: Any) -> Any:
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        try:
            return to_dict()
        except Exception:  # a report that cannot serialize must not sink the comparison
            return {"repr": repr(obj)[:2000]}
    return None


def check_scheme_for_model(name: str, model: nn.Module) -> None:
    """Raise ``ValueError`` before any training when ``name`` cannot apply to ``model``: an
    ``lsuv:only=`` name that selects none of its LSUV layers (every run would fail).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> check_scheme_for_model("lsuv:only=2", m)
        >>> check_scheme_for_model("lsuv:only=1", m)
        Traceback (most recent call last):
        ...
        ValueError: unknown layer name in only= '1'. Valid options: 0, 0.weight, 2, 2.weight.
    """
    from .._lsuv.units import _discover, _select

    base, params = parse_scheme(name) if ":" in name else (name, {})
    if base != "lsuv" or "only" not in params:
        return
    # the very selection lsuv makes: its layers and their weights, not activations or biases
    _select(_discover(model, {}, []), str(params["only"]))


def apply_scheme(model: nn.Module, name: str,
                 inputs: torch.Tensor | tuple[Any, ...] | dict[str, Any] | None, *, seed: int = 0
                 ) -> dict[str, Any]:  # fmt: skip
    """Initialize ``model`` in place with the scheme ``name``; return a JSON-able record.

    ``inputs`` is a batch of training inputs (a tensor, positional tuple or keyword dict), used
    by data-dependent schemes such as LSUV and by ``initwise.init`` as example inputs (``None``:
    ``init`` synthesizes its own).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> apply_scheme(m, "torch", torch.zeros(3, 4))["backend"]
        'torch'
    """
    check_schemes([name])
    if name == "torch":
        return {"scheme": name, "backend": "torch"}
    import initwise

    if ":" in name:
        base, params = parse_scheme(name)
        if base == "lsuv":
            if "only" in params:  # a layer name: "lsuv:only=1" means layer '1', not the int 1
                params = {**params, "only": str(params["only"])}
            rep = initwise.lsuv(model, inputs, seed=seed, **params)
            return {"scheme": name, "backend": "initwise.lsuv", "params": params,
                    "details": _to_dict(rep)}
        plan = initwise.init(model, policy=_policy_for(base, params), example_inputs=inputs,
                             seed=seed)
        return {"scheme": name, "backend": "initwise.init", "params": params,
                "details": _to_dict(plan)}
    if name == "lsuv":
        rep = initwise.lsuv(model, inputs, seed=seed)
        return {"scheme": name, "backend": "initwise.lsuv", "details": _to_dict(rep)}
    plan = initwise.init(model, policy=name, example_inputs=inputs, seed=seed)
    return {"scheme": name, "backend": "initwise.init", "details": _to_dict(plan)}
