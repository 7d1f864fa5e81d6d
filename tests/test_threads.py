"""Keyed schemes give the same bits at any thread count (issue 19, item 3).

Sizes are chosen where BLAS/LAPACK and torch's reductions do run threaded (>= 256x256: an
orthogonal 256x256 differed in 48,184 of 65,536 elements between 1 and 2 threads before the
linear algebra was pinned to one thread). Compared in-process with ``torch.set_num_threads``
1, 2 and 4, and against a subprocess started with ``OMP_NUM_THREADS=1`` (as torchrun does).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import initwise
from initwise import random as iwr

_SRC = str(Path(initwise.__file__).resolve().parents[1])


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def keyed_digests() -> dict[str, str]:
    """Digests of every keyed scheme whose arithmetic could depend on threads."""
    k = iwr.key(19, "threads")
    out: dict[str, str] = {}
    for shape in [(256, 256), (512, 512), (1024, 1024), (300, 700), (700, 300), (256, 4, 4, 4)]:
        t = initwise.orthogonal_(torch.empty(shape), gain=1.5, generator=k.child(str(shape)))
        out[f"orthogonal{shape}"] = _digest(t)
    t64 = initwise.orthogonal_(torch.empty(384, 384, dtype=torch.float64), generator=k.child("f64"))
    out["orthogonal-f64"] = _digest(t64)
    tbf = initwise.orthogonal_(torch.empty(320, 256, dtype=torch.bfloat16), generator=k.child("bf"))
    out["orthogonal-bf16"] = _digest(tbf)
    out["delta_orthogonal"] = _digest(
        initwise.delta_orthogonal_(torch.empty(384, 256, 3, 3), generator=k.child("delta")))
    gates = torch.empty(4 * 256, 256)  # LSTM weight_hh: one orthogonal block per gate
    for i in range(4):
        initwise.orthogonal_(gates[i * 256:(i + 1) * 256], generator=k.child(f"gate{i}"))
    out["gates"] = _digest(gates)
    out["sparse"] = _digest(initwise.sparse_(torch.empty(1024, 512), 0.7, generator=k.child("sp")))
    out["normal"] = _digest(iwr.normal_(torch.empty(1 << 20), k.child("n")))
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return keyed_digests()
    finally:
        torch.set_num_threads(prev)


@pytest.mark.parametrize("threads", [2, 4])
def test_same_bits_in_process(reference: dict[str, str], threads: int) -> None:
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = keyed_digests()
        assert torch.get_num_threads() == threads  # restored by the schemes
    finally:
        torch.set_num_threads(prev)
    assert got == reference


def test_same_bits_with_omp_num_threads_1(reference: dict[str, str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _SRC}
    here = str(Path(__file__).parent)
    code = (f"import json, sys; sys.path.insert(0, {here!r}); import test_threads as t; "
            "print(json.dumps(t.keyed_digests()))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == reference


def test_keyed_orthogonal_leaves_thread_setting_alone() -> None:
    prev = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        initwise.orthogonal_(torch.empty(64, 64), generator=iwr.key(0, "w"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(prev)
