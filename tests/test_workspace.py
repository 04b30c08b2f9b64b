"""Bounded im2col memory: a tiny workspace budget chunks the batch, results unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from minicae import functional as F
from minicae.backend import to_device, to_numpy


@pytest.fixture
def tiny_budget():
    previous = F.set_workspace_limit(2048)     # a few images' columns at most
    yield
    F.set_workspace_limit(previous)


def _all_ops(rng):
    def draw(*shape):                # on the active backend's device
        return to_device(rng.standard_normal(shape))

    x = draw(7, 4, 9, 8)
    w = draw(6, 2, 3, 3)
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    y = F.conv2d(x, w, draw(6), **kw)
    grads = F.conv2d_backward(draw(*y.shape), x, w, **kw)
    wt = draw(4, 3, 3, 3)
    yt = F.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1)
    gt = F.conv_transpose2d_backward(draw(*yt.shape), x, wt, stride=2,
                                     padding=1, output_padding=1)
    return [to_numpy(a) for a in (y, *grads, yt, *gt)]


def test_chunked_results_equal_unchunked(backend, tiny_budget):
    chunked = _all_ops(np.random.default_rng(0))
    F.set_workspace_limit(2**30)
    whole = _all_ops(np.random.default_rng(0))
    for i, (a, b) in enumerate(zip(chunked, whole)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"output {i}")


def test_workspace_limit_validates():
    with pytest.raises(ValueError, match="nbytes"):
        F.set_workspace_limit(0)
    assert F.get_workspace_limit() > 0
