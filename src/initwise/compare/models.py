"""Built-in architectures for ``initwise compare`` and a loader for user model factories.

Every builder has the signature ``(in_shape, n_classes, depth, width, activation, **opts)``
and returns an ``nn.Module`` mapping a batch of shape ``(batch, *in_shape)`` to logits.

- ``mlp``: ``depth`` Linear layers (``depth - 1`` hidden layers of ``width`` units followed
  by ``activation``, then the classifier); no normalization.
- ``cnn``: ``depth`` 3x3 (or length-3) convolutions with ``width`` channels, global average
  pooling, linear classifier; Conv2d for ``(C, H, W)`` inputs, Conv1d for ``(C, L)``.
- ``resnet``: a stem convolution, ``depth`` residual :class:`BasicBlock`\\ s
  (conv-norm-act-conv-norm plus identity), global pooling, classifier. ``norm="none"`` drops
  the normalization (the setting where Fixup / zero-init-residual matter). Flat inputs use
  Linear layers instead of convolutions.
- ``resmlp``: the same residual network on flattened inputs, with Linear layers (fast on CPU).
- ``transformer``: inputs flattened and cut into tokens (digits: 8 tokens of 8 pixels), a
  linear token embedding plus learned positions, ``depth`` pre-norm encoder layers, mean
  pooling, classifier.

A user model is given as ``"package.module:factory"``; ``factory`` is called as
``factory(in_shape=..., n_classes=..., depth=..., width=..., activation=...)`` and must return
an ``nn.Module`` (it may ignore arguments it does not use, but must accept them, e.g. with
``**kwargs``).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "ARCHS", "BasicBlock", "ModelFactoryError", "activation_module",
           "build_model", "build_user_model", "check_output", "load_factory", "token_size"]


class _ReLU2(nn.Module):
    """Squared ReLU, ``relu(x) ** 2`` (So et al., 2021, "Primer")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class _QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation used by CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACT: dict[str, Callable[[], nn.Module]] = {
    "prelu": nn.PReLU, "relu2": _ReLU2, "quick_gelu": _QuickGELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "elu": nn.ELU, "selu": nn.SELU,
    "celu": nn.CELU, "softplus": nn.Softplus, "mish": nn.Mish, "hardtanh": nn.Hardtanh,
    "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid,
    "softsign": nn.Softsign, "tanhshrink": nn.Tanhshrink, "logsigmoid": nn.LogSigmoid,
    "linear": nn.Identity, "identity": nn.Identity,
}


def _activations() -> tuple[str, ...]:
    """Names we can build, restricted to the canonical names in ``initwise.gains`` if known."""
    from .. import gains

    canonical = getattr(gains, "ACTIVATIONS", None)
    if not canonical:
        return tuple(sorted(_ACT))
    names = tuple(sorted(n for n in _ACT if n in set(canonical)))
    return names or tuple(sorted(_ACT))


ACTIVATIONS: tuple[str, ...] = _activations()
ARCHS: tuple[str, ...] = ("mlp", "cnn", "resnet", "resmlp", "transformer")


def activation_module(name: str) -> nn.Module:
    """Return a fresh ``nn.Module`` for the activation ``name``.

    Example:
        >>> activation_module("relu")
        ReLU()
    """
    if name not in ACTIVATIONS:
        from .._checks import raise_unknown

        raise_unknown("activation", name, ACTIVATIONS)
    return _ACT[name]()


def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _mlp(in_shape: tuple[int, ...], n_classes: int, depth: int, width: int,
         activation: str) -> nn.Module:
    _check_size("depth", depth, 1)
    d_in = math.prod(in_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth - 1):
        layers += [nn.Linear(d_in if i == 0 else width, width), activation_module(activation)]
    layers.append(nn.Linear(d_in if depth == 1 else width, n_classes))
    return nn.Sequential(*layers)


def _conv(n_dim: int) -> type[nn.Module]:
    return nn.Conv2d if n_dim == 2 else nn.Conv1d


def _pool(n_dim: int) -> nn.Module:
    return nn.AdaptiveAvgPool2d(1) if n_dim == 2 else nn.AdaptiveAvgPool1d(1)


def _spatial(in_shape: tuple[int, ...], arch: str) -> int:
    if len(in_shape) not in (2, 3):
        raise ValueError(f"arch {arch!r} needs inputs shaped (C, L) or (C, H, W); got samples "
                         f"of shape {in_shape}")
    return len(in_shape) - 1


def _cnn(in_shape: tuple[int, ...], n_classes: int, depth: int, width: int,
         activation: str) -> nn.Module:
    _check_size("depth", depth, 1)
    nd = _spatial(in_shape, "cnn")
    conv = _conv(nd)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [conv(in_shape[0] if i == 0 else width, width, 3, padding=1),
                   activation_module(activation)]
    layers += [_pool(nd), nn.Flatten(), nn.Linear(width, n_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """A residual block ``act(x + norm2(conv2(act(norm1(conv1(x))))))`` (torchvision layout).

    With ``norm="none"`` the norms are identities; ``conv2`` is the last layer of the residual
    branch (the one Fixup scales and zero-init-residual zeroes).
    """

    def __init__(self, width: int, activation: str, norm: str, n_dim: int) -> None:
        super().__init__()
        if n_dim == 0:
            self.conv1: nn.Module = nn.Linear(width, width)
            self.conv2: nn.Module = nn.Linear(width, width)
            bn: Callable[[int], nn.Module] = nn.BatchNorm1d
        else:
            conv = _conv(n_dim)
            self.conv1 = conv(width, width, 3, padding=1, bias=norm == "none")
            self.conv2 = conv(width, width, 3, padding=1, bias=norm == "none")
            bn = nn.BatchNorm2d if n_dim == 2 else nn.BatchNorm1d
        self.bn1: nn.Module = bn(width) if norm == "batch" else nn.Identity()
        self.bn2: nn.Module = bn(width) if norm == "batch" else nn.Identity()
        self.act1 = activation_module(activation)
        self.act2 = activation_module(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        return self.act2(x + self.bn2(self.conv2(out)))


class _ResNet(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], n_classes: int, depth: int, width: int,
                 activation: str, norm: str) -> None:
        super().__init__()
        if len(in_shape) in (2, 3):
            nd = len(in_shape) - 1
            self.stem: nn.Module = _conv(nd)(in_shape[0], width, 3, padding=1)
            self.pool: nn.Module = nn.Sequential(_pool(nd), nn.Flatten())
        else:
            nd = 0
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width))
            self.pool = nn.Identity()
        self.stem_act = activation_module(activation)
        self.blocks = nn.Sequential(*(BasicBlock(width, activation, norm, nd)
                                      for _ in range(depth)))
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem_act(self.stem(x)))))


def token_size(n_features: int) -> int:
    """Return the token size used to cut ``n_features`` inputs: the smallest divisor >= sqrt.

    Example:
        >>> token_size(64), token_size(40), token_size(32)
        (8, 8, 8)
    """
    root = math.isqrt(n_features - 1) + 1 if n_features > 1 else 1
    return next(p for p in range(root, n_features + 1) if n_features % p == 0)


class _Transformer(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], n_classes: int, depth: int, width: int,
                 activation: str) -> None:
        super().__init__()
        n = math.prod(in_shape)
        self.token = token_size(n)
        self.n_tokens = n // self.token
        heads = next(h for h in (4, 2, 1) if width % h == 0)
        self.embed = nn.Linear(self.token, width)
        self.pos = nn.Parameter(torch.zeros(1, self.n_tokens, width))
        nn.init.normal_(self.pos, std=0.02)
        act: Any = activation if activation in ("relu", "gelu") else activation_module(activation)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0,
                                           activation=act, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(x.shape[0], self.n_tokens, self.token)
        h = self.encoder(self.embed(t) + self.pos)
        return self.fc(self.norm(h.mean(dim=1)))


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """Import ``"package.module:factory"`` and return the callable, with clear errors.

    The working directory is *appended* to ``sys.path`` (the console script, unlike
    ``python -m``, does not put it there), so ``./mymodels.py`` is found but a stray
    ``./matplotlib.py`` cannot shadow an installed package. A syntax error in the module is a
    one-line ``ValueError`` naming the file and line.

    Example:
        >>> load_factory("torch.nn:Identity")
        <class 'torch.nn.modules.linear.Identity'>
    """
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"a user model must be given as 'package.module:factory', got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        mod = importlib.import_module(mod_name)
    except SyntaxError as e:
        where = f"{e.filename or mod_name}, line {e.lineno}" if e.lineno else (e.filename
                                                                                or mod_name)
        raise ValueError(f"model {spec!r}: syntax error in {where}: {e.msg}") from None
    except ImportError as e:
        raise ValueError(f"cannot import module {mod_name!r} for model {spec!r}: {e}. Built-in "
                         f"architectures: {', '.join(ARCHS)}") from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {mod_name!r} has no attribute {attr!r} (model {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{spec!r} is not callable")
    return obj


class ModelFactoryError(RuntimeError):
    """A user model factory raised while building the model (its own error, kept whole)."""


_FACTORY_KWARGS = ("in_shape", "n_classes", "depth", "width", "activation")


def _call_factory(spec: str, fn: Callable[..., Any], **kwargs: Any) -> nn.Module:
    """Call a user factory; a wrong signature and the factory's own errors name the factory."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: just call it
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            raise ValueError(
                f"model factory {spec!r} has the signature {sig}, which cannot take the "
                f"keyword arguments {', '.join(_FACTORY_KWARGS)} ({e}); add the missing ones "
                "or **kwargs") from None
    try:
        model = fn(**kwargs)
    except Exception as e:
        raise ModelFactoryError(f"model factory {spec!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {spec!r} returned {type(model).__name__}, "
                        "expected a torch.nn.Module")
    return model


def build_user_model(spec: str, **kwargs: Any) -> tuple[nn.Module, Any, set[str]]:
    """Call the user factory ``"pkg.mod:fn"`` for a one-model command (audit, plan, check,
    digest): it gets those of ``kwargs`` its signature names (all with ``**kwargs``; none for
    ``fn()``), and may return the model or ``(model, example_inputs)``: a tensor, a tuple of
    positional inputs or a dict of keyword inputs, e.g. token ids for a language model.
    Returns ``(model, example_inputs or None, the names of kwargs its signature names and
    was given: not those a ``**kwargs`` catch-all swallows)``. A
    required parameter that none of ``kwargs`` fills (or a positional-only one) is an error
    naming it.

    Example:
        >>> m, x, given = build_user_model("torch.nn:Identity", in_shape=(4,), n_classes=2)
        >>> type(m).__name__, x, sorted(given)  # Identity(*args, **kwargs) names none of them
        ('Identity', None, [])
    """
    import inspect

    fn = load_factory(spec)
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read: the full set, as for compare
        params = None
    named = set(kwargs)  # what the factory names itself (a **kwargs catch-all names nothing)
    if params is not None:
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params):
        names = named
        missing = [p.name for p in params if p.default is p.empty and p.kind is not p.VAR_POSITIONAL
                   and (p.name not in kwargs or p.kind is p.POSITIONAL_ONLY)]  # fmt: skip
        if missing:
            raise ValueError(
                f"model factory {spec!r} requires {', '.join(missing)}, which the command line "
                f"cannot give: it passes only the keyword arguments {', '.join(kwargs)} that "
                "the factory names (not positional-only ones). Give the others default values")
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    try:
        out = fn(**kwargs)
    except Exception as e:
        raise ModelFactoryError(f"model factory {spec!r} raised {type(e).__name__}: {e}") from e
    inputs = None
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module):
        out, inputs = out
    if not isinstance(out, nn.Module):
        raise TypeError(f"model factory {spec!r} returned {type(out).__name__}, expected a "
                        "torch.nn.Module or (module, example_inputs)")
    return out, inputs, set(kwargs) & named


def check_output(model: nn.Module, x: torch.Tensor, n_outputs: int, arch: str, *,
                 regression: bool = False) -> None:
    """Raise ``ValueError`` unless ``model(x)`` is a tensor of shape ``(len(x), n_outputs)``:
    one logit per class, or one value per regression target with ``regression=True``.

    Cross-entropy accepts any number of logits >= the largest label, and MSE broadcasts
    ``(n,)`` against ``(n, 1)``: without this check a model with the wrong head trains and
    reports numbers that mean nothing. The forward runs in eval mode without gradients; a
    forward that raises is left to the runs (each records its error).

    Example:
        >>> check_output(nn.Linear(4, 3), torch.zeros(2, 4), 3, "mlp")
        >>> check_output(nn.Linear(4, 5), torch.zeros(2, 4), 3, "my:net")
        Traceback (most recent call last):
        ...
        ValueError: model 'my:net' maps inputs of shape (2, 4) to an output of shape (2, 5); \
the dataset has 3 classes, so it must return shape (2, 3)
    """
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception:  # a forward that fails is recorded per run, as during training
        return
    finally:
        model.train(was)
    want = (int(x.shape[0]), n_outputs)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == want:
        return
    got = (f"an output of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
           else f"a {type(out).__name__}, not a tensor")
    what = "regression targets" if regression else "classes"
    raise ValueError(f"model {arch!r} maps inputs of shape {tuple(x.shape)} to {got}; the "
                     f"dataset has {n_outputs} {what}, so it must return shape {want}")


def build_model(arch: str, in_shape: tuple[int, ...], n_classes: int, *, depth: int = 5,
                width: int = 64, activation: str = "relu", norm: str = "batch") -> nn.Module:
    """Build the built-in architecture ``arch`` or call the user factory ``"pkg.mod:fn"``.

    Example:
        >>> m = build_model("mlp", (1, 8, 8), 10, depth=3, width=16)
        >>> m(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    _check_size("width", width, 1)
    if ":" in arch:
        return _call_factory(arch, load_factory(arch), in_shape=in_shape, n_classes=n_classes,
                             depth=depth, width=width, activation=activation)
    if activation not in ACTIVATIONS:
        from .._checks import raise_unknown

        raise_unknown("activation", activation, ACTIVATIONS)
    if arch == "mlp":
        return _mlp(in_shape, n_classes, depth, width, activation)
    if arch == "cnn":
        return _cnn(in_shape, n_classes, depth, width, activation)
    if arch in ("resnet", "resmlp"):
        if norm not in ("batch", "none"):
            from .._checks import raise_unknown

            raise_unknown("norm", norm, ("batch", "none"))
        _check_size("depth", depth, 1)
        shape = (math.prod(in_shape),) if arch == "resmlp" else in_shape
        return _ResNet(shape, n_classes, depth, width, activation, norm)
    if arch == "transformer":
        _check_size("depth", depth, 1)
        return _Transformer(in_shape, n_classes, depth, width, activation)
    from .._checks import raise_unknown

    raise_unknown("arch", arch, (*ARCHS, "package.module:factory"))
