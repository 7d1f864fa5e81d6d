"""Tests for initwise.fans: exact fan formulas per module type, measured variance preservation.

Variance bands. A fan_in init ``W ~ N(0, 1/fan_in)`` with unit-variance inputs gives outputs
whose mean square has expectation 1 (averaged over positions). The sample mean square has
two sources of noise: the weight draw (``||W||^2`` is a chi-square with ``n_w`` degrees of
freedom: relative variance ``2/n_w``) and the finite input sample (``n_y`` output elements:
``2/n_y``, plus ``2 * overlap / (n_rows * fan_in)`` for the correlation of outputs that share
inputs through random weights; ``overlap`` = number of output positions sharing inputs with
one position). The band is 6 relative standard errors, and every test asserts the band itself
is below 0.05 so that the sizes are shown to be big enough.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import assert_variance
from initwise import (
    Fans,
    describe_layout,
    fans,
    gate_blocks,
    register_fans,
    tensor_fans,
    unregister_fans,
)


def _band(
    n_w: int,
    n_y: int,
    n_rows: int = 1,
    fan_in: float = math.inf,
    overlap: int = 1,
    kurt: float = 0.0,
) -> float:
    """Six relative standard errors of a measured mean square (see the module docstring)."""
    rel2 = 2.0 / n_w + (2.0 + kurt) / n_y + 2.0 * overlap / (n_rows * fan_in)
    band = 6.0 * math.sqrt(rel2)
    assert band < 0.05, f"test sizes too small: band {band:.3f}"
    return band


def _ms(t: torch.Tensor) -> float:
    """Mean square (the variance about the known mean 0)."""
    return float(t.double().pow(2).mean())


def _normal_(w: torch.Tensor, var: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        w.normal_(0.0, math.sqrt(var), generator=gen)


def _zero_bias(m: nn.Module) -> None:
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "bias" in n:
                p.zero_()


# ---------------------------------------------------------------------------------------------
# Exact fan values against hand-derived formulas


def test_linear_and_tensor_rule() -> None:
    assert fans(nn.Linear(20, 30)) == Fans(20.0, 30.0)
    assert fans(torch.empty(7, 5, 3)) == Fans(15.0, 21.0)
    assert fans(nn.Linear(20, 30).weight) == Fans(20.0, 30.0)


def test_bilinear() -> None:
    m = nn.Bilinear(5, 7, 11)  # weight [11, 5, 7]
    assert fans(m) == Fans(35.0, 11 * 2 * 35 / 12)
    assert fans(nn.Bilinear(6, 6, 4)).fan_out == 4 * 6  # equal inputs: exact per-input fan_out


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        (nn.Conv1d(4, 6, 5), Fans(20.0, 30.0)),
        (nn.Conv2d(8, 12, (3, 5), groups=4), Fans(2 * 15.0, 3 * 15.0)),
        (nn.Conv2d(16, 16, 3, groups=16), Fans(9.0, 9.0)),  # depthwise
        (nn.Conv2d(8, 24, 3, groups=8), Fans(9.0, 27.0)),  # depthwise, multiplier 3
        (nn.Conv3d(6, 9, (2, 3, 4), groups=3), Fans(2 * 24.0, 3 * 24.0)),
        (nn.Conv2d(4, 6, 3, stride=2), Fans(36.0, 6 * 9 / 4)),  # k/s = 1.5 per dim
        (nn.Conv1d(4, 6, 3, stride=2, dilation=3), Fans(12.0, 6 * 1.5)),
        (nn.Conv2d(4, 8, 1, stride=2), Fans(4.0, 8 / 4)),  # 1x1 downsample
    ],
)
def test_conv(conv: nn.Module, expected: Fans) -> None:
    assert fans(conv) == expected


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        # weight [in, out/g, *k]: torch's tensor rule would say fan_in = out/g * prod(k)
        (nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1), Fans(8 * 4.0, 6 * 16.0)),
        (nn.ConvTranspose1d(8, 6, 3, stride=2), Fans(8 * 1.5, 18.0)),  # non-divisible
        (nn.ConvTranspose1d(8, 6, 3), Fans(24.0, 18.0)),  # stride 1: plain connectivity
        (
            nn.ConvTranspose2d(8, 12, (4, 3), stride=(2, 3), groups=4, dilation=2),
            Fans(2 * 12 / 6, 3 * 12.0),
        ),
        (nn.ConvTranspose3d(4, 4, 4, stride=2), Fans(4 * 8.0, 4 * 64.0)),
    ],
)
def test_conv_transpose(conv: nn.Module, expected: Fans) -> None:
    assert fans(conv) == expected
    torch_rule = tensor_fans(conv.weight)
    assert torch_rule.fan_in == conv.weight.shape[1] * math.prod(conv.kernel_size)


def test_mha_packed_and_separate() -> None:
    e = 16
    m = nn.MultiheadAttention(e, 4)
    assert m.in_proj_weight.shape == (3 * e, e)
    assert fans(m, "in_proj_weight") == Fans(16.0, 16.0)
    assert gate_blocks(m, "in_proj_weight") == 3
    assert gate_blocks(m, "in_proj_bias") == 3
    assert fans(m, "out_proj.weight") == Fans(16.0, 16.0)
    assert gate_blocks(m, "out_proj.weight") == 1
    assert tensor_fans(m.in_proj_weight) == Fans(16.0, 48.0)  # what torch's xavier uses

    m2 = nn.MultiheadAttention(e, 4, kdim=8, vdim=12)
    assert m2.in_proj_weight is None
    assert fans(m2, "q_proj_weight") == Fans(16.0, 16.0)
    assert fans(m2, "k_proj_weight") == Fans(8.0, 16.0)
    assert fans(m2, "v_proj_weight") == Fans(12.0, 16.0)
    assert gate_blocks(m2, "k_proj_weight") == 1
    with pytest.raises(
        ValueError,
        match=r"MultiheadAttention has no tensor attribute 'in_proj_weight'.*q_proj_weight",
    ):
        fans(m2, "in_proj_weight")


def test_lstm_proj_bidirectional_multilayer() -> None:
    m = nn.LSTM(10, 20, num_layers=2, proj_size=5, bidirectional=True)
    for sfx in ("", "_reverse"):
        assert m.get_parameter(f"weight_ih_l0{sfx}").shape == (80, 10)
        assert fans(m, f"weight_ih_l0{sfx}") == Fans(10.0, 20.0)
        assert fans(m, f"weight_hh_l0{sfx}") == Fans(5.0, 20.0)  # [4H, proj]
        assert fans(m, f"weight_hr_l0{sfx}") == Fans(20.0, 5.0)  # [proj, H]
        assert fans(m, f"weight_ih_l1{sfx}") == Fans(10.0, 20.0)  # input = 2 * proj
        assert gate_blocks(m, f"weight_ih_l1{sfx}") == 4
        assert gate_blocks(m, f"weight_hh_l1{sfx}") == 4
        assert gate_blocks(m, f"weight_hr_l1{sfx}") == 1
        assert gate_blocks(m, f"bias_ih_l1{sfx}") == 4


def test_gru_bidirectional_and_rnn() -> None:
    g = nn.GRU(6, 9, num_layers=2, bidirectional=True)
    assert g.weight_ih_l1_reverse.shape == (27, 18)
    assert fans(g, "weight_ih_l1_reverse") == Fans(18.0, 9.0)
    assert fans(g, "weight_hh_l0") == Fans(9.0, 9.0)
    assert gate_blocks(g, "weight_hh_l1_reverse") == 3
    r = nn.RNN(6, 9, nonlinearity="relu")
    assert fans(r, "weight_ih_l0") == Fans(6.0, 9.0)
    assert gate_blocks(r, "weight_hh_l0") == 1


@pytest.mark.parametrize(("cls", "gates"), [(nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1)])
def test_rnn_cells(cls: type[nn.Module], gates: int) -> None:
    m = cls(6, 9)
    assert fans(m, "weight_ih") == Fans(6.0, 9.0)
    assert fans(m, "weight_hh") == Fans(9.0, 9.0)
    assert gate_blocks(m, "weight_ih") == gates
    assert gate_blocks(m, "bias_hh") == gates


def test_embedding() -> None:
    assert fans(nn.Embedding(100, 32)) == Fans(1.0, 32.0)
    assert fans(nn.EmbeddingBag(100, 32, mode="sum")) == Fans(1.0, 32.0)
    assert tensor_fans(nn.Embedding(100, 32).weight) == Fans(32.0, 100.0)


def test_hf_conv1d() -> None:
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D  # skip without transformers

    m = Conv1D(nf=30, nx=20)
    assert m.weight.shape == (20, 30)  # stored [in, out]
    assert fans(m) == Fans(20.0, 30.0)
    assert tensor_fans(m.weight) == Fans(30.0, 20.0)  # the tensor rule gets it backwards
    assert "hf conv1d" in describe_layout(m)


@pytest.mark.parametrize(
    "norm",
    [
        nn.LayerNorm(8),
        nn.BatchNorm2d(8),
        nn.GroupNorm(2, 8),
        nn.RMSNorm(8),
        nn.InstanceNorm1d(8, affine=True),
    ],
)
def test_norm_layers_have_no_fans(norm: nn.Module) -> None:
    with pytest.raises(
        ValueError, match=rf"{type(norm).__name__}\.weight is a normalization parameter"
    ):
        fans(norm)
    assert gate_blocks(norm) == 1


def test_unknown_module_falls_back_to_tensor_rule() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = nn.Parameter(torch.zeros(5, 3, 2))

    assert fans(Odd(), "kernel") == Fans(6.0, 10.0)
    assert "tensor rule" in describe_layout(Odd(), "kernel")


def test_dotted_names() -> None:
    net = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Sequential(nn.Linear(4, 6)))
    assert fans(net, "0.weight") == Fans(9.0, 9.0)
    assert fans(net, "1.0.weight") == Fans(4.0, 6.0)
    assert describe_layout(net, "0.weight") == "conv2d depthwise groups=8"


def test_bad_inputs() -> None:
    lin = nn.Linear(3, 4)
    with pytest.raises(
        ValueError,
        match=r"Linear has no tensor attribute 'wieght'; did you mean 'weight'\?.*weight, bias",
    ):
        fans(lin, "wieght")
    with pytest.raises(ValueError, match=r"Linear\.bias has shape \(4,\).*at least 2 dimensions"):
        fans(lin, "bias")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fans(torch.zeros(5))
    with pytest.raises(TypeError, match=r"expected a tensor or nn\.Module, got list"):
        fans([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no tensor attribute 'nope\.weight'"):
        fans(nn.Sequential(lin), "nope.weight")
    with pytest.raises(ValueError, match="uninitialized lazy parameter"):
        fans(nn.LazyLinear(4))
    with pytest.raises(ValueError, match="no tensor attribute"):
        gate_blocks(lin, "x")
    with pytest.raises(TypeError):
        describe_layout(torch.zeros(2, 2))  # type: ignore[arg-type]


def test_describe_layout() -> None:
    assert describe_layout(nn.Conv2d(8, 8, 3, groups=4)) == "conv2d groups=4"
    assert describe_layout(nn.ConvTranspose2d(8, 4, 4, stride=2)) == "transposed conv2d stride 2"
    assert describe_layout(nn.MultiheadAttention(8, 2), "in_proj_weight").startswith(
        "mha packed qkv block"
    )
    assert describe_layout(nn.LSTM(3, 5), "weight_ih_l0").startswith("lstm gate block")
    assert describe_layout(nn.GRU(3, 5), "weight_hh_l0").startswith("gru gate block")
    assert describe_layout(nn.Embedding(3, 5)).startswith("embedding")
    assert describe_layout(nn.Bilinear(2, 3, 4)) == "bilinear [out, in1, in2]"


def test_register_fans_overrides_and_unregisters() -> None:
    class MyLinear(nn.Linear):
        pass

    class MyLinear2(MyLinear):
        pass

    try:
        register_fans(MyLinear, lambda m, name: Fans(1.0, 2.0))

        @register_fans(MyLinear2)
        def rule(m: nn.Module, name: str) -> Fans:
            return Fans(float(m.in_features * 10), 3.0)

        assert fans(MyLinear(4, 5)) == Fans(1.0, 2.0)
        assert fans(MyLinear2(4, 5)) == Fans(40.0, 3.0)  # most derived wins
        assert fans(nn.Linear(4, 5)) == Fans(4.0, 5.0)  # base class untouched
        assert describe_layout(MyLinear(4, 5)) == "registered rule for MyLinear"
        assert fans(nn.Sequential(MyLinear(4, 5)), "0.weight") == Fans(1.0, 2.0)
        register_fans(MyLinear, lambda m, name: (0, 1))
        with pytest.raises(ValueError, match="must be finite and > 0"):
            fans(MyLinear(4, 5))
        register_fans(MyLinear, lambda m, name: "x")  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="must return Fans"):
            fans(MyLinear(4, 5))
    finally:
        unregister_fans(MyLinear)
        unregister_fans(MyLinear2)
    assert fans(MyLinear(4, 5)) == Fans(4.0, 5.0)
    with pytest.raises(TypeError, match=r"nn\.Module subclass"):
        register_fans(int, lambda m, n: Fans(1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        register_fans(MyLinear, 3)  # type: ignore[arg-type]


def test_meta_device_modules() -> None:
    specs = [
        (lambda: nn.ConvTranspose2d(64, 32, 4, stride=2, groups=2), "weight"),
        (lambda: nn.Conv2d(64, 64, 3, groups=64), "weight"),
        (lambda: nn.MultiheadAttention(64, 8), "in_proj_weight"),
        (lambda: nn.LSTM(32, 64, proj_size=16, num_layers=2), "weight_hh_l1"),
        (lambda: nn.Embedding(1000, 64), "weight"),
        (lambda: nn.Bilinear(8, 9, 10), "weight"),
    ]
    for make, name in specs:
        with torch.device("meta"):
            m = make()
        assert m.get_parameter(name).is_meta
        assert fans(m, name) == fans(make(), name)
        assert gate_blocks(m, name) == gate_blocks(make(), name)


# ---------------------------------------------------------------------------------------------
# Hypothesis: formulas and consistency for random configurations (meta modules: no allocation)

_dims = st.integers(1, 3)


@st.composite
def _conv_cfg(
    draw: st.DrawFn,
) -> tuple[int, int, int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    nd = draw(_dims)
    groups = draw(st.integers(1, 4))
    cin = groups * draw(st.integers(1, 5))
    cout = groups * draw(st.integers(1, 5))
    k = tuple(draw(st.lists(st.integers(1, 5), min_size=nd, max_size=nd)))
    s = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    d = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    return nd, groups, cin, cout, k, s, d


@settings(max_examples=60, deadline=None)
@given(_conv_cfg(), st.booleans())
def test_conv_fans_property(cfg: tuple, transposed: bool) -> None:
    nd, groups, cin, cout, k, s, d = cfg
    cls = {
        False: (nn.Conv1d, nn.Conv2d, nn.Conv3d),
        True: (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    }
    with torch.device("meta"):
        m = cls[transposed][nd - 1](cin, cout, k, stride=s, dilation=d, groups=groups)
    f = fans(m)
    taps, ratio = math.prod(k), math.prod(ki / si for ki, si in zip(k, s, strict=True))
    if transposed:
        expected = Fans(cin / groups * ratio, cout / groups * taps)
    else:
        expected = Fans(cin / groups * taps, cout / groups * ratio)
    assert f.fan_in == pytest.approx(expected.fan_in, rel=1e-12)
    assert f.fan_out == pytest.approx(expected.fan_out, rel=1e-12)
    assert f.fan_in > 0 and f.fan_out > 0
    # Connection count: sum over outputs of fan_in == sum over inputs of fan_out, per unit of
    # input area (a conv has 1/prod(s) output positions per input position, a transposed
    # conv prod(s)).
    per_in = math.prod(s) if transposed else 1 / math.prod(s)
    assert f.fan_in * cout * per_in == pytest.approx(f.fan_out * cin, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 64), st.integers(1, 64))
def test_linear_fans_property(i: int, o: int) -> None:
    with torch.device("meta"):
        m = nn.Linear(i, o)
    assert fans(m) == Fans(float(i), float(o)) == tensor_fans(m.weight)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=2, max_size=5))
def test_tensor_fans_match_torch(shape: list[int]) -> None:
    t = torch.empty(shape, device="meta")
    fi, fo = nn.init._calculate_fan_in_and_fan_out(t)
    assert tensor_fans(t) == Fans(float(fi), float(fo)) == tensor_fans(tuple(shape))
    assert tensor_fans(torch.Size(shape)) == tensor_fans(t)


# ---------------------------------------------------------------------------------------------
# Measured variance preservation: fan_in init preserves the forward variance, fan_out init the
# backward variance; torch's tensor rule is shown to be off where it is.


def test_linear_forward_variance(gen: torch.Generator) -> None:
    m = nn.Linear(256, 256)
    _normal_(m.weight, 1 / fans(m).fan_in, gen)
    _zero_bias(m)
    x = torch.randn(8192, 256, generator=gen)
    y = m(x).detach()
    band = _band(n_w=256 * 256, n_y=y.numel(), n_rows=8192, fan_in=256)
    assert abs(_ms(y) - 1) < band


def test_bilinear_forward_and_backward_variance(gen: torch.Generator) -> None:
    i1, i2, o, b = 64, 16, 64, 1024
    m = nn.Bilinear(i1, i2, o)
    f = fans(m)
    _normal_(m.weight, 1 / f.fan_in, gen)
    _zero_bias(m)
    x1 = torch.randn(b, i1, generator=gen, requires_grad=True)
    x2 = torch.randn(b, i2, generator=gen, requires_grad=True)
    y = m(x1, x2)
    # products of independent normals have excess kurtosis 6, sums of i1*i2 of them ~Gaussian
    assert abs(_ms(y.detach()) - 1) < _band(
        n_w=m.weight.numel(), n_y=y.numel(), n_rows=b, fan_in=f.fan_in
    )

    _normal_(m.weight, 1 / f.fan_out, gen)
    y = m(x1, x2)
    y.backward(torch.randn(b, o, generator=gen))
    assert x1.grad is not None and x2.grad is not None
    g = torch.cat([x1.grad, x2.grad], dim=1)  # average over the i1 + i2 input elements
    assert abs(_ms(g) - 1) < _band(n_w=m.weight.numel(), n_y=g.numel(), n_rows=b, fan_in=o * i1)
    # the per-input gradient variances are out*i2/fan_out and out*i1/fan_out (0.75 and 1.5)
    target1 = o * i2 / f.fan_out
    assert abs(_ms(x1.grad) / target1 - 1) < _band(m.weight.numel(), x1.grad.numel(), b, o * i2)


def _conv_in(b: int, c: int, size: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(b, c, size, size, generator=gen)


def test_grouped_conv_forward_and_backward(gen: torch.Generator) -> None:
    c, groups, k, b, size = 192, 4, 3, 8, 32
    m = nn.Conv2d(c, c, k, padding=1, padding_mode="circular", groups=groups)  # no border effects
    f = fans(m)
    assert f == Fans(48 * 9.0, 48 * 9.0)
    _normal_(m.weight, 1 / f.fan_in, gen)
    _zero_bias(m)
    x = _conv_in(b, c, size, gen).requires_grad_()
    y = m(x)
    n_w = m.weight.numel()
    assert abs(_ms(y.detach()) - 1) < _band(n_w, y.numel(), b * size * size, f.fan_in, overlap=25)

    # backward: N(0, 1/fan_out) and unit output gradient -> unit input gradient
    _normal_(m.weight, 1 / f.fan_out, gen)
    y = m(x)
    y.backward(torch.randn(y.shape, generator=gen))
    assert x.grad is not None
    assert abs(_ms(x.grad) - 1) < _band(n_w, x.numel(), b * size * size, f.fan_out, overlap=25)
    # torch's tensor rule (fan_out = out * prod(k), groups x too large) gives 1/groups
    torch_fo = tensor_fans(m.weight).fan_out
    assert torch_fo == groups * f.fan_out
    assert abs(_ms(x.grad) * f.fan_out / torch_fo - 1 / groups) < 0.05 / groups


def test_strided_conv_backward_uses_average_taps(gen: torch.Generator) -> None:
    c, groups, b, size = 192, 4, 16, 32
    # k=3, s=2, circular: odd input rows feed 2 outputs, even rows 1, on average 1.5 per dim
    m = nn.Conv2d(c, c, 3, stride=2, padding=1, padding_mode="circular", groups=groups, bias=False)
    f = fans(m)
    assert f.fan_out == 48 * 2.25
    _normal_(m.weight, 1 / f.fan_out, gen)
    x = _conv_in(b, c, size, gen).requires_grad_()
    y = m(x)
    y.backward(torch.randn(y.shape, generator=gen))
    assert x.grad is not None
    band = _band(m.weight.numel(), x.numel(), b * size * size, f.fan_out, overlap=25)
    assert abs(_ms(x.grad) - 1) < band
    # the stride-blind (out/g) * prod(k) gives 2.25 / 9 = 1/4
    assert abs(_ms(x.grad) * f.fan_out / (48 * 9) - 0.25) < 0.25 * band


def _tap_counts(m: nn.ConvTranspose2d, size: int) -> torch.Tensor:
    """Number of kernel taps landing on each output position (exact, via an all-ones conv)."""
    ones = nn.ConvTranspose2d(
        1,
        1,
        m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        output_padding=m.output_padding,
        dilation=m.dilation,
        bias=False,
    )
    with torch.no_grad():
        ones.weight.fill_(1.0)
        return ones(torch.ones(1, 1, size, size))[0, 0]


@pytest.mark.parametrize(
    ("k", "padding", "output_padding"),
    [(4, 1, 0), (3, 1, 1)],  # divisible (2 taps everywhere) and non-divisible (1 or 2 per dim)
)
def test_conv_transpose_stride2_forward(
    gen: torch.Generator, k: int, padding: int, output_padding: int
) -> None:
    c, b, size = 128, 32, 16
    m = nn.ConvTranspose2d(
        c, c, k, stride=2, padding=padding, output_padding=output_padding, bias=False
    )
    f = fans(m)
    assert f.fan_in == c * (k / 2) ** 2
    counts = _tap_counts(m, size)
    assert abs(float(counts.mean()) - (k / 2) ** 2) < 4 * (k / 2) ** 2 / size  # borders only
    if k == 3:
        assert set(counts[2:-2, 2:-2].unique().tolist()) == {1.0, 2.0, 4.0}
    # exact expected mean square of the output with W ~ N(0, v): v * c * mean(taps)
    target = float(counts.mean()) * c / f.fan_in  # ~1, differs only at the borders

    _normal_(m.weight, 1 / f.fan_in, gen)
    x = _conv_in(b, c, size, gen)
    y = m(x).detach()
    band = _band(m.weight.numel(), y.numel(), b * size * size, f.fan_in, overlap=(2 * k - 1) ** 2)
    assert abs(_ms(y) / target - 1) < band
    assert abs(target - 1) < 0.15  # the border deficit is small; the average rule is right

    # torch's tensor rule: fan_in = (out/g) * prod(k) ignores the stride (and swaps in/out)
    torch_fi = tensor_fans(m.weight).fan_in
    assert torch_fi == c * k * k
    _normal_(m.weight, 1 / torch_fi, gen)
    y_torch = m(x).detach()
    assert abs(_ms(y_torch) - target * f.fan_in / torch_fi) < band * target * f.fan_in / torch_fi
    assert _ms(y_torch) < 0.3  # variance collapses to ~1/4


def test_mha_q_block_and_torch_xavier(gen: torch.Generator) -> None:
    e, b = 256, 8192
    m = nn.MultiheadAttention(e, 8)
    f = fans(m, "in_proj_weight")
    assert f == Fans(float(e), float(e))
    # torch's own init: xavier_uniform_ on the packed [3E, E]: each block gets 2 / (E + 3E)
    blocks = m.in_proj_weight.detach().chunk(gate_blocks(m, "in_proj_weight"))
    for blk in blocks:
        assert_variance(blk, 1 / (2 * e), excess_kurtosis=-1.2)
    # xavier from our fans: 1 / fan_avg = 1 / E per block
    xavier_var = 1 / f.select("fan_avg")
    assert xavier_var == 1 / e
    x = torch.randn(b, e, generator=gen)
    band = _band(e * e, b * e, b, e)
    q_torch = F.linear(x, blocks[0])
    assert abs(_ms(q_torch) - 0.5) < 0.5 * band
    with torch.no_grad():
        for blk in m.in_proj_weight.view(3, e, e):
            blk.normal_(0, math.sqrt(1 / f.fan_in), generator=gen)
    q = F.linear(x, m.in_proj_weight[:e].detach())
    assert abs(_ms(q) - 1) < band


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_rnn_gate_blocks_forward(gen: torch.Generator, kind: str) -> None:
    h, b = 256, 4096
    if kind == "lstm":
        m: nn.RNNBase = nn.LSTM(256, h, proj_size=192)
        names = ["weight_ih_l0", "weight_hh_l0"]
    else:
        m = nn.GRU(256, h, num_layers=2, bidirectional=True)
        names = ["weight_ih_l1_reverse", "weight_hh_l0"]
    for name in names:
        w = m.get_parameter(name)
        f, nb = fans(m, name), gate_blocks(m, name)
        assert w.shape == (nb * f.fan_out, f.fan_in)
        with torch.no_grad():
            for blk in w.view(nb, h, -1):
                blk.normal_(0, math.sqrt(1 / f.fan_in), generator=gen)
        x = torch.randn(b, int(f.fan_in), generator=gen)
        pre = F.linear(x, w.detach())  # the gate pre-activations
        for gate in pre.chunk(nb, dim=1):
            assert abs(_ms(gate) - 1) < _band(h * int(f.fan_in), gate.numel(), b, f.fan_in)


def test_rnn_module_forward_relu(gen: torch.Generator) -> None:
    n, h, b = 256, 256, 8192
    m = nn.RNN(n, h, nonlinearity="relu", bias=False)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        _normal_(m.get_parameter(name), 1 / fans(m, name).fan_in, gen)
    x = torch.randn(1, b, n, generator=gen)
    h0 = torch.randn(1, b, h, generator=gen)
    band = _band(n * h, b * h, b, n, kurt=3.0)  # relu(z)^2 has relative variance 5 instead of 2
    # one step from h0 = 0: relu(W_ih x); E[relu(z)^2] = var(z) / 2
    out, _ = m(x, torch.zeros(1, b, h))
    assert abs(2 * _ms(out.detach()) - 1) < band
    # zero input, random state: relu(W_hh h0)
    out, _ = m(torch.zeros(1, b, n), h0)
    assert abs(2 * _ms(out.detach()) - 1) < band


def test_embedding_lookup_variance(gen: torch.Generator) -> None:
    m = nn.Embedding(1000, 64)
    f = fans(m)
    _normal_(m.weight, 1 / f.fan_in, gen)  # N(0, 1): torch's default
    idx = torch.randint(0, 1000, (16384,), generator=gen)
    y = m(idx).detach()
    assert abs(_ms(y) - 1) < _band(m.weight.numel(), y.numel())
    # the tensor rule would treat it as [out=1000, in=64]: variance 1/64
    assert tensor_fans(m.weight).fan_in == 64


def test_hf_conv1d_forward_variance(gen: torch.Generator) -> None:
    Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D  # skip without transformers

    nx, nf, b = 128, 384, 4096
    m = Conv1D(nf=nf, nx=nx)
    f = fans(m)
    _normal_(m.weight, 1 / f.fan_in, gen)
    _zero_bias(m)
    x = torch.randn(b, nx, generator=gen)
    y = m(x).detach()
    band = _band(nx * nf, y.numel(), b, nx)
    assert abs(_ms(y) - 1) < band
    # the tensor rule's fan_in (= nf) would give nx / nf = 1/3
    assert abs(_ms(y) * f.fan_in / tensor_fans(m.weight).fan_in - 1 / 3) < band / 3
