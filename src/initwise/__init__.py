"""initwise: neural-network weight initialization, correct and measured.

The public API is re-exported here from focused private modules.
"""

from __future__ import annotations

from ._checks import InitwiseWarning
from .fans import Fans, fans, tensor_fans
from .gains import calculate_gain, gain

__version__ = "0.1.0"

__all__ = [
    "Fans",
    "InitwiseWarning",
    "__version__",
    "calculate_gain",
    "fans",
    "gain",
    "tensor_fans",
]
