"""Policy and Rule: eager validation, matching, presets and JSON round trips."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import initwise
from initwise.policy import PRESETS, ROLES, Policy, Rule, get_policy, presets

P = importlib.import_module("initwise.model")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_round_trips_through_json(name: str) -> None:
    p = get_policy(name)
    assert p.name == name
    back = Policy.from_dict(json.loads(json.dumps(p.to_dict())))
    assert back == p
    assert back.describe() == p.describe()


def test_unknown_preset_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean 'kaiming'"):
        get_policy("kaiminng")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "xavier_unifrom"}, "did you mean 'xavier_uniform'"),
        ({"scheme": "zeros", "role": "biass"}, "did you mean 'bias'"),
        ({"scheme": "zeros", "fans": "tensors"}, "unknown fans"),
        ({"scheme": "zeros", "depth_scale": "gpt3"}, "unknown depth_scale"),
        ({"scheme": "zeros", "name": "re:(["}, "invalid regular expression"),
        ({"scheme": "normal", "params": {"sd": 1.0}}, "parameter for scheme"),
        ({"scheme": "auto", "params": {"distribution": "gaussian"}}, "unknown distribution"),
        ({"scheme": "forget_gate_bias", "params": {"val": 1}}, "parameter for action"),
        ({"scheme": "zeros", "scale": -1.0}, "scale must be"),
        ({"scheme": "zeros", "module": "not a class"}, "not a class name"),
    ],
)
def test_rule_validates_eagerly(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        Rule(**kwargs)


def test_policy_rejects_non_rules_and_bad_fields() -> None:
    with pytest.raises(TypeError, match="must be a Rule"):
        Policy(("zeros",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_layer"):
        Policy((Rule("keep"),), n_layer=0)
    with pytest.raises(ValueError, match="did you mean 'rules'"):
        Policy.from_dict({"rulez": []})


def test_matching_by_class_name_glob_regex_role() -> None:
    lin = nn.Linear(2, 2)
    assert Rule("zeros", module=nn.Linear).matches(lin, "a.weight", ("weight",))
    assert Rule("zeros", module="Module").matches(lin, "a.weight", ("weight",))  # any MRO class
    assert not Rule("zeros", module="Conv2d").matches(lin, "a.weight", ("weight",))
    assert Rule("zeros", name="*.c_proj.weight").matches(lin, "h.0.c_proj.weight", ("weight",))
    assert not Rule("zeros", name="*.c_proj.weight").matches(lin, "h.0.c_fc.weight", ("weight",))
    assert Rule("zeros", name=r"re:h\.[0-9]+\.").matches(lin, "x.h.12.w", ("weight",))
    assert Rule("zeros", role=("bias", "norm")).matches(lin, "b", ("norm",))
    assert not Rule("zeros", role="bias").matches(lin, "b", ("weight",))
    why = Rule("zeros", module="Linear", role="weight").why(lin, "w", ("residual_out", "weight"))
    assert why == "module is Linear, role weight"


def test_first_match_wins_and_unmatched_rules_reported() -> None:
    net = nn.Sequential(nn.Linear(3, 3))
    pol = Policy((Rule("ones", name="0.weight"), Rule("zeros", role="weight"),
                  Rule("zeros", role="embedding")))
    p = P.init(net, pol)
    assert torch.equal(net[0].weight, torch.ones(3, 3))
    assert p["0.weight"].rule == 0
    assert p["0.bias"].action == "keep"  # no rule: left to the module, and said so
    assert any("role=embedding" in u for u in p.unmatched_rules)
    with pytest.raises(ValueError, match="strict"):
        P.plan(net, pol.replace(strict=True))


def test_callable_rules_cannot_be_serialised() -> None:
    r = Rule(lambda t, **kw: t.zero_())
    with pytest.raises(TypeError, match="register_scheme"):
        r.to_dict()


def test_gpt2_preset_options() -> None:
    assert presets.gpt2(n_layer=12).n_layer == 12
    assert presets.fixup(branches=["a"]).branches == ("a",)
    assert "auto" in presets.names()


@settings(max_examples=40, deadline=None)
@given(
    roles=st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True),
    scale=st.floats(1e-6, 10, allow_nan=False),
    scheme=st.sampled_from(["zeros", "auto", "keep", "xavier_normal", "orthogonal"]),
    pattern=st.sampled_from([None, "*.weight", "re:^h\\."]),
)
def test_rule_round_trip_property(roles: list[str], scale: float, scheme: str, pattern: str | None) -> None:
    r = Rule(scheme, role=tuple(roles), scale=scale, name=pattern, module=("Linear", "Conv2d"))
    back = Rule.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r
    lin = nn.Linear(1, 1)
    for name in ("h.weight", "x.bias"):
        assert back.matches(lin, name, roles) == r.matches(lin, name, roles)


def test_registered_scheme_name_is_a_policy() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    p = initwise.init(m, "glorot_normal", seed=0)
    assert p["0.weight"].scheme == "glorot_truncated_normal"  # Keras's meaning (issue 15)
    assert p["0.bias"].scheme == "zeros"
    assert "match nothing" not in str(p) and "unmatched rule:" not in str(p)  # presets: no noise
    assert p.unmatched_rules  # still recorded in the data
    with pytest.raises(ValueError, match="needs parameter"):
        get_policy("sparse")
    with pytest.raises(ValueError, match="did you mean 'xavier_normal'"):
        get_policy("xavier_normall")


def test_rule_scale_zero_points_to_zeros_scheme() -> None:
    with pytest.raises(ValueError, match="use the 'zeros' scheme"):
        Rule("auto", scale=0.0)
