"""The exceptions and warnings initwise raises: one base class for every failure of a verb.

``InitwiseError`` is the base of the errors raised *while* a verb runs on a model
(:class:`InitError` from ``init``/``materialize``, :class:`LSUVError` from ``lsuv``,
:class:`AuditError` from ``audit``); each also derives from ``RuntimeError``, the type torch
raises for failures of the same kind, so existing ``except RuntimeError`` code keeps working.
Bad arguments are reported before anything runs, as ``ValueError`` / ``TypeError`` with the
parameter named and the valid options listed (see :mod:`initwise._checks`).
"""

from __future__ import annotations

__all__ = ["AuditError", "InitError", "InitwiseError", "InitwiseWarning", "LSUVError"]


class InitwiseError(Exception):
    """Base class of the errors initwise raises while it runs a verb on a model."""


class InitwiseWarning(UserWarning):
    """Warnings emitted by initwise (e.g. a no-op on an empty tensor)."""


class InitError(InitwiseError, RuntimeError):
    """Raised when :func:`initwise.init` fails after it has started writing."""


class LSUVError(InitwiseError, RuntimeError):
    """LSUV could not calibrate a layer; ``layer`` names it (``None`` for whole-batch errors).

    The model is restored to its exact state before the call whenever this is raised.
    """

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


class AuditError(InitwiseError, RuntimeError):
    """The audited model failed; the message names the stage (forward, loss, backward...)."""
