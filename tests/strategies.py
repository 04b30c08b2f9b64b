"""Hypothesis strategies that construct valid op configurations.

Each composite draws the hyperparameters first (groups, kernel, dilation,
stride, padding) and then an input just large enough for them, so every draw
is valid and nothing is filtered with ``assume``. The arrays themselves come
from a drawn seed through ``numpy.random.default_rng`` (hypothesis shrinks
the seed and the shapes, not thousands of floats). Sizes stay small (N <= 3,
C <= 4, H, W <= 9) so float64 central differences stay cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from reference import resolve_padding

__all__ = ["ConvConfig", "ConvTransposeConfig", "PoolConfig", "Im2colConfig", "conv_configs",
           "conv_transpose_configs", "pool_configs", "im2col_configs", "seeds"]

seeds = st.integers(min_value=0, max_value=2**31 - 1)


def _groups_and_channels(draw, max_c):
    groups = draw(st.sampled_from([g for g in (1, 2, 4) if g <= max_c]))
    c_in = groups * draw(st.integers(1, max_c // groups))
    c_out = groups * draw(st.integers(1, max_c // groups))
    return groups, c_in, c_out


def _kernel_and_dilation(draw, max_span):
    """A (k, d) pair per axis whose dilated span d*(k-1)+1 stays <= max_span."""
    k = draw(st.integers(1, 4))
    max_d = 3 if k == 1 else max(1, min(3, (max_span - 1) // (k - 1)))
    return k, draw(st.integers(1, max_d))


@dataclass
class ConvConfig:
    """A valid conv2d call: shapes, hyperparameters and a seed for the data."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: object
    dilation: tuple
    groups: int
    bias: bool
    seed: int

    @property
    def x_shape(self):
        return (self.n, self.c_in, self.h, self.w)

    @property
    def weight_shape(self):
        return (self.c_out, self.c_in // self.groups) + tuple(self.kernel)

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, dtype=np.float64):
        """(x, weight, bias) as NumPy arrays of ``dtype`` (bias None without bias)."""
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(self.x_shape).astype(dtype)
        weight = rng.standard_normal(self.weight_shape).astype(dtype)
        bias = rng.standard_normal(self.c_out).astype(dtype) if self.bias else None
        return x, weight, bias


@st.composite
def conv_configs(draw, max_n=3, max_c=4, max_hw=9):
    """Valid conv2d configurations (padding int, pair, 'valid', 'same' or 'full')."""
    groups, c_in, c_out = _groups_and_channels(draw, max_c)
    kh, dil_h = _kernel_and_dilation(draw, max_hw)
    kw, dil_w = _kernel_and_dilation(draw, max_hw)
    mode = draw(st.sampled_from(["int", "pair", "valid", "same", "full"]))
    if mode == "same":
        stride = (1, 1)                      # 'same' is defined for stride 1 only
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if mode == "int":
        padding = draw(st.integers(0, 2))
    elif mode == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    else:
        padding = mode
    pt, pb, pl, pr = resolve_padding(padding, (kh, kw), (dil_h, dil_w))
    # the input must hold the dilated kernel once padded
    min_h = max(1, dil_h * (kh - 1) + 1 - pt - pb)
    min_w = max(1, dil_w * (kw - 1) + 1 - pl - pr)
    h = draw(st.integers(min_h, max(min_h, max_hw)))
    w = draw(st.integers(min_w, max(min_w, max_hw)))
    return ConvConfig(n=draw(st.integers(1, max_n)), c_in=c_in, c_out=c_out, h=h, w=w,
                      kernel=(kh, kw), stride=stride, padding=padding,
                      dilation=(dil_h, dil_w), groups=groups, bias=draw(st.booleans()),
                      seed=draw(seeds))


@dataclass
class ConvTransposeConfig(ConvConfig):
    """A valid conv_transpose2d call (weight (C_in, C_out/groups, kh, kw))."""

    output_padding: tuple = field(default=(0, 0))

    @property
    def weight_shape(self):
        return (self.c_in, self.c_out // self.groups) + tuple(self.kernel)

    def kwargs(self):
        kw = super().kwargs()
        kw["output_padding"] = self.output_padding
        return kw

    def conv_kwargs(self):
        """The matching conv2d (the adjoint) hyperparameters."""
        return super().kwargs()


@st.composite
def conv_transpose_configs(draw, max_n=3, max_c=4, max_hw=6):
    """Valid conv_transpose2d configurations, output_padding < max(stride, dilation)."""
    groups, c_in, c_out = _groups_and_channels(draw, max_c)
    sizes, per_axis = [], []
    for _ in range(2):
        k, d = _kernel_and_dilation(draw, 7)
        s = draw(st.integers(1, 3))
        p = draw(st.integers(0, 2))
        op = draw(st.integers(0, max(s, d) - 1))
        # output (h-1)s - 2p + d(k-1) + op + 1 must be >= 1
        need = max(0, 2 * p - d * (k - 1) - op)
        min_h = 1 + -(-need // s)
        sizes.append(draw(st.integers(min_h, max(min_h, max_hw))))
        per_axis.append((k, d, s, p, op))
    (kh, dh, sh, ph, oph), (kw, dw, sw, pw, opw) = per_axis
    padding = ph if ph == pw and draw(st.booleans()) else (ph, pw)
    if padding == 0 and draw(st.booleans()):
        padding = "valid"
    return ConvTransposeConfig(
        n=draw(st.integers(1, max_n)), c_in=c_in, c_out=c_out, h=sizes[0], w=sizes[1],
        kernel=(kh, kw), stride=(sh, sw), padding=padding, dilation=(dh, dw),
        groups=groups, bias=draw(st.booleans()), seed=draw(seeds),
        output_padding=(oph, opw))


@dataclass
class PoolConfig:
    """A valid max_pool2d call; ``distinct`` data makes every argmax unique."""

    n: int
    c: int
    h: int
    w: int
    kernel: tuple
    stride: object
    padding: tuple
    seed: int

    def kwargs(self):
        return dict(kernel_size=self.kernel, stride=self.stride, padding=self.padding)

    def array(self, dtype=np.float64):
        """Distinct values 0.1 apart (a shuffled ramp), so each window has one max."""
        rng = np.random.default_rng(self.seed)
        size = self.n * self.c * self.h * self.w
        values = (rng.permutation(size) - size / 2) * 0.1
        return values.reshape(self.n, self.c, self.h, self.w).astype(dtype)


@st.composite
def pool_configs(draw, max_n=3, max_c=4, max_hw=9):
    """Valid max_pool2d configurations: padding <= kernel // 2 per axis."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    min_h, min_w = max(1, kh - 2 * ph), max(1, kw - 2 * pw)
    return PoolConfig(n=draw(st.integers(1, max_n)), c=draw(st.integers(1, max_c)),
                      h=draw(st.integers(min_h, max_hw)), w=draw(st.integers(min_w, max_hw)),
                      kernel=(kh, kw), stride=stride, padding=(ph, pw), seed=draw(seeds))


@dataclass
class Im2colConfig:
    """Raw kernel arguments: asymmetric padding (pt, pb, pl, pr) included."""

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pb: int
    pl: int
    pr: int
    dil_h: int
    dil_w: int
    seed: int

    def args(self):
        """Positional hyperparameters after ``x`` in ``im2col(x, ...)``."""
        return (self.kh, self.kw, self.sh, self.sw, self.pt, self.pb, self.pl, self.pr,
                self.dil_h, self.dil_w)

    def geometry(self):
        """Positional hyperparameters after ``(cols, h, w)`` in ``col2im``."""
        return self.args()[2:]


@st.composite
def im2col_configs(draw, max_n=3, max_c=4, max_hw=9):
    """Valid im2col/col2im arguments with independent padding on each side."""
    kh, dil_h = _kernel_and_dilation(draw, max_hw)
    kw, dil_w = _kernel_and_dilation(draw, max_hw)
    pt, pb, pl, pr = (draw(st.integers(0, 2)) for _ in range(4))
    min_h = max(1, dil_h * (kh - 1) + 1 - pt - pb)
    min_w = max(1, dil_w * (kw - 1) + 1 - pl - pr)
    return Im2colConfig(
        n=draw(st.integers(1, max_n)), c=draw(st.integers(1, max_c)),
        h=draw(st.integers(min_h, max(min_h, max_hw))),
        w=draw(st.integers(min_w, max(min_w, max_hw))), kh=kh, kw=kw,
        sh=draw(st.integers(1, 3)), sw=draw(st.integers(1, 3)), pt=pt, pb=pb, pl=pl,
        pr=pr, dil_h=dil_h, dil_w=dil_w, seed=draw(seeds))
