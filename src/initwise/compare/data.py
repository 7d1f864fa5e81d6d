"""Datasets for ``initwise compare``: small, real or procedurally generated, all offline.

Every loader returns a :class:`Dataset` holding a stratified, seeded train/test split with
inputs standardized by the training split's statistics. Inputs keep a natural shape so that
each architecture can read them: digits are ``(1, 8, 8)`` images, MNIST-1D signals are
``(1, 40)``, teacher inputs are flat vectors.

- ``digits``: scikit-learn's ``load_digits`` (1797 8x8 handwritten digits shipped with
  scikit-learn, no download; install with ``pip install initwise[report]``).
- ``mnist1d``: a re-implementation, from its published description, of the MNIST-1D idea
  (Greydanus, 2020): ten 1-D template patterns, randomly padded, stretched, sheared and shifted,
  with correlated and white noise, resampled to 40 points.
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

__all__ = ["BUILTIN_DATASETS", "Dataset", "load_dataset", "make_mnist1d", "make_teacher",
           "stratified_split"]

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist1d", "teacher")


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


# Ten hand-drawn 12-point 1-D templates, one per class (our own shapes, in the spirit of MNIST-1D).
_TEMPLATES = np.array([
    [0, 3, 5, 5, 3, 0, 0, 3, 5, 5, 3, 0],         # two bumps
    [0, 0, 0, 5, 5, 5, 5, 5, 5, 0, 0, 0],         # plateau
    [5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5],         # valley
    [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0],         # peak
    [0, 5, 0, 5, 0, 5, 0, 5, 0, 5, 0, 5],         # fast oscillation
    [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5],         # saw tooth
    [5, 5, 5, 5, 5, 5, 0, 0, 0, 0, 0, 0],         # step down
    [0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 5],         # step up
    [0, 5, 5, 0, -5, -5, 0, 5, 5, 0, -5, -5],     # slow oscillation
    [0, -3, -5, -3, 0, 3, 5, 3, 0, -3, -5, 0],    # sine-like
], dtype=np.float64) / 5.0


def make_mnist1d(n: int = 4000, *, length: int = 40, seed: int = 0) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """Generate an MNIST-1D-style data set: ``(x, y)`` with ``x`` of shape ``(n, 1, length)``.

    Following Greydanus (2020), "Scaling down deep learning": each sample is one of ten 1-D
    templates, zero-padded by a random amount, stretched by a random factor in [0.75, 1.25],
    sheared by a random linear trend, circularly shifted, corrupted by smoothed (correlated)
    and white Gaussian noise, and resampled to ``length`` points.

    Example:
        >>> x, y = make_mnist1d(20, seed=1)
        >>> x.shape, sorted(set(y.tolist())) == list(range(10))
        ((20, 1, 40), True)
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    rng.shuffle(y)
    xs = np.empty((n, length))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    kernel /= np.sqrt(np.sum(kernel**2))
    for i, c in enumerate(y):
        t = _TEMPLATES[c]
        pad = rng.integers(12, 25, size=2)
        sig = np.concatenate([np.zeros(pad[0]), t, np.zeros(pad[1])])
        stretch = rng.uniform(0.75, 1.25)
        m = max(8, round(sig.size * stretch))
        sig = np.interp(np.linspace(0, sig.size - 1, m), np.arange(sig.size), sig)
        sig = sig + rng.uniform(-0.5, 0.5) * np.linspace(-1, 1, m)
        sig = np.roll(sig, rng.integers(0, m))
        sig = sig + 0.25 * np.convolve(rng.standard_normal(m + 12), kernel, mode="valid")
        sig = sig + 0.1 * rng.standard_normal(m)
        xs[i] = np.interp(np.linspace(0, m - 1, length), np.arange(m), sig)
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
        x, y = make_mnist1d(4000, seed=12345)
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
