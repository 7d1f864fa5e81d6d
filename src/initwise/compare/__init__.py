"""``initwise compare``: train one network under several init schemes and report the difference.

Example:
    >>> from initwise.compare import CompareConfig, run_compare
    >>> res = run_compare(CompareConfig(dataset="teacher", depths=[2], widths=[16],
    ...                                 schemes=["torch"], seeds=1, epochs=1))
    >>> res.summary[0]["winner"]
    'torch'
"""

from __future__ import annotations

from .data import BUILTIN_DATASETS, Dataset, load_dataset
from .models import ACTIVATIONS, ARCHS, build_model
from .presets import PRESETS, preset_overrides
from .report import format_summary, write_report
from .run import CompareConfig, CompareResult, run_compare, summarize, welch_t_test
from .schemes import apply_scheme, scheme_names
from .train import RunResult, TrainConfig, train_one
from .transfer import run_transfer, transfer_summary

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "BUILTIN_DATASETS",
    "PRESETS",
    "CompareConfig",
    "CompareResult",
    "Dataset",
    "RunResult",
    "TrainConfig",
    "apply_scheme",
    "build_model",
    "format_summary",
    "load_dataset",
    "preset_overrides",
    "run_compare",
    "run_transfer",
    "scheme_names",
    "summarize",
    "train_one",
    "transfer_summary",
    "welch_t_test",
    "write_report",
]
