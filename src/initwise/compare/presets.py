"""Named presets that reproduce published initialization experiments at small scale.

Each preset is a set of :class:`~initwise.compare.run.CompareConfig` overrides; command-line
options given explicitly override the preset.

- ``default``: deep ReLU MLP depth sweep (5 and 30 layers, width 128) on digits with SGD +
  momentum: PyTorch default, Xavier, Kaiming, auto, LSUV, orthogonal; 3 seeds.
- ``he2015``: He et al. (2015), "Delving Deep into Rectifiers", section 2.3 and Fig. 3: a
  30-layer plain ReLU network trained with SGD + momentum and no normalization. Xavier stalls
  (its signal shrinks by 1/sqrt(2) per layer), Kaiming trains. A careful recipe (lr 0.002,
  40 epochs, 5 seeds): with lr 0.005 a Kaiming seed can reach 0.90 and then collapse.
- ``seed-mlp``: the classic 784-256-128-10 MLP with Adam, with and without Kaiming init; on
  8x8 digits it is 64-256-128-10 (:func:`seed_mlp`); 5 seeds. The report measures the three
  claims of the with/without-Kaiming table: stable gradients (gradient spread at init),
  convergence speed (steps to 90%) and accuracy. Shallow plus Adam: init matters little,
  which is the honest result to show.
- ``tanh-xavier``: Glorot & Bengio (2010): tanh MLPs, PyTorch's default fan-in uniform init vs
  Xavier (normalized) init, at depths 5 and 15.
- ``deep-resnet``: an unnormalized 16-block residual MLP (``resmlp``, ``--norm none``): plain
  Kaiming (the residual sum doubles the variance per block, so it diverges) vs Fixup
  (Zhang et al., 2019), zero-init residual (Goyal et al., 2017) and PyTorch's default.
- ``lr-transfer``: Tensor Programs V, Fig. 1 (Yang et al., 2022): learning-rate transfer across
  width. ReLU MLPs (2 hidden layers) of width 64, 256 and 1024 on digits, Adam, one epoch,
  learning rates 2^-13 .. 2^-4, SP vs muP, 2 seeds: SP's best rate falls as the width grows,
  muP's stays (:mod:`initwise.compare.transfer`; measured figures in docs/compare.md).
- ``lr-transfer-depth``: the same across depth (Dey et al., 2025, CompleteP): residual MLPs
  with BatchNorm of 2, 8 and 32 blocks (width 64), muP vs CompleteP, 1 seed.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["PRESETS", "preset_overrides", "seed_mlp"]

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "he2015": {"arch": "mlp", "activation": "relu", "depths": [30], "widths": [128],
               "schemes": ["xavier", "kaiming"], "optimizer": "sgd", "lr": 0.002,
               "momentum": 0.9, "epochs": 40, "seeds": 5},
    "seed-mlp": {"arch": "initwise.compare.presets:seed_mlp", "depths": [3], "widths": [256],
                 "activation": "relu", "schemes": ["torch", "kaiming"], "optimizer": "adam",
                 "lr": 0.001, "epochs": 10, "seeds": 5},
    "tanh-xavier": {"arch": "mlp", "activation": "tanh", "depths": [5, 15], "widths": [128],
                    "schemes": ["torch", "xavier", "kaiming"], "optimizer": "sgd", "lr": 0.01,
                    "epochs": 15, "seeds": 3},
    "deep-resnet": {"arch": "resmlp", "norm": "none", "depths": [16], "widths": [128],
                    "schemes": ["torch", "kaiming", "fixup", "zero_residual"],
                    "optimizer": "sgd", "lr": 0.01, "epochs": 10, "seeds": 2},
    "lr-transfer": {"arch": "mlp", "activation": "relu", "depths": [3],
                    "widths": [64, 256, 1024], "optimizer": "adam", "epochs": 1, "seeds": 2,
                    "lrs": [2.0**k for k in range(-13, -3)], "parametrizations": ["sp", "mup"]},
    "lr-transfer-depth": {"arch": "resmlp", "norm": "batch", "activation": "relu",
                          "depths": [2, 8, 32], "widths": [64], "optimizer": "adam",
                          "epochs": 1, "seeds": 1, "lrs": [2.0**k for k in range(-13, -2)],
                          "parametrizations": ["mup", "completep"]},
}


def preset_overrides(name: str) -> dict[str, Any]:
    """Return a copy of the overrides of preset ``name`` (``ValueError`` lists valid ones).

    Example:
        >>> preset_overrides("he2015")["depths"]
        [30]
    """
    if name not in PRESETS:
        from .._checks import raise_unknown

        raise_unknown("preset", name, PRESETS)
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}


def seed_mlp(in_shape: tuple[int, ...], n_classes: int, depth: int = 3, width: int = 256,
             activation: str = "relu") -> nn.Module:
    """Build the ``seed-mlp`` network: ``in -> width -> width/2 -> n_classes`` (depth ignored).

    Example:
        >>> seed_mlp((1, 8, 8), 10)
        Sequential(
          (0): Flatten(start_dim=1, end_dim=-1)
          (1): Linear(in_features=64, out_features=256, bias=True)
          (2): ReLU()
          (3): Linear(in_features=256, out_features=128, bias=True)
          (4): ReLU()
          (5): Linear(in_features=128, out_features=10, bias=True)
        )
    """
    from .models import activation_module

    d = 1
    for s in in_shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, width), activation_module(activation),
                         nn.Linear(width, width // 2), activation_module(activation),
                         nn.Linear(width // 2, n_classes))
