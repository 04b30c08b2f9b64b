"""The table of bad inputs: every public entry point names what was wrong.

Each row is (description, callable, expected exception type, regex of key
words). The regexes ask for the place, the offending value or shape and what
was expected, so a message that says only "invalid input" fails.
"""

from __future__ import annotations

import numpy as np
import pytest

import minicae
from minicae import data, nn, optim
from minicae import functional as F
from minicae.backend import set_backend, use_backend
from minicae.errors import BackendUnavailableError, CheckpointError, DataError
from minicae.models import ConvAutoencoder, DenseAutoencoder
from minicae.train import fit

f32 = np.float32
X4 = np.zeros((2, 3, 8, 8), f32)
W33 = np.zeros((4, 3, 3, 3), f32)


def _conv(x=X4, w=W33, **kw):
    return lambda: F.conv2d(x, w, **kw)


def _layer_call(layer, x):
    return lambda: layer(x)


def _bad_npz(tmp, **arrays):
    path = tmp / "bad.npz"
    np.savez(path, **arrays)
    return path


CASES = [
    # functional ops
    ("conv2d rank", _conv(x=np.zeros((3, 8, 8), f32)), ValueError,
     r"conv2d: expected input of shape \(N, C_in, H, W\), got \(3, 8, 8\)"),
    ("conv2d channels", _conv(x=np.zeros((2, 1, 8, 8), f32)), ValueError,
     r"conv2d: expected input of shape \(N, 3, H, W\).*got \(2, 1, 8, 8\)"),
    ("conv2d int dtype", _conv(x=np.zeros((2, 3, 8, 8), np.int64)), TypeError,
     r"conv2d: expected a floating-point input, got dtype int64"),
    ("conv2d complex dtype", _conv(x=np.zeros((2, 3, 8, 8), np.complex64)), TypeError,
     r"floating-point input, got dtype complex64"),
    ("conv2d object dtype", _conv(x=np.zeros((2, 3, 8, 8), object)), TypeError,
     r"floating-point input, got dtype object"),
    ("conv2d dtype mismatch", _conv(x=X4.astype(np.float64)), TypeError,
     r"share a dtype, got float64 and float32"),
    ("conv2d groups", _conv(w=np.zeros((4, 1, 3, 3), f32), groups=2), ValueError,
     r"groups"),
    ("conv2d kernel too big", _conv(w=np.zeros((4, 3, 11, 11), f32)), ValueError,
     r"kernel 11x11.*larger than the padded input 8x8"),
    ("conv2d stride 0", _conv(stride=0), ValueError, r"stride >= 1, got 0"),
    ("conv2d same+stride", _conv(padding="same", stride=2), ValueError,
     r"padding='same' needs stride 1"),
    ("conv2d padding word", _conv(padding="half"), ValueError,
     r"padding.*'valid', 'same', 'full'.*got 'half'"),
    ("conv2d negative padding", _conv(padding=-1), ValueError, r"padding >= 0, got -1"),
    ("conv_transpose2d output_padding",
     lambda: F.conv_transpose2d(X4, np.zeros((3, 2, 3, 3), f32), stride=2,
                                output_padding=2), ValueError,
     r"output_padding must be smaller than stride or dilation"),
    ("linear in_features", lambda: F.linear(np.zeros((2, 5), f32), np.zeros((3, 4), f32)),
     ValueError, r"linear: expected input of shape \(N, 4\), got \(2, 5\)"),
    ("max_pool2d rank", lambda: F.max_pool2d(np.zeros((8, 8), f32), 2), ValueError,
     r"max_pool2d: expected input of shape \(N, C, H, W\), got \(8, 8\)"),
    ("upsample factor", lambda: F.upsample(X4, 0), ValueError, r"scale_factor >= 1"),
    # layers
    ("Conv2d channels", _layer_call(nn.Conv2d(3, 16, 3), np.zeros((8, 1, 28, 28), f32)),
     ValueError, r"Conv2d\(3, 16, kernel_size=\(3, 3\).*expected input of shape "
                 r"\(N, 3, H, W\), got \(8, 1, 28, 28\)"),
    ("Conv2d groups", lambda: nn.Conv2d(3, 4, 3, groups=2), ValueError,
     r"groups=2 must divide both in_channels=3"),
    ("Conv2d int input", _layer_call(nn.Conv2d(3, 4, 3), np.zeros((1, 3, 8, 8), np.int32)),
     TypeError, r"floating-point input, got dtype int32"),
    ("Conv2d float64 input", _layer_call(nn.Conv2d(3, 4, 3), X4.astype(np.float64)),
     TypeError, r"dtype float32 \(the parameters'\), got float64"),
    ("Conv2d zero out_channels", lambda: nn.Conv2d(3, 0, 3), ValueError,
     r"out_channels to be an integer >= 1, got 0"),
    ("ConvTranspose2d output_padding", lambda: nn.ConvTranspose2d(4, 2, 3, stride=1,
                                                                  output_padding=1),
     ValueError, r"output_padding must be smaller than stride or dilation"),
    ("Linear width", _layer_call(nn.Linear(4, 2), np.zeros((3, 5), f32)), ValueError,
     r"expected input of shape \(N, 4\), got \(3, 5\)"),
    ("Linear float in_features", lambda: nn.Linear(4.5, 2), TypeError, r"in_features"),
    ("MaxPool2d padding", lambda: nn.MaxPool2d(2, padding=2), ValueError,
     r"padding must be at most half the kernel size"),
    ("TopK k too large", _layer_call(nn.TopK(100), np.zeros((2, 64), f32)), ValueError,
     r"TopK.*100.*64"),
    ("TopK k zero", lambda: nn.TopK(0), ValueError, r"k.*>= 1"),
    # losses and penalties
    ("MSELoss shapes", lambda: nn.MSELoss()(np.zeros((2, 3), f32), np.zeros((2, 4), f32)),
     ValueError, r"\(2, 3\).*\(2, 4\)"),
    ("MSELoss reduction", lambda: nn.MSELoss(reduction="avg"), ValueError,
     r"reduction.*'mean'.*'sum'.*'avg'"),
    ("CrossEntropy target range",
     lambda: nn.CrossEntropyLoss()(np.zeros((2, 3), f32), np.array([0, 3])), ValueError,
     r"\[0, 3\)"),
    ("KLSparsity rho", lambda: nn.KLSparsity(rho=1.5), ValueError,
     r"KLSparsity: rho must be in \(0, 1\), got 1.5"),
    ("KLSparsity negative weight", lambda: nn.KLSparsity(weight=-1.0), ValueError,
     r"weight"),
    ("L1Activity weight NaN", lambda: nn.L1Activity(float("nan")), ValueError, r"weight"),
    ("Contractive on ReLU layer", lambda: nn.ReLU().attach(nn.Contractive(0.1)),
     TypeError, r"Linear.*Conv2d"),
    # models
    ("Dense KL without sigmoid", lambda: DenseAutoencoder(
        penalty={"kind": "kl", "rho": 0.05, "weight": 1.0}), ValueError,
     r"KL sparsity needs sigmoid codes"),
    ("Dense input_shape", lambda: DenseAutoencoder(784, input_shape=[1, 27, 28]),
     ValueError, r"input_shape \(1, 27, 28\) has 756 values, expected in_features=784"),
    ("Conv scheme", lambda: ConvAutoencoder(scheme="dilated"), ValueError,
     r"scheme.*'full', 'strided'.*'dilated'"),
    ("Conv activation", lambda: ConvAutoencoder(activation="swish"), ValueError,
     r"activation.*'swish'"),
    ("penalty kind", lambda: DenseAutoencoder(penalty={"kind": "l2"}), ValueError,
     r"penalty kind.*'l2'"),
    # optimizers
    ("SGD lr", lambda: optim.SGD(nn.Linear(2, 2), lr=-0.1), ValueError,
     r"SGD: expected lr to be a finite number > 0, got -0.1"),
    ("SGD momentum", lambda: optim.SGD(nn.Linear(2, 2), lr=0.1, momentum=1.5),
     ValueError, r"momentum"),
    ("Adam betas", lambda: optim.Adam(nn.Linear(2, 2), betas=(0.9, 1.0)), ValueError,
     r"beta"),
    ("Adam eps", lambda: optim.Adam(nn.Linear(2, 2), eps=0.0), ValueError, r"eps"),
    # trainer
    ("fit batch_size 0", lambda: fit(DenseAutoencoder(16, hidden=[4], decoder_hidden=[]),
                                     np.zeros((4, 16), f32), batch_size=0, progress=False),
     ValueError, r"batch_size to be an integer >= 1, got 0"),
    ("fit epochs 0", lambda: fit(DenseAutoencoder(16, hidden=[4], decoder_hidden=[]),
                                 np.zeros((4, 16), f32), epochs=0, progress=False),
     ValueError, r"epochs to be an integer >= 1, got 0"),
    ("fit NaN data", lambda: fit(DenseAutoencoder(16, hidden=[4], decoder_hidden=[]),
                                 np.full((4, 16), np.nan, f32), progress=False),
     ValueError, r"NaN or infinite"),
    ("fit uint8 data", lambda: fit(DenseAutoencoder(16, hidden=[4], decoder_hidden=[]),
                                   np.zeros((4, 16), np.uint8), progress=False),
     TypeError, r"floating-point images, got dtype uint8"),
    # backends
    ("unknown backend", lambda: set_backend("tpu"), ValueError,
     r"set_backend\('tpu'\): expected one of 'numpy', 'numba', 'cupy'"),
    ("cupy without GPU", lambda: use_backend("cupy").__enter__(), BackendUnavailableError,
     r"minicae\[gpu\]"),
]


@pytest.mark.parametrize("description, call, exc_type, pattern", CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_table(description, call, exc_type, pattern):
    if description == "cupy without GPU" and minicae.backend.available_backends()["cupy"][0]:
        pytest.skip("a GPU is present: cupy is available")
    with use_backend("numpy"):
        with pytest.raises(exc_type, match=pattern):
            call()


def test_table_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("maker, pattern", [
    (lambda tmp: tmp / "missing.npz", r"missing.npz"),
    (lambda tmp: _bad_npz(tmp, images=np.full((2, 4, 4), np.nan)), r"NaN"),
    (lambda tmp: _bad_npz(tmp, images=np.zeros((4,))), r"\(4,\)"),
    (lambda tmp: _bad_npz(tmp, images=np.zeros((2, 4, 4)), masks=np.zeros((3, 4, 4), int)),
     r"2.*3|3.*2"),
    (lambda tmp: _bad_npz(tmp, images=np.array([{"a": 1}, None], dtype=object)),
     r"object|pickle"),
])
def test_bad_data_files(tmp_path, maker, pattern):
    with pytest.raises(DataError, match=pattern):
        data.load_arrays(maker(tmp_path))


def test_bad_checkpoint_paths(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.npz"):
        minicae.load(tmp_path / "nothing.npz")
    (tmp_path / "text.npz").write_text("not a zip file")
    with pytest.raises(CheckpointError, match="text.npz"):
        minicae.load(tmp_path / "text.npz")
