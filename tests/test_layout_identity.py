"""Behaviour is bit-identical across the layout change (issue 12).

The digests in ``tests/data/golden_digests.json`` were recorded at 951d2ee, before the model
layer, LSUV and audit were reorganized: for every built-in preset on eight models (MLP, ResNet
with BN and grouped convs, stacked LSTM/GRU, torch Transformer, weight-normed MLP, HF GPT-2,
LLaMA and BERT built from configs) the plan's JSON and the bytes of every tensor ``init``
writes, the weights after ``lsuv`` and after ``materialize`` of meta models. A digest that
changes on purpose (a fix) is re-recorded in the same commit, with the reason in its message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import _golden_models as golden

GOLD = json.loads((Path(__file__).parent / "data" / "golden_digests.json").read_text())


@pytest.fixture(scope="module")
def current() -> dict[str, str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recorded run used one thread
    try:
        with _quiet():
            return golden.digests()
    finally:
        torch.set_num_threads(threads)


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


@pytest.mark.parametrize("key", sorted(GOLD))
def test_digest_unchanged(current: dict[str, str], key: str) -> None:
    if GOLD[key] == "unavailable" or current[key] == "unavailable":
        pytest.skip("transformers not importable")
    assert current[key] == GOLD[key]
