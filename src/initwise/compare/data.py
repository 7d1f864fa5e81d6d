"""Datasets for ``initwise compare``: small, real or procedurally generated, all offline.

Every loader returns a :class:`Dataset` holding a stratified, seeded train/test split with
inputs standardized by the training split's statistics. Inputs keep a natural shape so that
each architecture can read them: digits are ``(1, 8, 8)`` images, MNIST-1D signals are
``(1, 40)``, teacher inputs are flat vectors.

- ``digits``: scikit-learn's ``load_digits`` (1797 8x8 handwritten digits shipped with
  scikit-learn, no download; install with ``pip install initwise[report]``).
- ``mnist1d``: MNIST-1D (Greydanus, 2020) by the reference generator's algorithm and defaults:
  5000 signals of 40 points from ten 1-D digit templates, randomly padded, dilated, scaled,
  shifted, sheared, with correlated and white noise (see :func:`make_mnist1d`).
- ``teacher``: Gaussian inputs labelled by the argmax of a random deep tanh "teacher" network,
  with its output biases tuned so the classes are balanced.
- a path to a ``.npz`` file with arrays ``X`` (``n`` samples, any shape) and ``y`` (``n``
  integer labels).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["BUILTIN_DATASETS", "REGRESSION_DATASETS", "Dataset", "load_dataset",
           "load_regression_dataset", "make_mnist1d", "make_teacher", "make_teacher_regression",
           "stratified_split"]

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "teacher")
#: Built-in data sets with real-valued targets (``--task regression``).
REGRESSION_DATASETS: tuple[str, ...] = ("teacher",)


@dataclass
class Dataset:
    """A train/test split ready for training: float32 inputs and int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict[str, Any]:
        """Return a JSON-able summary (name, sizes, shape, classes)."""
        return {"name": self.name, "n_train": int(self.x_train.shape[0]),
                "n_test": int(self.x_test.shape[0]), "in_shape": list(self.in_shape),
                "n_classes": self.n_classes}


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Return ``(train_idx, test_idx)``: per class, a seeded ``test_fraction`` goes to test.

    Example:
        >>> tr, te = stratified_split(np.array([0] * 10 + [1] * 10), 0.2, seed=0)
        >>> len(tr), len(te), int(np.sum(np.array([0] * 10 + [1] * 10)[te]))
        (16, 4, 2)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        n_test = round(test_fraction * idx.size)
        if idx.size >= 2:
            n_test = min(max(n_test, 1), idx.size - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _finish(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> Dataset:
    """Split, standardize each feature by the training split's statistics, convert."""
    tr, te = stratified_split(y, test_fraction, seed)
    x = x.astype(np.float64)
    flat = x.reshape(x.shape[0], -1)
    mean = flat[tr].mean(axis=0)
    std = flat[tr].std(axis=0)
    std[std < 1e-8] = 1.0
    flat = (flat - mean) / std
    x = flat.reshape(x.shape).astype(np.float32)
    n_classes = int(y.max()) + 1
    return Dataset(name, torch.from_numpy(x[tr]), torch.from_numpy(y[tr].astype(np.int64)),
                   torch.from_numpy(x[te]), torch.from_numpy(y[te].astype(np.int64)), n_classes)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the 'digits' dataset ships with scikit-learn, which is not installed; install the "
            "report extra: pip install 'initwise[report]' (or pick --dataset mnist1d/teacher)"
        ) from None
    d = load_digits()
    return np.asarray(d.data, dtype=np.float64).reshape(-1, 1, 8, 8), np.asarray(d.target)


# MNIST-1D's ten 12-point templates, one per digit (Greydanus 2020, Fig. 1; raw heights before
# the standardization done in _mnist1d_templates).
_MNIST1D_DIGITS = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
], dtype=np.float64)

# The reference generator's defaults (mnist1d.data.get_dataset_args).
_MNIST1D_PADDING = (36, 60)  # zeros appended after the template, uniform integer in [36, 60]
_MNIST1D_SCALE = 0.4  # amplitude factor uniform in 1 ± 0.2
_MNIST1D_MAX_SHIFT = 48  # circular shift uniform integer in [0, 48)
_MNIST1D_CORR_NOISE = 0.25  # std of the white noise smoothed (Gaussian, sigma 2) into the padding
_MNIST1D_IID_NOISE = 0.02  # white noise added everywhere
_MNIST1D_SHEAR = 0.75  # linear trend of slope uniform in ±0.375 over the signal
_MNIST1D_EPS = 1e-8  # added to the template so that the padding (exactly 0) is found again


def _mnist1d_templates() -> np.ndarray:
    """The templates standardized per digit, shifted to start at 0, divided by 6."""
    x = _MNIST1D_DIGITS - _MNIST1D_DIGITS.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    return (x - x[:, :1]) / 6.0


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """1-D Gaussian filter, radius ``int(4 sigma + 0.5)``, edges mirrored (scipy's 'reflect')."""
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return np.convolve(np.pad(x, r, mode="symmetric"), k / k.sum(), mode="valid")


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of ``x`` (on an even grid over [0, 1]) at ``n`` even points."""
    return np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, x.size), x)


def _mnist1d_sample(template: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """One transformed template of length 72 (template + the largest padding), not subsampled."""
    lo, hi = _MNIST1D_PADDING
    full = template.size + hi
    pad = lo + int(rs.rand() * (hi - lo + 1))
    sig = _resample(np.concatenate([template + _MNIST1D_EPS, np.zeros(pad)]), full)  # dilate
    sig = sig * (1.0 + _MNIST1D_SCALE * (rs.rand() - 0.5))
    sig = np.roll(sig, rs.randint(0, _MNIST1D_MAX_SHIFT))
    corr = _gaussian_smooth(_MNIST1D_CORR_NOISE * rs.randn(full), 2.0)
    sig = np.where(sig != 0.0, sig, corr)  # correlated noise in the padding only
    sig = sig + _MNIST1D_IID_NOISE * rs.randn(full)
    return sig - _MNIST1D_SHEAR * (rs.rand() - 0.5) * np.linspace(-0.5, 0.5, full)


def make_mnist1d(n: int = 5000, *, length: int = 40, seed: int = 42,
                 shuffle_seq: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D (Greydanus, 2020): ``(x, y)`` with ``x`` of shape ``(n, 1, length)``.

    The reference generator's algorithm and defaults ("Scaling down deep learning", the
    ``mnist1d`` package): each of ten 12-point digit templates (standardized, starting at 0)
    gets 36-60 zeros appended, is resampled to 72 points (so the digit is dilated by a random
    factor), scaled by ``1 ± 0.2``, circularly shifted by 0-47 points; the padding is replaced
    by Gaussian-smoothed (σ = 2 samples) noise of std 0.25, white noise of std 0.02 is added, a
    random linear shear of slope in ±0.375, and the result is resampled to ``length`` points.
    Classes come in equal blocks, then are shuffled; the whole set is standardized by its
    global mean and std. Draws follow the reference's order from
    ``numpy.random.RandomState(seed)``: with ``n = 5000`` and ``seed = 42`` (the defaults) this
    is the reference data set (``shuffle_seq``: its fixed permutation of the positions).

    Example:
        >>> x, y = make_mnist1d(20, seed=1)
        >>> x.shape, sorted(set(y.tolist())) == list(range(10))
        ((20, 1, 40), True)
    """
    if n < 1 or length < 2:
        raise ValueError(f"make_mnist1d: need n >= 1 and length >= 2, got n={n}, length={length}")
    rs = np.random.RandomState(seed)
    templates = _mnist1d_templates()
    counts = [n // 10 + (1 if c < n % 10 else 0) for c in range(10)]
    xs = np.stack([_resample(_mnist1d_sample(templates[c], rs), length)
                   for c in range(10) for _ in range(counts[c])])
    y = np.repeat(np.arange(10), counts)
    order = rs.permutation(n)
    xs, y = xs[order], y[order]
    if shuffle_seq:
        xs = xs[:, rs.permutation(length)]
    xs = (xs - xs.mean()) / xs.std()
    return xs.reshape(n, 1, length), y


def make_teacher(n: int = 3000, *, dim: int = 32, n_classes: int = 10, depth: int = 4,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate a teacher-student task: Gaussian inputs labelled by a random deep tanh network.

    The teacher has ``depth`` tanh layers of width ``4 * dim`` with weights ``N(0, 1/fan_in)``
    scaled by tanh's gain; its ``n_classes`` output biases are tuned so classes are balanced.

    Example:
        >>> x, y = make_teacher(500, seed=0)
        >>> x.shape, int(np.bincount(y).min()) > 20
        ((500, 32), True)
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    h = x
    width = 4 * dim
    for i in range(depth):
        fan_out = n_classes if i == depth - 1 else width
        w = rng.standard_normal((h.shape[1], fan_out)) / math.sqrt(h.shape[1])
        h = h @ w if i == depth - 1 else np.tanh(1.6 * (h @ w))
    bias = np.zeros(n_classes)
    for _ in range(50):
        freq = np.bincount(np.argmax(h + bias, axis=1), minlength=n_classes) / n
        bias -= 0.5 * np.log(np.maximum(freq, 0.5 / n) * n_classes) * h.std()
    y = np.argmax(h + bias, axis=1)
    return x, y


def make_teacher_regression(n: int = 3000, *, dim: int = 32, n_out: int = 10, depth: int = 4,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate a regression task: Gaussian inputs and the real-valued outputs of a random deep
    tanh "teacher" (as :func:`make_teacher`'s, without the argmax), each output standardized.

    Example:
        >>> x, t = make_teacher_regression(500, seed=0)
        >>> x.shape, t.shape, bool(abs(t.std(axis=0) - 1).max() < 1e-9)
        ((500, 32), (500, 10), True)
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    h = x
    for i in range(depth):
        fan_out = n_out if i == depth - 1 else 4 * dim
        w = rng.standard_normal((h.shape[1], fan_out)) / math.sqrt(h.shape[1])
        h = h @ w if i == depth - 1 else np.tanh(1.6 * (h @ w))
    return x, (h - h.mean(axis=0)) / h.std(axis=0)


def load_regression_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load a regression data set (see :data:`REGRESSION_DATASETS`): a seeded random split,
    inputs standardized by the training split; ``y`` float32 of shape ``(n, n_out)`` and
    ``n_classes`` the number of outputs.

    Example:
        >>> ds = load_regression_dataset("teacher")
        >>> ds.in_shape, ds.n_classes, ds.y_train.dtype
        ((32,), 10, torch.float32)
    """
    if name != "teacher":
        raise ValueError(f"unknown regression dataset {name!r}. Valid options: "
                         f"{', '.join(REGRESSION_DATASETS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    x, t = make_teacher_regression(3000, seed=12345)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_test = max(1, round(test_fraction * x.shape[0]))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    x = ((x - mean) / np.where(std < 1e-8, 1.0, std)).astype(np.float32)
    t = t.astype(np.float32)
    return Dataset(name, torch.from_numpy(x[tr]), torch.from_numpy(t[tr]),
                   torch.from_numpy(x[te]), torch.from_numpy(t[te]), int(t.shape[1]))


def _npz(path: str) -> tuple[np.ndarray, np.ndarray]:
    import zipfile

    try:
        f = np.load(path, allow_pickle=False)
    except ValueError:
        # numpy's message for a file of unknown format ("contains pickled data") misleads.
        raise ValueError(f"{path}: not a valid .npz file (not a zip archive of .npy arrays)"
                         ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a valid .npz file ({type(e).__name__}: {e})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a valid .npz file (it holds a single {type(f).__name__}; "
                         "save the dataset with numpy.savez(path, X=..., y=...))")
    try:
        with f:
            keys = list(f.keys())
            if "X" not in keys or "y" not in keys:
                raise ValueError(
                    f"{path}: a dataset .npz needs arrays named 'X' and 'y'; found {keys}")
            try:
                x, y = np.asarray(f["X"]), np.asarray(f["y"])
            except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
                raise ValueError(f"{path}: not a valid .npz file ({type(e).__name__}: {e})"
                                 ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a valid .npz file ({type(e).__name__}: {e})") from None
    if x.dtype.kind not in "fiub":
        raise ValueError(f"{path}: X must be numeric, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{path}: X must have shape (n_samples, ...features), got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{path}: y must have shape ({x.shape[0]},) to match X {x.shape}, "
                         f"got {y.shape}")
    if not np.all(np.isfinite(x.astype(np.float64))):
        raise ValueError(f"{path}: X contains NaN or infinite values")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{path}: y must hold integer class labels, got non-integer floats")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{path}: y must hold integer class labels, got dtype {y.dtype}")
    classes, y = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{path}: y has a single class; need at least 2 to classify")
    if np.bincount(y).min() < 2:
        raise ValueError(f"{path}: every class needs at least 2 samples for a train/test split")
    return x, y


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Load ``name`` (a built-in dataset or a ``.npz`` path) split with ``seed``.

    Example:
        >>> ds = load_dataset("teacher", seed=0)
        >>> ds.in_shape, ds.n_classes, ds.x_train.shape[0] + ds.x_test.shape[0]
        ((32,), 10, 3000)
    """
    if name == "digits":
        x, y = _digits()
    elif name == "mnist1d":
        x, y = make_mnist1d(5000, seed=42)
    elif name == "teacher":
        x, y = make_teacher(3000, seed=12345)
    elif name.endswith(".npz") or os.path.isfile(name):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"dataset file not found: {name}")
        x, y = _npz(name)
    else:
        raise ValueError(f"unknown dataset {name!r}. Valid options: "
                         f"{', '.join(BUILTIN_DATASETS)}, or a path to a .npz file with X and y")
    return _finish(name if name in BUILTIN_DATASETS else os.path.basename(name), x, y,
                   test_fraction, seed)
