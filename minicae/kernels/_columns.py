"""The column (im2col + GEMM) candidates of a backend, built on its im2col_kn/col2im_kn.

``im2col_kn(x, kh, kw, sh, sw, pt, pb, pl, pr, dil_h, dil_w)`` returns the columns
in GEMM layout (C, kh, kw, N, oh, ow), ``cols[c, i, j, n, p, q] = x_pad[n, c,
p*sh + i*dil_h, q*sw + j*dil_w]``, so that reshaped to (C*kh*kw, N*oh*ow) they
are one operand of one matrix product per group for the whole batch;
``col2im_kn(cols, h, w, ...)`` is its adjoint. The maths is the reference's
(functional/conv.py); only the layout differs. Two orientations of the forward
product are registered: ``Y = W · cols`` and, one group only, ``Yᵀ = colsᵀ · Wᵀ``
(BLAS runs the product with few columns faster on some shapes).
"""

from __future__ import annotations

from . import COLUMN_LIMIT, Candidate, column_bytes

__all__ = ["column_candidates"]


def _args(g):
    return g.sh, g.sw, g.pt, g.pb, g.pl, g.pr, g.dil_h, g.dil_w


def column_candidates(prefix, xp, im2col_kn, col2im_kn, rtol=1e-4, atol=1e-5):
    """The four ops' column candidates on array module ``xp`` (names ``prefix.gemm*``)."""

    def cols_of(x, g, oh, ow):
        """im2col_kn(x) as (groups, K, N*oh*ow), cropped to (oh, ow) (a transposed
        convolution's output_padding can make the natural size one larger)."""
        cols = im2col_kn(x, g.kh, g.kw, *_args(g))
        if cols.shape[4:] != (oh, ow):
            cols = xp.ascontiguousarray(cols[..., :oh, :ow])
        return cols.reshape(g.groups, -1, x.shape[0] * oh * ow)

    def to_kn(a, groups):
        """(N, C, h, w) -> (groups, C/groups, N*h*w), the GEMM layout of an output."""
        n, c = a.shape[:2]
        return xp.ascontiguousarray(a.reshape(n, c, -1).transpose(1, 0, 2)).reshape(
            groups, c // groups, -1)

    def from_kn(prod, n, oh, ow, bias, relu):
        """y (N, C, oh, ow) from prod (C, N*oh*ow) (+ b, then max(·, 0))."""
        y = xp.ascontiguousarray(prod.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3))
        return finish(y, bias, relu)

    def finish(y, bias, relu):
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)
        return xp.maximum(y, 0, out=y) if relu else y

    def forward(x, weight, g, oh, ow, bias, relu):
        # y = W · cols (+ b), per group
        w_mat = weight.reshape(g.groups, weight.shape[0] // g.groups, -1)
        return from_kn(xp.matmul(w_mat, cols_of(x, g, oh, ow)), x.shape[0], oh, ow,
                       bias, relu)

    def adjoint(y, weight, g, h, w, bias, relu):
        # x = col2im(Wᵀ · y) (+ b), per group
        n, c_out, oh, ow = y.shape
        w_mat = weight.reshape(g.groups, c_out // g.groups, -1)
        dcols = xp.matmul(w_mat.transpose(0, 2, 1), to_kn(y, g.groups))
        c_in = weight.shape[1] * g.groups
        x = col2im_kn(dcols.reshape(c_in, g.kh, g.kw, n, oh, ow), h, w, *_args(g))
        return finish(x, bias, relu)

    def wgrad(dout, src, g, oh, ow):
        # dW = dOut · cols(src)ᵀ, per group
        return xp.matmul(to_kn(dout, g.groups), cols_of(src, g, oh, ow).transpose(0, 2, 1))

    def masked(dy, relu_out):
        return dy if relu_out is None else dy * (relu_out > 0)

    def conv2d(call):
        g, (oh, ow) = call.g, call.out_hw
        return lambda x, weight, bias: forward(x, weight, g, oh, ow, bias, call.relu)

    def conv2d_t_product(call):
        g, (oh, ow) = call.g, call.out_hw

        def run(x, weight, bias):
            # Yᵀ = colsᵀ · Wᵀ, back per image as (oh*ow, C_out)
            n, c_out = x.shape[0], weight.shape[0]
            prod = xp.matmul(cols_of(x, g, oh, ow)[0].T, weight.reshape(c_out, -1).T)
            y = xp.ascontiguousarray(prod.reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2))
            return finish(y, bias, call.relu)
        return run

    def conv2d_backward(call):
        g, (oh, ow) = call.g, call.out_hw
        h, w = call.x_shape[2:]

        def run(dy, x, weight, relu_out, need_dx):
            dy = masked(dy, relu_out)
            dx = adjoint(dy, weight, g, h, w, None, False) if need_dx else None
            return dx, wgrad(dy, x, g, oh, ow).reshape(weight.shape), dy.sum(axis=(0, 2, 3))
        return run

    def conv_transpose2d(call):
        g, (oh, ow) = call.g, call.out_hw
        return lambda x, weight, bias: adjoint(x, weight, g, oh, ow, bias, call.relu)

    def conv_transpose2d_backward(call):
        g = call.g
        h, w = call.x_shape[2:]

        def run(dy, x, weight, relu_out, need_dx):
            dy = masked(dy, relu_out)
            # dx = conv2d(dY, W), dW = Σ_n x_n · cols(dY_n)ᵀ
            dx = forward(dy, weight, g, h, w, None, False) if need_dx else None
            return dx, wgrad(x, dy, g, h, w).reshape(weight.shape), dy.sum(axis=(0, 2, 3))
        return run

    def takes(op):
        def applies(call):
            return (call.x_shape[0] > 0 and call.dtype.kind == "f"
                    and call.dtype.itemsize >= 4 and column_bytes(op, call) <= COLUMN_LIMIT)
        return applies

    def one_group(call):
        return takes("conv2d")(call) and call.g.groups == 1

    tol = dict(rtol=rtol, atol=atol)
    ops = {"conv2d": conv2d, "conv2d_backward": conv2d_backward,
           "conv_transpose2d": conv_transpose2d,
           "conv_transpose2d_backward": conv_transpose2d_backward}
    return (*(Candidate(f"{prefix}.gemm", op, takes(op), make, **tol)
              for op, make in ops.items()),
            Candidate(f"{prefix}.gemm_t", "conv2d", one_group, conv2d_t_product, **tol))
