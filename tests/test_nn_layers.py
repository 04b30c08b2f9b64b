"""nn layers: gradients via check_layer, PyTorch layouts, sizes, state, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from reference import resolve_padding
from strategies import conv_configs, conv_transpose_configs

from minicae import functional as F
from minicae import nn, to_device, to_numpy
from minicae.errors import ShapeError
from minicae.nn.module import Parameter
from minicae.gradcheck import check_layer

# check_layer's relative error |a − n| / max(|a| + |n|, 1e-8) meets round-off
# |L|·ε_mach/h ≈ 1e-10..1e-9 on the tiny entries of a gradient: 1e-5 for one
# layer (a 1% error in a backward scores ~5e-3); for a deep composite a larger
# step h = 1e-5 (round-off 1e-10, truncation ~h²) and 1e-4.
TOL = 1e-5
TOL_COMPOSITE = 1e-4


def _x(shape, seed=0, distinct=False):
    rng = np.random.default_rng(seed)
    if distinct:        # 0.1 apart: max-pool argmax and ReLU signs stable under ε steps
        size = int(np.prod(shape))
        return ((rng.permutation(size) - size / 2 + 0.5) * 0.1).reshape(shape)
    return rng.standard_normal(shape)


def _assert_gradcheck(layer, x, label, tol=TOL, eps=1e-6):
    report = check_layer(layer.astype(np.float64), to_device(x), rng=0, eps=eps)
    assert report.worst < tol, f"{label}:\n{report}"
    return report


# gradients of every layer (float64 central differences) ------------------------

LAYERS = {
    "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0), (2, 3, 5, 4)),
    "Conv2d-groups-dilation-same": (
        lambda: nn.Conv2d(4, 2, (3, 2), padding="same", dilation=2, groups=2, rng=1),
        (1, 4, 5, 5)),
    "Conv2d-full-nobias": (lambda: nn.Conv2d(2, 3, 2, padding="full", bias=False, rng=2),
                           (1, 2, 4, 4)),
    "ConvTranspose2d": (
        lambda: nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1,
                                   groups=2, rng=3), (2, 4, 3, 4)),
    "ConvTranspose2d-dilation": (
        lambda: nn.ConvTranspose2d(2, 3, (2, 3), stride=(1, 2), dilation=(2, 1),
                                   output_padding=(1, 0), bias=False, rng=4), (1, 2, 3, 3)),
    "Linear": (lambda: nn.Linear(5, 3, rng=5), (4, 5)),
    "Linear-nobias": (lambda: nn.Linear(5, 3, bias=False, rng=6), (1, 5)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 2, 4, 5)),
    "MaxPool2d-overlap": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (1, 2, 7, 6)),
    "Upsample": (lambda: nn.Upsample(2), (2, 2, 3, 4)),
    "Upsample-pair": (lambda: nn.Upsample((1, 3)), (1, 2, 3, 2)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 2, 2)),
    "Reshape": (lambda: nn.Reshape(3, 4), (2, 12)),
    "ReLU": (lambda: nn.ReLU(), (2, 3, 4)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (2, 3, 4)),
    "Sigmoid": (lambda: nn.Sigmoid(), (2, 3, 4)),
    "Tanh": (lambda: nn.Tanh(), (2, 3, 4)),
    "Sequential": (lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=7), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(12, 4, rng=8), nn.LeakyReLU(0.1), nn.Reshape(1, 2, 2),
        nn.Upsample(2), nn.ConvTranspose2d(1, 2, 2, stride=2, rng=9), nn.Sigmoid()),
        (2, 2, 4, 4)),
    # every Conv2d/ConvTranspose2d here applies the ReLU after it (Sequential fuses
    # them; the last conv, one output channel at stride 1, is numba's direct kernel)
    "Sequential-fused-relu": (lambda: nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=10), nn.ReLU(),
        nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=11),
        nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1, rng=12), nn.ReLU()), (2, 2, 3, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients(backend, name):
    make, shape = LAYERS[name]
    tol, eps = (TOL_COMPOSITE, 1e-5) if name.startswith("Sequential") else (TOL, 1e-6)
    _assert_gradcheck(make(), _x(shape, distinct=True), f"{name} on {backend.name}", tol,
                      eps)


@pytest.mark.slow
@given(cfg=conv_configs(max_n=2, max_c=3, max_hw=5))
def test_conv2d_layer_gradients(backend, cfg):
    layer = nn.Conv2d(cfg.c_in, cfg.c_out, cfg.kernel, cfg.stride, cfg.padding,
                      cfg.dilation, cfg.groups, cfg.bias, rng=cfg.seed, dtype=np.float64)
    _assert_gradcheck(layer, cfg.arrays()[0], f"{backend.name} {cfg}")


@pytest.mark.slow
@given(cfg=conv_transpose_configs(max_n=2, max_c=3, max_hw=3))
def test_conv_transpose2d_layer_gradients(backend, cfg):
    layer = nn.ConvTranspose2d(cfg.c_in, cfg.c_out, cfg.kernel, cfg.stride, cfg.padding,
                               cfg.output_padding, cfg.dilation, cfg.groups, cfg.bias,
                               rng=cfg.seed, dtype=np.float64)
    _assert_gradcheck(layer, cfg.arrays()[0], f"{backend.name} {cfg}")


def _fusable_model(seed, *, direct=True):
    rng = np.random.default_rng(seed)
    layers = [nn.Conv2d(2, 4, 3, stride=2, padding=1, rng=rng), nn.ReLU(),
              nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1, rng=rng),
              nn.ReLU()]
    if direct:
        layers += [nn.Conv2d(3, 1, 3, padding=1, rng=rng), nn.ReLU()]
    return nn.Sequential(*layers)


def _run(model, x, dy, *, fused):
    """Output, dx and parameter gradients of a forward and backward through ``model``,
    with the Sequential's ReLU fusion, or layer by layer without it."""
    model.zero_grad()
    if fused:
        y = model(x)
        dx = model.backward(dy)
    else:
        outs = [x]
        for layer in model.layers:
            outs.append(layer(outs[-1]))
        y, d = outs[-1], dy
        for layer in reversed(model.layers):
            d = layer.backward(d)
        dx = d
    return [to_numpy(a).copy() for a in (y, dx, *(p.grad for p in model.parameters()))]


def test_fused_relu_gives_the_unfused_values(backend):
    """A Conv2d/ConvTranspose2d followed by a ReLU runs as one layer in a Sequential
    (conv2d(..., relu=True) and its backward with relu_out): the output and every
    gradient are the same numbers as the two layers run apart."""
    rng = np.random.default_rng(0)
    x = to_device(rng.standard_normal((5, 2, 9, 8)).astype(np.float32))
    model = _fusable_model(1)
    y = model(x)
    assert model._fused == {0, 2, 4}, model._fused
    dy = to_device(rng.standard_normal(y.shape).astype(np.float32))
    fused = _run(model, x, dy, fused=True)
    unfused = _run(model, x, dy, fused=False)
    for i, (a, b) in enumerate(zip(fused, unfused)):
        assert_array_equal(a, b, err_msg=f"output {i} on {backend.name}")
    assert (fused[0] >= 0).all() and (fused[0] == 0).any()


def test_fused_relu_in_eval_mode(backend):
    """In eval mode the fused pairs give the unfused output too."""
    rng = np.random.default_rng(3)
    x = to_device(rng.standard_normal((3, 2, 8, 8)).astype(np.float32))
    model = _fusable_model(4)
    model.eval()
    fused = to_numpy(model(x))
    assert model._fused == {0, 2, 4}
    unfused = x
    for layer in model.layers:
        unfused = layer(unfused)
    assert_array_equal(fused, to_numpy(unfused))


def test_no_fusion_where_a_penalty_must_see_the_output(numpy_backend):
    """A penalty on the conv (it must see the pre-ReLU output) or on the ReLU keeps the
    pair apart; other pairs still fuse."""
    from minicae.nn.penalties import L1Activity

    model = _fusable_model(2, direct=False)
    model.layers[0].attach(L1Activity(1e-3))
    model(np.ones((1, 2, 6, 6), np.float32))
    assert model._fused == {2}
    model = _fusable_model(2, direct=False)
    model.layers[3].attach(L1Activity(1e-3))
    model(np.ones((1, 2, 6, 6), np.float32))
    assert model._fused == {0}


def test_check_layer_catches_a_wrong_backward(backend):
    """The gradient test above can fail: a layer whose backward is off by 1% does."""
    class Scaled(nn.Tanh):
        def backward(self, dy):
            return 1.01 * super().backward(dy)

    report = check_layer(Scaled(), to_device(_x((2, 3))), rng=0)
    assert report.worst > 1e-3, str(report)


# layouts, names, sizes -------------------------------------------------------------------

def test_parameter_layouts_follow_pytorch(numpy_backend):
    conv = nn.Conv2d(6, 4, (3, 2), groups=2)
    assert [(n, p.shape) for n, p in conv.named_parameters()] == [
        ("weight", (4, 3, 3, 2)), ("bias", (4,))]
    convt = nn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    assert [(n, p.shape) for n, p in convt.named_parameters()] == [
        ("weight", (6, 2, 3, 2)), ("bias", (4,))]
    lin = nn.Linear(5, 3)
    assert [(n, p.shape) for n, p in lin.named_parameters()] == [
        ("weight", (3, 5)), ("bias", (3,))]
    assert [n for n, _ in nn.Linear(5, 3, bias=False).named_parameters()] == ["weight"]
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    for layer in (conv, convt, lin):
        assert layer.weight.data.dtype == np.float32            # default dtype
        assert layer.weight.grad.shape == layer.weight.shape
        assert not np.any(to_numpy(layer.weight.grad))


def test_init_bounds_follow_pytorch_fan_in(numpy_backend):
    conv = nn.Conv2d(3, 64, 3, rng=0, dtype=np.float64)
    bound = 1 / np.sqrt(3 * 3 * 3)            # U(±1/sqrt(fan_in)), fan_in = C_in/g·kh·kw
    w = to_numpy(conv.weight.data)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    convt = nn.ConvTranspose2d(64, 3, 3, rng=0, dtype=np.float64)
    # PyTorch's ConvTranspose2d takes fan_in from weight.shape[1:] = C_out/g·kh·kw
    assert np.abs(to_numpy(convt.weight.data)).max() <= 1 / np.sqrt(3 * 3 * 3)


@given(cfg=conv_configs())
def test_conv2d_output_size_formula(numpy_backend, cfg):
    layer = nn.Conv2d(cfg.c_in, cfg.c_out, cfg.kernel, cfg.stride, cfg.padding,
                      cfg.dilation, cfg.groups, rng=0, dtype=np.float64)
    y = layer(cfg.arrays()[0])
    pt, pb, pl, pr = resolve_padding(cfg.padding, cfg.kernel, cfg.dilation)
    (kh, kw), (sh, sw), (dh, dw) = cfg.kernel, cfg.stride, cfg.dilation
    # oh = floor((H + p_top + p_bottom − d·(k−1) − 1)/s) + 1
    want = ((cfg.h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (cfg.w + pl + pr - dw * (kw - 1) - 1) // sw + 1)
    assert y.shape == (cfg.n, cfg.c_out) + want, str(cfg)
    assert layer.output_shape(cfg.h, cfg.w) == want, str(cfg)


@given(cfg=conv_transpose_configs())
def test_conv_transpose2d_output_size_formula(numpy_backend, cfg):
    layer = nn.ConvTranspose2d(cfg.c_in, cfg.c_out, cfg.kernel, cfg.stride, cfg.padding,
                               cfg.output_padding, cfg.dilation, cfg.groups, rng=0,
                               dtype=np.float64)
    y = layer(cfg.arrays()[0])
    ph, pw = (0, 0) if cfg.padding == "valid" else np.broadcast_to(cfg.padding, 2)
    # (H − 1)·s − 2p + d·(k − 1) + output_padding + 1
    want = tuple(int((size - 1) * s - 2 * p + d * (k - 1) + op + 1) for size, s, p, d, k, op
                 in zip((cfg.h, cfg.w), cfg.stride, (ph, pw), cfg.dilation, cfg.kernel,
                        cfg.output_padding))
    assert y.shape == (cfg.n, cfg.c_out) + want, str(cfg)


@given(size=st.integers(1, 12), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 2))
def test_output_padding_for_restores_the_input_size(numpy_backend, size, k, s, p, d):
    size = max(size, d * (k - 1) + 1 - 2 * p)          # the convolution must fit
    op = F.output_padding_for(size, k, stride=s, padding=p, dilation=d)
    assert 0 <= op < s, (size, k, s, p, d, op)
    down = nn.Conv2d(1, 2, k, stride=s, padding=p, dilation=d, rng=0, dtype=np.float64)
    up = nn.ConvTranspose2d(2, 1, k, stride=s, padding=p, output_padding=op, dilation=d,
                            rng=0, dtype=np.float64)
    x = np.zeros((1, 1, size, size + 1 if size + 1 <= 12 else size))
    y = up(down(x))
    assert y.shape[2] == size, (size, k, s, p, d, op)


# state ----------------------------------------------------------------------------------

def _model(seed):
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=seed), nn.ReLU(),
                         nn.ConvTranspose2d(3, 2, 2, stride=2, rng=seed + 1), nn.Flatten(),
                         nn.Linear(2 * 8 * 8, 4, rng=seed + 2))


def test_parameters_follow_named_parameters(numpy_backend):
    """parameters() (a walk without names, run by every zero_grad) lists exactly
    named_parameters()' arrays in its order: attributes, lists of modules,
    nested Sequentials, and a class that names its own parameters."""
    class Pair(nn.Module):
        def __init__(self):
            self.first = nn.Linear(3, 2)
            self.blocks = [nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1)]
            self.scale = Parameter(np.ones(1, np.float32))
            self._hidden = Parameter(np.ones(2, np.float32))        # private: not listed

    class Tied(nn.Module):
        def __init__(self):
            self.inner = nn.Linear(2, 2)

        def named_parameters(self, prefix=""):
            yield (prefix + ".tied" if prefix else "tied"), self.inner.weight

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(Pair(), nn.ReLU()), Tied())
    named = [p for _, p in model.named_parameters()]
    assert len(named) == 2 + 6 + 1
    got = model.parameters()
    assert len(got) == len(named) and all(a is b for a, b in zip(got, named))

def test_state_dict_round_trip(backend):
    a, b = _model(1), _model(10)
    x = to_device(_x((2, 2, 4, 4)).astype(np.float32))
    assert not np.allclose(to_numpy(a(x)), to_numpy(b(x)))
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                           "4.bias"]
    b.load_state_dict({k: to_numpy(v) for k, v in state.items()})
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert_array_equal(to_numpy(pa.data), to_numpy(pb.data), err_msg=name)
        assert pb.data.dtype == pa.data.dtype
    assert_array_equal(to_numpy(a(x)), to_numpy(b(x)))
    a.named_parameters().__next__()[1].data[...] = 0          # b holds copies
    assert np.any(to_numpy(b.state_dict()["0.weight"]))


def test_load_state_dict_rejects_mismatches(numpy_backend):
    model = _model(1)
    state = {k: to_numpy(v) for k, v in model.state_dict().items()}
    bad = dict(state, **{"2.weight": np.zeros((3, 2, 3, 3), dtype=np.float32)})
    with pytest.raises(ShapeError, match=r"Sequential.load_state_dict: expected 2.weight "
                                         r"of shape \(3, 2, 2, 2\), got \(3, 2, 3, 3\)"):
        model.load_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "4.bias"}
    with pytest.raises(KeyError, match=r"missing \['4.bias'\]"):
        model.load_state_dict(missing)
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        model.load_state_dict(dict(state, extra=np.zeros(1)))
    model.load_state_dict(missing, strict=False)               # non-strict skips it


def test_gradients_accumulate_and_zero_grad_clears_them(backend):
    model = _model(3)
    x = to_device(_x((2, 2, 4, 4), seed=1).astype(np.float32))
    dy = to_device(_x((2, 4), seed=2).astype(np.float32))
    model(x)
    model.backward(dy)
    once = {n: to_numpy(p.grad).copy() for n, p in model.named_parameters()}
    assert all(np.any(g) for g in once.values())
    model(x)
    model.backward(dy)
    for name, p in model.named_parameters():          # p.grad += ..., never p.grad = ...
        assert_allclose(to_numpy(p.grad), 2 * once[name], rtol=1e-5, atol=1e-6,
                        err_msg=name)
    model.zero_grad()
    assert all(not np.any(to_numpy(p.grad)) for p in model.parameters())


def test_train_and_eval_reach_every_module(numpy_backend):
    model = _model(1)
    assert model.eval() is model
    assert all(not m.training for _, m in model.named_modules())
    model.train()
    assert all(m.training for _, m in model.named_modules())


def test_seeded_rng_gives_identical_weights(numpy_backend):
    for make in (lambda r: nn.Conv2d(3, 4, 3, rng=r), lambda r: nn.Linear(6, 2, rng=r),
                 lambda r: nn.ConvTranspose2d(3, 4, 3, rng=r)):
        a, b, c = make(7), make(np.random.default_rng(7)), make(8)
        assert_array_equal(to_numpy(a.weight.data), to_numpy(b.weight.data))
        assert_array_equal(to_numpy(a.bias.data), to_numpy(b.bias.data))
        assert not np.array_equal(to_numpy(a.weight.data), to_numpy(c.weight.data))


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d", "Linear", "Sequential",
                                  "MaxPool2d", "Sigmoid"])
def test_float32_layers_stay_float32_on_views(backend, name):
    make, shape = LAYERS[name]
    layer = make()
    big = _x((shape[0] * 2,) + shape[1:], distinct=True).astype(np.float32)
    x = to_device(big[::2])                                    # non-contiguous batch
    assert not big[::2].flags.c_contiguous
    y = layer(x)
    dx = layer.backward(y)
    assert y.dtype == np.float32 and dx.dtype == np.float32 and dx.shape == x.shape
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
    assert_allclose(to_numpy(layer(to_device(big[::2].copy()))), to_numpy(y), rtol=1e-6)


def test_repr_reads_like_the_constructor(numpy_backend):
    assert repr(nn.Conv2d(3, 16, 3, padding="full")) == (
        "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding='full')")
    assert "groups=2" in repr(nn.ConvTranspose2d(2, 2, 3, groups=2))
    assert repr(nn.Linear(4, 2, bias=False)) == (
        "Linear(in_features=4, out_features=2, bias=False)")


# bad input --------------------------------------------------------------------------------

CONV_REPR = r"Conv2d\(3, 4, kernel_size=\(3, 3\), stride=\(1, 1\), padding=\(0, 0\)\)"

BAD_CONSTRUCT = [
    ("groups", lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError,
     r"Conv2d: groups=2 must divide both in_channels=3 and out_channels=4"),
    ("stride 0", lambda: nn.Conv2d(1, 1, 3, stride=0), ValueError,
     r"Conv2d: expected stride >= 1, got 0"),
    ("same with stride", lambda: nn.Conv2d(1, 1, 3, stride=2, padding="same"), ValueError,
     r"Conv2d: padding='same' needs stride 1"),
    ("kernel 0", lambda: nn.Conv2d(1, 1, 0), ValueError, r"Conv2d: expected kernel_size"),
    ("float dtype", lambda: nn.Conv2d(1, 1, 3, dtype=np.int32), TypeError,
     r"Conv2d: expected a floating dtype"),
    ("T groups", lambda: nn.ConvTranspose2d(4, 3, 3, groups=2), ValueError,
     r"ConvTranspose2d: groups=2 must divide both in_channels=4 and out_channels=3"),
    ("T stride", lambda: nn.ConvTranspose2d(1, 1, 3, stride=(1, 0)), ValueError,
     r"ConvTranspose2d: expected stride >= 1"),
    ("T output_padding", lambda: nn.ConvTranspose2d(1, 1, 3, stride=2, output_padding=2),
     ValueError, r"ConvTranspose2d: output_padding must be smaller than stride or "
     r"dilation, got output_padding=\(2, 2\), stride=\(2, 2\)"),
    ("T same", lambda: nn.ConvTranspose2d(1, 1, 3, padding="same"), ValueError,
     r"ConvTranspose2d: expected padding to be an int, a pair of ints or 'valid', "
     r"got 'same'"),
    ("Linear 0", lambda: nn.Linear(0, 3), ValueError,
     r"Linear: expected in_features to be an integer >= 1, got 0"),
    ("pool padding", lambda: nn.MaxPool2d(2, padding=2), ValueError,
     r"MaxPool2d: padding must be at most half the kernel size"),
    ("upsample mode", lambda: nn.Upsample(2, mode="bilinear"), ValueError,
     r"Upsample: expected mode 'nearest', got 'bilinear'"),
    ("sequential", lambda: nn.Sequential(nn.ReLU(), np.tanh), TypeError,
     r"Sequential: expected Module instances, got ufunc at position 1"),
]


@pytest.mark.parametrize("case,make,error,match", BAD_CONSTRUCT,
                         ids=[c[0] for c in BAD_CONSTRUCT])
def test_layers_reject_bad_hyperparameters(numpy_backend, case, make, error, match):
    with pytest.raises(error, match=match):
        make()


BAD_FORWARD = [
    ("rank", lambda: nn.Conv2d(3, 4, 3), np.ones((3, 5, 5), np.float32), ShapeError,
     CONV_REPR + r": expected input of shape \(N, 3, H, W\), got \(3, 5, 5\)"),
    ("channels", lambda: nn.Conv2d(3, 4, 3), np.ones((1, 2, 5, 5), np.float32), ShapeError,
     CONV_REPR + r": expected input of shape \(N, 3, H, W\), got \(1, 2, 5, 5\)"),
    ("int input", lambda: nn.Conv2d(3, 4, 3), np.ones((1, 3, 5, 5), np.int64), TypeError,
     CONV_REPR + r": expected a floating-point input, got dtype int64"),
    ("dtype", lambda: nn.Conv2d(3, 4, 3), np.ones((1, 3, 5, 5)), TypeError,
     CONV_REPR + r": expected input of dtype float32 \(the parameters'\), got float64"),
    ("too large", lambda: nn.Conv2d(1, 1, 5), np.ones((1, 1, 3, 3), np.float32),
     ShapeError, r"conv2d: kernel 5x5 .* larger than the padded input 3x3"),
    ("T channels", lambda: nn.ConvTranspose2d(2, 4, 3), np.ones((1, 3, 5, 5), np.float32),
     ShapeError, r"ConvTranspose2d\(2, 4, .*\): expected input of shape \(N, 2, H, W\), "
     r"got \(1, 3, 5, 5\)"),
    ("Linear rank", lambda: nn.Linear(4, 2), np.ones((2, 1, 4), np.float32), ShapeError,
     r"Linear\(in_features=4, out_features=2\): expected input of shape \(N, 4\), got "
     r"\(2, 1, 4\)"),
    ("Linear features", lambda: nn.Linear(4, 2), np.ones((2, 5), np.float32), ShapeError,
     r"Linear\(in_features=4, out_features=2\): expected input of shape \(N, 4\), got "
     r"\(2, 5\)"),
    ("Linear dtype", lambda: nn.Linear(4, 2), np.ones((2, 4)), TypeError,
     r"Linear\(.*\): expected input of dtype float32 \(the parameters'\), got float64"),
    ("pool rank", lambda: nn.MaxPool2d(2), np.ones((4, 4), np.float32), ShapeError,
     r"max_pool2d: expected input of shape \(N, C, H, W\), got \(4, 4\)"),
    ("reshape", lambda: nn.Reshape(2, 6), np.ones((2, 5), np.float32), ShapeError,
     r"Reshape\(2, 6\): expected input with 12 values per sample, got \(2, 5\)"),
    ("flatten", lambda: nn.Flatten(), np.ones(3, np.float32), ShapeError,
     r"Flatten: expected input with a batch axis \(N, ...\), got \(3,\)"),
    ("sigmoid int", lambda: nn.Sigmoid(), np.ones(3, np.int64), TypeError,
     r"sigmoid: expected a floating-point input"),
]


@pytest.mark.parametrize("case,make,x,error,match", BAD_FORWARD,
                         ids=[c[0] for c in BAD_FORWARD])
def test_layers_reject_bad_input(numpy_backend, case, make, x, error, match):
    with pytest.raises(error, match=match):
        make()(x)


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(1, 1, 1), lambda: nn.Linear(1, 1),
                                  lambda: nn.ConvTranspose2d(1, 1, 1), lambda: nn.ReLU(),
                                  lambda: nn.MaxPool2d(2)])
def test_backward_before_forward_is_an_error(numpy_backend, make):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        make().backward(np.ones((1, 1, 1, 1), np.float32))


@pytest.mark.parametrize("first", ["conv", "convT", "linear", "relu"])
def test_sequential_without_input_grad_keeps_parameter_grads(backend, first):
    """need_input_grad=False returns None and leaves every parameter gradient as is."""
    rng = np.random.default_rng(7)
    if first == "linear":
        layers = [nn.Linear(12, 5, rng=rng, dtype=np.float64), nn.Sigmoid(),
                  nn.Linear(5, 12, rng=rng, dtype=np.float64)]
        x = rng.standard_normal((4, 12))
    else:
        head = {"conv": nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64),
                "convT": nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1,
                                            rng=rng, dtype=np.float64),
                "relu": nn.ReLU()}[first]
        c = 2 if first == "relu" else 3
        layers = [head, nn.Conv2d(c, 2, 3, padding=1, rng=rng, dtype=np.float64)]
        x = rng.standard_normal((3, 2, 6, 6))
    model = nn.Sequential(*layers)
    x = to_device(x)
    y = model(x)
    dy = to_device(rng.standard_normal(y.shape))
    model.zero_grad()
    dx = model.backward(dy)
    full = [to_numpy(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    assert model.backward(dy, need_input_grad=False) is None
    assert dx.shape == x.shape
    for (name, p), want in zip(model.named_parameters(), full):
        assert_allclose(to_numpy(p.grad), want, rtol=1e-12, atol=1e-12,
                        err_msg=f"{name} with {first} first on {backend.name}")


def test_conv2d_layer_gives_the_functional_gradients(backend):
    """A Conv2d's backward is the public functional op's, at every batch size."""
    rng = np.random.default_rng(3)
    layer = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, rng=rng, dtype=np.float64)
    for n in (5, 2, 7):
        x = to_device(rng.standard_normal((n, 4, 9, 8)))
        y = layer(x)
        dy = to_device(rng.standard_normal(y.shape))
        layer.zero_grad()
        dx = layer.backward(dy)
        want = F.conv2d_backward(dy, x, layer.weight.data, stride=2, padding=1, groups=2)
        for got, ref, name in zip((dx, layer.weight.grad, layer.bias.grad), want,
                                  ("dx", "dweight", "dbias")):
            assert_allclose(to_numpy(got), to_numpy(ref), rtol=1e-12, atol=1e-12,
                            err_msg=f"{name} at batch {n} on {backend.name}")
