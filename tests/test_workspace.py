"""Bounded im2col memory: a tiny workspace budget chunks the batch, results unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from minicae import functional as F


@pytest.fixture
def tiny_budget():
    previous = F.set_workspace_limit(2048)     # a few images' columns at most
    yield
    F.set_workspace_limit(previous)


def _all_ops(rng):
    x = rng.standard_normal((7, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    y = F.conv2d(x, w, rng.standard_normal(6), **kw)
    dy = rng.standard_normal(y.shape)
    grads = F.conv2d_backward(dy, x, w, **kw)
    wt = rng.standard_normal((4, 3, 3, 3))
    yt = F.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1)
    gt = F.conv_transpose2d_backward(rng.standard_normal(yt.shape), x, wt, stride=2,
                                     padding=1, output_padding=1)
    return [y, *grads, yt, *gt]


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
