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
import initwise

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


LAPACK = json.loads((Path(__file__).parent / "data" / "golden_digests_lapack.json").read_text())


def test_orthogonal_method_lapack_reproduces_the_digests_before_the_float32_kernel() -> None:
    """The keyed float32 orthogonal kernel (2026-12-05) changed the digests of everything that
    draws a keyed orthogonal matrix (the orthogonal preset, recurrent weight_hh, LSUV's
    pre-init); ``tests/data/golden_digests_lapack.json`` holds those digests as they were, and
    ``use_orthogonal_method("lapack")`` reproduces every one of them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _quiet(), initwise.random.use_orthogonal_method("lapack"):
            old = golden.digests()
    finally:
        torch.set_num_threads(threads)
    assert LAPACK and set(LAPACK) <= set(old)
    for key, want in LAPACK.items():
        if want != "unavailable" and old[key] != "unavailable":
            assert old[key] == want, key
            assert GOLD[key] != want, key  # the default method's digest is the new one
