"""PyTorch's own ``test/nn/test_init.py``, run against initwise by changing only its import.

The test file is PyTorch's (BSD-3-Clause; see ``tests/upstream/README.md``) and is not
vendored: put a copy at ``tests/upstream/test_init.py`` or point ``INITWISE_TORCH_TEST_INIT``
at one. The one line ``import torch.nn.init as init`` becomes ``import initwise as init``;
nothing else changes. Each deviation from the upstream results is a documented decision
(``docs/dropin.md``) with a test of its own in ``tests/test_dropin_torch.py``.

Deviations (marked xfail here, strictly, so a change in behaviour is noticed):

- ``test_trunc_normal_generator`` KS-tests 5 draws of ``trunc_normal_(a=-2, b=2)`` against a
  normal truncated to ``[0, 1]``; torch's particular values for seed 42 happen to pass.
  initwise samples by inverse CDF in float64 (exact in the tails), so its values differ from
  torch's and three of the five are negative. The part of the test that is about generators
  (the same seed through ``generator=`` and the global generator gives the same values) holds;
  ``tests/test_dropin_torch.py::test_trunc_normal_generator_matches_global_seed`` checks it.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("scipy")
pytest.importorskip("expecttest")

_DEFAULT = Path(__file__).parent / "upstream" / "test_init.py"
_PATH = Path(os.environ.get("INITWISE_TORCH_TEST_INIT", _DEFAULT))
if not _PATH.is_file():
    pytest.skip(f"PyTorch's test_init.py not found at {_PATH}", allow_module_level=True)

_IMPORT = "import torch.nn.init as init\n"
_source = _PATH.read_text()
if _source.count(_IMPORT) != 1:
    pytest.skip(f"{_PATH} does not import torch.nn.init exactly once", allow_module_level=True)
_source = _source.replace(_IMPORT, "import initwise as init\n")

# run upstream's one @slowTest (test_xavier_uniform, well under a second) as well; torch reads
# the variable when its test utilities are first imported
os.environ.setdefault("PYTORCH_TEST_WITH_SLOW", "1")

_module = types.ModuleType("torch_upstream_test_init")
_module.__file__ = str(_PATH)
sys.modules[_module.__name__] = _module
exec(compile(_source, str(_PATH), "exec"), _module.__dict__)

_DEVIATIONS = {
    "test_trunc_normal_generator": (
        "initwise's exact inverse-CDF sampler draws other values than torch for seed 42; the "
        "test's KS check uses bounds [0, 1] for draws from [-2, 2] (docs/dropin.md)"
    ),
}

for _name, _obj in list(vars(_module).items()):
    if isinstance(_obj, type) and _name.startswith("Test"):
        for _test, _reason in _DEVIATIONS.items():
            if hasattr(_obj, _test):
                setattr(_obj, _test, pytest.mark.xfail(strict=True, reason=_reason)(getattr(_obj, _test)))
        globals()[_name] = _obj
