"""``check``: a provenance guard over a model's parameters."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from .._modules import unwrap
from .._sharding import whole_tensor
from .report import CheckReport, Finding, WatchLog
from .ties import expected_ties, tie_findings
from .values import value_findings

_ORDER = {"error": 0, "warning": 1, "info": 2}


def check(model: nn.Module, *, log: WatchLog | None = None,
          ties: Iterable[tuple[str, str]] | None = None, strict: bool = False) -> CheckReport:
    """Check where each of ``model``'s parameters came from, and name the ones that are wrong.

    Reports, per parameter (see :mod:`initwise._guard` for what each sign means and the
    power of each test):

    * never initialized: NaN/inf, denormal values, magnitudes above 1e6, identical rows
      (what ``torch.empty`` storage looks like; zeros, ones and constant tensors are legit);
    * sampled in bfloat16 / float16 and cast to float32 (values on the coarse lattice);
    * ties the model declares (Hugging Face ``_tied_weights_keys`` honouring
      ``config.tie_word_embeddings``, or ``ties=[(a, b), ...]``) whose owners hold separate
      storage, with equal values (warning) or different ones (error);
    * with ``log`` (from :func:`initwise.watch`): parameters overwritten after a load, writes
      that landed on a copy, parameters written more than once.

    Args:
        model: the model (``torch.compile`` / DataParallel wrappers are looked through).
            Sharded (``DTensor``) parameters are checked whole, gathered one at a time: call
            it on every rank; the findings are those of the unsharded model.
        log: a :class:`WatchLog` of the model's construction, load and init.
        ties: extra ``(name, name)`` pairs that must share one tensor.
        strict: ``report.ok`` is False on any finding (warnings and infos included).

    >>> import torch
    >>> net = nn.Linear(3, 3)
    >>> with torch.no_grad():
    ...     net.weight[1, 2] = float("nan")
    >>> rep = check(net)
    >>> rep.ok, [(f.parameter, f.kind) for f in rep.findings]
    (False, [('weight', 'non_finite')])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"check: model must be an nn.Module, got {type(model).__name__}")
    inner, _ = unwrap(model)
    findings: list[Finding] = []
    seen: set[int] = set()
    n = 0
    for name, p in inner.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n += 1
        findings += value_findings(name, whole_tensor(p))  # a shard: gathered
    pairs = list(expected_ties(inner))
    if ties is not None:
        pairs += [(str(a), str(b)) for a, b in ties]
    findings += tie_findings(inner, pairs)
    if log is not None:
        if not isinstance(log, WatchLog):
            raise TypeError("check: log must be the WatchLog of initwise.watch")
        findings += log.findings()
    findings.sort(key=lambda f: _ORDER.get(f.severity, 3))
    return CheckReport(model=type(inner).__name__, parameters=n, findings=findings, strict=strict)
