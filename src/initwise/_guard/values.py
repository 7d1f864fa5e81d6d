"""What a parameter's values say about where they came from.

Uninitialized storage (``torch.empty``) holds whatever the allocator last left there: fresh
pages are zero (indistinguishable from a zero init, so never flagged), recycled memory holds
old floats, integers or pointers. Read as floats those give the signs checked here: NaN or
inf, denormal values (integers and pointers reinterpreted: ``4.6e-41``), implausible
magnitudes (``1e30``), and identical rows. A legitimate init gives none of them: zeros, ones,
a constant bias or a norm weight are finite, normal and constant (constant tensors are never
"identical rows").

Low precision: a tensor sampled in bfloat16 (or float16) and cast to float32 keeps its values
on the coarse lattice: the low 16 (13) bits of every float32 mantissa are zero. A float32
sample lands there with probability ``2^-16`` (``2^-13``) per value, so ``n`` distinct
non-integer values all on the lattice happen by chance with probability ``2^-16n``
(``2^-13n``); the check needs ``n >= 8`` (below ``2^-104``). It misses samples rescaled in
float32 after the cast (a multiply by a non-power of two leaves the lattice).
"""

from __future__ import annotations

import torch

from .report import Finding

IMPLAUSIBLE = 1e6  # |value| above this is not an initialization
MIN_DISTINCT = 8  # distinct non-integer values needed for the lattice test


def _bits(t: torch.Tensor) -> torch.Tensor | None:
    """The float32 bit patterns of ``t`` as int64 (``None`` for other dtypes)."""
    if t.dtype == torch.float32:
        return t.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return None


@torch.no_grad()
def value_findings(name: str, p: torch.Tensor) -> list[Finding]:
    """Findings about one parameter's values (empty for a plausible initialization)."""
    out: list[Finding] = []
    if p.numel() == 0 or p.is_meta or not p.is_floating_point():
        return out
    t = p.detach()
    finite = torch.isfinite(t)
    n_bad = int((~finite).sum())
    if n_bad:
        out.append(Finding(name, "non_finite", "error",
                           f"{n_bad} of {t.numel()} values are NaN or inf: never initialized "
                           "(torch.empty storage) or corrupted"))
        t = torch.where(finite, t, torch.zeros((), dtype=t.dtype, device=t.device))
    a = t.abs()
    # float32's smallest normal: float16 has legitimate subnormals below its own 6e-5
    tiny = torch.finfo(torch.float32).tiny
    n_den = int(((a > 0) & (a < tiny)).sum()) if t.dtype != torch.float16 else 0
    if n_den:
        out.append(Finding(name, "denormal", "error",
                           f"{n_den} denormal values (below {tiny:.3g}): integers or pointers "
                           "read as floats, i.e. uninitialized memory"))
    big = float(a.max())
    if big > IMPLAUSIBLE:
        out.append(Finding(name, "implausible", "error",
                           f"max |value| {big:.3g} > {IMPLAUSIBLE:g}: not an initialization "
                           "(uninitialized memory?)"))
    if t.dim() >= 2 and t.shape[0] >= 2 and t[0].numel() >= 2:
        rows = t.reshape(t.shape[0], -1)
        if bool((rows == rows[:1]).all()) and not bool((rows == rows[0, 0]).all()):
            out.append(Finding(name, "identical_rows", "error",
                               f"all {t.shape[0]} rows are identical (not a constant tensor): "
                               "every unit computes the same function and symmetry is never "
                               "broken"))
    low = lattice(t)
    if low is not None:
        out.append(Finding(name, "low_precision", "warning",
                           f"every value lies on the {low} lattice of a float32 tensor: "
                           f"sampled in {low} and cast, not in float32 (chance: below 2^-"
                           f"{13 * MIN_DISTINCT})"))
    return out


def lattice(t: torch.Tensor) -> str | None:
    """``"bfloat16"`` / ``"float16"`` when every value of a float32 tensor lies on that
    lattice and there are enough distinct non-integer values to tell; else ``None``."""
    bits = _bits(t)
    if bits is None:
        return None
    flat = t.reshape(-1)
    frac = flat[(flat != flat.round()) & torch.isfinite(flat)]
    if frac.numel() < MIN_DISTINCT or torch.unique(frac[:4096]).numel() < MIN_DISTINCT:
        return None
    nz = bits.reshape(-1)[flat != 0]
    if bool(((nz & 0xFFFF) == 0).all()):
        return "bfloat16"
    if bool(((nz & 0x1FFF) == 0).all()):
        a = flat[flat != 0].abs()
        if bool((a <= 65504).all()):
            return "float16"
    return None
