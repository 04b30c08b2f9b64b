"""Pure forward/backward maths on the active backend's arrays.

No state, no classes of layers, no randomness: every op is a function and its
``<op>_backward`` partner, side by side in a small module.
"""

from __future__ import annotations

from ._common import active
from ._geometry import (ConvGeometry, conv_geometry, conv_output_size,
                        conv_transpose_output_size, output_padding_for)
from .activations import (ACTIVATIONS, leaky_relu, leaky_relu_backward, leaky_relu_grad,
                          leaky_relu_grad2, relu, relu_backward, relu_grad, relu_grad2,
                          sigmoid, sigmoid_backward, sigmoid_grad, sigmoid_grad2, tanh,
                          tanh_backward, tanh_grad, tanh_grad2)
from .conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward
from .linear import linear, linear_backward
from .pool import max_pool2d, max_pool2d_backward, upsample, upsample_backward
from .losses import (BCE_EPS, REDUCTIONS, bce, bce_backward, bce_with_logits,
                     bce_with_logits_backward, cross_entropy, cross_entropy_backward,
                     dice_loss, dice_loss_backward, log_softmax, mse, mse_backward, softmax)
from .penalties import (contractive_conv, contractive_conv_backward, contractive_dense,
                        contractive_dense_backward, kl_divergence_bernoulli, kl_sparsity,
                        kl_sparsity_backward, l1_activity, l1_activity_backward, top_k,
                        top_k_backward)


def asarray(array, dtype=None):
    """Put ``array`` on the active backend's device (layers use it for weights)."""
    from ..backend import to_device

    return to_device(array, dtype=dtype)


def array_module():
    """The active backend's array module (``numpy`` or ``cupy``)."""
    return active().xp


__all__ = [
    "ConvGeometry", "conv_geometry", "conv_output_size", "conv_transpose_output_size",
    "output_padding_for", "ACTIVATIONS", "relu", "relu_backward", "relu_grad",
    "relu_grad2", "leaky_relu", "leaky_relu_backward", "leaky_relu_grad",
    "leaky_relu_grad2", "sigmoid", "sigmoid_backward", "sigmoid_grad", "sigmoid_grad2",
    "tanh", "tanh_backward", "tanh_grad", "tanh_grad2", "conv2d", "conv2d_backward",
    "conv_transpose2d", "conv_transpose2d_backward", "linear", "linear_backward", "max_pool2d",
    "max_pool2d_backward", "upsample", "upsample_backward", "asarray", "array_module",
    "BCE_EPS", "REDUCTIONS", "mse", "mse_backward", "bce", "bce_backward",
    "bce_with_logits", "bce_with_logits_backward", "log_softmax", "softmax",
    "cross_entropy", "cross_entropy_backward", "dice_loss", "dice_loss_backward",
    "l1_activity", "l1_activity_backward", "kl_divergence_bernoulli", "kl_sparsity",
    "kl_sparsity_backward", "contractive_dense", "contractive_dense_backward",
    "contractive_conv", "contractive_conv_backward", "top_k", "top_k_backward",
]
