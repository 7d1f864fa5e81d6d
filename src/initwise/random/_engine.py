"""Keys, backend selection and the addressable fills of :mod:`initwise.random`.

Element ``i`` (flat row-major index in the *whole* tensor) of a fill is a pure function of the
key and ``i``: any slice, shard or chunk filled with the right ``offset`` equals the same
elements of the whole, whatever the thread count, chunk size or backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import math
import operator
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import numpy as np
import torch

from .._checks import check_choice, check_finite_positive, check_tensor
from .._math import normal_cdf as _phi
from . import _philox, _torchops
from ._philox import DIST_CODES, Key4, Params

try:  # the optional C extension (built by setup.py when a compiler is available)
    from . import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _native = None

__all__ = [
    "Backend",
    "Key",
    "NormalPrecision",
    "RandomDistribution",
    "backend",
    "get_num_threads",
    "key",
    "native_available",
    "normal_",
    "normal_precision",
    "sample",
    "set_num_threads",
    "trunc_normal_",
    "uniform_",
    "use_backend",
    "use_normal_precision",
]

Backend = Literal["native", "numpy", "torch"]
NormalPrecision = Literal["auto", "float64"]
NORMAL_PRECISIONS: Final[tuple[str, ...]] = get_args(NormalPrecision)
_ENV_NORMAL: Final = "INITWISE_NORMAL_PRECISION"
OrthogonalMethod = Literal["auto", "lapack"]
ORTHOGONAL_METHODS: Final[tuple[str, ...]] = get_args(OrthogonalMethod)
_ENV_ORTHOGONAL: Final = "INITWISE_ORTHOGONAL"
RandomDistribution = Literal["uniform", "normal", "trunc_normal"]
BACKENDS: Final[tuple[str, ...]] = get_args(Backend)
RANDOM_DISTRIBUTIONS: Final[tuple[str, ...]] = get_args(RandomDistribution)

_KEY_VERSION: Final = "initwise.random.key/v1"
_ENV_BACKEND: Final = "INITWISE_RANDOM_BACKEND"
_MAX_INDEX: Final = 1 << 62  # element indices must stay below 2**62
_SMALL: Final = 1 << 15  # below this many elements: never start threads
_CHUNK: Final = 1 << 22  # elements per chunk when a float64 staging buffer is needed
_MIN_MASS: Final = 1e-280  # smallest truncation mass Phi(b) - Phi(a) supported

# ---------------------------------------------------------------------------------------------
# keys


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


@dataclass(frozen=True)
class Key:
    """A stable, hashable key for the Philox engine, derived from ``(seed, name, stream)``.

    The 128-bit Philox key and high counter words are the BLAKE2b-128 digest of a canonical
    JSON encoding of ``(version, seed, name, stream, path)``: stable across Python processes,
    versions and machines (Python's salted ``hash`` is never used). ``path`` records
    :meth:`child` / :meth:`fold` derivations.

    >>> k = key(0, "layer.weight")
    >>> k
    Key(seed=0, name='layer.weight', stream=0, path=())
    >>> k.child("gate_i") == key(0, "layer.weight").child("gate_i")
    True
    >>> Key.from_dict(k.to_dict()) == k
    True
    """

    seed: int
    name: str = ""
    stream: int = 0
    path: tuple[str | int, ...] = ()
    words: tuple[int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = _as_int("seed", self.seed)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {type(self.name).__name__}")
        stream = _as_int("stream", self.stream)
        if stream < 0:
            raise ValueError(f"stream must be >= 0, got {stream}")
        path: list[str | int] = []
        for step in tuple(self.path):
            if isinstance(step, str):
                path.append(step)
            else:
                s = _as_int("path step", step)
                if s < 0:
                    raise ValueError(f"fold stream must be >= 0, got {s}")
                path.append(s)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "path", tuple(path))
        blob = json.dumps(
            [_KEY_VERSION, seed, self.name, stream, path], separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
        digest = hashlib.blake2b(blob, digest_size=16).digest()
        object.__setattr__(self, "words", struct.unpack("<4I", digest))

    @property
    def philox_key(self) -> tuple[int, int]:
        """The two 32-bit Philox key words."""
        return self.words[0], self.words[1]

    @property
    def counter_hi(self) -> tuple[int, int]:
        """Counter words 2 and 3 (words 0 and 1 hold the 64-bit block index)."""
        return self.words[2], self.words[3]

    def child(self, name: str) -> Key:
        """Derive a sub-key by name (e.g. one per gate block); cheap and stable."""
        if not isinstance(name, str):
            raise TypeError(f"child name must be a str, got {type(name).__name__}")
        return Key(self.seed, self.name, self.stream, (*self.path, name))

    def fold(self, stream: int) -> Key:
        """Derive a sub-key from an integer (e.g. a layer or shard-independent stream id)."""
        return Key(self.seed, self.name, self.stream, (*self.path, _as_int("stream", stream)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (inputs and the derived words)."""
        return {
            "seed": self.seed,
            "name": self.name,
            "stream": self.stream,
            "path": list(self.path),
            "philox_key": [f"{w:08x}" for w in self.philox_key],
            "counter_hi": [f"{w:08x}" for w in self.counter_hi],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Key:
        """Rebuild a key from :meth:`to_dict`; checks the stored words if present."""
        k = cls(d["seed"], d.get("name", ""), d.get("stream", 0), tuple(d.get("path", ())))
        for field_name in ("philox_key", "counter_hi"):
            if field_name in d and list(d[field_name]) != k.to_dict()[field_name]:
                raise ValueError(
                    f"{field_name} {d[field_name]} does not match the key derived from "
                    f"(seed, name, stream, path) by {_KEY_VERSION}"
                )
        return k


def key(seed: int, name: str = "", stream: int = 0) -> Key:
    """Return the :class:`Key` for ``(seed, name, stream)``.

    Use one name per tensor (e.g. its qualified parameter name): values then do not depend on
    construction order, and a shard of a tensor can be generated without the rest.

    >>> key(0, "layer.weight").to_dict()["philox_key"]
    ['96d2320f', '93666524']
    """
    return Key(seed, name, stream)


# ---------------------------------------------------------------------------------------------
# backend and threads

_backend_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "initwise_random_backend", default=None
)
_num_threads: list[int | None] = [None]  # set_num_threads; None follows torch.get_num_threads()


def native_available() -> bool:
    """Whether the compiled fast path was built and imported."""
    return _native is not None


def backend() -> Backend:
    """The backend the next CPU call uses: ``"native"``, ``"numpy"`` or ``"torch"``.

    Order: :func:`use_backend` if active, else the ``INITWISE_RANDOM_BACKEND`` environment
    variable, else ``"native"`` when built. All give bit-identical values. ``"torch"`` (torch
    operations, any device) is what tensors on other devices use by default: they are
    generated where they live; naming ``"native"`` or ``"numpy"`` explicitly makes them be
    generated on the CPU and copied instead.
    """
    name = _backend_override.get() or os.environ.get(_ENV_BACKEND) or None
    if name is None:
        return "native" if _native is not None else "numpy"
    check_choice("initwise.random backend", name, BACKENDS)
    if name == "native" and _native is None:
        raise RuntimeError(
            "initwise.random: the native backend was requested but the C extension is not "
            "built (reinstall with a C compiler available); use 'numpy'"
        )
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: Backend) -> Iterator[None]:
    """Force a backend inside a ``with`` block (context-local, so thread-safe).

    >>> with use_backend("numpy"):
    ...     backend()
    'numpy'
    """
    check_choice("initwise.random backend", name, BACKENDS)
    if name == "native" and _native is None:
        raise RuntimeError("initwise.random: the native backend is not built")
    token = _backend_override.set(name)
    try:
        yield
    finally:
        _backend_override.reset(token)


@contextlib.contextmanager
def _overriding(var: contextvars.ContextVar[str | None], what: str, name: str,
                choices: tuple[str, ...]) -> Iterator[None]:  # fmt: skip
    """Set a context-local setting to ``name`` (one of ``choices``) inside a ``with`` block."""
    check_choice(what, name, choices)
    token = var.set(name)
    try:
        yield
    finally:
        var.reset(token)


_normal_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "initwise_normal_precision", default=None
)


def normal_precision() -> NormalPrecision:
    """How :func:`normal_` computes values for float32 and narrower tensors.

    ``"auto"`` (the default): a float32 Box-Muller (4 values per Philox block, ~3x faster
    than the float64 one) for float32/float16/bfloat16 tensors, the float64 one for float64
    tensors. ``"float64"``: every dtype rounds the float64 values once (the values initwise
    0.x before the float32 transform gave for every dtype). Set by
    :func:`use_normal_precision` or the ``INITWISE_NORMAL_PRECISION`` environment variable.
    """
    name = _normal_override.get() or os.environ.get(_ENV_NORMAL) or "auto"
    check_choice(f"initwise.random normal precision ({_ENV_NORMAL})", name, NORMAL_PRECISIONS)
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def use_normal_precision(name: NormalPrecision) -> Iterator[None]:
    """Choose :func:`normal_precision` inside a ``with`` block (context-local).

    >>> import torch
    >>> k = key(0, "w")
    >>> with use_normal_precision("float64"):
    ...     a = normal_(torch.empty(8), k)
    >>> torch.equal(a, normal_(torch.empty(8, dtype=torch.float64), k).float())
    True
    """
    with _overriding(_normal_override, "initwise.random normal precision", name, NORMAL_PRECISIONS):
        yield


_orthogonal_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "initwise_orthogonal_method", default=None
)


def orthogonal_method() -> OrthogonalMethod:
    """How keyed orthogonal matrices (``orthogonal_`` with a Key, and the schemes built on it)
    form Q from their Gaussian's Householder reflectors.

    ``"auto"`` (the default): float32 matrices with fewer than 1024 rows or columns by
    initwise's own kernel, whose every operation is fixed (docs/random.md, "Keyed schemes and
    threads"): the same bits on every CPU, with or without AVX-512 or the C extension; 1.2-2x
    faster than LAPACK on an AVX-512 CPU up to 512 columns, about as fast on AVX2; the rest by LAPACK's
    ``orgqr`` on one thread. ``"lapack"``: every matrix by ``orgqr`` (the values initwise gave
    before the kernel existed; bit-identical across thread counts, not across CPU models).
    Set by :func:`use_orthogonal_method` or the ``INITWISE_ORTHOGONAL`` environment variable.
    """
    name = _orthogonal_override.get() or os.environ.get(_ENV_ORTHOGONAL) or "auto"
    check_choice(f"initwise.random orthogonal method ({_ENV_ORTHOGONAL})", name, ORTHOGONAL_METHODS)
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def use_orthogonal_method(name: OrthogonalMethod) -> Iterator[None]:
    """Choose :func:`orthogonal_method` inside a ``with`` block (context-local)."""
    with _overriding(_orthogonal_override, "initwise.random orthogonal method", name, ORTHOGONAL_METHODS):
        yield


def haar32_native(a: torch.Tensor, out: torch.Tensor) -> bool:
    """Q from the float32 Gaussians ``a`` (``[..., n, m]``, contiguous, n <= m) into ``out``
    (same shape, contiguous; may be ``a``) by the C kernel, if the native backend is in use
    (else ``False``, nothing done). ``a`` is only read (unless it is ``out``). See
    ``_schemes._haar32_reference`` for the definition of the values, which the kernel
    computes bit for bit."""
    if backend() != "native" or a.numel() == 0:
        return False
    assert _native is not None
    n, m = a.shape[-2], a.shape[-1]
    _native.haar32(a.data_ptr(), out.data_ptr(), m, n, a.numel() // (n * m))
    return True


def _variant(dist: str, dtype: torch.dtype) -> str:
    """The generator a fill of ``dist`` into ``dtype`` uses (``normal32`` or ``dist``)."""
    if dist == "normal" and dtype != torch.float64 and normal_precision() == "auto":
        return "normal32"
    return dist


def _on_device(device: torch.device) -> bool:
    """Whether a fill of a tensor on ``device`` runs the torch-ops path on that device."""
    if device.type == "cpu":
        return backend() == "torch"
    return (_backend_override.get() or os.environ.get(_ENV_BACKEND)) not in ("native", "numpy")


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads for large fills; ``None`` (the default) follows torch's setting.

    Values never depend on the thread count.
    """
    if n is not None:
        n = _as_int("n", n)
        if n < 1:
            raise ValueError(f"n must be >= 1 or None, got {n}")
    _num_threads[0] = n


def get_num_threads() -> int:
    """Threads a large fill uses: :func:`set_num_threads`'s value or ``torch.get_num_threads()``."""
    n = _num_threads[0]
    return n if n is not None else max(1, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------
# parameters


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _uniform_params(low: float, high: float) -> Params:
    lo, hi = _finite("low", low), _finite("high", high)
    if not lo < hi:
        raise ValueError(f"uniform needs low < high, got low={low!r}, high={high!r}")
    scale = hi - lo
    if not math.isfinite(scale):
        raise ValueError(f"high - low overflows: low={low!r}, high={high!r}")
    return (lo, scale, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _normal_params(mean: float, std: float) -> Params:
    return (_finite("mean", mean), check_finite_positive("std", std), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _trunc_params(mean: float, std: float, a: float, b: float) -> Params:
    m = _finite("mean", mean)
    s = check_finite_positive("std", std)
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        raise TypeError("a and b must be real numbers") from None
    if math.isnan(fa) or math.isnan(fb) or not fa < fb:
        raise ValueError(f"trunc_normal needs a < b (in standard deviations), got a={a!r}, b={b!r}")
    # Work in the lower tail, where Phi is precise: mirror intervals that lie above zero.
    sign = 1.0
    la, lb = fa, fb
    if fa > 0.0:
        sign, la, lb = -1.0, -fb, -fa
    pa = _phi(la)
    pbc = _phi(-lb)  # 1 - Phi(lb), precise when lb is large
    mass = _phi(lb) - pa if lb <= 0.0 else (1.0 - pbc) - pa
    if not mass >= _MIN_MASS:
        raise ValueError(
            f"trunc_normal: the interval [a, b] = [{a!r}, {b!r}] has normal probability mass "
            f"{mass:.3g}, below the supported {_MIN_MASS:g}"
        )
    return (m, s, pa, pbc, mass, sign, fa, fb)


def _params(dist: str, fn: str, params: Mapping[str, Any]) -> Params:
    valid = {
        "uniform": ("low", "high"),
        "normal": ("mean", "std"),
        "trunc_normal": ("mean", "std", "a", "b"),
    }[dist]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise TypeError(
            f"{fn}: unknown parameter(s) {', '.join(unknown)} for {dist!r}; valid: {', '.join(valid)}"
        )
    if dist == "uniform":
        return _uniform_params(params.get("low", 0.0), params.get("high", 1.0))
    if dist == "normal":
        return _normal_params(params.get("mean", 0.0), params.get("std", 1.0))
    return _trunc_params(
        params.get("mean", 0.0), params.get("std", 1.0), params.get("a", -2.0), params.get("b", 2.0)
    )


# ---------------------------------------------------------------------------------------------
# geometry: which global indices a tensor holds


@dataclass(frozen=True)
class _Plan:
    """``n_rows`` rows of ``row_len`` elements; row r starts at ``rows[r]`` (or ``start``)."""

    start: int
    row_len: int
    n_rows: int
    rows: np.ndarray | None  # int64, C-contiguous

    def global_indices(self, lo: int, hi: int) -> np.ndarray:
        k = np.arange(lo, hi, dtype=np.int64)
        if self.rows is None:
            return k + self.start
        return self.rows[k // self.row_len] + k % self.row_len


def _plan(fn: str, shape: torch.Size, offset: int | Sequence[int],
          global_shape: Sequence[int] | None) -> _Plan:
    numel = math.prod(shape)
    gshape: tuple[int, ...] | None = None
    if global_shape is not None:
        if isinstance(global_shape, (str, bytes)) or not isinstance(global_shape, Sequence):
            raise TypeError(f"{fn}: global_shape must be a sequence of ints, got {global_shape!r}")
        gshape = tuple(_as_int("global_shape entry", g) for g in global_shape)
        if any(g < 0 for g in gshape):
            raise ValueError(f"{fn}: global_shape must be non-negative, got {gshape}")
    if isinstance(offset, Sequence) and not isinstance(offset, (str, bytes)):
        offs = tuple(_as_int("offset entry", o) for o in offset)
        if gshape is None:
            raise ValueError(f"{fn}: a per-dimension offset {offs} needs global_shape")
        if not len(offs) == len(gshape) == len(shape):
            raise ValueError(
                f"{fn}: offset {offs}, global_shape {gshape} and tensor shape {tuple(shape)} "
                f"must have the same number of dimensions"
            )
        for d, (o, s, g) in enumerate(zip(offs, shape, gshape, strict=False)):
            if o < 0 or o + s > g:
                raise ValueError(
                    f"{fn}: dimension {d}: offset {o} + size {s} does not fit in global size {g} "
                    f"(offset {offs}, tensor shape {tuple(shape)}, global_shape {gshape})"
                )
        if math.prod(gshape) > _MAX_INDEX:
            raise ValueError(f"{fn}: global_shape {gshape} has more than 2**62 elements")
        nd = len(shape)
        if nd == 0:
            return _Plan(0, 1, 1, None)
        gstride = [math.prod(gshape[d + 1 :]) for d in range(nd)]
        k = nd - 1
        while k > 0 and shape[k] == gshape[k]:
            k -= 1
        row_len = shape[k] * gstride[k]
        base = sum(o * st for o, st in zip(offs, gstride, strict=False))
        if k == 0:
            return _Plan(base, row_len, 1, None)
        starts = np.array(base, dtype=np.int64)
        for d in range(k):
            starts = (starts[..., None] + np.arange(shape[d], dtype=np.int64) * gstride[d])
        return _Plan(base, row_len, int(math.prod(shape[:k])),
                     np.ascontiguousarray(starts.reshape(-1)))
    off = _as_int("offset", offset)
    if off < 0:
        raise ValueError(f"{fn}: offset must be >= 0, got {off}")
    if gshape is not None and off + numel > math.prod(gshape):
        raise ValueError(
            f"{fn}: offset {off} + {numel} elements exceeds global_shape {gshape} "
            f"({math.prod(gshape)} elements)"
        )
    if off + numel > _MAX_INDEX:
        raise ValueError(f"{fn}: offset + numel must stay below 2**62, got {off + numel}")
    return _Plan(off, numel, 1, None)


# ---------------------------------------------------------------------------------------------
# rounding float64 -> target dtype exactly once


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float64 to bfloat16 (nearest, ties to even) in one step; returns uint16 bits.

    float64 -> float32 with round-to-odd keeps enough bits that the following round-to-
    nearest-even float32 -> bfloat16 equals a single rounding of the float64 value.
    """
    f = x.astype(np.float32)
    back = f.astype(np.float64)
    bits = f.view(np.uint32).copy()
    over = np.abs(back) > np.abs(x)  # rounded away from zero: step back towards zero
    bits[over] -= np.uint32(1)
    bits |= (back != x).astype(np.uint32)  # sticky bit: round to odd
    rnd = np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return ((bits + rnd) >> np.uint32(16)).astype(np.uint16)


def _round_np(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float64:
        return torch.from_numpy(x)
    if dtype == torch.float32:
        return torch.from_numpy(x.astype(np.float32))
    if dtype == torch.float16:
        return torch.from_numpy(x.astype(np.float16))  # NumPy rounds float64 -> half directly
    if dtype == torch.bfloat16:
        return torch.from_numpy(_bf16_bits(x)).view(torch.bfloat16)
    return torch.from_numpy(x).to(dtype)  # other float formats: torch's conversion


# ---------------------------------------------------------------------------------------------
# generation


def _native_call(code: int, k: Key4, p: Params, plan: _Plan, lo: int, hi: int, out_ptr: int,
                 kind: int) -> None:
    """Native fill of linear elements [lo, hi) of ``plan`` into out_ptr (element lo first)."""
    assert _native is not None
    n = hi - lo
    threads = 1 if n < _SMALL else get_num_threads()
    if plan.rows is None and plan.n_rows == 1:
        _native.fill(k, code, p, out_ptr, kind, plan.start + lo, 0, 1, n, threads)
    elif plan.row_len >= 32 and lo % plan.row_len == 0 and hi % plan.row_len == 0:
        rows = plan.rows[lo // plan.row_len : hi // plan.row_len]  # type: ignore[index]
        _native.fill(k, code, p, out_ptr, kind, 0, rows.ctypes.data, rows.size, plan.row_len,
                     threads)
    else:
        idx = plan.global_indices(lo, hi)
        _native.sample(k, code, p, idx.ctypes.data, n, out_ptr, kind, threads)


def _numpy_values(code: int, k: Key4, p: Params, plan: _Plan, lo: int, hi: int) -> np.ndarray:
    if plan.rows is None and plan.n_rows == 1:
        return _philox.values_range(code, k, p, plan.start + lo, hi - lo)
    return _philox.values_at(code, k, p, plan.global_indices(lo, hi))


def _generate(dist: str, k: Key4, p: Params, plan: _Plan, out: torch.Tensor) -> None:
    """Write the values of ``plan`` into the contiguous CPU tensor ``out`` (any float dtype)."""
    code = DIST_CODES[dist]
    n = out.numel()
    flat = out.view(-1)
    use_native = backend() == "native"
    wide = code != _philox.NORMAL32  # float64 values (normal32: float32 values)
    if use_native and (out.dtype == torch.float32 or (wide and out.dtype == torch.float64)):
        _native_call(code, k, p, plan, 0, n, out.data_ptr(), 1 if out.dtype == torch.float32 else 0)
        return
    step = max(_CHUNK // plan.row_len, 1) * plan.row_len if plan.row_len <= _CHUNK else _CHUNK
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        if use_native:
            buf = np.empty(hi - lo, dtype=np.float64 if wide else np.float32)
            _native_call(code, k, p, plan, lo, hi, buf.ctypes.data, 0 if wide else 1)
        else:
            buf = _numpy_values(code, k, p, plan, lo, hi)
        # float64 values are rounded once by _round_np; float32 ones by torch (nearest even)
        flat[lo:hi].copy_(_round_np(buf, out.dtype) if wide else torch.from_numpy(buf).to(out.dtype))


def _generate_torch(dist: str, k: Key4, p: Params, plan: _Plan, tensor: torch.Tensor) -> None:
    """Write the values of ``plan`` into ``tensor`` with torch operations on its own device.

    Bit-identical to :func:`_generate` (see ``_torchops``); chunked so temporaries stay small.
    """
    code = DIST_CODES[dist]
    dev = tensor.device
    plain = type(tensor) in (torch.Tensor, torch.nn.Parameter)  # not a subclass (DTensor, ...)
    direct = plain and tensor.is_contiguous()
    out = tensor if direct else torch.empty(tensor.shape, dtype=tensor.dtype, device=dev)
    flat = out.view(-1)
    n = flat.numel()
    rows = None if plan.rows is None else torch.from_numpy(plan.rows).to(dev)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        if rows is None:
            v = _torchops.values(code, k, p, plan.start + lo, hi - lo, device=dev)
        else:
            lin = torch.arange(lo, hi, dtype=torch.int64, device=dev)
            v = _torchops.values(code, k, p, 0, 0, index=rows[lin // plan.row_len] + lin % plan.row_len)
        flat[lo:hi].copy_(_torchops.round_to(v, tensor.dtype))
    if out is not tensor:
        tensor.copy_(out)


@dataclass
class _ShardScope:
    target: torch.Tensor
    offset: tuple[int, ...]
    global_shape: tuple[int, ...]
    foreign: list[str]


_SHARD: contextvars.ContextVar[_ShardScope | None] = contextvars.ContextVar("initwise_shard", default=None)


@contextlib.contextmanager
def shard_scope(target: torch.Tensor, offset: Sequence[int], global_shape: Sequence[int]) -> Iterator[list[str]]:
    """Within the block, fills of ``target`` (by identity, without an explicit offset) draw
    the box ``whole[offset : offset + target.shape]`` of a whole of ``global_shape``.

    Used for sharded parameters: a scheme that runs on a DTensor's local block then writes
    exactly that block of what it would write to the whole. Fills of any other tensor run
    unchanged and their function names are appended to the yielded list (the caller then
    knows the scheme was not elementwise on ``target``). The scope is a context variable:
    other threads and tasks are not affected.
    """
    scope = _ShardScope(target, tuple(int(o) for o in offset), tuple(int(g) for g in global_shape), [])
    token = _SHARD.set(scope)
    try:
        yield scope.foreign
    finally:
        _SHARD.reset(token)


def _fill(fn: str, dist: str, tensor: torch.Tensor, k: Key, params: Mapping[str, Any],
          offset: int | Sequence[int], global_shape: Sequence[int] | None) -> torch.Tensor:
    scope = _SHARD.get()
    if scope is not None:
        if tensor is scope.target and global_shape is None and offset == 0:
            offset, global_shape = scope.offset, scope.global_shape
        else:
            scope.foreign.append(fn)
    do_fill = check_tensor(tensor, fn)
    if not isinstance(k, Key):
        raise TypeError(
            f"{fn}: key must be an initwise.random.Key (e.g. initwise.random.key(seed, name)), "
            f"got {type(k).__name__}"
        )
    p = _params(dist, fn, params)
    plan = _plan(fn, tensor.shape, offset, global_shape)
    if not do_fill:
        return tensor
    dist = _variant(dist, tensor.dtype)
    with torch.no_grad():
        if _on_device(tensor.device):
            _generate_torch(dist, k.words, p, plan, tensor)
            return tensor
        direct = tensor.device.type == "cpu" and tensor.is_contiguous()
        out = tensor if direct else torch.empty(tensor.shape, dtype=tensor.dtype)
        _generate(dist, k.words, p, plan, out)
        if out is not tensor:
            tensor.copy_(out)
    return tensor


def uniform_(tensor: torch.Tensor, key: Key, *, low: float = 0.0, high: float = 1.0,
             offset: int | Sequence[int] = 0,
             global_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Fill ``tensor`` with addressable uniform values on ``[low, high]``.

    Element ``i`` of the whole is ``low + (high - low) * u_i``, ``u_i = (m_i + 1/2) 2^-52``
    with ``m_i`` 52 bits of Philox4x32-10 output at block ``i // 2``; computed in float64
    and rounded once to the tensor's dtype (so ``low``/``high`` are reachable only after that
    rounding).

    Args:
        tensor: a floating-point tensor (any device, contiguous or not).
        key: the :class:`Key` (e.g. ``key(seed, "layer.weight")``).
        low, high: the bounds, ``low < high``.
        offset: flat index in the whole of the tensor's first element, or per-dimension
            start indices of the box ``whole[o0:o0+s0, ...]`` together with ``global_shape``.
        global_shape: shape of the whole (needed with a per-dimension offset).

    >>> w = uniform_(torch.empty(2, 3), key(0, "w"), low=-1.0, high=1.0)
    >>> part = uniform_(torch.empty(3), key(0, "w"), low=-1.0, high=1.0, offset=3)
    >>> torch.equal(w[1], part)
    True
    """
    return _fill("uniform_", "uniform", tensor, key, {"low": low, "high": high}, offset,
                 global_shape)


def normal_(tensor: torch.Tensor, key: Key, *, mean: float = 0.0, std: float = 1.0,
            offset: int | Sequence[int] = 0,
            global_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Fill ``tensor`` with addressable normal values ``N(mean, std^2)``.

    Box-Muller, ``r = sqrt(-2 log u1)``, ``theta = 2 pi u2``, with log, sin and cos written
    as fixed sequences of IEEE operations (identical in the native, NumPy and torch paths):

    * float64 tensors: the two 52-bit uniforms of Philox block ``i // 2``; element ``2j`` is
      ``r cos(theta)``, ``2j + 1`` is ``r sin(theta)``, accurate to ~1e-16; ``u1 >= 2^-53``
      bounds ``|z|`` by ``sqrt(106 ln 2) = 8.57``.
    * float32, float16, bfloat16 (by default, see :func:`normal_precision`): in float32, two
      pairs per block ``i // 4`` (23-bit ``u1``, 26-bit angle), within 4 ulp of the exact
      Box-Muller value, rounded once to fp16/bf16; ``|z| <= sqrt(48 ln 2) = 5.77`` (as
      torch's float32 ``normal_``, which draws 24-bit uniforms). ~3x faster.

    Args as in :func:`uniform_`.

    >>> w = normal_(torch.empty(4, 4), key(0, "layer.weight"), std=0.02)
    >>> shard = normal_(torch.empty(4, 2), key(0, "layer.weight"), std=0.02,
    ...                 offset=(0, 2), global_shape=(4, 4))
    >>> torch.equal(w[:, 2:], shard)
    True
    """
    return _fill("normal_", "normal", tensor, key, {"mean": mean, "std": std}, offset,
                 global_shape)


def trunc_normal_(tensor: torch.Tensor, key: Key, *, mean: float = 0.0, std: float = 1.0,
                  a: float = -2.0, b: float = 2.0, offset: int | Sequence[int] = 0,
                  global_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Fill ``tensor`` with a normal ``N(mean, std^2)`` truncated to ``[mean + a std, mean + b std]``.

    ``a`` and ``b`` are in standard deviations of the parent normal (``std`` is the parent's,
    not the truncated distribution's). Exact inverse-CDF sampling with no data-dependent
    consumption: ``z = Phi^-1(Phi(a) + u (Phi(b) - Phi(a)))`` with Wichura's AS241 quantile,
    evaluated in whichever tail is closer (so one-sided and far bounds keep full precision).
    Args as in :func:`uniform_`.

    >>> t = trunc_normal_(torch.empty(1000), key(0, "t"), std=0.02, a=-2.0, b=2.0)
    >>> bool(t.abs().max() <= 0.04)
    True
    """
    return _fill("trunc_normal_", "trunc_normal", tensor, key,
                 {"mean": mean, "std": std, "a": a, "b": b}, offset, global_shape)


def sample(key: Key, distribution: RandomDistribution, index: torch.Tensor, *,
           dtype: torch.dtype = torch.float32, **params: float) -> torch.Tensor:
    """Values of the fills at the given flat global indices (same values as the fills).

    ``params`` are those of the matching fill (``low``/``high``; ``mean``/``std``;
    ``mean``/``std``/``a``/``b``). The result has ``index``'s shape and device.

    >>> w = normal_(torch.empty(10), key(1, "w"))
    >>> torch.equal(sample(key(1, "w"), "normal", torch.tensor([7, 2])), w[[7, 2]])
    True
    """
    fn = "sample"
    if not isinstance(key, Key):
        raise TypeError(f"{fn}: key must be an initwise.random.Key, got {type(key).__name__}")
    check_choice("distribution", distribution, RANDOM_DISTRIBUTIONS)
    if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex() \
            or index.dtype == torch.bool:
        raise TypeError(f"{fn}: index must be an integer torch.Tensor of flat global indices")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"{fn}: dtype must be a floating-point torch.dtype, got {dtype!r}")
    p = _params(distribution, fn, params)
    variant = _variant(distribution, dtype)
    if _on_device(index.device):
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= _MAX_INDEX):
            raise ValueError(f"{fn}: indices must be in [0, 2**62)")
        v = _torchops.values(DIST_CODES[variant], key.words, p, 0, 0, index=index.reshape(-1))
        return _torchops.round_to(v, dtype).view(index.shape)
    idx = np.ascontiguousarray(index.detach().to("cpu", torch.int64).numpy().reshape(-1))
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= _MAX_INDEX):
        raise ValueError(f"{fn}: indices must be in [0, 2**62)")
    out = torch.empty(idx.size, dtype=dtype)
    if idx.size:
        plan = _Plan(0, 1, idx.size, idx)
        _generate(variant, key.words, p, plan, out)
    return out.view(index.shape).to(index.device)
