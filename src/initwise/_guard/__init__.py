"""Guard an initialization the way a CI guards code: provenance checks, a write log, digests.

* :func:`check`: names each parameter that was never initialized (NaN/inf, denormals,
  implausible magnitudes, identical rows: what ``torch.empty`` storage looks like), sampled in
  bfloat16/float16 when it is float32, tied by the model but held apart, or (with a
  :func:`watch` log) overwritten after a load, written on a copy, or written more than once.
* :func:`watch`: a context manager recording every write to a parameter (name, op, phase,
  caller) during construction, load and init.
* :func:`digest`: a SHA-256 per parameter and a total for (model, policy, seed), stable
  across platforms with the keyed engine: pin it in a test.

Sections: :mod:`.report` (results as data), :mod:`.values` (what values say), :mod:`.ties`,
:mod:`.writes` (``watch``), :mod:`.provenance` (``check``), :mod:`.hashing` (``digest``).
"""

from __future__ import annotations

from .hashing import digest
from .provenance import check
from .report import CheckReport, DigestReport, Finding, WatchLog, WriteEvent
from .writes import watch

__all__ = ["CheckReport", "DigestReport", "Finding", "WatchLog", "WriteEvent", "check",
           "digest", "watch"]
