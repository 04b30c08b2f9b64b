"""conv2d and conv_transpose2d: loop reference, gradients, adjointness, parity.

Every property runs on each installed backend through the ``backend``
fixture; parity tests compare each non-NumPy backend with NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.testing import assert_allclose
from reference import conv2d_ref, conv_transpose2d_ref
from strategies import ConvConfig, conv_configs, conv_transpose_configs

from minicae import backend as backend_mod
from minicae import functional as F
from minicae import to_device, to_numpy
from minicae.errors import ShapeError
from minicae.gradcheck import directional_derivative, numerical_gradient

OPS = {"conv2d": (F.conv2d, F.conv2d_backward, conv2d_ref),
       "conv_transpose2d": (F.conv_transpose2d, F.conv_transpose2d_backward,
                            conv_transpose2d_ref)}


def _dev(a):
    return None if a is None else to_device(a)


def _forward(op, x, weight, bias, kwargs):
    return to_numpy(OPS[op][0](_dev(x), _dev(weight), _dev(bias), **kwargs))


def _backward(op, dy, x, weight, kwargs, **extra):
    dx, dweight, dbias = OPS[op][1](_dev(dy), _dev(x), _dev(weight), **kwargs, **extra)
    return (None if dx is None else to_numpy(dx)), to_numpy(dweight), to_numpy(dbias)


# (1) the loop reference -----------------------------------------------------

@given(cfg=conv_configs())
def test_conv2d_matches_loop_reference(backend, cfg):
    x, weight, bias = cfg.arrays()
    y = _forward("conv2d", x, weight, bias, cfg.kwargs())
    want = conv2d_ref(x, weight, bias, **cfg.kwargs())
    assert y.shape == want.shape, f"{backend.name} {cfg}"
    assert_allclose(y, want, rtol=1e-10, atol=1e-10, err_msg=f"{backend.name} {cfg}")


@given(cfg=conv_transpose_configs())
def test_conv_transpose2d_matches_loop_reference(backend, cfg):
    x, weight, bias = cfg.arrays()
    y = _forward("conv_transpose2d", x, weight, bias, cfg.kwargs())
    want = conv_transpose2d_ref(x, weight, bias, **cfg.kwargs())
    assert y.shape == want.shape, f"{backend.name} {cfg}"
    assert_allclose(y, want, rtol=1e-10, atol=1e-10, err_msg=f"{backend.name} {cfg}")


# (2) backward against float64 central differences ---------------------------

def _check_grads_elementwise(op, cfg, backend_name):
    x, weight, bias = cfg.arrays()
    kwargs = cfg.kwargs()
    y = _forward(op, x, weight, bias, kwargs)
    r = np.random.default_rng(cfg.seed + 7).standard_normal(y.shape)
    dx, dweight, dbias = _backward(op, r, x, weight, kwargs)

    # L = Σ r ⊙ op(x, W, b); each argument is perturbed in turn
    def loss(xv=x, wv=weight, bv=bias):
        return float(np.sum(_forward(op, xv, wv, bv, kwargs) * r))

    msg = f"{op} on {backend_name}: {cfg}"
    assert_allclose(dx, numerical_gradient(lambda v: loss(xv=v), x.copy()),
                    rtol=1e-6, atol=1e-7, err_msg="dx " + msg)
    assert_allclose(dweight, numerical_gradient(lambda v: loss(wv=v), weight.copy()),
                    rtol=1e-6, atol=1e-7, err_msg="dweight " + msg)
    b0 = np.zeros(y.shape[1]) if bias is None else bias
    assert_allclose(dbias, numerical_gradient(lambda v: loss(bv=v), b0.copy()),
                    rtol=1e-6, atol=1e-7, err_msg="dbias " + msg)


@given(cfg=conv_configs(max_n=2, max_c=3, max_hw=6))
def test_conv2d_grad(backend, cfg):
    _check_grads_elementwise("conv2d", cfg, backend.name)


@given(cfg=conv_transpose_configs(max_n=2, max_c=3, max_hw=4))
def test_conv_transpose2d_grad(backend, cfg):
    _check_grads_elementwise("conv_transpose2d", cfg, backend.name)


LARGE = {
    "conv2d": ConvConfig(n=3, c_in=4, c_out=4, h=9, w=8, kernel=(3, 2), stride=(2, 1),
                         padding=(1, 2), dilation=(2, 1), groups=2, bias=True, seed=5),
    "conv_transpose2d": ConvConfig(n=3, c_in=4, c_out=4, h=7, w=9, kernel=(3, 3),
                                   stride=(2, 2), padding=1, dilation=(1, 2), groups=2,
                                   bias=True, seed=6),
}


@pytest.mark.parametrize("op", sorted(LARGE))
def test_grad_directional_on_a_larger_case(backend, op):
    """⟨∇L, v⟩ against (L(a + εv) − L(a − εv)) / 2ε along random unit directions."""
    cfg = LARGE[op]
    x, weight, bias = cfg.arrays()
    if op == "conv_transpose2d":
        weight = weight.reshape(cfg.c_in, cfg.c_out // cfg.groups, *cfg.kernel)
    kwargs = cfg.kwargs()
    y = _forward(op, x, weight, bias, kwargs)
    rng = np.random.default_rng(11)
    r = rng.standard_normal(y.shape)
    grads = dict(zip(("x", "weight", "bias"), _backward(op, r, x, weight, kwargs)))
    args = {"x": x, "weight": weight, "bias": bias}
    for name, value in args.items():
        v = rng.standard_normal(value.shape)
        v /= np.linalg.norm(v)

        def loss(a, name=name):
            call = dict(args, **{name: a})
            return np.sum(_forward(op, call["x"], call["weight"], call["bias"], kwargs) * r)

        numeric = directional_derivative(loss, value, v)
        assert_allclose(np.sum(grads[name] * v), numeric, rtol=1e-7, atol=1e-8,
                        err_msg=f"{op} d{name} on {backend.name}: {cfg}")


# (3) adjoint identities -------------------------------------------------------

@given(cfg=conv_transpose_configs())
def test_adjoint_identity(backend, cfg):
    """⟨conv_transpose2d(x, W), z⟩ = ⟨x, conv2d(z, W)⟩ (cropped to x's size)."""
    x, weight, _ = cfg.arrays()
    y = _forward("conv_transpose2d", x, weight, None, cfg.kwargs())
    z = np.random.default_rng(cfg.seed + 3).standard_normal(y.shape)
    cz = _forward("conv2d", z, weight, None, cfg.conv_kwargs())
    # output_padding < stride adds no full window: conv2d lands exactly on x's size
    if all(op < s for op, s in zip(cfg.output_padding, cfg.stride)):
        assert cz.shape == x.shape, f"{backend.name} {cfg}"
    lhs = float(np.sum(y * z))
    rhs = float(np.sum(x * cz[:, :, :cfg.h, :cfg.w]))
    assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10, err_msg=f"{backend.name} {cfg}")


@given(cfg=conv_configs())
def test_conv2d_backward_input_is_the_adjoint(backend, cfg):
    """⟨conv2d(x, W), y⟩ = ⟨x, dx(y)⟩ in every padding mode (asymmetric 'same' too)."""
    x, weight, _ = cfg.arrays()
    out = _forward("conv2d", x, weight, None, cfg.kwargs())
    y = np.random.default_rng(cfg.seed + 3).standard_normal(out.shape)
    dx, _, _ = _backward("conv2d", y, x, weight, cfg.kwargs())
    assert_allclose(float(np.sum(out * y)), float(np.sum(x * dx)), rtol=1e-10,
                    atol=1e-10, err_msg=f"{backend.name} {cfg}")


# (4) parity with NumPy ----------------------------------------------------------

def _all_outputs(op, cfg, dtype):
    x, weight, bias = cfg.arrays(dtype)
    y = _forward(op, x, weight, bias, cfg.kwargs())
    r = np.random.default_rng(cfg.seed + 9).standard_normal(y.shape).astype(dtype)
    return (y,) + _backward(op, r, x, weight, cfg.kwargs())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(cfg=conv_configs(), cfg_t=conv_transpose_configs())
def test_backend_parity(other_backend, dtype, cfg, cfg_t):
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for op, c in (("conv2d", cfg), ("conv_transpose2d", cfg_t)):
        with backend_mod.use_backend("numpy"):
            want = _all_outputs(op, c, dtype)
        with backend_mod.use_backend(other_backend):
            got = _all_outputs(op, c, dtype)
        for label, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
            assert a.dtype == dtype, f"{label} {op} {c}"
            assert_allclose(a, b, rtol=rtol, atol=rtol * (1 + np.abs(b).max()),
                            err_msg=f"{label} of {op} on {other_backend} vs numpy: {c}")


# (5) dtype, batch of one, non-contiguous inputs ----------------------------------

@pytest.mark.parametrize("op", sorted(OPS))
def test_float32_stays_float32(backend, op):
    cfg = LARGE[op]
    x, weight, bias = cfg.arrays(np.float32)
    if op == "conv_transpose2d":
        weight = weight.reshape(cfg.c_in, cfg.c_out // cfg.groups, *cfg.kernel)
    y = OPS[op][0](to_device(x), to_device(weight), to_device(bias), **cfg.kwargs())
    grads = OPS[op][1](y, to_device(x), to_device(weight), **cfg.kwargs())
    assert y.dtype == np.float32
    assert [g.dtype for g in grads] == [np.float32] * 3


@pytest.mark.parametrize("op", sorted(OPS))
def test_batch_of_one_equals_slice_of_batch(backend, op):
    cfg = LARGE[op]
    x, weight, bias = cfg.arrays()
    if op == "conv_transpose2d":
        weight = weight.reshape(cfg.c_in, cfg.c_out // cfg.groups, *cfg.kernel)
    full = _forward(op, x, weight, bias, cfg.kwargs())
    one = _forward(op, x[1:2], weight, bias, cfg.kwargs())
    assert_allclose(one, full[1:2], rtol=1e-12, atol=1e-12, err_msg=f"{op} {cfg}")
    dy = np.ones_like(one)
    dx_one = _backward(op, dy, x[1:2], weight, cfg.kwargs())[0]
    dx_full = _backward(op, np.ones_like(full), x, weight, cfg.kwargs())[0]
    assert_allclose(dx_one, dx_full[1:2], rtol=1e-12, atol=1e-12, err_msg=f"{op} {cfg}")


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("view", ["strided", "transposed"])
def test_non_contiguous_inputs(backend, op, view):
    rng = np.random.default_rng(3)
    big = rng.standard_normal((2, 4, 12, 6))
    x = big[:, :, ::2] if view == "strided" else big[:, :, :6].transpose(0, 1, 3, 2)
    shape = (4, 2, 3, 2)
    weight = rng.standard_normal(shape[::-1]).transpose(3, 2, 1, 0)   # non-contiguous too
    kwargs = dict(stride=2, padding=1, groups=2) if op == "conv2d" else dict(
        stride=2, padding=1, output_padding=1, groups=2)
    assert not x.flags.c_contiguous and not weight.flags.c_contiguous
    y = _forward(op, x, weight, None, kwargs)
    y_c = _forward(op, x.copy(), weight.copy(), None, kwargs)
    assert_allclose(y, y_c, rtol=1e-12, atol=1e-12, err_msg=f"{op} {view}")
    dy_view = np.random.default_rng(4).standard_normal(y.shape[::-1]).transpose(3, 2, 1, 0)
    got = _backward(op, dy_view, x, weight, kwargs)
    want = _backward(op, dy_view.copy(), x.copy(), weight.copy(), kwargs)
    for label, a, b in zip(("dx", "dweight", "dbias"), got, want):
        assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{label} {op} {view}")


def test_need_dx_false_skips_the_input_gradient(backend):
    x, weight, _ = LARGE["conv2d"].arrays()
    kwargs = LARGE["conv2d"].kwargs()
    dy = np.ones_like(_forward("conv2d", x, weight, None, kwargs))
    dx, dweight, _ = _backward("conv2d", dy, x, weight, kwargs, need_dx=False)
    assert dx is None
    assert_allclose(dweight, _backward("conv2d", dy, x, weight, kwargs)[1], rtol=1e-12)


# padding modes and sizes -----------------------------------------------------------

@pytest.mark.parametrize("k,d", [(3, 1), (4, 1), (2, 3), (3, 2)])
def test_padding_modes_give_documented_sizes(numpy_backend, k, d):
    x = np.zeros((1, 1, 7, 6))
    weight = np.zeros((1, 1, k, k))
    span = d * (k - 1) + 1
    assert F.conv2d(x, weight, padding="same", dilation=d).shape[2:] == (7, 6)
    assert F.conv2d(x, weight, padding="full", dilation=d).shape[2:] == (
        7 + span - 1, 6 + span - 1)
    assert F.conv2d(x, weight, padding="valid", dilation=d).shape[2:] == (
        7 - span + 1, 6 - span + 1)


def test_same_padding_puts_the_odd_extra_at_bottom_right(numpy_backend):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 1.0
    weight = np.zeros((1, 1, 2, 2))
    weight[0, 0, 1, 1] = 1.0         # picks x_pad[p + 1, q + 1]
    y = F.conv2d(x, weight, padding="same")
    # total padding 1 goes to the bottom/right, so y[p, q] = x[p + 1, q + 1]... shifted
    assert y[0, 0, 0, 0] == 0.0 and y.shape == (1, 1, 4, 4)
    assert_allclose(y, conv2d_ref(x, weight, padding=(0, 1, 0, 1)), rtol=0, atol=0)


# bad input ---------------------------------------------------------------------------

def _arr(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


BAD_CONV = [
    ("rank", dict(x=_arr(3, 5, 5), weight=_arr(2, 3, 3, 3)), ShapeError,
     r"conv2d: expected input of shape \(N, C_in, H, W\), got \(3, 5, 5\)"),
    ("channels", dict(x=_arr(1, 2, 5, 5), weight=_arr(4, 3, 3, 3)), ShapeError,
     r"conv2d: expected input of shape \(N, 3, H, W\).*got \(1, 2, 5, 5\)"),
    ("groups", dict(x=_arr(1, 3, 5, 5), weight=_arr(4, 1, 3, 3), groups=2), ValueError,
     r"conv2d: groups=2 must divide both C_in=3"),
    ("too large", dict(x=_arr(1, 1, 4, 4), weight=_arr(1, 1, 3, 3), dilation=2),
     ShapeError, r"conv2d: kernel 3x3 .* spans 5x5, larger than the padded input 4x4"),
    ("stride 0", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), stride=0), ValueError,
     r"conv2d: expected stride >= 1, got 0"),
    ("negative stride", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), stride=(1, -2)),
     ValueError, r"conv2d: expected stride >= 1"),
    ("same stride", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), stride=2,
                         padding="same"), ValueError, r"conv2d: padding='same' needs stride 1"),
    ("bad mode", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), padding="half"),
     ValueError, r"conv2d: expected padding to be .*got 'half'"),
    ("int input", dict(x=np.ones((1, 1, 5, 5), dtype=np.int64), weight=_arr(1, 1, 3, 3)),
     TypeError, r"conv2d: expected a floating-point input, got dtype int64"),
    ("dtype mismatch", dict(x=_arr(1, 1, 5, 5, dtype=np.float32), weight=_arr(1, 1, 3, 3)),
     TypeError, r"conv2d: expected input and weight to share a dtype, got float32 and "
     r"float64"),
    ("bias shape", dict(x=_arr(1, 1, 5, 5), weight=_arr(2, 1, 3, 3), bias=_arr(3)),
     ShapeError, r"conv2d: expected bias of shape \(2,\), got \(3,\)"),
    ("list input", dict(x=[[[[1.0]]]], weight=_arr(1, 1, 1, 1)), TypeError,
     r"conv2d: expected input to be a numpy.ndarray, got builtins.list"),
]


@pytest.mark.parametrize("case,args,error,match", BAD_CONV, ids=[c[0] for c in BAD_CONV])
def test_conv2d_rejects_bad_input(numpy_backend, case, args, error, match):
    args = dict(args)
    with pytest.raises(error, match=match):
        F.conv2d(args.pop("x"), args.pop("weight"), args.pop("bias", None), **args)


BAD_CONV_T = [
    ("rank", dict(x=_arr(2, 5, 5), weight=_arr(2, 3, 3, 3)), ShapeError,
     r"conv_transpose2d: expected input of shape \(N, C_in, H, W\), got \(2, 5, 5\)"),
    ("channels", dict(x=_arr(1, 3, 5, 5), weight=_arr(2, 3, 3, 3)), ShapeError,
     r"conv_transpose2d: expected input of shape \(N, 2, H, W\).*got \(1, 3, 5, 5\)"),
    ("groups", dict(x=_arr(1, 3, 5, 5), weight=_arr(3, 2, 3, 3), groups=2), ValueError,
     r"conv_transpose2d: groups=2 must divide both C_in=3"),
    ("output_padding", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), stride=2,
                            output_padding=2), ValueError,
     r"conv_transpose2d: output_padding must be smaller than stride or dilation, got "
     r"output_padding=2 with stride=2 and dilation=1"),
    ("output_padding vs dilation", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3),
                                        dilation=2, output_padding=(0, 2)), ValueError,
     r"output_padding=2 with stride=1 and dilation=2 along the width"),
    ("stride 0", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), stride=0), ValueError,
     r"conv_transpose2d: expected stride >= 1, got 0"),
    ("same", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3), padding="same"),
     ValueError, r"conv_transpose2d: expected padding to be an int, a pair of ints or "
     r"one of 'valid', got 'same'"),
    ("negative output", dict(x=_arr(1, 1, 1, 1), weight=_arr(1, 1, 1, 1), padding=1),
     ShapeError, r"conv_transpose2d: output size \(-1, -1\) is not positive"),
    ("int input", dict(x=np.ones((1, 1, 5, 5), dtype=np.int32), weight=_arr(1, 1, 3, 3)),
     TypeError, r"conv_transpose2d: expected a floating-point input, got dtype int32"),
    ("dtype mismatch", dict(x=_arr(1, 1, 5, 5), weight=_arr(1, 1, 3, 3, dtype=np.float32)),
     TypeError, r"conv_transpose2d: expected input and weight to share a dtype"),
]


@pytest.mark.parametrize("case,args,error,match", BAD_CONV_T,
                         ids=[c[0] for c in BAD_CONV_T])
def test_conv_transpose2d_rejects_bad_input(numpy_backend, case, args, error, match):
    args = dict(args)
    with pytest.raises(error, match=match):
        F.conv_transpose2d(args.pop("x"), args.pop("weight"), args.pop("bias", None),
                           **args)


def test_backward_rejects_a_dy_of_the_wrong_shape(numpy_backend):
    with pytest.raises(ShapeError, match=r"conv2d_backward: expected dy of shape "
                                         r"\(1, 2, 3, 3\) \(the output's\), got \(1, 2, 5, 5\)"):
        F.conv2d_backward(_arr(1, 2, 5, 5), _arr(1, 1, 5, 5), _arr(2, 1, 3, 3))
    with pytest.raises(ShapeError, match=r"conv_transpose2d_backward: expected dy"):
        F.conv_transpose2d_backward(_arr(1, 1, 3, 3), _arr(1, 2, 3, 3), _arr(2, 1, 3, 3))


def test_remembered_geometry_still_rejects_what_it_rejected(numpy_backend):
    """conv_geometry remembers arguments that passed (by repr): a bool stride or a
    float padding after the same-valued valid ones still raise, and each call's own
    ``where`` names the caller."""
    x, w = _arr(1, 1, 5, 5), _arr(1, 1, 3, 3)
    for _ in range(2):                        # the second call takes the remembered one
        assert F.conv2d(x, w, stride=1, padding=1).shape == (1, 1, 5, 5)
        assert F.conv_geometry((3, 3), 1, 1, 1, 1, where="t") == \
            F.conv_geometry((3, 3), np.int64(1), 1, 1, 1, where="t")
    with pytest.raises(TypeError, match=r"conv2d: expected stride to be an int"):
        F.conv2d(x, w, stride=True, padding=1)
    with pytest.raises(TypeError, match=r"conv2d: expected padding to be an int"):
        F.conv2d(x, w, stride=1, padding=1.0)
    with pytest.raises(ValueError, match=r"max_pool2d: expected stride >= 1"):
        F.conv_geometry((3, 3), 0, 1, 1, 1, where="max_pool2d")


def test_each_new_signature_is_checked_once(numpy_backend, monkeypatch):
    """A call signature (arrays' types, shapes, dtypes; plain hyperparameters) is
    checked on its first call only; a new shape, dtype, bias or a hyperparameter
    that is not a plain int/str/tuple of ints is checked again, so bad input
    still raises after good input of the same values."""
    from minicae import dispatch
    from minicae.functional import conv as C

    checks = []
    original = C.checked_conv2d
    monkeypatch.setattr(C, "checked_conv2d",
                        lambda *a, **k: checks.append(a[3]) or original(*a, **k))
    with dispatch.use_policy("fixed"):                  # starts with no choices
        x, w, b = _arr(2, 3, 6, 6), _arr(4, 3, 3, 3), _arr(4)
        first = F.conv2d(x, w, b, stride=2, padding=1)
        again = F.conv2d(x, w, b, stride=2, padding=1)
        np.testing.assert_array_equal(first, again)
        assert len(checks) == 1
        F.conv2d(x[:1], w, b, stride=2, padding=1)              # another batch size
        F.conv2d(x, w, None, stride=2, padding=1)               # no bias
        F.conv2d(x, w, b, stride=np.int64(2), padding=1)        # not a plain int
        F.conv2d(x, w, b, stride=np.int64(2), padding=1)
        assert len(checks) == 5
        with pytest.raises(TypeError, match=r"conv2d: expected input and weight to share"):
            F.conv2d(x.astype(np.float32), w, b, stride=2, padding=1)
        with pytest.raises(TypeError, match=r"conv2d: expected stride to be an int"):
            F.conv2d(x, w, b, stride=2.0, padding=1)
        with pytest.raises(TypeError, match=r"conv2d: expected stride to be an int"):
            F.conv2d(x, w, b, stride=True, padding=1)
        with pytest.raises(ShapeError, match=r"conv2d_backward: expected dy of shape"):
            F.conv2d_backward(_arr(2, 4, 4, 4), x, w, stride=2, padding=1)


def test_choices_are_kept_per_backend():
    """The numba backend's choice for a strided conv is a registered kernel; the same
    signature under NumPy gets the reference; entering a backend again finds its
    choice (the same function, not made again)."""
    from minicae import dispatch

    if not backend_mod.available_backends()["numba"][0]:
        pytest.skip("numba backend: Numba is not installed")
    x, w = _arr(2, 3, 6, 6), _arr(4, 3, 3, 3)
    runs = {}
    with dispatch.use_policy("fixed"):
        for name in ("numba", "numpy", "numba"):          # a new Backend object each time
            with backend_mod.use_backend(name), dispatch.trace() as calls:
                F.conv2d(x, w, stride=2, padding=1)
            (choice,) = calls
            runs.setdefault(name, choice)
            assert choice.run is runs[name].run                  # remembered, not remade
    assert runs["numba"].name == "numba.cv" and runs["numpy"].name == "reference"


def test_empty_batch_gives_zero_parameter_gradients(backend):
    """A batch of no images: empty outputs and input gradients, zero dW and db (an
    empty sum), on every backend and both convolutions."""
    x = to_device(np.ones((0, 3, 6, 6)))
    for op, w, kw in (("conv2d", np.ones((4, 3, 3, 3)), dict(stride=2, padding=1)),
                      ("conv_transpose2d", np.ones((3, 4, 3, 3)),
                       dict(stride=2, padding=1, output_padding=1))):
        w = to_device(w)
        y = getattr(F, op)(x, w, **kw)
        assert y.shape[:2] == (0, 4)
        dx, dw, db = getattr(F, op + "_backward")(y, x, w, **kw)
        assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (4,)
        assert not np.any(to_numpy(dw)) and not np.any(to_numpy(db))
