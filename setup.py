"""Build the optional native fast paths: ``initwise.random._native`` and ``initwise._audit._rowstats``.

All metadata lives in pyproject.toml; this file only declares the C extensions. Both are
``optional=True``: without a working C compiler the build is skipped, ``initwise.random``
uses its bit-identical NumPy path and the audit its torch statistics.

The flags matter for reproducibility, not just speed: the C code and the NumPy path perform
the same IEEE-754 float64 and float32 operations in the same order, which holds only without
FMA contraction and without fast-math. No ``-march=native``: the binary stays portable and picks
AVX-512/AVX2 code at run time (GCC function multiversioning).
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_GCC_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno",
              "-fno-trapping-math", "-std=c11"]
_MSVC_FLAGS = ["/O2", "/fp:strict"]


class _BuildExt(build_ext):
    """Pick flags for the compiler family in use (GCC/Clang or MSVC)."""

    def build_extensions(self) -> None:
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            ext.extra_compile_args = list(_MSVC_FLAGS if msvc else _GCC_FLAGS)
            if not msvc:
                # -ldl: dlopen/dl_iterate_phdr on glibc < 2.34 (_rowstats finds the OpenMP
                # runtime torch loaded; it never links or loads one itself)
                ext.extra_link_args = ["-pthread"] + (["-ldl"] if sys.platform.startswith("linux") else [])
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "initwise.random._native",
            sources=["src/initwise/random/_native.c"],
            optional=True,
        ),
        Extension(
            "initwise._audit._rowstats",
            sources=["src/initwise/_audit/_rowstats.c"],
            optional=True,
        ),
    ],
    cmdclass={"build_ext": _BuildExt},
)
