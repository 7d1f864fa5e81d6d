"""Presets: the named policies (``auto``, ``torch``, ``xavier``, ``gpt2``, ``fixup``, ...).

``get_policy`` turns what a user passes as ``policy=`` (a preset name, a registered scheme
name, a :class:`~initwise.model.policy.Policy` or a list of rules) into a Policy.

>>> get_policy("gpt2").name
'gpt2'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

from .._checks import raise_unknown
from ..registry import get_scheme, resolve_scheme_name, scheme_names
from .policy import Policy, Rule

__all__ = ["PRESETS", "get_policy", "is_builtin_policy_name", "presets"]


_WEIGHT_LAYERS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                  "ConvTranspose3d", "Conv1D")  # fmt: skip
_RNN = ("RNNBase", "RNNCellBase")
_BATCHNORM = ("_BatchNorm",)


def _common_tail() -> list[Rule]:
    """Rules shared by the variance-scaling presets after their weight rule."""
    return [
        Rule("zeros", role=("bias", "recurrent_bias", "norm_bias", "scalar_bias")),
        Rule("ones", role=("norm", "scalar_scale")),
        Rule("zeros", role="norm_stats", name="*running_mean"),
        Rule("ones", role="norm_stats", name="*running_var"),
        Rule("keep", note="not covered by the preset: left to the module"),
    ]


def _structural_head() -> list[Rule]:
    return [
        Rule("auto", role="tied_embedding", fans="tensor",
             note="a table that is also the output head: N(0, 1/d) keeps initial logits O(1)"),
        Rule("normal", {"mean": 0.0, "std": 1.0}, role="embedding", note="unit-variance embedding rows"),
        Rule("orthogonal", role="recurrent", note="orthogonal per gate block (Saxe et al. 2013)"),
        Rule("forget_gate_bias", {"value": 1.0}, module="LSTM", role="recurrent_bias",
             note="Jozefowicz et al. 2015"),
        Rule("forget_gate_bias", {"value": 1.0}, module="LSTMCell", role="recurrent_bias"),
    ]


class _Presets:
    """Named policies. ``initwise.presets.gpt2(n_layer=12)`` builds one with options.

    >>> sorted(presets.names())[:3]
    ['auto', 'dcgan', 'deepnet']
    """

    def names(self) -> tuple[str, ...]:
        return PRESETS

    def get(self, name: str) -> Policy:
        """The preset ``name``, or :meth:`scheme` for a registered scheme name or alias."""
        check = name.strip().lower() if isinstance(name, str) else name
        if check in PRESETS:
            fn: Callable[[], Policy] = getattr(self, check)
            return fn()
        try:
            resolved = resolve_scheme_name(check)
        except (ValueError, TypeError):
            raise_unknown("preset or scheme", name, [*PRESETS, *scheme_names()])
        return self.scheme(resolved)

    def scheme(self, name: str, **params: Any) -> Policy:
        """Every weight (weight, recurrent input, branch, residual output and classifier roles)
        by the registered scheme ``name`` with ``params``; the rest as in the simple presets
        (recurrent weights orthogonal per gate block, biases 0, norms 1/0, embeddings N(0, 1)).

        >>> presets.scheme("he_uniform").rules[5].scheme
        'kaiming_uniform'
        """
        resolved = get_scheme(name, **params)  # validates name and parameters
        return self._simple(resolved.name, resolved.name, dict(params))

    def auto(self, distribution: str = "normal") -> Policy:
        """Variance-preserving init with the exact gain of each layer's input nonlinearity.

        Weights ``N(0, g²/fan_in)`` with layer-aware fans and ``g = gains.gain(act)`` of the
        activation feeding the layer (1 for raw input); embeddings ``N(0, 1)``; recurrent
        weights orthogonal per gate block; LSTM forget-gate bias 1; biases 0; norms 1/0.
        """
        return Policy(
            (
                *_structural_head(),
                Rule("auto", {"distribution": distribution},
                     role=("weight", "recurrent_input", "branch", "residual_out", "classifier"),
                     note="N(0, g²/fan_in), g = exact gain of the input-side activation"),
                *_common_tail(),
            ),
            name="auto",
        )

    def torch(self) -> Policy:
        """Exactly what PyTorch's constructors do (values from the keyed engine)."""
        r5 = math.sqrt(5.0)
        return Policy(
            (
                Rule("xavier_uniform", module="MultiheadAttention",
                     name="re:(in_proj_weight|[qkv]_proj_weight)$", fans="tensor"),
                Rule("xavier_normal", module="MultiheadAttention", name="re:bias_[kv]$", fans="tensor"),
                Rule("zeros", module="MultiheadAttention", name="*in_proj_bias"),
                Rule("zeros", module="NonDynamicallyQuantizableLinear", role="bias",
                     note="MultiheadAttention zeroes out_proj.bias"),
                Rule("inv_sqrt_uniform", {"of": "hidden_size"}, module=_RNN,
                     note="U(±1/sqrt(hidden_size)) for every RNN parameter"),
                Rule("inv_sqrt_uniform", {"of": "in1_features"}, module="Bilinear"),
                Rule("kaiming_uniform", {"a": r5}, module=_WEIGHT_LAYERS, role="weight",
                     fans="tensor", note="kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in))"),
                Rule("inv_sqrt_uniform", module=_WEIGHT_LAYERS, role="bias",
                     note="U(±1/sqrt(fan_in of the weight tensor))"),
                Rule("normal", {"mean": 0.0, "std": 1.0}, module=("Embedding", "EmbeddingBag"),
                     role="embedding"),
                Rule("ones", role="norm", fans="tensor",
                     note="the stored tensor, as torch's constructors write it (also for a 1 + w norm)"),
                Rule("zeros", role="norm_bias"),
                Rule("zeros", role="norm_stats", name="*running_mean"),
                Rule("ones", role="norm_stats", name="*running_var"),
                Rule("keep", note="not a torch built-in: left to the module"),
            ),
            name="torch",
        )

    def _simple(self, name: str, scheme: str, params: Mapping[str, Any]) -> Policy:
        return Policy(
            (
                *_structural_head(),
                Rule(scheme, dict(params), role=("weight", "recurrent_input", "branch",
                                                  "residual_out", "classifier")),
                *_common_tail(),
            ),
            name=name,
        )

    def xavier(self) -> Policy:
        """Glorot & Bengio 2010: ``U(±sqrt(6/(fan_in+fan_out)))`` for weights."""
        return self._simple("xavier", "xavier_uniform", {})

    def kaiming(self) -> Policy:
        """He et al. 2015: ``N(0, 2/fan_in)`` (ReLU gain) for weights."""
        return self._simple("kaiming", "kaiming_normal", {"nonlinearity": "relu"})

    def lecun(self) -> Policy:
        """LeCun et al. 1998: ``N(0, 1/fan_in)`` for weights."""
        return self._simple("lecun", "lecun_normal", {})

    def orthogonal(self) -> Policy:
        """Saxe et al. 2013: orthogonal weights with the exact input-side gain."""
        return self._simple("orthogonal", "orthogonal", {"gain": "auto"})

    def gpt2(self, n_layer: int | None = None, std: float = 0.02) -> Policy:
        """Radford et al. 2019: ``N(0, 0.02²)`` everywhere, residual outputs ``/sqrt(2·n_layer)``,
        learned position embeddings ``N(0, 0.01²)`` (OpenAI's ``gpt-2`` code, ``model.py``)."""
        s = {"mean": 0.0, "std": std}
        return Policy(
            (
                Rule("normal", s, role="residual_out", depth_scale="gpt2",
                     note="N(0, (0.02/sqrt(2·n_layer))²)"),
                Rule("normal", s, role=("embedding", "weight", "recurrent", "recurrent_input",
                                        "branch", "classifier")),
                Rule("normal", {"mean": 0.0, "std": std / 2}, role="position",
                     note="learned position embeddings N(0, 0.01²), as GPT-2's own code"),
                *_common_tail(),
            ),
            name="gpt2",
            n_layer=n_layer,
        )

    def fixup(self, branches: Sequence[str] | None = None, scalars: bool = True) -> Policy:
        """Zhang et al. 2019: branch layers ×L^(-1/(2m-2)), last branch layer and classifier 0,
        and (``scalars=True``) the paper's scalar biases (0) and multiplier (1) added to each
        branch that lacks them (:mod:`initwise.model.scalars`)."""
        return Policy(
            (
                Rule("zeros", role=("classifier", "residual_out"),
                     note="last layer of each branch and the classifier start at 0"),
                Rule("auto", {"stream_gain": "branch"}, role="branch", depth_scale="fixup",
                     note="He et al. 2015 × L^(-1/(2m-2)); a layer reading the residual sum "
                          "gets its branch's gain"),
                *_structural_head(),
                Rule("auto", role=("weight", "recurrent_input")),
                *_common_tail(),
            ),
            name="fixup",
            branches=tuple(branches) if branches is not None else None,
            fixup_scalars=bool(scalars),
        )

    def zero_residual(self, branches: Sequence[str] | None = None) -> Policy:
        """Goyal et al. 2017: each residual branch ends at 0 (last norm weight, else last layer)."""
        return Policy(
            (Rule("zeros", role="branch_end"), *self.auto().rules),
            name="zero_residual",
            branches=tuple(branches) if branches is not None else None,
        )

    def rezero(self) -> Policy:
        """Bachlechner et al. 2020 / De & Smith 2020: residual gates (``resweight``, ``alpha``) = 0."""
        return Policy((Rule("zeros", role="gate"),
                       Rule("auto", {"stream_gain": "branch"}, role="branch",
                            note="He et al. 2015: a layer reading the residual sum gets its "
                                 "branch's gain"),
                       *self.auto().rules), name="rezero")

    def dcgan(self) -> Policy:
        """Radford et al. 2015: conv/linear ``N(0, 0.02²)``, BatchNorm weight ``N(1, 0.02²)``."""
        return Policy(
            (
                Rule("normal", {"mean": 1.0, "std": 0.02}, module=_BATCHNORM, role="norm"),
                Rule("normal", {"mean": 0.0, "std": 0.02},
                     role=("weight", "embedding", "branch", "residual_out", "classifier")),
                *_common_tail(),
            ),
            name="dcgan",
        )

    # ----------------------------------------------------------------------------------------
    # Reference recipes: each reproduces one family's published or reference init (sources in
    # docs/model-init.md, "Reference recipes")
    # ----------------------------------------------------------------------------------------

    def hf(self) -> Policy:
        """The model's own init (Hugging Face ``_init_weights``, else ``reset_parameters``), keyed.

        Every tensor is written by the code the model ships with, run inside
        :func:`initwise.keyed_init`: the same distributions as the model's constructor, but
        bit-identical for a seed whatever the construction order, global seed or sharding.
        """
        return Policy(
            (Rule("model_init", note="the model's own init code, keyed by (seed, name)"),),
            name="hf",
        )

    def megatron(self, n_layer: int | None = None, std: float = 0.02) -> Policy:
        """Megatron-LM: ``N(0, 0.02²)`` everywhere, residual outputs ``/sqrt(2·num_layers)``.

        ``init_method_normal(σ)`` (σ = ``init_method_std``) for every weight and embedding,
        ``scaled_init_method_normal`` for the attention ``linear_proj`` and MLP ``linear_fc2``
        (role ``residual_out``); biases 0, norms 1/0.
        """
        s = {"mean": 0.0, "std": std}
        return Policy(
            (
                Rule("normal", s, role="residual_out", depth_scale="gpt2",
                     note="output_layer_init_method = scaled_init_method_normal: "
                          "N(0, (σ/sqrt(2·num_layers))²) (linear_proj, linear_fc2)"),
                Rule("normal", s, role=_ALL_WEIGHTS, note="init_method_normal(σ)"),
                *_common_tail(),
            ),
            name="megatron",
            n_layer=n_layer,
        )

    def olmo2(self, std: float = 0.02, cutoff: float = 3.0) -> Policy:
        """OLMo 2: every weight, embeddings and head included, ``N(0, 0.02²)`` truncated at ±3σ.

        OLMo-core ``InitMethod.normal``: ``trunc_normal_(std=σ, a=-3σ, b=3σ)``; biases 0, norms 1.

        >>> dict(presets.olmo2().rules[0].params)
        {'mean': 0.0, 'std': 0.02, 'a': -0.06, 'b': 0.06}
        """
        p = {"mean": 0.0, "std": std, "a": -cutoff * std, "b": cutoff * std}
        return Policy(
            (
                Rule("trunc_normal", p, role=_ALL_WEIGHTS,
                     note=f"trunc_normal(std={std:g}, a=-{cutoff:g}σ, b={cutoff:g}σ)"),
                *_common_tail(),
            ),
            name="olmo2",
        )

    def small_init(self, d_model: int | None = None, n_layer: int | None = None) -> Policy:
        """Nguyen & Salazar 2019 / GPT-NeoX: ``N(0, 2/(5d))``, residual outputs ``std 2/(n_layer·sqrt(d))``.

        GPT-NeoX ``small_init`` for weights and embeddings, ``wang_init`` for the residual
        outputs; ``d`` is the model width (``d_model=``, else from the model); biases 0, norms 1/0.
        """
        out = Rule("normal", {"mean": 0.0, "std": 1.0}, role="residual_out", depth_scale="wang",
                   note="wang_init: std = 2/(n_layer·sqrt(d))")
        rest = Rule("normal", {"mean": 0.0, "std": 1.0}, role=_ALL_WEIGHTS, depth_scale="small_init",
                    note="small_init: std = sqrt(2/(5·d))")
        return Policy((out, rest, *_common_tail()), name="small_init", n_layer=n_layer, d_model=d_model)

    def modded_nanogpt(self) -> Policy:
        """modded-nanoGPT: weights ``U(±sqrt(3)·0.5/sqrt(fan_in))``, output projections and head 0.

        The speedrun record of 2025-02-01: ``CastedLinear`` weights with std ``0.5/sqrt(fan_in)``,
        attention and MLP ``c_proj`` and the LM head zero, embeddings ``N(0, 1)``; learned
        scalars keep the model's values.
        """
        return Policy(
            (
                Rule("zeros", role="residual_out", note="c_proj of attention and MLP: zero"),
                Rule("zeros", role="classifier", note="lm_head: zero"),
                Rule("variance_scaling", {"scale": 0.25, "mode": "fan_in", "distribution": "uniform"},
                     role=("weight", "branch", "recurrent_input"),
                     note="CastedLinear.reset_parameters: std 0.5/sqrt(fan_in), bound sqrt(3)·std"),
                Rule("normal", {"mean": 0.0, "std": 1.0}, role="embedding", note="nn.Embedding: N(0, 1)"),
                Rule("keep", role=("gate", "scalar_scale", "scalar_bias", "other"),
                     note="learned scalars (lambdas) keep the model's values"),
                *_common_tail(),
            ),
            name="modded_nanogpt",
        )

    def deepnet(self, n_layer: int | None = None, n_encoder: int | None = None,
                n_decoder: int | None = None) -> Policy:
        """Wang et al. 2022 (DeepNet): block weights ``xavier_normal(gain=β)``, query and key gain 1.

        In the numbered blocks, ``xavier_normal(gain=β)`` for the feed-forward, value and output
        projections and ``gain=1`` for query and key;
        β = (8N)^(-1/4) (one stack of N layers), or for an encoder-decoder
        β_enc = 0.87·(N⁴M)^(-1/16), β_dec = (12M)^(-1/4). The residual ``x·α + f(x)`` of
        DeepNorm is a forward change the model must make itself (see the docs)."""
        qk = Rule("xavier_normal", {"gain": 1.0}, name=_QK_NAMES, note="query/key: xavier_normal(gain=1)")
        head = Rule("auto", role="classifier", note="not in the paper: auto")
        if n_encoder is None and n_decoder is None:
            beta_rules: tuple[Rule, ...] = (
                Rule("xavier_normal", {"gain": 1.0}, name=_IN_STACK, role=("residual_out", "branch", "weight"),
                     depth_scale="deepnet", note="ffn, value, output: xavier_normal(gain=(8N)^(-1/4))"),
            )
        else:
            if not (isinstance(n_encoder, int) and isinstance(n_decoder, int) and n_encoder > 0
                    and n_decoder > 0):
                raise ValueError("deepnet: an encoder-decoder needs both n_encoder and n_decoder "
                                 f"(positive ints), got {n_encoder!r}, {n_decoder!r}")
            b_enc = 0.87 * (n_encoder**4 * n_decoder) ** (-1.0 / 16.0)
            b_dec = (12.0 * n_decoder) ** -0.25
            beta_rules = (
                Rule("xavier_normal", {"gain": 1.0}, name=r"re:(^|\.)encoder\..*\.[0-9]+\.",
                     role=("residual_out", "branch", "weight"), scale=b_enc,
                     note=f"encoder ffn, value, output: β_enc = 0.87·(N⁴M)^(-1/16) = {b_enc:.4g}"),
                Rule("xavier_normal", {"gain": 1.0}, name=r"re:(^|\.)decoder\..*\.[0-9]+\.",
                     role=("residual_out", "branch", "weight"), scale=b_dec,
                     note=f"decoder ffn, value, output: β_dec = (12M)^(-1/4) = {b_dec:.4g}"),
            )
        return Policy((qk, head, *beta_rules, *self.auto().rules), name="deepnet", n_layer=n_layer)


# The weight roles every "one distribution for all weights" recipe covers (embeddings included)
_ALL_WEIGHTS = ("embedding", "weight", "recurrent", "recurrent_input", "branch", "classifier")
# Query and key projections by name (no role tells them from the value projection)
_QK_NAMES = r"re:(^|\.)(q_proj|k_proj|q|k|query|key|wq|wk|q_lin|k_lin|to_q|to_k)\.weight$"
# A weight inside a numbered stack of blocks (h.3.mlp.fc2): the layers of the blocks
_IN_STACK = r"re:\.[0-9]+\."


PRESETS: tuple[str, ...] = ("auto", "torch", "xavier", "kaiming", "lecun", "orthogonal", "gpt2",
                            "fixup", "zero_residual", "rezero", "dcgan", "hf", "megatron", "olmo2",
                            "small_init", "modded_nanogpt", "deepnet")  # fmt: skip
presets = _Presets()


def is_builtin_policy_name(name: str) -> bool:
    """Whether ``name`` is a preset or a registered scheme name (a built-in policy)."""
    return name in PRESETS or name in scheme_names()


def get_policy(policy: str | Policy | Iterable[Rule]) -> Policy:
    """Return ``policy`` as a :class:`Policy`: a preset name, a Policy, or a list of rules.

    >>> get_policy("kaiming").rules[5].scheme
    'kaiming_normal'
    >>> get_policy("gtp2")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset or scheme 'gtp2'; did you mean 'gpt2'? Valid options: ...
    """
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return presets.get(policy)
    if isinstance(policy, torch.Tensor):
        raise TypeError("policy must be a preset name, a Policy or a list of Rules")
    try:
        return Policy(tuple(policy))
    except TypeError:
        raise TypeError(
            f"policy must be a preset name ({', '.join(PRESETS)}), a Policy or a list of Rules, "
            f"got {type(policy).__name__}"
        ) from None
