"""Literal types for string options, shared by the public API."""

from __future__ import annotations

from typing import Literal, get_args

FanMode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
Distribution = Literal["normal", "uniform", "truncated_normal"]
TorchFanMode = Literal["fan_in", "fan_out"]

FAN_MODES: tuple[str, ...] = get_args(FanMode)
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)
